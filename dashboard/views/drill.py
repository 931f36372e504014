"""The trainee's console of an incident drill (drills/session.py).

Start a drill (or carry on with one in progress), then, while the simulated day plays on the
clock: the monitoring (the drill's metrics, today against yesterday, up to the clock), the
alerts raised so far (acknowledge one), a card look-up as the service desk sees it (a masked
card's taps today), actions that change the rest of the day (report or suspend devices, order
refunds, name the cause, explain it to a customer), and at the end the debrief. The live parts
refresh every two seconds (a fragment); the trainer's view sees the same session folder.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components

from dashboard import i18n
from dashboard.drill_names import DrillNames, drill_names
from dashboard.drill_sessions import (
    actions_frame,
    change_session,
    readable_sessions,
    session_label,
    sessions_root,
    show_broken,
    start_section,
)
from dashboard.state import code, lang, pick, tr
from drills.monitor import BUCKET_MIN, SCOPES_OF
from drills.session import UNREADABLE, DrillSession, sessions

SPEEDS = (30, 60, 120, 300, 600)
CAUSES = (
    "duplicate_wave", "comm_outage", "validator_outage", "qr_platform_outage", "line_outage",
    "renewal_wave", "outlet_closure", "clearing_node_outage", "station_outage", "fare_change",
    "deposit_call_unpaid",
)  # fmt: skip


def choose_session() -> DrillSession | None:
    """The session this browser plays: one just started, or one picked from those running."""
    st.subheader(tr("drill.start"))
    started = start_section()
    if started is not None:
        st.session_state["drill_session"] = str(started.folder)
    current = st.session_state.get("drill_session")
    readable, broken = readable_sessions()
    show_broken(broken)
    # Those running, and this browser's own even once ended (its debrief is on this page).
    running = [s for s in readable if not s.state()["ended"] or str(s.folder) == current]
    if running:
        st.caption(tr("drill.or_join"))
        labels = {str(s.folder): session_label(s) for s in running}
        folders = list(labels)
        index = folders.index(current) if current in folders else 0
        picked = st.selectbox(
            tr("drill.session"),
            folders,
            index=index,
            key="drill_session_pick",
            format_func=labels.__getitem__,
        )
        st.session_state["drill_session"] = picked
    folder = st.session_state.get("drill_session")
    if not folder:
        return None
    if folder not in {str(s.folder) for s in readable}:
        # This browser's session cannot be read any more (its problem is listed above) or is
        # gone: nothing of it to show, and the page goes on.
        if not any(str(s.folder) == folder for s, _ in broken):
            st.session_state.pop("drill_session", None)
        return None
    return DrillSession(folder)


def header(session: DrillSession) -> None:
    drill = session.drill
    st.subheader(drill.title(lang()))
    st.caption(
        f"{tr('drill.role.' + drill.role)} · {tr('drill.difficulty', n=drill.difficulty)} · "
        f"{drill.day}"
    )
    st.info(drill.brief(lang()))
    with st.expander(tr("drill.tasks")):
        for task in drill.tasks:
            words = (
                task.text(lang()) if task.text else tr(f"drill.task.{task.kind}", n=task.within_min)
            )
            st.markdown(f"- {words} ({tr('drill.points', n=task.points)})")
    state = session.state()
    left, right = st.columns(2)
    with left:
        speed = st.select_slider(
            tr("drill.speed"), SPEEDS, value=min(SPEEDS, key=lambda s: abs(s - state["speed"]))
        )
        if speed != state["speed"]:
            session.set_speed(speed)
    with right:
        if state["paused"]:
            if st.button(tr("drill.resume"), key="drill_resume"):
                session.resume()
        elif st.button(tr("drill.pause"), key="drill_pause"):
            session.pause()


@st.fragment(run_every=2)
def live(session: DrillSession) -> None:
    """The clock, the monitoring and the alerts, refreshed every two seconds (a session that
    stops reading meanwhile, its drill script edited say, is a message, not a traceback)."""
    problem = session.problem()
    if problem is None:
        try:
            _live(session)
            return
        except UNREADABLE as exc:  # its files edited between the check and their reading
            problem = str(exc)
    st.error(tr("drill.session_broken", id=session.folder.name, error=problem))


def _live(session: DrillSession) -> None:
    state = session.state()
    status = tr("drill.ended") if state["ended"] else tr("drill.paused") if state["paused"] else ""
    st.metric(tr("drill.clock"), session.clock(), help=status or None)
    names = drill_names(session, lang())
    st.markdown(f"#### {tr('drill.monitoring')}")
    metrics = sorted({r.metric for r in session.drill.alert_rules} | {"taps"})
    columns = st.columns(min(3, len(metrics)))
    for i, metric in enumerate(metrics):
        per = "node" if metric in ("node_batches", "node_down") else "all"
        today, usual = session.series_so_far(metric, per)
        with columns[i % len(columns)]:
            st.plotly_chart(_chart(metric, today.sum(axis=0), usual.sum(axis=0)), key=f"m_{metric}")
    where_section(session, names)
    alerts_table(session, names)
    if not state["ended"]:
        acknowledge_section(session)  # here: the alerts to choose from change with the clock


#: Metrics that can be looked at per line, device, outlet, node or issuer.
WHERE_METRICS = tuple(m for m, scopes in SCOPES_OF.items() if set(scopes) - {"all"})
LAST_HOUR = 60 // BUCKET_MIN


def where_section(session: DrillSession, names: DrillNames) -> None:
    """Where it happens: a metric per line, device, outlet, node or issuer (by name, with the
    id an action takes); the ten that moved most from yesterday over the last hour, and one of
    them over the day so far."""
    st.markdown(f"#### {tr('drill.where')}")
    left, right = st.columns(2)
    # The drill's own alert rules first: what its monitoring watches, and where.
    rules = [r for r in session.drill.alert_rules if r.metric in WHERE_METRICS]
    first = list(dict.fromkeys(r.metric for r in rules))
    with left:
        metric = pick(
            tr("drill.where_metric"), [*first, *(m for m in WHERE_METRICS if m not in first)],
            "drill_where_metric", format_func=lambda m: tr(f"drill.metric.{m}"),
        )  # fmt: skip
    scopes = [s for s in SCOPES_OF[metric] if s != "all"]
    watched = [r.per for r in rules if r.metric == metric and r.per in scopes]
    with right:
        per = pick(
            tr("drill.where_per"), [*watched[:1], *(s for s in scopes if s not in watched[:1])],
            "drill_where_per", format_func=lambda s: tr(f"drill.per.{s}"),
        )  # fmt: skip
    today, usual = session.series_so_far(metric, per)
    if today.empty or today.shape[1] == 0:
        st.caption(tr("drill.where_nothing"))
        return
    usual = usual.reindex(index=today.index)
    now = today.iloc[:, -LAST_HOUR:].mean(axis=1)
    before = usual.iloc[:, -LAST_HOUR:].mean(axis=1).fillna(0.0)
    moved = (now - before).abs().sort_values(ascending=False, kind="stable").index[:10]
    table = pd.DataFrame(
        {
            tr(f"drill.per.{per}"): [names.label(per, k) for k in moved],
            tr("drill.where_now"): now[moved].round(2).to_numpy(),
            tr("drill.where_usual"): before[moved].round(2).to_numpy(),
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
    key = pick(
        tr("drill.where_key"), [str(k) for k in moved], "drill_where_key",
        format_func=lambda k: names.label(per, k),
    )  # fmt: skip
    row = next(k for k in moved if str(k) == key)
    figure = _chart(metric, today.loc[row], usual.loc[row].fillna(0.0))
    figure.update_layout(title=f"{tr(f'drill.metric.{metric}')} · {names.label(per, key)}")
    st.plotly_chart(figure, key="m_where")


def _chart(metric: str, today: pd.Series, usual: pd.Series) -> go.Figure:
    minutes = [f"{(5 * b) // 60:02d}:{(5 * b) % 60:02d}" for b in today.index]
    figure = go.Figure()
    figure.add_scatter(x=minutes, y=usual.to_numpy(), name=tr("drill.usual"), line={"dash": "dot"})
    figure.add_scatter(x=minutes, y=today.to_numpy(), name=tr("drill.today"))
    figure.update_layout(
        title=tr(f"drill.metric.{metric}"), height=260, margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h"},
    )  # fmt: skip
    return figure


def alerts_table(session: DrillSession, names: DrillNames) -> None:
    """The alerts raised so far, the last first: where each is (by name), whether it was
    acknowledged."""
    st.markdown(f"#### {tr('drill.alerts')}")
    alerts = session.alerts_so_far()
    if not alerts:
        st.caption(tr("drill.no_alerts"))
        return
    acked = {a.alert for a in session.actions() if a.kind == "acknowledge"}
    rules = {r.id: r for r in session.drill.alert_rules}
    frame = pd.DataFrame(
        [
            {
                tr("drill.col.time"): f"{a.minute // 60:02d}:{a.minute % 60:02d}",
                tr("drill.col.alert"): rules[a.rule].text(lang()),
                tr("drill.col.where"): names.label(a.per, a.key),
                tr("drill.col.severity"): tr(f"drill.severity.{a.severity}"),
                tr("drill.col.acknowledged"): "✓" if a.rule in acked else "",
            }
            for a in reversed(alerts)
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")
    if acked:
        names = ", ".join(rules[r].text(lang()) for r in sorted(acked) if r in rules)
        st.caption(f"{tr('drill.col.acknowledged')}: {names}")


def acknowledge_section(session: DrillSession) -> None:
    rules = {r.id: r for r in session.drill.alert_rules}
    raised = sorted({a.rule for a in session.alerts_so_far()})
    if not raised:
        return
    rule = pick(
        tr("drill.col.alert"), raised, "drill_ack", format_func=lambda r: rules[r].text(lang())
    )
    if st.button(tr("drill.acknowledge"), key="drill_ack_button"):
        done = change_session(
            lambda: session.act({"kind": "acknowledge", "alert": rule}),
            "drill.acting",
            "drill.bad_action",
        )
        if done is not None:
            st.rerun()  # the table above shows it acknowledged


def lookup_section(session: DrillSession) -> None:
    st.markdown(f"#### {tr('drill.lookup')}")
    text = st.text_input(tr("drill.token"), key="drill_token").strip()
    if not text:
        return
    try:
        token = int(text)
    except ValueError:
        st.error(tr("drill.token_bad", text=text))
        return
    taps = session.card_taps(token)
    if taps.empty:
        st.caption(tr("drill.no_taps"))
    else:
        table = lookup_table(taps, drill_names(session, lang()))
        st.dataframe(table, hide_index=True, width="stretch")


def lookup_table(taps: pd.DataFrame, names: DrillNames) -> pd.DataFrame:
    """The desk's look-up in the page's language: time of day, line and device by name (with
    the id a refund of double charges on the device takes), medium in words, what each tap
    took and what it left on the card in yuan (a balance not known while the day is being
    played again is shown as –)."""
    lg = lang()
    return pd.DataFrame(
        {
            tr("drill.lookup_col.time"): [i18n.time_of_day(t, lg) for t in taps["event_timestamp"]],
            tr("drill.lookup_col.line"): [names.label("line", x) for x in taps["line"]],
            tr("drill.lookup_col.device"): [names.label("device", x) for x in taps["device_id"]],
            tr("drill.lookup_col.medium"): [code("media", m) for m in taps["media"]],
            tr("drill.lookup_col.paid"): [i18n.yuan(int(f), lg) for f in taps["amount_fen"]],
            tr("drill.lookup_col.balance"): [
                i18n.yuan(None if pd.isna(b) else int(b), lg) for b in taps["balance_after_fen"]
            ],
        }
    )


def _numbers(text: str) -> list[int] | None:
    """Whole numbers >= 0 separated by commas; None if the text is anything else."""
    try:
        numbers = [int(x) for x in text.replace("，", ",").split(",") if x.strip()]
    except ValueError:
        return None
    return numbers if all(n >= 0 for n in numbers) else None


def action_section(session: DrillSession) -> None:
    st.markdown(f"#### {tr('drill.actions')}")
    kinds = (
        "mark_faulty", "suspend_device", "refund_cards", "switch_offline", "announce_free_rides",
        "extend_outlet_hours", "restore_node", "chase_deposit", "identify", "explain",
    )  # fmt: skip
    kind = pick(
        tr("drill.action_kind"), kinds, "drill_kind", format_func=lambda k: tr(f"drill.kind.{k}")
    )
    with st.form("drill_action"):
        action: dict = {"kind": kind}
        if kind in ("mark_faulty", "suspend_device"):
            text = st.text_input(tr("drill.devices"))
            field = "devices"
        elif kind == "refund_cards":
            text = st.text_input(tr("drill.cards"))
            field = "cards"
        elif kind in ("switch_offline", "announce_free_rides"):
            text = st.text_input(tr("drill.lines"))
            field = "lines"
        elif kind in ("identify", "restore_node", "chase_deposit"):
            text = st.text_input(tr("drill.target"))
            field = "target"
        elif kind == "extend_outlet_hours":
            text = st.text_input(tr("drill.outlet"))
            action["until"] = st.time_input(tr("drill.until"), value=dt.time(20, 0))
            field = "target"
        else:
            text = pick(
                tr("drill.cause"),
                CAUSES,
                "drill_cause",
                format_func=lambda c: tr(f"drill.cause.{c}"),
            )
            field = "target"
        submitted = st.form_submit_button(tr("drill.do"), type="primary")
    if not submitted:
        return
    if field in ("devices", "cards"):
        numbers = _numbers(text)
        if not numbers:
            st.error(tr("drill.numbers_bad", text=text))
            return
        action[field] = numbers
    elif field == "lines":
        action[field] = [x.strip() for x in text.replace("，", ",").split(",") if x.strip()]
    else:
        action[field] = text.strip()
    stamped = change_session(lambda: session.act(action), "drill.acting", "drill.bad_action")
    if stamped is None:
        return
    st.success(tr("drill.done", time=f"{stamped.at:%H:%M}", kind=tr(f"drill.kind.{kind}")))


def actions_list(session: DrillSession) -> None:
    """The trainee's actions so far, in words."""
    actions = session.actions()
    if actions:
        st.markdown(f"#### {tr('drill.your_actions')}")
        names = drill_names(session, lang())
        st.dataframe(
            actions_frame(actions, {r.id: r for r in session.drill.alert_rules}, names),
            hide_index=True,
            width="stretch",
        )


def end_section(session: DrillSession) -> None:
    debrief = session.debrief()
    if debrief is None and st.button(tr("drill.end"), key="drill_end"):
        change_session(lambda: session.end(lang=lang()), "drill.ending", "drill.bad_action")
        debrief = session.debrief()
    if debrief is not None:
        from drills.report import debrief_html

        # Named as the pages name them (the debrief.html the session wrote keeps the ids).
        page = debrief_html(debrief, lang(), drill_names(session, lang()))
        st.markdown(f"### {tr('drill.debrief')}")
        st.download_button(
            tr("drill.download"), page, file_name=f"{debrief['drill']}-debrief.html",
            mime="text/html",
        )  # fmt: skip
        components.html(page, height=900, scrolling=True)


def main() -> None:
    st.header(tr("drill.title"))
    st.caption(tr("drill.intro"))
    session = choose_session()
    if session is None:
        if not sessions(sessions_root()):
            st.caption(tr("drill.no_sessions"))
        return
    header(session)
    live(session)
    if not session.state()["ended"]:
        lookup_section(session)
        action_section(session)
    actions_list(session)
    end_section(session)


main()
