"""Lines, stations and devices named in the page's language, wherever a page names what an
incident or a measure is about (the drill pages through ``dashboard/drill_names.py``, the
Explore page's incident timeline): 地铁1号线 / "Metro Line 1", 地铁1号线第6站 / "Metro Line 1
station 6", 市区B134路 / "Urban bus B134", 市区B134路车载读卡器 / "Urban bus B134 reader",
地铁1号线第6站闸机 / "Metro Line 1 station 6 gate".

A line's name is data: a metro line's is the scenario's ``network.metro.<id>.name_zh`` (the
scenario schema has no English name for a line). Chinese pages show it as written; English
pages by the rule of ``dashboard.names.metro_line_name`` (1号线 is "Line 1", S1线 "Line S1", a
line known by a name in English words and "Line", anything else in English words), so a city's
lines need their Chinese names only. A generated bus line has no name in the data but its
region and its number (its id, ``urban-B134``, is the region's id and the number): it is named
by them, the region as the pages name it (市区 / "Urban"). A device is named by what it is on
which line (a reader on a line's buses, a gate at a station of a line). A line or device the
data does not name is shown by its id, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dashboard import i18n, names
from sim import api


def line_label(name_zh: str, lang: str, known: Mapping[str, str] | None = None) -> str:
    """A metro line named ``name_zh`` in the scenario, as the pages write it in ``lang``
    (``known``: the run's Chinese place names in English, for a line named after a place)."""
    return i18n.t("common.metro_line", lang, name=names.metro_line_name(name_zh, lang, known))


def station_label(line: str, index: int, lang: str) -> str:
    """The station at ``index`` (from 0, as an incident's ``LINE:INDEX`` target counts) of the
    line named ``line``, numbered from 1 as riders and the gates' names count."""
    return i18n.t("common.metro_station", lang, line=line, station=index + 1)


def bus_line_label(region: str, number: str, lang: str) -> str:
    """A generated bus line of the region named ``region`` (in ``lang``), numbered ``number``
    (its id after the region's: ``B134``)."""
    return i18n.t("common.bus_line", lang, region=region, number=number)


def region_label(region: api.RunRegion, lang: str) -> str:
    """A region's own name as the line and device names carry it: Chinese as written, in
    English its scenario id in words (市区 / "Urban"; no city before it: a page that lists
    several cities' incidents names the city beside them)."""
    return region.zh if lang == "zh" else i18n.place_name(region.id)


def bus_reader_label(line: str, lang: str) -> str:
    """A reader on the buses of the line named ``line``."""
    return i18n.t("common.bus_reader", lang, line=line)


def gate_label(line: str, station: int, lang: str) -> str:
    """A metro gate at the station numbered ``station`` (from 1) of the line named ``line``."""
    return i18n.t("common.metro_gate", lang, line=line, station=station)


@dataclass(frozen=True)
class RunNames:
    """A run's lines and devices by (city index, id as an incident writes it) → name."""

    lines: dict[tuple[int, str], str]
    devices: dict[tuple[int, str], str]
    #: The cities (their index) whose network could not be rebuilt (``sim.run_lines``: a run
    #: written before it could be, or settings that no longer give the run's network): their
    #: bus lines and devices are shown by id, and the pages say why.
    unnamed_cities: tuple[int, ...] = ()


def run_names(meta: dict, lang: str, known: Mapping[str, str] | None = None) -> RunNames:
    """Every line and device of every city of a run (``api.run_lines``: its networks rebuilt
    from ``run_meta.json``) named in ``lang``: a metro line by the scenario's name
    (``run_metro_lines``), a bus line by its region and number, a device by what it is on which
    line. ``known``: the run's Chinese place names in English, for a line named after a place.
    What cannot be rebuilt (a run written before it could be) is left out: shown by its id,
    its city listed in ``unnamed_cities``."""
    metro = run_metro_lines(meta)
    lines: dict[tuple[int, str], str] = {
        key: line_label(name_zh, lang, known) for key, name_zh in metro.items()
    }
    devices: dict[tuple[int, str], str] = {}
    unnamed: list[int] = []
    for city in api.run_lines(meta):
        index = city.city.index
        if not city.lines:
            unnamed.append(index)
        for line in city.lines.values():
            if line.mode == "bus" and line.number:
                shown = bus_line_label(region_label(line.region, lang), line.number, lang)
                lines.setdefault((index, line.id), shown)
        for device in city.devices.values():
            line = lines.get((index, device.line.id), device.line.id)
            devices[(index, str(device.id))] = (
                gate_label(line, device.station, lang)
                if device.station is not None
                else bus_reader_label(line, lang)
            )
    return RunNames(lines, devices, tuple(unnamed))


def run_metro_lines(meta: dict) -> dict[tuple[int, str], str]:
    """Every city's metro lines in a run's ``run_meta.json``: (city index, line id) → the
    scenario's Chinese name (a region-split city's parts each list the lines of their
    regions); a line without a name is left out (shown by its id)."""
    entries = meta.get("cities") if isinstance(meta.get("cities"), list) else []
    found: dict[tuple[int, str], str] = {}
    for city in api.run_cities(meta):
        for shard in city.shards:
            entry = entries[shard] if shard < len(entries) else None
            settings = _mapping(_mapping(entry).get("settings"))
            for line_id, line in _mapping(_mapping(settings.get("network")).get("metro")).items():
                name = _mapping(line).get("name_zh")
                if isinstance(name, str) and name.strip():
                    found.setdefault((city.index, str(line_id)), name)
    return found


def _mapping(value: object) -> dict:
    """A settings block, or {} where a run written by another version has none."""
    return value if isinstance(value, dict) else {}


__all__ = [
    "RunNames",
    "bus_line_label",
    "bus_reader_label",
    "gate_label",
    "line_label",
    "region_label",
    "run_metro_lines",
    "run_names",
    "station_label",
]
