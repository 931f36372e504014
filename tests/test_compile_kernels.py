"""``make install``'s compile step (sim/compile_kernels.py) compiles every variant of the
engine's kernels that runs and streams call: afterwards they only load them from numba's cache.

A kernel is compiled once per argument types, read-only arrays included (the world's tables are
read-only): a variant the step missed would be compiled inside a fresh clone's first run, or
on each Dask worker, seconds of its simulation. In a cache directory of its own: the step, then
a day of full-scale Nantong, a stream and a run of two cities on two Dask workers add no
compiled code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
TWO_CITIES = ROOT / "scenarios" / "two_city.yaml"
NANTONG = ROOT / "scenarios" / "nantong_2024.yaml"  # full scale: days big enough for every pass
#: The modules with compiled kernels (tests/test_kernel_cache.py finds them all).
KERNEL_MODULES = ("citizen_kernels", "fares", "balances", "rng", "record_kernels")


@pytest.mark.slow
def test_runs_streams_and_dask_workers_compile_nothing_after_the_install_step(tmp_path: Path):
    cache = tmp_path / "numba_cache"
    env = os.environ | {"NUMBA_CACHE_DIR": str(cache)}

    def compiled() -> list[str]:
        return sorted(str(p.relative_to(cache)) for p in cache.rglob("*.nbc"))

    def run(*argv: object) -> None:
        done = subprocess.run(
            [sys.executable, *(str(a) for a in argv)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr

    run("-m", "sim.compile_kernels")
    warmed = compiled()
    for module in KERNEL_MODULES:
        assert any(Path(name).name.startswith(f"{module}.") for name in warmed), module
    run("run_scenario.py", NANTONG, "--days", "1", "--quiet", "--out", tmp_path / "run")
    state = tmp_path / "stream"
    run("run_scenario.py", "stream", SMALL, "--days", "1", "--sink", "null", "--state", state)
    out = tmp_path / "two"
    run("run_scenario.py", TWO_CITIES, "--days", "1", "--workers", "2", "--quiet", "--out", out)
    assert compiled() == warmed
