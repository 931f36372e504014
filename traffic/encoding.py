"""Records to bytes, a batch at a time, without a Python object per record.

- ``json``: one JSON object per record (DuckDB's ``to_json``, in C++): a JSON array for an
  HTTP body, one object per line (JSON lines) in a file or on stdout, one message each for
  Redis and MQTT. Dates and times are local, ``"2024-03-04 07:15:02"``; money is integer fen;
  names are strings; nulls are ``null``.
- ``csv``: a header line, then one line per record (pyarrow's writer). A nested column (an
  upload's ``records``, a clearing file's ``summary`` and ``detail``: lists of structs, which
  CSV has no form for) is one field of JSON text: the same JSON as the record's field in the
  ``json`` encoding (PostgreSQL loads it into a ``jsonb`` column).
- ``arrow``: an Arrow IPC stream (columnar; the cheapest to make and to read back).
- ``parquet``: a Parquet file (files only).

``Encoder`` holds one DuckDB connection; a thread uses its own encoder.
"""

from __future__ import annotations

import dataclasses
import io

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

ENCODINGS = ("json", "csv", "arrow", "parquet")


class Encoder:
    """Encodes Arrow tables of records (module docstring). Not shared between threads."""

    def __init__(self) -> None:
        self._con = duckdb.connect(config={"threads": 1})
        self._arrow_head: _StreamHead | None = None  # the last Arrow stream's (_arrow_stream)

    def json_column(self, table: pa.Table, end: str = "") -> pa.LargeStringArray:
        """Every record as a JSON object (followed by ``end``), as one Arrow string array."""
        if end and (len(end) != 1 or end in "'\\"):
            raise ValueError(f"end must be one plain character, got {end!r}")
        if table.num_rows == 0:
            return pa.array([], type=pa.large_string())
        self._con.register("cardtwin_batch", table)
        try:
            query = f"SELECT to_json(cardtwin_batch) || '{end}' FROM cardtwin_batch"
            result = self._con.sql(query).to_arrow_table()
        finally:
            self._con.unregister("cardtwin_batch")
        return pa.concat_arrays(result.column(0).chunks).cast(pa.large_string())

    def json_objects(self, table: pa.Table, end: str = "\n") -> tuple[bytes, np.ndarray]:
        """Every record as a JSON object followed by ``end`` (one character): the objects back
        to back, and where each starts (``offsets[i]:offsets[i+1]`` is record i with its
        ``end``; ``len(table) + 1`` offsets)."""
        if table.num_rows == 0:
            return b"", np.zeros(1, dtype=np.int64)
        return packed(self.json_column(table, end))

    def json_lines(self, table: pa.Table) -> bytes:
        """JSON lines: one object per line, each line ending in a newline."""
        return self.json_objects(table, "\n")[0]

    def json_array(self, table: pa.Table) -> bytes:
        """One JSON array of the records."""
        data = self.json_objects(table, ",")[0]
        return b"[" + data[:-1] + b"]" if data else b"[]"

    def encode(self, table: pa.Table, encoding: str, *, header: bool = True) -> bytes | memoryview:
        """``table`` in ``encoding`` (``json`` as JSON lines here): bytes, or for ``arrow`` a
        view of Arrow's buffer (what a file's ``write`` and ``len`` take alike)."""
        if encoding == "json":
            return self.json_lines(table)
        if encoding == "csv":
            out = io.BytesIO()
            options = pa_csv.WriteOptions(include_header=header)
            pa_csv.write_csv(_plain(self._nested_as_json(table)), out, write_options=options)
            return out.getvalue()
        if encoding == "arrow":
            return self._arrow_stream(table)
        if encoding == "parquet":
            out = io.BytesIO()
            pq.write_table(table, out)
            return out.getvalue()
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")

    def _arrow_stream(self, table: pa.Table) -> bytes | memoryview:
        """``table`` as an Arrow IPC stream: the schema message, one message per dictionary,
        the record batch, the end-of-stream marker. A stream's batches are slices of one chunk,
        sharing its schema and dictionaries, so all but the record batch is the same for each:
        kept from the last batch (``_StreamHead``) and reused while the next one has the same
        schema and the very same dictionary arrays (making it anew was half the cost of a
        batch of 1,000 records)."""
        batches = table.to_batches()
        if len(batches) == 1:
            batch = batches[0]
            head = self._arrow_head
            if head is not None and head.fits(batch):
                return b"".join((head.prefix, batch.serialize(), _END_OF_STREAM))
        data = _arrow_stream(table)
        if len(batches) == 1:
            self._arrow_head = _StreamHead.of(batches[0], data)
        return data

    def _nested_as_json(self, table: pa.Table) -> pa.Table:
        """``table`` with each nested column (lists, structs, maps) as JSON text, one string a
        record (null stays null): what a CSV field can hold (module docstring)."""
        nested = [f.name for f in table.schema if is_nested(f.type)]
        if not nested or table.num_rows == 0:
            return table
        self._con.register("cardtwin_nested", table.select(nested))
        try:
            columns = ", ".join(f"to_json({_quoted(name)})" for name in nested)
            query = f"SELECT {columns} FROM cardtwin_nested"
            as_json = self._con.sql(query).to_arrow_table()
        finally:
            self._con.unregister("cardtwin_nested")
        for name, column in zip(nested, as_json.columns, strict=True):
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, column.cast(pa.string()))
        return table

    def close(self) -> None:
        self._con.close()


#: What ends an Arrow IPC stream: a continuation marker and a zero length.
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _arrow_stream(table: pa.Table) -> memoryview:
    """``table`` as an Arrow IPC stream, written by Arrow's own stream writer."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    # A view of Arrow's own buffer: a copy into ``bytes`` cost a seventh of the encoding.
    return memoryview(sink.getvalue())


@dataclasses.dataclass(frozen=True)
class _StreamHead:
    """What comes before the record batch in the Arrow IPC stream of a one-batch table (the
    schema and dictionary messages), and what it depends on: the schema (its metadata too)
    and the identity of each dictionary (where its buffers are: an Arrow buffer never
    changes, and the arrays kept here keep them from being freed and their memory reused)."""

    schema: pa.Schema
    columns: tuple[int, ...]  # the dictionary-coded ones
    dictionaries: tuple[pa.Array, ...]
    identities: tuple
    prefix: bytes

    @classmethod
    def of(cls, batch: pa.RecordBatch, stream: memoryview) -> _StreamHead | None:
        """The head of ``stream`` (``batch``'s own stream, from Arrow's writer), or None when
        it cannot be told apart: a dictionary nested in another type, or a stream that is
        not head + ``batch``'s message + end of stream as checked here."""
        schema = batch.schema
        if any(_holds_dictionary(f.type, top=True) for f in schema):
            return None
        columns = tuple(k for k, f in enumerate(schema) if pa.types.is_dictionary(f.type))
        dictionaries = tuple(batch.column(k).dictionary for k in columns)
        tail = batch.serialize().to_pybytes() + _END_OF_STREAM
        if len(stream) <= len(tail) or bytes(stream[len(stream) - len(tail) :]) != tail:
            return None
        prefix = bytes(stream[: len(stream) - len(tail)])
        return cls(schema, columns, dictionaries, _identities(dictionaries), prefix)

    def fits(self, batch: pa.RecordBatch) -> bool:
        """``batch``'s stream starts with this head: the same schema, the same dictionaries."""
        if not batch.schema.equals(self.schema, check_metadata=True):
            return False
        dictionaries = tuple(batch.column(k).dictionary for k in self.columns)
        return _identities(dictionaries) == self.identities


def _identities(dictionaries: tuple[pa.Array, ...]) -> tuple:
    """What makes each array (of the same type) the very same one: its offset, length and its
    buffers' places."""
    return tuple(
        (
            d.offset,
            len(d),
            tuple(None if b is None else (b.address, b.size) for b in d.buffers()),
        )
        for d in dictionaries
    )


def _holds_dictionary(t: pa.DataType, top: bool = False) -> bool:
    """A dictionary inside ``t`` (``top``: besides ``t`` itself being one of plain values)."""
    if pa.types.is_dictionary(t):
        return not top or _holds_dictionary(t.value_type) or pa.types.is_nested(t.value_type)
    return any(_holds_dictionary(t.field(k).type) for k in range(t.num_fields))


def is_nested(t: pa.DataType) -> bool:
    """A list, struct or map column (also one dictionary-coded): CSV has no form for it."""
    if pa.types.is_dictionary(t):
        return is_nested(t.value_type)
    return pa.types.is_nested(t)


def _quoted(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def packed(strings: pa.Array) -> tuple[bytes, np.ndarray]:
    """A string array's bytes back to back, and the offsets of each string in them."""
    strings = strings.cast(pa.large_string())
    if len(strings) == 0:
        return b"", np.zeros(1, dtype=np.int64)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)
    offsets = offsets[strings.offset : strings.offset + len(strings) + 1]
    first, last = int(offsets[0]), int(offsets[-1])
    return strings.buffers()[2][first:last].to_pybytes(), offsets - first


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns as their strings (CSV has no dictionaries)."""
    columns = [
        c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns
    ]
    return pa.table(columns, names=table.column_names)


__all__ = ["ENCODINGS", "Encoder", "is_nested", "packed"]
