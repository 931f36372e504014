"""A drill's debrief: what happened, what the trainee did, how well, and what it was worth.

Made from three runs of the drill's day (drills/runner.py): the *usual* day (no incidents: the
monitoring's baseline), the day *as scripted* with nothing done, and the day *with the
trainee's actions* (the same random numbers: the difference is the actions'). It holds:

- the ground truth of each incident, from the records it touched (``incident_id``): devices,
  lines, cards, records and fen;
- the timeline: incidents, alerts (true or noise), actions;
- per incident, the time to detect (the first action about it: acknowledging one of its true
  alerts, naming it, or acting on what it touched) and the time to act (the first action that
  changes it or refunds its cards);
- each task's score (drills/script.py) and the total;
- the money impact of the actions: the day with them against the day without them (what
  riders were charged twice, refused or kept waiting for; fen-days of money waiting for its
  clearing or for a deferred settlement).

drills/report.py renders it as one page in Chinese or English.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import duckdb

from drills.actions import DEVICE_KINDS, ENDS, ON_LINES
from drills.monitor import Alert
from sim.output import define_views
from sim.schema import TABLES


def ground_truth(run_dir: Path, day: dt.date, incidents) -> dict[str, dict]:
    """What each incident touched in a run (its records, outlet visits), by incident id."""
    con = duckdb.connect()
    define_views(con, Path(run_dir).resolve(), TABLES)
    out = {}
    for inc in incidents:
        rows = con.sql(
            """SELECT list(DISTINCT device_id), list(DISTINCT CAST(route_id AS VARCHAR)),
                      list(DISTINCT token_id) FILTER (WHERE amount_fen > 0),
                      count(*), coalesce(sum(amount_fen), 0)
               FROM transactions WHERE CAST(incident_id AS VARCHAR) = ?""",
            params=[inc.id],
        ).fetchall()[0]
        visits = con.sql(
            "SELECT count(*) FROM outlet_visits WHERE CAST(incident_id AS VARCHAR) = ?",
            params=[inc.id],
        ).fetchall()[0][0]
        devices = {int(d) for d in rows[0] or []}
        lines = set(rows[1] or [])
        faulty = devices  # a line's cut uplink: every device of it that held records back
        if inc.kind in DEVICE_KINDS and (inc.target or "").isdigit():
            devices.add(int(inc.target))  # a dead reader leaves no record of its own
            # One device is at fault; a dead metro gate's riders tap at the next gate, which
            # carries the incident's records (touched) but is not what to find.
            faulty = {int(inc.target)}
            lines |= {  # its line, from the days it worked
                r[0]
                for r in con.sql(
                    "SELECT DISTINCT CAST(route_id AS VARCHAR) FROM transactions "
                    "WHERE device_id = ?",
                    params=[int(inc.target)],
                ).fetchall()
            }
        if inc.kind == "deposit_call_unpaid":
            rows = (*rows[:3], *_deferred(con, inc))
        out[inc.id] = {
            "kind": inc.kind,
            "target": inc.target,
            "start": inc.start.isoformat(sep=" "),
            "end": (inc.start + dt.timedelta(minutes=inc.duration_min)).isoformat(sep=" "),
            "devices": sorted(devices),
            "faulty_devices": sorted(faulty),
            "lines": sorted(lines),
            "cards": sorted(int(c) for c in rows[2] or []),
            "records": int(rows[3]),
            "fen": int(rows[4]),
            "outlet_visits": int(visits),
        }
    con.close()
    return out


def _deferred(con, inc) -> tuple[int, int]:
    """What an unpaid deposit call held up: the settlements deferred while it lasted (their
    dates) and the money they paid late (every issuer's part: a settlement waits whole)."""
    end = inc.start + dt.timedelta(minutes=inc.duration_min)
    return con.sql(
        """WITH held AS (
               SELECT DISTINCT settle_date FROM deposit_events
               WHERE CAST(event AS VARCHAR) = 'settlement_deferred'
                 AND CAST(issuer_id AS VARCHAR) = ? AND service_date BETWEEN ? AND ?)
           SELECT (SELECT count(*) FROM held),
                  coalesce(sum(amount_fen), 0) FROM deposit_events
           WHERE CAST(event AS VARCHAR) = 'settlement_paid_late'
             AND settle_date IN (SELECT settle_date FROM held)""",
        params=[inc.target, inc.start.date(), end.date()],
    ).fetchall()[0]


def money(run_dir: Path, day: dt.date) -> dict[str, float]:
    """The drill day's figures that actions can change, from one run's files."""
    con = duckdb.connect()
    define_views(con, Path(run_dir).resolve(), TABLES)
    on_day = f"service_date = DATE '{day}'"
    row = con.sql(
        f"""SELECT
              coalesce(sum(amount_fen) FILTER (WHERE CAST(reject_reason AS VARCHAR)
                       = 'duplicate_deduction'), 0),
              coalesce(sum(amount_fen * date_diff('second', event_timestamp, uploaded_at))
                       / 3600.0, 0),
              coalesce(sum(amount_fen) FILTER (WHERE CAST(status AS VARCHAR) = 'cleared'), 0),
              count(*)
            FROM transactions WHERE {on_day}"""
    ).fetchall()[0]
    (wait, away) = con.sql(
        f"""SELECT coalesce(avg(wait_s) / 60.0, 0),
                   count(*) FILTER (WHERE CAST(outcome AS VARCHAR) = 'left_closed')
            FROM outlet_visits WHERE {on_day}"""
    ).fetchall()[0]
    refused = con.sql(f"SELECT count(*) FROM refused_taps WHERE {on_day}").fetchall()[0][0]
    # Second charges (a card charged again on a device within 5 s) the clearing let through,
    # less what the service desk had refunded.
    (kept,) = con.sql(
        f"""SELECT coalesce(sum(amount_fen), 0) FROM (
              SELECT *, lag(event_timestamp) OVER (PARTITION BY token_id, device_id
                  ORDER BY event_timestamp, transaction_id) AS prev
              FROM transactions WHERE {on_day} AND amount_fen > 0)
            WHERE date_diff('second', prev, event_timestamp) <= 5
              AND CAST(status AS VARCHAR) = 'cleared'"""
    ).fetchall()[0]
    (desk,) = con.sql(
        "SELECT coalesce(sum(amount_fen), 0) FROM ledger_entries WHERE memo = 'desk_refund'"
    ).fetchall()[0]
    # Over the whole run: a clearing delayed or a settlement deferred on the drill's day is
    # money of the days before it. Late: cleared on a later clearing day than the tap's.
    (late,) = con.sql(
        """SELECT coalesce(sum(t.amount_fen * date_diff('day', t.service_date, b.service_date)), 0)
           FROM transactions t JOIN clearing_batches b USING (clearing_batch_id)
           WHERE NOT b.transit AND b.service_date > t.service_date"""
    ).fetchall()[0]
    (deferred,) = con.sql(
        """SELECT coalesce(sum(amount_fen * date_diff('day', settle_date, service_date)), 0)
           FROM deposit_events WHERE CAST(event AS VARCHAR) = 'settlement_paid_late'"""
    ).fetchall()[0]
    con.close()
    return {
        "double_charges_unrefunded_fen": int(kept) - int(desk),
        "refused_taps": int(refused),
        "fare_fen_days_cleared_late": int(late),
        "settlement_fen_days_deferred": int(deferred),
        "duplicate_charges_fen": int(row[0]),
        "fen_hours_waiting_upload": round(float(row[1]), 1),
        "card_fares_cleared_fen": int(row[2]),
        "tap_records": int(row[3]),
        "outlet_mean_wait_min": round(float(wait), 2),
        "outlet_visitors_turned_away": int(away),
    }


def classify(alerts: list[Alert], truth: dict[str, dict], day: dt.date) -> list[Alert]:
    """Each alert marked true (and with its incident) when it points at what an incident
    touched while it lasted (or within the hour after); noise otherwise."""
    midnight = dt.datetime.combine(day, dt.time(0))
    out = []
    for alert in alerts:
        at = midnight + dt.timedelta(minutes=alert.minute)
        hit = None
        for inc_id, t in truth.items():
            start = dt.datetime.fromisoformat(t["start"])
            end = dt.datetime.fromisoformat(t["end"]) + dt.timedelta(hours=1)
            if not start <= at <= end:
                continue
            if _points_at(alert, t):
                hit = inc_id
                break
        out.append(dataclasses.replace(alert, true=hit is not None, incident=hit))
    return out


def _points_at(alert: Alert, t: dict) -> bool:
    if alert.per == "device":
        return int(alert.key) in t["devices"]
    if alert.per == "line":
        return alert.key in t["lines"]
    if alert.per == "node":
        # A node down holds what passes through it: the nodes after it see nothing either.
        return alert.key == t["target"] or t["kind"] == "clearing_node_outage"
    if alert.per in ("outlet", "issuer"):
        return alert.key == t["target"]
    return t["records"] > 0 or t["outlet_visits"] > 0  # "all": the incident is visible


def _f1(named: set, truth: set) -> tuple[float, dict]:
    found, wrong, missed = named & truth, named - truth, truth - named
    if not named or not truth:
        f1 = 0.0
    else:
        precision, recall = len(found) / len(named), len(found) / len(truth)
        f1 = 0.0 if not found else 2 * precision * recall / (precision + recall)
    return f1, {"found": sorted(found), "missed": sorted(missed), "wrongly_accused": sorted(wrong)}


def score_tasks(
    drill, trainee, truth: dict[str, dict], lived: dict[str, dict], closing: dict[str, int]
) -> list[dict]:
    """Each task's points (drills/script.py, module docstring): against ``truth`` (the day
    with nothing done), but refunds against ``lived`` (the cards charged in the trainee's
    day: an incident stopped early charges fewer cards). ``closing``: each outlet's usual
    closing time that day (seconds after midnight), which an extension must go beyond."""
    out = []
    for task in drill.tasks:
        t = truth[task.incident]
        inc = next(i for i in drill.incidents if i.id == task.incident)
        start = inc.start
        end = start + dt.timedelta(minutes=inc.duration_min)
        detail: dict = {}
        share = 0.0
        if task.kind == "find_devices":
            named = {d for a in trainee.actions if a.kind in ("mark_faulty", "suspend_device")
                     for d in a.devices}  # fmt: skip
            share, detail = _f1(named, set(t["faulty_devices"]))
        elif task.kind in ("find_node", "find_medium", "find_outlet", "find_issuer"):
            named = [a.target for a in trainee.actions if a.kind == "identify"]
            # Naming everything is not finding it: the points are shared among the names.
            distinct = {str(n).casefold() for n in named}
            right = str(inc.target).casefold() in distinct
            share = 1.0 / len(distinct) if right else 0.0
            detail = {"named": named, "answer": inc.target}
        elif task.kind == "refund_cards":
            named = {c for a in trainee.actions if a.kind == "refund_cards" for c in a.cards}
            share, detail = _f1(named, set(lived[task.incident]["cards"]))
        elif task.kind == "explain":
            given = _explanations(drill, trainee, task, inc)
            distinct = set(given)
            # As with naming: guessing every cause is not knowing it.
            share = 1.0 / len(distinct) if inc.kind in distinct else 0.0
            detail = {"given": given, "answer": inc.kind}
        elif task.kind == "stop_incident":
            when = _stopped_at(drill, trainee, inc, t, closing)
            if when is not None:
                late = (when - start).total_seconds() / 60 - task.within_min
                span = max(1.0, (end - start).total_seconds() / 60 - task.within_min)
                share = 1.0 if late <= 0 else max(0.0, 1.0 - late / span)
            detail = {"stopped_at": None if when is None else f"{when:%H:%M}"}
        out.append(
            {
                "task": task.id,
                "kind": task.kind,
                "incident": task.incident,
                "points": round(task.points * share, 1),
                "of": task.points,
                **detail,
            }
        )
    return out


def _explanations(drill, trainee, task, inc) -> list[str]:
    """The causes the trainee gave from the incident's start on, less the right answers to the
    drill's other explain tasks (a trainee explaining two incidents gives two causes)."""
    others = {
        i.kind
        for other in drill.tasks
        if other.kind == "explain" and other.incident != task.incident
        for i in drill.incidents
        if i.id == other.incident and i.kind != inc.kind
    }
    return [
        a.target
        for a in trainee.actions
        if a.kind == "explain"
        and dt.datetime.combine(drill.day, a.at) >= inc.start
        and a.target not in others
    ]


def _stopped_at(drill, trainee, inc, touched: dict, closing: dict[str, int]) -> dt.datetime | None:
    """When an action first ended (or cut off) the incident's effect (scored at the time of
    the action): a repair ordered for a device it touches (``touched``: its ground truth), a
    faulty reader suspended, offline acceptance or free rides on a line its riders use, the
    hours of the outlet a renewal wave fills extended beyond its usual closing, a node
    restored, a deposit chased."""
    for action in trainee.actions:
        at = dt.datetime.combine(drill.day, action.at)
        if at < inc.start:
            continue
        if action.kind == "extend_outlet_hours" and inc.kind == "renewal_wave":
            until_s = action.until.hour * 3600 + action.until.minute * 60
            if action.target == inc.target and until_s > closing.get(str(inc.target), 0):
                return at
            continue
        if ENDS.get(action.kind) == inc.kind and action.target == inc.target:
            return at
        if action.kind in ON_LINES and inc.kind == "qr_platform_outage":
            if set(action.lines) & set(touched["lines"]):
                return at  # its riders on those lines pay (offline) or ride free
            continue
        if action.kind == "mark_faulty" or (
            # Taking a reader out of service stops its double charges; a dead reader or a
            # cut uplink stays as it was.
            action.kind == "suspend_device" and inc.kind == "duplicate_wave"
        ):
            if inc.kind in DEVICE_KINDS and (inc.target or "").isdigit():
                if int(inc.target) in action.devices:
                    return at
            elif inc.kind in DEVICE_KINDS and set(action.devices) & set(touched["devices"]):
                return at  # a line's uplink: reported through one of its devices
    return None


def detection(drill, trainee, truth, alerts: list[Alert]) -> dict[str, dict]:
    """Per incident: minutes from its start to the trainee's first action about it (detect)
    and to the first action on it (act); None if never."""
    out = {}
    for inc in drill.incidents:
        t = truth[inc.id]
        detect = act = None
        for action in trainee.actions:
            at = dt.datetime.combine(drill.day, action.at)
            if at < inc.start:
                continue
            minutes = round((at - inc.start).total_seconds() / 60, 1)
            of_day = action.at.hour * 60 + action.at.minute
            raised = {
                a.rule for a in alerts if a.true and a.incident == inc.id and a.minute <= of_day
            }
            names = action.kind in ("identify", "explain", *ENDS) and action.target in (
                inc.target,
                inc.kind,
            )
            about = (
                (action.kind == "acknowledge" and action.alert in raised)
                or names
                or bool(set(action.devices) & set(t["devices"]))
                or bool(set(action.cards) & set(t["cards"]))
                or bool(set(action.lines) & set(t["lines"]))
            )
            if action.kind == "extend_outlet_hours" and action.target == inc.target:
                about = True
            acting = about and action.kind in (
                "mark_faulty",
                "suspend_device",
                "refund_cards",
                "extend_outlet_hours",
                *ENDS,
                *ON_LINES,
            )
            if about and detect is None:
                detect = minutes
            if acting and act is None:
                act = minutes
        out[inc.id] = {"minutes_to_detect": detect, "minutes_to_act": act}
    return out


__all__ = ["classify", "detection", "ground_truth", "money", "score_tasks"]
