"""The scenario: one validated, immutable description of a run.

A scenario is a YAML file (see scenarios/nantong_2024.yaml) loaded by ``sim.yaml_config``, which
adds file-and-line error messages, ``extends:`` overlays and ``--set`` overrides. This module only
composes the sections; each section's model lives next to the code that uses it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pydantic
import yaml
from pydantic import Field, ValidationInfo, field_validator

from agents.outlet import OutletSettings
from agents.validator import DeviceSettings
from sim.calendar import Calendar, CalendarSettings, load_calendar_file
from sim.city_list import ListChange
from sim.clearing import ClearingNetwork, ClearingSettings
from sim.codes import MEDIA
from sim.fare_rules import FareRules
from sim.incidents import Incident, check_incidents
from sim.interop import Interop
from sim.multi_city import (
    CityLinks,
    CityProfile,
    link_cities,
    share_city_list,
    share_node_outages,
    with_visitor_concessions,
)
from sim.reference import ReferencePricing, with_reference
from sim.region_shards import SHARDINGS, RegionPart, split_by_region
from sim.rng import MAX_SEED
from sim.social_security import SocialSecurity
from sim.world_settings import (
    Behaviour,
    CardSales,
    Network,
    OutputSettings,
    Period,
    Population,
    Region,
    Section,
    TopUps,
)
from sim.yaml_config import (
    FAST_SAFE_LOADER,
    ConfigError,
    ExistingFile,
    config_hash,
    field_origin,
    load_config,
)

__all__ = ["ConfigError", "MultiCityScenario", "Scenario", "load_scenario", "scenario_hash"]


class CalendarRef(Section):
    """The calendar comes from a file (holidays are national data shared by scenarios)."""

    file: ExistingFile = Field(
        description="YAML file with the calendar section (see sim/calendar)."
    )


class Scenario(Section):
    """A complete CardTwin scenario."""

    schema_version: Literal[1] = Field(description="Scenario format version.")
    name: str = Field(min_length=1, description="Short name, used in reports.")
    description: str = Field(default="", description="What the scenario represents.")
    seed: int = Field(
        ge=0,
        le=MAX_SEED,
        description="Root of the run's random streams: daily behaviour, devices, outlets.",
    )
    world_seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Root of the world's streams: the synthetic population, network and outlet "
        "placement. Default: the same as seed. Set it to replay one population under several "
        "run seeds (replications).",
    )
    period: Period = Field(description="Simulated days.")
    scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the cardholders (and of external cities' visitors) simulated; "
        "reports expand each city's figures by its expansion weight 1/scale. Money in the ledger "
        "is what was simulated. A multi-city file sets it per city (cities.<id>.scale).",
    )
    calendar: CalendarRef = Field(description="Day types: holidays, 调休, Spring Festival, terms.")
    regions: dict[str, Region] = Field(min_length=1, description="Regions by id.")
    network: Network = Field(description="Transit supply.")
    population: Population = Field(description="Cardholders.")
    behaviour: Behaviour = Field(description="Daily activity and trip rules.")
    fares: FareRules = Field(description="Fares and concessions (policy as data).")
    topups: TopUps = Field(description="Reloading stored value.")
    card_sales: CardSales = Field(description="New card sales.")
    outlets: OutletSettings = Field(description="Service outlets.")
    devices: DeviceSettings = Field(description="Validators: re-tap lock, uploads, faults.")
    clearing: ClearingSettings = Field(description="Clearing fees, cycles, settlement.")
    output: OutputSettings = Field(description="Output defaults.")
    interop: Interop | None = Field(
        default=None, description="Cross-city riding in and out (交通联合); omit for none."
    )
    social_security: SocialSecurity | None = Field(
        default=None,
        description="Social-security cards at culture venues, cleared on their own channel "
        "(sim/social_security.py); omit for none.",
    )
    city: CityProfile | None = Field(
        default=None,
        description="What other cities of a multi-city run with links: see of this one "
        "(sim/multi_city.py); omit for a city run on its own.",
    )
    incidents: tuple[Incident, ...] = Field(
        default=(), description="Incidents timeline: outages, closures, waves, fare changes."
    )
    region_part: RegionPart | None = Field(
        default=None,
        exclude=True,
        description="Set by the loader, never written: this scenario is one region of a city "
        "split into one shard per region (cities.<id>.shards: regions; sim/region_shards.py).",
    )
    reference: ReferencePricing | None = Field(
        default=None,
        exclude=True,
        description="Set by the loader, never written: the pricing riders are used to (the base "
        "of the extends: chain, sim/reference.py) when it differs from this scenario's; None "
        "when they pay what they are used to.",
    )

    @field_validator("region_part", "reference", mode="before")
    @classmethod
    def _set_by_the_loader(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            why = {
                "region_part": "is set by the loader for a city split by region "
                "(cities.<id>.shards: regions of a multi-city file)",
                "reference": "is derived from the base scenario of extends: (the prices riders "
                "are used to)",
            }[info.field_name]
            raise ValueError(f"{info.field_name} {why}; expected it not to be written")
        return value

    @field_validator("regions")
    @classmethod
    def _region_names_of_their_own(cls, regions: dict) -> dict:
        names: dict[str, str] = {}
        for rid, region in regions.items():  # records and outlets name regions by name_zh
            if region.name_zh in names:
                raise ValueError(
                    f"{rid}.name_zh: {region.name_zh!r} is also {names[region.name_zh]}'s; "
                    "expected a name of its own"
                )
            names[region.name_zh] = rid
        return regions

    @field_validator("regions")
    @classmethod
    def _age_shares_everywhere_or_nowhere(cls, regions: dict) -> dict:
        given = [rid for rid, r in regions.items() if r.aged_65_plus_share is not None]
        if given and len(given) != len(regions):
            missing = [rid for rid in regions if rid not in given]
            raise ValueError(
                f"aged_65_plus_share is given for {', '.join(given)} but not for "
                f"{', '.join(missing)}; expected it for every region or for none"
            )
        return regions

    @field_validator("population")
    @classmethod
    def _cards_issued_by_the_period_end(cls, population, info: ValidationInfo):
        period = info.data.get("period")
        if period is None:
            return population
        last_year = (period.start + dt.timedelta(days=period.days - 1)).year
        weights = population.issue_year_weights
        if not any(w > 0 for year, w in weights.items() if year <= last_year):
            raise ValueError(
                f"issue_year_weights: every card is issued after {last_year}, when the period "
                f"ends ({sorted(weights)}); expected weight on years up to {last_year}"
            )
        return population

    # Cross-references are checked on the field that holds them, so errors point at its line.
    @field_validator("network")
    @classmethod
    def _metro_regions(cls, network: Network, info: ValidationInfo) -> Network:
        regions = info.data.get("regions", {})
        for line_id, line in network.metro.items():
            if regions and line.region not in regions:
                raise ValueError(
                    f"network.metro.{line_id}.region: unknown region {line.region!r}; "
                    f"expected one of: {', '.join(regions)}"
                )
        return network

    @field_validator("fares")
    @classmethod
    def _fares_cover_regions(cls, fares: FareRules, info: ValidationInfo) -> FareRules:
        regions = info.data.get("regions", {})
        missing = sorted(set(regions) - set(fares.bus.region_fare_fen))
        if missing:
            raise ValueError(
                f"fares.bus.region_fare_fen has no fare for regions {missing}; every region "
                "needs one"
            )
        _known_keys("fares.bus.region_fare_fen", fares.bus.region_fare_fen, regions, "region")
        return fares

    @field_validator("clearing")
    @classmethod
    def _clearing_network(cls, clearing: ClearingSettings) -> ClearingSettings:
        check_network(clearing.network)
        return clearing

    @field_validator("interop")
    @classmethod
    def _interop_covers_regions(cls, interop: Interop | None, info: ValidationInfo):
        regions = set(info.data.get("regions", {}))
        clearing = info.data.get("clearing")
        nodes = clearing.network.nodes if clearing is not None and clearing.network else {}
        for cid, city in interop.cities.items() if interop else ():
            missing = sorted(regions - set(city.distance_km))
            if missing:
                raise ValueError(
                    f"interop.cities.{cid}.distance_km has no distance for regions {missing}"
                )
            _known_keys(f"interop.cities.{cid}.distance_km", city.distance_km, regions, "region")
            if nodes and city.exchange not in nodes:
                raise ValueError(
                    f"interop.cities.{cid}.exchange: unknown clearing node {city.exchange!r}; "
                    f"expected one of clearing.network.nodes: {', '.join(nodes)}"
                )
        output = info.data.get("output")
        if interop is not None and output is not None:  # a change may name this city itself
            known = [output.city_code, *(c.city_code for c in interop.cities.values())]
            for k, change in enumerate(interop.list_changes):
                if change.city_code not in known:
                    raise ValueError(
                        f"interop.list_changes.{k}.city_code: {change.city_code!r} is neither "
                        f"this city nor one of interop.cities; expected one of: {', '.join(known)}"
                    )
        return interop

    @field_validator("incidents")
    @classmethod
    def _incidents_hit_what_exists(cls, incidents: tuple[Incident, ...], info: ValidationInfo):
        network, clearing = info.data.get("network"), info.data.get("clearing")
        period, fares = info.data.get("period"), info.data.get("fares")
        if not incidents or None in (network, clearing, period, fares):
            return incidents
        last = period.start + dt.timedelta(days=period.days - 1)
        check_incidents(
            incidents,
            {
                "metro": {lid: line.stations for lid, line in network.metro.items()},
                "nodes": list(clearing.network.nodes) if clearing.network else [],
                "issuers": list(clearing.network.issuers) if clearing.network else [],
                "period": (period.start, last),
            },
        )
        for i, inc in enumerate(incidents):
            if inc.kind == "fare_change":
                try:
                    changed_fares(fares, inc)
                except ValueError as exc:
                    raise ValueError(f"incidents.{i}.fares: {exc}") from None
        return incidents

    @field_validator("social_security")
    @classmethod
    def _channel_is_a_node(cls, ssc: SocialSecurity | None, info: ValidationInfo):
        clearing = info.data.get("clearing")
        nodes = clearing.network.nodes if clearing is not None and clearing.network else {}
        if ssc is not None and nodes and ssc.channel not in nodes:
            raise ValueError(
                f"social_security.channel: unknown clearing node {ssc.channel!r}; expected one "
                f"of clearing.network.nodes: {', '.join(nodes)}"
            )
        return ssc

    @field_validator("output")
    @classmethod
    def _issuer_is_in_the_network(cls, output: OutputSettings, info: ValidationInfo):
        clearing = info.data.get("clearing")
        issuers = clearing.network.issuers if clearing is not None and clearing.network else {}
        if issuers and output.issuer_id not in issuers:
            raise ValueError(
                f"output.issuer_id: {output.issuer_id!r} is not an issuer of "
                f"clearing.network.issuers; expected one of: {', '.join(issuers)}"
            )
        return output

    def load_calendar(self) -> CalendarSettings:
        """The calendar settings from the referenced file."""
        return load_calendar_file(self.calendar.file)


class CityRef(Section):
    """One city of a multi-city run."""

    scenario: ExistingFile = Field(
        description="The city's own scenario file: its regions, network, population, fares, "
        "outlets and its view of the clearing hierarchy. Its seed seeds the city's world; the "
        "run's seed and period replace its own."
    )
    scale: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of the city's cardholders simulated (replacing its file's scale); "
        "its figures are expanded by 1/scale in reports.",
    )
    shards: Literal[SHARDINGS] = Field(  # type: ignore[valid-type]
        "city",
        description="city: the city is one shard; regions: one shard per region, so a large "
        "city spreads over several workers (sim/region_shards.py).",
    )


class RunOutputDir(Section):
    """Where a multi-city run writes."""

    dir: str = Field(description="Default output directory (the CLI's --out wins).")


class MultiCityScenario(Section):
    """Several cities simulated together, one shard each (or one per region: ``shards:``),
    cleared through one hierarchy."""

    schema_version: Literal[1] = Field(description="Scenario format version.")
    name: str = Field(min_length=1, description="Short name, used in reports.")
    description: str = Field(default="", description="What the run represents.")
    seed: int = Field(
        ge=0, le=MAX_SEED, description="Root of the run's random streams (every city's)."
    )
    period: Period = Field(description="Simulated days (replacing each city's own).")
    cities: dict[str, CityRef] = Field(min_length=1, description="Cities by id, in shard order.")
    list_changes: tuple[ListChange, ...] = Field(
        (),
        description="Changes of the interoperable city list during the period, for every city "
        "of the run (sim/city_list.py).",
    )
    visitor_concessions: Literal["none", "local"] | None = Field(
        None,
        description="What visitors' interoperable cards get in every city of the run (replacing "
        "each city's interop.visitor_concessions): local, the place's concessions (MOT 2018 art. "
        "31), or none (the policy question: do visiting elderly ride free?). Omit to keep each "
        "city's own.",
    )
    links: CityLinks | None = Field(
        None,
        description="Derive each city's view of the others from their own files (each needs a "
        "city: profile and map_lonlat on its regions; sim/multi_city.py); omit to keep what each "
        "city's interop: says.",
    )
    output: RunOutputDir = Field(description="Output defaults.")
    city_scenarios: tuple[Scenario, ...] = Field(
        default=(),
        exclude=True,
        description="The shards' loaded scenarios, in shard order: a city's, or one per region "
        "of a city split by region (set by the loader).",
    )


def _known_keys(path: str, mapping: dict, known, what: str) -> None:
    """A mapping keyed by region (or city) may only name ones the scenario defines (none
    known: the field that defines them failed, and its own error says why)."""
    if not known:
        return
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        key = unknown[0]
        hint = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(
            f"{path}.{key}: unknown {what} {key!r}{did_you_mean}; expected one of: "
            f"{', '.join(map(str, known))}"
        )


def changed_fares(fares: FareRules, incident: Incident) -> FareRules:
    """The fares in force during a fare_change: its ``fares`` merged onto the scenario's
    (mappings key by key, lists and values replaced), validated like the fares section."""

    def merge(base, overlay):
        if isinstance(base, dict) and isinstance(overlay, dict):
            return {k: merge(base.get(k), v) if k in base else v for k, v in overlay.items()} | {
                k: v for k, v in base.items() if k not in overlay
            }
        return overlay

    try:
        return FareRules.model_validate(merge(fares.model_dump(), incident.fares or {}))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: {first['msg']}") from None


def check_network(network: ClearingNetwork | None) -> None:
    """Cross-references of ``clearing.network``: parents, exchanges, media, no cycles."""
    if network is None:
        raise ValueError("clearing.network: missing; a scenario needs its clearing hierarchy")
    nodes = network.nodes
    known = ", ".join(nodes)
    for node_id, node in nodes.items():
        if node.parent is not None and node.parent not in nodes:
            raise ValueError(
                f"clearing.network.nodes.{node_id}.parent: unknown node {node.parent!r}; "
                f"expected one of: {known}"
            )
    for node_id in nodes:
        seen, node = set(), node_id
        while node is not None:
            if node in seen:
                raise ValueError(
                    f"clearing.network.nodes.{node_id}.parent: the hierarchy has a cycle "
                    f"through {node!r}"
                )
            seen.add(node)
            node = nodes[node].parent
    if network.home_exchange not in nodes:
        raise ValueError(
            f"clearing.network.home_exchange: unknown node {network.home_exchange!r}; "
            f"expected one of: {known}"
        )
    issued: dict[str, str] = {}
    for issuer_id, issuer in network.issuers.items():
        if issuer.exchange not in nodes:
            raise ValueError(
                f"clearing.network.issuers.{issuer_id}.exchange: unknown node "
                f"{issuer.exchange!r}; expected one of: {known}"
            )
        for medium in issuer.media:
            if medium not in MEDIA:
                raise ValueError(
                    f"clearing.network.issuers.{issuer_id}.media: unknown medium {medium!r}; "
                    f"expected one of: {', '.join(MEDIA)}"
                )
            if medium in issued:
                raise ValueError(
                    f"clearing.network.issuers.{issuer_id}.media: {medium!r} is already issued "
                    f"by {issued[medium]}"
                )
            issued[medium] = issuer_id
    missing = [m for m in MEDIA if m not in issued]
    if missing:
        raise ValueError(
            f"clearing.network.issuers: no issuer for media {missing}; every medium needs one"
        )


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario | MultiCityScenario:
    """Load and validate a scenario file — one city, or several (a file with ``cities:``);
    raises ConfigError with file/line/field on any problem."""
    if _is_multi_city(path):
        return _load_multi_city(path, overrides)
    _not_extending_a_multi_city_file(path)
    return _load_city(path, overrides)


def _not_extending_a_multi_city_file(path: str | Path) -> None:
    """``extends:`` merges one city's settings; a multi-city file under it would be read as one
    city missing every section (a screen of errors hiding the cause)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = yaml.load(f, Loader=FAST_SAFE_LOADER)
    except Exception:  # noqa: BLE001 - any problem is reported by the full loader, with lines
        return
    base = tree.get("extends") if isinstance(tree, dict) else None
    if isinstance(base, str) and _is_multi_city(Path(path).parent / base):
        raise ConfigError(
            [
                f"{field_origin(path, 'extends')}: extends: {base} is a multi-city file "
                "(cities:); expected one city's scenario (change a multi-city run with --set, "
                "or copy its file)"
            ]
        )


def _is_multi_city(path: str | Path) -> bool:
    """A multi-city file has a top-level ``cities:`` (read cheaply; errors are left to the full
    loader, which reports them with lines)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = yaml.load(f, Loader=FAST_SAFE_LOADER)
    except Exception:  # noqa: BLE001 - any problem is reported by the full loader, with lines
        return False
    return isinstance(tree, dict) and "cities" in tree and "extends" not in tree


def _load_multi_city(path: str | Path, overrides: Sequence[str]) -> MultiCityScenario:
    spec = load_config(path, MultiCityScenario, overrides)
    period = [f"period.start={spec.period.start.isoformat()}", f"period.days={spec.period.days}"]
    cities = []
    for city_id, city in spec.cities.items():
        scale = [] if city.scale is None else [f"scale={city.scale!r}"]
        if _is_multi_city(city.scenario):
            raise ConfigError(
                [
                    f"{field_origin(path, 'cities', overrides)}: cities.{city_id}.scenario: "
                    f"{city.scenario} is a multi-city file; expected one city's scenario"
                ]
            )
        try:
            scenario = _load_city(city.scenario, period + scale)
        except ConfigError as exc:
            raise ConfigError([f"{path}: cities.{city_id}: {p}" for p in exc.problems]) from None
        world_seed = scenario.seed if scenario.world_seed is None else scenario.world_seed
        cities.append(scenario.model_copy(update={"seed": spec.seed, "world_seed": world_seed}))
    ids, files = list(spec.cities), [str(c.scenario) for c in spec.cities.values()]
    if spec.visitor_concessions is not None:
        cities = [with_visitor_concessions(sc, spec.visitor_concessions) for sc in cities]
    if spec.links is not None:
        try:
            cities = link_cities(ids, files, cities, spec.links)
        except ValueError as exc:
            raise ConfigError([f"{field_origin(path, 'links', overrides)}: links: {exc}"]) from None
    try:
        cities = share_city_list(ids, files, cities, spec.list_changes)
        cities = share_node_outages(ids, files, cities)
    except ValueError as exc:
        where = field_origin(path, "list_changes" if spec.list_changes else "cities", overrides)
        raise ConfigError([f"{where}: {exc}"]) from None
    shards = []
    for (city_id, ref), scenario in zip(spec.cities.items(), cities, strict=True):
        if ref.shards == "city":
            shards.append(scenario)
            continue
        try:
            shards.extend(split_by_region(scenario))
        except ValueError as exc:
            where = field_origin(path, f"cities.{city_id}", overrides)
            raise ConfigError(
                [f"{where}: cities.{city_id}.shards: regions: {ref.scenario}: {exc}"]
            ) from None
    return spec.model_copy(update={"city_scenarios": tuple(shards)})


def _load_city(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    scenario = with_reference(load_config(path, Scenario, overrides), path, overrides)
    try:
        settings = scenario.load_calendar()
    except ValueError as exc:  # the message names the calendar file, line and field
        raise ConfigError(str(exc).splitlines()) from None
    try:
        Calendar(settings, scenario.period.start, scenario.period.days)
    except ValueError as exc:
        where = field_origin(path, "period", overrides)
        raise ConfigError(
            [f"{where}: period: {exc} (calendar.file: {scenario.calendar.file})"]
        ) from None
    return scenario


def scenario_hash(scenario: Scenario | MultiCityScenario) -> str:
    """SHA-256 of the validated scenario (recorded in run_meta.json); a multi-city run's covers
    each city's scenario too."""
    if isinstance(scenario, MultiCityScenario):
        parts = [config_hash(scenario)] + [scenario_hash(c) for c in scenario.city_scenarios]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()
    if scenario.reference is None:
        return config_hash(scenario)
    # The prices riders are used to (from the base of the extends: chain) change the results
    # too, though they are not part of the scenario's own content.
    reference = scenario.reference.model_dump_json(exclude={"source"})  # not where it lives
    return hashlib.sha256(f"{config_hash(scenario)}|{reference}".encode()).hexdigest()
