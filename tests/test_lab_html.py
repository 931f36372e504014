"""The compare's HTML page (sim/lab_html.py): self-contained (no network), the same bytes from the
same seeds, the headline numbers and the summary in both languages, text escaped."""

from __future__ import annotations

import copy
import html

import pytest
from lab_cases import SMALL, small_offpeak_overlay
from plotly.offline import get_plotlyjs

from sim.api import compare, load_compare_report, load_scenario
from sim.lab_html import render
from sim.lab_report import summary

VARIANT = "small_offpeak"


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The off-peak compare written twice, from the same seeds, into two folders; the report,
    both pages and the first folder."""
    root = tmp_path_factory.mktemp("lab_html")
    base = load_scenario(SMALL, days=5)
    variant = load_scenario(small_offpeak_overlay(root), days=5)
    texts = []
    for folder in ("a", "b"):
        report = compare(base, [variant], replications=3, out_dir=root / folder)
        texts.append((root / folder / "compare.html").read_bytes())
    return report, texts, root / "a"


def test_same_seeds_give_the_same_bytes(pages):
    _, (first, second), _ = pages
    assert first == second


def test_the_page_is_a_function_of_the_stored_report(pages):
    """compare.json holds everything the page shows: rendering it again gives the same page."""
    _, (page, _), folder = pages
    text = (folder / "compare.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: null stands for them
    stored = load_compare_report(folder / "compare.json")
    assert render(stored).encode("utf-8") == page


def test_the_page_needs_no_network(pages):
    _, (page, _), _ = pages
    text = page.decode("utf-8")
    library = get_plotlyjs()
    assert text.count(library) == 1  # plotly.js inlined once
    assert "<script src" not in text and "<link" not in text
    # Outside the library's own source (which names map-tile servers it never calls here),
    # the page refers to nothing on the network.
    rest = text.replace(library, "")
    assert "http://" not in rest and "https://" not in rest
    for div in ("v0-groups-fare_revenue_fen", "v0-hours", "v0-hours-groups", "v0-fairness"):
        assert f'id="{div}"' in rest


def test_the_page_holds_the_headline_numbers_and_both_summaries(pages):
    report, (page, _), _ = pages
    text = page.decode("utf-8")
    rows = report["variants"][VARIANT]
    for measure in ("fare_revenue_fen", "concession_cost_fen", "clearing_fees_fen"):
        r = rows[measure]
        assert f">{r['baseline'] / 100:,.2f}<" in text  # money in yuan, two decimals
        assert f">{r['difference']['mean'] / 100:+,.2f}<" in text
    assert f">{rows['operator_income_fen']['variant'] / 100:,.2f}<" in text
    assert f">{rows['boardings']['baseline']:,.0f}<" in text
    moved = report["trips_moved"][VARIANT]["total"]["mean"]
    assert moved > 0 and f">{moved:,.0f}<" in text
    zh = html.escape(summary(report, VARIANT, "zh"))
    en = html.escape(summary(report, VARIANT, "en"))
    assert zh in text and en in text and text.index(zh) < text.index(en)  # Chinese first
    assert "谁受益、谁负担" in text and "Who gains and who pays" in text
    assert "涨价负担偏重 large share of the increase" in text  # the flagged 长寿卡 row


def test_text_is_escaped():
    """A scenario name is data: it is shown, never run."""
    report = {
        "baseline": "base<script>alert(1)</script>",
        "variants": {},
        "seeds": {"base": [1]},
        "days": 1,
        "replications": 1,
        "pairing": "common random numbers",
        "fairness_threshold": 0.2,
    }
    page = render(copy.deepcopy(report))
    assert "<script>alert(1)</script>" not in page
    assert "base&lt;script&gt;alert(1)&lt;/script&gt;" in page
