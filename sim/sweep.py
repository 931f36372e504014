"""Sweeps: a design of variants of one scenario, and running its points.

A sweep varies fields of a base scenario. Its design is a grid (every combination of listed
values), a Latin hypercube (scipy's ``qmc``) or a Sobol design (SALib: Saltelli's sample, then
first-order and total indices) between bounds. A *point* is the base scenario with some fields
set through the loader's own ``--set`` overrides, so a bad path or value gets the loader's message
(field path, value, what is expected). Besides the design's points a sweep always has the base
scenario itself (point 0) and, for each parameter, its low and its high value with the others at
the base's (one at a time: the tornado chart).

Every point runs ``replications`` times with the run seeds of a compare: replication r of every
point uses seed ``base seed + r`` (common random numbers: points differ by their parameters, not
by their luck); each run is measured by ``sim.lab.OutcomeCollector``. Points run in the worker
processes of a Dask ``LocalCluster``, in batches that shrink towards the end. Every point is loaded
in the sweep's own process first (the base file read as it is then, once per point), and its
key made from what was loaded: a hash of everything that decides its numbers (the point's
validated scenario, the content of every file it reads, the seeds, the engine's code). The
worker is handed that very scenario, so it runs what the key describes; it runs all the
replications on one world, keeps that world for the next points that differ from it in their
fares only (``sim.world.with_fares``), and checks afterwards that the files the point reads still
hold the content its key was made from. Each finished point is stored as
``OUT/points/<key>.json``, so re-running a sweep runs only the points that are missing or failed,
and a point whose scenario or files changed since is run anew. A point that fails (the scenario
rejects it, or its run raises) is kept as a failure with its message while the others go on.

The table, summary and HTML page are written by ``sim.sweep_report``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sim import lab
from sim.output import package_versions
from sim.scenario import ConfigError, MultiCityScenario, Scenario, load_scenario, scenario_hash
from sim.world import FARES_ONLY, with_fares
from sim.yaml_config import FlagOverride, load_config

#: Bump when what a stored point holds, or how it is measured, changes: older points run again.
POINT_FORMAT = 3  # 2: the key covers the reference pricing; 3: made from the loaded point
DEFAULT_REPLICATIONS = 3
#: Fields a sweep sets itself: every point runs the sweep's seeds for the sweep's days.
RESERVED = {
    "seed": "the run seeds are the sweep's (base seed + replication, the same for every point); "
    "sweep world_seed to vary the population",
    "period": "set the days with --days (or days: in the design)",
    "period.days": "set the days with --days (or days: in the design)",
}
ROLES = ("base", "design", "oat")  # the base scenario, the design's points, one at a time


# --- the design ---------------------------------------------------------------------------------


class Parameter(BaseModel):
    """One swept field: listed values (a grid) or bounds (a Latin hypercube or Sobol design)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    values: tuple[Any, ...] | None = Field(
        default=None, min_length=1, description="A grid's values, each as --set would read it."
    )
    low: float | None = Field(default=None, description="Lower bound (lhs, sobol).")
    high: float | None = Field(default=None, description="Upper bound (lhs, sobol).")
    integer: bool = Field(
        default=False,
        description="Round sampled values to whole numbers (integer fields such as "
        "fares.transfer.window_min).",
    )
    decimals: int | None = Field(
        default=None,
        ge=0,
        le=12,
        description="Round sampled values to this many decimals (fields such as a discount_pct "
        "that take at most two).",
    )

    @field_validator("values")
    @classmethod
    def _dates_as_text(cls, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        """Dates (YAML reads 2024-01-02 as one) as ISO text, as the base scenario's values and
        sweep.json hold them: a point's value and the base's are then alike in the table and
        on the page, and the scenario reads the text back as the date."""
        return None if values is None else tuple(_iso_dates(v) for v in values)

    @model_validator(mode="after")
    def _values_or_bounds(self) -> Parameter:
        bounds = (self.low, self.high)
        if self.values is not None:
            if bounds != (None, None):
                raise ValueError("give values (a grid) or low and high (lhs, sobol), not both")
            seen: set[str] = set()
            for value in self.values:
                text = _canonical(value)
                if text in seen:
                    raise ValueError(f"value {value!r} is listed twice; expected distinct values")
                seen.add(text)
        elif None in bounds:
            raise ValueError("expected values: [...] (a grid) or both low and high (lhs, sobol)")
        elif not self.low < self.high:
            raise ValueError(f"low must be below high; got low {self.low}, high {self.high}")
        if self.integer and self.decimals is not None:
            raise ValueError("give integer: true (whole numbers) or decimals, not both")
        return self


class Design(BaseModel):
    """A sweep's design: the YAML file of ``--design`` (or a grid from ``--param``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["grid", "lhs", "sobol"] = Field(
        default="grid",
        description="grid: every combination of the values; lhs: a Latin hypercube sample; "
        "sobol: Saltelli's sample and Sobol indices.",
    )
    parameters: dict[str, Parameter] = Field(
        min_length=1, description="Scenario field path (as for --set) -> its values or bounds."
    )
    samples: int | None = Field(
        default=None,
        ge=1,
        description="lhs: the number of points; sobol: the base sample N, a power of 2 "
        "(N x (parameters + 2) points).",
    )
    outputs: tuple[str, ...] = Field(
        default=lab.HEADLINE,
        min_length=1,
        description="Measures to report: names of sim.lab.OutcomeCollector's totals.",
    )
    replications: int = Field(default=DEFAULT_REPLICATIONS, ge=1, description="Runs per point.")
    days: int | None = Field(
        default=None, ge=1, le=3660, description="Simulated days (default: the scenario's)."
    )
    seed: int | None = Field(
        default=None, ge=0, description="Seed of the lhs/sobol sample (default: the scenario's)."
    )

    @field_validator("parameters")
    @classmethod
    def _parameters_fit(cls, parameters: dict[str, Parameter], info: ValidationInfo):
        kind = info.data.get("kind", "grid")
        for path, spec in parameters.items():
            problem = path_problem(path)
            if problem:
                raise ValueError(f"{path}: {problem}")
            if kind == "grid" and spec.values is None:
                raise ValueError(f"{path}: a grid lists values; expected values: [...]")
            if kind != "grid" and spec.values is not None:
                raise ValueError(
                    f"{path}: a {kind} design samples between bounds; expected low and high"
                )
        return parameters

    @field_validator("samples")
    @classmethod
    def _samples_fit(cls, samples: int | None, info: ValidationInfo):
        kind = info.data.get("kind", "grid")
        if kind == "grid" and samples is not None:
            raise ValueError("a grid runs every combination of its values; expected no samples")
        if kind != "grid" and samples is None:
            raise ValueError(f"a {kind} design needs samples; expected a number of samples")
        if kind == "sobol" and samples & (samples - 1):
            raise ValueError(
                f"Sobol's sequence needs a power of 2; got {samples}; expected e.g. "
                f"{1 << (samples.bit_length() - 1)} or {1 << samples.bit_length()}"
            )
        return samples

    @field_validator("outputs")
    @classmethod
    def _distinct_outputs(cls, outputs: tuple[str, ...]):
        twice = sorted({o for o in outputs if outputs.count(o) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice; expected distinct outputs")
        return outputs

    @property
    def paths(self) -> list[str]:
        """The parameters' field paths, in design order."""
        return list(self.parameters)


def path_problem(path: str) -> str | None:
    """What is wrong with a parameter's field path, or None."""
    parts = path.split(".")
    if not path or any(not p or p != p.strip() or "=" in p for p in parts):
        return "expected a dotted field path such as fares.transfer.window_min"
    if path in RESERVED:
        return f"not a sweep parameter: {RESERVED[path]}"
    return None


def load_design(path: str | Path) -> Design:
    """Load and validate a design file; ConfigError (file, line, field path) if it is wrong."""
    return load_config(path, Design)


def grid_design(params: Sequence[str], **settings: Any) -> Design:
    """A grid from ``--param path=v1,v2,...`` texts (each value read as YAML, as ``--set``
    reads it; commas inside brackets or quotes do not split); ``settings`` are other design
    fields. ConfigError naming the ``--param`` if one is wrong."""
    parameters: dict[str, dict] = {}
    for text in params:
        path, sep, rest = text.partition("=")
        path = path.strip()
        where = f"--param {text}"
        if not sep or not rest.strip():
            raise ConfigError(
                [f"{where}: expected path=v1,v2,... e.g. fares.transfer.window_min=60,90"]
            )
        problem = path_problem(path)
        if problem:
            raise ConfigError([f"{where}: {path}: {problem}"])
        if path in parameters:
            raise ConfigError([f"{where}: {path} is given twice; expected one --param per field"])
        values = []
        for item in split_values(rest):
            if not item:
                raise ConfigError([f"{where}: an empty value; expected values between commas"])
            try:
                values.append(yaml.safe_load(item))
            except yaml.YAMLError as exc:
                raise ConfigError([f"{where}: cannot read value {item!r}: {exc}"]) from None
        parameters[path] = {"values": values}
    try:
        return Design.model_validate({"kind": "grid", "parameters": parameters, **settings})
    except ValidationError as exc:
        raise ConfigError(
            [
                f"--param: {_loc(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            ]
        ) from None


def split_values(text: str) -> list[str]:
    """``60,90`` -> ``['60', '90']``; commas inside ``[]``, ``{}`` or quotes do not split."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return items


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "(design)"


def _iso_dates(value: Any) -> Any:
    """``value`` with every date and datetime in it as ISO text."""
    if isinstance(value, dt.date):  # a datetime is a date too
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _iso_dates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_iso_dates(v) for v in value)
    return value


def _canonical(value: Any) -> str:
    """A value as text, equal for equal values (the key of de-duplication)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


# --- points -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One point of a sweep: the parameters it sets, and every parameter's value there."""

    id: int
    role: str  # one of ROLES
    values: dict[str, Any]  # each parameter's value at this point (the base's where not set)
    sets: tuple[str, ...]  # the parameters this point sets; the others keep the base's value


@dataclass(frozen=True)
class Plan:
    """A design's points (point 0 is the base scenario), the (low, high) point ids of each
    parameter's one-at-a-time sensitivity, and the seed of the lhs/sobol sample."""

    points: list[Point]
    oat: dict[str, tuple[int, int]]
    seed: int


def plan(design: Design, base_values: dict[str, Any], seed: int) -> Plan:
    """The points of ``design`` around a base whose parameters have ``base_values``."""
    paths = design.paths
    points = [Point(0, "base", dict(base_values), ())]
    for row in _design_rows(design, seed):
        points.append(
            Point(len(points), "design", dict(zip(paths, row, strict=True)), tuple(paths))
        )
    known = {_canonical(p.values): p.id for p in points}
    oat: dict[str, tuple[int, int]] = {}
    for path in paths:
        ends = []
        for value in _low_high(design.parameters[path]):
            values = {**base_values, path: value}
            text = _canonical(values)
            if text not in known:
                known[text] = len(points)
                points.append(Point(len(points), "oat", values, (path,)))
            ends.append(known[text])
        oat[path] = (ends[0], ends[1])
    return Plan(points, oat, seed)


def _design_rows(design: Design, seed: int) -> list[tuple[Any, ...]]:
    """The design's points as rows of parameter values, in design order."""
    specs = list(design.parameters.values())
    if design.kind == "grid":
        return list(itertools.product(*(spec.values for spec in specs)))
    unit = _sample(design, seed)
    rows = []
    for sample in unit:
        rows.append(tuple(_sampled(spec, float(x)) for spec, x in zip(specs, sample, strict=True)))
    return rows


def _sample(design: Design, seed: int) -> np.ndarray:
    """The lhs or Sobol sample, one row per point, scaled to the bounds."""
    specs = list(design.parameters.values())
    lows = [spec.low for spec in specs]
    highs = [spec.high for spec in specs]
    if design.kind == "lhs":
        from scipy.stats import qmc

        unit = qmc.LatinHypercube(d=len(specs), rng=seed).random(design.samples)
        return qmc.scale(unit, lows, highs)
    from SALib.sample import sobol  # here: SALib is needed by Sobol designs only

    return sobol.sample(sobol_problem(design), design.samples, calc_second_order=False, seed=seed)


def sobol_problem(design: Design) -> dict:
    """The design as SALib's problem (names and bounds)."""
    return {
        "num_vars": len(design.parameters),
        "names": design.paths,
        "bounds": [[spec.low, spec.high] for spec in design.parameters.values()],
    }


def _sampled(spec: Parameter, x: float) -> float | int:
    """A sampled value as the field takes it: whole, rounded to its decimals, or as drawn."""
    if spec.integer:
        return int(round(x))
    return x if spec.decimals is None else round(x, spec.decimals)


def _low_high(spec: Parameter) -> tuple[Any, Any]:
    """A parameter's low and high value: its bounds, or the least and greatest of its values
    (the first and last when they are not numbers)."""
    if spec.values is None:
        return _sampled(spec, spec.low), _sampled(spec, spec.high)
    values = list(spec.values)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return min(values), max(values)
    return values[0], values[-1]


def base_values(scenario: Scenario, paths: Sequence[str]) -> dict[str, Any]:
    """The base scenario's value of each parameter (None where the path leads nowhere, or
    through an optional section the base leaves unset)."""
    tree = scenario.model_dump(mode="json", by_alias=True)
    return {path: _walk(tree, path)[1] for path in paths}


def overrides_of(point: Point, base: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The fields a point really changes, as ``(path, YAML text)``: a value equal to the base's
    is left out, so that a design point at the base's value is the base scenario itself (one
    key, one run)."""
    return tuple(
        (path, _yaml_text(point.values[path]))
        for path in point.sets
        if not _same(point.values[path], base.get(path))
    )


def _same(a: Any, b: Any) -> bool:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return a == b if numbers else _canonical(a) == _canonical(b)


def load_point(
    base_path: str | Path, overrides: Sequence[tuple[str, str]], days: int | None, flag: str
) -> Scenario:
    """The base scenario with a point's fields set, through the loader's own overrides: a value
    the scenario rejects raises ConfigError with the loader's message (``flag`` says where the
    values came from: ``--param`` or the design file)."""
    settings = [FlagOverride(flag, path, text, names_path=True) for path, text in overrides]
    if days is not None:
        settings.append(FlagOverride("--days", "period.days", str(days)))
    scenario = load_scenario(base_path, settings)
    if isinstance(scenario, MultiCityScenario):
        raise ConfigError([f"{base_path}: a sweep takes a single-city scenario"])
    return scenario


def check_paths(
    base_path: str | Path, base: Scenario, design: Design, flag: str, days: int | None
) -> None:
    """A parameter path the base scenario does not have is bad input (the loader's message),
    not a sweep of failed points. A path to a field the base has passes; its values are judged
    point by point. Any other path (a new key in a mapping, or one through an optional section
    the base leaves unset, such as ``world_seed.foo``) is tried with the parameter's values, as
    its points would be, and passes if one of them loads; if none does, the first one's message
    is the error."""
    tree = base.model_dump(mode="json", by_alias=True)
    for path, spec in design.parameters.items():
        if _resolves(tree, path):
            continue
        trials = spec.values if spec.values is not None else _low_high(spec)
        problems: ConfigError | None = None
        for value in trials:
            try:
                load_point(base_path, [(path, _yaml_text(value))], days, flag)
            except ConfigError as exc:
                problems = problems or exc
            else:
                break
        else:
            raise problems


def _resolves(tree: Any, path: str) -> bool:
    """Whether ``path`` leads to a field the (dumped) scenario has: a key of every mapping, an
    index of every list on the way. A path through an unset section (None) does not."""
    return _walk(tree, path)[0]


def _walk(tree: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted ``path`` through mappings and lists: (found, the value there; None if
    not found)."""
    node = tree
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _yaml_text(value: Any) -> str:
    """A value as the YAML text of an override (JSON is YAML; dates stay ISO strings)."""
    return json.dumps(value, ensure_ascii=False, default=str)


# --- the key of a point and its stored result ---------------------------------------------------


#: Modules that only present or read results: editing them cannot change a point's measures,
#: so they are left out of the code fingerprint (a page's edit keeps the stored points).
PRESENTATION_MODULES = frozenset(
    {"sim/formats.py", "sim/html_page.py", "sim/lab_html.py", "sim/lab_report.py", "sim/pdf.py",
     "sim/report_files.py", "sim/run_view.py", "sim/sweep_report.py"}
)  # fmt: skip


def code_fingerprint(root: Path | None = None) -> str:
    """Hash of the engine's code (every .py under sim/ and agents/ but PRESENTATION_MODULES)
    and the library versions: a stored point is reused only by the code that made it."""
    root = Path(__file__).resolve().parent.parent if root is None else root
    digest = hashlib.sha256(_canonical(package_versions()).encode())
    for package in ("sim", "agents"):
        for path in sorted((root / package).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            if name not in PRESENTATION_MODULES:
                digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def point_key(
    scenario: Scenario, files: Sequence[tuple[str, str]], seeds: Sequence[int], code: str
) -> str:
    """A point's key, made from the point as loaded: its validated scenario (the base's whole
    ``extends:`` chain as read, the fields the point sets, the days, the prices its riders are
    used to), the content of every file that scenario reads (``files``: path and SHA-256, as
    ``file_hashes`` gives them; a point's own ``calendar.file`` too), the run seeds and the
    code. What the point's override texts say is not in it: the same text can name another
    file (a relative path) or a file whose content has changed."""
    blob = {"format": POINT_FORMAT, "scenario": scenario_hash(scenario), "files": dict(files)}
    return _digest({**blob, "seeds": list(seeds), "code": code})


def file_hashes(scenario: Scenario, known: dict[Path, str]) -> tuple[tuple[str, str], ...]:
    """Every file ``scenario`` reads (outlets, calendar: its Path fields), with the SHA-256 of
    its content; ``known`` keeps each file's hash, read once per sweep, so that every point of
    a sweep is keyed by the same content of a file."""
    out = []
    for path in _files(scenario):
        if path not in known:
            known[path] = _file_hash(path)
        out.append((str(path), known[path]))
    return tuple(out)


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def _files(scenario: Scenario) -> list[Path]:
    found: set[Path] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Path):
            found.add(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v)

    walk(scenario.model_dump())
    return sorted(p for p in found if p.is_file())


def read_point(points_dir: Path | None, key: str, seeds: Sequence[int]) -> dict | None:
    """A stored finished point (its measures per replication), or None if there is none that
    fits (missing, unreadable, another format or other seeds)."""
    if points_dir is None:
        return None
    try:
        stored = json.loads((points_dir / f"{key}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(stored, dict)
        or stored.get("format") != POINT_FORMAT
        or stored.get("key") != key
        or stored.get("seeds") != list(seeds)
        or not isinstance(stored.get("measures"), list)
        or len(stored["measures"]) != len(seeds)
    ):
        return None
    return {"key": key, "status": "ok", "measures": stored["measures"]}


def store_point(points_dir: Path, result: dict, seeds: Sequence[int]) -> None:
    """Keep a finished point (written beside, then renamed: a killed sweep leaves no half file)."""
    body = {"format": POINT_FORMAT, "key": result["key"], "seeds": list(seeds)}
    body["measures"] = result["measures"]
    path = points_dir / f"{result['key']}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, sort_keys=True), "utf-8")
    os.replace(tmp, path)


# --- running points -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A point as a worker runs it: its key, the scenario the key was made from (loaded in the
    sweep's process: the worker reads no scenario file, so an edit of the base while the sweep
    runs cannot slip into a point), the files that scenario reads with the hashes in its key,
    and the run seeds."""

    key: str
    scenario: Scenario
    files: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]


class Worlds:
    """The last world built in a process, shared by the points that differ from its scenario
    in their fares only (``sim.world.with_fares``: the fares are compiled anew, the population,
    network and outlets kept); any other point builds its own, which then replaces it (one
    world at a time: a full-scale world takes a good part of a GB)."""

    def __init__(self) -> None:
        self._family: str | None = None
        self._world = None

    def get(self, scenario: Scenario):
        """The world of ``scenario``: the kept one, rebased onto its fares, or a new build."""
        from sim import api  # here, not at the top: sim.api imports this module

        family = _digest(scenario.model_dump(mode="json", exclude=FARES_ONLY))
        if family != self._family:
            self._family = self._world = None  # let the old world go before building anew
            self._world = api.build(scenario)
            self._family = family
        if self._world.scenario == scenario:
            return self._world
        return with_fares(self._world, scenario)


#: The worlds of this process when it is a Dask worker: kept between the tasks it runs (a
#: process-wide cache is what lets a worker build a full-scale world once per sweep rather
#: than once per point; it goes when the cluster closes at the end of the sweep).
_WORKER_WORLDS = Worlds()


def run_batch(tasks: Sequence[Task], worlds: Worlds | None = None) -> list[dict]:
    """Run points one after the other in this process (one Dask task); ``worlds``: where built
    worlds are kept (default: this worker process's)."""
    worlds = _WORKER_WORLDS if worlds is None else worlds
    return [run_point(task, worlds) for task in tasks]


def run_point(task: Task, worlds: Worlds) -> dict:
    """Get the point's world from ``worlds`` and run each replication on it, as a compare
    does; a failure (a run raises, or a file the point reads no longer holds the content its
    key was made from) is a result (``status`` failed, ``error``), not an exception, and is
    not stored."""
    from sim import api  # here, not at the top: sim.api imports this module

    try:
        world = worlds.get(task.scenario)
        measures = []
        for seed in task.seeds:
            collector = lab.OutcomeCollector(world)
            api.run(None, None, world=world, seed=seed, subscribers=[collector])
            measures.append({k: _plain(v) for k, v in collector.finish().items()})
        # Looked at after the run: the world was built from the files as they were then (or
        # kept from an earlier point of the sweep, built from the same content).
        changed = [path for path, digest in task.files if _file_hash(Path(path)) != digest]
    except Exception as exc:  # noqa: BLE001 - a point's failure is reported; the others run on
        return {"key": task.key, "status": "failed", "error": describe(exc)}
    if changed:
        return {
            "key": task.key,
            "status": "failed",
            "error": f"{', '.join(changed)}: changed while the sweep ran; expected the content "
            "the point was keyed with (the point is not kept); run the sweep again",
        }
    return {"key": task.key, "status": "ok", "measures": measures}


def describe(exc: BaseException) -> str:
    """An exception as one line: the message of bad input, the type and message otherwise."""
    from sim.api import BadInput

    if isinstance(exc, ConfigError):
        return "; ".join(" ".join(p.split()) for p in exc.problems)
    text = " ".join(str(exc).split())
    if isinstance(exc, BadInput):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _plain(value: Any) -> int | float:
    """A measure as a plain number (integer fen and counts stay integers)."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def batches(tasks: Sequence[Task], workers: int) -> list[list[Task]]:
    """Consecutive points in shrinking batches (guided self-scheduling): each batch takes
    1 / (4 x workers) of the points still left, at least one. A big design is then a few dozen
    Dask tasks, not one per point (a task costs Dask a few milliseconds, a small point little
    more), while the last batches are single points, so that no worker idles at the end."""
    out, i, share = [], 0, 4 * max(workers, 1)
    while i < len(tasks):
        size = max(1, (len(tasks) - i) // share)
        out.append(list(tasks[i : i + size]))
        i += size
    return out


START_METHODS = ("spawn", "fork", "forkserver")


def execute(
    tasks: Sequence[Task],
    workers: int,
    on_result: Callable[[dict], None],
    start_method: str = "spawn",
) -> None:
    """Run ``tasks`` and hand each point's result to ``on_result`` as it finishes (in no
    particular order). ``workers`` >= 1: worker processes of a Dask LocalCluster on this
    machine (127.0.0.1, ports chosen by the system, no dashboard), one thread each, started
    by ``start_method`` (one of START_METHODS; "fork" saves each worker the ~1.5 s of
    importing the engine, but copies this process, so only a plain command-line process
    should ask for it); 0: in this process, without Dask. An exception from ``on_result``
    stops the sweep."""
    groups = batches(tasks, workers)
    if not groups:
        return  # everything was stored already: no cluster to start
    if workers == 0:
        worlds = Worlds()  # dropped with the sweep: this process may live on (a dashboard)
        for group in groups:
            for result in run_batch(group, worlds):
                on_result(result)
        return
    environ = dict(os.environ)
    try:
        _on_cluster(groups, workers, on_result, start_method)
    finally:
        # The nannies set their workers' variables (thread counts, PYTHONHASHSEED) in this
        # process's environment too; give back the one the caller had.
        os.environ.clear()
        os.environ.update(environ)


def _leave_interrupts_to_the_sweep() -> None:
    """In a worker: ignore Ctrl-C, which the terminal sends to every process of the sweep; the
    sweep's own process stops and closes the cluster (a worker interrupted by itself dies with
    a traceback and leaves the client waiting for it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_cluster(groups: list[list[Task]], workers: int, on_result, start_method: str) -> None:
    import logging

    import dask
    from distributed import Client, LocalCluster, as_completed  # here: slow to import

    with (
        # Dask's default MALLOC_TRIM_THRESHOLD_ fixes glibc's mmap threshold: every large array
        # of a day is then mapped and faulted in anew, which more than doubled the time of a
        # full-scale point (system time 0.5 -> 3.3 s for 7 days). None keeps glibc's default.
        dask.config.set(
            {
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                "distributed.worker.multiprocessing-method": start_method,
            }
        ),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # No dashboard, and the scheduler's own HTTP routes on a free loopback port: the
            # default is the fixed port 8787, taken by any other cluster on the machine.
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.CRITICAL,  # a lost worker is reported with its points
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_leave_interrupts_to_the_sweep)
        futures = {
            client.submit(run_batch, group, key=f"cardtwin-sweep-{i}", pure=False): group
            for i, group in enumerate(groups)
        }
        for future in as_completed(futures):
            try:
                results = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (memory, a signal)
                results = [
                    {"key": t.key, "status": "failed", "error": f"worker lost: {describe(exc)}"}
                    for t in futures[future]
                ]
            for result in results:
                on_result(result)


# --- the sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """What a sweep found, as ``sim.sweep_report`` reports it: the design, the base scenario,
    the run seeds, the one-at-a-time point ids, and per point (in id order) its values, status
    and error, and its measures per replication (None if it failed)."""

    base_path: str
    base: Scenario
    design: Design
    seeds: tuple[int, ...]
    oat: dict[str, tuple[int, int]]
    sample_seed: int
    points: list[dict]
    execution: dict  # what this call did (points run, reused): changes from call to call


def run(
    base_path: str | Path,
    base: Scenario,
    design: Design,
    *,
    workers: int,
    out_dir: str | Path | None = None,
    flag: str = "--param",
    outputs_origin: str = "outputs",
    progress: Callable[[int, int], None] | None = None,
    start_method: str = "spawn",
) -> Result:
    """Run a sweep of ``base`` (loaded from ``base_path`` with the design's days) on
    ``workers`` processes (0: in this one). Finished points are stored in ``out_dir/points``
    and reused from there; ``progress(done, to_run)`` hears of each point run; the worker
    processes start by ``start_method`` (see ``execute``). Raises
    ConfigError when a parameter's path is not in the scenario, an output is not a measure
    (``flag`` and ``outputs_origin`` say where values and outputs came from, for messages), or
    the base scenario or a file it reads changed while the points were being loaded."""
    shown, base_path = str(base_path), Path(base_path).resolve()
    check_paths(base_path, base, design, flag, design.days)
    seeds = tuple(base.seed + r for r in range(design.replications))
    at_base = base_values(base, design.paths)
    the_plan = plan(design, at_base, _design_seed(design, base))
    loaded = load_points(base_path, base, the_plan.points, at_base, design.days, flag, seeds)
    keys = {i: task.key for i, task in loaded.items() if isinstance(task, Task)}
    points_dir = None
    if out_dir is not None:
        points_dir = Path(out_dir) / "points"
        points_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for key in dict.fromkeys(keys.values()):
        stored = read_point(points_dir, key, seeds)
        if stored is not None:
            results[key] = stored
    checked = _check_outputs(design, results.values(), outputs_origin)
    todo: dict[str, Task] = {}  # by key: points that load the same scenario (say, a design
    for i, key in keys.items():  # point at the base's values and the base itself) run once
        if key not in results and key not in todo:
            todo[key] = loaded[i]
    done = 0

    def finished(result: dict) -> None:
        nonlocal done, checked
        results[result["key"]] = result
        if result["status"] == "ok":
            if points_dir is not None:
                store_point(points_dir, result, seeds)
            if not checked:
                checked = _check_outputs(design, [result], outputs_origin)
        done += 1
        if progress is not None:
            progress(done, len(todo))

    if progress is not None:
        progress(0, len(todo))
    execute(list(todo.values()), workers, finished, start_method)
    points = [
        _point_record(p, results.get(keys[p.id]), loaded[p.id].scenario.scale)
        if p.id in keys
        else _point_record(p, _not_loaded(loaded[p.id]), None)
        for p in the_plan.points
    ]
    execution = {
        "points": len(points),
        "distinct_runs": len(set(keys.values())),
        "points_run": len(todo),
        "points_reused": len(set(keys.values())) - len(todo),
        "points_failed": sum(p["status"] != "ok" for p in points),
        "workers": workers,
    }
    return Result(shown, base, design, seeds, the_plan.oat, the_plan.seed, points, execution)


def load_points(
    base_path: Path,
    base: Scenario,
    points: Sequence[Point],
    at_base: dict[str, Any],
    days: int | None,
    flag: str,
    seeds: Sequence[int],
) -> dict[int, Task | str]:
    """Each point's task (the scenario it runs, loaded here once per distinct set of changes,
    and its key) or, when the scenario rejects it, its message. The base file is read anew for
    each point: if the base scenario, or a file the points read, is not what it was when the
    sweep began once they are all loaded, ConfigError (nothing has run: a sweep's points all
    come from one version of its files)."""
    code = code_fingerprint()
    hashes: dict[Path, str] = {}  # each file read once: every point keyed by the same content
    by_changes: dict[tuple[tuple[str, str], ...], Task | str] = {}
    out: dict[int, Task | str] = {}
    for point in points:
        changes = overrides_of(point, at_base)
        if changes not in by_changes:
            try:
                scenario = load_point(base_path, changes, days, flag)
                files = file_hashes(scenario, hashes)
            except Exception as exc:  # noqa: BLE001 - a point's failure is reported
                by_changes[changes] = describe(exc)
            else:
                key = point_key(scenario, files, seeds, code)
                by_changes[changes] = Task(key, scenario, files, tuple(seeds))
        out[point.id] = by_changes[changes]
    _check_unchanged(base_path, base, days, flag, hashes)
    return out


def _check_unchanged(
    base_path: Path, base: Scenario, days: int | None, flag: str, hashes: dict[Path, str]
) -> None:
    """ConfigError if the base scenario or a file the points read changed while they were
    being loaded (some points would hold one version, some another)."""
    changed = [str(path) for path, digest in hashes.items() if _hash_or_none(path) != digest]
    try:
        again = load_point(base_path, (), days, flag)
    except ConfigError:
        again = None
    if again is None or scenario_hash(again) != scenario_hash(base):
        changed.insert(0, str(base_path))
    if changed:
        raise ConfigError(
            [
                f"{', '.join(changed)}: changed while the sweep was loading its points; expected "
                "the base scenario and the files it reads unchanged until its points are loaded "
                "(nothing was run); run the sweep again"
            ]
        )


def _hash_or_none(path: Path) -> str | None:
    """A file's hash, None if it cannot be read now (gone: changed too)."""
    try:
        return _file_hash(path)
    except OSError:
        return None


def _not_loaded(error: str) -> dict:
    return {"status": "failed", "error": error}


def _point_record(point: Point, result: dict | None, scale: float | None) -> dict:
    """A point as the report takes it; ``scale``: the share of cardholders its scenario
    simulates (its figures are expanded by 1/scale, so estimates below 1), None if it did not
    load."""
    record = {"point": point.id, "role": point.role, "values": point.values, "scale": scale}
    if result is None or result["status"] != "ok":
        error = "not run" if result is None else result["error"]
        return {**record, "status": "failed", "error": error, "measures": None}
    return {**record, "status": "ok", "error": None, "measures": result["measures"]}


def _design_seed(design: Design, base: Scenario) -> int:
    return base.seed if design.seed is None else design.seed


def _check_outputs(design: Design, results, origin: str) -> bool:
    """Check the design's outputs against the measures of a finished point (True once done):
    the measures are whatever sim.lab measures, so they are known from a run, not listed here."""
    for result in results:
        if result["status"] != "ok":
            continue
        measured = result["measures"][0]
        unknown = [o for o in design.outputs if o not in measured]
        if unknown:
            import difflib

            problems = []
            for name in unknown:
                close = difflib.get_close_matches(name, list(measured), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    f"{origin}: unknown measure {name!r}{hint}; expected a measure of "
                    f"sim.lab.OutcomeCollector such as {', '.join(lab.HEADLINE[:4])}, "
                    "fare_revenue_fen.card_type.longevity"
                )
            raise ConfigError(problems)
        return True
    return False
