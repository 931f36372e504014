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
end. A run has one shard per city; the worlds are never changed: all a run changes is in its
shards' ``RunState`` (sim/state.py) and the shared ledger.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import simpy

from agents.clearing import ClearingNetworkAgent
from sim.behaviour import Response
from sim.clearing import (
    MEMO_DEPOSIT,
    MEMO_OPENING,
    deposit_shortfalls,
    initial_deposits_fen,
    post_flow,
)
from sim.clearing_network import settlement_lags
from sim.events import (
    DayClosed,
    EventBus,
    IncidentEnded,
    IncidentStarted,
    RunFinished,
    Subscriber,
)
from sim.ledger import InvariantViolation, Ledger
from sim.metrics import KpiCollector
from sim.shard import CityShard, check_issuers_cards
from sim.state import RunState
from sim.world import World

DAY_S = 86_400


class DaySteps(ABC):
    """What both engines share: a period of days, stepped one at a time (``step_day``)."""

    world: World
    day: int
    finished: bool

    @property
    def days(self) -> int:
        """Days in the run's period."""
        return self.world.days

    @abstractmethod
    def step_day(self) -> dict[str, float]:
        """Simulate the next day; its KPIs."""

    @abstractmethod
    def _open(self) -> None:
        """Day 0's opening postings (before the first day)."""

    def _next_day(self) -> int:
        """The day to simulate now (the run opens before day 0); an error after the last."""
        if self.finished:
            raise RuntimeError(f"the run is over: all {self.days} days are simulated")
        if self.day == 0:
            self._open()
        return self.day

    def run(self, until: int | None = None) -> None:
        """Step until ``until`` days are done (default: the whole period)."""
        last = self.days if until is None else min(int(until), self.days)
        while self.day < last:
            self.step_day()


class Engine(DaySteps):
    """Runs one or more cities (shards) day by day on one clock (see the module docstring).

    Args:
        world: the static world of a city, or the worlds of a multi-city run (built once, shared
            by any number of runs; the worlds of a run share one participants registry).
        host: the Mesa model that hosts the run's agents (sim/model.py).
        env: the SimPy environment at time 0 (default: a new ``simpy.Environment``).
        seed: the run seed (default: the first scenario's seed).
        subscribers: callables receiving every event (sim/events.py), after the KPI collector.
        response: how riders respond to prices (sim/behaviour.py); default: as each city's
            scenario says (``behaviour.response``, ``behaviour.card_lending``).
        shard_order: the order in which the shards' days are computed (default: their index
            order). Whatever it is, the shards' effects on shared things (the ledger, the
            events) are applied in index order, so the outputs do not depend on it.
    """

    def __init__(
        self,
        world: World | Sequence[World],
        host,
        *,
        env: simpy.Environment | None = None,
        seed: int | None = None,
        subscribers: tuple[Subscriber, ...] | list[Subscriber] = (),
        response: Response | None = None,
        shard_order: Sequence[int] | None = None,
    ) -> None:
        self.worlds = [world] if isinstance(world, World) else list(world)
        self.world = self.worlds[0]  # the first city: the run's period and clearing rules
        periods = {(w.start_date, w.days) for w in self.worlds}
        if len(periods) > 1:
            raise ValueError(f"the cities of a run must share one period, got {sorted(periods)}")
        self.env = env if env is not None else simpy.Environment()
        if self.env.now != 0:
            raise ValueError(f"the environment must start at time 0, it is at {self.env.now}")
        run_seed = self.world.scenario.seed if seed is None else int(seed)
        self.ledger = Ledger()
        self.states = [
            RunState.fresh(w, run_seed, shard=i, ledger=self.ledger)
            for i, w in enumerate(self.worlds)
        ]
        self.state = self.states[0]
        self.bus = EventBus()
        self.kpis = KpiCollector([(w, s) for w, s in zip(self.worlds, self.states, strict=True)])
        self.bus.subscribe(self.kpis)
        for subscriber in subscribers:
            self.bus.subscribe(subscriber)
        self.shards = [
            CityShard(w, s, self.env, host, self.bus, response, shard_index=i)
            for i, (w, s) in enumerate(zip(self.worlds, self.states, strict=True))
        ]
        self.shard = self.shards[0]
        order = list(range(len(self.shards))) if shard_order is None else list(shard_order)
        if sorted(order) != list(range(len(self.shards))):
            raise ValueError(f"shard_order must order shards 0..{len(self.shards) - 1}")
        self.shard_order = order
        self.clearing = clearing_network(
            host, self.env, self.worlds, self.ledger, self.bus, self.shards
        )
        self.failure: InvariantViolation | None = None
        self.finished = False
        self.day = 0  # the next day to simulate

    # ----------------------------------------------------------------- stepping
    def step_day(self) -> dict[str, float]:
        """Simulate the next day (and the clearing run that falls in it); returns its KPIs."""
        day = self._next_day()
        closed = self.env.process(self._guarded(self._day(day)))
        self._advance(closed)
        self.day += 1
        if self.day == self.days:
            self._finish()
        return closed.value

    def _day(self, day: int):
        """One day on the clock: plan at midnight, settle just before the next one."""
        for i in self.shard_order:
            self.shards[i].start_day(day)
        yield self.env.timeout(DAY_S - 1)
        for i in self.shard_order:
            self.shards[i].settle_day(day)
        for shard in self.shards:  # shared effects in index order (see shard_order)
            shard.commit_day(day)
        check_issuers_cards(self.ledger, day, self.shards)
        kpis = self.kpis.close_day(day)
        self.bus.publish(DayClosed(day, kpis, self.kpis.day_records))
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
        post_opening(
            self.ledger,
            self.world,
            [shard.issuer_code for shard in self.shards],
            [int(state.cards.balance_fen.sum()) for state in self.states],
        )
        self.env.process(self._guarded(self.clearing.batches(0, self.days - 1)))
        for shard in self.shards:
            timeline = shard.world.incidents
            for k in range(len(timeline)):
                self.env.process(self._incident_clock(shard.shard_index, timeline, k))

    def _incident_clock(self, shard: int, timeline, k: int):
        """Publish an incident's start and end when the clock reaches them."""
        incident = timeline.incidents[k]
        start, end = int(timeline.start_s[k]), int(timeline.end_s[k])
        yield self.env.timeout(max(start - self.env.now, 0))
        self.bus.publish(IncidentStarted(shard, k, incident))
        yield self.env.timeout(max(end - self.env.now, 0))
        self.bus.publish(IncidentEnded(shard, k, incident))

    def _finish(self) -> None:
        """The last day's batch closes after the period: run the clock that far, then check."""
        self._advance(self.clearing.cutoff_of(self.days - 1) + 1)
        finish_run(self.clearing, self.shards, self.kpis, self.ledger, self.days, self._advance)
        self.finished = True
        self.bus.publish(RunFinished(self.days, self.ledger))


def clearing_network(
    host, env, worlds, ledger: Ledger, bus: EventBus, shards
) -> ClearingNetworkAgent:
    """The run's clearing network over its shards (in process, or their proxies)."""
    world = worlds[0]
    return ClearingNetworkAgent(
        host,
        env,
        world.participants,
        world.scenario.clearing,
        ledger=ledger,
        bus=bus,
        shards=shards,
        # Every node any city declares (the cities agree where they overlap: sim/world.py).
        transit_fee_bp={
            node_id: node.transit_fee_bp
            for w in worlds
            for node_id, node in w.scenario.clearing.network.nodes.items()
        },
        settlement_lag_days={
            node_id: lag
            for w in worlds
            for node_id, lag in settlement_lags(w.scenario.clearing).items()
        },
    )


def post_opening(ledger: Ledger, world: World, issuer_codes, opening_fen) -> None:
    """Day 0's postings: each city's cards' opening balances and the issuers' deposits."""
    post_flow(
        ledger, 0, MEMO_OPENING, np.array(issuer_codes), np.array(opening_fen), world.participants
    )
    deposits = initial_deposits_fen(world.scenario.clearing, world.participants)
    post_flow(ledger, 0, MEMO_DEPOSIT, np.arange(len(deposits)), deposits, world.participants)


def finish_run(clearing, shards, kpis: KpiCollector, ledger: Ledger, days: int, advance) -> None:
    """After the last day's cut-off: wait out clearing-node outages (nothing is left behind),
    pay the settlements still due, publish the last final days, and check the run's end
    invariants. ``advance(t)`` runs the clock to ``t`` (a distributed run's actors run their
    own clocks when asked for uploads)."""
    world = shards[0].world
    ends = [int(s.world.incidents.end_s.max()) for s in shards if len(s.world.incidents)]
    longest = max(1, (max(ends, default=0) - days * DAY_S) // DAY_S + 2)
    day = days
    while clearing.has_waiting():
        if day > days + longest:
            raise InvariantViolation(
                "cleared_after_outages", 0, f"clearing day {day}",
                "records still wait at a clearing node after every outage has ended",
            )  # fmt: skip
        cutoff = clearing.cutoff_of(day)
        advance(cutoff)
        clearing.clear(day, cutoff)
        day += 1
    clearing.settle_outstanding(day)
    everyone = [()] * len(shards)  # a call with no arguments, on every shard at once
    clearing.on_shards("flush_final_days", [(True,)] * len(shards))
    left = clearing.on_shards("refunds_outstanding", everyone)
    outstanding, outstanding_fen = sum(r.orders for r in left), sum(r.fen for r in left)
    kpis.end_of_run(outstanding, outstanding_fen)
    totals = kpis.totals
    # Every refund ordered was paid or is still owed, counted and in fen.
    ordered, ordered_fen = totals.get("refund_orders", 0), totals.get("refund_orders_fen", 0)
    executed, executed_fen = totals.get("refunds_executed", 0), totals.get("refunds_fen", 0)
    if executed + outstanding != ordered or executed_fen + outstanding_fen != ordered_fen:
        raise InvariantViolation(
            "refunds_accounted",
            ordered_fen - executed_fen - outstanding_fen,
            "end of run",
            f"{ordered} refund orders of {ordered_fen} fen but {executed} executed "
            f"({executed_fen} fen) and {outstanding} outstanding ({outstanding_fen} fen)",
        )
    clearing.on_shards("check_all_cleared_days_closed", everyone)
    overdrawn = deposit_shortfalls(ledger, world.participants)
    if overdrawn:
        issuer, (fen, day) = next(iter(overdrawn.items()))
        raise InvariantViolation(
            "deposit_never_overdrawn", fen, f"end of day {day}, issuer {issuer}",
            "a settlement was paid from deposit money that was not there",
        )  # fmt: skip
    ledger.check()


__all__ = ["Engine", "InvariantViolation", "clearing_network", "finish_run", "post_opening"]
