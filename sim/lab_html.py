"""The policy lab's compare report as one self-contained HTML page.

``render(report)`` turns the report dict of ``sim.api.compare`` into a page that opens without a
network: plotly.js is inlined once in the head, every chart is a plotly div with a fixed id, and
nothing on the page depends on when it was made, so the same report gives the same bytes. Both
languages are on the page, Chinese first, each paragraph and label with its English beside it.

Per variant: the plain-language summary (sim.lab_report), the headline table (baseline, variant,
difference, 95% CI), the difference of each headline measure by card type, age band, region and
medium with its CI, boardings by hour and the trips moved between hours, and who gains and who
pays (benefit share against rider share, flagged groups highlighted, and the table). Money is
shown in yuan with two decimals, from the report's integer fen.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.html_page import chart, esc, facts, page
from sim.lab import FAIRNESS_DIMENSIONS, HOUR_NAMES
from sim.lab_report import hour_ranges, summary

#: Headline measures: (measure, Chinese, English, is money). The group charts use the same list.
MEASURES: tuple[tuple[str, str, str, bool], ...] = (
    ("boardings", "乘车次数", "Boardings (trips)", False),
    ("taps", "刷卡/扫码次数", "Taps", False),
    ("fare_revenue_fen", "票款收入（元）", "Fare revenue (yuan)", True),
    (
        "concession_cost_fen",
        "优惠成本：减免票款（元）",
        "Concession cost: fares foregone (yuan)",
        True,
    ),
    ("clearing_fees_fen", "清算手续费（元）", "Clearing fees (yuan)", True),
    (
        "operator_income_fen",
        "运营企业收入（扣除手续费，元）",
        "Operator income after fees (yuan)",
        True,
    ),
)
GROUP_CHART_MEASURES = (
    "boardings",
    "fare_revenue_fen",
    "concession_cost_fen",
    "clearing_fees_fen",
    "operator_income_fen",
)
DIMENSION_EN = {
    "card_type": "card type",
    "age_band": "age band",
    "region": "region",
    "medium": "medium",
}
FLAG_TEXT = {  # the fairness flags as the page shows them
    "small share of the benefit": "受益份额偏小 small share of the benefit",
    "large share of the increase": "涨价负担偏重 large share of the increase",
}
#: The definition of sim.lab.TRIPS_MOVED_DEFINITION, in Chinese.
TRIPS_MOVED_ZH = (
    "按每小时的乘车次数（一次公交刷卡或一次地铁进站）计。时段间转移的乘车 = 各小时"
    "|方案 − 基准|之和的一半，减去|总次数变化|的一半，即增加的时段所增次数与减少的时段所减"
    "次数中较小者：在乘车总数变化已知时，把基准的时段分布变成方案的时段分布至少需要改变"
    "时段的乘车次数。按每次重复模拟（方案第r次对基准第r次）计算，报告均值及95%置信区间。"
)
FLAGGED_ROW = ' class="flagged"'
BASE_COLOUR, VARIANT_COLOUR, FLAG_COLOUR, RIDER_COLOUR = "#7f8c8d", "#2c7fb8", "#d7301f", "#bdbdbd"


def render(report: dict) -> str:
    """The whole page (a str of HTML); the same report gives the same string."""
    base = report["baseline"]
    title = f"政策对比 Policy compare: {base}"
    sections = [
        _variant_section(report, name, i) for i, name in enumerate(sorted(report["variants"]))
    ]
    return page(
        title,
        [
            _run_facts(report),
            *sections,
        ],
    )


def _run_facts(report: dict) -> str:
    """What was compared: days, replications, seeds, pairing, the fairness threshold."""
    seeds = "; ".join(
        f"{name}: {', '.join(str(s) for s in seeds)}"
        for name, seeds in sorted(report["seeds"].items())
    )
    items = [
        ("基准情景", "Baseline", report["baseline"]),
        ("模拟天数", "Days", report["days"]),
        ("重复次数", "Replications", report["replications"]),
        ("随机数", "Pairing", report["pairing"]),
        ("随机种子", "Seeds", seeds),
        ("公平性标记阈值", "Fairness flag threshold", f"{report['fairness_threshold']:.0%}"),
    ]
    return facts(items)


def _variant_section(report: dict, name: str, index: int) -> str:
    """Everything the page says about one variant."""
    rows = report["variants"][name]
    moved = report["trips_moved"][name]
    fair = report["fairness"][name]
    labels = _group_labels(report)
    groups = {dim: [r["group"] for r in fair[dim]] for dim in FAIRNESS_DIMENSIONS}  # who rides
    uid = f"v{index}"
    parts = [
        f'<section id="{uid}">',
        f"<h2>{esc(name)} 对比 vs {esc(report['baseline'])}</h2>",
        "<h3>摘要 <span class='en'>Summary</span></h3>",
        f'<p lang="zh-CN">{esc(summary(report, name, "zh"))}</p>',
        f'<p lang="en" class="en">{esc(summary(report, name, "en"))}</p>',
        "<h3>主要指标 <span class='en'>Headline measures</span></h3>",
        _headline_table(rows, moved),
        "<h3>按群体的差值（95%置信区间） <span class='en'>Difference by group (95% CI)</span></h3>",
    ]
    for measure in GROUP_CHART_MEASURES:
        figure = _group_difference_figure(rows, measure, groups, labels)
        parts.append(_div(figure, f"{uid}-groups-{measure}"))
    parts += [
        "<h3>分时段乘车与时段间转移 <span class='en'>Boardings by hour, trips moved between hours"
        "</span></h3>",
        f'<p lang="zh-CN">{esc(TRIPS_MOVED_ZH)}</p>',
        f"<p lang='en' class='en'>{esc(report['trips_moved_definition'])}</p>",
        _moved_facts(moved),
        _div(_hours_figure(moved), f"{uid}-hours"),
        _div(_hours_by_group_figure(rows, groups, labels), f"{uid}-hours-groups"),
        _moved_table(moved, labels),
        "<h3>谁受益、谁负担 <span class='en'>Who gains and who pays</span></h3>",
        _div(_fairness_figure(fair, labels), f"{uid}-fairness"),
        _fairness_tables(fair, labels),
        "</section>",
    ]
    return "\n".join(parts)


def _div(figure, div_id: str) -> str:
    """A chart of the page; the grouped charts need more height than the pages' default."""
    figure.update_layout(height=figure.layout.height or 560)
    return chart(figure, div_id, top_margin=80)


def _group_labels(report: dict) -> dict[str, dict[str, str]]:
    """Each group's label, Chinese then code ("长寿卡 longevity"), and under "dimension" each
    dimension's ("卡种 card type")."""
    zh = report["labels_zh"]
    out = {dim: {g: f"{zh[dim].get(g, g)} {g}" for g in zh[dim]} for dim in FAIRNESS_DIMENSIONS}
    out["dimension"] = {
        dim: f"{zh['dimension'][dim]} {DIMENSION_EN[dim]}" for dim in FAIRNESS_DIMENSIONS
    }
    return out


def _label(labels: dict, dim: str, group: str) -> str:
    return labels[dim].get(group, group)


# -- numbers -----------------------------------------------------------------------------------
def _value(v: float, money: bool, signed: bool = False) -> str:
    """A count (whole) or an amount in fen shown in yuan with two decimals; '' when NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    sign = "+" if signed else ""
    return f"{v / 100:{sign},.2f}" if money else f"{v:{sign},.0f}"


def _interval(d: dict, money: bool) -> str:
    if math.isnan(d["ci_low"]):
        return ""
    return f"[{_value(d['ci_low'], money)}, {_value(d['ci_high'], money)}]"


def _plain(v: float) -> float | None:
    """A number for a chart's JSON: NaN (no interval with one replication) becomes null."""
    return None if math.isnan(v) else float(v)


# -- tables ------------------------------------------------------------------------------------
def _headline_table(rows: dict, moved: dict) -> str:
    """Baseline, variant, difference and its 95% CI of each headline measure."""
    head = (
        "<tr><th>指标 <span class='en'>measure</span></th><th>基准 <span class='en'>baseline"
        "</span></th><th>方案 <span class='en'>variant</span></th><th>差值 <span class='en'>"
        "difference</span></th><th>95%置信区间 <span class='en'>95% CI</span></th></tr>"
    )
    body = []
    for measure, zh, en, money in MEASURES:
        r = rows[measure]
        d = r["difference"]
        body.append(
            f"<tr><td>{esc(zh)} <span class='en'>{esc(en)}</span></td>"
            f"<td class='num'>{_value(r['baseline'], money)}</td>"
            f"<td class='num'>{_value(r['variant'], money)}</td>"
            f"<td class='num'>{_value(d['mean'], money, signed=True)}</td>"
            f"<td class='num'>{_interval(d, money)}</td></tr>"
        )
    total = moved["total"]
    body.append(
        "<tr><td>时段间转移的乘车 <span class='en'>Trips moved between hours</span></td>"
        f"<td></td><td></td><td class='num'>{_value(total['mean'], False)}</td>"
        f"<td class='num'>{_interval(total, False)}</td></tr>"
    )
    return f"<table>{head}{''.join(body)}</table>"


def _moved_facts(moved: dict) -> str:
    total = moved["total"]
    losing = hour_ranges(moved["hours_losing"]) or "—"
    gaining = hour_ranges(moved["hours_gaining"]) or "—"
    return (
        f"<p>时段间转移的乘车：{_value(total['mean'], False)} {_interval(total, False)}；"
        f"减少的时段：{esc(losing)}；增加的时段：{esc(gaining)}。<br>"
        f"<span class='en'>Trips moved between hours: {_value(total['mean'], False)} "
        f"{_interval(total, False)}; hours losing trips: {esc(losing)}; gaining: "
        f"{esc(gaining)}.</span></p>"
    )


def _moved_table(moved: dict, labels: dict) -> str:
    """Trips moved between hours per group (groups that ride)."""
    parts = []
    for dim in FAIRNESS_DIMENSIONS:
        rows = [r for r in moved["by_group"][dim] if r["boardings_baseline"]]
        head = (
            f"<tr><th>{esc(labels['dimension'][dim])}</th><th>基准乘车次数 <span class='en'>"
            "baseline boardings</span></th><th>时段间转移 <span class='en'>trips moved</span>"
            "</th><th>95%置信区间 <span class='en'>95% CI</span></th></tr>"
        )
        body = "".join(
            f"<tr><td>{esc(_label(labels, dim, r['group']))}</td>"
            f"<td class='num'>{_value(r['boardings_baseline'], False)}</td>"
            f"<td class='num'>{_value(r['moved']['mean'], False)}</td>"
            f"<td class='num'>{_interval(r['moved'], False)}</td></tr>"
            for r in rows
        )
        parts.append(f"<table>{head}{body}</table>")
    return "\n".join(parts)


def _fairness_tables(section: dict, labels: dict) -> str:
    """Per dimension: rider share, fare per trip before and after, benefit, its share, flag."""
    parts = []
    for dim in FAIRNESS_DIMENSIONS:
        head = (
            f"<tr><th>{esc(labels['dimension'][dim])}</th>"
            "<th>乘客占比 <span class='en'>share of riders</span></th>"
            "<th>人均每次票价（前，元） <span class='en'>fare per trip before (yuan)</span></th>"
            "<th>（后） <span class='en'>after</span></th>"
            "<th>受益（元） <span class='en'>benefit (yuan)</span></th>"
            "<th>受益占比 <span class='en'>share of benefit</span></th>"
            "<th>标记 <span class='en'>flag</span></th></tr>"
        )
        body = "".join(
            f"<tr{FLAGGED_ROW if r['flag'] else ''}>"
            f"<td>{esc(_label(labels, dim, r['group']))}</td>"
            f"<td class='num'>{r['rider_share']:.1%}</td>"
            f"<td class='num'>{_value(r['avg_fare_before_fen'], True)}</td>"
            f"<td class='num'>{_value(r['avg_fare_after_fen'], True)}</td>"
            f"<td class='num'>{_value(r['benefit_fen'], True, signed=True)}</td>"
            f"<td class='num'>{r['benefit_share']:.1%}</td>"
            f"<td>{esc(FLAG_TEXT.get(r['flag'], r['flag']))}</td></tr>"
            for r in section[dim]
        )
        parts.append(f"<table>{head}{body}</table>")
    return "\n".join(parts)


# -- charts ------------------------------------------------------------------------------------
def _grid(labels: dict) -> go.Figure:
    """Four panels, one per dimension (card type, age band, region, medium)."""
    titles = [esc(labels["dimension"][dim]) for dim in FAIRNESS_DIMENSIONS]
    return make_subplots(rows=2, cols=2, subplot_titles=titles, vertical_spacing=0.18)


def _panel(i: int) -> dict[str, int]:
    return {"row": i // 2 + 1, "col": i % 2 + 1}


def _group_difference_figure(
    rows: dict, measure: str, groups: dict[str, list[str]], labels: dict
) -> go.Figure:
    """Variant minus baseline of ``measure`` per group with its 95% CI, one panel a dimension."""
    zh, en, money = next((z, e, m) for key, z, e, m in MEASURES if key == measure)
    scale = 100 if money else 1
    figure = _grid(labels)
    for i, dim in enumerate(FAIRNESS_DIMENSIONS):
        diffs = [rows[f"{measure}.{dim}.{g}"]["difference"] for g in groups[dim]]
        figure.add_trace(
            go.Bar(
                x=[esc(_label(labels, dim, g)) for g in groups[dim]],
                y=[d["mean"] / scale for d in diffs],
                error_y={
                    "type": "data",
                    "array": [_plain((d["ci_high"] - d["mean"]) / scale) for d in diffs],
                    "arrayminus": [_plain((d["mean"] - d["ci_low"]) / scale) for d in diffs],
                },
                marker_color=VARIANT_COLOUR,
                name=esc(en),
                showlegend=False,
                hovertemplate="%{x}: %{y:,.2f}<extra></extra>" if money else None,
            ),
            **_panel(i),
        )
    figure.update_layout(title=esc(f"{zh} 差值 · {en}: difference, variant − baseline (95% CI)"))
    return figure


def _hours_figure(moved: dict) -> go.Figure:
    """Boardings by hour, baseline and variant (top), and their difference with its CI."""
    hours = moved["hours"]
    x = [f"{r['hour']}:00" for r in hours]
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        subplot_titles=("乘车次数 Boardings", "差值 Difference, variant − baseline (95% CI)"),
    )
    for key, name, colour in (
        ("baseline", "基准 baseline", BASE_COLOUR),
        ("variant", "方案 variant", VARIANT_COLOUR),
    ):
        bars = go.Bar(x=x, y=[r[key] for r in hours], name=name, marker_color=colour)
        figure.add_trace(bars, row=1, col=1)
    diffs = [r["difference"] for r in hours]
    figure.add_trace(
        go.Bar(
            x=x,
            y=[d["mean"] for d in diffs],
            error_y={
                "type": "data",
                "array": [_plain(d["ci_high"] - d["mean"]) for d in diffs],
                "arrayminus": [_plain(d["mean"] - d["ci_low"]) for d in diffs],
            },
            marker_color=[FLAG_COLOUR if d["mean"] < 0 else VARIANT_COLOUR for d in diffs],
            name="差值 difference",
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    total = moved["total"]
    figure.update_layout(
        barmode="group",
        title=f"分时段乘车 Boardings by hour — 时段间转移 trips moved: "
        f"{_value(total['mean'], False)} {_interval(total, False)}",
    )
    return figure


def _hours_by_group_figure(rows: dict, groups: dict[str, list[str]], labels: dict) -> go.Figure:
    """Which groups' trips moved: variant minus baseline boardings per hour and group, a
    heat map per dimension on one colour scale centred on zero."""
    figure = _grid(labels)
    for i, dim in enumerate(FAIRNESS_DIMENSIONS):
        z = [
            [rows[f"boardings.hour_{dim}.{h}.{g}"]["difference"]["mean"] for h in HOUR_NAMES]
            for g in groups[dim]
        ]
        figure.add_trace(
            go.Heatmap(
                x=[f"{h}:00" for h in HOUR_NAMES],
                y=[esc(_label(labels, dim, g)) for g in groups[dim]],
                z=z,
                coloraxis="coloraxis",
                hovertemplate="%{y} %{x}: %{z:+,.0f}<extra></extra>",
            ),
            **_panel(i),
        )
    figure.update_layout(
        title="各群体分时段乘车差值 Boardings by hour and group: variant − baseline",
        coloraxis={"colorscale": "RdBu", "cmid": 0},
    )
    return figure


def _fairness_figure(section: dict, labels: dict) -> go.Figure:
    """Each group's share of the benefit (or burden) against its share of riders; flagged
    groups' bars in the flag colour."""
    figure = _grid(labels)
    for i, dim in enumerate(FAIRNESS_DIMENSIONS):
        rows = section[dim]
        x = [esc(_label(labels, dim, r["group"])) for r in rows]
        figure.add_trace(
            go.Bar(
                x=x,
                y=[r["rider_share"] for r in rows],
                name="乘客占比 share of riders",
                marker_color=RIDER_COLOUR,
                showlegend=i == 0,
            ),
            **_panel(i),
        )
        figure.add_trace(
            go.Bar(
                x=x,
                y=[r["benefit_share"] for r in rows],
                name="受益占比 share of benefit (or of the increase)",
                marker_color=[FLAG_COLOUR if r["flag"] else VARIANT_COLOUR for r in rows],
                text=["⚑" if r["flag"] else "" for r in rows],
                textposition="outside",
                showlegend=i == 0,
            ),
            **_panel(i),
        )
    figure.update_layout(
        barmode="group",
        title="受益占比与乘客占比（红色：不成比例） Share of benefit vs share of riders "
        "(red: flagged)",
    )
    figure.update_yaxes(tickformat=".0%")
    return figure
