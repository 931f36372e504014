"""``--sink postgresql://USER@HOST:PORT/DB?table=NAME``: records COPY'd into a table.

The table (default ``cardtwin_<format>``) is created if missing, from the format's documented
columns (docs/streaming.md; types from the Arrow schema: integers, ``boolean``, ``text``,
``timestamp``, ``date``, and ``jsonb`` for a nested column such as an upload's records), with
the idempotency key as its primary key. An existing table must have those columns. Each batch
is one transaction: ``COPY ... FROM STDIN (FORMAT csv)`` of the batch as CSV (pyarrow's writer;
a nested column as JSON text). A batch sent again (a timeout after the commit, a resumed
stream) breaks the key: it is then copied into a temporary table and inserted with
``ON CONFLICT DO NOTHING``, so every record is in the table once. Lost connections are transient
(a new one is made); data the server refuses is permanent.

A batch that arrived though its answer was lost (the connection dropped after the COMMIT went up)
is told apart from one that did not (``arrived_through``). A batch is one transaction, so it is
in the table wholly or not at all; what is uncertain is only an attempt that may still commit:
its transaction's data or COMMIT still on its way, or waiting in the server. Each connection
notes its server process when it is made (its pid and start time, from ``pg_stat_activity``),
and each attempt at a batch notes the process it went to. When the last attempt failed too,
the sink connects once more and first makes sure none of those processes can still commit:
one still running is ended (``pg_terminate_backend``, which a role may do to its own sessions)
and the sink waits, for at most ``--timeout`` seconds, until it is gone from
``pg_stat_activity`` (a session leaves it only after its transaction was committed or rolled
back: a COMMIT under way is finished first, and whatever is still on its way then lands on a
closed socket). Then the batch's keys are looked up: all there, the batch is acknowledged; none,
it is dead-lettered and never lands later. The answer is "cannot tell" (its records are of
unknown delivery) when the server cannot be reached or asked, a process cannot be ended (not
allowed, or still there after the wait), the session was not a server process of its own (a
connection pooler in between: the pid libpq was given is not the server's), or the keys found
are not the batch's first records (records of an earlier session in the table, others not).

Every transaction of the sink (a batch's COPY and COMMIT, noting a connection's server
process, the table's creation, each look at ``pg_stat_activity`` and the keys' look-up) must be
answered within ``--timeout`` seconds (``Deadlines``): a server that stops answering once
connected (its process stopped, a lock that is never released, a network gone) would otherwise
hold the stream forever, without a word. Past the deadline the sink asks the server to cancel
the query (``cancel_safe``, to the postmaster, as ``pg_cancel_backend`` does); a server that
answers the cancel rolls the transaction back at once. If the call has not returned
``--timeout`` seconds later (the process cannot hear the cancel: stopped, or the network is
gone), the sink shuts the connection's socket down, so the blocked call returns. Either way the
attempt fails as a lost connection (``NoAnswer``, transient), and the connection is not used
again (a cancel arriving late would hit its next query); the batch is tried again, and after
its last attempt ``arrived_through`` decides as above, under the same deadlines. Connecting is
bounded by libpq's ``connect_timeout``: ``--timeout`` rounded up to whole seconds, and at least
2 (libpq takes whole seconds and reads 1 as 2). No TCP keepalive or
``tcp_user_timeout`` is set: the deadline covers a dead network too, and a busy server that is
slow to read a large COPY is not cut off by the kernel; the URL may set them (libpq options).

Other ``?name=value`` options of the URL (``sslmode=require``, ``application_name=...``) go to
libpq as its own URL options (libpq refuses one it does not know). A URL without a host uses the
local socket, as psql does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pyarrow as pa
from psycopg import sql

from traffic.encoding import Encoder, is_nested
from traffic.sinks import (
    Batch,
    Outcome,
    PermanentError,
    Sink,
    SinkSetupError,
    TransientError,
    redacted,
)


def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _pg_type(t.value_type)
    if is_nested(t):
        return "jsonb"  # the CSV encoding writes a nested column as JSON text
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t):
        return "smallint"
    if pa.types.is_int32(t):
        return "integer"
    if pa.types.is_integer(t):
        return "bigint"
    if pa.types.is_floating(t):
        return "double precision"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    return "text"


#: A server process: its pid and start time (a pid alone may be a later process's).
Backend = tuple[int, dt.datetime]


def _backend_of(conn: psycopg.Connection) -> Backend | None:
    """The server process at the other end of ``conn``; None when the pid libpq was given is
    not the server's (a connection pooler answers for it: the process the data goes to cannot
    be found again)."""
    try:
        row = conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    except psycopg.OperationalError:
        raise
    except psycopg.Error:  # not readable here: the process cannot be found again
        conn.rollback()
        return None
    conn.commit()  # not left in a transaction: a batch's is its own
    if row is None or row[0] != conn.info.backend_pid:
        return None
    return row[0], row[1]


class NoAnswer(psycopg.OperationalError):
    """The server did not answer a transaction of the sink within ``--timeout`` (module
    docstring): the query was cancelled, or its connection cut. Transient, as a lost
    connection is."""


class _Watched:
    """A transaction under a deadline: its connection, and what the watchdog did to it."""

    __slots__ = ("conn", "deadline", "done", "fired", "lock")

    def __init__(self, conn: psycopg.Connection, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        # Held while the watchdog touches ``conn`` and when its owner is done with it, so the
        # owner never closes the connection under a cancel, nor a cut hits a closed one.
        self.lock = threading.Lock()
        self.done = False
        self.fired: str | None = None  # None, "cancelled" or "cut"


class Deadlines:
    """``--timeout`` for the transactions of a sink's connections (module docstring).

    ``guard(conn)`` wraps one transaction. One thread (started with the first guard) waits for
    the earliest deadline; a transaction still running then is cancelled, and if it has not
    returned ``grace_s`` later its connection's socket is shut down, so that the call blocked
    on it returns with an error, raised as ``NoAnswer``. Only the thread that owns a
    connection closes it: the watchdog cancels and shuts down, never closes."""

    def __init__(self, timeout_s: float, grace_s: float) -> None:
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self._cond = threading.Condition()
        self._watched: set[_Watched] = set()
        self._thread: threading.Thread | None = None
        self._stopped = False

    @contextlib.contextmanager
    def guard(self, conn: psycopg.Connection) -> Iterator[None]:
        """Run the block (one transaction on ``conn``) under the deadline; a block the
        watchdog had to interrupt raises ``NoAnswer``, and ``conn`` is closed after it."""
        entry = _Watched(conn, time.monotonic() + self.timeout_s)
        with self._cond:
            self._watched.add(entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="postgres-deadlines", daemon=True
                )
                self._thread.start()
            elif len(self._watched) == 1:
                # Deadlines only grow (one timeout for all), so the watchdog needs waking only
                # when it waits for nothing.
                self._cond.notify()
        try:
            yield
        except psycopg.Error as exc:
            if entry.fired is None:
                raise
            raise NoAnswer(self._reason(entry.fired)) from exc
        finally:
            with entry.lock:
                entry.done = True
                fired = entry.fired
            with self._cond:
                self._watched.discard(entry)
            if fired is not None:
                conn.close()  # a cancel still on its way would hit the next query

    def _reason(self, fired: str) -> str:
        what = f"no answer from the server within --timeout {self.timeout_s:g} s"
        if fired == "cancelled":
            return f"{what}: the query was cancelled"
        return (
            f"{what}, nor to its cancellation within {self.grace_s:g} s more (the server "
            "process stopped, or the network gone): the connection was cut"
        )

    def _watch(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                due = [entry for entry in self._watched if entry.deadline <= now]
                for entry in due:
                    self._watched.discard(entry)
                    threading.Thread(
                        target=self._interrupt, args=(entry,), name="postgres-cancel", daemon=True
                    ).start()
                if not due:
                    soonest = min((entry.deadline for entry in self._watched), default=None)
                    self._cond.wait(None if soonest is None else soonest - now)

    def _interrupt(self, entry: _Watched) -> None:
        """Cancel ``entry``'s query; shut its connection down if that does not end it."""
        # The grace counts from the cancel's start: a postmaster that does not answer it
        # either takes it all, and the cut follows at once.
        end = time.monotonic() + self.grace_s
        with entry.lock:
            if entry.done:
                return
            entry.fired = "cancelled"
            # Refused, timed out or the connection gone: the shutdown below still ends the
            # wait.
            with contextlib.suppress(psycopg.Error):
                entry.conn.cancel_safe(timeout=self.grace_s)
        while time.monotonic() < end:
            if entry.done:  # the server answered the cancel: the call returned
                return
            time.sleep(0.02)
        with entry.lock:
            if entry.done:
                return
            entry.fired = "cut"
            try:
                # A duplicate of the socket: shutting it down ends the connection for the
                # owner's blocked call (a close of the owner's descriptor would not wake it).
                fd = os.dup(entry.conn.pgconn.socket)
            except (psycopg.Error, OSError):
                return  # already gone: the call has returned or is about to
        with socket.socket(fileno=fd) as cut, contextlib.suppress(OSError):
            cut.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """End the watchdog's thread (the sink is closed)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()


#: Runs one transaction on a connection under the sink's deadline (``Deadlines.guard``).
Guard = Callable[[psycopg.Connection], contextlib.AbstractContextManager]


def _ended(conn: psycopg.Connection, backend: Backend, deadline: float, guard: Guard) -> bool:
    """End the server process ``backend`` if it is still there, and wait until it is gone
    (``conn``: autocommit, so each look at ``pg_stat_activity`` is a new one; each under
    ``guard``). False if it is still there at ``deadline``; a role not allowed to end it
    raises ``InsufficientPrivilege``."""
    pid, started = backend
    while True:
        with guard(conn):
            row = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid = %s AND backend_start = %s",
                (pid, started),
            ).fetchone()
        if row is None:
            return True  # gone: its transaction committed or rolled back, and nothing follows
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def create_table_sql(table: str, schema: pa.Schema) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` for a format's records (the key is the primary key)."""
    columns = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(f.name),
            sql.SQL(_pg_type(f.type)),
            sql.SQL(" PRIMARY KEY" if f.name == "idempotency_key" else ""),
        )
        for f in schema
    ]
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        sql.Identifier(table), sql.SQL(", ").join(columns)
    )


class PostgresSink(Sink):
    """A PostgreSQL table (module docstring)."""

    def __init__(self, url, options) -> None:
        from traffic.records import stream_schema

        super().__init__(url, options)
        parts = urlsplit(url)
        self.shown = redacted(url)
        # Hosts and ports are libpq's to check (it says which is wrong, and takes several).
        query = parse_qsl(parts.query, keep_blank_values=True)
        tables = [value for name, value in query if name == "table"]
        if len(tables) > 1 or tables == [""]:
            raise SinkSetupError(f"--sink {self.shown!r}: expected one table name (?table=T)")
        self.table = tables[0] if tables else f"cardtwin_{options.record_format}"
        # The other options are libpq's (sslmode, ...): passed on, not silently dropped.
        libpq = urlencode([(name, value) for name, value in query if name != "table"])
        self.dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, libpq, ""))
        self.concurrency = options.concurrency
        self.schema = stream_schema(options.record_format)
        self.timeout_s = options.timeout_s
        # The grace for a cancelled query to return before its connection is cut: as long
        # again (module docstring).
        self.deadlines = Deadlines(self.timeout_s, grace_s=self.timeout_s)
        self._local = threading.local()
        self._connections: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        # first_seq of a batch still being tried -> the server processes its attempts went to
        # (pid and start time; None: a process that cannot be told apart, module docstring)
        self._attempts: dict[int, list[Backend | None]] = {}
        columns = sql.SQL(", ").join(sql.Identifier(f.name) for f in self.schema)
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(self.table), columns
        )
        self._columns = columns

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, connect_timeout=self._connect_timeout_s)

    @property
    def _connect_timeout_s(self) -> int:
        """libpq's ``connect_timeout`` for ``--timeout`` (module docstring): whole seconds,
        rounded up so a fraction never waits less than asked, and at least libpq's own 2."""
        return max(2, math.ceil(self.timeout_s))

    def open(self, resume_state: dict | None) -> None:
        try:
            conn = self._connect()
            try:
                with self.deadlines.guard(conn):
                    conn.execute(create_table_sql(self.table, self.schema))
                    found = [
                        row[0]
                        for row in conn.execute(
                            "SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = %s ORDER BY ordinal_position",
                            (self.table,),
                        )
                    ]
                    conn.commit()
            finally:
                conn.close()
        except psycopg.Error as exc:
            raise SinkSetupError(f"--sink {self.shown}: {str(exc).strip()}") from None
        if found != self.schema.names:
            raise SinkSetupError(
                f"--sink {self.shown}: table {self.table} exists with other columns "
                f"({', '.join(found)}); expected {', '.join(self.schema.names)} "
                "(choose another ?table=)"
            )

    def _connection(self) -> tuple[psycopg.Connection, Backend | None]:
        """This thread's connection, and the server process it talks to."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            with self._lock:
                self._connections.append(conn)
            self._local.conn, self._local.backend = conn, None
            with self.deadlines.guard(conn):
                self._local.backend = _backend_of(conn)
        return conn, self._local.backend

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        body = encoder.encode(batch.table, "csv", header=False)
        try:
            conn, backend = self._connection()
            with self._lock:
                went_to = self._attempts.setdefault(batch.first_seq, [])
                if backend not in went_to:
                    went_to.append(backend)
            try:
                with (
                    self.deadlines.guard(conn),
                    conn.transaction(),
                    conn.cursor() as cur,
                    cur.copy(self._copy) as copy,
                ):
                    copy.write(body)
            except psycopg.errors.UniqueViolation:
                with self.deadlines.guard(conn):
                    self._insert_new(conn, body)
        except psycopg.OperationalError as exc:
            lost, self._local.conn = getattr(self._local, "conn", None), None
            if lost is not None:
                lost.close()  # its server process ends (if it is still there to hear it)
            raise TransientError(f"{type(exc).__name__}: {str(exc).strip()}") from exc
        except psycopg.Error as exc:
            self._forget(batch)
            raise PermanentError(f"{type(exc).__name__}: {str(exc).strip()}") from exc
        self._forget(batch)
        return Outcome()

    def _forget(self, batch: Batch) -> None:
        with self._lock:
            self._attempts.pop(batch.first_seq, None)

    def arrived_through(self, batch: Batch) -> int | None:
        """Whether ``batch`` is in the table, once no attempt at it can still commit (module
        docstring): ``batch.last_seq`` (all of it), ``batch.first_seq - 1`` (none), or None
        when that cannot be told."""
        with self._lock:
            backends = self._attempts.pop(batch.first_seq, [])
        if None in backends:
            return None  # a process that cannot be found again (a pooler in between)
        keys = batch.table.column("idempotency_key").to_pylist()
        try:
            with psycopg.connect(
                self.dsn, connect_timeout=self._connect_timeout_s, autocommit=True
            ) as conn:
                deadline = time.monotonic() + self.timeout_s
                for backend in backends:
                    if not _ended(conn, backend, deadline, self.deadlines.guard):
                        return None
                query = sql.SQL("SELECT idempotency_key FROM {} WHERE idempotency_key = ANY(%s)")
                with self.deadlines.guard(conn):
                    found = {
                        row[0]
                        for row in conn.execute(query.format(sql.Identifier(self.table)), (keys,))
                    }
        except psycopg.Error:  # out of reach, not allowed to end a process, the table gone...
            return None
        there = [key in found for key in keys]
        arrived = there.index(False) if False in there else len(keys)
        if any(there[arrived:]):
            return None  # not a prefix of the batch: no position says what arrived
        return batch.first_seq - 1 + arrived

    def _insert_new(self, conn: psycopg.Connection, body: bytes) -> None:
        """A batch partly or wholly there already: only its new records go in."""
        stage = sql.Identifier(f"cardtwin_stage_{threading.get_ident()}")
        with conn.transaction(), conn.cursor() as cur:
            create = "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS"
            cur.execute(sql.SQL(create).format(stage, sql.Identifier(self.table)))
            copy_stage = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                stage, self._columns
            )
            with cur.copy(copy_stage) as copy:
                copy.write(body)
            cur.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {} ON CONFLICT DO NOTHING").format(
                    sql.Identifier(self.table), stage
                )
            )

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self.deadlines.stop()

    def describe(self) -> str:
        return f"{redacted(self.dsn)} table {self.table} ({self.concurrency} connections)"
