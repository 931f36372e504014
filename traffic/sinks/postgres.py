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

Other ``?name=value`` options of the URL (``sslmode=require``, ``application_name=...``) go to
libpq as its own URL options (libpq refuses one it does not know). A URL without a host uses the
local socket, as psql does.
"""

from __future__ import annotations

import threading
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

    def _connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        body = encoder.encode(batch.table, "csv", header=False)
        try:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur, cur.copy(self._copy) as copy:
                    copy.write(body)
            except psycopg.errors.UniqueViolation:
                self._insert_new(conn, body)
        except psycopg.OperationalError as exc:
            self._local.conn = None
            raise TransientError(f"{type(exc).__name__}: {str(exc).strip()}") from exc
        except psycopg.Error as exc:
            raise PermanentError(f"{type(exc).__name__}: {str(exc).strip()}") from exc
        return Outcome()

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
