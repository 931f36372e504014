"""The public Python API of CardTwin: what the CLI, the dashboard and tests call.

    scenario = load_scenario("scenarios/nantong_2024.yaml", ["seed=7"], days=7)
    summary = run(scenario, "runs/x")
    print_summary(summary)

Errors a user can cause surface as ``BadInput`` (exit code 2 in the CLI); a broken money invariant
as ``InvariantViolation``.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from agents.outlet import OutletFileError
from sim.calibration import compare, load_targets, markdown, untargeted
from sim.engine import Engine, InvariantViolation, RunStats
from sim.metrics import RunMetrics
from sim.output import OutputError, RunOutput, package_versions, write_duckdb_catalogue
from sim.records import RecordWriter, name_tables
from sim.scenario import ConfigError, Scenario, scenario_hash
from sim.scenario import load_scenario as _load
from sim.world import World, build_world

__all__ = [
    "BadInput",
    "InvariantViolation",
    "RunSummary",
    "build",
    "load_scenario",
    "print_summary",
    "run",
]


class BadInput(Exception):
    """Something the user supplied (scenario, flag, data file, output dir) is wrong."""


@dataclass
class RunSummary:
    """What a run produced: where, how long, and its totals."""

    scenario: str
    out_dir: Path | None
    days: int
    stats: RunStats
    timings_s: dict[str, float] = field(default_factory=dict)
    metrics: RunMetrics | None = None
    world: World | None = None

    @property
    def taps_per_s(self) -> float:
        """Tap records per second of simulation loop (world building excluded)."""
        loop = self.timings_s.get("simulate_and_write_s", 0.0)
        return self.stats.taps / loop if loop else 0.0


def load_scenario(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    days: int | None = None,
    seed: int | None = None,
) -> Scenario:
    """Load a scenario with ``--set`` overrides; ``days``/``seed`` override the period and seed."""
    extra = list(overrides)
    if days is not None:
        extra.append(f"period.days={int(days)}")
    if seed is not None:
        extra.append(f"seed={int(seed)}")
    try:
        scenario = _load(path, extra)
    except ConfigError as exc:
        # --days/--seed travel as --set overrides; name the flag the user actually typed.
        message = str(exc).replace("from --set period.days=", "from --days ")
        raise BadInput(message.replace("from --set seed=", "from --seed ")) from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read scenario: {exc.strerror or exc}") from None
    return scenario


def build(scenario: Scenario) -> World:
    """Build the world of a scenario (population, network, outlets, fares)."""
    try:
        return build_world(scenario, Path(scenario.outlets.file))
    except (OutletFileError, ValueError) as exc:
        raise BadInput(str(exc)) from None


def run(
    scenario: Scenario,
    out_dir: str | Path | None,
    *,
    quiet: bool = False,
    unmasked: bool = False,
    scenario_path: str | Path | None = None,
) -> RunSummary:
    """Build the world and simulate it; write outputs to ``out_dir`` (None: no files)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    world = build(scenario)
    timings["build_world_s"] = time.perf_counter() - t0

    output = None
    if out_dir is not None:
        try:
            output = RunOutput(
                out_dir,
                names=name_tables(world, world.participants.ids),
                mask_identities=not unmasked,
                # A day emits ~10 partitions at once; room for a few days keeps the simulation
                # from waiting on the writer thread's bursts (one transactions day is ~40 MB).
                queue_size=32,
            )
        except (FileExistsError, OSError) as exc:
            raise BadInput(f"--out {out_dir}: {exc}") from None
    writer = RecordWriter(
        world,
        output,
        world.participants.ids,
        world.participants.code(scenario.output.issuer_id),
        unmasked=unmasked,
    )
    progress = _Progress(world.days, quiet)
    engine = Engine(world, writer.emit, progress.update)
    t1 = time.perf_counter()
    try:
        stats = engine.run()
        writer.finish(engine.ledger)
    except BaseException:
        progress.close()
        if output is not None:
            output.abort()
        raise
    progress.close()
    timings["simulate_and_write_s"] = time.perf_counter() - t1
    if output is not None:
        meta = _run_meta(scenario, scenario_path, world, stats, timings, unmasked)
        try:
            output.commit(meta)
            write_duckdb_catalogue(output.out_dir, writer.tables_written)
        except OutputError as exc:
            raise BadInput(f"--out {out_dir}: {exc}") from None
    timings["total_s"] = time.perf_counter() - t0
    stats.timings_s = timings
    return RunSummary(
        scenario.name,
        Path(out_dir) if out_dir else None,
        world.days,
        stats,
        timings,
        metrics=engine.metrics,
        world=world,
    )


def calibrate(
    scenario: Scenario,
    targets_path: str | Path,
    out_dir: str | Path,
    *,
    quiet: bool = False,
) -> dict:
    """Run the scenario's whole period (no Parquet output) and compare it with the targets.

    Writes ``calibration.json`` and ``calibration.md`` into ``out_dir`` and returns the report.
    """
    try:
        targets = load_targets(targets_path)
    except (OSError, yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        raise BadInput(f"{targets_path}: cannot read targets: {exc}") from None
    summary = run(scenario, None, quiet=quiet)
    world = summary.world
    report = compare(targets, summary.metrics, world.population, world.days)
    report["untargeted"] = untargeted(
        summary.metrics, [r.name_zh for r in scenario.regions.values()]
    )
    report["scenario"] = scenario.name
    report["seed"] = scenario.seed
    report["scenario_hash"] = scenario_hash(scenario)
    report["timings_s"] = {k: round(v, 2) for k, v in summary.timings_s.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=_json_default), "utf-8"
    )
    (out / "calibration.md").write_text(markdown(report), "utf-8")
    return report


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _run_meta(scenario, scenario_path, world, stats, timings, unmasked) -> dict:
    return {
        "scenario": scenario.name,
        "scenario_file": str(scenario_path) if scenario_path else None,
        "scenario_hash": scenario_hash(scenario),
        "seed": scenario.seed,
        "period": {
            "start": scenario.period.start.isoformat(),
            "days": world.days,
            "end": (scenario.period.start + dt.timedelta(days=world.days - 1)).isoformat(),
        },
        "cardholders": len(world.population),
        "synthetic": True,
        "identities_masked": not unmasked,
        "package_versions": package_versions(),
        "python": platform.python_version(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "totals": stats.totals,
        "taps": stats.taps,
    }


class _Progress:
    """A progress bar per simulated day with taps/s (rich), silent when quiet."""

    def __init__(self, days: int, quiet: bool) -> None:
        self.quiet = quiet
        self._bar = None
        if not quiet:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]simulating[/] day"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self._task = self._bar.add_task("days", total=days, rate="")
            self._bar.start()

    def update(self, day: int, taps: int, seconds: float) -> None:
        """One simulated day done."""
        if self._bar is not None:
            rate = f"{taps / seconds:,.0f} taps/s" if seconds > 0 else ""
            self._bar.update(self._task, advance=1, rate=f"{taps:,} taps, {rate}")

    def close(self) -> None:
        """Stop drawing."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def print_summary(summary: RunSummary) -> None:
    """The KPI summary table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    t = summary.stats.totals
    table = Table(title=f"CardTwin — {summary.scenario}, {summary.days} days")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    rows = [
        ("tap records", f"{summary.stats.taps:,}"),
        ("fare transactions", f"{t.get('fare_transactions', 0):,}"),
        ("rider-days", f"{t.get('riders', 0):,}"),
        ("card spend (元)", f"{t.get('card_spend_fen', 0) / 100:,.2f}"),
        ("QR spend (元)", f"{t.get('qr_spend_fen', 0) / 100:,.2f}"),
        ("top-ups", f"{t.get('topups', 0):,} ({t.get('topups_outlet', 0):,} at outlets)"),
        ("top-up value (元)", f"{t.get('topup_fen', 0) / 100:,.2f}"),
        ("cards sold", f"{t.get('card_sales', 0):,}"),
        ("declined taps (balance)", f"{t.get('declined_taps', 0):,}"),
        (
            "duplicate deductions / refunds",
            f"{t.get('duplicate_deductions', 0):,} / {t.get('refunds_executed', 0):,}",
        ),
        (
            "cleared / rejected / pending",
            f"{t.get('cleared', 0):,} / {t.get('rejected', 0):,} / {t.get('pending', 0):,}",
        ),
        ("world build (s)", f"{summary.timings_s.get('build_world_s', 0):.1f}"),
        ("simulate + write (s)", f"{summary.timings_s.get('simulate_and_write_s', 0):.1f}"),
        ("taps/s (end to end, world build excluded)", f"{summary.taps_per_s:,.0f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    if summary.out_dir is not None:
        Console().print(
            f"outputs: {summary.out_dir}  (DuckDB: {summary.out_dir / 'cardtwin.duckdb'})"
        )


def summary_json(summary: RunSummary) -> str:
    """The summary as JSON (for scripts)."""
    return json.dumps(
        {
            "scenario": summary.scenario,
            "days": summary.days,
            "taps": summary.stats.taps,
            "totals": summary.stats.totals,
            "timings_s": summary.timings_s,
        },
        default=lambda o: int(o) if isinstance(o, np.integer) else str(o),
        indent=2,
    )
