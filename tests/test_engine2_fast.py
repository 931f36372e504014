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
