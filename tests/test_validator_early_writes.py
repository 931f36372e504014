"""load_fleet_day's ``unread_before``: the day's records uploaded before it are written at load,
and once the clock has run everything matches the timed writes."""

from __future__ import annotations

import mesa
import numpy as np
import simpy

from agents.validator import (
    DAY_S,
    NOT_UPLOADED,
    DeviceSettings,
    UploadLog,
    ValidatorAgent,
    _write_spans,
    load_fleet_day,
)
from sim.rng import Streams


def _days(rng: np.random.Generator, n_dev: int) -> list[tuple[np.ndarray, np.ndarray]]:
    days = []
    for day in range(3):
        counts = rng.integers(0, 40, size=n_dev)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        taps = np.concatenate([np.sort(rng.integers(0, DAY_S, size=c)) for c in counts])
        days.append((offsets, taps + day * DAY_S))
    return days


def _run(days, settings, unread_before_s: int | None, probe_s: int | None = None):
    """Run the fleet through ``days``; with ``probe_s``, also return day 0's arrays as they
    are at that second of day 0 (before the clock reaches it)."""
    env, model, log, streams = simpy.Environment(), mesa.Model(), UploadLog(), Streams(3)
    kinds = ["metro" if i % 4 == 0 else "bus" for i in range(len(days[0][0]) - 1)]
    agents = [
        ValidatorAgent(
            model, 50 + i, k, env=env, settings=settings, streams=streams, upload_log=log
        )
        for i, k in enumerate(kinds)
    ]
    batches, ups, probe = [], [], None
    for day, (offsets, taps) in enumerate(days):
        batch, up = np.zeros_like(taps), np.zeros_like(taps)
        batches.append(batch)
        ups.append(up)
        early = None if unread_before_s is None else day * DAY_S + unread_before_s
        load_fleet_day(agents, day, taps, offsets, batch, up, unread_before=early)
        if day == 0 and probe_s is not None:
            env.run(until=probe_s)
            probe = (batch.copy(), up.copy(), len(log))
        env.run(until=(day + 1) * DAY_S)
    return log.rows(), batches, ups, probe


def test_early_writes_match_the_clock():
    settings = DeviceSettings(
        comm_outage_prob_per_device_day=0.4,
        comm_outage_mean_min=600,
        resend_prob_per_upload=0.2,
        upload_jitter_s=900,
        buffer_capacity_records=25,
    )
    days = _days(np.random.default_rng(5), 24)
    timed = _run(days, settings, None, probe_s=12 * 3600)
    for unread in (DAY_S - 1, 6 * 3600, 0):
        early = _run(days, settings, unread, probe_s=12 * 3600)
        assert early[0] == timed[0]  # the same upload log
        for a, b in zip(early[1] + early[2], timed[1] + timed[2], strict=True):
            assert np.array_equal(a, b)
        assert early[3][2] == timed[3][2]  # the log still follows the clock
    # Before the clock reaches them, rows uploaded before ``unread_before`` are already written.
    early = _run(days, settings, DAY_S - 1, probe_s=12 * 3600)
    final_batch, final_up = timed[1][0], timed[2][0]
    own_day = (final_up >= 0) & (final_up < DAY_S - 1)
    assert (final_up[own_day] >= 12 * 3600).any()
    assert np.array_equal(early[3][0][own_day], final_batch[own_day])
    assert np.array_equal(early[3][1][own_day], final_up[own_day])
    # Without it they wait for the clock.
    later = own_day & (final_up >= 12 * 3600)
    assert (timed[3][0][later] == NOT_UPLOADED).all()


def test_write_spans():
    batch = np.full(10, -1, dtype=np.int64)
    up = np.full(10, -1, dtype=np.int64)
    _write_spans(batch, up, np.array([6, 0, 3]), np.array([9, 2, 3]), np.array([7, 4, 5]),
                 np.array([70, 40, 50]))  # fmt: skip
    assert batch.tolist() == [4, 4, -1, -1, -1, -1, 7, 7, 7, -1]
    assert up.tolist() == [40, 40, -1, -1, -1, -1, 70, 70, 70, -1]
    _write_spans(batch, up, *(np.zeros(0, np.int64) for _ in range(4)))
    assert batch.tolist() == [4, 4, -1, -1, -1, -1, 7, 7, 7, -1]
