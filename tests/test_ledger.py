"""Tests for sim/ledger.py: postings, balances, journal columns and the invariant checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import ledger as ledger_module
from sim.codes import CLEARED, PENDING, REJECTED
from sim.ledger import (
    ACCOUNT_KINDS,
    InvariantViolation,
    Ledger,
    account,
    check_conservation,
    check_positions,
    check_tap_status,
)

# -- strategies (kept here: this file's own data) ----------------------------------------------
_OWNERS = ("NTCARD", "QR_ALIPAY", "NT_BUS_URBAN", "NT_EXCHANGE")
# settle: accounts are left out: a lone posting to one is (rightly) a settlement violation.
_KINDS = tuple(k for k in ACCOUNT_KINDS if k != "settle")
account_names = st.builds(account, st.sampled_from(_KINDS), st.sampled_from(_OWNERS))
postings = st.lists(
    st.tuples(
        st.integers(0, 5),  # day
        account_names,
        account_names,
        st.integers(0, 10**9),  # fen
    ).filter(lambda p: p[1] != p[2]),
    max_size=40,
)


# -- posting and reading -----------------------------------------------------------------------
def test_post_moves_both_accounts_and_keeps_trial_balance_zero():
    led = Ledger()
    led.post(0, "bank:NTCARD", "float:NTCARD", 5_000, "topup")
    led.post(0, "float:NTCARD", "unsettled:NTCARD", 200, "card_fare")
    assert led.balance("bank:NTCARD") == 5_000
    assert led.balance("float:NTCARD") == -4_800  # liability: credit balance
    assert led.balance("unsettled:NTCARD") == -200
    assert led.balance("revenue:NT_BUS_URBAN") == 0  # never posted
    assert led.trial_balance() == 0
    led.check()


def test_post_many_aggregates_rows_drops_zero_and_numbers_entries():
    led = Ledger()
    ids = led.post_many(
        3,
        ["bank:NTCARD", "bank:QR_ALIPAY", "bank:SZCARD"],
        ["float:NTCARD", "unsettled:QR_ALIPAY", "float:SZCARD"],
        np.array([100, 0, 7], dtype=np.int64),
        "topup",
    )
    assert ids.tolist() == [0, 1]
    cols = led.journal_columns()
    assert set(cols) == {"day", "entry_id", "debit", "credit", "amount_fen", "memo"}
    assert cols["debit"].tolist() == ["bank:NTCARD", "bank:SZCARD"]
    assert cols["credit"].tolist() == ["float:NTCARD", "float:SZCARD"]
    assert cols["amount_fen"].dtype == np.int64 and cols["amount_fen"].tolist() == [100, 7]
    assert cols["memo"].tolist() == ["topup", "topup"]
    assert cols["day"].tolist() == [3, 3]
    assert led.post(4, "bank:NTCARD", "float:NTCARD", 0, "topup") == -1
    assert led.n_entries == 2


def test_empty_ledger_has_empty_columns_and_passes_checks():
    led = Ledger()
    cols = led.journal_columns()
    assert all(len(v) == 0 for v in cols.values())
    assert led.trial_balance() == 0
    led.check()


@pytest.mark.parametrize(
    ("amount", "error"),
    [(-1, ValueError), (1.5, TypeError), (np.array([2.0]), TypeError)],
)
def test_bad_amounts_are_refused(amount, error):
    led = Ledger()
    with pytest.raises(error):
        led.post_many(0, ["bank:A"], ["float:A"], np.atleast_1d(amount), "x")
    assert led.n_entries == 0


def test_bad_account_names_are_refused():
    led = Ledger()
    with pytest.raises(ValueError, match="bad account name 'flaot:NTCARD'"):
        led.post(0, "flaot:NTCARD", "bank:NTCARD", 1, "typo")
    with pytest.raises(ValueError, match="same account"):
        led.post(0, "bank:NTCARD", "bank:NTCARD", 1, "self")
    with pytest.raises(ValueError, match="unknown account kind"):
        account("cash", "NTCARD")


def test_balance_through_day_and_flows_by_memo():
    led = Ledger()
    led.post(0, "bank:NTCARD", "float:NTCARD", 1_000, "topup")
    led.post(1, "bank:NTCARD", "float:NTCARD", 500, "topup")
    led.post(1, "float:NTCARD", "unsettled:NTCARD", 300, "card_fare")
    led.post(1, "float:NTCARD", "unsettled:NTCARD", 100, "card_fare")
    assert led.balance("float:NTCARD", through_day=0) == -1_000
    assert led.balance("float:NTCARD", through_day=1) == -1_100
    assert led.flows("float:NTCARD", 1) == {"topup": -500, "card_fare": 400}
    assert led.flows("float:NTCARD", 7) == {}
    assert led.balances("float:") == {"float:NTCARD": -1_100}


def test_check_reports_a_settle_posting_without_its_counterpart():
    led = Ledger()
    led.post(2, "unsettled:NTCARD", "settle:NTCARD", 400, "clearing")
    led.post(2, "settle:NT_BUS_URBAN", "revenue:NT_BUS_URBAN", 390, "clearing")
    with pytest.raises(InvariantViolation) as exc:
        led.check()
    assert exc.value.name == "settlement_positions_zero"
    assert exc.value.delta_fen == -10
    assert "day 2" in str(exc.value) and "-10 fen" in str(exc.value)


def test_check_detects_running_balances_out_of_step_with_the_journal():
    led = Ledger()
    led.post(0, "bank:NTCARD", "float:NTCARD", 1_000, "topup")
    led._running[led._index["bank:NTCARD"]] += 3  # simulate a corrupted in-memory balance
    with pytest.raises(InvariantViolation, match="ledger_consistency.*\\+3 fen.*bank:NTCARD"):
        led.check()


def test_invariant_violation_pickles_with_its_fields():
    err = InvariantViolation("conservation", -25, "day 3, issuer NTCARD", "detail")
    back = pickle.loads(pickle.dumps(err))
    assert (back.name, back.delta_fen, back.where, str(back)) == (
        "conservation",
        -25,
        "day 3, issuer NTCARD",
        str(err),
    )


@settings(max_examples=60, deadline=None)
@given(postings)
def test_property_balances_match_a_plain_model_and_trial_balance_is_zero(rows):
    led = Ledger()
    model: dict[str, int] = {}
    for day, debit, credit, amount in rows:
        led.post(day, debit, credit, amount, "p")
        model[debit] = model.get(debit, 0) + amount
        model[credit] = model.get(credit, 0) - amount
    for name, bal in model.items():
        assert led.balance(name) == bal
    assert led.trial_balance() == 0
    assert int(led.journal_columns()["amount_fen"].sum()) == sum(r[3] for r in rows)
    led.check()


# -- conservation ------------------------------------------------------------------------------
def test_conservation_holds_for_explained_change():
    check_conservation(
        4, "NTCARD", 10_000, 10_000 + 5_000 - 800 - 1_200 + 200, 5_000, 800, 1_200, 200
    )


def test_conservation_names_invariant_amount_day_and_issuer():
    with pytest.raises(InvariantViolation) as exc:
        check_conservation(4, "NTCARD", 10_000, 10_050, 0, 0, 0, 0)
    err = exc.value
    assert (err.name, err.delta_fen) == ("conservation", 50)
    assert "'conservation'" in str(err) and "+50 fen" in str(err)
    assert "day 4, issuer NTCARD" in str(err)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 10**9),
    st.lists(st.tuples(st.sampled_from("tfcd"), st.integers(1, 10**6)), max_size=30),
    st.integers(-(10**6), 10**6).filter(lambda x: x != 0),
)
def test_property_conservation_holds_and_any_unposted_change_is_caught(start, events, tamper):
    flows = {"t": 0, "f": 0, "c": 0, "d": 0}
    bal = start
    for kind, amount in events:
        flows[kind] += amount
        bal += amount if kind in "td" else -amount
    check_conservation(1, "NTCARD", start, bal, flows["t"], flows["f"], flows["c"], flows["d"])
    with pytest.raises(InvariantViolation) as exc:
        check_conservation(
            1, "NTCARD", start, bal + tamper, flows["t"], flows["f"], flows["c"], flows["d"]
        )
    assert exc.value.delta_fen == tamper and f"{tamper:+d} fen" in str(exc.value)


# -- exactly once ------------------------------------------------------------------------------
def _taps():
    tx = np.array([10, 11, 12, 13], dtype=np.int64)
    status = np.array([CLEARED, REJECTED, PENDING, CLEARED], dtype=np.uint8)
    amount = np.array([200, 200, 150, 300], dtype=np.int64)
    return tx, status, amount


def test_tap_status_passes_when_each_cleared_tap_is_in_one_batch():
    tx, status, amount = _taps()
    check_tap_status(tx, status, amount, np.array([13, 10]), np.array([1, 0]))


def test_tap_cleared_in_two_batches_is_reported_with_its_amount():
    tx, status, amount = _taps()
    with pytest.raises(InvariantViolation) as exc:
        check_tap_status(tx, status, amount, np.array([10, 13, 10]), np.array([0, 1, 5]))
    err = exc.value
    assert err.name == "tap_exactly_once" and err.delta_fen == 200
    assert "tap tx 10, batches [0, 5]" in str(err) and "cleared in 2 batch" in str(err)


@pytest.mark.parametrize(
    ("cleared_tx", "batch", "needle"),
    [
        ([10], [0], "tap tx 13"),  # cleared tap missing from every batch
        ([10, 13, 11], [0, 0, 0], "tap tx 11"),  # rejected tap inside a batch
        ([10, 13, 99], [0, 0, 4], "batch 4, tx 99"),  # batch clears an unknown record
    ],
)
def test_tap_status_violations_name_the_tap(cleared_tx, batch, needle):
    tx, status, amount = _taps()
    with pytest.raises(InvariantViolation, match="tap_exactly_once") as exc:
        check_tap_status(tx, status, amount, np.array(cleared_tx), np.array(batch))
    assert needle in str(exc.value)


def test_tap_status_rejects_repeated_tx_ids_and_unknown_status():
    tx, status, amount = _taps()
    with pytest.raises(InvariantViolation, match="occurs twice"):
        check_tap_status(np.array([1, 1]), np.array([0, 0]), np.array([5, 5]), [], [])
    status[2] = 9
    with pytest.raises(InvariantViolation, match="unknown status 9"):
        check_tap_status(tx, status, amount, np.array([10, 13]), np.array([0, 0]))


def _tap_status_outcome(*args) -> str:
    try:
        check_tap_status(*args)
    except InvariantViolation as exc:
        return f"{exc} ({exc.delta_fen})"
    return "ok"


@settings(max_examples=60, deadline=None)
@given(
    status=st.lists(st.sampled_from([PENDING, CLEARED, REJECTED]), min_size=1, max_size=12),
    members=st.lists(st.tuples(st.integers(-1, 13), st.integers(0, 3)), max_size=16),
)
def test_tap_status_of_numbered_records_checks_as_the_sorted_search_does(status, members):
    """A day's ids are consecutive (checked by offset); the general path (sort and search)
    must reach the same verdict, with the same message, on the same records."""
    tx = 1_000 + np.arange(len(status), dtype=np.int64)
    args = (
        tx,
        np.array(status, dtype=np.uint8),
        100 + np.arange(len(status), dtype=np.int64),
        1_000 + np.array([m for m, _ in members], dtype=np.int64),
        np.array([b for _, b in members], dtype=np.int64),
    )
    fast = _tap_status_outcome(*args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ledger_module, "_increasing", lambda values: False)
        assert _tap_status_outcome(*args) == fast


def test_tap_status_of_unordered_records_is_checked_by_search():
    tx, status, amount = _taps()
    tx, status, amount = tx[::-1].copy(), status[::-1].copy(), amount[::-1].copy()
    check_tap_status(tx, status, amount, np.array([13, 10]), np.array([1, 0]))
    with pytest.raises(InvariantViolation, match="tap tx 11"):
        check_tap_status(tx, status, amount, np.array([10, 13, 11]), np.array([0, 0, 0]))
    with pytest.raises(InvariantViolation, match="batch 4, tx 99"):
        check_tap_status(tx, status, amount, np.array([10, 13, 99]), np.array([0, 0, 4]))


# -- positions ---------------------------------------------------------------------------------
def test_positions_sum_to_zero_per_settle_day():
    check_positions(np.array([1, 1, 1, 2, 2]), np.arange(5), np.array([-100, 97, 3, -5, 5]))
    check_positions(np.zeros(0), np.zeros(0), np.zeros(0))


def test_positions_not_netting_to_zero_name_day_and_participants():
    with pytest.raises(InvariantViolation) as exc:
        check_positions(
            np.array([1, 1, 2, 2]),
            np.array([0, 1, 0, 1]),
            np.array([-100, 100, -50, 49]),
            names=["NTCARD", "NT_BUS_URBAN"],
        )
    err = exc.value
    assert err.name == "settlement_positions_zero" and err.delta_fen == -1
    assert "settle day 2" in str(err) and "NT_BUS_URBAN +49" in str(err)
