"""Tests for sim.identity: GB 11643 ID numbers, synthetic identities, card numbers and masking."""

from __future__ import annotations

import re

import numpy as np
import pytest
from faker.providers.person.zh_CN import Provider as ZhPerson
from faker.providers.phone_number.zh_CN import Provider as ZhPhone
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.identity import (
    card_numbers,
    gb11643_check_digit,
    id_numbers,
    identities,
    is_synthetic_id,
    is_valid_gb11643,
    mask_card_number,
    mask_id_number,
    mask_name,
    mask_phone,
)
from sim.rng import Streams

NANTONG_CODES = np.array([320602, 320612, 320623, 320681, 320682, 320684, 320685])


def _population(streams: Streams, n: int) -> dict[str, np.ndarray]:
    """Test cardholders: ids, birth dates 1925-2019, sexes, Nantong district codes."""
    ids = np.arange(1000, 1000 + n)
    days = streams.integers("test_birth", 0, ids, 95 * 365)
    return {
        "card_ids": ids,
        "birth_dates": np.datetime64("1925-01-01") + days.astype("timedelta64[D]"),
        "sexes": streams.integers("test_sex", 0, ids, 2).astype(np.uint8),
        "admin_codes": NANTONG_CODES[streams.integers("test_region", 0, ids, len(NANTONG_CODES))],
    }


@pytest.fixture(scope="module")
def streams() -> Streams:
    return Streams(20240101)


@pytest.fixture(scope="module")
def people(streams: Streams) -> dict[str, np.ndarray]:
    return _population(streams, 400)


@pytest.mark.parametrize(
    ("first17", "check"),
    [
        ("11010519491231002", "X"),  # GB 11643-1999 textbook example
        ("44052418800101001", "4"),  # the widely quoted 1880 example
        # By hand: digits x weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
        # 3*7+2*9+0+6*5+0+2*4+1*2+9*1+9*6+0+0+1*9+0+1*5+9*8+0+1*2 = 230, 230 % 11 = 10 -> '2'
        ("32060219900101901", "2"),
        # same with last digit 7: 228 + 14 = 242 = 22*11, remainder 0 -> '1'
        ("32060219900101907", "1"),
        # 21+18+0+30+64+4+4+0+6+0+0+18+20+40+72+24+10 = 331, 331 % 11 = 1 -> '0'
        ("32068120100228965", "0"),
    ],
)
def test_check_digit(first17: str, check: str) -> None:
    assert gb11643_check_digit(first17) == check
    assert is_valid_gb11643(first17 + check)


def test_check_digit_rejects_bad_input() -> None:
    for bad in ("1101051949123100", "1101051949123100A", "１１０１０５１９４９１２３１００２"):
        with pytest.raises(ValueError, match="17 ASCII digits"):
            gb11643_check_digit(bad)


@pytest.mark.parametrize(
    "id_number",
    [
        "110105194912310021",  # wrong check digit
        "11010519491231002x",  # the standard writes X in upper case
        "110105194902310024",  # 1949-02-31 does not exist
        "99010519491231002X",  # 99 is no province
        "11010519491231002",  # 17 characters
        "1101051949123100 X",
        None,
    ],
)
def test_invalid_ids(id_number: object) -> None:
    assert not is_valid_gb11643(id_number)  # type: ignore[arg-type]
    assert not is_synthetic_id(id_number)  # type: ignore[arg-type]


def test_real_looking_id_is_not_synthetic() -> None:
    assert is_valid_gb11643("11010519491231002X")
    assert not is_synthetic_id("11010519491231002X")  # sequence 002, outside 9xx


def test_generated_ids_are_valid_synthetic_and_consistent(
    streams: Streams, people: dict[str, np.ndarray]
) -> None:
    out = identities(streams, **people)
    ids = out["id_number"]
    assert len(ids) == len(out["name"]) == len(out["phone"]) == len(out["synthetic"]) == 400
    assert all(out["synthetic"])
    for idn, birth, sex, code in zip(
        ids, people["birth_dates"], people["sexes"], people["admin_codes"], strict=True
    ):
        assert is_valid_gb11643(idn) and is_synthetic_id(idn), idn
        assert idn[:6] == str(code)
        assert idn[6:14] == str(birth).replace("-", "")
        assert int(idn[16]) % 2 == sex  # odd sequence = male
    # the sequence codes spread over the whole 9xx range
    assert len({idn[14:17] for idn in ids}) > 60


def test_same_card_same_identity_across_calls_and_subsets(
    streams: Streams, people: dict[str, np.ndarray]
) -> None:
    full = identities(streams, **people)
    again = identities(Streams(20240101), **people)
    assert full == again
    pick = np.array([399, 5, 17, 250, 5])  # any order, with a repeat
    sub = identities(streams, **{k: v[pick] for k, v in people.items()})
    for key in ("name", "id_number", "phone"):
        assert sub[key] == [full[key][i] for i in pick]
    other = identities(Streams(7), **people)
    assert sum(a != b for a, b in zip(full["name"], other["name"], strict=True)) > 300


def test_identity_is_a_function_of_seed_and_card_only(streams: Streams) -> None:
    """Each card alone gives what it gets in a batch: nothing depends on row position or batch."""
    pop = _population(streams, 60)
    batch = identities(streams, **pop)
    for i in (0, 7, 59):
        one = identities(streams, **{k: v[i : i + 1] for k, v in pop.items()})
        assert one == {key: [batch[key][i]] for key in batch}
    # keyed by the scenario seed too: another seed gives other phones
    phones = identities(Streams(20240102), **pop)["phone"]
    assert sum(a != b for a, b in zip(batch["phone"], phones, strict=True)) > 55


def test_names_and_phones_are_chinese_and_follow_sex(
    streams: Streams, people: dict[str, np.ndarray]
) -> None:
    out = identities(streams, **people)
    surnames = set(ZhPerson.last_names)
    male, female = set(ZhPerson.first_names_male), set(ZhPerson.first_names_female)
    for name, phone, sex in zip(out["name"], out["phone"], people["sexes"], strict=True):
        assert re.fullmatch(r"[\u4e00-\u9fff]{2,4}", name), name
        assert re.fullmatch(r"1[3-9]\d{9}", phone), phone
        given_names = male if sex == 1 else female
        assert any(name[:k] in surnames and name[k:] in given_names for k in (1, 2)), name


def _split_name(name: str) -> tuple[str, str]:
    """(surname, given name) with Faker zh_CN's surnames; a compound one needs a given name after.

    Faker has 欧 and 阳 too, so 欧阳 alone is 欧 + 阳 (and ``mask_name`` gives 欧*).
    """
    k = 2 if name[:2] in ZhPerson.last_names and len(name) > 2 else 1
    return name[:k], name[k:]


def test_distributions_use_fakers_zh_cn_tables(streams: Streams) -> None:
    n = 200_000
    ids = np.arange(n) * 7 + 3
    sexes = (ids % 2).astype(np.uint8)
    births = np.full(n, np.datetime64("1980-06-15"))
    out = identities(streams, ids, births, sexes, np.full(n, 320602))
    split = [_split_name(x) for x in out["name"]]
    surnames = np.array([last for last, _ in split])
    given = np.array([first for _, first in split])

    # surnames: only Faker's, drawn with Faker's weights (all 399, incl. the compound 欧阳)
    weights = {k: float(v) for k, v in ZhPerson.last_names.items()}
    assert set(surnames.tolist()) <= set(weights)
    total = sum(weights.values())
    for last in ("王", "李", "张", "欧阳"):
        expected = n * weights[last] / total
        assert abs(np.count_nonzero(surnames == last) - expected) < 5 * np.sqrt(expected), last
    assert len(set(surnames.tolist())) > 0.9 * len(weights)

    # given names: exactly Faker's male list for men, female list for women, each near-uniform
    for sex, table in ((1, ZhPerson.first_names_male), (0, ZhPerson.first_names_female)):
        names, counts = np.unique(given[sexes == sex], return_counts=True)
        assert set(names.tolist()) == set(table)
        expected = np.count_nonzero(sexes == sex) / len(table)
        assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)

    # phones: 11 digits, the prefix one of Faker's formats (uniform), the rest uniform digits
    phones = np.array(out["phone"])
    prefixes = {f.rstrip("#") for f in ZhPhone.formats}
    assert all(len(f) == 11 for f in ZhPhone.formats)
    assert prefixes == {str(p) for p in ZhPhone.phonenumber_prefixes}
    found, counts = np.unique(phones.astype("<U3"), return_counts=True)
    assert set(found.tolist()) == prefixes
    assert np.abs(counts - n / len(prefixes)).max() < 5 * np.sqrt(n / len(prefixes))
    last_digit = np.unique(np.array([p[-1] for p in out["phone"]]), return_counts=True)[1]
    assert len(last_digit) == 10 and np.abs(last_digit - n / 10).max() < 5 * np.sqrt(n / 10)
    assert len(set(out["phone"])) > 0.99 * n

    # compound surnames survive masking whole (欧阳娜 → 欧阳*)
    compound = [x for x, last in zip(out["name"], surnames.tolist(), strict=True) if last == "欧阳"]
    assert compound
    for name, masked in zip(compound, mask_name(compound), strict=True):
        assert masked == "欧阳" + "*" * (len(name) - 2)


def test_identity_input_validation(streams: Streams, people: dict[str, np.ndarray]) -> None:
    one = {k: v[:1] for k, v in people.items()}
    cases = [
        ({"sexes": np.array([2], dtype=np.uint8)}, "0 \\(female\\) or 1 \\(male\\)"),
        ({"admin_codes": np.array([12345])}, "GB/T 2260"),
        ({"admin_codes": np.array([990101])}, "GB/T 2260"),
        ({"admin_codes": np.array(["32060A"])}, "6-digit"),
        ({"birth_dates": np.array(["NaT"], dtype="datetime64[D]")}, "NaT"),
        ({"birth_dates": np.array(["1850-01-01"], dtype="datetime64[D]")}, "1900-2099"),
        ({"card_ids": np.array([-1])}, "non-negative"),
        ({"sexes": np.array([0, 1], dtype=np.uint8)}, "shape"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            identities(streams, **(one | change))
    # string region codes are accepted and give the same number
    as_text = one | {"admin_codes": np.array([str(one["admin_codes"][0])])}
    assert identities(streams, **as_text)["id_number"] == identities(streams, **one)["id_number"]


def test_empty_request(streams: Streams) -> None:
    empty = np.array([], dtype=np.int64)
    out = identities(streams, empty, empty.astype("datetime64[D]"), empty, empty)
    assert out == {"name": [], "id_number": [], "phone": [], "synthetic": []}


def test_id_numbers_scale_and_collision_rate(streams: Streams) -> None:
    pop = _population(streams, 50_000)
    ids = id_numbers(streams, **pop)
    assert ids.dtype == np.dtype("<U18") and ids.shape == (50_000,)
    assert all(is_synthetic_id(x) for x in ids[::997])
    # 50 sequence codes per (region, birth date, sex): few cards share a number at this density
    assert len(np.unique(ids)) > 0.99 * len(ids)


def test_card_numbers() -> None:
    out = card_numbers(np.array([0, 1, 42, 9_999_999_999]), "310426")
    assert out.tolist() == [
        "3104260000000000",
        "3104260000000001",
        "3104260000000042",
        "3104269999999999",
    ]
    assert card_numbers([], "310426").shape == (0,)
    with pytest.raises(ValueError, match="6 ASCII digits"):
        card_numbers([1], "31042")
    with pytest.raises(ValueError, match="below 10"):
        card_numbers([10**10], "310426")


def test_masking_examples() -> None:
    assert mask_card_number(["3104260000012345", "123", ""]).tolist() == [
        "310426******2345",
        "***",
        "",
    ]
    assert mask_phone(["13812345678", "1234567"]).tolist() == ["138****5678", "*******"]
    assert mask_id_number(["11010519491231002X"]).tolist() == ["110105********002X"]
    names = ["张三", "李小明", "欧阳娜娜", "欧阳修", "司马相如", "王", "", "欧阳"]
    assert mask_name(names).tolist() == ["张*", "李**", "欧阳**", "欧阳*", "司马**", "*", "", "欧*"]
    assert mask_name(np.array([], dtype=str)).shape == (0,)


def test_masking_generated_identities(streams: Streams, people: dict[str, np.ndarray]) -> None:
    out = identities(streams, **people)
    masked_ids = mask_id_number(out["id_number"])
    assert all(re.fullmatch(r"\d{6}\*{8}9\d\d[\dX]", m) for m in masked_ids)  # 9xx stays visible
    assert all(re.fullmatch(r"1\d\d\*{4}\d{4}", m) for m in mask_phone(out["phone"]))
    masked_names = mask_name(out["name"])
    for name, masked in zip(out["name"], masked_names, strict=True):
        assert len(masked) == len(name) and masked[0] == name[0] and masked.endswith("*")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="0123456789", min_size=11, max_size=19))
def test_card_mask_keeps_six_and_four(number: str) -> None:
    (masked,) = mask_card_number([number]).tolist()
    assert masked == number[:6] + "*" * (len(number) - 10) + number[-4:]
