"""Monotonicity of policy evaluation (issue 8), as hypothesis properties over random valid fare
rules and days of taps: a deeper concession never makes a rider pay more, and a wider transfer
window never turns a transfer into a full-fare boarding overall.

What does *not* hold, and why, is pinned by an example: with the transfer window counted from the
chain's first boarding, a wider window can move which boarding starts the next chain, so a single
trip (or, with unequal fares, a day) can cost more. Planners reading a transfer-window result
should know the rule is "fewer full-fare boardings", not "no fare rises".
"""

from __future__ import annotations

import numpy as np
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import FARE_LINES, fare_days, fare_rules
from test_fares import EXAMPLE_YAML

from sim.codes import TAP_ENTRY, TAP_EXIT
from sim.fare_rules import MAX_FARE_FEN, FareCaps, FareRules
from sim.fares import TapBatch, compile_fares, price_taps

SETTINGS = settings(max_examples=60, deadline=None)
days = st.integers(0, 2)


def _price(rules: FareRules, taps: TapBatch, day: int, spent: np.ndarray):
    return price_taps(compile_fares(rules, FARE_LINES), taps, day, spent)


def _deeper(rules: FareRules, extra_pct: float, extra_fen: int) -> FareRules:
    """The same rules with every percent and amount-off concession made deeper."""

    def deepen(rule):
        if rule.kind == "percent":
            return rule.model_copy(
                update={"discount_pct": min(100.0, rule.discount_pct + extra_pct)}
            )
        if rule.kind == "amount_off":
            fen = min(MAX_FARE_FEN, rule.amount_off_fen + extra_fen)
            return rule.model_copy(update={"amount_off_fen": fen})
        return rule

    concessions = {ct: tuple(deepen(r) for r in rs) for ct, rs in rules.concessions.items()}
    return rules.model_copy(update={"concessions": concessions})


def _per_card(taps: TapBatch, amounts: np.ndarray) -> dict[int, int]:
    return {int(c): int(amounts[taps.card == c].sum()) for c in np.unique(taps.card)}


@SETTINGS
@given(fare_rules(), fare_days(), days, st.sampled_from([1.0, 10.0, 50.0]), st.integers(1, 300))
def test_a_deeper_concession_never_raises_what_a_rider_pays(rules, day_taps, day, pct, fen):
    taps, spent = day_taps
    # Without caps: trip by trip.
    uncapped = rules.model_copy(update={"caps": FareCaps()})
    before = _price(uncapped, taps, day, spent).amount_fen
    after = _price(_deeper(uncapped, pct, fen), taps, day, spent).amount_fen
    assert (after <= before).all()
    # With caps a cheaper early trip can leave room under the cap for a later one, so the
    # property is per card and day: the day's total never rises.
    before = _per_card(taps, _price(rules, taps, day, spent).amount_fen)
    after = _per_card(taps, _price(_deeper(rules, pct, fen), taps, day, spent).amount_fen)
    assert all(after[c] <= before[c] for c in before)


@SETTINGS
@given(fare_rules(), fare_days(), days, st.integers(1, 120))
def test_a_wider_transfer_window_never_means_fewer_transfers(rules, day_taps, day, wider_by):
    taps, spent = day_taps
    if rules.transfer is None:
        return
    window = rules.transfer.window_min
    wide = rules.model_copy(
        update={"transfer": rules.transfer.model_copy(update={"window_min": window + wider_by})}
    )
    # A leg counts once: a metro exit that follows its entry carries the entry's transfer flag;
    # an orphan exit (no entry seen) is a leg of its own. fare_days() lists a card's rows in order.
    k, card = taps.kind, taps.card
    boarding = np.ones(len(taps), dtype=bool)
    boarding[1:] = ~((k[1:] == TAP_EXIT) & (card[1:] == card[:-1]) & (k[:-1] == TAP_ENTRY))
    boarding[1:] |= taps.incomplete[:-1]
    before = _price(rules, taps, day, spent).is_transfer & boarding
    after = _price(wide, taps, day, spent).is_transfer & boarding
    # Chains are cut greedily from each chain's first boarding, which is the fewest chains for
    # a window; a wider window can only keep that number or lower it.
    for card in np.unique(taps.card):
        rows = taps.card == card
        assert after[rows].sum() >= before[rows].sum()


def test_a_wider_window_can_move_the_full_fare_to_a_dearer_boarding():
    """The known non-monotone case, pinned: 3 bus boardings at 0, 70 and 100 min, 50% off a
    transfer leg, at most one transfer. With 60 min, the 100-min boarding (2 yuan) is the transfer;
    with 80 min the 70-min one (1 yuan) is, and the 100-min boarding starts a new chain at full
    fare: the day costs more although the window is wider."""
    data = yaml.safe_load(EXAMPLE_YAML)["fares"]
    data["concessions"], data["caps"] = {}, {}
    data["transfer"] = {"window_min": 60, "discount_pct": 50, "modes": ["bus"], "max_transfers": 1}
    b_dear, b_cheap = 0, 2  # B1 (200 fen) and B3 (100 fen) in the example's fares
    taps = TapBatch(
        np.array([1, 1, 1]),
        np.array([8 * 3600, 8 * 3600 + 70 * 60, 8 * 3600 + 100 * 60]),
        np.array([b_dear, b_cheap, b_dear]),
        np.zeros(3, dtype=np.int64),
        np.zeros(3, dtype=np.int64),
        np.zeros(3, dtype=np.int64),
        np.zeros(3),
        np.zeros(3, dtype=bool),
    )
    spent = np.zeros(3, dtype=np.int64)
    narrow = FareRules.model_validate(data)
    wide = FareRules.model_validate({**data, "transfer": {**data["transfer"], "window_min": 80}})
    a = _price(narrow, taps, 0, spent)
    b = _price(wide, taps, 0, spent)
    assert a.is_transfer.tolist() == [False, False, True]
    assert b.is_transfer.tolist() == [False, True, False]
    assert a.list_fare_fen.tolist() == [200, 100, 200]
    assert a.amount_fen.sum() == 200 + 100 + 100 < b.amount_fen.sum() == 200 + 50 + 200
