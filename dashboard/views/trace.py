"""Trace one cardholder: a synthetic rider's day, tap by tap, with how each fare was priced.

For trainers and for explaining a fare policy to someone who is not a specialist: pick a service
date and a card (one of the day's busiest, or a token typed in), and the page shows the day as a
timeline and as a table whose last column says in plain words which rule priced each tap
("长寿卡免费乘车：减免 2.00 元", "换乘优惠", "全价", an incomplete trip, a rejected record, ...).

The words are derived from the tap's own columns (concession, transfer and cap amounts, the
transfer and cap flags, card type, medium, status) and from the fare policy the run was made with
(``run_meta.json``: the ``settings.fares`` of the city the tap was made in, by its ``city_code``),
so they always describe the run on screen, each city's taps by that city's rules.
Identities stay masked: the page shows only the token (a daily pseudonym in a masked run).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import charts, i18n, lines, places, state
from dashboard.fare_words import (
    CATEGORY_COLOURS,
    Policy,
    city_name,
    explain_parts,
    policies_of_run,
)
from dashboard.state import code, tr
from sim import api

BUSY_LIMIT = 20  # cards offered in the picker: enough to find a varied day, short enough to read
MAX_TOKEN = 2**63 - 1  # tokens are BIGINT in the run; anything larger cannot be one
TOKEN_SHAPE = re.compile(r"\d{1,19}")
EXAMPLE_TOKEN = "1234567890123456789"


def _ask(run_dir: Path, name: str, *args: object) -> pd.DataFrame | None:
    """``RunView.<name>`` through the cache; an error message (and None) if the run cannot
    answer, e.g. a file changed underneath the dashboard."""
    try:
        return state.query(run_dir, name, *args)
    except (api.BadInput, api.RunViewError) as exc:
        st.error(tr("trace.query_failed", error=str(exc)))
        return None


def _iso(value: object) -> str:
    return pd.Timestamp(value).date().isoformat()


def pick_date(days: pd.DataFrame) -> tuple[str, str]:
    """The service date chosen (ISO) and its day type."""
    day_types = {
        _iso(d): str(t) for d, t in zip(days["service_date"], days["day_type"], strict=True)
    }
    chosen = st.selectbox(
        tr("trace.date"),
        list(day_types),
        format_func=lambda d: tr(
            "trace.date_option",
            date=i18n.date(d, state.lang()),
            day_type=code("day_type", day_types[d]),
        ),
        key="trace.date",
    )
    return chosen, day_types[chosen]


def _per_card(busy: pd.DataFrame) -> dict[str, dict]:
    """The busy list per card, busiest first (``busy_cards`` lists every medium a card's holder
    used that day, comma-separated: one may tap the card on one ride and scan a QR code on the
    next)."""
    return {
        row.token_id: {
            "rider_category": row.rider_category,
            "media": str(row.media).split(","),
            "taps": int(row.taps),
        }
        for row in busy.itertuples(index=False)
    }


def pick_card(busy: pd.DataFrame) -> str | None:
    """The token of the card to trace, or None with a message saying what to do."""
    source = st.radio(
        tr("trace.source"),
        ["busy", "typed"],
        format_func=lambda s: tr(f"trace.source.{s}"),
        key="trace.source",
        horizontal=True,
    )
    if source == "busy":
        if busy.empty:
            st.info(tr("trace.no_cards"))
            return None
        cards = _per_card(busy)
        return st.selectbox(
            tr("trace.card"),
            list(cards),
            format_func=lambda t: tr(
                "trace.card_option",
                token=t,
                card_type=code("rider_category", cards[t]["rider_category"]),
                medium=tr("trace.list_sep").join(code("media", m) for m in cards[t]["media"]),
                taps=i18n.count(cards[t]["taps"], state.lang()),
            ),
            help=tr("trace.card_help"),
            key="trace.card",
        )
    typed = st.text_input(tr("trace.token"), key="trace.token", help=tr("trace.token_help"))
    token = typed.strip()
    if not token:
        st.info(tr("trace.token_prompt"))
        return None
    if not TOKEN_SHAPE.fullmatch(token) or int(token) > MAX_TOKEN:
        example = busy["token_id"].iloc[0] if not busy.empty else EXAMPLE_TOKEN
        st.error(tr("trace.token_bad", token=token, example=example))
        return None
    return token


@dataclass(frozen=True)
class TapLines:
    """The run's names of the lines its taps were made on (``names``: ``lines.RunNames``),
    each tap's found by the city it was made in (``city_of``: its ``city_code`` → the city's
    index); ``of_run`` makes it."""

    names: lines.RunNames
    city_of: dict[str, int]

    @classmethod
    def of_run(cls, meta: dict, names: lines.RunNames) -> TapLines:
        entries = meta.get("cities") if isinstance(meta.get("cities"), list) else []
        shard_city = api.run_shard_city(meta)
        city_of = {
            str(entry.get("city_code")): shard_city[shard]
            for shard, entry in enumerate(entries)
            if isinstance(entry, dict) and entry.get("city_code") is not None
        }
        return cls(names, city_of)

    def city(self, tap: pd.Series) -> int | None:
        """The run's city the tap was made in (None: a ride in a city outside the run)."""
        return self.city_of.get(str(tap.get("city_code")))

    def name(self, tap: pd.Series) -> str | None:
        """The tap's line's name; None where the run cannot name it (a ride outside the run,
        a network that could not be built again)."""
        city = self.city(tap)
        return None if city is None else self.names.lines.get((city, str(tap["route"])))


def _lane(tap: pd.Series, policy: Policy, name: str | None) -> str:
    if name:  # a line's name says its mode ("Urban bus B134", "Metro Line 1")
        return name
    route = city_name(policy, str(tap["route"])) or str(tap["route"])
    return tr("trace.lane", mode=code("mode", tap["mode"]), route=route)


def _route_shown(tap: pd.Series, policy: Policy, name: str | None) -> str:
    """A home line by its name, its id beside it; a ride away as its city, not an internal
    line id; else the id."""
    route = str(tap["route"])
    if name:
        return tr("common.named", name=name, id=route)
    return city_name(policy, route) or route


def describe(
    taps: pd.DataFrame,
    policy: Policy | Callable[[pd.Series], Policy],
    tap_lines: TapLines | None = None,
) -> pd.DataFrame:
    """The taps with their lane, pricing category and rule words added. ``policy``: one for
    every tap, or the policy of each tap (``fare_words.policies_of_run``: the fares of the
    city the tap was made in); ``tap_lines``: the names of the taps' lines (None: lines by
    their ids)."""
    policy_of = policy if callable(policy) else (lambda _tap: policy)
    rows = [(tap, policy_of(tap)) for _, tap in taps.iterrows()]
    explained = [explain_parts(tap, p) for tap, p in rows]
    named = [tap_lines.name(tap) if tap_lines else None for tap, _ in rows]
    out = taps.copy()
    out["category"] = [c for c, _ in explained]
    out["rule"] = [tr("trace.rule.sep").join(parts) for _, parts in explained]
    # A hover box as wide as the screen is unreadable: one rule per line there.
    out["rule_lines"] = ["<br>".join(parts) for _, parts in explained]
    out["lane"] = [_lane(tap, p, n) for (tap, p), n in zip(rows, named, strict=True)]
    out["route_shown"] = [_route_shown(tap, p, n) for (tap, p), n in zip(rows, named, strict=True)]
    return out


def _unnamed_note(taps: pd.DataFrame, meta: dict, tap_lines: TapLines) -> None:
    """Say why lines are shown by their ids where the card rode in a city whose network
    could not be built again from the run (``lines.RunNames.unnamed_cities``)."""
    unnamed = set(tap_lines.names.unnamed_cities)
    hit = {tap_lines.city(tap) for _, tap in taps.iterrows() if tap_lines.name(tap) is None}
    cities = [c for c in api.run_cities(meta) if c.index in hit & unnamed]
    if cities and len(api.run_cities(meta)) == 1:
        st.caption(tr("common.network_not_rebuilt"))
    elif cities:
        lg = state.lang()
        shown = tr("trace.list_sep").join(places.city_name(c, lg) for c in cities)
        st.caption(tr("common.network_not_rebuilt_cities", cities=shown))


def summary(taps: pd.DataFrame) -> None:
    """One line: taps, paid, what full fare would have been, and what was saved."""
    counted = taps[taps["status"] != "rejected"]  # as everywhere in the dashboard (run_view)
    lang = state.lang()
    saved = int(counted[["concession_fen", "transfer_fen", "cap_fen"]].to_numpy().sum())
    st.markdown(
        tr(
            "trace.summary",
            taps=i18n.count(len(counted), lang),
            paid=i18n.yuan(int(counted["amount_fen"].sum()), lang),
            list=i18n.yuan(int(counted["list_fare_fen"].sum()), lang),
            saved=i18n.yuan(saved, lang),
        )
    )
    rejected = len(taps) - len(counted)
    if rejected:
        st.caption(tr("trace.summary_rejected", n=i18n.count(rejected, lang)))


def timeline(described: pd.DataFrame, service_date: str) -> None:
    """Markers per tap on the time of day, one lane per mode and line, coloured by pricing."""
    lang = state.lang()
    frame = pd.DataFrame(
        {
            tr("trace.col.time"): [i18n.time_of_day(t, lang) for t in described["event_timestamp"]],
            tr("trace.col.lane"): described["lane"],
            tr("trace.col.kind"): [code("tap_kind", k) for k in described["tap_kind"]],
            tr("trace.col.stop"): described["stop"],
            tr("trace.col.pricing"): [tr(f"trace.price.{c}") for c in described["category"]],
            tr("trace.col.list_yuan"): described["list_fare_fen"] / 100,
            tr("trace.col.concession_yuan"): described["concession_fen"] / 100,
            tr("trace.col.transfer_yuan"): described["transfer_fen"] / 100,
            tr("trace.col.cap_yuan"): described["cap_fen"] / 100,
            tr("trace.col.paid_yuan"): described["amount_fen"] / 100,
            tr("trace.col.rule"): described["rule"],
        }
    )
    hover = (
        "<b>%{customdata[0]}</b>  %{customdata[1]}<br>"
        f"{tr('trace.hover.route')}: %{{customdata[2]}}<br>"
        f"{tr('trace.hover.stop')}: %{{customdata[3]}}<br>"
        f"{tr('trace.hover.list')}: %{{customdata[4]}}<br>"
        f"{tr('trace.hover.discounts')}: %{{customdata[5]}}<br>"
        f"{tr('trace.hover.paid')}: %{{customdata[6]}}<br>"
        f"{tr('trace.hover.rule')}: %{{customdata[7]}}<extra></extra>"
    )
    custom = pd.DataFrame(
        {
            "time": frame[tr("trace.col.time")],
            "kind": frame[tr("trace.col.kind")],
            "route": described["route_shown"],
            "stop": described["stop"],
            "list": [i18n.yuan(v, lang) for v in described["list_fare_fen"]],
            "discounts": [
                tr(
                    "trace.discounts",
                    concession=i18n.yuan(c, lang),
                    transfer=i18n.yuan(t, lang),
                    cap=i18n.yuan(k, lang),
                )
                for c, t, k in zip(
                    described["concession_fen"],
                    described["transfer_fen"],
                    described["cap_fen"],
                    strict=True,
                )
            ],
            "paid": [i18n.yuan(v, lang) for v in described["amount_fen"]],
            "rule": described["rule_lines"],
        },
        index=described.index,
    )
    fig = go.Figure()
    # The day's path: a faint line through the taps in time order, so the lanes read as a trip.
    fig.add_trace(
        go.Scatter(
            x=described["event_timestamp"],
            y=described["lane"],
            mode="lines",
            line={"color": "#D0D0D0", "width": 1},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    for category, colour in CATEGORY_COLOURS.items():
        rows = described["category"] == category
        if not rows.any():
            continue
        fig.add_trace(
            go.Scatter(
                x=described.loc[rows, "event_timestamp"],
                y=described.loc[rows, "lane"],
                mode="markers",
                name=tr(f"trace.price.{category}"),
                marker={
                    "color": colour,
                    "size": 14,
                    "symbol": "x" if category == "rejected" else "circle",
                    "line": {"color": "#FFFFFF", "width": 1},
                },
                customdata=custom.loc[rows].to_numpy(),
                hovertemplate=hover,
            )
        )
    lanes = list(dict.fromkeys(described["lane"]))  # first seen first, top to bottom
    fig.update_yaxes(categoryorder="array", categoryarray=lanes[::-1])
    fig.update_xaxes(tickformat="%H:%M")
    title = tr("trace.chart_title", date=i18n.date(service_date, lang))
    charts.style(fig, title, x=tr("trace.chart_x"), y=tr("trace.chart_y"))
    fig.update_layout(height=max(260, 120 + 48 * len(lanes)))
    charts.show(fig, frame, key="trace-timeline")


def tap_table(described: pd.DataFrame) -> None:
    """Every tap with its amounts and, last, the rule words."""
    lang = state.lang()
    table = pd.DataFrame(
        {
            tr("trace.col.time"): [i18n.time_of_day(t, lang) for t in described["event_timestamp"]],
            tr("trace.col.kind"): [code("tap_kind", k) for k in described["tap_kind"]],
            tr("trace.col.mode"): [code("mode", m) for m in described["mode"]],
            tr("trace.col.route"): described["route_shown"],
            tr("trace.col.stop"): described["stop"],
            tr("trace.col.medium"): [code("media", m) for m in described["media"]],
            tr("trace.col.list"): [i18n.yuan(v, lang) for v in described["list_fare_fen"]],
            tr("trace.col.concession"): [i18n.yuan(v, lang) for v in described["concession_fen"]],
            tr("trace.col.transfer"): [i18n.yuan(v, lang) for v in described["transfer_fen"]],
            tr("trace.col.cap"): [i18n.yuan(v, lang) for v in described["cap_fen"]],
            tr("trace.col.paid"): [i18n.yuan(v, lang) for v in described["amount_fen"]],
            tr("trace.col.pricing"): [tr(f"trace.price.{c}") for c in described["category"]],
            tr("trace.col.rule"): described["rule"],
            tr("trace.col.status"): [code("status", s) for s in described["status"]],
        }
    )
    st.subheader(tr("trace.table_title"))
    st.dataframe(table, hide_index=True, width="stretch", key="trace-taps")


def main() -> None:
    """The page: run, date, card, then the day in a summary, a timeline and a table."""
    st.header(tr("trace.title"))
    st.caption(tr("trace.intro"))
    opened = state.require_run()
    if opened is None:
        return
    run_dir, view = opened
    masked = view.meta.get("identities_masked", True)
    st.info(
        tr("trace.identity_masked" if masked else "trace.identity_unmasked"),
        icon=":material/shield_person:",
    )
    days = _ask(run_dir, "daily")
    if days is None:
        return
    if days.empty:
        st.info(tr("trace.no_days"))
        return
    service_date, day_type = pick_date(days)
    busy = _ask(run_dir, "busy_cards", service_date, BUSY_LIMIT)
    if busy is None:
        return
    token = pick_card(busy)
    if token is None:
        return
    taps = _ask(run_dir, "card_day", token, service_date)
    if taps is None:
        return
    if taps.empty:
        st.error(
            tr("trace.token_not_found", token=token, date=i18n.date(service_date, state.lang()))
        )
        return
    tap_lines = TapLines.of_run(view.meta, state.line_names(run_dir))
    described = describe(taps, policies_of_run(view.meta, day_type), tap_lines)
    media = tr("trace.list_sep")
    st.subheader(
        tr(
            "trace.card_heading",
            token=token,
            card_type=code("rider_category", taps["rider_category"].iloc[0]),
            medium=media.join(code("media", m) for m in dict.fromkeys(taps["media"])),
        )
    )
    summary(described)
    timeline(described, service_date)
    tap_table(described)
    _unnamed_note(taps, view.meta, tap_lines)


main()
