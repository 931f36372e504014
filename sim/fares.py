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

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim import kernel_cache
from sim.codes import CARD_TYPES, DAY_TYPES, MODES, TAP_ENTRY, TAP_EXIT, TAP_SINGLE, code_of
from sim.fare_rules import MINUTES_PER_DAY, FareRules, bp_of, pct_to_bp
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


def price_taps(
    compiled: CompiledFares, taps: TapBatch, day_type: int | str, month_spent_fen: np.ndarray
) -> FareResult:
    """Price one simulated day's taps (see the module docstring for the order of discounts).

    ``day_type`` is a sim.codes.DAY_TYPES code or name; ``month_spent_fen`` (int64, aligned to the
    taps) is each card's spend earlier in the month, used against monthly caps (the largest value
    among a card's rows is used). Results are aligned to the input rows; taps of one card at the
    same second are taken in input order.
    """
    out = {name: np.empty(len(taps), dtype) for name, dtype in _KERNEL_DTYPES.items()}
    _price_in_card_order(compiled, taps, day_type, month_spent_fen, out)
    out["list_fare_fen"] = out["list_fare_fen"].astype(_RESULT_DTYPES["list_fare_fen"])
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
    the card order pricing works in, and its results written straight back to their rows. On a
    ValueError (a code out of range) ``out``'s columns may be partly written."""
    _price_in_card_order(compiled, taps, day_type, month_spent_fen, out, rows)


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
    out: dict[str, np.ndarray],
    rows: np.ndarray | None = None,
) -> None:
    """Price the taps at ``rows`` (or all) on their own and write each ``FareResult`` column
    named in ``out`` to ``out[name][rows]`` (columns aligned to ``taps``): ``price_taps_into``.

    The taps are sorted by (card, time) and priced in that order by one compiled pass
    (``_kernels``), which reads each tap's columns and writes its results at its own row."""
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
    if len(order) == 0:
        return
    # The pass writes int64 money, bool flags and int16 rule positions; a column of another
    # dtype (or one not asked for) gets a scratch column, copied over at the priced rows.
    cols, copies = [], []
    for name, dtype in _KERNEL_DTYPES.items():
        col = out.get(name)
        if col is None or col.dtype != dtype:
            scratch = np.empty(len(taps), dtype)
            if col is not None:
                copies.append((col, scratch))
            col = scratch
        cols.append(col)
    tables = (
        compiled.line_fare_fen,
        compiled.band_upper_km,
        compiled.band_fare_fen,
        compiled.rule_table,
        compiled.rule_bp,
        compiled.rule_off_fen,
        compiled.rule_fixed_fen,
        compiled.rule_pos,
        compiled.transfer_mode_ok,
        compiled.transfer_card_ok,
        compiled.daily_cap_fen,
        compiled.monthly_cap_fen,
    )
    params = (
        dt,
        compiled.incomplete_fare_fen,
        int(compiled.incomplete_discounts),
        compiled.transfer_window_s,
        compiled.transfer_max_legs,
        compiled.transfer_bp,
        compiled.transfer_off_fen,
        int(compiled.has_caps),
        MINUTES_PER_DAY,
    )
    columns = (taps.card, taps.t_s, taps.line, taps.mode, taps.kind, taps.card_type)
    columns += (taps.distance_km, taps.incomplete)
    bad = _kernels().price_rows(order, columns, spent, tables, params, _CODES, tuple(cols))
    if bad:
        for bit, (name, (lo, hi)) in enumerate(_limits(compiled).items()):
            if bad >> bit & 1:
                raise ValueError(f"taps.{name} has values outside {lo}..{hi}")
    for col, scratch in copies:
        col[order] = scratch[order]


#: ``FareResult`` columns as the compiled pass writes them (money in int64).
_KERNEL_DTYPES = _RESULT_DTYPES | {"list_fare_fen": np.int64}

#: Tap kinds, as the compiled pass takes them (numba freezes globals into its cached code).
_CODES = (TAP_SINGLE, TAP_ENTRY, TAP_EXIT)


def _limits(compiled: CompiledFares) -> dict[str, tuple[int, int]]:
    """The codes pricing looks up, per column, in the order the compiled pass flags them."""
    return {
        "line": (0, len(compiled.line_ids) - 1),
        "mode": (0, _N_MODE - 1),
        "kind": (0, TAP_EXIT),
        "card_type": (0, _N_CT - 1),
        "t_s": (0, 2**31 - 1),
    }


#: ``bp_of`` compiled, for the pricing pass; bound by ``_kernels`` (a module global, not a
#: closure cell: numba keys its cache on a kernel's pickled closure, see sim/rng.py).
_bp_of = None

#: What the pricing pass compiles in from other modules (sim/fare_rules.py's ``bp_of``). numba
#: caches a kernel with that code but checks only this file for changes; ``kernel_cache.njit``
#: has it check these too. A kernel calling a compiled function of another module lists it here
#: (tests/test_kernel_cache.py checks that nothing is missing).
COMPILED_IN = (bp_of,)


class _Kernels:
    """The compiled pass (``_kernels``)."""

    def __init__(self, price_rows) -> None:
        self.price_rows = price_rows


@functools.cache
def _kernels() -> _Kernels:
    """Compile (or load from numba's on-disk cache) the pricing pass, on first use: a process
    that prices nothing never imports numba.

    ``price_rows`` applies the compiled policy's tables, row by row in (card, time) order, as
    the module docstring says: the leg and its charge row, list fare, concession, transfer
    chain, caps. It checks every code before it looks it up: on one out of range it stops and
    returns a bit per column with such a code (``_limits``'s order; the rows before it may have
    been written), else 0. It calls ``bp_of`` (sim/fare_rules.py), the one way to take basis
    points: it is in ``COMPILED_IN``, so a change there compiles the pass again."""
    jit = kernel_cache.njit(COMPILED_IN)  # numba.njit(cache=True, nogil=True), cache refreshed

    global _bp_of
    _bp_of = jit(bp_of)

    @jit
    def price_rows(order, columns, spent, tables, params, codes, out):
        # Arrays are unpacked once, here (see agents/citizen_kernels.py).
        card, t_s, line, mode, kind, ctype, distance, incomplete = columns
        line_fare, band_upper, band_fare, rule_table, rule_bp, rule_off, rule_fixed = tables[:7]
        rule_pos, mode_ok, card_ok, daily_cap, monthly_cap = tables[7:]
        dt, inc_fare, inc_discounts, window_s, max_legs, tr_bp, tr_off, has_caps = params[:8]
        minutes = params[8]
        single, entry, exit_kind = codes
        o_list, o_conc, o_trans, o_cap, o_amount, o_is_tr, o_capped, o_rule = out
        n = order.shape[0]
        n_lines, n_card_types, n_modes = (
            line_fare.shape[0],
            rule_table.shape[1],
            rule_table.shape[2],
        )
        failed = False
        no_rule = rule_pos.shape[0] - 1
        last_band = band_fare.shape[0] - 1
        prev_card = np.int64(0)
        prev_open = False  # the previous row is an entry waiting for its exit
        board_t = board_mode = np.int64(0)  # the boarding that started the current leg
        board_transfer = False
        chain_t = chain_legs = np.int64(0)  # the card's current transfer chain (0 legs: none)
        limit = cum = paid_before = np.int64(0)  # caps: today's limit, running totals
        for i in range(n):
            r = order[i]
            c, k, ct, m = card[r], kind[r], ctype[r], mode[r]
            t = np.int64(t_s[r])
            if line[r] < 0 or line[r] >= n_lines or m >= n_modes or k > exit_kind:
                failed = True
            if ct >= n_card_types or t < 0:
                failed = True
            if failed:
                break  # before looking anything up
            new_card = i == 0 or c != prev_card
            if new_card:
                chain_legs = 0
            is_exit = k == exit_kind
            inc_row = k == entry and incomplete[r]
            charge = k == single or is_exit or inc_row
            if not (is_exit and not new_card and prev_open):
                # A boarding (or an exit with no open entry: a leg of its own) starts a leg;
                # on an eligible mode and card type it continues the card's chain or starts one.
                board_t, board_mode, board_transfer = t, np.int64(m), False
                if mode_ok[m] and card_ok[ct]:
                    if 0 < chain_legs < max_legs and t - chain_t <= window_s:
                        chain_legs += 1
                        board_transfer = True
                    else:
                        chain_t, chain_legs = t, np.int64(1)
            lst = np.int64(0)
            if inc_row:
                lst = np.int64(inc_fare)
            elif k == single:
                lst = np.int64(line_fare[line[r]])
            elif is_exit:
                d = np.float64(distance[r])
                b = 0
                while b < last_band and not band_upper[b] >= d:  # NaN: the last band
                    b += 1
                lst = np.int64(band_fare[b])
            discounts_ok = charge and (inc_discounts or not inc_row)
            gid = no_rule
            if discounts_ok:
                gid = rule_table[dt, ct, board_mode, (board_t // 60) % minutes]
            conc = _bp_of(lst, rule_bp[gid]) + rule_off[gid] + max(lst - rule_fixed[gid], 0)
            conc = min(conc, lst)
            after = lst - conc
            trans = np.int64(0)
            if board_transfer and discounts_ok:
                trans = tr_off
                if tr_bp:
                    trans += _bp_of(after, np.int64(tr_bp))
                trans = min(trans, after)
            pre_cap = after - trans
            amount = pre_cap
            if has_caps:
                if new_card:
                    # Today's limit: min(daily cap, monthly cap - the most spent earlier this
                    # month among the card's rows), of the card type of its first row.
                    most = spent[r]
                    j = i + 1
                    while j < n and card[order[j]] == c:
                        most = max(most, spent[order[j]])
                        j += 1
                    limit = min(daily_cap[ct], max(monthly_cap[ct] - most, 0))
                    cum = paid_before = 0
                cum += pre_cap
                paid = min(cum, limit)
                amount = paid - paid_before
                paid_before = paid
            o_list[r] = lst
            o_conc[r] = conc
            o_trans[r] = trans
            o_cap[r] = pre_cap - amount
            o_amount[r] = amount
            o_is_tr[r] = board_transfer
            o_capped[r] = pre_cap > amount
            o_rule[r] = rule_pos[gid] if charge else -1
            prev_card = c
            prev_open = k == entry and not incomplete[r]
        bad = 0
        if failed:  # a code out of range: which columns have one
            for i in range(n):
                r = order[i]
                bad |= np.int64(line[r] < 0 or line[r] >= n_lines)
                bad |= np.int64(mode[r] >= n_modes) << 1
                bad |= np.int64(kind[r] > exit_kind) << 2
                bad |= np.int64(ctype[r] >= n_card_types) << 3
                bad |= np.int64(t_s[r] < 0) << 4
        return bad

    return _Kernels(price_rows)
