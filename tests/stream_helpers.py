"""Helpers of the stream tests: reading a JSON-lines sink's file, killing a stream midway."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path


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
