"""The policy lab's compare (sim/lab.py, sim.api.compare): common random numbers, paired
differences with confidence intervals, effects that point the plausible way, same seeds give the
same numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from lab_cases import SMALL, small_offpeak_overlay

from sim.api import build, compare, load_scenario, run
from sim.behaviour import NO_RESPONSE
from sim.events import RunFinished, TapsFinal
from sim.lab import (
    FAIRNESS_DIMENSIONS,
    HOUR_NAMES,
    OutcomeCollector,
    fairness,
    paired_difference,
    proportional_shares,
    trips_moved,
    unpaired_difference,
)
from sim.lab_report import count_text, hour_ranges, money_text, summary
from sim.ledger import account


def test_paired_difference_and_its_interval():
    d = paired_difference([10, 20, 30, 40], [12, 21, 33, 44])
    assert d["mean"] == pytest.approx(2.5)
    # sd of (2, 1, 3, 4) = 1.29; t(0.975, 3) = 3.182; half width = 3.182 * 1.29 / 2 = 2.054
    assert d["ci_high"] - d["mean"] == pytest.approx(2.054, abs=1e-3)
    assert math.isnan(paired_difference([1], [2])["ci_low"])


def test_unpaired_difference_is_welchs_interval():
    d = unpaired_difference([10, 20, 30, 40], [12, 21, 33, 44])
    assert d["mean"] == pytest.approx(2.5)
    # scipy's Welch test on the same samples gives the same interval
    from scipy import stats

    ci = stats.ttest_ind([12, 21, 33, 44], [10, 20, 30, 40], equal_var=False).confidence_interval()
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert unpaired_difference([5, 5], [7, 7]) == {"mean": 2, "ci_low": 2, "ci_high": 2, "n": 2}


@pytest.fixture(scope="module")
def offpeak_small(tmp_path_factory):
    """The elderly off-peak policy on the small scenario (an overlay of small_ci), riders
    responding as the scenario says (sim.behaviour.scenario_response)."""
    root = tmp_path_factory.mktemp("lab")
    base = load_scenario(SMALL, days=5)
    variant = load_scenario(small_offpeak_overlay(root), days=5)
    report = compare(base, [variant], replications=3, out_dir=root / "report")
    return root, base, variant, report


def test_elderly_offpeak_costs_less_with_a_confidence_interval(offpeak_small):
    root, _, _, report = offpeak_small
    rows = report["variants"]["small_offpeak"]
    cost = rows["concession_cost_fen"]["difference"]
    assert cost["mean"] < 0 and cost["ci_high"] < 0  # fares foregone fall, significantly
    assert rows["fare_revenue_fen"]["difference"]["mean"] > 0
    # The off-peak rule changes nothing on non-elderly cards.
    assert rows["concession_cost_fen.card_type.ordinary"]["difference"]["mean"] == 0
    seeds = [20240101, 20240102, 20240103]
    assert report["seeds"] == {"small_ci": seeds, "small_offpeak": seeds}
    assert report["pairing"] == "common random numbers"
    md = (root / "report" / "compare.md").read_text(encoding="utf-8")
    assert "small_offpeak" in md and "concession_cost_fen" in md


def test_same_seeds_give_the_same_numbers(offpeak_small, tmp_path):
    root, base, variant, report = offpeak_small
    again = compare(base, [variant], replications=3, out_dir=tmp_path)
    assert again == report
    first = (root / "report" / "compare.json").read_bytes()
    assert (tmp_path / "compare.json").read_bytes() == first
    assert json.loads(first)["replications"] == 3


def test_common_random_numbers_narrow_the_interval(offpeak_small):
    """The same compare with independent seeds gives wider intervals at the same N: what the
    pairing buys (the full-scale figures are in bench/crn.py)."""
    _, base, variant, paired = offpeak_small
    independent = compare(base, [variant], replications=3, independent_seeds=True)
    assert independent["pairing"] == "independent seeds"
    assert independent["seeds"]["small_offpeak"] == [20240104, 20240105, 20240106]

    def width(report, measure):
        d = report["variants"]["small_offpeak"][measure]["difference"]
        return d["ci_high"] - d["ci_low"]

    for measure in ("taps", "concession_cost_fen", "fare_revenue_fen"):
        assert width(paired, measure) < width(independent, measure), measure


def _fairness_means(revenue: dict[str, int], riders: dict[str, int], trips: int = 100) -> dict:
    means = {}
    for dim in FAIRNESS_DIMENSIONS:
        for g in revenue:
            means[f"riders.{dim}.{g}"] = riders[g]
            means[f"fare_revenue_fen.{dim}.{g}"] = revenue[g]
            means[f"fare_transactions.{dim}.{g}"] = trips
    return means


def test_fairness_flags_a_disproportionate_share_both_ways():
    riders = {"a": 50, "b": 50}
    base = _fairness_means({"a": 1000, "b": 1000}, riders)
    # A benefit all to group a: b's share (0%) is far below its share of riders (50%).
    cut = fairness(base, _fairness_means({"a": 0, "b": 1000}, riders), threshold=0.2)["age_band"]
    assert [(r["group"], r["benefit_share"], r["flag"]) for r in cut] == [
        ("a", 1.0, ""),
        ("b", 0.0, "small share of the benefit"),
    ]
    assert cut[0]["avg_fare_before_fen"] == 10 and cut[0]["avg_fare_after_fen"] == 0
    # A rise paid 70/30 by equal groups: a bears 70% > 1.2 x 50%; at a 50% threshold nobody.
    rise = _fairness_means({"a": 1700, "b": 1300}, riders)
    flagged = fairness(base, rise, threshold=0.2)["medium"]
    assert [r["flag"] for r in flagged] == ["large share of the increase", ""]
    assert [r["flag"] for r in fairness(base, rise, threshold=0.5)["medium"]] == ["", ""]


def test_elderly_offpeak_fairness_names_who_pays(offpeak_small):
    """Taking free peak rides from 长寿卡 holders is a fare increase borne by them (and by the
    elderly age bands), not by ordinary cards."""
    root, _, _, report = offpeak_small
    section = report["fairness"]["small_offpeak"]
    by_type = {r["group"]: r for r in section["card_type"]}
    assert by_type["longevity"]["benefit_fen"] < 0
    assert by_type["longevity"]["flag"] == "large share of the increase"
    assert by_type["longevity"]["avg_fare_after_fen"] > by_type["longevity"]["avg_fare_before_fen"]
    assert by_type["ordinary"]["benefit_fen"] == 0 and by_type["ordinary"]["flag"] == ""
    bands = {r["group"]: r for r in section["age_band"]}
    assert bands["18-59"]["flag"] == "" and bands["70+"]["benefit_fen"] < 0
    assert sum(r["rider_share"] for r in section["region"]) == pytest.approx(1)
    md = (root / "report" / "compare.md").read_text(encoding="utf-8")
    assert "Who gains and who pays" in md and "large share of the increase" in md


def test_plain_language_summary_in_english_and_chinese_comes_from_the_numbers(offpeak_small):
    _, _, _, report = offpeak_small
    revenue = report["variants"]["small_offpeak"]["fare_revenue_fen"]["difference"]["mean"]
    en = summary(report, "small_offpeak", "en")
    zh = summary(report, "small_offpeak", "zh")
    assert f"fare revenue rises by {money_text(abs(revenue), 'en')}" in en
    assert f"票款收入增加{money_text(abs(revenue), 'zh')}" in zh
    assert "card_type longevity (large share of the increase)" in en
    assert "卡种长寿卡（涨价负担偏重）" in zh and "年龄段70+岁" in zh
    # a change whose interval holds zero is called so
    trips = report["variants"]["small_offpeak"]["fare_transactions"]["difference"]
    unclear = trips["ci_low"] <= 0 <= trips["ci_high"]
    assert ("not distinguishable from no change" in en) == unclear
    assert ("与无变化无法区分" in zh) == unclear


# -- clearing fees, operator income, trips moved between hours ---------------------------------
MONEY_OF_A_CHARGED_TAP = ("clearing_fees_fen", "operator_income_fen", "fares_uncleared_fen")


@pytest.fixture(scope="module")
def one_run():
    """One run of the small scenario: the collector's totals, the run's ledger, the home-city
    acquirers and the clearing fees the records carry themselves (the acquirer's exchange's)."""
    world = build(load_scenario(SMALL, days=5))
    seen = {"acquirers": set(), "record_fees": 0}

    def watch(event):
        if isinstance(event, TapsFinal):
            home = event.taps.city == 0
            seen["acquirers"].update(np.unique(event.taps.acquirer[home]).tolist())
            seen["record_fees"] += int(event.taps.fee_fen[home].sum())
        elif isinstance(event, RunFinished):
            seen["ledger"] = event.ledger

    collector = OutcomeCollector(world)
    run(None, None, world=world, seed=11, subscribers=[collector, watch])
    return collector.finish(), seen, world.participants.ids


def test_fare_revenue_is_fees_plus_operator_income_plus_fares_not_cleared(one_run):
    totals, _, _ = one_run
    revenue = totals["fare_revenue_fen"]
    assert revenue > 0 and totals["clearing_fees_fen"] > 0
    assert sum(totals[m] for m in MONEY_OF_A_CHARGED_TAP) == revenue
    for dim in FAIRNESS_DIMENSIONS:
        groups = [m.split(".")[-1] for m in totals if m.startswith(f"fare_revenue_fen.{dim}.")]
        for g in groups:
            parts = sum(totals[f"{m}.{dim}.{g}"] for m in MONEY_OF_A_CHARGED_TAP)
            assert parts == totals[f"fare_revenue_fen.{dim}.{g}"], (dim, g)
        for m in (*MONEY_OF_A_CHARGED_TAP, "boardings"):
            assert sum(totals[f"{m}.{dim}.{g}"] for g in groups) == totals[m], (m, dim)
        assert all(isinstance(totals[f"{m}.{dim}.{g}"], int) for m in MONEY_OF_A_CHARGED_TAP)


def test_clearing_fees_and_operator_income_are_what_the_ledger_posts(one_run):
    """Every fee on the way, transit fees included (rounded per pair, node and clearing day),
    to the fen: the home acquirers' fees paid and revenue in the run's journal."""
    totals, seen, ids = one_run
    ledger = seen["ledger"]
    fees_paid = sum(ledger.balance(account("fees_paid", ids[a])) for a in seen["acquirers"])
    gross = -sum(ledger.balance(account("revenue", ids[a])) for a in seen["acquirers"])
    assert totals["clearing_fees_fen"] == fees_paid
    assert totals["operator_income_fen"] == gross - fees_paid
    # some records travel to another exchange (一码通行, visitors' cards): transit fees count
    assert fees_paid > seen["record_fees"]


def test_boardings_by_hour_and_group_add_up(one_run):
    totals, _, _ = one_run
    assert sum(totals[f"boardings.hour.{h}"] for h in HOUR_NAMES) == totals["boardings"]
    for dim in FAIRNESS_DIMENSIONS:
        cells = {m: v for m, v in totals.items() if m.startswith(f"boardings.hour_{dim}.")}
        for h in HOUR_NAMES:
            in_hour = sum(v for m, v in cells.items() if m.split(".")[2] == h)
            assert in_hour == totals[f"boardings.hour.{h}"], (dim, h)
        for m in totals:
            if m.startswith(f"boardings.{dim}."):
                g = m.split(".")[-1]
                assert sum(totals[f"boardings.hour_{dim}.{h}.{g}"] for h in HOUR_NAMES) == totals[m]


def test_proportional_shares_are_integers_that_sum_to_the_total():
    assert proportional_shares(10, np.array([1, 1, 1])).tolist() == [4, 3, 3]
    assert proportional_shares(7, np.array([0, 50, 50])).tolist() == [0, 4, 3]
    assert proportional_shares(0, np.array([0, 0])).tolist() == [0, 0]
    parts = proportional_shares(1_234, np.array([333, 0, 1, 9_999, 17]))
    assert parts.sum() == 1_234 and (parts >= 0).all()


def test_trips_moved_counts_trips_that_changed_hour_net_of_the_change_in_total():
    assert trips_moved([10, 10, 0], [4, 10, 6]) == 6  # six trips moved from hour 0 to hour 2
    assert trips_moved([10, 10, 0], [4, 10, 0]) == 0  # six trips given up: none moved
    assert trips_moved([10, 10, 0], [4, 10, 2]) == 2  # six gone from hour 0, two of them moved
    assert trips_moved([10, 10, 0], [10, 10, 5]) == 0  # five new trips
    assert hour_ranges(["07", "08", "17", "18", "21"]) == "07:00-09:00, 17:00-19:00, 21:00-22:00"


def test_a_price_change_alone_moves_no_trip(offpeak_small):
    """Riders who ride what they planned (no response) keep their hours (common random
    numbers: the same trips at the same times); the only change in the hours is peak taps now
    declined on cards that cannot pay, so no hour gains and no trip has moved."""
    _, base, variant, _ = offpeak_small
    report = compare(base, [variant], replications=2, response=NO_RESPONSE)
    section = report["trips_moved"]["small_offpeak"]
    assert section["total"]["mean"] == 0 and section["hours_gaining"] == []
    assert all(r["variant"] <= r["baseline"] for r in section["hours"])
    assert "no trip moves between hours" in summary(report, "small_offpeak", "en")
    assert "没有乘车改到其他时段" in summary(report, "small_offpeak", "zh")


PEAK_HOURS = ("07", "08", "17", "18")  # the overlay's workday peaks, where 65+ rides now cost


def test_elderly_trips_move_out_of_the_workday_peaks(offpeak_small):
    root, _, _, report = offpeak_small
    rows = report["variants"]["small_offpeak"]
    section = report["trips_moved"]["small_offpeak"]
    assert section["total"]["mean"] > 0 and section["total"]["ci_low"] > 0
    longevity = [rows[f"boardings.hour_card_type.{h}.longevity"]["difference"] for h in PEAK_HOURS]
    assert sum(d["mean"] for d in longevity) < 0  # peak-hour longevity boardings fall
    assert longevity[1]["ci_high"] < 0 and "08" in section["hours_losing"]
    for h in PEAK_HOURS:  # the policy prices no other card differently
        assert rows[f"boardings.hour_card_type.{h}.ordinary"]["difference"]["mean"] == 0
    moved = {r["group"]: r["moved"]["mean"] for r in section["by_group"]["card_type"]}
    assert moved["longevity"] > 0 and moved["ordinary"] == 0
    n = section["total"]["mean"]
    assert f"{count_text(n, 'en')} trips move between hours" in summary(
        report, "small_offpeak", "en"
    )
    assert f"{count_text(n, 'zh')}次乘车改到其他时段" in summary(report, "small_offpeak", "zh")
    assert "卡种长寿卡" in summary(report, "small_offpeak", "zh").split("改到其他时段")[1]
    md = (root / "report" / "compare.md").read_text(encoding="utf-8")
    assert "#### Trips moved between hours" in md and "| clearing_fees_fen |" in md
    stored = json.loads((root / "report" / "compare.json").read_text(encoding="utf-8"))
    assert stored["trips_moved"]["small_offpeak"]["total"]["mean"] == section["total"]["mean"]
    assert "operator_income_fen.card_type.longevity" in stored["variants"]["small_offpeak"]


def test_summary_names_the_fees_and_operator_income(offpeak_small):
    _, _, _, report = offpeak_small
    rows = report["variants"]["small_offpeak"]
    income = rows["operator_income_fen"]["difference"]["mean"]
    fees = rows["clearing_fees_fen"]["difference"]["mean"]
    assert income > 0 and fees > 0  # the elderly pay in the peaks: operators and fees gain
    en, zh = summary(report, "small_offpeak", "en"), summary(report, "small_offpeak", "zh")
    assert f"operator income after clearing fees rises by {money_text(income, 'en')}" in en
    assert f"清算手续费增加{money_text(fees, 'zh')}" in zh


@pytest.mark.parametrize("scale", [0.5, 0.3])
def test_a_city_simulated_at_a_scale_counts_with_its_expansion_weight(scale):
    """At scale 0.5 each measured tap and fen stands for two, as in the run's own KPIs; at any
    scale a fare's parts still add up to it, to the fen, in every group."""
    world = build(load_scenario(SMALL, [f"scale={scale}"], days=2))
    seen = {"taps": 0, "fen": 0}

    def watch(event):
        if isinstance(event, TapsFinal):
            t = event.taps
            charged = (t.city == 0) & ~t.declined & (t.device_refused == 0)
            seen["taps"] += int(charged.sum())
            seen["fen"] += int(t.amount_fen[charged].sum())

    collector = OutcomeCollector(world)
    run(None, None, world=world, seed=11, subscribers=[collector, watch])
    totals = collector.finish()
    assert seen["taps"] > 0
    assert totals["taps"] == round(seen["taps"] / scale)
    assert totals["fare_revenue_fen"] == round(seen["fen"] / scale)
    assert all(isinstance(v, int) for v in totals.values())
    for name in (k for k in totals if k.startswith("fare_revenue_fen")):
        rest = name.removeprefix("fare_revenue_fen")
        parts = sum(totals[f"{m}{rest}"] for m in MONEY_OF_A_CHARGED_TAP)
        assert parts == totals[name], name
