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


SHIPPED_TARGETS = sorted((ROOT / "data").rglob("targets*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_TARGETS, ids=lambda p: p.name)
def test_every_shipped_targets_file_is_valid(path):
    targets = load_targets(path)
    assert targets["totals"]["transit_spend_yuan"] > 0
    assert set(targets["tolerances"]) == {"totals_rel", "breakdown_rel", "small_share_pp"}


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped targets file with one line changed (``new`` empty: the line removed)."""
    text = TARGETS.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip().startswith(old)]
    assert len(lines) == 1, old
    path = tmp_path / "targets.yaml"
    edited = text.replace(lines[0] + "\n", new + "\n" if new else "")
    path.write_text(edited, encoding="utf-8")
    return path


#: A mistake in a targets file, and the field path and expectation the error must name. Each of
#: these used to pass the old checks and crash the comparison after the whole run.
BAD_TARGETS = {
    "tolerance in words": (
        ("totals_rel:", "  totals_rel: five percent"),
        "tolerances.totals_rel: wrong type; got 'five percent'; expected a valid number",
    ),
    "no transit spend": (
        ("transit_spend_yuan:", ""),
        "totals.transit_spend_yuan: missing required field",
    ),
    "no tolerances": (
        ("small_share_pp:", ""),
        "tolerances.small_share_pp: missing required field",
    ),
    "year as text": (("year:", "year: twenty24"), "year: wrong type; got 'twenty24'"),
    "stock as text": (
        ("teacher:", "  teacher: over 50000"),
        "card_stock.teacher: wrong type; got 'over 50000'; expected a valid number",
    ),
    "card stock misspelt": (
        ("card_stock:", "card_stocks:"),
        "card_stock: missing required field; expected a mapping with keys among total, ordinary",
    ),
    "a card channel among the QR channels": (
        ("qr_unionpay:", "  physical_card: 976038.00"),
        "spend_by_qr_channel_yuan.physical_card.[key]: unknown value",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TARGETS))
def test_a_bad_targets_file_is_bad_input_before_the_run(tmp_path, case):
    (old, new), expected = BAD_TARGETS[case]
    bad = _edited(tmp_path, old, new)
    scenario = load_scenario(ROOT / "scenarios" / "small_ci.yaml", days=2)
    events = []
    with pytest.raises(BadInput) as caught:
        calibrate(scenario, bad, tmp_path / "out", subscribers=[events.append])
    assert f"{bad}:" in str(caught.value) and expected in str(caught.value)
    assert events == []  # refused before the run started
    assert not (tmp_path / "out").exists()


def test_a_bad_targets_file_exits_2_from_the_command_line(tmp_path):
    bad = _edited(tmp_path, "totals_rel:", "  totals_rel: five percent")
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
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{bad}:" in result.stderr and "tolerances.totals_rel" in result.stderr
    assert "expected a valid number" in result.stderr
    assert not (tmp_path / "o2").exists()


def test_a_run_at_a_scale_is_expanded_to_the_whole_city(tmp_path):
    """Nantong simulated at 5% of its cardholders: its figures stand for 20 times as many, so
    the card stock and the year's totals land near the published figures, not at -95%."""
    scenario = load_scenario(ROOT / "scenarios" / "nantong_2024.yaml", ["scale=0.05"], days=2)
    rep = calibrate(scenario, TARGETS, tmp_path / "cal")
    assert rep["scale"] == 0.05
    assert rep["expansion_factor"] == pytest.approx(366 / 2 / 0.05)
    stock = {r["name"]: r for r in rep["card_stock"]}
    assert abs(stock["total"]["rel_error"]) < 0.01
    totals = {r["name"]: r for r in rep["targets"] if r["group"] == "totals"}
    assert abs(totals["transactions"]["rel_error"]) < 0.3
    assert "Simulated at scale 0.05: figures expanded x20.00" in (
        tmp_path / "cal" / "calibration.md"
    ).read_text("utf-8")
