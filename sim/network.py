"""The transit network, generated from scenario parameters: zones, bus lines, metro lines, stops,
validators, and a zone-to-zone route table.

Why generated: the twin needs a network with the right size and shape (how many lines, how far
apart stops are, where the metro runs) more than a stop-exact copy; a GTFS feed can replace this
later without changing the tap pipeline, which only sees line, stop and device indices.

Everything is numpy arrays indexed by integers; networkx checks that each region's network is
connected (every zone reachable from every other by bus with transfers).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from sim.codes import MODES
from sim.rng import Streams
from sim.world_settings import Network, Region

BUS = MODES.index("bus")
METRO = MODES.index("metro")
NO_LINE = -1


@dataclass(frozen=True)
class Zones:
    """Traffic zones of all regions: zone index -> region, grid position in km."""

    region: np.ndarray  # uint8
    x_km: np.ndarray  # float32
    y_km: np.ndarray  # float32
    first_of_region: np.ndarray  # int32, index of each region's first zone
    count_of_region: np.ndarray  # int32


@dataclass(frozen=True)
class Lines:
    """Bus and metro lines. Stops of line ``l`` are ``stop_ptr[l]:stop_ptr[l+1]`` in order."""

    ids: list[str]
    mode: np.ndarray  # uint8
    region: np.ndarray  # uint8
    operator: list[str]  # acquirer code per line
    speed_kmh: np.ndarray  # float32
    stop_ptr: np.ndarray  # int32, CSR pointer into the stop arrays
    opened_day: np.ndarray  # int32, first simulated day with service (may be negative)


@dataclass(frozen=True)
class Stops:
    """Stops (bus) and stations (metro); each belongs to one line and lies in one zone."""

    line: np.ndarray  # int32
    zone: np.ndarray  # int32
    pos_km: np.ndarray  # float32, distance along the line from its first stop
    name: list[str]


@dataclass(frozen=True)
class Devices:
    """Validators: one per bus (serving one line) or per metro gate (at one station)."""

    line: np.ndarray  # int32
    stop: np.ndarray  # int32 (-1 for buses, which move)
    kind: np.ndarray  # uint8: mode code
    first_of_line: np.ndarray  # int32, bus devices of line l start here
    count_of_line: np.ndarray  # int32
    first_of_stop: np.ndarray  # int32, metro gates of station s start here (-1 for bus stops)
    count_of_stop: np.ndarray  # int32


@dataclass(frozen=True)
class RouteTable:
    """For each ordered pair of zones in the same region: a direct line or a two-leg route.

    Arrays are indexed by global zone numbers ``[origin, destination]``; -1 where there is none.
    ``via`` is the transfer zone of a two-leg route.
    """

    direct_bus: np.ndarray  # int32 [Z, Z]
    metro_line: np.ndarray  # int32 [Z, Z], a metro line serving both zones
    leg1: np.ndarray  # int32 [Z, Z]
    via: np.ndarray  # int32 [Z, Z]
    leg2: np.ndarray  # int32 [Z, Z]
    stop_of: np.ndarray  # int32 [L, Z], the stop of line l in zone z (-1 if it does not pass)


@dataclass(frozen=True)
class TransitNetwork:
    """Everything the tap pipeline needs to turn journeys into taps at devices."""

    zones: Zones
    lines: Lines
    stops: Stops
    devices: Devices
    routes: RouteTable


def _grid_shape(n: int) -> tuple[int, int]:
    rows = max(1, int(np.floor(np.sqrt(n))))
    cols = int(np.ceil(n / rows))
    return rows, cols


def _bus_path(
    rng: np.random.Generator, rows: int, cols: int, n_zones: int, length: int
) -> list[int]:
    """A bus line as a self-avoiding walk on the zone grid that prefers to keep its direction."""
    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    start = int(rng.integers(n_zones))
    r, c = divmod(start, cols)
    path = [start]
    direction = int(rng.integers(4))
    for _ in range(length - 1):
        options = [direction] * 5 + [(direction + 1) % 4, (direction + 3) % 4]
        rng.shuffle(options)
        for option in options:
            dr, dc = moves[option]
            nr, nc = r + dr, c + dc
            zone = nr * cols + nc
            if 0 <= nr < rows and 0 <= nc < cols and zone < n_zones and zone not in path:
                r, c, direction = nr, nc, option
                path.append(zone)
                break
        else:
            break
    return path


def build_network(
    regions: dict[str, Region],
    network: Network,
    streams: Streams,
    period_start_ord: int,
    routes: bool = True,
) -> TransitNetwork:
    """Generate zones, lines, stops, devices and (unless ``routes`` is false: a network to name
    lines and devices by, not to ride) the routes between zones, for every region."""
    region_ids = list(regions)
    zone_region, zone_x, zone_y, first_zone, n_zones = [], [], [], [], []
    line_ids: list[str] = []
    line_mode, line_region, line_ops, line_speed, line_open = [], [], [], [], []
    line_paths: list[list[int]] = []  # global zone numbers per line
    line_pos: list[list[float]] = []
    vehicles: list[int] = []

    zone_base = 0
    for r_index, (r_id, region) in enumerate(regions.items()):
        rows, cols = _grid_shape(region.zones)
        z = np.arange(region.zones)
        zone_region.append(np.full(region.zones, r_index, dtype=np.uint8))
        zone_x.append((z % cols) * region.zone_spacing_km)
        zone_y.append((z // cols) * region.zone_spacing_km)
        first_zone.append(zone_base)
        n_zones.append(region.zones)
        rng = streams.generator("network.bus", 0, r_index)
        paths = [
            _bus_path(rng, rows, cols, region.zones, region.bus.stops_per_line)
            for _ in range(region.bus.lines)
        ]
        paths = [p for p in paths if len(p) >= 2]
        paths += _connect_uncovered(paths, rows, cols, region.zones)
        for k, path in enumerate(paths):
            line_ids.append(f"{r_id}-B{k + 1:03d}")
            line_mode.append(BUS)
            line_region.append(r_index)
            line_ops.append(region.bus.operator_id)
            line_speed.append(region.bus.speed_kmh)
            line_open.append(-(10**6))
            line_paths.append([zone_base + zone for zone in path])
            gaps = [0.0] + [region.zone_spacing_km] * (len(path) - 1)
            line_pos.append(list(np.cumsum(gaps)))
            vehicles.append(region.bus.vehicles_per_line)
        zone_base += region.zones

    zones = Zones(
        region=np.concatenate(zone_region),
        x_km=np.concatenate(zone_x).astype(np.float32),
        y_km=np.concatenate(zone_y).astype(np.float32),
        first_of_region=np.array(first_zone, dtype=np.int32),
        count_of_region=np.array(n_zones, dtype=np.int32),
    )

    for m_index, (m_id, metro) in enumerate(network.metro.items()):
        r_index = region_ids.index(metro.region)
        path = _metro_path(zones, r_index, metro.stations, m_index)
        line_ids.append(m_id)
        line_mode.append(METRO)
        line_region.append(r_index)
        line_ops.append(metro.operator_id)
        line_speed.append(metro.speed_kmh)
        line_open.append(metro.opened.toordinal() - period_start_ord)
        line_paths.append(path)
        line_pos.append(list(np.linspace(0.0, metro.length_km, metro.stations)))
        vehicles.append(metro.gates_per_station)

    stop_ptr = np.zeros(len(line_paths) + 1, dtype=np.int32)
    stop_ptr[1:] = np.cumsum([len(p) for p in line_paths])
    stops = Stops(
        line=np.repeat(np.arange(len(line_paths), dtype=np.int32), np.diff(stop_ptr)),
        zone=np.concatenate([np.array(p, dtype=np.int32) for p in line_paths]),
        pos_km=np.concatenate([np.array(p, dtype=np.float32) for p in line_pos]),
        name=[
            f"{line_ids[li]}-S{k + 1:02d}" for li, p in enumerate(line_paths) for k in range(len(p))
        ],
    )
    lines = Lines(
        ids=line_ids,
        mode=np.array(line_mode, dtype=np.uint8),
        region=np.array(line_region, dtype=np.uint8),
        operator=line_ops,
        speed_kmh=np.array(line_speed, dtype=np.float32),
        stop_ptr=stop_ptr,
        opened_day=np.array(line_open, dtype=np.int32),
    )
    devices = _build_devices(lines, stops, vehicles)
    route_table = _build_routes(zones, lines, stops, streams) if routes else _no_routes()
    _check_connected(zones, lines, stops, region_ids)
    return TransitNetwork(
        zones=zones, lines=lines, stops=stops, devices=devices, routes=route_table
    )


def _no_routes() -> RouteTable:
    """An empty route table: for a network that names lines and devices but is not ridden."""
    none = np.zeros((0, 0), dtype=np.int32)
    return RouteTable(none, none, none, none, none, none)


def _connect_uncovered(paths: list[list[int]], rows: int, cols: int, n: int) -> list[list[int]]:
    """Feeder lines so that every zone is served and the region's lines form one network."""
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    for path in paths:
        nx.add_path(graph, path)
    feeders: list[list[int]] = []
    components = sorted(nx.connected_components(graph), key=lambda c: (-len(c), min(c)))
    main = set(components[0])
    for component in components[1:]:
        # Link the component to the main network through the nearest pair of zones on the grid.
        best = min(
            ((a, b) for a in component for b in main),
            key=lambda ab: abs(ab[0] // cols - ab[1] // cols) + abs(ab[0] % cols - ab[1] % cols),
        )
        feeder = _grid_route(best[0], best[1], cols)
        feeders.append(feeder)
        main |= set(component) | set(feeder)
    return feeders


def _grid_route(a: int, b: int, cols: int) -> list[int]:
    """Zones on an L-shaped grid path from a to b."""
    ra, ca = divmod(a, cols)
    rb, cb = divmod(b, cols)
    path = [a]
    step = 1 if cb >= ca else -1
    for c in range(ca + step, cb + step, step) if ca != cb else []:
        path.append(ra * cols + c)
    step = 1 if rb >= ra else -1
    for r in range(ra + step, rb + step, step) if ra != rb else []:
        path.append(r * cols + cb)
    return path


def _metro_path(zones: Zones, r_index: int, stations: int, m_index: int) -> list[int]:
    """Zones of a metro line's stations: line 1 crosses the region west-east, line 2 north-south,
    so the two lines interchange in the centre as Nantong's lines 1 and 2 do."""
    first = int(zones.first_of_region[r_index])
    n = int(zones.count_of_region[r_index])
    x = zones.x_km[first : first + n]
    y = zones.y_km[first : first + n]
    t = np.linspace(0.0, 1.0, stations)
    if m_index % 2 == 0:
        px = x.min() + t * (x.max() - x.min())
        py = y.min() + (0.35 + 0.3 * t) * (y.max() - y.min())
    else:
        px = x.min() + (0.3 + 0.4 * t) * (x.max() - x.min())
        py = y.min() + t * (y.max() - y.min())
    d2 = (x[None, :] - px[:, None]) ** 2 + (y[None, :] - py[:, None]) ** 2
    return [first + int(z) for z in d2.argmin(axis=1)]


def _build_devices(lines: Lines, stops: Stops, per_line_or_station: list[int]) -> Devices:
    n_lines = len(lines.ids)
    dev_line, dev_stop, dev_kind = [], [], []
    first_line = np.full(n_lines, -1, dtype=np.int32)
    count_line = np.zeros(n_lines, dtype=np.int32)
    first_stop = np.full(len(stops.line), -1, dtype=np.int32)
    count_stop = np.zeros(len(stops.line), dtype=np.int32)
    for li in range(n_lines):
        if lines.mode[li] == BUS:
            first_line[li] = len(dev_line)
            count_line[li] = per_line_or_station[li]
            dev_line += [li] * per_line_or_station[li]
            dev_stop += [-1] * per_line_or_station[li]
            dev_kind += [BUS] * per_line_or_station[li]
        else:
            for s in range(lines.stop_ptr[li], lines.stop_ptr[li + 1]):
                first_stop[s] = len(dev_line)
                count_stop[s] = per_line_or_station[li]
                dev_line += [li] * per_line_or_station[li]
                dev_stop += [s] * per_line_or_station[li]
                dev_kind += [METRO] * per_line_or_station[li]
    return Devices(
        line=np.array(dev_line, dtype=np.int32),
        stop=np.array(dev_stop, dtype=np.int32),
        kind=np.array(dev_kind, dtype=np.uint8),
        first_of_line=first_line,
        count_of_line=count_line,
        first_of_stop=first_stop,
        count_of_stop=count_stop,
    )


def _build_routes(zones: Zones, lines: Lines, stops: Stops, streams: Streams) -> RouteTable:
    """Direct and one-transfer routes between all zone pairs of each region (matrix algebra)."""
    n_zones = len(zones.region)
    n_lines = len(lines.ids)
    stop_of = np.full((n_lines, n_zones), -1, dtype=np.int32)
    # Later stops win if a line passes a zone twice; fine for routing.
    stop_of[stops.line, stops.zone] = np.arange(len(stops.line), dtype=np.int32)
    serves = stop_of >= 0
    # A fixed random preference among parallel lines, so riders of one OD pair spread over them.
    weight = 1.0 + streams.uniform("network.line_pref", 0, np.arange(n_lines))
    direct_bus = np.full((n_zones, n_zones), -1, dtype=np.int32)
    metro_line = np.full((n_zones, n_zones), -1, dtype=np.int32)
    for mode, table in ((BUS, direct_bus), (METRO, metro_line)):
        idx = np.flatnonzero(lines.mode == mode)
        if len(idx) == 0:
            continue
        mode_serves = serves[idx]
        mode_weight = weight[idx].astype(np.float32)
        # From each zone a, of the lines serving a, the best-weighted one that also serves b
        # (the first in line order on a tie). One origin at a time: a lines x zones x zones
        # array would not fit a big city (1,000+ lines, 500+ zones).
        for a in range(n_zones):
            lines_at_a = np.flatnonzero(mode_serves[:, a])
            if len(lines_at_a) == 0:
                continue
            score = mode_weight[lines_at_a, None] * mode_serves[lines_at_a]
            best = score.argmax(axis=0)
            has = score.max(axis=0) > 0
            table[a, has] = idx[lines_at_a[best[has]]]
    same_region = zones.region[:, None] == zones.region[None, :]
    np.fill_diagonal(direct_bus, -1)
    np.fill_diagonal(metro_line, -1)
    direct_bus[~same_region] = -1
    metro_line[~same_region] = -1
    # Two-leg routes by bus: via zone c with direct[a, c] and direct[c, b]; prefer the shortest.
    reach = direct_bus >= 0
    dist = np.abs(zones.x_km[:, None] - zones.x_km[None, :]) + np.abs(
        zones.y_km[:, None] - zones.y_km[None, :]
    )
    via = np.full((n_zones, n_zones), -1, dtype=np.int32)
    for a in range(n_zones):
        cost = np.where(reach[a][:, None] & reach, dist[a][:, None] + dist, np.inf)  # [c, b]
        best_c = cost.argmin(axis=0)
        ok = np.isfinite(cost[best_c, np.arange(n_zones)]) & same_region[a]
        ok[a] = False
        via[a, ok] = best_c[ok]
    leg1 = np.where(via >= 0, direct_bus[np.arange(n_zones)[:, None], np.maximum(via, 0)], -1)
    leg2 = np.where(via >= 0, direct_bus[np.maximum(via, 0), np.arange(n_zones)[None, :]], -1)
    return RouteTable(
        direct_bus=direct_bus,
        metro_line=metro_line,
        leg1=leg1.astype(np.int32),
        via=via,
        leg2=leg2.astype(np.int32),
        stop_of=stop_of,
    )


def _check_connected(zones: Zones, lines: Lines, stops: Stops, region_ids: list[str]) -> None:
    """Every region's zones must form one connected bus network (else trips would be lost)."""
    for r_index, r_id in enumerate(region_ids):
        graph = nx.Graph()
        first = int(zones.first_of_region[r_index])
        graph.add_nodes_from(range(first, first + int(zones.count_of_region[r_index])))
        for li in np.flatnonzero((lines.region == r_index) & (lines.mode == BUS)):
            nx.add_path(graph, stops.zone[lines.stop_ptr[li] : lines.stop_ptr[li + 1]].tolist())
        if not nx.is_connected(graph):
            raise ValueError(f"region {r_id!r}: generated bus network is not connected")
