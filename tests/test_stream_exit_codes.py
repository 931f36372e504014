"""The stream command's exit codes (traffic/cli.py, docs/streaming.md): a sink that cannot be
reached when the stream starts, or that takes none of its first batches, is bad input (2); a
stream that finished with records dead-lettered or of unknown delivery exits 7, its accounting
printed and its dead-letter file named; 0 only when every record was acknowledged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from stream_helpers import (
    ROOT,
    Answers,
    json_lines,
    most_batches_sent_before_giving_up,
    small_stream,
    stream_cli,
)

from traffic.delivery import FIRST_BATCHES
from traffic.receiver import serve
from traffic.servers import free_port
from traffic.stream import SinkTookNothing

RECORDS_A_DAY = 1368  # the small scenario's first day of taps


def _run(tmp_path, sink, *flags):
    state = tmp_path / "state"
    return stream_cli(state, sink, *flags), state


def test_a_receiver_nobody_runs_is_bad_input_before_anything_is_sent(tmp_path):
    done, state = _run(tmp_path, f"http://127.0.0.1:{free_port()}/taps")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --sink http://127.0.0.1:")
    assert "nothing is listening" in lines[0] and "connection refused" in lines[0]
    assert not (state / "checkpoint.json").exists()
    assert not (state / "dead_letters.jsonl").exists()


def test_a_host_that_cannot_be_resolved_is_bad_input(tmp_path):
    done, _ = _run(tmp_path, "http://cardtwin-no-such-host.invalid/taps")
    assert done.returncode == 2, done.stderr
    assert "cannot resolve the host cardtwin-no-such-host.invalid" in done.stderr


def test_a_receiver_refusing_every_batch_stops_the_stream_after_its_first_batches(tmp_path):
    server = Answers(404)
    try:
        done, state = _run(tmp_path, server.url, "--batch-size", "50", "--concurrency", "1")
    finally:
        server.close()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stream stopped: the sink")
    assert f"took none of the records of the stream's first {FIRST_BATCHES} batches" in lines[0]
    assert "HTTP 404: no such route" in lines[0] and str(state / "dead_letters.jsonl") in lines[0]
    # Stopped early, everything it tried accounted for: not the day's 28 batches (the worker
    # may have taken a few more before the pacer saw the flag: stream_helpers, the bound).
    assert FIRST_BATCHES <= server.posts <= most_batches_sent_before_giving_up(FIRST_BATCHES)
    report = json.loads((state / "report.json").read_text())
    t = report["totals"]
    assert not report["finished"] and not report["reconciled"]
    assert "took none" in report["stop_reason"]
    assert t["acknowledged"] == 0 and t["dead_lettered"] == server.posts * 50
    assert t["sent"] == t["dead_lettered"] < t["generated"] == RECORDS_A_DAY
    assert len(json_lines(state / "dead_letters.jsonl")) == t["dead_lettered"]


def test_a_stream_all_of_whose_few_batches_are_refused_exits_7_with_its_accounting(tmp_path):
    """Two batches, both refused: the stream is over before the first batches could stop it;
    it ends reconciled, but not delivered, and says so."""
    server = Answers(404)
    try:
        done, state = _run(tmp_path, server.url)
    finally:
        server.close()
    assert done.returncode == 7, done.stderr
    assert server.posts == 2
    err = done.stderr
    assert f"{RECORDS_A_DAY:,} generated, {RECORDS_A_DAY:,} sent, 0 acknowledged" in err
    assert f"{RECORDS_A_DAY:,} dead-lettered" in err
    assert f"dead letters: {state / 'dead_letters.jsonl'}" in err
    assert "reconciled: generated = sent = acknowledged + dead-lettered" in err
    assert f"NOT all delivered: {RECORDS_A_DAY:,} of {RECORDS_A_DAY:,} records" in err
    assert "the sink took none of them" in err and "(exit 7)" in err


def test_a_sink_that_took_records_then_fails_is_not_stopped_and_exits_7(tmp_path):
    """Once the sink has taken records, its failures are the system under test's (an outage
    to measure), not a setup error: the stream goes on to the end."""
    server = Answers(200, 404)
    try:
        done, state = _run(tmp_path, server.url, "--batch-size", "100", "--concurrency", "1")
    finally:
        server.close()
    assert done.returncode == 7, done.stderr
    report = json.loads((state / "report.json").read_text())
    t = report["totals"]
    assert report["finished"] and report["reconciled"] and report["stop_reason"] is None
    assert t["acknowledged"] == 100 and t["dead_lettered"] == RECORDS_A_DAY - 100
    assert server.posts == -(-RECORDS_A_DAY // 100)
    assert f"NOT all delivered: {RECORDS_A_DAY - 100:,} of {RECORDS_A_DAY:,}" in done.stderr
    assert "the sink took none" not in done.stderr


def test_some_refused_records_exit_7_and_so_does_resuming_the_finished_stream(tmp_path):
    server, store = serve(refuse_rate=0.3, seed=5)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        flags = ("--batch-size", "100", "--concurrency", "1")  # the receiver's draws in order
        done, state = _run(tmp_path, url, *flags)
        again, _ = _run(tmp_path, url, *flags, "--resume")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 7, done.stderr
    t = json.loads((state / "report.json").read_text())["totals"]
    assert 0 < t["dead_lettered"] < t["generated"] and t["acknowledged"] == len(store.records)
    assert f"NOT all delivered: {t['dead_lettered']:,} of {RECORDS_A_DAY:,}" in done.stderr
    # Nothing sent again, the same outcome.
    assert again.returncode == 7, again.stderr
    assert "had already finished" in again.stderr and "dead letters:" in again.stderr


def test_a_stream_every_record_of_which_is_acknowledged_exits_0(tmp_path):
    server, store = serve(seed=1)
    try:
        done, state = _run(tmp_path, f"http://127.0.0.1:{server.server_address[1]}/taps")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert "reconciled:" in done.stderr and "NOT" not in done.stderr
    assert len(store.records) == RECORDS_A_DAY


def test_a_sink_that_only_fails_stops_the_library_stream_too(tmp_path):
    """``stream()`` raises SinkTookNothing (the command turns it into exit 2), after writing
    its report; a transient failure is retried to the last attempt first."""
    server = Answers(503)
    try:
        with pytest.raises(SinkTookNothing, match=r"gave up after 2 attempts: HTTP 503"):
            small_stream(tmp_path, server.url, max_attempts=2, concurrency=1)
    finally:
        server.close()
    report = json.loads((tmp_path / "state" / "report.json").read_text())
    t = report["totals"]
    # The first batches, each tried twice (the next may have been on its way at the stop).
    assert t["acknowledged"] == 0 and t["dead_lettered"] % 200 == 0
    assert t["dead_lettered"] >= 200 * FIRST_BATCHES and server.posts >= 2 * FIRST_BATCHES
    assert not report["finished"] and "took none" in report["stop_reason"]


def test_the_help_gives_the_exit_codes():
    stream_help, score_help = (
        subprocess.run(
            [sys.executable, str(ROOT / "run_scenario.py"), command, "--help"],
            capture_output=True,
            text=True,
        ).stdout
        for command in ("stream", "score")
    )
    text = " ".join(stream_help.split())
    assert "0 every record acknowledged (generated = sent = acknowledged)" in text
    assert "7 finished and reconciled (generated = sent = acknowledged + dead-lettered + " in text
    assert "delivery unknown) but some records dead-lettered" in text
    assert "5 that equation does not hold" in text and "2 bad input, including a sink" in text
    assert (
        "0 every record acknowledged (generated = sent = acknowledged), or every record not "
        "acknowledged an expected refusal: an injected malformed record" in text
    )
    assert "other than expected refusals" in text
    assert "first batches (--give-up-after, default 3)" in text
    assert (
        "--give-up-after N stop the stream (exit 2) when the sink took none of the "
        "records of its first N batches (default 3); 0: never stop for that" in text
    )
    text = " ".join(score_help.split())
    assert "Exit codes: 0 the system kept the stream as it should (PASSED); 1 it did not" in text
