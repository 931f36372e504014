"""CityShard's small record helpers: the rows of resent batches, the status columns of
cleared and rejected rows, columns joined."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from sim import ids
from sim.codes import CLEARED, PENDING, REJECTED
from sim.shard import _STATUS_COLUMNS, CityShard, _concat, _status_rows


def _reference(taps, resend_keys):
    """The rows by a key of every record (what the shard did before)."""
    keys = ids.upload_key(taps.agent_device_id, taps.upload_batch)
    wanted = np.array([ids.upload_key(d, b) for d, b in resend_keys], dtype=np.int64)
    again = np.flatnonzero(np.isin(keys, wanted) & (taps.upload_batch >= 0))
    return again, {ids.split_upload_key(k) for k in np.unique(keys[again]).tolist()}


def test_resent_rows_match_the_keyed_lookup():
    rng = np.random.default_rng(2)
    agent_device_id = np.array([3, 4, 9, 20, 21, 1000, 1003], dtype=np.int64)
    shard = SimpleNamespace(agent_device_id=agent_device_id)
    agent = np.sort(rng.integers(0, len(agent_device_id), size=400))
    batch = rng.integers(-2, 6, size=400)
    taps = SimpleNamespace(agent=agent, upload_batch=batch, agent_device_id=agent_device_id[agent])
    for _ in range(50):
        pairs = {
            (int(rng.choice(agent_device_id)), int(rng.integers(0, 7)))
            for _ in range(rng.integers(1, 6))
        }
        pairs |= {(5, 1), (2000, 0)}  # devices this shard does not have
        found: set[tuple[int, int]] = set()
        rows = CityShard._resent_rows(shard, taps, pairs, found)
        ref_rows, ref_found = _reference(taps, pairs)
        assert rows.dtype == ref_rows.dtype and np.array_equal(rows, ref_rows)
        assert found == ref_found
    assert len(CityShard._resent_rows(shard, taps, set(), set())) == 0


def test_concat_keeps_a_single_part():
    a = np.arange(3)
    z = np.zeros(0, np.int64)
    assert _concat([a], z) is a
    assert _concat([], z).dtype == np.int64 and len(_concat([], z)) == 0
    assert _concat([a, a], z).tolist() == [0, 1, 2, 0, 1, 2]


def test_status_rows_are_the_rows_as_written():
    n = 12
    taps = SimpleNamespace(
        tx_id=ids.record_ids(0, 3, n),
        status=np.full(n, PENDING, dtype=np.uint8),
        reason=np.zeros(n, dtype=np.uint8),
        fee_fen=np.zeros(n, dtype=np.int64),
        clearing_batch_id=np.full(n, -1, dtype=np.int64),
        settle_day=np.full(n, -1, dtype=np.int64),
    )
    rejected = np.array([1, 7])
    taps.status[rejected] = REJECTED
    taps.reason[rejected] = 4
    for cleared in (np.array([0, 5, 9]), np.array([0, 5, 0])):  # the second: a row twice
        k = len(cleared)
        written = {
            "tx_id": taps.tx_id[cleared],
            "fee_fen": np.arange(k, dtype=np.int32) + 10,
            "clearing_batch_id": np.arange(k, dtype=np.int64) + 100,
            "settle_day": np.full(k, 5),
        }
        taps.status[cleared] = CLEARED
        taps.fee_fen[cleared] = written["fee_fen"]
        taps.clearing_batch_id[cleared] = written["clearing_batch_id"]
        taps.settle_day[cleared] = written["settle_day"]
        got = _status_rows(taps, rejected, cleared, written)
        rows = np.concatenate([rejected, cleared])
        for col in _STATUS_COLUMNS:
            want = getattr(taps, col)[rows]
            joined = np.concatenate(got[col])
            assert joined.dtype == want.dtype and np.array_equal(joined, want), col
