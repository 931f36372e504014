"""A recorded stream sent again (traffic/recording.py): the same bytes as the live stream, in
every format and with dirty data; resumable after a kill; a file that is not a complete,
unaltered recording is bad input and nothing is sent.

Recordings are made by the real command (``--sink file:///X.parquet``) from the small CI
scenario; replays go to files and to the reference HTTP receiver on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stream_helpers import json_lines, kill_when_some_are_done

from sim.api import load_scenario, privacy_key
from traffic.dirty import Injection
from traffic.pacing import SpeedPacer
from traffic.receiver import serve
from traffic.recording import Recording, RecordingError
from traffic.sinks import SinkOptions
from traffic.stream import StreamSettings, replay, stream

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
STREAM = [sys.executable, str(ROOT / "run_scenario.py"), "stream"]


def _live(tmp_path: Path, sink: str, record_format="taps", injection=None):
    settings = StreamSettings(
        sink=sink,
        state_dir=tmp_path / "live-state",
        record_format=record_format,
        sink_options=SinkOptions(record_format=record_format),
        injection=injection,
    )
    return stream(load_scenario(SMALL, days=2), settings, privacy_key=privacy_key(None))


def _replay(recording: Recording, tmp_path: Path, sink: str, **kw):
    fmt = recording.record_format
    settings = StreamSettings(
        sink=sink,
        state_dir=tmp_path / "replay-state",
        record_format=fmt,
        sink_options=SinkOptions(record_format=fmt),
        **kw,
    )
    return replay(recording, settings)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """Two days of tap records, recorded by the command."""
    folder = tmp_path_factory.mktemp("recorded")
    path = folder / "taps.parquet"
    done = subprocess.run(
        [*STREAM, str(SMALL), "--days", "2", "--sink", f"file://{path}", "--quiet",
         "--state", str(folder / "state")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture(scope="module")
def live_taps(tmp_path_factory) -> tuple[Path, str]:
    """The same stream, live, as JSON lines; and its id."""
    folder = tmp_path_factory.mktemp("live")
    path = folder / "taps.jsonl"
    report = _live(folder, f"file://{path}")
    return path, report.stream_id


def test_a_replay_sends_the_live_streams_bytes(tmp_path, recorded, live_taps):
    live_path, live_id = live_taps
    again = tmp_path / "again.jsonl"
    done = subprocess.run(
        [*STREAM, str(recorded), "--sink", f"file://{again}", "--quiet", "--state",
         str(tmp_path / "state")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"stream {live_id} " in done.stderr and "reconciled" in done.stderr
    assert again.read_bytes() == live_path.read_bytes()


@pytest.mark.parametrize("record_format", ["uploads", "clearing", "topups"])
def test_every_format_replays_as_it_streamed(tmp_path, record_format):
    path = tmp_path / f"{record_format}.parquet"
    recorded = _live(tmp_path / "rec", f"file://{path}", record_format)
    live = tmp_path / "live.jsonl"
    _live(tmp_path / "live", f"file://{live}", record_format)
    recording = Recording.open(path)
    assert recording.record_format == record_format
    assert recording.stream_id == recorded.stream_id
    again = tmp_path / "again.jsonl"
    report = _replay(recording, tmp_path, f"file://{again}")
    assert report.reconciled and report.totals["generated"] == recorded.totals["generated"]
    assert again.read_bytes() == live.read_bytes()


def test_a_dirty_recording_replays_its_defects_in_send_order(tmp_path):
    injection = Injection.parse(
        ["duplicate=0.05", "late=0.05", "clock_skew=0.1", "malformed=0.02"], 300
    )
    path = tmp_path / "dirty.parquet"
    _live(tmp_path / "rec", f"file://{path}", injection=injection)
    live = tmp_path / "live.jsonl"
    _live(tmp_path / "live", f"file://{live}", injection=injection)
    recording = Recording.open(path)
    due = np.concatenate([c.event_s for c in recording.chunks()])
    assert (np.diff(due) >= 0).all()  # --speed paces late records where they were sent
    stamps = pq.read_table(path, columns=["event_timestamp"]).column(0).cast(pa.int64())
    assert (np.diff(stamps.to_numpy()) < 0).any()  # the records themselves are out of order
    assert pq.read_table(path, columns=["event_timestamp"]).column(0).null_count > 0
    again = tmp_path / "again.jsonl"
    assert _replay(recording, tmp_path, f"file://{again}").reconciled
    assert again.read_bytes() == live.read_bytes()
    # Replayed at --speed: records without a time go out with the record before them.
    paced = _replay(recording, tmp_path / "paced", "null", pacer=SpeedPacer(10**6))
    assert paced.reconciled and paced.totals["generated"] == recording.num_records


def test_a_killed_replay_resumes_with_the_rest_into_the_receiver(tmp_path, recorded, live_taps):
    server, store = serve(fail_rate=0.1, timeout_rate=0.02, hang_s=0.5, seed=11)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/taps"
        state = tmp_path / "state"
        cmd = [*STREAM, str(recorded), "--sink", url, "--state", str(state), "--timeout", "0.3"]
        kill_when_some_are_done([*cmd, "--rate", "400", "--batch-size", "20"], state)
        killed_at = len(store.records)
        done = subprocess.run([*cmd, "--resume", "--quiet"], capture_output=True, text=True)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert 0 < killed_at < len(store.records)
    expected = {r["idempotency_key"]: r for r in json_lines(live_taps[0])}
    assert {k: json.loads(v) for k, v in store.records.items()} == expected


def _rewritten(tmp_path: Path, recorded: Path, change) -> Path:
    table = change(pq.read_table(recorded))
    path = tmp_path / "changed.parquet"
    pq.write_table(table, path)
    return path


def _column_replaced(table: pa.Table, name: str, values) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(name), pa.array(values))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.slice(0, 10).append_column("x", pa.array(range(10))), "not a stream's: x"),
        (lambda t: t.drop_columns(["fare_product"]), "missing fare_product"),
        (
            lambda t: t.take(pa.array([i for i in range(t.num_rows) if i != 5])),
            "row 5: stream_seq is 6, expected 5",
        ),
        (
            lambda t: _column_replaced(
                t, "idempotency_key", ["other:0", *t.column("idempotency_key").to_pylist()[1:]]
            ),
            "row 1: idempotency_key is",
        ),
        (lambda t: t.slice(0, 0), "has no records"),
        (
            lambda t: t.drop_columns(["service_date"]),  # recorded before records carried it
            "recorded by an earlier CardTwin, whose records had no service_date",
        ),
    ],
)
def test_a_file_that_is_not_a_whole_recording_is_refused(tmp_path, recorded, change, expected):
    path = _rewritten(tmp_path, recorded, change)
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [*STREAM, str(path), "--sink", f"file://{out}", "--state", str(tmp_path / "s")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert str(path) in done.stderr and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()  # nothing sent


def test_a_runs_own_files_and_other_files_are_not_recordings(tmp_path):
    text = tmp_path / "taps.parquet"
    text.write_text("transaction_id,amount_fen\n1,200\n")
    with pytest.raises(RecordingError, match="not a readable Parquet file"):
        Recording.open(text)
    run_like = tmp_path / "transactions.parquet"
    pq.write_table(pa.table({"transaction_id": [1], "amount_fen": [200]}), run_like)
    with pytest.raises(RecordingError, match="not a recorded stream.*missing"):
        Recording.open(run_like)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--days", "1"], "--days"),
        (["--seed", "0"], "--seed"),
        (["--set", "fares.bus_fen=100"], "--set"),
        (["--inject", "duplicate=0.1"], "--inject"),
        (["--skew-seconds", "60"], "--skew-seconds"),
        (["--unmasked"], "--unmasked"),
        (["--format", "topups"], "holds taps records"),
    ],
)
def test_flags_that_shape_a_simulation_are_refused_for_a_recording(
    tmp_path, recorded, flags, expected
):
    done = subprocess.run(
        [*STREAM, str(recorded), "--sink", "null", "--state", str(tmp_path), *flags],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr


def test_a_replay_keeps_its_streams_labels_and_drops_another_streams(tmp_path):
    """A dirty recording's labels are in its state folder; replaying it with that folder (the
    same stream, the same keys) keeps them, where the replay does not write labels of its own.
    Another stream's labels there would mislead: they go, as a new live stream's would."""
    injection = Injection.parse(["duplicate=0.05", "malformed=0.02"], 300)
    path = tmp_path / "dirty.parquet"
    _live(tmp_path, f"file://{path}", injection=injection)
    state = tmp_path / "live-state"
    labels = {p.name: p.read_bytes() for p in (state / "labels").glob("day=*.parquet")}
    assert labels
    recording = Recording.open(path)
    settings = StreamSettings(sink="null", state_dir=state)
    assert replay(recording, settings).reconciled
    assert {p.name: p.read_bytes() for p in (state / "labels").glob("day=*.parquet")} == labels
    # A replay of another (clean) recording into that folder: those labels are not its own.
    clean = tmp_path / "clean.parquet"
    _live(tmp_path / "clean", f"file://{clean}")
    assert replay(Recording.open(clean), settings).reconciled
    assert not (state / "labels").exists()
