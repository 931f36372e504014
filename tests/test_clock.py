"""sim.clock: HH:MM times of day and HH:MM-HH:MM windows, and the syntax each caller accepts."""

from __future__ import annotations

import re

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.outlet import parse_hours
from agents.validator import DeviceSettings
from sim import clock
from sim.clock import DAY_S, HHMM, TimeWindow, parse_hhmm, parse_window, parse_windows
from sim.fare_rules import ConcessionRule
from sim.fare_rules import parse_window as fare_window
from sim.world_settings import TopUps, hhmm_to_s

HHMM_MSG = "expected HH:MM (00:00-23:59)"
minutes = st.integers(0, 1439)
pad = st.sampled_from(["", " ", "  ", "\t", "\u3000"])  # \u3000: the ideographic space


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


class _Times(pydantic.BaseModel):
    at: HHMM
    hours: clock.window_texts() = ()
    night_hours: clock.window_texts(one_digit_hour=True, over_midnight=True) = ()


# --- times of day -----------------------------------------------------------------------------


def test_every_minute_of_the_day_round_trips() -> None:
    assert [parse_hhmm(hhmm(m)) for m in range(1440)] == [m * 60 for m in range(1440)]
    assert hhmm_to_s is parse_hhmm  # the name sim.day, sim.engine and others import


@pytest.mark.parametrize(
    "text",
    ["24:00", "25:00", "23:60", "7:30", "07:3", "007:30", "0730", "07.30", "07:30:00", "ab:cd"]
    + [" 07:30", "07:30 ", "", ":", "-1:00", "07：30", "+7:30"],
)
def test_rejected_times_name_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"time of day {text!r} is invalid: {HHMM_MSG}")):
        parse_hhmm(text)


@given(st.text(alphabet="0123456789: \t-", max_size=7))
def test_any_text_parses_to_its_minute_or_is_rejected_clearly(text: str) -> None:
    try:
        seconds = parse_hhmm(text)
    except ValueError as exc:
        assert HHMM_MSG in str(exc) and repr(text) in str(exc)
    else:
        assert text == hhmm(seconds // 60) and 0 <= seconds < DAY_S and seconds % 60 == 0


def test_hhmm_field_keeps_the_text_and_reports_the_field() -> None:
    assert _Times(at="07:05").at == "07:05"
    with pytest.raises(pydantic.ValidationError, match=re.escape(HHMM_MSG)) as err:
        _Times(at="25:00")
    assert err.value.errors()[0]["loc"] == ("at",)
    with pytest.raises(pydantic.ValidationError, match="valid string"):
        _Times(at=450)  # YAML 1.1 reads unquoted 7:30 as 450 (base 60): a wrong type, as before


def test_scenario_and_device_times_use_the_strict_form() -> None:
    base = {"threshold_fen": 1, "amounts_fen": [1], "amount_weights": [1], "max_balance_fen": 9}
    assert TopUps(**base, online_time_mean="20:30").online_time_mean == "20:30"
    for bad in ("24:00", "8:30", " 20:30"):
        with pytest.raises(pydantic.ValidationError, match=re.escape(HHMM_MSG)):
            TopUps(**base, online_time_mean=bad)
    with pytest.raises(pydantic.ValidationError, match=re.escape(HHMM_MSG)) as err:
        DeviceSettings(bus_upload_times_hhmm=("12:30", "7:00"))
    assert err.value.errors()[0]["loc"] == ("bus_upload_times_hhmm", 1)  # the bad item itself


# --- windows ----------------------------------------------------------------------------------


@given(minutes, st.integers(1, 1440), pad, pad)
def test_same_day_windows_round_trip(start: int, end: int, left: str, right: str) -> None:
    text = f"{left}{hhmm(start)}{right}-{right}{'24:00' if end == 1440 else hhmm(end)}{left}"
    if start < end:
        window = parse_window(text)
        assert window == TimeWindow(start * 60, end * 60) and not window.over_midnight
        assert window.pieces() == ((start * 60, end * 60),)
    else:
        with pytest.raises(ValueError, match="time window .* (ends before it starts|is empty)"):
            parse_window(text)


@given(minutes, minutes)
def test_windows_over_midnight_are_split_only_when_allowed(start: int, end: int) -> None:
    text = f"{hhmm(start)}-{hhmm(end)}"
    if start <= end:
        return
    with pytest.raises(ValueError, match=r"ends before it starts \(may not run over midnight\)"):
        parse_window(text)
    window = parse_window(text, over_midnight=True)
    assert window == TimeWindow(start * 60, end * 60) and window.over_midnight
    pieces = window.pieces()
    assert pieces[0] == (start * 60, DAY_S)
    assert pieces[1:] == (((0, end * 60),) if end else ())
    assert sum(b - a for a, b in pieces) == DAY_S - (start - end) * 60


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("7-9", "is malformed: expected 'HH:MM-HH:MM', e.g. '07:00-09:00'"),
        ("07:00", "is malformed"),
        ("07:00-09:00-10:00", "is malformed"),
        ("07:00–09:00", "is malformed"),  # en dash
        ("07:00-9h", "is malformed"),
        ("", "is malformed"),
        ("25:00-26:00", "has a time outside 00:00-24:00"),
        ("07:60-09:00", "has a time outside 00:00-24:00"),
        ("23:00-24:01", "has a time outside 00:00-24:00"),
        ("24:00-24:00", "cannot start at 24:00"),
        ("24:00-01:00", "cannot start at 24:00"),
        ("08:00-08:00", "is empty: start equals end"),
    ],
)
def test_rejected_windows_say_what_was_wrong(text: str, problem: str) -> None:
    for options in ({}, {"one_digit_hour": True, "over_midnight": True}):
        with pytest.raises(ValueError, match=re.escape(f"time window {text!r} {problem}")):
            parse_window(text, **options)


def test_one_digit_hours_only_when_asked() -> None:
    with pytest.raises(ValueError, match="is malformed"):
        parse_window("7:00-9:30")
    assert parse_window("7:00-9:30", one_digit_hour=True) == TimeWindow(7 * 3600, 9 * 3600 + 1800)
    with pytest.raises(ValueError, match="is malformed"):
        parse_window("07:00-9:5", one_digit_hour=True)  # minutes always have two digits


def test_window_lists_are_ordered_same_day_windows() -> None:
    assert parse_windows(" 09:00-11:30 ; 11:30-17:30 ") == (
        TimeWindow(9 * 3600, 11 * 3600 + 1800),
        TimeWindow(11 * 3600 + 1800, 17 * 3600 + 1800),
    )  # windows may touch
    assert parse_windows("7:00-9:00;10:00-11:00", one_digit_hour=True)[0].start_s == 7 * 3600
    for text, problem in [
        ("13:30-17:30;09:00-11:30", "'09:00-11:30' overlaps or precedes the one before it"),
        ("09:00-12:00;11:00-13:00", "'11:00-13:00' overlaps or precedes the one before it"),
        ("09:00-12:00;", "'' is malformed"),
        ("09:00-12:00,13:00-17:00", "is malformed"),  # only ";" joins windows
        ("22:00-02:00", "ends before it starts"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            parse_windows(text)


def test_window_texts_type_keeps_the_texts_and_reports_each_item() -> None:
    times = _Times(at="00:00", hours=["07:00-09:00"], night_hours=["22:00-2:00"])
    assert (times.hours, times.night_hours) == (("07:00-09:00",), ("22:00-2:00",))
    with pytest.raises(pydantic.ValidationError, match="ends before it starts") as err:
        _Times(at="00:00", hours=["07:00-09:00", "22:00-02:00"])
    assert err.value.errors()[0]["loc"] == ("hours", 1)


# --- each caller's syntax ---------------------------------------------------------------------


def test_concession_hours_allow_one_digit_hours_and_midnight() -> None:
    assert fare_window(" 7:00 - 9:00 ") == [(420, 540)]
    assert fare_window("22:00-02:00") == [(1320, 1440), (0, 120)]
    assert fare_window("22:00-00:00") == fare_window("22:00-24:00") == [(1320, 1440)]
    rule = ConcessionRule(kind="free", include_hours=["22:00-2:00"], exclude_hours=["7:00-9:00"])
    mask = rule.match_mask()[0, 0]
    assert mask[1320:].all() and mask[:120].all() and not mask[120:1320].any()
    with pytest.raises(pydantic.ValidationError, match="cannot start at 24:00"):
        ConcessionRule(kind="free", exclude_hours=["24:00-01:00"])


def test_outlet_hours_are_two_digit_same_day_windows() -> None:
    assert parse_hours("\u300008:00-17:30\u3000") == (((28800, 63000),), ((28800, 63000),))
    assert parse_hours("08:00-24:00")[0] == ((28800, DAY_S),)
    assert parse_hours("weekday 06:00-18:20; weekend 08:00-11:00;14:00-17:00") == (
        ((21600, 66000),),
        ((28800, 39600), (50400, 61200)),
    )
    for text in ("8:00-17:30", "22:00-02:00", "17:30-08:00", "08:00-17:30;07:00-08:00"):
        with pytest.raises(ValueError, match="time window"):
            parse_hours(text)
    with pytest.raises(ValueError, match="hours are empty"):
        parse_hours("  ")


def test_window_lists_reject_overlaps_but_accept_touching_windows() -> None:
    assert _Times(at="08:00", hours=("07:00-09:00", "09:00-10:00")).hours == (
        "07:00-09:00",
        "09:00-10:00",
    )
    with pytest.raises(pydantic.ValidationError, match="'07:00-09:00' and '08:59-10:00' overlap"):
        _Times(at="08:00", hours=("07:00-09:00", "08:59-10:00"))
    # over midnight, the early-morning piece counts too
    with pytest.raises(pydantic.ValidationError, match="overlap"):
        _Times(at="08:00", night_hours=("22:00-2:00", "1:00-3:00"))
    assert _Times(at="08:00", night_hours=("22:00-2:00", "2:00-3:00")).night_hours[1] == "2:00-3:00"
