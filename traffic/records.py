"""The records a stream sends, made from the engine's events as the simulated day happens.

A ``RecordSource`` is an engine subscriber (sim/events.py). For its format (``FORMATS``) it
converts each city's records with the run's own converter (``sim.records.RecordWriter``: the
same columns, names, masking and ids as the Parquet tables of a run), and when a day closes it
hands that day's records, all cities together and in the order they happened, to the stream as
one ``Chunk``: an Arrow table whose every row also carries its place in the stream
(``stream_seq``, from 0) and an idempotency key (``<stream id>:<stream_seq>``). The same
scenario and seed give the same chunks, so a resumed stream is the uninterrupted one's tail.

The hand-over is a bounded queue: when the stream falls behind, ``put`` waits, and so does the
simulation (backpressure, never a dropped record).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sim.events import DayClosed, DaySettled
from sim.output import NameTables, build_table
from sim.records import RecordWriter

#: Columns of ``transactions`` that a validator does not know when it records a tap: how the
#: upload, the clearing and an incomplete trip turn out. The system under test decides them.
AFTER_THE_TAP = (
    "upload_batch_id",
    "uploaded_at",
    "status",
    "reject_reason",
    "clearing_batch_id",
    "settle_date",
    "incomplete_processed_by",
)


@dataclasses.dataclass(frozen=True)
class RecordFormat:
    """What one ``--format`` sends: its table (sim/schema.py), the columns left out, and how to
    get a city's day of it from a ``DaySettled`` event."""

    name: str
    table: str
    columns: Callable[[RecordWriter, DaySettled], dict[str, np.ndarray]]
    left_out: tuple[str, ...] = ()
    description: str = ""


FORMATS: dict[str, RecordFormat] = {
    "taps": RecordFormat(
        "taps",
        "transactions",
        lambda writer, event: writer.transaction_columns(event.day, event.taps),
        AFTER_THE_TAP,
        "tap records as the validators make them (TIDES fare_transactions names, JT/T 978 "
        "fields): one per tap, at the time of the tap",
    ),
    "topups": RecordFormat(
        "topups",
        "topups",
        lambda writer, event: writer.topup_columns(event.day, event.topups),
        (),
        "loads of value onto cards (TIDES fare_action Add): at outlets, machines, online and "
        "at card sale",
    ),
}


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One simulated day's records of a stream, in the order they are sent."""

    day: int
    first_seq: int
    table: pa.Table  # the format's columns, then stream_seq and idempotency_key
    event_s: np.ndarray  # int64, local epoch seconds of each record (pacing by --speed)

    def __len__(self) -> int:
        return self.table.num_rows


class StreamStopped(Exception):
    """Raised inside the simulation when the stream no longer wants records (it ended early,
    or was interrupted): the simulation thread unwinds."""


class RecordSource:
    """Engine subscriber turning the events into ``Chunk``s on ``chunks`` (module docstring).

    Args:
        worlds: the run's worlds, in shard order (``sim.api.build``).
        record_format: a name of ``FORMATS``.
        stream_id: the stream's id (the prefix of its idempotency keys).
        unmasked, privacy_key: as for a run's files (identities masked by default).
        chunks: where finished days go (bounded: a full queue holds the simulation back).
        stop: set when the stream wants no more records (``put`` then raises StreamStopped).
    """

    def __init__(
        self,
        worlds: Sequence,
        record_format: str,
        stream_id: str,
        *,
        unmasked: bool,
        privacy_key,
        chunks: queue.Queue,
        stop: threading.Event,
    ) -> None:
        from sim.records import name_tables

        self.format = FORMATS[record_format]
        self.stream_id = stream_id
        names, code_maps = name_tables(list(worlds))
        self.names = NameTables(names)
        self.unmasked = unmasked
        self.converters = [
            RecordWriter(
                w,
                None,
                w.participants.ids,
                w.participants.code(w.scenario.output.issuer_id),
                unmasked=unmasked,
                privacy_key=privacy_key,
                shard_index=i,
                code_maps=code_maps[i],
            )
            for i, w in enumerate(worlds)
        ]
        self.chunks = chunks
        self.stop = stop
        self.next_seq = 0
        self._day_parts: list[pa.Table] = []

    def __call__(self, event) -> None:
        if isinstance(event, DaySettled):
            columns = self.format.columns(self.converters[event.shard], event)
            table = build_table(
                self.format.table, columns, self.names, mask_identities=not self.unmasked
            )
            self._day_parts.append(table.drop_columns(list(self.format.left_out)))
        elif isinstance(event, DayClosed):
            self._put(self._chunk(event.day))

    def _chunk(self, day: int) -> Chunk:
        """The day's records of every city, by time (ties: city, then the city's order)."""
        table = pa.concat_tables(self._day_parts) if self._day_parts else None
        self._day_parts = []
        if table is None or table.num_rows == 0:
            return Chunk(day, self.next_seq, _with_keys(_empty(self.format), 0, ""), _NO_TIMES)
        event_s = table.column("event_timestamp").cast(pa.int64()).to_numpy()
        order = np.argsort(event_s, kind="stable")
        table = table.take(pa.array(order))
        first = self.next_seq
        self.next_seq += table.num_rows
        return Chunk(day, first, _with_keys(table, first, self.stream_id), event_s[order])

    def _put(self, chunk: Chunk) -> None:
        while True:
            if self.stop.is_set():
                raise StreamStopped()
            try:
                self.chunks.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue


_NO_TIMES = np.zeros(0, dtype=np.int64)


def _empty(record_format: RecordFormat) -> pa.Table:
    from sim.schema import table_spec

    schema = table_spec(record_format.table).file_schema
    return schema.empty_table().drop_columns(list(record_format.left_out))


def _with_keys(table: pa.Table, first_seq: int, stream_id: str) -> pa.Table:
    """``table`` with its stream positions and idempotency keys appended."""
    seq = pa.array(np.arange(first_seq, first_seq + table.num_rows, dtype=np.int64))
    keys = pc.binary_join_element_wise(stream_id, pc.cast(seq, pa.string()), ":")
    return table.append_column("stream_seq", seq).append_column("idempotency_key", keys)


def stream_schema(record_format: str) -> pa.Schema:
    """The columns a format's records have, in order (docs and the Postgres sink's table)."""
    return _with_keys(_empty(FORMATS[record_format]), 0, "").schema


__all__ = ["AFTER_THE_TAP", "FORMATS", "Chunk", "RecordSource", "StreamStopped", "stream_schema"]
