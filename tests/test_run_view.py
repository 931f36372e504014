"""sim/run_view.py: reading a finished run with aggregate queries, and refusing broken folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sim import api, clearing_paths, run_places
from sim.run_dir import MARKER_FILE
from sim.run_view import (
    DIMENSIONS,
    REGION_MEASURES,
    RunView,
    RunViewError,
    check_run,
    city_labels,
    list_runs,
)

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
W = 5  # the expansion weight of the scaled city of the two-city run below


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run_view") / "small"
    api.run(api.load_scenario(SMALL, days=3), out, unmasked=True)
    return out


@pytest.fixture(scope="module")
def view(run_dir):
    opened = RunView.open(run_dir)
    yield opened
    opened.close()


def _table(run_dir: Path, name: str):
    return ds.dataset(run_dir / name, format="parquet", partitioning="hive").to_table().to_pandas()


def test_every_split_adds_up_to_the_same_counted_taps(run_dir, view):
    taps = _table(run_dir, "transactions")
    counted = taps[taps["status"] != "rejected"]
    for dimension in DIMENSIONS:
        assert view.breakdown(dimension, "taps")["value"].sum() == len(counted), dimension
        assert view.breakdown(dimension, "spend_fen")["value"].sum() == counted["amount_fen"].sum()
    hourly = view.taps_by_hour("taps")
    assert (hourly["value"] * hourly["days"]).sum() == pytest.approx(len(counted))
    assert view.by_day("media", "taps")["value"].sum() == len(counted)


def test_money_queries_match_the_tables(run_dir, view):
    batches = _table(run_dir, "clearing_batches")
    flows = view.clearing_flows()
    assert flows["gross_fen"].sum() == batches["gross_fen"].sum()
    assert flows["fee_fen"].sum() == batches["fee_fen"].sum()
    topups = _table(run_dir, "topups")
    assert view.topups()["amount_fen"].sum() == topups["amount_fen"].sum()
    assert view.topup_amounts()["topups"].sum() == len(topups)
    assert view.balances()["taps"].sum() == taps_with_balance(run_dir)
    for measure in REGION_MEASURES:
        assert not view.by_region(measure).empty, measure


def taps_with_balance(run_dir: Path) -> int:
    return int(_table(run_dir, "transactions")["balance_after_fen"].notna().sum())


def test_one_card_day_is_in_time_order_and_priced(view):
    day = str(view.daily()["service_date"].iloc[1].date())
    busiest = view.busy_cards(day, limit=5)
    assert len(busiest) == 5 and busiest["taps"].is_monotonic_decreasing
    taps = view.card_day(busiest["token_id"].iloc[0], day)
    assert len(taps) == busiest["taps"].iloc[0]
    assert taps["event_timestamp"].is_monotonic_increasing
    discounts = taps["concession_fen"] + taps["transfer_fen"] + taps["cap_fen"]
    assert (taps["amount_fen"] == taps["list_fare_fen"] - discounts).all()


def test_a_closed_list_of_measures_and_dimensions(view):
    with pytest.raises(RunViewError, match="measure 'x; DROP'"):
        view.breakdown("media", "x; DROP")
    with pytest.raises(RunViewError, match="dimension 'token_id'"):
        view.breakdown("token_id")


def test_a_moved_run_folder_still_reads(run_dir, view, tmp_path):
    """The views are made over the folder where it is now, not where it was written."""
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    other = RunView.open(moved)
    try:
        assert other.daily().equals(view.daily())
        assert other.run_dir == moved.resolve()
    finally:
        other.close()


def test_broken_folders_are_named_with_what_is_wrong(run_dir, tmp_path):
    with pytest.raises(RunViewError, match="no such run folder"):
        check_run(tmp_path / "nothing")
    half = tmp_path / "half"
    shutil.copytree(run_dir, half)
    (half / MARKER_FILE).unlink()
    with pytest.raises(RunViewError, match="has not finished"):
        check_run(half)
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    marker = json.loads((old / MARKER_FILE).read_text("utf-8"))
    (old / MARKER_FILE).write_text(json.dumps({**marker, "schema_version": 0}), "utf-8")
    with pytest.raises(RunViewError, match="schema_version 0; this CardTwin reads version"):
        check_run(old)
    listed = {r.path.name: r.problem for r in list_runs(tmp_path)}
    assert listed["half"] and listed["old"] and "nothing" not in listed
    with pytest.raises(api.BadInput, match="schema_version 0"):
        api.open_run(old)


@pytest.fixture(scope="module")
def scaled(scaled_two_city) -> Path:
    """The two-city run with beta at 20% (conftest): each of its records stands for W."""
    meta = json.loads((scaled_two_city / "run_meta.json").read_text("utf-8"))
    assert [c["expansion_weight"] for c in meta["cities"]] == [1.0, W]
    return scaled_two_city


@pytest.fixture(scope="module")
def scaled_view(scaled):
    opened = RunView.open(scaled)
    yield opened
    opened.close()


def _beta(ids: pd.Series) -> np.ndarray:
    """Which of these record or visit ids are beta's (shard 1)."""
    return (ids.to_numpy() >> 53) & 1023 == 1


def test_a_city_at_a_lower_scale_counts_with_its_expansion_weight(scaled, scaled_view):
    """A city simulated at 20% stands for five times its records, in every query as in the
    daily KPIs (which round each day: the headline is within a record a day of them)."""
    out, view = scaled, scaled_view
    assert view.weighted
    taps = _table(out, "transactions")
    counted = taps[taps["status"] != "rejected"]
    beta = _beta(counted["transaction_id"])
    expected = (~beta).sum() + W * beta.sum()
    headline = view.headline()
    assert headline["taps"] == pytest.approx(expected, abs=1e-6)
    assert abs(headline["taps"] - view.daily()["taps"].sum()) <= 2
    fen = np.where(beta, W, 1) @ counted["amount_fen"].to_numpy()
    assert headline["fares_fen"] == fen
    for dimension in DIMENSIONS:
        split = view.breakdown(dimension, "taps")["value"].sum()
        assert split == pytest.approx(expected), dimension
    topups = _table(out, "topups")
    weight = np.where(_beta(topups["topup_id"]), W, 1)
    assert view.topups()["amount_fen"].sum() == (topups["amount_fen"] * weight).sum()
    # Whole counts and fen, as the daily KPIs give them (a 0.3 scale would not divide).
    for frame, column in ((view.topups(), "topups"), (view.breakdown("region"), "value")):
        assert pd.api.types.is_integer_dtype(frame[column]), column
    # Riders: each card once a day, at its city's weight.
    riders = counted.dropna(subset=["token_id"]).drop_duplicates(["service_date", "token_id"])
    weights = np.where(_beta(riders["transaction_id"]), W, 1)
    per_day = pd.Series(weights).groupby(riders["service_date"].to_numpy()).sum().mean()
    alpha, beta_city = view.meta["cities"]
    assert api.cardholders_of(view.meta) == alpha["cardholders"] + W * beta_city["cardholders"]
    # Two cities' regions of one name are two regions: the other city's carries its name.
    labels = city_labels(view.meta)
    assert labels[0] != labels[1]
    regions = view.breakdown("region", "taps")
    other = regions[regions["key"].str.startswith(f"{labels[1]} ")]
    assert len(other) and other["value"].sum() == pytest.approx(W * beta.sum())
    assert view.by_region("card_sales")["key"].str.startswith(f"{labels[0]} ").sum() == 0
    riders_by_category = view.breakdown("rider_category", "riders")["value"].sum()
    assert riders_by_category == pytest.approx(per_day)  # one category per card


def test_every_citys_outlets_are_read_and_their_waits_kept_apart(scaled, scaled_view):
    """Both cities run the same outlets file, so both have an outlet 1: each city's outlets
    are listed (their regions keyed as the other queries key them) and their visits counted
    per city, the scaled city's with its weight."""
    outlets = scaled_view.outlets()
    assert list(outlets["city"].unique()) == [0, 1]
    alpha, beta = (outlets[outlets["city"] == c] for c in (0, 1))
    assert list(alpha["outlet_id"]) == list(beta["outlet_id"]) and len(alpha) == 3
    assert set(alpha["region"]) == {"城区", "县区"}
    assert set(beta["region"]) == {"乙城 城区", "乙城 县区"}
    region_keys = set(scaled_view.by_region("card_sales")["key"])
    assert region_keys <= set(outlets["region"])  # the keys the region queries use
    visits = _table(scaled, "outlet_visits")
    beta_visits = _beta(visits["visit_id"])
    waits = scaled_view.outlet_waits()
    assert waits.groupby("city")["visits"].sum().to_dict() == {
        0: (~beta_visits).sum(),
        1: W * beta_visits.sum(),
    }
    per_outlet = visits[beta_visits].groupby("outlet_id").size() * W
    assert len(per_outlet)  # beta's outlets had visitors: the run shows them
    shown = waits[waits["city"] == 1].groupby("outlet_id")["visits"].sum()
    assert shown.to_dict() == per_outlet.to_dict()


def test_a_runs_places_are_named_in_chinese_and_by_their_scenario_ids(scaled_view, view):
    """Cities by the ids the other cities list them under (their English names), regions by
    their scenario ids and keyed as the queries key them, each with its map position."""
    cities = run_places.cities(scaled_view.meta)
    assert [(c.index, c.zh, c.key, c.shards) for c in cities] == [
        (0, "甲城", "alpha", (0,)),
        (1, "乙城", "beta", (1,)),
    ]
    regions = {
        r.key: (r.zh, r.id, r.city.key, r.lonlat) for r in run_places.regions(scaled_view.meta)
    }
    assert regions == {
        "城区": ("城区", "centre", "alpha", (120.0, 31.0)),
        "县区": ("县区", "county", "alpha", (120.2, 31.1)),
        "乙城 城区": ("城区", "centre", "beta", (120.6, 31.0)),
        "乙城 县区": ("县区", "county", "beta", (120.7, 31.2)),
    }
    assert set(scaled_view.breakdown("region")["key"]) <= set(regions)
    (one,) = run_places.cities(view.meta)  # one city: no prefix, its own outlets
    assert one.index == 0 and one.outlets_file
    assert {r.key for r in run_places.regions(view.meta)} >= set(view.breakdown("region")["key"])


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda m: m["period"].pop("end"), "period.end: missing; expected a date YYYY-MM-DD"),
        (lambda m: m["period"].pop("start"), "period.start: missing"),
        (lambda m: m["period"].update(days="7"), "period.days: got '7'; expected a whole number"),
        (lambda m: m["period"].update(end="next week"), "period.end: got 'next week'"),
        (lambda m: m.pop("period"), "period: missing; expected an object with start, end"),
        (lambda m: m.update(cardholders="many"), "cardholders: got 'many'"),
        (lambda m: m.update(cities={"a": 1}), "cities: got {'a': 1}; expected a list"),
        (lambda m: m["cities"][0].update(settings=[]), "cities.0.settings: got []"),
        (lambda m: m.update(identities_masked="yes"), "identities_masked: got 'yes'"),
    ],
)
def test_run_meta_keys_a_reader_relies_on_are_checked(run_dir, tmp_path, change, expected):
    """A run_meta.json edited by hand (or by another tool) is refused when the run is opened,
    naming the file and the key, not a KeyError in the page that reads it."""
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    meta_file = broken / "run_meta.json"
    meta = json.loads(meta_file.read_text("utf-8"))
    change(meta)
    meta_file.write_text(json.dumps(meta), "utf-8")
    with pytest.raises(RunViewError) as exc:
        check_run(broken)
    assert str(exc.value).startswith(f"{meta_file}: ") and expected in str(exc.value)
    (listed,) = list_runs(tmp_path)
    assert listed.problem == str(exc.value)


def test_a_records_way_through_the_clearing_is_rebuilt_from_the_hierarchy():
    """Up from the acquirer's exchange to the first node the issuer's exchange shares, down to
    it; the books on the way; a participant the files do not place is left unrouted."""
    parents = {"TOP": None, "A_EX": "TOP", "B_EX": "TOP"}
    members = [("B_CARD", "issuer", "B_EX"), ("A_BUS", "acquirer", "A_EX")]
    found = clearing_paths.routes(parents, members, [("B_CARD", "A_BUS"), ("X", "A_BUS")])
    assert [h[2:] for h in found.hops] == [("A_BUS", "A_EX"), ("A_EX", "TOP"), ("TOP", "B_EX")]
    assert {b[2:] for b in found.books} == {
        ("A_EX", "A_BUS"), ("B_EX", "B_CARD"),  # the members at their exchanges
        ("A_EX", "TOP"), ("TOP", "A_EX"), ("TOP", "B_EX"), ("B_EX", "TOP"),  # the links
        ("A_EX", "A_EX"), ("TOP", "TOP"), ("B_EX", "B_EX"),  # each node's own (its fees)
    }  # fmt: skip
    assert found.unrouted == [("X", "A_BUS")]


def test_clearing_flows_and_positions_of_a_scaled_city_are_expanded(scaled, scaled_view):
    """Each flow stands for the records that went along it, each at its city's weight: an
    acquirer's flow to its exchange is its cleared records' money times their weights; a flow
    only full-scale records went along stays as simulated; the scaled city's card issuer owes
    W times what it owed in the run. Expanded figures are marked as estimates."""
    taps = _table(scaled, "transactions")
    cleared = taps[taps["status"] == "cleared"]
    weight = np.where(_beta(cleared["transaction_id"]), W, 1)
    money = (cleared["amount_fen"] * weight).groupby(cleared["acquirer_id"].astype(str)).sum()
    batches = _table(scaled, "clearing_batches")
    simulated = batches.groupby(
        [batches["acquirer_id"].astype(str), batches["node_id"].astype(str)]
    )[["gross_fen", "fee_fen", "cleared"]].sum()
    flows = scaled_view.clearing_flows().set_index(["source", "target"])
    assert set(flows.index) == set(simulated.index)
    assert (flows["net_fen"] == flows["gross_fen"] - flows["fee_fen"]).all()
    first_hops = flows.loc[flows.index.get_level_values(0).isin(money.index)]
    assert len(first_hops) == 4  # each city's two bus operators to its exchange
    for (source, _), flow in first_hops.iterrows():
        assert flow["gross_fen"] == money[source], source
    # Alpha's cards in beta go down to alpha's exchange: alpha's own records, at weight 1.
    down = flows.loc[("REGION_CENTRE", "ALPHA_EXCHANGE")]
    assert not down["estimated"]
    assert down[["gross_fen", "fee_fen", "records"]].tolist() == (
        simulated.loc[("REGION_CENTRE", "ALPHA_EXCHANGE")].tolist()
    )
    # Beta's acquirers pass up every record but those of beta's own cards (issued at its
    # exchange): alpha's cards at weight 1, its riders' QR codes at W.
    up = cleared["acquirer_id"].astype(str).str.startswith("BETA_") & (
        cleared["issuer_id"].astype(str) != "BETA_CARD"
    )
    beta_up = flows.loc[("BETA_EXCHANGE", "REGION_CENTRE")]
    assert (
        beta_up["estimated"] and beta_up["gross_fen"] == (cleared["amount_fen"] * weight)[up].sum()
    )
    settlements = _table(scaled, "settlements")
    owed = settlements.groupby(settlements["participant_id"].astype(str))["net_position_fen"].sum()
    positions = scaled_view.node_positions().set_index("participant_id")
    assert positions.loc["BETA_CARD", "net_position_fen"] == W * owed["BETA_CARD"]
    assert positions.loc["BETA_CARD", "estimated"]
    assert positions.loc["ALPHA_CARD", "net_position_fen"] == owed["ALPHA_CARD"]
    assert not positions.loc["ALPHA_CARD", "estimated"]
    refunds = scaled_view.duplicates_and_refunds()
    assert refunds["estimated"].all()


def test_clearing_figures_of_a_full_scale_run_are_the_tables(view, run_dir):
    flows, positions = view.clearing_flows(), view.node_positions()
    assert not flows["estimated"].any() and not positions["estimated"].any()
    settlements = _table(run_dir, "settlements")
    assert positions["net_position_fen"].sum() == settlements["net_position_fen"].sum()
    assert not view.duplicates_and_refunds()["estimated"].any()


def test_every_citys_incidents_are_listed_once_with_the_cities_they_act_in(scaled_view):
    """Each city's own incidents with it; the clearing centre's outage alpha declares is the
    run's (the loader gave beta a copy): one incident, listed with both cities."""
    found = [
        (i.settings["id"], i.settings["kind"], [c.key for c in i.cities])
        for i in run_places.incidents(scaled_view.meta)
    ]
    assert found == [
        ("county-desk-shut", "outlet_closure", ["alpha"]),
        ("centre-down", "clearing_node_outage", ["alpha", "beta"]),
        ("alipay-down", "qr_platform_outage", ["beta"]),
    ]
    beta = scaled_view.meta["cities"][1]["settings"]["incidents"]
    assert [i["id"] for i in beta] == ["alipay-down", "centre-down"]  # what the run kept


@pytest.mark.parametrize("marked", [True, False], ids=["region_part", "older_run"])
def test_a_region_split_citys_incidents_are_the_ones_its_scenario_declares(marked):
    """Each part of a city split by region keeps the incidents acting in it, a fare change
    naming only the part's bus fare: read back, they are the city's timeline as declared, of
    one city (its parts marked in run_meta.json, or, in a run written before they were, named
    "<city>.<region>")."""
    from sim.region_shards import split_by_region

    incidents = (
        '[{id: dearer, kind: fare_change, start: "2024-03-04 00:00", duration_min: 1440,'
        " fares: {bus: {region_fare_fen: {urban: 250, rudong: 300}}}},"
        " {id: qr-down, kind: qr_platform_outage, target: qr_alipay,"
        ' start: "2024-03-04 18:00", duration_min: 30}]'
    )
    city = api.load_scenario(SMALL, [f"incidents={incidents}"], days=1)
    parts = split_by_region(city)
    assert len(parts) > 2
    meta = {
        "cities": [
            {
                "name": p.name,
                "settings": p.model_dump(mode="json"),
                **({"region_part": {"city": "small_ci", "region": p.region_part.region}}
                   if marked else {}),
            }
            for p in parts
        ]
    }  # fmt: skip
    (one,) = run_places.cities(meta)
    assert one.key == "small_ci" and one.shards == tuple(range(len(parts)))
    found = run_places.incidents(meta)
    assert [i.settings for i in found] == [i.model_dump(mode="json") for i in city.incidents]
    assert all(len(i.cities) == 1 and i.cities[0].shards == tuple(range(len(parts))) for i in found)


def test_incidents_of_a_run_written_without_them_are_none(view):
    meta = json.loads(json.dumps(view.meta))
    meta["cities"][0]["settings"].pop("incidents", None)
    assert run_places.incidents(meta) == []
    meta["cities"][0]["settings"]["incidents"] = ["not an incident", 3]
    assert run_places.incidents(meta) == []


def test_a_scaled_citys_device_uploads_count_with_its_weight(scaled, scaled_view):
    """A device id is its city's own, so a batch's city is the shard whose file holds it
    (part-<shard>, as the records of beta's taps say, by their ids): beta's batches count W
    times, records and resends with them, the delay a mean over the batches so counted; every
    row holding a scaled city's batches is an estimate."""
    parts = []
    for path in sorted((scaled / "device_uploads").glob("*/part-*.parquet")):
        frame = pq.read_table(path).to_pandas()
        parts.append(frame.assign(shard=int(path.stem.removeprefix("part-"))))
    uploads = pd.concat(parts, ignore_index=True)
    taps = _table(scaled, "transactions")
    sent = uploads[~uploads["resend"]].groupby("shard")["n_records"].sum()
    uploaded = taps[taps["upload_batch_id"].notna()]
    beta = _beta(uploaded["transaction_id"])
    assert sent.to_dict() == {0: (~beta).sum(), 1: beta.sum()}  # the part: who uploaded
    weight = np.where(uploads["shard"] == 1, W, 1)
    shown = scaled_view.device_uploads()
    assert shown["batches"].sum() == weight.sum() and shown["batches"].sum() > len(uploads)
    assert shown["records"].sum() == (uploads["n_records"] * weight).sum()
    assert shown["resends"].sum() == (uploads["resend"] * weight).sum()
    assert shown["estimated"].all()
    delay = (uploads["uploaded_at"] - uploads["last_tap_at"]).dt.total_seconds()
    mean = (delay * weight).sum() / weight.sum()
    overall = (shown["mean_delay_s"] * shown["batches"]).sum() / shown["batches"].sum()
    assert overall == pytest.approx(mean)


def test_device_uploads_of_a_full_scale_run_are_the_table(run_dir, view):
    uploads = _table(run_dir, "device_uploads")
    shown = view.device_uploads()
    assert shown["batches"].sum() == len(uploads) and not shown["estimated"].any()
    assert shown["records"].sum() == uploads["n_records"].sum()
    assert shown["resends"].sum() == uploads["resend"].sum()
