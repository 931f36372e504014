"""Where a stream's records go: one small interface, one module per kind of sink.

A sink is opened once, then ``send`` is called with batches of records (from as many threads as
its ``concurrency``), then it is closed. ``send`` returns when the batch is acknowledged, with
the records the receiver refused (``Outcome.rejected``: they go to the dead-letter file), or
raises ``TransientError`` (retried with backoff: a 5xx, a timeout, a reset connection) or
``PermanentError`` (the whole batch is dead-lettered: a 4xx, a schema the server refuses).
When the last attempt at a batch failed transiently, ``arrived_through`` is asked how much of it
reached the receiver all the same (an answer lost after the receiver took the batch) before the
rest is dead-lettered. On ``--resume``, ``check_resume`` refuses a destination that is not the
stream's own before anything is touched.

A new sink (Kafka, say) is one module with a ``Sink`` subclass, named in ``SCHEMES``.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa

from traffic.encoding import Encoder

#: URL scheme -> "module:class" (imported when used, so each client library is optional).
SCHEMES = {
    "null": "traffic.sinks.null:NullSink",
    "-": "traffic.sinks.console:StdoutSink",
    "file": "traffic.sinks.files:FileSink",
    "http": "traffic.sinks.http:HttpSink",
    "https": "traffic.sinks.http:HttpSink",
    "redis": "traffic.sinks.redis_stream:RedisStreamSink",
    "postgresql": "traffic.sinks.postgres:PostgresSink",
    "postgres": "traffic.sinks.postgres:PostgresSink",
    "mqtt": "traffic.sinks.mqtt:MqttSink",
}


class SinkError(Exception):
    """A sink could not take a batch."""


class TransientError(SinkError):
    """Worth trying again (server error, timeout, connection reset)."""


class PermanentError(SinkError):
    """Trying again will not help (the receiver refuses the batch)."""


class SinkSetupError(ValueError):
    """The sink's URL or options are wrong (a bad input, reported as such)."""


@dataclasses.dataclass(frozen=True)
class Batch:
    """Records to send together: rows of a chunk (columns of the format, then ``stream_seq``
    and ``idempotency_key``)."""

    first_seq: int
    table: pa.Table

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.table.num_rows - 1


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A batch was acknowledged, but for ``rejected`` (stream_seq -> the receiver's reason)."""

    rejected: dict[int, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SinkOptions:
    """What the command line says about the sink (each sink reads what concerns it)."""

    encoding: str | None = None  # None: the sink's own default
    concurrency: int = 4
    timeout_s: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()
    token_env: str | None = None  # environment variable holding a bearer token
    record_format: str = "taps"


class Sink(ABC):
    """One destination (module docstring)."""

    #: Batches that may be in flight at once (threads calling ``send``).
    concurrency: int = 1
    #: False where the destination cannot continue a stream (a Parquet file).
    resumable: bool = True

    def __init__(self, url: str, options: SinkOptions) -> None:
        self.url = url
        self.options = options

    def open(self, resume_state: dict | None) -> None:
        """Connect or create; ``resume_state`` is what ``state`` returned at the checkpoint
        resumed from (None: a new stream). Nothing to do for a sink without a connection."""
        return None

    @abstractmethod
    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        """Deliver ``batch`` (module docstring)."""

    def arrived_through(self, batch: Batch) -> int | None:
        """Asked after the last attempt at ``batch`` failed with a ``TransientError``, before
        its records are given up on: the last stream position of the batch that reached the
        receiver all the same (those records count as acknowledged, the rest are
        dead-lettered), ``batch.first_seq - 1`` for none of it, or None when that cannot be
        told (the receiver cannot be reached to ask: the records are given up on with their
        delivery unknown). A sink that keeps no trace of what arrived says none (the default);
        one that does must also make sure that the part it says did not arrive never will (an
        earlier attempt still on its way)."""
        return batch.first_seq - 1

    def check_resume(self, state: dict, stream_id: str) -> None:
        """On ``--resume``, before the state folder or the destination is touched: raise
        ``SinkSetupError`` if the destination is not the one stream ``stream_id`` wrote to
        (``state``: what ``state`` returned at the checkpoint). Nothing to check by default."""
        return None

    def state(self) -> dict:
        """What the sink needs to continue exactly after the last acknowledged batch."""
        return {}

    def close(self) -> None:
        """Flush and disconnect (nothing, for a sink without a connection)."""
        return None

    def describe(self) -> str:
        return self.url


def open_sink(url: str, options: SinkOptions) -> Sink:
    """The sink for ``url``: ``null``, ``-`` (stdout), ``file://PATH``, ``http(s)://...``,
    ``redis://...``, ``postgresql://...``, ``mqtt://...``. A URL that cannot be read raises
    SinkSetupError naming ``--sink`` (never a bare ValueError from a parser)."""
    try:
        scheme = url if url in ("null", "-") else urlsplit(url).scheme
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise SinkSetupError(f"--sink {redacted(url)!r}: not a URL ({exc})") from None
    target = SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" if s not in ("null", "-") else s for s in SCHEMES)
        raise SinkSetupError(
            f"--sink {redacted(url)!r}: unknown kind of sink; expected one of {known}"
        )
    if scheme not in ("http", "https"):
        # Flags only an HTTP sink reads: given for another, they would be silently ignored.
        given = [flag for flag, value in (("--header", options.headers),
                                          ("--token-env", options.token_env)) if value]  # fmt: skip
        if given:
            raise SinkSetupError(
                f"{' and '.join(given)}: only an HTTP sink sends headers; --sink "
                f"{redacted(url)!r} is not one"
            )
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    try:
        return cls(url, options)
    except SinkSetupError:
        raise
    except ValueError as exc:  # a parser deeper down (a port, a number): still the URL's fault
        raise SinkSetupError(f"--sink {redacted(url)!r}: {exc}") from None


# ------------------------------------------------------------------ reading sink URLs
#: Query parameters of a sink URL that carry secrets (libpq's ``password=``, a ``token=``).
SECRET_PARAMETERS = {
    "access_token", "api_key", "apikey", "auth", "pass", "passwd", "password", "pwd", "secret",
    "sslpassword", "token",
}  # fmt: skip


def redacted(url: str) -> str:
    """``url`` with its secrets shown as ``***``: the password of its user part
    (``user:secret@``) and query parameters such as ``password=`` or ``token=``. What goes into
    messages, logs, ``report.json`` and the checkpoint (a shell history already has the URL,
    but a report or a CI log is shared further)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("@", 1)[-1] if "@" in url else url
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(name.lower() in SECRET_PARAMETERS for name, _ in pairs):
        query = urlencode(
            [(n, "***" if n.lower() in SECRET_PARAMETERS else v) for n, v in pairs], safe="*"
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def host_and_port(url: str, default_port: int | None) -> tuple[str, int | None]:
    """The host and port of a server URL, checked: a host must be named (no silent
    ``localhost``), and a port, when given, must be a number from 1 to 65535 (``default_port``
    when there is none: the protocol's own, as every client of it does)."""
    parts = urlsplit(url)
    shown = redacted(url)
    if not parts.hostname:
        raise SinkSetupError(
            f"--sink {shown!r}: no host; expected {parts.scheme}://HOST[:PORT]/..."
        )
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise SinkSetupError(
            f"--sink {shown!r}: port {port_text!r} is not a port; expected a number from 1 to 65535"
        ) from None
    if port == 0:
        raise SinkSetupError(f"--sink {shown!r}: port 0; expected a number from 1 to 65535")
    return parts.hostname, port if port is not None else default_port


def query_options(url: str, known: tuple[str, ...]) -> dict[str, str]:
    """The ``?name=value`` options of a sink URL: each at most once, and only the ones the sink
    reads (a misspelt option is an error, not an option silently ignored)."""
    shown = redacted(url)
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise SinkSetupError(
            f"--sink {shown!r}: unknown option {', '.join(unknown)}; expected "
            + (", ".join(known) if known else "none")
        )
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if repeated:
        raise SinkSetupError(f"--sink {shown!r}: option {', '.join(repeated)} given twice")
    return {name: values[0] for name, values in query.items()}


__all__ = [
    "SCHEMES",
    "Batch",
    "Outcome",
    "PermanentError",
    "Sink",
    "SinkError",
    "SinkOptions",
    "SinkSetupError",
    "TransientError",
    "host_and_port",
    "open_sink",
    "query_options",
    "redacted",
]
