"""Concession overlays that change who gets a concession rather than its size: the free-ride age
(cards re-derived from age), concessions for QR riders, and same-city treatment of visitors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.api import BadInput, build, compare, load_scenario
from sim.codes import CARD_TYPES, MEDIA, STORED_VALUE_MEDIA
from sim.population import HOME_CITY, age_card_types, card_type_for_age

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
POLICIES = ROOT / "scenarios" / "policies"
LONGEVITY, LOVE, ORDINARY, STUDENT = (
    CARD_TYPES.index(n) for n in ("longevity", "love", "ordinary", "student")
)
NANTONG_AGES = {"longevity": 65, "love": 60}


def test_card_type_for_age_takes_the_highest_age_reached():
    ages = np.array([10, 59, 60, 64, 65, 69, 70, 99])
    got = card_type_for_age(ages, NANTONG_AGES)
    assert got.tolist() == [ORDINARY] * 2 + [LOVE] * 2 + [LONGEVITY] * 4
    from_70 = card_type_for_age(ages, {"longevity": 70, "love": 60})
    assert from_70.tolist() == [ORDINARY] * 2 + [LOVE] * 4 + [LONGEVITY] * 2
    # Equal ages: the first listed type wins, so free-from-60 leaves no half-fare card.
    from_60 = card_type_for_age(ages, {"longevity": 60, "love": 60})
    assert from_60.tolist() == [ORDINARY] * 2 + [LONGEVITY] * 6


def test_only_age_based_cards_move():
    card_type = np.array([LONGEVITY, LONGEVITY, LOVE, ORDINARY, STUDENT], np.uint8)
    age = np.array([67, 72, 62, 68, 66])
    moved = age_card_types(card_type, age, {"longevity": 70, "love": 60})
    # 67 -> love; 72 stays free; the ordinary 68-year-old never applied; a student stays a student
    assert moved.tolist() == [LOVE, LONGEVITY, LOVE, ORDINARY, STUDENT]
    assert age_card_types(card_type, age, {}) is card_type


def _small(policy: str) -> str:
    """A shipped policy overlay's differences applied to the small scenario."""
    body = (POLICIES / f"{policy}.yaml").read_text(encoding="utf-8")
    return body.split("\n\n", 1)[1].rsplit("output:", 1)[0]


@pytest.fixture(scope="module")
def small_overlays(tmp_path_factory):
    """The four overlays of this file on small_ci, and the baseline, 3 days each."""
    root = tmp_path_factory.mktemp("overlays")
    scenarios = {"base": load_scenario(SMALL, days=3)}
    for policy in ("free_from_60", "free_from_70", "qr_concessions", "visitors_same_city"):
        path = root / f"{policy}.yaml"
        path.write_text(f"extends: {SMALL}\nname: {policy}\n{_small(policy)}", encoding="utf-8")
        scenarios[policy] = load_scenario(path, days=3)
    return scenarios


def test_the_baseline_ages_reproduce_the_issued_types(small_overlays):
    world = build(small_overlays["base"])
    pop = world.population
    local = pop.home_city == HOME_CITY
    issued = {LONGEVITY: (65, 200), LOVE: (60, 64)}
    for code, (low, high) in issued.items():
        ages = pop.age[local & (pop.card_type == code)]
        assert len(ages) and ages.min() >= low and ages.max() <= high


def test_free_ride_age_moves_cards_between_types(small_overlays):
    counts = {}
    for name in ("base", "free_from_60", "free_from_70"):
        pop = build(small_overlays[name]).population
        local = pop.home_city == HOME_CITY
        counts[name] = np.bincount(pop.card_type[local], minlength=len(CARD_TYPES))
    base, from_60, from_70 = counts["base"], counts["free_from_60"], counts["free_from_70"]
    assert from_60[LOVE] == 0 and from_60[LONGEVITY] == base[LONGEVITY] + base[LOVE]
    moved = base[LONGEVITY] - from_70[LONGEVITY]
    assert moved > 0 and from_70[LOVE] == base[LOVE] + moved
    for counts_ in (from_60, from_70):  # nobody else moves, nobody is lost
        assert counts_.sum() == base.sum()
        assert counts_[ORDINARY] == base[ORDINARY] and counts_[STUDENT] == base[STUDENT]


@pytest.fixture(scope="module")
def overlay_report(small_overlays):
    scenarios = dict(small_overlays)
    base = scenarios.pop("base")
    return compare(base, list(scenarios.values()), replications=2)


def _diff(report, policy, measure):
    return report["variants"][policy][measure]["difference"]["mean"]


def test_free_from_60_costs_more_than_free_from_70(overlay_report):
    assert _diff(overlay_report, "free_from_60", "concession_cost_fen") > 0
    assert _diff(overlay_report, "free_from_70", "concession_cost_fen") < 0
    assert _diff(overlay_report, "free_from_60", "fare_revenue_fen") < 0
    assert _diff(overlay_report, "free_from_70", "fare_revenue_fen") > 0
    # The money moves in the age bands the thresholds move: 60-64 and 65-69.
    assert _diff(overlay_report, "free_from_60", "concession_cost_fen.age_band.60-64") > 0
    assert _diff(overlay_report, "free_from_70", "concession_cost_fen.age_band.65-69") < 0
    assert _diff(overlay_report, "free_from_70", "concession_cost_fen.age_band.70+") == 0
    # Groups hold the same people before and after (cards as issued): the 长寿卡 holders of
    # 65-69 now pay half fare, so that group pays, and the 爱心卡 group is untouched.
    by_type = {r["group"]: r for r in overlay_report["fairness"]["free_from_70"]["card_type"]}
    assert by_type["longevity"]["benefit_fen"] < 0
    assert by_type["love"]["benefit_fen"] == 0


def test_qr_concessions_reach_qr_riders_only(overlay_report):
    rows = overlay_report["variants"]["qr_concessions"]
    qr = [m for m in MEDIA if m.startswith("qr_")]
    gained = sum(rows[f"concession_cost_fen.medium.{m}"]["difference"]["mean"] for m in qr)
    cards = sum(
        rows[f"concession_cost_fen.medium.{MEDIA[m]}"]["difference"]["mean"]
        for m in STORED_VALUE_MEDIA
    )
    # Cards change only by riders' response (some move to the code): far less than QR gains.
    assert gained > 0 and abs(cards) < gained
    assert rows["concession_cost_fen"]["difference"]["mean"] > 0


def test_same_city_treatment_gives_visitors_local_concessions(overlay_report, small_overlays):
    rows = overlay_report["variants"]["visitors_same_city"]
    # (visitors already had fares foregone: transfer discounts at list fares)
    assert rows["concession_cost_fen.region.visitors"]["difference"]["mean"] > 0
    assert rows["concession_cost_fen.region.urban"]["difference"]["mean"] == 0
    pop = build(small_overlays["visitors_same_city"]).population
    visitors = pop.home_city != HOME_CITY
    elderly = visitors & (pop.age >= 65)
    assert elderly.any() and (pop.card_type[elderly] == LONGEVITY).all()


def test_moving_cards_between_types_keeps_the_holders_habits(small_overlays):
    """Who rides on a day depends on the card as issued, not on the type a policy gives it: the
    same holders are out on the same days (then they respond to what they pay)."""
    from agents.citizen import riders_today
    from sim.rng import Streams

    worlds = {name: build(small_overlays[name]) for name in ("base", "visitors_same_city")}
    streams = Streams(20240101)
    riders = {}
    for name, world in worlds.items():
        pop = world.population
        moved = np.flatnonzero(pop.card_type != pop.issued_card_type)
        assert (name == "base") == (len(moved) == 0)
        riders[name] = riders_today(
            pop, world.scenario.behaviour, streams, 3, 0, True, world.riding_rows
        )
    assert np.array_equal(riders["base"], riders["visitors_same_city"])


def test_the_prices_riders_are_used_to_are_part_of_the_scenario_hash(tmp_path):
    """Two policies with the same content over bases with other prices give other results (the
    response compares with the base's prices), so their hashes — in run_meta.json and the keys of
    a sweep's stored points — differ."""
    from sim.scenario import scenario_hash

    nantong = (ROOT / "scenarios" / "nantong_2024.yaml").read_text(encoding="utf-8")
    nantong = nantong.replace(
        "file: data/calendar_cn_2024.yaml", f"file: {ROOT}/scenarios/data/calendar_cn_2024.yaml"
    ).replace("file: ../data/nantong/outlets.csv", f"file: {ROOT}/data/nantong/outlets.csv")
    policy = (POLICIES / "elderly_offpeak.yaml").read_text(encoding="utf-8")
    hashes = []
    bases = (("free", "{kind: free}"), ("half", "{kind: percent, discount_pct: 50}"))
    for name, longevity in bases:
        folder = tmp_path / name
        folder.mkdir()
        base = nantong.replace(
            '    longevity:    [{kind: free, label: "65+ ride free (长寿卡)"}]',
            f"    longevity:    [{longevity}]",
        )
        assert base != nantong
        (folder / "nantong_2024.yaml").write_text(base, encoding="utf-8")
        (folder / "policy.yaml").write_text(
            policy.replace("extends: ../nantong_2024.yaml", "extends: nantong_2024.yaml"),
            encoding="utf-8",
        )
        hashes.append(scenario_hash(load_scenario(folder / "policy.yaml")))
    assert hashes[0] != hashes[1]


def test_elderly_cards_lean_to_the_older_regions(small_overlays):
    """With every region's share of residents aged 65+ (census), the elderly card types are
    spread by it: the urban districts (17.9% aged 65+) hold a smaller share of them than of
    the other cards; without the shares every type is spread alike."""
    pop = build(small_overlays["base"]).population
    local = pop.home_city == HOME_CITY
    urban = pop.region == 0
    elderly = np.isin(pop.issued_card_type, [LONGEVITY, LOVE])
    share_elderly = (urban & local & elderly).sum() / (local & elderly).sum()
    share_others = (urban & local & ~elderly).sum() / (local & ~elderly).sum()
    assert share_elderly < 0.85 * share_others


def test_a_bad_age_based_card_type_from_set_names_the_flag_not_the_base_file():
    with pytest.raises(BadInput) as exc:
        load_scenario(SMALL, ["population.concession_ages.ordinary=70"])
    message = str(exc.value)
    assert message.startswith("from --set population.concession_ages.ordinary=70:")
    assert "got 'ordinary'" in message and "nantong_2024.yaml" not in message


def test_a_root_file_is_its_own_reference_unless_an_override_changes_its_prices():
    assert load_scenario(SMALL, ["seed=3"], days=2).reference is None
    changed = load_scenario(SMALL, ["fares.transfer.window_min=90"], days=2)
    assert changed.reference is not None
    assert changed.reference.fares == load_scenario(SMALL).fares  # the file's own prices
    assert load_scenario(POLICIES / "elderly_offpeak.yaml", days=2).reference is not None
    # an overlay that sets no price (an incident timeline) prices as its base
    incidents = ROOT / "scenarios" / "incidents" / "metro_line_outage.yaml"
    assert load_scenario(incidents, days=2).reference is None
    # a population change that is not a concession age leaves the prices alone
    assert load_scenario(SMALL, ["population.concession_ages.longevity=70"]).reference
    assert load_scenario(SMALL, ["population.qr_channel_mix.qr_alipay=2"]).reference is None
