"""A server that stops answering once connected does not hang the stream. Every transaction of
the PostgreSQL sink has ``--timeout`` seconds: past it the query is cancelled, and a connection
whose server process cannot even hear the cancel (stopped with SIGSTOP) is cut; the batch is
tried again and, after its last attempt, reported as what can be told of it. The Redis sink's
socket operations have ``--timeout`` too. Against real servers on loopback (traffic/servers.py),
their processes stopped and let go again by the tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
import redis
from stream_helpers import ROOT, SMALL, check_first_batch_unknown, json_lines, stream_keys

from traffic.encoding import Encoder
from traffic.records import stream_schema
from traffic.servers import postgres_server, redis_server
from traffic.sinks import Batch, SinkOptions, TransientError, open_sink, postgres
from traffic.sinks.postgres import create_table_sql

CLI = [sys.executable, str(ROOT / "run_scenario.py"), "stream", str(SMALL), "--days", "2"]
ATTEMPTS = 3
TIMEOUT_S = 2
#: How the tests find the sink's server processes in pg_stat_activity.
APP = "cardtwin-sink-under-test"
#: Longest a stream of these tests may take: the small scenario's two days take a few seconds,
#: a batch given up on after its attempts about ATTEMPTS x 2 x TIMEOUT_S more. A stream that
#: hangs is killed at this bound and the test fails.
BOUND_S = 90


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The stream's idempotency keys in order, from a file sink."""
    return stream_keys(tmp_path_factory.mktemp("file"))


def _stream(sink: str, state: Path, *flags: str) -> subprocess.Popen:
    cmd = [
        *CLI, "--sink", sink, "--state", str(state), "--batch-size", "200",
        "--max-attempts", str(ATTEMPTS), "--timeout", str(TIMEOUT_S), "--quiet", *flags,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    """The stream's standard error once it ended by itself within BOUND_S (else: killed, and
    the test fails: it hung)."""
    try:
        _, stderr = proc.communicate(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"the stream hung (killed after {BOUND_S} s): {stderr[-2000:]}")
    assert "Traceback" not in stderr, stderr
    return stderr


def _wait_for(what: str, found, timeout_s: float = 60):
    """Poll ``found()`` until it returns something true; that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _stop(pid: int) -> None:
    """Stop process ``pid`` (SIGSTOP), and wait until the kernel has stopped it (the signal is
    taken when the process is next scheduled)."""
    os.kill(pid, signal.SIGSTOP)
    _wait_for(f"process {pid} to stop", lambda: _state_letter(pid) == "T", timeout_s=10)


@contextlib.contextmanager
def _let_go(pid: int):
    """Continue process ``pid`` (SIGCONT) when the block ends, whatever happens in it: a
    server left stopped would not stop when its test ends."""
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _state_letter(pid: int) -> str:
    """The kernel's state of process ``pid`` (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _pg_keys(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT idempotency_key FROM t").fetchall()
    return sorted((r[0] for r in rows), key=lambda k: int(k.rsplit(":", 1)[1]))


def _gone(url: str, pid: int) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is None


def test_a_server_process_stopped_inside_a_batch_does_not_hang_the_stream(tmp_path, expected):
    """The server process holding the first batch's open transaction (its rows in, not yet
    committed) is stopped. Its COPY never answers, nor does it hear the cancel: the sink cuts
    the connection; the retries, on new connections, wait on the stopped transaction's keys and
    are cancelled at their deadline; the look-back cannot end the stopped process, so the
    batch's records are of unknown delivery (for all the sink can tell, it might still
    commit). The other batches go through, and the stream ends, reconciled, exit 7. Let go, the
    process finds the end the sink asked for, and the batch never lands. (The stream used to
    wait forever.)

    A trigger holds the first batch's transaction (sleeping in it once, a sequence counting the
    batches), so the process is stopped at the same point every time."""
    state = tmp_path / "state"
    with postgres_server() as url:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(create_table_sql("t", stream_schema("taps")))
            admin.execute("CREATE SEQUENCE first_batch")
            admin.execute(
                "CREATE FUNCTION hold_first() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF nextval('first_batch') = 1 THEN PERFORM pg_sleep(600); END IF; "
                "RETURN NULL; END $$"
            )
            admin.execute(
                "CREATE TRIGGER hold_first AFTER INSERT ON t "
                "FOR EACH STATEMENT EXECUTE FUNCTION hold_first()"
            )
            proc = _stream(f"{url}?table=t&application_name={APP}", state, "--concurrency", "1")
            try:
                pid = _wait_for(
                    "the first batch's transaction",
                    lambda: admin.execute(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE application_name = %s AND wait_event = 'PgSleep'",
                        (APP,),
                    ).fetchone(),
                )[0]
                with _let_go(pid):
                    _stop(pid)
                    # Ends by itself within BOUND_S (else killed, and the test fails): the
                    # deadlines' share is a few x TIMEOUT_S (the first attempt 2 x, cut; the two
                    # retries and the look-back 1 x each), the rest the stream's own seconds,
                    # which a busy machine stretches; no tighter bound is the design's.
                    stderr = _finish(proc)
                    assert _state_letter(pid) == "T"  # still stopped when the stream ended
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            # Let go, the stopped process ends (the look-back asked it to) and rolls back.
            _wait_for("the stopped process to end", lambda: _gone(url, pid), timeout_s=30)
        keys = _pg_keys(url)
    assert proc.returncode == 7, stderr
    dead = check_first_batch_unknown(state, expected, stderr)
    said = f"gave up after {ATTEMPTS} attempts: NoAnswer: no answer from the server within "
    for letter in dead:
        assert f"{said}--timeout {TIMEOUT_S} s" in letter["reason"]
    report = json.loads((state / "report.json").read_text())
    assert report["finished"] and report["totals"]["retries"] == ATTEMPTS - 1
    assert keys == expected[200:]  # every batch acknowledged is there; the first never landed
    assert "error ignored" not in stderr  # no library warning on the user's screen


def test_a_server_process_stopped_between_batches_costs_one_retry(tmp_path, expected):
    """The sink's server process is stopped while idle between batches: the next batch's
    COPY gets no answer, the connection is cut at the deadline, and the batch goes through on
    a new one. Every record acknowledged, each in the table once: exit 0."""
    state = tmp_path / "state"
    with postgres_server() as url, psycopg.connect(url, autocommit=True) as admin:
        proc = _stream(
            f"{url}?table=t&application_name={APP}", state, "--concurrency", "1", "--rate", "400"
        )

        def stopped_idle() -> int | None:
            """The sink's process, stopped while idle (tried again when it was busy)."""
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP,)
            ).fetchone()
            if row is None or not _pg_table_has_rows(admin):
                return None
            pid = row[0]
            idle = False
            try:
                _stop(pid)
                # A stopped process's entry stays as it last set it.
                query = "SELECT state FROM pg_stat_activity WHERE pid = %s"
                idle = admin.execute(query, (pid,)).fetchone()[0] == "idle"
            finally:
                if not idle:
                    os.kill(pid, signal.SIGCONT)
            return pid if idle else None

        try:
            pid = _wait_for("the sink's process stopped while idle", stopped_idle)
            with _let_go(pid):
                stderr = _finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        keys = _pg_keys(url)
    assert proc.returncode == 0, stderr
    report = json.loads((state / "report.json").read_text())
    t = report["totals"]
    assert report["reconciled"] and t["acknowledged"] == len(expected)
    assert t["retries"] == 1  # the batch that met the stopped process, once
    assert keys == expected
    assert not (state / "dead_letters.jsonl").read_bytes()


def _pg_table_has_rows(admin: psycopg.Connection) -> bool:
    try:
        return admin.execute("SELECT EXISTS (SELECT 1 FROM t)").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        return False


def _one_row_batch(first: int) -> Batch:
    schema = stream_schema("taps")
    columns = {f.name: pa.nulls(1, f.type) for f in schema}
    columns["idempotency_key"] = pa.array([f"s:{first}"])
    return Batch(first, pa.table(columns, schema=schema))


def test_a_batch_waiting_on_a_lock_is_cancelled_at_the_deadline():
    """A lock held elsewhere that is never released: the batch's COPY is cancelled after
    ``--timeout`` (the server hears the cancel and rolls back), the sink says why, and the
    server is left with no query of the sink still waiting."""
    with postgres_server() as url:
        sink = open_sink(f"{url}?table=t&application_name={APP}", SinkOptions(timeout_s=1))
        sink.open(None)
        encoder = Encoder()
        try:
            with psycopg.connect(url) as holder:
                # Released by the server after 10 s (it ends the session), so that a sink
                # without deadlines fails this test instead of waiting forever.
                holder.execute("SET idle_in_transaction_session_timeout = '10s'")
                holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
                started = time.monotonic()
                with pytest.raises(TransientError) as failed:
                    sink.send(_one_row_batch(0), encoder)
                took = time.monotonic() - started
                with psycopg.connect(url) as look:
                    waiting = look.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = %s AND wait_event_type = 'Lock'",
                        (APP,),
                    ).fetchone()[0]
            sink.send(_one_row_batch(1), encoder)  # the lock gone: a new connection goes on
        finally:
            encoder.close()
            sink.close()
        keys = _pg_keys(url)
    # The deadline (1 s), and not the grace after it: the message says the cancel ended the
    # query, not the cut that follows the grace. The upper bound is only a few x the timeout
    # (a busy machine delays the watchdog's thread), not a measure of the grace.
    assert 1 <= took < 5
    assert str(failed.value) == (
        "NoAnswer: no answer from the server within --timeout 1 s: the query was cancelled"
    )
    assert waiting == 0
    assert keys == ["s:1"]


def _parent(pid: int) -> int:
    """The parent of process ``pid`` (a server process's: the postmaster)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_whole_server_stopped_is_cut_off_and_cannot_be_asked():
    """The postmaster stopped too: the cancel is not answered either, so the connection is cut
    once the grace after the deadline is over (not later: the grace counts from the cancel's
    start); the look-back cannot connect (``connect_timeout``), so whether the batch arrived is
    unknown. It did not: no COMMIT ever went up."""
    with postgres_server() as url:
        sink = open_sink(f"{url}?table=t&application_name={APP}", SinkOptions(timeout_s=1))
        sink.open(None)
        encoder = Encoder()
        try:
            sink.send(_one_row_batch(0), encoder)
            with psycopg.connect(url) as admin:
                (backend,) = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP,)
                ).fetchone()
            postmaster = _parent(backend)
            with _let_go(postmaster), _let_go(backend):
                _stop(postmaster)
                _stop(backend)
                started = time.monotonic()
                with pytest.raises(TransientError) as failed:
                    sink.send(_one_row_batch(1), encoder)
                took = time.monotonic() - started
                started = time.monotonic()
                through = sink.arrived_through(_one_row_batch(1))
                asked = time.monotonic() - started
        finally:
            encoder.close()
            sink.close()
        keys = _pg_keys(url)
    # The deadline (1 s) and the grace (1 s), then the cut; at most a few x that on a busy
    # machine. That the grace counts from the cancel's start (not after a cancel that took
    # all of it: 3 s here) is checked on the watchdog's own clock, below, not by wall clock.
    assert 2 <= took < 6
    assert str(failed.value).startswith(
        "NoAnswer: no answer from the server within --timeout 1 s, nor to its cancellation "
        "within 1 s more"
    )
    assert str(failed.value).endswith("the connection was cut")
    # Connecting is bounded by libpq's connect_timeout (2 s here): a few x that at most.
    assert through is None and asked < 6
    assert keys == ["s:0"]


class _Clock:
    """A clock for ``Deadlines``'s watchdog (its module's ``time``): it moves only when the
    code under test sleeps or a fake cancel takes time, so the waits are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Unanswered:
    """A connection whose cancel is never answered: ``cancel_safe`` takes all of its
    ``timeout`` (the postmaster stopped); ``pgconn.socket`` is a real socket, to be cut."""

    def __init__(self, clock: _Clock, sock: socket.socket) -> None:
        self.clock = clock
        self.pgconn = types.SimpleNamespace(socket=sock.fileno())

    def cancel_safe(self, timeout: float) -> None:
        self.clock.sleep(timeout)
        raise psycopg.OperationalError("the cancel timed out")


def test_the_grace_counts_from_the_cancels_start(monkeypatch):
    """A cancel that is never answered takes the whole grace: the cut follows at once, at
    the deadline + the grace, not a grace later (the design's bound on a stopped server,
    which the wall-clock test above cannot tell apart from a busy machine's delays)."""
    clock = _Clock()
    monkeypatch.setattr(postgres, "time", clock)
    deadlines = postgres.Deadlines(timeout_s=1, grace_s=1)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        entry = postgres._Watched(_Unanswered(clock, ours), deadline=clock.now)
        started = clock.now
        deadlines._interrupt(entry)
        assert entry.fired == "cut"
        assert clock.now - started == 1  # the grace, all taken by the cancel; nothing after
        theirs.settimeout(5)
        assert theirs.recv(1) == b""  # the connection was shut down


def test_a_stopped_redis_server_does_not_hang_the_stream(tmp_path, expected):
    """redis-server stopped mid-stream: each attempt at the batch under way times out after
    ``--timeout`` (redis-py's socket timeout), the progress key cannot be read afterwards, and
    the batch is given up on as of unknown delivery; let go, Redis takes the rest. The stream
    ends reconciled, exit 7; every record acknowledged is in the stream once."""
    state = tmp_path / "state"
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        pid = client.info("server")["process_id"]
        # Paced (about 3.5 s in all), so the stop comes while records are still to go.
        proc = _stream(url.replace("/0", "/0?key=k"), state, "--rate", "1000")
        dead = state / "dead_letters.jsonl"
        try:
            _wait_for("records in Redis", lambda: client.xlen("k") >= 400)
            with _let_go(pid):
                _stop(pid)
                _wait_for("a batch given up on", lambda: dead.exists() and dead.stat().st_size)
            stderr = _finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        kept = [f[b"key"].decode() for _, f in client.xrange("k")]
    assert proc.returncode == 7, stderr
    report = json.loads((state / "report.json").read_text())
    t = report["totals"]
    assert report["finished"] and report["reconciled"]
    letters = json_lines(dead)
    unknown = {d["idempotency_key"] for d in letters}
    # Paced, a batch holds the records due by then: the one under way, however many.
    assert t["dead_lettered"] == 0 and t["delivery_unknown"] == len(letters) > 0
    for letter in letters:
        assert letter["reason"].startswith(f"delivery unknown: gave up after {ATTEMPTS} attempts")
        assert "TimeoutError: Timeout" in letter["reason"]
    acknowledged = [k for k in expected if k not in unknown]
    assert len(kept) == len(set(kept))  # nothing twice
    assert set(acknowledged) <= set(kept) <= set(expected)  # the unknown batch: either way


def test_threads_of_the_deadlines_end_with_the_sink():
    """Closing the sink ends the thread that watches its deadlines (no thread left per sink)."""
    with postgres_server() as url:
        sink = open_sink(f"{url}?table=t", SinkOptions(timeout_s=1))
        sink.open(None)
        thread = sink.deadlines._thread
        assert thread is not None and thread.is_alive()
        sink.close()
    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("postgres-")]
