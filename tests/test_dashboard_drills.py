"""The drill console and the trainer's view (dashboard/views/drill.py, trainer.py), driven by
Streamlit's AppTest on a real drill session (drills/session.py): alerts appear on the clock,
an acknowledgement and an action are recorded and change the day, the trainer injects an
incident, the debrief opens, and several trainees' debriefs are compared; in both languages."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from page_texts import CJK
from streamlit.testing.v1 import AppTest

from dashboard import i18n
from drills.session import DrillSession

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
DRILL = ROOT / "scenarios" / "drills" / "duplicate_wave.yaml"


def page(runs: Path, view: str, lang: str = "en", session: DrillSession | None = None):
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["runs_root"] = str(runs)
    at.session_state["lang"] = lang
    if session is not None:
        at.session_state["drill_session"] = str(session.folder)
    at.switch_page(f"views/{view}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


@pytest.fixture()
def session(tmp_path):
    """A duplicate-wave session whose clock stands at about 08:09 (started 95 s ago at 60x
    from 06:30)."""
    s = DrillSession.start(
        DRILL, "Wang", root=tmp_path / "drills" / "sessions", now=time.time() - 95
    )
    s.pause()
    return s


def test_the_console_shows_the_clock_and_the_alerts_raised_so_far(tmp_path, session):
    at = page(tmp_path, "drill", session=session)
    (clock,) = [m for m in at.metric if m.label == "Simulated time"]
    assert "08:0" in clock.value or "08:1" in clock.value
    alerts = next(d.value for d in at.dataframe if "Where" in d.value.columns)
    # Where, by name (what the device is on which line) with the id an action takes.
    assert list(alerts["Where"]) == ["Urban bus B134 reader (1201)"]
    assert "charged twice" in alerts["Alert"].iloc[0]
    assert len(at.get("plotly_chart")) >= 2  # taps and duplicates, today against yesterday
    # The tasks in words (the script's own, else the task kind's), with their points.
    tasks = [m.value for m in at.markdown if m.value.startswith("- ")]
    assert "- Find the affected reader (40 points)" in tasks
    assert "- Stop the double charges (30 points)" in tasks
    from dashboard import i18n
    from drills.script import TASK_KINDS

    for kind in TASK_KINDS:  # a task without its own words is shown by its kind's
        assert i18n.t(f"drill.task.{kind}", "zh", n=60) and i18n.t(f"drill.task.{kind}", "en")


def test_where_it_happens_lists_what_moved_most_from_yesterday(tmp_path, session):
    at = page(tmp_path, "drill", session=session)
    # At first what the drill's first alert rule watches: double charges per device.
    table = next(d.value for d in at.dataframe if "Last hour" in d.value.columns)
    # the faulty reader, above yesterday's, by name with its id
    assert table["device"].iloc[0] == "Urban bus B134 reader (1201)"
    assert table["Last hour"].iloc[0] > table["Same hour yesterday"].iloc[0]
    assert len(at.get("plotly_chart")) >= 3  # the drill's charts and the one chosen here
    at.selectbox(key="drill_where_metric:en").set_value("taps").run()
    at.selectbox(key="drill_where_per:en").set_value("line").run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "Last hour" in d.value.columns)
    assert "line" in table.columns and len(table) == 10
    bus = re.compile(r"(Urban|Rudong|Haian|Haimen|Rugao|Qidong) bus B\d{3} \(\w+-B\d{3}\)")
    metro = re.compile(r"Metro Line \d \(M\d\)")  # the scenario's 1号线, not its id
    assert all(bus.fullmatch(x) or metro.fullmatch(x) for x in table["line"]), table["line"]
    chart = at.selectbox(key="drill_where_key:en")
    assert chart.value in set(table["line"].str.extract(r"\((\S+)\)$")[0])  # kept as the id
    assert chart.options == list(table["line"])  # offered by name


def test_acknowledge_act_and_open_the_debrief(tmp_path, session):
    at = page(tmp_path, "drill", session=session)
    button(at, "Acknowledge the chosen alert").click().run()
    assert not at.exception, at.exception
    assert session.actions()[0].kind == "acknowledge"
    assert any("Acknowledged: Cards charged twice" in c.value for c in at.caption)
    at.selectbox(key="drill_kind:en").set_value("mark_faulty").run()
    next(t for t in at.text_input if t.label.startswith("Device ids")).set_value("1201")
    button(at, "Do it").click().run()
    assert not at.exception, at.exception
    assert any("Recorded" in s.value for s in at.success)
    acted = session.actions()
    assert [a.kind for a in acted] == ["acknowledge", "mark_faulty"] and acted[1].devices == [1201]
    # The actions so far, in words: no field names, no codes.
    table = next(d.value for d in at.dataframe if "What it named" in d.value.columns)
    assert list(table.columns) == ["Time", "Action", "What it named"]
    assert list(table["Action"]) == [
        "Acknowledge an alert",
        "Report devices faulty (a technician repairs them)",
    ]
    assert table["What it named"].iloc[0].startswith("Cards charged twice")
    assert table["What it named"].iloc[1] == "devices Urban bus B134 reader (1201)"
    assert all(len(t) == 5 and t[2] == ":" for t in table["Time"])
    # The day was replayed with the repair: the reader stops charging twice an hour later.
    assert session.incidents() and session._acted(acted)[0].duration_min < 600
    button(at, "End the drill and see the debrief").click().run()
    assert not at.exception, at.exception
    debrief = session.debrief()
    assert debrief["trainee"] == "Wang" and debrief["score"] >= 60
    assert any(b.label == "Download the debrief (HTML)" for b in at.get("download_button"))
    assert "演练复盘" not in (session.folder / "debrief.html").read_text()  # in English
    # The debrief on the page names what the incident, the alerts and the actions name.
    from dashboard.drill_names import drill_names
    from drills.report import debrief_html

    shown = debrief_html(debrief, "en", drill_names(session, "en"))
    assert "duplicate_wave, Urban bus B134 reader (1201)" in shown
    assert "devices Urban bus B134 reader (1201)" in shown
    # the task's devices found by name too, as the actions table names them
    assert "found: Urban bus B134 reader (1201)" in shown
    # Without names (the CLI's, the file the session wrote), the ids as before.
    assert "(duplicate_wave, 1201)" in debrief_html(debrief, "en")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", "应为逗号分隔的非负整数"),
        ("-3", "应为逗号分隔的非负整数"),
        # A device the drill's world does not have: refused before it is kept, and the day
        # stays as it was (the session goes on).
        ("99999999", "no device 99999999; expected a device id from 0 to"),
    ],
)
def test_bad_input_in_the_action_form_is_a_message(tmp_path, session, text, expected):
    at = page(tmp_path, "drill", "zh", session=session)
    at.selectbox(key="drill_kind:zh").set_value("suspend_device").run()
    next(t for t in at.text_input if t.label.startswith("设备编号")).set_value(text)
    next(b for b in at.button if b.label == "执行").click().run()
    assert not at.exception and at.error
    assert expected in at.error[0].value
    assert not session.actions()
    assert (session.folder / "day" / "run_meta.json").exists()


def test_the_card_look_up_shows_a_cards_taps_and_balances_so_far(tmp_path, session):
    import duckdb

    day = session.folder / "day" / "transactions"
    ((token,),) = duckdb.sql(
        f"""SELECT token_id FROM read_parquet('{day}/*/*.parquet', hive_partitioning = true)
            WHERE CAST(media AS VARCHAR) = 'physical_card' AND amount_fen > 0
              AND event_timestamp < TIMESTAMP '2024-03-05 08:00' AND service_date = '2024-03-05'
            ORDER BY transaction_id LIMIT 1"""
    ).fetchall()
    at = page(tmp_path, "drill", session=session)
    next(t for t in at.text_input if t.label.startswith("Card token")).set_value(str(token)).run()
    assert not at.exception, at.exception
    taps = next(d.value for d in at.dataframe if "Balance left" in d.value.columns)
    assert list(taps.columns) == ["Time", "Line", "Device", "Medium", "Charged", "Balance left"]
    # The line and the device by name, with the ids (a refund names the device by its id).
    lookup = session.card_taps(token)
    for line, device, row in zip(
        lookup["line"], lookup["device_id"], taps.itertuples(), strict=True
    ):
        assert row.Line.endswith(f" ({line})") and row.Line[0].isupper(), row.Line
        assert row.Device.endswith(f" ({device})") and row.Line[: -len(f" ({line})")] in row.Device
    assert len(taps) >= 1 and (taps["Time"] <= "08:10:00").all()
    assert "Physical card" in set(taps["Medium"])  # media in words, not qr_alipay
    # Money as yuan from fen (200 is ¥2.00). The export is masked (no balances); the desk
    # sees what each tap left on the card.
    yuan = re.compile(r"¥\d[\d,]*\.\d\d")
    assert all(yuan.fullmatch(v) for v in [*taps["Charged"], *taps["Balance left"]]), taps
    lookup = session.card_taps(token)
    assert list(taps["Charged"]) == [f"¥{f / 100:,.2f}" for f in lookup["amount_fen"]]
    at.session_state["lang"] = "zh"
    at.run()
    zh = next(d.value for d in at.dataframe if "卡内余额" in d.value.columns)
    assert "实体卡" in set(zh["介质"]) and all(v.endswith(" 元") for v in zh["扣款"])
    assert all(re.fullmatch(r".+路（\S+-B\d{3}）|地铁\d号线（M\d）", x) for x in zh["线路"]), zh
    at.session_state["lang"] = "en"
    at.run()
    bad = next(t for t in at.text_input if t.label.startswith("Card token"))
    bad.set_value("12ab").run()
    assert any("whole number" in e.value for e in at.error)
    # While the day is played again its balances are set aside: the taps, without them.
    desk = session.folder / "day" / "desk_balances.parquet"
    desk.rename(desk.with_suffix(".aside"))
    during = session.card_taps(token)
    assert len(during) == len(taps) and during["balance_after_fen"].isna().all()


def test_the_trainer_and_the_trainee_change_a_session_in_turns(session):
    import threading

    done = threading.Event()
    with session._changing():  # the trainer's injection, say, is replaying the day
        worker = threading.Thread(target=lambda: (session.set_speed(120), done.set()))
        worker.start()
        assert not done.wait(0.5)  # the trainee's change waits its turn
    worker.join(10)
    assert done.is_set() and session.state()["speed"] == 120.0


def test_refunds_ordered_at_the_desk_name_the_charges_its_look_up_shows(tmp_path, session):
    import datetime as dt

    from drills.monitor import RunView

    view = RunView(session.folder / "day", session.drill.day, session.cutoff_hour())
    try:
        cards = view.charged_twice(1201, dt.time(7, 30), dt.time(8, 5))
    finally:
        view.close()
    assert cards
    at = page(tmp_path, "drill", session=session)
    at.selectbox(key="drill_kind:en").set_value("refund_cards").run()
    tokens = next(t for t in at.text_input if t.label.startswith("Card tokens"))
    tokens.set_value(", ".join(map(str, cards)))
    button(at, "Do it").click().run()
    assert not at.exception, at.exception
    (acted,) = session.actions()
    assert acted.cards == cards and len(acted.records) >= len(cards)
    (refund,) = [i for i in session._acted([acted]) if i.kind == "desk_refund"]
    assert refund.transactions == acted.records


def test_switching_lines_to_offline_acceptance_names_a_wrong_line(tmp_path, session):
    at = page(tmp_path, "drill", session=session)
    at.selectbox(key="drill_kind:en").set_value("switch_offline").run()
    lines = next(t for t in at.text_input if t.label.startswith("Line ids"))
    lines.set_value("urban-B001, NOPE")
    button(at, "Do it").click().run()
    assert not at.exception and any("unknown line 'NOPE'" in e.value for e in at.error)
    assert not session.actions()  # nothing kept of an action that cannot be done
    next(t for t in at.text_input if t.label.startswith("Line ids")).set_value("urban-B001，M1")
    button(at, "Do it").click().run()
    assert not at.exception, at.exception
    (acted,) = session.actions()
    assert acted.kind == "switch_offline" and acted.lines == ["urban-B001", "M1"]
    offline = [i for i in session._acted([acted]) if i.kind == "offline_acceptance"]
    assert [i.target for i in offline] == ["urban-B001", "M1"]


def test_the_trainer_injects_an_incident_and_compares_debriefs(tmp_path, session):
    at = page(tmp_path, "trainer", session=session)
    table = at.dataframe[0].value
    assert list(table["Trainee"]) == ["Wang"]
    kind = next(s for s in at.selectbox if s.label == "Kind")
    kind.set_value("validator_outage").run()
    next(t for t in at.text_input if t.label.startswith("Target")).set_value("2319")
    button(at, "Inject").click().run()
    assert not at.exception, at.exception
    # What was injected, and where by name (the device's id beside it).
    assert any(
        s.value.startswith("Injected injected-1 (")
        and ": Haimen bus B037 reader (2319))" in s.value
        for s in at.success
    ), [s.value for s in at.success]
    assert [i.id for i in session.injected()] == ["injected-1"]
    # The trainer sees the session's incidents, the script's and the injected, by name (from
    # the next refresh on: the live part is drawn above the form).
    at.run()
    incidents = next(d.value for d in at.dataframe if "Source" in d.value.columns)
    assert list(incidents["Where"]) == [
        "Urban bus B134 reader (1201)",
        "Haimen bus B037 reader (2319)",
    ]
    assert list(incidents["Source"]) == ["drill script", "injected"]
    assert list(incidents["From"]) == ["07:30", session.injected()[0].start.strftime("%H:%M")]
    # A target the city does not have: a message, and the session is left as it was.
    next(t for t in at.text_input if t.label.startswith("Target")).set_value("99999999")
    button(at, "Inject").click().run()
    assert not at.exception and any("Cannot inject" in e.value for e in at.error)
    assert [i.id for i in session.injected()] == ["injected-1"]
    # Two trainees' debriefs of the same drill, side by side.
    session.act({"kind": "mark_faulty", "devices": [1201]})
    session.end(lang="en")
    other = DrillSession.start(DRILL, "Zhao", root=tmp_path / "drills" / "sessions")
    other.end(lang="en")
    at = page(tmp_path, "trainer")
    at.selectbox(key="trainer_compare:en").set_value(DRILL).run()
    compared = at.dataframe[-1].value
    assert set(compared["Trainee"]) == {"Wang", "Zhao"}
    best = compared.iloc[0]
    assert best["Trainee"] == "Wang" and best["Score"] > compared.iloc[1]["Score"]
    # What the actions moved against doing nothing: the reader repaired, fewer double charges
    # (in yuan, as the page shows money).
    assert best["Δ Duplicate charges"].startswith("¥-")
    assert compared.iloc[1]["Δ Duplicate charges"] == "¥0.00"


def _copy_session(session: DrillSession, name: str) -> Path:
    """Another session beside ``session``: its folder copied under a new id."""
    folder = session.folder.parent / name
    shutil.copytree(session.folder, folder)
    state = json.loads((folder / "session.json").read_text("utf-8"))
    (folder / "session.json").write_text(json.dumps({**state, "id": name}), "utf-8")
    return folder


def test_a_session_that_cannot_be_read_is_listed_with_its_problem(tmp_path, session):
    """A session's drill script edited into a bad state, or its session.json cut short: both
    pages list it with what is wrong, and every other session works as before."""
    drill_copy = tmp_path / "my_drill.yaml"
    drill_copy.write_text(
        DRILL.read_text("utf-8").replace(
            "../nantong_2024.yaml", str(ROOT / "scenarios" / "nantong_2024.yaml")
        ),
        "utf-8",
    )
    bad_drill = _copy_session(session, "duplicate_wave-baddrl")
    state = json.loads((bad_drill / "session.json").read_text("utf-8"))
    (bad_drill / "session.json").write_text(json.dumps({**state, "drill": str(drill_copy)}))
    assert DrillSession(bad_drill).problem() is None  # it plays until its drill is edited
    at = page(tmp_path, "drill", session=DrillSession(bad_drill))
    assert any(s.value == "A reader charging twice" for s in at.subheader)
    drill_copy.write_text("drill: [broken\n", "utf-8")  # the trainer edits the copy
    cut = _copy_session(session, "duplicate_wave-cutshort")
    text = (cut / "session.json").read_text("utf-8")
    (cut / "session.json").write_text(text[: len(text) // 2], "utf-8")
    at.run()  # the console of the session whose drill broke: a message, not a traceback
    assert not at.exception, at.exception
    # Broken between the page's check and its reading: what the console's caches are keyed
    # on is still said, the chain it cannot follow as unknown (the base: None).
    assert DrillSession(bad_drill)._played()[4] is None
    for view in ("drill", "trainer"):
        at = page(tmp_path, view)
        warnings = [w.value for w in at.warning]
        assert any(
            "duplicate_wave-baddrl" in w and "my_drill.yaml" in w and "malformed YAML" in w
            for w in warnings
        ), warnings
        assert any(
            "duplicate_wave-cutshort" in w and "session.json: cannot be read" in w for w in warnings
        ), warnings
    table = at.dataframe[0].value  # the trainer's: every session, the broken ones marked
    # the readable first, the last started first; one whose state cannot be read, last
    ids = ["duplicate_wave-baddrl", "duplicate_wave-cutshort"]
    assert list(table["Session"]) == [session.state()["id"], *ids]
    assert list(table["Status"])[1:] == ["unreadable", "unreadable"]
    watch = next(s for s in at.selectbox if s.label == "Watch a session")
    assert watch.options == [f"A reader charging twice · Wang ({session.state()['id']})"]
    at = page(tmp_path, "drill", session=session)  # the good one plays on
    assert any(s.value == "A reader charging twice" for s in at.subheader)


def test_every_debrief_measure_and_action_has_words_in_both_languages():
    from dashboard import i18n
    from dashboard.drill_sessions import delta_text
    from drills.actions import ACTION_KINDS
    from drills.report import MEASURES

    for m in MEASURES:
        assert i18n.has(f"trainer.measure.{m}"), m
    for kind in ACTION_KINDS:
        assert i18n.has(f"drill.kind.{kind}"), kind
    assert delta_text("duplicate_charges_fen", -1234.0, "en") == "¥-12.34"
    assert delta_text("duplicate_charges_fen", 150_000_000, "zh") == "+150万元"
    assert delta_text("duplicate_charges_fen", -1234.0, "zh") == "-12.34 元"
    assert delta_text("fen_hours_waiting_upload", 250_000, "en") == "+2,500"
    assert delta_text("refused_taps", -12_345, "zh") == "-1.23万"
    assert delta_text("outlet_mean_wait_min", 1.26, "en") == "+1.3"


def test_the_pages_name_things_in_chinese_and_an_outlet_closure_by_its_outlet(tmp_path, session):
    """The console in Chinese names the reader as staff say it; an outlet closure the trainer
    injects is named by the outlet's name (Chinese or English words), its id beside."""
    at = page(tmp_path, "drill", "zh", session=session)
    alerts = next(d.value for d in at.dataframe if "对象" in d.value.columns)
    assert list(alerts["对象"]) == ["市区B134路车载读卡器（1201）"]
    made = session.inject({"kind": "outlet_closure", "target": "3", "duration_min": 120})
    at = page(tmp_path, "trainer", "zh", session=session)
    incidents = next(d.value for d in at.dataframe if "来源" in d.value.columns)
    assert list(incidents["对象"]) == ["市区B134路车载读卡器（1201）", "政务中心（3）"]
    assert list(incidents["故障"]) == ["读卡器重复扣款", "网点关闭"]
    at = page(tmp_path, "trainer", "en", session=session)
    incidents = next(d.value for d in at.dataframe if "Source" in d.value.columns)
    assert incidents["Where"].iloc[1] == "Government Service Centre (3)"
    # The trainee extends the outlet's hours: the action names the outlet too.
    session.act({"kind": "extend_outlet_hours", "target": "3", "until": "19:00"})
    session.act({"kind": "identify", "target": "NT_EXCHANGE"})
    at = page(tmp_path, "trainer", "en", session=session)
    acted = next(d.value for d in at.dataframe if "What it named" in d.value.columns)
    assert list(acted["What it named"]) == [
        "outlet Government Service Centre (3) open until 19:00",
        "Nantong City Data Exchange Centre (NT_EXCHANGE)",
    ]
    assert made.id == "injected-1"


def test_unchanged_session_files_are_not_parsed_again_and_changes_are_seen_at_once(session):
    """A refresh reads every session (drills/session.py PARSED): an unchanged file is taken
    from what was parsed; a file another process rewrites is read at the next refresh, even
    when its size stays the same; a file broken meanwhile is a message naming it, and seen
    again once mended."""
    from drills.session import PARSED

    def refresh(s: DrillSession) -> None:
        assert s.problem() is None
        s.state(), s.drill, s.actions(), s.injected(), s.debrief(), s.clock()

    other = DrillSession(session.folder)  # another browser's view of the same folder
    refresh(session)
    before = PARSED.parses
    for _ in range(5):
        refresh(session)
        refresh(other)
    assert PARSED.parses == before  # nothing parsed again
    # The state a caller changes is its own copy.
    mine = session.state()
    mine["trainee"] = "changed here only"
    assert session.state()["trainee"] == "Wang"
    # Another process rewrites session.json in place, to the same size.
    path = session.folder / "session.json"
    text = path.read_text("utf-8")
    assert '"trainee": "Wang"' in text
    path.write_text(text.replace('"trainee": "Wang"', '"trainee": "Zhou"'), "utf-8")
    assert other.state()["trainee"] == "Zhou"
    # The trainee acts in another browser: the trainer's view sees it at once.
    session.act({"kind": "identify", "target": "NT_EXCHANGE"})
    assert [a.target for a in other.actions()] == ["NT_EXCHANGE"]
    # actions.yaml broken by hand: a message naming the file and what is wrong ...
    actions = session.folder / "actions.yaml"
    good = actions.read_text("utf-8")
    actions.write_text("- {kind: identify, target: NT_EXCHANGE, at: 25:99}\n", "utf-8")
    problem = other.problem()
    assert problem is not None and str(actions) in problem, problem
    assert "at Input should be in a valid time format" in problem and "25:99" in problem, problem
    # ... and, mended, the session reads again.
    actions.write_text(good, "utf-8")
    assert other.problem() is None and len(other.actions()) == 1


def test_a_drill_script_is_read_again_when_a_file_it_extends_changes(tmp_path):
    """A drill script may ``extends:`` another, which may extend a third: the pages' cached
    parse (drills/session.py PARSED) watches every file of the chain. Editing a file the
    script extends (in place, to the same size: only its change time tells) shows the new
    content at the next refresh, on the trainer's page and through ``read_drill``; a refresh
    with nothing changed parses nothing; pointing ``extends:`` at another file is seen too."""
    from drills.session import PARSED, chain_files, read_drill

    root = tmp_path / "root.yaml"  # the shipped drill, its base scenario named absolutely
    base = str(DRILL.parent.parent / "nantong_2024.yaml")
    root.write_text(DRILL.read_text("utf-8").replace("../nantong_2024.yaml", base), "utf-8")
    middle = tmp_path / "middle.yaml"
    middle.write_text(
        "extends: root.yaml\ndrill:\n  title: {en: Middle title one, zh: 中间标题一}\n", "utf-8"
    )
    script = tmp_path / "script.yaml"
    script.write_text("extends: middle.yaml\ndrill:\n  difficulty: 3\n", "utf-8")
    assert [p.name for p in chain_files(script)] == ["script.yaml", "middle.yaml", "root.yaml"]
    session = DrillSession.start(script, "Li", root=tmp_path / "drills" / "sessions")
    session.pause()

    def shown(at) -> list[str]:
        assert not at.exception, at.exception
        return list(next(d.value for d in at.dataframe if "Trainee" in d.value.columns)["Drill"])

    at = page(tmp_path, "trainer", "en")
    assert shown(at) == ["Middle title one"]
    before = PARSED.parses
    at.run()  # a refresh with nothing changed: everything from the cache
    assert shown(at) == ["Middle title one"] and PARSED.parses == before
    # The file the script extends, edited in place to the same size; the script untouched.
    size, stat = middle.stat().st_size, script.stat()
    middle.write_text(middle.read_text("utf-8").replace("one", "two"), "utf-8")
    assert middle.stat().st_size == size and script.stat().st_mtime_ns == stat.st_mtime_ns
    at.run()
    assert shown(at) == ["Middle title two"]
    drill = read_drill(script)
    assert drill.title("en") == "Middle title two" and drill.difficulty == 3
    # The root of the chain, two files away, edited: its brief is seen through both overlays.
    root.write_text(root.read_text("utf-8").replace("Tuesday morning.", "Wednesday dawn."), "utf-8")
    assert read_drill(script).brief("en").startswith("Wednesday dawn.")
    assert session.drill.brief("en").startswith("Wednesday dawn.")
    # The script now extends the root straight: the middle's title is gone at once.
    script.write_text("extends: root.yaml\ndrill:\n  difficulty: 3\n", "utf-8")
    at.run()
    assert shown(at) == ["A reader charging twice"]
    parses = PARSED.parses
    middle.write_text(middle.read_text("utf-8").replace("two", "six"), "utf-8")  # not read now
    at.run()
    assert shown(at) == ["A reader charging twice"] and PARSED.parses == parses


def test_the_pages_see_an_edit_of_the_drills_base_scenario_and_of_what_it_extends(tmp_path):
    """The drill's base scenario may ``extends:`` another scenario, which may extend a third:
    what the pages keep of the base (its scenario, its world and the names they give its
    devices: drills/runner.py ``base_scenario``, ``naming_world``, ``drill_world``; the
    console's alerts, ``DrillSession._played``) is kept under every file of that chain. Here
    the base's buses are edited while the trainer's page is open (vehicles a line, so the
    faulty reader 1201 is on another line): an edit of the file the base extends (in place, to
    the same size: only its change time tells) and then of the base itself show at the next
    refresh, in both languages; the next action plays the day on the edited base; a base
    edited into a bad state is a message naming it, and, mended, shows again."""
    from dashboard.drill_names import drill_names
    from drills.session import chain_files

    nantong = ROOT / "scenarios" / "nantong_2024.yaml"
    middle = tmp_path / "middle.yaml"  # Nantong's nine buses a line, said again
    middle.write_text(
        f"extends: {nantong}\nregions:\n  urban: {{bus: {{vehicles_per_line: 9}}}}\n", "utf-8"
    )
    base = tmp_path / "base.yaml"
    base.write_text("extends: middle.yaml\n", "utf-8")
    script = tmp_path / "script.yaml"
    script.write_text(DRILL.read_text("utf-8").replace("../nantong_2024.yaml", str(base)), "utf-8")
    assert [p.name for p in chain_files(base)] == ["base.yaml", "middle.yaml", nantong.name]
    session = DrillSession.start(
        script, "Qian", root=tmp_path / "drills" / "sessions", now=time.time() - 95
    )
    session.pause()  # at about 08:09, while the reader charges twice

    def where(at) -> list[str]:
        assert not at.exception, at.exception
        column = i18n.t("trainer.incident_col.target", at.session_state["lang"])
        return list(next(d.value for d in at.dataframe if column in d.value.columns)[column])

    at = page(tmp_path, "trainer", "en")
    at.selectbox(key="trainer_watch").set_value(str(session.folder)).run()
    # Urban bus devices come first, nine a line: device 1201 is on the 134th line.
    assert where(at) == ["Urban bus B134 reader (1201)"]
    played = session._played()
    assert [Path(s[0]).name for s in played[4]] == ["base.yaml", "middle.yaml", nantong.name]
    # The file the base extends, edited in place to the same size (eight buses a line); the
    # drill script and the base untouched.
    size, stat = middle.stat().st_size, base.stat()
    middle.write_text(middle.read_text("utf-8").replace(": 9}", ": 8}"), "utf-8")
    assert middle.stat().st_size == size and base.stat().st_mtime_ns == stat.st_mtime_ns
    at.run()
    assert where(at) == ["Urban bus B151 reader (1201)"]  # 1201 // 8 + 1
    zh = page(tmp_path, "trainer", "zh")
    zh.selectbox(key="trainer_watch").set_value(str(session.folder)).run()
    assert where(zh) == ["市区B151路车载读卡器（1201）"]
    edited = session._played()
    assert edited[:4] == played[:4] and edited[4] != played[4]  # only the base's chain moved
    # The base itself: ten buses a line.
    base.write_text("extends: middle.yaml\nregions:\n  urban: {bus: {vehicles_per_line: 10}}\n")
    at.run()
    assert where(at) == ["Urban bus B121 reader (1201)"]
    zh.run()
    assert where(zh) == ["市区B121路车载读卡器（1201）"]
    # The next action that changes the day plays it on the edited base: the reader's taps
    # are on the line the pages now name.
    session.act({"kind": "mark_faulty", "devices": [1201]})
    import duckdb

    day = session.folder / "day" / "transactions"
    lines = duckdb.sql(
        f"""SELECT DISTINCT CAST(route_id AS VARCHAR) FROM read_parquet('{day}/*/*.parquet',
            hive_partitioning = true) WHERE device_id = 1201"""
    ).fetchall()
    assert lines == [("urban-B121",)]
    # The base edited into a bad state: a message naming it and the field, on the page too.
    base.write_text(base.read_text("utf-8").replace("vehicles_per_line", "vehicles_per_lin"))
    problem = session.problem()
    assert problem is not None and str(base) in problem and "vehicles_per_lin" in problem, problem
    at.run()
    assert not at.exception, at.exception
    shown = [m.value for m in [*at.warning, *at.error]]
    assert any("vehicles_per_lin" in m and str(base) in m for m in shown), shown
    assert drill_names(session, "en").label("device", "1201") == "device 1201"
    # Mended: the session shows again, named from the mended base.
    base.write_text(base.read_text("utf-8").replace("vehicles_per_lin:", "vehicles_per_line:"))
    assert session.problem() is None
    at.run()
    assert where(at) == ["Urban bus B121 reader (1201)"]


def test_a_drill_whose_scenario_stops_loading_is_a_message_on_both_pages(tmp_path, session):
    """A running session's drill script edited so that it still parses but its base scenario
    no longer loads with its ``overrides:`` (a mistyped key): the console and the trainer's
    view watching it say so, with the engine's message, in the page's language, instead of a
    traceback from naming its devices; the names degrade to ids if asked anyway; mended, the
    session shows again."""
    from dashboard.drill_names import drill_names

    drill_copy = tmp_path / "my_drill.yaml"
    good = DRILL.read_text("utf-8").replace(
        "../nantong_2024.yaml", str(ROOT / "scenarios" / "nantong_2024.yaml")
    )
    drill_copy.write_text(good, "utf-8")
    folder = _copy_session(session, "duplicate_wave-edited")
    state = json.loads((folder / "session.json").read_text("utf-8"))
    (folder / "session.json").write_text(json.dumps({**state, "drill": str(drill_copy)}))
    edited = DrillSession(folder)
    assert edited.problem() is None
    console = page(tmp_path, "drill", session=edited)
    trainer = page(tmp_path, "trainer")
    trainer.selectbox(key="trainer_watch").set_value(str(folder)).run()
    assert not trainer.exception, trainer.exception
    watched = next(d.value for d in trainer.dataframe if "Source" in d.value.columns)
    assert list(watched["Where"]) == ["Urban bus B134 reader (1201)"]
    # The trainer adds an override to the script, mistyped, while both pages watch it.
    typo = good.replace(
        "  day: 2024-03-05\n", "  day: 2024-03-05\n  overrides: [clearing.batch_cutof_hour=3]\n"
    )
    assert typo != good
    drill_copy.write_text(typo, "utf-8")
    problem = edited.problem()
    assert problem is not None and str(drill_copy) in problem, problem
    assert "batch_cutof_hour" in problem and "did you mean 'batch_cutoff_hour'" in problem
    for at in (console, trainer):
        at.run()
        assert not at.exception, at.exception
        shown = [m.value for m in [*at.warning, *at.error]]
        assert any(
            m.startswith("The drill session duplicate_wave-edited cannot be read")
            and "batch_cutof_hour" in m
            for m in shown
        ), shown
    zh = [w.value for w in page(tmp_path, "trainer", "zh").warning]
    said = "演练场次 duplicate_wave-edited 无法读取"
    assert any(w.startswith(said) and "batch_cutof_hour" in w for w in zh), zh
    # Asked for names all the same (edited between the check and the names): ids, no name.
    assert drill_names(edited, "en").label("device", "1201") == "device 1201"
    # Mended: the session reads, and is named, again.
    drill_copy.write_text(good, "utf-8")
    assert edited.problem() is None
    assert drill_names(edited, "en").label("device", "1201") == "Urban bus B134 reader (1201)"


def test_the_consoles_alert_cache_watches_every_file_the_drill_extends(tmp_path):
    """The console's alerts and series are cached on what they depend on
    (``DrillSession._played``): the played day and the drill script with its whole
    ``extends:`` chain, each by inode, modification and change times and size. A rewrite of
    the extended file that keeps its size and modification time (its alert rules may be
    there) changes the key; nothing changed, the key stays."""
    import os

    base = tmp_path / "base.yaml"
    scenario = str(DRILL.parent.parent / "nantong_2024.yaml")
    base.write_text(DRILL.read_text("utf-8").replace("../nantong_2024.yaml", scenario), "utf-8")
    script = tmp_path / "script.yaml"
    script.write_text("extends: base.yaml\ndrill:\n  difficulty: 3\n", "utf-8")
    session = DrillSession.start(script, "Sun", root=tmp_path / "drills" / "sessions")
    session.pause()
    before = session._played()
    assert session._played() == before  # nothing changed: the cached alerts serve
    assert [Path(s[0]).name for s in before[3]] == ["script.yaml", "base.yaml"]
    alerts = session.alerts_so_far()
    stat = base.stat()
    time.sleep(0.05)  # file times come from a coarse clock: let it move on
    base.write_bytes(base.read_bytes())  # the same bytes, rewritten in place
    os.utime(base, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert base.stat().st_mtime_ns == stat.st_mtime_ns and base.stat().st_size == stat.st_size
    after = session._played()
    assert after[:3] == before[:3] and after[3][0] == before[3][0]  # day and script as they were
    assert after[3][1] != before[3][1]  # the extended file: seen by its change time
    from drills.session import _day_alerts

    misses = _day_alerts.cache_info().misses
    assert session.alerts_so_far() == alerts  # the same rules: the same alerts, read again
    assert _day_alerts.cache_info().misses == misses + 1  # computed again, not the cached ones
    session.alerts_so_far()
    assert _day_alerts.cache_info().misses == misses + 1  # nothing changed since: cached


def test_a_rewrite_that_sets_the_modification_time_back_is_read_again(tmp_path):
    """A file rewritten to the same size and given its old modification time back (``touch
    -r``, ``rsync -t``, ``os.utime``) is parsed again: its change time, which no tool sets,
    tells (drills/session.py ``ParsedFiles``)."""
    import os

    from drills.session import ParsedFiles

    def parse(path: Path) -> dict:
        return json.loads(path.read_text("utf-8"))

    parsed = ParsedFiles()
    path = tmp_path / "session.json"
    path.write_text('{"trainee": "Wang"}', "utf-8")
    assert parsed.get(path, parse) == {"trainee": "Wang"}
    before = path.stat()
    time.sleep(0.05)  # file times come from a coarse clock: let it move on
    path.write_text('{"trainee": "Zhou"}', "utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    same = ("st_ino", "st_mtime_ns", "st_size")
    assert [getattr(after, k) for k in same] == [getattr(before, k) for k in same]
    assert after.st_ctime_ns != before.st_ctime_ns
    assert parsed.get(path, parse) == {"trainee": "Zhou"} and parsed.parses == 2
    assert parsed.get(path, parse) == {"trainee": "Zhou"} and parsed.parses == 2  # kept


def test_a_number_a_trainee_types_is_named_as_everything_with_that_id(tmp_path, session):
    """Outlet 3 and device 3 share the id: an ``identify`` of "3" names both, on the trainer's
    page and in the debrief on the console, rather than whichever a lookup order finds first;
    an id only one thing has is named as that thing, words nothing has as typed."""
    from dashboard.drill_names import drill_names
    from drills.report import debrief_html

    for lang, sep in (("en", " or "), ("zh", "或")):
        names = drill_names(session, lang)
        outlet, device = names.label("outlet", "3"), names.label("device", "3")
        assert outlet != device and outlet.startswith(("Government", "政务"))
        assert names.named("3") == f"{outlet}{sep}{device}"
        assert names.named("NT_EXCHANGE") == names.label("node", "NT_EXCHANGE")
        assert names.named("1201") == names.label("device", "1201")
        assert names.named("no such thing") == "no such thing"
    session.act({"kind": "identify", "target": "3"})
    at = page(tmp_path, "trainer", "en", session=session)
    acted = next(d.value for d in at.dataframe if "What it named" in d.value.columns)
    assert list(acted["What it named"]) == [
        "Government Service Centre (3) or Urban bus B001 reader (3)"
    ]
    # The debrief on the page words the action, and a refund's device, as the table does.
    session.act({"kind": "refund_cards", "duplicates_on": {"device": 1201, "since": "07:30"}})
    debrief = session.end(lang="en")
    shown = debrief_html(debrief, "en", drill_names(session, "en"))
    assert "action identify target Government Service Centre (3) or Urban bus B001" in shown
    assert "duplicates_on device Urban bus B134 reader (1201), since 07:30" in shown
    assert "target 3" in debrief_html(debrief, "en")  # without names: as typed


def test_every_incident_kind_has_words_on_the_drill_pages_in_both_languages():
    """The trainer's incident table and the console's causes word every kind the engine has
    (the actions' incidents too: an outlet's hours extended, free rides ...), never its
    code."""
    from dashboard import i18n
    from sim.incidents import KINDS

    for kind in KINDS:
        assert i18n.has(f"drill.cause.{kind}"), kind
        zh, en = i18n.t(f"drill.cause.{kind}", "zh"), i18n.t(f"drill.cause.{kind}", "en")
        assert CJK.search(zh) and "_" not in en and en[0].isupper(), (kind, zh, en)
