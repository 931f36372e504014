"""A policy overlay applied to another base scenario.

A policy file in ``scenarios/policies/`` ``extends:`` one base (Nantong) and holds only the
settings it changes. To try the same policy on another base (the small test city, say), its own
settings become ``--set`` overrides of that base, which is what ``extends:`` does: mappings
merge key by key, lists and scalars are replaced whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

NOT_POLICY = ("extends", "name", "description", "output")  # the file's, not the policy's


class OverlayError(ValueError):
    """The policy file cannot be read as an overlay (names the file)."""


def overlay_overrides(policy: Path) -> tuple[str, Path | None, list[str]]:
    """A policy overlay's name, the file it extends (resolved; None if it extends nothing) and
    its own settings as ``--set`` overrides: nested mappings down to their leaves, every other
    value (a list, a number, text) whole."""
    try:
        data = yaml.safe_load(policy.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise OverlayError(f"{policy}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise OverlayError(f"{policy}: expected a mapping of scenario settings")
    extends = data.get("extends")
    parent = (policy.parent / extends).resolve() if isinstance(extends, str) else None
    own = {k: v for k, v in data.items() if k not in NOT_POLICY}
    return str(data.get("name") or policy.stem), parent, _leaves(own, "")


def _leaves(mapping: dict, prefix: str) -> list[str]:
    out = []
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        nested = isinstance(value, dict) and value and all(_plain_key(k) for k in value)
        if nested:
            out += _leaves(value, f"{path}.")
        else:  # JSON is YAML: the loader reads the value back as it was written
            out.append(f"{path}={json.dumps(value, ensure_ascii=False, default=str)}")
    return out


def _plain_key(key: object) -> bool:
    """A key a ``--set`` path can name (no dots or equals signs in it)."""
    return isinstance(key, str) and key != "" and not set(key) & {".", "="}
