"""``Delivery.wait_for_room`` (traffic/delivery.py): the pacer waiting on a full queue is woken
once the workers have taken half of it, not after its whole timeout, and not while the queue
stays full."""

from __future__ import annotations

import threading
import time

import pyarrow as pa

from traffic.accounting import Accounts, DeadLetters
from traffic.delivery import Delivery, RetryPolicy
from traffic.sinks import Batch, Outcome, Sink, SinkOptions


class _GatedSink(Sink):
    """Takes a batch only when the test lets it (``go``: one batch each)."""

    def __init__(self) -> None:
        super().__init__("gated", SinkOptions())
        self.go = threading.Semaphore(0)

    def send(self, batch, encoder):
        assert self.go.acquire(timeout=30)
        return Outcome()


def _batch(first: int, n: int) -> Batch:
    seq = pa.array(range(first, first + n), pa.int64())
    keys = pa.array([f"s:{k}" for k in range(first, first + n)])
    return Batch(first, pa.table({"stream_seq": seq, "idempotency_key": keys}))


def _until_queued(delivery: Delivery, n: int) -> None:
    """Wait (a loaded machine may be slow to run the worker) until ``n`` batches are queued."""
    deadline = time.monotonic() + 30
    while delivery.queued != n:
        assert time.monotonic() < deadline, f"{delivery.queued} batches queued, not {n}"
        time.sleep(0.01)


def _waited(delivery: Delivery, timeout: float) -> float:
    t0 = time.monotonic()
    delivery.wait_for_room(timeout)
    return time.monotonic() - t0


def test_woken_when_half_the_queue_is_taken(tmp_path):
    sink = _GatedSink()
    accounts = Accounts("s")
    delivery = Delivery(
        sink, accounts, DeadLetters(tmp_path / "dead.jsonl"), tmp_path / "checkpoint.json",
        RetryPolicy(), seed=1, queue_batches=4,
    )  # fmt: skip
    for k in range(5):  # one with the worker (waiting), four in the queue: full
        delivery.submit(_batch(10 * k, 10))
    _until_queued(delivery, 4)
    assert _waited(delivery, 0.2) >= 0.15  # full, nothing taken: the whole timeout
    sink.go.release()  # one taken: three queued, still more than half
    _until_queued(delivery, 3)

    def let_two_more_go() -> None:
        time.sleep(0.1)
        sink.go.release()
        sink.go.release()

    assert _waited(delivery, 10) < 1  # three queued (not full): no wait for the timeout
    delivery.submit(_batch(100, 10))
    assert delivery.queued == 4
    threading.Thread(target=let_two_more_go, daemon=True).start()
    # Full again: woken once two are taken (two queued), well before the timeout.
    assert _waited(delivery, 10) < 5
    assert delivery.queued <= 2
    for _ in range(10):
        sink.go.release()
    delivery.close()
    assert accounts.totals()["acknowledged"] == 60
