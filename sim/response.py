"""Riders' response to prices: a journey whose price differs from the reference price is made,
moved, repeated, paid another way or given up (the respond step's price part; sim/behaviour.py).

The reference price ``p0`` of a journey is what the same taps cost under the pricing riders are
used to (the base scenario's, sim/reference.py: its fares and the card types it gives); ``p`` is
what they cost today. Both are the sums over the journey's taps of the day's pricing, so
transfers and caps count. Nothing happens on a day where the two pricings are the same.

In this order, each decision drawn from named streams keyed by the journey (or the holder), so
the same rider draws the same numbers in a baseline and a variant (common random numbers):

1. **Out of a concession's time window.** A journey dearer today than its reference, whose first
   boarding falls in a stretch of the day where the rider's concession is time-limited (e.g. the
   65+ card paying half fare in the workday peaks), is moved just outside the stretch, earlier or
   later, if that makes it cheaper; with probability ``shift_share``. All its taps move by the
   same offset (legs and transfers kept), by at most ``shift_max_min``, within service hours and
   without running into the rider's other journeys; the day is priced again afterwards.
2. **Medium.** A holder of a card and a QR channel whose day on the other medium gained at least
   ``medium_switch_min_gain_fen`` against this one compared with the reference, and is now no
   dearer, pays the day with it, with probability ``medium_switch_share`` (a draw per holder:
   the same holders switch every day).
3. **Elasticity.** Every other journey with ``p != p0`` has the demand ratio
   ``((p + g) / (p0 + g)) ** e_g`` (sim/behaviour_settings.py ``ResponseSettings``): below 1
   it is given up with probability ``1 - ratio``; above 1 the rider adds a copy of it (same
   lines and stops, later that day after a gap, or else before their first ride) with
   probability ``ratio - 1``. Judged on the planned medium's prices.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable

import numpy as np

from agents.citizen import FIRST_DEPARTURE_S, LAST_DEPARTURE_S, LAST_TAP_S, DayTaps
from sim import clock
from sim.behaviour_settings import ResponseSettings
from sim.codes import CARD_TYPES, DAY_TYPES, WORKDAY, is_stored_value
from sim.fare_rules import MINUTES_PER_DAY, FareRules
from sim.fares import FareSet, compile_fare_set
from sim.grouping import rank_in_groups, stable_order
from sim.incidents import NO_INCIDENT
from sim.journeys import Journeys, concat, copies, moved, replace, taps_of_rows
from sim.population import HOME_CITY, NO_QR, age_card_types, card_type_for_age
from sim.reference import ReferencePricing
from sim.rng import Streams
from sim.scenario import changed_fares
from sim.world import World, priced_lines

DAY_S = 86_400
#: ``price(taps, world)``: the day's taps priced as ``world`` prices them (its fares, card types
#: and visitor treatment), with the day's transfers and caps (sim/day.py).
Pricer = Callable[[DayTaps, World], dict[str, np.ndarray]]


def minute_mask(windows: tuple[str, ...]) -> np.ndarray:
    """Minutes of the day inside ``windows`` (bool per minute)."""
    mask = np.zeros(MINUTES_PER_DAY, bool)
    for text in windows:
        for start, end in clock.parse_window(text).pieces():
            mask[start // 60 : end // 60] = True
    return mask


def reference_card_types(world: World, ref: ReferencePricing) -> np.ndarray:
    """Each holder's card type under the reference: cards issued as age-based types are
    re-derived with the reference's ages; visitors' cards get local types only if the reference
    gives them same-city treatment."""
    pop = world.population
    local = pop.home_city == HOME_CITY
    out = pop.card_type.copy()
    out[local] = age_card_types(pop.issued_card_type[local], pop.age[local], ref.concession_ages)
    # Visitors' cards: the local type of their age under the reference's same-city treatment
    # (with its ages), else priced as the ordinary card they were issued as.
    guests = ~local
    if ref.visitor_concessions == "local":
        out[guests] = card_type_for_age(pop.age[guests], ref.concession_ages)
    else:
        out[guests] = pop.issued_card_type[guests]
    out.setflags(write=False)
    return out


def pricing_view(world: World, ref: ReferencePricing | None) -> World:
    """``world`` as the reference prices it: the reference's fares, card types and visitor
    treatment, with no fare changes (None: the scenario's own pricing, without fare changes)."""
    if ref is None:
        return dataclasses.replace(world, fare_policies={})
    sc = world.scenario
    interop = sc.interop
    if interop is not None:
        interop = interop.model_copy(update={"visitor_concessions": ref.visitor_concessions})
    return dataclasses.replace(
        world,
        scenario=sc.model_copy(update={"fares": ref.fares, "interop": interop}),
        population=dataclasses.replace(
            world.population, card_type=reference_card_types(world, ref)
        ),
        fares=compile_fare_set(
            ref.fares, priced_lines(world.network, world.region_ids, world.n_local_lines)
        ),
        fare_policies={},
    )


def changed_card_types(today: FareRules, ref: FareRules) -> np.ndarray:
    """Card types (bool per code) whose riders may pay differently under ``today`` than under
    ``ref``: all of them if anything besides the card types' own concessions and caps differs."""
    rest = {"concessions", "caps"}
    if today.model_dump(exclude=rest) != ref.model_dump(exclude=rest):
        return np.ones(len(CARD_TYPES), bool)
    caps, ref_caps = today.caps.model_dump(), ref.caps.model_dump()
    return np.array(
        [
            today.concessions.get(ct) != ref.concessions.get(ct)
            or any(caps[f].get(ct) != ref_caps[f].get(ct) for f in caps)
            for ct in CARD_TYPES
        ]
    )


def demand_ratio(p: np.ndarray, p0: np.ndarray, e_g: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Trips at price ``p`` over trips at the reference price ``p0`` (fen): constant elasticity
    ``e_g`` on the generalised cost (price + time cost ``g``), so a free ride is finite."""
    return np.exp(e_g * (np.log(p + g) - np.log(p0 + g)))


def _grouped_cumsum(values: np.ndarray, first_of_group: np.ndarray) -> np.ndarray:
    """Inclusive running sums of ``values`` restarting where ``first_of_group`` is True."""
    total = np.cumsum(values)
    starts = np.flatnonzero(first_of_group)
    group = np.cumsum(first_of_group) - 1
    before = (total[starts] - values[starts])[group]
    return total - before


class PriceResponse:
    """The price part of the respond step for one run of one world (see the module docstring)."""

    def __init__(self, world: World, streams: Streams, settings: ResponseSettings | None = None):
        self.world = world
        self.streams = streams
        self.s = settings if settings is not None else world.scenario.behaviour.response
        ref = world.scenario.reference
        # The pricing riders compare with: the base's, or on a fare-change day without a base,
        # the scenario's own fares.
        self.reference = pricing_view(world, ref)
        self.always = ref is not None
        segs = [self.s.segments.get(ct, self.s.segments["default"]) for ct in CARD_TYPES]
        self.elasticity = np.array([s.fare_elasticity for s in segs])
        self.time_cost = np.array([float(s.time_cost_fen) for s in segs])
        self.day_factor = np.array([getattr(self.s.day_type_factors, d) for d in DAY_TYPES])
        self.am_peak = minute_mask(self.s.am_peak_hours)
        self.pm_peak = minute_mask(self.s.pm_peak_hours)
        self._runs: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self._changed: dict[int, np.ndarray] = {}
        own = world.scenario.interop
        self.visitors_changed = ref is not None and ref.visitor_concessions != (
            own.visitor_concessions if own is not None else "none"
        )
        self.tally: Counter[str] = Counter()  # journeys moved, given up, copied; holders switched
        self.expected: Counter[str] = Counter()  # expected journeys given up and copied

    # ----------------------------------------------------------------- when and how strongly
    def active(self, day: int) -> bool:
        """Whether prices on ``day`` can differ from the reference."""
        return self.always or self.world.incidents.fare_policy_of_day(day) != NO_INCIDENT

    def affected(self, rows: np.ndarray, day: int) -> np.ndarray:
        """Which riders (population ``rows``) may pay on ``day`` other than their reference: a
        card type (today's or the reference's) whose prices changed, a card that changed type,
        a visitor whose treatment changed. The others pay exactly their reference prices."""
        world = self.world
        policy = world.incidents.fare_policy_of_day(day)
        if policy not in self._changed:
            sc = world.scenario
            today = sc.fares
            if policy != NO_INCIDENT:
                today = changed_fares(sc.fares, world.incidents.incidents[policy])
            ref = sc.reference.fares if sc.reference is not None else sc.fares
            self._changed[policy] = changed_card_types(today, ref)
        changed = self._changed[policy]
        ct, ref_ct = world.population.card_type[rows], self.reference.population.card_type[rows]
        out = changed[ct] | changed[ref_ct] | (ct != ref_ct)
        if self.visitors_changed:
            out |= world.population.home_city[rows] != HOME_CITY
        return out

    def days_in_force(self, day: int) -> int:
        """Days since the prices of ``day`` took effect (the period start, or a fare change)."""
        policy = self.world.incidents.fare_policy_of_day(day)
        if policy == NO_INCIDENT:
            return day
        return day - int(self.world.incidents.start_s[policy]) // DAY_S

    def horizon_factor(self, day: int) -> float:
        """Elasticity multiplier of the horizon: 1 short-run, long_run_factor long-run, a linear
        ramp between them over ramp_days."""
        s = self.s
        if s.horizon == "short":
            return 1.0
        if s.horizon == "long":
            return s.long_run_factor
        ramp = min(1.0, self.days_in_force(day) / s.ramp_days)
        return 1.0 + (s.long_run_factor - 1.0) * ramp

    def generalised_elasticity(
        self, j: Journeys, day: int, day_type: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per journey: the generalised-cost elasticity ``e_g`` and the time cost ``g`` (fen)."""
        ct = self.world.population.card_type[j.row]
        e = self.elasticity[ct] * self.day_factor[day_type] * self.horizon_factor(day)
        if day_type == WORKDAY:
            f = self.s.time_of_day_factors
            minute = np.clip(j.first_board_s // 60, 0, MINUTES_PER_DAY - 1)
            e = e * np.where(
                self.am_peak[minute],
                f.am_peak,
                np.where(self.pm_peak[minute], f.pm_peak, f.off_peak),
            )
        g = self.time_cost[ct]
        p_star = float(self.s.elasticity_fare_fen)
        return e * (p_star + g) / p_star, g

    # ----------------------------------------------------------------- the step
    def respond(
        self,
        taps: DayTaps,
        amount_fen: np.ndarray,
        day: int,
        day_type: int,
        price: Pricer,
        skip_rows: np.ndarray,
    ) -> DayTaps:
        """The taps riders ride given the day's prices (``amount_fen`` per tap); ``taps`` itself
        when nothing changes. Riders in ``skip_rows`` (lending today) are left as they are."""
        if not self.active(day) or len(taps) == 0:
            return taps
        affected = self.affected(taps.row, day) & ~np.isin(taps.row, skip_rows)
        if not affected.any():
            return taps
        # Riders whose prices did not change pay their reference prices: no need to price them.
        ref_amount = amount_fen.copy()
        idx = np.flatnonzero(affected)
        ref_amount[idx] = price(taps.take(idx), self.reference)["amount_fen"]
        j = Journeys.of(taps)
        p, p0 = j.total(amount_fen), j.total(ref_amount)
        eligible = np.zeros(len(j), bool)
        eligible[j.of_tap[idx]] = True
        offset, shifted = self._shift(taps, j, p, p0, eligible, day, day_type, price)
        medium = self._switch(taps, affected, price)
        dropped, copied, copy_offset = self._elastic(
            j, p, p0, eligible & ~shifted & (p != p0), day, day_type
        )
        self.tally.update(moved=int(shifted.sum()))
        if not (shifted.any() or dropped.any() or copied.any() or medium is not None):
            return taps
        out = taps if medium is None else replace(taps, medium=medium)
        if shifted.any():
            out = moved(out, j.of_tap, offset)
        parts = [out.take(np.flatnonzero(~dropped[j.of_tap]))]
        if copied.any():
            parts.append(copies(out, j.of_tap, copied, copy_offset))
        return concat(parts)

    def _elastic(self, j, p, p0, active, day, day_type):
        """Journeys given up and copied (with the copies' offsets) among ``active`` ones."""
        e_g, g = self.generalised_elasticity(j, day, day_type)
        ratio = demand_ratio(p, p0, e_g, g)
        u = self.streams.uniform("respond.demand", day, j.key)
        dropped = active & (ratio < 1) & (u < 1 - ratio)
        copied = active & (ratio > 1) & (u < ratio - 1)
        wanted = int(copied.sum())
        copy_offset, copied = self._copy_offsets(j, copied, day)
        self.tally.update(
            given_up=int(dropped.sum()),
            copied=int(copied.sum()),
            copies_not_placed=wanted - int(copied.sum()),
        )
        # What the draws should give on average (for checks of the sampling).
        self.expected.update(
            given_up=float(np.where(active & (ratio < 1), 1 - ratio, 0).sum()),
            copied=float(np.where(active & (ratio > 1), np.minimum(ratio - 1, 1), 0).sum()),
        )
        return dropped, copied, copy_offset

    # ----------------------------------------------------------------- 1. time windows
    def _window_runs(self, fare_set: FareSet, day_type: int) -> tuple[np.ndarray, ...]:
        """For the concession table of ``day_type``: per (card type, mode, minute) the first
        minute and the end (exclusive) of the stretch of the day where the same rule applies,
        and per (card type, mode) whether the rule changes at all during the day."""
        key = (id(fare_set), day_type)
        if key not in self._runs:
            table = fare_set.concession.rule_table[day_type]
            change = table[..., 1:] != table[..., :-1]
            minutes = np.arange(MINUTES_PER_DAY)
            starts = np.concatenate([np.ones(change.shape[:-1] + (1,), bool), change], axis=-1)
            ends = np.concatenate([change, np.ones(change.shape[:-1] + (1,), bool)], axis=-1)
            run_start = np.maximum.accumulate(np.where(starts, minutes, 0), axis=-1)
            run_end = np.minimum.accumulate(
                np.where(ends, minutes + 1, MINUTES_PER_DAY)[..., ::-1], axis=-1
            )[..., ::-1]
            self._runs[key] = (run_start, run_end, change.any(axis=-1))
        return self._runs[key]

    def _fits(self, j: Journeys, offset: np.ndarray, around: tuple[np.ndarray, np.ndarray]):
        """Whether moving each journey by ``offset`` keeps it in service hours, within
        shift_max_min and clear of the rider's other journeys."""
        prev_end, next_start = around
        start, end = j.start_s + offset, j.end_s + offset
        return (
            (np.abs(offset) <= self.s.shift_max_min * 60)
            & (start >= FIRST_DEPARTURE_S)
            & (end <= LAST_TAP_S)
            & (start > prev_end)
            & (end < next_start)
        )

    def _shift(self, taps, j, p, p0, eligible, day, day_type, price):
        """Offsets (s) of the journeys moved out of a concession's time window, and which."""
        none = np.zeros(len(j), np.int64), np.zeros(len(j), bool)
        candidate = eligible & (p > p0)
        if self.s.shift_share == 0 or not candidate.any():
            return none
        world = self.world
        fare_set = world.fare_policies.get(world.incidents.fare_policy_of_day(day), world.fares)
        run_start, run_end, limited = self._window_runs(fare_set, day_type)
        ct = world.population.card_type[j.row].astype(np.int64)
        mode = taps.mode[j.first_tap].astype(np.int64)
        minute = np.clip(j.first_board_s // 60, 0, MINUTES_PER_DAY - 1)
        candidate &= limited[ct, mode]
        if not candidate.any():
            return none
        start, end = run_start[ct, mode, minute], run_end[ct, mode, minute]
        margin = self.streams.uniform("respond.shift_margin", day, j.key) * self.s.shift_margin_min
        margin = margin.astype(np.int64) * 60
        around = j.neighbours()
        # Earlier: the last boarding just before the stretch; later: the first just after it.
        earlier = start * 60 - 60 - margin - j.last_board_s
        later = end * 60 + margin - j.first_board_s
        ok_early = candidate & (start > 0) & self._fits(j, earlier, around)
        ok_late = candidate & (end < MINUTES_PER_DAY) & self._fits(j, later, around)
        if not (ok_early | ok_late).any():
            return none
        idx = taps_of_rows(taps, np.unique(j.row[ok_early | ok_late]))
        sub, sub_j = taps.take(idx), j.of_tap[idx]

        def price_moved(offset: np.ndarray, ok: np.ndarray) -> np.ndarray:
            amount = price(moved(sub, sub_j, np.where(ok, offset, 0)), world)["amount_fen"]
            total = np.bincount(sub_j, weights=amount, minlength=len(j))
            return np.where(ok, total, np.inf)

        p_early, p_late = price_moved(earlier, ok_early), price_moved(later, ok_late)
        take_early = (p_early < p_late) | ((p_early == p_late) & (np.abs(earlier) <= np.abs(later)))
        best = np.where(take_early, p_early, p_late)
        u = self.streams.uniform("respond.shift", day, j.key)
        shifted = (best < p) & (u < self.s.shift_share)
        return np.where(shifted, np.where(take_early, earlier, later), 0), shifted

    # ----------------------------------------------------------------- 2. medium
    def _switch(self, taps: DayTaps, eligible: np.ndarray, price: Pricer) -> np.ndarray | None:
        """The taps' media after holders switch to their other medium, or None if none do."""
        pop = self.world.population
        if self.s.medium_switch_share == 0:
            return None
        both = (
            eligible & (pop.home_city[taps.row] == HOME_CITY) & (pop.qr_channel[taps.row] != NO_QR)
        )
        if not both.any():
            return None
        rows, inverse = np.unique(taps.row[both], return_inverse=True)
        idx = np.flatnonzero(both)
        sub = taps.take(idx)
        card = pop.medium[sub.row].astype(np.uint8)
        qr = pop.qr_channel[sub.row].astype(np.uint8)

        def day_cost(medium: np.ndarray, world: World) -> np.ndarray:
            amount = price(replace(sub, medium=medium), world)["amount_fen"]
            return np.bincount(inverse, weights=amount, minlength=len(rows))

        ref = self.reference
        saving = day_cost(card, self.world) - day_cost(qr, self.world)  # > 0: QR cheaper today
        gain = saving - (day_cost(card, ref) - day_cost(qr, ref))  # ... than it used to be
        switches = self.streams.uniform("respond.switch", 0, pop.card_id[rows]) < (
            self.s.medium_switch_share
        )
        # A holder moves to the medium that gained enough against the reference, if it is now
        # no dearer (QR codes given the concessions: the card no longer saves anything).
        to_qr = switches & (saving >= 0) & (gain >= self.s.medium_switch_min_gain_fen)
        to_card = switches & (saving <= 0) & (gain <= -self.s.medium_switch_min_gain_fen)
        if not (to_qr.any() or to_card.any()):
            return None
        on_card = is_stored_value(sub.medium)
        new = np.where(to_qr[inverse] & on_card, qr, sub.medium)
        new = np.where(to_card[inverse] & ~on_card, card, new)
        self.tally.update(switched=int((to_qr | to_card).sum()))
        medium = taps.medium.copy()
        medium[idx] = new
        return medium

    # ----------------------------------------------------------------- 3. induced copies
    def _copy_offsets(self, j: Journeys, copied: np.ndarray, day: int):
        """Where induced copies go: after the rider's last ride (30-90 min gaps, one copy after
        another), or else before their first; copies that fit nowhere are not made. Returns the
        offset per journey and which copies are made."""
        offset = np.zeros(len(j), np.int64)
        idx = np.flatnonzero(copied)
        if not len(idx):
            return offset, copied
        first, last = j.rider_span()
        gap = 1800 + (self.streams.uniform("respond.copy_gap", day, j.key) * 3600).astype(np.int64)
        duration = j.end_s - j.start_s
        made = np.zeros(len(j), bool)
        for later in (True, False):
            idx = np.flatnonzero(copied & ~made)
            if not len(idx):
                break
            idx = idx[stable_order(j.row[idx], j.start_s[idx])]
            new_row = rank_in_groups(j.row[idx]) == 1
            step = gap[idx] + duration[idx]
            if later:  # start = rider's last tap + gaps and durations of the copies before
                new_start = last[idx] + _grouped_cumsum(step, new_row) - duration[idx]
                fits = (new_start <= LAST_DEPARTURE_S) & (new_start + duration[idx] <= LAST_TAP_S)
            else:  # end = rider's first tap - gaps and durations of the copies after
                new_start = first[idx] - _grouped_cumsum(step, new_row)
                fits = new_start >= FIRST_DEPARTURE_S
            offset[idx] = np.where(fits, new_start - j.start_s[idx], 0)
            made[idx] = fits
        return offset, made
