"""The dashboard's frame, Run and Explore pages, driven by Streamlit's AppTest on a real run.

Each page renders without an exception in both languages; changing a widget changes what is
shown; bad input (a form value, an upload, a broken run folder, a run that breaks a money
invariant) shows a message and the app keeps working.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest
from page_texts import CJK, chart_texts
from streamlit.testing.v1 import AppTest

from agents.outlet import OPEN_DAY_RULES
from dashboard import brief, i18n, places
from dashboard.overrides import errors_by_field, fen_text, incident_frame, incidents_yaml
from dashboard.uploads import (
    MAX_UPLOAD_BYTES,
    UPLOAD_LIMIT_MB,
    target_of,
    trial_files,
    upload_problem,
)
from sim import api
from sim.ledger import InvariantViolation, Ledger
from sim.run_dir import MARKER_FILE
from sim.yaml_config import FlagOverride

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
SMALL = ROOT / "scenarios" / "small_ci.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A runs folder holding one finished 2-day run of the small scenario."""
    root = tmp_path_factory.mktemp("dashboard_runs")
    api.run(api.load_scenario(SMALL, days=2), root / "small")
    return root


def app(runs: Path, page: str | None = None, lang: str = "zh", run: str | None = "small"):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["runs_root"] = str(runs)
    at.session_state["lang"] = lang
    if run is not None:
        at.session_state["run_dir"] = str(runs / run)
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py")
        at.run()
    assert not at.exception, at.exception
    return at


def texts(at) -> str:
    """Everything a user reads on the page (labels, values, messages, markdown)."""
    parts = [m.label + " " + str(m.value) for m in at.metric]
    for kind in ("markdown", "caption", "info", "error", "success", "subheader", "header"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [t.label for t in at.tabs]
    return "\n".join(parts)


# --- the catalogue and formats --------------------------------------------------------------


def test_every_message_has_both_languages_and_every_key_used_exists():
    messages = i18n.catalogue()
    assert all(set(v) == {"zh", "en"} and v["zh"] and v["en"] for v in messages.values())
    used = set()
    for source in (ROOT / "dashboard").rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        used |= {k for k in messages if f'"{k}"' in text}
    for source in (ROOT / "dashboard").rglob("*.py"):
        for key in re.findall(r'\btr\(\s*"([a-z_]+\.[\w.]+)"', source.read_text("utf-8")):
            assert key in messages, f"{source.name}: {key} is not in the catalogue"


def test_numbers_money_and_dates_follow_the_language():
    assert i18n.count(1_140_314, "zh") == "114.03万"
    assert i18n.count(264_834_350_00, "zh").endswith("亿")
    assert i18n.count(1_140_314, "en") == "1,140,314"
    assert i18n.yuan(26_483_435, "zh", compact=True) == "26.48万元"
    assert i18n.yuan(123_456, "zh") == "1,234.56 元"
    assert i18n.yuan(26_483_435, "en") == "¥264,834.35"
    assert i18n.yuan(-5, "en") == "¥-0.05"
    assert i18n.date("2024-01-03", "zh") == "2024年1月3日"
    assert i18n.date("2024-01-03", "en") == "Jan 3, 2024"


# --- the frame and the Explore page ---------------------------------------------------------


def test_explore_shows_the_run_in_chinese_then_english(runs):
    at = app(runs, "explore")
    shown = texts(at)
    assert "持卡人" in shown and "客流" in shown
    labels = [m.label for m in at.metric]
    at.session_state["lang"] = "en"
    at.run()
    assert not at.exception
    assert [m.label for m in at.metric] != labels
    assert "Cardholders" in texts(at) and "Ridership" in texts(at)
    assert "持卡人" not in texts(at)


def test_changing_the_measure_changes_the_charts(runs):
    at = app(runs, "explore")
    before = [c.proto.spec for c in at.get("plotly_chart")]
    at.selectbox(key="explore_measure:zh").set_value("spend_fen").run()
    assert not at.exception
    after = [c.proto.spec for c in at.get("plotly_chart")]
    assert after != before
    at.radio(key="explore_dimension:zh").set_value("media").run()
    assert not at.exception
    assert [c.proto.spec for c in at.get("plotly_chart")] != after


def test_every_tab_renders_and_every_chart_offers_its_data_as_csv(runs):
    at = app(runs, "explore", lang="en")
    charts = 0
    for name in ("ridership", "money", "outlets", "faults", "clearing", "map"):
        at.session_state["explore_tab"] = i18n.t(f"explore.tab.{name}", "en")
        at.run()
        assert not at.exception, (name, at.exception)
        shown = at.get("plotly_chart")
        assert shown, name
        assert len(at.get("download_button")) >= len(shown), name
        charts += len(shown)
    assert charts >= 10


def test_switching_the_language_keeps_the_open_tab(runs):
    at = app(runs, "explore", lang="en")
    at.session_state["explore_tab"] = i18n.t("explore.tab.money", "en")
    at.run()
    assert at.session_state["explore_section"] == "money"
    at.session_state["lang"] = "zh"
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["explore_section"] == "money"  # drawn again: the money tab


def test_no_run_chosen_says_what_to_do(runs):
    at = app(runs, "explore", run=None)
    assert i18n.t("common.no_run", "zh") in texts(at)


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("missing", "no such run folder"),
        ("half_written", "has not finished"),
        ("old_schema", "schema_version 0"),
        ("file_gone", "missing"),
        ("meta_without_end", "run_meta.json: period.end: missing"),
    ],
)
def test_a_broken_run_folder_shows_a_message(runs, tmp_path, damage, expected):
    broken = tmp_path / "broken"
    shutil.copytree(runs / "small", broken)
    marker = broken / MARKER_FILE
    if damage == "missing":
        shutil.rmtree(broken)
    elif damage == "half_written":
        marker.unlink()
    elif damage == "meta_without_end":  # a run_meta.json edited by hand: no KeyError
        meta = json.loads((broken / "run_meta.json").read_text("utf-8"))
        del meta["period"]["end"]
        (broken / "run_meta.json").write_text(json.dumps(meta), "utf-8")
    elif damage == "old_schema":
        data = json.loads(marker.read_text("utf-8"))
        marker.write_text(json.dumps({**data, "schema_version": 0}), "utf-8")
    else:
        next((broken / "transactions").glob("*/*.parquet")).unlink()
    at = app(tmp_path, "explore", run="broken")
    assert [e.value for e in at.error], texts(at)
    assert expected in at.error[0].value


# --- the Run page ---------------------------------------------------------------------------


def _choose_small(at):
    at.selectbox(key="scenario_choice").set_value(str(SMALL)).run()
    assert not at.exception


def test_a_bad_form_value_shows_the_engines_message_beside_its_field(runs):
    at = app(runs, "run")
    _choose_small(at)
    at.number_input(key="f_window").set_value(-5)
    at.button[0].click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "fares.transfer.window_min: value out of range; got -5; expected greater than 0"
    ]


def test_a_bad_output_folder_name_is_refused(runs):
    at = app(runs, "run")
    _choose_small(at)
    at.text_input(key="f_out").set_value("bad incident")  # also a bad folder name
    at.button[0].click().run()
    assert not at.exception
    assert any(
        "cannot be a folder name" in e.value or "不能作为文件夹名" in e.value for e in at.error
    )


def test_a_run_from_the_form_lands_in_the_runs_folder_and_opens(runs):
    at = app(runs, "run", lang="en")
    _choose_small(at)
    at.number_input(key="f_days").set_value(1)
    at.number_input(key="f_window").set_value(90)
    at.text_input(key="f_out").set_value("from_form")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("Run finished" in s.value for s in at.success)
    assert at.session_state["run_dir"] == str(runs / "from_form")
    meta = json.loads((runs / "from_form" / "run_meta.json").read_text("utf-8"))
    assert meta["period"]["days"] == 1
    assert meta["cities"][0]["settings"]["fares"]["transfer"]["window_min"] == 90
    listed = [r.path.name for r in api.list_runs(runs)]
    assert "from_form" in listed and "small" in listed


def test_a_run_that_breaks_an_invariant_keeps_the_earlier_run(runs, monkeypatch):
    before = (runs / "small" / "run_meta.json").read_bytes()

    def broken_check(self):
        raise InvariantViolation("trial_balance", 7, "test fault")

    monkeypatch.setattr(Ledger, "check", broken_check)
    at = app(runs, "run")
    _choose_small(at)
    at.number_input(key="f_days").set_value(1)
    at.text_input(key="f_out").set_value("small")
    at.button[0].click().run()
    _replace_box(at).check()  # the user agrees to replace the earlier run
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("资金核对不平" in e.value and "trial_balance" in e.value for e in at.error)
    assert (runs / "small" / "run_meta.json").read_bytes() == before
    monkeypatch.undo()
    at.switch_page("views/explore.py")
    at.run()
    assert not at.exception and "持卡人" in texts(at)  # the app keeps working


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("big.yaml", b"name: x\n" + b"#" * MAX_UPLOAD_BYTES, "at most 1 MB"),
        ("notes.yaml", b"name: [unclosed\n", "YAML"),
        ("list.yaml", b"- a\n- b\n", "mapping"),
        ("bad.yaml", b"extends: ../small_ci.yaml\nseed: -1\n", "seed"),
    ],
)
def test_a_bad_upload_is_refused_with_a_message_and_not_kept(name, content, expected):
    problem = upload_problem(name, content, "en")
    assert problem is not None and expected in problem, problem
    assert not target_of(name).exists()
    assert not trial_files(name)


def _padded(name: str, size: int) -> bytes:
    """A valid overlay of the small scenario, padded with a YAML comment to ``size`` bytes."""
    head = f"extends: ../small_ci.yaml\nname: {name}\n#".encode()
    return head + b"x" * (size - len(head))


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "limit_test_en.yaml is too large (1,000,001 bytes): a scenario file may be at "
               "most 1 MB (1,000,000 bytes)."),
        ("zh", "limit_test_zh.yaml 太大（1,000,001 字节）：情景文件最大 1 MB（1,000,000 字节）。"),
    ],
)  # fmt: skip
def test_the_upload_limit_is_the_one_streamlit_states_and_a_file_over_it_is_named(lang, expected):
    """One limit: the megabyte Streamlit's upload box states ("1MB per file"; its browser
    side counts 1,000,000 bytes), enforced here to the byte. A file of exactly the limit is a
    scenario like any other; one byte more is refused with its name, its size and the limit,
    and not kept."""
    assert (UPLOAD_LIMIT_MB, MAX_UPLOAD_BYTES) == (1, 1_000_000)
    name = f"limit_test_{lang}.yaml"  # one per language: pytest -n 2 may run both at once
    try:
        at_limit = _padded("limit_test", MAX_UPLOAD_BYTES)
        assert len(at_limit) == MAX_UPLOAD_BYTES
        assert upload_problem(name, at_limit, lang) is None
        assert target_of(name).read_bytes() == at_limit
        assert upload_problem(name, at_limit + b"x", lang) == expected
        assert target_of(name).read_bytes() == at_limit  # a refused upload replaces nothing
    finally:
        target_of(name).unlink(missing_ok=True)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_file_over_the_limit_uploaded_on_the_run_page_is_an_error_naming_it(tmp_path, lang):
    """Through the page's upload box (which AppTest fills without the browser's own check):
    the page's error names the file, its size and the limit, and nothing is chosen or kept."""
    name = "cardtwin_test_too_big.yaml"
    data = _padded("too_big", MAX_UPLOAD_BYTES + 1)
    at = app(tmp_path, "run", lang=lang, run=None)
    chosen = at.selectbox(key="scenario_choice").value
    at.file_uploader(key="upload").set_value((name, data, "application/x-yaml")).run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [upload_problem(name, data, lang)]
    assert name in at.error[0].value and "1,000,001" in at.error[0].value
    assert "1 MB" in at.error[0].value and "KB" not in at.error[0].value
    assert at.selectbox(key="scenario_choice").value == chosen
    assert not target_of(name).exists() and not at.success


def test_a_good_upload_is_kept_beside_the_shipped_scenarios():
    data = b"extends: ../small_ci.yaml\nname: uploaded_test\nseed: 5\n"
    try:
        assert upload_problem("my scenario.yaml", data, "zh") is None
        target = target_of("my scenario.yaml")
        assert target.name == "my_scenario.yaml" and target.read_bytes() == data
        assert api.load_scenario(target).seed == 5
    finally:
        target_of("my scenario.yaml").unlink(missing_ok=True)


def test_reopen_lists_runs_and_marks_broken_ones(runs, tmp_path):
    shutil.copytree(runs / "small", tmp_path / "good")
    shutil.copytree(runs / "small", tmp_path / "bad")
    (tmp_path / "bad" / MARKER_FILE).unlink()
    at = app(tmp_path, "run", run=None)
    folder = i18n.t("run.col.folder", "zh")
    table = next(d.value for d in at.dataframe if folder in d.value.columns)
    assert set(table[folder]) == {"good", "bad"}
    at.selectbox(key="reopen_choice").set_value(str(tmp_path / "bad"))
    at.button(key="reopen_button").click().run()
    assert not at.exception
    assert any("has not finished" in e.value for e in at.error)


def test_the_incident_table_round_trips_and_a_missing_cell_is_named():
    path = ROOT / "scenarios" / "incidents" / "metro_line_outage.yaml"
    scenario = api.load_scenario(path)
    frame = incident_frame(scenario)
    same = FlagOverride("incidents", "incidents", incidents_yaml(frame))
    assert api.load_scenario(path, [same]).incidents == scenario.incidents
    frame.loc[0, "start"] = None
    broken = FlagOverride("incidents", "incidents", incidents_yaml(frame))
    with pytest.raises(api.BadInput) as exc:
        api.load_scenario(path, [broken])
    assert errors_by_field(str(exc.value), [broken]) == {
        "incidents": ["incidents.0.start: missing required field; expected datetime"]
    }


def test_yuan_typed_in_the_form_become_fen():
    assert fen_text(2.0) == "200" and fen_text(0.5) == "50" and fen_text(1.1) == "110"
    assert fen_text(2.345) != "234"  # not a whole fen: the engine's message says so


def test_the_runs_brief_is_offered_as_html_and_a_one_page_pdf(runs):
    at = app(runs, "explore")
    html = next(b for b in at.get("download_button") if b.label == "下载简报（HTML）")
    assert html is not None
    next(b for b in at.button if b.label == "生成PDF").click().run()
    assert not at.exception, at.exception
    made = [k for k in at.session_state if str(k).startswith("explore.b_pdf:")]
    pdf = at.session_state[made[0]]
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    page = brief.run_brief(runs / "small", "en")
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)  # plotly.js inlined
    assert "<html" in markup and not re.search(r'(src|href)="https?://', markup)


def test_another_scenario_starts_the_form_from_its_own_values(runs):
    at = app(runs, "run")
    at.number_input(key="f_days").set_value(3)
    at.text_input(key="f_out").set_value("kept_name")
    at.run()
    _choose_small(at)
    assert at.number_input(key="f_days").value == min(7, api.load_scenario(SMALL).period.days)
    assert at.text_input(key="f_out").value != "kept_name"


def test_a_scenario_without_a_transfer_discount_has_no_transfer_fields(runs):
    data = b"extends: ../small_ci.yaml\nname: no_transfer\nfares: {transfer: null}\n"
    try:
        assert upload_problem("no_transfer.yaml", data, "en") is None
        at = app(runs, "run")
        at.selectbox(key="scenario_choice").set_value(str(target_of("no_transfer.yaml"))).run()
        assert not at.exception, at.exception
        keys = [w.key for w in at.number_input]
        assert "f_days" in keys and "f_window" not in keys and "f_off" not in keys
    finally:
        target_of("no_transfer.yaml").unlink(missing_ok=True)


def test_incident_text_stays_text_and_numbers_stay_numbers():
    path = ROOT / "scenarios" / "incidents" / "metro_line_outage.yaml"
    frame = incident_frame(api.load_scenario(path))
    frame.loc[0, "description"] = "12:30"
    edited = FlagOverride("incidents", "incidents", incidents_yaml(frame))
    incident = api.load_scenario(path, [edited]).incidents[0]
    assert incident.description == "12:30" and incident.duration_min == 120


def _open_tab(at, name: str, lang: str = "en"):
    """Open the Explore tab ``name`` and rerun."""
    at.session_state["explore_tab"] = i18n.t(f"explore.tab.{name}", lang)
    at.run()
    assert not at.exception, (name, at.exception)
    return at


def test_a_multi_city_run_renders_every_tab_and_names_its_cities(scaled_two_city):
    at = app(scaled_two_city.parent, "explore", lang="en", run=scaled_two_city.name)
    assert any("This run has 2 cities (Alpha, Beta)" in c.value for c in at.caption)
    for name in ("ridership", "money", "outlets", "faults", "clearing", "map"):
        _open_tab(at, name)
        assert at.get("plotly_chart"), name
    at.switch_page("views/trace.py")
    at.run()
    assert not at.exception


def test_the_incident_timeline_lists_every_citys_incidents_with_their_cities(scaled_two_city):
    """Each city's incidents, named with the city in the page's language; the clearing
    centre's outage both cities' records went through once, with both."""
    at = app(scaled_two_city.parent, "explore", lang="en", run=scaled_two_city.name)
    _open_tab(at, "faults")
    (timeline,) = [d.value for d in at.dataframe if "Kind" in d.value.columns]
    assert list(timeline.columns) == [
        "City", "Id", "Kind", "Start", "Duration", "Target", "Details",
    ]  # fmt: skip
    assert list(timeline["City"]) == ["Alpha", "Alpha, Beta", "Beta"]
    assert list(timeline["Id"]) == ["county-desk-shut", "centre-down", "alipay-down"]
    assert list(timeline["Kind"]) == ["Outlet closed", "Clearing node down", "QR platform down"]
    assert timeline["Target"].iloc[2] == "QR (Alipay)"
    # the clearing node and the outlet by name in the page's language, the id after it
    assert timeline["Target"].iloc[1] == "Regional Clearing Centre (REGION_CENTRE)"
    assert timeline["Target"].iloc[0] == "County Service Point (3)"
    assert any("Every city's incident timeline" in c.value for c in at.caption)
    assert not any("first city" in c.value for c in at.caption)
    at = app(scaled_two_city.parent, "explore", lang="zh", run=scaled_two_city.name)
    _open_tab(at, "faults", "zh")
    (timeline,) = [d.value for d in at.dataframe if "类型" in d.value.columns]
    assert list(timeline["城市"]) == ["甲城", "甲城、乙城", "乙城"]
    assert timeline["对象"].iloc[1] == "区域清算中心（REGION_CENTRE）"
    assert timeline["对象"].iloc[0] == "县区服务点（3）"


def test_one_incident_of_two_cities_names_each_citys_outlet(tmp_path):
    """The same outlet closure (outlet 3, same time, same length) in two cities is listed once
    with both; where the cities' outlets files name outlet 3 differently, each city's name is
    shown after the city, not the first city's for both (the shipped two-city scenario shares
    one outlets file: here beta has its own, outlet 3 renamed)."""
    files = tmp_path / "files"
    files.mkdir()
    shipped = ROOT / "scenarios" / "two_city"
    outlets = (shipped / "outlets.csv").read_text("utf-8")
    assert "\n3,县区服务点," in outlets
    (files / "beta_outlets.csv").write_text(outlets.replace("\n3,县区服务点,", "\n3,城南服务点,"))
    closure = (
        '[{id: desk-3-shut, kind: outlet_closure, target: "3", start: "2024-03-04 09:00", '
        "duration_min: 60}]"
    )
    for city, extra in (("alpha", ""), ("beta", "outlets: {file: beta_outlets.csv}\n")):
        (files / f"{city}.yaml").write_text(
            f"extends: {shipped / city}.yaml\n{extra}incidents: {closure}\n", "utf-8"
        )
    multi = (ROOT / "scenarios" / "two_city.yaml").read_text("utf-8")
    scenario = files / "two_city.yaml"
    scenario.write_text(multi.replace("two_city/", ""), "utf-8")
    runs = tmp_path / "runs"
    settings = ["cities.alpha.scale=0.2", "cities.beta.scale=0.2"]
    api.run(api.load_scenario(scenario, settings, days=1), runs / "two")
    at = app(runs, "explore", lang="en", run="two")
    _open_tab(at, "faults")
    (timeline,) = [d.value for d in at.dataframe if "Kind" in d.value.columns]
    assert list(timeline["City"]) == ["Alpha, Beta"]
    (target,) = timeline["Target"]
    assert target.startswith("Alpha: County Service Point; Beta: ") and target.endswith(" (3)")
    assert "County" not in target.removeprefix("Alpha: County Service Point"), target
    at = app(runs, "explore", lang="zh", run="two")
    _open_tab(at, "faults", "zh")
    (timeline,) = [d.value for d in at.dataframe if "类型" in d.value.columns]
    assert list(timeline["对象"]) == ["甲城：县区服务点；乙城：城南服务点（3）"]


def test_english_pages_name_every_citys_regions_in_english(scaled_two_city):
    """The other city's regions are keyed 乙城 城区 in the data; an English page says Beta
    Centre (its city's and its own scenario ids), a Chinese page keeps the Chinese. Every
    city's regions carry their city's name, the first city's too (Alpha Centre beside Beta
    Centre, not Centre)."""
    at = app(scaled_two_city.parent, "explore", lang="en", run=scaled_two_city.name)
    english = {"Alpha Centre", "Alpha County", "Beta Centre", "Beta County"}
    at.radio(key="explore_dimension:en").set_value("region").run()
    assert not at.exception, at.exception
    (bars,) = chart_texts(at, "bar")
    assert set(bars) == english
    _open_tab(at, "money")
    assert not [t for labels in chart_texts(at, "bar") for t in labels if CJK.search(t)]
    _open_tab(at, "map")
    (points,) = chart_texts(at, "scatter")
    assert {p.split("<br>")[0] for p in points} == english
    _open_tab(at, "outlets")
    (hours,) = [d.value for d in at.dataframe if "Region" in d.value.columns]
    assert set(hours["Region"]) == english and set(hours["City"]) == {"Alpha", "Beta"}
    at = app(scaled_two_city.parent, "explore", lang="zh", run=scaled_two_city.name)
    _open_tab(at, "map", "zh")
    (points,) = chart_texts(at, "scatter")
    assert {p.split("<br>")[0] for p in points} == {
        "甲城 城区",
        "甲城 县区",
        "乙城 城区",
        "乙城 县区",
    }
    assert any("此运行包含 2 个城市（甲城、乙城）" in c.value for c in at.caption)


@pytest.mark.parametrize(
    ("lang", "names"),
    [
        ("zh", {"城区": "甲城 城区", "县区": "甲城 县区", "乙城 城区": "乙城 城区",
                "乙城 县区": "乙城 县区"}),
        ("en", {"城区": "Alpha Centre", "县区": "Alpha County", "乙城 城区": "Beta Centre",
                "乙城 县区": "Beta County"}),
    ],
)  # fmt: skip
def test_every_citys_regions_are_named_with_their_city_under_the_queries_keys(
    scaled_two_city, lang, names
):
    """The queries key the first city's regions without a prefix (城区) and the others after
    their city (乙城 城区); the names shown put every city's name first, the first's too. A run
    of one city names its regions alone."""
    meta = json.loads((scaled_two_city / "run_meta.json").read_text("utf-8"))
    view = api.open_run(scaled_two_city)
    try:
        keys = set(view.by_region("card_sales")["key"]) | set(view.breakdown("region")["key"])
    finally:
        view.close()
    assert keys <= set(names)  # the keys are the queries' own
    assert places.region_names(meta, lang) == names
    label = places.region_label(meta, lang)
    assert label("城区") == names["城区"] and label("其他") == "其他"  # an unknown key as it is
    alone = {**meta, "cities": meta["cities"][:1]}  # alpha as a run of its own
    assert places.region_names(alone, lang) == (
        {"城区": "城区", "县区": "县区"} if lang == "zh" else {"城区": "Centre", "县区": "County"}
    )


def test_the_map_and_the_outlets_show_every_city_or_the_one_picked(scaled_two_city):
    """All cities first; picking one shows its regions and outlets alone (both cities run the
    same outlets file, so each has an outlet 1: they are told apart by their city)."""
    at = app(scaled_two_city.parent, "explore", lang="en", run=scaled_two_city.name)
    _open_tab(at, "map")
    picker = at.selectbox(key="map_city:en")
    assert picker.options == ["All cities", "Alpha", "Beta"] and picker.value == "all"
    (points,) = chart_texts(at, "scatter")
    assert len(points) == 4
    picker.set_value(1).run()
    assert not at.exception, at.exception
    (points,) = chart_texts(at, "scatter")
    assert {p.split("<br>")[0] for p in points} == {"Beta Centre", "Beta County"}
    _open_tab(at, "outlets")
    (hours,) = [d.value for d in at.dataframe if "Outlet id" in d.value.columns]
    assert list(hours["City"]) == ["Alpha"] * 3 + ["Beta"] * 3
    (rows,) = chart_texts(at, "heatmap")
    assert {r.split(" · ")[0] for r in rows} == {"Alpha", "Beta"}  # both cities had visitors
    at.selectbox(key="outlets_city:en").set_value(1).run()
    assert not at.exception, at.exception
    (hours,) = [d.value for d in at.dataframe if "Outlet id" in d.value.columns]
    assert len(hours) == 3 and "City" not in hours.columns
    assert set(hours["Region"]) == {"Beta Centre", "Beta County"}
    (rows,) = chart_texts(at, "heatmap")
    assert rows and not [r for r in rows if " · " in r]  # one city: the outlets' own names


def test_clearing_figures_of_a_scaled_city_are_expanded_and_marked_as_estimates(
    scaled_two_city,
):
    """Beta ran at 20%: its card issuer's position is shown five times what the run settled,
    marked as an estimate (≈ / 约); alpha's own, all full scale, as it was."""
    books = ds.dataset(scaled_two_city / "settlements", partitioning="hive").to_table()
    books = books.to_pandas()  # the run's own books, unexpanded
    simulated = books.groupby(books["participant_id"].astype(str))["net_position_fen"].sum()
    at = app(scaled_two_city.parent, "explore", lang="en", run=scaled_two_city.name)
    assert all(m.value.startswith("≈ ") for m in at.metric if m.value != "0")
    _open_tab(at, "clearing")
    (table,) = [d.value for d in at.dataframe if "Participant" in d.value.columns]
    net = table.set_index("Participant id")["Net position (positive = owed to it)"]
    assert net["BETA_CARD"] == f"≈ {i18n.yuan(5 * int(simulated['BETA_CARD']), 'en')}"
    assert net["ALPHA_CARD"] == i18n.yuan(int(simulated["ALPHA_CARD"]), "en")
    assert any(
        "so they are estimates; a figure shown alone is marked ≈" in c.value for c in at.caption
    )
    flows = [t for texts in chart_texts(at, "scatter") for t in texts if "→" in t]
    assert any(
        t.startswith("Beta Centre bus operator → Beta Data Exchange Centre: ≈ ¥")
        and t.endswith("<br>BETA_BUS_CENTRE → BETA_EXCHANGE")
        for t in flows
    )
    at = app(scaled_two_city.parent, "explore", lang="zh", run=scaled_two_city.name)
    _open_tab(at, "clearing", "zh")
    (table,) = [d.value for d in at.dataframe if "参与方" in d.value.columns]
    net = table.set_index("参与方代码")["净头寸（正数为应收）"]
    assert net["BETA_CARD"] == f"约{i18n.yuan(5 * int(simulated['BETA_CARD']), 'zh')}"


def test_device_upload_counts_of_a_scaled_city_are_expanded_and_marked(scaled_two_city, runs):
    """The faults tab's upload batches, records and resends: beta's batches counted at its
    weight (RunView.device_uploads), so estimates, marked ≈ / 约; a full-scale run's are not."""
    view = api.open_run(scaled_two_city)
    try:
        uploads = view.device_uploads()
    finally:
        view.close()
    simulated = ds.dataset(scaled_two_city / "device_uploads", partitioning="hive").count_rows()
    batches, records = int(uploads["batches"].sum()), int(uploads["records"].sum())
    assert batches > simulated  # expanded
    at = app(scaled_two_city.parent, "explore", lang="en", run=scaled_two_city.name)
    _open_tab(at, "faults")
    shown = {m.label: m.value for m in at.metric}
    assert shown["Device upload batches"] == f"≈ {i18n.count(batches, 'en')}"
    assert shown["Records uploaded"] == f"≈ {i18n.count(records, 'en')}"
    at = app(scaled_two_city.parent, "explore", lang="zh", run=scaled_two_city.name)
    _open_tab(at, "faults", "zh")
    shown = {m.label: m.value for m in at.metric}
    assert shown["设备上传批次"] == f"约{i18n.count(batches, 'zh')}"
    at = _open_tab(app(runs, "explore", lang="en"), "faults")
    shown = {m.label: m.value for m in at.metric}
    full = ds.dataset(runs / "small" / "device_uploads", partitioning="hive").count_rows()
    assert shown["Device upload batches"] == i18n.count(full, "en")


def _replace_box(at):
    (box,) = [c for c in at.checkbox if str(c.key).startswith("f_replace:")]
    return box


def _meta(folder: Path) -> dict:
    return json.loads((folder / "run_meta.json").read_text("utf-8"))


def test_the_default_folder_follows_the_days_and_a_run_is_replaced_only_when_ticked(tmp_path):
    at = app(tmp_path, "run", lang="en", run=None)
    _choose_small(at)
    assert at.text_input(key="f_out").value == ""  # empty: named after the scenario and days
    at.number_input(key="f_days").set_value(1)
    at.button[0].click().run()
    assert not at.exception, at.exception
    first = tmp_path / "small_ci_1d"  # the days chosen, not the form's first 7
    assert _meta(first)["period"]["days"] == 1 and not (tmp_path / "small_ci_7d").exists()
    before = (first / "run_meta.json").read_bytes()
    # Again with another seed, same days: same folder name, so the page asks first.
    at.text_input(key="f_seed").set_value("9")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("already holds a run" in e.value and "small_ci_1d" in e.value for e in at.error)
    assert (first / "run_meta.json").read_bytes() == before  # nothing replaced
    replace = _replace_box(at)
    assert replace.label == "Replace the existing run small_ci_1d" and not replace.value
    replace.check()
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert _meta(first)["seed"] == 9  # replaced, as the user asked
    assert any("Run finished" in s.value for s in at.success)
    assert not [c for c in at.checkbox if str(c.key).startswith("f_replace")]
    at.button[0].click().run()  # that yes was for one run: the same start asks again
    assert any("already holds a run" in e.value for e in at.error)
    assert not _replace_box(at).value and _meta(first)["seed"] == 9


def test_a_folder_that_is_not_a_run_is_never_offered_for_replacing(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine", "utf-8")
    at = app(tmp_path, "run", lang="en", run=None)
    _choose_small(at)
    at.number_input(key="f_days").set_value(1)
    at.text_input(key="f_out").set_value("notes")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("is not a CardTwin run" in e.value for e in at.error)
    assert not [c for c in at.checkbox if str(c.key).startswith("f_replace")]
    assert [p.name for p in mine.iterdir()] == ["todo.txt"]


@pytest.mark.parametrize("seed", ["abc", "-1", "1.5"])
def test_a_seed_that_is_not_a_whole_number_is_a_message_under_the_field(tmp_path, seed):
    at = app(tmp_path, "run", lang="en", run=None)
    _choose_small(at)
    at.text_input(key="f_seed").set_value(seed)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        f"The seed must be a whole number 0 or more (e.g. 42); got '{seed}'."
    ]
    assert not any(tmp_path.iterdir())


def test_a_seed_above_what_a_browser_number_holds_runs(tmp_path):
    """The engine takes any seed >= 0; 2**60 is beyond a JavaScript number (2**53)."""
    data = f"extends: ../small_ci.yaml\nname: big_seed\nseed: {2**60}\n".encode()
    target = target_of("cardtwin_test_big_seed.yaml")
    try:
        assert upload_problem(target.name, data, "en") is None
        at = app(tmp_path, "run", lang="en", run=None)
        at.selectbox(key="scenario_choice").set_value(str(target)).run()
        assert not at.exception, at.exception
        assert at.text_input(key="f_seed").value == str(2**60)
        at.number_input(key="f_days").set_value(1)
        at.button[0].click().run()
        assert not at.exception, at.exception
        assert _meta(tmp_path / "big_seed_1d")["seed"] == 2**60
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("lang", "limit", "kinds", "description"),
    [
        ("zh", "最大 1 MB", "如“读卡器故障”“清算节点宕机”", "情景说明（情景文件只有英文说明）："),
        ("en", "", "e.g. Reader out of order, Clearing node down", ""),
    ],
)  # fmt: skip
def test_the_run_page_states_the_upload_limit_incident_kinds_in_words_and_the_description(
    tmp_path, lang, limit, kinds, description
):
    """The upload box is given the one limit, which Streamlit states under it ("1MB per
    file", in English only): the English label leaves it to that line, the Chinese one says
    the same megabyte in Chinese, and neither gives another unit; the incident table's caption
    gives kinds in words as the table shows them; the scenario's description, which a scenario
    file has in English only, is said to be so on the Chinese page."""
    at = app(tmp_path, "run", lang=lang, run=None)
    _choose_small(at)
    upload = at.file_uploader(key="upload")
    assert upload.proto.max_upload_size_mb == UPLOAD_LIMIT_MB
    assert limit in upload.label and "KB" not in upload.label
    assert ("MB" in upload.label) == bool(limit)
    captions = [c.value for c in at.caption]
    incidents = next(c for c in captions if "2024-01-02T07:00" in c)
    assert kinds in incidents and "validator_outage" not in incidents
    text = " ".join(api.load_scenario(SMALL).description.split())
    assert f"{description}{text}" in captions


def test_a_description_written_in_chinese_is_not_said_to_be_english(tmp_path):
    """The Chinese page says a scenario's description is in English only where it is: one
    written in Chinese is shown as it is; an English one naming a card in Chinese (the policy
    overlays') keeps the note."""
    assert i18n.written_in_chinese("南通小规模测试情景，两天，含一次读卡器故障")
    assert not i18n.written_in_chinese(
        "nantong_2024 with the free-ride (长寿卡) age lowered from 65 to 60."
    )
    assert not i18n.written_in_chinese("Synthetic city 甲城 of the two-city scenario.")
    text = "南通小规模测试情景，两天，含一次读卡器故障"
    data = f"extends: ../small_ci.yaml\nname: zh_description\ndescription: {text}\n".encode()
    target = target_of("cardtwin_test_zh_description.yaml")
    try:
        assert upload_problem(target.name, data, "zh") is None
        at = app(tmp_path, "run", lang="zh", run=None)
        at.selectbox(key="scenario_choice").set_value(str(target)).run()
        assert not at.exception, at.exception
        captions = [c.value for c in at.caption]
        assert f"情景说明：{text}" in captions, captions
        assert not any("只有英文说明" in c for c in captions)
    finally:
        target.unlink(missing_ok=True)


def test_an_upload_of_the_same_name_restarts_the_form_and_says_it_replaced_one(tmp_path):
    name = "cardtwin_test_reupload.yaml"
    target = target_of(name)
    first = b"extends: ../small_ci.yaml\nname: reupload\nseed: 5\n"
    second = b"extends: ../small_ci.yaml\nname: reupload\nseed: 6\n"
    target.unlink(missing_ok=True)
    try:
        at = app(tmp_path, "run", lang="en", run=None)
        at.file_uploader(key="upload").set_value((name, first, "application/x-yaml")).run()
        assert not at.exception, at.exception
        assert at.selectbox(key="scenario_choice").value == str(target)
        assert at.text_input(key="f_seed").value == "5" and not at.warning
        at.number_input(key="f_days").set_value(2)
        at.run()  # the user's edit, then the same file name uploaded with other contents
        at.file_uploader(key="upload").set_value((name, second, "application/x-yaml")).run()
        assert not at.exception, at.exception
        assert at.text_input(key="f_seed").value == "6"  # the new file's values
        assert at.number_input(key="f_days").value == 7
        assert any("was replaced by this one" in w.value for w in at.warning)
        assert target.read_bytes() == second
    finally:
        target.unlink(missing_ok=True)


INCIDENTS = (
    '[{id: m1-down, kind: line_outage, target: M1, start: "2024-01-01 08:00", duration_min: 120},'
    ' {id: dearer, kind: fare_change, start: "2024-01-01 00:00", duration_min: 1440,'
    "  fares: {bus: {region_fare_fen: {urban: 250}}}, description: a test fare rise},"
    ' {id: qr-down, kind: qr_platform_outage, target: qr_alipay, start: "2024-01-01 18:00",'
    "  duration_min: 30, no_card_share: 0.25}]"
)


def test_incidents_outlets_and_clearing_roles_are_shown_in_words(tmp_path):
    """No raw codes, English keys, ISO timestamps or dicts: kinds, open days and clearing
    roles from the catalogue, the start as a date and time, a fare change's fares in yuan."""
    scenario = api.load_scenario(SMALL, [f"incidents={INCIDENTS}"], days=1)
    api.run(scenario, tmp_path / "incidents")

    def tab(name: str, lang: str = "en"):
        at.session_state["explore_tab"] = i18n.t(f"explore.tab.{name}", lang)
        at.run()
        assert not at.exception, at.exception
        return [d.value for d in at.dataframe]

    at = app(tmp_path, "explore", lang="en", run="incidents")
    (timeline,) = [t for t in tab("faults") if "Kind" in t.columns]
    assert list(timeline.columns) == ["Id", "Kind", "Start", "Duration", "Target", "Details"]
    assert list(timeline["Kind"]) == ["Line not running", "Fare change", "QR platform down"]
    assert list(timeline["Start"]) == [
        "Jan 1, 2024, 08:00", "Jan 1, 2024, 00:00", "Jan 1, 2024, 18:00",
    ]  # fmt: skip
    assert list(timeline["Duration"]) == ["120 min", "1,440 min", "30 min"]
    # a metro line by the scenario's name of it, a medium in words
    assert list(timeline["Target"]) == ["Metro Line 1 (M1)", "–", "QR (Alipay)"]
    assert timeline["Details"].iloc[1] == (
        "fares become: fares.bus.region_fare_fen.urban = ¥2.50; a test fare rise"
    )
    assert timeline["Details"].iloc[2] == "25.0% of its riders carry no card"
    (hours,) = [t for t in tab("outlets") if "Open days" in t.columns]
    words = {i18n.t(f"code.open_days.{rule}", "en") for rule in OPEN_DAY_RULES}
    assert set(hours["Open days"]) <= words
    (positions,) = [t for t in tab("clearing") if "Role" in t.columns]
    assert set(positions["Role"]) <= {"Issuer", "Acquirer", "Clearing node"}
    at = app(tmp_path, "explore", lang="zh", run="incidents")
    (timeline,) = [t for t in tab("faults", "zh") if "类型" in t.columns]
    assert list(timeline["类型"]) == ["线路停运", "票价调整", "扫码平台故障"]
    assert timeline["对象"].iloc[0] == "地铁1号线（M1）"
    assert timeline["对象"].iloc[2] == "支付宝扫码"
    assert timeline["开始"].iloc[0] == "2024年1月1日 08:00"
    assert "2.50 元" in timeline["详情"].iloc[1]


def test_every_code_the_explore_page_shows_has_words_in_both_languages():
    from sim.clearing import ROLES
    from sim.incidents import KINDS

    for kind, codes in (("open_days", OPEN_DAY_RULES), ("role", ROLES), ("incident_kind", KINDS)):
        for c in codes:
            assert i18n.has(f"code.{kind}.{c}"), (kind, c)


@pytest.mark.parametrize(
    ("lang", "kind_label", "duration"),
    [("zh", "类型", "持续（分钟）"), ("en", "Kind", "Duration (min)")],
)
def test_the_incident_table_is_headed_in_words_and_offers_every_kind(lang, kind_label, duration):
    """The Run form's incident table: its common columns named from the catalogue, the kind
    picked from the engine's kinds in words, the cell keeping the code the YAML needs."""
    from dashboard.overrides import incident_columns
    from sim.incidents import KINDS

    scenario = api.load_scenario(ROOT / "scenarios" / "incidents" / "metro_line_outage.yaml")
    config = incident_columns(incident_frame(scenario), lang)
    assert config["kind"]["label"] == kind_label and config["duration_min"]["label"] == duration
    options = config["kind"]["type_config"]["options"]
    assert [o["value"] for o in options] == list(KINDS)
    words = {o["value"]: o["label"] for o in options}
    expected = "线路停运" if lang == "zh" else "Line not running"
    assert words["line_outage"] == f"{expected} (line_outage)"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_incident_field_is_headed_in_words_with_its_scenario_name_in_its_help(lang):
    """The less common fields (a duplicate wave's share, a fare change's fares, ...) are headed
    in the page's language like the common ones, not by their scenario names; the help under
    each heading gives that name, which the engine's messages use."""
    from dashboard.overrides import incident_columns
    from sim.incidents import Incident

    frame = pd.DataFrame(columns=list(Incident.model_fields))
    config = incident_columns(frame, lang)
    assert list(config) == list(Incident.model_fields)
    for field, column in config.items():
        label = column["label"]
        assert field not in label and "_" not in label, (field, label)
        assert bool(CJK.search(label)) == (lang == "zh"), (field, label)
        assert f"incidents[].{field}" in column["help"], field
    shares = {"zh": "被扣两次的刷卡比例（0–1）", "en": "Share of card taps charged twice (0–1)"}
    assert config["duplicate_share"]["label"] == shares[lang]
