"""The base of every settings model read from a scenario, drill or data file.

Unknown keys are errors and values are immutable. A yes/no value where a number is expected is
an error too: YAML reads ``yes``, ``no``, ``on``, ``off``, ``true`` and ``false`` as booleans,
and pydantic would otherwise take them as 1 and 0 (``--set period.days=yes`` ran one day).
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, model_validator


class SettingsModel(BaseModel):
    """Unknown keys refused, values frozen, no infinities, no booleans for numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_yes_or_no_for_a_number(cls, data):
        if not isinstance(data, dict):
            return data
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if isinstance(value, bool) and field is not None and _a_number(field.annotation):
                raise ValueError(
                    f"{name}: expected a number, got {str(value).lower()} (YAML reads yes, no, "
                    "on, off, true and false as booleans)"
                )
        return data


def _a_number(annotation) -> bool:
    """Whether a field takes numbers and not booleans (Optional and Annotated looked into)."""
    if annotation is bool:
        return False
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _a_number(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and bool not in args and all(_a_number(a) for a in args)
    return False


__all__ = ["SettingsModel"]
