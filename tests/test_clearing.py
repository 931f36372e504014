"""Tests for sim/clearing.py: settings, participants, duplicate screening, fees, hash chain,
settlement, posting helpers, and property tests that run small card economies end to end."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.clearing import (
    GENESIS_HASH,
    MC_CARD,
    MC_QR,
    R_DECLINED,
    R_DUPLICATE_DEDUCTION,
    R_DUPLICATE_UPLOAD,
    R_NONE,
    Clearer,
    ClearingSettings,
    Participant,
    Participants,
    SeenSerials,
    UploadedRecords,
    batch_columns,
    check_card_balances,
    clearing_day,
    deposit_shortfalls,
    fold_tap_status,
    initial_deposits_fen,
    medium_class_of,
    post_clearing,
    post_fares,
    post_flow,
    post_refunds,
    post_settlement,
    records_digest,
    verify_chain,
)
from sim.codes import CLEARED, MEDIA, PENDING, REJECTED, code_of
from sim.ledger import InvariantViolation, Ledger, check_positions, check_tap_status


def reference_participants() -> Participants:
    """A small reference hierarchy (Nantong-like): a city exchange under a provincial exchange
    under the national centre, a card issuer and QR channels, bus companies and a metro, plus
    Suzhou and Shanghai for cross-city records. Scenarios declare theirs as data."""
    rows = [
        Participant("NATIONAL", "clearing_node", None, "全国一卡通数据中心"),
        Participant("JS_EXCHANGE", "clearing_node", "NATIONAL", "江苏省交通一卡通清算中心"),
        Participant("NT_EXCHANGE", "clearing_node", "JS_EXCHANGE", "南通市数据交换中心"),
        Participant("SZ_EXCHANGE", "clearing_node", "JS_EXCHANGE", "苏州市数据交换中心"),
        Participant("SH_EXCHANGE", "clearing_node", "NATIONAL", "上海市数据交换中心"),
        Participant("NTCARD", "issuer", "NT_EXCHANGE", "南通市民卡"),
        Participant("QR_CHANGXING", "issuer", "NT_EXCHANGE", "畅行南通"),
        Participant("QR_ALIPAY", "issuer", "NT_EXCHANGE", "支付宝"),
        Participant("QR_WECHAT_TONGCHENG", "issuer", "NT_EXCHANGE", "同程微信"),
        Participant("QR_UNIONPAY", "issuer", "NT_EXCHANGE", "银联"),
        Participant("QR_YIMATONGXING", "issuer", "SH_EXCHANGE", "一码通行"),
        Participant("SZCARD", "issuer", "SZ_EXCHANGE", "苏州交通卡"),
        Participant("SHCARD", "issuer", "SH_EXCHANGE", "上海交通卡"),
        Participant("NT_BUS_URBAN", "acquirer", "NT_EXCHANGE", "南通公交(市区)"),
        Participant("NT_BUS_RUDONG", "acquirer", "NT_EXCHANGE", "如东公交"),
        Participant("NT_BUS_HAIAN", "acquirer", "NT_EXCHANGE", "海安公交"),
        Participant("NT_BUS_HAIMEN", "acquirer", "NT_EXCHANGE", "海门公交"),
        Participant("NT_BUS_RUGAO", "acquirer", "NT_EXCHANGE", "如皋公交"),
        Participant("NT_BUS_QIDONG", "acquirer", "NT_EXCHANGE", "启东公交"),
        Participant("NT_METRO", "acquirer", "NT_EXCHANGE", "南通地铁"),
        Participant("SZ_BUS", "acquirer", "SZ_EXCHANGE", "苏州公交"),
        Participant("SH_METRO", "acquirer", "SH_EXCHANGE", "上海地铁"),
    ]
    return Participants(rows)


P = reference_participants()
NTCARD, ALIPAY, SZCARD = P.code("NTCARD"), P.code("QR_ALIPAY"), P.code("SZCARD")
URBAN, METRO, SZ_BUS = P.code("NT_BUS_URBAN"), P.code("NT_METRO"), P.code("SZ_BUS")
BUS, METRO_MODE = 0, 1


def recs(n: int, **cols) -> UploadedRecords:
    """n records with defaults: NTCARD card, urban bus, 200 fen charged on a 200 fen list fare."""
    base = {
        "tx_id": np.arange(n),
        "card": np.arange(n) + 100,
        "card_counter": np.arange(n),
        "device": np.zeros(n, np.int64),
        "device_serial": np.arange(n),
        "timestamp_s": np.arange(n) * 60,
        "amount_fen": np.full(n, 200),
        "list_fare_fen": np.full(n, 200),
        "issuer": np.full(n, NTCARD),
        "acquirer": np.full(n, URBAN),
        "mode": np.full(n, BUS),
        "medium_class": np.full(n, MC_CARD),
        "declined": np.zeros(n, bool),
    }
    base.update({k: np.broadcast_to(np.asarray(v), (n,)) for k, v in cols.items()})
    return UploadedRecords(**base)


# -- settings ----------------------------------------------------------------------------------
CLEARING_YAML = """
bus_card_fee_bp: 350
bus_qr_fee_bp: 350
metro_card_fee_bp: 350
metro_qr_fee_bp: 250
batch_cutoff_hour: 2
settlement_lag_days: 1
retap_lock_s: 2
settlement_deposit_fen: 50000000
deposit_overrides_fen: {QR_ALIPAY: 20000000}
"""


def test_settings_defaults_follow_the_nantong_report_and_yaml_loads():
    s = ClearingSettings()
    assert s.fee_matrix_bp().tolist() == [[350, 350], [350, 250]]
    assert (s.batch_cutoff_hour, s.settlement_lag_days) == (2, 1)
    loaded = ClearingSettings(**yaml.safe_load(CLEARING_YAML))
    assert loaded.deposit_overrides_fen == {"QR_ALIPAY": 20_000_000}
    assert all(f.description for f in ClearingSettings.model_fields.values())


def test_settings_refuse_unknown_keys_bad_values_and_mutation():
    with pytest.raises(pydantic.ValidationError, match="bus_fee_bp"):
        ClearingSettings(bus_fee_bp=300)
    with pytest.raises(pydantic.ValidationError, match="metro_qr_fee_bp"):
        ClearingSettings(metro_qr_fee_bp=20_000)
    with pytest.raises(pydantic.ValidationError):
        ClearingSettings().settlement_lag_days = 2


def test_clearing_day_respects_the_cutoff_hour():
    day5 = 5 * 86_400
    ts = np.array([day5 + 7_199, day5 + 7_200, day5 + 86_399])
    assert clearing_day(ts, 2).tolist() == [4, 5, 5]
    assert clearing_day(ts, 0).tolist() == [5, 5, 5]


def test_medium_class_of_media_codes():
    media = np.array(
        [code_of(MEDIA, m) for m in ("physical_card", "nfc_virtual_card", "qr_alipay")]
    )
    assert medium_class_of(media).tolist() == [MC_CARD, MC_CARD, MC_QR]


# -- participants ------------------------------------------------------------------------------
def test_participants_codes_and_clearing_node_of_a_pair():
    assert P.ids[NTCARD] == "NTCARD" and P.codes(["NT_METRO"]).tolist() == [METRO]
    assert P.ids[P.parent[URBAN]] == "NT_EXCHANGE" and P.ids[P.parent[SZCARD]] == "SZ_EXCHANGE"
    assert set(P.ids[c] for c in P.of_role("clearing_node")) >= {"NT_EXCHANGE", "NATIONAL"}
    with pytest.raises(KeyError, match="unknown participant 'NTCRAD'"):
        P.code("NTCRAD")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([Participant("A", "issuer", None)], "needs a parent"),
        ([Participant("X", "clearing_node", None), Participant("A", "issuer", "B")], "parent 'B'"),
        ([Participant("X", "clearing_node", None), Participant("X", "acquirer", "X")], "unique"),
        ([Participant("X", "bank", None)], "role 'bank'"),
        (
            [Participant("X", "clearing_node", "Y"), Participant("Y", "clearing_node", "X")],
            "cycle",
        ),
    ],
)
def test_participants_refuse_bad_registries(rows, message):
    with pytest.raises(ValueError, match=message):
        Participants(rows)


# -- duplicate screening -----------------------------------------------------------------------
def test_duplicate_upload_is_rejected_within_and_across_batches():
    c = Clearer(ClearingSettings(), P)
    day0 = recs(3, device_serial=[0, 1, 1], tx_id=[1, 2, 2], card=[5, 6, 6])
    r0 = c.clear_batch(0, day0)
    assert r0.reason.tolist() == [R_NONE, R_NONE, R_DUPLICATE_UPLOAD]
    day1 = recs(2, device_serial=[1, 2], tx_id=[2, 3], card=[6, 7], timestamp_s=[86_400, 86_460])
    r1 = c.clear_batch(1, day1)
    assert r1.reason.tolist() == [R_DUPLICATE_UPLOAD, R_NONE]
    assert r1.status.tolist() == [REJECTED, CLEARED]
    assert r1.fee_fen.tolist() == [0, 7]
    assert r1.batches[0].rejected_duplicate_upload == 1 and r1.batches[0].gross_fen == 200
    assert r1.cleared_tx_id.tolist() == [3]


def test_seen_serials_fill_holes_and_stay_compact():
    seen = SeenSerials(max_hole_run=1_000)
    dev = np.array([4, 4, 4, 9])
    assert seen.check_and_add(dev, np.array([10, 11, 14, 0])).tolist() == [False] * 4
    # Serials 0-9 (before its first upload: held back on the way) and 12-13 of device 4 are
    # still missing.
    assert seen.holes.size == 12
    assert seen.check_and_add(np.array([4] * 10), np.arange(10)).tolist() == [False] * 10
    assert seen.holes.size == 2
    assert seen.check_and_add(np.array([4, 4, 4]), np.array([13, 13, 11])).tolist() == [
        False,
        True,
        True,
    ]
    assert seen.check_and_add(np.array([4, 4]), np.array([12, 15])).tolist() == [False, False]
    assert seen.holes.size == 0 and seen.max_serial.tolist() == [15, 0]
    # A jump past max_hole_run is a counter reset, not 5,000 missing records.
    assert seen.check_and_add(np.array([9]), np.array([5_000])).tolist() == [False]
    assert seen.holes.size == 0
    assert seen.check_and_add(np.array([9, 9]), np.array([5_000, 0])).tolist() == [True, True]


def test_duplicate_deduction_is_rejected_and_refunded():
    c = Clearer(ClearingSettings(retap_lock_s=2), P)
    r = c.clear_batch(
        0,
        recs(
            5,
            tx_id=[10, 11, 12, 13, 14],
            card=[5, 5, 5, 6, 5],
            device=[3, 3, 3, 3, 4],
            device_serial=[0, 1, 2, 3, 0],
            timestamp_s=[100, 101, 110, 101, 101],
            amount_fen=[150, 150, 150, 150, 150],
        ),
    )
    # Only tx 11 repeats tx 10 (same card, same device, 1 s later); other card/device/time differ.
    assert r.reason.tolist() == [R_NONE, R_DUPLICATE_DEDUCTION, R_NONE, R_NONE, R_NONE]
    ref = r.refunds
    assert (ref.card.tolist(), ref.amount_fen.tolist()) == ([5], [150])
    assert (ref.source_tx_id.tolist(), ref.first_tx_id.tolist()) == ([11], [10])
    assert r.batches[0].refund_fen == 150 and r.batches[0].rejected_duplicate_deduction == 1


def test_duplicate_deduction_across_the_batch_boundary_and_free_rides_are_ignored():
    c = Clearer(ClearingSettings(), P)
    c.clear_batch(0, recs(1, card=[5], timestamp_s=[86_399], tx_id=[1]))
    r = c.clear_batch(
        1,
        recs(
            2,
            card=[5, 7],
            tx_id=[2, 3],
            device_serial=[1, 2],
            timestamp_s=[86_400, 86_401],
            amount_fen=[200, 0],
        ),
    )
    assert r.reason.tolist() == [R_DUPLICATE_DEDUCTION, R_NONE]
    assert r.refunds.first_tx_id.tolist() == [1]
    free = c.clear_batch(
        2,
        recs(2, card=[8, 8], tx_id=[4, 5], device_serial=[3, 4], timestamp_s=[9, 9], amount_fen=0),
    )
    assert free.reason.tolist() == [R_NONE, R_NONE] and len(free.refunds) == 0


@pytest.mark.parametrize(
    ("card_base", "last_ts"),
    [(0, 500), (3_100_000_000_000_000, 500), (3_100_000_000_000_000, 1 << 40)],
)
def test_duplicate_deduction_whatever_the_card_numbers(card_base, last_ts):
    """Small ids, 16-digit card numbers, and a time span too wide for one sort key."""
    c = Clearer(ClearingSettings(), P)
    r = c.clear_batch(
        0,
        recs(
            4,
            card=np.array([5, 6, 5, 5]) + card_base,
            device=[1 << 30] * 4,
            timestamp_s=[100, 100, 102, last_ts],
        ),
    )
    assert r.reason.tolist() == [R_NONE, R_NONE, R_DUPLICATE_DEDUCTION, R_NONE]
    assert r.refunds.card.tolist() == [card_base + 5] and r.refunds.first_tx_id.tolist() == [0]


def test_declined_records_are_rejected_without_fee_or_gross():
    c = Clearer(ClearingSettings(), P)
    r = c.clear_batch(0, recs(2, declined=[True, False]))
    assert r.reason.tolist() == [R_DECLINED, R_NONE]
    assert r.fee_fen.tolist() == [0, 7]
    assert r.pairs.gross_fen.tolist() == [200]
    assert r.batches[0].rejected_declined == 1


# -- fees, pairs, settlement -------------------------------------------------------------------
def test_fees_are_charged_on_the_list_fare_rounded_half_up():
    c = Clearer(ClearingSettings(), P)
    r = c.clear_batch(
        0,
        recs(
            5,
            amount_fen=[100, 300, 300, 0, 50],
            list_fare_fen=[200, 300, 300, 200, 200],
            mode=[BUS, METRO_MODE, METRO_MODE, BUS, BUS],
            medium_class=[MC_CARD, MC_QR, MC_CARD, MC_CARD, MC_QR],
            issuer=[NTCARD, ALIPAY, NTCARD, NTCARD, ALIPAY],
            acquirer=[URBAN, METRO, METRO, URBAN, URBAN],
        ),
    )
    # 3.5% of 200 = 7 (student paid 100); 2.5% of 300 = 7.5 -> 8; 3.5% of 300 = 10.5 -> 11;
    # free ride: no fee; QR bus 3.5% of 200 = 7.
    assert r.fee_fen.tolist() == [7, 8, 11, 0, 7]
    pairs = {
        (P.ids[i], P.ids[a]): (n, g, f, net)
        for i, a, n, g, f, net in zip(
            r.pairs.issuer,
            r.pairs.acquirer,
            r.pairs.records,
            r.pairs.gross_fen,
            r.pairs.fee_fen,
            r.pairs.net_fen,
            strict=True,
        )
    }
    assert pairs == {
        ("NTCARD", "NT_BUS_URBAN"): (2, 100, 7, 93),
        ("NTCARD", "NT_METRO"): (1, 300, 11, 289),
        ("QR_ALIPAY", "NT_BUS_URBAN"): (1, 50, 7, 43),
        ("QR_ALIPAY", "NT_METRO"): (1, 300, 8, 292),
    }


def test_settlement_is_t_plus_lag_and_positions_net_to_zero():
    for lag in (1, 2):
        c = Clearer(ClearingSettings(settlement_lag_days=lag), P)
        r = c.clear_batch(
            3,
            recs(
                3,
                issuer=[NTCARD, SZCARD, NTCARD],
                acquirer=[URBAN, URBAN, SZ_BUS],
                device=[0, 0, 1],
            ),
        )
        assert r.settle_day == 3 + lag and r.positions.settle_day == 3 + lag
        assert {b.settle_day for b in r.batches} == {3 + lag}
        pos = dict(
            zip((P.ids[p] for p in r.positions.participant), r.positions.position_fen, strict=True)
        )
        assert pos == {
            "NTCARD": -400,
            "SZCARD": -200,
            "NT_BUS_URBAN": 400 - 14,
            "SZ_BUS": 200 - 7,
            # Each acquirer's exchange clears its records and takes their fees (transit fees of
            # the nodes further on are added by the clearing network).
            "NT_EXCHANGE": 14,
            "SZ_EXCHANGE": 7,
        }
        check_positions(
            np.full(r.positions.participant.size, r.settle_day),
            r.positions.participant,
            r.positions.position_fen,
        )


def test_empty_batch_and_bad_inputs():
    c = Clearer(ClearingSettings(), P)
    r = c.clear_batch(0, recs(0))
    assert r.batches == () and r.positions.participant.size == 0 and r.status.size == 0
    with pytest.raises(ValueError, match="acquirer codes"):
        c.clear_batch(1, recs(1, acquirer=[len(P)]))
    with pytest.raises(ValueError, match="device serials"):
        c.clear_batch(1, recs(1, device_serial=[-1]))
    with pytest.raises(ValueError, match="comes after"):
        c.clear_batch(-1, recs(1))
    with pytest.raises(TypeError, match="amount_fen must be integers"):
        recs(1, amount_fen=[1.5])
    with pytest.raises(ValueError, match="card has shape"):
        replace(recs(2), card=np.array([1]))


# -- hash chain --------------------------------------------------------------------------------
def _two_days(amount_day0: int) -> Clearer:
    c = Clearer(ClearingSettings(), P)
    c.clear_batch(0, recs(3, acquirer=[URBAN, METRO, URBAN], amount_fen=[amount_day0, 200, 200]))
    c.clear_batch(1, recs(2, device_serial=[3, 4], tx_id=[7, 8], acquirer=[URBAN, METRO]))
    return c


def test_hash_chain_is_reproducible_and_changes_when_any_batch_changes():
    a, b, changed = _two_days(200), _two_days(200), _two_days(199)
    assert [x.hash for x in a.log] == [x.hash for x in b.log]
    assert len(a.log) == 4 and a.log[0].prev_hash == GENESIS_HASH
    assert all(a.log[i].prev_hash == a.log[i - 1].hash for i in range(1, 4))
    # The first batch (urban, day 0) holds the changed record: it and every later hash differ.
    assert all(x.hash != y.hash for x, y in zip(a.log, changed.log, strict=True))
    verify_chain(a.log)


def test_verify_chain_catches_an_edited_or_dropped_batch():
    log = _two_days(200).log
    edited = [log[0], replace(log[1], gross_fen=log[1].gross_fen + 1), *log[2:]]
    with pytest.raises(InvariantViolation, match="hash_chain.*batch 1 \\(day 0"):
        verify_chain(edited)
    with pytest.raises(InvariantViolation, match="batch 2"):
        verify_chain([log[0], *log[2:]])


def test_records_digest_can_be_recomputed_from_the_records():
    rec = recs(3, device=[2, 1, 2], device_serial=[5, 9, 4], acquirer=[URBAN, METRO, URBAN])
    c = Clearer(ClearingSettings(), P)
    r = c.clear_batch(0, rec)
    urban = next(b for b in r.batches if b.acquirer == "NT_BUS_URBAN")
    rows = np.array([2, 0])  # urban's cleared records in (device, serial) order
    assert records_digest(rec, rows) == urban.records_digest
    cols = batch_columns(c.log)
    assert cols["acquirer"].tolist() == ["NT_BUS_URBAN", "NT_METRO"]
    assert cols["submitted"].tolist() == [2, 1] and cols["gross_fen"].dtype.kind == "i"


# -- tap status and postings -------------------------------------------------------------------
def test_fold_tap_status_keeps_a_clear_when_a_copy_is_rejected():
    taps = np.array([30, 10, 20, 40])
    status = np.zeros(4, np.uint8)
    out = fold_tap_status(
        taps,
        status,
        np.array([10, 20, 10, 30]),
        np.array([CLEARED, REJECTED, REJECTED, CLEARED], np.uint8),
    )
    assert out.tolist() == [CLEARED, CLEARED, REJECTED, PENDING]
    with pytest.raises(ValueError, match="not in the tap table"):
        fold_tap_status(taps, status, np.array([99]), np.array([CLEARED]))


def test_postings_of_one_day_cycle_balance_every_account():
    led = Ledger()
    s = ClearingSettings()
    post_flow(led, 0, "deposit", np.arange(len(P)), initial_deposits_fen(s, P), P)
    post_flow(led, 0, "topup", np.array([NTCARD, NTCARD]), np.array([1_000, 500]), P)
    rec = recs(3, medium_class=[MC_CARD, MC_CARD, MC_QR], issuer=[NTCARD, NTCARD, ALIPAY])
    rec = replace(rec, timestamp_s=np.array([0, 1, 0]), card=np.array([5, 5, 9]))
    post_fares(led, 0, rec.issuer, rec.medium_class, rec.amount_fen, P)
    c = Clearer(s, P)
    r = c.clear_batch(0, rec)
    assert len(r.refunds) == 1
    post_clearing(led, 0, r.pairs, P)
    post_refunds(led, 1, r.refunds, P)
    post_settlement(led, 1, r.positions, P)
    led.check()
    bal = led.balances()
    assert bal["float:NTCARD"] == -(1_500 - 400 + 200)  # two fares taken, one refunded
    assert bal["unsettled:NTCARD"] == 0 and bal["unsettled:QR_ALIPAY"] == 0
    assert all(v == 0 for k, v in bal.items() if k.startswith("settle:"))
    assert bal["revenue:NT_BUS_URBAN"] == -400 and bal["fees_paid:NT_BUS_URBAN"] == 14
    assert bal["fees:NT_EXCHANGE"] == -14 and bal["bank:NT_EXCHANGE"] == 14
    assert bal["deposit:NTCARD"] == s.settlement_deposit_fen - 200
    assert deposit_shortfalls(led, P) == {}
    with pytest.raises(ValueError, match=r"settle on day 1, not before \(day 0\)"):
        post_settlement(led, 0, r.positions, P)  # late is possible (a deferral), early not


def test_deposit_overrides_and_shortfalls():
    s = ClearingSettings(settlement_deposit_fen=1_000, deposit_overrides_fen={"QR_ALIPAY": 5})
    dep = initial_deposits_fen(s, P)
    assert dep[NTCARD] == 1_000 and dep[ALIPAY] == 5 and dep[URBAN] == 0
    led = Ledger()
    led.post(0, "settle:QR_ALIPAY", "deposit:QR_ALIPAY", 30, "settlement")
    assert deposit_shortfalls(led, P) == {"QR_ALIPAY": (30, 0)}
    # Overdrawn on one day, made good later: still a shortfall (by the postings' own dates,
    # the deposit did not hold the money that day), the worst day's.
    led = Ledger()
    led.post(0, "deposit:QR_ALIPAY", "bank:QR_ALIPAY", 100, "deposit")
    led.post(3, "deposit:QR_ALIPAY", "bank:QR_ALIPAY", 500, "deposit")
    led.post(2, "settle:QR_ALIPAY", "deposit:QR_ALIPAY", 160, "settlement")  # posted back-dated
    led.post(1, "settle:QR_ALIPAY", "deposit:QR_ALIPAY", 20, "settlement")
    assert led.balance("deposit:QR_ALIPAY") == 420
    assert led.lowest_daily_balance("deposit:QR_ALIPAY") == (-80, 2)  # end of day 2: 100-20-160
    assert deposit_shortfalls(led, P) == {"QR_ALIPAY": (80, 2)}
    assert led.lowest_daily_balance("deposit:NTCARD") == (0, -1)  # never posted to
    with pytest.raises(ValueError, match="not an issuer"):
        initial_deposits_fen(ClearingSettings(deposit_overrides_fen={"NT_METRO": 1}), P)


def test_card_balance_changed_without_a_posting_is_caught():
    led = Ledger()
    post_flow(led, 0, "opening_balance", np.array([NTCARD]), np.array([1_000]), P)
    post_flow(led, 0, "topup", np.array([NTCARD]), np.array([300]), P)
    check_card_balances(led, 0, "NTCARD", 0, 1_300)
    with pytest.raises(InvariantViolation) as exc:
        check_card_balances(led, 0, "NTCARD", 0, 1_325)
    assert exc.value.name == "conservation" and exc.value.delta_fen == 25
    assert "day 0, issuer NTCARD" in str(exc.value)
    with pytest.raises(InvariantViolation, match="float_equals_card_balances.*-50 fen"):
        check_card_balances(led, 0, "NTCARD", -50, 1_250)


# -- property tests: small card economies run end to end ---------------------------------------
# Devices 0-1: urban bus, 2: metro, 3: Suzhou bus (cross-city, cleared at the provincial node).
DEVICE_ACQ = np.array([URBAN, URBAN, METRO, SZ_BUS])
DEVICE_MODE = np.array([BUS, BUS, METRO_MODE, BUS])

tap = st.tuples(
    st.integers(0, 5),  # card
    st.integers(0, 3),  # device
    st.integers(0, 40),  # second of the day: a small range makes re-taps collide
    st.sampled_from([0, 100, 200, 300]),  # charged fare
    st.booleans(),  # QR instead of card
    st.booleans(),  # validator double-charges it 1 s later
)
day_plan = st.fixed_dictionaries(
    {
        "taps": st.lists(tap, max_size=12),
        "topups": st.lists(st.tuples(st.integers(0, 5), st.integers(1, 2_000)), max_size=3),
        "cash_refund_cards": st.lists(st.integers(0, 5), max_size=1),
        "offline_devices": st.sets(st.integers(0, 3), max_size=2),
        "reupload": st.lists(st.integers(0, 10**6), max_size=3),
    }
)
economies = st.tuples(
    st.lists(st.integers(0, 800), min_size=6, max_size=6),
    st.lists(day_plan, min_size=1, max_size=4),
)


class _Economy:
    """A tiny card economy that drives the clearing services and ledger like the engine will."""

    def __init__(self, opening: list[int]) -> None:
        self.led = Ledger()
        self.clearer = Clearer(ClearingSettings(retap_lock_s=2), P)
        self.balance = np.array(opening, dtype=np.int64)
        self.serial = np.zeros(len(DEVICE_ACQ), dtype=np.int64)
        self.taps: list[tuple] = []  # tx, amount, charged; index = tx id
        self.buffer: list[tuple] = []  # records waiting in validators
        self.uploaded: list[tuple] = []
        self.status = np.zeros(0, np.uint8)
        self.members: list[tuple[np.ndarray, np.ndarray]] = []
        self.positions: list = []
        self.refunds_due: list = []
        self.doubles: list[int] = []  # tx ids of taps a validator charged twice
        post_flow(self.led, 0, "opening_balance", np.zeros(6, int) + NTCARD, self.balance, P)
        deposits = initial_deposits_fen(ClearingSettings(), P)
        post_flow(self.led, 0, "deposit", np.arange(len(P)), deposits, P)

    def _record(self, day: int, card: int, dev: int, second: int, fare: int, qr: bool) -> None:
        """One tap: QR always charges; a card is declined if its balance is short (no overdraw)."""
        tx = len(self.taps)
        charged = qr or self.balance[card] >= fare
        if charged and not qr:
            self.balance[card] -= fare
        token = card + (1_100 if qr else 100)
        issuer = ALIPAY if qr else NTCARD
        ts = day * 86_400 + second
        row = (tx, token, dev, int(self.serial[dev]), ts, fare, fare + 50, issuer, qr, not charged)
        self.serial[dev] += 1
        self.taps.append((tx, fare if charged else 0, qr))
        self.buffer.append(row)

    def run_day(self, day: int, plan: dict) -> None:
        before = int(self.balance.sum()) if day else 0  # opening balances are posted on day 0
        n_taps = len(self.taps)
        for refunds in self.refunds_due:  # yesterday's refund orders are executed today
            card = refunds.medium_class == MC_CARD
            np.add.at(self.balance, refunds.card[card] - 100, refunds.amount_fen[card])
            post_refunds(self.led, day, refunds, P)
        self.refunds_due = []
        for card, amount in plan["topups"]:
            self.balance[card] += amount
            post_flow(self.led, day, "topup", np.array([NTCARD]), np.array([amount]), P)
        for card, dev, second, fare, qr, double in sorted(plan["taps"], key=lambda t: t[2]):
            self._record(day, card, dev, second, fare, qr)
            if double:
                self.doubles.append(len(self.taps) - 1)
                self._record(day, card, dev, second + 1, fare, qr)
        new = self.taps[n_taps:]
        post_fares(
            self.led,
            day,
            np.array([ALIPAY if qr else NTCARD for _, _, qr in new], dtype=np.int64),
            np.array([MC_QR if qr else MC_CARD for _, _, qr in new], dtype=np.int64),
            np.array([amount for _, amount, _ in new], dtype=np.int64),
            P,
        )
        for card in plan["cash_refund_cards"]:
            post_flow(self.led, day, "cash_refund", np.array([NTCARD]), self.balance[[card]], P)
            self.balance[card] = 0
        self.last_day_balances = (day, before, int(self.balance.sum()))
        check_card_balances(self.led, day, "NTCARD", before, int(self.balance.sum()))
        self._clear(day, plan)

    def _clear(self, day: int, plan: dict) -> None:
        offline = plan["offline_devices"]
        upload = [r for r in self.buffer if r[2] not in offline]
        self.buffer = [r for r in self.buffer if r[2] in offline]
        if self.uploaded:  # validators re-send some old records
            upload += [self.uploaded[k % len(self.uploaded)] for k in plan["reupload"]]
        self.uploaded += upload
        cols = list(zip(*upload, strict=True)) if upload else [[]] * 10
        tx, card, dev, serial, ts, fare, list_fare, issuer, qr, declined = (
            np.array(c) for c in cols
        )
        rec = UploadedRecords(
            tx_id=tx,
            card=card,
            card_counter=np.zeros(tx.size, int),
            device=dev,
            device_serial=serial,
            timestamp_s=ts,
            amount_fen=fare,
            list_fare_fen=list_fare,
            issuer=issuer,
            acquirer=DEVICE_ACQ[dev.astype(int)],
            mode=DEVICE_MODE[dev.astype(int)],
            medium_class=np.where(qr.astype(bool), MC_QR, MC_CARD),
            declined=declined,
        )
        r = self.clearer.clear_batch(day, rec)
        self.status = np.concatenate(
            [self.status, np.zeros(len(self.taps) - self.status.size, np.uint8)]
        )
        self.status = fold_tap_status(np.arange(len(self.taps)), self.status, r.tx_id, r.status)
        self.members.append((r.cleared_tx_id, r.cleared_batch_id))
        post_clearing(self.led, day, r.pairs, P)
        self.positions.append(r.positions)
        self.refunds_due.append(r.refunds)
        self.settle(day)

    def settle(self, day: int) -> None:
        for pos in [p for p in self.positions if p.settle_day == day]:
            post_settlement(self.led, day, pos, P)

    def check_all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tx = np.arange(len(self.taps))
        amount = np.array([a for _, a, _ in self.taps], dtype=np.int64)
        mtx = np.concatenate([m[0] for m in self.members])
        mb = np.concatenate([m[1] for m in self.members])
        check_tap_status(tx, self.status, amount, mtx, mb)
        check_positions(
            np.concatenate([np.full(p.participant.size, p.settle_day) for p in self.positions]),
            np.concatenate([p.participant for p in self.positions]),
            np.concatenate([p.position_fen for p in self.positions]),
            names=P.ids,
        )
        self.led.check()
        verify_chain(self.clearer.log)
        return tx, amount, np.stack([mtx, mb])


@settings(max_examples=60, deadline=None)
@given(economies)
def test_property_random_economies_keep_every_invariant(economy):
    opening, plans = economy
    eco = _Economy(opening)
    for day, plan in enumerate(plans):
        eco.run_day(day, plan)
    last = len(plans)
    quiet = {"taps": [], "topups": [], "cash_refund_cards": [], "reupload": []}
    eco.run_day(last, {**quiet, "offline_devices": {0, 1, 2, 3}})
    eco.settle(last + 1)
    tx, amount, members = eco.check_all()
    # No card was overdrawn (不得透支) and every position has been settled.
    assert eco.balance.min() >= 0
    assert all(v == 0 for k, v in eco.led.balances("settle:").items())
    # Unsettled money is exactly the fares of taps still pending in validators.
    pending = int(amount[eco.status == PENDING].sum())
    unsettled = sum(eco.led.balances("unsettled:").values())
    assert -unsettled == pending
    # Every double charge that reached clearing was rejected, so its fare is refunded.
    for first in eco.doubles:
        if amount[first] > 0 and amount[first + 1] > 0 and eco.status[first + 1] != PENDING:
            assert eco.status[first + 1] == REJECTED


@settings(max_examples=30, deadline=None)
@given(economies, st.integers(1, 10_000))
def test_property_broken_inputs_raise_named_violations(economy, bump):
    opening, plans = economy
    eco = _Economy(opening)
    for day, plan in enumerate(plans):
        eco.run_day(day, plan)
    tx, amount, members = eco.check_all()
    # A card balance changed without a posting: conservation names the amount.
    day, before, after = eco.last_day_balances
    with pytest.raises(InvariantViolation) as exc:
        check_card_balances(eco.led, day, "NTCARD", before, after + bump)
    assert exc.value.name == "conservation" and f"+{bump} fen" in str(exc.value)
    # A cleared tap counted in a second batch.
    if members.shape[1]:
        k = int(members[0, 0])
        doubled = np.concatenate([members, [[k], [10**6]]], axis=1)
        with pytest.raises(InvariantViolation) as exc:
            check_tap_status(tx, eco.status, amount, doubled[0], doubled[1])
        assert exc.value.name == "tap_exactly_once"
        assert exc.value.delta_fen == amount[k] and f"tap tx {k}" in str(exc.value)
    # A settlement position that does not net to zero.
    pos = eco.positions[0]
    if pos.participant.size:
        with pytest.raises(InvariantViolation, match="settlement_positions_zero.*\\+1 fen"):
            check_positions(
                np.full(pos.participant.size, pos.settle_day),
                pos.participant,
                pos.position_fen + np.eye(1, pos.participant.size, dtype=np.int64)[0],
            )
