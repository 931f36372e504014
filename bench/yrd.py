"""Benchmark: the Yangtze River Delta scenario on Dask, 1 worker against 2 (issue 10 budgets).

Runs ``scenarios/yrd_2024.yaml`` (or ``--scenario``) for ``--days`` days (default 1: Monday
4 March, a workday) end to end through ``sim.api.run``: in this process, then with the cities
as actors on a ``LocalCluster`` of 1 and of 2 worker processes (alternately, ``--repeat`` times,
so machine noise hits both alike). Reports wall time per run, the speed-up of 2 workers over 1
(end to end, and again for the run alone on the started cluster), each worker's peak memory,
whether the Parquet files of every mode are byte-identical, and the per-card and per-tap costs
that a full-scale projection rests on.

It also measures **what this machine can give two processes** on this very workload (the
ceiling): the in-process run alone, then two copies of it at once (separate processes, no
coordination at all; they start together once loaded), alternately. ``2 x alone / together``
is the speed-up of two perfectly balanced halves with nothing between them: what a
distribution without costs of its own would give over one process. A run alone already uses
a little more than one core (its Parquet writer and Arrow's threads) and two copies slow each
other through what the cores share, so it sits below 2. ``--no-ceiling`` skips it.

    .venv/bin/python bench/yrd.py                     # one workday, 2 repeats (~3 min)
    .venv/bin/python bench/yrd.py --days 7 --repeat 1 --json /tmp/yrd.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
# The environment as this script found it: a LocalCluster adds Dask's worker settings to this
# process's environment (MALLOC_TRIM_THRESHOLD_ among them: sim/allocator.py), which would slow
# the ceiling's in-process copies started after it by half.
START_ENVIRONMENT = dict(os.environ)
sys.path.insert(0, str(ROOT))


def _hashes(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*.parquet"))
    }


def _run(scenario, out: Path, workers: int | None) -> dict:
    from sim.api import run

    t0 = time.perf_counter()
    if workers is None:
        summary = run(scenario, out)
        peaks = {}
    else:
        from dask.distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",
            ) as cluster,
            Client(cluster) as client,
        ):
            t_run = time.perf_counter()
            summary = run(scenario, out, client=client)
            run_s = time.perf_counter() - t_run
            peaks = client.run(_peak_rss)
    wall = time.perf_counter() - t0
    if workers is None:
        run_s = wall
    result = {"wall_s": wall, "run_s": run_s, "taps": summary.taps, "peak_rss_per_worker": peaks}
    if workers is not None:
        result["where_the_time_went"] = _time_went(json.loads((out / "run_meta.json").read_text()))
    return result


def _time_went(meta: dict) -> dict:
    """Where a distributed run's time went (run_meta.json): the run's own parts, the driver's
    days (morning, clearing, evening: each waits for every city's call), and each worker's
    busy seconds in its cities' day calls (the rest of the driver's day is its own work,
    round trips, and one worker waiting for the other)."""
    dask = meta["dask"]
    busy: dict[str, float] = {}
    for city, calls in dask["shard_busy_s"].items():
        worker = dask["shards"][city]
        busy[worker] = busy.get(worker, 0.0) + sum(calls.values())
    return {
        "run_s": {k: round(v, 2) for k, v in meta["timings_s"].items()},
        "driver_days_s": dask["driver_s"],
        "worker_busy_s": {w: round(b, 2) for w, b in sorted(busy.items())},
    }


def _in_process_child(out: Path, scenario_path: str, overrides: list[str]) -> None:
    """One in-process run in this (child) process, started when the parent says so (a line
    on stdin, once every copy has loaded: the copies run side by side from the start);
    prints the run's wall and CPU seconds as JSON (the CPU of the imports and the loading
    left out)."""
    import resource

    from sim.api import load_scenario, run

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    scenario = load_scenario(scenario_path, overrides)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0, t0 = cpu_s(), time.perf_counter()
    run(scenario, out)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "cpu_s": cpu_s() - cpu0}))


def _in_process_copies(n: int, root: Path, args, overrides: list[str]) -> list[dict]:
    """``n`` in-process runs started at once, each a fresh process; their wall and CPU."""
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--in-process-child",
                str(root / f"copy_{i}"),
                "--scenario",
                args.scenario,
                *[a for o in overrides for a in ("--set", o)],
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=START_ENVIRONMENT,
        )
        for i in range(n)
    ]
    try:
        for i, child in enumerate(children):
            if child.stdout.readline().strip() != "ready":
                raise SystemExit(f"the in-process copy {i} failed while loading")
        for child in children:  # every copy loaded: all go at once
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for i, child in enumerate(children):
            stdout, _ = child.communicate()
            if child.returncode != 0:
                raise SystemExit(f"the in-process copy {i} failed (exit {child.returncode})")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        return results
    finally:
        for child in children:  # one failed: the others are not left running
            if child.poll() is None:
                child.kill()
                child.wait()
        for i in range(n):
            shutil.rmtree(root / f"copy_{i}", ignore_errors=True)


def _ceiling(root: Path, args, overrides: list[str]) -> dict:
    """The machine's two-process ceiling for this workload (module docstring)."""
    alone, together = [], []
    for r in range(args.repeat):
        alone.append(_in_process_copies(1, root, args, overrides)[0])
        pair = _in_process_copies(2, root, args, overrides)
        together.append(max(p["wall_s"] for p in pair))
        print(
            f"    ceiling {r + 1}: alone {alone[-1]['wall_s']:.1f} s,"
            f" two at once {together[-1]:.1f} s",
            flush=True,
        )
    alone_s = median(a["wall_s"] for a in alone)
    together_s = median(together)
    return {
        "in_process_alone_s": [round(a["wall_s"], 2) for a in alone],
        "two_copies_at_once_s": [round(t, 2) for t in together],
        # CPU seconds per wall second of a run alone (the run only): above 1, it already uses
        # the 2nd core.
        "cores_used_alone": round(median(a["cpu_s"] / a["wall_s"] for a in alone), 2),
        "two_process_ceiling": round(2 * alone_s / together_s, 2),
    }


def _peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=str(ROOT / "scenarios" / "yrd_2024.yaml"))
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="a scenario override, e.g. cities.nantong.shards=regions (repeatable)",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the machine's ceiling")
    parser.add_argument("--in-process-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process_child is not None:  # one copy for _ceiling, in its own process
        _in_process_child(args.in_process_child, args.scenario, args.set)
        return 0

    from sim.api import load_scenario

    overrides = [f"period.days={args.days}", *args.set]
    scenario = load_scenario(args.scenario, overrides)
    cards = {c.name: c.scale for c in scenario.city_scenarios}
    root = Path(tempfile.mkdtemp(prefix="cardtwin-yrd-bench-"))
    results: dict[str, list[dict]] = {"in-process": [], "1 worker": [], "2 workers": []}
    hashes = {}
    try:
        for r in range(args.repeat):
            for mode, workers in (("in-process", None), ("1 worker", 1), ("2 workers", 2)):
                if mode == "in-process" and r > 0:
                    continue
                out = root / f"{mode.replace(' ', '_')}_{r}"
                res = _run(scenario, out, workers)
                results[mode].append(res)
                hashes[mode] = _hashes(out)
                print(
                    f"{mode:>11} run {r + 1}: {res['wall_s']:6.1f} s"
                    f" (the run on the started cluster: {res['run_s']:.1f} s)",
                    flush=True,
                )
                shutil.rmtree(out)
        ceiling = None if args.no_ceiling else _ceiling(root, args, overrides)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    identical = len({json.dumps(h, sort_keys=True) for h in hashes.values()}) == 1
    one = median(r["wall_s"] for r in results["1 worker"])
    two = median(r["wall_s"] for r in results["2 workers"])
    pairs = [
        a["wall_s"] / b["wall_s"]
        for a, b in zip(results["1 worker"], results["2 workers"], strict=True)
    ]
    taps = results["in-process"][0]["taps"]
    peaks = results["2 workers"][-1]["peak_rss_per_worker"]
    report = {
        "scenario": args.scenario,
        "overrides": args.set,
        "days": args.days,
        "scales": cards,
        "tap_records": taps,
        "wall_s": {k: [round(r["wall_s"], 2) for r in v] for k, v in results.items()},
        "median_1_worker_s": round(one, 2),
        "median_2_workers_s": round(two, 2),
        "speed_up_2_over_1": round(one / two, 2),
        "speed_up_each_pair": [round(p, 2) for p in pairs],
        # The same runs without starting and stopping the LocalCluster (the run on a cluster
        # already up, as with --scheduler): what the workers themselves gain. The budget is
        # judged on the end-to-end figure above.
        "run_on_started_cluster_s": {
            k: [round(r["run_s"], 2) for r in v] for k, v in results.items()
        },
        "speed_up_2_over_1_started_cluster": round(
            median(r["run_s"] for r in results["1 worker"])
            / median(r["run_s"] for r in results["2 workers"]),
            2,
        ),
        "peak_rss_per_worker_mib": {w: round(b / 2**20) for w, b in peaks.items()},
        "where_the_time_went": {
            mode: results[mode][-1]["where_the_time_went"] for mode in ("1 worker", "2 workers")
        },
        "identical_files_all_modes": identical,
    }
    if ceiling is not None:
        # Against the ceiling, like for like: the ceiling's baseline is the run in process,
        # so is this ratio's (a 1-worker run carries the distribution's own costs).
        # (the run on the started cluster: the ceiling's copies start no cluster either).
        ceiling["in_process_over_2_workers"] = round(
            results["in-process"][0]["run_s"] / median(r["run_s"] for r in results["2 workers"]), 2
        )
        report["machine_ceiling"] = ceiling
    print(json.dumps(report, indent=2, ensure_ascii=False))
    budget = 60.0 * args.days
    if two > budget:
        print(f"<<< OVER BUDGET: {two:.1f} s on 2 workers > {budget:.0f} s")
    if one / two < 1.7:
        print(f"<<< UNDER BUDGET: speed-up {one / two:.2f} < 1.7")
        if ceiling is not None and ceiling["two_process_ceiling"] < 1.7:
            print(
                f"    (this machine's ceiling for two processes on this workload:"
                f" {ceiling['two_process_ceiling']:.2f})"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
