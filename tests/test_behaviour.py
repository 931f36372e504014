"""The behavioural response (sim/behaviour.py, sim/response.py, sim/lending.py).

- a baseline runs exactly as planned with the response machinery on (byte-identical files);
- the reference prices are the base of the ``extends:`` chain;
- the demand ratio has the segment's fare elasticity at the reference fare and is finite from a
  free ride; the horizon ramps from short- to long-run;
- a fare rise gives up trips and a cut adds copies of riders' own journeys, by about the
  elasticity and as many as the draws should give;
- with elderly free rides off-peak only, elderly journeys move out of the peak windows whole,
  total elderly trips fall a little, the concession costs less, and riders the policy does not
  touch ride exactly as in the baseline (common random numbers);
- holders switch to QR when concessions reach QR codes;
- lent cards: ground-truth labels, detection rules with precision and recall, the same from the
  run and from its files;
- bad parameters exit 2 naming the field.

Runs use the small scenario (scenarios/small_ci.yaml) with overlays in tmp folders.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from output_frames import parquet_hashes

from sim.api import BadInput, build, compare, detect_card_lending, load_scenario, run
from sim.behaviour import NO_RESPONSE, PricedTrips, ScenarioResponse, scenario_response
from sim.behaviour_settings import DetectionRule, ResponseSettings
from sim.codes import CARD_TYPES, STORED_VALUE_MEDIA, TAP_EXIT, WEEKEND, WORKDAY
from sim.day import planned_taps
from sim.events import TapsFinal
from sim.journeys import COPY_TAP_KEY, Journeys
from sim.lending import RuleCounter, lending_pairs, score
from sim.output import read_table
from sim.privacy import load_key
from sim.response import PriceResponse, demand_ratio
from sim.rng import Streams

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
NANTONG = ROOT / "scenarios" / "nantong_2024.yaml"
OFFPEAK = ROOT / "scenarios" / "policies" / "elderly_offpeak.yaml"
KEY = load_key(ROOT / "tests" / "data" / "test_privacy.key")
LONGEVITY = CARD_TYPES.index("longevity")
ORDINARY = CARD_TYPES.index("ordinary")
# Neutral multipliers, so a whole group responds with the segment's elasticity.
NEUTRAL = """  response:
    day_type_factors: {weekend: 1, holiday: 1, spring_festival: 1}
    time_of_day_factors: {am_peak: 1, pm_peak: 1, off_peak: 1}
    medium_switch_share: 0
"""
OFFPEAK_FARES = """fares:
  concessions:
    longevity:
      - {kind: free, exclude_hours: ["07:00-09:00", "17:00-19:00"], hours_day_types: [workday]}
      - {kind: percent, discount_pct: 50}
"""


def _overlay(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"extends: {SMALL}\nname: {name}\n{body}", encoding="utf-8")
    return path


def _bus_and_metro(factor: float) -> str:
    regions = ("urban", "rudong", "haian", "haimen", "rugao", "qidong")
    bus = {r: round(200 * factor) for r in regions}
    bands = [round(f * factor) for f in (200, 300, 400, 500, 600, 700)]
    return (
        "fares:\n"
        f"  bus: {{region_fare_fen: {bus}}}\n"
        f"  metro: {{band_upper_km: [6, 11, 16, 23, 30, 45], band_fare_fen: {bands}}}\n"
    )


class Taps:
    """Subscriber keeping the final tap records in the home city (duplicates left out)."""

    def __init__(self, world) -> None:
        self.world = world
        self.parts: list[dict[str, np.ndarray]] = []

    def __call__(self, event) -> None:
        if isinstance(event, TapsFinal):
            t = event.taps
            keep = (t.city == 0) & (t.duplicate_of_key < 0)
            n = int(keep.sum())
            self.parts.append(
                {
                    "day": np.full(n, event.day),
                    "day_type": np.full(n, self.world.calendar.day_types[event.day]),
                    **{
                        name: getattr(t, name)[keep]
                        for name in ("row", "t_s", "tap_key", "kind", "medium", "line", "stop")
                    },
                    **{
                        name: getattr(t, name)[keep]
                        for name in ("amount_fen", "concession_fen", "is_transfer")
                    },
                    "card_type": self.world.population.card_type[t.row[keep]],
                }
            )

    def __getitem__(self, name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in self.parts])

    def boardings(self, card_type: int, hours=None, workday_only: bool = False) -> int:
        """Boardings (single taps and metro entries) of ``card_type``, optionally in ``hours``."""
        sel = (self["kind"] != TAP_EXIT) & (self["card_type"] == card_type)
        if workday_only:
            sel &= self["day_type"] == WORKDAY
        if hours is not None:
            sel &= np.isin(self["t_s"] // 3600, list(hours))
        return int(sel.sum())


def _ride(world, response=None) -> tuple[Taps, object]:
    """Run ``world`` without files; returns the taps and the response used (``response=None``:
    the scenario's own, built here so that its tally can be read)."""
    if response is None:
        response = ScenarioResponse(world, Streams(world.scenario.seed))
    taps = Taps(world)
    run(None, None, world=world, subscribers=[taps], response=response)
    return taps, response


# ------------------------------------------------------------------------ the baseline


def test_a_baseline_runs_exactly_as_planned_with_the_response_on(tmp_path):
    scenario = load_scenario(SMALL, days=3)
    assert scenario.reference is None  # small_ci changes no price of its base
    world = build(scenario)
    assert scenario_response(world, Streams(scenario.seed)) is NO_RESPONSE
    run(None, tmp_path / "default", world=world, privacy_key=KEY)
    run(None, tmp_path / "none", world=world, privacy_key=KEY, response=NO_RESPONSE)
    assert parquet_hashes(tmp_path / "default") == parquet_hashes(tmp_path / "none")
    assert not (tmp_path / "default" / "lending_labels").exists()


def test_the_reference_is_the_base_of_the_extends_chain(tmp_path):
    base = load_scenario(NANTONG)
    assert base.reference is None
    offpeak = load_scenario(OFFPEAK)
    assert Path(offpeak.reference.source).resolve() == NANTONG.resolve()
    assert offpeak.reference.fares == base.fares and offpeak.fares != base.fares
    # A chain of two overlays compares with its root; --set on a base is a price change too.
    overlay = load_scenario(_overlay(tmp_path, "small_offpeak", OFFPEAK_FARES))
    assert overlay.reference.fares == base.fares
    window = load_scenario(SMALL, ["fares.transfer.window_min=90"])
    assert window.reference.fares.transfer.window_min == 60
    ages = load_scenario(SMALL, ["population.concession_ages.longevity=60"])
    assert ages.reference.concession_ages == dict(base.population.concession_ages)
    # Behaviour settings are not prices.
    assert load_scenario(SMALL, ["behaviour.response.shift_share=0.9"]).reference is None


# ------------------------------------------------------------------------ the model


def test_the_demand_ratio_has_the_segment_elasticity_at_the_reference_fare():
    s = ResponseSettings()
    for name in ("ordinary", "longevity"):
        seg = s.segments.get(name, s.segments["default"])
        g, p_star = float(seg.time_cost_fen), float(s.elasticity_fare_fen)
        e_g = seg.fare_elasticity * (p_star + g) / p_star
        step = 1e-4
        slope = math.log(demand_ratio(p_star * (1 + step), p_star, e_g, g)) / math.log(1 + step)
        assert slope == pytest.approx(seg.fare_elasticity, rel=1e-3)
    assert demand_ratio(200.0, 200.0, -1.0, 500.0) == 1.0
    paid_from_free = demand_ratio(200.0, 0.0, -0.5, 250.0)
    assert 0 < paid_from_free < 1 and np.isfinite(paid_from_free)
    assert demand_ratio(0.0, 200.0, -0.5, 250.0) == pytest.approx(1 / paid_from_free)
    prices = np.array([0.0, 100, 200, 400, 800])
    assert (np.diff(demand_ratio(prices, 200.0, -0.7, 500.0)) < 0).all()


@pytest.fixture(scope="module")
def small_world():
    return build(load_scenario(SMALL, days=3))


def test_elasticity_multipliers_and_the_horizon(small_world):
    world = small_world
    settings = ResponseSettings(horizon="ramp", ramp_days=100, long_run_factor=2.0)
    r = PriceResponse(world, Streams(1), settings)
    assert [r.horizon_factor(d) for d in (0, 50, 100, 400)] == [1.0, 1.5, 2.0, 2.0]
    assert PriceResponse(world, Streams(1), ResponseSettings(horizon="long")).horizon_factor(0) == 2
    # One ordinary journey at 08:00 and one at 11:00, on a workday and on a weekend.
    rows = np.flatnonzero(world.population.card_type == ORDINARY)[:2]
    t = np.array([8 * 3600, 11 * 3600])
    j = Journeys(np.arange(2), np.arange(2), rows, np.arange(2), t, t, t, t + 600)
    short = PriceResponse(world, Streams(1), ResponseSettings())
    e_g, g = short.generalised_elasticity(j, 0, WORKDAY)
    p_star = ResponseSettings().elasticity_fare_fen
    e = e_g * p_star / (p_star + g)  # back to the fare elasticity at the reference fare
    assert e == pytest.approx([-0.3 * 0.6, -0.3 * 1.2])  # AM peak least sensitive
    weekend = short.generalised_elasticity(j, 0, WEEKEND)[0] * p_star / (p_star + g)
    assert weekend == pytest.approx([-0.3 * 1.3, -0.3 * 1.3])


@pytest.fixture(scope="module")
def fare_changes(tmp_path_factory):
    """Bus and metro fares x1.5 and x0.5 on the small scenario, riders responding with neutral
    multipliers; each with the same world run without a response."""
    folder = tmp_path_factory.mktemp("fares")
    out = {}
    for name, factor in (("rise", 1.5), ("cut", 0.5)):
        body = _bus_and_metro(factor) + "behaviour:\n" + NEUTRAL
        world = build(load_scenario(_overlay(folder, name, body), days=7))
        none, _ = _ride(world, NO_RESPONSE)
        taps, response = _ride(world)
        out[name] = (factor, none, taps, response.prices)
    return out


@pytest.mark.parametrize("name", ["rise", "cut"])
def test_a_fare_change_moves_trips_by_about_the_elasticity(fare_changes, name):
    factor, none, taps, prices = fare_changes[name]
    before, after = none.boardings(ORDINARY), taps.boardings(ORDINARY)
    # The arc elasticity of the ordinary cards' boardings is near the segment's -0.3 (the model
    # is constant-elasticity in the generalised cost, so the arc value differs a little).
    arc = math.log(after / before) / math.log(factor)
    assert -0.45 < arc < -0.15, arc
    # As many journeys given up (or copied) as the demand ratios say, within sampling error.
    what = "given_up" if factor > 1 else "copied"
    expected, observed = prices.expected[what], prices.tally[what]
    assert expected > 100
    assert abs(observed - expected) < 4 * math.sqrt(expected), (observed, expected)
    other = "copied" if factor > 1 else "given_up"
    assert prices.tally[other] == 0 and prices.tally["moved"] == 0


def test_induced_journeys_are_copies_of_the_riders_own(fare_changes):
    _, none, taps, _ = fare_changes["cut"]
    key = taps["tap_key"]
    copy = (key & COPY_TAP_KEY) > 0
    assert copy.any()
    # Each copied tap has its original ridden the same day: same card, line, stop and kind.
    original = {(d, k): i for i, (d, k) in enumerate(zip(taps["day"], key, strict=True))}
    pairs = zip(taps["day"][copy], key[copy] - COPY_TAP_KEY, strict=True)
    idx = np.array([original[pair] for pair in pairs])
    for col in ("row", "line", "stop", "kind"):
        assert (taps[col][copy] == taps[col][idx]).all(), col
    # ... moved by one offset per journey, at least 30 minutes away.
    offset = taps["t_s"][copy].astype(np.int64) - taps["t_s"][idx]
    journey = key[copy] // 8 * 1000 + taps["day"][copy]
    for j in np.unique(journey):
        assert len(set(offset[journey == j].tolist())) == 1
    assert (np.abs(offset) >= 1800).all()
    assert not ((none["tap_key"] & COPY_TAP_KEY) > 0).any()


# ------------------------------------------------------------------------ off-peak elderly


@pytest.fixture(scope="module")
def offpeak(tmp_path_factory):
    folder = tmp_path_factory.mktemp("offpeak")
    base_world = build(load_scenario(SMALL, days=7))
    world = build(load_scenario(_overlay(folder, "small_offpeak", OFFPEAK_FARES), days=7))
    base, _ = _ride(base_world, NO_RESPONSE)
    none, _ = _ride(world, NO_RESPONSE)
    taps, response = _ride(world)
    return base, none, taps, response.prices


def test_elderly_move_out_of_the_peak_windows_and_ride_a_little_less(offpeak):
    base, none, taps, prices = offpeak
    peaks, shoulders = (7, 8, 17, 18), (6, 9, 16, 19)
    for hours, sign in ((peaks, -1), (shoulders, +1)):
        change = taps.boardings(LONGEVITY, hours, True) - none.boardings(LONGEVITY, hours, True)
        assert sign * change > 0, (hours, change)
    assert prices.tally["moved"] > 0 and prices.tally["given_up"] > 0
    total, planned = taps.boardings(LONGEVITY), none.boardings(LONGEVITY)
    assert 0.95 * planned < total < planned  # a little fewer elderly trips
    # Lower concession cost than the baseline (free all day), and lower than without response.
    assert base["concession_fen"].sum() > taps["concession_fen"].sum()
    assert taps["amount_fen"].sum() < none["amount_fen"].sum()


def test_a_moved_journey_keeps_its_structure(offpeak):
    _, none, taps, _ = offpeak

    def by_key(t: Taps):
        return {(d, k): i for i, (d, k) in enumerate(zip(t["day"], t["tap_key"], strict=True))}

    a, b = by_key(none), by_key(taps)
    both = sorted(set(a) & set(b))
    ia, ib = np.array([a[k] for k in both]), np.array([b[k] for k in both])
    offset = taps["t_s"][ib].astype(np.int64) - none["t_s"][ia]
    moved = offset != 0
    assert moved.sum() > 50
    assert (none["card_type"][ia][moved] == LONGEVITY).all()  # only the policy's riders move
    journey = np.array([k // 8 for _, k in both]) * 10 + np.array([d for d, _ in both])
    for j in np.unique(journey[moved]):
        mine = journey == j
        assert len(set(offset[mine].tolist())) == 1  # every tap of the journey, one offset
    for col in ("line", "stop", "kind", "row"):
        assert (none[col][ia][moved] == taps[col][ib][moved]).all(), col
    # A journey's second leg stays a transfer, both legs moving together; unless the moved
    # journey now continues an earlier one, so that its first leg is the transfer.
    keys = np.array([k for _, k in both])
    second = moved & ((keys & 3) == 2) & none["is_transfer"][ia]  # second legs' boardings
    assert second.sum() > 0
    first_leg = {(d, k): i for (d, k), i in zip(both, ib, strict=True)}
    for pos in np.flatnonzero(second):
        d, k = both[pos]
        assert taps["is_transfer"][ib[pos]] or taps["is_transfer"][first_leg[(d, k - 2)]]


def test_riders_the_policy_does_not_touch_ride_as_in_the_baseline(offpeak):
    base, _, taps, _ = offpeak
    for t in (base, taps):
        assert (t["card_type"] == ORDINARY).sum() > 1000

    def ordinary(t: Taps) -> set:
        sel = t["card_type"] == ORDINARY
        columns = (t[name][sel] for name in ("day", "tap_key", "t_s", "medium"))
        return set(zip(*columns, strict=True))

    assert ordinary(base) == ordinary(taps)


# ------------------------------------------------------------------------ medium


def test_holders_switch_to_qr_when_concessions_reach_qr_codes(tmp_path):
    def media(overlay_body: str) -> tuple[Taps, Taps, object]:
        path = _overlay(tmp_path, f"qr{len(overlay_body)}", overlay_body)
        world = build(load_scenario(path, days=7))
        none, _ = _ride(world, NO_RESPONSE)
        taps, response = _ride(world)
        return none, taps, response.prices

    none, taps, prices = media("fares: {qr_concessions: true}\n")

    def qr_share_of_free_cards(t: Taps) -> float:
        free = np.isin(t["card_type"], [LONGEVITY, CARD_TYPES.index("military")])
        return float((~np.isin(t["medium"][free], list(STORED_VALUE_MEDIA))).mean())

    assert prices.tally["switched"] > 0
    assert qr_share_of_free_cards(taps) > qr_share_of_free_cards(none)
    # Same taps, media changed only from card to QR (the QR code gained, the card did not).
    before = {
        (d, k): m for d, k, m in zip(none["day"], none["tap_key"], none["medium"], strict=True)
    }
    changed = [
        (before[(d, k)], m)
        for d, k, m in zip(taps["day"], taps["tap_key"], taps["medium"], strict=True)
        if before.get((d, k), m) != m
    ]
    assert changed
    assert all(old in STORED_VALUE_MEDIA and new not in STORED_VALUE_MEDIA for old, new in changed)
    none, taps, prices = media(
        "fares: {qr_concessions: true}\nbehaviour: {response: {medium_switch_min_gain_fen: "
        "100000}}\n"
    )
    assert prices.tally["switched"] == 0


# ------------------------------------------------------------------------ card lending

LENDING = """period: {days: 14}
behaviour:
  card_lending:
    share: 0.05
    detection:
      - {name: loose, card_types: [longevity], hours: ["00:00-24:00"],
         day_types: [workday, weekend, holiday, spring_festival], min_days: 1, window_days: 1}
      - {name: am_peak, card_types: [longevity, love], hours: ["07:00-09:00"], min_days: 2,
         window_days: 5}
"""


@pytest.fixture(scope="module")
def lending_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lending")
    scenario = load_scenario(_overlay(folder, "small_lending", LENDING))
    out = folder / "run"
    summary = run(scenario, out, privacy_key=KEY, unmasked=True)
    return scenario, out, summary


def test_lent_cards_are_labelled_in_the_output(lending_run):
    _, out, summary = lending_run
    report = summary.card_lending["small_lending"]
    assert report["lent_cards"] > 10 and report["borrowed_taps"] > report["lent_cards"]
    labels = read_table(out, "lending_labels")
    assert labels.num_rows == report["borrowed_taps"]
    tx = read_table(out, "transactions").select(["transaction_id", "rider_category", "token_id"])
    tx = dict(zip(tx["transaction_id"].to_pylist(), tx["rider_category"].to_pylist(), strict=True))
    assert {tx[t] for t in labels["transaction_id"].to_pylist()} == {"longevity"}
    # One case per lent card, the same every day; borrowers ride on workdays only.
    assert len(set(labels["case_id"].to_pylist())) == report["lent_cards"]
    dates = set(labels["service_date"].to_pylist())
    kpis = read_table(out, "daily_kpis").select(["service_date", "day_type"]).to_pylist()
    workdays = {r["service_date"] for r in kpis if r["day_type"] == "workday"}
    assert dates <= workdays


def test_detection_precision_and_recall_against_the_labels(lending_run):
    _, out, summary = lending_run
    report = summary.card_lending["small_lending"]
    loose, peak = report["rules"]["loose"], report["rules"]["am_peak"]
    assert loose["recall"] == 1.0  # every lent card taps some day: a loose rule finds them all
    assert loose["flagged"] > peak["flagged"] > 0
    assert peak["precision"] > loose["precision"]
    for rule in (loose, peak):
        assert rule["true_positives"] + rule["missed"] == report["lent_cards"]
        assert rule["precision"] == rule["true_positives"] / rule["flagged"]
    # From the files (an unmasked run: stable tokens), the same numbers as during the run.
    assert detect_card_lending(out) == summary.card_lending
    # Other rules can be tried on the same files.
    strict = detect_card_lending(
        out,
        [{"name": "every_day", "card_types": ["longevity"], "hours": ["07:00-09:00"],
          "min_days": 5, "window_days": 5}],
    )["small_lending"]["rules"]["every_day"]  # fmt: skip
    assert strict["flagged"] <= peak["flagged"]


def test_detection_needs_stable_tokens_and_lending_off_changes_nothing(lending_run, tmp_path):
    scenario, _, _ = lending_run
    masked = run(scenario, tmp_path / "masked", privacy_key=KEY)
    assert masked.card_lending  # computed during the run, whatever the masking
    with pytest.raises(BadInput, match="identities are masked"):
        detect_card_lending(tmp_path / "masked")
    off = run(load_scenario(SMALL, days=2), tmp_path / "off", privacy_key=KEY)
    assert off.card_lending == {} and not (tmp_path / "off" / "lending_labels").exists()


def test_score_and_rule_counter():
    flagged = np.array([True, True, False, False])
    lent = np.array([True, False, True, False])
    assert score(flagged, lent) == {
        "flagged": 2,
        "true_positives": 1,
        "false_positives": 1,
        "missed": 1,
        "precision": 0.5,
        "recall": 0.5,
    }
    assert score(np.zeros(4, bool), lent)["precision"] is None
    assert score(flagged, np.zeros(4, bool))["recall"] is None
    rule = DetectionRule(
        name="r", card_types=("longevity",), hours=("07:00-09:00",), min_days=2, window_days=3
    )
    counter = RuleCounter(rule, 3)
    for day_type, hits in ((0, [0, 1]), (0, []), (1, [2]), (0, [1]), (0, [2]), (0, [0])):
        counter.add_day(day_type, np.array(hits, np.int64))
    # Card 0: days 1 and 6 of the workdays (too far apart); card 1: days 1 and 3 (within 3);
    # card 2: a weekend hit does not count, one workday hit.
    assert counter.flagged.tolist() == [False, True, False]
    hits = counter.hits(
        np.array([LONGEVITY, LONGEVITY, ORDINARY]), np.array([7 * 3600, 10 * 3600, 8 * 3600]),
        np.array([True, True, True]),
    )  # fmt: skip
    assert hits.tolist() == [True, False, False]


# ------------------------------------------------------------------------ bad parameters

BAD = [
    (
        "behaviour: {response: {segments: {default: {fare_elasticity: 0.5, time_cost_fen: 500}}}}",
        ["behaviour.response.segments.default.fare_elasticity", "0.5", "less than or equal to 0"],
    ),
    (
        "behaviour: {response: {segments: {elderly: {fare_elasticity: -0.2, time_cost_fen: 50}}}}",
        ["behaviour.response.segments", "'elderly'", "card types"],
    ),
    (
        "behaviour: {response: {horizon: forever}}",
        ["behaviour.response.horizon", "'forever'", "'short', 'long' or 'ramp'"],
    ),
    (
        "behaviour: {card_lending: {share: 1.5}}",
        ["behaviour.card_lending.share", "1.5", "less than or equal to 1"],
    ),
    (
        "behaviour: {card_lending: {detection: [{name: x, card_types: [longevity], "
        'hours: ["07:00-09:00"], min_days: 6, window_days: 5}]}}',
        ["behaviour.card_lending.detection.0", "min_days 6", "window_days 5"],
    ),
    ("reference: {source: x}", ["reference", "derived from the base scenario"]),
]


@pytest.mark.parametrize(("body", "fragments"), BAD, ids=[b[1][0] for b in BAD])
def test_bad_behaviour_parameters_exit_2_naming_the_field(tmp_path, body, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: {SMALL}\n{body}\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "run_scenario.py", "validate", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{path}:2: " in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def test_a_priced_day_without_a_pricer_is_ridden_as_planned(tmp_path):
    """A ``PricedTrips`` built by hand, without ``price`` (the older contract), still works: the
    response cannot price the reference, so riders ride what they planned."""
    world = build(load_scenario(_overlay(tmp_path, "small_offpeak", OFFPEAK_FARES), days=1))
    planned = planned_taps(world, Streams(1), world.population, 0, world.riding_rows).local
    assert len(planned) > 100
    fares = {"amount_fen": np.full(len(planned), 100, np.int64)}
    day_type = int(world.calendar.day_types[0])
    priced = PricedTrips(0, day_type, planned, fares, world.population)
    assert ScenarioResponse(world, Streams(1)).respond(priced) is planned


# ------------------------------------------------------------------------ full scale


@pytest.mark.slow
def test_full_scale_elderly_offpeak_compare():
    """Nantong vs the off-peak policy (7 days, one replication): the concession costs less,
    elderly boardings leave the workday peaks for the hours around them, and fall a little."""
    base, variant = load_scenario(NANTONG, days=7), load_scenario(OFFPEAK, days=7)
    report = compare(base, [variant], replications=1)
    rows = report["variants"]["elderly_offpeak"]
    assert rows["concession_cost_fen"]["difference"]["mean"] < 0
    for hour in ("07", "08", "17", "18"):
        assert rows[f"boardings.hour_card_type.{hour}.longevity"]["difference"]["mean"] < 0
    for hour in ("06", "09", "16", "19"):
        assert rows[f"boardings.hour_card_type.{hour}.longevity"]["difference"]["mean"] > 0
    elderly = rows["boardings.card_type.longevity"]
    assert -0.05 < elderly["difference"]["mean"] / elderly["baseline"] < 0


def test_an_age_policy_lends_the_same_cards_as_its_baseline():
    """Lent cards follow the type a card was issued as, not the one a policy re-derives."""
    lending = ["behaviour.card_lending.share=0.2"]
    base = build(load_scenario(SMALL, lending, days=2))
    variant = build(
        load_scenario(SMALL, [*lending, "population.concession_ages.longevity=60"], days=2)
    )
    assert (variant.population.card_type != base.population.card_type).any()
    streams = Streams(base.scenario.seed)
    pairs = [lending_pairs(w, streams, w.scenario.behaviour.card_lending) for w in (base, variant)]
    assert len(pairs[0].lent) > 0
    assert np.array_equal(pairs[0].lent, pairs[1].lent)
    assert np.array_equal(pairs[0].borrower, pairs[1].borrower)
