"""Scoring a system under test against a dirty stream's labels (traffic/dirty.py).

    python run_scenario.py score --labels STATE/labels --result RESULT [--table T] [--json F]

RESULT is what the system kept after its deduplication or clearing: a CSV, Parquet or JSON-lines
file, or ``postgresql://USER@HOST:PORT/DB`` with ``--table``. It needs the records'
``idempotency_key`` (or ``stream_seq``) column; every other column is ignored. Each row is one
record the system kept (a key kept twice counts twice).

What is scored, from the labels of every record sent:
- **duplicates**, per tap (the records with one device and serial: the original and its
  resent copies): the system should keep exactly one. Of the copies the stream sent, those
  the system kept (a tap's records kept beyond the first, at most as many as its copies) are
  missed and the others caught; when it keeps none of a tap's records it lost a genuine one (a
  false alarm). Precision = caught / (caught + lost), recall = caught / (caught + missed).
- **kept more than once**: records whose key the system kept twice or more (a receiver with
  at-least-once delivery that does not keep keys: the stream sends a record again after a
  resume or a lost acknowledgement); the copies kept beyond the first.
- **malformed** records should be refused: refused ones are caught, kept ones missed.
- **late, out-of-order and clock-skewed** records should be kept: the share kept.
- **money**: the fen the kept records add up to (at the amounts sent before any breaking)
  against the fen of the stream's distinct, well-formed taps: over-counted by kept copies,
  lost with dropped taps.
Keys in the result that the stream never sent are counted as ``unknown``.

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


def score(labels_dir: str | Path, result: pa.Table) -> dict:
    """The scores (module docstring) of ``result`` against the labels in ``labels_dir``."""
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
    uses_seq = bool(
        con.sql("SELECT count(*) FROM kept_rows WHERE NOT contains(key, ':')").fetchall()[0][0]
    )
    label_key = "CAST(stream_seq AS VARCHAR)" if uses_seq else "idempotency_key"
    con.sql(
        f"""CREATE VIEW sent AS
        SELECT l.*, coalesce(k.n, 0) AS kept
        FROM labels l LEFT JOIN (SELECT key, count(*) AS n FROM kept_rows GROUP BY key) k
          ON k.key = {label_key}"""
    )
    (unknown,) = con.sql(
        f"SELECT count(*) FROM kept_rows WHERE key NOT IN (SELECT {label_key} FROM labels)"
    ).fetchall()[0]
    # Per tap: ``excess`` copies sent beyond the original, ``kept_n`` of its records kept (a key
    # kept twice counts twice). Copies missed are the records kept beyond the first, at most
    # the copies sent (more is a key kept twice, counted apart), so caught is never negative.
    taps = con.sql(
        """SELECT sum(excess) AS excess, sum(excess - missed) AS caught,
                  sum(missed) AS missed,
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
    excess, caught, missed, lost, expected_fen, kept_fen, over_fen, lost_fen, n_taps = (
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
    return {
        "records_sent": int(sent),
        "records_kept": int(result.num_rows),
        "unknown_keys": int(unknown),
        "labels_left_out": left_out,
        "kept_more_than_once": {"records": int(twice_keys), "extra_copies": int(twice_extra)},
        "duplicates": {
            "taps": n_taps,
            "copies_sent": excess,
            "caught": caught,
            "missed": missed,
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
    lines = [
        f"records sent {report['records_sent']:,}, kept by the system {report['records_kept']:,}"
        f" (unknown keys {report['unknown_keys']:,}; {twice['records']:,} records kept more "
        f"than once, {twice['extra_copies']:,} extra copies)",
        f"duplicates: {d['copies_sent']:,} copies sent, {d['caught']:,} caught, {d['missed']:,} "
        f"missed, {d['genuine_lost']:,} genuine taps lost: precision {pct(d['precision'])}, "
        f"recall {pct(d['recall'])}",
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
    for kind, k in report["should_be_kept"].items():
        lines.append(f"{kind}: {k['kept']:,} of {k['sent']:,} kept")
    lines.append(
        f"money: {money['kept']:,} fen kept against {money['expected']:,} expected "
        f"({money['difference']:+,} fen: {money['over_counted']:,} over-counted, "
        f"{money['lost']:,} lost) — {'reconciled' if money['reconciled'] else 'NOT reconciled'}"
    )
    return "\n".join(lines)


__all__ = ["ScoreInputError", "read_result", "score", "text_report"]
