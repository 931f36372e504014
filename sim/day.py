"""One simulated day, vectorised: from who rides to priced tap records, top-ups and card sales.

A city's shard (sim/shard.py) calls ``plan_day`` at midnight: citizens plan (agents/citizen.py),
fares price the taps (sim/fares.py), then the riders respond to the prices (sim/behaviour.py) and
what they still ride is priced again. The result holds every tap record of the day as columns,
sorted by uploading device agent and time (so each validator gets a contiguous slice), plus the
day's planned top-ups and card sales (outlet visits run on the SimPy clock). Balances are applied
later by ``settle_balances``, once the outlet queues have decided when each top-up really happened.

Everything here reads the static World and writes only the run's state (sim/state.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.citizen import (
    DayTaps,
    away_taps,
    plan_trips,
    riders_today,
    split_away_today,
    trips_to_taps,
)
from agents.validator import reader_outage_mask, reader_outage_windows, retap_effects
from sim import ids
from sim.balances import apply_events
from sim.behaviour import NO_RESPONSE, PricedTrips, Response
from sim.city_list import no_refusals, refuse_unlisted
from sim.clearing import R_DECLINED
from sim.codes import (
    FALLBACK_CASH,
    FALLBACK_NONE,
    FALLBACK_QR,
    INCOMPLETE_AT_ISSUER,
    INCOMPLETE_AT_PLACE,
    TAP_ENTRY,
    TAP_EXIT,
    is_stored_value,
)
from sim.disruption import disrupt_taps, duplicate_waves, free_rides, refuse_qr_down
from sim.fare_rules import bp_of_fen, pct_to_bp
from sim.fares import TapBatch, price_taps_into
from sim.grouping import gather, run_starts, stable_order
from sim.incidents import NO_INCIDENT, mark
from sim.population import HOME_CITY, NO_QR, Cardholders
from sim.rng import Streams
from sim.social_security import rides_with_card
from sim.state import RunState
from sim.taps import Phase, TapTable
from sim.world import World
from sim.world_settings import hhmm_to_s

DAY_S = 86_400
TOPUP_OUTLET, TOPUP_ONLINE, TOPUP_AT_SALE = 0, 1, 2
TOPUP_CHANNELS = ("outlet", "online", "at_sale")
SERVICE_TOPUP, SERVICE_CARD_SALE = 0, 1


@dataclass
class DayPlan:
    """A day's tap records (columns, sorted by agent then time) and its planned services."""

    day: int
    day_type: int
    taps: TapTable  # tap records (sim/taps.py)
    topups: dict[str, np.ndarray]  # planned top-ups (row, channel, t_s, amount_fen, outlet)
    purse: dict[str, np.ndarray]  # non-transit purse purchases (row, t_s, amount_fen)
    sales: dict[str, np.ndarray]  # card sales (row, outlet or -1 online, t_s)
    stats: dict[str, int] = field(default_factory=dict)
    # Card taps the reader took no fare from, and what the riders did (sim/city_list.py):
    # refused by the city list at planning; declined for balance added at settlement.
    refusals: dict[str, np.ndarray] = field(default_factory=no_refusals)
    # Who spends the day in another city, and where (1-based external city).
    away_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    away_city: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Social-security card entries at culture venues (sim/social_security.py; set by the shard).
    venue_entries: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of tap records."""
        return len(self.taps)


def _live_pool(world: World, state: RunState, day: int) -> np.ndarray:
    """Riding rows whose card is sold and still in use on ``day`` (ascending, as
    ``world.riding_rows``: the rows with a rider class, sim/world.py).

    The riding rows' last days are gathered once a run (the world never changes); a day then
    reads one run-state column at those rows, a third of the population, instead of three
    passes over the whole population."""
    rows = world.riding_rows
    if state.riding_end_day is None:
        state.riding_end_day = world.population.end_day[rows]
    live = np.less(state.cards.sale_day[rows], day)
    live &= state.riding_end_day > day
    return np.compress(live, rows)


@dataclass(frozen=True)
class PlannedDay:
    """Citizens' behaviour for a day, before devices and money: taps at home, taps in other
    cities (None if nobody away paid with a card or code), and who was away."""

    local: DayTaps
    away: DayTaps | None
    away_rows: np.ndarray
    away_city: np.ndarray  # the external city (1-based) each of away_rows spends the day in


def planned_taps(
    world: World, streams: Streams, pop: Cardholders, day: int, pool: np.ndarray
) -> PlannedDay:
    """The behaviour steps of a day for population ``pop`` (the world's, or a subset of it):
    who is away in another city, who rides at home, their trips and taps (agents/citizen.py),
    drawn from the run's ``streams``.

    ``pool`` holds the live, riding rows of ``pop`` today. The engine, the determinism test and
    the per-agent benchmark all call this, so they run exactly the same rules.
    """
    sc = world.scenario
    day_type = int(world.calendar.day_types[day])
    school_day = bool(world.calendar.is_school_day[day])
    away_rows, away_city, local_pool = split_away_today(
        pop, streams, day, pool, world.away_probability
    )
    riders = riders_today(pop, sc.behaviour, streams, day, day_type, school_day, local_pool)
    trips = plan_trips(pop, riders, world.network, sc.behaviour, streams, day, day_type, school_day)
    local = trips_to_taps(
        pop,
        trips,
        world.network,
        sc.behaviour,
        streams,
        day,
        sc.network.walk_and_wait_min * 60.0,
        sc.network.transfer_min * 60.0,
    )
    away = None
    if len(away_rows):
        away = away_taps(
            pop, world.network, streams, day, away_rows, away_city, sc.interop,
            world.n_local_lines, world.gateways, world.city_list.riders_try(0, day),
            sc.behaviour.missing_tap_out_share, rides_with_card(world, away_rows),
        )  # fmt: skip
    return PlannedDay(local=local, away=away, away_rows=away_rows, away_city=away_city)


def plan_day(
    world: World,
    state: RunState,
    day: int,
    agent_of_device: np.ndarray,
    response: Response = NO_RESPONSE,
) -> DayPlan:
    """Plan day ``day``: taps (with reader outages, pricing, the riders' response to prices and
    duplicate deductions), top-ups and card sales. ``agent_of_device`` maps a device to its
    uploading agent."""
    sc = world.scenario
    pop = world.population
    streams = state.streams
    cal = world.calendar
    day_type = int(cal.day_types[day])
    planned = planned_taps(world, streams, pop, day, _live_pool(world, state, day))
    taps = planned.local

    # A reader that is down takes no taps: those riders pay cash (outside the card system).
    # Outages are drawn for every reader of the fleet (pure functions of the device id).
    windows = reader_outage_windows(streams, day, world.device_ids, sc.devices)
    down = reader_outage_mask(taps.device, taps.t_s, windows, offset_s=day * DAY_S)
    reader_outage_taps = int(np.count_nonzero(down))
    taps = taps.take(~down)  # a mask: a few taps out of a day's, compressed without an index
    taps, incident_cash_taps = disrupt_taps(world, streams, day, taps)
    taps = _close_unmatched_entries(taps)

    fares, taps = _price(world, state, taps, day, day_type)

    # The respond step prices variants of the day (moved journeys, another medium) and the same
    # taps as the reference prices them (``as_in``: a world with the base scenario's pricing).
    def price(other: DayTaps, as_in: World) -> dict[str, np.ndarray]:
        return _price(as_in, state, other, day, day_type)[0]

    responded = response.respond(PricedTrips(day, day_type, taps, fares, pop, price))
    if responded is not taps:
        # Riders changed what they ride: the day's fares (transfers, caps) are priced again.
        taps = _close_unmatched_entries(responded)
        fares, taps = _price(world, state, taps, day, day_type)
    taps, fares = free_rides(world, day, taps, fares)
    # Riders met by a reader outage still rode (and paid cash): they count as riders.
    riding = np.concatenate([planned.local.row[down], taps.row])
    stats = {
        "riders": state.scratch.count_distinct(riding),
        "planned_taps": len(planned.local),
        "away": len(planned.away_rows),
        "reader_outage_taps": reader_outage_taps,
        "incident_cash_taps": incident_cash_taps,
    }
    if planned.away is not None:
        taps, fares = _append_away(world, taps, fares, planned.away)
    cols = {
        "row": taps.row,
        "t_s": taps.t_s.astype(np.int64),
        "line": taps.line,
        "stop": taps.stop,
        "device": taps.device,
        "mode": taps.mode,
        "kind": taps.kind,
        "medium": taps.medium,
        "distance_km": taps.distance_km,
        "incomplete": taps.incomplete,
        "tap_key": taps.tap_key,
        **fares,
        "duplicate_of_key": np.full(len(taps), -1, dtype=np.int64),
        "city": world.line_city[taps.line],
        "incident": taps.incident,
    }
    cols["incomplete_by"] = incomplete_processing(world, taps, cols["city"])
    cols["home_card"] = _home_cards(pop, taps)
    cols["tap_index"] = np.arange(len(taps))  # each kept row's tap, to price it again
    cols, refusals = refuse_unlisted(world, streams, day, cols)
    stats["card_not_accepted"] = len(refusals["row"])
    cols, qr_refusals = refuse_qr_down(world, streams, day, cols)
    if len(qr_refusals["row"]):
        refusals = {n: np.concatenate([col, qr_refusals[n]]) for n, col in refusals.items()}
    cols = _price_without_refused(world, state, taps, cols, refusals, day, day_type)

    # Accidental double taps: the lock swallows most; a failed lock charges twice (重复扣款).
    # Keys come from the columns, not ``taps``: the refusals above took rows out of them.
    card_rows = np.flatnonzero(cols["home_card"])
    effects = retap_effects(streams, day, cols["tap_key"][card_rows], sc.devices)
    dup = card_rows[effects.duplicate_rows]
    gap_s = effects.duplicate_gap_s
    stats["retaps_suppressed"] = effects.n_suppressed
    # A faulty reader (duplicate_wave incidents) charges more of its card taps twice.
    dup, gap_s, dup_incident = _with_duplicate_waves(world, streams, day, cols, dup, gap_s)
    # A double tap on a free ride takes nothing: only charged duplicates are deductions.
    stats["duplicate_deductions"] = int((cols["amount_fen"][dup] > 0).sum())
    dups = _duplicates(cols, dup, cols["tap_key"][dup], gap_s, dup_incident)
    records = _sorted_records(day, cols, agent_of_device, dups)

    # The home cards riding today, found once for the top-ups and the purse purchases. Read
    # from the columns in planning order, where a card's rows come nearly in ascending order
    # (the population tables are read in sequence, not at random as in device order). The
    # duplicate charges change nothing here: each repeats a charge of the same card, later.
    home = np.flatnonzero(cols["home_card"])
    holders, holder_of = state.scratch.unique_rows(cols["row"][home])
    topups = _plan_topups(
        world, state, day, cols["amount_fen"][home], cols["t_s"][home], holders, holder_of
    )
    purse = _plan_purse(world, state, day, holders)
    sales = _plan_sales(world, state, day)
    stats["topups_planned"] = len(topups["row"])
    stats["card_sales"] = len(sales["row"])
    return DayPlan(
        day=day,
        day_type=day_type,
        taps=records,
        topups=topups,
        purse=purse,
        sales=sales,
        stats=stats,
        refusals=refusals,
        away_rows=planned.away_rows,
        away_city=planned.away_city,
    )


def _duplicates(
    cols: dict[str, np.ndarray],
    dup: np.ndarray,
    charge_key: np.ndarray,
    gap_s: np.ndarray,
    dup_incident: np.ndarray,
) -> dict[str, np.ndarray]:
    """The columns in which the second charges of rows ``dup`` differ from those rows (every
    other column of a duplicate is its charge's): a later time, its own key (from
    ``charge_key``, the key it repeats), no transfer, and the incident that caused it (-1
    none: the charge's); ``of`` holds ``dup``."""
    incident = cols["incident"]
    return {
        "t_s": cols["t_s"][dup] + np.maximum(gap_s, 1),
        "tap_key": ids.duplicate_tap_key(charge_key),
        "duplicate_of_key": charge_key,
        "is_transfer": np.zeros(len(dup), dtype=bool),
        "incident": np.where(dup_incident >= 0, dup_incident, incident[dup]).astype(incident.dtype),
        "of": dup,
    }


def _sorted_records(
    day: int,
    cols: dict[str, np.ndarray],
    agent_of_device: np.ndarray,
    dups: dict[str, np.ndarray],
) -> TapTable:
    """The day's records: the rows of ``cols`` and their duplicate charges (``_duplicates``),
    sorted by uploading agent, time and tap key.

    A duplicate's unchanged columns are read from its charge's row by the one gather that
    sorts them, never copied onto the end of every column first."""
    of = dups["of"]
    agent = agent_of_device[cols["device"]]
    changed = {}  # the columns that differ, duplicates appended
    if len(of):
        agent = np.concatenate([agent, agent[of]])
        changed = {name: np.concatenate([cols[name], dups[name]]) for name in dups if name != "of"}
    t_s = changed.get("t_s", cols["t_s"])
    order = stable_order(agent, t_s, changed.get("tap_key", cols["tap_key"]))
    # The row of ``cols`` each record reads its unchanged columns from: its own, or for a
    # duplicate (placed after the rows of ``cols``) its charge's.
    source = order
    if len(of):
        source = order.copy()
        dup_at = np.flatnonzero(order >= len(cols["row"]))
        source[dup_at] = of[order[dup_at] - len(cols["row"])]
    records = {
        name: gather(changed[name], order) if name in changed else gather(col, source)
        for name, col in cols.items()
    }
    records["agent"] = agent_of_device[records["device"]]  # a small table, read in order
    return TapTable.priced(day, records)


def _price_without_refused(
    world: World,
    state: RunState,
    taps: DayTaps,
    cols: dict[str, np.ndarray],
    refusals: dict[str, np.ndarray],
    day: int,
    day_type: int,
) -> dict[str, np.ndarray]:
    """The day's columns (without ``tap_index``) with the taps here of every card or code a
    reader refused here (the city list, a QR platform down) priced again without the refused
    taps. Transfers and caps run over a card's taps of the day, and a refused tap never reached
    the card: the next boarding is no transfer from it, and its fare counts toward no cap.
    Taps in other cities carry neither (their visitor fares, ``_append_away``)."""
    index = cols.pop("tap_index")
    here = refusals["line"] < world.n_local_lines
    again = np.flatnonzero(
        np.isin(cols["row"], refusals["row"][here]) & (cols["line"] < world.n_local_lines)
    )
    if not len(again):
        return cols
    kept = taps.take(index[again])
    fares, kept = _price(world, state, kept, day, day_type)
    _, fares = free_rides(world, day, kept, fares)
    cols = dict(cols)
    for name, values in fares.items():
        cols[name] = cols[name].copy()
        cols[name][again] = values
    return cols


def _price(
    world: World, state: RunState, taps: DayTaps, day: int, day_type: int
) -> tuple[dict[str, np.ndarray], DayTaps]:
    """Fares of every tap: home cards get their card type's concessions; QR codes pay list fares
    unless the policy extends concessions to them; visitors' cards pay list fares unless they get
    same-city treatment (their card type is then their age's local one); transfers and caps are
    evaluated within each group. On a day a fare change is in force its fares price every tap,
    and the taps carry its incident code."""
    pop = world.population
    n = len(taps)
    out = {
        "list_fare_fen": np.zeros(n, np.int64),
        "concession_fen": np.zeros(n, np.int64),
        "transfer_fen": np.zeros(n, np.int64),
        "cap_fen": np.zeros(n, np.int64),
        "amount_fen": np.zeros(n, np.int64),
        "is_transfer": np.zeros(n, bool),
        "fare_capped": np.zeros(n, bool),
    }
    policy = world.incidents.fare_policy_of_day(day)
    fare_set = world.fare_policies.get(policy, world.fares)
    if policy != NO_INCIDENT:
        incident = taps.incident.copy()
        mark(incident, np.arange(n), policy)
        taps = DayTaps(**{**{f: getattr(taps, f) for f in taps.__dataclass_fields__},
                          "incident": incident})  # fmt: skip
    # Each payer group is priced on its own (an account's taps are all in one group, so transfers
    # and caps see all of them): cards and codes of home cardholders, visitors' cards and codes.
    is_card = is_stored_value(taps.medium)
    local = pop.home_city[taps.row] == HOME_CITY
    visitors_local = world.scenario.interop is not None and (
        world.scenario.interop.visitor_concessions == "local"
    )
    with_concessions, list_only = fare_set.concession, fare_set.list_only
    groups = (
        (with_concessions, is_card & local),
        (with_concessions if fare_set.qr_concessions else list_only, ~is_card & local),
        (with_concessions if visitors_local else list_only, is_card & ~local),
        (list_only, ~is_card & ~local),
    )
    # The columns pricing reads, for every tap once; each group is priced at its rows.
    batch = pricing_batch(pop, taps)
    # Without caps the month's spend changes no fare: no gather from the population.
    spent = (
        state.cards.month_spent_fen[taps.row]
        if with_concessions.has_caps or list_only.has_caps
        else np.zeros(n, dtype=np.int64)
    )
    for compiled, mask in groups:
        rows = np.flatnonzero(mask)
        if len(rows):
            price_taps_into(compiled, batch, day_type, spent, out, rows)
    return out, taps


def pricing_batch(pop: Cardholders, taps: DayTaps) -> TapBatch:
    """The columns of a day's taps that pricing reads (sim/fares.py), the card type looked up
    once per tap."""
    return TapBatch(
        card=taps.row,
        t_s=taps.t_s,
        line=taps.line,
        mode=taps.mode,
        kind=taps.kind,
        card_type=pop.card_type[taps.row],
        distance_km=taps.distance_km,
        incomplete=taps.incomplete,
    )


def _home_cards(pop: Cardholders, taps: DayTaps) -> np.ndarray:
    """Taps paid with a stored-value card of the home city: the only purses this twin keeps."""
    return is_stored_value(taps.medium) & (pop.home_city[taps.row] == HOME_CITY)


def _close_unmatched_entries(taps: DayTaps) -> DayTaps:
    """A metro entry whose exit tap never happened (cut at the end of service, or the exit gate
    was down) is an incomplete trip too, charged as the policy says."""
    entries = np.flatnonzero(taps.kind == TAP_ENTRY)
    exit_keys = taps.tap_key[taps.kind == TAP_EXIT] - 1
    unmatched = entries[~np.isin(taps.tap_key[entries], exit_keys)]
    if len(unmatched) == 0:
        return taps
    incomplete = taps.incomplete.copy()
    incomplete[unmatched] = True
    return DayTaps(
        **{**{f: getattr(taps, f) for f in taps.__dataclass_fields__}, "incomplete": incomplete}
    )


def incomplete_processing(world: World, taps: DayTaps, city: np.ndarray) -> np.ndarray:
    """Who completes each incomplete trip (DOMAIN.md §2: first where it happened, else the
    issuer, before the card rides again): ``INCOMPLETE_AT_PLACE`` here (at home and for
    visitors here, the reader completes it at once), and away where the city's terminals
    complete visitors' trips and the card taps there again that day; else
    ``INCOMPLETE_AT_ISSUER``. 0 for a complete tap."""
    by = np.where(taps.incomplete, INCOMPLETE_AT_PLACE, 0).astype(np.uint8)
    away = np.flatnonzero(taps.incomplete & (city > 0))
    if not len(away):
        return by
    cities = list(world.scenario.interop.cities.values())
    processes = np.array([c.processes_visitors_incomplete for c in cities])[city[away] - 1]
    # A later tap of the same card in another city (a holder is away in one city a day):
    # each away card's last tap there, over the few cards away (not the whole population).
    elsewhere = np.flatnonzero(city > 0)
    cards, which = np.unique(taps.row[elsewhere], return_inverse=True)
    last_t = np.full(len(cards), -1, np.int64)
    np.maximum.at(last_t, which, taps.t_s[elsewhere].astype(np.int64))
    taps_again = last_t[np.searchsorted(cards, taps.row[away])] > taps.t_s[away]
    by[away] = np.where(processes & taps_again, INCOMPLETE_AT_PLACE, INCOMPLETE_AT_ISSUER)
    return by


def _append_away(world: World, taps: DayTaps, fares: dict, away: DayTaps):
    """Add boardings in other cities, priced at the city's visitor fare (its local discounts for
    interoperable cards, by the holder's age where it gives elderly concessions to visitors,
    apply to cards, not QR). A metro ride there pays on its exit; an entry without exit pays
    the city's charge for an incomplete trip (no concession)."""
    cities = list(world.scenario.interop.cities.values())
    city = world.line_city[away.line].astype(np.int64) - 1
    list_fare = np.array([c.visitor_fare_fen for c in cities], np.int64)[city]
    incomplete_fare = np.array([c.incomplete_fare_fen for c in cities], np.int64)[city]
    list_fare = np.where(away.kind == TAP_ENTRY, 0, list_fare)
    list_fare = np.where(away.incomplete, incomplete_fare, list_fare)
    # Percentages as integer basis points and the concession rounded down, as the fare engine
    # prices home taps (sim/fares.py): a float 29 % of 100 fen would truncate to 28 fen.
    bp = np.array([pct_to_bp(c.visitor_discount_pct) for c in cities], np.int64)[city]
    age = world.population.age[away.row]
    for j, c in enumerate(cities):  # the place's concessions by age (art. 31): bands in age order
        for band in sorted(c.elderly_discounts, key=lambda b: b.age_min):
            bp = np.where((city == j) & (age >= band.age_min), pct_to_bp(band.discount_pct), bp)
    bp = np.where(away.incomplete, 0, bp)
    is_card = is_stored_value(away.medium)
    concession = np.where(is_card, bp_of_fen(list_fare, bp), 0)
    n = len(away)
    away_fares = {
        "list_fare_fen": list_fare,
        "concession_fen": concession,
        "transfer_fen": np.zeros(n, np.int64),
        "cap_fen": np.zeros(n, np.int64),
        "amount_fen": list_fare - concession,
        "is_transfer": np.zeros(n, bool),
        "fare_capped": np.zeros(n, bool),
    }
    merged = DayTaps(
        **{
            f: np.concatenate([getattr(taps, f), getattr(away, f)])
            for f in taps.__dataclass_fields__
        }
    )
    return merged, {k: np.concatenate([fares[k], away_fares[k]]) for k in fares}


def _normal_time(streams: Streams, name: str, day: int, ids: np.ndarray, mean: str, sd_min: float):
    return hhmm_to_s(mean) + (streams.normal(name, day, ids) * sd_min * 60).astype(np.int64)


def _with_duplicate_waves(world, streams, day, cols, dup, gap_s):
    """The day's charged-twice taps with those of ``duplicate_wave`` incidents added (a tap is
    charged twice at most once): rows, gaps, and the incident code of each (-1 none)."""
    incident = np.full(len(dup), -1, dtype=np.int64)
    if not world.incidents.of_kind("duplicate_wave", day):
        return dup, gap_s, incident
    charged = np.flatnonzero(cols["home_card"] & (cols["amount_fen"] > 0))
    rows, gaps, codes = duplicate_waves(
        world, streams, day, cols["device"][charged], cols["t_s"][charged], cols["tap_key"][charged]
    )
    wave = charged[rows]
    new = ~np.isin(wave, dup)
    return (
        np.concatenate([dup, wave[new]]),
        np.concatenate([gap_s, gaps[new]]),
        np.concatenate([incident, codes[new]]),
    )


def _plan_topups(
    world: World,
    state: RunState,
    day: int,
    amount_fen: np.ndarray,
    t_s: np.ndarray,
    holders: np.ndarray,
    holder_of: np.ndarray,
) -> dict[str, np.ndarray]:
    """Holders riding today whose balance is under their threshold reload: at their outlet if
    they prefer it and it opens today, else online shortly before their first ride.

    ``amount_fen`` and ``t_s`` are the fare and time of each home-card tap of the day (any
    order), ``holders`` their distinct rows (ascending) and ``holder_of`` each tap's index in
    ``holders``."""
    sc = world.scenario
    pop = world.population
    balance = state.cards.balance_fen
    streams = state.streams
    charged = amount_fen > 0
    which = holder_of[charged]
    # Taps are not in time order: take each card's earliest charged tap.
    first_t = np.full(len(holders), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_t, which, t_s[charged])
    paid = np.zeros(len(holders), dtype=bool)  # holders with a charged tap today
    paid[which] = True
    rows, first_t = holders[paid], first_t[paid]
    low = balance[rows] < pop.topup_threshold_fen[rows]
    rows, first_t = rows[low], first_t[low]
    ids = pop.card_id[rows]
    amounts = np.array(sc.topups.amounts_fen, dtype=np.int64)
    pick = streams.categorical("topup.amount", day, ids, np.array(sc.topups.amount_weights))
    room = sc.topups.max_balance_fen - balance[rows]
    amount = np.minimum(amounts[pick], room)

    outlet = world.home_outlet[rows].astype(np.int64)
    open_today = np.zeros(len(world.outlets) + 1, dtype=bool)
    for k, info in enumerate(world.outlets):
        open_today[k] = world.calendar.is_open(info.open_days, day)
    goes_to_outlet = pop.outlet_topup[rows] & (outlet >= 0) & open_today[outlet]
    t_outlet = arrivals_in_open_hours(
        world,
        day,
        np.where(goes_to_outlet, outlet, -1),
        streams.uniform("topup.outlet_time", day, ids),
    )
    lead = (streams.uniform("topup.online_lead", day, ids) * 3600).astype(np.int64) + 60
    t_online = np.maximum(first_t - lead, 0)
    keep = amount > 0
    return {
        "row": rows[keep],
        "channel": np.where(goes_to_outlet, TOPUP_OUTLET, TOPUP_ONLINE)[keep].astype(np.uint8),
        "t_s": np.where(goes_to_outlet, t_outlet, t_online)[keep],
        "amount_fen": amount[keep],
        "outlet": np.where(goes_to_outlet, outlet, -1)[keep],
    }


def _plan_purse(
    world: World, state: RunState, day: int, holders: np.ndarray
) -> dict[str, np.ndarray]:
    """Some ``holders`` (the home cards used today, ascending) also pay a small non-transit
    purchase with their card."""
    beh = world.scenario.behaviour
    streams = state.streams
    rows = holders
    ids = world.population.card_id[rows]
    buys = streams.uniform("purse.buy", day, ids) < beh.purse_purchase_share
    rows, ids = rows[buys], ids[buys]
    amount = -np.log1p(-streams.uniform("purse.amount", day, ids)) * beh.purse_purchase_mean_fen
    t = 10 * 3600 + (streams.uniform("purse.time", day, ids) * 10 * 3600).astype(np.int64)
    return {"row": rows, "t_s": t, "amount_fen": np.maximum(amount.astype(np.int64), 100)}


def arrivals_in_open_hours(
    world: World, day: int, outlet: np.ndarray, u: np.ndarray, margin_s: int = 600
) -> np.ndarray:
    """Arrival times (s after midnight) spread over each outlet's open windows of ``day``.

    People come when the outlet is open (its hours are published): ``u`` in [0, 1) picks a point
    in the day's total opening time, ending ``margin_s`` before each window closes so there is
    time to be served. Outlets closed that day get -1.
    """
    t = np.full(len(outlet), -1, dtype=np.int64)
    weekend = world.calendar.weekday(day) >= 5
    for k in np.unique(outlet[outlet >= 0]).tolist():
        info = world.outlets[k]
        if not world.calendar.is_open(info.open_days, day):
            continue
        windows = info.weekend_windows if weekend else info.weekday_windows
        spans = [(a, max(a + 60, b - margin_s)) for a, b in windows]
        lengths = np.array([b - a for a, b in spans], dtype=np.float64)
        ends = np.cumsum(lengths)
        mine = np.flatnonzero(outlet == k)
        x = u[mine] * ends[-1]
        w = np.minimum(np.searchsorted(ends, x, side="right"), len(spans) - 1)
        starts = np.array([a for a, _ in spans])
        before = np.concatenate([[0.0], ends[:-1]])
        t[mine] = (starts[w] + (x - before[w])).astype(np.int64)
    return t


def _plan_sales(world: World, state: RunState, day: int) -> dict[str, np.ndarray]:
    """Cards issued today are sold: physical cards at the buyer's outlet, NFC cards online."""
    sc = world.scenario
    pop = world.population
    streams = state.streams
    first, last = np.searchsorted(world.sale_days, [day, day + 1])
    today = world.sale_rows[first:last]
    # Buyers an outlet could not serve yesterday come back today (see sim/shard.py).
    carried = state.sales_carry.pop(day, [])
    if carried:
        today = np.concatenate([today, *carried])
    ids = pop.card_id[today]
    outlet = np.where(pop.medium[today] == 0, world.home_outlet[today], -1).astype(np.int64)
    # NFC virtual cards are bought online, at any time of day; physical cards at the outlet,
    # during its opening hours.
    online_t = _normal_time(
        streams, "sale.time", day, ids, sc.card_sales.arrival_mean, sc.card_sales.arrival_sd_min
    )
    at_outlet = arrivals_in_open_hours(
        world, day, outlet, streams.uniform("sale.outlet_time", day, ids)
    )
    t = np.where(outlet >= 0, at_outlet, np.clip(online_t, 6 * 3600, 22 * 3600))
    # A buyer carried over to a day their outlet is closed comes back the day after.
    closed = (outlet >= 0) & (t < 0)
    if closed.any():
        defer_sales(state, today[closed], day + 1)
    keep = ~closed
    return {"row": today[keep], "outlet": outlet[keep], "t_s": t[keep]}


def defer_sales(state: RunState, rows: np.ndarray, day: int) -> None:
    """The buyers of cards ``rows`` come back on ``day``: the cards are sold then, not before."""
    state.cards.sale_day[rows] = day
    state.sales_carry.setdefault(day, []).append(rows)


def _declined_refusals(world: World, streams: Streams, plan: DayPlan) -> dict[str, np.ndarray]:
    """The day's taps declined for balance as refusals: the card is never overdrawn, and the
    rider pays another way (their QR code if they have one, else cash) with
    ``behaviour.declined_pays_other_way_share``, or does not ride. The other payment is recorded
    here only (the day's taps are already on the devices)."""
    taps = plan.taps
    d = np.flatnonzero(taps.declined)
    rows = taps.row[d]
    pop = world.population
    pays = streams.uniform("declined.fallback", plan.day, taps.tap_key[d]) < (
        world.scenario.behaviour.declined_pays_other_way_share
    )
    has_qr = pop.qr_channel[rows] != NO_QR
    return {
        "row": rows,
        "t_s": taps.t_s[d],
        "line": taps.line[d].astype(np.int64),
        "device": taps.device[d].astype(np.int64),
        "medium": taps.medium[d].astype(np.int64),
        "card_city": pop.home_city[rows].astype(np.int64),
        "amount_fen": taps.amount_fen[d],
        "reason": np.full(len(d), R_DECLINED, dtype=np.int64),
        "fallback": np.where(pays, np.where(has_qr, FALLBACK_QR, FALLBACK_CASH), FALLBACK_NONE),
        "tx_id": taps.tx_id[d],
    }


def settle_balances(
    world: World, state: RunState, plan: DayPlan, credits: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Apply the day's card debits and ``credits`` (row, t_s, amount_fen) to the balances.

    Fills the records' ``declined``, ``balance_before_fen``, ``balance_after_fen`` and
    ``card_counter`` columns (the taps become SETTLED), updates the run's balances, counters
    and month spend, and returns per-credit balances (for the top-up table).
    """
    cards = state.cards
    taps = plan.taps
    taps.require(Phase.LOADED, "settling balances")
    n = plan.n
    stored = taps.home_card & (taps.device_refused == 0)
    debit_idx = np.flatnonzero(stored)
    purse = plan.purse
    ev_row = np.concatenate([taps.row[debit_idx], purse["row"], credits["row"]])
    ev_t = np.concatenate([taps.t_s[debit_idx], purse["t_s"], credits["t_s"]])
    ev_amt = np.concatenate(
        [-taps.amount_fen[debit_idx], -purse["amount_fen"], credits["amount_fen"]]
    )
    res = apply_events(ev_row, ev_t, ev_amt, cards.balance_fen[ev_row])
    n_debit = len(debit_idx)
    n_purse = len(purse["row"])
    purse["accepted"] = res.accepted[n_debit : n_debit + n_purse]

    declined = np.zeros(n, dtype=bool)
    declined[debit_idx] = ~res.accepted[:n_debit]
    before = np.full(n, -1, dtype=np.int64)
    after = np.full(n, -1, dtype=np.int64)
    before[debit_idx] = res.balance_before_fen[:n_debit]
    after[debit_idx] = res.balance_after_fen[:n_debit]
    taps.declined = declined
    taps.balance_before_fen = before
    taps.balance_after_fen = after

    # JT/T 978 card counter: +1 per accepted purchase, in time order per card. The balances
    # applied the events by (card, time), ties in input order: its accepted tap debits are the
    # charged taps in exactly that order, with no second sort.
    applied = res.order[res.order < n_debit]
    order = debit_idx[applied[res.accepted[applied]]]
    r = gather(taps.row, order)
    first = run_starts(r)  # each card's first charged tap (r is grouped by card)
    used, used_count = r[first], np.diff(first, append=len(r))
    counter_before = cards.card_counter[used].astype(np.int64)
    # The k-th purchase (k = 1, 2, ...) of a card whose run starts at ``first`` is at position
    # first + k - 1: its counter is counter_before + k = (counter_before - first) + position + 1,
    # one repeat. Wrapping at 65536 is the low 16 bits (two's complement: as ``% 65536``).
    value = np.repeat(counter_before - first, used_count)
    value += np.arange(1, len(r) + 1, dtype=np.int64)
    value &= 0xFFFF
    counter = np.full(n, -1, dtype=np.int64)
    counter[order] = value
    taps.card_counter = counter
    taps.advance(Phase.SETTLED)
    cards.card_counter[used] = ((counter_before + used_count) % 65536).astype(np.int32)

    cards.balance_fen[res.cards] = res.end_balance_fen
    # Each card's charged fares, summed along its run (a running total: reduceat pays per run).
    paid = np.cumsum(gather(taps.amount_fen, order))
    spent = paid[first + used_count - 1]
    spent[1:] -= paid[first[1:] - 1]
    cards.month_spent_fen[used] += spent
    plan.refusals = {
        name: np.concatenate([plan.refusals[name], col])
        for name, col in _declined_refusals(world, state.streams, plan).items()
    }
    return {
        "balance_before_fen": res.balance_before_fen[n_debit + n_purse :],
        "balance_after_fen": res.balance_after_fen[n_debit + n_purse :],
    }
