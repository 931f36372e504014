"""Scenario files tests write for themselves: the two-city scenario with incidents in alpha."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TWO_CITY = ROOT / "scenarios" / "two_city.yaml"
TWO_CITY_DIR = ROOT / "scenarios" / "two_city"


def two_city_with_alpha_incidents(folder: Path, incidents: list[dict]) -> Path:
    """A copy of ``scenarios/two_city.yaml`` in ``folder`` whose city alpha has ``incidents``
    (as a scenario's ``incidents:``); returns the multi-city file."""
    alpha = folder / "alpha.yaml"
    alpha.write_text(
        f"extends: {TWO_CITY_DIR / 'alpha.yaml'}\n"
        + yaml.safe_dump({"incidents": incidents}, allow_unicode=True),
        encoding="utf-8",
    )
    text = TWO_CITY.read_text(encoding="utf-8").replace("two_city/alpha.yaml", str(alpha))
    path = folder / "two_city_incidents.yaml"
    path.write_text(text.replace("two_city/", f"{TWO_CITY_DIR}/"), encoding="utf-8")
    return path
