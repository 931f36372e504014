"""Compiled passes of the citizens' rules (agents/citizen.py): one loop over a day's candidates
or trips instead of dozens of NumPy passes over arrays of 80k-360k rows.

The random draws are agents/citizen.py's: it names each stream, day and draw index, and a
kernel hashes each id with that stream's base as ``Streams.uniform`` does (``rng.uniform_of``,
the same bits), in its own loop rather than through an array of numbers. Transcendental
functions (``log1p``) are taken from NumPy there, whose SIMD versions need not round as the C
library's do. What is left here is integer and IEEE float arithmetic, which a compiled loop
rounds exactly as NumPy does (with float32 kept float32 where NumPy keeps it).

Compiled on first use and cached on disk, as sim/rng.py's kernels: a process that plans no day
never imports numba. Codes (modes, tap kinds) reach the kernels as arguments, not as globals:
numba freezes a global into its cached machine code and would not see it change (the one global
they call, ``rng.uniform_of``, is the hash itself: its module is in ``COMPILED_IN``, so that the
cached kernels are compiled again when it changes).
"""

from __future__ import annotations

import functools

import numpy as np

from sim import kernel_cache, rng
from sim.codes import TAP_ENTRY, TAP_EXIT, TAP_SINGLE
from sim.network import BUS, METRO

#: What the kernels compile in from other modules (sim/rng.py's one-id hashes). numba caches a
#: kernel with that code but checks only this file for changes; ``kernel_cache.njit`` has it
#: check these too. A kernel calling a compiled function of another module lists it here
#: (tests/test_kernel_cache.py checks that nothing is missing).
COMPILED_IN = (rng,)

#: Mode and tap-kind codes, as the kernels take them.
_CODES = (METRO, BUS, TAP_SINGLE, TAP_ENTRY, TAP_EXIT)

#: Tap columns of ``trip_taps``, in DayTaps order (``incident`` aside), with their dtypes.
TAP_COLUMNS = (
    ("row", np.int64),
    ("t_s", np.int32),
    ("line", np.int32),
    ("stop", np.int32),
    ("device", np.int32),
    ("mode", np.uint8),
    ("kind", np.uint8),
    ("distance_km", np.float32),
    ("journey", np.int64),
    ("tap_key", np.int64),
    ("medium", np.uint8),
    ("incomplete", np.bool_),
)


def trip_taps(trips, draws, network, holders, params) -> dict[str, np.ndarray]:
    """The taps of a day's trips (the columns of ``TAP_COLUMNS``), in the order of the NumPy
    rules this replaces: the boardings of first legs in trip order, then of second legs, then
    the metro exits in that leg order; a tap after the day's last second is dropped.

    ``trips``: (row, journey key, origin zone, destination zone, departure s) per trip.
    ``draws``: the stream bases (uint64, ``Streams.base``) of the metro choice, a forced
    transfer, the QR payment, a missing tap-out and the two device picks, each drawn for the
    journey key (a leg's draws are its trip's), and per trip ``log1p(-u)`` of the walk and of
    the transfer wait. ``network``: routes (metro line, direct bus, via zone, first and second
    leg lines, stop of line at zone), lines (opened day, speed, mode), stop positions and
    devices (first and count of line, first and count of stop). ``holders``: per trip, the
    holder's QR channel, QR trip share and card medium. ``params``: day, metro preference,
    transfer share, walk s, transfer s, missing tap-out share, the no-QR code and the last tap
    second.
    """
    walk_legs = _kernels().walk_legs
    counts = np.zeros(4, np.int64)
    empty = tuple(np.zeros(0, dtype) for _, dtype in TAP_COLUMNS)
    # Twice over the trips: count the taps, then write them into columns of that length (every
    # column is allocated once, at its size: fresh memory is costly).
    walk_legs(trips, draws, network, holders, params, _CODES, empty, counts, False)
    out = tuple(np.empty(int(counts.sum()), dtype) for _, dtype in TAP_COLUMNS)
    walk_legs(trips, draws, network, holders, params, _CODES, out, counts, True)
    return {name: col for (name, _), col in zip(TAP_COLUMNS, out, strict=True)}


#: A rider's one-way day (``trip_slots``): no trip out, or no trip back.
DROP_OUT, DROP_BACK = 1, 2

#: Trip columns of ``trip_slots`` (int64), then the holder's columns it copies to each trip.
TRIP_COLUMNS = ("row", "slot", "origin", "dest", "depart_s", "journey")
HOLDER_COLUMNS = ("qr_channel", "qr_trip_share", "card_medium")


def trip_slots(riders, holders, params) -> dict[str, np.ndarray]:
    """A day's trips (``TRIP_COLUMNS`` and ``HOLDER_COLUMNS``), slot by slot, each in rider
    order: 0 out (home to anchor) unless the rider drops it, 1 anchor to the extra stop for
    riders with one, 2 back home (from the extra stop if any) unless dropped.

    ``riders``: per rider, (row, card id, home zone, anchor zone, extra-stop zone, departure out
    and back before the service bounds, has an extra stop, ``DROP_OUT``/``DROP_BACK`` or 0);
    ``holders``: per rider, the columns of ``HOLDER_COLUMNS`` (any dtypes).
    ``params``: first departure s, last departure s, trip slots per card. The departure out is
    at least the first; the one back at least 30 min later and at most the last, and an hour
    later after an extra stop (which leaves then)."""
    cols, of_rider = _kernels().trip_slots(riders, params, DROP_OUT, DROP_BACK)
    trips = {name: cols[k] for k, name in enumerate(TRIP_COLUMNS)}
    # The holder's columns, gathered from the riders' (one sequential pass each).
    return trips | {name: col[of_rider] for name, col in zip(HOLDER_COLUMNS, holders, strict=True)}


def riders(candidates, card_id, base, issued_card_type, ride_prob, factors) -> np.ndarray:
    """``candidates`` (population rows) whose draw (their card id's, for stream ``base``) is
    under their riding chance today: the card's ``ride_prob`` times, in turn, the two float64
    factors of ``factors[:, type]`` for its issued card type (as the NumPy rule multiplied
    them: a factor of 1 changes no bit)."""
    args = (card_id, np.uint64(base), issued_card_type, ride_prob, factors)
    return _kernels().riders(candidates, *args)


def split_away(candidates, card_id, base, home_city, region, cum_p) -> tuple[np.ndarray, ...]:
    """Candidates away today and the rest: ``(away rows, their city index from 0, staying
    rows)``, both in candidates' order. A home-city holder (``home_city`` 0) is away when the
    draw (its card id's, for stream ``base``) is under the last column of ``cum_p[region]``,
    the cumulative chances of the other cities, in the first city whose cumulative chance
    exceeds it."""
    args = (card_id, np.uint64(base), home_city, region, cum_p)
    return _kernels().split_away(candidates, *args)


class _Kernels:
    """The compiled passes (``_kernels``)."""

    def __init__(self, walk_legs, trip_slots, riders, split_away) -> None:
        self.walk_legs, self.trip_slots = walk_legs, trip_slots
        self.riders, self.split_away = riders, split_away


@functools.cache
def _kernels() -> _Kernels:
    """Compile (or load from numba's cache) the loops, on first use."""
    jit = kernel_cache.njit(COMPILED_IN)  # numba.njit(cache=True, nogil=True), cache refreshed
    rng.compiled()  # binds rng.uniform_of, which the loops call

    @jit
    def riders_kernel(candidates, card_id, base, issued_card_type, ride_prob, factors):
        out = np.empty(candidates.shape[0], candidates.dtype)
        n = 0
        for j in range(candidates.shape[0]):
            row = candidates[j]
            card_type = issued_card_type[row]
            p = np.float64(ride_prob[row]) * factors[0, card_type] * factors[1, card_type]
            if rng.uniform_of(card_id[row], base) < p:
                out[n] = row
                n += 1
        return out[:n].copy()

    @jit
    def split_away_kernel(candidates, card_id, base, home_city, region, cum_p):
        away = np.empty(candidates.shape[0], np.int64)
        city = np.empty(candidates.shape[0], np.int64)
        staying = np.empty(candidates.shape[0], candidates.dtype)
        n_away = n_staying = 0
        last = cum_p.shape[1] - 1
        for j in range(candidates.shape[0]):
            row = candidates[j]
            u = 0.0
            is_away = False
            if home_city[row] == 0:  # (a visitor is never away from here)
                u = rng.uniform_of(card_id[row], base)
                is_away = u < cum_p[region[row], last]
            if is_away:
                c = 0
                for k in range(last + 1):
                    c += cum_p[region[row], k] <= u
                away[n_away] = row
                city[n_away] = c
                n_away += 1
            else:
                staying[n_staying] = row
                n_staying += 1
        # (Nearly every candidate stays: their rows are not copied out of the buffer.)
        return away[:n_away].copy(), city[:n_away].copy(), staying[:n_staying]

    @jit
    def walk_legs(trips, draws, network, holders, params, codes, out, counts, fill):
        """Count the taps of every leg into ``counts`` (``fill`` false: boardings of first and
        second legs, exits of first and second legs), or write them (``fill`` true: into
        ``out``, sized and laid out by those counts)."""
        # Arrays are unpacked here, once: inside the loop an array taken from a tuple or passed
        # to a function costs two atomic reference counts per use.
        rows, key, o, d, depart_s = trips
        bases, log_walk, log_wait = draws
        metro_b, transfer_b, qr_b, missing_b, dev0_b, dev1_b = (
            bases[0],
            bases[1],
            bases[2],
            bases[3],
            bases[4],
            bases[5],
        )
        uniform_of = rng.uniform_of
        routes, lines, pos_km, devices = network
        metro_line, direct_bus, via, leg1, leg2, stop_of = routes
        opened_day, speed_kmh, line_mode = lines
        first_of_line, count_of_line, first_of_stop, count_of_stop = devices
        qr_channel, qr_trip_share, medium_of = holders
        metro_mode, bus_mode, single, entry, exit_kind = codes
        day, metro_pref, transfer_share, walk_s, transfer_s, missing_share, no_qr, last_s = params
        o_row, o_t, o_line, o_stop, o_device, o_mode, o_kind, o_km, o_journey, o_key = out[:10]
        o_medium, o_incomplete = out[10], out[11]
        # Where the next tap of each group goes: boardings of first legs, of second legs, exits
        # of first legs, of second legs (each group in trip order).
        at = np.zeros(4, np.int64)
        if fill:
            for g in range(1, 4):
                at[g] = at[g - 1] + counts[g - 1]
        for i in range(rows.shape[0]):
            # The route: metro when both ends are near an open line (and the rider likes it),
            # else a direct bus unless the rider transfers anyway, else bus + bus.
            oi, di = o[i], d[i]
            metro, direct, via_zone = metro_line[oi, di], direct_bus[oi, di], via[oi, di]
            if metro >= 0 and opened_day[metro] <= day and uniform_of(key[i], metro_b) < metro_pref:
                line, to, legs = metro, di, 1
            elif direct >= 0 and not (
                via_zone >= 0 and uniform_of(key[i], transfer_b) < transfer_share
            ):
                line, to, legs = direct, di, 1
            elif via_zone >= 0:
                line, to, legs = leg1[oi, di], via_zone, 2
            else:
                continue  # no route
            medium = np.uint8(0)
            if fill:
                qr = qr_channel[i]
                medium = (
                    qr
                    if qr != no_qr and uniform_of(key[i], qr_b) < qr_trip_share[i]
                    else medium_of[i]
                )
            # The first leg boards after the walk, the second after the first's ride and a wait.
            board = depart_s[i] + np.int64(-log_walk[i] * walk_s) + 60
            frm = oi
            alight = board
            for k in range(legs):
                if k == 1:
                    board = alight + np.int64(-log_wait[i] * transfer_s) + 60
                    line, frm, to = leg2[oi, di], via_zone, di
                is_metro = line_mode[line] == metro_mode
                board_stop = alight_stop = 0
                dist = np.float32(0.0)
                if fill or is_metro or k + 1 < legs:  # (counting a last bus leg needs no ride)
                    board_stop, alight_stop = stop_of[line, frm], stop_of[line, to]
                    dist = abs(pos_km[alight_stop] - pos_km[board_stop])  # float32, as NumPy
                    # float32 arithmetic too (NumPy keeps a float32 column's product float32).
                    alight = board + np.int64(dist / speed_kmh[line] * np.float32(3600.0)) + 60
                missing = is_metro and uniform_of(key[i], missing_b) < missing_share
                boards = board <= last_s
                exits = is_metro and not missing and alight <= last_s
                if fill and boards:
                    # A bus rider boards one of the line's buses; a metro rider passes a gate.
                    if is_metro:
                        device = first_of_stop[board_stop] + np.int64(
                            uniform_of(key[i], dev0_b) * count_of_stop[board_stop]
                        )
                    else:
                        dev_u = uniform_of(key[i], dev0_b)
                        device = first_of_line[line] + np.int64(dev_u * count_of_line[line])
                    j = at[k]
                    o_row[j] = rows[i]
                    o_t[j] = board
                    o_line[j] = line
                    o_stop[j] = board_stop
                    o_device[j] = device
                    o_mode[j] = metro_mode if is_metro else bus_mode
                    o_kind[j] = entry if is_metro else single
                    o_km[j] = 0.0
                    o_journey[j] = key[i]
                    o_key[j] = key[i] * 8 + k * 2
                    o_medium[j] = medium
                    o_incomplete[j] = missing
                if fill and exits:
                    j = at[2 + k]
                    o_row[j] = rows[i]
                    o_t[j] = alight
                    o_line[j] = line
                    o_stop[j] = alight_stop
                    o_device[j] = first_of_stop[alight_stop] + np.int64(
                        uniform_of(key[i], dev1_b) * count_of_stop[alight_stop]
                    )
                    o_mode[j] = metro_mode
                    o_kind[j] = exit_kind
                    o_km[j] = dist
                    o_journey[j] = key[i]
                    o_key[j] = key[i] * 8 + k * 2 + 1
                    o_medium[j] = medium
                    o_incomplete[j] = False
                at[k] += boards
                at[2 + k] += exits
        if not fill:
            counts[:] = at

    @jit
    def trip_slots_kernel(riders, params, drop_out, drop_back):
        rows, ids, home, anchor, extra_zone, t_out, t_back, extra, dropped = riders
        first_s, last_s, slots = params
        n = rows.shape[0]
        counts = np.zeros(3, np.int64)  # trips of each slot
        for i in range(n):
            counts[0] += dropped[i] != drop_out
            counts[1] += extra[i]
            counts[2] += dropped[i] != drop_back
        at = np.zeros(3, np.int64)  # where each slot's next trip goes
        at[1] = counts[0]
        at[2] = counts[0] + counts[1]
        cols = np.empty((7, counts.sum()), np.int64)
        row, slot, origin, dest, depart, journey = (
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            cols[5],
        )
        of_rider = cols[6]
        for i in range(n):
            t_o = max(t_out[i], first_s)
            t_b = min(max(t_back[i], t_o + 1800), last_s)
            for s in range(3):
                if s == 0:
                    if dropped[i] == drop_out:
                        continue
                    o, d, t = home[i], anchor[i], t_o
                elif s == 1:
                    if not extra[i]:
                        continue
                    o, d, t = anchor[i], extra_zone[i], t_b
                else:
                    if dropped[i] == drop_back:
                        continue
                    o, d, t = anchor[i], home[i], t_b
                    if extra[i]:
                        o, t = extra_zone[i], t_b + 3600
                j = at[s]
                row[j] = rows[i]
                slot[j] = s
                origin[j] = o
                dest[j] = d
                depart[j] = t
                journey[j] = ids[i] * slots + s
                of_rider[j] = i
                at[s] += 1
        return cols[:6], of_rider

    return _Kernels(walk_legs, trip_slots_kernel, riders_kernel, split_away_kernel)
