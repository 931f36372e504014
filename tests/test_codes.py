"""Tests for sim/codes.py: code sets tested per element, on any column."""

from __future__ import annotations

import numpy as np
import pytest

from sim.codes import (
    ELDERLY_CARD_CODES,
    STORED_VALUE_MEDIA,
    _CodeSet,
    is_elderly,
    is_stored_value,
)

EVERY_CODE = np.arange(256, dtype=np.uint8)


@pytest.mark.parametrize("codes", [(0, 1), (2, 3), (5,), (1, 3), (0, 2, 255), (254, 255), ()])
def test_a_code_set_matches_isin_on_every_uint8_code_and_on_wider_columns(codes):
    code_set = _CodeSet(codes)
    expected = np.isin(EVERY_CODE, codes)
    assert np.array_equal(code_set.of(EVERY_CODE), expected)
    assert np.array_equal(code_set.of(EVERY_CODE.astype(np.int64)), expected)
    assert code_set.of(EVERY_CODE).dtype == bool


def test_stored_value_and_elderly_codes():
    stored_value = np.isin(EVERY_CODE, list(STORED_VALUE_MEDIA))
    assert np.array_equal(is_stored_value(EVERY_CODE), stored_value)
    assert np.array_equal(is_elderly(EVERY_CODE), np.isin(EVERY_CODE, ELDERLY_CARD_CODES))
    assert bool(is_stored_value(np.uint8(0))) and not bool(is_elderly(np.uint8(0)))
