"""The cardholder population (sim/population.py, sim/world.py): card counts and ages by type, issue
years, dormancy, starting balances, visitors from other cities, and subsets."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from sim.api import build, load_scenario
from sim.codes import CARD_TYPES
from sim.interop import VISITOR_ID_BASE
from sim.population import RIDER_DORMANT

SMALL = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"


@pytest.fixture(scope="module")
def year_world():
    """small_ci over the whole of 2024, so "issued in the period" means "issued in 2024"."""
    return build(load_scenario(SMALL, days=366))


@pytest.fixture(scope="module")
def world():
    return build(load_scenario(SMALL, days=5))


def _local(pop) -> np.ndarray:
    return pop.home_city == 0


def test_card_counts_per_type_equal_the_scenario(world):
    pop = world.population
    local = _local(pop)
    expected = {name: spec.count for name, spec in world.scenario.population.card_types.items()}
    counts = np.bincount(pop.card_type[local], minlength=len(CARD_TYPES))
    assert {name: int(counts[CARD_TYPES.index(name)]) for name in expected} == expected
    assert int(local.sum()) == sum(expected.values())
    # Card ids are 0..N-1 for Nantong cards; visitors have their own id blocks above them.
    assert np.array_equal(pop.card_id[local], np.arange(int(local.sum())))
    assert (pop.card_id[~local] >= VISITOR_ID_BASE).all()
    assert (np.diff(pop.card_id) > 0).all()  # ascending: ids map back to rows


def test_ages_lie_within_each_type_range(world):
    pop = world.population
    local = _local(pop)
    start = world.scenario.period.start.toordinal()
    for name, spec in world.scenario.population.card_types.items():
        rows = local & (pop.card_type == CARD_TYPES.index(name))
        ages = pop.age[rows]
        assert ages.min() >= spec.age_min, name
        assert ages.max() <= spec.age_max, name
        # The triangular draw peaks near the mode: the median sits between min and max.
        assert spec.age_min <= np.median(ages) <= spec.age_max
        # Birth dates agree with the age at period start (within a year).
        years = (start - pop.birth_ord[rows]) / 365.25
        assert np.all(np.abs(years - ages - 0.5) <= 0.51), name


def test_issue_years_follow_the_issue_year_weights(year_world):
    pop = year_world.population
    local = _local(pop)
    weights = year_world.scenario.population.issue_year_weights
    total = sum(weights.values())
    start = year_world.scenario.period.start
    start_ord = start.toordinal()
    issue_ord = start_ord + pop.issue_day[local].astype(np.int64)
    years = np.array([dt.date.fromordinal(int(o)).year for o in issue_ord])
    for year, weight in weights.items():
        assert (years == year).mean() == pytest.approx(weight / total, abs=0.01), year
    assert set(np.unique(years).tolist()) <= set(weights)

    in_period = (pop.issue_day[local] >= 0) & (pop.issue_day[local] < year_world.days)
    share_2024 = weights[start.year] / total
    assert in_period.mean() == pytest.approx(share_2024, rel=0.05)


def test_cards_in_the_period_are_sold_and_the_rest_exist_already(year_world):
    pop = year_world.population
    local = _local(pop)
    before = local & (pop.issue_day < 0)
    assert before.sum() > 0.8 * local.sum()
    # A card is issued before it stops being used.
    assert (pop.end_day[local] >= pop.issue_day[local]).all()


def test_elderly_cards_end_sooner_than_ordinary_cards(year_world):
    pop = year_world.population
    local = _local(pop)
    life = pop.end_day.astype(np.int64) - pop.issue_day
    longevity = local & (pop.card_type == CARD_TYPES.index("longevity"))
    ordinary = local & (pop.card_type == CARD_TYPES.index("ordinary"))
    # Mortality at 65+ adds to the attrition both share: a clearly shorter card life.
    assert np.median(life[longevity]) < 0.8 * np.median(life[ordinary])
    # So more of the elderly cards issued before the period are dead by its start.
    dead_elderly = (pop.end_day[longevity & (pop.issue_day < 0)] <= 0).mean()
    dead_ordinary = (pop.end_day[ordinary & (pop.issue_day < 0)] <= 0).mean()
    assert dead_elderly > dead_ordinary + 0.05


def test_balances_are_non_negative_and_riders_start_near_their_threshold(world):
    pop = world.population
    top = world.scenario.topups
    assert (pop.opening_balance_fen >= 0).all()
    assert (pop.topup_threshold_fen > 0)[_local(pop)].all()
    mean_topup = np.average(top.amounts_fen, weights=top.amount_weights)
    riders = _local(pop) & (pop.rider_class != RIDER_DORMANT)
    assert riders.sum() > 1000
    balance = pop.opening_balance_fen[riders]
    threshold = pop.topup_threshold_fen[riders].astype(np.int64)
    assert (balance >= threshold).all()
    assert (balance <= np.minimum(threshold + mean_topup, top.max_balance_fen)).all()
    # Spread across the whole band, not stuck at one end.
    position = (balance - threshold) / mean_topup
    assert 0.4 < np.median(position) < 0.6


def test_visitors_exist_with_interop_and_hold_no_nantong_balance(world):
    pop = world.population
    visitors = pop.home_city > 0
    cities = world.scenario.interop.cities
    per_city = np.bincount(pop.home_city[visitors], minlength=len(cities) + 1)[1:]
    # 20 people in each city's pool per daily visitor.
    assert per_city.tolist() == [20 * c.inbound_visitors_per_day for c in cities.values()]
    assert (pop.opening_balance_fen[visitors] == 0).all()
    assert (pop.topup_threshold_fen[visitors] == 0).all()
    # Visitors' ids sit in per-city blocks, and they ride in Nantong regions.
    assert pop.card_id[visitors].min() == VISITOR_ID_BASE
    assert (pop.region[visitors] < len(world.region_ids)).all()
    first = world.network.zones.first_of_region[pop.region[visitors]]
    count = world.network.zones.count_of_region[pop.region[visitors]]
    assert ((pop.home_zone[visitors] >= first) & (pop.home_zone[visitors] < first + count)).all()


def test_no_visitors_without_an_interop_section():
    world = build(load_scenario(SMALL, ["interop=null"], days=5))
    assert (world.population.home_city == 0).all()
    assert world.away_probability.shape == (len(world.region_ids), 0)


def test_subset_keeps_each_row_values(world):
    pop = world.population
    rows = np.array([len(pop) - 1, 0, 17, 5_000, 12_345, 20_100])
    sub = pop.subset(rows)
    assert len(sub) == len(rows)
    for field in dataclasses.fields(pop):
        full = getattr(pop, field.name)
        part = getattr(sub, field.name)
        assert part.dtype == full.dtype, field.name
        assert np.array_equal(part, full[rows]), field.name
    # A copy, not a view: the subset can be changed while the world stays read-only.
    before = int(pop.opening_balance_fen[rows[1]])
    sub.opening_balance_fen[1] += 100
    assert int(pop.opening_balance_fen[rows[1]]) == before
    with pytest.raises(ValueError, match="read-only"):
        pop.opening_balance_fen[rows[1]] += 100


def test_population_build_is_deterministic(world):
    again = build(load_scenario(SMALL, days=5)).population
    for field in dataclasses.fields(again):
        assert np.array_equal(getattr(again, field.name), getattr(world.population, field.name))


def test_a_derived_value_is_made_once_per_population_and_goes_with_it():
    import gc
    from functools import partial

    from sim import population

    def cardholders(n: int) -> population.Cardholders:
        fields = population.Cardholders.__dataclass_fields__
        return population.Cardholders(**{name: np.zeros(n, np.int64) for name in fields})

    one, other = cardholders(3), cardholders(5)
    builds: list[int] = []

    def build(pop):
        builds.append(len(pop.card_id))
        return len(pop.card_id)

    assert population.derived(one, "n", partial(build, one)) == 3
    assert population.derived(one, "n", partial(build, one)) == 3  # from the cache
    assert population.derived(other, "n", partial(build, other)) == 5  # its own
    assert population.derived(one, ("n", 2), partial(build, one)) == 3  # another key
    assert builds == [3, 5, 3]
    entries = len(population._derived)
    del one
    gc.collect()
    assert len(population._derived) == entries - 2  # both of its entries went with it
