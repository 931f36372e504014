"""Per-agent baseline: one Mesa Agent per citizen, stepping once per simulated day.

Why: DESIGN.md ("Agents at full scale") chose a columnar population whose behaviour rules act on
whole arrays (agents/citizen.py). This script measures what that choice buys. ``CitizenAgent``
holds one citizen's attributes (copied from a sample of the population columns) and its ``step()``
does that citizen's day with scalar Python code implementing the SAME rules as ``away_today`` /
``away_taps`` (a day in another city) and ``riders_today`` -> ``plan_trips`` -> ``trips_to_taps``,
drawing the SAME random numbers (the counter-based streams of sim/rng.py, keyed by card id and
trip slot). On a sample, the per-agent model therefore produces the same taps as the vectorised
code (the script checks the totals agree within 2% and reports how many records are bit-identical).

What the comparison covers: citizen BEHAVIOUR only (day away, ride decision, activity chain,
routing on the network's route tables, tap generation: bus single tap, metro entry/exit, missing
tap-outs, device choice, card/QR medium; visitors from other cities are population rows and ride by
the same rules). NOT covered, on either side: reader outages, fares, duplicate deductions, top-ups,
purse payments, card sales, ledger, validators/SimPy, clearing, Parquet/DuckDB output. For
end-to-end figures see bench/bench_nantong.py.

Two per-agent random-number variants are timed:
- ``numpy``: sim.rng.Streams.uniform/normal on 1-element arrays (exactly the library the product
  uses, called once per number, as a straightforward per-agent port would);
- ``scalar``: a pure-Python, bit-identical port of the same SplitMix64 hash (the best case for a
  per-agent design: no numpy call per number). The ratio against this variant is the conservative
  one.

Run from the repository root:  .venv/bin/python bench/mesa_baseline.py [--sample 20000] [--days 7]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mesa  # noqa: E402
import numpy as np  # noqa: E402

from agents.citizen import (  # noqa: E402
    FIRST_DEPARTURE_S,
    LAST_DEPARTURE_S,
    LAST_TAP_S,
    MAX_TRIP_SLOTS,
    MEDIA_YIMATONGXING,
    STUDENT,
    DayTaps,
)
from sim.codes import (  # noqa: E402
    CARD_TYPES,
    DAY_TYPES,
    ELDERLY_CARD_CODES,  # noqa: E402
    TAP_ENTRY,
    TAP_EXIT,
    TAP_SINGLE,
    WORKDAY,
)
from sim.day import planned_taps  # noqa: E402
from sim.network import BUS, METRO  # noqa: E402
from sim.population import NO_QR, Cardholders  # noqa: E402
from sim.rng import _C1, _C2, _GOLDEN, _MASK64, Streams  # noqa: E402
from sim.world import World  # noqa: E402
from sim.world_settings import hhmm_to_s  # noqa: E402

DEFAULT_SCENARIO = "scenarios/nantong_2024.yaml"
AGREEMENT_TOLERANCE = 0.02
TWO_PI = 2.0 * math.pi

HEADER = """\
Per-agent baseline vs vectorised citizens — BEHAVIOUR ONLY
  compared: days away in other cities, ride decision, activity chain, routing, tap generation
            (away_today/away_taps, riders_today -> plan_trips -> trips_to_taps), same rules and
            same random streams on both sides
  NOT in this comparison: reader outages, fares (transfers, caps), duplicate deductions, top-ups,
            purse payments, card sales, ledger, validators (SimPy), clearing, Parquet/DuckDB
            output (end to end: see bench_nantong.py)"""


# --------------------------------------------------------------------------- random numbers
class NumpyScalarRng:
    """Per-number calls into sim.rng.Streams on 1-element arrays (the product's own library)."""

    name = "numpy"
    label = "sim.rng.Streams on 1-element arrays"

    def __init__(self, streams: Streams) -> None:
        self.streams = streams

    def uniform(self, stream: str, day: int, entity: int, draw: int = 0) -> float:
        return float(self.streams.uniform(stream, day, np.array([entity], np.int64), draw)[0])

    def normal(self, stream: str, day: int, entity: int, draw: int = 0) -> float:
        return float(self.streams.normal(stream, day, np.array([entity], np.int64), draw)[0])

    def poisson(self, stream: str, day: int, entity: int, lam: float, draw: int = 0) -> int:
        return int(self.streams.poisson(stream, day, np.array([entity], np.int64), lam, draw)[0])


class PythonScalarRng:
    """A pure-Python port of sim.rng.Streams for one entity at a time (bit-identical uniforms)."""

    name = "scalar"
    label = "pure-Python port of the same hash"

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self._bases: dict[tuple[str, int, int], int] = {}

    def _base(self, stream: str, day: int, draw: int) -> int:
        key = (stream, day, draw)
        base = self._bases.get(key)
        if base is None:
            base = self._bases[key] = self.streams._base(stream, day, draw)
        return base

    def uniform(self, stream: str, day: int, entity: int, draw: int = 0) -> float:
        z = (entity * _GOLDEN + self._base(stream, day, draw)) & _MASK64
        z = ((z ^ (z >> 30)) * _C1) & _MASK64
        z = ((z ^ (z >> 27)) * _C2) & _MASK64
        z ^= z >> 31
        return (z >> 11) * (1.0 / (1 << 53))

    def normal(self, stream: str, day: int, entity: int, draw: int = 0) -> float:
        u1 = self.uniform(stream, day, entity, 2 * draw)
        u2 = self.uniform(stream, day, entity, 2 * draw + 1)
        return math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(TWO_PI * u2)

    def poisson(self, stream: str, day: int, entity: int, lam: float, draw: int = 0) -> int:
        """Inversion, as Streams.poisson."""
        u = self.uniform(stream, day, entity, draw)
        k = 0
        p = math.exp(-lam)
        cdf = p
        for i in range(1, 64):
            if u < cdf:
                break
            p = p * lam / i
            k += 1
            cdf += p
        return k


RNGS = {"numpy": NumpyScalarRng, "scalar": PythonScalarRng}


def f32(x: float) -> float:
    """Round to float32 (the vectorised code computes ride times on float32 columns)."""
    return float(np.float32(x))


# --------------------------------------------------------------------------- the agents
class CitizenAgent(mesa.Agent):
    """One cardholder: static attributes copied from one row of the population columns."""

    def __init__(self, model: BaselineModel, pop: Cardholders, row: int) -> None:
        super().__init__(model)
        self.card_id = int(pop.card_id[row])
        self.card_type = int(pop.card_type[row])
        self.is_elderly = self.card_type in ELDERLY_CARD_CODES
        self.is_student = self.card_type == STUDENT
        self.region = int(pop.region[row])
        self.home_zone = int(pop.home_zone[row])
        self.work_zone = int(pop.work_zone[row])
        self.issue_day = int(pop.issue_day[row])
        self.end_day = int(pop.end_day[row])
        self.rider_class = int(pop.rider_class[row])
        self.ride_prob = float(pop.ride_prob[row])  # float32 value, exactly
        self.medium = int(pop.medium[row])
        self.qr_channel = int(pop.qr_channel[row])
        self.qr_trip_share = float(pop.qr_trip_share[row])
        self.am_s = int(pop.am_s[row])  # habitual departure times
        self.pm_s = int(pop.pm_s[row])
        self.home_city = int(pop.home_city[row])  # 0 Nantong card, k > 0 visitor from city k

    # One simulated day -------------------------------------------------------------------
    def step(self) -> None:
        m: BaselineModel = self.model  # type: ignore[assignment]
        day = m.day
        if self.rider_class == 0 or not (self.issue_day < day < self.end_day):
            return  # dormant, not yet sold, or no longer used
        city = self.away_city(m)
        if city:
            self.away_taps(m, city)
            return
        if not self.rides_today(m):
            return
        m.riders += 1
        for slot, origin, dest, depart_s in self.plan_trips(m):
            self.trip_taps(m, slot, origin, dest, depart_s)

    def away_city(self, m: BaselineModel) -> int:
        """away_today: a Nantong cardholder may spend the day in another city (1-based code)."""
        if self.home_city != 0 or not m.away_cum:
            return 0
        u = m.rng.uniform("day.away", m.day, self.card_id)
        city = sum(1 for c in m.away_cum[self.region] if c <= u)
        return city + 1 if city < len(m.away_cum[self.region]) else 0

    def away_taps(self, m: BaselineModel, city: int) -> None:
        """away_taps: boardings on the other city's transit, by card or 一码通行 if accepted."""
        rng = m.rng
        day = m.day
        cid = self.card_id
        n_taps = min(1 + rng.poisson("away.taps", day, cid, m.away_extra_taps), 7)
        uses_card = (
            rng.uniform("away.card_ok", 0, cid) < m.city_accepts_card[city - 1]
            and rng.uniform("away.card_choice", day, cid) < m.away_card_share
        )
        uses_qr = (
            not uses_card and m.city_takes_qr[city - 1] and self.qr_channel == MEDIA_YIMATONGXING
        )
        if not (uses_card or uses_qr):
            return  # paid outside the card system: no record
        start = 8 * 3600 + int(rng.uniform("away.start", day, cid) * 3 * 3600)
        line = m.first_gateway_line + city - 1
        stop = m.line_first_stop[line]
        device = m.bus_first[line]
        medium = self.medium if uses_card else MEDIA_YIMATONGXING
        journey = cid * MAX_TRIP_SLOTS + 3
        for k in range(n_taps):
            t = start + k * 5400 + int(rng.uniform("away.gap", day, cid * 8 + k) * 1800)
            m.taps.append(
                (cid, min(t, LAST_TAP_S), line, stop, device, BUS, TAP_SINGLE, 0.0,
                 journey, journey * 8 + k, medium, False)
            )  # fmt: skip

    def rides_today(self, m: BaselineModel) -> bool:
        """riders_today: chance by rider class, day type and school term."""
        day = m.day
        p = self.ride_prob * (m.factor_elderly if self.is_elderly else m.factor_normal)
        if not m.school_day and self.is_student:
            p = p * m.behaviour.school_break_student_factor
        return m.rng.uniform("day.ride", day, self.card_id) < p

    def _normal_s(self, m: BaselineModel, stream: str, draw: int, sd_min: float) -> int:
        return int(m.rng.normal(stream, m.day, self.card_id, draw) * sd_min * 60.0)

    def _errand_zone(self, m: BaselineModel, draw: int) -> int:
        first = m.zone_first[self.region]
        count = m.zone_count[self.region]
        u = m.rng.uniform("day.errand_zone", m.day, self.card_id, draw)
        z = first + min(int(u**1.4 * count), count - 1)
        # An errand in the home zone is walked; move it to the neighbouring zone instead.
        return first + (z - first + 1) % count if z == self.home_zone else z

    def plan_trips(self, m: BaselineModel) -> list[tuple[int, int, int, int]]:
        """plan_trips: (slot, origin zone, destination zone, departure s) of today's trips."""
        b = m.behaviour
        rng = m.rng
        day = m.day
        cid = self.card_id
        home, work = self.home_zone, self.work_zone
        commute = work != home and m.day_type == WORKDAY and (m.school_day or not self.is_student)

        if commute:
            anchor = work
            t_out = self.am_s + self._normal_s(m, "day.jitter", 0, b.daily_time_jitter_min)
            t_out = max(t_out, FIRST_DEPARTURE_S)
            t_back = self.pm_s + self._normal_s(m, "day.jitter", 1, b.daily_time_jitter_min)
        else:
            anchor = self._errand_zone(m, 0)
            t_go = m.errand_mean_s + self._normal_s(
                m, "day.errand_time", 0, b.errand_departure_sd_min
            )
            stay = -math.log1p(-rng.uniform("day.errand_stay", day, cid)) * (
                b.errand_duration_mean_min * 60.0
            )
            # Service runs about 05:30-22:30: nobody plans a ride outside it.
            t_go = min(max(t_go, FIRST_DEPARTURE_S), 20 * 3600)
            t_out = max(t_go, FIRST_DEPARTURE_S)
            t_back = t_go + 1800 + int(stay)
        t_back = min(max(t_back, t_out + 1800), LAST_DEPARTURE_S)

        extra = rng.uniform("day.extra_stop", day, cid) < b.extra_trip_share
        one_way = rng.uniform("day.one_way", day, cid) < b.one_way_share
        drop_out = one_way and rng.uniform("day.one_way_dir", day, cid) < 0.5
        drop_back = one_way and not drop_out

        trips = []
        if not drop_out:
            trips.append((0, home, anchor, t_out))
        if extra:
            extra_zone = self._errand_zone(m, 1)
            trips.append((1, anchor, extra_zone, t_back))
            if not drop_back:
                trips.append((2, extra_zone, home, t_back + 3600))
        elif not drop_back:
            trips.append((2, anchor, home, t_back))
        return trips

    def trip_taps(self, m: BaselineModel, slot: int, o: int, d: int, depart_s: int) -> None:
        """trips_to_taps for one trip: route it, pay it, emit its taps to the model."""
        b = m.behaviour
        rng = m.rng
        day = m.day
        key = self.card_id * MAX_TRIP_SLOTS + slot

        metro = m.metro_line[o][d]
        use_metro = (
            metro >= 0
            and m.line_opened[metro] <= day
            and rng.uniform("trip.metro", day, key) < b.metro_preference
        )
        via = m.via[o][d]
        legs: list[tuple[int, int, int]] = []  # (line, from zone, to zone)
        if use_metro:
            legs.append((metro, o, d))
        else:
            direct = m.direct_bus[o][d]
            force_transfer = via >= 0 and rng.uniform("trip.transfer", day, key) < b.transfer_share
            if direct >= 0 and not force_transfer:
                legs.append((direct, o, d))
            elif via >= 0:
                legs.append((m.leg1[o][d], o, via))
                legs.append((m.leg2[o][d], via, d))
            else:
                return  # no route: the trip is not ridden
        walk = int(-math.log1p(-rng.uniform("trip.walk", day, key)) * m.walk_s) + 60
        board = depart_s + walk

        medium = self.medium
        if self.qr_channel != NO_QR and rng.uniform("trip.pay_qr", day, key) < self.qr_trip_share:
            medium = self.qr_channel

        dev_u = rng.uniform("trip.device", day, key, 0)
        alight = board
        for leg_no, (line, z_from, z_to) in enumerate(legs):
            if leg_no == 1:
                wait = -math.log1p(-rng.uniform("trip.transfer_wait", day, key)) * m.transfer_s
                board = alight + int(wait) + 60  # after the first leg's alighting
            s_board = m.stop_of[line][z_from]
            s_alight = m.stop_of[line][z_to]
            dist = f32(abs(m.stop_pos[s_alight] - m.stop_pos[s_board]))
            ride_s = int(f32(f32(dist / m.line_speed[line]) * 3600.0)) + 60
            alight = board + ride_s
            tap_key = key * 8 + leg_no * 2
            if m.line_mode[line] == METRO:
                missing = rng.uniform("trip.missing_tap_out", day, key) < b.missing_tap_out_share
                gate_in = m.gate_first[s_board] + int(dev_u * m.gate_count[s_board])
                if board <= LAST_TAP_S:
                    m.taps.append(
                        (
                            self.card_id,
                            board,
                            line,
                            s_board,
                            gate_in,
                            METRO,
                            TAP_ENTRY,
                            0.0,
                            key,
                            tap_key,
                            medium,
                            missing,
                        )
                    )
                if not missing and alight <= LAST_TAP_S:
                    dev_u2 = rng.uniform("trip.device", day, key, 1)
                    gate_out = m.gate_first[s_alight] + int(dev_u2 * m.gate_count[s_alight])
                    m.taps.append(
                        (
                            self.card_id,
                            alight,
                            line,
                            s_alight,
                            gate_out,
                            METRO,
                            TAP_EXIT,
                            dist,
                            key,
                            tap_key + 1,
                            medium,
                            False,
                        )
                    )
            else:
                bus = m.bus_first[line] + int(dev_u * m.bus_count[line])
                if board <= LAST_TAP_S:
                    m.taps.append(
                        (
                            self.card_id,
                            board,
                            line,
                            s_board,
                            bus,
                            BUS,
                            TAP_SINGLE,
                            0.0,
                            key,
                            tap_key,
                            medium,
                            False,
                        )
                    )


class BaselineModel(mesa.Model):
    """Holds the CitizenAgents and the network tables they route on (as Python lists)."""

    def __init__(self, world: World, rows: np.ndarray, rng_kind: str) -> None:
        super().__init__(seed=world.scenario.seed)
        sc = world.scenario
        net = world.network
        self.rng = RNGS[rng_kind](world.streams)
        self.calendar = world.calendar
        self.behaviour = sc.behaviour
        self.errand_mean_s = hhmm_to_s(sc.behaviour.errand_departure_mean)
        self.walk_s = sc.network.walk_and_wait_min * 60.0
        self.transfer_s = sc.network.transfer_min * 60.0
        self.zone_first = net.zones.first_of_region.tolist()
        self.zone_count = net.zones.count_of_region.tolist()
        r = net.routes
        self.metro_line = r.metro_line.tolist()
        self.direct_bus = r.direct_bus.tolist()
        self.via = r.via.tolist()
        self.leg1 = r.leg1.tolist()
        self.leg2 = r.leg2.tolist()
        self.stop_of = r.stop_of.tolist()
        self.stop_pos = net.stops.pos_km.tolist()
        self.line_speed = net.lines.speed_kmh.tolist()
        self.line_mode = net.lines.mode.tolist()
        self.line_opened = net.lines.opened_day.tolist()
        self.bus_first = net.devices.first_of_line.tolist()
        self.bus_count = net.devices.count_of_line.tolist()
        self.gate_first = net.devices.first_of_stop.tolist()
        self.gate_count = net.devices.count_of_stop.tolist()
        self.line_first_stop = net.lines.stop_ptr.tolist()
        # Days away in other cities (sim/interop.py): cumulative chance per home region.
        self.away_cum = (
            np.cumsum(world.away_probability, axis=1).tolist()
            if world.away_probability.shape[1]
            else []
        )
        interop = sc.interop
        cities = list(interop.cities.values()) if interop is not None else []
        self.city_accepts_card = [c.accepts_nantong_cards for c in cities]
        self.city_takes_qr = [c.accepts_yimatongxing for c in cities]
        self.away_extra_taps = max(interop.taps_per_away_day - 1, 0.0) if interop else 0.0
        self.away_card_share = interop.away_card_share if interop else 0.0
        self.first_gateway_line = world.n_local_lines
        self.day = 0
        self.day_type = WORKDAY
        self.school_day = True
        self.factor_normal = self.factor_elderly = 1.0
        self.taps: list[tuple] = []
        self.riders = 0
        pop = world.population
        for row in rows.tolist():
            CitizenAgent(self, pop, row)

    def step(self) -> None:
        """One simulated day: every citizen steps once."""
        self.agents.shuffle_do("step")

    def run_day(self, day: int) -> list[tuple]:
        """Simulate ``day``; return its taps (tuples in DayTaps column order)."""
        self.day = day
        self.day_type = int(self.calendar.day_types[day])
        self.school_day = bool(self.calendar.is_school_day[day])
        name = DAY_TYPES[self.day_type]
        self.factor_normal = getattr(self.behaviour.day_type_factors, name)
        self.factor_elderly = getattr(self.behaviour.elderly_day_type_factors, name)
        self.taps = []
        self.riders = 0
        self.step()
        return self.taps


# --------------------------------------------------------------------------- vectorised side
def live_pool(pop: Cardholders, day: int, pool: np.ndarray) -> np.ndarray:
    """Candidates of the day, as sim/day.py's _live_pool: ever-riding, issued and not ended."""
    return pool[(pop.issue_day[pool] < day) & (pop.end_day[pool] > day)]


def concat_taps(parts: list[DayTaps]) -> DayTaps:
    """One DayTaps of several."""
    names = DayTaps.__dataclass_fields__
    return DayTaps(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def vectorised_day(world: World, pop: Cardholders, pool: np.ndarray, day: int) -> DayTaps:
    """The engine's behaviour steps (sim.day.planned_taps) for ``pop`` on ``day``."""
    planned = planned_taps(world, world.streams, pop, day, live_pool(pop, day, pool))
    return concat_taps([planned.local] + ([planned.away] if planned.away is not None else []))


def time_vectorised(world, pop, days, repeat) -> tuple[float, int, list[DayTaps]]:
    """Best-of-``repeat`` seconds for ``days``, total taps, and the last repetition's taps."""
    best = math.inf
    out: list[DayTaps] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        pool = np.flatnonzero(pop.rider_class > 0)
        out = [vectorised_day(world, pop, pool, d) for d in days]
        best = min(best, time.perf_counter() - t0)
    return best, sum(len(t) for t in out), out


def tap_records(pop: Cardholders, taps: DayTaps, day: int) -> set[tuple]:
    """Vectorised taps as comparable tuples (card id instead of population row)."""
    cid = pop.card_id[taps.row].tolist()
    cols = zip(
        cid,
        taps.t_s.tolist(),
        taps.line.tolist(),
        taps.stop.tolist(),
        taps.device.tolist(),
        taps.mode.tolist(),
        taps.kind.tolist(),
        taps.distance_km.tolist(),
        taps.journey.tolist(),
        taps.tap_key.tolist(),
        taps.medium.tolist(),
        taps.incomplete.tolist(),
        strict=True,
    )
    return {(day, *c) for c in cols}


# --------------------------------------------------------------------------- helpers
def sample_rows(n: int, sample: int) -> np.ndarray:
    """Every k-th population row: card ids are laid out by card type, so all types are covered
    in proportion."""
    k = max(1, n // max(1, sample))
    return np.arange(0, n, k, dtype=np.int64)[:sample]


def bytes_per_agent(world: World, rows: np.ndarray) -> float:
    """Python heap bytes per CitizenAgent (tracemalloc over building a model of ``rows``, minus
    the same model with no agents)."""
    import tracemalloc

    def traced(r: np.ndarray) -> int:
        tracemalloc.start()
        model = BaselineModel(world, r, "scalar")
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del model
        return size

    return (traced(rows) - traced(rows[:0])) / max(len(rows), 1)


def check_pool_rule(world: World, day: int) -> None:
    """Our copy of the day's candidate rule must still match the engine's (sim/day.py)."""
    from sim.day import _live_pool
    from sim.state import RunState

    pop = world.population
    ours = live_pool(pop, day, np.flatnonzero(pop.rider_class > 0))
    if not np.array_equal(ours, _live_pool(world, RunState.fresh(world), day)):
        raise AssertionError("the live-pool rule of sim/day.py changed: update live_pool()")


def check_rng_port(streams: Streams) -> None:
    """The pure-Python port must give the same uniforms as sim.rng (bit for bit)."""
    ids = np.array([0, 1, 7, 12345, 1_701_299, 6_805_199, 2**40 + 3], np.int64)
    port = PythonScalarRng(streams)
    for stream, day, draw in (("day.ride", 0, 0), ("trip.walk", 17, 3), ("day.jitter", 365, 1)):
        want = streams.uniform(stream, day, ids, draw).tolist()
        got = [port.uniform(stream, day, int(i), draw) for i in ids]
        if want != got:
            raise AssertionError(f"pure-Python RNG port differs from sim.rng on {stream!r}")


# --------------------------------------------------------------------------- main
def run_baseline(
    scenario_path: str,
    sample: int,
    n_days: int,
    first_day: int,
    rng_kinds: list[str],
    repeat: int,
    full: bool,
    quiet: bool = False,
) -> dict:
    """Build the world, time both sides, check agreement; return the figures."""
    from sim.api import build, load_scenario

    def say(text: str = "") -> None:
        if not quiet:
            print(text, flush=True)

    say(HEADER)
    t0 = time.perf_counter()
    scenario = load_scenario(ROOT / scenario_path, days=first_day + n_days)
    world = build(scenario)
    build_s = time.perf_counter() - t0
    pop = world.population
    n_pop = len(pop)
    days = list(range(first_day, first_day + n_days))
    rows = sample_rows(n_pop, sample)
    sub = pop.subset(rows)
    scale = n_pop / len(rows)
    check_rng_port(world.streams)
    check_pool_rule(world, days[0])

    # The sample's make-up by card type, against the population's.
    mix = {
        CARD_TYPES[c]: (int((sub.card_type == c).sum()), int((pop.card_type == c).sum()))
        for c in np.unique(pop.card_type)
    }
    say(
        f"\nworld: {scenario.name}, {n_pop:,} cardholders (built in {build_s:.1f} s); "
        f"days {days[0]}..{days[-1]} ({n_days} days)"
    )
    say(
        f"sample: {len(rows):,} citizens = every {n_pop // len(rows)}-th row "
        f"(x{scale:,.1f} to full scale)\n  by type (sample share vs population share): "
        + ", ".join(f"{k} {a:,} ({a / len(rows):.1%}/{b / n_pop:.1%})" for k, (a, b) in mix.items())
    )

    # Vectorised, on the same sample.
    vec_s, vec_taps, vec_out = time_vectorised(world, sub, days, repeat)
    vec_records = set().union(*(tap_records(sub, t, d) for t, d in zip(vec_out, days, strict=True)))

    column_bytes = sum(
        getattr(pop, name).nbytes for name in pop.__dataclass_fields__ if name != "extra"
    )
    results: dict = {
        "scenario": scenario.name,
        "column_bytes_per_citizen": column_bytes / n_pop,
        "cardholders": n_pop,
        "sample": len(rows),
        "days": days,
        "scale_to_full": scale,
        "vectorised_sample": {
            "seconds": vec_s,
            "taps": vec_taps,
            "taps_per_s": vec_taps / vec_s,
            "away_taps": sum(int((t.journey % MAX_TRIP_SLOTS == 3).sum()) for t in vec_out),
            "metro_taps": sum(int((t.mode == METRO).sum()) for t in vec_out),
        },
        "per_agent": {},
    }

    for kind in rng_kinds:
        t0 = time.perf_counter()
        model = BaselineModel(world, rows, kind)
        build_agents_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        per_day = [list(model.run_day(d)) for d in days]
        step_s = time.perf_counter() - t0
        taps = sum(len(t) for t in per_day)
        records = {(d, *tap) for d, day_taps in zip(days, per_day, strict=True) for tap in day_taps}
        identical = len(records & vec_records)
        diff = abs(taps - vec_taps) / max(vec_taps, 1)
        results["per_agent"][kind] = {
            "rng": RNGS[kind].label,
            "agents": len(model.agents),
            "build_agents_s": build_agents_s,
            "seconds": step_s,
            "taps": taps,
            "taps_per_day": [len(t) for t in per_day],
            "taps_per_s": taps / step_s if step_s else 0.0,
            "identical_records": identical,
            "relative_difference": diff,
            "ratio_sample": (vec_taps / vec_s) / (taps / step_s) if taps else math.nan,
            "projected_full_seconds": step_s * scale,
        }
        del model
        if diff > AGREEMENT_TOLERANCE:
            raise AssertionError(
                f"per-agent ({kind}) taps {taps:,} vs vectorised {vec_taps:,} on the sample: "
                f"{diff:.2%} apart (> {AGREEMENT_TOLERANCE:.0%})"
            )

    per_agent_b = bytes_per_agent(world, rows[:5000])
    results["bytes_per_agent"] = per_agent_b
    results["projected_full_agent_gb"] = per_agent_b * n_pop / 1e9
    if full:
        full_s, full_taps, _ = time_vectorised(world, pop, days, max(1, min(repeat, 2)))
        results["vectorised_full"] = {
            "seconds": full_s,
            "taps": full_taps,
            "taps_per_s": full_taps / full_s,
        }
        for r in results["per_agent"].values():
            r["ratio_full_projected"] = (full_taps / full_s) / r["taps_per_s"]
    if not quiet:
        print_report(results)
    return results


def print_report(res: dict) -> None:
    """The side-by-side table."""
    n_days = len(res["days"])
    vs = res["vectorised_sample"]
    print(f"\nsame sample ({res['sample']:,} citizens, {n_days} days); time = behaviour only")
    print(f"  {'path':<54}{'taps':>11}{'seconds':>10}{'taps/s':>13}  ours ÷ per-agent")
    print(
        f"  {'vectorised (agents/citizen.py)':<54}{vs['taps']:>11,}{vs['seconds']:>10.3f}"
        f"{vs['taps_per_s']:>13,.0f}{'':>11}"
    )
    for r in res["per_agent"].values():
        label = f"per-agent Mesa, {r['rng']}"
        print(
            f"  {label:<54}{r['taps']:>11,}{r['seconds']:>10.3f}{r['taps_per_s']:>13,.0f}"
            f"{r['ratio_sample']:>10,.1f}x"
        )
    print(
        f"  (of the vectorised taps: {vs['metro_taps']:,} metro, {vs['away_taps']:,} in other "
        "cities; the rest bus)"
    )
    for kind, r in res["per_agent"].items():
        print(
            f"  check ({kind}): per-agent {r['taps']:,} taps vs vectorised {vs['taps']:,} "
            f"({r['relative_difference']:.3%} apart, tolerance {AGREEMENT_TOLERANCE:.0%}); "
            f"{r['identical_records']:,} of {vs['taps']:,} tap records bit-identical"
        )
    vf = res.get("vectorised_full")
    if vf:
        print(
            f"\nfull scale ({res['cardholders']:,} citizens, {n_days} days); per-agent projected "
            f"linearly (x{res['scale_to_full']:,.1f}) from the sample"
        )
        print(
            f"  {'vectorised, measured':<54}{vf['taps']:>11,}{vf['seconds']:>10.2f}"
            f"{vf['taps_per_s']:>13,.0f}"
        )
        for kind, r in res["per_agent"].items():
            label = f"per-agent ({kind}), projected"
            print(
                f"  {label:<54}{r['taps'] * res['scale_to_full']:>11,.0f}"
                f"{r['projected_full_seconds']:>10.1f}{r['taps_per_s']:>13,.0f}"
                f"{r['ratio_full_projected']:>10,.0f}x"
            )
        for kind, r in res["per_agent"].items():
            per_day = r["projected_full_seconds"] / n_days
            print(
                f"  per-agent ({kind}) at full scale: ~{per_day:,.0f} s per simulated day "
                f"(7 days ~{per_day * 7 / 60:,.1f} min, a year ~{per_day * 366 / 3600:,.1f} h), "
                f"plus ~{r['build_agents_s'] * res['scale_to_full']:,.0f} s to create the agents"
            )
        print(
            f"  {res['cardholders'] / 1e6:.1f} M CitizenAgents would hold "
            f"~{res['projected_full_agent_gb']:.2f} GB of Python "
            f"heap ({res['bytes_per_agent']:,.0f} B/agent, tracemalloc; columns: "
            f"~{res['column_bytes_per_citizen']:,.0f} B/citizen for all of Cardholders)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO)
    ap.add_argument("--sample", type=int, default=20_000, help="citizens in the per-agent model")
    ap.add_argument("--days", type=int, default=7, help="simulated days (from --first-day)")
    ap.add_argument("--first-day", type=int, default=0)
    ap.add_argument("--rng", choices=["numpy", "scalar", "both"], default="both")
    ap.add_argument("--repeat", type=int, default=3, help="vectorised timings: best of N")
    ap.add_argument("--no-full", action="store_true", help="skip the full-population timing")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    kinds = ["numpy", "scalar"] if args.rng == "both" else [args.rng]
    res = run_baseline(
        args.scenario, args.sample, args.days, args.first_day, kinds, args.repeat, not args.no_full
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
