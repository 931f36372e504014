"""Cases shared by the policy-lab tests (tests/test_lab.py, tests/test_lab_html.py): the small
scenario with the elderly off-peak policy."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
OFFPEAK = ROOT / "scenarios" / "policies" / "elderly_offpeak.yaml"


def small_offpeak_overlay(folder: Path) -> Path:
    """The elderly off-peak policy as an overlay of the small scenario (its ``fares:`` only)."""
    concessions = OFFPEAK.read_text(encoding="utf-8").split("fares:", 1)[1].split("output:")[0]
    overlay = folder / "small_offpeak.yaml"
    overlay.write_text(
        f"extends: {SMALL}\nname: small_offpeak\nfares:{concessions}", encoding="utf-8"
    )
    return overlay
