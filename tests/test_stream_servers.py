"""Stream sinks against real servers on loopback: Redis, PostgreSQL, Mosquitto (traffic/servers.py
starts each in a temporary folder and stops it). Records arrive, once each, and reconcile."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
import pytest
import redis
from stream_helpers import FlakyRedisProxy, port_taking_no_connection, small_stream

from traffic.servers import mosquitto_server, postgres_server, redis_server
from traffic.sinks import SinkOptions, SinkSetupError, open_sink
from traffic.stream import StreamSetupError

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
CLI = [sys.executable, str(ROOT / "run_scenario.py"), "stream", str(SMALL), "--days", "2"]


def _keys(url, key) -> list[str]:
    """The idempotency keys in a Redis stream, in stream order."""
    return [f[b"key"].decode() for _, f in redis.Redis.from_url(url).xrange(key)]


def _in_order(keys) -> list[str]:
    return sorted(keys, key=lambda k: int(k.rsplit(":", 1)[1]))


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The stream's records, from a file sink: idempotency key -> record."""
    tmp = tmp_path_factory.mktemp("file")
    path = tmp / "taps.jsonl"
    assert small_stream(tmp, f"file://{path}").reconciled
    return {r["idempotency_key"]: r for r in map(json.loads, path.read_bytes().splitlines())}


def test_redis_streams_get_every_record_once(tmp_path, expected):
    with redis_server() as url:
        report = small_stream(tmp_path, f"{url}?key=cardtwin:test")
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


def test_resuming_a_stream_into_a_shared_key_writes_exactly_its_own_records(tmp_path, expected):
    """The default key is shared by every scenario and seed: a resumed stream must not take
    another stream's entries for its own (it once skipped every position below the last
    entry's, whoever wrote it, and counted them acknowledged)."""
    with redis_server() as url:
        assert small_stream(tmp_path / "a", url).reconciled  # stream A, whole, into cardtwin:taps
        # Stream B (another seed) stops before anything is acknowledged, then resumes.
        stopped = threading.Event()
        stopped.set()
        first = small_stream(tmp_path / "b", url, seed=7, stop=stopped)
        assert not first.finished and first.totals["acknowledged"] == 0
        resumed = small_stream(tmp_path / "b", url, seed=7, resume=True)
        keys = _keys(url, "cardtwin:taps")
    assert resumed.reconciled
    b_keys = [k for k in keys if k.startswith(resumed.stream_id + ":")]
    assert len(b_keys) == len(set(b_keys)) == resumed.totals["generated"]
    assert b_keys == _in_order(b_keys)
    assert [k for k in keys if k not in set(b_keys)] == _in_order(expected)  # A untouched


def test_a_killed_stream_resumes_exactly_once_after_another_wrote_to_its_key(tmp_path, expected):
    """Killed mid-stream (entries after its checkpoint), then another stream writes to the
    same key, then the first resumes: its records are each there once, in order."""
    with redis_server() as url:
        state = tmp_path / "state"
        cmd = [*CLI, "--sink", url, "--state", str(state), "--batch-size", "20", "--seed", "7"]
        proc = subprocess.Popen([*cmd, "--rate", "500"], stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 60
        while client.xlen("cardtwin:taps") < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        assert small_stream(tmp_path / "other", url).reconciled  # seed of the scenario: another id
        done = subprocess.run([*cmd, "--resume", "--quiet"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        report = json.loads((state / "report.json").read_text())
        keys = _keys(url, "cardtwin:taps")
    mine = [k for k in keys if k.startswith(report["stream_id"] + ":")]
    assert report["resumed_from"] > 0 and report["reconciled"]
    assert mine == _in_order(set(mine)) and len(mine) == report["totals"]["generated"]
    assert sorted(k for k in keys if k not in set(mine)) == sorted(expected)


def test_a_redis_resume_without_its_progress_key_is_refused(tmp_path):
    with redis_server() as url:
        stopped = threading.Event()
        stopped.set()
        small_stream(tmp_path, url, stop=stopped)
        redis.Redis.from_url(url).delete(*redis.Redis.from_url(url).keys("*:progress:*"))
        with pytest.raises(Exception, match="no progress key .* start the stream again"):
            small_stream(tmp_path, url, resume=True)


def test_a_redis_key_of_another_type_is_refused(tmp_path):
    with redis_server() as url:
        redis.Redis.from_url(url).set("k", "not a stream")
        with pytest.raises(StreamSetupError, match="key k holds a string, not a stream"):
            small_stream(tmp_path, f"{url}?key=k")


def test_a_redis_progress_key_lost_mid_stream_stops_thesmall_stream(tmp_path):
    """Deleted (or evicted) while the stream runs, the progress key can no longer say what is
    in the stream: the stream stops (exit 5, checkpointed) rather than risk duplicates."""
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        cmd = [*CLI, "--sink", f"{url}?key=k", "--state", str(tmp_path), "--batch-size", "20"]
        proc = subprocess.Popen(
            [*cmd, "--rate", "500", "--quiet"], stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while client.xlen("k") < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        client.delete(*client.keys("k:progress:*"))
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 5, stderr
    assert "the sink broke down: the progress key k:progress:" in stderr
    assert "disappeared" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("refuse", [0, 2])
def test_redis_batches_tried_again_are_in_the_stream_once(tmp_path, expected, refuse):
    """A batch whose EXEC ran but whose answer was lost is not written again when tried
    again; reconnections refused meanwhile are retried like any lost connection."""
    with redis_server() as url:
        proxy = FlakyRedisProxy(int(urlsplit(url).port), refuse)
        try:
            report = small_stream(tmp_path, f"redis://127.0.0.1:{proxy.port}/0?key=k", timeout_s=2)
        finally:
            proxy.close()
        keys = _keys(url, "k")
    assert report.reconciled, report.totals
    assert proxy.dropped == 1 and proxy.executed and proxy.refused == refuse
    assert report.totals["retries"] >= 1 + refuse
    assert keys == _in_order(expected)


def test_postgres_copy_keeps_every_record_once(tmp_path, expected):
    with postgres_server() as url:
        report = small_stream(tmp_path, f"{url}?table=taps_under_test", concurrency=2)
        # The same stream again (a resend of every batch): nothing is counted twice.
        again = small_stream(tmp_path / "again", f"{url}?table=taps_under_test", concurrency=2)
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT idempotency_key, amount_fen, event_timestamp, fare_capped, incident_id "
                "FROM taps_under_test"
            ).fetchall()
            (total,) = conn.execute("SELECT sum(amount_fen) FROM taps_under_test").fetchone()
            dates = dict(conn.execute("SELECT idempotency_key, service_date FROM taps_under_test"))
            (date_type,) = conn.execute(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'taps_under_test' AND column_name = 'service_date'"
            ).fetchone()
    assert report.reconciled and again.reconciled
    assert date_type == "date"
    assert {k: str(d) for k, d in dates.items()} == {
        k: r["service_date"] for k, r in expected.items()
    }
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
        report = small_stream(tmp_path, f"{url}/{path}", record_format)
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
    assert small_stream(tmp_path / "file", f"file://{path}", "topups").reconciled
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


@pytest.mark.parametrize("timeout_s", [1, 5.5])
def test_connecting_to_redis_follows_the_timeout(timeout_s):
    """A Redis server that takes no connection: the sink gives up connecting after --timeout
    (it waited a fixed 5 s, shorter or longer, whatever --timeout said) and says so, naming
    the flag, when it opens (bad input: the stream does not start)."""
    with port_taking_no_connection() as port:
        url = f"redis://127.0.0.1:{port}/0"
        sink = open_sink(url, SinkOptions(timeout_s=timeout_s))
        started = time.monotonic()
        try:
            with pytest.raises(SinkSetupError) as refused:
                sink.open(None)
        finally:
            sink.close()
        took = time.monotonic() - started
    assert timeout_s <= took < timeout_s + 1.5
    assert str(refused.value) == (
        f"--sink {url}: no answer within --timeout {timeout_s:g} s (Timeout connecting to "
        "server); check the host, the port and the network, or give a larger --timeout"
    )


def test_mqtt_logs_in_with_the_urls_user_and_a_refusal_is_bad_input(tmp_path, expected):
    """A broker that takes only known users: the URL's user and password log in; without
    them, or with a wrong password, the broker's refusal stops the stream before it starts
    (it used to count as connected, then dead-letter every record)."""
    with mosquitto_server({"feeder": "p@ss word"}) as url:
        broker = urlsplit(url)
        for bad in (
            f"mqtt://{broker.netloc}/fleet",
            f"mqtt://feeder:wrong-secret@{broker.netloc}/x",
        ):
            done = subprocess.run(
                [*CLI, "--sink", bad, "--state", str(tmp_path / "bad"), "--timeout", "2",
                 "--max-attempts", "1"],
                capture_output=True, text=True,
            )  # fmt: skip
            assert done.returncode == 2, done.stderr
            assert "the broker refused the connection: Not authorized" in done.stderr
            assert "wrong-secret" not in done.stderr and "Traceback" not in done.stderr
        received: list = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.username_pw_set("feeder", "p@ss word")
        subscribed = threading.Event()
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_message = lambda c, u, m: received.extend(json.loads(m.payload))
        sub.connect(broker.hostname, broker.port)
        sub.subscribe("fleet/#", qos=1)
        sub.loop_start()
        assert subscribed.wait(10)
        report = small_stream(
            tmp_path / "good", f"mqtt://feeder:p%40ss%20word@{broker.netloc}/fleet"
        )
        deadline = time.monotonic() + 10
        while len(received) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.05)
        sub.loop_stop()
    assert report.reconciled and report.totals["acknowledged"] == len(expected)
    assert "p@ss" not in report.sink
    assert sorted(r["idempotency_key"] for r in received) == sorted(expected)


@pytest.mark.parametrize("record_format", ["uploads", "clearing"])
def test_postgres_keeps_nested_columns_as_jsonb(tmp_path, record_format):
    """An upload's records and a clearing file's summary and detail go in as jsonb (they used
    to stop the stream: CSV had no form for them)."""
    path = tmp_path / "records.jsonl"
    assert small_stream(tmp_path / "file", f"file://{path}", record_format).reconciled
    records = {r["idempotency_key"]: r for r in map(json.loads, path.read_bytes().splitlines())}
    nested = [k for k, v in next(iter(records.values())).items() if isinstance(v, list)]
    with postgres_server() as url:
        report = small_stream(tmp_path, f"{url}?table=nested", record_format)
        with psycopg.connect(url) as conn:
            types = dict(
                conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'nested'"
                ).fetchall()
            )
            columns = ", ".join(nested)
            rows = conn.execute(f"SELECT idempotency_key, {columns} FROM nested").fetchall()
    assert report.reconciled, report.totals
    assert nested and all(types[name] == "jsonb" for name in nested)
    assert len(rows) == len(records)
    for key, *values in rows:
        assert dict(zip(nested, values, strict=True)) == {n: records[key][n] for n in nested}
