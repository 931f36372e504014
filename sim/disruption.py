"""What the scenario's incidents (sim/incidents.py) do to a day: taps, uplinks and outlets.

- ``disrupt_taps``: riders meeting an outage change how they ride. A metro line or station that is
  down sends its riders to bridging buses of the same region (one bus tap instead of the metro
  entry and exit); a bus line that is down sends them to another bus line of the region; a metro
  gate that is down sends them to the next gate of the station, a bus reader that is down makes
  them pay cash (no record); a QR platform that is down makes its riders tap their card instead
  (``refuse_qr_down``: those who carry none are refused), unless their line takes codes offline.
- ``free_rides``: a line announced free records its taps with the fare waived.
- ``comm_outages``: uplink outage windows of the devices an incident targets (for
  ``agents.validator.load_fleet_day``).
- ``renewal_visits``: the extra outlet visits of a renewal wave.

Each changed record carries its incident's code. Choices (which bridging bus, which renewing
cardholder) are pure functions of the record or of named random streams, like every draw.
"""

from __future__ import annotations

import numpy as np

from agents.citizen import DayTaps
from agents.outlet import SERVICE_KINDS
from sim.codes import FALLBACK_CASH, FALLBACK_NONE, MEDIA, MODES, TAP_SINGLE
from sim.grouping import stable_order
from sim.incidents import NO_INCIDENT, Timeline, mark
from sim.rng import Streams

DAY_S = 86_400
BUS, METRO = MODES.index("bus"), MODES.index("metro")
SERVICE_OTHER = SERVICE_KINDS.index("other")


def disrupt_taps(world, streams: Streams, day: int, taps: DayTaps) -> tuple[DayTaps, int]:
    """The day's taps after the outages of ``day``; also the taps lost to cash payment."""
    timeline: Timeline = world.incidents
    network = world.network
    if not len(timeline) or not len(taps):
        return taps, 0

    def t_abs() -> np.ndarray:  # of the taps as they are now (an outage may drop or add some)
        return day * DAY_S + taps.t_s.astype(np.int64)

    cash = 0
    for k in timeline.of_kind("qr_platform_outage", day):
        taps = _qr_platform_down(world, streams, taps, t_abs(), day, k)
    for k in timeline.of_kind("validator_outage", day):
        taps, lost = _gate_down(world, taps, t_abs(), k)
        cash += lost
    for kind in ("line_outage", "station_outage"):
        for k in timeline.of_kind(kind, day):
            target = timeline.incidents[k].target
            if kind == "line_outage":
                line = network.lines.ids.index(target)  # checked when the world is built
                hit = (taps.line == line) & timeline.active(k, t_abs())
                if network.lines.mode[line] == BUS:
                    taps = _to_other_bus_line(world, taps, np.flatnonzero(hit), k)
                    continue
            else:
                line_id, _, station = target.partition(":")
                stop = network.lines.stop_ptr[network.lines.ids.index(line_id)] + int(station)
                hit = (taps.stop == stop) & (taps.mode == METRO) & timeline.active(k, t_abs())
            taps = _bridge_by_bus(world, taps, np.flatnonzero(hit), k)
    return taps, cash


def _qr_platform_down(
    world, streams: Streams, taps: DayTaps, t_abs: np.ndarray, day: int, k: int
) -> DayTaps:
    """A QR platform that is down: its riders tap their card instead, except on lines taking
    codes offline (or riding free) then; the journeys of riders who carry no card keep their
    code, marked, to be refused once priced (``refuse_qr_down``)."""
    timeline: Timeline = world.incidents
    inc = timeline.incidents[k]
    code = MEDIA.index(inc.target)
    on_medium = (taps.medium == code) & timeline.active(k, t_abs)
    offline = np.zeros(len(taps), dtype=bool)
    incident = taps.incident.copy()
    for kind in ("offline_acceptance", "free_rides"):
        for j in timeline.of_kind(kind, day):
            line = world.network.lines.ids.index(timeline.incidents[j].target)
            covered = on_medium & (taps.line == line) & timeline.active(j, t_abs)
            if kind == "offline_acceptance":
                mark(incident, np.flatnonzero(covered), j)  # accepted offline: labelled
            offline |= covered
    hit = on_medium & ~offline
    if not hit.any():
        return _replace(taps, incident=incident)
    refused = np.zeros(len(taps), dtype=bool)
    if inc.no_card_share > 0:
        journeys = np.unique(taps.journey[hit])
        u = streams.uniform("incident.qr_no_card", day, journeys)
        no_card = journeys[u < inc.no_card_share]
        # The whole journey from the outage on: a rider refused at boarding has no exit to tap.
        refused = (
            np.isin(taps.journey, no_card)
            & (taps.medium == code)
            & (t_abs >= timeline.start_s[k])
            & ~offline
        )
    switched = np.flatnonzero(hit & ~refused)
    medium = taps.medium.copy()
    medium[switched] = world.population.medium[taps.row[switched]]  # their card's medium
    mark(incident, np.flatnonzero(hit | refused), k)
    return _replace(taps, medium=medium, incident=incident)


def refuse_qr_down(world, streams: Streams, day: int, cols: dict[str, np.ndarray]):
    """The priced day's columns without the taps of riders a QR platform outage left with no
    way to pay (``_qr_platform_down``), and those refusals (``sim.city_list.REFUSAL_COLUMNS``):
    they pay cash with ``behaviour.declined_pays_other_way_share``, else do not ride."""
    from sim.city_list import no_refusals
    from sim.clearing import R_QR_PLATFORM_DOWN

    timeline: Timeline = world.incidents
    outages = timeline.of_kind("qr_platform_outage", day)
    if not outages:
        return cols, no_refusals()
    refused = np.zeros(len(cols["row"]), dtype=bool)
    for k in outages:
        code = MEDIA.index(timeline.incidents[k].target)
        refused |= (cols["incident"] == k) & (cols["medium"] == code)
    rows = np.flatnonzero(refused)
    if not len(rows):
        return cols, no_refusals()
    u = streams.uniform("refused.fallback", day, cols["tap_key"][rows])
    cash = u < world.scenario.behaviour.declined_pays_other_way_share
    refusals = {
        "row": cols["row"][rows],
        "t_s": cols["t_s"][rows],
        "line": cols["line"][rows],
        "device": cols["device"][rows],
        "medium": cols["medium"][rows],
        "card_city": world.population.home_city[cols["row"][rows]].astype(np.int64),
        "amount_fen": cols["amount_fen"][rows],
        "reason": np.full(len(rows), R_QR_PLATFORM_DOWN, dtype=np.int64),
        "fallback": np.where(cash, FALLBACK_CASH, FALLBACK_NONE),
        "tx_id": np.full(len(rows), -1, dtype=np.int64),
    }
    return {name: col[~refused] for name, col in cols.items()}, refusals


def free_rides(world, day: int, taps: DayTaps, fares: dict[str, np.ndarray]):
    """Rides announced free on a line (``free_rides`` incidents of ``day``): the taps are
    recorded, their fare waived (as a concession: ``amount_fen`` 0) and labelled."""
    timeline: Timeline = world.incidents
    codes = timeline.of_kind("free_rides", day)
    if not codes or not len(taps):
        return taps, fares
    t_abs = day * DAY_S + taps.t_s.astype(np.int64)
    incident = taps.incident.copy()
    fares = dict(fares)
    fares["concession_fen"] = fares["concession_fen"].copy()
    fares["amount_fen"] = fares["amount_fen"].copy()
    for k in codes:
        line = world.network.lines.ids.index(timeline.incidents[k].target)
        hit = np.flatnonzero((taps.line == line) & timeline.active(k, t_abs))
        fares["concession_fen"][hit] += fares["amount_fen"][hit]
        fares["amount_fen"][hit] = 0
        mark(incident, hit, k)
    return _replace(taps, incident=incident), fares


def _replace(taps: DayTaps, **columns) -> DayTaps:
    return DayTaps(**{f: columns.get(f, getattr(taps, f)) for f in taps.__dataclass_fields__})


def _gate_down(world, taps: DayTaps, t_abs: np.ndarray, k: int) -> tuple[DayTaps, int]:
    """A metro gate that is down: its riders use the station's next gate. A bus reader that is
    down: its riders pay cash, outside the card system."""
    devices = world.network.devices
    device = int(world.incidents.incidents[k].target)  # checked when the world is built
    hit = np.flatnonzero((taps.device == device) & world.incidents.active(k, t_abs))
    if not len(hit):
        return taps, 0
    stop = int(devices.stop[device])
    if devices.kind[device] == METRO and devices.count_of_stop[stop] > 1:
        first, count = int(devices.first_of_stop[stop]), int(devices.count_of_stop[stop])
        moved = taps.device.copy()
        moved[hit] = first + (device - first + 1) % count
        incident = taps.incident.copy()
        mark(incident, hit, k)
        return _replace(taps, device=moved, incident=incident), 0
    keep = np.ones(len(taps), dtype=bool)
    keep[hit] = False
    return taps.take(np.flatnonzero(keep)), len(hit)


def _to_other_bus_line(world, taps: DayTaps, hit: np.ndarray, k: int) -> DayTaps:
    """Riders of a bus line that is down board another line of the same region."""
    if not len(hit):
        return taps
    lines, devices = world.network.lines, world.network.devices
    line = int(taps.line[hit[0]])
    region = lines.region[line]
    others = np.flatnonzero((lines.region == region) & (lines.mode == BUS))
    others = others[others != line]
    others = others[others < world.n_local_lines]
    if not len(others):
        return taps
    pick = others[taps.journey[hit] % len(others)]
    new_line, new_device, new_stop = taps.line.copy(), taps.device.copy(), taps.stop.copy()
    new_line[hit] = pick
    new_device[hit] = devices.first_of_line[pick] + taps.journey[hit] % devices.count_of_line[pick]
    new_stop[hit] = lines.stop_ptr[pick]
    incident = taps.incident.copy()
    mark(incident, hit, k)
    return _replace(taps, line=new_line, device=new_device, stop=new_stop, incident=incident)


def _bridge_by_bus(world, taps: DayTaps, hit: np.ndarray, k: int) -> DayTaps:
    """Journeys whose metro leg meets an outage take a bridging bus of the region instead: their
    metro taps go, one bus tap at the first of them (same card, medium and tap key) comes."""
    if not len(hit):
        return taps
    network = world.network
    lines, stops, devices = network.lines, network.stops, network.devices
    journeys = np.unique(taps.journey[hit])
    leg = np.flatnonzero(np.isin(taps.journey, journeys) & (taps.mode == METRO))
    order = leg[stable_order(taps.journey[leg], taps.t_s[leg])]
    starts = order[np.r_[True, taps.journey[order][1:] != taps.journey[order][:-1]]]
    # A bus line of the region serving the station's zone, else any bus line of the region.
    region = lines.region[taps.line[starts]]
    zone = stops.zone[taps.stop[starts]]
    bus_stop = np.flatnonzero(lines.mode[stops.line] == BUS)
    bus_stop = bus_stop[stops.line[bus_stop] < world.n_local_lines]
    line_of = np.empty(len(starts), dtype=np.int64)
    stop_of = np.empty(len(starts), dtype=np.int64)
    for i, (r, z, j) in enumerate(
        zip(region.tolist(), zone.tolist(), taps.journey[starts].tolist(), strict=True)
    ):
        here = bus_stop[stops.zone[bus_stop] == z]
        if not len(here):
            here = bus_stop[lines.region[stops.line[bus_stop]] == r]
        stop_of[i] = here[j % len(here)]
        line_of[i] = stops.line[stop_of[i]]
    count = devices.count_of_line[line_of]
    bridge = taps.take(starts)
    incident = bridge.incident.copy()
    incident[incident == NO_INCIDENT] = k
    bridge = _replace(
        bridge,
        line=line_of.astype(taps.line.dtype),
        stop=stop_of.astype(taps.stop.dtype),
        device=(devices.first_of_line[line_of] + bridge.journey % count).astype(taps.device.dtype),
        mode=np.full(len(starts), BUS, dtype=taps.mode.dtype),
        kind=np.full(len(starts), TAP_SINGLE, dtype=taps.kind.dtype),
        distance_km=np.zeros(len(starts), dtype=taps.distance_km.dtype),
        incomplete=np.zeros(len(starts), dtype=bool),
        incident=incident,
    )
    keep = np.ones(len(taps), dtype=bool)
    keep[leg] = False
    rest = taps.take(np.flatnonzero(keep))
    merged = DayTaps(
        **{
            f: np.concatenate([getattr(rest, f), getattr(bridge, f)])
            for f in taps.__dataclass_fields__
        }
    )
    # Taps stay ordered as the planner made them: by card, then time.
    return merged.take(stable_order(merged.row, merged.t_s, merged.tap_key))


def duplicate_waves(
    world, streams: Streams, day: int, device: np.ndarray, t_s: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Taps a faulty reader charges twice (``duplicate_wave`` incidents of ``day``): their rows
    (among ``device``/``t_s``/``keys``, the day's charged card taps), the seconds until the
    second charge (inside the clearing's lock window, so the clearing finds them, unless the
    incident's ``duplicate_gap_max_s`` reaches beyond it), and each one's incident code."""
    timeline: Timeline = world.incidents
    rows, gaps, codes = [], [], []
    lock_s = max(1, int(world.scenario.clearing.retap_lock_s))
    t_abs = day * DAY_S + t_s.astype(np.int64)
    for k in timeline.of_kind("duplicate_wave", day):
        inc = timeline.incidents[k]
        hit = np.flatnonzero((device == int(inc.target)) & timeline.active(k, t_abs))
        u = streams.uniform("incident.duplicate_wave", day, keys[hit], 0)
        hit = hit[u < inc.duplicate_share]
        u_gap = streams.uniform("incident.duplicate_wave", day, keys[hit], 1)
        if inc.duplicate_gap_max_s:  # 1 .. max seconds: beyond the lock the clearing misses it
            gap = 1 + np.floor(u_gap * inc.duplicate_gap_max_s)
        else:  # inside the clearing's lock window: 1 .. lock - 1 seconds (at least 1)
            gap = 1 + np.floor(u_gap * (lock_s - 1))
        rows.append(hit)
        gaps.append(gap.astype(np.int64))
        codes.append(np.full(len(hit), k, dtype=np.int64))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(rows), np.concatenate(gaps), np.concatenate(codes)


def comm_outages(
    world, day: int, agent_of_device: np.ndarray, faults
) -> list[tuple[int, np.ndarray]]:
    """Set the uplink outage of the devices (upload agents) each comm_outage of ``day`` targets;
    returns (incident code, its agents) pairs."""
    timeline: Timeline = world.incidents
    hits = []
    lines = world.network.lines
    devices = world.network.devices
    for k in timeline.of_kind("comm_outage", day):
        target = timeline.incidents[k].target  # a device or a line: checked at world build
        if target.isdigit():
            device = np.array([int(target)])
        else:
            device = np.flatnonzero(devices.line == lines.ids.index(target))
        agents = np.unique(agent_of_device[device])
        faults.comm_start_s[agents] = timeline.start_s[k]
        faults.comm_end_s[agents] = timeline.end_s[k]
        hits.append((k, agents))
    return hits


def renewal_visits(world, streams: Streams, day: int) -> dict[str, np.ndarray]:
    """Card renewals of the renewal waves of ``day``: outlet index, cardholder row, arrival
    (seconds after midnight) and incident code of each extra visit."""
    timeline: Timeline = world.incidents
    parts = []
    for k in timeline.of_kind("renewal_wave", day):
        inc = timeline.incidents[k]
        outlet = next(i for i, o in enumerate(world.outlets) if o.outlet_id == int(inc.target))
        start = max(int(timeline.start_s[k]), day * DAY_S) - day * DAY_S
        end = min(int(timeline.end_s[k]), (day + 1) * DAY_S) - day * DAY_S
        n = int(round(inc.extra_visits_per_hour * (end - start) / 3600))
        holders = np.flatnonzero(world.home_outlet == outlet)
        if n <= 0 or not len(holders):
            continue
        key = np.arange(n, dtype=np.int64) + k * 1_000_000
        pick = holders[streams.integers("renewal.holder", day, key, len(holders))]
        pick = np.unique(pick)  # one visit per cardholder and day
        t = start + (streams.uniform("renewal.time", day, pick) * (end - start)).astype(np.int64)
        parts.append((np.full(len(pick), outlet), pick, t, np.full(len(pick), k)))
    if not parts:
        z = np.zeros(0, np.int64)
        return {"outlet": z, "row": z, "t_s": z, "incident": z}
    return {
        name: np.concatenate([p[i] for p in parts]).astype(np.int64)
        for i, name in enumerate(("outlet", "row", "t_s", "incident"))
    }


__all__ = ["SERVICE_OTHER", "comm_outages", "disrupt_taps", "renewal_visits"]
