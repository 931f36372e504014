"""Composing a region of cities: each city's scale and the links the cities derive from each
other's files (sim/multi_city.py), and the Yangtze River Delta scenario built from its data."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from output_frames import read_frame
from scenario_files import two_city_with_alpha_incidents

from sim import ids
from sim.api import BadInput, build, load_scenario, run, verify
from sim.scenario import MultiCityScenario
from sim.world_settings import scaled_count

ROOT = Path(__file__).resolve().parent.parent
TWO_CITY = ROOT / "scenarios" / "two_city.yaml"
YRD = ROOT / "scenarios" / "yrd_2024.yaml"


def _linked_two_city(tmp_path: Path) -> Path:
    """A copy of the two-city scenario (in ``tmp_path``) with links: derived from the cities'
    own files."""
    shutil.copytree(ROOT / "scenarios" / "two_city", tmp_path / "two_city")
    shutil.copytree(ROOT / "scenarios" / "data", tmp_path / "data")
    text = TWO_CITY.read_text(encoding="utf-8").replace(
        "cities:\n", "links: {road_factor: 1.3, attraction_per_million_residents: 0.4}\ncities:\n"
    )
    path = tmp_path / "linked.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_city_at_a_scale_simulates_that_share_of_each_card_type():
    full = load_scenario(TWO_CITY)
    half = load_scenario(TWO_CITY, ["cities.alpha.scale=0.5"])
    assert [c.scale for c in half.city_scenarios] == [0.5, 1.0]
    worlds_full, worlds_half = build(full), build(half)
    types = full.city_scenarios[0].population.card_types
    assert len(worlds_half[0].population) == sum(scaled_count(t.count, 0.5) for t in types.values())
    assert len(worlds_half[0].population) < 0.51 * len(worlds_full[0].population)
    assert len(worlds_half[1].population) == len(worlds_full[1].population)


def test_a_scale_outside_0_to_1_is_refused_at_its_field():
    with pytest.raises(BadInput, match=r"cities\.alpha\.scale"):
        load_scenario(TWO_CITY, ["cities.alpha.scale=1.5"])


def test_links_derive_each_city_from_the_others_file(tmp_path):
    scenario = load_scenario(_linked_two_city(tmp_path))
    assert isinstance(scenario, MultiCityScenario)
    alpha, beta = scenario.city_scenarios
    seen = alpha.interop.cities["beta"]  # replaces alpha's hand-typed entry for beta
    assert (seen.city_code, seen.exchange, seen.issuer_id, seen.acquirer_id) == (
        "9902",
        "BETA_EXCHANGE",
        "BETA_CARD",
        "BETA_BUS_CENTRE",
    )
    # Beta (MoHURD) takes half of alpha's 交通联合 cards; alpha takes all of beta's.
    assert seen.accepts_home_cards == 0.5
    assert beta.interop.cities["alpha"].accepts_home_cards == 1.0
    assert seen.inbound_visitors_per_day == 0  # beta's own shard makes its riders' trips
    # Distance: great circle from alpha's centre to beta's resident-weighted seat, x 1.3.
    b_regions = beta.regions.values()
    total = sum(r.residents for r in b_regions)
    seat = [sum(r.map_lonlat[k] * r.residents for r in b_regions) / total for k in (0, 1)]
    lon1, lat1 = map(math.radians, alpha.regions["centre"].map_lonlat)
    lon2, lat2 = map(math.radians, seat)
    km = (
        2
        * 6371
        * math.asin(
            math.sqrt(
                math.sin((lat2 - lat1) / 2) ** 2
                + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
            )
        )
    )
    assert seen.distance_km["centre"] == pytest.approx(1.3 * km, abs=0.05)
    assert seen.attraction == pytest.approx(0.4 * total / 1e6)
    # Both cities' clearing nodes are in each city's network.
    assert set(alpha.clearing.network.nodes) == set(beta.clearing.network.nodes)


def test_a_linked_run_builds_and_its_cities_agree_on_the_hierarchy(tmp_path):
    worlds = build(load_scenario(_linked_two_city(tmp_path), ["period.days=1"]))
    participants = worlds[0].participants
    assert participants is worlds[1].participants
    assert participants.ids[participants.parent[participants.code("BETA_CARD")]] == "BETA_EXCHANGE"


def test_riders_in_another_simulated_city_ride_in_its_regions_by_residents(tmp_path):
    path = _linked_two_city(tmp_path)
    # Each city's riders away 20 days a year: enough trips to see the split.
    for city in ("alpha", "beta"):
        text = path.read_text(encoding="utf-8")
        overlay = tmp_path / "two_city" / f"{city}_away.yaml"
        overlay.write_text(f"extends: {city}.yaml\ninterop: {{away_days_per_card_year: 20}}\n")
        path.write_text(text.replace(f"two_city/{city}.yaml", f"two_city/{city}_away.yaml"))
    out = tmp_path / "run"
    run(load_scenario(path, ["period.days=3"]), out)
    flows = read_frame(out, "cross_city_flows")
    alpha_in_beta = flows[
        (flows["holder_city_code"] == "9901") & (flows["use_city_code"] == "9902")
    ]
    by_region = alpha_in_beta.groupby("use_region")["boardings"].sum()
    # Beta's centre has 400,000 residents, its county 200,000: two boardings in three there.
    assert set(by_region.index) == {"城区", "县区"}
    assert by_region["城区"] / by_region.sum() == pytest.approx(2 / 3, abs=0.08)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("regions.centre.map_lonlat=null", r"regions\.centre\.map_lonlat: missing"),
        ("city=null", r"city: missing"),
        ("city.visitor_acquirer=NOBODY", r"city\.visitor_acquirer: 'NOBODY' operates none"),
        ("clearing.network.nodes.REGION_CENTRE.transit_fee_bp=99", r"REGION_CENTRE differs"),
    ],
)
def test_a_city_that_cannot_be_linked_is_named_with_its_file_and_field(tmp_path, override, message):
    path = _linked_two_city(tmp_path)
    key, value = override.split("=")
    # The broken city: an overlay of beta's file, in the same folder.
    lines = ["extends: beta.yaml"]
    parts = key.split(".")
    lines += ["  " * depth + f"{part}:" for depth, part in enumerate(parts[:-1])]
    lines.append("  " * (len(parts) - 1) + f"{parts[-1]}: {value}")
    (tmp_path / "two_city" / "broken.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.write_text(
        path.read_text(encoding="utf-8").replace("two_city/beta.yaml", "two_city/broken.yaml"),
        encoding="utf-8",
    )
    with pytest.raises(BadInput) as err:
        load_scenario(path)
    text = str(err.value)
    assert "linked.yaml" in text and "links" in text and "broken.yaml" in text, text
    assert re.search(message, text), text


def test_the_yrd_city_files_are_what_their_data_give():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_yrd.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_the_yrd_scenario_spans_four_provinces_through_one_hierarchy():
    scenario = load_scenario(YRD)
    cities = dict(zip(scenario.cities, scenario.city_scenarios, strict=True))
    assert len(cities) >= 10 and "nantong" in cities
    assert cities["nantong"].scale == 1.0
    assert all(c.scale < 1 for cid, c in cities.items() if cid != "nantong")
    nodes = cities["nantong"].clearing.network.nodes
    provinces = {"JS_EXCHANGE", "AH_EXCHANGE"}
    exchanges = {c.clearing.network.home_exchange for c in cities.values()}
    assert len(exchanges) == len(cities)  # each city its own exchange
    for exchange in exchanges:  # under its province's exchange, or straight under the centre
        assert nodes[exchange].parent in provinces | {"NATIONAL"}
    assert {nodes[e].parent for e in exchanges} == provinces | {"NATIONAL"}
    # The centre settles T+2, the provincial and city exchanges T+1 (the clearing's).
    assert nodes["NATIONAL"].settlement_lag_days == 2
    assert {nodes[n].settlement_lag_days for n in nodes if n != "NATIONAL"} == {None}
    assert len({c.output.issuer_id for c in cities.values()}) == len(cities)
    # Nantong keeps its calibrated file: the same people, fares and rules.
    nantong = load_scenario(ROOT / "scenarios" / "nantong_2024.yaml")
    for section in ("regions", "population", "fares", "behaviour", "clearing"):
        ours = getattr(cities["nantong"], section)
        if section == "clearing":
            ours = ours.model_copy(
                update={
                    "network": ours.network.model_copy(
                        update={"nodes": nantong.clearing.network.nodes}
                    )
                }
            )
        assert ours == getattr(nantong, section), section
    # A MoHURD city's cards are refused where only 交通联合 cards are taken, and the reverse.
    assert cities["suzhou"].interop.cities["shanghai"].accepts_home_cards == 0.7
    assert cities["shanghai"].interop.cities["suzhou"].accepts_home_cards == 0.0
    assert cities["shanghai"].interop.cities["wuxi"].accepts_home_cards == 1.0


@pytest.fixture(scope="module")
def half_alpha(tmp_path_factory):
    """The two-city run with alpha at half scale, and its output folder."""
    out = tmp_path_factory.mktemp("half_alpha") / "run"
    scenario = load_scenario(TWO_CITY, ["cities.alpha.scale=0.5", "period.days=3"])
    return run(scenario, out), out


def test_cross_city_flows_account_for_every_accepted_record(half_alpha):
    _, out = half_alpha
    tx = read_frame(out, "transactions")
    flows = read_frame(out, "cross_city_flows")
    refused = {"declined_insufficient_balance", "device_buffer_full"}
    accepted = tx[~tx["reject_reason"].isin(refused)]
    assert flows["boardings"].sum() == (accepted["trip_record_type"] != "exit").sum()
    assert flows["amount_fen"].sum() == accepted["amount_fen"].sum()
    # Where each city's cards rode: the flows' city of use is the records' city code.
    for (issuer, code), group in accepted.groupby(["issuer_id", "city_code"]):
        holder = {"ALPHA_CARD": "9901", "BETA_CARD": "9902"}.get(issuer)
        if holder is None:
            continue  # QR codes: their holders' city is in the flows, not in the issuer
        mine = flows[
            (flows["holder_city_code"] == holder)
            & (flows["use_city_code"] == code)
            & (flows["fare_product"] == "stored_value")
        ]
        assert mine["boardings"].sum() == (group["trip_record_type"] != "exit").sum()
    # Alpha's riders count twice (scale 0.5), beta's once.
    weights = flows.groupby("holder_city_code")["expansion_weight"].unique()
    assert list(weights["9901"]) == [2.0] and list(weights["9902"]) == [1.0]


def test_the_run_reports_full_scale_shares_and_kpis(half_alpha):
    summary, out = half_alpha
    flows = read_frame(out, "cross_city_flows")
    flows["expanded"] = flows["boardings"] * flows["expansion_weight"]
    report = {c["city_code"]: c for c in summary.cross_city["cities"]}
    for code in ("9901", "9902"):
        here = flows[flows["use_city_code"] == code]
        inbound = here[here["holder_city_code"] != code]["expanded"].sum() / here["expanded"].sum()
        own = flows[flows["holder_city_code"] == code]
        outbound = own[own["use_city_code"] != code]["expanded"].sum() / own["expanded"].sum()
        assert report[code]["inbound_share"] == pytest.approx(inbound)
        assert report[code]["outbound_share"] == pytest.approx(outbound)
        assert 0 < inbound < 0.5 and 0 < outbound < 0.5
    od = {(r["holder_city_code"], r["use_city_code"]): r for r in summary.cross_city["od"]}
    away = flows[(flows["holder_city_code"] == "9901") & (flows["use_city_code"] == "9902")]
    assert od["9901", "9902"]["boardings"] == round(away["expanded"].sum())
    # The daily KPIs count alpha's records twice; the records are what was simulated.
    kpis = read_frame(out, "daily_kpis")
    tx = read_frame(out, "transactions")
    shard = tx["transaction_id"].to_numpy() >> (ids.DAY_BITS + ids.SEQ_BITS)
    assert kpis["taps"].sum() == 2 * (shard == 0).sum() + (shard == 1).sum()
    assert summary.taps == len(tx)
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    assert [c["expansion_weight"] for c in meta["cities"]] == [2.0, 1.0]
    assert meta["cross_city"] == json.loads(json.dumps(summary.cross_city))
    # Fees earned per node: what its batches (own and transit) say it took.
    batches = read_frame(out, "clearing_batches")
    by_node = batches.groupby("node_id")["fee_fen"].sum().to_dict()
    fees = meta["clearing"]["fees_earned_fen"]
    assert fees == summary.clearing["fees_earned_fen"]
    assert {n: f for n, f in fees.items() if f} == {n: f for n, f in by_node.items() if f}
    assert fees["REGION_CENTRE"] > 0  # transit fees on the cards that ride in the other city


def test_the_yrd_scenario_runs_and_its_files_verify(tmp_path):
    # Four days: Hefei's cards listed on day 2, the Jiangsu exchange down on day 4.
    out = tmp_path / "yrd"
    summary = run(load_scenario(YRD, ["period.days=4"]), out)
    assert verify(out) == []
    refused = read_frame(out, "refused_taps")
    not_accepted = refused[refused["reject_reason"] == "card_not_accepted"]
    assert len(not_accepted) > 0 and set(not_accepted["card_city_code"]) == {"3401"}
    assert str(not_accepted["service_date"].min())[:10] == "2024-03-05"
    tx = read_frame(out, "transactions")
    held = tx[tx["incident_id"] == "js-exchange-down"]
    assert len(held) > 100 and (held["status"] != "pending").all()
    # Declared in Nantong's file, the outage is the run's: every city's held records carry it
    # (Suzhou's riders' own cards in Nantong, say), not only Nantong's (shard 0).
    shards = set(ids.record_shard(held["transaction_id"].to_numpy()).tolist())
    assert len(shards) > 3 and 0 in shards
    shares = {c["city"]: c for c in summary.cross_city["cities"]}
    assert len(shares) == 11
    for city in shares.values():  # every city rides out and is ridden into
        assert 0 < city["inbound_share"] < 0.2 and 0 < city["outbound_share"] < 0.2, city
    nantong = shares["南通"]
    assert {r["region"] for r in nantong["regions"]} == {
        "urban",
        "rudong",
        "haian",
        "haimen",
        "rugao",
        "qidong",
    }
    # Riders of every Nantong region ride elsewhere; 海门 and 启东 (next to Shanghai) most.
    outbound = {r["region"]: r["outbound_share"] for r in nantong["regions"]}
    assert min(outbound.values()) > 0
    assert max(outbound, key=outbound.get) in {"haimen", "qidong"}
    od = {(r["holder_city"], r["use_city"]) for r in summary.cross_city["od"]}
    assert ("南通", "上海") in od and ("上海", "苏州") in od and ("苏州", "上海") in od


@pytest.fixture(scope="module")
def centre_down(tmp_path_factory):
    """The two-city run with the regional centre (the node above both city exchanges) down
    for the whole of 5 March, and the same run without the outage."""
    root = tmp_path_factory.mktemp("centre_down")
    outage = {"id": "centre-down", "kind": "clearing_node_outage", "target": "REGION_CENTRE",
              "start": "2024-03-05 00:00", "duration_min": 1440}  # fmt: skip
    path = two_city_with_alpha_incidents(root, [outage])
    down = run(load_scenario(path, ["period.days=4"]), root / "down")
    calm = run(load_scenario(TWO_CITY, ["period.days=4"]), root / "calm")
    return root, down, calm


def test_a_node_above_the_city_exchanges_down_holds_what_passes_through_it(centre_down):
    root, down, calm = centre_down
    assert verify(root / "down") == []
    tx = read_frame(root / "down", "transactions")
    held = tx[tx["incident_id"] == "centre-down"]
    # Records whose way goes up through the centre waited (another city's card, or a QR code,
    # whose issuers clear at the centre); a city's cards at home never leave its exchange.
    assert len(held) > 0
    city_of = {"ALPHA": "alpha", "BETA_": "beta"}
    for issuer, acquirer in zip(held["issuer_id"], held["acquirer_id"], strict=True):
        assert city_of.get(issuer[:5]) != city_of.get(acquirer[:5]), (issuer, acquirer)
    assert (held["media"].str.startswith("qr_")).any()
    # It was cleared at the next cut-off: settled a day later than without the outage.
    assert (held["status"] != "pending").all()
    cleared = held[held["status"] == "cleared"]
    calm_tx = read_frame(root / "calm", "transactions").set_index("transaction_id")
    was = pd.to_datetime(calm_tx.loc[cleared["transaction_id"], "settle_date"]).to_numpy()
    now = pd.to_datetime(cleared["settle_date"]).to_numpy()
    assert len(cleared) > 0 and (now - was == np.timedelta64(1, "D")).all()
    # Nothing lost, nothing cleared twice: the same records end cleared as without the outage.
    assert down.totals["cleared"] == calm.totals["cleared"]
    assert down.totals["rejected"] == calm.totals["rejected"]
    batches = read_frame(root / "down", "clearing_batches")
    assert int(batches.loc[~batches["transit"], "cleared"].sum()) == down.totals["cleared"]

    # The centre passed nothing on at the cut-off it was down for (clearing day 4 March).
    def centre_days(out):
        batches = read_frame(out, "clearing_batches")
        return set(batches[batches["node_id"] == "REGION_CENTRE"]["service_date"].astype(str))

    assert "2024-03-04" in centre_days(root / "calm")
    assert "2024-03-04" not in centre_days(root / "down")


def test_a_node_outage_is_the_runs_and_two_descriptions_of_it_are_refused(tmp_path):
    outage = (
        "incidents: [{{id: centre-down, kind: clearing_node_outage, target: REGION_CENTRE, "
        'start: "2024-03-05 00:00", duration_min: {minutes}}}]\n'
    )
    files = {}
    for city, minutes in (("alpha", 1440), ("beta", 60)):
        files[city] = tmp_path / f"{city}.yaml"
        files[city].write_text(
            f"extends: {ROOT / 'scenarios' / 'two_city' / f'{city}.yaml'}\n"
            + outage.format(minutes=minutes),
            encoding="utf-8",
        )
    text = TWO_CITY.read_text(encoding="utf-8")
    one = tmp_path / "one.yaml"  # only alpha declares it: beta's world has it too
    one.write_text(
        text.replace("two_city/alpha.yaml", str(files["alpha"])).replace(
            "two_city/", f"{ROOT / 'scenarios' / 'two_city'}/"
        ),
        encoding="utf-8",
    )
    cities = load_scenario(one).city_scenarios
    assert [[i.id for i in c.incidents] for c in cities] == [["centre-down"], ["centre-down"]]
    both = tmp_path / "both.yaml"
    both.write_text(
        text.replace("two_city/alpha.yaml", str(files["alpha"])).replace(
            "two_city/beta.yaml", str(files["beta"])
        ),
        encoding="utf-8",
    )
    with pytest.raises(BadInput, match="'centre-down' differs from the incident of that id"):
        load_scenario(both)


@pytest.mark.slow
def test_the_yrd_week_as_the_issue_checks_it(tmp_path):
    """Issue 10's check: a 7-day run with Hefei listed on day 2 and the Jiangsu exchange down
    on day 4: taps refused during the terminals' lag, clearing delayed then caught up, every
    node's book zero on every settlement date, every chain verifying, money conserved, and the
    reconciliation files agreeing with the batches."""
    from sim.reconciliation import check_reconciliation, write_reconciliation

    out = tmp_path / "week"
    run(load_scenario(YRD), out)  # the run's own invariants: conservation, exactly once, ...
    assert verify(out) == []  # chains, digests, row and money invariants from the files
    refused = read_frame(out, "refused_taps")
    lag = refused[refused["reject_reason"] == "card_not_accepted"]
    dates = sorted({str(d)[:10] for d in lag["service_date"]})
    assert dates and dates[0] == "2024-03-05" and set(lag["card_city_code"]) == {"3401"}
    # As each acquirer's terminals are updated, fewer of them refuse the cards.
    refusing = lag.groupby(lag["service_date"].astype(str).str[:10])["acquirer_id"].nunique()
    assert refusing.iloc[-1] < refusing.iloc[0]
    tx = read_frame(out, "transactions")
    held = tx[tx["incident_id"] == "js-exchange-down"]
    assert len(held) > 1_000 and (held["status"] != "pending").all()
    cleared = held[held["status"] == "cleared"]
    # Held at the cut-off of 7 March (the exchange down), cleared at the next one: paid on 8
    # March at the earliest, a day or more later than T+1 of their clearing day.
    settle = pd.to_datetime(cleared["settle_date"])
    assert (settle >= pd.Timestamp("2024-03-08")).all()
    assert (settle - pd.to_datetime(cleared["service_date"]) >= pd.Timedelta(days=2)).all()
    books = read_frame(out, "settlements")
    assert (books.groupby(["service_date", "node_id"])["net_position_fen"].sum() == 0).all()
    assert (books.groupby("service_date")["net_position_fen"].sum() == 0).all()
    write_reconciliation(out)
    assert check_reconciliation(out) == []
