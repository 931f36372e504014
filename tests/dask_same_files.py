"""Test helper: a scenario run in this process and on a local Dask cluster of one worker, whose
files must be the same bytes (sim/distributed.py)."""

from __future__ import annotations

from pathlib import Path

from output_frames import parquet_hashes

from sim.api import dask_client, load_scenario, run, verify


def run_here_and_on_a_worker(path: Path, overrides: list[str], folder: Path) -> Path:
    """Run scenario file ``path`` (with ``overrides``) into ``folder``/here in this process and
    into ``folder``/there on one Dask worker; checks both wrote the same files and that they
    verify. Returns the Dask run's folder."""
    here, there = folder / "here", folder / "there"
    run(load_scenario(path, overrides), here)
    with dask_client(workers=1) as client:
        run(load_scenario(path, overrides), there, client=client)
    assert parquet_hashes(there) == parquet_hashes(here)
    assert verify(there) == []
    return there
