"""The respond step of a day: riders see the prices of their planned trips and may change them.

The day's flow is plan -> price -> respond (sim/day.py). A response receives the priced taps and
returns the taps that are really ridden: the same object when nothing changes (then nothing is
priced again and the outputs stay exactly as planned), or a new ``DayTaps`` with trips dropped,
added or moved, which the day prices again (transfers and caps depend on the whole day).

A run's response is its scenario's (``scenario_response``): concession cards lent to other
people (sim/lending.py), then riders' reactions to prices that differ from the ones they are
used to (sim/response.py: elasticities, moving out of a concession's time window, switching
medium). With no reference to differ from and no lending it is ``NO_RESPONSE``, so a baseline
runs exactly as planned. ``DropTripsAbove`` is a plain rule used to check that price can change
ridership while every money invariant still holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agents.citizen import DayTaps
from sim.lending import CardLendingStep
from sim.population import Cardholders
from sim.response import PriceResponse

if TYPE_CHECKING:
    from sim.rng import Streams
    from sim.world import World


@dataclass(frozen=True)
class PricedTrips:
    """A day's planned taps at home with the fare of each (columns aligned with ``taps``)."""

    day: int
    day_type: int
    taps: DayTaps
    fares: dict[str, np.ndarray]  # list_fare_fen, concession_fen, ..., amount_fen per tap
    population: Cardholders
    # price(taps, world): other taps of this day priced as ``world`` prices them (its fares and
    # card types; the day's transfers and caps). None: no pricing beyond ``fares``.
    price: Callable[[DayTaps, World], dict[str, np.ndarray]] | None = None


class Response(Protocol):
    """How riders react to the prices of their planned trips."""

    def respond(self, priced: PricedTrips) -> DayTaps:
        """The taps really ridden: ``priced.taps`` itself when nothing changes."""
        ...


class NoResponse:
    """Riders ride what they planned whatever it costs (the calibrated baseline)."""

    def respond(self, priced: PricedTrips) -> DayTaps:
        """Return the planned taps unchanged."""
        return priced.taps


NO_RESPONSE = NoResponse()


@dataclass(frozen=True)
class DropTripsAbove:
    """Riders give up every trip (all its taps) on which any tap costs more than ``max_fen``."""

    max_fen: int

    def respond(self, priced: PricedTrips) -> DayTaps:
        """Drop the journeys with a tap priced above ``max_fen``."""
        too_dear = priced.fares["amount_fen"] > self.max_fen
        if not too_dear.any():
            return priced.taps
        dropped = np.isin(priced.taps.journey, priced.taps.journey[too_dear])
        return priced.taps.take(np.flatnonzero(~dropped))


class ScenarioResponse:
    """A scenario's behavioural response for one run of one world: lent cards ridden by their
    borrowers, and riders reacting to prices (see the module docstring)."""

    def __init__(self, world: World, streams: Streams) -> None:
        behaviour = world.scenario.behaviour
        self.prices = PriceResponse(world, streams)
        self.lending = CardLendingStep(world, streams) if behaviour.card_lending.share > 0 else None

    def respond(self, priced: PricedTrips) -> DayTaps:
        """The taps ridden: lending first decides who rides which card today; the others
        respond to prices; then borrowers' taps move onto the lent cards."""
        today = None
        skip = np.zeros(0, np.int64)
        if self.lending is not None:
            today = self.lending.today(priced.taps, priced.day, priced.day_type)
            skip = self.lending.rows(today)
        taps = priced.taps
        if priced.price is not None:
            taps = self.prices.respond(
                taps, priced.fares["amount_fen"], priced.day, priced.day_type, priced.price, skip
            )
        if today is not None:
            taps = self.lending.apply(taps, today)
        return taps


def scenario_response(world: World, streams: Streams) -> Response:
    """The response a scenario asks for (``behaviour.response``, ``behaviour.card_lending``):
    ``NO_RESPONSE`` when riders can never see a price other than their reference and nobody
    lends a card, so such a run is exactly the planned one."""
    sc = world.scenario
    fare_changes = any(inc.kind == "fare_change" for inc in sc.incidents)
    if sc.reference is None and not fare_changes and sc.behaviour.card_lending.share == 0:
        return NO_RESPONSE
    return ScenarioResponse(world, streams)
