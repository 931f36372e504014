"""A finished run's lines and devices from its run_meta.json alone (sim/run_lines.py): the
network built again from the settings is the one the run was simulated on — the engine's own
world's, and the records' — in a run of one city, of several, and of a city split by region."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from sim import api
from sim.codes import MODES

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"


def _meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "run_meta.json").read_text("utf-8"))


def _tapped(run_dir: Path, shard: int) -> set[tuple[int, str]]:
    """Every (device, line) a shard's tap records name."""
    files = run_dir / "transactions" / "*" / f"part-{shard}.parquet"
    rows = duckdb.sql(
        f"""SELECT DISTINCT device_id, CAST(route_id AS VARCHAR)
            FROM read_parquet('{files}', hive_partitioning = true)"""
    ).fetchall()
    return {(int(device), str(line)) for device, line in rows}


def test_a_one_city_run_names_the_lines_and_devices_of_the_world_it_ran_on(tmp_path):
    scenario = api.load_scenario(SMALL, days=1)
    api.run(scenario, tmp_path / "small")
    (city,) = api.run_lines(_meta(tmp_path / "small"))
    world = api.build(scenario, people=False)
    network, local = world.network, world.n_local_lines
    assert list(city.lines) == network.lines.ids[:local]  # every line, in the engine's order
    on_local = [d for d, line in enumerate(network.devices.line) if line < local]
    assert sorted(city.devices) == on_local
    for device in on_local:
        line, stop = int(network.devices.line[device]), int(network.devices.stop[device])
        found = city.devices[device]
        assert found.line.id == network.lines.ids[line]
        first = int(network.lines.stop_ptr[line])
        assert found.station == (None if stop < 0 else stop - first + 1)
        assert found.mode == ("bus" if stop < 0 else "metro")
    bus, metro = city.lines["urban-B001"], city.lines["M1"]
    assert (bus.mode, bus.number, bus.name_zh, bus.region.zh) == ("bus", "B001", None, "市区")
    assert (metro.mode, metro.number, metro.name_zh) == ("metro", None, "1号线")
    # The records say the same of every device of the city's own lines they name.
    tapped = [(d, line) for d, line in _tapped(tmp_path / "small", 0) if line in city.lines]
    assert tapped and all(city.devices[d].line.id == line for d, line in tapped)


def test_every_city_of_a_run_of_several_has_its_own_network(scaled_two_city):
    """Alpha and beta both have a centre-B001 and a device 0, each its own city's: the names
    come from the city whose incident names them."""
    found = api.run_lines(_meta(scaled_two_city))
    assert [c.city.index for c in found] == [0, 1]
    for city in found:
        (shard,) = city.city.shards
        tapped = [(d, line) for d, line in _tapped(scaled_two_city, shard) if line in city.lines]
        assert tapped and all(city.devices[d].line.id == line for d, line in tapped)
        assert city.lines["centre-B001"].region.city == city.city
    alpha, beta = found
    assert alpha.devices[0].line.region.city != beta.devices[0].line.region.city


def test_a_city_split_by_region_lists_its_lines_but_not_its_parts_devices(tmp_path):
    """Each part numbers its devices from 0, as none of the others does: a device id is not
    the city's, and none is named; every line is (its id is the city's)."""
    scenario = api.load_scenario(ROOT / "scenarios" / "small_ci_regions.yaml", days=1)
    api.run(scenario, tmp_path / "split")
    meta = _meta(tmp_path / "split")
    (city,) = api.run_lines(meta)
    assert len(city.city.shards) == 6 and city.devices == {}
    tapped = set().union(*(_tapped(tmp_path / "split", shard) for shard in city.city.shards))
    local = {line for _, line in tapped if not line.startswith("EXT-")}
    assert local and local <= set(city.lines)
    # Every line of every part, as the engine's own worlds of the parts have it: its mode and
    # region, and a bus line's number (a metro line has none).
    expected = {}
    for world in api.build(scenario, people=False):
        network_lines = world.network.lines
        for index in range(world.n_local_lines):
            region = world.region_ids[int(network_lines.region[index])]
            mode = MODES[int(network_lines.mode[index])]
            line_id = network_lines.ids[index]
            number = line_id.removeprefix(f"{region}-") if mode == "bus" else None
            expected[line_id] = (mode, region, number)
    assert {i: (x.mode, x.region.id, x.number) for i, x in city.lines.items()} == expected


def test_a_network_that_is_not_the_runs_names_nothing(tmp_path):
    """An ``order`` edited by hand (regions reversed: the same lines, numbered otherwise) or a
    fingerprint that is not the network's: the rebuilt network is not the run's, so nothing is
    named by it (a reader shows ids), rather than every device named after another line."""
    scenario = api.load_scenario(SMALL, days=1)
    api.run(scenario, tmp_path / "small")
    meta = _meta(tmp_path / "small")
    (city,) = api.run_lines(meta)
    assert city.lines and city.devices  # as written: named
    edited = json.loads(json.dumps(meta))
    edited["cities"][0]["order"]["regions"].reverse()
    (city,) = api.run_lines(edited)
    assert city.lines == {} and city.devices == {}
    edited = json.loads(json.dumps(meta))
    edited["cities"][0]["network_fingerprint"] = "0" * 64
    (city,) = api.run_lines(edited)
    assert city.lines == {} and city.devices == {}
