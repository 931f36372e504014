"""What common random numbers buy in the policy lab (a measurement, not a test).

Runs the same compare twice at the same number of replications: once with paired seeds (the
default: replication r of every scenario uses seed r) and once with independent seeds (each
scenario its own), and prints, per headline measure, the 95% CI width of the difference under
each, their ratio, and the wall time of each compare (the issue-8 budget: baseline vs one variant,
5 replications x 28 days, full scale, <= 4 minutes on 2 cores).

    .venv/bin/python bench/crn.py                                   # Nantong vs elderly off-peak
    .venv/bin/python bench/crn.py --replications 5 --days 28 --json /tmp/crn.json

Exits 0; marks a compare over the budget with ``<<< OVER BUDGET``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim import api, lab  # noqa: E402

BUDGET_S = 240  # baseline vs one variant, 5 replications x 28 days


def width(report: dict, variant: str, measure: str) -> float:
    d = report["variants"][variant][measure]["difference"]
    return d["ci_high"] - d["ci_low"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(ROOT / "scenarios/nantong_2024.yaml"))
    parser.add_argument("--variant", default=str(ROOT / "scenarios/policies/elderly_offpeak.yaml"))
    parser.add_argument("--replications", type=int, default=5)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    base = api.load_scenario(args.base, days=args.days)
    variant = api.load_scenario(args.variant, days=args.days)
    reports, seconds = {}, {}
    for mode, independent in (("paired", False), ("independent", True)):
        start = time.perf_counter()
        reports[mode] = api.compare(
            base, [variant], replications=args.replications, independent_seeds=independent
        )
        seconds[mode] = time.perf_counter() - start

    name = variant.name
    print(f"{base.name} vs {name}: {args.replications} replications x {args.days} days")
    for mode, s in seconds.items():
        flag = "  <<< OVER BUDGET" if s > BUDGET_S * args.replications * args.days / 140 else ""
        print(f"compare, {mode} seeds: {s:.1f} s{flag}")
    print(f"\n{'measure':45} {'difference':>16} {'CI paired':>14} {'CI indep.':>14} {'ratio':>7}")
    figures = {"seconds": seconds, "measures": {}}
    for m in lab.HEADLINE:
        wp, wi = width(reports["paired"], name, m), width(reports["independent"], name, m)
        mean = reports["paired"]["variants"][name][m]["difference"]["mean"]
        ratio = wi / wp if wp else float("inf")
        figures["measures"][m] = {"mean": mean, "ci_paired": wp, "ci_independent": wi}
        print(f"{m:45} {mean:>+16,.0f} {wp:>14,.0f} {wi:>14,.0f} {ratio:>6.1f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
