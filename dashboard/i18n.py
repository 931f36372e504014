"""One message catalogue for the dashboard, in Chinese (default) and English, and the number,
money and date formats of each language (Babel).

Messages live in ``dashboard/locale/*.yaml`` (one file per page or topic, so that pages can be
worked on apart): ``key: {zh: ..., en: ...}``. The files are read once into one catalogue; a key
defined twice, or missing a language, is an error when the dashboard starts, not a blank label
in front of a user. ``t(key, **values)`` formats a message with ``str.format``.

Codes in the data (card types, media, day types, ...) are translated under ``code.<kind>.<code>``
by ``code_label``; a code the catalogue does not know is shown as it is.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import cache
from pathlib import Path

import yaml
from babel.dates import format_date, format_datetime
from babel.numbers import format_compact_decimal, format_decimal, format_percent

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
LOCALES = {"zh": "zh_Hans_CN", "en": "en_US"}
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANG_NAMES = {"zh": "中文", "en": "English"}  # each language in itself, for the switches


class CatalogueError(RuntimeError):
    """A message file is malformed (names the file and key)."""


@cache
def catalogue() -> dict[str, dict[str, str]]:
    """Every message, by key, in both languages."""
    messages: dict[str, dict[str, str]] = {}
    where: dict[str, Path] = {}
    for path in sorted(LOCALE_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise CatalogueError(f"{path}: expected a mapping of message keys")
        for key, texts in data.items():
            if key in messages:
                raise CatalogueError(f"{path}: {key!r} is already defined in {where[key]}")
            if not isinstance(texts, dict) or set(texts) != set(LANGS):
                raise CatalogueError(f"{path}: {key!r}: expected exactly the keys {LANGS}")
            messages[key], where[key] = {k: str(v) for k, v in texts.items()}, path
    return messages


def t(key: str, lang: str, **values: object) -> str:
    """The message ``key`` in ``lang``, formatted with ``values``."""
    text = catalogue()[key][lang]
    return text.format(**values) if values else text


def has(key: str) -> bool:
    """Whether the catalogue has ``key``."""
    return key in catalogue()


def code_label(kind: str, code: object, lang: str) -> str:
    """A data code (``kind`` such as card_type, media, day_type) in words."""
    key = f"code.{kind}.{code}"
    return t(key, lang) if key in catalogue() else str(code)


def place_name(key: str) -> str:
    """A place's scenario key in English words: keys are pinyin ("rudong" is Rudong)."""
    return key.replace("_", " ").title()


# --- formats ----------------------------------------------------------------------------------


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


def estimate(text: str, lang: str, estimated: bool) -> str:
    """A formatted figure as shown: marked as an estimate (约 / ≈, ``common.estimate``) where
    it was expanded from a city simulated below full scale; as it is otherwise. The Explore
    page and the run brief both mark through here, so they mark alike (callers leave a zero
    unmarked: nothing expands to nothing)."""
    return t("common.estimate", lang, value=text) if estimated else text


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
