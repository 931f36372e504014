"""Tests for sim/metrics.py and sim/cross_city.py's day figures: the fused computation (one
key, two bincounts) against the definitions spelled out one mask at a time, on synthetic days
that hold every kind of tap (declined, refused by a full buffer, made in another city, on a
visitor's own card, metro entries complete or not, exits, QR codes)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sim.codes import CARD_TYPES, MEDIA, TAP_ENTRY, TAP_EXIT, is_elderly, is_stored_value
from sim.cross_city import NONE, PAYMENTS, city_codes, day_flows, region_keys
from sim.metrics import RunMetrics
from sim.population import HOME_CITY

N_REGIONS, N_CITIES, N_CARDS, N_LOCAL_LINES = 4, 3, 500, 9
GATEWAYS = [SimpleNamespace(region_id=r, name_zh=r) for r in ("x1", None, "x2")]


class _Taps(SimpleNamespace):
    def __len__(self) -> int:
        return len(self.row)


class _Population(SimpleNamespace):
    def __len__(self) -> int:
        return len(self.card_type)


def _world(seed: int) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    pop = _Population(
        card_type=rng.integers(0, len(CARD_TYPES), N_CARDS).astype(np.uint8),
        region=rng.integers(0, N_REGIONS, N_CARDS).astype(np.uint8),
        home_city=np.where(rng.random(N_CARDS) < 0.8, 0, rng.integers(1, N_CITIES, N_CARDS)).astype(
            np.uint8
        ),
        end_day=rng.integers(0, 30, N_CARDS).astype(np.int32),
    )
    regions = {f"r{i}": SimpleNamespace(name_zh=f"r{i}") for i in range(N_REGIONS)}
    scenario = SimpleNamespace(
        scale=0.5,
        regions=regions,
        output=SimpleNamespace(city_code="C0"),
        interop=SimpleNamespace(
            cities={f"c{i}": SimpleNamespace(city_code=f"C{i}") for i in (1, 2)}
        ),
    )
    n_lines = N_LOCAL_LINES + len(GATEWAYS)
    return SimpleNamespace(
        population=pop,
        region_ids=list(regions),
        scenario=scenario,
        network=SimpleNamespace(
            lines=SimpleNamespace(region=rng.integers(0, N_REGIONS, n_lines).astype(np.uint8))
        ),
        n_local_lines=N_LOCAL_LINES,
        gateways=GATEWAYS,
    )


def _taps(rng: np.random.Generator, n: int) -> _Taps:
    line = rng.integers(0, N_LOCAL_LINES + len(GATEWAYS), n).astype(np.int32)
    return _Taps(
        row=rng.integers(0, N_CARDS, n).astype(np.int64),
        declined=rng.random(n) < 0.1,
        device_refused=(rng.random(n) < 0.05).astype(np.uint8),
        city=np.where(line >= N_LOCAL_LINES, rng.integers(1, N_CITIES, n), 0).astype(np.uint8),
        home_card=rng.random(n) < 0.6,
        medium=rng.integers(0, len(MEDIA), n).astype(np.uint8),
        kind=rng.integers(0, 3, n).astype(np.uint8),
        incomplete=rng.random(n) < 0.2,
        amount_fen=rng.integers(0, 700, n).astype(np.int64),
        line=line,
    )


def _day(rng: np.random.Generator, day: int, n: int) -> SimpleNamespace:
    k = int(rng.integers(0, 20))
    return SimpleNamespace(
        day=day,
        taps=_taps(rng, n),
        purse={"amount_fen": rng.integers(1, 500, k), "accepted": rng.random(k) < 0.9},
        topups={
            "row": rng.integers(0, N_CARDS, k),
            "amount_fen": rng.integers(1, 5_000, k),
            "channel": rng.integers(0, 2, k).astype(np.uint8),
        },
        card_sales={"row": rng.integers(0, N_CARDS, k)},
        stats={"duplicate_deductions": int(rng.integers(0, 3)), "refunds_executed": 1},
    )


def _reference_observe(m: RunMetrics, world, day) -> dict[str, int]:
    """The KPI definitions of sim/metrics.py, one mask at a time."""
    pop, c = world.population, day.taps
    ok = ~c.declined & (c.device_refused == 0)
    local_tap = c.city == 0
    local_holder = pop.home_city[c.row] == HOME_CITY
    by_region = np.bincount(pop.region[c.row[ok & local_holder]], minlength=m.n_regions)
    away = np.bincount(pop.region[c.row[ok & local_holder & ~local_tap]], minlength=m.n_regions)
    ok &= local_tap & (c.home_card | ~is_stored_value(c.medium))
    fare_row = ok & ((c.kind != TAP_ENTRY) | c.incomplete)
    card_type = pop.card_type[c.row]
    amount = np.where(ok, c.amount_fen, 0)
    m.taps_by_home_region += by_region
    m.taps_away_by_home_region += away
    m.transactions += int(fare_row.sum())
    m.taps += int(ok.sum())
    m.elderly_taps += int((ok & is_elderly(card_type)).sum())
    m.taps_by_card_type += np.bincount(card_type[ok], minlength=len(CARD_TYPES))
    m.card_transactions_by_card_type += np.bincount(
        card_type[fare_row & c.home_card], minlength=len(CARD_TYPES)
    )
    m.spend_by_card_type += np.bincount(
        card_type[c.home_card], weights=amount[c.home_card], minlength=len(CARD_TYPES)
    ).astype(np.int64)
    m.spend_by_medium += np.bincount(c.medium, weights=amount, minlength=len(MEDIA)).astype(
        np.int64
    )
    line_region = world.network.lines.region[c.line]
    m.spend_by_region += np.bincount(line_region, weights=amount, minlength=m.n_regions).astype(
        np.int64
    )
    m._rode_this_week[c.row[ok]] = True
    return {
        "fare_transactions": int(fare_row.sum()),
        "card_spend_fen": int(amount[c.home_card].sum()),
        "qr_spend_fen": int(amount[~is_stored_value(c.medium)].sum()),
    }


_TAP_FIGURES = (
    "transactions",
    "taps",
    "elderly_taps",
    "taps_by_card_type",
    "card_transactions_by_card_type",
    "spend_by_card_type",
    "spend_by_medium",
    "spend_by_region",
    "taps_by_home_region",
    "taps_away_by_home_region",
    "_rode_this_week",
)


@pytest.mark.parametrize("seed", range(6))
def test_day_kpis_match_their_definitions_mask_by_mask(seed):
    rng = np.random.default_rng(seed)
    world = _world(seed)
    sale_day = rng.integers(-5, 20, N_CARDS).astype(np.int32)
    fused = RunMetrics(N_REGIONS, N_CARDS)
    reference = RunMetrics(N_REGIONS, N_CARDS)
    for d in range(3):
        day = _day(rng, d, int(rng.integers(0, 3_000)))
        assert fused.observe_day(world, sale_day, day) == _reference_observe(reference, world, day)
        for name in _TAP_FIGURES:
            got, want = getattr(fused, name), getattr(reference, name)
            assert np.array_equal(got, want), name
            assert np.asarray(got).dtype == np.asarray(want).dtype, name


def test_weekly_shares_count_cards_that_rode_among_issued_and_live_cards():
    rng = np.random.default_rng(7)
    world = _world(7)
    sale_day = rng.integers(-5, 10, N_CARDS).astype(np.int32)
    days = [_day(rng, d, 400) for d in range(7)]
    m = RunMetrics(N_REGIONS, N_CARDS)
    reference = RunMetrics(N_REGIONS, N_CARDS)
    for day in days:
        m.observe_day(world, sale_day, day)
        _reference_observe(reference, world, day)
    rode = reference._rode_this_week  # the week's riders, by the definitions
    issued = (sale_day <= 6) & (world.population.home_city == HOME_CITY)
    live = issued & (world.population.end_day > 6)
    assert m.weekly_share_of_stock == [float(rode[issued].sum() / max(issued.sum(), 1))]
    assert m.weekly_share_of_live == [float(rode[live].sum() / max(live.sum(), 1))]
    assert not m._rode_this_week.any()  # a new week starts


def _reference_flows(world, taps) -> dict[str, np.ndarray]:
    """The flow definitions of sim/cross_city.py, one mask at a time."""
    pop = world.population
    n_cities, n_regions = len(city_codes(world)), len(region_keys(world)) + 1
    holder_city = pop.home_city[taps.row].astype(np.int64)
    holder_region = np.where(holder_city == HOME_CITY, pop.region[taps.row], NONE)
    n_own = len(world.region_ids)
    with_region = np.array([g.region_id is not None for g in world.gateways])
    gateway_region = np.where(with_region, n_own + np.cumsum(with_region) - 1, NONE)
    gateway = taps.line.astype(np.int64) - world.n_local_lines
    use_region = np.where(
        gateway >= 0,
        gateway_region[np.maximum(gateway, 0)],
        world.network.lines.region[taps.line],
    )
    payment = np.where(is_stored_value(taps.medium), 0, 1)
    key = holder_city
    for value, size in (
        (holder_region + 1, n_regions),
        (taps.city, n_cities),
        (use_region + 1, n_regions),
        (payment, len(PAYMENTS)),
    ):
        key = key * size + value
    charged = ~taps.declined & (taps.device_refused == 0)
    size = n_cities * n_regions * n_cities * n_regions * len(PAYMENTS)
    boardings = np.bincount(key[charged & (taps.kind != TAP_EXIT)], minlength=size)
    fen = np.bincount(key[charged], weights=taps.amount_fen[charged], minlength=size)
    present = np.flatnonzero((boardings > 0) | (fen > 0))
    out, rest = {}, present
    for name, size in (
        ("payment", len(PAYMENTS)),
        ("use_region", n_regions),
        ("use_city", n_cities),
        ("holder_region", n_regions),
    ):
        out[name], rest = rest % size, rest // size
    out["holder_city"] = rest
    out["use_region"] = out["use_region"] - 1
    out["holder_region"] = out["holder_region"] - 1
    out["boardings"] = boardings[present]
    out["amount_fen"] = np.rint(fen[present]).astype(np.int64)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_day_flows_match_their_definitions_mask_by_mask(seed):
    rng = np.random.default_rng(seed)
    world = _world(seed)
    taps = _taps(rng, int(rng.integers(0, 3_000)))
    got, want = day_flows(world, taps), _reference_flows(world, taps)
    for name, column in want.items():
        assert np.array_equal(got[name], column), name
        assert got[name].dtype == np.int64, name
    assert np.array_equal(got["expansion_weight"], np.full(len(want["boardings"]), 2.0))


def test_codes_past_their_axis_are_refused_not_binned_elsewhere():
    rng = np.random.default_rng(1)
    world = _world(1)
    day = _day(rng, 0, 100)
    day.taps.city[0] = N_CITIES
    with pytest.raises(ValueError, match="city code"):
        day_flows(world, day.taps)
    day.taps.medium[0] = len(MEDIA)
    with pytest.raises(ValueError, match="out of range"):
        RunMetrics(N_REGIONS, N_CARDS).observe_day(world, np.zeros(N_CARDS, np.int32), day)
