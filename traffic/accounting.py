"""Every record of a stream accounted for: sent, then acknowledged or dead-lettered, once.

``Accounts`` counts what the stream generated and sent, and which records are done (the sink
acknowledged them, or they went to the dead-letter file with a reason). Batches finish in any
order when several are in flight; the *done-through* mark is the last position before which
every record is done. The checkpoint file keeps that mark (and what the sink needs to continue
exactly there, e.g. a file's length), written atomically: ``--resume`` starts after it, so a
record acknowledged after the mark but before a kill is sent again, under the same
idempotency key (at-least-once delivery; a receiver that keeps keys counts it once).

``DeadLetters`` is a JSON-lines file, one line per record given up on:
``{"stream_seq": 17, "idempotency_key": "...", "reason": "...", "record": {...}}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

CHECKPOINT_VERSION = 1


@dataclasses.dataclass
class Checkpoint:
    """Where a stream got to: every record before ``done_through + 1`` is done; of them
    ``acknowledged`` were acknowledged and ``dead_lettered`` went to the dead-letter file."""

    stream_id: str
    done_through: int = -1
    acknowledged: int = 0
    dead_lettered: int = 0
    sink_state: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        """Read a checkpoint file; ValueError says what is wrong with it."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable stream checkpoint ({exc})") from None
        if not isinstance(raw, dict) or raw.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: expected a checkpoint of version {CHECKPOINT_VERSION}")
        try:
            return cls(
                stream_id=str(raw["stream_id"]),
                done_through=int(raw["done_through"]),
                acknowledged=int(raw["acknowledged"]),
                dead_lettered=int(raw["dead_lettered"]),
                sink_state=dict(raw.get("sink_state") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: checkpoint field missing or wrong: {exc}") from None

    def save(self, path: Path) -> None:
        """Write atomically (a kill leaves the old file or the new one, never half of one)."""
        body = {"version": CHECKPOINT_VERSION, **dataclasses.asdict(self)}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(body, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


class Accounts:
    """The stream's counts and its done-through mark (module docstring). Thread-safe.

    Args:
        prior: the checkpoint resumed from (its records count as done), or None.
    """

    def __init__(self, stream_id: str, prior: Checkpoint | None = None) -> None:
        self._lock = threading.Lock()
        self.prior = prior or Checkpoint(stream_id)
        self.start_seq = self.prior.done_through + 1
        self.generated = 0  # this session: records taken from the simulation to be sent
        self.sent = 0  # handed to the sink (retries not counted again)
        self.acknowledged = 0
        self.dead_lettered = 0
        self.retries = 0
        self._done_through = self.prior.done_through
        # Batches done beyond the mark: first seq -> (records, acknowledged, dead-lettered).
        self._finished: dict[int, tuple[int, int, int]] = {}
        self._through_acked = self.prior.acknowledged
        self._through_dead = self.prior.dead_lettered

    def generated_records(self, n: int) -> None:
        with self._lock:
            self.generated += n

    def sent_batch(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def finished_batch(self, first_seq: int, n: int, dead: int) -> None:
        """A batch is done: ``n - dead`` records acknowledged, ``dead`` dead-lettered."""
        with self._lock:
            self.acknowledged += n - dead
            self.dead_lettered += dead
            self._finished[first_seq] = (n, n - dead, dead)
            while self._done_through + 1 in self._finished:
                size, acked, lost = self._finished.pop(self._done_through + 1)
                self._done_through += size
                self._through_acked += acked
                self._through_dead += lost

    def checkpoint(self, sink_state: dict) -> Checkpoint:
        with self._lock:
            return Checkpoint(
                self.prior.stream_id,
                self._done_through,
                self._through_acked,
                self._through_dead,
                dict(sink_state),
            )

    def totals(self) -> dict[str, int]:
        """The whole stream's counts, earlier sessions included (they ended at the mark)."""
        with self._lock:
            before = self.start_seq
            return {
                "generated": before + self.generated,
                "sent": before + self.sent,
                "acknowledged": self.prior.acknowledged + self.acknowledged,
                "dead_lettered": self.prior.dead_lettered + self.dead_lettered,
                "retries": self.retries,
            }


class DeadLetters:
    """The dead-letter file (module docstring). Thread-safe appends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def keep_through(self, seq: int) -> None:
        """On resume: drop lines of records after ``seq`` (they will be sent again)."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_bytes().splitlines(keepends=True)
            if line.strip() and json.loads(line)["stream_seq"] <= seq
        ]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, self.path)

    def add(self, entries: list[tuple[int, str, str, bytes]]) -> None:
        """Append (stream_seq, idempotency key, reason, the record as a JSON object)."""
        lines = [
            b'{"stream_seq":%d,"idempotency_key":%s,"reason":%s,"record":%s}\n'
            % (seq, json.dumps(key).encode(), json.dumps(reason, ensure_ascii=False).encode(), rec)
            for seq, key, reason, rec in entries
        ]
        with self._lock, self.path.open("ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())


__all__ = ["Accounts", "Checkpoint", "DeadLetters"]
