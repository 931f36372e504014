#!/usr/bin/env python3
"""CardTwin command line: run a scenario, validate it, or calibrate it against published figures.

    python run_scenario.py [run] SCENARIO.yaml [--days N] [--seed S] [--out DIR] [--set a.b=v ...]
                                               [--quiet] [--unmasked]
    python run_scenario.py validate SCENARIO.yaml [--set a.b=v ...]
    python run_scenario.py calibrate SCENARIO.yaml [--out DIR] [--targets FILE] [--days N]
    python run_scenario.py verify RUN_DIR
    python run_scenario.py sweep BASE.yaml (--param a.b=v1,v2 ... | --design FILE) [--workers N]
    python run_scenario.py stream SCENARIO.yaml --sink URL [--rate R | --speed X | --profile F]
    python run_scenario.py stream RECORDING.parquet --sink URL   (a recorded stream, sent again)

Exit codes (the full list is in ``--help``, ``EPILOG`` below): 0 success; 1 a result that is
not a success (calibrate: a target outside its tolerance; verify: a problem in the files; sweep:
a point failed) — and an unexpected error, with its traceback; 2 bad input (scenario file, flags,
data files, a mistyped command) with a one-screen message and no traceback; 3 a money invariant
failed during a run (the message says which, by how much, where), or the files reconcile wrote do
not agree; 4 a Dask worker running a city was lost;
5 stream: the reconciliation does not hold or the sink broke; 6 a city's own code raised an
error on its Dask worker (a defect: the worker's traceback is printed); 7 stream: reconciled,
but records dead-lettered or of unknown delivery (other than expected refusals of injected
malformed records); 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM), in both cases nothing written (a stream keeps what it
delivered, checkpointed; a stop that comes after the run was committed says so). This file
parses arguments and prints; the work is in sim.api.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import multiprocessing
import signal
import sys
import time
from pathlib import Path

from drills.cli import build_drill_parser, run_drill_command
from sim.stops import StopLatch, Terminated
from traffic.cli import build_score_parser, build_stream_parser, run_score, run_stream

EPILOG = """\
commands:
  run_scenario.py [run] SCENARIO.yaml [opts]  run a scenario (this page; "run" may be left out)
  run_scenario.py validate SCENARIO.yaml      check a scenario and the world it builds
  run_scenario.py calibrate SCENARIO.yaml     run the whole period, compare with published figures
  run_scenario.py verify RUN_DIR              recheck a run's hash chains and invariants from files
  run_scenario.py reconcile RUN_DIR           per-participant reconciliation files of a run
  run_scenario.py compare BASE VARIANT...     baseline vs variants, paired replications, 95% CIs
  run_scenario.py sweep BASE --param P=V1,V2  a grid, Latin hypercube or Sobol design over fields
  run_scenario.py stream SCENARIO --sink URL  stream records into a system under test, paced
                                              (a recorded stream .parquet: sent again)
  run_scenario.py score --labels L --result R what a system kept of a dirty stream, scored
  run_scenario.py drill DRILL --trainee T     an incident drill, headless, and its debrief

exit codes:
  0    success
  1    calibrate: a target outside its tolerance; verify: a problem found in the files;
       sweep: a point failed (reported; everything else is written); score: the system
       under test did not keep the dirty stream as it should (FAILED); also an unexpected
       error (a bug: its traceback is printed)
  2    bad input: a scenario, flag, data file or output folder that is wrong, or a mistyped
       command; nothing written (stream: also a sink that cannot be reached at the start, or
       that took none of the records of the first batches, --give-up-after: stopped, what was
       tried is in the state folder)
  3    a money invariant failed during a run, also the runs of calibrate, compare and drill
       (which, by how much, where); reconcile: the files it wrote do not agree (a summary
       with its detail, an acquirer's total with its batches, corrections with the refunds)
  4    a Dask worker running a city was lost, or the connection to it (--workers,
       --scheduler): nothing written; look at the cluster
  5    stream: generated = sent = acknowledged + dead-lettered + delivery unknown does not
       hold, or the sink broke
  6    a city's own code raised an error on its Dask worker (--workers, --scheduler): nothing
       written; a defect to report with the worker's traceback, which is printed (unless the
       worker's machine caused it, e.g. a full disk: OSError)
  7    stream: finished and reconciled, but records were dead-lettered or are of unknown
       delivery (the summary names the dead-letter file), other than a dirty stream's
       injected malformed records the sink refused one by one, as it should (alone: 0)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM): nothing written, no folder left behind
       (stream: what was delivered stays delivered and checkpointed; --resume goes on)
"""

EXIT_BAD_INPUT = 2
EXIT_INVARIANT = 3
EXIT_WORKER_LOST = 4
EXIT_SHARD_FAILED = 6  # 5 and 7 are the stream's (traffic/cli.py)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM
# How a sweep starts its worker processes (sim.sweep.execute): forked where the system can.
FORK_IF_AVAILABLE = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _stop_behind(exc: BaseException, stops: StopLatch) -> BaseException | None:
    """The Ctrl-C or SIGTERM an error came from, if one did: one in its chain (a stop landing
    while a compiled kernel calls back into Python — numba loading a kernel's constants on its
    first call in a process — comes out of the kernel as a SystemError caused by it), or one
    that came before it and was dropped by Python (sim/stops.py): the error is then the
    stop's doing, as likely as not, and the command was to stop anyway."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return stops.pending() if stops.pending is not None else None


def _stopped(stop: BaseException, command: str, written: list, finished: bool) -> int:
    """Say how a Ctrl-C or SIGTERM ended the command (``finished``: after its work was done, the
    stop having been dropped by Python until then: sim/stops.py); its exit code."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # stopping already: a second press
        signal.signal(signum, signal.SIG_IGN)  # must not kill the exit half-way
    how = "interrupted" if isinstance(stop, KeyboardInterrupt) else "terminated"
    if written and written[0] is not None:
        print(f"{how}: the run was already complete in {written[0]}", file=sys.stderr)
    elif finished:
        print(f"{how}: the {command} command had already finished", file=sys.stderr)
    elif command != "stream":  # a stream says what it kept itself
        print(f"{how}: nothing was written to the output folder", file=sys.stderr)
    return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED


def _whole_number(text: str, least: int, expected: str) -> int:
    """``text`` as an int of at least ``least``; argparse reports ``expected`` otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1, "a number >= 1")


def _seed(text: str) -> int:
    from sim.rng import MAX_SEED

    value = _whole_number(text, 0, "a number >= 0")
    if value > MAX_SEED:  # the streams mix 64 bits: a larger seed would repeat a smaller one
        raise argparse.ArgumentTypeError(f"expected a number up to 2**64 - 1, got {value}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="scenario YAML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a scenario field, e.g. --set fares.transfer.window_min=90 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests)."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py",
        description="Run a CardTwin scenario and write Parquet + DuckDB outputs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser)
    parser.add_argument("--days", type=_positive_int, help="simulated days (default: scenario's)")
    parser.add_argument("--seed", type=_seed, help="random seed (default: scenario's)")
    parser.add_argument("--out", type=Path, help="output directory (default: scenario's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    parser.add_argument(
        "--unmasked",
        action="store_true",
        help="write card ids, counters, balances, card numbers, names, ID numbers and phones in "
        "full (synthetic people only)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        help="privacy key (64 hex digits) for pseudonyms and identities; default: "
        "$CARDTWIN_PRIVACY_KEY_FILE or ~/.config/cardtwin/privacy.key, created on first use",
    )
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=_positive_int,
        help="run the cities as Dask actors on a local cluster of N worker processes (same "
        "files as in this process)",
    )
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the cities on an existing Dask cluster, e.g. tcp://127.0.0.1:8786",
    )
    return parser


def build_calibrate_parser() -> argparse.ArgumentParser:
    """Parser of the ``calibrate`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py calibrate",
        description="Run the scenario's whole period and compare it with published figures; "
        "writes calibration.json and calibration.md.",
    )
    _common(parser)
    parser.add_argument(
        "--targets",
        type=Path,
        default=Path(__file__).resolve().parent / "data" / "nantong" / "targets_2024.yaml",
        help="targets YAML (default: data/nantong/targets_2024.yaml of this repository)",
    )
    parser.add_argument("--days", type=_positive_int, help="simulated days (default: scenario's)")
    parser.add_argument("--seed", type=_seed, help="random seed (default: scenario's)")
    parser.add_argument("--out", type=Path, default=Path("runs/calibration"), help="report dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    """Parser of the ``compare`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py compare",
        description="Run a baseline and variants with common random numbers and report the "
        "paired differences with 95% confidence intervals (compare.json, compare.md, and "
        "compare.html: one self-contained page with interactive charts).",
    )
    parser.add_argument("base", type=Path, help="baseline scenario YAML")
    parser.add_argument("variants", type=Path, nargs="+", help="variant scenario YAML files")
    parser.add_argument("--replications", type=_positive_int, default=5, help="seeds per scenario")
    parser.add_argument("--days", type=_positive_int, help="simulated days (default: scenario's)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="report folder")
    parser.add_argument(
        "--independent-seeds",
        action="store_true",
        help="give each scenario its own seeds and unpaired CIs (to measure what pairing buys)",
    )
    parser.add_argument(
        "--fairness-threshold",
        type=float,
        default=0.2,
        help="flag a group whose share of the benefit (or of a fare increase) differs from its "
        "share of riders by more than this fraction (default 0.2)",
    )
    return parser


def _workers(text: str) -> int:
    return _whole_number(text, 0, "0 (in this process) or more")


def build_sweep_parser() -> argparse.ArgumentParser:
    """Parser of the ``sweep`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py sweep",
        description="Run a scenario over a grid of field values (--param) or a design file "
        "(grid, Latin hypercube or Sobol), replications with common random numbers, points in "
        "parallel worker processes; writes sweep.parquet, sweep.csv, sweep.json and sweep.html, "
        "and keeps finished points in OUT/points so that a re-run only runs what is missing. "
        "Exit 1 if a point failed (the others are kept and written).",
    )
    parser.add_argument("base", type=Path, help="base scenario YAML")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--param",
        dest="params",
        action="append",
        metavar="PATH=V1,V2,...",
        help="a grid parameter: a scenario field path (as for --set) and its values, each read "
        "as YAML, e.g. fares.transfer.window_min=60,90,120 (repeatable: every combination)",
    )
    what.add_argument("--design", type=Path, help="design YAML file (kind: grid | lhs | sobol)")
    parser.add_argument(
        "--replications", type=_positive_int, help="runs per point (default: design's, or 3)"
    )
    parser.add_argument("--days", type=_positive_int, help="simulated days (default: scenario's)")
    parser.add_argument(
        "--output",
        dest="outputs",
        action="append",
        metavar="MEASURE",
        help="a measure to report, e.g. fare_revenue_fen or taps.card_type.longevity "
        "(repeatable; default: the design's, or the compare's headline measures)",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        help="worker processes (a Dask LocalCluster on this machine; 0: in this process); "
        "default: as many as the cores and memory allow",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def run_sweep(args: argparse.Namespace, api, stops: StopLatch) -> int:
    """The ``sweep`` sub-command: run, write, print what failed; 0, or 1 if a point failed."""
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        stops.check()  # a stop Python dropped: acted on at the next point done
        step = max(1, total // 20)  # about twenty lines however large the design
        if not args.quiet and total and (done % step == 0 or done == total):
            elapsed = time.perf_counter() - started
            print(f"sweep: {done}/{total} points run ({elapsed:.0f} s)", file=sys.stderr)

    try:
        summary = api.sweep(
            args.base,
            args.design if args.design is not None else args.params,
            replications=args.replications,
            days=args.days,
            outputs=args.outputs,
            workers=args.workers,
            out_dir=args.out,
            progress=progress,
            # This process is the command and nothing else: its workers may be forked from it
            # and skip importing the engine again (~1.5 s each, a tenth of a small sweep).
            start_method=FORK_IF_AVAILABLE,
        )
    except (KeyboardInterrupt, Terminated) as stop:
        print(
            f"{'interrupted' if isinstance(stop, KeyboardInterrupt) else 'terminated'}: finished "
            f"points are kept in {args.out / 'points'}; run the sweep again to go on",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED
    done = summary["execution"]
    print(
        f"sweep of {summary['base']['name']}: {done['points']} points x "
        f"{summary['replications']} replications x {summary['days']} days; {done['points_run']} "
        f"run now, {done['points_reused']} reused from {args.out / 'points'}; {done['workers']} "
        f"worker(s), {time.perf_counter() - started:.1f} s"
    )
    for name in ("sweep.parquet", "sweep.csv", "sweep.json", "sweep.html"):
        print(f"  {args.out / name}")
    for failed in summary["failed"]:
        values = ", ".join(f"{k}={v}" for k, v in failed["values"].items())
        print(f"point {failed['point']} failed ({values}): {failed['error']}", file=sys.stderr)
    if summary["failed"]:
        print(f"{len(summary['failed'])} point(s) failed", file=sys.stderr)
    return 1 if summary["failed"] else 0


def build_verify_parser() -> argparse.ArgumentParser:
    """Parser of the ``verify`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py verify",
        description="Check that a run's files are all there and readable with the row counts "
        "run_meta.json gives, and recompute its hash chains, digests, row and money invariants "
        "(the journal against the records) from them; prints each problem with where it is "
        "(exit 1), or 'verified' (exit 0).",
    )
    parser.add_argument("run_dir", type=Path, help="a run's output folder")
    return parser


def build_reconcile_parser() -> argparse.ArgumentParser:
    """Parser of the ``reconcile`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py reconcile",
        description="Write a finished run's per-participant reconciliation files (summary, "
        "detail, rejects, corrections; layout in docs/reconciliation.md) and check them.",
    )
    parser.add_argument("run_dir", type=Path, help="a run's output folder")
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write them (default: RUN_DIR/reconciliation, which a later run written "
        "to RUN_DIR replaces with the run); replaces only an earlier "
        "reconcile's output: the run folder, a folder holding it or inside it, and a folder "
        "with other files are refused",
    )
    return parser


def build_validate_parser() -> argparse.ArgumentParser:
    """Parser of the ``validate`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py validate", description="Load and validate a scenario file."
    )
    _common(parser)
    return parser


class Progress:
    """Event subscriber drawing a progress bar per simulated day with taps/s (rich); silent
    when quiet. Use as a context manager so the bar is closed however the run ends."""

    def __init__(self, days: int, quiet: bool) -> None:
        self._bar = None
        self._last = time.perf_counter()
        if not quiet:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("[bold]simulating[/] day"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self._task = self._bar.add_task("days", total=days, rate="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        self._last = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, event) -> None:
        from sim.events import DayClosed

        if self._bar is None or not isinstance(event, DayClosed):
            return
        now = time.perf_counter()
        taps, seconds = event.tap_records, now - self._last
        self._last = now
        rate = f"{taps / seconds:,.0f} taps/s" if seconds > 0 else ""
        self._bar.update(self._task, advance=1, rate=f"{taps:,} taps, {rate}")


def print_summary(summary) -> None:
    """The KPI summary table of a finished run (``sim.api.RunSummary``) on the terminal."""
    from rich.console import Console
    from rich.table import Table

    from sim.lending import summary_lines

    t = summary.totals
    first = summary.world.start_date if summary.world is not None else None
    span = ""
    if first is not None:
        last = first + dt.timedelta(days=summary.days - 1)
        span = f" ({first.isoformat()} to {last.isoformat()})"
    table = Table(title=f"CardTwin — {summary.scenario}, {summary.days} days{span}")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    rows = [
        ("tap records", f"{summary.taps:,}"),
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
            # Ordered, to be paid on a date after the period (run_meta.json totals too).
            "refunds outstanding at the end (元)",
            f"{t.get('refunds_outstanding', 0):,} "
            f"({t.get('refunds_outstanding_fen', 0) / 100:,.2f})",
        ),
        (
            "cleared / rejected / pending",
            f"{t.get('cleared', 0):,} / {t.get('rejected', 0):,} / {t.get('pending', 0):,}",
        ),
        (
            # A deferral is a day a settlement was due and still could not be paid.
            "deposit calls / settlement deferral days",
            f"{t.get('deposit_calls', 0):,} / {t.get('settlements_deferred', 0):,}",
        ),
        ("time to build the world (s)", f"{summary.timings_s.get('build_world_s', 0):.1f}"),
        (
            "time to simulate and write (s)",
            f"{summary.timings_s.get('simulate_and_write_s', 0):.1f}",
        ),
        ("tap records per second of simulating and writing", f"{summary.taps_per_s:,.0f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    scaled = summary.scaled_cities()
    if scaled:
        Console().print(
            "KPIs are expanded to full scale (tap records and clearing counts are as simulated): "
            + ", ".join(f"{name} at scale {scale:g}" for name, scale in scaled)
        )
    if len(summary.cross_city.get("cities", [])) > 1:
        Console().print(cross_city_table(summary.cross_city))
    if len(summary.worlds) > 1 and summary.clearing.get("fees_earned_fen"):
        Console().print(fees_table(summary.clearing))
    venues = summary.social_security
    if venues:
        away = sum(
            r["entries"] for r in venues["by_city"] if r["holder_city_code"] != r["venue_city_code"]
        )
        Console().print(
            f"Social-security cards at culture venues (full scale): {venues['entries']:,} entries, "
            f"{away:,} in another city; paid {venues['amount_fen'] / 100:,.2f} 元, local "
            f"discounts {venues['discount_fen'] / 100:,.2f} 元 (to visitors, same-city "
            f"treatment: {venues['visitor_discount_fen'] / 100:,.2f} 元)"
        )
    for line in summary_lines(summary.card_lending):
        Console().print(line)
    if summary.out_dir is not None:
        Console().print(
            f"outputs: {summary.out_dir}  (DuckDB: {summary.out_dir / 'cardtwin.duckdb'})"
        )


def fees_table(report: dict):
    """Fees each clearing node earned, and each issuer's deposit calls and deferred
    settlements (sim/clearing_report.py)."""
    from rich.table import Table

    table = Table(title="Clearing: fees earned per node, deposit calls per issuer")
    columns = ("node or issuer", "fees (元)", "deposit calls", "deferrals (days waited)")
    for column in columns:
        table.add_column(column, justify="left" if column == "node or issuer" else "right")
    for node, fen in report["fees_earned_fen"].items():
        table.add_row(node, f"{fen / 100:,.2f}", "", "")
    for issuer, counts in report["deposits"].items():
        table.add_row(issuer, "", f"{counts['calls']:,}", f"{counts['settlements_deferred']:,}")
    return table


def cross_city_table(report: dict):
    """Each simulated city's inbound and outbound shares of boardings (sim/cross_city.py)."""
    from rich.table import Table

    table = Table(title="Cross-city riding (boardings, full scale)")
    for column in ("city", "inbound: other cities' riders", "outbound: own riders elsewhere"):
        table.add_column(column, justify="left" if column == "city" else "right")
    for city in report["cities"]:
        table.add_row(
            city["city"],
            *(
                "-" if city[k] is None else f"{100 * city[k]:.2f}%"
                for k in ("inbound_share", "outbound_share")
            ),
        )
    return table


COMMANDS = (
    "run", "validate", "calibrate", "verify", "reconcile", "compare", "sweep", "stream", "score",
    "drill",
)  # fmt: skip
SCENARIO_SUFFIXES = (".yaml", ".yml")


def _command(argv: list[str]) -> str | None:
    """The command ``argv`` asks for: its first word if that is one, else ``run`` (the first
    word, if any, is then the scenario); None if the first word is neither a command nor
    anything like a scenario file (no such file, no folder, no .yaml): a mistyped command."""
    if not argv or argv[0].startswith("-"):
        return "run"
    first = argv[0]
    if first in COMMANDS:
        return first
    path = Path(first)
    if path.exists() or path.suffix in SCENARIO_SUFFIXES or len(path.parts) > 1:
        return "run"
    return None


def _not_a_command(word: str) -> str:
    """Why ``word`` was refused, the commands, and the nearest of them if one is near."""
    message = (
        f"{word!r} is not a command or a scenario file; commands: {', '.join(COMMANDS)} "
        "(run_scenario.py --help)"
    )
    near = difflib.get_close_matches(word, COMMANDS, n=1)
    return message + (f"; did you mean {near[0]}?" if near else "")


def _dispatch(command: str, args: argparse.Namespace, api, written: list, stops: StopLatch) -> int:
    """Run ``command`` with its parsed flags; its exit code (errors raise, for ``main`` to
    report). A run appends its folder to ``written`` once committed."""
    if command == "stream":
        return run_stream(args, api, stops)
    if command == "score":
        return run_score(args, api)
    if command == "drill":
        return run_drill_command(args, api)
    if command == "sweep":
        return run_sweep(args, api, stops)
    if command == "compare":
        base = api.load_scenario(args.base, days=args.days)
        variants = [api.load_scenario(v, days=args.days) for v in args.variants]
        api.compare(
            base,
            variants,
            replications=args.replications,
            out_dir=args.out,
            independent_seeds=args.independent_seeds,
            fairness_threshold=args.fairness_threshold,
            sources=[args.base, *args.variants],  # a variant unlike the base: its file
        )
        print((args.out / "compare.md").read_text(encoding="utf-8"))
        reports = ", ".join(str(args.out / f"compare.{ext}") for ext in ("json", "md", "html"))
        print(f"report: {reports}")
        return 0
    if command == "verify":
        problems = api.verify(args.run_dir)
        for problem in problems:
            print(problem)
        print(f"{args.run_dir}: " + (f"{len(problems)} problem(s)" if problems else "verified"))
        return 1 if problems else 0
    if command == "reconcile":
        out = api.reconcile(args.run_dir, args.out)
        print(f"{args.run_dir}: reconciliation files in {out} (summaries agree with details)")
        return 0
    if command == "validate":
        # Everything a run would refuse from the files alone: the scenario, then the world
        # built from it (outlets file, generated lines, incident targets, clearing parties).
        scenario = api.load_scenario(args.scenario, args.overrides)
        api.build(scenario)
        print(f"{args.scenario}: valid scenario {scenario.name!r}")
        return 0
    if command == "calibrate":
        scenario = api.load_scenario(args.scenario, args.overrides, days=args.days, seed=args.seed)
        api.load_targets(args.targets)  # refused before the progress bar, not after the run
        with Progress(scenario.period.days, args.quiet) as progress:
            report = api.calibrate(
                scenario, args.targets, args.out, subscribers=[progress, stops.check]
            )
        print((args.out / "calibration.md").read_text(encoding="utf-8"))
        print(f"report: {args.out / 'calibration.json'}, {args.out / 'calibration.md'}")
        return 0 if report["all_required_passed"] else 1
    scenario = api.load_scenario(args.scenario, args.overrides, days=args.days, seed=args.seed)
    out = args.out if args.out is not None else Path(scenario.output.dir)
    with (
        api.dask_client(
            args.workers,
            args.scheduler,
            shards=len(getattr(scenario, "city_scenarios", [scenario])),
        ) as client,
        Progress(scenario.period.days, args.quiet) as progress,
    ):
        summary = api.run(
            scenario,
            out,
            unmasked=args.unmasked,
            scenario_path=args.scenario,
            subscribers=[progress, stops.check],  # a stop Python dropped: acted on
            privacy_key=api.privacy_key(args.key_file),
            client=client,
            freeze_gc=True,  # one run in this process
        )
        written.append(summary.out_dir)  # from here on a stop interrupts the rest only
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        print_summary(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    if command is None:
        print(f"run_scenario.py: error: {_not_a_command(argv[0])}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if argv and argv[0] == command:
        argv = argv[1:]
    parser = {
        "validate": build_validate_parser,
        "calibrate": build_calibrate_parser,
        "verify": build_verify_parser,
        "compare": build_compare_parser,
        "sweep": build_sweep_parser,
        "reconcile": build_reconcile_parser,
        "stream": lambda: build_stream_parser(_positive_int, _seed, _common),
        "score": build_score_parser,
        "drill": build_drill_parser,
        "run": build_parser,
    }[command]()
    # Flags are checked before the simulation stack is imported, so their errors answer at once.
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C: the run's output is discarded on the way out (sim.api); each
    # is remembered too, for when Python drops it (sim/stops.py).
    stops = StopLatch()
    restore = stops.install()
    try:
        from sim import api
    except (KeyboardInterrupt, Terminated) as stop:
        restore()
        return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED

    written: list = []  # the run's folder, once it is committed
    finished = False
    try:
        code = _dispatch(command, args, api, written, stops)
        finished = True
        stops.check()  # a stop Python dropped, noticed only now: still a stop
        return code
    except api.BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except api.InvariantViolation as exc:
        print(f"{'reconcile' if command == 'reconcile' else 'run'} failed: {exc}", file=sys.stderr)
        return EXIT_INVARIANT
    except api.WorkerLost as exc:
        print(f"run failed: {exc}; nothing was written to the output folder", file=sys.stderr)
        return EXIT_WORKER_LOST
    except api.ShardFailed as exc:  # not the cluster's fault: the traceback is what to report
        print(f"worker traceback:\n{exc.remote_traceback}", file=sys.stderr)
        print(
            f"run failed: {exc}; nothing was written to the output folder. Unless the worker's "
            "machine caused it (an OSError: a full disk, say), this is a defect in CardTwin: "
            "please report it with the worker traceback above",
            file=sys.stderr,
        )
        return EXIT_SHARD_FAILED
    except OSError as exc:  # the machine, not the simulation: a full disk, a permission
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Terminated) as stop:
        return _stopped(stop, command, written, finished)
    except Exception as exc:  # a defect, unless a stop caused it
        stop = _stop_behind(exc, stops)
        if stop is None:
            raise
        return _stopped(stop, command, written, finished)
    finally:  # the caller's own handlers back (main() is called in-process by tests and tools)
        restore()


if __name__ == "__main__":
    code = main()
    # Exiting: a late Ctrl-C or SIGTERM must not turn the exit code into a signal's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
