"""The records a stream sends, made from the engine's events as the simulated day happens.

A ``RecordSource`` is an engine subscriber (sim/events.py). For its format (``FORMATS``) it
converts each city's records with the run's own converter (``sim.records.RecordWriter``: the
same columns, names, masking and ids as the Parquet tables of a run), and when a day closes it
hands that day's records, all cities together and in the order they happened, to the stream as
one ``Chunk``: an Arrow table whose every row also carries its place in the stream
(``stream_seq``, from 0) and an idempotency key (``<stream id>:<stream_seq>``). The same
scenario and seed give the same chunks, so a resumed stream is the uninterrupted one's tail.

Every record of the ``taps``, ``topups`` and ``uploads`` formats carries ``service_date`` first,
as the run's tables have it (sim/schema.py: the operating day, their Hive partition key, the TIDES
key): the simulated day the engine made the record on (an upload's: the day it was sent; each
tap an upload carries: its own day), from the scenario's start date. It is not moved by
defects a dirty stream injects (a skewed clock, a late send): the record belongs to its day.
The ``clearing`` files carry theirs (the day they clear) after ``participant_id``.

The hand-over is a bounded queue: when the stream falls behind, ``put`` waits, and so does the
simulation (backpressure, never a dropped record).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sim import ids
from sim.events import DayClosed, DaySettled, RunFinished, TapsFinal, UploadsSent
from sim.grouping import narrow_stable_order
from sim.output import NameTables, build_table
from sim.schema import TableSpec

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


class RecordFormat(ABC):
    """What one ``--format`` sends. ``on_event`` gets every event and returns one city's part
    of the day's records (an Arrow table) when an event completes it, else None; the parts of
    a day are sent in the order of ``time_column``."""

    name = ""
    table = ""  # the table of sim/schema.py whose columns the records have
    time_column = "event_timestamp"
    description = ""

    def __init__(self, source: RecordSource) -> None:
        self.source = source

    @abstractmethod
    def on_event(self, event) -> pa.Table | None:
        """A city's part of the day's records, if ``event`` completes it."""

    @abstractmethod
    def empty(self) -> pa.Table:
        """A table with the records' columns and no rows."""


class TapRecords(RecordFormat):
    name = "taps"
    table = "transactions"
    description = (
        "tap records as the validators make them (TIDES fare_transactions names, JT/T 978 "
        "fields): one per tap, at the time of the tap"
    )

    def on_event(self, event) -> pa.Table | None:
        if not isinstance(event, DaySettled):
            return None
        return self.source.taps_of(event, by_time=True)

    def empty(self) -> pa.Table:
        return _tap_spec().schema.empty_table()


class TopupRecords(RecordFormat):
    name = "topups"
    table = "topups"
    description = (
        "loads of value onto cards (TIDES fare_action Add): at outlets, machines, online and "
        "at card sale"
    )

    def on_event(self, event) -> pa.Table | None:
        if not isinstance(event, DaySettled):
            return None
        writer = self.source.converters[event.shard]
        columns = writer.topup_columns(event.day, event.topups)
        return self.source.dated(self.source.build(self.table, columns), event.shard, event.day)

    def empty(self) -> pa.Table:
        return _dated_schema_of(self.table).empty_table()


class UploadBatches(RecordFormat):
    """One record per upload a device made (a resend again): the ``device_uploads`` columns
    and ``records``, the tap records it carried (as the ``taps`` format has them, in the
    device's serial order). Sent at ``uploaded_at``: late uploads come late, resent batches
    twice, batches out of the taps' order."""

    name = "uploads"
    table = "device_uploads"
    time_column = "uploaded_at"
    description = (
        "validator upload batches as the devices send them: late (store and forward), out of "
        "order, resent after a lost acknowledgement; each with its tap records"
    )
    #: Days of tap records kept to fill later uploads (a device that was cut off uploads late).
    KEEP_DAYS = 7

    def __init__(self, source: RecordSource) -> None:
        super().__init__(source)
        self._taps: dict[int, list[tuple[int, np.ndarray, pa.Table]]] = {}  # shard -> days

    def on_event(self, event) -> pa.Table | None:
        if isinstance(event, DaySettled):
            taps = event.taps  # the upload that carries each tap: -1 if none (refused)
            key = ids.upload_key(
                taps.agent_device_id, np.where(taps.upload_batch >= 0, taps.upload_batch, -1)
            )
            kept = self._taps.setdefault(event.shard, [])
            kept.append((event.day, key, self.source.taps_of(event)))
            self._taps[event.shard] = [k for k in kept if k[0] > event.day - self.KEEP_DAYS]
            return None
        if not isinstance(event, UploadsSent):
            return None
        writer = self.source.converters[event.shard]
        uploads = self.source.build(self.table, writer.upload_columns(event.day, event.uploads))
        uploads = self.source.dated(uploads, event.shard, event.day)
        return uploads.append_column("records", self._records_of(event, uploads))

    def _records_of(self, event: UploadsSent, uploads: pa.Table) -> pa.Array:
        kept = self._taps.get(event.shard, [])
        keys = np.concatenate([k for _, k, _ in kept]) if kept else np.zeros(0, np.int64)
        taps = pa.concat_tables([t for _, _, t in kept]) if kept else self._tap_schema_table()
        serial = taps.column("device_serial").to_numpy()
        order = np.lexsort((serial, keys))
        keys = keys[order]
        wanted = ids.upload_key(event.uploads["device_id"], event.uploads["upload_batch_id"])
        start = np.searchsorted(keys, wanted, side="left")
        end = np.searchsorted(keys, wanted, side="right")
        lengths = end - start
        expected = np.asarray(event.uploads["n_records"], dtype=np.int64)
        if not np.array_equal(lengths, expected):
            bad = int(np.flatnonzero(lengths != expected)[0])
            raise RuntimeError(
                f"upload {int(event.uploads['upload_batch_id'][bad])} of device "
                f"{int(event.uploads['device_id'][bad])} carried {int(expected[bad])} records; "
                f"{int(lengths[bad])} found in the last {self.KEEP_DAYS} days' taps"
            )
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        rows = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
        records = taps.take(pa.array(order[rows])).to_struct_array()
        return pa.LargeListArray.from_arrays(pa.array(offsets), records.combine_chunks())

    def _tap_schema_table(self) -> pa.Table:
        return TapRecords(self.source).empty()

    def empty(self) -> pa.Table:
        records = self._tap_schema_table().schema
        return (
            _dated_schema_of(self.table)
            .empty_table()
            .append_column("records", pa.array([], type=pa.large_list(pa.struct(list(records)))))
        )


class ClearingFiles(RecordFormat):
    """One record per participant and day of records once the day is final (cleared or
    rejected): the participant's clearing file, as docs/reconciliation.md lays out its files —
    ``detail`` (each record, once as issuer and once as acquirer, with the counterparty) and
    ``summary`` (the detail grouped by role, counterparty, mode, medium, status and settlement
    date: the two agree by construction). Sent at ``issued_at``, the cut-off that closed the
    day (nominal: a node outage delays the files but not this stamp)."""

    name = "clearing"
    table = "transactions"
    time_column = "issued_at"
    description = (
        "clearing files per participant and day (summary and detail), once the day's records "
        "are final"
    )

    def on_event(self, event) -> pa.Table | None:
        if not isinstance(event, TapsFinal):
            return None
        writer = self.source.converters[event.shard]
        final = self.source.build(self.table, writer.transaction_columns(event.day, event.taps))
        world = writer.world
        cutoff_s = (event.day + 1) * 86_400 + world.scenario.clearing.batch_cutoff_hour * 3600
        date = world.start_date + dt.timedelta(days=event.day)
        dated = final.append_column("service_date", pa.array([date] * final.num_rows))
        return self._files(dated, int(writer.epoch_s + cutoff_s))

    def _files(self, final: pa.Table, issued_at_s: int) -> pa.Table:
        from sim.reconciliation import RECORDS_SQL

        con = duckdb.connect(config={"threads": 1})
        try:
            con.register("transactions", final)
            files = con.sql(
                f"""WITH r AS ({RECORDS_SQL}),
                s AS (SELECT participant_id, role, counterparty_id, mode, media, status,
                             settle_date, count(*) AS records, sum(amount_fen) AS amount_fen
                      FROM r GROUP BY ALL),
                summary AS (
                    SELECT participant_id, list(struct_pack(role, counterparty_id, mode, media,
                           status, settle_date, records, amount_fen) ORDER BY role,
                           counterparty_id, mode, media, status, settle_date) AS summary
                    FROM s GROUP BY participant_id),
                detail AS (
                    SELECT participant_id, min(service_date) AS service_date,
                           count(*) AS records,
                           sum(amount_fen) FILTER (WHERE status = 'cleared') AS cleared_fen,
                           list(struct_pack(role, counterparty_id, transaction_id, service_date,
                                event_timestamp, mode, media, route_id, device_id,
                                device_serial, issuer_id, acquirer_id, amount_fen, status,
                                reject_reason, clearing_batch_id, settle_date)
                                ORDER BY transaction_id, role) AS detail
                    FROM r GROUP BY participant_id)
                SELECT d.participant_id, d.service_date,
                       make_timestamp({issued_at_s}::BIGINT * 1000000) AS issued_at,
                       d.records, coalesce(d.cleared_fen, 0)::BIGINT AS cleared_fen,
                       s.summary, d.detail
                FROM detail d JOIN summary s USING (participant_id)
                ORDER BY d.participant_id"""
            ).to_arrow_table()
        finally:
            con.close()
        # DuckDB leaves whatever was in memory under a null (a rejected record's settle_date):
        # the values, JSON, CSV and Parquet were the same each run, an Arrow stream's bytes not.
        columns = [_zeroed_under_nulls(c.combine_chunks()) for c in files.columns]
        return pa.Table.from_arrays(columns, schema=files.schema)

    def empty(self) -> pa.Table:
        final = _schema_of(self.table).empty_table()
        return self._files(final.append_column("service_date", pa.array([], pa.date32())), 0)


def _zeroed_under_nulls(array: pa.Array) -> pa.Array:
    """``array`` (of offset 0, as DuckDB makes them) with zero bits under each null of a
    fixed-width column, in nested columns too, and the rest as it was: the same records in
    the same bytes, whatever memory they were made in."""
    t = array.type
    if array.offset:
        raise ValueError(f"expected arrays of offset 0 (as DuckDB makes them), got {t}")
    if pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        nested = pa.types.is_struct(t)
        children = [array.field(k) for k in range(t.num_fields)] if nested else [array.values]
        return pa.Array.from_buffers(
            t, len(array), array.buffers()[: 1 if nested else 2], array.null_count,
            children=[_zeroed_under_nulls(c) for c in children],
        )  # fmt: skip
    try:
        bits = t.bit_width
    except ValueError:  # strings: a null has no bytes
        return array
    if not array.null_count:
        return array
    validity, data = array.buffers()[:2]
    valid = np.frombuffer(validity, np.uint8)[: (len(array) + 7) // 8]
    if bits == 1:  # booleans: each value's bit AND its validity bit
        values = np.frombuffer(data, np.uint8)[: len(valid)] & valid
    else:
        values = np.frombuffer(data, np.uint8)[: len(array) * bits // 8].copy()
        values.reshape(len(array), -1)[~array.is_valid().to_numpy(zero_copy_only=False)] = 0
    return pa.Array.from_buffers(t, len(array), [validity, pa.py_buffer(values)], array.null_count)


FORMATS: dict[str, type[RecordFormat]] = {
    f.name: f for f in (TapRecords, TopupRecords, UploadBatches, ClearingFiles)
}


@functools.cache
def _tap_spec() -> TableSpec:
    """What a tap record has: the ``transactions`` table without ``AFTER_THE_TAP``."""
    from sim.schema import table_spec

    return table_spec("transactions").without(AFTER_THE_TAP)


def _schema_of(table: str) -> pa.Schema:
    from sim.schema import table_spec

    return table_spec(table).file_schema


def _dated_schema_of(table: str) -> pa.Schema:
    """A table's columns as a run's dataset has them: ``service_date`` first."""
    from sim.schema import table_spec

    return table_spec(table).schema


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One simulated day's records of a stream, in the order they are sent (from a
    recording: a run of its records, ``day`` its number)."""

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
        spoiler=None,
    ) -> None:
        from sim.records import name_tables, record_writers

        self.format = FORMATS[record_format](self)
        self.stream_id = stream_id
        names, _ = name_tables(list(worlds))
        self.names = NameTables(names)
        self.unmasked = unmasked
        self.converters = record_writers(
            list(worlds), None, unmasked=unmasked, privacy_key=privacy_key
        )
        self.chunks = chunks
        self.stop = stop
        self.spoiler = spoiler  # traffic/dirty.py: defects injected, with their labels
        self.next_seq = 0
        self._day_parts: list[pa.Table] = []
        self._last_day = -1

    def __call__(self, event) -> None:
        part = self.format.on_event(event)
        if part is not None:
            self._day_parts.append(part)
        elif isinstance(event, DayClosed):
            self._put(self._chunk(event.day))
            self._last_day = event.day
        elif isinstance(event, RunFinished) and self._day_parts:
            # What completes after the last day (its clearing files, at the final cut-off).
            self._put(self._chunk(self._last_day + 1))

    def build(self, table: str | TableSpec, columns: dict[str, np.ndarray]) -> pa.Table:
        """A table's Arrow rows from the converter's columns (names, masking, checks)."""
        return build_table(table, columns, self.names, mask_identities=not self.unmasked)

    def taps_of(self, event: DaySettled, by_time: bool = False) -> pa.Table:
        """A city's day of tap records: ``service_date`` and the ``transactions`` columns a
        validator knows at the tap (all but ``AFTER_THE_TAP``); ``by_time``: in the order of
        their times (ties as they come)."""
        # A day goes out in time order (``_chunk``). Ordered here, column by column in NumPy,
        # a city's part arrives in order and ``_chunk`` takes nothing: an Arrow take of the
        # built table cost more than the rest of the conversion together. (The taps' times
        # in the day order them as their timestamps do.)
        order = narrow_stable_order(event.taps.t_s) if by_time else None
        columns = self.converters[event.shard].tap_columns(event.day, event.taps, order)
        taps = self.build(_tap_spec(), columns)
        return self.dated(taps, event.shard, event.day)

    def dated(self, table: pa.Table, shard: int, day: int) -> pa.Table:
        """``table`` (a city's records of simulation day ``day``) with ``service_date`` first:
        the day's date, as the run's tables have it (module docstring)."""
        from sim.schema import PARTITION_COLUMN, table_spec

        date = self.converters[shard].world.start_date + dt.timedelta(days=int(day))
        field = table_spec("transactions").schema.field(PARTITION_COLUMN)
        values = pa.array(np.full(table.num_rows, date, dtype="datetime64[D]"), pa.date32())
        return table.add_column(0, field, values)

    def _chunk(self, day: int) -> Chunk:
        """The day's records of every city, by time (ties: city, then the city's order)."""
        table = pa.concat_tables(self._day_parts) if self._day_parts else None
        self._day_parts = []
        if table is None or table.num_rows == 0:
            return Chunk(day, self.next_seq, _with_keys(self.format.empty(), 0, ""), _NO_TIMES)
        event_s = epoch_seconds(table.column(self.format.time_column))
        if len(event_s) and not (event_s[1:] >= event_s[:-1]).all():  # in order: taken as is
            # A stable sort: the order of each city's part (itself stable) is kept for ties,
            # and parts come in city order, whether or not a part came ordered.
            order = np.argsort(event_s, kind="stable")
            table, event_s = table.take(pa.array(order)), event_s[order]
        if self.spoiler is not None:
            table, event_s = self.spoiler.spoil(day, table, event_s)
        first = self.next_seq
        self.next_seq += table.num_rows
        keyed = _with_keys(table, first, self.stream_id)
        if self.spoiler is not None:
            self.spoiler.write_labels(day, keyed)
        return Chunk(day, first, keyed, event_s)

    def _put(self, chunk: Chunk) -> None:
        put_chunk(self.chunks, chunk, self.stop)


def put_chunk(chunks: queue.Queue, chunk: Chunk, stop: threading.Event) -> None:
    """Put ``chunk`` on the bounded ``chunks`` queue, waiting while it is full; raises
    StreamStopped once ``stop`` is set (the stream wants no more records)."""
    while True:
        if stop.is_set():
            raise StreamStopped()
        try:
            chunks.put(chunk, timeout=0.1)
            return
        except queue.Full:
            continue


_NO_TIMES = np.zeros(0, dtype=np.int64)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
#: A record without a time (a malformed one): in seconds, earlier than any.
NO_TIME = np.iinfo(np.int64).min


def epoch_seconds(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as whole epoch seconds (int64), whatever its unit; ``NO_TIME``
    where it is null."""
    values = column.cast(pa.int64()).fill_null(NO_TIME).to_numpy()
    per_second = _PER_SECOND[column.type.unit]
    if per_second == 1:
        return values
    return np.where(values == NO_TIME, NO_TIME, values // per_second)


def _with_keys(table: pa.Table, first_seq: int, stream_id: str) -> pa.Table:
    """``table`` with its stream positions and idempotency keys appended."""
    seq = pa.array(np.arange(first_seq, first_seq + table.num_rows, dtype=np.int64))
    # "<stream_id>:<seq>": the prefix inserted in front of each number (a third of the cost
    # of joining it with a scalar, which Arrow broadcasts row by row).
    keys = pc.binary_replace_slice(pc.cast(seq, pa.string()), 0, 0, f"{stream_id}:")
    return table.append_column("stream_seq", seq).append_column("idempotency_key", keys)


def stream_schema(record_format: str) -> pa.Schema:
    """The columns a format's records have, in order (docs and the Postgres sink's table)."""
    return _with_keys(FORMATS[record_format](None).empty(), 0, "").schema


__all__ = [
    "AFTER_THE_TAP",
    "FORMATS",
    "Chunk",
    "RecordSource",
    "NO_TIME",
    "StreamStopped",
    "epoch_seconds",
    "put_chunk",
    "stream_schema",
]
