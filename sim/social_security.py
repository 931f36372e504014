"""Social-security cards at culture venues, cleared on their own channel.

In the Yangtze River Delta a resident's social-security card (社保卡, third generation) is also a
card for culture and tourism across Shanghai, Jiangsu, Zhejiang and Anhui: libraries, museums
and scenic spots take it, with "same-city treatment" (同城待遇) for holders from the other
provinces (DOMAIN.md §1). This module is that use:

- a city's ``social_security:`` section: its card issuer (the holder's financial account), the
  clearing channel the cards clear on (a clearing node of its own, e.g. the region's social-
  security card platform), the operator of its venues, the share of cardholders who carry one,
  how often they visit, and its venues (kinds, counts, prices, the discount a local card gets);
- ``plan_entries``: a day's venue entries, at home (a holder visits with a daily chance) and
  away (a holder spending the day in another city visits one of its venues with a chance), at
  that venue's price less the discount the place gives (a visitor gets the local discount where
  the place gives visitors same-city treatment);
- ``SocialSecurityChannel``: the money, per shard and day. An entry is paid from the holder's
  account at the venue (the issuer's bank to its ``unsettled``), cleared on the channel that
  night (issuer pays the gross, the venue operator gets it less the channel's fee, the channel
  node keeps the fee: its ``transit_fee_bp``) and settled the next day through the banks (no
  settlement deposit: the payments are account debits). Every date's positions sum to zero.

Entries are records of their own (the ``venue_entries`` table), never tap records: the transit
clearing, its hash chains and its invariants do not see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field, field_validator

from sim import ids
from sim.clearing import (
    MEMO_SSC_ENTRY,
    PairTotals,
    Participants,
    Positions,
    post_clearing,
    post_flow,
    post_settlement,
    settlement_positions,
)
from sim.events import SettlementDone
from sim.fare_rules import Pct, bp_of_fen, pct_to_bp
from sim.ledger import Ledger
from sim.world_settings import Section

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Fen = Annotated[int, Field(ge=0)]

#: Venue kinds (the ``venue_kind`` names of the venue_entries table).
VENUE_KINDS: tuple[str, ...] = ("library", "museum", "scenic_spot")
#: Entry ids: the record-id layout (shard, day, sequence) with sequences from here, far above
#: any day's tap records, so an entry id never equals a tap's.
ENTRY_SEQ_BASE = 1 << 36


class Venues(Section):
    """Venues of one kind in a city."""

    count: Annotated[int, Field(ge=1)] = Field(description="How many there are.")
    price_fen: Fen = Field(description="Entry price (0: free entry, still recorded).")
    local_discount_pct: Pct = Field(
        0.0,
        description="Discount a local social-security card gets (percent, at most two "
        "decimals; the discount is rounded down to whole fen).",
    )
    visit_share: Share = Field(description="Share of venue visits made to this kind.")


class SocialSecurity(Section):
    """The scenario's ``social_security:`` section (see the module docstring)."""

    issuer_id: str = Field(description="Clearing id of the city's social-security card issuer.")
    channel: str = Field(
        description="Clearing node the cards clear on (a node of clearing.network.nodes, "
        "usually with no parent: a channel apart from the transit exchanges); its "
        "transit_fee_bp is the channel's fee."
    )
    acquirer_id: str = Field(description="Clearing id of the operator of the city's venues.")
    holder_share: Share = Field(description="Share of cardholders who carry one.")
    visits_per_holder_year: float = Field(
        ge=0, description="Venue visits a holder makes a year in the home city."
    )
    away_visit_share: Share = Field(
        description="Chance a holder spending the day in another city of the region visits "
        "one of its venues."
    )
    transit: bool = Field(
        False,
        description="The card carries a 交通联合 transit application: a holder away rides with it "
        "where the readers take 交通联合 cards, also where they refuse the city's own cards "
        "(a MoHURD-standard city's). The fare comes from the same purse as the home card's.",
    )
    same_city_treatment: bool = Field(
        True,
        description="Holders from the other cities get the local discount here (同城待遇); "
        "false: they pay the full price.",
    )
    venues: dict[str, Venues] = Field(
        min_length=1, description="Venues by kind (library, museum, scenic_spot)."
    )

    @field_validator("venues")
    @classmethod
    def _known_kinds_sharing_all_visits(cls, venues: dict[str, Venues]) -> dict[str, Venues]:
        unknown = sorted(set(venues) - set(VENUE_KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; expected some of {', '.join(VENUE_KINDS)}")
        total = sum(v.visit_share for v in venues.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the kinds' visit_share values add up to {total:g}; expected 1")
        return venues


@dataclass(frozen=True)
class VenueCity:
    """A city's venues as a holder sees them: its code, operator and whether visitors get the
    local discount (``same_city``)."""

    city_code: str
    acquirer_id: str
    same_city: bool
    venues: dict[str, Venues]


def venue_cities(scenario) -> list[VenueCity | None]:
    """The home city's venues (index 0) and each external city's (1..n; None where its file
    gives no venues)."""
    own = scenario.social_security
    cities = [
        None
        if own is None
        else VenueCity(
            scenario.output.city_code, own.acquirer_id, own.same_city_treatment, own.venues
        )
    ]
    for ext in () if scenario.interop is None else scenario.interop.cities.values():
        cities.append(
            None
            if not ext.venues
            else VenueCity(ext.city_code, ext.culture_acquirer_id, ext.same_city_venues, ext.venues)
        )
    return cities


def holders(world) -> np.ndarray:
    """Rows of the home city's cardholders who carry a social-security card (a fixed draw per
    card)."""
    local = np.flatnonzero(world.population.home_city == 0)
    return local[carries_card(world, local)]


def carries_card(world, rows: np.ndarray) -> np.ndarray:
    """Whether the cardholders at ``rows`` (the home city's) carry a social-security card."""
    sc = world.scenario.social_security
    if sc is None:
        return np.zeros(len(rows), bool)
    u = world.streams.uniform("ssc.holder", 0, world.population.card_id[rows])
    return u < sc.holder_share


def rides_with_card(world, rows: np.ndarray) -> np.ndarray:
    """Whether the cardholders at ``rows`` ride with their social-security card's transit
    application where their city's own card is refused (``social_security.transit``)."""
    sc = world.scenario.social_security
    if sc is None or not sc.transit:
        return np.zeros(len(rows), bool)
    return carries_card(world, rows)


def plan_entries(
    world, streams, day: int, live: np.ndarray, away_rows: np.ndarray, away_city: np.ndarray
) -> dict[str, np.ndarray]:
    """The day's venue entries of this shard's holders: at home among ``live`` holders, away
    among ``away_rows`` (in external city ``away_city``, 1-based). Columns: row, t_s, city (0
    home, k external), kind, venue, list_price_fen, discount_fen, amount_fen, same_city."""
    sc = world.scenario.social_security
    empty = _no_entries()
    if sc is None:
        return empty
    cities = venue_cities(world.scenario)
    pop = world.population
    home = live[~np.isin(live, away_rows)]  # a holder away today visits there, not here
    at_home = home[
        streams.uniform("ssc.visit", day, pop.card_id[home]) < sc.visits_per_holder_year / 365.0
    ]
    has_venues = np.array([c is not None for c in cities])
    mine = np.isin(away_rows, live) & has_venues[away_city]
    away_rows, away_city = away_rows[mine], away_city[mine]
    go = streams.uniform("ssc.away", day, pop.card_id[away_rows]) < sc.away_visit_share
    rows = np.concatenate([at_home, away_rows[go]])
    city = np.concatenate([np.zeros(len(at_home), np.int64), away_city[go]])
    if not len(rows):
        return empty
    order = np.argsort(rows, kind="stable")
    rows, city = rows[order], city[order]
    card = pop.card_id[rows]
    kind = np.zeros(len(rows), np.int64)
    venue = np.zeros(len(rows), np.int64)
    price = np.zeros(len(rows), np.int64)
    discount_bp = np.zeros(len(rows), np.int64)
    u_kind = streams.uniform("ssc.kind", day, card)
    u_venue = streams.uniform("ssc.venue", day, card)
    for j in np.unique(city).tolist():
        here = city == j
        c = cities[j]
        names = list(c.venues)
        cum = np.cumsum([c.venues[n].visit_share for n in names])
        pick = np.minimum((cum[None, :] <= u_kind[here, None]).sum(axis=1), len(names) - 1)
        kinds = np.array([VENUE_KINDS.index(n) for n in names])
        counts = np.array([c.venues[n].count for n in names])
        prices = np.array([c.venues[n].price_fen for n in names])
        local_bp = np.array([pct_to_bp(c.venues[n].local_discount_pct) for n in names], np.int64)
        kind[here] = kinds[pick]
        venue[here] = (u_venue[here] * counts[pick]).astype(np.int64)
        price[here] = prices[pick]
        # Same-city treatment: a visitor gets the local discount where the place gives it.
        discount_bp[here] = local_bp[pick] if (j == 0 or c.same_city) else 0
    # Basis points and integer fen, rounded down as fares are (a float 29 % of 100 fen is 28).
    discount = bp_of_fen(price, discount_bp)
    t_s = 9 * 3600 + (streams.uniform("ssc.time", day, card) * 8 * 3600).astype(np.int64)
    return {
        "row": rows.astype(np.int64),
        "t_s": t_s,
        "city": city,
        "kind": kind,
        "venue": venue,
        "list_price_fen": price,
        "discount_fen": discount,
        "amount_fen": price - discount,
        "same_city": (city > 0) & (discount > 0),
    }


def _no_entries() -> dict[str, np.ndarray]:
    z = np.zeros(0, np.int64)
    return {
        "row": z, "t_s": z, "city": z, "kind": z, "venue": z, "list_price_fen": z,
        "discount_fen": z, "amount_fen": z, "same_city": np.zeros(0, bool),
    }  # fmt: skip


class VenueCollector:
    """Subscriber summing the run's venue entries by holder's city and venue's city, expanded
    to full scale (a shard's entries times 1/scale): run_meta.json ``social_security``. What
    same-city treatment gives visitors is its ``visitor_discount_fen``."""

    def __init__(self, worlds) -> None:
        self.worlds = list(worlds)
        # (holder city code, venue city code) -> [entries, amount_fen, discount_fen], expanded
        self._sums: dict[tuple[str, str], list[float]] = {}

    def __call__(self, event) -> None:
        entries = getattr(event, "venue_entries", None)
        if not entries or not len(entries.get("row", ())):
            return
        world = self.worlds[event.shard]
        weight = 1.0 / world.scenario.scale
        codes = [c.city_code if c else "" for c in venue_cities(world.scenario)]
        holder = world.scenario.output.city_code
        city = entries["city"]
        for j in np.unique(city).tolist():
            here = city == j
            sums = self._sums.setdefault((holder, codes[j]), [0.0, 0.0, 0.0])
            sums[0] += float(here.sum()) * weight
            sums[1] += float(entries["amount_fen"][here].sum()) * weight
            sums[2] += float(entries["discount_fen"][here].sum()) * weight

    def report(self) -> dict:
        """Entries, money and discounts, in all and by (holder's city, venue's city)."""
        if not self._sums:
            return {}
        rows = [
            {
                "holder_city_code": h,
                "venue_city_code": v,
                "entries": round(n),
                "amount_fen": round(fen),
                "discount_fen": round(disc),
            }
            for (h, v), (n, fen, disc) in sorted(self._sums.items())
        ]
        return {
            "expanded_to_full_scale": True,
            "entries": sum(r["entries"] for r in rows),
            "amount_fen": sum(r["amount_fen"] for r in rows),
            "discount_fen": sum(r["discount_fen"] for r in rows),
            "visitor_discount_fen": sum(
                r["discount_fen"] for r in rows if r["holder_city_code"] != r["venue_city_code"]
            ),
            "by_city": rows,
        }


class SocialSecurityChannel:
    """One shard's venue-entry money on the channel: paid at the venue, cleared that night,
    settled the next day (see the module docstring)."""

    def __init__(self, world, shard_index: int) -> None:
        sc = world.scenario.social_security
        self.participants: Participants = world.participants
        self.shard_index = shard_index
        self.on = sc is not None
        if not self.on:
            return
        p = self.participants
        self.issuer = p.code(sc.issuer_id)
        self.channel = p.code(sc.channel)
        self.fee_bp = world.scenario.clearing.network.nodes[sc.channel].transit_fee_bp
        self.acquirer = np.array(
            [-1 if c is None else p.code(c.acquirer_id) for c in venue_cities(world.scenario)]
        )
        self._due: Positions | None = None  # yesterday's positions, settled today

    def entries_of_day(self, day: int, entries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The day's entries with their ids, issuer, acquirer and settlement day."""
        n = len(entries["row"])
        return {
            **entries,
            "entry_id": ids.record_ids(self.shard_index, day, n, ENTRY_SEQ_BASE),
            "issuer": np.full(n, self.issuer if self.on else -1, np.int64),
            "acquirer": self.acquirer[entries["city"]] if n else np.zeros(0, np.int64),
            "settle_day": np.full(n, day + 1, np.int64),
        }

    def commit(
        self, ledger: Ledger, day: int, entries: dict[str, np.ndarray], bus, last: bool
    ) -> None:
        """Settle yesterday's positions, then post and clear today's entries; on the ``last``
        day of the run, settle them too (on the next day's date)."""
        if not self.on:
            return
        if self._due is not None:
            self._settle(ledger, self._due, bus)
            self._due = None
        paid = entries["amount_fen"] > 0
        if paid.any():
            self._clear(ledger, day, entries, paid)
        if last and self._due is not None:
            self._settle(ledger, self._due, bus)
            self._due = None

    def _clear(self, ledger: Ledger, day: int, entries: dict[str, np.ndarray], paid) -> None:
        issuer = entries["issuer"][paid]
        post_flow(
            ledger, day, MEMO_SSC_ENTRY, issuer, entries["amount_fen"][paid], self.participants
        )
        pairs = self._pairs(entries["acquirer"][paid], entries["amount_fen"][paid])
        # As an exchange clears: the issuer's payable, the operator's revenue less the channel's
        # fee, the channel's fee income; positions for the next day.
        post_clearing(ledger, day, pairs, self.participants)
        self._due = settlement_positions(day + 1, pairs, len(self.participants))

    def _pairs(self, acquirer: np.ndarray, amount: np.ndarray) -> PairTotals:
        acq, inv = np.unique(acquirer, return_inverse=True)
        gross = np.bincount(inv, weights=amount, minlength=len(acq)).astype(np.int64)
        count = np.bincount(inv, minlength=len(acq)).astype(np.int64)
        fee = (gross * self.fee_bp + 5_000) // 10_000
        k = len(acq)
        return PairTotals(
            np.full(k, self.issuer, np.int32),
            acq.astype(np.int32),
            np.full(k, self.channel, np.int32),
            count,
            gross,
            fee,
            gross - fee,
        )

    def _settle(self, ledger: Ledger, positions: Positions, bus) -> None:
        """Every participant settles its position through its bank on the settlement date;
        the channel's book (its members and its fee) is published like any node's."""
        post_settlement(
            ledger,
            positions.settle_day,
            positions,
            self.participants,
            issuers_pay_from_deposit=False,  # account debits: no settlement deposit
        )
        members = positions.participant != self.channel
        counterparty = np.concatenate(
            [positions.participant[members], positions.participant[~members]]
        ).astype(np.int64)
        bus.publish(
            SettlementDone(
                positions.settle_day,
                {
                    "node": np.full(len(counterparty), self.channel, np.int64),
                    "participant": counterparty,
                    "role": self.participants.role[counterparty],
                    "position_fen": np.concatenate(
                        [positions.position_fen[members], positions.position_fen[~members]]
                    ),
                },
            )
        )


__all__ = [
    "ENTRY_SEQ_BASE",
    "MEMO_SSC_ENTRY",
    "VENUE_KINDS",
    "SocialSecurity",
    "SocialSecurityChannel",
    "VenueCity",
    "VenueCollector",
    "Venues",
    "carries_card",
    "holders",
    "rides_with_card",
    "plan_entries",
    "venue_cities",
]
