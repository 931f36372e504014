"""The dashboard for readers of English as well as Chinese: one copy of the number formats for
the pages and the lab's reports, the estimate mark that leaves a zero alone, outlet and
institution names in English, and the compare brief's estimates marked as the run brief's are.
"""

from __future__ import annotations

import math

import pytest

import sim.lab_report
from dashboard import i18n
from sim import formats

# --- one copy of the formats ------------------------------------------------------------------


def test_the_dashboard_and_the_lab_reports_format_with_one_copy():
    """The dashboard's formats are sim/formats.py's own (not a copy), and the lab's report
    texts write through them too: no Babel of its own."""
    for name in ("count", "yuan", "percent", "date", "time_of_day", "estimate", "LOCALES"):
        assert getattr(i18n, name) is getattr(formats, name), name
    assert not [n for n in vars(sim.lab_report) if n.startswith("format_")]
    assert sim.lab_report.money_text(2_648_343.4, "zh") == "2.65万元"
    assert sim.lab_report.money_text(114_998.2, "en") == "¥1,149.98"
    assert sim.lab_report.count_text(1_140_313.6, "zh") == "114.03万"
    assert sim.lab_report.count_text(1_140_313.6, "en") == "1,140,314"


# --- the estimate mark ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text", "lang", "estimated", "shown"),
    [
        (1200, "1,200", "en", True, "≈ 1,200"),
        (1200, "1,200", "zh", True, "约1,200"),
        (-5, "¥-0.05", "en", True, "≈ ¥-0.05"),
        (1200, "1,200", "en", False, "1,200"),
        (0, "0", "en", True, "0"),  # nothing expands to nothing
        (0.0, "0.00 元", "zh", True, "0.00 元"),
        (None, "–", "en", True, "–"),  # no figure
        (math.nan, "–", "zh", True, "–"),
    ],
)
def test_an_estimate_is_marked_but_never_a_zero(value, text, lang, estimated, shown):
    assert i18n.estimate(value, text, lang, estimated) == shown
