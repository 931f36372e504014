"""The Mesa model of a run: hosts the agents, steps one simulated day, collects the daily KPIs.

``CardTwinModel.step()`` advances the engine by one day and records that day's KPIs in the
model's ``DataCollector`` (the one KPI record of a run), so Mesa's own drivers work unchanged:

    from mesa.batchrunner import batch_run
    batch_run(CardTwinModel, {"scenario": "scenarios/small_ci.yaml", "days": 3, "seed": [1, 2]},
              max_steps=10)

A model is built from a scenario file (what ``batch_run`` passes) or from an existing world (one
world, many runs: policies, replications).
"""

from __future__ import annotations

from pathlib import Path

import mesa
import simpy

from sim.behaviour import Response
from sim.engine import Engine
from sim.events import Subscriber
from sim.metrics import KPI_NAMES
from sim.world import World


def kpi_of(model: CardTwinModel, name: str) -> float:
    """One KPI of the model's last simulated day (a DataCollector reporter: a module-level
    function, picklable unlike a lambda, so ``batch_run`` can use processes)."""
    return model.kpis.get(name, 0)


class CardTwinModel(mesa.Model):
    """One run: a world, its engine, and the Mesa agents (validators, outlets, clearing node).

    Args:
        scenario: a scenario file (used when ``world`` is not given).
        world: an already built world, or a multi-city run's worlds (shared with other runs;
            never changed).
        days: simulate only the first ``days`` days of the scenario's period.
        seed: the run seed (default: the scenario's); the world keeps its own seed.
        env: the SimPy environment (e.g. ``simpy.rt.RealtimeEnvironment`` to pace the run).
        subscribers: event subscribers (sim/events.py): writers, progress, stream sinks.
        response: how riders respond to prices (sim/behaviour.py); default: the scenario's.
        shard_order: the order the cities' days are computed in (outputs do not depend on it).
        client: a ``dask.distributed.Client``: the cities run as actors on its workers
            (sim/distributed.py), with identical outputs.
        shard_output: with ``client``, where the shards write their own tables (see
            ``sim.distributed.DistributedEngine``).
        pending: with ``client``, shard actors already submitted (``submit_shards``).
    """

    def __init__(
        self,
        scenario: str | Path | None = None,
        *,
        world: World | list[World] | None = None,
        days: int | None = None,
        seed: int | None = None,
        env: simpy.Environment | None = None,
        subscribers: tuple[Subscriber, ...] | list[Subscriber] = (),
        response: Response | None = None,
        shard_order: list[int] | None = None,
        client=None,
        shard_output: dict | None = None,
        pending=None,
    ) -> None:
        if world is not None and (scenario is not None or days is not None):
            raise ValueError("give CardTwinModel a world, or a scenario file (and days), not both")
        if world is None:
            if scenario is None:
                raise ValueError("CardTwinModel needs a scenario file or a world")
            from sim.api import build, load_scenario  # the API builds worlds from files

            world = build(load_scenario(scenario, days=days))
        first = world if isinstance(world, World) else world[0]
        run_seed = first.scenario.seed if seed is None else int(seed)
        # Mesa's own generator is seeded for completeness; every draw of the run comes from the
        # counter-based streams of the run state (sim/rng.py).
        super().__init__(seed=run_seed)
        self.world = first
        self.kpis: dict[str, float] = {}
        self.datacollector = mesa.DataCollector(
            model_reporters={name: [kpi_of, [self, name]] for name in KPI_NAMES}
        )
        if client is not None:  # the shards on a Dask cluster (sim/distributed.py)
            if env is not None or response is not None or shard_order is not None:
                raise ValueError("a run on a Dask cluster takes no env, response or shard_order")
            from sim.distributed import DistributedEngine

            worlds = [world] if isinstance(world, World) else list(world)
            self.engine = DistributedEngine(
                worlds,
                self,
                client,
                seed=run_seed,
                subscribers=subscribers,
                shard_output=shard_output,
                pending=pending,
            )
            return
        self.engine = Engine(
            world,
            self,
            env=env,
            seed=run_seed,
            subscribers=subscribers,
            response=response,
            shard_order=shard_order,
        )

    def step(self) -> None:
        """Simulate one day and collect its KPIs; ``running`` turns False after the last day."""
        self.kpis = self.engine.step_day()
        self.datacollector.collect(self)
        self.running = not self.engine.finished

    def run_days(self, until: int | None = None) -> None:
        """Step until ``until`` days are done (default: the whole period)."""
        last = self.engine.days if until is None else min(int(until), self.engine.days)
        while self.engine.day < last:
            self.step()
