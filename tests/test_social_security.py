"""Social-security cards at culture venues (sim/social_security.py): entries at home and in
the other cities of the region are recorded, priced with the place's local discount where it
gives visitors same-city treatment, paid from the holder's account and cleared on the cards' own
channel (not the transit exchanges), every date's book zero and every fen accounted for."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml
from output_frames import read_frame
from yrd_edits import seen_as

from sim.api import build, load_scenario, run, verify
from sim.scenario import ConfigError
from sim.scenario import load_scenario as load_file
from sim.social_security import VENUE_KINDS, holders, plan_entries

ROOT = Path(__file__).resolve().parent.parent
YRD = ROOT / "scenarios" / "yrd_2024.yaml"
DAYS = ["period.days=2", "list_changes=[]"]


def _with_treatment(scenario, city_code: str, same_city: bool):
    """``scenario`` with the city of ``city_code`` giving visitors same-city treatment or not
    (its own section and every other city's view of it)."""
    cities = []
    for city in scenario.city_scenarios:
        if city.output.city_code == city_code:
            ssc = city.social_security.model_copy(update={"same_city_treatment": same_city})
            city = city.model_copy(update={"social_security": ssc})
        cities.append(city)
    own = scenario.model_copy(update={"city_scenarios": tuple(cities)})
    return seen_as(own, city_code, same_city_venues=same_city)


@pytest.fixture(scope="module")
def yrd(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssc") / "run"
    summary = run(load_scenario(YRD, DAYS), out)
    return summary, out


def test_entries_at_home_and_away_are_recorded_with_the_places_discount(yrd):
    _, out = yrd
    assert verify(out) == []
    entries = read_frame(out, "venue_entries")
    away = entries[entries["card_city_code"] != entries["city_code"]]
    assert len(entries) > 10_000 and len(away) > 100
    assert set(entries["venue_kind"]) == {"library", "museum", "scenic_spot"}
    assert (entries["amount_fen"] == entries["list_price_fen"] - entries["discount_fen"]).all()
    scenic = entries[entries["venue_kind"] == "scenic_spot"]
    # Locals and, with same-city treatment everywhere, visitors get half off the 50 元 ticket.
    assert (scenic["list_price_fen"] == 5000).all() and (scenic["amount_fen"] == 2500).all()
    assert scenic[scenic["card_city_code"] != scenic["city_code"]]["same_city_treatment"].all()
    free = entries[entries["venue_kind"] != "scenic_spot"]
    assert (free["amount_fen"] == 0).all()  # free entries are recorded all the same
    # Each entry is acquired by the venue's city's operator and issued by the holder's city.
    assert (entries["acquirer_id"].str.endswith("_CULTURE")).all()
    assert (entries["issuer_id"].str.endswith("_SSC")).all()


def test_the_channel_clears_apart_from_transit_and_every_fen_is_accounted_for(yrd):
    summary, out = yrd
    entries = read_frame(out, "venue_entries")
    tx = read_frame(out, "transactions")
    assert not tx["issuer_id"].str.endswith("_SSC").any()  # never a transit record
    books = read_frame(out, "settlements")
    channel = books[books["node_id"] == "YRD_SSC"]
    assert len(channel) > 0
    assert (channel.groupby("service_date")["net_position_fen"].sum() == 0).all()
    assert set(channel["participant_id"]) <= set(entries["issuer_id"]) | set(
        entries["acquirer_id"]
    ) | {"YRD_SSC"}
    journal = read_frame(out, "ledger_entries")

    def balance(name: str) -> int:  # debit minus credit, from the written journal
        amount = journal["amount_fen"]
        return int(amount[journal["debit"] == name].sum() - amount[journal["credit"] == name].sum())

    gross = int(entries["amount_fen"].sum())
    paid_in = journal[journal["memo"] == "ssc_venue_entry"]["amount_fen"].sum()
    assert paid_in == gross
    # Everything paid was cleared and settled: no issuer still holds any, no position is open.
    issuers, operators = set(entries["issuer_id"]), set(entries["acquirer_id"])
    assert all(balance(f"unsettled:{i}") == 0 for i in issuers)
    # The channel is not prefunded: its issuers hold no settlement deposit, none is called.
    assert all(balance(f"deposit:{i}") == 0 for i in issuers)
    assert not set(summary.clearing["deposits"]) & issuers
    assert all(balance(f"settle:{p}") == 0 for p in issuers | operators | {"YRD_SSC"})
    # The operators earn the gross and pay the channel its fee (20 bp, rounded per pair).
    fees = -balance("fees:YRD_SSC")
    assert -sum(balance(f"revenue:{a}") for a in operators) == gross
    assert sum(balance(f"fees_paid:{a}") for a in operators) == fees
    assert abs(fees - gross * 20 / 10_000) <= len(operators) * len(issuers)
    assert summary.totals["cleared"] > 0
    # The run's report: every entry, expanded by each holder city's 1/scale.
    report = summary.social_security
    weight = {w.scenario.output.city_code: 1 / w.scenario.scale for w in summary.worlds}
    expected = entries["card_city_code"].map(weight).sum()
    assert abs(report["entries"] - expected) <= len(report["by_city"])  # rounded per row
    assert report["amount_fen"] > gross and report["visitor_discount_fen"] > 0
    assert {(r["holder_city_code"], r["venue_city_code"]) for r in report["by_city"]} == set(
        zip(entries["card_city_code"], entries["city_code"], strict=True)
    )


def test_without_same_city_treatment_visitors_pay_the_full_price_there(tmp_path):
    scenario = load_scenario(YRD, DAYS)
    shanghai = next(c for c in scenario.city_scenarios if c.name == "yrd_shanghai")
    code = shanghai.output.city_code
    run(_with_treatment(scenario, code, False), tmp_path / "run")
    entries = read_frame(tmp_path / "run", "venue_entries")
    scenic = entries[(entries["venue_kind"] == "scenic_spot") & (entries["city_code"] == code)]
    visitors = scenic[scenic["card_city_code"] != code]
    locals_ = scenic[scenic["card_city_code"] == code]
    assert len(visitors) > 0 and len(locals_) > 0
    assert (visitors["amount_fen"] == 5000).all() and not visitors["same_city_treatment"].any()
    assert (locals_["amount_fen"] == 2500).all()


# Prices and local discounts where ``price * pct / 100`` in floats lands just below the whole
# fen it should be (18.4 % of 375 fen is 68.99999999999999, not 69): the discount is computed
# in basis points and rounded down, as fares are.
_VENUE_PCT = {"library": (375, "18.4"), "museum": (625, "9.12"), "scenic_spot": (1000, "32.3")}


def test_venue_discounts_are_whole_fen_rounded_down_from_basis_points(tmp_path):
    venues = {
        kind: {"count": 1, "price_fen": price, "local_discount_pct": float(pct),
               "visit_share": 0.25 if kind != "library" else 0.5}
        for kind, (price, pct) in _VENUE_PCT.items()
    }  # fmt: skip
    overlay = tmp_path / "venues.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "extends": str(ROOT / "scenarios" / "small_ci.yaml"),
                "clearing": {"network": {"nodes": {"TEST_SSC": {"name_zh": "测试"}}}},
                "social_security": {
                    "issuer_id": "NT_SSC", "channel": "TEST_SSC", "acquirer_id": "NT_CULTURE",
                    "holder_share": 1.0, "visits_per_holder_year": 365, "away_visit_share": 0.0,
                    "venues": venues,
                },
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )  # fmt: skip
    world = build(load_scenario(overlay, days=1))
    none = np.zeros(0, np.int64)
    entries = plan_entries(world, world.streams, 0, holders(world), none, none)
    kinds = [VENUE_KINDS[k] for k in entries["kind"].tolist()]
    assert set(kinds) == set(_VENUE_PCT)
    expected = [
        math.floor(Fraction(_VENUE_PCT[k][0]) * Fraction(_VENUE_PCT[k][1]) / 100) for k in kinds
    ]
    assert entries["discount_fen"].tolist() == expected
    assert np.array_equal(
        entries["amount_fen"], entries["list_price_fen"] - entries["discount_fen"]
    )


def test_a_venue_discount_with_more_than_two_decimals_is_refused():
    with pytest.raises(ConfigError, match=r"local_discount_pct.*two decimals"):
        load_file(
            ROOT / "scenarios" / "yrd" / "nantong.yaml",
            ["social_security.venues.scenic_spot.local_discount_pct=12.345"],
        )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("social_security.venues.library.visit_share=0.9", "visit_share values add up to"),
        ("social_security.venues.zoo={count: 1, price_fen: 0, visit_share: 0}", "unknown kinds"),
        ("social_security.channel=NOWHERE", "social_security.channel: unknown clearing node"),
    ],
)
def test_a_bad_section_is_refused_at_its_field(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_file(ROOT / "scenarios" / "yrd" / "nantong.yaml", [override])
    assert "social_security" in str(err.value)


def _refused_pairs(scenario) -> set[tuple[str, str]]:
    """(holder's issuer, city code of use) where that city's readers refuse the holder city's
    own cards (a MoHURD-standard city's cards in a 交通联合-only city)."""
    return {
        (city.output.issuer_id, ext.city_code)
        for city in scenario.city_scenarios
        for ext in city.interop.cities.values()
        if ext.accepts_home_cards == 0 and ext.accepts_jiaotong_lianhe > 0
    }


def _card_taps_where_refused(out: Path, pairs) -> int:
    tx = read_frame(out, "transactions")
    cards = tx[tx["media"].isin(["physical_card", "nfc_virtual_card"])]
    keys = list(zip(cards["issuer_id"], cards["city_code"].astype(str), strict=True))
    return sum(1 for key in keys if key in pairs)


def test_the_cards_transit_application_rides_where_the_city_card_is_refused(yrd, tmp_path):
    _, out = yrd
    scenario = load_scenario(YRD, DAYS)
    pairs = _refused_pairs(scenario)
    assert ("SHANGHAI_CARD", "3205") in pairs  # Suzhou's readers refuse Shanghai's cards
    assert _card_taps_where_refused(out, pairs) > 50
    # Without the transit application, no card of those cities is ever taken there.
    cities = [
        c.model_copy(
            update={"social_security": c.social_security.model_copy(update={"transit": False})}
        )
        for c in scenario.city_scenarios
    ]
    run(scenario.model_copy(update={"city_scenarios": tuple(cities)}), tmp_path / "off")
    assert _card_taps_where_refused(tmp_path / "off", pairs) == 0
