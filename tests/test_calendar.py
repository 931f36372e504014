"""Tests for sim.calendar: day types, school days, outlet opening rules and settings validation."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sim.calendar import OUTLET_RULES, Calendar, CalendarSettings, load_calendar_file
from sim.codes import DAY_TYPES, HOLIDAY, SPRING_FESTIVAL, WEEKEND, WORKDAY

ROOT = Path(__file__).resolve().parents[1]
CN_2024 = ROOT / "scenarios" / "data" / "calendar_cn_2024.yaml"
OUTLETS = ROOT / "data" / "nantong" / "outlets.csv"


@pytest.fixture(scope="module")
def cal() -> Calendar:
    return Calendar(load_calendar_file(CN_2024), dt.date(2024, 1, 1), 366)


def _type(cal: Calendar, iso: str) -> str:
    return DAY_TYPES[cal.day_type(cal.day_of(iso))]


def test_day_types_of_2024_examples(cal: Calendar) -> None:
    assert _type(cal, "2024-02-04") == "workday"  # a Sunday made a workday (调休)
    assert cal.weekday(cal.day_of("2024-02-04")) == 6
    assert _type(cal, "2024-02-12") == "spring_festival"
    assert _type(cal, "2024-05-03") == "holiday"
    assert _type(cal, "2024-07-20") == "weekend"
    assert _type(cal, "2024-07-22") == "workday"
    assert _type(cal, "2024-05-11") == "workday"  # Saturday made a workday
    assert _type(cal, "2024-06-08") == "weekend"  # 端午 "与周末连休": weekend stays weekend
    assert _type(cal, "2024-06-10") == "holiday"
    assert _type(cal, "2024-10-07") == "holiday"


def test_spring_festival_wins_but_eve_stays_an_official_workday(cal: Calendar) -> None:
    eve = cal.day_of("2024-02-09")
    assert cal.day_type(eve) == SPRING_FESTIVAL
    assert cal.is_workday[eve] and not cal.is_holiday[eve]
    sf = cal.day_of("2024-02-12")
    assert cal.is_holiday[sf] and cal.day_type(sf) == SPRING_FESTIVAL
    assert _type(cal, "2024-02-18") == "workday"  # make-up Sunday after the festival
    assert np.flatnonzero(cal.day_types == SPRING_FESTIVAL).tolist() == list(range(39, 48))


def test_2024_totals_match_the_state_council_notice(cal: Calendar) -> None:
    # 2024 had 251 working days and 28 statutory holiday days (1+8+3+5+1+3+7).
    assert int(cal.is_workday.sum()) == 251
    assert int(cal.is_holiday.sum()) == 28
    counts = np.bincount(cal.day_types, minlength=len(DAY_TYPES))
    assert counts.sum() == 366
    assert counts[SPRING_FESTIVAL] == 9
    assert counts[WORKDAY] == 251 - 1  # the eve is a workday with the Spring Festival pattern
    assert counts[HOLIDAY] == 28 - 8  # 春节 days 02-10..17 are spring_festival
    assert counts[WEEKEND] == 366 - 9 - 250 - 20


def test_school_days(cal: Calendar) -> None:
    school = cal.is_school_day
    assert not school[cal.day_of("2024-07-20")]  # summer holiday and a Saturday
    assert not school[cal.day_of("2024-07-22")]  # summer holiday weekday
    assert school[cal.day_of("2024-03-05")]
    assert school[cal.day_of("2024-01-10")]  # autumn term 2023 still running
    assert not school[cal.day_of("2024-02-19")]  # winter break until 02-26
    assert school[cal.day_of("2024-09-14")]  # make-up Saturday inside the autumn term
    assert not school[cal.day_of("2024-10-03")]  # 国庆 holiday inside the term
    assert not (school & ~cal.is_workday).any()


@pytest.mark.parametrize(
    ("rule", "iso", "expected"),
    [
        ("every_day", "2024-02-10", True),
        ("workdays", "2024-02-04", True),  # 调休 Sunday
        ("workdays", "2024-02-09", True),  # 除夕 is an official workday in 2024
        ("workdays", "2024-02-12", False),
        ("workdays", "2024-07-20", False),
        ("fridays_only", "2024-07-19", True),
        ("fridays_only", "2024-07-18", False),
        ("mon_to_sat_except_holidays", "2024-07-20", True),  # Saturday
        ("mon_to_sat_except_holidays", "2024-07-21", False),  # Sunday
        ("mon_to_sat_except_holidays", "2024-10-05", False),  # Saturday in 国庆
        ("mon_to_sat_except_holidays", "2024-09-29", True),  # 调休 Sunday
        ("every_day_except_holidays", "2024-07-21", True),
        ("every_day_except_holidays", "2024-06-10", False),
        ("every_day_except_holidays", "2024-02-09", True),
        ("every_day_except_spring_festival_eve_to_day2", "2024-02-08", True),
        ("every_day_except_spring_festival_eve_to_day2", "2024-02-09", False),
        ("every_day_except_spring_festival_eve_to_day2", "2024-02-11", False),
        ("every_day_except_spring_festival_eve_to_day2", "2024-02-12", True),
    ],
)
def test_outlet_rules(cal: Calendar, rule: str, iso: str, expected: bool) -> None:
    assert cal.is_open(rule, cal.day_of(iso)) is expected


def test_every_outlet_rule_in_the_nantong_data_is_known(cal: Calendar) -> None:
    with OUTLETS.open(encoding="utf-8") as fh:
        rules = {row["open_days"] for row in csv.DictReader(fh)}
    assert rules <= set(OUTLET_RULES)
    open_counts = {rule: int(cal.open_days(rule).sum()) for rule in rules}
    assert open_counts["every_day"] == 366
    assert open_counts["workdays"] == 251
    assert open_counts["every_day_except_spring_festival_eve_to_day2"] == 363


def test_unknown_rule_is_a_clear_error(cal: Calendar) -> None:
    with pytest.raises(ValueError, match=r"unknown outlet opening rule 'weekdays'.*every_day"):
        cal.is_open("weekdays", 0)


def test_day_helpers_and_bounds(cal: Calendar) -> None:
    assert cal.date_of(0) == dt.date(2024, 1, 1)
    assert cal.date_of(365) == dt.date(2024, 12, 31)
    assert cal.weekday(0) == 0  # 2024-01-01 was a Monday
    assert cal.day_of(dt.date(2024, 3, 1)) == 60
    for bad in (-1, 366):
        with pytest.raises(IndexError, match="outside the simulation period"):
            cal.date_of(bad)
    with pytest.raises(ValueError):
        cal.day_types[0] = WEEKEND  # arrays are read-only


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 365), length=st.integers(1, 60))
def test_a_sub_period_is_a_slice_of_the_year(start: int, length: int) -> None:
    year = Calendar(load_calendar_file(CN_2024), "2024-01-01", 366)
    length = min(length, 366 - start)
    sub = Calendar(year.settings, year.date_of(start), length)
    window = slice(start, start + length)
    assert np.array_equal(sub.dates, year.dates[window])
    assert np.array_equal(sub.day_types, year.day_types[window])
    assert np.array_equal(sub.is_school_day, year.is_school_day[window])
    for rule in OUTLET_RULES:
        assert np.array_equal(sub.open_days(rule), year.open_days(rule)[window])


def test_period_outside_the_calendar_is_refused() -> None:
    s = load_calendar_file(CN_2024)
    with pytest.raises(
        ValueError, match=r"covers 2024-01-01\.\.2024-12-31.*2024-12-31\.\.2025-01-01"
    ):
        Calendar(s, "2024-12-31", 2)
    with pytest.raises(ValueError, match="days must be at least 1"):
        Calendar(s, "2024-01-01", 0)


BASE = {"covers_first": "2024-01-01", "covers_last": "2024-12-31"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"adjusted_workdays": ["2024-02-05"]}, "2024-02-05 is a Monday"),
        ({"adjusted_workdays": ["2024-02-04", "2024-02-04"]}, "listed twice"),
        (
            {
                "holidays": [{"name": "x", "first": "2024-02-03", "last": "2024-02-04"}],
                "adjusted_workdays": ["2024-02-04"],
            },
            "inside the holiday x",
        ),
        (
            {
                "holidays": [
                    {"name": "a", "first": "2024-05-01", "last": "2024-05-05"},
                    {"name": "b", "first": "2024-05-05", "last": "2024-05-06"},
                ]
            },
            "a and b overlap",
        ),
        (
            {"holidays": [{"name": "a", "first": "2024-05-05", "last": "2024-05-01"}]},
            "before first",
        ),
        (
            {
                "spring_festivals": [
                    {"first": "2024-02-10", "last": "2024-02-17", "eve": "2024-02-09"}
                ]
            },
            "eve 2024-02-09 is outside",
        ),
        ({"covers_last": "2023-12-31"}, "covers_last 2023-12-31 is before"),
        ({"covers_first": 20240101}, "YYYY-MM-DD"),
        ({"holiday": []}, "Extra inputs are not permitted"),
    ],
)
def test_settings_validation(extra: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CalendarSettings.model_validate(BASE | extra)


def test_settings_are_frozen() -> None:
    s = CalendarSettings.model_validate(BASE)
    with pytest.raises(ValidationError):
        s.covers_first = dt.date(2020, 1, 1)  # type: ignore[misc]


def test_load_calendar_file_errors_name_file_line_and_field(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match=r"nope\.yaml: file not found"):
        load_calendar_file(missing)

    broken = tmp_path / "broken.yaml"
    broken.write_text("covers_first: 2024-01-01\nholidays: [\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.yaml:\d+:\d+: malformed YAML"):
        load_calendar_file(broken)

    a_list = tmp_path / "list.yaml"
    a_list.write_text("- 2024-01-01\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list\.yaml:1: top level is a list; expected a mapping"):
        load_calendar_file(a_list)

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "covers_first: 2024-01-01\n"
        "covers_last: 2024-12-31\n"
        "adjusted_workdays:\n"
        "  - 2024-02-04\n"
        "  - 24-02-18\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"bad\.yaml:5: adjusted_workdays\.1: "):
        load_calendar_file(bad)


def test_shipped_2024_file_content() -> None:
    s = load_calendar_file(CN_2024)
    assert [h.name for h in s.holidays] == [
        "元旦",
        "春节",
        "清明节",
        "劳动节",
        "端午节",
        "中秋节",
        "国庆节",
    ]
    assert len(s.adjusted_workdays) == 8
    assert s.spring_festivals[0].eve == dt.date(2024, 2, 9)
    assert s.school_terms[1].first == dt.date(2024, 2, 26)
