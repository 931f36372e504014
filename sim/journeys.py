"""A day's planned taps seen as journeys: what the respond step decides on.

A journey is what a rider decides to make, drop, move or repeat as a whole: every tap with the
same ``DayTaps.journey`` key (its boardings, metro exits and transfer legs). ``Journeys`` holds
one row per journey (its rider, times, price sums) as columns; the edits (move, copy, re-pay,
drop) act on all of a journey's taps at once, so a moved or copied journey keeps its structure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from agents.citizen import DayTaps
from sim.codes import TAP_EXIT

#: Added to the tap keys of an induced copy of a journey: tap keys use the low two bits for
#: leg and exit (legs 0-1), so bit 2 is free and keeps the copies' keys apart from the originals.
COPY_TAP_KEY = 4


@dataclass(frozen=True)
class Journeys:
    """The journeys of a day's taps (see the module docstring); arrays are one per journey
    unless named ``of_tap``."""

    of_tap: np.ndarray  # journey index of each tap
    key: np.ndarray  # DayTaps.journey key
    row: np.ndarray  # population row of the rider
    first_tap: np.ndarray  # index of the journey's first boarding (its first tap if none)
    first_board_s: np.ndarray  # first boarding time (s after midnight)
    last_board_s: np.ndarray  # last boarding time (where a later leg starts)
    start_s: np.ndarray  # first tap
    end_s: np.ndarray  # last tap

    def __len__(self) -> int:
        return len(self.key)

    @classmethod
    def of(cls, taps: DayTaps) -> Journeys:
        """Group ``taps`` by journey key (one sort: by journey, time, boardings first)."""
        t = taps.t_s.astype(np.int64)
        is_exit = (taps.kind == TAP_EXIT).astype(np.int64)
        # Journey keys are card id * 4 + slot (< 2**45); times are below 2**17 s.
        order = np.argsort((taps.journey << 18) | (t << 1) | is_exit)
        key_sorted = taps.journey[order]
        first = np.ones(len(order), bool)
        first[1:] = key_sorted[1:] != key_sorted[:-1]
        starts = np.flatnonzero(first)
        of_tap = np.empty(len(order), np.int64)
        of_tap[order] = np.cumsum(first) - 1
        ends = np.append(starts[1:], len(order)) - 1
        position = np.arange(len(order))
        board = is_exit[order] == 0
        first_b = np.minimum.reduceat(np.where(board, position, len(order)), starts)
        last_b = np.maximum.reduceat(np.where(board, position, -1), starts)
        first_b = np.where(first_b < len(order), first_b, starts)  # an exit alone (entry lost)
        last_b = np.where(last_b >= 0, last_b, first_b)
        t_sorted = t[order]
        return cls(
            of_tap=of_tap,
            key=key_sorted[starts],
            row=taps.row[order[starts]],
            first_tap=order[first_b],
            first_board_s=t_sorted[first_b],
            last_board_s=t_sorted[last_b],
            start_s=t_sorted[starts],
            end_s=t_sorted[ends],
        )

    def total(self, per_tap: np.ndarray) -> np.ndarray:
        """Sum of ``per_tap`` (e.g. amount_fen) over each journey's taps, as int64."""
        return np.bincount(self.of_tap, weights=per_tap, minlength=len(self)).astype(np.int64)

    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """For each journey, the end of the same rider's previous journey and the start of their
        next one (in time; -1 and a day's length when there is none)."""
        order = np.argsort((self.row << 18) | self.start_s)  # rows < 2**45, times < 2**17
        row = self.row[order]
        same = np.zeros(len(order), bool)
        same[1:] = row[1:] == row[:-1]
        prev_end = np.full(len(self), -1, np.int64)
        next_start = np.full(len(self), 2 * 86_400, np.int64)
        prev_end[order[1:][same[1:]]] = self.end_s[order[:-1][same[1:]]]
        next_start[order[:-1][same[1:]]] = self.start_s[order[1:][same[1:]]]
        return prev_end, next_start

    def rider_span(self) -> tuple[np.ndarray, np.ndarray]:
        """Per journey: the first tap and the last tap of its rider's whole day."""
        rows, inv = np.unique(self.row, return_inverse=True)
        first = np.full(len(rows), np.iinfo(np.int64).max, np.int64)
        last = np.full(len(rows), -1, np.int64)
        np.minimum.at(first, inv, self.start_s)
        np.maximum.at(last, inv, self.end_s)
        return first[inv], last[inv]


def taps_of_rows(taps: DayTaps, rows: np.ndarray) -> np.ndarray:
    """Indices of the taps of riders ``rows`` (a rider's taps are priced together: transfers and
    caps span the day)."""
    return np.flatnonzero(np.isin(taps.row, rows))


def replace(taps: DayTaps, **columns: np.ndarray) -> DayTaps:
    """``taps`` with some columns replaced."""
    return dataclasses.replace(taps, **columns)


def moved(taps: DayTaps, of_tap: np.ndarray, offset_s: np.ndarray) -> DayTaps:
    """Every tap of journey j moved by ``offset_s[j]`` seconds (structure and order kept)."""
    t_s = (taps.t_s.astype(np.int64) + offset_s[of_tap]).astype(taps.t_s.dtype)
    return replace(taps, t_s=t_s)


def copies(taps: DayTaps, of_tap: np.ndarray, copied: np.ndarray, offset_s: np.ndarray) -> DayTaps:
    """Induced copies of the journeys ``copied`` (bool per journey), ``offset_s`` later (per
    journey), with their own tap keys (``COPY_TAP_KEY``)."""
    idx = np.flatnonzero(copied[of_tap])
    extra = moved(taps.take(idx), of_tap[idx], offset_s)
    return replace(extra, tap_key=extra.tap_key + COPY_TAP_KEY)


def concat(parts: list[DayTaps]) -> DayTaps:
    """The taps of ``parts`` one after the other."""
    first = parts[0]
    return DayTaps(
        **{
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in first.__dataclass_fields__
        }
    )
