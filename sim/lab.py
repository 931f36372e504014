"""The policy lab's compare: a baseline against variants, replicated with common random numbers.

Each scenario's world is built once; replication ``r`` of every scenario runs with the same run
seed (``base seed + r``), so the baseline and a variant see the same people on the same days and
their difference is paired. A run's outcome is measured by a subscriber over its final tap
records (no files written); the report gives, for every measure, the baseline, the variant, the
mean paired difference and its 95% confidence interval (Student's t over the replications).

Measures (integer fen for money), on taps acquired in the home city: taps, boardings, fare
transactions, fare revenue, concession cost (fares foregone: list fare minus amount), clearing
fees, operator income and fares not cleared, each also by card type, age band, region and medium;
taps and boardings by hour, boardings by hour within each group; distinct riders per group. From
them: the fairness section (who gains and who pays) and the trips moved between hours. The
report's texts are in ``sim.lab_report``, its HTML page in ``sim.lab_html``.

The money of a charged tap adds up exactly: fare revenue = clearing fees + operator income +
fares not cleared, in total and in every group. Clearing fees are every fee the ledger takes on
the way from the acquirer to the issuer: the acquirer's exchange's fee of each record (its
``fee_fen``) and, on records whose issuer belongs to another exchange, the transit fees of the
nodes further on; the ledger rounds those per (issuer, acquirer) pair, node and clearing day, so
each such fee is shared among a dimension's groups in proportion to their fares (largest
remainder: integers that sum to the ledger's fee). Operator income is what acquirers receive for
cleared records: their fare less all those fees. Fares not cleared are charged taps that clearing
rejected (duplicate deductions, refunded) or that were still pending when the run ended.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sim.clearing_network import ClearingTopology, transit_rates_bp
from sim.codes import CARD_TYPE_ZH, CARD_TYPES, CLEARED, MEDIA, MEDIA_ZH, TAP_ENTRY, TAP_EXIT
from sim.events import TapsFinal
from sim.population import HOME_CITY

HOURS = 24
HOUR_NAMES = tuple(f"{h:02d}" for h in range(HOURS))


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
    """Each cardholder's group code per person dimension (card type, age band, region).

    The card type is the one the card was issued as, the same in every scenario of a compare:
    a policy that re-derives types from age (free from 60 / 70) or gives visitors local types
    moves what holders pay, and each group must hold the same people before and after."""
    pop = world.population
    edges = np.array([low for low, _ in AGE_BANDS])
    region = np.where(pop.home_city == HOME_CITY, pop.region, len(world.region_ids))
    return {
        "card_type": pop.issued_card_type.astype(np.int64),
        "age_band": np.searchsorted(edges, pop.age, side="right") - 1,
        "region": region.astype(np.int64),
    }


@dataclass
class OutcomeCollector:
    """Subscriber summing a run's final tap records into the compare's measures; call
    ``finish()`` once after the run for the rider counts (a rider is counted once per run) and
    the transit fees (rounded per pair and clearing day, so known only when every day is in),
    every figure expanded by 1/scale for a city simulated at a scale below 1.
    Work per day is a few ``np.bincount`` over the day's columns: no Python object per tap."""

    world: object
    totals: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._groups = group_names(self.world)
        self._person = person_groups(self.world)
        n = len(self.world.population.card_type)
        self._rode = np.zeros((len(MEDIA), n), dtype=bool)  # [medium, cardholder]
        participants = self.world.participants
        self._exchange = participants.parent.astype(np.int64)  # a member's clearing node
        self._topology = ClearingTopology(
            participants, transit_rates_bp(self.world.scenario.clearing)
        )
        # Fares of records travelling to another exchange, per (settle day, issuer, acquirer)
        # key and dimension: their transit fees are charged in ``finish``.
        self._travelling: dict[int, dict[str, np.ndarray]] = {}

    def __call__(self, event) -> None:
        if not isinstance(event, TapsFinal):
            return
        taps = event.taps
        charged = (taps.city == 0) & ~taps.declined & (taps.device_refused == 0)
        rows = np.flatnonzero(charged)  # taps acquired at home and charged: all that is measured
        kind = taps.kind[rows]
        # a ride starts at a bus tap or a metro entry (the exit is the same trip); a fare
        # transaction is a bus tap, a metro exit or an entry never closed
        boarding = kind != TAP_EXIT
        fare_row = (kind != TAP_ENTRY) | taps.incomplete[rows]
        hour = np.minimum(taps.t_s[rows] // 3600, HOURS - 1)
        tap_class = hour * _TAP_CLASSES + boarding + 2 * fare_row
        cleared = taps.status[rows] == CLEARED
        amount = taps.amount_fen[rows]
        money = _ChargedMoney(
            amount=amount.astype(np.float64),  # bincount weights: converted once, not per call
            list_fare=taps.list_fare_fen[rows].astype(np.float64),
            fee=np.where(cleared, taps.fee_fen[rows], 0).astype(np.float64),
            not_cleared=np.flatnonzero(~cleared),
            amount_fen=amount,
        )
        codes = {dim: group[taps.row[rows]] for dim, group in self._person.items()}
        codes["medium"] = taps.medium[rows].astype(np.int64)
        for dim, code in codes.items():
            cells, measures = self._add_dimension(dim, code, tap_class, money)
        for name, values in measures.items():  # totals: any one dimension's groups add up
            self._add(name, int(values.sum()))
        by_hour = cells.sum(axis=1)  # [hour, tap class]
        self._by_group("taps.hour", HOUR_NAMES, None, sums=by_hour.sum(axis=1))
        self._by_group("boardings.hour", HOUR_NAMES, None, sums=_boardings(by_hour))
        pop_home = self.world.population.home_city[taps.row[rows]] == HOME_CITY
        self._add("home_card_taps", int(pop_home.sum()))
        self._keep_travelling(taps, rows[cleared], {d: c[cleared] for d, c in codes.items()})
        self._rode[taps.medium[rows], taps.row[rows]] = True

    def _add_dimension(
        self, dim: str, code: np.ndarray, tap_class: np.ndarray, money: _ChargedMoney
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Add one dimension's measures per group and its boardings per hour and group. The
        counts of every (hour, group, tap class) come from one bincount, the money from one
        weighted bincount per amount; returns those cells and the per-group measures."""
        names = self._groups[dim]
        k = len(names)
        cells = np.bincount(
            (tap_class // _TAP_CLASSES * k + code) * _TAP_CLASSES + tap_class % _TAP_CLASSES,
            minlength=HOURS * k * _TAP_CLASSES,
        ).reshape(HOURS, k, _TAP_CLASSES)
        revenue, list_fare, fees = (
            np.bincount(code, weights=w, minlength=k).astype(np.int64)
            for w in (money.amount, money.list_fare, money.fee)
        )
        late = money.not_cleared
        uncleared = np.bincount(code[late], weights=money.amount_fen[late], minlength=k).astype(
            np.int64
        )
        boardings = _boardings(cells)  # [hour, group]
        measures = {
            "taps": cells.sum(axis=(0, 2)),
            "boardings": boardings.sum(axis=0),
            "fare_transactions": cells[:, :, 2:].sum(axis=(0, 2)),
            "fare_revenue_fen": revenue,
            "concession_cost_fen": list_fare - revenue,
            "clearing_fees_fen": fees,
            "operator_income_fen": revenue - uncleared - fees,
            "fares_uncleared_fen": uncleared,
        }
        for name, values in measures.items():
            self._by_group(f"{name}.{dim}", names, None, sums=values)
        for h, hour_name in enumerate(HOUR_NAMES):
            for i, name in enumerate(names):
                self._add(f"boardings.hour_{dim}.{hour_name}.{name}", int(boardings[h, i]))
        return cells, measures

    def finish(self) -> dict[str, float]:
        """Add the distinct riders of each group over the whole run and the transit fees; the
        totals."""
        rode_any = self._rode.any(axis=0)
        for dim, code in self._person.items():
            self._by_group(f"riders.{dim}", self._groups[dim], code[rode_any])
        for m, name in enumerate(MEDIA):
            self._add(f"riders.medium.{name}", int(self._rode[m].sum()))
        self._add("riders", int(rode_any.sum()))
        self._charge_transit_fees()
        scale = self.world.scenario.scale
        if scale != 1.0:  # a city simulated at a scale: each figure stands for 1/scale
            self.totals = {k: round(v / scale) for k, v in self.totals.items()}
            # Rounded one by one, the parts of a fare would miss it by a fen: the operator's
            # income is what is left of it, as at full scale.
            for name in [k for k in self.totals if k.startswith("operator_income_fen")]:
                rest = name.removeprefix("operator_income_fen")
                self.totals[name] = (
                    self.totals[f"fare_revenue_fen{rest}"]
                    - self.totals[f"clearing_fees_fen{rest}"]
                    - self.totals[f"fares_uncleared_fen{rest}"]
                )
        return self.totals

    def _keep_travelling(self, taps, rows: np.ndarray, codes: dict[str, np.ndarray]) -> None:
        """Each group's fares on the cleared records ``rows`` (``codes``: their groups) whose
        issuer is in another exchange, per (settle day, issuer, acquirer): a pair's records of
        one clearing day may come from several tap days, so its transit fees wait for
        ``finish``."""
        exchange = self._exchange
        issuer, acquirer = taps.issuer[rows].astype(np.int64), taps.acquirer[rows].astype(np.int64)
        moving = np.flatnonzero(exchange[issuer] != exchange[acquirer])
        if not moving.size:
            return
        n_p = len(exchange)
        settle_day = taps.settle_day[rows[moving]]
        key = (settle_day * n_p + issuer[moving]) * n_p + acquirer[moving]
        keys, at = np.unique(key, return_inverse=True)
        amount = taps.amount_fen[rows[moving]]
        for dim, code in codes.items():
            k = len(self._groups[dim])
            sums = np.bincount(at * k + code[moving], weights=amount, minlength=keys.size * k)
            for key_, row in zip(keys.tolist(), sums.reshape(keys.size, k), strict=True):
                kept = self._travelling.setdefault(key_, {})
                kept[dim] = kept.get(dim, 0) + row.astype(np.int64)

    def _charge_transit_fees(self) -> None:
        """Transit fees as the ledger posts them (per pair, node and clearing day): added to the
        clearing fees and taken from the operator income, shared among each dimension's groups."""
        n_p = len(self._exchange)
        for key in sorted(self._travelling):
            by_dim = self._travelling[key]
            gross = int(next(iter(by_dim.values())).sum())
            issuer, acquirer = (key // n_p) % n_p, key % n_p
            fee = sum(self._topology.transit_fees(issuer, acquirer, gross))
            self._add("clearing_fees_fen", fee)
            self._add("operator_income_fen", -fee)
            for dim, fares in by_dim.items():
                parts = proportional_shares(fee, fares)
                for name, part in zip(self._groups[dim], parts.tolist(), strict=True):
                    self._add(f"clearing_fees_fen.{dim}.{name}", part)
                    self._add(f"operator_income_fen.{dim}.{name}", -part)
        self._travelling.clear()  # charged once, however often finish() is called

    def _by_group(self, prefix, names, code, weights=None, sums=None) -> None:
        """Add ``prefix.group`` per group: ``sums`` if given, else a bincount of ``code``."""
        if sums is None:
            sums = np.bincount(code, weights=weights, minlength=len(names))
        for i, name in enumerate(names):
            self._add(f"{prefix}.{name}", int(sums[i]))

    def _add(self, name: str, value: float) -> None:
        self.totals[name] = self.totals.get(name, 0) + value


#: Tap classes in the collector's cells: bit 0 a boarding, bit 1 a fare transaction (a bus tap
#: is both, a metro entry a boarding, its exit a fare transaction).
_TAP_CLASSES = 4


@dataclass(frozen=True)
class _ChargedMoney:
    """A day's charged taps' money as the collector sums it: amounts, list fares and clearing
    fees as bincount weights, and which taps were not cleared (with their amounts in fen)."""

    amount: np.ndarray
    list_fare: np.ndarray
    fee: np.ndarray
    not_cleared: np.ndarray
    amount_fen: np.ndarray


def _boardings(cells: np.ndarray) -> np.ndarray:
    """Boardings from counts whose last axis is the tap class (classes with bit 0 set)."""
    return cells[..., 1] + cells[..., 3]


def proportional_shares(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to non-negative integer ``weights`` into integers that sum
    to ``total`` exactly (largest remainder; equal remainders go to the earlier group)."""
    w = np.asarray(weights, dtype=np.int64)
    whole = int(w.sum())
    if whole == 0:
        if total:
            raise ValueError(f"cannot share {total} over zero weights")
        return np.zeros_like(w)
    parts = total * w // whole
    remainder = total * w - parts * whole
    short = total - int(parts.sum())
    parts[np.argsort(-remainder, kind="stable")[:short]] += 1
    return parts


def _t975(dof: float) -> float:
    """Student's t quantile for a two-sided 95% interval. scipy.stats is imported here, not at
    the top: it costs ~0.2 s, which every command would pay at start for a compare's intervals."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def mean_interval(values: Sequence[float]) -> dict[str, float]:
    """Mean of per-replication ``values`` and its 95% confidence interval (Student's t)."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    half = _t975(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def paired_difference(base: Sequence[float], variant: Sequence[float]) -> dict[str, float]:
    """Mean of ``variant - base`` over paired replications and its 95% confidence interval."""
    return mean_interval([v - b for b, v in zip(base, variant, strict=True)])


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
    half = _t975(dof) * math.sqrt(se2)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": min(n_b, n_v)}


def summarise(
    outcomes: dict[str, list[dict[str, float]]],
    base: str,
    paired: bool = True,
    fairness_threshold: float = 0.2,
) -> dict:
    """Per measure and variant: baseline mean, variant mean, the difference with its 95% CI
    (paired over replications when seeds are common, Welch's otherwise); and per variant the
    fairness section (``fairness``, flagged at ``fairness_threshold``) and the trips moved
    between hours (``trips_moved``, see ``moved_between_hours``)."""
    difference = paired_difference if paired else unpaired_difference
    measures = sorted(outcomes[base][0])
    report: dict = {
        "baseline": base,
        "pairing": "common random numbers" if paired else "independent seeds",
        "fairness_threshold": fairness_threshold,
        "variants": {},
        "fairness": {},
        "trips_moved": {},
        "trips_moved_definition": TRIPS_MOVED_DEFINITION,
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
        report["trips_moved"][name] = moved_between_hours(outcomes[base], runs, rows)
    return report


TRIPS_MOVED_DEFINITION = (
    "Boardings (a bus tap or a metro entry) per hour of the day. Trips moved between hours = "
    "half the sum over the hours of |variant - baseline| minus half of |change of the total|, "
    "i.e. the smaller of the trips the hours gained and the trips they lost: the fewest trips "
    "that must have changed hour to turn the baseline's hours into the variant's, given the "
    "change in the number of trips. It is computed per replication (variant r against "
    "baseline r: paired when seeds are common) and reported as a mean with a 95% CI; with "
    "independent seeds it also counts noise. Per group the same from its own hours."
)


def trips_moved(base_hours: Sequence[float], variant_hours: Sequence[float]) -> float:
    """Trips moved between hours (``TRIPS_MOVED_DEFINITION``): min(trips gained by the hours
    that gained, trips lost by the hours that lost)."""
    diff = np.subtract(np.asarray(variant_hours, float), np.asarray(base_hours, float))
    return float((np.abs(diff).sum() - abs(diff.sum())) / 2)


HOUR_ROW_KEYS = ("baseline", "variant", "difference")


def _hours(run: dict[str, float], prefix: str, group: str = "") -> list[float]:
    suffix = f".{group}" if group else ""
    return [run.get(f"{prefix}.{h}{suffix}", 0) for h in HOUR_NAMES]


def moved_between_hours(
    base_runs: list[dict[str, float]], variant_runs: list[dict[str, float]], rows: dict
) -> dict:
    """The trips-moved section of one variant: per hour, baseline and variant boardings and
    their difference with its 95% CI (from ``rows``, the variant's measures); the hours whose
    CI lies wholly below or above zero; the trips moved between hours in all and per group
    (``TRIPS_MOVED_DEFINITION``)."""
    pairs = list(zip(base_runs, variant_runs, strict=True))
    hours = [
        {"hour": h, **{k: rows[f"boardings.hour.{h}"][k] for k in HOUR_ROW_KEYS}}
        for h in HOUR_NAMES
    ]
    all_hours = "boardings.hour"
    total = [trips_moved(_hours(b, all_hours), _hours(v, all_hours)) for b, v in pairs]
    by_group: dict[str, list[dict]] = {}
    for dim in FAIRNESS_DIMENSIONS:
        prefix = f"boardings.hour_{dim}"
        groups = [m.split(".")[-1] for m in rows if m.startswith(f"{prefix}.00.")]
        by_group[dim] = [
            {
                "group": g,
                "boardings_baseline": rows[f"boardings.{dim}.{g}"]["baseline"],
                "moved": mean_interval(
                    [trips_moved(_hours(b, prefix, g), _hours(v, prefix, g)) for b, v in pairs]
                ),
            }
            for g in groups
        ]
    return {
        "hours": hours,
        "hours_losing": [r["hour"] for r in hours if r["difference"]["ci_high"] < 0],
        "hours_gaining": [r["hour"] for r in hours if r["difference"]["ci_low"] > 0],
        "total": mean_interval(total),
        "by_group": by_group,
    }


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
#: The compare report's headline table: the headline measures (also the sweeps' default
#: outputs) with boardings and where the fares go (clearing fees, operator income).
REPORT_HEADLINE = (
    *HEADLINE[:2],
    "boardings",
    *HEADLINE[2:4],
    "clearing_fees_fen",
    "operator_income_fen",
    *HEADLINE[4:],
)
