"""The dashboard for readers of English as well as Chinese: one copy of the number formats for
the pages and the lab's reports, the estimate mark that leaves a zero alone, outlet and
institution names in English, and the compare brief's estimates marked as the run brief's are.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import yaml
from page_texts import CJK, chart_texts
from streamlit.testing.v1 import AppTest

import sim.lab_report
from dashboard import brief, i18n, institutions, lines, names
from sim import api, formats

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A runs folder holding one finished 1-day run of the small Nantong scenario."""
    root = tmp_path_factory.mktemp("english_runs")
    api.run(api.load_scenario(ROOT / "scenarios" / "small_ci.yaml", days=1), root / "small")
    return root


def _explore(runs: Path, tab: str, lang: str, run: str = "small") -> AppTest:
    """The Explore page of ``run`` in ``lang`` with ``tab`` open."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["runs_root"] = str(runs)
    at.session_state["lang"] = lang
    at.session_state["run_dir"] = str(runs / run)
    at.run()
    at.switch_page("views/explore.py")
    at.run()
    at.session_state["explore_tab"] = i18n.t(f"explore.tab.{tab}", lang)
    at.run()
    assert not at.exception, at.exception
    return at


# --- one copy of the formats ------------------------------------------------------------------


def test_the_dashboard_and_the_lab_reports_format_with_one_copy():
    """The dashboard's formats are sim/formats.py's own (not a copy), and the lab's report
    texts write through them too: no Babel of its own."""
    for name in ("count", "yuan", "percent", "date", "time_of_day", "estimate", "LOCALES"):
        assert getattr(i18n, name) is getattr(formats, name), name
    assert not [n for n in vars(sim.lab_report) if n.startswith("format_")]
    assert sim.lab_report.money_text(2_648_343.4, "zh") == "2.65万元"
    assert sim.lab_report.money_text(114_998.2, "en") == "¥1,149.98"
    assert sim.lab_report.count_text(1_140_313.6, "zh") == "114.03万"
    assert sim.lab_report.count_text(1_140_313.6, "en") == "1,140,314"


# --- the estimate mark ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text", "lang", "estimated", "shown"),
    [
        (1200, "1,200", "en", True, "≈ 1,200"),
        (1200, "1,200", "zh", True, "约1,200"),
        (-5, "¥-0.05", "en", True, "≈ ¥-0.05"),
        (1200, "1,200", "en", False, "1,200"),
        (0, "0", "en", True, "0"),  # nothing expands to nothing
        (0.0, "0.00 元", "zh", True, "0.00 元"),
        (None, "–", "en", True, "–"),  # no figure
        (math.nan, "–", "zh", True, "–"),
    ],
)
def test_an_estimate_is_marked_but_never_a_zero(value, text, lang, estimated, shown):
    assert i18n.estimate(value, text, lang, estimated) == shown


# --- outlet names in English ------------------------------------------------------------------


NANTONG_PLACES = {"如东": "Rudong", "如皋": "Rugao", "海门": "Haimen", "启东": "Qidong"}


@pytest.mark.parametrize(
    ("zh", "english"),
    [
        ("钟楼广场", "Bell Tower Square"),  # glossary words only
        ("通州政务中心", "Tongzhou Government Service Centre"),  # a place, then a glossary term
        ("港闸便民服务中心", "Gangzha Public Service Centre"),  # the longest entry wins
        ("市民卡服务中心", "Citizen Card Service Centre"),
        ("友谊桥", "Youyi Bridge"),
        ("二甲", "Erjia"),  # a proper name alone: one word, tone marks off
        ("通州三余车站", "Tongzhou Sanyu Station"),  # a long proper name in words of two
        ("西安", "Xi'an"),  # a syllable starting with a vowel inside a word
        ("如东(掘港)", "Rudong (Juegang)"),  # the run's own place name, brackets kept
        ("如皋（星星公交）", "Rugao (Xingxing Bus)"),  # full-width brackets as ASCII ones
        ("区政务中心A051、052号", "District Government Service Centre A051, 052 Hao"),
    ],
)
def test_an_outlet_name_reads_in_english_words(zh, english):
    assert names.english(zh, NANTONG_PLACES) == english
    assert names.outlet_name(zh, "en", NANTONG_PLACES) == english
    assert names.outlet_name(zh, "zh", NANTONG_PLACES) == zh  # Chinese as the file writes it


def test_a_character_without_pinyin_is_kept_not_lost():
    """㐂 has no reading in pypinyin: it stays as the data writes it, the rest is translated."""
    assert names.english("㐂广场") == "㐂 Square"
    assert names.english("Plaza 1") == "Plaza 1"  # nothing Chinese: as it is
    assert names.english("A一B") == "A Yi B"  # a code's letters do not run into a name's


def test_the_run_s_own_place_names_win_over_the_glossary():
    """A place the run names (城区: the region 'centre') says what the region column says."""
    assert names.english("城区服务点") == "Cheng District Service Point"
    assert names.english("城区服务点", {"城区": "Centre"}) == "Centre Service Point"


def test_every_shipped_outlet_has_an_english_name_in_latin_letters():
    """Every outlet of every shipped outlets file reads without a Chinese character, and the
    same name gives the same words each time."""
    files = [*ROOT.glob("data/*/outlets.csv"), *ROOT.glob("scenarios/**/outlets.csv")]
    assert files
    for path in files:
        for row in csv.DictReader(path.open(encoding="utf-8")):
            shown = names.english(row["name_zh"], NANTONG_PLACES)
            assert shown and not CJK.search(shown), (path, row["name_zh"], shown)
            assert shown == names.english(row["name_zh"], dict(NANTONG_PLACES))


def test_the_outlets_tab_names_outlets_in_english_on_an_english_page(small_run):
    at = _explore(small_run, "outlets", "en")
    (hours,) = [d.value for d in at.dataframe if "Outlet id" in d.value.columns]
    shown = dict(zip(hours["Outlet id"], hours["Outlet"], strict=True))
    assert shown[1] == "Bell Tower Square" and shown[11] == "Rudong (Juegang)"
    assert not [n for n in shown.values() if CJK.search(n)]
    (rows,) = chart_texts(at, "heatmap")
    assert rows and not [r for r in rows if CJK.search(r)]
    at = _explore(small_run, "outlets", "zh")
    (hours,) = [d.value for d in at.dataframe if "网点编号" in d.value.columns]
    assert "钟楼广场" in set(hours["网点"])


# --- metro lines by name --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zh", "zh_shown", "en_shown"),
    [
        ("1号线", "地铁1号线", "Metro Line 1"),  # how the scenarios name their lines
        ("地铁1号线", "地铁1号线", "Metro Line 1"),  # the word for metro not said twice
        ("轨道交通10 号线", "地铁10 号线", "Metro Line 10"),
        ("S1线", "地铁S1线", "Metro Line S1"),  # a line known by a code
        ("１号线", "地铁１号线", "Metro Line 1"),  # full-width digits
        ("机场线", "地铁机场线", "Metro Airport Line"),  # a line known by a name: its words
        ("如东线", "地铁如东线", "Metro Rudong Line"),  # after a place of the run
        ("磁悬浮", "地铁磁悬浮", "Metro Cixuanfu"),  # anything else in English words (pinyin)
    ],
)
def test_a_metro_line_is_named_from_its_chinese_name_in_both_languages(zh, zh_shown, en_shown):
    assert lines.line_label(zh, "zh", NANTONG_PLACES) == zh_shown
    assert lines.line_label(zh, "en", NANTONG_PLACES) == en_shown
    assert lines.station_label(en_shown, 5, "en") == f"{en_shown} station 6"
    assert lines.station_label(zh_shown, 5, "zh") == f"{zh_shown}第6站"


def test_every_shipped_metro_line_has_an_english_name_from_its_data():
    """Every metro line of every shipped scenario file reads in English from its Chinese name,
    in Latin letters and not by its id: "1号线" is "Metro Line 1", whatever the city."""
    found = 0
    for path in sorted(ROOT.glob("scenarios/**/*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        metro = ((data.get("network") or {}) if isinstance(data, dict) else {}).get("metro") or {}
        for line_id, line in metro.items():
            shown = lines.line_label(line["name_zh"], "en")
            assert shown.startswith("Metro Line ") and not CJK.search(shown), (path, shown)
            assert line_id not in shown, (path, line_id, shown)
            number = re.fullmatch(r"(\d+)号线", line["name_zh"])
            assert number is None or shown == f"Metro Line {number[1]}", (path, shown)
            found += 1
    assert found >= 20  # Nantong's and the YRD cities' lines


def test_the_explore_page_names_lines_stations_and_devices_from_the_scenario(tmp_path):
    """The incident timeline names what each incident hits, the id beside it, in both
    languages: a metro line by the scenario's Chinese name, changed here (M1 is "地铁S1线"), in
    English by rule; a station by its line and number; a generated bus line by its region and
    number; a device by what it is on which line: a reader on a line's buses, a gate at a
    station (the devices' lines and stations as the engine's world has them)."""
    scenario_file = ROOT / "scenarios" / "small_ci.yaml"
    network = api.build(
        api.load_scenario(scenario_file, ["network.metro.M1.name_zh=地铁S1线"], days=1),
        people=False,
    ).network
    ids = network.lines.ids
    reader = next(d for d, line in enumerate(network.devices.line) if ids[line] == "urban-B003")
    m1 = ids.index("M1")
    gate = int(network.devices.first_of_stop[network.lines.stop_ptr[m1] + 5])  # station 6
    incidents = (
        '[{id: m1, kind: line_outage, target: M1, start: "2024-01-01 08:00", duration_min: 60},'
        ' {id: m2s, kind: station_outage, target: "M2:4", start: "2024-01-01 09:00",'
        "  duration_min: 60},"
        ' {id: bus, kind: line_outage, target: urban-B001, start: "2024-01-01 10:00",'
        "  duration_min: 60},"
        f' {{id: dead, kind: validator_outage, target: "{reader}", start: "2024-01-01 11:00",'
        "  duration_min: 60},"
        f' {{id: quiet, kind: comm_outage, target: "{gate}", start: "2024-01-01 12:00",'
        "  duration_min: 60},"
        ' {id: quiet-line, kind: comm_outage, target: rudong-B002, start: "2024-01-01 13:00",'
        "  duration_min: 60}]"
    )
    settings = ["network.metro.M1.name_zh=地铁S1线", f"incidents={incidents}"]
    api.run(api.load_scenario(scenario_file, settings, days=1), tmp_path / "small")
    at = _explore(tmp_path, "faults", "en")
    (timeline,) = [d.value for d in at.dataframe if "Target" in d.value.columns]
    assert list(timeline["Target"]) == [
        "Metro Line S1 (M1)",
        "Metro Line 2 station 5 (M2:4)",
        "Urban bus B001 (urban-B001)",
        f"Urban bus B003 reader ({reader})",
        f"Metro Line S1 station 6 gate ({gate})",
        "Rudong bus B002 (rudong-B002)",
    ]
    at = _explore(tmp_path, "faults", "zh")
    (timeline,) = [d.value for d in at.dataframe if "对象" in d.value.columns]
    assert list(timeline["对象"]) == [
        "地铁S1线（M1）",
        "地铁2号线第5站（M2:4）",
        "市区B001路（urban-B001）",
        f"市区B003路车载读卡器（{reader}）",
        f"地铁S1线第6站闸机（{gate}）",
        "如东B002路（rudong-B002）",
    ]
    # The run's data is as it was: the incident ids and targets in run_meta.json, unnamed.
    meta = json.loads((tmp_path / "small" / "run_meta.json").read_text("utf-8"))
    targets = [i["target"] for i in meta["cities"][0]["settings"]["incidents"]]
    assert targets == ["M1", "M2:4", "urban-B001", str(reader), str(gate), "rudong-B002"]
    assert not [c.value for c in at.caption if "线网无法" in c.value]
    # The same run as one written before its network could be built again: bus lines and
    # devices by their ids, metro lines still named, and the page says why.
    older = tmp_path / "older"
    shutil.copytree(tmp_path / "small", older / "small")
    for entry in meta["cities"]:
        del entry["order"]
    (older / "small" / "run_meta.json").write_text(json.dumps(meta), "utf-8")
    at = _explore(older, "faults", "en")
    (timeline,) = [d.value for d in at.dataframe if "Target" in d.value.columns]
    assert list(timeline["Target"]) == [
        "Metro Line S1 (M1)",
        "Metro Line 2 station 5 (M2:4)",
        "urban-B001",
        str(reader),
        str(gate),
        "rudong-B002",
    ]
    why = i18n.t("common.network_not_rebuilt", "en")
    assert why in [c.value for c in at.caption]


def test_a_run_written_before_its_network_could_be_built_again_shows_ids(tmp_path, small_run):
    """A run whose run_meta.json does not keep its regions' order (written before it did) cannot
    have its network built again: its bus lines and devices are shown by their ids, never by
    a network numbered otherwise; its metro lines keep their names (from the settings)."""
    meta = json.loads((small_run / "small" / "run_meta.json").read_text("utf-8"))
    names = lines.run_names(meta, "en")
    assert names.lines[(0, "urban-B001")] == "Urban bus B001"
    assert names.devices[(0, "0")] == "Urban bus B001 reader"
    for entry in meta["cities"]:
        del entry["order"]
    older = lines.run_names(meta, "en")
    assert not older.devices and (0, "urban-B001") not in older.lines
    assert older.lines[(0, "M1")] == "Metro Line 1"


# --- institutions by name -----------------------------------------------------------------------


def test_every_institution_of_a_run_has_a_name_in_both_languages(small_run):
    """Named ones from the scenario's Chinese names, the rest by what they are and where: every
    id the run's clearing wrote is named, none left as a code."""
    meta = json.loads((small_run / "small" / "run_meta.json").read_text("utf-8"))
    view = api.open_run(small_run / "small")
    try:
        flows, books = view.clearing_flows(), view.node_positions()
    finally:
        view.close()
    ids = set(flows["source"]) | set(flows["target"]) | set(books["participant_id"])
    en, zh = institutions.participant_names(meta, "en"), institutions.participant_names(meta, "zh")
    assert ids <= set(en) and ids <= set(zh)
    assert en["NT_EXCHANGE"] == "Nantong City Data Exchange Centre"
    assert zh["NT_EXCHANGE"] == "南通市数据交换中心"
    assert en["QR_ALIPAY"] == "Alipay" and en["NTCARD"] == "Nantong Citizen Card"
    assert en["SHANGHAI_EXCHANGE"] == "Shanghai clearing node"  # named by its city alone
    assert zh["SHANGHAI_EXCHANGE"] == "上海清算节点"
    assert en["NT_BUS_RUDONG"] == "Rudong bus operator" and zh["NT_BUS_RUDONG"] == "如东公交"
    assert en["NT_METRO"] == "Urban metro operator"  # after the region its lines run in
    assert en["SHANGHAI_CARD"] == "Shanghai card issuer"  # sim.interop's default id
    assert en["SHANGHAI_TRANSIT"] == "Shanghai transit operator"
    assert not [n for n in en.values() if CJK.search(n)]
    label = institutions.participant_label(meta, "en")
    assert label("NO_SUCH_BANK") == "NO_SUCH_BANK"  # an id the settings do not know


def test_a_city_s_own_settings_name_its_institutions_before_its_neighbours_listing(
    scaled_two_city,
):
    """Alpha lists beta's acquirer (BETA_BUS_CENTRE) as beta's transit; beta's own settings say
    it is the bus operator of its centre, and that is its name."""
    meta = json.loads((scaled_two_city / "run_meta.json").read_text("utf-8"))
    found = api.run_participants(meta)
    assert found["BETA_BUS_CENTRE"].kind == "bus"
    assert found["BETA_BUS_CENTRE"].region.key == "乙城 城区"
    en = institutions.participant_names(meta, "en")
    assert en["BETA_BUS_CENTRE"] == "Beta Centre bus operator"
    assert en["BETA_EXCHANGE"] == "Beta Data Exchange Centre"
    assert institutions.participant_names(meta, "zh")["BETA_BUS_CENTRE"] == "乙城 城区公交"


def test_the_clearing_tab_shows_institutions_by_name_with_their_ids(small_run):
    at = _explore(small_run, "clearing", "en")
    (table,) = [d.value for d in at.dataframe if "Participant id" in d.value.columns]
    assert list(table.columns[:4]) == ["Clearing node", "Node id", "Participant", "Participant id"]
    row = table.set_index("Participant id").loc["NT_BUS_RUDONG"]
    assert row["Participant"] == "Rudong bus operator"
    assert row["Clearing node"] == "Nantong City Data Exchange Centre"
    assert row["Node id"] == "NT_EXCHANGE"
    (*_, nodes) = [t for t in chart_texts(at, "scatter") if not any("→" in x for x in t)]
    assert "Nantong City Data Exchange Centre" in nodes and "NT_EXCHANGE" not in nodes
    flows = [t for texts in chart_texts(at, "scatter") for t in texts if "→" in t]
    assert any(
        t.startswith("Rudong bus operator → Nantong City Data Exchange Centre: ¥")
        and t.endswith("<br>NT_BUS_RUDONG → NT_EXCHANGE")
        for t in flows
    )
    at = _explore(small_run, "clearing", "zh")
    (table,) = [d.value for d in at.dataframe if "参与方代码" in d.value.columns]
    assert table.set_index("参与方代码").loc["NT_BUS_RUDONG", "参与方"] == "如东公交"


# --- the compare brief marks estimates ----------------------------------------------------------


@pytest.fixture(scope="module")
def scaled_compare(tmp_path_factory) -> Path:
    """A runs folder with a comparison of the small city simulated at half scale: every figure
    of it is expanded by 2, so an estimate."""
    root = tmp_path_factory.mktemp("scaled_compare")
    small = ROOT / "scenarios" / "small_ci.yaml"
    base = api.load_scenario(small, ["scale=0.5"], days=1)
    variant = api.load_scenario(
        small, ["scale=0.5", "fares.transfer.window_min=90", "name=window_90"], days=1
    )
    api.compare(base, [variant], replications=2, out_dir=root / "compare-half")
    return root


def _figures(page: str) -> list[str]:
    """The big figures' values of a brief."""
    return re.findall(r'<div class="value">([^<]*)</div>', page)


@pytest.mark.parametrize(("lang", "mark"), [("en", "≈ "), ("zh", "约")])
def test_the_compare_brief_marks_the_figures_of_a_city_below_full_scale(scaled_compare, lang, mark):
    """Its big figures, their CIs and the summary's amounts are marked as the run brief marks
    them, and the mark is explained; a zero and a percentage are not marked."""
    report = api.load_compare_report(scaled_compare / "compare-half" / "compare.json")
    assert report["scale"] == 0.5
    page = brief.compare_brief(report, lang)
    figures = _figures(page)
    assert len(figures) == len(brief.BIG_FIGURES) + 1
    assert all(f.startswith(mark) for f in figures if f not in ("0", "–")), figures
    note = i18n.t("brief.compare.estimate_note", lang, scale=i18n.percent(0.5, lang))
    assert html.escape(note) in page
    text = sim.lab_report.summary(report, "window_90", lang)
    revenue = report["variants"]["window_90"]["fare_revenue_fen"]["difference"]["mean"]
    shown = sim.lab_report.money_text(abs(revenue), lang)
    assert f"{mark}{shown}" in text and html.escape(text) in page
    table = brief.headline_table(report, "window_90", lang)
    baseline = table[i18n.t("brief.col.baseline", lang)]
    assert all(v.startswith(mark) for v in baseline if v not in ("", "0"))


def test_a_full_scale_comparison_and_an_older_report_are_not_marked(scaled_compare):
    report = api.load_compare_report(scaled_compare / "compare-half" / "compare.json")
    for full in ({**report, "scale": 1.0}, {k: v for k, v in report.items() if k != "scale"}):
        page = brief.compare_brief(full, "en")
        assert not [f for f in _figures(page) if f.startswith("≈")]
        assert "≈" not in sim.lab_report.summary(full, "window_90", "en")
        assert "simulated at a scale" not in page


def test_the_compare_page_marks_the_cards_of_a_city_below_full_scale(scaled_compare, monkeypatch):
    monkeypatch.setenv("CARDTWIN_RUNS", str(scaled_compare))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["runs_root"] = str(scaled_compare)
    at.run()
    at.switch_page("views/compare.py")
    at.run()
    picked = str(scaled_compare / "compare-half" / "compare.json")
    at.selectbox(key="compare.pick").select(picked).run()
    assert not at.exception, at.exception
    assert all(m.value.startswith("约") for m in at.metric if m.value not in ("0", "–"))
    at.session_state["lang"] = "en"
    at.run()
    assert not at.exception, at.exception
    values = [m.value for m in at.metric]
    assert values and all(v.startswith("≈ ") for v in values if v not in ("0", "–")), values
    assert any("simulated at a scale of 50.0%" in c.value for c in at.caption)
