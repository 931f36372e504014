"""A Ctrl-C or SIGTERM that Python drops still stops the command (sim/stops.py).

Python drops an exception raised inside a destructor ("Exception ignored in ..."); llvmlite
frees compiled code in one (``ObjectRef.__del__``), and a Ctrl-C landing there in CI was lost:
the run went on to its end and exited 0. Here the stop is sent from inside a destructor, on the
first call of a function each command really calls, and the command must end as it does for a
stop that came through: the same exit code and message, no report of the dropped exception,
nothing of a run written, a stream's checkpoint kept.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

import run_scenario
from sim import api

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
STOPS = [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")]


class _SignalledWhenFreed:
    """Sends ``signum`` to this process from its destructor, where Python drops what the
    handler raises (``signal.raise_signal`` runs the handler before it returns)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        signal.raise_signal(self.signum)


def _dropping(sig: str, original, went_on: list):
    """``original``, which on its first call first frees a ``_SignalledWhenFreed``; appends to
    ``went_on`` once the call goes on past the dropped stop (proof that it was dropped)."""

    def first_call_dropping_a_stop(*args, **kwargs):
        if not went_on:
            _SignalledWhenFreed(getattr(signal, sig))  # freed at once: its stop dropped
            went_on.append(sig)
        return original(*args, **kwargs)

    return first_call_dropping_a_stop


@pytest.fixture(autouse=True)
def _ctrl_c_reaches_the_process():
    """Ctrl-C as a terminal gives it (pytest's worker may have it otherwise)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("sig", "code", "word"), STOPS)
def test_a_dropped_stop_stops_the_run_with_nothing_written(
    tmp_path: Path, monkeypatch, capsys, sig: str, code: int, word: str
):
    from agents import citizen

    went_on: list = []
    monkeypatch.setattr(citizen, "trip_slots", _dropping(sig, citizen.trip_slots, went_on))
    out = tmp_path / "run"
    assert run_scenario.main([str(SMALL), "--days", "3", "--quiet", "--out", str(out)]) == code
    assert went_on == [sig]  # the stop was dropped where it was sent
    err = capsys.readouterr().err
    assert f"{word}: nothing was written to the output folder" in err
    assert "Exception ignored" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no output, no partial folder, no lock


@pytest.mark.parametrize(("sig", "code", "word"), STOPS)
def test_a_dropped_stop_stops_a_stream_which_then_resumes_to_its_end(
    tmp_path: Path, monkeypatch, capsys, sig: str, code: int, word: str
):
    from traffic.stream import REPORT_FILE, _Pacer

    went_on: list = []
    real_tick = _Pacer._tick
    monkeypatch.setattr(_Pacer, "_tick", _dropping(sig, real_tick, went_on))
    state = tmp_path / "state"
    argv = ["stream", str(SMALL), "--days", "1", "--sink", "null", "--state", str(state)]
    assert run_scenario.main([*argv, "--quiet"]) == code
    assert went_on == [sig]
    err = capsys.readouterr().err
    assert f"stopped: what was delivered is checkpointed in {state}" in err
    assert "Exception ignored" not in err and "Traceback" not in err
    stopped = json.loads((state / REPORT_FILE).read_text(encoding="utf-8"))
    assert stopped["finished"] is False

    monkeypatch.setattr(_Pacer, "_tick", real_tick)
    assert run_scenario.main([*argv, "--resume", "--quiet"]) == 0
    resumed = json.loads((state / REPORT_FILE).read_text(encoding="utf-8"))
    assert resumed["finished"] is True and resumed["reconciled"] is True
    assert resumed["totals"]["acknowledged"] == resumed["totals"]["generated"] > 0


@pytest.mark.parametrize(("sig", "code", "word"), STOPS)
def test_a_dropped_stop_stops_a_sweep_before_its_points(
    tmp_path: Path, monkeypatch, capsys, sig: str, code: int, word: str
):
    real_sweep = api.sweep
    went_on: list = []

    def sweep(*args, progress, **kwargs):  # the real sweep; its progress drops a stop first
        return real_sweep(*args, progress=_dropping(sig, progress, went_on), **kwargs)

    monkeypatch.setattr(api, "sweep", sweep)
    out = tmp_path / "sweep"
    argv = ["sweep", str(SMALL), "--param", "fares.transfer.window_min=30,90", "--days", "2"]
    assert run_scenario.main([*argv, "--workers", "1", "--out", str(out), "--quiet"]) == code
    assert went_on == [sig]
    err = capsys.readouterr().err
    assert f"{word}: finished points are kept in {out / 'points'}" in err
    assert "Exception ignored" not in err
    assert not (out / "sweep.json").exists()  # stopped before its report


@pytest.mark.parametrize(("sig", "code", "word"), STOPS)
def test_a_stop_dropped_until_the_command_returns_is_still_its_exit_code(
    monkeypatch, capsys, sig: str, code: int, word: str
):
    went_on: list = []
    monkeypatch.setattr(api, "build", _dropping(sig, api.build, went_on))
    assert run_scenario.main(["validate", str(SMALL)]) == code
    assert went_on == [sig]
    captured = capsys.readouterr()
    assert "valid scenario" in captured.out  # its work was done: said so, then the stop
    assert f"{word}: the validate command had already finished" in captured.err
    assert "Exception ignored" not in captured.err


def test_an_exception_dropped_that_is_not_a_stop_is_still_reported(monkeypatch):
    # The latch silences only the stops it acts on: any other dropped exception goes to the
    # hook that was there before (Python's report, or here a recorder), and the hook is back.
    class FailsWhenFreed:
        def __del__(self) -> None:
            raise ValueError("freed badly")

    def build(scenario):
        FailsWhenFreed()
        return real_build(scenario)

    reported: list = []
    recorder = reported.append
    monkeypatch.setattr(sys, "unraisablehook", recorder)
    real_build = api.build
    monkeypatch.setattr(api, "build", build)
    assert run_scenario.main(["validate", str(SMALL)]) == 0
    assert [type(u.exc_value) for u in reported] == [ValueError]
    assert sys.unraisablehook is recorder


def test_ctrl_c_ignored_when_the_command_starts_stays_ignored():
    from sim.stops import StopLatch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup or a shell's `cmd &`
    restore = StopLatch().install()
    try:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # taken over
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(("sig", "code", "word"), STOPS)
def test_an_error_after_a_dropped_stop_is_taken_as_the_stop(
    tmp_path: Path, monkeypatch, capsys, sig: str, code: int, word: str
):
    # Code that catches the stop and raises something else in its place (as numba turns one
    # into a SystemError, or a library into its own error): still the stop, not a traceback.
    from agents import citizen

    went_on: list = []

    def failing(*args, **kwargs):
        raise RuntimeError("broken by the stop")

    monkeypatch.setattr(citizen, "trip_slots", _dropping(sig, failing, went_on))
    out = tmp_path / "run"
    assert run_scenario.main([str(SMALL), "--days", "3", "--quiet", "--out", str(out)]) == code
    assert went_on == [sig]
    err = capsys.readouterr().err
    assert f"{word}: nothing was written to the output folder" in err
    assert "Traceback" not in err and "RuntimeError" not in err
    assert list(tmp_path.iterdir()) == []
