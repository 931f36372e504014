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
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gevent
from locust import HttpUser, events, task
from locust.exception import StopUser

ROOT = Path(__file__).resolve().parent.parent

FEED = None
STARTED_AT: float | None = None


@events.init.add_listener
def _make_feed(environment, **_kwargs):
    """Simulate once, before any user runs (see the module docstring)."""
    import sys

    sys.path.insert(0, str(ROOT))
    from loadtest.feed import TapFeed
    from sim.api import BadInput
    from sim.privacy import PrivacyKeyError
    from traffic.recording import RecordingError

    global FEED
    speed = float(os.environ.get("CARDTWIN_SPEED", "3600"))
    recording = os.environ.get("CARDTWIN_RECORDING")
    scenario = os.environ.get("CARDTWIN_SCENARIO", str(ROOT / "scenarios" / "small_ci.yaml"))
    try:
        if recording:
            FEED = TapFeed.from_recording(recording, speed=speed)
        else:
            days = int(os.environ.get("CARDTWIN_DAYS", "1"))
            FEED = TapFeed.from_scenario(scenario, days=days, speed=speed)
    except (BadInput, RecordingError, PrivacyKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # bad input: the message, not a traceback
        sys.exit(2)


class CardTwinTapUser(HttpUser):
    """A stream of validator uploads: the next batch of the simulated day, when it is due."""

    batch_size = int(os.environ.get("CARDTWIN_BATCH", "100"))
    path = os.environ.get("CARDTWIN_PATH", "/taps")

    def wait_time(self) -> float:
        return 0.0  # the pacing is the simulated day's, in the task

    @task
    def send_batch(self) -> None:
        global STARTED_AT
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
