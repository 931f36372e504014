"""How a stream makes its tap records fast: the time order of a day (two radix passes), the
``transactions`` columns a validator knows at the tap (``RecordWriter.tap_columns``, taken in
that order before anything is derived) and the table spec without the other columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.api import build, load_scenario, privacy_key, run
from sim.events import DaySettled
from sim.grouping import narrow_stable_order
from sim.records import record_writers
from sim.schema import TABLES, table_spec
from traffic.records import AFTER_THE_TAP

ROOT = Path(__file__).resolve().parent.parent


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-1, 200_000), max_size=400),
    st.sampled_from([0, 1_700_000_000, 2**40]),
)
def test_the_time_order_is_numpys_stable_argsort(times, base):
    seconds = np.asarray(times, dtype=np.int64) + base
    got = narrow_stable_order(seconds)
    assert np.array_equal(got, np.argsort(seconds, kind="stable"))


def test_times_spanning_more_than_two_digits_fall_back_to_the_plain_sort():
    seconds = np.array([2**33, 5, 2**33, -1, 5, 0], dtype=np.int64)
    assert np.array_equal(narrow_stable_order(seconds), np.argsort(seconds, kind="stable"))
    assert narrow_stable_order(np.zeros(0, dtype=np.int64)).size == 0


def test_a_spec_without_columns_drops_the_checks_that_read_them():
    spec = table_spec("transactions")
    taps = spec.without(AFTER_THE_TAP)
    assert taps.column_names == tuple(c for c in spec.column_names if c not in AFTER_THE_TAP)
    dropped = [c.description for c in spec.checks if c not in taps.checks]
    assert dropped == ["status = rejected <=> reject_reason != 'none'"]
    assert taps.name == spec.name and taps.file_schema.metadata == spec.file_schema.metadata
    with pytest.raises(KeyError, match="no column"):
        spec.without(["no_such_column"])


def test_every_check_reads_only_columns_of_its_table():
    # A check that forgets a column in ``reads`` would stay in a spec without that column.
    for spec in TABLES.values():
        for check in spec.checks:
            assert check.reads, (spec.name, check.description)
            assert set(check.reads) <= set(spec.column_names), (spec.name, check.description)


def test_tap_columns_taken_in_an_order_are_the_transactions_columns_in_that_order():
    scenario = load_scenario(ROOT / "scenarios" / "small_ci.yaml", days=2)
    worlds = build(scenario)
    events: list = []
    run(scenario, None, world=worlds, subscribers=[events.append])
    settled = [e for e in events if isinstance(e, DaySettled)]
    assert len(settled) == 2
    writer = record_writers([worlds], None, unmasked=False, privacy_key=privacy_key(None))[0]
    for event in settled:
        full = writer.transaction_columns(event.day, event.taps)
        order = narrow_stable_order(event.taps.t_s)
        assert not np.array_equal(order, np.arange(len(order)))  # the taps come by card
        ordered = writer.tap_columns(event.day, event.taps, order)
        assert set(ordered) == set(full) - set(AFTER_THE_TAP)
        for name, values in ordered.items():
            assert np.array_equal(values, full[name][order]), name
        stamps = ordered["event_timestamp"]
        assert (stamps[1:] >= stamps[:-1]).all()
