"""Printing CardTwin's self-contained HTML pages (compare report, sweep page) to A4 PDF, offline.

The pages draw their charts with plotly.js in the browser, so a PDF needs a browser: headless
Chromium from the system (``/usr/bin/chromium``, or ``$CARDTWIN_CHROMIUM``), driven by
Playwright's sync API. Playwright's own browser download is never used: the path is always
passed, so printing works without a network. ``scripts/setup_system.sh`` installs Chromium and a
CJK font (without one the Chinese text prints as boxes).

The PDF is written atomically: a failed print leaves no half-written file and keeps an earlier
PDF at the same path. Every failure is a :class:`PdfError` with a one-line message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

CHROMIUM_ENV = "CARDTWIN_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
SETUP_HINT = "run scripts/setup_system.sh (or set CARDTWIN_CHROMIUM to a Chromium binary)"

# What a drawn plotly chart has: plotly adds the svg only when its script has run.
PLOTLY_DRAWN = ".js-plotly-plot .main-svg"

# A4 with 10 mm margins. The browser window is as wide as the printable area (at CSS's 96 px per
# inch), so plotly lays its charts out at the width they are printed at: charts drawn for a wider
# screen would be cut at the right edge (printing does not resize them).
_MARGIN_MM = 10
_A4_WIDTH_MM = 210
_VIEWPORT = {"width": round((_A4_WIDTH_MM - 2 * _MARGIN_MM) / 25.4 * 96), "height": 1000}
_MARGIN = {side: f"{_MARGIN_MM}mm" for side in ("top", "bottom", "left", "right")}


class PdfError(RuntimeError):
    """Printing a page to PDF failed (no Chromium, it did not start, or it timed out)."""


def chromium_path() -> str:
    """The Chromium binary to print with: ``$CARDTWIN_CHROMIUM`` or ``/usr/bin/chromium``.

    Read at each call (not at import) so a caller or a test can point it elsewhere at any time.
    """
    return os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)


def html_to_pdf(
    html: str,
    pdf_path: Path,
    *,
    wait_for: str | None = PLOTLY_DRAWN,
    timeout_s: float = 60,
) -> Path:
    """Print the self-contained page ``html`` to an A4 PDF at ``pdf_path``; return the path.

    ``wait_for`` is a CSS selector of what the page draws with JavaScript (by default plotly's
    chart svgs): if the loaded page has any, printing waits until every match is attached. A page
    without matches prints at once. ``timeout_s`` bounds the whole print (start to file).
    Raises :class:`PdfError` on any failure; ``pdf_path`` is then as it was before. Blocks the
    caller until done, also when called on a thread that runs an asyncio loop.
    """
    pdf_path = Path(pdf_path)
    chromium = chromium_path()
    executable = shutil.which(chromium)  # also checks that an absolute path is an executable file
    if executable is None:
        raise PdfError(f"cannot print to PDF: no Chromium executable at {chromium}; {SETUP_HINT}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _print(html, pdf_path, executable, wait_for, timeout_s)
    # Playwright's sync API refuses to run in a thread with a running asyncio loop; a fresh
    # thread has none, so the print runs there and this thread waits for it.
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["path"] = _print(html, pdf_path, executable, wait_for, timeout_s)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="cardtwin-pdf", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["path"]  # type: ignore[return-value]


def _print(
    html: str, pdf_path: Path, chromium: str, wait_for: str | None, timeout_s: float
) -> Path:
    """The print itself, in a thread without a running asyncio loop."""
    # Imported here: only printing needs Playwright, and importing it starts nothing.
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import sync_playwright

    deadline = time.monotonic() + timeout_s

    def left_ms() -> int:
        # Playwright reads 0 as "no timeout", so a spent budget is 1 ms, which times out.
        return max(1, round((deadline - time.monotonic()) * 1000))

    tmp_pdf: Path | None = None
    try:
        # First, so a PDF that could not be stored fails before Chromium starts.
        pdf_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="cardtwin-pdf-") as work_dir:
            # A file, not set_content: a page with plotly.js inline is several MB, and a file:
            # URL loads it like any page (set_content passes it through the protocol instead).
            page_file = Path(work_dir) / "page.html"
            page_file.write_text(html, encoding="utf-8")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, timeout=left_ms())
                try:
                    page = browser.new_page(viewport=_VIEWPORT)
                    page.goto(page_file.as_uri(), wait_until="load", timeout=left_ms())
                    if wait_for:
                        drawn = page.locator(wait_for)
                        # Counted first: a page without charts must not wait for the timeout.
                        for i in range(drawn.count()):
                            drawn.nth(i).wait_for(state="attached", timeout=left_ms())
                    page.emulate_media(media="print")
                    data = page.pdf(format="A4", print_background=True, margin=_MARGIN)
                finally:
                    browser.close()
        if not data.startswith(b"%PDF"):
            raise PdfError(f"Chromium at {chromium} made no PDF for {pdf_path}; {SETUP_HINT}")
        # A new file beside the target (same file system, so the rename is atomic; a name of its
        # own, so two prints never share it) replaces the target only once it is complete.
        new = pdf_path.with_name(f".{pdf_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        with new.open("xb") as out:
            tmp_pdf = new  # ours from here: removed below if anything fails
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # on disk before the rename makes it the PDF
        os.replace(tmp_pdf, pdf_path)
    except PlaywrightTimeoutError as exc:
        raise PdfError(
            f"printing {pdf_path} with Chromium at {chromium} timed out after {timeout_s:g} s "
            f"({_first_line(exc)}); give it a longer timeout_s, or check that the page's scripts "
            "run offline"
        ) from exc
    except PlaywrightError as exc:
        raise PdfError(
            f"printing {pdf_path} with Chromium at {chromium} failed: {_first_line(exc)}; "
            f"{SETUP_HINT}"
        ) from exc
    except OSError as exc:
        raise PdfError(f"cannot write the PDF {pdf_path}: {exc}") from exc
    finally:
        if tmp_pdf is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_pdf.unlink()  # after a failure; after success it has been renamed already
    return pdf_path


def _first_line(exc: BaseException) -> str:
    """The first line of an error: Playwright's messages run on with call logs."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
