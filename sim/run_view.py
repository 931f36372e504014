"""Read a finished run: every question the dashboard (or a notebook) asks of a run folder.

``RunView.open(run_dir)`` checks the folder (a finished CardTwin run of this schema version)
and answers with small pandas frames computed by DuckDB over the run's Parquet files, so that a
question costs an aggregate query, never a whole table loaded into memory. All SQL of the
dashboard lives here; the queries take their choices (a measure, a dimension) from closed
lists, never from free text.

Money stays integer fen in every frame (``*_fen`` columns); presentation converts it.
Rejected tap records are left out of ridership and spend: most are duplicate uploads of a tap
already counted (as the catalogue's convenience views do).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from agents.outlet import OutletFileError, load_outlets_csv
from sim import clearing_paths, ids, run_places
from sim.output import RUN_META_FILE, define_views, table_query
from sim.run_dir import MARKER_FILE, marker_of
from sim.run_places import city_labels
from sim.schema import SCHEMA_VERSION, TABLES

# What a breakdown can be split by and measured in (column or expression over `transactions`).
DIMENSIONS = ("rider_category", "media", "region", "mode", "fare_product")
MEASURES = {
    "taps": "COUNT(*)",
    # Distinct cards within a day (a masked run's token changes daily); over several days the
    # measure is the average day's (RIDERS_PER_DAY), not a count of cards.
    "riders": "COUNT(DISTINCT token_id)",
    "spend_fen": "SUM(amount_fen)",
    "concession_fen": "SUM(concession_fen)",
    "transfer_fen": "SUM(transfer_fen)",
}
COUNTED = "status <> 'rejected'"  # see the module docstring
# The same measures where cities were simulated at a scale below 1: each record counts its
# shard's expansion weight ``w`` (run_meta.json ``cities[].expansion_weight``), as the daily
# KPIs do; riders: each distinct card once, at its weight.
WEIGHTED_MEASURES = {
    "taps": "CAST(ROUND(COALESCE(SUM(w), 0)) AS BIGINT)",
    "riders": "list_sum(list_transform(list_distinct(list({'t': token_id, 'w': w}) "
    "FILTER (WHERE token_id IS NOT NULL)), lambda x: x.w))",
    "spend_fen": "CAST(ROUND(SUM(amount_fen * w)) AS BIGINT)",
    "concession_fen": "CAST(ROUND(SUM(concession_fen * w)) AS BIGINT)",
    "transfer_fen": "CAST(ROUND(SUM(transfer_fen * w)) AS BIGINT)",
}
# The tables whose records a scaled city stands for 1/scale of, and the id that says whose
# shard each record is (sim/ids.py: records and visits keep the shard in the same bits).
WEIGHTED_TABLES = {
    "transactions": "transaction_id",
    "topups": "topup_id",
    "card_sales": "sale_id",
    "outlet_visits": "visit_id",
    "venue_entries": "entry_id",
}
# The same for tables whose ids are numbered per shard (a device's upload batches: device ids
# are the city's own): the shard is the part of the file each shard writes its rows to
# (``sim.output.table_query(with_part=True)``).
WEIGHTED_PART_TABLES = ("device_uploads",)


# A clearing figure's expansion factors, from the records behind it (``clearing_flow_w`` or
# ``clearing_book_w`` joined as ``e``): ``wc`` for counts (their mean weight), ``wm`` for money
# (their money-weighted mean weight; their count's where they carry no money), 1 where no
# record is known to stand behind it (it stays as simulated), and whether it was expanded.
_FLOW_FACTORS = """COALESCE(e.wn / NULLIF(e.n, 0), 1.0) AS wc,
    COALESCE(e.wfen / NULLIF(e.fen, 0), e.wn / NULLIF(e.n, 0), 1.0) AS wm,
    COALESCE(e.wn <> e.n, FALSE) AS estimated"""


def _expanded(expression: str) -> str:
    """A weighted count or fen amount as a whole number (as the daily KPIs round them)."""
    return f"CAST(ROUND({expression}) AS BIGINT)"


class RunViewError(RuntimeError):
    """The folder cannot be read as a finished run; the message says which file and why."""


@dataclass(frozen=True)
class RunListing:
    """One run folder found under a runs root: where, what, and whether it can be opened."""

    path: Path
    name: str
    started: str | None
    days: int | None
    taps: int | None
    problem: str | None  # None: it opens


def list_runs(root: str | Path) -> list[RunListing]:
    """The run folders directly under ``root`` (and ``root`` itself if it is one), newest first,
    each with what is wrong with it if it cannot be opened."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [root] if (root / MARKER_FILE).exists() else []
    try:
        folders += sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # unreadable: nothing to list (the caller names the folder)
        return []
    found = []
    for folder in folders:
        if (folder / MARKER_FILE).exists() or (folder / RUN_META_FILE).exists():
            found.append(_listing(folder))
        elif ".partial-" in folder.name:
            found.append(RunListing(folder, folder.name, None, None, None, _half_written(folder)))
    return sorted(found, key=lambda r: (r.problem is not None, -_mtime(r.path), r.name))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _half_written(folder: Path) -> str:
    return f"{folder}: a run that has not finished (or was killed while writing): no {MARKER_FILE}"


def _listing(folder: Path) -> RunListing:
    try:
        meta = check_run(folder)
    except RunViewError as exc:
        return RunListing(folder, folder.name, None, None, None, str(exc))
    period = meta.get("period", {})
    return RunListing(
        folder, str(meta.get("scenario", folder.name)), period.get("start"), period.get("days"),
        meta.get("taps"), None,
    )  # fmt: skip


def check_run(run_dir: str | Path) -> dict:
    """The run's metadata (``run_meta.json``) after checking the folder is a finished run of this
    schema version with all its files; RunViewError naming the file and the problem if not."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunViewError(f"{run_dir}: no such run folder")
    marker = marker_of(run_dir)
    if marker is None:
        if (run_dir / MARKER_FILE).exists():
            raise RunViewError(f"{run_dir / MARKER_FILE}: not a CardTwin run marker (unreadable)")
        raise RunViewError(_half_written(run_dir))
    version = marker.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunViewError(
            f"{run_dir / MARKER_FILE}: schema_version {version!r}; this CardTwin reads version "
            f"{SCHEMA_VERSION}: run the scenario again to read it here"
        )
    missing = [f for f in marker["files"] if not (run_dir / f).exists()]
    if missing:
        raise RunViewError(
            f"{run_dir}: {len(missing)} file(s) of the run are missing, e.g. {missing[0]}: the "
            "folder was changed after the run; run the scenario again"
        )
    try:
        meta = json.loads((run_dir / RUN_META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunViewError(f"{run_dir / RUN_META_FILE}: cannot be read ({exc})") from None
    _check_meta(run_dir / RUN_META_FILE, meta)
    return meta


def _check_meta(path: Path, meta: object) -> None:
    """Every key of ``run_meta.json`` that a reader of the run relies on (the dashboard's pages
    and briefs index them directly): present where required and of the right kind, so a file
    edited by hand or written by another tool is refused here, naming the key, instead of
    failing later in a page with a KeyError."""
    if not isinstance(meta, dict):
        raise RunViewError(f"{path}: expected a JSON object; got {type(meta).__name__}")
    period = meta.get("period")
    if not isinstance(period, dict):
        raise RunViewError(
            f"{path}: period: {_got(period, 'period' in meta)}; expected an object with "
            "start, end and days"
        )
    for key in ("start", "end"):
        value = period.get(key)
        if not _iso_date(value):
            raise RunViewError(
                f"{path}: period.{key}: {_got(value, key in period)}; expected a date YYYY-MM-DD"
            )
    days = period.get("days")
    if not _whole(days) or days < 1:
        raise RunViewError(
            f"{path}: period.days: {_got(days, 'days' in period)}; expected a whole number "
            "of days, at least 1"
        )
    for key in ("cardholders", "taps"):  # optional, but counted when present
        value = meta.get(key)
        if value is not None and (not _whole(value) or value < 0):
            raise RunViewError(f"{path}: {key}: got {value!r}; expected a whole number >= 0")
    cities = meta.get("cities")
    if cities is not None:
        if not isinstance(cities, list):
            raise RunViewError(f"{path}: cities: got {cities!r:.60}; expected a list")
        for i, city in enumerate(cities):
            if not isinstance(city, dict):
                raise RunViewError(f"{path}: cities.{i}: got {city!r:.60}; expected an object")
            settings = city.get("settings")
            if settings is not None and not isinstance(settings, dict):
                raise RunViewError(
                    f"{path}: cities.{i}.settings: got {settings!r:.60}; expected an object"
                )
    masked = meta.get("identities_masked")
    if masked is not None and not isinstance(masked, bool):
        raise RunViewError(f"{path}: identities_masked: got {masked!r}; expected true or false")


def _got(value: object, present: bool) -> str:
    return f"got {value!r:.60}" if present else "missing"


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso_date(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10  # 2024-01-07, as the engine writes it (not 20240107)


class RunView:
    """Aggregate queries over one finished run (thread-safe: one DuckDB connection, a lock)."""

    def __init__(self, run_dir: Path, meta: dict, con: duckdb.DuckDBPyConnection) -> None:
        self.run_dir, self.meta, self._con = run_dir, meta, con
        self._lock = threading.Lock()
        self._clearing_ready = False  # _clearing_weights made (a scaled run's, on first use)
        self.weighted, several = _define_shard_views(con, meta, run_dir)
        # A region by name, prefixed with its city's for a city other than the first.
        self._region = "prefix || CAST(region AS VARCHAR)" if several else "CAST(region AS VARCHAR)"
        self._measures = WEIGHTED_MEASURES if self.weighted else MEASURES
        # A count of records, and what a sum of a column becomes (times each record's weight).
        # Whole counts and fen, as the daily KPIs round them; a count of no rows is 0.
        self._count = self._count_where("TRUE") if self.weighted else "COUNT(*)"

    def _column(self, dimension: str) -> str:
        """A dimension's key as text (a region's with its city's name, see ``_region``)."""
        name = _dimension(dimension)
        return self._region if name == "region" else f"CAST({name} AS VARCHAR)"

    def _count_where(self, condition: str) -> str:
        if not self.weighted:
            return f"COUNT(*) FILTER (WHERE {condition})"
        return f"CAST(ROUND(COALESCE(SUM(w) FILTER (WHERE {condition}), 0)) AS BIGINT)"

    def _sum(self, column: str) -> str:
        return f"CAST(ROUND(SUM({column} * w)) AS BIGINT)" if self.weighted else f"SUM({column})"

    @classmethod
    def open(cls, run_dir: str | Path) -> RunView:
        """Open ``run_dir`` (checked by ``check_run``). The views are made in memory over the
        folder's Parquet files, so a moved run folder reads as well as one in place."""
        run_dir = Path(run_dir).resolve()
        meta = check_run(run_dir)
        con = duckdb.connect(":memory:")
        try:  # every table: one the run did not write reads as empty, with its columns
            define_views(con, run_dir, TABLES)
        except duckdb.Error as exc:
            con.close()
            raise RunViewError(f"{run_dir}: Parquet files cannot be read ({exc})") from None
        return cls(run_dir, meta, con)

    @property
    def settings(self) -> dict:
        """The validated settings the run was made with (``run_meta.json``), of its first city:
        the home city a multi-city run's scenario describes. {} for a run written before
        settings were stored."""
        cities = self.meta.get("cities") or [{}]
        return cities[0].get("settings") or {}

    def outlets(self) -> pd.DataFrame:
        """Every city's outlets as published (its ``city``, id, name, region, opening hours,
        open days), read with the engine's own parser from the outlets file each city used;
        ``region`` is the outlet's region keyed as the other queries key it (another city's
        after its name). A city whose file is gone (a run copied to another machine) has none
        listed."""
        columns = ["outlet_id", "name_zh", "region_zh", "hours", "open_days"]
        rows, prefixes = [], run_places.region_prefixes(self.meta)
        for city in run_places.cities(self.meta):
            try:
                infos = load_outlets_csv(city.outlets_file) if city.outlets_file else []
            except (OSError, OutletFileError):
                infos = []
            prefix = prefixes[city.shards[0]]
            rows += [
                [city.index, *(getattr(i, c) for c in columns), prefix + i.region_zh] for i in infos
            ]
        return pd.DataFrame(rows, columns=["city", *columns, "region"])

    def _measure(self, name: str) -> str:
        try:
            return self._measures[name]
        except KeyError:
            raise RunViewError(f"measure {name!r}: expected one of {', '.join(MEASURES)}") from None

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._con.close()

    def _frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self._lock:
            try:
                return self._con.execute(sql, params or []).df()
            except duckdb.Error as exc:
                raise RunViewError(f"{self.run_dir}: {str(exc).splitlines()[0]}") from None

    # --- headline ---------------------------------------------------------------------------

    def daily(self) -> pd.DataFrame:
        """The daily KPI table, one row per service date."""
        return self._frame("SELECT * FROM daily_kpis ORDER BY service_date")

    # --- ridership --------------------------------------------------------------------------

    def taps_by_hour(self, measure: str = "taps") -> pd.DataFrame:
        """Per day type and hour: the measure on an average day of that type."""
        expr = self._measure(measure)
        return self._frame(
            f"""
            WITH per_day AS (
                SELECT t.service_date, k.day_type,
                       CAST(date_part('hour', t.event_timestamp) AS INTEGER) AS hour,
                       {expr} AS value
                FROM transactions_w t JOIN daily_kpis k USING (service_date)
                WHERE {COUNTED} GROUP BY ALL)
            SELECT day_type, hour, AVG(value) AS value,
                   COUNT(DISTINCT service_date) AS days
            FROM per_day GROUP BY ALL ORDER BY day_type, hour"""
        )

    def breakdown(self, dimension: str, measure: str = "taps") -> pd.DataFrame:
        """The measure over the whole run split by ``dimension`` (one of DIMENSIONS); riders
        are those of an average day."""
        column = self._column(dimension)
        if measure == "riders":
            return self._frame(
                f"""SELECT key, SUM(value) / (SELECT COUNT(*) FROM daily_kpis) AS value FROM (
                        SELECT service_date, {column} AS key,
                               {self._measure(measure)} AS value
                        FROM transactions_w WHERE {COUNTED} GROUP BY ALL)
                    GROUP BY key ORDER BY value DESC, key"""
            )
        return self._frame(
            f"""SELECT {column} AS key, {self._measure(measure)} AS value
                FROM transactions_w WHERE {COUNTED} GROUP BY ALL ORDER BY value DESC, key"""
        )

    def headline(self) -> dict[str, float]:
        """The run's headline figures, as every page and the brief show them: taps and fares
        paid at the validators (counted records; in a run with cities at a scale below 1,
        expanded by their weights, as the daily KPIs are), riders on an average day, top-ups,
        cards sold, declined taps and duplicate deductions."""
        row = self._frame(
            f"""SELECT {self._count} AS taps, COALESCE({self._sum("amount_fen")}, 0) AS fares_fen,
                       COALESCE({self._sum("concession_fen")}, 0) AS concession_fen
                FROM transactions_w WHERE {COUNTED}"""
        ).iloc[0]
        daily = self.daily()
        return {
            "taps": round(float(row["taps"])),
            "fares_fen": round(float(row["fares_fen"])),
            "concession_fen": round(float(row["concession_fen"])),
            "riders_per_day": float(daily["riders"].mean()) if len(daily) else 0.0,
            "topup_fen": int(daily["topup_fen"].sum()),
            "card_sales": int(daily["card_sales"].sum()),
            "declined_taps": int(daily["declined_taps"].sum()),
            "duplicate_deductions": int(daily["duplicate_deductions"].sum()),
        }

    def by_day(self, dimension: str, measure: str = "taps") -> pd.DataFrame:
        """The measure per service date split by ``dimension``."""
        column = self._column(dimension)
        return self._frame(
            f"""SELECT service_date, {column} AS key,
                       {self._measure(measure)} AS value
                FROM transactions_w WHERE {COUNTED} GROUP BY ALL ORDER BY service_date, key"""
        )

    # --- money on cards ---------------------------------------------------------------------

    def topups(self) -> pd.DataFrame:
        """Top-ups by channel and region: count and value."""
        return self._frame(
            f"""SELECT CAST(channel AS VARCHAR) AS channel, {self._region} AS region,
                       {self._count} AS topups, {self._sum("amount_fen")} AS amount_fen
                FROM topups_w GROUP BY ALL ORDER BY channel, region"""
        )

    def topup_amounts(self) -> pd.DataFrame:
        """How many top-ups of each amount."""
        return self._frame(
            f"SELECT amount_fen, {self._count} AS topups FROM topups_w "
            "GROUP BY ALL ORDER BY amount_fen"
        )

    def balances(self, bins: int = 20) -> pd.DataFrame:
        """Card purse balances after each card tap, in ``bins`` equal bins (empty in a masked
        run, whose balances are withheld)."""
        return self._frame(
            f"""
            WITH b AS (SELECT balance_after_fen AS v{", w" if self.weighted else ""}
                       FROM transactions_w
                       WHERE balance_after_fen IS NOT NULL),
                 r AS (SELECT MIN(v) AS lo, GREATEST(MAX(v) - MIN(v), 1) AS span FROM b)
            SELECT CAST(LEAST(FLOOR((v - lo) * {bins} / span), {bins - 1}) AS INTEGER) AS bin,
                   MIN(v) AS low_fen, MAX(v) AS high_fen, {self._count} AS taps
            FROM b, r GROUP BY bin ORDER BY bin"""
        )

    # --- outlets ----------------------------------------------------------------------------

    def outlet_waits(self) -> pd.DataFrame:
        """Per city, outlet and hour of arrival: visits, mean and 90th-percentile wait (s),
        turned away at closing. Outlets are numbered per city (two cities' outlet 1 are two
        outlets), so ``city`` (``run_places.City.index``) goes with ``outlet_id``."""
        return self._frame(
            f"""SELECT city, CAST(outlet_id AS BIGINT) AS outlet_id,
                       CAST(date_part('hour', arrived_at) AS INTEGER) AS hour,
                       {self._count} AS visits, AVG(wait_s) AS mean_wait_s,
                       quantile_cont(wait_s, 0.9) AS p90_wait_s,
                       {self._count_where("outcome = 'left_closed'")} AS left_closed
                FROM outlet_visits_w
                GROUP BY ALL ORDER BY city, outlet_id, hour"""
        )

    # --- faults, incidents, duplicates ------------------------------------------------------

    def incident_taps(self) -> pd.DataFrame:
        """Tap records touched by each incident (id from the scenario's timeline)."""
        return self._frame(
            f"""SELECT CAST(incident_id AS VARCHAR) AS incident_id, {self._count} AS taps,
                       {self._sum("amount_fen")} AS amount_fen, MIN(event_timestamp) AS first_tap,
                       MAX(event_timestamp) AS last_tap
                FROM transactions_w WHERE incident_id IS NOT NULL GROUP BY ALL ORDER BY 1"""
        )

    def duplicates_and_refunds(self) -> pd.DataFrame:
        """Per settlement date: duplicate deductions caught in clearing, other rejects, and the
        fen refunded. Where cities ran below full scale, each batch's figures are expanded by
        the weights of the records behind its flow (``_clearing_weights``) and ``estimated``
        says a date's figures were."""
        if not self.weighted:
            return self._frame(
                """SELECT settle_date, SUM(rejected_duplicate_deduction) AS duplicate_deductions,
                          SUM(rejected_duplicate_upload) AS duplicate_uploads,
                          SUM(rejected_declined) AS declined, SUM(refund_fen) AS refund_fen,
                          FALSE AS estimated
                   FROM clearing_batches GROUP BY ALL ORDER BY settle_date"""
            )
        self._clearing_weights()
        deductions = _expanded("SUM(rejected_duplicate_deduction * wc)")
        return self._frame(
            f"""WITH b AS (SELECT b.*, {_FLOW_FACTORS} FROM clearing_batches b
                           LEFT JOIN clearing_flow_w e
                           ON e.source = CAST(b.acquirer_id AS VARCHAR)
                              AND e.target = CAST(b.node_id AS VARCHAR))
                SELECT settle_date,
                       {deductions} AS duplicate_deductions,
                       {_expanded("SUM(rejected_duplicate_upload * wc)")} AS duplicate_uploads,
                       {_expanded("SUM(rejected_declined * wc)")} AS declined,
                       {_expanded("SUM(refund_fen * wm)")} AS refund_fen,
                       bool_or(estimated) AS estimated
                FROM b GROUP BY ALL ORDER BY settle_date"""
        )

    def device_uploads(self) -> pd.DataFrame:
        """Per mode and service date: upload batches, records and resends, and the mean delay
        from the last tap of a batch to its upload (s). Where cities ran below full scale, each
        batch counts at its city's expansion weight (its validators stand for 1/scale as many:
        batches, records and resends expanded, whole; the delay a mean over the batches so
        counted) and ``estimated`` marks the rows that hold a scaled city's batches."""
        delay = "date_diff('second', last_tap_at, uploaded_at)"
        mean_delay = f"SUM({delay} * w) / SUM(w)" if self.weighted else f"AVG({delay})"
        estimated = "bool_or(w <> 1.0)" if self.weighted else "FALSE"
        return self._frame(
            f"""SELECT service_date, CAST(mode AS VARCHAR) AS mode, {self._count} AS batches,
                       {self._sum("n_records")} AS records,
                       {self._count_where("resend")} AS resends,
                       {mean_delay} AS mean_delay_s, {estimated} AS estimated
                FROM device_uploads_w GROUP BY ALL ORDER BY service_date, mode"""
        )

    # --- clearing ---------------------------------------------------------------------------

    def clearing_flows(self) -> pd.DataFrame:
        """Money cleared from each acquirer through each clearing node: records, gross, fees,
        net. Where cities ran below full scale, each flow is expanded by the weights of the
        records that went along it (``_clearing_weights``): records by their weights, money by
        their money-weighted mean weight (fees and net with it, net = gross - fee as the
        batches keep it); ``estimated`` marks the flows so expanded."""
        if not self.weighted:
            return self._frame(
                """SELECT CAST(acquirer_id AS VARCHAR) AS source,
                          CAST(node_id AS VARCHAR) AS target,
                          SUM(cleared) AS records, SUM(gross_fen) AS gross_fen,
                          SUM(fee_fen) AS fee_fen, SUM(net_fen) AS net_fen, FALSE AS estimated
                   FROM clearing_batches GROUP BY ALL ORDER BY gross_fen DESC, source, target"""
            )
        self._clearing_weights()
        return self._frame(
            f"""WITH b AS (SELECT CAST(acquirer_id AS VARCHAR) AS source,
                                  CAST(node_id AS VARCHAR) AS target,
                                  SUM(cleared) AS records, SUM(gross_fen) AS gross_fen,
                                  SUM(fee_fen) AS fee_fen
                           FROM clearing_batches GROUP BY ALL),
                     x AS (SELECT b.*, {_FLOW_FACTORS} FROM b LEFT JOIN clearing_flow_w e
                           USING (source, target)),
                     y AS (SELECT source, target, {_expanded("records * wc")} AS records,
                                  {_expanded("gross_fen * wm")} AS gross_fen,
                                  {_expanded("fee_fen * wm")} AS fee_fen, estimated FROM x)
                SELECT source, target, records, gross_fen, fee_fen,
                       gross_fen - fee_fen AS net_fen, estimated
                FROM y ORDER BY gross_fen DESC, source, target"""
        )

    def node_positions(self) -> pd.DataFrame:
        """Each clearing node's net position against each participant over the run, from the
        settlement table (positive: the participant is owed money), and an issuer's last
        settlement deposit. Where cities ran below full scale, each position is expanded by the
        money-weighted mean weight of the records settled in it (``estimated``); deposits are
        balances the scenario sets, not flows, and stay as simulated."""
        base = """SELECT CAST(node_id AS VARCHAR) AS node_id,
                         CAST(participant_id AS VARCHAR) AS participant_id,
                         CAST(role AS VARCHAR) AS role,
                         SUM(net_position_fen) AS net_position_fen,
                         arg_max(deposit_balance_fen, service_date) AS last_deposit_fen
                  FROM settlements GROUP BY ALL"""
        if not self.weighted:
            return self._frame(
                f"SELECT *, FALSE AS estimated FROM ({base}) ORDER BY node_id, participant_id"
            )
        self._clearing_weights()
        return self._frame(
            f"""WITH s AS ({base}),
                     x AS (SELECT s.*, {_FLOW_FACTORS} FROM s LEFT JOIN clearing_book_w e
                           USING (node_id, participant_id))
                SELECT node_id, participant_id, role,
                       {_expanded("net_position_fen * wm")} AS net_position_fen,
                       last_deposit_fen, estimated
                FROM x ORDER BY node_id, participant_id"""
        )

    def _clearing_weights(self) -> None:
        """Tables ``clearing_flow_w`` (source, target) and ``clearing_book_w`` (node_id,
        participant_id) of a run with cities below full scale: for each flow and book row, the
        records behind it (cleared taps and culture-venue entries, by their issuer and acquirer
        and the way ``sim.clearing_paths`` rebuilds for them) as ``n``, ``wn`` (their
        weights), ``fen`` and ``wfen`` (their money times their weights). Made once, on the
        first clearing question."""
        with self._lock:
            if self._clearing_ready:
                return
            try:
                self._define_clearing_weights()
            except duckdb.Error as exc:
                raise RunViewError(f"{self.run_dir}: {str(exc).splitlines()[0]}") from None
            self._clearing_ready = True

    def _define_clearing_weights(self) -> None:
        """The tables of ``_clearing_weights`` (called with the connection's lock held)."""
        con = self._con
        con.execute(
            """CREATE OR REPLACE TABLE clearing_pairs AS
               SELECT issuer_id, acquirer_id, SUM(n) AS n, SUM(wn) AS wn, SUM(fen) AS fen,
                      SUM(wfen) AS wfen FROM (
                   SELECT CAST(issuer_id AS VARCHAR) AS issuer_id,
                          CAST(acquirer_id AS VARCHAR) AS acquirer_id, COUNT(*) AS n,
                          SUM(w) AS wn, SUM(amount_fen) AS fen, SUM(amount_fen * w) AS wfen
                   FROM transactions_w WHERE status = 'cleared' GROUP BY ALL
                   UNION ALL
                   SELECT CAST(issuer_id AS VARCHAR), CAST(acquirer_id AS VARCHAR), COUNT(*),
                          SUM(w), SUM(amount_fen), SUM(amount_fen * w)
                   FROM venue_entries_w GROUP BY ALL)
               GROUP BY ALL"""
        )
        pairs = con.execute("SELECT issuer_id, acquirer_id FROM clearing_pairs").fetchall()
        members = con.execute(
            """SELECT DISTINCT CAST(participant_id AS VARCHAR), CAST(role AS VARCHAR),
                      CAST(node_id AS VARCHAR)
               FROM settlements WHERE CAST(role AS VARCHAR) <> 'clearing_node'
               UNION
               SELECT DISTINCT CAST(acquirer_id AS VARCHAR), 'acquirer', CAST(node_id AS VARCHAR)
               FROM clearing_batches WHERE NOT transit
               ORDER BY ALL"""
        ).fetchall()
        found = clearing_paths.routes(clearing_paths.node_parents(self.meta), members, pairs)
        for table, columns, rows in (
            ("clearing_hops", ["source", "target"], found.hops),
            ("clearing_books", ["node_id", "participant_id"], found.books),
        ):
            # Handed over as a frame: thousands of rows, where row-by-row inserts take a second.
            frame = pd.DataFrame(rows, columns=["issuer_id", "acquirer_id", *columns], dtype=str)
            con.register("routed", frame)
            try:
                con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM routed")
            finally:
                con.unregister("routed")
        for name, table, keys in (
            ("clearing_flow_w", "clearing_hops", "source, target"),
            ("clearing_book_w", "clearing_books", "node_id, participant_id"),
        ):
            con.execute(
                f"""CREATE OR REPLACE TABLE {name} AS
                    SELECT {keys}, SUM(n) AS n, SUM(wn) AS wn, SUM(fen) AS fen,
                           SUM(wfen) AS wfen
                    FROM clearing_pairs JOIN {table} USING (issuer_id, acquirer_id)
                    GROUP BY ALL"""
            )

    # --- one cardholder ---------------------------------------------------------------------

    def busy_cards(self, service_date: str, limit: int = 20) -> pd.DataFrame:
        """Cards (masked token ids) with the most taps on ``service_date``: people to trace
        (``media``: every medium the card's holder used that day, comma-separated)."""
        return self._frame(
            """SELECT CAST(token_id AS VARCHAR) AS token_id,
                      CAST(min(rider_category) AS VARCHAR) AS rider_category,
                      string_agg(DISTINCT CAST(media AS VARCHAR), ',' ORDER BY
                                 CAST(media AS VARCHAR)) AS media,
                      COUNT(*) AS taps
               FROM transactions WHERE service_date = CAST(? AS DATE) AND token_id IS NOT NULL
               GROUP BY token_id ORDER BY taps DESC, token_id LIMIT ?""",
            [service_date, int(limit)],
        )

    def card_day(self, token_id: str, service_date: str) -> pd.DataFrame:
        """Every tap of one card on one day, in time order, with how it was priced."""
        return self._frame(
            """SELECT event_timestamp, CAST(trip_record_type AS VARCHAR) AS tap_kind,
                      CAST(mode AS VARCHAR) AS mode, CAST(route_id AS VARCHAR) AS route,
                      CAST(stop_id AS VARCHAR) AS stop, CAST(media AS VARCHAR) AS media,
                      CAST(rider_category AS VARCHAR) AS rider_category,
                      list_fare_fen, concession_fen, transfer_fen, cap_fen, amount_fen,
                      is_transfer, fare_capped, incomplete_trip, balance_after_fen,
                      CAST(city_code AS VARCHAR) AS city_code,
                      CAST(status AS VARCHAR) AS status,
                      CAST(reject_reason AS VARCHAR) AS reject_reason,
                      CAST(incident_id AS VARCHAR) AS incident_id
               FROM transactions
               WHERE token_id = ? AND service_date = CAST(? AS DATE)
               ORDER BY event_timestamp, transaction_id""",
            [str(token_id), service_date],
        )

    # --- regions ----------------------------------------------------------------------------

    def by_region(self, measure: str) -> pd.DataFrame:
        """One value per region: a ridership measure, or ``card_sales`` / ``topup_fen``."""
        if measure == "card_sales":
            sql = f"SELECT {self._region} AS key, {self._count} AS value FROM card_sales_w"
        elif measure == "topup_fen":
            sql = f"SELECT {self._region} AS key, {self._sum('amount_fen')} AS value FROM topups_w"
        else:
            return self.breakdown("region", measure)
        return self._frame(sql + " GROUP BY ALL ORDER BY value DESC, key")


REGION_MEASURES = (*MEASURES, "card_sales", "topup_fen")


def cardholders_of(meta: dict) -> int:
    """The cardholders a run stands for: every city's, each times its expansion weight
    (``run_meta.json``; a run written before cities were listed: its ``cardholders``)."""
    cities = meta.get("cities") or []
    if not cities or any("cardholders" not in c for c in cities):
        return int(meta.get("cardholders") or 0)
    return round(sum(c["cardholders"] * float(c.get("expansion_weight", 1.0)) for c in cities))


def _define_shard_views(
    con: duckdb.DuckDBPyConnection, meta: dict, run_dir: Path
) -> tuple[bool, bool]:
    """Views ``<table>_w`` of ``WEIGHTED_TABLES`` and ``WEIGHTED_PART_TABLES`` with each
    record's shard (by the shard bits of its id, or the part of the file it is in): its
    expansion weight ``w``, its region ``prefix`` (``run_places``: the city's name and a space
    for a city other than the first, so two cities' 市区 are two regions; '' for the first
    city's shards, so a one-city or region-split run reads as before) and its ``city``
    (``run_places.City.index``). Plain views when every city ran at full scale and there is one
    city. Returns (weighted, several cities)."""
    cities = meta.get("cities") or []
    weights = [float(c.get("expansion_weight", 1.0)) for c in cities]
    prefixes, city = run_places.region_prefixes(meta), run_places.shard_city(meta)
    weighted, several = any(w != 1.0 for w in weights), any(prefixes)
    if weighted or several:
        con.execute(
            "CREATE TABLE shard_info (shard BIGINT, w DOUBLE, prefix VARCHAR, city INTEGER)"
        )
        con.executemany(
            "INSERT INTO shard_info VALUES (?, ?, ?, ?)",
            [(i, w, p, c) for i, (w, p, c) in enumerate(zip(weights, prefixes, city, strict=True))],
        )
    shift, mask = ids.SHARD_SHIFT, ids.MAX_SHARDS - 1
    for table, id_column in WEIGHTED_TABLES.items():
        if weighted or several:
            con.execute(
                f"""CREATE VIEW {table}_w AS
                    SELECT t.*, COALESCE(s.w, 1.0) AS w, COALESCE(s.prefix, '') AS prefix,
                           COALESCE(s.city, 0) AS city
                    FROM {table} t
                    LEFT JOIN shard_info s ON s.shard = (t.{id_column} >> {shift}) & {mask}"""
            )
        else:
            con.execute(f"CREATE VIEW {table}_w AS SELECT *, 0 AS city FROM {table}")  # no w
    for table in WEIGHTED_PART_TABLES:
        if weighted or several:
            con.execute(
                f"""CREATE VIEW {table}_w AS
                    SELECT t.* EXCLUDE (part), COALESCE(s.w, 1.0) AS w,
                           COALESCE(s.prefix, '') AS prefix, COALESCE(s.city, 0) AS city
                    FROM ({table_query(run_dir, table, with_part=True)}) t
                    LEFT JOIN shard_info s ON s.shard = t.part"""
            )
        else:
            con.execute(f"CREATE VIEW {table}_w AS SELECT *, 0 AS city FROM {table}")  # no w
    return weighted, several


def _dimension(name: str) -> str:
    if name not in DIMENSIONS:
        raise RunViewError(f"dimension {name!r}: expected one of {', '.join(DIMENSIONS)}")
    return name


__all__ = [
    "DIMENSIONS",
    "MEASURES",
    "REGION_MEASURES",
    "RunListing",
    "RunView",
    "RunViewError",
    "cardholders_of",
    "check_run",
    "city_labels",
    "list_runs",
]
