"""Expected refusals (traffic/delivery.py): a dirty stream's injected malformed records that the
system under test refuses one by one, as it should, are dead letters counted apart, and a stream
whose every dead letter is one exits 0. Any other dead letter — a clean record refused, a
malformed one in a batch refused whole, a record of unknown delivery — still exits 7. Real HTTP
receivers on 127.0.0.1: the reference receiver, and one refusing chosen records one by one."""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path

import duckdb
import numpy as np
import pytest
from stream_helpers import (
    STREAM_CLI,
    Answers,
    answer,
    json_lines,
    kill_when_some_are_done,
    stream_cli,
)

from traffic.accounting import Checkpoint
from traffic.dirty import MalformedPositions
from traffic.receiver import serve

EXPECTED = "injected malformed records refused as they should be"


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/taps"


def _stream_into(server, state: Path, *flags: str, quiet: bool = True):
    """The one-day stream command into ``server``, which is closed after it."""
    try:
        return stream_cli(state, _url(server), *flags, quiet=quiet)
    finally:
        server.shutdown()
        server.server_close()


def _malformed_keys(state: Path) -> set[str]:
    """The keys the stream's labels say are injected malformed records."""
    rows = duckdb.sql(
        f"SELECT idempotency_key FROM '{state / 'labels' / '*.parquet'}' WHERE kind = 'malformed'"
    ).fetchall()
    return {key for (key,) in rows}


def _outcome(state: Path) -> tuple[dict, list[dict]]:
    """The report's totals (checked to reconcile) and the dead letters."""
    report = json.loads((state / "report.json").read_text())
    t = report["totals"]
    assert report["finished"] and report["reconciled"]
    assert t["generated"] == t["sent"] == t["acknowledged"] + t["dead_lettered"]
    return t, json_lines(state / "dead_letters.jsonl")


#: A line the stream prints each second (traffic/cli.py): its dead letters, and of them the
#: expected refusals, said once there are some.
_SECOND_LINE = re.compile(
    r"^ *[\d.]+ s  target .*  dead (?P<dead>[\d,]+)(?: \((?P<expected>[\d,]+) expected refusals\))?"
)


def _second_lines(stderr: str) -> list[tuple[int, int]]:
    """(dead letters, expected refusals) of each per-second line, in order."""
    found = [_SECOND_LINE.match(line) for line in stderr.splitlines()]
    return [
        (int(m["dead"].replace(",", "")), int((m["expected"] or "0").replace(",", "")))
        for m in found
        if m
    ]


def _series(state: Path) -> list[dict]:
    """The per-second series of report.json."""
    return json.loads((state / "report.json").read_text())["per_second"]


def test_a_receiver_refusing_exactly_the_malformed_records_exits_0(tmp_path):
    """The careful reference receiver (--validate --dedup): every dead letter is an injected
    malformed record it refused, so the stream did all it should: exit 0, the refusals
    counted apart in the summary, report.json, the checkpoint and the dead-letter file."""
    server, store = serve(dedup=True, validate=True)
    done = _stream_into(
        server, tmp_path / "state", "--inject", "malformed=0.02", "--inject", "duplicate=0.02"
    )
    state = tmp_path / "state"
    assert done.returncode == 0, done.stderr
    t, dead = _outcome(state)
    malformed = _malformed_keys(state)
    assert len(malformed) > 10
    assert t["dead_lettered"] == t["expected_refusals"] == len(malformed)
    assert t["acknowledged"] == store.counts["records_kept"] + store.counts["copies_dropped"]
    assert {d["idempotency_key"] for d in dead} == malformed
    assert all(d["expected_refusal"] is True for d in dead)
    checkpoint = Checkpoint.load(state / "checkpoint.json")
    assert (checkpoint.dead_lettered, checkpoint.expected_refusals) == (len(malformed),) * 2
    assert _series(state)[-1]["expected_refusals"] == len(malformed)
    err = done.stderr
    assert f"{len(malformed):,} dead-lettered ({len(malformed):,} of them {EXPECTED})" in err
    assert "reconciled: generated = sent = acknowledged + dead-lettered" in err
    assert f"every dead letter ({len(malformed):,}) is an injected malformed record" in err
    assert "NOT all delivered" not in err
    # Resumed, the finished stream exits as it did.
    again = stream_cli(state, _url(server), "--inject", "malformed=0.02", "--inject",
                       "duplicate=0.02", "--resume")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "had already finished" in again.stderr and EXPECTED in again.stderr


def test_a_receiver_keeping_malformed_records_is_not_a_stream_failure(tmp_path):
    """A naive receiver acknowledges the malformed records: the stream delivered everything
    (exit 0, no dead letter); whether it should have kept them is for ``score``."""
    server, store = serve()
    done = _stream_into(server, tmp_path / "state", "--inject", "malformed=0.02")
    assert done.returncode == 0, done.stderr
    t, dead = _outcome(tmp_path / "state")
    assert (t["dead_lettered"], t["expected_refusals"], dead) == (0, 0, [])
    assert t["acknowledged"] == len(store.records) == t["generated"]
    assert all(row["expected_refusals"] == 0 for row in _series(tmp_path / "state"))


class _OneByOne(http.server.ThreadingHTTPServer):
    """A receiver on a free loopback port that answers every batch 200 and refuses, one by
    one (the ``rejected`` list), the records it finds malformed (as the reference receiver's
    --validate does) and every record whose stream position is a multiple of ``every``: a
    system that refuses clean records too."""

    daemon_threads = True

    def __init__(self, every: int) -> None:
        outer = self
        self.refused: list[str] = []
        self.batches: list[tuple[set[str], set[str]]] = []  # each batch's keys, and its refused
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                records = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rejected = [
                    {"idempotency_key": r["idempotency_key"], "reason": "refused"}
                    for r in records
                    if r["stream_seq"] % every == 0
                    or r["amount_fen"] < 0
                    or r["device_id"] is None
                    or r["event_timestamp"] is None
                ]
                with outer.lock:
                    outer.refused += [r["idempotency_key"] for r in rejected]
                    outer.batches.append(
                        (
                            {r["idempotency_key"] for r in records},
                            {r["idempotency_key"] for r in rejected},
                        )
                    )
                answer(self, 200, json.dumps({"rejected": rejected}).encode(), "application/json")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_a_clean_record_refused_on_its_own_still_exits_7(tmp_path):
    """Clean records refused too: dead letters that are not all expected refusals (exit 7).
    Paced over a few seconds, the per-second lines and report.json's series show the
    expected refusals apart from the other dead letters as they come, up to the summary's."""
    server = _OneByOne(every=100)
    state = tmp_path / "state"
    paced = ("--inject", "malformed=0.02", "--rate", "600")
    done = _stream_into(server, state, *paced, quiet=False)
    assert done.returncode == 7, done.stderr
    t, dead = _outcome(state)
    malformed = _malformed_keys(state)
    refused = set(server.refused)
    clean_refused = refused - malformed
    assert len(clean_refused) > 5 and malformed <= refused
    assert {d["idempotency_key"] for d in dead} == refused
    # Only the malformed ones are expected refusals, in the file as in the counts: all of them
    # but those of a batch the sink refused whole with a clean record in it (the pacer's
    # batches at 600/s are a few records each: one can hold a clean record refused and a
    # malformed one only), where it judged no record's defect (traffic/delivery.py).
    judged = set().union(
        *(sent & malformed for sent, out in server.batches if out != sent or sent <= malformed)
    )
    assert malformed <= set().union(*(sent for sent, _ in server.batches))  # each sent once
    assert len(judged) >= len(malformed) - 3  # such a batch is rare
    assert {d["idempotency_key"] for d in dead if d.get("expected_refusal")} == judged
    assert t["expected_refusals"] == len(judged) and t["dead_lettered"] == len(refused)
    assert (
        f"NOT all delivered: {len(refused):,} of {t['generated']:,} records dead-lettered; "
        f"{len(judged):,} of them {EXPECTED}, the other {len(refused) - len(judged):,} not (exit 7)"
    ) in done.stderr
    # Each second: the running totals, one printed line a row of the series.
    series = _series(state)
    assert len(series) >= 2  # 1,368 records at 600/s: rows at 1 s, 2 s and the last
    assert _second_lines(done.stderr) == [
        (row["dead_lettered"], row["expected_refusals"]) for row in series
    ]
    expected = [row["expected_refusals"] for row in series]
    assert expected == sorted(expected) and expected[0] < expected[-1]  # seen as they came
    assert all(row["expected_refusals"] <= row["dead_lettered"] for row in series)
    assert (series[-1]["dead_lettered"], expected[-1]) == (len(refused), t["expected_refusals"])
    last_line = [line for line in done.stderr.splitlines() if _SECOND_LINE.match(line)][-1]
    assert f"dead {len(refused):,} ({len(judged):,} expected refusals)" in last_line


def test_a_receiver_refusing_every_record_one_by_one_is_given_up_on_malformed_records_or_not(
    tmp_path,
):
    """A receiver that refuses every record on its own (it expects another schema, say) takes
    nothing: with malformed records injected too, the stream gives up on it after its first
    batches, as without them (exit 2, the same hint), and the malformed records it refused
    with all the others are no expected refusals. (They used to count as taken, so the stream
    never gave up and ended with exit 7 instead, the hint lost.)"""
    errors = []
    for name, flags in (("clean", ()), ("dirty", ("--inject", "malformed=0.02"))):
        state = tmp_path / name
        server = _OneByOne(every=1)
        done = _stream_into(server, state, "--batch-size", "100", *flags)
        assert done.returncode == 2, done.stderr
        (error,) = done.stderr.strip().splitlines()
        assert "took none of the records of the stream's first 3 batches: refused" in error
        assert "check the URL, that the receiver is up and what it accepts" in error
        errors.append(error.replace(_url(server), "URL").replace(str(state), "STATE"))
        report = json.loads((state / "report.json").read_text())
        t = report["totals"]
        assert not report["finished"] and "first 3 batches" in report["stop_reason"]
        assert (t["acknowledged"], t["expected_refusals"]) == (0, 0)
        assert 0 < t["sent"] < t["generated"] and t["dead_lettered"] == t["sent"]
        dead = json_lines(state / "dead_letters.jsonl")
        assert not any(d.get("expected_refusal") for d in dead)
        if flags:  # malformed records were among those refused (the case in question)
            assert _malformed_keys(state) & {d["idempotency_key"] for d in dead}
    assert errors[0] == errors[1]


def test_batches_of_one_malformed_record_do_not_keep_a_sink_that_refuses_everything(tmp_path):
    """Batches of one record, a receiver refusing every record on its own: a batch holding one
    malformed record, refused, is answered alike by a careful sink and by this one, so it
    counts neither way and the stream still gives up after ten batches of a clean record
    (exit 2). (Such a batch used to count as taken: the stream never gave up, exit 7.)"""
    server = _OneByOne(every=1)
    flags = ("--batch-size", "1", "--concurrency", "1", "--give-up-after", "10")
    flags += ("--inject", "malformed=0.3")
    state = tmp_path / "state"
    done = _stream_into(server, state, *flags)
    assert done.returncode == 2, done.stderr
    assert "took none of the records of the stream's first 10 batches" in done.stderr
    report = json.loads((state / "report.json").read_text())
    t = report["totals"]
    assert not report["finished"] and t["acknowledged"] == 0
    dead = json_lines(state / "dead_letters.jsonl")
    malformed = _malformed_keys(state)
    sent_malformed = [d for d in dead if d["idempotency_key"] in malformed]
    clean = [d for d in dead if d["idempotency_key"] not in malformed]
    assert sent_malformed  # one of the first batches held a malformed record: the case
    assert len(clean) >= 10 and not any(d.get("expected_refusal") for d in clean)
    assert t["sent"] == t["dead_lettered"] == len(dead) < t["generated"]


def test_a_sink_that_acknowledged_nothing_says_so_beside_expected_refusals(tmp_path):
    """Batches of one record, every record refused on its own, the stream sent whole
    (``--give-up-after 0``): the malformed records, alone in their batches, are expected
    refusals, yet the sink took no record, and the summary says so (the hint used to follow
    the failures, which leave the expected refusals out)."""
    server = _OneByOne(every=1)
    flags = ("--batch-size", "1", "--give-up-after", "0", "--inject", "malformed=0.05")
    done = _stream_into(server, tmp_path / "state", *flags)
    assert done.returncode == 7, done.stderr
    t, dead = _outcome(tmp_path / "state")
    malformed = _malformed_keys(tmp_path / "state")
    assert t["acknowledged"] == 0 and t["expected_refusals"] == len(malformed) > 0
    assert {d["idempotency_key"] for d in dead if d.get("expected_refusal")} == malformed
    clean = t["generated"] - len(malformed)
    assert (
        f"{len(malformed):,} of them {EXPECTED}, the other {clean:,} not: the sink took none "
        "of them; check the URL, that the receiver is up and what it accepts (exit 7)"
    ) in done.stderr


def test_malformed_records_in_a_batch_refused_whole_are_not_expected_refusals(tmp_path):
    """A batch refused whole (a 422 of the batch) is refused with its clean records: none of its
    records is an expected refusal, malformed or not; the stream exits 7."""
    server, _ = serve(validate=True, refuse_rate=0.3, seed=5)
    # One batch at a time: the receiver's draws, and so the batches it refuses, in order.
    flags = ("--batch-size", "100", "--concurrency", "1", "--inject", "malformed=0.03")
    done = _stream_into(server, tmp_path / "state", *flags)
    state = tmp_path / "state"
    assert done.returncode == 7, done.stderr
    t, dead = _outcome(state)
    malformed = _malformed_keys(state)
    whole = [d for d in dead if d["reason"].startswith("HTTP 422")]
    one_by_one = [d for d in dead if not d["reason"].startswith("HTTP 422")]
    assert whole and one_by_one
    assert any(d["idempotency_key"] in malformed for d in whole)  # the case in question
    assert not any(d.get("expected_refusal") for d in whole)
    assert all(d["expected_refusal"] and d["idempotency_key"] in malformed for d in one_by_one)
    assert t["expected_refusals"] == len(one_by_one) < len(malformed)
    assert t["dead_lettered"] == len(dead)


def test_a_stream_of_malformed_records_only(tmp_path):
    """Every record malformed: a receiver refusing each on its own took the stream as it should
    (not stopped as a sink that takes nothing: exit 0); a receiver refusing every batch whole
    (a wrong path) did not, and the stream gives up after its first batches (exit 2)."""
    careful, _ = serve(validate=True)
    done = _stream_into(careful, tmp_path / "careful", "--inject", "malformed=1")
    assert done.returncode == 0, done.stderr
    t, _ = _outcome(tmp_path / "careful")
    assert t["acknowledged"] == 0 and t["dead_lettered"] == t["expected_refusals"] > 0
    wrong = Answers(404)
    try:
        stopped = stream_cli(
            tmp_path / "wrong", wrong.url, "--inject", "malformed=1",
            "--batch-size", "50", "--concurrency", "1",
        )  # fmt: skip
    finally:
        wrong.close()
    assert stopped.returncode == 2, stopped.stderr
    assert "took none of the records of the stream's first 3 batches" in stopped.stderr
    report = json.loads((tmp_path / "wrong" / "report.json").read_text())
    assert report["totals"]["expected_refusals"] == 0 and not report["finished"]


def test_expected_refusals_are_kept_across_a_kill_and_a_resume(tmp_path):
    """Killed midway and resumed, the stream counts the refusals of both sessions: the
    checkpoint and the dead-letter file agree on them, and a file whose marks were changed is
    refused on --resume."""
    server, _ = serve(validate=True)
    state = tmp_path / "state"
    flags = ("--inject", "malformed=0.05", "--batch-size", "20")
    try:
        kill_when_some_are_done(
            [*STREAM_CLI, "--sink", _url(server), "--state", str(state), "--quiet", *flags,
             "--rate", "400"],
            state,
        )  # fmt: skip
        killed = Checkpoint.load(state / "checkpoint.json")
        assert not killed.finished and killed.expected_refusals > 0
        done = stream_cli(state, _url(server), *flags, "--resume")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert "resumed at stream position" in done.stderr
    t, dead = _outcome(state)
    malformed = _malformed_keys(state)
    assert t["dead_lettered"] == t["expected_refusals"] == len(malformed) == len(dead)
    assert {d["idempotency_key"] for d in dead} == malformed
    # One mark taken out: the file no longer agrees with the checkpoint.
    path = state / "dead_letters.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0].replace(b'"expected_refusal":true,', b"") + b"".join(lines[1:]))
    tampered = stream_cli(state, _url(server), *flags, "--resume")
    assert tampered.returncode == 2
    assert f"holds {len(dead) - 1} expected refusals up to stream position" in tampered.stderr
    assert f"the checkpoint counts {len(dead)}" in tampered.stderr


def test_a_replay_knows_the_malformed_records_from_its_streams_labels(tmp_path):
    """A dirty recording sent again with its stream's --state (where its labels are) counts the
    refusals of its malformed records as expected (exit 0); sent with another --state it
    cannot tell them from failures (exit 7)."""
    recording = tmp_path / "dirty.parquet"
    made = stream_cli(tmp_path / "rec", f"file://{recording}", "--inject", "malformed=0.02")
    assert made.returncode == 0, made.stderr
    malformed = _malformed_keys(tmp_path / "rec")
    server, _ = serve(validate=True)
    try:
        with_labels = stream_cli(tmp_path / "rec", _url(server), recording=recording)
        without = stream_cli(tmp_path / "other", _url(server), recording=recording)
    finally:
        server.shutdown()
        server.server_close()
    assert with_labels.returncode == 0, with_labels.stderr
    t, dead = _outcome(tmp_path / "rec")
    assert t["expected_refusals"] == len(dead) == len(malformed) > 0
    assert without.returncode == 7, without.stderr
    t, dead = _outcome(tmp_path / "other")
    assert t["expected_refusals"] == 0 and len(dead) == len(malformed)
    assert "NOT all delivered" in without.stderr


def test_malformed_positions_are_found_across_a_days_end():
    positions = MalformedPositions()
    positions.add(np.array([7, 3, 12]))  # day 0: its records 0..12
    positions.add(np.array([], dtype=np.int64))  # a day without any
    positions.add(np.array([13, 40]))  # day 2
    assert positions.among(0, 2).tolist() == []
    assert positions.among(3, 12).tolist() == [3, 7, 12]
    assert positions.among(10, 20).tolist() == [12, 13]
    assert positions.among(41, 100).tolist() == []


def test_a_checkpoint_counting_more_expected_refusals_than_dead_letters_is_refused(tmp_path):
    path = tmp_path / "checkpoint.json"
    Checkpoint("s", done_through=9, acknowledged=8, dead_lettered=2, expected_refusals=2).save(path)
    assert Checkpoint.load(path).expected_refusals == 2
    raw = json.loads(path.read_text())
    path.write_text(json.dumps(raw | {"expected_refusals": 3}))
    with pytest.raises(ValueError, match=r"expected_refusals \(3\) should be from 0 to dead_"):
        Checkpoint.load(path)
