"""The one KPI computation of a run: daily KPIs, run totals and calibration aggregates.

``KpiCollector`` subscribes to the engine's events (sim/events.py). From each day's records it
computes the day's KPI row (what the Mesa DataCollector keeps and ``daily_kpis`` holds), adds it
to the run totals (the CLI summary, run_meta.json) and to the calibration aggregates
(``RunMetrics``). Everything is aggregated as it happens (a few numpy reductions per day), so a
year at full scale needs no second pass over the outputs. Definitions (also used by the
calibration report):

- transactions: fare records acquired in the home city that were not declined — bus single
  taps, metro exits and incomplete metro entries — by its cards and by QR codes (笔); visitors'
  own cards are other issuers' business and are left out, as in the published tables;
- card transactions by card type: the transactions paid with the home city's cards (the
  published "taps with 长寿卡 and 爱心卡" are those of the two elderly types);
- spend by card type: fares charged in the home city to its stored-value cards, by card type;
- spend by QR channel: fares paid by QR in the home city, by channel (the published channel table);
- taps in other cities: the home city's cardholders' boardings acquired elsewhere, by home region;
- recharge: value loaded onto cards (top-ups, incl. value loaded at sale), not refunds;
- weekly riders: for each complete simulated week, cards with at least one tap that week, divided
  by cards in stock (issued) and by cards still in use (holder alive, card not abandoned).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.outlet import LEFT_CLOSED, SERVED
from sim.codes import (
    CARD_TYPES,
    CLEARED,
    MEDIA,
    PENDING,
    REJECTED,
    TAP_ENTRY,
    is_elderly,
    is_stored_value,
)
from sim.day import TOPUP_ONLINE, TOPUP_OUTLET
from sim.deposits import CALL, DEFERRED, PAID_LATE
from sim.events import BatchCleared, DaySettled, DepositEvents, TapsFinal
from sim.population import HOME_CITY, derived

#: The daily KPIs, in the order of the ``daily_kpis`` table and the DataCollector's columns.
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
#: Daily KPIs that are not summed into the run totals (a mean of means means nothing).
_NOT_SUMMED = frozenset({"outlet_mean_wait_s"})
#: Counts of the day's records kept in the totals besides the KPIs.
_DAY_COUNTS = (
    "card_sales_deferred",
    "refunds_executed",
    "refunds_fen",
    "refunds_other_issuers",
    "card_not_accepted",
)


class KpiCollector:
    """Subscriber computing each day's KPIs once; keeps run totals and calibration metrics.

    ``shards`` lists each city's (world, run state); a multi-city run's daily row sums the
    cities' rows (the outlet wait is the mean over every served visit). A city simulated at a
    scale below 1 counts with its expansion weight 1/scale (counts and fen rounded), so the
    daily KPIs and their totals are full-scale figures; ``taps`` (records written) and the
    calibration aggregates (``RunMetrics``) are what was simulated."""

    def __init__(self, shards) -> None:
        self.worlds = [world for world, _ in shards]
        self.shard_metrics = [
            RunMetrics(len(world.region_ids), len(world.population)) for world in self.worlds
        ]
        # Read-only here: each city's sale days, for the weekly cards-in-stock shares.
        self._sale_day = [state.cards.sale_day for _, state in shards]
        self.totals: dict[str, int] = {}
        self.taps = 0
        self.day_records = 0  # tap records of the last closed day, as simulated
        self.days = 0
        self._rows: dict[int, list[tuple[dict[str, float], int, int]]] = {}
        # Figures of a shard run on a worker, computed there (sim/distributed.py): by (day, shard).
        self.remote_figures: dict[tuple[int, int], dict[str, int]] = {}
        # Each city's expansion weight: a city simulated at scale s counts 1/s times.
        self.weights = [1.0 / world.scenario.scale for world in self.worlds]

    @property
    def metrics(self) -> RunMetrics:
        """Calibration aggregates of the first city."""
        return self.shard_metrics[0]

    def __call__(self, event) -> None:
        if isinstance(event, DaySettled):
            self._rows.setdefault(event.day, []).append(self._day_row(event))
        elif isinstance(event, DepositEvents):
            kind = event.events["kind"]
            self._add("deposit_calls", int((kind == CALL).sum()))
            self._add("settlements_deferred", int((kind == DEFERRED).sum()))
            self._add("settlements_paid_late", int((kind == PAID_LATE).sum()))
        elif isinstance(event, BatchCleared):
            self._add("refund_orders", event.refund_orders)
            self._add("refund_orders_fen", event.refund_orders_fen)
            self._add("clearing_batches", len(event.batches["batch_id"]))
        elif isinstance(event, TapsFinal):
            status = event.taps.status
            self._add("cleared", int((status == CLEARED).sum()))
            self._add("rejected", int((status == REJECTED).sum()))
            self._add("pending", int((status == PENDING).sum()))

    def close_day(self, day: int) -> dict[str, float]:
        """The KPI row of a settled day (all cities, each expanded by its weight), added to
        the totals."""
        parts = [(part, n, self.weights[shard]) for part, n, shard in self._rows.pop(day)]
        self.day_records = sum(part["taps"] for part, _, _ in parts)
        row = {name: _expanded(parts, name) for name in KPI_NAMES}
        served = sum(n * w for _, n, w in parts)
        waited = sum(part["outlet_mean_wait_s"] * n * w for part, n, w in parts)
        row["outlet_mean_wait_s"] = waited / served if served else 0.0
        for name, value in row.items():
            if name not in _NOT_SUMMED:
                self._add(name, value)
        self.days += 1
        return row

    def end_of_run(self, refunds_outstanding: int, refunds_outstanding_fen: int) -> None:
        """What is only known at the end of the run: the refund orders whose payment date is
        after the period (how many, and what they owe)."""
        self._add("refunds_outstanding", refunds_outstanding)
        self._add("refunds_outstanding_fen", refunds_outstanding_fen)

    def _add(self, name: str, value) -> None:
        self.totals[name] = self.totals.get(name, 0) + int(value)

    def _day_row(self, event: DaySettled) -> tuple[dict[str, float], int]:
        taps = event.taps
        self.taps += len(taps)
        shard = event.shard
        figures = self.remote_figures.pop((event.day, shard), None)
        if figures is None:
            figures = self.shard_metrics[shard].observe_day(
                self.worlds[shard], self._sale_day[shard], event
            )
        visits = event.outlet_visits
        served = visits["outcome"] == SERVED
        channel = event.topups["channel"]
        purse = event.purse
        for name in _DAY_COUNTS:
            self._add(name, event.stats.get(name, 0))
        row = {
            "riders": event.stats["riders"],
            "taps": len(taps),
            **figures,  # transactions and spend as calibration counts them (RunMetrics)
            "declined_taps": int(taps.declined.sum()),
            "topups": len(channel),
            "topups_outlet": int((channel == TOPUP_OUTLET).sum()),
            "topup_fen": int(event.topups["amount_fen"].sum()),
            "card_sales": len(event.card_sales["row"]),  # after unserved buyers were deferred
            "duplicate_deductions": event.stats["duplicate_deductions"],
            "reader_outage_taps": event.stats["reader_outage_taps"],
            "outlet_mean_wait_s": float(visits["wait_s"][served].mean()) if served.any() else 0.0,
            "outlet_left_closed": int((visits["outcome"] == LEFT_CLOSED).sum()),
            "purse_spend_fen": int(purse["amount_fen"][purse["accepted"]].sum()),
        }
        return row, int(served.sum()), shard


def _expanded(parts: list[tuple[dict[str, float], int, float]], name: str) -> float:
    """A KPI summed over the cities, each times its expansion weight (whole numbers stay
    whole; every weight 1 gives the plain sum)."""
    if all(w == 1.0 for _, _, w in parts):
        return sum(part[name] for part, _, _ in parts)
    total = sum(part[name] * w for part, _, w in parts)
    return (
        int(round(total))
        if all(isinstance(p[name], int | np.integer) for p, _, _ in parts)
        else total
    )


@dataclass
class RunMetrics:
    """Accumulators over a run (int64 fen and counts)."""

    n_regions: int
    n_cards: int
    transactions: int = 0
    taps: int = 0
    elderly_taps: int = 0
    spend_by_card_type: np.ndarray = field(default=None)  # type: ignore[assignment]
    spend_by_medium: np.ndarray = field(default=None)  # type: ignore[assignment]
    taps_by_card_type: np.ndarray = field(default=None)  # type: ignore[assignment]
    # transactions (笔) paid with the home city's cards, by card type; the rest are QR codes
    card_transactions_by_card_type: np.ndarray = field(default=None)  # type: ignore[assignment]
    spend_by_region: np.ndarray = field(default=None)  # type: ignore[assignment]
    recharge_by_region: np.ndarray = field(default=None)  # type: ignore[assignment]
    sales_by_region: np.ndarray = field(default=None)  # type: ignore[assignment]
    taps_by_home_region: np.ndarray = field(default=None)  # type: ignore[assignment]
    taps_away_by_home_region: np.ndarray = field(default=None)  # type: ignore[assignment]
    recharge_fen: int = 0
    purse_spend_fen: int = 0
    topups: int = 0
    topups_outlet: int = 0
    topups_online: int = 0
    cards_sold: int = 0
    duplicate_deductions: int = 0
    refunds: int = 0
    weekly_share_of_stock: list[float] = field(default_factory=list)
    weekly_share_of_live: list[float] = field(default_factory=list)
    _rode_this_week: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.spend_by_card_type = np.zeros(len(CARD_TYPES), np.int64)
        self.taps_by_card_type = np.zeros(len(CARD_TYPES), np.int64)
        self.card_transactions_by_card_type = np.zeros(len(CARD_TYPES), np.int64)
        self.spend_by_medium = np.zeros(len(MEDIA), np.int64)
        for name in (
            "spend_by_region",
            "recharge_by_region",
            "sales_by_region",
            "taps_by_home_region",
            "taps_away_by_home_region",
        ):
            setattr(self, name, np.zeros(self.n_regions, np.int64))
        self._rode_this_week = np.zeros(self.n_cards, dtype=bool)  # indexed by population row

    def observe_day(self, world, sale_day: np.ndarray, day: DaySettled) -> dict[str, int]:
        """Add one settled day; returns the day's transactions and spend under the same
        definitions, for the daily KPIs. ``sale_day`` is each card's (run) sale day."""
        pop = world.population
        c = day.taps
        # Every tap count and fen sum of the day comes from one grouping key: (card type,
        # holder region, tap class, medium, line region). Two bincounts over it replace a
        # dozen masked gathers and bincounts; sums over its axes give each figure.
        n_holder = self.n_regions + 1  # the holder's region, or "not a home-city holder"
        shape = (len(CARD_TYPES), n_holder, _N_CLASSES, len(MEDIA), self.n_regions)
        klass = _tap_class(c)
        key = np.take(_holder_keys(pop, self.n_regions), c.row).astype(np.intp)
        for value, size in ((klass, _N_CLASSES), (c.medium, len(MEDIA))):
            key *= size
            key += value
        key *= self.n_regions
        line_region = np.take(world.network.lines.region, c.line)  # faster on int32 lines
        # A code past its axis would land in another bin: refuse it, as the separate bincounts
        # did (two uint8 passes).
        if len(c) and (
            int(line_region.max()) >= self.n_regions
            or int(c.medium.max()) >= len(MEDIA)
            or int(line_region.min()) < 0
            or int(c.medium.min()) < 0
        ):
            raise ValueError("a line's region or a tap's medium code is out of range")
        key += line_region
        size = int(np.prod(shape))
        counts = np.bincount(key, minlength=size).reshape(shape).sum(axis=(3, 4))
        # Fares are summed on every row and only the accepted classes read (exact: integer fen
        # far below 2**53 in float64).
        fen = np.bincount(key, weights=c.amount_fen, minlength=size).astype(np.int64)
        fen = fen.reshape(shape)[:, :, _OK].sum(axis=1)  # card type, ok class, medium, region

        home = slice(0, self.n_regions)  # home-city holders, by region
        self.taps_by_home_region += counts[:, home, _BOARDED].sum(axis=(0, 2))
        self.taps_away_by_home_region += counts[:, home, _AWAY].sum(axis=0)
        ok_by_type = counts[:, :, _OK].sum(axis=(1, 2))
        fare_transactions = int(counts[:, :, _FARE].sum())
        self.transactions += fare_transactions
        self.taps += int(ok_by_type.sum())
        self.elderly_taps += int(ok_by_type[is_elderly(_CARD_TYPE_CODES)].sum())
        self.taps_by_card_type += ok_by_type
        self.card_transactions_by_card_type += counts[:, :, _FARE_CARD].sum(axis=1)
        card_fen = fen[:, _OK_CARD_IN_OK].sum(axis=(1, 2, 3))
        self.spend_by_card_type += card_fen
        by_medium = fen.sum(axis=(0, 1, 3))
        self.spend_by_medium += by_medium
        self.spend_by_region += fen.sum(axis=(0, 1, 2))

        self.purse_spend_fen += int(day.purse["amount_fen"][day.purse["accepted"]].sum())
        rows = day.topups["row"]
        amounts = day.topups["amount_fen"]
        channel = day.topups["channel"]
        self.recharge_fen += int(amounts.sum())
        self.topups += len(rows)
        self.topups_outlet += int((channel == TOPUP_OUTLET).sum())
        self.topups_online += int((channel == TOPUP_ONLINE).sum())
        self.recharge_by_region += np.bincount(
            pop.region[rows], weights=amounts, minlength=self.n_regions
        ).astype(np.int64)
        sold = day.card_sales["row"]
        self.cards_sold += len(sold)
        self.sales_by_region += np.bincount(pop.region[sold], minlength=self.n_regions)
        self.duplicate_deductions += day.stats["duplicate_deductions"]
        self.refunds += day.stats.get("refunds_executed", 0)

        self._rode_this_week[c.row[klass >= _OK.start]] = True
        if (day.day + 1) % 7 == 0:
            self._close_week(pop, sale_day, day.day)
        return {
            "fare_transactions": fare_transactions,
            "card_spend_fen": int(card_fen.sum()),
            "qr_spend_fen": int(by_medium[~is_stored_value(_MEDIUM_CODES)].sum()),
        }

    def _close_week(self, pop, sale_day: np.ndarray, last_day: int) -> None:
        issued = (sale_day <= last_day) & (pop.home_city == HOME_CITY)
        live = issued & (pop.end_day > last_day)
        self.weekly_share_of_stock.append(self._share_rode(issued))
        self.weekly_share_of_live.append(self._share_rode(live))
        self._rode_this_week[:] = False

    def _share_rode(self, cards: np.ndarray) -> float:
        """Share of ``cards`` (a mask over the population) that rode this week. Counts of
        masks, not of boolean-indexed copies of the population (a tenth of the time)."""
        return np.count_nonzero(self._rode_this_week & cards) / max(np.count_nonzero(cards), 1)


#: Tap classes of the KPI key (``_tap_class``): not accepted by the reader (declined for
#: balance or refused by a full device buffer); accepted in another city; accepted in the home
#: city on a visitor's own stored-value card (other issuers' business); then the home system's
#: accepted taps by (fare record?, home card?): not/not, not/card, fare/not, fare/card.
_N_CLASSES = 7
_AWAY = 1
_BOARDED = slice(1, _N_CLASSES)  # every accepted tap, wherever it was made
_OK = slice(3, _N_CLASSES)  # accepted taps of the home system's tables
_OK_CARD_IN_OK = [1, 3]  # within ``_OK``: the home city's cards
_FARE = slice(5, _N_CLASSES)
_FARE_CARD = 6
_CARD_TYPE_CODES = np.arange(len(CARD_TYPES))
_MEDIUM_CODES = np.arange(len(MEDIA))


def _tap_class(c) -> np.ndarray:
    """Each tap's class (uint8, see ``_N_CLASSES``), in a few uint8 passes."""
    u8 = np.uint8
    accepted = (~c.declined & (c.device_refused == 0)).view(u8)
    local = (c.city == 0).view(u8)  # taps in the home city (city code 0)
    home_system = (c.home_card | ~is_stored_value(c.medium)).view(u8)
    fare = ((c.kind != TAP_ENTRY) | c.incomplete).view(u8)
    ok_class = u8(3) + c.home_card.view(u8) + u8(2) * fare
    return accepted * (u8(1) + local * (u8(1) + home_system * (ok_class - u8(2))))


def _holder_keys(pop, n_regions: int) -> np.ndarray:
    """Per population row, card type * (n_regions + 1) + the holder's region (n_regions for a
    visitor): the population's part of the KPI key. Built once per population (it is read-only
    once the world is built), so a day gathers one column instead of three."""
    return derived(pop, ("kpi_holder_keys", n_regions), lambda: _build_holder_keys(pop, n_regions))


def _build_holder_keys(pop, n_regions: int) -> np.ndarray:
    if len(pop) and int(pop.card_type.max()) >= len(CARD_TYPES):
        raise ValueError(f"card type codes must be below {len(CARD_TYPES)}")
    home = pop.home_city == HOME_CITY
    if int(np.max(pop.region, where=home, initial=0)) >= n_regions:
        raise ValueError(f"home-city holders' regions must be below {n_regions}")
    region = np.where(home, pop.region, n_regions)
    keys = pop.card_type.astype(np.min_scalar_type(len(CARD_TYPES) * (n_regions + 1)))
    keys *= n_regions + 1
    keys += region.astype(keys.dtype)
    return keys
