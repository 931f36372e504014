"""Id layouts (sim/ids.py): fields round-trip and ids never collide across shards and days."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import ids

shards = st.integers(0, ids.MAX_SHARDS - 1)
days = st.integers(0, ids.MAX_DAYS - 1)
seqs = st.integers(0, ids.MAX_SEQ - 1)


def test_capacity_meets_the_engine_budget():
    assert ids.MAX_SHARDS >= 1024
    assert ids.MAX_SEQ >= 2**32  # taps per shard and day
    assert ids.MAX_DAYS >= 366 * 100
    last = ids.record_ids(ids.MAX_SHARDS - 1, ids.MAX_DAYS - 1, 1, first=ids.MAX_SEQ - 1)
    assert last[0] > 0  # the sign bit is never used


@given(shard=shards, day=days, seq=seqs)
def test_record_id_fields_round_trip(shard, day, seq):
    (rid,) = ids.record_ids(shard, day, 1, first=seq)
    assert ids.record_shard(rid) == shard
    assert ids.record_day(rid) == day
    assert ids.record_seq(rid) == seq


@given(a=st.tuples(shards, days, seqs), b=st.tuples(shards, days, seqs))
def test_record_ids_of_different_records_differ(a, b):
    (ra,) = ids.record_ids(a[0], a[1], 1, first=a[2])
    (rb,) = ids.record_ids(b[0], b[1], 1, first=b[2])
    assert (ra == rb) == (a == b)
    # Within a shard, ids sort by day, then sequence.
    if a[0] == b[0] and a != b:
        assert (ra < rb) == ((a[1], a[2]) < (b[1], b[2]))


@given(
    a=st.tuples(shards, st.integers(0, 8191), st.integers(0, 2**38 - 1), st.integers(0, 3)),
    b=st.tuples(shards, st.integers(0, 8191), st.integers(0, 2**38 - 1), st.integers(0, 3)),
)
def test_visit_ids_of_different_visits_differ(a, b):
    va = ids.visit_ids(a[0], a[1], np.array([a[2]]), np.array([a[3]]))[0]
    vb = ids.visit_ids(b[0], b[1], np.array([b[2]]), np.array([b[3]]))[0]
    assert va >= 0 and vb >= 0
    assert (va == vb) == (a == b)


def test_home_shard_visit_ids_keep_their_earlier_layout():
    card, kind = np.array([0, 12345, 2**38 - 1]), np.array([0, 1, 1])
    assert (ids.visit_ids(0, 77, card, kind) == (np.int64(77) << 40) + card * 4 + kind).all()


@given(device=st.integers(0, 2**38), batch=st.integers(0, 2**24 - 1))
def test_upload_keys_round_trip(device, batch):
    assert ids.split_upload_key(ids.upload_key(device, batch)) == (device, batch)


def test_out_of_range_fields_are_refused():
    with pytest.raises(ValueError, match="shard"):
        ids.record_ids(ids.MAX_SHARDS, 0, 1)
    with pytest.raises(ValueError, match="day"):
        ids.record_ids(0, ids.MAX_DAYS, 1)
    with pytest.raises(ValueError, match="records"):
        ids.record_ids(0, 0, 2, first=ids.MAX_SEQ - 1)


def test_duplicate_tap_keys_differ_from_every_first_tap():
    keys = np.arange(0, 10_000, dtype=np.int64) * 8
    assert not np.isin(ids.duplicate_tap_key(keys), keys).any()
