"""Store-and-forward validators on the SimPy clock: buffer, batch upload, faults.

A validator is a Mesa agent whose uploads run as SimPy processes. It never sees a tap as a Python
object. Each day it receives that day's tap times as a sorted numpy slice plus two output slices.
Its uploads are planned with a few vectorised calls over (device, upload opportunity): next
opportunity from the schedule, minus uplink outages, and only where the buffer holds records
(``searchsorted`` on the tap times). A SimPy process then wakes only at those upload times and
writes the results (DESIGN.md, "Agents at full scale").

* ``ValidatorAgent.load_day``: one device, its own process (tests, drills, small runs).
* ``load_fleet_day``: thousands of devices. Faults are drawn in one pass, and one process wakes
  once per distinct upload time for all of them, which measured 2-3x faster than a process per
  device. Results are identical to ``load_day`` device by device. A caller that reads the day's
  arrays only from some time on (``unread_before``) gets the records uploaded before it written
  at once, in one vectorised pass instead of a slice per upload.

Device kinds (``sim.codes.MODES``):

* ``"bus"``: an on-board reader. It uploads when the vehicle reaches depot or terminal Wi-Fi, at the
  scenario's times of day (``bus_upload_times_hhmm``).
* ``"metro"``: a station computer. Gates hand their records to it at once, and it uploads every
  ``metro_upload_interval_min``. Use one agent per station computer and give it the station's
  merged, sorted gate taps. Reader outages stay per gate (see ``reader_outage_windows``).

Output contract for each record slice passed to ``ValidatorAgent.load_day``:

* ``out_batch``: ``NOT_UPLOADED`` (-1) while the record waits in the buffer, ``REFUSED_BUFFER_FULL``
  (-2) if the buffer was full when the tap was made, otherwise the device's upload batch sequence
  number. ``(device_id, upload_batch_id)`` is unique over the run.
* ``out_uploaded_at``: absolute upload time in seconds, -1 until uploaded.

Records still buffered at the end of a day carry over. The agent keeps the output views of those
records and writes to them when they are finally uploaded, possibly days later. So the caller must
keep a day's arrays until ``oldest_pending_day(validators)`` has moved past that day. Refusals are
decided inside ``load_day``, because the day's upload plan is known then, so the caller can see
them before pricing.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import mesa
import numpy as np
import simpy
from pydantic import Field, field_validator

from sim.clock import HHMM, parse_hhmm
from sim.codes import MODES, code_of
from sim.grouping import positions_in_runs, stable_order
from sim.rng import Streams
from sim.settings_base import SettingsModel

DAY_S = 86_400
NOT_UPLOADED = -1
REFUSED_BUFFER_FULL = -2
BUS, METRO = code_of(MODES, "bus"), code_of(MODES, "metro")
# Resend draws use id = device_id * _K_STRIDE + opportunity index. The interval is at least 1 min,
# so a day has at most 1,440 opportunities and ids never collide.
_K_STRIDE = 4096
# Row keys for the fleet-wide searchsorted: position * stride + seconds into the day; the stride
# exceeds the latest opportunity (end of day + maximum jitter).
_KEY_STRIDE = 4 * 86_400


class DeviceSettings(SettingsModel):
    """The scenario's ``devices:`` section: re-tap lock, buffer, upload schedules and faults."""

    retap_lock_s: float = Field(
        2.0,
        ge=0,
        description="Same-card re-tap lock: a second tap this soon is not charged.",
    )
    buffer_capacity_records: int = Field(
        24_570,
        ge=1,
        description="Records the device can hold before uploading; when full, taps are refused.",
    )
    bus_upload_times_hhmm: tuple[HHMM, ...] = Field(
        ("12:30", "23:30"),
        min_length=1,
        description="Times of day (HH:MM, increasing) when buses reach depot/terminal Wi-Fi and "
        "upload.",
    )
    metro_upload_interval_min: float = Field(
        5.0,
        ge=1,
        le=1440,
        description="Station computers upload every this many minutes.",
    )
    upload_jitter_s: int = Field(
        1200,
        ge=0,
        lt=DAY_S,
        description="Each device-day's schedule is shifted later by a uniform draw in [0, this); "
        "for metro it is capped at one interval. Times past midnight are dropped.",
    )
    comm_outage_prob_per_device_day: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Probability that a device's uplink fails once in a day.",
    )
    comm_outage_mean_min: float = Field(
        120.0,
        gt=0,
        description="Mean (exponential) length of an uplink outage; it may run into later days.",
    )
    reader_outage_prob_per_device_day: float = Field(
        0.002,
        ge=0,
        le=1,
        description="Probability that a reader stops accepting taps in a day.",
    )
    reader_outage_mean_min: float = Field(
        60.0,
        gt=0,
        description="Mean (exponential) length of a reader outage, cut off at midnight.",
    )
    double_tap_prob_per_tap: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Probability that a tap is followed by an accidental re-tap.",
    )
    double_tap_max_gap_s: float = Field(
        1.5,
        gt=0,
        description="Accidental re-taps follow the first after a uniform [0, this) gap.",
    )
    lock_failure_prob: float = Field(
        0.001,
        ge=0,
        le=1,
        description="Probability that the re-tap lock fails, so the re-tap is charged (重复扣款).",
    )
    resend_prob_per_upload: float = Field(
        0.002,
        ge=0,
        le=1,
        description="Probability that an upload's ack is lost and the same batch is sent again.",
    )
    resend_delay_s: int = Field(
        60, ge=0, description="Ack timeout after which the duplicate batch is sent."
    )

    @field_validator("bus_upload_times_hhmm")
    @classmethod
    def _check_times(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        offsets = [parse_hhmm(t) for t in v]
        if any(b <= a for a, b in itertools.pairwise(offsets)):
            raise ValueError(f"upload times must be strictly increasing, got {list(v)}")
        return v


@functools.lru_cache(maxsize=64)
def _schedule_offsets(kind: int, times: tuple[str, ...], interval_min: float) -> np.ndarray:
    """Seconds after midnight of a kind's upload opportunities (shared, read-only)."""
    if kind == METRO:
        step = round(interval_min * 60)
        out = np.arange(0, DAY_S, step, dtype=np.int64)
    else:
        out = np.array([parse_hhmm(t) for t in times], dtype=np.int64)
    out.flags.writeable = False
    return out


def _offsets_for(kind: int, s: DeviceSettings) -> np.ndarray:
    return _schedule_offsets(kind, s.bus_upload_times_hhmm, s.metro_upload_interval_min)


def _exp_duration_s(u: np.ndarray, mean_min: float) -> np.ndarray:
    """Exponential durations in whole seconds (at least 1) from uniforms in [0, 1)."""
    return np.maximum(1, np.rint(-np.log1p(-u) * mean_min * 60.0)).astype(np.int64)


@dataclass(frozen=True, slots=True)
class DeviceDayFaults:
    """One day's fault draws for a set of devices, arrays aligned with ``device_ids``.

    ``comm_start_s``/``comm_end_s`` are absolute seconds, -1 when the uplink works all day.
    ``shift_s`` is the schedule jitter. The resend flags of device ``i`` are
    ``resend[resend_offsets[i]:resend_offsets[i + 1]]``, one per upload opportunity of its day.
    """

    device_ids: np.ndarray
    comm_start_s: np.ndarray
    comm_end_s: np.ndarray
    shift_s: np.ndarray
    resend: np.ndarray
    resend_offsets: np.ndarray

    @classmethod
    def scripted(
        cls,
        device_id: int,
        n_opportunities: int,
        *,
        comm_outage_s: tuple[int, int] | None = None,
        shift_s: int = 0,
        resend_at: Sequence[int] = (),
    ) -> DeviceDayFaults:
        """Faults chosen by hand for one device-day (tests, incident drills).

        ``comm_outage_s`` is an absolute (start, end) uplink outage. ``resend_at`` lists the
        indices of the day's upload opportunities whose ack is lost.
        """
        resend = np.zeros(n_opportunities, dtype=bool)
        resend[list(resend_at)] = True
        start, end = comm_outage_s if comm_outage_s is not None else (-1, -1)
        return cls(
            np.array([device_id], dtype=np.int64),
            np.array([start], dtype=np.int64),
            np.array([end], dtype=np.int64),
            np.array([shift_s], dtype=np.int64),
            resend,
            np.array([0, n_opportunities], dtype=np.int64),
        )


def device_day_faults(
    streams: Streams,
    day: int,
    device_ids: np.ndarray,
    kinds: np.ndarray,
    settings: DeviceSettings,
) -> DeviceDayFaults:
    """Draw uplink outages, schedule jitter and resend flags for many devices in one pass.

    Every number is a pure function of (seed, stream, day, device id), so a device-day has the
    same faults whether it is drawn alone or with the whole fleet.
    """
    ids = np.asarray(device_ids, dtype=np.int64)
    kinds = np.asarray(kinds, dtype=np.int64)
    day_start = int(day) * DAY_S
    s = settings

    hit = streams.uniform("device_comm_outage", day, ids, 0) < s.comm_outage_prob_per_device_day
    start = day_start + (streams.uniform("device_comm_outage", day, ids, 1) * DAY_S).astype(
        np.int64
    )
    dur = _exp_duration_s(
        streams.uniform("device_comm_outage", day, ids, 2), s.comm_outage_mean_min
    )
    comm_start = np.where(hit, start, -1)
    comm_end = np.where(hit, start + dur, -1)

    interval_s = round(s.metro_upload_interval_min * 60)
    max_shift = np.where(kinds == METRO, min(s.upload_jitter_s, interval_s), s.upload_jitter_s)
    shift = (streams.uniform("device_upload_shift", day, ids, 0) * max_shift).astype(np.int64)

    n_opp = np.where(kinds == METRO, len(_offsets_for(METRO, s)), len(_offsets_for(BUS, s)))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(n_opp, out=offsets[1:])
    k = positions_in_runs(n_opp)
    resend_ids = np.repeat(ids, n_opp) * _K_STRIDE + k
    resend = streams.uniform("device_resend", day, resend_ids, 0) < s.resend_prob_per_upload
    return DeviceDayFaults(ids, comm_start, comm_end, shift, resend, offsets)


class _UploadTable:
    """One process's planned uploads as columns sorted by time; ``done`` rows have happened."""

    __slots__ = ("cols", "done", "taken")

    def __init__(self, cols: dict[str, np.ndarray]) -> None:
        self.cols = cols
        self.done = 0  # rows whose upload time the clock has reached
        self.taken = 0  # rows already handed out by UploadLog.drain


class UploadLog:
    """Columnar log of uploads: one row per batch sent, and another row for each resend.

    Upload processes register their day's plan as numpy columns and advance a counter as the
    clock passes each upload, so the log holds no Python object per upload. ``to_arrays`` and
    ``drain`` return the rows that have happened, ordered by ``uploaded_at``.
    """

    COLUMNS: tuple[str, ...] = (
        "device_id",
        "upload_batch_id",
        "uploaded_at",
        "n_records",
        "first_tap_at",
        "last_tap_at",
        "resend",
    )

    def __init__(self) -> None:
        self._tables: list[_UploadTable] = []

    def __len__(self) -> int:
        return sum(t.done - t.taken for t in self._tables)

    def _register(self, table: _UploadTable) -> None:
        self._tables.append(table)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Rows uploaded so far and not drained, as columns (``resend`` as bool)."""
        parts = [t for t in self._tables if t.done > t.taken]
        cols = {
            name: np.concatenate(
                [t.cols[name][t.taken : t.done] for t in parts]
                + [np.empty(0, dtype=bool if name == "resend" else np.int64)]
            )
            for name in self.COLUMNS
        }
        order = stable_order(cols["uploaded_at"])
        return {name: col[order] for name, col in cols.items()}

    def rows(self) -> list[tuple[int, ...]]:
        """Rows as tuples in ``COLUMNS`` order (for tests and small inspections)."""
        cols = self.to_arrays()
        cols["resend"] = cols["resend"].astype(np.int64)
        return list(zip(*(cols[name].tolist() for name in self.COLUMNS), strict=True))

    def drain(self) -> dict[str, np.ndarray]:
        """Return the rows so far as columns and drop them (e.g. once per day, for the writer)."""
        out = self.to_arrays()
        for t in self._tables:
            t.taken = t.done
        self._tables = [t for t in self._tables if t.taken < len(t.cols["uploaded_at"])]
        return out


# Buffered records not yet uploaded: (day, tap_times, out_batch, out_uploaded_at) views.
_Segment = tuple[int, np.ndarray, np.ndarray, np.ndarray]


class ValidatorAgent(mesa.Agent):
    """A store-and-forward validator (bus reader or metro station computer).

    Args:
        model: host Mesa model.
        device_id: terminal id (non-negative int), also the key of its random streams.
        kind: ``"bus"`` or ``"metro"`` (``sim.codes.MODES``).
        env: the run's single SimPy environment (seconds since the start of the period).
        settings: the scenario's ``devices:`` section.
        streams: the run's random streams.
        upload_log: shared log that receives one row per upload.
    """

    def __init__(
        self,
        model: mesa.Model,
        device_id: int,
        kind: str,
        *,
        env: simpy.Environment,
        settings: DeviceSettings,
        streams: Streams,
        upload_log: UploadLog,
    ) -> None:
        super().__init__(model)
        if device_id < 0:
            raise ValueError(f"device_id must be >= 0, got {device_id}")
        self.device_id = int(device_id)
        self.kind = kind
        self.kind_code = code_of(MODES, kind)
        self.env = env
        self.settings = settings
        self.streams = streams
        self.upload_log = upload_log
        self.refused_records = 0
        self.n_opportunities = len(_offsets_for(self.kind_code, settings))
        # Records not yet uploaded, oldest first, as views into the caller's arrays, kept so a
        # late upload can be written back; with their count and first/last tap times.
        self._pending: list[_Segment] = []
        self._pending_n = 0
        self._pending_first = -1
        self._pending_last = -1
        # Uplink outage windows (abs start, abs end) reaching past the loaded day.
        self._blocked: list[tuple[int, int]] = []
        self._seq = 0
        self._last_upload_at = -1

    @property
    def pending_records(self) -> int:
        """Records still buffered once the loaded day has run: earlier days' records not yet
        uploaded plus the day's records after its last upload (exact at the end of the day)."""
        return self._pending_n

    @property
    def oldest_pending_day(self) -> int | None:
        """Day of the oldest record counted in ``pending_records`` (None if there is none)."""
        return self._pending[0][0] if self._pending else None

    def load_day(
        self,
        day: int,
        tap_times: np.ndarray,
        out_batch: np.ndarray,
        out_uploaded_at: np.ndarray,
        faults: DeviceDayFaults | None = None,
    ) -> simpy.Process | None:
        """Take a day's records, mark refusals, and start this device's upload process.

        ``tap_times`` is sorted int64 absolute seconds within day ``day``. ``out_batch`` and
        ``out_uploaded_at`` are writable int64 views of the same length, filled as described in
        the module docstring. ``faults`` (one device) defaults to ``device_day_faults`` draws.
        Returns the process (None when nothing is uploaded today). Call once per day, in day
        order, after the previous day has run. ``load_fleet_day`` does the same for a fleet.
        """
        if faults is None:
            ids, kinds = np.array([self.device_id]), np.array([self.kind_code])
            faults = device_day_faults(self.streams, day, ids, kinds, self.settings)
        if len(faults.resend) != self.n_opportunities:
            raise ValueError(
                f"device {self.device_id}: faults.resend needs {self.n_opportunities} flags"
            )
        taps = np.asarray(tap_times, dtype=np.int64)
        _check_day(taps, day)
        out_batch[:] = NOT_UPLOADED
        out_uploaded_at[:] = -1
        table = _plan_group(
            [self],
            np.zeros(1, dtype=np.int64),
            day,
            taps - int(day) * DAY_S,
            taps,
            np.array([0, len(taps)], dtype=np.int64),
            out_batch,
            out_uploaded_at,
            faults.comm_start_s[:1],
            faults.comm_end_s[:1],
            faults.shift_s[:1],
            faults.resend.reshape(1, -1),
        )
        return _start_uploads([self], [table], out_batch, out_uploaded_at)


def _check_day(tap_times: np.ndarray, day: int) -> None:
    if len(tap_times) and (
        tap_times.min() < int(day) * DAY_S or tap_times.max() >= (int(day) + 1) * DAY_S
    ):
        raise ValueError(f"tap_times must lie within day {day}")


def _plan_group(
    agents: Sequence[ValidatorAgent],
    pos: np.ndarray,
    day: int,
    keys: np.ndarray,
    tap_times: np.ndarray,
    offsets: np.ndarray,
    out_batch: np.ndarray,
    out_uploaded_at: np.ndarray,
    comm_start: np.ndarray,
    comm_end: np.ndarray,
    shift: np.ndarray,
    resend: np.ndarray,
) -> dict[str, np.ndarray]:
    """Plan one day's uploads for validators of one kind, vectorised over (device, opportunity).

    ``pos[i]`` is agent ``i``'s position in the day's grouping: it owns rows
    ``offsets[pos[i]]:offsets[pos[i] + 1]``. ``keys`` (sorted) is ``position * _KEY_STRIDE +
    seconds into the day`` per row, so one ``searchsorted`` counts every device's taps up to
    every opportunity. ``resend`` is (device, opportunity). Marks refusals, moves buffered
    records into the agents' state and returns the planned uploads as columns.
    """
    env = agents[0].env
    for a in agents:
        if a._last_upload_at >= env.now:
            raise RuntimeError(
                f"device {a.device_id}: load_day({day}) called before the previous day's "
                "uploads have run (advance env to the end of that day first)"
            )
    s = agents[0].settings
    base = _offsets_for(agents[0].kind_code, s)
    cap = s.buffer_capacity_records
    day_start = int(day) * DAY_S
    day_end = day_start + DAY_S
    starts = offsets[pos]
    ends = offsets[pos + 1]

    # Opportunities (device x slot) still ahead today and outside any uplink outage.
    opp = (day_start + shift)[:, None] + base[None, :]
    avail = (opp >= env.now) & (opp < day_end)
    hit = np.flatnonzero(comm_start >= 0)
    if len(hit):
        cs, ce = comm_start[hit, None], comm_end[hit, None]
        avail[hit] &= (opp[hit] < cs) | (opp[hit] >= ce)
    for i, a in enumerate(agents):
        if a._blocked:
            for w_start, w_end in a._blocked:
                avail[i] &= (opp[i] < w_start) | (opp[i] >= w_end)
            a._blocked = [w for w in a._blocked if w[1] > day_end]
    for i in hit[comm_end[hit] > day_end].tolist():
        agents[i]._blocked.append((int(comm_start[i]), int(comm_end[i])))

    # Rows taken up to each opportunity (global row index); unavailable slots inherit the last
    # available count, so a slot is used iff records arrived since the previous used slot.
    c = keys.searchsorted((pos * _KEY_STRIDE)[:, None] + (opp - day_start), side="right")
    c = np.maximum.accumulate(np.where(avail, c, starts[:, None]), axis=1)
    prev = np.concatenate([starts[:, None], c[:, :-1]], axis=1)
    carry = np.fromiter((a._pending_n for a in agents), dtype=np.int64, count=len(agents))
    first_avail = avail & (np.cumsum(avail, axis=1) == 1)
    used = avail & ((c > prev) | (first_avail & (carry > 0)[:, None]))
    rank = np.cumsum(used, axis=1)
    first_used = used & (rank == 1)
    # The buffer empties at each upload; before the first one it already holds the carry-over.
    hi = np.minimum(c, prev + np.where(first_used, (cap - carry)[:, None], cap))
    n_used = rank[:, -1]
    last_c = c[:, -1]
    tail_hi = np.minimum(ends, last_c + np.where(n_used > 0, cap, cap - carry))

    for i, k in zip(*np.nonzero(used & (hi < c)), strict=True):
        out_batch[hi[i, k] : c[i, k]] = REFUSED_BUFFER_FULL
        agents[i].refused_records += int(c[i, k] - hi[i, k])
    for i in np.flatnonzero(tail_hi < ends).tolist():
        out_batch[tail_hi[i] : ends[i]] = REFUSED_BUFFER_FULL
        agents[i].refused_records += int(ends[i] - tail_hi[i])

    # One row per planned upload, in (device, time) order.
    ui, uk = np.nonzero(used)
    u_lo, u_hi, u_first = prev[ui, uk], hi[ui, uk], first_used[ui, uk]
    u_carry = np.where(u_first, carry[ui], 0)
    n_segments = np.fromiter((len(a._pending) for a in agents), dtype=np.int64, count=len(agents))
    c_first = np.fromiter((a._pending_first for a in agents), dtype=np.int64, count=len(agents))
    c_last = np.fromiter((a._pending_last for a in agents), dtype=np.int64, count=len(agents))
    seq0 = np.fromiter((a._seq for a in agents), dtype=np.int64, count=len(agents))
    n_taps = len(tap_times)
    if n_taps:
        t_lo = tap_times[np.minimum(u_lo, n_taps - 1)]
        t_hi = tap_times[np.maximum(u_hi - 1, 0)]
    else:
        t_lo = t_hi = np.full(len(ui), -1, dtype=np.int64)
    table = {
        "agent": pos[ui],
        "t": opp[ui, uk],
        "lo": u_lo,
        "hi": u_hi,
        "seq": seq0[ui] + rank[ui, uk] - 1,
        "n": u_hi - u_lo + u_carry,
        "first": np.where(u_carry > 0, c_first[ui], t_lo),
        "last": np.where(u_hi > u_lo, t_hi, c_last[ui]),
        "resend": resend[ui, uk],
        "flush": np.where(u_first, n_segments[ui], 0),
    }

    # Records after the last upload stay buffered into the next day.
    if n_taps:
        tail_first = tap_times[np.minimum(last_c, n_taps - 1)].tolist()
        tail_last = tap_times[np.maximum(tail_hi - 1, 0)].tolist()
    else:
        tail_first = tail_last = [-1] * len(agents)
    last_t = np.max(np.where(used, opp, -1), axis=1).tolist()
    tail_lo, tail_hi_l, n_used_l = last_c.tolist(), tail_hi.tolist(), n_used.tolist()
    for i, a in enumerate(agents):
        lo, hi_i, n_up = tail_lo[i], tail_hi_l[i], n_used_l[i]
        if hi_i > lo:
            a._pending = [
                *a._pending,
                (day, tap_times[lo:hi_i], out_batch[lo:hi_i], out_uploaded_at[lo:hi_i]),
            ]
            if n_up or not a._pending_n:
                a._pending_first = tail_first[i]
            a._pending_last = tail_last[i]
            a._pending_n = (0 if n_up else a._pending_n) + hi_i - lo
        elif n_up:
            a._pending_n, a._pending_first, a._pending_last = 0, -1, -1
        if n_up:
            a._seq += n_up
            a._last_upload_at = last_t[i]
    return table


def _start_uploads(
    agents: Sequence[ValidatorAgent],
    tables: Sequence[dict[str, np.ndarray]],
    out_batch: np.ndarray,
    out_uploaded_at: np.ndarray,
    unread_before: int | None = None,
) -> simpy.Process | None:
    """Register the planned uploads (plus resends) with the log and start their process.

    With ``unread_before``, the day's own records uploaded before that time are written at
    once (see ``load_fleet_day``); the process still keeps the log's clock and the earlier
    days' records.
    """
    cols = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    if len(cols["t"]) == 0:
        return None
    cols["device_id"] = np.fromiter(
        (a.device_id for a in agents), dtype=np.int64, count=len(agents)
    )[cols["agent"]]
    cols["is_resend"] = np.zeros(len(cols["t"]), dtype=bool)
    if unread_before is not None:
        # Still in (device, time) order, so the rows written run forwards through the arrays.
        early = (cols["hi"] > cols["lo"]) & (cols["t"] < unread_before)
        _write_spans(
            out_batch, out_uploaded_at, cols["lo"][early], cols["hi"][early],
            cols["seq"][early], cols["t"][early],
        )  # fmt: skip
        cols["lo"] = np.where(early, cols["hi"], cols["lo"])  # nothing left for the clock
    # A lost ack makes the device send the same batch again after the ack timeout.
    again = cols["resend"]
    dup = {k: v[again] for k, v in cols.items()}
    dup["t"] = dup["t"] + agents[0].settings.resend_delay_s
    dup["lo"] = dup["hi"] = np.zeros(len(dup["t"]), dtype=np.int64)
    dup["flush"] = np.zeros(len(dup["t"]), dtype=np.int64)
    dup["is_resend"][:] = True
    cols = {k: np.concatenate([cols[k], dup[k]]) for k in cols}
    order = stable_order(cols["t"], cols["is_resend"], cols["agent"])
    cols = {k: v[order] for k, v in cols.items()}
    table = _UploadTable(
        {
            "device_id": cols["device_id"],
            "upload_batch_id": cols["seq"],
            "uploaded_at": cols["t"],
            "n_records": cols["n"],
            "first_tap_at": cols["first"],
            "last_tap_at": cols["last"],
            "resend": cols["is_resend"],
        }
    )
    agents[0].upload_log._register(table)
    writes = cols["hi"] > cols["lo"]
    # Rows the clock must act on: records still to write, or earlier days' records to flush.
    act = np.flatnonzero(writes | (cols["flush"] > 0))
    t = cols["t"]
    ends = np.append(np.flatnonzero(t[1:] != t[:-1]) + 1, len(t))
    plan = _ClockPlan(
        t[ends - 1].tolist(),
        ends.tolist(),
        act.tolist(),
        cols["lo"][act].tolist(),
        cols["hi"][act].tolist(),
        cols["seq"][act].tolist(),
        [agents[i] for i in cols["agent"][act].tolist()],
        cols["flush"][act].tolist(),
    )
    env = agents[0].env
    return env.process(_upload_clock(env, table, plan, out_batch, out_uploaded_at))


def _write_spans(
    out_batch: np.ndarray,
    out_uploaded_at: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    seq: np.ndarray,
    t: np.ndarray,
) -> None:
    """Mark rows ``lo[i]:hi[i]`` uploaded in batch ``seq[i]`` at ``t[i]`` (disjoint spans)."""
    lens = hi - lo
    rows = np.repeat(lo, lens) + positions_in_runs(lens)
    out_batch[rows] = np.repeat(seq, lens)
    out_uploaded_at[rows] = np.repeat(t, lens)


class _ClockPlan(NamedTuple):
    """What an upload process does, as lists: distinct times with the end of their rows in the
    upload table, and the rows that write records (``act``, with their spans, batch, agent
    and the number of earlier-day segments they flush)."""

    times: list[int]
    ends: list[int]
    act: list[int]
    lo: list[int]
    hi: list[int]
    seq: list[int]
    agent: list[ValidatorAgent]
    flush: list[int]


def _upload_clock(
    env: simpy.Environment,
    table: _UploadTable,
    plan: _ClockPlan,
    out_batch: np.ndarray,
    out_uploaded_at: np.ndarray,
):
    """Wake at each distinct planned upload time and send what each device's buffer holds.

    Why one process for many devices: it costs one SimPy event per distinct upload time
    instead of one per device upload (measured 2-3x faster at 3,000 devices). Uploads in the
    same second run in device order; a resend row only logs (the records are already written).
    """
    act, n_act = plan.act, len(plan.act)
    a = 0
    for t, end in zip(plan.times, plan.ends, strict=True):
        yield env.timeout(t - env.now)
        while a < n_act and act[a] < end:
            lo, hi, seq = plan.lo[a], plan.hi[a], plan.seq[a]
            if hi > lo:
                out_batch[lo:hi] = seq
                out_uploaded_at[lo:hi] = t
            n_segments = plan.flush[a]
            if n_segments:
                # Earlier days' records leave with the first upload; write into their arrays.
                agent = plan.agent[a]
                for _, _, seg_b, seg_u in agent._pending[:n_segments]:
                    seg_b[:] = seq
                    seg_u[:] = t
                del agent._pending[:n_segments]
            a += 1
        table.done = end


def load_fleet_day(
    validators: Sequence[ValidatorAgent],
    day: int,
    tap_times: np.ndarray,
    offsets: np.ndarray,
    out_batch: np.ndarray,
    out_uploaded_at: np.ndarray,
    faults: DeviceDayFaults | None = None,
    unread_before: int | None = None,
) -> simpy.Process | None:
    """Load one day into many validators at once; same results as ``load_day`` one by one.

    The day's taps are grouped by validator: validator ``i`` owns rows
    ``offsets[i]:offsets[i + 1]`` of ``tap_times``/``out_batch``/``out_uploaded_at``, sorted by
    time within the group and all within day ``day``. All validators must share one
    ``DeviceSettings``, ``Streams``, environment and upload log. Faults are drawn for all
    devices in one pass (or taken from ``faults``, aligned with ``validators``: an incident
    drill edits ``device_day_faults`` output) and one SimPy process runs every device's uploads
    (returned).

    ``unread_before`` (absolute seconds): the caller promises not to read this day's rows of
    ``out_batch``/``out_uploaded_at`` before that time, so the rows uploaded earlier are
    written at once, not one slice per upload as the clock runs. Rows uploaded at or after it,
    the upload log and earlier days' buffered records still follow the clock.
    """
    n = len(validators)
    if n == 0:
        return None
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(tap_times):
        raise ValueError(f"offsets must run from 0 to {len(tap_times)} in {n + 1} entries")
    v0 = validators[0]
    settings, streams, env, log = v0.settings, v0.streams, v0.env, v0.upload_log
    shared = (
        v.settings is settings and v.streams is streams and v.env is env and v.upload_log is log
        for v in validators
    )
    if not all(shared):
        raise ValueError("load_fleet_day needs validators sharing settings, streams, env and log")
    taps = np.asarray(tap_times, dtype=np.int64)
    _check_day(taps, day)
    out_batch[:] = NOT_UPLOADED
    out_uploaded_at[:] = -1
    keys = np.repeat(np.arange(n, dtype=np.int64) * _KEY_STRIDE, np.diff(offsets))
    keys += taps - int(day) * DAY_S

    ids = np.fromiter((v.device_id for v in validators), dtype=np.int64, count=n)
    kinds = np.fromiter((v.kind_code for v in validators), dtype=np.int64, count=n)
    f = faults if faults is not None else device_day_faults(streams, day, ids, kinds, settings)
    if not np.array_equal(f.device_ids, ids):
        raise ValueError("faults.device_ids must match the validators, in order")
    tables = []
    for kind in np.unique(kinds).tolist():
        pos = np.flatnonzero(kinds == kind)
        k = len(_offsets_for(kind, settings))
        resend = f.resend[f.resend_offsets[pos][:, None] + np.arange(k)]
        tables.append(
            _plan_group(
                [validators[i] for i in pos.tolist()],
                pos,
                day,
                keys,
                taps,
                offsets,
                out_batch,
                out_uploaded_at,
                f.comm_start_s[pos],
                f.comm_end_s[pos],
                f.shift_s[pos],
                resend,
            )
        )
    return _start_uploads(validators, tables, out_batch, out_uploaded_at, unread_before)


def oldest_pending_day(validators: Sequence[ValidatorAgent]) -> int | None:
    """Oldest day any validator still holds records of; arrays of earlier days are final."""
    days = [d for v in validators if (d := v.oldest_pending_day) is not None]
    return min(days) if days else None


@dataclass(frozen=True, slots=True)
class RetapEffects:
    """What accidental double taps did to a day's taps (row indices into the tap arrays).

    ``double_tap_rows``: taps followed by an accidental re-tap. ``n_suppressed``: re-taps the lock
    swallowed. ``duplicate_rows``: taps whose re-tap was charged a second time (重复扣款); the
    engine adds a copy of each row, ``duplicate_gap_s`` seconds later.
    """

    double_tap_rows: np.ndarray
    n_suppressed: int
    duplicate_rows: np.ndarray
    duplicate_gap_s: np.ndarray


def retap_effects(
    streams: Streams, day: int, tap_ids: np.ndarray, settings: DeviceSettings
) -> RetapEffects:
    """Decide, for a whole day's taps at once, which are double-tapped and which are charged twice.

    A re-tap inside the lock window is suppressed unless the lock fails. A re-tap at or after the
    lock (only when ``double_tap_max_gap_s`` > ``retap_lock_s``) is always charged. Draws are keyed
    by ``tap_ids`` (stable tap identifiers), so a tap's fate does not depend on the other taps.
    """
    ids = np.asarray(tap_ids)
    u = streams.uniform("tap_double_tap", day, ids, 0)
    rows = np.flatnonzero(u < settings.double_tap_prob_per_tap)
    sub = ids[rows]
    gap = streams.uniform("tap_double_tap", day, sub, 1) * settings.double_tap_max_gap_s
    fails = streams.uniform("tap_double_tap", day, sub, 2) < settings.lock_failure_prob
    locked = gap < settings.retap_lock_s
    charged = ~locked | fails
    return RetapEffects(
        double_tap_rows=rows,
        n_suppressed=int(np.count_nonzero(locked & ~fails)),
        duplicate_rows=rows[charged],
        duplicate_gap_s=np.floor(gap[charged]).astype(np.int64),
    )


@dataclass(frozen=True, slots=True)
class OutageWindows:
    """Reader outages of one day: only devices with an outage, sorted by ``device_ids``.

    ``start_s``/``end_s`` are absolute seconds (end exclusive, cut off at midnight).
    """

    device_ids: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray


def reader_outage_windows(
    streams: Streams, day: int, device_ids: np.ndarray, settings: DeviceSettings
) -> OutageWindows:
    """Draw which readers are down during day ``day`` and when (one window per device at most).

    The outage is cut off at midnight: the assumption is that the device is checked overnight.
    """
    ids = np.unique(np.asarray(device_ids, dtype=np.int64))
    u = streams.uniform("device_reader_outage", day, ids, 0)
    hit = u < settings.reader_outage_prob_per_device_day
    ids = ids[hit]
    day_start = int(day) * DAY_S
    start = day_start + (streams.uniform("device_reader_outage", day, ids, 1) * DAY_S).astype(
        np.int64
    )
    dur = _exp_duration_s(
        streams.uniform("device_reader_outage", day, ids, 2),
        settings.reader_outage_mean_min,
    )
    end = np.minimum(start + dur, day_start + DAY_S)
    return OutageWindows(ids, start, end)


def reader_outage_mask(
    device_ids: np.ndarray, t_s: np.ndarray, windows: OutageWindows, offset_s: int = 0
) -> np.ndarray:
    """True for taps (device id, time ``t_s + offset_s`` in absolute seconds) made while their
    reader was down. The offset (a day's start, for times of day) is added only to the few
    taps on a reader that is down at all."""
    dev = np.asarray(device_ids)
    down = np.zeros(len(dev), dtype=bool)
    if len(windows.device_ids) == 0 or len(dev) == 0:
        return down
    # Device ids are small non-negative numbers: a table from id to its window finds the few
    # taps on a reader that is down at all with one lookup per tap, not a binary search.
    size = max(int(dev.max()), int(windows.device_ids[-1])) + 1
    if int(dev.min()) < 0 or int(windows.device_ids[0]) < 0 or size > 4 * len(dev) + (1 << 16):
        t = np.asarray(t_s, dtype=np.int64) + offset_s
        return _outage_mask_searched(dev.astype(np.int64), t, windows)
    window_of = np.full(size, -1, dtype=np.int32)
    window_of[windows.device_ids] = np.arange(len(windows.device_ids), dtype=np.int32)
    w = window_of[dev]
    at = np.flatnonzero(w >= 0)
    w = w[at]
    t = np.asarray(t_s)[at].astype(np.int64) + offset_s
    down[at] = (t >= windows.start_s[w]) & (t < windows.end_s[w])
    return down


def _outage_mask_searched(dev: np.ndarray, t: np.ndarray, windows: OutageWindows) -> np.ndarray:
    """``reader_outage_mask`` by binary search over the (sorted) devices with an outage."""
    idx = np.minimum(windows.device_ids.searchsorted(dev), len(windows.device_ids) - 1)
    return (windows.device_ids[idx] == dev) & (t >= windows.start_s[idx]) & (t < windows.end_s[idx])
