"""The policy lab's report texts: the Markdown report and the plain-language summary of each
variant, in English and Chinese, written from the numbers of ``sim.lab.summarise``.

The summary's figures are written as the dashboard writes them, with the formats both share
(``sim/formats.py``; the dashboard's headline cards show the same numbers beside it): a change
rounded to the whole fen or trip once, money as yuan with two decimals, and in Chinese 万/亿 from
ten thousand up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sim import formats
from sim.lab import FAIRNESS_DIMENSIONS, REPORT_HEADLINE

#: The summary's wording per language; every figure in it comes from the report.
_TEXT = {
    "en": {
        "opening": "Over {days} days and {n} replications ({pairing}), {variant} compared "
        "with {base}:",
        "revenue": "fare revenue {dir} by {abs} ({ci})",
        "cost": "the concession cost (fares foregone) {dir} by {abs} ({ci})",
        "income": "operator income after clearing fees {dir} by {abs} ({ci})",
        "fees": "the clearing fee total {dir} by {abs} ({ci})",
        "ci_change": "95% CI of the change {lo} to {hi}",
        "ci": "95% CI {lo} to {hi}",
        "no_ci": "one replication: no interval",
        "moved": "{n} trips move between hours ({ci})",
        "moved_hours": ", out of {losing}",
        "moved_into": " into {gaining}",
        "moved_group": "; {group}: {n} of them",
        "none_moved": "no trip moves between hours",
        "trips": "the number of trips (fare transactions, free rides included) {dir} by {abs} "
        "({pct:+.2%}; {ci})",
        "rises": "rises",
        "falls": "falls",
        "unchanged": "is unchanged",
        "unclear": " — not distinguishable from no change",
        "join": "; ",
        "list": ", ",
        "flagged": "{group} ({flag})",
        "flags": "Flagged as disproportionate (threshold {t:.0%}): {groups}.",
        "no_flags": "No group is flagged as disproportionate (threshold {t:.0%}).",
        "pairing": {"common random numbers": "paired seeds", "independent seeds": "own seeds"},
        "flag": {
            "small share of the benefit": "small share of the benefit",
            "large share of the increase": "large share of the increase",
        },
    },
    "zh": {
        "opening": "在{days}天、{n}次重复模拟（{pairing}）中，与{base}相比，{variant}：",
        "revenue": "票款收入{dir}{abs}（{ci}）",
        "cost": "优惠成本（减免的票款）{dir}{abs}（{ci}）",
        "income": "运营企业扣除清算手续费后的收入{dir}{abs}（{ci}）",
        "fees": "清算手续费{dir}{abs}（{ci}）",
        "ci_change": "95%置信区间{lo}至{hi}",
        "ci": "95%置信区间{lo}至{hi}",
        "no_ci": "仅一次重复，无置信区间",
        "moved": "{n}次乘车改到其他时段（{ci}）",
        "moved_hours": "，移出{losing}",
        "moved_into": "，移入{gaining}",
        "moved_group": "；其中{group}{n}次",
        "none_moved": "没有乘车改到其他时段",
        "trips": "乘车交易次数（含免费乘车）{dir}{abs}次（{pct:+.2%}；{ci}）",
        "rises": "增加",
        "falls": "减少",
        "unchanged": "不变",
        "unclear": "，与无变化无法区分",
        "join": "；",
        "list": "、",
        "flagged": "{group}（{flag}）",
        "flags": "被标记为负担或受益不成比例的群体（阈值{t:.0%}）：{groups}。",
        "no_flags": "没有群体被标记为不成比例（阈值{t:.0%}）。",
        "pairing": {"common random numbers": "配对随机数", "independent seeds": "独立随机数"},
        "flag": {
            "small share of the benefit": "受益份额偏小",
            "large share of the increase": "涨价负担偏重",
        },
    },
}


def expanded(report: dict) -> bool:
    """Whether a comparison's figures are expanded from a city simulated below full scale
    (``scale`` < 1: each stands for 1/scale), so estimates, marked 约 / ≈ where shown. A report
    written before it kept its scale is taken as full scale."""
    return float(report.get("scale", 1.0)) < 1.0


def summary(report: dict, variant: str, lang: str) -> str:
    """One paragraph in ``lang`` ("en" or "zh") on what ``variant`` does against the baseline:
    fare revenue, concession cost, operator income, clearing fees and trips with their 95% CIs,
    the trips moved between hours (out of which hours, into which, and the card type that
    moved most), and the flagged groups. Figures expanded from a city below full scale
    (``expanded``) are marked as estimates; the percentages are not (a share is no total)."""
    text = _TEXT[lang]
    rows = report["variants"][variant]
    names = _group_names(report, lang)
    est = expanded(report)

    def change(what: str, measure: str, money: bool) -> str:
        return _change(text, what, rows[measure], lang, money=money, estimated=est)

    parts = [
        change("revenue", "fare_revenue_fen", True),
        change("cost", "concession_cost_fen", True),
        change("income", "operator_income_fen", True),
        change("fees", "clearing_fees_fen", True),
        change("trips", "fare_transactions", False),
        _moved(text, report["trips_moved"][variant], names["card_type"], lang, est),
    ]
    opening = text["opening"].format(
        days=report["days"],
        n=report["replications"],
        pairing=text["pairing"][report["pairing"]],
        base=report["baseline"],
        variant=variant,
    )
    flagged = [
        text["flagged"].format(group=names[dim][r["group"]], flag=text["flag"][r["flag"]])
        for dim in FAIRNESS_DIMENSIONS  # fixed order, also for a report read back from JSON
        for r in report["fairness"][variant][dim]
        if r["flag"]
    ]
    t = report["fairness_threshold"]
    closing = text["flags"].format(t=t, groups=text["list"].join(flagged)) if flagged else None
    closing = closing or text["no_flags"].format(t=t)
    if lang == "zh":
        return f"{opening}{text['join'].join(parts)}。{closing}"
    return f"{opening} {text['join'].join(parts)}. {closing}"


def _group_names(report: dict, lang: str) -> dict[str, dict[str, str]]:
    """How each fairness group is named in ``lang``: "age_band 70+" or "年龄段70+岁"."""
    out: dict[str, dict[str, str]] = {}
    labels = report["labels_zh"]
    for dim, rows in next(iter(report["fairness"].values())).items():
        if lang == "zh":
            out[dim] = {
                r["group"]: labels["dimension"][dim] + labels[dim].get(r["group"], r["group"])
                for r in rows
            }
        else:
            out[dim] = {r["group"]: f"{dim} {r['group']}" for r in rows}
    return out


def _moved(
    text: dict, section: dict, card_type_names: dict[str, str], lang: str, estimated: bool
) -> str:
    """The trips moved between hours as words: how many (95% CI), out of and into which hours
    (those whose change is clear of zero), and the card type whose riders moved most
    (``estimated``: counts marked as estimates)."""
    total = section["total"]
    if total["mean"] <= 0:
        return text["none_moved"]
    fmt = _formatter(lang, money=False, estimated=estimated)
    ci = _interval(text, "ci", total, fmt)
    words = text["moved"].format(n=fmt(total["mean"]), ci=ci)
    if not _missing(total["ci_low"]) and total["ci_low"] <= 0:  # within what runs differ by
        words += text["unclear"]
    if section["hours_losing"]:
        words += text["moved_hours"].format(losing=hour_ranges(section["hours_losing"]))
    if section["hours_gaining"]:
        words += text["moved_into"].format(gaining=hour_ranges(section["hours_gaining"]))
    top = max(section["by_group"]["card_type"], key=lambda r: r["moved"]["mean"])
    if top["moved"]["mean"] > 0:
        words += text["moved_group"].format(
            group=card_type_names[top["group"]], n=fmt(top["moved"]["mean"])
        )
    return words


def hour_ranges(hours: Sequence[str]) -> str:
    """Hours ("07", "08", "17") as ranges: "07:00-09:00, 17:00-18:00"."""
    spans: list[list[int]] = []
    for h in sorted(int(x) for x in hours):
        if spans and spans[-1][1] == h:
            spans[-1][1] = h + 1
        else:
            spans.append([h, h + 1])
    return ", ".join(f"{a:02d}:00-{b:02d}:00" for a, b in spans)


def _formatter(lang: str, *, money: bool, estimated: bool):
    """How a figure of the summary is written: money or a count, marked as an estimate where
    ``estimated`` (``sim.formats.estimate``: never a zero)."""
    text = money_text if money else count_text
    return lambda v: formats.estimate(round(v), text(v, lang), lang, estimated)


def _change(text: dict, what: str, row: dict, lang: str, *, money: bool, estimated: bool) -> str:
    """One measure's change as words: direction, size, CI (``money``: fen, shown in yuan;
    ``estimated``: figures marked as estimates)."""
    d = row["difference"]
    mean = d["mean"]
    direction = text["rises"] if mean > 0 else text["falls"] if mean < 0 else text["unchanged"]
    fmt = _formatter(lang, money=money, estimated=estimated)
    pct = mean / row["baseline"] if row["baseline"] else 0.0
    words = text[what].format(
        dir=direction, abs=fmt(abs(mean)), ci=_interval(text, "ci_change", d, fmt), pct=pct
    )
    if (
        not _missing(d["ci_low"])
        and not _missing(d["ci_high"])
        and d["ci_low"] <= 0 <= d["ci_high"]
    ):
        words += text["unclear"]
    return words


def _missing(value: float | None) -> bool:
    """A figure the report does not have: a CI of one replication (NaN; null in JSON)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _interval(text: dict, key: str, d: dict, fmt) -> str:
    """The 95% CI of ``d`` in words, or that one replication has none (never "nan")."""
    if _missing(d.get("ci_low")) or _missing(d.get("ci_high")):
        return text["no_ci"]
    return text[key].format(lo=fmt(d["ci_low"]), hi=fmt(d["ci_high"]))


def money_text(fen: float, lang: str) -> str:
    """An amount of fen as the dashboard's headline cards show it (``dashboard.brief.amount``
    with ``money``): rounded once to the whole fen (Python's ``round``), then yuan with two
    decimals, in Chinese 万元/亿元 from ten thousand yuan up: ¥1,149.98, 1,149.98 元, 26.48万元."""
    return formats.yuan(round(fen), lang, compact=True)


def count_text(n: float, lang: str) -> str:
    """A count as the dashboard shows it (``dashboard.i18n.count`` of the whole number):
    in Chinese 万/亿 from ten thousand up, in English with thousands separators."""
    return formats.count(round(n), lang)


def markdown(report: dict, headline: Sequence[str] = REPORT_HEADLINE) -> str:
    """The report as Markdown: per variant, the summary in English and Chinese, the headline
    measures with their differences and CIs, the fairness tables and the trips moved between
    hours."""
    lines = [
        f"## Compare against {report['baseline']} "
        f"({report['replications']} replications, {report['pairing']})"
    ]
    for name, rows in report["variants"].items():
        lines += [
            "",
            f"### {name}",
            "",
            summary(report, name, "en"),
            "",
            summary(report, name, "zh"),
        ]
        lines += ["", "| measure | baseline | variant | difference (95% CI) |"]
        lines.append("|---|---:|---:|---|")
        for m in headline:
            r = rows[m]
            d = r["difference"]
            lines.append(
                f"| {m} | {r['baseline']:,.0f} | {r['variant']:,.0f} | {d['mean']:+,.0f} {_ci(d)} |"
            )
        lines += _fairness_markdown(report["fairness"][name], report["fairness_threshold"])
        lines += _moved_markdown(report["trips_moved"][name], report["trips_moved_definition"])
    return "\n".join(lines) + "\n"


def _ci(d: dict) -> str:
    if _missing(d.get("ci_low")) or _missing(d.get("ci_high")):
        return ""  # one replication: no interval
    return f"[{d['ci_low']:,.0f}, {d['ci_high']:,.0f}]"


def _moved_markdown(section: dict, definition: str) -> list[str]:
    """The trips moved between hours: the total, boardings per hour, and each group's moves."""
    total = section["total"]
    lines = [
        "",
        "#### Trips moved between hours",
        "",
        definition,
        "",
        f"Trips moved: {total['mean']:,.0f} {_ci(total)}; hours losing trips: "
        f"{hour_ranges(section['hours_losing']) or 'none'}; gaining: "
        f"{hour_ranges(section['hours_gaining']) or 'none'}.",
        "",
        "| hour | baseline boardings | variant | difference (95% CI) |",
        "|---|---:|---:|---|",
    ]
    for r in section["hours"]:
        d = r["difference"]
        lines.append(
            f"| {r['hour']} | {r['baseline']:,.0f} | {r['variant']:,.0f} "
            f"| {d['mean']:+,.0f} {_ci(d)} |"
        )
    for dim in FAIRNESS_DIMENSIONS:
        rows = section["by_group"][dim]
        lines += ["", f"| {dim} | baseline boardings | trips moved (95% CI) |", "|---|---:|---|"]
        for r in rows:
            if r["boardings_baseline"]:
                m = r["moved"]
                lines.append(
                    f"| {r['group']} | {r['boardings_baseline']:,.0f} | {m['mean']:,.0f} {_ci(m)} |"
                )
    return lines


def _fairness_markdown(section: dict[str, list[dict]], threshold: float) -> list[str]:
    lines = ["", f"#### Who gains and who pays (flag threshold {threshold:.0%})"]
    for dim in FAIRNESS_DIMENSIONS:
        rows = section[dim]
        lines += [
            "",
            f"| {dim} | share of riders | fare/trip before | after (fen) | benefit (fen) "
            "| share of benefit | flag |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['group']} | {r['rider_share']:.1%} | {r['avg_fare_before_fen']:.1f} "
                f"| {r['avg_fare_after_fen']:.1f} | {r['benefit_fen']:+,.0f} "
                f"| {r['benefit_share']:.1%} | {r['flag']} |"
            )
    return lines
