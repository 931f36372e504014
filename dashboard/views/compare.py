"""Compare policies: open an earlier comparison or sweep, or run a new comparison, and show it.

A comparison (``sim.api.compare``) runs a baseline and its variants with common random numbers
and reports every measure's difference with its 95% CI; the page shows, per variant, the
plain-language summary, the headline table and changes, the difference by group, who gains and
who pays, and the trips moved between hours, with a one-page brief (``dashboard.brief``) to
download as HTML or PDF. A sweep (``sim.api.sweep``, written by the command line) is shown as
its output against a parameter with the 95% CI band.

Variants are policy overlays from ``scenarios/policies/`` (each writes only the policy settings
it changes on top of the Nantong scenario) and, optionally, the user's own ``--set`` lines. A
policy is applied to the chosen baseline: when the baseline is the file the policy extends, the
policy file is loaded as it is; otherwise its own settings become ``--set`` overrides of the
baseline (``sim.api.load_policy``), which is what ``extends:`` does (mappings merge key by key,
everything else is replaced), so the small test city can try any policy in seconds.

A comparison goes to ``compare-<name>`` in the runs folder. One already there is replaced only
once the user ticks "replace" for that folder (asked after a start the page refused), and a
folder holding anything but a comparison is never written to. The comparison is computed in a
hidden folder beside it and its files are moved in only when it has finished, so a comparison
that fails leaves the earlier one whole.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative
from streamlit.delta_generator import DeltaGenerator

from dashboard import brief, charts, i18n, present
from dashboard.state import (
    FOLDER_NAME,
    ROOT,
    lang,
    occupied,
    offer_replace,
    replace_agreed,
    replace_box,
    runs_root,
    tr,
    withdraw_offer,
)
from sim import api
from sim.lab_report import expanded
from sim.sweep_report import estimated

SCENARIO_DIR = ROOT / "scenarios"
POLICY_DIR = SCENARIO_DIR / "policies"
FAST_SCENARIO = SCENARIO_DIR / "small_ci.yaml"  # the quick choice, listed first
COMPARE_FILE, SWEEP_FILE = "compare.json", "sweep.json"
#: What a result file must hold for the page to show it.
COMPARE_KEYS = (
    "baseline",
    "variants",
    "fairness",
    "trips_moved",
    "days",
    "replications",
    "pairing",
    "fairness_threshold",
    "labels_zh",
)
SWEEP_KEYS = ("base", "design", "parameters", "outputs", "points", "failed", "days", "replications")
PICK = "compare.pick"  # the chosen result folder (set by a new comparison too)
REPLACE_OFFER = "compare.replace_offer"  # the result folder the user is asked about replacing
HELD_ERRORS = "compare.held_errors"  # a refusal's messages, kept across the rerun that asks
PALETTE = qualitative.Plotly  # the sweep chart's lines, one per value of the second parameter


# --- finding results ------------------------------------------------------------------------


def found_results(root: Path) -> list[Path]:
    """The comparisons' and sweeps' result files (``compare.json``, ``sweep.json``) in ``root``
    and up to two levels below it (a comparison is often kept in a folder of its study), newest
    first."""
    if not root.is_dir():
        return []
    levels = [[root]]
    for _ in range(2):
        levels.append(
            [
                child
                for folder in levels[-1]
                for child in _subfolders(folder)
                if child.name != "points"  # a sweep's finished points: thousands of files
            ]
        )
    found = [
        folder / name
        for level in levels
        for folder in level
        for name in (COMPARE_FILE, SWEEP_FILE)
        if (folder / name).is_file()
    ]
    return sorted(found, key=lambda path: (-_mtime(path), str(path)))


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # unreadable folder: nothing to list there
        return []


def kind_of(path: Path) -> str:
    """ "compare" or "sweep": what a result file holds."""
    return "compare" if path.name == COMPARE_FILE else "sweep"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(max_entries=16, show_spinner=False)
def _read_compare(path: str, written: float) -> dict:
    # ``written`` is part of the cache key: a comparison run again into its folder is re-read
    return api.load_compare_report(path)


@st.cache_data(max_entries=16, show_spinner=False)
def _read_sweep(path: str, written: float) -> dict:
    return api.load_sweep_report(path)


def _load(path: Path) -> dict | None:
    """The result file at ``path``, or None after saying what is wrong with it."""
    compare = kind_of(path) == "compare"
    reader, keys = (_read_compare, COMPARE_KEYS) if compare else (_read_sweep, SWEEP_KEYS)
    try:
        data = reader(str(path), _mtime(path))
    except (OSError, ValueError, api.BadInput) as exc:
        st.error(tr("compare.unreadable", path=str(path), error=" ".join(str(exc).split())))
        return None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        st.error(tr("compare.not_a_report", path=str(path), keys=", ".join(missing)))
        return None
    return data


def open_section() -> Path | None:
    """Choose an earlier comparison or sweep under the runs folder; its result file."""
    root = runs_root()
    found = found_results(root)
    if not found:
        st.info(tr("compare.none_found", root=str(root)))
        return None
    options = [str(path) for path in found]
    if st.session_state.get(PICK) not in options:
        st.session_state.pop(PICK, None)  # another runs folder, or the folder is gone

    def label(option: str) -> str:
        path = Path(option)
        folder = path.parent
        shown = (
            folder.relative_to(root) if folder != root and folder.is_relative_to(root) else folder
        )
        return f"{tr(f'compare.kind.{kind_of(path)}')} · {shown}"

    chosen = st.selectbox(
        # The newest is shown at once: a user who just ran a comparison wants to see it.
        tr("compare.pick"), options, index=0, format_func=label, key=PICK,
        placeholder=tr("compare.pick_placeholder"), help=tr("compare.pick_help"),
    )  # fmt: skip
    return Path(chosen) if chosen else None


# --- a new comparison -----------------------------------------------------------------------


def base_choices() -> list[Path]:
    """Scenarios a comparison can start from: the small test city first, then the others."""
    files = sorted(p for p in SCENARIO_DIR.glob("*.yaml") if p.is_file())
    return sorted(files, key=lambda p: (p != FAST_SCENARIO, p.name))


def policy_choices() -> list[Path]:
    """The shipped policy overlays."""
    return sorted(p for p in POLICY_DIR.glob("*.yaml") if p.is_file())


def _lines(text: str) -> list[str]:
    """The ``--set`` lines of the own-variant box (blank lines and # comments left out)."""
    return [s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")]


def new_section() -> Path | None:
    """The form of a new comparison; runs it when submitted. Returns its folder when done.
    A bad value is shown under the field it came from, with the engine's message."""
    bases = [str(p) for p in base_choices()]
    policies = [str(p) for p in policy_choices()]
    slots: dict[str, DeltaGenerator] = {}
    with st.form("compare.form"):
        c1, c2 = st.columns(2)
        base_choice = c1.selectbox(
            tr("compare.base"), bases, key="compare.f_base", help=tr("compare.base_help"),
            format_func=lambda p: str(Path(p).relative_to(ROOT)),
        )  # fmt: skip
        slots["base"] = c1.empty()
        picked = c2.multiselect(
            tr("compare.policies"), policies, key="compare.f_policies",
            help=tr("compare.policies_help"), format_func=lambda p: Path(p).stem,
            placeholder=tr("compare.policies_placeholder"),
        )  # fmt: skip
        slots["policies"] = c2.empty()
        c1, c2 = st.columns([3, 1])
        custom = c1.text_area(
            tr("compare.custom"), key="compare.f_custom", help=tr("compare.custom_help"),
            placeholder="fares.transfer.window_min=90", height=80,
        )  # fmt: skip
        slots["custom"] = c1.empty()
        custom_name = c2.text_input(
            tr("compare.custom_name"), value=tr("compare.custom_default"), key="compare.f_cn"
        )
        c1, c2, c3 = st.columns(3)
        days = c1.number_input(tr("compare.days"), value=7, step=1, key="compare.f_days")
        slots["days"] = c1.empty()
        replications = c2.number_input(
            tr("compare.replications"), value=3, step=1, key="compare.f_reps",
            help=tr("compare.replications_help"),
        )  # fmt: skip
        slots["replications"] = c2.empty()
        name = c3.text_input(tr("compare.name"), key="compare.f_name", help=tr("compare.name_help"))
        slots["name"] = c3.empty()
        # asked after a start refused for a taken folder: the user's explicit yes
        replace_box(REPLACE_OFFER, "compare.replace", c3)
        slots["general"] = st.empty()
        start = st.form_submit_button(
            tr("compare.start"), type="primary", icon=":material/play_arrow:"
        )
    held: dict[str, list[str]] = st.session_state.pop(HELD_ERRORS, {})
    if not start:
        _show_errors(held, slots)
        return None
    errors: dict[str, list[str]] = {}
    folder = _run(
        Path(base_choice), [Path(p) for p in picked], custom, custom_name.strip(), int(days),
        int(replications), name.strip(), errors,
    )  # fmt: skip
    _show_errors(errors, slots)
    return folder


def _show_errors(errors: dict[str, list[str]], slots: dict[str, DeltaGenerator]) -> None:
    for field, messages in errors.items():
        with slots.get(field, slots["general"]).container():
            for message in messages:
                st.error(message, icon=":material/error:")


def _refuse_taken(out: Path, errors: dict[str, list[str]]) -> bool:
    """Whether ``out`` must not be written now; if so, says why under the name field. A
    comparison there is replaced only after the user ticked "replace" for it: the first
    refusal offers that box (the form is drawn again, with the message kept, to show it)."""
    if not occupied(out):
        return False
    if (out / COMPARE_FILE).is_file() and replace_agreed(REPLACE_OFFER, out.name):
        return False
    if (out / COMPARE_FILE).is_file():
        offer_replace(REPLACE_OFFER, out.name, "compare.f_replace:")
        st.session_state[HELD_ERRORS] = {
            "name": [tr("compare.out_exists", folder=out.name, path=str(out))]
        }
        st.rerun()
    withdraw_offer(REPLACE_OFFER)
    errors.setdefault("name", []).append(tr("compare.out_taken", path=str(out)))
    return True


def _compare_into(out: Path, base, variants: list, replications: int) -> None:
    """``api.compare`` written to a fresh hidden folder beside ``out``, its files then moved
    into ``out``: whatever ``api.compare`` does with an existing folder, it is given a new one,
    and a comparison that fails leaves what ``out`` held untouched."""
    trial = out.with_name(f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        api.compare(base, variants, replications=replications, out_dir=trial)
        out.mkdir(parents=True, exist_ok=True)
        for made in sorted(trial.iterdir()):
            target = out / made.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(made, target)
    finally:
        shutil.rmtree(trial, ignore_errors=True)


def _run(
    base_path: Path,
    policies: list[Path],
    custom: str,
    custom_name: str,
    days: int,
    replications: int,
    name: str,
    errors: dict[str, list[str]],
) -> Path | None:
    """Load the baseline and every variant, run the comparison, and return its folder; on a
    problem, fill ``errors`` (form field: messages) and return None."""

    def fail(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    try:
        base = api.load_scenario(base_path, days=days)
    except api.BadInput as exc:
        fail("days" if str(exc).startswith("from --days") else "base", str(exc))
        return None
    if isinstance(base, api.MultiCityScenario):
        fail("base", tr("compare.multi_city"))
        return None
    variants = []
    for policy in policies:
        try:
            variants.append(api.load_policy(policy, base_path, days=days))
        except api.BadInput as exc:
            fail("policies", tr("compare.policy_error", policy=policy.stem, error=str(exc)))
    lines = _lines(custom)
    if lines:
        label = custom_name or tr("compare.custom_default")
        try:
            variants.append(
                api.load_scenario(base_path, [*lines, f"name={json.dumps(label)}"], days=days)
            )
        except api.BadInput as exc:
            fail("custom", str(exc))
    if not variants and not errors:
        fail("policies", tr("compare.no_variant"))
    if name and not FOLDER_NAME.fullmatch(name):
        fail("name", tr("compare.bad_name", name=name))
    if errors:
        return None
    auto = re.sub(r"[^\w.-]+", "_", f"{base.name}-vs-{'-'.join(v.name for v in variants)}")
    out = runs_root() / f"compare-{name or auto[:100]}"
    if _refuse_taken(out, errors):
        return None
    running = tr(
        "compare.running", scenarios=1 + len(variants), replications=replications, days=days
    )
    with st.status(running, expanded=False) as status:
        try:
            _compare_into(out, base, variants, replications)
        except api.BadInput as exc:
            status.update(label=tr("compare.failed"), state="error")
            field = "replications" if str(exc).startswith("--replications") else "general"
            fail(field, str(exc))
            return None
        except api.InvariantViolation as exc:
            status.update(label=tr("compare.failed"), state="error")
            fail("general", tr("compare.invariant", error=" ".join(str(exc).split())))
            return None
        except OSError as exc:  # the results folder cannot be written (permissions, full disk)
            status.update(label=tr("compare.failed"), state="error")
            fail("name", tr("compare.unwritable", folder=str(out), error=str(exc)))
            return None
        status.update(label=tr("compare.done", folder=str(out)), state="complete")
    withdraw_offer(REPLACE_OFFER)  # a yes is for one comparison, not the next
    return out


# --- showing a comparison -------------------------------------------------------------------


def show_compare(path: Path) -> None:
    """A comparison (its ``compare.json``): what was compared, then each variant (a tab each
    when there are several)."""
    report = _load(path)
    if report is None:
        return
    folder = path.parent
    lg = lang()
    names = brief.variants(report)
    st.subheader(tr("compare.result_title", variants=", ".join(names), baseline=report["baseline"]))
    st.caption(
        tr(
            "compare.facts",
            days=report["days"],
            n=report["replications"],
            pairing=brief.pairing_label(report, lg),
            threshold=i18n.percent(report["fairness_threshold"], lg, digits=0),
            folder=str(folder),
        )
    )
    if expanded(report):  # a city below full scale: its figures are marked, and why said once
        st.caption(brief.estimate_note(report, lg))
    tabs = st.tabs(names) if len(names) > 1 else [st.container()]
    for i, (name, tab) in enumerate(zip(names, tabs, strict=True)):
        with tab:
            _variant(report, folder, name, i)


def _variant(report: dict, folder: Path, name: str, i: int) -> None:
    """Everything the page shows about one variant; ``i`` keeps its widgets' keys apart."""
    lg = lang()
    rows = report["variants"][name]
    st.markdown(f"#### {tr('compare.summary')}")
    st.info(api.compare_summary(report, name, lg), icon=":material/summarize:")
    _headline(report, name, rows, i)
    _groups(report, name, i)
    _fairness(report, name, i)
    _moved(report, name, i)
    path = folder / COMPARE_FILE
    written = _mtime(path)
    present.offer_brief(
        f"compare.{i}",
        name,
        lambda lg: _brief_html(str(path), written, lg, name),
        f"{path}:{written}:{name}",
    )


def _headline(report: dict, name: str, rows: dict, i: int) -> None:
    lg = lang()
    st.markdown(f"#### {tr('compare.headline')}")
    cards = st.columns(len(brief.BIG_FIGURES) + 1)
    est = expanded(report)
    for col, m in zip(cards, brief.BIG_FIGURES, strict=False):
        _metric(col, brief.measure_label(m, lg), rows[m], brief.is_money(m), est)
    moved = report["trips_moved"][name]["total"]
    _metric(cards[-1], tr("compare.moved"), {"difference": moved}, False, est)
    st.dataframe(brief.headline_table(report, name, lg), hide_index=True, width="stretch")
    frame = brief.headline_frame(report, name, lg)
    fig = charts.style(brief.change_figure(frame, lg), tr("compare.chart.change"))
    fig.update_layout(showlegend=False)
    charts.show(fig, frame, f"change-{i}")


def _metric(col, label: str, row: dict, money: bool, estimated: bool) -> None:
    """A headline card: the change, its percent of the baseline, and its CI under it
    (``estimated``: the change and the CI marked as estimates)."""
    lg = lang()
    d = row["difference"]
    base = row.get("baseline")
    delta = None
    if base and not math.isnan(d["mean"]):
        delta = i18n.percent(d["mean"] / base, lg, digits=2)
        delta = f"+{delta}" if d["mean"] > 0 else delta
    shown = brief.amount(d["mean"], lg, money=money, signed=True, estimated=estimated)
    col.metric(label, shown, delta, delta_color="off")
    col.caption(brief.interval(d, lg, money=money, estimated=estimated))


def _groups(report: dict, name: str, i: int) -> None:
    lg = lang()
    st.markdown(f"#### {tr('compare.by_group')}")
    c1, c2 = st.columns(2)
    measure = c1.selectbox(
        tr("compare.group_measure"), brief.GROUP_MEASURES, key=f"compare.g_measure.{i}",
        format_func=lambda m: brief.measure_label(m, lg), index=3,
    )  # fmt: skip
    dim = c2.selectbox(
        tr("compare.group_dimension"), api.FAIRNESS_DIMENSIONS, key=f"compare.g_dim.{i}",
        format_func=lambda d: brief.dimension_label(d, lg),
    )  # fmt: skip
    frame = brief.group_frame(report, name, measure, dim, lg)
    title = tr(
        "compare.chart.groups",
        measure=brief.measure_label(measure, lg),
        dimension=brief.dimension_label(dim, lg),
    )
    fig = charts.style(brief.group_figure(frame, measure, lg), title)
    fig.update_layout(showlegend=False)
    charts.show(fig, frame, f"groups-{i}")


def _fairness(report: dict, name: str, i: int) -> None:
    lg = lang()
    threshold = i18n.percent(report["fairness_threshold"], lg, digits=0)
    st.markdown(f"#### {tr('compare.fairness')}")
    st.caption(tr("compare.fairness_help", threshold=threshold))
    dim = st.selectbox(
        tr("compare.group_dimension"), api.FAIRNESS_DIMENSIONS, key=f"compare.f_dim.{i}",
        format_func=lambda d: brief.dimension_label(d, lg),
    )  # fmt: skip
    frame = brief.fairness_frame(report, name, dim, lg)
    title = tr("compare.chart.fairness", dimension=brief.dimension_label(dim, lg))
    charts.show(charts.style(brief.fairness_figure(frame, lg), title), frame, f"fairness-{i}")
    st.dataframe(brief.fairness_table(report, name, dim, lg), hide_index=True, width="stretch")
    flagged = [
        f"{brief.group_label(d, r['group'], lg, report)} ({brief.flag_label(r['flag'], lg)})"
        for d in api.FAIRNESS_DIMENSIONS
        for r in report["fairness"][name][d]
        if r["flag"]
    ]
    if flagged:
        st.warning(tr("compare.flagged", groups=i18n.t("brief.list_sep", lg).join(flagged)))


def _moved(report: dict, name: str, i: int) -> None:
    lg = lang()
    st.markdown(f"#### {tr('compare.moved')}")
    st.caption(tr("compare.moved_help"))
    st.markdown(brief.moved_text(report, name, lg))
    frame = brief.hours_frame(report, name)
    fig = charts.style(brief.hours_figure(frame, lg), tr("compare.chart.hours"))
    fig.update_layout(height=520)  # two panels: boardings above, their difference below
    charts.show(fig, frame, f"hours-{i}")


# --- the brief --------------------------------------------------------------------------------


@st.cache_data(max_entries=8, show_spinner=False)
def _brief_html(path: str, written: float, lg: str, variant: str) -> str:
    # keyed by the file and its time: the brief of a comparison run again is made afresh
    return brief.compare_brief(api.load_compare_report(path), lg, variant)


# --- showing a sweep ------------------------------------------------------------------------


def _value_text(value: object) -> str:
    """A parameter value as the table and the legend show it."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _axis_value(value: object) -> object:
    """A parameter value as a chart axis takes it (lists and mappings as their text)."""
    return value if isinstance(value, int | float | str) else _value_text(value)


def sweep_frame(result: dict, output: str) -> pd.DataFrame:
    """The design points that ran: their parameter values and the output's mean and 95% CI
    (money in yuan)."""
    scale = 100 if brief.is_money(output) else 1
    params = result["parameters"]
    rows = []
    for p in result["points"]:
        o = p["outputs"].get(output) if p["status"] == "ok" else None
        if p["role"] != "design" or o is None or o["mean"] is None:
            continue
        row = {"point": p["point"], **{k: _axis_value(p["values"][k]) for k in params}}
        for key in ("mean", "ci_low", "ci_high"):
            row[key] = math.nan if o[key] is None else o[key] / scale
        rows.append(row)
    return pd.DataFrame(rows, columns=["point", *params, "mean", "ci_low", "ci_high"])


def sweep_figure(frame: pd.DataFrame, x: str, colour: str | None, lines: bool, name: str):
    """The output's mean against ``x`` with its 95% CI: with ``lines`` (a grid of one or two
    parameters) a line per value of ``colour`` with its CI as a band, otherwise points with
    error bars coloured by ``colour``."""
    fig = go.Figure()
    if not lines:  # sampled designs, bigger grids: other parameters vary along x too
        marker: dict = {"size": 8, "color": brief.VARIANT_COLOUR}
        if colour is not None and pd.api.types.is_numeric_dtype(frame[colour]):
            marker = {"size": 8, "color": frame[colour], "colorscale": "Viridis",
                      "showscale": True, "colorbar": {"title": {"text": colour}}}  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=frame[x], y=frame["mean"], mode="markers", marker=marker, name=name,
                error_y={"type": "data", "array": frame["ci_high"] - frame["mean"],
                         "arrayminus": frame["mean"] - frame["ci_low"]},
                text=[f"{colour} = {_value_text(v)}" for v in frame[colour]] if colour else None,
            )
        )  # fmt: skip
        return fig
    groups = [(None, frame)] if colour is None else list(frame.groupby(colour, sort=True))
    for k, (value, rows) in enumerate(groups):
        rows = rows.sort_values(x)
        label = name if value is None else f"{colour} = {_value_text(value)}"
        line_colour = PALETTE[k % len(PALETTE)]
        band = rows.dropna(subset=["ci_low", "ci_high"])  # one replication: no interval
        if len(band):
            fig.add_trace(
                go.Scatter(
                    x=[*band[x], *band[x][::-1]], y=[*band["ci_high"], *band["ci_low"][::-1]],
                    fill="toself", fillcolor=line_colour, opacity=0.2, mode="lines",
                    line={"width": 0}, legendgroup=label, showlegend=False, hoverinfo="skip",
                )
            )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=rows[x], y=rows["mean"], mode="lines+markers", name=label, legendgroup=label,
                line={"color": line_colour}, marker={"color": line_colour},
            )
        )  # fmt: skip
    return fig


def sweep_table(result: dict, output: str) -> pd.DataFrame:
    """Every point of the sweep: role, parameter values, status, the output's mean and CI."""
    lg = lang()
    money = brief.is_money(output)
    rows = []
    for p in result["points"]:
        o = p["outputs"].get(output) if p["status"] == "ok" else None
        ok = o is not None and o["mean"] is not None
        row = {
            tr("compare.col.point"): p["point"],
            tr("compare.col.role"): tr(f"compare.role.{p['role']}")
            if i18n.has(f"compare.role.{p['role']}")
            else p["role"],
        }
        row.update({k: _value_text(p["values"][k]) for k in result["parameters"]})
        status = "ok" if p["status"] == "ok" else "failed"
        row[tr("compare.col.status")] = tr(f"compare.status.{status}")
        est = estimated(p)
        row[tr("compare.col.mean")] = (
            brief.amount(o["mean"], lg, money=money, estimated=est) if ok else "–"
        )
        row[tr("brief.col.ci")] = (
            brief.interval(o, lg, money=money, bare=True, estimated=est) if ok else "–"
        )
        row[tr("compare.col.error")] = p.get("error") or ""
        rows.append(row)
    return pd.DataFrame(rows)


def show_sweep(path: Path) -> None:
    """A sweep (its ``sweep.json``): its design, failed points, a chart of an output against the
    parameters, and the table of its points."""
    result = _load(path)
    if result is None:
        return
    folder = path.parent
    lg = lang()
    params, outputs = result["parameters"], result["outputs"]
    kind = result["design"].get("kind", "grid")
    kind_key = f"compare.sweep_kind.{kind}"
    st.subheader(tr("compare.sweep_title", base=result["base"].get("name", "")))
    st.caption(
        tr(
            "compare.sweep_facts",
            kind=tr(kind_key) if i18n.has(kind_key) else kind,
            parameters=", ".join(params),
            days=result["days"],
            n=result["replications"],
            points=len(result["points"]),
            failed=len(result["failed"]),
            folder=str(folder),
        )
    )
    if result["failed"]:
        lines = [
            tr(
                "compare.sweep_point_failed",
                point=f["point"],
                values=", ".join(f"{k}={_value_text(v)}" for k, v in f["values"].items()),
                error=f["error"],
            )
            for f in result["failed"]
        ]
        st.warning("\n\n".join([tr("compare.sweep_failed", n=len(lines)), *lines]))
    scales = sorted({p["scale"] for p in result["points"] if estimated(p)})
    if scales:  # points below full scale: their figures are marked, and why said once
        shares = ("、" if lg == "zh" else ", ").join(i18n.percent(s, lg) for s in scales)
        st.caption(tr("compare.sweep_estimates", scale=shares))
    # the widgets' keys name the folder: another sweep has other outputs and parameters
    c1, c2 = st.columns(2)
    output = c1.selectbox(
        tr("compare.sweep_output"), outputs, key=f"compare.s_out.{folder}",
        format_func=lambda m: brief.measure_label(m, lg),
    )  # fmt: skip
    x = params[0]
    if len(params) > 1:
        x = c2.selectbox(tr("compare.sweep_x"), params, key=f"compare.s_x.{folder}")
    colour = next(p for p in params if p != x) if len(params) == 2 else None
    label = brief.measure_label(output, lg)
    frame = sweep_frame(result, output)
    if frame.empty:
        st.info(tr("compare.sweep_no_points"))
    else:
        # a line joins points only when nothing but x and the colour varies along it
        joined = kind == "grid" and len(params) <= 2
        fig = sweep_figure(frame, x, colour, joined, label)
        title = tr("compare.chart.sweep", output=label)
        unit = tr("brief.unit_yuan") if brief.is_money(output) else ""
        mark = "≈ " if scales else ""  # the chart holds the marked figures of the table
        charts.show(charts.style(fig, title, x=x, y=mark + label + unit), frame, "sweep")
    st.dataframe(sweep_table(result, output), hide_index=True, width="stretch")


# --- the page -------------------------------------------------------------------------------


def main() -> None:
    """The Compare page."""
    st.header(tr("compare.header"))
    st.caption(tr("compare.intro"))
    open_tab, new_tab = st.tabs([tr("compare.tab.open"), tr("compare.tab.new")])
    # The form runs first (its tab is drawn second): a comparison it has just made is chosen in
    # the picker before the picker is drawn, and shown below at once.
    with new_tab:
        made = new_section()
    if made is not None:
        st.session_state[PICK] = str(made / COMPARE_FILE)
    with open_tab:
        chosen = open_section()
    if chosen is None:
        return
    try:
        if kind_of(chosen) == "compare":
            show_compare(chosen)
        else:
            show_sweep(chosen)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        # The top-level keys were there, something inside is not: a file of another version
        # or edited by hand. Say so instead of showing a traceback.
        st.error(tr("compare.bad_shape", path=str(chosen), error=f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":  # as Streamlit runs a page; importing it (tests) draws nothing
    main()
