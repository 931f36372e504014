"""What one refresh of the drill pages costs with many sessions: the session files read per
refresh (every session's state, drill script, actions, injections and debrief, as
``readable_sessions`` and the trainer's table read them), then the whole trainer page in
Streamlit's AppTest.

    python bench/drill_pages.py [--sessions 20] [--repeat 10]

One duplicate-wave session is played (a few seconds), then copied under new ids: the files
are what a real session's are. Prints the median and best time of a refresh, in ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drills.session import DrillSession, sessions  # noqa: E402

DRILL = ROOT / "scenarios" / "drills" / "duplicate_wave.yaml"


def make_sessions(root: Path, count: int) -> None:
    """``count`` sessions under ``root``: one played, the others its copies."""
    first = DrillSession.start(DRILL, "Wang", root=root)
    first.pause()
    for k in range(1, count):
        folder = root / f"duplicate_wave-copy{k:02d}"
        shutil.copytree(first.folder, folder)
        state = json.loads((folder / "session.json").read_text("utf-8"))
        state.update(id=folder.name, trainee=f"Trainee {k}")
        (folder / "session.json").write_text(json.dumps(state), "utf-8")


def read_every_session(root: Path) -> int:
    """What a refresh reads of each session (the pages' listing and the trainer's table)."""
    shown = 0
    for s in sessions(root):
        if s.problem() is None:
            state = s.state()
            s.drill.title("en"), s.clock(), s.actions(), s.debrief(), state["trainee"]
            shown += 1
    return shown


def timed(run, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        root = runs / "drills" / "sessions"
        make_sessions(root, args.sessions)
        assert read_every_session(root) == args.sessions
        median, best = timed(lambda: read_every_session(root), args.repeat)
        print(f"session files, {args.sessions} sessions: median {median:.1f} ms, best {best:.1f}")

        from streamlit.testing.v1 import AppTest

        def trainer_page() -> None:
            at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
            at.session_state["runs_root"] = str(runs)
            at.session_state["lang"] = "en"
            at.switch_page("views/trainer.py")
            at.run()
            assert not at.exception, at.exception

        trainer_page()  # the first run imports the pages and builds what they keep
        median, best = timed(trainer_page, args.repeat)
        print(f"trainer page (AppTest), {args.sessions} sessions: median {median:.0f} ms, "
              f"best {best:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
