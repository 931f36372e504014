"""Locust with CardTwin traffic (loadtest/locustfile.py): a real headless Locust run against the
reference receiver on loopback sends the simulated day's tap records, each once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sim.api import load_scenario, privacy_key
from traffic.receiver import serve
from traffic.servers import free_port
from traffic.stream import StreamSettings, stream

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"


#: What the locustfile says when the feed is sent and it ends the test itself.
ENDED = "CardTwin: every batch of the feed sent and answered; ending the test"


def _command(host: str, *flags: str) -> list[str]:
    """Locust on the locustfile: 4 users; ``-t`` only a ceiling (the test ends when the feed is
    sent)."""
    return [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
            "--host", host, "-u", "4", "-r", "4", "-t", "120s", "--stop-timeout", "5",
            *flags]  # fmt: skip


def _locust(host: str, env: dict, *flags: str) -> subprocess.CompletedProcess:
    """A headless Locust run, to its end."""
    return subprocess.run(
        _command(host, "--headless", "--only-summary", *flags),
        capture_output=True, text=True, env={**os.environ, **env}, timeout=180,
    )  # fmt: skip


@pytest.mark.parametrize("source", ["scenario", "recording", "two worker processes"])
def test_locust_users_send_the_simulated_days_taps(tmp_path, source):
    expected = tmp_path / "taps.jsonl"
    for sink in (f"file://{expected}", f"file://{tmp_path / 'taps.parquet'}"):
        assert stream(
            load_scenario(SMALL, days=1),
            StreamSettings(sink=sink, state_dir=tmp_path / "state"),
            privacy_key=privacy_key(None),
        ).reconciled
    env = {"CARDTWIN_SPEED": "20000", "CARDTWIN_SCENARIO": str(SMALL)}
    if source == "recording":  # nothing simulated: the recorded stream's records
        env = {"CARDTWIN_SPEED": "20000", "CARDTWIN_RECORDING": str(tmp_path / "taps.parquet")}
    # Distributed: each worker process builds the feed and sends its share of it.
    # On a free port of its own: Locust's default (5557) may be held by another Locust on the
    # machine, whose workers would then join this test with feeds of their own.
    flags = []
    if source == "two worker processes":
        port = str(free_port())
        flags = ["--processes", "2", "--master-bind-port", port, "--master-port", port]
    server, store = serve()
    try:
        done = _locust(f"http://127.0.0.1:{server.server_address[1]}", env, *flags)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr[-2000:]
    # The test ended itself once every batch was answered, long before -t 120s; the workers
    # were never dropped for missing heartbeats (they simulate before they connect), and
    # nothing frozen before the fork is reported leaked as they end.
    assert ENDED in done.stderr
    assert "--run-time limit reached" not in done.stderr
    assert "missing" not in done.stderr and "self-healed" not in done.stderr
    assert "leaked" not in done.stderr
    assert "/taps (100 taps)" in done.stderr
    sent = {r["idempotency_key"]: r for r in map(json.loads, expected.read_bytes().splitlines())}
    got = {k: json.loads(v) for k, v in store.records.items()}
    # The same records as the stream command sends, each once (Locust users share one feed,
    # worker processes a share each).
    assert got == sent
    assert store.counts["duplicate_keys"] == 0
    assert store.counts["records_received"] == len(sent)


def test_with_the_web_ui_the_test_stops_once_the_feed_is_sent_and_the_ui_stays_up(tmp_path):
    expected = tmp_path / "taps.jsonl"
    assert stream(
        load_scenario(SMALL, days=1),
        StreamSettings(sink=f"file://{expected}", state_dir=tmp_path / "state"),
        privacy_key=privacy_key(None),
    ).reconciled
    sent = {json.loads(r)["idempotency_key"] for r in expected.read_bytes().splitlines()}
    web = free_port()
    server, store = serve()
    locust = subprocess.Popen(
        _command(f"http://127.0.0.1:{server.server_address[1]}", "--autostart",
                 "--web-host", "127.0.0.1", "--web-port", str(web)),
        env={**os.environ, "CARDTWIN_SPEED": "20000", "CARDTWIN_SCENARIO": str(SMALL)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        started, state = time.monotonic(), None
        while time.monotonic() - started < 90:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/stats/requests") as answer:
                    state = json.load(answer)["state"]
            except OSError:  # the UI is not up yet
                state = None
            if state == "stopped":
                break
            time.sleep(0.5)
        # Stopped by the locustfile once every batch was answered, well before -t 120s; the UI
        # is still there to read the figures.
        assert state == "stopped"
        assert time.monotonic() - started < 90
        assert set(store.records) == sent  # the whole feed, each record once
        assert store.counts["records_received"] == len(sent)
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/stats/requests") as answer:
            assert json.load(answer)["state"] == "stopped"
    finally:
        locust.terminate()
        _, err = locust.communicate(timeout=60)
        server.shutdown()
        server.server_close()
    assert ENDED in err
    assert "--run-time limit reached" not in err


def test_locust_with_a_file_that_is_not_a_recording_says_so(tmp_path):
    bad = tmp_path / "taps.parquet"
    bad.write_text("not parquet")
    done = _locust("http://127.0.0.1:9", {"CARDTWIN_RECORDING": str(bad)})
    assert done.returncode == 2
    assert f"error: {bad}: not a readable Parquet file" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CARDTWIN_DAYS", "abc", "CARDTWIN_DAYS='abc': expected a whole number of days > 0"),
        ("CARDTWIN_DAYS", "0", "CARDTWIN_DAYS='0': expected a whole number of days > 0"),
        ("CARDTWIN_BATCH", "x", "CARDTWIN_BATCH='x': expected a whole number of records > 0"),
        ("CARDTWIN_BATCH", "0", "CARDTWIN_BATCH='0': expected a whole number of records > 0"),
        ("CARDTWIN_SPEED", "fast", "CARDTWIN_SPEED='fast': expected a number > 0"),
        ("CARDTWIN_SPEED", "0", "CARDTWIN_SPEED='0': expected a number > 0"),
        ("CARDTWIN_SPEED", "-5", "CARDTWIN_SPEED='-5': expected a number > 0"),
        ("CARDTWIN_SPEED", "inf", "CARDTWIN_SPEED='inf': expected a number > 0"),
        ("CARDTWIN_PATH", "taps", "CARDTWIN_PATH='taps': expected a path starting with /"),
    ],
)
def test_a_bad_setting_names_the_variable_and_what_it_expects(name, value, expected):
    done = _locust("http://127.0.0.1:9", {name: value})
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: {expected}" in done.stderr
    assert "Traceback" not in done.stderr
