"""Metro lines and their stations named in the page's language, wherever a page names what an
incident or a measure is about (the drill pages through ``dashboard/drill_names.py``, the
Explore page's incident timeline): 地铁1号线 / "Metro Line 1", 地铁1号线第6站 / "Metro Line 1
station 6".

A line's name is data: the scenario's ``network.metro.<id>.name_zh`` (the scenario schema has
no English name for a line). Chinese pages show it as written; English pages by the rule of
``dashboard.names.metro_line_name`` (1号线 is "Line 1", S1线 "Line S1", a line known by a name
in English words and "Line", anything else in English words), so a city's lines need their
Chinese names only. A line the data does not name is shown by its id, as before.
"""

from __future__ import annotations

from collections.abc import Mapping

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


__all__ = ["line_label", "run_metro_lines", "station_label"]
