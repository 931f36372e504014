"""Per-participant reconciliation files (sim/reconciliation.py, docs/reconciliation.md): each
summary is its detail grouped, every settled record is in its issuer's and its acquirer's files,
rejects and corrections are the rejected records, and the acquirers' totals match the batches."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from output_frames import read_frame

from sim.api import BadInput, load_scenario, reconcile, run
from sim.reconciliation import FILES, MARKER_FILE, check_reconciliation

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
    # An ordinary folder, as mkdir makes one (it is built in a private temporary one first).
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


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


def _cli_reconcile(*args: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run_scenario.py", "reconcile", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["the run itself", "the folder holding the run", "a table"])
def test_an_out_that_is_or_holds_or_is_inside_the_run_is_refused(reconciled, tmp_path, where):
    out, _ = reconciled
    target = {
        "the run itself": out,
        "the folder holding the run": out.parent,
        "a table": out / "transactions",
    }[where]
    before = _snapshot(out.parent)
    done = _cli_reconcile(out, "--out", target)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and f"--out {target}: " in done.stderr
    assert _snapshot(out.parent) == before  # the run and its reconciliation: not a byte lost


def test_a_folder_that_is_not_an_earlier_reconcile_is_refused_and_kept(reconciled, tmp_path):
    out, _ = reconciled
    precious = tmp_path / "precious"
    (precious / "analysis").mkdir(parents=True)
    (precious / "analysis" / "notes.txt").write_text("mine", encoding="utf-8")
    (precious / "README.txt").write_text("my own readme\n", encoding="utf-8")
    done = _cli_reconcile(out, "--out", precious)
    assert done.returncode == 2 and "is not an earlier reconcile's output" in done.stderr
    assert (precious / "analysis" / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # nothing left beside it


def test_a_rerun_replaces_its_earlier_output_but_never_a_file_put_into_it(reconciled, tmp_path):
    out, first = reconciled
    again = tmp_path / "recon"
    assert reconcile(out, again) == again
    summary = next(again.glob("ALPHA_CARD/*/summary.csv"))
    summary.write_text("edited\n", encoding="utf-8")
    (again / "OLD_PARTICIPANT" / "2024-01-01").mkdir(parents=True)  # as if from another run
    (again / "OLD_PARTICIPANT" / "2024-01-01" / "detail.csv").write_text("", encoding="utf-8")
    marker = json.loads((again / MARKER_FILE).read_text(encoding="utf-8"))
    marker["files"].append("OLD_PARTICIPANT/2024-01-01/detail.csv")
    (again / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    reconcile(out, again)  # an earlier reconcile's folder: replaced whole
    assert not (again / "OLD_PARTICIPANT").exists()
    assert _snapshot(again) == _snapshot(first)  # the same files as the first reconcile wrote
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recon"]  # no staging folder left
    (again / "ALPHA_CARD" / "my_notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(BadInput, match=r"1 file\(s\) it did not write \(ALPHA_CARD/my_notes.txt\)"):
        reconcile(out, again)
    assert (again / "ALPHA_CARD" / "my_notes.txt").read_text(encoding="utf-8") == "mine"


def test_an_output_written_before_the_marker_is_recognised_by_its_layout(reconciled, tmp_path):
    out, first = reconciled
    earlier = tmp_path / "recon"
    shutil.copytree(first, earlier)
    (earlier / MARKER_FILE).unlink()  # as an earlier version wrote it: README.txt and the files
    reconcile(out, earlier)
    assert _snapshot(earlier) == _snapshot(first)
    shutil.copytree(first, tmp_path / "mine")
    (tmp_path / "mine" / MARKER_FILE).unlink()
    (tmp_path / "mine" / "README.txt").write_text("my own notes\n", encoding="utf-8")
    with pytest.raises(BadInput, match="is not an earlier reconcile's output"):
        reconcile(out, tmp_path / "mine")


def _cli_run(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run_scenario.py", "scenarios/small_ci.yaml", "--days", "1",
         "--out", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip


def test_a_run_replaces_an_earlier_run_with_its_reconciliation_but_never_a_file_put_into_it(
    reconciled, tmp_path
):
    out, _ = reconciled
    earlier = tmp_path / "run"
    shutil.copytree(out, earlier)  # the run and its default reconciliation/, as reconcile left it
    notes = earlier / "reconciliation" / "ALPHA_CARD" / "my_notes.txt"
    notes.write_text("mine", encoding="utf-8")
    before = _snapshot(earlier)
    done = _cli_run(earlier)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "1 file(s) CardTwin did not write (reconciliation/ALPHA_CARD/my_notes.txt)" in (
        done.stderr
    )
    assert _snapshot(earlier) == before
    notes.unlink()
    done = _cli_run(earlier)  # what reconcile wrote describes the earlier run: it goes with it
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (earlier / "reconciliation").exists()
    meta = json.loads((earlier / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["scenario"] == load_scenario(ROOT / "scenarios" / "small_ci.yaml").name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing left beside it


def test_a_reconciliation_folder_reconcile_did_not_write_is_kept_from_a_run(reconciled, tmp_path):
    out, _ = reconciled
    earlier = tmp_path / "run"
    shutil.copytree(out, earlier, ignore=shutil.ignore_patterns("reconciliation"))
    (earlier / "reconciliation").mkdir()
    (earlier / "reconciliation" / "summary.csv").write_text("mine\n", encoding="utf-8")
    done = _cli_run(earlier)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "(reconciliation/summary.csv)" in done.stderr
    assert (earlier / "reconciliation" / "summary.csv").read_text(encoding="utf-8") == "mine\n"


def _damaged_copy(run_dir: Path, tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A copy of the run with its first transactions file truncated or its data overwritten."""
    copy = tmp_path / "damaged"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("reconciliation"))
    path = sorted((copy / "transactions").rglob("*.parquet"))[0]
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # the footer intact, the column data garbled: only reading the data finds it
        data[200 : len(data) // 2] = bytes(b ^ 0x5A for b in data[200 : len(data) // 2])
    path.write_bytes(bytes(data))
    return copy, path


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_a_damaged_parquet_file_is_bad_input_naming_it(reconciled, tmp_path, how):
    out, _ = reconciled
    copy, damaged = _damaged_copy(out, tmp_path, how)
    done = _cli_reconcile(copy, "--out", tmp_path / "r")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert str(damaged) in done.stderr and "damaged" in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_check_that_fails_is_exit_3_saying_reconcile_failed(
    reconciled, tmp_path, monkeypatch, capsys
):
    import run_scenario
    import sim.api

    out, _ = reconciled
    problem = "ALPHA_CARD/2024-01-02/summary.csv does not equal detail.csv grouped"
    monkeypatch.setattr(sim.api, "check_reconciliation", lambda run_dir, folder: [problem])
    assert run_scenario.main(["reconcile", str(out), "--out", str(tmp_path / "r")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("reconcile failed: invariant 'reconciliation_agrees'") and problem in err
    assert (tmp_path / "r" / "ALPHA_CARD").is_dir()  # the files stay, to look at
