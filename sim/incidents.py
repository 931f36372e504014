"""Incidents as data: a scenario's ``incidents:`` timeline and what each does to the run.

Each incident has an id, a kind, a start (local date and time), a duration and a target. The
engine applies them where they act, and every record they touch carries the incident's id
(``incident_id``, the ground-truth label for drills and for detectors under test):

| kind                 | target                       | effect                                    |
|----------------------|------------------------------|-------------------------------------------|
| validator_outage     | device id                    | a metro gate's riders use the next gate;  |
|                      |                              | a bus reader's riders pay cash (no record)|
| line_outage          | line id (M1, urban-B003)     | no taps on the line; metro riders take    |
|                      |                              | bridging buses, bus riders the next line  |
| station_outage       | metro station "M1:5"         | journeys through it take bridging buses   |
| comm_outage          | device id or line id         | devices cannot upload; records wait       |
| clearing_node_outage | clearing node id             | the node does not clear; it catches up    |
|                      |                              | at its first cut-off after the outage     |
| qr_platform_outage   | QR medium (qr_alipay)        | its riders tap their card instead; a      |
|                      |                              | ``no_card_share`` of them carry none: they|
|                      |                              | are refused (``qr_platform_down``) and pay|
|                      |                              | cash or do not ride                       |
| outlet_closure       | outlet id                    | the outlet is closed during the outage    |
| renewal_wave         | outlet id                    | ``extra_visits_per_hour`` card renewals   |
| fare_change          | (none)                       | ``fares`` (an overlay on the scenario's   |
|                      |                              | fares) prices whole days from ``start``   |
| duplicate_wave       | device id                    | a faulty reader charges ``duplicate_share``|
|                      |                              | of its card taps twice (重复扣款), the     |
|                      |                              | second up to ``duplicate_gap_max_s`` later|
|                      |                              | (default: inside the clearing's lock, so  |
|                      |                              | the clearing finds and refunds them all)  |
| outlet_extension     | outlet id                    | the outlet is open during the span too    |
|                      |                              | (its hours extended)                      |
| offline_acceptance   | line id                      | its validators accept QR codes offline: a |
|                      |                              | QR platform outage does not touch them    |
| free_rides           | line id                      | rides on the line are free (announced):   |
|                      |                              | taps recorded, the fare waived            |
| deposit_call_unpaid  | issuer id                    | money called for its settlement deposit   |
|                      |                              | is not paid while it lasts (it arrives at |
|                      |                              | the first settlement after)               |
| desk_refund          | (none)                       | the service desk orders ``transactions``  |
|                      |                              | refunded: each charged card tap the       |
|                      |                              | clearing did not reject is credited back  |
|                      |                              | to its card at the next settlement, once  |

Incidents never create or destroy money: displaced riders pay what their new ride costs, delayed
records are cleared later, exactly once (the run's invariants check it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from sim.codes import MEDIA, MODES
from sim.world_settings import Section

DAY_S = 86_400
METRO = MODES.index("metro")
NO_INCIDENT = -1

KINDS = (
    "validator_outage",
    "line_outage",
    "station_outage",
    "comm_outage",
    "clearing_node_outage",
    "qr_platform_outage",
    "outlet_closure",
    "renewal_wave",
    "fare_change",
    "duplicate_wave",  # appended: the codes of the kinds before it stay
    "outlet_extension",
    "offline_acceptance",
    "free_rides",
    "deposit_call_unpaid",
    "desk_refund",
)
#: Kinds that hit no single target.
UNTARGETED = ("fare_change", "desk_refund")
#: Kinds whose target is a line (a metro line or a generated bus line).
LINE_KINDS = ("line_outage", "offline_acceptance", "free_rides")
#: Kinds whose target is an outlet id of their city.
OUTLET_KINDS = ("outlet_closure", "renewal_wave", "outlet_extension")


class IncidentError(ValueError):
    """An incident the run finds it cannot play when it comes to it (e.g. a desk refund of
    records whose clearing is already final): bad input, reported as such. ``records``: the
    transaction ids it is about, if any, so that the caller can name the incident that listed
    them."""

    def __init__(self, message: str, records: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.records = tuple(int(r) for r in records)

    def __reduce__(self):  # keeps ``records`` when the error crosses from a Dask worker
        return (type(self), (str(self), self.records))


class Incident(Section):
    """One incident of the scenario's timeline (see the module docstring for the kinds)."""

    id: str = Field(min_length=1, max_length=40, description="Label written on every record.")
    kind: Literal[KINDS] = Field(description="What happens (sim/incidents.py).")  # type: ignore[valid-type]
    start: dt.datetime = Field(description="Local date and time it begins, e.g. 2024-01-03 08:00.")
    duration_min: int = Field(gt=0, le=366 * 24 * 60, description="How long it lasts.")
    target: str | None = Field(
        None, description="What it hits: a device, line, station, node, medium or outlet id."
    )
    extra_visits_per_hour: float = Field(
        0.0, ge=0, le=1_000, description="renewal_wave: extra renewal visits per opening hour."
    )
    fares: dict[str, Any] | None = Field(
        None, description="fare_change: the fares section's changes (merged onto its fares)."
    )
    duplicate_share: float = Field(
        0.0, ge=0, le=1, description="duplicate_wave: share of the card taps charged twice."
    )
    duplicate_gap_max_s: int = Field(
        0,
        ge=0,
        le=600,
        description="duplicate_wave: the second charge comes 1 s to this many seconds after the "
        "first; 0: inside the clearing's lock window (the clearing catches every one).",
    )
    transactions: list[int] = Field(
        default_factory=list,
        description="desk_refund: the records (transaction ids) the service desk refunds.",
    )
    no_card_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="qr_platform_outage: share of the medium's riders who carry no card "
        "(refused; they pay cash or do not ride). Assumption of the scenario or drill.",
    )
    description: str = Field("", description="What the drill or analysis is about.")

    @field_validator("start")
    @classmethod
    def _whole_minute(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is not None or value.second or value.microsecond:
            raise ValueError("expected a local date and time to the minute, e.g. 2024-01-03 08:00")
        return value


def check_incidents(incidents: tuple[Incident, ...] | list[Incident], where: dict) -> None:
    """Cross-references that need the rest of the scenario: ``where`` holds the known metro
    lines (``metro``: id -> stations), QR media, clearing nodes and the period."""
    seen: set[str] = set()
    for i, inc in enumerate(incidents):
        at = f"incidents.{i}"
        if inc.id in seen:
            raise ValueError(f"{at}.id: {inc.id!r} is used twice; incident ids must be unique")
        seen.add(inc.id)
        needs_target = inc.kind not in UNTARGETED
        if needs_target and not inc.target:
            raise ValueError(f"{at}.target: a {inc.kind} needs a target")
        if inc.kind == "station_outage":
            line, _, station = (inc.target or "").partition(":")
            stations = where["metro"].get(line)
            if stations is None or not station.isdigit() or int(station) >= stations:
                raise ValueError(
                    f"{at}.target: expected a metro station as LINE:INDEX (e.g. M1:5, index "
                    f"below the line's station count); got {inc.target!r}"
                )
        if inc.kind == "qr_platform_outage" and (
            inc.target not in MEDIA or not inc.target.startswith("qr_")
        ):
            qr = ", ".join(m for m in MEDIA if m.startswith("qr_"))
            raise ValueError(f"{at}.target: expected a QR medium ({qr}); got {inc.target!r}")
        if inc.kind == "deposit_call_unpaid" and inc.target not in where["issuers"]:
            raise ValueError(
                f"{at}.target: unknown issuer {inc.target!r}; expected one of "
                f"clearing.network.issuers: {', '.join(where['issuers'])}"
            )
        if inc.kind == "clearing_node_outage" and inc.target not in where["nodes"]:
            raise ValueError(
                f"{at}.target: unknown clearing node {inc.target!r}; expected one of "
                f"clearing.network.nodes: {', '.join(where['nodes'])}"
            )
        if inc.kind in ("validator_outage", "duplicate_wave") and not (inc.target or "").isdigit():
            raise ValueError(f"{at}.target: expected a device id (a whole number)")
        if inc.kind == "desk_refund" and not inc.transactions:
            raise ValueError(f"{at}.transactions: a desk_refund needs the records it refunds")
        if inc.kind == "duplicate_wave" and inc.duplicate_share <= 0:
            raise ValueError(f"{at}.duplicate_share: a duplicate_wave needs a share above 0")
        if inc.kind in OUTLET_KINDS and not (inc.target or "").isdigit():
            raise ValueError(f"{at}.target: expected an outlet id (a whole number)")
        if inc.kind == "renewal_wave" and inc.extra_visits_per_hour <= 0:
            raise ValueError(f"{at}.extra_visits_per_hour: a renewal_wave needs more than 0")
        if inc.kind == "fare_change":
            if not inc.fares:
                raise ValueError(f"{at}.fares: a fare_change needs the fares that change")
            if inc.start.time() != dt.time(0, 0):
                raise ValueError(
                    f"{at}.start: a fare change takes effect at the start of a day (00:00)"
                )
        # An incident after the period does not happen (a run shortened with --days keeps its
        # scenario's later incidents); one before it is a mistake.
        start, end = where["period"]
        if inc.start.date() < start:
            raise ValueError(
                f"{at}.start: {inc.start:%Y-%m-%d %H:%M} is before the period {start} .. {end}"
            )


@dataclass(frozen=True)
class Timeline:
    """The incidents of a run in simulation seconds, resolved against the world."""

    incidents: tuple[Incident, ...]
    start_s: np.ndarray  # int64 absolute seconds
    end_s: np.ndarray

    @classmethod
    def of(cls, incidents, period_start: dt.date) -> Timeline:
        """Incidents with absolute start and end seconds from the period's first midnight."""
        epoch = dt.datetime.combine(period_start, dt.time())
        start = np.array(
            [int((inc.start - epoch).total_seconds()) for inc in incidents], dtype=np.int64
        )
        dur = np.array([inc.duration_min * 60 for inc in incidents], dtype=np.int64)
        return cls(tuple(incidents), start, start + dur)

    def __len__(self) -> int:
        return len(self.incidents)

    @property
    def ids(self) -> list[str]:
        """Incident ids in code order (an incident's code is its position)."""
        return [inc.id for inc in self.incidents]

    def of_kind(self, kind: str, day: int | None = None) -> list[int]:
        """Codes of the incidents of ``kind`` (overlapping ``day`` when given)."""
        out = []
        for k, inc in enumerate(self.incidents):
            if inc.kind != kind:
                continue
            if day is not None and not (
                self.start_s[k] < (day + 1) * DAY_S and self.end_s[k] > day * DAY_S
            ):
                continue
            out.append(k)
        return out

    def active(self, k: int, t_abs: np.ndarray) -> np.ndarray:
        """Which absolute times fall inside incident ``k``."""
        return (t_abs >= self.start_s[k]) & (t_abs < self.end_s[k])

    def down_at(self, kind: str, target: str, t_abs: int) -> int:
        """Code of an incident of ``kind`` on ``target`` active at ``t_abs`` (-1 if none)."""
        for k in self.of_kind(kind):
            if self.incidents[k].target == target and self.start_s[k] <= t_abs < self.end_s[k]:
                return k
        return NO_INCIDENT

    def fare_policy_of_day(self, day: int) -> int:
        """Code of the fare change in force on ``day`` (-1: the scenario's own fares)."""
        policy = NO_INCIDENT
        for k in self.of_kind("fare_change"):
            if self.start_s[k] <= day * DAY_S < self.end_s[k]:
                policy = k  # a later change in the list wins
        return policy


def mark(incident: np.ndarray, rows: np.ndarray, code: int) -> None:
    """Label ``rows`` with incident ``code`` (a record keeps the first incident that hit it)."""
    free = rows[incident[rows] == NO_INCIDENT]
    incident[free] = code
