"""A policy overlay applied to another base scenario.

A policy file in ``scenarios/policies/`` ``extends:`` one base (Nantong) and holds only the
settings it changes; it may also extend another policy, which extends the base (a chain). To try
the same policy on another base (the small test city, say), the settings of every overlay of the
chain, the root base's aside, are merged as ``extends:`` merges them (mappings key by key, the
nearer file winning; lists and scalars replaced whole) and become ``--set`` overrides of that
base, which is what ``extends:`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

NOT_POLICY = ("extends", "name", "description", "output")  # the file's, not the policy's


class OverlayError(ValueError):
    """The policy file cannot be read as an overlay (names the file)."""


@dataclass(frozen=True)
class Overlay:
    """A policy overlay: its name, its file and every file it extends in turn (resolved; the
    last one, which extends nothing, is the root base), and the settings of the chain's
    overlays as ``--set`` overrides."""

    name: str
    files: tuple[Path, ...]
    overrides: list[str]


def read_overlay(policy: Path) -> Overlay:
    """The overlay of ``policy``: the settings of the policy file and of every file it extends
    up to the root base (that one's own settings are the base's, so left out; a file that
    extends nothing is taken whole). OverlayError naming the file if one cannot be read."""
    chain: list[tuple[Path, dict]] = []
    path = policy
    while True:
        resolved = path.resolve()
        if resolved in [p for p, _ in chain]:
            cycle = " -> ".join(str(p) for p in [*(p for p, _ in chain), resolved])
            raise OverlayError(f"{chain[-1][0]}: extends: a cycle: {cycle}")
        data = _read(path)
        chain.append((resolved, data))
        extends = data.get("extends")
        if extends is None:
            break
        if not isinstance(extends, str) or not extends.strip():
            raise OverlayError(f"{path}: extends: expected a file name (string); got {extends!r}")
        path = path.parent / extends
        if not path.is_file():
            raise OverlayError(f"{chain[-1][0]}: extends: file not found: {path.resolve()}")
    overlays = chain if len(chain) == 1 else chain[:-1]
    settings: dict = {}
    for _, data in reversed(overlays):  # from the root's side: the policy file's own win
        settings = _merge(settings, {k: v for k, v in data.items() if k not in NOT_POLICY})
    name = str(chain[0][1].get("name") or policy.stem)
    return Overlay(name, tuple(p for p, _ in chain), _leaves(settings, ""))


def overlay_overrides(policy: Path) -> tuple[str, Path | None, list[str]]:
    """A policy overlay's name, the file it extends (resolved; None if it extends nothing) and
    the settings of its chain of overlays (``read_overlay``) as ``--set`` overrides: nested
    mappings down to their leaves, every other value (a list, a number, text) whole."""
    overlay = read_overlay(policy)
    parent = overlay.files[1] if len(overlay.files) > 1 else None
    return overlay.name, parent, overlay.overrides


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise OverlayError(f"{path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise OverlayError(f"{path}: expected a mapping of scenario settings")
    return data


def _merge(base: dict, overlay: dict) -> dict:
    """``extends:``'s merge (sim/yaml_config.py): mappings key by key, the overlay winning;
    everything else replaced whole."""
    merged = dict(base)
    for key, value in overlay.items():
        old = merged.get(key)
        merged[key] = (
            _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return merged


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
