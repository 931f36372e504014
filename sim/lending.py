"""Card lending: concession cards ridden by other people, its ground truth, and its detection.

Who lends (``behaviour.card_lending``, sim/behaviour_settings.py): a ``share`` of the cards of
``card_types`` (by default the free-ride 长寿卡), each to one working-age commuter of the card's
home region (a family member, say). On a day of ``day_types`` when the borrower rides, with
chance ``use_share``, the borrower rides their own planned day with the lent card (their own
card stays home) and the holder does not ride. Pairs and days are drawn from the run's streams
(keyed by card id), so a baseline and a variant with the same run seed lend the same cards.

Ground truth needs no extra column: a tap's key is built from the card id of the person who
planned it (``DayTaps.tap_key``), so a tap is by a borrower exactly when that card id is not the
card's own (``rider_card_id``). The run writes it as the ``lending_labels`` table.

Detection rules are data (``DetectionRule``): a card of the rule's types boarding inside its hours
on at least ``min_days`` of any ``window_days`` consecutive days of its day types is flagged.
``RuleCounter`` evaluates a rule over days, vectorised (a bit per day in one uint64 per card);
``score`` compares flagged cards with the lent ones (precision, recall). The same counters run
inside a run (``LendingMonitor``, which follows cards across days whatever the export's masking)
and over an unmasked run's files (``detect_in_files``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agents.citizen import MAX_TRIP_SLOTS, DayTaps
from sim.behaviour_settings import CardLending, DetectionRule
from sim.codes import CARD_TYPES, DAY_TYPES, MEDIA, STORED_VALUE_MEDIA, TAP_EXIT
from sim.events import DaySettled
from sim.ids import DUPLICATE_TAP_BIT
from sim.journeys import replace
from sim.output import read_table
from sim.population import HOME_CITY
from sim.response import minute_mask
from sim.rng import Streams
from sim.world import World

#: Tap keys are (card id * MAX_TRIP_SLOTS + slot) * 8 + leg and exit bits (agents/citizen.py).
_KEY_PER_CARD = MAX_TRIP_SLOTS * 8


def rider_card_id(tap_key: np.ndarray) -> np.ndarray:
    """The card id of the person who planned each tap (from its key; duplicates included)."""
    return (np.asarray(tap_key, np.int64) & ~DUPLICATE_TAP_BIT) // _KEY_PER_CARD


def borrowed(card_id_of_row: np.ndarray, tap_key: np.ndarray) -> np.ndarray:
    """Taps made by someone other than the card's holder (``card_id_of_row``: the card id of
    each tap's card)."""
    return rider_card_id(tap_key) != card_id_of_row


def _codes(names: tuple[str, ...], table: tuple[str, ...]) -> np.ndarray:
    return np.array([table.index(n) for n in names], np.int64)


@dataclass(frozen=True)
class LendingPairs:
    """Lent cards and their borrowers (population rows, aligned), sorted by borrower."""

    lent: np.ndarray
    borrower: np.ndarray


def lending_pairs(world: World, streams: Streams, settings: CardLending) -> LendingPairs:
    """Which cards are lent, and to whom (one borrower per lent card, one card per borrower)."""
    pop, sc = world.population, world.scenario
    local = pop.home_city == HOME_CITY
    in_period = (pop.issue_day < world.days) & (pop.end_day > 0)
    # By the type the card was issued as (as habits are), not the type a policy re-derives from
    # age: a baseline and its variants lend the same cards to the same people.
    issued = pop.issued_card_type
    lendable = local & in_period & np.isin(issued, _codes(settings.card_types, CARD_TYPES))
    rows = np.flatnonzero(lendable)
    rows = rows[streams.uniform("lend.card", 0, pop.card_id[rows]) < settings.share]
    commuter_types = [n for n, t in sc.population.card_types.items() if t.commuter]
    pool = np.flatnonzero(
        local
        & in_period
        & (pop.rider_class > 0)
        & (pop.work_zone != pop.home_zone)
        & (pop.age >= settings.borrower_age_min)
        & (pop.age <= settings.borrower_age_max)
        & np.isin(issued, _codes(tuple(commuter_types), CARD_TYPES))
        & ~np.isin(issued, _codes(settings.card_types, CARD_TYPES))
    )
    pool = pool[np.argsort(pop.region[pool], kind="stable")]
    n_regions = len(world.region_ids)
    count = np.bincount(pop.region[pool], minlength=n_regions)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    region = pop.region[rows]
    has = count[region] > 0
    rows, region = rows[has], region[has]
    u = streams.uniform("lend.borrower", 0, pop.card_id[rows])
    pick = first[region] + np.minimum((u * count[region]).astype(np.int64), count[region] - 1)
    borrower = pool[pick]
    # A borrower drawn twice keeps the first card (lowest row): one card per borrower.
    borrower, keep = np.unique(borrower, return_index=True)
    return LendingPairs(lent=rows[keep], borrower=borrower)


class CardLendingStep:
    """Lent cards ridden by their borrowers, day by day (the respond step's misuse part)."""

    def __init__(self, world: World, streams: Streams, settings: CardLending | None = None):
        self.world = world
        self.streams = streams
        self.s = settings if settings is not None else world.scenario.behaviour.card_lending
        self.pairs = lending_pairs(world, streams, self.s)
        self.day_types = _codes(self.s.day_types, DAY_TYPES)

    def today(self, taps: DayTaps, day: int, day_type: int) -> LendingPairs:
        """The pairs lending today: a lent day type, the card in use, the borrower riding, and
        the borrower taking it (chance ``use_share``)."""
        pairs, pop = self.pairs, self.world.population
        if day_type not in self.day_types or not len(pairs.lent):
            return LendingPairs(pairs.lent[:0], pairs.borrower[:0])
        live = (pop.issue_day[pairs.lent] < day) & (pop.end_day[pairs.lent] > day)
        riding = np.isin(pairs.borrower, taps.row)
        takes = self.streams.uniform("lend.day", day, pop.card_id[pairs.lent]) < self.s.use_share
        on = live & riding & takes
        return LendingPairs(pairs.lent[on], pairs.borrower[on])

    @staticmethod
    def rows(today: LendingPairs) -> np.ndarray:
        """Every rider involved today (holders and borrowers): the price response leaves them."""
        return np.concatenate([today.lent, today.borrower])

    def apply(self, taps: DayTaps, today: LendingPairs) -> DayTaps:
        """The holders' own taps are gone; the borrowers' taps are on the lent cards."""
        if not len(today.lent):
            return taps
        pop = self.world.population
        taps = taps.take(np.flatnonzero(~np.isin(taps.row, today.lent)))
        pos = np.searchsorted(today.borrower, taps.row)
        pos = np.minimum(pos, len(today.borrower) - 1)
        by_borrower = today.borrower[pos] == taps.row
        card = today.lent[pos]
        return replace(
            taps,
            row=np.where(by_borrower, card, taps.row),
            medium=np.where(by_borrower, pop.medium[card], taps.medium).astype(taps.medium.dtype),
        )


# --------------------------------------------------------------------------- detection


class RuleCounter:
    """One detection rule over ``n_keys`` cards (dense indices), fed one day at a time."""

    def __init__(self, rule: DetectionRule, n_keys: int) -> None:
        self.rule = rule
        self.minutes = minute_mask(rule.hours)
        self.card_types = _codes(rule.card_types, CARD_TYPES)
        self.day_types = _codes(rule.day_types, DAY_TYPES)
        self.days = np.zeros(n_keys, np.uint64)  # bit i: a hit i counted days ago
        self.window = np.uint64((1 << rule.window_days) - 1)
        self.flagged = np.zeros(n_keys, bool)

    def hits(self, card_type: np.ndarray, t_s: np.ndarray, boarding: np.ndarray) -> np.ndarray:
        """Which taps count for the rule (given each tap's card type, time and kind)."""
        minute = np.clip(np.asarray(t_s, np.int64) // 60, 0, len(self.minutes) - 1)
        return boarding & np.isin(card_type, self.card_types) & self.minutes[minute]

    def add_day(self, day_type: int, hit_keys: np.ndarray) -> None:
        """Count one day: ``hit_keys`` are the cards with a hit (repeats allowed)."""
        if day_type not in self.day_types:
            return
        self.days <<= np.uint64(1)
        self.days[hit_keys] |= np.uint64(1)
        self.days &= self.window
        self.flagged |= np.bitwise_count(self.days) >= self.rule.min_days


def score(flagged: np.ndarray, lent: np.ndarray) -> dict[str, float | int | None]:
    """Precision and recall of ``flagged`` against ``lent`` (bool arrays over the same cards);
    None where undefined (nothing flagged, nothing lent)."""
    tp = int((flagged & lent).sum())
    n_flagged, n_lent = int(flagged.sum()), int(lent.sum())
    return {
        "flagged": n_flagged,
        "true_positives": tp,
        "false_positives": n_flagged - tp,
        "missed": n_lent - tp,
        "precision": tp / n_flagged if n_flagged else None,
        "recall": tp / n_lent if n_lent else None,
    }


def _report(counters: list[RuleCounter], lent: np.ndarray, borrowed_taps: int) -> dict:
    return {
        "lent_cards": int(lent.sum()),
        "borrowed_taps": borrowed_taps,
        "rules": {
            c.rule.name: {**c.rule.model_dump(mode="json"), **score(c.flagged, lent)}
            for c in counters
        },
    }


class LendingMonitor:
    """Subscriber: detection rules over a run's tap records, day by day, against the ground
    truth (a lent card counts as lent once a borrower has tapped it). Works on population rows,
    so it follows cards across days whatever the export's masking (the operator's view)."""

    def __init__(self, world: World, shard: int = 0) -> None:
        self.world = world
        self.shard = shard
        settings = world.scenario.behaviour.card_lending
        n = len(world.population)
        self.counters = [RuleCounter(rule, n) for rule in settings.detection]
        self.lent = np.zeros(n, bool)
        self.borrowed_taps = 0

    def __call__(self, event) -> None:
        """Count a settled day of this monitor's city."""
        if not isinstance(event, DaySettled) or event.shard != self.shard:
            return
        taps, pop = event.taps, self.world.population
        home = taps.home_card & (taps.duplicate_of_key < 0)
        by_borrower = home & borrowed(pop.card_id[taps.row], taps.tap_key)
        self.lent[taps.row[by_borrower]] = True
        self.borrowed_taps += int(by_borrower.sum())
        day_type = int(self.world.calendar.day_types[event.day])
        for c in self.counters:
            hit = home & c.hits(pop.card_type[taps.row], taps.t_s, taps.kind != TAP_EXIT)
            c.add_day(day_type, taps.row[hit])

    def report(self) -> dict:
        """Lent cards, borrowed taps, and each rule's flagged cards, precision and recall."""
        return _report(self.counters, self.lent, self.borrowed_taps)


def detect_in_files(
    run_dir: str | Path, rules: tuple[DetectionRule, ...], issuer_id: str | None
) -> dict:
    """The detection report recomputed from a run's files: its tap records (``token_id`` must be
    the stable card id: an unmasked export), day types (``daily_kpis``) and ground truth
    (``lending_labels``). Only stored-value cards count (of ``issuer_id`` if given)."""
    columns = ["service_date", "token_id", "event_timestamp", "rider_category", "media"]
    extra = ["trip_record_type", "issuer_id", "status"]
    tx = read_table(run_dir, "transactions").select([*columns, *extra])
    card_media = pa.array(_names(STORED_VALUE_MEDIA, MEDIA))
    cards = pc.is_in(pc.cast(tx["media"], "string"), value_set=card_media)
    # A rejected record is mostly a second upload of a tap already there: as in the run, one
    # tap counts once.
    cards = pc.and_(cards, pc.not_equal(pc.cast(tx["status"], "string"), "rejected"))
    if issuer_id is not None:
        cards = pc.and_(cards, pc.equal(pc.cast(tx["issuer_id"], "string"), issuer_id))
    tx = tx.filter(cards)
    kpis = read_table(run_dir, "daily_kpis").select(["service_date", "day_type"])
    day_type = {
        d: DAY_TYPES.index(t)
        for d, t in zip(
            kpis["service_date"].to_pylist(),
            pc.cast(kpis["day_type"], "string").to_pylist(),
            strict=True,
        )
    }
    token = tx["token_id"].to_numpy()
    keys, key_of_tap = np.unique(token, return_inverse=True)
    labels = read_table(run_dir, "lending_labels")
    lent = np.isin(keys, labels["token_id"].to_numpy())
    date = tx["service_date"].to_numpy()
    t_s = tx["event_timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64) % 86_400
    card_type = _codes_of(tx["rider_category"], CARD_TYPES)
    boarding = pc.cast(tx["trip_record_type"], "string").to_numpy(zero_copy_only=False) != "exit"
    counters = [RuleCounter(rule, len(keys)) for rule in rules]
    order = np.argsort(date, kind="stable")
    bounds = np.searchsorted(date[order], np.array(sorted(day_type), dtype=date.dtype))
    # Every day of the run counts, also one without a single card tap (as in the run).
    for d, lo, hi in zip(sorted(day_type), bounds, [*bounds[1:], len(order)], strict=True):
        part = order[lo:hi]
        for c in counters:
            hit = c.hits(card_type[part], t_s[part], boarding[part])
            c.add_day(day_type[d], key_of_tap[part][hit])
    return _report(counters, lent, labels.num_rows)


def _names(codes: frozenset[int], table: tuple[str, ...]) -> list[str]:
    return [table[c] for c in sorted(codes)]


def _codes_of(column, table: tuple[str, ...]) -> np.ndarray:
    names = pc.cast(column, "string").to_numpy(zero_copy_only=False)
    lookup = {name: i for i, name in enumerate(table)}
    uniq, inv = np.unique(names, return_inverse=True)
    return np.array([lookup[u] for u in uniq], np.int64)[inv]


def summary_lines(reports: dict[str, dict]) -> list[str]:
    """One line per city and one per detection rule, for a run's summary on the terminal."""
    lines = []
    for city, rep in reports.items():
        lines.append(
            f"card lending ({city}): {rep['lent_cards']:,} cards lent, "
            f"{rep['borrowed_taps']:,} taps by borrowers"
        )
        for name, rule in rep["rules"].items():
            precision, recall = rule["precision"], rule["recall"]
            lines.append(
                f"  rule {name}: {rule['flagged']:,} cards flagged, precision "
                + ("n/a" if precision is None else f"{precision:.2f}")
                + ", recall "
                + ("n/a" if recall is None else f"{recall:.2f}")
            )
    return lines
