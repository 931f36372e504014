"""Charts on the pages: interactive plotly figures, each with a button that downloads the data
behind it as CSV (what a planner pastes into a spreadsheet)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard.state import tr

FONT = "Microsoft YaHei, WenQuanYi Micro Hei, Noto Sans CJK SC, sans-serif"


def style(fig: go.Figure, title: str, x: str | None = None, y: str | None = None) -> go.Figure:
    """The dashboard's look: title, axis titles, CJK-capable font, compact margins."""
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        font={"family": FONT, "size": 13},
        margin={"l": 10, "r": 10, "t": 48, "b": 10},
        legend={"orientation": "h", "y": -0.18},
        template="plotly_white",
        height=380,
    )
    if x is not None:
        fig.update_xaxes(title_text=x)
    if y is not None:
        fig.update_yaxes(title_text=y)
    return fig


def by_date(fig: go.Figure) -> go.Figure:
    """An x axis of service dates: one tick per day, not plotly's hours of a short run."""
    fig.update_xaxes(tickformat="%Y-%m-%d", dtick=86_400_000)
    return fig


def show(fig: go.Figure, data: pd.DataFrame, key: str) -> None:
    """Draw ``fig`` and offer ``data`` (what it plots) as a CSV download under it."""
    st.plotly_chart(fig, key=f"chart-{key}", width="stretch")
    download(data, key)


def download(data: pd.DataFrame, key: str) -> None:
    """A button that downloads ``data`` as ``<key>.csv`` (UTF-8 with BOM)."""
    st.download_button(
        tr("common.download_csv"),
        data.to_csv(index=False).encode("utf-8-sig"),  # the BOM lets Excel read Chinese text
        file_name=f"{key}.csv",
        mime="text/csv",
        key=f"csv-{key}",
        icon=":material/download:",
        on_click="ignore",  # a download needs no rerun of the page
    )
