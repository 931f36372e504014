"""How figures are written for readers, in Chinese and English (Babel): counts, money, shares,
dates, times of day, and the mark of an estimate.

One module for every text that shows a number, so that the dashboard (``dashboard/i18n.py``
re-exports these), its briefs and the policy lab's reports (``sim/lab_report.py``) write the
same number the same way: a headline card and the summary beside it never disagree. It lives
under ``sim/`` because the reports are written there and nothing under ``sim/`` imports a UI.

Money is integer fen in, yuan out. Chinese counts and compact amounts use 万/亿 from ten
thousand up, English ones thousands separators.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from babel.dates import format_date, format_datetime
from babel.numbers import format_compact_decimal, format_decimal, format_percent

#: Babel's locale of each language.
LOCALES = {"zh": "zh_Hans_CN", "en": "en_US"}

#: How a figure expanded from a city simulated below full scale is marked, per language.
ESTIMATE_MARK = {"zh": "约{value}", "en": "≈ {value}"}


def count(n: float | int | None, lang: str) -> str:
    """A count: 万/亿 in Chinese from ten thousand up, thousands separators in English."""
    if n is None:
        return "–"
    if lang == "zh" and abs(n) >= 10_000:
        return format_compact_decimal(n, locale=LOCALES[lang], fraction_digits=2)
    return format_decimal(round(n, 1) if isinstance(n, float) else n, locale=LOCALES[lang])


def yuan(fen: int | None, lang: str, compact: bool = False) -> str:
    """Integer fen as yuan with two decimals (``compact``: 万元/亿元 in Chinese for large
    amounts, as headline cards show them)."""
    if fen is None:
        return "–"
    amount = Decimal(int(fen)) / 100
    if lang == "zh":
        if compact and abs(amount) >= 10_000:
            text = format_compact_decimal(amount, locale=LOCALES[lang], fraction_digits=2)
            return f"{text}元"
        return f"{format_decimal(amount, format='#,##0.00', locale=LOCALES[lang])} 元"
    return f"¥{format_decimal(amount, format='#,##0.00', locale=LOCALES[lang])}"


def estimate(value: float | int | None, text: str, lang: str, estimated: bool) -> str:
    """``text``, the formatted ``value``, as shown: marked as an estimate (约 / ≈) where it was
    expanded from a city simulated below full scale; as it is otherwise. A zero (or a missing
    figure) is never marked: nothing expands to nothing."""
    if not estimated or value is None or value == 0 or value != value:  # NaN: no figure
        return text
    return ESTIMATE_MARK[lang].format(value=text)


def percent(share: float | None, lang: str, digits: int = 1) -> str:
    """A share (0.25) as a percentage."""
    if share is None:
        return "–"
    return format_percent(share, format=f"#,##0.{'0' * digits}%", locale=LOCALES[lang])


def date(value: dt.date | str, lang: str) -> str:
    """A date, e.g. 2024年1月3日 / Jan 3, 2024."""
    if isinstance(value, str):
        value = dt.date.fromisoformat(value)
    return format_date(value, format="medium", locale=LOCALES[lang])


def time_of_day(value: dt.datetime, lang: str) -> str:
    """A time of day, HH:mm:ss."""
    return format_datetime(value, format="HH:mm:ss", locale=LOCALES[lang])


__all__ = [
    "ESTIMATE_MARK",
    "LOCALES",
    "count",
    "date",
    "estimate",
    "percent",
    "time_of_day",
    "yuan",
]
