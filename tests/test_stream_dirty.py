"""Dirty data with ground truth (traffic/dirty.py) and the score command (traffic/score.py)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx
import psycopg
import pyarrow as pa
import pytest

from sim.api import load_scenario, privacy_key
from traffic.dirty import Injection
from traffic.receiver import serve
from traffic.score import read_result, score
from traffic.servers import postgres_server
from traffic.stream import StreamSettings, stream

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
CLI = [sys.executable, str(ROOT / "run_scenario.py")]
RATES = ["duplicate=0.05", "late=0.02", "out_of_order=0.03", "clock_skew=0.05", "malformed=0.01"]


def _dirty(state: Path, sink: str, rates=RATES):
    return stream(
        load_scenario(SMALL, days=2),
        StreamSettings(sink=sink, state_dir=state, injection=Injection.parse(rates)),
        privacy_key=privacy_key(None),
    )


def _labels(state: Path):
    return duckdb.sql(f"SELECT * FROM '{state / 'labels' / '*.parquet'}' ORDER BY stream_seq")


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """A dirty stream to a file, its records and labels, and the clean stream's records."""
    tmp = tmp_path_factory.mktemp("dirty")
    assert _dirty(tmp / "state", f"file://{tmp / 'dirty.jsonl'}").reconciled
    clean = tmp / "clean.jsonl"
    assert stream(
        load_scenario(SMALL, days=2),
        StreamSettings(sink=f"file://{clean}", state_dir=tmp / "clean"),
        privacy_key=privacy_key(None),
    ).reconciled
    records = [json.loads(x) for x in (tmp / "dirty.jsonl").read_bytes().splitlines()]
    clean_records = {
        r["transaction_id"]: r for r in map(json.loads, clean.read_bytes().splitlines())
    }
    return tmp, records, _labels(tmp / "state").to_arrow_table().to_pylist(), clean_records


def test_every_record_sent_has_its_label(dirty):
    _, records, labels, clean = dirty
    assert [r["stream_seq"] for r in records] == [lab["stream_seq"] for lab in labels]
    assert [r["idempotency_key"] for r in records] == [lab["idempotency_key"] for lab in labels]
    kinds = {k: sum(lab["kind"] == k for lab in labels) for k in {lab["kind"] for lab in labels}}
    n = len(clean)
    # Shares near the rates (each kind is drawn from clean records only, so a little under).
    assert 0.03 * n < kinds["duplicate"] < 0.07 * n
    assert 0.01 * n < kinds["late"] < 0.03 * n and 0.015 * n < kinds["out_of_order"] < 0.045 * n
    assert 0.003 * n < kinds["malformed"] < 0.02 * n and kinds["clock_skew"] > 0
    assert len(records) == n + kinds["duplicate"]


def test_each_defect_is_what_its_label_says(dirty):
    _, records, labels, clean = dirty
    by_seq = {r["stream_seq"]: r for r in records}
    for record, label in zip(records, labels, strict=True):
        original = clean[label["transaction_id"]]
        kind = label["kind"]
        if kind == "duplicate":
            first = by_seq[label["duplicate_of"]]
            assert first["stream_seq"] < record["stream_seq"]
            same = ("transaction_id", "device_id", "device_serial", "tac", "amount_fen")
            assert all(record[c] == first[c] == original[c] for c in same)
            assert 1 <= label["delay_s"] <= 300
        elif kind == "late":
            assert 3600 <= label["delay_s"] <= 6 * 3600
        elif kind == "out_of_order":
            assert 30 <= label["delay_s"] <= 600
        elif kind == "malformed":
            broken = {
                "negative_amount": record["amount_fen"] == -original["amount_fen"] - 1,
                "missing_device_id": record["device_id"] is None,
                "missing_event_timestamp": record["event_timestamp"] is None,
            }
            assert broken[label["defect"]]
        if label["skew_s"]:
            assert abs(label["skew_s"]) == 300
            assert record["event_timestamp"] != original["event_timestamp"]
        elif kind != "malformed":
            assert record["event_timestamp"] == original["event_timestamp"]
    # Sent out of the taps' order: some record is sent after one that happened later.
    stamps = [r["event_timestamp"] for r in records if r["event_timestamp"]]
    assert stamps != sorted(stamps)


def test_the_same_injections_give_the_same_dirty_stream(tmp_path, dirty):
    tmp, *_ = dirty
    again = tmp_path / "again.jsonl"
    assert _dirty(tmp_path / "state", f"file://{again}").reconciled
    assert again.read_bytes() == (tmp / "dirty.jsonl").read_bytes()
    assert _labels(tmp_path / "state").fetchall() == _labels(tmp / "state").fetchall()


def _scored(tmp_path: Path, expected_exit: int, **receiver) -> dict:
    server, _ = serve(**receiver)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert _dirty(tmp_path / "state", url + "/taps").reconciled
        kept = tmp_path / "kept.jsonl"
        kept.write_bytes(httpx.get(url + "/records").content)
    finally:
        server.shutdown()
        server.server_close()
    done = subprocess.run(
        [*CLI, "score", "--labels", str(tmp_path / "state" / "labels"), "--result", str(kept),
         "--json", str(tmp_path / "score.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == expected_exit, done.stderr
    assert "duplicates:" in done.stdout and "money:" in done.stdout
    return json.loads((tmp_path / "score.json").read_text()) | {"stdout": done.stdout}


def test_score_tells_a_naive_receiver_from_one_that_deduplicates(tmp_path):
    naive = _scored(tmp_path / "naive", 1)  # exit 1: FAILED, a CI gate
    careful = _scored(tmp_path / "careful", 0, dedup=True, validate=True)
    n, c = naive["duplicates"], careful["duplicates"]
    assert n["copies_sent"] == c["copies_sent"] > 0
    assert n["recall"] == 0.0 and n["caught"] == 0 and n["missed"] == n["copies_sent"]
    assert c["recall"] == 1.0 and c["precision"] == 1.0 and c["genuine_lost"] == 0
    assert naive["malformed"]["recall"] == 0.0 and careful["malformed"]["recall"] == 1.0
    assert naive["money_fen"]["over_counted"] > 0 and not naive["money_fen"]["reconciled"]
    assert careful["money_fen"]["reconciled"] and careful["money_fen"]["difference"] == 0
    for kind in ("late", "out_of_order", "clock_skew"):
        assert careful["should_be_kept"][kind]["kept"] == careful["should_be_kept"][kind]["sent"]
    assert careful["verdict"] == {"passed": True, "failures": []}
    assert "PASSED: the system kept the dirty stream as it should" in careful["stdout"]
    assert not naive["verdict"]["passed"]
    failures = naive["verdict"]["failures"]
    assert f"{n['missed']:,} duplicate copies kept" in failures
    assert f"{naive['malformed']['missed']:,} malformed records kept" in failures
    assert f"money off by {naive['money_fen']['difference']:+,} fen" in failures
    assert f"FAILED: {'; '.join(failures)}" in naive["stdout"]


def _score_cli(labels: Path, result: Path):
    return subprocess.run(
        [*CLI, "score", "--labels", str(labels), "--result", str(result)],
        capture_output=True, text=True,
    )  # fmt: skip


def test_a_result_of_another_stream_is_refused_not_scored(dirty, tmp_path):
    """Another stream's records (here the clean stream of the same scenario, then a top-ups
    stream): none of their keys is the labels' stream's, so nothing can be scored; scored,
    every malformed record and copy would look refused (absent)."""
    tmp, _, labels, clean = dirty
    clean_id = next(iter(clean.values()))["idempotency_key"].rpartition(":")[0]
    dirty_id = labels[0]["idempotency_key"].rpartition(":")[0]
    done = _score_cli(tmp / "state" / "labels", tmp / "clean.jsonl")
    assert done.returncode == 2, done.stdout
    assert f"none of its {len(clean):,} records is of the labels' stream {dirty_id}" in done.stderr
    assert f"keys are of stream {clean_id} ({len(clean):,})" in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    topups = tmp_path / "topups.jsonl"
    assert stream(
        load_scenario(SMALL, days=2),
        StreamSettings(sink=f"file://{topups}", state_dir=tmp_path / "t", record_format="topups"),
        privacy_key=privacy_key(None),
    ).reconciled
    done = _score_cli(tmp / "state" / "labels", topups)
    assert done.returncode == 2 and "none of its" in done.stderr, done.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("idempotency_key\n")
    done = _score_cli(tmp / "state" / "labels", empty)
    assert done.returncode == 2 and "holds no records" in done.stderr, done.stderr


def test_other_streams_records_in_a_result_are_left_out(dirty, tmp_path):
    """A table shared by several streams: the labels' stream's records are scored, the
    others counted apart, not as unknown keys of the stream."""
    tmp, records, labels, clean = dirty
    both = tmp_path / "both.jsonl"
    both.write_bytes((tmp / "dirty.jsonl").read_bytes() + (tmp / "clean.jsonl").read_bytes())
    alone = score(tmp / "state" / "labels", read_result(str(tmp / "dirty.jsonl")))
    mixed = score(tmp / "state" / "labels", read_result(str(both)))
    assert mixed["other_streams_records"] == len(clean) and alone["other_streams_records"] == 0
    assert mixed["unknown_keys"] == 0 and mixed["records_kept"] == len(records)
    for part in ("duplicates", "malformed", "money_fen", "should_be_kept", "verdict"):
        assert mixed[part] == alone[part]


def test_copies_of_a_tap_kept_not_at_all_are_not_caught(dirty):
    """A copy absent because its whole tap was lost is no catch: a system that keeps nothing
    of the duplicated taps has caught none of their copies (recall n/a, not 100%)."""
    tmp, records, labels, _ = dirty
    duplicated = {lab["transaction_id"] for lab in labels if lab["kind"] == "duplicate"}
    kept = [lab["idempotency_key"] for lab in labels if lab["transaction_id"] not in duplicated]
    report = score(tmp / "state" / "labels", pa.table({"key": kept}))
    d = report["duplicates"]
    assert d["copies_sent"] == len([lab for lab in labels if lab["kind"] == "duplicate"]) > 0
    assert d["caught"] == d["missed"] == 0 and d["lost_with_their_tap"] == d["copies_sent"]
    assert d["recall"] is None and d["precision"] == 0.0
    assert d["genuine_lost"] == len(duplicated)
    assert f"{len(duplicated):,} genuine taps lost" in report["verdict"]["failures"]


def test_score_reads_a_postgres_table_and_counts_lost_taps(tmp_path):
    with postgres_server() as url:
        assert _dirty(tmp_path / "state", f"{url}?table=received").reconciled
        with psycopg.connect(url) as conn:
            # A system that keeps one record per tap, and loses every tap of device 0.
            conn.execute(
                "CREATE TABLE kept AS SELECT DISTINCT ON (device_id, device_serial) * "
                "FROM received WHERE device_id <> 0 ORDER BY device_id, device_serial, stream_seq"
            )
            (lost_device,) = conn.execute(
                "SELECT count(DISTINCT device_serial) FROM received WHERE device_id = 0 "
                "AND amount_fen >= 0 AND event_timestamp IS NOT NULL"  # well-formed taps
            ).fetchone()
        report = score(tmp_path / "state" / "labels", read_result(url, "kept"))
    d = report["duplicates"]
    assert lost_device > 0 and d["genuine_lost"] == lost_device
    assert d["precision"] < 1.0 and report["money_fen"]["lost"] > 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["stream", str(SMALL), "--sink", "null", "--inject", "typo=0.1"], "expected KIND=RATE"),
        (["stream", str(SMALL), "--sink", "null", "--inject", "late=2"], "between 0 and 1"),
        (
            ["stream", str(SMALL), "--sink", "null", "--format", "topups", "--inject", "late=0.1"],
            "use it with --format taps",
        ),
        (["score", "--labels", "/nonexistent", "--result", str(SMALL)], "expected a .csv"),
    ],
)
def test_bad_dirty_flags_and_score_inputs(tmp_path, args, expected):
    done = subprocess.run(
        [*CLI, *args, *(["--state", str(tmp_path)] if args[0] == "stream" else [])],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr


def test_a_result_without_keys_is_refused(tmp_path):
    (tmp_path / "labels").mkdir()
    result = tmp_path / "r.csv"
    result.write_text("device_id,device_serial\n1,2\n")
    done = subprocess.run(
        [*CLI, "score", "--labels", str(tmp_path / "labels"), "--result", str(result)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "no idempotency_key or stream_seq column" in done.stderr


def _profile_pacer(tmp_path: Path, text: str):
    from traffic.pacing import ProfilePacer, load_profile

    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return ProfilePacer(load_profile(path))


def _scored_file(labels: Path, sent: Path) -> dict:
    """The scores of a system that kept every record of ``sent`` (a JSON-lines file)."""
    return score(labels, read_result(str(sent)))


def test_only_records_sent_have_labels_when_a_profile_ends_or_a_stream_stops(tmp_path):
    """A profile ends mid-day, a stop comes mid-day: the days already made but not sent
    have no labels, so a system that kept every record sent has lost none."""
    import threading

    from traffic.pacing import RatePacer

    rates = Injection.parse(["duplicate=0.05", "malformed=0.02", "late=0.02"])
    profile = "stages:\n  - {duration: 1s, target: 600}\n  - {duration: 1s, target: 600}\n"
    cases = {
        "profile": {"pacer": _profile_pacer(tmp_path, profile)},
        "stopped": {"pacer": RatePacer(800)},
    }
    for name, settings in cases.items():
        stop = threading.Event()
        if name == "stopped":
            threading.Timer(2.0, stop.set).start()
        sent = tmp_path / f"{name}.jsonl"
        state = tmp_path / name
        report = stream(
            load_scenario(SMALL, days=2),
            StreamSettings(
                sink=f"file://{sent}", state_dir=state, injection=rates, batch_size=50, **settings
            ),
            privacy_key=privacy_key(None),
            stop=stop,
        )
        records = sent.read_bytes().splitlines()
        assert 0 < len(records) == report.totals["acknowledged"] < 3000, name
        labels = _labels(state).fetchall()
        assert len(labels) == len(records), name
        scores = _scored_file(state / "labels", sent)
        assert scores["records_sent"] == len(records) and scores["unknown_keys"] == 0
        assert scores["duplicates"]["genuine_lost"] == 0, (name, scores)
        assert scores["money_fen"]["lost"] == 0, (name, scores)
        assert scores["malformed"]["caught"] == 0  # kept them all


def test_labels_of_a_resumed_dirty_stream_are_the_uninterrupted_ones(tmp_path, dirty):
    import threading

    from traffic.pacing import RatePacer

    tmp, *_ = dirty
    sent = tmp_path / "dirty.jsonl"
    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()
    settings = StreamSettings(
        sink=f"file://{sent}", state_dir=tmp_path / "state", injection=Injection.parse(RATES),
        pacer=RatePacer(800), batch_size=50,
    )  # fmt: skip
    first = stream(load_scenario(SMALL, days=2), settings, privacy_key=privacy_key(None), stop=stop)
    assert not first.finished
    assert len(_labels(tmp_path / "state").fetchall()) == first.totals["acknowledged"]
    resumed = dataclasses.replace(settings, resume=True, pacer=RatePacer(50_000))
    assert stream(load_scenario(SMALL, days=2), resumed, privacy_key=privacy_key(None)).reconciled
    assert sent.read_bytes() == (tmp / "dirty.jsonl").read_bytes()
    assert _labels(tmp_path / "state").fetchall() == _labels(tmp / "state").fetchall()


def test_a_key_kept_twice_is_counted_apart_and_never_makes_caught_negative(tmp_path):
    """A receiver with at-least-once delivery may keep a record twice: the duplicate scores
    stay between 0 and 1, and the records kept twice are reported."""
    state = tmp_path / "state"
    assert _dirty(state, "null").reconciled
    con = duckdb.connect()
    labels = f"{state / 'labels' / '*.parquet'}"
    # A perfect system: one record per tap (the first sent), malformed ones refused.
    perfect = con.sql(
        f"""SELECT idempotency_key FROM (
               SELECT idempotency_key, row_number() OVER (PARTITION BY device_id, device_serial,
                      transaction_id ORDER BY stream_seq) AS n
               FROM '{labels}' WHERE kind <> 'malformed') WHERE n = 1"""
    ).to_arrow_table()
    best = score(state / "labels", perfect.rename_columns(["key"]))
    assert best["duplicates"]["recall"] == 1.0 and best["duplicates"]["precision"] == 1.0
    twice = con.sql(
        f"""SELECT idempotency_key FROM '{labels}' WHERE kind = 'clean' AND transaction_id NOT IN
            (SELECT transaction_id FROM '{labels}' WHERE kind = 'duplicate')
            ORDER BY stream_seq LIMIT 100"""
    ).to_arrow_table()
    kept = pa.concat_tables([perfect, twice, twice.slice(0, 10)]).rename_columns(["key"])
    report = score(state / "labels", kept)
    d = report["duplicates"]
    assert d["caught"] == best["duplicates"]["caught"] == d["copies_sent"] > 0
    assert d["missed"] == 0 and d["recall"] == 1.0 and d["precision"] == 1.0
    assert report["kept_more_than_once"] == {"records": 100, "extra_copies": 110}
    assert report["money_fen"]["over_counted"] > 0
    # A tap kept three times, with one copy sent: one copy missed, not a negative catch.
    one_copy = con.sql(
        f"""SELECT l.idempotency_key FROM '{labels}' l JOIN '{labels}' c
              ON c.duplicate_of = l.stream_seq WHERE c.kind = 'duplicate' LIMIT 1"""
    ).fetchall()[0][0]
    thrice = pa.concat_tables(
        [perfect.rename_columns(["key"]), pa.table({"key": [one_copy, one_copy]})]
    )
    d = score(state / "labels", thrice)["duplicates"]
    assert d["caught"] == d["copies_sent"] - 1 and d["missed"] == 1 and 0 < d["recall"] < 1


def test_restamped_defects_stay_in_the_records(tmp_path):
    """--restamp stamps each record with the wall clock plus its own offset: a skewed clock is
    still off by its skew, a late record still late, a record without a time still without."""
    import datetime as dt

    sent = tmp_path / "restamped.jsonl"
    state = tmp_path / "state"
    before = dt.datetime.now().replace(microsecond=0)
    report = stream(
        load_scenario(SMALL, days=1),
        StreamSettings(
            sink=f"file://{sent}", state_dir=state, restamp=True,
            injection=Injection.parse(["malformed=0.3", "clock_skew=0.5", "late=0.05"]),
        ),
        privacy_key=privacy_key(None),
    )  # fmt: skip
    assert report.reconciled
    records = [json.loads(x) for x in sent.read_bytes().splitlines()]
    labels = _labels(state).to_arrow_table().to_pylist()
    missing = [lab["defect"] == "missing_event_timestamp" for lab in labels]
    assert sum(missing) > 0
    assert [r["event_timestamp"] is None for r in records] == missing
    # Unpaced, every record is due at the start: its stamp is that second plus its offset.
    wall0 = dt.datetime.fromisoformat(records[0]["event_timestamp"]) - dt.timedelta(
        seconds=labels[0]["skew_s"] - labels[0]["delay_s"]
    )
    assert before - dt.timedelta(seconds=1) <= wall0 <= dt.datetime.now()
    skewed = 0
    for record, label in zip(records, labels, strict=True):
        if record["event_timestamp"] is None:
            continue
        offset = dt.datetime.fromisoformat(record["event_timestamp"]) - wall0
        assert offset.total_seconds() == label["skew_s"] - label["delay_s"]
        skewed += label["skew_s"] != 0
    assert skewed > 100 and any(lab["kind"] == "late" for lab in labels)
