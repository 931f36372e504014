"""How one tap was priced, in plain words, for the Trace page (and anyone explaining a fare).

A tap record carries the amounts taken off (concession, transfer, cap) and its flags, not the
rule that produced them, so the words are derived from those columns and from the fare policy
the run was made with (``run_meta.json``: ``cities[i].settings.fares`` of the city where the tap
happened, its ``city_code``): the first rule of the card type that fits the tap's mode and day
type and gives exactly the amount taken off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from dashboard import i18n, state
from dashboard.state import code, tr

QR_PREFIX = "qr_"  # media codes of QR accounts (sim.codes.MEDIA): they pay without the card
# Taps in other cities are written on the line "EXT-<CITY ID>" (sim/interop.py); card_day has
# no city column, so the line is how the page recognises a ride away from home.
AWAY_LINE_PREFIX = "EXT-"

# Pricing categories, most telling first: a tap is coloured by the first that fits. The colours
# are fixed per category so a trainer's screenshot means the same in either language.
CATEGORY_COLOURS = {
    "rejected": "#D62728",
    "incomplete": "#EECA3B",
    "entry": "#BAB0AC",
    "away": "#FF9DA6",
    "capped": "#F58518",
    "free": "#54A24B",
    "transfer": "#B279A2",
    "concession": "#72B7B2",
    "full": "#4C78A8",
}


# --- the fare policy of the run ---------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What the page needs of the run's fare settings to put a tap's pricing into words."""

    day_type: str
    concessions: dict[str, list[dict]] = field(default_factory=dict)
    qr_concessions: bool = False
    transfer_window_min: int | None = None
    daily_caps: dict[str, int] = field(default_factory=dict)
    monthly_caps: dict[str, int] = field(default_factory=dict)
    incomplete_charge: str = "max_fare"
    away_cities: dict[str, tuple[str, str]] = field(default_factory=dict)  # line -> (zh, id)

    @classmethod
    def of_run(cls, meta: dict, day_type: str, city_code: str | None = None) -> Policy:
        """The policy stored with the run for the city ``city_code`` (the JT/T code a tap
        record carries: where the tap happened). A run written before settings were stored (or
        a settings block missing a part) reads as an empty policy: the page then describes taps
        by their amounts alone instead of failing."""
        settings = _city_settings(meta, city_code)
        fares = settings.get("fares") or {}
        transfer = fares.get("transfer") or {}
        caps = fares.get("caps") or {}
        interop = (settings.get("interop") or {}).get("cities") or {}
        return cls(
            day_type=day_type,
            concessions={k: list(v or []) for k, v in (fares.get("concessions") or {}).items()},
            qr_concessions=bool(fares.get("qr_concessions", False)),
            transfer_window_min=transfer.get("window_min"),
            daily_caps=dict(caps.get("daily_cap_fen") or {}),
            monthly_caps=dict(caps.get("monthly_cap_fen") or {}),
            incomplete_charge=(fares.get("incomplete_trip") or {}).get("charge", "max_fare"),
            away_cities={
                f"{AWAY_LINE_PREFIX}{cid.upper()}": (str(c.get("name_zh", cid)), cid)
                for cid, c in interop.items()
            },
        )

    def rule_for(
        self, card_type: str, mode: str, list_fen: int, concession_fen: int
    ) -> dict | None:
        """The concession rule of ``card_type`` that explains ``concession_fen`` on this tap.

        The tap records how much was taken off, not which rule did it. A card type may have
        several rules (e.g. free off-peak, half fare in the peaks), so the page takes the first
        rule that admits the tap's mode and day type and whose arithmetic gives exactly the
        recorded amount; None when no rule does (the words then name the amount only).
        """
        for rule in self.concessions.get(card_type, []):
            if rule.get("modes") and mode not in rule["modes"]:
                continue
            if rule.get("day_types") and self.day_type not in rule["day_types"]:
                continue
            if _rule_discount(rule, list_fen) == concession_fen:
                return rule
        return None


def _city_settings(meta: dict, city_code: str | None) -> dict:
    """The settings block of the run's city whose code is ``city_code``: in a multi-city run
    each city prices the taps made in it by its own fares, so a visitor's tap in the second city
    is explained by that city's rules. Otherwise (no code, or a city outside the run: a home
    card's ride elsewhere, on an ``EXT-`` line, which the home city's interop settings describe)
    the first city's, the home city the scenario describes."""
    cities = [c for c in (meta.get("cities") or []) if isinstance(c, dict)] or [{}]
    if city_code is not None and not pd.isna(city_code):
        for city in cities:
            settings = city.get("settings") or {}
            code = city.get("city_code") or (settings.get("output") or {}).get("city_code")
            if code is not None and str(code) == str(city_code):
                return settings  # a city split into region shards: its first part, same fares
    return cities[0].get("settings") or {}


def policies_of_run(meta: dict, day_type: str) -> Callable[[pd.Series], Policy]:
    """The policy that priced each tap: the one of the city the tap was made in (its
    ``city_code`` column; a tap without one, the home city's). Read once per city."""
    made: dict[str | None, Policy] = {}

    def of(tap: pd.Series) -> Policy:
        code = tap.get("city_code")
        code = None if code is None or pd.isna(code) else str(code)
        if code not in made:
            made[code] = Policy.of_run(meta, day_type, code)
        return made[code]

    return of


def _rule_discount(rule: dict, list_fen: int) -> int | None:
    """What ``rule`` takes off a list fare (the arithmetic of sim/fare_rules.ConcessionRule)."""
    kind = rule.get("kind")
    if kind == "free":
        return list_fen
    if kind == "percent" and rule.get("discount_pct") is not None:
        return list_fen * round(float(rule["discount_pct"]) * 100) // 10_000
    if kind == "fixed_fare" and rule.get("fixed_fare_fen") is not None:
        return max(list_fen - int(rule["fixed_fare_fen"]), 0)
    if kind == "amount_off" and rule.get("amount_off_fen") is not None:
        return min(int(rule["amount_off_fen"]), list_fen)
    return None


# --- one tap in words -------------------------------------------------------------------------


def _yuan(fen: int) -> str:
    return i18n.yuan(fen, state.lang())


def _rule_what(rule: dict | None) -> str:
    """A concession rule's effect in plain words ("免费乘车", "打 5 折", ...)."""
    kind = rule.get("kind") if rule else None
    if kind == "free":
        return tr("trace.what.free")
    if kind == "percent":
        pct = float(rule["discount_pct"])
        # Chinese says how much is paid (打 9.5 折 = pay 95 %), English how much is taken off.
        return tr("trace.what.percent", zhe=f"{(100 - pct) / 10:g}", pct=f"{pct:g}")
    if kind == "fixed_fare":
        return tr("trace.what.fixed_fare", fare=_yuan(rule["fixed_fare_fen"]))
    if kind == "amount_off":
        return tr("trace.what.amount_off", off=_yuan(rule["amount_off_fen"]))
    return tr("trace.what.other")


def city_name(policy: Policy, route: str) -> str | None:
    """The other city a line ``EXT-<city>`` runs in, in the chosen language (None: a home
    line)."""
    found = policy.away_cities.get(route)
    if found is None:
        return None
    name_zh, cid = found
    return name_zh if state.lang() == "zh" else i18n.place_name(cid)


def _is_incomplete(tap: pd.Series) -> bool:
    """An incomplete trip: the run's own flag when the query returns it; otherwise a metro entry
    that was charged (entries cost nothing unless no exit ever closed them)."""
    if "incomplete_trip" in tap.index and pd.notna(tap["incomplete_trip"]):
        return bool(tap["incomplete_trip"])
    return tap["tap_kind"] == "entry" and int(tap["list_fare_fen"]) > 0


def explain(tap: pd.Series, policy: Policy) -> tuple[str, str]:
    """The pricing category of one tap (for its colour) and the rules that priced it, in words."""
    category, parts = explain_parts(tap, policy)
    return category, tr("trace.rule.sep").join(parts)


def explain_parts(tap: pd.Series, policy: Policy) -> tuple[str, list[str]]:
    """The pricing category of one tap and each rule that priced it, in words, in order."""
    list_fen, paid = int(tap["list_fare_fen"]), int(tap["amount_fen"])
    conc, trans, cap = int(tap["concession_fen"]), int(tap["transfer_fen"]), int(tap["cap_fen"])
    card_type, mode = str(tap["rider_category"]), str(tap["mode"])
    incomplete = _is_incomplete(tap)
    city = city_name(policy, str(tap["route"]))
    parts: list[str] = []
    if tap["tap_kind"] == "entry" and not incomplete:
        parts.append(tr("trace.rule.entry"))
        if bool(tap["is_transfer"]):
            parts.append(tr("trace.rule.transfer_entry"))
    else:
        if incomplete:
            charge = tr(f"trace.incomplete.{policy.incomplete_charge}")
            parts.append(tr("trace.rule.incomplete", charge=charge, amount=_yuan(list_fen)))
        elif city is not None:
            parts.append(tr("trace.rule.away", city=city, amount=_yuan(list_fen)))
        if conc > 0 and city is not None:
            parts.append(tr("trace.rule.away_discount", city=city, amount=_yuan(conc)))
        elif conc > 0:
            rule = policy.rule_for(card_type, mode, list_fen, conc)
            words = tr(
                "trace.rule.concession",
                card=code("rider_category", card_type),
                what=_rule_what(rule),
                amount=_yuan(conc),
            )
            if rule and rule.get("label"):
                words += tr("trace.rule.policy", label=rule["label"])
            parts.append(words)
        if trans > 0:
            window = policy.transfer_window_min if policy.transfer_window_min is not None else "–"
            parts.append(tr("trace.rule.transfer", window=window, amount=_yuan(trans)))
        elif bool(tap["is_transfer"]) and list_fen - conc <= 0:
            parts.append(tr("trace.rule.transfer_nothing"))
        if cap > 0 or bool(tap["fare_capped"]):
            parts.append(_cap_words(policy, card_type, cap))
        if not parts:
            parts.append(_full_fare_words(policy, card_type, str(tap["media"]), list_fen))
    category = _category(tap, incomplete, city is not None, list_fen, paid, trans, conc, cap)
    if category == "rejected":
        reason = str(tap["reject_reason"])
        key = f"trace.reject.{reason}"
        reason_words = tr(key) if i18n.has(key) else reason
        parts.insert(0, tr("trace.rule.rejected", reason=reason_words))
        parts.insert(1, tr("trace.rule.not_counted"))
    if pd.notna(tap["incident_id"]) and tap["incident_id"]:
        parts.append(tr("trace.rule.incident", incident=tap["incident_id"]))
    return category, parts


def _cap_words(policy: Policy, card_type: str, cap: int) -> str:
    daily, monthly = policy.daily_caps.get(card_type), policy.monthly_caps.get(card_type)
    # The tap says a cap took something, not which one: name it only when the card type has one.
    if daily is not None and monthly is None:
        return tr("trace.rule.cap_daily", cap=_yuan(daily), amount=_yuan(cap))
    if monthly is not None and daily is None:
        return tr("trace.rule.cap_monthly", cap=_yuan(monthly), amount=_yuan(cap))
    return tr("trace.rule.cap", amount=_yuan(cap))


def _full_fare_words(policy: Policy, card_type: str, media: str, list_fen: int) -> str:
    """Why nothing was taken off, when the card type usually gets something."""
    if list_fen == 0:
        return tr("trace.rule.no_charge")
    has_rules = bool(policy.concessions.get(card_type))
    if has_rules and media.startswith(QR_PREFIX) and not policy.qr_concessions:
        return tr("trace.rule.qr_full", amount=_yuan(list_fen))
    if has_rules:
        return tr("trace.rule.full_no_match", amount=_yuan(list_fen))
    return tr("trace.rule.full", amount=_yuan(list_fen))


def _category(
    tap: pd.Series,
    incomplete: bool,
    away: bool,
    list_fen: int,
    paid: int,
    trans: int,
    conc: int,
    cap: int,
) -> str:
    if tap["status"] == "rejected":
        return "rejected"
    if incomplete:
        return "incomplete"
    if tap["tap_kind"] == "entry":
        return "entry"
    if away:
        return "away"
    if cap > 0:
        return "capped"
    if paid == 0:
        return "free"
    if trans > 0:
        return "transfer"
    if conc > 0:
        return "concession"
    return "full"


# --- the page ---------------------------------------------------------------------------------
