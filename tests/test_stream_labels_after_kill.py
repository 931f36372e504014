"""A dirty stream killed (SIGKILL) and not resumed leaves labels of records it never sent (a
day's labels are written before its records go out, and the cut at the end never ran): the
score leaves them out by the stream's checkpoint, and says so."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
from stream_helpers import ROOT, SMALL, json_lines, kill_when_some_are_done

CLI = [sys.executable, str(ROOT / "run_scenario.py")]
RATES = ["duplicate=0.05", "late=0.02", "out_of_order=0.03", "clock_skew=0.05", "malformed=0.01"]


def test_labels_a_killed_stream_wrote_ahead_are_left_out_of_the_score(tmp_path):
    state, sent = tmp_path / "state", tmp_path / "sent.jsonl"
    inject = [arg for rate in RATES for arg in ("--inject", rate)]
    kill_when_some_are_done(
        [*CLI, "stream", str(SMALL), "--days", "2", "--sink", f"file://{sent}",
         "--state", str(state), "--rate", "500", "--batch-size", "20", "--quiet", *inject],
        state,
    )  # fmt: skip
    through = json.loads((state / "checkpoint.json").read_text())["sent_through"]
    labels = duckdb.sql(f"SELECT stream_seq FROM '{state / 'labels' / '*.parquet'}'").fetchall()
    ahead = sum(seq > through for (seq,) in labels)
    assert ahead > 0  # written ahead of what went out, and not cut: what the score must mend
    records = json_lines(sent)  # what the system kept: every record that arrived
    scored = subprocess.run(
        [*CLI, "score", "--labels", str(state / "labels"), "--result", str(sent),
         "--json", str(tmp_path / "score.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    # Exit 1: the system kept every record it got, copies and malformed ones too (FAILED).
    assert scored.returncode == 1, scored.stderr
    assert "FAILED: " in scored.stdout and "duplicate copies kept" in scored.stdout
    report = json.loads((tmp_path / "score.json").read_text())
    assert report["labels_left_out"] == {"records": ahead, "after_stream_seq": through}
    assert report["records_sent"] == len(labels) - ahead
    # The system kept all it got: no tap lost, no money lost (the labels ahead made both).
    assert report["duplicates"]["genuine_lost"] == 0
    assert report["money_fen"]["lost"] == 0
    # Records that arrived after the last checkpoint have no label left: unknown keys.
    assert report["unknown_keys"] == sum(r["stream_seq"] > through for r in records)
    assert f"NOTE: {ahead:,} labels after stream position {through:,} left out" in scored.stdout
