"""Shared fixtures: the real Nantong scenario and its world, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.api import build, load_scenario

ROOT = Path(__file__).resolve().parent.parent
NANTONG = ROOT / "scenarios" / "nantong_2024.yaml"


@pytest.fixture(scope="session")
def nantong_scenario():
    """The default scenario, full scale, 7 days."""
    return load_scenario(NANTONG, days=7)


@pytest.fixture(scope="session")
def nantong_world(nantong_scenario):
    """The full-scale world (1.7 M cardholders); tests must not mutate its state columns."""
    return build(nantong_scenario)
