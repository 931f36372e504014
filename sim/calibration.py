"""Calibration report: simulated figures against published targets, plus untargeted metrics.

Targets live in a YAML file beside the data they come from (data/nantong/targets_2024.yaml),
validated whole by the ``Targets`` model before a run starts (file, line, field path, expected).
Each target gets the simulated value, the relative error and a pass/fail against its tolerance:
totals within ±5%; spend per card type and per QR channel within ±10% each, except parts under 1%
of total spend, which are judged by their share of spend (within 0.5 percentage points). A
PaySim-style NRMSE summarises each group: RMSE of simulated vs published values divided by the
range of the published values (Lopez-Rojas et al., PaySim, 2016).

Untargeted metrics are reported without targets: they are outcomes of the model's structure
(demography, geography, behaviour), not fitted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.codes import CARD_TYPES, ELDERLY_CARD_CODES, MEDIA
from sim.metrics import RunMetrics
from sim.population import HOME_CITY
from sim.yaml_config import load_config

#: The card types of the published elderly figure ("taps with 长寿卡 and 爱心卡").
#: The totals a targets file may set (computed in ``compare``).
TOTALS = (
    "transactions",
    "transit_spend_yuan",
    "recharge_yuan",
    "cards_sold",
    "elderly_card_transactions",
)


@dataclass(frozen=True)
class Row:
    """One target compared with its simulated value."""

    group: str
    name: str
    target: float
    simulated: float
    rel_error: float
    rule: str
    passed: bool


#: A published figure: a positive, finite number (an int or a float; a string or a yes/no is a
#: mistake in the file, not a number to guess at).
Figure = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
#: A QR channel: the QR media of ``sim.codes.MEDIA`` (the published channel table's rows).
QR_CHANNELS: tuple[str, ...] = tuple(m for m in MEDIA if m.startswith("qr_"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetTotals(_Section):
    """``totals:``: the year's published totals; each one given is compared (±``totals_rel``)."""

    transactions: Figure | None = Field(None, description="Fare transactions (笔).")
    transit_spend_yuan: Figure = Field(
        description="Transit spend (元); required: small spend parts are judged by their share "
        "of it."
    )
    recharge_yuan: Figure | None = Field(None, description="Top-ups (元).")
    cards_sold: Figure | None = Field(None, description="Cards sold.")
    elderly_card_transactions: Figure | None = Field(
        None, description="Transactions with the elderly card types (长寿卡 and 爱心卡)."
    )


class Tolerances(_Section):
    """``tolerances:``: how far a simulated figure may be from its target and still pass."""

    totals_rel: Figure = Field(description="Each total within ± this fraction (0.05 = 5%).")
    breakdown_rel: Figure = Field(
        description="Each card type and QR channel within ± this fraction."
    )
    small_share_pp: Figure = Field(
        description="Parts under 1% of spend: their share of spend within ± this many "
        "percentage points."
    )


class Targets(_Section):
    """A calibration targets file (data/nantong/targets_2024.yaml), validated whole before a
    run starts, so that a mistake in it is bad input, not a crash after the run."""

    year: int = Field(ge=1, le=9999, strict=True, description="Year the figures are for.")
    totals: TargetTotals
    spend_by_card_type_yuan: dict[Literal[CARD_TYPES], Figure] = Field(  # type: ignore[valid-type]
        min_length=1, description="Spend by card type (元)."
    )
    spend_by_qr_channel_yuan: dict[Literal[QR_CHANNELS], Figure] = Field(  # type: ignore[valid-type]
        min_length=1, description="Spend by QR channel (元)."
    )
    card_stock: dict[Literal[("total", *CARD_TYPES)], Figure] = Field(  # type: ignore[valid-type]
        description="Cards in stock by type, and in total (reported, not judged)."
    )
    tolerances: Tolerances


def load_targets(path: str | Path) -> dict:
    """Read and validate a targets YAML (see data/nantong/targets_2024.yaml) as ``Targets``;
    returns it as a dict (``totals`` holding only the figures the file gives). Raises
    ``ConfigError`` naming the file, line, field path and what was expected."""
    targets = load_config(path, Targets)
    data = targets.model_dump()
    data["totals"] = targets.totals.model_dump(exclude_none=True)
    return data


def _rel(sim: float, target: float) -> float:
    return (sim - target) / target if target else math.inf


def _nrmse(rows: list[Row]) -> float:
    t = np.array([r.target for r in rows], dtype=float)
    s = np.array([r.simulated for r in rows], dtype=float)
    span = t.max() - t.min() if len(t) > 1 else abs(t[0])
    return float(np.sqrt(np.mean((s - t) ** 2)) / span) if span else 0.0


def compare(
    targets: dict, metrics: RunMetrics, population, days_simulated: int, scale: float = 1.0
) -> dict:
    """The calibration report as a dict (JSON-ready).

    A run shorter than the target year is expanded by (days in the year / days simulated), a
    plain scaling that ignores seasonality; the report says so. The full year needs none. A
    run at a ``scale`` below 1 (a share of the cardholders) is expanded by 1/scale too, its
    card stock included.
    """
    tol = targets["tolerances"]
    tot = targets["totals"]
    year = int(targets["year"])
    year_days = 366 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 365
    days_k = year_days / days_simulated if days_simulated < year_days else 1.0
    k = days_k / scale
    spend_total = float(metrics.spend_by_medium.sum()) / 100 * k
    sim_totals = {
        "transactions": float(metrics.transactions) * k,
        "transit_spend_yuan": spend_total,
        "recharge_yuan": metrics.recharge_fen / 100 * k,
        "cards_sold": float(metrics.cards_sold) * k,
        "elderly_card_transactions": float(
            sum(metrics.card_transactions_by_card_type[c] for c in ELDERLY_CARD_CODES)
        )
        * k,
    }
    rows: list[Row] = []
    for name, target in tot.items():
        rel = _rel(sim_totals[name], float(target))
        rows.append(
            Row(
                "totals",
                name,
                float(target),
                sim_totals[name],
                rel,
                f"±{tol['totals_rel']:.0%}",
                abs(rel) <= tol["totals_rel"],
            )
        )

    target_spend = float(tot["transit_spend_yuan"])
    parts = [
        ("spend_by_card_type", name, v, metrics.spend_by_card_type[CARD_TYPES.index(name)])
        for name, v in targets["spend_by_card_type_yuan"].items()
    ]
    parts += [
        ("spend_by_qr_channel", name, v, metrics.spend_by_medium[MEDIA.index(name)])
        for name, v in targets["spend_by_qr_channel_yuan"].items()
    ]
    for group, name, target, sim_fen in parts:
        sim = float(sim_fen) / 100 * k
        rel = _rel(sim, float(target))
        if float(target) / target_spend < 0.01:  # tiny parts: judged by their share of spend
            pp = 100 * (sim / max(spend_total, 1e-9) - float(target) / target_spend)
            rule, passed = (
                f"share ±{tol['small_share_pp']}pp ({pp:+.3f}pp)",
                (abs(pp) <= tol["small_share_pp"]),
            )
        else:
            rule, passed = f"±{tol['breakdown_rel']:.0%}", abs(rel) <= tol["breakdown_rel"]
        rows.append(Row(group, name, float(target), sim, rel, rule, passed))

    local = population.home_city == HOME_CITY
    stock = np.bincount(population.card_type[local], minlength=len(CARD_TYPES))
    stock_rows = []
    for name, target in targets["card_stock"].items():
        sim = float(local.sum()) if name == "total" else float(stock[CARD_TYPES.index(name)])
        sim /= scale
        stock_rows.append(
            Row("card_stock", name, float(target), sim, _rel(sim, float(target)), "reported", True)
        )

    groups = {}
    for group in ("totals", "spend_by_card_type", "spend_by_qr_channel"):
        mine = [r for r in rows if r.group == group]
        groups[group] = {
            "nrmse": _nrmse(mine),
            "rms_rel_error": float(np.sqrt(np.mean([r.rel_error**2 for r in mine]))),
            "all_passed": all(r.passed for r in mine),
        }
    return {
        "year": targets["year"],
        "days_simulated": days_simulated,
        "scale": scale,
        "days_expansion_factor": days_k,
        "expansion_factor": k,
        "targets": [r.__dict__ for r in rows],
        "card_stock": [r.__dict__ for r in stock_rows],
        "summary": groups,
        "all_required_passed": all(r.passed for r in rows),
    }


def untargeted(metrics: RunMetrics, region_names: list[str]) -> dict:
    """Metrics reported without targets (validated later against withheld figures)."""
    urban = 0  # the first region is the urban districts (市区)

    def split(values: np.ndarray) -> dict:
        total = float(values.sum())
        share = values / total if total else np.zeros(len(values))
        return {
            "urban_share": float(share[urban]),
            "county_share": float(1 - share[urban]) if total else 0.0,
            "by_region": {region_names[i]: float(share[i]) for i in range(len(values))},
        }

    away = metrics.taps_away_by_home_region
    home = np.maximum(metrics.taps_by_home_region, 1)
    return {
        "elderly_tap_share": metrics.elderly_taps / max(metrics.taps, 1),
        "transactions_by_card_type": {
            name: int(metrics.card_transactions_by_card_type[i])
            for i, name in enumerate(CARD_TYPES)
        },
        "qr_transactions": int(metrics.transactions - metrics.card_transactions_by_card_type.sum()),
        "cards_sold": split(metrics.sales_by_region.astype(float)),
        "spend": split(metrics.spend_by_region.astype(float)),
        "recharge": split(metrics.recharge_by_region.astype(float)),
        "taps_in_other_cities_share_by_home_region": {
            region_names[i]: float(away[i] / home[i]) for i in range(len(away))
        },
        "topup_channel_split": {
            "outlet": metrics.topups_outlet / max(metrics.topups, 1),
            "online": metrics.topups_online / max(metrics.topups, 1),
            "at_card_sale": 1
            - (metrics.topups_outlet + metrics.topups_online) / max(metrics.topups, 1),
            "events": metrics.topups,
        },
        "weekly_rider_share": {
            "of_cards_in_stock": float(np.mean(metrics.weekly_share_of_stock))
            if metrics.weekly_share_of_stock
            else None,
            "of_cards_in_use": float(np.mean(metrics.weekly_share_of_live))
            if metrics.weekly_share_of_live
            else None,
            "weeks": len(metrics.weekly_share_of_stock),
        },
        "duplicate_deductions": {
            "incidents": metrics.duplicate_deductions,
            "refunds": metrics.refunds,
        },
    }


def markdown(report: dict) -> str:
    """The report as a Markdown table (for the README and the terminal)."""
    out = [
        f"## Calibration against {report['year']} ({report['days_simulated']} days simulated)",
        "",
    ]
    scale = report.get("scale", 1.0)
    days_k = report.get("days_expansion_factor", report["expansion_factor"])
    if scale != 1.0:
        out += [f"Simulated at scale {scale:g}: figures expanded x{1 / scale:.2f}.", ""]
    if days_k != 1.0:
        out += [
            f"Partial period: figures expanded x{days_k:.2f} (plain scaling, no "
            "seasonality); run the whole year for the real check.",
            "",
        ]
    out += [
        "| group | target | published | simulated | error | rule | ok |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in report["targets"] + report["card_stock"]:
        out.append(
            f"| {r['group']} | {r['name']} | {r['target']:,.2f} | {r['simulated']:,.2f} | "
            f"{r['rel_error']:+.1%} | {r['rule']} | {'yes' if r['passed'] else '**no**'} |"
        )
    out += [
        "",
        "| group | NRMSE | RMS relative error | all within tolerance |",
        "|---|---:|---:|---|",
    ]
    for g, s in report["summary"].items():
        out.append(f"| {g} | {s['nrmse']:.4f} | {s['rms_rel_error']:.2%} | {s['all_passed']} |")
    out += [
        "",
        "### Untargeted",
        "",
        "```json",
        json.dumps(report["untargeted"], indent=2, ensure_ascii=False),
        "```",
    ]
    return "\n".join(out) + "\n"
