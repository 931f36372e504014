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

Positions are the stream's own (0 for its first record), so a resumed stream (``start``) goes
on where the interrupted one was: a profile from the record it stopped at, with the records the
profile has left, the resumed stream ending where the uninterrupted one would.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
#: Bounds of a stage. They keep every count and due time of a profile exact in float64 (a
#: profile sends at most MAX_RATE x MAX_DURATION_S = 3.2e15 records, under 2^53) and are far
#: beyond any sink (the fastest, the null sink, takes ~2 million records/s) or soak test.
MAX_RATE = 100_000_000
MAX_DURATION_S = 366 * 86_400.0


def _seconds(value):
    """A duration: a number of seconds, or text like ``500ms``, ``30s``, ``2m``, ``1h``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite duration such as 30, 30s, 2m or 1h, got {value}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_S[match.group(2)]
    raise ValueError(f"expected a duration such as 30, 30s, 2m or 1h, got {value!r}")


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=MAX_DURATION_S)]


class Stage(BaseModel):
    """One stage of a profile: ramp linearly to ``target`` records/s over ``duration``."""

    model_config = ConfigDict(extra="forbid")
    duration: Duration
    target: float = Field(
        ge=0,
        le=MAX_RATE,
        allow_inf_nan=False,
        description="records per second at the end of the stage",
    )


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
    #: Stream position of the first record this session sends (``start``).
    first_seq: int = 0

    def start(self, first_seq: int) -> None:
        """A session starts at stream position ``first_seq`` (0, or where ``--resume`` goes
        on); call before ``due``."""
        self.first_seq = int(first_seq)

    @abstractmethod
    def due(self, seq: np.ndarray, event_s: np.ndarray) -> np.ndarray:
        """Due times (float seconds after the session started) of records at stream positions
        ``seq`` with simulated times ``event_s``; ``inf`` past the end of a profile."""

    def target_rate(self, elapsed_s: float) -> float | None:
        """The rate the schedule asks for at ``elapsed_s`` (None: as fast as possible, or set
        by the simulated day)."""
        return None

    def identity(self) -> dict:
        """The pacing as the checkpoint keeps it (traffic/stream.py compares it on resume)."""
        return {"kind": "unpaced"}

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
        return (np.asarray(seq, dtype=np.float64) - self.first_seq) / self.rate

    def target_rate(self, elapsed_s: float) -> float:
        return self.rate

    def identity(self) -> dict:
        return {"kind": "rate", "rate": self.rate}

    def describe(self) -> str:
        return f"{self.rate:,.0f} records/s"


class SpeedPacer(Pacer):
    """Simulated time ``speed`` times faster than the wall clock, from the first record."""

    def __init__(self, speed: float) -> None:
        self.speed = float(speed)
        self.origin_s: int | None = None  # simulated time of the first record

    def start(self, first_seq: int) -> None:
        super().start(first_seq)
        self.origin_s = None  # each session's clock starts at its own first record

    def due(self, seq, event_s):
        event_s = np.asarray(event_s, dtype=np.int64)
        if self.origin_s is None and len(event_s):
            self.origin_s = int(event_s[0])
        if self.origin_s is None:
            return np.zeros(0)
        return np.maximum(event_s - self.origin_s, 0) / self.speed

    def identity(self) -> dict:
        return {"kind": "speed", "speed": self.speed}

    def describe(self) -> str:
        return f"simulated time x{self.speed:g}"


class ProfilePacer(Pacer):
    """Piecewise-linear rate (stages); record n is due when the cumulative count reaches n+1.

    The count is integrated and inverted stage by stage, in closed form: on a stage starting
    at ``t0`` with rate ``r0`` and slope ``a``, the count after ``tau`` seconds is
    ``r0 tau + a tau^2 / 2``, so the record that brings it to ``m`` is due at
    ``tau = 2m / (r0 + sqrt(r0^2 + 2am))`` (the root that stays exact as ``a`` nears 0). The
    cost is a few numbers per stage, whatever the profile's length or rates.

    A session that starts at stream position ``s`` (``start``) starts on the profile's clock
    where record ``s - 1`` was due: the rest of the profile, with the records it has left."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        durations = np.array([s.duration for s in profile.stages], dtype=np.float64)
        self._knots_s = np.concatenate([[0.0], np.cumsum(durations)])
        self._knots_rate = np.array([0.0] + [s.target for s in profile.stages])
        self.ends_after_s = float(self._knots_s[-1])
        # Records due by each knot: the trapezoid of each stage (exact, the rate being linear).
        areas = (self._knots_rate[1:] + self._knots_rate[:-1]) / 2 * durations
        self._knots_count = np.concatenate([[0.0], np.cumsum(areas)])
        total = float(self._knots_count[-1])
        # Records the profile sends in all; the tolerance absorbs the sums' rounding.
        self.capacity = int(math.floor(total + max(1e-9, total * 1e-12)))
        self._offset_s = 0.0  # the profile's clock when this session started

    def start(self, first_seq: int) -> None:
        super().start(first_seq)
        at = min(self.first_seq, self.capacity)
        self._offset_s = float(self._time_of(np.array([at], dtype=np.float64))[0]) if at else 0.0

    def _time_of(self, count: np.ndarray) -> np.ndarray:
        """Seconds on the profile's clock at which ``count`` records (each > 0, at most the
        capacity) have come due."""
        knots_s, rate, cum = self._knots_s, self._knots_rate, self._knots_count
        # The stage where the count is reached: the first knot holding at least ``count``.
        stage = np.clip(np.searchsorted(cum, count, side="left"), 1, len(cum) - 1) - 1
        r0 = rate[stage]
        slope = (rate[stage + 1] - r0) / (knots_s[stage + 1] - knots_s[stage])
        m = np.maximum(count - cum[stage], 0.0)
        root = np.sqrt(np.maximum(r0 * r0 + 2.0 * slope * m, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = np.where(m > 0, 2.0 * m / (r0 + root), 0.0)
        tau = np.clip(
            np.nan_to_num(tau, nan=0.0, posinf=0.0), 0.0, knots_s[stage + 1] - knots_s[stage]
        )
        return knots_s[stage] + tau

    def due(self, seq, event_s):
        seq = np.asarray(seq, dtype=np.float64)
        inside = seq < self.capacity
        due = np.full(len(seq), np.inf)
        if inside.any():
            due[inside] = self._time_of(seq[inside] + 1) - self._offset_s
        return due

    def target_rate(self, elapsed_s: float) -> float:
        return float(np.interp(elapsed_s + self._offset_s, self._knots_s, self._knots_rate))

    def identity(self) -> dict:
        return {"kind": "profile", "stages": [[s.duration, s.target] for s in self.profile.stages]}

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
