"""sim.grouping: the packed stable sort gives exactly the order of NumPy's stable sorts."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim.grouping import gather, positions_in_runs, rank_in_groups, run_starts, stable_order


def _ints(lo: int, hi: int):
    return arrays(np.int64, st.integers(0, 60), elements=st.integers(lo, hi))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_stable_order_is_lexsort_of_the_keys_primary_first(data):
    """Narrow keys (packed path) and wide ones (the general path), negative values, ties."""
    n = data.draw(st.integers(0, 60))
    keys = []
    for _ in range(data.draw(st.integers(1, 3))):
        lo, hi = data.draw(st.sampled_from([(-3, 3), (0, 1), (0, 1 << 40), (-(1 << 62), 1 << 62)]))
        keys.append(data.draw(arrays(np.int64, n, elements=st.integers(lo, hi))))
    expected = np.lexsort(keys[::-1]) if n else np.zeros(0, np.int64)
    assert stable_order(*keys).tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_narrow_leading_keys_and_a_wide_tiebreak_sort_as_lexsort(data):
    """The leading keys packed, the runs they tie ordered by the wide rest (the day's record
    order: device, second, 63-bit record key)."""
    n = data.draw(st.integers(0, 80))
    device = data.draw(arrays(np.int64, n, elements=st.integers(0, 3)))
    second = data.draw(arrays(np.int64, n, elements=st.integers(0, 2)))
    record = data.draw(arrays(np.int64, n, elements=st.sampled_from([-(1 << 62), 0, 5, 1 << 62])))
    keys = [device, second, record]
    if data.draw(st.booleans()):  # two wide keys after the packed one
        keys.append(data.draw(arrays(np.int64, n, elements=st.sampled_from([0, 1 << 61]))))
    expected = np.lexsort(keys[::-1]) if n else np.zeros(0, np.int64)
    assert stable_order(*keys).tolist() == expected.tolist()


@given(_ints(-(1 << 62), 1 << 62))
def test_one_wide_key_keeps_ties_in_input_order(key):
    tied = np.concatenate([key, key])  # every value at least twice
    assert stable_order(tied).tolist() == np.argsort(tied, kind="stable").tolist()


def test_bool_keys_and_a_large_table():
    rng = np.random.default_rng(7)
    card = rng.integers(0, 1_700_000, 200_000)
    t = rng.integers(0, 86_400, 200_000)
    debit = rng.random(200_000) < 0.5
    got = stable_order(card, t, debit)
    assert got.tolist() == np.lexsort((debit, t, card)).tolist()
    assert got.dtype == np.int64
    key = rng.integers(-(1 << 62), 1 << 62, 200_000)  # a wide tiebreak: ties left to it
    got = stable_order(card, t, key)
    assert got.tolist() == np.lexsort((key, t, card)).tolist()


def test_rank_in_groups():
    assert rank_in_groups(np.array([7, 7, 9, 9, 9, 4])).tolist() == [1, 2, 1, 2, 3, 1]
    assert rank_in_groups(np.zeros(0, np.int64)).tolist() == []


def test_run_starts():
    assert run_starts(np.array([7, 7, 9, 4, 4])).tolist() == [0, 2, 3]
    assert run_starts(np.zeros(0, np.int64)).tolist() == []


def test_gather_equals_fancy_indexing_narrow_or_not():
    """Columns narrowed to int32 (large, fitting) and not (wide values, small, other dtypes)."""
    rng = np.random.default_rng(3)
    n = 100_000
    idx = rng.permutation(n)
    cols = [
        rng.integers(-(2**31), 2**31, n),  # fits int32 at both ends
        rng.integers(-(2**15), 2**15, n),  # fits int16 at both ends
        np.array([2**15] + [0] * (n - 1)),  # one value just past int16
        rng.integers(0, 2**40, n),  # does not fit
        np.array([2**31] + [0] * (n - 1)),  # one value just past int32
        rng.integers(0, 100, n).astype(np.int32),
        rng.random(n) < 0.5,
        rng.integers(0, 9, 1000),  # small: gathered as it is
    ]
    for col in cols:
        for at in (idx[: len(col)] % len(col), idx[:10] % len(col)):
            got = gather(col, at)
            assert got.dtype == col.dtype
            assert np.array_equal(got, col[at])


@given(st.lists(st.integers(0, 6), max_size=40), st.sampled_from([np.int8, np.int32, np.int64]))
def test_positions_in_runs_count_each_run_from_zero(lengths, dtype):
    got = positions_in_runs(np.array(lengths, dtype=dtype))
    want = [k for n in lengths for k in range(n)]
    assert got.dtype == np.int64 and got.tolist() == want
