"""Clearing nodes as agents: the city exchange clears every acquirer's uploads once a day.

The node wakes at the daily cut-off (e.g. 02:00), takes every record its shards uploaded since its
last batch, and hands them to the vectorised clearing service (``sim.clearing.Clearer``). It then
checks its hash chain and net positions, posts the clearing to the ledger, tells the shards the
status of their records, and pays the positions that fall due (T+n settlement). The provincial
exchange and the national centre appear as participants in the clearing hierarchy: records whose
issuer and acquirer meet only there are cleared (and paid for) at that level.
"""

from __future__ import annotations

import mesa
import numpy as np
import simpy

from sim.clearing import (
    Clearer,
    ClearingResult,
    Participants,
    batch_columns,
    post_clearing,
    post_settlement,
    verify_chain,
)
from sim.events import BatchCleared, EventBus, SettlementDone
from sim.ledger import Ledger, check_positions

DAY_S = 86_400


class ClearingNodeAgent(mesa.Agent):
    """A data exchange (数据交换机构) that runs the daily clearing batch of its shards.

    Each shard offers ``collect_uploads(cutoff_s)`` (records uploaded before the cut-off that no
    batch has taken yet), ``apply_clearing(result)`` (write statuses back, returning them) and
    ``flush_final_days(final)``.
    """

    def __init__(
        self,
        model: mesa.Model,
        node_id: str,
        clearer: Clearer,
        env: simpy.Environment,
        cutoff_hour: int,
        *,
        ledger: Ledger,
        bus: EventBus,
        shards: list,
    ) -> None:
        super().__init__(model)
        self.node_id = node_id
        self.clearer = clearer
        self.env = env
        self.cutoff_hour = cutoff_hour
        self.ledger = ledger
        self.bus = bus
        self.shards = shards
        self.batches_run = 0
        self.settlements_due: dict[int, list] = {}

    @property
    def participants(self) -> Participants:
        """The clearing hierarchy this node clears in."""
        return self.clearer.participants

    def cutoff_of(self, clearing_day: int) -> int:
        """Absolute time of the cut-off that closes ``clearing_day``'s batch (next morning)."""
        return (clearing_day + 1) * DAY_S + self.cutoff_hour * 3600

    def batches(self, first_day: int, last_day: int):
        """SimPy process body: one batch per clearing day from ``first_day`` to ``last_day``."""
        for day in range(first_day, last_day + 1):
            cutoff = self.cutoff_of(day)
            if cutoff > self.env.now:
                yield self.env.timeout(cutoff - self.env.now)
            self.clear(day, cutoff)

    def clear(self, day: int, cutoff_s: int) -> ClearingResult:
        """Run clearing day ``day``'s batch over what the shards uploaded before ``cutoff_s``."""
        (shard,) = self.shards  # one shard per node until the clearing network routes records
        head = self.clearer.head
        result = self.clearer.clear_batch(day, shard.collect_uploads(cutoff_s))
        verify_chain(result.batches, genesis=head)
        taps = shard.apply_clearing(result)
        post_clearing(self.ledger, result.day, result.pairs, self.participants)
        positions = result.positions
        check_positions(
            np.full(len(positions.participant), positions.settle_day),
            positions.participant,
            positions.position_fen,
            self.participants.ids,
        )
        self.settlements_due.setdefault(result.settle_day, []).append(positions)
        self.settle_due(result.day + 1)
        self.bus.publish(
            BatchCleared(
                result.day, self.node_id, batch_columns(result.batches), taps, len(result.refunds)
            )
        )
        shard.flush_final_days(final=False)
        self.batches_run += 1
        return result

    def settle_due(self, today: int) -> None:
        """Pay every position whose settlement date has come (by ``today``)."""
        for settle_day in sorted(d for d in self.settlements_due if d <= today):
            for positions in self.settlements_due.pop(settle_day):
                if len(positions.participant):
                    post_settlement(self.ledger, settle_day, positions, self.participants)
                    self.bus.publish(
                        SettlementDone(
                            settle_day,
                            {
                                "participant": positions.participant.astype(np.int64),
                                "role": self.participants.role[positions.participant],
                                "position_fen": positions.position_fen,
                            },
                        )
                    )
