"""The dashboard in a real browser: start ``streamlit run dashboard/app.py``, run the small
scenario from the Run page, look at it on Explore, switch to English, open Compare and Trace.

Needs what ``scripts/setup_system.sh`` installs (``make install``): Chromium (Playwright drives the
system's ``/usr/bin/chromium`` or ``$CARDTWIN_CHROMIUM``; its own browser download is never used)
and a CJK font. Full-page screenshots of every step are saved in a ``browser_screenshots`` folder
under pytest's temporary directory; the test prints where (``-s`` shows it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from sim.pdf import SETUP_HINT, chromium_path
from sim.run_dir import MARKER_FILE

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
RUNS_ENV = "CARDTWIN_RUNS"  # dashboard/state.py: the runs folder the dashboard starts with

SCENARIO = "scenarios/small_ci.yaml"
OUT_NAME = "browser_small_ci_2d"

START_TIMEOUT_S = 60  # the server answering /_stcore/health
STEP_MS = 30_000  # one page's render on a loaded 2-core machine (first imports, first queries)
RUN_MS = 90_000  # building the small city and simulating 2 days (a few seconds when idle)
VIEWPORT = {"width": 1400, "height": 1000}
MAX_SHOT_HEIGHT = 8000  # px: a full-page screenshot is cut there

TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"

expect.set_options(timeout=STEP_MS)  # Playwright's 5 s default is short for a busy machine


@dataclass(frozen=True)
class Dashboard:
    url: str
    runs: Path  # the runs folder it was started with ($CARDTWIN_RUNS)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except (OSError, urllib.error.URLError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _start(runs: Path, work: Path, attempt: int) -> tuple[str, subprocess.Popen, Path]:
    """One ``streamlit run`` on a free port: its url, process and stderr file."""
    port = _free_port()
    # conftest.py has put the test privacy key in os.environ; the server inherits it.
    env = {**os.environ, RUNS_ENV: str(runs)}
    stderr = work / f"streamlit_{attempt}.err"
    options = {
        "server.address": "127.0.0.1",
        "server.port": port,
        "server.headless": "true",
        "browser.gatherUsageStats": "false",
        "server.fileWatcherType": "none",
    }
    with (work / f"streamlit_{attempt}.out").open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP)]
            + [f"--{name}={value}" for name, value in options.items()],
            # A folder of its own, not the repository: a file the dashboard writes by a relative
            # path lands there (and is looked for by the test), not in the checkout.
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    return f"http://127.0.0.1:{port}", proc, stderr


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """The dashboard, served by a ``streamlit run`` of its own that writes its runs to a
    temporary folder; stopped after the module's tests, also when one fails."""
    runs = tmp_path_factory.mktemp("dashboard_runs")
    work = tmp_path_factory.mktemp("dashboard_cwd")
    for attempt in range(3):  # another process may take the free port before streamlit binds it
        url, proc, stderr = _start(runs, work, attempt)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while proc.poll() is None and time.monotonic() < deadline and not _healthy(url):
                time.sleep(0.2)
            if proc.poll() is None and _healthy(url):
                yield Dashboard(url, runs)
                if proc.poll() is not None:
                    print(f"\nstreamlit exited ({proc.returncode}) during the test; its stderr:")
                    print(stderr.read_text(errors="replace"))
                return
        finally:
            _stop(proc)
        log = stderr.read_text(errors="replace")
        if "is not available" not in log:  # streamlit's words for a port in use
            break
    if proc.returncode in (None, 0, -15):  # -15: stopped by _stop after the deadline
        how = f"did not answer {url}/_stcore/health within {START_TIMEOUT_S} s"
    else:
        how = f"exited with {proc.returncode}"
    pytest.fail(f"streamlit run {APP.relative_to(ROOT)} {how}; its stderr:\n{log}", pytrace=False)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser_screenshots")
    print(f"\ndashboard screenshots: {folder}")
    return folder


@pytest.fixture
def page():
    """A page in the system's Chromium."""
    executable = shutil.which(chromium_path())
    if executable is None:
        pytest.fail(f"no Chromium executable at {chromium_path()}; {SETUP_HINT}", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(STEP_MS)
            yield context.new_page()
        finally:
            browser.close()


# --- helpers ------------------------------------------------------------------------------------


def _shot(page: Page, path: Path) -> None:
    """A screenshot of the whole page. Streamlit scrolls inside its main area, not the
    document, so the window is made as tall as the content for the picture."""
    height = page.evaluate(
        """() => Math.max(document.documentElement.scrollHeight,
            ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stSidebar"]')]
                .map(e => e.scrollHeight))"""
    )
    tall = min(max(height, VIEWPORT["height"]), MAX_SHOT_HEIGHT)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": tall})
    try:
        # two frames, so what the resize moved (plotly charts are responsive) is drawn again
        page.evaluate(TWO_FRAMES)
        page.screenshot(path=path, full_page=True)
    finally:
        page.set_viewport_size(VIEWPORT)


def _nav(page: Page, title: str) -> Locator:
    """The sidebar's link to the page called ``title`` (the link's text also holds its icon's
    name, so the title is matched on its own element)."""
    return page.get_by_test_id("stSidebarNavLink").filter(has=page.get_by_text(title, exact=True))


def _metric(page: Page, label: str) -> Locator:
    """The KPI card labelled exactly ``label``."""
    return page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    )


def _fail_on_exception(page: Page, screenshots: Path, name: str) -> None:
    errors = page.get_by_test_id("stException")
    if errors.count():
        _shot(page, screenshots / f"{name}_exception.png")
        shown = "\n---\n".join(errors.all_inner_texts())
        pytest.fail(
            f"the dashboard shows an exception ({name}; screenshot {name}_exception.png in "
            f"{screenshots}):\n{shown}",
            pytrace=False,
        )


def _shown(page: Page, target: Locator, screenshots: Path, name: str, timeout: float = STEP_MS):
    """Wait for ``target`` to be visible; fail at once, with its text, if an exception shows up
    instead."""
    expect(target.or_(page.get_by_test_id("stException")).first).to_be_visible(timeout=timeout)
    _fail_on_exception(page, screenshots, name)
    expect(target).to_be_visible()


def _settled(page: Page, screenshots: Path, name: str) -> None:
    """Wait for the script run to finish, fail if the page shows an exception, screenshot.

    Called once the page shows something of the run being waited for, so the run has started:
    Streamlit's own status attribute then says when it has finished."""
    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")
    _fail_on_exception(page, screenshots, name)
    _shot(page, screenshots / f"{name}.png")


# --- the test -----------------------------------------------------------------------------------


def test_run_explore_switch_language_compare_trace(dashboard, page, screenshots):
    try:
        _walk_through(page, dashboard, screenshots)
    except BaseException:
        with contextlib.suppress(Exception):  # a diagnosis; must not hide the failure itself
            page.screenshot(path=screenshots / "failure.png", full_page=True)
            (screenshots / "failure.html").write_text(page.content(), encoding="utf-8")
            print(f"\nthe page when the test failed: failure.png, failure.html in {screenshots}")
        raise


def _walk_through(page: Page, dashboard: Dashboard, screenshots: Path) -> None:
    page.goto(dashboard.url)

    # --- Run page, in Chinese (the default) ---------------------------------------------------
    _shown(page, _nav(page, "运行"), screenshots, "start")
    _nav(page, "运行").click()
    _shown(page, page.get_by_role("heading", name="运行情景", exact=True), screenshots, "run_start")
    _settled(page, screenshots, "run_start")
    scenario_box = page.get_by_test_id("stSelectbox").filter(has_text="情景文件")
    chooser = scenario_box.get_by_role("combobox")
    chooser.click()
    chooser.press_sequentially("small_ci")  # the list is long and drawn only in part: filter it
    page.get_by_role("option", name=SCENARIO, exact=True).click()
    expect(chooser).to_have_value(SCENARIO)
    # the chosen scenario's form: its description is shown above it
    description = page.get_by_text("nantong_2024 scaled down for tests")
    _shown(page, description, screenshots, "run_scenario_chosen")
    _settled(page, screenshots, "run_scenario_chosen")

    form = page.get_by_test_id("stForm")
    days = form.get_by_test_id("stNumberInput").filter(has_text="模拟天数").locator("input")
    days.fill("2")
    days.press("Tab")  # not Enter: Enter in a form submits it
    out_name = form.get_by_test_id("stTextInput").filter(has_text="结果文件夹名称").locator("input")
    out_name.fill(OUT_NAME)
    out_name.press("Tab")
    expect(days).to_have_value("2")
    expect(out_name).to_have_value(OUT_NAME)
    _shot(page, screenshots / "run_zh.png")

    form.get_by_role("button").filter(has_text="开始运行").click()
    done = page.get_by_test_id("stAlertContentSuccess").filter(has_text="运行完成")
    _shown(page, done, screenshots, "run_done_zh", timeout=RUN_MS)
    _settled(page, screenshots, "run_done_zh")
    out = dashboard.runs / OUT_NAME
    said = done.inner_text()
    field = page.get_by_test_id("stSidebar").get_by_test_id("stTextInput").locator("input")
    assert str(out) in said and (out / MARKER_FILE).is_file(), (
        f"the run should have been written to {out} (the runs folder the dashboard was started "
        f"with, ${RUNS_ENV}); the dashboard says {said!r}, and its runs folder field in the "
        f"sidebar holds {field.input_value()!r}"
    )

    # --- Explore, in Chinese --------------------------------------------------------------------
    _nav(page, "结果").click()
    _shown(page, _metric(page, "持卡人"), screenshots, "explore_zh")
    expect(_metric(page, "刷卡/扫码次数")).to_be_visible()
    expect(page.get_by_role("heading", name="small_ci：2024年1月1日")).to_be_visible()
    _settled(page, screenshots, "explore_zh")

    # --- switch to English ----------------------------------------------------------------------
    language = page.get_by_test_id("stSidebar").get_by_test_id("stRadio")
    language.locator("label").filter(has_text="English").click()
    _shown(page, _metric(page, "Cardholders"), screenshots, "explore_en")
    expect(_metric(page, "Taps")).to_be_visible()
    _settled(page, screenshots, "explore_en")
    expect(_metric(page, "持卡人")).to_have_count(0)
    expect(_metric(page, "刷卡/扫码次数")).to_have_count(0)
    expect(_nav(page, "Explore")).to_be_visible()
    expect(_nav(page, "结果")).to_have_count(0)

    # --- Compare, in English --------------------------------------------------------------------
    _nav(page, "Compare").click()
    _shown(
        page,
        page.get_by_role("heading", name="Compare policies", exact=True),
        screenshots,
        "compare_en",
    )
    expect(page.get_by_role("tab", name="Open an earlier comparison or sweep")).to_be_visible()
    expect(page.get_by_role("tab", name="Run a new comparison")).to_be_visible()
    _settled(page, screenshots, "compare_en")
    expect(page.get_by_role("heading", name="比较政策")).to_have_count(0)

    # --- Trace, in English ----------------------------------------------------------------------
    _nav(page, "Trace a cardholder").click()
    _shown(
        page,
        page.get_by_role("heading", name="Trace one cardholder", exact=True),
        screenshots,
        "trace_en",
    )
    # the day of the run's busiest card, tap by tap
    _shown(
        page, page.get_by_role("heading", name="Tap by tap", exact=True), screenshots, "trace_en"
    )
    _settled(page, screenshots, "trace_en")
    expect(page.get_by_role("heading", name="追踪一位持卡人")).to_have_count(0)


def test_an_upload_that_is_not_yaml_is_refused_in_the_browser(
    dashboard, page, screenshots, tmp_path
):
    """A real file chosen in the browser: a broken YAML gets the message, a good scenario is
    kept in scenarios/uploads/ and chosen."""
    broken = tmp_path / "notes.yaml"
    broken.write_text("name: [unclosed\n", encoding="utf-8")
    good = tmp_path / "browser_upload_test.yaml"
    good.write_text("extends: ../small_ci.yaml\nname: browser_upload_test\n", encoding="utf-8")
    page.goto(dashboard.url)
    _shown(page, page.get_by_role("heading", name="运行情景", exact=True), screenshots, "upload")
    _settled(page, screenshots, "upload_start")
    chooser = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    chooser.set_input_files(str(broken))
    _shown(page, page.get_by_text("notes.yaml 不是有效的 YAML"), screenshots, "upload_bad")
    _settled(page, screenshots, "upload_bad")
    try:
        chooser.set_input_files(str(good))
        _shown(page, page.get_by_text("已保存为 scenarios/uploads/browser_upload_test.yaml"),
               screenshots, "upload_good")  # fmt: skip
        _settled(page, screenshots, "upload_good")
        assert (ROOT / "scenarios" / "uploads" / "browser_upload_test.yaml").is_file()
    finally:
        (ROOT / "scenarios" / "uploads" / "browser_upload_test.yaml").unlink(missing_ok=True)


def test_the_upload_box_states_one_limit_and_the_browser_holds_it(
    dashboard, page, screenshots, tmp_path
):
    """What the page says under and above the upload box is one limit, 1 MB (Streamlit's own
    line in English, the Chinese label in Chinese; no other figure), and it is the one that
    holds: one byte over it is refused in the browser before it is sent, a file of exactly
    that size is taken and kept."""
    from dashboard.uploads import MAX_UPLOAD_BYTES

    def overlay(name: str, size: int) -> Path:
        head = f"extends: ../small_ci.yaml\nname: {name}\n#"
        path = tmp_path / f"{name}.yaml"
        path.write_text(head + "x" * (size - len(head)), encoding="utf-8")
        assert path.stat().st_size == size
        return path

    over = overlay("browser_over_limit", MAX_UPLOAD_BYTES + 1)
    at_limit = overlay("browser_at_limit", MAX_UPLOAD_BYTES)
    kept = ROOT / "scenarios" / "uploads"
    page.goto(dashboard.url)
    _shown(page, page.get_by_role("heading", name="运行情景", exact=True), screenshots, "limit")
    _settled(page, screenshots, "limit_start")
    box = page.get_by_test_id("stFileUploader")
    expect(box.get_by_test_id("stWidgetLabel")).to_have_text("或上传情景文件（YAML，最大 1 MB）")
    expect(box.get_by_test_id("stFileUploaderDropzoneInstructions")).to_have_text(
        "1MB per file • YAML, YML"
    )
    assert "KB" not in box.inner_text() and "512" not in box.inner_text()
    chooser = box.locator('input[type="file"]')
    try:
        chooser.set_input_files(str(over))
        _shown(page, box.get_by_text("File must be 1.0MB or smaller."), screenshots, "limit_over")
        _settled(page, screenshots, "limit_over")
        assert not (kept / over.name).exists()  # never reached the server
        chooser.set_input_files(str(at_limit))
        _shown(page, page.get_by_text(f"已保存为 scenarios/uploads/{at_limit.name}"),
               screenshots, "limit_at")  # fmt: skip
        _settled(page, screenshots, "limit_at")
        assert (kept / at_limit.name).read_bytes() == at_limit.read_bytes()
    finally:
        (kept / over.name).unlink(missing_ok=True)
        (kept / at_limit.name).unlink(missing_ok=True)


def test_a_drill_in_the_browser_alert_action_debrief(dashboard, page, screenshots):
    """Start the duplicate-charge drill on the console, speed the clock up, see the alert
    appear, acknowledge it, report the reader, end the drill and open the debrief."""
    try:
        page.goto(dashboard.url)
        _nav(page, "演练控制台").click()
        _shown(page, page.get_by_role("heading", name="事件演练：学员控制台"), screenshots, "drill")
        form = page.get_by_test_id("stForm").filter(has_text="学员姓名")
        form.get_by_test_id("stSelectbox").get_by_role("combobox").click()
        page.get_by_role("option", name="读卡器重复扣款 · 难度 2 / 3").click()
        form.get_by_test_id("stTextInput").locator("input").fill("浏览器学员")
        form.get_by_role("button").filter(has_text="开始").click()
        _shown(page, _metric(page, "模拟时间"), screenshots, "drill_started", timeout=RUN_MS)
        # The fastest clock: 75 simulated minutes to the first alert take ~8 s.
        slider = page.get_by_test_id("stSlider").filter(has_text="速度").get_by_role("slider")
        slider.focus()
        slider.press("End")
        acknowledge = page.get_by_role("button", name="确认所选告警")
        _shown(page, acknowledge, screenshots, "drill_alert", timeout=RUN_MS)
        expect(page.get_by_text("暂无告警。")).to_have_count(0)
        _shot(page, screenshots / "drill_alert.png")
        acknowledge.click()
        acked = page.get_by_text("已确认: 同一读卡器出现重复扣款")
        _shown(page, acked, screenshots, "drill_ack")
        actions = page.get_by_test_id("stForm").filter(has_text="设备编号")
        actions.get_by_test_id("stTextInput").locator("input").fill("1201")
        actions.get_by_role("button").filter(has_text="执行").click()
        recorded = page.get_by_text("报修设备", exact=False)
        _shown(page, page.get_by_test_id("stAlertContentSuccess").filter(has=recorded),
               screenshots, "drill_action", timeout=RUN_MS)  # fmt: skip
        page.get_by_role("button", name="结束演练并查看复盘").click()
        _shown(page, page.get_by_role("heading", name="复盘", exact=True), screenshots,
               "drill_debrief", timeout=RUN_MS)  # fmt: skip
        expect(page.get_by_role("button", name="下载复盘（HTML）")).to_be_visible()
        frame = page.frame_locator("iframe").first
        expect(frame.get_by_text("演练复盘", exact=False).first).to_be_visible()
        expect(frame.get_by_text("发现用时（分钟）")).to_be_visible()
        _shot(page, screenshots / "drill_debrief.png")
        sessions = list((dashboard.runs / "drills" / "sessions").iterdir())
        debrief = sessions[0] / "debrief.json"
        assert debrief.is_file() and '"trainee": "浏览器学员"' in debrief.read_text("utf-8")
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=screenshots / "drill_failure.png", full_page=True)
            print(f"\nthe page when the drill test failed: drill_failure.png in {screenshots}")
        raise
