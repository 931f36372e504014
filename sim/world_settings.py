"""Scenario sections that describe the world: period, regions, network, population, behaviour,
top-ups, card sales and output.

Each section is a frozen pydantic model that forbids unknown keys (STYLE.md, ActivitySim). Units sit
in field names: ``_fen`` money, ``_min`` minutes, ``_s`` seconds, ``_km`` km, ``_pct`` percent.
Shares are fractions in [0, 1] unless the name says ``_pct``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from sim.behaviour_settings import CardLending, ResponseSettings
from sim.clock import HHMM, parse_hhmm
from sim.codes import CARD_TYPES, MEDIA
from sim.settings_base import SettingsModel

# The card types a holder's age can give (population.concession_ages); ordinary is what cards
# below every concession age become, so it is not one of them.
AgeBasedCardType = Literal[tuple(t for t in CARD_TYPES if t != "ordinary")]  # type: ignore[valid-type]

Share = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
#: Money on one record: records hold fen in 4-byte integers (JT/T 978 balances are 4 bytes).
INT32_MAX = 2**31 - 1
Fen = Annotated[int, Field(ge=0, le=INT32_MAX)]
PositiveFen = Annotated[int, Field(gt=0, le=INT32_MAX)]


class Section(SettingsModel):
    """Base of every scenario section: unknown keys are errors, values are immutable, no
    yes/no for a number (sim/settings_base.py)."""


def scaled_count(count: int, scale: float) -> int:
    """How many of ``count`` people a run at ``scale`` simulates (rounded, so the expansion
    weight 1/scale is exact to half a person per count)."""
    return int(round(count * scale))


#: '07:30' -> seconds since midnight (``sim.clock.parse_hhmm``); kept under this name because the
#: day planner, engine, population and citizen modules import it from here.
hhmm_to_s = parse_hhmm


class Period(Section):
    """Which days are simulated."""

    start: dt.date = Field(description="First simulated day (local date, Asia/Shanghai).")
    days: int = Field(ge=1, le=3660, description="Number of simulated days.")


#: Upper bounds of the generated network, far above any real city's (Shanghai: 551 zones of
#: 45,000 residents, 1,240 bus lines), so that a slip of the keyboard is an error, not a world
#: that fills the memory: the routes are zone-by-zone matrices, and every bus and gate a process.
MAX_ZONES = 3_000
MAX_BUS_LINES = 20_000
MAX_STOPS_PER_LINE = 200
MAX_VEHICLES_PER_LINE = 500
MAX_STATIONS = 200
MAX_GATES_PER_STATION = 100


class BusNetwork(Section):
    """Bus network of one region, generated from these parameters (no GTFS needed)."""

    lines: PositiveInt = Field(
        le=MAX_BUS_LINES, description="Number of bus lines operated in the region."
    )
    stops_per_line: PositiveInt = Field(
        le=MAX_STOPS_PER_LINE, description="Mean stops per line (one stop per zone passed)."
    )
    vehicles_per_line: PositiveInt = Field(
        le=MAX_VEHICLES_PER_LINE, description="Buses per line; one validator per bus."
    )
    speed_kmh: float = Field(gt=0, description="Mean in-service bus speed including stops.")
    operator_id: str = Field(description="Acquirer (bus company) clearing code for the region.")


class Region(Section):
    """A district or county-level unit with its own bus operator and zones."""

    name_zh: str = Field(description="Chinese name, e.g. 市区, 如东.")
    admin_code: str = Field(description="GB/T 2260 six-digit code, used in synthetic ID numbers.")
    residents: PositiveInt = Field(description="Resident population (常住人口).")
    zones: PositiveInt = Field(
        le=MAX_ZONES, description="Number of traffic zones the region is split into."
    )
    zone_spacing_km: float = Field(gt=0, description="Distance between neighbouring zone centres.")
    card_adoption_weight: float = Field(
        gt=0,
        description="Relative propensity of residents to hold a card (transit supply, outlets, "
        "first-phase issuance); cardholders are spread by residents x weight.",
    )
    bus: BusNetwork = Field(description="Generated bus network parameters.")
    map_lonlat: (
        tuple[Annotated[float, Field(ge=-180, le=180)], Annotated[float, Field(ge=-90, le=90)]]
        | None
    ) = Field(
        None,
        description="Approximate longitude and latitude of the region's seat, for schematic "
        "maps (dashboard); not used by the simulation.",
    )
    aged_65_plus_share: Share | None = Field(
        None,
        description="Share of residents aged 65 and over (census). When every region has it, "
        "the elderly card types (card_types whose age_min is 60 or more) are spread by "
        "residents x this share x card_adoption_weight, so they lean to the older regions.",
    )

    @field_validator("admin_code")
    @classmethod
    def _six_digits(cls, value: str) -> str:
        if not (len(value) == 6 and value.isdigit()):
            raise ValueError(f"admin_code must be 6 digits (GB/T 2260), got {value!r}")
        return value


class MetroLine(Section):
    """A metro line: stations evenly spread over its length through the urban zones."""

    name_zh: str = Field(description="Line name.")
    region: str = Field(description="Region id the line runs in.")
    stations: Annotated[int, Field(ge=2, le=MAX_STATIONS)] = Field(
        description="Number of stations."
    )
    length_km: float = Field(gt=0, description="Route length in km.")
    gates_per_station: PositiveInt = Field(
        le=MAX_GATES_PER_STATION, description="Gates (validators) per station."
    )
    speed_kmh: float = Field(gt=0, description="Mean speed including dwell times.")
    operator_id: str = Field(description="Acquirer clearing code of the metro operator.")
    opened: dt.date = Field(description="Opening date; no taps before it.")


class Network(Section):
    """Transit supply: generated bus networks per region plus metro lines."""

    metro: dict[str, MetroLine] = Field(default_factory=dict, description="Metro lines by id.")
    walk_and_wait_min: float = Field(
        ge=0, description="Mean access walk plus wait before the first boarding."
    )
    transfer_min: float = Field(ge=0, description="Mean time between alighting and next boarding.")


class CardTypePopulation(Section):
    """Cardholders of one card type: how many, who they are, how they pay and ride."""

    count: NonNegInt = Field(description="Cards of this type in stock (cumulative issued).")
    age_min: Annotated[int, Field(ge=0, le=120)] = Field(description="Youngest eligible age.")
    age_max: Annotated[int, Field(ge=0, le=120)] = Field(description="Oldest age drawn.")
    age_mode: Annotated[int, Field(ge=0, le=120)] = Field(
        description="Most common age (triangular age distribution)."
    )
    nfc_virtual_share: Share = Field(description="Share holding an NFC virtual card (vs physical).")
    qr_user_share: Share = Field(
        description="Share of holders who also ride with a QR code (a trip-level payment choice)."
    )
    qr_trip_share: Share = Field(
        description="For QR users: share of their boardings paid by QR instead of the card."
    )
    regular_share: Share = Field(description="Share of live cards ridden regularly (commuters).")
    occasional_share: Share = Field(description="Share of live cards ridden occasionally.")
    regular_days_per_week: float = Field(ge=0, le=7, description="Riding days a week, regulars.")
    occasional_days_per_week: float = Field(ge=0, le=7, description="Riding days a week, others.")
    commuter: bool = Field(description="Trips go home-work/school-home on workdays (else errands).")
    outlet_topup_share: Share = Field(description="Share of top-ups done at an outlet (vs online).")

    @model_validator(mode="after")
    def _consistent(self) -> CardTypePopulation:
        if not self.age_min <= self.age_mode <= self.age_max:
            raise ValueError(
                f"ages must satisfy age_min <= age_mode <= age_max, got "
                f"{self.age_min} <= {self.age_mode} <= {self.age_max}"
            )
        if self.regular_share + self.occasional_share > 1.0:
            raise ValueError("regular_share + occasional_share must be at most 1")
        return self


class Population(Section):
    """The cardholder population, built in full (one row per card) at world construction."""

    card_types: dict[str, CardTypePopulation] = Field(
        min_length=1, description="Cardholders by card type."
    )
    issue_year_weights: dict[int, float] = Field(
        description="Relative number of cards issued per year (e.g. the published cards_sold); "
        "a card's issue date is drawn from it. Years after the period end are not yet active."
    )
    annual_attrition_pct: float = Field(
        ge=0, le=100, description="Cards abandoned, lost or replaced per year (per cent of live)."
    )
    gompertz_mortality: tuple[float, float] = Field(
        description="Holder death rate per year = exp(a + b * age): (a, b)."
    )
    qr_channel_mix: dict[str, float] = Field(
        description="How QR users split over QR channels (media names starting with qr_)."
    )
    cross_region_commute_share: Share = Field(
        description="Share of commuters whose work zone is in another region."
    )
    initial_balance_mean_fen: PositiveFen = Field(description="Mean card balance at period start.")
    # Keys typed (not checked by a validator on the whole mapping) so that a bad key is reported
    # where it was written: the file line, or the --set flag that added it.
    concession_ages: dict[AgeBasedCardType, Annotated[int, Field(ge=0, le=120)]] = Field(
        default_factory=dict,
        description="Age-based card types and the age from which each is held (e.g. longevity: "
        "65, love: 60). When given, every card of these types is re-derived from its holder's "
        "age: the type with the highest age not above the holder's (ties: the first listed), "
        "or ordinary below them all — so a free-ride age policy moves cards between types. "
        "Visitors' cards get the same types under same-city treatment.",
    )

    @field_validator("card_types")
    @classmethod
    def _known_card_types(cls, value: dict) -> dict:
        allowed = list(CARD_TYPES)
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown or not allowed card type(s) {unknown}; expected some of: "
                f"{', '.join(allowed)}"
            )
        return value

    @field_validator("qr_channel_mix")
    @classmethod
    def _known_channels(cls, value: dict) -> dict:
        qr = [m for m in MEDIA if m.startswith("qr_")]
        unknown = sorted(set(value) - set(qr))
        if unknown:
            raise ValueError(f"unknown QR channel(s) {unknown}; expected some of: {', '.join(qr)}")
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("QR channel weights must be >= 0 and not all zero")
        return value

    @field_validator("issue_year_weights")
    @classmethod
    def _weights_that_issue_cards(cls, weights: dict[int, float]) -> dict[int, float]:
        if not weights:
            raise ValueError("empty; expected years and their weights, e.g. {2023: 1.0}")
        bad = {year: w for year, w in weights.items() if not (w >= 0 and w < float("inf"))}
        if bad:
            raise ValueError(f"weights {bad}; expected numbers >= 0")
        if not sum(weights.values()) > 0:
            raise ValueError("every weight is 0; expected at least one year with cards issued")
        return weights


class DayTypeFactors(Section):
    """Multipliers on the chance to ride, by calendar day type."""

    workday: float = Field(ge=0, description="Workday multiplier (1.0 = the weekly mean).")
    weekend: float = Field(ge=0, description="Weekend multiplier.")
    holiday: float = Field(ge=0, description="Public holiday multiplier.")
    spring_festival: float = Field(ge=0, description="Spring Festival multiplier (the lowest).")


class Behaviour(Section):
    """How citizens plan a day: when they leave, where they go, how they chain trips."""

    day_type_factors: DayTypeFactors = Field(description="Riding chance by day type.")
    elderly_day_type_factors: DayTypeFactors = Field(
        description="Same for elderly card types (they avoid no day; less weekday peak)."
    )
    school_break_student_factor: float = Field(
        ge=0, description="Students' riding chance multiplier on non-school days."
    )
    am_departure_mean: HHMM = Field(description="Mean morning departure of commuters (HH:MM).")
    am_departure_sd_min: float = Field(gt=0, description="Spread of commuters' habitual time.")
    pm_departure_mean: HHMM = Field(description="Mean evening return of commuters (HH:MM).")
    pm_departure_sd_min: float = Field(gt=0, description="Spread of the evening return.")
    errand_departure_mean: HHMM = Field(description="Mean start of an errand outing (HH:MM).")
    errand_departure_sd_min: float = Field(gt=0, description="Spread of errand outings.")
    errand_duration_mean_min: float = Field(gt=0, description="Mean time spent at the errand.")
    daily_time_jitter_min: float = Field(ge=0, description="Day-to-day noise on habitual times.")
    extra_trip_share: Share = Field(description="Chance a riding day holds an extra chained stop.")
    one_way_share: Share = Field(description="Chance only one direction is ridden (other: walk).")
    transfer_share: Share = Field(description="Chance a journey needs a second leg (transfer).")
    metro_preference: Share = Field(
        description="Chance to use the metro when both ends are near stations."
    )
    missing_tap_out_share: Share = Field(description="Chance a metro rider never taps out.")
    declined_pays_other_way_share: Share = Field(
        description="After a declined card tap: chance the rider pays by QR/cash (else walks)."
    )
    purse_purchase_share: Share = Field(
        description="Chance that a stored-value card used today also pays a non-transit purchase "
        "(the citizen card's small-payment purse: retail, public bikes, parking, venues)."
    )
    purse_purchase_mean_fen: PositiveInt = Field(
        description="Mean amount of such a purchase (exponential)."
    )
    response: ResponseSettings = Field(
        default_factory=ResponseSettings,
        description="How riders respond to a price that differs from the base scenario's: "
        "elasticities, moving out of a concession's time window, switching medium.",
    )
    card_lending: CardLending = Field(
        default_factory=CardLending,
        description="Concession cards lent to other people, and the rules that detect it.",
    )


class TopUps(Section):
    """When and how stored-value cards are reloaded."""

    threshold_fen: PositiveFen = Field(description="Typical balance below which holders top up.")
    amounts_fen: list[PositiveFen] = Field(description="Top-up amounts people choose among.")
    amount_weights: list[float] = Field(description="Relative frequency of each amount.")
    max_balance_fen: PositiveFen = Field(description="Card balance ceiling (e.g. 1000 元).")
    online_time_mean: HHMM = Field(description="Mean time of day of online top-ups (HH:MM).")

    @model_validator(mode="after")
    def _weights_match(self) -> TopUps:
        if len(self.amounts_fen) != len(self.amount_weights) or not self.amounts_fen:
            raise ValueError("amounts_fen and amount_weights must be non-empty and equally long")
        if any(w < 0 for w in self.amount_weights) or sum(self.amount_weights) <= 0:
            raise ValueError("amount_weights must be >= 0 and not all zero")
        if self.max_balance_fen <= self.threshold_fen:
            raise ValueError(
                f"max_balance_fen {self.max_balance_fen} must be above threshold_fen "
                f"{self.threshold_fen} (a holder below the threshold must be able to top up)"
            )
        if self.max_balance_fen < min(self.amounts_fen):
            raise ValueError(
                f"max_balance_fen {self.max_balance_fen} is below every top-up amount "
                f"{self.amounts_fen}; expected a ceiling a top-up can reach"
            )
        return self


class CardSales(Section):
    """Card sales. Which cards are sold in the period follows from their issue dates (see
    ``population.issue_year_weights``); this section says what a sale costs and where it happens."""

    price_fen: Fen = Field(description="Card fee paid at sale (not stored value).")
    initial_topup_fen: Fen = Field(description="Stored value loaded at sale.")
    arrival_mean: HHMM = Field(
        description="Mean time of day of online (NFC virtual card) purchases (HH:MM); buyers of "
        "physical cards come during their outlet's opening hours."
    )
    arrival_sd_min: float = Field(gt=0, description="Spread of online purchase times.")


class OutputSettings(Section):
    """Where and how results are written."""

    dir: str = Field(description="Default output directory (the CLI's --out wins).")
    mask_identities: bool = Field(
        default=True, description="Mask card numbers, names, ID numbers, phones (DOMAIN.md §5)."
    )
    card_number_prefix: str = Field(description="Six-digit issuer prefix of card numbers.")
    city_code: str = Field(description="City code written on every local tap record.")
    issuer_id: str = Field(description="Clearing code of the card issuer (the city card company).")
