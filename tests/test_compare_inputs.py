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
from streamlit.testing.v1 import AppTest

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


def test_a_variant_of_other_days_or_seed_is_refused_naming_its_file_field_and_values(tmp_path):
    variant = _overlay(
        tmp_path / "two_days.yaml", f"extends: {SMALL}\nname: two_days\nperiod: {{days: 2}}\n"
    )
    result = _compare_cli(SMALL, variant, "--replications", 1, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        f"variant {variant}: period.days: 2 in the variant, 7 in the baseline; expected the "
        f"baseline {SMALL}'s" in result.stderr
    )
    assert not (tmp_path / "out").exists()
    base = api.load_scenario(SMALL, days=1)
    reseeded = api.load_scenario(SMALL, ["seed=8", "name=reseeded"], days=1)
    with pytest.raises(api.BadInput) as caught:
        api.compare(base, [reseeded], replications=1)
    assert "variant reseeded: seed: 8 in the variant, 20240101 in the baseline; " in str(
        caught.value
    )
    assert "world_seed: 8 in the variant, 20240101 in the baseline" in str(caught.value)


def test_a_policy_of_the_full_size_city_is_refused_against_the_small_one():
    base = api.load_scenario(SMALL, days=1)
    policy = ROOT / "scenarios" / "policies" / "fare_rise_10pct.yaml"
    full = api.load_scenario(policy, days=1)
    with pytest.raises(api.BadInput) as caught:
        api.compare(base, [full], replications=1, sources=[SMALL, policy])
    message = str(caught.value)
    assert message.startswith(
        f"variant {policy}: population.card_types.longevity.count: 759000 in the variant, 8920 "
        "in the baseline;"
    )
    assert "sim.api.load_policy" in message


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.stem)
def test_every_shipped_policy_shares_the_world_of_its_baseline(policy):
    """On Nantong (its own file) and on the small city (applied as overrides): only the policy
    differs, so the check lets every shipped overlay through (population.concession_ages, the
    free-ride age, is a policy)."""
    api.check_comparable(api.load_scenario(NANTONG, days=1), [api.load_scenario(policy, days=1)])
    small = api.load_scenario(SMALL, days=1)
    api.check_comparable(small, [api.load_policy(policy, SMALL, days=1)])


def test_the_dashboard_shows_why_a_variant_is_refused(tmp_path, monkeypatch):
    """The Compare page's own variant with another seed: api.compare's message on the page."""
    monkeypatch.setenv("CARDTWIN_RUNS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.session_state["runs_root"] = str(tmp_path)
    at.run()
    at.switch_page("views/compare.py")
    at.run()
    at.selectbox(key="compare.f_base").select(str(SMALL))
    at.text_area(key="compare.f_custom").input("seed=8")
    at.number_input(key="compare.f_days").set_value(1)
    next(b for b in at.button if b.label == "开始比较").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("seed: 8 in the variant, 20240101 in the baseline" in e.value for e in at.error)
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written


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


def test_a_run_folder_is_no_place_for_a_comparison_or_a_sweep(tmp_path):
    """Reports written into a run's folder made a later run into it refuse the folder."""
    run_dir = tmp_path / "run"
    api.run(api.load_scenario(SMALL, days=1), run_dir)
    before = sorted(p.name for p in run_dir.iterdir())
    for out, how in ((run_dir, "is the run folder"), (run_dir / "cmp", "is inside the run folder")):
        result = _compare_cli(SMALL, SMALL, "--days", 1, "--replications", 1, "--out", out)
        assert result.returncode == 2 and how in result.stderr, result.stderr
    with pytest.raises(api.BadInput, match="is the run folder"):
        api.sweep(SMALL, [f"{WINDOW}=60,90"], days=1, workers=0, out_dir=run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == before


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


def test_a_policy_extending_a_policy_brings_the_settings_of_both(tmp_path):
    first = _overlay(
        tmp_path / "p1.yaml",
        f"extends: {NANTONG}\nname: p1\nfares: {{bus: {{region_fare_fen: {{urban: 220}}}}}}\n"
        f"output: {{dir: runs/p1}}\n",
    )
    second = _overlay(
        tmp_path / "p2.yaml",
        f"extends: {first.name}\nname: p2\nfares: {{transfer: {{window_min: 90}}}}\n",
    )
    small = api.load_scenario(SMALL)
    applied = api.load_policy(second, SMALL)
    assert applied.name == "p2"
    assert applied.fares.bus.region_fare_fen["urban"] == 220  # p1's
    assert applied.fares.transfer.window_min == 90  # p2's
    assert applied.fares.bus.region_fare_fen["rudong"] == small.fares.bus.region_fare_fen["rudong"]
    assert applied.population == small.population and applied.period == small.period
    assert applied.output == small.output  # output: is the file's, not the policy's
    # On the base of its chain it is its own file, as extends: reads it.
    assert api.load_policy(second, NANTONG) == api.load_scenario(second)
    # A chain through the baseline itself: the policy's file, read as extends: does.
    third = _overlay(tmp_path / "p3.yaml", f"extends: {first.name}\nname: p3\n")
    first.write_text(first.read_text("utf-8").replace(str(NANTONG), str(SMALL)), "utf-8")
    assert api.load_policy(third, SMALL) == api.load_scenario(third)
    assert api.load_policy(third, SMALL).fares.bus.region_fare_fen["urban"] == 220


def test_a_policy_chain_that_cannot_be_read_is_bad_input_naming_the_file(tmp_path):
    loop = _overlay(tmp_path / "loop.yaml", "extends: loop2.yaml\nname: loop\n")
    _overlay(tmp_path / "loop2.yaml", "extends: loop.yaml\n")
    with pytest.raises(api.BadInput, match="loop2.yaml: extends: a cycle"):
        api.load_policy(loop, SMALL)
    lost = _overlay(tmp_path / "lost.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(api.BadInput, match=f"{lost}: extends: file not found: .*nowhere.yaml"):
        api.load_policy(lost, SMALL)


def test_replications_past_the_largest_seed_are_bad_input_before_anything_runs(tmp_path):
    top = tmp_path / "top.yaml"
    top.write_text(f"extends: {SMALL}\nname: top\nseed: {2**64 - 1}\n", encoding="utf-8")
    with pytest.raises(api.BadInput, match="past the largest seed"):
        api.compare(api.load_scenario(top, days=1), [], replications=2)
    with pytest.raises(api.BadInput, match="past the largest seed"):
        api.sweep(top, [f"{WINDOW}=60,90"], days=1, replications=2, workers=0)
