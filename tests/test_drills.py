"""Incident drills (drills/): every shipped drill played headless with a scripted good trainee
and with one who does nothing — the good one scores higher and does not lose money (and saves
it where an action can), deterministically; the scripts are validated like scenarios."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from output_frames import read_frame

from drills.actions import load_trainee
from drills.report import debrief_html
from drills.runner import run_drill
from drills.script import load_drill
from sim.api import load_scenario, run
from sim.yaml_config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DRILLS = ROOT / "scenarios" / "drills"
TRAINEES = DRILLS / "trainees"
NAMES = sorted(p.stem for p in DRILLS.glob("*.yaml"))
# What the good trainee's actions are worth against doing nothing: (measure, direction).
SAVES = {
    "duplicate_wave": ("duplicate_charges_fen", -1),
    "uploads_stopped": ("fen_hours_waiting_upload", -1),
    "dead_reader": ("card_fares_cleared_fen", +1),
    "renewal_queue": ("outlet_visitors_turned_away", -1),
    "qr_morning_peak": ("refused_taps", -1),
    "clearing_centre_down": ("fare_fen_days_cleared_late", -1),
    "deposit_short": ("settlement_fen_days_deferred", -1),
}


def test_the_drills_cover_the_incidents_and_roles():
    drills = [load_drill(DRILLS / f"{n}.yaml") for n in NAMES]
    assert len(drills) >= 6 and set(NAMES) == set(SAVES)
    kinds = {inc.kind for d in drills for inc in d.incidents}
    assert {
        "comm_outage", "duplicate_wave", "clearing_node_outage", "qr_platform_outage",
        "renewal_wave", "validator_outage", "deposit_call_unpaid",
    } <= kinds  # fmt: skip
    assert {d.role for d in drills} == {"operations", "clearing", "service_desk"}
    assert {d.difficulty for d in drills} == {1, 2, 3}
    for d in drills:
        assert (TRAINEES / f"{d.id}_good.yaml").exists()
        assert d.title.zh and d.title.en and d.brief.zh and d.brief.en


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """Each drill with its good trainee and with the do-nothing one (played once each)."""
    out = {}
    base = tmp_path_factory.mktemp("drills")

    def play(name: str, who: str) -> dict:
        if (name, who) not in out:
            drill = load_drill(DRILLS / f"{name}.yaml")
            trainee = load_trainee(TRAINEES / f"{name if who == 'good' else 'do'}_{who}.yaml")
            out[name, who] = run_drill(drill, trainee, base / name / who)
        return out[name, who]

    play.folder = lambda name, who: base / name / who
    return play


@pytest.mark.parametrize("name", NAMES)
def test_the_good_trainee_scores_higher_and_does_not_lose_money(played, name):
    good, idle = played(name, "good"), played(name, "nothing")
    assert good["score"] > idle["score"] == 0
    assert good["score"] >= 0.9 * good["of"]
    assert all(v is None for t in idle["detection"].values() for v in t.values())
    for timing in good["detection"].values():
        assert timing["minutes_to_detect"] is not None
    assert idle["money"]["difference"] == dict.fromkeys(idle["money"]["difference"], 0)
    measure, sign = SAVES[name]
    assert sign * good["money"]["difference"][measure] > 0
    assert good["alerts_true"] > 0


def test_alerts_are_true_and_noise_against_the_ground_truth(played):
    debrief = played("duplicate_wave", "nothing")
    truth = debrief["incidents"]["dup-1201"]
    assert truth["devices"] == [1201] and truth["records"] > 10 and truth["fen"] > 0
    alerts = debrief["alerts"]
    assert any(a["true"] and a["key"] == "1201" for a in alerts)
    assert any(not a["true"] for a in alerts)  # an operations centre's rules also cry wolf
    for a in alerts:
        if a["per"] == "device":
            assert a["true"] == (int(a["key"]) in truth["devices"])


def test_stopping_early_means_fewer_cards_to_refund(played):
    good = played("duplicate_wave", "good")
    lived = good["money"]["with_actions"]["duplicate_charges_fen"]
    assert 0 < lived < good["money"]["doing_nothing"]["duplicate_charges_fen"]
    refund = next(t for t in good["tasks"] if t["kind"] == "refund_cards")
    assert refund["points"] == refund["of"] and not refund["missed"]


def test_the_desks_refunds_reach_the_cards_at_the_next_settlement(played):
    """The faulty reader's second charges come up to 5 s later: the clearing's 2-s lock
    rejects and refunds some, the rest only because the desk orders it, at the next
    settlement, from the card's issuer."""
    good, idle = played("duplicate_wave", "good"), played("duplicate_wave", "nothing")
    kept = idle["money"]["with_actions"]["double_charges_unrefunded_fen"]
    assert kept > 0 and good["money"]["with_actions"]["double_charges_unrefunded_fen"] == 0
    refund = next(a for a in good["actions"] if a["kind"] == "refund_cards")
    assert len(refund["records"]) >= len(refund["cards"]) > 10
    journal = read_frame(played.folder("duplicate_wave", "good") / "trainee", "ledger_entries")
    desk = journal[journal["memo"] == "desk_refund"]
    assert set(desk["service_date"].astype(str)) == {"2024-03-06"}
    assert set(desk["debit"]) == {"bank:NTCARD"} and set(desk["credit"]) == {"float:NTCARD"}
    assert 0 < desk["amount_fen"].sum() <= kept
    # Played again (look-ups, refunds and all): the same debrief.
    again = run_drill(
        load_drill(DRILLS / "duplicate_wave.yaml"),
        load_trainee(TRAINEES / "duplicate_wave_good.yaml"),
        played.folder("duplicate_wave", "again"),
    )
    assert again == good


def test_the_same_drill_trainee_and_seed_give_the_same_debrief_through_the_cli(played, tmp_path):
    api_debrief = played("dead_reader", "good")
    out = tmp_path / "cli"
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_scenario.py"), "drill", str(DRILLS / "dead_reader.yaml"),
         "--trainee", str(TRAINEES / "dead_reader_good.yaml"), "--out", str(out), "--lang", "en"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"score {api_debrief['score']:g} / 100" in done.stdout
    assert json.loads((out / "debrief.json").read_text()) == api_debrief
    page = (out / "debrief.html").read_text()
    assert "Drill debrief" in page and "Minutes to detect" in page


def test_the_debrief_page_in_both_languages(played):
    debrief = played("duplicate_wave", "good")
    zh, en = debrief_html(debrief, "zh"), debrief_html(debrief, "en")
    assert "演练复盘" in zh and "读卡器重复扣款" in zh and "资金影响" in zh
    assert "Drill debrief" in en and "A reader charging twice" in en
    assert "<script" not in zh  # self-contained, nothing to fetch
    assert (
        hashlib.sha256(zh.encode()).digest()
        == hashlib.sha256(debrief_html(debrief, "zh").encode()).digest()
    )
    with pytest.raises(ValueError, match="lang"):
        debrief_html(debrief, "fr")


def test_the_debrief_dates_what_falls_on_another_day(played):
    """An outage that began the night before shows its date, in the table and the timeline."""
    import copy

    debrief = copy.deepcopy(played("duplicate_wave", "good"))
    (incident,) = debrief["incidents"].values()
    day = debrief["day"]
    incident["start"] = f"{day[:8]}{int(day[8:10]) - 1:02d}T23:00:00"
    page = debrief_html(debrief, "en")
    before = f"{day[5:8]}{int(day[8:10]) - 1:02d} 23:00"
    assert f"<td>{before}–" in page  # the incidents table
    assert f"<td>{before}</td><td>Incident" in page  # the timeline, first


def test_a_world_under_other_incidents_runs_as_a_fresh_one(tmp_path):
    from sim.api import build
    from sim.world import with_incidents

    small = ROOT / "scenarios" / "small_ci.yaml"
    wave = [{"id": "w", "kind": "duplicate_wave", "start": "2024-01-01 06:00",
             "duration_min": 600, "target": "837", "duplicate_share": 0.8}]  # fmt: skip
    plain = load_scenario(small, days=2)
    waved = load_scenario(small, [f"incidents={yaml.safe_dump(wave)}"], days=2)
    run(waved, tmp_path / "fresh")
    run(waved, tmp_path / "rebased", world=with_incidents(build(plain), waved))
    files = sorted(
        p.relative_to(tmp_path / "fresh") for p in (tmp_path / "fresh").rglob("*.parquet")
    )
    assert files
    for f in files:
        assert (tmp_path / "fresh" / f).read_bytes() == (tmp_path / "rebased" / f).read_bytes()
    other = plain.model_copy(update={"seed": plain.seed + 1})
    with pytest.raises(ValueError, match="beyond incidents"):
        with_incidents(build(plain), other)


def test_every_metric_a_rule_may_name_is_measured():
    from drills.monitor import SCOPES_OF
    from drills.script import METRICS, SCOPES

    assert set(METRICS) == set(SCOPES_OF)
    assert {s for scopes in SCOPES_OF.values() for s in scopes} == set(SCOPES)


def test_bad_drill_scripts_name_the_field(tmp_path):
    text = (DRILLS / "dead_reader.yaml").read_text(encoding="utf-8")
    text = text.replace("../nantong_2024.yaml", str(ROOT / "scenarios" / "nantong_2024.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace("incident: dead-2319, points: 50}", "incident: nope, points: 50}", 1)
    )
    with pytest.raises(ConfigError, match="tasks.0.incident"):
        load_drill(bad)
    bad.write_text(text.replace("difficulty: 1", "difficulty: 7"))
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+.*difficulty"):
        load_drill(bad)
    trainee = tmp_path / "t.yaml"
    trainee.write_text("trainee:\n  name: x\n  actions:\n    - {at: '08:00', kind: mark_faulty}\n")
    with pytest.raises(ConfigError, match="needs devices"):
        load_trainee(trainee)
    trainee.write_text(
        "trainee:\n  name: x\n  actions:\n    - {at: '08:00', kind: acknowledge, alert: nope}\n"
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_scenario.py"), "drill", str(DRILLS / "dead_reader.yaml"),
         "--trainee", str(trainee), "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "'nope' is not an alert rule" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["a file", "inside a file", "a run folder"])
def test_an_out_that_cannot_hold_the_drill_is_refused_as_for_a_run_or_compare(tmp_path, where):
    taken = tmp_path / "notes.md"
    taken.write_text("mine", encoding="utf-8")
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / ".cardtwin-run.json").write_text("{}", encoding="utf-8")
    out, expected = {
        "a file": (taken, f"--out {taken}: is a file; expected a folder for the drill's"),
        "inside a file": (taken / "x", f"--out {taken / 'x'}: {taken} is a file; expected a"),
        "a run folder": (run_folder, f"--out {run_folder}: is the run folder {run_folder};"),
    }[where]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_scenario.py"), "drill", str(DRILLS / "dead_reader.yaml"),
         "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith(f"error: {expected}"), done.stderr
    assert "File exists" not in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert taken.read_text(encoding="utf-8") == "mine"


def _drill_copy(tmp_path, name: str, old: str, new: str) -> Path:
    """A shipped drill with ``old`` replaced by ``new`` (its base scenario found from here)."""
    text = (DRILLS / f"{name}.yaml").read_text(encoding="utf-8")
    text = text.replace("../nantong_2024.yaml", str(ROOT / "scenarios" / "nantong_2024.yaml"))
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_a_rule_on_a_scope_its_metric_lacks_is_refused_at_load(tmp_path):
    bad = _drill_copy(tmp_path, "deposit_short", "per: issuer", "per: line")
    with pytest.raises(ConfigError, match=r"alert_rules.0.*deferred_fen is measured per all, i"):
        load_drill(bad)
    bad = _drill_copy(tmp_path, "deposit_short", "for_min: 5", "for_min: 30")
    with pytest.raises(ConfigError, match="one value a day"):
        load_drill(bad)


def test_an_unquoted_time_is_refused_not_misread(tmp_path):
    trainee = tmp_path / "t.yaml"
    trainee.write_text(
        "trainee:\n  name: x\n  actions:\n    - {at: 10:30, kind: explain, target: x}\n"
    )
    with pytest.raises(ConfigError, match=r"t.yaml:4.*actions.0.at.*in quotes.*630"):
        load_trainee(trainee)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("{at: '07:50', kind: suspend_device, devices: [99999999]}",
         "trainee.actions.0.devices: no device 99999999; expected a device id from 0 to"),
        # Marked faulty: it was ignored (a repair of nothing), now refused alike.
        ("{at: '07:50', kind: mark_faulty, devices: [99999999]}",
         "trainee.actions.0.devices: no device 99999999"),
        ("{at: '07:50', kind: extend_outlet_hours, target: B17, until: '20:00'}",
         "incident action-0-extend (outlet_extension) target"),
        ("{at: '07:50', kind: switch_offline, lines: [nope]}",
         "trainee.actions.0.lines: unknown line 'nope'"),
    ],
)  # fmt: skip
def test_a_trainee_naming_what_the_world_lacks_is_bad_input_before_any_day(
    tmp_path, action, expected
):
    trainee = tmp_path / "t.yaml"
    trainee.write_text(f"trainee:\n  name: x\n  actions:\n    - {action}\n")
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_scenario.py"), "drill", str(DRILLS / "dead_reader.yaml"),
         "--trainee", str(trainee), "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert str(trainee) in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o" / "nothing").exists()  # refused before the day was played


def test_a_drill_whose_incident_the_world_lacks_starts_no_session(tmp_path):
    from drills.runner import DrillError
    from drills.session import DrillSession, sessions

    bad = _drill_copy(tmp_path, "dead_reader", 'target: "2319"', 'target: "999999"')
    root = tmp_path / "sessions"
    with pytest.raises(DrillError, match="incident dead-2319 .*expected a device id below"):
        DrillSession.start(bad, "Li", root=root)
    assert not sessions(root) and not any(root.iterdir())


def test_actions_become_incidents_that_end_or_cover_what_they_name():
    import datetime as dt

    from drills.actions import Action, with_actions
    from drills.runner import drill_world
    from sim.incidents import Incident

    drill = load_drill(DRILLS / "clearing_centre_down.yaml")
    network = drill_world(drill).network
    day = drill.day
    down = Incident(id="down", kind="clearing_node_outage", target="NT_EXCHANGE",
                    start=dt.datetime(2024, 3, 5, 1, 0), duration_min=360)  # fmt: skip
    acts = [
        Action(at=dt.time(1, 15), kind="restore_node", target="NT_EXCHANGE"),
        Action(at=dt.time(7, 30), kind="switch_offline", lines=[network.lines.ids[0]]),
        Action(at=dt.time(8, 0), kind="announce_free_rides", lines=[network.lines.ids[1]],
               until=dt.time(9, 0)),
    ]  # fmt: skip
    out = with_actions([down], acts, day, 30, network)
    assert out[0].duration_min == 45  # back 30 minutes after the switch to the standby site
    offline, free = out[1], out[2]
    assert (offline.kind, offline.target) == ("offline_acceptance", network.lines.ids[0])
    assert offline.start == dt.datetime(2024, 3, 5, 7, 30) and offline.duration_min == 16 * 60 + 30
    assert (free.kind, free.duration_min) == ("free_rides", 60)
    # Another node's switch, or one after the outage, changes nothing.
    for action in (
        Action(at=dt.time(1, 15), kind="restore_node", target="JS_EXCHANGE"),
        Action(at=dt.time(8, 0), kind="restore_node", target="NT_EXCHANGE"),
    ):
        assert with_actions([down], [action], day, 30, network) == [down]
    with pytest.raises(ValueError, match="actions.0.lines: unknown line 'NOPE'"):
        with_actions([], [Action(at=dt.time(8), kind="switch_offline", lines=["NOPE"])], day,
                     30, network)  # fmt: skip
    with pytest.raises(ValueError, match="needs lines"):
        Action(at=dt.time(8), kind="announce_free_rides")


@pytest.mark.parametrize(("until", "stops"), [("16:00", False), ("20:00", True)])
def test_keeping_an_outlet_open_means_beyond_its_usual_closing(until, stops):
    from drills.actions import Trainee
    from drills.debrief import _stopped_at
    from drills.runner import closing_s, drill_world

    drill = load_drill(DRILLS / "renewal_queue.yaml")
    wave = next(i for i in drill.incidents if i.kind == "renewal_wave")
    closing = closing_s(drill_world(drill), drill.day)
    assert closing[wave.target] == 17 * 3600  # outlet 17: 08:00-11:30; 13:30-17:00
    trainee = Trainee.model_validate(
        {"name": "x", "actions": [{"at": "11:25", "kind": "extend_outlet_hours",
                                   "target": wave.target, "until": until}]}
    )  # fmt: skip
    stopped = _stopped_at(drill, trainee, wave, {"devices": [], "lines": []}, closing)
    assert (stopped is not None) == stops


def test_a_dead_metro_gate_is_what_to_find_and_explanations_share_their_points(tmp_path):
    """A dead metro gate's riders tap at the station's next gate, whose records carry the
    incident: the next gate is touched (alerts on it are true) but not at fault. Causes given
    before the incident count for nothing; two distinct causes after it share the points."""
    from drills.actions import Trainee
    from drills.runner import drill_world
    from sim.network import METRO

    def drill_file(target: str) -> Path:
        path = tmp_path / "gate.yaml"
        spec = {
            "drill": {
                "id": "dead_gate",
                "title": {"en": "A dead gate", "zh": "闸机故障"},
                "brief": {"en": "Find the gate.", "zh": "找出闸机。"},
                "difficulty": 1,
                "role": "operations",
                "base": str(ROOT / "scenarios" / "nantong_2024.yaml"),
                "day": "2024-03-05",
                "incidents": [
                    {
                        "id": "gate",
                        "kind": "validator_outage",
                        "target": target,
                        "start": "2024-03-05 07:00",
                        "duration_min": 180,
                    }  # fmt: skip
                ],
                "alert_rules": [
                    {
                        "id": "quiet",
                        "metric": "taps",
                        "per": "device",
                        "below": 1,
                        "for_min": 30,
                        "min_usual": 2,
                        "severity": "major",
                        "text": {"en": "A gate has gone quiet", "zh": "闸机无交易"},
                    }  # fmt: skip
                ],
                "tasks": [
                    {"id": "find", "kind": "find_devices", "incident": "gate", "points": 50},
                    {
                        "id": "explain",
                        "kind": "explain",
                        "incident": "gate",
                        "points": 10,
                        "options": ["validator_outage", "comm_outage"],
                    },  # fmt: skip
                ],
            }
        }
        path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
        return path

    # The busiest metro gate from 07:00 to 10:00 on 5 March (27 taps with nothing done), as
    # the shipped drills name their devices; a gate of a station with others.
    gate = 3082
    devices = drill_world(load_drill(drill_file(str(gate)))).network.devices
    assert devices.kind[gate] == METRO and devices.count_of_stop[devices.stop[gate]] > 1
    drill = load_drill(drill_file(str(gate)))
    trainee = Trainee.model_validate(
        {
            "name": "t",
            "actions": [
                {"at": "06:50", "kind": "explain", "target": "validator_outage"},  # too early
                {"at": "07:40", "kind": "mark_faulty", "devices": [gate]},
                {"at": "07:45", "kind": "explain", "target": "comm_outage"},
                {"at": "07:50", "kind": "explain", "target": "validator_outage"},
            ],
        }
    )
    debrief = run_drill(drill, trainee, tmp_path / "out")
    truth = debrief["incidents"]["gate"]
    assert truth["faulty_devices"] == [gate]
    assert len(truth["devices"]) > 1 and gate in truth["devices"]  # the next gate carried it
    tasks = {t["task"]: t for t in debrief["tasks"]}
    assert tasks["find"]["points"] == 50 and tasks["find"]["missed"] == []
    assert tasks["explain"]["given"] == ["comm_outage", "validator_outage"]
    assert tasks["explain"]["points"] == 5
