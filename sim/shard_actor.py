"""One city's shard on a Dask worker: the map side of a distributed run.

A ``ShardActor`` (a Dask actor: it stays on its worker with its state) builds its city's world
and runs ``sim.shard.CityShard`` on a clock of its own. It has no share in anything run-wide:
its money goes to a ledger of its own and its events to a bus of its own, and both are handed
back with each call, for the driver (sim/distributed.py) to post and publish in shard order,
exactly where an in-process run would have. The driver calls, for each day:

    morning(day)   start the day and run its clock to the clearing cut-off; the uploads
                   collected for the cut-off (the clearing of the day before);
    apply / order_refunds / mark_incidents / flush   the clearing network's calls at the
                   cut-off;
    evening(day)   run to the end of the day, settle and commit it.

The driver makes every call through ``ShardActor.call``, which tells an error in the shard's own
code (``ShardFailed``, with the worker's traceback) from the run's own checks failing, which go
back as they are (``PASSED_BACK``); anything else the driver sees is the cluster's doing.

The shard, its riders, devices and outlets do exactly what they do in one process, so the
outputs are byte-identical whatever worker a shard runs on.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import traceback

import numpy as np
import simpy

from sim.clearing import MEMO_OPENING, post_flow
from sim.engine import DAY_S
from sim.errors import BadInput
from sim.events import DaySettled, EventBus, TapsFinal
from sim.incidents import IncidentError
from sim.ledger import InvariantViolation, Ledger
from sim.metrics import RunMetrics
from sim.proc_memory import proc_kib_field
from sim.shard import CityShard, RefundsOutstanding, check_issuers_cards
from sim.state import RunState


@dataclasses.dataclass(frozen=True)
class SettledCounts:
    """A settled day's taps as the driver's KPI collector reads them: how many, which declined."""

    declined: np.ndarray

    def __len__(self) -> int:
        return len(self.declined)


@dataclasses.dataclass(frozen=True)
class FinalCounts:
    """A final day's taps as the driver reads them: their statuses (KPI totals)."""

    status: np.ndarray

    def __len__(self) -> int:
        return len(self.status)


def _timed(method):
    """Count the wall time of an actor call in ``busy_seconds`` (where a distributed run's
    time goes: bench/yrd.py)."""

    @functools.wraps(method)
    def timed(self, *args):
        t0 = time.perf_counter()
        try:
            return method(self, *args)
        finally:
            name = method.__name__
            self.busy[name] = self.busy.get(name, 0.0) + time.perf_counter() - t0

    return timed


class FolderNotShared(RuntimeError):
    """The run's temporary folder is not visible from a worker: a distributed run writes each
    city's tables on its worker, so the folder must be on a disk the workers share."""


#: The file the driver leaves in the run's temporary folder for the workers to find.
PROBE_FILE = ".shared-folder-probe"

#: Errors of the run's own checks raised in a shard: they go back to the driver as they are, to
#: be reported as in an in-process run (a broken money invariant, an incident the run cannot
#: play, a folder the workers do not share, a city's data that cannot make its world).
PASSED_BACK = (InvariantViolation, IncidentError, FolderNotShared, BadInput)


@dataclasses.dataclass(eq=False)
class ShardFailed(RuntimeError):
    """CardTwin's own code raised an error in a city's shard on its worker: the worker is still
    there, but the run cannot go on. A defect to report (with ``remote_traceback``, the worker's
    traceback), unless the worker's machine caused it (an ``OSError``: a full disk, say)."""

    city: str
    shard: int
    method: str  #: the driver's call to the shard
    error_type: str  #: the exception's class name
    error: str  #: and its message
    remote_traceback: str

    def __reduce__(self):
        # Made on the worker, rebuilt on the driver from its fields.
        return type(self), dataclasses.astuple(self)

    def __str__(self) -> str:
        return (
            f"city {self.city} (shard {self.shard}) raised {self.error_type} in its "
            f"{self.method} call on its Dask worker: {self.error}"
        )


class _Host:
    """What the shard's validators and outlets need of a Mesa model: a place to register."""

    def __init__(self, seed: int) -> None:
        import mesa

        self.model = mesa.Model(seed=seed)


class ShardActor:
    """A city's shard on a worker (see the module docstring).

    Made in two steps, so that the city's world is built on the worker while the driver builds
    its own copies: the constructor builds the world; ``start`` gives it the run's shared
    clearing participants (the driver's registry) and sets the shard up.

    Args:
        scenario: the city's validated scenario (sim/scenario.py).
        outlets_file: its outlets CSV (a path the worker can read).
        shard_index: the city's position among the run's cities.
        run_seed: the run seed.
        cutoff_hour: the clearing cut-off hour (clearing.batch_cutoff_hour).
    """

    def __init__(
        self, scenario, outlets_file: str, shard_index: int, run_seed: int, cutoff_hour: int
    ) -> None:
        from pathlib import Path

        from sim.allocator import tune_for_columns
        from sim.world import build_world

        tune_for_columns()  # before the world's columns are allocated
        # A world that cannot be built is said by the driver's first call (``call``), not
        # raised here: Dask would log a failed actor's construction, traceback and all, on the
        # user's terminal, and could not tell it from a worker that went.
        self._build_failed: Exception | None = None
        try:
            self._built = build_world(scenario, Path(outlets_file))
        except ValueError as exc:  # the city's data (an outlets file too): as sim.api.build says
            self._build_failed = BadInput(str(exc))
        except Exception as exc:  # noqa: BLE001 - as ``call``: the shard's code, not the worker
            self._build_failed = ShardFailed(
                scenario.name, shard_index, "build", type(exc).__name__, str(exc),
                traceback.format_exc(),
            )  # fmt: skip
        self.scenario = scenario
        self.shard_index = shard_index
        self.run_seed = run_seed
        self.cutoff_hour = cutoff_hour
        self.writer = None  # set by open_output: then this shard writes its own tables
        self.busy: dict[str, float] = {}  # wall seconds per call (_timed)

    def call(self, method: str, *args):
        """``method(*args)`` of this shard: the driver's one way in (sim/distributed.py). An
        error of the run's own checks goes back as it is (``PASSED_BACK``); any other error
        raised here goes back as ``ShardFailed``, so that the driver can tell it from a lost
        worker, which it sees as the connection's errors. A shard whose world could not be
        built answers every call with that error."""
        if self._build_failed is not None:
            raise self._build_failed
        try:
            return getattr(self, method)(*args)
        except PASSED_BACK:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the shard's code raised
            raise ShardFailed(
                self.scenario.name,
                self.shard_index,
                method,
                type(exc).__name__,
                str(exc),
                traceback.format_exc(),
            ) from None

    def start(self, participants) -> tuple[int, int]:
        """Take the run's participants registry and set the shard up for day 0. Returns the
        city's opening card balances (fen) and its cardholders: the driver builds no people
        (``build_world(people=False)``)."""
        from sim.world import with_participants

        scenario, shard_index, run_seed = self.scenario, self.shard_index, self.run_seed
        self.world = with_participants(self._built, participants)
        self._built = None
        self.ledger = Ledger()
        self.state = RunState.fresh(self.world, run_seed, shard=shard_index, ledger=self.ledger)
        self.env = simpy.Environment()
        self.bus = EventBus()
        self.outbox: list = []
        self.bus.subscribe(self.outbox.append)
        self.host = _Host(run_seed)
        self.shard = CityShard(
            self.world, self.state, self.env, self.host.model, self.bus, None, shard_index
        )
        self.metrics = RunMetrics(len(self.world.region_ids), len(self.world.population))
        # The driver watches card lending from the settled days' taps (sim/lending.py).
        self.lending = scenario.behaviour.card_lending.share > 0
        # The opening balances, so that the shard's own float checks hold; the driver's ledger
        # posts the same opening for every city (they are not handed back).
        post_flow(
            self.ledger,
            0,
            MEMO_OPENING,
            np.array([self.shard.issuer_code]),
            np.array([int(self.state.cards.balance_fen.sum())]),
            self.world.participants,
        )
        self._posted = self.ledger.n_entries
        return int(self.state.cards.balance_fen.sum()), len(self.world.population)

    def open_output(self, tmp_dir, names, code_map, unmasked: bool, privacy_key) -> None:
        """Write this city's own tables (transactions, top-ups, sales, visits, uploads, refused
        taps, cross-city flows) here, into the run's temporary folder; the driver writes the
        run-wide ones. Its events then go back slim (``_slim``)."""
        import socket
        from pathlib import Path

        from sim.output import PartWriter
        from sim.records import RecordWriter

        probe = Path(tmp_dir) / PROBE_FILE
        if not probe.is_file():
            raise FolderNotShared(
                f"a Dask worker on host {socket.gethostname()} cannot see the run's folder "
                f"{tmp_dir}: each city's tables are written on its worker, so the folder must "
                "be on a disk every worker shares, at the same path"
            )
        self.part_writer = PartWriter(tmp_dir, names, mask=not unmasked)
        self.writer = RecordWriter(
            self.world,
            self.part_writer,  # same write() as RunOutput
            self.world.participants.ids,
            self.shard.issuer_code,
            unmasked=unmasked,
            privacy_key=privacy_key,
            shard_index=self.shard.shard_index,
            code_maps=code_map,
            tables="shard",
        )
        self.bus.subscribe(self.writer)

    def written(self) -> tuple[dict, dict]:
        """Rows and partitions written here (for the run's summary)."""
        if self.writer is None:
            return {}, {}
        return self.part_writer.rows, self.part_writer.partitions

    # ----------------------------------------------------------------- the day
    @_timed
    def morning(self, day: int):
        """Start ``day``; run to the cut-off of the day before (if any) and collect uploads."""
        if day:
            self.env.run(until=day * DAY_S)
        self.shard.start_day(day)
        if day == 0:
            return None
        return self._collect(self._cutoff(day - 1))

    @_timed
    def collect(self, cutoff_s: int):
        """Run the clock to ``cutoff_s`` and collect what was uploaded before it."""
        return self._collect(cutoff_s)

    def _collect(self, cutoff_s: int):
        if cutoff_s > self.env.now:
            self.env.run(until=cutoff_s)
        return self.shard.collect_uploads(cutoff_s)

    @_timed
    def apply(self, result):
        """A clearing run's outcome for this shard's records; its status changes."""
        return self.shard.apply_clearing(result)

    @_timed
    def order_refunds(self, pay_day: int, refunds) -> None:
        self.shard.order_refunds(pay_day, refunds)

    @_timed
    def mark_incidents(self, marks) -> None:
        """Records held by clearing-node outages at a cut-off, labelled (sim/shard.py)."""
        self.shard.mark_incidents(marks)

    @_timed
    def desk_refund_orders(self, tx_id):
        """The service desk's refunds of this shard's records (sim/shard.py)."""
        return self.shard.desk_refund_orders(tx_id)

    @_timed
    def flush(self, final: bool) -> list:
        """Days now final: their events (TapsFinal), in order."""
        self.shard.flush_final_days(final=final)
        return self._events()

    @_timed
    def evening(self, day: int):
        """Run to the end of ``day``, settle and commit it: its events, its ledger postings and
        its calibration figures (what the KPI collector computes from the run's state)."""
        self.env.run(until=(day + 1) * DAY_S - 1)
        self.shard.settle_day(day)
        event = self.shard.commit_day(day)
        check_issuers_cards(self.ledger, day, [self.shard])
        figures = self.metrics.observe_day(self.world, self.state.cards.sale_day, event)
        return self._events(), self._postings(), figures

    def evening_and_morning(self, day: int):
        """``evening(day)``, then ``morning(day + 1)`` at once: one call, so that a worker
        done with its cities' evenings starts their next mornings without waiting for the
        slowest worker and a round trip (nothing the driver does between the two reaches the
        shards). Returns the evening's result and the morning's uploads."""
        return self.evening(day), self.morning(day + 1)

    def refunds_outstanding(self) -> RefundsOutstanding:
        """Refund orders this shard had not executed by the end of the run (count, fen)."""
        return self.shard.refunds_outstanding()

    def check_all_cleared_days_closed(self) -> None:
        self.shard.check_all_cleared_days_closed()

    def final_metrics(self) -> RunMetrics:
        return self.metrics

    def busy_seconds(self) -> dict[str, float]:
        """Wall seconds spent in each kind of day call so far (not the build)."""
        return dict(self.busy)

    def peak_rss_bytes(self) -> int:
        """The worker process's peak resident memory (VmHWM; 0 where /proc is not there)."""
        return proc_kib_field("/proc/self/status", "VmHWM") or 0

    # ----------------------------------------------------------------- hand-back
    def _cutoff(self, clearing_day: int) -> int:
        return (clearing_day + 1) * DAY_S + self.cutoff_hour * 3600

    def _events(self) -> list:
        events, self.outbox[:] = list(self.outbox), []
        return [self._slim(e) for e in events] if self.writer is not None else events

    def _slim(self, event):
        """What the driver still needs of an event whose records were written here: the tap
        counts of a settled day (KPIs; all of it when card lending is watched there) and the
        statuses of a final day (its cross-city flows travel on the event)."""
        if isinstance(event, TapsFinal):
            return dataclasses.replace(event, taps=FinalCounts(event.taps.status))
        if isinstance(event, DaySettled) and not self.lending:
            return dataclasses.replace(event, taps=SettledCounts(event.taps.declined))
        return event

    def _postings(self) -> dict:
        """The ledger entries posted since the last hand-back, as columns."""
        journal = self.ledger.journal_columns()
        start, self._posted = self._posted, self.ledger.n_entries
        return {k: v[start:] for k, v in journal.items()}


__all__ = ["PASSED_BACK", "PROBE_FILE", "FolderNotShared", "ShardActor", "ShardFailed"]
