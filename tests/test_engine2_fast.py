"""Shortcuts of the engine's hot paths read exactly what the general paths read."""

from __future__ import annotations

import numpy as np

from agents.citizen import DayTaps


def test_day_taps_take_mask_equals_take_indices():
    rng = np.random.default_rng(5)
    n = 50
    taps = DayTaps(
        row=rng.integers(0, 9, n), t_s=rng.integers(0, 9, n).astype(np.int32),
        line=rng.integers(0, 9, n).astype(np.int32), stop=rng.integers(0, 9, n).astype(np.int32),
        device=rng.integers(0, 9, n).astype(np.int32), mode=rng.integers(0, 2, n).astype(np.uint8),
        kind=rng.integers(0, 3, n).astype(np.uint8), distance_km=rng.random(n).astype(np.float32),
        journey=rng.integers(0, 99, n), tap_key=rng.integers(0, 99, n),
        medium=rng.integers(0, 4, n).astype(np.uint8), incomplete=rng.random(n) < 0.2,
    )  # fmt: skip
    down = rng.random(n) < 0.1
    by_mask, by_index = taps.take(~down), taps.take(np.flatnonzero(~down))
    for name in DayTaps.__dataclass_fields__:
        a, b = getattr(by_mask, name), getattr(by_index, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def test_gather_narrows_int32_columns_exactly():
    """int32 columns of a day's size are gathered as int16 when they fit, at both ends, and
    as they are when one value does not: same values, same dtype."""
    from sim.grouping import gather

    rng = np.random.default_rng(7)
    n = 100_000
    idx = rng.permutation(n)
    cols = [
        rng.integers(-(2**15), 2**15, n).astype(np.int32),  # fits int16 at both ends
        np.array([2**15] + [0] * (n - 1), dtype=np.int32),  # one value just past int16
        np.array([-(2**15) - 1] + [0] * (n - 1), dtype=np.int32),  # one just below
        rng.integers(-(2**31), 2**31, n).astype(np.int32),  # wide
    ]
    for col in cols:
        for at in (idx, idx[:10]):
            got = gather(col, at)
            assert got.dtype == np.int32 and np.array_equal(got, col[at])


def test_card_counters_one_repeat_and_low_bits():
    """settle_balances numbers a card's k-th purchase of the day counter_before + k, wrapped at
    65536, with one repeat and a mask: the same as the rank in the run plus ``% 65536``, also
    across the wrap."""
    rng = np.random.default_rng(11)
    r = np.sort(rng.integers(0, 500, 3000))
    start = np.r_[True, r[1:] != r[:-1]]
    first = np.flatnonzero(start)
    used_count = np.diff(first, append=len(r))
    before = rng.integers(65500, 65536, len(first)).astype(np.int64)  # most of them wrap
    rank = np.arange(1, len(r) + 1, dtype=np.int64) - np.repeat(first, used_count)
    reference = (np.repeat(before, used_count) + rank) % 65536
    value = np.repeat(before - first, used_count)
    value += np.arange(1, len(r) + 1, dtype=np.int64)
    value &= 0xFFFF
    assert np.array_equal(value, reference) and (reference < 100).any()


def test_reader_outage_mask_offset_equals_absolute_times():
    """Times of day with the day's start as ``offset_s`` mark the same taps as absolute times,
    on both lookups (the id table and the binary search for far-apart ids)."""
    from agents.validator import OutageWindows, reader_outage_mask

    day_s = 5 * 86_400
    windows = OutageWindows(
        np.array([3, 7], np.int64),
        np.array([day_s + 100, day_s + 5_000], np.int64),
        np.array([day_s + 200, day_s + 9_000], np.int64),
    )
    rng = np.random.default_rng(2)
    t_of_day = rng.integers(0, 10_000, 400).astype(np.int32)
    for dev in (rng.integers(0, 9, 400).astype(np.int32), rng.integers(0, 9, 400) * 10**7):
        absolute = reader_outage_mask(dev, day_s + t_of_day.astype(np.int64), windows)
        assert np.array_equal(reader_outage_mask(dev, t_of_day, windows, offset_s=day_s), absolute)
