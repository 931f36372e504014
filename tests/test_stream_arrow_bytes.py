"""A stream's Arrow bytes are the same on every run (traffic/records.py ``_zeroed_under_nulls``).

The clearing files are made by DuckDB, which leaves whatever was in memory under a null (a
rejected record's ``settle_date``): the values, and so JSON, CSV and Parquet, were the same each
run, but an Arrow IPC stream carries the buffers as they are, and its bytes differed from one
process to the next. The bytes under each null of a fixed-width column are now zero.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from stream_helpers import arrow_stream_bytes

from traffic.records import _zeroed_under_nulls

ROOT = Path(__file__).resolve().parent.parent

# Streams one day of small_ci in a record format to a null sink that hashes each batch's Arrow
# encoding (the bytes an HTTP sink with --encoding arrow would send), and prints the hash.
HASHED_STREAM = """
import hashlib, sys, tempfile
from pathlib import Path
import traffic.sinks.null as null
from sim.api import load_scenario
from sim.privacy import PrivacyKey
from traffic.sinks import Outcome, SinkOptions
from traffic.stream import StreamSettings, stream

digest = hashlib.sha256()

def send(self, batch, encoder):
    digest.update(bytes(encoder.encode(batch.table, "arrow")))
    return Outcome()

null.NullSink.send = send
scenario = load_scenario("scenarios/small_ci.yaml", days=1)
with tempfile.TemporaryDirectory() as tmp:
    settings = StreamSettings(
        sink="null", state_dir=Path(tmp) / "state", record_format=sys.argv[1],
        sink_options=SinkOptions(encoding="arrow"),
    )
    stream(scenario, settings, privacy_key=PrivacyKey(bytes(32)))
print(digest.hexdigest())
"""


@pytest.mark.parametrize("record_format", ["clearing"])
def test_the_same_stream_is_the_same_arrow_bytes_in_every_process(record_format: str):
    digests = set()
    for hash_seed in ("1", "2"):  # two processes, their memory laid out differently
        done = subprocess.run(
            [sys.executable, "-c", HASHED_STREAM, record_format],
            cwd=ROOT,
            env=os.environ | {"PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def _with_garbage(values: pa.Array, junk: bytes) -> pa.Array:
    """``values`` (nulls among them) with ``junk`` written under its nulls, as DuckDB may."""
    validity, data = values.buffers()[:2]
    raw = np.frombuffer(data, np.uint8).copy()
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(values.type):
        bits = np.unpackbits(raw, bitorder="little")
        bits[: len(values)][~valid] = junk[0] & 1  # a bit of the junk
        raw = np.packbits(bits, bitorder="little")
    else:
        width = values.type.bit_width // 8
        rows = raw[: len(values) * width].reshape(len(values), width)
        rows[~valid] = np.frombuffer(junk * width, np.uint8)[:width]
    return pa.Array.from_buffers(
        values.type, len(values), [validity, pa.py_buffer(raw.tobytes())], values.null_count
    )


def _ipc(array: pa.Array) -> bytes:
    return arrow_stream_bytes(pa.table({"column": array}))


LEAVES = {
    "date": pa.array([dt.date(2024, 3, 1), None, dt.date(2024, 3, 2), None], pa.date32()),
    "time": pa.array([1, None, 3, None], pa.timestamp("s")),
    "fen": pa.array([100, None, -5, None], pa.decimal128(38, 0)),
    "flag": pa.array([True, None, False, None], pa.bool_()),
    "name": pa.array(["a", None, "b", None]),
}


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_junk_under_nulls_is_zeroed_and_the_values_kept(name: str):
    clean = LEAVES[name]
    one, two = _with_garbage_if_fixed(clean, b"\xab"), _with_garbage_if_fixed(clean, b"\x5c")
    assert one.equals(clean) and two.equals(clean)  # the same values...
    if name != "name":
        assert _ipc(one) != _ipc(two)  # ...in other bytes
    fixed_one, fixed_two = _zeroed_under_nulls(one), _zeroed_under_nulls(two)
    assert fixed_one.equals(clean) and fixed_one.null_count == clean.null_count
    assert _ipc(fixed_one) == _ipc(fixed_two)


def _with_garbage_if_fixed(values: pa.Array, junk: bytes) -> pa.Array:
    return values if pa.types.is_string(values.type) else _with_garbage(values, junk)


def test_junk_in_nested_columns_is_zeroed():
    # list<struct<...>>, as the clearing files' summary and detail columns, with a null entry.
    def nested(junk: bytes) -> pa.Array:
        fields = {k: _with_garbage_if_fixed(v, junk) for k, v in LEAVES.items()}
        entries = pa.StructArray.from_arrays(list(fields.values()), names=list(fields))
        return pa.ListArray.from_arrays(pa.array([0, 1, 1, 4]), entries)

    one, two = nested(b"\xab"), nested(b"\x5c")
    assert one.equals(two) and _ipc(one) != _ipc(two)
    fixed_one, fixed_two = _zeroed_under_nulls(one), _zeroed_under_nulls(two)
    assert fixed_one.equals(one) and _ipc(fixed_one) == _ipc(fixed_two)


def test_a_sliced_array_is_refused_rather_than_misread():
    with pytest.raises(ValueError, match="offset 0"):
        _zeroed_under_nulls(LEAVES["date"].slice(1))
