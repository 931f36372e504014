"""What a dashboard page drawn by Streamlit's AppTest shows in its charts, for the page tests."""

from __future__ import annotations

import json
import re

#: A Chinese character: what an English page should not show.
CJK = re.compile(r"[\u3400-\u9fff]")


def chart_texts(at, kind: str) -> list[list[str]]:
    """The category labels (bars: y; map: text; heat map: y) of the page's charts of ``kind``."""
    found = []
    for chart in at.get("plotly_chart"):
        for trace in json.loads(chart.proto.spec)["data"]:
            if trace.get("type") == kind:
                labels = trace.get("text") or trace.get("y") or []
                found.append([labels] if isinstance(labels, str) else [str(v) for v in labels])
    return found
