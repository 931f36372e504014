"""The policy lab's compare: a baseline against variants, replicated with common random numbers.

Each scenario's world is built once; replication ``r`` of every scenario runs with the same run
seed (``base seed + r``), so the baseline and a variant see the same people on the same days and
their difference is paired. A run's outcome is measured by a subscriber over its final tap
records (no files written); the report gives, for every measure, the baseline, the variant, the
mean paired difference and its 95% confidence interval (Student's t over the replications).

Measures (integer fen for money): taps, fare transactions, fare revenue, concession cost (fares
foregone: list fare minus amount, on taps in the home city), each also by card type and by hour.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from sim.codes import CARD_TYPES, TAP_ENTRY
from sim.events import TapsFinal
from sim.population import HOME_CITY

HOURS = 24


@dataclass
class OutcomeCollector:
    """Subscriber summing a run's final tap records into the compare's measures."""

    world: object
    totals: dict[str, float] = field(default_factory=dict)

    def __call__(self, event) -> None:
        if not isinstance(event, TapsFinal):
            return
        taps = event.taps
        pop = self.world.population
        home = taps.city == 0  # taps acquired in the home city
        charged = home & ~taps.declined & (taps.device_refused == 0)
        fare_row = charged & ((taps.kind != TAP_ENTRY) | taps.incomplete)
        card_type = pop.card_type[taps.row]
        hour = np.minimum(taps.t_s // 3600, HOURS - 1)
        foregone = np.where(charged, taps.list_fare_fen - taps.amount_fen, 0)
        revenue = np.where(charged, taps.amount_fen, 0)
        self._add("taps", int(charged.sum()))
        self._add("fare_transactions", int(fare_row.sum()))
        self._add("fare_revenue_fen", int(revenue.sum()))
        self._add("concession_cost_fen", int(foregone.sum()))
        self._add("home_card_taps", int((charged & (pop.home_city[taps.row] == HOME_CITY)).sum()))
        by_type_taps = np.bincount(card_type[charged], minlength=len(CARD_TYPES))
        by_type_cost = np.bincount(card_type, weights=foregone, minlength=len(CARD_TYPES))
        by_type_rev = np.bincount(card_type, weights=revenue, minlength=len(CARD_TYPES))
        for code, name in enumerate(CARD_TYPES):
            self._add(f"taps.card_type.{name}", int(by_type_taps[code]))
            self._add(f"concession_cost_fen.card_type.{name}", int(by_type_cost[code]))
            self._add(f"fare_revenue_fen.card_type.{name}", int(by_type_rev[code]))
        by_hour = np.bincount(hour[charged], minlength=HOURS)
        for h in range(HOURS):
            self._add(f"taps.hour.{h:02d}", int(by_hour[h]))

    def _add(self, name: str, value: float) -> None:
        self.totals[name] = self.totals.get(name, 0) + value


def paired_difference(base: Sequence[float], variant: Sequence[float]) -> dict[str, float]:
    """Mean of ``variant - base`` over paired replications and its 95% confidence interval."""
    diffs = [v - b for b, v in zip(base, variant, strict=True)]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def summarise(outcomes: dict[str, list[dict[str, float]]], base: str) -> dict:
    """Per measure and variant: baseline mean, variant mean, paired difference with its CI."""
    measures = sorted(outcomes[base][0])
    report: dict = {"baseline": base, "variants": {}}
    for name, runs in outcomes.items():
        if name == base:
            continue
        rows = {}
        for m in measures:
            b = [r.get(m, 0) for r in outcomes[base]]
            v = [r.get(m, 0) for r in runs]
            rows[m] = {
                "baseline": statistics.fmean(b),
                "variant": statistics.fmean(v),
                "difference": paired_difference(b, v),
            }
        report["variants"][name] = rows
    return report


def markdown(report: dict, headline: Sequence[str]) -> str:
    """A short Markdown table of the headline measures for each variant."""
    lines = [f"## Compare against {report['baseline']} ({report['replications']} replications)"]
    for name, rows in report["variants"].items():
        lines += ["", f"### {name}", "", "| measure | baseline | variant | difference (95% CI) |"]
        lines.append("|---|---:|---:|---|")
        for m in headline:
            r = rows[m]
            d = r["difference"]
            ci = f"[{d['ci_low']:,.0f}, {d['ci_high']:,.0f}]" if not math.isnan(d["ci_low"]) else ""
            lines.append(
                f"| {m} | {r['baseline']:,.0f} | {r['variant']:,.0f} | {d['mean']:+,.0f} {ci} |"
            )
    return "\n".join(lines) + "\n"


HEADLINE = (
    "taps",
    "fare_transactions",
    "fare_revenue_fen",
    "concession_cost_fen",
    "taps.card_type.longevity",
    "concession_cost_fen.card_type.longevity",
)
