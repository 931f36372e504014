"""Load a YAML configuration file into a pydantic model, with errors that point at file and line.

The loader knows nothing about the scenario schema: ``load_config(path, Scenario)`` works for any
pydantic v2 model. It adds three things to plain ``yaml.safe_load`` + ``model_validate``:

* every mapping key and sequence item remembers the file and line it came from, so a pydantic error
  location such as ``("fares", "concessions", "longevity", 0, "discount_pct")`` is reported as
  ``base.yaml:42``;
* ``extends: other.yaml`` (relative to the file that says it) deep-merges an overlay onto its base:
  mappings merge key by key (overlay wins), lists and scalars are replaced whole;
* ``--set path.to.field=value`` overrides from the command line, the value read as YAML.

Fields typed :data:`ExistingFile` hold paths relative to the YAML file that names them. They are
resolved to absolute paths *before* validation (each value with the directory of the file that
supplied it; ``--set`` values with the current directory), so the validator only checks existence.

Every problem a user can cause raises :class:`ConfigError`, never another exception.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import os
import types
import typing
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from yaml.constructor import ConstructorError

__all__ = [
    "ConfigError",
    "ExistingFile",
    "FlagOverride",
    "config_hash",
    "field_origin",
    "load_config",
    "resolve_path",
]

M = TypeVar("M", bound=BaseModel)

_MAX_PROBLEMS = 10
#: Bounds on a scenario file: its size, and the values its aliases expand to.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_EXPANDED_NODES = 1_000_000
_MAX_VALUE_CHARS = 60
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(Exception):
    """A configuration the user wrote is wrong; ``str()`` is the complete message for the CLI."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        shown = list(self.problems[:_MAX_PROBLEMS])
        if len(self.problems) > _MAX_PROBLEMS:
            shown.append(f"... and {len(self.problems) - _MAX_PROBLEMS} more problems")
        super().__init__("\n".join(shown))


# --- referenced files ---------------------------------------------------------------------------


def resolve_path(value: str | os.PathLike[str], relative_to: str | os.PathLike[str]) -> Path:
    """Absolute path of ``value``; a relative one is taken relative to directory ``relative_to``."""
    path = Path(value)
    if not path.is_absolute():
        path = Path(relative_to) / path
    return path.resolve()


def _check_file(path: Path) -> Path:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "file not found"
        raise PydanticCustomError(
            "file_not_found", "{what}: {path}", {"what": what, "path": str(path)}
        )
    return path


class _FileMarker:
    """Tags :data:`ExistingFile` so the loader can find path fields by walking a model's types."""


_FILE_MARKER = _FileMarker()

#: A path to an existing regular file. Through :func:`load_config`, a relative path is relative to
#: the directory of the YAML file that holds it; validated directly, it is relative to the cwd.
ExistingFile = Annotated[Path, AfterValidator(_check_file), _FILE_MARKER]


# --- YAML with origins --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    """Where a value came from: a file line, or a ``--set`` option (``line`` is None)."""

    source: str
    line: int | None
    base_dir: Path

    def __str__(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"


class _Mapping(dict):  # type: ignore[type-arg]
    """A YAML mapping that knows the origin of itself and of each key."""

    def __init__(self, origin: _Origin) -> None:
        super().__init__()
        self.origin = origin
        self.lines: dict[Any, _Origin] = {}


class _Sequence(list):  # type: ignore[type-arg]
    """A YAML sequence that knows the origin of itself and of each item."""

    def __init__(self, origin: _Origin) -> None:
        super().__init__()
        self.origin = origin
        self.lines: list[_Origin] = []


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building :class:`_Mapping`/:class:`_Sequence` and rejecting duplicate keys."""

    source = "<string>"
    base_dir = Path(".")
    with_lines = True

    def origin(self, node: yaml.Node) -> _Origin:
        line = node.start_mark.line + 1 if self.with_lines else None
        return _Origin(self.source, line, self.base_dir)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:
            # PyYAML lets Python errors escape for scalars its regexes accept (2024-13-45) and
            # for explicit tags on text they do not fit (`!!timestamp x`): all are bad input.
            why = exc if isinstance(exc, ValueError) else f"it does not fit tag {node.tag}"
            problem = f"cannot read value {_show(node.value)}: {why}"
            raise ConstructorError(None, None, problem, node.start_mark) from exc

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # A repeated key silently drops the first value in plain YAML: a classic lost setting.
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    problem = f"duplicate key {key!r} (first at line {seen[key]})"
                    raise ConstructorError(None, None, problem, key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> Any:
    data = _Mapping(loader.origin(node))
    yield data
    data.update(loader.construct_mapping(node))
    for key_node, _ in node.value:  # after construct_mapping, `<<` merges are flattened in
        data.lines[loader.construct_object(key_node)] = loader.origin(key_node)


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> Any:
    data = _Sequence(loader.origin(node))
    yield data
    data.extend(loader.construct_sequence(node))
    data.lines = [loader.origin(item) for item in node.value]


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


# For a quick look at a file's structure (does it extend another? list cities?) where no line
# numbers are needed: libyaml's parser when PyYAML has it, ten times faster than the pure-Python
# one that the line-tracking loader below needs.
FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str, source: str, base_dir: Path, with_lines: bool = True) -> Any:
    """Parse one YAML document; malformed YAML becomes ConfigError with line and column."""
    try:
        loader = _LineLoader(text)  # the reader rejects control characters already here
        loader.source, loader.base_dir, loader.with_lines = source, base_dir, with_lines
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark and with_lines else source
        problem = exc.problem or exc.context or "unreadable"
        if exc.problem and exc.context and exc.context_mark:
            problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise ConfigError([f"{where}: malformed YAML: {problem}"]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        where = f"{source}:{line}:{col}" if with_lines else source
        problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError([f"{where}: malformed YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: malformed YAML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: malformed YAML: nested too deeply"]) from None
    _check_acyclic(data, set())
    size = _expanded_size(data, {})
    if size > MAX_EXPANDED_NODES:
        raise ConfigError(
            [
                f"{source}: aliases expand to more than {MAX_EXPANDED_NODES:,} values; expected "
                "a scenario of ordinary size (is an alias used inside another many times?)"
            ]
        )
    return data


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """Values in the tree once every alias is expanded (a DAG, counted without expanding it:
    a "billion laughs" file is refused in microseconds, not after minutes of copying)."""
    if not isinstance(node, (_Mapping, _Sequence)):
        return 1
    known = sizes.get(id(node))
    if known is None:
        children = node.values() if isinstance(node, _Mapping) else node
        known = 1 + sum(_expanded_size(child, sizes) for child in children)
        sizes[id(node)] = known
    return known


def _check_acyclic(node: Any, active: set[int], done: set[int] | None = None) -> None:
    # `&a [*a]` builds a list containing itself; merging and validation would recurse forever.
    # ``done`` holds nodes already checked, so a node reached through many aliases is walked
    # once (the walk stays as small as the file, not as its expansion).
    done = set() if done is None else done
    if not isinstance(node, (_Mapping, _Sequence)) or id(node) in done:
        return
    if id(node) in active:
        raise ConfigError([f"{node.origin}: malformed YAML: an alias refers to its own anchor"])
    active.add(id(node))
    for child in node.values() if isinstance(node, _Mapping) else node:
        _check_acyclic(child, active, done)
    active.discard(id(node))
    done.add(id(node))


# --- files and extends --------------------------------------------------------------------------


def _read_mapping(path: Path, label: str) -> _Mapping:
    """Read and parse one file whose top level must be a mapping."""
    try:
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "file not found"
            raise ConfigError([f"{label}: {what}: {path.resolve()}"])
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                [
                    f"{label}: file is {size:,} bytes; expected a scenario file of at most "
                    f"{MAX_FILE_BYTES:,} bytes"
                ]  # fmt: skip
            )
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: NUL byte in the path
        raise ConfigError([f"{label}: cannot read file: {exc}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{label}:{line}: not UTF-8 text ({exc.reason})"]) from None
    data = _parse(text, label, path.resolve().parent)
    if data is None:
        raise ConfigError([f"{label}: file is empty; expected a mapping of keys to values"])
    if not isinstance(data, _Mapping):
        line = data.origin.line if isinstance(data, _Sequence) else 1
        what = f"top level is {_kind(data)}; expected a mapping of keys to values"
        raise ConfigError([f"{label}:{line}: {what} (key: value lines)"])
    return data


def _load_with_extends(path: Path, label: str, chain: tuple[Path, ...]) -> _Mapping:
    """Read ``path`` and, if it says ``extends: base.yaml``, merge it onto its base."""
    data = _read_mapping(path, label)
    chain = (*chain, path.resolve())
    if "extends" not in data:
        return data
    target, where = data.pop("extends"), data.lines.pop("extends")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(
            [f"{where}: extends: wrong type; got {_show(target)}; expected a file name (string)"]
        )
    base_path = path.parent / target
    if base_path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        raise ConfigError([f"{where}: extends: cycle: {cycle}"])
    if not base_path.is_file():
        expected = f"expected a path relative to {path.resolve().parent}"
        problem = f"file not found: {base_path.resolve()}; got {_show(target)}; {expected}"
        raise ConfigError([f"{where}: extends: {problem}"])
    return _merge(_load_with_extends(base_path, str(base_path), chain), data)


def _merge(base: _Mapping, overlay: _Mapping) -> _Mapping:
    """Deep merge: mappings key by key (overlay wins), everything else replaced whole."""
    merged = _Mapping(overlay.origin)
    merged.update(base)
    merged.lines.update(base.lines)
    for key, value in overlay.items():
        old = base.get(key)
        if isinstance(old, _Mapping) and isinstance(value, _Mapping):
            value = _merge(old, value)
        merged[key] = value
        merged.lines[key] = overlay.lines[key]
    return merged


# --- --set overrides ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagOverride:
    """An override that came from a dedicated flag (``--days 7`` is ``period.days=7``): its
    errors name the flag the user typed, not ``--set``."""

    flag: str
    path: str
    value: str
    names_path: bool = False  # the user typed the path too (``--param path=v1,v2``)

    @property
    def text(self) -> str:
        """As ``--set`` would have it."""
        return f"{self.path}={self.value}"


def _apply_override(tree: _Mapping, override: str | FlagOverride) -> str | None:
    """Apply one ``path.to.field=value``; return a problem message instead of raising."""
    if isinstance(override, FlagOverride):
        shown = override.text if override.names_path else override.value
        label, text = f"from {override.flag} {shown}", override.text
    else:
        label, text = f"from --set {override}", override
    path_text, sep, value_text = text.partition("=")
    parts = path_text.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        return f"{label}: bad --set syntax; expected path.to.field=value, e.g. period.days=14"
    parts = [p.strip() for p in parts]
    try:
        value = _parse(value_text, label, Path.cwd(), with_lines=False)
    except ConfigError as exc:
        return str(exc)
    origin = _Origin(label, None, Path.cwd())
    node: Any = tree
    for i, part in enumerate(parts):
        done = ".".join(parts[:i])
        last = i == len(parts) - 1
        if isinstance(node, _Mapping):
            key = _find_key(node, part)
            key = part if key is _ABSENT else key
            if last:
                node[key], node.lines[key] = value, origin
            elif node.get(key) is None:  # absent or null: create it; validation judges the key
                node[key], node.lines[key] = _Mapping(origin), origin
            node = node[key]
        elif isinstance(node, _Sequence):
            if not part.isdigit() or int(part) >= len(node):
                what = "out of range" if part.isdigit() else "is not a list index"
                return f"{label}: {done}: {part!r} {what}; expected 0 to {len(node) - 1}"
            if last:
                node[int(part)], node.lines[int(part)] = value, origin
            node = node[int(part)]
        else:
            return f"{label}: {done}: holds {_show(node)}, not a mapping; cannot set {part!r} in it"
    return None


_ABSENT = object()


def _find_key(mapping: Mapping[Any, Any], part: Any) -> Any:
    """The key of ``mapping`` that a path part or pydantic loc item names, or ``_ABSENT``."""
    if isinstance(part, Hashable) and part in mapping:
        return part
    for key in mapping:  # YAML may give int, date or None keys; paths spell them as text
        if str(key) == str(part):
            return key
    return _ABSENT


# --- walking a model's types --------------------------------------------------------------------


def _field_annotation(field: FieldInfo) -> Any:
    # pydantic moves Annotated metadata of a field into FieldInfo.metadata; put it back.
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def _model_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """Fields keyed by the name a YAML file uses (alias if set); fields never written (derived
    by the loader, ``exclude=True``) are not among them."""
    return {(f.alias or name): f for name, f in model.model_fields.items() if not f.exclude}


def _strip(ann: Any) -> tuple[Any, bool]:
    """(annotation without Annotated, whether it was marked as an ExistingFile)."""
    marked = False
    while typing.get_origin(ann) is Annotated:
        marked = marked or any(m is _FILE_MARKER for m in ann.__metadata__)
        ann = ann.__origin__
    return ann, marked


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType)


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _children(ann: Any, key: Any) -> list[Any]:
    """Annotations that could apply to item ``key`` of a value typed ``ann`` (after _strip)."""
    if _is_model(ann):
        field = _model_fields(ann).get(key) if isinstance(key, str) else None
        return [_field_annotation(field)] if field else []
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (dict, Mapping, typing.Mapping) and len(args) == 2:
        return [args[1]]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return [args[key]] if isinstance(key, int) and key < len(args) else []
    if origin in (list, tuple, set, frozenset, Sequence, typing.Sequence) and args:
        return [args[0]]
    return []


def _is_file_ann(ann: Any) -> bool:
    ann, marked = _strip(ann)
    return marked or (_is_union(ann) and any(_is_file_ann(a) for a in typing.get_args(ann)))


def _resolve_files(
    node: Any, ann: Any, path: tuple[Any, ...], originals: dict[tuple[Any, ...], Any]
) -> None:
    """Make ExistingFile values absolute, each relative to the file that supplied it."""
    ann, _ = _strip(ann)
    if _is_union(ann):
        for arg in typing.get_args(ann):  # resolving is idempotent, so trying every arm is safe
            _resolve_files(node, arg, path, originals)
        return
    if not isinstance(node, (_Mapping, _Sequence)):
        return
    items = node.items() if isinstance(node, _Mapping) else enumerate(node)
    for key, value in list(items):
        for child in _children(ann, key):
            if _is_file_ann(child) and isinstance(value, str) and value:
                resolved = str(resolve_path(value, node.lines[key].base_dir))
                originals.setdefault((*path, key), value)
                node[key] = value = resolved
            else:
                _resolve_files(value, child, (*path, key), originals)


def _annotation_at(ann: Any, loc: Sequence[Any]) -> Any:
    """The annotation at a pydantic error location, skipping union tags; None if unknown."""
    ann, _ = _strip(ann)
    if not loc:
        if _is_union(ann):  # an optional section (X | None) is described as X
            arms = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(arms) == 1:
                return _strip(arms[0])[0]
        return ann
    if _is_union(ann):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        for arg in args:  # pydantic names a model arm of a union by its class name
            if _is_model(_strip(arg)[0]) and _strip(arg)[0].__name__ == loc[0]:
                return _annotation_at(arg, loc[1:])
        for rest in (loc, loc[1:]):
            for arg in args:
                found = _annotation_at(arg, rest)
                if found is not None:
                    return found
        return None
    children = _children(ann, loc[0])
    return _annotation_at(children[0], loc[1:]) if children else None


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return list(_model_fields(model))


def _describe_type(ann: Any) -> str:
    ann, _ = _strip(ann)
    if _is_model(ann):
        return "a mapping with keys: " + ", ".join(_allowed_keys(ann))
    if typing.get_origin(ann) is dict:
        key, value = typing.get_args(ann) or (str, Any)
        key, _ = _strip(key)
        if typing.get_origin(key) is typing.Literal:  # name the keys, not the Literal's repr
            keys = "keys among " + ", ".join(str(k) for k in typing.get_args(key))
        else:
            keys = f"{_describe_type(key)} keys"
        return f"a mapping with {keys} (values: {_describe_type(value)})"
    if isinstance(ann, type):
        return ann.__name__
    return str(ann).replace("typing.", "").replace("pathlib.", "")


# --- error messages -----------------------------------------------------------------------------


def _show(value: Any) -> str:
    """Short repr of a user's value."""
    if isinstance(value, (datetime.date, datetime.time)):
        text = value.isoformat()
    elif isinstance(value, Path):
        text = repr(str(value))
    else:
        text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a single value ({type(value).__name__})"


def _locate(tree: _Mapping, loc: Sequence[Any], missing: bool) -> tuple[_Origin, list[Any]]:
    """Origin of the deepest value on ``loc`` present in the data, and the data path of ``loc``.

    Loc items not in the data are union tags (``'int'``, ``'Concession'``) and are dropped, except
    the last item of a "missing" error, which is the absent key itself.
    """
    origin, node, path = tree.origin, tree, []
    for i, part in enumerate(loc):
        if isinstance(node, _Mapping) and (key := _find_key(node, part)) is not _ABSENT:
            origin, node = node.lines.get(key, origin), node[key]
            path.append(part)
        elif isinstance(node, _Sequence) and isinstance(part, int) and 0 <= part < len(node):
            origin, node = node.lines[part], node[part]
            path.append(part)
        elif missing and i == len(loc) - 1:
            path.append(part)
    return origin, path


def _problem(err: Mapping[str, Any], model_cls: type[BaseModel], path: list[Any], orig: Any) -> str:
    """``<what>; got <value>; expected <what>`` for one pydantic error."""
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    got = f"; got {_show(orig)}"
    expected = msg.removeprefix("Input should be ") if msg.startswith("Input should be ") else ""
    if kind == "missing":
        ann = _annotation_at(model_cls, path)
        return "missing required field" + (f"; expected {_describe_type(ann)}" if ann else "")
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        model = _annotation_at(model_cls, path[:-1])
        if not _is_model(model):
            return f"unknown key {key!r}"
        allowed = _allowed_keys(model)
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {key!r}{hint}; expected one of: {', '.join(allowed)}"
    if kind == "file_not_found":
        return (
            f"{ctx['what']}: {ctx['path']}{got}; expected an existing file"
            " (a relative path is relative to the YAML file naming it; for --set, to the cwd)"
        )
    if kind in ("literal_error", "enum"):
        return f"unknown value{got}; expected one of {ctx.get('expected', expected)}"
    if kind in ("value_error", "assertion_error"):
        error = str(ctx.get("error") if ctx.get("error") is not None else msg)
        # Our validators name the values they judge; a whole section after "got" repeats them.
        if isinstance(orig, (Mapping, list, tuple)) or "got" in error:
            return error
        return f"{error}{got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        ann = _annotation_at(model_cls, path)
        return f"wrong type{got}; expected {_describe_type(ann) if ann else expected}"
    if kind == "invalid_key":
        return f"invalid key{got}; expected a string key"
    if kind.startswith(("greater_", "less_", "too_", "multiple_of", "finite_")):
        return f"value out of range{got}; expected {expected or msg}"
    if kind.endswith("_type"):
        return f"wrong type{got}; expected {expected or msg}"
    if kind.endswith("_parsing"):
        expected, _, detail = expected.partition(", ")
        what = f"invalid value ({detail})" if detail else "invalid value"
        return f"{what}{got}; expected {expected or msg}"
    return f"{msg}{got}"


def _format_errors(
    exc: ValidationError,
    tree: _Mapping,
    model_cls: type[BaseModel],
    originals: dict[tuple[Any, ...], Any],
) -> list[str]:
    """One ``<where>: <field.path>: <problem>`` line per problem, union arms merged."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        origin, path = _locate(tree, loc, missing=err["type"] == "missing")
        if "[key]" in loc:
            path.append("[key]")
        shown = ".".join(str(p) for p in path) or "(top level)"
        value = originals.get(tuple(path), err["input"])
        grouped.setdefault((str(origin), shown), []).append(_problem(err, model_cls, path, value))
    lines = []
    for (where, shown), problems in grouped.items():
        # One wrong value checked against each arm of a union gives one error per arm; merge
        # "wrong type; got x; expected A" and "...; expected B" into "...; expected A or B".
        heads = {p.rpartition("; expected ")[0] for p in problems}
        if len(problems) > 1 and len(heads) == 1 and "; expected " in problems[0]:
            tails = [p.rpartition("; expected ")[2] for p in problems]
            problems = [f"{heads.pop()}; expected {' or '.join(dict.fromkeys(tails))}"]
        lines.extend(f"{where}: {shown}: {p}" for p in problems)
    return lines


# --- public entry points ------------------------------------------------------------------------


def _to_plain(node: Any) -> Any:
    # pydantic's error inputs and the validated model should hold plain dicts and lists.
    if isinstance(node, dict):
        return {k: _to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_plain(v) for v in node]
    return node


def load_config(
    path: str | os.PathLike[str],
    model_cls: type[M],
    overrides: Sequence[str | FlagOverride] = (),
) -> M:
    """Load ``path`` (following ``extends:``), apply ``--set`` overrides, validate as ``model_cls``.

    Raises ConfigError listing every problem with its file, line and field path.
    """
    path = Path(path)
    tree = _load_with_extends(path, str(path), ())
    problems = [p for p in (_apply_override(tree, text) for text in overrides) if p]
    if problems:
        raise ConfigError(problems)
    originals: dict[tuple[Any, ...], Any] = {}
    _resolve_files(tree, model_cls, (), originals)
    try:
        return model_cls.model_validate(_to_plain(tree))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, tree, model_cls, originals)) from None


def field_origin(
    path: str | os.PathLike[str], field: str, overrides: Sequence[str | FlagOverride] = ()
) -> str:
    """Where ``field`` (dotted) of a config file comes from: ``file:line`` of its key (through
    ``extends:`` and ``--set``), or the file itself if the key is not written anywhere. For
    errors found after validation, such as a period the calendar does not cover."""
    try:
        tree = _load_with_extends(Path(path), str(path), ())
        for text in overrides:
            _apply_override(tree, text)
    except ConfigError:
        return str(path)
    node: Any = tree
    where = str(path)
    for part in field.split("."):
        if not isinstance(node, _Mapping) or part not in node:
            break
        where = str(node.lines.get(part, where))
        node = node[part]
    return where


def config_hash(model: BaseModel) -> str:
    """SHA-256 hex digest of the model's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(
        model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
