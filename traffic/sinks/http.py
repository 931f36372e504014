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
- any other status: permanent, the whole batch is dead-lettered with the status and body.

``--concurrency N`` batches are in flight at once, each thread with its own connection.
"""

from __future__ import annotations

import json
import os
import threading

import httpx

from traffic.encoding import Encoder
from traffic.sinks import Batch, Outcome, PermanentError, Sink, SinkSetupError, TransientError

RETRY_STATUS = frozenset({408, 425, 429})


class HttpSink(Sink):
    """Batches POSTed to a URL (module docstring)."""

    def __init__(self, url, options) -> None:
        super().__init__(url, options)
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
        if options.token_env:
            token = os.environ.get(options.token_env)
            if not token:
                raise SinkSetupError(
                    f"--token-env {options.token_env}: that environment variable is not set "
                    "(expected the bearer token in it)"
                )
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = httpx.Timeout(options.timeout_s)
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()

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
        except httpx.TransportError as exc:  # timeouts, refused and reset connections
            self._drop_client()
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status in RETRY_STATUS or status >= 500:
            raise TransientError(f"HTTP {status}")
        if not 200 <= status < 300:
            raise PermanentError(f"HTTP {status}: {response.text[:200]}")
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
        return f"{self.url} (POST {self.encoding}, {self.concurrency} in flight)"


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
