"""Run outputs: daily Arrow tables → Hive-partitioned Parquet, a DuckDB catalogue, run_meta.json.

The engine hands :class:`RunOutput` one numpy column dict per table and day. The caller only checks
names and lengths; building the Arrow table (codes → dictionary arrays, hex ids, masking, row
invariants) and encoding Parquet run on one background thread behind a small bounded queue, so the
simulation keeps going while pyarrow (which releases the GIL) encodes. Everything lands in a
temporary sibling directory that replaces ``--out`` only on :meth:`RunOutput.commit`.

Same inputs give byte-identical Parquet files: fixed codec and level, fixed row-group size, fixed
per-column encodings, dictionaries always in name-table order, no wall-clock anything in metadata.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.metadata
import json
import os
import platform
import queue
import shutil
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sim import identity
from sim.record_kernels import HEX_COMPILED_FROM, hex_digits
from sim.run_dir import (
    RunLock,
    StopSignalsHeld,
    check_replaceable,
    remove_leftovers,
    write_marker,
)
from sim.schema import (
    BOOL,
    BUILTIN_NAME_TABLES,
    CALLER_NAME_TABLES,
    DATE,
    PARTITION_COLUMN,
    SCHEMA_VERSION,
    STR,
    TABLES,
    Col,
    TableSpec,
    table_spec,
)

CATALOGUE_FILE = "cardtwin.duckdb"
RUN_META_FILE = "run_meta.json"

ColumnData = np.ndarray | pa.Array | pa.ChunkedArray | Sequence[Any]


class OutputError(RuntimeError):
    """Writing the run's outputs failed; the message says which table and day."""


# --- identity masking (rules live in sim/identity.py; JR/T 0171 display forms) ---------------

MASKS = {
    "card_no": identity.mask_card_number,
    "phone": identity.mask_phone,
    "id_number": identity.mask_id_number,
    "name": identity.mask_name,
}


def mask_identity(kind: str, values: ColumnData) -> pa.Array:
    """Mask identity strings with rule ``kind`` (card_no, phone, id_number, name); nulls stay."""
    arr = _strings(values)
    if not len(arr):
        return arr
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    masked = MASKS[kind](pc.fill_null(arr, "").to_numpy(zero_copy_only=False))
    return pa.array(masked, type=STR, mask=None if valid.all() else ~valid)


# --- numpy / Arrow columns → typed Arrow arrays ----------------------------------------------


class NameTables:
    """Name tables for dictionary columns: the built-in ones plus the caller's (region, ...)."""

    def __init__(self, extra: Mapping[str, Sequence[str]] | None = None) -> None:
        merged = {**BUILTIN_NAME_TABLES, **{k: tuple(v) for k, v in (extra or {}).items()}}
        for key, names in merged.items():
            if not names or not all(isinstance(x, str) for x in names):
                raise ValueError(f"name table {key!r} must be a non-empty sequence of str")
            if len(set(names)) != len(names):
                raise ValueError(f"name table {key!r} has duplicate names")
        self.tables: dict[str, tuple[str, ...]] = merged
        self._arrays = {k: pa.array(v, STR) for k, v in merged.items()}

    def dictionary(self, col: Col) -> pa.Array:
        """The dictionary (values array) of a dictionary column, checked against its index type."""
        key = col.names or ""
        if key not in self._arrays:
            hint = CALLER_NAME_TABLES.get(key, "")
            raise KeyError(
                f"column {col.name!r} needs name table {key!r} ({hint}); pass it "
                f"as RunOutput(names={{{key!r}: [...]}})"
            )
        values = self._arrays[key]
        limit = np.iinfo(col.type.index_type.to_pandas_dtype()).max + 1
        if len(values) > limit:
            raise ValueError(
                f"name table {key!r} has {len(values)} names; {col.name} holds at most {limit}"
            )
        return values


def _normalise(values: ColumnData) -> np.ndarray | pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    if isinstance(values, np.ndarray) and values.dtype.kind not in "OUS":
        return values
    return pa.array(values)


def _split_mask(arr: np.ndarray, col: Col, sentinel: bool = True) -> tuple[np.ndarray, Any]:
    """Plain data and a null mask (masked array mask, or -1 / NaT in a nullable column)."""
    mask = None
    if isinstance(arr, np.ma.MaskedArray):
        mask, arr = np.ma.getmaskarray(arr), arr.data
    if arr.dtype.kind == "M":  # NaT is null; a non-nullable column then fails its null check
        nat = np.isnat(arr)
        mask = nat if mask is None else mask | nat
    elif col.nullable and sentinel and arr.dtype.kind == "i":
        neg = arr == -1
        mask = neg if mask is None else mask | neg
    if mask is not None and not mask.any():
        mask = None
    return arr, mask


def _strings(values: ColumnData) -> pa.Array:
    arr = _normalise(values)
    if isinstance(arr, np.ndarray):
        arr = pa.array(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr.cast(STR)


def _integer_codes(col: Col, values: ColumnData, names: NameTables) -> np.ndarray:
    """Codes of a dictionary column as an integer array (-1 = null)."""
    arr = _normalise(values)
    if isinstance(arr, pa.Array):
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            codes = pc.index_in(arr, value_set=names.dictionary(col))
            unknown = pc.and_(pc.is_null(codes), pc.is_valid(arr))
            if pc.any(unknown).as_py():
                bad = pc.unique(pc.filter(arr, unknown)).to_pylist()[:5]
                raise ValueError(f"{col.name}: names not in table {col.names!r}: {bad}")
            arr = codes
        if not pa.types.is_integer(arr.type):
            raise TypeError(f"{col.name}: expected integer codes or names, got {arr.type}")
        return pc.fill_null(arr, -1).to_numpy()
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{col.name}: expected integer codes, got numpy {arr.dtype}")
    data, mask = _split_mask(arr, col, sentinel=False)
    if mask is not None:
        data = np.where(mask, -1, data)
    return data


def _dictionary(col: Col, codes: np.ndarray, names: NameTables) -> pa.Array:
    dictionary = names.dictionary(col)
    if codes.size:
        lo, hi = int(codes.min()), int(codes.max())
        floor = -1 if col.nullable else 0
        if lo < floor or hi >= len(dictionary):
            raise ValueError(
                f"{col.name}: codes must be in {floor}..{len(dictionary) - 1} "
                f"(table {col.names!r}), got {lo}..{hi}"
            )
    index_dtype = col.type.index_type.to_pandas_dtype()
    indices = codes.astype(index_dtype, copy=False)
    mask = codes < 0 if col.nullable else None
    if mask is not None and not mask.any():
        mask = None
    return pa.DictionaryArray.from_arrays(pa.array(indices, mask=mask), dictionary, safe=False)


# Two ASCII hex digits per byte value, laid out so that a uint16 view writes them in order.
_HEX_PAIRS = np.frombuffer("".join(f"{b:02X}" for b in range(256)).encode(), dtype=np.uint16)


def _hex(col: Col, values: ColumnData) -> pa.Array:
    width = col.hex_width
    arr = _normalise(values)
    if isinstance(arr, pa.Array):
        if pa.types.is_integer(arr.type):
            arr = arr.to_numpy()
        else:
            arr = _strings(arr)
            if len(arr) and pc.any(pc.not_equal(pc.utf8_length(arr), width)).as_py():
                raise ValueError(f"{col.name}: strings must have exactly {width} hex digits")
            return pc.utf8_upper(arr)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{col.name}: expected integers to render as hex, got {arr.dtype}")
    n = len(arr)
    if _compiled_hex(arr, width):
        # A day's ids: one compiled pass checks and writes the digits (sim/record_kernels.py).
        digits, ok = hex_digits(arr, width)
        if not ok:
            raise ValueError(f"{col.name}: values must fit in {width} hex digits")
    else:
        digits = _hex_pairs(col, arr, width)
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(digits)]
    return pa.Array.from_buffers(STR, n, buffers)


def _compiled_hex(arr: np.ndarray, width: int) -> bool:
    """Whether ``_hex`` writes ``arr``'s digits with the compiled pass: int64 values (a
    process writing only small tables does not import numba for them) that fit a write."""
    n = len(arr)
    return (
        arr.dtype == np.int64
        and width in (4, 8, 12)
        and n >= HEX_COMPILED_FROM
        and n * width < 2**31
    )


def _hex_pairs(col: Col, arr: np.ndarray, width: int) -> np.ndarray:
    """``_hex``'s digits in NumPy passes: a byte's two digits at a time (the compiled pass's
    reference, tests/test_record_kernels.py)."""
    n = len(arr)
    if n and (int(arr.min()) < 0 or int(arr.max()) >= 16**width):
        raise ValueError(f"{col.name}: values must fit in {width} hex digits")
    if n * width >= 2**31:
        raise ValueError(f"{col.name}: too many rows in one write ({n})")
    nbytes = width // 2
    be = arr.astype(">u8").view(np.uint8).reshape(n, 8)[:, 8 - nbytes :]
    digits = _HEX_PAIRS[be]  # (n, nbytes) uint16 = 2 ASCII chars each
    return np.ascontiguousarray(digits)


def _temporal(col: Col, values: ColumnData) -> pa.Array:
    arr = _normalise(values)
    if isinstance(arr, pa.Array):
        return arr.cast(col.type)
    is_date = col.type == DATE
    if arr.dtype.kind == "M":
        arr = arr.astype("datetime64[D]" if is_date else "datetime64[s]")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{col.name}: expected datetime64 or integer epoch values, got {arr.dtype}")
    data, mask = _split_mask(arr, col)
    storage = pa.int32() if is_date else pa.int64()
    ints = data.view("int64") if data.dtype.kind == "M" else data
    return pa.array(ints, type=storage, mask=mask).view(col.type)


def _plain(col: Col, values: ColumnData) -> pa.Array:
    if col.type == BOOL:
        kinds, pa_ok = "b", pa.types.is_boolean
    elif pa.types.is_floating(col.type):
        kinds, pa_ok = "fiu", pa.types.is_floating
    else:  # money is integer fen and ids are integers: a float here is a bug upstream
        kinds, pa_ok = "iu", pa.types.is_integer
    arr = _normalise(values)
    if isinstance(arr, pa.Array):
        if not pa_ok(arr.type):
            raise TypeError(f"{col.name}: expected {col.type}, got {arr.type}")
        return arr.cast(col.type)
    if arr.dtype.kind not in kinds:
        raise TypeError(f"{col.name}: expected numpy {col.type}-compatible dtype, got {arr.dtype}")
    data, mask = _split_mask(arr, col)
    return pa.array(data, type=col.type, mask=mask)


def _column(col: Col, values: ColumnData, names: NameTables, mask_identities: bool) -> pa.Array:
    if col.hex_width:
        return _hex(col, values)
    if col.mask:
        return mask_identity(col.mask, values) if mask_identities else _strings(values)
    if col.type == STR:
        return _strings(values)
    if pa.types.is_timestamp(col.type) or col.type == DATE:
        return _temporal(col, values)
    return _plain(col, values)


def check_columns(spec: TableSpec, columns: Mapping[str, ColumnData]) -> int:
    """Check names and lengths of a column dict (cheap); returns the row count."""
    unknown = sorted(set(columns) - set(spec.column_names))
    if unknown:
        raise KeyError(f"{spec.name}: unknown columns {unknown}; columns: {spec.column_names}")
    missing = [c for c in spec.required if c not in columns]
    if missing:
        raise KeyError(f"{spec.name}: missing columns {missing}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        sizes = {k: len(v) for k, v in columns.items()}
        raise ValueError(f"{spec.name}: columns differ in length: {sizes}")
    return lengths.pop() if lengths else 0


def build_table(
    table: str | TableSpec,
    columns: Mapping[str, ColumnData],
    names: NameTables | Mapping[str, Sequence[str]] | None = None,
    *,
    mask_identities: bool = True,
    check_invariants: bool = True,
) -> pa.Table:
    """Build the Arrow table for ``columns`` with the table's file schema (no service_date).

    Integer codes become dictionary arrays, integer ids listed as hex become fixed-width hex
    strings, identity strings are masked, derived columns are filled, and (by default) the row
    invariants declared in sim/schema.py are checked (ValueError names the first bad row).
    """
    spec = table if isinstance(table, TableSpec) else table_spec(table)
    names = names if isinstance(names, NameTables) else NameTables(names)
    n = check_columns(spec, columns)
    inputs: dict[str, Any] = dict(columns)
    arrays: list[pa.Array] = []
    for col in spec.columns:  # dictionary codes first: derivations read them
        if pa.types.is_dictionary(col.type) and col.name in inputs:
            inputs[col.name] = _integer_codes(col, inputs[col.name], names)
    for col in spec.columns:
        if col.name not in inputs:
            inputs[col.name] = col.derive(inputs, n)  # type: ignore[misc]
        values = inputs[col.name]
        if pa.types.is_dictionary(col.type):
            arr = _dictionary(col, np.asarray(values), names)
        else:
            arr = _column(col, values, names, mask_identities)
        if not col.nullable and arr.null_count:
            raise ValueError(
                f"{spec.name}.{col.name} is not nullable but has {arr.null_count} null(s)"
            )
        arrays.append(arr)
    result = pa.Table.from_arrays(arrays, schema=spec.file_schema)
    if check_invariants:
        check_rows(spec, result)
    return result


def check_rows(spec: TableSpec, table: pa.Table) -> None:
    """Raise ``ValueError`` naming the first row that breaks one of ``spec``'s row invariants."""
    if not table.num_rows:
        return
    for check in spec.checks:
        verdicts = check.ok(table)
        # One pass in the common case: every row good (a null is "not applicable": skipped).
        if pc.all(verdicts, skip_nulls=True).as_py() is not False:
            continue
        ok = pc.fill_null(verdicts, True)
        bad = table.num_rows - pc.sum(ok.cast(pa.int64())).as_py()
        if bad:
            first = pc.index(ok, False).as_py()
            row = str(table.slice(first, 1).to_pylist()[0])[:600]
            raise ValueError(
                f"{spec.name}: {bad} row(s) break `{check.description}`; first is "
                f"row {first}: {row}"
            )


# --- exporters (one class per format) ---------------------------------------------------------


def partition_path(root: Path, table: str, service_date: date, part: int = 0) -> Path:
    """``<root>/<table>/service_date=YYYY-MM-DD/part-<part>.parquet``."""
    return root / table / f"{PARTITION_COLUMN}={service_date.isoformat()}" / f"part-{part}.parquet"


class Exporter(ABC):
    """An output format. ``export`` runs on the writer thread, once per written table part."""

    @abstractmethod
    def export(
        self, root: Path, spec: TableSpec, service_date: date, part: int, table: pa.Table
    ) -> None:
        """Write ``table`` (file schema, no service_date) for one day and part under ``root``."""


@dataclass
class ParquetExporter(Exporter):
    """Hive-partitioned Parquet with settings fixed for byte-identical files."""

    compression: str = "zstd"
    compression_level: int = 1  # level 1: ~25% smaller than snappy here at similar speed
    row_group_rows: int = 1 << 20

    def export(
        self, root: Path, spec: TableSpec, service_date: date, part: int, table: pa.Table
    ) -> None:
        """Write one partition file."""
        path = partition_path(root, spec.name, service_date, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        dict_cols = [c.name for c in spec.columns if c.encoding == "dict" and c.type != BOOL]
        # Delta encoding suits sorted or high-cardinality integers (ids, timestamps, counters):
        # 2-4x faster to write than a dictionary attempt that would overflow, and smaller.
        delta = {c.name: "DELTA_BINARY_PACKED" for c in spec.columns if c.encoding == "delta"}
        pq.write_table(
            table,
            path,
            row_group_size=self.row_group_rows,
            compression=self.compression,
            compression_level=self.compression_level,
            use_dictionary=dict_cols,
            column_encoding=delta or None,
            write_statistics=True,
            version="2.6",
            data_page_size=1 << 20,
            store_schema=True,
            write_page_index=False,
        )


@dataclass
class NullExporter(Exporter):
    """Discards tables (benchmarks of the build step, stream tests); counts rows."""

    rows: int = 0

    def export(
        self, root: Path, spec: TableSpec, service_date: date, part: int, table: pa.Table
    ) -> None:
        """Count and drop."""
        self.rows += table.num_rows


# --- the run's output directory ---------------------------------------------------------------


@dataclass
class WriterStats:
    """Where output time went: caller-side (blocking the simulation) and writer-thread side."""

    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    caller_s: float = 0.0
    caller_max_s: float = 0.0
    worker_s: float = 0.0
    worker_cpu_s: float = 0.0
    worker_max_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for run_meta.json or a benchmark report)."""
        return asdict(self)


def _as_date(value: date | str | np.datetime64) -> date:
    if isinstance(value, datetime):
        raise TypeError(f"service_date must be a date, not a datetime: {value!r}")
    if isinstance(value, date):
        return value
    if isinstance(value, np.datetime64):
        return date.fromisoformat(str(value.astype("datetime64[D]")))
    return date.fromisoformat(value)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


class PartWriter:
    """Writes one shard's partition files straight into a run's temporary folder, as
    ``RunOutput`` would (same conversion, same Parquet settings: the same bytes). For a shard
    that runs in another process (sim/shard_actor.py); the run's ``RunOutput`` commits them."""

    def __init__(self, tmp_dir: str | Path, names: Mapping[str, Sequence[str]], mask: bool) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.names = NameTables(names)
        self.mask_identities = mask
        self.exporter = ParquetExporter()
        self.rows: dict[str, int] = {}
        self.partitions: dict[str, set[date]] = {}

    def write(
        self,
        table: str,
        service_date: date | str | np.datetime64,
        columns: Mapping[str, ColumnData],
        part: int = 0,
    ) -> None:
        """Write one day's rows of ``table`` to ``<table>/service_date=<day>/part-<part>``."""
        spec = table_spec(table)
        day = _as_date(service_date)
        check_columns(spec, columns)
        built = build_table(spec, dict(columns), self.names, mask_identities=self.mask_identities)
        self.exporter.export(self.tmp_dir, spec, day, int(part), built)
        self.rows[spec.name] = self.rows.get(spec.name, 0) + built.num_rows
        self.partitions.setdefault(spec.name, set()).add(day)


class RunOutput:
    """A run's output directory, written off to the side and swapped in on :meth:`commit`.

    ``names`` supplies the scenario's name tables (region, route, city, institution);
    ``mask_identities=False`` exports raw synthetic identities (explicit flag only). Use it as a
    context manager: leaving the block without commit(), or by an exception, discards everything
    and leaves an existing ``out_dir`` untouched. Call write() from one thread only.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        names: Mapping[str, Sequence[str]] | None = None,
        mask_identities: bool = True,
        check_invariants: bool = True,
        exporters: Sequence[Exporter] | None = None,
        queue_size: int = 4,
    ) -> None:
        self.out_dir = Path(out_dir).absolute()
        if self.out_dir.is_symlink():  # the run goes where the link points; the link stays
            self.out_dir = self.out_dir.resolve()
        # Never swap away a folder we did not write, nor a user's file inside an earlier run:
        # refused before the simulation starts, not after it deleted something (sim/run_dir.py).
        self.lock = RunLock(self.out_dir)
        self.lock.acquire()
        self.tmp_dir = self.out_dir.with_name(f"{self.out_dir.name}.partial-{os.getpid()}")
        self._thread = threading.Thread(target=self._run, name="cardtwin-output", daemon=True)
        try:
            self.removed_leftovers = remove_leftovers(self.out_dir)
            check_replaceable(self.out_dir)
            self.names = NameTables(names)
            self.mask_identities = mask_identities
            self.check_invariants = check_invariants
            self.exporters = list(exporters) if exporters is not None else [ParquetExporter()]
            self.stats = WriterStats()
            self._queue: queue.Queue[tuple[TableSpec, date, int, dict[str, Any]] | None]
            self._queue = queue.Queue(maxsize=queue_size)
            self._written: set[tuple[str, date, int]] = set()
            self._partitions: dict[str, set[date]] = {}
            self._error: tuple[str, BaseException] | None = None
            self._discard = False
            self._state = "open"
            self._thread.start()
            shutil.rmtree(self.tmp_dir, ignore_errors=True)  # stale leftover of this same pid
            self.tmp_dir.mkdir(parents=True)
        except BaseException:  # also Ctrl-C / SIGTERM arriving right here: leave nothing
            if self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.lock.release()
            raise

    # -- caller side --

    def write(
        self,
        table: str,
        service_date: date | str | np.datetime64,
        columns: Mapping[str, ColumnData],
        part: int = 0,
    ) -> None:
        """Queue one day's rows of ``table`` for ``<table>/service_date=<day>/part-<part>.parquet``.

        The arrays are handed over, not copied: do not modify them afterwards. Only names and
        lengths are checked here; conversion errors surface on a later write() or at commit().
        """
        start = time.perf_counter()
        self._raise_if_failed()
        if self._state != "open":
            raise OutputError(f"RunOutput for {self.out_dir} is {self._state}")
        spec = table_spec(table)
        day = _as_date(service_date)
        check_columns(spec, columns)
        for col in spec.columns:
            if col.names:
                self.names.dictionary(col)
        key = (spec.name, day, int(part))
        if key in self._written or part < 0:
            raise ValueError(f"{spec.name} {day} part {part} already written (or part < 0)")
        self._written.add(key)
        self._partitions.setdefault(spec.name, set()).add(day)
        self._queue.put((spec, day, int(part), dict(columns)))
        elapsed = time.perf_counter() - start
        self.stats.caller_s += elapsed
        self.stats.caller_max_s = max(self.stats.caller_max_s, elapsed)

    def add_written(self, rows: Mapping[str, int], partitions: Mapping[str, set]) -> None:
        """Count partitions that another process wrote into this run's folder (a shard's own
        files in a distributed run, ``PartWriter``), for the output summary."""
        for name, n in rows.items():
            self.stats.rows[name] = self.stats.rows.get(name, 0) + int(n)
        for name, days in partitions.items():
            self._partitions.setdefault(name, set()).update(days)

    def flush(self) -> None:
        """Wait until everything queued is written; raise the writer thread's error, if any."""
        if self._state != "open":
            raise OutputError(f"RunOutput for {self.out_dir} is {self._state}")
        self._queue.join()
        self._raise_if_failed()

    def commit(self, meta: Mapping[str, Any] | None = None) -> Path:
        """Finish writing, add run_meta.json and the DuckDB catalogue, swap into ``out_dir``."""
        if self._state != "open":
            raise OutputError(f"RunOutput for {self.out_dir} is {self._state}")
        self._stop()
        try:
            self._raise_if_failed()
            meta_out = dict(meta or {})
            if "output" in meta_out:
                raise ValueError("meta key 'output' is reserved for the output summary")
            meta_out["output"] = self._summary()
            write_run_meta(self.tmp_dir, meta_out)
            write_marker(self.tmp_dir, SCHEMA_VERSION, (CATALOGUE_FILE,))
            check_replaceable(self.out_dir)  # again: the folder may have changed during the run
            old = self._swap_in()
        except BaseException:
            self._state = "failed"
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.lock.release()
            raise
        try:
            # Views hold absolute paths, so they can only be bound once the data is in place.
            write_duckdb_catalogue(self.out_dir, TABLES)
        except BaseException:
            self._roll_back(old)
            self._state = "failed"
            self.lock.release()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # checked removable before the run
        self._state = "committed"
        self.lock.release()
        return self.out_dir

    def abort(self) -> None:
        """Stop writing and remove the temporary directory; ``out_dir`` is left as it was."""
        if self._state != "open":
            return
        held = StopSignalsHeld()  # a second Ctrl-C must not leave the folder or the lock behind
        try:
            self._discard = True
            self._stop()
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self._state = "aborted"
            self.lock.release()
        finally:
            held.forget()  # stopping already

    def __enter__(self) -> RunOutput:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    # -- internals --

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._process(*item)
            finally:
                self._queue.task_done()

    def _process(self, spec: TableSpec, day: date, part: int, columns: dict[str, Any]) -> None:
        if self._error is not None or self._discard:
            return  # keep draining so a blocked write() can return and see the error
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            table = build_table(
                spec,
                columns,
                self.names,
                mask_identities=self.mask_identities,
                check_invariants=self.check_invariants,
            )
            for exporter in self.exporters:
                exporter.export(self.tmp_dir, spec, day, part, table)
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = (f"{spec.name} for {day} part {part}", exc)
            return
        elapsed = time.perf_counter() - start
        s = self.stats
        s.rows[spec.name] = s.rows.get(spec.name, 0) + table.num_rows
        s.files += 1
        s.worker_s += elapsed
        s.worker_cpu_s += time.thread_time() - cpu
        s.worker_max_s = max(s.worker_max_s, elapsed)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            where, exc = self._error
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise OutputError(f"writing {where} failed: {type(exc).__name__}: {text}") from exc

    def _summary(self) -> dict[str, Any]:
        tables = {
            name: {
                "rows": self.stats.rows.get(name, 0),
                "partitions": len(self._partitions.get(name, ())),
            }
            for name in TABLES
        }
        return {
            "schema_version": SCHEMA_VERSION,
            "masked_identities": self.mask_identities,
            "tables": tables,
        }

    def _swap_in(self) -> Path | None:
        """Move the finished directory into place; returns where the old output now is."""
        out, tmp = self.out_dir, self.tmp_dir
        if not out.exists():
            os.rename(tmp, out)
            return None
        if _exchange(tmp, out):
            return tmp
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        return old

    def _roll_back(self, old: Path | None) -> None:
        out, tmp = self.out_dir, self.tmp_dir
        if old == tmp:
            _exchange(tmp, out)
        else:
            os.rename(out, tmp)
            if old is not None:
                os.rename(old, out)
        shutil.rmtree(tmp, ignore_errors=True)


# --- DuckDB catalogue, run metadata, reading back ---------------------------------------------

_DUCK_TYPES = {
    "int8": "TINYINT",
    "int16": "SMALLINT",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "bool": "BOOLEAN",
    "string": "VARCHAR",
    "date32[day]": "DATE",
    "timestamp[s]": "TIMESTAMP",
    "double": "DOUBLE",
}

_CONVENIENCE_VIEWS = {
    # Rejected records are left out: most are duplicate uploads of a tap already counted.
    "taps_per_hour": """
        SELECT service_date, CAST(date_part('hour', event_timestamp) AS INTEGER) AS hour,
               COUNT(*) AS taps
        FROM transactions WHERE status <> 'rejected'
        GROUP BY ALL ORDER BY service_date, hour""",
    "spend_by_card_type": """
        SELECT rider_category, COUNT(*) AS taps,
               CAST(SUM(amount_fen) AS DECIMAL(18, 0)) * 0.01 AS amount_yuan
        FROM transactions WHERE status <> 'rejected'
        GROUP BY ALL ORDER BY rider_category""",
}


def _duck_type(t: pa.DataType) -> str:
    return "VARCHAR" if pa.types.is_dictionary(t) else _DUCK_TYPES[str(t)]


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_query(out_dir: Path, name: str, *, with_part: bool = False) -> str:
    """DuckDB SQL reading table ``name`` of the run in ``out_dir`` (``<out_dir>/<name>/*/
    *.parquet`` with Hive partitioning, ``service_date`` first; a table with no files: an empty
    select with the right columns). ``with_part`` adds each row's ``part``, the number of the
    file it is in (``part-<n>.parquet``): for a table each shard writes of its own, the shard
    that wrote the row (``RecordWriter`` writes its shard's rows to the part of its index), which
    is how a reader tells apart rows whose ids do not carry the shard (``device_uploads``)."""
    spec = table_spec(name)
    out = Path(out_dir).resolve()
    if not any((out / name).glob(f"{PARTITION_COLUMN}=*/*.parquet")):
        cols = [f"CAST(NULL AS {_duck_type(f.type)}) AS {f.name}" for f in spec.schema]
        if with_part:
            cols.append("CAST(NULL AS BIGINT) AS part")
        return f"SELECT {', '.join(cols)} WHERE false"
    pattern = _sql_string(str(out / name / "*" / "*.parquet"))
    options = f"hive_partitioning = true, hive_types = {{'{PARTITION_COLUMN}': DATE}}"
    if not with_part:
        return (
            f"SELECT {PARTITION_COLUMN}, * EXCLUDE ({PARTITION_COLUMN}) FROM "
            f"read_parquet({pattern}, {options})"
        )
    part = r"CAST(regexp_extract(filename, 'part-([0-9]+)\.parquet$', 1) AS BIGINT)"
    return (
        f"SELECT {PARTITION_COLUMN}, * EXCLUDE ({PARTITION_COLUMN}, filename), {part} AS part "
        f"FROM read_parquet({pattern}, {options}, filename = true)"
    )


def define_views(con: duckdb.DuckDBPyConnection, out_dir: Path, tables: Iterable[str]) -> None:
    """Create on ``con`` one view per table of the run in ``out_dir`` (``table_query``: a table
    with no files gets an empty view with the right columns), plus the convenience views when
    there are transactions."""
    names = list(tables)
    for name in names:
        con.execute(f"CREATE VIEW {name} AS {table_query(out_dir, name)}")
    if "transactions" in names:
        for view, query in _CONVENIENCE_VIEWS.items():
            con.execute(f"CREATE VIEW {view} AS {query}")


def write_duckdb_catalogue(out_dir: str | os.PathLike[str], tables: Iterable[str]) -> Path:
    """(Re)create ``cardtwin.duckdb`` in ``out_dir`` with one view per table plus conveniences.

    Views read ``<absolute out_dir>/<table>/*/*.parquet`` with Hive partitioning; a table with no
    files gets an empty view with the right columns. Re-run after moving a run directory.
    """
    out = Path(out_dir).resolve()
    db = out / CATALOGUE_FILE
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    try:
        define_views(con, out, tables)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return db


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for what runs write: numpy scalars, dates, paths, sets."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as JSON")


def report_json(value: Any, *, sort_keys: bool = False) -> str:
    """A report as strict JSON text (UTF-8, indent 2): NaN and infinite numbers (an interval
    of one replication, an average over nothing) become null, which every JSON reader takes."""
    return json.dumps(
        _finite(value),
        indent=2,
        ensure_ascii=False,
        default=json_default,
        sort_keys=sort_keys,
        allow_nan=False,
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_run_meta(out_dir: str | os.PathLike[str], meta: Mapping[str, Any]) -> Path:
    """Write ``run_meta.json`` (sorted keys, UTF-8, indent 2) into ``out_dir`` atomically."""
    path = Path(out_dir) / RUN_META_FILE
    text = json.dumps(meta, sort_keys=True, ensure_ascii=False, indent=2, default=json_default)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


_PACKAGES = (
    "numpy",
    "pandas",
    "pyarrow",
    "duckdb",
    "simpy",
    "mesa",
    "networkx",
    "faker",
    "pydantic",
    "PyYAML",
    "rich",
)


def package_versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on (those installed)."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def table_files(out_dir: str | os.PathLike[str], table: str) -> list[Path]:
    """The Parquet files of ``table`` in a run folder, partitions in date order."""
    return sorted((Path(out_dir) / table).glob(f"{PARTITION_COLUMN}=*/*.parquet"))


def read_part(path: Path, table: str) -> pa.Table:
    """One file of ``table`` (``<table>/service_date=<day>/part-<n>.parquet``) with the table's
    dataset schema, its service_date from the folder name. A damaged file or one without the
    table's columns raises (pyarrow's ``ArrowException``, ``OSError`` or ``ValueError``)."""
    spec = table_spec(table)
    data = pq.read_table(path)
    day = date.fromisoformat(path.parent.name.split("=", 1)[1])
    days = pa.array(np.full(data.num_rows, day.toordinal() - 719163, np.int32)).view(DATE)
    return pa.Table.from_arrays([days, *data.columns], schema=spec.schema)


def read_table(out_dir: str | os.PathLike[str], table: str) -> pa.Table:
    """Read a table back with its dataset schema (service_date first), partitions in date order."""
    parts = [read_part(path, table) for path in table_files(out_dir, table)]
    return pa.concat_tables(parts) if parts else table_spec(table).schema.empty_table()
