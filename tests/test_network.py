"""The generated transit network (sim/network.py): connected bus networks, a route for every zone
pair, metro lines as configured, one validator per bus and gates per station, determinism.

The full-scale Nantong network is used: the small CI scenario's regions are so small that every
zone pair has a direct bus, so two-leg routes would go untested.
"""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np
import pytest

from sim.network import BUS, METRO, build_network
from sim.rng import Streams


def _build(scenario):
    return build_network(
        scenario.regions,
        scenario.network,
        Streams(scenario.seed),
        scenario.period.start.toordinal(),
    )


@pytest.fixture(scope="module")
def network(nantong_scenario):
    return _build(nantong_scenario)


def _line_stops(network, line: int) -> slice:
    return slice(int(network.lines.stop_ptr[line]), int(network.lines.stop_ptr[line + 1]))


def _within_region_pairs(zones) -> tuple[np.ndarray, np.ndarray]:
    same = zones.region[:, None] == zones.region[None, :]
    np.fill_diagonal(same, False)
    return np.nonzero(same)


def test_zones_match_the_regions(nantong_scenario, network):
    zones = network.zones
    expected = [region.zones for region in nantong_scenario.regions.values()]
    assert zones.count_of_region.tolist() == expected
    assert (
        zones.first_of_region.tolist() == np.concatenate([[0], np.cumsum(expected)[:-1]]).tolist()
    )
    for r, (first, count) in enumerate(
        zip(zones.first_of_region, zones.count_of_region, strict=True)
    ):
        assert (zones.region[first : first + count] == r).all()


def test_every_region_bus_network_is_connected(nantong_scenario, network):
    lines, stops, zones = network.lines, network.stops, network.zones
    for r, region_id in enumerate(nantong_scenario.regions):
        first, count = int(zones.first_of_region[r]), int(zones.count_of_region[r])
        graph = nx.Graph()
        graph.add_nodes_from(range(first, first + count))
        spacing = nantong_scenario.regions[region_id].zone_spacing_km
        bus_lines = np.flatnonzero((lines.region == r) & (lines.mode == BUS))
        assert len(bus_lines) >= nantong_scenario.regions[region_id].bus.lines * 0.9
        for line in bus_lines:
            path = stops.zone[_line_stops(network, line)].tolist()
            # A line stays in its region and visits consecutive grid neighbours.
            assert all(first <= z < first + count for z in path), region_id
            step = np.abs(np.diff(zones.x_km[path])) + np.abs(np.diff(zones.y_km[path]))
            assert step == pytest.approx(spacing, abs=1e-4), region_id
            nx.add_path(graph, path)
        assert nx.is_connected(graph), f"region {region_id}: bus network is not connected"


def test_every_within_region_pair_has_a_direct_bus_or_two_leg_route(network):
    routes, lines, zones = network.routes, network.lines, network.zones
    a, b = _within_region_pairs(zones)
    direct = routes.direct_bus[a, b]
    two_leg = routes.via[a, b] >= 0
    assert ((direct >= 0) | two_leg).all()
    # The full network really has pairs that need a transfer.
    assert ((direct < 0) & two_leg).sum() > 50

    # A direct line is a bus line that stops at both zones.
    d = direct >= 0
    assert (lines.mode[direct[d]] == BUS).all()
    assert (routes.stop_of[direct[d], a[d]] >= 0).all()
    assert (routes.stop_of[direct[d], b[d]] >= 0).all()

    # Two legs: leg 1 serves origin and transfer zone, leg 2 the transfer zone and destination.
    t = np.flatnonzero(two_leg)
    via, leg1, leg2 = routes.via[a[t], b[t]], routes.leg1[a[t], b[t]], routes.leg2[a[t], b[t]]
    assert (leg1 >= 0).all() and (leg2 >= 0).all()
    assert (lines.mode[leg1] == BUS).all() and (lines.mode[leg2] == BUS).all()
    assert (zones.region[via] == zones.region[a[t]]).all()
    assert ((via != a[t]) & (via != b[t])).all()
    assert (routes.stop_of[leg1, a[t]] >= 0).all()
    assert (routes.stop_of[leg1, via] >= 0).all()
    assert (routes.stop_of[leg2, via] >= 0).all()
    assert (routes.stop_of[leg2, b[t]] >= 0).all()


def test_no_routes_across_regions_or_to_the_same_zone(network):
    routes, zones = network.routes, network.zones
    other = zones.region[:, None] != zones.region[None, :]
    for table in (routes.direct_bus, routes.metro_line, routes.via, routes.leg1, routes.leg2):
        assert (table[other] == -1).all()
    assert (np.diag(routes.direct_bus) == -1).all()
    assert (np.diag(routes.via) == -1).all()


def test_stop_of_points_at_a_stop_of_that_line_in_that_zone(network):
    stop_of, stops = network.routes.stop_of, network.stops
    line, zone = np.nonzero(stop_of >= 0)
    s = stop_of[line, zone]
    assert (stops.line[s] == line).all()
    assert (stops.zone[s] == zone).all()
    # And every stop is reachable through stop_of by its own line and zone.
    assert (stop_of[stops.line, stops.zone] >= 0).all()


def test_metro_lines_have_configured_stations_and_lengths(nantong_scenario, network):
    lines, stops, zones = network.lines, network.stops, network.zones
    metro = nantong_scenario.network.metro
    assert [lines.ids[i] for i in np.flatnonzero(lines.mode == METRO)] == list(metro)
    for line_id, spec in metro.items():
        li = lines.ids.index(line_id)
        sl = _line_stops(network, li)
        pos = stops.pos_km[sl]
        assert len(pos) == spec.stations
        assert pos[0] == 0.0
        assert pos[-1] == pytest.approx(spec.length_km, abs=1e-3)
        assert (np.diff(pos) > 0).all()
        region = list(nantong_scenario.regions).index(spec.region)
        assert lines.region[li] == region
        assert (zones.region[stops.zone[sl]] == region).all()
        assert lines.operator[li] == spec.operator_id
        expected_open = spec.opened.toordinal() - nantong_scenario.period.start.toordinal()
        assert lines.opened_day[li] == expected_open


def test_bus_stops_are_spaced_by_the_zone_spacing(nantong_scenario, network):
    lines, stops = network.lines, network.stops
    spacing = [r.zone_spacing_km for r in nantong_scenario.regions.values()]
    for li in np.flatnonzero(lines.mode == BUS):
        gaps = np.diff(stops.pos_km[_line_stops(network, li)])
        assert gaps == pytest.approx(spacing[lines.region[li]], abs=1e-4)


def test_one_device_per_bus_and_gates_per_station(nantong_scenario, network):
    lines, stops, devices = network.lines, network.stops, network.devices
    vehicles = [r.bus.vehicles_per_line for r in nantong_scenario.regions.values()]
    n_bus_lines = 0
    for li in np.flatnonzero(lines.mode == BUS):
        n_bus_lines += 1
        first, count = int(devices.first_of_line[li]), int(devices.count_of_line[li])
        assert count == vehicles[lines.region[li]]
        assert (devices.line[first : first + count] == li).all()
        assert (devices.kind[first : first + count] == BUS).all()
        assert (devices.stop[first : first + count] == -1).all()
        assert (np.flatnonzero(devices.line == li) == np.arange(first, first + count)).all()
    expected_bus = sum(vehicles[lines.region[li]] for li in np.flatnonzero(lines.mode == BUS))
    assert int((devices.kind == BUS).sum()) == expected_bus

    for line_id, spec in nantong_scenario.network.metro.items():
        li = lines.ids.index(line_id)
        assert devices.count_of_line[li] == 0
        for s in range(lines.stop_ptr[li], lines.stop_ptr[li + 1]):
            first, count = int(devices.first_of_stop[s]), int(devices.count_of_stop[s])
            assert count == spec.gates_per_station
            gates = slice(first, first + count)
            assert (devices.stop[gates] == s).all()
            assert (devices.line[gates] == li).all()
            assert (devices.kind[gates] == METRO).all()
    n_gates = sum(s.stations * s.gates_per_station for s in nantong_scenario.network.metro.values())
    assert int((devices.kind == METRO).sum()) == n_gates
    # Bus stops have no gates.
    bus_stop = lines.mode[stops.line] == BUS
    assert (devices.first_of_stop[bus_stop] == -1).all()
    assert (devices.count_of_stop[bus_stop] == 0).all()
    assert len(devices.line) == expected_bus + n_gates
    assert n_bus_lines > 0 and n_gates > 0


def test_building_twice_gives_identical_arrays(nantong_scenario, network):
    again = _build(nantong_scenario)
    for part in ("zones", "lines", "stops", "devices", "routes"):
        first, second = getattr(network, part), getattr(again, part)
        for f in dataclasses.fields(first):
            a, b = getattr(first, f.name), getattr(second, f.name)
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype, f"{part}.{f.name}"
                assert np.array_equal(a, b), f"{part}.{f.name}"
            else:
                assert a == b, f"{part}.{f.name}"


def test_another_seed_gives_another_bus_network(nantong_scenario, network):
    other = build_network(
        nantong_scenario.regions,
        nantong_scenario.network,
        Streams(nantong_scenario.seed + 1),
        nantong_scenario.period.start.toordinal(),
    )
    # Same zone grid, different generated lines (the seed really drives the generator).
    assert np.array_equal(other.zones.x_km, network.zones.x_km)
    n = min(len(other.stops.zone), len(network.stops.zone))
    assert not np.array_equal(other.stops.zone[:n], network.stops.zone[:n])
