"""Fare policy as data: the pydantic models of a scenario's ``fares:`` section.

These models only validate and describe a policy; ``sim/fares.py`` compiles them into numpy lookup
tables and prices taps. Money is integer fen; percentages are 0-100 with at most two decimals (they
are kept as integer basis points so pricing never touches floats).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, Field, field_validator, model_validator

from sim import clock
from sim.codes import CARD_TYPES, DAY_TYPES, MODES
from sim.settings_base import SettingsModel

#: Largest single fare accepted (10,000 元): far above any real fare, and keeps tap arrays int32.
MAX_FARE_FEN = 1_000_000
MINUTES_PER_DAY = 1440
# Concession hours have always accepted a one-digit hour ("7:00-9:00") and windows over midnight.
_WINDOW_SYNTAX = {"one_digit_hour": True, "over_midnight": True}


def _fare(value: int) -> int:
    if value < 0:
        raise ValueError(f"fares and discounts cannot be negative (got {value} fen)")
    if value > MAX_FARE_FEN:
        raise ValueError(f"{value} fen is above the largest accepted fare ({MAX_FARE_FEN} fen)")
    return value


def _non_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"amounts cannot be negative (got {value} fen)")
    return value


def _pct(value: float) -> float:
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"a percentage must be between 0 and 100 (got {value})")
    if abs(value * 100 - round(value * 100)) > 1e-6:
        raise ValueError(f"a percentage may have at most two decimals (got {value})")
    return value


FareFen = Annotated[int, AfterValidator(_fare)]
AmountFen = Annotated[int, AfterValidator(_non_negative)]
Pct = Annotated[float, AfterValidator(_pct)]


def pct_to_bp(pct: float) -> int:
    """A validated percentage as integer basis points (12.5 % -> 1250)."""
    return round(pct * 100)


def bp_of(fen, bp):
    """``bp`` basis points of ``fen``, in whole fen rounded down, for int64 scalars or arrays
    (``bp_of_fen`` for anything else; sim/fares.py's compiled pricing calls it compiled).

    Integer arithmetic on purpose: in floats 29 % of 100 fen is 28.999999999999996, which
    truncates to 28 fen; ``100 * 2900 // 10_000`` is exactly 29. Every percentage off a fare or
    a price (concessions, transfer discounts, venue discounts) goes through basis points."""
    return fen * bp // 10_000


def bp_of_fen(fen: np.ndarray, bp: np.ndarray) -> np.ndarray:
    """``bp`` basis points of ``fen``, in whole fen rounded down (``bp_of`` on int64 arrays)."""
    return bp_of(np.asarray(fen, dtype=np.int64), np.asarray(bp, dtype=np.int64))


def parse_window(text: str) -> list[tuple[int, int]]:
    """Parse ``"HH:MM-HH:MM"`` into half-open minute intervals [start, end) within one day.

    A window whose end is before its start runs over midnight ("22:00-02:00") and is returned as
    two intervals (one if it ends at 00:00). Raises ValueError with the expected form on anything
    else (``sim.clock.parse_window``).
    """
    window = clock.parse_window(text, **_WINDOW_SYNTAX)
    return [(start // 60, end // 60) for start, end in window.pieces()]


def _minute_mask(windows: tuple[str, ...]) -> np.ndarray:
    mask = np.zeros(MINUTES_PER_DAY, dtype=bool)
    for text in windows:
        for start, end in parse_window(text):
            mask[start:end] = True
    return mask


def _name_in(allowed: tuple[str, ...], what: str) -> AfterValidator:
    def check(name: str) -> str:
        if name not in allowed:
            raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(allowed)}")
        return name

    return AfterValidator(check)


CardTypeName = Annotated[str, _name_in(CARD_TYPES, "card type")]
ModeName = Annotated[str, _name_in(MODES, "mode")]
DayTypeName = Annotated[str, _name_in(DAY_TYPES, "day type")]
Windows = clock.window_texts(**_WINDOW_SYNTAX)


class _Model(SettingsModel):
    """The base of this module's settings (sim/settings_base.py)."""


class BusFares(_Model):
    """Flat bus fares: one default per region, optional overrides per line."""

    region_fare_fen: dict[str, FareFen] = Field(
        description="Default flat bus fare per region id (e.g. urban, rudong, haian), in fen."
    )
    line_fare_fen: dict[str, FareFen] = Field(
        default_factory=dict,
        description="Flat fare per line id, in fen; overrides the region default for that line.",
    )


class MetroFares(_Model):
    """Distance-band metro fares, charged at the exit tap (entry taps cost 0)."""

    band_upper_km: tuple[float, ...] = Field(
        min_length=1,
        description="Upper bound of each band in km, strictly increasing; a trip of exactly the "
        "bound is in that band. Trips longer than the last bound pay the last band's fare.",
    )
    band_fare_fen: tuple[FareFen, ...] = Field(
        min_length=1, description="Fare of each band in fen, same length as band_upper_km."
    )

    @model_validator(mode="after")
    def _bands(self) -> MetroFares:
        up, fares = self.band_upper_km, self.band_fare_fen
        if len(up) != len(fares):
            raise ValueError(
                f"band_upper_km has {len(up)} bands but band_fare_fen has {len(fares)}"
            )
        if up[0] <= 0 or any(b <= a for a, b in pairwise(up)):
            raise ValueError(f"band_upper_km must be positive and strictly increasing (got {up})")
        if any(b < a for a, b in pairwise(fares)):
            raise ValueError(f"band_fare_fen must not decrease with distance (got {fares})")
        return self


_KIND_FIELD = {"percent": "discount_pct", "fixed_fare": "fixed_fare_fen"}
_KIND_FIELD["amount_off"] = "amount_off_fen"


class ConcessionRule(_Model):
    """One concession rule of a card type; a card type's rules are tried in order, first match wins.

    kinds: ``free`` (rider pays 0), ``percent`` (``discount_pct`` off the list fare, the discount
    rounded down to whole fen), ``fixed_fare`` (rider pays ``fixed_fare_fen``, or the list fare
    if lower), ``amount_off`` (``amount_off_fen`` off the list fare, never below 0).
    """

    kind: Literal["free", "percent", "fixed_fare", "amount_off"] = Field(
        description="What the rule does: free, percent, fixed_fare or amount_off."
    )
    discount_pct: Pct | None = Field(None, description="Percent off (0-100), kind percent only.")
    fixed_fare_fen: FareFen | None = Field(None, description="Fare paid, kind fixed_fare only.")
    amount_off_fen: FareFen | None = Field(None, description="Fen off, kind amount_off only.")
    modes: tuple[ModeName, ...] | None = Field(
        None, description="Modes the rule applies to (bus, metro); omitted = all modes."
    )
    day_types: tuple[DayTypeName, ...] | None = Field(
        None, description="Day types on which the rule applies at all; omitted = every day type."
    )
    include_hours: Windows | None = Field(
        None,
        description="'HH:MM-HH:MM' windows (start inclusive, end exclusive; may wrap midnight); "
        "the rule matches only inside them. Judged at the boarding (metro entry) time.",
    )
    exclude_hours: Windows = Field(
        (), description="'HH:MM-HH:MM' windows in which the rule does not match."
    )
    hours_day_types: tuple[DayTypeName, ...] | None = Field(
        None,
        description="Day types on which include/exclude_hours apply; on other day types the rule "
        "matches at any hour. Omitted = every day type.",
    )
    label: str = Field("", description="Free text naming the rule in reports.")

    def match_mask(self) -> np.ndarray:
        """Where the rule matches, as bool [day type code, mode code, minute of day]."""
        day_ok = np.array([self.day_types is None or d in self.day_types for d in DAY_TYPES])
        mode_ok = np.array([self.modes is None or m in self.modes for m in MODES])
        hours = np.ones(MINUTES_PER_DAY, dtype=bool)
        if self.include_hours is not None:
            hours = _minute_mask(self.include_hours)
        hours &= ~_minute_mask(self.exclude_hours)
        hours_on = np.array(
            [self.hours_day_types is None or d in self.hours_day_types for d in DAY_TYPES]
        )
        time_ok = np.where(hours_on[:, None], hours[None, :], True)
        return day_ok[:, None, None] & mode_ok[None, :, None] & time_ok[:, None, :]

    @model_validator(mode="after")
    def _kind_fields(self) -> ConcessionRule:
        own = _KIND_FIELD.get(self.kind)
        for fld in _KIND_FIELD.values():
            is_set = getattr(self, fld) is not None
            if fld == own and not is_set:
                raise ValueError(f"a {self.kind!r} rule needs {fld}")
            if fld != own and is_set:
                raise ValueError(f"{fld} does not belong in a {self.kind!r} rule")
        if self.include_hours is not None and not self.include_hours:
            raise ValueError("include_hours is empty: omit it, or give at least one window")
        if self.include_hours is not None or self.exclude_hours:
            hours = (
                _minute_mask(self.include_hours)
                if self.include_hours is not None
                else np.ones(MINUTES_PER_DAY, dtype=bool)
            )
            if not (hours & ~_minute_mask(self.exclude_hours)).any():
                raise ValueError(
                    f"include_hours {list(self.include_hours or ['00:00-24:00'])} and "
                    f"exclude_hours {list(self.exclude_hours)} leave no minute of the day: the "
                    "rule would never apply; expected windows that leave some time"
                )
        return self


class TransferDiscount(_Model):
    """Discount on boardings that continue a journey (Nantong: a one-hour transfer discount).

    A boarding (bus single tap or metro entry) on an eligible mode and card type is a transfer when
    it is at most ``window_min`` after the first boarding of the card's current chain and the chain
    has fewer than ``max_transfers + 1`` legs; otherwise it starts a new chain. The discount is
    taken from the leg's fare after concessions: ``discount_pct`` of it (rounded down) plus
    ``amount_off_fen``, never more than the fare. For metro legs it is applied at the exit.
    """

    window_min: int = Field(
        60, gt=0, le=MINUTES_PER_DAY, description="Window from chain start, min."
    )
    amount_off_fen: FareFen = Field(0, description="Fen off each transfer leg's fare.")
    discount_pct: Pct = Field(0.0, description="Percent off each transfer leg's fare (0-100).")
    modes: tuple[ModeName, ...] = Field(
        MODES, min_length=1, description="Modes whose boardings form chains; others are ignored."
    )
    max_transfers: int = Field(1, ge=0, description="Largest number of transfers in one chain.")
    card_types: tuple[CardTypeName, ...] | None = Field(
        None, description="Card types that get transfers; omitted = all card types."
    )


class FareCaps(_Model):
    """Spend caps per card type: once reached, further rides that day/month cost 0."""

    daily_cap_fen: dict[CardTypeName, AmountFen] = Field(
        default_factory=dict, description="Largest spend per card per day, in fen, by card type."
    )
    monthly_cap_fen: dict[CardTypeName, AmountFen] = Field(
        default_factory=dict,
        description="Largest spend per card per calendar month, in fen, by card type.",
    )


class IncompleteTripPolicy(_Model):
    """What a metro entry that never got an exit (不完整交易) costs, charged on the entry row.

    National rules (MOT 2018 交通一卡通运营服务质量管理办法) require incomplete transactions to be
    processed but leave the amount to operators; charging the maximum metro fare is the common
    practice and the default here.
    """

    charge: Literal["max_fare", "min_fare", "fixed"] = Field(
        "max_fare", description="max_fare / min_fare of the metro bands, or fixed_fare_fen."
    )
    fixed_fare_fen: FareFen | None = Field(None, description="The charge when charge is 'fixed'.")
    discounts_apply: bool = Field(
        True, description="Whether concessions and transfer discounts reduce this charge."
    )

    @model_validator(mode="after")
    def _fixed(self) -> IncompleteTripPolicy:
        if (self.charge == "fixed") != (self.fixed_fare_fen is not None):
            raise ValueError("fixed_fare_fen is required with charge 'fixed', and only then")
        return self


class FareRules(_Model):
    """The scenario's ``fares:`` section: base fares, concessions, transfers, caps, incomplete."""

    bus: BusFares = Field(description="Flat bus fares by region and line.")
    metro: MetroFares | None = Field(None, description="Metro distance bands; omit if no metro.")
    concessions: dict[CardTypeName, tuple[ConcessionRule, ...]] = Field(
        default_factory=dict,
        description="Ordered concession rules per card type; first match applies; a card with "
        "no matching rule pays the list fare.",
    )
    qr_concessions: bool = Field(
        False,
        description="Whether a home cardholder paying by QR code gets the concessions of their "
        "card type (false: concessions need the card, QR riders pay the list fare).",
    )
    transfer: TransferDiscount | None = Field(None, description="Transfer discount; omit for none.")
    caps: FareCaps = Field(default_factory=FareCaps, description="Daily and monthly caps.")
    incomplete_trip: IncompleteTripPolicy = Field(
        default_factory=IncompleteTripPolicy, description="Charge for a metro entry without exit."
    )

    @field_validator("concessions", mode="before")
    @classmethod
    def _single_rule(cls, value: Any) -> Any:
        # An overlay may give one rule as a mapping instead of a one-element list.
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, dict) else v for k, v in value.items()}
        return value
