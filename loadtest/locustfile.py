"""Locust with CardTwin traffic: users POST real tap records, paced by the simulated day.

    CARDTWIN_SCENARIO=scenarios/nantong_2024.yaml CARDTWIN_SPEED=3600 \
        locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 \
        --headless -u 20 -r 20 -t 60s

Before the users start, the scenario is simulated (``CARDTWIN_DAYS`` days, default 1) and its
tap records kept as JSON (loadtest/feed.py); or, with ``CARDTWIN_RECORDING=X.parquet``, the tap
records of a recorded stream are read (``run_scenario.py stream ... --sink file:///X.parquet``;
nothing simulated). Each user then takes the next batch of records
(``CARDTWIN_BATCH``, default 100), waits until the batch is due — simulated time played
``CARDTWIN_SPEED`` times faster than the wall clock, so the morning and evening peaks are there
— and POSTs it as a JSON array to ``CARDTWIN_PATH`` (default ``/taps``) with an
``Idempotency-Key`` header, like ``run_scenario.py stream --sink http://...``. Users stop when the
day's records are used up. Locust's own statistics, charts and distributed mode work as usual;
what the system under test should have done with each record is what the stream command's
reconciliation and the ``score`` command are for.

Distributed (``--processes N``, or ``--master`` and ``--worker``s): every worker builds the same
feed and sends its own share, the stream's batches dealt out in turn (loadtest/feed.py), so the
workers together send each record once. When the test starts, the master tells each worker its
share (its place among the workers, and how many there are); every worker must be given the
same ``CARDTWIN_*`` settings. A worker that joins a running test gets no share and sends
nothing.

A ``CARDTWIN_*`` setting that is not what it should be stops Locust with the variable, the value
and what was expected (exit 2).
"""

from __future__ import annotations

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

FEED = None
STARTED_AT: float | None = None
#: Set on a worker when the master has told it its share of the feed.
PARTITIONED = False
PARTITION_MESSAGE = "cardtwin_partition"


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
def _make_feed(environment, runner=None, **_kwargs):
    """Check the settings and simulate once, before any user runs (the module docstring); on
    a master, which runs no users, only check them and deal out the shares."""
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
    if isinstance(runner, MasterRunner):
        environment.events.test_start.add_listener(_deal_out_shares)
        return
    if isinstance(runner, WorkerRunner):
        runner.register_message(PARTITION_MESSAGE, _take_share)
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


def _deal_out_shares(environment, **_kwargs) -> None:
    """On the master, as the test starts (before the users are spawned: the messages reach a
    worker in the order they are sent): each worker's place among the workers, by the index
    Locust gave it, and their number."""
    runner = environment.runner
    workers = sorted(
        runner.clients.ready + runner.clients.spawning + runner.clients.running,
        key=lambda worker: runner.get_worker_index(worker.id),
    )
    for part, worker in enumerate(workers):
        runner.send_message(
            PARTITION_MESSAGE, {"part": part, "parts": len(workers)}, client_id=worker.id
        )


def _take_share(environment, msg, **_kwargs) -> None:
    """On a worker: the share the master dealt out."""
    global PARTITIONED
    FEED.partition(msg.data["part"], msg.data["parts"])
    PARTITIONED = True


class CardTwinTapUser(HttpUser):
    """A stream of validator uploads: the next batch of the simulated day, when it is due."""

    batch_size = 100  # CARDTWIN_BATCH, set once checked (above)
    path = "/taps"  # CARDTWIN_PATH

    def wait_time(self) -> float:
        return 0.0  # the pacing is the simulated day's, in the task

    @task
    def send_batch(self) -> None:
        global STARTED_AT
        if isinstance(self.environment.runner, WorkerRunner) and not PARTITIONED:
            # Joined a running test: the shares were dealt out without this worker, and its
            # records are another worker's to send.
            raise StopUser()
        batch = FEED.next_batch(self.batch_size)
        if batch is None:
            raise StopUser()
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
