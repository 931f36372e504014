"""The engine on a short small_ci run (sim/engine.py): tap statuses add up, the ledger balances and
agrees with the output tables, clearing and settlement dates are consistent, duplicate deductions
are rejected and refunded, and a broken balance stops the run with a conservation violation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from output_frames import read_frame

import sim.shard
from sim.api import build, iter_days, load_scenario, run
from sim.codes import CLEARED, PENDING, REJECTED
from sim.events import BatchCleared, DaySettled, TapsFinal
from sim.ledger import InvariantViolation
from sim.model import CardTwinModel
from sim.output import read_table

SMALL = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"
DAYS = 5
# Many double taps with a failing lock: duplicate deductions to reject and refund in five days.
DUPLICATES = ["devices.double_tap_prob_per_tap=0.05", "devices.lock_failure_prob=0.5"]
CARD_MEDIA = ("physical_card", "nfc_virtual_card")


def _scenario(overrides=()):
    return load_scenario(SMALL, list(overrides), days=DAYS)


@pytest.fixture(scope="module")
def summary():
    return run(_scenario(), None)


@pytest.fixture(scope="module")
def engine():
    """An engine run directly, so its ledger and final run state are at hand; ``emitted`` holds
    what a subscriber received: the final tap records and the clearing log, by day."""
    world = build(_scenario(DUPLICATES))
    emitted: dict[str, list] = {"transactions": [], "clearing_batches": []}

    def subscriber(event) -> None:
        if isinstance(event, TapsFinal):
            emitted["transactions"].append(
                (event.day, {k: np.copy(v) for k, v in event.taps.filled().items()})
            )
        elif isinstance(event, BatchCleared):
            emitted["clearing_batches"].append((event.day, event.batches))

    model = CardTwinModel(world=world, subscribers=[subscriber])
    model.run_days()
    engine = model.engine
    engine.emitted = emitted
    return engine


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "run"
    # Unmasked: these tests follow card balances and counters, which a masked export leaves out.
    result = run(_scenario(DUPLICATES), out, unmasked=True)
    assert result.taps > 0
    return out, result


@pytest.fixture(scope="module")
def tables(out_dir):
    out, result = out_dir
    names = ("transactions", "ledger_entries", "clearing_batches", "topups")
    return {name: read_frame(out, name) for name in names} | {"summary": result}


def test_run_completes_and_every_tap_has_one_status(summary):
    totals = summary.totals
    assert summary.days == DAYS
    assert summary.taps > 5_000
    assert totals["taps"] == summary.taps
    assert totals["cleared"] + totals["rejected"] + totals["pending"] == summary.taps
    # The clock runs to the last day's clearing cut-off: nothing is left pending.
    assert totals["pending"] == 0
    assert totals["cleared"] > 0.99 * summary.taps
    assert totals["fare_transactions"] <= summary.taps
    assert totals["riders"] > 0 and totals["topups"] > 0
    assert summary.out_dir is None
    assert summary.metrics is not None and summary.world is not None


def test_output_statuses_match_the_run_totals(tables):
    tx = tables["transactions"]
    totals = tables["summary"].totals
    assert len(tx) == tables["summary"].taps
    counts = tx["status"].value_counts().to_dict()
    assert counts.get("cleared", 0) == totals["cleared"]
    assert counts.get("rejected", 0) == totals["rejected"]
    assert counts.get("pending", 0) == totals["pending"]
    assert tx["transaction_id"].is_unique
    # Rejected <=> a reject reason.
    assert ((tx["status"] == "rejected") == (tx["reject_reason"] != "none")).all()


def test_ledger_balances_and_float_equals_card_balances(engine):
    ledger = engine.ledger
    ledger.check()  # running balances match the journal; trial balance and settle:* are zero
    assert ledger.trial_balance() == 0
    balances = ledger.balances()
    issuer = engine.world.scenario.output.issuer_id
    assert -balances[f"float:{issuer}"] == int(engine.state.cards.balance_fen.sum())
    # Every batch is settled by the end of the run: no open settlement positions.
    assert all(v == 0 for k, v in balances.items() if k.startswith("settle:"))
    # Unsettled card fares are only the duplicate refunds due after the period.
    batches = engine.emitted["clearing_batches"]
    due = sum(int(c["refund_fen"][c["settle_day"] >= DAYS].sum()) for _, c in batches)
    assert due > 0
    assert -balances[f"unsettled:{issuer}"] == due
    others = [v for k, v in balances.items() if k.startswith("unsettled:") and issuer not in k]
    assert others and all(v == 0 for v in others)
    assert [day for day, _ in engine.emitted["transactions"]] == list(range(DAYS))


def _ledger_sum(ledger_entries, memo: str, debit: str | None = None) -> int:
    rows = ledger_entries["memo"] == memo
    if debit is not None:
        rows &= ledger_entries["debit"] == debit
    return int(ledger_entries.loc[rows, "amount_fen"].sum())


def test_card_fares_in_transactions_equal_the_card_fare_postings(tables):
    tx, le = tables["transactions"], tables["ledger_entries"]
    nt_card = tx["media"].isin(CARD_MEDIA) & (tx["issuer_id"] == "NTCARD")
    # Charged Nantong card taps carry the purse balances; declined or refused ones do not.
    charged = nt_card & tx["balance_after_fen"].notna()
    assert charged.sum() > 1_000
    # Nantong cards used in other cities are paid from the same purse.
    assert (charged & (tx["city_code"] != "3206")).any()
    card_fares = int(tx.loc[charged, "amount_fen"].sum())
    assert card_fares == _ledger_sum(le, "card_fare")
    assert card_fares == _ledger_sum(le, "card_fare", debit="float:NTCARD")
    # The KPI counts what Nantong acquired (the published tables' view): taps in Nantong only.
    local = charged & (tx["city_code"] == "3206")
    assert int(tx.loc[local, "amount_fen"].sum()) == tables["summary"].totals["card_spend_fen"]
    # Everything else charged (QR codes, visitors' own cards) is a QR-style fare.
    refused = tx["reject_reason"] == "device_buffer_full"
    other = ~nt_card & ~refused
    assert int(tx.loc[other, "amount_fen"].sum()) == _ledger_sum(le, "qr_fare")
    # Balance columns are consistent on every charged tap.
    before = tx.loc[charged, "balance_before_fen"]
    after = tx.loc[charged, "balance_after_fen"]
    assert (before - after == tx.loc[charged, "amount_fen"]).all()
    assert (after >= 0).all()


def test_topups_equal_the_topup_postings(tables):
    topups, le = tables["topups"], tables["ledger_entries"]
    assert len(topups) > 0
    assert int(topups["amount_fen"].sum()) == _ledger_sum(le, "topup", debit="bank:NTCARD")
    assert int(topups["amount_fen"].sum()) == tables["summary"].totals["topup_fen"]
    assert (
        topups["balance_after_fen"] - topups["balance_before_fen"] == topups["amount_fen"]
    ).all()


def test_journal_nets_to_zero_and_settle_accounts_close(tables):
    le = tables["ledger_entries"]
    assert (le["amount_fen"] > 0).all()
    assert (le["debit"] != le["credit"]).all()
    debits = le.groupby("debit")["amount_fen"].sum()
    credits = le.groupby("credit")["amount_fen"].sum()
    balance = debits.sub(credits, fill_value=0)
    assert int(balance.sum()) == 0
    settle = balance[balance.index.str.startswith("settle:")]
    assert len(settle) > 0 and (settle == 0).all()


def test_cleared_transactions_carry_their_batch_and_settle_the_next_day(tables):
    tx, batches = tables["transactions"], tables["clearing_batches"]
    lag = dt.timedelta(days=tables["summary"].world.scenario.clearing.settlement_lag_days)
    assert lag == dt.timedelta(days=1)
    cleared = tx[tx["status"] == "cleared"]
    assert cleared["clearing_batch_id"].notna().all()
    assert cleared["settle_date"].notna().all()
    not_cleared = tx[tx["status"] != "cleared"]
    assert not_cleared["clearing_batch_id"].isna().all()
    assert not_cleared["settle_date"].isna().all()

    assert batches["clearing_batch_id"].is_unique
    # Records are cleared by their acquirer's exchange; other nodes log them as transit.
    batches = batches[~batches["transit"]]
    by_id = batches.set_index("clearing_batch_id")
    batch = by_id.loc[cleared["clearing_batch_id"].astype(np.int64)]
    settle = cleared["settle_date"].to_numpy()
    assert (settle == (batch["service_date"] + lag).to_numpy()).all()
    assert (settle == batch["settle_date"].to_numpy()).all()
    assert (cleared["acquirer_id"].to_numpy() == batch["acquirer_id"].to_numpy()).all()
    # A record is cleared no earlier than the day it was tapped.
    assert (batch["service_date"].to_numpy() >= cleared["service_date"].to_numpy()).all()
    # Batch counts and gross amounts agree with their records.
    per_batch = cleared.groupby("clearing_batch_id")["amount_fen"].agg(["size", "sum"])
    assert (by_id.loc[per_batch.index, "cleared"] == per_batch["size"]).all()
    assert (by_id.loc[per_batch.index, "gross_fen"] == per_batch["sum"]).all()
    assert int(batches["cleared"].sum()) == len(cleared)


def test_duplicate_deductions_are_rejected_and_refunded(tables):
    tx, batches, le = tables["transactions"], tables["clearing_batches"], tables["ledger_entries"]
    lock_s = tables["summary"].world.scenario.clearing.retap_lock_s
    dup = tx["reject_reason"] == "duplicate_deduction"
    assert dup.sum() > 5
    assert (tx.loc[dup, "amount_fen"] > 0).all()

    # The clearing rule seen from the outputs: a charged card tap within the re-tap lock of an
    # earlier charge of the same card on the same device. Exactly those are rejected.
    charged = tx[tx["balance_after_fen"].notna() & (tx["amount_fen"] > 0)].sort_values(
        ["token_id", "device_id", "event_timestamp", "transaction_id"]
    )
    gap = charged.groupby(["token_id", "device_id"])["event_timestamp"].diff().dt.total_seconds()
    again = set(charged.loc[gap <= lock_s, "transaction_id"])
    assert again == set(tx.loc[dup, "transaction_id"])

    # Each rejected duplicate has a refund order, executed on its batch's settlement date.
    assert int(batches["refund_fen"].sum()) == int(tx.loc[dup, "amount_fen"].sum())
    assert int(batches["rejected_duplicate_deduction"].sum()) == int(dup.sum())
    last_day = batches["service_date"].max()
    executed = batches.loc[batches["settle_date"] <= last_day, "refund_fen"].sum()
    assert 0 < executed < batches["refund_fen"].sum()
    assert _ledger_sum(le, "duplicate_refund") == int(executed)
    assert tables["summary"].totals["refunds_fen"] == int(executed)


def test_refunds_still_owed_at_the_end_are_reported_counted_and_in_fen(tables, out_dir):
    """Refunds whose payment date is after the period: run_meta.json and the run's totals say
    how many and how many fen, which is what was ordered less what the journal paid."""
    tx, batches, le = tables["transactions"], tables["clearing_batches"], tables["ledger_entries"]
    ordered = tx[tx["reject_reason"] == "duplicate_deduction"]
    paid = _ledger_sum(le, "duplicate_refund") + _ledger_sum(le, "qr_duplicate_refund")
    owed = batches.loc[batches["settle_date"] > batches["service_date"].max(), "refund_fen"]
    meta = json.loads((out_dir[0] / "run_meta.json").read_text(encoding="utf-8"))
    totals = meta["totals"]
    assert totals["refunds_outstanding_fen"] == int(ordered["amount_fen"].sum()) - paid > 0
    assert totals["refunds_outstanding_fen"] == int(owed.sum())
    assert totals["refunds_outstanding"] == len(ordered) - totals["refunds_executed"] > 0
    assert totals["refund_orders_fen"] == totals["refunds_fen"] + totals["refunds_outstanding_fen"]
    assert tables["summary"].totals == totals


def test_a_card_balance_changed_outside_the_books_breaks_conservation(monkeypatch, tmp_path):
    # sim.shard imports settle_balances by name: patch the name the shard calls.
    real = sim.shard.settle_balances

    def leaky(world, state, plan, credits):
        result = real(world, state, plan, credits)
        if plan.day == 2:
            state.cards.balance_fen[0] += 1  # one fen from nowhere
        return result

    monkeypatch.setattr(sim.shard, "settle_balances", leaky)
    out = tmp_path / "broken"
    with pytest.raises(InvariantViolation) as info:
        run(_scenario(), out)
    assert info.value.name == "conservation"
    assert info.value.delta_fen == 1
    assert "day 2" in info.value.where
    assert "conservation" in str(info.value)
    assert not out.exists()  # a failed run leaves no outputs behind


def test_emitted_records_have_final_statuses(engine):
    # What the engine hands the writers: every tap in one of the three states, none pending.
    status = np.concatenate([c["status"] for _, c in engine.emitted["transactions"]])
    assert len(status) == engine.kpis.taps
    assert np.isin(status, [PENDING, CLEARED, REJECTED]).all()
    assert not (status == PENDING).any()
    assert int((status == REJECTED).sum()) == engine.kpis.totals["rejected"]
    assert int((status == CLEARED).sum()) == engine.kpis.totals["cleared"]


def test_tap_records_are_well_formed(out_dir):
    tx = read_table(out_dir[0], "transactions")
    assert pc.all(pc.greater_equal(tx["amount_fen"], 0)).as_py()
    assert pc.all(pc.less_equal(tx["amount_fen"], tx["list_fare_fen"])).as_py()


def test_calibration_metrics_count_the_refunds_the_run_executed(engine):
    executed = engine.kpis.totals["refunds_executed"]
    assert executed > 0
    assert engine.kpis.metrics.refunds == executed


def test_a_duplicate_repeats_its_own_tap_when_readers_refused_others_that_day():
    """A double charge repeats the tap it doubles (same card, device and fare, a moment later,
    ``duplicate_of_key`` its key) also on a day a QR platform was down and readers refused
    taps: the refused rows leave the day's columns before the double taps are drawn, so the
    charges' keys are read from those columns, not from the day's taps before the refusals
    (which named a tap further on: another card's, another time)."""
    incidents = (
        "[{id: alipay-down, kind: qr_platform_outage, target: qr_alipay,"
        ' start: "2024-01-01 06:00", duration_min: 600, no_card_share: 1.0}]'
    )
    scenario = load_scenario(SMALL, [*DUPLICATES, f"incidents={incidents}"], days=1)
    events: list = []
    run(scenario, None, subscribers=[events.append])
    (day,) = [e for e in events if isinstance(e, DaySettled)]
    assert len(day.refusals["row"]) > 0  # readers refused taps that day: the case
    taps = day.taps
    dup = np.flatnonzero(taps.duplicate_of_key >= 0)
    assert len(dup) > 0
    by_key = {int(k): i for i, k in enumerate(taps.tap_key)}
    for i in dup.tolist():
        j = by_key[int(taps.duplicate_of_key[i])]
        assert (taps.row[j], taps.device[j], taps.amount_fen[j]) == (
            taps.row[i],
            taps.device[i],
            taps.amount_fen[i],
        )
        assert 0 < taps.t_s[i] - taps.t_s[j] <= 60


def test_a_run_asked_to_keeps_its_world_out_of_full_collections_and_lets_go_after():
    """With ``freeze_gc`` (the command line, a stream: one run a process) the objects alive
    when the days start (the worlds, the model) are frozen out of the cyclic collector's full
    collections while they run; a run that ends, or is stopped early, lets them go again. A
    run not asked to (the dashboard, sweeps: several in one process) freezes nothing."""
    import gc

    assert gc.get_freeze_count() == 0
    days = iter_days(_scenario(), None, freeze_gc=True)
    next(days)
    assert gc.get_freeze_count() > 10_000  # the world's objects
    days.close()  # stopped early
    assert gc.get_freeze_count() == 0
    for _ in iter_days(load_scenario(SMALL, days=1), None, freeze_gc=True):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
    for _ in iter_days(load_scenario(SMALL, days=1), None):
        assert gc.get_freeze_count() == 0
