"""What the drill console and the trainer's view share (dashboard/views/drill.py,
dashboard/views/trainer.py): where sessions live, the shipped drills, the start form, the
actions in words (with the names of what they name: dashboard/drill_names.py)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import i18n
from dashboard.drill_names import DrillNames
from dashboard.state import ROOT, lang, pick, runs_root, tr
from drills.report import ACTION_TARGET_SCOPES
from drills.session import DrillSession, read_drill, sessions
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
            read_drill(path)
        except ConfigError as exc:
            st.warning(tr("drill.bad_drill_file", error=str(exc).splitlines()[0]))
            continue
        good.append(path)
    return good


def drill_label(path) -> str:
    """A shipped drill as the start form offers it: its title and difficulty."""
    drill = read_drill(path)
    return f"{drill.title(lang())} · {tr('drill.difficulty', n=drill.difficulty)}"


def session_label(session: DrillSession) -> str:
    """A session as the pickers offer it: its drill's title and the trainee, its id beside
    (two sessions of one trainee differ by it)."""
    state = session.state()
    return tr(
        "drill.session_label",
        drill=session.drill.title(lang()),
        trainee=state["trainee"],
        id=state["id"],
    )


def actions_frame(actions, rules: dict | None = None, names: DrillNames | None = None):
    """A trainee's actions as a table in the page's language: the time, what was done and
    what it named, in words (``rules``: the drill's alert rules by id, to name an acknowledged
    alert by its text; ``names``: the drill's devices, lines, outlets, nodes and issuers by
    name, each with its id); the charges a refund resolved to are counted, not listed."""
    rows = [
        {
            tr("drill.action_col.time"): f"{action.at:%H:%M}",
            tr("drill.action_col.kind"): tr(f"drill.kind.{action.kind}"),
            tr("drill.action_col.what"): _action_what(action, rules or {}, names),
        }
        for action in actions
    ]
    columns = [tr(f"drill.action_col.{c}") for c in ("time", "kind", "what")]
    return pd.DataFrame(rows, columns=columns)


LISTED = 6  # ids shown of a long list (a refund of many cards); the count says how many


def _listed(values, shown=str) -> str:
    words = [shown(v) for v in values[:LISTED]]
    return tr("drill.list_sep").join(words + (["…"] if len(values) > LISTED else []))


def _action_what(action, rules: dict, names: DrillNames | None = None) -> str:
    """What an action named (devices, cards, lines, an alert, a cause, an outlet ...), each
    device, line, outlet, node or issuer by its name with its id (``names``; by its id alone
    without). Cards are masked tokens: they have no other name."""
    lg = lang()

    def named(per: str):
        return str if names is None else lambda key: names.label(per, key)

    parts = []
    if action.alert:
        rule = rules.get(action.alert)
        parts.append(rule.text(lg) if rule is not None else action.alert)
    if action.devices:
        parts.append(tr("drill.what.devices", devices=_listed(action.devices, named("device"))))
    if action.cards:
        parts.append(
            tr("drill.what.cards", n=i18n.count(len(action.cards), lg), cards=_listed(action.cards))
        )
    if action.duplicates_on is not None:
        on = action.duplicates_on
        device = named("device")(on.device)
        parts.append(tr("drill.what.duplicates_on", device=device, since=f"{on.since:%H:%M}"))
    if action.records:
        parts.append(tr("drill.what.records", n=i18n.count(len(action.records), lg)))
    if action.lines:
        parts.append(tr("drill.what.lines", lines=_listed(action.lines, named("line"))))
    if action.target:
        cause = f"drill.cause.{action.target}"
        scope = ACTION_TARGET_SCOPES.get(action.kind)
        if action.kind == "explain" and i18n.has(cause):
            parts.append(tr(cause))
        elif action.kind == "extend_outlet_hours" and action.until is not None:
            until, outlet = f"{action.until:%H:%M}", named("outlet")(action.target)
            parts.append(tr("drill.what.outlet_until", outlet=outlet, until=until))
        elif scope is not None:
            parts.append(named(scope)(action.target))
        elif names is not None:  # a cause named in the trainee's words: a node, an outlet ...
            parts.append(names.named(action.target))
        else:
            parts.append(action.target)
    return tr("drill.what.sep").join(parts)


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


def delta_text(measure: str, value: float, lg: str) -> str:
    """What a trainee's actions changed in ``measure`` against doing nothing, in words: money
    (fen) in yuan, fen-hours and fen-days as yuan-hours and yuan-days, minutes and counts as
    numbers; a rise signed +."""
    if measure.endswith("_fen"):
        text = i18n.yuan(round(value), lg, compact=True)
    elif "fen_" in measure:  # fen_hours_..., ..._fen_days_...: the unit is in the label
        text = i18n.count(round(value / 100, 1), lg)
    elif measure.endswith("_min"):
        text = i18n.count(round(float(value), 1), lg)
    else:
        text = i18n.count(round(value), lg)
    return f"+{text}" if value > 0 else text
