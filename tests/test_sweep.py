"""Sweeps (sim/sweep.py, sim/sweep_report.py, sim.api.sweep, ``run_scenario.py sweep``).

Points run on a real Dask LocalCluster of two worker processes (no mocks) over the small
scenario for two days: the results are byte-identical with one and two workers, a failed point
is kept and reported while the others run, finished points are reused by a re-run, Latin
hypercube and Sobol designs run and give indices, and bad designs or parameters exit 2 with a
message naming the file or flag, the field path, the value and what is expected.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sim import lab, sweep_report
from sim import sweep as sweeps
from sim.api import BadInput, build, load_scenario, run, sweep
from sim.report_files import write_together
from sim.scenario import ConfigError
from sim.sweep import (
    Design,
    Worlds,
    base_values,
    grid_design,
    load_design,
    load_points,
    plan,
    run_batch,
    split_values,
)
from sim.world import with_fares

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
DAYS = 2
OUTPUTS = ["taps", "fare_revenue_fen", "concession_cost_fen"]
WINDOW = "fares.transfer.window_min"
COUNTERS = "outlets.counters_by_outlet"
# Two kinds of failure: -5 the scenario rejects (the loader's message); outlet 999 passes the
# scenario but not the world build in the worker (the engine's message).
GRID = [f"{WINDOW}=30,90,-5", f"{COUNTERS}={{1: 4}},{{999: 2}}"]


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run_scenario.py", "sweep", *(str(a) for a in args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in sweep_report.FILES}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The grid with failing points, on two worker processes."""
    out = tmp_path_factory.mktemp("sweep") / "grid"
    summary = sweep(SMALL, GRID, replications=2, days=DAYS, outputs=OUTPUTS, workers=2, out_dir=out)
    return out, summary


def _point(summary: dict, **values) -> dict:
    """The point whose parameters have ``values`` (keys: WINDOW, COUNTERS)."""
    want = {WINDOW: values["window"], COUNTERS: values["counters"]}
    return next(p for p in summary["points"] if p["values"] == want)


def test_the_same_sweep_on_one_or_two_workers_gives_the_same_bytes(grid, tmp_path):
    out, summary = grid  # two spawned workers
    assert summary["execution"]["workers"] == 2
    again = sweep(
        SMALL, GRID, replications=2, days=DAYS, outputs=OUTPUTS, workers=1, out_dir=tmp_path,
        start_method="fork",  # as the command line starts them
    )  # fmt: skip
    assert again["execution"]["workers"] == 1 and again["execution"]["points_reused"] == 0
    assert _files(tmp_path) == _files(out)
    frame = pd.read_parquet(out / "sweep.parquet")
    # point x replication x output, sorted by point; money as integer fen
    assert len(frame) == len(summary["points"]) * 2 * len(OUTPUTS)
    assert frame["point"].is_monotonic_increasing
    assert str(frame["value"].dtype) == "Int64" and str(frame[WINDOW].dtype) == "Int64"
    assert list(frame.columns) == [
        "point", "role", WINDOW, COUNTERS, "replication", "seed", "output", "value", "status",
        "error",
    ]  # fmt: skip
    assert frame["seed"].drop_duplicates().tolist() == [20240101, 20240102]


def test_a_failed_point_is_reported_and_the_others_are_kept(grid):
    out, summary = grid
    rejected = _point(summary, window=-5, counters={1: 4})
    assert rejected["status"] == "failed"
    assert rejected["error"] == (
        "from --param fares.transfer.window_min=-5: fares.transfer.window_min: value out of "
        "range; got -5; expected greater than 0"
    )
    raised = _point(summary, window=30, counters={999: 2})  # raised in the worker
    assert raised["status"] == "failed" and "outlet ids [999]" in raised["error"]
    good = _point(summary, window=30, counters={1: 4})
    assert good["status"] == "ok" and good["error"] is None
    revenue = good["outputs"]["fare_revenue_fen"]
    assert len(revenue["values"]) == 2
    assert revenue["ci_low"] <= revenue["mean"] <= revenue["ci_high"]
    failed = {f["point"] for f in summary["failed"]}
    assert failed == {p["point"] for p in summary["points"] if p["status"] == "failed"}
    assert len(failed) == 6  # three points at window -5, three more with outlet 999
    frame = pd.read_parquet(out / "sweep.parquet")
    rows = frame[frame["point"] == raised["point"]]
    assert rows["value"].isna().all() and (rows["status"] == "failed").all()
    assert rows["error"].str.contains("outlet ids").all()
    assert frame[frame["status"] == "ok"]["value"].notna().all()
    page = (out / "sweep.html").read_text("utf-8")
    assert "Failed points" in page and "outlet ids [999]" in page


def test_the_cli_reports_failed_points_and_exits_1(tmp_path):
    result = _cli(
        SMALL, "--param", f"{WINDOW}=30,abc", "--days", 1, "--replications", 1,
        "--workers", 0, "--out", tmp_path, "--quiet",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"point 2 failed ({WINDOW}=abc)" in result.stderr
    assert "expected a valid integer" in result.stderr
    assert all((tmp_path / name).is_file() for name in sweep_report.FILES)


def test_one_at_a_time_sensitivity_is_around_the_base_point(grid):
    _, summary = grid
    rows = {r["parameter"]: r for r in summary["one_at_a_time"]["fare_revenue_fen"]}
    window = rows[WINDOW]
    assert (window["base_value"], window["low_value"], window["high_value"]) == (60, -5, 90)
    assert window["low"] is None and window["swing"] is None  # the low end failed
    assert window["low_change"] is None and window["high"] is not None
    base = summary["points"][0]
    assert base["role"] == "base" and window["base"] == base["outputs"]["fare_revenue_fen"]["mean"]
    high = summary["points"][window["high_point"]]
    assert high["values"] == {WINDOW: 90, COUNTERS: base["values"][COUNTERS]}
    assert window["high_change"] == window["high"] - window["base"]


def test_a_point_is_the_scenario_with_its_fields_set_and_the_compare_seeds(grid):
    """Replication r of a point is what a run of the scenario with --set and seed base + r
    measures: common random numbers, as in a compare."""
    _, summary = grid
    point = _point(summary, window=90, counters={1: 4})
    scenario = load_scenario(SMALL, [f"{WINDOW}=90", f"{COUNTERS}={{1: 4}}"], days=DAYS)
    totals = _outcome(build(scenario), scenario.seed + 1)
    assert [point["outputs"][o]["values"][1] for o in OUTPUTS] == [totals[o] for o in OUTPUTS]


def _outcome(world, seed: int) -> dict:
    collector = lab.OutcomeCollector(world)
    run(None, None, world=world, seed=seed, subscribers=[collector])
    return collector.finish()


def test_a_world_rebased_onto_other_fares_runs_as_the_world_built_for_them():
    """What lets a worker build one world for all the fare points of a sweep."""
    base = load_scenario(SMALL, days=1)
    fares = [
        f"{WINDOW}=90",
        "fares.concessions.love.0.discount_pct=20",
        "fares.bus.region_fare_fen.urban=250",
    ]
    other = load_scenario(SMALL, fares, days=1)
    rebased = with_fares(build(base), other)
    assert rebased.scenario == other
    assert _outcome(rebased, 7) == _outcome(build(other), 7)
    with pytest.raises(ValueError, match="beyond its fares"):
        with_fares(rebased, load_scenario(SMALL, ["topups.threshold_fen=500"], days=1))


def test_a_rerun_reuses_finished_points_and_runs_only_new_ones(tmp_path):
    params = [f"{WINDOW}=30,90"]
    first = sweep(SMALL, params, replications=1, days=DAYS, outputs=OUTPUTS, workers=2,
                  out_dir=tmp_path)  # fmt: skip
    assert first["execution"]["points_run"] == 3  # the base (60), 30 and 90
    before = _files(tmp_path)
    again = sweep(SMALL, params, replications=1, days=DAYS, outputs=OUTPUTS, workers=2,
                  out_dir=tmp_path)  # fmt: skip
    assert again["execution"]["points_run"] == 0 and again["execution"]["points_reused"] == 3
    assert _files(tmp_path) == before
    # (in this process: where points run does not change what is stored)
    changed = sweep(SMALL, [f"{WINDOW}=30,120"], replications=1, days=DAYS, outputs=OUTPUTS,
                    workers=0, out_dir=tmp_path)  # fmt: skip
    assert changed["execution"]["points_run"] == 1  # only 120
    assert changed["execution"]["points_reused"] == 2
    assert len(list((tmp_path / "points").glob("*.json"))) == 4
    # Another output needs no run: a stored point keeps every measure.
    other = sweep(SMALL, params, replications=1, days=DAYS, outputs=["riders"], workers=2,
                  out_dir=tmp_path)  # fmt: skip
    assert other["execution"]["points_run"] == 0 and other["points"][0]["outputs"]["riders"]


def test_latin_hypercube_points_are_stratified_and_run(tmp_path):
    design = Design.model_validate(
        {
            "kind": "lhs",
            "samples": 5,
            "parameters": {
                "fares.concessions.love.0.discount_pct": {"low": 20, "high": 70, "decimals": 2},
                WINDOW: {"low": 30, "high": 120, "integer": True},
            },
            "outputs": OUTPUTS,
            "replications": 1,
            "days": DAYS,
        }
    )
    summary = sweep(SMALL, design, workers=0, out_dir=tmp_path)
    points = [p for p in summary["points"] if p["role"] == "design"]
    assert len(points) == 5 and all(p["status"] == "ok" for p in points)
    discounts = sorted(p["values"]["fares.concessions.love.0.discount_pct"] for p in points)
    assert [int((d - 20) // 10) for d in discounts] == [0, 1, 2, 3, 4]  # one per stratum
    windows = [p["values"][WINDOW] for p in points]
    assert all(isinstance(w, int) and 30 <= w <= 120 for w in windows)
    same = plan(design, {}, seed=20240101).points
    assert [p.values for p in same[1:6]] == [p["values"] for p in points]
    assert set(summary["one_at_a_time"]["concession_cost_fen"][0]) >= {"low", "high", "swing"}


def test_a_sobol_design_gives_first_order_and_total_indices(tmp_path):
    design = tmp_path / "sobol.yaml"
    design.write_text(
        "kind: sobol\n"
        "samples: 2\n"
        "parameters:\n"
        "  fares.concessions.love.0.discount_pct: {low: 0, high: 100, decimals: 2}\n"
        f"  {WINDOW}: {{low: 30, high: 120, integer: true}}\n"
        "outputs: [fare_revenue_fen, concession_cost_fen.card_type.love]\n"
        "replications: 1\n"
        "days: 1\n",
        encoding="utf-8",
    )
    summary = sweep(SMALL, design, workers=2, out_dir=tmp_path / "out")
    assert sum(p["role"] == "design" for p in summary["points"]) == 2 * (2 + 2)
    assert not summary["failed"]
    for output in summary["outputs"]:
        indices = summary["sobol"][output]
        for path in summary["parameters"]:
            assert set(indices[path]) == {"S1", "S1_conf", "ST", "ST_conf"}
            assert isinstance(indices[path]["ST"], float)
    # The love card's concession cost depends on its discount, not on the transfer window.
    love = summary["sobol"]["concession_cost_fen.card_type.love"]
    assert love["fares.concessions.love.0.discount_pct"]["ST"] > love[WINDOW]["ST"]
    page = (tmp_path / "out" / "sweep.html").read_text("utf-8")
    assert 'id="o1-sobol"' in page and "Sobol indices" in page


def test_the_page_is_self_contained(grid):
    out, _ = grid
    page = (out / "sweep.html").read_text("utf-8")
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", page)  # nothing to fetch
    assert page.count('id="o0-values"') == 1 and 'id="o2-tornado"' in page
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js inline


def test_figures_of_points_below_full_scale_are_marked_as_estimates(tmp_path):
    summary = sweep(SMALL, ["scale=0.5,1.0"], replications=1, days=1, outputs=OUTPUTS,
                    workers=0, out_dir=tmp_path)  # fmt: skip
    assert summary["base"]["scale"] == 1.0
    by_scale = {p["values"]["scale"]: p for p in summary["points"] if p["role"] == "design"}
    assert {s: p["scale"] for s, p in by_scale.items()} == {0.5: 0.5, 1.0: 1.0}
    half, whole = by_scale[0.5]["outputs"]["taps"]["mean"], by_scale[1.0]["outputs"]["taps"]["mean"]
    assert 0.8 < half / whole < 1.25  # expanded by 1/scale: about the whole city's taps
    page = (tmp_path / "sweep.html").read_text("utf-8")
    rows = re.findall(r"<tr(?: class=\"failed\")?>(.*?)</tr>", page)
    cells = {r.split("</td>")[0]: r for r in rows if r.startswith("<td>")}
    point = {p["point"]: p for p in summary["points"]}
    for pid, row in cells.items():
        marked = "≈" in row
        assert marked == (point[int(pid.removeprefix("<td>"))]["scale"] < 1.0), row
    assert sum("≈" in r for r in cells.values()) == 1  # one design point at 0.5
    assert "scale below 1 (0.5)" in page


def test_param_values_split_on_top_level_commas():
    assert split_values("60,90, 120") == ["60", "90", "120"]
    assert split_values("[bus],[bus, metro],'a,b'") == ["[bus]", "[bus, metro]", "'a,b'"]
    modes = "fares.transfer.modes"
    design = grid_design([f"{WINDOW}=60,90", f"{modes}=[bus],[bus, metro]"])
    assert design.parameters[modes].values == (["bus"], ["bus", "metro"])
    base = {WINDOW: 60, modes: ["bus", "metro"]}
    points = plan(design, base, seed=1).points
    # the base, the grid's four; one at a time: the base at 60, then 90 with the base's modes
    # (a grid point) and [bus] with 60 (a grid point too): nothing more to run
    assert len(points) == 1 + 4
    other = plan(design, {WINDOW: 45, modes: ["bus"]}, seed=1).points
    assert [p.values for p in other if p.role == "oat"] == [{WINDOW: 45, modes: ["bus", "metro"]}]


@pytest.mark.parametrize(
    ("params", "fragments"),
    [
        (["fares.transfer.window_min"], ["--param fares.transfer.window_min", "path=v1,v2"]),
        ([f"{WINDOW}=60,60"], ["value 60 is listed twice"]),
        (["seed=1,2"], ["seed: not a sweep parameter", "world_seed"]),
        ([f"{WINDOW}=1", f"{WINDOW}=2"], ["given twice"]),
    ],
)
def test_bad_params_are_bad_input(params, fragments):
    with pytest.raises(BadInput) as caught:
        sweep(SMALL, params, workers=0)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_a_misspelt_path_exits_2_with_the_loaders_message(tmp_path):
    result = _cli(SMALL, "--param", "fares.transfer.windw_min=60,90", "--out", tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "fares.transfer.windw_min: unknown key 'windw_min' (did you mean 'window_min'?)" in (
        result.stderr
    )
    assert not (tmp_path / "sweep.json").exists()


def test_a_bad_design_file_exits_2_naming_file_line_field_and_value(tmp_path):
    design = tmp_path / "design.yaml"
    design.write_text(
        f"kind: lhs\nparameters:\n  {WINDOW}: {{low: 90, high: 30}}\nsamples: 0\nreplicatons: 2\n",
        encoding="utf-8",
    )
    result = _cli(SMALL, "--design", design, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in (
        f"{design}:3: parameters.{WINDOW}: low must be below high; got low 90.0, high 30.0",
        f"{design}:4: samples: value out of range; got 0; expected greater than or equal to 1",
        f"{design}:5: replicatons: unknown key 'replicatons' (did you mean 'replications'?)",
    ):
        assert fragment in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_output_is_bad_input_naming_the_design_line(tmp_path):
    design = tmp_path / "design.yaml"
    design.write_text(
        f"parameters:\n  {WINDOW}: {{values: [30]}}\noutputs: [fare_revnue_fen]\ndays: 1\n",
        encoding="utf-8",
    )
    with pytest.raises(BadInput) as caught:
        sweep(SMALL, design, replications=1, workers=0, out_dir=tmp_path / "out")
    assert str(caught.value).startswith(f"{design}:3: outputs: unknown measure 'fare_revnue_fen'")
    assert "did you mean 'fare_revenue_fen'?" in str(caught.value)
    assert not (tmp_path / "out" / "sweep.json").exists()  # nothing but finished points


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_design_is_valid_for_the_scenario(path):
    design = load_design(path)
    for name, spec in design.parameters.items():
        value = spec.values[0] if spec.values is not None else spec.high
        load_scenario(SMALL, [f"{name}={value}"], days=1)  # the path and a value are accepted


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"outputs": ["riders", "riders"]}, "--output: riders listed twice"),
        ({"days": 5000}, "--days: Input should be less than or equal to 3660; got 5000"),
    ],
)
def test_flags_are_validated_like_the_design_file(settings, message):
    with pytest.raises(BadInput, match=message):
        sweep(SMALL, GRID, workers=0, **{"replications": 1, "days": 1, **settings})


def test_the_code_fingerprint_follows_the_engine_not_the_pages(tmp_path):
    from sim.sweep import code_fingerprint

    for package in ("sim", "agents"):
        shutil.copytree(ROOT / package, tmp_path / package)
    before = code_fingerprint(tmp_path)
    (tmp_path / "sim" / "lab_html.py").write_text("# a page's edit\n", encoding="utf-8")
    assert code_fingerprint(tmp_path) == before
    with (tmp_path / "sim" / "day.py").open("a", encoding="utf-8") as f:
        f.write("\n# an engine edit\n")
    assert code_fingerprint(tmp_path) != before


# --- what a stored point is keyed by ----------------------------------------------------------

CALENDAR = ROOT / "scenarios" / "data" / "calendar_cn_2024.yaml"
NEW_YEAR = "  - {name: 元旦, first: 2024-01-01, last: 2024-01-01}\n"  # the period's first day


def _drop_new_year(calendar: Path) -> None:
    """2024-01-01 becomes a workday: a one-day run from that date has other taps."""
    text = calendar.read_text("utf-8")
    assert NEW_YEAR in text
    calendar.write_text(text.replace(NEW_YEAR, ""), "utf-8")


def test_a_file_a_point_names_is_keyed_by_its_content_not_by_its_text(tmp_path, monkeypatch):
    """A point's calendar.file: the same text names another file from another folder, or the
    same file edited; either way the stored point is not reused, and the result is what a
    fresh sweep gives."""
    here, there = tmp_path / "here", tmp_path / "there"
    for folder in (here, there):
        folder.mkdir()
        shutil.copy(CALENDAR, folder / "cal.yaml")
    _drop_new_year(there / "cal.yaml")
    out = tmp_path / "out"

    def sweep_from(folder: Path, into: Path) -> tuple[dict, list]:
        monkeypatch.chdir(folder)  # the relative path is read from the current folder
        summary = sweep(
            SMALL, ["calendar.file=cal.yaml"], replications=1, days=1, outputs=["taps"],
            workers=0, out_dir=into,
        )  # fmt: skip
        assert summary["points"][1]["values"] == {"calendar.file": "cal.yaml"}
        return summary["execution"], summary["points"][1]["outputs"]["taps"]["values"]

    done, holiday = sweep_from(here, out)
    assert (done["points_run"], done["points_reused"]) == (2, 0)
    done, workday = sweep_from(there, out)
    assert (done["points_run"], done["points_reused"]) == (1, 1)  # the base is the same
    assert workday != holiday
    assert workday == sweep_from(there, tmp_path / "fresh")[1]
    _drop_new_year(here / "cal.yaml")  # the same file, edited
    done, edited = sweep_from(here, out)
    assert (done["points_run"], done["points_reused"]) == (1, 1) and edited == workday


def _base_copy(folder: Path, bus_fare: int) -> Path:
    """A base scenario of the small city with its own calendar file (a copy) and an urban bus
    fare, in ``folder``."""
    shutil.copy(CALENDAR, folder / "cal.yaml")
    base = folder / "base.yaml"
    base.write_text(
        f"extends: {SMALL}\ncalendar: {{file: cal.yaml}}\n"
        f"fares: {{bus: {{region_fare_fen: {{urban: {bus_fare}}}}}}}\n",
        encoding="utf-8",
    )
    return base


def _loaded(base: Path, params: list[str]) -> dict:
    """The sweep's points as the sweep's process loads them (sim.sweep.load_points)."""
    design = grid_design(params, replications=1, days=1, outputs=["taps"])
    scenario = load_scenario(base, days=1)
    at_base = base_values(scenario, design.paths)
    points = plan(design, at_base, seed=scenario.seed).points
    return load_points(base.resolve(), scenario, points, at_base, 1, "--param", (scenario.seed,))


def test_a_point_runs_the_scenario_its_key_was_made_from_whatever_happens_to_the_base(tmp_path):
    base = _base_copy(tmp_path, 200)
    params = [f"{WINDOW}=90"]
    tasks = _loaded(base, params)
    base.write_text(base.read_text("utf-8").replace("urban: 200", "urban: 300"), "utf-8")
    distinct = list({t.key: t for t in tasks.values()}.values())
    ran = {r["key"]: r for r in run_batch(distinct, Worlds())}
    # What the workers ran is the base as it was when the points were loaded: a fresh sweep of
    # that version stores the same points under the same keys.
    base.write_text(base.read_text("utf-8").replace("urban: 300", "urban: 200"), "utf-8")
    out = tmp_path / "fresh"
    fresh = sweep(base, params, replications=1, days=1, outputs=["taps"], workers=0, out_dir=out)
    assert fresh["execution"]["points_run"] == 2
    stored = {p.stem for p in (out / "points").glob("*.json")}
    assert stored == set(ran)
    by_value = {t.scenario.fares.transfer.window_min: t.key for t in tasks.values()}
    for point in fresh["points"]:
        measures = ran[by_value[point["values"][WINDOW]]]["measures"]
        assert point["outputs"]["taps"]["values"] == [m["taps"] for m in measures]


def test_a_base_edited_while_the_points_load_is_refused_before_anything_runs(tmp_path):
    base = _base_copy(tmp_path, 200)
    before = load_scenario(base, days=1)  # what the sweep loaded first
    base.write_text(base.read_text("utf-8").replace("urban: 200", "urban: 300"), "utf-8")
    design = grid_design([f"{WINDOW}=90"], replications=1, days=1, outputs=["taps"])
    with pytest.raises(ConfigError, match="changed while the sweep was loading its points"):
        sweeps.run(base, before, design, workers=0, out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "points").exists()


def test_a_point_whose_files_changed_while_it_ran_fails_and_is_not_kept(tmp_path):
    base = _base_copy(tmp_path, 200)
    tasks = _loaded(base, [f"{WINDOW}=90"])
    _drop_new_year(tmp_path / "cal.yaml")
    results = run_batch([tasks[0]], Worlds())
    assert results[0]["status"] == "failed" and "measures" not in results[0]
    assert results[0]["error"].startswith(f"{tmp_path / 'cal.yaml'}: changed while the sweep ran")


# --- bad input before anything runs, and report files ---------------------------------------


def test_a_path_through_an_unset_optional_field_exits_2_before_anything_runs(tmp_path):
    result = _cli(SMALL, "--param", "world_seed.foo=1,2", "--days", 1, "--out", tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "world_seed.foo=1: world_seed: wrong type; got {'foo': 1}; expected a valid " in (
        result.stderr
    )
    assert not (tmp_path / "points").exists()


def test_a_date_valued_parameter_is_reported_like_any_other(tmp_path):
    result = _cli(
        SMALL, "--param", "period.start=2024-01-02", "--days", 1, "--replications", 1,
        "--output", "taps", "--workers", 0, "--out", tmp_path, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(tmp_path / "sweep.csv")
    assert frame["period.start"].drop_duplicates().tolist() == ["2024-01-01", "2024-01-02"]
    page = (tmp_path / "sweep.html").read_text("utf-8")
    assert "<td>2024-01-02</td>" in page  # the table of points, as text like the base's
    assert "one replication: no interval" in page


def test_the_report_files_are_replaced_all_together_or_not_at_all(grid, tmp_path):
    _, summary = grid
    old = {name: f"an earlier {name}".encode() for name in sweep_report.FILES[:3]}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "sweep.html").mkdir()  # the last of the set cannot be replaced
    with pytest.raises(IsADirectoryError):
        sweep_report.write(tmp_path, summary)
    assert {name: (tmp_path / name).read_bytes() for name in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(sweep_report.FILES)

    def broken(path: Path) -> None:  # a renderer that fails half-way through its file
        path.write_text("half a page", "utf-8")
        raise ValueError("cannot render")

    targets = {tmp_path / name: (lambda p, n=name: p.write_text(n, "utf-8")) for name in old}
    with pytest.raises(ValueError, match="cannot render"):
        write_together({**targets, tmp_path / "page.html": broken})
    assert {name: (tmp_path / name).read_bytes() for name in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(sweep_report.FILES)


def test_one_at_a_time_changes_have_paired_intervals(grid):
    out, summary = grid
    rows = {r["parameter"]: r for r in summary["one_at_a_time"]["fare_revenue_fen"]}
    window = rows[WINDOW]
    values = {
        p["point"]: p["outputs"]["fare_revenue_fen"]["values"]
        for p in summary["points"]
        if p["status"] == "ok"
    }
    paired = lab.paired_difference(values[0], values[window["high_point"]])
    assert (window["high_change_ci_low"], window["high_change_ci_high"]) == pytest.approx(
        (paired["ci_low"], paired["ci_high"])
    )
    assert window["high_change_ci_low"] <= window["high_change"] <= window["high_change_ci_high"]
    assert window["low_change_ci_low"] is None and window["low_change_ci_high"] is None  # failed
    page = (out / "sweep.html").read_text("utf-8")
    assert '"error_x"' in page and "bars: paired 95% CI" in page
