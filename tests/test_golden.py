"""Golden-file regression: a small scenario's outputs match the checked-in summary.

If this fails after an intended change, regenerate with `python tests/golden_summary.py --update`
and review the diff of tests/golden/small_ci_3days.json.
"""

from __future__ import annotations

import json

from golden_summary import GOLDEN, run_small


def test_small_scenario_matches_golden_file(tmp_path):
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    actual = json.loads(json.dumps(run_small(tmp_path / "run"), ensure_ascii=False))
    for section in expected:
        assert actual[section] == expected[section], section
    assert set(actual) == set(expected)
