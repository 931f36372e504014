"""Uploaded scenario files: checked for size, YAML and shape, validated by the engine, and kept
in ``scenarios/uploads/`` beside the shipped scenarios (so ``extends: ../nantong_2024.yaml``
means what it means in a shipped policy overlay)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dashboard import i18n
from sim import api

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_DIR = ROOT / "scenarios" / "uploads"
MAX_UPLOAD_BYTES = 512 * 1024


def target_of(name: str) -> Path:
    """Where an upload called ``name`` is kept (a safe file name)."""
    stem = re.sub(r"[^\w-]+", "_", Path(name).stem).strip("_") or "uploaded"
    return UPLOAD_DIR / f"{stem}.yaml"


def upload_problem(name: str, data: bytes, lang: str = "en") -> str | None:
    """What is wrong with an uploaded scenario file (None: it is a valid scenario, now saved
    at ``target_of(name)``). A file that fails is not kept."""
    if len(data) > MAX_UPLOAD_BYTES:
        return i18n.t(
            "run.upload_too_large", lang, name=name, size=len(data) // 1024,
            limit=MAX_UPLOAD_BYTES // 1024,
        )  # fmt: skip
    try:
        content = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        return i18n.t("run.upload_not_yaml", lang, name=name, error=" ".join(str(exc).split()))
    if not isinstance(content, dict):
        return i18n.t("run.upload_not_mapping", lang, name=name)
    target = target_of(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Validated under a hidden name beside its final place (relative paths resolve the same),
    # and only then put in place: a bad upload never replaces a good one.
    trial = target.with_name(f".trial-{target.name}")
    trial.write_bytes(data)
    try:
        api.load_scenario(trial)
    except api.BadInput as exc:
        trial.unlink(missing_ok=True)
        return i18n.t(
            "run.upload_invalid", lang, name=name, error=str(exc).replace(str(trial), name)
        )
    trial.replace(target)
    return None
