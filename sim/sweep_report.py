"""What a sweep found, and its files: the summary, the tidy table and one HTML page.

``summarise(result)`` turns a ``sim.sweep.Result`` into plain data: the design; per point its
parameter values, status (and error) and, per output, each replication's value, the mean and its
95% confidence interval; one-at-a-time sensitivity (each parameter at its low and high value
with the others at the base's, against the base point, each change with its paired 95% CI); and
for a Sobol design the first-order and total indices (SALib). ``write(out_dir, summary)`` writes
``sweep.parquet`` and ``sweep.csv`` (one row per point x replication x output), ``sweep.json``
and ``sweep.html`` as one set (all replaced or none): plotly.js inline, fixed div ids, nothing
that depends on when or on how many workers, so the same sweep gives the same bytes.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim import lab, sweep
from sim.html_page import chart, esc, facts, page
from sim.output import json_default, report_json
from sim.report_files import write_together

FILES = ("sweep.parquet", "sweep.csv", "sweep.json", "sweep.html")
TABLE_COLUMNS = ("point", "role", "replication", "seed", "output", "value", "status", "error")


# --- the summary --------------------------------------------------------------------------------


def summarise(result: sweep.Result) -> dict:
    """The sweep as plain data (what ``sweep.json`` holds); the same for the same sweep."""
    design = result.design
    points = []
    for p in result.points:
        outputs = {}
        if p["measures"] is not None:
            outputs = {name: _output(p["measures"], name) for name in design.outputs}
        points.append({k: p[k] for k in ("point", "role", "values", "scale", "status", "error")})
        points[-1]["outputs"] = outputs
    by_id = {p["point"]: p for p in points}
    summary = {
        "base": {
            "name": result.base.name,
            "file": result.base_path,
            "seed": result.base.seed,
            "scale": result.base.scale,
        },
        "design": design.model_dump(mode="json"),
        "replications": design.replications,
        "days": result.base.period.days,
        "seeds": list(result.seeds),
        "parameters": design.paths,
        "outputs": list(design.outputs),
        "points": points,
        "failed": [
            {"point": p["point"], "values": p["values"], "error": p["error"]}
            for p in points
            if p["status"] != "ok"
        ],
        "one_at_a_time": {name: one_at_a_time(by_id, result.oat, name) for name in design.outputs},
    }
    if design.kind == "sobol":
        summary["sobol"] = {
            name: sobol_indices(design, points, name, result.sample_seed) for name in design.outputs
        }
    return summary


def _output(measures: list[dict], name: str) -> dict:
    values = [m.get(name) for m in measures]
    if any(v is None for v in values):  # not measured by this run (sim.lab changed since?)
        return {"values": values, "mean": None, "ci_low": None, "ci_high": None, "n": 0}
    return {"values": values, **mean_interval(values)}


def mean_interval(values: Sequence[float]) -> dict:
    """Mean over replications and its 95% confidence interval (``sim.lab.mean_interval``), with
    None, not NaN, where a single replication gives no interval (the summary is strict JSON)."""
    found = lab.mean_interval(values)
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in found.items()}


def one_at_a_time(by_id: dict[int, dict], oat: dict[str, tuple[int, int]], output: str) -> list:
    """Per parameter: ``output`` at its low and high value with the others at the base's,
    against the base point (point 0); widest swing first (the tornado chart's order). Each
    change from the base comes with its paired 95% confidence interval
    (``{low,high}_change_ci_low``, ``..._ci_high``; ``sim.lab.paired_difference``):
    replication r of every point runs the same seed, so the change is measured replication by
    replication. None where a point failed, or with one replication (no interval)."""
    base = _mean(by_id[0], output)
    rows = []
    for path, (low_id, high_id) in oat.items():
        low, high = _mean(by_id[low_id], output), _mean(by_id[high_id], output)
        row = {
            "parameter": path,
            "base_value": by_id[0]["values"][path],
            "low_value": by_id[low_id]["values"][path],
            "high_value": by_id[high_id]["values"][path],
            "low_point": low_id,
            "high_point": high_id,
            "base": base,
            "low": low,
            "high": high,
            "low_change": None if None in (base, low) else low - base,
            "high_change": None if None in (base, high) else high - base,
            "swing": None if None in (low, high) else abs(high - low),
        }
        for end, end_id in (("low", low_id), ("high", high_id)):
            interval = paired_change(by_id[0], by_id[end_id], output)
            row[f"{end}_change_ci_low"], row[f"{end}_change_ci_high"] = interval
        rows.append(row)
    order = sorted(range(len(rows)), key=lambda i: (-(rows[i]["swing"] or 0), i))
    return [rows[i] for i in order]


def paired_change(base: dict, point: dict, output: str) -> tuple[float | None, float | None]:
    """The 95% confidence interval of ``output``'s change from ``base`` to ``point``, paired
    replication by replication (common random numbers); (None, None) if either point failed or
    lacks the output, or with one replication."""
    values = [_values(p, output) for p in (base, point)]
    if None in values or len(values[0]) < 2:
        return None, None
    found = mean_interval([v - b for b, v in zip(*values, strict=True)])
    return found["ci_low"], found["ci_high"]


def _values(point: dict, output: str) -> list[float] | None:
    if point["status"] != "ok":
        return None
    values = point["outputs"][output]["values"]
    return None if any(v is None for v in values) else values


def _mean(point: dict, output: str) -> float | None:
    return point["outputs"][output]["mean"] if point["status"] == "ok" else None


def sobol_indices(design: sweep.Design, points: list[dict], output: str, seed: int) -> dict:
    """First-order (S1) and total (ST) Sobol indices of ``output`` per parameter with their 95%
    bootstrap half-widths (``_conf``; SALib), from the replication means of the design points;
    a ``note`` instead when they cannot be computed."""
    design_points = [p for p in points if p["role"] == "design"]
    means = [_mean(p, output) for p in design_points]
    failed = sum(m is None for m in means)
    if failed:
        return {"note": f"{failed} design points failed or lack the output; indices need all"}
    y = np.array(means, dtype=float)
    if np.ptp(y) == 0:
        return {"note": "the output does not vary over the design: no indices"}
    from SALib.analyze import sobol  # here: only Sobol designs need SALib

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # SALib warns on small samples; the note is the CI
        found = sobol.analyze(
            sweep.sobol_problem(design),
            y,
            calc_second_order=False,
            seed=seed,
            print_to_console=False,
        )
    return {
        path: {key: _finite(found[key][i]) for key in ("S1", "S1_conf", "ST", "ST_conf")}
        for i, path in enumerate(design.paths)
    }


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# --- the table ----------------------------------------------------------------------------------


def table(summary: dict) -> pd.DataFrame:
    """One row per point x replication x output, in that order: the point id, its role, one
    column per parameter (its value there), replication, run seed, output, value (integer;
    null when the point failed), status and error."""
    params = summary["parameters"]
    columns: dict[str, list] = {name: [] for name in ("point", "role", *params)}
    columns.update({name: [] for name in TABLE_COLUMNS[2:]})
    for p in summary["points"]:
        for r, seed in enumerate(summary["seeds"]):
            for name in summary["outputs"]:
                row = {"point": p["point"], "role": p["role"], "replication": r, "seed": seed}
                row.update(p["values"])
                row.update(output=name, status=p["status"], error=p["error"])
                row["value"] = p["outputs"][name]["values"][r] if p["status"] == "ok" else None
                for key, values in columns.items():
                    values.append(row[key])
    typed = {}
    for name, values in columns.items():
        if name in ("point", "replication", "seed"):
            typed[name] = pd.Series(values, dtype="int64")
        elif name in ("role", "output", "status", "error"):
            typed[name] = pd.Series(values, dtype="string")
        else:  # the parameters and the value
            typed[name] = _column(values)
    return pd.DataFrame(typed)


def _column(values: list[Any]) -> pd.Series:
    """A parameter's or value's column: whole numbers as Int64, numbers as float64, anything
    else as its JSON text (null stays null)."""
    present = [v for v in values if v is not None]
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
    if numbers and all(isinstance(v, int) for v in present):
        return pd.Series(values, dtype="Int64")
    if numbers:
        return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
    texts = [v if isinstance(v, str) or v is None else sweep._yaml_text(v) for v in values]
    return pd.Series(texts, dtype="string")


# --- files --------------------------------------------------------------------------------------


def write(out_dir: str | Path, summary: dict) -> list[Path]:
    """Write the table (Parquet, CSV), the summary (JSON) and the page (HTML) into ``out_dir``
    as one set (``sim.report_files``): all four are replaced, or, if any of them cannot be
    made, none is. Their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = table(summary)
    text = report_json(summary)
    page = render(summary)
    paths = [out / name for name in FILES]
    return write_together(
        {
            paths[0]: lambda tmp: frame.to_parquet(tmp, index=False),
            paths[1]: lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"),
            paths[2]: lambda tmp: tmp.write_text(text + "\n", "utf-8"),
            paths[3]: lambda tmp: tmp.write_text(page, "utf-8"),
        }
    )


# --- the page -----------------------------------------------------------------------------------

COLOUR, BASE_COLOUR, LOW_COLOUR, HIGH_COLOUR = "#2c7fb8", "#d7301f", "#74a9cf", "#045a8d"


def render(summary: dict) -> str:
    """The whole page as a string; the same summary gives the same string."""
    title = f"参数扫描 Sweep: {summary['base']['name']}"
    sections = [_output_section(summary, i, name) for i, name in enumerate(summary["outputs"])]
    return page(
        title,
        [
            _facts(summary),
            _failures(summary),
            *sections,
            "<h2>各点 <span class='en'>Points (replication means)</span></h2>",
            _points_table(summary),
        ],
    )


def _facts(summary: dict) -> str:
    design = summary["design"]
    params = "; ".join(f"{path}: " + _range(spec) for path, spec in design["parameters"].items())
    kind = {"grid": "grid", "lhs": "Latin hypercube", "sobol": "Sobol (Saltelli sample)"}
    items = [
        ("基准情景", "Base scenario", f"{summary['base']['name']} ({summary['base']['file']})"),
        ("设计", "Design", kind[design["kind"]] + _samples(design)),
        ("参数", "Parameters", params),
        ("模拟天数", "Days", summary["days"]),
        ("重复次数", "Replications", summary["replications"]),
        ("随机种子（各点共用）", "Run seeds (common to every point)", _join(summary["seeds"])),
        ("点数", "Points", f"{len(summary['points'])} ({len(summary['failed'])} failed)"),
    ]
    scales = sorted({p["scale"] for p in summary["points"] if estimated(p)})
    if scales:
        shares = ", ".join(f"{s:.4g}" for s in scales)
        items.append(
            (
                "估算",
                "Estimates",
                f"≈ marks figures of points simulated at a scale below 1 ({shares}): each is "
                "expanded by 1/scale from a sample of the cardholders",
            )
        )
    return facts(items)


def estimated(point: dict) -> bool:
    """Whether a point's figures are expanded from a city simulated below full scale (its
    ``scale`` < 1), so estimates. A sweep written before points kept their scale is taken as
    full scale."""
    scale = point.get("scale")
    return scale is not None and scale < 1.0


def _range(spec: dict) -> str:
    if spec.get("values") is not None:
        return ", ".join(_show(v) for v in spec["values"])
    whole = " (whole numbers)" if spec.get("integer") else ""
    return f"{_show(spec['low'])} to {_show(spec['high'])}{whole}"


def _samples(design: dict) -> str:
    return "" if design.get("samples") is None else f", samples {design['samples']}"


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _failures(summary: dict) -> str:
    if not summary["failed"]:
        return ""
    items = "".join(
        f"<li>point {f['point']} ({esc(_values_text(f['values']))}): {esc(f['error'])}</li>"
        for f in summary["failed"]
    )
    return f"<h2>失败的点 <span class='en'>Failed points</span></h2><ul>{items}</ul>"


def _values_text(values: dict) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in values.items())


def _show(value: Any) -> str:
    """A parameter's value as the page shows it; what JSON cannot hold as it is (a date) as
    sweep.json writes it (``json_default``), not an error after the points have run."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=json_default)


def _output_section(summary: dict, index: int, name: str) -> str:
    parts = [f"<h2>{esc(_axis_title(name))}</h2>"]
    parts.append(_div(_values_figure(summary, name), f"o{index}-values"))
    parts.append(_div(_tornado_figure(summary, name), f"o{index}-tornado"))
    if "sobol" in summary:
        indices = summary["sobol"][name]
        if "note" in indices:
            parts.append(f"<p>Sobol: {esc(indices['note'])}</p>")
        else:
            parts.append(_div(_sobol_figure(summary, name), f"o{index}-sobol"))
    return "\n".join(parts)


def _div(figure, div_id: str) -> str:
    """A chart of the page (sim/html_page.py)."""
    return chart(figure, div_id, top_margin=70)


def _money(name: str) -> bool:
    return name.split(".")[0].endswith("_fen")


def _axis_title(name: str) -> str:
    return f"{name} (yuan)" if _money(name) else name


def _scaled(name: str, value: float | None) -> float | None:
    """Money on the page is in yuan (the data stays in integer fen)."""
    if value is None:
        return None
    return value / 100 if _money(name) else value


def _values_figure(summary: dict, name: str):
    """The output (mean and 95% CI of each point) against each parameter, one panel each."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    params = summary["parameters"]
    figure = make_subplots(rows=1, cols=len(params), shared_yaxes=True)
    ok = [p for p in summary["points"] if p["status"] == "ok"]
    for col, path in enumerate(params, start=1):
        shown = sorted(
            (p for p in ok if p["role"] != "base"), key=lambda p: _order(p["values"][path])
        )
        base = [p for p in ok if p["role"] == "base"]
        # A one-parameter grid is a curve; otherwise other parameters vary along x too.
        curve = summary["design"]["kind"] == "grid" and len(params) == 1
        for group, colour, label, mode in (
            (shown, COLOUR, "points", "lines+markers" if curve else "markers"),
            (base, BASE_COLOUR, "base scenario", "markers"),
        ):
            figure.add_trace(
                go.Scatter(
                    x=[_x(p["values"][path]) for p in group],
                    y=[_scaled(name, p["outputs"][name]["mean"]) for p in group],
                    error_y=_error_bars(name, [p["outputs"][name] for p in group]),
                    mode=mode,
                    marker={"color": colour, "size": 9 if group is base else 7},
                    line={"color": colour},
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    text=[f"point {p['point']}" for p in group],
                ),
                row=1,
                col=col,
            )
        figure.update_xaxes(title_text=path, row=1, col=col)
    figure.update_yaxes(title_text=_axis_title(name), row=1, col=1)
    figure.update_layout(title=f"{_axis_title(name)}: mean and 95% CI of each point")
    return figure


def _order(value: Any) -> tuple:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, _show(value))


def _x(value: Any) -> Any:
    return value if isinstance(value, int | float | str) else _show(value)


def _error_bars(name: str, outputs: list[dict]) -> dict:
    """Error bars from each item's mean to its CI's ends (none where there is no interval)."""
    up = [
        None if None in (o["ci_high"], o["mean"]) else _scaled(name, o["ci_high"] - o["mean"])
        for o in outputs
    ]
    down = [
        None if None in (o["ci_low"], o["mean"]) else _scaled(name, o["mean"] - o["ci_low"])
        for o in outputs
    ]
    return {"type": "data", "array": up, "arrayminus": down, "visible": True}


def _tornado_figure(summary: dict, name: str):
    """One at a time: the change of the output from the base point when each parameter goes to
    its low and its high value, widest swing on top, with the paired 95% CI of each change as
    error bars (none with one replication, which the title says)."""
    import plotly.graph_objects as go

    rows = [r for r in summary["one_at_a_time"][name] if r["base"] is not None]
    rows = rows[::-1]  # plotly draws the first bar at the bottom
    labels = [r["parameter"] for r in rows]
    figure = go.Figure()
    for end, colour in (("low", LOW_COLOUR), ("high", HIGH_COLOUR)):
        changes = [
            {
                "mean": r[f"{end}_change"],
                "ci_low": r.get(f"{end}_change_ci_low"),
                "ci_high": r.get(f"{end}_change_ci_high"),
            }
            for r in rows
        ]
        figure.add_trace(
            go.Bar(
                y=labels,
                x=[_scaled(name, c["mean"]) for c in changes],
                error_x=_error_bars(name, changes),
                orientation="h",
                name=f"{end} value",
                marker={"color": colour},
                text=[
                    f"{r['parameter']} = {_show(r[f'{end}_value'])}{_interval(name, c)}"
                    for r, c in zip(rows, changes, strict=True)
                ],
                hovertemplate="%{text}: %{x:,.2f}<extra></extra>",
            )
        )
    base = summary["one_at_a_time"][name][0]["base"] if summary["one_at_a_time"][name] else None
    at = "" if base is None else f" (base {_scaled(name, base):,.2f})"
    bars = (
        "bars: paired 95% CI"
        if summary["replications"] > 1
        else "one replication: no interval (run 2 or more for one)"
    )
    figure.update_layout(
        barmode="overlay",
        title=f"One at a time: change of {_axis_title(name)} from the base point{at}; {bars}",
        xaxis_title=f"change of {_axis_title(name)}",
        height=max(320, 120 + 60 * len(rows)),
    )
    return figure


def _interval(name: str, change: dict) -> str:
    """A change's interval as the tornado's hover text shows it."""
    if change["ci_low"] is None or change["ci_high"] is None:
        return ""
    low, high = _scaled(name, change["ci_low"]), _scaled(name, change["ci_high"])
    return f" (95% CI {low:,.2f} to {high:,.2f})"


def _sobol_figure(summary: dict, name: str):
    """First-order and total Sobol indices per parameter, with their 95% bootstrap intervals."""
    import plotly.graph_objects as go

    indices = summary["sobol"][name]
    params = summary["parameters"]
    figure = go.Figure()
    bars = (("S1", "first order S1", LOW_COLOUR), ("ST", "total ST", HIGH_COLOUR))
    for key, label, colour in bars:
        figure.add_trace(
            go.Bar(
                x=params,
                y=[indices[p][key] for p in params],
                error_y={"type": "data", "array": [indices[p][f"{key}_conf"] for p in params]},
                name=label,
                marker={"color": colour},
            )
        )
    figure.update_layout(
        barmode="group", title=f"Sobol indices of {name}", yaxis_title="share of variance"
    )
    return figure


def _points_table(summary: dict) -> str:
    params, outputs = summary["parameters"], summary["outputs"]
    head = "".join(f"<th>{esc(h)}</th>" for h in ["point", "role", *params, "status", *outputs])
    rows = []
    for p in summary["points"]:
        cells = [str(p["point"]), p["role"], *(_show(p["values"][k]) for k in params), p["status"]]
        means = [
            _number(name, p["outputs"][name]["mean"], estimated(p)) if p["status"] == "ok" else ""
            for name in outputs
        ]
        css = ' class="failed"' if p["status"] != "ok" else ""
        tds = "".join(f"<td>{esc(c)}</td>" for c in cells)
        tds += "".join(f'<td class="num">{esc(m)}</td>' for m in means)
        rows.append(f"<tr{css}>{tds}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _number(name: str, value: float | None, estimate: bool = False) -> str:
    """A mean as the points table shows it (money in yuan), marked ≈ when an ``estimate``."""
    if value is None:
        return ""
    text = f"{value / 100:,.2f}" if _money(name) else f"{value:,.1f}"
    return f"≈{text}" if estimate else text
