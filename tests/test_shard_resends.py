"""CityShard's small record helpers: the rows of resent batches, status columns joined."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from sim import ids
from sim.shard import CityShard, _concat


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
