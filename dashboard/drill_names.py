"""The names the drill pages give what a drill's data knows by id: lines, devices, outlets,
clearing nodes, issuers, QR platforms and metro stations, in the page's language, with the id
beside the name (staff read it out on the radio and write it on the ticket; the action forms
take it).

Where each name comes from:

- a line: its region and number for a generated bus line (``urban-B134``: 市区B134路, "Urban
  bus B134"), the scenario's name for a metro line, in English by rule (``M1``, named 1号线:
  地铁1号线, "Metro Line 1"; ``dashboard.lines``), the city it runs in for another city's line
  (``EXT-SHANGHAI``: 异地上海公交, "Bus in Shanghai");
- a device: what it is on which line (a bus reader of a line; a metro gate at a station);
- an outlet: the outlets file's name, in English words on an English page (``dashboard.names``);
- a clearing node or issuer: ``dashboard.institutions`` (from the played day's run_meta.json);
- a QR platform: the medium's words (``code.media.*``).

The lines, devices and outlets come from the drill's world without people
(``drills.runner.naming_world``: the same network the day is played on). A key none of these
knows (a device of a session whose drill changed base since) is shown as it is, after what it
is ("device 99"): a name is never made up.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from dashboard import i18n, institutions, lines, names, places
from drills.report import target_scope
from drills.runner import naming_world
from drills.session import DrillSession, chain_signatures, signature
from sim.errors import BadInput
from sim.network import METRO
from sim.run_lines import bus_line_number


@dataclass(frozen=True)
class DrillNames:
    """A drill's things by id → their names in ``lang`` (module docstring), per scope: the
    monitoring's scopes (``line``, ``device``, ``outlet``, ``node``, ``issuer``) and
    ``medium`` and ``station`` (incident targets)."""

    lang: str
    by_scope: dict[str, dict[str, str]]

    def name(self, per: str, key: object) -> str | None:
        """The name of ``key`` (an id of the scope ``per``) alone; None if it has none."""
        text = str(key)
        if per == "medium":
            return (
                i18n.code_label("media", text, self.lang)
                if i18n.has(f"code.media.{text}")
                else None
            )
        return self.by_scope.get(per, {}).get(text)

    def label(self, per: str, key: object) -> str:
        """``key`` as staff read it: its name and the id beside it, or, with no name known,
        what it is and the id ("device 99"); ``per == "all"`` is the whole city."""
        if per == "all":
            return i18n.t("drill.per.all", self.lang)
        name = self.name(per, key)
        if name is None:
            scope = f"drill.per.{per}"
            what = i18n.t(scope, self.lang) if i18n.has(scope) else per
            return i18n.t("drill.named_unknown", self.lang, what=what, id=key)
        return i18n.t("common.named", self.lang, name=name, id=key)

    def target(self, kind: str, target: str | None) -> str:
        """An incident's target (``kind``: the incident's kind) as staff read it; '' for a
        kind without one (a fare change)."""
        if not target:
            return ""
        scope = target_scope(kind, target)
        return target if scope is None else self.label(scope, target)

    def named(self, text: str) -> str:
        """What a trainee typed to name a cause (a node, an issuer, an outlet, a QR platform,
        a line or a device), with its name: as typed where the drill has nothing of that id.

        The words carry no scope, and ids of different scopes can be the same (outlet 3 and
        device 3: both numbered from 0 or 1), so no scope is guessed: every scope that has the
        id is named, in the order node, issuer, outlet, QR platform, line, device, joined by
        "or" ("Government Service Centre (3) or Urban bus B001 reader (3)"). The scoring reads
        the words as typed (``drills.debrief``), so a trainer sees every thing they could
        mean, not the one a lookup order would pick."""
        found = [
            self.label(per, text)
            for per in ("node", "issuer", "outlet", "medium", "line", "device")
            if self.name(per, text) is not None
        ]
        return i18n.t("drill.named_or", self.lang).join(found) if found else text


def drill_names(session: DrillSession, lang: str) -> DrillNames:
    """The names of ``session``'s drill in ``lang`` (kept while the drill script, its base
    scenario with every file of the base's ``extends:`` chain, and the played day's
    run_meta.json stay as they are: ``drills.session.signature``, ``chain_signatures``), so
    a base edited while the pages are open is named from at the next refresh.

    A drill whose base scenario or overrides do not load is reported by
    ``DrillSession.problem``, which the pages ask first; one edited into that state between
    that check and this gives no names (every key shown as "device 99"), not a traceback."""
    drill = session.drill
    try:
        meta_key = signature(session.folder / "day" / "run_meta.json")
    except OSError:  # the day is being played again: the institutions' names wait for it
        meta_key = None
    base = str(drill.base)
    files = chain_signatures(base)
    # A base whose chain cannot be followed has nothing to key on: not kept (its load fails).
    names = _names if files is not None else _names.__wrapped__
    try:
        return names(base, drill.day, tuple(drill.overrides), files, meta_key, lang)
    except (BadInput, ValueError):  # its world cannot be built: the next refresh says why
        return DrillNames(lang, {})


@functools.lru_cache(maxsize=32)
def _names(base, day, overrides, base_files, meta_key, lang) -> DrillNames:
    """``drill_names`` (``base_files``, ``meta_key``: the signatures it is kept under)."""
    world = naming_world(base, day, overrides)
    meta = _meta(meta_key)
    known = places.english_names(meta) if meta else {}
    by_scope = {
        "line": _line_names(world, lang, known),
        "outlet": {
            str(o.outlet_id): names.outlet_name(o.name_zh, lang, known) for o in world.outlets
        },
        "node": {},
        "issuer": {},
    }
    if meta:
        found = institutions.participant_names(meta, lang)
        roles = {pid: p.role for pid, p in _participants(meta).items()}
        for pid, shown in found.items():
            if roles.get(pid) == "clearing_node":
                by_scope["node"][pid] = shown
            elif roles.get(pid) == "issuer":
                by_scope["issuer"][pid] = shown
    by_scope["device"] = _device_names(world, by_scope["line"], lang)
    by_scope["station"] = _station_names(world, by_scope["line"], lang)
    return DrillNames(lang, by_scope)


def _meta(meta_key) -> dict:
    if meta_key is None:
        return {}
    try:
        return json.loads(Path(meta_key[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # replaced meanwhile: the next refresh has the new one
        return {}


def _participants(meta: dict) -> dict:
    from sim import api

    return api.run_participants(meta)


def _line_names(world, lang: str, known: dict[str, str]) -> dict[str, str]:
    """Every line of the world by id → its name (module docstring; ``known``: the run's
    Chinese place names in English, for a metro line named after a place)."""
    scenario, network_lines = world.scenario, world.network.lines
    metro = scenario.network.metro
    out = {}
    for index, line_id in enumerate(network_lines.ids):
        if index >= world.n_local_lines:
            out[line_id] = _away_line(world, index, lang)
            continue
        rid = world.region_ids[int(network_lines.region[index])]
        region = scenario.regions[rid].name_zh if lang == "zh" else i18n.place_name(rid)
        if int(network_lines.mode[index]) == METRO:
            if line_id in metro:
                out[line_id] = lines.line_label(metro[line_id].name_zh, lang, known)
        elif number := bus_line_number(line_id, rid):
            out[line_id] = lines.bus_line_label(region, number, lang)
    return out


def _away_line(world, index: int, lang: str) -> str:
    """Another city's line (``sim.interop``: a gateway): that city (and region), bus or metro."""
    gateway = world.gateways[index - world.n_local_lines]
    cid, city = list(world.scenario.interop.cities.items())[gateway.city - 1]
    place = city.name_zh if lang == "zh" else i18n.place_name(cid)
    region = (city.regions or {}).get(gateway.region_id or "")
    if region is not None:
        own = region.name_zh if lang == "zh" else i18n.place_name(gateway.region_id)
        place = f"{place}{own}" if lang == "zh" else f"{place} {own}"
    mode = "metro" if gateway.metro else "bus"
    return i18n.t(f"drill.name.away_{mode}", lang, place=place)


def _station_number(world, stop: int) -> int:
    """A stop's place along its line, from 1."""
    line = int(world.network.stops.line[stop])
    return stop - int(world.network.lines.stop_ptr[line]) + 1


def _device_names(world, line_names: dict[str, str], lang: str) -> dict[str, str]:
    """Every device by id → what it is on which line (a bus reader, a metro gate at a station)."""
    devices, ids = world.network.devices, world.network.lines.ids
    out = {}
    for device, (line, stop) in enumerate(zip(devices.line, devices.stop, strict=True)):
        line_name = line_names.get(ids[int(line)], ids[int(line)])
        if int(stop) < 0:
            out[str(device)] = lines.bus_reader_label(line_name, lang)
        else:
            out[str(device)] = lines.gate_label(line_name, _station_number(world, int(stop)), lang)
    return out


def _station_names(world, line_names: dict[str, str], lang: str) -> dict[str, str]:
    """Every metro station as an incident names it (``M1:5``: its index along the line, from
    0) → its name, numbered from 1 as the gates' are (``M1:5`` is the sixth station)."""
    network, out = world.network, {}
    for line, line_id in enumerate(network.lines.ids):
        if int(network.lines.mode[line]) != METRO:
            continue
        first, last = int(network.lines.stop_ptr[line]), int(network.lines.stop_ptr[line + 1])
        for index in range(last - first):
            out[f"{line_id}:{index}"] = lines.station_label(
                line_names.get(line_id, line_id), index, lang
            )
    return out


__all__ = ["DrillNames", "drill_names"]
