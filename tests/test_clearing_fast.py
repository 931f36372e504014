"""The clearing's fast paths against the plain versions they replaced (kept here as references):
duplicate screening by device runs, duplicate deductions found among near charges only, the
run-aware sort. Same outputs and same state, batch after batch, on random inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.clearing import (
    _SERIAL_LIMIT,
    SeenSerials,
    UploadedRecords,
    _isin_sorted,
    _RetapTail,
    _serial_keys,
)
from sim.grouping import runs_stable_order, stable_order


class ReferenceSeen:
    """``SeenSerials`` as first written: every record looked up on its own."""

    def __init__(self, max_hole_run: int) -> None:
        self.max_hole_run = max_hole_run
        self.devices = np.zeros(0, dtype=np.int64)
        self.max_serial = np.zeros(0, dtype=np.int64)
        self.holes = np.zeros(0, dtype=np.int64)

    def check_and_add(self, keys: np.ndarray, order: np.ndarray) -> np.ndarray:
        n = keys.size
        dup = np.zeros(n, dtype=bool)
        if n == 0:
            return dup
        sk = keys[order]
        first = np.ones(n, dtype=bool)
        first[1:] = sk[1:] != sk[:-1]
        uk = sk[first]
        udev, userial = uk >> 32, uk & (_SERIAL_LIMIT - 1)
        if self.devices.size:
            pos = np.minimum(np.searchsorted(self.devices, udev), self.devices.size - 1)
            known = self.devices[pos] == udev
            old_max = np.where(known, self.max_serial[pos], -1)
        else:
            pos = np.zeros(uk.size, dtype=np.int64)
            known = np.zeros(uk.size, dtype=bool)
            old_max = np.full(uk.size, -1, dtype=np.int64)
        in_hole = _isin_sorted(uk, self.holes)
        seen = known & (userial <= old_max) & ~in_hole
        dup_sorted = ~first
        dup_sorted[first] = seen
        dup[order] = dup_sorted
        if in_hole.any():
            self.holes = self.holes[~_isin_sorted(self.holes, uk[in_hole])]
        up = ~seen & ~in_hole
        self._extend(udev[up], userial[up], known[up], old_max[up], pos[up])
        return dup

    def _extend(self, dev, serial, known, old_max, pos) -> None:
        if dev.size == 0:
            return
        lead = np.ones(dev.size, dtype=bool)
        lead[1:] = dev[1:] != dev[:-1]
        prev = np.empty_like(serial)
        prev[1:] = serial[:-1]
        prev[lead] = np.where(known[lead], old_max[lead], -1)
        gap = serial - prev - 1
        gap[gap > self.max_hole_run] = 0
        total = int(gap.sum())
        if total:
            offsets = np.arange(total) - np.repeat(np.cumsum(gap) - gap, gap)
            new_holes = (np.repeat(dev, gap) << 32) | (np.repeat(prev + 1, gap) + offsets)
            self.holes = np.sort(np.concatenate([self.holes, new_holes]))
        tail = np.append(np.flatnonzero(lead)[1:] - 1, dev.size - 1)
        kt = known[tail]
        self.max_serial[pos[tail][kt]] = serial[tail][kt]
        if not kt.all():
            devices = np.concatenate([self.devices, dev[tail][~kt]])
            maxima = np.concatenate([self.max_serial, serial[tail][~kt]])
            o = np.argsort(devices)
            self.devices, self.max_serial = devices[o], maxima[o]


def reference_find(tail: dict, rec: UploadedRecords, charged: np.ndarray, lock_s: int):
    """``_RetapTail.find`` as first written: every charge sorted by (card, device, time)."""
    idx = np.flatnonzero(charged)
    m = tail["card"].size
    card = np.concatenate([tail["card"], rec.card[idx]])
    dev = np.concatenate([tail["device"], rec.device[idx]])
    ts = np.concatenate([tail["ts"], rec.timestamp_s[idx]])
    tx = np.concatenate([tail["tx"], rec.tx_id[idx]])
    src = np.concatenate([np.full(m, -1, np.int64), idx])
    if card.size == 0:
        return idx, idx
    order = np.lexsort((ts, dev, card))
    c, d, t = card[order], dev[order], ts[order]
    hit = np.flatnonzero((c[1:] == c[:-1]) & (d[1:] == d[:-1]) & (t[1:] - t[:-1] <= lock_s)) + 1
    rows = src[order[hit]]
    ok = rows >= 0
    first_tx = tx[order[hit - 1]][ok]
    last = {}
    for dv, tv in zip(dev.tolist(), ts.tolist(), strict=True):
        last[dv] = max(last.get(dv, tv), tv)
    keep = ts >= np.array([last[dv] for dv in dev.tolist()]) - lock_s
    tail.update(card=card[keep], device=dev[keep], ts=ts[keep], tx=tx[keep])
    return rows[ok], first_tx


def _day_columns(rng: np.random.Generator, n: int, day: int, devices: int, cards: int) -> dict:
    """A day's records as they arrive: device by device, each in serial and time order (some
    serials skipped: holes), some repeated (resends)."""
    device = np.sort(rng.integers(0, devices, n))
    serial = np.zeros(n, dtype=np.int64)
    ts = np.zeros(n, dtype=np.int64)
    for d in np.unique(device):
        at = np.flatnonzero(device == d)
        serial[at] = day * 40 + np.cumsum(rng.integers(1, 3, at.size))
        ts[at] = day * 86_400 + np.sort(rng.integers(0, 600, at.size))
    rows = np.arange(n)
    if n and rng.random() < 0.5:
        rows = np.sort(np.concatenate([rows, rng.integers(0, n, rng.integers(1, n // 4 + 2))]))
    return {
        "tx_id": (day << 20) + rows,
        "card": rng.integers(0, cards, n)[rows],
        "device": device[rows],
        "device_serial": serial[rows],
        "timestamp_s": ts[rows],
        "amount_fen": rng.integers(0, 3, n)[rows] * 100,
    }


def _batches(rng, sizes, devices, cards):
    """Each day's uploads: its records (some shuffled), less some held back to the next day."""
    late = None
    for day, n in enumerate(sizes):
        cols = _day_columns(rng, n, day, devices, cards)
        if late is not None:
            cols = {k: np.concatenate([late[k], v]) for k, v in cols.items()}
        held = rng.random(len(cols["tx_id"])) < 0.1
        late = {k: v[held] for k, v in cols.items()}
        cols = {k: v[~held] for k, v in cols.items()}
        if rng.random() < 0.3:
            perm = rng.permutation(len(cols["tx_id"]))
            cols = {k: v[perm] for k, v in cols.items()}
        m = len(cols["tx_id"])
        yield UploadedRecords(
            **cols,
            card_counter=np.zeros(m, np.int64),
            list_fare_fen=np.full(m, 200),
            issuer=np.zeros(m, np.int32),
            acquirer=np.zeros(m, np.int32),
            mode=np.zeros(m, np.uint8),
            medium_class=np.zeros(m, np.uint8),
            declined=np.zeros(m, bool),
        )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=4),
    devices=st.integers(1, 12),
    cards=st.integers(1, 40),
    lock_s=st.sampled_from([0, 2, 5, 60]),
    hole_run=st.sampled_from([1, 3, 1 << 16]),
)
def test_screening_matches_the_reference(seed, sizes, devices, cards, lock_s, hole_run):
    rng = np.random.default_rng(seed)
    seen, ref_seen = SeenSerials(hole_run), ReferenceSeen(hole_run)
    tail, ref_tail = (
        _RetapTail(),
        {k: np.zeros(0, np.int64) for k in ("card", "device", "ts", "tx")},
    )
    for rec in _batches(rng, sizes, devices, cards):
        keys = _serial_keys(rec.device, rec.device_serial)
        order = runs_stable_order(keys)
        assert np.array_equal(order, stable_order(keys))
        dup = seen._check_and_add(keys, order)
        assert np.array_equal(dup, ref_seen.check_and_add(keys, order))
        for name in ("devices", "max_serial", "holes"):
            assert np.array_equal(getattr(seen, name), getattr(ref_seen, name)), name
        charged = ~dup & (rec.amount_fen > 0)
        rows, first = tail.find(rec, charged, lock_s)
        ref_rows, ref_first = reference_find(ref_tail, rec, charged, lock_s)
        assert rows.dtype == ref_rows.dtype and np.array_equal(rows, ref_rows)
        assert first.dtype == ref_first.dtype and np.array_equal(first, ref_first)
        for name in ("card", "device", "ts", "tx"):
            assert np.array_equal(getattr(tail, name), ref_tail[name]), name


@settings(max_examples=80, deadline=None)
@given(
    keys=st.lists(st.integers(-(2**62), 2**62), max_size=400),
    runs=st.booleans(),
)
def test_stable_argsort_is_a_stable_sort(keys, runs):
    a = np.array(keys, dtype=np.int64)
    if runs:  # long sorted stretches with ties: the merge sort path
        a = np.sort(a) // 7
    assert np.array_equal(runs_stable_order(a), np.argsort(a, kind="stable"))
