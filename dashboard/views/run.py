"""Run a scenario, live, or reopen an earlier run.

A scenario file (shipped, a policy overlay, or an uploaded YAML) and the key parameters edited
in a form become ``--set`` style overrides for ``sim.api.load_scenario``, so a bad value gets
the engine's own message, shown beside the field it came from. The run streams day by day
(``sim.api.iter_days``): a progress bar and KPI cards that update as each day finishes. Runs
land in the runs folder, where the list below finds them again.

An earlier run is never replaced by accident: the output folder is named after the scenario and
the days actually chosen unless the user names it, and a folder that already holds a run is
replaced only once the user ticks "replace" for that very folder.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import i18n
from dashboard.overrides import (
    errors_by_field,
    fen_text,
    incident_columns,
    incident_frame,
    incidents_yaml,
)
from dashboard.state import (
    FOLDER_NAME,
    ROOT,
    lang,
    occupied,
    offer_replace,
    replace_agreed,
    replace_box,
    runs_root,
    tr,
    withdraw_offer,
)
from dashboard.uploads import UPLOAD_DIR, UPLOAD_LIMIT_MB, target_of, upload_problem
from sim import api
from sim.run_dir import MARKER_FILE

SCENARIO_DIRS = (ROOT / "scenarios", ROOT / "scenarios" / "policies")
# Incident kinds the incident table's caption gives as examples (in words, as the table shows).
EXAMPLE_KINDS = ("validator_outage", "clearing_node_outage")
DEFAULT_SCENARIO = ROOT / "scenarios" / "nantong_2024.yaml"  # what `make run` runs
SEED_TEXT = re.compile(r"\d+")  # a seed: any whole number >= 0, as the engine takes it
NOT_IN_FOLDER_NAME = re.compile(r"[^\w.-]+")  # what an automatic folder name leaves out
REPLACE_OFFER = "replace_offer"  # the output folder the user is asked about replacing


def scenario_files() -> list[Path]:
    """The scenarios one can run: shipped, policy overlays, uploaded."""
    files = [p for d in (*SCENARIO_DIRS, UPLOAD_DIR) for p in sorted(d.glob("*.yaml"))]
    return [p for p in files if p.is_file()]


def _label(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- reopen ---------------------------------------------------------------------------------


def reopen_section() -> None:
    """Earlier runs in the runs folder; a broken one is listed with what is wrong with it."""
    st.subheader(tr("run.reopen"))
    runs = api.list_runs(runs_root())
    if not runs:
        st.caption(tr("run.no_runs", root=str(runs_root())))
        return
    lg = lang()
    rows = [
        {
            tr("run.col.folder"): r.path.name,
            tr("run.col.scenario"): r.name,
            tr("run.col.start"): r.started or "",
            tr("run.col.days"): r.days,
            tr("run.col.taps"): i18n.count(r.taps, lg) if r.taps is not None else "",
            tr("run.col.status"): tr("run.status.ok") if r.problem is None else r.problem,
        }
        for r in runs
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    names = [str(r.path) for r in runs]
    chosen = st.selectbox(
        tr("run.choose_run"), names, format_func=lambda p: Path(p).name, key="reopen_choice"
    )
    if st.button(tr("run.open"), key="reopen_button", icon=":material/folder_open:"):
        listing = runs[names.index(chosen)]
        if listing.problem is not None:
            st.error(tr("common.run_unreadable", error=listing.problem))
        else:
            st.session_state["run_dir"] = chosen
            st.switch_page("views/explore.py")


# --- upload ---------------------------------------------------------------------------------


def upload_section() -> None:
    """Upload a scenario YAML (dashboard/uploads.py); a good one is selected to run."""
    # The limit is stated once, by Streamlit's own line under the box ("1MB per file", in
    # English only: the Chinese label says it in Chinese), and enforced by upload_problem.
    upload = st.file_uploader(
        tr("run.upload", limit=UPLOAD_LIMIT_MB), type=["yaml", "yml"], key="upload",
        max_upload_size=UPLOAD_LIMIT_MB,
    )  # fmt: skip
    if upload is None or st.session_state.get("upload_done") == upload.file_id:
        return  # handled when it came: the user may have chosen another scenario since
    st.session_state["upload_done"] = upload.file_id
    target = target_of(upload.name)
    data = upload.getvalue()
    earlier = _read(target)  # an earlier upload of the same name, which this one replaces
    problem = upload_problem(upload.name, data, lang())
    if problem is not None:
        st.error(problem)
        return
    st.session_state["scenario_choice"] = str(target)
    st.success(tr("run.upload_ok", path=_label(target)))
    if earlier is not None and earlier != data:
        st.warning(tr("run.upload_replaced", path=_label(target)))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


# --- the form -------------------------------------------------------------------------------


def _defaults(path: Path) -> api.Scenario | None:
    try:
        return api.load_scenario(path)
    except api.BadInput as exc:
        st.error(tr("run.scenario_invalid", error=str(exc)))
        return None


def _field_error(errors: dict[str, list[str]], field: str) -> None:
    for message in errors.get(field, []):
        st.error(message, icon=":material/error:")


def _form_key(path: Path, base) -> str:
    """What the form's values come from: the file and what it holds (its validated content,
    so a file uploaded again under the same name, or edited on disk, starts a fresh form)."""
    content = hashlib.sha256(base.model_dump_json().encode("utf-8")).hexdigest()
    return f"{path}:{content}"


def auto_out_name(scenario_name: str, days: int) -> str:
    """The output folder a run gets when the user names none: the scenario and the days run."""
    return f"{NOT_IN_FOLDER_NAME.sub('_', scenario_name)}_{days}d"


def run_form(path: Path, base) -> tuple[list, str, str, bool]:
    """The key parameters; returns the overrides, the seed as typed, the output folder name
    typed (empty: named after the scenario and days) and whether to run."""
    form_key = _form_key(path, base)
    if st.session_state.get("form_for") != form_key:
        # A keyed widget keeps its value when its default changes: another scenario's form
        # (or the same file with other contents) must start from its values, not from what
        # the last one held.
        for key in [k for k in st.session_state if str(k).startswith("f_")]:
            del st.session_state[key]
        st.session_state["form_for"] = form_key
        st.session_state["run_errors"] = {}
        withdraw_offer(REPLACE_OFFER)
    errors: dict[str, list[str]] = st.session_state.get("run_errors", {})
    days_default = min(7, base.period.days)
    fares = base.fares
    with st.form("run_form"):
        c1, c2, c3 = st.columns(3)
        days = c1.number_input(tr("run.days"), value=days_default, step=1, key="f_days")
        with c1:
            _field_error(errors, "days")
        # Text, not a number box: the engine takes any seed >= 0, and a browser number box
        # cannot hold one above 2**53 (Streamlit refuses to draw it).
        seed = c2.text_input(
            tr("run.seed"), value=str(base.seed), key="f_seed", help=tr("run.seed_help")
        )
        with c2:
            _field_error(errors, "seed")
        name = c3.text_input(
            tr("run.out_name"), key="f_out", placeholder=tr("run.out_auto", scenario=base.name),
            help=tr("run.out_name_help"),
        )  # fmt: skip
        with c3:
            _field_error(errors, "out")
            # asked after a start refused for a taken folder: the user's explicit yes
            replace_box(REPLACE_OFFER, "run.replace")
        st.markdown(f"**{tr('run.fares')}**")
        c1, c2, c3 = st.columns(3)
        bus_fares = sorted(set(fares.bus.region_fare_fen.values()))
        bus = None
        if bus_fares:  # a flat fare per region: one field sets them all
            bus = c1.number_input(
                tr("run.bus_fare"), value=bus_fares[0] / 100, step=0.5, format="%.2f",
                key="f_bus", help=tr("run.bus_fare_help"),
            )  # fmt: skip
            with c1:
                _field_error(errors, "bus_fare")
        window = off = None
        if fares.transfer is not None:  # a scenario may have no transfer discount at all
            window = c2.number_input(
                tr("run.transfer_window"), value=int(fares.transfer.window_min), step=5,
                key="f_window",
            )  # fmt: skip
            with c2:
                _field_error(errors, "transfer_window")
            off = c3.number_input(
                tr("run.transfer_off"), value=fares.transfer.amount_off_fen / 100, step=0.5,
                format="%.2f", key="f_off",
            )  # fmt: skip
            with c3:
                _field_error(errors, "transfer_off")
        st.markdown(f"**{tr('run.concessions')}**")
        ages = dict(getattr(base.population, "concession_ages", {}) or {})
        c1, c2 = st.columns(2)
        age_inputs = {}
        for column, card in zip((c1, c2), sorted(ages), strict=False):
            age_inputs[card] = column.number_input(
                tr("run.concession_age", card=i18n.code_label("rider_category", card, lang())),
                value=int(ages[card]), step=1, key=f"f_age_{card}",
            )  # fmt: skip
            with column:
                _field_error(errors, f"age_{card}")
        st.markdown(f"**{tr('run.incidents')}**")
        kinds = [i18n.code_label("incident_kind", k, lang()) for k in EXAMPLE_KINDS]
        st.caption(tr("run.incidents_help", kinds=tr("run.incident.examples_join").join(kinds)))
        table = incident_frame(base)
        incidents = st.data_editor(
            table,
            num_rows="dynamic",
            key="f_incidents",
            width="stretch",
            column_config=incident_columns(table, lang()),
        )
        _field_error(errors, "incidents")
        start = st.form_submit_button(tr("run.start"), type="primary", icon=":material/play_arrow:")
    overrides = [api.FlagOverride("days", "period.days", str(days))]
    if window is not None:
        overrides += [
            api.FlagOverride("transfer_window", "fares.transfer.window_min", str(window)),
            api.FlagOverride("transfer_off", "fares.transfer.amount_off_fen", fen_text(off)),
        ]
    if bus is not None and fen_text(bus) != str(bus_fares[0]):
        # only when changed: untouched, regions keep their own fares
        regions = ", ".join(f"{r}: {fen_text(bus)}" for r in fares.bus.region_fare_fen)
        fares_text = f"{{{regions}}}"
        overrides.append(api.FlagOverride("bus_fare", "fares.bus.region_fare_fen", fares_text))
    for card, age in age_inputs.items():
        overrides.append(
            api.FlagOverride(f"age_{card}", f"population.concession_ages.{card}", str(age))
        )
    overrides.append(api.FlagOverride("incidents", "incidents", incidents_yaml(incidents)))
    return overrides, seed, name, start


# --- running --------------------------------------------------------------------------------


def live_run(path: Path, overrides: list, seed_text: str, out_typed: str) -> None:
    """Load, run day by day with a progress bar and live KPIs, then open the run. A bad seed
    or folder name, or an earlier run in the folder the user has not agreed to replace, is a
    message beside its field and nothing runs."""
    st.session_state["run_errors"] = {}
    errors: dict[str, list[str]] = {}
    seed_text = seed_text.strip()
    if not SEED_TEXT.fullmatch(seed_text):
        errors["seed"] = [tr("run.bad_seed", text=seed_text)]
    out_typed = out_typed.strip()
    if out_typed and not FOLDER_NAME.fullmatch(out_typed):
        errors["out"] = [tr("run.bad_out_name", name=out_typed)]
    if errors:
        st.session_state["run_errors"] = errors
        st.rerun()
    overrides = [*overrides, api.FlagOverride("seed", "seed", str(int(seed_text)))]
    try:
        scenario = api.load_scenario(path, overrides)
    except api.BadInput as exc:
        st.session_state["run_errors"] = errors_by_field(str(exc), overrides)
        st.rerun()
    # Named after the days this run has, not those the form started with.
    out_name = out_typed or auto_out_name(scenario.name, scenario.period.days)
    out = runs_root() / out_name
    if occupied(out) and not replace_agreed(REPLACE_OFFER, out_name):
        if (out / MARKER_FILE).exists():  # an earlier run: replaced only on the user's word
            offer_replace(REPLACE_OFFER, out_name, "f_replace:")
            message = tr("run.out_exists", folder=out_name, path=str(out))
        else:  # someone's own files: never ours to replace (the engine would refuse too)
            withdraw_offer(REPLACE_OFFER)
            message = tr("run.out_taken", folder=out_name, path=str(out))
        st.session_state["run_errors"] = {"out": [message]}
        st.rerun()
    lg = lang()
    bar = st.progress(0.0, text=tr("run.building"))
    cards = st.empty()
    totals: dict[str, float] = {}
    days = scenario.period.days
    try:
        steps = api.iter_days(scenario, out, scenario_path=path)
        for done in steps:
            for k, v in done.kpis.items():
                totals[k] = totals.get(k, 0) + v
            bar.progress(
                (done.day + 1) / days,
                text=tr("run.progress", day=done.day + 1, days=days, date=i18n.date(done.date, lg)),
            )
            with cards.container():
                _live_cards(totals, done.day + 1)
    except api.BadInput as exc:
        bar.empty()
        st.error(tr("run.failed", error=str(exc)))
        return
    except api.InvariantViolation as exc:
        bar.empty()
        st.error(tr("run.invariant", error=" ".join(str(exc).split())))
        return
    st.session_state["run_dir"] = str(out)
    st.session_state["run_done"] = str(out)
    withdraw_offer(REPLACE_OFFER)  # a yes is for one run, not the next
    st.rerun()  # the form again, without the messages of the attempt before


def _live_cards(totals: dict[str, float], days: int) -> None:
    lg = lang()
    spend = int(totals.get("card_spend_fen", 0) + totals.get("qr_spend_fen", 0))
    cols = st.columns(4)
    cols[0].metric(tr("run.live.days"), days)
    cols[1].metric(tr("run.live.taps"), i18n.count(int(totals.get("taps", 0)), lg))
    cols[2].metric(tr("run.live.fares"), i18n.yuan(spend, lg, compact=True))
    cols[3].metric(tr("run.live.card_sales"), i18n.count(int(totals.get("card_sales", 0)), lg))


def main() -> None:
    """The Run page: earlier runs on the right, a new run on the left."""
    st.header(tr("run.header"))
    left, right = st.columns([3, 2])
    with right:
        reopen_section()
    with left:
        st.subheader(tr("run.new"))
        upload_section()  # before the scenario box, which it may set to the uploaded file
        files = scenario_files()
        labels = [str(p) for p in files]
        if st.session_state.get("scenario_choice") not in labels:
            default = DEFAULT_SCENARIO
            st.session_state["scenario_choice"] = str(default) if default in files else labels[0]
        choice = st.selectbox(
            tr("run.scenario"), labels, key="scenario_choice",
            format_func=lambda p: _label(Path(p)), help=tr("run.scenario_help"),
        )  # fmt: skip
        path = Path(choice)
        base = _defaults(path)
        if base is None or isinstance(base, api.MultiCityScenario):
            if base is not None:
                st.info(tr("run.multi_city"))
            return
        if base.description:  # a scenario file has one description, in one language
            text = " ".join(base.description.split())
            key = "run.description_zh" if i18n.written_in_chinese(text) else "run.description"
            st.caption(tr(key, text=text))
        overrides, seed, out_name, start = run_form(path, base)
        _field_error(st.session_state.get("run_errors", {}), "scenario")
        done = st.session_state.pop("run_done", None)
        if done:
            st.success(tr("run.done", folder=done))
            st.page_link("views/explore.py", label=tr("run.go_explore"), icon=":material/insights:")
        if start:
            live_run(path, overrides, seed, out_name)


main()
