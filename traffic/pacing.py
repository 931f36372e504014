"""When each record of a stream is due: an open workload model.

Records are sent when they are due, whatever the system under test answers: a slow sink makes
the stream fall behind (the lag is reported), never changes the schedule. A pacer maps a
record's place in the stream and its simulated time to seconds after the stream started:

- ``Unpaced``: as fast as the sink takes them (measuring generation, or a bulk load);
- ``SpeedPacer`` (``--speed X``): simulated time X times faster than the wall clock, so the
  day's shape (morning and evening peaks, the quiet night) is kept;
- ``RatePacer`` (``--rate R``): R records a second, evenly;
- ``ProfilePacer`` (``--profile FILE``): stages like k6's — each ramps linearly from the rate
  before it to its ``target`` over its ``duration`` — and the stream ends with the last stage.

A profile file:

    stages:
      - {duration: 30s, target: 2000}   # ramp up from 0
      - {duration: 2m, target: 2000}    # hold
      - {duration: 10s, target: 20000}  # spike
      - {duration: 30s, target: 0}      # ramp down
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _seconds(value):
    """A duration: a number of seconds, or text like ``500ms``, ``30s``, ``2m``, ``1h``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_S[match.group(2)]
    raise ValueError(f"expected a duration such as 30, 30s, 2m or 1h, got {value!r}")


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class Stage(BaseModel):
    """One stage of a profile: ramp linearly to ``target`` records/s over ``duration``."""

    model_config = ConfigDict(extra="forbid")
    duration: Duration
    target: float = Field(ge=0, description="records per second at the end of the stage")


class Profile(BaseModel):
    """A load profile file (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    stages: list[Stage] = Field(min_length=1)


def load_profile(path: str | Path) -> Profile:
    """Read a profile file; ``sim.yaml_config.ConfigError`` names the file, line and field."""
    from sim.yaml_config import load_config

    return load_config(path, Profile)


class Pacer(ABC):
    """Seconds after the start at which records are due (module docstring)."""

    #: Wall seconds after which the stream ends (None: when the records run out).
    ends_after_s: float | None = None

    @abstractmethod
    def due(self, seq: np.ndarray, event_s: np.ndarray) -> np.ndarray:
        """Due times (float seconds after the start) of records at stream positions ``seq``
        (counted from the first record this stream sends) with simulated times ``event_s``."""

    def target_rate(self, elapsed_s: float) -> float | None:
        """The rate the schedule asks for at ``elapsed_s`` (None: as fast as possible, or set
        by the simulated day)."""
        return None

    @abstractmethod
    def describe(self) -> str:
        """The pacing in a few words (the report and the summary line)."""


class Unpaced(Pacer):
    def due(self, seq, event_s):
        return np.zeros(len(seq))

    def describe(self) -> str:
        return "as fast as the sink takes them"


class RatePacer(Pacer):
    def __init__(self, rate: float) -> None:
        self.rate = float(rate)

    def due(self, seq, event_s):
        return np.asarray(seq, dtype=np.float64) / self.rate

    def target_rate(self, elapsed_s: float) -> float:
        return self.rate

    def describe(self) -> str:
        return f"{self.rate:,.0f} records/s"


class SpeedPacer(Pacer):
    """Simulated time ``speed`` times faster than the wall clock, from the first record."""

    def __init__(self, speed: float) -> None:
        self.speed = float(speed)
        self.origin_s: int | None = None  # simulated time of the first record

    def due(self, seq, event_s):
        event_s = np.asarray(event_s, dtype=np.int64)
        if self.origin_s is None and len(event_s):
            self.origin_s = int(event_s[0])
        if self.origin_s is None:
            return np.zeros(0)
        return np.maximum(event_s - self.origin_s, 0) / self.speed

    def describe(self) -> str:
        return f"simulated time x{self.speed:g}"


class ProfilePacer(Pacer):
    """Piecewise-linear rate (stages); record n is due when the cumulative count reaches n+1."""

    def __init__(self, profile: Profile, resolution_s: float = 0.001) -> None:
        self.profile = profile
        ends = np.cumsum([0.0] + [s.duration for s in profile.stages])
        rates = np.array([0.0] + [s.target for s in profile.stages])
        self.ends_after_s = float(ends[-1])
        self._knots_s, self._knots_rate = ends, rates
        grid = np.arange(0.0, self.ends_after_s + resolution_s, resolution_s)
        rate = np.interp(grid, ends, rates)
        # Cumulative records by the trapezoid rule: exact for a piecewise-linear rate.
        count = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2 * np.diff(grid))])
        self._grid, self._count = grid, count
        self.capacity = int(np.floor(count[-1] + 1e-9))  # records the profile sends in all

    def due(self, seq, event_s):
        seq = np.asarray(seq, dtype=np.float64)
        due = np.interp(seq + 1, self._count, self._grid)
        return np.where(seq < self.capacity, due, np.inf)

    def target_rate(self, elapsed_s: float) -> float:
        return float(np.interp(elapsed_s, self._knots_s, self._knots_rate))

    def describe(self) -> str:
        return f"profile of {len(self.profile.stages)} stages, {self.ends_after_s:g} s"


def make_pacer(
    rate: float | None = None, speed: float | None = None, profile: Profile | None = None
) -> Pacer:
    """The pacer for the CLI's ``--rate``, ``--speed`` or ``--profile`` (at most one)."""
    given = [x is not None for x in (rate, speed, profile)]
    if sum(given) > 1:
        raise ValueError("--rate, --speed and --profile exclude each other; give one")
    if rate is not None:
        return RatePacer(rate)
    if speed is not None:
        return SpeedPacer(speed)
    if profile is not None:
        return ProfilePacer(profile)
    return Unpaced()


__all__ = [
    "Pacer",
    "Profile",
    "ProfilePacer",
    "RatePacer",
    "SpeedPacer",
    "Stage",
    "Unpaced",
    "load_profile",
    "make_pacer",
]
