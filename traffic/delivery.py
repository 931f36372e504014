"""Getting batches to a sink: in-flight limits, retries with backoff and jitter, dead letters.

``Delivery`` runs the sink's ``concurrency`` worker threads on a bounded queue of batches:
``submit`` waits while the queue is full, so a slow sink holds the pacer back (and through it
the simulation) instead of anything being dropped. A transient failure is tried again after
an exponential backoff with full jitter (a random wait between 0 and base x 2^attempt, capped),
up to ``RetryPolicy.max_attempts``; then, or at once for a permanent failure, the batch's
records go to the dead-letter file with the reason. After the last attempt the sink is first
asked whether the batch arrived all the same (``Sink.arrived_through``: an answer lost after the
receiver took it): what arrived is acknowledged, and when the sink cannot tell, the records go
to the dead-letter file as of unknown delivery, not as lost. The jitter draws come from the
stream's seed (a named stream per worker), not from the clock.

A sink that takes nothing is not a load test: when the first ``give_up_after`` batches of a
session (``--give-up-after``, default ``FIRST_BATCHES``; 0: never) have finished and the sink
acknowledged none of their records (every one refused, failed or given up on: a wrong path, a
receiver that is down, credentials it refuses), ``took_nothing`` says why and the stream stops
(traffic/stream.py: ``SinkTookNothing``). Once the sink has taken a record, a later outage is
the system under test's, reported as dead letters, not a reason to stop.

**Expected refusals.** A dirty stream's injected malformed records (their labels say which:
traffic/dirty.py ``MalformedPositions``) should be refused by a careful system. A record the
sink refused *on its own* — named in the batch's ``Outcome.rejected`` while the rest of the
batch was taken — that is labelled malformed is dead-lettered as an expected refusal: counted
apart (traffic/accounting.py) and, like an acknowledged record, a sign the sink takes the
stream (so it never makes the stream give up). "The rest was taken" is checked: the sink
acknowledged at least one record of the batch, or there is no rest, every record of the batch
being a labelled malformed one (a careful sink fed malformed records only refuses them all).
Such a batch, malformed records only and all refused, does not count for the give-up check,
either way: a careful sink and one refusing everything answer it alike (with ``--batch-size
1``, a refuse-all sink would otherwise be kept by the first malformed record among its first
batches).
A sink that refused every record of a batch holding a clean one told nothing apart: it
refused them all alike (a receiver expecting another schema), as one refusing the batch whole
does, so its malformed records are plain dead letters and the batch counts as nothing taken
(the stream gives up on such a sink as it would without malformed records). A batch refused
whole (a ``PermanentError``: a 404, a 401, a 422 of the batch) never holds an expected
refusal, even when every record in it is malformed: the refusal is of the batch, not of the
record's defect, and a sink refusing every batch alike would otherwise pass a stream of
malformed records. Neither does a batch given up on after its last attempt, nor one of
unknown delivery.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import random
import threading
import time
from typing import TYPE_CHECKING

import pyarrow as pa

from traffic.accounting import Accounts, Checkpoint, DeadLetters
from traffic.encoding import Encoder
from traffic.sinks import Batch, PermanentError, Sink, TransientError

if TYPE_CHECKING:
    from traffic.dirty import MalformedPositions


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    max_attempts: int = 8
    base_s: float = 0.05
    cap_s: float = 5.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Wait before attempt ``attempt + 1`` (attempt counts from 1): full jitter."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


#: Batches of a session that may all finish without the sink acknowledging a record before the
#: stream stops, by default (``--give-up-after``; module docstring).
FIRST_BATCHES = 3


class GiveUpAfterError(ValueError):
    """A ``give_up_after`` (``--give-up-after``) that is not a whole number of batches >= 0."""


def give_up_after_checked(value: object, *, text: bool = False) -> int:
    """``value`` as ``--give-up-after`` takes it: a whole number of batches >= 0 (0: never
    give up); with ``text``, the command line's text of one. The one check of it — the
    command line, ``StreamSettings`` (traffic/stream.py) and ``Delivery`` call it — so each
    says the same: GiveUpAfterError naming the flag, the value and what is expected. A
    library caller's value must be an int already (not a bool, a float or a string)."""
    number = value
    if text and isinstance(value, str):
        with contextlib.suppress(ValueError):  # not a number: shown as given, quoted
            number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise GiveUpAfterError(
            f"--give-up-after {number!r}: expected a whole number of batches >= 0 "
            "(0: never give up)"
        )
    return number


class DeliveryFailed(RuntimeError):
    """The sink failed in a way that is not about a batch (a bug, a lost disk): the stream
    stops; the checkpoint still says exactly what was delivered."""


class Delivery:
    """Worker threads delivering batches (module docstring).

    Args:
        sink: an opened sink.
        accounts: the stream's counts (traffic/accounting.py).
        dead_letters: the dead-letter file.
        checkpoint_path: where the checkpoint is saved after batches finish.
        retry: the retry policy.
        seed: the stream's seed (for the jitter).
        queue_batches: batches waiting for a worker, at most.
        give_up_after: the session's first batches that may all finish with nothing taken
            before ``took_nothing`` is set (0: never; module docstring).
        malformed: the positions of a dirty stream's injected malformed records (None: a
            clean stream, or a replay without its labels), for expected refusals.
    """

    def __init__(
        self,
        sink: Sink,
        accounts: Accounts,
        dead_letters: DeadLetters,
        checkpoint_path,
        retry: RetryPolicy,
        seed: int,
        queue_batches: int = 8,
        give_up_after: int = FIRST_BATCHES,
        malformed: MalformedPositions | None = None,
    ) -> None:
        give_up_after = give_up_after_checked(give_up_after)  # before any thread starts
        self.sink = sink
        self.accounts = accounts
        self.dead_letters = dead_letters
        self.checkpoint_path = checkpoint_path
        self.retry = retry
        self.seed = seed
        self.give_up_after = give_up_after
        self.malformed = malformed
        self._queue: queue.Queue = queue.Queue(maxsize=queue_batches)
        # Set by a worker when the queue is down to half (``wait_for_room``).
        self._room = threading.Event()
        self._half = queue_batches // 2
        self._stop = threading.Event()
        self._save_lock = threading.Lock()
        self._last_save = 0.0
        self.error: BaseException | None = None
        # This session's batches finished and records taken: acknowledged, or refused as
        # expected (``took_nothing``).
        self._tally_lock = threading.Lock()
        self._batches_finished = 0
        self._records_taken = 0
        self._first_failure: str | None = None
        #: Why the stream should stop, once the first ``give_up_after`` batches finished and
        #: the sink took none of their records (module docstring); None otherwise.
        self.took_nothing: str | None = None
        self._threads = [
            threading.Thread(target=self._work, args=(k,), name=f"sink-{k}", daemon=True)
            for k in range(max(1, sink.concurrency))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queued(self) -> int:
        """Batches waiting for a worker."""
        return self._queue.qsize()

    def wait_for_room(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, while the queue is full: until the workers have
        taken half of it (woken then, not after the whole timeout: once nothing else runs, at
        the end of a stream, the workers would wait for the next batch meanwhile; and not at
        each batch taken, a thread switch each)."""
        self._room.clear()  # before looking: a worker setting it after that is not missed
        if self._queue.qsize() >= self._queue.maxsize:
            self._room.wait(timeout)

    def submit(self, batch: Batch) -> None:
        """Queue ``batch``; waits while the queue is full. Raises DeliveryFailed if a worker
        has failed."""
        while True:
            if self.error is not None:
                raise DeliveryFailed(str(self.error)) from self.error
            try:
                self._queue.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self, abandon: bool = False) -> None:
        """Wait for every queued batch (or, with ``abandon``, only the ones being sent), stop
        the workers, save the final checkpoint."""
        if abandon:
            self._stop.set()
            self._drop_queued()  # batches never started are not sent; the checkpoint says so
        markers = len(self._threads)  # a stop marker (None) for each worker
        while markers:
            try:
                self._queue.put(None, timeout=0.1)
                markers -= 1
            except queue.Full:
                # A worker that failed takes nothing more: if it was the only one (a file,
                # Redis or MQTT sink has one) the queue stays full and a plain put would wait
                # forever. Its batches would not be sent anyway (the others skip them once
                # one failed), so drop them, and post again any marker dropped with them.
                if self.error is not None:
                    markers += self._drop_queued()
        for thread in self._threads:
            thread.join()
        self._save(force=True)
        if self.error is not None and not abandon:
            raise DeliveryFailed(str(self.error)) from self.error

    def _drop_queued(self) -> int:
        """Empty the queue (its batches are never started, so never counted as done); the
        number of stop markers that were in it."""
        markers = 0
        while True:
            try:
                markers += self._queue.get_nowait() is None
            except queue.Empty:
                return markers

    # ----------------------------------------------------------------- the workers
    def _work(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:delivery-jitter:{index}")
        encoder = Encoder()
        try:
            while True:
                batch = self._queue.get()
                if self._queue.qsize() <= self._half:
                    self._room.set()
                if batch is None:
                    return
                if self._stop.is_set():
                    continue
                # Counted as sent when handed to the sink: a batch still queued when the
                # stream is stopped (or a worker failed) never went out.
                self.accounts.sent_batch(len(batch))
                self._deliver(batch, encoder, rng)
        except BaseException as exc:  # noqa: BLE001 - handed to the pacer, which stops
            if self.error is None:  # the first (others may follow it: "stopped while retrying")
                self.error = exc
            self._stop.set()
        finally:
            encoder.close()

    def _deliver(self, batch: Batch, encoder: Encoder, rng: random.Random) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                outcome = self.sink.send(batch, encoder)
            except TransientError as exc:
                if attempt >= self.retry.max_attempts:
                    self._give_up(batch, encoder, f"gave up after {attempt} attempts: {exc}")
                    return
                self.accounts.retried()
                if self._stop.wait(self.retry.backoff_s(attempt, rng)):
                    raise DeliveryFailed("stopped while retrying") from exc
                continue
            except PermanentError as exc:
                self._dead(batch, encoder, dict.fromkeys(_seqs(batch), str(exc)))
                return
            if outcome.rejected:
                # Refused one by one, the rest taken: a malformed one refused as it should be.
                self._dead(batch, encoder, outcome.rejected, each_judged=True)
            else:
                self.accounts.finished_batch(batch.first_seq, len(batch), 0)
                self._tally(len(batch), None)
            self._save()
            return

    def _give_up(self, batch: Batch, encoder: Encoder, reason: str) -> None:
        """The last attempt at ``batch`` failed: acknowledge what the sink says arrived all the
        same, dead-letter the rest, or all of it as of unknown delivery when the sink cannot
        tell (module docstring)."""
        through = self.sink.arrived_through(batch)
        if through is None:
            unknown = (
                f"delivery unknown: {reason}; whether the batch reached "
                f"{self.sink.describe()} could not be found out"
            )
            self._dead(batch, encoder, dict.fromkeys(_seqs(batch), unknown), unknown=True)
            return
        lost = range(max(through + 1, batch.first_seq), batch.last_seq + 1)
        self._dead(batch, encoder, dict.fromkeys(lost, reason))

    def _dead(
        self,
        batch: Batch,
        encoder: Encoder,
        reasons: dict[int, str],
        unknown: bool = False,
        each_judged: bool = False,
    ) -> None:
        """Dead-letter the records of ``reasons`` (as of unknown delivery, with ``unknown``)
        and acknowledge the rest of the batch. ``each_judged``: the sink refused these records
        one by one (not the batch), so those labelled malformed are expected refusals (module
        docstring)."""
        rows = sorted(seq - batch.first_seq for seq in reasons)
        expected = self._expected_refusals(batch, reasons) if each_judged else set()
        if rows:  # none when the whole batch arrived after all (``_give_up``)
            table = batch.table.take(pa.array(rows))
            data, offsets = encoder.json_objects(table, "\n")
            keys = table.column("idempotency_key").to_pylist()
            entries = [
                (
                    batch.first_seq + row,
                    keys[i],
                    reasons[batch.first_seq + row],
                    data[offsets[i] : offsets[i + 1] - 1],
                )
                for i, row in enumerate(rows)
            ]
            self.dead_letters.add(entries, expected)
        dead, unsure = (0, len(rows)) if unknown else (len(rows), 0)
        self.accounts.finished_batch(batch.first_seq, len(batch), dead, unsure, len(expected))
        first_reason = next((reasons[seq] for seq in sorted(reasons) if seq not in expected), None)
        # An expected refusal is the sink judging the record, as it should: taken, for the
        # give-up check (a stream of malformed records only must not stop as "took nothing").
        # There are none in a batch the sink refused all of, clean records included
        # (``_expected_refusals``): such a batch counts as nothing taken. A batch of malformed
        # records only, all refused, counts for neither (module docstring).
        all_expected = len(expected) == len(batch)
        self._tally(len(batch) - len(rows) + len(expected), first_reason, counts=not all_expected)
        self._save()

    def _expected_refusals(self, batch: Batch, reasons: dict[int, str]) -> set[int]:
        """The positions of ``reasons`` labelled malformed, refused one by one while the rest
        of the batch was taken: the sink acknowledged some record of it, or every record of it
        is labelled malformed. None when the sink refused every record of a batch holding a
        clean one: refusing them all alike, it judged no record's defect (module
        docstring)."""
        if self.malformed is None:
            return set()
        labelled = {int(seq) for seq in self.malformed.among(batch.first_seq, batch.last_seq)}
        took_some = len(reasons) < len(batch)
        if not took_some and len(labelled) < len(batch):
            return set()
        return {seq for seq in labelled if seq in reasons}

    def _tally(self, taken: int, reason: str | None, counts: bool = True) -> None:
        """Count a finished batch (``taken`` of its records acknowledged or refused as
        expected; ``reason``: why one was not) after it is accounted for, and set
        ``took_nothing`` when the session's first ``give_up_after`` batches finished with
        nothing taken (module docstring); never with ``give_up_after`` 0. ``counts`` False:
        a batch that tells nothing either way (malformed records only, all refused)."""
        if not counts:
            return
        with self._tally_lock:
            self._batches_finished += 1
            self._records_taken += taken
            if reason is not None and self._first_failure is None:
                self._first_failure = reason
            if (
                self.give_up_after > 0
                and self.took_nothing is None
                and self._records_taken == 0
                and self._batches_finished >= self.give_up_after
            ):
                self.took_nothing = self._first_failure or "no record acknowledged"

    def _save(self, force: bool = False) -> None:
        """Save the checkpoint with the sink's state, at most every 0.2 s (and at the end).
        Under one lock with the sink's state, so the two always agree."""
        now = time.monotonic()
        if not force and now - self._last_save < 0.2:
            return
        with self._save_lock:
            checkpoint: Checkpoint = self.accounts.checkpoint(self.sink.state())
            checkpoint.save(self.checkpoint_path)
            self._last_save = now


def _seqs(batch: Batch) -> range:
    return range(batch.first_seq, batch.first_seq + len(batch))


__all__ = [
    "FIRST_BATCHES",
    "Delivery",
    "DeliveryFailed",
    "GiveUpAfterError",
    "RetryPolicy",
    "give_up_after_checked",
]
