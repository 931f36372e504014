"""Locust with CardTwin traffic (loadtest/locustfile.py): a real headless Locust run against the
reference receiver on loopback sends the simulated day's tap records, each once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
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


def _ui_stats(web: int) -> dict | None:
    """The web UI's /stats/requests (None while the UI is not up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/stats/requests") as answer:
            return json.load(answer)
    except OSError:
        return None


def _stopped(web: int) -> dict | None:
    """The UI's stats once it says its test stopped."""
    stats = _ui_stats(web)
    return stats if stats and stats["state"] == "stopped" else None


def _until(what: str, found, within_s: float = 90):
    """Poll ``found()`` until it returns something true; that (else the test fails: ``-t``
    is 120 s, so a test that does not end by itself fails here)."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if value := found():
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {within_s} s waiting for {what}")


class _Log:
    """What a process writes to ``stream``, read as it comes (by a thread of its own)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def ended(self) -> str:
        """Everything, once the process has closed its end."""
        self._thread.join(60)
        return self.text()


def _taps_posted(stats: dict) -> tuple[int, int]:
    """The batches a test's users posted and of them those that failed, by the UI's stats."""
    (taps,) = [row for row in stats["stats"] if row["name"] == "/taps (100 taps)"]
    return taps["num_requests"], taps["num_failures"]


def _workers_ready(web: int, workers: int) -> None:
    """Wait until the UI lists ``workers`` workers, every one ready for a test: Locust's
    workers are ready again only ``--stop-timeout`` after a test stopped, and until then the
    master starts no test (nor can it tell them to quit)."""
    _until(
        f"{workers} workers ready",
        lambda: (
            [w["state"] for w in (_ui_stats(web) or {}).get("workers", [])] == ["ready"] * workers
        ),
    )


@pytest.mark.parametrize("processes", [1, 2])
def test_with_the_web_ui_the_test_stops_once_the_feed_is_sent_and_the_ui_stays_up(
    tmp_path, processes
):
    """The first test (``--autostart``) sends the feed and stops itself, the UI staying up; a
    second test started through the UI's own HTTP API (``/swarm``, what "New test" posts)
    sends the whole feed again and stops itself too. (It used to send nothing and run until
    stopped by hand: the feed and the "sent" mark stayed used up from the first test.) In one
    process, and distributed: two workers, each dealt its share again for the second test."""
    expected = tmp_path / "taps.jsonl"
    assert stream(
        load_scenario(SMALL, days=1),
        StreamSettings(sink=f"file://{expected}", state_dir=tmp_path / "state"),
        privacy_key=privacy_key(None),
    ).reconciled
    sent = {json.loads(r)["idempotency_key"] for r in expected.read_bytes().splitlines()}
    batches = -(-len(sent) // 100)
    web = free_port()
    flags = []
    if processes > 1:  # on a free port of its own (see above)
        port = str(free_port())
        flags = ["--processes", str(processes), "--master-bind-port", port, "--master-port", port]
    server, store = serve()
    locust = subprocess.Popen(
        _command(f"http://127.0.0.1:{server.server_address[1]}", "--autostart",
                 "--web-host", "127.0.0.1", "--web-port", str(web), *flags),
        env={**os.environ, "CARDTWIN_SPEED": "20000", "CARDTWIN_SCENARIO": str(SMALL)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its worker processes too, for the cleanup below
    )  # fmt: skip
    log = _Log(locust.stderr)
    try:
        for test in (1, 2):
            if test == 2:
                if processes > 1:
                    _workers_ready(web, processes)
                # A new test from the UI: the whole feed again (the same keys: the receiver
                # keeps each record once), and it ends by itself.
                form = urllib.parse.urlencode({"user_count": 4, "spawn_rate": 4}).encode()
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/swarm", data=form) as answer:
                    assert json.load(answer)["success"] is True
            # Stopped by the locustfile once every batch was answered, well before -t 120s;
            # the UI is still there to read the figures.
            _until(f"test {test} to end by itself", lambda n=test: log.text().count(ENDED) == n)
            stats = _until("the UI to say stopped", lambda: _stopped(web))
            assert store.counts["records_received"] == test * len(sent)
            assert store.counts["duplicate_keys"] == (test - 1) * len(sent)
            assert set(store.records) == sent  # the whole feed, each record once a test
            if processes == 1:  # (a master's figures lag its workers' reports)
                # The test's own figures (Locust clears them as a test starts): every batch.
                assert _taps_posted(stats) == (batches, 0)
        if processes > 1:
            _workers_ready(web, processes)  # so that they hear the master quit
    finally:
        locust.terminate()
        try:
            locust.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(locust.pid, signal.SIGKILL)  # its session: the workers it started
            locust.wait()
        server.shutdown()
        server.server_close()
    err = log.ended()
    assert err.count(ENDED) == 2  # each test ended by itself, once
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
