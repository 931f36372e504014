"""Service outlets (网点): opening hours, closing days, counters as SimPy resources, visit queues.

An outlet is a Mesa agent that owns a ``simpy.Resource`` with one slot per counter. A visit
arrives, waits for the next opening today if closed (or leaves), queues for a counter, gets
served and releases it. Visitors still queuing when a window closes (lunch break, end of day) wait
for the next window today, or leave if there is none. Results go into preallocated numpy columns
(``VisitResults``); there is no Python object per visit besides its short-lived ``_Visit``, driven
by callbacks on the SimPy events it waits for (what a SimPy process per visit did, in the same
event order, without the process, its start event and its end event).

Opening days come from the caller's calendar through two callables, ``is_open_day(rule, day)`` and
``is_weekend(day)``. This module does not import ``sim.calendar``.
"""

from __future__ import annotations

import csv
import heapq
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mesa
import numpy as np
import simpy
from pydantic import Field, field_validator
from simpy.events import URGENT
from simpy.resources.resource import Request

from sim.clock import parse_windows
from sim.rng import Streams
from sim.settings_base import SettingsModel
from sim.yaml_config import ExistingFile

DAY_S = 86_400
#: Outlet ids are written as whole numbers of the records' id columns; this leaves room.
MAX_OUTLET_ID = 2**31 - 1
#: Counters at one outlet (a service hall has a few dozen at most; each is a SimPy resource).
MAX_COUNTERS = 200
CSV_COLUMNS: tuple[str, ...] = (
    "outlet_id",
    "name_zh",
    "region_zh",
    "address_zh",
    "hours",
    "open_days",
    "note_zh",
)
OPEN_DAY_RULES: frozenset[str] = frozenset(
    {
        "every_day",
        "workdays",
        "fridays_only",
        "mon_to_sat_except_holidays",
        "every_day_except_holidays",
        "every_day_except_spring_festival_eve_to_day2",
    }
)
#: Service kind codes used in visit arrays (append, never reorder).
SERVICE_KINDS: tuple[str, ...] = ("topup", "card_sale", "other")
TOPUP, CARD_SALE, OTHER = 0, 1, 2
#: Visit outcome codes; ``OUTCOME_PENDING`` until the visit has ended.
OUTCOMES: tuple[str, ...] = ("served", "left_closed")
SERVED, LEFT_CLOSED = 0, 1
OUTCOME_PENDING = -1

Windows = tuple[tuple[int, int], ...]
_SPLIT_FORM = re.compile(r"^weekday\s+(?P<wd>.+?)\s*;\s*weekend\s+(?P<we>.+)$")


class OutletFileError(ValueError):
    """A bad outlets file: names the file, row (line number, header = 1), column, what to fix."""

    def __init__(self, path: str | Path, row: int, column: str, problem: str) -> None:
        self.path, self.row, self.column, self.problem = str(path), row, column, problem
        super().__init__(f"{path}, row {row}, column {column!r}: {problem}")


@dataclass(frozen=True, slots=True)
class OutletInfo:
    """One outlet as published: identity, address and opening rules.

    Windows are (start, end) seconds after midnight, end exclusive. ``weekend_windows`` equals
    ``weekday_windows`` unless the hours text has the ``weekday ...; weekend ...`` form.
    """

    outlet_id: int
    name_zh: str
    region_zh: str
    address_zh: str
    hours: str
    weekday_windows: Windows
    weekend_windows: Windows
    open_days: str
    note_zh: str


def _windows(text: str) -> Windows:
    # Outlet hours are same-day windows with two-digit hours ("09:00-11:30;13:30-17:30"), as
    # published; sim.clock's defaults are exactly that syntax.
    return tuple((w.start_s, w.end_s) for w in parse_windows(text))


def parse_hours(text: str) -> tuple[Windows, Windows]:
    """Parse an hours cell into (weekday windows, weekend windows).

    Accepts ``"08:00-17:30"``, ``"09:00-11:30;13:30-17:30"`` and
    ``"weekday 06:00-18:20; weekend 08:00-11:00;14:00-17:00"``.
    """
    text = text.strip()
    m = _SPLIT_FORM.match(text)
    if m is not None:
        return _windows(m.group("wd")), _windows(m.group("we"))
    if not text:
        raise ValueError("hours are empty")
    windows = _windows(text)
    return windows, windows


_HOURS_EXPECTED = (
    'expected "HH:MM-HH:MM", windows joined by ";" (e.g. "09:00-11:30;13:30-17:30"), or '
    '"weekday <windows>; weekend <windows>"'
)


def load_outlets_csv(path: str | Path) -> list[OutletInfo]:
    """Read an outlets file with exactly the columns of ``data/nantong/outlets.csv``.

    ``note_zh`` is free text and the last column, so a row with extra unquoted commas has them
    joined back into ``note_zh`` (the published file has one such row). Any other problem raises
    ``OutletFileError`` naming the file, row, column and what was expected.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OutletFileError(path, 0, "-", f"cannot read the file ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise OutletFileError(
            path, line, "-", "not UTF-8 text (GBK?); expected the file saved as UTF-8"
        ) from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise OutletFileError(
            path, 1, "-", f"file is empty; expected header {','.join(CSV_COLUMNS)}"
        )
    header = [h.strip() for h in rows[0]]
    for col in CSV_COLUMNS:
        if col not in header:
            raise OutletFileError(
                path, 1, col, f"column is missing; expected header {','.join(CSV_COLUMNS)}"
            )
    if tuple(header) != CSV_COLUMNS:
        raise OutletFileError(
            path, 1, "-", f"header is {','.join(header)}; expected exactly {','.join(CSV_COLUMNS)}"
        )
    infos: list[OutletInfo] = []
    seen: set[int] = set()
    for line_no, fields in enumerate(rows[1:], start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) < len(CSV_COLUMNS):
            missing = CSV_COLUMNS[len(fields)]
            raise OutletFileError(
                path, line_no, missing, f"row has {len(fields)} fields; expected {len(CSV_COLUMNS)}"
            )
        if len(fields) > len(CSV_COLUMNS):
            fields = [*fields[: len(CSV_COLUMNS) - 1], ",".join(fields[len(CSV_COLUMNS) - 1 :])]
        rec = dict(zip(CSV_COLUMNS, (f.strip() for f in fields), strict=True))
        try:
            outlet_id = int(rec["outlet_id"])
        except ValueError:
            outlet_id = -1
        if not 1 <= outlet_id <= MAX_OUTLET_ID:
            raise OutletFileError(
                path,
                line_no,
                "outlet_id",
                f"{rec['outlet_id']!r}; expected a whole number from 1 to {MAX_OUTLET_ID}",
            )
        if outlet_id in seen:
            raise OutletFileError(
                path, line_no, "outlet_id", f"{outlet_id} repeats; expected unique ids"
            )
        seen.add(outlet_id)
        if not rec["name_zh"]:
            raise OutletFileError(path, line_no, "name_zh", "empty; expected the outlet's name")
        try:
            weekday, weekend = parse_hours(rec["hours"])
        except ValueError as exc:
            raise OutletFileError(path, line_no, "hours", f"{exc}; {_HOURS_EXPECTED}") from None
        if rec["open_days"] not in OPEN_DAY_RULES:
            raise OutletFileError(
                path,
                line_no,
                "open_days",
                f"unknown rule {rec['open_days']!r}; expected one of "
                f"{', '.join(sorted(OPEN_DAY_RULES))}",
            )
        infos.append(
            OutletInfo(
                outlet_id=outlet_id,
                name_zh=rec["name_zh"],
                region_zh=rec["region_zh"],
                address_zh=rec["address_zh"],
                hours=rec["hours"],
                weekday_windows=weekday,
                weekend_windows=weekend,
                open_days=rec["open_days"],
                note_zh=rec["note_zh"],
            )
        )
    if not infos:
        raise OutletFileError(path, 2, "-", "no outlets after the header; expected one row each")
    return infos


class OutletSettings(SettingsModel):
    """The scenario's ``outlets:`` section: file, counters, service times, closed policy."""

    file: ExistingFile = Field(
        description="Outlets CSV (columns of data/nantong/outlets.csv); relative to the scenario."
    )
    default_counters: int = Field(
        2, ge=1, le=MAX_COUNTERS, description="Counters at an outlet not overridden."
    )
    counters_by_outlet: dict[int, int] = Field(
        default_factory=dict, description="Counters per outlet_id, overriding default_counters."
    )
    topup_service_mean_s: float = Field(90.0, gt=0, description="Mean time to serve a top-up.")
    card_sale_service_mean_s: float = Field(
        600.0,
        gt=0,
        description="Mean time to sell/issue a card (ID check, photo, personalisation).",
    )
    other_service_mean_s: float = Field(
        300.0, gt=0, description="Mean time for other services (replacement, refund, queries)."
    )
    service_time_cv: float = Field(
        0.5, ge=0, le=3, description="Coefficient of variation of lognormal service times."
    )
    closed_arrival: Literal["wait_for_opening", "leave"] = Field(
        "wait_for_opening",
        description="A visitor arriving while closed waits for the next window today (leaving if "
        "there is none), or leaves at once; the caller then tops up online.",
    )

    @field_validator("counters_by_outlet")
    @classmethod
    def _positive_counters(cls, v: dict[int, int]) -> dict[int, int]:
        bad = {k: c for k, c in v.items() if not 1 <= c <= MAX_COUNTERS}
        if bad:
            raise ValueError(f"counters must be from 1 to {MAX_COUNTERS}, got {bad}")
        return v

    def service_means_s(self) -> tuple[float, float, float]:
        """Mean service seconds indexed by ``SERVICE_KINDS`` code."""
        return (self.topup_service_mean_s, self.card_sale_service_mean_s, self.other_service_mean_s)


class OutletAgent(mesa.Agent):
    """A service outlet: opening windows per day and a ``simpy.Resource`` of counters.

    Args:
        model: host Mesa model.
        info: the outlet as published (``load_outlets_csv``).
        counters: number of counters (resource capacity).
        env: the run's single SimPy environment.
        settings: the scenario's ``outlets:`` section (service times, closed-arrival policy).
        is_open_day: calendar callable ``(open_days rule, day) -> bool``.
        is_weekend: calendar callable ``day -> bool`` choosing weekend hours where they differ.
    """

    def __init__(
        self,
        model: mesa.Model,
        info: OutletInfo,
        counters: int,
        env: simpy.Environment,
        *,
        settings: OutletSettings,
        is_open_day: Callable[[str, int], bool],
        is_weekend: Callable[[int], bool],
    ) -> None:
        super().__init__(model)
        if counters < 1:
            raise ValueError(f"outlet {info.outlet_id}: counters must be >= 1, got {counters}")
        self.info = info
        self.outlet_id = info.outlet_id
        self.counters = counters
        self.env = env
        self.settings = settings
        self.resource = simpy.Resource(env, capacity=counters)
        self._is_open_day = is_open_day
        self._is_weekend = is_weekend
        self._free_counters = list(range(counters))  # a heap: the lowest free counter serves
        self._queued: dict[_Visit, None] = {}  # visits waiting for a counter, FIFO order
        self._day_windows: dict[int, Windows] = {}
        self._closer_days: set[int] = set()
        self.closures: list[tuple[int, int]] = []  # absolute (start, end) of incident closures
        self.extensions: list[tuple[int, int]] = []  # absolute (start, end) opened on top

    def windows(self, day: int) -> Windows:
        """Absolute (start, end) seconds of the open windows on ``day`` (empty if closed)."""
        w = self._day_windows.get(day)
        if w is None:
            if not self._is_open_day(self.info.open_days, day):
                w = ()
            else:
                base = (
                    self.info.weekend_windows
                    if self._is_weekend(day)
                    else self.info.weekday_windows
                )
                w = tuple((day * DAY_S + s, day * DAY_S + e) for s, e in base)
            for x_start, x_end in self.extensions:  # hours extended (a drill's action)
                lo, hi = max(x_start, day * DAY_S), min(x_end, (day + 1) * DAY_S)
                if lo < hi:
                    w = _join(w, lo, hi)
            for c_start, c_end in self.closures:
                w = _cut(w, c_start, c_end)
            self._day_windows[day] = w
        return w

    def next_window(self, t: int) -> tuple[int, int] | None:
        """The window open at ``t`` or the next one later the same day, else None."""
        for s, e in self.windows(int(t) // DAY_S):
            if e > t:
                return s, e
        return None

    def _ensure_closer(self, day: int) -> None:
        if day not in self._closer_days:
            self._closer_days.add(day)
            self.env.process(self._closer(day))

    def _closer(self, day: int):
        """At each window's end, send visitors still queuing to the next window (or away)."""
        env = self.env
        for _, end in self.windows(day):
            if end < env.now:
                continue
            yield env.timeout(end - env.now)
            for visit in list(self._queued):
                visit.interrupt("closed")


class _Now(simpy.Event):
    """An event processed at the current time before any normally scheduled one, calling
    ``callback``: how SimPy starts a process (``Initialize``) or delivers an interrupt."""

    def __init__(self, env: simpy.Environment, callback: Callable[[simpy.Event], None]) -> None:
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._ok = True
        env.schedule(self, URGENT)


class _Visit:
    """One visitor at an outlet; writes its outcome into ``res`` at ``row``.

    Each step runs as the callback of the event the visitor waits for (arrival, window
    opening, counter granted, service done; an interrupt from the outlet's closer), doing what
    a SimPy process per visit did between its ``yield``s, in the same order, so the env sees
    the same events scheduled in the same order.
    """

    __slots__ = (
        "outlet",
        "res",
        "row",
        "arrival",
        "service_s",
        "leaves_if_closed",
        "win",
        "req",
        "counter",
    )

    def __init__(
        self, outlet: OutletAgent, res: VisitResults, row: int, arrival: int, service_s: int
    ) -> None:
        self.outlet = outlet
        self.res = res
        self.row = row
        self.arrival = arrival
        self.service_s = service_s
        # Only a visitor who finds the door shut on arrival may choose to leave at once.
        self.leaves_if_closed = outlet.settings.closed_arrival == "leave"
        self.win: tuple[int, int] = (0, 0)
        self.req: Request | None = None
        self.counter = -1

    def arrive(self, _event: simpy.Event) -> None:
        """At the arrival time."""
        self._seek_counter()

    def _seek_counter(self) -> None:
        """Leave if no window is left today, wait for the next one, or queue for a counter."""
        env = self.outlet.env
        now = env.now
        win = self.outlet.next_window(now)
        if win is None or (self.leaves_if_closed and now < win[0]):
            self.res.wait_s[self.row] = now - self.arrival
            self.res.outcome[self.row] = LEFT_CLOSED
            return
        self.leaves_if_closed = False
        self.win = win
        if now < win[0]:
            env.timeout(win[0] - now).callbacks.append(self._queue)
        else:
            self._queue(None)

    def _queue(self, _event: simpy.Event | None) -> None:
        self.req = req = self.outlet.resource.request()
        self.outlet._queued[self] = None
        req.callbacks.append(self._granted)

    def interrupt(self, _cause: str) -> None:
        """The window closed while queuing (delivered like a SimPy interrupt: first at once)."""
        _Now(self.outlet.env, self._interrupted)

    def _interrupted(self, _event: simpy.Event) -> None:
        req = self.req
        if self not in self.outlet._queued:
            return  # no longer waiting for a counter (as an ended process ignores an interrupt)
        req.callbacks.remove(self._granted)
        del self.outlet._queued[self]
        if req.triggered:
            self.outlet.resource.release(req)
        else:
            req.cancel()
        self._seek_counter()

    def _granted(self, _event: simpy.Event) -> None:
        outlet = self.outlet
        del outlet._queued[self]
        now = outlet.env.now
        if now >= self.win[1]:
            # Granted exactly as the window closed: treated as closed, like any [start, end).
            outlet.resource.release(self.req)
            self._seek_counter()
            return
        self.counter = counter = heapq.heappop(outlet._free_counters)
        res, row = self.res, self.row
        res.service_start_s[row] = now
        res.wait_s[row] = now - self.arrival
        res.counter[row] = counter
        outlet.env.timeout(self.service_s).callbacks.append(self._served)

    def _served(self, _event: simpy.Event) -> None:
        outlet = self.outlet
        heapq.heappush(outlet._free_counters, self.counter)
        outlet.resource.release(self.req)
        self.res.service_end_s[self.row] = outlet.env.now
        self.res.outcome[self.row] = SERVED


def _join(windows: Windows, start: int, end: int) -> Windows:
    """``windows`` with the span [start, end) open too (overlapping windows merged)."""
    spans = sorted([*windows, (start, end)])
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return tuple(out)


def _cut(windows: Windows, start: int, end: int) -> Windows:
    """``windows`` without the span [start, end) (an incident closing the outlet)."""
    out = []
    for s, e in windows:
        if e <= start or s >= end:
            out.append((s, e))
            continue
        if s < start:
            out.append((s, start))
        if e > end:
            out.append((end, e))
    return tuple(out)


def build_outlets(
    model: mesa.Model,
    env: simpy.Environment,
    infos: Sequence[OutletInfo],
    settings: OutletSettings,
    *,
    is_open_day: Callable[[str, int], bool],
    is_weekend: Callable[[int], bool],
) -> list[OutletAgent]:
    """Create one ``OutletAgent`` per outlet, with counters from ``settings``."""
    ids = {i.outlet_id for i in infos}
    unknown = sorted(set(settings.counters_by_outlet) - ids)
    if unknown:
        raise ValueError(
            f"outlets.counters_by_outlet names unknown outlet ids {unknown}; "
            f"expected ids from {settings.file}"
        )
    return [
        OutletAgent(
            model,
            info,
            settings.counters_by_outlet.get(info.outlet_id, settings.default_counters),
            env,
            settings=settings,
            is_open_day=is_open_day,
            is_weekend=is_weekend,
        )
        for info in infos
    ]


@dataclass(frozen=True, slots=True)
class VisitResults:
    """Per-visit columns, in the order the visits were given, filled while the env runs.

    Times are absolute seconds, -1 where not (yet) applicable. ``wait_s`` is arrival to service
    start, or arrival to leaving for ``LEFT_CLOSED``. ``counter`` is the counter index (0-based).
    ``outcome`` is ``SERVED``, ``LEFT_CLOSED`` or ``OUTCOME_PENDING``.
    """

    visit_id: np.ndarray
    outlet_id: np.ndarray
    arrival_s: np.ndarray
    service_start_s: np.ndarray
    service_end_s: np.ndarray
    wait_s: np.ndarray
    counter: np.ndarray
    service_kind: np.ndarray
    service_s: np.ndarray
    outcome: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The columns by name (views, not copies)."""
        return {name: getattr(self, name) for name in self.__slots__}


VISIT_KEYS: tuple[str, ...] = ("visit_id", "outlet_idx", "arrival_s", "service_kind")


def draw_service_times(
    streams: Streams,
    visit_ids: np.ndarray,
    arrival_s: np.ndarray,
    mean_s: np.ndarray,
    cv: np.ndarray | float,
) -> np.ndarray:
    """Lognormal service times in whole seconds (>= 1), keyed by (arrival day, visit id)."""
    ids = np.asarray(visit_ids, dtype=np.int64)
    days = np.asarray(arrival_s, dtype=np.int64) // DAY_S
    z = np.empty(len(ids), dtype=np.float64)
    for day in np.unique(days).tolist():
        sel = days == day
        z[sel] = streams.normal("outlet_service_time", day, ids[sel])
    sigma = np.sqrt(np.log1p(np.square(np.asarray(cv, dtype=np.float64))))
    t = np.asarray(mean_s, dtype=np.float64) * np.exp(sigma * z - 0.5 * sigma * sigma)
    return np.maximum(1, np.rint(t)).astype(np.int64)


def run_visits(
    env: simpy.Environment,
    outlets: Sequence[OutletAgent],
    visits: Mapping[str, np.ndarray],
    *,
    streams: Streams,
) -> VisitResults:
    """Start one SimPy process per visit; return the results, filled as ``env.run`` advances.

    ``visits`` holds equal-length arrays: ``visit_id`` (unique ids, the key of service-time draws),
    ``outlet_idx`` (index into ``outlets``), ``arrival_s`` (absolute seconds, >= env.now) and
    ``service_kind`` (``SERVICE_KINDS`` code).
    """
    missing = [k for k in VISIT_KEYS if k not in visits]
    if missing:
        raise ValueError(f"visits lacks {missing}; expected arrays {', '.join(VISIT_KEYS)}")
    vid = np.asarray(visits["visit_id"], dtype=np.int64)
    oidx = np.asarray(visits["outlet_idx"], dtype=np.int64)
    arrival = np.asarray(visits["arrival_s"], dtype=np.int64)
    kind = np.asarray(visits["service_kind"], dtype=np.int64)
    n = len(vid)
    if not (len(oidx) == len(arrival) == len(kind) == n):
        raise ValueError("visits arrays must all have the same length")
    if n and (oidx.min() < 0 or oidx.max() >= len(outlets)):
        raise ValueError(f"visits.outlet_idx must be in [0, {len(outlets)})")
    if n and (kind.min() < 0 or kind.max() >= len(SERVICE_KINDS)):
        raise ValueError(f"visits.service_kind must be a code of {SERVICE_KINDS}")
    if n and arrival.min() < env.now:
        raise ValueError(f"visits.arrival_s must be >= env.now ({env.now}), got {arrival.min()}")

    means = np.array([o.settings.service_means_s() for o in outlets], dtype=np.float64)
    cvs = np.array([o.settings.service_time_cv for o in outlets], dtype=np.float64)
    service_s = draw_service_times(
        streams, vid, arrival, means[oidx, kind] if n else np.empty(0), cvs[oidx] if n else 0.0
    )
    outlet_ids = np.array([o.outlet_id for o in outlets], dtype=np.int64)
    res = VisitResults(
        visit_id=vid.copy(),
        outlet_id=outlet_ids[oidx] if n else np.empty(0, dtype=np.int64),
        arrival_s=arrival.copy(),
        service_start_s=np.full(n, -1, dtype=np.int64),
        service_end_s=np.full(n, -1, dtype=np.int64),
        wait_s=np.full(n, -1, dtype=np.int64),
        counter=np.full(n, -1, dtype=np.int16),
        service_kind=kind.astype(np.uint8),
        service_s=service_s,
        outcome=np.full(n, OUTCOME_PENDING, dtype=np.int8),
    )
    # Arrivals scheduled in arrival order make same-second arrivals queue in input order.
    order = np.argsort(arrival, kind="stable").tolist()
    arr_l, oidx_l, svc_l = arrival.tolist(), oidx.tolist(), service_s.tolist()
    days = {(o, a // DAY_S) for o, a in zip(oidx_l, arr_l, strict=True)}
    for o, day in sorted(days):
        outlets[o]._ensure_closer(day)
    visits_in_order = [_Visit(outlets[oidx_l[i]], res, i, arr_l[i], svc_l[i]) for i in order]

    def schedule_arrivals(_event: simpy.Event) -> None:
        # Where a process per visit would have been started: after the closers, before
        # whatever is started after this call, so each arrival keeps its place in the
        # env's order of same-time events.
        for v in visits_in_order:
            env.timeout(v.arrival - env.now).callbacks.append(v.arrive)

    _Now(env, schedule_arrivals)
    return res
