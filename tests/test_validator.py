"""Validators: buffer, batch upload on the SimPy clock, faults; asserted as event logs."""

from __future__ import annotations

import dataclasses

import mesa
import numpy as np
import pydantic
import pytest
import simpy

from agents.validator import (
    DAY_S,
    NOT_UPLOADED,
    REFUSED_BUFFER_FULL,
    DeviceDayFaults,
    DeviceSettings,
    UploadLog,
    ValidatorAgent,
    device_day_faults,
    load_fleet_day,
    oldest_pending_day,
    reader_outage_mask,
    reader_outage_windows,
    retap_effects,
)
from sim.rng import Streams

NO_FAULTS = dict(
    comm_outage_prob_per_device_day=0.0,
    reader_outage_prob_per_device_day=0.0,
    double_tap_prob_per_tap=0.0,
    lock_failure_prob=0.0,
    resend_prob_per_upload=0.0,
    upload_jitter_s=0,
)


def faults(comm: tuple[int, int] | None = None, resend_at: tuple[int, ...] = (), n: int = 2):
    """Scripted faults for device 7 with ``n`` upload opportunities a day."""
    return DeviceDayFaults.scripted(7, n, comm_outage_s=comm, resend_at=resend_at)


def hm(h: int, m: int, day: int = 0) -> int:
    """Absolute seconds of HH:MM on ``day``."""
    return day * DAY_S + h * 3600 + m * 60


def make_validator(kind: str = "bus", **overrides) -> tuple[simpy.Environment, ValidatorAgent]:
    env = simpy.Environment()
    settings = DeviceSettings(**{**NO_FAULTS, **overrides})
    agent = ValidatorAgent(
        mesa.Model(),
        7,
        kind,
        env=env,
        settings=settings,
        streams=Streams(1),
        upload_log=UploadLog(),
    )
    return env, agent


def day_arrays(*times: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(times)
    return np.array(times, dtype=np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)


def test_uploads_batches_at_scheduled_times() -> None:
    env, v = make_validator()
    taps, batch, up = day_arrays(hm(8, 0), hm(9, 0), hm(12, 30), hm(13, 0), hm(20, 0))
    v.load_day(0, taps, batch, up, faults())
    assert batch.tolist() == [NOT_UPLOADED] * 5
    env.run(until=hm(12, 31))
    # A tap made in the upload second is in that upload; later ones are still buffered.
    assert batch.tolist() == [0, 0, 0, NOT_UPLOADED, NOT_UPLOADED]
    env.run(until=DAY_S)
    assert v.upload_log.rows() == [
        (7, 0, hm(12, 30), 3, hm(8, 0), hm(12, 30), 0),
        (7, 1, hm(23, 30), 2, hm(13, 0), hm(20, 0), 0),
    ]
    assert batch.tolist() == [0, 0, 0, 1, 1]
    assert up.tolist() == [hm(12, 30)] * 3 + [hm(23, 30)] * 2
    assert v.pending_records == 0 and v.oldest_pending_day is None


def test_process_wakes_only_when_records_are_buffered() -> None:
    env, v = make_validator("metro", metro_upload_interval_min=5)
    taps, batch, up = day_arrays(hm(10, 1), hm(10, 2), hm(10, 7))
    v.load_day(0, taps, batch, up, faults(n=288))
    wakes = []
    while env.peek() < DAY_S:
        env.step()
        wakes.append(env.now)
    # Distinct event times: start-up, then only the two uploads (no event per tap).
    assert sorted(set(wakes)) == [0, hm(10, 5), hm(10, 10)]
    assert [(r[2], r[3]) for r in v.upload_log.rows()] == [(hm(10, 5), 2), (hm(10, 10), 1)]


def test_comm_outage_defers_upload_until_next_opportunity_after_it() -> None:
    env, v = make_validator()
    taps, batch, up = day_arrays(hm(8, 0), hm(13, 0))
    v.load_day(0, taps, batch, up, faults((hm(12, 0), hm(14, 0))))
    env.run(until=DAY_S)
    assert v.upload_log.rows() == [(7, 0, hm(23, 30), 2, hm(8, 0), hm(13, 0), 0)]
    assert up.tolist() == [hm(23, 30), hm(23, 30)]


def test_comm_outage_over_midnight_carries_buffer_to_a_later_day() -> None:
    env, v = make_validator()
    d0 = day_arrays(hm(12, 40), hm(22, 0))
    # Uplink down from 23:00 on day 0 to 13:00 on day 1: both 23:30 and 12:30 are lost.
    v.load_day(0, *d0, faults((hm(23, 0), hm(13, 0, day=1))))
    env.run(until=DAY_S)
    assert v.upload_log.rows() == []
    assert v.oldest_pending_day == 0 and v.pending_records == 2
    d1 = day_arrays(hm(9, 0, day=1))
    v.load_day(1, *d1, faults())
    assert oldest_pending_day([v]) == 0
    env.run(until=2 * DAY_S)
    assert v.upload_log.rows() == [(7, 0, hm(23, 30, day=1), 3, hm(12, 40), hm(9, 0, day=1), 0)]
    # The agent wrote the late upload into day 0's arrays it kept.
    assert d0[1].tolist() == [0, 0] and d0[2].tolist() == [hm(23, 30, day=1)] * 2
    assert d1[2].tolist() == [hm(23, 30, day=1)]
    assert oldest_pending_day([v]) is None


def test_records_after_last_upload_carry_over_to_next_day() -> None:
    env, v = make_validator()
    d0 = day_arrays(hm(23, 40), hm(23, 50))
    v.load_day(0, *d0, faults())
    env.run(until=DAY_S)
    assert v.upload_log.rows() == [] and d0[1].tolist() == [NOT_UPLOADED] * 2
    assert v.oldest_pending_day == 0
    d1 = day_arrays(hm(7, 0, day=1), hm(15, 0, day=1))
    v.load_day(1, *d1, faults())
    env.run(until=2 * DAY_S)
    assert v.upload_log.rows() == [
        (7, 0, hm(12, 30, day=1), 3, hm(23, 40), hm(7, 0, day=1), 0),
        (7, 1, hm(23, 30, day=1), 1, hm(15, 0, day=1), hm(15, 0, day=1), 0),
    ]
    assert d0[1].tolist() == [0, 0] and d0[2].tolist() == [hm(12, 30, day=1)] * 2


def test_carried_records_alone_trigger_an_upload() -> None:
    env, v = make_validator()
    d0 = day_arrays(hm(23, 45))
    v.load_day(0, *d0, faults())
    env.run(until=DAY_S)
    v.load_day(1, *day_arrays(), faults())
    env.run(until=2 * DAY_S)
    assert v.upload_log.rows() == [(7, 0, hm(12, 30, day=1), 1, hm(23, 45), hm(23, 45), 0)]


def test_buffer_capacity_refuses_taps_while_full() -> None:
    env, v = make_validator(buffer_capacity_records=3)
    taps, batch, up = day_arrays(*[hm(8, m) for m in range(5)], hm(13, 0), hm(23, 40), hm(23, 50))
    v.load_day(0, taps, batch, up, faults())
    # Refusals are known as soon as the day is loaded.
    assert batch[:5].tolist() == [NOT_UPLOADED] * 3 + [REFUSED_BUFFER_FULL] * 2
    env.run(until=DAY_S)
    assert v.upload_log.rows() == [
        (7, 0, hm(12, 30), 3, hm(8, 0), hm(8, 2), 0),
        (7, 1, hm(23, 30), 1, hm(13, 0), hm(13, 0), 0),
    ]
    assert batch.tolist() == [0, 0, 0, -2, -2, 1, -1, -1]
    assert up.tolist()[3:5] == [-1, -1]
    # Two records carried over leave room for one more before the next upload.
    d1 = day_arrays(hm(8, 0, day=1), hm(9, 0, day=1))
    v.load_day(1, *d1, faults())
    assert d1[1].tolist() == [NOT_UPLOADED, REFUSED_BUFFER_FULL]
    env.run(until=2 * DAY_S)
    assert v.upload_log.rows()[-1] == (7, 2, hm(12, 30, day=1), 3, hm(23, 40), hm(8, 0, day=1), 0)
    assert v.refused_records == 3


def test_lost_ack_resends_the_same_batch() -> None:
    env, v = make_validator(resend_delay_s=60)
    taps, batch, up = day_arrays(hm(8, 0), hm(13, 0))
    v.load_day(0, taps, batch, up, faults(resend_at=(0,)))
    env.run(until=DAY_S)
    assert v.upload_log.rows() == [
        (7, 0, hm(12, 30), 1, hm(8, 0), hm(8, 0), 0),
        (7, 0, hm(12, 31), 1, hm(8, 0), hm(8, 0), 1),
        (7, 1, hm(23, 30), 1, hm(13, 0), hm(13, 0), 0),
    ]
    cols = v.upload_log.drain()
    assert cols["resend"].tolist() == [False, True, False]
    assert cols["upload_batch_id"].tolist() == [0, 0, 1]
    assert len(v.upload_log) == 0


def test_load_day_before_previous_day_ran_is_an_error() -> None:
    env, v = make_validator()
    v.load_day(0, *day_arrays(hm(8, 0)), faults())
    with pytest.raises(RuntimeError, match="before the previous day"):
        v.load_day(1, *day_arrays(hm(8, 0, day=1)), faults())


def test_fault_draws_are_pure_functions_of_device_and_day() -> None:
    s = DeviceSettings(comm_outage_prob_per_device_day=0.5, upload_jitter_s=600)
    ids = np.arange(100, 140)
    kinds = np.where(ids % 4 == 0, 1, 0)
    streams = Streams(42)
    fleet = device_day_faults(streams, 3, ids, kinds, s)
    one = device_day_faults(Streams(42), 3, ids[5:6], kinds[5:6], s)
    assert one.comm_start_s[0] == fleet.comm_start_s[5]
    assert one.shift_s[0] == fleet.shift_s[5]
    a, b = fleet.resend_offsets[5], fleet.resend_offsets[6]
    assert one.resend.tolist() == fleet.resend[a:b].tolist()
    hit = fleet.comm_start_s >= 0
    assert 5 < hit.sum() < 35
    assert np.all((fleet.comm_start_s[hit] >= 3 * DAY_S) & (fleet.comm_start_s[hit] < 4 * DAY_S))
    assert np.all(fleet.comm_end_s[hit] > fleet.comm_start_s[hit])
    assert np.all((fleet.shift_s >= 0) & (fleet.shift_s < 600))
    assert np.all(fleet.shift_s[kinds == 1] < 300)  # metro shift capped at one 5-min interval
    assert not np.array_equal(
        fleet.comm_start_s, device_day_faults(streams, 4, ids, kinds, s).comm_start_s
    )


def test_fleet_loading_matches_loading_each_agent_alone() -> None:
    # Many faults and a small buffer, over 3 days, so carry-over, refusals and outages that
    # run past midnight all occur on both paths.
    settings = DeviceSettings(
        comm_outage_prob_per_device_day=0.4,
        comm_outage_mean_min=600,
        resend_prob_per_upload=0.2,
        upload_jitter_s=900,
        buffer_capacity_records=25,
    )
    rng = np.random.default_rng(0)
    days = []
    for day in range(3):
        counts = rng.integers(0, 40, size=30)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        taps = np.concatenate([np.sort(rng.integers(0, DAY_S, size=c)) for c in counts])
        days.append((offsets, taps + day * DAY_S))

    def run(fleet_path: bool) -> tuple[list, list[np.ndarray], list[np.ndarray]]:
        env, model, log, streams = simpy.Environment(), mesa.Model(), UploadLog(), Streams(9)
        kinds = ["metro" if i % 5 == 0 else "bus" for i in range(30)]
        agents = [
            ValidatorAgent(
                model, 1000 + i, k, env=env, settings=settings, streams=streams, upload_log=log
            )
            for i, k in enumerate(kinds)
        ]
        batches, ups = [], []
        for day, (offsets, taps) in enumerate(days):
            batch, up = np.zeros_like(taps), np.zeros_like(taps)
            batches.append(batch)
            ups.append(up)
            if fleet_path:
                load_fleet_day(agents, day, taps, offsets, batch, up)
            else:
                for i, a in enumerate(agents):
                    sl = slice(offsets[i], offsets[i + 1])
                    a.load_day(day, taps[sl], batch[sl], up[sl])
            env.run(until=(day + 1) * DAY_S)
        return sorted(log.rows()), batches, ups

    rows_fleet, batch_fleet, up_fleet = run(True)
    rows_alone, batch_alone, up_alone = run(False)
    assert rows_fleet == rows_alone
    for a, b in zip(batch_fleet + up_fleet, batch_alone + up_alone, strict=True):
        assert np.array_equal(a, b)
    flat_batch = np.concatenate(batch_fleet)
    assert (flat_batch == REFUSED_BUFFER_FULL).any() and (flat_batch >= 0).any()
    assert any(r[6] == 1 for r in rows_fleet)
    # Some records of day 0 or 1 were uploaded on a later day.
    late = np.concatenate([u[u >= 0] // DAY_S - d for d, u in enumerate(up_fleet[:2])])
    assert (late > 0).any()
    # Every uploaded record is counted once in the log (resend rows excluded).
    assert sum(r[3] for r in rows_fleet if r[6] == 0) == int((flat_batch >= 0).sum())


def test_retap_lock_suppresses_or_duplicates() -> None:
    ids = np.arange(10_000)
    streams = Streams(5)
    base = dict(double_tap_prob_per_tap=0.1, double_tap_max_gap_s=1.5, retap_lock_s=2.0)
    locked = retap_effects(streams, 0, ids, DeviceSettings(**base, lock_failure_prob=0.0))
    assert 800 < len(locked.double_tap_rows) < 1200
    assert locked.n_suppressed == len(locked.double_tap_rows)
    assert len(locked.duplicate_rows) == 0
    failing = retap_effects(streams, 0, ids, DeviceSettings(**base, lock_failure_prob=1.0))
    assert failing.n_suppressed == 0
    assert failing.duplicate_rows.tolist() == locked.double_tap_rows.tolist()
    assert np.all((failing.duplicate_gap_s >= 0) & (failing.duplicate_gap_s <= 1))
    no_lock = retap_effects(
        streams, 0, ids, DeviceSettings(**{**base, "retap_lock_s": 0.0}, lock_failure_prob=0.0)
    )
    assert no_lock.duplicate_rows.tolist() == locked.double_tap_rows.tolist()
    # A tap's fate depends only on its id: a subset sees the same decisions.
    sub = retap_effects(streams, 0, ids[::2], DeviceSettings(**base, lock_failure_prob=0.0))
    assert (ids[::2][sub.double_tap_rows]).tolist() == [
        i for i in locked.double_tap_rows.tolist() if i % 2 == 0
    ]


def test_reader_outage_marks_taps_inside_the_window() -> None:
    s = DeviceSettings(reader_outage_prob_per_device_day=1.0, reader_outage_mean_min=120)
    w = reader_outage_windows(Streams(3), 2, np.array([30, 10, 20, 10]), s)
    assert w.device_ids.tolist() == [10, 20, 30]
    assert np.all((w.start_s >= 2 * DAY_S) & (w.end_s <= 3 * DAY_S) & (w.end_s > w.start_s))
    dev = np.array([10, 10, 10, 20, 99])
    t = np.array([w.start_s[0] - 1, w.start_s[0], w.end_s[0], w.start_s[1], w.start_s[0]])
    assert reader_outage_mask(dev, t, w).tolist() == [False, True, False, True, False]
    # Ids a lookup table cannot hold (negative, or far beyond the taps) take the binary search.
    assert reader_outage_mask(dev - 200, t, w).tolist() == [False] * 5
    far = np.array([10, 10, 10, 20, 10**9])
    assert reader_outage_mask(far, t, w).tolist() == [False, True, False, True, False]
    none = reader_outage_windows(Streams(3), 2, np.array([10, 20]), DeviceSettings(**NO_FAULTS))
    assert len(none.device_ids) == 0
    assert not reader_outage_mask(dev, t, none).any()


def test_settings_reject_bad_input() -> None:
    with pytest.raises(pydantic.ValidationError, match="HH:MM"):
        DeviceSettings(bus_upload_times_hhmm=("12:30", "25:00"))
    with pytest.raises(pydantic.ValidationError, match="strictly increasing"):
        DeviceSettings(bus_upload_times_hhmm=("23:30", "12:30"))
    with pytest.raises(pydantic.ValidationError, match="extra"):
        DeviceSettings(retap_lock_sec=2)
    assert DeviceSettings().buffer_capacity_records == 24_570


def test_fleet_drill_faults_override_the_draws() -> None:
    env, model, log, streams = simpy.Environment(), mesa.Model(), UploadLog(), Streams(2)
    settings = DeviceSettings(**NO_FAULTS)
    fleet = [
        ValidatorAgent(model, d, "bus", env=env, settings=settings, streams=streams, upload_log=log)
        for d in (1, 2)
    ]
    f = device_day_faults(streams, 0, np.array([1, 2]), np.array([0, 0]), settings)
    # Drill: device 1's uplink is down all day.
    drill = dataclasses.replace(f, comm_start_s=np.array([0, -1]), comm_end_s=np.array([DAY_S, -1]))
    taps = np.array([hm(8, 0), hm(9, 0)])
    batch, up = np.zeros(2, np.int64), np.zeros(2, np.int64)
    load_fleet_day(fleet, 0, taps, np.array([0, 1, 2]), batch, up, faults=drill)
    env.run(until=DAY_S)
    assert log.rows() == [(2, 0, hm(12, 30), 1, hm(9, 0), hm(9, 0), 0)]
    assert batch.tolist() == [NOT_UPLOADED, 0]
    with pytest.raises(ValueError, match="within day 1"):
        load_fleet_day(fleet, 1, taps, np.array([0, 1, 2]), batch, up)
