"""Output table contracts: columns, Arrow types, name tables, row invariants, data dictionary.

Every table a run writes is declared here once. ``sim/output.py`` turns the engine's numpy columns
into Arrow tables with these schemas, and ``docs/schema.md`` embeds the data dictionary rendered by
:func:`data_dictionary_markdown` (a test keeps the two in step).

Field names follow TIDES ``fare_transactions`` where one exists (TIDES-transit/TIDES,
``spec/fare_transactions.schema.json``) and carry JT/T 978-style card and terminal fields
(DOMAIN.md §3). Money is integer fen. Every table is partitioned by ``service_date``, which is
therefore kept out of the Parquet files and restored from the directory name.

Run ``python -m sim.schema docs/schema.md`` to refresh the generated part of the data dictionary.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sim import clearing, codes, deposits
from sim.social_security import VENUE_KINDS

SCHEMA_VERSION = 1
PARTITION_COLUMN = "service_date"

# --- name tables -----------------------------------------------------------------------------
# Dictionary columns store integer codes; these tuples give the names. Like sim/codes.py, their
# order is part of the data contract: append, never reorder.

# fmt: off
#: TIDES fare_transactions.fare_action enum, verbatim.
TIDES_FARE_ACTIONS: tuple[str, ...] = (
    "Unknown action type", "Purchase", "Enter", "Exit", "Transfer entrance", "Transfer exit",
    "Add", "Activate", "Adjust", "Other",
)
#: TIDES fare_transactions.fare_media_id enum, verbatim (the kind of medium, not the card).
TIDES_FARE_MEDIA: tuple[str, ...] = (
    "Cash or coins", "Smart card or ticket", "Magnetic-stripe card or ticket", "Bank card",
    "Mobile NFC", "Optical scan",
    "Button pressed by driver or operator to indicate a boarding or alighting passenger.",
    "Other type",
)
FARE_PRODUCTS: tuple[str, ...] = ("stored_value", "qr_account", "period_pass")
CURRENCIES: tuple[str, ...] = ("CNY",)
SALE_KINDS: tuple[str, ...] = ("new_issue", "replacement", "renewal")
# fmt: on

#: Name tables known without the caller's help.
BUILTIN_NAME_TABLES: dict[str, tuple[str, ...]] = {
    "card_type": codes.CARD_TYPES,
    "media": codes.MEDIA,
    "mode": codes.MODES,
    "tap_kind": codes.TAP_KINDS,
    "tx_status": codes.TX_STATUS,
    "fallback": codes.FALLBACKS,
    "venue_kind": VENUE_KINDS,
    "incomplete_processor": codes.INCOMPLETE_PROCESSORS[1:],
    "deposit_event": deposits.EVENT_KINDS,
    "day_type": codes.DAY_TYPES,
    "fare_action": TIDES_FARE_ACTIONS,
    "fare_media": TIDES_FARE_MEDIA,
    "fare_product": FARE_PRODUCTS,
    "currency": CURRENCIES,
    "sale_kind": SALE_KINDS,
    "reject_reason": clearing.REJECT_REASONS,
    "role": clearing.ROLES,
    "refund_kind": clearing.REFUND_KINDS,
}
#: Name tables the engine supplies (RunOutput(names=...)): scenario data, or owned by agents/
#: modules that sim/ must not import.
CALLER_NAME_TABLES: dict[str, str] = {
    "region": "the scenario's region names, in region-code order",
    "incident": "the scenario's incident ids, in incidents order",
    "route": "line ids (GTFS route_id) in line-code order",
    "city": "JT/T city codes (e.g. '2260') of interoperable cities, in city-code order",
    "institution": "sim.clearing.Participants.ids (issuers, acquirers, clearing nodes)",
    "topup_channel": "sim.day.TOPUP_CHANNELS",
    "outlet_service": "agents.outlet.SERVICE_KINDS",
    "visit_outcome": "agents.outlet.OUTCOMES",
}

# --- column and table declarations -----------------------------------------------------------

Derive = Callable[[Mapping[str, np.ndarray], int], np.ndarray]
RowCheck = Callable[[pa.Table], pa.ChunkedArray]

I8, I16, I32, I64 = pa.int8(), pa.int16(), pa.int32(), pa.int64()
F64, BOOL, STR = pa.float64(), pa.bool_(), pa.string()
TS, DATE = pa.timestamp("s"), pa.date32()
DICT8 = pa.dictionary(pa.int8(), pa.string())
DICT16 = pa.dictionary(pa.int16(), pa.string())


@dataclass(frozen=True)
class Col:
    """One column of an output table.

    ``names`` names the name table of a dictionary column; ``hex_width`` renders an integer input
    as that many upper-case hex digits; ``mask`` names the identity-masking rule; ``derive``
    fills the column when the caller leaves it out; ``encoding`` picks the Parquet encoding
    (``dict``, ``delta`` for high-cardinality integers, ``plain``).
    """

    name: str
    type: pa.DataType
    description: str
    unit: str = ""
    tides: str = ""
    jtt978: str = ""
    nullable: bool = False
    names: str | None = None
    hex_width: int = 0
    mask: str | None = None
    derive: Derive | None = None
    encoding: str = "dict"

    def field(self) -> pa.Field:
        """The Arrow field, with the documentation in its metadata."""
        meta = {"description": self.description}
        for key in ("unit", "tides", "jtt978", "names", "mask"):
            value = getattr(self, key)
            if value:
                meta[key] = value
        return pa.field(self.name, self.type, nullable=self.nullable, metadata=meta)


@dataclass(frozen=True)
class Check:
    """A row invariant: ``ok(table)`` is true (or null, meaning not applicable) on good rows;
    ``reads``: the columns it reads, and only those (a table without one of them cannot be
    checked by it; ``TableSpec.without`` keeps the others). tests/test_schema_check_reads.py
    evaluates every check on a table of its ``reads`` alone."""

    description: str
    ok: RowCheck
    reads: tuple[str, ...]


@dataclass(frozen=True)
class TableSpec:
    """One output table: its columns (without the partition column) and row invariants."""

    name: str
    description: str
    columns: tuple[Col, ...]
    checks: tuple[Check, ...] = ()

    @property
    def file_schema(self) -> pa.Schema:
        """Schema of the Parquet files (partition column excluded)."""
        meta = {"cardtwin.table": self.name, "cardtwin.schema_version": str(SCHEMA_VERSION)}
        return pa.schema([c.field() for c in self.columns], metadata=meta)

    @property
    def schema(self) -> pa.Schema:
        """Schema of the whole dataset: ``service_date`` first, then the file columns."""
        return self.file_schema.insert(0, _SERVICE_DATE.field())

    def col(self, name: str) -> Col:
        """The column called ``name`` (KeyError lists the valid names)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}; columns: {self.column_names}")

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of the file columns in order."""
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        """Columns the caller must pass (the rest are derived when absent)."""
        return tuple(c.name for c in self.columns if c.derive is None)

    def without(self, names: Sequence[str]) -> TableSpec:
        """This table without the columns ``names``, and without the checks that read them."""
        unknown = set(names) - set(self.column_names)
        if unknown:
            raise KeyError(f"{self.name} has no column(s) {sorted(unknown)}")
        return dataclasses.replace(
            self,
            columns=tuple(c for c in self.columns if c.name not in names),
            checks=tuple(c for c in self.checks if not set(c.reads) & set(names)),
        )


_SERVICE_DATE = Col(
    "service_date",
    DATE,
    "Operating day of the record; the Hive partition key (service_date=YYYY-MM-DD).",
    unit="date (local)",
    tides="service_date",
)

# --- derivations (defaults computed from other columns) --------------------------------------


def _const(code: int, dtype: type = np.int8) -> Derive:
    return lambda cols, n: np.full(n, code, dtype=dtype)


def _media_lookup(rule: Callable[[str], int]) -> np.ndarray:
    return np.array([rule(m) for m in codes.MEDIA], dtype=np.int8)


def _tides_medium(media_name: str) -> int:
    if media_name == "physical_card":
        return TIDES_FARE_MEDIA.index("Smart card or ticket")
    if media_name.startswith("nfc_"):
        return TIDES_FARE_MEDIA.index("Mobile NFC")
    if media_name.startswith("qr_"):
        return TIDES_FARE_MEDIA.index("Optical scan")
    return TIDES_FARE_MEDIA.index("Other type")


#: TIDES fare_media_id code for each sim.codes.MEDIA code.
MEDIA_TO_TIDES_FARE_MEDIA = _media_lookup(_tides_medium)
#: fare_product code for each media code: stored value on the card, or the QR channel's account.
MEDIA_TO_FARE_PRODUCT = _media_lookup(
    lambda m: 0 if codes.code_of(codes.MEDIA, m) in codes.STORED_VALUE_MEDIA else 1
)


def _derive_fare_action(cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    # Boardings (single tap or entry) are TIDES "Enter", or "Transfer entrance" when the fare
    # engine counted them as a transfer; exits are "Exit". The fare itself is in amount_fen.
    kind = np.asarray(cols["trip_record_type"])
    transfer = np.asarray(cols["is_transfer"], dtype=bool)
    out = np.full(n, TIDES_FARE_ACTIONS.index("Enter"), dtype=np.int8)
    out[transfer] = TIDES_FARE_ACTIONS.index("Transfer entrance")
    out[kind == codes.TAP_EXIT] = TIDES_FARE_ACTIONS.index("Exit")
    return out


def _derive_tx_type(cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    # JT/T 978: entry/exit pairs are composite purchases (09) so the exit can settle the fare.
    kind = np.asarray(cols["trip_record_type"])
    return np.where(kind == codes.TAP_SINGLE, 6, 9).astype(np.int8)


def _derive_discount(cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    parts = (np.asarray(cols[k], dtype=np.int64) for k in ("concession_fen", "transfer_fen"))
    return sum(parts, np.asarray(cols["cap_fen"], dtype=np.int64))


def _by_media(table: np.ndarray) -> Derive:
    return lambda cols, n: table[np.asarray(cols["media"])]


# --- row checks (pyarrow.compute; null means "not applicable") -------------------------------


def _codes(t: pa.Table, name: str) -> pa.ChunkedArray:
    return pa.chunked_array([c.indices for c in t[name].chunks], type=t[name].type.index_type)


def _sum(t: pa.Table, *names: str) -> pa.ChunkedArray:
    total = t[names[0]]
    for name in names[1:]:
        total = pc.add_checked(total, t[name])
    return total


def _eq(left: str, *right: str, minus: Sequence[str] = ()) -> Check:
    def ok(tab: pa.Table) -> pa.ChunkedArray:
        rhs = _sum(tab, *right)
        for name in minus:
            rhs = pc.subtract_checked(rhs, tab[name])
        return pc.equal(tab[left], rhs)

    text = " + ".join(right) + "".join(f" - {m}" for m in minus)
    return Check(f"{left} = {text}", ok, reads=(left, *right, *minus))


def _ge(left: str, right: str | int) -> Check:
    def ok(tab: pa.Table) -> pa.ChunkedArray:
        return pc.greater_equal(tab[left], tab[right] if isinstance(right, str) else right)

    reads = (left, right) if isinstance(right, str) else (left,)
    return Check(f"{left} >= {right}", ok, reads=reads)


def _rejected_has_reason(t: pa.Table) -> pa.ChunkedArray:
    rejected = pc.equal(_codes(t, "status"), codes.REJECTED)
    return pc.equal(rejected, pc.not_equal(_codes(t, "reject_reason"), clearing.R_NONE))


def _sums_to_zero(name: str) -> Check:
    def ok(t: pa.Table) -> pa.ChunkedArray:
        total = pc.sum(t[name]).as_py() or 0
        return pa.chunked_array([np.full(t.num_rows, total == 0)])

    return Check(f"sum({name}) over the written rows = 0", ok, reads=(name,))


def _differ(left: str, right: str) -> Check:
    return Check(
        f"{left} != {right}", lambda t: pc.not_equal(t[left], t[right]), reads=(left, right)
    )


def _null(cols: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    return np.full(n, -1, dtype=np.int64)


def _big_topup_registered(t: pa.Table) -> pa.ChunkedArray:
    # DOMAIN.md §2: a single top-up of 1000 yuan or more needs the buyer's ID registered.
    return pc.or_(pc.less(t["amount_fen"], 100_000), t["id_registered"])


# --- the tables ------------------------------------------------------------------------------


def _c(name: str, type_: pa.DataType, description: str, **kw: object) -> Col:
    return Col(name, type_, description, **kw)  # type: ignore[arg-type]


def _money(name: str, description: str, **kw: object) -> Col:
    return _c(name, kw.pop("type_", I32), description, unit="fen", **kw)  # type: ignore[arg-type]


def _id(name: str, description: str, **kw: object) -> Col:
    kw.setdefault("encoding", "delta")
    return _c(name, I64, description, **kw)


def _ts(name: str, description: str, **kw: object) -> Col:
    return _c(name, TS, description, unit="local time, s", encoding="delta", **kw)


def _region() -> Col:
    return _c("region", DICT8, "Region (district/city) where it happened.", names="region")


def _card_type() -> Col:
    return _c(
        "rider_category",
        DICT8,
        "Card type (sim.codes.CARD_TYPES).",
        names="card_type",
        tides="rider_category",
    )


def _media() -> Col:
    return _c("media", DICT8, "Fare medium (sim.codes.MEDIA).", names="media")


def _token(nullable: bool = False) -> Col:
    return _id(
        "token_id",
        "Pseudonymous card/account token; join key across tables within a service date. By "
        "default it rotates every day, so trajectories cannot be followed across days "
        "(DOMAIN.md §5); with --unmasked it is the stable card id. Not the printed card number "
        "(see card_sales.card_no).",
        tides="token_id (string in TIDES)",
        nullable=nullable,
    )


def _incident(what: str) -> Col:
    return _c(
        "incident_id",
        DICT16,
        f"Incident (scenario incidents.*.id) that touched the record: {what}; null if none.",
        names="incident",
        nullable=True,
    )


def _institution(name: str, description: str, **kw: object) -> Col:
    return _c(name, DICT16, description, names="institution", **kw)  # type: ignore[arg-type]


# fmt: off
# The tables read best one column per line with aligned continuation lines.
TRANSACTIONS = TableSpec(
    "transactions",
    "One row per tap record (validator transaction), as uploaded to the acquirer.",
    (
        _id("transaction_id", "Unique id of the tap record in the run.", tides="transaction_id"),
        _ts("event_timestamp", "Time of the tap on the validator clock.", tides="event_timestamp",
            jtt978="transaction time"),
        _money("amount_fen", "Fare deducted (>= 0) = list_fare_fen - discount_fen.",
               tides="amount (yuan) = amount_fen / 100", jtt978="transaction amount"),
        _c("currency_type", DICT8, "ISO 4217 currency; always CNY.", names="currency",
           tides="currency_type", derive=_const(0)),
        _c("fare_action", DICT8, "TIDES action: Enter / Transfer entrance for boardings and "
           "entries, Exit for exits.", names="fare_action", tides="fare_action",
           derive=_derive_fare_action),
        _money("list_fare_fen", "Undiscounted fare for the ride.", jtt978="list fare (应收)"),
        _money("discount_fen", "Total reduction = concession_fen + transfer_fen + cap_fen.",
               derive=_derive_discount),
        _money("concession_fen", "Reduction from the card type's concession (the whole "
               "fare on a line announced free: a free_rides incident_id)."),
        _money("transfer_fen", "Reduction from the transfer rule."),
        _money("cap_fen", "Reduction from fare capping."),
        _c("fare_capped", BOOL, "A fare cap reduced this fare.", tides="fare_capped",
           encoding="plain"),
        _c("fare_product", DICT8, "Fare product: stored_value (card purse) or qr_account.",
           names="fare_product", tides="fare_product", derive=_by_media(MEDIA_TO_FARE_PRODUCT)),
        _card_type(),
        _media(),
        _c("fare_media_id", DICT8, "TIDES medium kind derived from media.", names="fare_media",
           tides="fare_media_id", derive=_by_media(MEDIA_TO_TIDES_FARE_MEDIA)),
        _token(),
        _money("balance_before_fen", "Card purse before the tap; null for QR media, other "
               "issuers' cards, declined taps, and in a masked export.",
               nullable=True, encoding="delta", jtt978="balance before (4-byte fen)"),
        _money("balance_after_fen", "Card purse after the tap; null as balance_before_fen.",
               nullable=True, encoding="delta", tides="balance (yuan) = balance_after_fen / 100",
               jtt978="balance"),
        _c("card_counter", I32, "Card transaction counter (0-65535, wraps); null as "
           "balance_before_fen.",
           nullable=True, encoding="delta", jtt978="2-byte card transaction counter"),
        _c("transaction_type_code", I8, "6 = purchase (06), 9 = composite purchase (09).",
           jtt978="transaction type", derive=_derive_tx_type),
        _c("trip_record_type", DICT8, "single, entry or exit (sim.codes.TAP_KINDS).",
           names="tap_kind", jtt978="trip record type"),
        _c("mode", DICT8, "Transit mode (sim.codes.MODES).", names="mode",
           jtt978="trip subtype (bus/metro)"),
        _c("route_id", DICT16, "Route (line) of the device.", names="route",
           jtt978="line", tides="(trip_id_performed → route)"),
        _id("stop_id", "Boarding/alighting stop or station.", tides="stop_id (string in TIDES)",
            jtt978="station", encoding="dict"),
        _id("vehicle_id", "Vehicle; null for station gates.", nullable=True, encoding="dict",
            tides="vehicle_id"),
        _id("device_id", "Validator.", tides="device_id", encoding="dict"),
        _id("uploader_id", "Device that uploaded the record: the bus validator itself, or the "
            "metro station computer for gates; joins device_uploads.device_id.", encoding="dict"),
        _c("terminal_id", STR, "PSAM terminal id, 12 hex digits (6 bytes).", hex_width=12,
           jtt978="6-byte terminal id"),
        _id("device_serial", "Validator's offline transaction serial (dedup key with "
            "device_id).", jtt978="PSAM/device sequence"),
        _c("tac", STR, "TAC-like check value, 8 hex digits (4 bytes).", hex_width=8,
           encoding="plain", jtt978="TAC/MAC"),
        _c("city_code", DICT16, "JT/T city code where the tap happened.", names="city",
           jtt978="city code"),
        _institution("issuer_id", "Card issuer.", jtt978="issuer code"),
        _institution("acquirer_id", "Acquirer operating the validator.", jtt978="acquirer id"),
        _region(),
        _c("is_transfer", BOOL, "The fare engine treated this tap as a transfer.",
           encoding="plain", jtt978="transfer count > 0"),
        _c("incomplete_trip", BOOL, "Part of an incomplete trip (entry without exit or the "
           "reverse).", encoding="plain"),
        _c("incomplete_processed_by", DICT8, "Who completed the incomplete trip (DOMAIN.md §2): "
           "place (where it happened: at home and for visitors here at once; away, the city's "
           "terminals at the card's next tap there) or issuer (the card left without tapping "
           "there again, or that city leaves visitors' trips to their issuer); null if the "
           "trip is complete.", names="incomplete_processor", nullable=True),
        _id("upload_batch_id", "device_uploads batch that carried the record; null if not "
            "uploaded yet.", nullable=True, encoding="dict", jtt978="batch no"),
        _ts("uploaded_at", "When the record reached the acquirer; null if not yet.",
            nullable=True),
        _c("status", DICT8, "pending, cleared or rejected (sim.codes.TX_STATUS).",
           names="tx_status", jtt978="reconciled flag"),
        _c("reject_reason", DICT8, "Why clearing rejected it; 'none' unless rejected "
           "(sim.clearing.REJECT_REASONS).", names="reject_reason", jtt978="error code"),
        _id("clearing_batch_id", "clearing_batches batch; null while pending.", nullable=True,
            encoding="dict"),
        _c("settle_date", DATE, "Settlement date (T+1); null while pending.", nullable=True,
           unit="date", jtt978="settle date"),
        _incident("tap moved to another gate, line or medium, accepted offline, made free, "
                  "priced by a changed fare, held "
                  "by an uplink outage or delayed by a clearing-node outage"),
    ),
    (
        _eq("discount_fen", "concession_fen", "transfer_fen", "cap_fen"),
        _eq("amount_fen", "list_fare_fen", minus=("discount_fen",)),
        _ge("amount_fen", 0),
        _ge("concession_fen", 0),
        _ge("transfer_fen", 0),
        _ge("cap_fen", 0),
        _eq("balance_after_fen", "balance_before_fen", minus=("amount_fen",)),
        _ge("balance_after_fen", 0),
        Check(
            "status = rejected <=> reject_reason != 'none'",
            _rejected_has_reason,
            reads=("status", "reject_reason"),
        ),
    ),
)

TOPUPS = TableSpec(
    "topups",
    "One row per load of value onto a stored-value card (TIDES fare_action Add).",
    (
        _id("topup_id", "Unique id of the top-up."),
        _ts("event_timestamp", "Time of the load.", tides="event_timestamp"),
        _token(),
        _card_type(),
        _media(),
        _c("channel", DICT8, "Where the money came in (sim.day.TOPUP_CHANNELS).",
           names="topup_channel"),
        _id("outlet_id", "Service outlet; null for online top-ups.", nullable=True,
           encoding="dict"),
        _region(),
        _institution("issuer_id", "Card issuer.", jtt978="issuer code"),
        _money("amount_fen", "Value loaded (> 0).", tides="amount", jtt978="amount"),
        _money("balance_before_fen", "Card purse before; null in a masked export.",
               nullable=True, jtt978="balance before"),
        _money("balance_after_fen", "Card purse after; null in a masked export.",
               nullable=True, tides="balance", jtt978="balance"),
        _c("card_counter", I32, "Card online transaction counter; null in a masked export.",
           nullable=True, encoding="delta", jtt978="card transaction counter"),
        _c("transaction_type_code", I8, "2 = load (02).", jtt978="transaction type",
           derive=_const(2)),
        _c("id_registered", BOOL, "Buyer's ID recorded (required for >= 100000 fen).",
           encoding="plain"),
        _c("tac", STR, "MAC-like check value, 8 hex digits.", hex_width=8, encoding="plain",
           jtt978="MAC2"),
    ),
    (
        _ge("amount_fen", 1),
        _eq("balance_after_fen", "balance_before_fen", "amount_fen"),
        Check(
            "amount_fen < 100000 or id_registered",
            _big_topup_registered,
            reads=("amount_fen", "id_registered"),
        ),
    ),
)

CARD_SALES = TableSpec(
    "card_sales",
    "One row per card issued, replaced or renewed. Identity strings are synthetic and masked "
    "on export unless the run asks for raw identities.",
    (
        _id("sale_id", "Unique id of the sale."),
        _ts("event_timestamp", "Time of the sale."),
        _token(),
        _c("card_no", STR, "Printed card number, masked 6+4.", mask="card_no", encoding="plain",
           jtt978="card application serial"),
        _c("holder_name", STR, "Holder name, masked 张*; null for anonymous cards.",
           nullable=True, mask="name", encoding="plain"),
        _c("id_number", STR, "Resident ID number, masked first 6 + last 4; null if anonymous.",
           nullable=True, mask="id_number", encoding="plain"),
        _c("phone", STR, "Mobile number, masked 3+****+4; null if none.", nullable=True,
           mask="phone", encoding="plain"),
        _c("synthetic", BOOL, "Always true: every person in a run is synthetic.",
           encoding="plain", derive=_const(1, np.bool_)),
        _card_type(),
        _media(),
        _c("sale_kind", DICT8, "new_issue, replacement or renewal.", names="sale_kind"),
        _id("outlet_id", "Service outlet; null for online sales.", nullable=True,
            encoding="dict"),
        _region(),
        _institution("issuer_id", "Card issuer.", jtt978="issuer code"),
        _money("deposit_fen", "Refundable card deposit taken."),
        _money("card_fee_fen", "Non-refundable card fee taken."),
        _money("initial_balance_fen", "Value loaded at sale."),
    ),
    (_ge("deposit_fen", 0), _ge("card_fee_fen", 0), _ge("initial_balance_fen", 0)),
)

OUTLET_VISITS = TableSpec(
    "outlet_visits",
    "One row per citizen visit to a service outlet (agents.outlet.VisitResults).",
    (
        _id("visit_id", "Unique id of the visit."),
        _id("outlet_id", "Service outlet.", encoding="dict"),
        _c("service_kind", DICT8, "Service asked for (agents.outlet.SERVICE_KINDS).",
           names="outlet_service"),
        _ts("arrived_at", "Arrival time."),
        _ts("service_started_at", "Start of service; null if not served.", nullable=True),
        _ts("service_ended_at", "End of service; null if not served.", nullable=True),
        _c("wait_s", I32, "Arrival to service start (or to leaving, if turned away at closing).",
           unit="s", nullable=True),
        _c("service_s", I32, "Service duration; null if not served.", unit="s", nullable=True),
        _id("counter_id", "Counter index (0-based); null if not served.", nullable=True,
            encoding="dict"),
        _c("outcome", DICT8, "agents.outlet.OUTCOMES (served, left_closed).",
           names="visit_outcome"),
        _incident("visit to a closed outlet, or one of a renewal wave"),
    ),
    (_ge("service_started_at", "arrived_at"), _ge("service_ended_at", "service_started_at"),
     _ge("wait_s", 0), _ge("service_s", 0)),
)

DEVICE_UPLOADS = TableSpec(
    "device_uploads",
    "One row per batch a validator sent, resends included (agents.validator.UploadLog).",
    (
        _id("device_id", "Validator (bus reader or metro station computer).", encoding="dict",
            tides="device_id"),
        _id("upload_batch_id", "The device's upload sequence number; (device_id, "
            "upload_batch_id) is unique, and a resend repeats it.", jtt978="batch no"),
        _ts("uploaded_at", "When the acquirer received the batch."),
        _c("n_records", I32, "Tap records in the batch.", unit="count"),
        _ts("first_tap_at", "Earliest tap in the batch."),
        _ts("last_tap_at", "Latest tap in the batch."),
        _c("resend", BOOL, "A fault re-sent a batch already delivered.", encoding="plain"),
        _c("mode", DICT8, "Transit mode of the device.", names="mode"),
        _region(),
    ),
    (_ge("n_records", 0), _ge("last_tap_at", "first_tap_at"),
     _ge("uploaded_at", "last_tap_at")),
)

CLEARING_BATCHES = TableSpec(
    "clearing_batches",
    "The clearing nodes' hash-chained logs: at the acquirer's exchange one batch per acquirer "
    "per clearing day; at every further node on the way to the issuers' exchanges one transit "
    "batch per sending node and day (sim.clearing.BatchRecord; E-Commerce Law art. 53). Each "
    "node's batches, in batch id order, form one chain.",
    (
        _id("clearing_batch_id", "Unique id of the batch: node code * 2^42 + sequence "
            "(sim.ids)."),
        _institution("node_id", "Clearing node whose log holds the batch."),
        _c("transit", BOOL, "A transit batch: records cleared by another node, passed on "
           "through this one (acquirer_id is then the sending node).", encoding="plain"),
        _c("settle_date", DATE, "Settlement date (T + settlement lag).", unit="date"),
        _institution("acquirer_id", "Acquirer whose records the batch holds; for a transit "
                     "batch, the node that passed the records on."),
        _c("submitted", I32, "Records submitted.", unit="count"),
        _c("cleared", I32, "Records cleared.", unit="count"),
        _c("rejected", I32, "Records rejected.", unit="count"),
        _c("rejected_duplicate_upload", I32, "Rejected: (device, serial) seen before.",
           unit="count"),
        _c("rejected_declined", I32, "Rejected: declined for insufficient balance.",
           unit="count"),
        _c("rejected_duplicate_deduction", I32, "Rejected: same card charged again within "
           "the re-tap lock (refund ordered).", unit="count"),
        _money("gross_fen", "Sum of cleared amount_fen.", type_=I64),
        _money("fee_fen", "Fees this node takes on the batch (the acquirer's exchange: mode and "
               "medium rates; a transit node: its transit fee).", type_=I64),
        _money("net_fen", "gross_fen - fee_fen, passed on by this node.", type_=I64),
        _money("refund_fen", "Refunds ordered for duplicate deductions.", type_=I64),
        _c("records_digest", STR, "SHA-256 over the batch's records (64 hex).",
           encoding="plain"),
        _c("prev_hash", STR, "Hash of the previous batch in the log (64 hex; zeros first).",
           encoding="plain"),
        _c("batch_hash", STR, "SHA-256 over prev_hash and this batch (BatchRecord.hash).",
           encoding="plain"),
    ),
    (_eq("net_fen", "gross_fen", minus=("fee_fen",)),
     _eq("submitted", "cleared", "rejected"),
     _eq("rejected", "rejected_duplicate_upload", "rejected_declined",
         "rejected_duplicate_deduction")),
)

REFUNDS = TableSpec(
    "refunds",
    "One row per refund ordered (sim.clearing.RefundOrders): a duplicate deduction the "
    "clearing rejected (the fare was taken twice) or a cleared card charge the service desk had "
    "refunded (a desk_refund incident). service_date is the clearing day that ordered it. The "
    "money goes back on pay_date: credited to the card (an issuer's card the run simulates) or "
    "paid back the way it came (QR codes, other issuers' cards). A charge is refunded once at "
    "most, and wholly.",
    (
        _id("transaction_id", "The charge refunded (joins transactions.transaction_id)."),
        _c("repeated_transaction_id", I64, "For a duplicate deduction, the earlier charge of "
           "the same card on the same device that it repeated; null for the desk's.",
           nullable=True, encoding="delta"),
        _c("refund_kind", DICT8, "duplicate_deduction (ordered by the clearing) or "
           "service_desk.", names="refund_kind"),
        _institution("issuer_id", "Issuer of the card or code charged: the refund is booked "
                     "on its accounts."),
        _institution("acquirer_id", "Acquirer of the charge."),
        _money("amount_fen", "Paid back: the whole charge.", type_=I64),
        _c("pay_date", DATE, "When the money goes back (the clearing's T+n, the next day at "
           "the earliest); after the period's last day: still owed when the run ended "
           "(run_meta.json totals.refunds_outstanding_fen).", unit="date"),
    ),
    (_ge("amount_fen", 1),),
)

SETTLEMENTS = TableSpec(
    "settlements",
    "Every clearing node's book on a settlement date (sim.clearing_network.Books): its "
    "positions against its members (issuers, acquirers), its neighbouring nodes (links) and "
    "itself (participant_id = node_id: its fees, and where levels settle on different T+n the "
    "money it advances or holds until the other date); each node's book sums to zero on every "
    "date. service_date is the settlement date; a date paid in several settlements (levels' "
    "dates meeting, or one that waited for deposit money) has one part file each.",
    (
        _institution("node_id", "Clearing node whose book the row is in."),
        _institution("participant_id", "Counterparty: a member, a neighbouring node, or the "
                     "node itself."),
        _c("role", DICT8, "issuer, acquirer or clearing_node (sim.clearing.ROLES).",
           names="role"),
        _money("net_position_fen", "Net position settled: > 0 receives, < 0 pays.", type_=I64),
        _money("deposit_balance_fen", "Issuer's settlement deposit after settlement; null for "
               "others.", type_=I64, nullable=True, derive=_null),
    ),
    (_sums_to_zero("net_position_fen"),),
)

LEDGER_ENTRIES = TableSpec(
    "ledger_entries",
    "The double-entry journal (sim.ledger.Ledger.journal_columns): one row per entry, debit "
    "and credit account names '<kind>:<participant>'.",
    (
        _id("entry_id", "Journal entry id."),
        _c("debit", STR, "Account debited, e.g. 'float:NTCARD' (sim.ledger.ACCOUNT_KINDS).",
           encoding="dict"),
        _c("credit", STR, "Account credited.", encoding="dict"),
        _money("amount_fen", "Amount (> 0).", type_=I64),
        _c("memo", STR, "Flow the entry belongs to, e.g. card_fare, topup, settlement.",
           encoding="dict"),
    ),
    (_ge("amount_fen", 1), _differ("debit", "credit")),
)

DAILY_KPIS = TableSpec(
    "daily_kpis",
    "One row per day: the engine's daily indicators (Mesa DataCollector), expanded to full "
    "scale: each city's figures times its expansion weight 1/scale (rounded; the plain sum when "
    "every city runs at scale 1). The records of the other tables are what was simulated.",
    (
        _c("day_type", DICT8, "workday, weekend, holiday or spring_festival.",
           names="day_type"),
        _c("riders", I64, "Cardholders who travelled.", unit="count"),
        _c("taps", I64, "Tap records.", unit="count"),
        _c("fare_transactions", I64, "Fare records acquired in the home city, not declined, by its "
           "cards and QR codes (single taps, exits, incomplete entries).", unit="count"),
        _money("card_spend_fen", "Fares charged in the home city to its stored-value cards "
               "(as the calibration counts them, sim/metrics.py).", type_=I64),
        _money("qr_spend_fen", "Fares paid by QR codes in the home city.", type_=I64),
        _c("declined_taps", I64, "Taps declined for insufficient balance.", unit="count"),
        _c("topups", I64, "Top-ups.", unit="count"),
        _c("topups_outlet", I64, "Top-ups made at an outlet counter.", unit="count"),
        _money("topup_fen", "Value loaded.", type_=I64),
        _c("card_sales", I64, "Cards sold.", unit="count"),
        _c("duplicate_deductions", I64, "Same card charged twice within the re-tap lock.",
           unit="count"),
        _c("reader_outage_taps", I64, "Taps lost to reader outages.", unit="count"),
        _c("outlet_mean_wait_s", F64, "Mean wait of served outlet visitors (0 if none).",
           unit="s", encoding="plain"),
        _c("outlet_left_closed", I64, "Visitors turned away at closing time.", unit="count"),
        _money("purse_spend_fen", "Non-transit purchases paid from card purses.", type_=I64),
    ),
    (_ge("card_spend_fen", 0), _ge("qr_spend_fen", 0), _ge("topup_fen", 0)),
)

DEPOSIT_EVENTS = TableSpec(
    "deposit_events",
    "Settlement deposits (sim/deposits.py): calls to an issuer to top up its deposit, the money "
    "arriving, settlements deferred because a deposit could not cover them (a row on every day "
    "one is due and still cannot be paid), and their late payment (also of a settlement that "
    "came due while an earlier one waited, or a T+0 one only money of the next morning "
    "covered: paid late, without a deferral of its own). service_date is the day it happened.",
    (
        _institution("issuer_id", "The issuer."),
        _c("event", DICT8, "call, funds_in, settlement_deferred or settlement_paid_late.",
           names="deposit_event"),
        _money("amount_fen", "Called, received, missing (deferred) or paid (late).", type_=I64),
        _c("settle_date", DATE, "The settlement's own date (deferred and late rows); null "
           "otherwise.", nullable=True, unit="date"),
    ),
    (_ge("amount_fen", 0),),
)

REFUSED_TAPS = TableSpec(
    "refused_taps",
    "One row per card or code tap the reader took no fare from, and what the rider did next: "
    "cards declined for balance (never overdrawn; the record is also in transactions), cards "
    "the terminal's interoperable city list does not take (sim/city_list.py; no transaction) "
    "and QR codes refused while their platform is down (sim/disruption.py; no transaction).",
    (
        _c("transaction_id", I64, "The declined tap record; null for a card not accepted, "
           "which never became a transaction.", nullable=True, encoding="delta"),
        _ts("event_timestamp", "Time the card was presented."),
        _token(),
        _media(),
        _c("card_city_code", DICT16, "JT/T code of the card's issuing city.", names="city"),
        _institution("issuer_id", "Card issuer."),
        _institution("acquirer_id", "Acquirer whose terminal refused it."),
        _c("route_id", DICT16, "Route (line) of the device.", names="route"),
        _id("device_id", "Validator.", encoding="dict"),
        _money("amount_fen", "The fare that was due.", type_=I64),
        _c("reject_reason", DICT8, "declined_insufficient_balance, card_not_accepted or "
           "qr_platform_down (a code refused while its platform is down, the rider carrying no "
           "card; issuer_id is then the code's platform).", names="reject_reason"),
        _c("fallback", DICT8, "What the rider did: none (did not ride), qr (paid by QR code; "
           "away with 一码通行 this is a tap record 20 s later) or cash (outside the card "
           "system).", names="fallback"),
    ),
    (_ge("amount_fen", 0),),
)

VENUE_ENTRIES = TableSpec(
    "venue_entries",
    "One row per entry with a social-security card at a culture venue (library, museum, scenic "
    "spot; sim/social_security.py), at home or in another city of the region: paid from the "
    "holder's account, cleared on the cards' own channel (not the transit exchanges) and "
    "settled the next day; free entries are recorded too.",
    (
        _c("entry_id", I64, "Entry id (the record-id layout, apart from tap records).",
           encoding="delta"),
        _ts("event_timestamp", "Time of entry."),
        _token(),
        _c("card_city_code", DICT16, "JT/T code of the holder's city.", names="city"),
        _c("city_code", DICT16, "JT/T code of the venue's city.", names="city"),
        _c("venue_kind", DICT8, "library, museum or scenic_spot.", names="venue_kind"),
        _c("venue_id", STR, "The venue: <city code>-<kind>-<number> (generated).",
           encoding="dict"),
        _money("list_price_fen", "Entry price.", type_=I64),
        _money("discount_fen", "Local discount given (同城待遇 for visitors where the venue's "
               "city gives it).", type_=I64),
        _money("amount_fen", "Paid from the holder's account.", type_=I64),
        _c("same_city_treatment", BOOL, "A visitor from another city got the local discount.",
           encoding="plain"),
        _institution("issuer_id", "The holder's social-security card issuer."),
        _institution("acquirer_id", "The venue's operator."),
        _c("settle_date", DATE, "Date the channel settles it.", unit="date"),
    ),
    (_ge("amount_fen", 0), _eq("amount_fen", "list_price_fen", minus=("discount_fen",))),
)

CROSS_CITY_FLOWS = TableSpec(
    "cross_city_flows",
    "Who rode where (sim/cross_city.py): one row per day, holder's city and region, city and "
    "region of use and payment, from each city's final tap records. Multiply by "
    "expansion_weight for full-scale figures.",
    (
        _c("holder_city_code", DICT16, "JT/T city code of the rider's home city.", names="city"),
        _c("holder_region", DICT8, "The rider's home region; null for visitors of a city not "
           "simulated in the run.", names="region", nullable=True),
        _c("use_city_code", DICT16, "JT/T city code where the boardings were made.", names="city"),
        _c("use_region", DICT8, "Region where they were made; null in a city whose regions the "
           "rider's shard does not know (an external city with one gateway for the whole city).",
           names="region", nullable=True),
        _c("fare_product", DICT8, "stored_value (card purse) or qr_account.",
           names="fare_product"),
        _c("boardings", I64, "Single taps and metro entries the reader accepted (not declined, "
           "not refused by a full buffer).", unit="count"),
        _money("amount_fen", "Fares charged on the accepted records (exits included).",
               type_=I64),
        _c("expansion_weight", F64, "1/scale of the rider's city: what one simulated boarding "
           "stands for.", encoding="plain"),
    ),
    (_ge("boardings", 0), _ge("amount_fen", 0)),
)

LENDING_LABELS = TableSpec(
    "lending_labels",
    "Ground truth of card lending (behaviour.card_lending, sim/lending.py): one row per tap "
    "record made with a card by someone other than its holder. Written only when lending is "
    "on. For evaluating detection rules: case_id links a lent card's days, so keep this table "
    "with those who may link them, not with a masked export.",
    (
        _id("transaction_id", "The tap record (joins transactions.transaction_id)."),
        _token(),
        _id("case_id", "The lending case: one per lent card, the same on every day of the run "
            "(a keyed pseudonym of the card, not its id or token).", encoding="dict"),
    ),
)

# fmt: on

#: Every output table by name, in catalogue order.
TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        TRANSACTIONS,
        TOPUPS,
        CARD_SALES,
        OUTLET_VISITS,
        DEVICE_UPLOADS,
        CLEARING_BATCHES,
        REFUNDS,
        SETTLEMENTS,
        LEDGER_ENTRIES,
        DAILY_KPIS,
        CROSS_CITY_FLOWS,
        REFUSED_TAPS,
        VENUE_ENTRIES,
        DEPOSIT_EVENTS,
        LENDING_LABELS,
    )
}
#: Dataset schemas (service_date first) by table name.
SCHEMAS: dict[str, pa.Schema] = {name: t.schema for name, t in TABLES.items()}


def table_spec(name: str) -> TableSpec:
    """The spec of table ``name`` (KeyError lists the tables)."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None


# --- data dictionary -------------------------------------------------------------------------

DOC_BEGIN = "<!-- BEGIN GENERATED: python -m sim.schema docs/schema.md -->"
DOC_END = "<!-- END GENERATED -->"


def type_name(t: pa.DataType) -> str:
    """Short type name used in the docs, e.g. ``dict<int8,string>`` or ``timestamp[s]``."""
    if pa.types.is_dictionary(t):
        return f"dict<{t.index_type},{t.value_type}>"
    return "bool" if t == BOOL else str(t)


def data_dictionary_markdown() -> str:
    """Markdown data dictionary of every table (the generated part of docs/schema.md)."""
    out: list[str] = []
    for spec in TABLES.values():
        out += [f"### `{spec.name}`", "", spec.description, ""]
        out += ["| column | type | null | unit | meaning | TIDES | JT/T 978 |"]
        out += ["|---|---|---|---|---|---|---|"]
        for c in (_SERVICE_DATE, *spec.columns):
            meaning = c.description
            if c.names:
                meaning += f" Names: `{c.names}`."
            if c.derive is not None:
                meaning += " Derived when not passed."
            cells = [
                f"`{c.name}`",
                type_name(c.type),
                "yes" if c.nullable else "",
                c.unit,
                meaning,
                c.tides,
                c.jtt978,
            ]
            out.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        if spec.checks:
            out += ["", "Row invariants checked on write: "]
            out[-1] += "; ".join(f"`{k.description}`" for k in spec.checks) + "."
        out.append("")
    return "\n".join(out)


def _update_doc(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    path.write_text(f"{head}{DOC_BEGIN}\n{data_dictionary_markdown()}{DOC_END}{tail}", "utf-8")


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    _update_doc(Path(sys.argv[1]))
