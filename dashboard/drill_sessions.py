"""What the drill console and the trainer's view share (dashboard/views/drill.py,
dashboard/views/trainer.py): where sessions live, the shipped drills, the start form."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.state import ROOT, lang, pick, runs_root, tr
from drills.script import load_drill
from drills.session import DrillSession, sessions
from sim.yaml_config import ConfigError

DRILL_DIR = ROOT / "scenarios" / "drills"


def sessions_root():
    return runs_root() / "drills" / "sessions"


def readable_sessions() -> tuple[list[DrillSession], list[tuple[DrillSession, str]]]:
    """The sessions under the runs folder that can be shown, and those that cannot with what
    is wrong (``DrillSession.problem``): one broken session (its drill script edited into a
    bad state, its session.json cut short) must not stop the pages for everyone else."""
    good, broken = [], []
    for session in sessions(sessions_root()):
        problem = session.problem()
        if problem is None:
            good.append(session)
        else:
            broken.append((session, problem))
    return good, broken


def show_broken(broken: list[tuple[DrillSession, str]]) -> None:
    """Each session that cannot be shown, with its problem."""
    for session, problem in broken:
        st.warning(tr("drill.session_broken", id=session.folder.name, error=problem))


def drill_files():
    """The shipped drills that load; one that does not (a trainer still writing it) is shown
    with its problem, not offered."""
    good = []
    for path in sorted(DRILL_DIR.glob("*.yaml")):
        try:
            load_drill(path)
        except ConfigError as exc:
            st.warning(tr("drill.bad_drill_file", error=str(exc).splitlines()[0]))
            continue
        good.append(path)
    return good


def drill_label(path) -> str:
    drill = load_drill(path)
    return f"{drill.title(lang())} · {tr('drill.difficulty', n=drill.difficulty)}"


def actions_frame(actions) -> pd.DataFrame:
    """A trainee's actions as a table: the time, what was done (in the page's language) and
    what it named; the charges a refund resolved to are counted, not listed."""
    rows = []
    for action in actions:
        row = action.model_dump(mode="json", exclude_defaults=True)
        row["at"] = row["at"][:5]
        row["kind"] = tr(f"drill.kind.{action.kind}")
        if "records" in row:
            row["records"] = len(row["records"])
        rows.append(row)
    return pd.DataFrame(rows)


def change_session(change, busy: str, failed: str):
    """``change()`` (an action or an injection: the day is replayed) under a spinner saying
    ``busy``; a bad input is shown as ``failed`` (with its first line) and gives None."""
    from sim import api

    try:
        with st.spinner(tr(busy)):
            return change()
    except (ValueError, api.BadInput) as exc:
        st.error(tr(failed, error=str(exc).splitlines()[0]))
        return None


def start_section(trainee_label: str = "drill.your_name") -> DrillSession | None:
    """A form starting a session (also the trainer's); returns it when one was started."""
    files = drill_files()
    with st.form("drill_start"):
        path = pick(tr("drill.choose_drill"), files, "drill_file", format_func=drill_label)
        name = st.text_input(tr(trainee_label), key="drill_trainee_name")
        go_ = st.form_submit_button(tr("drill.start_button"), type="primary")
    if go_ and name.strip():
        return change_session(
            lambda: DrillSession.start(path, name.strip(), root=sessions_root()),
            "drill.starting",
            "drill.bad_action",
        )
    return None
