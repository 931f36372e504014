"""Where a finished run's records went through its clearing hierarchy, rebuilt from the run's
files, so that a reader can tell which records stand behind a clearing figure.

The clearing tables hold totals (a batch per acquirer or sending node and day; a book row per
node and participant), not the records in them. A record's way is fixed by its issuer and
acquirer: from the acquirer's exchange up to the first node the issuer's exchange shares, and
down to it. This module rebuilds that hierarchy from what the run wrote (the nodes' parents
from each city's settings, each member's exchange from the books it settled in) and asks the
engine's own ``ClearingTopology.route`` where each (issuer, acquirer) pair's records went: the
flows its hops name and the book rows it posts are the ones listed here, so the rule lives in
one place. ``sim/run_view.py`` weighs the records of each pair with their cities' expansion
weights through these lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from sim.clearing import PairTotals, Participant, Participants
from sim.clearing_network import ClearingTopology


@dataclass(frozen=True)
class PairRoutes:
    """What each (issuer, acquirer) pair's records went through."""

    # (issuer, acquirer, source, target): a flow as the clearing batches log it (an acquirer to
    # its exchange, then node to node), once per pair
    hops: list[tuple[str, str, str, str]]
    # (issuer, acquirer, node, participant): a book row the pair's money was settled in (the
    # issuer and the acquirer at their exchanges, each node with its neighbours on the way and
    # with itself: its fees), once per pair
    books: list[tuple[str, str, str, str]]
    # the pairs whose way cannot be rebuilt (a participant the files do not place)
    unrouted: list[tuple[str, str]]


def node_parents(meta: dict) -> dict[str, str | None]:
    """Every clearing node of the run and the node above it, from each city's settings
    (``clearing.network.nodes``; the cities of a run share one hierarchy)."""
    parents: dict[str, str | None] = {}
    for city in meta.get("cities") or []:
        settings = city.get("settings") if isinstance(city, dict) else None
        network = ((settings or {}).get("clearing") or {}).get("network") or {}
        for node_id, node in (network.get("nodes") or {}).items():
            parent = node.get("parent") if isinstance(node, dict) else None
            parents.setdefault(str(node_id), None if parent is None else str(parent))
    return parents


def topology(
    parents: dict[str, str | None], members: Iterable[tuple[str, str, str]]
) -> ClearingTopology:
    """The engine's topology of the hierarchy of ``parents`` whose ``members`` (participant,
    role, exchange: issuers and acquirers as the books and batches place them) hang below its
    nodes; a member placed at a node the files do not hold is left out. Raises ValueError for a
    hierarchy that does not hold together (a cycle)."""
    rows = [Participant(node, "clearing_node", parent) for node, parent in parents.items()]
    placed = set(parents)
    for participant, role, exchange in members:
        if participant not in placed and exchange in parents:
            rows.append(Participant(participant, role, exchange))
            placed.add(participant)
    return ClearingTopology(Participants(rows), {})


def routes(
    parents: dict[str, str | None],
    members: Iterable[tuple[str, str, str]],
    pairs: Iterable[tuple[str, str]],
) -> PairRoutes:
    """The ways of ``pairs`` (issuer, acquirer) through the hierarchy of ``parents`` and
    ``members`` (``topology``), as the engine's ``ClearingTopology.route`` takes them."""
    try:
        hierarchy = topology(parents, members)
    except ValueError:  # a hierarchy the files do not hold together (a cycle): nothing routed
        return PairRoutes([], [], list(pairs))
    out = PairRoutes([], [], [])
    ids = hierarchy.participants.ids
    for issuer, acquirer in pairs:
        try:
            routing = hierarchy.route(_one_pair(hierarchy, issuer, acquirer), day=0)
        except (KeyError, ValueError):  # unknown to the files, or no node shared
            out.unrouted.append((issuer, acquirer))
            continue
        # The hops in the order the records travel: each node's sender is the node before it
        # (-1: the acquirer, whose exchange cleared them).
        next_node = {hop.sender: hop.node for hop in routing.hops}
        way, at = [acquirer], next_node.get(-1)
        while at is not None:
            way.append(ids[at])
            at = next_node.get(at)
        out.hops.extend((issuer, acquirer, a, b) for a, b in pairwise(way))
        # The rows the pair's money was posted to, on whichever dates they settle.
        books = {
            (ids[n], ids[c])
            for settlement in routing.settlements
            for n, c in zip(
                settlement.books.node.tolist(), settlement.books.counterparty.tolist(), strict=True
            )
        }
        out.books.extend((issuer, acquirer, node, who) for node, who in sorted(books))
    return out


def _one_pair(hierarchy: ClearingTopology, issuer: str, acquirer: str) -> PairTotals:
    """One (issuer, acquirer) pair as the clearing totals ``route`` takes: no money (the rows
    it posts are what is read, not their amounts). Raises KeyError for a participant the
    hierarchy does not hold, ValueError for an acquirer that is a clearing node."""
    codes = hierarchy.participants
    acquired_by = _acquirer_code(hierarchy, acquirer)
    zero = np.zeros(1, dtype=np.int64)
    return PairTotals(
        issuer=np.array([codes.code(issuer)], dtype=np.int64),
        acquirer=np.array([acquired_by], dtype=np.int64),
        node=np.array([codes.parent[acquired_by]], dtype=np.int64),
        records=zero,
        gross_fen=zero,
        fee_fen=zero,
        net_fen=zero,
    )


def _acquirer_code(hierarchy: ClearingTopology, acquirer: str) -> int:
    """An acquirer's code, which must be a member (not a node) for its way to start below."""
    code = hierarchy.participants.code(acquirer)
    if hierarchy.participants.rows[code].role == "clearing_node":
        raise ValueError(f"{acquirer} is a clearing node, not an acquirer")
    return code


__all__ = ["PairRoutes", "node_parents", "routes", "topology"]
