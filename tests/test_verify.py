"""`run_scenario.py verify RUN_DIR` (sim/verify.py): a good run verifies; a fare changed, a row
removed or a batch reordered in the files is found and named."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sim.api import load_scenario, run
from sim.verify import verify_run

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("verify") / "run"
    run(load_scenario(SMALL, days=3), out)
    return out


def _copy(good: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(good, out)
    return out


def _rewrite(path: Path, change) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def _first_partition(out: Path, table: str) -> Path:
    return sorted((out / table).rglob("*.parquet"))[0]


def test_a_good_run_verifies_from_the_command_line(good):
    result = subprocess.run(
        [sys.executable, "run_scenario.py", "verify", str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{good}: verified"


def test_a_changed_fare_is_found(good, tmp_path):
    out = _copy(good, tmp_path)

    def raise_one_fare(table: pa.Table) -> pa.Table:
        cleared = pc.equal(pc.cast(table["status"], pa.string()), "cleared")
        row = int(np.flatnonzero(cleared.to_numpy(zero_copy_only=False))[0])
        columns = {}
        for name in ("amount_fen", "list_fare_fen"):  # both, so the row itself stays coherent
            values = table[name].to_numpy().copy()
            values[row] += 100
            columns[name] = pa.array(values, type=table.schema.field(name).type)
        for name, values in columns.items():
            table = table.set_column(table.schema.get_field_index(name), name, values)
        return table

    _rewrite(_first_partition(out, "transactions"), raise_one_fare)
    problems = verify_run(out)
    assert any("records_digest does not match" in p for p in problems), problems
    assert any("gross_fen" in p and "transactions sum to" in p for p in problems), problems


def test_a_removed_row_is_found(good, tmp_path):
    out = _copy(good, tmp_path)

    def drop_a_cleared_row(table: pa.Table) -> pa.Table:
        cleared = pc.equal(pc.cast(table["status"], pa.string()), "cleared").to_numpy(
            zero_copy_only=False
        )
        keep = np.ones(table.num_rows, dtype=bool)
        keep[np.flatnonzero(cleared)[3]] = False
        return table.filter(pa.array(keep))

    _rewrite(_first_partition(out, "transactions"), drop_a_cleared_row)
    problems = verify_run(out)
    assert any("transactions name it" in p for p in problems), problems


def test_a_reordered_batch_is_found(good, tmp_path):
    out = _copy(good, tmp_path)

    def swap_two_batches(table: pa.Table) -> pa.Table:
        ids = table["clearing_batch_id"].to_numpy().copy()
        nodes = table["node_id"].to_pylist()
        first = [i for i, n in enumerate(nodes) if n == "NT_EXCHANGE"][:2]
        ids[first[0]], ids[first[1]] = ids[first[1]], ids[first[0]]
        index = table.schema.get_field_index("clearing_batch_id")
        return table.set_column(index, "clearing_batch_id", pa.array(ids, type=pa.int64()))

    _rewrite(_first_partition(out, "clearing_batches"), swap_two_batches)
    problems = verify_run(out)
    assert any("node NT_EXCHANGE" in p and "link" in p for p in problems), problems


def test_a_folder_that_is_not_a_run_is_said_so(tmp_path):
    assert verify_run(tmp_path) == [
        f"{tmp_path}: not a CardTwin run folder (no .cardtwin-run.json)"
    ]
