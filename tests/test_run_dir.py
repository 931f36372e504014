"""The run folder's lifecycle (sim/run_dir.py): a stop that comes while it opens."""

from __future__ import annotations


def test_a_stop_while_the_folder_opens_waits_for_the_cleanup():
    """StopSignalsHeld: a SIGTERM sent while held is delivered at release(), not before."""
    import os
    import signal
    import threading

    from sim.run_dir import StopSignalsHeld

    assert threading.current_thread() is threading.main_thread()
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("stop"))
    try:
        held = StopSignalsHeld()
        os.kill(os.getpid(), signal.SIGTERM)
        _let_handlers_run()
        assert seen == []
        held.release()
        _let_handlers_run()
        assert seen == ["stop"]
        held.release()  # twice is harmless
    finally:
        signal.signal(signal.SIGTERM, previous)


def _let_handlers_run() -> None:
    """Python runs a pending signal's handler between bytecodes: give it many."""
    total = 0
    for i in range(1000):
        total += i
