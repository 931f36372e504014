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

Other ``?name=value`` options of the URL (``sslmode=require``, ``application_name=...``) go to
libpq as its own URL options (libpq refuses one it does not know). A URL without a host uses the
local socket, as psql does.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
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


def _ended(conn: psycopg.Connection, backend: Backend, deadline: float) -> bool:
    """End the server process ``backend`` if it is still there, and wait until it is gone
    (``conn``: autocommit, so each look at ``pg_stat_activity`` is a new one). False if it is
    still there at ``deadline``; a role not allowed to end it raises
    ``InsufficientPrivilege``."""
    pid, started = backend
    while True:
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
        return psycopg.connect(self.dsn, connect_timeout=max(1, int(self.timeout_s)))

    def open(self, resume_state: dict | None) -> None:
        try:
            with self._connect() as conn:
                conn.execute(create_table_sql(self.table, self.schema))
                found = [
                    row[0]
                    for row in conn.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = %s ORDER BY ordinal_position",
                        (self.table,),
                    )
                ]
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
                with conn.transaction(), conn.cursor() as cur, cur.copy(self._copy) as copy:
                    copy.write(body)
            except psycopg.errors.UniqueViolation:
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
                self.dsn, connect_timeout=max(1, int(self.timeout_s)), autocommit=True
            ) as conn:
                deadline = time.monotonic() + self.timeout_s
                for backend in backends:
                    if not _ended(conn, backend, deadline):
                        return None
                query = sql.SQL("SELECT idempotency_key FROM {} WHERE idempotency_key = ANY(%s)")
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

    def describe(self) -> str:
        return f"{redacted(self.dsn)} table {self.table} ({self.concurrency} connections)"
