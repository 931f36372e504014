"""sim/fares.py's compiled pricing pass gives, byte for byte, what the NumPy passes it replaced
gave (kept here as the reference, as tests/test_citizen_kernels.py keeps the citizens' NumPy
rules): on property-based days and policies (every rule kind, transfers, caps, incomplete trips)
and on real full-scale days of the Nantong scenario, group by group as sim/day.py prices them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import FARE_LINES, fare_days, fare_rules

from sim.codes import CARD_TYPES, DAY_TYPES, MODES, TAP_ENTRY, TAP_EXIT, TAP_SINGLE, code_of
from sim.fare_rules import MINUTES_PER_DAY, FareRules, bp_of_fen
from sim.fares import (
    _RESULT_DTYPES,
    NO_CAP_FEN,
    CompiledFares,
    FareResult,
    TapBatch,
    compile_fares,
    price_taps,
    price_taps_into,
)
from sim.grouping import stable_order

_N_DT, _N_CT, _N_MODE = len(DAY_TYPES), len(CARD_TYPES), len(MODES)


def _numpy_price_taps(compiled, taps, day_type, spent) -> FareResult:
    """``price_taps`` as NumPy passes (the reference)."""
    n = len(taps)
    names = tuple(_RESULT_DTYPES)
    order, priced = _numpy_price_in_card_order(compiled, taps, day_type, spent, names)
    out = {name: np.empty(n, dtype=dtype) for name, dtype in _RESULT_DTYPES.items()}
    for name, col in out.items():
        col[order] = priced[name]
    return FareResult(**out)


def _chain_starts(card: np.ndarray, t: np.ndarray, window_s: int, max_legs: int) -> np.ndarray:
    """For boardings sorted by (card, time): True where a boarding starts a new transfer chain.

    A chain starting at leg k covers legs k..nxt[k]-1, where nxt[k] is the first later leg beyond
    the window or the leg after max_legs; following nxt from each card's first leg visits exactly
    the chain starts. The loop runs once per chain of the busiest card (a handful a day).
    """
    m = len(card)
    new = np.ones(m, dtype=bool)
    new[1:] = card[1:] != card[:-1]
    nxt = np.arange(1, m + 1)
    if max_legs <= 8:
        # Chains are short: count how many following legs (same card, inside the window) fit.
        alive = np.ones(m, dtype=bool)
        for j in range(1, max_legs):
            alive[m - j :] = False
            alive[: m - j] &= (card[j:] == card[:-j]) & (t[j:] - t[:-j] <= window_s)
            if not alive.any():
                break
            nxt += alive
    else:
        key = ((np.cumsum(new) - 1) << 32) + t  # non-decreasing; t < 2**31
        nxt = np.minimum(np.searchsorted(key, key + window_s, side="right"), nxt - 1 + max_legs)
    is_start = new.copy()
    cur = np.flatnonzero(new)
    end = np.append(cur[1:], m)
    while cur.size:
        cur = nxt[cur]
        keep = cur < end
        cur, end = cur[keep], end[keep]
        is_start[cur] = True
    return is_start


def _check_taps(compiled: CompiledFares, **columns: np.ndarray) -> None:
    """Raise unless the priced taps' columns (in any order) hold codes the tables cover."""
    limits = {
        "line": (0, len(compiled.line_ids) - 1),
        "mode": (0, _N_MODE - 1),
        "kind": (0, TAP_EXIT),
        "card_type": (0, _N_CT - 1),
        "t_s": (0, 2**31 - 1),
    }
    for name, arr in columns.items():
        lo, hi = limits[name]
        if arr.min() < lo or arr.max() > hi:
            raise ValueError(f"taps.{name} has values outside {lo}..{hi}")


def _numpy_price_in_card_order(
    compiled: CompiledFares,
    taps: TapBatch,
    day_type: int | str,
    month_spent_fen: np.ndarray,
    names: tuple[str, ...],
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ``FareResult`` columns ``names`` of the taps (those at ``rows``, or all) sorted by
    (card, time), and that order (indices into the taps): ``price_taps`` without putting the
    rows back in input order."""
    dt = code_of(DAY_TYPES, day_type) if isinstance(day_type, str) else int(day_type)
    if not 0 <= dt < _N_DT:
        raise ValueError(f"day_type {day_type} is not a code of {', '.join(DAY_TYPES)}")
    spent = np.asarray(month_spent_fen, dtype=np.int64)
    if len(spent) != len(taps) or (len(spent) and spent.min() < 0):
        raise ValueError("month_spent_fen must be aligned to the taps and >= 0")
    if rows is None:
        order = stable_order(taps.card, taps.t_s)
    else:
        order = rows[stable_order(taps.card[rows], taps.t_s[rows])]
    n = len(order)
    if n == 0:
        return order, {name: np.zeros(0, dtype=_RESULT_DTYPES[name]) for name in names}

    # Every column is read once, straight in (card, time) order, and checked before use.
    card, kind, inc = taps.card[order], taps.kind[order], taps.incomplete[order]
    t = taps.t_s[order].astype(np.int64)
    mode, ctype, line = taps.mode[order], taps.card_type[order], taps.line[order]
    spent = spent[order] if compiled.has_caps else spent[:0]
    _check_taps(compiled, line=line, mode=mode, kind=kind, card_type=ctype, t_s=t)

    same_prev = np.zeros(n, dtype=bool)
    same_prev[1:] = card[1:] == card[:-1]
    prev_open = np.zeros(n, dtype=bool)  # previous row: an entry waiting for its exit
    prev_open[1:] = (kind[:-1] == TAP_ENTRY) & ~inc[:-1]
    is_exit = kind == TAP_EXIT
    paired = is_exit & same_prev & prev_open
    board = np.arange(n) - paired  # row of the boarding that started each row's leg
    inc_row = (kind == TAP_ENTRY) & inc
    charge = (kind == TAP_SINGLE) | is_exit | inc_row

    # List fare of every row, then keep the one that applies to its kind.
    lst = np.where(kind == TAP_SINGLE, compiled.line_fare_fen[line], 0)
    exits = np.flatnonzero(is_exit)  # only exits read a distance band
    distance = taps.distance_km[order[exits]].astype(np.float64)
    band_idx = np.searchsorted(compiled.band_upper_km, distance)
    lst[exits] = compiled.band_fare_fen[np.minimum(band_idx, len(compiled.band_fare_fen) - 1)]
    lst = np.where(inc_row, compiled.incomplete_fare_fen, lst).astype(np.int64)

    # Concession: the first matching rule at the leg's boarding minute and mode.
    bmode = mode[board]
    minute = (t[board] // 60) % MINUTES_PER_DAY
    flat = (ctype.astype(np.int64) * _N_MODE + bmode) * MINUTES_PER_DAY + minute
    gid = compiled.rule_table[dt].reshape(-1)[flat]
    discounts_ok = charge if compiled.incomplete_discounts else charge & ~inc_row
    gid = np.where(discounts_ok, gid, len(compiled.rule_pos) - 1)
    conc = bp_of_fen(lst, compiled.rule_bp[gid]) + compiled.rule_off_fen[gid]
    conc += np.maximum(lst - compiled.rule_fixed_fen[gid], 0)
    np.minimum(conc, lst, out=conc)
    after = lst - conc

    # Transfers: chains over eligible boardings, discount on the charge row of each transfer leg.
    is_transfer = np.zeros(n, dtype=bool)
    trans = np.zeros(n, dtype=np.int64)
    if compiled.transfer_on:
        elig = ~paired & compiled.transfer_mode_ok[mode] & compiled.transfer_card_ok[ctype]
        eidx = np.flatnonzero(elig)
        leg_tr = np.zeros(n, dtype=bool)
        leg_tr[eidx] = ~_chain_starts(
            card[eidx], t[eidx], compiled.transfer_window_s, compiled.transfer_max_legs
        )
        is_transfer = leg_tr[board]
        trans = np.full(n, compiled.transfer_off_fen, dtype=np.int64)
        if compiled.transfer_bp:  # a percentage off too (0 % of any fare is 0 fen)
            trans += bp_of_fen(after, compiled.transfer_bp)
        trans = np.where(is_transfer & discounts_ok, np.minimum(trans, after), 0)
    pre_cap = after - trans

    cap = np.zeros(n, dtype=np.int64)
    if compiled.has_caps:
        cap = pre_cap - _capped_amounts(compiled, ctype, spent, pre_cap, same_prev)
    amount = pre_cap - cap

    columns = {
        "list_fare_fen": lambda: lst,
        "concession_fen": lambda: conc,
        "transfer_fen": lambda: trans,
        "cap_fen": lambda: cap,
        "amount_fen": lambda: amount,
        "is_transfer": lambda: is_transfer,
        "fare_capped": lambda: cap > 0,
        "rule_index": lambda: np.where(charge, compiled.rule_pos[gid], -1),
    }
    return order, {name: columns[name]() for name in names}


def _capped_amounts(
    compiled: CompiledFares,
    ctype: np.ndarray,
    spent: np.ndarray,
    pre_cap: np.ndarray,
    same_prev: np.ndarray,
) -> np.ndarray:
    """Amounts after caps: each card pays until its running total reaches its limit for today.

    The limit is min(daily cap, monthly cap - spend earlier in the month), from the card type of
    the card's first row. Rows are sorted by (card, time).
    """
    starts = np.flatnonzero(~same_prev)
    grp = np.cumsum(~same_prev) - 1
    cum = np.cumsum(pre_cap)
    cum -= (cum[starts] - pre_cap[starts])[grp]  # running total within each card
    ct = ctype[starts]
    month_left = np.maximum(compiled.monthly_cap_fen[ct] - np.maximum.reduceat(spent, starts), 0)
    limit = np.minimum(compiled.daily_cap_fen[ct], month_left)
    paid = np.minimum(cum, limit[grp])
    amount = paid.copy()
    amount[1:] -= paid[:-1]
    amount[starts] = paid[starts]
    return amount


def _same(a, b) -> bool:
    """Equal dtype, shape and bytes."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_same(got: FareResult, want: FareResult) -> None:
    for name in FareResult.__dataclass_fields__:
        assert _same(getattr(got, name), getattr(want, name)), name


@st.composite
def rough_days(draw: st.DrawFn, max_rows: int = 40) -> tuple[TapBatch, np.ndarray]:
    """Taps in any order and any mix: exits with no entry, entries of another card before an
    exit, taps of one card at the same second, incomplete entries, distances past the bands."""
    n = draw(st.integers(0, max_rows))
    ints = lambda lo, hi: np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)))  # noqa: E731
    lines = ints(0, len(FARE_LINES) - 1)
    card = ints(0, 3)
    taps = TapBatch(
        card=card,
        t_s=ints(0, 30) * draw(st.sampled_from([1, 60, 600, 3000])) + 4 * 3600,
        line=lines,
        mode=np.array([FARE_LINES[i][1] for i in lines], dtype=np.int64),
        kind=ints(TAP_SINGLE, TAP_EXIT),
        card_type=ints(0, len(CARD_TYPES) - 1),
        distance_km=ints(0, 400) / 10.0,
        incomplete=ints(0, 1).astype(bool),
    )
    spent = ints(0, 20_000).astype(np.int64)
    return taps, spent


SETTINGS = settings(max_examples=300, deadline=None)
days = st.integers(0, len(DAY_TYPES) - 1)


@SETTINGS
@given(fare_rules(), st.one_of(fare_days(), rough_days()), days)
def test_price_taps_is_the_numpy_reference(rules, day_taps, day) -> None:
    taps, spent = day_taps
    compiled = compile_fares(rules, FARE_LINES)
    _assert_same(
        price_taps(compiled, taps, day, spent), _numpy_price_taps(compiled, taps, day, spent)
    )


@SETTINGS
@given(fare_rules(), rough_days(), days, st.randoms(use_true_random=False))
def test_price_taps_into_is_the_numpy_reference(rules, day_taps, day, rnd) -> None:
    """Any subset of rows, into columns of the engine's dtypes or others, some not asked for."""
    taps, spent = day_taps
    compiled = compile_fares(rules, FARE_LINES)
    rows = np.array(sorted(rnd.sample(range(len(taps)), rnd.randint(0, len(taps)))), np.int64)
    names = [name for name in _RESULT_DTYPES if rnd.random() < 0.8]
    dtypes = {name: rnd.choice([_RESULT_DTYPES[name], np.int64]) for name in names}
    got = {name: np.full(len(taps), -7, dtypes[name]) for name in names}
    want = {name: col.copy() for name, col in got.items()}
    price_taps_into(compiled, taps, day, spent, got, rows)
    order, priced = _numpy_price_in_card_order(compiled, taps, day, spent, tuple(want), rows)
    for name, col in want.items():
        col[order] = priced[name]
        assert _same(got[name], col), name


@pytest.mark.parametrize(
    ("column", "value"),
    [("line", len(FARE_LINES)), ("mode", len(MODES)), ("kind", TAP_EXIT + 1),
     ("card_type", len(CARD_TYPES)), ("t_s", -1)],
)  # fmt: skip
def test_out_of_range_codes_raise_as_the_reference(column, value) -> None:
    rules = FareRules(
        bus={"region_fare_fen": {region: 200 for _, _, region in FARE_LINES}},
        metro={"band_upper_km": [6, 11], "band_fare_fen": [200, 300]},
    )
    compiled = compile_fares(rules, FARE_LINES)
    cols = {
        "card": [1, 1], "t_s": [3600, 3700], "line": [0, 0], "mode": [FARE_LINES[0][1]] * 2,
        "kind": [TAP_ENTRY, TAP_EXIT], "card_type": [0, 0], "distance_km": [0.0, 3.0],
        "incomplete": [False, False],
    }  # fmt: skip
    cols[column] = [cols[column][0], value]
    taps = TapBatch(**{k: np.array(v) for k, v in cols.items()})
    spent = np.zeros(2, np.int64)
    with pytest.raises(ValueError) as want:
        _numpy_price_taps(compiled, taps, 0, spent)
    with pytest.raises(ValueError, match=f"^{want.value}$"):
        price_taps(compiled, taps, 0, spent)


def _numpy_price_into(compiled, taps, day_type, spent, out, rows=None) -> None:
    """``sim.fares._price_in_card_order`` through the reference."""
    order, priced = _numpy_price_in_card_order(compiled, taps, day_type, spent, tuple(out), rows)
    for name, col in out.items():
        col[order] = priced[name]


def test_real_days_priced_as_the_reference(nantong_world, monkeypatch):
    """A day of each day type of the full-scale run, priced group by group as sim/day.py does,
    under the scenario's policy and under one with caps and a percentage transfer discount
    (with month-to-date spends)."""
    import sim.day
    import sim.fares
    from sim.state import RunState

    world = nantong_world
    state = RunState.fresh(world)
    # The scenario's policy with caps (a daily one for ordinary cards, a monthly one for
    # students) and 12.5 % off transfers too.
    daily = np.full(len(CARD_TYPES), NO_CAP_FEN, np.int64)
    monthly = daily.copy()
    daily[code_of(CARD_TYPES, "ordinary")] = 500
    monthly[code_of(CARD_TYPES, "student")] = 3_000
    compiled = dataclasses.replace(
        world.fares.concession, daily_cap_fen=daily, monthly_cap_fen=monthly, transfer_bp=1250
    )
    rng = np.random.default_rng(5)
    seen = set()
    for day in range(len(world.calendar.day_types)):
        day_type = int(world.calendar.day_types[day])
        if day_type in seen:
            continue
        seen.add(day_type)
        pool = sim.day._live_pool(world, state, day)
        planned = sim.day.planned_taps(world, state.streams, world.population, day, pool)
        taps = sim.day._close_unmatched_entries(planned.local)
        got = sim.day._price(world, state, taps, day, day_type)[0]
        with monkeypatch.context() as m:
            m.setattr(sim.fares, "_price_in_card_order", _numpy_price_into)
            want = sim.day._price(world, state, taps, day, day_type)[0]
        for name, col in want.items():
            assert _same(got[name], col), name
        # Caps, every card at some spend this month.
        batch = sim.day.pricing_batch(world.population, taps)
        spent = rng.integers(0, 4_000, len(world.population))[taps.row]
        result = price_taps(compiled, batch, day_type, spent)
        assert result.fare_capped.any() and result.is_transfer.any()
        _assert_same(result, _numpy_price_taps(compiled, batch, day_type, spent))
    assert len(seen) > 1
