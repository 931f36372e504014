"""Test helper: read an output table of a run as a pandas frame with plain string columns."""

from __future__ import annotations

import json
from pathlib import Path

from sim.output import read_table


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

    from sim.clearing import BatchRecord

    batches = read_frame(out, "clearing_batches").sort_values("clearing_batch_id")
    meta = json.loads((Path(out) / "run_meta.json").read_text(encoding="utf-8"))
    start = np.datetime64(meta["period"]["start"], "D")
    logs: dict[str, list] = {}
    for row in batches.itertuples():
        logs.setdefault(row.node_id, []).append(
            BatchRecord(
                batch_id=int(row.clearing_batch_id),
                node=row.node_id,
                transit=bool(row.transit),
                day=int((np.datetime64(row.service_date, "D") - start).astype(int)),
                settle_day=int((np.datetime64(row.settle_date, "D") - start).astype(int)),
                acquirer=row.acquirer_id,
                submitted=int(row.submitted),
                cleared=int(row.cleared),
                rejected=int(row.rejected),
                rejected_duplicate_upload=int(row.rejected_duplicate_upload),
                rejected_declined=int(row.rejected_declined),
                rejected_duplicate_deduction=int(row.rejected_duplicate_deduction),
                gross_fen=int(row.gross_fen),
                fee_fen=int(row.fee_fen),
                net_fen=int(row.net_fen),
                refund_fen=int(row.refund_fen),
                records_digest=row.records_digest,
                prev_hash=row.prev_hash,
                hash=row.batch_hash,
            )
        )
    return logs
