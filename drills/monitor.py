"""What the operations centre's monitoring shows of a drill's day, and the alerts it raises.

Everything is computed from a finished run's files (DuckDB over the Parquet tables), in
5-minute buckets of the drill's day (bucket b covers minutes 5b .. 5b+5 after midnight):

| metric | per | what |
|---|---|---|
| ``taps`` | all, line, device | tap records made |
| ``pending_uploads`` | all, line, device | records made but not yet uploaded at the bucket's end |
| ``upload_lag_min`` | all, line, device | mean minutes tap to upload, records uploaded in it |
| ``duplicates`` | all, line, device | a card charged on a device within 5 s of the last time |
| ``qr_share`` | all, line | share of the taps paid by QR code |
| ``refused`` | all, line, device | card taps the reader took no fare from |
| ``outlet_wait_min`` | all, outlet | mean wait of the visits whose wait ended in the bucket |
| ``node_batches`` | node | batches a clearing node made at the cut-off (the day before's) |
| ``node_down`` | node | 1 while the node does not answer the monitoring's heartbeat |
| ``deferred_fen`` | all, issuer | settlement an issuer's deposit could not cover (at the cut-off) |

An alert rule (drills/script.py ``AlertRule``) is judged on each of its scope's series: a
bucket meets it when the value is above (or below) the threshold, and, for ``min_usual``, when
the *usual* day (the day before, as an operations centre compares with yesterday) had at least
that much there (a quiet night is not an outage); with ``relative``, the value judged is the
difference from the usual day. After ``for_min`` minutes of buckets in a row the alert is
raised, at the end of the last bucket; it is raised again only after a bucket that does not
meet it. A device, line... of the usual day with nothing today is judged too (its counts are 0:
a reader dead since before its first trip is as quiet as any).

Like a real operations centre's rules, some of what they raise is not an incident at all:
each alert is classified true or noise against the incidents' ground truth (the records they
touched).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from sim.output import define_views
from sim.schema import TABLES

BUCKET_MIN = 5
BUCKETS = 24 * 60 // BUCKET_MIN

_KEY = {
    "all": "'all'",
    "line": "CAST(route_id AS VARCHAR)",
    "device": "CAST(device_id AS VARCHAR)",
    "outlet": "CAST(outlet_id AS VARCHAR)",
    "node": "CAST(node_id AS VARCHAR)",
    "issuer": "CAST(issuer_id AS VARCHAR)",
}
#: The scopes each metric can be computed per.
SCOPES_OF = {
    "taps": ("all", "line", "device"),
    "pending_uploads": ("all", "line", "device"),
    "upload_lag_min": ("all", "line", "device"),
    "duplicates": ("all", "line", "device"),
    "qr_share": ("all", "line"),
    "refused": ("all", "line", "device"),
    "outlet_wait_min": ("all", "outlet"),
    "node_batches": ("node",),
    "node_down": ("node",),
    "deferred_fen": ("all", "issuer"),
}
#: Metrics with one value a day, in the cut-off's bucket (a rule on them cannot last longer).
ONCE_A_DAY = ("node_batches", "deferred_fen")
#: Metrics whose missing buckets are 0 (counts); the others are missing (not judged).
COUNTS = ("taps", "pending_uploads", "duplicates", "refused", "node_batches", "deferred_fen")


class RunView:
    """One run's files seen from the drill's day."""

    def __init__(self, run_dir: Path, day: dt.date, cutoff_hour: int) -> None:
        self.con = duckdb.connect()
        define_views(self.con, Path(run_dir).resolve(), TABLES)
        self.day = day
        self.cutoff_hour = cutoff_hour
        self._cache: dict[tuple[str, str], pd.DataFrame] = {}
        meta = json.loads((Path(run_dir) / "run_meta.json").read_text(encoding="utf-8"))
        # The incidents as played (with the trainee's actions): a node that is down does not
        # answer the heartbeat, which is all the monitoring knows of it.
        self._incidents = [i for c in meta["cities"] for i in c["settings"]["incidents"]]

    def _bucket(self, column: str) -> str:
        start = f"TIMESTAMP '{self.day} 00:00:00'"
        return f"CAST(floor(date_diff('second', {start}, {column}) / {BUCKET_MIN * 60}) AS BIGINT)"

    def _in_day(self, column: str) -> str:
        return (
            f"{column} >= TIMESTAMP '{self.day} 00:00:00' AND "
            f"{column} < TIMESTAMP '{self.day + dt.timedelta(days=1)} 00:00:00'"
        )

    def series(self, metric: str, per: str) -> pd.DataFrame:
        """A (keys x buckets) frame of ``metric`` per ``per`` (NaN: no value)."""
        if (metric, per) not in self._cache:
            self._cache[metric, per] = self._compute(metric, per)
        return self._cache[metric, per]

    def _compute(self, metric: str, per: str) -> pd.DataFrame:
        if per not in SCOPES_OF[metric]:
            raise ValueError(f"{metric} is not measured per {per}")
        key, day = _KEY[per], self._in_day("event_timestamp")
        b = self._bucket("event_timestamp")
        if metric == "taps":
            sql = f"SELECT {key} k, {b} b, count(*) v FROM transactions WHERE {day} GROUP BY ALL"
        elif metric == "duplicates":
            sql = f"""SELECT {key} k, {b} b, count(*) v FROM (
                SELECT *, lag(event_timestamp) OVER (PARTITION BY token_id, device_id
                    ORDER BY event_timestamp, transaction_id) AS prev
                FROM transactions WHERE {day} AND amount_fen > 0)
                WHERE date_diff('second', prev, event_timestamp) <= 5 GROUP BY ALL"""
        elif metric == "qr_share":
            sql = f"""SELECT {key} k, {b} b,
                avg(CASE WHEN CAST(media AS VARCHAR) LIKE 'qr_%' THEN 1.0 ELSE 0.0 END) v
                FROM transactions WHERE {day} GROUP BY ALL"""
        elif metric == "upload_lag_min":
            up = self._bucket("uploaded_at")
            sql = f"""SELECT {key} k, {up} b,
                avg(date_diff('second', event_timestamp, uploaded_at)) / 60.0 v
                FROM transactions WHERE {self._in_day("uploaded_at")} GROUP BY ALL"""
        elif metric == "refused":
            sql = f"SELECT {key} k, {b} b, count(*) v FROM refused_taps WHERE {day} GROUP BY ALL"
        elif metric == "outlet_wait_min":
            # By when the wait ended (served, or sent away at closing): what a screen can know.
            ended = "coalesce(service_started_at, arrived_at + to_seconds(wait_s))"
            sql = f"""SELECT {key} k, {self._bucket(ended)} b, avg(wait_s) / 60.0 v
                FROM outlet_visits WHERE {self._in_day(ended)} GROUP BY ALL"""
        elif metric == "node_down":
            return self._node_down()
        elif metric == "deferred_fen":
            sql = f"""SELECT {key} k, {self.cutoff_hour * 60 // BUCKET_MIN} b, sum(amount_fen) v
                FROM deposit_events WHERE CAST(event AS VARCHAR) = 'settlement_deferred'
                AND service_date = DATE '{self.day}' GROUP BY ALL"""
        elif metric == "node_batches":
            yesterday = self.day - dt.timedelta(days=1)
            sql = f"""SELECT {key} k, {self.cutoff_hour * 60 // BUCKET_MIN} b, count(*) v
                FROM clearing_batches WHERE NOT transit AND service_date = DATE '{yesterday}'
                GROUP BY ALL"""
            keys = f"SELECT DISTINCT {key} k FROM clearing_batches WHERE NOT transit"
            return self._dense(sql, keys, counts=True, only_bucket=True)
        else:  # pending_uploads: made by the bucket's end minus uploaded by then
            up = self._bucket("uploaded_at")
            sql = f"""SELECT k, b, sum(made) OVER w - sum(up) OVER w AS v FROM (
                SELECT k, b, sum(made) made, sum(up) up FROM (
                    SELECT {key} k, {b} b, 1 made, 0 up FROM transactions WHERE {day}
                    UNION ALL
                    SELECT {key} k, {up} b, 0, 1 FROM transactions
                    WHERE {day} AND {self._in_day("uploaded_at")}) GROUP BY ALL)
                WINDOW w AS (PARTITION BY k ORDER BY b)"""
            frame = self._dense(sql, None, counts=False)
            return frame.ffill(axis=1).fillna(0)  # a count held until it changes
        return self._dense(sql, None, counts=metric in COUNTS)

    def _node_down(self) -> pd.DataFrame:
        """1 in the buckets a clearing node spends down (of the outages played), else 0."""
        nodes = sorted(
            r[0]
            for r in self.con.sql(
                "SELECT DISTINCT CAST(node_id AS VARCHAR) FROM clearing_batches"
            ).fetchall()
        )
        frame = pd.DataFrame(0.0, index=nodes, columns=range(BUCKETS))
        midnight = dt.datetime.combine(self.day, dt.time(0))
        for inc in self._incidents:
            if inc["kind"] != "clearing_node_outage" or inc["target"] not in frame.index:
                continue
            start = (dt.datetime.fromisoformat(inc["start"]) - midnight).total_seconds() / 60
            end = start + inc["duration_min"]
            first, last = max(0, int(start // BUCKET_MIN)), min(BUCKETS, -int(-end // BUCKET_MIN))
            if first < last:
                frame.loc[inc["target"], first : last - 1] = 1.0
        return frame

    def _dense(self, sql: str, keys_sql, counts: bool, only_bucket: bool = False) -> pd.DataFrame:
        rows = self.con.sql(sql).df()
        keys = (
            sorted(set(rows["k"]))
            if keys_sql is None
            else sorted(r[0] for r in self.con.sql(keys_sql).fetchall())
        )
        values = np.full((len(keys), BUCKETS), np.nan)
        rows = rows[(rows["b"] >= 0) & (rows["b"] < BUCKETS)]
        if len(rows):
            index = pd.Index(keys).get_indexer(rows["k"])
            values[index, rows["b"].to_numpy()] = rows["v"].to_numpy(dtype=float)
        frame = pd.DataFrame(values, index=keys, columns=range(BUCKETS))
        if counts and not only_bucket:
            frame = frame.fillna(0.0)
        elif counts and only_bucket:
            b = self.cutoff_hour * 60 // BUCKET_MIN
            frame[b] = frame[b].fillna(0.0)
        return frame

    def second_charges(self, cards: list[int], until: dt.time) -> list[int]:
        """The records (transaction ids) of the second charges the look-up shows for ``cards``
        (masked tokens) up to ``until``: a card charged again on a device within 5 s."""
        if not cards:
            return []
        rows = self.con.sql(
            f"""SELECT transaction_id FROM (
                SELECT *, lag(event_timestamp) OVER (PARTITION BY token_id, device_id
                    ORDER BY event_timestamp, transaction_id) AS prev
                FROM transactions WHERE {self._in_day("event_timestamp")} AND amount_fen > 0
                  AND list_contains(?, token_id))
            WHERE date_diff('second', prev, event_timestamp) <= 5
              AND event_timestamp <= TIMESTAMP '{self.day} {until}'
            ORDER BY transaction_id""",
            params=[[int(c) for c in cards]],
        ).fetchall()
        return [int(r[0]) for r in rows]

    def charged_twice(self, device: int, since: dt.time, until: dt.time) -> list[int]:
        """Cards (masked tokens) charged twice within 5 s on ``device`` between two times of
        the day: the service desk's look-up."""
        rows = self.con.sql(
            f"""SELECT DISTINCT token_id FROM (
                SELECT *, lag(event_timestamp) OVER (PARTITION BY token_id, device_id
                    ORDER BY event_timestamp, transaction_id) AS prev
                FROM transactions WHERE {self._in_day("event_timestamp")} AND amount_fen > 0
                  AND device_id = ?)
            WHERE date_diff('second', prev, event_timestamp) <= 5
              AND event_timestamp >= TIMESTAMP '{self.day} {since}'
              AND event_timestamp <= TIMESTAMP '{self.day} {until}'
            ORDER BY token_id""",
            params=[int(device)],
        ).fetchall()
        return [int(r[0]) for r in rows]

    def close(self) -> None:
        self.con.close()


@dataclasses.dataclass(frozen=True)
class Alert:
    """An alert raised: by ``rule`` for ``key`` (a line, device... or ``all``) at ``minute``."""

    rule: str
    metric: str
    per: str
    key: str
    minute: int  # minutes after the drill day's midnight (the end of the bucket)
    value: float
    severity: str
    true: bool = False  # it points at an incident (set by ``classify``)
    incident: str | None = None


def with_usual_keys(today: RunView, metric: str, usual_keys, values: pd.DataFrame):
    """``values`` with a row for every key the usual day had: a reader silent all day is
    counted 0 (a "below" rule sees it), a share or a lag is not measured (NaN)."""
    missing = usual_keys.difference(values.index)
    if not len(missing):
        return values
    extra = pd.DataFrame(np.nan, index=missing, columns=values.columns)
    if metric in ONCE_A_DAY:
        extra[today.cutoff_hour * 60 // BUCKET_MIN] = 0.0
    elif metric in COUNTS:
        extra.loc[:, :] = 0.0
    return pd.concat([values, extra]).sort_index()


def raise_alerts(rules, today: RunView, usual: RunView) -> list[Alert]:
    """Every alert the rules raise over the day (module docstring), in time order."""
    alerts: list[Alert] = []
    for rule in rules:
        values = with_usual_keys(today, rule.metric, usual.series(rule.metric, rule.per).index,
                                  today.series(rule.metric, rule.per))  # fmt: skip
        normal = usual.series(rule.metric, rule.per).reindex(index=values.index)
        v = values.to_numpy()
        base = np.nan_to_num(normal.to_numpy(), nan=0.0)
        if rule.relative:
            v = v - base
        judged = ~np.isnan(v)
        if rule.min_usual > 0:
            judged &= base >= rule.min_usual
        with np.errstate(invalid="ignore"):
            meets = judged & ((v > rule.above) if rule.above is not None else (v < rule.below))
        need = rule.for_min // BUCKET_MIN
        for i, key in enumerate(values.index):
            run, previous = 0, -2
            for b in np.flatnonzero(meets[i]).tolist():
                run = run + 1 if b == previous + 1 else 1
                previous = b
                if run == need:
                    alerts.append(
                        Alert(rule.id, rule.metric, rule.per, str(key), (b + 1) * BUCKET_MIN,
                              float(v[i, b]), rule.severity)
                    )  # fmt: skip
    return sorted(alerts, key=lambda a: (a.minute, a.rule, a.key))


__all__ = ["BUCKETS", "BUCKET_MIN", "Alert", "RunView", "raise_alerts", "with_usual_keys"]
