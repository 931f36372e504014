"""The ways ``sim.clearing_paths.routes`` rebuilds from a run's files are the engine's own
(``ClearingTopology.route``): the flows its hops log and the book rows it posts, for every pair
it routes, whatever the hierarchy (a property test beside the fixed example in
tests/test_run_view.py)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from strategies import clearing_hierarchies

from sim.clearing import PairTotals
from sim.clearing_paths import routes, topology


def _refused(hierarchy, pair) -> bool:
    """Whether the engine refuses to route ``pair``: unknown to the files, or no node shared."""
    try:
        _engine(hierarchy, [pair])
    except (KeyError, ValueError):
        return True
    return False


def _engine(hierarchy, pairs):
    """What the engine's ``route`` does with ``pairs`` all at once, as (issuer, acquirer,
    source, target) flows and every book row's (node, participant) it posts."""
    ids, code = hierarchy.participants.ids, hierarchy.participants.code
    acquirers = np.array([code(a) for _, a in pairs], dtype=np.int64)
    zero = np.zeros(len(pairs), dtype=np.int64)
    routing = hierarchy.route(
        PairTotals(
            issuer=np.array([code(i) for i, _ in pairs], dtype=np.int64),
            acquirer=acquirers,
            node=hierarchy.participants.parent[acquirers],
            records=zero, gross_fen=zero, fee_fen=zero, net_fen=zero,
        ),
        day=0,
    )  # fmt: skip
    flows = {
        (*pairs[k], pairs[k][1] if hop.sender < 0 else ids[hop.sender], ids[hop.node])
        for hop in routing.hops
        for k in hop.pairs
    }
    books = {
        (ids[n], ids[c])
        for s in routing.settlements
        for n, c in zip(s.books.node.tolist(), s.books.counterparty.tolist(), strict=True)
    }
    return flows, books


@settings(max_examples=150, deadline=None)
@given(clearing_hierarchies())
def test_the_rebuilt_ways_are_the_engines_route(drawn):
    parents, members, pairs = drawn
    found = routes(parents, members, pairs)
    hierarchy = topology(parents, members)
    # Left unrouted: the pairs the engine cannot route, and those "acquired" by a clearing node.
    assert found.unrouted == [p for p in pairs if p[1] in parents or _refused(hierarchy, p)]
    routed = [p for p in pairs if p not in found.unrouted]
    if not routed:
        return
    flows, books = _engine(hierarchy, routed)
    assert set(found.hops) == flows
    assert {b[2:] for b in found.books} == books
    for issuer, acquirer in routed:  # each pair's flows in the order its records travel
        way = [h[2:] for h in found.hops if h[:2] == (issuer, acquirer)]
        assert way[0][0] == acquirer and all(a[1] == b[0] for a, b in pairwise(way))
