"""A Dask worker preload for tests/test_dask_shard_errors.py: it breaks the shards' day on the
worker it is loaded into, as a defect or a dying machine would, through a real worker.

Loaded by Dask into every worker (``distributed.worker.preload``: the config in a test, or
``DASK_DISTRIBUTED__WORKER__PRELOAD`` for the CLI); ``CARDTWIN_TEST_SHARD_FAULT`` says what
settling day ``FAULT_DAY`` does there: ``raise`` an error from the shard's own code (a KeyError,
as a missing table entry would), or ``kill`` the worker process; or what building the city's
world there does: ``build`` raises a KeyError (a defect), ``build_data`` the ValueError of a city
whose data cannot make a world (bad input, as the driver's own build would say).
"""

from __future__ import annotations

import os
import signal

#: The day whose settling breaks: the first day's files are written by then (the run's folder
#: has something in it to discard).
FAULT_DAY = 1
FAULT_ENV = "CARDTWIN_TEST_SHARD_FAULT"


def dask_setup(worker) -> None:
    """Dask calls this as the worker starts: replace ``CityShard.settle_day`` there."""
    import sim.world
    from sim.shard import CityShard

    fault = os.environ[FAULT_ENV]
    if fault in ("build", "build_data"):

        def broken_build_world(scenario, *args, **kwargs):
            if fault == "build":
                raise KeyError("card type 'ST' has no fare")
            raise ValueError("region 'east': generated bus network is not connected")

        sim.world.build_world = broken_build_world  # the shard actor imports it when made
        return
    settle_day = CityShard.settle_day

    def broken_settle_day(self, day: int):
        if day == FAULT_DAY:
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise KeyError(f"no fare rule for day {day}")
        return settle_day(self, day)

    CityShard.settle_day = broken_settle_day
