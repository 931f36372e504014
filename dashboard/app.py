"""CardTwin dashboard: ``streamlit run dashboard/app.py`` (``make dashboard``).

The entry page: the sidebar (language, runs folder, the run being looked at) and the
navigation between the pages in ``dashboard/views/`` (not ``pages/``: Streamlit would also
list a ``pages/`` folder by itself, beside ``st.navigation``). Pages call ``sim.api`` only; every
label comes from the catalogue (``dashboard/i18n.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on it
    sys.path.insert(0, str(ROOT))

from dashboard import i18n  # noqa: E402
from dashboard.state import current_run, runs_root, tr  # noqa: E402

PAGES = {  # file, title key, icon
    "run": ("views/run.py", "nav.run", ":material/play_circle:"),
    "explore": ("views/explore.py", "nav.explore", ":material/insights:"),
    "compare": ("views/compare.py", "nav.compare", ":material/compare_arrows:"),
    "trace": ("views/trace.py", "nav.trace", ":material/person_search:"),
    "drill": ("views/drill.py", "nav.drill", ":material/crisis_alert:"),
    "trainer": ("views/trainer.py", "nav.trainer", ":material/school:"),
}


def sidebar() -> None:
    """Language, runs folder and the current run, on every page."""
    with st.sidebar:
        st.session_state["lang"] = st.session_state.get("lang", i18n.DEFAULT_LANG)
        st.radio(
            tr("app.language"),
            i18n.LANGS,
            format_func=i18n.LANG_NAMES.__getitem__,
            key="lang",
            horizontal=True,
        )
        st.session_state.setdefault("runs_root", str(runs_root()))
        # Widgets of the entry file lose their value on a page switch unless it is written back
        # to the session each run (Streamlit 1.67): the folder and the language must persist.
        st.session_state["runs_root"] = st.session_state["runs_root"]
        st.text_input(tr("app.runs_root"), key="runs_root", help=tr("app.runs_root_help"))
        run = current_run()
        st.caption(tr("app.current_run", run=run.name if run else tr("app.no_current_run")))


def main() -> None:
    """Page setup, the sidebar, the title, then the chosen page."""
    st.set_page_config(page_title="CardTwin", page_icon=":material/credit_card:", layout="wide")
    st.session_state.setdefault("lang", i18n.DEFAULT_LANG)
    sidebar()
    pages = [
        st.Page(str(Path(__file__).parent / path), title=tr(title), icon=icon, url_path=name)
        for name, (path, title, icon) in PAGES.items()
    ]
    st.title(tr("app.title"))
    st.caption(tr("app.subtitle"))
    st.navigation(pages).run()


main()
