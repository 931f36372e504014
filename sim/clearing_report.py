"""What the clearing hierarchy did over a run, for run_meta.json ``clearing`` and the CLI: the
fees each clearing node earned (its ``fees:`` account at the end: the transit exchanges' and
the social-security cards' channel's), and each issuer's settlement-deposit calls, deferred
settlements and settlements paid late (sim/deposits.py)."""

from __future__ import annotations

from collections import Counter

from sim.clearing import CLEARING_NODE
from sim.deposits import CALL, DEFERRED, PAID_LATE
from sim.events import DepositEvents, RunFinished


class ClearingReport:
    """Subscriber: deposit events per issuer as they come, node fees when the run finishes."""

    def __init__(self, participants) -> None:
        self.participants = participants
        self._deposits: dict[str, Counter] = {}
        self._fees: dict[str, int] = {}

    def __call__(self, event) -> None:
        if isinstance(event, DepositEvents):
            ids = self.participants.ids
            names = {CALL: "calls", DEFERRED: "settlements_deferred", PAID_LATE: "paid_late"}
            for code, kind in zip(
                event.events["participant"].tolist(), event.events["kind"].tolist(), strict=True
            ):
                if kind in names:
                    self._deposits.setdefault(ids[code], Counter())[names[kind]] += 1
        elif isinstance(event, RunFinished):
            nodes = [
                pid
                for pid, role in zip(self.participants.ids, self.participants.role, strict=True)
                if role == CLEARING_NODE
            ]
            # Fee income is a credit balance: what the node earned is its negative.
            self._fees = {node: -event.ledger.balance(f"fees:{node}") for node in nodes}

    def report(self) -> dict:
        """Fees earned per node (fen, every node of the hierarchy) and deposit events per
        issuer that had any, JSON-ready."""
        return {
            "fees_earned_fen": dict(sorted(self._fees.items())),
            "deposits": {
                issuer: {
                    k: counts.get(k, 0) for k in ("calls", "settlements_deferred", "paid_late")
                }
                for issuer, counts in sorted(self._deposits.items())
            },
        }


__all__ = ["ClearingReport"]
