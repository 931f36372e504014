"""Clearing nodes as agents: the city exchange clears every acquirer's uploads once a day.

The node wakes at the daily cut-off (e.g. 02:00), takes every record uploaded since its last batch,
and hands them to the vectorised clearing service (``sim.clearing.Clearer``). The provincial
exchange and the national centre appear as participants in the clearing hierarchy: records whose
issuer and acquirer meet only there are cleared (and paid for) at that level.
"""

from __future__ import annotations

from collections.abc import Callable

import mesa
import simpy

from sim.clearing import Clearer, ClearingResult, UploadedRecords

DAY_S = 86_400


class ClearingNodeAgent(mesa.Agent):
    """The city data-exchange (数据交换机构) that runs the daily clearing batch.

    ``collect(cutoff_s)`` must return the records uploaded before ``cutoff_s`` that no batch has
    taken yet; ``apply(result)`` receives the clearing outcome of each batch.
    """

    def __init__(
        self,
        model: mesa.Model,
        node_id: str,
        clearer: Clearer,
        env: simpy.Environment,
        cutoff_hour: int,
        collect: Callable[[int], UploadedRecords],
        apply: Callable[[ClearingResult], None],
    ) -> None:
        super().__init__(model)
        self.node_id = node_id
        self.clearer = clearer
        self.env = env
        self.cutoff_hour = cutoff_hour
        self._collect = collect
        self._apply = apply
        self.batches_run = 0

    def cutoff_of(self, clearing_day: int) -> int:
        """Absolute time of the cut-off that closes ``clearing_day``'s batch (next morning)."""
        return (clearing_day + 1) * DAY_S + self.cutoff_hour * 3600

    def batches(self, first_day: int, last_day: int):
        """SimPy process body: one batch per clearing day from ``first_day`` to ``last_day``."""
        for day in range(first_day, last_day + 1):
            cutoff = self.cutoff_of(day)
            if cutoff > self.env.now:
                yield self.env.timeout(cutoff - self.env.now)
            records = self._collect(cutoff)
            self._apply(self.clearer.clear_batch(day, records))
            self.batches_run += 1
