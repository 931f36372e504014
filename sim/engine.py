"""The engine: one SimPy clock, the city's day, clearing as the daily reduce, events to subscribers.

Like SimPy's own core, the engine only orders things in time; the work is elsewhere:

- the shard (sim/shard.py) plans and settles each day of its city: citizens, fares, balances,
  validators and outlets (agents/);
- the clearing network (agents/clearing.py), one agent per clearing node, wakes at the daily
  cut-off and clears what was uploaded: the daily reduce step;
- everything that watches the run (writers, the KPI collector, progress, stream sinks) subscribes
  to the events published on the bus (sim/events.py).

The SimPy environment is passed in, so a run can go as fast as possible or be paced to the wall
clock (``simpy.rt.RealtimeEnvironment``). ``step_day()`` advances one day; ``run()`` steps to the
end. The world is never changed: all a run changes is in its ``RunState`` (sim/state.py).
"""

from __future__ import annotations

import numpy as np
import simpy

from agents.clearing import ClearingNetworkAgent
from sim.behaviour import NO_RESPONSE, Response
from sim.clearing import MEMO_DEPOSIT, MEMO_OPENING, initial_deposits_fen, post_flow
from sim.events import DayClosed, EventBus, RunFinished, Subscriber
from sim.ledger import InvariantViolation
from sim.metrics import KpiCollector
from sim.shard import CityShard
from sim.state import RunState
from sim.world import World

DAY_S = 86_400


class Engine:
    """Runs a world day by day on one clock (see the module docstring).

    Args:
        world: the static world (built once, shared by any number of runs).
        host: the Mesa model that hosts the run's agents (sim/model.py).
        env: the SimPy environment at time 0 (default: a new ``simpy.Environment``).
        state: the run's state (default: ``RunState.fresh(world, seed)``).
        seed: the run seed when ``state`` is not given (default: the scenario's seed).
        subscribers: callables receiving every event (sim/events.py), after the KPI collector.
        response: how riders respond to prices (sim/behaviour.py); default: not at all.
    """

    def __init__(
        self,
        world: World,
        host,
        *,
        env: simpy.Environment | None = None,
        state: RunState | None = None,
        seed: int | None = None,
        subscribers: tuple[Subscriber, ...] | list[Subscriber] = (),
        response: Response = NO_RESPONSE,
    ) -> None:
        self.world = world
        self.env = env if env is not None else simpy.Environment()
        if self.env.now != 0:
            raise ValueError(f"the environment must start at time 0, it is at {self.env.now}")
        self.state = state if state is not None else RunState.fresh(world, seed)
        self.bus = EventBus()
        self.kpis = KpiCollector(world, self.state)
        self.bus.subscribe(self.kpis)
        for subscriber in subscribers:
            self.bus.subscribe(subscriber)
        self.shard = CityShard(world, self.state, self.env, host, self.bus, response)
        self.clearing = ClearingNetworkAgent(
            host,
            self.env,
            world.participants,
            world.scenario.clearing,
            ledger=self.state.ledger,
            bus=self.bus,
            shards=[self.shard],
        )
        self.failure: InvariantViolation | None = None
        self.finished = False

    @property
    def days(self) -> int:
        """Days in the world's period."""
        return self.world.days

    @property
    def ledger(self):
        """The run's money ledger."""
        return self.state.ledger

    # ----------------------------------------------------------------- stepping
    def step_day(self) -> dict[str, float]:
        """Simulate the next day (and the clearing batch that falls in it); returns its KPIs."""
        if self.finished:
            raise RuntimeError(f"the run is over: all {self.days} days are simulated")
        day = self.state.day
        if day == 0:
            self._open()
        closed = self.env.process(self._guarded(self._day(day)))
        self._advance(closed)
        self.state.day += 1
        if self.state.day == self.days:
            self._finish()
        return closed.value

    def run(self, until: int | None = None) -> None:
        """Step until ``until`` days are done (default: the whole period)."""
        last = self.days if until is None else min(int(until), self.days)
        while self.state.day < last:
            self.step_day()

    def _day(self, day: int):
        """One day on the clock: plan at midnight, settle just before the next one."""
        self.shard.start_day(day)
        yield self.env.timeout(DAY_S - 1)
        self.shard.close_day(day)
        kpis = self.kpis.close_day(day)
        self.bus.publish(DayClosed(day, kpis))
        yield self.env.timeout(1)
        return kpis

    def _advance(self, until) -> None:
        self.env.run(until=until)
        if self.failure is not None:
            raise self.failure

    def _guarded(self, process):
        """Run a SimPy process; a broken invariant stops the whole simulation at once.

        SimPy re-creates a failed process's exception from its ``args``; keeping our own
        reference preserves the invariant's message and fields for the caller.
        """
        try:
            return (yield from process)
        except InvariantViolation as exc:
            self.failure = exc
            raise simpy.core.StopSimulation(None) from exc

    # ----------------------------------------------------------------- start and end
    def _open(self) -> None:
        """Opening balances and clearing deposits; the clearing network's daily process."""
        world = self.world
        issuer = world.participants.code(world.scenario.output.issuer_id)
        post_flow(
            self.ledger,
            0,
            MEMO_OPENING,
            np.array([issuer]),
            np.array([int(self.state.cards.balance_fen.sum())]),
            world.participants,
        )
        deposits = initial_deposits_fen(world.scenario.clearing, world.participants)
        post_flow(
            self.ledger, 0, MEMO_DEPOSIT, np.arange(len(deposits)), deposits, world.participants
        )
        self.env.process(self._guarded(self.clearing.batches(0, self.days - 1)))

    def _finish(self) -> None:
        """The last day's batch closes after the period: run the clock that far, then check."""
        self._advance(self.clearing.cutoff_of(self.days - 1) + 1)
        self.shard.flush_final_days(final=True)
        outstanding = self.shard.refunds_outstanding()
        self.kpis.end_of_run(outstanding)
        totals = self.kpis.totals
        ordered = totals.get("refund_orders", 0)
        executed = totals.get("refunds_executed", 0)
        if executed + outstanding != ordered:
            raise InvariantViolation(
                "refunds_accounted",
                0,
                "end of run",
                f"{ordered} refund orders but {executed} executed and {outstanding} outstanding",
            )
        self.shard.check_all_cleared_days_closed()
        self.ledger.check()
        self.finished = True
        self.bus.publish(RunFinished(self.days, self.ledger))


__all__ = ["Engine", "InvariantViolation"]
