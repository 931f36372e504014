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

Each level settles on its own T+n (``ClearingNode.settlement_lag_days``, default the clearing's
``settlement_lag_days``): a node settles with its members and the nodes below it on its own
date, and with its parent on the parent's. Where the levels' dates differ, a node advances or
holds money in between: its own row of the book (``counterparty == node``) is then its net
position on that date, and its rows over all the dates add up to its fees. So on every
settlement date every node's book sums to zero, and so do the participants' positions.

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
class Settlement:
    """What one settlement date of a clearing day pays: the nodes' book rows settled that day
    and the participants' net positions (what the ledger settles)."""

    books: Books
    positions: Positions

    @property
    def settle_day(self) -> int:
        """The settlement date (day number)."""
        return self.positions.settle_day


@dataclass(frozen=True)
class Routing:
    """One clearing day routed: fees per level, its settlements (one per settlement date, in
    date order), and the transit hops each node logs."""

    fees: NodeFees
    settlements: tuple[Settlement, ...]
    acquirer_fees_fen: np.ndarray  # per pair: all fees on its way (acquirer's exchange + transit)
    hops: tuple[Hop, ...]


def transit_rates_bp(settings: ClearingSettings) -> dict[str, int]:
    """Each clearing node's transit fee (basis points) as the scenario's ``clearing:`` sets it."""
    network = settings.network
    return {} if network is None else {nid: n.transit_fee_bp for nid, n in network.nodes.items()}


def settlement_lags(settings: ClearingSettings) -> dict[str, int]:
    """The clearing nodes that settle on a T+n of their own, as ``clearing:`` sets them."""
    network = settings.network
    if network is None:
        return {}
    return {
        nid: n.settlement_lag_days
        for nid, n in network.nodes.items()
        if n.settlement_lag_days is not None
    }


class ClearingTopology:
    """Paths between exchanges in the hierarchy of ``participants``; each node's T+n
    (``settlement_lag_days`` by node id; the others ``default_lag_days``)."""

    def __init__(
        self,
        participants: Participants,
        transit_fee_bp: dict[str, int],
        settlement_lag_days: dict[str, int] | None = None,
        default_lag_days: int = 1,
    ) -> None:
        self.participants = participants
        self.transit_bp = np.zeros(len(participants), dtype=np.int64)
        for node_id, bp in transit_fee_bp.items():
            self.transit_bp[participants.code(node_id)] = bp
        self.lag_days = np.full(len(participants), default_lag_days, dtype=np.int64)
        for node_id, lag in (settlement_lag_days or {}).items():
            self.lag_days[participants.code(node_id)] = lag
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

    def route(self, pairs: PairTotals, day: int) -> Routing:
        """Fees, settlements (books and positions per date) and hops of clearing day ``day``'s
        pair totals."""
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

        fees = NodeFees(
            np.array(fee_pair, dtype=np.int64),
            np.array(fee_node, dtype=np.int32),
            np.array(fee_amount, dtype=np.int64),
        )
        return Routing(
            fees=fees,
            settlements=self._settlements(day, book),
            acquirer_fees_fen=acquirer_fees,
            hops=tuple(Hop(n, s, tuple(p)) for (n, s), p in sorted(hops.items())),
        )

    def _settlements(self, day: int, book: dict[tuple[int, int], int]) -> tuple[Settlement, ...]:
        """The book rows by settlement date: a row with a member or a node below settles on its
        node's date, a row with the node's parent on the parent's; each node's own row on a
        date is its net position then (minus its other rows: the book sums to zero). Members'
        positions are their rows; nodes' their own rows. With one T+n for every level this is
        one date: issuers pay gross, acquirers get gross less every fee, nodes keep their fees."""
        parent = self.participants.parent
        dated: dict[int, dict[tuple[int, int], int]] = {}
        for (node, other), amount in book.items():
            if other == node:
                continue  # the node's own row: what is left on each date, below
            upper = node if parent[other] == node else other
            rows = dated.setdefault(day + int(self.lag_days[upper]), {})
            rows[node, other] = amount
            rows[node, node] = rows.get((node, node), 0) - amount
        is_node = self.participants.role == CLEARING_NODE
        settlements = []
        for settle_day in sorted(dated):
            rows = dated[settle_day]
            keys = sorted(rows)
            books = Books(
                settle_day,
                np.array([n for n, _ in keys], dtype=np.int32),
                np.array([c for _, c in keys], dtype=np.int32),
                np.array([rows[key] for key in keys], dtype=np.int64),
            )
            # Members' positions are their rows; a node's is its own row (links are not).
            counts = ~is_node[books.counterparty] | (books.counterparty == books.node)
            positions = net_positions(
                settle_day,
                len(self.participants),
                [(books.counterparty[counts], books.position_fen[counts])],
            )
            settlements.append(Settlement(books, positions))
        return tuple(settlements)
