"""The calibration report: targets against simulated values, tolerances, untargeted metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.api import BadInput, calibrate, load_scenario
from sim.calibration import load_targets

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "data" / "nantong" / "targets_2024.yaml"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal")
    scenario = load_scenario(ROOT / "scenarios" / "small_ci.yaml", days=7)
    return calibrate(scenario, TARGETS, out), out


def test_report_lists_every_target_with_error_and_rule(report):
    rep, out = report
    targets = load_targets(TARGETS)
    names = {(r["group"], r["name"]) for r in rep["targets"]}
    assert {("totals", n) for n in targets["totals"]} <= names
    assert {("spend_by_card_type", n) for n in targets["spend_by_card_type_yuan"]} <= names
    assert {("spend_by_qr_channel", n) for n in targets["spend_by_qr_channel_yuan"]} <= names
    for row in rep["targets"]:
        expected = (row["simulated"] - row["target"]) / row["target"]
        assert row["rel_error"] == pytest.approx(expected)
    # A 7-day run is expanded to the year (and says so); a small population misses the targets.
    assert rep["expansion_factor"] == pytest.approx(366 / 7)
    assert rep["all_required_passed"] is False
    assert set(rep["summary"]) == {"totals", "spend_by_card_type", "spend_by_qr_channel"}
    assert json.loads((out / "calibration.json").read_text("utf-8"))["year"] == 2024
    assert "expanded x52.29" in (out / "calibration.md").read_text("utf-8")


def test_untargeted_metrics_are_shares_that_add_up(report):
    u = report[0]["untargeted"]
    assert 0 < u["elderly_tap_share"] < 1
    for metric in ("cards_sold", "spend", "recharge"):
        split = u[metric]
        assert split["urban_share"] + split["county_share"] == pytest.approx(1)
        assert sum(split["by_region"].values()) == pytest.approx(1)
    away = u["taps_in_other_cities_share_by_home_region"]
    assert set(away) == {"市区", "如东", "海安", "海门", "如皋", "启东"}
    assert all(0 <= v < 0.2 for v in away.values())
    channels = u["topup_channel_split"]
    assert channels["outlet"] + channels["online"] + channels["at_card_sale"] == pytest.approx(1)
    assert (
        0
        < u["weekly_rider_share"]["of_cards_in_stock"]
        < u["weekly_rider_share"]["of_cards_in_use"]
    )


def test_bad_targets_file_is_bad_input(tmp_path):
    bad = tmp_path / "targets.yaml"
    bad.write_text("year: 2024\ntotals: {transactions: -5}\n", encoding="utf-8")
    scenario = load_scenario(ROOT / "scenarios" / "small_ci.yaml", days=2)
    with pytest.raises(BadInput, match="missing keys"):
        calibrate(scenario, bad, tmp_path / "out")
    cmd = [
        sys.executable,
        "run_scenario.py",
        "calibrate",
        "scenarios/small_ci.yaml",
        "--days",
        "2",
        "--targets",
        str(bad),
        "--out",
        str(tmp_path / "o2"),
        "--quiet",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "targets.yaml" in result.stderr
