"""Cross-city riding (sim/interop.py, agents/citizen.away_today / away_taps): the gravity model,
taps on the other cities' gateway lines at their visitor fares, and interop validation."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from agents.citizen import MEDIA_YIMATONGXING, away_taps, away_today
from sim.api import BadInput, build, load_scenario
from sim.codes import MEDIA, STORED_VALUE_MEDIA
from sim.day import plan_day
from sim.interop import away_probability
from sim.records import name_tables
from sim.state import RunState

SMALL = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"
# Forty times the base rate of days away, so a few days of small_ci give hundreds of away taps.
BOOST = ["interop.away_days_per_card_year=4"]


@pytest.fixture(scope="module")
def world():
    return build(load_scenario(SMALL, BOOST, days=7))


def _city_index(world, city_id: str) -> int:
    """1-based city code of ``city_id`` (0 is Nantong)."""
    return list(world.scenario.interop.cities).index(city_id) + 1


def _plan_days(world, days):
    """Planned tap columns of ``days`` (devices all mapped to one agent: order is irrelevant)."""
    agents = np.zeros(len(world.network.devices.line), dtype=np.int64)
    state = RunState.fresh(world)
    plans = [plan_day(world, state, day, agents) for day in days]
    cols = [p.taps.filled() for p in plans]
    return plans, {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}


def test_regions_closer_to_a_city_are_away_there_more_often(world):
    regions = world.region_ids
    p = world.away_probability
    shanghai = _city_index(world, "shanghai") - 1
    for near in ("haimen", "qidong"):
        for far in ("haian", "rudong", "urban"):
            assert p[regions.index(near), shanghai] > p[regions.index(far), shanghai]
    taizhou = _city_index(world, "taizhou") - 1
    assert p[regions.index("haian"), taizhou] > p[regions.index("qidong"), taizhou]
    # In general: for each city, nearer regions (strictly) have higher chances.
    for j, city in enumerate(world.scenario.interop.cities.values()):
        km = np.array([city.distance_km[r] for r in regions])
        closer = km[:, None] < km[None, :]
        assert (p[:, j][:, None] > p[:, j][None, :])[closer].all()
        same = km[:, None] == km[None, :]
        assert np.isclose(p[:, j][:, None], p[:, j][None, :], rtol=1e-12, atol=0)[same].all()


def test_bigger_cities_attract_more_at_equal_distance(world):
    interop = world.scenario.interop
    p = world.away_probability
    urban = world.region_ids.index("urban")
    # Shanghai and Suzhou are both 110 km from the urban districts; Shanghai attracts 10 vs 5.
    assert interop.cities["shanghai"].distance_km["urban"] == 110
    assert interop.cities["suzhou"].distance_km["urban"] == 110
    ratio = (
        p[urban, _city_index(world, "shanghai") - 1] / p[urban, _city_index(world, "suzhou") - 1]
    )
    assert ratio == pytest.approx(10 / 5)


def test_away_today_draws_cities_with_the_model_probabilities(world):
    pop = world.population
    p = world.away_probability
    candidates = np.arange(len(pop))
    counts = np.zeros_like(p)
    n_days = 30
    for day in range(n_days):
        rows, city = away_today(pop, world.streams, day, candidates, p)
        assert (pop.home_city[rows] == 0).all()  # visitors are never "away" from Nantong
        assert ((city >= 1) & (city <= p.shape[1])).all()
        assert len(np.unique(rows)) == len(rows)
        np.add.at(counts, (pop.region[rows], city - 1), 1)
    exposure = np.bincount(pop.region[pop.home_city == 0], minlength=p.shape[0]) * n_days
    expected = p * exposure[:, None]
    # Binomial counts within 5 standard deviations (plus 3 for the smallest cells).
    assert (np.abs(counts - expected) <= 5 * np.sqrt(expected) + 3).all()
    regions = world.region_ids
    shanghai = _city_index(world, "shanghai") - 1
    rate = counts[:, shanghai] / exposure
    assert rate[regions.index("qidong")] > 2 * rate[regions.index("haian")]
    assert rate[regions.index("haimen")] > 2 * rate[regions.index("haian")]


def test_away_taps_are_on_the_city_gateway_line_at_the_visitor_fare(world):
    _, cols = _plan_days(world, range(5))
    cities = list(world.scenario.interop.cities.values())
    away = cols["city"] > 0
    assert away.sum() > 200
    line = cols["line"][away]
    city = cols["city"][away].astype(np.int64)
    assert (line >= world.n_local_lines).all()
    assert np.array_equal(line, world.n_local_lines + city - 1)
    assert np.array_equal(world.line_city[line], city)
    cids = list(world.scenario.interop.cities)
    assert [world.network.lines.ids[x] for x in line] == [
        f"EXT-{cids[c - 1].upper()}" for c in city
    ]
    # Each city's gateway has one stop and one device; taps use them.
    assert np.array_equal(cols["stop"][away], world.network.lines.stop_ptr[line])
    assert np.array_equal(cols["device"][away], world.network.devices.first_of_line[line])
    # The city code written on the record is the city's own JT/T code.
    city_codes = name_tables([world])[0]["city"]
    assert city_codes[0] == world.scenario.output.city_code
    assert {city_codes[c] for c in city} <= {c.city_code for c in cities}
    for c in np.unique(city):
        assert city_codes[c] == cities[c - 1].city_code
    # Visitor fare, no concessions (visitor_discount_pct is 0): free Nantong cards pay too.
    fare = np.array([c.visitor_fare_fen for c in cities])[city - 1]
    assert np.array_equal(cols["list_fare_fen"][away], fare)
    assert np.array_equal(cols["amount_fen"][away], fare)
    # Only Nantong cardholders are away; they pay by Nantong card or by 一码通行.
    pop = world.population
    assert (pop.home_city[cols["row"][away]] == 0).all()
    medium = cols["medium"][away]
    card = np.isin(medium, list(STORED_VALUE_MEDIA))
    assert (card | (medium == MEDIA_YIMATONGXING)).all()
    assert np.array_equal(cols["home_card"][away], card)
    takes_qr = np.array([c.accepts_yimatongxing for c in cities])[city - 1]
    assert takes_qr[~card].all()


def test_away_taps_come_from_the_regions_nearest_the_city(world):
    _, cols = _plan_days(world, range(5))
    pop = world.population
    shanghai = cols["city"] == _city_index(world, "shanghai")
    riders = np.unique(cols["row"][shanghai])
    per_region = np.bincount(pop.region[riders], minlength=len(world.region_ids))
    cards = np.bincount(pop.region[pop.home_city == 0], minlength=len(world.region_ids))
    share = per_region / cards
    regions = world.region_ids
    assert share[regions.index("qidong")] > share[regions.index("haian")]
    assert share[regions.index("haimen")] > share[regions.index("haian")]


def test_visitor_discount_applies_to_cards_only():
    world = build(
        load_scenario(SMALL, [*BOOST, "interop.cities.shanghai.visitor_discount_pct=20"], days=3)
    )
    _, cols = _plan_days(world, range(3))
    shanghai = cols["city"] == _city_index(world, "shanghai")
    card = shanghai & np.isin(cols["medium"], list(STORED_VALUE_MEDIA))
    qr = shanghai & (cols["medium"] == MEDIA.index("qr_yimatongxing"))
    assert card.sum() > 10 and qr.sum() > 0
    assert (cols["list_fare_fen"][shanghai] == 350).all()
    assert (cols["amount_fen"][card] == 280).all()
    assert (cols["concession_fen"][card] == 70).all()
    assert (cols["amount_fen"][qr] == 350).all()


# Visitor fares and percentages where ``fare * pct / 100`` in floats lands just below the whole
# fen it should be (18.4 % of 375 fen is 68.99999999999999, not 69): the concession is computed
# in basis points and rounded down, as the fare engine does at home (sim/fares.py). 29 %, 57 %
# and 58 % are the classic ``fare * (pct / 100)`` traps.
_EXACT_PCT = {
    "shanghai": (375, "18.4"),
    "suzhou": (625, "9.12"),
    "wuxi": (1000, "32.3"),
    "nanjing": (750, "16.4"),
    "taizhou": (100, "29"),
}
_ELDERLY_PCT = [(60, "57"), (65, "58"), (70, "65.6")]  # Taizhou's bands for visitors' cards


def test_visitor_concessions_are_whole_fen_rounded_down_from_basis_points():
    overrides = [*BOOST, "interop.away_card_share=1.0"]
    for city, (fare, pct) in _EXACT_PCT.items():
        overrides += [
            f"interop.cities.{city}.visitor_fare_fen={fare}",
            f"interop.cities.{city}.visitor_discount_pct={pct}",
        ]
    bands = ", ".join(f"{{age_min: {a}, discount_pct: {p}}}" for a, p in _ELDERLY_PCT)
    overrides.append(f"interop.cities.taizhou.elderly_discounts=[{bands}]")
    world = build(load_scenario(SMALL, overrides, days=3))
    _, cols = _plan_days(world, range(3))
    card = (cols["city"] > 0) & np.isin(cols["medium"], list(STORED_VALUE_MEDIA))
    card &= ~cols["incomplete"]
    age = world.population.age[cols["row"]]
    names = list(world.scenario.interop.cities)
    expected = []
    for i in np.flatnonzero(card).tolist():
        city = names[int(cols["city"][i]) - 1]
        fare, pct = _EXACT_PCT[city]
        if city == "taizhou":  # the oldest band reached, else the visitor discount
            pct = next((p for a, p in reversed(_ELDERLY_PCT) if age[i] >= a), pct)
        expected.append(math.floor(Fraction(fare) * Fraction(pct) / 100))
    seen = {names[c - 1] for c in np.unique(cols["city"][card]).tolist()}
    assert seen == set(_EXACT_PCT), seen
    assert (age[card & (cols["city"] == _city_index(world, "taizhou"))] >= 70).any()
    assert cols["concession_fen"][card].tolist() == expected
    assert np.array_equal(
        cols["amount_fen"][card], cols["list_fare_fen"][card] - cols["concession_fen"][card]
    )


def test_a_visitor_discount_with_more_than_two_decimals_is_refused():
    with pytest.raises(BadInput, match=r"interop.cities.shanghai.visitor_discount_pct.*two"):
        load_scenario(SMALL, ["interop.cities.shanghai.visitor_discount_pct=18.405"])


def test_city_accepting_no_nantong_cards_and_no_yimatongxing_yields_no_taps():
    closed = [
        *BOOST,
        "interop.cities.shanghai.accepts_home_cards=0",
        "interop.cities.shanghai.accepts_yimatongxing=false",
    ]
    world = build(load_scenario(SMALL, closed, days=3))
    shanghai = _city_index(world, "shanghai")
    plans, cols = _plan_days(world, range(3))
    # People do go to Shanghai (the plan counts them away) ...
    assert sum(p.stats["away"] for p in plans) > 50
    # ... but nothing they pay there reaches the Nantong card system.
    assert not (cols["city"] == shanghai).any()
    assert (cols["city"] > 0).any()  # other cities still accept Nantong cards

    # The same holds for away_taps called directly on the holders in Shanghai.
    pop = world.population
    rows, city = away_today(
        pop, world.streams, 0, np.flatnonzero(pop.home_city == 0), world.away_probability
    )
    in_shanghai = city == shanghai
    assert in_shanghai.sum() > 10
    taps = away_taps(
        pop,
        world.network,
        world.streams,
        0,
        rows[in_shanghai],
        city[in_shanghai],
        world.scenario.interop,
        world.n_local_lines,
        world.gateways,
    )
    assert len(taps) == 0


def test_city_accepting_every_card_gives_every_holder_there_a_tap():
    always = [*BOOST, "interop.away_card_share=1.0"]
    world = build(load_scenario(SMALL, always, days=2))
    pop = world.population
    suzhou = _city_index(world, "suzhou")
    rows, city = away_today(
        pop, world.streams, 1, np.flatnonzero(pop.home_city == 0), world.away_probability
    )
    there = rows[city == suzhou]
    assert len(there) > 10
    taps = away_taps(
        pop,
        world.network,
        world.streams,
        1,
        there,
        np.full(len(there), suzhou),
        world.scenario.interop,
        world.n_local_lines,
        world.gateways,
    )
    assert set(np.unique(taps.row).tolist()) == set(there.tolist())
    assert (np.bincount(taps.row)[there] >= 1).all()
    assert np.isin(taps.medium, list(STORED_VALUE_MEDIA)).all()
    assert (taps.t_s <= 23 * 3600 + 59 * 60).all()


def test_missing_region_distance_is_a_validation_error_naming_the_field():
    with pytest.raises(BadInput) as info:
        load_scenario(SMALL, ["interop.cities.shanghai.distance_km={urban: 110, haimen: 75}"])
    message = str(info.value)
    assert "interop.cities.shanghai.distance_km" in message
    for region in ("haian", "qidong", "rudong", "rugao"):
        assert region in message


def test_misspelt_interop_key_is_a_validation_error():
    with pytest.raises(BadInput) as info:
        load_scenario(SMALL, ["interop.cities.suzhou.atraction=5"])
    assert "atraction" in str(info.value)


def test_away_probability_names_a_region_without_distance(world):
    interop = world.scenario.interop
    with pytest.raises(ValueError, match="'tongzhou'"):
        away_probability(interop, [*world.region_ids, "tongzhou"])


def test_away_probability_refuses_people_away_most_days(world):
    interop = world.scenario.interop.model_copy(update={"away_days_per_card_year": 100.0})
    with pytest.raises(ValueError, match="away_days_per_card_year"):
        away_probability(interop, world.region_ids)


def test_a_city_sending_more_visitors_than_its_id_block_holds_is_refused():
    """Each city's visitors keep to their own block of card ids; more would run into the next
    city's."""
    nantong = Path(__file__).resolve().parent.parent / "scenarios" / "nantong_2024.yaml"
    with pytest.raises(BadInput, match=r"interop.cities.shanghai.inbound_visitors_per_day.*500000"):
        load_scenario(nantong, ["interop.cities.shanghai.inbound_visitors_per_day=600000"])
