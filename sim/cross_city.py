"""Cross-city riding measured: whose cards ride where, and the money they move.

Each shard's final tap records of a day become a few flow rows (``day_flows``): boardings and
fares by the holder's city and region, the city and region of use, and how the rider paid. The
flows are the ``cross_city_flows`` table (sim/schema.py) and, summed over a run by
``CrossCityCollector``, the run's cross-city measures (run_meta.json ``cross_city``):

- the origin-destination matrix of cross-city boardings and money (holder's city x city of use);
- for each simulated city and each of its regions, the inbound share (of the boardings acquired
  there, those made by other cities' riders) and the outbound share (of its own riders'
  boardings, those made in other cities).

Every figure is expanded to full scale: a row's counts times its shard's expansion weight
(1/scale). Boardings are single taps and metro entries that the reader accepted (not declined
for balance, not refused by a full device buffer); money is the fares charged on the accepted
records (exits carry metro fares).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from sim.codes import TAP_EXIT, is_stored_value
from sim.events import TapsFinal
from sim.interop import city_codes as interop_city_codes
from sim.population import HOME_CITY, derived
from sim.taps import TapTable

#: How a boarding was paid (the transactions table's fare_product names).
PAYMENTS = ("stored_value", "qr_account")
NONE = -1  # no region: a visitor's home region, or a region of a city not simulated here


def city_codes(world) -> list[str]:
    """JT/T codes of a shard's city (index 0) and its interoperable cities (1..n)."""
    return interop_city_codes(world.scenario)


def city_names(world) -> dict[str, str]:
    """Names of a shard's city and its interoperable cities, by JT/T code."""
    sc = world.scenario
    if sc.city is not None:
        own = sc.city.name_zh
    else:  # a region's part of a city split by region is named after the city
        own = sc.name if sc.region_part is None else sc.region_part.city
    names = {sc.output.city_code: own}
    for city in () if sc.interop is None else sc.interop.cities.values():
        names[city.city_code] = city.name_zh
    return names


def region_keys(world) -> list[tuple[str, str]]:
    """(region id, name) of the regions a shard's flows name: its own, then the regions of
    other cities its riders ride in (gateway lines standing for one region, sim.interop)."""
    own = [(rid, world.scenario.regions[rid].name_zh) for rid in world.region_ids]
    return own + [(g.region_id, g.name_zh) for g in world.gateways if g.region_id is not None]


def _line_use_region(world) -> np.ndarray:
    """Per line, the index into ``region_keys`` of where a tap on it is made (NONE where not
    known): a home-city line's region; a gateway line's region, numbered after the shard's own
    regions in gateway order."""
    lines = world.network.lines.region
    n_local = world.n_local_lines
    out = np.full(len(lines), NONE, dtype=np.int64)
    out[:n_local] = lines[:n_local]
    with_region = np.array([g.region_id is not None for g in world.gateways], dtype=bool)
    gateway_region = np.where(with_region, len(world.region_ids) + np.cumsum(with_region) - 1, NONE)
    out[n_local:] = gateway_region[: len(lines) - n_local]
    return out


def day_flows(world, taps: TapTable) -> dict[str, np.ndarray]:
    """One row per (holder city, holder region, city of use, region of use, payment) of a
    shard's day: boardings, fares (fen) and the shard's expansion weight. City and region
    columns are the shard's own codes (index into ``city_codes`` and ``region_keys``)."""
    n_cities = len(city_codes(world))
    n_regions = len(region_keys(world)) + 1  # + "none"
    use_region = (_line_use_region(world) + 1).astype(np.min_scalar_type(n_regions))
    if len(taps) and (int(taps.city.max()) >= n_cities or int(taps.city.min()) < 0):
        raise ValueError(f"a tap's city code is not one of the shard's {n_cities} cities")
    # One key per tap, then two bincounts over (flow, charge) where charge is 0 (the reader
    # took nothing), 1 (a boarding) or 2 (an exit, money only).
    key = np.take(_holder_keys(world.population, n_cities, n_regions), taps.row).astype(np.int64)
    for value, size in (
        (taps.city, n_cities),
        (np.take(use_region, taps.line), n_regions),  # take: a small table, int32 lines
        ((~is_stored_value(taps.medium)).view(np.uint8), len(PAYMENTS)),
        (_charge(taps), _N_CHARGES),
    ):
        key *= size
        key += value
    size = n_cities * n_regions * n_cities * n_regions * len(PAYMENTS)
    counted = np.bincount(key, minlength=size * _N_CHARGES).reshape(size, _N_CHARGES)
    boardings = counted[:, _BOARDING]
    # Per (flow, charge) sums of whole fen: exact in float64, so their sum is the flow's sum.
    weighted = np.bincount(key, weights=taps.amount_fen, minlength=size * _N_CHARGES)
    fen = weighted.reshape(size, _N_CHARGES)[:, _BOARDING:].sum(axis=1)
    present = np.flatnonzero((boardings > 0) | (fen > 0))
    columns = {}
    rest = present
    for name, size in (
        ("payment", len(PAYMENTS)),
        ("use_region", n_regions),
        ("use_city", n_cities),
        ("holder_region", n_regions),
    ):
        columns[name] = rest % size
        rest = rest // size
    columns["holder_city"] = rest
    for name in ("use_region", "holder_region"):
        columns[name] = columns[name] - 1
    return {
        "holder_city": columns["holder_city"],
        "holder_region": columns["holder_region"],
        "use_city": columns["use_city"],
        "use_region": columns["use_region"],
        "payment": columns["payment"],
        "boardings": boardings[present].astype(np.int64),
        "amount_fen": np.rint(fen[present]).astype(np.int64),
        "expansion_weight": np.full(len(present), 1.0 / world.scenario.scale),
    }


#: What the reader took on a tap: nothing (declined, or refused by a full device buffer), a
#: boarding (single tap or metro entry), or a metro exit (its fare, no boarding).
_N_CHARGES = 3
_BOARDING = 1


def _charge(taps: TapTable) -> np.ndarray:
    """Each tap's charge code (uint8, see ``_N_CHARGES``)."""
    charged = (~taps.declined & (taps.device_refused == 0)).view(np.uint8)
    return charged * (np.uint8(1) + (taps.kind == TAP_EXIT).view(np.uint8))


def _holder_keys(pop, n_cities: int, n_regions: int) -> np.ndarray:
    """Per population row, holder city * n_regions + holder region + 1 (0: none, a visitor):
    the holder's part of a flow key. Built once per population (read-only once the world is
    built), so a day gathers one column instead of two."""
    return derived(
        pop,
        ("flow_holder_keys", n_cities, n_regions),
        lambda: _build_holder_keys(pop, n_cities, n_regions),
    )


def _build_holder_keys(pop, n_cities: int, n_regions: int) -> np.ndarray:
    if int(pop.home_city.max(initial=0)) >= n_cities:
        raise ValueError(f"a holder's city code is not one of the shard's {n_cities} cities")
    dtype = np.min_scalar_type(n_cities * n_regions)  # narrow: a few passes over 1.7 M rows
    keys = pop.home_city.astype(dtype)
    keys *= n_regions
    home = pop.home_city == HOME_CITY
    keys[home] += pop.region[home].astype(dtype) + 1  # visitors' region: NONE + 1 = 0
    return keys


class CrossCityCollector:
    """Subscriber summing each shard's daily flows over the run (expanded to full scale)."""

    def __init__(self, worlds) -> None:
        self.worlds = list(worlds)
        self.names: dict[str, str] = {}
        for world in self.worlds:
            for code, name in city_names(world).items():
                self.names.setdefault(code, name)
        # A city split by region is several shards of one city code.
        self.simulated = list(dict.fromkeys(w.scenario.output.city_code for w in self.worlds))
        # (holder city, holder region, use city, use region) -> [boardings, fen], expanded
        self._sums: dict[tuple[str, str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])

    def __call__(self, event) -> None:
        if not isinstance(event, TapsFinal):
            return
        world = self.worlds[event.shard]
        flows = event.flows
        codes = city_codes(world)
        regions = [rid for rid, _ in region_keys(world)]
        for i in range(len(flows["boardings"])):
            h, u = int(flows["holder_city"][i]), int(flows["use_city"][i])
            hr, ur = int(flows["holder_region"][i]), int(flows["use_region"][i])
            key = (
                codes[h],
                regions[hr] if hr != NONE else "",
                codes[u],
                regions[ur] if ur != NONE else "",
            )
            weight = float(flows["expansion_weight"][i])
            sums = self._sums[key]
            sums[0] += float(flows["boardings"][i]) * weight
            sums[1] += float(flows["amount_fen"][i]) * weight

    def report(self) -> dict:
        """The run's cross-city measures (see the module docstring), JSON-ready."""
        od: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for (holder, _, use, _), (boardings, fen) in self._sums.items():
            if holder != use:
                od[holder, use][0] += boardings
                od[holder, use][1] += fen
        return {
            "expanded_to_full_scale": True,
            "od": [
                {
                    "holder_city": self.names.get(h, h),
                    "holder_city_code": h,
                    "use_city": self.names.get(u, u),
                    "use_city_code": u,
                    "boardings": round(b),
                    "amount_fen": round(f),
                }
                for (h, u), (b, f) in sorted(od.items())
            ],
            "cities": [self._shares(code) for code in self.simulated],
        }

    def _shares(self, code: str) -> dict:
        """Inbound and outbound shares of a simulated city, and of each of its regions."""
        inbound, outbound = defaultdict(lambda: [0.0, 0.0]), defaultdict(lambda: [0.0, 0.0])
        for (holder, h_region, use, u_region), (boardings, _) in self._sums.items():
            if use == code:  # acquired here: [by other cities' riders, all]
                for key in {"", u_region}:
                    inbound[key][1] += boardings
                    inbound[key][0] += boardings if holder != code else 0.0
            if holder == code:  # this city's riders: [elsewhere, all]
                for key in {"", h_region}:
                    outbound[key][1] += boardings
                    outbound[key][0] += boardings if use != code else 0.0
        parts = [w for w in self.worlds if w.scenario.output.city_code == code]

        def share(pair) -> float | None:
            return pair[0] / pair[1] if pair[1] else None

        return {
            "city": self.names[code],
            "city_code": code,
            "inbound_share": share(inbound[""]),
            "outbound_share": share(outbound[""]),
            "regions": [
                {
                    "region": rid,
                    "name_zh": world.scenario.regions[rid].name_zh,
                    "inbound_share": share(inbound[rid]),
                    "outbound_share": share(outbound[rid]),
                }
                for world in parts
                for rid in world.region_ids
            ],
        }


__all__ = [
    "CrossCityCollector",
    "PAYMENTS",
    "city_codes",
    "city_names",
    "day_flows",
    "region_keys",
]
