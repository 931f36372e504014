"""Running a drill headless: the day twice, the monitoring, the scripted trainee, the debrief
(drills/debrief.py), written as ``debrief.json``.

The drill's day is played with the two days before it (the day before is the monitoring's
*usual* day: what today is compared with, as an operations centre compares with yesterday; and
the cut-off at 02:00 has a day to clear) and the day after (so the drill day's records are
cleared): four simulated days, for each of

- ``nothing``: the drill's incidents, nobody acting (the ground truth, and the money baseline);
- ``trainee``: the incidents and the trainee's actions (drills/actions.py); not played again
  when the actions change nothing in the day (acknowledging, naming, explaining). Refunds
  ordered at the desk are what its look-up shows in that day at the time of the order, so the
  day is played once more with them (the taps are the same; the money after the order is not).

One world is built for the drill; the other run is the same world under another incident
timeline (``sim.world.with_incidents``) and the runs share the seed, so the two days differ
only by what the actions did. The same drill, trainee and seed give the same debrief, byte for
byte.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import re
from pathlib import Path

import yaml

from drills.actions import Action, Trainee, with_actions
from drills.debrief import classify, detection, ground_truth, money, score_tasks
from drills.desk import FILE as DESK_FILE
from drills.desk import DeskBalances
from drills.monitor import RunView, raise_alerts
from drills.script import Drill
from drills.session import chain_signatures


class DrillError(ValueError):
    """The drill's day cannot be played with these incidents and actions (a target the world
    does not have, a time outside the days): the message names the incident or action."""


_INCIDENT_FIELD = re.compile(r"incidents\.(\d+)\.(\S+?):? (.*)", re.S)


def _named(message: str, drill: Drill, incidents) -> DrillError:
    """``message`` (about ``incidents.N.field`` of the scenario the drill plays) said of the
    incident by its id, and of the drill's file: not of a scenario the user never wrote."""
    found = _INCIDENT_FIELD.search(message)
    if found is None or int(found.group(1)) >= len(incidents):
        return DrillError(f"drill {drill.id}: {message}")
    incident = incidents[int(found.group(1))]
    return DrillError(
        f"drill {drill.id}: incident {incident.id} ({incident.kind}) "
        f"{found.group(2)}: {found.group(3).strip()}"
    )


def closing_s(world, day: dt.date) -> dict[str, int]:
    """Each outlet's usual closing time on ``day`` (seconds after midnight; 0 if closed that
    day), by the world's calendar as the outlets' own hours are (sim/shard.py)."""
    cal = world.calendar
    d = cal.day_of(day)
    weekend = cal.weekday(d) >= 5
    return {
        str(o.outlet_id): max(
            (end for _, end in (o.weekend_windows if weekend else o.weekday_windows)), default=0
        )
        if cal.is_open(o.open_days, d)
        else 0
        for o in world.outlets
    }


def drill_scenario(drill: Drill, incidents, overrides=()):
    """The drill's base scenario over its day (with the two days before and the day after)
    and ``incidents`` (validated as a scenario's; DrillError names the incident)."""
    from sim.api import BadInput, load_scenario

    listed = [inc.model_dump(mode="json", exclude_defaults=True) for inc in incidents]
    for item in listed:
        item["start"] = item["start"].replace("T", " ")[:16]
    try:
        return load_scenario(
            drill.base,
            [
                *drill.overrides,
                *overrides,
                f"period.start={drill.day - dt.timedelta(days=2)}",
                f"incidents={yaml.safe_dump(listed, default_flow_style=True, allow_unicode=True)}",
            ],
            days=4,
        )
    except BadInput as exc:
        raise _named(str(exc), drill, list(incidents)) from None


def drill_day(drill: Drill, incidents, overrides=()):
    """The scenario and world of the drill's day under ``incidents``, every target checked
    against the world (DrillError names the incident): nothing is played yet."""
    from sim.world import with_incidents

    scenario = drill_scenario(drill, incidents, overrides)
    try:
        return scenario, with_incidents(drill_world(drill, overrides), scenario)
    except ValueError as exc:
        raise _named(str(exc), drill, list(incidents)) from None


def base_scenario(base: str, day: dt.date, overrides: tuple[str, ...]):
    """The scenario a drill's days are played on, without incidents: ``base`` with
    ``overrides`` (``--set`` style), from two days before ``day`` to the day after. Raises
    ``sim.api.BadInput`` where they do not load (a base edited into a bad state, a mistyped
    override). The one place the drill's world (``_world``) and its names (``naming_world``)
    get their scenario from, so the names are always those of the world the day is played on.
    Kept per process (a load takes tens of milliseconds; the pages check every session's every
    two seconds, ``drills.session.DrillSession.problem``) while every file of the base's
    ``extends:`` chain stays as it is (``_kept``): a base edited while the dashboard runs is
    loaded again at the next ask. A failed load is not kept, so a mended drill loads at the
    next try."""
    return _kept(_base_scenario, base, day, overrides)


def _kept(cached, base: str, day: dt.date, overrides: tuple[str, ...], files=None):
    """``cached(base, day, overrides, files)``, a function of the base scenario kept per
    process under ``files``: the signatures of every file of the base's ``extends:`` chain
    (``drills.session.chain_signatures``; taken now unless given), so an edit of the base or
    of a file it extends, even one that keeps its size and modification time, is a new key and
    what the old files made is never served again. The signatures are taken before the load:
    a file changing during it changes the next key, so a load that may have read it half
    written is not served either.

    Where the chain cannot be followed (a file gone or malformed: nothing to key on) the
    function runs without being kept, and its load reports what is wrong."""
    if files is None:
        files = chain_signatures(base)
    if files is None:
        return cached.__wrapped__(base, day, overrides, None)
    return cached(base, day, overrides, files)


@functools.lru_cache(maxsize=32)
def _base_scenario(base: str, day: dt.date, overrides: tuple[str, ...], files: tuple | None):
    """``base_scenario`` (``files``: its cache key, ``_kept``)."""
    from sim.api import load_scenario

    return load_scenario(
        base,
        [*overrides, f"period.start={day - dt.timedelta(days=2)}", "incidents=[]"],
        days=4,
    )


def scenario_problem(drill: Drill, overrides=()) -> str | None:
    """Why the drill's base scenario does not load with its overrides (``base_scenario``),
    on one line; None when it loads."""
    from sim.api import BadInput

    try:
        base_scenario(str(drill.base), drill.day, (*drill.overrides, *overrides))
    except BadInput as exc:
        return " ".join(str(exc).split())
    return None


@functools.lru_cache(maxsize=2)
def _world(base: str, day: dt.date, overrides: tuple[str, ...], files: tuple | None):
    """The drill's world without incidents (built once per process and base as its files are,
    ``_kept``: every variant of the day, and every drill on the same base and day, is this
    world under another timeline)."""
    from sim.api import build

    return build(_kept(_base_scenario, base, day, overrides, files))


def drill_world(drill: Drill, overrides=()):
    """The drill's world (``_world``)."""
    return _kept(_world, str(drill.base), drill.day, (*drill.overrides, *overrides))


def naming_world(base: str, day: dt.date, overrides: tuple[str, ...]):
    """The world of a drill (its ``base``, ``day`` and ``overrides``) without people or
    routes: the same lines, devices, outlets and regions the day is played on (the same
    ``base_scenario``), to name them by (tens of milliseconds once the scenario is loaded,
    where the full world takes seconds); kept while the base's files are as they are
    (``_kept``). Kept apart from ``_world``, whose two places a trainer's page listing sessions
    of several drills would otherwise evict on every refresh."""
    return _kept(_naming_world, base, day, overrides)


@functools.lru_cache(maxsize=8)
def _naming_world(base: str, day: dt.date, overrides: tuple[str, ...], files: tuple | None):
    """``naming_world`` (``files``: its cache key, ``_kept``)."""
    from sim.api import build

    return build(_kept(_base_scenario, base, day, overrides, files), people=False)


def drill_network(session) -> object:
    """The network of a live session's drill (to tell which devices an action names)."""
    return drill_world(session.drill).network


def play_day(drill: Drill, incidents, folder: Path, *, privacy_key=None, overrides=()):
    """Simulate the drill's days under ``incidents`` into ``folder`` (replacing what is there);
    returns the scenario played."""
    from sim.api import run

    scenario, world = drill_day(drill, incidents, overrides)
    desk = DeskBalances((drill.day - scenario.period.start).days)
    # The run replaces only its own files: the desk's balances wait beside the folder, and
    # come back if the run fails (the earlier day is then still there, whole).
    folder = Path(folder)
    kept = folder.with_name(f"{folder.name}.{DESK_FILE}")
    if (folder / DESK_FILE).exists():
        (folder / DESK_FILE).replace(kept)
    try:
        run(scenario, folder, world=world, privacy_key=privacy_key, subscribers=[desk])
    except BaseException:
        if kept.exists():
            kept.replace(folder / DESK_FILE)
        raise
    kept.unlink(missing_ok=True)
    desk.write(folder)
    return scenario


def run_drill(
    drill: Drill,
    trainee: Trainee,
    out_dir: Path,
    *,
    privacy_key=None,
    overrides=(),
) -> dict:
    """Play ``drill`` with ``trainee``'s actions; the debrief (also written to ``out_dir``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = drill_world(drill, overrides)
    network = world.network

    def acted(actions) -> list:
        return with_actions(list(drill.incidents), actions, drill.day, drill.repair_min, network)

    def play(incidents, folder: Path):
        return play_day(drill, incidents, folder, privacy_key=privacy_key, overrides=overrides)

    # Every target of the trainee's actions checked before anything is played.
    before_refunds = acted(trainee.actions)
    drill_day(drill, before_refunds, overrides)
    nothing = play(drill.incidents, out_dir / "nothing")
    cutoff = nothing.clearing.batch_cutoff_hour
    played = out_dir / "nothing"
    if before_refunds != list(drill.incidents):  # actions that change the day: play it again
        played = out_dir / "trainee"
        play(before_refunds, played)
    # The desk's look-ups in the trainee's day; refunds of what they show change only money
    # after the actions (the taps are the same), so the day is played once more with them.
    view = RunView(played, drill.day, cutoff)
    try:
        trainee = resolve_lookups(trainee, view)
    finally:
        view.close()
    with_refunds = acted(trainee.actions)
    if with_refunds != before_refunds:
        played = out_dir / "trainee"
        play(with_refunds, played)
    today = RunView(played, drill.day, cutoff)
    usual = RunView(out_dir / "nothing", drill.day - dt.timedelta(days=1), cutoff)
    try:
        truth = ground_truth(out_dir / "nothing", drill.day, drill.incidents)
        # What the trainee's own day had (refunds are due for the charges that happened).
        lived = ground_truth(played, drill.day, drill.incidents)
        alerts = classify(raise_alerts(drill.alert_rules, today, usual), truth, drill.day)
    finally:
        today.close()
        usual.close()
    tasks = score_tasks(drill, trainee, truth, lived, closing_s(world, drill.day))
    before = money(out_dir / "nothing", drill.day)
    after = money(played, drill.day)
    debrief = {
        "drill": drill.id,
        "title": drill.title.model_dump(),
        "role": drill.role,
        "difficulty": drill.difficulty,
        "day": str(drill.day),
        "trainee": trainee.name,
        "score": round(sum(t["points"] for t in tasks), 1),
        "of": drill.total_points(),
        "tasks": tasks,
        "incidents": truth,
        "detection": detection(drill, trainee, truth, alerts),
        "alerts": [dataclasses.asdict(a) for a in alerts],
        "alerts_true": sum(a.true for a in alerts),
        "alerts_noise": sum(not a.true for a in alerts),
        "actions": [a.model_dump(mode="json") for a in trainee.actions],
        "money": {
            "with_actions": after,
            "doing_nothing": before,
            "difference": {k: round(after[k] - before[k], 2) for k in after},
        },
    }
    (out_dir / "debrief.json").write_text(
        json.dumps(debrief, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return debrief


def resolve_lookups(trainee: Trainee, view: RunView) -> Trainee:
    """The trainee's refunds as the desk's look-up shows them in the trainee's day at the time
    of the action: the cards (``duplicates_on``: those charged twice on the device since a
    time) and their second charges (``records``, what is refunded)."""
    return trainee.model_copy(
        update={"actions": [resolve_refund(action, view) for action in trainee.actions]}
    )


def resolve_refund(action: Action, view: RunView) -> Action:
    """One action with its look-up resolved (``resolve_lookups``); others as they are."""
    if action.kind != "refund_cards":
        return action
    cards = set(action.cards)
    if action.duplicates_on is not None:
        on = action.duplicates_on
        cards |= set(view.charged_twice(on.device, on.since, action.at))
    records = view.second_charges(sorted(cards), action.at)
    return action.model_copy(update={"cards": sorted(cards), "records": records})


__all__ = [
    "DrillError",
    "base_scenario",
    "drill_day",
    "drill_network",
    "drill_scenario",
    "drill_world",
    "naming_world",
    "play_day",
    "resolve_lookups",
    "resolve_refund",
    "run_drill",
    "scenario_problem",
]
