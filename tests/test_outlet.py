"""Outlets: CSV parsing, opening hours, counters and queues; asserted as event logs."""

from __future__ import annotations

from pathlib import Path

import mesa
import numpy as np
import pydantic
import pytest
import simpy

from agents.outlet import (
    CARD_SALE,
    DAY_S,
    LEFT_CLOSED,
    OUTCOME_PENDING,
    SERVED,
    TOPUP,
    OutletAgent,
    OutletFileError,
    OutletInfo,
    OutletSettings,
    VisitResults,
    build_outlets,
    draw_service_times,
    load_outlets_csv,
    parse_hours,
    run_visits,
)
from sim.rng import Streams

REAL_CSV = Path(__file__).resolve().parents[1] / "data" / "nantong" / "outlets.csv"
# Fixed service times (cv 0): top-up 100 s, card sale 600 s.
FIXED = dict(
    file=str(REAL_CSV), topup_service_mean_s=100, card_sale_service_mean_s=600, service_time_cv=0
)


def hm(h: int, m: int, s: int = 0, day: int = 0) -> int:
    return day * DAY_S + h * 3600 + m * 60 + s


def info(hours: str, open_days: str = "every_day", outlet_id: int = 1) -> OutletInfo:
    weekday, weekend = parse_hours(hours)
    return OutletInfo(outlet_id, "测试", "市区", "地址", hours, weekday, weekend, open_days, "")


def make_outlet(
    hours: str = "08:00-17:30",
    counters: int = 1,
    open_days: str = "every_day",
    closed_on: frozenset[int] = frozenset(),
    **settings,
) -> tuple[simpy.Environment, OutletAgent]:
    env = simpy.Environment()
    outlet = OutletAgent(
        mesa.Model(),
        info(hours, open_days),
        counters,
        env,
        settings=OutletSettings(**{**FIXED, **settings}),
        is_open_day=lambda rule, day: day not in closed_on,
        is_weekend=lambda day: day % 7 in (5, 6),
    )
    return env, outlet


def visit(
    env: simpy.Environment, outlet: OutletAgent, arrivals: list[int], kinds: list[int] | None = None
) -> VisitResults:
    n = len(arrivals)
    visits = {
        "visit_id": np.arange(1, n + 1),
        "outlet_idx": np.zeros(n, dtype=np.int64),
        "arrival_s": np.array(arrivals, dtype=np.int64),
        "service_kind": np.array(kinds if kinds else [TOPUP] * n),
    }
    return run_visits(env, [outlet], visits, streams=Streams(1))


def log(res: VisitResults) -> list[tuple[int, int, int, int, int]]:
    """(visit, arrive, start, end, wait) per visit."""
    return list(
        zip(
            res.visit_id.tolist(),
            res.arrival_s.tolist(),
            res.service_start_s.tolist(),
            res.service_end_s.tolist(),
            res.wait_s.tolist(),
            strict=True,
        )
    )


def test_one_counter_three_arrivals_queue_in_order() -> None:
    env, outlet = make_outlet()
    res = visit(env, outlet, [hm(9, 0), hm(9, 0, 30), hm(9, 1)])
    assert res.outcome.tolist() == [OUTCOME_PENDING] * 3
    env.run(until=DAY_S)
    assert log(res) == [
        (1, hm(9, 0), hm(9, 0), hm(9, 1, 40), 0),
        (2, hm(9, 0, 30), hm(9, 1, 40), hm(9, 3, 20), 70),
        (3, hm(9, 1), hm(9, 3, 20), hm(9, 5), 140),
    ]
    assert res.outcome.tolist() == [SERVED] * 3
    assert res.counter.tolist() == [0, 0, 0]
    assert res.outlet_id.tolist() == [1, 1, 1]


def test_results_fill_as_the_clock_runs() -> None:
    env, outlet = make_outlet()
    res = visit(env, outlet, [hm(9, 0), hm(9, 0, 30)])
    env.run(until=hm(9, 1))
    assert res.outcome.tolist() == [OUTCOME_PENDING, OUTCOME_PENDING]
    assert res.service_start_s.tolist() == [hm(9, 0), -1]
    env.run(until=hm(9, 2))
    assert res.outcome.tolist() == [SERVED, OUTCOME_PENDING]


def test_lunch_break_queue_resumes_after_it_in_arrival_order() -> None:
    env, outlet = make_outlet("09:00-11:30;13:30-17:30")
    # A is served across the 11:30 close; B queues behind A and must wait out the break;
    # C arrives during the break. B keeps its place ahead of C.
    res = visit(env, outlet, [hm(11, 25), hm(11, 26), hm(12, 0)], [CARD_SALE, TOPUP, TOPUP])
    env.run(until=DAY_S)
    assert log(res) == [
        (1, hm(11, 25), hm(11, 25), hm(11, 35), 0),
        (2, hm(11, 26), hm(13, 30), hm(13, 31, 40), hm(13, 30) - hm(11, 26)),
        (3, hm(12, 0), hm(13, 31, 40), hm(13, 33, 20), hm(13, 31, 40) - hm(12, 0)),
    ]
    assert res.outcome.tolist() == [SERVED] * 3


def test_queue_at_closing_time_leaves_when_no_window_is_left() -> None:
    env, outlet = make_outlet("08:00-17:30")
    res = visit(env, outlet, [hm(17, 20), hm(17, 25), hm(17, 40)], [CARD_SALE, TOPUP, TOPUP])
    env.run(until=DAY_S)
    assert log(res) == [
        (1, hm(17, 20), hm(17, 20), hm(17, 30), 0),
        (2, hm(17, 25), -1, -1, 300),  # still queuing at 17:30, no later window today
        (3, hm(17, 40), -1, -1, 0),  # arrived after closing
    ]
    assert res.outcome.tolist() == [SERVED, LEFT_CLOSED, LEFT_CLOSED]


def test_closed_day_turns_visitors_away() -> None:
    env, outlet = make_outlet(closed_on=frozenset({1}))
    res = visit(env, outlet, [hm(10, 0, day=1), hm(10, 0, day=2)])
    env.run(until=3 * DAY_S)
    assert log(res) == [
        (1, hm(10, 0, day=1), -1, -1, 0),
        (2, hm(10, 0, day=2), hm(10, 0, day=2), hm(10, 1, 40, day=2), 0),
    ]
    assert res.outcome.tolist() == [LEFT_CLOSED, SERVED]


def test_early_arrival_waits_for_opening_or_leaves_by_policy() -> None:
    env, outlet = make_outlet()
    res = visit(env, outlet, [hm(7, 30)])
    env.run(until=DAY_S)
    assert log(res) == [(1, hm(7, 30), hm(8, 0), hm(8, 1, 40), 1800)]
    env, outlet = make_outlet(closed_arrival="leave")
    res = visit(env, outlet, [hm(7, 30), hm(12, 0)])
    env.run(until=DAY_S)
    assert log(res) == [(1, hm(7, 30), -1, -1, 0), (2, hm(12, 0), hm(12, 0), hm(12, 1, 40), 0)]
    assert res.outcome.tolist() == [LEFT_CLOSED, SERVED]


def test_weekend_hours_apply_on_weekend_days() -> None:
    env, outlet = make_outlet("weekday 06:00-18:20; weekend 08:00-11:00;14:00-17:00")
    # Day 5 is a weekend day in this test calendar; day 0 a weekday.
    res = visit(env, outlet, [hm(7, 0), hm(7, 0, day=5)])
    env.run(until=6 * DAY_S)
    assert log(res) == [
        (1, hm(7, 0), hm(7, 0), hm(7, 1, 40), 0),
        (2, hm(7, 0, day=5), hm(8, 0, day=5), hm(8, 1, 40, day=5), 3600),
    ]


def test_two_counters_serve_in_parallel_lowest_free_counter_first() -> None:
    env, outlet = make_outlet(counters=2)
    res = visit(env, outlet, [hm(9, 0), hm(9, 0), hm(9, 0)], [CARD_SALE, TOPUP, TOPUP])
    env.run(until=DAY_S)
    assert log(res) == [
        (1, hm(9, 0), hm(9, 0), hm(9, 10), 0),
        (2, hm(9, 0), hm(9, 0), hm(9, 1, 40), 0),
        (3, hm(9, 0), hm(9, 1, 40), hm(9, 3, 20), 100),
    ]
    assert res.counter.tolist() == [0, 1, 1]


def test_service_times_are_keyed_by_visit_id() -> None:
    streams = Streams(11)
    ids = np.arange(1000, 3000)
    arrival = np.full(len(ids), hm(9, 0, day=4))
    mean = np.full(len(ids), 300.0)
    full = draw_service_times(streams, ids, arrival, mean, 0.5)
    part = draw_service_times(streams, ids[::3], arrival[::3], mean[::3], 0.5)
    assert part.tolist() == full[::3].tolist()
    assert full.min() >= 1 and 280 < full.mean() < 320
    assert 0.4 < full.std() / full.mean() < 0.6


def test_real_outlets_csv_parses() -> None:
    infos = load_outlets_csv(REAL_CSV)
    assert len(infos) == 18
    assert [i.outlet_id for i in infos] == list(range(1, 19))
    by_id = {i.outlet_id: i for i in infos}
    assert by_id[3].weekday_windows == ((hm(9, 0), hm(11, 30)), (hm(13, 30), hm(17, 30)))
    assert by_id[10].open_days == "fridays_only"
    assert by_id[10].note_zh == "每周五上午,其余时间休"  # unquoted comma joined back
    assert by_id[14].weekday_windows == ((hm(6, 0), hm(18, 20)),)
    assert by_id[14].weekend_windows == ((hm(8, 0), hm(11, 0)), (hm(14, 0), hm(17, 0)))
    assert {i.open_days for i in infos} == {
        "every_day",
        "workdays",
        "fridays_only",
        "mon_to_sat_except_holidays",
        "every_day_except_holidays",
        "every_day_except_spring_festival_eve_to_day2",
    }


def broken_copy(tmp_path: Path, edit) -> Path:
    lines = REAL_CSV.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "outlets_broken.csv"
    path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
    return path


def test_broken_outlets_csv_gives_a_clear_error(tmp_path: Path) -> None:
    bad_time = broken_copy(
        tmp_path, lambda ls: [*ls[:3], ls[3].replace("09:00-11:30", "9h-11:30"), *ls[4:]]
    )
    with pytest.raises(OutletFileError) as err:
        load_outlets_csv(bad_time)
    msg = str(err.value)
    assert "outlets_broken.csv" in msg and "row 4" in msg and "'hours'" in msg
    assert "HH:MM" in msg and "expected" in msg
    assert (err.value.row, err.value.column) == (4, "hours")

    no_col = broken_copy(tmp_path, lambda ls: [ls[0].replace(",hours", ""), *ls[1:]])
    with pytest.raises(OutletFileError, match=r"row 1, column 'hours': column is missing"):
        load_outlets_csv(no_col)

    rule = broken_copy(
        tmp_path, lambda ls: [*ls[:5], ls[5].replace("every_day", "sometimes"), *ls[6:]]
    )
    with pytest.raises(
        OutletFileError, match=r"row 6, column 'open_days': unknown rule 'sometimes'"
    ):
        load_outlets_csv(rule)
    assert issubclass(OutletFileError, ValueError)

    def huge_id(ls):
        first = ls[1].split(",", 1)
        return [ls[0], f"99999999999999999999,{first[1]}", *ls[2:]]

    with pytest.raises(OutletFileError, match=r"row 2, column 'outlet_id'.*from 1 to 2147483647"):
        load_outlets_csv(broken_copy(tmp_path, huge_id))


def test_build_outlets_takes_counters_from_settings() -> None:
    infos = load_outlets_csv(REAL_CSV)
    settings = OutletSettings(file=str(REAL_CSV), default_counters=2, counters_by_outlet={1: 5})
    outlets = build_outlets(
        mesa.Model(),
        simpy.Environment(),
        infos,
        settings,
        is_open_day=lambda rule, day: True,
        is_weekend=lambda day: False,
    )
    assert [o.counters for o in outlets[:3]] == [5, 2, 2]
    assert outlets[0].resource.capacity == 5
    with pytest.raises(ValueError, match=r"unknown outlet ids \[99\]"):
        build_outlets(
            mesa.Model(),
            simpy.Environment(),
            infos,
            OutletSettings(file=str(REAL_CSV), counters_by_outlet={99: 1}),
            is_open_day=lambda rule, day: True,
            is_weekend=lambda day: False,
        )
    with pytest.raises(pydantic.ValidationError):
        OutletSettings(file=str(REAL_CSV), counters_by_outlet={1: 0})
    with pytest.raises(pydantic.ValidationError):
        OutletSettings(file=str(REAL_CSV), counter=3)
