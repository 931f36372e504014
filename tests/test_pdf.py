"""Printing the HTML pages to PDF with the system's Chromium (real browser, no mocks).

Needs what ``scripts/setup_system.sh`` installs: Chromium and a CJK font.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time

import plotly.graph_objects as go
import pytest

from sim.html_page import chart, facts, page
from sim.pdf import CHROMIUM_ENV, PdfError, chromium_path, html_to_pdf

# A page object of a PDF (not the page tree, /Type /Pages).
_PAGE = re.compile(rb"/Type\s*/Page(?!s)")
_BASE_FONT = re.compile(rb"/BaseFont\s*/(?:[A-Z]{6}\+)?([A-Za-z0-9_-]+)")


def _bilingual_page() -> str:
    figure = go.Figure(go.Bar(x=["南通 公交", "Nantong bus"], y=[3, 5]))
    body = [
        "<p>南通 公交 <span class='en'>Nantong bus</span></p>",
        facts([("线路", "lines", 12), ("乘客", "riders", "1,234")]),
        chart(figure, "bus-chart"),
    ]
    return page("南通 公交 Nantong bus", body)


def _cjk_fonts() -> list[str]:
    """PostScript names of the fonts fontconfig has for Chinese."""
    out = subprocess.run(
        ["fc-list", ":lang=zh", "postscriptname"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split("=", 1)[1].strip() for line in out.splitlines() if "=" in line]


def test_a_cjk_font_is_installed():
    # Without one, Chromium draws the Chinese text as boxes (scripts/setup_system.sh installs it).
    assert _cjk_fonts(), "no CJK font: run scripts/setup_system.sh"


def test_bilingual_page_with_a_chart_prints(tmp_path):
    html = _bilingual_page()
    assert html.count('class="plotly-graph-div') == 1  # one chart; plotly.js inline in the head
    started = time.monotonic()
    out = html_to_pdf(html, tmp_path / "report.pdf", timeout_s=30)
    elapsed = time.monotonic() - started

    assert out == tmp_path / "report.pdf"
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(_PAGE.findall(data)) >= 1
    # A drawn chart and embedded fonts, but not the page's 4.6 MB of plotly.js.
    assert 10_000 < len(data) < 2_000_000
    # The Chinese text is set in a CJK font (not boxes of a Latin one).
    assert set(_BASE_FONT.findall(data)) & {name.encode() for name in _cjk_fonts()}
    assert elapsed < 20
    assert [p.name for p in tmp_path.iterdir()] == ["report.pdf"]  # no temporary file left


def test_page_without_charts_does_not_wait(tmp_path):
    html = page("南通 公交 Nantong bus", ["<p>没有图表 <span class='en'>no charts</span></p>"])
    timeout_s = 30
    started = time.monotonic()
    out = html_to_pdf(html, tmp_path / "plain.pdf", timeout_s=timeout_s)
    elapsed = time.monotonic() - started

    assert out.read_bytes().startswith(b"%PDF")
    assert elapsed < timeout_s / 3, f"took {elapsed:.1f} s: it waited for charts it does not have"


def test_prints_from_a_thread_with_a_running_event_loop(tmp_path):
    # Playwright's sync API refuses a running loop; html_to_pdf moves the print to a thread.
    async def inside_loop():
        return html_to_pdf(page("公交 bus", ["<p>loop</p>"]), tmp_path / "loop.pdf")

    out = asyncio.run(inside_loop())
    assert out.read_bytes().startswith(b"%PDF")


def test_missing_chromium_raises_and_keeps_the_earlier_pdf(tmp_path, monkeypatch):
    missing = "/nonexistent/chromium"
    monkeypatch.setenv(CHROMIUM_ENV, missing)
    earlier = tmp_path / "report.pdf"
    earlier.write_bytes(b"%PDF-1.4 an earlier report\n")
    before = earlier.read_bytes()

    with pytest.raises(PdfError, match=re.escape(missing)) as caught:
        html_to_pdf(_bilingual_page(), earlier, timeout_s=10)

    message = str(caught.value)
    assert "\n" not in message
    assert "scripts/setup_system.sh" in message
    assert earlier.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.pdf"]


def test_timeout_raises_and_keeps_the_earlier_pdf(tmp_path):
    # A page whose script hangs: it never finishes loading within the timeout.
    earlier = tmp_path / "report.pdf"
    earlier.write_bytes(b"%PDF-1.4 an earlier report\n")
    before = earlier.read_bytes()
    hang = "<script>const t0 = Date.now(); while (Date.now() - t0 < 8000) {}</script>"
    started = time.monotonic()
    with pytest.raises(PdfError, match="timed out after 2 s") as caught:
        html_to_pdf(page("公交 bus", [hang]), earlier, timeout_s=2)
    assert time.monotonic() - started < 6
    assert shutil.which(chromium_path()) in str(caught.value)
    assert earlier.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.pdf"]
