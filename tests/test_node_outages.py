"""Clearing-node outages anywhere in the hierarchy, over random timelines: clearing is delayed
and catches up, nothing is lost and nothing is cleared twice, every node's book sums to zero on
every settlement date, every hash chain verifies (property test on the two-city scenario)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from output_frames import read_frame
from scenario_files import two_city_with_alpha_incidents

from sim.api import load_scenario, run, verify

ROOT = Path(__file__).resolve().parent.parent
TWO_CITY = ROOT / "scenarios" / "two_city.yaml"
DAYS = 4
NODES = ("ALPHA_EXCHANGE", "BETA_EXCHANGE", "REGION_CENTRE")


@pytest.fixture(scope="module")
def calm(tmp_path_factory):
    """The run without outages: what every outage timeline must end with."""
    out = tmp_path_factory.mktemp("calm") / "run"
    return run(load_scenario(TWO_CITY, [f"period.days={DAYS}"]), out)


outage = st.fixed_dictionaries(
    {
        "node": st.sampled_from(NODES),
        "start_h": st.integers(min_value=0, max_value=24 * DAYS - 1),
        "hours": st.integers(min_value=1, max_value=72),
    }
)


def _with_outages(tmp_path: Path, outages: list[dict]) -> Path:
    """The two-city scenario with the outages in alpha's incident timeline."""
    start = dt.datetime(2024, 3, 4)
    incidents = [
        {
            "id": f"down-{k}",
            "kind": "clearing_node_outage",
            "target": o["node"],
            "start": (start + dt.timedelta(hours=o["start_h"])).strftime("%Y-%m-%d %H:%M"),
            "duration_min": 60 * o["hours"],
        }
        for k, o in enumerate(outages)
    ]
    return two_city_with_alpha_incidents(tmp_path, incidents)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(outages=st.lists(outage, min_size=1, max_size=3))
def test_any_outage_timeline_delays_clearing_and_loses_nothing(tmp_path_factory, calm, outages):
    tmp_path = tmp_path_factory.mktemp("outages")
    out = tmp_path / "run"
    summary = run(load_scenario(_with_outages(tmp_path, outages), [f"period.days={DAYS}"]), out)
    # Every record ends as it would without the outages: cleared once, or rejected for the
    # same reasons; nothing is left pending, and the batches hold exactly the cleared records.
    for total in ("cleared", "rejected", "pending", "refund_orders"):
        assert summary.totals.get(total, 0) == calm.totals.get(total, 0), total
    batches = read_frame(out, "clearing_batches")
    assert int(batches.loc[~batches["transit"], "cleared"].sum()) == summary.totals["cleared"]
    tx = read_frame(out, "transactions")
    cleared = tx[tx["status"] == "cleared"]
    assert cleared["transaction_id"].is_unique
    assert (cleared["clearing_batch_id"].notna()).all()
    # Chains, books summing to zero per node and settlement date, money: all from the files.
    assert verify(out) == []
