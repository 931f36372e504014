"""The interoperable city list over time (sim/city_list.py): a newly listed city's cards are
taken by each acquirer once its terminals are updated (at most 30 days), a delisted city's are
refused within 7 days, and every refusal in between is recorded with its reason and with what
the rider did instead; a declined card is never overdrawn and its rider's other payment is
recorded too."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
from output_frames import read_frame

from sim.api import BadInput, load_scenario, run, verify
from sim.city_list import CityList, ListChange

ROOT = Path(__file__).resolve().parent.parent
START = dt.date(2024, 3, 4)


def _list(*changes: tuple[int, str, str]) -> CityList:
    """A list for cities "A" (0) and "B" (1) seen from two lines: lags (listed, delisted)
    (2, 1) on line 0 and (5, 7) on line 1."""
    return CityList(
        tuple(
            ListChange(date=START + dt.timedelta(days=d), city_code=code, change=change)
            for d, code, change in changes
        ),
        START,
        ["A", "B"],
        np.array([[2, 1], [5, 7]]),
    )


def _accepts(city_list: CityList, day: int) -> list[bool]:
    return city_list.terminal_accepts(np.array([1, 1]), np.array([0, 1]), day).tolist()


def test_a_listed_city_is_taken_by_each_terminal_after_its_own_lag():
    city_list = _list((3, "B", "listed"))
    assert not city_list.riders_try(1, 2) and city_list.riders_try(1, 3)
    assert _accepts(city_list, 2) == [False, False]  # not listed yet
    assert _accepts(city_list, 4) == [False, False]  # notified, terminals not updated
    assert _accepts(city_list, 5) == [True, False]  # line 0 updated after 2 days
    assert _accepts(city_list, 8) == [True, True]  # line 1 after 5
    assert _accepts(city_list, 400) == [True, True]


def test_a_delisted_city_is_refused_once_each_terminal_is_updated():
    city_list = _list((1, "B", "delisted"))
    assert city_list.riders_try(1, 0) and city_list.riders_try(1, 5)  # they learn at the reader
    assert _accepts(city_list, 1) == [True, True]
    assert _accepts(city_list, 2) == [False, True]
    assert _accepts(city_list, 7) == [False, True]
    assert _accepts(city_list, 8) == [False, False]  # within 7 days of the notice


def test_the_later_notice_wins_once_both_are_applied():
    city_list = _list((1, "B", "listed"), (3, "B", "delisted"))
    # Line 1 applies the delisting (day 10) after the listing (day 6): refused from day 10.
    assert _accepts(city_list, 6) == [False, True]
    assert _accepts(city_list, 10) == [False, False]
    # A city that never changes keeps what its data give; a city not met is ignored.
    untouched = _list((1, "Z", "listed"))
    assert not untouched.changes_anything and _accepts(untouched, 5) == [True, True]


def test_a_terminal_lag_beyond_the_rules_is_refused_at_its_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"extends: {ROOT / 'scenarios' / 'small_ci.yaml'}\n"
        "interop:\n  terminal_update_days:\n    CITY_BUS: {listed: 31, delisted: 7}\n",
        encoding="utf-8",
    )
    with pytest.raises(BadInput, match=r"bad\.yaml:4: interop\.terminal_update_days\.CITY_BUS"):
        load_scenario(bad)


def _two_city(tmp_path: Path, list_changes: str, alpha_lag: str, beta_lag: str) -> Path:
    """The two cities with links, each city's buses given terminal lags, and the run's list
    changes; riders away 20 days a year so that every day has trips between the cities."""
    shutil.copytree(ROOT / "scenarios" / "two_city", tmp_path / "two_city")
    shutil.copytree(ROOT / "scenarios" / "data", tmp_path / "data")
    for city, lag in (("alpha", alpha_lag), ("beta", beta_lag)):
        up = city.upper()
        (tmp_path / "two_city" / f"{city}_x.yaml").write_text(
            f"extends: {city}.yaml\n"
            "interop:\n  away_days_per_card_year: 20\n  terminal_update_days:\n"
            f"    {up}_BUS_CENTRE: {lag}\n    {up}_BUS_COUNTY: {lag}\n",
            encoding="utf-8",
        )
    text = (ROOT / "scenarios" / "two_city.yaml").read_text(encoding="utf-8")
    text = text.replace("alpha.yaml", "alpha_x.yaml").replace("beta.yaml", "beta_x.yaml")
    text = text.replace(
        "cities:\n",
        "links: {road_factor: 1.3, attraction_per_million_residents: 0.4}\n"
        f"list_changes: {list_changes}\ncities:\n",
    )
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_riders_of_a_newly_listed_city_are_refused_until_each_terminal_takes_them(tmp_path):
    # Beta's cards join the list on day 1 (2024-03-05); alpha's terminals need 2 days.
    path = _two_city(
        tmp_path,
        '[{date: 2024-03-05, city_code: "9902", change: listed}]',
        "{listed: 2, delisted: 1}",
        "{listed: 0, delisted: 0}",
    )
    out = tmp_path / "out"
    summary = run(load_scenario(path, ["period.days=5"]), out)
    assert verify(out) == []
    tx = read_frame(out, "transactions")
    refused = read_frame(out, "refused_taps")
    not_accepted = refused[refused["reject_reason"] == "card_not_accepted"]
    days = sorted(str(d)[:10] for d in not_accepted["service_date"].unique())
    assert days == ["2024-03-05", "2024-03-06"]  # from the notice until the update
    assert set(not_accepted["card_city_code"]) == {"9902"}
    assert set(not_accepted["acquirer_id"]) <= {"ALPHA_BUS_CENTRE", "ALPHA_BUS_COUNTY"}
    assert not_accepted["transaction_id"].isna().all()  # never a transaction
    assert set(not_accepted["fallback"]) <= {"none", "qr", "cash"}
    assert summary.totals["card_not_accepted"] == len(not_accepted)
    # Beta's cards in alpha: none before the update (day 0 nobody tried), then taken.
    beta_in_alpha = tx[
        (tx["issuer_id"] == "BETA_CARD")
        & (tx["city_code"] == "9901")
        & tx["media"].isin(["physical_card", "nfc_virtual_card"])
    ]
    taken = sorted({str(d)[:10] for d in beta_in_alpha["service_date"]})
    assert taken and taken[0] == "2024-03-07"
    # Alpha's cards in beta were never touched by the change.
    assert not (refused["card_city_code"] == "9901").any() or set(
        refused[refused["card_city_code"] == "9901"]["reject_reason"]
    ) == {"declined_insufficient_balance"}


def test_a_delisted_citys_cards_are_refused_within_the_terminals_lag(tmp_path):
    # Alpha's cards leave the list on day 1; beta's terminals apply it after 3 days.
    path = _two_city(
        tmp_path,
        '[{date: 2024-03-05, city_code: "9901", change: delisted}]',
        "{listed: 0, delisted: 0}",
        "{listed: 10, delisted: 3}",
    )
    out = tmp_path / "out"
    run(load_scenario(path, ["period.days=6"]), out)
    assert verify(out) == []
    tx = read_frame(out, "transactions")
    alpha_cards_in_beta = tx[
        (tx["issuer_id"] == "ALPHA_CARD")
        & (tx["city_code"] == "9902")
        & tx["media"].isin(["physical_card", "nfc_virtual_card"])
    ]
    taken = sorted({str(d)[:10] for d in alpha_cards_in_beta["service_date"]})
    # Taken until beta's terminals apply the notice (day 1 + 3), refused from then on.
    assert taken[-1] == "2024-03-07"
    refused = read_frame(out, "refused_taps")
    refused = refused[refused["reject_reason"] == "card_not_accepted"]
    assert sorted({str(d)[:10] for d in refused["service_date"]}) == ["2024-03-08", "2024-03-09"]
    assert set(refused["card_city_code"]) == {"9901"}


def test_declined_cards_are_never_overdrawn_and_the_other_payment_is_recorded(tmp_path):
    scenario = load_scenario(ROOT / "scenarios" / "small_ci.yaml", ["period.days=3"])
    out = tmp_path / "out"
    run(scenario, out)
    tx = read_frame(out, "transactions")
    refused = read_frame(out, "refused_taps")
    declined = tx[tx["reject_reason"] == "declined_insufficient_balance"]
    assert len(declined) > 0
    rows = refused[refused["reject_reason"] == "declined_insufficient_balance"]
    assert sorted(rows["transaction_id"].astype("int64")) == sorted(declined["transaction_id"])
    assert set(rows["fallback"]) <= {"none", "qr", "cash"} and len(set(rows["fallback"])) > 1
    share = scenario.behaviour.declined_pays_other_way_share
    assert (rows["fallback"] != "none").mean() == pytest.approx(share, abs=0.2)
    assert verify(out) == []  # balances never below zero, money conserved


def test_the_runs_list_changes_belong_to_the_run_not_to_a_city(tmp_path):
    path = _two_city(
        tmp_path,
        '[{date: 2024-03-05, city_code: "9902", change: listed}]',
        "{listed: 2, delisted: 1}",
        "{listed: 0, delisted: 0}",
    )
    alpha = tmp_path / "two_city" / "alpha_x.yaml"
    alpha.write_text(
        alpha.read_text(encoding="utf-8")
        + '  list_changes: [{date: 2024-03-06, city_code: "9902", change: delisted}]\n',
        encoding="utf-8",
    )
    with pytest.raises(BadInput, match=r"run\.yaml:\d+: cities\.alpha .*list_changes"):
        load_scenario(path)


@pytest.mark.parametrize("treatment", ["local", "none"])
def test_a_card_away_gets_the_concessions_of_the_place_unless_the_policy_denies_them(
    tmp_path, treatment
):
    path = _two_city(tmp_path, "[]", "{listed: 0, delisted: 0}", "{listed: 0, delisted: 0}")
    for city in ("alpha", "beta"):  # the elderly card from 65, as each city's own riders
        overlay = tmp_path / "two_city" / f"{city}_x.yaml"
        overlay.write_text(
            overlay.read_text(encoding="utf-8")
            + "population: {concession_ages: {longevity: 65}}\n",
            encoding="utf-8",
        )
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("cities:\n", f"visitor_concessions: {treatment}\ncities:\n"))
    scenario = load_scenario(path, ["period.days=3"])
    seen = scenario.city_scenarios[0].interop.cities["beta"]
    expected = ((65, 100.0),) if treatment == "local" else ()
    assert tuple((b.age_min, b.discount_pct) for b in seen.elderly_discounts) == expected
    out = tmp_path / "out"
    run(scenario, out, unmasked=True)
    tx = read_frame(out, "transactions")
    cards = tx["media"].isin(["physical_card", "nfc_virtual_card"])
    away = tx[cards & (tx["issuer_id"] == "ALPHA_CARD") & (tx["city_code"] == "9902")]
    elderly = away["rider_category"] == "longevity"
    student = away["rider_category"] == "student"
    free = away["amount_fen"] == 0
    assert elderly.sum() > 0 and student.sum() > 0
    if treatment == "local":
        # Every holder of 65 or more rides free (the elderly cards, and ordinary cards of
        # holders that old); students pay the visitor fare (not an age-based concession).
        assert free[elderly].all() and not free[student].any()
        assert (free & ~elderly).sum() < (~free & ~elderly).sum()
    else:
        assert (away["amount_fen"] == away["list_fare_fen"]).all()


# --- fares of the taps around a refusal ---------------------------------------------------------
SMALL = ROOT / "scenarios" / "small_ci.yaml"


def _planned(overrides: list[str], days: int):
    """The world and the planned days ``0..days-1`` of small_ci with ``overrides`` (devices
    all mapped to one agent: the order of the uploads does not matter here)."""
    from sim.api import build
    from sim.day import plan_day
    from sim.state import RunState

    world = build(load_scenario(SMALL, overrides, days=days))
    agents = np.zeros(len(world.network.devices.line), dtype=np.int64)
    state = RunState.fresh(world)
    return world, [plan_day(world, state, day, agents) for day in range(days)]


def _fare_identity(c: dict[str, np.ndarray]) -> np.ndarray:
    return c["amount_fen"] == (
        c["list_fare_fen"] - c["concession_fen"] - c["transfer_fen"] - c["cap_fen"]
    )


def test_a_card_refused_away_pays_its_qr_code_the_list_fare_without_card_discounts():
    """Nantong's cards delisted in Shanghai at once: a holder with 一码通行 rides on with it 20 s
    later. That record pays the list fare, with no concession, transfer or cap of the card
    (the code is another account), and amount = list - concession - transfer - cap."""
    from sim.codes import FALLBACK_QR, MEDIA

    world, plans = _planned(
        [
            "interop.away_days_per_card_year=4",
            "interop.list_changes=[{date: 2024-01-01, city_code: '3206', change: delisted}]",
            "interop.terminal_update_days={SHANGHAI_TRANSIT: {listed: 0, delisted: 0}}",
        ],
        days=6,
    )
    yima = MEDIA.index("qr_yimatongxing")
    fallbacks = 0
    for plan in plans:
        c = plan.taps.filled()
        assert _fare_identity(c).all()
        ref = plan.refusals
        paid = np.flatnonzero(ref["fallback"] == FALLBACK_QR)
        fallbacks += len(paid)
        for k in paid.tolist():  # the QR record of each fallback: same rider, line, 20 s later
            hit = np.flatnonzero(
                (c["row"] == ref["row"][k]) & (c["line"] == ref["line"][k])
                & (c["t_s"] == min(ref["t_s"][k] + 20, 86_399)) & (c["medium"] == yima)
            )  # fmt: skip
            assert len(hit) == 1, k
            i = int(hit[0])
            assert c["line"][i] >= world.n_local_lines  # away: only there does a rider fall back
            assert c["amount_fen"][i] == c["list_fare_fen"][i]
            assert c["concession_fen"][i] == c["transfer_fen"][i] == c["cap_fen"][i] == 0
            assert not c["is_transfer"][i] and not c["fare_capped"][i] and not c["home_card"][i]
    assert fallbacks > 10


def test_a_refused_leg_here_earns_the_next_tap_of_the_card_no_transfer_discount():
    """Taizhou's cards delisted, Nantong's metro updated at once, its buses within 7 days: a
    visitor refused at the metro (paying cash, or not riding) who then takes a bus with the
    card pays the bus in full. The transfer rule (1 元 off a boarding within 60 min of the
    card's previous one) counts only boardings the card made."""
    from sim.codes import STORED_VALUE_MEDIA, TAP_EXIT

    world, plans = _planned(
        [
            "interop.cities.taizhou.inbound_visitors_per_day=20000",
            "interop.list_changes=[{date: 2024-01-01, city_code: '3212', change: delisted}]",
            "interop.terminal_update_days={NT_METRO: {listed: 0, delisted: 0}}",
        ],
        days=2,
    )
    window_s = world.scenario.fares.transfer.window_min * 60
    pop = world.population
    refused_then_kept = transfers = 0
    for plan in plans:
        c = plan.taps.filled()
        assert _fare_identity(c).all()
        ref = plan.refusals
        visitor_card = (
            (pop.home_city[c["row"]] != 0) & np.isin(c["medium"], list(STORED_VALUE_MEDIA))
            & (c["line"] < world.n_local_lines)
        )  # fmt: skip
        refused_then_kept += len(np.intersect1d(ref["row"], c["row"][visitor_card]))
        boarding = visitor_card & (c["kind"] != TAP_EXIT)
        for i in np.flatnonzero(visitor_card & c["is_transfer"]).tolist():
            transfers += 1
            before = boarding & (c["row"] == c["row"][i]) & (c["t_s"] < c["t_s"][i])
            assert (before & (c["t_s"] >= c["t_s"][i] - window_s)).any(), (
                f"card row {c['row'][i]}: a transfer at {c['t_s'][i]} s with no boarding of "
                "the card in the window before it (refused there at "
                f"{ref['t_s'][ref['row'] == c['row'][i]].tolist()} s)"
            )
    assert refused_then_kept > 20 and transfers > 1000
