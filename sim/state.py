"""Run state: the columnar state a run changes while a world is simulated.

The World (sim/world.py) is built once from a scenario and never changes; its arrays are read-only.
A run starts from ``RunState.fresh(world, seed)`` (one per city) and writes its columnar state
here: card balances and counters, cards whose sale slipped to a later day, device serial numbers,
the upload log and the money ledger (shared by the cities of a run). So one world can be run
under several policies or run seeds (common random numbers, replications).

The rest of a run's state belongs to the run's objects, never to the world: the devices' buffers
and the outlets' queues to their Mesa agents (sim/model.py), each clearing node's duplicate
screening, hash chain and due settlements to its agent (agents/clearing.py), a city's records
awaiting their clearing status to its shard's ``ClearingBook`` (sim/shard.py), and the clock to
the SimPy environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.validator import UploadLog
from sim.ledger import Ledger
from sim.rng import Streams, stream_key


@dataclass
class CardState:
    """The per-card columns a run changes, indexed by population row."""

    balance_fen: np.ndarray  # int64, stored value on the card
    card_counter: np.ndarray  # int32, JT/T 978 purchase counter (wraps at 65536)
    load_counter: np.ndarray  # int32, JT/T 978 load (top-up) counter
    month_spent_fen: np.ndarray  # int64, fares charged so far this month (monthly caps)
    sale_day: np.ndarray  # int32, day the card is sold (moves when an outlet cannot serve)

    @classmethod
    def opening(cls, population) -> CardState:
        """State at the start of the period: cards not sold yet hold no stored value."""
        sold = population.issue_day < 0
        return cls(
            balance_fen=np.where(sold, population.opening_balance_fen, 0).astype(np.int64),
            card_counter=population.opening_card_counter.astype(np.int32),
            load_counter=np.zeros(len(population), dtype=np.int32),
            month_spent_fen=np.zeros(len(population), dtype=np.int64),
            sale_day=population.issue_day.astype(np.int32),
        )


class RowScratch:
    """Population-sized scratch arrays for ``unique_rows`` and ``count_distinct`` (reused every
    day, never read across days: scratch, not state)."""

    def __init__(self, n_rows: int) -> None:
        self.mask = np.zeros(n_rows, dtype=bool)
        self.pos = np.zeros(n_rows, dtype=np.int64)
        # Rows sort faster as int32, which holds any population this side of 2**31.
        self._row_dtype = np.int32 if n_rows <= np.iinfo(np.int32).max else np.int64

    def unique_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct rows in ``rows`` (ascending) and each element's index among them.

        Same result as ``np.unique(rows, return_inverse=True)``, several times faster on a day's
        taps: the rows are sorted as int32 (they index the population), not argsorted, and the
        inverse is read back from a population-sized table.
        """
        s = np.sort(rows.astype(self._row_dtype))
        keep = np.empty(len(s), dtype=bool)
        keep[:1] = True
        np.not_equal(s[1:], s[:-1], out=keep[1:])
        distinct = s[keep].astype(np.int64)
        self.pos[distinct] = np.arange(len(distinct))
        return distinct, self.pos[rows]

    def count_distinct(self, rows: np.ndarray) -> int:
        """How many distinct rows ``rows`` holds (``len(unique_rows(rows)[0])``, without
        listing them)."""
        self.mask[rows] = True
        n = int(np.count_nonzero(self.mask))
        self.mask[rows] = False
        return n


@dataclass
class RunState:
    """All mutable state of one shard's run (see the module docstring). The shards of a run
    share one ledger; each has its own random streams, cards and devices."""

    seed: int  # root of the run's behaviour and device streams
    streams: Streams
    cards: CardState
    scratch: RowScratch
    ledger: Ledger = field(default_factory=Ledger)
    upload_log: UploadLog = field(default_factory=UploadLog)
    device_serial: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Card sales an outlet could not serve, by the day the buyer comes back.
    sales_carry: dict[int, list[np.ndarray]] = field(default_factory=dict)
    # The last day of each of the world's riding rows (``world.riding_rows``), gathered once
    # for the daily pool of live cards (sim/day.py); a copy of static data, never changed.
    riding_end_day: np.ndarray | None = None

    @classmethod
    def fresh(
        cls, world, seed: int | None = None, *, shard: int = 0, ledger: Ledger | None = None
    ) -> RunState:
        """A run of ``world`` from its first day; ``seed`` defaults to the scenario's seed.

        Shard ``k > 0`` of a multi-city run draws from streams keyed by (seed, k), so two cities
        whose card ids overlap do not share random numbers; shard 0 uses the seed itself."""
        run_seed = world.scenario.seed if seed is None else int(seed)
        stream_seed = run_seed if shard == 0 else stream_key(f"shard:{run_seed}:{shard}")
        return cls(
            seed=run_seed,
            streams=Streams(stream_seed),
            cards=CardState.opening(world.population),
            scratch=RowScratch(len(world.population)),
            ledger=ledger if ledger is not None else Ledger(),
            device_serial=np.zeros(len(world.network.devices.line), dtype=np.int64),
        )
