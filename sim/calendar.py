"""Day types for a simulation period: workdays, weekends, holidays, Spring Festival, school days.

Chinese public holidays move every year and come with adjusted working days (调休: a Saturday or
Sunday that is a working day), so the calendar is data (a scenario's ``calendar:`` section, usually
a file such as ``scenarios/data/calendar_cn_2024.yaml``), not a rule.

Two views of a date are kept apart on purpose:
- the **official** view (``is_workday``, ``is_holiday``): what the State Council notice says;
  offices, schools and outlet opening rules follow it;
- the **demand** view (``day_types``, codes from ``sim.codes.DAY_TYPES``): which travel pattern the
  day has. Spring Festival wins over holiday, holiday over workday, workday over weekend. So 除夕,
  an official workday in 2024, has the Spring Festival travel pattern if the settings' Spring
  Festival period includes it, while government service outlets are still open that day.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field, model_validator

from sim.codes import HOLIDAY, SPRING_FESTIVAL, WEEKEND, WORKDAY
from sim.settings_base import SettingsModel

_ONE_DAY = np.timedelta64(1, "D")


def _reject_numbers(value: Any) -> Any:
    # pydantic reads an int as a Unix timestamp; 20240101 in YAML must be an error, not 1970-08-23.
    if isinstance(value, (bool, int, float)):
        # ValueError, not TypeError: pydantic turns only ValueError into a validation error.
        raise ValueError(f"write dates as YYYY-MM-DD, got the number {value!r}")
    return value


#: A calendar date written YYYY-MM-DD (YAML dates or ISO strings; numbers are refused).
CalendarDate = Annotated[dt.date, BeforeValidator(_reject_numbers)]


class NamedPeriod(SettingsModel):
    """A named run of consecutive dates, both ends included (a holiday block or a school term)."""

    name: str = Field(min_length=1, description="Label, e.g. 春节 or 'spring term 2024'.")
    first: CalendarDate = Field(description="First date of the period (included).")
    last: CalendarDate = Field(description="Last date of the period (included).")

    @model_validator(mode="after")
    def _ordered(self) -> NamedPeriod:
        if self.last < self.first:
            raise ValueError(f"{self.name}: last {self.last} is before first {self.first}")
        return self


class SpringFestival(SettingsModel):
    """One Spring Festival: the low-demand travel period and the eve (除夕)."""

    first: CalendarDate = Field(description="First date with the Spring Festival travel pattern.")
    last: CalendarDate = Field(description="Last date with the Spring Festival travel pattern.")
    eve: CalendarDate = Field(
        description="除夕, the lunar new year's eve; outlets closing 除夕 to 初二 use it. "
        "Must lie within first..last."
    )

    @model_validator(mode="after")
    def _ordered(self) -> SpringFestival:
        if self.last < self.first:
            raise ValueError(f"Spring Festival last {self.last} is before first {self.first}")
        if not self.first <= self.eve <= self.last:
            raise ValueError(
                f"Spring Festival eve {self.eve} is outside its period {self.first}..{self.last}"
            )
        return self


def _overlap(periods: list[tuple[str, dt.date, dt.date]]) -> str | None:
    """Describe the first overlap among (label, first, last) periods, or None."""
    ordered = sorted(periods, key=lambda p: p[1])
    for (a, _, a_last), (b, b_first, _) in itertools.pairwise(ordered):
        if b_first <= a_last:
            return f"{a} and {b} overlap"
    return None


class CalendarSettings(SettingsModel):
    """The scenario's ``calendar:`` section: holidays, 调休 workdays, Spring Festival, terms."""

    covers_first: CalendarDate = Field(
        description="First date the holiday and adjusted-workday lists are complete for; a "
        "simulation period starting earlier is refused."
    )
    covers_last: CalendarDate = Field(
        description="Last date the holiday and adjusted-workday lists are complete for; a "
        "simulation period ending later is refused."
    )
    holidays: tuple[NamedPeriod, ...] = Field(
        default=(),
        description="Statutory holiday blocks (放假), weekend days inside a block included.",
    )
    adjusted_workdays: tuple[CalendarDate, ...] = Field(
        default=(),
        description="Saturdays and Sundays that are working days (调休上班).",
    )
    spring_festivals: tuple[SpringFestival, ...] = Field(
        default=(),
        description="Spring Festival periods with their eve; one per lunar new year covered.",
    )
    school_terms: tuple[NamedPeriod, ...] = Field(
        default=(),
        description="School terms; a school day is an official workday inside a term.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> CalendarSettings:
        if self.covers_last < self.covers_first:
            raise ValueError(
                f"covers_last {self.covers_last} is before covers_first {self.covers_first}"
            )
        for label, periods in (
            ("holidays", [(p.name, p.first, p.last) for p in self.holidays]),
            ("school_terms", [(p.name, p.first, p.last) for p in self.school_terms]),
            (
                "spring_festivals",
                [(f"Spring Festival {p.eve}", p.first, p.last) for p in self.spring_festivals],
            ),
        ):
            clash = _overlap(periods)
            if clash:
                raise ValueError(f"{label}: {clash}")
        seen: set[dt.date] = set()
        for day in self.adjusted_workdays:
            if day in seen:
                raise ValueError(f"adjusted_workdays: {day} is listed twice")
            seen.add(day)
            if day.weekday() < 5:
                raise ValueError(
                    f"adjusted_workdays: {day} is a {day.strftime('%A')}; adjusted workdays are "
                    "Saturdays or Sundays made working days (调休)"
                )
            for p in self.holidays:
                if p.first <= day <= p.last:
                    raise ValueError(f"adjusted_workdays: {day} lies inside the holiday {p.name}")
        return self


def _date64(value: dt.date | str | np.datetime64) -> np.datetime64:
    return np.datetime64(value, "D")


def _days_in(periods: list[tuple[dt.date, dt.date]]) -> np.ndarray:
    """All dates in the given (first, last) periods as datetime64[D]."""
    if not periods:
        return np.empty(0, dtype="datetime64[D]")
    return np.concatenate(
        [np.arange(_date64(a), _date64(b) + _ONE_DAY, dtype="datetime64[D]") for a, b in periods]
    )


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class Calendar:
    """Day-indexed calendar arrays for the period ``start_date`` .. ``start_date + days - 1``.

    Day ``d`` (0-based simulation day) has ``dates[d]``, ``weekdays[d]`` (0 = Monday),
    ``day_types[d]`` (code in ``sim.codes.DAY_TYPES``), ``is_workday[d]`` (official working day,
    调休 included), ``is_holiday[d]`` (inside a statutory holiday block) and ``is_school_day[d]``.
    Arrays are read-only.
    """

    def __init__(
        self, settings: CalendarSettings, start_date: dt.date | str | np.datetime64, days: int
    ) -> None:
        if int(days) < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        self.settings = settings
        self.days = int(days)
        start = _date64(start_date)
        end = start + np.timedelta64(self.days - 1, "D")
        lo, hi = _date64(settings.covers_first), _date64(settings.covers_last)
        if start < lo or end > hi:
            # A period past the lists would silently lose its holidays and Spring Festival.
            raise ValueError(
                f"the calendar covers {lo}..{hi} but the simulation period is {start}..{end}; "
                "use a calendar whose holidays, adjusted workdays and Spring Festival cover the "
                "whole period"
            )
        self.start_date: dt.date = start.astype(dt.date)
        self.dates = _frozen(np.arange(start, end + _ONE_DAY, dtype="datetime64[D]"))
        # 1970-01-01 was a Thursday (weekday 3).
        self.weekdays = _frozen(((self.dates.astype(np.int64) + 3) % 7).astype(np.uint8))

        holiday_days = _days_in([(p.first, p.last) for p in settings.holidays])
        festival_days = _days_in([(p.first, p.last) for p in settings.spring_festivals])
        term_days = _days_in([(p.first, p.last) for p in settings.school_terms])
        adjusted = np.array(settings.adjusted_workdays, dtype="datetime64[D]")

        is_weekend = self.weekdays >= 5
        self.is_holiday = _frozen(np.isin(self.dates, holiday_days))
        in_festival = np.isin(self.dates, festival_days)
        self.is_workday = _frozen(
            ((~is_weekend) | np.isin(self.dates, adjusted)) & ~self.is_holiday
        )
        self.is_school_day = _frozen(np.isin(self.dates, term_days) & self.is_workday)

        day_types = np.full(self.days, WEEKEND, dtype=np.uint8)
        day_types[self.is_workday] = WORKDAY
        day_types[self.is_holiday] = HOLIDAY
        day_types[in_festival] = SPRING_FESTIVAL
        self.day_types = _frozen(day_types)

        eve_to_day2 = _days_in(
            [(p.eve, p.eve + dt.timedelta(days=2)) for p in settings.spring_festivals]
        )
        self._eve_to_day2 = np.isin(self.dates, eve_to_day2)
        self._open_cache: dict[str, np.ndarray] = {}

    def _check_day(self, day: int) -> int:
        # numpy would silently wrap a negative index to the end of the period.
        if not 0 <= int(day) < self.days:
            raise IndexError(f"day {day} is outside the simulation period 0..{self.days - 1}")
        return int(day)

    def date_of(self, day: int) -> dt.date:
        """The calendar date of simulation day ``day``."""
        return self.dates[self._check_day(day)].astype(dt.date)

    def day_of(self, date: dt.date | str | np.datetime64) -> int:
        """The simulation day index of ``date`` (IndexError outside the period)."""
        day = int((_date64(date) - self.dates[0]).astype(np.int64))
        return self._check_day(day)

    def day_type(self, day: int) -> int:
        """Day-type code (``sim.codes.DAY_TYPES``) of simulation day ``day``."""
        return int(self.day_types[self._check_day(day)])

    def weekday(self, day: int) -> int:
        """Weekday of simulation day ``day``: 0 = Monday .. 6 = Sunday."""
        return int(self.weekdays[self._check_day(day)])

    def open_days(self, rule: str) -> np.ndarray:
        """Boolean array over the period: is an outlet with opening rule ``rule`` open that day."""
        mask = self._open_cache.get(rule)
        if mask is None:
            fn = OUTLET_RULES.get(rule)
            if fn is None:
                raise ValueError(
                    f"unknown outlet opening rule {rule!r}; expected one of: "
                    + ", ".join(OUTLET_RULES)
                )
            mask = _frozen(np.asarray(fn(self), dtype=bool))
            self._open_cache[rule] = mask
        return mask

    def is_open(self, rule: str, day: int) -> bool:
        """Whether an outlet with opening rule ``rule`` (outlets.csv ``open_days``) opens."""
        return bool(self.open_days(rule)[self._check_day(day)])


def _mon_to_sat_except_holidays(cal: Calendar) -> np.ndarray:
    # "周日、节假日休": a 调休 Sunday is a working day, not a rest day, so the outlet opens.
    return ((cal.weekdays <= 5) | cal.is_workday) & ~cal.is_holiday


#: Outlet opening rules (the ``open_days`` column of data/nantong/outlets.csv) → open-day mask.
#: Rules that do not name holidays ignore them (every_day, fridays_only: taken literally).
OUTLET_RULES: dict[str, Callable[[Calendar], np.ndarray]] = {
    "every_day": lambda cal: np.ones(cal.days, dtype=bool),
    "workdays": lambda cal: cal.is_workday,
    "fridays_only": lambda cal: cal.weekdays == 4,
    "mon_to_sat_except_holidays": _mon_to_sat_except_holidays,
    "every_day_except_holidays": lambda cal: ~cal.is_holiday,
    "every_day_except_spring_festival_eve_to_day2": lambda cal: ~cal._eve_to_day2,
}


def load_calendar_file(path: str | Path) -> CalendarSettings:
    """Read a ``calendar:`` section stored as its own YAML file. Problems raise ``ValueError``
    in the scenario loader's words: ``file:line: calendar field: what; got; expected``."""
    from sim.yaml_config import ConfigError, load_config  # the one loader of YAML settings

    try:
        return load_config(path, CalendarSettings)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
