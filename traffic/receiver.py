"""A reference HTTP receiver for streams, with faults to order: what the tests and the benches
stream into, and a starting point for a team's own.

    python -m traffic.receiver [--port 0] [--fail-rate 0.1] [--timeout-rate 0.02]
        [--reset-rate 0.02] [--slow-rate 0.05] [--seed 1]

It prints ``listening on http://127.0.0.1:PORT`` as its first line, then takes POSTed batches
(a JSON array, or JSON lines) on any path. Each record is kept once per idempotency key: a
record sent again (after a timeout the sender could not tell from a loss) is acknowledged but
not counted again. ``GET /stats`` answers with the counts, ``GET /records`` with every record
kept, in arrival order, as JSON lines.

Faults, each drawn per request from the seeded generator (so a test run is repeatable):
- ``--fail-rate``: answers 500 or 503 without keeping anything;
- ``--timeout-rate``: keeps the batch, then waits ``--hang`` seconds before answering (the
  sender times out and sends it again: the duplicate keys are what idempotency is for);
- ``--reset-rate``: closes the connection without an answer, keeping nothing;
- ``--slow-rate``: answers after ``--slow`` seconds;
- ``--refuse-rate``: answers 422 (the batch is refused for good: the sender dead-letters it).
Records without an ``idempotency_key`` are refused one by one (``rejected`` in the answer).

Two behaviours a system under test may have, for the ``score`` command to tell apart:
- ``--dedup device-serial``: a record whose (device_id, device_serial) was kept before is
  acknowledged but dropped (a resent copy of a tap); by default the receiver is naive and keeps
  every new key;
- ``--validate``: records with a negative amount, no device id or no timestamp are refused.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Store:
    """What the receiver kept, and its own counts. Thread-safe."""

    def __init__(
        self,
        seed: int,
        rates: dict[str, float],
        hang_s: float,
        slow_s: float,
        dedup: bool = False,
        validate: bool = False,
    ):
        self.lock = threading.Lock()
        self.dedup = dedup
        self.validate = validate
        self.taps_seen: set[tuple] = set()
        self.last_headers: dict[str, str] = {}  # of the last POST (what the tests check)
        self.rng = random.Random(f"receiver:{seed}")
        self.rates = rates
        self.hang_s = hang_s
        self.slow_s = slow_s
        self.records: dict[str, bytes] = {}  # idempotency key -> the record, first arrival
        self.counts = {
            "requests": 0,
            "records_received": 0,
            "records_kept": 0,
            "duplicate_keys": 0,
            "rejected": 0,
            "fail": 0,
            "timeout": 0,
            "reset": 0,
            "slow": 0,
            "refuse": 0,
            "copies_dropped": 0,
        }

    def fault(self) -> str | None:
        """The fault for this request, if any (one draw per kind, in a fixed order)."""
        with self.lock:
            self.counts["requests"] += 1
            for kind in ("fail", "timeout", "reset", "slow", "refuse"):
                if self.rng.random() < self.rates.get(kind, 0.0):
                    self.counts[kind] += 1
                    return kind
        return None

    def keep(self, records: list[dict], raw: list[bytes]) -> list[dict]:
        """Keep new records once per key; returns the refused ones with their reasons."""
        rejected = []
        with self.lock:
            for record, text in zip(records, raw, strict=True):
                self.counts["records_received"] += 1
                key = record.get("idempotency_key") if isinstance(record, dict) else None
                if not isinstance(key, str) or not key:
                    self.counts["rejected"] += 1
                    rejected.append({"idempotency_key": key, "reason": "no idempotency_key"})
                    continue
                if key in self.records:
                    self.counts["duplicate_keys"] += 1
                    continue
                problem = _invalid(record) if self.validate else None
                if problem:
                    self.counts["rejected"] += 1
                    rejected.append({"idempotency_key": key, "reason": problem})
                    continue
                tap = (record.get("device_id"), record.get("device_serial"))
                if self.dedup and tap in self.taps_seen:
                    self.counts["copies_dropped"] += 1
                    self.records[key] = None  # acknowledged, not kept
                    continue
                self.taps_seen.add(tap)
                self.records[key] = text
                self.counts["records_kept"] += 1
        return rejected


def _invalid(record: dict) -> str | None:
    """Why a tap record is malformed, if it is (what ``--validate`` refuses)."""
    amount = record.get("amount_fen")
    if isinstance(amount, int) and amount < 0:
        return "negative amount_fen"
    if "device_id" in record and record["device_id"] is None:
        return "no device_id"
    if "event_timestamp" in record and record["event_timestamp"] is None:
        return "no event_timestamp"
    return None


def _parse(body: bytes, content_type: str) -> tuple[list, list[bytes]]:
    """The batch's records and each one's JSON text."""
    if "ndjson" in content_type or "jsonl" in content_type:
        lines = [line for line in body.split(b"\n") if line.strip()]
        return [json.loads(line) for line in lines], lines
    records = json.loads(body)
    if not isinstance(records, list):
        raise ValueError("expected a JSON array of records")
    return records, [json.dumps(r, ensure_ascii=False).encode() for r in records]


def make_handler(store: Store):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

        def _answer(self, status: int, body: dict | bytes, content_type="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path.startswith("/stats"):
                with store.lock:
                    body = {**store.counts, "unique_keys": len(store.records)}
                self._answer(200, body)
            elif self.path.startswith("/records"):
                with store.lock:
                    kept = [text for text in store.records.values() if text is not None]
                    data = b"".join(text + b"\n" for text in kept)
                self._answer(200, data, "application/x-ndjson")
            else:
                self._answer(404, {"error": "GET /stats or /records"})

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            with store.lock:
                store.last_headers = dict(self.headers.items())
            fault = store.fault()
            if fault == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.close_connection = True
                self.connection.close()  # with SO_LINGER 0: a reset, not a clean close
                return
            if fault == "fail":
                self._answer(503 if store.rng.random() < 0.5 else 500, {"error": "injected"})
                return
            if fault == "refuse":
                self._answer(422, {"error": "injected: batch refused"})
                return
            try:
                records, raw = _parse(body, self.headers.get("Content-Type", ""))
            except (ValueError, json.JSONDecodeError) as exc:
                self._answer(400, {"error": f"not a batch of JSON records: {exc}"})
                return
            rejected = store.keep(records, raw)
            if fault == "timeout":
                time.sleep(store.hang_s)
            elif fault == "slow":
                time.sleep(store.slow_s)
            self._answer(200, {"kept": len(records) - len(rejected), "rejected": rejected})

    return Handler


def serve(
    port: int = 0,
    *,
    seed: int = 1,
    fail_rate: float = 0.0,
    timeout_rate: float = 0.0,
    reset_rate: float = 0.0,
    slow_rate: float = 0.0,
    refuse_rate: float = 0.0,
    hang_s: float = 2.0,
    slow_s: float = 0.2,
    dedup: bool = False,
    validate: bool = False,
) -> tuple[ThreadingHTTPServer, Store]:
    """A started receiver on 127.0.0.1 (in a thread) and its store."""
    rates = {
        "fail": fail_rate,
        "timeout": timeout_rate,
        "reset": reset_rate,
        "slow": slow_rate,
        "refuse": refuse_rate,
    }
    store = Store(seed, rates, hang_s, slow_s, dedup=dedup, validate=validate)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(store))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
    return server, store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    parser.add_argument("--reset-rate", type=float, default=0.0)
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--refuse-rate", type=float, default=0.0)
    parser.add_argument("--hang", type=float, default=2.0, help="seconds a 'timeout' waits")
    parser.add_argument("--slow", type=float, default=0.2, help="seconds a slow answer waits")
    parser.add_argument(
        "--dedup", choices=["device-serial"], help="drop resent copies of a tap (default: keep)"
    )
    parser.add_argument("--validate", action="store_true", help="refuse malformed records")
    args = parser.parse_args(argv)
    server, _ = serve(
        args.port,
        seed=args.seed,
        fail_rate=args.fail_rate,
        timeout_rate=args.timeout_rate,
        reset_rate=args.reset_rate,
        slow_rate=args.slow_rate,
        refuse_rate=args.refuse_rate,
        hang_s=args.hang,
        slow_s=args.slow,
        dedup=args.dedup is not None,
        validate=args.validate,
    )
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
