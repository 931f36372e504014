"""The engine: one SimPy environment is the clock, one Mesa model hosts the agents.

Processes on the clock:
- the day driver: at midnight it plans the day for the whole population (vectorised, sim/day.py),
  starts outlet visits and loads every validator with its slice of the day's taps; just before the
  next midnight it applies balances (top-ups happened when the outlet queue served them) and
  posts the day's money to the ledger, checking the invariants;
- validators (agents/validator.py): store-and-forward uploads at their upload opportunities;
- outlets (agents/outlet.py): counters as SimPy resources, visitors queue;
- the city exchange (agents/clearing.py): daily clearing batch at the cut-off, T+1 settlement.

The engine emits records to a sink (sim/records.py turns them into output tables); monitoring and
writing stay out of the simulation logic.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mesa
import numpy as np
import simpy

from agents.clearing import ClearingNodeAgent
from agents.outlet import LEFT_CLOSED, SERVED, build_outlets, run_visits
from agents.validator import (
    NOT_UPLOADED,
    REFUSED_BUFFER_FULL,
    UploadLog,
    ValidatorAgent,
    load_fleet_day,
)
from sim.clearing import (
    MC_CARD,
    MC_QR,
    MEMO_DEPOSIT,
    MEMO_OPENING,
    MEMO_PURSE,
    MEMO_TOPUP,
    NANTONG_MEDIA_ISSUER,
    R_DEVICE_BUFFER_FULL,
    Clearer,
    ClearingResult,
    Participants,
    UploadedRecords,
    batch_columns,
    check_card_balances,
    initial_deposits_fen,
    medium_class_of,
    post_clearing,
    post_fares,
    post_flow,
    post_refunds,
    post_settlement,
)
from sim.codes import CLEARED, MEDIA, MODES, PENDING, REJECTED, STORED_VALUE_MEDIA
from sim.day import (
    SERVICE_CARD_SALE,
    SERVICE_TOPUP,
    TOPUP_AT_SALE,
    TOPUP_ONLINE,
    TOPUP_OUTLET,
    DayPlan,
    plan_day,
    settle_balances,
)
from sim.ledger import InvariantViolation, Ledger, check_positions, check_tap_status
from sim.metrics import RunMetrics
from sim.world import World
from sim.world_settings import hhmm_to_s

DAY_S = 86_400
METRO = MODES.index("metro")


class CardTwinModel(mesa.Model):
    """Hosts the device, outlet and clearing-node agents and the daily KPI collector."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.kpis: dict[str, float] = {}
        self.datacollector = mesa.DataCollector(
            model_reporters={name: _reporter(name) for name in KPI_NAMES}
        )


KPI_NAMES: tuple[str, ...] = (
    "riders",
    "taps",
    "fare_transactions",
    "card_spend_fen",
    "qr_spend_fen",
    "declined_taps",
    "topups",
    "topups_outlet",
    "topup_fen",
    "card_sales",
    "duplicate_deductions",
    "reader_outage_taps",
    "outlet_mean_wait_s",
    "outlet_left_closed",
    "purse_spend_fen",
)


def _reporter(name: str) -> Callable[[CardTwinModel], float]:
    return lambda model: model.kpis.get(name, 0)


@dataclass
class RunStats:
    """Totals of a run, for the KPI summary and run_meta.json."""

    days: int = 0
    taps: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, value: int) -> None:
        """Accumulate a named total."""
        self.totals[name] = self.totals.get(name, 0) + int(value)


class Engine:
    """Runs a world for its period, emitting day records to ``emit(table, day, columns)``."""

    def __init__(
        self,
        world: World,
        emit: Callable[[str, int, dict[str, np.ndarray]], None],
        on_day: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.world = world
        sc = world.scenario
        self.emit = emit
        self.on_day = on_day
        self.env = simpy.Environment()
        self.model = CardTwinModel(sc.seed)
        self.participants = world.participants
        self.issuer_code = self.participants.code(sc.output.issuer_id)
        self.media_issuer = self.participants.codes(
            [
                sc.output.issuer_id
                if m in ("physical_card", "nfc_virtual_card")
                else NANTONG_MEDIA_ISSUER[m]
                for m in MEDIA
            ]
        )
        self.line_acquirer = self.participants.codes(world.network.lines.operator)
        cities = [] if sc.interop is None else [c.upper() for c in sc.interop.cities]
        self.city_issuer = np.concatenate(
            [[self.issuer_code], self.participants.codes([f"{c}_CARD" for c in cities])]
        ).astype(np.int32)
        self.ledger = Ledger()
        self.stats = RunStats()
        self.metrics = RunMetrics(len(world.region_ids), len(world.population))
        self.upload_log = UploadLog()
        self._build_agents()
        self.open_plans: dict[int, DayPlan] = {}
        self._resends_seen: set[tuple[int, int, int]] = set()
        self.failure: InvariantViolation | None = None
        self.refunds_due: dict[int, list] = {}
        self.settlements_due: dict[int, list] = {}
        self.device_serial = np.zeros(len(world.network.devices.line), dtype=np.int64)
        # Batch membership of cleared taps, by tap day, until that day's records are final: the
        # exactly-once check runs day by day, so memory does not grow with the run's length.
        self.batch_membership: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.final_days: set[int] = set()
        self.pending_resends: list[tuple[int, int, int]] = []

    # ----------------------------------------------------------------- construction
    def _build_agents(self) -> None:
        world = self.world
        sc = world.scenario
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
                self.model,
                int(agent_ids[i]),
                kinds[i],
                env=self.env,
                settings=sc.devices,
                streams=world.streams,
                upload_log=self.upload_log,
            )
            for i in range(len(agent_ids))
        ]
        self.agent_device_id = agent_ids
        cal = world.calendar
        self.outlets = build_outlets(
            self.model,
            self.env,
            world.outlets,
            sc.outlets,
            is_open_day=lambda rule, day: bool(day < cal.days and cal.is_open(rule, day)),
            is_weekend=lambda day: bool(cal.weekday(min(day, cal.days - 1)) >= 5),
        )
        self.clearer = Clearer(sc.clearing, self.participants)
        self.exchange = ClearingNodeAgent(
            self.model,
            "NT_EXCHANGE",
            self.clearer,
            self.env,
            sc.clearing.batch_cutoff_hour,
            self._collect_uploads,
            self._apply_clearing,
        )

    # ----------------------------------------------------------------- run
    def run(self) -> RunStats:
        """Simulate every day of the world's period; returns run totals."""
        days = self.world.days
        self._post_opening()
        self.env.process(self._guarded(self._day_driver(days)))
        self.env.process(self._guarded(self.exchange.batches(0, days - 1)))
        # The last day's batch closes at its cut-off after the period: run the clock that far.
        self.env.run(until=self.exchange.cutoff_of(days - 1) + 1)
        if self.failure is not None:
            raise self.failure
        self._flush_open_plans(final=True)
        self._check_run_invariants()
        self.stats.days = days
        return self.stats

    def _guarded(self, process):
        """Run a SimPy process; a broken invariant stops the whole simulation at once.

        SimPy re-creates a failed process's exception from its ``args``; keeping our own
        reference preserves the invariant's message and fields for the caller.
        """
        try:
            yield from process
        except InvariantViolation as exc:
            self.failure = exc
            raise simpy.core.StopSimulation(None) from exc

    def _post_opening(self) -> None:
        pop = self.world.population
        issued = pop.issue_day < 0
        pop.balance_fen[~issued] = 0  # not sold yet: no stored value until the sale
        post_flow(
            self.ledger,
            0,
            MEMO_OPENING,
            np.array([self.issuer_code]),
            np.array([int(pop.balance_fen.sum())]),
            self.participants,
        )
        deposits = initial_deposits_fen(self.world.scenario.clearing, self.participants)
        post_flow(
            self.ledger,
            0,
            MEMO_DEPOSIT,
            np.arange(len(deposits)),
            deposits,
            self.participants,
        )

    def _day_driver(self, days: int):
        world = self.world
        for day in range(days):
            t0 = time.perf_counter()
            if world.calendar.date_of(day).day == 1:
                world.population.month_spent_fen[:] = 0
            # Day 0's flows include the opening balances, so it starts from an empty float.
            balance_before = int(world.population.balance_fen.sum()) if day else 0
            plan = plan_day(world, day, self.agent_of_device)
            self._number_records(plan)
            visits = self._start_visits(plan)
            self._load_validators(plan)
            self.open_plans[day] = plan
            yield self.env.timeout(DAY_S - 1)
            self._end_of_day(plan, visits, balance_before)
            self.stats.taps += plan.n
            if self.on_day is not None:
                self.on_day(day, plan.n, time.perf_counter() - t0)
            yield self.env.timeout(1)

    def _number_records(self, plan: DayPlan) -> None:
        """Transaction ids, device serials, issuer and acquirer of each record."""
        cols = plan.cols
        n = plan.n
        cols["tx_id"] = (np.int64(plan.day) << 24) + np.arange(n, dtype=np.int64)
        device = cols["device"].astype(np.int64)
        order = np.argsort(device, kind="stable")
        dev_sorted = device[order]
        start = np.ones(n, dtype=bool)
        start[1:] = dev_sorted[1:] != dev_sorted[:-1]
        first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
        serial = np.empty(n, dtype=np.int64)
        serial[order] = self.device_serial[dev_sorted] + (np.arange(n) - first)
        counts = np.bincount(device, minlength=len(self.device_serial))
        self.device_serial += counts
        cols["device_serial"] = serial
        cols["issuer"] = self.media_issuer[cols["medium"]]
        # Visitors' own cards belong to their city's issuer.
        visitor_card = np.isin(cols["medium"], list(STORED_VALUE_MEDIA)) & ~cols["ntcard"]
        home = self.world.population.home_city[cols["row"][visitor_card]]
        cols["issuer"][visitor_card] = self.city_issuer[home]
        cols["acquirer"] = self.line_acquirer[cols["line"]]
        cols["status"] = np.full(n, PENDING, dtype=np.uint8)
        cols["reason"] = np.zeros(n, dtype=np.uint8)
        cols["fee_fen"] = np.zeros(n, dtype=np.int64)
        cols["clearing_batch_id"] = np.full(n, -1, dtype=np.int64)
        cols["settle_day"] = np.full(n, -1, dtype=np.int64)
        cols["submitted"] = np.zeros(n, dtype=bool)
        cols["upload_batch"] = np.full(n, NOT_UPLOADED, dtype=np.int64)
        cols["uploaded_at"] = np.full(n, -1, dtype=np.int64)

    def _start_visits(self, plan: DayPlan):
        """Outlet visits of the day: top-ups by outlet-goers and physical card sales."""
        day = plan.day
        top = plan.topups
        at_outlet = np.flatnonzero(top["channel"] == TOPUP_OUTLET)
        sale_outlet = np.flatnonzero(plan.sales["outlet"] >= 0)
        n_top, n_sale = len(at_outlet), len(sale_outlet)
        day0 = day * DAY_S
        # Visit ids (and so service-time draws) depend only on (day, card, service), not on who
        # else visits that day.
        rows = np.concatenate([top["row"][at_outlet], plan.sales["row"][sale_outlet]])
        kind = np.concatenate([np.full(n_top, SERVICE_TOPUP), np.full(n_sale, SERVICE_CARD_SALE)])
        card = self.world.population.card_id[rows]
        visits = {
            "visit_id": (np.int64(day) << 40) + card * 4 + kind,
            "outlet_idx": np.concatenate(
                [top["outlet"][at_outlet], plan.sales["outlet"][sale_outlet]]
            ),
            "arrival_s": day0
            + np.concatenate([top["t_s"][at_outlet], plan.sales["t_s"][sale_outlet]]),
            "service_kind": kind,
        }
        results = run_visits(self.env, self.outlets, visits, streams=self.world.streams)
        return {"at_outlet": at_outlet, "sale_outlet": sale_outlet, "results": results}

    def _load_validators(self, plan: DayPlan) -> None:
        cols = plan.cols
        t_abs = plan.day * DAY_S + cols["t_s"]
        counts = np.bincount(cols["agent"], minlength=len(self.validators))
        offsets = np.zeros(len(self.validators) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        load_fleet_day(
            self.validators, plan.day, t_abs, offsets, cols["upload_batch"], cols["uploaded_at"]
        )
        refused = cols["upload_batch"] == REFUSED_BUFFER_FULL
        cols["device_refused"] = refused.astype(np.uint8)
        cols["status"][refused] = REJECTED
        cols["reason"][refused] = R_DEVICE_BUFFER_FULL
        cols["agent_device_id"] = self.agent_device_id[cols["agent"]]

    # ----------------------------------------------------------------- end of day
    def _end_of_day(self, plan: DayPlan, visits, balance_before: int) -> None:
        world = self.world
        pop = world.population
        day = plan.day
        credits = self._credits_of_day(plan, visits)
        credit_bal = settle_balances(world, plan, credits)
        self._post_day_money(plan, credits)
        day_figures = self.metrics.observe_day(world, plan, credits)
        check_card_balances(
            self.ledger,
            day,
            world.scenario.output.issuer_id,
            balance_before,
            int(pop.balance_fen.sum()),
        )
        self._emit_services(plan, visits, credits, credit_bal)
        self._emit_kpis(plan, visits, credits, day_figures)
        self._keep_resends()
        self.emit("device_uploads", day, self.upload_log.drain())

    def _credits_of_day(self, plan: DayPlan, visits) -> dict[str, np.ndarray]:
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
        sales = plan.sales
        sale_t = sales["t_s"].copy()
        sale_served = res.outcome[n_top:] == SERVED
        sold_at = visits["sale_outlet"]
        sale_t[sold_at[sale_served]] = res.service_end_s[n_top:][sale_served] - day * DAY_S
        plan.sales["t_s"] = sale_t
        self._defer_unserved_sales(plan, sold_at[~sale_served])
        sales, sale_t = plan.sales, plan.sales["t_s"]
        with_value = sc.card_sales.initial_topup_fen > 0
        n_sale = len(sales["row"]) if with_value else 0

        refund_rows, refund_amt = self._refunds_for(day)
        cutoff_s = sc.clearing.batch_cutoff_hour * 3600
        return {
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

    def _defer_unserved_sales(self, plan: DayPlan, unserved: np.ndarray) -> None:
        """Buyers the outlet could not serve come back the next day: the card is sold then."""
        if not len(unserved):
            return
        rows = plan.sales["row"][unserved]
        keep = np.ones(len(plan.sales["row"]), dtype=bool)
        keep[unserved] = False
        plan.sales = {k: v[keep] for k, v in plan.sales.items()}
        self.world.population.issue_day[rows] = plan.day + 1
        self.world.cache.setdefault("sales_carry", {}).setdefault(plan.day + 1, []).append(rows)
        self.stats.add("card_sales_deferred", len(rows))

    def _refunds_for(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Card refunds due today (from clearing days whose T+lag is today)."""
        due = self.refunds_due.pop(day, [])
        # Only Nantong cards' purses live here; other issuers credit their own cards.
        mine = [(r.medium_class == MC_CARD) & (r.issuer == self.issuer_code) for r in due]
        card_id = self.world.population.card_id  # ascending, so ids map back to rows
        rows = [np.searchsorted(card_id, r.card[m]) for r, m in zip(due, mine, strict=True)]
        amounts = [r.amount_fen[m] for r, m in zip(due, mine, strict=True)]
        for r in due:
            # As with fares: only Nantong cards' purses are modelled; other issuers' refunds go
            # back the way their money came (like QR money).
            external = np.where(r.issuer == self.issuer_code, r.medium_class, MC_QR)
            post_refunds(
                self.ledger, day, dataclasses.replace(r, medium_class=external), self.participants
            )
            self.stats.add("refunds_executed", len(r))
            self.metrics.refunds += len(r)
            self.stats.add("refunds_fen", int(r.amount_fen.sum()))
            self.stats.add("refunds_other_issuers", int((r.issuer != self.issuer_code).sum()))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows), np.concatenate(amounts)

    def _post_day_money(self, plan: DayPlan, credits) -> None:
        cols = plan.cols
        n_top = int(credits["n_topups"][0])
        issuer = np.full(n_top, self.issuer_code)
        post_flow(
            self.ledger,
            plan.day,
            MEMO_TOPUP,
            issuer,
            credits["amount_fen"][:n_top],
            self.participants,
        )
        charged = ~cols["declined"] & (cols["device_refused"] == 0)
        # Only Nantong cards' purses are modelled; other issuers' fares arrive like QR money.
        post_fares(
            self.ledger,
            plan.day,
            cols["issuer"][charged],
            np.where(cols["ntcard"][charged], MC_CARD, MC_QR),
            cols["amount_fen"][charged],
            self.participants,
        )
        purse = plan.purse
        post_flow(
            self.ledger,
            plan.day,
            MEMO_PURSE,
            np.full(len(purse["row"]), self.issuer_code),
            np.where(purse["accepted"], purse["amount_fen"], 0),
            self.participants,
        )
        price = self.world.scenario.card_sales.price_fen * len(plan.sales["row"])
        if price:
            self.ledger.post(
                plan.day,
                f"bank:{self.world.scenario.output.issuer_id}",
                f"revenue:{self.world.scenario.output.issuer_id}",
                price,
                "card_sale_fee",
            )

    # ----------------------------------------------------------------- clearing
    def _collect_uploads(self, cutoff_s: int) -> UploadedRecords:
        """Records uploaded before ``cutoff_s`` not yet in a batch, plus resent batches."""
        parts, sources = [], []
        self._keep_resends()
        due = [r for r in self.pending_resends if r[2] < cutoff_s]
        resend_keys = {(dev, batch) for dev, batch, _at in due}
        found: set[tuple[int, int]] = set()
        for day, plan in sorted(self.open_plans.items()):
            cols = plan.cols
            if "declined" not in cols:
                continue  # today's records are final only once the day's balances are applied
            take = (
                ~cols["submitted"] & (cols["uploaded_at"] >= 0) & (cols["uploaded_at"] < cutoff_s)
            )
            idx = np.flatnonzero(take)
            again = np.zeros(0, np.int64)
            if resend_keys:
                keys = cols["agent_device_id"] * (1 << 24) + cols["upload_batch"]
                wanted = np.array([d * (1 << 24) + b for d, b in resend_keys], dtype=np.int64)
                again = np.flatnonzero(np.isin(keys, wanted) & (cols["upload_batch"] >= 0))
                hit = np.unique(keys[again]).tolist()
                found |= {(k >> 24, k & ((1 << 24) - 1)) for k in hit}
            cols["submitted"][idx] = True
            both = np.concatenate([idx, again])
            parts.append(self._records(cols, both))
            sources.append((day, idx, again))
        # A resent batch whose records were not found belongs to a day not yet closed (keep it)
        # or to a day already final (nothing left to resend).
        oldest_open = min(self.open_plans, default=0) * DAY_S
        self.pending_resends = [
            r
            for r in self.pending_resends
            if r[2] >= cutoff_s or ((r[0], r[1]) not in found and r[2] >= oldest_open)
        ]
        self._last_sources = sources
        if not parts:
            return self._records(None, np.zeros(0, np.int64))
        return UploadedRecords.concat(parts)

    def _keep_resends(self) -> None:
        """Remember resent batches (a lost ack made the device upload them twice)."""
        log = self.upload_log.to_arrays()
        for i in np.flatnonzero(log["resend"]).tolist():
            key = (
                int(log["device_id"][i]),
                int(log["upload_batch_id"][i]),
                int(log["uploaded_at"][i]),
            )
            if key not in self._resends_seen:
                self._resends_seen.add(key)
                self.pending_resends.append(key)

    def _records(self, cols, idx: np.ndarray) -> UploadedRecords:
        if cols is None:
            z = np.zeros(0, np.int64)
            return UploadedRecords(z, z, z, z, z, z, z, z, z, z, z, z, np.zeros(0, bool))
        pop = self.world.population
        return UploadedRecords(
            tx_id=cols["tx_id"][idx],
            card=pop.card_id[cols["row"][idx]],
            card_counter=cols["card_counter"][idx],
            device=cols["device"][idx],
            device_serial=cols["device_serial"][idx],
            timestamp_s=cols["t_s"][idx] + (cols["tx_id"][idx] >> 24) * DAY_S,
            amount_fen=cols["amount_fen"][idx],
            list_fare_fen=cols["list_fare_fen"][idx],
            issuer=cols["issuer"][idx],
            acquirer=cols["acquirer"][idx],
            mode=cols["mode"][idx],
            medium_class=medium_class_of(cols["medium"][idx]),
            declined=cols["declined"][idx],
        )

    def _apply_clearing(self, result: ClearingResult) -> None:
        pos = 0
        for day, idx, again in self._last_sources:
            cols = self.open_plans[day].cols
            for rows in (idx, again):  # originals first: a resent copy never overrides them
                k = len(rows)
                status = result.status[pos : pos + k]
                cleared = status == CLEARED
                rejected = (status == REJECTED) & (cols["status"][rows] == PENDING)
                cols["status"][rows[rejected]] = REJECTED
                cols["reason"][rows[rejected]] = result.reason[pos : pos + k][rejected]
                done = rows[cleared]
                cols["status"][done] = CLEARED
                cols["reason"][done] = 0
                cols["fee_fen"][done] = result.fee_fen[pos : pos + k][cleared]
                cols["clearing_batch_id"][done] = result.batch_id[pos : pos + k][cleared]
                cols["settle_day"][done] = result.settle_day
                pos += k
        post_clearing(self.ledger, result.day, result.pairs, self.participants)
        self._record_membership(result)
        check_positions(
            np.full(len(result.positions.participant), result.positions.settle_day),
            result.positions.participant,
            result.positions.position_fen,
            self.participants.ids,
        )
        lag_day = result.settle_day
        self.settlements_due.setdefault(lag_day, []).append(result.positions)
        if len(result.refunds):
            # The batch runs after its day has closed: refunds are paid on T+lag, at the earliest
            # on the day the batch runs.
            pay_day = max(lag_day, result.day + 1)
            self.refunds_due.setdefault(pay_day, []).append(result.refunds)
            self.stats.add("refund_orders", len(result.refunds))
        self.stats.add("clearing_batches", len(result.batches))
        self._settle_due(result.day + 1)
        self.emit("clearing_batches", result.day, batch_columns(result.batches))
        self._flush_open_plans(final=False)

    def _settle_due(self, today: int) -> None:
        for settle_day in sorted(d for d in self.settlements_due if d <= today):
            for positions in self.settlements_due.pop(settle_day):
                if len(positions.participant):
                    post_settlement(self.ledger, settle_day, positions, self.participants)
                    self.emit(
                        "settlements", settle_day, _position_cols(positions, self.participants)
                    )

    def _flush_open_plans(self, final: bool) -> None:
        """Emit days whose records are all resolved (or everything at the end of the run)."""
        for day in sorted(self.open_plans):
            plan = self.open_plans[day]
            if not final and (plan.cols["status"] == PENDING).any():
                break  # keep day order in the output
            cols = plan.cols
            members = self.batch_membership.pop(day, [])
            check_tap_status(
                cols["tx_id"],
                cols["status"],
                cols["amount_fen"],
                np.concatenate([t for t, _ in members] or [np.zeros(0, np.int64)]),
                np.concatenate([b for _, b in members] or [np.zeros(0, np.int64)]),
            )
            self.final_days.add(day)
            self.emit("transactions", day, cols)
            self.stats.add("cleared", int((cols["status"] == CLEARED).sum()))
            self.stats.add("rejected", int((cols["status"] == REJECTED).sum()))
            self.stats.add("pending", int((cols["status"] == PENDING).sum()))
            del self.open_plans[day]

    def _record_membership(self, result: ClearingResult) -> None:
        """Keep the batches' own lists of cleared taps for the exactly-once check."""
        tx = result.cleared_tx_id
        batch = result.cleared_batch_id
        tap_day = tx >> 24
        for day in np.unique(tap_day).tolist():
            sel = tap_day == day
            if day in self.final_days:
                raise InvariantViolation(
                    "tap_exactly_once",
                    0,
                    f"clearing day {result.day}, tap day {day}",
                    f"{int(sel.sum())} tap(s) cleared after their day was final",
                )
            self.batch_membership.setdefault(day, []).append((tx[sel], batch[sel]))

    def _check_run_invariants(self) -> None:
        outstanding = sum(len(r) for due in self.refunds_due.values() for r in due)
        self.stats.add("refunds_outstanding", outstanding)
        ordered = self.stats.totals.get("refund_orders", 0)
        executed = self.stats.totals.get("refunds_executed", 0)
        if executed + outstanding != ordered:
            raise InvariantViolation(
                "refunds_accounted",
                0,
                "end of run",
                f"{ordered} refund orders but {executed} executed and {outstanding} outstanding",
            )
        if self.batch_membership:
            raise InvariantViolation(
                "tap_exactly_once",
                0,
                f"tap days {sorted(self.batch_membership)}",
                "batches cleared taps of days that never produced records",
            )
        self.ledger.check()

    # ----------------------------------------------------------------- outputs
    def _emit_services(self, plan: DayPlan, visits, credits, credit_bal) -> None:
        day = plan.day
        pop = self.world.population
        n_top = int(credits["n_topups"][0])
        rows = credits["row"][:n_top]
        self.emit(
            "topups",
            day,
            {
                "row": rows,
                "t_s": credits["t_s"][:n_top],
                "amount_fen": credits["amount_fen"][:n_top],
                "channel": credits["channel"][:n_top],
                "outlet": credits["outlet"][:n_top],
                "balance_before_fen": credit_bal["balance_before_fen"][:n_top],
                "balance_after_fen": credit_bal["balance_after_fen"][:n_top],
                "card_type": pop.card_type[rows],
                "region": pop.region[rows],
            },
        )
        self.emit("card_sales", day, dict(plan.sales))
        self.emit("outlet_visits", day, visits["results"].to_arrays())

    def _emit_kpis(self, plan: DayPlan, visits, credits, day_figures: dict[str, int]) -> None:
        cols = plan.cols
        res = visits["results"]
        top = credits["channel"][: int(credits["n_topups"][0])]
        served = res.outcome == SERVED
        kpis = {
            "riders": plan.stats["riders"],
            "taps": plan.n,
            **day_figures,  # transactions and spend as calibration counts them (sim/metrics.py)
            "declined_taps": int(cols["declined"].sum()),
            "topups": len(top),
            "topups_outlet": int((top == TOPUP_OUTLET).sum()),
            "topup_fen": int(credits["amount_fen"][: len(top)].sum()),
            "card_sales": len(plan.sales["row"]),  # after unserved buyers were deferred
            "duplicate_deductions": plan.stats["duplicate_deductions"],
            "reader_outage_taps": plan.stats["reader_outage_taps"],
            "outlet_mean_wait_s": float(res.wait_s[served].mean()) if served.any() else 0.0,
            "outlet_left_closed": int((res.outcome == LEFT_CLOSED).sum()),
            "purse_spend_fen": int(plan.purse["amount_fen"][plan.purse["accepted"]].sum()),
        }
        self.model.kpis = kpis
        self.model.datacollector.collect(self.model)
        for name, value in kpis.items():
            if name != "outlet_mean_wait_s":
                self.stats.add(name, value)
        self.emit("daily_kpis", plan.day, {k: np.array([v]) for k, v in kpis.items()})


def _position_cols(positions, participants: Participants) -> dict[str, np.ndarray]:
    return {
        "participant": positions.participant.astype(np.int64),
        "role": participants.role[positions.participant],
        "position_fen": positions.position_fen,
    }


__all__ = ["Engine", "InvariantViolation", "RunStats"]
