"""Compile the engine's compiled loops once, into numba's on-disk cache (``make install``).

The citizens' day (agents/citizen_kernels.py), pricing (sim/fares.py), balances
(sim/balances.py) and the random streams' hashes (sim/rng.py) are numba loops compiled on
first use and cached beside their modules (``__pycache__``). Compiling them takes ~5 s once per
clone; without this step the first run of a fresh clone pays it inside its simulation (its
taps-per-second figure a quarter of a later run's) and the test processes each wait for it.
Simulating one day of the small CI scenario, without writing anything, calls every kernel
with the types a full-scale run calls it with, so every later process only loads them.

    .venv/bin/python -m sim.compile_kernels
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"


def main() -> int:
    from sim.api import load_scenario, run
    from sim.privacy import PrivacyKey

    started = time.perf_counter()
    # A throwaway key: nothing is written, and the machine's own key is not created here.
    key = PrivacyKey(secrets.token_bytes(32))
    run(load_scenario(SCENARIO, days=1), None, privacy_key=key)
    print(f"compiled loops ready (numba cache) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
