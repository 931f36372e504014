"""How quickly the dashboard answers on a finished run (a measurement, not a test).

Drives the real app with Streamlit's AppTest (the script runs in this process, as it runs in
the server for a browser session; the browser's own drawing is not included) on a finished
run, default ``runs/nantong_2024`` (``make run``: Nantong, full scale, 7 days):

* open: a fresh session opens the Explore page of the run (cold caches: the run is opened and
  every query of the page runs) — budget < 3 s;
* switch: the ridership measure changes (the page's charts are queried again) — budget < 1 s;
* switch back: the same measure again (answered from ``st.cache_data``);
* language: the page redrawn in English.

With ``--browser`` it measures the same in Chromium against ``streamlit run`` on a free
loopback port (what a user waits for: from the click to the KPI cards and the first chart drawn,
and from choosing a measure to the redrawn chart). The first session of the server is cold (its
``st.cache_data`` is shared by every session); later sessions reuse the queries.

    .venv/bin/python bench/dashboard.py [--run runs/nantong_2024] [--repeat 3] [--browser]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

BUDGETS = {"open": 3.0, "switch": 1.0}


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def one_session(run_dir: Path) -> dict[str, float]:
    """The four steps of one fresh session, in seconds."""
    import streamlit as st

    st.cache_data.clear()  # cold: as the first user after the run finished
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.session_state["run_dir"] = str(run_dir)
    at.run()
    at.switch_page("views/explore.py")
    times = {"open": timed(at.run)}
    measure = at.selectbox(key="explore_measure:zh")
    times["switch"] = timed(lambda: measure.set_value("spend_fen").run())
    measure = at.selectbox(key="explore_measure:zh")
    times["switch back"] = timed(lambda: measure.set_value("taps").run())
    at.session_state["lang"] = "en"
    times["language"] = timed(at.run)
    if at.exception:
        raise SystemExit(f"the page failed: {at.exception[0].message}")
    return times


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server(runs: Path) -> tuple[str, subprocess.Popen]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        env={**os.environ, "CARDTWIN_RUNS": str(runs)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return url, proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("streamlit did not start within 60 s")


def browser_sessions(run_dir: Path, repeat: int) -> list[dict[str, float]]:
    """Open the run from the Run page and switch the measure, in ``repeat`` fresh browser
    sessions against one server."""
    from playwright.sync_api import expect, sync_playwright

    from sim.pdf import chromium_path

    url, proc = _server(run_dir.parent)
    sessions = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium_path()))
            for _ in range(repeat):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                app = page.get_by_test_id("stApp")
                page.goto(url)
                expect(page.get_by_role("button", name="打开")).to_be_visible(timeout=60_000)
                expect(app).to_have_attribute("data-test-script-state", "notRunning")
                box = page.get_by_test_id("stSelectbox").filter(has_text="选择运行")
                box.get_by_role("combobox").click()
                page.get_by_role("option", name=run_dir.name, exact=True).click()
                expect(app).to_have_attribute("data-test-script-state", "notRunning")
                start = time.perf_counter()
                page.get_by_role("button", name="打开").click()
                expect(page.get_by_test_id("stMetric").first).to_be_visible(timeout=60_000)
                times = {"open: KPI cards": time.perf_counter() - start}
                expect(page.locator(".js-plotly-plot .main-svg").first).to_be_visible(
                    timeout=60_000
                )
                expect(app).to_have_attribute("data-test-script-state", "notRunning")
                times["open"] = time.perf_counter() - start
                box = page.get_by_test_id("stSelectbox").filter(has_text="指标")
                box.get_by_role("combobox").click()
                start = time.perf_counter()
                page.get_by_role("option", name="票款（元）", exact=True).click()
                expect(page.get_by_text("票款（元）：各时段").first).to_be_visible(timeout=60_000)
                expect(app).to_have_attribute("data-test-script-state", "notRunning")
                times["switch"] = time.perf_counter() - start
                sessions.append(times)
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return sessions


def report(sessions: list[dict[str, float]]) -> None:
    """Median, worst and each session's time per step, against the budgets."""
    for step in sessions[0]:
        values = [s[step] for s in sessions]
        budget = BUDGETS.get(step)
        verdict = (
            ""
            if budget is None
            else f"  budget < {budget:.0f} s"
            + ("" if max(values) < budget else "  <<< OVER BUDGET")
        )
        print(
            f"{step:12s} median {statistics.median(values):.2f} s, worst {max(values):.2f} s "
            f"({', '.join(f'{v:.2f}' for v in values)}){verdict}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "nantong_2024")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="measure in Chromium")
    args = parser.parse_args()
    if not (args.run / "run_meta.json").exists():
        raise SystemExit(f"{args.run}: no finished run; make one with `make run`")
    print(f"run: {args.run}; {args.repeat} fresh sessions; {time.strftime('%Y-%m-%d %H:%M')}")
    if args.browser:
        print("in Chromium against streamlit run (session 1 cold, later ones share its cache)")
        report(browser_sessions(args.run.resolve(), args.repeat))
    else:
        print("AppTest: the page's script in this process, every session cold")
        report([one_session(args.run) for _ in range(args.repeat)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
