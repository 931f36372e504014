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


#: Columns shorter than this are gathered as they are: they fit the core's cache anyway.
_NARROW_FROM = 1 << 15
#: The narrower types each integer column type is tried in (with their ranges), narrowest first.
_NARROWER = {
    np.dtype(wide): tuple((np.iinfo(t).min, np.iinfo(t).max, t) for t in narrow)
    for wide, narrow in ((np.int64, (np.int16, np.int32)), (np.int32, (np.int16,)))
}


def gather(col: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``col[idx]`` for a one-dimensional column: the same values and dtype.

    A random gather from an int64 column of a day's size (over a megabyte) runs at the speed of
    memory, not of the core's cache. When ``idx`` takes most of the column and its values fit
    int16 (fares in fen; lines, stops and devices of int32 columns) or int32 (times,
    population rows), the column is gathered as a copy of that type, a quarter or half the
    bytes, and widened back: about twice as fast, the extra passes being sequential.
    """
    n = len(col)
    narrower = _NARROWER.get(col.dtype)
    if narrower is not None and n >= _NARROW_FROM and 2 * len(idx) >= n:
        low, high = col.min(), col.max()
        for lo, hi, narrow in narrower:
            if lo <= low and high <= hi:
                return col.astype(narrow).take(idx).astype(col.dtype)
    return col.take(idx)


def run_starts(grouped_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal keys (``[7, 7, 9, 4, 4]`` gives
    ``[0, 2, 3]``); empty for an empty array. With the keys grouped (e.g. sorted), the runs are
    the groups: ``grouped_keys[starts]`` are the distinct keys and ``np.diff(starts,
    append=len(grouped_keys))`` their counts."""
    n = len(grouped_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(grouped_keys[1:], grouped_keys[:-1], out=start[1:])
    return np.flatnonzero(start)


def positions_in_runs(lengths: np.ndarray) -> np.ndarray:
    """Each element's position in its run, for runs of ``lengths`` laid end to end
    (``[2, 0, 3]`` gives ``[0, 1, 0, 1, 2]``): the k of a run's k-th row, int64. Add
    ``np.repeat(first, lengths)`` for the rows of spans starting at ``first``."""
    ends = np.cumsum(lengths, dtype=np.int64)
    total = int(ends[-1]) if len(ends) else 0
    return np.arange(total, dtype=np.int64) - np.repeat(ends - lengths, lengths)


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
    p_bits = max(n - 1, 1).bit_length()
    lows: list[int] = []  # of the leading keys that fit with the position (later ones unread)
    widths: list[int] = []
    used = p_bits
    for key in keys:
        low = int(key.min())
        width = (int(key.max()) - low).bit_length()
        if used + width > 63:
            break
        lows.append(low)
        widths.append(width)
        used += width
    fit = len(lows)
    if fit == 0:
        if len(keys) == 1:
            return _argsort_stable_wide(keys[0])
        return np.lexsort(keys[::-1])
    packed = np.subtract(keys[0], lows[0], dtype=np.int64, casting="unsafe")
    for key, low, width in zip(keys[1:fit], lows[1:], widths[1:], strict=True):
        packed <<= width
        packed |= np.subtract(key, low, dtype=np.int64, casting="unsafe")
    packed <<= p_bits
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    if fit == len(keys):
        packed &= (1 << p_bits) - 1
        return packed
    order = packed & ((1 << p_bits) - 1)
    lead = packed
    lead >>= p_bits  # the leading keys, in sorted order
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


def runs_stable_order(keys: np.ndarray) -> np.ndarray:
    """Indices that sort integer ``keys``, equal keys in input order (as ``stable_order``).

    The clearing's keys mostly come in long sorted runs (a day's records arrive device by
    device, each device's in serial and time order). A merge sort that finds the runs
    (NumPy's stable sort of wide integers, a timsort) then beats the packed SIMD sort of
    ``stable_order`` several times over; on shuffled keys it loses, so it is used only when
    the keys step down seldom."""
    n = keys.size
    if n > 64 and np.count_nonzero(keys[1:] < keys[:-1]) <= n >> 6:
        return np.argsort(keys, kind="stable")
    return stable_order(keys)


def narrow_stable_order(seconds: np.ndarray) -> np.ndarray:
    """``np.argsort(seconds, kind="stable")`` for integer keys spanning less than 2**32 (a
    day's times, say), in two radix passes over 16-bit digits (NumPy radix-sorts 16-bit
    keys; on int64 it merge-sorts, ~3x slower on a day of taps); others fall back to that
    argsort."""
    if len(seconds) == 0:
        return np.zeros(0, dtype=np.intp)
    low = seconds.min()
    offset = seconds - low
    if int(seconds.max()) - int(low) >= 2**32:
        return np.argsort(seconds, kind="stable")
    order = np.argsort(offset.astype(np.uint16), kind="stable")  # the low digit (wraps)
    high = (offset >> 16).astype(np.uint16)
    return order[np.argsort(high[order], kind="stable")]
