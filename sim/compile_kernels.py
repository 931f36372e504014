"""Compile the engine's compiled loops once, into numba's on-disk cache (``make install``).

The citizens' day (agents/citizen_kernels.py), pricing (sim/fares.py), balances
(sim/balances.py), the random streams' hashes (sim/rng.py) and the conversion of taps into
records (sim/record_kernels.py) are numba loops compiled on first use and cached beside their
modules (``__pycache__``). Compiling them takes ~5 s once per
clone; without this step the first run of a fresh clone pays it inside its simulation (its
taps-per-second figure a quarter of a later run's) and the test processes each wait for it.
Simulating one day of the small CI scenario, converting its taps into ``transactions`` rows
without writing anything, calls every kernel with the types a full-scale run calls it with, so
every later process only loads them.

    .venv/bin/python -m sim.compile_kernels
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "small_ci.yaml"


def main() -> int:
    from sim.api import build, load_scenario, run
    from sim.privacy import PrivacyKey

    started = time.perf_counter()
    # A throwaway key: nothing is written, and the machine's own key is not created here.
    key = PrivacyKey(secrets.token_bytes(32))
    scenario = load_scenario(SCENARIO, days=1)
    world = build(scenario)
    run(scenario, None, world=world, privacy_key=key, subscribers=[_converter(world, key)])
    _hex_digits()
    print(f"compiled loops ready (numba cache) in {time.perf_counter() - started:.1f} s")
    return 0


def _converter(world, key):
    """A subscriber building each settled day's ``transactions`` rows, as a run writing them
    does, and its tap records in time order, as a stream does; and dropping them."""
    from sim.events import DaySettled
    from sim.grouping import narrow_stable_order
    from sim.output import build_table
    from sim.records import name_tables, record_writers

    writer = record_writers([world], None, unmasked=False, privacy_key=key)[0]
    names, _ = name_tables([world])

    def convert(event) -> None:
        if isinstance(event, DaySettled):
            build_table("transactions", writer.transaction_columns(event.day, event.taps), names)
            writer.tap_columns(event.day, event.taps, narrow_stable_order(event.taps.t_s))

    return convert


def _hex_digits() -> None:
    """The hex digits' pass, as ``sim.output._hex`` calls it for a day's ids (the CI
    scenario's day has too few taps for it: ``HEX_COMPILED_FROM``)."""
    import numpy as np

    from sim.record_kernels import hex_digits

    hex_digits(np.zeros(1, np.int64), 12)


if __name__ == "__main__":
    sys.exit(main())
