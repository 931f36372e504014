"""Helpers of the stream tests: reading a JSON-lines sink's file, killing a stream midway."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"


def json_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines file."""
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def kill_when_some_are_done(cmd, state: Path, env=None) -> None:
    """Start the stream command, SIGKILL it once its checkpoint shows records done."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    checkpoint = state / "checkpoint.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if checkpoint.exists():
            try:
                if json.loads(checkpoint.read_text())["done_through"] > 300:
                    break
            except (json.JSONDecodeError, KeyError):
                pass  # caught mid-write: look again on the next turn
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def small_stream(
    tmp_path, sink, record_format="taps", *, seed=None, resume=False, stop=None, **options
):
    """Two days of the small scenario streamed to ``sink`` (batches of 200, quick retries),
    its state in ``tmp_path / "state"``; ``options`` go to the sink (SinkOptions)."""
    from sim.api import load_scenario, privacy_key
    from traffic.delivery import RetryPolicy
    from traffic.sinks import SinkOptions
    from traffic.stream import StreamSettings, stream

    return stream(
        load_scenario(SMALL, days=2),
        StreamSettings(
            sink=sink,
            state_dir=tmp_path / "state",
            record_format=record_format,
            batch_size=200,
            sink_options=SinkOptions(record_format=record_format, **options),
            retry=RetryPolicy(base_s=0.01),
            resume=resume,
        ),
        privacy_key=privacy_key(None),
        seed=seed,
        stop=stop,
    )
