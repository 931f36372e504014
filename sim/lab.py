"""The policy lab's compare: a baseline against variants, replicated with common random numbers.

Each scenario's world is built once; replication ``r`` of every scenario runs with the same run
seed (``base seed + r``), so the baseline and a variant see the same people on the same days and
their difference is paired. A run's outcome is measured by a subscriber over its final tap
records (no files written); the report gives, for every measure, the baseline, the variant, the
mean paired difference and its 95% confidence interval (Student's t over the replications).

Measures (integer fen for money): taps, fare transactions, fare revenue, concession cost (fares
foregone: list fare minus amount, on taps in the home city), each also by card type, age band,
region and medium, taps by hour, and distinct riders per group; from them the fairness section
(who gains and who pays). The report's texts are in ``sim.lab_report``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from sim.codes import CARD_TYPE_ZH, CARD_TYPES, MEDIA, MEDIA_ZH, TAP_ENTRY
from sim.events import TapsFinal
from sim.population import HOME_CITY

HOURS = 24


#: Age bands of the fairness section: (lowest age, label); the elderly bands follow the free-ride
#: thresholds planners ask about (60 / 65 / 70).
AGE_BANDS: tuple[tuple[int, str], ...] = (
    (0, "0-17"),
    (18, "18-59"),
    (60, "60-64"),
    (65, "65-69"),
    (70, "70+"),
)
VISITORS = "visitors"  # the region group of cards from other cities


def group_names(world) -> dict[str, tuple[str, ...]]:
    """The groups of each fairness dimension, in code order."""
    return {
        "card_type": CARD_TYPES,
        "age_band": tuple(label for _, label in AGE_BANDS),
        "region": (*world.region_ids, VISITORS),
        "medium": MEDIA,
    }


def group_labels_zh(regions_zh: dict[str, str]) -> dict[str, dict[str, str]]:
    """Chinese names of the fairness groups (``regions_zh``: region id -> its Chinese name)."""
    return {
        "dimension": {
            "card_type": "卡种",
            "age_band": "年龄段",
            "region": "区域",
            "medium": "介质",
        },
        "card_type": dict(CARD_TYPE_ZH),
        "age_band": {label: f"{label}岁" for _, label in AGE_BANDS},
        "region": {**regions_zh, VISITORS: "外地卡"},
        "medium": dict(MEDIA_ZH),
    }


def person_groups(world) -> dict[str, np.ndarray]:
    """Each cardholder's group code per person dimension (card type, age band, region)."""
    pop = world.population
    edges = np.array([low for low, _ in AGE_BANDS])
    region = np.where(pop.home_city == HOME_CITY, pop.region, len(world.region_ids))
    return {
        "card_type": pop.card_type.astype(np.int64),
        "age_band": np.searchsorted(edges, pop.age, side="right") - 1,
        "region": region.astype(np.int64),
    }


@dataclass
class OutcomeCollector:
    """Subscriber summing a run's final tap records into the compare's measures; call
    ``finish()`` after the run for the rider counts (a rider is counted once per run)."""

    world: object
    totals: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._groups = group_names(self.world)
        self._person = person_groups(self.world)
        n = len(self.world.population.card_type)
        self._rode = np.zeros((len(MEDIA), n), dtype=bool)  # [medium, cardholder]

    def __call__(self, event) -> None:
        if not isinstance(event, TapsFinal):
            return
        taps = event.taps
        home = taps.city == 0  # taps acquired in the home city
        charged = home & ~taps.declined & (taps.device_refused == 0)
        fare_row = charged & ((taps.kind != TAP_ENTRY) | taps.incomplete)
        hour = np.minimum(taps.t_s // 3600, HOURS - 1)
        foregone = np.where(charged, taps.list_fare_fen - taps.amount_fen, 0)
        revenue = np.where(charged, taps.amount_fen, 0)
        self._add("taps", int(charged.sum()))
        self._add("fare_transactions", int(fare_row.sum()))
        self._add("fare_revenue_fen", int(revenue.sum()))
        self._add("concession_cost_fen", int(foregone.sum()))
        pop_home = self.world.population.home_city[taps.row] == HOME_CITY
        self._add("home_card_taps", int((charged & pop_home).sum()))
        codes = {dim: group[taps.row] for dim, group in self._person.items()}
        codes["medium"] = taps.medium.astype(np.int64)
        for dim, code in codes.items():
            names = self._groups[dim]
            self._by_group(f"taps.{dim}", names, code[charged])
            self._by_group(f"fare_transactions.{dim}", names, code[fare_row])
            self._by_group(f"fare_revenue_fen.{dim}", names, code, revenue)
            self._by_group(f"concession_cost_fen.{dim}", names, code, foregone)
        self._by_group("taps.hour", [f"{h:02d}" for h in range(HOURS)], hour[charged])
        self._rode[taps.medium[charged], taps.row[charged]] = True

    def finish(self) -> dict[str, float]:
        """Add the distinct riders of each group over the whole run; the totals."""
        rode_any = self._rode.any(axis=0)
        for dim, code in self._person.items():
            self._by_group(f"riders.{dim}", self._groups[dim], code[rode_any])
        for m, name in enumerate(MEDIA):
            self._add(f"riders.medium.{name}", int(self._rode[m].sum()))
        self._add("riders", int(rode_any.sum()))
        return self.totals

    def _by_group(self, prefix, names, code, weights=None) -> None:
        sums = np.bincount(code, weights=weights, minlength=len(names))
        for i, name in enumerate(names):
            self._add(f"{prefix}.{name}", int(sums[i]))

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


def unpaired_difference(base: Sequence[float], variant: Sequence[float]) -> dict[str, float]:
    """Difference of means ``variant - base`` of independent samples and its 95% confidence
    interval (Welch). The compare uses it only when seeds are not shared, so that the gain from
    common random numbers can be measured against it at the same number of replications."""
    n_b, n_v = len(base), len(variant)
    mean = statistics.fmean(variant) - statistics.fmean(base)
    if min(n_b, n_v) < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": min(n_b, n_v)}
    var_b, var_v = statistics.variance(base) / n_b, statistics.variance(variant) / n_v
    se2 = var_b + var_v
    if se2 == 0:
        return {"mean": mean, "ci_low": mean, "ci_high": mean, "n": min(n_b, n_v)}
    dof = se2**2 / (var_b**2 / (n_b - 1) + var_v**2 / (n_v - 1))
    half = stats.t.ppf(0.975, dof) * math.sqrt(se2)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": min(n_b, n_v)}


def summarise(
    outcomes: dict[str, list[dict[str, float]]],
    base: str,
    paired: bool = True,
    fairness_threshold: float = 0.2,
) -> dict:
    """Per measure and variant: baseline mean, variant mean, the difference with its 95% CI
    (paired over replications when seeds are common, Welch's otherwise); and per variant the
    fairness section (``fairness``, flagged at ``fairness_threshold``)."""
    difference = paired_difference if paired else unpaired_difference
    measures = sorted(outcomes[base][0])
    report: dict = {
        "baseline": base,
        "pairing": "common random numbers" if paired else "independent seeds",
        "fairness_threshold": fairness_threshold,
        "variants": {},
        "fairness": {},
    }
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
                "difference": difference(b, v),
            }
        report["variants"][name] = rows
        report["fairness"][name] = fairness(
            {m: r["baseline"] for m, r in rows.items()},
            {m: r["variant"] for m, r in rows.items()},
            fairness_threshold,
        )
    return report


FAIRNESS_DIMENSIONS = ("card_type", "age_band", "region", "medium")


def fairness(
    baseline: dict[str, float], variant: dict[str, float], threshold: float
) -> dict[str, list[dict]]:
    """Who gains and who pays, per dimension (card type, age band, region, medium).

    For each group: average fare per trip before and after (fen), its benefit (fares it no longer
    pays: baseline revenue minus variant revenue; negative = it pays more), its share of the total
    benefit against its share of riders (distinct cardholders who rode in the baseline; for a
    medium, who rode with it), and a flag, in the manner of a Title VI fare-equity analysis: when
    the policy is a net benefit, a group whose benefit share is below ``(1 - threshold)`` times
    its rider share gets a disproportionately small share; when it is a net fare increase, a group
    whose share of the burden is above ``(1 + threshold)`` times its rider share bears a
    disproportionate share. Inputs are replication means."""
    out: dict[str, list[dict]] = {}
    for dim in FAIRNESS_DIMENSIONS:
        prefix = f"riders.{dim}."
        groups = [m[len(prefix) :] for m in sorted(baseline) if m.startswith(prefix)]
        benefit = {
            g: baseline[f"fare_revenue_fen.{dim}.{g}"] - variant[f"fare_revenue_fen.{dim}.{g}"]
            for g in groups
        }
        total_benefit = sum(benefit.values())
        total_riders = sum(baseline[f"riders.{dim}.{g}"] for g in groups)
        rows = []
        for g in groups:
            riders = baseline[f"riders.{dim}.{g}"]
            if riders == 0:
                continue  # nobody of this group rides: nothing to share
            rider_share = riders / total_riders
            share = benefit[g] / total_benefit + 0.0 if total_benefit else 0.0  # no -0.0
            if total_benefit > 0:
                flag = "small share of the benefit" if share < (1 - threshold) * rider_share else ""
            elif total_benefit < 0:
                flag = (
                    "large share of the increase" if share > (1 + threshold) * rider_share else ""
                )
            else:
                flag = ""
            rows.append(
                {
                    "group": g,
                    "rider_share": rider_share,
                    "avg_fare_before_fen": _per_trip(baseline, dim, g),
                    "avg_fare_after_fen": _per_trip(variant, dim, g),
                    "benefit_fen": benefit[g],
                    "benefit_share": share,
                    "flag": flag,
                }
            )
        out[dim] = rows
    return out


def _per_trip(means: dict[str, float], dim: str, group: str) -> float:
    trips = means[f"fare_transactions.{dim}.{group}"]
    return means[f"fare_revenue_fen.{dim}.{group}"] / trips if trips else math.nan


HEADLINE = (
    "taps",
    "fare_transactions",
    "fare_revenue_fen",
    "concession_cost_fen",
    "taps.card_type.longevity",
    "concession_cost_fen.card_type.longevity",
)
