"""What the service desk's own system shows that a masked export leaves out: the balance a card
was left with after each of its taps on the drill's day.

A masked run writes no balances (they would link a card's days together: the next day starts
where the last ended; sim/records.py). The desk of a card system sees them, so a drill keeps
them aside for its card look-up, one day only, keyed by the record's id (not the card):
``desk_balances.parquet`` beside the played day's tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.events import DaySettled

FILE = "desk_balances.parquet"


class DeskBalances:
    """Subscriber keeping the balances after the charged card taps of day ``day_index``."""

    def __init__(self, day_index: int) -> None:
        self.day_index = day_index
        self._ids: list[np.ndarray] = []
        self._after: list[np.ndarray] = []

    def __call__(self, event) -> None:
        if not isinstance(event, DaySettled) or event.day != self.day_index:
            return
        taps = event.taps
        charged = taps.home_card & ~taps.declined & (taps.device_refused == 0)
        self._ids.append(taps.tx_id[charged].astype(np.int64))
        self._after.append(taps.balance_after_fen[charged].astype(np.int64))

    def write(self, folder: Path) -> Path:
        """Write the file (records in id order, whatever order the shards reported in)."""
        ids = np.concatenate(self._ids or [np.zeros(0, np.int64)])
        after = np.concatenate(self._after or [np.zeros(0, np.int64)])
        order = np.argsort(ids, kind="stable")
        path = Path(folder) / FILE
        table = pa.table({"transaction_id": ids[order], "balance_after_fen": after[order]})
        pq.write_table(table, path)
        return path


__all__ = ["FILE", "DeskBalances"]
