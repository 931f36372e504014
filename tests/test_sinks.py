"""Sinks and delivery without a server to start: URLs and options checked when a stream
starts (bad input, exit 2, never a traceback or a silent default), delivery's shutdown when its
worker dies, nested records as CSV. Sinks against real servers: tests/test_stream_servers.py."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from stream_helpers import json_lines, port_taking_no_connection, small_stream

from traffic.accounting import Accounts, Checkpoint, DeadLetters
from traffic.delivery import Delivery, DeliveryFailed, RetryPolicy
from traffic.servers import free_port
from traffic.sinks import Batch, SinkOptions, SinkSetupError, open_sink
from traffic.sinks.files import FileSink

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
CLI = [sys.executable, str(ROOT / "run_scenario.py"), "stream", str(SMALL)]


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


# ------------------------------------------------------------ sink URLs and options
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http:///taps", "no host; expected http://HOST[:PORT]/"),
        ("https://:8443/taps", "no host"),
        ("http://127.0.0.1:99999/taps", "port '99999' is not a port; expected a number from 1"),
        ("http://[::1/taps", "not a URL"),
        ("mqtt://127.0.0.1:abc/x", "port 'abc' is not a port"),
        ("mqtt://127.0.0.1:99999/x", "port '99999' is not a port"),
        ("mqtt://127.0.0.1:0/", "port 0; expected a number from 1 to 65535"),
        ("mqtt:///fleet", "no host"),
        ("mqtt://127.0.0.1/fleet?qso=1", "unknown option qso; expected per, qos"),
        ("mqtt://127.0.0.1/fleet?qos=2", "qos must be 0 or 1"),
        ("mqtt://127.0.0.1/fleet/+/x", "holds a wildcard"),
        ("mqtt://127.0.0.1/fleet/#", "holds a wildcard"),
        ("redis://127.0.0.1:abc/0", "port 'abc' is not a port"),
        ("redis:///0", "no host"),
        ("redis://127.0.0.1:6379/notadb", "database 'notadb'; expected a database number"),
        ("redis://127.0.0.1:6379/0?maxlen=-5", "maxlen='-5'; expected a whole number"),
        ("redis://127.0.0.1:6379/0?maxlen=0", "maxlen='0'"),
        ("redis://127.0.0.1:6379/0?maxlen=ten", "maxlen='ten'"),
        ("redis://127.0.0.1:6379/0?key=", "key is empty"),
        ("redis://127.0.0.1:6379/0?kye=x", "unknown option kye; expected key, maxlen"),
        ("redis://127.0.0.1:6379/0?key=a&key=b", "option key given twice"),
        ("postgresql://me@127.0.0.1/db?table=a&table=b", "expected one table name"),
    ],
)
def test_a_bad_sink_url_says_what_is_wrong(url, expected):
    """Each is refused when the stream starts (exit 2), not taken with a silent default, left
    to fail every batch, or escaping as a parser's ValueError (a traceback)."""
    with pytest.raises(SinkSetupError, match=re.escape(expected)) as caught:
        open_sink(url, SinkOptions())
    assert str(caught.value).startswith("--sink ")


def test_an_http_url_httpx_would_encode_is_taken():
    """The request is checked as httpx will send it: a space in the path is percent-encoded,
    not a reason to refuse the URL."""
    sink = open_sink("http://127.0.0.1:9/feed a?b=c d", SinkOptions(headers=(("X-A", "b c"),)))
    assert sink.describe().startswith("http://127.0.0.1:9/feed a")


def _http(headers=(), token_env=None) -> None:
    open_sink("http://127.0.0.1:9/taps", SinkOptions(headers=headers, token_env=token_env))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((("Bad Name", "x"),), "--header 'Bad Name': not a header name"),
        ((("X-Feed", "a\r\nX-Evil: 1"),), "--header X-Feed: its value holds a newline"),
        ((("X-Feed", "caf\u00e9"),), "--header X-Feed: its value holds"),
        ((("Content-Length", "5"),), "--header Content-Length: the sink sets that header"),
        ((("Idempotency-Key", "k"),), "--header Idempotency-Key: the sink sets that header"),
    ],
)
def test_a_header_http_cannot_carry_is_refused(headers, expected):
    with pytest.raises(SinkSetupError, match=re.escape(expected)):
        _http(headers)


@pytest.mark.parametrize("token", ["abc\ndef-secret", "abc def-secret", "abc\u00e9def-secret"])
def test_a_token_a_header_cannot_carry_is_refused_without_showing_it(monkeypatch, token):
    monkeypatch.setenv("CT_TEST_TOKEN", token)
    with pytest.raises(SinkSetupError, match="--token-env CT_TEST_TOKEN: the token in it") as c:
        _http(token_env="CT_TEST_TOKEN")
    assert "secret" not in str(c.value) and "abc" not in str(c.value)


def test_the_authorization_header_is_given_once(monkeypatch):
    monkeypatch.setenv("CT_TEST_TOKEN", "abc")
    with pytest.raises(SinkSetupError, match="give one of them"):
        _http((("Authorization", "Basic eDp5"),), "CT_TEST_TOKEN")


@pytest.mark.parametrize("sink", ["redis://127.0.0.1/0", "null", "file:///tmp/x.jsonl"])
def test_headers_for_a_sink_that_sends_none_are_refused(sink):
    with pytest.raises(SinkSetupError, match="--header: only an HTTP sink sends headers"):
        open_sink(sink, SinkOptions(headers=(("X-Feed", "1"),)))


def test_passwords_in_sink_urls_are_not_shown(tmp_path):
    """A URL's password stays out of messages and of what the report says the sink was."""
    with pytest.raises(SinkSetupError) as caught:
        open_sink("redis://me:hunter2@127.0.0.1:abc/0", SinkOptions())
    assert "hunter2" not in str(caught.value) and "me:***@" in str(caught.value)
    port = free_port()  # nothing listens: the connection is refused
    for url in (
        f"postgresql://me:hunter2@127.0.0.1:{port}/db",
        f"redis://me:hunter2@127.0.0.1:{port}/0",
        f"mqtt://me:hunter2@127.0.0.1:{port}/fleet",
    ):
        sink = open_sink(url, SinkOptions(timeout_s=2))
        assert "hunter2" not in sink.describe()
        with pytest.raises(SinkSetupError) as caught:
            sink.open(None)
        assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    http = open_sink(f"http://me:hunter2@127.0.0.1:{port}/taps", SinkOptions())
    assert "hunter2" not in http.describe()


def test_postgres_url_options_go_to_libpq():
    """``?sslmode=...`` and the like were dropped without a word; now libpq reads them (and
    refuses one it does not know)."""
    sink = open_sink("postgresql://me@127.0.0.1:1/db?table=t&sslmod=require", SinkOptions())
    assert sink.table == "t"
    with pytest.raises(SinkSetupError, match='invalid URI query parameter: "sslmod"'):
        sink.open(None)


@pytest.mark.parametrize(
    ("flags", "expected", "secret"),
    [
        (["--sink", "mqtt://127.0.0.1:abc/x"], "--sink 'mqtt://127.0.0.1:abc/x': port 'abc'", None),
        (["--sink", "http:///taps"], "--sink 'http:///taps': no host", None),
        (
            ["--sink", "http://127.0.0.1:9/taps", "--token-env", "CT_TEST_TOKEN"],
            "--token-env CT_TEST_TOKEN: the token in it holds a character",
            "tok\nen-secret",
        ),
    ],
)
def test_bad_sink_flags_exit_2_without_a_traceback(tmp_path, flags, expected, secret):
    env = {**os.environ, "CT_TEST_TOKEN": secret} if secret else None
    done = subprocess.run(
        [*CLI, "--days", "1", "--state", str(tmp_path / "state"), *flags],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert "secret" not in done.stderr
    assert not (tmp_path / "state" / "dead_letters.jsonl").exists()  # nothing was sent


# ------------------------------------------------------------ nested records as CSV
def _csv_rows(f) -> list[dict]:
    # A clearing file's detail is one field holding every cleared record: larger than the
    # csv module's default limit of 128 KiB.
    csv.field_size_limit(sys.maxsize)
    return list(csv.DictReader(f))


@pytest.mark.parametrize("record_format", ["uploads", "clearing"])
def test_nested_columns_are_json_text_in_csv(tmp_path, record_format):
    """An upload's records and a clearing file's summary and detail are lists of structs:
    in CSV each is one field of JSON text, the same JSON as the JSON encoding's field."""
    jsonl, csv_path = tmp_path / "r.jsonl", tmp_path / "r.csv"
    for path in (jsonl, csv_path):
        report = small_stream(tmp_path / path.suffix, f"file://{path}", record_format)
        assert report.reconciled, report.totals
    as_json = json_lines(jsonl)
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = _csv_rows(f)
    assert len(rows) == len(as_json) > 0
    nested = [n for n in ("records", "summary", "detail") if isinstance(as_json[0].get(n), list)]
    assert nested
    for row, record in zip(rows, as_json, strict=True):
        assert row["idempotency_key"] == record["idempotency_key"]
        for name in nested:
            assert json.loads(row[name]) == record[name]


def test_nested_records_go_to_stdout_as_csv(tmp_path):
    done = subprocess.run(
        [*CLI, "--days", "1", "--format", "clearing", "--sink", "-", "--encoding", "csv",
         "--quiet", "--state", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = _csv_rows(io.StringIO(done.stdout))
    assert rows and all(isinstance(json.loads(r["summary"]), list) for r in rows)


@pytest.mark.parametrize(("timeout_s", "waits_s"), [(0.5, 2), (2.5, 3)])
def test_postgres_connecting_waits_timeout_rounded_up_to_libpqs_whole_seconds(timeout_s, waits_s):
    """libpq's ``connect_timeout`` is whole seconds, at least 2: ``--timeout 2.5`` waited 2 s
    (rounded down), ``0.5`` asked for 1 (which libpq reads as 2). Now rounded up, at least 2."""
    with port_taking_no_connection() as port:
        sink = open_sink(f"postgresql://me@127.0.0.1:{port}/db", SinkOptions(timeout_s=timeout_s))
        t0 = time.monotonic()
        with pytest.raises(SinkSetupError, match="timeout"):
            sink.open(None)
        waited = time.monotonic() - t0
    assert waits_s - 0.2 <= waited < waits_s + 1.5
