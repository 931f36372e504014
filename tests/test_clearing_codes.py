"""Participant codes the clearing indexes with: a fare posting reads only the taps that charged
something (and refuses a charged tap's code that is no participant's, instead of filing its money
under another participant), and the daily delivery to the exchanges refuses an acquirer code that
has no exchange, naming ``records.acquirer``, instead of a numpy error or a wrapped-around index."""

from __future__ import annotations

import mesa
import numpy as np
import pytest
import simpy
from test_clearing import ALIPAY, NTCARD, SZ_BUS, SZCARD, URBAN, P, recs

from agents.clearing import _MAX_RUNS, ClearingNetworkAgent
from sim.clearing import MC_CARD, MC_QR, ClearingSettings, post_fares, post_flow
from sim.events import EventBus
from sim.ledger import Ledger

N_P = len(P)


def _fares(issuer, medium_class, amount_fen) -> Ledger:
    led = Ledger()
    post_fares(
        led,
        0,
        np.asarray(issuer, dtype=np.int64),
        np.asarray(medium_class, dtype=np.uint8),
        np.asarray(amount_fen, dtype=np.int64),
        P,
    )
    return led


def _journal(led: Ledger) -> dict[str, list]:
    return {k: np.asarray(v).tolist() for k, v in led.journal_columns().items()}


# -- post_fares ---------------------------------------------------------------------------------
@pytest.mark.parametrize("free_codes", ["valid", "some of no participant"])
def test_fares_are_the_card_and_qr_flows_of_the_charged_taps(free_codes):
    rng = np.random.default_rng(7)
    n = 500
    issuer = rng.choice([NTCARD, ALIPAY, SZCARD], n)
    mc = rng.choice([MC_CARD, MC_QR], n)
    amount = np.where(rng.random(n) < 0.6, 0, rng.integers(1, 900, n))
    charged = amount != 0
    if free_codes != "valid":  # the charged taps alone are read: the same postings
        issuer = np.where(~charged & (rng.random(n) < 0.3), rng.choice([-1, N_P], n), issuer)
    expected = Ledger()
    card, qr = charged & (mc == MC_CARD), charged & (mc == MC_QR)
    post_flow(expected, 0, "card_fare", issuer[card], amount[card], P)
    post_flow(expected, 0, "qr_fare", issuer[qr], amount[qr], P)
    assert _journal(_fares(issuer, mc, amount)) == _journal(expected)


@pytest.mark.parametrize("bad", [-1, N_P, 2 * N_P, 10 * N_P])
def test_an_uncharged_tap_is_not_read_whatever_its_issuer_code(bad):
    # Leaving a tap out and giving it 0 fen are the same (the caller may do either).
    charged = _fares([NTCARD, ALIPAY], [MC_CARD, MC_QR], [200, 150])
    for mc in (MC_CARD, MC_QR):
        with_free = _fares([NTCARD, bad, ALIPAY], [MC_CARD, mc, MC_QR], [200, 0, 150])
        assert _journal(with_free) == _journal(charged)


@pytest.mark.parametrize("bad", [-1, -N_P, N_P, N_P + SZCARD, 2 * N_P])
@pytest.mark.parametrize("mc", [MC_CARD, MC_QR])
def test_a_charged_tap_of_no_participant_is_refused_not_filed_elsewhere(bad, mc):
    # Card sums sit in bins [0, n) and QR sums in [n, 2n): a card tap of code n + k would be
    # booked as participant k's QR fare, a QR tap of code -1 as the last participant's card fare.
    with pytest.raises(ValueError, match=rf"issuer {bad} of a charged tap .*\[0, {N_P}\)"):
        _fares([NTCARD, bad], [MC_CARD, mc], [200, 300])


# -- ClearingNetworkAgent._deliver --------------------------------------------------------------
@pytest.fixture
def network() -> ClearingNetworkAgent:
    return ClearingNetworkAgent(
        mesa.Model(),
        simpy.Environment(),
        P,
        ClearingSettings(),
        ledger=Ledger(),
        bus=EventBus(),
        shards=[],
    )


def _inboxes(network: ClearingNetworkAgent) -> dict[str, list[int]]:
    return {
        P.ids[code]: [int(t) for r in node.inbox for t in r.tx_id]
        for code, node in network.nodes.items()
        if node.inbox
    }


# Few runs of one exchange (sliced) and more than _MAX_RUNS (gathered by code).
RUN_SHAPES = {"few runs": 6, "many runs": 4 * _MAX_RUNS}


@pytest.mark.parametrize("n", RUN_SHAPES.values(), ids=RUN_SHAPES.keys())
def test_records_go_to_their_acquirers_exchange(network, n):
    acquirer = np.where(np.arange(n) % 2, URBAN, SZ_BUS)
    network._deliver(recs(n, acquirer=acquirer))
    assert _inboxes(network) == {
        "NT_EXCHANGE": list(range(1, n, 2)),
        "SZ_EXCHANGE": list(range(0, n, 2)),
    }
    network._deliver(recs(0))
    assert sum(len(r) for node in network.nodes.values() for r in node.inbox) == n


@pytest.mark.parametrize("n", RUN_SHAPES.values(), ids=RUN_SHAPES.keys())
def test_an_acquirer_code_without_an_exchange_is_refused_naming_the_field(network, n):
    # Only a clearing node may lack a parent (exchange code -1): the one at the top.
    top = P.code("NATIONAL")
    assert P.parent[top] == -1
    acquirer = np.where(np.arange(n) % 2, URBAN, top)
    with pytest.raises(ValueError, match=r"records\.acquirer: NATIONAL is a clearing node"):
        network._deliver(recs(n, acquirer=acquirer))
    assert _inboxes(network) == {}


@pytest.mark.parametrize("n", RUN_SHAPES.values(), ids=RUN_SHAPES.keys())
@pytest.mark.parametrize("bad", [-1, N_P])
def test_an_acquirer_code_of_no_participant_is_refused(network, n, bad):
    # -1 would wrap around to the last participant's exchange and be delivered there.
    acquirer = np.where(np.arange(n) % 2, URBAN, bad)
    with pytest.raises(ValueError, match=rf"records\.acquirer codes must be in \[0, {N_P}\)"):
        network._deliver(recs(n, acquirer=acquirer))
    assert _inboxes(network) == {}
