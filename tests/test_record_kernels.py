"""sim/record_kernels.py's compiled passes give, byte for byte, what the NumPy passes they
replaced gave (kept here as the reference, as tests/test_fare_kernels.py keeps pricing's): a
tap record's derived columns (``RecordWriter.tap_columns``) on real days of the small CI
scenario, masked and unmasked, in time order and as they come, for the first city and another,
and on property-based columns; the hex digits of ``sim.output._hex`` on property-based values.
What the NumPy passes refused (an index out of range, a card id that cannot be made run-wide, a
value too wide for its digits) is refused still."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import ids
from sim.api import build, load_scenario, privacy_key, run
from sim.events import DaySettled
from sim.grouping import gather, narrow_stable_order
from sim.output import _hex, _hex_pairs
from sim.privacy import PrivacyKey
from sim.record_kernels import (
    BAD_CARD,
    BAD_DEVICE,
    BAD_LINE,
    BAD_ROW,
    HEX_COMPILED_FROM,
    TapParams,
    TapSources,
    TapTables,
    hex_digits,
    tap_derived,
)
from sim.records import METRO, RecordWriter, _hash32
from sim.schema import Col

ROOT = Path(__file__).resolve().parent.parent
DAY_S = 86_400


def _numpy_tap_columns(writer: RecordWriter, day: int, c, order) -> dict[str, np.ndarray]:
    """``RecordWriter.tap_columns`` as NumPy passes (the reference)."""

    def col(name: str) -> np.ndarray:
        values = getattr(c, name)
        return values if order is None else gather(values, order)

    pop = writer.world.population
    lines = writer.world.network.lines
    row, line, city = col("row"), col("line"), col("city")
    amount, counter = col("amount_fen"), col("card_counter")
    device = col("device").astype(np.int64)
    is_bus = writer.world.network.devices.kind[device] != METRO
    t_abs = writer._ts(day, col("t_s"))
    tac = _hash32(writer._tac_key, pop.card_id[row], counter, amount, device, t_abs)
    return {
        "transaction_id": col("tx_id"),
        "event_timestamp": t_abs,
        "amount_fen": amount,
        "list_fare_fen": col("list_fare_fen"),
        "concession_fen": col("concession_fen"),
        "transfer_fen": col("transfer_fen"),
        "cap_fen": col("cap_fen"),
        "fare_capped": col("fare_capped"),
        "rider_category": pop.card_type[row],
        "media": col("medium"),
        "token_id": writer.tokens(row, day),
        **writer._linkable_columns(col, counter),
        "trip_record_type": col("kind"),
        "mode": col("mode"),
        "route_id": writer._code("route", line),
        "stop_id": col("stop"),
        "vehicle_id": np.where(is_bus, device, -1),
        "device_id": device,
        "uploader_id": col("agent_device_id"),
        "terminal_id": writer.terminal_base + device,
        "device_serial": col("device_serial"),
        "tac": tac,
        "city_code": writer._code("city", city),
        "issuer_id": col("issuer"),
        "acquirer_id": col("acquirer"),
        "region": writer._code("region", np.where(city > 0, pop.region[row], lines.region[line])),
        "is_transfer": col("is_transfer"),
        "incomplete_trip": col("incomplete"),
        "incident_id": writer._code("incident", col("incident")),
    }


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, values in want.items():
        assert got[name].dtype == values.dtype, name
        assert got[name].tobytes() == values.tobytes(), name


@pytest.fixture(scope="module")
def small_days():
    scenario = load_scenario(ROOT / "scenarios" / "small_ci.yaml", days=2)
    world = build(scenario)
    events: list = []
    run(scenario, None, world=world, subscribers=[events.append])
    return world, [e for e in events if isinstance(e, DaySettled)]


@pytest.mark.parametrize("unmasked", [False, True])
@pytest.mark.parametrize("shard", [0, 3])
def test_real_days_convert_as_the_reference(small_days, unmasked, shard):
    world, settled = small_days
    writer = RecordWriter(
        world,
        None,
        world.participants.ids,
        world.participants.code(world.scenario.output.issuer_id),
        unmasked=unmasked,
        privacy_key=privacy_key(None),
        shard_index=shard,
    )
    assert settled
    for event in settled:
        taps = event.taps
        assert (taps.city > 0).any()  # some taps take the holder's region
        for order in (None, narrow_stable_order(taps.t_s)):
            want = _numpy_tap_columns(writer, event.day, taps, order)
            _same(writer.tap_columns(event.day, taps, order), want)


def _derived_reference(src, tables, params, key: PrivacyKey | None, day: int) -> dict:
    """``tap_derived``'s columns as NumPy passes (what ``tap_columns`` did before): tokens
    under ``key`` (None: unmasked)."""
    device = src.device.astype(np.int64)
    t = src.t_s.astype(np.int64)
    t_abs = np.where(t >= 0, params.day_start_s + t, -1)
    tac_key = np.uint64(params.tac_key)
    card = ids.global_card(params.card_base >> 40, src.card)
    return {
        "device": device,
        "t_abs": t_abs,
        "vehicle": np.where(tables.device_kind[device] != params.metro, device, -1),
        "terminal": params.terminal_base + device,
        "tac": _hash32(tac_key, src.card, src.counter, src.amount, device, t_abs),
        "token": key.day_tokens(card, day) if key else card,
        "region": np.where(
            src.city > 0, tables.holder_region[src.row], tables.line_region[src.line]
        ),
    }


@st.composite
def tap_sources(draw):
    n = draw(st.integers(0, 300))
    n_pop, n_lines, n_devices = (
        draw(st.integers(1, 50)),
        draw(st.integers(1, 9)),
        draw(st.integers(1, 30)),
    )
    ints = lambda lo, hi, dtype: np.asarray(  # noqa: E731
        draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), dtype=dtype
    )
    row = ints(-n_pop, n_pop - 1, np.int64)
    src = TapSources(
        row=row,
        card=ints(0, 2**40 - 1, np.int64),
        line=ints(-n_lines, n_lines - 1, np.int32),
        city=ints(0, 3, np.uint8),
        amount=ints(-(2**40), 2**40, np.int64),
        counter=ints(-1, 70_000, np.int64),
        device=ints(-n_devices, n_devices - 1, np.int32),
        t_s=ints(-3, 2 * DAY_S, np.int64),
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    tables = TapTables(
        holder_region=rng.integers(0, 200, n_pop).astype(np.uint8),
        line_region=rng.integers(0, 200, n_lines).astype(np.uint8),
        device_kind=rng.integers(0, 3, n_devices).astype(np.uint8),
    )
    key = PrivacyKey(draw(st.binary(min_size=32, max_size=32))) if draw(st.booleans()) else None
    day = draw(st.integers(0, 400))
    params = TapParams(
        day_start_s=draw(st.integers(0, 2**33)),
        tac_key=draw(st.integers(0, 2**64 - 1)),
        card_base=ids.card_base(draw(st.integers(0, 5))),
        card_limit=ids.CARD_ID_LIMIT,
        terminal_base=draw(st.integers(0, 2**47)),
        metro=draw(st.integers(0, 2)),
        token_keys=None if key is None else key.day_token_keys(day),
    )
    return src, tables, params, key, day


@settings(max_examples=200, deadline=None)
@given(tap_sources())
def test_derived_columns_are_the_numpy_passes(case):
    src, tables, params, key, day = case
    got, bad = tap_derived(src, tables, params)
    assert bad == 0
    want = _derived_reference(src, tables, params, key, day)
    for name, values in want.items():
        column = getattr(got, name)
        assert column.dtype == values.dtype, name
        assert column.tobytes() == values.tobytes(), name


@pytest.mark.parametrize(
    ("field", "value", "bit"),
    [
        ("line", 9, BAD_LINE),
        ("line", -10, BAD_LINE),
        ("device", 30, BAD_DEVICE),
        ("card", -1, BAD_CARD),
        ("card", 2**40, BAD_CARD),
    ],
)
def test_out_of_range_taps_are_flagged(field, value, bit):
    src = TapSources(*(np.zeros(3, np.int64) for _ in TapSources._fields))
    src = src._replace(**{field: np.array([0, value, 0], dtype=np.int64)})
    tables = TapTables(np.zeros(5, np.uint8), np.zeros(9, np.uint8), np.zeros(30, np.uint8))
    _, bad = tap_derived(src, tables, TapParams(0, 1, 0, 2**40, 0, 1, None))
    assert bad == bit


def test_a_holder_row_out_of_range_is_flagged_where_it_is_read():
    src = TapSources(*(np.zeros(2, np.int64) for _ in TapSources._fields))
    src = src._replace(row=np.array([7, 5]), city=np.array([0, 1]))
    tables = TapTables(np.zeros(5, np.uint8), np.zeros(9, np.uint8), np.zeros(30, np.uint8))
    _, bad = tap_derived(src, tables, TapParams(0, 1, 0, 2**40, 0, 1, None))
    assert bad == BAD_ROW  # row 7 is not read: the tap was at home


def test_tap_columns_refuse_what_the_numpy_passes_refused(small_days):
    world, settled = small_days
    writer = RecordWriter(world, None, world.participants.ids, 0, privacy_key=privacy_key(None))
    taps = settled[0].taps
    broken = taps.device.copy()
    broken[3] = len(world.network.devices.kind)
    original = taps.device
    try:
        taps.device = broken
        with pytest.raises(IndexError):
            writer.tap_columns(settled[0].day, taps)
    finally:
        taps.device = original
    card_id = world.population.card_id
    saved = card_id[taps.row[0]]
    writable = card_id.flags.writeable
    card_id.flags.writeable = True
    try:
        card_id[taps.row[0]] = -5
        with pytest.raises(ValueError, match="made run-wide"):
            writer.tap_columns(settled[0].day, taps)
    finally:
        card_id[taps.row[0]] = saved
        card_id.flags.writeable = writable


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([4, 8, 12]),
    st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(0, 2**48), max_size=60),
)
def test_hex_digits_are_the_numpy_pairs(width, values):
    arr = np.asarray(values, dtype=np.int64)
    col = Col("x", None, "", hex_width=width)  # type: ignore[arg-type]
    digits, ok = hex_digits(arr, width)
    fits = not len(arr) or (arr.min() >= 0 and arr.max() < 16**width)
    assert ok == fits
    if fits:
        assert digits.tobytes() == _hex_pairs(col, arr, width).tobytes()
    else:
        with pytest.raises(ValueError, match="must fit"):
            _hex_pairs(col, arr, width)


@pytest.mark.parametrize("width", [8, 12])
def test_hex_of_a_day_takes_the_compiled_pass_and_checks_as_before(width):
    col = Col("x", None, "", hex_width=width)  # type: ignore[arg-type]
    values = np.random.default_rng(width).integers(0, 16**width, HEX_COMPILED_FROM + 5)
    rendered = _hex(col, values)
    assert rendered.to_pylist() == [f"{v:0{width}X}" for v in values.tolist()]
    values[7] = 16**width
    with pytest.raises(ValueError, match="must fit"):
        _hex(col, values)
