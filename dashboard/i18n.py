"""One message catalogue for the dashboard, in Chinese (default) and English, and the number,
money and date formats of each language (``count``, ``yuan``, ``percent``, ``date``,
``time_of_day`` and the estimate mark ``estimate``: re-exported from ``sim/formats.py``, the one
copy the dashboard and the policy lab's reports share).

Messages live in ``dashboard/locale/*.yaml`` (one file per page or topic, so that pages can be
worked on apart): ``key: {zh: ..., en: ...}``. The files are read once into one catalogue; a key
defined twice, or missing a language, is an error when the dashboard starts, not a blank label
in front of a user. ``t(key, **values)`` formats a message with ``str.format``.

Codes in the data (card types, media, day types, ...) are translated under ``code.<kind>.<code>``
by ``code_label``; a code the catalogue does not know is shown as it is.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml

from sim.formats import LOCALES, count, date, estimate, percent, time_of_day, yuan

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
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


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def written_in_chinese(text: str) -> bool:
    """Whether ``text`` (a scenario's description, say) is written in Chinese: it has more
    Chinese characters than Latin letters. An English sentence naming a card or a city in
    Chinese ("... the free-ride (长寿卡) age lowered ...") is still English: a word of it is
    several letters, a Chinese word one or two characters."""
    return len(_HAN.findall(text)) > len(_LATIN.findall(text))


__all__ = [
    "DEFAULT_LANG",
    "LANGS",
    "LANG_NAMES",
    "LOCALES",
    "CatalogueError",
    "catalogue",
    "code_label",
    "count",
    "date",
    "estimate",
    "has",
    "percent",
    "place_name",
    "t",
    "time_of_day",
    "written_in_chinese",
    "yuan",
]
