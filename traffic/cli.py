"""The ``stream`` and ``score`` commands of run_scenario.py: flags, the line printed each second,
exit codes.

    python run_scenario.py stream SCENARIO --sink URL [--rate R | --speed X | --profile FILE]
        [--days N] [--format taps|topups|uploads|clearing] [--encoding E] [--batch-size N]
        [--concurrency N] [--header 'Name: value'] [--token-env VAR] [--restamp] [--resume]
        [--state DIR] [--give-up-after N] [--inject KIND=RATE]
    python run_scenario.py stream RECORDING.parquet --sink URL [pacing, delivery flags]

A ``.parquet`` in place of the scenario is a recorded stream (traffic/recording.py), sent again.

No simulation logic here: the work is in traffic/stream.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.stops import StopLatch

#: Bad input (run_scenario.py's code): a flag, the scenario, the sink's URL, a sink that cannot
#: be reached when the stream starts or that takes none of its first batches
#: (``--give-up-after``).
EXIT_BAD_INPUT = 2
#: The stream ended but generated = sent = acknowledged + dead-lettered + delivery unknown does
#: not hold, or the sink broke down.
EXIT_UNRECONCILED = 5
#: The stream finished and reconciled, but not every record was acknowledged: some were
#: dead-lettered or are of unknown delivery (the dead-letter file says which) — other than
#: expected refusals (a dirty stream's injected malformed records refused one by one, as they
#: should be: traffic/delivery.py), which alone leave the exit code 0. 6 is run_scenario.py's
#: (a city's code failed on a Dask worker).
EXIT_UNDELIVERED = 7
#: ``score``: the system under test did not keep the dirty stream as it should have.
EXIT_SCORE_FAILED = 1


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


class _GiveUpAfter(argparse.Action):
    """``--give-up-after``: checked by the library's own check (traffic/delivery.py
    ``give_up_after_checked``), so the command line and a library caller get one message. An
    action, not a ``type``: argparse would put ``argument --give-up-after:`` before a message
    that already names the flag."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from traffic.delivery import GiveUpAfterError, give_up_after_checked

        try:
            setattr(namespace, self.dest, give_up_after_checked(values, text=True))
        except GiveUpAfterError as exc:
            parser.error(str(exc))  # usage, the message, exit 2


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def build_stream_parser(positive_int, seed, common) -> argparse.ArgumentParser:
    """Parser of the ``stream`` sub-command (``positive_int``, ``seed``: run_scenario's flag
    types; ``common``: adds the scenario and ``--set``)."""
    from traffic.delivery import FIRST_BATCHES
    from traffic.encoding import ENCODINGS
    from traffic.records import FORMATS

    parser = argparse.ArgumentParser(
        prog="run_scenario.py stream",
        description="Run a scenario and stream its records into a system under test as they "
        "happen, paced, with retries, a dead-letter file and a reconciliation at the end "
        "(docs/streaming.md). In place of the scenario, a stream recorded with --sink "
        "file:///X.parquet is sent again as it was, without simulating. Exit codes: 0 every "
        "record acknowledged (generated = sent = acknowledged), or every record not "
        "acknowledged an expected refusal: an injected malformed record (--inject "
        "malformed=...) that the sink refused on its own, as it should; "
        f"{EXIT_UNDELIVERED} finished and reconciled (generated = sent = acknowledged + "
        "dead-lettered + delivery unknown) but some records dead-lettered or of unknown "
        "delivery other than expected refusals (see STATE/dead_letters.jsonl); "
        f"{EXIT_UNRECONCILED} that equation does not hold, or the sink broke down; "
        f"{EXIT_BAD_INPUT} bad input, including a sink that cannot be reached when the stream "
        "starts or that took none of the records of its first batches (--give-up-after, "
        f"default {FIRST_BATCHES}); 130/143 stopped (resume with --resume).",
    )
    common(parser)
    scenario = next(a for a in parser._actions if a.dest == "scenario")
    scenario.help = "scenario YAML file, or a recorded stream (.parquet) to send again"
    parser.add_argument(
        "--sink",
        required=True,
        metavar="URL",
        help="null | - (stdout) | file:///PATH.jsonl|.csv|.parquet | http(s)://HOST/PATH | "
        "redis://HOST:PORT/DB | postgresql://USER@HOST/DB?table=T | mqtt://HOST:PORT/PREFIX",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=_positive_float, help="records per second, evenly")
    pace.add_argument(
        "--speed", type=_positive_float, help="simulated time X times faster than the wall clock"
    )
    pace.add_argument("--profile", type=Path, help="a YAML of stages (ramp, hold, spike...)")
    parser.add_argument("--days", type=positive_int, help="simulated days (default: scenario's)")
    parser.add_argument("--seed", type=seed, help="random seed (default: scenario's)")
    parser.add_argument("--format", choices=sorted(FORMATS), help="what is sent (default: taps)")
    parser.add_argument(
        "--encoding",
        choices=[*ENCODINGS, "jsonl"],
        help="bytes on the wire (default: the sink's: JSON, or the file's extension)",
    )
    parser.add_argument(
        "--restamp",
        action="store_true",
        help="stamp records with the wall-clock time they are due instead of simulated time "
        "(plus each record's own offset: a skewed clock's error, a late record's delay)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="records a batch")
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=4,
        help="batches in flight (HTTP requests, PostgreSQL connections)",
    )
    parser.add_argument(
        "--header",
        dest="headers",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header to send (repeatable)",
    )
    parser.add_argument(
        "--token-env", metavar="VAR", help="environment variable holding an HTTP bearer token"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        help="seconds connecting or a request may take (HTTP, MQTT, Redis; PostgreSQL's "
        "connection); a PostgreSQL transaction (COPY and COMMIT) is cancelled after it, and its "
        "connection cut if it still does not answer",
    )
    parser.add_argument(
        "--max-attempts", type=positive_int, default=8, help="tries of a failing batch"
    )
    parser.add_argument(
        "--give-up-after",
        action=_GiveUpAfter,
        default=FIRST_BATCHES,
        metavar="N",
        help=f"stop the stream (exit {EXIT_BAD_INPUT}) when the sink took none of the records "
        f"of its first N batches (default {FIRST_BATCHES}); 0: never stop for that",
    )
    parser.add_argument(
        "--state",
        type=Path,
        help="folder of the checkpoint, dead-letter file and report "
        "(default: runs/streams/<scenario name>-<format>; a recording's: "
        "runs/streams/<file name without .parquet>-replay)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint (records after its done-through mark are sent again)",
    )
    parser.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="KIND=RATE",
        help="dirty data: duplicate, late, out_of_order, clock_skew or malformed at a rate "
        "(0-1; clock_skew: a share of the devices); repeatable; labels in STATE/labels",
    )
    parser.add_argument(
        "--skew-seconds", type=positive_int, default=300, help="a skewed device clock's error"
    )
    parser.add_argument("--unmasked", action="store_true", help="card ids in full (synthetic)")
    parser.add_argument("--key-file", type=Path, help="privacy key (as for a run)")
    parser.add_argument("--quiet", action="store_true", help="no line each second")
    return parser


def _second_line(row: dict) -> None:
    """Print a row of the per-second series (traffic/stream.py ``_Pacer._tick``) to stderr."""
    target = "-" if row["target_per_s"] is None else f"{row['target_per_s']:,.0f}/s"
    sim = f"  sim {row['sim_time']}" if row["sim_time"] else ""
    # Of the dead letters, those refused as they should be; said once there are some, as the
    # summary does (a clean stream has none, and a column of zeros would only be noise).
    expected = row["expected_refusals"]
    refused = f" ({expected:,} expected refusals)" if expected else ""
    print(
        f"{row['t_s']:8.1f} s  target {target:>10}  sent {row['sent_per_s']:>10,.0f}/s  "
        f"acked {row['acknowledged_per_s']:>10,.0f}/s  queued {row['queued_batches']:>2}  "
        f"behind {row['behind_s']:6.2f} s  retries {row['retries']:,}  "
        f"dead {row['dead_lettered']:,}{refused}{sim}",
        file=sys.stderr,
        flush=True,
    )


#: Flags that shape what a simulation makes (with their defaults), so not a recording's.
_SIMULATION_FLAGS = {
    "overrides": ("--set", []),
    "days": ("--days", None),
    "seed": ("--seed", None),
    "inject": ("--inject", []),
    "unmasked": ("--unmasked", False),
    "key_file": ("--key-file", None),
    "skew_seconds": ("--skew-seconds", 300),
}


def run_stream(args: argparse.Namespace, api, stops: StopLatch) -> int:
    """The ``stream`` sub-command; returns the exit code (bad input raises api.BadInput).
    ``stops`` (sim/stops.py) ends the stream on a stop Python dropped, as on one that came."""
    from traffic.stream import replay, stream

    if args.scenario.suffix.lower() == ".parquet":
        recording = _recording(args, api)
        state = args.state or Path("runs/streams") / f"{args.scenario.stem}-replay"
        settings = _settings(args, api, state, recording.record_format, injection=None)
        return _streamed(
            lambda on_second: replay(recording, settings, on_second=on_second, stop=stops.event),
            args,
            api,
            state,
            stops,
        )
    from traffic.dirty import Injection, InjectionError

    record_format = args.format or "taps"
    scenario = api.load_scenario(args.scenario, args.overrides, days=args.days, seed=args.seed)
    try:
        injection = Injection.parse(args.inject, args.skew_seconds)
    except InjectionError as exc:
        raise api.BadInput(str(exc)) from None
    state = args.state or Path("runs/streams") / f"{scenario.name}-{record_format}"
    settings = _settings(args, api, state, record_format, injection)
    key = api.privacy_key(args.key_file)
    return _streamed(
        lambda on_second: stream(
            scenario, settings, privacy_key=key, on_second=on_second, stop=stops.event
        ),
        args,
        api,
        state,
        stops,
    )


def _recording(args: argparse.Namespace, api):
    """The recording named in place of the scenario, once its flags and its file are checked."""
    from traffic.recording import Recording, RecordingError

    given = [
        flag for name, (flag, unset) in _SIMULATION_FLAGS.items() if getattr(args, name) != unset
    ]
    if given:
        raise api.BadInput(
            f"{', '.join(given)}: {args.scenario} is a recorded stream, sent again as it was "
            "recorded; these flags shape a simulation (record again with them instead)"
        )
    try:
        recording = Recording.open(args.scenario)
    except RecordingError as exc:
        raise api.BadInput(str(exc)) from None
    if args.format is not None and args.format != recording.record_format:
        raise api.BadInput(
            f"--format {args.format}: {args.scenario} holds {recording.record_format} records"
        )
    return recording


def _settings(args, api, state: Path, record_format: str, injection):
    """The stream's settings from the flags (pacing, sink, delivery, state folder)."""
    from sim.yaml_config import ConfigError
    from traffic.delivery import RetryPolicy
    from traffic.pacing import load_profile, make_pacer
    from traffic.sinks import SinkOptions
    from traffic.stream import StreamSettings

    try:
        profile = load_profile(args.profile) if args.profile is not None else None
    except ConfigError as exc:
        raise api.BadInput(f"--profile {exc}") from None
    encoding = "json" if args.encoding == "jsonl" else args.encoding
    if args.encoding == "jsonl" and args.sink.startswith(("http://", "https://")):
        encoding = "jsonl"
    return StreamSettings(
        sink=args.sink,
        state_dir=state,
        record_format=record_format,
        pacer=make_pacer(args.rate, args.speed, profile),
        batch_size=args.batch_size,
        sink_options=SinkOptions(
            encoding=encoding,
            concurrency=args.concurrency,
            timeout_s=args.timeout,
            headers=tuple(args.headers),
            token_env=args.token_env,
            record_format=record_format,
        ),
        retry=RetryPolicy(max_attempts=args.max_attempts),
        give_up_after=args.give_up_after,
        restamp=args.restamp,
        resume=args.resume,
        unmasked=args.unmasked,
        injection=injection,
    )


def _streamed(start, args: argparse.Namespace, api, state: Path, stops: StopLatch) -> int:
    """Run the stream ``start(on_second)`` begins; print its summary; the exit code."""
    from traffic.delivery import DeliveryFailed
    from traffic.recording import RecordingError
    from traffic.stream import DEAD_LETTER_FILE, REPORT_FILE, SinkTookNothing, StreamSetupError

    try:
        report = start(None if args.quiet else _second_line)
        stops.check()  # the stream ended early on a stop Python dropped: a stop all the same
    except StreamSetupError as exc:
        raise api.BadInput(str(exc)) from None
    except SinkTookNothing as exc:  # a sink that takes nothing: the setup, not a load result
        raise api.BadInput(
            f"stream stopped: {exc}; check the URL, that the receiver is up and what it "
            "accepts, or give --give-up-after 0 to send every record all the same (what was "
            f"tried: {state / DEAD_LETTER_FILE}, {state / REPORT_FILE})"
        ) from None
    except RecordingError as exc:  # found as it was read: what was sent is checkpointed
        raise api.BadInput(f"{exc} (what was sent before is checkpointed in {state})") from None
    except DeliveryFailed as exc:
        print(f"stream failed: the sink broke down: {exc}", file=sys.stderr)
        print(
            f"  the checkpoint in {state} says what was delivered; {_going_on(args)}",
            file=sys.stderr,
        )
        return EXIT_UNRECONCILED
    except BaseException as stop:
        if not isinstance(stop, Exception):  # Ctrl-C, SIGTERM: the caller sets the exit code
            print(
                f"stopped: what was delivered is checkpointed in {state}; {_going_on(args)}",
                file=sys.stderr,
            )
        raise
    t = report.totals
    unknown, expected = t["delivery_unknown"], t["expected_refusals"]
    # Each said only when there are some: most streams have neither.
    outcomes = (
        f"{t['acknowledged']:,} acknowledged, {t['dead_lettered']:,} dead-lettered"
        + (f" ({expected:,} of them {_EXPECTED})" if expected else "")
        + (f", {unknown:,} of unknown delivery" if unknown else "")
    )
    undelivered = t["dead_lettered"] + unknown
    failed = undelivered - expected  # not acknowledged, and not as it should be
    if report.already_finished:
        print(
            f"stream {report.stream_id} had already finished ({t['generated']:,} records: "
            f"{outcomes}): nothing sent; {state} left as it was",
            file=sys.stderr,
        )
        if undelivered:  # the stream's outcome, as when it finished
            print(f"  dead letters: {state / DEAD_LETTER_FILE}", file=sys.stderr)
        return EXIT_UNDELIVERED if failed else 0
    print(
        f"stream {report.stream_id} to {report.sink}: {t['generated']:,} generated, "
        f"{t['sent']:,} sent, {outcomes}, {t['retries']:,} retries, {report.wall_s:.1f} s "
        f"({report.pacing})",
        file=sys.stderr,
    )
    if report.resumed_from:
        print(f"  resumed at stream position {report.resumed_from:,}", file=sys.stderr)
    if undelivered:
        print(f"  dead letters: {state / DEAD_LETTER_FILE}", file=sys.stderr)
    if unknown:
        print(
            f"  {unknown:,} records given up on may or may not have reached the sink (it could "
            "not be asked afterwards): their dead letters' reason begins 'delivery unknown'",
            file=sys.stderr,
        )
    equation = "generated = sent = acknowledged + dead-lettered" + (
        " + delivery unknown" if unknown else ""
    )
    if report.reconciled and failed:
        print(f"  reconciled: {equation}", file=sys.stderr)
        # On what was acknowledged, not on the failures: expected refusals (an all-malformed
        # batch refused record by record) are not failures, yet the sink took no record.
        hint = (
            ": the sink took none of them; check the URL, that the receiver is up and what it "
            "accepts"
            if t["acknowledged"] == 0
            else ""
        )
        apart = f"; {expected:,} of them {_EXPECTED}, the other {failed:,} not" if expected else ""
        print(
            f"  NOT all delivered: {undelivered:,} of {t['generated']:,} records dead-lettered"
            f"{' or of unknown delivery' if unknown else ''}{apart}{hint} "
            f"(exit {EXIT_UNDELIVERED})",
            file=sys.stderr,
        )
        return EXIT_UNDELIVERED
    if report.reconciled:
        print(f"  reconciled: {equation}", file=sys.stderr)
        if expected:
            print(
                f"  every dead letter ({expected:,}) is an injected malformed record the sink "
                "refused on its own, as it should ('expected_refusal': true in the dead-letter "
                "file): not a failure of the stream; score what the system kept with "
                "`run_scenario.py score`",
                file=sys.stderr,
            )
        return 0
    print(
        f"  NOT reconciled: {equation} does not hold (report: {state / REPORT_FILE})",
        file=sys.stderr,
    )
    return EXIT_UNRECONCILED


#: How the summary names expected refusals (traffic/delivery.py).
_EXPECTED = "injected malformed records refused as they should be"


def _going_on(args: argparse.Namespace) -> str:
    """How a stopped stream goes on: --resume, except into a Parquet file (written whole)."""
    if args.sink.startswith("file:") and (
        args.sink.lower().endswith(".parquet") or args.encoding == "parquet"
    ):
        return "a Parquet file cannot be continued: start the stream again"
    return "the rest of the same stream follows with --resume"


def build_score_parser() -> argparse.ArgumentParser:
    """Parser of the ``score`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="run_scenario.py score",
        description="Score what a system under test kept of a dirty stream (--inject) against "
        "the stream's labels: duplicates caught and missed, malformed records refused, late "
        "and skewed records kept, money reconciled (docs/streaming.md). Exit codes: 0 the "
        "system kept the stream as it should (PASSED); "
        f"{EXIT_SCORE_FAILED} it did not (FAILED: each way it did not, also in --json "
        f"'verdict'); {EXIT_BAD_INPUT} bad input: labels or a result that cannot be read, a "
        "result with no records or none of the labels' stream.",
    )
    parser.add_argument(
        "--labels", type=Path, required=True, help="the stream's labels folder (STATE/labels)"
    )
    parser.add_argument(
        "--result",
        required=True,
        metavar="SOURCE",
        help="the system's kept records: a .csv, .parquet or .jsonl file, or postgresql://...",
    )
    parser.add_argument("--table", help="the table, for a postgresql:// result")
    parser.add_argument("--json", type=Path, help="also write the scores here as JSON")
    return parser


def run_score(args: argparse.Namespace, api) -> int:
    """The ``score`` sub-command: prints the scores; 0 when the system passed, else
    EXIT_SCORE_FAILED; bad input raises api.BadInput."""
    import json

    from traffic.score import ScoreInputError, read_result, score, text_report

    try:
        report = score(args.labels, read_result(args.result, args.table), source=args.result)
    except ScoreInputError as exc:
        raise api.BadInput(str(exc)) from None
    print(text_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if report["verdict"]["passed"] else EXIT_SCORE_FAILED


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_SCORE_FAILED",
    "EXIT_UNDELIVERED",
    "EXIT_UNRECONCILED",
    "build_score_parser",
    "build_stream_parser",
    "run_score",
    "run_stream",
]
