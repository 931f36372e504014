"""What every page shares: the language, the runs folder, the chosen run, and cached queries.

Queries go through ``query(run_dir, name, *args)``: ``st.cache_data`` keyed by the run folder,
the time its marker was written (a run replaced in place is read afresh) and the question, so
reopening a run or switching back to a chart costs nothing. The run itself is opened once per
folder (``st.cache_resource``): a DuckDB connection with views over its Parquet files.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import i18n, lines, places
from sim import api
from sim.run_dir import MARKER_FILE

ROOT = Path(__file__).resolve().parent.parent
FOLDER_NAME = re.compile(r"[\w.-]+")  # what a results folder typed in a form may be called
RUNS_ENV = "CARDTWIN_RUNS"  # the runs folder the dashboard starts with (default: runs/)


def lang() -> str:
    """The language chosen in the sidebar (Chinese until the user switches)."""
    return st.session_state.get("lang", i18n.DEFAULT_LANG)


def tr(key: str, **values: object) -> str:
    """``key`` from the catalogue in the chosen language."""
    return i18n.t(key, lang(), **values)


def code(kind: str, value: object) -> str:
    """A data code in words, in the chosen language."""
    return i18n.code_label(kind, value, lang())


def runs_root() -> Path:
    """The folder runs are written to and reopened from."""
    default = os.environ.get(RUNS_ENV, str(ROOT / "runs"))
    return Path(st.session_state.get("runs_root", default))


def current_run() -> Path | None:
    """The run the Explore and Trace pages show (chosen on the Run page)."""
    chosen = st.session_state.get("run_dir")
    return Path(chosen) if chosen else None


def stamp(run_dir: Path) -> float:
    """When the run in ``run_dir`` was finished (its marker's time): part of every cache key."""
    try:
        return (run_dir / MARKER_FILE).stat().st_mtime
    except OSError:
        return 0.0


def line_names(run_dir: Path) -> lines.RunNames:
    """The lines and devices of the run in ``run_dir`` named in the page's language
    (``lines.run_names``: each city's network built again from the run's settings, ~10 ms a
    city), once per run and language: ask for it only where a page names a line or a device."""
    return _line_names(str(run_dir), stamp(run_dir), lang())


@st.cache_data(max_entries=8, show_spinner=False)
def _line_names(run_dir: str, finished: float, lg: str) -> lines.RunNames:
    # ``finished`` keys the cache: a run made again in the same folder is named anew.
    meta = open_run(Path(run_dir)).meta
    return lines.run_names(meta, lg, places.english_names(meta))


@st.cache_resource(max_entries=8, show_spinner=False)
def _open(run_dir: str, finished: float) -> api.RunView:
    return api.open_run(run_dir)


@st.cache_data(max_entries=512, show_spinner=False)
def _query(run_dir: str, finished: float, name: str, args: tuple) -> pd.DataFrame:
    return getattr(_open(run_dir, finished), name)(*args)


def open_run(run_dir: Path) -> api.RunView:
    """The run, opened once per folder and finish time (``BadInput`` if it cannot be read)."""
    return _open(str(run_dir), stamp(run_dir))


def query(run_dir: Path, name: str, *args: object) -> pd.DataFrame:
    """``RunView.<name>(*args)`` on the run, cached; ``BadInput`` if the run cannot answer
    (its files changed under it, say)."""
    try:
        return _query(str(run_dir), stamp(run_dir), name, tuple(args))
    except api.RunViewError as exc:
        raise api.BadInput(str(exc)) from None


def require_run() -> tuple[Path, api.RunView] | None:
    """The current run, opened; or a message saying what to do (and None)."""
    run_dir = current_run()
    if run_dir is None:
        st.info(tr("common.no_run"))
        return None
    try:
        return run_dir, open_run(run_dir)
    except api.BadInput as exc:
        st.error(tr("common.run_unreadable", error=str(exc)))
        return None


def guarded(draw) -> None:
    """Run ``draw()`` (a page section); if the run cannot answer (its folder was replaced or
    removed while the page was open), say so in place of the section."""
    try:
        draw()
    except api.BadInput as exc:
        st.error(tr("common.run_unreadable", error=str(exc)))


def pick(label: str, options: list, name: str, format_func=str, radio: bool = False, **kw):
    """A selectbox (or radio) whose choice survives a language switch.

    The widget's labels change with the language, so the widget is keyed by ``name`` and the
    language (``<name>:<lang>``), and the chosen option itself is kept language-free in the
    session (``pick:<name>``) to start the other language's widget on the same choice."""
    options = list(options)
    saved = st.session_state.get(f"pick:{name}")
    index = options.index(saved) if saved in options else 0
    # Labels made now, in this run's language: Streamlit may call format_func later, outside
    # the script run (AppTest does), where the session's language cannot be read.
    labels = {option: format_func(option) for option in options}
    widget = st.radio if radio else st.selectbox
    value = widget(
        label, options, index=index, format_func=labels.__getitem__, key=f"{name}:{lang()}", **kw
    )
    st.session_state[f"pick:{name}"] = value
    return value


# --- replacing an earlier result: only on the user's explicit word ---------------------------


def offer_replace(offer: str, folder: str, box_prefix: str) -> None:
    """Ask the user whether to replace ``folder`` (after a start refused because it is taken):
    the form then shows a box for it (``replace_box``). Each time it is asked the box is a new
    widget, so a box ticked for an earlier replacement never stands for this one."""
    st.session_state[offer] = {
        "folder": folder,
        "box": f"{box_prefix}{folder}:{secrets.token_hex(4)}",
    }


def replace_box(offer: str, label_key: str, where=st) -> None:
    """The "replace the existing ..." box of the folder on offer, if one is (in a form)."""
    asked = st.session_state.get(offer)
    if asked:
        where.checkbox(tr(label_key, folder=asked["folder"]), key=asked["box"])


def replace_agreed(offer: str, folder: str) -> bool:
    """Whether the user ticked the box offered for ``folder`` (and it is still on offer)."""
    asked = st.session_state.get(offer)
    return bool(asked and asked["folder"] == folder and st.session_state.get(asked["box"]))


def occupied(folder: Path) -> bool:
    """Whether writing to ``folder`` would replace something (an empty folder replaces
    nothing): what decides whether a replace offer is needed."""
    if folder.is_symlink() or folder.is_file():
        return True
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError:
        return True  # cannot look inside: let the user decide, the engine checks again


def withdraw_offer(offer: str) -> None:
    """No folder on offer any more: a yes is for one replacement, not the next."""
    st.session_state.pop(offer, None)
