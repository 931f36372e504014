"""One city's day on the clock: its riders, validators, outlets and card money.

A shard simulates behaviour, fares, balances, validators and outlets of its city; the clearing
network (agents/clearing.py) takes the shard's uploaded records at its cut-off and hands back
their clearing status. The engine (sim/engine.py) calls, for each day:

    start_day(day)   at midnight: plan the day (sim/day.py), number the records, start outlet
                     visits and load the validators (SimPy processes then run through the day);
    settle_day(day)  just before the next midnight: credits and balances (this city's state only;
                     the shards may settle in any order);
    commit_day(day)  then, in shard order: post the day's money to the shared ledger, check
                     conservation, publish the day's records (DaySettled, UploadsSent).

and, from the clearing side, ``collect_uploads`` / ``apply_clearing`` / ``order_refunds`` /
``flush_final_days``. The shard keeps its open days (records whose clearing status may still
change) in its ``ClearingBook`` until every tap of a day is final, then publishes TapsFinal.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import NamedTuple

import numpy as np
import simpy

from agents.outlet import SERVED, build_outlets, run_visits
from agents.validator import (
    NOT_UPLOADED,
    REFUSED_BUFFER_FULL,
    ValidatorAgent,
    device_day_faults,
    load_fleet_day,
)
from sim import ids
from sim.behaviour import Response, scenario_response
from sim.clearing import (
    MC_CARD,
    MC_QR,
    MEMO_PURSE,
    MEMO_TOPUP,
    R_DEVICE_BUFFER_FULL,
    R_QR_PLATFORM_DOWN,
    ClearingResult,
    RefundOrders,
    UploadedRecords,
    check_card_balances,
    medium_class_of,
    post_fares,
    post_flow,
    post_refunds,
)
from sim.codes import CLEARED, MEDIA, MODES, PENDING, REJECTED, is_stored_value
from sim.cross_city import day_flows
from sim.day import (
    SERVICE_CARD_SALE,
    SERVICE_TOPUP,
    TOPUP_AT_SALE,
    TOPUP_ONLINE,
    TOPUP_OUTLET,
    DayPlan,
    defer_sales,
    plan_day,
    settle_balances,
)
from sim.disruption import SERVICE_OTHER, comm_outages, renewal_visits
from sim.events import DaySettled, EventBus, TapsFinal, TapStatus, UploadsSent
from sim.grouping import rank_in_groups, runs_stable_order, stable_order
from sim.incidents import NO_INCIDENT, IncidentError, mark
from sim.interop import city_issuer
from sim.ledger import InvariantViolation, check_tap_status
from sim.social_security import SocialSecurityChannel, holders, plan_entries
from sim.state import RunState
from sim.taps import Phase
from sim.world import World, media_issuers
from sim.world_settings import hhmm_to_s

DAY_S = 86_400
METRO = MODES.index("metro")


class RefundsOutstanding(NamedTuple):
    """Refund orders not executed by the end of the run (their payment date is after the
    period): how many, and the fen they owe."""

    orders: int
    fen: int


@dataclasses.dataclass
class ClearingBook:
    """What the shard keeps between its records' upload and their final clearing status."""

    open_days: dict[int, DayPlan] = dataclasses.field(default_factory=dict)
    final_days: set[int] = dataclasses.field(default_factory=set)
    # Batch membership of cleared taps, by tap day, until that day's records are final: the
    # exactly-once check runs day by day, so memory does not grow with the run's length.
    batch_membership: dict[int, list[tuple[np.ndarray, np.ndarray]]] = dataclasses.field(
        default_factory=dict
    )
    resends_seen: set[tuple[int, int, int]] = dataclasses.field(default_factory=set)
    pending_resends: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    refunds_due: dict[int, list] = dataclasses.field(default_factory=dict)
    # Records the service desk has had refunded (each once, however often it is asked).
    desk_refunded: set[int] = dataclasses.field(default_factory=set)


class CityShard:
    """One city's riders, devices and outlets for one run (see the module docstring)."""

    def __init__(
        self,
        world: World,
        state: RunState,
        env: simpy.Environment,
        model,
        bus: EventBus,
        response: Response | None = None,
        shard_index: int = 0,
    ) -> None:
        self.world = world
        self.state = state
        self.env = env
        self.bus = bus
        # None: the scenario's own behavioural response (lending, reactions to prices).
        self.response = scenario_response(world, state.streams) if response is None else response
        self.shard_index = shard_index  # position among the run's cities; 0 is the first
        self.book = ClearingBook()
        sc = world.scenario
        participants = world.participants
        self.issuer_id = sc.output.issuer_id
        self.issuer_code = participants.code(self.issuer_id)
        issuer_of = media_issuers(sc)
        self.media_issuer = participants.codes([issuer_of[m] for m in MEDIA])
        self.line_acquirer = participants.codes(world.network.lines.operator)
        cities = {} if sc.interop is None else sc.interop.cities
        self.city_issuer = np.concatenate(
            [
                [self.issuer_code],
                participants.codes([city_issuer(cid, c) for cid, c in cities.items()]),
            ]
        ).astype(np.int32)
        self._build_validators(model)
        # Run-wide ids of the shard's devices (ids.global_device), by device.
        n_dev = len(world.network.devices.line)
        self.global_device_id = ids.global_device(shard_index, np.arange(n_dev))
        cal = world.calendar
        self.outlets = build_outlets(
            model,
            env,
            world.outlets,
            sc.outlets,
            is_open_day=lambda rule, day: bool(day < cal.days and cal.is_open(rule, day)),
            is_weekend=lambda day: bool(cal.weekday(min(day, cal.days - 1)) >= 5),
        )
        for kind in ("outlet_closure", "outlet_extension"):
            for k in world.incidents.of_kind(kind):
                target = int(world.incidents.incidents[k].target)
                span = (int(world.incidents.start_s[k]), int(world.incidents.end_s[k]))
                for outlet in self.outlets:
                    if outlet.outlet_id == target:
                        spans = outlet.closures if kind == "outlet_closure" else outlet.extensions
                        spans.append(span)
        self._visits = None
        self._settled = None
        self._comm_hits: list[tuple[int, np.ndarray]] = []
        self._balance_before = 0
        # The balances' sum the last check took, while no day has settled since (None: sum
        # again): the next day starts from it (only settling moves a card's balance).
        self._balance_checked: int | None = None
        # Social-security cards at culture venues (their own channel; sim/social_security.py).
        self.ssc = SocialSecurityChannel(world, shard_index)
        self.ssc_holders = holders(world)

    def _build_validators(self, model) -> None:
        world = self.world
        devices = world.network.devices
        n_dev = len(devices.line)
        # Buses upload themselves; metro gates hand records to their station computer.
        self.agent_of_device = np.empty(n_dev, dtype=np.int64)
        bus = np.flatnonzero(devices.kind != METRO)
        self.agent_of_device[bus] = np.arange(len(bus))
        stations = np.unique(devices.stop[devices.kind == METRO])
        metro = np.flatnonzero(devices.kind == METRO)
        self.agent_of_device[metro] = len(bus) + np.searchsorted(stations, devices.stop[metro])
        agent_ids = np.concatenate([bus, n_dev + stations]).astype(np.int64)
        kinds = ["bus"] * len(bus) + ["metro"] * len(stations)
        self.validators = [
            ValidatorAgent(
                model,
                int(agent_ids[i]),
                kinds[i],
                env=self.env,
                settings=world.scenario.devices,
                streams=self.state.streams,
                upload_log=self.state.upload_log,
            )
            for i in range(len(agent_ids))
        ]
        self.agent_device_id = agent_ids

    # ----------------------------------------------------------------- the day
    def start_day(self, day: int) -> None:
        """Midnight of ``day``: plan it and set its outlet visits and uploads going."""
        if self.world.calendar.date_of(day).day == 1:
            self.state.cards.month_spent_fen[:] = 0
        # Day 0's flows include the opening balances, so it starts from an empty float. A later
        # day starts from the sum the last check took if no day settled since (one pass over
        # the population's balances a day, not two).
        if not day:
            self._balance_before = 0
        elif self._balance_checked is not None:
            self._balance_before = self._balance_checked
        else:
            self._balance_before = int(self.state.cards.balance_fen.sum())
        plan = plan_day(self.world, self.state, day, self.agent_of_device, self.response)
        plan.venue_entries = self._venue_entries(plan)
        self._number_records(plan)
        self._visits = self._start_visits(plan)
        self._load_validators(plan)
        self.book.open_days[day] = plan

    def settle_day(self, day: int) -> None:
        """End of ``day``: credits and balances of this shard's cards (its own state only)."""
        plan = self.book.open_days[day]
        visits = self._visits
        credits, refunds_due, stats = self._credits_of_day(plan, visits)
        self._balance_checked = None  # the balances move
        credit_bal = settle_balances(self.world, self.state, plan, credits)
        self._mark_held_records(plan)
        self._settled = (plan, credits, refunds_due, credit_bal, visits, stats)

    def _mark_held_records(self, plan: DayPlan) -> None:
        """Records a comm outage held back: on a target device, tapped before the outage ended
        and uploaded after it began (or not yet)."""
        taps = plan.taps
        timeline = self.world.incidents
        t_abs = plan.day * DAY_S + taps.t_s
        for k, agents in self._comm_hits:
            held = (
                np.isin(taps.agent, agents)
                & (t_abs < timeline.end_s[k])
                & ((taps.uploaded_at >= timeline.start_s[k]) | (taps.uploaded_at < 0))
            )
            mark(taps.incident, np.flatnonzero(held), k)
        self._comm_hits = []

    def mark_incident(self, tx_id: np.ndarray, code: int) -> None:
        """Label open records (by id) with incident ``code``, e.g. held by a clearing node."""
        tap_day = ids.record_day(tx_id)
        for day in np.unique(tap_day).tolist():
            plan = self.book.open_days.get(day)
            if plan is not None:
                mark(plan.taps.incident, ids.record_seq(tx_id[tap_day == day]), code)

    def mark_incidents(self, marks: list[tuple[np.ndarray, int]]) -> None:
        """``mark_incident`` for each (records, code), in order: a cut-off's labels at once."""
        for tx_id, code in marks:
            self.mark_incident(tx_id, code)

    def commit_day(self, day: int) -> DaySettled:
        """Post the settled day's money to the (shared) ledger, check conservation of this
        shard's issuer and publish its records. The engine commits shards in their index
        order, whatever order they were settled in, so the journal does not depend on it."""
        plan, credits, refunds_due, credit_bal, visits, stats = self._settled
        self._settled = None
        for refunds in refunds_due:
            self._post_refunds(day, refunds)
        self._post_day_money(plan, credits)
        self.ssc.commit(
            self.state.ledger, day, plan.venue_entries, self.bus, last=day == self.world.days - 1
        )
        event = DaySettled(
            day=day,
            taps=plan.taps,
            topups=self._topup_records(credits, credit_bal),
            card_sales=dict(plan.sales),
            outlet_visits={**visits["results"].to_arrays(), "incident": visits["incident"]},
            purse=plan.purse,
            stats={**plan.stats, **stats},
            shard=self.shard_index,
            refusals={
                **plan.refusals,
                # A card's city issuer; a code's platform (refused while it was down).
                "issuer": np.where(
                    plan.refusals["reason"] == R_QR_PLATFORM_DOWN,
                    self.media_issuer[plan.refusals["medium"]],
                    self.city_issuer[plan.refusals["card_city"]],
                ),
                "acquirer": self.line_acquirer[plan.refusals["line"]],
            },
            venue_entries=plan.venue_entries,
        )
        self.bus.publish(event)
        self._keep_resends()
        self.bus.publish(UploadsSent(day, self.state.upload_log.drain(), self.shard_index))
        return event

    def _venue_entries(self, plan: DayPlan) -> dict[str, np.ndarray]:
        """The day's venue entries of this shard's social-security card holders."""
        rows, day = self.ssc_holders, plan.day
        live = rows[
            (self.state.cards.sale_day[rows] < day) & (self.world.population.end_day[rows] > day)
        ]
        entries = plan_entries(
            self.world, self.state.streams, day, live, plan.away_rows, plan.away_city
        )
        return self.ssc.entries_of_day(day, entries)

    def card_balances_fen(self) -> tuple[int, int]:
        """The sum of this shard's card balances before its last settled day and now."""
        self._balance_checked = int(self.state.cards.balance_fen.sum())
        return self._balance_before, self._balance_checked

    def _number_records(self, plan: DayPlan) -> None:
        """Transaction ids, device serials, issuer and acquirer of each record."""
        taps = plan.taps
        n = plan.n
        taps.tx_id = ids.record_ids(self.shard_index, plan.day, n)
        # Each device numbers its records on from its last serial, in record order: a
        # record's serial is its device's next serial plus its rank among the device's records
        # (its place in device order less where the device's records start there). The places
        # are scattered once and the device's part added in record order (no gather through
        # the order).
        device = taps.device.astype(np.int64)
        count = np.bincount(device, minlength=len(self.state.device_serial))
        order = runs_stable_order(device)  # records come device by device (agent order)
        first_of = np.cumsum(count) - count
        serial = np.empty(n, dtype=np.int64)
        serial[order] = np.arange(n)
        serial += (self.state.device_serial - first_of)[device]
        self.state.device_serial += count
        taps.device_serial = serial
        taps.issuer = self.media_issuer[taps.medium]
        # Visitors' own cards belong to their city's issuer.
        visitor_card = is_stored_value(taps.medium) & ~taps.home_card
        home = self.world.population.home_city[taps.row[visitor_card]]
        taps.issuer[visitor_card] = self.city_issuer[home]
        taps.acquirer = self.line_acquirer[taps.line]
        taps.status = np.full(n, PENDING, dtype=np.uint8)
        taps.reason = np.zeros(n, dtype=np.uint8)
        taps.fee_fen = np.zeros(n, dtype=np.int64)
        taps.clearing_batch_id = np.full(n, -1, dtype=np.int64)
        taps.settle_day = np.full(n, -1, dtype=np.int64)
        taps.submitted = np.zeros(n, dtype=bool)
        taps.upload_batch = np.full(n, NOT_UPLOADED, dtype=np.int64)
        taps.uploaded_at = np.full(n, -1, dtype=np.int64)

    def _start_visits(self, plan: DayPlan):
        """Outlet visits of the day: top-ups by outlet-goers and physical card sales."""
        day = plan.day
        top = plan.topups
        at_outlet = np.flatnonzero(top["channel"] == TOPUP_OUTLET)
        sale_outlet = np.flatnonzero(plan.sales["outlet"] >= 0)
        n_top, n_sale = len(at_outlet), len(sale_outlet)
        # Visit ids (and so service-time draws) depend only on (day, card, service), not on who
        # else visits that day.
        renewals = renewal_visits(self.world, self.state.streams, day)
        n_renew = len(renewals["row"])
        rows = np.concatenate(
            [top["row"][at_outlet], plan.sales["row"][sale_outlet], renewals["row"]]
        )
        kind = np.concatenate(
            [
                np.full(n_top, SERVICE_TOPUP),
                np.full(n_sale, SERVICE_CARD_SALE),
                np.full(n_renew, SERVICE_OTHER),
            ]
        )
        card = self.world.population.card_id[rows]
        outlet = np.concatenate(
            [top["outlet"][at_outlet], plan.sales["outlet"][sale_outlet], renewals["outlet"]]
        )
        arrival = day * DAY_S + np.concatenate(
            [top["t_s"][at_outlet], plan.sales["t_s"][sale_outlet], renewals["t_s"]]
        )
        visits = {
            "visit_id": ids.visit_ids(self.shard_index, day, card, kind),
            "outlet_idx": outlet,
            "arrival_s": arrival,
            "service_kind": kind,
        }
        results = run_visits(self.env, self.outlets, visits, streams=self.state.streams)
        incident = np.full(len(rows), NO_INCIDENT, dtype=np.int16)
        incident[n_top + n_sale :] = renewals["incident"]
        timeline = self.world.incidents
        for k in timeline.of_kind("outlet_closure", day):
            target = int(timeline.incidents[k].target)
            outlet_ids = np.array([o.outlet_id for o in self.outlets])[outlet]
            mark(
                incident,
                np.flatnonzero((outlet_ids == target) & timeline.active(k, arrival)),
                k,
            )
        return {
            "at_outlet": at_outlet,
            "sale_outlet": sale_outlet,
            "results": results,
            "incident": incident,
        }

    def _load_validators(self, plan: DayPlan) -> None:
        taps = plan.taps
        t_abs = plan.day * DAY_S + taps.t_s
        counts = np.bincount(taps.agent, minlength=len(self.validators))
        offsets = np.zeros(len(self.validators) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        faults = None
        if self.world.incidents.of_kind("comm_outage", plan.day):
            faults = device_day_faults(
                self.state.streams,
                plan.day,
                self.agent_device_id,
                np.array([v.kind_code for v in self.validators]),
                self.world.scenario.devices,
            )
            self._comm_hits = comm_outages(self.world, plan.day, self.agent_of_device, faults)
        load_fleet_day(
            self.validators,
            plan.day,
            t_abs,
            offsets,
            taps.upload_batch,
            taps.uploaded_at,
            faults=faults,
            # Nothing reads the day's upload columns before settle_day, at its last second
            # (sim/engine.py); the uploads of that very second are written after it.
            unread_before=plan.day * DAY_S + DAY_S - 1,
        )
        refused = taps.upload_batch == REFUSED_BUFFER_FULL
        taps.device_refused = refused.astype(np.uint8)
        taps.status[refused] = REJECTED
        taps.reason[refused] = R_DEVICE_BUFFER_FULL
        taps.agent_device_id = self.agent_device_id[taps.agent]
        taps.advance(Phase.LOADED)

    # ----------------------------------------------------------------- money of the day
    def _credits_of_day(self, plan: DayPlan, visits) -> tuple[dict[str, np.ndarray], list, dict]:
        """Every credit to a card today: top-ups (when they really happened), the stored value
        loaded at sale, and duplicate-deduction refunds executed today."""
        day = plan.day
        top = plan.topups
        res = visits["results"]
        at_outlet = visits["at_outlet"]
        n_top = len(at_outlet)
        t = top["t_s"].copy()
        channel = top["channel"].copy()
        outlet_served = res.outcome[:n_top] == SERVED
        t[at_outlet[outlet_served]] = res.service_end_s[:n_top][outlet_served] - day * DAY_S
        # Turned away (closed, or still queueing at closing): they top up online that evening.
        turned = at_outlet[~outlet_served]
        t[turned] = hhmm_to_s(self.world.scenario.topups.online_time_mean)
        channel[turned] = TOPUP_ONLINE
        outlet = top["outlet"].copy()
        outlet[turned] = -1

        sc = self.world.scenario
        sale_t = plan.sales["t_s"].copy()
        sold_at = visits["sale_outlet"]
        sales_done = slice(n_top, n_top + len(sold_at))  # renewal visits come after the sales
        sale_served = res.outcome[sales_done] == SERVED
        sale_t[sold_at[sale_served]] = res.service_end_s[sales_done][sale_served] - day * DAY_S
        plan.sales["t_s"] = sale_t
        deferred = self._defer_unserved_sales(plan, sold_at[~sale_served])
        sales, sale_t = plan.sales, plan.sales["t_s"]
        n_sale = len(sales["row"]) if sc.card_sales.initial_topup_fen > 0 else 0

        refunds_due = self.book.refunds_due.pop(day, [])
        refund_rows, refund_amt, refund_stats = self._refunds_for(refunds_due)
        cutoff_s = sc.clearing.batch_cutoff_hour * 3600
        credits = {
            "row": np.concatenate([top["row"], sales["row"][:n_sale], refund_rows]),
            "t_s": np.concatenate(
                [t, sale_t[:n_sale], np.full(len(refund_rows), cutoff_s, dtype=np.int64)]
            ),
            "amount_fen": np.concatenate(
                [
                    top["amount_fen"],
                    np.full(n_sale, sc.card_sales.initial_topup_fen, dtype=np.int64),
                    refund_amt,
                ]
            ).astype(np.int64),
            "channel": np.concatenate(
                [channel, np.full(n_sale, TOPUP_AT_SALE), np.full(len(refund_rows), 255)]
            ).astype(np.uint8),
            "outlet": np.concatenate(
                [outlet, sales["outlet"][:n_sale], np.full(len(refund_rows), -1)]
            ),
            "n_topups": np.array([len(top["row"]) + n_sale]),
        }
        return credits, refunds_due, {"card_sales_deferred": deferred, **refund_stats}

    def _defer_unserved_sales(self, plan: DayPlan, unserved: np.ndarray) -> int:
        """Buyers the outlet could not serve come back the next day: the card is sold then."""
        if not len(unserved):
            return 0
        rows = plan.sales["row"][unserved]
        keep = np.ones(len(plan.sales["row"]), dtype=bool)
        keep[unserved] = False
        plan.sales = {k: v[keep] for k, v in plan.sales.items()}
        defer_sales(self.state, rows, plan.day + 1)
        return len(rows)

    def _refunds_for(self, due: list) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Card credits of the refund orders due today: this shard's own cards' rows."""
        mine = [
            (r.medium_class == MC_CARD)
            & (r.issuer == self.issuer_code)
            & (ids.card_shard(r.card) == self.shard_index)
            for r in due
        ]
        card_id = self.world.population.card_id  # ascending, so ids map back to rows
        rows = [
            np.searchsorted(card_id, ids.local_card(r.card[m]))
            for r, m in zip(due, mine, strict=True)
        ]
        amounts = [r.amount_fen[m] for r, m in zip(due, mine, strict=True)]
        stats = {
            "refunds_executed": sum(len(r) for r in due),
            "refunds_fen": sum(int(r.amount_fen.sum()) for r in due),
            "refunds_other_issuers": sum(int((r.issuer != self.issuer_code).sum()) for r in due),
        }
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), stats
        return np.concatenate(rows), np.concatenate(amounts), stats

    def _post_refunds(self, day: int, refunds) -> None:
        """Post executed refunds. Only this shard's cards' purses are modelled; refunds of
        issuers no shard simulates go back the way their money came (like QR money)."""
        external = np.where(refunds.issuer == self.issuer_code, refunds.medium_class, MC_QR)
        post_refunds(
            self.state.ledger,
            day,
            dataclasses.replace(refunds, medium_class=external),
            self.world.participants,
        )

    def _topup_records(self, credits, credit_bal) -> dict[str, np.ndarray]:
        """The top-up table's rows: credits that are top-ups, with their JT/T 978 load counter."""
        n_top = int(credits["n_topups"][0])
        rows = credits["row"][:n_top]
        t_s = credits["t_s"][:n_top]
        order = stable_order(rows, t_s)
        counter = np.empty(n_top, dtype=np.int64)
        load = self.state.cards.load_counter
        counter[order] = (load[rows[order]].astype(np.int64) + rank_in_groups(rows[order])) % 65536
        np.add.at(load, rows, 1)
        pop = self.world.population
        return {
            "row": rows,
            "t_s": t_s,
            "amount_fen": credits["amount_fen"][:n_top],
            "channel": credits["channel"][:n_top],
            "outlet": credits["outlet"][:n_top],
            "balance_before_fen": credit_bal["balance_before_fen"][:n_top],
            "balance_after_fen": credit_bal["balance_after_fen"][:n_top],
            "card_counter": counter,
            "card_type": pop.card_type[rows],
            "region": pop.region[rows],
        }

    def _post_day_money(self, plan: DayPlan, credits) -> None:
        taps = plan.taps
        ledger = self.state.ledger
        participants = self.world.participants
        n_top = int(credits["n_topups"][0])
        issuer = np.full(n_top, self.issuer_code)
        post_flow(ledger, plan.day, MEMO_TOPUP, issuer, credits["amount_fen"][:n_top], participants)
        charged = ~taps.declined & (taps.device_refused == 0)
        # Only this city's cards' purses are modelled; other issuers' fares arrive like QR money.
        # Taps that charged nothing count 0 fen (no copies of the charged rows).
        post_fares(
            ledger,
            plan.day,
            taps.issuer,
            np.where(taps.home_card, np.uint8(MC_CARD), np.uint8(MC_QR)),
            np.where(charged, taps.amount_fen, 0),
            participants,
        )
        purse = plan.purse
        post_flow(
            ledger,
            plan.day,
            MEMO_PURSE,
            np.full(len(purse["row"]), self.issuer_code),
            np.where(purse["accepted"], purse["amount_fen"], 0),
            participants,
        )
        price = self.world.scenario.card_sales.price_fen * len(plan.sales["row"])
        if price:
            ledger.post(
                plan.day, f"bank:{self.issuer_id}", f"revenue:{self.issuer_id}", price,
                "card_sale_fee",
            )  # fmt: skip

    # ----------------------------------------------------------------- clearing side
    def collect_uploads(self, cutoff_s: int) -> UploadedRecords:
        """Records uploaded before ``cutoff_s`` not yet in a batch, plus resent batches."""
        book = self.book
        parts = []
        self._keep_resends()
        due = [r for r in book.pending_resends if r[2] < cutoff_s]
        resend_keys = {(dev, batch) for dev, batch, _at in due}
        found: set[tuple[int, int]] = set()
        for day, plan in sorted(book.open_days.items()):
            taps = plan.taps
            if taps.phase < Phase.SETTLED:
                continue  # today's records are final only once the day's balances are applied
            take = ~taps.submitted & (taps.uploaded_at >= 0) & (taps.uploaded_at < cutoff_s)
            idx = np.flatnonzero(take)
            again = self._resent_rows(taps, resend_keys, found)
            taps.submitted[idx] = True
            both = np.concatenate([idx, again])
            if len(both):
                parts.append((taps, day, both))
        # A resent batch whose records were not found belongs to a day not yet closed (keep it)
        # or to a day already final (nothing left to resend).
        oldest_open = min(book.open_days, default=0) * DAY_S
        book.pending_resends = [
            r
            for r in book.pending_resends
            if r[2] >= cutoff_s or ((r[0], r[1]) not in found and r[2] >= oldest_open)
        ]
        return self._records(parts)

    def _resent_rows(
        self, taps, resend_keys: set[tuple[int, int]], found: set[tuple[int, int]]
    ) -> np.ndarray:
        """Rows of ``taps`` in the resent batches ``resend_keys`` ((device, batch) pairs),
        ascending; adds the pairs that have rows here to ``found``.

        The records come agent by agent (sim/day.py), so a batch's rows are among its
        device's own: a look at those few rows, not a key of every record of the day.
        """
        if not resend_keys:
            return np.zeros(0, np.int64)
        pairs = sorted(resend_keys)
        dev = np.array([d for d, _ in pairs], dtype=np.int64)
        agent = np.minimum(
            np.searchsorted(self.agent_device_id, dev), len(self.agent_device_id) - 1
        )
        known = self.agent_device_id[agent] == dev
        lo = np.searchsorted(taps.agent, agent).tolist()
        hi = np.searchsorted(taps.agent, agent, side="right").tolist()
        rows = []
        for (d, b), ok, a, z in zip(pairs, known.tolist(), lo, hi, strict=True):
            if ok and b >= 0:
                r = a + np.flatnonzero(taps.upload_batch[a:z] == b)
                if len(r):
                    rows.append(r)
                    found.add((d, b))
        return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)

    def _keep_resends(self) -> None:
        """Remember resent batches (a lost ack made the device upload them twice)."""
        log = self.state.upload_log.to_arrays()
        for i in np.flatnonzero(log["resend"]).tolist():
            key = (
                int(log["device_id"][i]),
                int(log["upload_batch_id"][i]),
                int(log["uploaded_at"][i]),
            )
            if key not in self.book.resends_seen:
                self.book.resends_seen.add(key)
                self.book.pending_resends.append(key)

    def _records(self, parts: list[tuple]) -> UploadedRecords:
        """Rows ``idx`` of each (taps, day, idx) in ``parts`` as uploaded records, in order."""
        return UploadedRecords.concat([self._records_of_part(*part) for part in parts])

    def _records_of_part(self, taps, day: int, idx: np.ndarray) -> UploadedRecords:
        """Records ``idx`` of ``day``'s taps."""
        pop = self.world.population
        return UploadedRecords(
            tx_id=taps.tx_id[idx],
            card=ids.global_card(self.shard_index, pop.card_id[taps.row[idx]]),
            card_counter=taps.card_counter[idx],
            device=self.global_device_id[taps.device[idx]],
            device_serial=taps.device_serial[idx],
            timestamp_s=taps.t_s[idx] + day * DAY_S,  # the day of their ids (ids.record_day)
            amount_fen=taps.amount_fen[idx],
            list_fare_fen=taps.list_fare_fen[idx],
            issuer=taps.issuer[idx],
            acquirer=taps.acquirer[idx],
            mode=taps.mode[idx],
            medium_class=medium_class_of(taps.medium[idx]),
            declined=taps.declined[idx],
        )

    def apply_clearing(self, result: ClearingResult) -> TapStatus:
        """Write a clearing run's outcome into the open days' records (found by their ids:
        day and position); returns the status changes. A cleared record clears its tap; a
        rejection counts only for a tap still pending, and the first copy's reason wins (an
        original comes before its resent copies)."""
        tap_day = ids.record_day(result.tx_id)
        tap_row = ids.record_seq(result.tx_id)
        is_cleared = result.status == CLEARED
        is_rejected = result.status == REJECTED
        days = _days_present(tap_day)
        changed, members = [], []
        for day in days:
            taps = self.book.open_days[day].taps
            # Most runs hold one day's records: then every row is that day's.
            of_day = None if len(days) == 1 else tap_day == day
            cleared = np.flatnonzero(is_cleared if of_day is None else is_cleared & of_day)
            done = tap_row[cleared]
            taps.status[done] = CLEARED
            taps.reason[done] = 0
            fee = result.fee_fen[cleared]
            taps.fee_fen[done] = fee
            batch = result.batch_id[cleared]
            taps.clearing_batch_id[done] = batch
            settle = result.record_settle_day[cleared]
            taps.settle_day[done] = settle
            rejected = np.flatnonzero(is_rejected if of_day is None else is_rejected & of_day)
            _, first = np.unique(tap_row[rejected], return_index=True)
            rejected = rejected[np.sort(first)]
            rejected = rejected[taps.status[tap_row[rejected]] == PENDING]
            taps.status[tap_row[rejected]] = REJECTED
            taps.reason[tap_row[rejected]] = result.reason[rejected]
            cleared_tx = result.tx_id[cleared]
            written = {"tx_id": cleared_tx, "fee_fen": fee, "clearing_batch_id": batch}
            written["settle_day"] = settle
            changed.append((day, _status_rows(taps, tap_row[rejected], done, written)))
            if len(cleared):
                members.append((day, cleared_tx, batch))
        self._record_membership(result.day, members)
        return self._status_of(changed)

    def desk_refund_orders(self, tx_id: np.ndarray) -> tuple[RefundOrders, np.ndarray]:
        """The service desk's refunds of this shard's records (by id): each card charge the
        clearing cleared, once (a rejected one the clearing refunds itself; a declined one
        took nothing). Returns the orders and the ids still pending (asked again at the next
        clearing). ValueError for a record whose day is no longer open."""
        parts, pending = [], []
        tap_day = ids.record_day(tx_id)
        for day in _days_present(tap_day):
            plan = self.book.open_days.get(day)
            named = tx_id[tap_day == day]
            if plan is None:
                date = self.world.start_date + dt.timedelta(days=day)
                why = (
                    "whose clearing is already final; a desk refund must be given before the "
                    "clearing after its records' day"
                    if day in self.book.final_days
                    else "a day not simulated before the refund (expected the transaction_id "
                    "of an earlier record)"
                )
                raise IncidentError(
                    f"transactions: records of {date} are named (e.g. {int(named[0])}), {why}",
                    named,
                )
            taps = plan.taps
            seq = ids.record_seq(named)
            unknown = named[(seq >= len(taps.tx_id)) | (seq < 0)]
            if len(unknown):
                raise IncidentError(
                    f"transactions: {int(unknown[0])} is the id of no record (expected the "
                    "transaction_id of a record in the transactions table)",
                    unknown,
                )
            pending.append(taps.tx_id[seq[taps.status[seq] == PENDING]])
            ok = (
                (taps.status[seq] == CLEARED)
                & taps.home_card[seq]
                & ~taps.declined[seq]
                & (taps.amount_fen[seq] > 0)
                & ~np.isin(taps.tx_id[seq], list(self.book.desk_refunded))
            )
            seq = np.unique(seq[ok])
            self.book.desk_refunded.update(taps.tx_id[seq].tolist())
            parts.append((taps, seq))
        pop = self.world.population
        z = np.zeros(0, np.int64)
        cols = {
            "source_tx_id": [t.tx_id[q] for t, q in parts],
            "first_tx_id": [np.full(len(q), -1, np.int64) for _, q in parts],
            "card": [ids.global_card(self.shard_index, pop.card_id[t.row[q]]) for t, q in parts],
            "issuer": [t.issuer[q] for t, q in parts],
            "acquirer": [t.acquirer[q] for t, q in parts],
            "medium_class": [np.full(len(q), MC_CARD, np.uint8) for _, q in parts],
            "amount_fen": [t.amount_fen[q].astype(np.int64) for t, q in parts],
        }
        orders = RefundOrders(
            day=-1, by_desk=True, **{k: np.concatenate(v or [z]) for k, v in cols.items()}
        )
        return orders, np.concatenate(pending or [z])

    def order_refunds(self, pay_day: int, refunds) -> None:
        """Refund orders this shard executes on ``pay_day`` (its cards, or its acquired records
        of issuers no shard simulates)."""
        if len(refunds):
            self.book.refunds_due.setdefault(pay_day, []).append(refunds)

    def _status_of(self, changed: list[tuple[int, dict[str, list[np.ndarray]]]]) -> TapStatus:
        """The status columns of each (day, column parts) in ``changed`` as one event, in
        order (each column joined once)."""
        z = np.zeros(0, np.int64)
        cat = {k: _concat([p for _, c in changed for p in c[k]], z) for k in _STATUS_COLUMNS}
        counts = [sum(len(p) for p in c["tx_id"]) for _, c in changed]
        tap_day = np.repeat(np.array([day for day, _ in changed], dtype=np.int64), counts)
        shard = np.full(len(tap_day), self.shard_index, dtype=np.int64)
        return TapStatus(shard=shard, tap_day=tap_day, **cat)

    def _record_membership(
        self, clearing_day: int, members: list[tuple[int, np.ndarray, np.ndarray]]
    ) -> None:
        """Keep the batches' own lists of cleared taps (tap day, tx ids, batch ids) for the
        exactly-once check."""
        for day, tx, batch in members:
            if day in self.book.final_days:
                raise InvariantViolation(
                    "tap_exactly_once",
                    0,
                    f"clearing day {clearing_day}, tap day {day}",
                    f"{len(tx)} tap(s) cleared after their day was final",
                )
            self.book.batch_membership.setdefault(day, []).append((tx, batch))

    def flush_final_days(self, final: bool) -> None:
        """Publish days whose records are all resolved (or everything at the end of the run)."""
        book = self.book
        for day in sorted(book.open_days):
            plan = book.open_days[day]
            taps = plan.taps
            if taps.phase < Phase.SETTLED or (not final and (taps.status == PENDING).any()):
                break  # keep day order in the output
            members = book.batch_membership.pop(day, [])
            check_tap_status(
                taps.tx_id,
                taps.status,
                taps.amount_fen,
                np.concatenate([t for t, _ in members] or [np.zeros(0, np.int64)]),
                np.concatenate([b for _, b in members] or [np.zeros(0, np.int64)]),
            )
            book.final_days.add(day)
            taps.advance(Phase.FINAL)
            flows = day_flows(self.world, taps)
            self.bus.publish(TapsFinal(day, taps, self.shard_index, flows))
            del book.open_days[day]

    def refunds_outstanding(self) -> RefundsOutstanding:
        """Refund orders not executed by the end of the run, counted and in fen."""
        due = [r for orders in self.book.refunds_due.values() for r in orders]
        return RefundsOutstanding(
            sum(len(r) for r in due), sum(int(r.amount_fen.sum()) for r in due)
        )

    def check_all_cleared_days_closed(self) -> None:
        """At the end: no batch may have cleared taps of a day that never produced records."""
        if self.book.batch_membership:
            raise InvariantViolation(
                "tap_exactly_once",
                0,
                f"tap days {sorted(self.book.batch_membership)}",
                "batches cleared taps of days that never produced records",
            )


def _status_rows(
    taps, rejected: np.ndarray, cleared: np.ndarray, written: dict[str, np.ndarray]
) -> dict[str, list[np.ndarray]]:
    """Status columns of rows ``rejected`` then ``cleared`` of ``taps``, as they now stand, as
    parts to join (``CityShard._status_of`` joins all days' parts at once).

    The cleared rows' fee, batch and settle day are the ``written`` values (and the ids the
    clearing named, which are the rows' own): no gather back from the day's columns. A row
    cleared twice in one run would hold its last write, so then the rows are read back.
    """
    seen = np.zeros(len(taps.tx_id), dtype=bool)
    seen[cleared] = True
    if np.count_nonzero(seen) != len(cleared):
        rows = np.concatenate([rejected, cleared])
        return {k: [getattr(taps, k)[rows]] for k in _STATUS_COLUMNS}
    n = len(cleared)
    now = {
        **written,
        "status": np.full(n, CLEARED, dtype=taps.status.dtype),
        "reason": np.zeros(n, dtype=taps.reason.dtype),
    }
    return {
        k: [getattr(taps, k)[rejected], now[k].astype(getattr(taps, k).dtype, copy=False)]
        for k in _STATUS_COLUMNS
    }


def _concat(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    """``parts`` end to end; one part as it is (no copy), none as ``empty``."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts or [empty])


def _days_present(days: np.ndarray) -> list[int]:
    """The distinct days in ``days``, ascending (a count per day: no sort of the records)."""
    if not len(days):
        return []
    low = int(days.min())
    return (np.flatnonzero(np.bincount(days - low)) + low).tolist()


_STATUS_COLUMNS = ("tx_id", "status", "reason", "fee_fen", "clearing_batch_id", "settle_day")


def check_issuers_cards(ledger, day: int, shards) -> None:
    """After ``shards`` committed ``day``: each issuer's card balances, summed over the shards
    that issue its cards (one, or the regions of a city split by region), against its float's
    flows (``check_card_balances``)."""
    sums: dict[str, list[int]] = {}
    for shard in shards:
        before, after = shard.card_balances_fen()
        pair = sums.setdefault(shard.issuer_id, [0, 0])
        pair[0] += before
        pair[1] += after
    for issuer_id, (before, after) in sums.items():
        check_card_balances(ledger, day, issuer_id, before, after)
