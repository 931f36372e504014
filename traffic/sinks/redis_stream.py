"""``--sink redis://HOST:PORT/DB?key=NAME&maxlen=N``: records appended to a Redis Stream (XADD).

Each record is one stream entry with two fields: ``key`` (its idempotency key) and ``record``
(the record as JSON). Entry ids are Redis's own (time-based). The stream key defaults to
``cardtwin:<format>``; ``maxlen`` trims the stream approximately (``MAXLEN ~ N``).

Exactly once, even across timeouts and kills. The stream key is shared (every scenario and seed
writes ``cardtwin:taps`` by default), so what is in it says nothing about how far *this* stream
got. Each run of a stream therefore keeps a progress key of its own beside the stream,
``<stream key>:progress:<run id>``: the last stream position it wrote. The run id is random,
made when a stream starts and kept in the checkpoint, so a resumed stream finds its own
progress and nobody else's. A batch is one transaction that adds its entries *and* moves the
progress key, on a connection that first WATCHes the progress key and reads it:
- records at or before the progress are already in the stream (a resumed stream's batches that
  arrived before the kill, or a batch whose EXEC ran but whose answer was lost to a timeout):
  they are skipped, not written again;
- if another connection moved the progress key in between (an earlier attempt at the same
  batch whose EXEC was still on its way), Redis aborts this transaction (WATCH) and the batch is
  tried again, then finds itself there.
When a batch's last attempt failed too (a connection lost after its EXEC went up, then the
server out of reach), the sink reads the progress key once more before the batch is given up
on (``arrived_through``), in a transaction that also touches the key, so that an earlier
attempt whose EXEC is still on its way is aborted by its WATCH: a batch the progress key covers
is acknowledged after all, one it does not is dead-lettered and never lands later, and when the
server cannot be asked the records are given up on as of unknown delivery (traffic/delivery.py).
The progress key expires ``PROGRESS_TTL_S`` after the run's last batch; a stream resumed later
than that (or whose progress key was deleted) is refused, since what arrived cannot be told.

Every wait on the server follows ``--timeout`` (``SinkOptions.timeout_s``): connecting (the
TCP connection, when the sink opens and whenever it connects again after a lost connection)
and each socket operation after it. A server that accepts no connection within it (a host that
drops the packets, a listener whose queue is full) is bad input when the sink opens, naming
``--timeout``; during the stream such a connection attempt costs the batch an attempt.
Connection errors and timeouts are transient; a server that refuses the commands (out of
memory) is permanent. A stream key of another type is refused when the sink opens.

The XADD commands of a batch are written in the Redis protocol (RESP) by Arrow string kernels,
in one buffer, and sent with redis-py's connection (which also reads and checks the replies):
redis-py's own pipeline builds each command in Python, ~10 us a record, which alone would hold
a stream under 100,000 records a second on this machine (bench/stream.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
import redis

from traffic.encoding import Encoder, packed
from traffic.sinks import (
    Batch,
    Outcome,
    PermanentError,
    Sink,
    SinkError,
    SinkSetupError,
    TransientError,
    host_and_port,
    query_options,
    redacted,
)

MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"

T = TypeVar("T")

#: How long a run's progress key outlives its last batch (a resume after that is refused).
PROGRESS_TTL_S = 30 * 24 * 3600


def _command(*args: str) -> bytes:
    """One Redis command in RESP."""
    return (f"*{len(args)}\r\n" + "".join(_bulk(a) for a in args)).encode()


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
        shown = redacted(url)
        host_and_port(url, 6379)  # a host, and a port that is one
        query = query_options(url, ("key", "maxlen"))
        self.key = query.get("key", f"cardtwin:{options.record_format}")
        if not self.key:
            raise SinkSetupError(f"--sink {shown!r}: key is empty; expected a stream key name")
        self.maxlen = None
        if "maxlen" in query:
            text = query["maxlen"]
            if not text.isdigit() or int(text) < 1:
                raise SinkSetupError(
                    f"--sink {shown!r}: maxlen={text!r}; expected a whole number of entries "
                    "of at least 1 (or no maxlen: the stream is not trimmed)"
                )
            self.maxlen = int(text)
        db = parts.path.strip("/")
        if db and not db.isdigit():
            # redis-py would quietly take database 0 for this
            raise SinkSetupError(
                f"--sink {shown!r}: database {db!r}; expected a database number "
                "(redis://HOST:PORT/0)"
            )
        self.server_url = urlunsplit((parts.scheme, parts.netloc, f"/{db or 0}", "", ""))
        self.timeout_s = options.timeout_s
        # Connecting follows --timeout too (it was a fixed 5 s): a shorter --timeout must not
        # leave a stream waiting longer on a server that takes no connection, nor a longer one
        # give up on a slow network sooner than the user allowed.
        self.client = redis.Redis.from_url(
            self.server_url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
        )
        self.run = ""  # set by open: a new run's id, or the resumed run's (module docstring)

    @property
    def progress_key(self) -> str:
        """Where this run keeps the last stream position it wrote (module docstring)."""
        return f"{self.key}:progress:{self.run}"

    def open(self, resume_state: dict | None) -> None:
        shown = redacted(self.server_url)
        try:
            self.client.ping()
            kind = self.client.type(self.key).decode()
            if kind not in ("stream", "none"):
                raise SinkSetupError(
                    f"--sink {shown}: key {self.key} holds a {kind}, not a stream; "
                    "choose another ?key="
                )
            if resume_state is None:
                self.run = secrets.token_hex(8)
                # -1: nothing written yet. It exists from the start, so a run killed before
                # its first batch can still be resumed (and a missing key means "unknown").
                self.client.set(self.progress_key, -1, ex=PROGRESS_TTL_S)
                return
            self.run = str(resume_state.get("run", ""))
            if not self.run or self.client.get(self.progress_key) is None:
                raise SinkSetupError(
                    f"--resume: {shown} has no progress key "
                    f"{self.progress_key if self.run else f'{self.key}:progress:<run>'} for this "
                    "stream, so which of its records reached the stream cannot be told (the "
                    "stream was started into another sink, key or server, or by an older "
                    f"CardTwin, its progress key expired {PROGRESS_TTL_S // 86400} days after "
                    "its last batch, or was deleted); start the stream again without --resume"
                )
        except redis.TimeoutError as exc:
            # Connecting or an answer took longer than --timeout: say which flag bounds it.
            raise SinkSetupError(
                f"--sink {shown}: no answer within --timeout {self.timeout_s:g} s ({exc}); "
                "check the host, the port and the network, or give a larger --timeout"
            ) from None
        except redis.RedisError as exc:
            raise SinkSetupError(f"--sink {shown}: {exc}") from None

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        return self._on_connection(lambda conn: self._send_on(conn, batch, encoder))

    def arrived_through(self, batch: Batch) -> int | None:
        """How far the progress key covers ``batch`` (module docstring); None when the server
        cannot be asked, or the progress key is gone."""
        try:
            through = self._on_connection(self._fence)
        except SinkError:  # out of reach (or refusing commands): whether it arrived is unknown
            return None
        if through is None:
            return None
        return min(batch.last_seq, max(batch.first_seq - 1, int(through)))

    def _on_connection(self, run: Callable[[redis.Connection], T]) -> T:
        """``run`` on a connection of the pool: connection errors and timeouts raised as
        ``TransientError``, commands the server refuses as ``PermanentError``."""
        pool = self.client.connection_pool
        try:
            conn = pool.get_connection()  # connects again after a lost connection
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        try:
            return run(conn)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            conn.disconnect()  # whatever it was in the middle of is abandoned
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            conn.disconnect()  # the rest of the transaction's replies are unread
            raise PermanentError(f"{type(exc).__name__}: {exc}") from exc
        except SinkError:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _send_on(self, conn, batch: Batch, encoder: Encoder) -> Outcome:
        """The batch's transaction on ``conn``, guarded by the progress key (module
        docstring)."""
        progress = self.progress_key
        conn.send_packed_command(
            [_command("WATCH", progress), _command("GET", progress)], check_health=False
        )
        conn.read_response()  # +OK of WATCH
        through = conn.read_response()
        if through is None:
            # Deleted, evicted or expired while the stream ran: what is in the stream can no
            # longer be told, and going on could write records twice. Not a batch's fault: the
            # stream stops, and the checkpoint says what was acknowledged.
            raise SinkError(
                f"the progress key {progress} disappeared from {redacted(self.server_url)} "
                "(deleted, or evicted under maxmemory): stopping rather than risk writing "
                "records twice"
            )
        skip = max(0, min(len(batch), int(through) - batch.first_seq + 1))
        if skip == len(batch):
            # Already there: a batch whose EXEC ran before its answer was lost, or a resumed
            # stream's batch that arrived before the kill.
            conn.send_packed_command([_command("UNWATCH")], check_health=False)
            conn.read_response()
            return Outcome()
        table = batch.table.slice(skip)
        keys = table.column("idempotency_key").combine_chunks()
        payload = MULTI + xadd_commands(self.key, keys, encoder.json_column(table), self.maxlen)
        payload += _command("SET", progress, str(batch.last_seq), "EX", str(PROGRESS_TTL_S))
        payload += EXEC
        conn.send_packed_command([payload], check_health=False)
        conn.read_response()  # +OK of MULTI
        for _ in range(len(table) + 1):
            conn.read_response()  # +QUEUED (an error here aborts the EXEC)
        results = conn.read_response()  # EXEC: the new ids, or errors; None: WATCH aborted it
        if results is None:
            # Another connection moved the progress key since we read it: an earlier attempt
            # at this batch, whose EXEC arrived late. Try again: it will find itself there.
            raise TransientError("the transaction was aborted: the progress key moved meanwhile")
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise PermanentError(f"the transaction failed: {failed[0]}")
        return Outcome()

    def _fence(self, conn) -> bytes | None:
        """The progress key, read in a transaction that also touches it (EXPIRE, to the TTL
        a batch gives it): a transaction of an earlier attempt still on its way WATCHes the
        key, so Redis aborts it, and what this read says did not arrive never will."""
        progress = self.progress_key
        touch = _command("EXPIRE", progress, str(PROGRESS_TTL_S))
        conn.send_packed_command(
            [MULTI + _command("GET", progress) + touch + EXEC], check_health=False
        )
        for _ in range(3):
            conn.read_response()  # +OK of MULTI, +QUEUED of GET and EXPIRE
        through, _ = conn.read_response()
        return through

    def state(self) -> dict:
        return {"run": self.run}

    def close(self) -> None:
        self.client.close()

    def describe(self) -> str:
        return f"{redacted(self.server_url)} stream {self.key}"
