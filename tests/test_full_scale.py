"""Full-scale checks (marked slow; `make test-slow`): determinism of the default scenario."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sim.api import load_scenario, run

ROOT = Path(__file__).resolve().parent.parent


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


@pytest.mark.slow
def test_full_scale_week_is_byte_identical_across_runs(tmp_path):
    scenario = load_scenario(ROOT / "scenarios" / "nantong_2024.yaml", days=7)
    first = run(scenario, tmp_path / "a")
    run(scenario, tmp_path / "b")
    assert len(first.world.population) >= 1_701_300
    assert first.taps > 1_000_000
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(a) >= 9 * 7 - 7
    assert a == b


@pytest.mark.slow
def test_metro_line_outage_scenario_at_full_scale(tmp_path):
    from output_frames import read_frame

    scenario = load_scenario(ROOT / "scenarios" / "incidents" / "metro_line_outage.yaml")
    summary = run(scenario, tmp_path / "m1")
    assert summary.totals["cleared"] > 0.99 * summary.taps
    tx = read_frame(tmp_path / "m1", "transactions")
    ts = tx["event_timestamp"]
    during = (ts >= "2024-01-02 08:00") & (ts < "2024-01-02 10:00")
    assert not (during & (tx["route_id"] == "M1")).any()
    hit = tx[tx["incident_id"] == "M1-down-0102"]
    assert len(hit) > 100 and set(hit["mode"]) == {"bus"}


@pytest.mark.slow
def test_every_policy_overlay_runs_and_moves_money_the_plausible_way():
    from sim.api import compare

    base = load_scenario(ROOT / "scenarios" / "nantong_2024.yaml", days=2)
    policies = sorted((ROOT / "scenarios" / "policies").glob("*.yaml"))
    assert len(policies) >= 10
    variants = [load_scenario(p, days=2) for p in policies]
    report = compare(base, variants, replications=1)

    def diff(policy: str, measure: str) -> float:
        return report["variants"][policy][measure]["difference"]["mean"]

    assert diff("fare_rise_10pct", "fare_revenue_fen") > 0
    assert diff("student_free", "concession_cost_fen.card_type.student") > 0
    assert diff("no_love_discount", "concession_cost_fen.card_type.love") < 0
    assert diff("elderly_offpeak", "concession_cost_fen.card_type.longevity") < 0
    assert diff("transfer_90min", "fare_revenue_fen") <= 0
    assert diff("monthly_cap", "fare_revenue_fen") <= 0
    assert (
        diff("free_from_60", "concession_cost_fen")
        > 0
        > diff("free_from_70", "concession_cost_fen")
    )
    assert diff("qr_concessions", "concession_cost_fen.medium.qr_alipay") > 0
    assert diff("visitors_same_city", "concession_cost_fen.region.visitors") > 0


@pytest.mark.slow
def test_the_full_year_meets_every_published_target(tmp_path):
    """The calibration from a clean clone: the whole of 2024 at full scale against every target
    in data/nantong/targets_2024.yaml, the 29.21 M elderly-card transactions among them."""
    from sim.api import calibrate

    targets = ROOT / "data" / "nantong" / "targets_2024.yaml"
    report = calibrate(load_scenario(ROOT / "scenarios" / "nantong_2024.yaml"), targets, tmp_path)
    missed = [(r["name"], r["rel_error"]) for r in report["targets"] if not r["passed"]]
    assert report["all_required_passed"], missed
    elderly = next(r for r in report["targets"] if r["name"] == "elderly_card_transactions")
    assert abs(elderly["rel_error"]) <= 0.05
