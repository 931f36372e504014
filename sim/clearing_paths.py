"""Where a finished run's records went through its clearing hierarchy, rebuilt from the run's
files, so that a reader can tell which records stand behind a clearing figure.

The clearing tables hold totals (a batch per acquirer or sending node and day; a book row per
node and participant), not the records in them. A record's way is fixed by its issuer and
acquirer: from the acquirer's exchange up to the first node the issuer's exchange shares, and
down to it (the engine's own ``ClearingTopology.path``). This module rebuilds that hierarchy
from what the run wrote (the nodes' parents from each city's settings, each member's exchange
from the books it settled in) and lists, for each (issuer, acquirer) pair, the flows it passed
along and the book rows it was settled in. ``sim/run_view.py`` weighs the records of each pair
with their cities' expansion weights through these lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from sim.clearing import Participant, Participants
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


def routes(
    parents: dict[str, str | None],
    members: Iterable[tuple[str, str, str]],
    pairs: Iterable[tuple[str, str]],
) -> PairRoutes:
    """The ways of ``pairs`` (issuer, acquirer) through the hierarchy of ``parents`` whose
    ``members`` (participant, role, exchange: issuers and acquirers as the books and batches
    place them) hang below its nodes."""
    rows = [Participant(node, "clearing_node", parent) for node, parent in parents.items()]
    placed = set(parents)
    for participant, role, exchange in members:
        if participant not in placed and exchange in parents:
            rows.append(Participant(participant, role, exchange))
            placed.add(participant)
    try:
        topology = ClearingTopology(Participants(rows), {})
    except ValueError:  # a hierarchy the files do not hold together (a cycle): nothing routed
        return PairRoutes([], [], list(pairs))
    out = PairRoutes([], [], [])
    for issuer, acquirer in pairs:
        try:
            codes = topology.path(
                topology.participants.code(issuer), _acquirer_code(topology, acquirer)
            )
        except (KeyError, ValueError):  # unknown to the files, or no node shared
            out.unrouted.append((issuer, acquirer))
            continue
        path = [topology.participants.ids[c] for c in codes]
        way = [acquirer, *path]
        out.hops.extend((issuer, acquirer, a, b) for a, b in pairwise(way))
        books = {(path[0], acquirer), (path[-1], issuer)}
        for a, b in pairwise(path):
            books |= {(a, b), (b, a)}
        books |= {(node, node) for node in path}
        out.books.extend((issuer, acquirer, node, who) for node, who in sorted(books))
    return out


def _acquirer_code(topology: ClearingTopology, acquirer: str) -> int:
    """An acquirer's code, which must be a member (not a node) for its way to start below."""
    code = topology.participants.code(acquirer)
    if topology.participants.rows[code].role == "clearing_node":
        raise ValueError(f"{acquirer} is a clearing node, not an acquirer")
    return code


__all__ = ["PairRoutes", "node_parents", "routes"]
