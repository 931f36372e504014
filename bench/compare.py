"""Before/after benchmark of two source trees in one sitting (a measurement, not a test).

Timings on this shared 2-core machine move 10-30% between runs, so a change is judged by running
the old and the new code alternately, each run in a fresh process, and comparing medians:

    git worktree add /tmp/before <commit>           # the code before the change
    .venv/bin/python bench/compare.py --before /tmp/before --repeat 3
    .venv/bin/python bench/compare.py --before /tmp/before --days 366 --repeat 1

Each run is ``bench/bench_nantong.py``'s own child mode in that tree (world build, simulation,
Parquet + DuckDB output, end to end), with this interpreter. Prints one table and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_TAG = "BENCH_RESULT "


def one_run(tree: Path, scenario: str, days: int) -> dict:
    """One end-to-end run of ``tree``'s code in a fresh process; its figures."""
    with tempfile.TemporaryDirectory(prefix="cardtwin-compare-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                str(tree / "bench" / "bench_nantong.py"),
                "--_child",
                "--scenario",
                scenario,
                "--child-days",
                str(days),
                "--out-dir",
                str(Path(tmp) / "run"),
            ],
            cwd=tree,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{tree}: run failed: " + " | ".join(tail))
    result = json.loads(lines[-1][len(RESULT_TAG) :])
    result["process_wall_s"] = wall
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="tree with the old code")
    ap.add_argument("--after", type=Path, default=HERE.parent, help="tree with the new code")
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="runs per tree (alternating)")
    ap.add_argument("--scenario", default="scenarios/nantong_2024.yaml")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    args = ap.parse_args(argv)

    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(args.repeat):
        for label, tree in (("before", args.before), ("after", args.after)):
            print(f"run {i + 1}/{args.repeat} {label} ({tree}) ...", flush=True)
            runs[label].append(one_run(tree.resolve(), args.scenario, args.days))

    def med(label: str, get) -> float:
        return statistics.median(get(r) for r in runs[label])

    rows = [
        ("process wall (s)", lambda r: r["process_wall_s"]),
        ("sim.api.run total_s (s)", lambda r: r["timings_s"]["total_s"]),
        ("world build (s)", lambda r: r["timings_s"]["build_world_s"]),
        ("simulate + write (s)", lambda r: r["timings_s"]["simulate_and_write_s"]),
        ("peak RSS (GiB)", lambda r: r["vmhwm_bytes"] / 1024**3),
        ("tap records", lambda r: r["taps"]),
    ]
    print(f"\n{args.days} days of {args.scenario}, medians of {args.repeat} run(s) each")
    print(f"  {'figure':<28}{'before':>14}{'after':>14}{'after/before':>14}")
    for name, get in rows:
        b, a = med("before", get), med("after", get)
        ratio = f"{a / b:.3f}" if b else "-"
        print(f"  {name:<28}{b:>14,.2f}{a:>14,.2f}{ratio:>14}")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
