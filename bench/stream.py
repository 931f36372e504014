"""Benchmark: the traffic generator's budgets (issue 11).

    .venv/bin/python bench/stream.py                       # everything, 2 days (~1 min)
    .venv/bin/python bench/stream.py --days 2 --json /tmp/stream.json
    .venv/bin/python bench/stream.py --only null   # one part: null, replay, servers, http, speed
    .venv/bin/python bench/stream.py --only null --days 7 --repeat 3   # best of 3 per encoding

Parts, all on the full-scale Nantong scenario (``--scenario``):

- ``null``: generation and encoding to the ``null`` sink **on one core** (this process pinned
  to CPU 0), for each encoding (JSON, CSV, Arrow), against the simulation alone; plus each
  encoder alone on one day's records, and the CPU a record's conversion from the engine's
  events costs (``conversion_cpu_us_per_record``). Rates are
  records / the stream's wall time (the world is built before the clock starts).
- ``replay``: one core: the stream recorded to a Parquet file, then that recording sent
  again to the ``null`` sink in each encoding (traffic/recording.py: nothing simulated).
- ``servers``: Redis Streams and PostgreSQL COPY (1 and 2 connections) on throwaway servers on
  loopback (traffic/servers.py); both cores.
- ``http``: POST batches to the reference receiver (traffic/receiver.py) in its own process:
  the rate, and the CPU seconds each side used.
- ``speed``: ``--speed 3600`` over one simulated day: wall time, sent per second against the
  schedule (correlation of the per-second series), the most it fell behind.

Budgets: null >= 1,000,000 records/s on one core; Redis and Postgres >= 100,000 records/s;
HTTP limited by the receiver; --speed 3600 plays a day in under 30 s with its shape.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _stream(scenario, sink: str, state: Path, **kw):
    from sim.api import privacy_key
    from traffic.sinks import SinkOptions
    from traffic.stream import StreamSettings, stream

    options = kw.pop("sink_options", {})
    return stream(
        scenario,
        StreamSettings(sink=sink, state_dir=state, sink_options=SinkOptions(**options), **kw),
        privacy_key=privacy_key(None),
    )


def _rate(report) -> float:
    return report.totals["acknowledged"] / report.wall_s


def part_null(scenario, tmp: Path, batch: int, repeat: int = 1) -> dict:
    """One core: the simulation alone, then a stream to the null sink in each encoding
    (``repeat`` times each, alternating: the best rate, and every run's)."""
    from sim.api import build, iter_days
    from traffic.encoding import Encoder

    os.sched_setaffinity(0, {0})
    try:
        worlds = build(scenario)
        t0 = time.perf_counter()
        days = sum(1 for _ in iter_days(scenario, None, world=worlds))
        simulate_s = time.perf_counter() - t0
        out: dict = {"days": days}
        runs: dict[str, list[int]] = {"arrow": [], "csv": [], "json": []}
        for _ in range(repeat):
            for encoding, rates in runs.items():
                report = _stream(
                    scenario, "null", tmp / f"null-{encoding}", batch_size=batch,
                    sink_options={"encoding": encoding},
                )  # fmt: skip
                rates.append(round(_rate(report)))
                out["records"] = report.totals["acknowledged"]
        out["simulation_only_records_per_s"] = round(out["records"] / simulate_s)
        out["null_records_per_s"] = {encoding: max(rates) for encoding, rates in runs.items()}
        out["null_records_per_s_each_run"] = runs
        # Each encoder alone, on the first day's records (from a stream to a Parquet file).
        path = tmp / "day.parquet"
        one_day = scenario.model_copy(
            update={"period": scenario.period.model_copy(update={"days": 1})}
        )
        _stream(one_day, f"file://{path}", tmp / "file", batch_size=10**9)
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        encoder = Encoder()
        alone = {}
        for encoding in ("arrow", "csv", "json"):
            encoder.encode(table, encoding)
            t0 = time.perf_counter()
            encoder.encode(table, encoding)
            alone[encoding] = round(table.num_rows / (time.perf_counter() - t0))
        out["encoder_alone_records_per_s"] = alone
        out["conversion_cpu_us_per_record"] = _conversion_cpu(one_day)
        return out
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def _conversion_cpu(scenario) -> float:
    """CPU microseconds a tap record costs to convert from the engine's events into a
    stream's chunk (traffic/records.py: columns, time order, Arrow, keys): one day's events
    captured, then converted three times (the best)."""
    import queue
    import threading

    from sim.api import build, privacy_key, run
    from traffic.records import RecordSource

    worlds = build(scenario)
    events: list = []
    run(scenario, None, world=worlds, subscribers=[events.append])
    best = float("inf")
    for _ in range(3):
        chunks: queue.Queue = queue.Queue()
        source = RecordSource(
            [worlds], "taps", "bench", unmasked=False, privacy_key=privacy_key(None),
            chunks=chunks, stop=threading.Event(),
        )  # fmt: skip
        t0 = time.thread_time()
        for event in events:
            source(event)
        best = min(best, time.thread_time() - t0)
    records = sum(len(chunks.get()) for _ in range(chunks.qsize()))
    return round(best / records * 1e6, 3)


def part_replay(scenario, tmp: Path, batch: int) -> dict:
    """One core: record the stream to a Parquet file, then send the recording again to the
    ``null`` sink in each encoding (reading, pacing, keys checked at open, encoding; nothing
    simulated)."""
    from traffic.recording import Recording
    from traffic.sinks import SinkOptions
    from traffic.stream import StreamSettings, replay

    os.sched_setaffinity(0, {0})
    try:
        path = tmp / "recording.parquet"
        recorded = _stream(scenario, f"file://{path}", tmp / "record", batch_size=batch)
        out: dict = {
            "records": recorded.totals["acknowledged"],
            "record_to_parquet_records_per_s": round(_rate(recorded)),
            "recording_mb": round(path.stat().st_size / 1e6, 1),
        }
        t0 = time.perf_counter()
        recording = Recording.open(path)
        out["open_and_check_s"] = round(time.perf_counter() - t0, 3)
        rates = {}
        for encoding in ("arrow", "csv", "json"):
            settings = StreamSettings(
                sink="null", state_dir=tmp / f"replay-{encoding}", batch_size=batch,
                sink_options=SinkOptions(encoding=encoding),
            )  # fmt: skip
            rates[encoding] = round(_rate(replay(recording, settings)))
        out["replay_null_records_per_s"] = rates
        return out
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def part_servers(scenario, tmp: Path, batch: int) -> dict:
    from traffic.servers import postgres_server, redis_server

    out = {}
    with redis_server() as url:
        out["redis_records_per_s"] = round(
            _rate(_stream(scenario, url, tmp / "r", batch_size=batch))
        )
    with postgres_server() as url:
        for n in (1, 2):
            report = _stream(
                scenario, f"{url}?table=taps_{n}", tmp / f"pg{n}", batch_size=batch,
                sink_options={"concurrency": n},
            )  # fmt: skip
            out[f"postgres_{n}_connections_records_per_s"] = round(_rate(report))
    return out


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def part_http(scenario, tmp: Path, batch: int) -> dict:
    receiver = subprocess.Popen(
        [sys.executable, "-m", "traffic.receiver", "--port", "0"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        url = receiver.stdout.readline().split()[-1]
        ours0 = resource.getrusage(resource.RUSAGE_SELF)
        theirs0 = _cpu_of(receiver.pid)
        report = _stream(
            scenario, url + "/taps", tmp / "http", batch_size=batch,
            sink_options={"concurrency": 4},
        )  # fmt: skip
        ours1 = resource.getrusage(resource.RUSAGE_SELF)
        theirs = _cpu_of(receiver.pid) - theirs0
    finally:
        receiver.terminate()
        receiver.wait()
    ours = (ours1.ru_utime - ours0.ru_utime) + (ours1.ru_stime - ours0.ru_stime)
    return {
        "http_records_per_s": round(_rate(report)),
        "wall_s": report.wall_s,
        "cardtwin_cpu_s": round(ours, 2),
        "receiver_cpu_s": round(theirs, 2),
        "note": "CardTwin's CPU includes simulating the days",
    }


def part_speed(scenario, tmp: Path) -> dict:
    from traffic.pacing import SpeedPacer

    one_day = scenario.model_copy(update={"period": scenario.period.model_copy(update={"days": 1})})
    report = _stream(one_day, "null", tmp / "speed", pacer=SpeedPacer(3600), batch_size=5000)
    rows = report.per_second
    sent = np.array([r["sent_per_s"] for r in rows])
    target = np.array([r["target_per_s"] or 0 for r in rows])
    busy = target > 0
    return {
        "records": report.totals["acknowledged"],
        "wall_s": report.wall_s,
        "correlation_sent_vs_schedule": round(
            float(np.corrcoef(sent[busy], target[busy])[0, 1]), 4
        ),
        "peak_target_per_s": float(target.max()),
        "peak_sent_per_s": float(sent.max()),
        "max_behind_s": max(r["behind_s"] for r in rows),
        "per_second": [[r["t_s"], r["target_per_s"], r["sent_per_s"]] for r in rows],
    }


PARTS = ("null", "replay", "servers", "http", "speed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=str(ROOT / "scenarios" / "nantong_2024.yaml"))
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument(
        "--repeat", type=int, default=1, help="null part: streams per encoding (the best counts)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("CARDTWIN_PRIVACY_KEY_FILE", str(ROOT / "tests/data/test_privacy.key"))
    from sim.api import load_scenario

    scenario = load_scenario(args.scenario, days=args.days)
    results = {"scenario": args.scenario, "days": args.days, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="cardtwin-stream-bench-") as tmp:
        for part in args.only or PARTS:
            t0 = time.perf_counter()
            if part == "null":
                results[part] = part_null(scenario, Path(tmp), args.batch_size, args.repeat)
            elif part == "replay":
                results[part] = part_replay(scenario, Path(tmp), args.batch_size)
            elif part == "servers":
                results[part] = part_servers(scenario, Path(tmp), args.batch_size)
            elif part == "http":
                results[part] = part_http(scenario, Path(tmp), 1000)
            else:
                results[part] = part_speed(scenario, Path(tmp))
            shown = {k: v for k, v in results[part].items() if k != "per_second"}
            print(f"{part} ({time.perf_counter() - t0:.0f} s): {json.dumps(shown)}", flush=True)
    null = results.get("null", {}).get("null_records_per_s", {})
    if null and max(null.values()) < 1_000_000:
        print(f"<<< UNDER BUDGET: null sink {max(null.values()):,} records/s < 1,000,000")
    replayed = results.get("replay", {}).get("replay_null_records_per_s", {})
    if replayed:
        print(
            f"replay of a recording to the null sink, one core: {max(replayed.values()):,} "
            "records/s (no simulation in it)"
        )
    servers = results.get("servers", {})
    for name, rate in servers.items():
        if rate < 100_000:
            print(f"<<< UNDER BUDGET: {name} {rate:,} < 100,000")
    speed = results.get("speed")
    if speed and speed["wall_s"] > 30:
        print(f"<<< OVER BUDGET: --speed 3600 day took {speed['wall_s']} s > 30 s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
