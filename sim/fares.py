"""Fare and concession engine: compile a FareRules policy once, then price a day's taps vectorised.

Pricing works on legs. A leg starts at a boarding (a bus single tap or a metro entry); a metro exit
belongs to the leg of the card's immediately preceding tap when that tap is an entry not flagged
incomplete (an exit with no such entry is a leg of its own, priced by its distance). Each leg is
charged on one row, its *charge row*: the single tap, the metro exit, or an incomplete entry. Other
rows (entries later closed by an exit) carry a list fare of 0.

On a charge row, in this order: list fare -> concession (first matching rule of the card type,
judged at the leg's boarding time and mode) -> transfer discount (on what the concession left) ->
daily/monthly cap (on the card's running spend in time order). ``amount = list - concession -
transfer - cap`` and every part is >= 0. See ``sim/fare_rules.py`` for the policy models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.codes import CARD_TYPES, DAY_TYPES, MODES, TAP_ENTRY, TAP_EXIT, TAP_SINGLE, code_of
from sim.fare_rules import MINUTES_PER_DAY, FareRules, bp_of_fen, pct_to_bp
from sim.grouping import stable_order

#: Limit used where a card type has no cap (far above any real spend, no int64 overflow).
NO_CAP_FEN = 1 << 62
_NO_FIXED_FEN = 1 << 40  # "fixed fare" of rules that have none: never lowers a fare
_BUS, _METRO = code_of(MODES, "bus"), code_of(MODES, "metro")
_N_DT, _N_CT, _N_MODE = len(DAY_TYPES), len(CARD_TYPES), len(MODES)


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class CompiledFares:
    """A FareRules policy as numpy lookup tables (read-only arrays); built by ``compile_fares``."""

    line_ids: tuple[str, ...]  # line index -> line id
    line_fare_fen: np.ndarray  # int32 per line index: flat fare of a single tap
    band_upper_km: np.ndarray  # float64 metro band upper bounds
    band_fare_fen: np.ndarray  # int32 metro band fares
    incomplete_fare_fen: int  # charge on an entry flagged incomplete
    incomplete_discounts: bool  # do concessions/transfers reduce that charge
    rule_table: np.ndarray  # int16 [day type, card type, mode, minute of day] -> rule id
    rule_bp: np.ndarray  # int64 per rule id: percent off in basis points (free = 10000)
    rule_off_fen: np.ndarray  # int64 per rule id: fen off
    rule_fixed_fen: np.ndarray  # int64 per rule id: fixed fare (_NO_FIXED_FEN if none)
    rule_pos: np.ndarray  # int16 per rule id: position in its card type's list; last id = none
    transfer_on: bool
    transfer_window_s: int
    transfer_max_legs: int  # max_transfers + 1
    transfer_bp: int
    transfer_off_fen: int
    transfer_mode_ok: np.ndarray  # bool per mode code
    transfer_card_ok: np.ndarray  # bool per card type code
    daily_cap_fen: np.ndarray  # int64 per card type (NO_CAP_FEN = none)
    monthly_cap_fen: np.ndarray  # int64 per card type (NO_CAP_FEN = none)

    @property
    def has_caps(self) -> bool:
        """True when any card type has a daily or monthly cap."""
        return bool(
            (self.daily_cap_fen < NO_CAP_FEN).any() or (self.monthly_cap_fen < NO_CAP_FEN).any()
        )


_TAP_DTYPES = {
    "card": np.int64,
    "t_s": np.int32,
    "line": np.int32,
    "mode": np.uint8,
    "kind": np.uint8,
    "card_type": np.uint8,
    "distance_km": np.float32,
    "incomplete": np.bool_,
}


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class TapBatch:
    """One day's taps as equal-length arrays (any row order).

    card: int64 account index (groups transfers and caps); t_s: int32 seconds since midnight (>= 0,
    may pass 86400 for after-midnight service); line: int32 line index into ``compiled.line_ids``;
    mode: uint8 sim.codes.MODES; kind: uint8 TAP_SINGLE/TAP_ENTRY/TAP_EXIT; card_type: uint8
    sim.codes.CARD_TYPES; distance_km: float32 trip distance on metro exits (0 elsewhere);
    incomplete: bool, an entry never closed by an exit. Arrays of other dtypes are converted when
    the values fit exactly, else ValueError.
    """

    card: np.ndarray
    t_s: np.ndarray
    line: np.ndarray
    mode: np.ndarray
    kind: np.ndarray
    card_type: np.ndarray
    distance_km: np.ndarray
    incomplete: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for name, dtype in _TAP_DTYPES.items():
            arr = np.asarray(getattr(self, name))
            if arr.ndim != 1:
                raise ValueError(f"TapBatch.{name} must be one-dimensional (got shape {arr.shape})")
            if arr.dtype != dtype:
                conv = arr.astype(dtype)
                if dtype is not np.float32 and not np.array_equal(conv, arr):
                    raise ValueError(
                        f"TapBatch.{name} has values that do not fit {np.dtype(dtype)}"
                    )
                arr = conv
            object.__setattr__(self, name, arr)
            if n is not None and len(arr) != n:
                raise ValueError(f"TapBatch.{name} has {len(arr)} rows, card has {n}")
            n = len(arr)

    def __len__(self) -> int:
        return len(self.card)


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class FareResult:
    """Prices aligned to the input taps. ``amount = list - concession - transfer - cap`` (all >= 0).

    list_fare_fen is int32 (the undiscounted fare of the row: a metro trip's fare sits on its exit);
    the money columns are int64. is_transfer is True on every row of a transfer leg (entry and exit
    of a metro leg); fare_capped where the cap took something; rule_index is the position of the
    matched concession rule in its card type's list, -1 for none (set on charge rows only).
    """

    list_fare_fen: np.ndarray
    concession_fen: np.ndarray
    transfer_fen: np.ndarray
    cap_fen: np.ndarray
    amount_fen: np.ndarray
    is_transfer: np.ndarray
    fare_capped: np.ndarray
    rule_index: np.ndarray


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _compile_concessions(rules: FareRules) -> dict[str, np.ndarray]:
    flat = [
        (code_of(CARD_TYPES, ct), pos, r)
        for ct, lst in rules.concessions.items()
        for pos, r in enumerate(lst)
    ]
    none_id = len(flat)
    table = np.full((_N_DT, _N_CT, _N_MODE, MINUTES_PER_DAY), none_id, dtype=np.int16)
    bp = np.zeros(none_id + 1, dtype=np.int64)
    off = np.zeros(none_id + 1, dtype=np.int64)
    fixed = np.full(none_id + 1, _NO_FIXED_FEN, dtype=np.int64)
    pos_of = np.full(none_id + 1, -1, dtype=np.int16)
    # Later rules are written first so earlier ones overwrite them: first match wins.
    for gid in reversed(range(none_id)):
        ct, pos, r = flat[gid]
        table[:, ct][r.match_mask()] = gid
        pos_of[gid] = pos
        if r.kind == "free":
            bp[gid] = 10_000
        elif r.kind == "percent":
            bp[gid] = pct_to_bp(r.discount_pct)
        elif r.kind == "amount_off":
            off[gid] = r.amount_off_fen
        else:
            fixed[gid] = r.fixed_fare_fen
    return {
        "rule_table": table,
        "rule_bp": bp,
        "rule_off_fen": off,
        "rule_fixed_fen": fixed,
        "rule_pos": pos_of,
    }


def _per_card_type(values: dict[str, int], default: int) -> np.ndarray:
    out = np.full(_N_CT, default, dtype=np.int64)
    for name, v in values.items():
        out[code_of(CARD_TYPES, name)] = v
    return out


@dataclass(frozen=True, eq=False)
class FareSet:
    """One fare policy compiled twice: with concessions, and at list fares (no concessions).

    Which taps get concessions is the policy's too: a home-city card always does; a QR code of a
    home cardholder when ``qr_concessions``; visitors' cards under same-city treatment (decided
    by the interop settings, sim/day.py).
    """

    concession: CompiledFares
    list_only: CompiledFares
    qr_concessions: bool


def compile_fare_set(rules: FareRules, lines: Sequence[tuple[str, int, str]]) -> FareSet:
    """Compile ``rules`` with and without its concessions (see ``compile_fares`` for ``lines``)."""
    return FareSet(
        concession=compile_fares(rules, lines),
        list_only=compile_fares(rules.model_copy(update={"concessions": {}}), lines),
        qr_concessions=rules.qr_concessions,
    )


def compile_fares(
    rules: FareRules, lines: Sequence[tuple[str, int, str]], *, allow_unknown_lines: bool = False
) -> CompiledFares:
    """Compile ``rules`` for a network whose line index i is ``lines[i] = (line_id, mode, region)``.

    Raises ValueError when a bus line's region has no fare, a metro line exists but the policy has
    no metro bands, a line id repeats, or (unless ``allow_unknown_lines``, for scenarios that run
    on part of a network) a line override names a line not in ``lines``.
    """
    ids = tuple(str(line_id) for line_id, _, _ in lines)
    if len(set(ids)) != len(ids):
        raise ValueError(
            "line ids must be unique; repeated: "
            + ", ".join(sorted({i for i in ids if ids.count(i) > 1}))
        )
    unknown = sorted(set(rules.bus.line_fare_fen) - set(ids))
    if unknown and not allow_unknown_lines:
        raise ValueError(
            f"fares.bus.line_fare_fen names lines not in the network: {', '.join(unknown)}"
        )
    metro = rules.metro
    upper = np.array(metro.band_upper_km if metro else (np.inf,), dtype=np.float64)
    band = np.array(metro.band_fare_fen if metro else (0,), dtype=np.int32)
    line_fare = np.zeros(len(ids), dtype=np.int32)
    for i, (line_id, mode, region) in enumerate(lines):
        if not 0 <= mode < _N_MODE:
            raise ValueError(
                f"line {line_id!r} has mode code {mode}; expected a code of {', '.join(MODES)}"
            )
        if line_id in rules.bus.line_fare_fen:
            line_fare[i] = rules.bus.line_fare_fen[line_id]
        elif mode == _METRO:
            if metro is None:
                raise ValueError(f"line {line_id!r} is a metro line but fares has no metro section")
            line_fare[i] = band[0]  # a single tap on a metro line: the minimum fare
        elif region in rules.bus.region_fare_fen:
            line_fare[i] = rules.bus.region_fare_fen[region]
        else:
            known = ", ".join(sorted(rules.bus.region_fare_fen)) or "none"
            raise ValueError(
                f"bus line {line_id!r} is in region {region!r}, which has no fare in "
                f"fares.bus.region_fare_fen (regions with fares: {known}) and no line override"
            )
    inc = rules.incomplete_trip
    inc_fare = {"max_fare": int(band[-1]), "min_fare": int(band[0])}.get(
        inc.charge, inc.fixed_fare_fen
    )
    tr = rules.transfer
    mode_ok = np.array([tr is not None and m in tr.modes for m in MODES])
    card_ok = np.array(
        [tr is not None and (tr.card_types is None or c in tr.card_types) for c in CARD_TYPES]
    )
    arrays = _compile_concessions(rules)
    arrays.update(
        line_fare_fen=line_fare,
        band_upper_km=upper,
        band_fare_fen=band,
        transfer_mode_ok=mode_ok,
        transfer_card_ok=card_ok,
        daily_cap_fen=_per_card_type(rules.caps.daily_cap_fen, NO_CAP_FEN),
        monthly_cap_fen=_per_card_type(rules.caps.monthly_cap_fen, NO_CAP_FEN),
    )
    return CompiledFares(
        line_ids=ids,
        incomplete_fare_fen=int(inc_fare),
        incomplete_discounts=inc.discounts_apply,
        transfer_on=tr is not None,
        transfer_window_s=tr.window_min * 60 if tr else 0,
        transfer_max_legs=tr.max_transfers + 1 if tr else 1,
        transfer_bp=pct_to_bp(tr.discount_pct) if tr else 0,
        transfer_off_fen=tr.amount_off_fen if tr else 0,
        **{k: _readonly(v) for k, v in arrays.items()},
    )


def max_metro_fare_fen(compiled: CompiledFares) -> int:
    """The highest metro band fare in fen (0 when the policy has no metro)."""
    return int(compiled.band_fare_fen.max())


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


def price_taps(
    compiled: CompiledFares, taps: TapBatch, day_type: int | str, month_spent_fen: np.ndarray
) -> FareResult:
    """Price one simulated day's taps (see the module docstring for the order of discounts).

    ``day_type`` is a sim.codes.DAY_TYPES code or name; ``month_spent_fen`` (int64, aligned to the
    taps) is each card's spend earlier in the month, used against monthly caps (the largest value
    among a card's rows is used). Results are aligned to the input rows; taps of one card at the
    same second are taken in input order.
    """
    n = len(taps)
    names = tuple(_RESULT_DTYPES)
    order, priced = _price_in_card_order(compiled, taps, day_type, month_spent_fen, names)
    out = {name: np.empty(n, dtype=dtype) for name, dtype in _RESULT_DTYPES.items()}
    for name, col in out.items():
        col[order] = priced[name]
    return FareResult(**out)


def price_taps_into(
    compiled: CompiledFares,
    taps: TapBatch,
    day_type: int | str,
    month_spent_fen: np.ndarray,
    out: dict[str, np.ndarray],
    rows: np.ndarray,
) -> None:
    """Price taps ``rows`` of ``taps`` on their own, as ``price_taps`` prices a batch of just
    those taps (transfers and caps see no other tap), and write each ``FareResult`` column
    named in ``out`` to ``out[name][rows]``; ``out``'s columns and ``month_spent_fen`` are
    aligned to ``taps``.

    For a caller pricing a table in groups: each group's columns are read once, straight in
    the card order pricing works in, and its results written straight back to their rows."""
    order, priced = _price_in_card_order(
        compiled, taps, day_type, month_spent_fen, tuple(out), rows
    )
    for name, col in out.items():
        col[order] = priced[name]


#: ``FareResult`` columns and their dtypes.
_RESULT_DTYPES = {
    "list_fare_fen": np.int32,
    "concession_fen": np.int64,
    "transfer_fen": np.int64,
    "cap_fen": np.int64,
    "amount_fen": np.int64,
    "is_transfer": np.bool_,
    "fare_capped": np.bool_,
    "rule_index": np.int16,
}


def _price_in_card_order(
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
