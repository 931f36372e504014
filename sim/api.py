"""The public Python API of CardTwin: what the CLI, the dashboard and tests call.

    scenario = load_scenario("scenarios/nantong_2024.yaml", ["seed=7"], days=7)
    summary = run(scenario, "runs/x")               # the whole period
    for day in iter_days(scenario, None):           # or day by day, e.g. for a live view
        print(day.date, day.kpis["taps"])

Errors a user can cause surface as ``BadInput`` (exit code 2 in the CLI); a broken money invariant
as ``InvariantViolation``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pydantic
import simpy

from agents.outlet import OutletFileError
from sim import lab, lab_report, sweep_report
from sim import sweep as sweeps
from sim.behaviour import Response
from sim.behaviour_settings import CardLending, DetectionRule
from sim.calibration import compare as compare_with_targets
from sim.calibration import load_targets as read_targets
from sim.calibration import markdown, untargeted
from sim.clearing_report import ClearingReport
from sim.cross_city import CrossCityCollector
from sim.distributed import ShardFailed, WorkerLost, submit_shards
from sim.errors import BadInput
from sim.events import Subscriber
from sim.incidents import IncidentError
from sim.ledger import InvariantViolation
from sim.lending import LendingMonitor, detect_in_files
from sim.metrics import RunMetrics
from sim.model import CardTwinModel
from sim.output import (
    OutputError,
    RunOutput,
    package_versions,
    report_json,
)
from sim.overlay import OverlayError, read_overlay
from sim.privacy import PrivacyKey, PrivacyKeyError, default_key, load_key
from sim.proc_memory import proc_kib_field
from sim.reconciliation import ReconciliationError, check_reconciliation, write_reconciliation
from sim.records import name_tables, record_writers
from sim.report_files import write_together
from sim.rng import MAX_SEED
from sim.run_dir import MARKER_FILE, RunDirError, StopSignalsHeld
from sim.run_lines import CityLines as RunCityLines
from sim.run_lines import Device as RunDevice
from sim.run_lines import Line as RunLine
from sim.run_lines import city_lines as run_lines
from sim.run_lines import network_fingerprint
from sim.run_places import City as RunCity
from sim.run_places import Incident as RunIncident
from sim.run_places import Participant as RunParticipant
from sim.run_places import Place as RunPlace
from sim.run_places import Region as RunRegion
from sim.run_places import cities as run_cities
from sim.run_places import incidents as run_incidents
from sim.run_places import other_cities as run_other_cities
from sim.run_places import participants as run_participants
from sim.run_places import regions as run_regions
from sim.run_places import shard_city as run_shard_city
from sim.run_view import DIMENSIONS as RUN_DIMENSIONS
from sim.run_view import MEASURES as RUN_MEASURES
from sim.run_view import REGION_MEASURES, RunListing, RunView, RunViewError, cardholders_of
from sim.run_view import list_runs as _list_runs
from sim.scenario import ConfigError, MultiCityScenario, Scenario, scenario_hash
from sim.scenario import load_scenario as _load
from sim.shard_actor import FolderNotShared
from sim.social_security import VenueCollector
from sim.verify import verify_run
from sim.world import World, build_world, build_worlds
from sim.world_settings import scaled_count
from sim.yaml_config import FlagOverride, field_origin

__all__ = [
    "REGION_MEASURES",
    "RUN_DIMENSIONS",
    "RUN_MEASURES",
    "BadInput",
    "DayDone",
    "FlagOverride",
    "InvariantViolation",
    "RunCity",
    "RunCityLines",
    "RunDevice",
    "RunIncident",
    "RunLine",
    "RunListing",
    "RunParticipant",
    "RunPlace",
    "RunRegion",
    "RunSummary",
    "RunView",
    "RunViewError",
    "ShardFailed",
    "WorkerLost",
    "FAIRNESS_DIMENSIONS",
    "build",
    "calibrate",
    "cardholders_of",
    "check_comparable",
    "check_out_folder",
    "compare_summary",
    "dask_client",
    "detect_card_lending",
    "iter_days",
    "list_runs",
    "load_compare_report",
    "load_policy",
    "load_scenario",
    "load_sweep_report",
    "load_targets",
    "open_run",
    "reconcile",
    "run",
    "run_cities",
    "run_incidents",
    "run_lines",
    "run_other_cities",
    "run_participants",
    "run_regions",
    "run_shard_city",
]


@dataclass
class RunSummary:
    """What a run produced: where, how long, and its totals."""

    scenario: str
    out_dir: Path | None
    days: int
    taps: int
    totals: dict[str, int]
    timings_s: dict[str, float] = field(default_factory=dict)
    metrics: RunMetrics | None = None
    world: World | None = None
    seed: int = 0
    notes: list[str] = field(default_factory=list)  # things the user should know, e.g. clean-ups
    # Card lending (sim/lending.py) by city, where the scenario lends cards: lent cards,
    # borrowed taps, and each detection rule's flagged cards with precision and recall.
    card_lending: dict[str, dict] = field(default_factory=dict)
    # Cross-city riding (sim/cross_city.py), expanded to full scale: the origin-destination
    # matrix and each simulated city's (and region's) inbound and outbound shares.
    cross_city: dict = field(default_factory=dict)
    # Social-security card entries at culture venues (sim/social_security.py), expanded to full
    # scale: in all and by holder's city x venue's city; empty when no city has venues.
    social_security: dict = field(default_factory=dict)
    # Fees each clearing node earned, and each issuer's deposit calls and deferred settlements
    # (sim/clearing_report.py).
    clearing: dict = field(default_factory=dict)
    worlds: list[World] = field(default_factory=list)  # every city's world (world: the first)

    def scaled_cities(self) -> list[tuple[str, float]]:
        """(name, scale) of the cities simulated below full scale."""
        worlds = self.worlds or ([self.world] if self.world is not None else [])
        return [(w.scenario.name, w.scenario.scale) for w in worlds if w.scenario.scale < 1]

    @property
    def taps_per_s(self) -> float:
        """Tap records per second of simulation loop (world building excluded)."""
        loop = self.timings_s.get("simulate_and_write_s", 0.0)
        return self.taps / loop if loop else 0.0


@dataclass(frozen=True)
class DayDone:
    """One simulated day, as ``iter_days`` yields it."""

    day: int
    date: dt.date
    kpis: dict[str, float]


def load_scenario(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    days: int | None = None,
    seed: int | None = None,
) -> Scenario | MultiCityScenario:
    """Load a scenario with ``--set`` overrides; ``days``/``seed`` override the period and seed."""
    extra: list[str | FlagOverride] = list(overrides)
    if days is not None:
        extra.append(FlagOverride("--days", "period.days", str(int(days))))
    if seed is not None:
        extra.append(FlagOverride("--seed", "seed", str(int(seed))))
    try:
        scenario = _load(path, extra)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read scenario: {exc.strerror or exc}") from None
    return scenario


def build(scenario: Scenario | MultiCityScenario, *, people: bool = True) -> World | list[World]:
    """Build the world of a scenario (population, network, outlets, fares); a multi-city
    scenario gives one world per city, sharing one clearing hierarchy. ``people=False``: without
    cardholders or routes (a distributed run's driver; ``sim.world.build_world``)."""
    multi = isinstance(scenario, MultiCityScenario)
    cities = list(scenario.city_scenarios) if multi else [scenario]
    if people:
        _check_memory(cities)
    try:
        if multi:
            return build_worlds(cities, [Path(c.outlets.file) for c in cities], people=people)
        return build_world(scenario, Path(scenario.outlets.file), people=people)
    except (OutletFileError, ValueError) as exc:
        raise BadInput(str(exc)) from None


#: Memory a run needs per cardholder (all columns, a day's taps, scratch; measured ~530 bytes at
#: full Nantong scale, with a margin) and for everything else.
BYTES_PER_CARD = 600
BASE_BYTES = 400 * 1024**2


def _memory_need(cities: list[Scenario]) -> tuple[int, int]:
    """Cards of a run (visitors included) and the bytes of memory it needs."""
    cards = 0
    for sc in cities:
        cards += sum(scaled_count(t.count, sc.scale) for t in sc.population.card_types.values())
        if sc.interop is not None:
            visitors = sum(20 * c.inbound_visitors_per_day for c in sc.interop.cities.values())
            cards += scaled_count(visitors, sc.scale)
    return cards, BASE_BYTES + cards * BYTES_PER_CARD


def _check_memory(cities: list[Scenario]) -> None:
    """Refuse before building a population this machine cannot hold (not after minutes of
    swapping or a MemoryError)."""
    cards, need = _memory_need(cities)
    available = _available_memory()
    if available is not None and need > available:
        raise BadInput(
            f"population.card_types: {cards:,} cards need about {need / 1024**3:,.1f} GiB to "
            f"build and run; this machine has {available / 1024**3:,.1f} GiB available; expected "
            f"fewer cards (at most about {(available - BASE_BYTES) // BYTES_PER_CARD:,})"
        )


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable), None if unknown."""
    return proc_kib_field("/proc/meminfo", "MemAvailable")


def compare(
    base: Scenario,
    variants: list[Scenario],
    *,
    replications: int = 5,
    out_dir: str | Path | None = None,
    independent_seeds: bool = False,
    fairness_threshold: float = 0.2,
    response: Response | None = None,
    sources: Sequence[str | Path] | None = None,
) -> dict:
    """Run ``base`` and every variant ``replications`` times with common random numbers
    (replication r of every scenario uses run seed ``base.seed + r``; each world is built once)
    and report every measure's baseline, variant and paired difference with its 95% CI
    (sim/lab.py). Writes ``compare.json``, ``compare.md`` and the self-contained HTML page
    ``compare.html`` (sim/lab_html.py) into ``out_dir`` if given, as one set (all replaced or
    none); a folder that cannot be written is ``BadInput`` before anything runs.

    Every variant must share the baseline's world (``check_comparable``: period, seed,
    world_seed, scale, population, regions, network), or ``BadInput`` names it before anything
    runs; ``sources`` are what to call the scenarios in that message, baseline first (the files
    they came from; default: their names).

    ``independent_seeds`` gives every scenario its own seeds (scenario i, replication r: seed
    ``base.seed + i * replications + r``) and unpaired CIs: only to measure what the pairing
    buys (bench/crn.py). ``fairness_threshold`` is the relative gap between a group's share of
    a policy's benefit (or burden) and its share of riders that flags it (0.2 = 20%).
    ``response`` is how riders react to prices in every run (default: ``run``'s)."""
    if replications < 1:
        raise BadInput(f"--replications: expected at least 1, got {replications}")
    if not 0 <= fairness_threshold < 1:
        raise BadInput(
            f"--fairness-threshold: expected a fraction in [0, 1), got {fairness_threshold}"
        )
    for sc in [base, *variants]:
        if isinstance(sc, MultiCityScenario):
            raise BadInput(f"{sc.name}: compare takes single-city scenarios")
    check_comparable(base, variants, sources)
    if out_dir is not None:
        check_out_folder(Path(out_dir), "the comparison report")
    scenarios: dict[str, Scenario] = {}
    for sc in [base, *variants]:
        name, k = sc.name, 2
        while name in scenarios:  # the same scenario twice: keep both, apart
            name, k = f"{sc.name}#{k}", k + 1
        scenarios[name] = sc
    seeds = {
        name: [
            base.seed + (i * replications if independent_seeds else 0) + r
            for r in range(replications)
        ]
        for i, name in enumerate(scenarios)
    }
    _check_run_seeds(base.seed, max(max(s) for s in seeds.values()))
    respond = {} if response is None else {"response": response}
    outcomes: dict[str, list[dict[str, float]]] = {}
    for name, sc in scenarios.items():
        world = build(sc)
        outcomes[name] = []
        for seed in seeds[name]:
            collector = lab.OutcomeCollector(world)
            run(None, None, world=world, seed=seed, subscribers=[collector], **respond)
            outcomes[name].append(collector.finish())
    report = lab.summarise(
        outcomes,
        next(iter(scenarios)),
        paired=not independent_seeds,
        fairness_threshold=fairness_threshold,
    )
    regions_zh = {rid: r.name_zh for rid, r in base.regions.items()}
    report.update(
        replications=replications,
        seeds=seeds,
        days=base.period.days,
        labels_zh=lab.group_labels_zh(regions_zh),
        scale=base.scale,  # below 1: every figure is expanded by 1/scale, so an estimate
    )
    if out_dir is not None:
        from sim import lab_html  # here: plotly is heavy and only the HTML page needs it

        texts = {
            "compare.json": report_json(report, sort_keys=True),
            "compare.md": lab_report.markdown(report),
            "compare.html": lab_html.render(report),
        }
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_together({out / name: _text_writer(text) for name, text in texts.items()})
    return report


def _text_writer(text: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(text, "utf-8")


#: What every variant of a comparison shares with its baseline: its pairing (replication r of
#: each scenario runs seed base seed + r) compares the same people on the same days and network
#: under another policy. population.concession_ages is a policy (the free-ride age moves cards
#: between types: scenarios/policies/free_from_60.yaml), so it may differ.
SAME_WORLD = ("period", "seed", "world_seed", "scale", "population", "regions", "network")


def check_comparable(
    base: Scenario, variants: Sequence[Scenario], sources: Sequence[str | Path] | None = None
) -> None:
    """``BadInput`` naming each variant that does not share the baseline's world (SAME_WORLD),
    with the first field of each part that differs and both values; ``sources``: what to call
    the scenarios, baseline first (default: their names)."""
    if sources is None:
        names = [base.name, *(v.name for v in variants)]
    else:
        names = [str(source) for source in sources]
    if len(names) != 1 + len(variants):
        raise ValueError(f"sources: expected {1 + len(variants)} names, got {len(names)}")
    ours = _world(base)
    problems = []
    for variant, name in zip(variants, names[1:], strict=True):
        theirs = _world(variant)
        found = [_first_difference(ours[f], theirs[f], f) for f in SAME_WORLD]
        diffs = [
            f"{path}: {_shown(got)} in the variant, {_shown(want)} in the baseline"
            for path, want, got in (d for d in found if d is not None)
        ]
        if diffs:
            problems.append(
                f"variant {name}: {'; '.join(diffs)}; expected the baseline {names[0]}'s: a "
                "comparison pairs the same people, days and network under another policy (the "
                f"same {', '.join(SAME_WORLD)}). To try a policy overlay written for another "
                "base on this one, apply it to the baseline (sim.api.load_policy, as the "
                "dashboard's Compare page does) or write it to extend the baseline"
            )
    if problems:
        raise BadInput("\n".join(problems))


def _world(scenario: Scenario) -> dict:
    """The parts of a scenario a comparison's variants share (SAME_WORLD), as JSON values."""
    dump = scenario.model_dump(mode="json")
    world = {name: dump[name] for name in SAME_WORLD if name != "world_seed"}
    world["world_seed"] = scenario.seed if scenario.world_seed is None else scenario.world_seed
    world["population"] = {k: v for k, v in dump["population"].items() if k != "concession_ages"}
    return world


def _first_difference(want, got, path: str):
    """The first leaf where ``got`` differs from ``want``: (its path, want's, got's), or None."""
    if isinstance(want, dict) and isinstance(got, dict):
        for key in [*want, *(k for k in got if k not in want)]:
            found = _first_difference(want.get(key), got.get(key), f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            found = _first_difference(w, g, f"{path}.{i}")
            if found is not None:
                return found
        return None
    return None if want == got else (path, want, got)


def _shown(value) -> str:
    return "not set" if value is None else json.dumps(value, ensure_ascii=False)


def _check_run_seeds(seed: int, last: int) -> None:
    """Replications run the seeds from the scenario's on: the last must be a seed too."""
    if last > MAX_SEED:
        raise BadInput(
            f"seed {seed}: the replications would run seeds up to {last}, past the largest "
            f"seed {MAX_SEED}; expected a smaller seed"
        )


def check_out_folder(out: Path, what: str) -> None:
    """``BadInput`` unless ``out`` is a folder that can be written, or one that can be made:
    found before a long run, not after it. ``what`` names what goes there, for the message
    (``--out X: is a file; expected a folder for <what>``): compare, sweep and drill use it."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: is a file; expected a folder for {what}")
    for folder in (out, *out.parents):  # a run's folder is its own: a re-run would refuse it
        if (folder / MARKER_FILE).is_file():
            raise BadInput(
                f"--out {out}: {'is' if folder == out else 'is inside'} the run folder {folder}; "
                f"expected a folder of its own for {what}"
            )
    parent = _existing_parent(out)
    if not parent.is_dir():
        raise BadInput(f"--out {out}: {parent} is a file; expected a folder for {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"--out {out}: no permission to write in {parent}; expected {what}'s folder")


def sweep(
    base: str | Path,
    design: str | Path | Sequence[str] | sweeps.Design,
    *,
    replications: int | None = None,
    days: int | None = None,
    outputs: Sequence[str] | None = None,
    workers: int | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    start_method: str = "spawn",
) -> dict:
    """Sweep the scenario file ``base`` over a design and summarise it (sim/sweep.py,
    sim/sweep_report.py): ``design`` is a design file, ``--param`` texts
    (``["fares.transfer.window_min=60,90"]``, a grid) or a ``sim.sweep.Design``;
    ``replications``, ``days`` and ``outputs`` override the design's. Every point runs with
    the run seeds ``base seed + r`` (common random numbers) on ``workers`` worker processes of a
    Dask LocalCluster (default: as many as the cores and memory allow; 0: in this process),
    started by ``start_method`` ("spawn", or "fork" from a plain command-line process: see
    ``sim.sweep.execute``).

    With ``out_dir``, writes ``sweep.parquet``, ``sweep.csv``, ``sweep.json`` and ``sweep.html``
    there and keeps each finished point in ``out_dir/points``, where a later sweep finds it
    instead of running it again. Returns the summary (what ``sweep.json`` holds: per point its
    values, status, error and per output the replications, mean and 95% CI; one-at-a-time
    sensitivity; Sobol indices) plus ``execution``: points run, reused and failed by this call.
    A point that fails is in the summary with its error; the others are kept. Bad input
    (design, parameter paths no point can take, scenario, outputs, a base edited while the
    points load) raises ``BadInput``."""
    try:
        spec, flag = _sweep_design(design)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    settings = {"replications": replications, "days": days, "outputs": outputs}
    for name, value in settings.items():
        if name != "outputs" and value is not None and value < 1:
            raise BadInput(f"--{name}: expected at least 1, got {value}")
    if outputs is not None and not outputs:
        raise BadInput("--output: expected at least one output")
    if start_method not in sweeps.START_METHODS:
        expected = ", ".join(sweeps.START_METHODS)
        raise BadInput(f"start_method: expected one of {expected}, got {start_method!r}")
    update = {k: (tuple(v) if k == "outputs" else v) for k, v in settings.items() if v is not None}
    try:  # validated again with the flags' values: outputs distinct, days within bounds
        spec = sweeps.Design.model_validate({**spec.model_dump(), **update})
    except pydantic.ValidationError as exc:
        raise BadInput(
            "; ".join(
                f"{_SWEEP_FLAGS.get(e['loc'][0], e['loc'][0])}: "
                f"{e['msg'].removeprefix('Value error, ')}; got {e['input']!r}"
                for e in exc.errors()
            )
        ) from None
    if out_dir is not None:
        check_out_folder(Path(out_dir), "the sweep's report and points")
    scenario = load_scenario(base, days=spec.days)
    if isinstance(scenario, MultiCityScenario):
        raise BadInput(f"{base}: a sweep takes a single-city scenario")
    _check_run_seeds(scenario.seed, scenario.seed + spec.replications - 1)
    workers = _sweep_workers(scenario, workers)
    if outputs is not None:
        origin = "--output"
    elif isinstance(design, str | Path):
        origin = f"{field_origin(design, 'outputs')}: outputs"
    else:
        origin = "outputs"
    try:
        result = sweeps.run(
            base,
            scenario,
            spec,
            workers=workers,
            out_dir=out_dir,
            flag=flag,
            outputs_origin=origin,
            progress=progress,
            start_method=start_method,
        )
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    summary = sweep_report.summarise(result)
    if out_dir is not None:
        sweep_report.write(out_dir, summary)
    return {**summary, "execution": result.execution}


_SWEEP_FLAGS = {"outputs": "--output", "days": "--days", "replications": "--replications"}


def _sweep_design(design) -> tuple[sweeps.Design, str]:
    """The design, and how its values are named in messages (the flag or the file)."""
    if isinstance(design, sweeps.Design):
        return design, "parameter"
    if isinstance(design, str | Path):
        return sweeps.load_design(design), f"{design}: parameter"
    return sweeps.grid_design(list(design)), "--param"


def _sweep_workers(scenario: Scenario, requested: int | None) -> int:
    """Worker processes for a sweep: each builds worlds of ``scenario``'s size, one at a time;
    by default as many as there are cores and memory for."""
    _, need = _memory_need([scenario])
    available = _available_memory()
    fit = None if available is None else max(1, available // need)
    if requested is None:
        cores = os.cpu_count() or 1
        return cores if fit is None else min(cores, fit)
    if requested < 0:
        raise BadInput(f"--workers: expected 0 (in this process) or more, got {requested}")
    if fit is not None and requested > fit:
        raise BadInput(
            f"--workers {requested}: each worker needs about {need / 1024**3:,.1f} GiB for this "
            f"scenario and {available / 1024**3:,.1f} GiB is available; expected at most {fit}"
        )
    return requested


def load_compare_report(path: str | Path) -> dict:
    """A ``compare.json`` read back as ``compare`` returned it (what ``sim.lab_html.render``
    and ``sim.lab_report`` take): the nulls that stand for numbers JSON cannot hold (an
    interval of one replication, an average over nothing) become NaN again."""
    return json.loads(Path(path).read_text(encoding="utf-8"), object_hook=_nan_for_null)


def _nan_for_null(mapping: dict) -> dict:
    return {
        k: [math.nan if x is None else x for x in v]
        if isinstance(v, list)
        else (math.nan if v is None else v)
        for k, v in mapping.items()
    }


def verify(run_dir: str | Path) -> list[str]:
    """Problems in a run folder, recomputed from its files (sim/verify.py); [] if none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: no such run folder")
    return verify_run(run_dir)


def reconcile(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write and check the per-participant reconciliation files of a finished run
    (sim/reconciliation.py); returns their folder. Raises BadInput naming what is wrong."""
    try:
        out = write_reconciliation(run_dir, out_dir)
        problems = check_reconciliation(run_dir, out)
    except ReconciliationError as exc:
        raise BadInput(str(exc)) from None
    if problems:
        raise InvariantViolation(
            "reconciliation_agrees", 0, problems[0], f"{len(problems)} file(s)"
        )
    return out


def privacy_key(path: str | Path | None) -> PrivacyKey | None:
    """The key in ``path`` (None: the machine's default key, chosen when the run starts)."""
    if path is None:
        return None
    try:
        return load_key(path)
    except PrivacyKeyError as exc:
        raise BadInput(f"--key-file {exc}") from None


def iter_days(
    scenario: Scenario | MultiCityScenario | None,
    out_dir: str | Path | None = None,
    *,
    world: World | list[World] | None = None,
    seed: int | None = None,
    unmasked: bool = False,
    scenario_path: str | Path | None = None,
    env: simpy.Environment | None = None,
    subscribers: tuple[Subscriber, ...] | list[Subscriber] = (),
    response: Response | None = None,
    shard_order: list[int] | None = None,
    privacy_key: PrivacyKey | None = None,
    client=None,
    freeze_gc: bool = False,
) -> Iterator[DayDone]:
    """Simulate ``scenario`` (or an existing ``world``) day by day, yielding each finished day.

    Outputs go to ``out_dir`` (None: no files) and are committed only once the last day is done;
    stopping the iteration early, or an error, leaves ``out_dir`` as it was. The generator's
    return value (``StopIteration.value``; ``run`` returns it) is the ``RunSummary``.
    ``seed`` sets the run seed (default: the scenario's); the world keeps its own seed, so one
    world serves several runs. ``env`` can pace the run (``simpy.rt.RealtimeEnvironment``).
    Identities are masked unless ``unmasked`` or the scenario's ``output.mask_identities`` is
    false. Pseudonyms, identities and check values are keyed with ``privacy_key`` (default:
    the machine's key, sim/privacy.py), which is never written. ``shard_order`` sets the order a
    multi-city run computes its cities' days in (the outputs do not depend on it).
    ``response`` sets how riders react to prices (default: each scenario's behavioural response,
    ``sim.behaviour.scenario_response``; ``sim.behaviour.NO_RESPONSE`` for none).
    ``client`` (a ``dask.distributed.Client``) runs the cities as actors on its workers
    (sim/distributed.py): the same files, with the clearing as the reduce step here.
    ``freeze_gc``: keep the objects alive when the days start (the worlds, the model) out of
    the cyclic collector's full collections while they run (``gc.freeze``, process-wide: for a
    process that makes one run at a time, the command line and a stream; it also keeps any
    cyclic garbage of that moment until the run ends).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    spec = scenario
    pending = None
    if client is not None and (env is not None or response is not None or shard_order is not None):
        raise BadInput("a run on a Dask cluster takes no env, response or shard_order")
    if client is not None and world is None:
        # The workers build their cities' worlds while this process builds its own copies.
        cities = _cities(scenario)
        pending = submit_shards(client, cities, cities[0].seed if seed is None else int(seed))
    if world is None:
        # On Dask the workers hold the people; this process needs them only to watch card
        # lending (sim/lending.py) from the settled days' taps.
        lends = any(c.behaviour.card_lending.share > 0 for c in _cities(scenario))
        world = build(scenario, people=client is None or lends)
    worlds = [world] if isinstance(world, World) else list(world)
    world = worlds[0]
    scenario = world.scenario
    if spec is None or isinstance(spec, Scenario):
        spec = scenario
    timings["build_world_s"] = time.perf_counter() - t0
    run_seed = scenario.seed if seed is None else int(seed)
    unmasked = unmasked or not all(w.scenario.output.mask_identities for w in worlds)
    try:
        key = privacy_key if privacy_key is not None else default_key()
    except (PrivacyKeyError, OSError) as exc:
        raise BadInput(f"privacy key: {exc}") from None
    names, code_maps = name_tables(worlds)
    output = None
    # A stop arriving while the folder opens waits for the try below, which discards it.
    held = StopSignalsHeld()
    if out_dir is not None:
        try:
            output = RunOutput(
                out_dir,
                names=names,
                mask_identities=not unmasked,
                # A day emits ~10 partitions at once; room for a few days keeps the simulation
                # from waiting on the writer thread's bursts (one transactions day is ~40 MB).
                queue_size=32,
            )
        except RunDirError as exc:
            held.release()
            raise BadInput(f"--out: {exc}") from None
        except OSError as exc:
            held.release()
            raise BadInput(f"--out {out_dir}: {exc}") from None
        except BaseException:
            held.release()
            raise
    t1 = time.perf_counter()
    try:  # from here on, whatever stops the run (errors, Ctrl-C, SIGTERM) discards the output
        held.release()
        writers = record_writers(
            worlds,
            output,
            unmasked=unmasked,
            privacy_key=key,
            # On Dask each city writes its own tables on its worker (sim/shard_actor.py).
            tables="run" if client is not None else "all",
        )
        shard_output = None
        if client is not None and output is not None:
            shard_output = {
                "tmp_dir": output.tmp_dir,
                "names": names,
                "code_maps": code_maps,
                "unmasked": unmasked,
                "privacy_key": key,
            }
        monitors = [
            LendingMonitor(w, shard=i)
            for i, w in enumerate(worlds)
            if w.scenario.behaviour.card_lending.share > 0
        ]
        cross_city = CrossCityCollector(worlds)
        venues = VenueCollector(worlds)
        clearing_report = ClearingReport(world.participants)
        model = CardTwinModel(
            world=worlds,
            seed=run_seed,
            env=env,
            subscribers=[*writers, *monitors, cross_city, venues, clearing_report, *subscribers],
            response=response,
            shard_order=shard_order,
            client=client,
            shard_output=shard_output,
            pending=pending,
        )
        # The worlds and the model live the whole run: their ~250,000 objects are kept out of
        # the cyclic collector's full collections (~120 ms each, one every few simulated
        # weeks at full scale, up to a tenth of a week's run); what the days make is not.
        if freeze_gc:
            gc.freeze()
        try:
            while model.running:
                model.step()
                day = model.engine.day - 1
                yield DayDone(day, world.calendar.date_of(day), model.kpis)
        finally:
            if freeze_gc:
                gc.unfreeze()
    except OutputError as exc:  # the writer failed (a full disk, say): nothing is kept
        output.abort()
        raise BadInput(f"--out {out_dir}: {exc}") from None
    except IncidentError as exc:  # an incident the run could not play: nothing is kept
        if output is not None:
            output.abort()
        raise BadInput(f"{scenario_path or scenario.name}: {exc}") from None
    except FolderNotShared as exc:  # --out not on a disk the Dask workers share
        output.abort()
        raise BadInput(f"--out {out_dir}: {exc}") from None
    except BaseException:
        if output is not None:
            output.abort()
        raise
    # Until the run is committed, whatever stops it (an error, Ctrl-C) discards the output; a
    # stop during the commit itself is dropped, so that it never leaves half a folder behind.
    try:
        timings["simulate_and_write_s"] = time.perf_counter() - t1
        kpis = model.engine.kpis
        workers = None
        if client is not None:  # where each city ran, and each worker's peak memory
            engine = model.engine
            for rows, partitions in engine.written:  # the files the shards wrote
                if output is not None:
                    output.add_written(rows, partitions)
            workers = {
                "shards": {w.scenario.name: engine.placement[i] for i, w in enumerate(worlds)},
                "peak_rss_bytes": engine.peak_rss_bytes(),
                "driver_s": {k: round(v, 3) for k, v in engine.driver_seconds.items()},
                "shard_busy_s": {
                    city: {k: round(v, 3) for k, v in calls.items()}
                    for city, calls in engine.busy_seconds().items()
                },
            }
        lending = _lending_reports(monitors)  # scored once: every rule over the whole population
        reports = {
            "cross_city": cross_city.report(),
            "social_security": venues.report(),
            "clearing": clearing_report.report(),
        }
        if output is not None:
            cardholders = (
                model.engine.cardholders
                if client is not None
                else [len(w.population) for w in worlds]
            )
            meta = _run_meta(
                spec, scenario_path, worlds, cardholders, run_seed, kpis, timings, unmasked
            )
            meta["privacy_key_id"] = key.fingerprint  # which key, never the key
            meta["cross_city"] = reports["cross_city"]
            if reports["social_security"]:
                meta["social_security"] = reports["social_security"]
            meta["clearing"] = reports["clearing"]
            if workers is not None:
                meta["dask"] = workers
            if monitors:
                meta["card_lending"] = lending
            try:
                # The swap and the catalogue take under a second: a stop meanwhile is dropped,
                # and the run ends written, as it then is.
                held = StopSignalsHeld()
                try:
                    output.commit(meta)  # and the catalogue: a view per table, typed if empty
                finally:
                    held.forget()
            except (OutputError, OSError, duckdb.Error) as exc:
                # The earlier run, if any, is back in place (RunOutput.commit rolls back).
                raise BadInput(f"--out {out_dir}: {_one_line(exc)}") from None
    except BaseException:
        if output is not None:
            output.abort()  # nothing once committed
        raise
    timings["total_s"] = time.perf_counter() - t0
    notes = [
        f"removed {path}, left behind by a run that was killed"
        for path in (output.removed_leftovers if output is not None else [])
    ]
    notes += _incidents_after_the_period(worlds)
    return RunSummary(
        spec.name,
        Path(out_dir) if out_dir else None,
        world.days,
        kpis.taps,
        kpis.totals,
        timings,
        metrics=kpis.metrics,
        world=world,
        seed=run_seed,
        notes=notes,
        card_lending=lending,
        cross_city=reports["cross_city"],
        social_security=reports["social_security"],
        clearing=reports["clearing"],
        worlds=worlds,
    )


def _incidents_after_the_period(worlds: Sequence[World]) -> list[str]:
    """A note for each incident that starts after the period (kept, not played: a run
    shortened with --days keeps its scenario's later incidents; a typo in a year would be
    silent otherwise)."""
    late: dict[tuple[str, str], list[str]] = {}  # one note for an outage the cities share
    for world in worlds:
        last = world.calendar.date_of(world.days - 1)
        for incident in world.scenario.incidents:
            if incident.start.date() > last:
                when = f"{incident.start:%Y-%m-%d %H:%M}, after the period's last day {last}"
                late.setdefault((incident.id, when), []).append(world.scenario.name)
    return [
        f"incident {incident_id} ({', '.join(names)}) starts {when}: not played"
        for (incident_id, when), names in late.items()
    ]


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, shards: int = 0):
    """A ``dask.distributed.Client`` for ``run(..., client=)``: a local cluster of ``workers``
    processes, or the cluster at ``scheduler``; None (no cluster) when neither is given.
    ``shards``: the run's shards, if known (a worker runs whole shards: more workers than
    shards would start for nothing)."""
    if workers is None and scheduler is None:
        yield None
        return
    if workers is not None and shards and workers > shards:
        raise BadInput(
            f"--workers {workers}: the scenario has {shards} shard(s) (cities, or regions of a "
            f"split city) and a worker runs whole shards; expected at most {shards}"
        )
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError, TypeError, NotImplementedError) as exc:
            # TypeError, NotImplementedError: tls:// without certificates, ucx:// not installed
            raise BadInput(f"--scheduler {scheduler}: cannot connect: {_one_line(exc)}") from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            # The scheduler serves HTTP whatever is asked (None means its default, :8787, and a
            # warning when that is taken): a free loopback port, as the sweep's cluster does.
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _cities(scenario: Scenario | MultiCityScenario) -> list[Scenario]:
    """A run's city scenarios (one, or a multi-city file's shards)."""
    if isinstance(scenario, MultiCityScenario):
        return list(scenario.city_scenarios)
    return [scenario]


def run(
    scenario: Scenario | MultiCityScenario | None, out_dir: str | Path | None, **options
) -> RunSummary:
    """Simulate the whole period at once; takes the options of ``iter_days``."""
    days = iter_days(scenario, out_dir, **options)
    while True:
        try:
            next(days)
        except StopIteration as done:
            return done.value


def calibrate(
    scenario: Scenario,
    targets_path: str | Path,
    out_dir: str | Path,
    *,
    subscribers: tuple[Subscriber, ...] | list[Subscriber] = (),
) -> dict:
    """Run the scenario's whole period (no Parquet output) and compare it with the targets.

    Writes ``calibration.json`` and ``calibration.md`` into ``out_dir`` and returns the report.
    """
    if isinstance(scenario, MultiCityScenario):
        raise BadInput(
            f"{scenario.name}: calibrate compares one city with its published figures; give it "
            "one city's scenario file, not a multi-city one"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: is a file; expected a folder for the calibration report")
    if not os.access(out if out.exists() else _existing_parent(out), os.W_OK):
        raise BadInput(f"--out {out}: no permission to write there")
    targets = load_targets(targets_path)  # before the run: a mistake in it is bad input
    summary = run(scenario, None, subscribers=subscribers)
    world = summary.world
    report = compare_with_targets(
        targets, summary.metrics, world.population, world.days, world.scenario.scale
    )
    report["untargeted"] = untargeted(
        summary.metrics, [r.name_zh for r in scenario.regions.values()]
    )
    report["scenario"] = scenario.name
    report["seed"] = scenario.seed
    report["scenario_hash"] = scenario_hash(scenario)
    report["timings_s"] = {k: round(v, 2) for k, v in summary.timings_s.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(report_json(report), "utf-8")
    (out / "calibration.md").write_text(markdown(report), "utf-8")
    return report


def load_targets(path: str | Path) -> dict:
    """A calibration targets file (sim/calibration.py ``Targets``), validated whole; BadInput
    naming the file, line, field path and what was expected if it is wrong."""
    try:
        return read_targets(path)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


def _lending_reports(monitors: list[LendingMonitor]) -> dict[str, dict]:
    """Each lending city's detection report, with the issuer whose cards it watched."""
    return {
        m.world.scenario.name: {**m.report(), "issuer_id": m.world.scenario.output.issuer_id}
        for m in monitors
    }


#: The dimensions a comparison's fairness section splits riders by (sim/lab.py).
FAIRNESS_DIMENSIONS = lab.FAIRNESS_DIMENSIONS


def compare_summary(report: dict, variant: str, lang: str) -> str:
    """The plain-language summary of one variant of a comparison, in ``lang`` ("zh" or "en")
    (sim/lab_report.py)."""
    return lab_report.summary(report, variant, lang)


def load_policy(
    policy: str | Path, base: str | Path, *, days: int | None = None
) -> Scenario | MultiCityScenario:
    """The policy overlay ``policy`` applied to the scenario file ``base`` (sim/overlay.py):
    its own file when ``base`` is what it extends (directly, or through other overlays), else
    ``base`` with the settings of the policy and of every overlay it extends (up to, not
    including, the root base) as overrides, named after the policy. ``BadInput`` if either
    cannot be read or validated."""
    policy, base = Path(policy), Path(base)
    try:
        overlay = read_overlay(policy)
    except OverlayError as exc:
        raise BadInput(str(exc)) from None
    if base.resolve() in overlay.files:
        return load_scenario(policy, days=days)  # its own baseline: exactly its file
    return load_scenario(base, [*overlay.overrides, f"name={json.dumps(overlay.name)}"], days=days)


def load_sweep_report(path: str | Path) -> dict:
    """A sweep's ``sweep.json`` (what ``sweep`` returns, less ``execution``); ``BadInput`` if
    it cannot be read."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: cannot read the sweep report ({_one_line(exc)})") from None
    if not isinstance(report, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return report


def open_run(run_dir: str | Path) -> RunView:
    """A finished run folder, ready for aggregate queries (sim/run_view.py). A folder that is
    missing, half-written, of another schema version or with files missing is ``BadInput``."""
    try:
        return RunView.open(run_dir)
    except RunViewError as exc:
        raise BadInput(str(exc)) from None


def list_runs(root: str | Path) -> list[RunListing]:
    """The run folders under ``root``, newest first, each with its problem if it cannot be
    opened (sim/run_view.py)."""
    return _list_runs(root)


def detect_card_lending(
    run_dir: str | Path, rules: list[DetectionRule] | list[dict] | None = None
) -> dict[str, dict]:
    """Card-lending detection recomputed from a run folder's tap records, against its ground
    truth (``lending_labels``), by city: lent cards, borrowed taps, and per rule the flagged
    cards, true and false positives, missed cards, precision and recall (plain data).

    ``rules`` (``DetectionRule`` or its fields as a mapping) default to the rules the run used
    (``behaviour.card_lending.detection``). Following a card across days needs the stable
    card id as ``token_id``: an ``--unmasked`` run. A masked run's own detection, computed
    while it ran, is in its ``run_meta.json`` (``card_lending``) and ``RunSummary``.
    """
    run_dir = Path(run_dir)
    try:
        meta = json.loads((run_dir / "run_meta.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{run_dir}: not a finished run folder ({_one_line(exc)})") from None
    if meta.get("identities_masked", True):
        raise BadInput(
            f"{run_dir}: identities are masked: token_id changes every day, so a card cannot be "
            "followed across days; expected a run made with --unmasked (a masked run's "
            "detection, computed during the run, is card_lending in its run_meta.json)"
        )
    cities = meta.get("card_lending") or {meta["scenario"]: {"issuer_id": None}}
    try:
        chosen = None if rules is None else [DetectionRule.model_validate(r) for r in rules]
    except pydantic.ValidationError as exc:
        raise BadInput(f"detection rules: {_one_line(exc)}") from None
    out = {}
    for city, report in cities.items():
        used = report.get("rules")
        city_rules = chosen or (
            [DetectionRule.model_validate(_rule_fields(r)) for r in used.values()]
            if used
            else list(CardLending().detection)
        )
        issuer = report.get("issuer_id")
        out[city] = {**detect_in_files(run_dir, tuple(city_rules), issuer), "issuer_id": issuer}
    return out


def _rule_fields(report: dict) -> dict:
    """The rule's own fields out of a rule's report (which adds its scores)."""
    return {k: v for k, v in report.items() if k in DetectionRule.model_fields}


def _one_line(exc: BaseException) -> str:
    """An exception as one line (DuckDB and OS errors can span several)."""
    return " ".join(str(exc).split())


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _region_part(scenario) -> dict:
    """``{"region_part": {"city", "region"}}`` for a region's part of a city split by region
    (sim/region_shards.py), else nothing."""
    part = scenario.region_part
    return {} if part is None else {"region_part": {"city": part.city, "region": part.region}}


def _run_meta(spec, scenario_path, worlds, cardholders, run_seed, kpis, timings, unmasked) -> dict:
    world = worlds[0]
    scenario = world.scenario
    return {
        "scenario": spec.name,
        "scenario_file": str(scenario_path) if scenario_path else None,
        "scenario_hash": scenario_hash(spec),
        "seed": run_seed,
        "world_seed": scenario.seed if scenario.world_seed is None else scenario.world_seed,
        "cities": [
            {
                "name": w.scenario.name,
                "city_code": w.scenario.output.city_code,
                "cardholders": n,
                "scale": w.scenario.scale,
                "expansion_weight": 1.0 / w.scenario.scale,
                "world_seed": (
                    w.scenario.seed if w.scenario.world_seed is None else w.scenario.world_seed
                ),
                # The city's validated settings, so that a reader of the run (the dashboard)
                # sees the regions, outlets and incident timeline it ran with, --set included.
                "settings": w.scenario.model_dump(mode="json"),
                # The settings' regions and metro lines in the scenario's order, which this
                # file's sorted keys lose: the network is generated in that order, so a reader
                # that builds it again (sim/run_lines.py) numbers lines and devices as the run.
                "order": {
                    "regions": list(w.scenario.regions),
                    "metro": list(w.scenario.network.metro),
                },
                # What that reader checks its rebuilt network against before naming anything
                # by it (a hand-edited order or another version's network: ids, not wrong names).
                "network_fingerprint": network_fingerprint(w.network, w.n_local_lines),
                # A region's shard of a city split by region: which city and region (the
                # settings leave the loader's marker out), so a reader sees one city.
                **_region_part(w.scenario),
            }
            for w, n in zip(worlds, cardholders, strict=True)
        ],
        "period": {
            "start": scenario.period.start.isoformat(),
            "days": world.days,
            "end": (scenario.period.start + dt.timedelta(days=world.days - 1)).isoformat(),
        },
        "cardholders": cardholders[0],
        "synthetic": True,
        "identities_masked": not unmasked,
        "package_versions": package_versions(),
        "python": platform.python_version(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "totals": kpis.totals,
        "taps": kpis.taps,
    }
