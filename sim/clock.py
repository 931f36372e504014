"""Times of day (``HH:MM``) and time-of-day windows (``HH:MM-HH:MM``), parsed in one place.

Scenario fields, bus upload schedules, outlet opening hours and concession hours all write clock
times this way. Times are returned as integer seconds after midnight; a window's end is exclusive.

A time of day is ``00:00``-``23:59``. A window may end at ``24:00`` but not start there. The
callers differ in two ways, chosen per call so that no input file silently gains or loses a
meaning: ``one_digit_hour`` lets window times have a one-digit hour (``7:00``), and
``over_midnight`` reads a window whose end is before its start as running over midnight
(``22:00-02:00``) instead of an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

#: Seconds in a day; also the largest window end (24:00).
DAY_S = 86_400

# `$` (not \Z) and `\d` are kept from the parsers this module replaced, so every value that a
# scenario or outlets file could hold before still reads the same.
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# Window bounds are range-checked after matching so that the error can say which rule broke.
_WINDOW = {
    False: re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*$"),
    True: re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$"),
}
_HHMM_EXPECTED = "HH:MM (00:00-23:59)"
_WINDOW_EXPECTED = "'HH:MM-HH:MM', e.g. '07:00-09:00'"


def parse_hhmm(text: str) -> int:
    """``'07:30'`` -> 27000: seconds after midnight of an ``HH:MM`` time of day.

    Exactly two digits each, 00:00-23:59, no spaces. Raises ValueError naming the expected form.
    """
    m = _HHMM.match(text)
    if m is None:
        raise ValueError(f"time of day {text!r} is invalid: expected {_HHMM_EXPECTED}")
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60


def _check_hhmm(text: str) -> str:
    parse_hhmm(text)
    return text


#: A scenario field holding an ``HH:MM`` time of day; the value stays the text as written.
HHMM = Annotated[str, AfterValidator(_check_hhmm)]


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A window of the day in seconds after midnight, ``start_s`` inclusive, ``end_s`` exclusive.

    ``end_s`` is at most 86400 (24:00). ``end_s < start_s`` means the window runs over midnight;
    only ``parse_window(..., over_midnight=True)`` makes such windows.
    """

    start_s: int
    end_s: int

    @property
    def over_midnight(self) -> bool:
        """Whether the window runs from ``start_s`` over midnight to ``end_s`` the next day."""
        return self.end_s < self.start_s

    def pieces(self) -> tuple[tuple[int, int], ...]:
        """The window as [start, end) second ranges within one day: two if it runs over midnight
        (the second dropped when it ends exactly at midnight, as it would be empty)."""
        if not self.over_midnight:
            return ((self.start_s, self.end_s),)
        if self.end_s == 0:
            return ((self.start_s, DAY_S),)
        return (self.start_s, DAY_S), (0, self.end_s)


def parse_window(
    text: str, *, one_digit_hour: bool = False, over_midnight: bool = False
) -> TimeWindow:
    """Parse one ``"HH:MM-HH:MM"`` window; spaces around either time are ignored.

    Raises ValueError, naming the window and what was expected, if it is malformed, has a time
    outside 00:00-24:00, starts at 24:00, is empty, or ends before it starts (unless
    ``over_midnight``).
    """
    m = _WINDOW[one_digit_hour].match(text)
    shown = repr(text.strip())  # a window cut from a list keeps the spaces around it
    if m is None:
        raise ValueError(f"time window {shown} is malformed: expected {_WINDOW_EXPECTED}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    for h, mm in ((h1, m1), (h2, m2)):
        if mm > 59 or h > 24 or (h == 24 and mm != 0):
            raise ValueError(f"time window {shown} has a time outside 00:00-24:00")
    start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    if start == DAY_S:
        raise ValueError(f"time window {shown} cannot start at 24:00")
    if start == end:
        raise ValueError(f"time window {shown} is empty: start equals end")
    if end < start and not over_midnight:
        raise ValueError(f"time window {shown} ends before it starts (may not run over midnight)")
    return TimeWindow(start, end)


def parse_windows(text: str, *, one_digit_hour: bool = False) -> tuple[TimeWindow, ...]:
    """Parse windows joined by ``;`` (``"09:00-11:30;13:30-17:30"``), each as ``parse_window``.

    Windows must lie within one day and come in order without overlapping (they may touch).
    """
    out: list[TimeWindow] = []
    for part in text.split(";"):
        window = parse_window(part, one_digit_hour=one_digit_hour)
        if out and window.start_s < out[-1].end_s:
            raise ValueError(f"time window {part.strip()!r} overlaps or precedes the one before it")
        out.append(window)
    return tuple(out)


def window_texts(*, one_digit_hour: bool = False, over_midnight: bool = False) -> Any:
    """A pydantic type: a tuple of ``"HH:MM-HH:MM"`` texts, each checked by ``parse_window``
    with these options. Values stay the texts as written, so dumps and config hashes keep them."""

    def check(text: str) -> str:
        parse_window(text, one_digit_hour=one_digit_hour, over_midnight=over_midnight)
        return text

    def apart(texts: tuple[str, ...]) -> tuple[str, ...]:
        # Overlapping windows in one list are almost always a typo (07:00-09:00 meant twice, or
        # a wrong hour); each minute may belong to one window only.
        seen: list[tuple[str, int, int]] = []
        for text in texts:
            window = parse_window(text, one_digit_hour=one_digit_hour, over_midnight=over_midnight)
            for start, end in window.pieces():
                for other, o_start, o_end in seen:
                    if start < o_end and o_start < end:
                        raise ValueError(
                            f"time windows {other!r} and {text.strip()!r} overlap; expected "
                            "windows that do not overlap (they may touch)"
                        )
                seen.append((text.strip(), start, end))
        return texts

    return Annotated[tuple[Annotated[str, AfterValidator(check)], ...], AfterValidator(apart)]
