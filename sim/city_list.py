"""The interoperable city list over time, as each acquirer's terminals apply it.

Cards of a city on the national list (交通联合) are accepted by every listed city's terminals.
The list changes: a newly listed city's cards are accepted by an acquirer only once its
terminals are updated (at most 30 days after the notice), and a delisted city's cards are
refused once they are updated again (at most 7 days) — DOMAIN.md §2. Between the notice and the
update, riders who present the card are refused at the reader (``card_not_accepted``).

``CityList`` answers, for a day, whether a city's riders present its cards elsewhere and whether
a terminal of a given line takes them. Cities without a change keep the
acceptance their data give (``accepts_home_cards``); a city whose first change is a listing was
not on the list before it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from sim.world_settings import Section


class ListChange(Section):
    """A change of the interoperable city list."""

    date: dt.date = Field(description="Date of the notice.")
    city_code: str = Field(description="JT/T code of the city whose cards are (de)listed.")
    change: Literal["listed", "delisted"] = Field(description="Added to or removed from the list.")


class TerminalLag(Section):
    """Days an acquirer takes to update its terminals after a list change."""

    listed: Annotated[int, Field(ge=0, le=30)] = Field(
        30, description="Days after a listing notice until its terminals accept the cards."
    )
    delisted: Annotated[int, Field(ge=0, le=7)] = Field(
        7, description="Days after a delisting notice until its terminals refuse the cards."
    )


class CityList:
    """The list as a run's city sees it (see the module docstring).

    Args:
        changes: the list changes, any order.
        start: the run's first date (day 0).
        city_codes: JT/T codes of the shard's city (0) and its interoperable cities (1..n).
        line_lags: per line, the (listed, delisted) lags of the acquirer running it.
    """

    def __init__(
        self,
        changes: tuple[ListChange, ...],
        start: dt.date,
        city_codes: list[str],
        line_lags: np.ndarray,
    ) -> None:
        self.line_lags = np.asarray(line_lags, dtype=np.int64).reshape(-1, 2)
        # Per city index: its changes as (day of the notice, 1 listed / 0 delisted), by date.
        self._changes: dict[int, list[tuple[int, int]]] = {}
        for change in sorted(changes, key=lambda c: c.date):
            if change.city_code not in city_codes:
                continue  # a city this shard never meets
            c = city_codes.index(change.city_code)
            day = (change.date - start).days
            self._changes.setdefault(c, []).append((day, int(change.change == "listed")))

    @property
    def changes_anything(self) -> bool:
        """Whether any city this shard meets changes its listing."""
        return bool(self._changes)

    def riders_try(self, city: int, day: int) -> bool:
        """Whether ``city``'s riders present their cards elsewhere on ``day``: from the notice
        of its listing on (before it, it was never on the list). A delisting is not felt until
        a terminal refuses the card, so riders go on trying."""
        changes = self._changes.get(city)
        return not changes or not changes[0][1] or day >= changes[0][0]

    def terminal_accepts(self, card_city: np.ndarray, line: np.ndarray, day: int) -> np.ndarray:
        """Per tap: whether the terminal of ``line`` takes a card of ``card_city`` on ``day``."""
        card_city = np.asarray(card_city, dtype=np.int64)
        ok = np.ones(len(card_city), dtype=bool)
        for city, changes in self._changes.items():
            mine = np.flatnonzero(card_city == city)
            if len(mine) == 0:
                continue
            lag = self.line_lags[line[mine]]
            state = np.full(len(mine), not changes[0][1])
            for when, is_listing in changes:
                updated = day >= when + lag[:, 0 if is_listing else 1]
                state = np.where(updated, bool(is_listing), state)
            ok[mine] = state
        return ok


#: Columns of a day's refused card presentations (``refuse_unlisted``; the declined taps of
#: sim/day.py's ``declined_refusals`` have the same).
REFUSAL_COLUMNS = (
    "row", "t_s", "line", "device", "medium", "card_city", "amount_fen", "reason", "fallback",
    "tx_id",
)  # fmt: skip
QR_FALLBACK_DELAY_S = 20


def no_refusals() -> dict[str, np.ndarray]:
    """An empty set of refusals."""
    return {name: np.zeros(0, dtype=np.int64) for name in REFUSAL_COLUMNS}


def refuse_unlisted(world, streams, day: int, cols: dict[str, np.ndarray]):
    """The day's tap columns without the card taps the terminals refuse by the city list, and
    those refusals (columns ``REFUSAL_COLUMNS``).

    A rider refused away pays with the 一码通行 code where they have it and the city takes it
    (the boarding stays, as a QR tap 20 s later at the list fare, without concession, transfer
    or cap); otherwise pays cash with ``behaviour.declined_pays_other_way_share``, or does not
    ride. Either way the refusal is kept with what the rider did. The card's other taps here
    were priced with the refused ones: sim/day.py prices them again without."""
    from sim.clearing import R_CARD_NOT_ACCEPTED
    from sim.codes import (
        FALLBACK_CASH,
        FALLBACK_NONE,
        FALLBACK_QR,
        MEDIA,
        is_stored_value,
    )

    if not world.city_list.changes_anything:
        return cols, no_refusals()
    pop = world.population
    # Cards used outside their own city: this city's cards away, other cities' cards here (a
    # city's own terminals always take its own cards).
    card_city = pop.home_city[cols["row"]].astype(np.int64)
    card = np.flatnonzero(
        is_stored_value(cols["medium"]) & ((card_city != 0) | (cols["line"] >= world.n_local_lines))
    )
    card_city = card_city[card]
    ok = world.city_list.terminal_accepts(card_city, cols["line"][card], day)
    refused = card[~ok]
    if len(refused) == 0:
        return cols, no_refusals()
    yima = MEDIA.index("qr_yimatongxing")
    cities = [] if world.scenario.interop is None else world.scenario.interop.cities.values()
    takes_qr = np.array([False, *(c.accepts_yimatongxing for c in cities)])
    rows = cols["row"][refused]
    away = cols["line"][refused] >= world.n_local_lines
    qr = away & (pop.qr_channel[rows] == yima) & takes_qr[cols["city"][refused].astype(np.int64)]
    u = streams.uniform("refused.fallback", day, cols["tap_key"][refused])
    cash = ~qr & (u < world.scenario.behaviour.declined_pays_other_way_share)
    refusals = {
        "row": rows,
        "t_s": cols["t_s"][refused],
        "line": cols["line"][refused],
        "device": cols["device"][refused],
        "medium": cols["medium"][refused],
        "card_city": card_city[~ok],
        "amount_fen": cols["amount_fen"][refused],
        "reason": np.full(len(refused), R_CARD_NOT_ACCEPTED, dtype=np.int64),
        "fallback": np.where(qr, FALLBACK_QR, np.where(cash, FALLBACK_CASH, FALLBACK_NONE)),
        "tx_id": np.full(len(refused), -1, dtype=np.int64),
    }
    cols = dict(cols)
    paid_by_qr = refused[qr]
    reset = ("concession_fen", "transfer_fen", "cap_fen", "is_transfer", "fare_capped")
    for name in ("medium", "t_s", "amount_fen", "home_card", *reset):
        cols[name] = cols[name].copy()
    cols["medium"][paid_by_qr] = yima
    cols["t_s"][paid_by_qr] = np.minimum(cols["t_s"][paid_by_qr] + QR_FALLBACK_DELAY_S, 86_399)
    # A visitor's QR code pays the list fare: no card concession, and the card's transfer chain
    # and cap do not carry over to another account (taps away carry neither today; reset all
    # the same, so amount = list - concession - transfer - cap holds for the new record).
    for name in reset:
        cols[name][paid_by_qr] = 0
    cols["amount_fen"][paid_by_qr] = cols["list_fare_fen"][paid_by_qr]
    cols["home_card"][paid_by_qr] = False
    keep = np.ones(len(cols["row"]), dtype=bool)
    keep[refused[~qr]] = False
    return {name: col[keep] for name, col in cols.items()}, refusals


__all__ = [
    "REFUSAL_COLUMNS",
    "CityList",
    "ListChange",
    "TerminalLag",
    "no_refusals",
    "refuse_unlisted",
]
