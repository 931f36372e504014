"""Every record of a stream accounted for: sent, then acknowledged or dead-lettered, once.

``Accounts`` counts what the stream generated and sent, and which records are done: the sink
acknowledged them, or they went to the dead-letter file with a reason, either as not delivered
(*dead-lettered*) or as given up on without the sink being able to tell whether they arrived
(*delivery unknown*: a transaction whose answer was lost, with the server out of reach when
asked afterwards; they are in the dead-letter file too, their reason beginning
``delivery unknown``). Batches finish in any
order when several are in flight; the *done-through* mark is the last position before which
every record is done. The checkpoint file keeps that mark (and what the sink needs to continue
exactly there, e.g. a file's length), written atomically: ``--resume`` starts after it, so a
record acknowledged after the mark but before a kill is sent again, under the same
idempotency key (at-least-once delivery; a receiver that keeps keys counts it once).

Of the dead-lettered records, the *expected refusals* are counted apart: injected malformed
records of a dirty stream (traffic/dirty.py) that the sink refused one by one, as a careful
system should (traffic/delivery.py decides which). They stay dead letters — generated = sent =
acknowledged + dead-lettered + delivery unknown is unchanged — but they are not a failure of the
stream (traffic/cli.py: the exit code).

The checkpoint also keeps what a resumed session must not change (``setup``: the sink, its
encoding, a profile, ``--restamp``; traffic/stream.py compares them), the highest position of
any finished batch (``sent_through``: the labels of a dirty stream end there) and whether the
stream ended with every record done (``finished``: resuming it sends nothing).

``DeadLetters`` is a JSON-lines file, one line per record given up on (dead-lettered or of
unknown delivery):
``{"stream_seq": 17, "idempotency_key": "...", "reason": "...", "record": {...}}``; the line of
an expected refusal also says ``"expected_refusal": true`` (before ``record``), so that the
file tells them from the failures and a resumed stream can count them again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Container
from pathlib import Path

#: The checkpoint's name in a stream's state folder.
CHECKPOINT_FILE = "checkpoint.json"
#: 2: the checkpoint keeps ``setup``, ``sent_through`` and ``finished`` (module docstring),
#: ``delivery_unknown`` and ``expected_refusals`` (absent from a checkpoint written before they
#: were counted: 0).
CHECKPOINT_VERSION = 2


@dataclasses.dataclass
class Checkpoint:
    """Where a stream got to: every record before ``done_through + 1`` is done; of them
    ``acknowledged`` were acknowledged, ``dead_lettered`` went to the dead-letter file as not
    delivered (``expected_refusals`` of them injected malformed records refused as they should
    be) and ``delivery_unknown`` went there as of unknown delivery (the other fields: module
    docstring)."""

    stream_id: str
    done_through: int = -1
    acknowledged: int = 0
    dead_lettered: int = 0
    sink_state: dict = dataclasses.field(default_factory=dict)
    sent_through: int = -1
    finished: bool = False
    setup: dict = dataclasses.field(default_factory=dict)
    delivery_unknown: int = 0
    expected_refusals: int = 0

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read a checkpoint file; ValueError says what is wrong with it."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable stream checkpoint ({exc})") from None
        if isinstance(raw, dict) and raw.get("version") == 1:
            # Written before the checkpoint recorded its sink: resuming it could cut back a
            # file it never wrote, so it is not resumed.
            raise ValueError(
                f"{path}: a checkpoint of version 1 (an earlier CardTwin), which does not say "
                "which sink it wrote to; start the stream again without --resume"
            )
        if not isinstance(raw, dict) or raw.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: expected a checkpoint of version {CHECKPOINT_VERSION}")
        try:
            checkpoint = cls(
                stream_id=str(raw["stream_id"]),
                done_through=int(raw["done_through"]),
                acknowledged=int(raw["acknowledged"]),
                dead_lettered=int(raw["dead_lettered"]),
                sink_state=dict(raw.get("sink_state") or {}),
                sent_through=int(raw["sent_through"]),
                finished=_boolean(raw["finished"]),
                setup=dict(raw["setup"]),
                delivery_unknown=int(raw.get("delivery_unknown", 0)),
                expected_refusals=int(raw.get("expected_refusals", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: checkpoint field missing or wrong: {exc}") from None
        counts = (checkpoint.acknowledged, checkpoint.dead_lettered, checkpoint.delivery_unknown)
        if min(counts) < 0 or sum(counts) != checkpoint.done_through + 1:
            raise ValueError(
                f"{path}: acknowledged ({checkpoint.acknowledged}) + dead_lettered "
                f"({checkpoint.dead_lettered}) + delivery_unknown "
                f"({checkpoint.delivery_unknown}) should be done_through + 1 "
                f"({checkpoint.done_through + 1}): the file was changed"
            )
        if not 0 <= checkpoint.expected_refusals <= checkpoint.dead_lettered:
            raise ValueError(
                f"{path}: expected_refusals ({checkpoint.expected_refusals}) should be from 0 "
                f"to dead_lettered ({checkpoint.dead_lettered}): the file was changed"
            )
        return checkpoint

    def save(self, path: Path) -> None:
        """Write atomically (a kill leaves the old file or the new one, never half of one)."""
        body = {"version": CHECKPOINT_VERSION, **dataclasses.asdict(self)}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(body, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def _boolean(value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


class Accounts:
    """The stream's counts and its done-through mark (module docstring). Thread-safe.

    Args:
        prior: the checkpoint resumed from (its records count as done), or None.
        setup: what the checkpoint records of the session's settings (module docstring).
    """

    def __init__(
        self, stream_id: str, prior: Checkpoint | None = None, setup: dict | None = None
    ) -> None:
        self._lock = threading.Lock()
        self.prior = prior or Checkpoint(stream_id)
        self.setup = dict(setup or {})
        self.start_seq = self.prior.done_through + 1
        # The highest position of a finished batch, over every session (records after the
        # mark but before it were delivered by an earlier session and keep their labels).
        self._sent_through = max(self.prior.sent_through, self.prior.done_through)
        self._ended = False
        self.generated = 0  # this session: records taken from the simulation to be sent
        self.sent = 0  # handed to the sink (retries not counted again)
        self.acknowledged = 0
        self.dead_lettered = 0
        self.delivery_unknown = 0
        self.expected_refusals = 0  # of the dead-lettered (module docstring)
        self.retries = 0
        self._done_through = self.prior.done_through
        # Batches done beyond the mark: first seq -> (records, acknowledged, dead-lettered,
        # delivery unknown, expected refusals).
        self._finished: dict[int, tuple[int, int, int, int, int]] = {}
        self._through_acked = self.prior.acknowledged
        self._through_dead = self.prior.dead_lettered
        self._through_unknown = self.prior.delivery_unknown
        self._through_expected = self.prior.expected_refusals

    def generated_records(self, n: int) -> None:
        with self._lock:
            self.generated += n

    def sent_batch(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def ended(self) -> None:
        """The records (or the profile) ran out: once every one is done, the stream is
        finished, and the checkpoint says so."""
        with self._lock:
            self._ended = True

    def finished_batch(
        self, first_seq: int, n: int, dead: int, unknown: int = 0, expected: int = 0
    ) -> None:
        """A batch is done: ``dead`` records dead-lettered (``expected`` of them expected
        refusals), ``unknown`` given up on with their delivery unknown, the rest
        acknowledged."""
        if not 0 <= expected <= dead:
            raise ValueError(f"expected refusals ({expected}) are some of the dead ({dead})")
        with self._lock:
            acked = n - dead - unknown
            self.acknowledged += acked
            self.dead_lettered += dead
            self.delivery_unknown += unknown
            self.expected_refusals += expected
            self._sent_through = max(self._sent_through, first_seq + n - 1)
            self._finished[first_seq] = (n, acked, dead, unknown, expected)
            while self._done_through + 1 in self._finished:
                size, acked, lost, unsure, refused = self._finished.pop(self._done_through + 1)
                self._done_through += size
                self._through_acked += acked
                self._through_dead += lost
                self._through_unknown += unsure
                self._through_expected += refused

    def checkpoint(self, sink_state: dict) -> Checkpoint:
        with self._lock:
            return Checkpoint(
                self.prior.stream_id,
                self._done_through,
                self._through_acked,
                self._through_dead,
                dict(sink_state),
                sent_through=self._sent_through,
                finished=self._ended and self._done_through + 1 == self.start_seq + self.generated,
                setup=self.setup,
                delivery_unknown=self._through_unknown,
                expected_refusals=self._through_expected,
            )

    @property
    def sent_through(self) -> int:
        """The highest stream position of a finished batch (earlier sessions included)."""
        with self._lock:
            return self._sent_through

    def totals(self) -> dict[str, int]:
        """The whole stream's counts, earlier sessions included (they ended at the mark).
        ``expected_refusals`` are some of ``dead_lettered`` (module docstring), not a term of
        the reconciliation."""
        with self._lock:
            before = self.start_seq
            return {
                "generated": before + self.generated,
                "sent": before + self.sent,
                "acknowledged": self.prior.acknowledged + self.acknowledged,
                "dead_lettered": self.prior.dead_lettered + self.dead_lettered,
                "delivery_unknown": self.prior.delivery_unknown + self.delivery_unknown,
                "expected_refusals": self.prior.expected_refusals + self.expected_refusals,
                "retries": self.retries,
            }


class DeadLetters:
    """The dead-letter file (module docstring). Thread-safe appends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def lines_through(self, checkpoint: Checkpoint) -> bytes:
        """On resume, before anything is sent: the file's lines of records up to the
        checkpoint's mark (the later ones will be sent again), checked against it. Raises
        ValueError naming the file and line when a line is not a dead letter, or when the lines
        kept are not the ``dead_lettered`` and ``delivery_unknown`` records the checkpoint
        counts.

        A last line without its newline is an append a kill cut short: its batch was not done
        (the checkpoint is saved after the append), so it is dropped with the other lines past
        the mark, and the count check below makes sure of it."""
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot be read ({exc})") from None
        lines = data.splitlines(keepends=True)
        kept = []
        expected = 0  # lines kept that are expected refusals
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                letter = json.loads(line)
                seq = letter["stream_seq"]
                if isinstance(seq, bool) or not isinstance(seq, int):
                    raise TypeError("stream_seq is not a whole number")
                refused = letter.get("expected_refusal", False)
                if not isinstance(refused, bool):
                    raise TypeError("expected_refusal is not true or false")
            except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError: a ValueError
                if number == len(lines) and not line.endswith(b"\n"):
                    continue  # cut short by a kill (docstring)
                raise ValueError(
                    f"{self.path}:{number}: not a dead letter "
                    f'({{"stream_seq": N, "idempotency_key": ..., "reason": ..., "record": ...}}): '
                    f"{exc}; the file was changed or damaged; mend or remove the line, or start "
                    "the stream again without --resume"
                ) from None
            if seq <= checkpoint.done_through:
                kept.append(line if line.endswith(b"\n") else line + b"\n")
                expected += refused
        counted = checkpoint.dead_lettered + checkpoint.delivery_unknown
        if len(kept) != counted:
            raise ValueError(
                f"{self.path}: holds {len(kept)} dead letters up to stream position "
                f"{checkpoint.done_through}, the checkpoint counts {counted}; "
                "the file was changed or damaged; start the stream again without --resume"
            )
        if expected != checkpoint.expected_refusals:
            raise ValueError(
                f"{self.path}: holds {expected} expected refusals up to stream position "
                f"{checkpoint.done_through}, the checkpoint counts {checkpoint.expected_refusals}; "
                "the file was changed or damaged; start the stream again without --resume"
            )
        return b"".join(kept)

    def replace(self, data: bytes) -> None:
        """Write the file anew (atomically) with ``data``."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def add(
        self, entries: list[tuple[int, str, str, bytes]], expected: Container[int] = frozenset()
    ) -> None:
        """Append (stream_seq, idempotency key, reason, the record as a JSON object); the
        positions of ``expected`` are marked expected refusals (module docstring)."""
        lines = [
            b'{"stream_seq":%d,"idempotency_key":%s,"reason":%s,%s"record":%s}\n'
            % (
                seq,
                json.dumps(key).encode(),
                json.dumps(reason, ensure_ascii=False).encode(),
                b'"expected_refusal":true,' if seq in expected else b"",
                rec,
            )
            for seq, key, reason, rec in entries
        ]
        with self._lock, self.path.open("ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())


__all__ = ["CHECKPOINT_FILE", "Accounts", "Checkpoint", "DeadLetters"]
