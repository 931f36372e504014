"""What the engine publishes, and the bus that hands it to subscribers.

Monitoring is kept out of the engine (STYLE.md, after SimPy): the engine and its shards publish
typed events; the Parquet writer, the KPI collector, the progress display and stream sinks
subscribe. Events carry columns (numpy arrays), never one Python object per record.

Order of the events of day d, as a stream consumer sees them:

    at the cut-off (02:00), the clearing run of clearing day d-1:
      BatchCleared(d-1)  every node's batch rows and the new status of every tap decided (TapStatus)
      SettlementDone(s)  every node's book of settlement date s, when its positions are paid
                         (s is the day paid: later than the date if a deposit fell short)
      DepositEvents(d)   deposit calls, money in, deferred and late settlements of day d
      TapsFinal(d')      every tap of day d' has its final status (per city): the day's records
    whenever the clock reaches them:
      IncidentStarted / IncidentEnded   (sim/incidents.py)
    at 23:59:59, for each city (shard) in turn:
      DaySettled(d)      the day's records: taps with fares and balances (status pending, or
                         rejected by a full device buffer), top-ups, card sales, outlet visits
      UploadsSent(d)     the devices' upload batches of day d
    then:
      DayClosed(d)       the day's KPIs, all cities together (the DataCollector's row)
    at the end of the run: RunFinished (the ledger, once every invariant has been checked)

A subscriber is any callable taking one event; it picks the types it wants (``match`` or
``isinstance``). Subscribers must not change an event's arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class DaySettled:
    """A day's records once its balances are applied (time: just before midnight)."""

    day: int
    taps: Any  # sim.taps.TapTable, SETTLED: status pending or rejected (device buffer full)
    topups: Columns  # credits that reached cards: top-ups and value loaded at sale
    card_sales: Columns
    outlet_visits: Columns
    purse: Columns  # non-transit purse payments (row, t_s, amount_fen, accepted)
    stats: dict[str, int] = field(default_factory=dict)  # behaviour counts of the day
    shard: int = 0  # the city whose records these are
    # Card taps the reader took no fare from (sim/city_list.py REFUSAL_COLUMNS, plus the card's
    # issuer and the line's acquirer): refused by the city list, or declined for balance.
    refusals: Columns = field(default_factory=dict)
    # Social-security card entries at culture venues (sim/social_security.py).
    venue_entries: Columns = field(default_factory=dict)


@dataclass(frozen=True)
class UploadsSent:
    """The devices' upload batches of a day (one row per batch sent, resends included)."""

    day: int
    uploads: Columns
    shard: int = 0


@dataclass(frozen=True)
class TapStatus:
    """New clearing status of taps (a later state change of records already published)."""

    shard: np.ndarray  # int64, the city whose taps they are
    tap_day: np.ndarray  # int64, day the tap happened
    tx_id: np.ndarray
    status: np.ndarray  # sim.codes CLEARED / REJECTED
    reason: np.ndarray
    fee_fen: np.ndarray
    clearing_batch_id: np.ndarray
    settle_day: np.ndarray


@dataclass(frozen=True)
class BatchCleared:
    """The clearing network ran clearing day ``day`` (every node's batches of the day)."""

    day: int
    batches: Columns  # one row per batch (sim.clearing.BatchRecord), each node hash-chained
    taps: TapStatus
    # The refunds this clearing ordered (duplicate deductions it rejected, the service desk's),
    # paid on a later day: sim.clearing.RefundOrders.columns (transaction_id, kind, issuer,
    # acquirer, amount_fen, pay_day, ...), the clearing's first, then the desk's.
    refunds: Columns = field(default_factory=dict)

    @property
    def refund_orders(self) -> int:
        """How many refunds were ordered."""
        return len(self.refunds.get("transaction_id", ()))

    @property
    def refund_orders_fen(self) -> int:
        """What the refunds ordered pay back."""
        return int(np.sum(self.refunds["amount_fen"])) if self.refund_orders else 0


@dataclass(frozen=True)
class SettlementDone:
    """Net positions paid on ``settle_day`` (they sum to zero)."""

    settle_day: int
    positions: Columns  # every node's book: node, participant (counterparty), role, position_fen


@dataclass(frozen=True)
class DepositEvents:
    """Settlement-deposit events of ``day`` (sim/deposits.py): calls, money in, settlements
    deferred and paid late (columns day, participant, kind, amount_fen, settle_day)."""

    day: int
    events: Columns


@dataclass(frozen=True)
class TapsFinal:
    """Every tap of ``day`` has its final status: the day's complete tap records."""

    day: int
    taps: Any  # sim.taps.TapTable, FINAL
    shard: int = 0
    # The day's cross-city flows (sim.cross_city.day_flows), computed once where the records
    # are, for both the writer and the run's cross-city measures.
    flows: Columns = field(default_factory=dict)


@dataclass(frozen=True)
class IncidentStarted:
    """An incident of the scenario's timeline begins (at its start time on the clock)."""

    shard: int
    code: int  # position in the city's incidents list
    incident: Any  # sim.incidents.Incident


@dataclass(frozen=True)
class IncidentEnded:
    """An incident is over."""

    shard: int
    code: int
    incident: Any


@dataclass(frozen=True)
class DayClosed:
    """A simulated day is over; ``kpis`` is its row of daily KPIs (full-scale figures, see
    sim/metrics.py); ``tap_records`` counts the tap records actually simulated that day."""

    day: int
    kpis: dict[str, float]
    tap_records: int = 0


@dataclass(frozen=True)
class RunFinished:
    """The run is over and its invariants hold; ``ledger`` is the complete journal."""

    days: int
    ledger: Any  # sim.ledger.Ledger


Event = (
    DaySettled
    | UploadsSent
    | BatchCleared
    | SettlementDone
    | DepositEvents
    | TapsFinal
    | IncidentStarted
    | IncidentEnded
    | DayClosed
    | RunFinished
)
Subscriber = Callable[[Event], None]


class EventBus:
    """Hands each published event to every subscriber, in the order they subscribed."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        """Add a subscriber (called with every later event)."""
        self._subscribers.append(subscriber)

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber now."""
        for subscriber in self._subscribers:
            subscriber(event)


def concat_status(parts: list[TapStatus]) -> TapStatus:
    """Status changes of several shards as one (one shard's own, not a copy: each shard's are
    built for this and kept nowhere else)."""
    if len(parts) == 1:
        return parts[0]
    names = [f.name for f in fields(TapStatus)]
    z = np.zeros(0, np.int64)
    return TapStatus(**{n: np.concatenate([getattr(p, n) for p in parts] or [z]) for n in names})
