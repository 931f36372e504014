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


PRICING_SECTIONS = frozenset(_PricingView.model_fields)  # top-level sections the view reads


def root_of(path: str | Path) -> Path:
    """The file at the root of ``path``'s ``extends:`` chain (``path`` itself if it extends
    nothing). The chain was checked by the loader (files exist, no cycles)."""
    path, seen = Path(path), set()
    while path.resolve() not in seen:
        seen.add(path.resolve())
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=FAST_SAFE_LOADER)
        target = data.get("extends") if isinstance(data, dict) else None
        if not isinstance(target, str):
            return path
        path = path.parent / target
    return path


def _touches_pricing(override: str | FlagOverride) -> bool:
    """Whether an override can change a section the reference compares (fares, concession
    ages, visitor treatment)."""
    text = override.path if isinstance(override, FlagOverride) else override.partition("=")[0]
    return text.strip().split(".")[0] in PRICING_SECTIONS


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
    root = root_of(path)
    if Path(root).resolve() == Path(path).resolve() and not any(
        _touches_pricing(o) for o in overrides
    ):
        # The file is its own base and nothing changed its prices: its pricing is the
        # reference, so there is no base to load again (a second parse of a large file).
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
