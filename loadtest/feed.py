"""CardTwin records for Locust: a simulated day's tap records as ready-made JSON batches, with
the simulated times that pace them (loadtest/locustfile.py).

``TapFeed.from_scenario`` runs the scenario once, before any user starts (the simulation is
CPU work and Locust's users are gevent greenlets: it must not run among them), and keeps every
record as JSON in one buffer (no Python object per record). ``next_batch`` hands out the next
``batch_size`` records in time order, with the wall-clock moment they are due at ``speed``.
``TapFeed.from_recording`` reads a recorded stream instead (traffic/recording.py: nothing
simulated).

In Locust's distributed mode every worker has the same feed (made once before ``--processes``
forks the workers; a separate ``--worker`` makes its own: the same scenario and seed give the
same records) and takes its own share of it (``partition``): the stream's batches
dealt out in turn, batch k to worker k mod N, so together the workers send every record once,
each batch at the time it is due.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class Batch:
    body: bytes  # a JSON array of records
    records: int
    due_s: float  # seconds after the feed started when the first record is due
    first_seq: int


class TapFeed:
    """Every tap record of a run, in time order, as JSON (module docstring)."""

    def __init__(
        self, stream_id: str, data: bytes, offsets: np.ndarray, event_s: np.ndarray, speed: float
    ):
        self.stream_id = stream_id  # the stream's id, as its records' idempotency keys have it
        self.data = data
        self.offsets = offsets  # record i is data[offsets[i]:offsets[i+1] - 1] (a ',' after)
        self.event_s = event_s
        self.speed = float(speed)
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed: expected a number > 0, got {speed!r}")
        self.part, self.parts = 0, 1  # this worker's share (``partition``)
        self._next = 0  # the next batch this worker sends, by its number in the stream

    def __len__(self) -> int:
        return len(self.event_s)

    def partition(self, part: int, parts: int) -> None:
        """Send only the share of worker ``part`` of ``parts``: batches part, part + parts,
        part + 2 parts... (module docstring). Before the first ``next_batch``."""
        if not 0 <= part < parts:
            raise ValueError(f"partition {part} of {parts}: expected 0 <= part < parts")
        self.part, self.parts = int(part), int(parts)
        self.rewind()

    def rewind(self) -> None:
        """Hand out this worker's share again from its first batch (a new test of the same
        Locust process: the feed is built once, its records sent by each test)."""
        self._next = self.part

    @classmethod
    def from_scenario(
        cls, scenario_path: str | Path, days: int = 1, speed: float = 3600.0, seed=None
    ) -> TapFeed:
        """Simulate ``days`` of the scenario and keep its tap records (masked, as a stream
        sends them)."""
        from sim.api import build, iter_days, load_scenario, privacy_key
        from traffic.records import RecordSource
        from traffic.stream import stream_id_of

        scenario = load_scenario(scenario_path, days=days, seed=seed)
        worlds = build(scenario)
        worlds = worlds if isinstance(worlds, list) else [worlds]
        chunks: queue.Queue = queue.Queue()
        stream_id = stream_id_of(scenario, scenario.seed, "taps")
        source = RecordSource(
            worlds,
            "taps",
            stream_id,
            unmasked=False,
            privacy_key=privacy_key(None),
            chunks=chunks,
            stop=threading.Event(),
        )
        for _ in iter_days(scenario, None, world=worlds, subscribers=[source]):
            pass
        return cls._of_chunks(stream_id, [chunks.get() for _ in range(chunks.qsize())], speed)

    @classmethod
    def from_recording(cls, path: str | Path, speed: float = 3600.0) -> TapFeed:
        """The tap records of a recorded stream (traffic/recording.py), nothing simulated;
        raises RecordingError if ``path`` is not one, or holds other records than taps."""
        from traffic.recording import Recording, RecordingError

        recording = Recording.open(path)
        if recording.record_format != "taps":
            raise RecordingError(
                f"{path}: holds {recording.record_format} records; Locust users send taps"
            )
        return cls._of_chunks(recording.stream_id, list(recording.chunks()), speed)

    @classmethod
    def _of_chunks(cls, stream_id: str, chunks: list, speed: float) -> TapFeed:
        """The feed of a stream's chunks, in order: one JSON buffer and its offsets."""
        from traffic.encoding import Encoder

        encoder = Encoder()
        parts = [encoder.json_objects(chunk.table, ",") for chunk in chunks]
        encoder.close()
        data = b"".join(p[0] for p in parts)
        offsets, at = [np.zeros(1, dtype=np.int64)], 0
        for chunk_data, chunk_offsets in parts:
            offsets.append(chunk_offsets[1:] + at)
            at += len(chunk_data)
        times = [chunk.event_s for chunk in chunks]
        event_s = np.concatenate(times) if times else np.zeros(0, dtype=np.int64)
        return cls(stream_id, data, np.concatenate(offsets), event_s, speed)

    def next_batch(self, batch_size: int) -> Batch | None:
        """The next batch of this worker's share (None when it is used up); ``batch_size``
        the same on every call, and on every worker. Greenlets share one feed: this never
        yields, so two users never take the same records."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a whole number > 0, got {batch_size}")
        start = self._next * batch_size
        if start >= len(self):
            return None
        end = min(start + batch_size, len(self))
        self._next += self.parts
        body = b"[" + self.data[self.offsets[start] : self.offsets[end] - 1] + b"]"
        due = (self.event_s[start] - self.event_s[0]) / self.speed
        return Batch(body, end - start, float(due), start)


__all__ = ["Batch", "TapFeed"]
