"""Test helper: a small run with refunds of both kinds, for the tests of what reads them back
(``verify``'s refund checks, the reconciliation's corrections files)."""

from __future__ import annotations

from pathlib import Path

import yaml
from output_frames import read_frame

from sim.api import load_scenario, run

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
#: Faulty readers: cards charged twice within the re-tap lock, which the clearing rejects.
DUPLICATES = {"devices": {"double_tap_prob_per_tap": 0.1, "lock_failure_prob": 0.3}}
#: How many cleared card charges of the first day the service desk refunds.
DESK_REFUNDS = 5


def overlay(path: Path, settings: dict) -> Path:
    """A scenario file at ``path`` extending the small CI scenario with ``settings``."""
    path.write_text(
        yaml.safe_dump({"extends": str(SMALL), "name": path.stem, **settings}), encoding="utf-8"
    )
    return path


def run_with_refunds(folder: Path, days: int = 3) -> Path:
    """Run, in ``folder``, a scenario with refunds of both kinds: duplicate deductions the
    clearing rejected (those it found on the last day are paid after the period) and
    ``DESK_REFUNDS`` cleared card charges of the first day that the service desk had refunded
    (paid within it). A first run of the same scenario without the desk finds those charges
    (their transaction ids). Returns the second run's folder."""
    run(load_scenario(overlay(folder / "dup.yaml", DUPLICATES), days=days), folder / "base")
    tx = read_frame(folder / "base", "transactions")
    charged = tx[
        (tx["status"] == "cleared") & (tx["amount_fen"] > 0) & (tx["media"] == "physical_card")
        & (tx["issuer_id"] == "NTCARD") & (tx["service_date"].astype(str) == "2024-01-01")
    ]  # fmt: skip
    desk = {"id": "desk", "kind": "desk_refund", "start": "2024-01-01 20:00", "duration_min": 1,
            "transactions": charged["transaction_id"].head(DESK_REFUNDS).tolist()}  # fmt: skip
    out = folder / "run"
    scenario = overlay(folder / "desk.yaml", {**DUPLICATES, "incidents": [desk]})
    run(load_scenario(scenario, days=days), out)
    return out
