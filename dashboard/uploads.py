"""Uploaded scenario files: checked for size, YAML and shape, validated by the engine, and kept
in ``scenarios/uploads/`` beside the shipped scenarios (so ``extends: ../nantong_2024.yaml``
means what it means in a shipped policy overlay)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml

from dashboard import i18n
from sim import api

ROOT = Path(__file__).resolve().parent.parent
UPLOAD_DIR = ROOT / "scenarios" / "uploads"
#: The largest scenario file the Run page takes, in whole megabytes: what its upload box is
#: given (``st.file_uploader(max_upload_size=...)`` takes whole megabytes only), what Streamlit
#: states under the box ("1MB per file") and what ``upload_problem`` enforces. One number, so
#: the page never states two limits.
UPLOAD_LIMIT_MB = 1
#: The same limit in bytes. Streamlit's browser side counts a megabyte as 1,000,000 bytes
#: (1,048,576 on Windows) and refuses a bigger file itself; its server counts 1,048,576. The
#: smallest of these is held here, so a file the page would call larger than 1 MB is refused
#: however it came (a Windows browser, a script, AppTest), with a message naming it.
MAX_UPLOAD_BYTES = UPLOAD_LIMIT_MB * 1_000_000


def target_of(name: str) -> Path:
    """Where an upload called ``name`` is kept (a safe file name)."""
    stem = re.sub(r"[^\w-]+", "_", Path(name).stem).strip("_") or "uploaded"
    return UPLOAD_DIR / f"{stem}.yaml"


def upload_problem(name: str, data: bytes, lang: str = "en") -> str | None:
    """What is wrong with an uploaded scenario file (None: it is a valid scenario, now saved
    at ``target_of(name)``). A file that fails is not kept."""
    if len(data) > MAX_UPLOAD_BYTES:
        # Sizes in whole bytes (with separators): a file one byte over would read "1.00 MB"
        # next to a limit of 1 MB in any rounded unit.
        return i18n.t(
            "run.upload_too_large", lang, name=name, size=f"{len(data):,}",
            limit=UPLOAD_LIMIT_MB, limit_bytes=f"{MAX_UPLOAD_BYTES:,}",
        )  # fmt: skip
    try:
        content = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        return i18n.t("run.upload_not_yaml", lang, name=name, error=" ".join(str(exc).split()))
    except RecursionError:  # nested deeper than the parser goes: no scenario is
        return i18n.t("run.upload_not_yaml", lang, name=name, error="nested too deeply")
    if not isinstance(content, dict):
        return i18n.t("run.upload_not_mapping", lang, name=name)
    target = target_of(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Validated under a hidden name beside its final place (relative paths resolve the same),
    # and only then put in place: a bad upload never replaces a good one. The hidden name is
    # the upload's own (``trial_files``): two sessions uploading the same file name at once
    # each validate their own bytes.
    handle, trial_name = tempfile.mkstemp(
        dir=target.parent, prefix=".trial-", suffix=f".{target.name}"
    )
    trial = Path(trial_name)
    try:
        os.fchmod(handle, 0o644)  # as the shipped scenarios (mkstemp makes it the owner's only)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        try:
            api.load_scenario(trial)
        except api.BadInput as exc:
            return i18n.t(
                "run.upload_invalid", lang, name=name, error=str(exc).replace(str(trial), name)
            )
        trial.replace(target)
        return None
    finally:
        trial.unlink(missing_ok=True)  # whatever stopped it (once in place, it is gone)


def trial_files(name: str) -> list[Path]:
    """Hidden files of uploads called ``name`` still being validated (none once
    ``upload_problem`` has returned)."""
    # The random part and a kept name hold no dot: ".trial-*.a.yaml" is never b_a.yaml's.
    return sorted(UPLOAD_DIR.glob(f".trial-*.{target_of(name).name}"))
