"""Present: the one-page brief for decision makers, offered under a result as an HTML download
(made when the button is pressed: the page carries plotly.js, several MB) and a PDF made on
click by the system's Chromium (``sim/pdf.py``), in a language chosen for the brief."""

from __future__ import annotations

import html
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from dashboard import brief, i18n
from dashboard.state import lang, tr
from sim import api
from sim.pdf import PdfError


def offer_brief(key: str, name: str, make_html: Callable[[str], str], token: str) -> None:
    """The brief's language, its HTML download and its PDF. ``make_html(lang)`` makes the page
    (cached by the caller); ``token`` names what the brief is of (file and time written), so a
    PDF made earlier is offered again only for the same result."""
    st.markdown(f"#### {tr('present.brief')}")
    c1, c2, c3 = st.columns([1, 1, 1])
    brief_lang = c1.radio(
        tr("present.brief_lang"), i18n.LANGS, index=i18n.LANGS.index(lang()), horizontal=True,
        format_func=i18n.LANG_NAMES.__getitem__, key=f"{key}.b_lang",
    )  # fmt: skip
    stem = re.sub(r"[^\w.-]+", "_", f"brief-{name}-{brief_lang}")
    c2.download_button(
        tr("present.brief_html"),
        data=lambda: _html_or_message(make_html, brief_lang),
        file_name=f"{stem}.html",
        mime="text/html",
        key=f"{key}.b_html",
        icon=":material/download:",
        on_click="ignore",
    )
    made = f"{key}.b_pdf:{token}:{brief_lang}"
    if c3.button(tr("present.make_pdf"), key=f"{key}.b_make", icon=":material/print:"):
        with st.spinner(tr("present.making_pdf")):
            try:
                st.session_state[made] = _pdf(make_html(brief_lang))
            except (PdfError, api.BadInput, KeyError, TypeError) as exc:
                # a failed print, or a result that is gone or not of this version
                st.error(tr("present.pdf_failed", error=str(exc)))
    if made in st.session_state:
        c3.download_button(
            tr("present.brief_pdf"),
            data=st.session_state[made],
            file_name=f"{stem}.pdf",
            mime="application/pdf",
            key=f"{key}.b_pdf",
            icon=":material/picture_as_pdf:",
            on_click="ignore",
        )


def _html_or_message(make_html: Callable[[str], str], brief_lang: str) -> str:
    """The brief, or, if it cannot be made (the result is gone), a page that says why: the
    download runs after the page is drawn, where an error could not be shown."""
    try:
        return make_html(brief_lang)
    except (api.BadInput, KeyError, TypeError) as exc:
        return f"<!DOCTYPE html><meta charset='utf-8'><p>{html.escape(str(exc))}</p>"


def _pdf(page: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="cardtwin-brief-") as tmp:
        return brief.to_pdf(page, Path(tmp) / "brief.pdf").read_bytes()
