"""Locust with CardTwin traffic (loadtest/locustfile.py): a real headless Locust run against the
reference receiver on loopback sends the simulated day's tap records, each once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sim.api import load_scenario, privacy_key
from traffic.receiver import serve
from traffic.stream import StreamSettings, stream

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"


def test_locust_users_send_the_simulated_days_taps(tmp_path):
    expected = tmp_path / "taps.jsonl"
    assert stream(
        load_scenario(SMALL, days=1),
        StreamSettings(sink=f"file://{expected}", state_dir=tmp_path / "state"),
        privacy_key=privacy_key(None),
    ).reconciled
    server, store = serve()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        env = {**os.environ, "CARDTWIN_SCENARIO": str(SMALL), "CARDTWIN_SPEED": "20000"}
        done = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
             "--host", host, "--headless", "-u", "4", "-r", "4", "-t", "10s", "--only-summary",
             "--stop-timeout", "5"],
            capture_output=True, text=True, env=env, timeout=180,
        )  # fmt: skip
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "/taps (100 taps)" in done.stderr
    sent = {r["idempotency_key"]: r for r in map(json.loads, expected.read_bytes().splitlines())}
    got = {k: json.loads(v) for k, v in store.records.items()}
    # The same records as the stream command sends, each once (Locust users share one feed).
    assert got == sent
    assert store.counts["duplicate_keys"] == 0
