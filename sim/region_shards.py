"""One city as several shards, one per region (``cities.<id>.shards: regions``, multi-city file).

A city's regions are separate bus networks (riders ride in their home region; a few commuters
work in another one and ride at its ends only, sim/population.py), so a region's cardholders,
lines, devices and outlets form a shard of their own, and a large city (Nantong, most of the
Yangtze River Delta's work) can spread over several Dask workers. What the city's file gives
for the whole city is shared out:

- each card type's count, by the weights the population draws regions with (residents x card
  adoption, and x the 65+ share for the elderly types where every region has one), rounded
  with the largest remainders so the parts add up to the city's count;
- each external city's daily visitors, by the regions' gravity weights (sim.interop.visitors);
- metro lines, bus fares, distances to external cities and outlets, to the region they are in;
- incidents, to the part holding their target (a line, station or outlet); city-wide ones (a QR
  platform, a clearing node, a fare change) go to every part. A device id names a device of the
  whole city's numbering, which no part has: refused, with a message.

The parts share the city's issuer, acquirers and exchange (one clearing participant each). Each
part has its own world seed (the city's mixed with the region id) and its own block of card ids
(after the earlier parts' cards), so no two parts' cards, card numbers or identities collide;
its terminal ids carry its index (sim/records.py). A split run is not the unsplit run's
twin: its random draws differ (as two seeds' do); it is the same city, and identical in any
number of workers.
"""

from __future__ import annotations

import hashlib

import numpy as np
from pydantic import Field

from agents.outlet import load_outlets_csv
from sim.population import ELDERLY_AGE_MIN
from sim.world_settings import Section

#: ``cities.<id>.shards`` values: the city as one shard, or one shard per region.
SHARDINGS = ("city", "regions")


class RegionPart(Section):
    """Set on a region's scenario by the loader (never written in a file): which city it is a
    part of, and what the world build needs to keep the parts apart."""

    city: str = Field(description="Name of the whole city's scenario.")
    region: str = Field(description="The region this part simulates.")
    index: int = Field(ge=0, description="Position of the part among its city's parts.")
    first_card_id: int = Field(ge=0, description="Card id of the part's first cardholder.")
    other_regions_zh: tuple[str, ...] = Field(
        description="Names of the city's other regions: their outlets are the other parts'."
    )


def split_by_region(scenario) -> list:
    """One scenario per region of ``scenario`` (a validated city scenario), in region order.
    Raises ValueError naming the field that cannot be split."""
    outlets = load_outlets_csv(scenario.outlets.file)
    outlet_region = {o.outlet_id: o.region_zh for o in outlets}
    city_regions = {r.name_zh for r in scenario.regions.values()}
    stray = sorted(oid for oid, zh in outlet_region.items() if zh not in city_regions)
    if stray:
        raise ValueError(
            f"outlets.file: outlets {stray[:10]} are in regions that are not the city's "
            f"({', '.join(sorted(city_regions))}); a city split by region needs every outlet "
            "in one of them"
        )
    region_ids = list(scenario.regions)
    card_counts = _card_counts(scenario)
    visitors = _visitor_counts(scenario)
    targets = _incident_regions(scenario, outlet_region)
    world_seed = scenario.seed if scenario.world_seed is None else scenario.world_seed
    parts, first_card_id = [], 0
    for index, rid in enumerate(region_ids):
        region = scenario.regions[rid]
        part = RegionPart(
            city=scenario.name,
            region=rid,
            index=index,
            first_card_id=first_card_id,
            other_regions_zh=tuple(
                r.name_zh for other, r in scenario.regions.items() if other != rid
            ),
        )
        first_card_id += sum(counts[index] for counts in card_counts.values())
        update = {
            "name": f"{scenario.name}.{rid}",
            "world_seed": _part_seed(world_seed, rid),
            "regions": {rid: region},
            "network": _network_of(scenario.network, rid),
            "population": _population_of(scenario.population, card_counts, index),
            "fares": _fares_of(scenario.fares, rid),
            "outlets": _outlets_of(scenario.outlets, outlet_region, region.name_zh),
            "incidents": tuple(
                _incident_of(inc, rid)
                for inc, where in zip(scenario.incidents, targets, strict=True)
                if where in (None, rid)
            ),
            "region_part": part,
        }
        if scenario.interop is not None:
            update["interop"] = _interop_of(scenario.interop, visitors, rid, index)
        if scenario.reference is not None:
            fares = _fares_of(scenario.reference.fares, rid)
            update["reference"] = scenario.reference.model_copy(update={"fares": fares})
        parts.append(scenario.model_copy(update=update))
    return parts


def _part_seed(world_seed: int, region_id: str) -> int:
    """The part's world seed: the city's mixed with the region id (stable across runs)."""
    digest = hashlib.blake2b(f"{world_seed}:{region_id}".encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big")


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` shared out in proportion to ``weights`` in whole numbers that add up to it
    (largest remainders; ties to the earlier index); evenly if every weight is 0."""
    weights = np.asarray(weights, dtype=np.float64)
    if not weights.sum() > 0:
        weights = np.ones(len(weights))
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    left = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:left]] += 1
    return counts


def _card_counts(scenario) -> dict[str, np.ndarray]:
    """Each card type's cards per region, drawn as the population draws its regions."""
    regions = list(scenario.regions.values())
    weights = np.array([r.residents * r.card_adoption_weight for r in regions])
    shares = [r.aged_65_plus_share for r in regions]
    elderly_weights = None if None in shares else weights * np.array(shares)
    counts = {}
    for name, spec in scenario.population.card_types.items():
        elderly = elderly_weights is not None and spec.age_min >= ELDERLY_AGE_MIN
        counts[name] = apportion(spec.count, elderly_weights if elderly else weights)
    return counts


def _visitor_counts(scenario) -> dict[str, np.ndarray]:
    """Each external city's daily visitors per region (the gravity weights of the visitors)."""
    interop = scenario.interop
    if interop is None:
        return {}
    counts = {}
    for cid, city in interop.cities.items():
        w = np.array(
            [
                1.0 / max(city.distance_km[r] / 100.0, 0.1) ** interop.distance_decay
                for r in scenario.regions
            ]
        )
        counts[cid] = apportion(city.inbound_visitors_per_day, w)
    return counts


def _incident_regions(scenario, outlet_region: dict[int, str]) -> list[str | None]:
    """The region each incident acts in (None: city-wide, every part)."""
    by_zh = {r.name_zh: rid for rid, r in scenario.regions.items()}
    metro = {lid: line.region for lid, line in scenario.network.metro.items()}
    where: list[str | None] = []
    for i, inc in enumerate(scenario.incidents):
        target = inc.target or ""
        if inc.kind in (
            "clearing_node_outage",
            "qr_platform_outage",
            "fare_change",
            "deposit_call_unpaid",
            "desk_refund",
        ):
            where.append(None)
        elif inc.kind in ("outlet_closure", "renewal_wave", "outlet_extension"):
            outlet = int(target) if target.isdigit() else None
            if outlet not in outlet_region:
                raise ValueError(
                    f"incidents.{i}.target: unknown outlet {target!r}; expected one of "
                    f"{sorted(outlet_region)} (the outlets file)"
                )
            where.append(_region_of_outlet(by_zh, outlet_region[outlet], f"incidents.{i}"))
        elif inc.kind == "station_outage":
            where.append(metro[target.partition(":")[0]])
        elif target in metro:
            where.append(metro[target])
        elif "-B" in target and target.rpartition("-B")[0] in scenario.regions:
            where.append(target.rpartition("-B")[0])
        else:
            raise ValueError(
                f"incidents.{i}.target: {target!r} is a device id of the whole city, which a "
                f"region's shard does not number the same way; expected a line id (e.g. "
                f"{next(iter(scenario.regions))}-B001 or a metro line) or the city as one shard"
            )
    return where


def _incident_of(incident, region_id: str):
    """An incident as the part sees it: a fare change names only the part's bus fare."""
    if incident.kind != "fare_change" or "bus" not in (incident.fares or {}):
        return incident
    bus = dict(incident.fares["bus"])
    if "region_fare_fen" in bus:
        bus["region_fare_fen"] = {
            rid: fen for rid, fen in bus["region_fare_fen"].items() if rid == region_id
        }
    return incident.model_copy(update={"fares": {**incident.fares, "bus": bus}})


def _network_of(network, region_id: str):
    metro = {lid: line for lid, line in network.metro.items() if line.region == region_id}
    return network.model_copy(update={"metro": metro})


def _population_of(population, card_counts: dict[str, np.ndarray], index: int):
    card_types = {
        name: spec.model_copy(update={"count": int(card_counts[name][index])})
        for name, spec in population.card_types.items()
    }
    return population.model_copy(update={"card_types": card_types})


def _fares_of(fares, region_id: str):
    fen = {region_id: fares.bus.region_fare_fen[region_id]}
    return fares.model_copy(update={"bus": fares.bus.model_copy(update={"region_fare_fen": fen})})


def _region_of_outlet(by_zh: dict[str, str], region_zh: str, field: str) -> str:
    if region_zh not in by_zh:
        raise ValueError(
            f"{field}: the outlet's region {region_zh!r} (outlets file) is not one of the "
            f"city's regions ({', '.join(by_zh)}); a city split by region needs every outlet "
            "in one of them"
        )
    return by_zh[region_zh]


def _outlets_of(outlets, outlet_region: dict[int, str], region_zh: str):
    unknown = sorted(set(outlets.counters_by_outlet) - set(outlet_region))
    if unknown:
        raise ValueError(
            f"outlets.counters_by_outlet: unknown outlets {unknown}; expected ids of the "
            "outlets file"
        )
    counters = {
        oid: n for oid, n in outlets.counters_by_outlet.items() if outlet_region[oid] == region_zh
    }
    return outlets.model_copy(update={"counters_by_outlet": counters})


def _interop_of(interop, visitors: dict[str, np.ndarray], region_id: str, index: int):
    cities = {
        cid: city.model_copy(
            update={
                "distance_km": {region_id: city.distance_km[region_id]},
                "inbound_visitors_per_day": int(visitors[cid][index]),
            }
        )
        for cid, city in interop.cities.items()
    }
    return interop.model_copy(update={"cities": cities})


__all__ = ["SHARDINGS", "RegionPart", "apportion", "split_by_region"]
