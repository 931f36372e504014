"""Test helpers: read an output table of a run as a pandas frame with plain string columns;
the sha256 of every Parquet file of a run (byte-identity checks)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sim.output import read_table


def parquet_hashes(out: Path) -> dict[str, str]:
    """sha256 of each Parquet file of run folder ``out``, by path relative to it."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(out).rglob("*.parquet"))
    }


def read_frame(out: Path, table: str):
    """Table ``table`` of run directory ``out``; dictionary columns become plain strings."""
    frame = read_table(out, table).to_pandas()
    for name in frame.columns:
        if str(frame[name].dtype) == "category":
            frame[name] = frame[name].astype(str)
    return frame


def node_logs(out: Path) -> dict[str, list]:
    """Every clearing node's log rebuilt from ``clearing_batches`` as ``BatchRecord`` rows, in
    batch id order (what ``sim.clearing.verify_chain`` checks)."""
    import numpy as np

    from sim.verify import batch_record

    batches = read_frame(out, "clearing_batches").sort_values("clearing_batch_id")
    meta = json.loads((Path(out) / "run_meta.json").read_text(encoding="utf-8"))
    start = np.datetime64(meta["period"]["start"], "D")

    def day(value) -> int:
        return int((np.datetime64(value, "D") - start).astype(int))

    logs: dict[str, list] = {}
    for row in batches.itertuples():
        record = batch_record(row, day(row.service_date), day(row.settle_date))
        logs.setdefault(row.node_id, []).append(record)
    return logs
