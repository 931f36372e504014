"""Shared fixtures: the real Nantong scenario and its world, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# Every test run (and every CLI it starts) uses one fixed privacy key, so pseudonyms, identities
# and check values are the same on every machine and no test writes a key into the home folder.
os.environ["CARDTWIN_PRIVACY_KEY_FILE"] = str(ROOT / "tests" / "data" / "test_privacy.key")

from sim.api import build, load_scenario, run  # noqa: E402

NANTONG = ROOT / "scenarios" / "nantong_2024.yaml"


@pytest.fixture(scope="session")
def nantong_scenario():
    """The default scenario, full scale, 7 days."""
    return load_scenario(NANTONG, days=7)


@pytest.fixture(scope="session")
def nantong_world(nantong_scenario):
    """The full-scale world (1.7 M cardholders); tests must not mutate its state columns."""
    return build(nantong_scenario)


# The incidents of the scaled two-city run below, by city: each city has one of its own, and
# alpha declares an outage of the regional clearing centre, which the loader gives beta too (a
# clearing node is the run's: sim.multi_city.share_node_outages). Short, and away from the 02:00
# cut-off, so the clearing's figures are as they would be without them.
SCALED_TWO_CITY_INCIDENTS = {
    "alpha": [
        {"id": "county-desk-shut", "kind": "outlet_closure", "target": "3",
         "start": "2024-03-04 09:00", "duration_min": 60},
        {"id": "centre-down", "kind": "clearing_node_outage", "target": "REGION_CENTRE",
         "start": "2024-03-04 12:00", "duration_min": 30},
    ],
    "beta": [
        {"id": "alipay-down", "kind": "qr_platform_outage", "target": "qr_alipay",
         "start": "2024-03-05 18:00", "duration_min": 30, "no_card_share": 0.25},
    ],
}  # fmt: skip


@pytest.fixture(scope="session")
def scaled_two_city(tmp_path_factory) -> Path:
    """A finished two-city run with beta simulated at 20% (each of its records stands for 5),
    2 days, each city with incidents (``SCALED_TWO_CITY_INCIDENTS``), in a runs folder of its
    own: a multi-city run with a scaled city, for the tests of what reads runs
    (sim/run_view.py, the dashboard, the brief)."""
    files = tmp_path_factory.mktemp("scaled_two_city_files")
    multi = yaml.safe_load((ROOT / "scenarios" / "two_city.yaml").read_text("utf-8"))
    for city, incidents in SCALED_TWO_CITY_INCIDENTS.items():
        # the shipped city file, with the incidents added (extends: takes an absolute path)
        base = ROOT / "scenarios" / multi["cities"][city]["scenario"]
        text = yaml.safe_dump({"extends": str(base), "incidents": incidents}, allow_unicode=True)
        (files / f"{city}.yaml").write_text(text, "utf-8")
        multi["cities"][city]["scenario"] = f"{city}.yaml"
    scenario = files / "two_city.yaml"
    scenario.write_text(yaml.safe_dump(multi, allow_unicode=True), "utf-8")
    out = tmp_path_factory.mktemp("scaled_two_city") / "two_city"
    run(load_scenario(scenario, ["cities.beta.scale=0.2", "period.days=2"]), out)
    return out
