"""The 7-day Nantong run as a user starts it, timed as a whole process (a measurement, not a
test): ``run_scenario.py scenarios/nantong_2024.yaml --days 7 --out DIR --quiet`` from Python's
start to its exit — imports, loading, building, simulating, writing, the catalogue. Budget: 6 s.

With ``--against CHECKOUT`` (another checkout of the repo, e.g. ``git worktree add /tmp/base
REV``) the two alternate run by run in the same sitting, with this venv's Python, so a change's
cost is seen against the machine's noise (10-30% between sittings here).

    .venv/bin/python bench/whole_process.py --repeat 5
    .venv/bin/python bench/whole_process.py --repeat 5 --against /tmp/base
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 6.0


def one_run(checkout: Path, days: int, out: Path) -> float:
    """Seconds for one whole run in ``checkout`` (its own code: the script's folder comes first
    on the import path)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "run_scenario.py", "scenarios/nantong_2024.yaml", "--days", str(days),
         "--out", str(out), "--quiet"],
        cwd=checkout, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout to alternate with")
    args = parser.parse_args()
    trees = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    times: dict[str, list[float]] = {name: [] for name in trees}
    print(f"{args.days}-day Nantong run, whole process; {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory(prefix="cardtwin-process-") as tmp:
        for i in range(args.repeat):
            for name, tree in trees.items():
                times[name].append(one_run(tree, args.days, Path(tmp) / f"{name}-{i}"))
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        flag = "" if best <= BUDGET_S else "  <<< OVER BUDGET"
        print(
            f"{name:8s} best {best:.2f} s, median {median:.2f} s "
            f"({', '.join(f'{v:.2f}' for v in values)}); budget {BUDGET_S:.0f} s{flag}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
