"""Citizens' behaviour rules, acting on the whole columnar population at once.

A simulated day for the population:
1. who rides today (rider class x day type x school term), one draw per live card;
2. the day's activity chain: commuters go home -> work/school -> home at habitual times with daily
   jitter; others make an errand tour; some add a chained stop, some ride one way only;
3. each trip is routed on the network (metro when both ends are near stations, else a direct bus,
   else bus + transfer) and turned into taps: a bus boarding is one tap, a metro ride is a tap-in
   and a tap-out (sometimes missing: an incomplete trip);
4. each trip is paid by card or by the holder's QR channel.

Every random number is keyed by (card id, trip slot), so a citizen's day does not depend on who else
is simulated (see tests/test_determinism.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.citizen_kernels import DROP_BACK, DROP_OUT, riders, split_away, trip_slots, trip_taps
from sim.codes import (
    CARD_TYPES,
    DAY_TYPES,
    MEDIA,
    TAP_ENTRY,
    TAP_EXIT,
    TAP_SINGLE,
    WORKDAY,
    is_elderly,
)
from sim.grouping import positions_in_runs, stable_order
from sim.network import BUS, METRO, TransitNetwork
from sim.population import NO_QR, Cardholders
from sim.rng import Streams
from sim.world_settings import Behaviour, hhmm_to_s

STUDENT = CARD_TYPES.index("student")
MAX_TRIP_SLOTS = 4  # slots 0-2: the day's trips at home; slot 3: boardings in another city
MEDIA_YIMATONGXING = MEDIA.index("qr_yimatongxing")
LAST_TAP_S = 23 * 3600 + 59 * 60
FIRST_DEPARTURE_S = 5 * 3600 + 30 * 60
LAST_DEPARTURE_S = 22 * 3600


@dataclass(frozen=True)
class DayTaps:
    """One day's planned taps, one row per tap (columns are equal-length arrays)."""

    row: np.ndarray  # int64, population row of the card
    t_s: np.ndarray  # int32, seconds since midnight
    line: np.ndarray  # int32
    stop: np.ndarray  # int32
    device: np.ndarray  # int32
    mode: np.ndarray  # uint8
    kind: np.ndarray  # uint8 (single / entry / exit)
    distance_km: np.ndarray  # float32 (metro exits; 0 elsewhere)
    journey: np.ndarray  # int64, journey key: card id * MAX_TRIP_SLOTS + slot
    tap_key: np.ndarray  # int64, stable tap id: journey * 8 + leg * 2 + (1 if exit)
    medium: np.ndarray  # uint8 media code (card medium or QR channel)
    incomplete: np.ndarray  # bool, a metro entry with no tap-out
    incident: np.ndarray | None = None  # int16 code of the incident that changed it (-1 none)

    def __post_init__(self) -> None:
        if self.incident is None:
            object.__setattr__(self, "incident", np.full(len(self.row), -1, dtype=np.int16))

    def __len__(self) -> int:
        return len(self.row)

    def take(self, idx: np.ndarray) -> DayTaps:
        """Rows ``idx`` (indices or a boolean mask) of every column."""
        return DayTaps(**{name: getattr(self, name)[idx] for name in self.__dataclass_fields__})


def day_factor(behaviour: Behaviour, card_type: np.ndarray, day_type: int) -> np.ndarray:
    """Riding chance multiplier for each card on a day of ``day_type``."""
    name = DAY_TYPES[day_type]
    normal = getattr(behaviour.day_type_factors, name)
    elderly = getattr(behaviour.elderly_day_type_factors, name)
    return np.where(is_elderly(card_type), elderly, normal)


def riders_today(
    pop: Cardholders,
    behaviour: Behaviour,
    streams: Streams,
    day: int,
    day_type: int,
    school_day: bool,
    candidates: np.ndarray,
) -> np.ndarray:
    """Population rows (a subset of ``candidates``: live, non-dormant cards) that ride today."""
    # Habits follow the card as issued: a policy that re-derives types from age changes what
    # a holder pays, not the days they are out. The chance is the card's own times its type's
    # factors (the day type's, then a student's out of term), one card type at a time.
    card_types = np.arange(len(CARD_TYPES))
    factors = np.ones((2, len(CARD_TYPES)))
    factors[0] = day_factor(behaviour, card_types, day_type)
    if not school_day:
        factors[1, STUDENT] = behaviour.school_break_student_factor
    base = streams.base("day.ride", day)
    return riders(candidates, pop.card_id, base, pop.issued_card_type, pop.ride_prob, factors)


def _normal_s(streams: Streams, name: str, day: int, ids: np.ndarray, slot: int, sd_min: float):
    return (streams.normal(name, day, ids, slot) * sd_min * 60.0).astype(np.int64)


def plan_trips(
    pop: Cardholders,
    riders: np.ndarray,
    network: TransitNetwork,
    behaviour: Behaviour,
    streams: Streams,
    day: int,
    day_type: int,
    school_day: bool,
) -> dict[str, np.ndarray]:
    """The day's trips of ``riders``: row, slot, origin zone, destination zone, departure (s),
    journey key (card id * MAX_TRIP_SLOTS + slot) and the holder's QR channel, QR trip share
    and card medium, in slot order then rider order."""
    ids = pop.card_id[riders]
    ct = pop.issued_card_type[riders]  # habits follow the card as issued (see riders_today)
    home = pop.home_zone[riders].astype(np.int64)
    work = pop.work_zone[riders].astype(np.int64)
    commuting_day = day_type == WORKDAY
    commute = (work != home) & commuting_day
    commute &= np.where(ct == STUDENT, school_day, True)

    # Each draw is made only for the riders whose rule uses it (a draw is a pure function of its
    # id: the others' numbers do not change). Commuters keep their habitual times, with jitter;
    # the others make an errand tour.
    c = np.flatnonzero(commute)
    e = np.flatnonzero(~commute)
    zones = network.zones
    region = pop.region[riders]

    def errand_zone(draw: int, who: np.ndarray) -> np.ndarray:
        first = zones.first_of_region[region[who]].astype(np.int64)
        count = zones.count_of_region[region[who]].astype(np.int64)
        z = first + np.minimum(
            (streams.uniform("day.errand_zone", day, ids[who], draw) ** 1.4 * count).astype(
                np.int64
            ),
            count - 1,
        )
        # An errand in the home zone is walked; move it to the neighbouring zone instead.
        return np.where(z == home[who], first + (z - first + 1) % count, z)

    anchor = work.copy()
    anchor[e] = errand_zone(0, e)
    jitter = behaviour.daily_time_jitter_min
    t_out = np.empty(len(riders), np.int64)
    t_back = np.empty(len(riders), np.int64)
    t_out[c] = pop.am_s[riders[c]] + _normal_s(streams, "day.jitter", day, ids[c], 0, jitter)
    t_back[c] = pop.pm_s[riders[c]] + _normal_s(streams, "day.jitter", day, ids[c], 1, jitter)
    t_out_errand = hhmm_to_s(behaviour.errand_departure_mean) + _normal_s(
        streams, "day.errand_time", day, ids[e], 0, behaviour.errand_departure_sd_min
    )
    stay = -np.log1p(-streams.uniform("day.errand_stay", day, ids[e])) * (
        behaviour.errand_duration_mean_min * 60.0
    )
    # Service runs about 05:30-22:30: nobody plans a ride outside it.
    t_out_errand = np.clip(t_out_errand, FIRST_DEPARTURE_S, 20 * 3600)
    t_out[e] = t_out_errand
    t_back[e] = t_out_errand + 1800 + stay.astype(np.int64)

    extra = streams.uniform("day.extra_stop", day, ids) < behaviour.extra_trip_share
    extra_zone = np.zeros(len(riders), np.int64)
    with_extra = np.flatnonzero(extra)
    extra_zone[with_extra] = errand_zone(1, with_extra)

    one_way = np.flatnonzero(streams.uniform("day.one_way", day, ids) < behaviour.one_way_share)
    out_dir = streams.uniform("day.one_way_dir", day, ids[one_way]) < 0.5
    dropped = np.zeros(len(riders), np.uint8)
    dropped[one_way] = np.where(out_dir, DROP_OUT, DROP_BACK)

    # Slots: 0 out (home->anchor), 1 anchor->extra (if any), 2 back (anchor or extra -> home).
    # The holder's payment columns ride along with each trip (gathered once per rider, not
    # once per trip from the whole population).
    holders = (pop.qr_channel[riders], pop.qr_trip_share[riders], pop.medium[riders])
    trips = trip_slots(
        (riders, ids, home, anchor, extra_zone, t_out, t_back, extra, dropped),
        holders,
        (FIRST_DEPARTURE_S, LAST_DEPARTURE_S, MAX_TRIP_SLOTS),
    )
    trips["n_riders"] = np.array([len(riders)])
    return trips


def trips_to_taps(
    pop: Cardholders,
    trips: dict[str, np.ndarray],
    network: TransitNetwork,
    behaviour: Behaviour,
    streams: Streams,
    day: int,
    walk_s: float,
    transfer_s: float,
) -> DayTaps:
    """Route each trip and emit its taps (unsorted; the caller sorts as it needs).

    ``walk_s`` is the mean access walk plus wait before the first boarding, ``transfer_s`` the mean
    time between alighting and the next boarding (both from the scenario's network section).
    """
    rows = trips["row"]
    o = trips["origin"]
    d = trips["dest"]
    key = trips["journey"]

    # Draws keyed by the journey (a leg's are its trip's): the loop draws these itself...
    names = ("trip.metro", "trip.transfer", "trip.pay_qr", "trip.missing_tap_out")
    bases = [streams.base(name, day) for name in names]
    bases += [streams.base("trip.device", day, 0), streams.base("trip.device", day, 1)]
    # ... and takes exponential times as NumPy's log1p gives them (see the kernel module).
    log_walk = np.log1p(-streams.uniform("trip.walk", day, key))
    log_wait = np.log1p(-streams.uniform("trip.transfer_wait", day, key))
    draws = (np.array(bases, np.uint64), log_walk, log_wait)
    params = (
        day,
        float(behaviour.metro_preference),
        float(behaviour.transfer_share),
        float(walk_s),
        float(transfer_s),
        float(behaviour.missing_tap_out_share),
        NO_QR,
        LAST_TAP_S,
    )
    holders = (trips["qr_channel"], trips["qr_trip_share"], trips["card_medium"])
    trips_of = (rows, key, o, d, trips["depart_s"])
    return DayTaps(**trip_taps(trips_of, draws, _network_tables(network), holders, params))


def _network_tables(network: TransitNetwork) -> tuple:
    """The network's tables a trip's taps are made of (as ``trip_taps`` takes them)."""
    routes, lines, devices = network.routes, network.lines, network.devices
    return (
        (
            routes.metro_line,
            routes.direct_bus,
            routes.via,
            routes.leg1,
            routes.leg2,
            routes.stop_of,
        ),
        (lines.opened_day, lines.speed_kmh, lines.mode),
        network.stops.pos_km,
        (
            devices.first_of_line,
            devices.count_of_line,
            devices.first_of_stop,
            devices.count_of_stop,
        ),
    )


def away_today(
    pop: Cardholders, streams: Streams, day: int, candidates: np.ndarray, away_p: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which Nantong cardholders among ``candidates`` spend today in another city, and where.

    ``away_p[region, city]`` is the daily chance (gravity model, sim/interop.py). Returns the rows
    and their city codes (1-based: 0 is Nantong)."""
    away_rows, city, _ = split_away_today(pop, streams, day, candidates, away_p)
    return away_rows, city


def split_away_today(
    pop: Cardholders, streams: Streams, day: int, candidates: np.ndarray, away_p: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``away_today``'s rows and cities, and the rest of ``candidates`` (in their order): those
    who spend the day at home."""
    if away_p.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), candidates
    base = streams.base("day.away", day)
    cum = np.cumsum(away_p, axis=1)
    away_rows, city, staying = split_away(
        candidates, pop.card_id, base, pop.home_city, pop.region, cum
    )
    return away_rows, city + 1, staying


def _gateway_of_day(streams: Streams, day: int, ids, city: np.ndarray, gateways: list):
    """Index (among ``gateways``) of the gateway line each holder away in ``city`` uses today."""
    cities = np.array([g.city for g in gateways])
    first = np.searchsorted(cities, city)  # gateways are in city order
    if len(gateways) == cities[-1]:  # one gateway per city: no region to draw
        return first
    counts = np.bincount(cities, minlength=int(cities[-1]) + 1)
    shares = np.array([g.share for g in gateways])
    u = streams.uniform("away.region", day, ids)
    pick = np.zeros(len(city), np.int64)
    for j in np.unique(city[counts[city] > 1]).tolist():
        mine = city == j
        cum = np.cumsum(shares[cities == j])
        pick[mine] = np.minimum((cum[None, :] <= u[mine, None]).sum(axis=1), counts[j] - 1)
    return first + pick


def _with_metro_exits(
    boardings: dict[str, np.ndarray],
    key: np.ndarray,
    metro: np.ndarray,
    exits: np.ndarray,
    ride_s: np.ndarray,
) -> dict[str, np.ndarray]:
    """Boardings (row, t, line, medium) as tap columns: a bus boarding is a single tap, a metro
    ride an entry and, ``ride_s`` later, an exit where ``exits`` (else an incomplete entry);
    each holder's taps in time order."""
    ride = np.minimum(boardings["t"], LAST_TAP_S - 2400)
    n_exits = int(exits.sum())
    taps = {
        "row": np.concatenate([boardings["row"], boardings["row"][exits]]),
        "t": np.concatenate([np.where(metro, ride, boardings["t"]), (ride + ride_s)[exits]]),
        "line": np.concatenate([boardings["line"], boardings["line"][exits]]),
        "mode": np.concatenate([np.where(metro, METRO, BUS), np.full(n_exits, METRO)]),
        "kind": np.concatenate(
            [np.where(metro, TAP_ENTRY, TAP_SINGLE), np.full(n_exits, TAP_EXIT)]
        ),
        "key": np.concatenate([key, key[exits] + 1]),
        "medium": np.concatenate([boardings["medium"], boardings["medium"][exits]]),
        "incomplete": np.concatenate([metro & ~exits, np.zeros(n_exits, bool)]),
    }
    order = stable_order(taps["row"], taps["t"])
    return {name: col[order] for name, col in taps.items()}


def away_taps(
    pop: Cardholders,
    network: TransitNetwork,
    streams: Streams,
    day: int,
    rows: np.ndarray,
    city: np.ndarray,
    interop,
    first_gateway_line: int,
    gateways: list,
    home_cards_listed: bool = True,
    missing_exit_share: float = 0.0,
    ssc_transit: np.ndarray | None = None,
) -> DayTaps:
    """Boardings of cardholders away for the day, on the other city's transit.

    Where the city runs a metro (``metro_trip_share``), a boarding is a metro ride with that
    chance: an entry and, 10-40 minutes later, an exit, which the holder misses with chance
    ``missing_exit_share`` (an incomplete transaction away). There a holder boards at most
    four times a day, so that each tap keeps its own key.

    The Nantong card is used where that city accepts it (and the holder chooses it), else the
    holder's QR code if it is 一码通行 and the city takes it, else the ride is paid outside the
    card system and leaves no record here. ``gateways`` (sim.interop.gateways) are the other
    cities' gateway lines from ``first_gateway_line`` on; where a city has one per region, the
    holder spends the day in one region, drawn by the regions' shares. Before the home city was
    ever listed (``home_cards_listed`` false), nobody tries the card away. A holder whose
    social-security card carries a 交通联合 transit application (``ssc_transit``, per row)
    rides with it where the readers take 交通联合 cards but not the home city's card."""
    cities = list(interop.cities.values())
    ids = pop.card_id[rows]
    n_taps = 1 + streams.poisson("away.taps", day, ids, max(interop.taps_per_away_day - 1, 0.0))
    metro_share = np.array([c.metro_trip_share for c in cities])[city - 1]
    n_taps = np.minimum(n_taps, np.where(metro_share > 0, 4, 7))
    accepts = np.array([c.accepts_home_cards for c in cities])[city - 1]
    if ssc_transit is not None:
        jtlh = np.array([c.accepts_jiaotong_lianhe for c in cities])[city - 1]
        accepts = np.where(ssc_transit, np.maximum(accepts, jtlh), accepts)
    takes_qr = np.array([c.accepts_yimatongxing for c in cities])[city - 1]
    uses_card = (
        home_cards_listed
        & (streams.uniform("away.card_ok", 0, ids) < accepts)
        & (streams.uniform("away.card_choice", day, ids) < interop.away_card_share)
    )
    yima = MEDIA_YIMATONGXING
    uses_qr = ~uses_card & takes_qr & (pop.qr_channel[rows] == yima)
    pays = uses_card | uses_qr
    rows, city, n_taps, uses_card, ids, metro_share = (
        rows[pays],
        city[pays],
        n_taps[pays],
        uses_card[pays],
        ids[pays],
        metro_share[pays],
    )
    tap_row = np.repeat(rows, n_taps)
    k = positions_in_runs(n_taps)
    start = 8 * 3600 + (streams.uniform("away.start", day, ids) * 3 * 3600).astype(np.int64)
    boarding = pop.card_id[tap_row] * 8 + k
    t = (
        np.repeat(start, n_taps)
        + k * 5400
        + (streams.uniform("away.gap", day, boarding) * 1800).astype(np.int64)
    )
    # Bus boardings on the gateway of the holder's region of the day; metro rides on the city's
    # metro gateway (gateway positions are line offsets from first_gateway_line).
    bus_ways = [i for i, g in enumerate(gateways) if not g.metro]
    metro_way = np.full(len(cities) + 1, -1, np.int64)
    for i, g in enumerate(gateways):
        if g.metro:
            metro_way[g.city] = i
    way = np.array(bus_ways)[
        _gateway_of_day(streams, day, ids, city, [gateways[i] for i in bus_ways])
    ]
    share = np.repeat(metro_share, n_taps)
    metro = streams.uniform("away.metro", day, boarding) < share
    line = first_gateway_line + np.where(
        metro, metro_way[np.repeat(city, n_taps)], np.repeat(way, n_taps)
    )
    medium = np.where(np.repeat(uses_card, n_taps), pop.medium[tap_row], yima).astype(np.uint8)
    boardings = {"row": tap_row, "t": t, "line": line, "medium": medium}
    # Keys: a boarding's own in a city without metro; in one with metro, entry and exit apart.
    key = np.where(share > 0, 2 * k, k)
    exits = metro & (streams.uniform("away.no_exit", day, boarding) >= missing_exit_share)
    ride_s = 600 + (streams.uniform("away.ride", day, boarding) * 1800).astype(np.int64)
    taps = _with_metro_exits(boardings, key, metro, exits, ride_s)
    n = len(taps["row"])
    journey = pop.card_id[taps["row"]] * MAX_TRIP_SLOTS + 3
    return DayTaps(
        row=taps["row"].astype(np.int64),
        t_s=np.minimum(taps["t"], LAST_TAP_S).astype(np.int32),
        line=taps["line"].astype(np.int32),
        stop=network.lines.stop_ptr[taps["line"]].astype(np.int32),
        device=network.devices.first_of_line[taps["line"]].astype(np.int32),
        mode=taps["mode"].astype(np.uint8),
        kind=taps["kind"].astype(np.uint8),
        distance_km=np.zeros(n, np.float32),
        journey=journey,
        tap_key=journey * 8 + taps["key"],
        medium=taps["medium"],
        incomplete=taps["incomplete"],
    )
