"""Stream sinks against real servers on loopback: Redis, PostgreSQL, Mosquitto (traffic/servers.py
starts each in a temporary folder and stops it). Records arrive, once each, and reconcile."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
import redis

from sim.api import load_scenario, privacy_key
from traffic.servers import mosquitto_server, postgres_server, redis_server
from traffic.sinks import SinkOptions
from traffic.stream import StreamSettings, stream

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
CLI = [sys.executable, str(ROOT / "run_scenario.py"), "stream", str(SMALL), "--days", "2"]


def _stream(tmp_path, sink, record_format="taps", **options):
    return stream(
        load_scenario(SMALL, days=2),
        StreamSettings(
            sink=sink,
            state_dir=tmp_path / "state",
            record_format=record_format,
            batch_size=200,
            sink_options=SinkOptions(record_format=record_format, **options),
        ),
        privacy_key=privacy_key(None),
    )


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The stream's records, from a file sink: idempotency key -> record."""
    tmp = tmp_path_factory.mktemp("file")
    path = tmp / "taps.jsonl"
    assert _stream(tmp, f"file://{path}").reconciled
    return {r["idempotency_key"]: r for r in map(json.loads, path.read_bytes().splitlines())}


def test_redis_streams_get_every_record_once(tmp_path, expected):
    with redis_server() as url:
        report = _stream(tmp_path, f"{url}?key=cardtwin:test")
        entries = redis.Redis.from_url(url).xrange("cardtwin:test")
    assert report.reconciled
    got = {f[b"key"].decode(): json.loads(f[b"record"]) for _, f in entries}
    assert len(entries) == len(got) == len(expected)
    assert got == expected
    # In stream order.
    assert [int(f[b"key"].decode().rsplit(":", 1)[1]) for _, f in entries] == list(
        range(len(entries))
    )


def test_a_killed_redis_stream_resumes_exactly_once(tmp_path, expected):
    with redis_server() as url:
        sink = f"{url}?key=k"
        state = tmp_path / "state"
        cmd = [*CLI, "--sink", sink, "--state", str(state), "--batch-size", "20"]
        proc = subprocess.Popen([*cmd, "--rate", "500"], stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 60
        while client.xlen("k") < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        before = client.xlen("k")
        done = subprocess.run([*cmd, "--resume", "--quiet"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        keys = [f[b"key"].decode() for _, f in client.xrange("k")]
    assert 300 <= before < len(expected)
    assert keys == sorted(expected, key=lambda k: int(k.rsplit(":", 1)[1]))


def test_postgres_copy_keeps_every_record_once(tmp_path, expected):
    with postgres_server() as url:
        report = _stream(tmp_path, f"{url}?table=taps_under_test", concurrency=2)
        # The same stream again (a resend of every batch): nothing is counted twice.
        again = _stream(tmp_path / "again", f"{url}?table=taps_under_test", concurrency=2)
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT idempotency_key, amount_fen, event_timestamp, fare_capped, incident_id "
                "FROM taps_under_test"
            ).fetchall()
            (total,) = conn.execute("SELECT sum(amount_fen) FROM taps_under_test").fetchone()
    assert report.reconciled and again.reconciled
    assert len(rows) == len(expected)
    assert {r[0] for r in rows} == set(expected)
    assert total == sum(r["amount_fen"] for r in expected.values())
    key, amount, stamp, capped, incident = rows[0]
    record = expected[key]
    assert (amount, str(stamp), capped, incident) == (
        record["amount_fen"],
        record["event_timestamp"],
        record["fare_capped"],
        record["incident_id"],
    )


def test_a_postgres_table_of_other_columns_is_refused(tmp_path):
    with postgres_server() as url:
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE taps_other (id int)")
        done = subprocess.run(
            [*CLI, "--sink", f"{url}?table=taps_other", "--state", str(tmp_path)],
            capture_output=True,
            text=True,
        )
    assert done.returncode == 2
    assert "table taps_other exists with other columns" in done.stderr


def _published(tmp_path, path: str, n: int, record_format="taps"):
    """Stream to a throwaway broker at ``path``; the (topic, records) messages received."""
    with mosquitto_server() as url:
        host, port = url.removeprefix("mqtt://").split(":")
        received: list[tuple[str, list]] = []
        subscribed = threading.Event()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_message = lambda c, u, m: received.append((m.topic, json.loads(m.payload)))
        sub.connect(host, int(port))
        sub.subscribe(f"{path.split('?')[0]}/#", qos=1)
        sub.loop_start()
        assert subscribed.wait(10)
        report = _stream(tmp_path, f"{url}/{path}", record_format)
        deadline = time.monotonic() + 10
        while sum(len(r) for _, r in received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        sub.loop_stop()
        sub.disconnect()
    assert report.reconciled
    return received


def test_mqtt_publishes_each_devices_records_on_its_topic(tmp_path, expected):
    received = _published(tmp_path, "fleet?per=device", len(expected))
    records = [r for _, batch in received for r in batch]
    assert len(records) == len(expected)
    assert {r["idempotency_key"] for r in records} == set(expected)
    assert all(topic == f"fleet/{r['device_id']}" for topic, batch in received for r in batch)


def test_mqtt_topups_without_an_outlet_go_to_the_none_topic(tmp_path):
    path = tmp_path / "topups.jsonl"
    assert _stream(tmp_path / "file", f"file://{path}", "topups").reconciled
    topups = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert any(t["outlet_id"] is None for t in topups)  # online top-ups: no outlet
    received = _published(tmp_path, "shops", len(topups), "topups")  # per outlet by default
    assert sorted(r["idempotency_key"] for _, b in received for r in b) == sorted(
        t["idempotency_key"] for t in topups
    )
    assert all(topic == f"shops/{r['outlet_id'] or 'none'}" for topic, b in received for r in b)


def test_an_unreachable_server_is_bad_input(tmp_path):
    from traffic.servers import free_port

    port = free_port()
    for sink in (f"redis://127.0.0.1:{port}/0", f"postgresql://x@127.0.0.1:{port}/db"):
        done = subprocess.run(
            [*CLI, "--sink", sink, "--state", str(tmp_path), "--timeout", "2"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2, done.stderr
        assert sink.split("//")[0] in done.stderr and "Traceback" not in done.stderr
