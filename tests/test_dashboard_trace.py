"""The dashboard's "Trace one cardholder" page, driven by Streamlit's AppTest on a real run.

One small one-day run is made per module. The page renders the chosen card's day (a table whose
rule words say how each tap was priced, a timeline, a summary); choosing another card or the
other language changes what is shown; a typed token that is not a card of that day, or no run
at all, gives a message instead of a traceback. The pricing situations a one-day run does not
produce (caps, incomplete trips, a card type with peak and off-peak rules) are checked on the
page's wording function directly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import i18n, lines, places
from sim import api

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
PAGE = "views/trace.py"
SMALL = ROOT / "scenarios" / "small_ci.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished one-day run of the small scenario (masked, with the tests' privacy key)."""
    out = tmp_path_factory.mktemp("trace_runs") / "small"
    api.run(api.load_scenario(SMALL, days=1), out)
    return out


@pytest.fixture(scope="module")
def view(run_dir) -> api.RunView:
    opened = api.open_run(run_dir)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def service_date(view) -> str:
    return pd.Timestamp(view.daily()["service_date"].iloc[0]).date().isoformat()


def trace_page(run_dir: Path | None, lang: str = "zh", **widgets: str) -> AppTest:
    """The Trace page after one run, with ``widgets`` (session-state keys) set beforehand."""
    at = AppTest.from_file(APP, default_timeout=60)
    if run_dir is not None:
        at.session_state["run_dir"] = str(run_dir)
    at.session_state["lang"] = lang
    for key, value in widgets.items():
        at.session_state[key] = value
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def typed(run_dir: Path, token: str, lang: str = "zh") -> AppTest:
    """The page with ``token`` typed into the token box."""
    return trace_page(run_dir, lang, **{"trace.source": "typed", "trace.token": token})


def taps_table(at: AppTest) -> pd.DataFrame:
    """The table of the chosen card's taps (fails if the page does not show one)."""
    assert len(at.dataframe) == 1, "expected the table of the card's taps"
    return at.dataframe[0].value


def rule_words(at: AppTest, lang: str = "zh") -> list[str]:
    return taps_table(at)[i18n.t("trace.col.rule", lang)].tolist()


def find_card(
    view: api.RunView, service_date: str, wanted: Callable[[pd.Series], bool]
) -> tuple[str, pd.Series]:
    """A card of the day with a tap for which ``wanted`` holds: its token and that tap."""
    for token in dict.fromkeys(view.busy_cards(service_date, 100_000)["token_id"]):
        day = view.card_day(token, service_date)
        hits = day[day.apply(wanted, axis=1)]
        if not hits.empty:
            return token, hits.iloc[0]
    raise AssertionError("the small one-day run has no tap of the kind this test explains")


def words_at(at: AppTest, tap: pd.Series) -> str:
    """The rule words of the table row of ``tap`` (matched by its time of day)."""
    table = taps_table(at)
    when = i18n.time_of_day(tap["event_timestamp"], "zh")
    rows = table[table[i18n.t("trace.col.time", "zh")] == when]
    assert not rows.empty, f"no row at {when}"
    return rows[i18n.t("trace.col.rule", "zh")].iloc[0]


# --- the page with a run ----------------------------------------------------------------------


def test_the_busiest_card_of_the_day_is_traced_tap_by_tap(run_dir, view, service_date):
    at = trace_page(run_dir)
    token = view.busy_cards(service_date, 20)["token_id"].iloc[0]
    expected = view.card_day(token, service_date)
    table = taps_table(at)
    assert len(table) == len(expected)
    words = table[i18n.t("trace.col.rule", "zh")]
    assert words.str.len().gt(0).all()
    # Every concession is named with its card type and the amount taken off.
    for (_, tap), text in zip(expected.iterrows(), words, strict=True):
        if tap["concession_fen"] > 0:
            assert i18n.code_label("rider_category", tap["rider_category"], "zh") in text
            assert f"减免 {i18n.yuan(tap['concession_fen'], 'zh')}" in text
    assert any(token in h.value for h in at.subheader)
    counted = expected[expected["status"] != "rejected"]
    summary = i18n.t(
        "trace.summary",
        "zh",
        taps=i18n.count(len(counted), "zh"),
        paid=i18n.yuan(int(counted["amount_fen"].sum()), "zh"),
        list=i18n.yuan(int(counted["list_fare_fen"].sum()), "zh"),
        saved=i18n.yuan(
            int(counted[["concession_fen", "transfer_fen", "cap_fen"]].to_numpy().sum()), "zh"
        ),
    )
    assert summary in [m.value for m in at.markdown]
    assert len(at.get("plotly_chart")) == 1
    assert [b.label for b in at.download_button] == [i18n.t("common.download_csv", "zh")]
    assert i18n.t("trace.identity_masked", "zh") in [m.value for m in at.info]
    assert not at.error


def test_each_line_is_named_with_its_id_beside_it(run_dir, view, service_date, tmp_path):
    """A bus line by its region and number, a metro line by the scenario's name, the id
    beside it (``dashboard.lines``: the run's network built again from run_meta.json); a run
    whose network cannot be built again shows the ids, and says why."""
    token = view.busy_cards(service_date, 20)["token_id"].iloc[0]
    taps = view.card_day(token, service_date)
    names = lines.run_names(view.meta, "zh", places.english_names(view.meta))
    column = i18n.t("trace.col.route", "zh")
    shown = taps_table(trace_page(run_dir))[column].tolist()
    named = [(route, text) for route, text in zip(taps["route"], shown, strict=True)]
    home = [(r, t) for r, t in named if (0, r) in names.lines]
    assert home and all(t == f"{names.lines[(0, r)]}（{r}）" for r, t in home)
    assert any("B" in r and "路（" in t for r, t in home)  # a bus line: 市区B001路（urban-B001）
    # The same run as one written before its network could be built again.
    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    meta = json.loads((older / "run_meta.json").read_text("utf-8"))
    for entry in meta["cities"]:
        del entry["order"]
    (older / "run_meta.json").write_text(json.dumps(meta), "utf-8")
    at = trace_page(older)
    ids = taps_table(at)[column].tolist()
    bus = [(r, t) for (r, _), t in zip(named, ids, strict=True) if "-B" in r]
    assert bus and all(t == r for r, t in bus)
    assert i18n.t("common.network_not_rebuilt", "zh") in [c.value for c in at.caption]


def city_words(tap: pd.Series, view: api.RunView) -> str:
    """What the page says of a ride in another city: its name from the run's settings."""
    cities = view.meta["cities"][0]["settings"]["interop"]["cities"]
    name = next(c["name_zh"] for cid, c in cities.items() if tap["route"] == f"EXT-{cid.upper()}")
    fare = i18n.yuan(int(tap["list_fare_fen"]), "zh")
    return f"在{name}乘车：按当地票价 {fare}，本市的卡种优惠在外地不适用"


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        pytest.param(
            lambda t: (
                t["rider_category"] == "longevity"
                and t["concession_fen"] == 200
                and t["media"] == "physical_card"
                and t["mode"] == "bus"
            ),
            "长寿卡（65岁以上）免费乘车：减免 2.00 元（政策：65+ ride free (长寿卡)）",
            id="elderly-card-rides-free",
        ),
        pytest.param(
            lambda t: (
                t["rider_category"] == "ordinary"
                and t["concession_fen"] == 10
                and t["list_fare_fen"] == 200
            ),
            "普通卡打 9.5 折：减免 0.10 元（政策：citizen card 9.5折）",
            id="citizen-card-5pct-off",
        ),
        pytest.param(
            lambda t: (
                t["media"].startswith("qr_")
                and t["rider_category"] == "ordinary"
                and t["transfer_fen"] == 0
                and t["list_fare_fen"] == 200
                and t["mode"] == "bus"
            ),
            "全价 2.00 元：扫码乘车不享受卡种优惠（优惠需要刷卡）",
            id="qr-code-pays-list-fare",
        ),
        pytest.param(
            lambda t: t["transfer_fen"] == 100,
            "60 分钟内换乘优惠：减免 1.00 元",
            id="transfer-within-the-hour",
        ),
        pytest.param(
            lambda t: t["tap_kind"] == "entry" and t["list_fare_fen"] == 0,
            "地铁进站：车费在出站时按乘坐距离收取",
            id="metro-entry",
        ),
        pytest.param(
            lambda t: str(t["route"]).startswith("EXT-") and t["status"] != "rejected",
            city_words,
            id="ride-in-another-city",
        ),
        pytest.param(
            lambda t: t["reject_reason"] == "declined_insufficient_balance",
            "被拒绝：卡内余额不足，读卡器拒绝扣款；不计入实付",
            id="declined-for-low-balance",
        ),
    ],
)
def test_rule_words_say_how_each_tap_was_priced(run_dir, view, service_date, wanted, expected):
    token, tap = find_card(view, service_date, wanted)
    at = typed(run_dir, token)
    words = expected(tap, view) if callable(expected) else expected
    assert words in words_at(at, tap)
    assert not at.error


def test_choosing_another_card_changes_the_output(run_dir, view, service_date):
    at = trace_page(run_dir)
    busy = list(dict.fromkeys(view.busy_cards(service_date, 20)["token_id"]))
    first, second = busy[0], busy[1]
    before_table, before_heading = taps_table(at), [h.value for h in at.subheader]
    assert at.selectbox(key="trace.card").value == first
    at.selectbox(key="trace.card").set_value(second).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="trace.card").value == second
    after_heading = [h.value for h in at.subheader]
    assert after_heading != before_heading and any(second in h for h in after_heading)
    assert not taps_table(at).equals(before_table)
    assert len(taps_table(at)) == len(view.card_day(second, service_date))


def test_switching_language_changes_the_labels_not_the_card(run_dir):
    at = trace_page(run_dir)
    token = at.selectbox(key="trace.card").value
    assert at.header[0].value == i18n.t("trace.title", "zh")
    assert i18n.t("trace.col.rule", "zh") in taps_table(at).columns
    at.session_state["lang"] = "en"
    at.run()
    assert not at.exception, at.exception
    assert at.header[0].value == "Trace one cardholder"
    table = taps_table(at)
    assert "How this fare was worked out" in table.columns
    assert i18n.t("trace.col.rule", "zh") not in table.columns
    assert at.selectbox(key="trace.card").value == token
    assert at.selectbox(key="trace.date").label == "Service date"
    assert i18n.t("trace.identity_masked", "en") in [m.value for m in at.info]
    words = " ".join(table["How this fare was worked out"])
    assert ("off" in words or "Full fare" in words) and "减免" not in words


def test_a_real_token_typed_in_shows_its_day(run_dir, view, service_date):
    token = view.busy_cards(service_date, 20)["token_id"].iloc[3]
    at = typed(run_dir, f"  {token} ")  # pasted with spaces around it
    assert len(taps_table(at)) == len(view.card_day(token, service_date))
    assert not at.error


@pytest.mark.parametrize(
    ("token", "key"),
    [
        ("123", "trace.token_not_found"),
        ("99999999999999999999", "trace.token_bad"),  # above the largest token
        ("张三", "trace.token_bad"),
        ("12a4", "trace.token_bad"),
    ],
)
def test_a_token_that_is_not_a_card_of_that_day_gives_a_clear_message(
    run_dir, view, service_date, token, key
):
    example = view.busy_cards(service_date, 20)["token_id"].iloc[0]
    for lang in ("zh", "en"):
        at = typed(run_dir, token, lang)
        date = i18n.date(service_date, lang)
        expected = i18n.t(key, lang, token=token, date=date, example=example)
        assert [e.value for e in at.error] == [expected]
        assert not at.dataframe


def test_an_empty_token_box_asks_for_a_token(run_dir):
    at = typed(run_dir, "")
    assert i18n.t("trace.token_prompt", "zh") in [m.value for m in at.info]
    assert not at.error


def test_no_run_chosen_shows_the_info_message():
    at = trace_page(None)
    assert [m.value for m in at.info] == [i18n.t("common.no_run", "zh")]
    assert not at.dataframe and not at.error


def test_an_unreadable_run_folder_shows_an_error(tmp_path):
    at = trace_page(tmp_path / "no_such_run")
    assert len(at.error) == 1 and "no_such_run" in at.error[0].value
    assert not at.dataframe


# --- wording of what a one-day run does not show ----------------------------------------------


@pytest.fixture(scope="module")
def page():
    """The wording module; outside a Streamlit run it speaks the default language (Chinese)."""
    from dashboard import fare_words

    return fare_words


def tap(**values) -> pd.Series:
    base = {
        "event_timestamp": pd.Timestamp("2024-01-02 08:00:00"),
        "tap_kind": "single",
        "mode": "bus",
        "route": "urban-B001",
        "stop": "1",
        "media": "physical_card",
        "rider_category": "ordinary",
        "list_fare_fen": 200,
        "concession_fen": 0,
        "transfer_fen": 0,
        "cap_fen": 0,
        "amount_fen": 200,
        "is_transfer": False,
        "fare_capped": False,
        "status": "cleared",
        "reject_reason": "none",
        "incident_id": None,
    }
    return pd.Series({**base, **values})


def test_a_card_type_with_peak_and_off_peak_rules_names_the_rule_that_applied(page):
    policy = page.Policy(
        day_type="workday",
        concessions={
            "longevity": [
                {"kind": "free", "label": "65+ free off-peak"},
                {"kind": "percent", "discount_pct": 50.0, "label": "65+ half fare in peaks"},
            ]
        },
    )
    off_peak = tap(rider_category="longevity", concession_fen=200, amount_fen=0)
    peak = tap(rider_category="longevity", concession_fen=100, amount_fen=100)
    assert page.explain(off_peak, policy) == (
        "free",
        "长寿卡（65岁以上）免费乘车：减免 2.00 元（政策：65+ free off-peak）",
    )
    assert page.explain(peak, policy) == (
        "concession",
        "长寿卡（65岁以上）打 5 折：减免 1.00 元（政策：65+ half fare in peaks）",
    )
    # An amount no rule gives (a changed fare, an incident) is named without a rule.
    odd = tap(rider_category="longevity", concession_fen=30, amount_fen=170)
    assert page.explain(odd, policy)[1] == "长寿卡（65岁以上）优惠：减免 0.30 元"


def test_caps_incomplete_trips_duplicates_and_incidents_are_put_into_words(page):
    policy = page.Policy(day_type="workday", daily_caps={"ordinary": 400})
    capped = tap(cap_fen=120, amount_fen=80, fare_capped=True)
    assert page.explain(capped, policy) == ("capped", "已达每日封顶 4.00 元：减免 1.20 元")
    monthly = page.Policy(day_type="workday", monthly_caps={"ordinary": 10_000})
    assert page.explain(capped, monthly)[1] == "已达月度封顶 100.00 元：减免 1.20 元"
    incomplete = tap(tap_kind="entry", mode="metro", route="M1", list_fare_fen=700, amount_fen=700)
    assert page.explain(incomplete, policy) == (
        "incomplete",
        "不完整行程（进站后没有出站记录）：按最高票价收取 7.00 元",
    )
    duplicate = tap(status="rejected", reject_reason="duplicate_upload", incident_id="INC-1")
    category, words = page.explain(duplicate, policy)
    assert category == "rejected"
    assert words.startswith("被拒绝：同一笔记录被重复上传")
    assert words.endswith("受突发事件 INC-1 影响")
    assert page.explain(tap(), policy) == ("full", "全价 2.00 元")


def test_each_tap_is_explained_by_the_fares_of_the_city_it_was_made_in(page):
    """A multi-city run stores each city's settings; a tap made in the second city (its
    city_code) is priced by that city's fares, not the first city's."""
    meta = {
        "cities": [
            {
                "name": "alpha",
                "city_code": "9901",
                "settings": {"fares": {"transfer": {"window_min": 60}}},
            },
            {
                "name": "beta",
                "city_code": "9902",
                "settings": {
                    "fares": {
                        "transfer": {"window_min": 90},
                        "concessions": {"longevity": [{"kind": "free", "label": "beta 65+"}]},
                    }
                },
            },
        ]
    }
    policy_of = page.policies_of_run(meta, "workday")
    transfer = {"is_transfer": True, "transfer_fen": 100, "amount_fen": 100}
    home, away = tap(city_code="9901", **transfer), tap(city_code="9902", **transfer)
    assert page.explain(home, policy_of(home))[1] == "60 分钟内换乘优惠：减免 1.00 元"
    assert page.explain(away, policy_of(away))[1] == "90 分钟内换乘优惠：减免 1.00 元"
    free = {"rider_category": "longevity", "concession_fen": 200, "amount_fen": 0}
    in_beta, in_alpha = tap(city_code="9902", **free), tap(city_code="9901", **free)
    assert page.explain(in_beta, policy_of(in_beta))[1].endswith("（政策：beta 65+）")
    assert page.explain(in_alpha, policy_of(in_alpha))[1] == "长寿卡（65岁以上）优惠：减免 2.00 元"
    # A city outside the run (a home card's ride elsewhere), or no code: the home city's.
    for other in (tap(city_code="3100", **transfer), tap(**transfer)):
        assert policy_of(other) == page.Policy.of_run(meta, "workday")
        assert policy_of(other).transfer_window_min == 60
