"""Hypothesis strategies shared by the test suite (one place, as STYLE.md asks).

Fares: ``fare_rules()`` draws valid FareRules policies for the small network ``FARE_LINES``;
``fare_days()`` draws one day's taps for that network (a TapBatch in card-major order plus the
month-to-date spend of each row's card). Tap times of one card are strictly increasing, so the
(card, t_s) sort order of a batch never depends on the input order.
"""

from __future__ import annotations

import numpy as np
import pydantic
from hypothesis import assume
from hypothesis import strategies as st

from sim.codes import CARD_TYPES, DAY_TYPES, MODES, TAP_ENTRY, TAP_EXIT, TAP_SINGLE
from sim.fare_rules import (
    BusFares,
    ConcessionRule,
    FareCaps,
    FareRules,
    IncompleteTripPolicy,
    MetroFares,
    TransferDiscount,
)
from sim.fares import TapBatch

#: (line id, mode code, region id): three bus lines in three regions and two metro lines.
FARE_LINES: tuple[tuple[str, int, str], ...] = (
    ("B1", 0, "urban"),
    ("B2", 0, "rudong"),
    ("B3", 0, "haian"),
    ("M1", 1, "urban"),
    ("M2", 1, "urban"),
)
_BUS_LINES = [i for i, (_, mode, _) in enumerate(FARE_LINES) if mode == 0]
_METRO_LINES = [i for i, (_, mode, _) in enumerate(FARE_LINES) if mode == 1]

fen = st.integers(min_value=0, max_value=1_500)
pct = st.one_of(st.integers(0, 100).map(float), st.integers(0, 10_000).map(lambda bp: bp / 100))


def _subset(names: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(names), min_size=1, unique=True).map(tuple)


# Strategies are built once here: building them inside composites on every draw is slow.
_modes, _day_types, _card_types = _subset(MODES), _subset(DAY_TYPES), _subset(CARD_TYPES)
_quarter = st.integers(0, 95)
_kind = st.sampled_from(["free", "percent", "fixed_fare", "amount_off"])


@st.composite
def time_windows(draw: st.DrawFn) -> str:
    """An 'HH:MM-HH:MM' window on a 15-minute grid (may wrap midnight, never empty)."""
    start, end = draw(_quarter), draw(_quarter) + 1
    if end == start:
        end += 1
    start, end = start * 15, end * 15
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


_windows = st.lists(time_windows(), min_size=1, max_size=3).map(tuple)


@st.composite
def concession_rules(draw: st.DrawFn) -> ConcessionRule:
    """One valid concession rule of any kind, with optional mode, day-type and hour filters."""
    kind = draw(_kind)
    param = {"percent": ("discount_pct", pct), "fixed_fare": ("fixed_fare_fen", fen)}
    param["amount_off"] = ("amount_off_fen", fen)
    params = {param[kind][0]: draw(param[kind][1])} if kind in param else {}
    fields = dict(
        kind=kind,
        **params,
        modes=draw(st.none() | _modes),
        day_types=draw(st.none() | _day_types),
        include_hours=draw(st.none() | _windows),
        exclude_hours=draw(st.just(()) | _windows),
        hours_day_types=draw(st.none() | _day_types),
    )
    try:
        return ConcessionRule(**fields)
    except pydantic.ValidationError:
        # Windows that leave no minute of the day are refused (the rule would never apply).
        assume(False)


_band_steps = st.lists(st.tuples(st.integers(1, 10), st.integers(0, 300)), min_size=1, max_size=5)


@st.composite
def metro_fares(draw: st.DrawFn) -> MetroFares:
    """Increasing distance bands with non-decreasing fares."""
    steps = np.array(draw(_band_steps))
    return MetroFares(
        band_upper_km=tuple(float(x) for x in np.cumsum(steps[:, 0])),
        band_fare_fen=tuple(int(x) for x in np.cumsum(steps[:, 1])),
    )


_transfers = st.none() | st.builds(
    TransferDiscount,
    window_min=st.integers(1, 120),
    amount_off_fen=fen,
    discount_pct=pct,
    modes=_modes,
    max_transfers=st.integers(0, 10),
    card_types=st.none() | _card_types,
)
_card_type = st.sampled_from(CARD_TYPES)
_rule_lists = st.dictionaries(
    _card_type,
    st.lists(concession_rules(), min_size=1, max_size=3).map(tuple),
    min_size=2,
    max_size=5,
)
_line_overrides = st.dictionaries(st.sampled_from([ln[0] for ln in FARE_LINES]), fen)
_daily_caps = st.dictionaries(_card_type, st.integers(0, 3_000))
_monthly_caps = st.dictionaries(_card_type, st.integers(0, 20_000))
_charge = st.sampled_from(["max_fare", "min_fare", "fixed"])


@st.composite
def fare_rules(draw: st.DrawFn) -> FareRules:
    """A valid FareRules policy covering every line of FARE_LINES."""
    regions = sorted({region for _, _, region in FARE_LINES})
    return draw(policies(regions, line_overrides=True))


@st.composite
def policies(draw: st.DrawFn, regions: list[str], line_overrides: bool = False) -> FareRules:
    """A valid FareRules policy with a bus fare for each of ``regions`` (and, if asked, fares
    for some lines of FARE_LINES), random concessions, transfers, caps, incomplete-trip charge
    and whether QR riders get concessions."""
    bus = BusFares(
        region_fare_fen={r: draw(fen) for r in regions},
        line_fare_fen=draw(_line_overrides) if line_overrides else {},
    )
    charge = draw(_charge)
    incomplete = IncompleteTripPolicy(
        charge=charge,
        fixed_fare_fen=draw(fen) if charge == "fixed" else None,
        discounts_apply=draw(st.booleans()),
    )
    return FareRules(
        bus=bus,
        metro=draw(metro_fares()),
        concessions=draw(_rule_lists),
        qr_concessions=draw(st.booleans()),
        transfer=draw(_transfers),
        caps=FareCaps(daily_cap_fen=draw(_daily_caps), monthly_cap_fen=draw(_monthly_caps)),
        incomplete_trip=incomplete,
    )


#: Leg shapes a card's day is built from: rows each adds, in order, as (kind, incomplete).
_LEG_ROWS = {
    "bus": [(TAP_SINGLE, False)],
    "metro": [(TAP_ENTRY, False), (TAP_EXIT, False)],
    "incomplete": [(TAP_ENTRY, True)],
    "open_entry": [(TAP_ENTRY, False)],  # entry whose exit never arrived, not flagged
    "orphan_exit": [(TAP_EXIT, False)],
}
#: Ordinary legs drawn more often than the odd ones.
_LEG_MIX = ["bus", "bus", "bus", "metro", "metro", "incomplete", "open_entry", "orphan_exit"]
_leg = st.sampled_from(_LEG_MIX)
_bus_line, _metro_line = st.sampled_from(_BUS_LINES), st.sampled_from(_METRO_LINES)
_distance_km = st.floats(0, 60, width=32)
_gap_s = st.integers(1, 90 * 60)


@st.composite
def fare_days(
    draw: st.DrawFn, max_cards: int = 5, max_legs: int = 8
) -> tuple[TapBatch, np.ndarray]:
    """One day's taps on FARE_LINES and an aligned month-to-date spend per row (int64 fen)."""
    n_cards = draw(st.integers(1, max_cards))
    card_ids = draw(
        st.lists(st.integers(0, 10**9), min_size=n_cards, max_size=n_cards, unique=True)
    )
    cols: dict[str, list] = {k: [] for k in TapBatch.__dataclass_fields__}
    spent: list[int] = []
    for card in card_ids:
        card_type = draw(st.integers(0, len(CARD_TYPES) - 1))
        month_spent = draw(st.integers(0, 20_000))
        t = draw(st.integers(4 * 3600, 23 * 3600))
        for _ in range(draw(st.integers(0, max_legs))):
            leg = draw(_leg)
            is_metro = leg != "bus"
            line = draw(_metro_line if is_metro else _bus_line)
            for kind, incomplete in _LEG_ROWS[leg]:
                cols["card"].append(card)
                cols["t_s"].append(t)
                cols["line"].append(line)
                cols["mode"].append(1 if is_metro else 0)
                cols["kind"].append(kind)
                cols["card_type"].append(card_type)
                dist = draw(_distance_km) if kind == TAP_EXIT else 0.0
                cols["distance_km"].append(dist)
                cols["incomplete"].append(incomplete)
                spent.append(month_spent)
                t += draw(_gap_s)  # next tap strictly later
    # TapBatch converts each column to its dtype (values are checked to fit).
    taps = TapBatch(**{k: np.array(v) for k, v in cols.items()})
    return taps, np.array(spent, dtype=np.int64)


# --- clearing hierarchies (sim/clearing_paths.py) ---------------------------------------------
@st.composite
def clearing_hierarchies(
    draw: st.DrawFn, max_nodes: int = 6, max_members: int = 8
) -> tuple[dict[str, str | None], list[tuple[str, str, str]], list[tuple[str, str]]]:
    """A clearing hierarchy as a run's files give it to ``sim.clearing_paths.routes``: the
    nodes' parents (a tree, sometimes a second top that shares no node with the first),
    members placed at a node (or at one the files do not hold), and (issuer, acquirer) pairs
    among the members, the nodes and a participant nobody placed."""
    nodes = [f"N{i}" for i in range(draw(st.integers(1, max_nodes)))]
    parents: dict[str, str | None] = {nodes[0]: None}
    for i, node in enumerate(nodes[1:], start=1):
        parents[node] = draw(st.one_of(st.sampled_from(nodes[:i]), st.none()))
    members = [
        (f"M{j}", draw(st.sampled_from(["issuer", "acquirer"])),
         draw(st.sampled_from([*nodes, "NOWHERE"])))
        for j in range(draw(st.integers(1, max_members)))
    ]  # fmt: skip
    names = [*(m[0] for m in members), *nodes, "UNPLACED"]
    pair = st.tuples(st.sampled_from(names), st.sampled_from(names))
    pairs = draw(st.lists(pair, max_size=12, unique=True))  # a run's pairs, grouped
    return parents, members, pairs
