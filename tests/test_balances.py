"""Stored-value balances never overdraw, and every fen is accounted for (property tests)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.balances import apply_events


def _sequential(cards, times, amounts, start):
    """Reference: process each card's events one by one in (time, credits first, input) order."""
    n = len(cards)
    order = sorted(range(n), key=lambda i: (cards[i], times[i], amounts[i] <= 0, i))
    bal = {}
    accepted = [True] * n
    before = [0] * n
    after = [0] * n
    for i in order:
        b = bal.get(cards[i], start[i])
        before[i] = b
        if amounts[i] <= 0 and b + amounts[i] < 0:
            accepted[i] = False
        else:
            b += amounts[i]
        after[i] = b
        bal[cards[i]] = b
    return accepted, before, after, bal


events = st.lists(
    st.tuples(
        st.integers(0, 5),  # card
        st.integers(0, 86_399),  # time
        st.one_of(st.integers(-800, 0), st.integers(1, 5_000)),  # debit or credit
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events, st.lists(st.integers(0, 3_000), min_size=6, max_size=6))
def test_matches_sequential_reference_and_never_overdraws(evs, start_by_card):
    cards = np.array([e[0] for e in evs])
    times = np.array([e[1] for e in evs])
    amounts = np.array([e[2] for e in evs])
    start = np.array(start_by_card)[cards]
    res = apply_events(cards, times, amounts, start)
    acc, before, after, final = _sequential(
        cards.tolist(), times.tolist(), amounts.tolist(), start.tolist()
    )
    assert res.accepted.tolist() == acc
    assert res.balance_before_fen.tolist() == before
    assert res.balance_after_fen.tolist() == after
    assert (res.balance_after_fen >= 0).all()
    assert dict(zip(res.cards.tolist(), res.end_balance_fen.tolist(), strict=True)) == final
    # The order applied: by card, time, credits first, then input order.
    assert res.order.tolist() == np.lexsort((amounts <= 0, times, cards)).tolist()
    # Conservation: end - start = accepted credits + accepted debits, per card.
    for card in np.unique(cards):
        mine = cards == card
        moved = int(amounts[mine & res.accepted].sum())
        assert final[int(card)] - int(start_by_card[card]) == moved


def test_decline_then_cheaper_tap_and_topup_in_between():
    # Balance 150: a 200 fare is declined, a 100 fare passes, a top-up at noon lets 200 pass.
    res = apply_events(
        card=np.array([7, 7, 7, 7]),
        t_s=np.array([8 * 3600, 9 * 3600, 12 * 3600, 18 * 3600]),
        amount_fen=np.array([-200, -100, 5000, -200]),
        start_balance_fen=np.array([150, 150, 150, 150]),
    )
    assert res.accepted.tolist() == [False, True, True, True]
    assert res.balance_after_fen.tolist() == [150, 50, 5050, 4850]
    assert res.end_balance_fen.tolist() == [4850]


def test_rejects_negative_start_and_inconsistent_starts():
    import pytest

    with pytest.raises(ValueError, match="never overdraw"):
        apply_events(np.array([1]), np.array([0]), np.array([-1]), np.array([-5]))
    with pytest.raises(ValueError, match="same start balance"):
        apply_events(np.array([1, 1]), np.array([0, 1]), np.array([-1, -1]), np.array([5, 6]))
