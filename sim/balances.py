"""Stored-value balances: apply a day's credits and debits in time order, never overdrawing.

The national rules forbid overdraft (不得透支), so a tap whose fare exceeds the balance at
that moment is declined, and later taps of the same card may still pass (a cheaper fare, or a
top-up came in between). Doing this per card in Python would cost a loop over every tap; instead
the events are sorted by (card, time) and a grouped cumulative sum gives every balance at once.
Declines are found by repeating the pass: each round declines the first overdrawing debit of each
card still in trouble, so the loop runs at most as many rounds as the most declines one card has
in a day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.grouping import stable_order


@dataclass(frozen=True)
class BalanceResult:
    """Per event (aligned to the input order): accepted flag and balances around it (fen)."""

    accepted: np.ndarray  # bool; credits are always accepted
    balance_before_fen: np.ndarray  # int64
    balance_after_fen: np.ndarray  # int64
    end_balance_fen: np.ndarray  # int64, per distinct card in ``cards`` (sorted ascending)
    cards: np.ndarray  # int64, the distinct cards, ascending
    # Input indices in the order the events were applied: by card, then time, credits first at
    # equal times, then input order (callers reuse it instead of sorting the events again).
    order: np.ndarray  # int64


def _grouped_cumsum(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every index where ``group_start`` is True."""
    total = np.cumsum(values)
    starts = np.flatnonzero(group_start)
    before = np.zeros(len(starts), dtype=total.dtype)
    before[1:] = total[starts[1:] - 1]
    lengths = np.diff(np.append(starts, len(values)))
    return total - np.repeat(before, lengths)


def _decline_overdrafts(
    c: np.ndarray, a: np.ndarray, s: np.ndarray, group_start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Accepted flags and balances after each event, for events sorted by card then time
    (``group_start`` marks each card's first event, ``s`` its start balance).

    Each round declines the first overdrawing debit of each card still in trouble; later ones
    are re-checked, as the card would see them one at a time."""
    accepted = np.ones(len(c), dtype=bool)
    debit = a < 0
    while True:
        signed = np.where(accepted, a, 0)
        after = s + _grouped_cumsum(signed, group_start)
        bad = np.flatnonzero(debit & accepted & (after < 0))
        if len(bad) == 0:
            return accepted, after
        # Decline only the first overdrawing debit of each card; later ones are re-checked.
        first = np.ones(len(bad), dtype=bool)
        first[1:] = c[bad[1:]] != c[bad[:-1]]
        accepted[bad[first]] = False


def apply_events(
    card: np.ndarray,
    t_s: np.ndarray,
    amount_fen: np.ndarray,
    start_balance_fen: np.ndarray,
) -> BalanceResult:
    """Apply signed amounts (credit > 0, debit <= 0) to the cards' balances in time order.

    ``start_balance_fen`` is aligned to the events (each event carries its card's balance at the
    start of the day; all events of a card must carry the same value). At equal times credits come
    first, then events in input order. A debit that would make the balance negative is declined
    (it changes nothing); zero-amount debits (free rides) are always accepted.
    """
    card = np.asarray(card, dtype=np.int64)
    amount = np.asarray(amount_fen, dtype=np.int64)
    start = np.asarray(start_balance_fen, dtype=np.int64)
    n = len(card)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return BalanceResult(np.zeros(0, bool), empty, empty, empty, empty, empty)
    if (start < 0).any():
        raise ValueError("start balances must be >= 0 (cards never overdraw)")
    is_credit = amount > 0
    t = np.asarray(t_s, dtype=np.int64)
    order = stable_order(card, t, ~is_credit)  # credits first at equal times
    c = card[order]
    a = amount[order]
    s = start[order]
    group_start = np.empty(n, dtype=bool)
    group_start[0] = True
    np.not_equal(c[1:], c[:-1], out=group_start[1:])
    # Within a card every start balance equals the one before it.
    if not (group_start[1:] | (s[1:] == s[:-1])).all():
        raise ValueError("all events of one card must carry the same start balance")
    first_of_group = np.flatnonzero(group_start)

    # One pass over every card; the rounds that decline run only over the cards in trouble
    # (a few hundred events), each card's events being a run of its own.
    total = np.cumsum(a)
    base = np.zeros(len(first_of_group), dtype=np.int64)
    base[1:] = total[first_of_group[1:] - 1]
    grp = np.cumsum(group_start) - 1
    after = s + total - base[grp]
    accepted = np.ones(n, dtype=bool)
    bad = (a < 0) & (after < 0)
    if bad.any():
        troubled = np.zeros(len(first_of_group), dtype=bool)
        troubled[grp[bad]] = True
        sub = np.flatnonzero(troubled[grp])
        accepted[sub], after[sub] = _decline_overdrafts(c[sub], a[sub], s[sub], group_start[sub])
    before = after - np.where(accepted, a, 0)

    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    last_of_group = np.append(first_of_group[1:] - 1, n - 1)
    return BalanceResult(
        accepted=accepted[inverse],
        balance_before_fen=before[inverse],
        balance_after_fen=after[inverse],
        end_balance_fen=after[last_of_group],
        cards=c[first_of_group],
        order=order,
    )
