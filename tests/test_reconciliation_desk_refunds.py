"""The corrections files list every refund ordered (sim/reconciliation.py,
docs/reconciliation.md): the service desk's refunds of cleared charges beside the duplicate
deductions the clearing rejected, in the issuer's and the acquirer's files, in integer fen equal
to the run's ``refunds`` table, and agreeing with the detail files that settled the charges."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from output_frames import read_frame
from refund_runs import DESK_REFUNDS, run_with_refunds

from sim.api import reconcile
from sim.reconciliation import CORRECTION_COLUMNS, check_reconciliation


@pytest.fixture(scope="module")
def desk_reconciled(tmp_path_factory):
    out = run_with_refunds(tmp_path_factory.mktemp("desk_recon"))
    return out, reconcile(out)


def _files(folder: Path, name: str) -> pd.DataFrame:
    """Every ``name`` file of the reconciliation, with the participant and date folder."""
    parts = []
    for path in sorted(folder.glob(f"*/*/{name}")):
        frame = pd.read_csv(path, dtype={"counterparty_id": str}, keep_default_na=False)
        frame["participant"], frame["folder"] = path.parent.parent.name, path.parent.name
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def test_a_desk_refund_is_in_its_issuers_and_its_acquirers_corrections(desk_reconciled):
    out, folder = desk_reconciled
    refunds = read_frame(out, "refunds")
    desk = refunds[refunds["refund_kind"] == "service_desk"]
    assert len(desk) == DESK_REFUNDS
    tx = read_frame(out, "transactions").set_index("transaction_id")
    corrections = _files(folder, "corrections.csv")
    assert tuple(c for c in corrections.columns if c not in ("participant", "folder")) == (
        CORRECTION_COLUMNS
    )
    shown = corrections[corrections["refund_kind"] == "service_desk"]
    assert len(shown) == 2 * DESK_REFUNDS  # once for the issuer, once for the acquirer
    for refund in desk.itertuples():
        mine = shown[shown["transaction_id"] == refund.transaction_id].set_index("role")
        assert sorted(mine.index) == ["acquirer", "issuer"]
        assert mine.loc["issuer", "participant"] == refund.issuer_id
        assert mine.loc["acquirer", "participant"] == refund.acquirer_id
        assert (mine["refund_fen"] == refund.amount_fen).all()
        assert (mine["ordered_date"] == str(refund.service_date)).all()
        assert (mine["pay_date"] == str(refund.pay_date)).all()
        # Filed, like every correction, under the day of the charge it corrects.
        charge = tx.loc[refund.transaction_id]
        assert (mine["folder"] == str(charge["service_date"])).all()
        assert (mine["status"] == "cleared").all() and (mine["reject_reason"] == "none").all()
        assert (mine["settle_date"] == str(charge["settle_date"])).all()


def test_corrections_hold_every_refund_in_integer_fen(desk_reconciled):
    out, folder = desk_reconciled
    refunds = read_frame(out, "refunds")
    corrections = _files(folder, "corrections.csv")
    for path in folder.glob("*/*/corrections.csv"):
        column = pd.read_csv(path, dtype=str, keep_default_na=False)["refund_fen"]
        assert column.str.fullmatch(r"\d+").all(), path  # fen as written: no "90.0"
    for kind, mine in refunds.groupby("refund_kind"):
        shown = corrections[corrections["refund_kind"] == kind]
        assert shown["refund_fen"].sum() == 2 * mine["amount_fen"].sum() > 0, kind
        issued = shown[shown["role"] == "issuer"].groupby("participant")["refund_fen"].sum()
        assert issued.to_dict() == mine.groupby("issuer_id")["amount_fen"].sum().to_dict()
    assert check_reconciliation(out, folder) == []


def test_each_desk_refund_is_the_charge_its_detail_file_settled(desk_reconciled):
    _, folder = desk_reconciled
    corrections = _files(folder, "corrections.csv")
    detail = _files(folder, "detail.csv")
    shown = corrections[corrections["refund_kind"] == "service_desk"]
    settled = shown.merge(detail, on=["participant", "role", "transaction_id"])
    assert len(settled) == len(shown)
    assert (settled["refund_fen"] == settled["amount_fen"]).all()
    assert (settled["folder_y"] == settled["settle_date_x"]).all()  # settled on its date


def _edit_desk_row(folder: Path, copy: Path, change) -> Path:
    """A copy of the reconciliation with the first desk refund's issuer row changed."""
    shutil.copytree(folder, copy)
    for path in sorted(copy.glob("*/*/corrections.csv")):
        frame = pd.read_csv(path, dtype={"counterparty_id": str}, keep_default_na=False)
        rows = frame.index[(frame["refund_kind"] == "service_desk") & (frame["role"] == "issuer")]
        if len(rows):
            change(frame, rows[0]).to_csv(path, index=False)
            return path
    raise AssertionError("no desk refund in the corrections files")


def test_a_desk_refund_changed_or_left_out_of_the_corrections_is_found(desk_reconciled, tmp_path):
    out, folder = desk_reconciled

    def more(frame, row):
        frame.loc[row, "refund_fen"] += 1
        return frame

    path = _edit_desk_row(folder, tmp_path / "more", more)
    problems = check_reconciliation(out, tmp_path / "more")
    assert any(str(path.parent) in p and "refund_fen" in p for p in problems), problems

    def drop(frame, row):
        return frame.drop(index=row)

    _edit_desk_row(folder, tmp_path / "gone", drop)
    problems = check_reconciliation(out, tmp_path / "gone")
    assert any("refunds" in p and "not in its corrections" in p for p in problems), problems
