"""The places of a finished run as its readers name them: each shard's city and every region,
from ``run_meta.json`` alone (the settings each city ran with); and what happened where: every
city's incidents (``incidents``).

Places have two names in the data: the Chinese one the records and the Chinese pages use
(``name_zh``) and the scenario's id, in pinyin (``rudong``, ``shanghai``), from which the
English pages make theirs (``dashboard.i18n.place_name``). A region is keyed as the run's
queries key it (``sim/run_view.py``): its Chinese name, after its city's and a space for a city
other than the first (two cities' 市区 are two regions), so a reader can look any query's
region up here and name it in either language.

The institutions of the run's clearing (``participants``) are named the same way: by the Chinese
name the scenario gives a clearing node or an issuer (``name_zh``), and where it gives none (bus
and metro operators, another city's default card issuer and transit acquirer) by what it is and
the place it serves, so a reader can name it in either language without a name being invented.

A city's id is not a setting of the city itself: it is the key under which the other cities
of the run list it (``interop.cities``, by its city code; a multi-city file with ``links:``
derives them from its ``cities:`` ids). A city no other city lists (one city, or several that
do not know each other) falls back to its scenario's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.interop import city_acquirer, city_issuer, city_metro_acquirer


@dataclass(frozen=True)
class City:
    """One city of a run (a region-split city is one city over several shards)."""

    index: int  # position among the run's cities, in shard order (0: the home city)
    zh: str  # its Chinese name: what the records and the region keys carry
    key: str  # its id in the scenario data (pinyin): what an English page shows
    shards: tuple[int, ...]  # the shards simulating it
    outlets_file: str | None  # the outlets file it ran with (None: no outlets section)


@dataclass(frozen=True)
class Region:
    """One region of a run's city."""

    key: str  # as the run's queries key it: the Chinese name, prefixed for a later city
    zh: str  # its Chinese name
    id: str  # its id in the city's scenario (pinyin)
    city: City
    lonlat: tuple[float, float] | None  # its seat on the schematic map (None: no position)


@dataclass(frozen=True)
class Incident:
    """One incident of a run's timeline and the cities it was declared for."""

    settings: dict  # as run_meta.json keeps it (the scenario's fields: id, kind, start, ...)
    cities: tuple[City, ...]  # in run order; several for a clearing-node outage they share


@dataclass(frozen=True)
class Place:
    """A city another city of the run lists (``interop.cities``): a run's own city or not."""

    key: str  # its id (pinyin)
    zh: str  # its Chinese name


@dataclass(frozen=True)
class Participant:
    """One institution of the run's clearing, as the settlements and clearing batches name it
    (``id``), with what the run's settings say of it."""

    id: str
    role: str  # issuer, acquirer or clearing_node (sim.clearing.ROLES)
    zh: str | None  # its Chinese name, where the scenario gives one
    kind: str  # what it is, where it has no name: bus, metro, transit, card, ssc_card, venues
    region: Region | None  # the region it serves (a bus operator, a metro line's operator)
    place: City | Place | None  # else the city it serves


def other_cities(meta: dict) -> list[Place]:
    """Every city the run's cities list as interoperable (``interop.cities``), each once, in
    shard and scenario order."""
    found: dict[str, Place] = {}
    for entry in _entries(meta):
        for cid, city in _mapping(_mapping(_settings(entry).get("interop")).get("cities")).items():
            name = _mapping(city).get("name_zh")
            found.setdefault(str(cid), Place(str(cid), str(name or cid)))
    return list(found.values())


def participants(meta: dict) -> dict[str, Participant]:
    """Every clearing institution the run's settings name, by id: the clearing nodes and
    issuers of each city's network (with their Chinese names), each region's bus operator,
    each city's metro operators and social-security card issuer and venues, and the card
    issuer and acquirers of every interoperable city (their ids as ``sim.interop`` makes
    them). An institution listed twice keeps its first description (a city's own settings
    before what other cities list of it), unless a later one gives the name the first
    lacked."""
    found: dict[str, Participant] = {}

    def add(pid: object, role: str, zh: object = None, kind: str = "", region=None, place=None):
        if pid is None:
            return
        known = found.get(str(pid))
        if known is None or (known.zh is None and zh):
            found[str(pid)] = Participant(str(pid), role, zh and str(zh), kind, region, place)

    city_of = {shard: city for city in cities(meta) for shard in city.shards}
    region_of = {(r.city.index, r.id): r for r in regions(meta)}
    others = {p.key: p for p in other_cities(meta)}
    for shard, entry in enumerate(_entries(meta)):
        settings, city = _settings(entry), city_of[shard]
        network = _mapping(_mapping(settings.get("clearing")).get("network"))
        for nid, node in _mapping(network.get("nodes")).items():
            add(nid, "clearing_node", _mapping(node).get("name_zh"))
        for iid, issuer in _mapping(network.get("issuers")).items():
            add(iid, "issuer", _mapping(issuer).get("name_zh"))
        add(_mapping(settings.get("output")).get("issuer_id"), "issuer", None, "card", None, city)
        for rid, region in _mapping(settings.get("regions")).items():
            operator = _mapping(_mapping(region).get("bus")).get("operator_id")
            add(operator, "acquirer", None, "bus", region_of.get((city.index, str(rid))))
        for line in _mapping(_mapping(settings.get("network")).get("metro")).values():
            line = _mapping(line)  # named after the region it runs in: a city may have no name
            where = region_of.get((city.index, str(line.get("region"))))
            add(line.get("operator_id"), "acquirer", None, "metro", where, None if where else city)
        ssc = _mapping(settings.get("social_security"))
        add(ssc.get("issuer_id"), "issuer", None, "ssc_card", None, city)
        add(ssc.get("acquirer_id"), "acquirer", None, "venues", None, city)
    # What another city lists of a city comes last: a city of the run says more of its own
    # (its bus operator of a region, not "its transit").
    for entry in _entries(meta):
        for cid, listed in _mapping(
            _mapping(_settings(entry).get("interop")).get("cities")
        ).items():
            listed, place = _mapping(listed), others[str(cid)]
            ids = _ListedIds(
                listed.get("issuer_id"), listed.get("acquirer_id"), listed.get("metro_acquirer_id")
            )
            add(city_issuer(str(cid), ids), "issuer", None, "card", None, place)
            add(city_acquirer(str(cid), ids), "acquirer", None, "transit", None, place)
            add(city_metro_acquirer(str(cid), ids), "acquirer", None, "metro", None, place)
            add(listed.get("culture_acquirer_id"), "acquirer", None, "venues", None, place)
    return found


@dataclass(frozen=True)
class _ListedIds:
    """The clearing ids an ``interop.cities`` entry sets (None: sim.interop's default)."""

    issuer_id: str | None
    acquirer_id: str | None
    metro_acquirer_id: str | None


def city_labels(meta: dict) -> list[str]:
    """Each shard's city as a reader names it in Chinese (``run_meta.json`` ``cities``): a
    member city's Chinese name, a region shard's city, else its scenario's name."""
    labels = []
    for city in _entries(meta):
        settings = _settings(city)
        profile, part = _mapping(settings.get("city")), _part(city)
        labels.append(str(profile.get("name_zh") or part.get("city") or city.get("name", "")))
    return labels


def region_prefixes(meta: dict) -> list[str]:
    """Each shard's prefix to its regions' names in the run's queries: '' for the first city's
    shards (a one-city or region-split run reads as it always has), else its city's Chinese
    name and a space."""
    labels = city_labels(meta)
    return ["" if label == labels[0] else f"{label} " for label in labels]


def cities(meta: dict) -> list[City]:
    """The run's cities in shard order, each once (the shards of a region-split city share its
    name)."""
    entries, labels = _entries(meta), city_labels(meta)
    ids = _listed_ids(entries)
    found: dict[str, list[int]] = {}
    for shard, label in enumerate(labels):
        found.setdefault(label, []).append(shard)
    out = []
    for index, (label, shards) in enumerate(found.items()):
        first = entries[shards[0]]
        settings = _settings(first)
        part = _part(first)
        key = ids.get(str(first.get("city_code"))) or part.get("city") or first.get("name") or label
        outlets = _mapping(settings.get("outlets")).get("file")
        out.append(City(index, label, str(key), tuple(shards), outlets and str(outlets)))
    return out


def shard_city(meta: dict) -> list[int]:
    """Each shard's city (its ``City.index``)."""
    by_shard = {}
    for city in cities(meta):
        by_shard.update(dict.fromkeys(city.shards, city.index))
    return [by_shard[shard] for shard in range(len(_entries(meta)))]


def regions(meta: dict) -> list[Region]:
    """Every region of every city of the run, in shard and scenario order, each once (keyed as
    the queries key it)."""
    entries, prefixes = _entries(meta), region_prefixes(meta)
    city_of = {shard: city for city in cities(meta) for shard in city.shards}
    out: dict[str, Region] = {}
    for shard, entry in enumerate(entries):
        for rid, region in _mapping(_settings(entry).get("regions")).items():
            region = _mapping(region)
            zh = str(region.get("name_zh") or rid)
            key = prefixes[shard] + zh
            if key not in out:
                out[key] = Region(key, zh, str(rid), city_of[shard], _lonlat(region))
    return list(out.values())


def incidents(meta: dict) -> list[Incident]:
    """Every incident of the run, each once, with the cities it acts in: city by city in run
    order, each city's in its scenario's order.

    Two things make one incident appear in several shards' settings, and both are folded back
    here so a reader sees the timeline as it was declared: a clearing-node outage is the run's
    (``sim.multi_city.share_node_outages`` copies it, unchanged, to every city whose network has
    the node), so an incident equal in every field across cities is one, listed with all of
    them; and a region-split city gives each part the incidents acting in it, a fare change
    naming only that part's bus fare (``sim.region_shards``), so a city's parts' incidents of
    one id are merged back into one (their fields' union)."""
    entries = _entries(meta)
    found: list[tuple[dict, list[City]]] = []
    for city in cities(meta):
        own: dict[str, dict] = {}
        for shard in city.shards:
            listed = _settings(entries[shard]).get("incidents")
            for position, incident in enumerate(listed if isinstance(listed, list) else []):
                if not isinstance(incident, dict):
                    continue  # not an incident (a run_meta.json written by another tool)
                key = str(incident.get("id", f"#{position}"))
                own[key] = _union(own[key], incident) if key in own else incident
        for incident in own.values():
            shared = next((f for f in found if f[0] == incident), None)
            if shared is None:
                found.append((incident, [city]))
            else:
                shared[1].append(city)
    return [Incident(settings, tuple(where)) for settings, where in found]


def _union(first: dict, other: dict) -> dict:
    """Two parts' copies of one incident as one: mappings merged key by key (a fare change's
    bus fares by region), anything else as the first part has it."""
    merged = dict(first)
    for key, value in other.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _union(merged[key], value)
    return merged


def _listed_ids(entries: list[dict]) -> dict[str, str]:
    """City code → the id other cities of the run list that city under (``interop.cities``)."""
    ids: dict[str, str] = {}
    for entry in entries:
        interop = _mapping(_settings(entry).get("interop"))
        for cid, city in _mapping(interop.get("cities")).items():
            code = _mapping(city).get("city_code")
            if code is not None:
                ids.setdefault(str(code), str(cid))
    return ids


def _lonlat(region: dict) -> tuple[float, float] | None:
    value = region.get("map_lonlat")
    if isinstance(value, list | tuple) and len(value) == 2:
        try:
            return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
    return None


def _entries(meta: dict) -> list[dict]:
    return [c if isinstance(c, dict) else {} for c in (meta.get("cities") or [])]


def _settings(entry: dict) -> dict:
    return _mapping(entry.get("settings"))


def _part(entry: dict) -> dict:
    """A region's shard's ``region_part`` (its city and region), {} for a whole city. A run
    written before run_meta.json kept it names its parts "<city>.<region>" alone: a shard
    whose one region's id ends its name is read as that city's part."""
    part = _mapping(entry.get("region_part"))
    if part:
        return part
    name, regions = str(entry.get("name", "")), _mapping(_settings(entry).get("regions"))
    if len(regions) == 1:
        (rid,) = regions
        city, dot, region = name.rpartition(".")
        if dot and city and region == rid:
            return {"city": city, "region": rid}
    return {}


def _mapping(value: object) -> dict:
    """A settings block, or {} where a run written by an older version has none."""
    return value if isinstance(value, dict) else {}


__all__ = [
    "City",
    "Incident",
    "Participant",
    "Place",
    "Region",
    "cities",
    "city_labels",
    "incidents",
    "other_cities",
    "participants",
    "region_prefixes",
    "regions",
    "shard_city",
]
