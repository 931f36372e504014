"""Sinks and delivery without a server to start: URLs and options checked when a stream
starts (bad input, exit 2, never a traceback or a silent default), delivery's shutdown when its
worker dies, nested records as CSV. Sinks against real servers: tests/test_stream_servers.py."""

from __future__ import annotations

import threading
import time

import pyarrow as pa

from traffic.accounting import Accounts, Checkpoint, DeadLetters
from traffic.delivery import Delivery, DeliveryFailed, RetryPolicy
from traffic.sinks import Batch, SinkOptions
from traffic.sinks.files import FileSink


def _batch(first_seq: int, n: int) -> Batch:
    seqs = list(range(first_seq, first_seq + n))
    return Batch(
        first_seq,
        pa.table(
            {"amount_fen": seqs, "stream_seq": seqs, "idempotency_key": [f"s:{k}" for k in seqs]}
        ),
    )


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class _GatedFileSink(FileSink):
    """A real file sink whose writes wait for the test's go (so the queue can fill first)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, SinkOptions(encoding="json"))
        self.go = threading.Event()

    def send(self, batch, encoder):
        self.go.wait(30)
        return super().send(batch, encoder)


def test_close_returns_when_the_only_worker_died_with_a_full_queue(tmp_path):
    """A file sink has one worker; when its disk fails (/dev/full: no space left) while the
    queue is full, close must not wait forever for a worker to take its stop marker."""
    sink = _GatedFileSink("file:///dev/full")
    sink.open(None)
    checkpoint = tmp_path / "checkpoint.json"
    delivery = Delivery(
        sink, Accounts("s"), DeadLetters(tmp_path / "dead.jsonl"), checkpoint,
        RetryPolicy(), seed=1, queue_batches=2,
    )  # fmt: skip
    for k in range(3):  # one with the worker (waiting), two in the queue
        delivery.submit(_batch(10 * k, 10))
    _wait_for(lambda: delivery.queued == 2)
    sink.go.set()
    _wait_for(lambda: delivery.error is not None)
    outcome: list[BaseException | None] = []

    def close() -> None:
        try:
            delivery.close()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "Delivery.close() hung"
    sink.close()
    assert isinstance(outcome[0], DeliveryFailed) and "No space left" in str(outcome[0])
    assert Checkpoint.load(checkpoint).done_through == -1  # nothing counted as delivered
