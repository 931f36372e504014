"""``--sink redis://HOST:PORT/DB?key=NAME&maxlen=N``: records appended to a Redis Stream (XADD).

Each record is one stream entry with two fields: ``key`` (its idempotency key) and ``record``
(the record as JSON). Entry ids are Redis's own (time-based). The stream key defaults to
``cardtwin:<format>``; ``maxlen`` trims the stream approximately (``MAXLEN ~ N``).

A batch is one MULTI/EXEC transaction of XADDs: all of it is in the stream or none. Batches go
in order, one at a time, so the stream's last entry says exactly how far a killed stream got:
a resumed stream reads it and skips what is there already (exactly once, even across a kill).
Connection errors and timeouts are transient; a server that refuses the commands (a key of
another type, out of memory) is permanent.

The XADD commands of a batch are written in the Redis protocol (RESP) by Arrow string kernels,
in one buffer, and sent with redis-py's connection (which also reads and checks the replies):
redis-py's own pipeline builds each command in Python, ~10 us a record, which alone would hold
a stream under 100,000 records a second on this machine (bench/stream.py).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
import redis

from traffic.encoding import Encoder, packed
from traffic.sinks import Batch, Outcome, PermanentError, Sink, SinkSetupError, TransientError

MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"


def _bulk(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return f"${len(raw)}\r\n{raw.decode()}\r\n"


def xadd_commands(stream_key: str, keys: pa.Array, records: pa.Array, maxlen: int | None) -> bytes:
    """``XADD stream_key [MAXLEN ~ n] * key <key> record <record>`` for every record, in RESP,
    back to back."""
    args = ["XADD", stream_key] + (["MAXLEN", "~", str(maxlen)] if maxlen else []) + ["*"]
    head = f"*{len(args) + 4}\r\n" + "".join(_bulk(a) for a in args) + _bulk("key") + "$"
    big = pa.large_string()

    def text(value: str) -> pa.Scalar:
        return pa.scalar(value, type=big)

    key_len = pc.cast(pc.binary_length(keys), big)
    record_len = pc.cast(pc.binary_length(records), big)
    commands = pc.binary_join_element_wise(
        text(head), key_len, text("\r\n"), keys.cast(big),
        text("\r\n" + _bulk("record") + "$"), record_len, text("\r\n"), records.cast(big),
        text("\r\n"), text(""),
    )  # fmt: skip
    return packed(commands)[0]


class RedisStreamSink(Sink):
    """A Redis Stream (module docstring)."""

    concurrency = 1

    def __init__(self, url, options) -> None:
        super().__init__(url, options)
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.key = query.get("key", [f"cardtwin:{options.record_format}"])[0]
        try:
            self.maxlen = int(query["maxlen"][0]) if "maxlen" in query else None
        except ValueError:
            raise SinkSetupError(f"--sink {url!r}: maxlen must be a whole number") from None
        self.server_url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self.client = redis.Redis.from_url(
            self.server_url, socket_timeout=options.timeout_s, socket_connect_timeout=5
        )
        self.already_through = -1  # stream positions already in the stream (resume)

    def open(self, resume_state: dict | None) -> None:
        try:
            self.client.ping()
            if resume_state is not None:
                last = self.client.xrevrange(self.key, count=1)
                if last:
                    key = last[0][1][b"key"].decode()
                    self.already_through = int(key.rsplit(":", 1)[1])
        except redis.RedisError as exc:
            raise SinkSetupError(f"--sink {self.url}: {exc}") from None

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        skip = max(0, min(len(batch), self.already_through - batch.first_seq + 1))
        if skip == len(batch):
            return Outcome()  # a resumed stream: already in Redis before the kill
        table = batch.table.slice(skip)
        keys = table.column("idempotency_key").combine_chunks()
        payload = MULTI + xadd_commands(self.key, keys, encoder.json_column(table), self.maxlen)
        payload += EXEC
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([payload], check_health=False)
            conn.read_response()  # +OK of MULTI
            for _ in range(len(table)):
                conn.read_response()  # +QUEUED (an error here aborts the EXEC)
            results = conn.read_response()  # EXEC: the new ids, or errors
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            conn.disconnect()
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            conn.disconnect()  # the rest of the transaction's replies are unread
            raise PermanentError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            pool.release(conn)
        failed = [r for r in results or () if isinstance(r, Exception)]
        if results is None or failed:
            raise PermanentError(f"the transaction failed: {failed[0] if failed else 'aborted'}")
        return Outcome()

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        return f"{self.server_url} stream {self.key}"
