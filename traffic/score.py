"""Scoring a system under test against a dirty stream's labels (traffic/dirty.py).

    python run_scenario.py score --labels STATE/labels --result RESULT [--table T] [--json F]

RESULT is what the system kept after its deduplication or clearing: a CSV, Parquet or JSON-lines
file, or ``postgresql://USER@HOST:PORT/DB`` with ``--table``. It needs the records'
``idempotency_key`` (or ``stream_seq``) column; every other column is ignored. Each row is one
record the system kept (a key kept twice counts twice).

What is scored, from the labels of every record sent:
- **duplicates**, per tap (the records with one device and serial: the original and its
  resent copies): the system should keep exactly one. Of a kept tap's copies, those the system
  kept too (its records kept beyond the first, at most as many as its copies) are missed and
  the others caught. A tap of which the system kept nothing is a genuine tap lost (a false
  alarm), and its copies are neither caught nor missed (``lost_with_their_tap``): a record
  simply absent is no sign of deduplication. Precision = caught / (caught + lost), recall =
  caught / (caught + missed) (n/a when the system kept no tap that had copies).
- **kept more than once**: records whose key the system kept twice or more (a receiver with
  at-least-once delivery that does not keep keys: the stream sends a record again after a
  resume or a lost acknowledgement); the copies kept beyond the first.
- **malformed** records should be refused: refused ones are caught, kept ones missed.
- **late, out-of-order and clock-skewed** records should be kept: the share kept.
- **money**: the fen the kept records add up to (at the amounts sent before any breaking)
  against the fen of the stream's distinct, well-formed taps: over-counted by kept copies,
  lost with dropped taps.
Keys in the result of the labels' stream that it never sent are counted as ``unknown``; keys of
another stream (another id before the ``:``) are left out and counted apart. A result of which no
record is the stream's (another stream's file, a top-ups table) or that holds no records is
refused (``ScoreInputError``): scored, everything the stream sent would look refused.

``verdict`` says whether the system kept the dirty stream as it should (``passed``) and, if not,
each way it did not (``failures``): duplicate copies kept, genuine taps lost, malformed records
kept, late, out-of-order or skewed records dropped, records kept more than once, money that does
not reconcile. The command exits 1 when it did not pass (run_scenario.py).

A day's labels are written before its records go out, and cut back to the records sent when the
stream ends; a stream killed (SIGKILL) and not resumed leaves labels of records it never sent,
up to the days the simulation had made ahead. So when the labels sit in a stream's state folder
(``STATE/labels``) beside a checkpoint of the same stream, only the labels up to the last stream
position that checkpoint saw go out (``sent_through``) are scored, and the report says how many
were left out (``labels_left_out``). Records sent after that checkpoint was saved (the last
fraction of a second before the kill) then count as ``unknown`` keys if the system kept them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import duckdb
import pyarrow as pa

from traffic.accounting import CHECKPOINT_FILE, Checkpoint
from traffic.dirty import labels_stream_id

#: How many other streams' ids a refusal names.
SHOWN_STREAMS = 3


class ScoreInputError(ValueError):
    """The labels or the result cannot be read as expected."""


def read_result(source: str, table: str | None = None) -> pa.Table:
    """The system's kept records: one column, ``key`` (idempotency key as text)."""
    if source.startswith(("postgresql://", "postgres://")):
        return _from_postgres(source, table)
    path = Path(source)
    if not path.is_file():
        raise ScoreInputError(f"--result {source}: no such file")
    reader = {
        ".csv": "read_csv_auto",
        ".parquet": "read_parquet",
        ".jsonl": "read_json_auto",
        ".json": "read_json_auto",
        ".ndjson": "read_json_auto",
    }.get(path.suffix.lower())
    if reader is None:
        raise ScoreInputError(
            f"--result {source}: expected a .csv, .parquet or .jsonl file, or postgresql://..."
        )
    con = duckdb.connect()
    try:
        rel = con.sql(f"SELECT * FROM {reader}(?)", params=[str(path)])
        columns = rel.columns
    except duckdb.Error as exc:
        raise ScoreInputError(f"--result {source}: {str(exc).splitlines()[0]}") from None
    column = _key_column(columns, source)
    return con.sql(
        f'SELECT CAST("{column}" AS VARCHAR) AS key FROM {reader}(?)', params=[str(path)]
    ).to_arrow_table()


def _key_column(columns: list[str], source: str) -> str:
    for name in ("idempotency_key", "stream_seq"):
        if name in columns:
            return name
    raise ScoreInputError(
        f"--result {source}: has no idempotency_key or stream_seq column "
        f"(columns: {', '.join(columns)})"
    )


def _from_postgres(url: str, table: str | None) -> pa.Table:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    table = table or parse_qs(parts.query).get("table", [None])[0]
    if not table:
        raise ScoreInputError(f"--result {url}: name the table with --table")
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            columns = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                    (table,),
                )
            ]
            if not columns:
                raise ScoreInputError(f"--result {dsn}: no table {table}")
            column = _key_column(columns, f"{dsn} table {table}")
            query = sql.SQL("SELECT CAST({} AS text) FROM {}").format(
                sql.Identifier(column), sql.Identifier(table)
            )
            keys = [r[0] for r in conn.execute(query)]
    except psycopg.Error as exc:
        raise ScoreInputError(f"--result {dsn}: {str(exc).strip()}") from None
    return pa.table({"key": pa.array(keys, pa.string())})


def score(labels_dir: str | Path, result: pa.Table, source: str | None = None) -> dict:
    """The scores (module docstring) of ``result`` against the labels in ``labels_dir``
    (``source``: where the result was read, for messages). Raises ScoreInputError for labels
    that cannot be read, and a result that is not of the labels' stream."""
    labels_dir = Path(labels_dir)
    files = sorted(labels_dir.glob("day=*.parquet"))
    if not files:
        raise ScoreInputError(
            f"--labels {labels_dir}: no labels (day=N.parquet); stream with --inject first"
        )
    con = duckdb.connect()
    con.register("kept_rows", result)
    con.sql(f"CREATE VIEW all_labels AS SELECT * FROM read_parquet({[str(f) for f in files]})")
    through = _sent_through(labels_dir)
    left_out = None
    if through is not None:
        query = f"SELECT count(*) FROM all_labels WHERE stream_seq > {through}"
        (n,) = con.sql(query).fetchall()[0]
        if n:
            left_out = {"records": int(n), "after_stream_seq": through}
    keep = "" if left_out is None else f" WHERE stream_seq <= {through}"
    con.sql(f"CREATE VIEW labels AS SELECT * FROM all_labels{keep}")
    stream_id = labels_stream_id(labels_dir)
    uses_seq = bool(
        con.sql("SELECT count(*) FROM kept_rows WHERE NOT contains(key, ':')").fetchall()[0][0]
    )
    label_key = "CAST(stream_seq AS VARCHAR)" if uses_seq else "idempotency_key"
    # Keys of another stream (keys only: a stream position cannot tell), left out of the rest.
    other = (
        "FALSE"
        if uses_seq or stream_id is None
        else "contains(key, ':') AND regexp_replace(key, ':[^:]*$', '') <> "
        f"'{stream_id.replace(chr(39), chr(39) * 2)}'"
    )
    con.sql(f"CREATE VIEW others AS SELECT * FROM kept_rows WHERE {other}")
    con.sql(f"CREATE VIEW kept AS SELECT * FROM kept_rows WHERE NOT ({other})")
    _check_result(con, label_key, stream_id, uses_seq, source)
    con.sql(
        f"""CREATE VIEW sent AS
        SELECT l.*, coalesce(k.n, 0) AS kept
        FROM labels l LEFT JOIN (SELECT key, count(*) AS n FROM kept GROUP BY key) k
          ON k.key = {label_key}"""
    )
    (unknown,) = con.sql(
        f"SELECT count(*) FROM kept WHERE key NOT IN (SELECT {label_key} FROM labels)"
    ).fetchall()[0]
    (other_rows,) = con.sql("SELECT count(*) FROM others").fetchall()[0]
    # Per tap: ``excess`` copies sent beyond the original, ``kept_n`` of its records kept (a key
    # kept twice counts twice). Of a kept tap, copies missed are the records kept beyond the
    # first, at most the copies sent (more is a key kept twice, counted apart), so caught is
    # never negative; of a tap kept not at all, the copies went with it (neither).
    taps = con.sql(
        """SELECT sum(excess) AS excess,
                  sum(CASE WHEN kept_n > 0 THEN excess - missed ELSE 0 END) AS caught,
                  sum(missed) AS missed,
                  sum(CASE WHEN kept_n = 0 THEN excess ELSE 0 END) AS with_tap,
                  sum(CASE WHEN kept_n = 0 THEN 1 ELSE 0 END) AS lost,
                  sum(amount_fen) AS expected_fen,
                  sum(amount_fen * kept_n) AS kept_fen,
                  sum(amount_fen * greatest(kept_n - 1, 0)) AS over_counted_fen,
                  sum(CASE WHEN kept_n = 0 THEN amount_fen ELSE 0 END) AS lost_fen,
                  count(*) AS taps
           FROM (SELECT *, least(excess, greatest(kept_n - 1, 0)) AS missed
                 FROM (SELECT device_id, device_serial, transaction_id,
                              any_value(amount_fen) AS amount_fen, count(*) - 1 AS excess,
                              sum(kept) AS kept_n
                       FROM sent WHERE kind <> 'malformed'
                       GROUP BY device_id, device_serial, transaction_id))"""
    ).fetchall()[0]
    excess, caught, missed, with_tap, lost, expected_fen, kept_fen, over_fen, lost_fen, n_taps = (
        int(x or 0) for x in taps
    )
    (bad_caught, bad_missed) = con.sql(
        "SELECT count(*) FILTER (WHERE kept = 0), count(*) FILTER (WHERE kept > 0) "
        "FROM sent WHERE kind = 'malformed'"
    ).fetchall()[0]
    kept_shares = {
        kind: {"sent": int(n), "kept": int(k)}
        for kind, n, k in con.sql(
            "SELECT kind, count(*), count(*) FILTER (WHERE kept > 0) FROM sent "
            "WHERE kind IN ('late', 'out_of_order', 'clock_skew') GROUP BY kind ORDER BY kind"
        ).fetchall()
    }
    sent = con.sql("SELECT count(*) FROM sent").fetchall()[0][0]
    (twice_keys, twice_extra) = con.sql(
        "SELECT count(*), coalesce(sum(kept - 1), 0) FROM sent WHERE kept > 1"
    ).fetchall()[0]
    report = {
        "stream_id": stream_id,
        "records_sent": int(sent),
        "records_kept": int(result.num_rows - other_rows),
        "unknown_keys": int(unknown),
        "other_streams_records": int(other_rows),
        "labels_left_out": left_out,
        "kept_more_than_once": {"records": int(twice_keys), "extra_copies": int(twice_extra)},
        "duplicates": {
            "taps": n_taps,
            "copies_sent": excess,
            "caught": caught,
            "missed": missed,
            "lost_with_their_tap": with_tap,
            "genuine_lost": lost,
            "precision": _ratio(caught, caught + lost),
            "recall": _ratio(caught, caught + missed),
        },
        "malformed": {
            "sent": int(bad_caught + bad_missed),
            "caught": int(bad_caught),
            "missed": int(bad_missed),
            "recall": _ratio(bad_caught, bad_caught + bad_missed),
        },
        "should_be_kept": kept_shares,
        "money_fen": {
            "expected": expected_fen,
            "kept": kept_fen,
            "over_counted": over_fen,
            "lost": lost_fen,
            "difference": kept_fen - expected_fen,
            "reconciled": kept_fen == expected_fen,
        },
    }
    report["verdict"] = _verdict(report)
    return report


def _check_result(con, label_key: str, stream_id: str | None, uses_seq: bool, source) -> None:
    """Refuse a result with no record, or none of the labels' stream (module docstring)."""
    (total,) = con.sql("SELECT count(*) FROM kept_rows").fetchall()[0]
    where = f"--result {source}" if source else "the result"
    if total == 0:
        raise ScoreInputError(
            f"{where}: holds no records; expected the records the system under test kept of "
            "the stream (the wrong file or table, or read before the system wrote it?)"
        )
    (ours,) = con.sql(
        f"SELECT count(*) FROM kept WHERE key IN (SELECT {label_key} FROM labels)"
    ).fetchall()[0]
    if ours:
        return
    if uses_seq:
        raise ScoreInputError(
            f"{where}: none of its {total:,} stream_seq values is a position the labels' "
            "stream sent; expected the records the system kept of that stream"
        )
    found = con.sql(
        "SELECT regexp_replace(key, ':[^:]*$', '') AS id, count(*) AS n FROM kept_rows "
        "GROUP BY id ORDER BY n DESC, id"
    ).fetchall()
    shown = ", ".join(f"{sid or '(none)'} ({n:,})" for sid, n in found[:SHOWN_STREAMS]) + (
        ", ..." if len(found) > SHOWN_STREAMS else ""
    )
    raise ScoreInputError(
        f"{where}: none of its {total:,} records is of the labels' stream "
        f"{stream_id or '(unknown)'}: their idempotency keys are of stream {shown}; score the "
        "records the system kept of the stream these labels were written for (another "
        "stream's file or table, another format's, or labels of another --state?)"
    )


def _verdict(report: dict) -> dict:
    """Whether the system kept the dirty stream as it should, and each way it did not."""
    d, m, money = report["duplicates"], report["malformed"], report["money_fen"]
    twice = report["kept_more_than_once"]
    failures = []
    if d["missed"]:
        failures.append(f"{d['missed']:,} duplicate copies kept")
    if d["genuine_lost"]:
        failures.append(f"{d['genuine_lost']:,} genuine taps lost")
    if m["missed"]:
        failures.append(f"{m['missed']:,} malformed records kept")
    for kind, k in report["should_be_kept"].items():
        if k["kept"] < k["sent"]:
            failures.append(f"{k['sent'] - k['kept']:,} {kind.replace('_', '-')} records dropped")
    if twice["extra_copies"]:
        failures.append(f"{twice['extra_copies']:,} extra copies of records kept more than once")
    if not money["reconciled"]:
        failures.append(f"money off by {money['difference']:+,} fen")
    return {"passed": not failures, "failures": failures}


def _sent_through(labels_dir: Path) -> int | None:
    """The last stream position that went out, by the checkpoint of the labels' own stream in
    the state folder around them (module docstring); None without one (labels kept
    elsewhere, or a checkpoint of another stream or that cannot be read: the labels are then
    taken as cut)."""
    path = labels_dir.parent / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        checkpoint = Checkpoint.load(path)
    except ValueError:
        return None
    if checkpoint.stream_id != labels_stream_id(labels_dir):
        return None
    return checkpoint.sent_through


def _ratio(a: int, b: int) -> float | None:
    return None if b == 0 else round(a / b, 6)


def text_report(report: dict) -> str:
    """The scores as a few lines of text."""
    d, m, money = report["duplicates"], report["malformed"], report["money_fen"]

    def pct(x):
        return "n/a" if x is None else f"{x:.1%}"

    twice = report["kept_more_than_once"]
    with_tap = (
        f", {d['lost_with_their_tap']:,} lost with their tap" if d["lost_with_their_tap"] else ""
    )
    lines = [
        f"records sent {report['records_sent']:,}, kept by the system {report['records_kept']:,}"
        f" (unknown keys {report['unknown_keys']:,}; {twice['records']:,} records kept more "
        f"than once, {twice['extra_copies']:,} extra copies)",
        f"duplicates: {d['copies_sent']:,} copies sent, {d['caught']:,} caught, {d['missed']:,} "
        f"missed{with_tap}, {d['genuine_lost']:,} genuine taps lost: precision "
        f"{pct(d['precision'])}, recall {pct(d['recall'])}",
        f"malformed: {m['sent']:,} sent, {m['caught']:,} refused, {m['missed']:,} kept: "
        f"recall {pct(m['recall'])}",
    ]
    cut = report.get("labels_left_out")
    if cut:
        lines.insert(
            0,
            f"NOTE: {cut['records']:,} labels after stream position {cut['after_stream_seq']:,} "
            "left out: the stream that wrote them has not cut them to the records it sent "
            "(killed and not resumed, or still running), and its checkpoint saw nothing sent "
            "after that position; records sent after the checkpoint count as unknown keys "
            "(--resume the stream to finish it)",
        )
    others = report.get("other_streams_records", 0)
    if others:
        lines.insert(
            0,
            f"NOTE: {others:,} records of other streams in the result (keys not of stream "
            f"{report['stream_id']}) left out",
        )
    for kind, k in report["should_be_kept"].items():
        lines.append(f"{kind}: {k['kept']:,} of {k['sent']:,} kept")
    lines.append(
        f"money: {money['kept']:,} fen kept against {money['expected']:,} expected "
        f"({money['difference']:+,} fen: {money['over_counted']:,} over-counted, "
        f"{money['lost']:,} lost) — {'reconciled' if money['reconciled'] else 'NOT reconciled'}"
    )
    verdict = report["verdict"]
    lines.append(
        "PASSED: the system kept the dirty stream as it should"
        if verdict["passed"]
        else f"FAILED: {'; '.join(verdict['failures'])}"
    )
    return "\n".join(lines)


__all__ = ["ScoreInputError", "read_result", "score", "text_report"]
