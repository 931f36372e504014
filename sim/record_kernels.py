"""Compiled passes of the record conversion (sim/records.py, sim/output.py): a loop over a
day's taps instead of a dozen NumPy passes over arrays of 100k-400k rows.

``tap_derived`` takes the columns a tap record derives from (the card, line, device, time...),
already in the records' order, and derives in one pass what ``RecordWriter.tap_columns`` made
of them with NumPy: the timestamp, vehicle and terminal, the card's token, the TAC-like check
value and the region. ``hex_digits`` writes integers as fixed-width
upper-case hex for ``sim.output._hex``. Both give exactly the bytes of the NumPy passes they
replace (kept as the reference in tests/test_record_kernels.py), and check what those checked
(an index out of range, a card id that cannot be made run-wide, a value too wide for its
digits): a kernel flags it and the caller raises what NumPy raised.

Compiled on first use and cached on disk, as sim/rng.py's kernels: a process that converts no
day never imports numba. Constants reach the kernels as arguments, not globals (numba freezes a
global into its cached code, see agents/citizen_kernels.py).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from sim import kernel_cache, rng

#: What the passes compile in from other modules: sim/rng.py's SplitMix64 constants (the TAC and
#: the masked tokens are ``rng._mix_array`` rounds), frozen into the cached code; a change there
#: compiles the passes again (``kernel_cache.njit``; tests/test_kernel_cache.py checks the list).
COMPILED_IN = (rng,)

#: What a ``tap_derived`` pass flags (bits of its result).
BAD_ROW, BAD_LINE, BAD_DEVICE, BAD_CARD = 1, 2, 4, 8

_GOLDEN, _C1, _C2 = rng._GOLDEN, rng._C1, rng._C2  # the engine's one SplitMix64

#: Rows from which ``sim.output._hex`` writes its digits with the compiled pass: a small table
#: (a test's, a day's KPIs) is not worth importing numba for.
HEX_COMPILED_FROM = 4096


class TapSources(NamedTuple):
    """The tap columns a record derives from, each already in the record's order."""

    row: np.ndarray  # the card's population row
    card: np.ndarray  # the card's (shard-local) id
    line: np.ndarray
    city: np.ndarray  # 0: the tap was at home
    amount: np.ndarray
    counter: np.ndarray
    device: np.ndarray
    t_s: np.ndarray  # second of the day


class TapTables(NamedTuple):
    """What ``tap_derived`` looks up: per population row, per line and per device."""

    holder_region: np.ndarray
    line_region: np.ndarray
    device_kind: np.ndarray


class TapParams(NamedTuple):
    """The scalars of a ``tap_derived`` pass."""

    day_start_s: int  # local epoch second of the day's start
    tac_key: int  # uint64, keys the check value
    card_base: int  # what makes a shard's card id run-wide (ids.global_card)
    card_limit: int  # a shard's card ids are below this
    terminal_base: int
    metro: int  # the device kind that is not a vehicle
    #: The day's two token keys (uint64, as ``PrivacyKey.day_tokens`` keys its rounds); None:
    #: the token is the run-wide card id (unmasked).
    token_keys: tuple[int, int] | None


class TapDerived(NamedTuple):
    """The columns of one ``tap_derived`` pass."""

    device: np.ndarray  # int64
    t_abs: np.ndarray  # local epoch s, -1 for a time before the day (none)
    vehicle: np.ndarray  # the device of a bus, -1 for a gate
    terminal: np.ndarray  # terminal_base + device
    tac: np.ndarray  # keyed 32-bit check value
    token: np.ndarray  # the card's token: its run-wide id, or the day's pseudonym of it
    region: np.ndarray  # the holder's region for a tap in another city, else the line's


def tap_derived(src: TapSources, tables: TapTables, params: TapParams) -> tuple[TapDerived, int]:
    """The derived columns of the taps ``src``, and the ``BAD_*`` bits of what was out of
    range (0: all good; else the columns are not all right).

    The columns come in already taken in the records' order (NumPy's ``take``, a column at a
    time: a pass reading many columns at random rows at once misses the caches on each, and
    ran slower than the takes it fused); this pass then reads and writes in order only."""
    n = len(src.row)
    out = TapDerived(
        device=np.empty(n, np.int64),
        t_abs=np.empty(n, np.int64),
        vehicle=np.empty(n, np.int64),
        terminal=np.empty(n, np.int64),
        tac=np.empty(n, np.int64),
        token=np.empty(n, np.int64),
        region=np.empty(n, np.result_type(tables.holder_region, tables.line_region)),
    )
    if n == 0:
        return out, 0
    scalars = (
        np.int64(params.day_start_s),
        np.uint64(np.uint64(_GOLDEN) ^ np.uint64(params.tac_key)),
        np.int64(params.card_base),
        np.int64(params.card_limit),
        np.int64(params.terminal_base),
        np.int64(params.metro),
        params.token_keys is not None,
        *(np.uint64(k) for k in params.token_keys or (0, 0)),
    )
    bad = _kernels().tap_rows(tuple(src), tuple(tables), scalars, tuple(out))
    return out, int(bad)


def hex_digits(values: np.ndarray, width: int) -> tuple[np.ndarray, bool]:
    """The ASCII upper-case hex digits of ``values`` (integers), ``width`` (4, 8 or 12) per
    value, most significant first, and whether every value fits them (else the digits are not
    all right)."""
    if width not in (4, 8, 12):
        raise ValueError(f"hex_digits writes 4, 8 or 12 digits, not {width}")
    words = np.empty(len(values) * width // 4, np.uint32)
    ok = _kernels().hex_rows(values, width, words) if len(values) else True
    return words.view(np.uint8), bool(ok)


class _Kernels:
    """The compiled passes (``_kernels``)."""

    def __init__(self, tap_rows, hex_rows) -> None:
        self.tap_rows, self.hex_rows = tap_rows, hex_rows


def _mix(z):
    """SplitMix64's finaliser on one uint64, as ``sim.rng._mix_array`` (compiled as ``mix``)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def _index_of(i, n, bad, bit):
    """Index ``i`` of a table of ``n`` as NumPy takes it (a negative one from the end), and
    ``bad`` with ``bit`` set if it is out of range (then 0: the pass reads on, branch-free);
    compiled as ``_index``."""
    i = i + n if i < 0 else i
    ok = i >= 0 and i < n
    return (i if ok else 0), (bad if ok else bad | bit)


def _hex8(x):
    """The 8 upper-case hex digits of a 32-bit ``x`` (uint64) as ASCII bytes of a uint64, the
    least significant digit in the lowest byte: each nibble spread to a byte, then '0' added,
    and 7 more to those above 9 (compiled as ``hex8``)."""
    x = ((x & np.uint64(0xFFFF0000)) << np.uint64(16)) | (x & np.uint64(0xFFFF))
    x = ((x & np.uint64(0x0000FF000000FF00)) << np.uint64(8)) | (x & np.uint64(0x000000FF000000FF))
    x = ((x & np.uint64(0x00F000F000F000F0)) << np.uint64(4)) | (x & np.uint64(0x000F000F000F000F))
    above9 = ((x + np.uint64(0x0606060606060606)) >> np.uint64(4)) & np.uint64(0x0101010101010101)
    return x + np.uint64(0x3030303030303030) + above9 * np.uint64(7)


def _swap8(x):
    """``x`` (uint64) with its bytes in reverse order (compiled as ``swap8``)."""
    x = ((x & np.uint64(0x00FF00FF00FF00FF)) << np.uint64(8)) | (
        (x >> np.uint64(8)) & np.uint64(0x00FF00FF00FF00FF)
    )
    x = ((x & np.uint64(0x0000FFFF0000FFFF)) << np.uint64(16)) | (
        (x >> np.uint64(16)) & np.uint64(0x0000FFFF0000FFFF)
    )
    return (x << np.uint64(32)) | (x >> np.uint64(32))


#: ``_mix`` compiled, for the passes; bound by ``_kernels`` (a module global, not a closure
#: cell: numba keys its cache on a kernel's pickled closure, see sim/rng.py).
mix = _index = hex8 = swap8 = None


@functools.cache
def _kernels() -> _Kernels:
    """Compile (or load from numba's on-disk cache) the passes, on first use.

    ``tap_rows`` reads each tap once and writes its row of every derived column. An index is
    taken as NumPy takes one (a negative one from the end); the pass returns the ``BAD_*``
    bits of indices outside their table and of card ids that cannot be made run-wide (0: all
    good). ``hex_rows`` returns False, after writing all rows, if a value is negative or too
    wide. The functions they call are this file's (numba's own stamp covers them) but for
    sim/rng.py's constants (``COMPILED_IN``)."""
    jit = kernel_cache.njit(COMPILED_IN)  # numba's njit(cache=True, nogil=True), cache refreshed

    global mix, _index, hex8, swap8
    mix = jit(_mix)
    _index = jit(_index_of)
    hex8 = jit(_hex8)
    swap8 = jit(_swap8)

    @jit
    def tap_rows(src, tables, scalars, out):
        row, card_id, line, city, amount, counter, device, t_s = src
        holder_region, line_region, device_kind = tables
        day_start, tac_seed, card_base, card_limit, terminal_base, metro = scalars[:6]
        masked, token_key1, token_key2 = scalars[6:]
        o_device, o_t, o_vehicle, o_terminal, o_tac, o_token, o_region = out
        n_pop, n_lines, n_devices = (
            holder_region.shape[0],
            line_region.shape[0],
            device_kind.shape[0],
        )
        # Arithmetic only, in a loop the compiler vectorises: the check value is
        # sim.records._hash32 over card, counter, amount, device and time; a masked token
        # PrivacyKey.day_tokens of the run-wide card id.
        bad_card = False
        for i in range(o_t.shape[0]):
            card = np.int64(card_id[i])
            bad_card |= card < 0 or card >= card_limit
            dev = np.int64(device[i])
            t = np.int64(t_s[i])
            t_abs = day_start + t if t >= 0 else np.int64(-1)
            o_device[i] = dev
            o_t[i] = t_abs
            o_terminal[i] = terminal_base + dev
            if masked:
                z = mix(np.uint64(card_base + card) ^ token_key1)
                z = mix(z ^ token_key2)
                o_token[i] = np.int64(z >> np.uint64(1))
            else:
                o_token[i] = card_base + card
            z = mix(tac_seed ^ np.uint64(card))
            z = mix(z ^ np.uint64(np.int64(counter[i])))
            z = mix(z ^ np.uint64(np.int64(amount[i])))
            z = mix(z ^ np.uint64(dev))
            z = mix(z ^ np.uint64(t_abs))
            o_tac[i] = np.int64(z >> np.uint64(32))
        bad = 8 if bad_card else 0  # BAD_CARD
        # Look-ups, in small tables but for a tap in another city (rare: the holder's region).
        for i in range(o_t.shape[0]):
            ln, bad = _index(np.int64(line[i]), n_lines, bad, 2)  # BAD_LINE
            d, bad = _index(np.int64(device[i]), n_devices, bad, 4)  # BAD_DEVICE
            o_vehicle[i] = o_device[i] if device_kind[d] != metro else np.int64(-1)
            if city[i] > 0:
                p, bad = _index(np.int64(row[i]), n_pop, bad, 1)  # BAD_ROW
                o_region[i] = holder_region[p]
            else:
                o_region[i] = line_region[ln]
        return bad

    @jit
    def hex_rows(values, width, words):
        # Four digits per uint32 word (``width`` a multiple of 4 up to 12), in memory order.
        ok = True
        limit = np.int64(1) << np.int64(4 * width)
        per_value = width // 4
        for i in range(values.shape[0]):
            v = np.int64(values[i])
            if v < 0 or v >= limit:
                ok = False
            u = np.uint64(v)
            low = swap8(hex8(u & np.uint64(0xFFFFFFFF)))  # the last 8 digits, first one first
            at = i * per_value
            if per_value == 1:
                words[at] = np.uint32(low >> np.uint64(32))
                continue
            if per_value == 3:
                high = swap8(hex8(u >> np.uint64(32)))  # 4 digits, in the top half
                words[at] = np.uint32(high >> np.uint64(32))
                at += 1
            words[at] = np.uint32(low & np.uint64(0xFFFFFFFF))
            words[at + 1] = np.uint32(low >> np.uint64(32))
        return ok

    return _Kernels(tap_rows, hex_rows)
