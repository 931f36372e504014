"""Per-participant reconciliation files of a finished run (docs/reconciliation.md).

What a clearing centre sends each issuer and acquirer after settlement, written from the run's
Parquet files: for each participant and date, a summary and the detail it sums (the records
settled that day, by counterparty), the records rejected (with the reason) and the corrections
(every refund ordered: the duplicate deductions the clearing rejected, and the cleared charges
the service desk had refunded). The summary is the detail grouped, so the two agree by
construction; ``check_reconciliation`` re-reads the files and checks it, that each acquirer's
cleared amounts equal its clearing batches', and that the corrections are the run's refunds,
each the charge its detail or rejects file shows.

The output folder replaces only an earlier reconcile's output (recognised by the marker it
writes), never the run's own files or a folder someone else filled (``check_output_folder``).

    python run_scenario.py reconcile RUN_DIR [--out DIR]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.output import define_views
from sim.run_dir import listed
from sim.run_view import check_run
from sim.schema import PARTITION_COLUMN, TABLES

#: Columns of detail.csv and rejects.csv (one row per record).
DETAIL_COLUMNS = (
    "role", "counterparty_id", "transaction_id", "service_date", "event_timestamp", "mode",
    "media", "route_id", "device_id", "device_serial", "issuer_id", "acquirer_id", "amount_fen",
    "status", "reject_reason", "clearing_batch_id", "settle_date",
)  # fmt: skip
#: Columns of summary.csv: the detail grouped.
SUMMARY_GROUP = ("role", "counterparty_id", "mode", "media")
FILES = ("summary.csv", "detail.csv", "rejects.csv", "corrections.csv")
#: Columns of corrections.csv (one row per refund ordered): the record corrected, its charge
#: as ``refund_fen`` (a charge is refunded wholly), the refund's kind, the clearing day that
#: ordered it and the day the money goes back (the ``refunds`` table's columns).
CORRECTION_COLUMNS = (
    *(("refund_fen" if c == "amount_fen" else c) for c in DETAIL_COLUMNS),
    "refund_kind", "ordered_date", "pay_date",
)  # fmt: skip
#: The refund kind of a rejected duplicate deduction (and the ``refunds`` table's name for it).
DUPLICATE_DEDUCTION = "duplicate_deduction"

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
#: Every refund ordered (docs/schema.md ``refunds``), joined to the records by transaction id.
REFUNDS_SQL = """
    SELECT transaction_id, CAST(refund_kind AS VARCHAR) AS refund_kind,
           amount_fen AS refund_fen, service_date AS ordered_date, pay_date,
           CAST(issuer_id AS VARCHAR) AS issuer_id, CAST(acquirer_id AS VARCHAR) AS acquirer_id
    FROM refunds
    ORDER BY transaction_id
"""


#: The folder ``reconcile`` writes when no ``--out`` is given, inside the run folder: the only
#: place inside a run that ``--out`` may name (anywhere else could be the run's own tables).
DEFAULT_DIR = "reconciliation"
#: The marker a ``reconcile`` leaves in its folder, listing every file it wrote: a later
#: ``reconcile`` replaces that folder, and refuses any other folder that is not empty.
MARKER_FILE = ".cardtwin-reconciliation.json"
MARKER_FORMAT = "cardtwin-reconciliation"
README_TEXT = "CardTwin reconciliation files: layout in docs/reconciliation.md\n"
#: What a ``reconcile`` wrote before the marker existed: README.txt (README_TEXT) and
#: ``<participant>/<YYYY-MM-DD>/<one of FILES>``; such a folder is recognised by its layout.
_EARLIER_LAYOUT = re.compile(r"[^/]+/\d{4}-\d{2}-\d{2}/(" + "|".join(map(re.escape, FILES)) + ")")


class ReconciliationError(RuntimeError):
    """The run folder cannot be reconciled (not a finished run, a damaged Parquet file) or the
    output folder cannot be used (the run itself, someone else's files, not writable)."""


def write_reconciliation(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the files for every participant of the run in ``run_dir`` (default output:
    ``RUN_DIR/reconciliation``); returns the output folder.

    The output folder is replaced whole, and only if it is absent, empty, or an earlier
    ``reconcile``'s output holding nothing but what it wrote (its marker lists the files): a
    folder with anything else in it, the run folder, a folder holding the run, or another
    folder inside the run is refused (``ReconciliationError``) before anything is written."""
    run_dir = Path(run_dir)
    try:
        check_run(run_dir.resolve())
    except Exception as exc:  # noqa: BLE001 - RunViewError and the folder's own errors
        raise ReconciliationError(str(exc)) from None
    out = Path(out_dir) if out_dir is not None else run_dir / DEFAULT_DIR
    check_output_folder(run_dir, out)
    _check_parquet(run_dir)
    records = _records(run_dir)
    refunds = _refunds(run_dir)
    staging = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # A fresh name beside ``out``: nothing that is already there is ever overwritten.
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        _chmod_as_made(staging)  # mkdtemp makes it private; the output is an ordinary folder
        for participant, mine in records.groupby("participant_id", sort=True):
            _write_participant(staging / participant, mine.drop(columns="participant_id"), refunds)
        (staging / "README.txt").write_text(README_TEXT, encoding="utf-8")
        files = sorted({*_files_in(staging), MARKER_FILE})
        marker = {"format": MARKER_FORMAT, "run": str(run_dir.resolve()), "files": files}
        (staging / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        check_output_folder(run_dir, out)  # again: the folder may have changed meanwhile
        _swap_in(staging, out)  # a complete set, or the earlier one untouched
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ReconciliationError(f"{out}: cannot write: {exc.strerror or exc}{where}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # gone already if it was swapped in
    return out


def check_output_folder(run_dir: Path, out: Path) -> None:
    """Raise ``ReconciliationError`` unless ``out`` may be replaced by a reconcile of the run in
    ``run_dir`` (see ``write_reconciliation``); the message says why and what to do."""
    run, target = run_dir.resolve(), out.resolve()
    if target == run:
        raise ReconciliationError(
            f"--out {out}: is the run folder itself; writing there would delete the run's own "
            f"files. Omit --out (default: {run_dir / DEFAULT_DIR}) or choose another folder"
        )
    if run.is_relative_to(target):
        raise ReconciliationError(
            f"--out {out}: holds the run folder {run_dir}; replacing it would delete the run. "
            "Choose a folder outside the run"
        )
    if target.is_relative_to(run) and target != run / DEFAULT_DIR:
        raise ReconciliationError(
            f"--out {out}: is inside the run folder {run_dir}, where it could replace the run's "
            f"own files; the only place inside a run is {run_dir / DEFAULT_DIR} (the default)"
        )
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ReconciliationError(
            f"--out {out}: is a file or a link, not a folder; choose another --out"
        )
    if not out.exists():
        return
    present = _files_in(out)
    if not present and not any(out.iterdir()):
        return
    written = written_by_reconcile(out, present)
    if written is None:
        raise ReconciliationError(
            f"--out {out}: is not empty and is not an earlier reconcile's output (no "
            f"{MARKER_FILE}); choose another --out, or empty it first"
        )
    foreign = sorted(set(present) - written)
    if foreign:
        raise ReconciliationError(
            f"--out {out}: holds an earlier reconcile's output and {len(foreign)} file(s) it did "
            f"not write ({listed(foreign)}); move them out of it, or choose another --out"
        )


def _files_in(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def written_by_reconcile(out: Path, present: list[str]) -> set[str] | None:
    """The files an earlier reconcile wrote in ``out`` (None: it is not a reconcile's output)."""
    try:
        marker = json.loads((out / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    if isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT:
        files = marker.get("files")
        if isinstance(files, list) and all(isinstance(f, str) for f in files):
            return set(files)
        return None
    # Written before the marker: its README.txt, word for word, and the layout's files only.
    try:
        readme = (out / "README.txt").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    if readme != README_TEXT:
        return None
    return {"README.txt", *(f for f in present if _EARLIER_LAYOUT.fullmatch(f))}


def _swap_in(staging: Path, out: Path) -> None:
    """Put ``staging`` in place of ``out``; the earlier output is removed only once the new one
    is there (moved aside first, and moved back if the swap fails)."""
    if not out.exists():
        staging.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()  # a free name for the earlier output
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_parquet(run_dir: Path) -> None:
    """Raise ``ReconciliationError`` naming the first Parquet file of the run that cannot be
    read as one (a truncated or overwritten file): its footer is read, the data later."""
    for name in TABLES:
        for path in sorted((run_dir / name).glob(f"{PARTITION_COLUMN}=*/*.parquet")):
            try:
                pq.read_metadata(path)
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise ReconciliationError(
                    f"{path}: not a readable Parquet file ({_one_line(exc)}); the run folder "
                    "is damaged: run the scenario again"
                ) from None


def _query(run_dir: Path, sql: str) -> pd.DataFrame:
    """``sql`` over the run's tables; a file DuckDB cannot read is ``ReconciliationError``
    (DuckDB's message names the file)."""
    con = duckdb.connect(":memory:")
    try:
        define_views(con, run_dir.resolve(), TABLES)
        return con.sql(sql).df()
    except duckdb.Error as exc:
        raise ReconciliationError(
            f"{run_dir}: its Parquet files cannot be read ({_one_line(exc)}); the run folder is "
            "damaged: run the scenario again"
        ) from None
    finally:
        con.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _records(run_dir: Path) -> pd.DataFrame:
    return _iso_dates(_query(run_dir, RECORDS_SQL), "service_date", "settle_date")


def _refunds(run_dir: Path) -> pd.DataFrame:
    return _iso_dates(_query(run_dir, REFUNDS_SQL), "ordered_date", "pay_date")


def _iso_dates(frame: pd.DataFrame, *names: str) -> pd.DataFrame:
    """``names`` as YYYY-MM-DD text, as the files write them (a missing date: empty)."""
    for name in names:
        frame[name] = pd.to_datetime(frame[name]).dt.strftime("%Y-%m-%d")
    return frame


def _corrections(mine: pd.DataFrame, refunds: pd.DataFrame) -> pd.DataFrame:
    """A participant's records that a refund was ordered for, in ``CORRECTION_COLUMNS``.

    The ``refunds`` table is what says a refund was ordered and how much; a rejected duplicate
    deduction is listed even without its refund row (a run written before refunds were kept:
    its refund is then the whole charge, and when it was ordered and paid is not known)."""
    ordered = mine["transaction_id"].isin(refunds["transaction_id"])
    duplicate = (mine["status"] == "rejected") & (mine["reject_reason"] == DUPLICATE_DEDUCTION)
    fixes = mine[ordered | duplicate].merge(
        refunds.drop(columns=["issuer_id", "acquirer_id"]), on="transaction_id", how="left"
    )
    unrecorded = fixes["refund_kind"].isna()
    fixes.loc[unrecorded, "refund_kind"] = DUPLICATE_DEDUCTION
    # Integer fen: the merge made the column float where a row has no refund.
    fixes["refund_fen"] = fixes["refund_fen"].fillna(fixes["amount_fen"]).astype("int64")
    return fixes[list(CORRECTION_COLUMNS)]


def _write_participant(folder: Path, mine: pd.DataFrame, refunds: pd.DataFrame) -> None:
    """A participant's files, one folder per date (settlement date for the cleared records,
    the records' own day for rejects and corrections)."""
    cleared = mine[mine["status"] == "cleared"]
    rejected = mine[mine["status"] == "rejected"]
    corrections = _corrections(mine, refunds)
    dates = sorted(
        set(cleared["settle_date"]) | set(rejected["service_date"])
        | set(corrections["service_date"])
    )  # fmt: skip
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
        fixes.to_csv(day / "corrections.csv", index=False)


def check_reconciliation(run_dir: str | Path, out_dir: str | Path | None = None) -> list[str]:
    """Problems with the files (empty: none): every summary equals its detail grouped, each
    acquirer's cleared amount per settlement date equals its clearing batches', and the
    corrections are the run's refunds, each the charge a detail or rejects file shows
    (``_check_corrections``)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / DEFAULT_DIR
    days = sorted(p for p in out.glob("*/*") if p.is_dir())
    corrections = _read_files(days, "corrections.csv")
    corrected = corrections["transaction_id"].unique()
    charges = []  # the corrected records as the detail and rejects files show them
    problems = []
    acquired: dict[tuple[str, str], int] = {}
    for day in days:
        participant, date = day.parent.name, day.name
        detail = _read_csv(day / "detail.csv")
        summary = _read_csv(day / "summary.csv")
        for frame, name in (
            (detail, "detail.csv"),
            (_read_csv(day / "rejects.csv"), "rejects.csv"),
        ):
            shown = frame[frame["transaction_id"].isin(corrected)]
            charges.append(shown.assign(participant=participant, source=name, file=str(day / name)))
        grouped = detail.groupby(list(SUMMARY_GROUP)).agg(
            records=("transaction_id", "size"), amount_fen=("amount_fen", "sum")
        )
        mine = summary.set_index(list(SUMMARY_GROUP))[["records", "amount_fen"]]
        if len(detail) == len(summary) == 0:
            continue  # a day with rejects or corrections only
        if not grouped.sort_index().equals(mine.sort_index()):
            problems.append(f"{day}: summary.csv does not equal detail.csv grouped")
        as_acquirer = detail[detail["role"] == "acquirer"]["amount_fen"].sum()
        if as_acquirer:
            acquired[participant, date] = int(as_acquirer)
    batches = _query(
        run_dir,
        "SELECT CAST(acquirer_id AS VARCHAR) a, strftime(settle_date, '%Y-%m-%d') d, "
        "SUM(gross_fen) g FROM clearing_batches WHERE NOT transit GROUP BY ALL",
    ).itertuples(index=False)
    for acquirer, date, gross in batches:
        if int(gross) and acquired.get((acquirer, date), 0) != int(gross):
            problems.append(
                f"{acquirer} {date}: files hold {acquired.get((acquirer, date), 0)} fen cleared, "
                f"its batches {int(gross)} fen"
            )
    problems += _check_corrections(corrections, pd.concat(charges), _refunds(run_dir))
    return problems


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"counterparty_id": str})


def _read_files(days: list[Path], name: str) -> pd.DataFrame:
    """The ``name`` file of every date folder in ``days``, with the participant and the folder
    (``day``) of each row."""
    parts = [
        _read_csv(day / name).assign(participant=day.parent.name, day=str(day)) for day in days
    ]
    if not parts:
        return pd.DataFrame(columns=[*CORRECTION_COLUMNS, "participant", "day"])
    return pd.concat(parts, ignore_index=True)


#: Where a correction's charge is: a desk refund's was settled, a duplicate's rejected.
_CHARGE_FILE = {"service_desk": "detail.csv", DUPLICATE_DEDUCTION: "rejects.csv"}
_KEY = ["participant", "role", "transaction_id"]


def _check_corrections(
    corrections: pd.DataFrame, charges: pd.DataFrame, refunds: pd.DataFrame
) -> list[str]:
    """Every refund of the run's ``refunds`` table is in its issuer's and its acquirer's
    corrections, of its kind and amount (a rejected duplicate deduction may be there without
    one: a run written before refunds were kept); and every correction is the whole charge of
    a record in the participant's detail files (a desk refund: the charge was settled) or
    rejects files (a duplicate deduction)."""
    problems = []
    ordered = pd.concat(
        refunds.assign(participant=refunds[f"{role}_id"], role=role)
        for role in ("issuer", "acquirer")
    )[[*_KEY, "refund_kind", "refund_fen"]]
    filed = corrections[[*_KEY, "refund_kind", "refund_fen", "day"]]
    both = ordered.merge(filed, on=_KEY, how="outer", suffixes=("", "_filed"), indicator="found")
    for r in both.itertuples(index=False):
        if r.found == "left_only":
            problems.append(
                f"refunds: transaction {r.transaction_id} ({r.refund_kind}, "
                f"{int(r.refund_fen)} fen) is not in its corrections.csv for {r.participant} "
                f"({r.role})"
            )
            continue
        where = f"{r.day}/corrections.csv: transaction {r.transaction_id} ({r.role})"
        filed_as = (r.refund_kind_filed, r.refund_fen_filed)
        if r.found == "right_only" and r.refund_kind_filed != DUPLICATE_DEDUCTION:
            problems.append(
                f"{where}: a {r.refund_kind_filed} refund the run's refunds table does not hold"
            )
        elif r.found == "both" and filed_as != (r.refund_kind, r.refund_fen):
            problems.append(
                f"{where}: refund_fen {int(r.refund_fen_filed)} ({r.refund_kind_filed}), the "
                f"run's refunds table {int(r.refund_fen)} fen ({r.refund_kind})"
            )
    wanted = corrections.assign(source=corrections["refund_kind"].map(_CHARGE_FILE))
    charged = wanted.merge(
        charges[[*_KEY, "source", "amount_fen", "file"]], on=[*_KEY, "source"], how="left"
    )
    for r in charged.itertuples(index=False):
        where = f"{r.day}/corrections.csv: transaction {r.transaction_id} ({r.role})"
        if pd.isna(r.amount_fen):
            problems.append(
                f"{where}: a {r.refund_kind} refund of a charge in none of {r.participant}'s "
                f"{r.source} files"
            )
        elif r.amount_fen != r.refund_fen:
            problems.append(
                f"{where}: refund_fen {r.refund_fen}, its charge in {r.file} {int(r.amount_fen)} "
                "fen (a refund pays back the whole charge)"
            )
    return problems


def _chmod_as_made(folder: Path) -> None:
    """Give ``folder`` the mode a plain ``mkdir`` would (0777 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)


__all__ = [
    "CORRECTION_COLUMNS",
    "DEFAULT_DIR",
    "DETAIL_COLUMNS",
    "FILES",
    "MARKER_FILE",
    "ReconciliationError",
    "check_output_folder",
    "check_reconciliation",
    "write_reconciliation",
]
