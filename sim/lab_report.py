"""The policy lab's report texts: the Markdown report and the plain-language summary of each
variant, in English and Chinese, written from the numbers of ``sim.lab.summarise``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from sim.lab import HEADLINE

#: The summary's wording per language; every figure in it comes from the report.
_TEXT = {
    "en": {
        "opening": "Over {days} days and {n} replications ({pairing}), {variant} compared "
        "with {base}:",
        "revenue": "fare revenue {dir} by ¥{abs} (95% CI of the change {lo} to {hi} yuan)",
        "cost": "the concession cost (fares foregone) {dir} by ¥{abs} "
        "(95% CI of the change {lo} to {hi} yuan)",
        "trips": "the number of fare-paying trips {dir} by {abs} ({pct:+.2%}; "
        "95% CI of the change {lo} to {hi})",
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
        "revenue": "票款收入{dir}{abs}元（95%置信区间{lo}至{hi}元）",
        "cost": "优惠成本（减免的票款）{dir}{abs}元（95%置信区间{lo}至{hi}元）",
        "trips": "付费乘车次数{dir}{abs}次（{pct:+.2%}；95%置信区间{lo}至{hi}）",
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


def summary(report: dict, variant: str, lang: str) -> str:
    """One paragraph in ``lang`` ("en" or "zh") on what ``variant`` does against the baseline:
    fare revenue, concession cost and trips with their 95% CIs, and the flagged groups."""
    text = _TEXT[lang]
    rows = report["variants"][variant]
    parts = [
        _change(text, "revenue", rows["fare_revenue_fen"], scale=100),
        _change(text, "cost", rows["concession_cost_fen"], scale=100),
        _change(text, "trips", rows["fare_transactions"], scale=1),
    ]
    opening = text["opening"].format(
        days=report["days"],
        n=report["replications"],
        pairing=text["pairing"][report["pairing"]],
        base=report["baseline"],
        variant=variant,
    )
    names = _group_names(report, lang)
    flagged = [
        text["flagged"].format(group=names[dim][r["group"]], flag=text["flag"][r["flag"]])
        for dim, groups in report["fairness"][variant].items()
        for r in groups
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


def _change(text: dict, what: str, row: dict, scale: int) -> str:
    """One measure's change as words: direction, size, CI (money in yuan when scale is 100)."""
    d = row["difference"]
    mean = d["mean"]
    direction = text["rises"] if mean > 0 else text["falls"] if mean < 0 else text["unchanged"]
    fmt = (lambda v: f"{v / scale:,.2f}") if scale != 1 else (lambda v: f"{v:,.0f}")
    pct = mean / row["baseline"] if row["baseline"] else 0.0
    words = text[what].format(
        dir=direction, abs=fmt(abs(mean)), lo=fmt(d["ci_low"]), hi=fmt(d["ci_high"]), pct=pct
    )
    if not math.isnan(d["ci_low"]) and d["ci_low"] <= 0 <= d["ci_high"]:
        words += text["unclear"]
    return words


def markdown(report: dict, headline: Sequence[str] = HEADLINE) -> str:
    """The report as Markdown: per variant, the summary in English and Chinese, the headline
    measures with their differences and CIs, and the fairness tables."""
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
            ci = f"[{d['ci_low']:,.0f}, {d['ci_high']:,.0f}]" if not math.isnan(d["ci_low"]) else ""
            lines.append(
                f"| {m} | {r['baseline']:,.0f} | {r['variant']:,.0f} | {d['mean']:+,.0f} {ci} |"
            )
        lines += _fairness_markdown(report["fairness"][name], report["fairness_threshold"])
    return "\n".join(lines) + "\n"


def _fairness_markdown(section: dict[str, list[dict]], threshold: float) -> list[str]:
    lines = ["", f"#### Who gains and who pays (flag threshold {threshold:.0%})"]
    for dim, rows in section.items():
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
