"""The policy lab's compare (sim/lab.py, sim.api.compare): common random numbers, paired
differences with confidence intervals, effects that point the plausible way, same seeds give the
same numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sim.api import compare, load_scenario
from sim.lab import FAIRNESS_DIMENSIONS, fairness, paired_difference, unpaired_difference
from sim.lab_report import summary

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
OFFPEAK = ROOT / "scenarios" / "policies" / "elderly_offpeak.yaml"


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
    """The elderly off-peak policy on the small scenario (an overlay of small_ci)."""
    root = tmp_path_factory.mktemp("lab")
    concessions = OFFPEAK.read_text(encoding="utf-8").split("fares:", 1)[1].split("output:")[0]
    overlay = root / "small_offpeak.yaml"
    overlay.write_text(
        f"extends: {SMALL}\nname: small_offpeak\nfares:{concessions}", encoding="utf-8"
    )
    base = load_scenario(SMALL, days=5)
    variant = load_scenario(overlay, days=5)
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
    yuan = f"{abs(revenue) / 100:,.2f}"
    en = summary(report, "small_offpeak", "en")
    zh = summary(report, "small_offpeak", "zh")
    assert f"fare revenue rises by ¥{yuan}" in en
    assert f"票款收入增加{yuan}元" in zh
    assert "card_type longevity (large share of the increase)" in en
    assert "卡种长寿卡（涨价负担偏重）" in zh and "年龄段70+岁" in zh
    # the trip change is within noise at this size, and the summary says so
    assert "not distinguishable from no change" in en and "与无变化无法区分" in zh
