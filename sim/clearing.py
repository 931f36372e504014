"""Clearing services of one node: daily batches, duplicate screening, fees, hash-chained log.

Used by the clearing-node agents (``agents/clearing.py``): each node's ``Clearer`` clears the
records its member acquirers uploaded (vectorised over the day's records), and logs the records
other nodes pass through it (``log_transit``). Routing between nodes, transit fees and each node's
book are in ``sim/clearing_network.py``.

Flow for one clearing day at an acquirer's exchange (records uploaded before
``batch_cutoff_hour`` the next morning):

1. ``duplicate_upload``: a (device, device serial) seen before, in this batch or any earlier one
   (``SeenSerials`` keeps the highest serial per device plus the few still-missing serials).
2. ``declined_insufficient_balance``: the validator declined the tap; nothing was charged.
3. ``duplicate_deduction``: the same card charged on the same device within ``retap_lock_s`` of its
   previous charge there (also across batches). The later record is rejected and a refund order
   is issued, because its fare was already taken from the card or QR account.
4. The rest clear. Fees are ``list fare x rate`` rounded half up per record, on charged records.
5. One ``BatchRecord`` per acquirer, hash-chained (E-Commerce Law art. 53: tamper-evident).
6. Settlement on ``day + settlement_lag_days``; this node's own view of the positions is in the
   result (the network's, with transit fees and every node's book, replaces it).

Posting helpers write the matching double-entry rows (see ``sim.ledger`` for the accounts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from sim import ids
from sim.codes import CLEARED, MEDIA, REJECTED, STORED_VALUE_MEDIA
from sim.grouping import positions_in_runs, runs_stable_order, stable_order
from sim.ledger import InvariantViolation, Ledger, account, check_conservation
from sim.settings_base import SettingsModel

DAY_S = 86_400

#: Reject reason codes (0 = not rejected). Append, never reorder.
REJECT_REASONS: tuple[str, ...] = (
    "none",
    "duplicate_upload",
    "declined_insufficient_balance",
    "duplicate_deduction",
    "device_buffer_full",  # set by the engine: the validator refused the tap (buffer full)
    "card_not_accepted",  # the terminal's city list does not take the card (sim/city_list.py)
    "qr_platform_down",  # the rider's QR platform is down and they carry no card (incidents)
)
R_NONE, R_DUPLICATE_UPLOAD, R_DECLINED, R_DUPLICATE_DEDUCTION = 0, 1, 2, 3
R_DEVICE_BUFFER_FULL = 4
R_CARD_NOT_ACCEPTED = 5
R_QR_PLATFORM_DOWN = 6

#: Refund kinds (the ``refunds`` table's ``refund_kind`` names): a duplicate deduction the
#: clearing rejected, or a cleared charge the service desk had refunded. Append, never reorder.
REFUND_KINDS: tuple[str, ...] = ("duplicate_deduction", "service_desk")
REFUND_DUPLICATE, REFUND_DESK = 0, 1

#: Medium classes for fee rates and postings: stored-value card (physical or NFC) or QR account.
MEDIUM_CLASSES: tuple[str, ...] = ("card", "qr")
MC_CARD, MC_QR = 0, 1

#: Participant roles.
ROLES: tuple[str, ...] = ("issuer", "acquirer", "clearing_node")
ISSUER, ACQUIRER, CLEARING_NODE = 0, 1, 2

#: Memos used by the posting helpers (``Ledger.flows`` groups by them).
MEMO_OPENING = "opening_balance"
MEMO_TOPUP = "topup"
MEMO_CARD_FARE = "card_fare"
MEMO_QR_FARE = "qr_fare"
MEMO_CASH_REFUND = "cash_refund"
MEMO_DUP_REFUND = "duplicate_refund"
MEMO_QR_DUP_REFUND = "qr_duplicate_refund"
MEMO_DESK_REFUND = "desk_refund"
MEMO_PURSE = "purse_purchase"  # non-transit small payments from the card purse (retail, bikes)
MEMO_CLEARING = "clearing"
MEMO_FEE = "clearing_fee"
MEMO_SETTLEMENT = "settlement"
MEMO_DEPOSIT = "deposit"
#: A social-security card's venue entry, paid from the holder's account (sim/social_security).
MEMO_SSC_ENTRY = "ssc_venue_entry"

#: BatchRecord fields covered by the hash chain, in canonical order.
_SUMMARY_FIELDS: tuple[str, ...] = (
    "batch_id",
    "node",
    "transit",
    "day",
    "settle_day",
    "acquirer",
    "submitted",
    "cleared",
    "rejected",
    "rejected_duplicate_upload",
    "rejected_declined",
    "rejected_duplicate_deduction",
    "gross_fen",
    "fee_fen",
    "net_fen",
    "refund_fen",
    "records_digest",
)

#: Hash that precedes the first batch of a clearing log.
GENESIS_HASH = "0" * 64

_SERIAL_LIMIT = 1 << 32
_DEVICE_LIMIT = 1 << 31

NonNegInt = Annotated[int, Field(ge=0)]


def _rate(default: int, what: str) -> Any:  # a pydantic FieldInfo, typed Any like Field()
    return Field(
        default,
        ge=0,
        le=10_000,
        description=f"Clearing service fee on {what}, in basis points of the list fare (原价).",
    )


class ClearingNode(SettingsModel):
    """A clearing node (数据交换机构): a city exchange, a provincial/regional exchange or the
    national centre (DOMAIN.md §2)."""

    name_zh: str = Field(description="Name of the institution.")
    parent: str | None = Field(
        None, description="Node it settles through (null: the top of the hierarchy)."
    )
    transit_fee_bp: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Fee this node takes, in basis points of the gross amount, on records that "
        "pass through it to or from another node (the acquirer's own exchange charges the "
        "mode and medium rates instead).",
    )
    prefunded: bool = Field(
        True,
        description="Its issuers pre-fund settlement deposits here (DOMAIN.md §2); false: they "
        "settle through their banks and hold none (a card channel of account debits, such as "
        "the social-security cards', sim/social_security.py).",
    )
    settlement_lag_days: int | None = Field(
        None,
        ge=0,
        le=30,
        description="T+n on which this node settles with its members and the nodes below it "
        "(its parent settles with it on the parent's); default: clearing.settlement_lag_days. "
        "Where levels differ, a node advances or holds the money in between "
        "(sim/clearing_network.py).",
    )


class IssuerSpec(SettingsModel):
    """An issuer of cards or QR codes, and the media it issues."""

    name_zh: str = Field(description="Name of the institution or channel.")
    exchange: str = Field(description="Clearing node the issuer is a member of.")
    media: tuple[str, ...] = Field(
        description="Media codes (sim.codes.MEDIA) it issues among the scenario's riders."
    )


class ClearingNetwork(SettingsModel):
    """The scenario's clearing hierarchy: nodes, issuers, and the exchange of its acquirers.

    Acquirers are the scenario's transit operators (``operator_id`` of its lines); external
    cities' issuers and acquirers hang under the exchange each city names (``interop``).
    """

    nodes: dict[str, ClearingNode] = Field(min_length=1, description="Clearing nodes by id.")
    issuers: dict[str, IssuerSpec] = Field(
        min_length=1, description="Issuers of the scenario's riders' cards and codes, by id."
    )
    home_exchange: str = Field(description="Node the scenario's own acquirers clear through.")


class ClearingSettings(SettingsModel):
    """The scenario's ``clearing:`` section: fee rates, batch cut-off, settlement lag, deposits.

    Fee defaults are the Nantong post-evaluation report's proposal: bus 3.5% of the list fare,
    metro by card 3.5%, metro by QR 2.5%.
    """

    bus_card_fee_bp: int = _rate(350, "bus rides paid by card (physical or NFC virtual)")
    bus_qr_fee_bp: int = _rate(350, "bus rides paid by QR code")
    metro_card_fee_bp: int = _rate(350, "metro rides paid by card (physical or NFC virtual)")
    metro_qr_fee_bp: int = _rate(250, "metro rides paid by QR code")
    batch_cutoff_hour: int = Field(
        2,
        ge=0,
        le=23,
        description="Records uploaded before this hour the next morning go in a day's batch.",
    )
    settlement_lag_days: int = Field(
        1,
        ge=0,
        le=30,
        description="Settlement date = clearing day + this many calendar days (T+1).",
    )
    retap_lock_s: int = Field(
        2,
        ge=0,
        le=3600,
        description="Two charges of one card on one device at most this many seconds apart are a "
        "duplicate deduction: the later one is rejected and refunded.",
    )
    settlement_deposit_fen: int = Field(
        50_000_000,
        ge=0,
        description="Settlement deposit (结算预存资金) each issuer places with the exchange at the "
        "start of the run. Assumption: 500,000 yuan, about 5 days of Nantong's 2024 transit spend.",
    )
    deposit_overrides_fen: dict[str, NonNegInt] = Field(
        default_factory=dict,
        description="Per-issuer deposit in fen, by participant id, replacing the default.",
    )
    deposit_call_threshold_pct: float = Field(
        50.0,
        ge=0,
        le=100,
        description="An issuer whose deposit falls below this share of its level is called to "
        "bring it back (sim/deposits.py). Assumption.",
    )
    deposit_call_delay_days: int = Field(
        1,
        ge=0,
        le=30,
        description="Days from a deposit call until the money is in. Assumption.",
    )
    network: ClearingNetwork | None = Field(
        None, description="The clearing hierarchy (required in a scenario)."
    )

    def fee_matrix_bp(self) -> np.ndarray:
        """Fee rates as an int64 array indexed [mode code, medium class]."""
        return np.array(
            [
                [self.bus_card_fee_bp, self.bus_qr_fee_bp],
                [self.metro_card_fee_bp, self.metro_qr_fee_bp],
            ],
            dtype=np.int64,
        )


def medium_class_of(media: np.ndarray) -> np.ndarray:
    """Medium class (``MC_CARD``/``MC_QR``) of ``sim.codes.MEDIA`` codes."""
    lut = np.array(
        [MC_CARD if i in STORED_VALUE_MEDIA else MC_QR for i in range(len(MEDIA))], dtype=np.uint8
    )
    return lut[np.asarray(media)]


def clearing_day(upload_ts_s: np.ndarray, batch_cutoff_hour: int, day0_ts_s: int = 0) -> np.ndarray:
    """Clearing day of each upload time (seconds; day 0 starts at ``day0_ts_s``)."""
    ts = np.asarray(upload_ts_s, dtype=np.int64)
    return (ts - day0_ts_s - batch_cutoff_hour * 3600) // DAY_S


# -- participants ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Participant:
    """One issuer, acquirer or clearing node; ``parent`` is the clearing node it reports to."""

    id: str
    role: str
    parent: str | None
    name_zh: str = ""


class Participants:
    """Registry giving every participant an int code (its position) for the hot-path arrays."""

    def __init__(self, rows: Iterable[Participant]) -> None:
        self.rows: tuple[Participant, ...] = tuple(rows)
        self.ids: tuple[str, ...] = tuple(p.id for p in self.rows)
        self._code = {pid: i for i, pid in enumerate(self.ids)}
        if len(self._code) != len(self.ids):
            dup = sorted({p for p in self.ids if self.ids.count(p) > 1})
            raise ValueError(f"participant ids must be unique, repeated: {dup}")
        for p in self.rows:
            if p.role not in ROLES:
                raise ValueError(f"participant {p.id}: role {p.role!r} not one of {ROLES}")
            if p.parent is None:
                if p.role != "clearing_node":
                    raise ValueError(f"participant {p.id}: {p.role} needs a parent clearing node")
            elif p.parent not in self._code or self.rows[self._code[p.parent]].role != (
                "clearing_node"
            ):
                raise ValueError(f"participant {p.id}: parent {p.parent!r} is not a clearing node")
        self.role = np.array([ROLES.index(p.role) for p in self.rows], dtype=np.uint8)
        self.parent = np.array(
            [-1 if p.parent is None else self._code[p.parent] for p in self.rows], dtype=np.int32
        )
        for i in range(len(self.rows)):
            self._chain(i)  # raises on a cycle

    def _chain(self, i: int) -> list[int]:
        chain, seen = [], set()
        node = int(self.parent[i]) if self.role[i] != CLEARING_NODE else i
        while node >= 0:
            if node in seen:
                raise ValueError(f"clearing hierarchy has a cycle through {self.ids[node]}")
            seen.add(node)
            chain.append(node)
            node = int(self.parent[node])
        return chain

    def __len__(self) -> int:
        return len(self.rows)

    def code(self, pid: str) -> int:
        """Int code of a participant id."""
        try:
            return self._code[pid]
        except KeyError:
            raise KeyError(f"unknown participant {pid!r}; known: {', '.join(self.ids)}") from None

    def codes(self, pids: Sequence[str]) -> np.ndarray:
        """Int codes (int32) of participant ids."""
        return np.array([self.code(p) for p in pids], dtype=np.int32)

    def of_role(self, role: str) -> np.ndarray:
        """Codes of all participants with a role."""
        return np.flatnonzero(self.role == ROLES.index(role)).astype(np.int32)


# -- inputs and outputs ------------------------------------------------------------------------
_COLUMNS: dict[str, type] = {
    "tx_id": np.int64,
    "card": np.int64,
    "card_counter": np.int64,
    "device": np.int64,
    "device_serial": np.int64,
    "timestamp_s": np.int64,
    "amount_fen": np.int64,
    "list_fare_fen": np.int64,
    "issuer": np.int32,
    "acquirer": np.int32,
    "mode": np.uint8,
    "medium_class": np.uint8,
    "declined": np.bool_,
}


@dataclass(frozen=True, slots=True)
class UploadedRecords:
    """Uploaded tap records, one row each (all acquirers together).

    ``issuer``/``acquirer`` are ``Participants`` codes, ``mode`` a ``sim.codes.MODES`` code,
    ``medium_class`` ``MC_CARD``/``MC_QR``; ``amount_fen`` is what was charged (0 for free rides),
    ``list_fare_fen`` the undiscounted fare (原价). A duplicate upload is a copy with the same
    ``tx_id``. ``card_counter`` is carried for output only: QR media have none and the 2-byte
    counter wraps, so (device, device_serial) is the duplicate key.
    """

    tx_id: np.ndarray
    card: np.ndarray
    card_counter: np.ndarray
    device: np.ndarray
    device_serial: np.ndarray
    timestamp_s: np.ndarray
    amount_fen: np.ndarray
    list_fare_fen: np.ndarray
    issuer: np.ndarray
    acquirer: np.ndarray
    mode: np.ndarray
    medium_class: np.ndarray
    declined: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for name, dtype in _COLUMNS.items():
            arr = np.asarray(getattr(self, name))
            if dtype is not np.bool_ and arr.size and arr.dtype.kind not in "iub":
                raise TypeError(f"records.{name} must be integers, got {arr.dtype}")
            arr = np.ascontiguousarray(arr, dtype=dtype)
            if arr.ndim != 1 or (n is not None and arr.size != n):
                raise ValueError(f"records.{name} has shape {arr.shape}, expected ({n},)")
            n = arr.size
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.tx_id.size)

    def take(self, idx: np.ndarray) -> UploadedRecords:
        """Rows ``idx`` (an index or boolean array) as new records."""
        return UploadedRecords(**{name: getattr(self, name)[idx] for name in _COLUMNS})

    def take_spans(self, spans: Sequence[tuple[int, int]]) -> UploadedRecords:
        """Rows ``a:b`` of each (a, b) in ``spans``, in order (one span: views, no copy)."""
        if len(spans) == 1:
            return self.take(slice(*spans[0]))
        return UploadedRecords(
            **{
                name: np.concatenate([getattr(self, name)[a:b] for a, b in spans])
                for name in _COLUMNS
            }
        )

    @staticmethod
    def empty() -> UploadedRecords:
        """No records."""
        return UploadedRecords(**{name: np.zeros(0, dtype) for name, dtype in _COLUMNS.items()})

    @staticmethod
    def concat(parts: Sequence[UploadedRecords]) -> UploadedRecords:
        """Rows of several record sets, in order (one set is returned as it is)."""
        if not parts:
            return UploadedRecords.empty()
        if len(parts) == 1:
            return parts[0]
        return UploadedRecords(
            **{name: np.concatenate([getattr(p, name) for p in parts]) for name in _COLUMNS}
        )


@dataclass(frozen=True, slots=True)
class RefundOrders:
    """Refunds owed for duplicate deductions: ``source_tx_id`` is the rejected charge,
    ``first_tx_id`` the charge it repeated. ``by_desk``: refunds the service desk ordered of
    card charges that were cleared (``first_tx_id`` -1), paid by the card's issuer."""

    day: int
    source_tx_id: np.ndarray
    first_tx_id: np.ndarray
    card: np.ndarray
    issuer: np.ndarray
    acquirer: np.ndarray
    medium_class: np.ndarray
    amount_fen: np.ndarray
    by_desk: bool = False

    def __len__(self) -> int:
        return int(self.source_tx_id.size)

    def columns(self, pay_day: int) -> dict[str, np.ndarray]:
        """The orders as rows of the ``refunds`` table (sim/records.py), to be paid on
        ``pay_day``; ``repeated_transaction_id`` is -1 (null) for the desk's."""
        n = len(self)
        return {
            "transaction_id": self.source_tx_id.astype(np.int64),
            "repeated_transaction_id": self.first_tx_id.astype(np.int64),
            "kind": np.full(n, REFUND_DESK if self.by_desk else REFUND_DUPLICATE, np.int8),
            "issuer": self.issuer.astype(np.int64),
            "acquirer": self.acquirer.astype(np.int64),
            "amount_fen": self.amount_fen.astype(np.int64),
            "pay_day": np.full(n, pay_day, np.int64),
        }


@dataclass(frozen=True, slots=True)
class PairTotals:
    """Cleared totals per (issuer, acquirer) pair; ``node`` is the acquirer's exchange, which
    cleared the records and earns ``fee_fen`` (nodes further on the way to the issuer add
    their transit fees: sim/clearing_network.py)."""

    issuer: np.ndarray
    acquirer: np.ndarray
    node: np.ndarray
    records: np.ndarray
    gross_fen: np.ndarray
    fee_fen: np.ndarray
    net_fen: np.ndarray


@dataclass(frozen=True, slots=True)
class Positions:
    """Net settlement positions (positive = receives) of one settlement date."""

    settle_day: int
    participant: np.ndarray
    position_fen: np.ndarray


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch of a clearing node's hash-chained log: an acquirer's records cleared by its
    exchange on one clearing day, or (transit) records another node passed on; ``acquirer``
    then holds the sending node's id."""

    batch_id: int
    node: str
    transit: bool  # records cleared by another node, passed on through this one
    day: int
    settle_day: int
    acquirer: str
    submitted: int
    cleared: int
    rejected: int
    rejected_duplicate_upload: int
    rejected_declined: int
    rejected_duplicate_deduction: int
    gross_fen: int
    fee_fen: int
    net_fen: int
    refund_fen: int
    records_digest: str
    prev_hash: str
    hash: str

    def summary(self) -> str:
        """Canonical text of everything the hash covers except ``prev_hash`` and ``hash``."""
        return "|".join(str(getattr(self, f)) for f in _SUMMARY_FIELDS)


def chain_hash(prev_hash: str, summary: str) -> str:
    """sha256 over the previous batch hash and this batch's canonical summary."""
    return hashlib.sha256(f"cardtwin-clearing-v1\n{prev_hash}\n{summary}".encode()).hexdigest()


def verify_chain(batches: Sequence[BatchRecord], genesis: str = GENESIS_HASH) -> None:
    """Recompute the hash chain; raises ``InvariantViolation('hash_chain', ...)`` at the first
    batch whose link or content does not match."""
    prev = genesis
    for b in batches:
        if b.prev_hash != prev or chain_hash(prev, b.summary()) != b.hash:
            raise InvariantViolation(
                "hash_chain",
                0,
                f"batch {b.batch_id} (day {b.day}, acquirer {b.acquirer})",
                "batch content or link does not match its hash",
            )
        prev = b.hash


def batch_columns(batches: Sequence[BatchRecord]) -> dict[str, np.ndarray]:
    """The clearing log as columns for output writers."""
    names = BatchRecord.__slots__
    return {n: np.array([getattr(b, n) for b in batches]) for n in names}


def _digest_columns(rec: UploadedRecords, rows) -> list[np.ndarray]:
    """The hashed fields of the records at ``rows`` (int64, one contiguous array per field):
    all exported in ``transactions`` (transaction_id, device_id, device_serial, amount_fen,
    list_fare_fen), so a batch's digest can be recomputed from the files."""
    cols = (rec.tx_id, rec.device, rec.device_serial, rec.amount_fen, rec.list_fare_fen)
    return [np.asarray(c, dtype=np.int64)[rows] for c in cols]


def _sha256_slices(columns: list[np.ndarray], start: int, end: int) -> str:
    h = hashlib.sha256()
    for col in columns:
        h.update(col[start:end])  # a contiguous slice: its buffer is its bytes, no copy
    return h.hexdigest()


def records_digest(rec: UploadedRecords, rows: np.ndarray | None = None) -> str:
    """sha256 over the records at ``rows``, in that order: the little-endian int64 bytes of the
    transaction ids, then of the (run-wide) devices, device serials, amounts and list fares. A
    batch's digest covers the records it cleared, ordered by (device, device serial)."""
    rows = np.arange(len(rec)) if rows is None else np.asarray(rows)
    return _sha256_slices(_digest_columns(rec, rows), 0, rows.size)


@dataclass(frozen=True, slots=True)
class ClearingResult:
    """Outcome of one clearing day: per-record arrays (input order) and aggregates."""

    day: int
    settle_day: int  # the clearing's T+n (refunds are paid then); records: record_settle_day
    tx_id: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    fee_fen: np.ndarray
    batch_id: np.ndarray
    record_settle_day: np.ndarray  # when each record's acquirer is paid: its exchange's T+n
    refunds: RefundOrders
    pairs: PairTotals
    batches: tuple[BatchRecord, ...]
    positions: Positions

    @property
    def cleared_tx_id(self) -> np.ndarray:
        """Tx ids of cleared records (batch membership for the exactly-once invariant)."""
        return self.tx_id[self.status == CLEARED]

    @property
    def cleared_batch_id(self) -> np.ndarray:
        """Batch ids of cleared records, aligned with ``cleared_tx_id``."""
        return self.batch_id[self.status == CLEARED]


# -- state kept between batches ----------------------------------------------------------------
class SeenSerials:
    """Compact seen-set of (device, serial): per device the highest serial seen, plus the few
    serials below it that have not arrived yet (holes).

    Memory is one int per device plus one per missing record. A device's serials count from 0
    (a run's validators start there): the serials below its first upload are holes until they
    arrive, so records that reach the exchange late (held back by a clearing node outage on
    their way) are not taken for copies. A jump of more than ``max_hole_run`` serials is taken
    as a counter reset, not as that many missing records.
    """

    def __init__(self, max_hole_run: int = 1 << 16) -> None:
        self.max_hole_run = max_hole_run
        self.devices = np.zeros(0, dtype=np.int64)
        self.max_serial = np.zeros(0, dtype=np.int64)
        self.holes = np.zeros(0, dtype=np.int64)

    def check_and_add(self, device: np.ndarray, serial: np.ndarray) -> np.ndarray:
        """Mark each record as duplicate (seen before, or earlier in this call) and remember it."""
        keys = _serial_keys(np.asarray(device, np.int64), np.asarray(serial, np.int64))
        return self._check_and_add(keys, stable_order(keys))

    def _check_and_add(self, keys: np.ndarray, order: np.ndarray) -> np.ndarray:
        n = keys.size
        dup = np.zeros(n, dtype=bool)
        if n == 0:
            return dup
        sk = keys[order]
        first = np.ones(n, dtype=bool)
        np.not_equal(sk[1:], sk[:-1], out=first[1:])
        repeats = not first.all()  # a key twice in this call (rare): only its first counts
        uk = sk[first] if repeats else sk
        udev, userial = uk >> 32, uk & (_SERIAL_LIMIT - 1)
        # The keys are sorted, so each device is one run of ``uk``: look devices up once per
        # run, not once per record.
        lead = np.ones(uk.size, dtype=bool)
        np.not_equal(udev[1:], udev[:-1], out=lead[1:])
        starts = np.flatnonzero(lead)
        length = np.diff(starts, append=uk.size)
        dev_run = udev[starts]
        if self.devices.size:
            pos_run = np.minimum(np.searchsorted(self.devices, dev_run), self.devices.size - 1)
            known_run = self.devices[pos_run] == dev_run
            max_run = np.where(known_run, self.max_serial[pos_run], -1)
        else:
            pos_run = np.zeros(dev_run.size, dtype=np.int64)
            known_run = np.zeros(dev_run.size, dtype=bool)
            max_run = np.full(dev_run.size, -1, dtype=np.int64)
        # A device not seen before has maximum -1, below every serial (serials are >= 0).
        seen = userial <= np.repeat(max_run, length)
        filled = False
        if self.holes.size:
            in_hole = _isin_sorted(uk, self.holes)
            filled = bool(in_hole.any())
        if filled:
            seen &= ~in_hole
        if repeats:
            dup_sorted = ~first
            dup_sorted[first] = seen
        else:
            dup_sorted = seen
        dup[order] = dup_sorted
        if filled:
            self.holes = self.holes[~_isin_sorted(self.holes, uk[in_hole])]
            up = ~seen & ~in_hole
        else:
            up = ~seen
        if up.all():
            self._extend(udev, userial, starts, known_run, max_run, pos_run)
        else:
            run_up = np.repeat(np.arange(starts.size), length)[up]
            lead_up = np.ones(run_up.size, dtype=bool)
            np.not_equal(run_up[1:], run_up[:-1], out=lead_up[1:])
            starts_up = np.flatnonzero(lead_up)
            r = run_up[starts_up]
            self._extend(udev[up], userial[up], starts_up, known_run[r], max_run[r], pos_run[r])
        return dup

    def _extend(self, dev, serial, starts, known, old_max, pos) -> None:
        """Raise per-device maxima to new serials (sorted by device, serial); record holes.
        ``starts`` holds each device's first row; ``known``, ``old_max`` (-1 if not known) and
        ``pos`` (its place in ``devices``) are per device, in that order."""
        if dev.size == 0:
            return
        prev = np.empty_like(serial)
        prev[1:] = serial[:-1]
        prev[starts] = old_max
        gap = serial - prev
        gap -= 1
        gap[gap > self.max_hole_run] = 0
        if gap.any():
            new_holes = (np.repeat(dev, gap) << 32) | (
                np.repeat(prev + 1, gap) + positions_in_runs(gap)
            )
            self.holes = np.sort(np.concatenate([self.holes, new_holes]))
        tail = np.append(starts[1:] - 1, dev.size - 1)  # last row per device
        self.max_serial[pos[known]] = serial[tail][known]
        if not known.all():
            devices = np.concatenate([self.devices, dev[tail][~known]])
            maxima = np.concatenate([self.max_serial, serial[tail][~known]])
            o = np.argsort(devices)
            self.devices, self.max_serial = devices[o], maxima[o]


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if sorted_set.size == 0 or values.size == 0:
        return np.zeros(values.size, dtype=bool)
    j = np.minimum(np.searchsorted(sorted_set, values), sorted_set.size - 1)
    return sorted_set[j] == values


def _serial_keys(device: np.ndarray, serial: np.ndarray) -> np.ndarray:
    if device.size and (device.min() < 0 or device.max() >= _DEVICE_LIMIT):
        raise ValueError(f"device ids must be in [0, 2**31), got {device.min()}..{device.max()}")
    if serial.size and (serial.min() < 0 or serial.max() >= _SERIAL_LIMIT):
        raise ValueError(
            f"device serials must be in [0, 2**32), got {serial.min()}..{serial.max()}"
        )
    return (device << 32) | serial


@dataclass
class _RetapTail:
    """Charged records that a later record of the same device could still repeat."""

    card: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    device: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def find(
        self, rec: UploadedRecords, charged: np.ndarray, lock_s: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``rec`` that repeat an earlier charge, and the tx id each one repeats.

        A repeat is a charge whose card's previous charge on the same device (by time, then
        arrival) is at most ``lock_s`` earlier. Both lie in a stretch of that device's charges
        no more than ``lock_s`` apart one after the other, so only the charges in such stretches
        are ordered by card (few: the rest are ordered by device and time, nearly the order they
        arrive in)."""
        idx = np.flatnonzero(charged)
        m = self.card.size
        n = m + idx.size
        if n == 0:
            return idx, idx
        dev = np.concatenate([self.device, rec.device[idx]])
        ts = np.concatenate([self.ts, rec.timestamp_s[idx]])
        order = _device_time_order(dev, ts)
        d, t = dev[order], ts[order]
        same_dev = d[1:] == d[:-1]
        close = same_dev & (t[1:] - t[:-1] <= lock_s)
        near = np.zeros(n, dtype=bool)
        near[1:] = close
        near[:-1] |= close
        sub = np.sort(order[near])  # positions in (tail, today's charges), ascending
        card_s = _take_after(self.card, rec.card, idx, sub)
        dev_s, ts_s = dev[sub], ts[sub]
        o = np.lexsort((ts_s, dev_s, card_s))  # by card, device, time, then position
        c, ds, tt = card_s[o], dev_s[o], ts_s[o]
        hit = np.flatnonzero((c[1:] == c[:-1]) & (ds[1:] == ds[:-1]) & (tt[1:] - tt[:-1] <= lock_s))
        hit += 1
        src = sub[o[hit]]
        ok = src >= m
        rows = idx[src[ok] - m]
        first_tx = _take_after(self.tx, rec.tx_id, idx, sub[o[hit - 1]][ok])
        # Keep what a later upload of the same device could still repeat: each device's charges
        # within ``lock_s`` of its last (the last row of its run in (device, time) order).
        last = np.ones(n, dtype=bool)
        last[:-1] = ~same_dev
        ends = np.flatnonzero(last)
        run = np.diff(ends, prepend=-1)
        keep = np.sort(order[t >= np.repeat(t[ends] - lock_s, run)])
        self.card = _take_after(self.card, rec.card, idx, keep)
        self.tx = _take_after(self.tx, rec.tx_id, idx, keep)
        self.device, self.ts = dev[keep], ts[keep]
        return rows, first_tx


def _take_after(
    kept: np.ndarray, column: np.ndarray, idx: np.ndarray, at: np.ndarray
) -> np.ndarray:
    """Values at positions ``at`` of ``kept`` followed by ``column[idx]`` (without building
    that concatenation: only a few positions are wanted)."""
    m = kept.size
    out = np.empty(at.size, dtype=np.int64)
    mine = at < m
    out[mine] = kept[at[mine]]
    out[~mine] = column[idx[at[~mine] - m]]
    return out


def _device_time_order(dev: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Indices that sort records by (device, time), ties in input order."""
    d0, t0 = int(dev.min()), int(ts.min())
    span = int(ts.max()) - t0 + 1
    if (int(dev.max()) - d0 + 1) * span < 1 << 63:
        return runs_stable_order((dev - d0) * span + (ts - t0))
    return np.lexsort((ts, dev))


class Clearer:
    """Clearing service for one clearing log: keeps the duplicate state and the hash chain."""

    def __init__(
        self,
        settings: ClearingSettings,
        participants: Participants,
        node: int = 0,
        lag_days: int | None = None,
    ) -> None:
        self.settings = settings
        self.participants = participants
        self.node = int(node)
        # The node's T+n with its members (ClearingNode.settlement_lag_days; default the
        # clearing's settlement_lag_days).
        self.lag_days = settings.settlement_lag_days if lag_days is None else int(lag_days)
        self.seen = SeenSerials()
        self.log: list[BatchRecord] = []
        self.head = GENESIS_HASH
        self._tail = _RetapTail()
        self._fee_bp = settings.fee_matrix_bp()
        self._next_batch = int(ids.batch_ids(self.node, 0, 1)[0])
        self._last_day: int | None = None

    def clear_batch(self, day: int, rec: UploadedRecords) -> ClearingResult:
        """Clear the records of one clearing day (all acquirers), update state, extend the log."""
        day = int(day)
        if self._last_day is not None and day < self._last_day:
            raise ValueError(f"clearing day {day} comes after day {self._last_day}")
        n_p = len(self.participants)
        n = len(rec)
        if n:
            for name in ("issuer", "acquirer"):
                codes = getattr(rec, name)
                if codes.min() < 0 or codes.max() >= n_p:
                    raise ValueError(f"records.{name} codes must be in [0, {n_p})")
            if rec.mode.max() > 1 or rec.medium_class.max() > 1:
                raise ValueError("records.mode and records.medium_class must be 0 or 1")
            if rec.list_fare_fen.min() < 0 or rec.amount_fen.min() < 0:
                raise ValueError("records amounts and list fares must be >= 0 fen")
        keys = _serial_keys(rec.device, rec.device_serial)
        self._last_day = day  # inputs are valid: from here on the state changes
        lag = self.lag_days
        dev_order = runs_stable_order(keys)
        reason = np.zeros(n, dtype=np.uint8)
        reason[rec.declined] = R_DECLINED
        reason[self.seen._check_and_add(keys, dev_order)] = R_DUPLICATE_UPLOAD
        charged = (reason == R_NONE) & (rec.amount_fen > 0)
        dd_rows, first_tx = self._tail.find(rec, charged, self.settings.retap_lock_s)
        reason[dd_rows] = R_DUPLICATE_DEDUCTION
        cleared = reason == R_NONE
        status = np.where(cleared, np.uint8(CLEARED), np.uint8(REJECTED))
        # Fees (and gross) only on cleared records that charged something: the rest are 0.
        charged[dd_rows] = False
        paid = np.flatnonzero(charged)
        fee_bp = self._fee_bp.ravel()[rec.mode[paid] * 2 + rec.medium_class[paid]]
        paid_fee = (rec.list_fare_fen[paid] * fee_bp + 5_000) // 10_000
        fee = np.zeros(n, dtype=np.int64)
        fee[paid] = paid_fee

        refunds = RefundOrders(
            day=day,
            source_tx_id=rec.tx_id[dd_rows],
            first_tx_id=first_tx,
            card=rec.card[dd_rows],
            issuer=rec.issuer[dd_rows],
            acquirer=rec.acquirer[dd_rows],
            medium_class=rec.medium_class[dd_rows],
            amount_fen=rec.amount_fen[dd_rows],
        )
        rejected = np.flatnonzero(reason)
        pairs, submitted = self._pair_totals(rec, rejected, paid, paid_fee)

        # One batch per acquirer, in acquirer order; their records hashed in (device, serial)
        # order. Counts per reason from the rejected records (few), sums from the pairs.
        acqs = np.flatnonzero(submitted)
        first_batch = self._next_batch
        batch_of = np.zeros(n_p, dtype=np.int64)
        batch_of[acqs] = np.arange(first_batch, first_batch + acqs.size, dtype=np.int64)
        batch_id = batch_of[rec.acquirer]
        reason_count = np.bincount(
            rec.acquirer[rejected].astype(np.int64) * len(REJECT_REASONS) + reason[rejected],
            minlength=n_p * len(REJECT_REASONS),
        ).reshape(n_p, len(REJECT_REASONS))
        reason_count[:, R_NONE] = submitted - reason_count.sum(axis=1)
        gross_of = np.zeros(n_p, dtype=np.int64)
        fee_of = np.zeros(n_p, dtype=np.int64)
        np.add.at(gross_of, pairs.acquirer, pairs.gross_fen)
        np.add.at(fee_of, pairs.acquirer, pairs.fee_fen)
        # The digest covers the records each batch cleared (what the files show per batch).
        hashed = dev_order[cleared[dev_order]]
        hashed_acq = rec.acquirer[hashed]
        if hashed_acq.size > 1 and (hashed_acq[1:] < hashed_acq[:-1]).any():
            acq_dtype = np.uint16 if n_p <= 1 << 16 else np.int32  # 16-bit keys: a radix sort
            by_acq = np.argsort(hashed_acq.astype(acq_dtype), kind="stable")
            hashed, hashed_acq = hashed[by_acq], hashed_acq[by_acq]
        digest_cols = _digest_columns(rec, hashed)
        lo = np.searchsorted(hashed_acq, acqs, "left").tolist()
        hi = np.searchsorted(hashed_acq, acqs, "right").tolist()
        batches = []
        for k, a in enumerate(acqs.tolist()):
            bid = self._next_batch
            self._next_batch += 1
            gross = int(gross_of[a])
            fees = int(fee_of[a])
            counts = reason_count[a]
            summary_fields = dict(
                batch_id=bid,
                node=self.participants.ids[self.node],
                transit=False,
                day=day,
                settle_day=day + lag,
                acquirer=self.participants.ids[a],
                submitted=int(submitted[a]),
                cleared=int(counts[R_NONE]),
                rejected=int(submitted[a] - counts[R_NONE]),
                rejected_duplicate_upload=int(counts[R_DUPLICATE_UPLOAD]),
                rejected_declined=int(counts[R_DECLINED]),
                rejected_duplicate_deduction=int(counts[R_DUPLICATE_DEDUCTION]),
                gross_fen=gross,
                fee_fen=fees,
                net_fen=gross - fees,
                refund_fen=int(refunds.amount_fen[refunds.acquirer == a].sum()),
                records_digest=_sha256_slices(digest_cols, lo[k], hi[k]),
            )
            probe = BatchRecord(**summary_fields, prev_hash=self.head, hash="")
            record = replace(probe, hash=chain_hash(self.head, probe.summary()))
            self.head = record.hash
            self.log.append(record)
            batches.append(record)

        return ClearingResult(
            day=day,
            settle_day=day + lag,
            tx_id=rec.tx_id,
            status=status,
            reason=reason,
            fee_fen=fee,
            batch_id=batch_id,
            record_settle_day=np.full(n, day + lag, dtype=np.int64),
            refunds=refunds,
            pairs=pairs,
            batches=tuple(batches),
            positions=settlement_positions(day + lag, pairs, n_p),
        )

    def log_transit(
        self,
        day: int,
        from_node: str,
        tx_id: np.ndarray,
        gross_fen: int,
        fee_fen: int,
    ) -> BatchRecord:
        """Log records cleared elsewhere that pass through this node on clearing day ``day``
        (one batch per sending node and day, in the same hash chain as the node's own batches).
        Their digest covers the sorted transaction ids."""
        tx = np.sort(np.asarray(tx_id, dtype=np.int64))
        n = int(tx.size)
        probe = BatchRecord(
            batch_id=self._next_batch,
            node=self.participants.ids[self.node],
            transit=True,
            day=int(day),
            settle_day=int(day) + self.lag_days,
            acquirer=from_node,
            submitted=n,
            cleared=n,
            rejected=0,
            rejected_duplicate_upload=0,
            rejected_declined=0,
            rejected_duplicate_deduction=0,
            gross_fen=int(gross_fen),
            fee_fen=int(fee_fen),
            net_fen=int(gross_fen) - int(fee_fen),
            refund_fen=0,
            records_digest=hashlib.sha256(tx.tobytes()).hexdigest(),
            prev_hash=self.head,
            hash="",
        )
        self._next_batch += 1
        record = replace(probe, hash=chain_hash(self.head, probe.summary()))
        self.head = record.hash
        self.log.append(record)
        return record

    def _pair_totals(
        self, rec: UploadedRecords, rejected: np.ndarray, paid: np.ndarray, paid_fee: np.ndarray
    ) -> tuple[PairTotals, np.ndarray]:
        """Totals per (issuer, acquirer) pair: records cleared (all but rows ``rejected``), and
        the gross and fees of the cleared records that charged something (rows ``paid``, fees
        ``paid_fee``); and the records submitted per acquirer code."""
        n_p = len(self.participants)
        pair = rec.issuer.astype(np.int64) * n_p + rec.acquirer
        gross = rec.amount_fen[paid]
        if n_p <= 1024:  # dense bins: no sort needed
            submitted_pair = np.bincount(pair, minlength=n_p * n_p)
            submitted = submitted_pair.reshape(n_p, n_p).sum(axis=0)  # [issuer, acquirer]
            count = submitted_pair - np.bincount(pair[rejected], minlength=n_p * n_p)
            g = np.zeros(n_p * n_p, dtype=np.int64)
            f = np.zeros(n_p * n_p, dtype=np.int64)
            np.add.at(g, pair[paid], gross)
            np.add.at(f, pair[paid], paid_fee)
            keys = np.flatnonzero(count)
            count, g, f = count[keys], g[keys], f[keys]
        else:
            submitted = np.bincount(rec.acquirer, minlength=n_p)
            cleared = np.ones(pair.size, dtype=bool)
            cleared[rejected] = False
            keys, inv = np.unique(pair[cleared], return_inverse=True)
            count = np.bincount(inv, minlength=keys.size)
            g = np.zeros(keys.size, dtype=np.int64)
            f = np.zeros(keys.size, dtype=np.int64)
            at = np.searchsorted(keys, pair[paid])  # paid records are cleared: their pair is in
            np.add.at(g, at, gross)
            np.add.at(f, at, paid_fee)
        issuer = (keys // n_p).astype(np.int32)
        acquirer = (keys % n_p).astype(np.int32)
        node = self.participants.parent[acquirer].astype(np.int32)
        pairs = PairTotals(issuer, acquirer, node, count.astype(np.int64), g, f, g - f)
        return pairs, submitted


def settlement_positions(settle_day: int, pairs: PairTotals, n_participants: int) -> Positions:
    """Net positions for one settlement date: issuers -gross, acquirers +net, nodes +fees."""
    return net_positions(
        settle_day,
        n_participants,
        [
            (pairs.issuer, -pairs.gross_fen),
            (pairs.acquirer, pairs.net_fen),
            (pairs.node, pairs.fee_fen),
        ],
    )


def net_positions(
    settle_day: int, n_participants: int, flows: Sequence[tuple[np.ndarray, np.ndarray]]
) -> Positions:
    """Positions of the participants that (participant codes, amounts) ``flows`` involve, each
    the sum of its amounts (> 0 receives)."""
    pos = np.zeros(n_participants, dtype=np.int64)
    involved = np.zeros(n_participants, dtype=bool)
    for codes, amounts in flows:
        np.add.at(pos, codes, amounts)
        involved[codes] = True
    who = np.flatnonzero(involved).astype(np.int32)
    return Positions(int(settle_day), who, pos[who])


def fold_tap_status(
    tap_tx_id: np.ndarray, tap_status: np.ndarray, rec_tx_id: np.ndarray, rec_status: np.ndarray
) -> np.ndarray:
    """New tap statuses after a clearing day: a cleared record clears its tap; a tap whose records
    were all rejected is rejected unless already cleared (duplicate uploads do not undo a clear)."""
    out = np.asarray(tap_status, dtype=np.uint8).copy()
    order = stable_order(tap_tx_id)
    tap_tx_id, rec_tx_id = np.asarray(tap_tx_id), np.asarray(rec_tx_id)
    if tap_tx_id.size == 0:
        if rec_tx_id.size:
            raise ValueError("records carry tx ids that are not in the tap table")
        return out
    found = np.minimum(np.searchsorted(tap_tx_id, rec_tx_id, sorter=order), tap_tx_id.size - 1)
    pos = order[found]
    if not np.array_equal(tap_tx_id[pos], rec_tx_id):
        raise ValueError("records carry tx ids that are not in the tap table")
    rej = pos[rec_status == REJECTED]
    out[rej[out[rej] != CLEARED]] = REJECTED
    out[pos[rec_status == CLEARED]] = CLEARED
    return out


# -- deposits ----------------------------------------------------------------------------------
def initial_deposits_fen(settings: ClearingSettings, participants: Participants) -> np.ndarray:
    """Settlement deposit per participant code (issuers only, under a node they pre-fund;
    others 0)."""
    dep = np.zeros(len(participants), dtype=np.int64)
    dep[participants.of_role("issuer")] = settings.settlement_deposit_fen
    nodes = {} if settings.network is None else settings.network.nodes
    for code in participants.of_role("issuer").tolist():
        node = nodes.get(participants.rows[code].parent)
        if node is not None and not node.prefunded:
            dep[code] = 0
    for pid, amount in settings.deposit_overrides_fen.items():
        if pid not in participants.ids:
            issuers = ", ".join(participants.ids[c] for c in participants.of_role("issuer"))
            raise ValueError(
                f"clearing.deposit_overrides_fen.{pid}: unknown participant {pid!r}; expected "
                f"one of the issuers: {issuers}"
            )
        code = participants.code(pid)
        if participants.rows[code].role != "issuer":
            raise ValueError(f"clearing.deposit_overrides_fen.{pid}: {pid} is not an issuer")
        dep[code] = amount
    return dep


def deposit_shortfalls(ledger: Ledger, participants: Participants) -> dict[str, tuple[int, int]]:
    """Issuers whose settlement deposit was overdrawn at the end of any day, by the postings'
    own dates (a settlement posted on a day before the money was in shows there): the largest
    shortfall in fen and the (first) day it stood at."""
    out = {}
    for code in participants.of_role("issuer"):
        pid = participants.ids[code]
        lowest, day = ledger.lowest_daily_balance(account("deposit", pid))
        if lowest < 0:
            out[pid] = (-lowest, day)
    return out


# -- posting helpers ---------------------------------------------------------------------------
#: Simple flows: memo -> (debit kind, credit kind). Each is posted as one row per participant.
FLOWS: dict[str, tuple[str, str]] = {
    MEMO_OPENING: ("bank", "float"),  # balances cards hold when they enter the run
    MEMO_TOPUP: ("bank", "float"),  # cardholder pays in, issuer owes stored value
    MEMO_CARD_FARE: ("float", "unsettled"),  # fare taken from a card at the tap
    MEMO_QR_FARE: ("bank", "unsettled"),  # QR channel collects the fare from the rider
    MEMO_CASH_REFUND: ("float", "bank"),  # card balance paid back in cash (card returned)
    MEMO_DUP_REFUND: ("unsettled", "float"),  # duplicate deduction credited back to the card
    MEMO_QR_DUP_REFUND: ("unsettled", "bank"),  # duplicate QR charge paid back to the rider
    # A charge the clearing did not reject (it settled), credited back to the card by its
    # issuer on the service desk's order (sim/incidents.py desk_refund).
    MEMO_DESK_REFUND: ("bank", "float"),
    MEMO_PURSE: ("float", "bank"),  # card purse pays a non-transit merchant via the issuer
    MEMO_DEPOSIT: ("deposit", "bank"),  # money placed into the settlement deposit
    MEMO_SSC_ENTRY: ("bank", "unsettled"),  # the holder's account pays a venue entry
}


def post_flow(
    ledger: Ledger,
    day: int,
    memo: str,
    participant: np.ndarray,
    amount_fen: np.ndarray,
    participants: Participants,
) -> None:
    """Post one of the simple ``FLOWS`` for many rows (per tap, top-up...), summed per
    participant code: one journal row per participant, not per input row."""
    codes = np.asarray(participant, dtype=np.int64)
    sums = np.zeros(len(participants), dtype=np.int64)
    np.add.at(sums, codes, _fen(amount_fen))
    _post_sums(ledger, day, memo, sums, participants)


def _fen(amount_fen: np.ndarray) -> np.ndarray:
    """Integer fen as int64 (TypeError for anything else)."""
    amounts = np.asarray(amount_fen)
    if amounts.dtype.kind not in "iu":
        raise TypeError(f"amounts must be integer fen, got dtype {amounts.dtype}")
    return amounts.astype(np.int64, copy=False)


def _post_sums(
    ledger: Ledger, day: int, memo: str, sums: np.ndarray, participants: Participants
) -> None:
    """One journal row of flow ``memo`` per participant code whose sum is not 0."""
    debit_kind, credit_kind = FLOWS[memo]
    who = np.flatnonzero(sums)
    ids = [participants.ids[c] for c in who.tolist()]
    ledger.post_many(
        day,
        [account(debit_kind, p) for p in ids],
        [account(credit_kind, p) for p in ids],
        sums[who],
        memo,
    )


def post_fares(
    ledger: Ledger,
    day: int,
    issuer: np.ndarray,
    medium_class: np.ndarray,
    amount_fen: np.ndarray,
    participants: Participants,
) -> None:
    """Fares charged at taps (the caller leaves out declined taps, or gives them 0 fen): card
    fares leave the float, QR fares arrive at the channel's bank; both wait in ``unsettled``
    until cleared.

    Only the issuer codes of taps that charged something matter (both ways of leaving a tap out
    agree), and those must be participant codes: ValueError otherwise, as the bins below would
    file one silently under another participant or medium."""
    amounts = _fen(amount_fen)
    n_p = len(participants)
    codes = np.asarray(issuer)
    qr = np.asarray(medium_class) != MC_CARD
    if codes.size and (codes.min() < 0 or codes.max() >= n_p):
        # Not every code is a participant's (never so today): keep the charged taps, whose
        # codes must be. Otherwise all taps are summed, 0 fen ones too: one pass, no copies.
        posted = np.flatnonzero(amounts)
        codes, qr, amounts = codes[posted], qr[posted], amounts[posted]
        bad = codes[(codes < 0) | (codes >= n_p)]
        if bad.size:
            raise ValueError(
                f"post_fares: issuer {int(bad[0])} of a charged tap is not a participant code "
                f"(expected codes in [0, {n_p}))"
            )
    # Card sums in the first n_p bins, QR sums in the next: one pass over the taps.
    sums = np.zeros(2 * n_p, dtype=np.int64)
    np.add.at(sums, qr * n_p + codes.astype(np.int64, copy=False), amounts)
    _post_sums(ledger, day, MEMO_CARD_FARE, sums[:n_p], participants)
    _post_sums(ledger, day, MEMO_QR_FARE, sums[n_p:], participants)


def post_refunds(
    ledger: Ledger, day: int, refunds: RefundOrders, participants: Participants
) -> None:
    """Duplicate-deduction refunds executed on ``day`` (card credited, or QR money returned);
    the desk's refunds of cleared charges come from the issuer's own money."""
    card = refunds.medium_class == MC_CARD
    r = refunds
    memo = MEMO_DESK_REFUND if r.by_desk else MEMO_DUP_REFUND
    post_flow(ledger, day, memo, r.issuer[card], r.amount_fen[card], participants)
    post_flow(ledger, day, MEMO_QR_DUP_REFUND, r.issuer[~card], r.amount_fen[~card], participants)


def post_clearing(
    ledger: Ledger,
    day: int,
    pairs: PairTotals,
    participants: Participants,
    fees=None,
) -> None:
    """A clearing day's results: issuers' unsettled fares become payables, acquirers earn
    revenue net of fees, clearing nodes earn fees (all against ``settle:`` positions).

    ``fees`` (``sim.clearing_network.NodeFees``) spreads each pair's fees over the nodes on its
    way; without it the acquirer's exchange (``pairs.node``) earns ``pairs.fee_fen``."""
    ids = participants.ids
    if fees is None:
        fee_pair = np.arange(len(pairs.issuer))
        fee_node, fee_amount = pairs.node, pairs.fee_fen
    else:
        fee_pair, fee_node, fee_amount = fees.pair, fees.node, fees.fee_fen
    paid = np.zeros(len(pairs.issuer), dtype=np.int64)
    np.add.at(paid, fee_pair, fee_amount)
    iss = [ids[c] for c in pairs.issuer.tolist()]
    acq = [ids[c] for c in pairs.acquirer.tolist()]
    node = [ids[c] for c in fee_node.tolist()]
    n = len(iss)
    debits = (
        [account("unsettled", p) for p in iss]
        + [account("settle", p) for p in acq]
        + [account("fees_paid", p) for p in acq]
        + [account("settle", p) for p in node]
    )
    credits = (
        [account("settle", p) for p in iss]
        + [account("revenue", p) for p in acq]
        + [account("settle", p) for p in acq]
        + [account("fees", p) for p in node]
    )
    amounts = np.concatenate([pairs.gross_fen, pairs.gross_fen, paid, fee_amount])
    memos = [MEMO_CLEARING] * (2 * n) + [MEMO_FEE] * (n + len(node))
    ledger.post_many(day, debits, credits, amounts, memos)


def post_settlement(
    ledger: Ledger,
    day: int,
    positions: Positions,
    participants: Participants,
    issuers_pay_from_deposit: bool = True,
) -> None:
    """Settle positions on ``day``, their settlement date or later (a settlement deferred for
    want of deposit money, sim/deposits.py): issuers pay from their deposit (other payers, and
    every payer without ``issuers_pay_from_deposit``, from their bank), receivers get bank
    money; ``settle:`` accounts return to zero."""
    if day < positions.settle_day:
        raise ValueError(f"positions settle on day {positions.settle_day}, not before (day {day})")
    debits, credits, amounts = [], [], []
    for code, pos in zip(
        positions.participant.tolist(), positions.position_fen.tolist(), strict=True
    ):
        pid = participants.ids[code]
        if pos > 0:
            debits.append(account("bank", pid))
            credits.append(account("settle", pid))
        else:
            from_deposit = issuers_pay_from_deposit and participants.role[code] == ISSUER
            payer = "deposit" if from_deposit else "bank"
            debits.append(account("settle", pid))
            credits.append(account(payer, pid))
        amounts.append(abs(pos))
    ledger.post_many(day, debits, credits, np.array(amounts, dtype=np.int64), MEMO_SETTLEMENT)


def check_card_balances(
    ledger: Ledger, day: int, issuer_id: str, balance_before_fen: int, balance_after_fen: int
) -> None:
    """Invariants for one issuer's stored-value cards on ``day``: the ledger's float flows explain
    the change of the card-balance sum (conservation), and the float equals that sum."""
    f = ledger.flows(account("float", issuer_id), day)
    check_conservation(
        day,
        issuer_id,
        balance_before_fen,
        balance_after_fen,
        topups_fen=-f.get(MEMO_TOPUP, 0),
        fares_fen=f.get(MEMO_CARD_FARE, 0),
        purse_spend_fen=f.get(MEMO_PURSE, 0),
        cash_refunds_fen=f.get(MEMO_CASH_REFUND, 0),
        duplicate_refunds_fen=-f.get(MEMO_DUP_REFUND, 0),
        opening_fen=-f.get(MEMO_OPENING, 0),
        desk_refunds_fen=-f.get(MEMO_DESK_REFUND, 0),
    )
    owed = -ledger.balance(account("float", issuer_id), through_day=day)
    if owed != int(balance_after_fen):
        raise InvariantViolation(
            "float_equals_card_balances",
            int(balance_after_fen) - owed,
            f"day {day}, issuer {issuer_id}",
            f"cards hold {int(balance_after_fen)} fen, ledger float is {owed} fen",
        )
