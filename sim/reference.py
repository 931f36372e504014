"""The reference prices of a scenario: what its riders are used to paying.

A policy overlay (``extends: ../nantong_2024.yaml``) changes prices against a base. The riders'
reference is the base they are used to: the pricing of the *root* of the ``extends:`` chain (the
file that extends nothing), as that file writes it, without ``--set`` overrides. Pricing is more
than the ``fares:`` section: which card type a holder has (``population.concession_ages``) and
whether visitors' cards get local concessions (``interop.visitor_concessions``) decide the price
too, so those are part of the reference.

For the base scenario itself (no ``extends:``, no ``--set`` of these fields) the reference is its
own pricing, and ``Scenario.reference`` is None: the behavioural response has nothing to react to.
A ``--set fares...`` override of a base is a price change against the base file, like an overlay.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from sim.fare_rules import FareRules
from sim.yaml_config import FAST_SAFE_LOADER, FlagOverride, load_config

if TYPE_CHECKING:
    from sim.scenario import Scenario


class ReferencePricing(BaseModel):
    """The base scenario's pricing: its fares, its age-based card types and visitor treatment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="The base file (root of the extends: chain).")
    fares: FareRules = Field(description="The base's fares section.")
    concession_ages: dict[str, int] = Field(
        default_factory=dict, description="The base's population.concession_ages."
    )
    visitor_concessions: Literal["none", "local"] = Field(
        "none", description="The base's interop.visitor_concessions."
    )


class _Ignoring(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _AgesView(_Ignoring):
    concession_ages: dict[str, int] = {}


class _InteropView(_Ignoring):
    visitor_concessions: Literal["none", "local"] = "none"


class _PricingView(_Ignoring):
    """The pricing sections of a scenario file; the rest is ignored (a base of several cities
    need not be a complete scenario)."""

    fares: FareRules | None = None
    population: _AgesView = _AgesView()
    interop: _InteropView | None = None


# The sections the reference compares besides fares: (section, its field the view reads).
PRICING_FIELDS = {"population": "concession_ages", "interop": "visitor_concessions"}


def extends_chain(path: str | Path) -> list[tuple[Path, dict]]:
    """The files of ``path``'s ``extends:`` chain, ``path`` first and the root last, each with
    its content (read with the fast parser: no line numbers needed). The chain was checked by
    the loader (files exist, no cycles)."""
    path, seen, chain = Path(path), set(), []
    while path.resolve() not in seen:
        seen.add(path.resolve())
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=FAST_SAFE_LOADER)
        data = data if isinstance(data, dict) else {}
        chain.append((path, data))
        target = data.get("extends")
        if not isinstance(target, str):
            break
        path = path.parent / target
    return chain


def _writes_pricing(data: dict) -> bool:
    """Whether a scenario file's content sets a section the reference compares."""
    return any(_touches_pricing(path) for path in _leaf_paths(data, ""))


def _leaf_paths(data: dict, prefix: str) -> list[str]:
    out = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        out += _leaf_paths(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return out


def _touches_pricing(override: str | FlagOverride) -> bool:
    """Whether an override (or a file's setting, as a dotted path) can change what the
    reference compares: fares, concession ages, visitor treatment."""
    text = override.path if isinstance(override, FlagOverride) else override.partition("=")[0]
    parts = [p.strip() for p in text.split(".")]
    if parts[0] == "fares":
        return True
    inner = PRICING_FIELDS.get(parts[0])
    return inner is not None and (len(parts) == 1 or parts[1] == inner)


def own_pricing(scenario: Scenario, source: str) -> ReferencePricing:
    """A scenario's own pricing, in the reference's form."""
    interop = scenario.interop
    return ReferencePricing(
        source=source,
        fares=scenario.fares,
        concession_ages=dict(scenario.population.concession_ages),
        visitor_concessions=interop.visitor_concessions if interop is not None else "none",
    )


def with_reference(
    scenario: Scenario, path: str | Path, overrides: Sequence[str | FlagOverride] = ()
) -> Scenario:
    """``scenario`` (loaded from ``path`` with ``overrides``) with ``reference`` set to its
    base's pricing, or None when that is its own (or the base has no ``fares:``). Raises
    ConfigError (file, line, field) if the base's pricing sections are invalid."""
    chain = extends_chain(path)
    root = chain[-1][0]
    changed = any(_touches_pricing(o) for o in overrides) or any(
        _writes_pricing(data) for _, data in chain[:-1]
    )
    if not changed:
        # Neither an overlay above the root nor an override sets a price: the scenario's
        # pricing is its base's, so there is no base to load again (a second, slow parse).
        return scenario.model_copy(update={"reference": None})
    view = load_config(root, _PricingView)
    if view.fares is None:  # a base that leaves the fares to its overlays: nothing to compare
        return scenario.model_copy(update={"reference": None})
    base = ReferencePricing(
        source=str(root),
        fares=view.fares,
        concession_ages=dict(view.population.concession_ages),
        visitor_concessions=view.interop.visitor_concessions if view.interop else "none",
    )
    same = base.model_dump(exclude={"source"}) == own_pricing(scenario, "").model_dump(
        exclude={"source"}
    )
    return scenario.model_copy(update={"reference": None if same else base})
