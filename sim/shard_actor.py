"""One city's shard on a Dask worker: the map side of a distributed run.

A ``ShardActor`` (a Dask actor: it stays on its worker with its state) builds its city's world
and runs ``sim.shard.CityShard`` on a clock of its own. It has no share in anything run-wide:
its money goes to a ledger of its own and its events to a bus of its own, and both are handed
back with each call, for the driver (sim/distributed.py) to post and publish in shard order,
exactly where an in-process run would have. The driver calls, for each day:

    morning(day)   start the day and run its clock to the clearing cut-off; the uploads
                   collected for the cut-off (the clearing of the day before);
    apply / order_refunds / mark_incident / flush   the clearing network's calls at the cut-off;
    evening(day)   run to the end of the day, settle and commit it.

The shard, its riders, devices and outlets do exactly what they do in one process, so the
outputs are byte-identical whatever worker a shard runs on.
"""

from __future__ import annotations

import numpy as np
import simpy

from sim.clearing import MEMO_OPENING, post_flow
from sim.engine import DAY_S
from sim.events import EventBus
from sim.ledger import Ledger
from sim.metrics import RunMetrics
from sim.shard import CityShard
from sim.state import RunState


class _Host:
    """What the shard's validators and outlets need of a Mesa model: a place to register."""

    def __init__(self, seed: int) -> None:
        import mesa

        self.model = mesa.Model(seed=seed)


class ShardActor:
    """A city's shard on a worker (see the module docstring).

    Args:
        scenario: the city's validated scenario (sim/scenario.py).
        outlets_file: its outlets CSV (a path the worker can read).
        participants: the run's shared clearing participants (the driver's registry).
        shard_index: the city's position among the run's cities.
        run_seed: the run seed.
        cutoff_hour: the clearing cut-off hour (clearing.batch_cutoff_hour).
    """

    def __init__(
        self,
        scenario,
        outlets_file: str,
        participants,
        shard_index: int,
        run_seed: int,
        cutoff_hour: int,
    ) -> None:
        from sim.world import world_for_shard

        self.world = world_for_shard(scenario, outlets_file, participants)
        self.ledger = Ledger()
        self.state = RunState.fresh(self.world, run_seed, shard=shard_index, ledger=self.ledger)
        self.env = simpy.Environment()
        self.bus = EventBus()
        self.outbox: list = []
        self.bus.subscribe(self.outbox.append)
        self.host = _Host(run_seed)
        self.shard = CityShard(
            self.world, self.state, self.env, self.host.model, self.bus, None, shard_index
        )
        self.cutoff_hour = cutoff_hour
        self.metrics = RunMetrics(len(self.world.region_ids), len(self.world.population))
        # The opening balances, so that the shard's own float checks hold; the driver's ledger
        # posts the same opening for every city (they are not handed back).
        post_flow(
            self.ledger,
            0,
            MEMO_OPENING,
            np.array([self.shard.issuer_code]),
            np.array([int(self.state.cards.balance_fen.sum())]),
            self.world.participants,
        )
        self._posted = self.ledger.n_entries

    # ----------------------------------------------------------------- the day
    def morning(self, day: int):
        """Start ``day``; run to the cut-off of the day before (if any) and collect uploads."""
        if day:
            self.env.run(until=day * DAY_S)
        self.shard.start_day(day)
        if day == 0:
            return None
        return self.collect(self._cutoff(day - 1))

    def collect(self, cutoff_s: int):
        """Run the clock to ``cutoff_s`` and collect what was uploaded before it."""
        if cutoff_s > self.env.now:
            self.env.run(until=cutoff_s)
        return self.shard.collect_uploads(cutoff_s)

    def apply(self, result):
        """A clearing run's outcome for this shard's records; its status changes."""
        return self.shard.apply_clearing(result)

    def order_refunds(self, pay_day: int, refunds) -> None:
        self.shard.order_refunds(pay_day, refunds)

    def mark_incident(self, tx_id, code: int) -> None:
        self.shard.mark_incident(tx_id, code)

    def flush(self, final: bool) -> list:
        """Days now final: their events (TapsFinal), in order."""
        self.shard.flush_final_days(final=final)
        return self._events()

    def evening(self, day: int):
        """Run to the end of ``day``, settle and commit it: its events, its ledger postings and
        its calibration figures (what the KPI collector computes from the run's state)."""
        self.env.run(until=(day + 1) * DAY_S - 1)
        self.shard.settle_day(day)
        event = self.shard.commit_day(day)
        figures = self.metrics.observe_day(self.world, self.state.cards.sale_day, event)
        return self._events(), self._postings(), figures

    def refunds_outstanding(self) -> int:
        return self.shard.refunds_outstanding()

    def check_all_cleared_days_closed(self) -> None:
        self.shard.check_all_cleared_days_closed()

    def final_metrics(self) -> RunMetrics:
        return self.metrics

    def peak_rss_bytes(self) -> int:
        """The worker process's peak resident memory (VmHWM)."""
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    # ----------------------------------------------------------------- hand-back
    def _cutoff(self, clearing_day: int) -> int:
        return (clearing_day + 1) * DAY_S + self.cutoff_hour * 3600

    def _events(self) -> list:
        events, self.outbox[:] = list(self.outbox), []
        return events

    def _postings(self) -> dict:
        """The ledger entries posted since the last hand-back, as columns."""
        journal = self.ledger.journal_columns()
        start, self._posted = self._posted, self.ledger.n_entries
        return {k: v[start:] for k, v in journal.items()}


__all__ = ["ShardActor"]
