"""The command-line contract of run_scenario.py, checked through real subprocesses.

Bad input of any kind exits with code 2 and a short message on stderr that names the file, the
field path (and the line, where the YAML gives one), what was given and what is expected, with no
traceback, and never touches an existing output directory. A good run writes Parquet partitions,
run_meta.json and a DuckDB catalogue that a fresh connection can query.

Broken scenarios are overlays in tmp_path that extend the shipped small_ci.yaml by absolute path,
so a case that is wrongly accepted costs a few seconds instead of a full-scale run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from sim.codes import CARD_TYPES
from sim.schema import TABLES

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
OUTLETS_CSV = ROOT / "data" / "nantong" / "outlets.csv"
MAX_MESSAGE_LINES = 12


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run_scenario.py", *(str(a) for a in args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _overlay(tmp_path: Path, body: str, name: str = "broken.yaml") -> Path:
    """A scenario file in tmp_path: ``extends`` the real small_ci.yaml, then ``body``."""
    path = tmp_path / name
    path.write_text(f"extends: {SMALL}\n{body}", encoding="utf-8")
    return path


def _assert_bad_input(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2, a short stderr holding every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert 0 < len(lines) <= MAX_MESSAGE_LINES, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def _snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under ``directory``: file bytes, or None for a directory."""
    return {
        str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(directory.rglob("*"))
    }


# --- broken scenario files ----------------------------------------------------------------------

# (id, overlay body after the `extends:` line, line of the problem, field path, other fragments).
# The overlay's line 1 is `extends:`, so the body starts on line 2.
FIELD_CASES = [
    ("unknown_top_level_key", "farez: {}\n", 2, "farez", ["unknown key", "'fares'"]),
    (
        "misspelt_key_in_fares",
        "fares:\n  concesions: {}\n",
        3,
        "fares.concesions",
        ["unknown key", "'concessions'"],
    ),
    (
        "misspelt_key_in_fares_transfer",
        "fares:\n  transfer: {windw_min: 90}\n",
        3,
        "fares.transfer.windw_min",
        ["unknown key", "'window_min'"],
    ),
    ("wrong_type", "period: {days: seven}\n", 2, "period.days", ["'seven'", "integer"]),
    (
        "wrong_type_for_a_section",
        "fares:\n  transfer: 5\n",
        3,
        "fares.transfer",
        ["got 5", "a mapping with keys", "window_min"],
    ),
    (
        "negative_fare",
        "fares:\n  bus:\n    region_fare_fen: {urban: -200}\n",
        4,
        "fares.bus.region_fare_fen.urban",
        ["-200", "negative"],
    ),
    (
        "unknown_card_type",
        "fares:\n  concessions:\n    vip: [{kind: free}]\n",
        4,
        "fares.concessions.vip",
        ["'vip'", "longevity", "ordinary"],
    ),
    (
        "missing_calendar_file",
        "calendar: {file: nowhere/calendar.yaml}\n",
        2,
        "calendar.file",
        ["nowhere/calendar.yaml", "file not found", "expected an existing file"],
    ),
    (
        "missing_outlets_file",
        "outlets: {file: nowhere/outlets.csv}\n",
        2,
        "outlets.file",
        ["nowhere/outlets.csv", "file not found", "expected an existing file"],
    ),
]


@pytest.mark.parametrize(
    ("body", "line", "field", "fragments"),
    [case[1:] for case in FIELD_CASES],
    ids=[case[0] for case in FIELD_CASES],
)
def test_broken_scenario_exits_2_naming_file_line_and_field(
    tmp_path: Path, body: str, line: int, field: str, fragments: list[str]
):
    path = _overlay(tmp_path, body)
    out = tmp_path / "out"
    result = _cli(path, "--out", out, "--quiet")
    _assert_bad_input(result, *fragments)
    # A prefix: a bad mapping key may be shown as `<field>.[key]`.
    assert f"{path}:{line}: {field}" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("period:\n  days: 7\n   start: 2024-01-01\n", 4),  # bad indentation
        ("fares:\n  transfer: {modes: [bus, metro}\n", 3),  # bracket never closed
    ],
    ids=["bad_indentation", "unclosed_bracket"],
)
def test_malformed_yaml_exits_2_with_line_and_column(tmp_path: Path, body: str, line: int):
    path = _overlay(tmp_path, body)
    result = _cli(path, "--out", tmp_path / "out", "--quiet")
    _assert_bad_input(result, "malformed YAML")
    assert re.search(rf"{re.escape(str(path))}:{line}:\d+: malformed YAML", result.stderr)
    assert not (tmp_path / "out").exists()


def test_missing_extends_target_exits_2(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("extends: no_such_base.yaml\nname: x\n", encoding="utf-8")
    result = _cli(path, "--out", tmp_path / "out", "--quiet")
    _assert_bad_input(result, f"{path}:1: extends:", "no_such_base.yaml", "file not found")


def test_bad_set_syntax_exits_2(tmp_path: Path):
    result = _cli(SMALL, "--set", "period.days", "--out", tmp_path / "out", "--quiet")
    _assert_bad_input(result, "--set period.days", "expected path.to.field=value")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--days", "0", "expected a number >= 1, got 0"),
        ("--days", "x", "expected a whole number, got 'x'"),
        ("--seed", "-1", "expected a number >= 0, got -1"),
        # The streams mix 64 bits: 2**64 + 5 would silently be seed 5.
        ("--seed", str(2**64 + 5), "expected a number up to 2**64 - 1"),
    ],
)
def test_bad_flag_exits_2_with_argparse_message(
    tmp_path: Path, flag: str, value: str, expected: str
):
    result = _cli(SMALL, flag, value, "--out", tmp_path / "out", "--quiet")
    _assert_bad_input(result, "usage: run_scenario.py", f"argument {flag}: {expected}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "near"),
    [
        (["verfy", "runs/x"], "; did you mean verify?"),
        (["calbrate", "scenario.yaml"], "; did you mean calibrate?"),
        (["frobnicate"], ""),
    ],
)
def test_a_mistyped_command_is_named_with_the_commands_and_the_nearest(args, near: str):
    result = _cli(*args)
    _assert_bad_input(
        result,
        f"error: {args[0]!r} is not a command or a scenario file; commands: run, validate, "
        "calibrate, verify, reconcile,",
    )
    assert result.stderr.rstrip().endswith(f"(run_scenario.py --help){near}"), result.stderr
    assert "unrecognized arguments" not in result.stderr


def test_the_first_word_is_a_scenario_unless_it_is_a_command(tmp_path: Path):
    """A scenario file, a path to one or a .yaml name is a run's scenario (a missing one is
    named as such); "run" may be written before it."""
    import run_scenario

    assert run_scenario._command(["verify", "runs/x"]) == "verify"
    assert run_scenario._command(["--days", "1", "verfy"]) == "run"
    assert run_scenario._command([str(SMALL)]) == "run"
    assert run_scenario._command(["scenarios/nothing_here"]) == "run"
    assert run_scenario._command(["verfy"]) is None
    missing = _cli("no_such_scenario.yaml", "--quiet")
    _assert_bad_input(missing, "no_such_scenario.yaml: file not found")
    done = _cli("run", SMALL, "--days", "1", "--quiet", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "run_meta.json").read_text())["scenario"] == "small_ci"


def test_flag_errors_answer_without_loading_the_simulation():
    # run_scenario.main imports sim.api lazily "so that --help and flag errors answer instantly"
    # (its own comment): a flag error must not pay the ~2 s import of the simulation stack.
    code = (
        "import sys, run_scenario\n"
        "try:\n"
        "    run_scenario.main(['scenario.yaml', '--days', '0'])\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'sim.api' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "argument --days" in result.stderr
    assert result.stdout.split() == ["2", "False"]


# --- a good run, and what a failed run must not do to an earlier one ----------------------------


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """small_ci run for 2 days (shared: tests copy it before running anything against it)."""
    out = tmp_path_factory.mktemp("previous") / "run"
    result = _cli(SMALL, "--days", "2", "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # --quiet: no progress bar, no summary table
    return out


def test_good_run_writes_partitions_meta_and_a_queryable_catalogue(previous_run: Path):
    days = ["service_date=2024-01-01", "service_date=2024-01-02"]
    partitions = sorted(p.name for p in (previous_run / "transactions").iterdir())
    assert partitions == days
    for day in days:
        assert list((previous_run / "transactions" / day).glob("*.parquet"))

    meta = json.loads((previous_run / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["scenario"] == "small_ci"
    assert meta["period"] == {"start": "2024-01-01", "days": 2, "end": "2024-01-02"}
    # 20,000 Nantong cards plus a few hundred visitors' cards from other cities.
    assert 20_000 <= meta["cardholders"] < 21_000

    con = duckdb.connect(str(previous_run / "cardtwin.duckdb"), read_only=True)
    try:
        per_hour = con.execute(
            "select hour, sum(taps) from taps_per_hour group by hour order by hour"
        ).fetchall()
        spend = con.execute("select * from spend_by_card_type").fetchall()
        counted, spent_fen = con.execute(
            "select count(*), sum(amount_fen) from transactions where status <> 'rejected'"
        ).fetchone()
        views = {v for (v,) in con.execute("select view_name from duckdb_views()").fetchall()}
        empty = [t for t in TABLES if con.execute(f"select count(*) from {t}").fetchone()[0] == 0]
    finally:
        con.close()
    # One view per table (docs/schema.md), typed but empty where the run wrote no rows.
    assert set(TABLES) <= views and empty
    assert counted > 1000
    assert all(0 <= hour <= 23 for hour, _ in per_hour)
    assert sum(taps for _, taps in per_hour) == counted
    by_type = {category: (taps, amount) for category, taps, amount in spend}
    assert set(by_type) <= set(CARD_TYPES)
    assert {"ordinary", "longevity"} <= set(by_type)
    assert sum(taps for taps, _ in by_type.values()) == counted
    assert sum(amount for _, amount in by_type.values()) * 100 == spent_fen
    assert by_type["ordinary"][1] > 0


@pytest.mark.parametrize("failure", ["scenario_error", "build_error"])
def test_failed_run_leaves_the_previous_output_untouched(
    tmp_path: Path, previous_run: Path, failure: str
):
    out = tmp_path / "run"
    shutil.copytree(previous_run, out)
    before = _snapshot(out)
    if failure == "scenario_error":
        scenario = _overlay(tmp_path, "farez: {}\n")
        expected = [str(scenario), "farez"]
    else:
        # Valid YAML naming an existing outlets file whose row 3 is wrong: only building the
        # world finds it.
        csv = tmp_path / "outlets.csv"
        header_and_first = OUTLETS_CSV.read_text(encoding="utf-8").splitlines()[:2]
        rows = [*header_and_first, "x,某网点,市区,某路1号,08:00-17:30,every_day,"]
        csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
        scenario = _overlay(tmp_path, f"outlets: {{file: {csv.name}}}\n")
        expected = [str(csv), "row 3", "outlet_id", "'x'"]
    result = _cli(scenario, "--days", "1", "--quiet", "--out", out)
    _assert_bad_input(result, *expected)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run")) == ["run"]


# --- the validate sub-command -------------------------------------------------------------------


def test_validate_accepts_a_good_file():
    result = _cli("validate", SMALL, "--set", "period.days=3")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == f"{SMALL}: valid scenario 'small_ci'"


def test_validate_rejects_a_bad_file(tmp_path: Path):
    path = _overlay(tmp_path, "period: {days: seven}\n")
    result = _cli("validate", path)
    _assert_bad_input(result, f"{path}:2: period.days: ", "'seven'")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        # --set replaces the whole mapping: the five county regions' bus lines have no fare.
        ("fares.bus.region_fare_fen={urban: 200}", ["fares.bus.region_fare_fen", "'rudong'"]),
        # The calendar file covers 2024 only; 400 days run into 2025.
        ("period.days=400", ["period", "calendar_cn_2024.yaml"]),
    ],
    ids=["region_without_bus_fare", "period_beyond_calendar"],
)
def test_validate_rejects_what_a_run_would_reject(override: str, fragments: list[str]):
    # `validate` answering "valid" for a scenario that `run` then refuses defeats its purpose.
    result = _cli("validate", SMALL, "--set", override)
    _assert_bad_input(result, *fragments)


def test_an_earlier_run_holding_a_users_file_is_not_replaced(tmp_path: Path, previous_run: Path):
    out = tmp_path / "run"
    shutil.copytree(previous_run, out)
    (out / "notes.txt").write_text("my notes", encoding="utf-8")
    before = _snapshot(out)
    result = _cli(SMALL, "--days", "1", "--quiet", "--out", out)
    _assert_bad_input(result, str(out), "notes.txt", "CardTwin did not write")
    assert _snapshot(out) == before


def test_a_folder_left_by_a_killed_run_is_removed_and_reported(tmp_path: Path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f"run.partial-{int(dead.stdout)}"
    stale.mkdir()
    result = _cli(SMALL, "--days", "1", "--quiet", "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert f"note: removed {stale}, left behind by a run that was killed" in result.stderr
    assert not stale.exists()


# --- bad inputs found only by building the world, by size, or by value --------------------------


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("outlets.counters_by_outlet={999: 2}", ["outlets.counters_by_outlet", "[999]"]),
        ("population.card_types.ordinary.count=10000000000", ["cards need about", "GiB"]),
        ("card_sales.price_fen=3000000000", ["card_sales.price_fen", "2147483647"]),
        (
            "fares.bus.region_fare_fen={urban: 200, rudong: 200, haian: 200, haimen: 200, "
            "rugao: 200, qidong: 200, urbn: 300}",
            ["fares.bus.region_fare_fen.urbn", "did you mean 'urban'"],
        ),
        ("interop.cities.suzhou.distance_km.nowhere=5", ["distance_km.nowhere", "unknown region"]),
        ("interop.cities.suzhou.attraction=.inf", ["interop.cities.suzhou.attraction", "finite"]),
        ("topups.max_balance_fen=500", ["max_balance_fen 500", "threshold_fen"]),
        (
            "fares.concessions.love=[{kind: percent, discount_pct: 50, include_hours: "
            "['07:00-09:00'], exclude_hours: ['07:00-09:00']}]",
            ["fares.concessions.love.0", "leave no minute of the day"],
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_values_exit_2_with_one_message_and_nothing_written(
    tmp_path, override, fragments, command
):
    out = tmp_path / "out"
    if command == "run":
        result = _cli(SMALL, "--days", "1", "--quiet", "--out", out, "--set", override)
    else:
        result = _cli("validate", SMALL, "--set", override)
    _assert_bad_input(result, *fragments)
    assert list(tmp_path.iterdir()) == []  # no output, no partial folder, no lock


def test_alias_bombs_are_refused_at_once(tmp_path: Path):
    lines = [f"extends: {SMALL}", 'a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for k in range(1, 9):
        lines.append(f"a{k}: &a{k} [" + ",".join([f"*a{k - 1}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _cli("validate", bomb)
    _assert_bad_input(result, str(bomb), "aliases expand to more than")


def test_calibrate_checks_its_out_before_running(tmp_path: Path):
    taken = tmp_path / "report"
    taken.write_text("not a folder", encoding="utf-8")
    result = _cli("calibrate", SMALL, "--out", taken, "--quiet")
    _assert_bad_input(result, str(taken), "is a file")


@pytest.mark.parametrize(
    ("sig", "code", "word", "times"),
    [
        ("SIGINT", 130, "interrupted", 1),
        ("SIGTERM", 143, "terminated", 1),
        # Ctrl-C twice: the second lands while the first one's clean-up runs.
        ("SIGINT", 130, "interrupted", 2),
    ],
)
def test_signals_stop_the_run_cleanly(tmp_path: Path, sig: str, code: int, word: str, times):
    import signal
    import time

    out = tmp_path / "run"
    # The run starts as from a terminal, where Ctrl-C reaches it: a process started with SIGINT
    # ignored (the suite launched as a background job of a script) hands that on, and Python
    # then leaves Ctrl-C ignored, as it should (nohup, `cmd &`).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "run_scenario.py", SMALL, "--days", "300", "--quiet", "--out", out],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("run.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the run is writing: its partial folder exists
    assert list(tmp_path.glob("run.partial-*")), "the run never started writing"
    proc.send_signal(getattr(signal, sig))
    for _ in range(times - 1):
        time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(getattr(signal, sig))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert word in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # no output, no partial folder, no lock


@pytest.mark.parametrize(
    ("stop", "code", "word"),
    [("KeyboardInterrupt", 130, "interrupted"), ("Terminated", 143, "terminated")],
)
def test_a_stop_inside_a_compiled_kernel_stops_the_run_cleanly(
    tmp_path: Path, monkeypatch, capsys, stop: str, code: int, word: str
):
    # Ctrl-C landing while numba loads a kernel's constants on its first call (Python code run
    # from inside the kernel's call) comes out of the kernel as a SystemError caused by the
    # KeyboardInterrupt, as it did in a clean clone's test run: still an interruption.
    import run_scenario
    from agents import citizen

    raised = KeyboardInterrupt if stop == "KeyboardInterrupt" else run_scenario.Terminated

    def interrupted(*args, **kwargs):
        try:
            raise raised()
        except BaseException as exc:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc

    monkeypatch.setattr(citizen, "trip_slots", interrupted)
    out = tmp_path / "run"
    assert run_scenario.main([str(SMALL), "--days", "2", "--quiet", "--out", str(out)]) == code
    err = capsys.readouterr().err
    assert f"{word}: nothing was written to the output folder" in err
    assert list(tmp_path.iterdir()) == []  # no output, no partial folder, no lock


def test_a_system_error_not_caused_by_a_stop_is_not_taken_for_one(tmp_path: Path, monkeypatch):
    import run_scenario
    from agents import citizen

    def broken(*args, **kwargs):
        raise SystemError("a defect")

    monkeypatch.setattr(citizen, "trip_slots", broken)
    with pytest.raises(SystemError, match="a defect"):
        run_scenario.main([str(SMALL), "--days", "2", "--quiet", "--out", str(tmp_path / "run")])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("problem", ["header_only", "gbk"])
def test_outlet_files_that_are_not_usable_name_the_file(tmp_path: Path, problem: str):
    text = OUTLETS_CSV.read_text(encoding="utf-8")
    csv_path = tmp_path / "outlets.csv"
    if problem == "header_only":
        csv_path.write_text(text.splitlines()[0] + "\n", encoding="utf-8")
        expected = "no outlets after the header"
    else:
        csv_path.write_bytes(text.encode("gbk"))
        expected = "not UTF-8 text"
    result = _cli("validate", SMALL, "--set", f"outlets.file={csv_path}")
    _assert_bad_input(result, str(csv_path), expected)


def test_a_set_override_is_reported_as_set_and_a_flag_as_the_flag(tmp_path: Path):
    result = _cli(SMALL, "--quiet", "--out", tmp_path / "o", "--set", "period.days=")
    _assert_bad_input(result, "from --set period.days=", "period.days")
    assert "--days" not in result.stderr


@pytest.mark.parametrize(
    ("size", "stage"), [("300k", " part 0 failed"), ("700k", "cardtwin.duckdb")]
)
def test_a_full_disk_at_any_stage_exits_2_and_leaves_nothing(tmp_path: Path, size: str, stage: str):
    # A real full disk: a tmpfs too small for the run (300k fills up while the simulation writes
    # Parquet, 700k when the DuckDB catalogue is written after the swap).
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        # Mounting needs root. CI runs as root, so there a failed mount fails the test instead
        # of passing it unseen; only a developer's unprivileged run skips it, saying why.
        if os.geteuid() == 0:
            pytest.fail(f"root could not mount a small tmpfs: {mounted.stderr.strip()}")
        pytest.skip(f"mounting a tmpfs needs root: {mounted.stderr.strip()}")
    try:
        result = _cli(SMALL, "--days", "3", "--quiet", "--out", disk / "run")
        _assert_bad_input(result, str(disk / "run"), "No space left on device", stage)
        assert len(result.stderr.strip().splitlines()) == 1
        assert list(disk.iterdir()) == []  # no output, no partial folder, no lock
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_impossible_dates_in_a_scenario_or_its_calendar_name_file_and_line(tmp_path: Path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(f"extends: {SMALL}\nperiod: {{start: 2024-02-30}}\n", encoding="utf-8")
    _assert_bad_input(_cli("validate", scenario), f"{scenario}:2:", "day is out of range")
    calendar = tmp_path / "calendar.yaml"
    text = (ROOT / "scenarios" / "data" / "calendar_cn_2024.yaml").read_text(encoding="utf-8")
    calendar.write_text(text.replace("first: 2024-02-10", "first: 2024-02-30"), encoding="utf-8")
    result = _cli("validate", SMALL, "--set", f"calendar.file={calendar}")
    _assert_bad_input(result, f"{calendar}:", "day is out of range")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.count(str(calendar)) == 1


POLICY = ROOT / "scenarios" / "policies" / "elderly_offpeak.yaml"
INVALID_POLICIES = {
    "discount over 100%": (
        "fares:\n  concessions:\n    love: [{kind: percent, discount_pct: 120}]\n",
        ("fares.concessions.love.0.discount_pct", "120", "between 0 and 100"),
    ),
    "overlapping windows": (
        "fares:\n  concessions:\n    longevity:\n"
        '      - {kind: free, include_hours: ["07:00-09:00", "08:30-10:00"]}\n',
        ("fares.concessions.longevity.0.include_hours", "'08:30-10:00'", "do not overlap"),
    ),
    "contradictory windows": (
        "fares:\n  concessions:\n    longevity:\n"
        '      - {kind: free, include_hours: ["07:00-09:00"], exclude_hours: ["06:00-10:00"]}\n',
        ("fares.concessions.longevity.0", "'06:00-10:00'", "leave no minute"),
    ),
    "cap below zero": (
        "fares:\n  caps:\n    monthly_cap_fen: {ordinary: -100}\n",
        ("fares.caps.monthly_cap_fen.ordinary", "-100", "cannot be negative"),
    ),
    "unknown card type": (
        "fares:\n  caps:\n    monthly_cap_fen: {platinum: 10000}\n",
        ("fares.caps.monthly_cap_fen.platinum", "'platinum'", "allowed: ordinary"),
    ),
    "unknown age-based card type": (
        "population:\n  concession_ages: {platinum: 80}\n",
        ("population.concession_ages.platinum", "'platinum'", "expected one of 'student'"),
    ),
    "negative concession age": (
        "population:\n  concession_ages: {longevity: -5}\n",
        ("population.concession_ages.longevity", "-5", "greater than or equal to 0"),
    ),
    "age shares for some regions only": (
        "regions:\n  urban: {aged_65_plus_share: null}\n",
        ("regions", "not for urban", "every region or for none"),
    ),
    "unknown visitor treatment": (
        "interop:\n  visitor_concessions: everything\n",
        ("interop.visitor_concessions", "'everything'", "'none' or 'local'"),
    ),
    "unknown mode": (
        "fares:\n  concessions:\n    love: [{kind: free, modes: [ferry]}]\n",
        ("fares.concessions.love.0.modes.0", "'ferry'", "allowed: bus, metro"),
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_POLICIES))
def test_invalid_policy_overlays_exit_2_naming_file_field_value_and_expectation(tmp_path, case):
    """Policy overlays on the real elderly off-peak policy (which extends Nantong): each invalid
    one names the overlay file, the field path, the value and what is expected."""
    body, fragments = INVALID_POLICIES[case]
    path = tmp_path / "policy.yaml"
    path.write_text(f"extends: {POLICY}\n{body}", encoding="utf-8")
    _assert_bad_input(_cli("validate", path), str(path), *fragments)


def test_an_out_that_is_a_symlink_writes_where_it_points_and_keeps_the_link(tmp_path: Path):
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    for _ in range(2):  # a first run, then one replacing it
        result = _cli(SMALL, "--days", "1", "--quiet", "--out", link)
        assert result.returncode == 0, result.stderr
    assert link.is_symlink() and (target / "run_meta.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]  # nothing left


def test_an_incident_after_the_period_is_named_in_a_note(tmp_path: Path):
    """Kept (a run shortened with --days keeps its scenario's later incidents), but said: a
    typo in a year would otherwise pass unseen."""
    late = (
        '[{id: late, kind: validator_outage, target: "5", start: 2024-03-10 08:00, '
        "duration_min: 60}]"
    )
    result = _cli(
        SMALL, "--days", "1", "--quiet", "--out", tmp_path / "o", "--set", f"incidents={late}"
    )
    assert result.returncode == 0, result.stderr
    assert "note: incident late (small_ci) starts 2024-03-10 08:00" in result.stderr
    assert "not played" in result.stderr


def test_help_says_what_exit_3_means_for_reconcile_and_the_receiver_its_whole_purpose():
    result = _cli("--help")
    assert result.returncode == 0
    three = result.stdout.split("\n  3    ", 1)[1].split("\n  4    ", 1)[0]
    assert "money invariant" in three and "reconcile" in three
    receiver = subprocess.run(
        [sys.executable, "-m", "traffic.receiver", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert receiver.returncode == 0
    assert "what the tests and the benches stream into, and a starting point for a team's own." in (
        " ".join(receiver.stdout.split())
    )
