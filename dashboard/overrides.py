"""The Run page's form as engine overrides, and the engine's answer back to the form's fields.

Each form field becomes a ``FlagOverride`` named after the field, so ``sim.api.load_scenario``
validates it like a ``--set`` and its message names the field: ``errors_by_field`` hands each
line of that message to the field it belongs to.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import yaml

from dashboard import i18n
from sim.incidents import KINDS as INCIDENT_KINDS
from sim.yaml_config import FlagOverride

INCIDENT_COLUMNS = ("id", "kind", "start", "duration_min", "target")


def fen_text(yuan: float) -> str:
    """Yuan typed in a form as integer fen text (2.345 is not a price: the engine says so)."""
    fen = yuan * 100
    return str(round(fen)) if math.isclose(fen, round(fen), abs_tol=1e-6) else repr(fen)


def incident_frame(base) -> pd.DataFrame:
    """The scenario's incident timeline as an editable table: the common columns first, then
    every other field some incident uses (so editing one row keeps the others' settings).
    Number fields stay numbers; nested ones (a fare change's fares) are shown as JSON text."""
    rows = [inc.model_dump(mode="json", exclude_none=True) for inc in (base.incidents or [])]
    extra = sorted({k for row in rows for k in row} - set(INCIDENT_COLUMNS))
    columns = [*INCIDENT_COLUMNS, *extra]
    values = {c: [row[c] for row in rows if c in row] for c in columns}
    numbers = {c for c, v in values.items() if v and all(_is_number(x) for x in v)}
    numbers.add("duration_min")
    nested = {c for c, v in values.items() if any(isinstance(x, dict | list) for x in v)}
    for row in rows:
        for c in nested & set(row):
            row[c] = json.dumps(row[c], ensure_ascii=False)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype(
        {c: ("Int64" if c == "duration_min" else "Float64" if c in numbers else "string")
         for c in columns}
    )  # fmt: skip


# The incident table's common columns share the Explore timeline's headings; the others are
# headed by ``run.incident.col.<field>``.
INCIDENT_LABELS = {
    "id": "explore.incident.col.id",
    "kind": "explore.incident.col.kind",
    "start": "explore.incident.col.start",
    "target": "explore.incident.col.target",
}


def incident_columns(frame: pd.DataFrame, lang: str) -> dict:
    """How the incident table's columns are shown in ``lang``: every field headed in words
    from the catalogue (``run.incident.col.<field>`` for those only some kinds use), its
    scenario name in the column's help, as the engine's messages name it; the kind chosen from
    the engine's kinds and shown in words (the cell keeps the engine's code, which the YAML
    needs). A field the catalogue lacks keeps its scenario name (a test holds it complete)."""
    import streamlit as st

    def heading(column: str) -> str:
        key = INCIDENT_LABELS.get(column, f"run.incident.col.{column}")
        return i18n.t(key, lang) if i18n.has(key) else column

    config: dict = {}
    for column in frame.columns:
        about = i18n.t("run.incident.field", lang, field=f"incidents[].{column}")
        if column == "kind":
            config[column] = st.column_config.SelectboxColumn(
                heading(column),
                help=about,
                options=list(INCIDENT_KINDS),
                format_func=lambda kind: f"{i18n.code_label('incident_kind', kind, lang)} ({kind})",
            )
        else:
            config[column] = st.column_config.Column(heading(column), help=about)
    return config


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def incidents_yaml(frame: pd.DataFrame) -> str:
    """The edited incident rows as a YAML list (empty cells left out, so the engine names a
    missing required field)."""
    rows = []
    for record in frame.to_dict("records"):
        row = {k: v for k, v in record.items() if v is not None and not pd.isna(v) and v != ""}
        if row:
            rows.append({k: _cell(k, v) for k, v in row.items()})
    # One line: the engine quotes the value in its messages, one message per line.
    return yaml.safe_dump(rows, allow_unicode=True, default_flow_style=True, width=math.inf).strip()


def _cell(column: str, value: object) -> object:
    """A cell as the engine reads it: whole minutes, numbers as numbers, JSON text of a nested
    field as what it says, any other text as text (a description "12:30" stays text)."""
    if column == "duration_min":
        return int(value)
    if _is_number(value):
        return int(value) if float(value).is_integer() else float(value)
    text = str(value)
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            return text  # the engine names the field and what it expected
    return text


def errors_by_field(message: str, overrides: list[FlagOverride]) -> dict[str, list[str]]:
    """The engine's message split by the form field each line came from (the engine names the
    override: "from <field> <value>: <path>: <problem>"); lines from the file itself go under
    "scenario"."""
    found: dict[str, list[str]] = {}
    for line in (raw.strip() for raw in message.splitlines()):
        for override in overrides:
            prefix = f"from {override.flag} "
            start = line.find(f": {override.path}", len(prefix))
            if line.startswith(prefix) and start >= 0:
                # shown beside its field: the path and the problem say enough
                found.setdefault(override.flag, []).append(line[start + 2 :])
                break
        else:
            found.setdefault("scenario", []).append(line)
    return found
