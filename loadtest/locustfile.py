"""Locust with CardTwin traffic: users POST real tap records, paced by the simulated day.

    CARDTWIN_SCENARIO=scenarios/nantong_2024.yaml CARDTWIN_SPEED=3600 \
        locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 \
        --headless -u 20 -r 20 -t 60s

When Locust loads this file, before the users start, the scenario is simulated
(``CARDTWIN_DAYS`` days, default 1) and its tap records kept as JSON (loadtest/feed.py); or, with
``CARDTWIN_RECORDING=X.parquet``, the tap records of a recorded stream are read
(``run_scenario.py stream ... --sink file:///X.parquet``; nothing simulated). Each user then
takes the next batch of records (``CARDTWIN_BATCH``, default 100), waits until the batch is due
— simulated time played ``CARDTWIN_SPEED`` times faster than the wall clock, so the morning and
evening peaks are there — and POSTs it as a JSON array to ``CARDTWIN_PATH`` (default ``/taps``)
with an ``Idempotency-Key`` header, like ``run_scenario.py stream --sink http://...``. Users stop
when the day's records are used up, and the test ends once every batch has been answered
(headless, Locust exits with its summary; with the web UI, the test stops and the UI stays up):
``-t`` is only a ceiling, and a run time shorter than the feed's ends the test before every
record is sent. A new test started from the web UI sends the feed again, from its first batch
and paced from that test's start, and ends by itself as the first did: the records are built
once, when Locust loads this file; what a test uses up of them is reset as each test starts.
Locust's own statistics, charts and distributed mode work as usual; what the system under test
should have done with each record is what the stream command's reconciliation and the
``score`` command are for.

Distributed (``--processes N``, or ``--master`` and ``--worker``s): every worker has the same feed
(made once before ``--processes`` forks its workers; each ``--worker`` process makes its own) and
sends its own share, the stream's batches dealt out in turn (loadtest/feed.py), so the
workers together send each record once. When the test starts, the master tells each worker its
share (its place among the workers, and how many there are); every worker must be given the
same ``CARDTWIN_*`` settings. A worker that joins a running test gets no share and sends
nothing. The master ends the test once every worker it dealt a share to has sent it all.

A ``CARDTWIN_*`` setting that is not what it should be stops Locust with the variable, the value
and what was expected (exit 2).
"""

from __future__ import annotations

import atexit
import gc
import math
import os
import sys
import time
from pathlib import Path

import gevent
from locust import HttpUser, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

ROOT = Path(__file__).resolve().parent.parent

#: The records, built once as Locust loads this file (``_make_feed``), sent by every test.
FEED = None
#: When this test's first batch was sent: the feed's times count from it (``_new_test``).
STARTED_AT: float | None = None
#: Set on a worker when the master has told it its share of the feed for the test under way
#: (cleared when a test stops: a share is dealt for one test).
PARTITIONED = False
PARTITION_MESSAGE = "cardtwin_partition"
#: Batches this process's users have taken from the feed and not yet had answered. Not reset
#: by ``_new_test``: a test stopped (by hand too, mid-batch) has ended its users' greenlets,
#: whose ``finally`` counts their batch down, so it is 0 again; a reset could only make a
#: late count-down take it below 0, and the test would never end.
IN_FLIGHT = 0
#: Set once this process has sent its whole share in the test under way (the test's end is
#: then asked for once).
SHARE_SENT = False
SENT_MESSAGE = "cardtwin_share_sent"
#: On the master: the workers dealt a share, and those that have sent all of it.
DEALT: set[str] = set()
DONE: set[str] = set()


class SettingError(ValueError):
    """A CARDTWIN_* environment variable is wrong."""


def _setting(name: str, default: str, kind: type, what: str):
    """The environment variable ``name`` (``default`` if unset) as a ``kind`` > 0."""
    text = os.environ.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not (math.isfinite(value) and value > 0):
        raise SettingError(f"{name}={text!r}: expected {what}")
    return value


def settings() -> dict:
    """The CARDTWIN_* settings, checked (SettingError names the variable and what it wants)."""
    path = os.environ.get("CARDTWIN_PATH", "/taps")
    if not path.startswith("/"):
        raise SettingError(f"CARDTWIN_PATH={path!r}: expected a path starting with /")
    return {
        "speed": _setting(
            "CARDTWIN_SPEED", "3600", float,
            "a number > 0 (simulated seconds played each wall-clock second)",
        ),
        "days": _setting("CARDTWIN_DAYS", "1", int, "a whole number of days > 0"),
        "batch": _setting("CARDTWIN_BATCH", "100", int, "a whole number of records > 0"),
        "path": path,
    }  # fmt: skip


@events.init.add_listener
def _on_init(environment, runner=None, **_kwargs):
    """The master deals out the shares as each test starts and ends it once they are sent; a
    worker takes the share it is dealt, which starts its test (``_take_share``); a single
    process starts each test afresh itself."""
    if isinstance(runner, MasterRunner):
        environment.events.test_start.add_listener(_deal_out_shares)
        runner.register_message(SENT_MESSAGE, _worker_sent_its_share)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(PARTITION_MESSAGE, _take_share)
        environment.events.test_stop.add_listener(_share_used)
    else:
        environment.events.test_start.add_listener(_test_starts)


def _new_test() -> None:
    """This process's share of the feed, for a test that starts: from its first batch, paced
    from the test's first send, not yet sent. The first test has all this already; a new test
    from the web UI would otherwise find the feed used up, send nothing and never end."""
    global STARTED_AT, SHARE_SENT
    FEED.rewind()
    STARTED_AT = None
    SHARE_SENT = False


def _test_starts(**_kwargs) -> None:
    """A single process's test starts (``test_start``). Not on a worker: its ``test_start``
    comes after the share it was dealt, so ``_take_share`` starts its test instead."""
    _new_test()


def _share_used(**_kwargs) -> None:
    """On a worker, as a test stops: its share was for that test; the next deals another."""
    global PARTITIONED
    PARTITIONED = False


def _deal_out_shares(environment, **_kwargs) -> None:
    """On the master, as the test starts (before the users are spawned: the messages reach a
    worker in the order they are sent): each worker's place among the workers, by the index
    Locust gave it, and their number."""
    runner = environment.runner
    workers = sorted(
        runner.clients.ready + runner.clients.spawning + runner.clients.running,
        key=lambda worker: runner.get_worker_index(worker.id),
    )
    DEALT.clear()
    DONE.clear()
    for part, worker in enumerate(workers):
        DEALT.add(worker.id)
        runner.send_message(
            PARTITION_MESSAGE, {"part": part, "parts": len(workers)}, client_id=worker.id
        )


def _worker_sent_its_share(environment, msg, **_kwargs) -> None:
    """On the master: a worker has sent all of its share; the last one ends the test."""
    DONE.add(msg.node_id)
    if DEALT and DEALT <= DONE:
        _end_test(environment)


def _share_sent(environment) -> None:
    """This process's users have sent every batch of its share and had each answered: a
    worker tells the master; a single process ends the test itself."""
    global SHARE_SENT
    if SHARE_SENT:
        return
    SHARE_SENT = True
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message(SENT_MESSAGE)
    else:
        _end_test(environment)


def _end_test(environment) -> None:
    """The feed is sent: headless, Locust exits with its summary; with the web UI, the test
    stops and the UI stays up. In a greenlet of its own, since stopping kills the users' (and
    the message handlers') greenlets, which may be the caller's."""
    print("CardTwin: every batch of the feed sent and answered; ending the test", file=sys.stderr)
    runner = environment.runner
    if environment.parsed_options is not None and environment.parsed_options.headless:
        gevent.spawn(runner.quit)
    else:
        gevent.spawn(runner.stop)


def _take_share(environment, msg, **_kwargs) -> None:
    """On a worker: the share the master dealt out as a test starts (before the users are
    spawned), from its first batch."""
    global PARTITIONED
    FEED.partition(msg.data["part"], msg.data["parts"])
    _new_test()
    PARTITIONED = True


class CardTwinTapUser(HttpUser):
    """A stream of validator uploads: the next batch of the simulated day, when it is due."""

    batch_size = 100  # CARDTWIN_BATCH, set once checked (above)
    path = "/taps"  # CARDTWIN_PATH

    def wait_time(self) -> float:
        return 0.0  # the pacing is the simulated day's, in the task

    @task
    def send_batch(self) -> None:
        global IN_FLIGHT
        if isinstance(self.environment.runner, WorkerRunner) and not PARTITIONED:
            # Joined a running test: the shares were dealt out without this worker, and its
            # records are another worker's to send.
            raise StopUser()
        batch = FEED.next_batch(self.batch_size)
        if batch is None:
            # The feed never yields, so no other user is between taking a batch and counting
            # it: with none in flight, every batch of this share has been answered.
            if IN_FLIGHT == 0:
                _share_sent(self.environment)
            raise StopUser()
        IN_FLIGHT += 1
        try:
            self._send(batch)
        finally:
            IN_FLIGHT -= 1

    def _send(self, batch) -> None:
        """POST ``batch`` when it is due (simulated time played CARDTWIN_SPEED times faster)."""
        global STARTED_AT
        if STARTED_AT is None:
            STARTED_AT = time.monotonic()
        delay = STARTED_AT + batch.due_s - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        # As the stream command's HTTP sink names a batch: the stream, then its positions.
        key = f"{FEED.stream_id}:{batch.first_seq}-{batch.first_seq + batch.records - 1}"
        self.client.post(
            self.path,
            data=batch.body,
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            name=f"{self.path} ({self.batch_size} taps)",
        )


def _master_only() -> bool:
    """Is this a ``--master`` process (it runs no users: it needs no feed)? With
    ``--processes N`` the process Locust starts is the master too, but its workers are forked
    from it after this file is imported, so it makes the feed they share."""
    return "--master" in sys.argv[1:] or os.environ.get("LOCUST_MASTER", "").lower() == "true"


def _make_feed() -> None:
    """Check the settings and simulate once (the module docstring), as Locust imports this file:
    before it starts a runner. A worker that simulated after connecting to its master would miss
    its heartbeats for as long as that takes (seconds on a busy machine), and the master would
    drop it from the test, its share of the feed with it; and with ``--processes N`` the
    workers, forked after the import, share the one feed made here. A bad setting or input stops
    Locust with the reason (exit 2), not a traceback."""
    sys.path.insert(0, str(ROOT))
    from loadtest.feed import TapFeed
    from sim.api import BadInput
    from sim.privacy import PrivacyKeyError
    from traffic.recording import RecordingError

    global FEED
    try:
        chosen = settings()
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)  # bad input: the message, not a traceback
        sys.exit(2)
    CardTwinTapUser.batch_size = chosen["batch"]
    CardTwinTapUser.path = chosen["path"]
    if _master_only():
        return
    recording = os.environ.get("CARDTWIN_RECORDING")
    scenario = os.environ.get("CARDTWIN_SCENARIO", str(ROOT / "scenarios" / "small_ci.yaml"))
    try:
        if recording:
            FEED = TapFeed.from_recording(recording, speed=chosen["speed"])
        else:
            FEED = TapFeed.from_scenario(scenario, days=chosen["days"], speed=chosen["speed"])
    except (BadInput, RecordingError, PrivacyKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


_make_feed()
# ``--processes`` freezes the garbage collector's objects before it forks, DuckDB's (imported for
# the feed) among them; unfrozen at exit they are freed as usual, instead of each process
# printing a page of "nanobind: leaked instance" warnings as it ends.
atexit.register(gc.unfreeze)
