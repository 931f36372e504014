"""Per-participant reconciliation files of a finished run (docs/reconciliation.md).

What a clearing centre sends each issuer and acquirer after settlement, written from the run's
Parquet files: for each participant and date, a summary and the detail it sums (the records
settled that day, by counterparty), the records rejected (with the reason) and the corrections
(duplicate deductions refunded to the card). The summary is the detail grouped, so the two
agree by construction; ``check_reconciliation`` re-reads the files and checks it, and that each
acquirer's cleared amounts equal its clearing batches'.

    python run_scenario.py reconcile RUN_DIR [--out DIR]
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd

from sim.output import define_views
from sim.run_view import check_run
from sim.schema import TABLES

#: Columns of detail.csv, rejects.csv and corrections.csv (one row per record).
DETAIL_COLUMNS = (
    "role", "counterparty_id", "transaction_id", "service_date", "event_timestamp", "mode",
    "media", "route_id", "device_id", "device_serial", "issuer_id", "acquirer_id", "amount_fen",
    "status", "reject_reason", "clearing_batch_id", "settle_date",
)  # fmt: skip
#: Columns of summary.csv: the detail grouped.
SUMMARY_GROUP = ("role", "counterparty_id", "mode", "media")
FILES = ("summary.csv", "detail.csv", "rejects.csv", "corrections.csv")

#: Every final record twice, once for its issuer and once for its acquirer, with the
#: counterparty: what the files are made of (also the stream's clearing files, traffic/records.py).
RECORDS_SQL = """
    SELECT role, CAST(counterparty_id AS VARCHAR) AS counterparty_id, transaction_id,
           service_date, event_timestamp, CAST(mode AS VARCHAR) AS mode,
           CAST(media AS VARCHAR) AS media, CAST(route_id AS VARCHAR) AS route_id, device_id,
           device_serial, CAST(issuer_id AS VARCHAR) AS issuer_id,
           CAST(acquirer_id AS VARCHAR) AS acquirer_id, amount_fen,
           CAST(status AS VARCHAR) AS status, CAST(reject_reason AS VARCHAR) AS reject_reason,
           clearing_batch_id, settle_date, CAST(participant_id AS VARCHAR) AS participant_id
    FROM (
        SELECT *, 'issuer' AS role, issuer_id AS participant_id, acquirer_id AS counterparty_id
        FROM transactions
        UNION ALL
        SELECT *, 'acquirer' AS role, acquirer_id AS participant_id, issuer_id AS counterparty_id
        FROM transactions
    )
    WHERE status <> 'pending'
    ORDER BY participant_id, transaction_id, role
"""


class ReconciliationError(RuntimeError):
    """The run folder cannot be reconciled (not a finished run, or an unwritable output)."""


def write_reconciliation(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the files for every participant of the run in ``run_dir`` (default output:
    ``RUN_DIR/reconciliation``, replaced whole); returns the output folder."""
    run_dir = Path(run_dir)
    try:
        check_run(run_dir.resolve())
    except Exception as exc:  # noqa: BLE001 - RunViewError and the folder's own errors
        raise ReconciliationError(str(exc)) from None
    out = Path(out_dir) if out_dir is not None else run_dir / "reconciliation"
    records = _records(run_dir)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for participant, mine in records.groupby("participant_id", sort=True):
            _write_participant(staging / participant, mine.drop(columns="participant_id"))
        staging.mkdir(parents=True, exist_ok=True)
        (staging / "README.txt").write_text(
            "CardTwin reconciliation files: layout in docs/reconciliation.md\n", encoding="utf-8"
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)  # a complete set, or the earlier one untouched
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ReconciliationError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return out


def _records(run_dir: Path) -> pd.DataFrame:
    con = duckdb.connect(":memory:")
    try:
        define_views(con, run_dir.resolve(), TABLES)
        frame = con.sql(RECORDS_SQL).df()
    finally:
        con.close()
    for name in ("service_date", "settle_date"):
        frame[name] = pd.to_datetime(frame[name]).dt.strftime("%Y-%m-%d")
    return frame


def _write_participant(folder: Path, mine: pd.DataFrame) -> None:
    """A participant's files, one folder per date (settlement date for the cleared records,
    the records' own day for rejects and corrections)."""
    cleared = mine[mine["status"] == "cleared"]
    rejected = mine[mine["status"] == "rejected"]
    corrections = rejected[rejected["reject_reason"] == "duplicate_deduction"]
    dates = sorted(set(cleared["settle_date"]) | set(rejected["service_date"]))
    for date in dates:
        day = folder / date
        day.mkdir(parents=True, exist_ok=True)
        detail = cleared[cleared["settle_date"] == date]
        summary = (
            detail.groupby(list(SUMMARY_GROUP), sort=True)
            .agg(records=("transaction_id", "size"), amount_fen=("amount_fen", "sum"))
            .reset_index()
        )
        summary.insert(0, "settle_date", date)
        summary.to_csv(day / "summary.csv", index=False)
        detail[list(DETAIL_COLUMNS)].to_csv(day / "detail.csv", index=False)
        rejects = rejected[rejected["service_date"] == date]
        rejects[list(DETAIL_COLUMNS)].to_csv(day / "rejects.csv", index=False)
        fixes = corrections[corrections["service_date"] == date]
        fixes = fixes[list(DETAIL_COLUMNS)].rename(columns={"amount_fen": "refund_fen"})
        fixes.to_csv(day / "corrections.csv", index=False)


def check_reconciliation(run_dir: str | Path, out_dir: str | Path | None = None) -> list[str]:
    """Problems with the files (empty: none): every summary equals its detail grouped, and each
    acquirer's cleared amount per settlement date equals its clearing batches'."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "reconciliation"
    problems = []
    acquired: dict[tuple[str, str], int] = {}
    for day in sorted(p for p in out.glob("*/*") if p.is_dir()):
        participant, date = day.parent.name, day.name
        detail = pd.read_csv(day / "detail.csv", dtype={"counterparty_id": str})
        summary = pd.read_csv(day / "summary.csv", dtype={"counterparty_id": str})
        grouped = detail.groupby(list(SUMMARY_GROUP)).agg(
            records=("transaction_id", "size"), amount_fen=("amount_fen", "sum")
        )
        mine = summary.set_index(list(SUMMARY_GROUP))[["records", "amount_fen"]]
        if len(detail) == len(summary) == 0:
            continue  # a day with rejects only
        if not grouped.sort_index().equals(mine.sort_index()):
            problems.append(f"{day}: summary.csv does not equal detail.csv grouped")
        as_acquirer = detail[detail["role"] == "acquirer"]["amount_fen"].sum()
        if as_acquirer:
            acquired[participant, date] = int(as_acquirer)
    con = duckdb.connect(":memory:")
    try:
        define_views(con, run_dir.resolve(), TABLES)
        batches = con.sql(
            "SELECT CAST(acquirer_id AS VARCHAR) a, strftime(settle_date, '%Y-%m-%d') d, "
            "SUM(gross_fen) g FROM clearing_batches WHERE NOT transit GROUP BY ALL"
        ).fetchall()
    finally:
        con.close()
    for acquirer, date, gross in batches:
        if int(gross) and acquired.get((acquirer, date), 0) != int(gross):
            problems.append(
                f"{acquirer} {date}: files hold {acquired.get((acquirer, date), 0)} fen cleared, "
                f"its batches {int(gross)} fen"
            )
    return problems


__all__ = [
    "DETAIL_COLUMNS",
    "FILES",
    "ReconciliationError",
    "check_reconciliation",
    "write_reconciliation",
]
