"""A day's tap records as one typed columnar table that moves through explicit phases.

    PRICED    planned by the citizens, priced by the fare engine, duplicates added, sorted by
              uploading device agent then time (sim/day.py ``plan_day``)
    LOADED    numbered (record ids, device serials, issuer, acquirer) and loaded into the
              validators, whose uploads fill ``upload_batch``/``uploaded_at`` as the clock runs
              (sim/shard.py)
    SETTLED   balances applied: declined taps, balances before/after, card counters
              (sim/day.py ``settle_balances``)
    FINAL     every record cleared or rejected (or the run ended): published as ``TapsFinal``

Columns of a later phase are None until the table reaches it; ``require`` says which step is
missing instead of a KeyError deep in a writer. One row per record, never one object per tap.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np


class Phase(IntEnum):
    """How far a day's tap records have come (see the module docstring)."""

    PRICED = 1
    LOADED = 2
    SETTLED = 3
    FINAL = 4


#: Columns of each phase, in the order they are filled.
PRICED_COLUMNS = (
    "row",  # int64, population row of the card
    "t_s",  # int64, seconds after midnight
    "line",
    "stop",
    "device",
    "mode",
    "kind",
    "medium",
    "distance_km",
    "incomplete",
    "incomplete_by",  # uint8, who completes an incomplete trip (sim.codes.INCOMPLETE_PROCESSORS)
    "tap_key",
    "list_fare_fen",
    "concession_fen",
    "transfer_fen",
    "cap_fen",
    "amount_fen",
    "is_transfer",
    "fare_capped",
    "duplicate_of_key",  # tap key of the charge a duplicate deduction repeats (-1 none)
    "city",  # 0 home city, k external city k
    "incident",  # int16 incident code (-1 none)
    "home_card",  # bool, a stored-value card of the home city (its purse is kept here)
    "agent",  # uploading device agent (a bus, or a metro station's computer)
)
LOADED_COLUMNS = (
    "tx_id",
    "device_serial",
    "issuer",
    "acquirer",
    "agent_device_id",
    "upload_batch",
    "uploaded_at",
    "device_refused",
    "submitted",  # handed to a clearing node
    "status",
    "reason",
    "fee_fen",
    "clearing_batch_id",
    "settle_day",
)
SETTLED_COLUMNS = ("declined", "balance_before_fen", "balance_after_fen", "card_counter")


@dataclass(eq=False)
class TapTable:
    """One day's tap records (see the module docstring); all columns have equal length."""

    day: int
    phase: Phase
    # -- PRICED
    row: np.ndarray
    t_s: np.ndarray
    line: np.ndarray
    stop: np.ndarray
    device: np.ndarray
    mode: np.ndarray
    kind: np.ndarray
    medium: np.ndarray
    distance_km: np.ndarray
    incomplete: np.ndarray
    incomplete_by: np.ndarray
    tap_key: np.ndarray
    list_fare_fen: np.ndarray
    concession_fen: np.ndarray
    transfer_fen: np.ndarray
    cap_fen: np.ndarray
    amount_fen: np.ndarray
    is_transfer: np.ndarray
    fare_capped: np.ndarray
    duplicate_of_key: np.ndarray
    city: np.ndarray
    incident: np.ndarray
    home_card: np.ndarray
    agent: np.ndarray
    # -- LOADED (and clearing status, which changes until FINAL)
    tx_id: np.ndarray | None = None
    device_serial: np.ndarray | None = None
    issuer: np.ndarray | None = None
    acquirer: np.ndarray | None = None
    agent_device_id: np.ndarray | None = None
    upload_batch: np.ndarray | None = None
    uploaded_at: np.ndarray | None = None
    device_refused: np.ndarray | None = None
    submitted: np.ndarray | None = None
    status: np.ndarray | None = None
    reason: np.ndarray | None = None
    fee_fen: np.ndarray | None = None
    clearing_batch_id: np.ndarray | None = None
    settle_day: np.ndarray | None = None
    # -- SETTLED
    declined: np.ndarray | None = None
    balance_before_fen: np.ndarray | None = None
    balance_after_fen: np.ndarray | None = None
    card_counter: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def priced(cls, day: int, columns: dict[str, np.ndarray]) -> TapTable:
        """A PRICED table from exactly the PRICED columns."""
        missing = [c for c in PRICED_COLUMNS if c not in columns]
        extra = [c for c in columns if c not in PRICED_COLUMNS]
        if missing or extra:
            raise ValueError(f"priced taps: missing {missing}, unexpected {extra}")
        return cls(day=day, phase=Phase.PRICED, **columns)

    def require(self, phase: Phase, step: str) -> None:
        """Raise unless the table has reached ``phase`` (``step`` names what needs it)."""
        if self.phase < phase:
            raise RuntimeError(
                f"{step} needs day {self.day}'s taps {phase.name}, they are {self.phase.name}"
            )

    def advance(self, phase: Phase) -> None:
        """Move to the next phase once its columns are filled."""
        if phase != self.phase + 1:
            raise RuntimeError(f"taps of day {self.day} go {self.phase.name} -> {phase.name}?")
        names = {Phase.LOADED: LOADED_COLUMNS, Phase.SETTLED: SETTLED_COLUMNS}.get(phase, ())
        empty = [n for n in names if getattr(self, n) is None]
        if empty:
            raise RuntimeError(f"taps of day {self.day} cannot be {phase.name}: no {empty}")
        self.phase = phase

    def filled(self) -> dict[str, np.ndarray]:
        """The columns filled so far, by name."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("day", "phase") and getattr(self, f.name) is not None
        }

    def take(self, idx: np.ndarray) -> TapTable:
        """Rows ``idx`` of every filled column, in the same phase."""
        return TapTable(
            day=self.day, phase=self.phase, **{k: v[idx] for k, v in self.filled().items()}
        )

    @staticmethod
    def concat(parts: list[TapTable]) -> TapTable:
        """Rows of tables of one day and phase, in order."""
        first = parts[0]
        if any(p.day != first.day or p.phase != first.phase for p in parts):
            raise ValueError("only tables of one day and phase can be joined")
        names = first.filled()
        return TapTable(
            day=first.day,
            phase=first.phase,
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in names},
        )
