"""Every shipped scenario and calendar file is valid, and the overlays hold what they claim.

STYLE.md (Synthea): one test validates every shipped data file, so a scenario that drifts from the
schema fails CI instead of a user's run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.calendar import CalendarSettings, load_calendar_file
from sim.codes import CARD_TYPES, DAY_TYPES, TAP_SINGLE, code_of
from sim.fares import TapBatch, compile_fares, price_taps
from sim.scenario import MultiCityScenario, Scenario, load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
# Every scenario a user can run: top-level files and cities of multi-city runs (files named
# *_base.yaml are only bases for others to extend).
SCENARIO_FILES = sorted(
    p
    for p in SCENARIOS.rglob("*.yaml")
    # Drill scripts and trainees are not scenarios (tests/test_drills.py validates them).
    if "data" not in p.parts and "drills" not in p.parts and not p.stem.endswith("_base")
)
CALENDAR_FILES = sorted((SCENARIOS / "data").rglob("*.yaml"))
SHIPPED = {
    "nantong_2024.yaml",
    "small_ci.yaml",
    "elderly_offpeak.yaml",
    "transfer_90min.yaml",
    "student_free.yaml",
    "monthly_cap.yaml",
    "fare_rise_10pct.yaml",
    "no_love_discount.yaml",
    "two_city.yaml",
    "alpha.yaml",
    "beta.yaml",
}


@pytest.fixture(scope="module")
def base() -> Scenario:
    return load_scenario(SCENARIOS / "nantong_2024.yaml")


@pytest.fixture(scope="module")
def small() -> Scenario:
    return load_scenario(SCENARIOS / "small_ci.yaml")


@pytest.fixture(scope="module")
def policy() -> Scenario:
    return load_scenario(SCENARIOS / "policies" / "elderly_offpeak.yaml")


def test_the_globs_find_the_shipped_files():
    # Guards the parametrized tests below against passing vacuously on an empty glob.
    assert {p.name for p in SCENARIO_FILES} >= SHIPPED
    assert "calendar_cn_2024.yaml" in {p.name for p in CALENDAR_FILES}


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.name)
def test_every_scenario_file_is_valid(path: Path):
    loaded = load_scenario(path)
    assert loaded.name
    cities = loaded.city_scenarios if isinstance(loaded, MultiCityScenario) else (loaded,)
    assert cities
    for scenario in cities:
        assert isinstance(scenario, Scenario)
        calendar = scenario.load_calendar()
        last_day = scenario.period.start.toordinal() + scenario.period.days - 1
        assert calendar.covers_first <= scenario.period.start
        assert last_day <= calendar.covers_last.toordinal()
        assert Path(scenario.outlets.file).is_file()


@pytest.mark.parametrize("path", CALENDAR_FILES, ids=lambda p: p.name)
def test_every_calendar_file_is_valid(path: Path):
    calendar = load_calendar_file(path)
    assert isinstance(calendar, CalendarSettings)
    assert calendar.covers_first < calendar.covers_last
    for holiday in calendar.holidays:
        assert calendar.covers_first <= holiday.first <= holiday.last <= calendar.covers_last


def test_small_ci_inherits_everything_but_its_own_differences(base: Scenario, small: Scenario):
    assert (small.name, base.name) == ("small_ci", "nantong_2024")
    assert small.period.days == 7
    assert small.period.start == base.period.start
    # Inherited sections are identical, including paths resolved against the base file's folder.
    assert small.fares == base.fares
    assert small.clearing == base.clearing
    assert small.behaviour == base.behaviour
    assert small.calendar.file == base.calendar.file
    assert small.outlets == base.outlets
    assert small.network == base.network  # both metro lines kept
    assert set(small.network.metro) == {"M1", "M2"}


def test_small_ci_scales_counts_and_keeps_the_rest_of_each_card_type(
    base: Scenario, small: Scenario
):
    small_types, base_types = small.population.card_types, base.population.card_types
    assert set(small_types) == set(base_types) == set(CARD_TYPES)
    small_total = sum(t.count for t in small_types.values())
    base_total = sum(t.count for t in base_types.values())
    assert 19_000 <= small_total <= 21_000
    for name, own in small_types.items():
        inherited = base_types[name]
        assert 0 < own.count < inherited.count
        share, base_share = own.count / small_total, inherited.count / base_total
        assert abs(share - base_share) < 0.005, name
        # Only `count` is overridden; the deep merge keeps every other field of the base.
        assert own.model_copy(update={"count": inherited.count}) == inherited


def test_small_ci_shrinks_every_region_network(base: Scenario, small: Scenario):
    assert set(small.regions) == set(base.regions)
    assert (small.regions["urban"].zones, small.regions["urban"].bus.lines) == (16, 30)
    for name, region in small.regions.items():
        full = base.regions[name]
        assert region.zones < full.zones
        assert region.bus.lines < full.bus.lines
        assert region.bus.stops_per_line == full.bus.stops_per_line
        assert region.admin_code == full.admin_code


def test_small_ci_scales_inbound_visitors_only(base: Scenario, small: Scenario):
    assert base.interop is not None and small.interop is not None
    assert set(small.interop.cities) == set(base.interop.cities)
    for name, city in small.interop.cities.items():
        full = base.interop.cities[name]
        assert 0 < city.inbound_visitors_per_day < full.inbound_visitors_per_day
        update = {"inbound_visitors_per_day": full.inbound_visitors_per_day}
        assert city.model_copy(update=update) == full
    assert small.interop.model_copy(update={"cities": base.interop.cities}) == base.interop


def test_policy_overlay_changes_only_the_longevity_concession(base: Scenario, policy: Scenario):
    assert policy.name != base.name
    assert policy.population == base.population
    assert policy.fares.bus == base.fares.bus
    assert policy.fares.transfer == base.fares.transfer
    changed = {
        card_type
        for card_type in CARD_TYPES
        if policy.fares.concessions.get(card_type) != base.fares.concessions.get(card_type)
    }
    assert changed == {"longevity"}


def _longevity_bus_fares(scenario: Scenario, day_type: str, times: list[str]) -> list[int]:
    """What a longevity card pays for one urban bus boarding at each HH:MM (no transfers)."""
    compiled = compile_fares(scenario.fares, [("U001", 0, "urban")])
    t_s = [int(t[:2]) * 3600 + int(t[3:]) * 60 for t in times]
    n = len(times)
    taps = TapBatch(
        card=np.arange(n),  # one card per tap: no transfer chains
        t_s=np.array(t_s),
        line=np.zeros(n),
        mode=np.zeros(n),
        kind=np.full(n, TAP_SINGLE),
        card_type=np.full(n, code_of(CARD_TYPES, "longevity")),
        distance_km=np.zeros(n),
        incomplete=np.zeros(n, dtype=bool),
    )
    result = price_taps(compiled, taps, day_type, np.zeros(n, dtype=np.int64))
    return result.amount_fen.tolist()


def test_policy_elderly_ride_free_off_peak_and_pay_half_in_workday_peaks(
    base: Scenario, policy: Scenario
):
    times = ["06:59", "07:00", "08:59", "09:00", "12:00", "17:00", "18:59", "19:00", "22:00"]
    assert base.fares.bus.region_fare_fen["urban"] == 200
    assert _longevity_bus_fares(policy, "workday", times) == [0, 100, 100, 0, 0, 100, 100, 0, 0]
    for day_type in DAY_TYPES[1:]:  # weekend, holiday, Spring Festival: free all day
        assert _longevity_bus_fares(policy, day_type, times) == [0] * len(times), day_type
    # The base scenario keeps the elderly free at every hour, peaks included.
    assert _longevity_bus_fares(base, "workday", times) == [0] * len(times)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("period.days=yes", "days"),
        ("scale=yes", "scale"),
        ("fares.transfer.window_min=true", "window_min"),
        ("behaviour.one_way_share=false", "one_way_share"),
        ("clearing.batch_cutoff_hour=on", "batch_cutoff_hour"),
        ("devices.buffer_capacity_records=yes", "buffer_capacity_records"),
        ("outlets.default_counters=yes", "default_counters"),
        ("population.issue_year_weights={2023: yes}", "issue_year_weights"),
    ],
)
def test_yes_or_no_where_a_number_is_expected_is_refused_not_read_as_1_or_0(override, field):
    from sim.yaml_config import ConfigError

    with pytest.raises(ConfigError, match=f"{field}: expected a number.*got a yes/no value") as err:
        load_scenario(ROOT / "scenarios" / "small_ci.yaml", [override])
    assert "from --set" in str(err.value)  # the field's own error: where the value came from
    # A yes/no where one is expected stays welcome.
    assert load_scenario(ROOT / "scenarios" / "small_ci.yaml", ["output.mask_identities=no"])


def test_a_seed_beyond_64_bits_is_refused_not_wrapped():
    from sim.yaml_config import ConfigError

    with pytest.raises(ConfigError, match="seed: value out of range"):
        load_scenario(ROOT / "scenarios" / "small_ci.yaml", [f"seed={2**64 + 5}"])
    assert load_scenario(ROOT / "scenarios" / "small_ci.yaml", [f"seed={2**64 - 1}"])


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ("{}", "empty; expected years and their weights"),
        ("{2015: -1, 2016: 2}", "expected numbers >= 0"),
        ("{2015: 0, 2016: 0}", "every weight is 0"),
        ("{2030: 1}", "every card is issued after 2024"),
    ],
)
def test_issue_year_weights_that_issue_no_card_in_time_are_refused(weights, expected):
    from sim.yaml_config import ConfigError

    with pytest.raises(ConfigError, match=f"issue_year_weights.*{expected}"):
        load_scenario(
            ROOT / "scenarios" / "small_ci.yaml", [f"population.issue_year_weights={weights}"]
        )


def test_a_list_change_for_a_city_the_run_does_not_know_is_refused():
    """A typo in a city code made the change do nothing, silently."""
    from sim.yaml_config import ConfigError

    change = '[{date: 2024-03-05, city_code: "NOPE", change: delisted}]'
    with pytest.raises(ConfigError, match=r"interop.list_changes.0.city_code: 'NOPE'"):
        load_scenario(ROOT / "scenarios" / "small_ci.yaml", [f"interop.list_changes={change}"])
    with pytest.raises(ConfigError, match=r"list_changes.0.city_code: 'NOPE' is no city"):
        load_scenario(ROOT / "scenarios" / "two_city.yaml", [f"list_changes={change}"])


@pytest.mark.parametrize(
    ("override", "bound"),
    [
        ("outlets.default_counters=100000000", "less than or equal to 200"),
        ("regions.urban.zones=100000000", "less than or equal to 3000"),
        ("network.metro.M1.stations=100000000", "less than or equal to 200"),
        ("regions.urban.bus.vehicles_per_line=100000000", "less than or equal to 500"),
        ("regions.urban.bus.lines=100000000", "less than or equal to 20000"),
    ],
)
def test_a_network_too_big_for_any_city_is_refused_with_only_its_own_error(override, bound):
    """A slip of the keyboard filled the memory (or ran for ever); a region that fails says so
    alone, without the fares and interop tables listing its regions as unknown."""
    from sim.yaml_config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_scenario(ROOT / "scenarios" / "small_ci.yaml", [override])
    assert bound in str(err.value)
    assert "unknown region" not in str(err.value)


def test_multi_city_files_where_one_city_is_expected_say_so(tmp_path):
    """A file extending a multi-city file, or a multi-city file named as a city, was read as a
    city missing every section: a screen of errors hiding the cause."""
    from sim.yaml_config import ConfigError

    extending = tmp_path / "extending.yaml"
    extending.write_text(f"extends: {ROOT / 'scenarios' / 'two_city.yaml'}\nname: x\n")
    with pytest.raises(ConfigError, match=r"extends: .*two_city.yaml is a multi-city file") as e:
        load_scenario(extending)
    assert len(e.value.problems) == 1
    nested = tmp_path / "nested.yaml"
    text = (ROOT / "scenarios" / "two_city.yaml").read_text(encoding="utf-8")
    nested.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cities.alpha.scenario: .* is a multi-city file"):
        load_scenario(ROOT / "scenarios" / "two_city.yaml", [f"cities.alpha.scenario={nested}"])
    with pytest.raises(ConfigError, match="population.card_types"):
        load_scenario(ROOT / "scenarios" / "small_ci.yaml", ["population.card_types={}"])


def test_two_regions_of_one_name_are_refused_at_the_second():
    """Records and outlets name regions by name_zh: a repeated one was reported as outlets in
    a region the scenario does not define."""
    from sim.yaml_config import ConfigError

    with pytest.raises(ConfigError, match=r"haian.name_zh: '如东' is also rudong's"):
        load_scenario(ROOT / "scenarios" / "small_ci.yaml", ["regions.haian.name_zh=如东"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("regions.urban.map_lonlat=[999, 999]", "map_lonlat.0: value out of range"),
        ("interop.cities.shanghai.distance_km.urban=-5", "distance_km.urban: value out of range"),
    ],
)
def test_places_off_the_map_and_negative_distances_are_refused(override, expected):
    from sim.yaml_config import ConfigError

    with pytest.raises(ConfigError, match=expected):
        load_scenario(ROOT / "scenarios" / "small_ci.yaml", [override])
