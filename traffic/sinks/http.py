"""``--sink http(s)://HOST/PATH``: POST batches of records as JSON.

Each batch is one request: a JSON array of records (``--encoding json``, the default) or JSON
lines (``--encoding jsonl``), with the headers ``Content-Type``, ``Idempotency-Key``
(``<stream id>:<first seq>-<last seq>``), those given with ``--header``, and
``Authorization: Bearer <token>`` when ``--token-env NAME`` names an environment variable
holding the token. Every record also carries its own ``idempotency_key``.

The receiver's answer decides what happens to the batch:
- 2xx: acknowledged. A JSON body ``{"rejected": [{"idempotency_key": K, "reason": R}, ...]}``
  sends those records to the dead-letter file with the receiver's reason;
- 408, 425, 429, 5xx, a timeout, a refused or reset connection: transient, tried again;
- any other status: permanent, the whole batch is dead-lettered with the status and body;
- an answer that is not HTTP (a server of another protocol, a proxy's garbage): transient, then
  dead-lettered with the parser's complaint once the attempts run out;
- a request of the batch that HTTP cannot carry (an ``Idempotency-Key`` h11 refuses: not
  expected, since the stream makes the keys): permanent, the batch is dead-lettered.

``--concurrency N`` batches are in flight at once, each thread with its own connection.

Everything that would make every request fail the same way is refused when the stream starts
(bad input, not a stream that dead-letters all it sends): a URL without a host or with a port
that is none, a ``--header`` name or value HTTP does not allow, a header the sink sets itself,
and a token with characters a header cannot carry (a newline, a space). The token never appears
in a message, a dead letter or the report. When the sink opens, a TCP connection is made to the
receiver (or to the proxy httpx would use): a host that cannot be resolved, a connection
refused or not made within ``--timeout`` stops the stream before anything is sent. (What the
receiver answers to a POST is not tried: a receiver that refuses every batch stops the stream
after its first batches, traffic/delivery.py.)
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import urllib.request
from urllib.parse import urlsplit

import h11
import httpx

from traffic.encoding import Encoder
from traffic.sinks import (
    Batch,
    Outcome,
    PermanentError,
    Sink,
    SinkSetupError,
    TransientError,
    host_and_port,
    redacted,
)

RETRY_STATUS = frozenset({408, 425, 429})

#: A header name: an RFC 9110 token.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A header value: visible ASCII characters, spaces or tabs between them (RFC 9110, as h11
#: checks it; httpx encodes values as ASCII), no newline or other control character.
HEADER_VALUE = re.compile(r"(?:[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?")
#: A bearer token: visible ASCII, no space (RFC 6750's b64token is stricter; any such token
#: fits in the header).
TOKEN = re.compile(r"[\x21-\x7e]+")
#: Headers the sink sets for each request: given with --header they would be silently replaced
#: (Idempotency-Key) or would break the request (the length, the host).
OWN_HEADERS = ("content-length", "transfer-encoding", "host", "idempotency-key")


class HttpSink(Sink):
    """Batches POSTed to a URL (module docstring)."""

    def __init__(self, url, options) -> None:
        super().__init__(url, options)
        self.shown = redacted(url)
        host_and_port(url, None)  # a host, and a port that is one (else the scheme's)
        try:
            httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise SinkSetupError(
                f"--sink {self.shown!r}: not a URL httpx can send to ({exc})"
            ) from None
        self.encoding = options.encoding or "json"
        if self.encoding not in ("json", "jsonl"):
            raise SinkSetupError(f"--encoding {self.encoding}: an HTTP sink takes json or jsonl")
        self.concurrency = options.concurrency
        self.headers = {
            "Content-Type": "application/json"
            if self.encoding == "json"
            else "application/x-ndjson",
        }
        for name, value in options.headers:
            self.headers[name] = value
        _check_headers(options.headers, bool(options.token_env))
        self._token = None
        if options.token_env:
            token = os.environ.get(options.token_env)
            if not token:
                raise SinkSetupError(
                    f"--token-env {options.token_env}: that environment variable is not set "
                    "(expected the bearer token in it)"
                )
            if not TOKEN.fullmatch(token):
                # Said without the token: a message goes to logs, and the token is a secret.
                raise SinkSetupError(
                    f"--token-env {options.token_env}: the token in it holds a character an "
                    "HTTP header cannot carry (a newline, a space, a control or non-ASCII "
                    "character); expected the bare token"
                )
            self._token = token
            self.headers["Authorization"] = f"Bearer {token}"
        self._check_request()
        self.timeout = httpx.Timeout(options.timeout_s)
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

    def _check_request(self) -> None:
        """The request line and headers as h11 (httpx's HTTP/1.1) will check them when the
        first batch goes: refused now, not as every batch's failure."""
        url = httpx.URL(self.url)  # the path and host as httpx sends them (percent-encoded)
        headers = [("Host", url.netloc), *self.headers.items(), ("Content-Length", "0")]
        try:
            h11.Request(method="POST", target=url.raw_path, headers=headers)
        except h11.LocalProtocolError as exc:
            raise SinkSetupError(
                f"--sink {self.shown!r}, --header: the request cannot be made: "
                f"{self._scrub(str(exc))}"
            ) from None

    def open(self, resume_state: dict | None) -> None:
        """Make sure something listens where the batches will go (module docstring)."""
        host, port = host_and_port(self.url, 443 if self.url.startswith("https:") else 80)
        where = f"{host}:{port}"
        proxy = _proxy_for(self.url, host)
        if proxy is not None:
            host, port = host_and_port(proxy, 443 if proxy.startswith("https:") else 80)
            where = f"the proxy {host}:{port} (from the environment) for {where}"
        timeout_s = self.timeout.connect
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
        except socket.gaierror as exc:
            raise SinkSetupError(
                f"--sink {self.shown}: cannot resolve the host {host} ({exc.strerror}); "
                "check the URL"
            ) from None
        except ConnectionRefusedError:
            raise SinkSetupError(
                f"--sink {self.shown}: nothing is listening at {where} (connection refused); "
                "start the receiver, or check the host and port"
            ) from None
        except TimeoutError:
            raise SinkSetupError(
                f"--sink {self.shown}: no connection to {where} within {timeout_s:g} s "
                "(--timeout); check the host, the port and the network"
            ) from None
        except OSError as exc:
            raise SinkSetupError(
                f"--sink {self.shown}: cannot connect to {where} ({exc.strerror or exc})"
            ) from None

    def _scrub(self, text: str) -> str:
        """``text`` without the token (an error message may quote the header it was in)."""
        return text.replace(self._token, "***") if self._token else text

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(timeout=self.timeout, headers=self.headers)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        if self.encoding == "json":
            body = encoder.json_array(batch.table)
        else:
            body = encoder.json_lines(batch.table)
        key = f"{_stream_of(batch)}:{batch.first_seq}-{batch.last_seq}"
        try:
            response = self._client().post(self.url, content=body, headers={"Idempotency-Key": key})
        except httpx.LocalProtocolError as exc:
            # The request cannot be made. What every request shares (the URL, the headers) was
            # checked when the sink was made (``_check_request``), so what is refused here is
            # this batch's own (its Idempotency-Key): trying again would fail alike, and the
            # other batches can still go, so the batch is dead-lettered and the stream goes on.
            raise PermanentError(f"the request cannot be made: {self._scrub(str(exc))}") from None
        except httpx.TransportError as exc:  # timeouts, refused and reset connections
            self._drop_client()
            raise TransientError(f"{type(exc).__name__}: {self._scrub(str(exc))}") from exc
        status = response.status_code
        if status in RETRY_STATUS or status >= 500:
            raise TransientError(f"HTTP {status}")
        if not 200 <= status < 300:
            raise PermanentError(f"HTTP {status}: {self._scrub(response.text[:200])}")
        return Outcome(_rejected(batch, response))

    def _drop_client(self) -> None:
        """After a transport error the connection may be half-used: start a fresh one."""
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
            client.close()

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def describe(self) -> str:
        return f"{self.shown} (POST {self.encoding}, {self.concurrency} in flight)"


def _check_headers(headers: tuple[tuple[str, str], ...], token: bool) -> None:
    """``--header`` names and values HTTP allows, none the sink sets itself (module
    docstring). A value is never quoted: it may be a credential."""
    for name, value in headers:
        if not HEADER_NAME.fullmatch(name):
            raise SinkSetupError(
                f"--header {name!r}: not a header name; expected letters, digits and "
                "!#$%&'*+-.^_`|~ only (no spaces)"
            )
        if not HEADER_VALUE.fullmatch(value):
            raise SinkSetupError(
                f"--header {name}: its value holds a newline, another control character or a "
                "non-ASCII character, or starts or ends with a space; expected printable ASCII"
            )
        if name.lower() in OWN_HEADERS:
            raise SinkSetupError(
                f"--header {name}: the sink sets that header itself (for each request)"
            )
        if token and name.lower() == "authorization":
            raise SinkSetupError(
                "--header Authorization and --token-env both set the Authorization header; "
                "give one of them"
            )


def _proxy_for(url: str, host: str) -> str | None:
    """The proxy URL httpx takes from the environment for ``url`` (HTTP_PROXY, HTTPS_PROXY,
    ALL_PROXY, less NO_PROXY), or None when it connects directly."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(urlsplit(url).scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _stream_of(batch: Batch) -> str:
    key = batch.table.column("idempotency_key")[0].as_py()
    return key.rsplit(":", 1)[0]


def _rejected(batch: Batch, response: httpx.Response) -> dict[int, str]:
    """Records the receiver refused, by stream position (an unknown key is a receiver error,
    reported as the batch's permanent failure)."""
    if not response.content or "json" not in response.headers.get("content-type", ""):
        return {}
    try:
        body = json.loads(response.content)
    except json.JSONDecodeError:
        return {}
    rejected = body.get("rejected") if isinstance(body, dict) else None
    if not rejected:
        return {}
    keys = batch.table.column("idempotency_key").to_pylist()
    position = {k: batch.first_seq + i for i, k in enumerate(keys)}
    out = {}
    for item in rejected:
        key = item.get("idempotency_key") if isinstance(item, dict) else None
        if key not in position:
            raise PermanentError(f"the receiver rejected a record not in the batch: {item!r}")
        out[position[key]] = str(item.get("reason", "rejected by the receiver"))
    return out
