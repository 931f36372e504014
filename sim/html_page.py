"""The shell of CardTwin's self-contained HTML reports (the compare report, the sweep page).

A page opens without a network: plotly.js is inlined once in the head and every chart is a
plotly div with a fixed id, so the same content gives the same bytes (no timestamps, no random
ids). Both languages are on a page, Chinese first, with the English beside it in ``.en``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
TEMPLATE = "plotly_white"

_CSS = """
body { font-family: "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif;
       margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td, tr.failed td { background: #fde0dd; }
p.en, span.en { color: #555; }
.chart { min-height: 420px; margin: 1em 0; }
"""


def esc(text: object) -> str:
    """``text`` escaped for HTML (also inside attribute values)."""
    return html.escape(str(text), quote=True)


def page(title: str, body: Sequence[str]) -> str:
    """A whole page: the head (title, style, plotly.js inline) and ``body``'s HTML parts."""
    from plotly.offline import get_plotlyjs  # here: plotly is heavy and only pages need it

    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="zh-CN">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{esc(title)}</title>",
            f"<style>{_CSS}</style>",
            # plotly.js once, inline: the page needs no network to draw its charts
            f'<script type="text/javascript">{get_plotlyjs()}</script>',
            "</head>",
            "<body>",
            f"<h1>{esc(title)}</h1>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


def chart(figure, div_id: str, top_margin: int = 80) -> str:
    """A plotly figure as a div with the fixed id ``div_id`` (the head has plotly.js)."""
    figure.update_layout(template=TEMPLATE, margin={"t": top_margin, "b": 60, "l": 60, "r": 20})
    body = figure.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG
    )
    return f'<div class="chart">{body}</div>'


def facts(items: Sequence[tuple[str, str, object]]) -> str:
    """A two-column table of (Chinese label, English label, value) rows."""
    rows = "".join(
        f"<tr><th>{esc(zh)} <span class='en'>{esc(en)}</span></th><td>{esc(v)}</td></tr>"
        for zh, en, v in items
    )
    return f"<table>{rows}</table>"
