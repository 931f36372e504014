"""Two cities, one shard each, one clearing hierarchy (scenarios/two_city.yaml).

Cards of city A riding in city B are acquired by B, cleared by B's exchange, passed up to the
regional centre and down to A's exchange, with a fee at each level; every node's book sums to zero
on every settlement date; every node's hash chain verifies from the files; the shards' order does
not change a byte; the money of each city's cards is conserved (checked inside the run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from output_frames import node_logs, parquet_hashes, read_frame

from sim.api import BadInput, build, calibrate, load_scenario, run
from sim.clearing import verify_chain
from sim.scenario import MultiCityScenario

ROOT = Path(__file__).resolve().parent.parent
TWO_CITY = ROOT / "scenarios" / "two_city.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_city")
    scenario = load_scenario(TWO_CITY)
    assert isinstance(scenario, MultiCityScenario)
    worlds = build(scenario)
    forward = run(scenario, root / "forward", world=worlds, shard_order=[0, 1])
    backward = run(scenario, root / "backward", world=worlds, shard_order=[1, 0])
    return root, forward, backward


def test_each_city_is_a_shard_with_its_own_people(runs):
    root, summary, _ = runs
    tx = read_frame(root / "forward", "transactions")
    assert set(tx["city_code"]) == {"9901", "9902"}
    assert set(tx["issuer_id"]) >= {"ALPHA_CARD", "BETA_CARD"}
    # Each city's records sit in their own part of every day's partition.
    parts = {p.name for p in (root / "forward" / "transactions").rglob("*.parquet")}
    assert parts == {"part-0.parquet", "part-1.parquet"}
    assert summary.totals["pending"] == 0 and summary.totals["cleared"] > 0.99 * summary.taps


def test_cards_riding_in_the_other_city_go_up_and_down_the_hierarchy(runs):
    root = runs[0] / "forward"
    tx = read_frame(root, "transactions")
    batches = read_frame(root, "clearing_batches")
    away = tx[(tx["issuer_id"] == "ALPHA_CARD") & (tx["city_code"] == "9902")]
    assert len(away) > 50
    assert set(away["acquirer_id"]) == {"BETA_BUS_CENTRE"}  # acquired by B
    cleared = away[away["status"] == "cleared"]
    by_id = batches.set_index("clearing_batch_id")
    first = by_id.loc[cleared["clearing_batch_id"].astype(np.int64)]
    assert set(first["node_id"]) == {"BETA_EXCHANGE"}  # cleared by B's exchange
    assert not first["transit"].any()
    transit = batches[batches["transit"]]
    # Passed up to the parent, then down to A's exchange; each level logs it and takes a fee.
    up = transit[
        (transit["node_id"] == "REGION_CENTRE") & (transit["acquirer_id"] == "BETA_EXCHANGE")
    ]
    down = transit[
        (transit["node_id"] == "ALPHA_EXCHANGE") & (transit["acquirer_id"] == "REGION_CENTRE")
    ]
    assert len(up) > 0 and len(down) > 0
    assert (up["fee_fen"] > 0).any() and (down["fee_fen"] > 0).any()
    assert int(down["gross_fen"].sum()) == int(cleared["amount_fen"].sum())


def test_every_node_book_sums_to_zero_on_every_settlement_date(runs):
    books = read_frame(runs[0] / "forward", "settlements")
    assert set(books["node_id"]) == {"ALPHA_EXCHANGE", "BETA_EXCHANGE", "REGION_CENTRE"}
    sums = books.groupby(["service_date", "node_id"])["net_position_fen"].sum()
    assert (sums == 0).all()
    # Each node earned fees on some day.
    fees = books[books["node_id"] == books["participant_id"]]
    assert set(fees.loc[fees["net_position_fen"] > 0, "node_id"]) == set(books["node_id"])


def test_every_node_chain_verifies(runs):
    logs = node_logs(runs[0] / "forward")
    assert set(logs) == {"ALPHA_EXCHANGE", "BETA_EXCHANGE", "REGION_CENTRE"}
    for log in logs.values():
        verify_chain(log)


def test_the_shards_order_changes_nothing(runs):
    root, forward, backward = runs
    assert parquet_hashes(root / "forward") == parquet_hashes(root / "backward")
    assert forward.totals == backward.totals


def test_a_city_alone_runs_from_its_own_file():
    summary = run(load_scenario(ROOT / "scenarios" / "two_city" / "alpha.yaml", days=2), None)
    assert summary.taps > 0 and summary.totals["pending"] == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("output.issuer_id: ALPHA_CARD", "also two_city_alpha's card issuer"),
        ("clearing: {settlement_lag_days: 2}", "clearing.settlement_lag_days is 2"),
    ],
)
def test_cities_that_disagree_on_shared_things_are_refused(tmp_path, override, message):
    city = tmp_path / "gamma.yaml"
    key, _, value = override.partition(": ")
    city.write_text(
        f"extends: {ROOT / 'scenarios' / 'two_city' / 'beta.yaml'}\nname: two_city_gamma\n"
        f"{key}: {value}\n",
        encoding="utf-8",
    )
    if key == "output.issuer_id":
        city.write_text(
            f"extends: {ROOT / 'scenarios' / 'two_city' / 'beta.yaml'}\nname: two_city_gamma\n"
            "clearing: {network: {issuers: {ALPHA_CARD: {name_zh: x, exchange: BETA_EXCHANGE, "
            "media: [physical_card, nfc_virtual_card]}, BETA_CARD: {name_zh: y, "
            "exchange: BETA_EXCHANGE, media: []}}}}\noutput: {issuer_id: ALPHA_CARD}\n"
            "interop: null\n",
            encoding="utf-8",
        )
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        "schema_version: 1\nname: bad\nseed: 1\nperiod: {start: 2024-03-04, days: 1}\n"
        f"cities:\n  alpha: {{scenario: {ROOT / 'scenarios' / 'two_city' / 'alpha.yaml'}}}\n"
        f"  gamma: {{scenario: {city}}}\noutput: {{dir: runs/bad}}\n",
        encoding="utf-8",
    )
    with pytest.raises(BadInput, match=message):
        build(load_scenario(run_file))


def test_calibrate_refuses_a_multi_city_file(tmp_path):
    with pytest.raises(BadInput, match="one city"):
        calibrate(
            load_scenario(TWO_CITY), ROOT / "data" / "nantong" / "targets_2024.yaml", tmp_path
        )
