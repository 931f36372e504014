"""Check a run folder from its files alone: every file there, hash chains, digests, row counts,
row and money invariants.

``python run_scenario.py verify RUN_DIR`` reads the Parquet tables back and recomputes:

- the files: every file the run's marker ``.cardtwin-run.json`` lists is there, no table holds a
  Parquet file the run did not write, and every file reads as Parquet with its table's columns
  (a damaged file is a problem named by its path; the checks of the tables' contents are then
  not run, as they would only repeat it);
- the counts in ``run_meta.json``: each table's rows (``output.tables``) and how many tap
  records ended cleared, rejected and pending (``totals``);
- every clearing node's hash chain (``batch_hash`` from ``prev_hash`` and the batch's fields) and
  every batch's ``records_digest`` from the transactions it cleared (or, for a transit batch, the
  transaction ids it passed on);
- each acquired batch's counts and gross amount from its transactions;
- the row invariants of every table (as on write: amounts, balances, statuses);
- the money: every settlement account closed, the top-ups in the journal equal to the
  ``topups`` table, and, per day and
  issuer, the fares the journal took (``card_fare`` and ``qr_fare``) equal to the charged records
  of ``transactions``, the venue entries it took equal to ``venue_entries``, and the fares its
  ``clearing`` entries cleared equal to the cleared records (by their batch's date) and paid
  venue entries; and every transaction id once;
- the clearing nodes' books (``settlements``): on each settlement date the members' and the
  nodes' own positions equal the journal's ``settlement`` entries, each link between two nodes
  is the same amount in both books (opposite signs), and each node's book sums to zero; over
  the run a node's own rows add up to the fees the journal gave it (``clearing_fee`` to
  ``fees:<node>``), and per clearing day those equal the ``fee_fen`` of its batches;
- the refunds in fen: each ``refunds`` row pays back the whole charge of a transaction in
  ``transactions`` (never more), once, of the kind its status says (a rejected duplicate
  deduction, or a charge cleared and refunded by the service desk); every rejected duplicate
  deduction has its refund; per clearing day and acquirer the duplicate deductions' refunds
  equal the batches' ``refund_fen``; per day and issuer the refunds paid equal the journal's
  refund entries (``duplicate_refund`` + ``qr_duplicate_refund``, ``desk_refund``); and the
  refunds paid after the period's last day equal ``run_meta.json`` totals
  ``refunds_outstanding`` and ``refunds_outstanding_fen`` (all of them, ``refund_orders`` and
  ``refund_orders_fen``).

Each problem is reported with where it is (file, table, date, batch, node or issuer) and what was
expected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sim import ids
from sim.clearing import (
    MEMO_CARD_FARE,
    MEMO_CLEARING,
    MEMO_DESK_REFUND,
    MEMO_DUP_REFUND,
    MEMO_FEE,
    MEMO_QR_DUP_REFUND,
    MEMO_QR_FARE,
    MEMO_SETTLEMENT,
    MEMO_SSC_ENTRY,
    BatchRecord,
    chain_hash,
)
from sim.output import RUN_META_FILE, check_rows, read_part, table_files
from sim.run_dir import MARKER_FILE, marker_of
from sim.schema import TABLES, table_spec

#: Records the reader took no fare for (declined for balance, refused by a full buffer; the
#: other two never become transactions): the journal posts no fare for them. Every other
#: record was charged, whatever became of it in clearing (a rejected duplicate deduction was
#: charged, then refunded; a pending one waits in ``unsettled``).
UNCHARGED_REASONS = (
    "declined_insufficient_balance",
    "device_buffer_full",
    "card_not_accepted",
    "qr_platform_down",
)
#: Statuses counted in ``run_meta.json`` totals.
STATUSES = ("cleared", "rejected", "pending")
_LISTED = 3  # files named per table in a problem
_SHOWN = 10  # (day, issuer) pairs shown per money check


def verify_run(run_dir: str | Path) -> list[str]:
    """Problems found in the run folder (empty: everything verifies)."""
    run_dir = Path(run_dir)
    marker = marker_of(run_dir)
    if marker is None:
        return [f"{run_dir}: not a CardTwin run folder (no {MARKER_FILE})"]
    tables_short, problems = _files_as_listed(run_dir, marker["files"])
    files, unreadable = _read_tables(run_dir)
    problems += unreadable
    tables = _decoded(files)
    meta, unread_meta = _run_meta(run_dir)
    problems += unread_meta or _counts(meta, tables)
    if tables_short or unreadable:
        # Every content check would only repeat it, once per day and issuer: said once.
        problems[0] += "; the tables' contents are not checked until every file is there and reads"
        return problems
    problems += _row_invariants(files)  # the invariants read the files' dictionary codes
    cleared = _cleared_records(tables["transactions"])
    problems += _chains_and_digests(tables["clearing_batches"], tables["transactions"], cleared)
    problems += _batches_match_their_records(tables["clearing_batches"], cleared)
    problems += _money(tables)
    problems += _node_books(tables)
    problems += _journal_matches_records(tables)
    problems += _refunds(tables, meta)
    return problems


def _files_as_listed(run_dir: Path, listed: list) -> tuple[bool, list[str]]:
    """Whether Parquet files the marker lists are gone, and the problems: every listed file
    that is gone, and Parquet files of a table it does not list (a partition added or moved
    after the run), by folder."""
    names = {str(f) for f in listed}
    missing = sorted(f for f in names if not (run_dir / f).exists())
    extra = sorted(
        path.relative_to(run_dir).as_posix()
        for name in TABLES
        for path in table_files(run_dir, name)
        if path.relative_to(run_dir).as_posix() not in names
    )
    problems = []
    for folder, files in _by_folder(missing):
        problems.append(
            f"{folder}: {len(files)} file(s) listed in {MARKER_FILE} are missing "
            f"({_some(files)}): the folder was changed after the run"
        )
    for folder, files in _by_folder(extra):
        problems.append(
            f"{folder}: {len(files)} Parquet file(s) the run did not write (not in "
            f"{MARKER_FILE}: {_some(files)})"
        )
    tables_short = any(f.partition("/")[0] in TABLES for f in missing)
    return tables_short, problems


def _by_folder(files: list[str]) -> Iterable[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for f in files:
        head, sep, _ = f.partition("/")
        groups.setdefault(head + sep if sep else f, []).append(f)
    return groups.items()


def _some(files: list[str]) -> str:
    more = len(files) - _LISTED
    return ", ".join(files[:_LISTED]) + (f" and {more} more" if more > 0 else "")


def _read_tables(run_dir: Path) -> tuple[dict[str, pa.Table], list[str]]:
    """Every table read back file by file, and a problem for each file that cannot be (a
    table with such a file is left out of the tables returned)."""
    tables, problems = {}, []
    for name in TABLES:
        parts, bad = [], []
        for path in table_files(run_dir, name):
            try:
                parts.append(read_part(path, name))
            except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
                text = " ".join(str(exc).split())[:300]
                bad.append(
                    f"{path.relative_to(run_dir).as_posix()}: not a readable {name} Parquet "
                    f"file ({type(exc).__name__}: {text})"
                )
        problems += bad
        if not bad:
            tables[name] = (
                pa.concat_tables(parts) if parts else table_spec(name).schema.empty_table()
            )
    return tables, problems


#: The ``transactions`` columns the checks compare with names (a status, a reason): the files
#: keep them dictionary-encoded, and ``_decoded`` turns them into text once for every check.
_TEXT_COLUMNS = ("status", "reject_reason")


def _decoded(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """``tables`` with the ``transactions`` columns of ``_TEXT_COLUMNS`` as plain text."""
    tx = tables.get("transactions")
    if tx is None:
        return tables
    for name in _TEXT_COLUMNS:
        tx = tx.set_column(tx.schema.get_field_index(name), name, pc.cast(tx[name], pa.string()))
    return {**tables, "transactions": tx}


def _run_meta(run_dir: Path) -> tuple[dict, list[str]]:
    """``run_meta.json`` (an empty dict if it cannot be read, with the problem saying so)."""
    try:
        meta = json.loads((run_dir / RUN_META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return {}, [f"{RUN_META_FILE}: cannot be read ({reason}); its counts were not checked"]
    return (meta, []) if isinstance(meta, dict) else ({}, [])


def _counts(meta: dict, tables: dict[str, pa.Table]) -> list[str]:
    """The row counts and tap totals ``run_meta.json`` holds against the files (tables that
    could not be read are left out: their files are reported already)."""
    counted = meta.get("output", {}).get("tables") if isinstance(meta, dict) else None
    if not isinstance(counted, dict):
        return [f"{RUN_META_FILE}: expected the row count of every table under output.tables"]
    problems = []
    for name, table in tables.items():
        rows = counted.get(name, {}).get("rows") if isinstance(counted.get(name), dict) else None
        if rows != table.num_rows:
            problems.append(
                f"{name}: {table.num_rows} row(s) in the files, {RUN_META_FILE} "
                f"output.tables.{name}.rows says {rows}"
            )
    tx = tables.get("transactions")
    if tx is None:
        return problems
    totals = meta.get("totals") if isinstance(meta.get("totals"), dict) else {}
    for name in STATUSES:
        n = int(pc.sum(pc.equal(tx["status"], name)).as_py() or 0)
        if totals.get(name) != n:
            problems.append(
                f"transactions: {n} record(s) {name} in the files, {RUN_META_FILE} "
                f"totals.{name} says {totals.get(name)}"
            )
    return problems


def _row_invariants(tables: dict[str, pa.Table]) -> list[str]:
    problems = []
    for name, table in tables.items():
        try:
            check_rows(table_spec(name), table.drop_columns(["service_date"]))
        except ValueError as exc:
            problems.append(str(exc))  # names the table, the invariant and the first bad row
    return problems


def _days(dates: pa.ChunkedArray, start: np.datetime64) -> np.ndarray:
    return (dates.to_numpy().astype("datetime64[D]") - start).astype(np.int64)


def _chains_and_digests(
    batches: pa.Table, tx: pa.Table, cleared_by_batch: dict[int, dict[str, np.ndarray]]
) -> list[str]:
    """Every node's hash chain, and each acquired batch's digest from its cleared records
    (``_cleared_records``)."""
    if batches.num_rows == 0:
        return []
    frame = batches.to_pandas()
    for col in ("node_id", "acquirer_id"):
        frame[col] = frame[col].astype(str)
    start = np.datetime64(str(frame["service_date"].min()), "D")
    # The period's first day: the earliest tap (a batch clears the day before its date or later).
    if tx.num_rows:
        start = min(start, tx["service_date"].to_numpy().astype("datetime64[D]").min())
    frame["day"] = (frame["service_date"].to_numpy().astype("datetime64[D]") - start).astype(int)
    frame["settle"] = (frame["settle_date"].to_numpy().astype("datetime64[D]") - start).astype(int)
    problems = []
    for node, log in frame.sort_values("clearing_batch_id").groupby("node_id", sort=True):
        prev = "0" * 64
        for row in log.itertuples():
            where = (
                f"clearing_batches: node {node}, batch {row.clearing_batch_id} ({row.service_date})"
            )
            if row.prev_hash != prev:
                problems.append(f"{where}: prev_hash does not link to the batch before it")
            # A transit batch's digest covers transaction ids the files do not list per transit
            # batch (which records pass a node depends on the hierarchy, scenario data): the
            # chain hash below covers it; an acquired batch's digest is recomputed.
            digest = _acquired_digest(cleared_by_batch.get(int(row.clearing_batch_id)))
            if not row.transit and digest != row.records_digest:
                problems.append(f"{where}: records_digest does not match its records")
            record = batch_record(row, int(row.day), int(row.settle))
            if chain_hash(row.prev_hash, record.summary()) != row.batch_hash:
                problems.append(f"{where}: batch_hash does not match the batch's fields")
            prev = row.batch_hash
    return problems


def batch_record(row, day: int, settle_day: int) -> BatchRecord:
    """A ``clearing_batches`` row (a pandas itertuples row) as the ``BatchRecord`` it logs;
    ``day`` and ``settle_day`` are day numbers from the period's first day."""
    return BatchRecord(
        batch_id=int(row.clearing_batch_id),
        node=str(row.node_id),
        transit=bool(row.transit),
        day=day,
        settle_day=settle_day,
        acquirer=str(row.acquirer_id),
        submitted=int(row.submitted),
        cleared=int(row.cleared),
        rejected=int(row.rejected),
        rejected_duplicate_upload=int(row.rejected_duplicate_upload),
        rejected_declined=int(row.rejected_declined),
        rejected_duplicate_deduction=int(row.rejected_duplicate_deduction),
        gross_fen=int(row.gross_fen),
        fee_fen=int(row.fee_fen),
        net_fen=int(row.net_fen),
        refund_fen=int(row.refund_fen),
        records_digest=row.records_digest,
        prev_hash=row.prev_hash,
        hash=row.batch_hash,
    )


def _cleared_records(tx: pa.Table) -> dict[int, dict[str, np.ndarray]]:
    """Cleared transactions by batch, in (device, serial) order, with run-wide device ids."""
    cleared = tx.filter(pc.equal(tx["status"], "cleared"))
    cols = {
        name: cleared[name].to_numpy().astype(np.int64)
        for name in ("transaction_id", "device_id", "device_serial", "amount_fen",
                     "list_fare_fen", "clearing_batch_id")
    }  # fmt: skip
    shard = ids.record_shard(cols["transaction_id"])
    cols["device_id"] = (shard << 21) + cols["device_id"]  # sim.ids.global_device
    order = np.lexsort((cols["device_serial"], cols["device_id"], cols["clearing_batch_id"]))
    cols = {k: v[order] for k, v in cols.items()}
    batch = cols["clearing_batch_id"]
    out = {}
    for b, a, e in _runs(batch):
        out[int(b)] = {k: v[a:e] for k, v in cols.items()}
    return out


def _runs(sorted_keys: np.ndarray):
    if not len(sorted_keys):
        return
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.append(starts[1:], len(sorted_keys))
    for a, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield sorted_keys[a], a, e


def _acquired_digest(records: dict[str, np.ndarray] | None) -> str:
    h = hashlib.sha256()
    if records is not None:
        for name in ("transaction_id", "device_id", "device_serial", "amount_fen",
                     "list_fare_fen"):  # fmt: skip
            h.update(np.ascontiguousarray(records[name], dtype="<i8").tobytes())
    return h.hexdigest()


def _batches_match_their_records(
    batches: pa.Table, cleared: dict[int, dict[str, np.ndarray]]
) -> list[str]:
    """Each acquired batch's cleared count and gross amount equal its cleared transactions'
    (``_cleared_records``)."""
    problems = []
    for row in batches.filter(pc.invert(batches["transit"])).to_pylist():
        bid = int(row["clearing_batch_id"])
        recs = cleared.get(bid, {"amount_fen": np.zeros(0, np.int64)})
        n, gross = len(recs["amount_fen"]), int(recs["amount_fen"].sum())
        where = f"clearing_batches: batch {bid} ({row['service_date']})"
        if n != row["cleared"]:
            problems.append(f"{where}: cleared {row['cleared']} but {n} transactions name it")
        if gross != row["gross_fen"]:
            problems.append(
                f"{where}: gross_fen {row['gross_fen']} but its transactions sum to {gross}"
            )
    return problems


def _money(tables: dict[str, pa.Table]) -> list[str]:
    problems = []
    journal = tables["ledger_entries"]
    if journal.num_rows:
        debit = journal["debit"].to_numpy()
        credit = journal["credit"].to_numpy()
        amount = journal["amount_fen"].to_numpy().astype(np.int64)
        # Every settlement account back at zero. (A trial balance of the journal's rows is no
        # check: each row adds its amount to one account and takes it from another.)
        balance: dict[str, int] = {}
        for d, c, a in zip(debit.tolist(), credit.tolist(), amount.tolist(), strict=True):
            balance[d] = balance.get(d, 0) + a
            balance[c] = balance.get(c, 0) - a
        for account, value in sorted(balance.items()):
            if account.startswith("settle:") and value != 0:
                problems.append(f"ledger_entries: {account} is {value} fen, expected 0 (settled)")
        memo = journal["memo"].to_numpy()
        ledger_topups = int(amount[memo == "topup"].sum())
        table_topups = int(pc.sum(tables["topups"]["amount_fen"]).as_py() or 0)
        if ledger_topups != table_topups:
            problems.append(
                f"ledger_entries: top-ups posted {ledger_topups} fen, the topups table holds "
                f"{table_topups} fen"
            )
    tx = tables["transactions"]
    # Counted by Arrow's hash count: several times faster than numpy's unique on a long table.
    if pc.count_distinct(tx["transaction_id"]).as_py() != tx.num_rows:
        problems.append("transactions: a transaction id appears more than once")
    return problems


def _node_books(tables: dict[str, pa.Table]) -> list[str]:
    """The clearing nodes' books (``settlements``) against what else the run wrote.

    That each node's book sums to zero on a date is no check by itself: the engine computes the
    node's own row as what balances its other rows. So, per settlement date: the positions the
    ledger settled (members' rows and each node's own row) equal the journal's ``settlement``
    entries; what a node's book says it pays or gets from a neighbouring node is what that
    node's book says the other way round; and then the book sums to zero (which pins the links
    the journal does not see). Over the run, a node's own rows add up to the fees it earned:
    its ``clearing_fee`` entries on ``fees:<node>``; and per clearing day those equal the
    ``fee_fen`` of the node's hash-chained batches (nodes that keep a clearing log; the
    social-security channel keeps none)."""
    books, journal = tables["settlements"], tables["ledger_entries"]
    date = pc.cast(books["service_date"], pa.string()).to_numpy(zero_copy_only=False)
    node = pc.cast(books["node_id"], pa.string()).to_numpy(zero_copy_only=False)
    who = pc.cast(books["participant_id"], pa.string()).to_numpy(zero_copy_only=False)
    role = pc.cast(books["role"], pa.string()).to_numpy(zero_copy_only=False)
    fen = books["net_position_fen"].to_numpy().astype(np.int64)
    own = who == node
    settled = own | (role != "clearing_node")  # a link is settled between the nodes' banks
    problems = _compare(
        "net position in the nodes' books",
        _sum_by(zip(date[settled], who[settled], strict=True), fen[settled]),
        "the journal's settlement entries",
        _settlement_entries(journal),
        table="settlements",
        who="participant",
    )
    link = ~settled
    links = _sum_by(zip(date[link], node[link], who[link], strict=True), fen[link])
    pairs = sorted({(d, min(a, b), max(a, b)) for d, a, b in links})  # each link once
    one_sided = [
        f"settlements, {d}: node {a}'s book has {links.get((d, a, b), 0)} fen with node {b}, "
        f"node {b}'s book {links.get((d, b, a), 0)} fen with node {a} (expected the same "
        "amount, opposite sign)"
        for d, a, b in pairs
        if links.get((d, a, b), 0) + links.get((d, b, a), 0) != 0
    ]
    problems += _capped(one_sided, "settlements: more links differ between the two books")
    for (d, n), total in sorted(_sum_by(zip(date, node, strict=True), fen).items()):
        if total != 0:
            problems.append(f"settlements, {d}: node {n}'s book sums to {total} fen, expected 0")
    fees_posted = _posted(journal, (MEMO_FEE,), "credit", "fees")
    own_rows = _sum_by(zip(node[own], strict=True), fen[own])
    earned = _sum_by(((n,) for _, n in fees_posted), list(fees_posted.values()))
    problems += [
        f"settlements: node {n}'s own rows (participant_id = node_id) add up to "
        f"{own_rows.get((n,), 0)} fen over the run, its fees in the journal (clearing_fee to "
        f"fees:{n}) to {earned.get((n,), 0)} fen"
        for (n,) in sorted(set(own_rows) | set(earned))
        if own_rows.get((n,), 0) != earned.get((n,), 0)
    ]
    batches = tables["clearing_batches"]
    logged = _sum_by(
        zip(
            pc.cast(batches["service_date"], pa.string()).to_pylist(),
            pc.cast(batches["node_id"], pa.string()).to_pylist(),
            strict=True,
        ),
        batches["fee_fen"].to_numpy(),
    )
    with_log = {n for _, n in logged}
    problems += _compare(
        "clearing fees posted to the node (clearing_fee)",
        {k: v for k, v in fees_posted.items() if k[1] in with_log},
        "fee_fen of its batches in clearing_batches",
        logged,
        who="node",
    )
    return problems


def _settlement_entries(journal: pa.Table) -> dict[tuple[str, str], int]:
    """The journal's ``settlement`` entries as positions by (date, participant): crediting
    ``settle:<p>`` pays ``p`` (> 0), debiting it is what ``p`` pays (< 0)."""
    rows = journal.filter(pc.equal(pc.cast(journal["memo"], pa.string()), MEMO_SETTLEMENT))
    out: dict[tuple[str, str], int] = {}
    for day, debit, credit, fen in _rows(rows, "service_date", "debit", "credit", "amount_fen"):
        for account, sign in ((credit, 1), (debit, -1)):
            kind, _, who = str(account).partition(":")
            if kind == "settle":
                key = (str(day), who)
                out[key] = out.get(key, 0) + sign * int(fen)
    return out


def _sum_by(keys: Iterable[tuple], values) -> dict[tuple, int]:
    """``values`` summed by their key (integer fen)."""
    out: dict[tuple, int] = {}
    for key, value in zip(keys, np.asarray(values).tolist(), strict=True):
        out[key] = out.get(key, 0) + int(value)
    return out


def _journal_matches_records(tables: dict[str, pa.Table]) -> list[str]:
    """Per day and issuer, the journal's fares and venue entries against the records they were
    posted for, and its clearing entries against the records cleared (sim/clearing.py
    ``post_fares`` and ``post_clearing``; every amount is booked to ``unsettled:<issuer>``)."""
    journal, tx = tables["ledger_entries"], tables["transactions"]
    venues = tables["venue_entries"]
    charged = tx.filter(pc.invert(pc.is_in(tx["reject_reason"], pa.array(UNCHARGED_REASONS))))
    problems = _compare(
        "fares posted (card_fare + qr_fare)",
        _posted(journal, (MEMO_CARD_FARE, MEMO_QR_FARE), "credit"),
        "charged records in transactions",
        _sums(charged),
    )
    problems += _compare(
        "venue entries posted (ssc_venue_entry)",
        _posted(journal, (MEMO_SSC_ENTRY,), "credit"),
        "venue_entries",
        _sums(venues),
    )
    # A record is cleared on its acquired batch's date (a node that was down clears late).
    batches = tables["clearing_batches"]
    acquired = batches.filter(pc.invert(batches["transit"]))
    day_of_batch = dict(
        zip(
            acquired["clearing_batch_id"].to_pylist(),
            acquired["service_date"].to_pylist(),
            strict=True,
        )
    )
    cleared = tx.filter(pc.equal(tx["status"], "cleared"))
    by_batch = cleared.group_by(["clearing_batch_id", "issuer_id"]).aggregate(
        [("amount_fen", "sum")]
    )
    recorded = _sums(venues.filter(pc.greater(venues["amount_fen"], 0)))
    for batch, issuer, fen in _rows(by_batch, "clearing_batch_id", "issuer_id", "amount_fen_sum"):
        key = (str(day_of_batch.get(batch, "a batch not in clearing_batches")), str(issuer))
        recorded[key] = recorded.get(key, 0) + int(fen)
    problems += _compare(
        "cleared (clearing entries on unsettled:)",
        _posted(journal, (MEMO_CLEARING,), "debit"),
        "cleared records in transactions (on their batch's date) and paid venue entries",
        recorded,
    )
    return problems


def _refunds(tables: dict[str, pa.Table], meta: dict) -> list[str]:
    """The refunds in fen. Each ``refunds`` row against the charge it refunds (in
    ``transactions``, refunded wholly and once, of its kind: a duplicate deduction the clearing
    rejected, or a charge it cleared for the service desk; same issuer and acquirer), and every
    rejected duplicate deduction refunded; per clearing day and acquirer, the duplicate
    deductions' refunds against the batches' ``refund_fen`` (hash-chained); per day and issuer,
    the refunds paid against the journal's refund entries; and the refunds owed after the
    period against ``run_meta.json`` (``totals.refunds_outstanding`` and ``_fen``)."""
    totals = meta.get("totals") if isinstance(meta.get("totals"), dict) else {}
    if meta and "refund_orders_fen" not in totals:
        # Written before runs kept their refunds: one problem said once, not every refund and
        # every day's journal reported as missing.
        return [
            f"refunds: {RUN_META_FILE} has no totals.refund_orders_fen: the run was written "
            "before CardTwin recorded its refunds (the refunds table), so they cannot be "
            "checked in fen; run the scenario again with this version to verify them"
        ]
    refunds, tx = tables["refunds"], tables["transactions"]
    rows = _refund_rows(refunds)
    problems: list[str] = []
    once = _more_than_once(rows["tx"])
    problems += _capped(
        [f"refunds: transaction {t} is refunded {n} times; a charge is refunded once at most"
         for t, n in once],
        "refunds: more transactions are refunded more than once",
    )  # fmt: skip
    problems += _capped(
        _refund_vs_charge(rows, tx), "refunds: more rows disagree with their charge"
    )
    problems += _capped(_unrefunded(rows, tx), "transactions: more duplicate deductions unrefunded")
    problems += _refunds_vs_batches(rows, tables["clearing_batches"])
    end = meta.get("period", {}).get("end") if isinstance(meta.get("period"), dict) else None
    if end is None:
        if meta:  # an unreadable run_meta.json is reported already
            problems.append(
                f"{RUN_META_FILE}: expected the period's last day (period.end); the refunds paid "
                "and owed were not checked against the journal"
            )
        return problems
    paid = rows["pay_date"] <= end
    for kind, memos, account_kind, what in (
        ("duplicate_deduction", (MEMO_DUP_REFUND, MEMO_QR_DUP_REFUND), "unsettled",
         "duplicate-deduction refunds posted (duplicate_refund + qr_duplicate_refund)"),
        ("service_desk", (MEMO_DESK_REFUND,), "bank", "desk refunds posted (desk_refund)"),
    ):  # fmt: skip
        mine = paid & (rows["kind"] == kind)
        keys = zip(rows["pay_date"][mine].tolist(), rows["issuer"][mine].tolist(), strict=True)
        recorded = _sum_by(keys, rows["amount"][mine])
        problems += _compare(
            what,
            _posted(tables["ledger_entries"], memos, "debit", account_kind),
            f"{kind} refunds paid that day in refunds",
            recorded,
        )
    owed = ~paid
    for name, value, what in (
        ("refunds_outstanding", int(owed.sum()), "refund(s)"),
        ("refunds_outstanding_fen", int(rows["amount"][owed].sum()), "fen of refunds"),
        ("refund_orders", len(rows["tx"]), "refund(s)"),
        ("refund_orders_fen", int(rows["amount"].sum()), "fen of refunds"),
    ):
        if totals.get(name) != value:
            when = f"paid after the period's last day {end}" if "outstanding" in name else "ordered"
            problems.append(
                f"refunds: {value} {what} {when}, {RUN_META_FILE} totals.{name} says "
                f"{totals.get(name)}"
            )
    return problems


def _refund_rows(refunds: pa.Table) -> dict[str, np.ndarray]:
    """The ``refunds`` columns the checks read, as numpy arrays (dates as ISO text)."""

    def text(name: str) -> np.ndarray:
        return np.array(pc.cast(refunds[name], pa.string()).to_pylist(), dtype=object)

    return {
        "tx": refunds["transaction_id"].to_numpy().astype(np.int64),
        "kind": text("refund_kind"),
        "issuer": text("issuer_id"),
        "acquirer": text("acquirer_id"),
        "amount": refunds["amount_fen"].to_numpy().astype(np.int64),
        "date": text("service_date"),
        "pay_date": text("pay_date"),
    }


def _more_than_once(tx_id: np.ndarray) -> list[tuple[int, int]]:
    """(transaction id, times) of the ids that appear more than once."""
    ids_, counts = np.unique(tx_id, return_counts=True)
    return list(zip(ids_[counts > 1].tolist(), counts[counts > 1].tolist(), strict=True))


def _refund_vs_charge(rows: dict[str, np.ndarray], tx: pa.Table) -> list[str]:
    """Each refund against its transaction: there, the whole charge (never more), of the kind
    its clearing status says, the same issuer and acquirer."""
    # Only the few refunded records are read out of the (possibly very long) transactions.
    refunded = tx.filter(pc.is_in(tx["transaction_id"], value_set=pa.array(rows["tx"])))
    at = {t: j for j, t in enumerate(refunded["transaction_id"].to_pylist())}

    def text(name: str) -> list[str]:
        return pc.cast(refunded[name], pa.string()).to_pylist()

    reason, status = text("reject_reason"), text("status")
    issuer, acquirer = text("issuer_id"), text("acquirer_id")
    charged = refunded["amount_fen"].to_pylist()
    problems = []
    for i in range(len(rows["tx"])):
        where = f"refunds, {rows['date'][i]}: transaction {rows['tx'][i]}"
        j = at.get(int(rows["tx"][i]))
        if j is None:
            problems.append(f"{where} is not in transactions (a refund needs the charge it pays)")
            continue
        kind = rows["kind"][i]
        expected = ("rejected", "duplicate_deduction") if kind == "duplicate_deduction" else (
            "cleared", "none")  # fmt: skip
        if (status[j], reason[j]) != expected:
            problems.append(
                f"{where} is refunded as {kind}, transactions has it {status[j]} "
                f"({reason[j]}); expected {expected[0]} ({expected[1]})"
            )
        if rows["amount"][i] != charged[j]:
            problems.append(
                f"{where}: refunds amount_fen {rows['amount'][i]}, transactions charged "
                f"{charged[j]} fen (a refund pays back the whole charge, never more)"
            )
        if (rows["issuer"][i], rows["acquirer"][i]) != (issuer[j], acquirer[j]):
            problems.append(
                f"{where}: refunds issuer_id/acquirer_id {rows['issuer'][i]}/"
                f"{rows['acquirer'][i]}, transactions {issuer[j]}/{acquirer[j]}"
            )
    return problems


def _unrefunded(rows: dict[str, np.ndarray], tx: pa.Table) -> list[str]:
    """Duplicate deductions the clearing rejected without a refund row."""
    dd = pc.equal(tx["reject_reason"], "duplicate_deduction")
    dd_tx = tx.filter(dd)
    ids_ = dd_tx["transaction_id"].to_numpy().astype(np.int64)
    refunded = rows["tx"][rows["kind"] == "duplicate_deduction"]
    lost = ~np.isin(ids_, refunded)
    dates = pc.cast(dd_tx["service_date"], pa.string()).to_numpy(zero_copy_only=False)
    return [
        f"transactions, {dates[k]}: transaction {ids_[k]} was rejected as a duplicate deduction "
        "(charged twice) but refunds has no refund of it"
        for k in np.flatnonzero(lost).tolist()
    ]


def _refunds_vs_batches(rows: dict[str, np.ndarray], batches: pa.Table) -> list[str]:
    """Per clearing day and acquirer, the duplicate deductions refunded against the acquired
    batches' ``refund_fen`` and ``rejected_duplicate_deduction``."""
    acquired = batches.filter(pc.invert(batches["transit"]))
    logged: dict[tuple[str, str], list[int]] = {}
    for day, acquirer, n, fen in _rows(
        acquired.group_by(["service_date", "acquirer_id"]).aggregate(
            [("rejected_duplicate_deduction", "sum"), ("refund_fen", "sum")]
        ),
        "service_date", "acquirer_id", "rejected_duplicate_deduction_sum", "refund_fen_sum",
    ):  # fmt: skip
        logged[(str(day), str(acquirer))] = [int(n), int(fen)]
    ordered: dict[tuple[str, str], list[int]] = {}
    dd = rows["kind"] == "duplicate_deduction"
    for day, acquirer, fen in zip(
        rows["date"][dd].tolist(), rows["acquirer"][dd].tolist(), rows["amount"][dd].tolist(),
        strict=True,
    ):  # fmt: skip
        counts = ordered.setdefault((day, acquirer), [0, 0])
        counts[0] += 1
        counts[1] += int(fen)
    differ = [
        f"clearing_batches, {day}, acquirer {acquirer}: rejected_duplicate_deduction "
        f"{logged.get((day, acquirer), [0, 0])[0]} and refund_fen "
        f"{logged.get((day, acquirer), [0, 0])[1]}, refunds of duplicate deductions ordered "
        f"that day {ordered.get((day, acquirer), [0, 0])[0]} of "
        f"{ordered.get((day, acquirer), [0, 0])[1]} fen"
        for day, acquirer in sorted(set(logged) | set(ordered))
        if logged.get((day, acquirer), [0, 0]) != ordered.get((day, acquirer), [0, 0])
    ]
    return _capped(differ, "clearing_batches: more days x acquirers differ from refunds")


def _capped(problems: list[str], rest: str) -> list[str]:
    """The first ``_SHOWN`` problems and one line counting the others."""
    if len(problems) <= _SHOWN:
        return problems
    return [*problems[:_SHOWN], f"{rest} ({len(problems) - _SHOWN} not shown)"]


def _posted(
    journal: pa.Table, memos: tuple[str, ...], side: str, kind: str = "unsettled"
) -> dict[tuple[str, str], int]:
    """Fen the journal's ``memos`` entries booked on ``side`` (debit or credit) of a ``kind``
    account (by default ``unsettled:<issuer>``: credited by the fares, debited by the clearing
    and the duplicate-deduction refunds), by day and participant."""
    side_col = pc.cast(journal[side], pa.string())
    rows = journal.filter(
        pc.and_(
            pc.is_in(pc.cast(journal["memo"], pa.string()), pa.array(memos)),
            pc.starts_with(side_col, f"{kind}:"),
        )
    )
    keys = (
        (str(day), account.partition(":")[2])
        for day, account in zip(
            rows["service_date"].to_pylist(),
            pc.cast(rows[side], pa.string()).to_pylist(),
            strict=True,
        )
    )
    return _sum_by(keys, rows["amount_fen"].to_numpy())


def _sums(records: pa.Table) -> dict[tuple[str, str], int]:
    """``amount_fen`` of records by (service_date, issuer_id)."""
    grouped = records.group_by(["service_date", "issuer_id"]).aggregate([("amount_fen", "sum")])
    return {
        (str(day), str(issuer)): int(fen)
        for day, issuer, fen in _rows(grouped, "service_date", "issuer_id", "amount_fen_sum")
    }


def _rows(table: pa.Table, *columns: str) -> Iterable[tuple]:
    return zip(*(table[c].to_pylist() for c in columns), strict=True)


def _compare(
    what: str,
    found: dict[tuple[str, str], int],
    other_what: str,
    other: dict[tuple[str, str], int],
    *,
    table: str = "ledger_entries",
    who: str = "issuer",
) -> list[str]:
    """Two sums in fen by (date, ``who``) side by side: ``found`` (``what``, read from
    ``table``) and ``other`` (``other_what``). A problem per key whose sums differ (0 where one
    has none); past ``_SHOWN`` of them, one line counting the rest (a whole year edited would
    otherwise fill the screen)."""
    differ = [
        f"{table}, {day}, {who} {name}: {what} {found.get((day, name), 0)} fen, {other_what} "
        f"{other.get((day, name), 0)} fen"
        for day, name in sorted(set(found) | set(other))
        if found.get((day, name), 0) != other.get((day, name), 0)
    ]
    return _capped(differ, f"{table}: {what} differ on more day(s) x {who}(s)")
