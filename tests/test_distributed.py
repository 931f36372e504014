"""Cities as Dask actors, the clearing as the reduce step (sim/distributed.py): the same files
in this process, on 1 and 2 local workers and on an external cluster (a real `dask scheduler`
and two `dask worker` processes on loopback); a worker killed mid-run stops the run with a clear
message and leaves no output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dask.distributed import Client
from dask_same_files import run_here_and_on_a_worker
from output_frames import parquet_hashes
from scenario_files import two_city_with_alpha_incidents

from sim.api import WorkerLost, dask_client, load_scenario, run, verify
from sim.distributed import place_shards, shard_cost
from sim.events import IncidentEnded, IncidentStarted

ROOT = Path(__file__).resolve().parent.parent
TWO_CITY = ROOT / "scenarios" / "two_city.yaml"
DAYS = ["period.days=3"]


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("in_process") / "run"
    run(load_scenario(TWO_CITY, DAYS), out)
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    return parquet_hashes(out), meta, out


@pytest.mark.parametrize("workers", [1, 2])
def test_local_workers_write_the_files_of_an_in_process_run(tmp_path, in_process, workers):
    out = tmp_path / "run"
    with dask_client(workers=workers) as client:
        summary = run(load_scenario(TWO_CITY, DAYS), out, client=client)
    hashes, in_process_meta, _ = in_process
    assert parquet_hashes(out) == hashes
    assert verify(out) == []
    assert summary.totals["pending"] == 0 and summary.totals["cleared"] > 0
    meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
    # This process built no people: the actors report them, as the in-process run counts.
    assert len(summary.world.population) == 0
    for key in ("cities", "cardholders", "totals", "cross_city", "clearing", "output"):
        assert meta[key] == in_process_meta[key], key
    assert len(set(meta["dask"]["shards"].values())) == workers  # every worker runs a city
    assert all(b > 50 * 2**20 for b in meta["dask"]["peak_rss_bytes"].values())
    # Where the time went (bench/yrd.py): the driver's days, and every city's calls.
    assert set(meta["dask"]["driver_s"]) == {"morning", "clearing", "evening"}
    busy = meta["dask"]["shard_busy_s"]
    assert set(busy) == set(meta["dask"]["shards"])
    assert all(calls["morning"] > 0 and calls["evening"] > 0 for calls in busy.values())


@contextlib.contextmanager
def _cluster(tmp_path, workers: int = 2, prefix: tuple[str, ...] = ()):
    """A real `dask scheduler` and ``workers`` `dask worker` processes on loopback (each
    started through ``prefix``, e.g. in a mount namespace of its own), stopped after."""
    dask = str(Path(sys.executable).parent / "dask")
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "scheduler.log").open("wb"),
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text(encoding="utf-8"))["address"]
        for k in range(workers):
            procs.append(
                subprocess.Popen(
                    [*prefix, dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                     "--host", "127.0.0.1", "--no-dashboard", "--local-directory",
                     str(tmp_path / "workers")],
                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                    stderr=(tmp_path / f"worker-{k}.log").open("wb"),
                )
            )  # fmt: skip
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def external_cluster(tmp_path):
    with _cluster(tmp_path) as address:
        yield address


def test_an_external_cluster_writes_the_same_files_through_the_cli(
    tmp_path, in_process, external_cluster
):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "run_scenario.py", str(TWO_CITY), "--set", DAYS[0], "--quiet",
         "--out", str(out), "--scheduler", external_cluster],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert parquet_hashes(out) == in_process[0]


def test_a_worker_killed_mid_run_stops_it_with_a_message_and_no_output(tmp_path):
    out = tmp_path / "run"
    with dask_client(workers=2) as client:
        pids = client.run(os.getpid)  # worker address -> its process

        def kill_after_first_day(event) -> None:
            if type(event).__name__ == "DayClosed" and event.day == 0:
                os.kill(pids[min(pids)], signal.SIGKILL)
                time.sleep(2)  # the process is gone before the next day's calls

        with pytest.raises(WorkerLost, match=r"the worker running city two_city_\w+ \(shard \d\)"):
            run(
                load_scenario(TWO_CITY, DAYS),
                out,
                client=client,
                subscribers=[kill_after_first_day],
            )
    assert not out.exists()  # nothing kept: no partial output
    assert not list(tmp_path.glob("run.partial-*"))


def test_a_worker_gone_while_the_shards_are_built_is_a_lost_city_not_a_hang():
    """A shard's actor is pinned to its worker: Dask cannot build it elsewhere, so a worker
    gone while building must stop the run, not leave it waiting (a real cluster, in this
    process; the worker named is one that is not there)."""
    from types import SimpleNamespace

    from dask.distributed import LocalCluster

    from sim.distributed import PendingShards, _built

    gone = "tcp://127.0.0.1:1"
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        future = client.submit(time.sleep, 60, workers=[gone], allow_other_workers=False)
        city = SimpleNamespace(scenario=SimpleNamespace(name="alpha"))
        started = time.monotonic()
        with pytest.raises(WorkerLost, match=r"building city alpha \(shard 0\) went away"):
            _built(client, PendingShards([future], {0: gone}), [city])
        assert time.monotonic() - started < 10


def test_options_a_cluster_run_cannot_take_are_refused_before_any_worker_builds():
    from dask.distributed import LocalCluster

    from sim.api import BadInput, iter_days
    from sim.behaviour import NO_RESPONSE

    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        days = iter_days(load_scenario(TWO_CITY, DAYS), None, client=client, response=NO_RESPONSE)
        with pytest.raises(BadInput, match="takes no env, response or shard_order"):
            next(days)
        assert not client.who_has()  # no shard was submitted


@pytest.mark.slow
def test_the_yrd_week_on_two_workers_writes_the_files_of_an_in_process_run(tmp_path):
    # Four days: Hefei listed on day 2, the Jiangsu exchange down on day 4, deposits called.
    scenario = load_scenario(ROOT / "scenarios" / "yrd_2024.yaml", ["period.days=4"])
    run(scenario, tmp_path / "in_process")
    with dask_client(workers=2) as client:
        run(scenario, tmp_path / "two_workers", client=client)
    assert parquet_hashes(tmp_path / "two_workers") == parquet_hashes(tmp_path / "in_process")
    assert verify(tmp_path / "two_workers") == []


def test_desk_refunds_are_paid_by_the_workers_as_in_process(tmp_path, in_process):
    """A desk refund of cleared card charges (sim/incidents.py desk_refund): the records'
    actor builds the refunds, the cards' actor pays them; the files are the in-process run's.
    A second one, on the last day, is paid after the period: both runs report it owed, counted
    and in fen."""
    from output_frames import read_frame

    tx = read_frame(in_process[2], "transactions")

    def charged_on(date: str):
        return tx[
            (tx["status"] == "cleared") & (tx["amount_fen"] > 0)
            & (tx["media"] == "physical_card") & (tx["issuer_id"] == "ALPHA_CARD")
            & (tx["city_code"] == "9901") & (tx["service_date"].astype(str) == date)
        ].head(5)  # fmt: skip

    first, last = charged_on("2024-03-04"), charged_on("2024-03-06")
    refunds = [
        {"id": f"desk{k}", "kind": "desk_refund", "start": f"{date} 20:00", "duration_min": 1,
         "transactions": named["transaction_id"].tolist()}
        for k, (date, named) in enumerate((("2024-03-04", first), ("2024-03-06", last)))
    ]  # fmt: skip
    path = two_city_with_alpha_incidents(tmp_path, refunds)
    there = run_here_and_on_a_worker(path, DAYS, tmp_path)
    journal = read_frame(there, "ledger_entries")
    paid = journal[journal["memo"] == "desk_refund"]
    assert paid["amount_fen"].sum() == first["amount_fen"].sum() > 0
    assert set(paid["credit"]) == {"float:ALPHA_CARD"}
    totals = [
        json.loads((out / "run_meta.json").read_text(encoding="utf-8"))["totals"]
        for out in (tmp_path / "here", there)
    ]
    for t in totals:
        assert t["refunds_outstanding"] == len(last) == 5
        assert t["refunds_outstanding_fen"] == last["amount_fen"].sum() > 0
    assert totals[0] == totals[1]


def test_a_distributed_run_publishes_the_incidents_as_the_in_process_run(tmp_path):
    """Incident start and end events (what live views and drills watch) come in the same order
    from the workers' run as from the in-process clock."""
    path = two_city_with_alpha_incidents(
        tmp_path,
        [
            {"id": "centre-down", "kind": "clearing_node_outage", "target": "REGION_CENTRE",
             "start": "2024-03-05 00:00", "duration_min": 1440},
            {"id": "alipay", "kind": "qr_platform_outage", "target": "qr_alipay",
             "start": "2024-03-06 08:00", "duration_min": 90},
        ],
    )  # fmt: skip

    def incidents(client=None) -> list:
        seen = []

        def watch(event) -> None:
            if isinstance(event, IncidentStarted | IncidentEnded):
                seen.append((type(event).__name__, event.shard, event.code))

        run(load_scenario(path, DAYS), None, subscribers=[watch], client=client)
        return seen

    here = incidents()
    # The node outage is the run's (both cities have it), the QR outage alpha's: 3 x 2 events.
    assert len(here) == 6 and here[0] == ("IncidentStarted", 0, 0)
    with dask_client(workers=1) as client:
        assert incidents(client) == here


def test_the_yrd_cities_are_placed_so_that_two_workers_carry_about_the_same_work():
    """Nantong at full scale is about as much work as the ten small cities together (each of
    which brings its full fleet of validators and a shard's own cost): placed by cost, neither
    worker carries more than 10% above half of it; by cardholders alone, Nantong went alone."""
    cities = load_scenario(ROOT / "scenarios" / "yrd_2024.yaml").city_scenarios
    costs = [shard_cost(c) for c in cities]
    placement = place_shards(costs, ["w1", "w2"])
    load = {w: sum(c for i, c in enumerate(costs) if placement[i] == w) for w in ("w1", "w2")}
    assert max(load.values()) < 1.1 * sum(costs) / 2
    nantong = next(i for i, c in enumerate(cities) if c.name == "yrd_nantong")
    assert sum(placement[i] == placement[nantong] for i in range(len(cities))) > 1
    # The costliest goes first, to the first worker; one worker takes everything.
    assert placement[nantong] == "w1"
    assert set(place_shards(costs, ["w1"]).values()) == {"w1"}


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a worker that cannot see the folder needs a mount namespace (root, unshare)",
)
def test_a_worker_that_cannot_see_the_output_folder_is_bad_input_and_nothing_is_written(
    tmp_path,
):
    """A real worker whose disk is not the driver's: started in a mount namespace of its own,
    where an empty tmpfs hides the folder the run writes into."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "earlier.txt").write_text("kept\n", encoding="utf-8")
    hide = f'mount -t tmpfs none {shared} && exec "$@"'
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh")
    with _cluster(tmp_path, workers=1, prefix=prefix) as address:
        done = subprocess.run(
            [sys.executable, "run_scenario.py", str(TWO_CITY), "--set", DAYS[0], "--quiet",
             "--out", str(shared / "run"), "--scheduler", address],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr + (tmp_path / "worker-0.log").read_text()
    assert "cannot see" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["earlier.txt"]  # no run, no partial


def test_more_workers_than_shards_is_refused_before_any_cluster_starts(tmp_path):
    done = subprocess.run(
        [sys.executable, "run_scenario.py", str(TWO_CITY), "--set", DAYS[0], "--quiet",
         "--out", str(tmp_path / "run"), "--workers", "999999"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "expected at most 2" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
