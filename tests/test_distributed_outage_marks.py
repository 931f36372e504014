"""A clearing-node outage on Dask (sim/distributed.py, agents/clearing.py): the labels of the
records it holds go to every city's actor at once, one round trip per cut-off, and the files are
those of an in-process run."""

from __future__ import annotations

from dask_same_files import run_here_and_on_a_worker
from output_frames import read_frame
from scenario_files import two_city_with_alpha_incidents

from sim.distributed import RemoteShard

DAYS = ["period.days=3"]


def test_outage_labels_go_to_every_actor_at_once_and_the_files_are_the_in_process_runs(
    tmp_path, monkeypatch
):
    # Down over the cut-off of 2024-03-05 02:00 (both cities: the centre is the run's).
    path = two_city_with_alpha_incidents(
        tmp_path,
        [{"id": "centre-down", "kind": "clearing_node_outage", "target": "REGION_CENTRE",
          "start": "2024-03-05 00:00", "duration_min": 1440}],
    )  # fmt: skip
    calls: list[tuple[str, str, int]] = []  # (start or finish, method, shard), as they happen
    start, finish = RemoteShard.start, RemoteShard.finish

    def watched_start(self, method: str, *args):
        calls.append(("start", method, self.shard_index))
        return start(self, method, *args)

    def watched_finish(self, method: str, future):
        calls.append(("finish", method, self.shard_index))
        return finish(self, method, future)

    monkeypatch.setattr(RemoteShard, "start", watched_start)
    monkeypatch.setattr(RemoteShard, "finish", watched_finish)
    there = run_here_and_on_a_worker(path, DAYS, tmp_path)  # the same files
    # Both cities' records were held, and labelled with the outage.
    tx = read_frame(there, "transactions")
    held = tx[tx["incident_id"] == "centre-down"]
    assert set(held["city_code"]) == set(tx["city_code"]) and len(set(tx["city_code"])) == 2
    # One round per cut-off while the centre is down: both calls out before either answer.
    marks = [(what, shard) for what, method, shard in calls if method == "mark_incidents"]
    assert marks == [("start", 0), ("start", 1), ("finish", 0), ("finish", 1)]
