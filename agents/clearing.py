"""Clearing nodes as agents, and the clearing network that runs them once a day.

Each clearing node (city exchange, provincial exchange, national centre) is a Mesa agent with its
own inbox, its own ``Clearer`` (duplicate screening, fees, a hash-chained log) and, per
settlement date, its own book. At the daily cut-off (e.g. 02:00) the network — the daily reduce
step of the run — puts every record the shards uploaded into the inbox of its acquirer's
exchange, lets each exchange clear its inbox, routes the cleared records up and down the
hierarchy to their issuers' exchanges (each node on the way logs them and takes its transit
fee: sim/clearing_network.py), posts the day to the ledger, tells the shards the status of
their records, and pays what falls due (T+n settlement).
"""

from __future__ import annotations

import dataclasses

import mesa
import numpy as np
import simpy

from sim import ids
from sim.clearing import (
    Clearer,
    ClearingResult,
    ClearingSettings,
    PairTotals,
    Participants,
    Positions,
    RefundOrders,
    UploadedRecords,
    batch_columns,
    post_clearing,
    post_settlement,
    verify_chain,
)
from sim.clearing_network import (
    ClearingTopology,
    Routing,
    Settlement,
    settlement_lags,
    transit_rates_bp,
)
from sim.codes import CLEARED
from sim.deposits import DepositDesk
from sim.events import BatchCleared, DepositEvents, EventBus, SettlementDone, concat_status
from sim.incidents import IncidentError
from sim.ledger import InvariantViolation, Ledger, check_positions

DAY_S = 86_400
#: Runs of one exchange up to which a delivery slices the records instead of gathering them.
_MAX_RUNS = 64


class ClearingNodeAgent(mesa.Agent):
    """One clearing node (数据交换机构): inbox, clearer with its hash chain, fees and books."""

    def __init__(self, model: mesa.Model, code: int, node_id: str, clearer: Clearer) -> None:
        super().__init__(model)
        self.code = code
        self.node_id = node_id
        self.clearer = clearer
        self.inbox: list[UploadedRecords] = []
        self.batches_run = 0

    def clear_inbox(self, day: int) -> tuple[UploadedRecords, ClearingResult]:
        """Clear what the node's acquirers uploaded and empty the inbox."""
        records = UploadedRecords.concat(self.inbox)
        self.inbox = []
        head = self.clearer.head
        result = self.clearer.clear_batch(day, records)
        verify_chain(result.batches, genesis=head)
        self.batches_run += 1
        return records, result


class ClearingNetworkAgent:
    """The clearing hierarchy of a run: one ``ClearingNodeAgent`` per node, run as the daily
    reduce step over the shards' uploads (see the module docstring). It drives the node agents
    on the clock; it is not a Mesa agent itself.

    Each shard offers ``collect_uploads(cutoff_s)``, ``apply_clearing(result)`` and
    ``flush_final_days(final)``.
    """

    def __init__(
        self,
        model: mesa.Model,
        env: simpy.Environment,
        participants: Participants,
        settings: ClearingSettings,
        *,
        ledger: Ledger,
        bus: EventBus,
        shards: list,
        transit_fee_bp: dict[str, int] | None = None,
        settlement_lag_days: dict[str, int] | None = None,
    ) -> None:
        self.env = env
        self.participants = participants
        self.settings = settings
        self.cutoff_hour = settings.batch_cutoff_hour
        self.ledger = ledger
        self.bus = bus
        self.shards = shards
        if transit_fee_bp is None:
            transit_fee_bp = transit_rates_bp(settings)
        if settlement_lag_days is None:
            settlement_lag_days = settlement_lags(settings)
        self.topology = ClearingTopology(
            participants, transit_fee_bp, settlement_lag_days, settings.settlement_lag_days
        )
        self.nodes = {
            int(code): ClearingNodeAgent(
                model,
                int(code),
                participants.ids[code],
                Clearer(settings, participants, code, int(self.topology.lag_days[code])),
            )
            for code in participants.of_role("clearing_node")
        }
        self.settlements_due: dict[int, list[Settlement]] = {}
        self.deposits = DepositDesk.with_incidents(
            settings, participants, [shard.world.incidents for shard in shards]
        )
        # Settlement dates that had to wait for deposit money (deferred, or due while an earlier
        # one waited): paid on the day the money is in, and reported paid late.
        self.deferred: set[int] = set()
        # The service desk's refund orders taken (shard, incident code), and their records
        # still pending at the last cut-off.
        # Desk refund incidents already given, (shard, code) -> the records they name.
        self._desk_seen: dict[tuple[int, int], np.ndarray] = {}
        self._desk_waiting = np.zeros(0, dtype=np.int64)

    def on_shards(self, method: str, args: list[tuple | None]) -> list:
        """``method`` on every shard with its own arguments, results in shard order (None for
        a shard whose arguments are None: it is not called). One after the other here; a
        distributed run (sim/distributed.py) calls its actors all at once."""
        return [
            None if a is None else getattr(shard, method)(*a)
            for shard, a in zip(self.shards, args, strict=True)
        ]

    def cutoff_of(self, clearing_day: int) -> int:
        """Absolute time of the cut-off that closes ``clearing_day``'s batch (next morning)."""
        return (clearing_day + 1) * DAY_S + self.cutoff_hour * 3600

    def batches(self, first_day: int, last_day: int):
        """SimPy process body: one clearing run per day from ``first_day`` to ``last_day``."""
        for day in range(first_day, last_day + 1):
            cutoff = self.cutoff_of(day)
            if cutoff > self.env.now:
                yield self.env.timeout(cutoff - self.env.now)
            self.clear(day, cutoff)

    def clear(self, day: int, cutoff_s: int) -> ClearingResult:
        """Clearing day ``day``: inboxes, node batches, routing, ledger, statuses, settlement."""
        collected = [shard.collect_uploads(cutoff_s) for shard in self.shards]
        self._deliver(UploadedRecords.concat(collected))
        records, result = self._clear_at_exchanges(day, cutoff_s)
        routing = self.topology.route(result.pairs, day)
        transit = self._log_transit(day, records, result, routing)
        statuses = self.on_shards(
            "apply_clearing", [(part,) for part in _records_by_shard(result, len(self.shards))]
        )
        pay_day = max(result.settle_day, result.day + 1)
        self._route_refunds(pay_day, result.refunds)
        desk = self._desk_refunds(cutoff_s, pay_day)
        ordered = (result.refunds, desk)
        post_clearing(self.ledger, day, result.pairs, self.participants, routing.fees)
        self._check_books(routing)
        batches = result.batches + transit
        refunds = [orders.columns(pay_day) for orders in ordered]
        self.bus.publish(
            BatchCleared(
                day,
                batch_columns(batches),
                concat_status(statuses),
                {name: np.concatenate([r[name] for r in refunds]) for name in refunds[0]},
            )
        )
        for settlement in routing.settlements:
            self.settlements_due.setdefault(settlement.settle_day, []).append(settlement)
        self.settle_due(day + 1)
        self.on_shards("flush_final_days", [(False,)] * len(self.shards))
        return result

    def _deliver(self, records: UploadedRecords) -> None:
        """Put each record into the inbox of its acquirer's exchange (the records keep their
        order within each). A shard's records come in long runs of one exchange (device by
        device): each inbox then gets its runs' slices joined, not a gather of its rows."""
        if not len(records):
            return
        exchange = self._exchanges(records.acquirer)
        step = (np.flatnonzero(exchange[1:] != exchange[:-1]) + 1).tolist()
        if len(step) > _MAX_RUNS:
            for code in np.flatnonzero(np.bincount(exchange)).tolist():
                self.nodes[code].inbox.append(records.take(np.flatnonzero(exchange == code)))
            return
        if not step:
            self.nodes[int(exchange[0])].inbox.append(records)
            return
        spans: dict[int, list[tuple[int, int]]] = {}
        for a, b in zip([0, *step], [*step, len(exchange)], strict=True):
            spans.setdefault(int(exchange[a]), []).append((a, b))
        for code in sorted(spans):
            self.nodes[code].inbox.append(records.take_spans(spans[code]))

    def _exchanges(self, acquirer: np.ndarray) -> np.ndarray:
        """The exchange (parent clearing node) of each record's acquirer. A code that is no
        participant's, or one without a parent (-1: only a clearing node at the top of the
        hierarchy has none, and no exchange above it takes its records), is refused naming
        ``records.acquirer``: indexing with it would wrap around or fail far from the cause."""
        participants = self.participants
        n_p = len(participants)
        if acquirer.min() < 0 or acquirer.max() >= n_p:
            raise ValueError(f"records.acquirer codes must be in [0, {n_p})")
        exchange = participants.parent[acquirer]
        if exchange.min() < 0:
            top = participants.ids[int(acquirer[np.argmin(exchange)])]
            raise ValueError(
                f"records.acquirer: {top} is a clearing node at the top of the hierarchy, not "
                "an acquirer (expected the code of the acquirer that took the record, whose "
                "exchange clears it)"
            )
        return exchange

    def _desk_refunds(self, cutoff_s: int, pay_day: int) -> RefundOrders:
        """The service desk's refund orders (``desk_refund`` incidents) given by this cut-off,
        with the records of earlier ones still pending then: the shards holding the records
        turn them into refunds paid with the clearing's own (``pay_day``). Returns them."""
        for i, shard in enumerate(self.shards):
            timeline = shard.world.incidents
            for k in timeline.of_kind("desk_refund"):
                if timeline.start_s[k] < cutoff_s and (i, k) not in self._desk_seen:
                    named = np.asarray(timeline.incidents[k].transactions, dtype=np.int64)
                    self._desk_seen[i, k] = named
                    self._desk_waiting = np.concatenate([self._desk_waiting, named])
        if not len(self._desk_waiting):
            return _concat_refunds(pay_day, [], by_desk=True)
        tx = self._desk_waiting
        owner = ids.record_shard(tx)
        foreign = tx[(tx < 0) | (owner >= len(self.shards))]
        if len(foreign):  # no shard would be asked: refused, never skipped in silence
            raise IncidentError(
                f"{self._desk_incident(foreign)}: transactions: {int(foreign[0])} is the id of "
                "a record of no city of this run (expected the transaction_id of a record in "
                "the transactions table)",
                foreign,
            )
        try:
            answers = self.on_shards(
                "desk_refund_orders", [(tx[owner == i],) for i in range(len(self.shards))]
            )
        except IncidentError as exc:
            raise IncidentError(f"{self._desk_incident(exc.records)}: {exc}", exc.records) from None
        self._desk_waiting = np.concatenate([pending for _, pending in answers])
        orders = _concat_refunds(pay_day, [o for o, _ in answers], by_desk=True)
        self._route_refunds(pay_day, orders)
        return orders

    def _desk_incident(self, records: tuple[int, ...]) -> str:
        """Which desk refund incident(s) named ``records``, as their place in the scenario."""
        named_by = [
            (i, k)
            for (i, k), named in self._desk_seen.items()
            if np.isin(named, np.asarray(records, dtype=np.int64)).any()
        ]
        places = []
        for i, k in named_by:
            world = self.shards[i].world
            city = f"city {world.scenario.name}, " if len(self.shards) > 1 else ""
            places.append(f"{city}incidents.{k} (id {world.incidents.incidents[k].id!r})")
        return "; ".join(dict.fromkeys(places)) or "incidents (desk_refund)"

    def _route_refunds(self, pay_day: int, refunds: RefundOrders) -> None:
        """Each refund of a simulated issuer's card goes to the shard holding the card (the
        issuer's, or the region's of a city split by region); refunds of issuers no shard
        simulates to the shard that acquired the record. The batch runs after its day has
        closed: refunds are paid on T+lag, at the earliest on the day the batch runs."""
        owner = ids.record_shard(refunds.source_tx_id)
        simulated = np.isin(refunds.issuer, [shard.issuer_code for shard in self.shards])
        owner[simulated] = ids.card_shard(refunds.card[simulated])
        mine = [_take_refunds(refunds, owner == i) for i in range(len(self.shards))]
        self.on_shards("order_refunds", [(pay_day, r) if len(r) else None for r in mine])

    def _clear_at_exchanges(
        self, day: int, cutoff_s: int
    ) -> tuple[dict[str, np.ndarray], ClearingResult]:
        """Each exchange clears its inbox, unless an incident has it down at the cut-off: then
        the inbox waits for its first cut-off after the outage (nothing lost, nothing cleared
        twice). Returns the cleared records' ids, issuers and acquirers and their results,
        merged in node order."""
        cleared: list[tuple[UploadedRecords, ClearingResult]] = []
        # Each shard's records held by an outage, (records, incident) in order: labelled once
        # all nodes are through, every shard at once (one round trip on Dask).
        marks: list[list[tuple[np.ndarray, int]]] = [[] for _ in self.shards]
        down = {code for code, node in self.nodes.items() if self._held(node, cutoff_s, marks)}
        for code in sorted(self.nodes):
            node = self.nodes[code]
            if not node.inbox or code in down:
                continue
            waiting = self._through_down_nodes(node, down, cutoff_s, marks)
            if node.inbox:
                cleared.append(node.clear_inbox(day))
            if waiting is not None:
                node.inbox = [waiting]
        self.on_shards("mark_incidents", [(m,) if m else None for m in marks])
        # What routing needs of the records cleared today, in node order.
        records = {
            name: np.concatenate([getattr(r, name) for r, _ in cleared] or [np.zeros(0, np.int64)])
            for name in ("tx_id", "issuer", "acquirer")
        }
        parts = [p for _, p in cleared]
        settle_day = day + self.settings.settlement_lag_days
        result = ClearingResult(
            day=day,
            settle_day=settle_day,
            tx_id=records["tx_id"],
            status=np.concatenate([p.status for p in parts] or [np.zeros(0, np.uint8)]),
            reason=np.concatenate([p.reason for p in parts] or [np.zeros(0, np.uint8)]),
            fee_fen=np.concatenate([p.fee_fen for p in parts] or [np.zeros(0, np.int64)]),
            batch_id=np.concatenate([p.batch_id for p in parts] or [np.zeros(0, np.int64)]),
            record_settle_day=np.concatenate(
                [p.record_settle_day for p in parts] or [np.zeros(0, np.int64)]
            ),
            refunds=_concat_refunds(day, [p.refunds for p in parts]),
            pairs=_concat_pairs([p.pairs for p in parts]),
            batches=tuple(b for p in parts for b in p.batches),
            positions=Positions(settle_day, np.zeros(0, np.int32), np.zeros(0, np.int64)),
        )
        return records, result

    def _held(self, node: ClearingNodeAgent, cutoff_s: int, marks: list[list]) -> bool:
        """Is ``node`` down at this cut-off? Its waiting records then carry the incident (added
        to each shard's ``marks``)."""
        down = False
        for i, shard in enumerate(self.shards):
            k = shard.world.incidents.down_at("clearing_node_outage", node.node_id, cutoff_s)
            if k < 0:
                continue
            down = True
            for part in node.inbox:
                mine = ids.record_shard(part.tx_id) == i
                if mine.any():
                    marks[i].append((part.tx_id[mine], k))
        return down

    def _through_down_nodes(
        self, node: ClearingNodeAgent, down: set[int], cutoff_s: int, marks: list[list]
    ) -> UploadedRecords | None:
        """Take out of ``node``'s inbox the records whose way to their issuer passes a node
        that is down (e.g. a provincial exchange): they wait for the first cut-off after the
        outage, all copies of a record together (one issuer-acquirer pair), so nothing is
        cleared twice. Returns them (None if none), their outage labels added to ``marks``."""
        if not down:
            return None
        records = UploadedRecords.concat(node.inbox)
        # One key per issuer-acquirer pair (issuer first, as a lexical sort of the pairs);
        # unique over it, not over the pairs' columns, which sorts a structured view (slow).
        n_p = len(self.participants)
        key = records.issuer.astype(np.int64) * n_p + records.acquirer
        pairs = np.unique(key)
        blocked_by = {
            (i, a): next(n for n in self.topology.path(i, a) if n in down)
            for i, a in zip((pairs // n_p).tolist(), (pairs % n_p).tolist(), strict=True)
            if any(n in down for n in self.topology.path(i, a))
        }
        if not blocked_by:
            return None
        owner = ids.record_shard(records.tx_id)
        blocked = np.zeros(len(records.tx_id), dtype=bool)
        labels: dict[tuple[int, int], np.ndarray] = {}  # (shard, incident) -> records to label
        for (issuer, acquirer), stop in blocked_by.items():
            here = key == issuer * n_p + acquirer
            blocked |= here
            stop_id = self.participants.ids[stop]
            for i, shard in enumerate(self.shards):
                k = shard.world.incidents.down_at("clearing_node_outage", stop_id, cutoff_s)
                if k >= 0:
                    mine = here & (owner == i)
                    labels[i, k] = labels.get((i, k), np.zeros(len(here), bool)) | mine
        for (i, k), mine in sorted(labels.items()):  # one label per shard and incident
            if mine.any():
                marks[i].append((records.tx_id[mine], k))
        node.inbox = [records.take(np.flatnonzero(~blocked))] if (~blocked).any() else []
        return records.take(np.flatnonzero(blocked))

    def _log_transit(self, day, records, result, routing: Routing) -> tuple:
        """Every node after the acquirer's exchange logs the records it passes on."""
        n_p = len(self.participants)
        pairs = result.pairs
        pair_key = pairs.issuer.astype(np.int64) * n_p + pairs.acquirer
        order = np.argsort(pair_key)
        # The records that travel (cleared, and their issuer is not a member of the acquirer's
        # exchange), each with its pair (an index into ``pairs``).
        parent = self.participants.parent
        issuer, acquirer = records["issuer"], records["acquirer"]
        travels = (result.status == CLEARED) & (parent[issuer] != parent[acquirer])
        moving = np.flatnonzero(travels)
        tx_moving = records["tx_id"][moving]
        pair_moving = np.zeros(len(moving), dtype=np.int64)
        if len(order) and len(moving):
            key = issuer[moving].astype(np.int64) * n_p + acquirer[moving]
            found = np.searchsorted(pair_key, key, sorter=order)
            pair_moving = order[np.minimum(found, len(order) - 1)]
        fee_at = dict(
            zip(
                zip(routing.fees.pair.tolist(), routing.fees.node.tolist(), strict=True),
                routing.fees.fee_fen.tolist(),
                strict=True,
            )
        )
        logged = []
        for hop in routing.hops:
            if hop.sender < 0:
                continue  # the acquirer's exchange logged these records as its own batches
            in_hop = np.zeros(len(pair_key), dtype=bool)
            in_hop[list(hop.pairs)] = True
            tx = tx_moving[in_hop[pair_moving]]
            gross = int(pairs.gross_fen[list(hop.pairs)].sum())
            fee = sum(fee_at[(k, hop.node)] for k in hop.pairs)
            node = self.nodes[hop.node]
            head = node.clearer.head
            batch = node.clearer.log_transit(day, self.participants.ids[hop.sender], tx, gross, fee)
            verify_chain([batch], genesis=head)
            logged.append(batch)
        return tuple(logged)

    def _check_books(self, routing: Routing) -> None:
        """On every settlement date the positions sum to zero, and so does every node's book."""
        for settlement in routing.settlements:
            positions = settlement.positions
            check_positions(
                np.full(len(positions.participant), positions.settle_day),
                positions.participant,
                positions.position_fen,
                self.participants.ids,
            )
            sums = settlement.books.sums(len(self.participants))
            if sums.any():
                node = int(np.flatnonzero(sums)[0])
                raise InvariantViolation(
                    "node_book_zero",
                    int(sums[node]),
                    f"settle day {positions.settle_day}, node {self.participants.ids[node]}",
                    "the node's positions against members, links and itself do not sum to zero",
                )

    def settle_due(self, today: int) -> None:
        """Pay every position whose settlement date has come (by ``today``), in date order, as
        far as the issuers' deposits cover them (sim/deposits.py): the first settlement a
        deposit cannot cover waits, and every later one with it."""
        desk = self.deposits
        arrived_today = desk.receive(self.ledger, today)
        for settle_day in sorted(d for d in self.settlements_due if d <= today):
            waiting = self.settlements_due[settle_day]
            while waiting:
                positions = waiting[0].positions
                if len(positions.participant):
                    short = desk.shortfalls(self.ledger, positions)
                    if short:
                        desk.defer(self.ledger, today, settle_day, short)
                        self.deferred.add(settle_day)
                        break
                    # Dated before today (T+0: its batch is cleared the next morning), it is
                    # posted on its date only if the deposit held the money then, without what
                    # came in today; else it is paid today, late (sim/deposits.py).
                    if (
                        settle_day < today
                        and settle_day not in self.deferred
                        and desk.shortfalls(self.ledger, positions, not_yet_in=arrived_today)
                    ):
                        self.deferred.add(settle_day)
                    self._pay(waiting[0], settle_day, today)
                waiting.pop(0)
            if waiting:
                # Every later settlement due by today waits behind this one: it too is paid
                # late, posted on the day it is paid (on its own date the deposit had already
                # been found short), and reported paid late; it has no deferral of its own.
                self.deferred.update(d for d in self.settlements_due if settle_day < d <= today)
                break
            del self.settlements_due[settle_day]
        desk.call_low(self.ledger, today)
        events = desk.drain()
        if len(events["day"]):
            self.bus.publish(DepositEvents(today, events))

    def has_waiting(self) -> bool:
        """Whether any node still holds records (an outage kept them from clearing), or a
        desk refund waits for its records' clearing."""
        return any(node.inbox for node in self.nodes.values()) or len(self._desk_waiting) > 0

    def settle_outstanding(self, last_settle_day: int) -> None:
        """After the period: settlements still waiting for deposit money are paid on the days
        the called money arrives, so none is left unpaid."""
        today = last_settle_day
        # Each waiting settlement is paid at most a call delay after the one before it. A date
        # can hold several (nodes settle on their own T+n), each with its own call and wait.
        waiting = sum(len(due) for due in self.settlements_due.values())
        limit = max(today, self.deposits.last_unpaid_day()) + (waiting + 1) * (
            self.settings.deposit_call_delay_days + 1
        )
        while self.settlements_due and today < limit:
            today += 1
            self.settle_due(today)
        if self.settlements_due:
            first = min(self.settlements_due)
            raise InvariantViolation(
                "settlements_paid", 0, f"settlement of day {first}",
                f"still unpaid on day {today}, after every deposit call has arrived",
            )  # fmt: skip

    def _pay(self, settlement: Settlement, settle_day: int, today: int) -> None:
        """Post a settlement: on its date, or today if it had to wait for deposit money."""
        late = settle_day in self.deferred
        paid_on = today if late else settle_day
        positions = settlement.positions
        post_settlement(self.ledger, paid_on, positions, self.participants)
        if late:
            self.deposits.paid_late(today, settle_day, positions)
        books = settlement.books
        self.bus.publish(
            SettlementDone(
                paid_on,
                {
                    "node": books.node.astype(np.int64),
                    "participant": books.counterparty.astype(np.int64),
                    "role": self.participants.role[books.counterparty],
                    "position_fen": books.position_fen,
                },
            )
        )


def _records_by_shard(result: ClearingResult, n_shards: int) -> list[ClearingResult]:
    """The per-record part of ``result`` for each shard (its own uploads), in shard order."""
    owner = ids.record_shard(result.tx_id)
    if n_shards == 1 and not (owner != 0).any():
        return [_records_of(result, None)]
    return [_records_of(result, np.flatnonzero(owner == i)) for i in range(n_shards)]


def _records_of(result: ClearingResult, rows: np.ndarray | None) -> ClearingResult:
    """The per-record part of ``result`` for records ``rows`` (one shard's uploads; None: all
    of them, the arrays shared, not copied)."""
    if rows is None:
        rows = slice(None)
    return dataclasses.replace(
        result,
        tx_id=result.tx_id[rows],
        status=result.status[rows],
        reason=result.reason[rows],
        fee_fen=result.fee_fen[rows],
        batch_id=result.batch_id[rows],
        record_settle_day=result.record_settle_day[rows],
        refunds=_take_refunds(result.refunds, np.zeros(len(result.refunds), dtype=bool)),
    )


def _take_refunds(refunds: RefundOrders, keep: np.ndarray) -> RefundOrders:
    names = ("source_tx_id", "first_tx_id", "card", "issuer", "acquirer", "medium_class")
    return RefundOrders(
        day=refunds.day,
        by_desk=refunds.by_desk,
        **{n: getattr(refunds, n)[keep] for n in (*names, "amount_fen")},
    )


def _concat_refunds(day: int, parts: list[RefundOrders], by_desk: bool = False) -> RefundOrders:
    names = ("source_tx_id", "first_tx_id", "card", "issuer", "acquirer", "medium_class")
    cols = {
        name: np.concatenate([getattr(p, name) for p in parts] or [np.zeros(0, np.int64)])
        for name in (*names, "amount_fen")
    }
    return RefundOrders(day=day, by_desk=by_desk, **cols)


def _concat_pairs(parts: list[PairTotals]) -> PairTotals:
    names = ("issuer", "acquirer", "node", "records", "gross_fen", "fee_fen", "net_fen")
    empty = {"issuer": np.int32, "acquirer": np.int32, "node": np.int32}
    return PairTotals(
        **{
            name: np.concatenate(
                [getattr(p, name) for p in parts] or [np.zeros(0, empty.get(name, np.int64))]
            )
            for name in names
        }
    )
