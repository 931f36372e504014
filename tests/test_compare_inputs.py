"""What a comparison (sim.api.compare, ``run_scenario.py compare``) and a policy overlay
(sim.api.load_policy) accept: a variant must share the baseline's world, ``--out`` is checked
before anything runs and its files are written as a set, and a policy that extends another
policy brings the settings of both.

Real scenarios throughout (the small test city, one day); the checks that refuse run nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim import api

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
NANTONG = ROOT / "scenarios" / "nantong_2024.yaml"
POLICIES = sorted((ROOT / "scenarios" / "policies").glob("*.yaml"))
WINDOW = "fares.transfer.window_min"


def _compare_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "run_scenario.py", "compare", *(str(a) for a in args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _overlay(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- a variant shares the baseline's world ----------------------------------------------------


# --- the report folder ------------------------------------------------------------------------


def test_an_out_that_is_a_file_exits_2_before_anything_runs(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine", encoding="utf-8")
    # The variant's world cannot be built (no outlet 999): had the runs started, that would be
    # the error; --out is refused first.
    broken = _overlay(
        tmp_path / "broken.yaml",
        f"extends: {SMALL}\nname: broken\noutlets: {{counters_by_outlet: {{999: 2}}}}\n",
    )
    for out, problem in ((afile, "is a file"), (afile / "sub", f"{afile} is a file")):
        result = _compare_cli(SMALL, broken, "--days", 1, "--replications", 1, "--out", out)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and "999" not in result.stderr
        assert f"error: --out {out}: {problem}; expected a folder for the comparison" in (
            result.stderr
        )
    assert afile.read_text(encoding="utf-8") == "mine"


def test_the_report_files_are_written_as_a_set(tmp_path):
    base = api.load_scenario(SMALL, days=1)
    variant = api.load_scenario(SMALL, [f"{WINDOW}=90", "name=window_90"], days=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "compare.json").write_text("an earlier report", encoding="utf-8")
    (out / "compare.html").mkdir()  # cannot be replaced: neither is anything else
    with pytest.raises(IsADirectoryError):
        api.compare(base, [variant], replications=1, out_dir=out)
    assert (out / "compare.json").read_text(encoding="utf-8") == "an earlier report"
    assert sorted(p.name for p in out.iterdir()) == ["compare.html", "compare.json"]
    (out / "compare.html").rmdir()
    api.compare(base, [variant], replications=1, out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["compare.html", "compare.json", "compare.md"]
    assert api.load_compare_report(out / "compare.json")["baseline"] == "small_ci"


# --- policies that extend policies ------------------------------------------------------------
