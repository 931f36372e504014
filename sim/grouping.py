"""Small array helpers for grouped columns (one place, instead of one copy per caller)."""

from __future__ import annotations

import numpy as np


def rank_in_groups(sorted_keys: np.ndarray) -> np.ndarray:
    """1-based position of each element within its run of equal keys.

    ``sorted_keys`` must hold each group's elements next to each other (e.g. sorted by key):
    ``[7, 7, 9, 9, 9, 4]`` gives ``[1, 2, 1, 2, 3, 1]``. Used for per-card and per-device
    counters (the n-th purchase of a card today, the n-th record of a device).
    """
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.ones(n, dtype=bool)
    start[1:] = sorted_keys[1:] != sorted_keys[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    return np.arange(n, dtype=np.int64) - first + 1
