"""How quickly the dashboard answers on a finished run (a measurement, not a test).

Drives the real app with Streamlit's AppTest (the script runs in this process, as it runs in
the server for a browser session; the browser's own drawing is not included) on a finished
run, default ``runs/nantong_2024`` (``make run``: Nantong, full scale, 7 days):

* open: a fresh session opens the Explore page of the run (cold caches: the run is opened and
  every query of the page runs) — budget < 3 s;
* switch: the ridership measure changes (the page's charts are queried again) — budget < 1 s;
* switch back: the same measure again (answered from ``st.cache_data``);
* language: the page redrawn in English.

    .venv/bin/python bench/dashboard.py [--run runs/nantong_2024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

BUDGETS = {"open": 3.0, "switch": 1.0}


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def one_session(run_dir: Path) -> dict[str, float]:
    """The four steps of one fresh session, in seconds."""
    import streamlit as st

    st.cache_data.clear()  # cold: as the first user after the run finished
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.session_state["run_dir"] = str(run_dir)
    at.run()
    at.switch_page("views/explore.py")
    times = {"open": timed(at.run)}
    measure = at.selectbox(key="explore_measure:zh")
    times["switch"] = timed(lambda: measure.set_value("spend_fen").run())
    measure = at.selectbox(key="explore_measure:zh")
    times["switch back"] = timed(lambda: measure.set_value("taps").run())
    at.session_state["lang"] = "en"
    times["language"] = timed(at.run)
    if at.exception:
        raise SystemExit(f"the page failed: {at.exception[0].message}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "nantong_2024")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not (args.run / "run_meta.json").exists():
        raise SystemExit(f"{args.run}: no finished run; make one with `make run`")
    print(f"run: {args.run}; {args.repeat} fresh sessions; {time.strftime('%Y-%m-%d %H:%M')}")
    sessions = [one_session(args.run) for _ in range(args.repeat)]
    for step in sessions[0]:
        values = [s[step] for s in sessions]
        budget = BUDGETS.get(step)
        verdict = (
            ""
            if budget is None
            else f"  budget < {budget:.0f} s"
            + ("" if max(values) < budget else "  <<< OVER BUDGET")
        )
        print(
            f"{step:12s} median {statistics.median(values):.2f} s, worst {max(values):.2f} s "
            f"({', '.join(f'{v:.2f}' for v in values)}){verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
