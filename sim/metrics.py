"""Run-level metrics for calibration and reports, gathered day by day from the engine's arrays.

Everything is aggregated as it happens (a few numpy reductions per day), so a year at full scale
needs no second pass over the outputs. Definitions (also used by the calibration report):

- transactions: fare records acquired in Nantong that were not declined — bus single taps, metro
  exits and incomplete metro entries — by Nantong cards and by QR codes (笔); visitors' own
  cards are other issuers' business and are left out, as in the published tables;
- spend by card type: fares charged in Nantong to Nantong stored-value cards, by card type;
- spend by QR channel: fares paid by QR in Nantong, by channel (the published channel table);
- taps in other cities: Nantong cardholders' boardings acquired elsewhere, by home region;
- recharge: value loaded onto cards (top-ups, incl. value loaded at sale), not refunds;
- weekly riders: for each complete simulated week, cards with at least one tap that week, divided
  by cards in stock (issued) and by cards still in use (holder alive, card not abandoned).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.codes import CARD_TYPES, MEDIA, STORED_VALUE_MEDIA, TAP_ENTRY
from sim.day import TOPUP_ONLINE, TOPUP_OUTLET, DayPlan

ELDERLY = (CARD_TYPES.index("longevity"), CARD_TYPES.index("love"))


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

    def observe_day(self, world, plan: DayPlan, credits: dict[str, np.ndarray]) -> dict[str, int]:
        """Add one finished day (balances applied); returns the day's transactions and spend
        under the same definitions, for the daily KPIs."""
        pop = world.population
        c = plan.cols
        ok = ~c["declined"] & (c["device_refused"] == 0)
        local_tap = c["city"] == 0
        local_holder = pop.home_city[c["row"]] == 0
        self.taps_by_home_region += np.bincount(
            pop.region[c["row"][ok & local_holder]], minlength=self.n_regions
        )
        self.taps_away_by_home_region += np.bincount(
            pop.region[c["row"][ok & local_holder & ~local_tap]], minlength=self.n_regions
        )
        # The published figures are the Nantong system's view: taps acquired in Nantong.
        # Visitors' own cards are other issuers' business: not in Nantong's published tables.
        ok &= local_tap & (c["ntcard"] | ~np.isin(c["medium"], list(STORED_VALUE_MEDIA)))
        fare_row = ok & ((c["kind"] != TAP_ENTRY) | c["incomplete"])
        card_type = pop.card_type[c["row"]]
        is_card = c["ntcard"]
        amount = np.where(ok, c["amount_fen"], 0)
        self.transactions += int(fare_row.sum())
        self.taps += int(ok.sum())
        self.elderly_taps += int((ok & np.isin(card_type, ELDERLY)).sum())
        self.taps_by_card_type += np.bincount(card_type[ok], minlength=len(CARD_TYPES))
        self.spend_by_card_type += np.bincount(
            card_type[is_card], weights=amount[is_card], minlength=len(CARD_TYPES)
        ).astype(np.int64)
        self.spend_by_medium += np.bincount(
            c["medium"], weights=amount, minlength=len(MEDIA)
        ).astype(np.int64)
        self.spend_by_region += np.bincount(
            world.network.lines.region[c["line"]], weights=amount, minlength=self.n_regions
        ).astype(np.int64)

        self.purse_spend_fen += int(plan.purse["amount_fen"][plan.purse["accepted"]].sum())
        n_top = int(credits["n_topups"][0])
        rows = credits["row"][:n_top]
        amounts = credits["amount_fen"][:n_top]
        self.recharge_fen += int(amounts.sum())
        self.topups += n_top
        self.topups_outlet += int((credits["channel"][:n_top] == TOPUP_OUTLET).sum())
        self.topups_online += int((credits["channel"][:n_top] == TOPUP_ONLINE).sum())
        self.recharge_by_region += np.bincount(
            pop.region[rows], weights=amounts, minlength=self.n_regions
        ).astype(np.int64)
        sold = plan.sales["row"]
        self.cards_sold += len(sold)
        self.sales_by_region += np.bincount(pop.region[sold], minlength=self.n_regions)
        self.duplicate_deductions += plan.stats["duplicate_deductions"]

        self._rode_this_week[c["row"][ok]] = True
        if (plan.day + 1) % 7 == 0:
            self._close_week(pop, plan.day)
        return {
            "fare_transactions": int(fare_row.sum()),
            "card_spend_fen": int(amount[is_card].sum()),
            "qr_spend_fen": int(amount[~np.isin(c["medium"], list(STORED_VALUE_MEDIA))].sum()),
        }

    def _close_week(self, pop, last_day: int) -> None:
        issued = (pop.issue_day <= last_day) & (pop.home_city == 0)
        live = issued & (pop.end_day > last_day)
        rode = self._rode_this_week
        self.weekly_share_of_stock.append(float(rode[issued].sum() / max(issued.sum(), 1)))
        self.weekly_share_of_live.append(float(rode[live].sum() / max(live.sum(), 1)))
        self._rode_this_week[:] = False
