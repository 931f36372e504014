"""A trainee's actions, and what they change in the simulated day.

A scripted trainee is a YAML file of actions at simulated times of the drill's day (for
rehearsal and for tests; the live console will make the same actions):

    trainee:
      name: good operator
      actions:
        - {at: "07:50", kind: acknowledge, alert: duplicate_charges}
        - {at: "07:55", kind: suspend_device, devices: [837]}
        - {at: "08:05", kind: refund_cards, cards: [6096672297584605644]}
        - {at: "08:10", kind: explain, target: duplicate_wave}

- ``acknowledge``: nothing (the alert is marked seen: the timeline and time to detect);
- ``mark_faulty``: a technician repairs the devices: an incident on one of them (a reader
  charging twice, an uplink down, a dead reader) ends ``repair_min`` later; a line's uplink is
  reset when one of its devices is reported;
- ``suspend_device``: the devices are out of service until the end of the day: a gate's riders
  use the next gate, a bus reader's pay cash (a ``validator_outage`` from then on);
- ``refund_cards``: refunds ordered for the cards (masked tokens, as the service desk sees
  them; or ``duplicates_on: {device, since}``, the cards its look-up shows charged twice on a
  device since a time), scored against the cards the incident charged: the second charges the
  look-up shows for them by then (``records``) are refunded to the cards at the next
  settlement (a ``desk_refund``), those the clearing has not already rejected and refunded;
- ``extend_outlet_hours``: the outlet (``target``) stays open until ``until`` (an
  ``outlet_extension`` from the action on): visitors still queueing at the usual closing are
  served instead of sent away;
- ``switch_offline``: the validators of ``lines`` accept QR codes offline from then on (until
  ``until``, else the end of the day; an ``offline_acceptance``): a QR platform that is down
  no longer refuses riders there, who keep paying by code;
- ``announce_free_rides``: rides on ``lines`` are free from then on (until ``until``, else the
  end of the day; a ``free_rides``): nobody is refused there, and the fares are forgone;
- ``restore_node``: the clearing node (``target``) is switched to its standby site: an outage
  of it ends ``repair_min`` later (a cut-off after that clears on time);
- ``chase_deposit``: the issuer (``target``) is chased for the deposit money called: a
  ``deposit_call_unpaid`` on it ends ``repair_min`` later (the money is in at the next
  settlement);
- ``identify``: names a clearing node, QR medium or outlet as the cause (scored);
- ``explain``: the cause given to a customer, an incident kind (scored).

Actions become incidents (sim/incidents.py), so the day with the actions is the same engine's
day under another timeline, with the same random numbers: everything before the first action is
identical to the day without them (common random numbers).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from sim.incidents import Incident
from sim.yaml_config import load_config

ACTION_KINDS = (
    "acknowledge",
    "mark_faulty",
    "suspend_device",
    "refund_cards",
    "identify",
    "explain",
    "extend_outlet_hours",
    "switch_offline",
    "announce_free_rides",
    "restore_node",
    "chase_deposit",
)
#: Incident kinds whose target is one device (a repair ends them).
DEVICE_KINDS = ("validator_outage", "comm_outage", "duplicate_wave")
#: Actions that end an incident on their target ``repair_min`` later, and the incident kind.
ENDS = {"restore_node": "clearing_node_outage", "chase_deposit": "deposit_call_unpaid"}
#: Actions that put their lines under an incident kind from the action on.
ON_LINES = {"switch_offline": "offline_acceptance", "announce_free_rides": "free_rides"}


def _not_a_number(value):
    # YAML 1.1 reads an unquoted 10:30 as the base-60 number 630: refuse it, do not guess.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f'expected a time of the drill\'s day in quotes, such as "10:30"; got the number '
            f"{value} (YAML reads an unquoted 10:30 as a number)"
        )
    return value


def _local(value: dt.time) -> dt.time:
    if value.tzinfo is not None:
        raise ValueError(f"expected a local time of the drill's day, without a zone; got {value}")
    return value


#: A time of the drill's day: "HH:MM" (or "HH:MM:SS"), local, never a number.
ClockTime = Annotated[dt.time, BeforeValidator(_not_a_number), AfterValidator(_local)]


class DuplicatesOn(BaseModel):
    """The cards charged twice on a device since a time, as the desk's look-up lists them."""

    model_config = ConfigDict(extra="forbid")
    device: int = Field(ge=0)
    since: ClockTime


class Action(BaseModel):
    """One action at a simulated time of the drill's day (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    at: ClockTime
    kind: Literal[ACTION_KINDS]  # type: ignore[valid-type]
    alert: str | None = None
    devices: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    lines: list[str] = Field(default_factory=list)
    cards: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    # refund_cards: the cards listed by a look-up (resolved when the day is played).
    duplicates_on: DuplicatesOn | None = None
    # refund_cards: the charges refunded, as the desk's look-up shows them (filled when the
    # day is played: drills/runner.py resolve_lookups).
    records: list[int] = Field(default_factory=list)
    target: str | None = None
    until: ClockTime | None = None  # extend_outlet_hours: open until then

    @model_validator(mode="after")
    def _needs(self) -> Action:
        needs = {
            "acknowledge": ("alert", self.alert),
            "mark_faulty": ("devices", self.devices),
            "suspend_device": ("devices", self.devices),
            "refund_cards": ("cards or duplicates_on", self.cards or self.duplicates_on),
            "identify": ("target", self.target),
            "explain": ("target", self.target),
            "extend_outlet_hours": ("target and until", self.target and self.until),
            "switch_offline": ("lines", self.lines),
            "announce_free_rides": ("lines", self.lines),
            "restore_node": ("target", self.target),
            "chase_deposit": ("target", self.target),
        }[self.kind]
        if not needs[1]:
            raise ValueError(f"a {self.kind} action needs {needs[0]}")
        if self.until is not None and self.until <= self.at:
            raise ValueError(f"until ({self.until}) must be after the action ({self.at})")
        return self


class Trainee(BaseModel):
    """A scripted trainee: a name and actions in time order."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    actions: list[Action] = Field(default_factory=list)

    @model_validator(mode="after")
    def _in_order(self) -> Trainee:
        times = [a.at for a in self.actions]
        if times != sorted(times):
            raise ValueError("actions: expected in time order")
        return self


class TraineeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trainee: Trainee


def load_trainee(path: str | Path) -> Trainee:
    """Read a scripted trainee; ``ConfigError`` names the file, line and field."""
    return load_config(path, TraineeFile).trainee


def with_actions(
    incidents: list[Incident], actions: list[Action], day: dt.date, repair_min: int, network
) -> list[Incident]:
    """The day's incidents once the actions have acted (module docstring): repairs shorten
    incidents, suspensions add outages. ``network`` maps devices to lines (a line's uplink)."""
    out = [inc.model_copy() for inc in incidents]
    end_of_day = dt.datetime.combine(day, dt.time(0)) + dt.timedelta(days=1)
    n_devices = len(network.devices.line)
    for a, action in enumerate(actions):
        at = dt.datetime.combine(day, action.at)
        unknown = [d for d in action.devices if not 0 <= d < n_devices]
        if unknown:  # a device the world lacks would be marked or suspended for nothing
            raise ValueError(
                f"actions.{a}.devices: no device {unknown[0]}; expected a device id from 0 to "
                f"{n_devices - 1}"
            )
        if action.kind in ("mark_faulty", *ENDS):
            fixed = at + dt.timedelta(minutes=repair_min)
            for i, inc in enumerate(out):
                ended = (
                    _hits(inc, action.devices, network)
                    if action.kind == "mark_faulty"
                    else inc.kind == ENDS[action.kind] and inc.target == action.target
                )
                if ended and inc.start <= at < _end(inc):
                    minutes = max(1, int((fixed - inc.start).total_seconds() // 60))
                    out[i] = inc.model_copy(update={"duration_min": min(inc.duration_min, minutes)})
        elif action.kind in ON_LINES:
            until = end_of_day if action.until is None else dt.datetime.combine(day, action.until)
            for line in action.lines:
                if line not in network.lines.ids:
                    raise ValueError(
                        f"actions.{a}.lines: unknown line {line!r}; expected a line id such as "
                        f"{network.lines.ids[0]}"
                    )
                out.append(
                    Incident(
                        # action-3-offline-urban-B001 (an id has at most 40 characters)
                        id=f"action-{a}-{ON_LINES[action.kind].split('_')[0]}-{line}",
                        kind=ON_LINES[action.kind],
                        start=at,
                        duration_min=max(1, int((until - at).total_seconds() // 60)),
                        target=line,
                        description=f"{action.kind} by the trainee",
                    )
                )
        elif action.kind == "refund_cards" and action.records:
            out.append(
                Incident(
                    id=f"action-{a}-refund",
                    kind="desk_refund",
                    start=at,
                    duration_min=1,
                    transactions=action.records,
                    description="refunds ordered by the trainee",
                )
            )
        elif action.kind == "extend_outlet_hours":
            until = dt.datetime.combine(day, action.until)
            out.append(
                Incident(
                    id=f"action-{a}-extend",  # the outlet is the target (ids are short)
                    kind="outlet_extension",
                    start=at,
                    duration_min=max(1, int((until - at).total_seconds() // 60)),
                    target=str(action.target),
                    description="hours extended by the trainee",
                )
            )
        elif action.kind == "suspend_device":
            minutes = int((end_of_day - at).total_seconds() // 60)
            for device in action.devices:
                out.append(
                    Incident(
                        id=f"action-{a}-suspend-{device}",
                        kind="validator_outage",
                        start=at,
                        duration_min=max(1, minutes),
                        target=str(device),
                        description="suspended by the trainee",
                    )
                )
    return out


def _end(inc: Incident) -> dt.datetime:
    return inc.start + dt.timedelta(minutes=inc.duration_min)


def _hits(inc: Incident, devices: list[int], network) -> bool:
    """Does reporting ``devices`` repair ``inc``? (A device target, or a line target with one
    of the devices on it.)"""
    target = inc.target or ""
    if inc.kind not in DEVICE_KINDS:
        return False
    if target.isdigit():
        return int(target) in devices
    if target in network.lines.ids:
        line = network.lines.ids.index(target)
        return any(
            0 <= d < len(network.devices.line) and int(network.devices.line[d]) == line
            for d in devices
        )
    return False


__all__ = [
    "ACTION_KINDS",
    "ENDS",
    "ON_LINES",
    "Action",
    "DuplicatesOn",
    "Trainee",
    "load_trainee",
    "with_actions",
]
