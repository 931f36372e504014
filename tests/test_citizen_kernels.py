"""agents/citizen.py's compiled passes (agents/citizen_kernels.py) give, byte for byte, what the
rules gave as NumPy passes (kept here as the reference, as tests/test_rng.py keeps the NumPy hash):
the riders, the away, the trips and their taps, on the real world, on days of every kind and with
settings that take every branch (metro, transfers, missing tap-outs, taps cut at the end of
service). And numba's cache can hold the kernels: none has a compiled helper in its closure,
whose pickle (numba's cache key) differs in every process."""

from __future__ import annotations

import numpy as np
import pytest

from agents.citizen import (
    FIRST_DEPARTURE_S,
    LAST_DEPARTURE_S,
    LAST_TAP_S,
    MAX_TRIP_SLOTS,
    STUDENT,
    DayTaps,
    away_today,
    day_factor,
    plan_trips,
    riders_today,
    split_away_today,
    trips_to_taps,
)
from sim.codes import TAP_ENTRY, TAP_EXIT, TAP_SINGLE, WORKDAY
from sim.network import BUS, METRO, TransitNetwork
from sim.population import NO_QR, Cardholders
from sim.rng import Streams
from sim.world_settings import Behaviour, hhmm_to_s


def _numpy_riders_today(
    pop: Cardholders,
    behaviour: Behaviour,
    streams: Streams,
    day: int,
    day_type: int,
    school_day: bool,
    candidates: np.ndarray,
) -> np.ndarray:
    """``riders_today`` as NumPy passes (before the compiled pass)."""
    # Habits follow the card as issued: a policy that re-derives types from age changes what
    # a holder pays, not the days they are out.
    ct = pop.issued_card_type[candidates]
    p = pop.ride_prob[candidates] * day_factor(behaviour, ct, day_type)
    if not school_day:
        p = np.where(ct == STUDENT, p * behaviour.school_break_student_factor, p)
    u = streams.uniform("day.ride", day, pop.card_id[candidates])
    return candidates[u < p]


def _numpy_normal_s(
    streams: Streams, name: str, day: int, ids: np.ndarray, slot: int, sd_min: float
):
    return (streams.normal(name, day, ids, slot) * sd_min * 60.0).astype(np.int64)


def _numpy_plan_trips(
    pop: Cardholders,
    riders: np.ndarray,
    network: TransitNetwork,
    behaviour: Behaviour,
    streams: Streams,
    day: int,
    day_type: int,
    school_day: bool,
) -> dict[str, np.ndarray]:
    """``plan_trips`` as NumPy passes (every draw for every rider)."""
    ids = pop.card_id[riders]
    ct = pop.issued_card_type[riders]  # habits follow the card as issued (see riders_today)
    home = pop.home_zone[riders].astype(np.int64)
    work = pop.work_zone[riders].astype(np.int64)
    commuting_day = day_type == WORKDAY
    commute = (work != home) & commuting_day
    commute &= np.where(ct == STUDENT, school_day, True)

    zones = network.zones
    first = zones.first_of_region[pop.region[riders]].astype(np.int64)
    count = zones.count_of_region[pop.region[riders]].astype(np.int64)

    def errand_zone(draw: int) -> np.ndarray:
        z = first + np.minimum(
            (streams.uniform("day.errand_zone", day, ids, draw) ** 1.4 * count).astype(np.int64),
            count - 1,
        )
        # An errand in the home zone is walked; move it to the neighbouring zone instead.
        return np.where(z == home, first + (z - first + 1) % count, z)

    anchor = np.where(commute, work, errand_zone(0))
    jitter = behaviour.daily_time_jitter_min
    t_out_commute = pop.am_s[riders] + _numpy_normal_s(streams, "day.jitter", day, ids, 0, jitter)
    t_back_commute = pop.pm_s[riders] + _numpy_normal_s(streams, "day.jitter", day, ids, 1, jitter)
    t_out_errand = hhmm_to_s(behaviour.errand_departure_mean) + _numpy_normal_s(
        streams, "day.errand_time", day, ids, 0, behaviour.errand_departure_sd_min
    )
    stay = -np.log1p(-streams.uniform("day.errand_stay", day, ids)) * (
        behaviour.errand_duration_mean_min * 60.0
    )
    # Service runs about 05:30-22:30: nobody plans a ride outside it.
    t_out_errand = np.clip(t_out_errand, FIRST_DEPARTURE_S, 20 * 3600)
    t_out = np.clip(np.where(commute, t_out_commute, t_out_errand), FIRST_DEPARTURE_S, None)
    t_back = np.where(commute, t_back_commute, t_out_errand + 1800 + stay.astype(np.int64))
    t_back = np.minimum(np.maximum(t_back, t_out + 1800), LAST_DEPARTURE_S)

    extra = streams.uniform("day.extra_stop", day, ids) < behaviour.extra_trip_share
    extra_zone = errand_zone(1)
    t_extra = t_back.copy()
    t_back_final = np.where(extra, t_back + 3600, t_back)

    one_way = streams.uniform("day.one_way", day, ids) < behaviour.one_way_share
    drop_out = one_way & (streams.uniform("day.one_way_dir", day, ids) < 0.5)
    drop_back = one_way & ~drop_out

    # Slots: 0 out (home->anchor), 1 anchor->extra (if any), 2 back (anchor or extra -> home).
    n = len(riders)
    slot0 = np.flatnonzero(~drop_out)
    slot1 = np.flatnonzero(extra)
    slot2 = np.flatnonzero(~drop_back)
    back_origin = np.where(extra, extra_zone, anchor)
    rows = np.concatenate([riders[slot0], riders[slot1], riders[slot2]])
    return {
        "row": rows.astype(np.int64),
        "slot": np.concatenate(
            [np.zeros(len(slot0)), np.ones(len(slot1)), np.full(len(slot2), 2)]
        ).astype(np.int64),
        "origin": np.concatenate([home[slot0], anchor[slot1], back_origin[slot2]]),
        "dest": np.concatenate([anchor[slot0], extra_zone[slot1], home[slot2]]),
        "depart_s": np.concatenate([t_out[slot0], t_extra[slot1], t_back_final[slot2]]),
        "n_riders": np.array([n]),
    }


def _numpy_trips_to_taps(
    pop: Cardholders,
    trips: dict[str, np.ndarray],
    network: TransitNetwork,
    behaviour: Behaviour,
    streams: Streams,
    day: int,
    walk_s: float,
    transfer_s: float,
) -> DayTaps:
    """``trips_to_taps`` as NumPy passes."""
    rows = trips["row"]
    slot = trips["slot"]
    o = trips["origin"]
    d = trips["dest"]
    ids = pop.card_id[rows]
    key = ids * MAX_TRIP_SLOTS + slot
    routes = network.routes
    lines = network.lines

    def draw(name: str, k: int = 0) -> np.ndarray:
        return streams.uniform(name, day, key, k)

    metro = routes.metro_line[o, d]
    metro_open = (metro >= 0) & (lines.opened_day[np.maximum(metro, 0)] <= day)
    use_metro = metro_open & (draw("trip.metro") < behaviour.metro_preference)
    direct = routes.direct_bus[o, d]
    has_via = routes.via[o, d] >= 0
    force_transfer = has_via & (draw("trip.transfer") < behaviour.transfer_share)
    use_direct = ~use_metro & (direct >= 0) & ~force_transfer
    use_two = ~use_metro & ~use_direct & has_via

    walk = (-np.log1p(-draw("trip.walk")) * walk_s).astype(np.int64) + 60
    board1 = trips["depart_s"] + walk
    line1 = np.where(use_metro, metro, np.where(use_direct, direct, routes.leg1[o, d]))
    dest1 = np.where(use_two, routes.via[o, d], d)
    keep = use_metro | use_direct | use_two
    # Second legs (transfers) only for two-leg routes.
    two = np.flatnonzero(use_two)
    line2 = routes.leg2[o[two], d[two]]

    qr = pop.qr_channel[rows]
    pays_qr = (qr != NO_QR) & (draw("trip.pay_qr") < pop.qr_trip_share[rows])
    medium = np.where(pays_qr, qr, pop.medium[rows]).astype(np.uint8)

    leg_idx = np.concatenate([np.flatnonzero(keep), two])
    leg_line = np.concatenate([line1[keep], line2]).astype(np.int64)
    leg_from = np.concatenate([o[keep], routes.via[o[two], d[two]]])
    leg_to = np.concatenate([dest1[keep], d[two]])
    leg_no = np.concatenate([np.zeros(int(keep.sum()), np.int64), np.ones(len(two), np.int64)])
    board_stop = routes.stop_of[leg_line, leg_from]
    alight_stop = routes.stop_of[leg_line, leg_to]
    dist = np.abs(network.stops.pos_km[alight_stop] - network.stops.pos_km[board_stop])
    ride_s = (dist / lines.speed_kmh[leg_line] * 3600.0).astype(np.int64) + 60
    # Board times: first legs board after the walk; second legs after the first leg plus a wait.
    board = board1[leg_idx].copy()
    first_ride = np.zeros(len(rows), np.int64)
    first_ride[leg_idx[leg_no == 0]] = ride_s[leg_no == 0]
    transfer_wait = (-np.log1p(-draw("trip.transfer_wait")) * transfer_s).astype(np.int64) + 60
    second = leg_no == 1
    board[second] = (
        board1[leg_idx[second]] + first_ride[leg_idx[second]] + transfer_wait[leg_idx[second]]
    )
    alight = board + ride_s
    is_metro = lines.mode[leg_line] == METRO

    missing_out = is_metro & (
        streams.uniform("trip.missing_tap_out", day, key[leg_idx], 0)
        < behaviour.missing_tap_out_share
    )
    exit_legs = np.flatnonzero(is_metro & ~missing_out)

    # Devices: a bus rider boards one of the line's buses; a metro rider passes one of the gates.
    dev_u = streams.uniform("trip.device", day, key[leg_idx], 0)
    bus_dev = network.devices.first_of_line[leg_line] + (
        dev_u * network.devices.count_of_line[leg_line]
    ).astype(np.int64)
    gate_in = network.devices.first_of_stop[board_stop] + (
        dev_u * network.devices.count_of_stop[board_stop]
    ).astype(np.int64)
    dev_u2 = streams.uniform("trip.device", day, key[leg_idx], 1)
    gate_out = network.devices.first_of_stop[alight_stop] + (
        dev_u2 * network.devices.count_of_stop[alight_stop]
    ).astype(np.int64)

    n_board = len(leg_idx)
    kind_board = np.where(is_metro, TAP_ENTRY, TAP_SINGLE).astype(np.uint8)
    taps = {
        "row": np.concatenate([rows[leg_idx], rows[leg_idx[exit_legs]]]),
        "t_s": np.concatenate([board, alight[exit_legs]]),
        "line": np.concatenate([leg_line, leg_line[exit_legs]]),
        "stop": np.concatenate([board_stop, alight_stop[exit_legs]]),
        "device": np.concatenate([np.where(is_metro, gate_in, bus_dev), gate_out[exit_legs]]),
        "mode": np.concatenate([np.where(is_metro, METRO, BUS), np.full(len(exit_legs), METRO)]),
        "kind": np.concatenate([kind_board, np.full(len(exit_legs), TAP_EXIT, np.uint8)]),
        "distance_km": np.concatenate([np.zeros(n_board), dist[exit_legs]]),
        "journey": np.concatenate([key[leg_idx], key[leg_idx[exit_legs]]]),
        "tap_key": np.concatenate(
            [key[leg_idx] * 8 + leg_no * 2, key[leg_idx[exit_legs]] * 8 + leg_no[exit_legs] * 2 + 1]
        ),
        "medium": np.concatenate([medium[leg_idx], medium[leg_idx[exit_legs]]]),
        "incomplete": np.concatenate([missing_out, np.zeros(len(exit_legs), bool)]),
    }
    # Trips running past the end of service are cut (last taps at 23:59).
    in_day = taps["t_s"] <= LAST_TAP_S
    return DayTaps(
        row=taps["row"][in_day].astype(np.int64),
        t_s=taps["t_s"][in_day].astype(np.int32),
        line=taps["line"][in_day].astype(np.int32),
        stop=taps["stop"][in_day].astype(np.int32),
        device=taps["device"][in_day].astype(np.int32),
        mode=taps["mode"][in_day].astype(np.uint8),
        kind=taps["kind"][in_day].astype(np.uint8),
        distance_km=taps["distance_km"][in_day].astype(np.float32),
        journey=taps["journey"][in_day].astype(np.int64),
        tap_key=taps["tap_key"][in_day].astype(np.int64),
        medium=taps["medium"][in_day].astype(np.uint8),
        incomplete=taps["incomplete"][in_day],
    )


def _numpy_away_today(
    pop: Cardholders, streams: Streams, day: int, candidates: np.ndarray, away_p: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``away_today`` as NumPy passes."""
    if away_p.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    local = candidates[pop.home_city[candidates] == 0]
    cum = np.cumsum(away_p, axis=1)
    u = streams.uniform("day.away", day, pop.card_id[local])
    # Few are away on a given day: pick the city only for those under their region's total.
    away = np.flatnonzero(u < cum[pop.region[local], -1])
    city = (cum[pop.region[local[away]]] <= u[away, None]).sum(axis=1)
    return local[away], city + 1


def _same(a, b) -> bool:
    """Equal dtype, shape and bytes."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _days(world) -> list[tuple[int, int, bool]]:
    """A day of each day type of the run (day, day type, school day), and a school holiday."""
    cal = world.calendar
    days = {}
    for day in range(len(cal.day_types)):
        days.setdefault((int(cal.day_types[day]), bool(cal.is_school_day[day])), day)
    return [(day, day_type, school) for (day_type, school), day in sorted(days.items())]


def _pool(world, day: int) -> np.ndarray:
    pop = world.population
    rows = world.riding_rows
    return rows[(pop.issue_day[rows] < day) & (pop.end_day[rows] > day)]


@pytest.fixture(scope="module")
def streams() -> Streams:
    return Streams(11)


def test_riders_and_away_are_the_numpy_ones(nantong_world, streams):
    world = nantong_world
    pop = world.population
    beh = world.scenario.behaviour
    for day, day_type, school in _days(world):
        pool = _pool(world, day)
        away = away_today(pop, streams, day, pool, world.away_probability)
        expected = _numpy_away_today(pop, streams, day, pool, world.away_probability)
        assert all(_same(a, b) for a, b in zip(away, expected, strict=True))
        staying = split_away_today(pop, streams, day, pool, world.away_probability)[2]
        assert _same(staying, np.setdiff1d(pool, away[0], assume_unique=True))
        got = riders_today(pop, beh, streams, day, day_type, school, staying)
        assert _same(got, _numpy_riders_today(pop, beh, streams, day, day_type, school, staying))


# Shares that take every branch often: metro, transfers, missed tap-outs.
BRANCHY = {"metro_preference": 0.5, "transfer_share": 0.5, "missing_tap_out_share": 0.3}


@pytest.mark.parametrize("settings", [{}, BRANCHY])
def test_trips_and_taps_are_the_numpy_ones(nantong_world, streams, settings):
    world = nantong_world
    pop = world.population
    beh = world.scenario.behaviour.model_copy(update=settings)
    net = world.network
    walk_s = world.scenario.network.walk_and_wait_min * 60.0
    transfer_s = world.scenario.network.transfer_min * 60.0
    for day, day_type, school in _days(world):
        riders = riders_today(pop, beh, streams, day, day_type, school, _pool(world, day))
        trips = plan_trips(pop, riders, net, beh, streams, day, day_type, school)
        expected = _numpy_plan_trips(pop, riders, net, beh, streams, day, day_type, school)
        assert all(_same(trips[name], col) for name, col in expected.items())
        assert _same(trips["journey"], pop.card_id[trips["row"]] * MAX_TRIP_SLOTS + trips["slot"])
        # As planned, and two hours later: many evening taps then fall after the end of service.
        for late_s in (0, 7200):
            late = {**trips, "depart_s": trips["depart_s"] + late_s}
            taps = trips_to_taps(pop, late, net, beh, streams, day, walk_s, transfer_s)
            late = {**expected, "depart_s": expected["depart_s"] + late_s}
            ref = _numpy_trips_to_taps(pop, late, net, beh, streams, day, walk_s, transfer_s)
            for name in DayTaps.__dataclass_fields__:
                assert _same(getattr(taps, name), getattr(ref, name)), (day_type, late_s, name)
    # The branches were taken: second legs, missed tap-outs, taps cut at the end of service.
    assert ((taps.tap_key % 8) // 2 == 1).any()
    assert (taps.incomplete & (taps.kind == TAP_ENTRY)).any()
    assert len(taps) < len(trips_to_taps(pop, trips, net, beh, streams, day, walk_s, transfer_s))


def test_no_kernel_has_a_compiled_helper_in_its_closure():
    import numba

    import agents.citizen_kernels
    import sim.rng

    kernels = [
        *vars(sim.rng._kernels()).values(),
        *vars(agents.citizen_kernels._kernels()).values(),
    ]
    for kernel in kernels:
        cells = kernel.py_func.__closure__ or ()
        assert not any(isinstance(c.cell_contents, numba.core.dispatcher.Dispatcher) for c in cells)
