"""Per-participant reconciliation files (sim/reconciliation.py, docs/reconciliation.md): each
summary is its detail grouped, every settled record is in its issuer's and its acquirer's files,
rejects and corrections are the rejected records, and the acquirers' totals match the batches."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from output_frames import read_frame

from sim.api import BadInput, load_scenario, reconcile, run
from sim.reconciliation import FILES, check_reconciliation

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory):
    out = tmp_path_factory.mktemp("recon") / "run"
    run(load_scenario(ROOT / "scenarios" / "two_city.yaml", ["period.days=3"]), out)
    return out, reconcile(out)


def _all(folder: Path, name: str) -> pd.DataFrame:
    parts = []
    for path in sorted(folder.glob(f"*/*/{name}")):
        frame = pd.read_csv(path, dtype={"counterparty_id": str})
        frame["participant"] = path.parent.parent.name
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def test_every_date_folder_has_its_files_and_summaries_agree(reconciled):
    out, folder = reconciled
    days = [p for p in folder.glob("*/*") if p.is_dir()]
    assert days and all(sorted(f.name for f in d.iterdir()) == sorted(FILES) for d in days)
    assert check_reconciliation(out, folder) == []


def test_each_settled_record_is_in_its_issuers_and_its_acquirers_files(reconciled):
    out, folder = reconciled
    tx = read_frame(out, "transactions")
    cleared = tx[tx["status"] == "cleared"]
    detail = _all(folder, "detail.csv")
    for role, column in (("issuer", "issuer_id"), ("acquirer", "acquirer_id")):
        mine = detail[detail["role"] == role]
        assert sorted(mine["transaction_id"]) == sorted(cleared["transaction_id"])
        assert (mine["participant"] == mine[column]).all()
    assert detail["amount_fen"].sum() == 2 * cleared["amount_fen"].sum()
    rejects = _all(folder, "rejects.csv")
    rejected = tx[tx["status"] == "rejected"]
    assert len(rejects) == 2 * len(rejected)
    corrections = _all(folder, "corrections.csv")
    duplicates = rejected[rejected["reject_reason"] == "duplicate_deduction"]
    assert corrections["refund_fen"].sum() == 2 * duplicates["amount_fen"].sum()


def test_a_summary_that_disagrees_is_found(reconciled, tmp_path):
    out, folder = reconciled
    copy = tmp_path / "recon"
    shutil.copytree(folder, copy)
    summary = next(copy.glob("ALPHA_CARD/*/summary.csv"))
    frame = pd.read_csv(summary)
    frame.loc[0, "amount_fen"] += 1
    frame.to_csv(summary, index=False)
    problems = check_reconciliation(out, copy)
    assert any("summary.csv does not equal detail.csv" in p for p in problems)


def test_the_cli_writes_them_and_names_a_folder_that_is_not_a_run(reconciled, tmp_path):
    out, _ = reconciled
    done = subprocess.run(
        [sys.executable, "run_scenario.py", "reconcile", str(out), "--out", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "ALPHA_CARD").is_dir()
    with pytest.raises(BadInput, match="no such run folder"):
        reconcile(tmp_path / "nothing")
