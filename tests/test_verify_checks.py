"""verify's side-by-side sums (sim/verify.py ``_compare``: the journal against the records, the
nodes' books against the journal), its check that every transaction id is there once, and its
row invariants, which read the files' dictionary codes while the other checks read the decoded
names."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.api import load_scenario, run
from sim.verify import _SHOWN, _compare, verify_run

SMALL = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"


def test_each_key_whose_sums_differ_is_one_line_naming_table_date_and_who():
    found = {("2024-01-01", "NTCARD"): 500, ("2024-01-02", "NTCARD"): 7}
    other = {("2024-01-01", "NTCARD"): 500, ("2024-01-03", "QR_ALIPAY"): 90}
    assert _compare("fares posted", found, "charged records", other) == [
        "ledger_entries, 2024-01-02, issuer NTCARD: fares posted 7 fen, charged records 0 fen",
        "ledger_entries, 2024-01-03, issuer QR_ALIPAY: fares posted 0 fen, charged records 90 fen",
    ]
    assert _compare(
        "net position", found, "settlement entries", other, table="settlements", who="node"
    )[0] == ("settlements, 2024-01-02, node NTCARD: net position 7 fen, settlement entries 0 fen")
    assert _compare("same", found, "same again", dict(found)) == []


def test_past_the_shown_lines_one_line_counts_the_rest():
    found = {(f"2024-01-{d:02d}", "NTCARD"): d for d in range(1, _SHOWN + 5)}
    lines = _compare("fees", found, "batches' fee_fen", {}, table="settlements", who="node")
    assert len(lines) == _SHOWN + 1
    assert lines[-1] == "settlements: fees differ on more day(s) x node(s) (4 not shown)"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify_compare") / "run"
    run(load_scenario(SMALL, days=2), out)
    return out


def test_a_transaction_written_twice_is_found(small_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    path = sorted((out / "transactions").rglob("*.parquet"))[0]
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), path)
    assert "transactions: a transaction id appears more than once" in verify_run(out)


def _first_cleared_made_rejected(table: pa.Table) -> pa.Table:
    """``table`` (a transactions file) with its first cleared record's status code set to
    rejected, its reject_reason left at none."""
    status = table["status"].combine_chunks()
    names = status.dictionary.to_pylist()
    codes = status.indices.to_numpy().copy()
    codes[np.flatnonzero(codes == names.index("cleared"))[0]] = names.index("rejected")
    changed = pa.DictionaryArray.from_arrays(
        pa.array(codes, status.indices.type), status.dictionary
    )
    return table.set_column(table.schema.get_field_index("status"), "status", changed)


def test_a_status_changed_without_its_reason_breaks_a_row_invariant(small_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    path = sorted((out / "transactions").rglob("*.parquet"))[0]
    pq.write_table(_first_cleared_made_rejected(pq.read_table(path)), path)
    problems = verify_run(out)
    broken = "transactions: 1 row(s) break `status = rejected <=> reject_reason != 'none'`"
    assert any(p.startswith(broken) for p in problems), problems
    # The decoded names see it too: run_meta.json counted one more cleared record.
    assert any("record(s) rejected in the files" in p for p in problems), problems
