"""The clearing network (sim/clearing_network.py, agents/clearing.py): paths up and down the
hierarchy, fees at each level, every node's book summing to zero, and every node's hash chain
verifying from the output files alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from output_frames import node_logs, read_frame
from test_clearing import P, reference_participants

from sim.api import load_scenario, run, verify
from sim.clearing import PairTotals, verify_chain
from sim.clearing_network import ClearingTopology

SMALL = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"
FEES = {"NATIONAL": 5, "JS_EXCHANGE": 10, "NT_EXCHANGE": 20, "SZ_EXCHANGE": 30, "SH_EXCHANGE": 40}


def _names(path):
    return [P.ids[n] for n in path]


def test_paths_go_up_to_the_shared_node_and_down_to_the_issuer():
    topo = ClearingTopology(reference_participants(), FEES)
    code = P.code
    assert _names(topo.path(code("NTCARD"), code("NT_BUS_URBAN"))) == ["NT_EXCHANGE"]
    assert _names(topo.path(code("SZCARD"), code("NT_BUS_URBAN"))) == [
        "NT_EXCHANGE",
        "JS_EXCHANGE",
        "SZ_EXCHANGE",
    ]
    assert _names(topo.path(code("NTCARD"), code("SH_METRO"))) == [
        "SH_EXCHANGE",
        "NATIONAL",
        "JS_EXCHANGE",
        "NT_EXCHANGE",
    ]


def _pairs(rows):
    """PairTotals from (issuer, acquirer, gross, first-node fee) rows."""
    issuer = np.array([P.code(r[0]) for r in rows], np.int32)
    acquirer = np.array([P.code(r[1]) for r in rows], np.int32)
    gross = np.array([r[2] for r in rows], np.int64)
    fee = np.array([r[3] for r in rows], np.int64)
    node = P.parent[acquirer].astype(np.int32)
    return PairTotals(issuer, acquirer, node, np.ones(len(rows), np.int64), gross, fee, gross - fee)


def test_fees_at_each_level_and_books_that_sum_to_zero():
    topo = ClearingTopology(reference_participants(), FEES)
    pairs = _pairs(
        [
            ("NTCARD", "NT_BUS_URBAN", 10_000, 350),  # local
            ("SZCARD", "NT_BUS_URBAN", 10_000, 350),  # Suzhou card in Nantong: NT > JS > SZ
            ("NTCARD", "SH_METRO", 20_000, 500),  # Nantong card in Shanghai: SH > NAT > JS > NT
        ]
    )
    routing = topo.route(pairs, 3)  # one T+1 for every level: one settlement, on day 4
    fee = {}
    for k, node, amount in zip(
        routing.fees.pair.tolist(), routing.fees.node.tolist(), routing.fees.fee_fen.tolist(),
        strict=True,
    ):  # fmt: skip
        fee[(k, P.ids[node])] = amount
    assert fee == {
        (0, "NT_EXCHANGE"): 350,
        (1, "NT_EXCHANGE"): 350,
        (1, "JS_EXCHANGE"): 10,
        (1, "SZ_EXCHANGE"): 30,
        (2, "SH_EXCHANGE"): 500,
        (2, "NATIONAL"): 10,
        (2, "JS_EXCHANGE"): 20,
        (2, "NT_EXCHANGE"): 40,
    }
    assert routing.acquirer_fees_fen.tolist() == [350, 390, 570]
    (settlement,) = routing.settlements
    assert settlement.settle_day == 4
    books = settlement.books
    assert (books.sums(len(P)) == 0).all()
    book = {
        (P.ids[n], P.ids[c]): int(v)
        for n, c, v in zip(books.node, books.counterparty, books.position_fen, strict=True)
    }
    # The Suzhou card: its issuer pays Suzhou's exchange, which keeps 30 and passes the rest up.
    assert book[("SZ_EXCHANGE", "SZCARD")] == -10_000
    assert book[("SZ_EXCHANGE", "JS_EXCHANGE")] == 10_000 - 30
    assert book[("JS_EXCHANGE", "SZ_EXCHANGE")] == -(10_000 - 30)
    assert book[("JS_EXCHANGE", "JS_EXCHANGE")] == 10 + 20  # on both cross-city pairs
    # Nantong's exchange receives both cross-city flows and pays its members.
    assert book[("NT_EXCHANGE", "NT_BUS_URBAN")] == 10_000 - 350 + 10_000 - 390
    assert book[("NT_EXCHANGE", "NTCARD")] == -10_000 - 20_000
    pos = dict(
        zip(
            (P.ids[p] for p in settlement.positions.participant),
            settlement.positions.position_fen.tolist(),
            strict=True,
        )
    )
    assert sum(pos.values()) == 0
    assert pos["SH_METRO"] == 20_000 - 570 and pos["NATIONAL"] == 10
    assert pos["NT_EXCHANGE"] == 350 + 350 + 40
    hops = {(P.ids[h.node], P.ids[h.sender] if h.sender >= 0 else None) for h in routing.hops}
    assert ("JS_EXCHANGE", "NT_EXCHANGE") in hops and ("NT_EXCHANGE", "JS_EXCHANGE") in hops
    assert ("SH_EXCHANGE", None) in hops


def _three_pairs():
    return _pairs(
        [
            ("NTCARD", "NT_BUS_URBAN", 10_000, 350),
            ("SZCARD", "NT_BUS_URBAN", 10_000, 350),
            ("NTCARD", "SH_METRO", 20_000, 500),
        ]
    )


def _by_participant(settlements) -> dict[str, int]:
    total: dict[str, int] = {}
    for settlement in settlements:
        pos = settlement.positions
        for p, v in zip(pos.participant.tolist(), pos.position_fen.tolist(), strict=True):
            total[P.ids[p]] = total.get(P.ids[p], 0) + v
    return total


def test_each_level_settles_on_its_own_t_plus_n():
    """The national centre settles T+3, the provincial exchange T+2, the city exchanges T+1:
    members are paid by their exchange on its date, links on the upper node's, and the nodes
    between advance or hold the money, their own rows adding up to their fees."""
    lags = {"NATIONAL": 3, "JS_EXCHANGE": 2}
    routing = ClearingTopology(reference_participants(), FEES, lags, 1).route(_three_pairs(), 10)
    assert [s.settle_day for s in routing.settlements] == [11, 12, 13]
    rows = {}
    for settlement in routing.settlements:
        books = settlement.books
        assert (books.sums(len(P)) == 0).all()  # every node's book, on every date
        assert settlement.positions.position_fen.sum() == 0
        for n, c, v in zip(books.node, books.counterparty, books.position_fen, strict=True):
            rows[settlement.settle_day, P.ids[n], P.ids[c]] = int(v)
    # Members settle with their own exchange on its date (T+1) ...
    assert rows[11, "NT_EXCHANGE", "NT_BUS_URBAN"] == 10_000 - 350 + 10_000 - 390
    assert rows[11, "SZ_EXCHANGE", "SZCARD"] == -10_000
    # ... the city exchanges with Jiangsu's on T+2, Jiangsu's and Shanghai's with the centre T+3.
    assert rows[12, "SZ_EXCHANGE", "JS_EXCHANGE"] == 10_000 - 30
    assert rows[12, "JS_EXCHANGE", "SZ_EXCHANGE"] == -(10_000 - 30)
    assert (13, "SH_EXCHANGE", "NATIONAL") in rows and (13, "NATIONAL", "JS_EXCHANGE") in rows
    # Suzhou's exchange is paid by its issuer on T+1 and pays Jiangsu's on T+2: it holds the
    # money a day. Nantong's takes 30,000 from its issuer and pays its acquirer 19,260 on T+1,
    # and settles the rest with Jiangsu's on T+2.
    assert rows[11, "SZ_EXCHANGE", "SZ_EXCHANGE"] == 10_000
    assert rows[11, "NT_EXCHANGE", "NT_EXCHANGE"] == 30_000 - 19_260
    # Over all dates every participant ends where one date for all levels would put it.
    one_date = ClearingTopology(reference_participants(), FEES).route(_three_pairs(), 10)
    assert _by_participant(routing.settlements) == _by_participant(one_date.settlements)


@given(st.lists(st.integers(0, 5), min_size=5, max_size=5), st.integers(0, 3))
def test_any_lags_keep_every_date_balanced_and_the_totals(lags, default):
    nodes = ["NATIONAL", "JS_EXCHANGE", "NT_EXCHANGE", "SZ_EXCHANGE", "SH_EXCHANGE"]
    per_node = dict(zip(nodes, lags, strict=True))
    topo = ClearingTopology(reference_participants(), FEES, per_node, default)
    routing = topo.route(_three_pairs(), 0)
    days = [s.settle_day for s in routing.settlements]
    assert days == sorted(set(days)) and min(days) >= min([default, *lags])
    for settlement in routing.settlements:
        assert (settlement.books.sums(len(P)) == 0).all()
        assert settlement.positions.position_fen.sum() == 0
    one_date = ClearingTopology(reference_participants(), FEES).route(_three_pairs(), 0)
    assert _by_participant(routing.settlements) == _by_participant(one_date.settlements)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("network") / "run"
    run(load_scenario(SMALL, days=4), out)
    return out


def test_every_node_chain_verifies_from_the_output_files(small_run):
    logs = node_logs(small_run)
    assert {"NT_EXCHANGE", "JS_EXCHANGE", "NATIONAL", "SHANGHAI_EXCHANGE"} <= set(logs)
    for log in logs.values():
        verify_chain(log)


def test_every_node_book_sums_to_zero_and_cross_city_records_pay_transit_fees(small_run):
    books = read_frame(small_run, "settlements")
    per_node = books.groupby(["service_date", "node_id"])["net_position_fen"].sum()
    assert (per_node == 0).all()
    # Links: what a node's book says it receives from a neighbour, the neighbour's says it pays.
    links = books[books["role"] == "clearing_node"]
    links = links[links["node_id"] != links["participant_id"]]
    assert len(links) > 0
    pair = links.set_index(["service_date", "node_id", "participant_id"])["net_position_fen"]
    for (date, node, other), value in pair.items():
        assert pair[(date, other, node)] == -value
    batches = read_frame(small_run, "clearing_batches")
    transit = batches[batches["transit"]]
    assert (transit["fee_fen"] > 0).any()
    assert set(transit["acquirer_id"]) <= set(batches["node_id"])


def test_a_run_with_levels_on_different_dates_balances_every_node_on_every_date(tmp_path):
    """Nantong's exchange and Jiangsu's settle T+1, the national centre T+3: dates with both
    have two settlement parts, every node's book is zero on each date, and the files verify."""
    out = tmp_path / "run"
    overrides = ["clearing.network.nodes.NATIONAL.settlement_lag_days=3"]
    run(load_scenario(SMALL, days=4, overrides=overrides), out)
    assert verify(out) == []
    books = read_frame(out, "settlements")
    assert (books.groupby(["service_date", "node_id"])["net_position_fen"].sum() == 0).all()
    national = books[books["node_id"] == "NATIONAL"]
    first = pd.Timestamp(read_frame(out, "clearing_batches")["service_date"].min())
    assert pd.Timestamp(national["service_date"].min()) - first == pd.Timedelta(days=3)
    parts = {p.parent.name for p in (out / "settlements").glob("*/part-1.parquet")}
    assert parts  # a date paid by two settlements (T+1 of one day, T+3 of an earlier one)
