"""A stream: the simulation's records, paced, delivered, accounted for.

Three threads and two bounded queues:

    production thread ──chunks (a day each)──► pacer (this thread) ──batches──► sink workers
    sim.api.iter_days + RecordSource           due times, batching,          traffic/delivery.py
    (``replay``: a Recording read back)        the report every second

Each hand-over waits when the next stage is full, so a slow sink slows the pacer and then the
simulation: the lag grows and is reported, nothing is dropped. At the end the stream reconciles:
generated = sent = acknowledged + dead-lettered + delivery unknown, over the whole stream
(earlier sessions of a resumed stream included); of the dead-lettered, the injected malformed
records of a dirty stream that the sink refused one by one are counted apart as expected
refusals (traffic/delivery.py). Everything the stream keeps is in its state folder: the
checkpoint, the dead-letter file, ``report.json`` (the counts and the per-second series,
written however the session ends) and, for a dirty stream, the labels. A sink that
acknowledges none of the records of the session's first batches (``give_up_after`` of them)
stops the stream (``SinkTookNothing``, traffic/delivery.py): a load test into it would measure
nothing.

A resumed session (``--resume``) must send into the same sink, in the same encoding, with the
same profile and ``--restamp`` as the checkpoint records, or it is refused before anything is
touched, and the sink may refuse a destination that is not the stream's own (``check_resume``:
a file sink's file must still end with the stream's record where the checkpoint says, since it
is cut back there). A stream that finished is not sent again.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import queue
import shutil
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from traffic.accounting import CHECKPOINT_FILE, Accounts, Checkpoint, DeadLetters
from traffic.delivery import (
    FIRST_BATCHES,
    Delivery,
    GiveUpAfterError,
    RetryPolicy,
    give_up_after_checked,
)
from traffic.dirty import Injection, MalformedPositions, Spoiler, cut_labels, labels_stream_id
from traffic.pacing import Pacer, Unpaced
from traffic.recording import Recording
from traffic.records import FORMATS, NO_TIME, Chunk, RecordSource, StreamStopped, epoch_seconds
from traffic.sinks import Batch, Sink, SinkOptions, SinkSetupError, open_sink, redacted

DEAD_LETTER_FILE = "dead_letters.jsonl"
REPORT_FILE = "report.json"
LABELS_DIR = "labels"
#: Batches waiting for a sink worker, at most (then the pacer waits, reporting each second).
QUEUE_BATCHES = 8


class StreamSetupError(ValueError):
    """A stream cannot start as asked (bad sink, a checkpoint of another stream...)."""


class SinkTookNothing(RuntimeError):
    """The sink acknowledged none of the records of the session's first batches
    (``StreamSettings.give_up_after``; traffic/delivery.py): the stream stopped, since a load
    test into a sink that takes nothing measures nothing. What was tried is accounted for in
    the state folder (checkpoint, dead letters, report) like any stopped stream's."""


@dataclasses.dataclass(frozen=True)
class StreamSettings:
    """How to stream (the command line's flags)."""

    sink: str
    state_dir: Path
    record_format: str = "taps"
    pacer: Pacer = dataclasses.field(default_factory=Unpaced)
    batch_size: int = 1000
    sink_options: SinkOptions = dataclasses.field(default_factory=SinkOptions)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    restamp: bool = False
    resume: bool = False
    unmasked: bool = False
    report_every_s: float = 1.0
    injection: Injection | None = None  # dirty data (traffic/dirty.py), taps only
    #: The session's first batches that may all finish with no record taken before the stream
    #: stops (``SinkTookNothing``); 0: never stop for that (``--give-up-after``).
    give_up_after: int = FIRST_BATCHES


@dataclasses.dataclass
class StreamReport:
    """What a stream did (also ``report.json`` in its state folder)."""

    stream_id: str
    sink: str
    pacing: str
    totals: dict[str, int]
    reconciled: bool
    wall_s: float
    per_second: list[dict]
    finished: bool  # False: stopped early (interrupted, or the sink failed)
    state_dir: Path
    resumed_from: int  # the first stream position this session sent
    already_finished: bool = False  # --resume of a stream that had finished: nothing sent
    stop_reason: str | None = None  # why a stream stopped early on its own (SinkTookNothing)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["state_dir"] = str(self.state_dir)
        return out


def stream_id_of(
    scenario, seed: int, record_format: str, injection=None, *, privacy_key=None, unmasked=False
) -> str:
    """The stream's id: the same scenario, seed, format, injected defects and identities
    (masked under which key, or not) always give the same id (and so the same idempotency
    keys); a checkpoint of another id is refused."""
    from sim.privacy import default_key

    key = privacy_key if privacy_key is not None else default_key()
    text = json.dumps(
        {
            "scenario": scenario.model_dump(mode="json"),
            "seed": seed,
            "format": record_format,
            "inject": None if injection is None else dataclasses.asdict(injection),
            "identities": "unmasked" if unmasked else f"masked:{key.fingerprint}",
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stream(
    scenario,
    settings: StreamSettings,
    *,
    privacy_key,
    seed: int | None = None,
    on_second: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
) -> StreamReport:
    """Run ``scenario`` and stream its records as ``settings`` say (module docstring).
    ``on_second`` gets each second's figures; setting ``stop`` ends the stream early (what was
    sent is accounted for and checkpointed). Raises StreamSetupError before anything is sent
    if the sink or the state folder is wrong."""
    from sim.api import build, iter_days

    if settings.record_format not in FORMATS:
        raise StreamSetupError(
            f"--format {settings.record_format!r}: expected one of {', '.join(FORMATS)}"
        )
    if settings.injection is not None and settings.record_format != "taps":
        raise StreamSetupError("--inject spoils tap records: use it with --format taps")
    from sim.privacy import PrivacyKeyError

    run_seed = scenario.seed if seed is None else int(seed)
    try:
        stream_id = stream_id_of(
            scenario, run_seed, settings.record_format, settings.injection,
            privacy_key=privacy_key, unmasked=settings.unmasked,
        )  # fmt: skip
    except (PrivacyKeyError, OSError) as exc:  # the machine's key cannot be read or made
        raise StreamSetupError(f"privacy key: {exc}") from None

    # The malformed records' positions, filled by the spoiler as it labels each day (before
    # the day's records go out), for the expected refusals (traffic/delivery.py).
    malformed = MalformedPositions() if settings.injection is not None else None

    def simulation(chunks: queue.Queue, stop: threading.Event) -> Callable[[], None]:
        worlds = build(scenario)
        worlds = worlds if isinstance(worlds, list) else [worlds]
        spoiler = None
        if settings.injection is not None:
            labels = Path(settings.state_dir) / LABELS_DIR
            spoiler = Spoiler(settings.injection, run_seed, labels, malformed=malformed)
        source = RecordSource(
            worlds,
            settings.record_format,
            stream_id,
            unmasked=settings.unmasked,
            privacy_key=privacy_key,
            chunks=chunks,
            stop=stop,
            spoiler=spoiler,
        )
        days = iter_days(
            scenario, None, world=worlds, seed=run_seed, subscribers=[source],
            privacy_key=privacy_key, freeze_gc=True,
        )  # fmt: skip
        return lambda: collections.deque(days, maxlen=0)  # the records go out as a subscriber

    return _run(
        stream_id, run_seed, settings, simulation, on_second, stop,
        writes_labels=settings.injection is not None, malformed=malformed,
    )  # fmt: skip


def replay(
    recording: Recording,
    settings: StreamSettings,
    *,
    on_second: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
) -> StreamReport:
    """Send a recorded stream again (traffic/recording.py): the same records, keys and order,
    paced, delivered and accounted for as ``stream`` does, with nothing simulated."""
    if settings.record_format != recording.record_format:
        raise StreamSetupError(
            f"--format {settings.record_format}: {recording.path} holds "
            f"{recording.record_format} records"
        )
    if settings.injection is not None:
        raise StreamSetupError(
            f"--inject: {recording.path} is replayed as recorded; record a dirty stream instead"
        )

    def play(chunks: queue.Queue, stop: threading.Event) -> Callable[[], None]:
        return lambda: recording.put_chunks(chunks, stop)

    jitter_seed = zlib.crc32(recording.stream_id.encode())
    # A replay writes no labels: those of the recording's stream (in its state folder) are
    # the replay's too, and are kept; they say which records are malformed (expected
    # refusals), when the replay is sent with that --state.
    return _run(recording.stream_id, jitter_seed, settings, play, on_second, stop)


#: What a stream keeps in its state folder (and the temporary names it writes them under).
STATE_NAMES = (CHECKPOINT_FILE, DEAD_LETTER_FILE, REPORT_FILE, LABELS_DIR)


def _check_state_folder(state_dir: Path) -> None:
    """Refuse a state folder holding anything a stream did not write: a new stream clears an
    earlier one's labels and replaces its checkpoint, dead letters and report, which must
    never take someone's own files with them."""
    if not state_dir.exists():
        return
    if not state_dir.is_dir():
        raise StreamSetupError(f"--state {state_dir}: not a folder")
    ours = {*STATE_NAMES, *(f"{name}.tmp" for name in STATE_NAMES)}
    strangers = [p.name for p in state_dir.iterdir() if p.name not in ours]
    labels = state_dir / LABELS_DIR
    if labels.is_dir():
        strangers += [
            f"{LABELS_DIR}/{p.name}"
            for p in labels.iterdir()
            if not (p.name.startswith("day=") and p.name.endswith(".parquet"))
        ]
    elif labels.exists():
        strangers.append(LABELS_DIR)
    if strangers:
        shown = ", ".join(sorted(strangers)[:5]) + (" ..." if len(strangers) > 5 else "")
        raise StreamSetupError(
            f"--state {state_dir}: holds files a stream did not write ({shown}); give an "
            "empty or new folder, or an earlier stream's state folder"
        )


#: Prepares what makes a stream's records (in the caller's thread, before the clock starts)
#: and returns what the producer thread runs: it puts the chunks on the queue, in order.
Producer = Callable[[queue.Queue, threading.Event], Callable[[], None]]


def _run(
    stream_id: str,
    seed: int,
    settings: StreamSettings,
    producer: Producer,
    on_second: Callable[[dict], None] | None,
    stop: threading.Event | None,
    *,
    writes_labels: bool = False,
    malformed: MalformedPositions | None = None,
) -> StreamReport:
    """Open the sink and the state folder, produce, pace, deliver, account, report (``seed``:
    of the retries' jitter; ``writes_labels``: a dirty live stream, whose producer writes
    labels, and ``malformed`` the positions it labels malformed; without it, a replay reads
    them from the labels of its stream in the state folder, if any). Everything about the
    state folder and the sink is checked before anything is changed, and nothing of an
    earlier stream's state is touched until the producer is ready (a world can take seconds
    to build, and a bad scenario fails there)."""
    try:  # here, before anything is touched (Delivery checks it too, but only once opened)
        give_up = give_up_after_checked(settings.give_up_after)
    except GiveUpAfterError as exc:
        raise StreamSetupError(str(exc)) from None
    state_dir = Path(settings.state_dir)
    _check_state_folder(state_dir)
    if not writes_labels:  # a replay: its stream's labels, if they are in the state folder
        try:
            malformed = MalformedPositions.from_labels(state_dir / LABELS_DIR, stream_id)
        except ValueError as exc:
            raise StreamSetupError(f"--state {state_dir}: {exc}") from None
    prior = _prior_checkpoint(state_dir, stream_id, settings.resume)
    dead_letters = DeadLetters(state_dir / DEAD_LETTER_FILE)
    kept_dead_letters = b""
    if prior is not None:
        try:
            kept_dead_letters = dead_letters.lines_through(prior)
        except ValueError as exc:
            raise StreamSetupError(f"--resume: {exc}") from None
    try:
        sink = open_sink(settings.sink, settings.sink_options)
    except SinkSetupError as exc:
        raise StreamSetupError(str(exc)) from None
    setup = _setup_of(settings, sink)
    if settings.resume and not sink.resumable:
        raise StreamSetupError(f"--resume: {sink.describe()} cannot be continued")
    if prior is not None:
        _check_same_setup(state_dir / CHECKPOINT_FILE, prior.setup, setup)
        if prior.finished:
            return _already_finished(stream_id, settings, sink, prior)
        try:
            sink.check_resume(prior.sink_state, stream_id)  # e.g. a file the stream did not write
        except SinkSetupError as exc:
            raise StreamSetupError(str(exc)) from None
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    chunks: queue.Queue = queue.Queue(maxsize=2)
    production = _Production(producer(chunks, stop), chunks, stop)
    try:
        sink.open(prior.sink_state if prior is not None else None)
    except SinkSetupError as exc:
        raise StreamSetupError(str(exc)) from None
    except OSError as exc:
        raise StreamSetupError(f"--sink {redacted(settings.sink)}: {exc}") from None
    dead_letters.replace(kept_dead_letters)
    labels = state_dir / LABELS_DIR
    # A new stream: an earlier one's labels would mislead. A live dirty stream writes its own
    # anew; a replay keeps its stream's (it never writes them: they are the recording stream's,
    # for the same records under the same keys).
    if (
        prior is None
        and labels.exists()
        and (writes_labels or labels_stream_id(labels) != stream_id)
    ):
        shutil.rmtree(labels)
    accounts = Accounts(stream_id, prior, setup)
    checkpoint_path = state_dir / CHECKPOINT_FILE
    accounts.checkpoint(sink.state()).save(checkpoint_path)
    delivery = Delivery(
        sink, accounts, dead_letters, checkpoint_path, settings.retry, seed,
        queue_batches=QUEUE_BATCHES, give_up_after=give_up, malformed=malformed,
    )  # fmt: skip
    settings.pacer.start(accounts.start_seq)
    pacer = _Pacer(settings, accounts, delivery, on_second)
    started = time.monotonic()
    finished = False
    interrupted: BaseException | None = None
    try:
        production.start()
        if pacer.run(production, stop):
            accounts.ended()  # the checkpoint says finished once every record is done
            finished = pacer.drain(stop)
    except BaseException as exc:  # noqa: BLE001 - Ctrl-C, SIGTERM: account, then re-raise
        interrupted = exc
    closing_error = _wind_down(stop, production, delivery, sink, abandon=not finished)
    finished = finished and closing_error is None
    pacer.final_tick()
    if writes_labels and labels.exists():
        # Only the records that went out keep their labels (traffic/dirty.py).
        cut_labels(labels, accounts.sent_through)
    totals = accounts.totals()
    reconciled = finished and totals["generated"] == totals["sent"] == _done(totals)
    took_nothing = isinstance(interrupted, SinkTookNothing)
    report = StreamReport(
        stream_id=stream_id,
        sink=sink.describe(),
        pacing=settings.pacer.describe(),
        totals=totals,
        reconciled=reconciled,
        wall_s=round(time.monotonic() - started, 3),
        per_second=pacer.series,
        finished=finished,
        state_dir=state_dir,
        resumed_from=accounts.start_seq,
        stop_reason=str(interrupted) if took_nothing else None,
    )
    (state_dir / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2), "utf-8")
    for error in (interrupted, closing_error, production.error):
        if error is not None:
            raise error
    return report


def _done(totals: dict[str, int]) -> int:
    """Records done: acknowledged, dead-lettered, or given up on with their delivery unknown
    (traffic/accounting.py): at the end, every record sent is one of them."""
    return totals["acknowledged"] + totals["dead_lettered"] + totals["delivery_unknown"]


def _wind_down(
    stop: threading.Event, production, delivery: Delivery, sink: Sink, *, abandon: bool
) -> BaseException | None:
    """Stop the producer, finish (or abandon) delivery, close the sink; the error that
    delivery or the sink raised on the way (the sink breaking in the final drain), returned
    so that the report is written before it is raised."""
    stop.set()
    production.join()
    error: BaseException | None = None
    try:
        delivery.close(abandon=abandon)
    except BaseException as exc:  # noqa: BLE001 - raised by the caller once reported
        error = exc
    try:
        sink.close()
    except BaseException as exc:  # noqa: BLE001 - likewise
        error = error or exc
    return error


def _setup_of(settings: StreamSettings, sink: Sink) -> dict:
    """What the checkpoint records of a session's settings, to refuse a resumed session that
    would continue the stream differently (``_check_same_setup``)."""
    return {
        "sink": redacted(settings.sink),
        "encoding": getattr(sink, "encoding", None),  # None: the sink has one of its own
        "pacing": settings.pacer.identity(),
        "restamp": settings.restamp,
    }


def _check_same_setup(path: Path, before: dict, now: dict) -> None:
    """Refuse a resumed session that would not continue the checkpoint's stream as it was:
    another sink (a file sink cuts its file back to the checkpoint's length: another file
    would lose its tail), another encoding (JSON and CSV mixed in one file), another profile
    (it decides which records are sent) or ``--restamp`` turned on or off. ``--rate``,
    ``--speed`` or none of them may change: they change when records go out, not which."""
    flags = {"sink": "--sink", "encoding": "--encoding", "restamp": "--restamp"}
    for field, flag in flags.items():
        if before.get(field) != now.get(field):
            raise StreamSetupError(
                f"--resume: {path} is of a stream sent with {flag} {_shown(before.get(field))}, "
                f"not {_shown(now.get(field))}; a resumed stream goes on as it began: give "
                f"{flag} {_shown(before.get(field))}, or start a new stream without --resume "
                "(with another --state)"
            )
    paced = (before.get("pacing") or {}, now.get("pacing") or {})
    if "profile" in (paced[0].get("kind"), paced[1].get("kind")) and paced[0] != paced[1]:
        raise StreamSetupError(
            f"--resume: {path} is of a stream paced by {_shown_pacing(paced[0])}, not "
            f"{_shown_pacing(paced[1])}; a profile decides which records are sent, so a "
            "resumed stream keeps it: give the same --profile, or start a new stream without "
            "--resume"
        )


def _shown(value) -> str:
    if value is None:
        return "(the sink's own)"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _shown_pacing(pacing: dict) -> str:
    kind = pacing.get("kind")
    if kind == "profile":
        stages = ", ".join(f"{d:g} s to {t:g}/s" for d, t in pacing.get("stages", []))
        return f"the --profile [{stages}]"
    if kind in ("rate", "speed"):
        return f"--{kind} {pacing[kind]:g}"
    return "no --rate, --speed or --profile"


def _already_finished(stream_id, settings: StreamSettings, sink: Sink, prior: Checkpoint):
    """``--resume`` of a stream that finished: nothing is sent and nothing in the state folder
    or the sink is touched; the report gives the stream's totals."""
    done = prior.done_through + 1
    return StreamReport(
        stream_id=stream_id,
        sink=sink.describe(),
        pacing=settings.pacer.describe(),
        totals={
            "generated": done,
            "sent": done,
            "acknowledged": prior.acknowledged,
            "dead_lettered": prior.dead_lettered,
            "delivery_unknown": prior.delivery_unknown,
            "expected_refusals": prior.expected_refusals,
            "retries": 0,
        },
        reconciled=True,
        wall_s=0.0,
        per_second=[],
        finished=True,
        state_dir=Path(settings.state_dir),
        resumed_from=done,
        already_finished=True,
    )


def _prior_checkpoint(state_dir: Path, stream_id: str, resume: bool) -> Checkpoint | None:
    path = state_dir / CHECKPOINT_FILE
    if not resume:
        return None
    if not path.exists():
        raise StreamSetupError(f"--resume: no checkpoint in {state_dir} (expected {path})")
    try:
        prior = Checkpoint.load(path)
    except ValueError as exc:
        raise StreamSetupError(f"--resume: {exc}") from None
    if prior.stream_id != stream_id:
        raise StreamSetupError(
            f"--resume: {path} belongs to stream {prior.stream_id}, not to this one "
            f"({stream_id}): the scenario, seed, format, --inject or identities (--unmasked, "
            "--key-file) differ; resume with the same ones or start a new stream without "
            "--resume"
        )
    return prior


class _Production(threading.Thread):
    """Runs what makes the records (a simulation, or a recording read back), which puts them
    on ``chunks`` a chunk at a time, then ends the chunks with None; an error is kept for the
    caller."""

    def __init__(self, produce: Callable[[], None], chunks: queue.Queue, stop: threading.Event):
        super().__init__(name="production", daemon=True)
        self._produce = produce
        self.chunks = chunks
        self.stop = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce()
        except StreamStopped:
            return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = exc
        while not self.stop.is_set():  # the end marker, unless nobody listens any more
            try:
                self.chunks.put(None, timeout=0.1)
                return
            except queue.Full:
                continue


class _Pacer:
    """Takes the days' chunks, sends their records when due, in batches; reports each second.

    The report goes on while the pacer waits — for records to come due, for room in the
    delivery queue (a slow sink), for the last batches at the end — and each row's rates are
    over the time it actually covers (``interval_s``); the last row covers the rest, however
    short."""

    def __init__(self, settings: StreamSettings, accounts: Accounts, delivery: Delivery, report):
        self.settings = settings
        self.pacer = settings.pacer
        self.accounts = accounts
        self.delivery = delivery
        self.report = report
        self.time_column = FORMATS[settings.record_format].time_column
        self.series: list[dict] = []
        self.t0: float | None = None
        self.wall0_s = 0  # local wall clock at t0, as epoch seconds (for --restamp)
        self.scheduled = 0  # records due so far
        self._done_scheduled = 0  # records of the chunks already sent (all of them due)
        self._next_report = 0.0
        self._last = {"time": 0.0, "sent": 0, "acknowledged": 0, "scheduled": 0}
        self._behind_s = 0.0
        self._sim_time: int | None = None

    def run(self, production: _Production, stop: threading.Event) -> bool:
        """Stream until the records (or the profile) end: True; or until ``stop``: False."""
        start_seq = self.accounts.start_seq
        while True:
            chunk = self._next_chunk(production, stop)
            if chunk is None:
                return not stop.is_set() and production.error is None
            chunk = _from(chunk, start_seq)
            if not len(chunk):
                continue
            # Due times by stream position: a resumed profile goes on where it stopped.
            seq = np.arange(chunk.first_seq, chunk.first_seq + len(chunk))
            due = self.pacer.due(seq, chunk.event_s)
            sendable = int(np.searchsorted(due, np.inf, side="left"))  # the profile's end
            self.accounts.generated_records(sendable)
            if not self._send_chunk(chunk, due[:sendable], stop):
                return False
            if sendable < len(chunk):
                return True  # the profile is over; the producer is stopped by the caller

    def drain(self, stop: threading.Event) -> bool:
        """Wait, reporting, until every record sent is done (acknowledged or dead-lettered):
        True; or until ``stop`` (False) or a sink worker fails (True: closing raises it)."""
        while True:
            totals = self.accounts.totals()
            # Every record generated: a batch still queued is not yet sent (traffic/delivery.py).
            if _done(totals) >= totals["generated"]:
                return True
            if self.delivery.error is not None:
                return True
            if stop.is_set():
                return False
            self._check_sink()
            self._tick()
            time.sleep(0.01)

    def _check_sink(self) -> None:
        """Raise SinkTookNothing when the session's first batches all finished with nothing
        acknowledged (traffic/delivery.py) and records are left to send: checked before a
        batch goes and while the last ones drain, so a stream whose every batch is already
        done ends as it is (its dead letters reported), not as stopped."""
        reason = self.delivery.took_nothing
        if reason is None:
            return
        # Read after the flag, so the batch that set it is counted; a chunk's records are
        # generated before its first batch goes, so some are left while it is being sent.
        totals = self.accounts.totals()
        if _done(totals) < totals["generated"]:
            raise SinkTookNothing(
                f"the sink ({self.delivery.sink.describe()}) took none of the records of the "
                f"stream's first {self.delivery.give_up_after} batches: {reason}"
            )

    def _next_chunk(self, production: _Production, stop: threading.Event) -> Chunk | None:
        while not stop.is_set():
            self._tick()
            try:
                return production.chunks.get(timeout=0.05)
            except queue.Empty:
                if not production.is_alive() and production.chunks.empty():
                    return None
        return None

    def _send_chunk(self, chunk: Chunk, due: np.ndarray, stop: threading.Event) -> bool:
        if self.t0 is None:
            self.t0 = time.monotonic()
            self.wall0_s = _local_epoch_s()
            self._last["time"] = self.t0
            self._next_report = self.t0 + self.settings.report_every_s
        i, n = 0, len(due)
        due_now = 0  # the chunk's records due by now
        batch_size = self.settings.batch_size
        while i < n:
            if stop.is_set():
                return False
            self._check_sink()
            now = time.monotonic() - self.t0
            if due_now < n:  # once all are due they stay so (``due`` is sorted, ``now`` grows)
                # (A search releases the GIL: on one core, a switch to another thread a batch.)
                due_now = int(np.searchsorted(due, now, side="right"))
            j = min(due_now, i + batch_size)
            self.scheduled = self._done_scheduled + due_now
            if j > i:
                if not self._wait_for_room(stop):
                    return False
                self._submit(chunk, i, j, due)
                i = j
            else:
                self._behind_s = 0.0
                time.sleep(min(max(due[i] - now, 0.0), 0.02))
            self._tick()
        self._done_scheduled += n
        return True

    def _wait_for_room(self, stop: threading.Event) -> bool:
        """Wait, reporting each second, until the delivery queue has room for a batch (the
        pacer is its only producer, so ``submit`` then does not block); False if ``stop`` is
        set meanwhile. A failed worker is left for ``submit`` to raise."""
        while self.delivery.queued >= QUEUE_BATCHES and self.delivery.error is None:
            if stop.is_set():
                return False
            self._check_sink()
            self._tick()
            self.delivery.wait_for_room(0.005)
        return True

    def _submit(self, chunk: Chunk, i: int, j: int, due: np.ndarray) -> None:
        table = chunk.table.slice(i, j - i)
        if self.settings.restamp:
            table = self._restamped(table, chunk.event_s[i:j], due[i:j])
        now = time.monotonic() - self.t0
        if not isinstance(self.pacer, Unpaced):  # unpaced, every record is due at once
            self._behind_s = max(0.0, now - float(due[i]))
        self._sim_time = int(chunk.event_s[j - 1])
        self.delivery.submit(Batch(chunk.first_seq + i, table))

    def _restamped(self, table: pa.Table, send_s: np.ndarray, due: np.ndarray) -> pa.Table:
        """``--restamp``: each record's time becomes the wall-clock second it is due, plus the
        record's own offset from the time it is sent by — a skewed clock's error, a late
        record's delay — so the defects a dirty stream carries stay in it; a record without
        a time keeps none."""
        column = table.schema.get_field_index(self.time_column)
        field = table.schema.field(column)
        own_s = epoch_seconds(table.column(column))
        missing = own_s == NO_TIME
        offset = np.where(missing, 0, own_s - send_s)
        stamps = self.wall0_s + np.floor(due).astype(np.int64) + offset
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[field.type.unit]
        values = pa.array(stamps * per_second, type=pa.int64(), mask=missing)
        return table.set_column(column, field, values.cast(field.type))

    def _tick(self, final: bool = False) -> None:
        """Every ``report_every_s`` (and, with ``final``, for whatever time is left): target
        and achieved rates over the time since the last row, queue, lag, and the running
        totals of retries, dead letters (of them the expected refusals) and records of
        unknown delivery (module docstring)."""
        if self.t0 is None:
            return
        now = time.monotonic()
        if not final and now < self._next_report:
            return
        every = self.settings.report_every_s
        self._next_report += every * max(1, int((now - self._next_report) / every) + 1)
        interval = now - self._last["time"]
        if interval <= 0:
            return
        totals = self.accounts.totals()
        elapsed = now - self.t0
        target = self.pacer.target_rate(elapsed)
        if target is None and not isinstance(self.pacer, Unpaced):
            target = (self.scheduled - self._last["scheduled"]) / interval
        row = {
            "t_s": round(elapsed, 2),
            "interval_s": round(interval, 3),
            "target_per_s": None if target is None else round(target, 1),
            "sent_per_s": round((totals["sent"] - self._last["sent"]) / interval, 1),
            "acknowledged_per_s": round(
                (totals["acknowledged"] - self._last["acknowledged"]) / interval, 1
            ),
            "sent": totals["sent"],
            "acknowledged": totals["acknowledged"],
            "dead_lettered": totals["dead_lettered"],
            # Of the dead-lettered: injected malformed records the sink refused one by one, as
            # it should (module docstring). A running total, as dead letters are: counts that
            # jump a batch at a time say more as totals than as a rate.
            "expected_refusals": totals["expected_refusals"],
            "delivery_unknown": totals["delivery_unknown"],
            "retries": totals["retries"],
            "queued_batches": self.delivery.queued,
            "behind_s": round(self._behind_s, 3),
            "sim_time": None
            if self._sim_time is None
            else dt.datetime(1970, 1, 1) + dt.timedelta(seconds=self._sim_time),
        }
        if row["sim_time"] is not None:
            row["sim_time"] = row["sim_time"].isoformat(sep=" ")
        self._last = {
            "time": now,
            "sent": totals["sent"],
            "acknowledged": totals["acknowledged"],
            "scheduled": self.scheduled,
        }
        self.series.append(row)
        if self.report is not None:
            self.report(row)

    def final_tick(self) -> None:
        """The last row: the time since the one before (the stream has ended)."""
        self._tick(final=True)


def _from(chunk: Chunk, start_seq: int) -> Chunk:
    """The part of ``chunk`` at or after ``start_seq`` (a resumed stream skips the rest)."""
    skip = min(max(0, start_seq - chunk.first_seq), len(chunk))
    if skip == 0:
        return chunk
    return Chunk(chunk.day, chunk.first_seq + skip, chunk.table.slice(skip), chunk.event_s[skip:])


def _local_epoch_s() -> int:
    """The local wall clock as epoch seconds of a naive local time (the records' convention)."""
    now = dt.datetime.now().replace(microsecond=0)
    return int((now - dt.datetime(1970, 1, 1)).total_seconds())


__all__ = [
    "StreamReport",
    "StreamSettings",
    "SinkTookNothing",
    "StreamSetupError",
    "replay",
    "stream",
    "stream_id_of",
]
