"""The respond step of a day: riders see the prices of their planned trips and may change them.

The day's flow is plan -> price -> respond (sim/day.py). A response receives the priced taps and
returns the taps that are really ridden: the same object when nothing changes (then nothing is
priced again and the outputs stay exactly as planned), or a new ``DayTaps`` with trips dropped,
added or moved, which the day prices again (transfers and caps depend on the whole day).

The elasticity model of the policy lab plugs in here; ``DropTripsAbove`` is a plain rule used to
check that price can change ridership while every money invariant still holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agents.citizen import DayTaps
from sim.population import Cardholders


@dataclass(frozen=True)
class PricedTrips:
    """A day's planned taps at home with the fare of each (columns aligned with ``taps``)."""

    day: int
    day_type: int
    taps: DayTaps
    fares: dict[str, np.ndarray]  # list_fare_fen, concession_fen, ..., amount_fen per tap
    population: Cardholders


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
