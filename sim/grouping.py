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


def stable_order(*keys: np.ndarray) -> np.ndarray:
    """Indices that sort by ``keys[0]``, then ``keys[1]``, ...; equal keys keep input order
    (as ``np.lexsort(keys[::-1])``, which takes the last key as the primary one).

    Integer keys whose ranges and the position fit one int64 together are packed into one
    unique key (the position in the low bits) and sorted with a plain sort: NumPy's SIMD sort
    is an order of magnitude faster than a stable argsort or a lexsort on millions of rows,
    and a unique key makes any sort stable. When the later keys do not fit (a 63-bit record
    key as the last tiebreak, say), the leading keys that fit are sorted so and only the runs
    they leave tied (rare) are ordered by the rest.
    """
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lows = [int(k.min()) for k in keys]
    widths = [(int(k.max()) - low).bit_length() for k, low in zip(keys, lows, strict=True)]
    p_bits = max(n - 1, 1).bit_length()
    fit = 0  # how many leading keys fit with the position
    while fit < len(keys) and sum(widths[: fit + 1]) + p_bits <= 63:
        fit += 1
    if fit == 0:
        if len(keys) == 1:
            return _argsort_stable_wide(keys[0])
        return np.lexsort(keys[::-1])
    packed = np.zeros(n, dtype=np.int64)
    for key, low, width in zip(keys[:fit], lows, widths, strict=False):
        packed <<= width
        packed |= key.astype(np.int64) - low
    packed <<= p_bits
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    if fit == len(keys):
        packed &= (1 << p_bits) - 1
        return packed
    lead = packed >> p_bits  # the leading keys, in sorted order
    order = packed & ((1 << p_bits) - 1)
    tie = np.flatnonzero(lead[1:] == lead[:-1])
    if tie.size:
        at = np.unique(np.concatenate([tie, tie + 1]))  # every element of a tied run
        sub = order[at]  # in input order within each run (the position was packed)
        rest = [k[sub] for k in keys[fit:]]
        order[at] = sub[np.lexsort((sub, *rest[::-1], lead[at]))]
    return order


def _argsort_stable_wide(key: np.ndarray) -> np.ndarray:
    """Stable argsort of one key too wide to pack with the position: a quicksort, then only
    the runs of equal keys (rare where this is used) re-sorted by position."""
    order = np.argsort(key)
    sk = key[order]
    tie = np.flatnonzero(sk[1:] == sk[:-1])
    if tie.size:
        at = np.unique(np.concatenate([tie, tie + 1]))
        sub = order[at]
        order[at] = sub[np.lexsort((sub, sk[at]))]
    return order
