"""Routing through the clearing hierarchy: paths, fees at each level, each node's book.

A record is cleared by its acquirer's exchange (sim/clearing.py ``Clearer``: duplicates, fees at
the mode and medium rates, the acquirer's batch). When its issuer belongs to another exchange, the
record travels up the hierarchy to the lowest node the two share and down to the issuer's
exchange; every node on that way after the first logs it in its own hash chain and takes its
transit fee (``ClearingNode.transit_fee_bp``) on the gross amount.

Money flows back along the same path: the issuer pays the gross amount to its exchange, each node
keeps its fee and passes the rest on, and the acquirer's exchange pays the acquirer what is left.
So each node has a *book* per settlement date: its members (issuers and acquirers), the
neighbouring nodes it pays or is paid by (links), and itself (its fees). Every book sums to zero.

Everything is computed per (issuer, acquirer) pair — there are few pairs and few paths — and
rounded per pair and node, so a day's routing costs a handful of small array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.clearing import (
    CLEARING_NODE,
    ClearingSettings,
    PairTotals,
    Participants,
    Positions,
    net_positions,
)


@dataclass(frozen=True)
class NodeFees:
    """Fees per (pair, node): ``pair`` indexes a ``PairTotals``."""

    pair: np.ndarray
    node: np.ndarray
    fee_fen: np.ndarray


@dataclass(frozen=True)
class Books:
    """Every node's book of one settlement date: (node, counterparty, position) rows, where a
    position > 0 means the counterparty receives. ``counterparty == node`` is the node's fees."""

    settle_day: int
    node: np.ndarray
    counterparty: np.ndarray
    position_fen: np.ndarray

    def sums(self, n_participants: int) -> np.ndarray:
        """Sum of each node's book (all zero when the money adds up)."""
        return np.bincount(self.node, weights=self.position_fen, minlength=n_participants).astype(
            np.int64
        )


@dataclass(frozen=True)
class Hop:
    """Records of ``pairs`` pass from node ``sender`` into node ``node`` (sender is -1 when the
    node is the acquirer's own exchange, which cleared them)."""

    node: int
    sender: int
    pairs: tuple[int, ...]


@dataclass(frozen=True)
class Routing:
    """One clearing day routed: fees per level, each node's book, the participants' net
    positions (what the ledger settles), and the transit hops each node logs."""

    fees: NodeFees
    books: Books
    positions: Positions
    acquirer_fees_fen: np.ndarray  # per pair: all fees on its way (acquirer's exchange + transit)
    hops: tuple[Hop, ...]


def transit_rates_bp(settings: ClearingSettings) -> dict[str, int]:
    """Each clearing node's transit fee (basis points) as the scenario's ``clearing:`` sets it."""
    network = settings.network
    return {} if network is None else {nid: n.transit_fee_bp for nid, n in network.nodes.items()}


class ClearingTopology:
    """Paths between exchanges in the hierarchy of ``participants``."""

    def __init__(self, participants: Participants, transit_fee_bp: dict[str, int]) -> None:
        self.participants = participants
        self.transit_bp = np.zeros(len(participants), dtype=np.int64)
        for node_id, bp in transit_fee_bp.items():
            self.transit_bp[participants.code(node_id)] = bp
        self._paths: dict[tuple[int, int], tuple[int, ...]] = {}

    def chain(self, code: int) -> list[int]:
        """Nodes from a participant's own exchange (a node: itself) up to the top."""
        chain, node = [], int(code)
        if self.participants.role[node] != CLEARING_NODE:
            node = int(self.participants.parent[node])
        while node >= 0:
            chain.append(node)
            node = int(self.participants.parent[node])
        return chain

    def path(self, issuer: int, acquirer: int) -> tuple[int, ...]:
        """Nodes a record passes through, from the acquirer's exchange to the issuer's."""
        key = (int(issuer), int(acquirer))
        found = self._paths.get(key)
        if found is None:
            up, down = self.chain(acquirer), self.chain(issuer)
            shared = next((n for n in up if n in down), None)
            if shared is None:
                ids = self.participants.ids
                raise ValueError(f"{ids[key[0]]} and {ids[key[1]]} share no clearing node")
            found = tuple(up[: up.index(shared) + 1]) + tuple(reversed(down[: down.index(shared)]))
            self._paths[key] = found
        return found

    def transit_fees(self, issuer: int, acquirer: int, gross_fen: int) -> list[int]:
        """Fees of the nodes after the acquirer's exchange on the way of a pair's records
        (``gross_fen``: what the pair cleared on one day), each node's transit rate on the gross
        amount, rounded half up per pair and node (what the ledger posts)."""
        return [
            (int(gross_fen) * int(self.transit_bp[node]) + 5_000) // 10_000
            for node in self.path(issuer, acquirer)[1:]
        ]

    def route(self, pairs: PairTotals, settle_day: int) -> Routing:
        """Fees, books, positions and hops of one clearing day's pair totals."""
        n_p = len(self.participants)
        fee_pair, fee_node, fee_amount = [], [], []
        book: dict[tuple[int, int], int] = {}
        hops: dict[tuple[int, int], list[int]] = {}
        acquirer_fees = np.zeros(len(pairs.issuer), dtype=np.int64)

        def post(node: int, who: int, amount: int) -> None:
            book[(node, who)] = book.get((node, who), 0) + amount

        for k, (issuer, acquirer) in enumerate(
            zip(pairs.issuer.tolist(), pairs.acquirer.tolist(), strict=True)
        ):
            path = self.path(issuer, acquirer)
            gross = int(pairs.gross_fen[k])
            fees = [int(pairs.fee_fen[k]), *self.transit_fees(issuer, acquirer, gross)]
            for i, node in enumerate(path):
                fee_pair.append(k)
                fee_node.append(node)
                fee_amount.append(fees[i])
                hops.setdefault((node, path[i - 1] if i else -1), []).append(k)
            acquirer_fees[k] = sum(fees)
            # Money goes from the issuer's end (last node) to the acquirer's end (first node).
            passed = gross  # what reaches node i from the issuer's side
            for i in range(len(path) - 1, -1, -1):
                node = path[i]
                post(node, issuer if i == len(path) - 1 else path[i + 1], -passed)
                post(node, node, fees[i])
                passed -= fees[i]
                post(node, acquirer if i == 0 else path[i - 1], passed)

        keys = sorted(book)
        books = Books(
            settle_day,
            np.array([n for n, _ in keys], dtype=np.int32),
            np.array([c for _, c in keys], dtype=np.int32),
            np.array([book[key] for key in keys], dtype=np.int64),
        )
        fees = NodeFees(
            np.array(fee_pair, dtype=np.int64),
            np.array(fee_node, dtype=np.int32),
            np.array(fee_amount, dtype=np.int64),
        )
        return Routing(
            fees=fees,
            books=books,
            positions=self._positions(settle_day, pairs, fees, acquirer_fees, n_p),
            acquirer_fees_fen=acquirer_fees,
            hops=tuple(Hop(n, s, tuple(p)) for (n, s), p in sorted(hops.items())),
        )

    @staticmethod
    def _positions(settle_day, pairs, fees, acquirer_fees, n_p) -> Positions:
        """Participants' net positions: issuers pay gross, acquirers get gross less every fee,
        each node keeps its fees (links between nodes net out)."""
        return net_positions(
            settle_day,
            n_p,
            [
                (pairs.issuer, -pairs.gross_fen),
                (pairs.acquirer, pairs.gross_fen - acquirer_fees),
                (fees.node, fees.fee_fen),
            ],
        )
