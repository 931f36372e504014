"""The traffic generator (traffic/): records, pacing, sinks, retries, dead letters, resume.

Streams run the small CI scenario through real sinks: files, stdout, and the reference HTTP
receiver (traffic/receiver.py) on loopback, with injected faults. Kills are real (SIGKILL of
the command), and resumed streams are compared with uninterrupted ones byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest
from stream_helpers import json_lines, kill_when_some_are_done

from sim.api import load_scenario, privacy_key, run
from traffic.dirty import Injection
from traffic.pacing import ProfilePacer, RatePacer, SpeedPacer, load_profile
from traffic.receiver import serve
from traffic.records import AFTER_THE_TAP
from traffic.sinks import SinkOptions
from traffic.stream import StreamSettings, stream

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
CLI = [sys.executable, str(ROOT / "run_scenario.py"), "stream", str(SMALL)]


def _stream(tmp_path, sink, days=2, stop=None, on_second=None, **settings):
    options = settings.pop("sink_options", SinkOptions())
    scenario = load_scenario(SMALL, days=days)
    return stream(
        scenario,
        StreamSettings(sink=sink, state_dir=tmp_path / "state", sink_options=options, **settings),
        privacy_key=privacy_key(None),
        stop=stop,
        on_second=on_second,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The same scenario run to files: the stream must send exactly its tap records."""
    out = tmp_path_factory.mktemp("run") / "out"
    run(load_scenario(SMALL, days=2), out)
    return out


def test_the_tap_stream_is_the_runs_transactions_in_time_order(tmp_path, run_dir):
    path = tmp_path / "taps.jsonl"
    report = _stream(tmp_path, f"file://{path}")
    assert report.reconciled and report.finished
    records = json_lines(path)
    assert report.totals["generated"] == report.totals["acknowledged"] == len(records)
    assert [r["stream_seq"] for r in records] == list(range(len(records)))
    assert all(r["idempotency_key"] == f"{report.stream_id}:{r['stream_seq']}" for r in records)
    stamps = [r["event_timestamp"] for r in records]
    assert stamps == sorted(stamps)
    # The run's transactions, less what only the clearing knows: the same rows, same values,
    # service_date (the run's partition key, the TIDES key) first as in the run's dataset.
    con = duckdb.connect()
    columns = [c for c in records[0] if c not in ("stream_seq", "idempotency_key")]
    assert not set(columns) & set(AFTER_THE_TAP)
    assert columns[0] == "service_date" and {r["service_date"] for r in records} == {
        "2024-01-01",
        "2024-01-02",
    }
    files = str(run_dir / "transactions" / "*" / "*.parquet")
    ran = con.sql(
        f"SELECT to_json(t) FROM (SELECT {', '.join(columns)} FROM "
        f"read_parquet('{files}', hive_partitioning = true) ORDER BY transaction_id) t"
    ).fetchall()
    streamed = sorted(
        ({c: r[c] for c in columns} for r in records), key=lambda r: r["transaction_id"]
    )
    assert [json.loads(row[0]) for row in ran] == streamed


def test_the_same_scenario_and_seed_stream_the_same_bytes(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a = _stream(tmp_path / "a", f"file://{first}", batch_size=97)
    b = _stream(tmp_path / "b", f"file://{second}", batch_size=1000)
    assert a.stream_id == b.stream_id
    assert first.read_bytes() == second.read_bytes()


def test_topups_and_csv(tmp_path, run_dir):
    path = tmp_path / "topups.csv"
    report = _stream(tmp_path, f"file://{path}", record_format="topups")
    assert report.reconciled
    rows = duckdb.sql(f"SELECT * FROM read_csv('{path}')").fetchall()
    files = str(run_dir / "topups" / "*" / "*.parquet")
    (expected,) = duckdb.sql(f"SELECT count(*), sum(amount_fen) FROM '{files}'").fetchall()
    (got,) = duckdb.sql(f"SELECT count(*), sum(amount_fen) FROM read_csv('{path}')").fetchall()
    assert len(rows) == expected[0] and got == expected
    # Each top-up's service_date is the run's (its partition).
    ran = duckdb.sql(
        f"SELECT topup_id, service_date FROM read_parquet('{files}', hive_partitioning = true)"
    ).fetchall()
    streamed = duckdb.sql(f"SELECT topup_id, service_date FROM read_csv('{path}')").fetchall()
    assert sorted(streamed) == sorted(ran) and len(ran) > 0


def test_faults_are_retried_and_every_record_is_kept_once(tmp_path):
    server, store = serve(
        fail_rate=0.1, timeout_rate=0.03, reset_rate=0.03, slow_rate=0.05, hang_s=0.6, seed=3
    )
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        report = _stream(
            tmp_path,
            url,
            batch_size=25,
            sink_options=SinkOptions(timeout_s=0.3, concurrency=4),
        )
    finally:
        server.shutdown()
        server.server_close()
    t = report.totals
    assert report.reconciled
    assert t["retries"] > 0 and store.counts["fail"] and store.counts["timeout"]
    assert store.counts["reset"]
    # Every record acknowledged once by the receiver's own count, though some arrived twice.
    assert t["acknowledged"] == len(store.records) == store.counts["records_kept"]
    assert store.counts["duplicate_keys"] > 0
    assert t["dead_lettered"] == 0 and t["generated"] == t["acknowledged"]


def test_refused_batches_go_to_the_dead_letter_file_with_the_reason(tmp_path):
    server, store = serve(refuse_rate=0.2, seed=5)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        report = _stream(tmp_path, url, batch_size=50)
    finally:
        server.shutdown()
        server.server_close()
    t = report.totals
    dead = json_lines(tmp_path / "state" / "dead_letters.jsonl")
    assert report.reconciled and t["dead_lettered"] == len(dead) > 0
    assert t["acknowledged"] + t["dead_lettered"] == t["generated"]
    assert t["acknowledged"] == len(store.records)
    assert all(d["reason"].startswith("HTTP 422") for d in dead)
    kept = set(store.records)
    assert not kept & {d["idempotency_key"] for d in dead}
    assert all(d["record"]["idempotency_key"] == d["idempotency_key"] for d in dead)


def test_a_sink_that_never_answers_well_dead_letters_after_the_last_attempt(tmp_path):
    from traffic.delivery import RetryPolicy

    server, _ = serve(fail_rate=1.0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        report = _stream(tmp_path, url, days=1, batch_size=500, retry=RetryPolicy(3, base_s=0.001))
    finally:
        server.shutdown()
        server.server_close()
    dead = json_lines(tmp_path / "state" / "dead_letters.jsonl")
    assert report.reconciled and report.totals["acknowledged"] == 0
    assert len(dead) == report.totals["generated"]
    assert dead[0]["reason"].startswith("gave up after 3 attempts: HTTP 50")


def test_a_killed_file_stream_resumes_into_the_same_file(tmp_path):
    whole = tmp_path / "whole.jsonl"
    assert _stream(tmp_path / "w", f"file://{whole}").reconciled
    part = tmp_path / "resumed.jsonl"
    state = tmp_path / "state"
    cmd = [*CLI, "--days", "2", "--sink", f"file://{part}", "--state", str(state)]
    kill_when_some_are_done([*cmd, "--rate", "400", "--batch-size", "20"], state)
    assert part.stat().st_size < whole.stat().st_size
    done = subprocess.run([*cmd, "--resume", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resumed at stream position" in done.stderr
    assert part.read_bytes() == whole.read_bytes()


def test_a_killed_http_stream_resumes_with_the_rest_of_the_same_stream(tmp_path):
    whole = tmp_path / "whole.jsonl"
    assert _stream(tmp_path / "w", f"file://{whole}").reconciled
    server, store = serve(fail_rate=0.1, timeout_rate=0.02, hang_s=0.5, seed=7)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        state = tmp_path / "state"
        cmd = [*CLI, "--days", "2", "--sink", url, "--state", str(state), "--timeout", "0.3"]
        kill_when_some_are_done([*cmd, "--rate", "400", "--batch-size", "20"], state)
        killed_at = len(store.records)
        done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert 0 < killed_at < len(store.records)
    report = json.loads((state / "report.json").read_text())
    assert report["reconciled"] and report["totals"]["generated"] == len(store.records)
    # The receiver holds exactly the uninterrupted stream's records, each once.
    expected = {r["idempotency_key"]: r for r in json_lines(whole)}
    assert {k: json.loads(v) for k, v in store.records.items()} == expected


def test_rate_and_profile_pacing():
    rate = RatePacer(1000)
    assert np.allclose(rate.due(np.arange(3), np.zeros(3)), [0, 0.001, 0.002])
    speed = SpeedPacer(60)
    assert np.allclose(speed.due(np.arange(3), np.array([100, 160, 3700])), [0, 1, 60])
    assert np.allclose(speed.due(np.arange(1), np.array([220])), [2])  # keeps its origin


def test_a_profile_ramps_holds_and_ends(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text("stages:\n  - {duration: 2s, target: 100}\n  - {duration: 1s, target: 100}\n")
    pacer = ProfilePacer(load_profile(path))
    # A ramp from 0 to 100/s over 2 s sends 100 records, the hold 100 more: 200 in all.
    assert pacer.capacity == 200 and pacer.ends_after_s == 3
    due = pacer.due(np.arange(250), np.zeros(250))
    assert np.isinf(due[200:]).all() and np.all(np.diff(due[:200]) > 0)
    # On the ramp (rate 50 t) the count is 25 t^2: the 25th record at 1 s, the 50th at sqrt 2.
    assert abs(due[24] - 1.0) < 0.01 and abs(due[49] - np.sqrt(2)) < 0.01
    assert abs(due[149] - 2.5) < 0.01
    report = _stream(tmp_path, "null", days=1, pacer=pacer, batch_size=10)
    assert report.reconciled and report.totals["generated"] == 200


def test_speed_keeps_the_days_shape(tmp_path):
    """At x14,400 a day takes 6 s: the records sent each second follow the hours' counts."""
    report = _stream(tmp_path, "null", days=1, pacer=SpeedPacer(14_400), batch_size=50)
    assert report.reconciled
    sent = [row["sent_per_s"] for row in report.per_second]
    target = [row["target_per_s"] for row in report.per_second]
    assert len(sent) >= 4
    assert np.corrcoef(sent[:-1], target[:-1])[0, 1] > 0.9
    assert max(row["behind_s"] for row in report.per_second) < 1.0


def test_a_slow_sink_holds_the_stream_back_and_drops_nothing(tmp_path):
    server, store = serve(slow_rate=1.0, slow_s=0.05)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        report = _stream(
            tmp_path,
            url,
            days=1,
            pacer=RatePacer(2000),
            batch_size=20,
            sink_options=SinkOptions(concurrency=1),
        )
    finally:
        server.shutdown()
        server.server_close()
    assert report.reconciled and report.totals["acknowledged"] == len(store.records)
    # 20 records per 50 ms at most: ~400/s against 2,000/s asked, so the stream fell behind.
    assert max(row["behind_s"] for row in report.per_second) > 1.0


def test_a_state_folder_that_is_a_file_is_bad_input(tmp_path):
    state = tmp_path / "a_file"
    state.write_text("not a folder")
    done = subprocess.run(
        [*CLI, "--days", "1", "--sink", "-", "--quiet", "--state", str(state)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "a_file" in done.stderr and "Traceback" not in done.stderr
    assert state.read_text() == "not a folder"


def test_a_state_folder_holding_other_files_is_refused_and_left_alone(tmp_path):
    """A new stream clears an earlier one's labels: a folder that is not a stream's state
    (someone's own labels/ folder, say) is refused before anything in it is touched."""
    state = tmp_path / "project"
    (state / "labels").mkdir(parents=True)
    (state / "labels" / "cats.txt").write_text("mine\n")
    (state / "checkpoint.json").write_text("{}")
    done = subprocess.run(
        [*CLI, "--days", "1", "--sink", "null", "--quiet", "--state", str(state)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert "labels/cats.txt" in done.stderr and "Traceback" not in done.stderr
    assert (state / "labels" / "cats.txt").read_text() == "mine\n"
    assert (state / "checkpoint.json").read_text() == "{}"
    # An earlier stream's own state folder is taken again (and its labels replaced).
    earlier = tmp_path / "earlier"
    _stream(earlier, "null", days=1, injection=Injection.parse(["duplicate=0.01"]))
    assert list((earlier / "state" / "labels").glob("day=*.parquet"))
    _stream(earlier, "null", days=1)
    assert not (earlier / "state" / "labels").exists()


def test_stdout_stream(tmp_path):
    done = subprocess.run(
        [*CLI, "--days", "1", "--sink", "-", "--quiet", "--state", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(records) == report["totals"]["acknowledged"] > 0
    assert "reconciled: generated = sent = acknowledged + dead-lettered" in done.stderr


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--sink", "kafka://x"], "unknown kind of sink"),
        (["--sink", "null", "--resume"], "--resume: no checkpoint in"),
        (["--sink", "file://relative.jsonl"], "expected file:///absolute/path.jsonl"),
        (["--sink", "file:///tmp/x.txt"], "cannot tell the encoding"),
        (["--sink", "http://127.0.0.1:9", "--token-env", "CT_NO_SUCH_VAR"], "CT_NO_SUCH_VAR"),
        (["--sink", "null", "--rate", "0"], "expected a number > 0"),
        (["--sink", "null", "--rate", "5", "--speed", "2"], "not allowed with argument"),
    ],
)
def test_bad_flags_say_what_is_wrong(tmp_path, flags, expected):
    done = subprocess.run(
        [*CLI, "--days", "1", "--state", str(tmp_path), *flags], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr


def test_a_bad_profile_names_its_file_and_field(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("stages:\n  - {duration: soon, target: 10}\n")
    done = subprocess.run(
        [*CLI, "--sink", "null", "--profile", str(profile), "--state", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "p.yaml:2" in done.stderr and "stages.0.duration" in done.stderr
    assert "expected a duration" in done.stderr


def test_resuming_another_streams_checkpoint_is_refused(tmp_path):
    assert _stream(tmp_path, "null", days=1).reconciled
    done = subprocess.run(
        [*CLI, "--days", "2", "--sink", "null", "--resume", "--state", str(tmp_path / "state")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "belongs to stream" in done.stderr


def test_resuming_with_other_identities_is_refused(tmp_path):
    """Masked and unmasked records are not one stream: their card tokens differ."""
    state = tmp_path / "state"
    assert _stream(tmp_path, "null", days=1).reconciled
    done = subprocess.run(
        [*CLI, "--days", "1", "--sink", "null", "--resume", "--unmasked", "--state", str(state)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "belongs to stream" in done.stderr
    assert "--unmasked" in done.stderr


def test_clearing_files_are_paced_by_their_issue_time_in_seconds(tmp_path):
    """Clearing files carry microsecond times: --speed paces them in seconds like the rest
    (two cut-offs a day apart at x100,000: under a second apart), and the line each second
    shows the simulated time."""
    rows = []
    report = _stream(
        tmp_path, "null", record_format="clearing", pacer=SpeedPacer(100_000),
        report_every_s=0.2, on_second=rows.append,
    )  # fmt: skip
    assert report.reconciled and report.wall_s < 10
    assert any(r["sim_time"] and r["sim_time"].startswith("2024-01-0") for r in rows)


def test_interrupting_a_stream_keeps_what_was_delivered(tmp_path):
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    path = tmp_path / "taps.jsonl"
    report = _stream(tmp_path, f"file://{path}", pacer=RatePacer(500), stop=stop)
    assert not report.finished and not report.reconciled
    records = json_lines(path)
    checkpoint = json.loads((tmp_path / "state" / "checkpoint.json").read_text())
    assert checkpoint["done_through"] == len(records) - 1 == report.totals["acknowledged"] - 1


def test_the_receiver_answers_stats(tmp_path):
    server, store = serve()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _stream(tmp_path, url + "/t", days=1)
        stats = httpx.get(url + "/stats").json()
    finally:
        server.shutdown()
        server.server_close()
    assert stats["unique_keys"] == stats["records_kept"] == len(store.records) > 0


def test_upload_batches_carry_every_tap_as_the_devices_sent_them(tmp_path, run_dir):
    path = tmp_path / "uploads.jsonl"
    report = _stream(tmp_path, f"file://{path}", record_format="uploads")
    assert report.reconciled
    batches = json_lines(path)
    uploaded = [b["uploaded_at"] for b in batches]
    assert uploaded == sorted(uploaded)
    assert all(len(b["records"]) == b["n_records"] > 0 for b in batches)
    assert all(b["uploaded_at"] >= b["last_tap_at"] >= b["first_tap_at"] for b in batches)
    assert all(r["uploader_id"] == b["device_id"] for b in batches for r in b["records"])
    firsts = [r["transaction_id"] for b in batches if not b["resend"] for r in b["records"]]
    resent = [r["transaction_id"] for b in batches if b["resend"] for r in b["records"]]
    # Each tap uploaded once, and a resend repeats records already sent.
    assert len(firsts) == len(set(firsts))
    assert set(resent) <= set(firsts)
    uploads = str(run_dir / "device_uploads" / "*" / "*.parquet")
    (n_uploads, n_resends) = duckdb.sql(
        f"SELECT count(*), count(*) FILTER (WHERE resend) FROM '{uploads}'"
    ).fetchall()[0]
    assert len(batches) == n_uploads and sum(b["resend"] for b in batches) == n_resends
    # An upload's service_date is the run's (the day it was sent); each tap it carries has its
    # own, the run's for that tap.
    ran = duckdb.sql(
        "SELECT device_id, upload_batch_id, resend, CAST(service_date AS VARCHAR) "
        f"FROM read_parquet('{uploads}', hive_partitioning = true)"
    ).fetchall()
    assert sorted(ran) == sorted(
        (b["device_id"], b["upload_batch_id"], b["resend"], b["service_date"]) for b in batches
    )
    taps = str(run_dir / "transactions" / "*" / "*.parquet")
    tap_dates = dict(
        duckdb.sql(
            "SELECT transaction_id, CAST(service_date AS VARCHAR) "
            f"FROM read_parquet('{taps}', hive_partitioning = true)"
        ).fetchall()
    )
    carried = {(r["transaction_id"], r["service_date"]) for b in batches for r in b["records"]}
    assert carried == {(t, tap_dates[t]) for t, _ in carried}
    (uploaded_taps,) = duckdb.sql(
        f"SELECT count(*) FROM '{taps}' WHERE upload_batch_id IS NOT NULL"
    ).fetchall()[0]
    assert len(firsts) == uploaded_taps


def test_clearing_files_per_participant_agree_with_the_run(tmp_path, run_dir):
    path = tmp_path / "clearing.jsonl"
    report = _stream(tmp_path, f"file://{path}", record_format="clearing")
    assert report.reconciled
    files = json_lines(path)
    assert [f["issued_at"] for f in files] == sorted(f["issued_at"] for f in files)
    for f in files:
        detail, summary = f["detail"], f["summary"]
        assert f["records"] == len(detail) == sum(s["records"] for s in summary)
        cleared = sum(d["amount_fen"] for d in detail if d["status"] == "cleared")
        assert f["cleared_fen"] == cleared
        assert sum(s["amount_fen"] for s in summary) == sum(d["amount_fen"] for d in detail)
        assert all(f["participant_id"] in (d["issuer_id"], d["acquirer_id"]) for d in detail)
    # Every record of the run, once in its issuer's file and once in its acquirer's.
    taps = str(run_dir / "transactions" / "*" / "*.parquet")
    (n, fen) = duckdb.sql(
        f"SELECT count(*), sum(amount_fen) FILTER (WHERE status = 'cleared') FROM '{taps}'"
    ).fetchall()[0]
    roles = [(d["role"], d["transaction_id"]) for f in files for d in f["detail"]]
    assert len(roles) == len(set(roles)) == 2 * n
    assert sum(f["cleared_fen"] for f in files) == 2 * fen


def test_headers_and_the_bearer_token_from_the_environment(tmp_path):
    server, store = serve()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        done = subprocess.run(
            [*CLI, "--days", "1", "--sink", url, "--state", str(tmp_path), "--quiet",
             "--header", "X-Feed: cardtwin", "--token-env", "CT_TEST_TOKEN", "--batch-size", "50"],
            capture_output=True, text=True, env={**os.environ, "CT_TEST_TOKEN": "s3cret"},
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    headers = store.last_headers
    assert headers["Authorization"] == "Bearer s3cret" and headers["X-Feed"] == "cardtwin"
    assert headers["Content-Type"] == "application/json"
    stream_id, span = headers["Idempotency-Key"].rsplit(":", 1)
    first, last = map(int, span.split("-"))
    assert last - first + 1 <= 50 and "s3cret" not in done.stderr


def test_restamped_records_carry_the_wall_clock(tmp_path):
    import datetime as dt

    path = tmp_path / "taps.jsonl"
    before = dt.datetime.now().replace(microsecond=0)
    report = _stream(tmp_path, f"file://{path}", days=1, pacer=RatePacer(2000), restamp=True)
    after = dt.datetime.now()
    assert report.reconciled
    stamps = [dt.datetime.fromisoformat(r["event_timestamp"]) for r in json_lines(path)]
    assert all(before - dt.timedelta(seconds=1) <= t <= after for t in stamps)
    # Due at 2,000 a second: the stamps span the time the records were due.
    span = (stamps[-1] - stamps[0]).total_seconds()
    assert abs(span - len(stamps) / 2000) <= 1.5


@pytest.mark.parametrize(
    ("record_format", "column"), [("uploads", "uploaded_at"), ("clearing", "issued_at")]
)
def test_restamp_stamps_each_formats_own_time(tmp_path, record_format, column):
    import datetime as dt

    path = tmp_path / "out.jsonl"
    before = dt.datetime.now().replace(microsecond=0) - dt.timedelta(seconds=1)
    report = _stream(
        tmp_path, f"file://{path}", days=2, record_format=record_format, restamp=True,
        sink_options=SinkOptions(record_format=record_format),
    )  # fmt: skip
    assert report.reconciled
    stamps = [dt.datetime.fromisoformat(r[column]) for r in json_lines(path)]
    assert stamps and all(before <= t <= dt.datetime.now() for t in stamps)


def test_a_broken_machine_key_is_bad_input(tmp_path):
    key = tmp_path / "broken.key"
    key.write_bytes(b"too short")
    env = {**os.environ, "CARDTWIN_PRIVACY_KEY_FILE": str(key)}
    done = subprocess.run(
        [*CLI, "--days", "1", "--sink", "null", "--state", str(tmp_path / "s")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 2 and "privacy key" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _interrupted(tmp_path, sink, after_s=1.0, **settings):
    """A stream stopped after ``after_s`` seconds of sending (what was sent is checkpointed)."""
    stop = threading.Event()
    threading.Timer(after_s, stop.set).start()
    report = _stream(tmp_path, sink, stop=stop, **settings)
    assert not report.finished
    return report


def test_resuming_into_another_sink_or_encoding_is_refused_and_touches_nothing(tmp_path):
    """A resumed file stream cuts its file back to the checkpoint: given another file (or the
    same path holding another file) it would cut someone's data and append the tail."""
    from traffic.stream import StreamSetupError

    whole = tmp_path / "whole.jsonl"
    assert _stream(tmp_path / "w", f"file://{whole}").reconciled
    part = tmp_path / "f.jsonl"
    _interrupted(tmp_path, f"file://{part}", pacer=RatePacer(500), batch_size=20)
    kept = part.read_bytes()
    assert 0 < len(kept) < whole.stat().st_size
    other = tmp_path / "other.jsonl"
    other.write_bytes(b'{"mine": 1}\n' * 100_000)
    checkpoint = (tmp_path / "state" / "checkpoint.json").read_bytes()
    state = tmp_path / "state"
    cmd = [*CLI, "--days", "2", "--state", str(state), "--resume", "--quiet"]
    done = subprocess.run([*cmd, "--sink", f"file://{other}"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--sink file://{part}, not file://{other}" in done.stderr
    done = subprocess.run(
        [*cmd, "--sink", f"file://{part}", "--encoding", "csv"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--encoding json, not csv" in done.stderr
    # The same path, another file: as long, or longer, but not this stream's.
    for foreign in (b"x" * len(kept), kept[:-40] + b"z" * 40 + b"\n", b"y" * (2 * len(kept))):
        part.write_bytes(foreign)
        with pytest.raises(StreamSetupError, match="is not the file this stream wrote"):
            _stream(tmp_path, f"file://{part}", resume=True)
        assert part.read_bytes() == foreign
    assert other.read_bytes() == b'{"mine": 1}\n' * 100_000
    assert (state / "checkpoint.json").read_bytes() == checkpoint
    # With its own file back, the stream goes on, byte for byte the uninterrupted one.
    part.write_bytes(kept + b'{"half a rec')  # and what a kill left past the checkpoint
    assert _stream(tmp_path, f"file://{part}", resume=True).reconciled
    assert part.read_bytes() == whole.read_bytes()


def test_the_checkpoint_keeps_the_sink_without_its_secrets(tmp_path):
    from traffic.sinks import open_sink, redacted

    url = "postgresql://me:s3cret@127.0.0.1:5432/db?table=t&password=p4ss&sslmode=require"
    shown = "postgresql://me:***@127.0.0.1:5432/db?table=t&password=***&sslmode=require"
    assert redacted(url) == shown
    assert (
        redacted("http://127.0.0.1:8080/taps?token=abc") == "http://127.0.0.1:8080/taps?token=***"
    )
    assert redacted("null") == "null" and redacted("-") == "-"
    # What report.json and the summary line say of the sink (libpq's options are passed on).
    described = open_sink(url, SinkOptions()).describe()
    assert "s3cret" not in described and "p4ss" not in described, described
    assert _stream(tmp_path, "null", days=1, pacer=RatePacer(50_000)).reconciled
    setup = json.loads((tmp_path / "state" / "checkpoint.json").read_text())["setup"]
    assert setup == {
        "sink": "null",
        "encoding": "json",
        "pacing": {"kind": "rate", "rate": 50_000.0},
        "restamp": False,
    }


def _profile(tmp_path, text: str) -> ProfilePacer:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return ProfilePacer(load_profile(path))


def test_a_resumed_profile_goes_on_where_it_stopped(tmp_path):
    """An interrupted profile, resumed, ends as the uninterrupted one does: the same records,
    the rest of the profile; a stream that finished sends nothing when resumed."""
    from traffic.stream import StreamSetupError

    profile = "stages:\n  - {duration: 1s, target: 400}\n  - {duration: 2s, target: 400}\n"
    whole = tmp_path / "whole.jsonl"
    report = _stream(tmp_path / "w", f"file://{whole}", days=1, pacer=_profile(tmp_path, profile))
    assert report.reconciled and report.totals["generated"] == 1000  # 200 + 800
    part = tmp_path / "part.jsonl"
    first = _interrupted(
        tmp_path, f"file://{part}", after_s=1.5, days=1, pacer=_profile(tmp_path, profile)
    )
    assert 0 < first.totals["acknowledged"] < 1000
    with pytest.raises(StreamSetupError, match="a profile decides which records are sent"):
        _stream(tmp_path, f"file://{part}", days=1, resume=True, pacer=RatePacer(400))
    resumed = _stream(
        tmp_path, f"file://{part}", days=1, resume=True, pacer=_profile(tmp_path, profile)
    )
    assert resumed.reconciled and resumed.totals["generated"] == 1000
    assert part.read_bytes() == whole.read_bytes()
    # The rest of the profile, not all of it again: ~1.5 s of the 3.
    assert resumed.wall_s < 2.8
    # Finished: a resume sends nothing, says so, and leaves the state folder as it was.
    checkpoint = json.loads((tmp_path / "state" / "checkpoint.json").read_text())
    assert checkpoint["finished"] and checkpoint["done_through"] == 999
    report_file = (tmp_path / "state" / "report.json").read_bytes()
    again = _stream(
        tmp_path, f"file://{part}", days=1, resume=True, pacer=_profile(tmp_path, profile)
    )
    assert again.already_finished and again.totals["generated"] == 1000
    assert part.read_bytes() == whole.read_bytes()
    assert (tmp_path / "state" / "report.json").read_bytes() == report_file
    done = subprocess.run(
        [*CLI, "--days", "1", "--sink", f"file://{part}", "--state", str(tmp_path / "state"),
         "--profile", str(tmp_path / "profile.yaml"), "--resume"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "had already finished (1,000 records" in done.stderr and "nothing sent" in done.stderr
    assert part.read_bytes() == whole.read_bytes()


def test_long_and_steep_profiles_are_paced_without_a_grid(tmp_path):
    """Due times come from the stages in closed form: a 1,000-hour stage costs nothing."""
    import tracemalloc

    tracemalloc.start()
    pacer = _profile(tmp_path, "stages:\n  - {duration: 1000h, target: 1000}\n")
    due = pacer.due(np.array([0, 499_999, 3_600_000, 1_799_999_999, 1_800_000_000]), None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000
    assert pacer.capacity == 1_800_000_000  # a ramp to 1,000/s over 3.6 million seconds
    # The count on the ramp is t^2 / 7,200: record n is due at sqrt(7,200 (n + 1)).
    assert np.allclose(
        due[:4], np.sqrt(7200.0 * (np.array([0, 499_999, 3_600_000, 1_799_999_999]) + 1))
    )
    assert np.isinf(due[4])
    spike = _profile(tmp_path, "stages:\n  - {duration: 1ms, target: 100000000}\n")
    assert spike.capacity == 50_000


@pytest.mark.parametrize(
    ("stages", "field", "expected"),
    [
        ("{duration: 10s, target: .inf}", "stages.0.target", "finite number"),
        ("{duration: 10s, target: 1.0e+12}", "stages.0.target", "less than or equal to"),
        ("{duration: .inf, target: 10}", "stages.0.duration", "finite duration"),
        ("{duration: 40000000, target: 10}", "stages.0.duration", "less than or equal to"),
    ],
)
def test_a_profile_that_cannot_be_paced_names_its_file_and_field(tmp_path, stages, field, expected):
    profile = tmp_path / "p.yaml"
    profile.write_text(f"stages:\n  - {stages}\n")
    done = subprocess.run(
        [*CLI, "--sink", "null", "--profile", str(profile), "--state", str(tmp_path / "s")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert "p.yaml:2" in done.stderr and field in done.stderr and expected in done.stderr
    assert "Traceback" not in done.stderr


def test_the_report_goes_on_while_a_slow_sink_holds_the_stream_back(tmp_path):
    """Each batch takes 2.5 s: the pacer waits for room in the queue, and the report still
    comes every second, with rates over the time each row covers, and a last row for the
    rest."""
    server, _ = serve(slow_rate=1.0, slow_s=2.5)
    rows = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        report = _interrupted(
            tmp_path, url, after_s=6.0, days=1, pacer=RatePacer(1000), batch_size=10,
            sink_options=SinkOptions(concurrency=1), on_second=rows.append,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert rows == report.per_second and len(rows) >= 5
    times = [0.0] + [row["t_s"] for row in rows]
    assert max(np.diff(times[:-1])) < 1.5  # every second, not every 2.5 s
    sent = acknowledged = 0
    for row in rows:
        assert abs(row["sent_per_s"] * row["interval_s"] - (row["sent"] - sent)) < 1
        assert (
            abs(
                row["acknowledged_per_s"] * row["interval_s"] - (row["acknowledged"] - acknowledged)
            )
            < 1
        )
        sent, acknowledged = row["sent"], row["acknowledged"]
    # Batches still queued when the stream stopped never went out: not counted as sent.
    totals = report.totals
    assert totals["generated"] > totals["sent"] == totals["acknowledged"] + totals["dead_lettered"]
    # The last row covers the end: its counts are the stream's.
    assert rows[-1]["sent"] == report.totals["sent"]
    assert rows[-1]["acknowledged"] == report.totals["acknowledged"]


def test_a_sink_that_breaks_in_the_final_drain_still_writes_the_report(tmp_path):
    """/dev/full takes the file open, then refuses the bytes: the one batch fails once the
    pacer is done, while the last batches drain."""
    from traffic.delivery import DeliveryFailed

    assert _stream(tmp_path, "null", days=1).reconciled  # an earlier report in the folder
    with pytest.raises(DeliveryFailed):
        _stream(
            tmp_path, "file:///dev/full", days=1, batch_size=5000,
            sink_options=SinkOptions(encoding="json"),
        )  # fmt: skip
    report = json.loads((tmp_path / "state" / "report.json").read_text())
    assert report["sink"].startswith("/dev/full") and not report["finished"]
    assert not report["reconciled"] and report["totals"]["acknowledged"] == 0


def test_a_damaged_dead_letter_file_is_refused_before_anything_is_sent(tmp_path):
    server, store = serve(refuse_rate=0.3, seed=5)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        _interrupted(
            tmp_path, url, after_s=2.0, pacer=RatePacer(500), batch_size=20,
            sink_options=SinkOptions(concurrency=1),  # batches done in order: none past the mark
        )  # fmt: skip
        state = tmp_path / "state"
        dead = state / "dead_letters.jsonl"
        lines = dead.read_bytes().splitlines(keepends=True)
        assert len(lines) >= 2
        cmd = [*CLI, "--days", "2", "--sink", url, "--state", str(state), "--resume", "--quiet"]
        received = store.counts["records_received"]
        for damaged, expected in (
            ([lines[0][:25] + b"\n", *lines[1:]], "dead_letters.jsonl:1: not a dead letter"),
            ([lines[0], b'{"stream_seq": "x"}\n', *lines[2:]], "dead_letters.jsonl:2:"),
            (lines[1:], f"holds {len(lines) - 1} dead letters up to stream position"),
        ):
            dead.write_bytes(b"".join(damaged))
            done = subprocess.run(cmd, capture_output=True, text=True)
            assert done.returncode == 2 and expected in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
            assert store.counts["records_received"] == received  # nothing sent
            assert dead.read_bytes() == b"".join(damaged)
        # A last line a kill cut short (its batch was not done) is dropped; the rest goes on.
        dead.write_bytes(b"".join(lines) + b'{"stream_seq": 99999, "idem')
        done = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 7, done.stderr  # reconciled, with refused records: exit 7
    report = json.loads((state / "report.json").read_text())
    assert report["reconciled"]
    assert len(dead.read_bytes().splitlines()) == report["totals"]["dead_lettered"]
