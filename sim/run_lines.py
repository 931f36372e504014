"""The lines and devices of a finished run, from ``run_meta.json`` alone: each city's network
rebuilt from the settings it ran with (its regions and metro lines in the scenario's order,
its ``network`` section, its period's start and its world seed) by the engine's own
``sim.network.build_network``, without the routes (about 10 ms for Nantong's 387 lines and
3,176 devices), so a reader can say what an incident's device or line is: a bus reader of
which line, a metro gate at which station, a bus line of which region and number.

Why rebuilt rather than read from the records: a device id is an index into the network the
engine generated (``sim/network.py``), the same settings and world seed give the same network
(its random numbers are a function of the seed, ``sim/rng.py``), and a device an incident
silenced may have left no record to read (a dead reader's riders pay cash); a record's stop is
an index too. The order matters (a region's lines and devices are numbered after those of the
regions before it, and each region's random bus routes are drawn by its place) and
``run_meta.json`` sorts its keys, so a run keeps it beside the settings (``order``).

A city split by region (``sim/region_shards.py``) has a network per part, each numbering its
devices from 0: its lines are listed (their ids are the city's), its devices are not (no part's
numbering is the city's, and an incident of such a city may not name a device). A shard whose
settings cannot be read back — a run written before ``order`` and the network's fingerprint were
kept, or by a version whose network settings differ — or whose rebuilt network does not match
the fingerprint the run kept (``network_fingerprint``: a hand-edited ``order``, another
version's generator) lists nothing: a reader shows its lines and devices by their ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from sim.codes import MODES
from sim.network import TransitNetwork, build_network
from sim.rng import Streams
from sim.run_places import City, Region, cities, regions
from sim.world_settings import Network
from sim.world_settings import Region as RegionSettings


@dataclass(frozen=True)
class Line:
    """A line of a run's city, as its network has it."""

    id: str  # as the records' route_id and the incidents name it
    mode: str  # sim.codes.MODES: bus or metro
    region: Region  # the region it runs in
    number: str | None  # a generated bus line's number: its id after its region's ("B134")
    name_zh: str | None  # a metro line's name in the scenario (network.metro.<id>.name_zh)


@dataclass(frozen=True)
class Device:
    """A validator of a run's city: a bus reader (on a line's buses) or a metro gate (at a
    station of a line)."""

    id: int  # as the records' device_id and the incidents name it
    mode: str  # sim.codes.MODES: bus (a reader on a bus) or metro (a gate)
    line: Line
    station: int | None  # a gate's station along its line, from 1; None for a bus reader


@dataclass(frozen=True)
class CityLines:
    """One city's lines and devices, by id (``devices`` empty for a city split by region)."""

    city: City
    lines: dict[str, Line]
    devices: dict[int, Device]


def city_lines(meta: dict) -> list[CityLines]:
    """Every city of the run (``sim.run_places.cities``, in their order) with its lines and
    devices, as the engine built them (module docstring)."""
    entries = [c if isinstance(c, dict) else {} for c in (meta.get("cities") or [])]
    by_id = {(r.city.index, r.id): r for r in regions(meta)}
    out = []
    for city in cities(meta):
        lines: dict[str, Line] = {}
        devices: dict[int, Device] = {}
        for shard in city.shards:
            network = _network(entries[shard] if shard < len(entries) else {})
            if network is None:
                continue
            found, region_ids = network
            own = _lines(found, region_ids, entries[shard]["settings"], city, by_id)
            for line in own:
                lines.setdefault(line.id, line)
            if len(city.shards) == 1:
                devices = _devices(found, own)
        out.append(CityLines(city, lines, devices))
    return out


def network_fingerprint(network: TransitNetwork, local_lines: int | None = None) -> str:
    """A digest of what names a network's lines and devices: its first ``local_lines`` line
    ids in order (default: all; a run's world adds other cities' gateway lines after its own,
    which are not rebuilt), each one's first stop, and each device on them: its line, stop
    and kind. The run keeps it (``run_meta.json``); a rebuilt network that does not match it
    names nothing (module docstring)."""
    n = len(network.lines.ids) if local_lines is None else int(local_lines)
    on_local = np.asarray(network.devices.line) < n
    digest = hashlib.sha256()
    digest.update("\n".join(map(str, network.lines.ids[:n])).encode("utf-8"))
    for column in (
        np.asarray(network.lines.stop_ptr)[:n],
        np.asarray(network.devices.line)[on_local],
        np.asarray(network.devices.stop)[on_local],
        np.asarray(network.devices.kind)[on_local],
    ):
        digest.update(np.ascontiguousarray(column, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _network(entry: dict) -> tuple[TransitNetwork, list[str]] | None:
    """The network a shard ran on, rebuilt from its settings, with its region ids in order;
    None where the settings cannot be read back or the rebuilt network is not the run's (its
    fingerprint differs: a hand-edited ``order``, another version's network)."""
    settings, order = entry.get("settings"), entry.get("order")
    if not isinstance(settings, dict) or not isinstance(order, dict):
        return None
    try:
        regions, metro = settings["regions"], settings["network"]["metro"]
        if sorted(order["regions"]) != sorted(regions) or sorted(order["metro"]) != sorted(metro):
            return None  # not the settings' own order: nothing to rebuild them by
        found = {str(rid): RegionSettings.model_validate(regions[rid]) for rid in order["regions"]}
        network = Network.model_validate(
            {**settings["network"], "metro": {mid: metro[mid] for mid in order["metro"]}}
        )
        start = dt.date.fromisoformat(str(settings["period"]["start"]))
        seed = entry.get("world_seed")
        if seed is None:  # a run that did not write it: as sim.world.build_world takes it
            seed = settings.get("world_seed")
            seed = settings["seed"] if seed is None else seed
        built = build_network(found, network, Streams(int(seed)), start.toordinal(), routes=False)
    except (KeyError, TypeError, AttributeError, ValueError, ValidationError):
        return None
    if entry.get("network_fingerprint") != network_fingerprint(built):
        return None
    return built, list(found)


def _lines(
    network: TransitNetwork,
    region_ids: list[str],
    settings: dict,
    city: City,
    by_id: dict[tuple[int, str], Region],
) -> list[Line]:
    """The network's lines in order (a line whose region the run's places lack is left out:
    ``run_places`` and this read one settings block, so none is)."""
    metro = settings.get("network", {}).get("metro") or {}
    out = []
    for index, line_id in enumerate(network.lines.ids):
        rid = region_ids[int(network.lines.region[index])]
        region = by_id.get((city.index, rid))
        if region is None:
            continue
        mode = MODES[int(network.lines.mode[index])]
        number = bus_line_number(line_id, rid) if mode == "bus" else None
        name = (metro.get(line_id) or {}).get("name_zh") if mode == "metro" else None
        out.append(Line(line_id, mode, region, number, name if isinstance(name, str) else None))
    return out


def bus_line_number(line_id: str, region_id: str) -> str | None:
    """A generated bus line's number: its id after its region's id and a dash (the network
    makes ``urban-B134``, the 134th line of ``urban``: ``B134``); None for an id not so made."""
    prefix = f"{region_id}-"
    return line_id[len(prefix) :] if line_id.startswith(prefix) else None


def _devices(network: TransitNetwork, lines: list[Line]) -> dict[int, Device]:
    """Every device of the network by id (its index), on its line; a gate at its station."""
    by_index = dict(enumerate(network.lines.ids))
    known = {line.id: line for line in lines}
    devices, stop_ptr = network.devices, network.lines.stop_ptr
    out = {}
    for device, (line, stop, kind) in enumerate(
        zip(devices.line, devices.stop, devices.kind, strict=True)
    ):
        found = known.get(by_index[int(line)])
        if found is None:
            continue
        station = int(stop) - int(stop_ptr[int(line)]) + 1 if int(stop) >= 0 else None
        out[device] = Device(device, MODES[int(kind)], found, station)
    return out


__all__ = [
    "CityLines",
    "Device",
    "Line",
    "bus_line_number",
    "city_lines",
    "network_fingerprint",
]
