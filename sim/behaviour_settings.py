"""Scenario sections of the behavioural response: ``behaviour.response`` and
``behaviour.card_lending`` (the code that uses them: sim/response.py, sim/lending.py).

Every default names its source: DOMAIN.md §4 where it gives a figure, otherwise it is named an
assumption (and listed in docs/nantong_parameters.md). The defaults are on in every scenario, but
the price response acts only where a rider's price differs from the reference price (the base
scenario's, sim/reference.py) and card lending only when ``card_lending.share`` > 0, so a
baseline scenario runs exactly as without them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from sim import clock
from sim.codes import CARD_TYPES, DAY_TYPES
from sim.settings_base import SettingsModel

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Windows = clock.window_texts()


def _card_type(name: str) -> str:
    if name not in CARD_TYPES:
        raise ValueError(f"unknown card type {name!r}; expected one of: {', '.join(CARD_TYPES)}")
    return name


def _day_type(name: str) -> str:
    if name not in DAY_TYPES:
        raise ValueError(f"unknown day type {name!r}; expected one of: {', '.join(DAY_TYPES)}")
    return name


CardTypeName = Annotated[str, AfterValidator(_card_type)]
DayTypeName = Annotated[str, AfterValidator(_day_type)]


def _non_empty(model: BaseModel, *names: str) -> None:
    # Checked here, not by min_length: an unknown name would otherwise also be reported as an
    # empty list (the item fails, then the length), a confusing second message.
    for name in names:
        if not getattr(model, name):
            raise ValueError(f"{name} is empty; expected at least one")


class _Model(SettingsModel):
    """The base of this module's settings (sim/settings_base.py)."""


class Segment(_Model):
    """How one group of riders reacts to price."""

    fare_elasticity: float = Field(
        le=0.0,
        ge=-5.0,
        description="Short-run fare elasticity of trips at the fare elasticity_fare_fen "
        "(all-day, workday). Negative: a dearer fare means fewer trips.",
    )
    time_cost_fen: int = Field(
        gt=0,
        le=100_000,
        description="Money value of a trip's door-to-door time: the non-fare part of its "
        "generalised cost, which keeps the response to a fare from or to zero finite.",
    )


def _default_segments() -> dict[str, Segment]:
    return {
        # DOMAIN.md §4: short-run fare elasticity about -0.3. Time cost: assumption, a 30-minute
        # door-to-door trip (DOMAIN.md §4: mean metro trip about 30 min) at 10 元/h.
        "default": Segment(fare_elasticity=-0.3, time_cost_fen=500),
        # DOMAIN.md §4: free elderly rides induced about 5% more elderly trips (Beijing 2009).
        # Assuming they paid Beijing's 0.4 元 card fare before and half the working-age value
        # of time (assumption): ((0 + 250) / (40 + 250)) ** e_g = 1.05 gives a generalised-cost
        # elasticity e_g = -0.33, i.e. -0.15 at a 2 元 fare (docs/design_notes.md).
        "longevity": Segment(fare_elasticity=-0.15, time_cost_fen=250),
        "love": Segment(fare_elasticity=-0.15, time_cost_fen=250),
    }


class TimeOfDayFactors(_Model):
    """Multipliers on the elasticity by time of day, on workdays (other days: the day factor)."""

    am_peak: float = Field(0.6, ge=0, description="Boardings in am_peak_hours (assumption).")
    pm_peak: float = Field(0.8, ge=0, description="Boardings in pm_peak_hours (assumption).")
    off_peak: float = Field(1.2, ge=0, description="Other workday boardings (assumption).")


class DayTypeFactors(_Model):
    """Multipliers on the elasticity by day type."""

    workday: float = Field(1.0, ge=0, description="Workdays (the reference).")
    weekend: float = Field(1.3, ge=0, description="Weekends (assumption; DOMAIN.md §4: weekend "
                           "riders are the most sensitive).")  # fmt: skip
    holiday: float = Field(1.3, ge=0, description="Public holidays (assumption, as weekends).")
    spring_festival: float = Field(1.3, ge=0, description="Spring Festival (assumption).")


class ResponseSettings(_Model):
    """How riders respond when what a trip costs differs from what they are used to paying.

    A journey's demand ratio is ``((p + g) / (p0 + g)) ** e_g`` with ``p`` its price today,
    ``p0`` its reference price, ``g`` the segment's time cost and ``e_g`` the generalised-cost
    elasticity ``e * (elasticity_fare_fen + g) / elasticity_fare_fen``, where ``e`` is the
    segment's fare elasticity times the day-type, time-of-day and horizon factors: so the fare
    elasticity at a fare of ``elasticity_fare_fen`` is ``e``, and a change from or to a free
    ride has a finite effect. Below 1 a journey is given up with probability ``1 - ratio``;
    above 1 the rider adds a copy of it with probability ``ratio - 1`` (at most one a day).
    """

    segments: dict[str, Segment] = Field(
        default_factory=_default_segments,
        description="Elasticity and time cost by card type, 'default' for every card type not "
        "listed. A segment's fields given override the built-in segment of its name (default, "
        "longevity, love; a new card type starts from default); the others stay.",
    )
    elasticity_fare_fen: int = Field(
        200,
        gt=0,
        le=100_000,
        description="The fare at which the segments' fare elasticities hold (Nantong's flat "
        "2 元 bus fare, the kind of fare the DOMAIN.md §4 figures were measured at).",
    )
    day_type_factors: DayTypeFactors = Field(
        default_factory=DayTypeFactors, description="Elasticity multipliers by day type."
    )
    time_of_day_factors: TimeOfDayFactors = Field(
        default_factory=TimeOfDayFactors,
        description="Elasticity multipliers by time of day on workdays (DOMAIN.md §4: the AM "
        "peak is the least sensitive; the magnitudes are assumptions).",
    )
    am_peak_hours: Windows = Field(("07:00-09:00",), description="AM peak (DOMAIN.md §4).")
    pm_peak_hours: Windows = Field(("17:00-19:00",), description="PM peak (DOMAIN.md §4).")
    horizon: Literal["short", "long", "ramp"] = Field(
        "short",
        description="short: short-run elasticities throughout (the default: a compare runs "
        "weeks, not years); long: long-run ones (short-run x long_run_factor); ramp: from "
        "short- to long-run, linearly over ramp_days from the day the fares took effect.",
    )
    long_run_factor: float = Field(
        2.0, ge=1.0, le=5.0, description="Long-run / short-run elasticity (DOMAIN.md §4: 1.75-2.5)."
    )
    ramp_days: int = Field(365, gt=0, description="Days for the ramp to reach the long run.")
    shift_share: Share = Field(
        0.5,
        description="Chance that a rider whose journey is dearer inside a concession's time "
        "window than just outside it moves the journey out of the window (assumption).",
    )
    shift_max_min: int = Field(
        120,
        ge=0,
        le=1440,
        description="Largest move of a journey in time, minutes (assumption: a two-hour peak "
        "window can be left from its middle).",
    )
    shift_margin_min: int = Field(
        15,
        ge=1,
        le=240,
        description="A moved journey boards up to this many minutes outside the window, drawn "
        "uniformly per journey (assumption).",
    )
    medium_switch_share: Share = Field(
        0.3,
        description="Chance that a holder of a card and a QR channel, whose other medium "
        "became cheaper against the reference, pays the day with it (assumption).",
    )
    medium_switch_min_gain_fen: int = Field(
        50,
        ge=1,
        description="Smallest daily gain (fen) against the reference that makes a holder "
        "consider switching medium (assumption).",
    )

    @field_validator("segments", mode="before")
    @classmethod
    def _over_built_in(cls, value: object) -> object:
        # A segment given in part keeps the rest of the built-in one of its name (or of the
        # default segment, for a card type with none), so one field can be set or swept alone.
        if isinstance(value, dict):
            built_in = {name: seg.model_dump() for name, seg in _default_segments().items()}
            given = {
                name: {**built_in.get(name, built_in["default"]), **seg}
                if isinstance(seg, dict)
                else seg
                for name, seg in value.items()
            }
            return {**built_in, **given}
        return value

    @field_validator("segments")
    @classmethod
    def _known_segments(cls, value: dict[str, Segment]) -> dict[str, Segment]:
        unknown = sorted(set(value) - {"default", *CARD_TYPES})
        if unknown:
            raise ValueError(
                f"unknown segment(s) {unknown}; expected 'default' or card types: "
                f"{', '.join(CARD_TYPES)}"
            )
        return value


class DetectionRule(_Model):
    """A card-lending detection rule: a card of ``card_types`` boarding in ``hours`` on at
    least ``min_days`` of any ``window_days`` consecutive days of ``day_types`` is flagged."""

    name: str = Field(min_length=1, description="Name of the rule in reports.")
    card_types: tuple[CardTypeName, ...] = Field(description="Card types watched.")
    hours: Windows = Field(description="'HH:MM-HH:MM' windows of a hit.")
    day_types: tuple[DayTypeName, ...] = Field(("workday",), description="Day types counted.")
    min_days: int = Field(ge=1, le=64, description="Days with a hit needed in the window.")
    window_days: int = Field(ge=1, le=64, description="Consecutive counted days looked at.")

    @model_validator(mode="after")
    def _days(self) -> DetectionRule:
        _non_empty(self, "card_types", "hours", "day_types")
        if self.min_days > self.window_days:
            raise ValueError(
                f"min_days {self.min_days} is more than window_days {self.window_days}; "
                "expected min_days <= window_days"
            )
        return self


def _default_rules() -> tuple[DetectionRule, ...]:
    # DOMAIN.md §4 / issue 8: "an elderly card tapping in the AM peak every workday".
    return (
        DetectionRule(
            name="elderly_am_peak",
            card_types=("longevity", "love"),
            hours=("07:00-09:00",),
            min_days=4,
            window_days=5,
        ),
    )


class CardLending(_Model):
    """Misuse of concession cards by other people: a holder lends the card to a working-age
    commuter of the same region, who rides their own day with it (their own card stays home)."""

    share: Share = Field(
        0.0,
        description="Share of the cards of card_types lent (DOMAIN.md §4: misuse exists, true "
        "prevalence unknown: 0 by default, a parameter to explore).",
    )
    card_types: tuple[CardTypeName, ...] = Field(
        ("longevity",), description="Card types that may be lent (free-ride 长寿卡)."
    )
    borrower_age_min: int = Field(18, ge=0, le=120, description="Youngest borrower.")
    borrower_age_max: int = Field(59, ge=0, le=120, description="Oldest borrower.")
    day_types: tuple[DayTypeName, ...] = Field(
        ("workday",), description="Day types the borrower rides with the card."
    )
    use_share: Share = Field(
        0.8,
        description="Chance the borrower takes the card on a riding day of day_types "
        "(assumption: the holder keeps it some days).",
    )
    detection: tuple[DetectionRule, ...] = Field(
        default_factory=_default_rules, description="Detection rules, reported with precision "
        "and recall against the ground truth.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _ages(self) -> CardLending:
        _non_empty(self, "card_types", "day_types")
        if self.borrower_age_min > self.borrower_age_max:
            raise ValueError(
                f"borrower_age_min {self.borrower_age_min} is above borrower_age_max "
                f"{self.borrower_age_max}; expected min <= max"
            )
        names = [r.name for r in self.detection]
        if len(set(names)) != len(names):
            raise ValueError(f"detection rule names must be unique; got {names}")
        return self
