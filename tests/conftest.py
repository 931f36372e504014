"""Shared fixtures: the real Nantong scenario and its world, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every test run (and every CLI it starts) uses one fixed privacy key, so pseudonyms, identities
# and check values are the same on every machine and no test writes a key into the home folder.
os.environ["CARDTWIN_PRIVACY_KEY_FILE"] = str(ROOT / "tests" / "data" / "test_privacy.key")

from sim.api import build, load_scenario  # noqa: E402

NANTONG = ROOT / "scenarios" / "nantong_2024.yaml"


@pytest.fixture(scope="session")
def nantong_scenario():
    """The default scenario, full scale, 7 days."""
    return load_scenario(NANTONG, days=7)


@pytest.fixture(scope="session")
def nantong_world(nantong_scenario):
    """The full-scale world (1.7 M cardholders); tests must not mutate its state columns."""
    return build(nantong_scenario)
