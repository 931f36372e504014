"""Explore one finished run: KPI cards, ridership, money on cards, outlets, faults, clearing and
a schematic map of the regions. Every chart reads an aggregate query (sim/run_view.py) through
the cache, and offers its data as CSV."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import brief, i18n, institutions, lines, names, places, present
from dashboard.charts import by_date, download, show, style
from dashboard.state import (
    code,
    guarded,
    lang,
    line_names,
    pick,
    query,
    require_run,
    stamp,
    tr,
)
from drills.report import target_scope
from sim import api
from sim.incidents import OUTLET_KINDS

MONEY = {"spend_fen", "concession_fen", "transfer_fen", "topup_fen"}


def _value_label(measure: str) -> str:
    return code("measure", measure)


def _scaled(frame: pd.DataFrame, measure: str, column: str = "value") -> pd.DataFrame:
    """Money measures in yuan for charts (the CSV keeps what the chart shows)."""
    if measure in MONEY:
        frame = frame.assign(**{column: frame[column].astype("float64") / 100})
    return frame


ALL_CITIES = "all"  # the city picker's first choice: every city of the run


def _labeller(dimension: str, meta: dict):
    """A function from a dimension's codes to words in the chosen language."""
    if dimension == "region":
        return places.region_label(meta, lang())
    return lambda k: code(dimension, k)


def _estimate(value: float | int, text: str, estimated: bool) -> str:
    """``text``, the formatted ``value``, as shown: marked as an estimate where it was expanded
    from a city simulated below full scale (约 / ≈; never a zero, ``i18n.estimate``)."""
    return i18n.estimate(value, text, lang(), estimated)


def city_choice(view, name: str) -> int | None:
    """The city a tab shows in a run of several (``RunCity.index``; None: all of them, the
    first choice), picked above it; None without asking in a run of one city."""
    cities = api.run_cities(view.meta)
    if len(cities) < 2:
        return None
    lg = lang()
    names = {c.index: places.city_name(c, lg) for c in cities}
    options = [ALL_CITIES, *names]
    chosen = pick(
        tr("explore.city"),
        options,
        name,
        lambda c: tr("explore.all_cities") if c == ALL_CITIES else names[c],
    )
    return None if chosen == ALL_CITIES else chosen


def kpi_cards(view, run_dir) -> None:
    """The headline numbers of the run (``RunView.headline``: the brief shows the same)."""
    lg = lang()
    period = view.meta["period"]
    st.subheader(
        tr(
            "explore.period",
            scenario=view.meta.get("scenario", ""),
            start=i18n.date(period["start"], lg),
            end=i18n.date(period["end"], lg),
            days=period["days"],
        )
    )
    head = query(run_dir, "headline")
    count = lambda n: (n, i18n.count(n, lg))  # noqa: E731
    money = lambda fen: (fen, i18n.yuan(fen, lg, compact=True))  # noqa: E731
    cards = [
        ("explore.kpi.cardholders", count(api.cardholders_of(view.meta))),
        ("explore.kpi.taps", count(head["taps"])),
        ("explore.kpi.riders_per_day", count(head["riders_per_day"])),
        ("explore.kpi.fares", money(head["fares_fen"])),
        ("explore.kpi.topups", money(head["topup_fen"])),
        ("explore.kpi.card_sales", count(head["card_sales"])),
        ("explore.kpi.declined", count(head["declined_taps"])),
        ("explore.kpi.duplicates", count(head["duplicate_deductions"])),
    ]
    for row in (cards[:4], cards[4:]):
        for column, (key, (value, text)) in zip(st.columns(len(row)), row, strict=True):
            # In a run with cities below full scale every card is expanded by their weights:
            # an estimate.
            column.metric(tr(key), _estimate(value, text, view.weighted), border=True)


def ridership_tab(run_dir, meta: dict) -> None:
    """Taps by hour and day type; the whole run split by card type, medium, region, mode."""
    measure = pick(tr("common.measure"), list(api.RUN_MEASURES), "explore_measure", _value_label)
    hourly = _scaled(query(run_dir, "taps_by_hour", measure), measure)
    hourly = hourly.assign(day_type_label=hourly["day_type"].map(lambda d: code("day_type", d)))
    fig = px.line(hourly, x="hour", y="value", color="day_type_label", markers=True)
    style(
        fig,
        tr("explore.chart.by_hour", measure=_value_label(measure)),
        tr("common.hour"),
        _value_label(measure),
    )
    fig.update_layout(legend_title_text="")
    show(fig, hourly, f"by_hour_{measure}")
    dimension = pick(
        tr("common.dimension"),
        list(api.RUN_DIMENSIONS),
        "explore_dimension",
        lambda d: code("dimension", d),
        radio=True,
        horizontal=True,
    )
    split = _scaled(query(run_dir, "breakdown", dimension, measure), measure)
    label = _labeller(dimension, meta)
    split = split.assign(label=split["key"].map(label))
    fig = px.bar(split, x="value", y="label", orientation="h")
    fig.update_yaxes(categoryorder="total ascending")
    style(
        fig,
        tr(
            "explore.chart.breakdown",
            measure=_value_label(measure),
            dimension=code("dimension", dimension),
        ),
        _value_label(measure),
        "",
    )
    show(fig, split, f"breakdown_{dimension}_{measure}")
    per_day = _scaled(query(run_dir, "by_day", dimension, measure), measure)
    per_day = per_day.assign(label=per_day["key"].map(label))
    fig = px.area(per_day, x="service_date", y="value", color="label")
    by_date(style(fig, tr("explore.chart.by_day", measure=_value_label(measure)), "", ""))
    fig.update_layout(legend_title_text="")
    show(fig, per_day, f"by_day_{dimension}_{measure}")


def money_tab(run_dir, meta: dict) -> None:
    """Top-ups by channel and region, top-up amounts, purse balances."""
    lg = lang()
    topups = query(run_dir, "topups")
    topups = topups.assign(
        region_label=topups["region"].map(places.region_label(meta, lg)),
        channel_label=topups["channel"].map(lambda c: code("channel", c)),
        amount_yuan=topups["amount_fen"].astype("float64") / 100,
    )
    fig = px.bar(topups, x="region_label", y="amount_yuan", color="channel_label", barmode="stack")
    style(fig, tr("explore.chart.topups"), "", tr("explore.axis.yuan"))
    fig.update_layout(legend_title_text="")
    show(fig, topups, "topups_by_channel_region")
    amounts = query(run_dir, "topup_amounts")
    amounts = amounts.assign(label=amounts["amount_fen"].map(lambda f: i18n.yuan(int(f), lg)))
    fig = px.bar(amounts, x="label", y="topups")
    style(fig, tr("explore.chart.topup_amounts"), "", tr("explore.axis.topups"))
    show(fig, amounts, "topup_amounts")
    balances = query(run_dir, "balances")
    if balances.empty:
        st.info(tr("explore.balances_masked"))
        return
    balances = balances.assign(
        label=[
            f"{i18n.yuan(int(lo), lg)} – {i18n.yuan(int(hi), lg)}"
            for lo, hi in zip(balances["low_fen"], balances["high_fen"], strict=True)
        ]
    )
    fig = px.bar(balances, x="label", y="taps")
    style(fig, tr("explore.chart.balances"), "", tr("explore.axis.taps"))
    show(fig, balances, "balances")


def outlets_tab(run_dir, view) -> None:
    """Waiting time by outlet and hour (a heat map), with each outlet's opening hours: every
    city's outlets, or one city's (picked above, in a run of several)."""
    city = city_choice(view, "outlets_city")
    waits = query(run_dir, "outlet_waits")
    outlets = query(run_dir, "outlets")
    if city is not None:
        waits = waits[waits["city"] == city]
        outlets = outlets[outlets["city"] == city]
    if waits.empty:
        st.info(tr("explore.no_outlet_visits"))
        return
    names = _outlet_names(view.meta, outlets, several=city is None)
    waits = waits.assign(
        outlet=[
            names.get((int(c), int(i)), {}).get("label", str(i))
            for c, i in zip(waits["city"], waits["outlet_id"], strict=True)
        ],
        mean_wait_min=waits["mean_wait_s"] / 60,
    )
    grid = waits.pivot_table(index="outlet", columns="hour", values="mean_wait_min", sort=False)
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=list(grid.columns),
            y=list(grid.index),
            colorscale="YlOrRd",
            colorbar={"title": tr("explore.axis.minutes")},
            hovertemplate=f"%{{y}} %{{x}}:00 — %{{z:.1f}} {tr('explore.axis.minutes')}"
            "<extra></extra>",
        )
    )
    style(fig, tr("explore.chart.outlet_waits"), tr("common.hour"), "")
    fig.update_layout(height=max(380, 22 * len(grid.index) + 120))
    fig.update_yaxes(autorange="reversed")  # the first city's first outlet on top
    show(fig, waits, "outlet_waits" if city is None else f"outlet_waits_{city}")
    if names:
        rows = [
            {"outlet_id": oid, **{k: v for k, v in info.items() if k != "label"}}
            for (_, oid), info in names.items()
        ]
        hours = pd.DataFrame(rows).rename(
            columns={
                "city": tr("explore.col.city"),
                "outlet_id": tr("explore.col.outlet_id"),
                "name": tr("explore.col.outlet"),
                "region": tr("explore.col.region"),
                "hours": tr("explore.col.hours"),
                "open_days": tr("explore.col.open_days"),
            }
        )
        st.caption(tr("explore.opening_hours"))
        st.dataframe(hours, hide_index=True, width="stretch")
    else:
        st.caption(tr("explore.no_opening_hours"))


def _outlet_names(meta: dict, outlets: pd.DataFrame, several: bool) -> dict[tuple, dict]:
    """Each outlet by (city, id) → its row of the opening-hours table in the page's language,
    and its ``label`` on the heat map (after its city's name where several cities are shown:
    outlets of different cities share names). {} where the outlets files are gone. The outlets
    files name them in Chinese only: an English page shows them in English words
    (``names.outlet_name``)."""
    lg = lang()
    cities = {c.index: places.city_name(c, lg) for c in api.run_cities(meta)}
    several = several and len(cities) > 1
    region = places.region_label(meta, lg)
    known = places.english_names(meta)
    found = {}
    for r in outlets.sort_values(["city", "outlet_id"]).to_dict("records"):
        city = cities.get(int(r["city"]), "")
        name = names.outlet_name(r["name_zh"], lg, known)
        found[(int(r["city"]), int(r["outlet_id"]))] = {
            **({"city": city} if several else {}),
            "name": name,
            "region": region(r["region"]),
            "hours": r["hours"],
            "open_days": code("open_days", r["open_days"]),
            "label": f"{city} · {name}" if several else name,
        }
    # Two outlets of one name would be one row of the heat map: those carry their id too.
    labels = [info["label"] for info in found.values()]
    for (_, oid), info in found.items():
        if labels.count(info["label"]) > 1:
            info["label"] = tr("common.named", name=info["label"], id=oid)
    return found


def faults_tab(run_dir, meta: dict) -> None:
    """Device faults per day, the incident timeline (every city's, in a run of several), the
    taps each incident touched, duplicate deductions and their refunds, and device uploads
    (the run's batches, records and resends, and the upload delay per day)."""
    lg = lang()
    daily = query(run_dir, "daily")
    faults = daily.melt(
        id_vars="service_date",
        value_vars=["reader_outage_taps", "declined_taps", "duplicate_deductions"],
    )
    faults = faults.assign(label=faults["variable"].map(lambda v: tr(f"explore.fault.{v}")))
    fig = px.bar(faults, x="service_date", y="value", color="label", barmode="group")
    by_date(style(fig, tr("explore.chart.faults"), "", tr("explore.axis.taps")))
    fig.update_layout(legend_title_text="")
    show(fig, faults, "device_faults")
    incidents = api.run_incidents(meta)
    several = len(api.run_cities(meta)) > 1
    if incidents:
        st.caption(
            tr("explore.incident_timeline_cities" if several else "explore.incident_timeline")
        )
        named = _target_namer(meta, query(run_dir, "outlets"), lg, run_dir)
        table = incident_table(incidents, with_city=several, named=named)
        st.dataframe(table, hide_index=True, width="stretch")
        by_id = _shown_by_id(incidents, named, run_dir)
        if by_id and not several:
            st.caption(tr("common.network_not_rebuilt"))
        elif by_id:
            cities = tr("explore.city_sep").join(places.city_name(c, lg) for c in by_id)
            st.caption(tr("common.network_not_rebuilt_cities", cities=cities))
    else:
        st.caption(tr("explore.no_incidents"))
    touched = query(run_dir, "incident_taps")
    if not touched.empty:
        fig = px.bar(touched, x="incident_id", y="taps")
        style(fig, tr("explore.chart.incident_taps"), "", tr("explore.axis.taps"))
        show(fig, touched, "incident_taps")
    dup = query(run_dir, "duplicates_and_refunds")
    if not dup.empty:
        estimated = bool(dup["estimated"].any())  # expanded from a city below full scale
        deductions, uploads = (
            int(dup["duplicate_deductions"].sum()),
            int(dup["duplicate_uploads"].sum()),
        )
        refunds = int(dup["refund_fen"].sum())
        cols = st.columns(3)
        cols[0].metric(
            tr("explore.kpi.duplicates"),
            _estimate(deductions, i18n.count(deductions, lg), estimated),
        )
        cols[1].metric(
            tr("explore.kpi.refunds"),
            _estimate(refunds, i18n.yuan(refunds, lg), estimated),
        )
        cols[2].metric(
            tr("explore.kpi.duplicate_uploads"),
            _estimate(uploads, i18n.count(uploads, lg), estimated),
        )
        long = dup.melt(
            id_vars="settle_date",
            value_vars=["duplicate_deductions", "duplicate_uploads", "declined"],
        )
        long = long.assign(label=long["variable"].map(lambda v: tr(f"explore.reject.{v}")))
        fig = px.bar(long, x="settle_date", y="value", color="label", barmode="group")
        by_date(style(fig, tr("explore.chart.rejects"), "", ""))
        fig.update_layout(legend_title_text="")
        show(fig, long, "rejects_and_refunds")
    uploads = query(run_dir, "device_uploads")
    if not uploads.empty:
        # The run's upload counts; a scaled city's batches counted at its weight (estimates).
        estimated = bool(uploads["estimated"].any())
        totals = {
            "explore.kpi.upload_batches": int(uploads["batches"].sum()),
            "explore.kpi.uploaded_records": int(uploads["records"].sum()),
            "explore.kpi.resends": int(uploads["resends"].sum()),
        }
        for column, (key, value) in zip(st.columns(len(totals)), totals.items(), strict=True):
            column.metric(tr(key), _estimate(value, i18n.count(value, lg), estimated))
        uploads = uploads.assign(mode_label=uploads["mode"].map(lambda m: code("mode", m)))
        fig = px.line(uploads, x="service_date", y="mean_delay_s", color="mode_label", markers=True)
        by_date(style(fig, tr("explore.chart.upload_delay"), "", tr("explore.axis.seconds")))
        fig.update_layout(legend_title_text="")
        show(fig, uploads, "device_uploads")


def _target_namer(meta: dict, outlets: pd.DataFrame, lg: str, run_dir: Path):
    """A function (kind, target, city index) -> the name of what an incident hits in the page's
    language, or None where it has none to give: a clearing node by its institution's name, an
    outlet by its outlets file's (in English words on an English page), a metro line or one of
    its stations by the scenario's name of the line (``dashboard.lines``: "Metro Line 1"), a bus
    line by its region and number ("Urban bus B134") and a device by what it is on which line
    ("Urban bus B134 reader", "Metro Line 1 station 6 gate"; ``drills.report.target_scope``
    tells a device from a line)."""
    node = institutions.participant_label(meta, lg)
    outlet = _outlet_names(meta, outlets, several=False)
    found: list[lines.RunNames] = []  # the run's names, fetched once, at the first need

    def run_names() -> lines.RunNames:
        if not found:
            found.append(line_names(run_dir))
        return found[0]

    def line(city: int, line_id: str) -> str | None:
        return run_names().lines.get((city, line_id))

    def named(kind: str, target: str, city: int) -> str | None:
        if kind == "clearing_node_outage":
            return node(target) if node(target) != target else None
        if kind in OUTLET_KINDS and target.isdigit():
            info = outlet.get((city, int(target)))
            return None if info is None else info["name"]
        scope = target_scope(kind, target)
        if scope == "station":
            line_id, _, index = target.partition(":")
            shown = line(city, line_id)
            return lines.station_label(shown, int(index), lg) if shown and index.isdigit() else None
        if scope == "line":
            return line(city, target)
        if scope == "device":
            return run_names().devices.get((city, target))
        return None

    return named


def _shown_by_id(incidents: list[api.RunIncident], named, run_dir: Path) -> list[api.RunCity]:
    """The cities whose line, station or device an incident names is shown by its id because
    that city's network could not be built again from the run (``lines.RunNames``'s
    ``unnamed_cities``): the page says so rather than leave the reader to wonder."""
    found: dict[int, api.RunCity] = {}
    for incident in incidents:
        kind, target = str(incident.settings.get("kind", "")), incident.settings.get("target")
        if not target or target_scope(kind, str(target)) not in ("line", "station", "device"):
            continue
        unnamed = line_names(run_dir).unnamed_cities
        for city in incident.cities:
            if city.index in unnamed and named(kind, str(target), city.index) is None:
                found[city.index] = city
    return list(found.values())


def incident_table(
    incidents: list[api.RunIncident], with_city: bool = False, named=None
) -> pd.DataFrame:
    """The run's incident timeline (``api.run_incidents``: as ``run_meta.json`` stores each
    city's) in the page's language: the kind in words, the start as a date and time, the
    duration in minutes and what the kind's own settings say (money in yuan); ``with_city``
    first names the cities each acts in (a target is a device, line or outlet id of its city's
    own, so in a run of several the city is what tells two cities' outlet 1 apart); ``named``
    (kind, target, city index -> a name or None; ``_target_namer``) names a clearing node, an
    outlet, a line, a metro station or a device, its id after the name."""
    lg = lang()
    rows = []
    for incident in incidents:
        inc = incident.settings
        start = pd.Timestamp(inc.get("start"))
        where = tr("explore.city_sep").join(places.city_name(c, lg) for c in incident.cities)
        rows.append(
            {
                **({tr("explore.incident.col.city"): where} if with_city else {}),
                tr("explore.incident.col.id"): str(inc.get("id", "")),
                tr("explore.incident.col.kind"): code("incident_kind", inc.get("kind", "")),
                tr("explore.incident.col.start"): tr(
                    "explore.incident.start",
                    date=i18n.date(start.date(), lg),
                    time=f"{start:%H:%M}",
                )
                if not pd.isna(start)
                else "–",
                tr("explore.incident.col.duration"): tr(
                    "explore.incident.minutes", n=i18n.count(inc.get("duration_min"), lg)
                ),
                tr("explore.incident.col.target"): _incident_target(inc, incident, named),
                tr("explore.incident.col.details"): _incident_details(inc),
            }
        )
    return pd.DataFrame(rows)


def _incident_target(inc: dict, incident: api.RunIncident, named) -> str:
    """What an incident hits: a QR platform's medium in words, a clearing node, an outlet, a
    line, a metro station or a device by its name (``named``) with its id after it (staff look
    a device or a line up by its id), a target the run cannot name (an issuer, or a device of a
    run written before its network could be built again) as the scenario names it.

    An incident listed with several cities (``api.run_incidents``: equal in every field in
    each) names an id of each city's own: where the cities call it differently (outlet 3 is a
    county service point in one, a station desk in the other), each city's name is given
    after the city, never the first city's alone."""
    target = inc.get("target")
    if not target:
        return "–"
    if inc.get("kind") == "qr_platform_outage":
        return code("media", target)
    if named is None or not incident.cities:
        return str(target)
    kind = str(inc.get("kind", ""))
    found = [(city, named(kind, str(target), city.index)) for city in incident.cities]
    shown = {name for _, name in found if name}
    if not shown:
        return str(target)
    if len(shown) == 1 and all(name for _, name in found):
        return tr("common.named", name=shown.pop(), id=target)
    lg = lang()
    each = tr("explore.incident.cities_sep").join(
        tr("explore.incident.city_named", city=places.city_name(city, lg), name=name)
        for city, name in found
        if name
    )
    return tr("common.named", name=each, id=target)


def _incident_details(inc: dict) -> str:
    """An incident's own settings in words (only those its kind uses, as the engine does)."""
    lg = lang()
    parts = []
    if inc.get("duplicate_share"):
        parts.append(
            tr("explore.incident.duplicate_share", share=i18n.percent(inc["duplicate_share"], lg))
        )
        if inc.get("duplicate_gap_max_s"):
            parts.append(tr("explore.incident.duplicate_gap", s=inc["duplicate_gap_max_s"]))
    if inc.get("extra_visits_per_hour"):
        parts.append(
            tr("explore.incident.extra_visits", n=i18n.count(inc["extra_visits_per_hour"], lg))
        )
    if inc.get("no_card_share"):
        parts.append(
            tr("explore.incident.no_card_share", share=i18n.percent(inc["no_card_share"], lg))
        )
    if inc.get("fares"):
        changes = ", ".join(_settings_words(inc["fares"], "fares"))
        parts.append(tr("explore.incident.fares", changes=changes))
    if inc.get("transactions"):
        parts.append(
            tr("explore.incident.transactions", n=i18n.count(len(inc["transactions"]), lg))
        )
    if inc.get("description"):
        parts.append(str(inc["description"]))
    return tr("explore.incident.sep").join(parts)


def _settings_words(value: object, path: str) -> list[str]:
    """A nested settings block as "field.path = value" (the path as the scenario file writes
    it, so it can be looked up there), money fields (``*_fen``) in yuan."""
    if isinstance(value, dict):
        return [w for k, v in value.items() for w in _settings_words(v, f"{path}.{k}")]
    money = any(part.endswith("_fen") for part in path.split("."))
    if money and isinstance(value, int) and not isinstance(value, bool):
        shown = i18n.yuan(value, lang())
    elif isinstance(value, list):
        shown = ", ".join(str(x) for x in value)
    else:
        shown = str(value)
    return [f"{path} = {shown}"]


def clearing_tab(run_dir, meta: dict) -> None:
    """Clearing flows between institutions as a network (edge width = money), and the
    settlement positions. Institutions are named in the page's language (``institutions``),
    their ids kept beside the names (hover text, id columns) to look them up in the data. In a
    run with cities below full scale, the figures of the flows and positions their records
    went through are expanded by their weights and marked as estimates
    (``RunView.clearing_flows``, ``node_positions``)."""
    lg = lang()
    flows = query(run_dir, "clearing_flows")
    if flows.empty:
        st.info(tr("explore.no_clearing"))
        return
    name = institutions.participant_label(meta, lg)
    show(_flow_figure(flows, name), flows, "clearing_flows")
    positions = query(run_dir, "node_positions")
    shown = positions.assign(
        node=positions["node_id"].map(name),
        participant=positions["participant_id"].map(name),
        role=positions["role"].map(lambda r: code("role", r)),
        net=[
            _estimate(f, i18n.yuan(int(f), lg), bool(e))
            for f, e in zip(positions["net_position_fen"], positions["estimated"], strict=True)
        ],
        deposit=positions["last_deposit_fen"].map(
            lambda f: "" if pd.isna(f) else i18n.yuan(int(f), lg)
        ),
    )[["node", "node_id", "participant", "participant_id", "role", "net", "deposit"]]
    shown.columns = [
        tr("explore.col.node"),
        tr("explore.col.node_id"),
        tr("explore.col.participant"),
        tr("explore.col.participant_id"),
        tr("explore.col.role"),
        tr("explore.col.net_position"),
        tr("explore.col.deposit"),
    ]
    st.caption(tr("explore.settlement_caption"))
    st.dataframe(shown, hide_index=True, width="stretch")
    download(positions, "settlement_positions")


def _flow_figure(flows: pd.DataFrame, name) -> go.Figure:
    """Acquirers and clearing nodes laid out by networkx; each edge's width is its gross money
    (an estimate, so marked, where it was expanded from a city below full scale). Nodes are
    labelled by ``name`` (id → name); the hover texts add the ids."""
    graph = nx.DiGraph()
    for row in flows.itertuples():
        graph.add_edge(
            row.source,
            row.target,
            gross=int(row.gross_fen),
            fee=int(row.fee_fen),
            estimated=bool(row.estimated),
        )
    # Kamada-Kawai for the shape of the hierarchy, then a seeded spring pass to pull apart the
    # leaves one node shares (a city's acquirers would sit on one spot): the same each time.
    undirected = graph.to_undirected()
    start = nx.kamada_kawai_layout(undirected) if len(graph) > 2 else None
    layout = nx.spring_layout(undirected, pos=start, seed=7, k=1.2 / math.sqrt(len(graph)))
    biggest = max(1, max(d["gross"] for *_, d in graph.edges(data=True)))
    fig = go.Figure()
    lg = lang()
    for a, b, d in sorted(graph.edges(data=True)):
        (x0, y0), (x1, y1) = layout[a], layout[b]
        gross = _estimate(d["gross"], i18n.yuan(d["gross"], lg), d["estimated"])
        fee = _estimate(d["fee"], i18n.yuan(d["fee"], lg), d["estimated"])
        fig.add_trace(
            go.Scatter(
                x=[x0, x1],
                y=[y0, y1],
                mode="lines",
                line={"width": 1 + 14 * math.sqrt(d["gross"] / biggest), "color": "#4a7ab0"},
                opacity=0.6,
                hoverinfo="text",
                text=f"{name(a)} → {name(b)}: {gross} ({tr('explore.fee')} {fee})<br>{a} → {b}",
                showlegend=False,
            )
        )
    nodes = sorted(graph.nodes)
    fig.add_trace(
        go.Scatter(
            x=[layout[n][0] for n in nodes],
            y=[layout[n][1] for n in nodes],
            mode="markers+text",
            text=[name(n) for n in nodes],
            hovertext=[tr("common.named", name=name(n), id=n) for n in nodes],
            textposition="top center",
            marker={"size": 14, "color": "#c0392b"},
            hoverinfo="text",
            showlegend=False,
        )
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return style(fig, tr("explore.chart.clearing"))


def _shown(value: float, measure: str) -> str:
    """A map label's value: yuan (already scaled from fen) or a count, in the language."""
    if measure in MONEY:
        return i18n.yuan(round(value * 100), lang(), compact=True)
    return i18n.count(round(value), lang())


def map_tab(run_dir, view) -> None:
    """A schematic map of the regions (their seats), coloured and sized by a chosen measure:
    every city's regions, or one city's (picked above, in a run of several)."""
    measure = pick(tr("common.measure"), api.REGION_MEASURES, "map_measure", _value_label)
    city = city_choice(view, "map_city")
    values = _scaled(query(run_dir, "by_region", measure), measure)
    value_of = dict(zip(values["key"], values["value"], strict=True))
    regions = [r for r in api.run_regions(view.meta) if city is None or r.city.index == city]
    names = places.region_names(view.meta, lang())
    rows = [
        {
            "city": places.city_name(r.city, lang()),
            "region": names.get(r.key, r.key),
            "lon": r.lonlat[0],
            "lat": r.lonlat[1],
            # a region keyed by its id: a run written before regions were named in the data
            "value": float(value_of.get(r.key, value_of.get(r.id, 0.0))),
        }
        for r in regions
        if r.lonlat is not None
    ]
    if not rows:
        st.info(tr("explore.no_map"))
        keys = {r.key for r in regions}
        if city is not None:  # the bars of the chosen city's regions only
            values = values[values["key"].isin(keys)]
        values = values.assign(label=values["key"].map(lambda k: names.get(k, k)))
        fig = px.bar(values, x="label", y="value")
        title = tr("explore.chart.map", measure=_value_label(measure))
        style(fig, title, "", _value_label(measure))
        show(fig, values, f"regions_{measure}")
        return
    frame = pd.DataFrame(rows)
    biggest = max(frame["value"].max(), 1e-9)
    # Several cities spread over a province: smaller squares, a taller map, so a city's
    # regions and its neighbours' do not cover each other.
    several = frame["city"].nunique() > 1
    smallest, spread = (14, 36) if several else (30, 50)
    fig = go.Figure(
        go.Scatter(
            x=frame["lon"],
            y=frame["lat"],
            mode="markers+text",
            text=[
                f"{region}<br>{_shown(value, measure)}"
                for region, value in zip(frame["region"], frame["value"], strict=True)
            ],
            textposition="bottom center",
            marker={
                "size": smallest + spread * (frame["value"] / biggest) ** 0.5,
                "color": frame["value"],
                "colorscale": "Blues",
                "cmin": 0,  # shade from zero: a region with half the taps looks half as dark
                "showscale": True,
                "colorbar": {"title": _value_label(measure)},
                "line": {"width": 1, "color": "#333"},
                "symbol": "square",
            },
            hovertemplate="%{text}: %{marker.color:,.0f}<extra></extra>",
        )
    )
    # Room around the seats for the squares and the labels under the lowest ones.
    fig.update_xaxes(visible=False, range=_padded(frame["lon"], 0.1))
    fig.update_yaxes(visible=False, scaleanchor="x", range=_padded(frame["lat"], 0.2))
    style(fig, tr("explore.chart.map", measure=_value_label(measure)))
    fig.update_layout(height=600 if several else 460)
    show(fig, frame, f"map_{measure}" if city is None else f"map_{measure}_{city}")


def _padded(values: pd.Series, share: float) -> list[float]:
    """An axis range around ``values``, widened by ``share`` of their span (at least 0.1°) on
    each side."""
    low, high = float(values.min()), float(values.max())
    pad = max((high - low) * share, 0.1)
    return [low - pad, high + pad]


@st.cache_data(max_entries=8, show_spinner=False)
def _run_brief(run_dir: str, finished: float, lg: str) -> str:
    # ``finished`` keys the cache: a run made again in the same folder gets a new brief
    return brief.run_brief(run_dir, lg)


def main() -> None:
    """The Explore page: the run's headline, its tabs, and the brief."""
    opened = require_run()
    if opened is None:
        return
    run_dir, view = opened
    guarded(lambda: kpi_cards(view, run_dir))
    meta = view.meta
    cities = api.run_cities(meta)
    if len(cities) > 1:  # the queries and the incident timeline cover every city
        st.caption(
            tr(
                "explore.cities",
                n=len(cities),
                cities=tr("explore.city_sep").join(places.city_name(c, lang()) for c in cities),
            )
        )
    if view.weighted:
        st.caption(tr("common.estimate_note"))
    sections = {
        "ridership": lambda: ridership_tab(run_dir, meta),
        "money": lambda: money_tab(run_dir, meta),
        "outlets": lambda: outlets_tab(run_dir, view),
        "faults": lambda: faults_tab(run_dir, meta),
        "clearing": lambda: clearing_tab(run_dir, meta),
        "map": lambda: map_tab(run_dir, view),
    }
    # Lazy tabs: only the open one runs its queries and draws its charts, which keeps opening
    # the page and every rerun within the budgets (3 s to open, 1 s to switch a measure).
    # The open tab is kept by its section, not its label: a language switch renames every tab,
    # and would otherwise send the reader back to the first.
    labels = {name: tr(f"explore.tab.{name}") for name in sections}
    opened = st.session_state.get("explore_section")
    if opened in labels and st.session_state.get("explore_tab") not in labels.values():
        st.session_state["explore_tab"] = labels[opened]  # the same tab, in the new words
    tabs = st.tabs(list(labels.values()), on_change="rerun", key="explore_tab")
    for tab, (name, draw) in zip(tabs, sections.items(), strict=True):
        if tab.open:
            st.session_state["explore_section"] = name
            with tab:
                st.fragment(lambda draw=draw: guarded(draw))()
    with st.expander(tr("explore.present"), icon=":material/slideshow:"):
        finished = stamp(run_dir)
        present.offer_brief(
            "explore",
            run_dir.name,
            lambda lg: _run_brief(str(run_dir), finished, lg),
            f"{run_dir}:{finished}",
        )


main()
