"""Build the World from a Scenario: calendar, regions, network, population, outlets, fares.

The world is everything that exists before the first simulated minute. Building it is a pure
function of the scenario and its world seed: two builds give identical arrays. Once built it never
changes (its population columns are read-only); a run's changing state is ``sim.state.RunState``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agents.outlet import OutletInfo, load_outlets_csv
from sim.calendar import Calendar
from sim.city_list import CityList, TerminalLag
from sim.clearing import Participant, Participants, initial_deposits_fen
from sim.fares import FareSet, compile_fare_set
from sim.incidents import LINE_KINDS, Timeline
from sim.interop import (
    VISITOR_ID_BASE,
    away_probability,
    city_acquirer,
    city_codes,
    city_issuer,
    city_metro_acquirer,
    extend_network,
    gateways,
    visitors,
)
from sim.network import TransitNetwork, build_network
from sim.population import HOME_CITY, Cardholders, build_population, card_type_for_age
from sim.rng import Streams
from sim.scenario import Scenario, changed_fares


@dataclass(frozen=True)
class World:
    """The static world of a scenario: who, where, what network, which rules (immutable)."""

    scenario: Scenario
    streams: Streams  # the world's streams (population, network, outlets); runs have their own
    calendar: Calendar
    region_ids: list[str]
    network: TransitNetwork
    population: Cardholders
    outlets: list[OutletInfo]
    outlet_region: np.ndarray  # uint8, region index of each outlet
    outlet_zone: np.ndarray  # int32, zone where each outlet sits
    home_outlet: np.ndarray  # int16 per cardholder: usual outlet in the home region (-1 none)
    fares: FareSet  # the fares in force unless a fare_change incident says otherwise
    participants: Participants
    n_local_lines: int  # lines [0, n) are the home city's; the rest are external cities' gateways
    line_city: np.ndarray  # uint8 per line: 0 the home city, k = external city k
    gateways: list  # the external cities' gateway lines, from n_local_lines on (sim.interop)
    city_list: CityList  # the interoperable city list over the period, per terminal
    away_probability: np.ndarray  # [region, city]: chance a riding cardholder is there today
    riding_rows: np.ndarray  # rows that ever ride: dormant cards never enter daily work
    sale_rows: np.ndarray  # rows of cards sold in the period, by planned sale day
    sale_days: np.ndarray  # planned sale day of each of ``sale_rows`` (ascending)
    device_ids: np.ndarray  # ids of every validator device (0..n-1)
    incidents: Timeline  # the scenario's incidents in simulation seconds
    # Fares of each fare_change incident (by incident code).
    fare_policies: dict[int, FareSet]

    @property
    def days(self) -> int:
        """Number of simulated days."""
        return self.calendar.days

    @property
    def start_date(self) -> dt.date:
        """First simulated date."""
        return self.scenario.period.start


def build_world(scenario: Scenario, outlets_file: Path, *, people: bool = True) -> World:
    """Construct the world for ``scenario`` (``outlets_file`` already resolved to a real path).

    ``people=False`` builds it without cardholders or routes: the world a distributed run's
    driver needs to name lines, devices, regions and participants while the workers hold the
    people (sim/distributed.py). Everything else is the same."""
    streams = Streams(scenario.seed if scenario.world_seed is None else scenario.world_seed)
    period = scenario.period
    calendar = Calendar(scenario.load_calendar(), period.start, period.days)
    region_ids = list(scenario.regions)
    local_network = build_network(
        scenario.regions, scenario.network, streams, period.start.toordinal(), routes=people
    )
    scale = scenario.scale if people else 0.0  # no one: every count rounds to 0
    population = build_population(
        scenario.population,
        scenario.behaviour,
        scenario.regions,
        local_network,
        streams,
        period.start,
        period.days,
        scale,
        0 if scenario.region_part is None else scenario.region_part.first_card_id,
    )
    threshold = scenario.topups.threshold_fen * np.exp(
        0.4 * streams.normal("pop.topup_threshold", 0, population.card_id)
    )
    population.topup_threshold_fen[:] = threshold.astype(np.int32)
    _steady_state_balances(scenario, population, streams)
    network = extend_network(local_network, scenario.interop)
    guests = visitors(scenario.interop, region_ids, network, streams, VISITOR_ID_BASE, scale)
    if guests is not None:
        if scenario.interop.visitor_concessions == "local":
            # Same-city treatment: a visitor's card counts as the local card of its holder's age.
            guests.card_type = card_type_for_age(guests.age, scenario.population.concession_ages)
        population = population.concat(guests)

    outlets = load_outlets_csv(outlets_file)
    if scenario.region_part is not None:  # the city's file: the other regions' are theirs
        others = set(scenario.region_part.other_regions_zh)
        outlets = [o for o in outlets if o.region_zh not in others]
    unknown = sorted(set(scenario.outlets.counters_by_outlet) - {o.outlet_id for o in outlets})
    if unknown:
        raise ValueError(
            f"{scenario.name}: outlets.counters_by_outlet names outlet ids {unknown} that "
            f"{outlets_file} does not have; expected ids from that file"
        )
    zh_to_region = {r.name_zh: i for i, r in enumerate(scenario.regions.values())}
    missing = sorted({o.region_zh for o in outlets} - set(zh_to_region))
    if missing:
        raise ValueError(
            f"{outlets_file}: outlets in regions {missing} that the scenario does not define "
            f"(regions' name_zh: {', '.join(zh_to_region)})"
        )
    outlet_region = np.array([zh_to_region[o.region_zh] for o in outlets], dtype=np.uint8)
    outlet_zone = _place_outlets(network, outlet_region, streams)
    home_outlet = _home_outlets(
        (network, calendar, outlets, scenario.outlets, streams),
        population,
        outlet_region,
        outlet_zone,
    )
    _shift_sales_to_open_days(population, home_outlet, outlets, calendar)

    # The only parts made from scenario.fares (with fare_policies below): with_fares makes them
    # anew for another fares section, so a new one must be made there too.
    lines = priced_lines(network, region_ids, len(local_network.lines.ids))
    fares = compile_fare_set(scenario.fares, lines)
    participants = build_participants(scenario, network)
    initial_deposits_fen(scenario.clearing, participants)  # its overrides name real issuers
    timeline = Timeline.of(scenario.incidents, period.start)
    check_targets(timeline, network, outlets, scenario.name)
    fare_policies = _fare_policies(scenario.fares, timeline, lines)
    sale_rows = np.flatnonzero((population.issue_day >= 0) & (population.issue_day < period.days))
    sale_rows = sale_rows[np.argsort(population.issue_day[sale_rows], kind="stable")]
    world = World(
        scenario=scenario,
        streams=streams,
        calendar=calendar,
        region_ids=region_ids,
        network=network,
        population=population,
        outlets=outlets,
        outlet_region=outlet_region,
        outlet_zone=outlet_zone,
        home_outlet=home_outlet,
        fares=fares,
        participants=participants,
        n_local_lines=len(local_network.lines.ids),
        line_city=np.concatenate(
            [
                np.zeros(len(local_network.lines.ids), np.uint8),
                np.array([g.city for g in gateways(scenario.interop)], dtype=np.uint8),
            ]
        ),
        gateways=gateways(scenario.interop),
        city_list=_city_list(scenario, network),
        away_probability=(
            away_probability(scenario.interop, region_ids)
            if scenario.interop is not None and scenario.interop.cities
            else np.zeros((len(region_ids), 0))
        ),
        riding_rows=np.flatnonzero(population.rider_class > 0),
        sale_rows=sale_rows,
        sale_days=population.issue_day[sale_rows],
        device_ids=np.arange(len(network.devices.line)),
        incidents=timeline,
        fare_policies=fare_policies,
    )
    _freeze(world)
    return world


def priced_lines(network: TransitNetwork, region_ids: list[str], n_local: int) -> list:
    """The home city's lines as its fare rules see them: (line id, mode, region). External
    cities' pseudo lines are priced by their visitor fares, not by the home city's rules."""
    return [
        (line_id, int(network.lines.mode[i]), region_ids[int(network.lines.region[i])])
        for i, line_id in enumerate(network.lines.ids[:n_local])
    ]


def _fare_policies(rules, timeline: Timeline, lines: list) -> dict[int, FareSet]:
    """The fares of each fare_change incident (by incident code)."""
    return {
        k: compile_fare_set(changed_fares(rules, timeline.incidents[k]), lines)
        for k in timeline.of_kind("fare_change")
    }


#: What a world's compiled fares derive from, and nothing else in it: the ``fares:`` section,
#: and the riders' reference pricing (read by the behavioural response when a run starts).
FARES_ONLY = frozenset({"fares", "reference"})


def with_fares(world: World, scenario: Scenario) -> World:
    """``world`` under ``scenario``, which may differ from the world's scenario in its fares
    only (``FARES_ONLY``): the population, network and outlets are kept, the fares compiled
    anew, as ``build_world(scenario)`` would (a sweep over fares builds one world, not one per
    point). Raises ValueError if the scenarios differ in anything else."""
    if scenario.model_dump(exclude=FARES_ONLY) != world.scenario.model_dump(exclude=FARES_ONLY):
        raise ValueError(f"{scenario.name}: differs from the world's scenario beyond its fares")
    lines = priced_lines(world.network, world.region_ids, world.n_local_lines)
    rebased = replace(
        world,
        scenario=scenario,
        fares=compile_fare_set(scenario.fares, lines),
        fare_policies=_fare_policies(scenario.fares, world.incidents, lines),
    )
    _freeze(rebased)
    return rebased


def with_incidents(world: World, scenario: Scenario) -> World:
    """``world`` under ``scenario``, which may differ from the world's scenario in its
    ``incidents`` only: the timeline (and the fare policies of its fare changes) made anew and
    checked against the world's devices, lines and outlets, everything else kept. A drill runs
    one day under several incident timelines (the trainee's actions are incidents too) without
    building its city again."""
    if scenario.model_dump(exclude={"incidents"}) != world.scenario.model_dump(
        exclude={"incidents"}
    ):
        raise ValueError(f"{scenario.name}: differs from the world's scenario beyond incidents")
    timeline = Timeline.of(scenario.incidents, scenario.period.start)
    check_targets(timeline, world.network, world.outlets, scenario.name)
    lines = priced_lines(world.network, world.region_ids, world.n_local_lines)
    rebased = replace(
        world,
        scenario=scenario,
        incidents=timeline,
        fare_policies=_fare_policies(scenario.fares, timeline, lines),
    )
    _freeze(rebased)
    return rebased


_LEAVES = (str, int, float, bool, type(None), dt.date)


def _freeze(value, seen: set[int] | None = None) -> None:
    """Make every numpy array reachable from the world's dataclasses read-only: the world never
    changes once built (a run that tried to write one would fail at once)."""
    if isinstance(value, _LEAVES):  # most of what is reachable: names, ids, figures
        return
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _freeze(getattr(value, f.name), seen)
    elif isinstance(value, dict):
        for item in value.values():
            _freeze(item, seen)
    elif isinstance(value, list | tuple):
        for item in value:
            _freeze(item, seen)


def check_targets(timeline: Timeline, network: TransitNetwork, outlets, where: str) -> None:
    """Incident targets that only the built world knows: generated bus lines, devices and
    outlets (clearing nodes are checked with the scenario)."""
    n_devices = len(network.devices.line)
    outlet_ids = {o.outlet_id for o in outlets}
    for k, inc in enumerate(timeline.incidents):
        target, field = inc.target or "", f"{where}: incidents.{k}.target"
        if inc.kind in LINE_KINDS and target not in network.lines.ids:
            raise ValueError(f"{field}: unknown line {target!r}; expected a metro line id or a "
                             "generated bus line id such as urban-B001")  # fmt: skip
        if inc.kind == "comm_outage" and not (
            (target.isdigit() and int(target) < n_devices) or target in network.lines.ids
        ):
            raise ValueError(
                f"{field}: expected a device id below {n_devices} or a line id; got {target!r}"
            )
        if inc.kind in ("validator_outage", "duplicate_wave") and int(target) >= n_devices:
            raise ValueError(f"{field}: expected a device id below {n_devices}; got {target}")
        outlet_kinds = ("outlet_closure", "renewal_wave", "outlet_extension")
        if inc.kind in outlet_kinds and int(target) not in outlet_ids:
            raise ValueError(
                f"{field}: unknown outlet {target}; expected one of {sorted(outlet_ids)}"
            )


def _steady_state_balances(scenario: Scenario, population: Cardholders, streams: Streams) -> None:
    """Start riders' balances where a top-up habit keeps them: between the threshold and the
    threshold plus a typical top-up. (Starting everyone low would flood the outlets on day 1.)
    Dormant cards keep the small leftover balance drawn at population build."""
    top = scenario.topups
    mean_amount = np.average(top.amounts_fen, weights=top.amount_weights)
    riders = (population.rider_class > 0) & (population.home_city == HOME_CITY)
    u = streams.uniform("pop.balance_steady", 0, population.card_id[riders])
    level = population.topup_threshold_fen[riders] + u * mean_amount
    population.opening_balance_fen[riders] = np.minimum(level, top.max_balance_fen).astype(np.int64)


def _place_outlets(network: TransitNetwork, outlet_region: np.ndarray, streams: Streams):
    """Spread each region's outlets over its zones (the CSV gives addresses, not coordinates), so
    that every outlet serves its own catchment of nearest residents."""
    zones = network.zones
    placed = np.zeros(len(outlet_region), dtype=np.int32)
    for r in np.unique(outlet_region).tolist():
        mine = np.flatnonzero(outlet_region == r)
        first = int(zones.first_of_region[r])
        count = int(zones.count_of_region[r])
        spread = ((np.arange(len(mine)) + 0.5) * count / len(mine)).astype(np.int64)
        placed[mine] = first + np.minimum(spread, count - 1)
    return placed


def _home_outlets(world_parts, population, outlet_region, outlet_zone) -> np.ndarray:
    """Each cardholder's usual outlet in the home region: chosen with probability proportional
    to the outlet's capacity (counters x weekly opening hours) over (1 + distance in km)^2, so
    that people favour near outlets but big, long-open ones draw more of them."""
    network, calendar, outlets, settings, streams = world_parts
    zones = network.zones
    days = min(calendar.days, 28)
    capacity = np.array(
        [
            settings.counters_by_outlet.get(o.outlet_id, settings.default_counters)
            * sum(b - a for a, b in o.weekday_windows)
            * calendar.open_days(o.open_days)[:days].sum()
            for o in outlets
        ],
        dtype=np.float64,
    )
    dist = np.abs(zones.x_km[:, None] - zones.x_km[outlet_zone][None, :]) + np.abs(
        zones.y_km[:, None] - zones.y_km[outlet_zone][None, :]
    )
    score = capacity[None, :] / (1.0 + dist) ** 2
    score = np.where(zones.region[:, None] == outlet_region[None, :], score, 0.0)
    total = score.sum(axis=1, keepdims=True)
    has = total[:, 0] > 0
    cdf = np.cumsum(np.where(has[:, None], score / np.where(has[:, None], total, 1.0), 0.0), axis=1)
    cdf[:, -1] = np.where(has, 1.0, cdf[:, -1])
    # Per-zone categorical draw in one searchsorted: row z's cdf is shifted to [z, z + 1].
    zone = population.home_zone.astype(np.int64)
    u = streams.uniform("pop.home_outlet", 0, population.card_id)
    n_out = cdf.shape[1]
    shifted = (cdf + np.arange(len(cdf))[:, None]).ravel()
    pick = np.searchsorted(shifted, zone + u, side="right") - zone * n_out
    pick = np.minimum(pick, n_out - 1)
    return np.where(has[zone], pick, -1).astype(np.int16)


def _shift_sales_to_open_days(population, home_outlet, outlets, calendar: Calendar) -> None:
    """A card issued on a day its outlet is closed is sold on the outlet's next open day."""
    days = calendar.days
    in_period = np.flatnonzero((population.issue_day >= 0) & (population.issue_day < days))
    physical = population.medium[in_period] == 0
    rows = in_period[physical & (home_outlet[in_period] >= 0)]
    for k, outlet in enumerate(outlets):
        open_days = calendar.open_days(outlet.open_days)
        # next_open[d] = first open day >= d (days if none left in the period).
        idx = np.where(open_days, np.arange(days), days)
        next_open = np.minimum.accumulate(idx[::-1])[::-1]
        mine = rows[home_outlet[rows] == k]
        population.issue_day[mine] = next_open[population.issue_day[mine]]


def _city_list(scenario: Scenario, network: TransitNetwork) -> CityList:
    """The city list as this city's riders meet it: each line's acquirer's terminal lags."""
    interop = scenario.interop
    if interop is None:
        return CityList((), scenario.period.start, city_codes(scenario), np.zeros((0, 2)))
    lags = interop.terminal_update_days
    default = TerminalLag()
    line_lags = np.array(
        [
            (lags.get(op, default).listed, lags.get(op, default).delisted)
            for op in network.lines.operator
        ],
        dtype=np.int64,
    ).reshape(-1, 2)
    return CityList(interop.list_changes, scenario.period.start, city_codes(scenario), line_lags)


def build_worlds(
    scenarios: list[Scenario], outlets_files: list[Path], *, people: bool = True
) -> list[World]:
    """The worlds of a multi-city run: one per city, sharing one participants registry (the
    union of the cities' clearing hierarchies, which must agree where they overlap);
    ``people`` as in ``build_world``."""
    worlds = [
        build_world(sc, f, people=people) for sc, f in zip(scenarios, outlets_files, strict=True)
    ]
    _check_cities_agree(scenarios)
    merged: dict[str, Participant] = {}
    for world in worlds:
        for p in world.participants.rows:
            seen = merged.setdefault(p.id, p)
            if (seen.role, seen.parent) != (p.role, p.parent):
                raise ValueError(
                    f"{world.scenario.name}: clearing participant {p.id} is a {p.role} under "
                    f"{p.parent}, but an earlier city has it as a {seen.role} under {seen.parent}"
                )
    shared = Participants(merged.values())
    worlds = [replace(world, participants=shared) for world in worlds]
    for world in worlds:
        _freeze(world)
    return worlds


def with_participants(world: World, participants: Participants) -> World:
    """A city's world with the run's shared participants registry, as ``build_worlds`` gives
    it (for a shard run elsewhere, sim/shard_actor.py)."""
    world = replace(world, participants=participants)
    _freeze(world)
    return world


def _check_cities_agree(scenarios: list[Scenario]) -> None:
    """The cities of one run share one clearing hierarchy: its rules must be the same in each
    city's file, and no two cities may issue under one issuer id."""
    first = scenarios[0]
    shared_rules = first.clearing.model_dump(exclude={"network"})
    nodes = dict(first.clearing.network.nodes)
    issuers = {first.output.issuer_id: first.name}
    for sc in scenarios[1:]:
        rules = sc.clearing.model_dump(exclude={"network"})
        for key in shared_rules:
            if rules[key] != shared_rules[key]:
                raise ValueError(
                    f"{sc.name}: clearing.{key} is {rules[key]!r} but {first.name} has "
                    f"{shared_rules[key]!r}; the cities of a run share one clearing"
                )
        for node_id, node in sc.clearing.network.nodes.items():
            if node_id in nodes and nodes[node_id] != node:
                raise ValueError(
                    f"{sc.name}: clearing.network.nodes.{node_id} differs from the same node "
                    "in an earlier city; the cities of a run share one hierarchy"
                )
            nodes.setdefault(node_id, node)
        if sc.output.issuer_id in issuers and not _parts_of_one_city(sc, scenarios):
            raise ValueError(
                f"{sc.name}: output.issuer_id {sc.output.issuer_id} is also "
                f"{issuers[sc.output.issuer_id]}'s card issuer; each city needs its own"
            )
        issuers[sc.output.issuer_id] = sc.name


def _parts_of_one_city(scenario: Scenario, scenarios: list[Scenario]) -> bool:
    """Is ``scenario`` a region of a city split by region whose other parts share its issuer?"""
    part = scenario.region_part
    return part is not None and all(
        sc.region_part is not None and sc.region_part.city == part.city
        for sc in scenarios
        if sc.output.issuer_id == scenario.output.issuer_id
    )


def build_participants(scenario: Scenario, network: TransitNetwork) -> Participants:
    """The clearing hierarchy of the scenario's data: its clearing nodes, the issuers of its
    riders' cards and codes, external cities' issuers, and the acquirers (the lines' operators,
    external cities' under their own exchange)."""
    spec = scenario.clearing.network
    rows = [
        Participant(node_id, "clearing_node", node.parent, node.name_zh)
        for node_id, node in spec.nodes.items()
    ]
    rows += [
        Participant(issuer_id, "issuer", issuer.exchange, issuer.name_zh)
        for issuer_id, issuer in spec.issuers.items()
    ]
    cities = {} if scenario.interop is None else scenario.interop.cities
    exchange_of = {}
    for cid, city in cities.items():
        rows.append(
            Participant(city_issuer(cid, city), "issuer", city.exchange, f"{city.name_zh}交通卡")
        )
        exchange_of[city_acquirer(cid, city)] = city.exchange
        exchange_of[city_metro_acquirer(cid, city)] = city.exchange
    operators = list(dict.fromkeys(network.lines.operator))
    rows += [
        Participant(op, "acquirer", exchange_of.get(op, spec.home_exchange), op) for op in operators
    ]
    ssc = scenario.social_security
    if ssc is not None:  # the cards' issuer and every venue operator, on the cards' channel
        rows.append(Participant(ssc.issuer_id, "issuer", ssc.channel, f"{ssc.issuer_id}"))
        venue_operators = [ssc.acquirer_id] + [c.culture_acquirer_id for c in cities.values()]
        rows += [
            Participant(op, "acquirer", ssc.channel, op)
            for op in dict.fromkeys(venue_operators)
            if op is not None
        ]
    return Participants(rows)


def media_issuers(scenario: Scenario) -> dict[str, str]:
    """Issuer id of each medium the scenario's riders use (from ``clearing.network.issuers``)."""
    return {
        medium: issuer_id
        for issuer_id, issuer in scenario.clearing.network.issuers.items()
        for medium in issuer.media
    }
