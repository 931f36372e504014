"""Shared fixtures: the real Nantong scenario and its world, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def scaled_two_city(tmp_path_factory) -> Path:
    """A finished two-city run with beta simulated at 20% (each of its records stands for 5),
    2 days, in a runs folder of its own: a multi-city run with a scaled city, for the tests of
    what reads runs (sim/run_view.py, the dashboard)."""
    out = tmp_path_factory.mktemp("scaled_two_city") / "two_city"
    overrides = ["cities.beta.scale=0.2", "period.days=2"]
    run(load_scenario(ROOT / "scenarios" / "two_city.yaml", overrides), out)
    return out
