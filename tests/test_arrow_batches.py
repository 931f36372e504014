"""The Arrow encoding of a stream's batches (traffic/encoding.py): the schema and dictionary
messages kept from one batch and reused for the next give byte for byte the stream Arrow's own
writer makes (``pa.ipc.new_stream``), for real chunks of every record format sliced every
way, and for tables whose schema or dictionaries differ from the last one's."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from stream_helpers import arrow_stream_bytes

import traffic.records as records
from sim.api import load_scenario, privacy_key
from traffic.encoding import Encoder
from traffic.records import FORMATS
from traffic.sinks import SinkOptions
from traffic.stream import StreamSettings, stream

SMALL = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"


@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> dict[str, list[pa.Table]]:
    """The chunk tables of a two-day small_ci stream, for each record format."""
    root = tmp_path_factory.mktemp("arrow-batches")
    scenario = load_scenario(SMALL, days=2)
    out: dict[str, list[pa.Table]] = {}
    put = records.RecordSource._put
    with pytest.MonkeyPatch.context() as patch:
        for name in FORMATS:
            got: list[pa.Table] = []

            def keep(self, chunk, got=got):
                got.append(chunk.table)
                return put(self, chunk)

            patch.setattr(records.RecordSource, "_put", keep)
            settings = StreamSettings(
                sink="null", state_dir=root / name, record_format=name,
                sink_options=SinkOptions(encoding="arrow"),
            )  # fmt: skip
            stream(scenario, settings, privacy_key=privacy_key(None))
            out[name] = [t for t in got if t.num_rows]
    return out


def _slices(table: pa.Table) -> list[pa.Table]:
    """Slices of many sizes and places, the empty one and the whole table among them."""
    n = table.num_rows
    out = [table, table.slice(0, 0), table.slice(n, 0), table.slice(n - 1)]
    for size in (1, 2, 7, 8, 100, 1000, 5000):
        out += [table.slice(start, size) for start in range(0, n, max(size, n // 5))]
    out += [table.slice(3, 1), table.slice(5, 13), table.slice(n // 2, n)]
    return out


def test_every_format_every_slice_as_arrows_writer(chunks):
    encoder = Encoder()
    for name, tables in chunks.items():
        assert tables, name
        for table in tables:
            for part in _slices(table):
                assert bytes(encoder.encode(part, "arrow")) == arrow_stream_bytes(part), name
    encoder.close()


def test_formats_interleaved_as_arrows_writer(chunks):
    """Batches of other formats (other schemas, other dictionaries) in turn."""
    encoder = Encoder()
    firsts = [tables[0] for tables in chunks.values()]
    for start in range(0, 3000, 300):
        for table in firsts:
            part = table.slice(start, 300)
            assert bytes(encoder.encode(part, "arrow")) == arrow_stream_bytes(part)
    encoder.close()


def test_taps_batches_reuse_the_head(chunks):
    """The head is kept for a chunk's batches (so the saving is real)."""
    encoder = Encoder()
    table = chunks["taps"][0]
    encoder.encode(table.slice(0, 10), "arrow")
    head = encoder._arrow_head
    assert head is not None
    second = table.slice(10, 10)
    assert bytes(encoder.encode(second, "arrow")) == arrow_stream_bytes(second)
    assert encoder._arrow_head is head
    encoder.close()


def _recoded(table: pa.Table, values) -> pa.Table:
    """``table`` with its first dictionary column's dictionary replaced by ``values``."""
    k = next(k for k, f in enumerate(table.schema) if pa.types.is_dictionary(f.type))
    column = table.column(k).combine_chunks()
    recoded = pa.DictionaryArray.from_arrays(column.indices, values(column.dictionary))
    return table.set_column(k, table.schema.field(k), recoded)


def test_dictionaries_that_differ(chunks):
    """Same schema, another dictionary: equal content in other buffers, a dictionary with a
    value changed, a sliced dictionary, the first again."""
    encoder = Encoder()
    table = chunks["taps"][0].slice(0, 500)
    copies = [
        table,
        _recoded(table, lambda d: pa.array(d.to_pylist(), d.type)),
        _recoded(table, lambda d: pa.array([v + "x" for v in d.to_pylist()], d.type)),
        _recoded(table, lambda d: pa.concat_arrays([pa.array(["pad"], d.type), d]).slice(1)),
        table,
    ]
    for _ in range(2):
        for copy in copies:
            for part in (copy.slice(0, 100), copy.slice(100, 1)):
                assert bytes(encoder.encode(part, "arrow")) == arrow_stream_bytes(part)
    encoder.close()


def test_schemas_and_tables_that_differ(chunks):
    """Other metadata, several record batches, a dictionary inside a list, no dictionary."""
    encoder = Encoder()
    table = chunks["taps"][0].slice(0, 300)
    nested = pa.table(
        {"a": pa.array([["x", "y"], [], ["x"]], pa.list_(pa.dictionary(pa.int8(), pa.string())))}
    )
    tables = [
        table,
        table.replace_schema_metadata({"other": "metadata"}),
        table,
        pa.concat_tables([table.slice(0, 100), table.slice(200, 50)]),
        nested,
        nested.slice(1),
        pa.table({"n": pa.array([1, 2, 3])}),
        pa.table({"n": pa.array([4, 5])}),
        table.slice(7, 9),
    ]
    for part in tables * 2:
        assert bytes(encoder.encode(part, "arrow")) == arrow_stream_bytes(part)
    encoder.close()
