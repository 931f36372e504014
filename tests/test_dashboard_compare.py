"""The Compare page (dashboard/views/compare.py) and the one-page briefs (dashboard/brief.py),
driven through Streamlit's AppTest against a small real comparison, a small real sweep and a
small real run (the 20,000-card test city, one or two days)."""

from __future__ import annotations

import copy
import html
import math
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import brief, i18n
from sim import api
from sim.lab_report import count_text, markdown, money_text, summary
from sim.overlay import overlay_overrides

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
SMALL = ROOT / "scenarios" / "small_ci.yaml"
VARIANT = "window_90"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    """A runs folder with a comparison, a sweep (two levels down) and a broken result file,
    and a finished run beside it."""
    root = tmp_path_factory.mktemp("runs")
    base = api.load_scenario(SMALL, days=2)
    # a --set variant of the small city (the shipped policies extend the full-size city)
    variant = api.load_scenario(SMALL, ["fares.transfer.window_min=90", f"name={VARIANT}"], days=2)
    compare_dir = root / "compare-small"
    api.compare(base, [variant], replications=2, out_dir=compare_dir)
    sweep_dir = root / "study" / "sweep-window"
    api.sweep(
        SMALL,
        ["fares.transfer.window_min=60,90"],
        replications=1,
        days=1,
        workers=0,
        out_dir=sweep_dir,
    )
    scaled_dir = root / "study" / "sweep-scale"  # a point below full scale: estimates
    api.sweep(SMALL, ["scale=0.5,1.0"], replications=1, days=1, workers=0, out_dir=scaled_dir)
    broken = root / "broken"
    broken.mkdir()
    (broken / "compare.json").write_text("{ not json", encoding="utf-8")
    run_dir = tmp_path_factory.mktemp("run") / "small_1d"
    api.run(api.load_scenario(SMALL, days=1), run_dir)
    return {
        "root": root,
        "compare": compare_dir,
        "report": api.load_compare_report(compare_dir / "compare.json"),
        "sweep": sweep_dir,
        "scaled_sweep": scaled_dir,
        "broken": broken,
        "run": run_dir,
    }


def _compare_page(runs_root: Path, monkeypatch) -> AppTest:
    """The dashboard on its Compare page, reading and writing ``runs_root``."""
    monkeypatch.setenv("CARDTWIN_RUNS", str(runs_root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["runs_root"] = str(runs_root)
    at.run()
    at.switch_page("views/compare.py")
    at.run()
    return at


@pytest.fixture
def app(results, monkeypatch) -> AppTest:
    """The dashboard on its Compare page, reading the module's runs folder."""
    return _compare_page(results["root"], monkeypatch)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _pick(at: AppTest, result_file: Path) -> AppTest:
    at.selectbox(key="compare.pick").select(str(result_file)).run()
    _ok(at)
    return at


def _charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def test_page_renders_in_both_languages(app):
    _ok(app)
    assert app.header[0].value == "比较政策"
    zh_tabs = [t.label for t in app.tabs]
    app.session_state["lang"] = "en"
    app.run()
    _ok(app)
    assert app.header[0].value == "Compare policies"
    assert [t.label for t in app.tabs] != zh_tabs
    assert "Run the comparison" in [b.label for b in app.button]


def test_choosing_a_comparison_shows_its_headline_numbers(app, results):
    report = results["report"]
    rows = report["variants"][VARIANT]
    _pick(app, results["compare"] / "compare.json")
    metrics = {m.label: m.value for m in app.metric}
    revenue = rows["fare_revenue_fen"]["difference"]["mean"]
    assert metrics["票款收入"] == brief.amount(revenue, "zh", money=True, signed=True)
    assert "元" in metrics["票款收入"]
    assert [i.value for i in app.info] == [summary(report, VARIANT, "zh")]
    assert _charts(app) >= 4  # change, by group, fairness, hours
    app.session_state["lang"] = "en"
    app.run()
    _ok(app)
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Fare revenue"] == brief.amount(revenue, "en", money=True, signed=True)
    assert [i.value for i in app.info] == [summary(report, VARIANT, "en")]


def test_a_broken_result_file_is_an_error_not_a_traceback(app, results):
    _pick(app, results["broken"] / "compare.json")
    assert any("compare.json" in e.value for e in app.error)


def _form(at: AppTest, **values) -> AppTest:
    """Fill the new-comparison form on the small city and submit it."""
    at.selectbox(key="compare.f_base").select(str(SMALL))
    for key, value in values.items():
        if key == "policies":
            at.multiselect(key="compare.f_policies").set_value(value)
        elif key == "custom":
            at.text_area(key="compare.f_custom").input(value)
        elif key == "name":
            at.text_input(key="compare.f_name").input(value)
        else:
            at.number_input(key=f"compare.f_{key}").set_value(value)
    next(b for b in at.button if b.label == "开始比较").click().run()
    _ok(at)
    return at


def test_bad_input_shows_the_engines_message_beside_the_field(app):
    _form(app, days=0, custom="fares.transfer.window_min=90")
    assert any("period.days" in e.value for e in app.error)
    _form(app, days=1, custom="fares.transfer.window_min=abc")
    assert any("fares.transfer.window_min" in e.value for e in app.error)
    _form(app, days=1, reps=0, custom="fares.transfer.window_min=90")
    assert any("--replications" in e.value for e in app.error)
    _form(app, days=1, reps=1, custom="", name="")
    # (the newest result, shown at once, is the broken file of this module: its own message)
    assert "请至少选择一个政策方案，或填写一个自定义方案。" in [e.value for e in app.error]


def test_a_new_comparison_from_the_form_applies_the_policy_to_the_small_city(app, results):
    policy = ROOT / "scenarios" / "policies" / "transfer_90min.yaml"
    _form(app, policies=[str(policy)], days=1, reps=2, name="form")
    folder = results["root"] / "compare-form"
    assert (folder / "compare.json").is_file()
    assert app.selectbox(key="compare.pick").value == str(folder / "compare.json")
    report = api.load_compare_report(folder / "compare.json")
    assert list(report["variants"]) == ["transfer_90min"]
    assert report["baseline"] == "small_ci" and report["days"] == 1
    assert "票款收入" in [m.label for m in app.metric]


def test_a_policy_applied_as_overrides_is_what_extends_does():
    nantong = ROOT / "scenarios" / "nantong_2024.yaml"
    cards = api.load_scenario(SMALL).population.card_types
    for policy in sorted((ROOT / "scenarios" / "policies").glob("*.yaml")):
        name, _, overrides = overlay_overrides(policy)
        direct = api.load_scenario(policy, days=1)
        rebased = api.load_scenario(nantong, [*overrides, f"name={name}"], days=1)
        ignore = {"description", "output"}  # not policy: left with the file
        assert rebased.model_dump(exclude=ignore) == direct.model_dump(exclude=ignore), name
        on_small = api.load_policy(policy, SMALL, days=1)
        assert on_small.fares == direct.fares and on_small.population.card_types == cards


def test_compare_brief_is_one_self_contained_page_in_one_language(results):
    report = results["report"]
    en = brief.compare_brief(report, "en")
    zh = brief.compare_brief(report, "zh")
    assert en == brief.compare_brief(report, "en")  # no timestamps: the same bytes
    assert html.escape(summary(report, VARIANT, "en")) in en
    assert html.escape(summary(report, VARIANT, "zh")) not in en
    assert html.escape(summary(report, VARIANT, "zh")) in zh
    assert '<html lang="en">' in en and '<html lang="zh-CN">' in zh
    for page in (en, zh):
        assert page.count("<html") == 1 and page.count("<body>") == 1
        assert "<script src" not in page and "<link " not in page  # plotly.js is inline
        assert len(re.findall(r'<div class="chart(?: wide)?">', page)) == 3  # three charts
        assert "@page" in page


def test_the_pdf_of_the_brief_is_made_on_click(app, results):
    _pick(app, results["compare"] / "compare.json")
    assert not [b for b in app.get("download_button") if "PDF" in b.label]
    next(b for b in app.button if b.label == "生成PDF").click().run()
    _ok(app)
    assert not app.error
    assert [b.label for b in app.get("download_button") if "PDF" in b.label] == ["下载简报（PDF）"]
    made = [k for k in app.session_state if str(k).startswith("compare.0.b_pdf:")]
    pdf = app.session_state[made[0]]
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1  # one A4 page


def test_a_pdf_that_cannot_be_made_is_an_error_on_the_page(app, results, monkeypatch, tmp_path):
    monkeypatch.setenv("CARDTWIN_CHROMIUM", str(tmp_path / "no-chromium"))
    _pick(app, results["compare"] / "compare.json")
    app.radio(key="compare.0.b_lang").set_value("en").run()  # not printed (cached) before
    next(b for b in app.button if b.label == "生成PDF").click().run()
    _ok(app)
    assert any("PDF" in e.value and "no-chromium" in e.value for e in app.error)
    assert not [b for b in app.get("download_button") if "PDF" in b.label]


def test_run_brief_prints_to_one_pdf_page(results, tmp_path):
    page = brief.run_brief(results["run"], "en")
    assert page.startswith("<!DOCTYPE html>") and "Run brief: small_ci" in page
    assert "Taps by card type" in page and "长寿卡" not in page
    assert "运行简报" in brief.run_brief(results["run"], "zh")
    pdf = brief.to_pdf(page, tmp_path / "run.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    with pytest.raises(api.BadInput):
        brief.run_brief(tmp_path / "no-such-run", "en")


def _brief_figures(page: str) -> tuple[list[str], str, list[str]]:
    """A run brief's big figures (value, under-line), its summary and its notes, as read."""
    values = [html.unescape(v) for v in re.findall(r'<div class="value">([^<]*)</div>', page)]
    subs = [html.unescape(v) for v in re.findall(r'<div class="sub">([^<]*)</div>', page)]
    (text,) = re.findall(r'<p class="summary">([^<]*)</p>', page)
    notes = [html.unescape(n) for n in re.findall(r'<p class="note">([^<]*)</p>', page)]
    return [f"{v}|{s}" for v, s in zip(values, subs, strict=True)], html.unescape(text), notes


@pytest.mark.parametrize(("lang", "mark"), [("en", "≈ "), ("zh", "约")])
def test_a_run_briefs_expanded_figures_are_marked_as_estimates(
    scaled_two_city, results, tmp_path, lang, mark
):
    """Beta ran at 20%: the brief's headline figures are expanded, as the Explore page's
    cards are, and marked as they are there (≈ / 约), with the page's one-line note; every
    figure the summary repeats is marked too. A full-scale run's brief has neither."""
    view = api.open_run(scaled_two_city)
    try:
        head = view.headline()
    finally:
        view.close()
    page = brief.run_brief(scaled_two_city, lang)
    figures, text, notes = _brief_figures(page)
    taps = i18n.count(head["taps"], lang)
    assert figures[1] == f"{mark}{taps}|" + i18n.t(
        "brief.run.per_day", lang, n=f"{mark}{i18n.count(round(head['taps'] / 2), lang)}"
    )
    assert len(figures) == 5 and all(f.startswith(mark) for f in figures)
    assert notes[0] == i18n.t("common.estimate_note", lang)  # the Explore page's words
    assert f"{mark}{taps}" in text
    assert f"{mark}{i18n.yuan(head['fares_fen'], lang, compact=True)}" in text
    pdf = brief.to_pdf(page, tmp_path / "scaled.pdf").read_bytes()
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1  # the note still fits the page
    figures, text, notes = _brief_figures(brief.run_brief(results["run"], lang))
    assert not [f for f in figures if f.startswith(mark)] and mark not in text
    assert i18n.t("common.estimate_note", lang) not in notes


def test_a_sweep_is_charted_with_its_ci_against_the_parameter(app, results):
    _pick(app, results["sweep"] / "sweep.json")
    assert app.subheader[0].value == "参数扫描：small_ci"
    assert _charts(app) == 1
    assert len(app.dataframe) == 1
    outputs = app.selectbox(key=f"compare.s_out.{results['sweep']}")
    outputs.select("fare_revenue_fen").run()
    _ok(app)
    assert _charts(app) == 1


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_sweeps_figures_below_full_scale_are_marked_and_said_why(results, monkeypatch, lang):
    def show(folder: Path) -> AppTest:  # picked by its Chinese label, then shown in ``lang``
        at = _pick(_compare_page(results["root"], monkeypatch), folder / "sweep.json")
        at.session_state["lang"] = lang
        at.run()
        _ok(at)
        return at

    note = i18n.t("compare.sweep_estimates", lang, scale=i18n.percent(0.5, lang))
    mark = "约" if lang == "zh" else "≈"
    at = show(results["sweep"])  # full scale: nothing said, nothing marked
    assert note not in [c.value for c in at.caption]
    assert not at.dataframe[0].value.map(lambda v: mark in str(v)).any().any()
    at = show(results["scaled_sweep"])
    assert note in [c.value for c in at.caption]
    table = at.dataframe[0].value
    mean = i18n.t("compare.col.mean", lang)
    scale = table["scale"].astype(float)
    assert table.loc[scale < 1, mean].str.contains(mark).all()
    assert not table.loc[scale == 1, mean].str.contains(mark).any()


def _replace_box(at: AppTest):
    (box,) = [c for c in at.checkbox if str(c.key).startswith("compare.f_replace:")]
    return box


def test_an_earlier_comparison_is_replaced_only_when_the_user_ticks_replace(tmp_path, monkeypatch):
    at = _compare_page(tmp_path, monkeypatch)
    custom = "fares.transfer.window_min=90"
    _form(at, custom=custom, days=1, reps=1, name="again")
    result = tmp_path / "compare-again" / "compare.json"
    first = result.read_bytes()
    assert api.load_compare_report(result)["replications"] == 1
    (shown,) = [i.value for i in at.info]  # the summary of one replication: no "nan to nan"
    assert "仅一次重复，无置信区间" in shown and "nan" not in shown
    # The same name again, other settings: refused, the earlier comparison kept, a box offered.
    _form(at, custom=custom, days=1, reps=2, name="again")
    assert any("已有一次比较" in e.value and "compare-again" in e.value for e in at.error)
    assert result.read_bytes() == first
    replace = _replace_box(at)
    assert replace.label == "替换已有的比较 compare-again" and not replace.value
    # Ticked, but the comparison fails: the earlier one is still whole, nothing half-written.
    replace.check()

    def broken(*args, **kwargs):
        raise api.InvariantViolation("trial_balance", 7, "test fault")

    monkeypatch.setattr(api, "compare", broken)
    _form(at, custom=custom, days=1, reps=2, name="again")
    assert any("trial_balance" in e.value for e in at.error)
    assert result.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare-again"]  # no hidden leftover
    monkeypatch.undo()
    monkeypatch.setenv("CARDTWIN_RUNS", str(tmp_path))
    _form(at, custom=custom, days=1, reps=2, name="again")
    assert api.load_compare_report(result)["replications"] == 2  # replaced, as asked
    # That yes was for one replacement: the same start again asks again.
    replaced = result.read_bytes()
    _form(at, custom=custom, days=1, reps=1, name="again")
    assert any("已有一次比较" in e.value for e in at.error)
    assert result.read_bytes() == replaced
    assert not _replace_box(at).value  # a new box, not the one ticked before


def test_a_folder_that_holds_no_comparison_is_never_written_to(tmp_path, monkeypatch):
    taken = tmp_path / "compare-mine"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine", "utf-8")
    at = _compare_page(tmp_path, monkeypatch)
    _form(at, custom="fares.transfer.window_min=90", days=1, reps=1, name="mine")
    assert any("不是一次比较的结果" in e.value for e in at.error)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    assert not [c for c in at.checkbox if str(c.key).startswith("compare.f_replace:")]


def test_the_summary_writes_figures_as_the_headline_cards_do(results):
    """The same rounding (once, to the whole fen or trip) and formats as the cards beside it
    (brief.amount), with 万/亿 in Chinese; not ¥1,149.97 in the text and -1,149.98 on a card."""
    for value in (-114_997.5, 114_996.5, 0.4, -5, 123_456_789.0, 1_000_000_049.5):
        for lang in ("en", "zh"):
            assert money_text(value, lang) == brief.amount(value, lang, money=True)
            assert count_text(value, lang) == brief.amount(value, lang, money=False)
    report = copy.deepcopy(results["report"])
    rows = report["variants"][VARIANT]
    rows["fare_revenue_fen"]["difference"].update(mean=-114_997.5, ci_low=-150_000, ci_high=-80_001)
    rows["concession_cost_fen"]["difference"].update(
        mean=123_456_789.0, ci_low=100_000_000, ci_high=150_000_000
    )
    rows["fare_transactions"]["difference"].update(mean=23_456.0, ci_low=20_000, ci_high=30_000)
    en, zh = summary(report, VARIANT, "en"), summary(report, VARIANT, "zh")
    assert "fare revenue falls by ¥1,149.98 (95% CI of the change ¥-1,500.00 to ¥-800.01)" in en
    assert brief.amount(-114_997.5, "en", money=True, signed=True) == "¥-1,149.98"
    assert "票款收入减少1,149.98 元（95%置信区间-1,500.00 元至-800.01 元）" in zh
    assert "优惠成本（减免的票款）增加123.46万元（95%置信区间100万元至150万元）" in zh
    assert "乘车交易次数（含免费乘车）增加2.35万次" in zh and "95%置信区间2万至3万" in zh
    assert "trips (fare transactions, free rides included) rises by 23,456" in en


def test_one_replication_says_it_has_no_interval_in_both_languages(results):
    report = copy.deepcopy(results["report"])
    rows = report["variants"][VARIANT]
    for m in ("fare_revenue_fen", "concession_cost_fen", "operator_income_fen"):
        rows[m]["difference"].update(ci_low=math.nan, ci_high=math.nan)
    rows["clearing_fees_fen"]["difference"].update(ci_low=None, ci_high=None)  # JSON's null
    rows["fare_transactions"]["difference"].update(ci_low=math.nan, ci_high=math.nan)
    moved = report["trips_moved"][VARIANT]["total"]
    moved.update(mean=max(moved["mean"], 12.0), ci_low=math.nan, ci_high=math.nan)
    en, zh = summary(report, VARIANT, "en"), summary(report, VARIANT, "zh")
    assert (
        en.count("(one replication: no interval)") == 5
        and "one replication: no interval" in (en.split("trips move between hours")[1])
    )
    assert zh.count("仅一次重复，无置信区间") == 6
    for text in (en, zh):
        assert not re.search(r"nan|None", text, flags=re.IGNORECASE), text
    # the command line's compare.md says the same, and the same each time
    md = markdown(report)
    assert en in md and zh in md and md == markdown(copy.deepcopy(report))
