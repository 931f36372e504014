"""Privacy of the output records (sim/records.py, sim/identity.py): daily-rotating tokens and
masked identities by default; stable card ids and full, valid synthetic identities unmasked.

small_ci runs twice for two days, masked and unmasked. Runs are deterministic, so row i of a table
is the same record in both runs, and the unmasked token (the card id) tells whose it is.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
from output_frames import read_frame

from sim.api import load_scenario, run
from sim.codes import CARD_TYPES, MEDIA
from sim.identity import COMPOUND_SURNAMES, is_synthetic_id, is_valid_gb11643

SMALL = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"
TABLES = ("card_sales", "topups", "transactions")
ID_COLUMN = {"card_sales": "sale_id", "topups": "topup_id", "transactions": "transaction_id"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    scenario = load_scenario(SMALL, days=2)
    masked = run(scenario, root / "masked")
    unmasked = run(scenario, root / "unmasked", unmasked=True)
    return {
        "world": unmasked.world,
        "masked": {t: read_frame(root / "masked", t) for t in TABLES},
        "unmasked": {t: read_frame(root / "unmasked", t) for t in TABLES},
        "days": [masked.world.start_date + dt.timedelta(days=d) for d in range(2)],
    }


def _paired(runs, table):
    masked, unmasked = runs["masked"][table], runs["unmasked"][table]
    assert len(masked) == len(unmasked) > 0
    key = ID_COLUMN[table]
    assert (masked[key].to_numpy() == unmasked[key].to_numpy()).all()
    return masked, unmasked


@pytest.mark.parametrize("table", TABLES)
def test_unmasked_token_is_the_stable_card_id(runs, table):
    _, unmasked = _paired(runs, table)
    pop = runs["world"].population
    token = unmasked["token_id"].to_numpy()
    assert np.isin(token, pop.card_id).all()
    row = np.searchsorted(pop.card_id, token)  # card ids ascend, so ids map back to rows
    assert np.array_equal(pop.card_id[row], token)
    # The token names the right card: its type (and, for cards, its medium) match the record.
    category = np.array([CARD_TYPES[t] for t in pop.card_type[row]])
    assert (unmasked["rider_category"].to_numpy() == category).all()
    card = unmasked["media"].isin(["physical_card", "nfc_virtual_card"]).to_numpy()
    if table == "transactions":
        card = card & (unmasked["issuer_id"] == "NTCARD").to_numpy()
    medium = np.array([MEDIA[m] for m in pop.medium[row[card]]])
    assert (unmasked["media"].to_numpy()[card] == medium).all()


@pytest.mark.parametrize("table", TABLES)
def test_masked_token_is_one_pseudonym_per_card_and_day(runs, table):
    masked, unmasked = _paired(runs, table)
    pairs = masked.assign(card=unmasked["token_id"].to_numpy())
    per_day = pairs.groupby(["service_date", "card"])["token_id"].nunique()
    assert (per_day == 1).all()  # a card keeps its token all day (taps of a day can be joined)
    per_token = pairs.groupby(["service_date", "token_id"])["card"].nunique()
    assert (per_token == 1).all()  # and no two cards share one
    assert not np.isin(masked["token_id"], unmasked["token_id"]).any()


def test_masked_tokens_change_across_days_unmasked_do_not(runs):
    masked, unmasked = _paired(runs, "transactions")
    day1, day2 = runs["days"]
    card = unmasked["token_id"].to_numpy()
    on1 = (masked["service_date"] == day1).to_numpy()
    on2 = (masked["service_date"] == day2).to_numpy()
    both = np.intersect1d(card[on1], card[on2])
    assert len(both) > 100  # many cards ride on both days
    first = dict(zip(card[on1], masked["token_id"].to_numpy()[on1], strict=True))
    second = dict(zip(card[on2], masked["token_id"].to_numpy()[on2], strict=True))
    assert all(first[c] != second[c] for c in both)
    # No masked token of day 1 reappears on day 2, for any card.
    assert not set(first.values()) & set(second.values())


def test_masked_tokens_join_tables_within_a_day(runs):
    tx_m, tx_u = _paired(runs, "transactions")
    top_m, top_u = _paired(runs, "topups")
    day_of = {}
    for masked, unmasked in ((tx_m, tx_u), (top_m, top_u)):
        for date, card, token in zip(
            masked["service_date"], unmasked["token_id"], masked["token_id"], strict=True
        ):
            assert day_of.setdefault((date, card), token) == token
    # Cards that top up ride the same day: the tables really overlap.
    riders = set(zip(tx_u["service_date"], tx_u["token_id"], strict=True))
    toppers = zip(top_u["service_date"], top_u["token_id"], strict=True)
    assert any(key in riders for key in toppers)


def test_unmasked_card_sales_belong_to_cards_issued_that_day(runs):
    _, sales = _paired(runs, "card_sales")
    world = runs["world"]
    pop = world.population
    card = sales["token_id"].to_numpy()
    day = np.array([(d - world.start_date).days for d in sales["service_date"]])
    assert np.array_equal(pop.issue_day[card], day)
    prefix = world.scenario.output.card_number_prefix
    numbers = list(sales["card_no"])
    assert all(n.startswith(prefix) and len(n) == 16 and n.isdigit() for n in numbers)
    # One number per card; its digits are a keyed map of the card id, not the id itself.
    assert len(set(numbers)) == len(set(card.tolist()))
    assert sum(n[6:] == f"{c:010d}" for n, c in zip(numbers, card, strict=True)) <= 1


def test_masked_card_sales_strings_are_masked(runs):
    masked, unmasked = _paired(runs, "card_sales")
    for m, u in zip(masked.itertuples(), unmasked.itertuples(), strict=True):
        # Card number: first 6 and last 4 shown, one '*' per hidden digit.
        assert len(m.card_no) == len(u.card_no) == 16
        assert m.card_no == u.card_no[:6] + "*" * 6 + u.card_no[-4:]
        # Phone: 3 + **** + 4.
        assert re.fullmatch(r"\d{3}\*{4}\d{4}", m.phone)
        assert m.phone == u.phone[:3] + "****" + u.phone[-4:]
        # ID number: address code and last 4 shown, birth date hidden.
        assert m.id_number == u.id_number[:6] + "*" * 8 + u.id_number[-4:]
        # Name: the surname's first character stays, every other character is a '*'.
        assert len(m.holder_name) == len(u.holder_name)
        assert m.holder_name[0] == u.holder_name[0] != "*"
        kept = len(m.holder_name.rstrip("*"))
        assert kept == 1 or (kept == 2 and u.holder_name[:2] in COMPOUND_SURNAMES)
        assert m.holder_name[:kept] == u.holder_name[:kept]
        assert set(m.holder_name[kept:]) == {"*"}
        assert m.holder_name != u.holder_name


def test_unmasked_card_sales_hold_full_valid_synthetic_identities(runs):
    _, sales = _paired(runs, "card_sales")
    world = runs["world"]
    pop = world.population
    admin = [r.admin_code for r in world.scenario.regions.values()]
    for row in sales.itertuples():
        assert "*" not in row.card_no + row.phone + row.id_number + row.holder_name
        assert re.fullmatch(r"\d{16}", row.card_no)
        assert re.fullmatch(r"1\d{10}", row.phone)
        assert len(row.holder_name) >= 2
        assert is_valid_gb11643(row.id_number), row.id_number
        assert is_synthetic_id(row.id_number), row.id_number
        card = int(row.token_id)
        # The ID number encodes the holder's region, birth date and sex.
        assert row.id_number[:6] == admin[pop.region[card]]
        birth = dt.date.fromordinal(int(pop.birth_ord[card]))
        assert row.id_number[6:14] == birth.strftime("%Y%m%d")
        assert int(row.id_number[16]) % 2 == int(pop.sex[card])


def test_masked_ids_are_not_checkable_but_unmasked_are(runs):
    masked, unmasked = _paired(runs, "card_sales")
    assert not any(is_valid_gb11643(x) for x in masked["id_number"])
    assert all(is_valid_gb11643(x) for x in unmasked["id_number"])


def test_scenario_without_masking_writes_what_unmasked_writes(runs, tmp_path):
    # output.mask_identities: false in the scenario does what --unmasked does.
    scenario = load_scenario(SMALL, ["output.mask_identities=false"], days=2)
    run(scenario, tmp_path / "plain")
    plain = read_frame(tmp_path / "plain", "card_sales")
    unmasked = runs["unmasked"]["card_sales"]
    assert (plain["phone"].to_numpy() == unmasked["phone"].to_numpy()).all()
    assert (plain["token_id"].to_numpy() == unmasked["token_id"].to_numpy()).all()
    assert "*" not in "".join(plain["phone"])
