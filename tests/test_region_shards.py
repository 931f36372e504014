"""A city split into one shard per region (cities.<id>.shards: regions; sim/region_shards.py):
the parts add up to the city, keep apart what must not collide, take their incidents, and write
the same files in this process and on 2 Dask workers; Nantong's six regions on 2 workers in the
slow suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from output_frames import parquet_hashes

from agents.outlet import load_outlets_csv
from sim import run_places
from sim.api import BadInput, build, dask_client, load_scenario, run, verify
from sim.region_shards import apportion
from sim.scenario import ConfigError
from sim.scenario import load_scenario as load_file

ROOT = Path(__file__).resolve().parent.parent
SPLIT = ROOT / "scenarios" / "small_ci_regions.yaml"
CITY = ROOT / "scenarios" / "small_ci.yaml"


@given(
    st.integers(0, 10**7),
    st.lists(st.floats(0.01, 1e6, allow_nan=False), min_size=1, max_size=12),
)
def test_apportion_shares_out_the_whole_in_proportion(total, weights):
    w = np.array(weights)
    counts = apportion(total, w)
    assert counts.sum() == total and (counts >= 0).all()
    assert np.all(np.abs(counts - total * w / w.sum()) < 1.0)  # each within one of its share


@pytest.fixture(scope="module")
def parts():
    return load_file(SPLIT).city_scenarios


def test_the_parts_add_up_to_the_city(parts):
    city = load_file(CITY)
    assert [p.region_part.region for p in parts] == list(city.regions)
    for name, spec in city.population.card_types.items():
        assert sum(p.population.card_types[name].count for p in parts) == spec.count
    for cid, ext in city.interop.cities.items():
        total = sum(p.interop.cities[cid].inbound_visitors_per_day for p in parts)
        assert total == ext.inbound_visitors_per_day
    # Both metro lines run in the urban region: its part has them, the others none.
    assert {p.region_part.region: sorted(p.network.metro) for p in parts if p.network.metro} == {
        "urban": ["M1", "M2"]
    }
    # The elderly cards lean to the older counties, as the population draws them.
    share = {
        p.region_part.region: p.population.card_types["longevity"].count
        / sum(t.count for t in p.population.card_types.values())
        for p in parts
    }
    assert share["rudong"] > share["urban"]
    assert len({p.world_seed for p in parts}) == len(parts)
    assert {p.output.issuer_id for p in parts} == {city.output.issuer_id}


def test_the_parts_worlds_keep_cards_outlets_and_devices_apart(parts):
    spec = load_file(SPLIT)
    worlds = build(spec)
    locals_ = [w.population.card_id[w.population.home_city == 0] for w in worlds]
    ids = np.concatenate(locals_)
    assert len(np.unique(ids)) == len(ids)  # card ids (and so card numbers) never collide
    outlets = [o.outlet_id for w in worlds for o in w.outlets]
    city_outlets = load_outlets_csv(load_file(CITY).outlets.file)
    assert sorted(outlets) == sorted(o.outlet_id for o in city_outlets)  # each in one part
    assert len({w.participants for w in worlds}) == 1  # one clearing hierarchy


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("split") / "run"
    summary = run(load_scenario(SPLIT), out)
    return out, summary


def test_a_split_city_runs_with_its_money_and_records_checked(in_process):
    out, summary = in_process
    assert verify(out) == []  # hash chains, digests, row and money invariants from the files
    assert summary.totals["cleared"] > 5_000
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in meta["cities"]] == [
        f"small_ci.{r}" for r in ("urban", "rudong", "haian", "haimen", "rugao", "qidong")
    ]
    # One city in the cross-city measures, with all six regions.
    (city,) = meta["cross_city"]["cities"]
    assert city["city"] == "small_ci" and len(city["regions"]) == 6
    # One city to a reader of the run (the dashboard), its regions keyed by their own names.
    regions = ["urban", "rudong", "haian", "haimen", "rugao", "qidong"]
    assert [c["region_part"] for c in meta["cities"]] == [
        {"city": "small_ci", "region": r} for r in regions
    ]
    (city,) = run_places.cities(meta)
    assert city.key == "small_ci" and city.shards == tuple(range(6))
    assert run_places.region_prefixes(meta) == [""] * 6
    import duckdb

    con = duckdb.connect()
    tx = out / "transactions"
    n, terminals = con.execute(
        f"SELECT count(*), count(DISTINCT substr(terminal_id, 5, 2)) FROM '{tx}/**/*.parquet'"
    ).fetchone()
    assert n > 0 and terminals == 6  # each part's devices under its own terminal id block


def test_two_workers_write_the_files_of_the_in_process_run(tmp_path, in_process):
    out = tmp_path / "run"
    with dask_client(workers=2) as client:
        run(load_scenario(SPLIT), out, client=client)
    assert parquet_hashes(out) == parquet_hashes(in_process[0])
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    assert len(set(meta["dask"]["shards"].values())) == 2


def _split_with_incidents(tmp_path: Path, incidents: str) -> Path:
    """A copy of the split scenario whose city has ``incidents`` (YAML list items)."""
    city = tmp_path / "city.yaml"
    city.write_text(f"extends: {CITY}\nincidents:\n{incidents}", encoding="utf-8")
    split = tmp_path / "split.yaml"
    split.write_text(
        SPLIT.read_text(encoding="utf-8").replace("small_ci.yaml", str(city)), encoding="utf-8"
    )
    return split


def test_incidents_go_to_the_part_they_hit(tmp_path):
    split = _split_with_incidents(
        tmp_path,
        "  - {id: m1-down, kind: line_outage, target: M1, start: 2024-03-04 08:00, "
        "duration_min: 60}\n"
        "  - {id: rugao-bus, kind: line_outage, target: rugao-B002, start: 2024-03-04 09:00, "
        "duration_min: 60}\n"
        "  - {id: alipay, kind: qr_platform_outage, target: qr_alipay, start: 2024-03-05 08:00, "
        "duration_min: 30}\n",
    )
    parts = load_file(split).city_scenarios
    ids = {p.region_part.region: [i.id for i in p.incidents] for p in parts}
    assert ids["urban"] == ["m1-down", "alipay"]
    assert ids["rugao"] == ["rugao-bus", "alipay"]
    assert ids["qidong"] == ["alipay"]


def test_an_incident_on_a_device_id_is_refused_with_its_field(tmp_path):
    split = _split_with_incidents(
        tmp_path,
        "  - {id: gate, kind: validator_outage, target: '17', start: 2024-03-04 08:00, "
        "duration_min: 60}\n",
    )
    with pytest.raises(ConfigError) as err:
        load_file(split)
    (problem,) = err.value.problems
    assert "cities.nantong.shards: regions" in problem
    assert "incidents.0.target" in problem and "device id" in problem
    with pytest.raises(BadInput, match="incidents.0.target"):
        load_scenario(split)


def test_a_region_part_cannot_be_written_in_a_file(tmp_path):
    city = tmp_path / "city.yaml"
    city.write_text(f"extends: {CITY}\nregion_part: {{city: x}}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="region_part"):
        load_file(city)


@pytest.mark.slow
def test_nantongs_six_regions_on_two_workers_write_the_in_process_files(tmp_path):
    spec = ["period.days=1"]
    scenario = ROOT / "scenarios" / "nantong_regions.yaml"
    run(load_scenario(scenario, spec), tmp_path / "in_process")
    with dask_client(workers=2) as client:
        run(load_scenario(scenario, spec), tmp_path / "workers", client=client)
    assert parquet_hashes(tmp_path / "workers") == parquet_hashes(tmp_path / "in_process")
    assert verify(tmp_path / "workers") == []
