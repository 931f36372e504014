"""The cardholder population as columns: one row per card, built in full at world construction.

Why columnar: Nantong has 1.7 M cards; one Python object each would cost gigabytes and seconds per
simulated day. Each attribute is one numpy array; a citizen is a row index. Attributes are drawn
from named random streams keyed by the card id, so a card's attributes do not depend on which other
cards are in the run (subsets and shards give the same rows).

Dormancy is modelled, not assumed: a card stops being used when its holder dies (Gompertz
mortality by age) or abandons/replaces it (attrition), counted from its issue date. The published
stock counts every card ever issued, so many rows are dead by 2024.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from sim.codes import CARD_TYPES, MEDIA
from sim.network import TransitNetwork
from sim.rng import Streams
from sim.world_settings import Behaviour, Population, Region, hhmm_to_s, scaled_count

RIDER_DORMANT, RIDER_OCCASIONAL, RIDER_REGULAR = 0, 1, 2
NO_QR = 255
NEVER = np.iinfo(np.int32).max
#: ``home_city`` of the scenario's own cardholders (visitors carry their city's index, 1..n).
HOME_CITY = 0


_T = TypeVar("_T")

# (id(population), what) -> (weak reference to the population, the value); an entry goes with
# its population.
_derived: dict[tuple[int, Hashable], tuple[weakref.ref, object]] = {}


def derived(pop: Cardholders, what: Hashable, build: Callable[[], _T]) -> _T:
    """``build()``, a value derived from ``pop`` alone (read-only once the world is built),
    made once per population and ``what`` and dropped with the population: a daily pass then
    gathers one precomputed column instead of several."""
    key = (id(pop), what)
    cached = _derived.get(key)
    if cached is not None and cached[0]() is pop:
        return cached[1]  # type: ignore[return-value]
    value = build()
    _derived[key] = (weakref.ref(pop, lambda _: _derived.pop(key, None)), value)
    return value


@dataclass
class Cardholders:
    """Columns of the population: who the cardholders are, as built with the world (read-only
    once the world is built; what a run changes is in ``sim.state.CardState``)."""

    card_id: np.ndarray  # int64, stable id (also the random-stream entity id)
    card_type: np.ndarray  # uint8, sim.codes.CARD_TYPES: the type the fare rules see
    # uint8, the type the card was issued as: what the holder's habits (how often and when they
    # ride) were drawn for; differs from card_type only where a policy re-derives types from age
    issued_card_type: np.ndarray
    birth_ord: np.ndarray  # int32, proleptic Gregorian ordinal of the birth date
    age: np.ndarray  # uint8, age at period start
    sex: np.ndarray  # uint8, 0 female 1 male
    region: np.ndarray  # uint8
    home_zone: np.ndarray  # int32
    work_zone: np.ndarray  # int32 (== home_zone for non-commuters)
    issue_day: np.ndarray  # int32, day index (relative to period start) the card was sold
    end_day: np.ndarray  # int32, first day the card is no longer used (death/attrition)
    rider_class: np.ndarray  # uint8, dormant/occasional/regular
    ride_prob: np.ndarray  # float32, chance to ride on an average day
    medium: np.ndarray  # uint8, 0 physical card, 1 NFC virtual card
    qr_channel: np.ndarray  # uint8, media code of the QR channel, NO_QR if none
    qr_trip_share: np.ndarray  # float32
    am_s: np.ndarray  # int32, habitual morning departure (s after midnight)
    pm_s: np.ndarray  # int32, habitual evening return
    outlet_topup: np.ndarray  # bool, tops up at an outlet rather than online
    topup_threshold_fen: np.ndarray  # int32
    # Where a run starts from (a run's changing values live in sim.state.CardState).
    opening_balance_fen: np.ndarray  # int64, stored value at the start of the period
    opening_card_counter: np.ndarray  # int32, JT/T 978 purchase counter at the start
    home_city: np.ndarray  # uint8, 0 = a Nantong card; k > 0 = a visitor from external city k

    def __len__(self) -> int:
        return len(self.card_id)

    def subset(self, rows: np.ndarray) -> Cardholders:
        """A population holding only ``rows`` (same card ids, so the same random numbers)."""
        return Cardholders(
            **{name: getattr(self, name)[rows] for name in self.__dataclass_fields__}
        )

    def concat(self, other: Cardholders) -> Cardholders:
        """This population followed by ``other`` (used to add visitors from other cities)."""
        return Cardholders(
            **{
                name: np.concatenate([getattr(self, name), getattr(other, name)])
                for name in self.__dataclass_fields__
            }
        )

    @property
    def is_local(self) -> np.ndarray:
        """Rows that are Nantong cards (not visitors)."""
        return self.home_city == HOME_CITY


def _triangular(u: np.ndarray, low: float, mode: float, high: float) -> np.ndarray:
    """Inverse CDF of the triangular distribution (vectorised)."""
    if high <= low:
        return np.full(u.shape, low, dtype=np.float64)
    c = (mode - low) / (high - low)
    left = low + np.sqrt(u * (high - low) * (mode - low))
    right = high - np.sqrt((1 - u) * (high - low) * (high - mode))
    return np.where(u < c, left, right)


def build_population(
    population: Population,
    behaviour: Behaviour,
    regions: dict[str, Region],
    network: TransitNetwork,
    streams: Streams,
    period_start: dt.date,
    period_days: int,
    scale: float = 1.0,
    first_card_id: int = 0,
) -> Cardholders:
    """Draw every card's attributes; card ids run from ``first_card_id`` (0 but for a region's
    part of a city, sim/region_shards.py) in ``population.card_types`` order. At ``scale`` < 1
    each card type keeps that share of its cards (the scenario's ``scale``)."""
    blocks = [
        (CARD_TYPES.index(name), spec.model_copy(update={"count": scaled_count(spec.count, scale)}))
        for name, spec in population.card_types.items()
    ]
    n = sum(spec.count for _, spec in blocks)
    ids = np.arange(first_card_id, first_card_id + n, dtype=np.int64)
    card_type = np.concatenate([np.full(spec.count, code, np.uint8) for code, spec in blocks])

    u_age = streams.uniform("pop.age", 0, ids)
    age = np.empty(n, dtype=np.float64)
    start = 0
    spec_of_row = np.empty(n, dtype=np.int16)
    for b, (_code, spec) in enumerate(blocks):
        sl = slice(start, start + spec.count)
        age[sl] = _triangular(u_age[sl], spec.age_min, spec.age_mode, spec.age_max + 0.999)
        spec_of_row[sl] = b
        start += spec.count
    age_years = np.floor(age).astype(np.int64)
    day_in_year = streams.integers("pop.birthday", 0, ids, 365)
    start_ord = period_start.toordinal()
    birth_ord = (start_ord - age_years * 365.25 - day_in_year).astype(np.int32)
    sex = (streams.uniform("pop.sex", 0, ids) < 0.5).astype(np.uint8)

    region = _draw_regions(regions, streams, ids, spec_of_row, [spec for _, spec in blocks])
    first = network.zones.first_of_region[region]
    count = network.zones.count_of_region[region]
    home_zone = (first + _centre_heavy(streams.uniform("pop.home", 0, ids), count)).astype(np.int32)

    def per_type(attr: str) -> np.ndarray:
        return np.array([getattr(spec, attr) for _, spec in blocks])[spec_of_row]

    commuter = per_type("commuter").astype(bool)
    work_local = first + _centre_heavy(streams.uniform("pop.work", 0, ids), count, centre=0.8)
    work_zone = np.where(commuter, work_local, home_zone).astype(np.int32)
    # A few commuters work in another region: they ride the bus at home and at work ends only.
    cross = commuter & (
        streams.uniform("pop.cross", 0, ids) < population.cross_region_commute_share
    )
    work_zone = np.where(cross, home_zone, work_zone)

    issue_day, end_day = _issue_and_end_days(
        population, streams, ids, age_years, start_ord, period_days
    )

    u_class = streams.uniform("pop.rider_class", 0, ids)
    regular = u_class < per_type("regular_share")
    occasional = ~regular & (u_class < per_type("regular_share") + per_type("occasional_share"))
    rider_class = np.where(regular, RIDER_REGULAR, np.where(occasional, RIDER_OCCASIONAL, 0))
    days = np.where(
        regular, per_type("regular_days_per_week"), per_type("occasional_days_per_week")
    )
    ride_prob = np.where(rider_class > 0, days / 7.0, 0.0).astype(np.float32)

    medium = (streams.uniform("pop.medium", 0, ids) < per_type("nfc_virtual_share")).astype(
        np.uint8
    )
    qr_user = streams.uniform("pop.qr_user", 0, ids) < per_type("qr_user_share")
    channels = list(population.qr_channel_mix)
    channel_codes = np.array([MEDIA.index(c) for c in channels], dtype=np.uint8)
    pick = streams.categorical(
        "pop.qr_channel", 0, ids, np.array(list(population.qr_channel_mix.values()))
    )
    qr_channel = np.where(qr_user, channel_codes[pick], NO_QR).astype(np.uint8)
    qr_trip_share = np.where(qr_user, per_type("qr_trip_share"), 0.0).astype(np.float32)

    am = hhmm_to_s(behaviour.am_departure_mean) + 60 * behaviour.am_departure_sd_min * (
        streams.normal("pop.am", 0, ids)
    )
    pm = hhmm_to_s(behaviour.pm_departure_mean) + 60 * behaviour.pm_departure_sd_min * (
        streams.normal("pop.pm", 0, ids)
    )
    am_s = np.clip(am, 5 * 3600, 11 * 3600).astype(np.int32)
    pm_s = np.clip(pm, 14 * 3600, 22 * 3600).astype(np.int32)

    outlet_topup = streams.uniform("pop.topup_channel", 0, ids) < per_type("outlet_topup_share")
    balance = streams.uniform("pop.balance", 0, ids)
    balance_fen = (-np.log1p(-balance) * population.initial_balance_mean_fen).astype(np.int64)
    counter = streams.integers("pop.counter", 0, ids, 2000).astype(np.int32)
    return Cardholders(
        card_id=ids,
        card_type=age_card_types(card_type, age_years, population.concession_ages),
        issued_card_type=card_type,
        birth_ord=birth_ord,
        age=np.clip(age_years, 0, 255).astype(np.uint8),
        sex=sex,
        region=region,
        home_zone=home_zone,
        work_zone=work_zone.astype(np.int32),
        issue_day=issue_day,
        end_day=end_day,
        rider_class=rider_class.astype(np.uint8),
        ride_prob=ride_prob,
        medium=medium,
        qr_channel=qr_channel,
        qr_trip_share=qr_trip_share,
        am_s=am_s,
        pm_s=pm_s,
        outlet_topup=outlet_topup,
        topup_threshold_fen=np.full(n, 0, dtype=np.int32),
        opening_balance_fen=balance_fen,
        opening_card_counter=counter,
        home_city=np.zeros(n, dtype=np.uint8),
    )


#: Card types whose holders are all at least this old are drawn where the elderly live.
ELDERLY_AGE_MIN = 60


def _draw_regions(regions, streams: Streams, ids, spec_of_row, specs) -> np.ndarray:
    """Each card's region: residents x adoption weight; for the elderly card types, where
    every region gives its share of residents aged 65+, residents x that share x adoption
    weight (the counties are older than the city). One stream, keyed by card id, so a card's
    draw is the same whichever weights apply."""
    weights = np.array([r.residents * r.card_adoption_weight for r in regions.values()])
    region = streams.categorical("pop.region", 0, ids, weights).astype(np.uint8)
    shares = [r.aged_65_plus_share for r in regions.values()]
    if any(share is None for share in shares):
        return region
    elderly_spec = np.array([spec.age_min >= ELDERLY_AGE_MIN for spec in specs])
    elderly = elderly_spec[spec_of_row]
    region[elderly] = streams.categorical(
        "pop.region", 0, ids[elderly], weights * np.array(shares)
    ).astype(np.uint8)
    return region


def age_card_types(
    card_type: np.ndarray, age: np.ndarray, concession_ages: dict[str, int]
) -> np.ndarray:
    """Card types with the age-based ones re-derived from the holder's age.

    Only cards of the types in ``concession_ages`` move (to ``card_type_for_age``); other cards
    (students, ordinary holders who never applied, ...) keep their type. Attributes drawn for the
    issued type (how often the holder rides) stay: the holder is the same person.
    """
    if not concession_ages:
        return card_type
    age_based = np.isin(card_type, [CARD_TYPES.index(n) for n in concession_ages])
    return np.where(age_based, card_type_for_age(age, concession_ages), card_type).astype(np.uint8)


def card_type_for_age(age: np.ndarray, concession_ages: dict[str, int]) -> np.ndarray:
    """The age-based card type a holder of ``age`` gets: the type with the highest starting age
    not above it (ties: the first listed), ordinary below them all."""
    derived = np.full(len(age), CARD_TYPES.index("ordinary"), np.uint8)
    assigned = np.zeros(len(age), bool)
    # Highest age first; sorted() is stable, so the listed order decides among equal ages.
    for name in sorted(concession_ages, key=lambda n: -concession_ages[n]):
        hit = ~assigned & (age >= concession_ages[name])
        derived[hit] = CARD_TYPES.index(name)
        assigned |= hit
    return derived


def _centre_heavy(u: np.ndarray, count: np.ndarray, centre: float = 0.6) -> np.ndarray:
    """Zone index in [0, count): low indices are drawn more often (a region's centre is zone 0's
    side of the grid), which makes bus demand denser downtown."""
    skew = u ** (1.0 + centre)
    return np.minimum((skew * count).astype(np.int64), count - 1)


def _issue_and_end_days(
    population: Population,
    streams: Streams,
    ids: np.ndarray,
    age_years: np.ndarray,
    start_ord: int,
    period_days: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Issue date from the yearly issuance weights; end of use from mortality and attrition."""
    years = np.array(sorted(population.issue_year_weights), dtype=np.int64)
    w = np.array([population.issue_year_weights[y] for y in years], dtype=np.float64)
    year = years[streams.categorical("pop.issue_year", 0, ids, w)]
    jan1 = np.array([dt.date(int(y), 1, 1).toordinal() for y in years])
    year_len = np.array([366 if y % 4 == 0 else 365 for y in years])
    k = np.searchsorted(years, year)
    issue_ord = jan1[k] + streams.integers("pop.issue_doy", 0, ids, year_len[k])
    issue_day = (issue_ord - start_ord).astype(np.int64)
    # Hazard per year at the holder's age mid-way between issue and the period: death + attrition.
    a, b = population.gompertz_mortality
    years_since_issue = np.maximum(-issue_day, 0) / 365.25
    mid_age = age_years - years_since_issue / 2.0
    hazard = np.exp(a + b * mid_age) + population.annual_attrition_pct / 100.0
    life_years = -np.log1p(-streams.uniform("pop.end", 0, ids)) / hazard
    end_day = issue_day + (life_years * 365.25).astype(np.int64)
    end_day = np.minimum(end_day, NEVER)
    return issue_day.astype(np.int32), end_day.astype(np.int32)
