"""World apart from run state, a steppable clock, Mesa drivers, and the respond step.

- a world built once and run twice (two run seeds, two policies) gives the same files as runs
  that each build their own world with the same settings;
- stepping day by day and running in one call publish identical events (so identical files);
- ``mesa.batch_run`` drives the model; a ``simpy.rt.RealtimeEnvironment`` paces it;
- a zero response changes nothing; a response that drops dear trips changes ridership and keeps
  every invariant (checked inside the run).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
import simpy.rt
from mesa.batchrunner import batch_run

from sim.api import build, load_scenario, run
from sim.behaviour import DropTripsAbove
from sim.events import DayClosed, TapsFinal
from sim.model import CardTwinModel

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
DAYS = 3
WORLD_SEED = 20240101  # small_ci's seed: the population every run below shares


class EventDigest:
    """Subscriber hashing every event's type, day and arrays, in publication order."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.days_closed: list[int] = []

    def __call__(self, event) -> None:
        self.sha.update(type(event).__name__.encode())
        for f in fields(event):
            self._add(getattr(event, f.name))
        if isinstance(event, DayClosed):
            self.days_closed.append(event.day)

    def _add(self, value) -> None:
        if isinstance(value, np.ndarray):
            self.sha.update(value.dtype.str.encode() + np.ascontiguousarray(value).tobytes())
        elif isinstance(value, dict):
            for k in sorted(value):
                self.sha.update(k.encode())
                self._add(value[k])
        elif is_dataclass(value):
            for f in fields(value):
                self._add(getattr(value, f.name))
        elif isinstance(value, (int, float, str)):
            self.sha.update(repr(value).encode())

    def hexdigest(self) -> str:
        """Digest of everything seen so far."""
        return self.sha.hexdigest()


def _parquet_hashes(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def world():
    return build(load_scenario(SMALL, days=DAYS))


def test_one_world_runs_like_worlds_built_for_each_run(world, tmp_path):
    population_before = {
        f.name: getattr(world.population, f.name).copy() for f in fields(world.population)
    }
    shared_seed7 = run(None, tmp_path / "shared_seed7", world=world, seed=7)
    shared_policy = run(None, tmp_path / "shared_policy", world=world, response=DropTripsAbove(250))
    own_seed7 = run(
        load_scenario(SMALL, [f"world_seed={WORLD_SEED}"], days=DAYS, seed=7),
        tmp_path / "own_seed7",
    )
    own_policy = run(
        load_scenario(SMALL, days=DAYS), tmp_path / "own_policy", response=DropTripsAbove(250)
    )
    assert shared_seed7.taps == own_seed7.taps and shared_policy.taps == own_policy.taps
    assert _parquet_hashes(tmp_path / "shared_seed7") == _parquet_hashes(tmp_path / "own_seed7")
    assert _parquet_hashes(tmp_path / "shared_policy") == _parquet_hashes(tmp_path / "own_policy")
    # The run seed changes behaviour, the world seed keeps the people.
    baseline = run(None, None, world=world)
    assert shared_seed7.taps != baseline.taps
    # The world is untouched by the runs, and read-only.
    for name, before in population_before.items():
        assert np.array_equal(getattr(world.population, name), before), name
    with pytest.raises(ValueError, match="read-only"):
        world.population.opening_balance_fen[0] = 1


def _arrays(value, seen=None):
    """Every numpy array reachable from a world's dataclasses, dicts, lists and tuples."""
    import dataclasses

    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _arrays(getattr(value, f.name), seen)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item, seen)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _arrays(item, seen)


def test_every_array_of_the_world_is_read_only(world):
    arrays = list(_arrays(world))
    assert len(arrays) > 50  # population, network, outlets, fares, incidents...
    assert not [a.shape for a in arrays if a.flags.writeable]


def test_stepping_day_by_day_equals_one_call(world):
    stepped, whole = EventDigest(), EventDigest()
    model = CardTwinModel(world=world, subscribers=[stepped])
    while model.running:
        model.step()
    CardTwinModel(world=world, subscribers=[whole]).engine.run()
    assert stepped.days_closed == whole.days_closed == list(range(DAYS))
    assert stepped.hexdigest() == whole.hexdigest()
    frame = model.datacollector.get_model_vars_dataframe()
    assert len(frame) == DAYS and (frame["taps"] > 0).all()
    assert int(frame["taps"].sum()) == model.engine.kpis.taps
    with pytest.raises(RuntimeError, match="over"):
        model.engine.step_day()


def test_run_until_stops_part_way_and_continues(world):
    parts, whole = EventDigest(), EventDigest()
    model = CardTwinModel(world=world, subscribers=[parts])
    model.engine.run(until=1)
    assert model.engine.day == 1 and model.engine.env.now == 86_400
    model.engine.run()
    CardTwinModel(world=world, subscribers=[whole]).engine.run()
    assert parts.hexdigest() == whole.hexdigest()


def test_mesa_batch_run_drives_the_model():
    results = batch_run(
        CardTwinModel,
        {"scenario": str(SMALL), "days": 2, "seed": [1, 2]},
        max_steps=10,
        data_collection_period=1,
        display_progress=False,
    )
    # One row per seed and simulated day (Mesa numbers the DataCollector's rows from 0).
    by_seed = {}
    for row in sorted(results, key=lambda r: (r["seed"], r["Step"])):
        by_seed.setdefault(row["seed"], []).append(row["taps"])
    assert sorted(by_seed) == [1, 2]
    assert all(len(taps) == 2 and min(taps) > 0 for taps in by_seed.values())
    assert by_seed[1] != by_seed[2]


def test_realtime_environment_paces_the_run(world):
    factor = 2e-6  # one simulated day ~ 0.17 s of wall clock
    paced, fast = EventDigest(), EventDigest()
    env = simpy.rt.RealtimeEnvironment(factor=factor, strict=False)
    t0 = time.monotonic()
    CardTwinModel(world=world, env=env, subscribers=[paced]).engine.run()
    elapsed = time.monotonic() - t0
    CardTwinModel(world=world, subscribers=[fast]).engine.run()
    assert paced.hexdigest() == fast.hexdigest()
    # The clock runs to the last day's clearing cut-off (02:00 after the period).
    assert elapsed >= DAYS * 86_400 * factor


def test_a_price_response_changes_ridership_and_keeps_the_books(world):
    counts = {}
    for name, response in (("none", None), ("drop_dear", DropTripsAbove(250))):
        final = []

        def keep(event, final=final):
            if isinstance(event, TapsFinal):
                final.append(event.taps.amount_fen.copy())

        options = {"response": response} if response is not None else {}
        summary = run(None, None, world=world, subscribers=[keep], **options)
        amounts = np.concatenate(final)
        counts[name] = (summary.taps, int((amounts > 250).sum()))
        assert summary.totals["pending"] == 0  # every invariant held to the end of the run
    assert counts["drop_dear"][0] < counts["none"][0]
    # No trip at home costs more than 2.50 any more (only duplicates of cheaper taps remain).
    assert counts["none"][1] > 0


def test_row_scratch_distinct_rows_as_np_unique() -> None:
    from sim.state import RowScratch

    scratch = RowScratch(50)
    rows = np.array([7, 3, 7, 49, 0, 3, 3])
    distinct, inverse = scratch.unique_rows(rows)
    ref, ref_inverse = np.unique(rows, return_inverse=True)
    assert distinct.tolist() == ref.tolist() and inverse.tolist() == ref_inverse.tolist()
    assert scratch.count_distinct(rows) == 4
    assert scratch.count_distinct(rows[:0]) == 0
    assert not scratch.mask.any()  # left clean for the next call
