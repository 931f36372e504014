"""`run_scenario.py verify RUN_DIR` (sim/verify.py): a good run verifies, a busy one too; a fare
changed, a row removed, a batch reordered, a journal entry changed, files deleted, added or
damaged, or a count changed in run_meta.json is found and named."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from output_frames import read_frame
from refund_runs import run_with_refunds

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


def test_a_transaction_written_twice_is_found(good, tmp_path):
    out = _copy(good, tmp_path)
    _rewrite(_first_partition(out, "transactions"), lambda t: pa.concat_tables([t, t.slice(0, 1)]))
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


def test_a_status_changed_without_its_reason_breaks_a_row_invariant(good, tmp_path):
    """The row invariants read the files' dictionary codes; the other checks the decoded names
    (sim/verify.py ``_decoded``): both see it."""
    out = _copy(good, tmp_path)
    _rewrite(_first_partition(out, "transactions"), _first_cleared_made_rejected)
    problems = verify_run(out)
    broken = "transactions: 1 row(s) break `status = rejected <=> reject_reason != 'none'`"
    assert any(p.startswith(broken) for p in problems), problems
    # The decoded names see it too: run_meta.json counted one more cleared record.
    assert any("record(s) rejected in the files" in p for p in problems), problems


def test_a_folder_that_is_not_a_run_is_said_so(tmp_path):
    assert verify_run(tmp_path) == [
        f"{tmp_path}: not a CardTwin run folder (no .cardtwin-run.json)"
    ]


def _cli_verify(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run_scenario.py", "verify", str(run_dir)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_a_fare_entry_multiplied_in_the_journal_is_found(good, tmp_path):
    out = _copy(good, tmp_path)

    def card_fares_times_ten(table: pa.Table) -> pa.Table:
        fare = pc.equal(pc.cast(table["memo"], pa.string()), "card_fare")
        amount = pc.if_else(fare, pc.multiply(table["amount_fen"], 10), table["amount_fen"])
        return table.set_column(table.schema.get_field_index("amount_fen"), "amount_fen", amount)

    day = out / "ledger_entries" / "service_date=2024-01-02" / "part-0.parquet"
    _rewrite(day, card_fares_times_ten)
    problems = verify_run(out)
    fares = [p for p in problems if "fares posted (card_fare + qr_fare)" in p]
    assert len(fares) == 1 and fares[0].startswith("ledger_entries, 2024-01-02, issuer NTCARD:")
    posted, charged = (int(x) for x in re.findall(r"(\d+) fen", fares[0]))
    assert posted > charged > 0


def test_a_clearing_entry_changed_in_the_journal_is_found(good, tmp_path):
    out = _copy(good, tmp_path)

    def one_clearing_entry_up(table: pa.Table) -> pa.Table:
        memo, debit = (pc.cast(table[c], pa.string()) for c in ("memo", "debit"))
        hit = pc.and_(pc.equal(memo, "clearing"), pc.starts_with(debit, "unsettled:"))
        row = int(np.flatnonzero(hit.to_numpy(zero_copy_only=False))[0])
        amount = table["amount_fen"].to_numpy().copy()
        amount[row] += 500
        column = pa.array(amount, type=pa.int64())
        return table.set_column(table.schema.get_field_index("amount_fen"), "amount_fen", column)

    _rewrite(_first_partition(out, "ledger_entries"), one_clearing_entry_up)
    problems = verify_run(out)
    assert any("cleared (clearing entries on unsettled:)" in p for p in problems), problems


def test_a_day_deleted_from_two_tables_is_found(good, tmp_path):
    out = _copy(good, tmp_path)
    for table in ("transactions", "clearing_batches"):
        shutil.rmtree(out / table / "service_date=2024-01-02")
    result = _cli_verify(out)
    assert result.returncode == 1, result.stdout + result.stderr
    for table in ("transactions", "clearing_batches"):
        assert f"{table}/service_date=2024-01-02/part-0.parquet" in result.stdout
        assert f"run_meta.json output.tables.{table}.rows says" in result.stdout
    assert "run_meta.json totals.cleared says" in result.stdout


def test_tables_deleted_whole_are_found(good, tmp_path):
    out = _copy(good, tmp_path)
    for table in ("transactions", "clearing_batches", "settlements"):
        shutil.rmtree(out / table)
    problems = verify_run(out)
    for table in ("transactions", "clearing_batches", "settlements"):
        assert any(p.startswith(f"{table}/: ") and "are missing" in p for p in problems)
        assert any(p.startswith(f"{table}: 0 row(s) in the files") for p in problems)


def test_a_partition_the_run_did_not_write_is_found(good, tmp_path):
    out = _copy(good, tmp_path)
    extra = out / "topups" / "service_date=2024-01-09"
    extra.mkdir()
    shutil.copy(out / "topups" / "service_date=2024-01-03" / "part-0.parquet", extra)
    problems = verify_run(out)
    assert any("topups/service_date=2024-01-09/part-0.parquet" in p for p in problems), problems
    assert any("output.tables.topups.rows says" in p for p in problems), problems


def test_a_row_count_changed_in_run_meta_is_found(good, tmp_path):
    out = _copy(good, tmp_path)
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    meta["output"]["tables"]["card_sales"]["rows"] += 1
    (out / "run_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    rows = meta["output"]["tables"]["card_sales"]["rows"]
    assert verify_run(out) == [
        f"card_sales: {rows - 1} row(s) in the files, run_meta.json "
        f"output.tables.card_sales.rows says {rows}"
    ]


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_a_damaged_parquet_file_is_a_problem_naming_it(good, tmp_path, how):
    out = _copy(good, tmp_path)
    path = _first_partition(out, "transactions")
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # footer intact, column data garbled: only decoding the pages finds it
        data[200 : len(data) // 2] = bytes(b ^ 0x5A for b in data[200 : len(data) // 2])
    path.write_bytes(bytes(data))
    result = _cli_verify(out)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""
    named = path.relative_to(out).as_posix()
    assert result.stdout.startswith(f"{named}: not a readable transactions Parquet file")
    assert result.stdout.strip().endswith(f"{out}: 1 problem(s)")


def test_an_honest_run_with_every_kind_of_record_verifies(tmp_path):
    """No false alarm where the journal and the records differ most: taps refused by a full
    buffer and declined (no fare), double charges rejected and refunded or let through,
    resent uploads, records still pending at the end, a clearing node down a day."""
    overlay = tmp_path / "busy.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "extends": str(SMALL),
                "name": "busy",
                "devices": {
                    "buffer_capacity_records": 40,
                    "double_tap_prob_per_tap": 0.1,
                    "lock_failure_prob": 0.3,
                    "resend_prob_per_upload": 0.3,
                    "comm_outage_prob_per_device_day": 0.3,
                    "comm_outage_mean_min": 1500,
                },
                "incidents": [
                    {"id": "wave", "kind": "duplicate_wave", "start": "2024-01-01 06:00",
                     "duration_min": 900, "target": "837", "duplicate_share": 0.8,
                     "duplicate_gap_max_s": 5},
                    {"id": "node", "kind": "clearing_node_outage", "target": "NT_EXCHANGE",
                     "start": "2024-01-02 01:00", "duration_min": 1500},
                ],
            }
        ),
        encoding="utf-8",
    )  # fmt: skip
    out = tmp_path / "run"
    run(load_scenario(overlay, days=3), out)
    tx = pq.read_table(out / "transactions").to_pandas()
    reasons = set(tx["reject_reason"].astype(str))
    assert {"device_buffer_full", "declined_insufficient_balance"} <= reasons
    assert "duplicate_deduction" in reasons and (tx["status"] == "pending").any()
    assert verify_run(out) == []


# --- refunds in fen (the refunds table against the charges, the batches, the journal and
# run_meta.json) ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def refunded(tmp_path_factory):
    """A run with refunds of both kinds (tests/refund_runs.py): duplicate deductions the
    clearing rejected (those it found on the last day are paid after the period) and five
    cleared card charges of the first day the service desk had refunded (paid within it)."""
    return run_with_refunds(tmp_path_factory.mktemp("refunds"))


def _refund_part(out: Path, kind: str) -> tuple[Path, int]:
    """A refunds Parquet file holding a refund of ``kind``, and that row's index in it."""
    for path in sorted((out / "refunds").rglob("*.parquet")):
        kinds = pq.read_table(path)["refund_kind"].to_pylist()
        if kind in kinds:
            return path, kinds.index(kind)
    raise AssertionError(f"no {kind} refund in {out}")


def test_a_run_with_refunds_of_both_kinds_verifies(refunded):
    refunds = read_frame(refunded, "refunds")
    meta = json.loads((refunded / "run_meta.json").read_text(encoding="utf-8"))
    assert set(refunds["refund_kind"]) == {"duplicate_deduction", "service_desk"}
    owed = refunds[refunds["pay_date"].astype(str) > meta["period"]["end"]]
    assert len(owed) > 0 and (owed["refund_kind"] == "duplicate_deduction").all()
    assert meta["totals"]["refunds_outstanding_fen"] == owed["amount_fen"].sum()
    assert verify_run(refunded) == []


def test_a_doubled_desk_refund_row_is_found(refunded, tmp_path):
    out = _copy(refunded, tmp_path)
    path, row = _refund_part(out, "service_desk")
    _rewrite(path, lambda t: pa.concat_tables([t, t.slice(row, 1)]))
    tx_id = pq.read_table(path)["transaction_id"][row].as_py()
    problems = verify_run(out)
    assert (
        f"refunds: transaction {tx_id} is refunded 2 times; a charge is refunded once at most"
        in problems
    )
    # The journal paid it once: the desk refunds of its pay date no longer agree.
    assert any(
        p.startswith("ledger_entries, ") and "desk refunds posted (desk_refund)" in p
        for p in problems
    ), problems
    assert any("run_meta.json totals.refund_orders says" in p for p in problems), problems


def test_a_changed_refund_amount_is_found(refunded, tmp_path):
    out = _copy(refunded, tmp_path)
    path, row = _refund_part(out, "duplicate_deduction")

    def more(table: pa.Table) -> pa.Table:
        amount = table["amount_fen"].to_numpy().copy()
        amount[row] += 100
        index = table.schema.get_field_index("amount_fen")
        return table.set_column(index, "amount_fen", pa.array(amount, type=pa.int64()))

    _rewrite(path, more)
    tx_id = pq.read_table(path)["transaction_id"][row].as_py()
    problems = verify_run(out)
    said = [p for p in problems if f"transaction {tx_id}: refunds amount_fen" in p]
    assert len(said) == 1 and "a refund pays back the whole charge, never more" in said[0]
    assert any("refund_fen" in p and p.startswith("clearing_batches, ") for p in problems)


def test_a_doubled_refund_entry_in_the_journal_is_found(refunded, tmp_path):
    out = _copy(refunded, tmp_path)
    path = next(
        p
        for p in sorted((out / "ledger_entries").rglob("*.parquet"))
        if "desk_refund" in pq.read_table(p)["memo"].to_pylist()
    )
    row = pq.read_table(path)["memo"].to_pylist().index("desk_refund")
    _rewrite(path, lambda t: pa.concat_tables([t, t.slice(row, 1)]))
    day = path.parent.name.partition("=")[2]
    problems = verify_run(out)
    said = [p for p in problems if "desk refunds posted (desk_refund)" in p]
    assert len(said) == 1 and said[0].startswith(f"ledger_entries, {day}, issuer NTCARD: ")
    posted, recorded = (int(x) for x in re.findall(r"(\d+) fen", said[0]))
    assert posted == 2 * recorded > 0


def test_a_duplicate_deduction_without_its_refund_row_is_found(refunded, tmp_path):
    out = _copy(refunded, tmp_path)
    path, row = _refund_part(out, "duplicate_deduction")
    tx_id = pq.read_table(path)["transaction_id"][row].as_py()
    keep = np.ones(pq.read_table(path).num_rows, dtype=bool)
    keep[row] = False
    _rewrite(path, lambda t: t.filter(pa.array(keep)))
    problems = verify_run(out)
    assert any(
        f"transaction {tx_id} was rejected as a duplicate deduction" in p
        and "refunds has no refund of it" in p
        for p in problems
    ), problems


def test_owed_refunds_changed_in_run_meta_are_found(refunded, tmp_path):
    out = _copy(refunded, tmp_path)
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    owed = meta["totals"]["refunds_outstanding_fen"]
    meta["totals"]["refunds_outstanding_fen"] = owed - 1
    (out / "run_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert verify_run(out) == [
        f"refunds: {owed} fen of refunds paid after the period's last day "
        f"{meta['period']['end']}, run_meta.json totals.refunds_outstanding_fen says {owed - 1}"
    ]


def test_a_run_written_before_refunds_were_kept_is_said_so_once(refunded, tmp_path):
    out = _copy(refunded, tmp_path)
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    del meta["totals"]["refund_orders_fen"]  # as a run of an earlier version has it
    (out / "run_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    problems = verify_run(out)
    assert problems == [
        "refunds: run_meta.json has no totals.refund_orders_fen: the run was written before "
        "CardTwin recorded its refunds (the refunds table), so they cannot be checked in fen; "
        "run the scenario again with this version to verify them"
    ]


# --- the clearing nodes' books against the journal and the clearing logs ----------------------
def _shift_book_rows(out: Path, date: str, moves: dict[tuple[str, str], int]) -> None:
    """Add fen to rows of the settlements of ``date``, by (node_id, participant_id)."""

    def shift(table: pa.Table) -> pa.Table:
        node = pc.cast(table["node_id"], pa.string()).to_pylist()
        who = pc.cast(table["participant_id"], pa.string()).to_pylist()
        fen = table["net_position_fen"].to_numpy().copy()
        for (n, p), delta in moves.items():
            rows = [i for i, key in enumerate(zip(node, who, strict=True)) if key == (n, p)]
            assert len(rows) == 1, (n, p)
            fen[rows[0]] += delta
        index = table.schema.get_field_index("net_position_fen")
        return table.set_column(index, "net_position_fen", pa.array(fen, type=pa.int64()))

    _rewrite(out / "settlements" / f"service_date={date}" / "part-0.parquet", shift)


def test_money_moved_inside_a_node_book_is_found_though_it_still_sums_to_zero(good, tmp_path):
    """The node's own row is what balances its book: a book can be rewritten and still sum to
    zero. Its members' positions are what the journal settled, its own rows its fees."""
    out = _copy(good, tmp_path)
    _shift_book_rows(
        out,
        "2024-01-02",
        {("NT_EXCHANGE", "NT_EXCHANGE"): -100, ("NT_EXCHANGE", "NT_BUS_URBAN"): 100},
    )
    books = pq.read_table(out / "settlements" / "service_date=2024-01-02" / "part-0.parquet")
    assert pc.sum(books["net_position_fen"]).as_py() == 0  # the row invariant still holds
    problems = verify_run(out)
    positions = [p for p in problems if p.startswith("settlements, 2024-01-02, participant ")]
    assert len(positions) == 2, problems
    urban = next(p for p in positions if "participant NT_BUS_URBAN:" in p)
    book, journal = (int(x) for x in re.findall(r"(-?\d+) fen", urban))
    assert book == journal + 100
    assert any(
        p.startswith("settlements: node NT_EXCHANGE's own rows (participant_id = node_id) add up")
        and "its fees in the journal (clearing_fee to fees:NT_EXCHANGE)" in p
        for p in problems
    ), problems


def test_a_link_changed_in_one_node_book_is_found(good, tmp_path):
    out = _copy(good, tmp_path)
    _shift_book_rows(
        out,
        "2024-01-02",
        {("JS_EXCHANGE", "JS_EXCHANGE"): 100, ("JS_EXCHANGE", "NT_EXCHANGE"): -100},
    )
    problems = verify_run(out)
    assert any(
        p.startswith("settlements, 2024-01-02: node JS_EXCHANGE's book has ")
        and "node NT_EXCHANGE's book" in p and "opposite sign" in p
        for p in problems
    ), problems  # fmt: skip
    assert any("node JS_EXCHANGE's own rows" in p for p in problems), problems


def test_a_fee_changed_in_the_journal_is_found_against_the_clearing_log(good, tmp_path):
    out = _copy(good, tmp_path)
    path = out / "ledger_entries" / "service_date=2024-01-02" / "part-0.parquet"

    def one_fee_up(table: pa.Table) -> pa.Table:
        hit = pc.and_(
            pc.equal(pc.cast(table["memo"], pa.string()), "clearing_fee"),
            pc.equal(pc.cast(table["credit"], pa.string()), "fees:NT_EXCHANGE"),
        )
        row = int(np.flatnonzero(hit.to_numpy(zero_copy_only=False))[0])
        amount = table["amount_fen"].to_numpy().copy()
        amount[row] += 7
        index = table.schema.get_field_index("amount_fen")
        return table.set_column(index, "amount_fen", pa.array(amount, type=pa.int64()))

    _rewrite(path, one_fee_up)
    problems = verify_run(out)
    said = [p for p in problems if "clearing fees posted to the node (clearing_fee)" in p]
    assert len(said) == 1 and said[0].startswith("ledger_entries, 2024-01-02, node NT_EXCHANGE: ")
    posted, logged = (int(x) for x in re.findall(r"(\d+) fen", said[0]))
    assert posted == logged + 7
