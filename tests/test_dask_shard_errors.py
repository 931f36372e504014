"""A city's shard that fails on a Dask worker (sim/distributed.py, sim/shard_actor.py): an error
raised by the shard's own code is ``ShardFailed`` (exit 6, the worker's traceback printed), a
worker that dies is ``WorkerLost`` (exit 4); neither leaves anything in the output folder. Real
local clusters, whose workers load tests/dask_shard_faults.py to break the second day."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dask
import dask.distributed  # noqa: F401 - its config defaults loaded before a test's dask.config.set
import pytest

from sim.api import BadInput, ShardFailed, dask_client, load_scenario, run

ROOT = Path(__file__).resolve().parent.parent
TWO_CITY = ROOT / "scenarios" / "two_city.yaml"
DAYS = "period.days=3"
FAULTS = Path(__file__).resolve().parent / "dask_shard_faults.py"


def test_an_error_in_a_shards_own_code_is_shard_failed_with_the_workers_traceback(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CARDTWIN_TEST_SHARD_FAULT", "raise")
    out = tmp_path / "run"
    with (
        dask.config.set({"distributed.worker.preload": [str(FAULTS)]}),
        dask_client(workers=1) as client,
        pytest.raises(ShardFailed) as failed,
    ):
        run(load_scenario(TWO_CITY, [DAYS]), out, client=client)
    error = failed.value
    assert (error.city, error.shard) == ("two_city_alpha", 0)  # the first failed shard
    # Day 1's evening runs with day 2's morning, in one call.
    assert error.method == "evening_and_morning"
    assert (error.error_type, error.error) == ("KeyError", "'no fare rule for day 1'")
    assert str(error) == (
        "city two_city_alpha (shard 0) raised KeyError in its evening_and_morning call on its "
        "Dask worker: 'no fare rule for day 1'"
    )
    # The worker's traceback, down to the shard's code that raised.
    assert "in broken_settle_day" in error.remote_traceback
    assert "sim/shard_actor.py" in error.remote_traceback
    assert error.remote_traceback.rstrip().endswith("KeyError: 'no fare rule for day 1'")
    assert not out.exists()  # nothing kept: no partial output
    assert not list(tmp_path.glob("run.partial-*"))


def test_an_error_building_a_citys_world_on_its_worker_is_told_from_a_lost_worker(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    scenario = load_scenario(TWO_CITY, [DAYS])
    with dask.config.set({"distributed.worker.preload": [str(FAULTS)]}):
        monkeypatch.setenv("CARDTWIN_TEST_SHARD_FAULT", "build")  # a defect in the world's code
        with dask_client(workers=1) as client, pytest.raises(ShardFailed) as failed:
            run(scenario, out, client=client)
        error = failed.value
        assert (error.city, error.shard, error.method) == ("two_city_alpha", 0, "build")
        assert (error.error_type, error.error) == ("KeyError", "\"card type 'ST' has no fare\"")
        assert "in broken_build_world" in error.remote_traceback
        # The city's data cannot make a world: bad input, as the driver's own build says it.
        monkeypatch.setenv("CARDTWIN_TEST_SHARD_FAULT", "build_data")
        with dask_client(workers=1) as client, pytest.raises(BadInput) as bad:
            run(scenario, out, client=client)
        assert str(bad.value) == "region 'east': generated bus network is not connected"
    assert not out.exists()
    assert not list(tmp_path.glob("run.partial-*"))


@pytest.mark.parametrize(
    ("fault", "code", "said"),
    [
        ("raise", 6, "city two_city_alpha (shard 0) raised KeyError in its evening_and_morning"),
        ("kill", 4, "the worker running city two_city_alpha (shard 0) failed"),
        ("build", 6, "city two_city_alpha (shard 0) raised KeyError in its build call"),
        ("build_data", 2, "error: region 'east': generated bus network is not connected"),
    ],
)
def test_the_cli_tells_a_shards_error_from_a_lost_worker(tmp_path, fault, code, said):
    out = tmp_path / "run"
    env = {
        **os.environ,
        "CARDTWIN_TEST_SHARD_FAULT": fault,
        "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(FAULTS)]),
    }
    done = subprocess.run(
        [sys.executable, "run_scenario.py", str(TWO_CITY), "--set", DAYS, "--quiet",
         "--out", str(out), "--workers", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    assert said in done.stderr
    if fault != "build_data":
        assert "nothing was written to the output folder" in done.stderr
    if fault in ("raise", "build"):  # a defect: the worker's traceback is what to report
        assert "worker traceback:\nTraceback (most recent call last):" in done.stderr
        assert f"in broken_{'settle_day' if fault == 'raise' else 'build_world'}" in done.stderr
        assert "report it" in done.stderr
    else:  # the cluster's doing: no traceback, nothing to report
        assert "Traceback" not in done.stderr
    assert not out.exists()
    assert not list(tmp_path.glob("run.partial-*"))
