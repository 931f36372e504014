"""The trainer's view of incident drills (drills/session.py).

Start a drill for a trainee, see every session (clock, actions, status, score), watch one
session's actions and incidents as they happen (refreshed every two seconds; devices, lines,
outlets, nodes and issuers by name, each with its id), inject an extra incident into it at its
clock's time (the day is replayed from there, the same random numbers), and compare the
debriefs of several trainees of the same drill.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from dashboard import i18n
from dashboard.drill_names import DrillNames, drill_names
from dashboard.drill_sessions import (
    actions_frame,
    change_session,
    delta_text,
    drill_files,
    drill_label,
    readable_sessions,
    session_label,
    show_broken,
    start_section,
)
from dashboard.state import lang, pick, tr
from drills.report import MEASURES
from drills.session import DrillSession, read_drill

INJECTABLE = (
    "duplicate_wave", "validator_outage", "comm_outage", "qr_platform_outage", "line_outage",
    "outlet_closure", "renewal_wave", "clearing_node_outage", "deposit_call_unpaid",
)  # fmt: skip


def _status(state: dict) -> str:
    if state["ended"]:
        return tr("drill.ended")
    return tr("drill.paused") if state["paused"] else tr("trainer.status.running")


def sessions_table() -> list[DrillSession]:
    """Every session, one row each; one that cannot be read is listed as such, with its
    problem under the table. Returns the sessions that can be shown."""
    st.subheader(tr("trainer.sessions"))
    found, broken = readable_sessions()
    if not found and not broken:
        st.caption(tr("drill.no_sessions"))
        return []
    rows = []
    for s in found:
        state, debrief = s.state(), s.debrief()
        rows.append(
            {
                tr("trainer.col.id"): state["id"],
                tr("trainer.col.drill"): s.drill.title(lang()),
                tr("trainer.col.trainee"): state["trainee"],
                tr("trainer.col.clock"): s.clock(),
                tr("trainer.col.actions"): str(len(s.actions())),
                tr("trainer.col.status"): _status(state),
                tr("trainer.col.score"): _score(debrief),
            }
        )
    for s, _ in broken:
        rows.append(
            {
                tr("trainer.col.id"): s.folder.name,
                **{tr(f"trainer.col.{c}"): "" for c in ("drill", "trainee", "clock", "actions")},
                tr("trainer.col.status"): tr("trainer.status.unreadable"),
                tr("trainer.col.score"): "",
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    show_broken(broken)
    return found


def _score(debrief: dict | None) -> str:
    score = None if debrief is None else debrief.get("score")
    return f"{score:g}" if isinstance(score, int | float) else ""


@st.fragment(run_every=2)
def live_actions(session: DrillSession) -> None:
    """The watched session's clock, its incidents (the script's and those injected, from any
    trainer's browser) and the trainee's actions, refreshed every two seconds."""
    problem = session.problem()  # it may stop reading while it is watched
    if problem is not None:
        st.error(tr("drill.session_broken", id=session.folder.name, error=problem))
        return
    st.metric(tr("drill.clock"), session.clock(), help=_status(session.state()))
    names = drill_names(session, lang())
    st.markdown(f"#### {tr('trainer.incidents')}")
    st.dataframe(incidents_frame(session, names), hide_index=True, width="stretch")
    st.markdown(f"#### {tr('trainer.live_actions')}")
    actions = session.actions()
    if not actions:
        st.caption(tr("trainer.no_actions"))
        return
    st.dataframe(
        actions_frame(actions, {r.id: r for r in session.drill.alert_rules}, names),
        hide_index=True,
        width="stretch",
    )


def incident_words(kind: str, target: str | None, names: DrillNames) -> str:
    """An incident in words: what happens and where (its target by name, with its id)."""
    key = f"drill.cause.{kind}"
    what = tr(key) if i18n.has(key) else kind
    where = names.target(kind, target)
    return f"{what}: {where}" if where else what


def incidents_frame(session: DrillSession, names: DrillNames) -> pd.DataFrame:
    """The session's incidents, the script's then the trainer's, as a table in the page's
    language: from and until (a day's date only when not the drill's), what and where."""
    day = session.drill.day

    def when(at: dt.datetime) -> str:
        return f"{at:%H:%M}" if at.date() == day else f"{at:%m-%d %H:%M}"

    def end(inc) -> dt.datetime:
        return inc.start + dt.timedelta(minutes=inc.duration_min)

    rows = [
        {
            tr("trainer.incident_col.start"): when(inc.start),
            tr("trainer.incident_col.end"): when(end(inc)),
            tr("trainer.incident_col.kind"): incident_words(inc.kind, None, names),
            tr("trainer.incident_col.target"): names.target(inc.kind, inc.target),
            tr("trainer.incident_col.source"): tr(f"trainer.source.{source}"),
        }
        for source, incidents in (
            ("script", session.drill.incidents),
            ("injected", session.injected()),
        )
        for inc in incidents
    ]
    return pd.DataFrame(rows)


def inject_section(session: DrillSession) -> None:
    st.markdown(f"#### {tr('trainer.inject')}")
    with st.form("trainer_inject"):
        kind = pick(
            tr("trainer.kind"),
            INJECTABLE,
            "trainer_kind",
            format_func=lambda k: tr(f"drill.cause.{k}"),
        )
        target = st.text_input(tr("trainer.target"))
        minutes = st.number_input(tr("trainer.duration"), 5, 1440, 120, step=5)
        share = st.number_input(tr("trainer.share"), 0.0, 1.0, 0.5, step=0.05)
        submitted = st.form_submit_button(tr("trainer.inject_button"), type="primary")
    if not submitted:
        return
    incident = {"kind": kind, "target": target.strip() or None, "duration_min": int(minutes)}
    if kind == "duplicate_wave":
        incident["duplicate_share"] = float(share)
    if kind == "qr_platform_outage":  # riders with no card are refused: the desk sees them
        incident["no_card_share"] = float(share)
    if kind == "renewal_wave":
        incident["extra_visits_per_hour"] = 20.0
    made = change_session(
        lambda: session.inject(incident), "trainer.injecting", "trainer.inject_bad"
    )
    if made is None:
        return
    what = incident_words(made.kind, made.target, drill_names(session, lang()))
    st.success(tr("trainer.injected", id=made.id, what=what, time=f"{made.start:%H:%M}"))


def compare_section(found: list[DrillSession]) -> None:
    st.subheader(tr("trainer.compare"))
    files = drill_files()
    path = pick(tr("drill.choose_drill"), files, "trainer_compare", format_func=drill_label)
    drill_id = read_drill(path).id
    debriefs = [
        (s, d) for s in found if isinstance(d := s.debrief(), dict) and d.get("drill") == drill_id
    ]
    # The measures some trainee's actions moved (against doing nothing).
    moved = [m for m in MEASURES if any(_differences(d).get(m) for _, d in debriefs)]
    rows = []
    for s, debrief in debriefs:
        try:
            timing = next(iter(debrief["detection"].values()))
            diff = debrief["money"]["difference"]
            rows.append(
                {
                    tr("trainer.col.trainee"): debrief["trainee"],
                    tr("trainer.col.id"): s.state()["id"],
                    tr("trainer.col.score"): debrief["score"],
                    tr("trainer.col.detect"): timing["minutes_to_detect"],
                    tr("trainer.col.act"): timing["minutes_to_act"],
                    **{
                        tr("trainer.delta", measure=tr(f"trainer.measure.{m}")): delta_text(
                            m, diff[m], lang()
                        )
                        for m in moved
                    },
                }
            )
        except (KeyError, TypeError, AttributeError, StopIteration) as exc:
            # a debrief of another version, or edited: say which, compare the others
            st.warning(tr("trainer.bad_debrief", id=s.folder.name, error=repr(exc)))
    if not rows:
        st.caption(tr("trainer.no_debriefs"))
        return
    frame = pd.DataFrame(rows).sort_values(tr("trainer.col.score"), ascending=False)
    frame = frame.reset_index(drop=True)
    st.dataframe(frame, hide_index=True, width="stretch")


def _differences(debrief: dict) -> dict:
    money = debrief.get("money")
    difference = money.get("difference") if isinstance(money, dict) else None
    return difference if isinstance(difference, dict) else {}


def main() -> None:
    st.header(tr("trainer.title"))
    st.caption(tr("trainer.intro"))
    st.subheader(tr("trainer.start"))
    start_section("trainer.trainee")
    found = sessions_table()
    if found:
        ids = {str(s.folder): session_label(s) for s in found}
        picked = st.selectbox(
            tr("trainer.watch"),
            list(ids),
            format_func=ids.__getitem__,
            key="trainer_watch",  # the choice stays when a session's clock moves
        )
        session = DrillSession(picked)
        live_actions(session)
        if not session.state()["ended"]:
            inject_section(session)
    compare_section(found)


main()
