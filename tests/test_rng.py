"""sim.rng: the compiled per-id hash gives the bits of the NumPy SplitMix64 form, for every kind
of id array a rule passes (signed, unsigned, narrow, negative, several dimensions, not
contiguous), and the streams stay pure functions of their coordinates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim.rng import _GOLDEN, COMPILED_FROM, MAX_SEED, Streams, _mix_array


def _numpy_bits(streams: Streams, stream: str, day: int, ids, draw: int) -> np.ndarray:
    """The NumPy form of ``Streams.bits`` (before the compiled pass)."""
    z = np.multiply(np.asarray(ids).astype(np.uint64), np.uint64(_GOLDEN))
    z += np.uint64(streams._base(stream, day, draw))
    return _mix_array(z)


def _numpy_uniform(streams: Streams, stream: str, day: int, ids, draw: int) -> np.ndarray:
    z = _numpy_bits(streams, stream, day, ids, draw)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, MAX_SEED),
    day=st.integers(0, 400),
    draw=st.integers(0, 5),
    ids=st.one_of(
        arrays(np.int64, st.integers(0, 50), elements=st.integers(-(1 << 63), (1 << 63) - 1)),
        arrays(np.uint64, st.integers(0, 50)),
        arrays(np.int32, st.integers(0, 50)),
        arrays(np.uint8, st.integers(0, 50)),
    ),
)
def test_the_compiled_hash_is_the_numpy_one(seed, day, draw, ids):
    streams = Streams(seed)
    # As drawn (a few ids: hashed in NumPy), and repeated past COMPILED_FROM (the compiled
    # pass): the same bits either way.
    many = np.tile(ids, -(-COMPILED_FROM // len(ids))) if len(ids) else ids
    for drawn in (ids, many):
        got = streams.bits("trip.walk", day, drawn, draw)
        assert got.dtype == np.uint64
        assert got.tolist() == _numpy_bits(streams, "trip.walk", day, drawn, draw).tolist()
        u = streams.uniform("trip.walk", day, drawn, draw)
        assert u.dtype == np.float64 and ((u >= 0) & (u < 1)).all()
        assert u.tolist() == _numpy_uniform(streams, "trip.walk", day, drawn, draw).tolist()
    if len(ids):
        assert len(many) >= COMPILED_FROM


def test_any_shape_and_layout_of_ids():
    streams = Streams(20240101)
    small = np.arange(60, dtype=np.int64).reshape(3, 20)
    large = np.arange(3 * COMPILED_FROM, dtype=np.int64).reshape(3, COMPILED_FROM)
    for view in (small, small.T, small[:, ::3], small[1], large, large.T, large[:, ::3]):
        got = streams.uniform("x", 3, view, 1)
        assert got.shape == view.shape
        assert got.tolist() == _numpy_uniform(streams, "x", 3, view, 1).tolist()
    assert streams.uniform("x", 3, [5, 6], 0).tolist() == streams.uniform(
        "x", 3, np.array([5, 6]), 0
    ).tolist()  # fmt: skip
    assert streams.bits("x", 0, np.array([True, False]), 0).tolist() == _numpy_bits(
        streams, "x", 0, np.array([True, False]), 0
    ).tolist()  # fmt: skip


def test_the_same_coordinates_give_the_same_numbers_and_others_differ():
    streams = Streams(7)
    ids = np.arange(100_000)
    a = streams.uniform("trip.time", 5, ids, 0)
    assert np.array_equal(a, Streams(7).uniform("trip.time", 5, ids, 0))
    for other in (
        streams.uniform("trip.time", 6, ids, 0),
        streams.uniform("trip.time", 5, ids, 1),
        streams.uniform("trip.walk", 5, ids, 0),
        Streams(8).uniform("trip.time", 5, ids, 0),
    ):
        assert (a != other).mean() > 0.999
    assert abs(a.mean() - 0.5) < 0.01


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1])
def test_a_seed_out_of_range_is_refused(seed):
    with pytest.raises(ValueError, match="seed must be a whole number"):
        Streams(seed)


def test_a_world_built_without_its_people_does_not_load_numba():
    # A distributed run's driver builds its cities' worlds without people: its few draws are
    # hashed in NumPy, so it does not spend ~0.6 s loading numba while the workers build.
    code = (
        "import sys; from sim.api import build, load_scenario;"
        "build(load_scenario('scenarios/two_city.yaml'), people=False);"
        "print('numba' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
