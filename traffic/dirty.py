"""Dirty data with ground truth: defects injected into a tap stream, and a label for every record.

``--inject KIND=RATE`` (repeatable) spoils a share of a day's tap records the way real feeds
are spoiled, after the clean day is made and before it is numbered:

- ``duplicate``: the record is sent again 1-300 s later (a device resending after a lost
  acknowledgement): the same tap — transaction id, device, serial, TAC, amount — under a new
  stream position and idempotency key. A dedup by (device_id, device_serial) catches it.
- ``late``: sent 1-6 hours after the tap (store and forward: a bus that uploads at the depot).
- ``out_of_order``: sent 30-600 s late, behind records that happened after it.
- ``clock_skew``: a share of the *devices* (RATE of them, each day) run their clock off by
  ``--skew-seconds`` (default 300, either way): every record of theirs that day carries the
  wrong time.
- ``malformed``: one field is broken — a negative amount, no device id, or no timestamp.

Late and out-of-order records keep their tap time; what changes is when they are sent (the
stream is ordered by that). The draws come from the run seed through named streams (sim/rng.py),
so the same scenario, seed and injections give the same dirty stream, and ``--resume`` its tail.

Every record sent gets a label row (``labels/day=N.parquet`` in the stream's state folder):
``stream_seq``, ``idempotency_key``, ``transaction_id``, ``device_id``, ``device_serial``,
``amount_fen`` (as sent, before breaking), ``kind`` (``clean`` or the defect), ``duplicate_of``
(the original's stream position, for a duplicate), ``delay_s``, ``skew_s`` and ``defect`` (what
was broken). ``traffic/score.py`` scores a system under test against them.

A day's labels are written when the day is made, before any of its records goes out (so a kill
never leaves a record sent without its label), and each file is replaced atomically. When the
stream ends — finished, at the end of a profile, interrupted — ``cut_labels`` keeps only the
labels of records that went out (traffic/stream.py): a day made but not sent, or sent in part,
would otherwise count as taps the system under test lost. After a kill the next ``--resume``
makes the days again and cuts them when it ends.

The labels also tell the stream's own accounting which records are injected malformed ones
(``MalformedPositions``): a sink that refuses such a record on its own, as a careful system
should, has not failed to take the stream (traffic/delivery.py: an *expected refusal*).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sim.rng import Streams

KINDS = ("duplicate", "late", "out_of_order", "clock_skew", "malformed")
MALFORMED = ("negative_amount", "missing_device_id", "missing_event_timestamp")
# Label codes (dictionary columns: no Python object per record).
KIND_NAMES = ("clean", *KINDS)
DEFECT_NAMES = ("", *MALFORMED)
CLEAN, DUPLICATE, LATE, OUT_OF_ORDER, CLOCK_SKEW, MALFORMED_KIND = range(len(KIND_NAMES))


class InjectionError(ValueError):
    """A bad ``--inject`` flag."""


@dataclasses.dataclass(frozen=True)
class Injection:
    """What to spoil, at which rates (module docstring)."""

    rates: dict[str, float]
    skew_s: int = 300

    @classmethod
    def parse(cls, texts: list[str], skew_s: int = 300) -> Injection | None:
        """``KIND=RATE`` texts from the command line (None if there are none)."""
        rates: dict[str, float] = {}
        for text in texts:
            kind, sep, value = text.partition("=")
            if kind not in KINDS or not sep:
                raise InjectionError(
                    f"--inject {text!r}: expected KIND=RATE with KIND one of {', '.join(KINDS)}"
                )
            try:
                rate = float(value)
            except ValueError:
                rate = -1.0
            if not 0.0 <= rate <= 1.0:
                raise InjectionError(f"--inject {text!r}: the rate must be between 0 and 1")
            rates[kind] = rate
        return cls(rates, int(skew_s)) if rates else None

    def describe(self) -> str:
        return ", ".join(f"{k} {v:.2%}" for k, v in self.rates.items())


class Spoiler:
    """Applies an ``Injection`` to each day's clean tap records and writes their labels."""

    def __init__(
        self,
        injection: Injection,
        seed: int,
        labels_dir: Path | None,
        malformed: MalformedPositions | None = None,
    ) -> None:
        self.injection = injection
        self.streams = Streams(seed)
        self.labels_dir = labels_dir  # made with the first labels (the stream resets it first)
        #: The positions labelled malformed so far, for the stream's accounting (filled as
        #: each day's labels are written, before any of its records goes out).
        self.malformed = malformed if malformed is not None else MalformedPositions()

    def _share(self, kind: str, day: int, ids: np.ndarray, draw: int = 0) -> np.ndarray:
        rate = self.injection.rates.get(kind, 0.0)
        if rate <= 0:
            return np.zeros(len(ids), dtype=bool)
        return self.streams.uniform(f"stream.dirty.{kind}", day, ids, draw) < rate

    def spoil(self, day: int, table: pa.Table, event_s: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        """The day's records spoiled (duplicates added, values broken, send times moved) and
        their send times, in send order; ``labels`` (below) describe them."""
        n = table.num_rows
        tx = table.column("transaction_id").to_numpy()
        u = lambda kind, draw=1: self.streams.uniform(f"stream.dirty.{kind}", day, tx, draw)  # noqa: E731
        delay = np.zeros(n, dtype=np.int64)
        kind = np.full(n, CLEAN, dtype=np.int8)
        late = self._share("late", day, tx)
        delay[late] = (3600 + u("late") * 5 * 3600).astype(np.int64)[late]
        kind[late] = LATE
        ooo = self._share("out_of_order", day, tx) & ~late
        delay[ooo] = (30 + u("out_of_order") * 570).astype(np.int64)[ooo]
        kind[ooo] = OUT_OF_ORDER
        # Clock skew: whole devices, each day.
        device = table.column("device_id").to_numpy()
        skewed_device = self._share("clock_skew", day, np.unique(device))
        skewed = np.isin(device, np.unique(device)[skewed_device])
        sign = np.where(self.streams.uniform("stream.dirty.skew_sign", day, device) < 0.5, -1, 1)
        skew = np.where(skewed, sign * self.injection.skew_s, 0).astype(np.int64)
        kind[skewed & (kind == CLEAN)] = CLOCK_SKEW
        # Malformed: one field broken (its code: 1 + its place in MALFORMED; 0 none).
        broken = self._share("malformed", day, tx) & (kind == CLEAN)
        defect = np.zeros(n, dtype=np.int8)
        which = (u("malformed_field") * len(MALFORMED)).astype(np.int8)
        defect[broken] = 1 + which[broken]
        kind[broken] = MALFORMED_KIND
        # Duplicates: copies of clean records, sent 1-300 s after them.
        dup = np.flatnonzero(self._share("duplicate", day, tx) & (kind == CLEAN))
        send = event_s + delay
        rows = np.concatenate([np.arange(n), dup])
        send = np.concatenate([send, send[dup] + 1 + (u("duplicate")[dup] * 299).astype(np.int64)])
        kinds = np.concatenate([kind, np.full(len(dup), DUPLICATE, dtype=np.int8)])
        original = np.concatenate([np.full(n, -1), np.arange(n)[dup]])  # row in the clean day
        order = np.argsort(send, kind="stable")
        rows, send, kinds, original = rows[order], send[order], kinds[order], original[order]
        out = table.take(pa.array(rows))
        out = _skew(out, skew[rows])
        out = _break(out, defect[rows], self.injection.rates.get("malformed", 0.0) > 0)
        self._pending = {
            "rows": rows,
            "kind": kinds,
            "original": original,
            "delay_s": (send - event_s[rows]),
            "skew_s": skew[rows],
            "defect": defect[rows],
            "clean": table,
        }
        return out, send

    def write_labels(self, day: int, keyed: pa.Table) -> None:
        """The labels of the day just spoiled, now that its records have stream positions."""
        p = self._pending
        seq = keyed.column("stream_seq").to_numpy()
        # Where each clean row went first (the original, not its copy): its stream position.
        first_seq = np.full(p["clean"].num_rows, -1, dtype=np.int64)
        is_original = p["original"] < 0
        first_seq[p["rows"][is_original]] = seq[is_original]
        duplicate_of = np.where(is_original, -1, first_seq[np.maximum(p["original"], 0)])
        clean = p["clean"].take(pa.array(p["rows"]))
        labels = pa.table(
            {
                "stream_seq": seq,
                "idempotency_key": keyed.column("idempotency_key"),
                "transaction_id": clean.column("transaction_id"),
                "device_id": clean.column("device_id"),
                "device_serial": clean.column("device_serial"),
                "amount_fen": clean.column("amount_fen"),
                "kind": _names(p["kind"], KIND_NAMES),
                "duplicate_of": duplicate_of,
                "delay_s": p["delay_s"],
                "skew_s": p["skew_s"],
                "defect": _names(p["defect"], DEFECT_NAMES),
            }
        )
        if self.labels_dir is not None:
            _write_atomically(labels, self.labels_dir / f"day={day}.parquet")
        self.malformed.add(seq[p["kind"] == MALFORMED_KIND])


class MalformedPositions:
    """The stream positions of the injected malformed records, as their labels say: what the
    stream's accounting asks to tell a sink's expected refusal of such a record from a real
    failure (traffic/delivery.py). Filled a day at a time by the ``Spoiler`` when it writes
    the day's labels (before any of the day's records goes out), or read back from a
    recording stream's labels (``from_labels``). Thread-safe: the production thread adds,
    the sink workers ask."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[np.ndarray] = []  # sorted int64 positions, one part per day

    def add(self, seqs: np.ndarray) -> None:
        """Positions labelled malformed (any order)."""
        part = np.sort(np.asarray(seqs, dtype=np.int64))
        if not len(part):
            return
        with self._lock:
            self._parts.append(part)

    def among(self, first_seq: int, last_seq: int) -> np.ndarray:
        """The positions labelled malformed from ``first_seq`` to ``last_seq`` (included),
        sorted."""
        with self._lock:
            parts = list(self._parts)
        found = [
            part[np.searchsorted(part, first_seq) : np.searchsorted(part, last_seq, "right")]
            for part in parts
            if part[0] <= last_seq and part[-1] >= first_seq  # a batch is in one day or two
        ]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    @classmethod
    def from_labels(cls, labels_dir: Path, stream_id: str) -> MalformedPositions | None:
        """The positions labelled malformed in ``labels_dir``, when it holds labels of
        ``stream_id`` (a replay sent with its recording stream's ``--state``); None when it
        holds none, or another stream's (the replay then cannot tell which records are
        malformed, and counts no refusal as expected)."""
        if not labels_dir.is_dir() or labels_stream_id(labels_dir) != stream_id:
            return None
        positions = cls()
        for path in sorted(labels_dir.glob("day=*.parquet")):
            try:
                labels = pq.read_table(path, columns=["stream_seq", "kind"])
                kind = labels.column("kind").cast(pa.string())
                seqs = labels.column("stream_seq").filter(pc.equal(kind, "malformed"))
            except (OSError, KeyError, pa.ArrowException) as exc:  # damaged, not labels
                raise ValueError(
                    f"{path}: not a labels file with stream_seq and kind ({exc}); remove the "
                    "labels folder, or stream into another --state"
                ) from None
            positions.add(seqs.to_numpy())
        return positions


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Write a labels file whole or not at all (a kill mid-write leaves the old one). The
    temporary file is ``labels.tmp`` beside the labels folder: a name of the state folder's
    own, never read as labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent.with_name(path.parent.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def cut_labels(labels_dir: Path, through: int) -> None:
    """Keep the labels of stream positions up to ``through`` (the records that went out):
    files wholly past it are removed, a file across it is rewritten (module docstring)."""
    for path in sorted(labels_dir.glob("day=*.parquet")):
        seq = pq.read_table(path, columns=["stream_seq"]).column(0)
        if len(seq) == 0 or pc.max(seq).as_py() <= through:
            continue
        if pc.min(seq).as_py() > through:
            path.unlink()
            continue
        table = pq.read_table(path)
        _write_atomically(table.filter(pc.less_equal(table.column("stream_seq"), through)), path)


def labels_stream_id(labels_dir: Path) -> str | None:
    """The id of the stream whose labels ``labels_dir`` holds (the prefix of their keys);
    None when it holds none, or none that can be read."""
    for path in sorted(labels_dir.glob("day=*.parquet")):
        try:
            keys = pq.read_table(path, columns=["idempotency_key"]).column(0)
        except (OSError, pa.ArrowInvalid, KeyError):
            return None
        if len(keys):
            return str(keys[0].as_py()).rpartition(":")[0]
    return None


def _names(codes: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(names))


def _skew(table: pa.Table, skew_s: np.ndarray) -> pa.Table:
    if not skew_s.any():
        return table
    i = table.schema.get_field_index("event_timestamp")
    field = table.schema.field(i)
    shifted = pc.add(table.column(i).cast(pa.int64()), pa.array(skew_s)).cast(field.type)
    return table.set_column(i, field, shifted)


def _break(table: pa.Table, defect: np.ndarray, any_malformed: bool) -> pa.Table:
    """``table`` with the defects of ``defect`` made. A stream that injects malformed records
    has the broken columns nullable on every day, defects or not: one schema for the whole
    stream (a Parquet recording of it is one file)."""
    for code, (name, column) in enumerate(
        (
            ("negative_amount", "amount_fen"),
            ("missing_device_id", "device_id"),
            ("missing_event_timestamp", "event_timestamp"),
        ),
        start=1,
    ):
        mask = defect == code
        i = table.schema.get_field_index(column)
        field = table.schema.field(i)
        if any_malformed and name != "negative_amount":
            field = field.with_nullable(True)
            table = table.set_column(i, field, table.column(i))
        if not mask.any():
            continue
        values = table.column(i)
        if name == "negative_amount":
            spoiled = pc.subtract(pc.negate(values), pa.scalar(1, field.type))
        else:
            spoiled = pa.nulls(len(values), field.type)
        table = table.set_column(i, field, pc.if_else(pa.array(mask), spoiled, values))
    return table


__all__ = [
    "KINDS",
    "Injection",
    "InjectionError",
    "MalformedPositions",
    "Spoiler",
    "cut_labels",
    "labels_stream_id",
]
