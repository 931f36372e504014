"""Settlement deposits (结算预存资金): what issuers pre-fund, the calls to top them up, and the
settlements that wait for the money.

Each issuer places a deposit with the clearing hierarchy at the start (sim/clearing.py
``initial_deposits_fen``); every settlement it owes is paid from it. When the deposit falls below
``clearing.deposit_call_threshold_pct`` of its level, the issuer is called to bring it back; the
money arrives ``clearing.deposit_call_delay_days`` later. A settlement that an issuer's deposit
cannot cover on its date is deferred whole — every participant of that clearing day waits, so
no node pays out money it has not received and nothing is netted against money that is not
there — and so are the settlements after it (first in, first out). The issuer is called at once
for what it owes and what brings its deposit back to its level; the settlement is paid on the
day the money is in, and the deposit is then at its level. A settlement that came due while an
earlier one waited is paid after it, also late, and posted on the day it is paid (never on its
own date, when the deposit was already short); it has no deferral event of its own. A
settlement dated before the day its batch is cleared (T+0: the batch closes at the next
morning's cut-off) is posted on its date only if the deposit held the money that day: money
that came in that morning does not count, and a settlement it alone covers is paid that morning,
late, also without a deferral event. Every call, arrival and late payment is an event
(``deposit_events``); so is a deferral, on every day a settlement is due and still cannot be paid
(one waiting three days has three; the run's ``settlements_deferred`` counts these days).

While a ``deposit_call_unpaid`` incident lasts (sim/incidents.py), its issuer pays no call: the
money called arrives at the first settlement after the incident has ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.clearing import (
    ISSUER,
    MEMO_DEPOSIT,
    ClearingSettings,
    Participants,
    account,
    initial_deposits_fen,
    post_flow,
)
from sim.ledger import Ledger

DAY_S = 86_400

#: Kinds of deposit events, in the order of the ``deposit_events`` table's dictionary.
EVENT_KINDS: tuple[str, ...] = ("call", "funds_in", "settlement_deferred", "settlement_paid_late")
CALL, FUNDS_IN, DEFERRED, PAID_LATE = range(4)


@dataclass
class DepositDesk:
    """The deposits of a run's issuers and the calls outstanding (see the module docstring)."""

    settings: ClearingSettings
    participants: Participants
    level_fen: np.ndarray = field(init=False)  # the deposit each issuer keeps (by code)
    calls: dict[int, tuple[int, int]] = field(default_factory=dict)  # code -> (arrives, fen)
    events: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # day's rows
    # Issuer code -> spans (absolute seconds) of deposit_call_unpaid incidents.
    unpaid: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.level_fen = initial_deposits_fen(self.settings, self.participants)

    @classmethod
    def with_incidents(cls, settings, participants, timelines) -> DepositDesk:
        """A desk that knows the ``deposit_call_unpaid`` incidents of ``timelines`` (one per
        city of the run; a city's incident on an issuer holds its calls everywhere)."""
        unpaid: dict[int, set[tuple[int, int]]] = {}
        for timeline in timelines:
            for k in timeline.of_kind("deposit_call_unpaid"):
                code = int(participants.codes([timeline.incidents[k].target])[0])
                span = (int(timeline.start_s[k]), int(timeline.end_s[k]))
                unpaid.setdefault(code, set()).add(span)
        return cls(settings, participants, unpaid={c: sorted(s) for c, s in unpaid.items()})

    def last_unpaid_day(self) -> int:
        """The last day an incident keeps a call unpaid (-1 if none)."""
        ends = [end for spans in self.unpaid.values() for _, end in spans]
        return max(ends) // DAY_S if ends else -1

    def _unpaid_at(self, code: int, today: int) -> bool:
        """Does an incident keep ``code``'s calls unpaid at ``today``'s settlement (the
        cut-off)?"""
        t = today * DAY_S + self.settings.batch_cutoff_hour * 3600
        return any(start <= t < end for start, end in self.unpaid.get(code, ()))

    def balance(self, ledger: Ledger, code: int) -> int:
        """An issuer's deposit now (fen)."""
        return ledger.balance(account("deposit", self.participants.ids[code]))

    def receive(self, ledger: Ledger, today: int) -> dict[int, int]:
        """Post the called money that has arrived by ``today`` (dated ``today``); returns it,
        fen by issuer code."""
        arrived = sorted(
            code
            for code, (day, _) in self.calls.items()
            if day <= today and not self._unpaid_at(code, today)
        )
        if not arrived:
            return {}
        amounts = np.array([self.calls.pop(code)[1] for code in arrived], dtype=np.int64)
        post_flow(ledger, today, MEMO_DEPOSIT, np.array(arrived), amounts, self.participants)
        for code, amount in zip(arrived, amounts.tolist(), strict=True):
            self.events.append((today, code, FUNDS_IN, amount, -1))
        return dict(zip(arrived, amounts.tolist(), strict=True))

    def shortfalls(
        self, ledger: Ledger, positions, not_yet_in: dict[int, int] | None = None
    ) -> dict[int, int]:
        """Issuers whose deposit cannot pay what they owe on ``positions``, and by how much.
        ``not_yet_in``: money (fen by issuer code) posted after the date the settlement would
        be posted on, which must not pay it (a T+0 settlement is posted on the day before the
        one its batch is cleared on, and money that came in that morning was not there)."""
        later = not_yet_in or {}
        short = {}
        for code, pos in zip(
            positions.participant.tolist(), positions.position_fen.tolist(), strict=True
        ):
            if pos < 0 and self.participants.role[code] == ISSUER:
                missing = -pos - (self.balance(ledger, code) - later.get(code, 0))
                if missing > 0:
                    short[code] = missing
        return short

    def defer(self, ledger: Ledger, today: int, settle_day: int, short: dict[int, int]) -> None:
        """Record a deferred settlement and call each short issuer for what it owes on top of
        bringing its deposit back to its level: once the money is in and the settlement paid
        from it, the deposit stands at its level (the deferred settlement drew nothing)."""
        for code, missing in sorted(short.items()):
            self.events.append((today, code, DEFERRED, missing, settle_day))
            owed = missing + self.balance(ledger, code)
            self._call(ledger, today, code, extra=owed)

    def paid_late(self, today: int, settle_day: int, positions) -> None:
        """Record the issuers' payments of a settlement made after its date."""
        for code, pos in zip(
            positions.participant.tolist(), positions.position_fen.tolist(), strict=True
        ):
            if pos < 0 and self.participants.role[code] == ISSUER:
                self.events.append((today, code, PAID_LATE, -pos, settle_day))

    def call_low(self, ledger: Ledger, today: int) -> None:
        """Call every issuer whose deposit is below the threshold, back to its level."""
        threshold = self.settings.deposit_call_threshold_pct / 100.0
        for code in self.participants.of_role("issuer").tolist():
            level = int(self.level_fen[code])
            if self.balance(ledger, code) < threshold * level:
                self._call(ledger, today, code, extra=0)

    def _call(self, ledger: Ledger, today: int, code: int, extra: int) -> None:
        if code in self.calls:
            return  # one call at a time: the money asked for is on its way
        amount = max(int(self.level_fen[code]) - self.balance(ledger, code), 0) + extra
        if amount <= 0:
            return
        self.calls[code] = (today + self.settings.deposit_call_delay_days, amount)
        self.events.append((today, code, CALL, amount, -1))

    def drain(self) -> dict[str, np.ndarray]:
        """The events since the last drain, as columns."""
        rows, self.events = self.events, []
        cols = np.array(rows, dtype=np.int64).reshape(-1, 5)
        return {
            "day": cols[:, 0],
            "participant": cols[:, 1],
            "kind": cols[:, 2],
            "amount_fen": cols[:, 3],
            "settle_day": cols[:, 4],
        }


__all__ = ["EVENT_KINDS", "DepositDesk"]
