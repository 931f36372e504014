"""A run whose cities (shards) are Dask actors: the map on the workers, the clearing as the
reduce in this process.

``DistributedEngine`` has the ``Engine``'s surface (``step_day``, ``run``, ``day``, ``days``,
``kpis``, ``ledger``, ``finished``) and the same day, but each shard's work — planning, the
devices and outlets through the day, settling — runs in a ``sim.shard_actor.ShardActor`` on a
worker, all shards at once. The clearing network (agents/clearing.py) runs here, on proxies
(``RemoteShard``) that forward its calls to the actors. Each shard's ledger postings and events
come back with its calls and are posted and published here in shard order, where an in-process
run would post and publish them: the files are byte-identical to an in-process run's, on any
number of workers, on a local cluster or an external one.

A worker lost in the middle of a run loses its actors' state; the run then stops with an error
naming the city (``WorkerLost``; the caller discards the partial output), rather than going on
without it. An error raised by a shard's own code on a worker that is still there is not a lost
worker: it stops the run as ``ShardFailed`` (sim/shard_actor.py), with the worker's traceback.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import simpy

from sim.engine import DAY_S, DaySteps, clearing_network, finish_run, post_opening
from sim.events import (
    DayClosed,
    EventBus,
    IncidentEnded,
    IncidentStarted,
    RunFinished,
    Subscriber,
)
from sim.ledger import Ledger
from sim.metrics import KpiCollector
from sim.shard_actor import PASSED_BACK, PROBE_FILE, ShardFailed
from sim.state import CardState
from sim.world import World
from sim.world_settings import scaled_count


class WorkerLost(RuntimeError):
    """A worker holding a city's shard went away during the run, or the driver lost its
    connection to it (an error in the shard's own code is ``ShardFailed``)."""


class RemoteShard:
    """The clearing network's view of a shard that runs on a worker (see the module
    docstring): the calls of ``sim.shard.CityShard`` it makes one shard at a time, forwarded
    to the actor. Its calls to every shard go to all actors at once
    (``DistributedEngine._clearing_on_shards``)."""

    def __init__(self, world: World, actor, shard_index: int) -> None:
        self.world = world
        self.actor = actor
        self.shard_index = shard_index
        self.issuer_code = world.participants.code(world.scenario.output.issuer_id)
        self.uploads = None  # collected by the morning call, for the cut-off that follows

    def start(self, method: str, *args):
        """Call ``method`` on the actor without waiting (its future)."""
        try:
            return self.actor.call(method, *args)
        except Exception as exc:  # noqa: BLE001 - a lost worker shows as many exception kinds
            raise self._lost(method, exc) from exc

    def finish(self, method: str, future):
        """The result of a call ``start`` made. What the actor raised comes as it is (its
        ``call`` wraps its own errors in ``ShardFailed``); any other error is the cluster's:
        the worker is lost (KilledWorker, a closed connection, "Unable to contact Actor's
        worker")."""
        try:
            return future.result()
        except (*PASSED_BACK, ShardFailed):
            raise
        except Exception as exc:  # noqa: BLE001 - see start
            raise self._lost(method, exc) from exc

    def _call(self, method: str, *args):
        return self.finish(method, self.start(method, *args))

    def _lost(self, method: str, exc: Exception) -> WorkerLost:
        return WorkerLost(
            f"the worker running city {self.world.scenario.name} (shard {self.shard_index}) "
            f"failed during {method}: {type(exc).__name__}: {exc}"
        )

    def collect_uploads(self, cutoff_s: int):
        if self.uploads is not None:
            uploads, self.uploads = self.uploads, None
            return uploads
        return self._call("collect", cutoff_s)


class DistributedEngine(DaySteps):
    """Runs a multi-city scenario's shards on a Dask cluster, day by day (module docstring).

    Args:
        worlds: the cities' worlds (built here too, without their people unless card lending
            is watched here: the writers, the collectors and the clearing read them).
        host: the Mesa model hosting the clearing nodes (sim/model.py).
        client: a ``dask.distributed.Client``.
        seed: the run seed (default: the first scenario's).
        subscribers: callables receiving every event, after the KPI collector.
        shard_output: where each shard writes its own tables (the run's temporary folder,
            name tables, each city's code map, masking, privacy key); None: the shards' events
            come back whole, for writers here.
        pending: the shards' actors, submitted before the worlds here were built
            (``submit_shards``); default: submitted now.
    """

    def __init__(
        self,
        worlds: Sequence[World],
        host,
        client,
        *,
        seed: int | None = None,
        subscribers: Sequence[Subscriber] = (),
        shard_output: dict | None = None,
        pending: PendingShards | None = None,
    ) -> None:
        self.worlds = list(worlds)
        self.world = self.worlds[0]
        self.client = client
        run_seed = self.world.scenario.seed if seed is None else int(seed)
        self.ledger = Ledger()
        self.bus = EventBus()
        # The KPI collector reads each city's sale days for its weekly shares; here it gets the
        # figures that need them from the actors instead (``remote_figures``).
        opening = [CardState.opening(w.population) for w in self.worlds]
        self.kpis = KpiCollector(
            [(w, _SaleDays(o)) for w, o in zip(self.worlds, opening, strict=True)]
        )
        self.bus.subscribe(self.kpis)
        for subscriber in subscribers:
            self.bus.subscribe(subscriber)
        if pending is None:
            pending = submit_shards(client, [w.scenario for w in self.worlds], run_seed)
        self.actors = _built(client, pending, self.worlds)
        placement = pending.placement
        self.placement = placement
        self.shards = [
            RemoteShard(w, a, i)
            for i, (w, a) in enumerate(zip(self.worlds, self.actors, strict=True))
        ]
        self.written: list[tuple[dict, dict]] = []  # each shard's files, at the end
        # The worlds here may have no people (build_world(people=False)): the actors say what
        # their cards hold and how many there are.
        started = self._on_all("start", self.world.participants)
        self._opening_fen = [fen for fen, _ in started]
        self.cardholders = [n for _, n in started]
        if shard_output is not None:
            spec = shard_output
            probe = Path(spec["tmp_dir"]) / PROBE_FILE  # each actor looks for it (shared disk)
            probe.write_text("CardTwin: the workers must see this folder\n", encoding="utf-8")
            futures = [
                shard.start(
                    "open_output",
                    str(spec["tmp_dir"]),
                    spec["names"],
                    spec["code_maps"][i],
                    spec["unmasked"],
                    spec["privacy_key"],
                )
                for i, shard in enumerate(self.shards)
            ]
            try:
                self._gather("open_output", futures)
            finally:
                probe.unlink()
        self.env = simpy.Environment()
        self.clearing = clearing_network(
            host, self.env, self.worlds, self.ledger, self.bus, self.shards
        )
        self.clearing.on_shards = self._clearing_on_shards
        self._incident_events = _incident_events(self.worlds)
        self.finished = False
        self.day = 0
        self._next_uploads: list | None = None  # the next morning's, from the evening call
        # Wall seconds of each part of the days here (bench/yrd.py: where the time goes).
        self.driver_seconds = dict.fromkeys(("morning", "clearing", "evening"), 0.0)

    def step_day(self) -> dict[str, float]:
        """Simulate the next day on the workers, clearing here; returns its KPIs."""
        day = self._next_day()
        t0 = time.perf_counter()
        if self._next_uploads is None:  # the first day; later mornings ran with the evenings
            uploads = self._on_all("morning", day)
        else:
            uploads, self._next_uploads = self._next_uploads, None
        t1 = time.perf_counter()
        if day > 0:
            for shard, collected in zip(self.shards, uploads, strict=True):
                shard.uploads = collected
            self._publish_incidents(self.clearing.cutoff_of(day - 1))
            self.clearing.clear(day - 1, self.clearing.cutoff_of(day - 1))
        self._publish_incidents((day + 1) * DAY_S - 1)  # before the day is settled
        t2 = time.perf_counter()
        if day + 1 < self.days:
            both = self._on_all("evening_and_morning", day)
            evenings = [evening for evening, _ in both]
            self._next_uploads = [uploads for _, uploads in both]
        else:
            evenings = self._on_all("evening", day)
        for i, (events, postings, figures) in enumerate(evenings):
            _replay(self.ledger, postings)
            self.kpis.remote_figures[day, i] = figures
            for event in events:
                self.bus.publish(event)
        spent = self.driver_seconds
        spent["morning"] += t1 - t0
        spent["clearing"] += t2 - t1
        spent["evening"] += time.perf_counter() - t2
        kpis = self.kpis.close_day(day)
        self.bus.publish(DayClosed(day, kpis, self.kpis.day_records))
        self.day += 1
        if self.day == self.days:
            self._finish()
        return kpis

    def _publish_incidents(self, until_s: int | None) -> None:
        """Incident start and end events before ``until_s`` (None: all left), in time order:
        where the in-process engine's clock publishes them."""
        events = self._incident_events
        while events and (until_s is None or events[0][0] < until_s):
            self.bus.publish(events.pop(0)[2])

    def busy_seconds(self) -> dict[str, dict[str, float]]:
        """Each city's wall seconds in its day calls on its worker (``ShardActor.busy``)."""
        return {shard.world.scenario.name: shard._call("busy_seconds") for shard in self.shards}

    def peak_rss_bytes(self) -> dict[str, int]:
        """Peak resident memory of each worker that runs a shard (run_meta.json ``dask``)."""
        out = {}
        for worker in sorted(set(self.placement.values())):
            shard = next(i for i, w in self.placement.items() if w == worker)
            out[worker] = self.shards[shard]._call("peak_rss_bytes")
        return out

    # ----------------------------------------------------------------- start and end
    def _on_all(self, method: str, *args) -> list:
        """``method`` on every actor at once; their results in shard order."""
        futures = [shard.start(method, *args) for shard in self.shards]
        return self._gather(method, futures)

    def _gather(self, method: str, futures: list, shards: list[int] | None = None) -> list:
        """The calls' results in shard order (``futures`` of ``shards``, default: of every
        shard). If one fails, every other call is waited for before the error is raised: none
        is still writing when the caller discards the run."""
        results, error = [], None
        called = self.shards if shards is None else [self.shards[i] for i in shards]
        for shard, future in zip(called, futures, strict=True):
            try:
                results.append(shard.finish(method, future))
            except BaseException as exc:  # noqa: BLE001 - raised below, after the others
                error = error or exc
                results.append(None)
        if error is not None:
            raise error
        return results

    def _clearing_on_shards(self, method: str, args: list[tuple | None]) -> list:
        """The clearing network's calls to every shard, to all actors at once (results, and
        the events they publish, in shard order; None for a shard whose arguments are None:
        it is not called)."""
        remote = {
            "apply_clearing": "apply",
            "flush_final_days": "flush",
            "desk_refund_orders": "desk_refund_orders",
            "mark_incidents": "mark_incidents",
            "order_refunds": "order_refunds",
            "refunds_outstanding": "refunds_outstanding",
            "check_all_cleared_days_closed": "check_all_cleared_days_closed",
        }[method]
        called = [i for i, a in enumerate(args) if a is not None]
        futures = [self.shards[i].start(remote, *args[i]) for i in called]
        got = dict(zip(called, self._gather(remote, futures, called), strict=True))
        results = [got.get(i) for i in range(len(self.shards))]
        if method == "flush_final_days":
            for events in results:
                for event in events:
                    self.bus.publish(event)
            return [None] * len(results)
        return results

    def _open(self) -> None:
        """Opening balances and deposits, as the in-process engine posts them."""
        post_opening(
            self.ledger, self.world, [shard.issuer_code for shard in self.shards], self._opening_fen
        )

    def _finish(self) -> None:
        """The last day's batch closes after the period; outages are waited out; checks."""
        for shard, collected in zip(
            self.shards,
            self._on_all("collect", self.clearing.cutoff_of(self.days - 1)),
            strict=True,
        ):
            shard.uploads = collected
        self._publish_incidents(self.clearing.cutoff_of(self.days - 1))
        self.clearing.clear(self.days - 1, self.clearing.cutoff_of(self.days - 1))
        self._publish_incidents(None)  # outages that outlast the period end here
        for k, metrics in enumerate(self._on_all("final_metrics")):
            self.kpis.shard_metrics[k] = metrics
        finish_run(self.clearing, self.shards, self.kpis, self.ledger, self.days, lambda t: None)
        self.written = self._on_all("written")  # after the last days the run's end made final
        self.finished = True
        self.bus.publish(RunFinished(self.days, self.ledger))


def _incident_events(worlds) -> list[tuple[int, int, object]]:
    """Every shard's incident start and end events as (time, order, event), sorted: the order
    breaks ties as the in-process engine's clock does (shard, incident, start before end)."""
    events = []
    for shard, world in enumerate(worlds):
        timeline = world.incidents
        for k in range(len(timeline)):
            incident = timeline.incidents[k]
            order = 2 * (shard * len(timeline) + k)
            events.append((int(timeline.start_s[k]), order, IncidentStarted(shard, k, incident)))
            events.append((int(timeline.end_s[k]), order + 1, IncidentEnded(shard, k, incident)))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


class _SaleDays:
    """Stands in for a run state in the driver's KPI collector (it reads ``cards.sale_day``;
    the figures that need the live values come from the actors)."""

    def __init__(self, cards: CardState) -> None:
        self.cards = cards


@dataclasses.dataclass
class PendingShards:
    """Shard actors being built on the workers (``submit_shards``), and where each runs."""

    futures: list
    placement: dict[int, str]


#: What a shard's day costs on its worker, in cardholders' worth: each validator (a SimPy
#: process) costs about as much as 11 cardholders, and each shard as much as 130,000 of them
#: whatever its size (its day's calls, clocks, files). Fitted by least squares to the time each
#: city of scenarios/yrd_2024.yaml spent in its calls (bench/yrd.py, run_meta.json's
#: dask.shard_busy_s); by cardholders alone, Nantong at full scale went to one worker and the
#: ten small cities, together nearly twice its work, to the other.
COST_PER_DEVICE = 11
COST_PER_SHARD = 130_000


def shard_cost(scenario) -> int:
    """A city's (or region's) expected work per day, in cardholders' worth (``COST_PER_*``):
    its simulated cardholders, its validators as the network will be built from the scenario
    (a bus each, gates at each metro station), and the shard itself."""
    cards = sum(
        scaled_count(t.count, scenario.scale) for t in scenario.population.card_types.values()
    )
    buses = sum(r.bus.lines * r.bus.vehicles_per_line for r in scenario.regions.values())
    gates = sum(m.stations * m.gates_per_station for m in scenario.network.metro.values())
    return cards + COST_PER_DEVICE * (buses + gates) + COST_PER_SHARD


def place_shards(costs: Sequence[int], workers: Sequence[str]) -> dict[int, str]:
    """Which worker runs each shard: the costliest first, each to the least loaded worker so
    far (ties to the first worker): the longest-processing-time rule."""
    load = dict.fromkeys(workers, 0)
    placement = {}
    for i in sorted(range(len(costs)), key=lambda k: (-costs[k], k)):
        worker = min(workers, key=lambda w: (load[w], workers.index(w)))
        placement[i] = worker
        load[worker] += costs[i]
    return placement


def submit_shards(client, cities: Sequence, run_seed: int) -> PendingShards:
    """Start building each city's shard on a worker (``ShardActor``): the costliest city first
    (``shard_cost``), each to the least loaded worker, so that the workers finish their days
    at about the same time. Returns at once; the worlds are built while the caller goes on."""
    from sim.shard_actor import ShardActor

    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise WorkerLost("the Dask cluster has no workers")
    placement = place_shards([shard_cost(sc) for sc in cities], workers)
    cutoff_hour = cities[0].clearing.batch_cutoff_hour
    futures = [
        client.submit(
            ShardActor,
            sc,
            str(sc.outlets.file),
            i,
            run_seed,
            cutoff_hour,
            actor=True,
            workers=[placement[i]],
        )
        for i, sc in enumerate(cities)
    ]
    return PendingShards(futures, placement)


#: Seconds between looks at the cluster while the shards are built.
_BUILD_POLL_S = 1.0


def _built(client, pending: PendingShards, worlds) -> list:
    """The shards' actors once built. Each is pinned to its worker, so Dask cannot build it
    elsewhere if that worker goes: a worker gone while they build is a lost city, not a wait
    without end."""
    from dask.distributed import wait

    futures = pending.futures
    while True:
        try:
            _, not_done = wait(futures, timeout=_BUILD_POLL_S, return_when="ALL_COMPLETED")
        except TimeoutError:
            not_done = [f for f in futures if not f.done()]
        if not not_done:
            break
        present = set(client.scheduler_info()["workers"])
        for i, future in enumerate(futures):
            if not future.done() and pending.placement[i] not in present:
                raise WorkerLost(
                    f"the worker building city {worlds[i].scenario.name} (shard {i}) "
                    f"went away: {pending.placement[i]}"
                )
    try:
        return [f.result() for f in futures]
    except Exception as exc:  # noqa: BLE001 - a worker failed while building its cities
        raise WorkerLost(
            f"a worker failed while building its cities' shards: {type(exc).__name__}: {exc}"
        ) from exc


def _replay(ledger: Ledger, postings: dict) -> None:
    """Post a shard's ledger entries here, in their order (runs of one day at a time)."""
    days = postings["day"]
    if not len(days):
        return
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        ledger.post_many(
            int(days[a]),
            list(postings["debit"][a:b]),
            list(postings["credit"][a:b]),
            postings["amount_fen"][a:b],
            list(postings["memo"][a:b]),
        )


__all__ = [
    "DistributedEngine",
    "PendingShards",
    "RemoteShard",
    "ShardFailed",
    "WorkerLost",
    "place_shards",
    "shard_cost",
    "submit_shards",
]
