"""A PostgreSQL batch whose last attempt failed is not given up on blindly: its transaction may
have committed though the answer was lost. The sink ends the server processes its attempts went
to (so none can still commit), then looks the batch's keys up: there, the batch is acknowledged;
not there, it is dead-lettered and never lands later; the server out of reach (or the sink not
allowed to end a process), its records are of unknown delivery. Against a real PostgreSQL on
loopback, behind a proxy that drops the sender's connection at the COMMIT."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import psycopg
import pyarrow as pa
import pytest
from stream_helpers import (
    ROOT,
    SMALL,
    DroppingProxy,
    check_first_batch_unknown,
    stream_keys,
)

from traffic.encoding import Encoder
from traffic.servers import postgres_server
from traffic.sinks import Batch, SinkOptions, TransientError, open_sink

CLI = [sys.executable, str(ROOT / "run_scenario.py"), "stream", str(SMALL), "--days", "2"]
ATTEMPTS = 3  # so the proxy turns away the two retries of the batch whose answer it lost
#: One TCP connection a connect (libpq would try again without SSL after a refused one).
DIRECT = "sslmode=disable&gssencmode=disable"
COPY_DONE = b"c\x00\x00\x00\x04"  # the client's CopyDone message
COMMIT = b"COMMIT\x00"  # in the client's COMMIT query
COMMITTED = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for it


class FlakyPostgresProxy(DroppingProxy):
    """A TCP proxy in front of a real PostgreSQL that, once, drops the sender's connection at
    the COMMIT of a batch (the first COMMIT after a COPY), then turns away the next ``refuse``
    connections (accepted and closed at once, as by a server restarting).

    The COMMIT goes up and the proxy waits for the server to say it committed, then drops the
    sender without that answer (the batch is in the table but the sender cannot know); or, with
    ``hold``, the COMMIT is held back until ``commit_held()`` or ``release()`` (a COMMIT still
    on its way). Either way the connection to the server stays open: its server process lives
    on (idle, or in the batch's transaction) until something ends it."""

    #: Bytes of a read kept for the next: a message split between two reads is still found.
    TAIL = 16

    def __init__(self, upstream_port: int, refuse: int, *, hold: bool = False) -> None:
        self.committed = False  # the server said COMMIT to the COMMIT whose answer was lost
        self._upstream: socket.socket | None = None  # the dropped sender's, kept open
        self._held = b""
        self._answer = b""  # what the server sent on that connection after the drop
        self._committed = threading.Event()  # COMMITTED is in it
        self._closed = threading.Event()  # the server closed that connection
        super().__init__(upstream_port, refuse, hold=hold)

    def _serve(self, client: socket.socket) -> None:
        upstream = self._upstream_connection()
        muted = threading.Event()

        def answers() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    if not muted.is_set():
                        client.sendall(data)
                    else:
                        self._answer += data
                        if COMMITTED in self._answer:
                            self._committed.set()
            if muted.is_set():
                self._closed.set()

        self._thread(answers)
        copied, drop, tail = False, False, b""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                window = tail + data
                if not copied and COPY_DONE in window:
                    copied = True
                    # Only a COMMIT after the COPY counts (the connection's first query,
                    # which notes its server process, is committed too).
                    window = window[window.index(COPY_DONE) + len(COPY_DONE) :]
                tail = window[-self.TAIL :]
                with self._lock:
                    drop = self.dropped == 0 and copied and COMMIT in window
                if drop:
                    muted.set()  # before the COMMIT goes up: its answer is never forwarded
                    # Kept before the sender is dropped: the test goes on with it at once.
                    self._upstream = upstream
                    if self.hold:
                        self._held = data
                    else:
                        upstream.sendall(data)
                        self.committed = self._committed.wait(10)
                    with self._lock:
                        self.dropped = 1
                    break
                upstream.sendall(data)
        self.hang_up(client)
        if not drop:
            self.hang_up(upstream)

    def commit_held(self) -> None:
        """Send the held COMMIT up at last, and wait until the server says it committed."""
        self._upstream.sendall(self._held)
        assert self._committed.wait(10), f"no COMMIT answered: {self._answer!r}"

    def release(self) -> bytes:
        """Send the held COMMIT up at last; what the server answers on that connection until
        it closes it (after the sink ended its process: the termination notice, no COMMIT)."""
        with contextlib.suppress(OSError):  # the server may have closed it already
            self._upstream.sendall(self._held)
        assert self._closed.wait(10), f"the server kept the connection open: {self._answer!r}"
        return self._answer

    def ended(self, timeout_s: float = 10) -> bool:
        """Whether the server closed the dropped sender's connection (its process ended)."""
        return self._closed.wait(timeout_s)


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The stream's idempotency keys in order, from a file sink."""
    return stream_keys(tmp_path_factory.mktemp("file"))


def _keys(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT idempotency_key FROM {table}").fetchall()
    return sorted((r[0] for r in rows), key=lambda k: int(k.rsplit(":", 1)[1]))


def _stream_through(proxy, state, *extra) -> subprocess.CompletedProcess:
    sink = f"postgresql://cardtwin@127.0.0.1:{proxy.port}/postgres?table=t&{DIRECT}"
    cmd = [
        *CLI, "--sink", sink, "--state", str(state), "--batch-size", "200", "--concurrency", "1",
        "--max-attempts", str(ATTEMPTS), "--timeout", "2", "--quiet", *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True)


def test_a_batch_committed_though_its_answer_was_lost_is_acknowledged(tmp_path, expected):
    """The COMMIT went through, its answer was lost, both retries were turned away: the sink
    ends the process the COMMIT went to, finds the batch's keys in the table, and acknowledges
    it (it used to be dead-lettered, though the table had it). End to end, through the stream
    command: it reconciles with every record acknowledged and each in the table once."""
    state = tmp_path / "state"
    with postgres_server() as url:
        proxy = FlakyPostgresProxy(int(urlsplit(url).port), refuse=ATTEMPTS - 1)
        try:
            done = _stream_through(proxy, state)
            ended = proxy.ended()
        finally:
            proxy.close()
        keys = _keys(url, "t")
    assert done.returncode == 0, done.stderr  # every record acknowledged
    assert proxy.dropped == 1 and proxy.committed and proxy.refused == ATTEMPTS - 1
    assert ended  # the process whose answer was lost was ended, not left to linger
    assert keys == expected
    assert not (state / "dead_letters.jsonl").read_bytes()
    report = json.loads((state / "report.json").read_text())
    t = report["totals"]
    assert report["reconciled"]
    assert (t["acknowledged"], t["dead_lettered"], t["delivery_unknown"]) == (len(expected), 0, 0)
    assert t["retries"] == ATTEMPTS - 1


def test_a_batch_the_server_cannot_be_asked_about_is_of_unknown_delivery(tmp_path, expected):
    """Turned away once more when asked afterwards, the sink cannot tell whether the batch
    arrived (it did): its records go to the dead-letter file as of unknown delivery, counted
    so, and the stream still reconciles."""
    state = tmp_path / "state"
    with postgres_server() as url:
        proxy = FlakyPostgresProxy(int(urlsplit(url).port), refuse=ATTEMPTS)
        try:
            done = _stream_through(proxy, state)
        finally:
            proxy.close()
        keys = _keys(url, "t")
    assert done.returncode == 7, done.stderr  # reconciled, but not known to be all delivered
    assert proxy.dropped == 1 and proxy.committed and proxy.refused == ATTEMPTS
    assert keys == expected  # the batch arrived; nothing was written twice
    check_first_batch_unknown(state, expected, done.stderr)


def _batch(first: int, n: int) -> Batch:
    keys = [f"s:{i}" for i in range(first, first + n)]
    return Batch(
        first, pa.table({"idempotency_key": keys, "stream_seq": list(range(first, first + n))})
    )


@contextlib.contextmanager
def _sink_through(proxy, user="cardtwin"):
    sink = open_sink(
        f"postgresql://{user}@127.0.0.1:{proxy.port}/postgres?table=t&{DIRECT}",
        SinkOptions(timeout_s=2, concurrency=1),
    )
    sink.open(None)
    encoder = Encoder()
    try:
        yield sink, encoder
    finally:
        encoder.close()
        sink.close()
        proxy.close()


def _send_lost(sink, encoder, batch) -> None:
    with pytest.raises(TransientError, match="OperationalError"):
        sink.send(batch, encoder)


def _full(batch: Batch) -> Batch:
    """``batch`` with every column of the taps table (empty but the key and position)."""
    from traffic.records import stream_schema

    schema = stream_schema("taps")
    n = len(batch)
    columns = {
        f.name: batch.table.column(f.name) if f.name in batch.table.column_names
        else pa.nulls(n, f.type)
        for f in schema
    }  # fmt: skip
    return Batch(batch.first_seq, pa.table(columns, schema=schema))


def test_a_batch_not_there_is_dead_lettered_and_its_late_commit_never_lands():
    """The COMMIT is held on its way (a slow network) while the sender gives up: the sink ends
    the process the batch's transaction is open in, finds no key of it, and says none of it
    arrived; the COMMIT sent up afterwards finds the process gone, and the batch dead-lettered
    is never in the table as well."""
    with postgres_server() as url:
        proxy = FlakyPostgresProxy(int(urlsplit(url).port), refuse=0, hold=True)
        with _sink_through(proxy) as (sink, encoder):
            batch = _full(_batch(0, 5))
            _send_lost(sink, encoder, batch)
            assert sink.arrived_through(batch) == -1  # none of it
            late = proxy.release()
        assert _keys(url, "t") == []
    assert b"57P01" in late and COMMITTED not in late  # terminated by the administrator


def test_a_late_commit_that_lands_before_the_look_back_is_acknowledged():
    """The held COMMIT reaches the server before the sink looks back: the batch is there, and
    it is acknowledged."""
    with postgres_server() as url:
        proxy = FlakyPostgresProxy(int(urlsplit(url).port), refuse=0, hold=True)
        with _sink_through(proxy) as (sink, encoder):
            batch = _full(_batch(10, 5))
            _send_lost(sink, encoder, batch)
            proxy.commit_held()
            assert sink.arrived_through(batch) == 14  # all of it
        assert _keys(url, "t") == [f"s:{i}" for i in range(10, 15)]


def test_a_process_the_sink_may_not_end_leaves_delivery_unknown():
    """A server where the sink's role may not end sessions (EXECUTE on pg_terminate_backend
    revoked): the process the batch's transaction is open in cannot be ended, so whether the
    batch will land cannot be told, and the sink says so rather than guess (the COMMIT, sent up
    afterwards, does land)."""
    with postgres_server() as url:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("CREATE ROLE feeder LOGIN")
            admin.execute("GRANT CREATE, USAGE ON SCHEMA public TO feeder")
            admin.execute("REVOKE EXECUTE ON FUNCTION pg_terminate_backend FROM PUBLIC")
        proxy = FlakyPostgresProxy(int(urlsplit(url).port), refuse=0, hold=True)
        with _sink_through(proxy, user="feeder") as (sink, encoder):
            batch = _full(_batch(0, 5))
            _send_lost(sink, encoder, batch)
            assert sink.arrived_through(batch) is None
            proxy.commit_held()
        assert _keys(url, "t") == [f"s:{i}" for i in range(5)]


def test_keys_partly_there_say_how_far_the_batch_arrived():
    """A resumed stream may batch differently, so an earlier session's records can make up the
    start of a batch: acknowledged up to there. Keys found after a gap fit no position: unknown.
    """
    with postgres_server() as url:
        sink = open_sink(f"{url}?table=t", SinkOptions())
        sink.open(None)
        try:
            with psycopg.connect(url) as conn:
                conn.execute(
                    "INSERT INTO t (idempotency_key) "
                    "SELECT 's:' || i FROM generate_series(100, 104) i"
                )
            assert sink.arrived_through(_batch(100, 10)) == 104
            assert sink.arrived_through(_batch(105, 10)) == 104  # none of this one
            assert sink.arrived_through(_batch(95, 10)) is None  # 100-104 there, 95-99 not
            assert sink.arrived_through(_batch(101, 3)) == 103  # all of this one
        finally:
            sink.close()


def test_a_server_out_of_reach_leaves_delivery_unknown():
    """No server at the URL when the sink looks back: None, not a guess."""
    from traffic.servers import free_port

    sink = open_sink(
        f"postgresql://cardtwin@127.0.0.1:{free_port()}/postgres?{DIRECT}",
        SinkOptions(timeout_s=1),
    )
    try:
        assert sink.arrived_through(_batch(0, 3)) is None
    finally:
        sink.close()
