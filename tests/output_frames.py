"""Test helper: read an output table of a run as a pandas frame with plain string columns."""

from __future__ import annotations

from pathlib import Path

from sim.output import read_table


def read_frame(out: Path, table: str):
    """Table ``table`` of run directory ``out``; dictionary columns become plain strings."""
    frame = read_table(out, table).to_pandas()
    for name in frame.columns:
        if str(frame[name].dtype) == "category":
            frame[name] = frame[name].astype(str)
    return frame
