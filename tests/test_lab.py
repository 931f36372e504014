"""The policy lab's compare (sim/lab.py, sim.api.compare): common random numbers, paired
differences with confidence intervals, effects that point the plausible way, same seeds give the
same numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sim.api import compare, load_scenario
from sim.lab import paired_difference

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
OFFPEAK = ROOT / "scenarios" / "policies" / "elderly_offpeak.yaml"


def test_paired_difference_and_its_interval():
    d = paired_difference([10, 20, 30, 40], [12, 21, 33, 44])
    assert d["mean"] == pytest.approx(2.5)
    # sd of (2, 1, 3, 4) = 1.29; t(0.975, 3) = 3.182; half width = 3.182 * 1.29 / 2 = 2.054
    assert d["ci_high"] - d["mean"] == pytest.approx(2.054, abs=1e-3)
    assert math.isnan(paired_difference([1], [2])["ci_low"])


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
    assert report["seeds"] == [20240101, 20240102, 20240103]
    md = (root / "report" / "compare.md").read_text(encoding="utf-8")
    assert "small_offpeak" in md and "concession_cost_fen" in md


def test_same_seeds_give_the_same_numbers(offpeak_small, tmp_path):
    root, base, variant, report = offpeak_small
    again = compare(base, [variant], replications=3, out_dir=tmp_path)
    assert again == report
    first = (root / "report" / "compare.json").read_bytes()
    assert (tmp_path / "compare.json").read_bytes() == first
    assert json.loads(first)["replications"] == 3
