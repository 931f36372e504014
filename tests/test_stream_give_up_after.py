"""``--give-up-after N`` (StreamSettings.give_up_after): how many of a session's first batches
may all finish with nothing taken before the stream stops as bad input (exit 2); 0 never stops
for that. A value that is not a whole number >= 0 is bad input naming the flag. Real HTTP
receivers on 127.0.0.1 refusing every batch (a wrong path)."""

from __future__ import annotations

import json

import pytest
from stream_helpers import (
    SMALL,
    Answers,
    json_lines,
    most_batches_sent_before_giving_up,
    stream_cli,
)

from traffic.delivery import FIRST_BATCHES, Delivery, GiveUpAfterError, RetryPolicy
from traffic.stream import StreamSettings, StreamSetupError, stream

RECORDS_A_DAY = 1368  # the small scenario's first day of taps
BATCHES = ("--batch-size", "50", "--concurrency", "1")  # 28 batches, one at a time


def test_the_stream_gives_up_after_the_batches_asked(tmp_path):
    server = Answers(404)
    try:
        done = stream_cli(tmp_path / "state", server.url, *BATCHES, "--give-up-after", "5")
    finally:
        server.close()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "took none of the records of the stream's first 5 batches" in lines[0]
    assert "HTTP 404: no such route" in lines[0] and "--give-up-after 0" in lines[0]
    # Stopped after 5, not the default 3 nor all 28; the worker may have taken a few more
    # batches before the pacer saw the flag (stream_helpers: the bound, not a number).
    assert 5 <= server.posts <= most_batches_sent_before_giving_up(5) < 28
    report = json.loads((tmp_path / "state" / "report.json").read_text())
    assert not report["finished"] and "first 5 batches" in report["stop_reason"]
    t = report["totals"]
    assert t["sent"] == t["dead_lettered"] == server.posts * 50 < t["generated"]


def test_give_up_after_0_sends_every_batch_and_exits_7(tmp_path):
    server = Answers(404)
    try:
        done = stream_cli(tmp_path / "state", server.url, *BATCHES, "--give-up-after", "0")
    finally:
        server.close()
    assert done.returncode == 7, done.stderr
    assert server.posts == -(-RECORDS_A_DAY // 50)  # every batch tried
    report = json.loads((tmp_path / "state" / "report.json").read_text())
    assert report["finished"] and report["reconciled"] and report["stop_reason"] is None
    assert report["totals"]["dead_lettered"] == RECORDS_A_DAY
    assert len(json_lines(tmp_path / "state" / "dead_letters.jsonl")) == RECORDS_A_DAY
    assert "the sink took none of them" in done.stderr and "(exit 7)" in done.stderr


def test_the_default_is_the_documented_one(tmp_path):
    """Without the flag the stream gives up after FIRST_BATCHES batches, as before."""
    assert FIRST_BATCHES == 3 and StreamSettings("null", tmp_path).give_up_after == 3
    server = Answers(404)
    try:
        done = stream_cli(tmp_path / "state", server.url, *BATCHES)
    finally:
        server.close()
    assert done.returncode == 2, done.stderr
    assert "first 3 batches" in done.stderr
    assert 3 <= server.posts <= most_batches_sent_before_giving_up(3)  # (see above)


#: The one message of a bad --give-up-after (traffic/delivery.py ``give_up_after_checked``).
EXPECTED = "expected a whole number of batches >= 0 (0: never give up)"


@pytest.mark.parametrize("value, shown", [("-1", "-1"), ("x", "'x'"), ("2.5", "'2.5'"), ("", "''")])
def test_a_bad_give_up_after_is_bad_input_naming_the_flag(tmp_path, value, shown):
    done = stream_cli(tmp_path / "state", "null", "--give-up-after", value)
    assert done.returncode == 2, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error == f"run_scenario.py stream: error: --give-up-after {shown}: {EXPECTED}"
    assert not (tmp_path / "state").exists()  # nothing started


@pytest.mark.parametrize("value, shown", [(-1, "-1"), (2.0, "2.0"), (True, "True"), ("3", "'3'")])
def test_the_library_refuses_a_bad_give_up_after_before_anything_is_sent(tmp_path, value, shown):
    """The same message as the command line's (one check), before anything is touched."""
    from sim.api import load_scenario, privacy_key

    settings = StreamSettings(sink="null", state_dir=tmp_path / "state", give_up_after=value)
    with pytest.raises(StreamSetupError) as refused:
        stream(load_scenario(SMALL, days=1), settings, privacy_key=privacy_key(None))
    assert str(refused.value) == f"--give-up-after {shown}: {EXPECTED}"
    assert not (tmp_path / "state").exists()


def test_delivery_refuses_a_bad_give_up_after_with_the_same_message():
    """Delivery, built directly (no stream around it), says the same, before a thread starts."""
    with pytest.raises(GiveUpAfterError) as refused:
        Delivery(None, None, None, None, RetryPolicy(), seed=0, give_up_after=-1)
    assert str(refused.value) == f"--give-up-after -1: {EXPECTED}"
