"""Chinese names in English words, for names the data gives in Chinese only (outlets, clearing
institutions, metro lines): a small glossary of the common words in them translated (政务中心 is
Government Service Centre, 广场 Square), the rest, proper names, in pinyin without tone marks,
every word capitalised: 钟楼广场 is "Bell Tower Square", 如东(掘港) "Rudong (Juegang)". A metro
line's name follows a rule of its own first (``metro_line_name``: 1号线 is "Line 1").

Places the run itself names (its cities and regions, whose scenario ids are pinyin) are passed
in as ``known`` names, so that an outlet's name says "Rudong" just as the region column beside
it does. The words are matched longest first, from the left. A run of characters no entry
matches is a proper name, romanised with pypinyin: as one word up to three characters (Langshan,
Gangzha), in words of two beyond that, since Chinese place names are mostly two characters
(通州三余 is "Tongzhou Sanyu"). Anything that is not a Chinese character (digits, Latin letters,
punctuation) is kept, and so is a character pypinyin cannot read: a name is never lost, only
left in part as the data writes it. The same name always gives the same words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import cache

from pypinyin import Style, lazy_pinyin

#: Common words of outlet and institution names, translated. Longer entries win over the words
#: inside them (市民卡服务中心 is Citizen Card + Service Centre, not 市 + 民 + ...).
GLOSSARY = {
    # where cards are sold and served
    "政务中心": "Government Service Centre",
    "便民服务中心": "Public Service Centre",
    "市民服务中心": "Citizen Service Centre",
    "客服中心": "Customer Service Centre",
    "服务中心": "Service Centre",
    "服务网点": "Service Outlet",
    "服务点": "Service Point",
    "网点": "Outlet",
    "营业厅": "Service Hall",
    "大厅": "Hall",
    "银行": "Bank",
    "电信": "Telecom",
    # cards and codes
    "市民卡": "Citizen Card",
    "社保卡": "Social Security Card",
    "交通一卡通": "Transport Card",
    "一卡通": "One Card",
    "公交卡": "Bus Card",
    "乘车码": "Ride Code",
    "支付宝": "Alipay",
    "微信": "WeChat",
    "银联": "UnionPay",
    # transport
    "客运站": "Coach Station",
    "汽车站": "Bus Station",
    "火车站": "Railway Station",
    "车站": "Station",
    "地铁": "Metro",
    "机场": "Airport",
    "公交": "Bus",
    "交通": "Transport",
    # clearing
    "数据交换中心": "Data Exchange Centre",
    "数据中心": "Data Centre",
    "清算中心": "Clearing Centre",
    "交换中心": "Exchange Centre",
    "中心": "Centre",
    "公司": "Company",
    # places
    "开发区": "Development Zone",
    "广场": "Square",
    "钟楼": "Bell Tower",
    "桥": "Bridge",
    "全国": "National",
    "区域": "Regional",
    "城市": "City",
    "省": "Province",
    "市": "City",
    "区": "District",
    "县": "County",
}

_HAN = re.compile(r"[\u3400-\u9fff\U00020000-\U0002ffff]")
# Pinyin syllables that start with a vowel take an apostrophe inside a word (Xi'an).
_VOWEL_START = re.compile(r"^[aoe]")
_PROPER_WORD_MAX = 3  # a proper name this long or shorter is one word


def english(name: str, known: Mapping[str, str] | None = None) -> str:
    """``name`` (Chinese) in English words: ``known`` names (Chinese → English; the run's
    places) and the glossary translated, the rest in pinyin, each word capitalised."""
    return _english(unicodedata.normalize("NFKC", str(name)), tuple(sorted((known or {}).items())))


@cache
def _english(name: str, known: tuple[tuple[str, str], ...]) -> str:
    words = {**GLOSSARY, **dict(known)}  # the run's own place names win
    longest = max(map(len, words))
    out: list[str] = []
    proper = ""  # Chinese characters no entry matched yet: a proper name
    kept = False  # whether the last token is a character kept as the name writes it
    i = 0
    while i < len(name):
        match = next(
            (name[i : i + n] for n in range(min(longest, len(name) - i), 0, -1)
             if name[i : i + n] in words),
            None,
        )  # fmt: skip
        if match is None and _HAN.match(name[i]):
            proper += name[i]
            i += 1
            continue
        if proper:  # a proper name ends here: the next character starts a token of its own
            out += _romanised(proper)
            proper, kept = "", False
        if match is not None:
            out.append(words[match])
            i += len(match)
        elif out and kept and (out[-1] + name[i]).isalnum():
            out[-1] += name[i]  # the next character of a number or code (A051)
            i += 1
        else:
            out.append(name[i])
            i += 1
        kept = match is None
    out += _romanised(proper)
    return _joined(out)


def _romanised(chars: str) -> list[str]:
    """A proper name in pinyin words without tone marks, each capitalised."""
    if not chars:
        return []
    if len(chars) <= _PROPER_WORD_MAX:
        parts = [chars]
    else:  # in twos; an odd last character joins the word before it
        parts = [chars[k : k + 2] for k in range(0, len(chars) - 1, 2)]
        if len(chars) % 2:
            parts[-1] += chars[-1]
    return [_word(part) for part in parts]


def _word(chars: str) -> str:
    syllables = lazy_pinyin(chars, style=Style.NORMAL, v_to_u=True, errors="default")
    text = syllables[0] + "".join(f"'{s}" if _VOWEL_START.match(s) else s for s in syllables[1:])
    return text[:1].upper() + text[1:]


def _joined(tokens: list[str]) -> str:
    """Words and the characters kept between them as one line: words apart by a space, an
    opening bracket against the word after it, closing punctuation against the word before."""
    text = ""
    for token in tokens:
        if token.isspace():
            continue
        if not text or text.endswith(("(", "[", "/", "-")) or token in ")],.;:!?/-":
            text += token
        elif token in "、，；":  # Chinese list and clause marks
            text += ","
        else:
            text += " " + token
    return text


#: What a metro line's Chinese name may start with: the word for metro, which the pages say
#: themselves before the line's name (地铁1号线 is line 1号线 of the metro).
_METRO_WORD = re.compile(r"^(?:地铁|轨道交通|轨交)\s*")
#: A numbered line, by its number or code: 1号线, 10 号线, S1线.
_NUMBERED_LINE = re.compile(r"^([A-Za-z]*\d+[A-Za-z]*)\s*号?\s*线$")
#: A line known by a name: 机场线, 浦江线.
_NAMED_LINE = re.compile(r"^(.+?)\s*线$")


def metro_line_name(name_zh: str, lang: str, known: Mapping[str, str] | None = None) -> str:
    """A metro line's own name in ``lang``, from the scenario's Chinese name (``network.metro.
    <id>.name_zh``), without the word for metro, which the pages put before it (地铁1号线,
    "Metro Line 1"). Chinese: as the scenario writes it, a leading 地铁 or 轨道交通 left out.
    English, by rule: a numbered line by its number or code ("1号线" and "地铁1号线" are
    "Line 1", "S1线" "Line S1"); a line known by a name by that name in English words and
    "Line" ("机场线": "Airport Line", "浦江线": "Pujiang Line"); any other name in English words
    (``english``)."""
    written = str(name_zh).strip()
    own = _METRO_WORD.sub("", written) or written  # a name that is only the word: kept
    if lang == "zh":
        return own
    plain = unicodedata.normalize("NFKC", own)  # full-width digits and letters (１号线) too
    if numbered := _NUMBERED_LINE.match(plain):
        return f"Line {numbered[1].upper()}"
    if named := _NAMED_LINE.match(plain):
        return f"{english(named[1], known)} Line"
    return english(plain, known)


def outlet_name(name_zh: str, lang: str, known: Mapping[str, str] | None = None) -> str:
    """An outlet's name in ``lang``: as the outlets file writes it in Chinese, in English words
    otherwise (``english``)."""
    return str(name_zh) if lang == "zh" else english(name_zh, known)


__all__ = ["GLOSSARY", "english", "metro_line_name", "outlet_name"]
