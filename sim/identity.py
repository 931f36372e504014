"""Synthetic cardholder identities, card numbers and display masking.

Identities are made lazily, only for the rows asked for (a day's card sales, an export), and are a
pure function of (scenario seed, card id): the same card gets the same name, ID number and phone in
any run, subset or order. Names and phones are drawn with numpy from Faker ``zh_CN``'s own tables
(weighted surnames, sex-specific given names, mobile prefixes), not by calling Faker per row. No
record describes a real person (DOMAIN.md §5), but the phone numbers are random 11-digit numbers in
real mobile prefixes and may be someone's: never let a system under test send messages or calls to
them.

Synthetic ID convention (checkable, see ``is_synthetic_id``): an 18-character GB 11643-1999 number
(address code, birth date, sequence, ISO 7064 MOD 11-2 check digit) whose 3-digit sequence code is
in 900-999, odd for men and even for women. GB 11643 reserves no range for test data, so the
convention marks our numbers but cannot make them disjoint from real ones: the ``synthetic`` column
is the authoritative flag, and only a name and ID number together identify someone. The masked form
(``mask_id_number``) keeps the last four characters, so the 9xx marker stays visible.

The 9xx range leaves 50 sequence codes per (address code, birth date, sex), drawn at random per
card: cards sharing all three may share an ID number (about 7% of cards in a 1.7 M Nantong-like
population, under 1% at 50,000 cards). Join on card id, never on ID number.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from faker.providers.person.zh_CN import Provider as _FakerPerson
from faker.providers.phone_number.zh_CN import Provider as _FakerPhone

from sim.rng import Streams

#: Stream used for identities, day 0, keyed by card id. Draws: 0 surname, 1 ID sequence code,
#: 2 given name, 3 phone number.
IDENTITY_STREAM = "identity"
_DRAW_SURNAME, _DRAW_SEQUENCE, _DRAW_GIVEN, _DRAW_PHONE = 0, 1, 2, 3
#: First digit of the sequence code of every synthetic ID number.
SYNTHETIC_SEQUENCE_DIGIT = "9"
_SYNTHETIC_SEQUENCE_CODES = 50  # 900..999, one parity per sex

#: ISO 7064 MOD 11-2 weights 2^(17-i) mod 11 for the 17 body digits (GB 11643-1999 §7).
_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
#: Check character indexed by (weighted sum mod 11).
_CHECK_CHARS = "10X98765432"
_CHECK_ORDS = np.array([ord(c) for c in _CHECK_CHARS], dtype=np.uint32)
#: GB/T 2260 province-level codes (first two digits of an address code).
_PROVINCE_INTS = np.array(
    [*range(11, 16), *range(21, 24), *range(31, 38), *range(41, 47), *range(50, 55)]
    + [*range(61, 66), 71, 81, 82],
    dtype=np.int64,
)
_PROVINCES = frozenset(str(p) for p in _PROVINCE_INTS.tolist())
#: Common compound surnames (复姓): ``mask_name`` keeps the whole surname for these.
COMPOUND_SURNAMES: frozenset[str] = frozenset(
    # A word list reads better as one string; the one-item-per-line literal would run 50 lines.
    (  # noqa: SIM905
        "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 司空 夏侯 令狐 轩辕 端木 独孤 "
        "南宫 西门 万俟 闻人 钟离 澹台 公冶 宗政 濮阳 淳于 单于 太叔 申屠 赫连 呼延 拓跋 百里 东郭 "
        "羊舌 微生 公羊 梁丘 左丘 东门 第五 谷梁 段干 亓官 司寇 仲孙 乐正 壤驷 漆雕 巫马"
    ).split()
)
_ZERO = ord("0")


def gb11643_check_digit(first17: str) -> str:
    """The GB 11643-1999 check character ('0'-'9' or 'X') for the first 17 digits of an ID."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise ValueError(f"expected 17 ASCII digits, got {first17!r}")
    total = sum(int(c) * int(w) for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def is_valid_gb11643(id_number: str) -> bool:
    """Whether ``id_number`` is a structurally valid 18-character GB 11643-1999 ID number.

    Checks: 17 digits then a digit or upper-case X, a GB/T 2260 province code, a real birth date,
    and the check character. It cannot check that the address code or the person exists.
    """
    if not isinstance(id_number, str) or len(id_number) != 18:
        return False
    body = id_number[:17]
    if not (body.isascii() and body.isdigit()) or body[:2] not in _PROVINCES:
        return False
    try:
        dt.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return False
    return gb11643_check_digit(body) == id_number[17]


def is_synthetic_id(id_number: str) -> bool:
    """Whether ``id_number`` is valid and follows the synthetic convention (sequence code 9xx)."""
    return is_valid_gb11643(id_number) and id_number[14] == SYNTHETIC_SEQUENCE_DIGIT


def _as_ids(card_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    ids = np.asarray(card_ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError("card_ids must be a one-dimensional integer array")
    ids = ids.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError("card_ids must be non-negative")
    return ids


def _admin_codes(admin_codes: Sequence[int | str] | np.ndarray, n: int) -> np.ndarray:
    codes = np.asarray(admin_codes)
    if codes.shape != (n,):
        raise ValueError(f"admin_codes has shape {codes.shape}, expected ({n},)")
    if codes.dtype.kind in "US":
        text = codes.astype(str)
        if n and not np.all((np.strings.str_len(text) == 6) & np.strings.isdigit(text)):
            raise ValueError("admin_codes must be 6-digit GB/T 2260 region codes")
        codes = text.astype(np.int64)
    elif n and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError("admin_codes must be integers or 6-digit strings")
    codes = codes.astype(np.int64)
    ok = (codes >= 100000) & (codes <= 999999) & np.isin(codes // 10000, _PROVINCE_INTS)
    if not ok.all():
        raise ValueError(
            f"not GB/T 2260 region codes (6 digits, valid province): {codes[~ok][:5].tolist()}"
        )
    return codes


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) array of ASCII digit code points of non-negative integers, zero-padded."""
    out = np.empty((values.size, width), dtype=np.uint32)
    v = values.astype(np.int64)
    for k in range(width - 1, -1, -1):  # q*10 beats % 10 by about 2x on int64
        q = v // 10
        out[:, k] = v - q * 10
        v = q
    out += _ZERO
    return out


def _to_strings(code_points: np.ndarray) -> np.ndarray:
    """(n, w) uint32 code points → length-n array of '<Uw' strings (no Python loop)."""
    n, w = code_points.shape
    return np.ascontiguousarray(code_points, dtype=np.uint32).view(f"<U{w}").reshape(n)


def id_numbers(
    streams: Streams,
    card_ids: Sequence[int] | np.ndarray,
    birth_dates: np.ndarray,
    sexes: np.ndarray,
    admin_codes: Sequence[int | str] | np.ndarray,
) -> np.ndarray:
    """Synthetic GB 11643 ID numbers (sequence 9xx, parity = sex), vectorised, as '<U18'."""
    ids = _as_ids(card_ids)
    n = ids.size
    births = np.asarray(birth_dates, dtype="datetime64[D]")
    sex = np.asarray(sexes)
    if births.shape != (n,) or sex.shape != (n,):
        raise ValueError(f"birth_dates and sexes must have shape ({n},) like card_ids")
    if n and np.isnat(births).any():
        raise ValueError("birth_dates contains NaT")
    if n and not np.isin(sex, (0, 1)).all():
        raise ValueError("sexes must be 0 (female) or 1 (male)")
    codes = _admin_codes(admin_codes, n)
    years = births.astype("datetime64[Y]").astype(np.int64) + 1970
    if n and (years.min() < 1900 or years.max() > 2099):
        raise ValueError("birth_dates must fall in the years 1900-2099")
    months = births.astype("datetime64[M]").astype(np.int64) % 12 + 1
    mdays = (births - births.astype("datetime64[M]")).astype(np.int64) + 1
    k = streams.integers(IDENTITY_STREAM, 0, ids, _SYNTHETIC_SEQUENCE_CODES, draw=_DRAW_SEQUENCE)
    sequence = 900 + 2 * k + sex.astype(np.int64)

    chars = np.empty((n, 18), dtype=np.uint32)
    chars[:, 0:6] = _digits(codes, 6)
    chars[:, 6:14] = _digits(years * 10000 + months * 100 + mdays, 8)
    chars[:, 14:17] = _digits(sequence, 3)
    total = (chars[:, :17].astype(np.int64) - _ZERO) @ _WEIGHTS
    chars[:, 17] = _CHECK_ORDS[total % 11]
    return _to_strings(chars)


@dataclass(frozen=True)
class _NameTables:
    """Faker ``zh_CN`` data as arrays, built once (see ``_name_tables``)."""

    surname_cdf: np.ndarray  # (S,) cumulative surname weights, ends in 1
    full_names: np.ndarray  # (S, M + F) '<U4': surname + given name, males first
    n_male: int
    n_female: int
    phone_prefixes: np.ndarray  # (P,) int64, e.g. 138
    phone_tail_digits: int  # random digits after the prefix (8)


@functools.cache
def _name_tables() -> _NameTables:
    """Faker zh_CN's surname weights, given-name lists and phone formats as numpy tables.

    Reproduces the distributions of ``last_name()`` (weighted by Faker's percentages),
    ``first_name_male()`` / ``first_name_female()`` (uniform) and ``phone_number()`` (uniform
    format, each '#' a uniform digit), without Faker's per-call cost.
    """
    surnames = list(_FakerPerson.last_names)
    weights = np.array([float(_FakerPerson.last_names[x]) for x in surnames])
    if not (weights > 0).all():
        raise RuntimeError("Faker zh_CN surname weights must be positive")
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    male, female = list(_FakerPerson.first_names_male), list(_FakerPerson.first_names_female)
    full = np.array([[last + first for first in male + female] for last in surnames], dtype=str)

    prefixes, tails = [], set()
    for fmt in _FakerPhone.formats:
        m = re.fullmatch(r"(\d+)(#+)", fmt)
        if m is None or len(fmt) != 11:
            raise RuntimeError(f"unexpected Faker zh_CN phone format {fmt!r}")
        prefixes.append(int(m.group(1)))
        tails.add(len(m.group(2)))
    if len(tails) != 1:
        raise RuntimeError("Faker zh_CN phone formats mix prefix lengths")
    return _NameTables(
        surname_cdf=cdf,
        full_names=full,
        n_male=len(male),
        n_female=len(female),
        phone_prefixes=np.array(prefixes, dtype=np.int64),
        phone_tail_digits=tails.pop(),
    )


def identities(
    streams: Streams,
    card_ids: Sequence[int] | np.ndarray,
    birth_dates: np.ndarray,
    sexes: np.ndarray,
    admin_codes: Sequence[int | str] | np.ndarray,
) -> dict[str, list]:
    """Synthetic identities for the given cards: ``name``, ``id_number``, ``phone``, ``synthetic``.

    ``birth_dates`` datetime64[D], ``sexes`` 0 = female / 1 = male, ``admin_codes`` 6-digit GB/T
    2260 codes of the registered address. Names (a Faker zh_CN surname, drawn with Faker's
    weights, + a given name of the card's sex) and phones (a Faker zh_CN mobile prefix + uniform
    digits) are drawn with numpy from the card's identity stream, so the output does not depend on
    which other cards are asked for. Vectorised: a few µs per row at 500 rows, well under 1 µs per
    row in bulk. Stable for a given Faker version (the tables come from the pinned Faker).
    """
    ids = _as_ids(card_ids)
    id_nums = id_numbers(streams, ids, birth_dates, sexes, admin_codes)
    male = np.asarray(sexes).astype(bool)  # validated as 0/1 by id_numbers
    t = _name_tables()
    u_last = streams.uniform(IDENTITY_STREAM, 0, ids, _DRAW_SURNAME)
    last = np.minimum(np.searchsorted(t.surname_cdf, u_last, side="right"), len(t.surname_cdf) - 1)
    u_given = streams.uniform(IDENTITY_STREAM, 0, ids, _DRAW_GIVEN)
    pool = np.where(male, t.n_male, t.n_female)
    given = np.minimum((u_given * pool).astype(np.int64), pool - 1)
    given += np.where(male, 0, t.n_male)
    names = t.full_names[last, given]

    tail = 10**t.phone_tail_digits
    k = streams.integers(IDENTITY_STREAM, 0, ids, len(t.phone_prefixes) * tail, _DRAW_PHONE)
    q = k // tail
    phones = _to_strings(_digits(t.phone_prefixes[q] * tail + (k - q * tail), 11))
    return {
        "name": names.tolist(),
        "id_number": id_nums.tolist(),
        "phone": phones.tolist(),
        "synthetic": [True] * ids.size,
    }


def card_numbers(card_ids: Sequence[int] | np.ndarray, prefix: str) -> np.ndarray:
    """16-digit card numbers: 6-digit issuer ``prefix`` + card id zero-padded to 10 digits."""
    if len(prefix) != 6 or not (prefix.isascii() and prefix.isdigit()):
        raise ValueError(f"prefix must be 6 ASCII digits, got {prefix!r}")
    ids = _as_ids(card_ids)
    if ids.size and ids.max() >= 10**10:
        raise ValueError("card ids must be below 10**10 to fit 10 digits")
    chars = np.empty((ids.size, 16), dtype=np.uint32)
    chars[:, :6] = [ord(c) for c in prefix]
    chars[:, 6:] = _digits(ids, 10)
    return _to_strings(chars)


def _code_points(values: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D strings → ((n, width) uint32 code points, zero padded; (n,) lengths)."""
    a = np.ascontiguousarray(np.asarray(values, dtype=str).reshape(-1))
    width = max(a.dtype.itemsize // 4, 1)
    if a.dtype.itemsize == 0:  # all values empty: numpy gives '<U1' only for non-empty input
        a = a.astype("<U1")
    cp = a.view(np.uint32).reshape(a.size, width)
    return cp, np.strings.str_len(a).astype(np.int32)


def _mask_middle(
    values: Sequence[str] | np.ndarray, head: int, tail: int, stars: int | None
) -> np.ndarray:
    """Keep ``head`` and ``tail`` characters; hide the rest with ``stars`` '*' (None: one per char).

    A value too short to hide anything after keeping head and tail is masked entirely. Works on
    code points (numpy's string functions widen the dtype at every concatenation: 10x slower).
    """
    cp, length = _code_points(values)
    width = cp.shape[1]
    out_width = width if stars is None else max(width, head + stars + tail)
    pos = np.arange(out_width, dtype=np.int32)[None, :]
    length = length[:, None]
    hides = length > head + tail
    if stars is None:
        out_len = length
        star = (pos >= head) & (pos < length - tail)
        src = pos
    else:
        out_len = np.where(hides, head + stars + tail, length)
        star = (pos >= head) & (pos < head + stars)
        src = np.where(pos < head, pos, pos - (head + stars) + (length - tail))
    star = np.where(hides, star, True)
    out = np.take_along_axis(cp, np.clip(src, 0, width - 1), axis=1)
    out[star] = ord("*")
    out[pos >= out_len] = 0
    return _to_strings(out)


def mask_card_number(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """JR/T 0171 display form: first 6 and last 4 digits, one '*' per hidden digit."""
    return _mask_middle(values, 6, 4, None)


def mask_phone(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """JR/T 0171 display form: first 3, '****', last 4 (13812345678 → 138****5678)."""
    return _mask_middle(values, 3, 4, 4)


def mask_id_number(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """First 6 (address code), '********' over the birth date, last 4 (sequence + check).

    Hides the birth date, the most identifying part; the visible sequence keeps the synthetic 9xx
    marker (and the sex parity) checkable in masked exports.
    """
    return _mask_middle(values, 6, 4, 8)


def mask_name(values: Sequence[str] | np.ndarray) -> np.ndarray:
    """Keep the surname's first character, one '*' per other character (张三 → 张*, 李小明 → 李**).

    A recognised compound surname (``COMPOUND_SURNAMES``) is kept whole when a given name follows
    (欧阳娜娜 → 欧阳**). At least one character is always hidden (a 1-character value → '*').
    """
    cp, length = _code_points(values)
    first2 = _to_strings(np.ascontiguousarray(cp[:, :2])) if cp.shape[1] >= 2 else None
    compound = np.zeros(length.shape, dtype=bool)
    if first2 is not None:
        compound = np.isin(first2, list(COMPOUND_SURNAMES)) & (length >= 3)
    keep = np.minimum(np.where(compound, 2, 1), np.maximum(length - 1, 0))[:, None]
    pos = np.arange(cp.shape[1], dtype=np.int32)[None, :]
    out = cp.copy()
    out[(pos >= keep) & (pos < length[:, None])] = ord("*")
    return _to_strings(out)
