"""Stored-value balances: apply a day's credits and debits in time order, never overdrawing.

The national rules forbid overdraft (不得透支), so a tap whose fare exceeds the balance at
that moment is declined, and later taps of the same card may still pass (a cheaper fare, or a
top-up came in between). Doing this per card in Python would cost a loop over every tap; instead
the events are sorted by (card, time) and one compiled pass walks them (``_kernels``), card by
card, as each card would see them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from sim import kernel_cache
from sim.grouping import stable_order

#: What the balance pass compiles in from other modules: nothing. A kernel calling a compiled
#: function of another module lists it here, so that ``kernel_cache.njit`` compiles the kernel
#: again when it changes (numba checks only this file; tests/test_kernel_cache.py checks).
COMPILED_IN = ()


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
    t = np.asarray(t_s, dtype=np.int64)
    order = stable_order(card, t, amount <= 0)  # credits first at equal times
    accepted = np.empty(n, dtype=bool)
    before = np.empty(n, dtype=np.int64)
    after = np.empty(n, dtype=np.int64)
    end_balance = np.empty(n, dtype=np.int64)
    cards = np.empty(n, dtype=np.int64)
    n_cards = _kernels().apply_in_order(
        order, card, amount, start, accepted, before, after, end_balance, cards
    )
    if n_cards < 0:
        raise ValueError("all events of one card must carry the same start balance")
    return BalanceResult(
        accepted=accepted,
        balance_before_fen=before,
        balance_after_fen=after,
        end_balance_fen=end_balance[:n_cards].copy(),
        cards=cards[:n_cards].copy(),
        order=order,
    )


class _Kernels:
    """The compiled pass (``_kernels``)."""

    def __init__(self, apply_in_order) -> None:
        self.apply_in_order = apply_in_order


@functools.cache
def _kernels() -> _Kernels:
    """Compile (or load from numba's on-disk cache) the balance pass, on first use: a process
    that settles nothing never imports numba.

    ``apply_in_order`` walks the events in ``order`` (by card, then time), each card from its
    start balance: a credit adds, a debit subtracts unless the balance would go negative (then
    it is declined and changes nothing). It writes each event's flag and balances at its own
    index, each card's end balance and the card (in ``order``'s card order), and returns the
    number of cards, or -1 when a card's events carry different start balances."""
    jit = kernel_cache.njit(COMPILED_IN)  # numba.njit(cache=True, nogil=True), cache refreshed

    @jit
    def apply_in_order(order, card, amount, start, accepted, before, after, end_balance, cards):
        n_cards = 0
        balance = first_start = prev_card = np.int64(0)
        for i in range(order.shape[0]):
            e = order[i]
            c = card[e]
            if i == 0 or c != prev_card:
                if n_cards:
                    end_balance[n_cards - 1] = balance
                cards[n_cards] = c
                n_cards += 1
                balance = first_start = start[e]
            elif start[e] != first_start:
                return -1
            a = amount[e]
            before[e] = balance
            ok = a > 0 or balance + a >= 0  # never overdrawn; free rides always pass
            if ok:
                balance += a
            accepted[e] = ok
            after[e] = balance
            prev_card = c
        end_balance[n_cards - 1] = balance
        return n_cards

    return _Kernels(apply_in_order)
