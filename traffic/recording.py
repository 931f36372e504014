"""A recorded stream: the records of a stream written to a Parquet file, sent again as they were.

Recording is a stream like any other, to a Parquet file::

    python run_scenario.py stream scenarios/nantong_2024.yaml --days 7 \\
        --sink file:///data/nantong_week.parquet

Replaying gives the system under test the same records again — the same stream id and
idempotency keys, in the same order — without simulating anything, so as fast as the sink
takes them (a load test at rates the live simulation cannot generate) or paced like any
stream::

    python run_scenario.py stream /data/nantong_week.parquet --sink URL [--rate R | --speed X]

A recording is checked whole before the first record goes out: its columns must be one
format's (``traffic.records.stream_schema``), its stream positions 0, 1, 2... with no gap, and
each idempotency key the stream's id and the record's position. A file that fails is bad input,
named with what was expected; nothing is sent.

Pacing by ``--speed`` uses the recorded times made non-decreasing: a dirty recording
(``--inject``) holds late and skewed records at the place they were sent, and each goes out
right after the record before it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from traffic.records import (
    FORMATS,
    NO_TIME,
    Chunk,
    StreamStopped,
    epoch_seconds,
    put_chunk,
    stream_schema,
)

#: Records read and handed to the pacer at a time.
CHUNK_ROWS = 65_536


class RecordingError(ValueError):
    """The file is not a complete, unaltered recording of a stream (bad input)."""


class Recording:
    """A stream recorded in a Parquet file (module docstring). ``open`` checks it."""

    def __init__(self, parquet: pq.ParquetFile, path: Path, record_format: str, stream_id: str):
        self._parquet = parquet
        self.path = path
        self.record_format = record_format
        self.stream_id = stream_id
        self.num_records = parquet.metadata.num_rows

    @classmethod
    def open(cls, path: str | Path) -> Recording:
        """The recording in ``path``; raises RecordingError naming what is wrong."""
        path = Path(path)
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise RecordingError(f"{path}: not a readable Parquet file ({exc})") from None
        record_format = _format_of(path, parquet.schema_arrow)
        positions = parquet.read(columns=["stream_seq", "idempotency_key"])
        stream_id = _check_positions(path, positions)
        return cls(parquet, path, record_format, stream_id)

    def chunks(self) -> Iterator[Chunk]:
        """The records in stream order, ``CHUNK_ROWS`` at a time."""
        time_column = FORMATS[self.record_format].time_column
        # The format's types, with the recording's nullability (a stream with malformed
        # records has broken columns nullable: traffic/dirty.py).
        stored = self._parquet.schema_arrow
        schema = pa.schema(
            [
                f.with_nullable(stored.field(f.name).nullable)
                for f in stream_schema(self.record_format)
            ]
        )
        latest = NO_TIME
        first_seq = 0
        for number, groups in enumerate(self._row_group_runs()):
            try:
                # One group at a time: Arrow cannot read nested columns of several at once.
                parts = [self._parquet.read_row_group(g) for g in groups]
                table = pa.concat_tables(parts).cast(schema)  # safe: whole seconds
            except (pa.ArrowInvalid, OSError) as exc:
                raise RecordingError(
                    f"{self.path}: row groups {groups[0]}-{groups[-1]}: {exc}"
                ) from None
            event_s = np.maximum.accumulate(
                np.maximum(epoch_seconds(table.column(time_column)), latest)
            )
            if latest == NO_TIME:  # records without a time before the first with one
                known = event_s != NO_TIME
                event_s[~known] = event_s[known][0] if known.any() else 0
            latest = int(event_s[-1])
            yield Chunk(number, first_seq, table, event_s)  # "day": the chunk's number
            first_seq += table.num_rows

    def _row_group_runs(self) -> Iterator[list[int]]:
        """Consecutive row groups of about ``CHUNK_ROWS`` records, sent on as one chunk (the
        file sink writes a row group a batch, often a thousand records: a chunk that small
        would cost the pacer and the queue more than its records)."""
        run: list[int] = []
        rows = 0
        metadata = self._parquet.metadata
        for group in range(metadata.num_row_groups):
            run.append(group)
            rows += metadata.row_group(group).num_rows
            if rows >= CHUNK_ROWS:
                yield run
                run, rows = [], 0
        if run:
            yield run

    def put_chunks(self, chunks, stop: threading.Event) -> None:
        """Hand every chunk to ``chunks`` (a bounded queue), unless the stream stops."""
        try:
            for chunk in self.chunks():
                put_chunk(chunks, chunk, stop)
        except StreamStopped:
            return

    def describe(self) -> str:
        return f"recording {self.path} ({self.num_records:,} {self.record_format} records)"


def _format_of(path: Path, schema: pa.Schema) -> str:
    """The ``--format`` whose stream columns ``schema`` has, exactly."""
    for name in sorted(FORMATS):
        expected = stream_schema(name)
        if schema.names == expected.names and all(
            _same_type(schema.field(f.name).type, f.type) for f in expected
        ):
            return name
    names = set(schema.names)
    closest = min(sorted(FORMATS), key=lambda n: len(names ^ set(stream_schema(n).names)))
    expected = stream_schema(closest)
    missing = [n for n in expected.names if n not in names]
    extra = [n for n in schema.names if n not in expected.names]
    retyped = [
        f"{f.name} ({schema.field(f.name).type}, expected {f.type})"
        for f in expected
        if f.name in names and not _same_type(schema.field(f.name).type, f.type)
    ]
    what = "; ".join(
        part
        for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"not a stream's: {', '.join(extra)}" if extra else "",
            f"of another type: {', '.join(retyped)}" if retyped else "",
            "the columns in another order" if not (missing or extra or retyped) else "",
        )
        if part
    )
    if missing == ["service_date"] and not (extra or retyped):
        raise RecordingError(
            f"{path}: a {closest} stream recorded by an earlier CardTwin, whose records had no "
            "service_date (the records of a stream carry it now, so this one cannot be sent as "
            "a stream of today's records): record the stream again"
        )
    raise RecordingError(
        f"{path}: not a recorded stream: expected the columns of a --format "
        f"({', '.join(sorted(FORMATS))}) as `--sink file:///X.parquet` writes them; "
        f"nearest is {closest!r}: {what}"
    )


def _same_type(stored: pa.DataType, expected: pa.DataType) -> bool:
    """The types agree once what Parquet changes is undone (they are cast back exactly as
    the records are read): timestamps in seconds come back in milliseconds, and a list's
    items are named ``element``."""
    return _as_written(stored).equals(_as_written(expected))


def _as_written(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t):
        return pa.timestamp("ms", t.tz)
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        item = pa.field("element", _as_written(t.value_type), t.value_field.nullable)
        return pa.large_list(item) if pa.types.is_large_list(t) else pa.list_(item)
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _as_written(f.type), f.nullable) for f in t])
    return t


def _check_positions(path: Path, positions: pa.Table) -> str:
    """The stream id, once every record's position and key are checked."""
    n = positions.num_rows
    if n == 0:
        raise RecordingError(f"{path}: the recording has no records")
    seq = positions.column("stream_seq").to_numpy()
    wrong = np.flatnonzero(seq != np.arange(n, dtype=np.int64))
    if len(wrong):
        row = int(wrong[0])
        raise RecordingError(
            f"{path}: row {row}: stream_seq is {seq[row]}, expected {row}: a recording holds a "
            "stream from its first record, every record once, in order"
        )
    keys = positions.column("idempotency_key")
    first = keys[0].as_py() or ""
    stream_id, sep, _ = first.rpartition(":")
    seq_text = pc.cast(positions.column("stream_seq"), pa.string())
    expected = pc.binary_join_element_wise(stream_id, seq_text, ":")
    same = pc.equal(keys, expected).fill_null(False).to_numpy(zero_copy_only=False)
    if not sep or not stream_id or not same.all():
        row = int(np.flatnonzero(~same)[0]) if not same.all() else 0
        raise RecordingError(
            f"{path}: row {row}: idempotency_key is {keys[row].as_py()!r}, expected the "
            f"stream's id and the record's position ({stream_id or 'STREAM_ID'}:{row})"
        )
    return stream_id


__all__ = ["CHUNK_ROWS", "Recording", "RecordingError"]
