"""Cross-city riding (交通联合 interoperability): Nantong cards and QR codes used in other cities,
and other cities' cards and QR codes used in Nantong.

Geography drives it. A cardholder's chance to spend a day in city ``c`` falls with distance from
the home region (a gravity model: attraction_c / distance^decay), so 海门 and 启东, which border
Shanghai, ride there far more than 海安 or 如东. Away, the holder taps the other city's buses and
metro with the Nantong card when that city accepts it (Shanghai uses the MOHURD standard: only
named Nantong cards work there), or with the interoperable QR code (一码通行), or pays another way.
A Nantong card used elsewhere gets the place's local concessions for visitors (MOT 2018 art. 31);
big cities' elderly and student concessions need local registration, so visitors pay the visitor
fare — the source of the small spend of Nantong's free-ride elderly cards.

Inbound, visitors from each city arrive at a daily rate (gravity again) and ride Nantong buses in
the regions nearest their home, paying with their own city's interoperable card or by QR.

Every cross-city tap is acquired by the place of use and cleared through the clearing hierarchy
(city exchange - provincial exchange - national centre); the external cities are clearing
counterparties with their own issuer, acquirer and exchange.
"""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

import numpy as np
from pydantic import Field, field_validator, model_validator

from sim.city_list import ListChange, TerminalLag
from sim.codes import CARD_TYPES, MEDIA
from sim.fare_rules import Pct
from sim.settings_base import SettingsModel
from sim.social_security import Venues
from sim.world_settings import scaled_count

Share = Annotated[float, Field(ge=0.0, le=1.0)]


#: Visitor card ids start here (above any host city's card id); each city gets a block this
#: large, holding 20 people per daily visitor.
VISITOR_ID_BASE = 1_000_000_000
VISITOR_IDS_PER_CITY = 10_000_000
VISITORS_PER_DAILY_VISITOR = 20


class _Model(SettingsModel):
    """The base of this module's settings (sim/settings_base.py)."""


class ExternalRegion(_Model):
    """A region of another city, where visitors' boardings are acquired."""

    name_zh: str = Field(description="Region name, e.g. 海门.")
    share: Share = Field(description="Share of the city's visitors' boardings made here.")


class AgeDiscount(_Model):
    """A concession a city gives interoperable cards of visitors from an age on."""

    age_min: Annotated[int, Field(ge=0, le=120)] = Field(description="Youngest age it applies to.")
    discount_pct: Pct = Field(
        description="Percent off (at most two decimals; rounded down to whole fen)."
    )


class ExternalCity(_Model):
    """Another city whose transit accepts interoperable cards and codes."""

    name_zh: str = Field(description="City name.")
    city_code: str = Field(description="JT/T city code written on its tap records.")
    exchange: str = Field(description="The city's clearing node (an id of clearing.network.nodes).")
    issuer_id: str | None = Field(
        None, description="Clearing id of the city's card issuer (default: <CITY>_CARD)."
    )
    acquirer_id: str | None = Field(
        None, description="Clearing id of the city's transit acquirer (default: <CITY>_TRANSIT)."
    )
    distance_km: dict[str, Annotated[float, Field(ge=0)]] = Field(
        description="Travel distance from each home-city region (region id -> km)."
    )
    attraction: float = Field(gt=0, description="Relative pull (size, jobs, services).")
    accepts_home_cards: Share = Field(
        description="Share of the home city's cards its readers accept (a MOHURD-standard city "
        "accepts only named cards)."
    )
    accepts_yimatongxing: bool = Field(description="Its transit accepts the 一码通行 QR code.")
    accepts_jiaotong_lianhe: Share = Field(
        1.0,
        description="Share of its readers taking 交通联合 cards: a visitor's social-security "
        "card with a 交通联合 transit application rides where they do "
        "(sim/social_security.py). Derived from its city: profile with links:.",
    )
    visitor_fare_fen: Annotated[int, Field(gt=0)] = Field(
        description="Mean fare a visitor pays per boarding there."
    )
    visitor_discount_pct: Pct = Field(
        0.0,
        description="Discount the city gives interoperable cards of visitors (percent, at most "
        "two decimals; rounded down to whole fen).",
    )
    inbound_visitors_per_day: Annotated[
        int, Field(ge=0, le=VISITOR_IDS_PER_CITY // VISITORS_PER_DAILY_VISITOR)
    ] = Field(
        description="Riders from this city riding the host city's transit on an average day "
        "(at most 500,000: the city's visitors keep to their own block of card ids)."
    )
    inbound_card_share: Share = Field(
        description="Share of those visitors paying with their own city's interoperable card."
    )
    elderly_discounts: tuple[AgeDiscount, ...] = Field(
        (),
        description="The city's age-based concessions for visitors' interoperable cards (MOT "
        "2018 art. 31: the local concessions of the place of use): a holder gets the discount of "
        "the oldest band reached, else visitor_discount_pct. Derived from the city's own file in "
        "a run with links: (empty when it gives visitors none).",
    )
    regions: dict[str, ExternalRegion] | None = Field(
        None,
        description="Where in the city visitors ride (region id -> name and share); omit for "
        "one gateway for the whole city. Set for the cities of a multi-city run with links:.",
    )
    venues: dict[str, Venues] | None = Field(
        None,
        description="Its culture venues that social-security cards enter (kind -> count, price, "
        "local discount, share of visits; sim/social_security.py); omit for none. Derived from "
        "its social_security: section with links:.",
    )
    culture_acquirer_id: str | None = Field(
        None, description="Clearing id of the operator of its venues (with venues)."
    )
    same_city_venues: bool = Field(
        True, description="Visitors' social-security cards get the local discount at its venues."
    )
    metro_acquirer_id: str | None = Field(
        None,
        description="Clearing id of the operator acquiring visitors' metro rides (default: "
        "acquirer_id). Derived from the city's own file (its first metro operator) with links:.",
    )
    metro_region: str | None = Field(
        None,
        description="The region of its own (in regions) where its metro runs: where visitors' "
        "metro rides count. Derived with links:.",
    )
    metro_trip_share: Share = Field(
        0.0,
        description="Share of a visitor's boardings there made on its metro (tap in, tap out, "
        "the visitor fare charged at the exit); 0 where it runs none. Derived from the city's "
        "own file in a run with links: (its behaviour.metro_preference where it has metro).",
    )
    incomplete_fare_fen: Annotated[int, Field(ge=0)] = Field(
        0,
        description="What it charges for a metro entry without exit (不完整交易): its "
        "fares.incomplete_trip on its metro bands. Needed when metro_trip_share > 0.",
    )
    processes_visitors_incomplete: bool = Field(
        True,
        description="Its terminals complete a visitor's incomplete trip at the card's next tap "
        "there; else (and when the card does not tap there again that day) the card's issuer "
        "completes it before the card rides again (DOMAIN.md §2).",
    )

    @field_validator("regions")
    @classmethod
    def _shares_add_up(cls, value: dict | None) -> dict | None:
        if value is not None and abs(sum(r.share for r in value.values()) - 1.0) > 1e-6:
            raise ValueError("the regions' shares must add up to 1")
        return value

    @model_validator(mode="after")
    def _venues_have_an_operator(self) -> ExternalCity:
        if self.venues and self.culture_acquirer_id is None:
            raise ValueError(
                "culture_acquirer_id: a city with venues needs the clearing id of their operator"
            )
        return self

    @field_validator("incomplete_fare_fen")
    @classmethod
    def _charge_for_metro(cls, value: int, info) -> int:
        if info.data.get("metro_trip_share", 0.0) > 0 and value == 0:
            raise ValueError(
                "a city whose metro visitors ride (metro_trip_share > 0) needs what it charges "
                "for an entry without exit; expected fen > 0"
            )
        return value


class Gateway(NamedTuple):
    """One gateway line of an external city: the city (1..n), the region it stands for and
    its share of the city's bus boardings; or (``metro``) the line of its metro rides."""

    city: int
    region_id: str | None
    name_zh: str | None
    share: float
    metro: bool = False


def gateways(interop: Interop | None) -> list[Gateway]:
    """The external cities' gateway lines in line order, city by city: one per region where a
    city lists its regions, else one for the whole city; then, where visitors ride its metro,
    one for its metro rides."""
    out = []
    for j, city in enumerate([] if interop is None else interop.cities.values(), start=1):
        if city.regions:
            out += [Gateway(j, rid, r.name_zh, r.share) for rid, r in city.regions.items()]
        else:
            out.append(Gateway(j, None, None, 1.0))
        if city.metro_trip_share > 0:
            region = (city.regions or {}).get(city.metro_region or "")
            out.append(
                Gateway(
                    j, city.metro_region if region else None, region and region.name_zh, 0.0, True
                )
            )
    return out


class Interop(_Model):
    """The scenario's ``interop:`` section."""

    cities: dict[str, ExternalCity] = Field(description="External cities by id.")
    away_days_per_card_year: float = Field(
        ge=0,
        description="Days a year a typical riding cardholder spends in another city at unit "
        "gravity (attraction / (distance/100 km)^decay).",
    )
    distance_decay: float = Field(ge=0, description="Exponent of distance in the gravity model.")
    taps_per_away_day: float = Field(gt=0, description="Mean boardings on a day away.")
    visitor_concessions: Literal["none", "local"] = Field(
        "none",
        description="What visitors' interoperable cards get here: none (the list fare) or local "
        "(same-city treatment, MOT 2018 art. 31: the concessions of the local card type of the "
        "holder's age, population.concession_ages, else the ordinary card's). QR codes of "
        "visitors always pay the list fare.",
    )
    away_card_share: Share = Field(
        description="Chance a cardholder away uses the Nantong card where it is accepted (else "
        "QR where possible, else another payment outside the card system)."
    )
    list_changes: tuple[ListChange, ...] = Field(
        (),
        description="Changes of the interoperable city list during the period (sim/city_list.py); "
        "a multi-city file sets them for all its cities (list_changes:).",
    )
    terminal_update_days: dict[str, TerminalLag] = Field(
        default_factory=dict,
        description="Per acquirer id (an operator here or an interoperable city's acquirer): "
        "days its terminals take to apply a list change; others take the defaults (30 to add a "
        "city, 7 to remove one).",
    )

    @field_validator("cities")
    @classmethod
    def _ids(cls, value: dict) -> dict:
        for cid in value:
            if not cid.isidentifier():
                raise ValueError(f"city id {cid!r} must be a simple identifier")
        return value


def city_issuer(city_id: str, city: ExternalCity) -> str:
    """Clearing id of an external city's card issuer."""
    return city.issuer_id or f"{city_id.upper()}_CARD"


def city_acquirer(city_id: str, city: ExternalCity) -> str:
    """Clearing id of an external city's transit acquirer."""
    return city.acquirer_id or f"{city_id.upper()}_TRANSIT"


def city_metro_acquirer(city_id: str, city: ExternalCity) -> str:
    """Clearing id of the operator acquiring visitors' metro rides in an external city."""
    return city.metro_acquirer_id or city_acquirer(city_id, city)


def city_codes(scenario) -> list[str]:
    """JT/T codes of a scenario's city (index 0) and its interoperable cities (1..n)."""
    interop = scenario.interop
    others = [] if interop is None else [c.city_code for c in interop.cities.values()]
    return [scenario.output.city_code, *others]


def city_ids(interop: Interop | None) -> list[str]:
    """External city ids in code order (city code 0 is the home city)."""
    return [] if interop is None else list(interop.cities)


def away_probability(interop: Interop, region_ids: list[str]) -> np.ndarray:
    """Chance per day, [region, city], that a riding cardholder of the region is in the city."""
    p = np.zeros((len(region_ids), len(interop.cities)))
    for j, city in enumerate(interop.cities.values()):
        for i, rid in enumerate(region_ids):
            km = city.distance_km.get(rid)
            if km is None:
                raise ValueError(f"interop.cities: distance_km has no entry for region {rid!r}")
            gravity = city.attraction / max(km / 100.0, 0.1) ** interop.distance_decay
            p[i, j] = interop.away_days_per_card_year * gravity / 365.0
    if (p.sum(axis=1) >= 0.5).any():
        raise ValueError(
            "interop: cardholders would be away more than half their days; "
            "lower away_days_per_card_year"
        )
    return p


ELDERLY_OR_FREE = frozenset(
    CARD_TYPES.index(t)
    for t in ("longevity", "love", "preferential", "military", "teacher", "blood_donor", "student")
)
YIMATONGXING = MEDIA.index("qr_yimatongxing")


def extend_network(network, interop: Interop | None):
    """The network plus, per external city, pseudo gateway lines, each with one stop and one
    device: one per region where the city lists its regions, else one (``gateways``).

    Taps in another city are acquired there; locally they only need a line (for the acquirer and
    the route name), a stop and an uploading device: the city's data gateway, which forwards its
    records to the exchange like a bus validator uploads at the depot.
    """
    from dataclasses import replace

    from sim.network import BUS, METRO

    if interop is None or not interop.cities:
        return network
    lines, stops, devices = network.lines, network.stops, network.devices
    n_lines = len(lines.ids)
    ways = gateways(interop)
    k = len(ways)
    new_lines = np.arange(n_lines, n_lines + k, dtype=np.int32)
    cities = list(interop.cities.items())
    names = [
        f"EXT-{cities[g.city - 1][0].upper()}"
        + ("-METRO" if g.metro else f"-{g.region_id.upper()}" if g.region_id else "")
        for g in ways
    ]
    mode = np.array([METRO if g.metro else BUS for g in ways], np.uint8)
    operator = [
        (city_metro_acquirer if g.metro else city_acquirer)(*cities[g.city - 1]) for g in ways
    ]
    lines = replace(
        lines,
        ids=lines.ids + names,
        mode=np.concatenate([lines.mode, mode]),
        region=np.concatenate([lines.region, np.zeros(k, np.uint8)]),
        operator=lines.operator + operator,
        speed_kmh=np.concatenate([lines.speed_kmh, np.full(k, 20.0, np.float32)]),
        stop_ptr=np.concatenate([lines.stop_ptr, lines.stop_ptr[-1] + 1 + np.arange(k)]).astype(
            np.int32
        ),
        opened_day=np.concatenate([lines.opened_day, np.full(k, -(10**6), np.int32)]),
    )
    stops = replace(
        stops,
        line=np.concatenate([stops.line, new_lines]),
        zone=np.concatenate([stops.zone, np.zeros(k, np.int32)]),
        pos_km=np.concatenate([stops.pos_km, np.zeros(k, np.float32)]),
        name=stops.name + [f"{name}-GW" for name in names],
    )
    n_dev = len(devices.line)
    devices = replace(
        devices,
        line=np.concatenate([devices.line, new_lines]),
        stop=np.concatenate([devices.stop, np.full(k, -1, np.int32)]),
        # The gateway's device uploads like a bus validator at the depot, metro rides too.
        kind=np.concatenate([devices.kind, np.full(k, BUS, np.uint8)]),
        first_of_line=np.concatenate([devices.first_of_line, n_dev + np.arange(k, dtype=np.int32)]),
        count_of_line=np.concatenate([devices.count_of_line, np.ones(k, np.int32)]),
        first_of_stop=np.concatenate([devices.first_of_stop, np.full(k, -1, np.int32)]),
        count_of_stop=np.concatenate([devices.count_of_stop, np.zeros(k, np.int32)]),
    )
    return replace(network, lines=lines, stops=stops, devices=devices)


def visitors(
    interop: Interop | None, region_ids, network, streams, first_card_id: int, scale: float = 1.0
):
    """Visitors from the external cities as extra population rows (``home_city`` > 0).

    Each city's pool holds 20 people per daily visitor, each riding on about one day in 20; they
    stay in the Nantong regions nearest their home city (gravity on distance) and run errands.
    A city simulated at ``scale`` < 1 gets that share of its visitors too.
    """
    from sim.population import NEVER, NO_QR, RIDER_OCCASIONAL, Cardholders

    if interop is None or not interop.cities:
        return None
    parts = []
    ordinary = CARD_TYPES.index("ordinary")
    for j, (_cid, city) in enumerate(interop.cities.items(), start=1):
        n = scaled_count(city.inbound_visitors_per_day * VISITORS_PER_DAILY_VISITOR, scale)
        if n == 0:
            continue
        # Each city's visitors have their own id block: their draws do not move when another
        # city's (or Nantong's) numbers change.
        start = first_card_id + (j - 1) * VISITOR_IDS_PER_CITY
        ids = np.arange(start, start + n, dtype=np.int64)
        w = np.array(
            [
                1.0 / max(city.distance_km[r] / 100.0, 0.1) ** interop.distance_decay
                for r in region_ids
            ]
        )
        region = streams.categorical("visitor.region", 0, ids, w).astype(np.uint8)
        first = network.zones.first_of_region[region]
        count = network.zones.count_of_region[region]
        zone = (
            first
            + np.minimum(
                (streams.uniform("visitor.zone", 0, ids) ** 1.6 * count).astype(np.int64), count - 1
            )
        ).astype(np.int32)
        card = streams.uniform("visitor.card", 0, ids) < city.inbound_card_share
        qr = MEDIA.index("qr_yimatongxing" if city.accepts_yimatongxing else "qr_alipay")
        age = (20 + streams.uniform("visitor.age", 0, ids) * 50).astype(np.uint8)
        parts.append(
            Cardholders(
                card_id=ids,
                card_type=np.full(n, ordinary, np.uint8),
                issued_card_type=np.full(n, ordinary, np.uint8),
                birth_ord=np.zeros(n, np.int32),
                age=age,
                sex=(streams.uniform("visitor.sex", 0, ids) < 0.5).astype(np.uint8),
                region=region,
                home_zone=zone,
                work_zone=zone,
                issue_day=np.full(n, -(10**6), np.int32),
                end_day=np.full(n, NEVER, np.int32),
                rider_class=np.full(n, RIDER_OCCASIONAL, np.uint8),
                ride_prob=np.full(n, 1 / 20, np.float32),
                medium=np.zeros(n, np.uint8),
                qr_channel=np.where(card, NO_QR, qr).astype(np.uint8),
                qr_trip_share=np.where(card, 0.0, 1.0).astype(np.float32),
                am_s=np.full(n, 8 * 3600, np.int32),
                pm_s=np.full(n, 17 * 3600, np.int32),
                outlet_topup=np.zeros(n, bool),
                topup_threshold_fen=np.zeros(n, np.int32),
                opening_balance_fen=np.zeros(n, np.int64),
                opening_card_counter=np.zeros(n, np.int32),
                home_city=np.full(n, j, np.uint8),
            )
        )
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out.concat(p)
    return out
