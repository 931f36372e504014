"""Tests for sim/schema.py and sim/output.py: layout, round trip, determinism, atomicity, DuckDB."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import codes, output, run_dir
from sim.identity import mask_card_number
from sim.output import (
    OutputError,
    RunOutput,
    build_table,
    package_versions,
    read_table,
    write_run_meta,
)
from sim.run_dir import RunDirError
from sim.schema import (
    BOOL,
    DATE,
    DOC_BEGIN,
    DOC_END,
    STR,
    TABLES,
    TIDES_FARE_ACTIONS,
    Col,
    data_dictionary_markdown,
)

NAMES = {
    "region": ("chongchuan", "haimen", "rudong"),
    "route": ("1路", "2路", "B1"),
    "city": ("2260", "2000"),
    "institution": ("NT-ISSUER", "NT-BUS", "NT-METRO", "JS-EXCH"),
    "topup_channel": ("outlet", "online", "at_sale"),
    "outlet_service": ("topup", "card_sale", "other"),
    "visit_outcome": ("served", "left_closed"),
    "incident": ("M1-down",),
}
DAY1, DAY2 = date(2024, 3, 4), date(2024, 3, 5)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "schema.md"


def taps(n: int, day: date, seed: int = 0) -> dict[str, np.ndarray]:
    """A consistent day of tap records (fares add up, balances follow, one rejected)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(day, "s").astype(np.int64)
    ts = np.sort(start + rng.integers(6 * 3600, 22 * 3600, n))
    media = rng.integers(0, len(codes.MEDIA), n).astype(np.int8)
    stored = np.isin(media, list(codes.STORED_VALUE_MEDIA))
    card_type = rng.integers(0, len(codes.CARD_TYPES), n).astype(np.int8)
    kind = rng.integers(0, 3, n).astype(np.int8)
    list_fare = np.where(kind == codes.TAP_ENTRY, 0, 200).astype(np.int32)
    concession = np.where(card_type == 1, list_fare // 2, 0).astype(np.int32)
    is_transfer = rng.random(n) < 0.2
    transfer = np.where(is_transfer, (list_fare - concession) // 2, 0).astype(np.int32)
    cap = np.zeros(n, np.int32)
    amount = list_fare - concession - transfer - cap
    before = np.where(stored, rng.integers(500, 5000, n), -1).astype(np.int32)
    status = np.zeros(n, np.int8)
    status[0] = codes.REJECTED
    device = rng.integers(0, 50, n)
    return {
        "transaction_id": np.arange(n, dtype=np.int64) + day.toordinal() * 1_000_000,
        "event_timestamp": ts,
        "amount_fen": amount,
        "list_fare_fen": list_fare,
        "discount_fen": concession + transfer + cap,
        "concession_fen": concession,
        "transfer_fen": transfer,
        "cap_fen": cap,
        "fare_capped": np.zeros(n, bool),
        "rider_category": card_type,
        "media": media,
        "token_id": rng.integers(0, 10_000, n),
        "balance_before_fen": before,
        "balance_after_fen": np.where(stored, before - amount, -1).astype(np.int32),
        "card_counter": np.where(stored, rng.integers(0, 65536, n), -1).astype(np.int32),
        "trip_record_type": kind,
        "mode": (kind != codes.TAP_SINGLE).astype(np.int8),
        "route_id": rng.integers(0, 3, n).astype(np.int16),
        "stop_id": rng.integers(0, 400, n),
        "vehicle_id": np.where(kind == codes.TAP_SINGLE, device, -1),
        "device_id": device,
        "uploader_id": device,
        "terminal_id": 0x226000000000 + device,
        "device_serial": np.arange(n, dtype=np.int64),
        "tac": rng.integers(0, 2**32, n, dtype=np.uint64),
        "city_code": np.zeros(n, np.int16),
        "issuer_id": np.zeros(n, np.int16),
        "acquirer_id": np.ones(n, np.int16),
        "region": rng.integers(0, 3, n).astype(np.int8),
        "is_transfer": is_transfer,
        "incomplete_trip": np.zeros(n, bool),
        "incomplete_processed_by": np.full(n, -1, np.int8),
        "upload_batch_id": device,
        "uploaded_at": ts + 600,
        "status": status,
        "reject_reason": np.where(status == codes.REJECTED, 1, 0).astype(np.int8),
        "clearing_batch_id": np.full(n, -1, np.int64),
        "settle_date": np.full(n, -1, np.int32),
        "incident_id": np.where(rng.random(n) < 0.1, 0, -1).astype(np.int16),
    }


def write_run(out: Path, days: dict[date, int], seed: int = 0) -> Path:
    with RunOutput(out, names=NAMES) as run:
        for i, (day, n) in enumerate(days.items()):
            run.write("transactions", day, taps(n, day, seed + i))
        return run.commit({"seed": seed, "scenario": "测试"})


def tree(root: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def test_round_trip_keeps_values_codes_nulls_and_schema(tmp_path: Path) -> None:
    cols = taps(40, DAY1)
    write_run(tmp_path / "run", {DAY1: 40})
    back = read_table(tmp_path / "run", "transactions")

    assert back.schema == TABLES["transactions"].schema
    assert back["service_date"].to_pylist() == [DAY1] * 40
    assert back["amount_fen"].to_numpy().tolist() == cols["amount_fen"].tolist()
    card_types = [codes.CARD_TYPES[c] for c in cols["rider_category"]]
    assert back["rider_category"].to_pylist() == card_types
    assert back["terminal_id"].to_pylist() == [f"{v:012X}" for v in cols["terminal_id"]]
    assert back["tac"].to_pylist() == [f"{v:08X}" for v in cols["tac"]]
    # -1 in a nullable column means null; QR media carry no purse balance.
    qr = cols["balance_before_fen"] == -1
    assert back["balance_before_fen"].is_null().to_pylist() == qr.tolist()
    assert back["reject_reason"].to_pylist()[:2] == ["duplicate_upload", "none"]
    assert back["currency_type"].unique().to_pylist() == ["CNY"]
    exits = cols["trip_record_type"] == codes.TAP_EXIT
    assert set(np.asarray(back["fare_action"].to_pylist(), dtype=object)[exits]) == {"Exit"}
    field = back.schema.field("amount_fen")
    assert b"amount" in field.metadata[b"tides"] and field.metadata[b"unit"] == b"fen"


def test_partition_layout_is_hive_by_day(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RunOutput(out, names=NAMES) as run:
        run.write("transactions", DAY1, taps(10, DAY1))
        run.write("transactions", "2024-03-05", taps(5, DAY2))
        run.write("transactions", DAY2, taps(5, DAY2, seed=9), part=1)
        run.commit()

    assert sorted(tree(out)) == [
        ".cardtwin-run.json",
        "cardtwin.duckdb",
        "run_meta.json",
        "transactions/service_date=2024-03-04/part-0.parquet",
        "transactions/service_date=2024-03-05/part-0.parquet",
        "transactions/service_date=2024-03-05/part-1.parquet",
    ]
    file_schema = pq.read_schema(out / "transactions/service_date=2024-03-04/part-0.parquet")
    assert "service_date" not in file_schema.names  # restored from the directory name
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["output"]["tables"]["transactions"] == {"rows": 20, "partitions": 2}
    assert leftovers(out) == []


def test_same_data_gives_byte_identical_parquet(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", {DAY1: 300, DAY2: 200})
    b = write_run(tmp_path / "b", {DAY1: 300, DAY2: 200})
    parquet_a = {k: v for k, v in tree(a).items() if k.endswith(".parquet")}
    parquet_b = {k: v for k, v in tree(b).items() if k.endswith(".parquet")}
    assert len(parquet_a) == 2 and parquet_a == parquet_b
    c = write_run(tmp_path / "c", {DAY1: 300, DAY2: 200}, seed=1)
    assert {k: v for k, v in tree(c).items() if k.endswith(".parquet")} != parquet_a


def test_exception_in_block_leaves_existing_out_untouched(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", {DAY1: 20})
    before = tree(out)
    with pytest.raises(RuntimeError, match="simulated crash"), RunOutput(out, names=NAMES) as run:
        run.write("transactions", DAY2, taps(20, DAY2))
        run.flush()
        assert run.tmp_dir.exists()
        raise RuntimeError("simulated crash")
    assert tree(out) == before
    assert leftovers(out) == []


def test_abort_and_uncommitted_exit_discard_everything(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = RunOutput(out, names=NAMES)
    run.write("transactions", DAY1, taps(20, DAY1))
    run.abort()
    with RunOutput(out, names=NAMES) as run:
        run.write("transactions", DAY1, taps(20, DAY1))
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_commit_replaces_previous_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atomic_exchange: bool
) -> None:
    if not atomic_exchange:  # the two-rename fallback used where renameat2 is unavailable
        monkeypatch.setattr(output, "_exchange", lambda a, b: False)
    out = write_run(tmp_path / "run", {DAY1: 20})
    write_run(out, {DAY2: 30}, seed=5)
    assert sorted(p.name for p in (out / "transactions").iterdir()) == ["service_date=2024-03-05"]
    assert read_table(out, "transactions").num_rows == 30
    assert leftovers(out) == []


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="not a CardTwin run"):
        RunOutput(home, names=NAMES)
    assert (home / "notes.txt").read_text() == "keep me" and leftovers(home) == []


def test_a_run_meta_json_alone_does_not_make_a_run(tmp_path: Path) -> None:
    fake = tmp_path / "thesis"
    fake.mkdir()
    (fake / "run_meta.json").write_text("{}")
    (fake / "thesis.tex").write_text("chapter 1")
    with pytest.raises(RunDirError, match="not a CardTwin run"):
        RunOutput(fake, names=NAMES)
    assert (fake / "thesis.tex").read_text() == "chapter 1"


def test_user_files_inside_an_earlier_run_are_never_deleted(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", {DAY1: 20})
    (out / "notes.txt").write_text("my notes")
    (out / "analysis").mkdir()
    (out / "analysis" / "plot.py").write_text("print(1)")
    before = tree(out)
    with pytest.raises(RunDirError, match=r"2 file\(s\) CardTwin did not write.*analysis/plot.py"):
        RunOutput(out, names=NAMES)
    assert tree(out) == before and leftovers(out) == []


def test_a_second_run_on_the_same_out_is_refused_while_the_first_writes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = RunOutput(out, names=NAMES)
    with pytest.raises(RunDirError, match=f"another CardTwin run \\(pid {os.getpid()}\\)"):
        RunOutput(out, names=NAMES)
    first.write("transactions", DAY1, taps(20, DAY1))
    first.commit()
    assert read_table(out, "transactions").num_rows == 20
    write_run(out, {DAY2: 10})  # the lock is gone with the first run
    assert leftovers(out) == []


def test_stale_partial_folders_of_dead_runs_are_removed_and_reported(tmp_path: Path) -> None:
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    stale = tmp_path / f"run.partial-{pid}"
    (stale / "transactions").mkdir(parents=True)
    (tmp_path / "run.partialX").mkdir()  # not ours: kept
    with RunOutput(out, names=NAMES) as run:
        assert run.removed_leftovers == [stale]
        run.write("transactions", DAY1, taps(5, DAY1))
        run.commit()
    assert not stale.exists() and (tmp_path / "run.partialX").exists()


def test_an_earlier_run_that_cannot_be_removed_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root (CI, this machine) may remove anything, so the file system cannot refuse here: the
    # permission answer for one folder is replaced by "no", as for an ordinary user.
    out = write_run(tmp_path / "run", {DAY1: 20})
    locked = out / "transactions"
    real = run_dir._removable
    monkeypatch.setattr(run_dir, "_removable", lambda folder: folder != locked and real(folder))
    before = tree(out)
    with pytest.raises(RunDirError, match=f"cannot be replaced: no write permission on {locked}"):
        RunOutput(out, names=NAMES)
    assert tree(out) == before and leftovers(out) == []


def test_writer_thread_error_surfaces_in_caller(tmp_path: Path) -> None:
    out = tmp_path / "run"
    bad = taps(10, DAY1)
    bad["rider_category"] = np.full(10, 99, np.int8)  # not a card type code
    run = RunOutput(out, names=NAMES)
    run.write("transactions", DAY1, bad)  # queued: only names and lengths are checked here
    with pytest.raises(OutputError, match=r"transactions for 2024-03-04.*rider_category"):
        run.flush()
    with pytest.raises(OutputError):
        run.write("transactions", DAY2, taps(10, DAY2))
    with pytest.raises(OutputError):
        run.commit()
    assert not out.exists() and leftovers(out) == []


def test_caller_side_checks_fail_immediately(tmp_path: Path) -> None:
    with RunOutput(tmp_path / "run", names=NAMES) as run:
        cols = taps(5, DAY1)
        with pytest.raises(KeyError, match="missing columns"):
            run.write("transactions", DAY1, {k: v for k, v in cols.items() if k != "tac"})
        with pytest.raises(ValueError, match="differ in length"):
            run.write("transactions", DAY1, {**cols, "tac": cols["tac"][:3]})
        with pytest.raises(KeyError, match="unknown table"):
            run.write("taps", DAY1, cols)
        run.write("transactions", DAY1, cols)
        with pytest.raises(ValueError, match="already written"):
            run.write("transactions", DAY1, cols)
    run = RunOutput(tmp_path / "run2", names={"region": ("a",)})
    with pytest.raises(KeyError, match="name table 'route'"):
        run.write("transactions", DAY1, taps(5, DAY1))
    run.abort()


def test_row_invariants_and_integer_money_are_enforced() -> None:
    cols = taps(20, DAY1)
    broken = {**cols, "amount_fen": cols["amount_fen"] + 1}
    with pytest.raises(ValueError, match="amount_fen = list_fare_fen - discount_fen"):
        build_table("transactions", broken, NAMES)
    assert build_table("transactions", broken, NAMES, check_invariants=False).num_rows == 20
    # One bad row among good ones: counted and named (the check passes whole tables in one
    # pass, and only a failing one is looked at row by row).
    one = cols["amount_fen"].copy()
    one[7] += 1
    with pytest.raises(ValueError, match=r"1 row\(s\) break `amount_fen = .*`; first is row 7"):
        build_table("transactions", {**cols, "amount_fen": one}, NAMES)
    with pytest.raises(TypeError, match="amount_fen"):
        build_table("transactions", {**cols, "amount_fen": cols["amount_fen"] / 1.0}, NAMES)


def test_derived_fare_action_follows_tides_enum() -> None:
    cols = taps(60, DAY1)
    table = build_table("transactions", cols, NAMES)
    actions = np.array(table["fare_action"].to_pylist(), dtype=object)
    kind, transfer = cols["trip_record_type"], cols["is_transfer"]
    assert set(actions[kind == codes.TAP_EXIT]) == {"Exit"}
    assert set(actions[(kind != codes.TAP_EXIT) & transfer]) == {"Transfer entrance"}
    assert set(actions[(kind != codes.TAP_EXIT) & ~transfer]) == {"Enter"}
    assert set(actions) <= set(TIDES_FARE_ACTIONS)
    tx_type = table["transaction_type_code"].to_numpy()
    assert set(tx_type[kind == codes.TAP_SINGLE]) == {6} and set(tx_type[kind != 0]) == {9}


def test_masking_uses_identity_rules_and_keeps_nulls() -> None:
    phones = output.mask_identity("phone", ["13800138000", None])
    assert phones.to_pylist() == ["138****8000", None]
    cards = ["3104226012345678", "3104226012345679"]
    assert output.mask_identity("card_no", cards).to_pylist() == list(mask_card_number(cards))
    assert output.mask_identity("name", pa.array([], pa.string())).to_pylist() == []


def test_card_sales_mask_identities_unless_raw_requested() -> None:
    cols = {
        "sale_id": np.array([1, 2]),
        "event_timestamp": np.array(["2024-03-04T09:00", "2024-03-04T09:05"], "datetime64[s]"),
        "token_id": np.array([7, 8]),
        "card_no": ["3104226012345678", "3104226012345679"],
        "holder_name": ["李四", None],
        "id_number": ["32060219800101123X", None],
        "phone": ["13800138000", None],
        "rider_category": ["ordinary", "student"],  # names are accepted as well as codes
        "media": np.array([0, 0], np.int8),
        "sale_kind": np.array([0, 2], np.int8),
        "outlet_id": np.array([3, -1]),
        "region": np.array([0, 1], np.int8),
        "issuer_id": np.array([0, 0], np.int16),
        "deposit_fen": np.array([2000, 0], np.int32),
        "card_fee_fen": np.array([0, 0], np.int32),
        "initial_balance_fen": np.array([5000, 0], np.int32),
    }
    masked = build_table("card_sales", cols, NAMES)
    assert masked["holder_name"].to_pylist() == ["李*", None]
    assert masked["phone"].to_pylist() == ["138****8000", None]
    assert masked["synthetic"].to_pylist() == [True, True]
    assert masked["outlet_id"].to_pylist() == [3, None]
    raw = build_table("card_sales", cols, NAMES, mask_identities=False)
    assert raw["card_no"].to_pylist() == cols["card_no"]


def test_duckdb_views_answer_queries(tmp_path: Path) -> None:
    out = write_run(tmp_path / "run", {DAY1: 500, DAY2: 300})
    expected_hours: dict[tuple[date, int], int] = {}
    spend: dict[str, list[int]] = {}
    for i, day in enumerate((DAY1, DAY2)):
        cols = taps(500 if day == DAY1 else 300, day, i)
        ok = cols["status"] != codes.REJECTED
        hours = (cols["event_timestamp"][ok] % 86400) // 3600
        for h in hours.tolist():
            expected_hours[(day, h)] = expected_hours.get((day, h), 0) + 1
        for ct, amt in zip(cols["rider_category"][ok], cols["amount_fen"][ok], strict=True):
            acc = spend.setdefault(codes.CARD_TYPES[ct], [0, 0])
            acc[0] += 1
            acc[1] += int(amt)

    con = duckdb.connect(str(out / "cardtwin.duckdb"), read_only=True)  # a fresh connection
    rows = con.sql("SELECT service_date, hour, taps FROM taps_per_hour").fetchall()
    assert {(d, h): n for d, h, n in rows} == expected_hours
    by_type = con.sql("SELECT rider_category, taps, amount_yuan FROM spend_by_card_type").fetchall()
    assert {r: (n, y) for r, n, y in by_type} == {
        k: (n, Decimal(fen) / 100) for k, (n, fen) in spend.items()
    }
    assert con.execute("SELECT count(*) FROM transactions").fetchall() == [(800,)]
    assert con.execute("SELECT count(*) FROM topups").fetchall() == [(0,)]  # empty but typed
    cols = [r[0] for r in con.sql("DESCRIBE ledger_entries").fetchall()]
    assert cols == TABLES["ledger_entries"].schema.names
    con.close()


def test_every_table_builds_and_gets_a_view(tmp_path: Path) -> None:
    def sample(col: Col, n: int) -> object:
        if col.names:
            return np.zeros(n, np.int8)
        if col.type == STR and not col.hex_width:
            return ["0123456789abcdef0123"] * n
        if col.type == BOOL:
            return np.ones(n, bool)
        if col.type == DATE:
            return np.array(["2024-03-05"] * n, "datetime64[D]")
        if pa.types.is_timestamp(col.type):
            return np.array(["2024-03-04T08:00"] * n, "datetime64[s]")
        return np.ones(n, np.int64)

    out = tmp_path / "run"
    with RunOutput(out, names=NAMES, check_invariants=False) as run:
        for spec in TABLES.values():
            cols = {c.name: sample(c, 3) for c in spec.columns if c.derive is None}
            run.write(spec.name, DAY1, cols)
        run.commit()
    con = duckdb.connect(str(out / "cardtwin.duckdb"), read_only=True)
    for name in TABLES:
        assert con.execute(f"SELECT count(*) FROM {name}").fetchall() == [(3,)], name
        assert read_table(out, name).schema == TABLES[name].schema
    con.close()


def test_run_meta_is_sorted_utf8_and_versions_are_recorded(tmp_path: Path) -> None:
    versions = package_versions()
    assert versions["pyarrow"] == pa.__version__ and "duckdb" in versions and "python" in versions
    path = write_run_meta(tmp_path, {"z": 1, "a": date(2024, 1, 1), "name": "南通"})
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "a": "2024-01-01",\n  "name": "南通",\n  "z": 1\n}\n'


def test_stats_measure_caller_and_worker_time(tmp_path: Path) -> None:
    with RunOutput(tmp_path / "run", names=NAMES) as run:
        run.write("transactions", DAY1, taps(1000, DAY1))
        run.commit()
    stats = run.stats.as_dict()
    assert stats["rows"] == {"transactions": 1000} and stats["files"] == 1
    assert 0 < stats["caller_s"] < stats["worker_s"]


def test_docs_hold_the_current_data_dictionary() -> None:
    text = DOCS.read_text(encoding="utf-8")
    generated = text.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0]
    assert generated == "\n" + data_dictionary_markdown(), (
        "run: python -m sim.schema docs/schema.md"
    )


@given(st.lists(st.integers(min_value=0, max_value=16**12 - 1), max_size=20))
def test_hex_ids_render_like_format(values: list[int]) -> None:
    col = TABLES["transactions"].col("terminal_id")
    rendered = output._hex(col, np.array(values, dtype=np.int64))
    assert rendered.to_pylist() == [f"{v:012X}" for v in values]
