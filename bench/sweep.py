"""A 12-point sweep of 7-day full-scale runs, on one worker and on two (a measurement, not a test).

Sweeps scenarios/nantong_2024.yaml (1.7 M cardholders) over ``fares.transfer.window_min``: 12
values from 30 to 140 minutes, the base's 60 among them, so 12 distinct runs per replication.
The same sweep runs twice in one sitting, through ``sim.api.sweep`` with ``workers=1`` and with
``workers=2`` (each a Dask LocalCluster of worker processes), each into a fresh folder so that no
stored point is reused, and the script prints both wall times, the speed-up and the issue-8
budget (>= 1.7x on 2 workers), and whether the two result tables are byte-identical.

The workers start as ``run_scenario.py sweep`` starts them (forked, on Linux), or by
``--start-method spawn``. The wall time is the whole ``sim.api.sweep`` call: loading the base,
starting the cluster and its workers, loading, building and running every point, closing the
cluster, writing the table, summary and page. ``--repeat N`` alternates the two (1, 2, 1, 2,
...) and reports the best of each and the ratio of each pair run back to back, so that load
from other processes on the machine hits both alike.

    .venv/bin/python bench/sweep.py                              # 12 points x 1 replication
    .venv/bin/python bench/sweep.py --replications 3 --repeat 2 --json /tmp/sweep.json

Exits 0; marks a speed-up under the budget with ``<<< UNDER BUDGET``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run_scenario import FORK_IF_AVAILABLE  # noqa: E402
from sim import api  # noqa: E402

BUDGET_SPEEDUP = 1.7
WINDOWS = list(range(30, 150, 10))  # 12 values, 60 (the base's) among them


def timed_sweep(
    base: str, days: int, replications: int, workers: int, out: Path, start_method: str
) -> dict:
    """One sweep into ``out``: its wall time and what it ran."""
    start = time.perf_counter()
    summary = api.sweep(
        base,
        [f"fares.transfer.window_min={','.join(str(w) for w in WINDOWS)}"],
        replications=replications,
        days=days,
        workers=workers,
        out_dir=out,
        start_method=start_method,
    )
    seconds = time.perf_counter() - start
    done = summary["execution"]
    if done["points_failed"]:
        raise SystemExit(f"{done['points_failed']} points failed: {summary['failed']}")
    return {"seconds": seconds, "runs": done["points_run"], "table": out / "sweep.parquet"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(ROOT / "scenarios/nantong_2024.yaml"))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--replications", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="alternate 1 and 2 workers N times")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--start-method",
        choices=("fork", "spawn"),
        default=FORK_IF_AVAILABLE,
        help="how the workers start (default: as `run_scenario.py sweep` starts them)",
    )
    args = parser.parse_args()

    print(
        f"{Path(args.base).name}: {len(WINDOWS)} points (fares.transfer.window_min "
        f"{WINDOWS[0]}..{WINDOWS[-1]}) x {args.replications} replication(s) x {args.days} days; "
        f"{os.cpu_count()} cores; workers started by {args.start_method}; "
        f"started {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    times: dict[int, list[float]] = {1: [], 2: []}
    tables: dict[int, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="cardtwin-sweep-bench-") as tmp:
        for i in range(args.repeat):
            for workers in (1, 2):
                out = Path(tmp) / f"w{workers}-{i}"
                got = timed_sweep(
                    args.base, args.days, args.replications, workers, out, args.start_method
                )
                times[workers].append(got["seconds"])
                tables[workers] = got["table"].read_bytes()
                print(f"  {workers} worker(s): {got['seconds']:.1f} s ({got['runs']} points run)")
    best = {w: min(t) for w, t in times.items()}
    speedup = best[1] / best[2]
    pairs = [one / two for one, two in zip(times[1], times[2], strict=True)]
    flag = "" if speedup >= BUDGET_SPEEDUP else "  <<< UNDER BUDGET"
    print(f"1 worker:  {best[1]:.1f} s (best of {args.repeat})")
    print(f"2 workers: {best[2]:.1f} s (best of {args.repeat})")
    print(f"speed-up:  {speedup:.2f}x (budget >= {BUDGET_SPEEDUP}x){flag}")
    print(f"speed-up of each pair: {', '.join(f'{r:.2f}x' for r in pairs)}")
    print(f"tables byte-identical: {tables[1] == tables[2]}")
    if args.json:
        figures = {"seconds": times, "best": best, "speedup": speedup, "pairs": pairs}
        figures["args"] = vars(args)
        args.json.write_text(json.dumps(figures, indent=2, default=str), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
