"""Each row check of every output table reads only the columns its ``reads`` names.

``TableSpec.without`` keeps the checks whose ``reads`` avoid the columns it drops (a stream's
tap-time spec drops the columns known after the tap), so a check that reads a column it does not
name would fail, or judge other columns, on such a table. Every check is evaluated here on a
table holding only its ``reads`` columns and must give the same verdicts, nulls included, as on
the whole table. The rows are synthetic, of each column's Arrow type, drawn from small ranges (and
now and then a large amount) so that equalities and bounds come out both ways and every check
sees good and bad rows; a check of the rows together (a sum) is also asked about pairs of rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sim.schema import BUILTIN_NAME_TABLES, TABLES, Check, Col, TableSpec

N_ROWS = 400
SEEDS = (0, 1, 2)
CHECKS = [
    pytest.param(spec, check, id=f"{spec.name}: {check.description}")
    for spec in TABLES.values()
    for check in spec.checks
]


def _values(col: Col, n: int, rng: np.random.Generator) -> pa.Array:
    """``n`` values of ``col``'s type: integers in [-2, 4] (fen, counts, seconds), in a 32 or
    64-bit column one in ten 50,000 times larger (a top-up needing an ID); codes of its name
    table; nulls in about a tenth of a nullable column's rows."""
    t = col.type
    mask = rng.random(n) < 0.1 if col.nullable else None
    if pa.types.is_dictionary(t):
        names = BUILTIN_NAME_TABLES.get(col.names or "", ("a", "b", "c"))
        indices = pa.array(rng.integers(0, len(names), n), type=t.index_type, mask=mask)
        return pa.DictionaryArray.from_arrays(indices, pa.array(names, type=t.value_type))
    small = rng.integers(-2, 5, n)
    if t in (pa.int32(), pa.int64()):  # amounts in fen among them
        small *= np.where(rng.random(n) < 0.1, 50_000, 1)
    if pa.types.is_boolean(t):
        return pa.array(small > 1, mask=mask)
    if pa.types.is_string(t):
        return pa.array([f"s{v}" for v in small], mask=mask)
    if pa.types.is_floating(t):
        return pa.array(small / 2, type=t, mask=mask)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return (
            pa.array(small + 100, type=pa.int64(), mask=mask)
            .cast(pa.int32() if pa.types.is_date32(t) else pa.int64())
            .cast(t)
        )
    assert pa.types.is_integer(t), (col.name, t)
    return pa.array(small, type=t, mask=mask)


def synthetic_table(spec: TableSpec, seed: int, n: int = N_ROWS) -> pa.Table:
    """``n`` rows of ``spec``'s file schema (see ``_values``)."""
    rng = np.random.default_rng(seed)
    return pa.Table.from_arrays([_values(c, n, rng) for c in spec.columns], schema=spec.file_schema)


def verdicts_on_its_reads(check: Check, table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """``check``'s verdicts on ``table`` and on ``table`` holding only the columns it reads."""
    whole = pa.chunked_array(check.ok(table)).combine_chunks()
    alone = pa.chunked_array(check.ok(table.select(list(check.reads)))).combine_chunks()
    return whole, alone


@pytest.mark.parametrize(("spec", "check"), CHECKS)
def test_a_check_reads_only_the_columns_it_names(spec, check):
    assert len(set(check.reads)) == len(check.reads), check.reads
    verdicts = set()
    for seed in SEEDS:
        table = synthetic_table(spec, seed)
        for rows in [table] + [table.slice(i, 2) for i in range(0, 40, 2)]:
            whole, alone = verdicts_on_its_reads(check, rows)
            assert whole.type == pa.bool_() and len(whole) == rows.num_rows
            assert alone.equals(whole), rows.num_rows
            verdicts |= set(whole.to_pylist())
    assert verdicts >= {True, False}, verdicts  # a constant verdict would prove little


def test_the_checks_of_every_table_are_among_those_tested():
    tested = {spec.name for spec, _ in (p.values for p in CHECKS)}
    assert tested == {spec.name for spec in TABLES.values() if spec.checks}
    assert len(CHECKS) > 30  # 38 when written


def test_a_check_reading_a_column_it_does_not_name_is_caught():
    spec = TABLES["transactions"]
    table = synthetic_table(spec, 0)
    unnamed = Check("amount_fen <= list_fare_fen", _le_list_fare, reads=("amount_fen",))
    with pytest.raises(KeyError, match="list_fare_fen"):
        verdicts_on_its_reads(unnamed, table)
    by_position = Check(
        "amount_fen >= 0", lambda t: pc.greater_equal(t.column(0), 0), reads=("amount_fen",)
    )
    whole, alone = verdicts_on_its_reads(by_position, table)
    assert not alone.equals(whole)


def _le_list_fare(t: pa.Table) -> pa.ChunkedArray:
    return pc.less_equal(t["amount_fen"], t["list_fare_fen"])
