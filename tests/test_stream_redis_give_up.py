"""A Redis batch whose last attempt failed is not given up on blindly: its transaction may have
committed though its answer was lost. The sink reads its progress key once more (and fences off
an EXEC still on its way); what arrived is acknowledged, and when Redis cannot be asked the
records are reported as of unknown delivery, not as lost. Against a real redis-server on
loopback, behind a proxy that loses the answer (tests/stream_helpers.py)."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
import redis
from stream_helpers import (
    ROOT,
    SMALL,
    FlakyRedisProxy,
    check_first_batch_unknown,
    small_stream,
    stream_keys,
)

from traffic.encoding import Encoder
from traffic.servers import redis_server
from traffic.sinks import Batch, SinkOptions, TransientError, open_sink

CLI = [sys.executable, str(ROOT / "run_scenario.py"), "stream", str(SMALL), "--days", "2"]
ATTEMPTS = 3  # so the proxy turns away the two retries of the batch whose answer it lost


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The stream's idempotency keys in order, from a file sink."""
    return stream_keys(tmp_path_factory.mktemp("file"))


def test_a_batch_that_arrived_though_every_attempt_failed_is_acknowledged(tmp_path, expected):
    """The EXEC ran, its answer was lost, both retries were turned away: the progress key,
    read again before giving up, says the batch is there, so it is acknowledged (it used to
    be dead-lettered, though the receiver had it)."""
    with redis_server() as url:
        proxy = FlakyRedisProxy(int(urlsplit(url).port), refuse=ATTEMPTS - 1)
        try:
            report = small_stream(
                tmp_path, f"redis://127.0.0.1:{proxy.port}/0?key=k", timeout_s=2,
                max_attempts=ATTEMPTS,
            )  # fmt: skip
        finally:
            proxy.close()
        keys = [f[b"key"].decode() for _, f in redis.Redis.from_url(url).xrange("k")]
    assert proxy.dropped == 1 and proxy.executed and proxy.refused == ATTEMPTS - 1
    assert keys == expected
    assert not (tmp_path / "state" / "dead_letters.jsonl").read_bytes()
    t = report.totals
    assert report.reconciled
    assert (t["acknowledged"], t["dead_lettered"], t["delivery_unknown"]) == (len(expected), 0, 0)
    assert t["retries"] == ATTEMPTS - 1


def test_a_batch_redis_cannot_be_asked_about_is_of_unknown_delivery(tmp_path, expected):
    """Turned away once more when asked afterwards, the sink cannot tell whether the batch
    arrived: its records go to the dead-letter file as of unknown delivery and are counted and
    reported so, not as dead-lettered (they are in fact in the stream); a resume keeps them."""
    state = tmp_path / "state"
    with redis_server() as url:
        proxy = FlakyRedisProxy(int(urlsplit(url).port), refuse=ATTEMPTS)
        cmd = [
            *CLI, "--sink", f"redis://127.0.0.1:{proxy.port}/0?key=k", "--state", str(state),
            "--batch-size", "200", "--max-attempts", str(ATTEMPTS), "--timeout", "2", "--quiet",
        ]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            proxy.close()
        keys = [f[b"key"].decode() for _, f in redis.Redis.from_url(url).xrange("k")]
        again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    # Reconciled, but not known to be all delivered: exit 7, as for dead letters.
    assert done.returncode == 7, done.stderr
    assert proxy.dropped == 1 and proxy.executed and proxy.refused == ATTEMPTS
    assert keys == expected  # the batch arrived; nothing was written twice
    dead = check_first_batch_unknown(state, expected, done.stderr)
    for letter in dead:
        assert letter["reason"].startswith(f"delivery unknown: gave up after {ATTEMPTS} attempts")
        assert "could not be found out" in letter["reason"]
    assert "200 records given up on may or may not have reached the sink" in done.stderr
    assert "reconciled: generated = sent = acknowledged + dead-lettered + delivery unknown" in (
        done.stderr
    )
    assert f"NOT all delivered: 200 of {len(expected):,} records dead-lettered or of unknown" in (
        done.stderr
    )
    # The checkpoint keeps the count, and the dead-letter file agrees with it.
    assert again.returncode == 7, again.stderr
    assert "had already finished" in again.stderr and "200 of unknown delivery" in again.stderr


def test_a_batch_not_there_is_dead_lettered_and_its_late_exec_is_aborted(tmp_path):
    """The EXEC is held on its way (a slow network) while the sender gives up: the progress
    key says the batch is not there, and reading it fences the held EXEC off, which Redis
    then aborts: the batch dead-lettered is never in the stream as well."""
    with redis_server() as url:
        proxy = FlakyRedisProxy(int(urlsplit(url).port), refuse=0, hold=True)
        sink = open_sink(f"redis://127.0.0.1:{proxy.port}/0?key=k", SinkOptions(timeout_s=2))
        sink.open(None)
        table = pa.table({"idempotency_key": ["s:0", "s:1"], "amount_fen": [200, 150]})
        batch = Batch(0, table)
        encoder = Encoder()
        try:
            with pytest.raises(TransientError, match="ConnectionError"):
                sink.send(batch, encoder)
            assert sink.arrived_through(batch) == -1  # none of it
            late = proxy.release()
            client = redis.Redis.from_url(url)
            assert client.xlen("k") == 0
            assert client.get(sink.progress_key) == b"-1"
        finally:
            encoder.close()
            sink.close()
            proxy.close()
    # EXEC aborted (a nil answer, RESP2 or RESP3): the key moved under its WATCH.
    assert late.endswith((b"*-1\r\n", b"_\r\n"))


def test_a_partly_arrived_batch_is_acknowledged_up_to_the_progress_key(tmp_path):
    """A resumed stream may batch differently: the progress key can end inside a batch."""
    with redis_server() as url:
        sink = open_sink(f"{url}?key=k", SinkOptions())
        sink.open(None)
        try:
            redis.Redis.from_url(url).set(sink.progress_key, 104)
            table = pa.table({"idempotency_key": [f"s:{i}" for i in range(100, 110)]})
            assert sink.arrived_through(Batch(100, table)) == 104
            assert sink.arrived_through(Batch(105, table)) == 104  # none of this one
            assert sink.arrived_through(Batch(90, table)) == 99  # all of this one
        finally:
            sink.close()
