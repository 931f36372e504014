"""The "Present" deliverable: a one-page brief for decision makers, in one language.

``compare_brief(report, lang)`` turns a policy comparison (what ``sim.api.compare`` returns or
``sim.api.load_compare_report`` reads back) into one self-contained HTML page: the title, what
was compared, the headline changes as big figures with their 95% confidence intervals, the
plain-language summary (``sim.lab_report.summary``) and three charts. ``run_brief(run_dir,
lang)`` does the same for one finished run (its headline KPIs, taps per day, by hour and by card
type). Figures expanded from a city simulated below full scale (a comparison of a scaled city,
a run with such cities) are estimates: both briefs, and the Compare page, mark them 约 / ≈ and
explain the mark in one line, as the Explore page does. ``to_pdf(html, path)`` prints a
brief to an A4 PDF with headless Chromium (``sim.pdf``).

A brief fits one A4 page in print: compact type, fixed chart heights and a page as wide as A4's
printable area on screen too (plotly lays its charts out once, at the width the page has when it
loads, so a brief drawn wider than the paper would be cut when printed). Like every CardTwin page
it opens without a network (plotly.js inline, ``sim.html_page.page``) and holds nothing that
depends on when it was made: the same report and language give the same bytes.

The Compare page draws the same tables and figures (the frames and figure builders below), so
the page and the brief never disagree on a number. Every text comes from the catalogue
(``dashboard/locale/brief.yaml``); money in the reports is integer fen, shown in yuan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard import i18n
from dashboard.charts import FONT
from sim import api, html_page
from sim.lab import FAIRNESS_DIMENSIONS
from sim.lab_report import expanded, hour_ranges, summary

#: The headline measures of a comparison (the compare page's table and the change chart).
HEADLINE = (
    "boardings",
    "taps",
    "fare_transactions",
    "fare_revenue_fen",
    "concession_cost_fen",
    "clearing_fees_fen",
    "operator_income_fen",
)
#: What the by-group chart can show (every group has each headline measure).
GROUP_MEASURES = HEADLINE
#: The big figures of a compare brief, in order.
BIG_FIGURES = (
    "fare_revenue_fen",
    "concession_cost_fen",
    "operator_income_fen",
    "fare_transactions",
)

BASE_COLOUR, VARIANT_COLOUR, FLAG_COLOUR, RIDER_COLOUR = "#7f8c8d", "#2c7fb8", "#d7301f", "#bdbdbd"
HTML_LANG = {"zh": "zh-CN", "en": "en"}

# Heights (px) of the brief's charts: fixed, so that the page's length is known before print.
_CHART_HEIGHT = 250
_WIDE_CHART_HEIGHT = 215

# Printed on A4 with 10 mm margins (sim/pdf.py): the page is 190 mm wide on screen as in print.
_BRIEF_CSS = """
html body { max-width: 190mm; margin: 0 auto; padding: 0; font-size: 11px; line-height: 1.4; }
h1 { font-size: 18px; margin: 0 0 2px; }
.brief p { margin: 4px 0; }
.brief .facts { color: #555; margin: 0 0 6px; }
.brief .figures { display: grid; grid-template-columns: repeat(5, 1fr); gap: 6px; margin: 6px 0; }
.brief .figure { border: 1px solid #ddd; border-radius: 4px; padding: 4px 6px; }
.brief .figure .label { color: #555; font-size: 10px; }
.brief .figure .value { font-size: 17px; font-weight: 600; white-space: nowrap; }
.brief .figure .sub { color: #555; font-size: 9.5px; }
.brief .summary { background: #f5f7fa; border-left: 3px solid #2c7fb8; padding: 4px 8px; }
.brief .charts { display: grid; grid-template-columns: 1fr 1fr; gap: 4px; }
.brief .charts .wide { grid-column: span 2; }
.brief .chart { min-height: 0; margin: 0; }
.brief .note { color: #777; font-size: 9px; margin-top: 4px; }
@page { size: A4; margin: 10mm; }
@media print { html body { margin: 0; } .brief .figures, .brief .charts { break-inside: avoid; } }
"""


# --- numbers and names ------------------------------------------------------------------------


def is_money(measure: str) -> bool:
    """Whether a measure (``fare_revenue_fen``, ``fare_revenue_fen.card_type.student``) is
    money in fen."""
    return measure.split(".")[0].endswith("_fen")


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def amount(
    value: float | None,
    lang: str,
    *,
    money: bool,
    signed: bool = False,
    estimated: bool = False,
) -> str:
    """A value in words: ``money`` (fen) in yuan, counts whole; ``signed`` puts a + on gains;
    ``estimated`` marks it as an estimate (约 / ≈, ``i18n.estimate``; never a zero). Chinese
    large numbers in 万/亿 (compact), as the headline cards show them."""
    if _missing(value):
        return "–"
    whole = round(value)
    text = i18n.yuan(whole, lang, compact=True) if money else i18n.count(whole, lang)
    return i18n.estimate(whole, f"+{text}" if signed and whole > 0 else text, lang, estimated)


def interval(
    d: dict, lang: str, *, money: bool, bare: bool = False, estimated: bool = False
) -> str:
    """A 95% confidence interval in words ("no interval" with a single replication); ``bare``
    leaves out the "95% CI" (a table's column says it); ``estimated`` marks its ends."""
    if _missing(d.get("ci_low")) or _missing(d.get("ci_high")):
        return i18n.t("brief.no_ci", lang)
    low, high = (
        amount(d[end], lang, money=money, estimated=estimated) for end in ("ci_low", "ci_high")
    )
    return i18n.t("brief.range" if bare else "brief.ci", lang, low=low, high=high)


def measure_label(measure: str, lang: str, report: dict | None = None) -> str:
    """A compare measure's name in ``lang``: ``fare_revenue_fen`` is "Fare revenue",
    ``taps.card_type.longevity`` "Taps · Longevity card (65+)"; an unknown name is shown as it
    is."""
    head, _, rest = measure.partition(".")
    key = f"brief.measure.{head}"
    if not i18n.has(key):
        return measure
    label = i18n.t(key, lang)
    dim, _, group = rest.partition(".")
    if dim in FAIRNESS_DIMENSIONS and group:
        return f"{label} · {group_label(dim, group, lang, report)}"
    return label if not rest else f"{label} · {rest}"


def dimension_label(dim: str, lang: str) -> str:
    """A fairness dimension's name (card type, age band, region, medium)."""
    return i18n.t(f"brief.dimension.{dim}", lang)


def group_label(dim: str, group: str, lang: str, report: dict | None = None) -> str:
    """A fairness group's name in ``lang``: card types and media from the data codes, age bands
    in years, regions by the report's Chinese names (their ids, capitalised, in English)."""
    if dim == "card_type":
        return i18n.code_label("rider_category", group, lang)
    if dim == "medium":
        return i18n.code_label("media", group, lang)
    if dim == "age_band":
        return i18n.t("brief.age_band", lang, band=group)
    if group == "visitors":  # sim.lab.VISITORS: cards from other cities
        return i18n.code_label("rider_category", "visitor", lang)
    if i18n.has(f"code.region.{group}"):
        return i18n.code_label("region", group, lang)
    if lang == "zh" and report is not None:
        return report.get("labels_zh", {}).get("region", {}).get(group, group)
    return i18n.place_name(group)


def flag_label(flag: str, lang: str) -> str:
    """A fairness flag in words ('' when the group is not flagged)."""
    key = {
        "small share of the benefit": "brief.flag.small_share",
        "large share of the increase": "brief.flag.large_share",
    }.get(flag)
    if key is None:
        return flag
    return i18n.t(key, lang)


def estimate_note(report: dict, lang: str) -> str:
    """What the 约 / ≈ marks of a comparison of a city below full scale mean, in one line (the
    page and the brief say it alike)."""
    scale = i18n.percent(float(report.get("scale", 1.0)), lang)
    return i18n.t("brief.compare.estimate_note", lang, scale=scale)


def variants(report: dict) -> list[str]:
    """The variants of a comparison, in the order pages and briefs show them."""
    return sorted(report["variants"])


def pairing_label(report: dict, lang: str) -> str:
    """How the replications were seeded, in words."""
    paired = report["pairing"] == "common random numbers"
    return i18n.t("brief.paired" if paired else "brief.independent", lang)


# --- the comparison as frames -----------------------------------------------------------------


def headline_frame(report: dict, variant: str, lang: str) -> pd.DataFrame:
    """The headline measures of ``variant``: label, baseline, variant, difference and its CI
    (money in yuan), and the change in percent of the baseline with its CI."""
    rows = report["variants"][variant]
    out = []
    for m in HEADLINE:
        r = rows[m]
        d = r["difference"]
        scale = 100 if is_money(m) else 1
        base = r["baseline"]
        out.append(
            {
                "measure": m,
                "label": measure_label(m, lang),
                "baseline": base / scale,
                "variant": r["variant"] / scale,
                "difference": d["mean"] / scale,
                "ci_low": d["ci_low"] / scale,
                "ci_high": d["ci_high"] / scale,
                "change": _relative(d["mean"], base),
                "change_low": _relative(d["ci_low"], base),
                "change_high": _relative(d["ci_high"], base),
            }
        )
    return pd.DataFrame(out)


def _relative(value: float, base: float) -> float:
    """``value`` as a share of the baseline (NaN when there is no baseline or no value)."""
    return value / base if base and not _missing(value) else math.nan


def headline_table(report: dict, variant: str, lang: str) -> pd.DataFrame:
    """The headline table as the page shows it: every number formatted in ``lang`` (marked
    as an estimate where the comparison's city ran below full scale)."""
    rows = report["variants"][variant]
    t = lambda key: i18n.t(key, lang)  # noqa: E731
    est = expanded(report)
    table = []
    for m in HEADLINE:
        r, d, money = rows[m], rows[m]["difference"], is_money(m)
        table.append(
            {
                t("brief.col.measure"): measure_label(m, lang),
                t("brief.col.baseline"): amount(r["baseline"], lang, money=money, estimated=est),
                t("brief.col.variant"): amount(r["variant"], lang, money=money, estimated=est),
                t("brief.col.difference"): amount(
                    d["mean"], lang, money=money, signed=True, estimated=est
                ),
                t("brief.col.ci"): interval(d, lang, money=money, bare=True, estimated=est),
            }
        )
    moved = report["trips_moved"][variant]["total"]
    table.append(
        {
            t("brief.col.measure"): t("brief.trips_moved"),
            t("brief.col.baseline"): "",
            t("brief.col.variant"): "",
            t("brief.col.difference"): amount(moved["mean"], lang, money=False, estimated=est),
            t("brief.col.ci"): interval(moved, lang, money=False, bare=True, estimated=est),
        }
    )
    return pd.DataFrame(table)


def group_frame(report: dict, variant: str, measure: str, dim: str, lang: str) -> pd.DataFrame:
    """Variant minus baseline of ``measure`` for each group of ``dim`` that rides, with its
    95% CI (money in yuan)."""
    rows = report["variants"][variant]
    scale = 100 if is_money(measure) else 1
    out = []
    for r in report["fairness"][variant][dim]:
        g = r["group"]
        row = rows.get(f"{measure}.{dim}.{g}")
        if row is None:
            continue
        d = row["difference"]
        out.append(
            {
                "group": g,
                "label": group_label(dim, g, lang, report),
                "baseline": row["baseline"] / scale,
                "variant": row["variant"] / scale,
                "difference": d["mean"] / scale,
                "ci_low": d["ci_low"] / scale,
                "ci_high": d["ci_high"] / scale,
            }
        )
    return pd.DataFrame(
        out, columns=["group", "label", "baseline", "variant", "difference", "ci_low", "ci_high"]
    )


def fairness_frame(report: dict, variant: str, dim: str, lang: str) -> pd.DataFrame:
    """Who gains and who pays in ``dim``: each group's share of riders, fare per trip before
    and after (yuan), benefit (yuan: fares it no longer pays; negative, it pays more), its share
    of the benefit (or of the increase) and the flag."""
    out = [
        {
            "group": r["group"],
            "label": group_label(dim, r["group"], lang, report),
            "rider_share": r["rider_share"],
            "fare_before": r["avg_fare_before_fen"] / 100,
            "fare_after": r["avg_fare_after_fen"] / 100,
            "benefit": r["benefit_fen"] / 100,
            "benefit_share": r["benefit_share"],
            "flag": r["flag"],
        }
        for r in report["fairness"][variant][dim]
    ]
    columns = ["group", "label", "rider_share", "fare_before", "fare_after", "benefit"]
    return pd.DataFrame(out, columns=[*columns, "benefit_share", "flag"])


def fairness_table(report: dict, variant: str, dim: str, lang: str) -> pd.DataFrame:
    """The fairness table as the page shows it: every number formatted in ``lang``."""
    t = lambda key: i18n.t(key, lang)  # noqa: E731
    rows = []
    for r in report["fairness"][variant][dim]:
        rows.append(
            {
                dimension_label(dim, lang): group_label(dim, r["group"], lang, report),
                t("brief.col.rider_share"): i18n.percent(r["rider_share"], lang),
                t("brief.col.fare_before"): _fare(r["avg_fare_before_fen"], lang),
                t("brief.col.fare_after"): _fare(r["avg_fare_after_fen"], lang),
                t("brief.col.benefit"): amount(
                    r["benefit_fen"], lang, money=True, signed=True, estimated=expanded(report)
                ),
                t("brief.col.benefit_share"): i18n.percent(r["benefit_share"], lang),
                t("brief.col.flag"): flag_label(r["flag"], lang),
            }
        )
    return pd.DataFrame(rows)


def _fare(fen: float, lang: str) -> str:
    """An average fare per trip (fractional fen) in yuan with two decimals."""
    return "–" if _missing(fen) else i18n.yuan(round(fen), lang)


def hours_frame(report: dict, variant: str) -> pd.DataFrame:
    """Boardings per hour of the day, baseline and variant, and their difference with its CI."""
    return pd.DataFrame(
        [
            {
                "hour": int(r["hour"]),
                "baseline": r["baseline"],
                "variant": r["variant"],
                "difference": r["difference"]["mean"],
                "ci_low": r["difference"]["ci_low"],
                "ci_high": r["difference"]["ci_high"],
            }
            for r in report["trips_moved"][variant]["hours"]
        ]
    )


def moved_text(report: dict, variant: str, lang: str) -> str:
    """The trips moved between hours in one sentence: how many (CI), out of and into which
    hours."""
    moved = report["trips_moved"][variant]
    none = i18n.t("brief.none", lang)
    est = expanded(report)
    return i18n.t(
        "brief.moved",
        lang,
        n=amount(moved["total"]["mean"], lang, money=False, estimated=est),
        ci=interval(moved["total"], lang, money=False, estimated=est),
        losing=hour_ranges(moved["hours_losing"]) or none,
        gaining=hour_ranges(moved["hours_gaining"]) or none,
    )


# --- the comparison as figures ----------------------------------------------------------------


def _errors(frame: pd.DataFrame, mean: str, low: str, high: str) -> dict:
    """Asymmetric error bars from a frame's CI columns (none where there is no interval)."""

    def plain(values: Sequence[float]) -> list[float | None]:
        return [None if _missing(v) else float(v) for v in values]

    return {
        "type": "data",
        "array": plain(frame[high] - frame[mean]),
        "arrayminus": plain(frame[mean] - frame[low]),
        "visible": True,
    }


def change_figure(frame: pd.DataFrame, lang: str) -> go.Figure:
    """The headline measures' change in percent of the baseline, with 95% CI error bars
    (one axis for money and counts alike)."""
    shown = frame.iloc[::-1]  # plotly draws the first bar at the bottom
    fig = go.Figure(
        go.Bar(
            y=shown["label"],
            x=shown["change"],
            orientation="h",
            error_x=_errors(shown, "change", "change_low", "change_high"),
            marker_color=[FLAG_COLOUR if v < 0 else VARIANT_COLOUR for v in shown["change"]],
            hovertemplate="%{y}: %{x:+.2%}<extra></extra>",
        )
    )
    fig.update_xaxes(tickformat="+.1%", title_text=i18n.t("brief.axis.change", lang))
    return fig


def group_figure(frame: pd.DataFrame, measure: str, lang: str) -> go.Figure:
    """Variant minus baseline of a measure per group, with 95% CI error bars."""
    fig = go.Figure(
        go.Bar(
            x=frame["label"],
            y=frame["difference"],
            error_y=_errors(frame, "difference", "ci_low", "ci_high"),
            marker_color=[FLAG_COLOUR if v < 0 else VARIANT_COLOUR for v in frame["difference"]],
            hovertemplate="%{x}: %{y:+,.2f}<extra></extra>",
        )
    )
    unit = i18n.t("brief.unit_yuan", lang) if is_money(measure) else ""
    fig.update_yaxes(title_text=measure_label(measure, lang) + unit)
    return fig


def fairness_figure(frame: pd.DataFrame, lang: str) -> go.Figure:
    """Each group's share of the benefit (or burden) beside its share of riders, as horizontal
    bars (group names stay readable); flagged groups' bars in red."""
    shown = frame.iloc[::-1]  # plotly draws the first bar at the bottom
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            y=shown["label"],
            x=shown["rider_share"],
            orientation="h",
            name=i18n.t("brief.col.rider_share", lang),
            marker_color=RIDER_COLOUR,
        )
    )
    fig.add_trace(
        go.Bar(
            y=shown["label"],
            x=shown["benefit_share"],
            orientation="h",
            name=i18n.t("brief.col.benefit_share", lang),
            marker_color=[FLAG_COLOUR if f else VARIANT_COLOUR for f in shown["flag"]],
        )
    )
    fig.update_layout(barmode="group")
    fig.update_xaxes(tickformat=".0%")
    return fig


def hours_figure(frame: pd.DataFrame, lang: str, *, with_levels: bool = True) -> go.Figure:
    """Boardings by hour: the difference, variant minus baseline, with its 95% CI as bars;
    ``with_levels`` adds a panel above with the baseline's and the variant's boardings."""
    x = [f"{h:02d}:00" for h in frame["hour"]]
    diff = go.Bar(
        x=x,
        y=frame["difference"],
        error_y=_errors(frame, "difference", "ci_low", "ci_high"),
        name=i18n.t("brief.col.difference", lang),
        marker_color=[FLAG_COLOUR if v < 0 else VARIANT_COLOUR for v in frame["difference"]],
        showlegend=False,
    )
    if not with_levels:
        fig = go.Figure(diff)
        fig.update_yaxes(title_text=i18n.t("brief.col.difference", lang))
        return fig
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.55, 0.45])
    for key, colour in (("baseline", BASE_COLOUR), ("variant", VARIANT_COLOUR)):
        line = {"color": colour, "dash": "dot" if key == "baseline" else "solid"}
        name = i18n.t(f"brief.col.{key}", lang)
        fig.add_trace(go.Scatter(x=x, y=frame[key], mode="lines", name=name, line=line), 1, 1)
    fig.add_trace(diff, 2, 1)
    fig.update_yaxes(title_text=i18n.t("brief.axis.boardings", lang), row=1, col=1)
    fig.update_yaxes(title_text=i18n.t("brief.axis.difference", lang), row=2, col=1)
    return fig


# --- the briefs -------------------------------------------------------------------------------


def compare_brief(report: dict, lang: str, variant: str | None = None) -> str:
    """One A4 page in ``lang`` on what ``variant`` (default: the first, or only, variant) does
    against the baseline: what was compared, the changes of fare revenue, concession cost,
    operator income, trips and trips moved between hours as big figures with their 95% CIs, the
    plain-language summary, and charts of the headline changes, of who gains and who pays (by
    card type) and of boardings by hour. Self-contained HTML; the same input, the same bytes."""
    variant = variant or variants(report)[0]
    if variant not in report["variants"]:
        raise KeyError(f"{variant!r} is not a variant of this comparison")
    t = lambda key, **v: i18n.t(key, lang, **v)  # noqa: E731
    rows = report["variants"][variant]
    title = t("brief.compare.title", variant=variant, baseline=report["baseline"])
    facts = t(
        "brief.compare.facts",
        baseline=report["baseline"],
        variant=variant,
        days=report["days"],
        n=report["replications"],
        pairing=pairing_label(report, lang),
    )
    est = expanded(report)  # a city below full scale: every figure an estimate, marked
    figures = [_big(measure_label(m, lang), rows[m], is_money(m), lang, est) for m in BIG_FIGURES]
    moved = report["trips_moved"][variant]["total"]
    figures.append(_big(t("brief.trips_moved"), {"difference": moved}, False, lang, est))
    headline = headline_frame(report, variant, lang)
    fair = fairness_frame(report, variant, "card_type", lang)
    charts = [
        _brief_chart(change_figure(headline, lang), t("brief.chart.change"), "brief-change"),
        _brief_chart(fairness_figure(fair, lang), t("brief.chart.fairness"), "brief-fairness"),
        _brief_chart(
            hours_figure(hours_frame(report, variant), lang, with_levels=False),
            t("brief.chart.hours"),
            "brief-hours",
            wide=True,
        ),
    ]
    body = [
        f'<p class="facts">{html_page.esc(facts)}</p>',
        f'<div class="figures">{"".join(figures)}</div>',
        *([f'<p class="note">{html_page.esc(estimate_note(report, lang))}</p>'] if est else []),
        f'<p class="summary">{html_page.esc(summary(report, variant, lang))}</p>',
        f"<p>{html_page.esc(moved_text(report, variant, lang))}</p>",
        f'<div class="charts">{"".join(charts)}</div>',
        f'<p class="note">{html_page.esc(t("brief.compare.note", n=report["replications"]))}</p>',
    ]
    return _page(title, body, lang)


def run_brief(run_dir: str | Path, lang: str) -> str:
    """One A4 page in ``lang`` on a finished run: its period, cardholders and headline KPIs
    (taps, riders, fares paid, concessions) as big figures, a few sentences on them, and charts
    of taps per day, taps by hour (average day of each type) and taps by card type. Raises
    ``api.BadInput`` when the folder is not a finished run."""
    view = api.open_run(run_dir)
    try:
        return _run_brief(view, lang)
    finally:
        view.close()


def _run_brief(view: api.RunView, lang: str) -> str:
    t = lambda key, **v: i18n.t(key, lang, **v)  # noqa: E731
    meta = view.meta
    period = meta["period"]
    days = int(period["days"])
    daily = view.daily()
    hourly = view.taps_by_hour("taps")
    by_type = view.breakdown("rider_category", "taps")
    head = view.headline()  # the same figures as the Explore page's cards
    spend, concession, taps = head["fares_fen"], head["concession_fen"], head["taps"]
    riders = round(head["riders_per_day"])
    per_day = round(taps / days)
    cardholders = api.cardholders_of(meta)

    # In a run with cities below full scale every figure here is expanded by their weights, as
    # the Explore page's cards are: an estimate, marked as that page marks it.
    def count(n: int) -> str:
        return i18n.estimate(n, i18n.count(n, lang), lang, view.weighted)

    def money(fen: int) -> str:
        return i18n.estimate(fen, i18n.yuan(fen, lang, compact=True), lang, view.weighted)

    figures = [
        _figure_card(t("brief.run.cardholders"), count(cardholders), ""),
        _figure_card(t("brief.run.taps"), count(taps), t("brief.run.per_day", n=count(per_day))),
        _figure_card(t("brief.run.riders"), count(riders), ""),
        _figure_card(t("brief.run.fares"), money(spend), ""),
        _figure_card(t("brief.run.concessions"), money(concession), ""),
    ]
    text = [
        t(
            "brief.run.summary",
            days=days,
            start=i18n.date(period["start"], lang),
            end=i18n.date(period["end"], lang),
            cardholders=count(cardholders),
            taps=count(taps),
            per_day=count(per_day),
            fares=money(spend),
            concessions=money(concession),
        )
    ]
    if len(by_type) and taps:
        top = by_type.iloc[0]
        text.append(
            t(
                "brief.run.top_type",
                card=i18n.code_label("rider_category", top["key"], lang),
                share=i18n.percent(float(top["value"]) / float(by_type["value"].sum()), lang),
            )
        )
    for day_type, rows in hourly.groupby("day_type", sort=True):
        peak = rows.loc[rows["value"].idxmax()]
        text.append(
            t(
                "brief.run.peak",
                day_type=i18n.code_label("day_type", day_type, lang),
                hour=hour_ranges([f"{int(peak['hour']):02d}"]),
                n=count(round(float(peak["value"]))),
            )
        )
    charts = [
        _brief_chart(_daily_figure(daily, lang), t("brief.run.chart.daily"), "brief-daily"),
        _brief_chart(_hourly_figure(hourly, lang), t("brief.run.chart.hourly"), "brief-hourly"),
        _brief_chart(
            _card_type_figure(by_type, lang), t("brief.run.chart.card_type"), "brief-types",
            wide=True,
        ),
    ]  # fmt: skip
    facts = t(
        "brief.run.facts",
        scenario=meta.get("scenario", ""),
        start=i18n.date(period["start"], lang),
        end=i18n.date(period["end"], lang),
        days=days,
        seed=meta.get("seed", ""),
    )
    # What the marks mean, under the figures that carry them, in the Explore page's words.
    explained = [f'<p class="note">{html_page.esc(t("common.estimate_note"))}</p>']
    body = [
        f'<p class="facts">{html_page.esc(facts)}</p>',
        f'<div class="figures">{"".join(figures)}</div>',
        *(explained if view.weighted else []),
        f'<p class="summary">{html_page.esc(_sentences(text, lang))}</p>',
        f'<div class="charts">{"".join(charts)}</div>',
        f'<p class="note">{html_page.esc(t("brief.run.note"))}</p>',
    ]
    return _page(t("brief.run.title", scenario=meta.get("scenario", "")), body, lang)


def _sentences(parts: list[str], lang: str) -> str:
    return ("" if lang == "zh" else " ").join(parts)


def _daily_figure(daily: pd.DataFrame, lang: str) -> go.Figure:
    """Taps per service date, coloured by day type."""
    fig = go.Figure()
    for day_type, rows in daily.groupby("day_type", sort=True):
        fig.add_trace(
            go.Bar(
                x=[i18n.date(d.date(), lang) for d in pd.to_datetime(rows["service_date"])],
                y=rows["taps"],
                name=i18n.code_label("day_type", day_type, lang),
            )
        )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=[
        i18n.date(d.date(), lang) for d in pd.to_datetime(daily["service_date"])
    ])  # fmt: skip
    return fig


def _hourly_figure(hourly: pd.DataFrame, lang: str) -> go.Figure:
    """Taps by hour on an average day of each day type."""
    fig = go.Figure()
    for day_type, rows in hourly.groupby("day_type", sort=True):
        fig.add_trace(
            go.Scatter(
                x=[f"{int(h):02d}:00" for h in rows["hour"]],
                y=rows["value"],
                mode="lines",
                name=i18n.code_label("day_type", day_type, lang),
            )
        )
    return fig


def _card_type_figure(by_type: pd.DataFrame, lang: str) -> go.Figure:
    """Taps over the whole run by card type."""
    return go.Figure(
        go.Bar(
            x=[i18n.code_label("rider_category", k, lang) for k in by_type["key"]],
            y=by_type["value"],
            marker_color=VARIANT_COLOUR,
        )
    )


# --- the page ---------------------------------------------------------------------------------


def _big(label: str, row: dict, money: bool, lang: str, estimated: bool) -> str:
    """A big figure: the change of a measure, its percent of the baseline and its CI
    (``estimated``: the change and the CI marked as estimates, not the percent)."""
    d = row["difference"]
    parts = []
    base = row.get("baseline")
    if base:
        parts.append(i18n.percent(d["mean"] / base, lang, digits=2))
        if d["mean"] > 0:
            parts[-1] = f"+{parts[-1]}"
    parts.append(interval(d, lang, money=money, estimated=estimated))
    value = amount(d["mean"], lang, money=money, signed=True, estimated=estimated)
    return _figure_card(label, value, " · ".join(parts))


def _figure_card(label: str, value: str, sub: str) -> str:
    esc = html_page.esc
    return (
        f'<div class="figure"><div class="label">{esc(label)}</div>'
        f'<div class="value">{esc(value)}</div><div class="sub">{esc(sub)}</div></div>'
    )


def _brief_chart(fig: go.Figure, title: str, div_id: str, *, wide: bool = False) -> str:
    """A chart of a brief: fixed height, compact margins, CJK-capable font; no mode bar (it
    would be printed)."""
    fig.update_layout(
        title={"text": html_page.esc(title), "x": 0.0, "xanchor": "left", "font": {"size": 12}},
        font={"family": FONT, "size": 9},
        template=html_page.TEMPLATE,
        height=_WIDE_CHART_HEIGHT if wide else _CHART_HEIGHT,
        margin={"l": 40, "r": 40 if wide else 10, "t": 30, "b": 30},
        legend={"orientation": "h", "y": -0.2, "font": {"size": 8}},
        showlegend=len(fig.data) > 1,
    )
    config = {**html_page.PLOT_CONFIG, "displayModeBar": False}
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=config)
    return f'<div class="chart{" wide" if wide else ""}">{body}</div>'


def _page(title: str, body: list[str], lang: str) -> str:
    """The brief as a whole page: sim.html_page's shell with the brief's print style."""
    text = html_page.page(
        title, [f"<style>{_BRIEF_CSS}</style>", '<main class="brief">', *body, "</main>"]
    )
    # the shell is written for the bilingual reports (Chinese first); a brief has one language
    return text.replace('<html lang="zh-CN">', f'<html lang="{HTML_LANG[lang]}">', 1)


def to_pdf(html: str, path: str | Path) -> Path:
    """Print a brief to an A4 PDF at ``path`` with headless Chromium (``sim.pdf``); returns the
    path. Raises ``sim.pdf.PdfError`` with a one-line message when printing fails."""
    from sim.pdf import html_to_pdf  # here: only printing needs Playwright

    return html_to_pdf(html, Path(path))
