"""Ctrl-C and SIGTERM for a command: each raised as an exception, and remembered.

Python drops an exception raised inside a destructor or a weakref callback: it prints
"Exception ignored in ..." and carries on. numba and llvmlite free compiled code in destructors
(``ObjectRef.__del__``), and a Ctrl-C landing in one was lost: the run went on to its end and
exited 0, as if nobody had pressed it (seen once in CI, the run's first days). So the handlers
here also remember the stop, and the command looks again where it can act on it — every event
the engine publishes, a stream's pacing loop, a sweep's next point, the point the command
returns — and raises a stop that never came through (``StopLatch.check``). The report Python
would print for the dropped exception is left out: the stop is acted on instead.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable


class Terminated(BaseException):
    """Raised by the SIGTERM handler so that clean-up runs as for Ctrl-C."""


_STOPS: dict[int, type[BaseException]] = {
    signal.SIGINT: KeyboardInterrupt,
    signal.SIGTERM: Terminated,
}


class StopLatch:
    """The stop a command was sent, raised when it comes and again at each later ``check``.
    ``event`` is set on a stop too, for loops that poll (a stream's pacer).

    Ctrl-C is taken over only where it would raise KeyboardInterrupt anyway: a process started
    with it ignored (``nohup``, a shell's ``cmd &``) keeps ignoring it."""

    def __init__(self) -> None:
        self.pending: type[BaseException] | None = None
        self.event = threading.Event()

    def install(self) -> Callable[[], None]:
        """Take over SIGTERM, Ctrl-C (unless ignored) and the report of dropped exceptions;
        returns the function putting back what was there (call it in the same thread)."""
        previous = {signum: signal.getsignal(signum) for signum in _STOPS}
        if previous[signal.SIGINT] is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        report_unraisable = sys.unraisablehook

        def dropped(unraisable) -> None:
            if not (self.pending and isinstance(unraisable.exc_value, tuple(_STOPS.values()))):
                report_unraisable(unraisable)  # not a stop of ours: reported as before

        sys.unraisablehook = dropped

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            sys.unraisablehook = report_unraisable

        return restore

    def _on_signal(self, signum: int, frame) -> None:
        stop = _STOPS[signum]
        self.pending = stop
        self.event.set()
        raise stop()

    def check(self, event: object = None) -> None:
        """Raise the stop that came, if one did (an event subscriber: the engine calls it with
        each event). Where the stop came through, the command is unwinding and calls no more."""
        if self.pending is not None:
            raise self.pending()
