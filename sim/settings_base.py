"""The base of every settings model read from a scenario, drill or data file.

Unknown keys are errors and values are immutable. A yes/no value where a number is expected is
an error too: YAML reads ``yes``, ``no``, ``on``, ``off``, ``true`` and ``false`` as booleans,
and pydantic would otherwise take them as 1 and 0 (``--set period.days=yes`` ran one day).
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class SettingsModel(BaseModel):
    """Unknown keys refused, values frozen, no infinities, no booleans for numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_or_no_for_a_number(cls, value, info: ValidationInfo):
        # A field validator (not a model one), so that the error names the field and the
        # loader can say where its value came from (the file's line, or --set).
        field = cls.model_fields.get(info.field_name or "")
        where = _yes_or_no_for_a_number(value, field.annotation) if field is not None else None
        if where is not None:
            shown = f" at {where}" if where else ""
            raise ValueError(
                f"expected a number{shown}, got a yes/no value (YAML reads yes, no, on, off, "
                "true and false as booleans)"
            )
        return value


def _yes_or_no_for_a_number(value, annotation) -> str | None:
    """Where in ``value`` a boolean stands for a number that ``annotation`` asks for: '' for
    the value itself, a key or index inside a mapping or list of numbers; None if nowhere."""
    if isinstance(value, bool):
        return "" if _a_number(annotation) else None
    items = _number_items(annotation)
    if items is None:
        return None
    if isinstance(value, dict):
        pairs = value.items()
    elif isinstance(value, list | tuple):
        pairs = enumerate(value)
    else:
        return None
    return next((str(k) for k, v in pairs if isinstance(v, bool)), None)


def _number_items(annotation):
    """The number type of a mapping's values or a sequence's items, if ``annotation`` is one
    (Optional and Annotated looked into); None otherwise."""
    annotation = _unwrapped(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2 and _a_number(args[1]):
        return args[1]
    if origin in (list, tuple) and args and all(_a_number(a) for a in args if a is not Ellipsis):
        return args[0]
    return None


def _unwrapped(annotation):
    """``annotation`` without Annotated and without an Optional's None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrapped(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrapped(args[0])
    return annotation


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
