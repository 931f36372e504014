"""A live drill: one trainee playing a drill on the wall clock, shared through a folder.

The trainee's console and the trainer's view (dashboard/views/) are separate browser sessions,
so a session lives in a folder (``runs/drills/sessions/<id>/``):

- ``session.json``: the drill, the trainee's name, the clock (speed, where it started, paused
  or not) and the incidents the trainer injected;
- ``actions.yaml``: the trainee's actions so far (the scripted trainee's format,
  drills/actions.py), each stamped with the simulated time it was made;
- ``day/``: the day as played so far — the drill's incidents, the injected ones and the actions
  (re-simulated when an action or an injection changes the day: the same random numbers, so
  the day before the change is what the trainee already saw);
- ``debrief.json``, ``debrief.html`` once the trainee ends the drill;
- ``session.lock``: held while the session changes (an action, an injection, the clock, the
  end), so the trainer and the trainee, acting at the same moment, take turns.

The clock: simulated minutes of the drill's day = where it started + wall seconds x speed / 60
(60x by default: a day in 24 minutes); pausing keeps the minute, a faster speed re-anchors.
Monitoring (drills/monitor.py) is shown up to the clock's minute: the day is computed ahead, the
console reveals it as the clock passes, as an operations centre's screens would.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import datetime as dt
import fcntl
import functools
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import yaml

from drills.actions import Action, Trainee, with_actions
from drills.desk import FILE as DESK_FILE
from drills.monitor import BUCKET_MIN, RunView, raise_alerts, with_usual_keys
from drills.script import Drill, load_drill
from sim.incidents import Incident
from sim.reference import extends_chain
from sim.yaml_config import ConfigError

SESSIONS = Path("runs/drills/sessions")
DEFAULT_SPEED = 60.0
#: What ``session.json`` must hold, and of what kind, for the pages to show a session.
STATE_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "drill": str,
    "trainee": str,
    "speed": (int, float),
    "anchor_wall": (int, float),
    "anchor_minute": (int, float),
    "paused": bool,
    "ended": bool,
    "injected": list,
}
#: What reading a session's files can raise when one is damaged, edited or gone (a drill
#: script a trainer is still writing, a session.json cut short by a full disk, ...).
UNREADABLE = (OSError, ValueError, KeyError, TypeError, yaml.YAMLError, ConfigError)

T = TypeVar("T")


class ParsedFiles:
    """What reading and parsing a file gave, kept while every file the parse read stays as it
    was.

    The pages refresh every two seconds and list every session, so without this each refresh
    parses every session's ``session.json``, ``actions.yaml`` and drill script (YAML and
    pydantic: most of a refresh's time). A parse may read more than the file it is given (a
    drill script's ``extends:`` chain: ``read_drill``), so an entry keeps, for each file the
    parse read, its path, inode, modification and change times (ns) and size (``signature``),
    taken before and after the parse, and is used only while all of them are unchanged: a file
    another browser session or process replaced (``_save`` and ``_write_actions`` replace: a
    new inode) or rewrote, even to the same size with its modification time set back, including
    a base the file extends, is parsed again at the next read; a parse during which
    one of its files changed, or whose files were not the same before and after it (an
    ``extends:`` edited meanwhile), is not kept. What fails to parse is not kept either, so a
    broken file is reported (``problem``) and, once fixed, read at once. The values are
    shared: callers must not change them."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._items: collections.OrderedDict[tuple, tuple[tuple, object]] = (
            collections.OrderedDict()
        )
        self._maxsize = maxsize
        self._lock = threading.Lock()  # Streamlit serves each browser session in a thread
        self.parses = 0  # how many reads were parsed (the rest came from here): for tests

    def get(
        self,
        path: Path,
        parse: Callable[[Path], T],
        reads: Callable[[Path], Sequence[Path]] | None = None,
    ) -> T:
        """``parse(path)``, or what it gave while the files it read are as they are now.

        ``reads(path)``: every file ``parse(path)`` reads, ``path`` first (default: ``path``
        alone). Where it raises (a file it cannot follow), the parse runs, and reports the
        problem as a read would, but is not kept."""
        key = (str(path), parse)
        signature(path)  # OSError (the file is gone) as a read would
        with self._lock:
            entry = self._items.get(key)
        if entry is not None:
            signatures, value = entry
            if _signatures([Path(s[0]) for s in signatures]) == signatures:
                with self._lock:
                    if key in self._items:
                        self._items.move_to_end(key)
                return value  # type: ignore[return-value]
        files = _files_read(path, reads)
        before = _signatures(files) if files is not None else None
        value = parse(path)
        self.parses += 1
        # Kept only if every file read was the same before and after, and the files it reads
        # are still those (an extends: edited before the first signature is seen here): a
        # parse that may have seen a file mid-change is not trusted.
        unchanged = before is not None and _signatures(files) == before
        if unchanged and _files_read(path, reads) == files:
            with self._lock:
                self._items[key] = (before, value)
                self._items.move_to_end(key)
                while len(self._items) > self._maxsize:
                    self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every file (a benchmark's cold start)."""
        with self._lock:
            self._items.clear()


def signature(path: str | Path) -> tuple[str, int, int, int, int, int]:
    """What tells a file was replaced or rewritten: its path, device, inode, modification and
    change times (ns) and size. The change time is the one a writer cannot set back (``touch
    -d``, ``os.utime`` and tools that keep a file's times set its modification time only), so
    a rewrite that keeps the size and the modification time is still seen. OSError where the
    file is gone."""
    st = os.stat(path)
    return (str(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _signatures(files: Sequence[Path]) -> tuple | None:
    """Every file's signature; None where one is gone (nothing to compare with)."""
    try:
        return tuple(signature(f) for f in files)
    except OSError:
        return None


def _files_read(path: Path, reads: Callable[[Path], Sequence[Path]] | None) -> list[Path] | None:
    """``reads(path)`` as a list (``[path]`` without it); None if it cannot be followed."""
    if reads is None:
        return [path]
    try:
        return [Path(f) for f in reads(path)]
    except Exception:  # noqa: BLE001 - the parse itself reports what is wrong; not kept
        return None


def chain_files(path: Path) -> list[Path]:
    """The files a parse of a YAML file that may ``extends:`` another reads (a drill script,
    a scenario): the file and, in order, every file of its ``extends:`` chain (followed as the
    loader follows it, ``sim.reference.extends_chain``). A chain the loader would refuse (a
    missing base, malformed YAML) raises, as the parse would."""
    return [file for file, _ in extends_chain(path)]


#: The parsed session files of this process (every browser session's pages share it).
PARSED = ParsedFiles()


def chain_signatures(path: str | Path) -> tuple | None:
    """The signature (``signature``) of every file of ``path``'s ``extends:`` chain, ``path``
    first: what a cache of anything made from the file (a drill script's alerts, a drill's
    base scenario and its world and names) is keyed on, so that an edit of any file of the
    chain, in place or by replacing it, gives a new key. None where the chain cannot be
    followed (a file gone or malformed): nothing to key on; the loader, run instead, says
    what is wrong.

    The chain itself is kept in ``PARSED`` (followed again only when one of its files
    changes): the pages ask every two seconds for every session, and a refresh then stats the
    files instead of parsing a scenario's YAML."""
    try:
        files = PARSED.get(Path(path), chain_files, chain_files)
    except UNREADABLE:
        return None
    return _signatures(files)


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _read_actions(path: Path) -> tuple[Action, ...]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return tuple(Action.model_validate(a) for a in raw)


def _read_injected(path: Path) -> tuple[Incident, ...]:
    return tuple(Incident.model_validate(i) for i in _read_json(path)["injected"])


def read_drill(path: str | Path) -> Drill:
    """``load_drill(path)``, parsed again only when the drill script or a file of its
    ``extends:`` chain changes (``PARSED``, ``chain_files``). Shared: change a copy
    (``model_copy``)."""
    return PARSED.get(Path(path), load_drill, chain_files)


def _one_change_at_a_time(method):
    """``method`` of a DrillSession, run while it holds the session's lock (module
    docstring): the trainer's view and the trainee's console change it in turns."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._changing():
            return method(self, *args, **kwargs)

    return locked


class DrillSession:
    """A drill being played (module docstring). Every method reads the folder afresh, so the
    trainer's view and the trainee's console see each other's changes."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / "session.json").exists():
            raise FileNotFoundError(f"{self.folder}: not a drill session (no session.json)")

    # ----------------------------------------------------------------- making one
    @classmethod
    def start(
        cls,
        drill_path: Path,
        trainee: str,
        root: Path = SESSIONS,
        speed: float = DEFAULT_SPEED,
        now: float | None = None,
    ) -> DrillSession:
        """A new session of the drill at ``drill_path`` for ``trainee``, its day played with
        nothing done yet, its clock running from an hour before the first incident."""
        drill = load_drill(drill_path)
        session_id = f"{drill.id}-{secrets.token_hex(3)}"
        folder = Path(root) / session_id
        folder.mkdir(parents=True)
        first = min(inc.start for inc in drill.incidents)
        start = max(0, (first.hour * 60 + first.minute) - 60) if first.date() == drill.day else 0
        state = {
            "id": session_id,
            "drill": str(Path(drill_path).resolve()),
            "trainee": trainee,
            "speed": float(speed),
            "started_wall": time.time() if now is None else now,
            "anchor_wall": time.time() if now is None else now,
            "anchor_minute": float(start),
            "paused": False,
            "injected": [],
            "ended": False,
        }
        (folder / "session.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        (folder / "actions.yaml").write_text("[]\n", encoding="utf-8")
        session = cls(folder)
        try:
            session.replay()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no half-made session to pick later
            raise
        return session

    # ----------------------------------------------------------------- state
    def state(self) -> dict:
        """``session.json``: the drill, the trainee, the clock, the injections (a copy: the
        clock's methods change it and save it)."""
        return copy.deepcopy(PARSED.get(self.folder / "session.json", _read_json))

    def problem(self) -> str | None:
        """What stops this session from being shown, naming the file and why (None: it reads).

        Every page lists all sessions; one whose ``session.json``, drill script, actions or
        injections cannot be read must be listed with this message, not break the page for
        everyone (each method here reads the files afresh and would raise)."""
        path = self.folder / "session.json"
        try:
            state = self.state()
        except UNREADABLE as exc:
            return f"{path}: cannot be read ({_one_line(exc)})"
        if not isinstance(state, dict):
            return f"{path}: expected a JSON object"
        for key, kind in STATE_KEYS.items():
            if key not in state:
                return f"{path}: {key}: missing"
            value = state[key]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                return f"{path}: {key}: got {value!r:.60}"
        try:
            drill = self.drill
        except UNREADABLE as exc:
            return f"{state['drill']}: the session's drill cannot be read ({_one_line(exc)})"
        # The pages name the drill's lines, devices and outlets from its base scenario with its
        # overrides (dashboard/drill_names.py), so a script that parses but whose base or
        # overrides no longer load (edited while the session runs) cannot be shown either.
        from drills.runner import scenario_problem

        scenario = scenario_problem(drill)
        if scenario is not None:
            return (
                f"{state['drill']}: the drill's base scenario does not load with its "
                f"overrides ({scenario})"
            )
        reads = (
            ("actions.yaml", self.actions),
            ("session.json", self.injected),
            ("debrief.json", self.debrief),
        )
        for name, read in reads:
            try:
                read()
            except UNREADABLE as exc:
                return f"{self.folder / name}: cannot be read ({_one_line(exc)})"
        return None

    @contextlib.contextmanager
    def _changing(self):
        """Hold the session's lock (an exclusive ``flock``: other browser sessions and
        processes wait) while it changes."""
        with open(self.folder / "session.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self, state: dict) -> None:
        tmp = self.folder / "session.json.tmp"
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(self.folder / "session.json")

    @property
    def drill(self) -> Drill:
        """The drill script the session plays (``read_drill``: shared, not to be changed)."""
        return read_drill(self.state()["drill"])

    def actions(self) -> list[Action]:
        """The trainee's actions so far (``actions.yaml``), in the order they were taken."""
        return list(PARSED.get(self.folder / "actions.yaml", _read_actions))

    def trainee(self) -> Trainee:
        return Trainee(name=self.state()["trainee"], actions=self.actions())

    def injected(self) -> list[Incident]:
        """The incidents the trainer injected (kept in ``session.json``)."""
        return list(PARSED.get(self.folder / "session.json", _read_injected))

    def incidents(self) -> list[Incident]:
        """The drill's incidents and the trainer's injections."""
        return [*self.drill.incidents, *self.injected()]

    # ----------------------------------------------------------------- the clock
    def minute(self, now: float | None = None) -> float:
        """The simulated minute of the drill's day now (0 .. 1440)."""
        s = self.state()
        if s["paused"] or s["ended"]:
            return min(1440.0, s["anchor_minute"])
        wall = (time.time() if now is None else now) - s["anchor_wall"]
        return min(1440.0, s["anchor_minute"] + wall * s["speed"] / 60.0)

    def clock(self) -> str:
        m = int(self.minute())
        return f"{m // 60:02d}:{m % 60:02d}"

    @_one_change_at_a_time
    def pause(self, now: float | None = None) -> None:
        s = self.state()
        if not s["paused"]:
            s["anchor_minute"], s["paused"] = self.minute(now), True
            self._save(s)

    @_one_change_at_a_time
    def resume(self, now: float | None = None) -> None:
        s = self.state()
        if s["paused"]:
            s["anchor_wall"], s["paused"] = time.time() if now is None else now, False
            self._save(s)

    @_one_change_at_a_time
    def set_speed(self, speed: float, now: float | None = None) -> None:
        s = self.state()
        s["anchor_minute"] = self.minute(now)
        s["anchor_wall"] = time.time() if now is None else now
        s["speed"] = float(speed)
        self._save(s)

    # ----------------------------------------------------------------- what changes the day
    @_one_change_at_a_time
    def act(self, action: dict, now: float | None = None) -> Action:
        """Record the trainee's action at the clock's minute; replay the day if it changes it.
        ``action`` is an action without ``at`` (drills/actions.py); ValueError if invalid."""
        stamped = Action.model_validate({**action, "at": _clock_time(self.minute(now))})
        if stamped.kind == "refund_cards":  # what the desk's look-up shows now is refunded
            from drills.runner import resolve_refund

            view = RunView(self.folder / "day", self.drill.day, self.cutoff_hour())
            try:
                stamped = resolve_refund(stamped, view)
            finally:
                view.close()
        from drills.runner import drill_day

        kept = self.actions()
        actions = [*kept, stamped]
        before = self._acted(kept)
        after = self._acted(actions)  # ValueError (e.g. an unknown line) before it is kept
        if after != before:
            drill_day(self.drill, after)  # DrillError (a device the world lacks) likewise
        self._write_actions(actions)
        if after != before:
            try:
                self.replay()
            except BaseException:
                self._write_actions(kept)  # the day as it was: the action is not taken
                raise
        return stamped

    def _write_actions(self, actions: list[Action]) -> None:
        tmp = self.folder / "actions.yaml.tmp"
        tmp.write_text(
            yaml.safe_dump([a.model_dump(mode="json") for a in actions], allow_unicode=True),
            encoding="utf-8",
        )
        tmp.replace(self.folder / "actions.yaml")  # whole, for the trainer reading it

    @_one_change_at_a_time
    def inject(self, incident: dict, now: float | None = None) -> Incident:
        """The trainer adds an incident starting at the clock's minute; the day is replayed."""
        start = dt.datetime.combine(self.drill.day, _clock_time(self.minute(now)))
        s = self.state()
        made = Incident.model_validate(
            {"id": f"injected-{len(s['injected']) + 1}", **incident, "start": start}
        )
        from drills.runner import drill_day

        drill_day(self.drill, [*self._acted(self.actions()), made])  # DrillError: not kept
        s["injected"].append(made.model_dump(mode="json"))
        self._save(s)
        try:
            self.replay()
        except BaseException:
            s["injected"].pop()  # the day as it was (a failed run leaves it whole)
            self._save(s)
            raise
        return made

    def _acted(self, actions: list[Action]) -> list[Incident]:
        from drills.runner import drill_network

        return with_actions(
            self.incidents(), actions, self.drill.day, self.drill.repair_min, drill_network(self)
        )

    def replay(self) -> None:
        """Simulate the day as it now stands (incidents, injections, actions)."""
        from drills.runner import play_day

        scenario = play_day(self.drill, self._acted(self.actions()), self.folder / "day")
        state = self.state()
        state["cutoff_hour"] = scenario.clearing.batch_cutoff_hour
        self._save(state)

    # ----------------------------------------------------------------- what the console shows
    def cutoff_hour(self) -> int:
        return int(self.state().get("cutoff_hour", 2))

    def _played(self) -> tuple[str, tuple, str, tuple, tuple | None]:
        """What the day's monitoring depends on: the played day (its ``run_meta.json``, written
        last, as it is now), the drill script with every file of its ``extends:`` chain (the
        alert rules may come from any of them) and the drill's base scenario with every file of
        its own chain (the day is played on it), each by ``signature``, so that a rewrite that
        keeps a file's size and modification time is seen too. The console asks every two
        seconds; the answers are cached on these (``_day_alerts``, ``_day_series``), so none
        outlives a change of what made it.

        A base edited while the session runs is played at the next action or injection, as an
        edited script's incidents are (the trainee's day so far is not played again under
        them); the pages name its lines and devices from it at once
        (``drills.runner.naming_world``)."""
        day = self.folder / "day"
        drill = Path(self.state()["drill"])
        # A chain that cannot be followed: the script alone (the parse says what is wrong).
        script = chain_signatures(drill) or (signature(drill),)
        try:
            base = chain_signatures(self.drill.base)
        except UNREADABLE:  # the script itself broken: no base to watch until it is mended
            base = None
        return (str(day), signature(day / "run_meta.json"), str(drill), script, base)

    def alerts_so_far(self, now: float | None = None):
        """The alerts raised up to the clock's minute."""
        minute = self.minute(now)
        alerts = _day_alerts(*self._played(), self.cutoff_hour())
        return [a for a in alerts if a.minute <= minute]

    def series_so_far(self, metric: str, per: str = "all", now: float | None = None):
        """``metric`` per ``per`` today and on the usual day, up to the clock's minute."""
        bucket = int(self.minute(now) // BUCKET_MIN)
        today, usual = _day_series(*self._played(), self.cutoff_hour(), metric, per)
        return today.iloc[:, :bucket], usual.iloc[:, :bucket]

    def card_taps(self, token: int, now: float | None = None):
        """A masked card's taps of the drill day up to the clock, with the balance each left
        on the card (the service desk's look-up; drills/desk.py)."""
        minute = int(self.minute(now))
        drill = self.drill
        until = dt.datetime.combine(drill.day, dt.time(0)) + dt.timedelta(minutes=minute)
        today = RunView(self.folder / "day", drill.day, self.cutoff_hour())
        desk = self.folder / "day" / DESK_FILE
        # While the day is being played again its balances are set aside: none are shown.
        played = desk.exists()
        balances = (
            "read_parquet(?)"
            if played
            else "(SELECT NULL::BIGINT AS transaction_id, NULL::INTEGER AS balance_after_fen)"
        )
        try:
            return today.con.sql(
                f"""SELECT t.event_timestamp, CAST(t.route_id AS VARCHAR) AS line, t.device_id,
                          CAST(t.media AS VARCHAR) AS media, t.amount_fen,
                          d.balance_after_fen
                   FROM transactions t LEFT JOIN {balances} d USING (transaction_id)
                   WHERE t.token_id = ? AND t.service_date = ? AND t.event_timestamp <= ?
                   ORDER BY t.event_timestamp, t.transaction_id""",
                params=[*([str(desk)] if played else []), int(token), drill.day, until],
            ).df()
        finally:
            today.close()

    # ----------------------------------------------------------------- the end
    @_one_change_at_a_time
    def end(self, lang: str = "zh", privacy_key=None) -> dict:
        """Stop the clock and write the debrief (the drill with the injections, the trainee's
        actions; drills/runner.py)."""
        from drills.report import debrief_html
        from drills.runner import run_drill

        s = self.state()
        before = dict(s)
        s["anchor_minute"], s["ended"] = self.minute(), True
        self._save(s)
        drill = self.drill.model_copy(update={"incidents": self.incidents()})
        try:
            debrief = run_drill(
                drill, self.trainee(), self.folder / "debrief", privacy_key=privacy_key
            )
        except BaseException:
            self._save(before)  # still running: the trainee can end it again
            raise
        (self.folder / "debrief.html").write_text(debrief_html(debrief, lang), encoding="utf-8")
        (self.folder / "debrief.json").write_text(
            json.dumps(debrief, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        return debrief

    def debrief(self) -> dict | None:
        """The debrief once the drill has ended (None before): shared, not to be changed."""
        path = self.folder / "debrief.json"
        return PARSED.get(path, _read_json) if path.exists() else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _clock_time(minute: float) -> dt.time:
    """The time of day at ``minute`` (the clock stops at 24:00: the day's last minute)."""
    m = min(int(minute), 24 * 60 - 1)
    return dt.time(m // 60, m % 60)


def _views(day_dir: str, drill_path: str, cutoff: int) -> tuple[RunView, RunView]:
    """The played day (today) and the day before it (usual)."""
    day = load_drill(drill_path).day
    return (
        RunView(Path(day_dir), day, cutoff),
        RunView(Path(day_dir), day - dt.timedelta(days=1), cutoff),
    )


@functools.lru_cache(maxsize=16)
def _day_alerts(
    day_dir: str, played: tuple, drill_path: str, changed: tuple, base: tuple | None, cutoff: int
):
    """Every alert of the played day (``played``, ``changed``, ``base``: cache keys only)."""
    today, usual = _views(day_dir, drill_path, cutoff)
    try:
        return tuple(raise_alerts(load_drill(drill_path).alert_rules, today, usual))
    finally:
        today.close()
        usual.close()


@functools.lru_cache(maxsize=64)
def _day_series(
    day_dir: str,
    played: tuple,
    drill_path: str,
    changed: tuple,
    base: tuple | None,
    cutoff: int,
    metric: str,
    per: str,
):
    """A metric's whole-day series, today and usual (``played``, ``changed``, ``base``: cache
    keys only)."""
    today, usual = _views(day_dir, drill_path, cutoff)
    try:
        normal = usual.series(metric, per)
        # Yesterday's keys too: what is silent today is what a screen should show moved.
        return with_usual_keys(today, metric, normal.index, today.series(metric, per)), normal
    finally:
        today.close()
        usual.close()


def sessions(root: Path = SESSIONS) -> list[DrillSession]:
    """Every session under ``root``, the last started first (their order does not move when
    a clock is paused, resumed or sped up); one that cannot be read (``problem``) comes last
    rather than stopping the list."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [DrillSession(p) for p in root.iterdir() if (p / "session.json").exists()]

    def started(session: DrillSession) -> tuple[bool, float, str]:
        try:
            state = session.state()
            when = float(state.get("started_wall", state["anchor_wall"]))
            return True, when, str(state["id"])
        except (*UNREADABLE, AttributeError):
            return False, 0.0, session.folder.name

    return sorted(found, key=started, reverse=True)


__all__ = [
    "DEFAULT_SPEED",
    "SESSIONS",
    "DrillSession",
    "chain_files",
    "chain_signatures",
    "sessions",
    "signature",
]
