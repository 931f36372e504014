"""Stored-value balances never overdraw, and every fen is accounted for (property tests); the
compiled pass gives, byte for byte, what the NumPy passes it replaced gave (kept here)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.balances import BalanceResult, apply_events
from sim.grouping import stable_order


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


def _numpy_apply_events(
    card: np.ndarray,
    t_s: np.ndarray,
    amount_fen: np.ndarray,
    start_balance_fen: np.ndarray,
) -> BalanceResult:
    """``apply_events`` as NumPy passes (the reference)."""
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


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@settings(max_examples=300, deadline=None)
@given(events, st.lists(st.integers(0, 3_000), min_size=6, max_size=6), st.booleans())
def test_compiled_pass_is_the_numpy_reference(evs, start_by_card, narrow):
    cards = np.array([e[0] for e in evs], dtype=np.int32 if narrow else np.int64)
    times = np.array([e[1] for e in evs], dtype=np.int32 if narrow else np.int64)
    amounts = np.array([e[2] for e in evs])
    start = np.array(start_by_card)[cards]
    got = apply_events(cards, times, amounts, start)
    want = _numpy_apply_events(cards, times, amounts, start)
    for name in BalanceResult.__dataclass_fields__:
        assert _same(getattr(got, name), getattr(want, name)), name
