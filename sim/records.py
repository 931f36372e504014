"""The Parquet writer: a subscriber turning the engine's events into the tables of sim/schema.py.

The engine speaks in population rows, seconds since the period start and integer codes; the
output speaks in tokens, local timestamps and documented columns. This module is the only place
that knows both, so the engine stays free of output concerns (STYLE.md: collectors subscribe).
Tap records are written once their day is final (``TapsFinal``): a Parquet file is written once.

Privacy (DOMAIN.md §5, docs/privacy.md): by default ``token_id`` is a keyed pseudonym that changes
every day (one day's taps can be joined, trajectories cannot be followed across days), the
linkable card counters and exact balances are left out, and printed card numbers, names, ID numbers
and phones are masked; identities, card numbers and check values are drawn under the privacy key
(sim/privacy.py), which never reaches the outputs. ``--unmasked`` writes the stable card id as
token, counters, balances and identities in full (everyone is synthetic either way).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import numpy as np

from agents.outlet import OUTCOMES, SERVICE_KINDS
from sim import ids
from sim.codes import MODES
from sim.cross_city import region_keys
from sim.day import TOPUP_CHANNELS
from sim.events import (
    BatchCleared,
    DayClosed,
    DaySettled,
    DepositEvents,
    RunFinished,
    SettlementDone,
    TapsFinal,
    UploadsSent,
)
from sim.grouping import gather
from sim.identity import card_numbers, identities
from sim.ledger import Ledger
from sim.lending import borrowed
from sim.output import RunOutput
from sim.privacy import PrivacyKey, default_key
from sim.record_kernels import (
    BAD_CARD,
    BAD_DEVICE,
    BAD_LINE,
    BAD_ROW,
    TapDerived,
    TapParams,
    TapSources,
    TapTables,
    tap_derived,
)
from sim.rng import Streams, _mix_array
from sim.social_security import VENUE_KINDS, venue_cities
from sim.taps import TapTable
from sim.world import World

DAY_S = 86_400
_EPOCH = dt.date(1970, 1, 1)
METRO = MODES.index("metro")


#: Dictionary columns whose names come from each city's scenario.
CITY_NAMED = ("region", "route", "city", "incident")


def _city_names(world: World) -> dict[str, list[str]]:
    sc = world.scenario
    return {
        "region": [name for _, name in region_keys(world)],
        "route": list(world.network.lines.ids),
        "city": [sc.output.city_code]
        + ([] if sc.interop is None else [c.city_code for c in sc.interop.cities.values()]),
        "incident": world.incidents.ids,
    }


def name_tables(worlds: list[World]) -> tuple[dict[str, list[str]], list[dict[str, np.ndarray]]]:
    """Name tables of a run's dictionary columns, and per city the map from its own codes to
    the run's (identity for a one-city run). Names shared by cities (a city code another city
    lists as an external city) get one code."""
    names: dict[str, list[str]] = {kind: [] for kind in CITY_NAMED}
    maps = []
    for world in worlds:
        mine = {}
        for kind, values in _city_names(world).items():
            index = {name: i for i, name in enumerate(names[kind])}
            for name in values:
                if name not in index:
                    index[name] = len(names[kind])
                    names[kind].append(name)
            mine[kind] = np.array([index[name] for name in values], dtype=np.int64)
        maps.append(mine)
    # A name table is never empty; with no incidents the incident_id columns are all null.
    names["incident"] = names["incident"] or ["(no incidents)"]
    names.update(
        institution=list(worlds[0].participants.ids),
        topup_channel=list(TOPUP_CHANNELS),
        outlet_service=list(SERVICE_KINDS),
        visit_outcome=list(OUTCOMES),
    )
    return names, maps


def record_writers(
    worlds: list[World],
    output: RunOutput | None,
    *,
    unmasked: bool,
    privacy_key: PrivacyKey | None,
    tables: str = "all",
) -> list[RecordWriter]:
    """One writer (or, with ``output`` None, converter) per city of a run, each with its map
    to the run's name codes."""
    _, code_maps = name_tables(worlds)
    return [
        RecordWriter(
            w,
            output,
            w.participants.ids,
            w.participants.code(w.scenario.output.issuer_id),
            unmasked=unmasked,
            privacy_key=privacy_key,
            shard_index=i,
            code_maps=code_maps[i],
            tables=tables,
        )
        for i, w in enumerate(worlds)
    ]


#: A tap record's columns that link a card's days together (``_linkable``).
LINKABLE_TAP_COLUMNS = ("balance_before_fen", "balance_after_fen", "card_counter")


def _hash32(key: np.uint64, *columns: np.ndarray) -> np.ndarray:
    """A keyed 32-bit check value over integer columns (TAC-like: any field change changes it,
    and without the key it cannot be recomputed, as a real SAM's TAC cannot)."""
    z = np.full(len(columns[0]), np.uint64(0x9E3779B97F4A7C15) ^ key, dtype=np.uint64)
    for col in columns:
        z ^= np.asarray(col).astype(np.uint64)
        z = _mix_array(z)
    return (z >> np.uint64(32)).astype(np.int64)


class RecordWriter:
    """Subscriber that converts the engine's events into output partitions (``output``)."""

    def __init__(
        self,
        world: World,
        output: RunOutput | None,
        institution_ids: tuple[str, ...],
        issuer_code: int,
        unmasked: bool = False,
        privacy_key: PrivacyKey | None = None,
        shard_index: int = 0,
        code_maps: dict[str, np.ndarray] | None = None,
        tables: str = "all",
    ) -> None:
        if tables not in ("all", "shard", "run"):
            raise ValueError(f"tables must be all, shard or run, got {tables!r}")
        # "shard": only the city's own tables (a shard writing on its worker); "run": only the
        # run-wide ones (clearing, settlements, KPIs, ledger), the shards writing theirs.
        self.tables = tables
        self.world = world
        self.output = output
        self.unmasked = unmasked
        self.issuer_code = issuer_code
        self.institution_ids = institution_ids
        start = world.start_date
        self.epoch_s = (start - _EPOCH).days * DAY_S
        self.key = privacy_key if privacy_key is not None else default_key()
        self._tac_key = self.key.keyed_words("tac", 1)[0]
        sc = world.scenario
        world_seed = sc.seed if sc.world_seed is None else sc.world_seed
        # Identities and card numbers: drawn under the key (the scenario's seed is public).
        self._identity_streams = Streams(self.key.seed(f"identity:{world_seed}"))
        self._card_no_mult = 10_007 + 10 * (self.key.derive("card_no:a") % 8_000)  # odd, not 5k
        self._card_no_add = self.key.derive("card_no:b") % 10**10
        devices = world.network.devices
        lines = world.network.lines
        stops = world.network.stops
        self.n_devices = len(devices.line)
        # Uploading agents are buses (their device id) and station computers (n_devices + stop).
        self.agent_region = np.concatenate(
            [lines.region[devices.line], lines.region[stops.line]]
        ).astype(np.int64)
        self.outlet_ids = np.array([o.outlet_id for o in world.outlets], dtype=np.int64)
        # This writer writes the records of one city (its part of every partition); the first
        # city's writer also writes the run-wide tables (clearing, settlement, KPIs, ledger).
        self.shard_index = shard_index
        self._settlement_parts: dict[int, int] = {}  # settlements written per date so far
        identity = all((m == np.arange(len(m))).all() for m in (code_maps or {}).values())
        self.code_maps = None if identity else code_maps
        # Terminal ids look like 6-byte PSAM numbers: the city code's digits, then the device
        # (its top byte the part of a city split by region, whose parts number devices from 0).
        part = world.scenario.region_part
        self.terminal_base = (int(world.scenario.output.city_code, 16) << 32) + (
            0 if part is None else part.index << 24
        )
        # Ground truth of card lending, only when the scenario lends cards (sim/lending.py).
        self.lending = world.scenario.behaviour.card_lending.share > 0
        self._case_key = np.uint64(self.key.derive("lending_case"))

    # ----------------------------------------------------------------- helpers
    def _date(self, day: int) -> dt.date:
        return self.world.start_date + dt.timedelta(days=int(day))

    def _ts(self, day: int, t_s: np.ndarray) -> np.ndarray:
        """Local epoch seconds of second ``t_s`` of simulation day ``day`` (-1 stays null)."""
        t = np.asarray(t_s, dtype=np.int64)
        return np.where(t >= 0, self.epoch_s + int(day) * DAY_S + t, -1)

    def _abs_ts(self, t_abs: np.ndarray) -> np.ndarray:
        t = np.asarray(t_abs, dtype=np.int64)
        return np.where(t >= 0, self.epoch_s + t, -1)

    def _code(self, kind: str, codes: np.ndarray) -> np.ndarray:
        """This city's dictionary codes of ``kind`` as the run's codes (-1, none, stays)."""
        if self.code_maps is None:
            return codes
        table = self.code_maps[kind]
        if not len(table):
            return codes
        return np.where(codes >= 0, table[np.maximum(codes, 0)], -1)

    def tokens(self, rows: np.ndarray, day: int) -> np.ndarray:
        """Card tokens: stable card ids when unmasked, else a keyed pseudonym that changes
        every day."""
        card_id = ids.global_card(self.shard_index, self.world.population.card_id[rows])
        return card_id if self.unmasked else self.key.day_tokens(card_id, day)

    def _linkable_columns(self, col, counter: np.ndarray) -> dict[str, np.ndarray]:
        """A tap's balances and card counter (``col``: a column of the taps by name), where the
        card was charged; left out (-1, null) of a masked export without reading them."""
        n = len(counter)
        if not self.unmasked:
            # int32, as the table stores them: no column of -1s to narrow again.
            return {name: np.full(n, -1, dtype=np.int32) for name in LINKABLE_TAP_COLUMNS}
        charged = col("home_card") & ~col("declined") & (col("device_refused") == 0)
        return {
            "balance_before_fen": np.where(charged, col("balance_before_fen"), -1),
            "balance_after_fen": np.where(charged, col("balance_after_fen"), -1),
            "card_counter": np.where(charged, counter, -1),
        }

    def _linkable(self, values: np.ndarray) -> np.ndarray:
        """Card counters and exact balances link a card's days together (the next day starts
        where the last ended): left out (-1, null) of a masked export."""
        return values if self.unmasked else np.full(len(values), -1, dtype=np.int64)

    def _card_numbers(self, card_id: np.ndarray) -> np.ndarray:
        """Printed card numbers: a keyed one-to-one map of the card id (its last digits say
        nothing about the id without the key)."""
        digits = (card_id.astype(np.int64) * self._card_no_mult + self._card_no_add) % 10**10
        return card_numbers(digits, self.world.scenario.output.card_number_prefix)

    def _write(
        self, table: str, day: int, columns: Mapping[str, np.ndarray], part: int | None = None
    ) -> None:
        if self.output is None:
            return
        part = self.shard_index if part is None else part
        self.output.write(table, self._date(day), columns, part=part)

    # ----------------------------------------------------------------- subscriber
    def __call__(self, event) -> None:
        """Write what ``event`` completes (see sim/events.py for the order of events)."""
        if self.output is None:
            return
        mine = getattr(event, "shard", 0) == self.shard_index
        if not mine:
            return  # another city's writer writes it (run-wide events count as the first's)
        shard_event = isinstance(event, DaySettled | UploadsSent | TapsFinal)
        if (self.tables == "shard" and not shard_event) or (self.tables == "run" and shard_event):
            return
        match event:
            case DaySettled(day=day):
                if len(event.refusals.get("row", ())):
                    self._write("refused_taps", day, self._refused_taps(day, event.refusals))
                if len(event.venue_entries.get("row", ())):
                    self._write("venue_entries", day, self._venue_entries(day, event.venue_entries))
                self._write("topups", day, self.topup_columns(day, event.topups))
                self._write("card_sales", day, self._card_sales(day, event.card_sales))
                self._write("outlet_visits", day, self._outlet_visits(day, event.outlet_visits))
            case UploadsSent(day=day, uploads=uploads):
                self._write("device_uploads", day, self.upload_columns(day, uploads))
            case BatchCleared(day=day, batches=batches):
                if len(batches["batch_id"]):  # no batch at a cut-off every node was down for
                    self._write("clearing_batches", day, self._clearing_batches(day, batches))
                if event.refund_orders:
                    self._write("refunds", day, self._refunds(event.refunds))
            case DepositEvents(day=day, events=events):
                self._write("deposit_events", day, self._deposit_events(events))
            case SettlementDone(settle_day=day, positions=positions):
                # Several settlements can be paid on one date (levels with different T+n, or
                # one that waited for deposit money): one part each, in the order paid.
                part = self._settlement_parts.get(day, 0)
                self._settlement_parts[day] = part + 1
                self._write("settlements", day, self._settlements(day, positions), part)
            case TapsFinal(day=day, taps=taps):
                self._write("transactions", day, self.transaction_columns(day, taps))
                self._write("cross_city_flows", day, self._cross_city_flows(event.flows))
                labels = self._lending_labels(day, taps) if self.lending else None
                if labels is not None and len(labels["transaction_id"]):
                    self._write("lending_labels", day, labels)
            case DayClosed(day=day, kpis=kpis):
                self._write("daily_kpis", day, self._daily_kpis(day, kpis))
            case RunFinished(ledger=ledger):
                self.finish(ledger)

    def finish(self, ledger: Ledger) -> None:
        """Write what is only complete at the end: the journal, partitioned by posting day."""
        if self.output is None:
            return
        journal = ledger.journal_columns()
        days = journal["day"]
        for day in np.unique(days).tolist():
            sel = days == day
            self._write(
                "ledger_entries",
                day,
                {k: v[sel] for k, v in journal.items() if k != "day"},
            )

    # ----------------------------------------------------------------- tables
    def transaction_columns(self, day: int, c: TapTable) -> dict[str, np.ndarray]:
        """The ``transactions`` table's columns of a day's taps (any phase from SETTLED on:
        before FINAL the clearing columns say pending)."""
        settle = c.settle_day
        settle_date = np.where(
            settle >= 0,
            np.datetime64(self.world.start_date, "D") + settle.astype("timedelta64[D]"),
            np.datetime64("NaT", "D"),
        )
        return {
            **self.tap_columns(day, c),
            "incomplete_processed_by": c.incomplete_by.astype(np.int64) - 1,  # 0 (none): null
            "upload_batch_id": np.where(c.upload_batch >= 0, c.upload_batch, -1),
            "uploaded_at": self._abs_ts(c.uploaded_at),
            "status": c.status,
            "reject_reason": c.reason,
            "clearing_batch_id": c.clearing_batch_id,
            "settle_date": settle_date,
        }

    def tap_columns(
        self, day: int, c: TapTable, order: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The ``transactions`` columns a validator knows when it records each tap (a stream's
        tap records): all but how the upload, the clearing and an incomplete trip turn out.
        ``order``: the rows in that order (a stream sends a day by time); the taps' own
        columns are taken in it before anything is derived: fewer and narrower arrays to
        move than the finished columns. What is derived from the card, line, device and time
        comes from one compiled pass over them (``_derived``)."""

        def col(name: str) -> np.ndarray:
            values = getattr(c, name)
            return values if order is None else gather(values, order)

        pop = self.world.population
        row, line, city = col("row"), col("line"), col("city")
        amount, counter = col("amount_fen"), col("card_counter")
        card = pop.card_id[row]
        src = TapSources(row, card, line, city, amount, counter, col("device"), col("t_s"))
        d = self._derived(day, src)
        return {
            "transaction_id": col("tx_id"),
            "event_timestamp": d.t_abs,
            "amount_fen": amount,
            "list_fare_fen": col("list_fare_fen"),
            "concession_fen": col("concession_fen"),
            "transfer_fen": col("transfer_fen"),
            "cap_fen": col("cap_fen"),
            "fare_capped": col("fare_capped"),
            "rider_category": pop.card_type[row],
            "media": col("medium"),
            "token_id": d.token,
            **self._linkable_columns(col, counter),
            "trip_record_type": col("kind"),
            "mode": col("mode"),
            "route_id": self._code("route", line),
            "stop_id": col("stop"),
            "vehicle_id": d.vehicle,
            "device_id": d.device,
            "uploader_id": col("agent_device_id"),
            "terminal_id": d.terminal,
            "device_serial": col("device_serial"),
            "tac": d.tac,
            "city_code": self._code("city", city),
            "issuer_id": col("issuer"),
            "acquirer_id": col("acquirer"),
            # Taps in other cities carry the holder's home region.
            "region": self._code("region", d.region),
            "is_transfer": col("is_transfer"),
            "incomplete_trip": col("incomplete"),
            "incident_id": self._code("incident", col("incident")),
        }

    def _derived(self, day: int, src: TapSources) -> TapDerived:
        """The columns ``tap_columns`` derives from the taps' card, line, device and time, in
        one compiled pass (sim/record_kernels.py; tests/test_record_kernels.py keeps the NumPy
        passes it replaced as the reference); an index out of its table raises IndexError and
        a card id that cannot be made run-wide ValueError, as those passes did."""
        network = self.world.network
        tables = TapTables(self.world.population.region, network.lines.region, network.devices.kind)
        params = TapParams(
            day_start_s=self.epoch_s + int(day) * DAY_S,
            tac_key=int(self._tac_key),
            card_base=ids.card_base(self.shard_index),
            card_limit=ids.CARD_ID_LIMIT,
            terminal_base=self.terminal_base,
            metro=METRO,
            token_keys=None if self.unmasked else self.key.day_token_keys(day),
        )
        derived, bad = tap_derived(src, tables, params)
        if bad & BAD_CARD:
            ids.global_card(self.shard_index, src.card)  # raises, as it did here
        if bad:
            what = {BAD_ROW: "row", BAD_LINE: "line", BAD_DEVICE: "device"}
            raise IndexError(f"tap {what[bad & -bad]} index out of range")
        return derived

    def _deposit_events(self, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = np.datetime64(self.world.start_date, "D")
        return {
            "issuer_id": c["participant"],
            "event": c["kind"],
            "amount_fen": c["amount_fen"],
            "settle_date": np.where(
                c["settle_day"] >= 0,
                start + c["settle_day"].astype("timedelta64[D]"),
                np.datetime64("NaT", "D"),
            ),
        }

    def _refused_taps(self, day: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "transaction_id": c["tx_id"],
            "event_timestamp": self._ts(day, c["t_s"]),
            "token_id": self.tokens(c["row"], day),
            "media": c["medium"],
            "card_city_code": self._code("city", c["card_city"]),
            "issuer_id": c["issuer"],
            "acquirer_id": c["acquirer"],
            "route_id": self._code("route", c["line"]),
            "device_id": c["device"],
            "amount_fen": c["amount_fen"],
            "reject_reason": c["reason"],
            "fallback": c["fallback"],
        }

    def _venue_entries(self, day: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        codes = [v.city_code if v else "" for v in venue_cities(self.world.scenario)]
        kind = np.array(VENUE_KINDS, dtype=object)[c["kind"]]
        venue_id = [
            f"{codes[j]}-{k}-{v + 1:03d}"
            for j, k, v in zip(c["city"].tolist(), kind.tolist(), c["venue"].tolist(), strict=True)
        ]
        pop = self.world.population
        return {
            "entry_id": c["entry_id"],
            "event_timestamp": self._ts(day, c["t_s"]),
            "token_id": self.tokens(c["row"], day),
            "card_city_code": self._code("city", pop.home_city[c["row"]].astype(np.int64)),
            "city_code": self._code("city", c["city"]),
            "venue_kind": c["kind"],
            "venue_id": np.array(venue_id, dtype=object),
            "list_price_fen": c["list_price_fen"],
            "discount_fen": c["discount_fen"],
            "amount_fen": c["amount_fen"],
            "same_city_treatment": c["same_city"],
            "issuer_id": c["issuer"],
            "acquirer_id": c["acquirer"],
            "settle_date": np.datetime64(self.world.start_date, "D")
            + c["settle_day"].astype("timedelta64[D]"),
        }

    def _cross_city_flows(self, flows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "holder_city_code": self._code("city", flows["holder_city"]),
            "holder_region": self._code("region", flows["holder_region"]),
            "use_city_code": self._code("city", flows["use_city"]),
            "use_region": self._code("region", flows["use_region"]),
            "fare_product": flows["payment"],
            "boardings": flows["boardings"],
            "amount_fen": flows["amount_fen"],
            "expansion_weight": flows["expansion_weight"],
        }

    def _lending_labels(self, day: int, c: TapTable) -> dict[str, np.ndarray]:
        """The day's tap records made by borrowers of lent cards, with a stable case id per lent
        card: a keyed mix of the run-wide card id, as the daily tokens are (sim/privacy.py), but
        the same every day (not recomputable without the key)."""
        pop = self.world.population
        by = c.home_card & borrowed(pop.card_id[c.row], c.tap_key)
        rows = c.row[by]
        card = ids.global_card(self.shard_index, pop.card_id[rows]).astype(np.uint64)
        case = _mix_array(card ^ self._case_key) >> np.uint64(1)
        return {
            "transaction_id": c.tx_id[by],
            "token_id": self.tokens(rows, day),
            "case_id": case.astype(np.int64),
        }

    def topup_columns(self, day: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ``topups`` table's columns of a day's credits (DaySettled.topups)."""
        pop = self.world.population
        rows = c["row"]
        n = len(rows)
        counter = c["card_counter"]
        t = self._ts(day, c["t_s"])
        outlet = np.where(c["outlet"] >= 0, self.outlet_ids[np.maximum(c["outlet"], 0)], -1)
        return {
            "topup_id": ids.record_ids(self.shard_index, day, n),
            "event_timestamp": t,
            "token_id": self.tokens(rows, day),
            "rider_category": pop.card_type[rows],
            "media": pop.medium[rows],
            "channel": c["channel"],
            "outlet_id": outlet,
            "region": self._code("region", pop.region[rows]),
            "issuer_id": np.full(n, self.issuer_code, dtype=np.int64),
            "amount_fen": c["amount_fen"],
            "balance_before_fen": self._linkable(c["balance_before_fen"]),
            "balance_after_fen": self._linkable(c["balance_after_fen"]),
            "card_counter": self._linkable(counter),
            "id_registered": c["amount_fen"] >= 100_000,
            "tac": _hash32(self._tac_key, pop.card_id[rows], counter, c["amount_fen"], t),
        }

    def _card_sales(self, day: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        world = self.world
        pop = world.population
        sc = world.scenario
        rows = c["row"]
        n = len(rows)
        admin = np.array([r.admin_code for r in sc.regions.values()])[pop.region[rows]]
        birth = pop.birth_ord[rows].astype(np.int64) - dt.date(1970, 1, 1).toordinal()
        people = identities(
            self._identity_streams,
            pop.card_id[rows],
            birth.astype("datetime64[D]"),
            pop.sex[rows],
            admin,
        )
        outlet = np.where(c["outlet"] >= 0, self.outlet_ids[np.maximum(c["outlet"], 0)], -1)
        return {
            "sale_id": ids.record_ids(self.shard_index, day, n),
            "event_timestamp": self._ts(day, c["t_s"]),
            "token_id": self.tokens(rows, day),
            "card_no": self._card_numbers(pop.card_id[rows]),
            "holder_name": np.array(people["name"], dtype=object),
            "id_number": np.array(people["id_number"], dtype=object),
            "phone": np.array(people["phone"], dtype=object),
            "rider_category": pop.card_type[rows],
            "media": pop.medium[rows],
            "sale_kind": np.zeros(n, dtype=np.int8),
            "outlet_id": outlet,
            "region": self._code("region", pop.region[rows]),
            "issuer_id": np.full(n, self.issuer_code, dtype=np.int64),
            "deposit_fen": np.zeros(n, dtype=np.int64),
            "card_fee_fen": np.full(n, sc.card_sales.price_fen, dtype=np.int64),
            "initial_balance_fen": np.full(n, sc.card_sales.initial_topup_fen, dtype=np.int64),
        }

    def _outlet_visits(self, day: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "visit_id": c["visit_id"],
            "outlet_id": c["outlet_id"],
            "service_kind": c["service_kind"],
            "arrived_at": self._abs_ts(c["arrival_s"]),
            "service_started_at": self._abs_ts(c["service_start_s"]),
            "service_ended_at": self._abs_ts(c["service_end_s"]),
            "wait_s": c["wait_s"],
            "service_s": np.where(c["service_start_s"] >= 0, c["service_s"], -1),
            "counter_id": c["counter"].astype(np.int64),
            "outcome": c["outcome"],
            "incident_id": self._code("incident", c["incident"].astype(np.int64)),
        }

    def upload_columns(self, day: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ``device_uploads`` table's columns of a day's upload log (UploadsSent)."""
        dev = c["device_id"]
        station = dev >= self.n_devices
        return {
            "device_id": dev,
            "upload_batch_id": c["upload_batch_id"],
            "uploaded_at": self._abs_ts(c["uploaded_at"]),
            "n_records": c["n_records"],
            "first_tap_at": self._abs_ts(c["first_tap_at"]),
            "last_tap_at": self._abs_ts(c["last_tap_at"]),
            "resend": c["resend"],
            "mode": np.where(station, METRO, 0),
            "region": self._code("region", self.agent_region[dev]),
        }

    def _clearing_batches(self, day: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = np.datetime64(self.world.start_date, "D")
        return {
            "clearing_batch_id": c["batch_id"].astype(np.int64),
            "node_id": c["node"],
            "transit": c["transit"].astype(bool),
            "settle_date": start + c["settle_day"].astype("timedelta64[D]"),
            "acquirer_id": c["acquirer"],
            "submitted": c["submitted"],
            "cleared": c["cleared"],
            "rejected": c["rejected"],
            "rejected_duplicate_upload": c["rejected_duplicate_upload"],
            "rejected_declined": c["rejected_declined"],
            "rejected_duplicate_deduction": c["rejected_duplicate_deduction"],
            "gross_fen": c["gross_fen"],
            "fee_fen": c["fee_fen"],
            "net_fen": c["net_fen"],
            "refund_fen": c["refund_fen"],
            "records_digest": c["records_digest"],
            "prev_hash": c["prev_hash"],
            "batch_hash": c["hash"],
        }

    def _refunds(self, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = np.datetime64(self.world.start_date, "D")
        return {
            "transaction_id": c["transaction_id"],
            "repeated_transaction_id": c["repeated_transaction_id"],
            "refund_kind": c["kind"],
            "issuer_id": c["issuer"],
            "acquirer_id": c["acquirer"],
            "amount_fen": c["amount_fen"],
            "pay_date": start + c["pay_day"].astype("timedelta64[D]"),
        }

    def _settlements(self, day: int, c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "node_id": c["node"],
            "participant_id": c["participant"],
            "role": c["role"],
            "net_position_fen": c["position_fen"],
        }

    def _daily_kpis(self, day: int, kpis: dict[str, float]) -> dict[str, np.ndarray]:
        out = {name: np.array([value]) for name, value in kpis.items()}
        out["day_type"] = np.array([self.world.calendar.day_types[day]], dtype=np.int8)
        return out
