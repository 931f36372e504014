"""Incomplete transactions in another city (DOMAIN.md §2): a metro entry without exit away is
charged what that city charges for it, and processed first where it happened (its terminals, at
the card's next tap there), else by the card's issuer before the card rides again; a city that
leaves visitors' incomplete trips to their issuer sends every one there. Metro rides away are
acquired by that city's metro operator and pay on the exit."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from output_frames import read_frame
from yrd_edits import seen_as

from sim.api import load_scenario, run, verify

ROOT = Path(__file__).resolve().parent.parent
YRD = ROOT / "scenarios" / "yrd_2024.yaml"
DAYS = ["period.days=2", "list_changes=[]"]


def _away_metro(out: Path) -> pd.DataFrame:
    tx = read_frame(out, "transactions")
    tx["city"] = tx["city_code"].astype(str)
    tx["route"] = tx["route_id"].astype(str)
    return tx


def _incomplete_fares(scenario) -> dict[str, int]:
    """Each city's charge for an incomplete trip, as the other cities see it (by city code)."""
    return {
        ext.city_code: ext.incomplete_fare_fen
        for city in scenario.city_scenarios
        for ext in city.interop.cities.values()
        if ext.metro_trip_share > 0
    }


def _check_processors(tx: pd.DataFrame, processes: dict[str, bool]) -> None:
    """``place`` exactly where the city processes visitors' trips and the card taps again in
    that city later that day; else ``issuer``."""
    away = tx[tx["route"].str.startswith("EXT-")]
    last = away.groupby(["service_date", "token_id"])["event_timestamp"].max()
    incomplete = away[away["incomplete_trip"]]
    assert len(incomplete) > 0
    for _, r in incomplete.iterrows():
        again = last[(r["service_date"], r["token_id"])] > r["event_timestamp"]
        expected = "place" if processes.get(r["city"], True) and again else "issuer"
        assert r["incomplete_processed_by"] == expected, r.to_dict()


@pytest.fixture(scope="module")
def yrd(tmp_path_factory):
    out = tmp_path_factory.mktemp("yrd") / "run"
    scenario = load_scenario(YRD, DAYS)
    run(scenario, out)
    return scenario, out


def test_metro_rides_away_pay_on_exit_to_the_citys_metro(yrd):
    scenario, out = yrd
    assert verify(out) == []
    tx = _away_metro(out)
    metro = tx[tx["route"].str.endswith("-METRO")]
    assert len(metro) > 1_000 and (metro["mode"] == "metro").all()
    assert metro["acquirer_id"].astype(str).str.endswith("_METRO").all()
    entries = metro[(metro["trip_record_type"] == "entry") & ~metro["incomplete_trip"]]
    assert len(entries) > 0 and (entries["amount_fen"] == 0).all()
    exits = metro[metro["trip_record_type"] == "exit"]
    assert (exits["list_fare_fen"] > 0).all()
    # Cities without metro get no metro rides from visitors.
    no_metro = {c.output.city_code for c in scenario.city_scenarios if not c.network.metro}
    assert not set(metro["city"]) & no_metro


def test_an_incomplete_trip_away_pays_that_citys_charge_and_is_processed_there_or_at_home(yrd):
    scenario, out = yrd
    tx = _away_metro(out)
    incomplete = tx[tx["route"].str.startswith("EXT-") & tx["incomplete_trip"]]
    fares = _incomplete_fares(scenario)
    assert (incomplete["list_fare_fen"] == incomplete["city"].map(fares)).all()
    charged = incomplete[incomplete["fare_action"] != "declined"]
    assert (charged["amount_fen"] == charged["list_fare_fen"]).all()  # no concession on it
    _check_processors(tx, {})
    assert set(incomplete["incomplete_processed_by"]) == {"place", "issuer"}
    # At home the reader completes it at once.
    home = tx[~tx["route"].str.startswith("EXT-") & tx["incomplete_trip"]]
    assert len(home) > 0 and (home["incomplete_processed_by"] == "place").all()
    assert tx[~tx["incomplete_trip"]]["incomplete_processed_by"].isna().all()


def test_a_city_that_leaves_visitors_trips_to_their_issuer(tmp_path):
    scenario = load_scenario(YRD, DAYS)
    shanghai = next(c for c in scenario.city_scenarios if c.name == "yrd_shanghai")
    code = shanghai.output.city_code
    run(seen_as(scenario, code, processes_visitors_incomplete=False), tmp_path / "run")
    tx = _away_metro(tmp_path / "run")
    _check_processors(tx, {code: False})
    there = tx[tx["incomplete_trip"] & (tx["city"] == code)]
    assert len(there) > 0 and (there["incomplete_processed_by"] == "issuer").all()
