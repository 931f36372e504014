"""Every id layout of a run, in one place.

Ids are non-negative int64 built from bit fields, so they sort in a useful order, never collide
across shards (cities) or days, and can be taken apart again without a lookup table.

| id                      | layout, high bits to low                | limits                       |
|-------------------------|-----------------------------------------|------------------------------|
| record id (taps,        | shard:10 · day:16 · sequence:37         | 1,024 shards, 65,536 days,   |
|  top-ups, card sales)   |                                         | 2^37 records a shard and day |
| outlet visit id         | shard:10 · day:13 · card:38 · service:2 | 8,192 days, 2^38 cards       |
| journey key             | card · trip slot (MAX_TRIP_SLOTS)       | (internal to a day)          |
| tap key                 | journey · leg:2 · exit:1, bit 62 marks  | (internal to a day)          |
|                         | the second charge of a double tap       |                              |
| upload key              | device:39 · upload batch:24             | (internal to the clearing)   |
| card in the clearing    | shard:10 · card id:40                   | 2^40 cards a shard           |
|  (run-wide)             |                                         |                              |
| device in the clearing  | shard:10 · device id:21                 | 2^21 devices a shard (the    |
|  (run-wide)             |                                         | duplicate key packs it in 31 |
|                         |                                         | bits beside a 32-bit serial) |
| clearing batch id       | node:10 · sequence:42                   | 1,024 clearing nodes; < 2^53 |
|                         |                                         | (exact as a float: nullable  |
|                         |                                         | columns in pandas)           |

Shard 0 is the scenario's first (home) city. Visit ids feed the outlet service-time draws, so
their layout keeps shard 0's ids exactly as they were before shards existed.
"""

from __future__ import annotations

import numpy as np

SHARD_BITS = 10
DAY_BITS = 16
SEQ_BITS = 37
MAX_SHARDS = 1 << SHARD_BITS
#: Where the shard sits in a record id and in a visit id alike (readers find a record's
#: shard there: sim/run_view.py).
SHARD_SHIFT = DAY_BITS + SEQ_BITS
MAX_DAYS = 1 << DAY_BITS
MAX_SEQ = 1 << SEQ_BITS

_VISIT_SERVICE_BITS = 2
_VISIT_CARD_BITS = 38
_VISIT_DAY_BITS = 13
_VISIT_DAY_SHIFT = _VISIT_SERVICE_BITS + _VISIT_CARD_BITS  # 40
_VISIT_SHARD_SHIFT = _VISIT_DAY_SHIFT + _VISIT_DAY_BITS  # 53
assert _VISIT_SHARD_SHIFT == SHARD_SHIFT  # one place to read a shard from, whatever the id

DUPLICATE_TAP_BIT = np.int64(1) << np.int64(62)
UPLOAD_BATCH_BITS = 24


def _check(name: str, value: int, limit: int) -> int:
    value = int(value)
    if not 0 <= value < limit:
        raise ValueError(f"{name} must be in [0, {limit}), got {value}")
    return value


def record_ids(shard: int, day: int, count: int, first: int = 0) -> np.ndarray:
    """Ids of ``count`` records of ``shard`` on ``day``, numbered from ``first``."""
    shard = _check("shard", shard, MAX_SHARDS)
    day = _check("day", day, MAX_DAYS)
    if first < 0 or first + count > MAX_SEQ:
        raise ValueError(f"a shard's day holds at most {MAX_SEQ} records")
    base = (np.int64(shard) << np.int64(DAY_BITS + SEQ_BITS)) | (
        np.int64(day) << np.int64(SEQ_BITS)
    )
    return base + np.arange(first, first + count, dtype=np.int64)


def record_day(ids: np.ndarray) -> np.ndarray:
    """Day field of record ids."""
    return (np.asarray(ids, dtype=np.int64) >> SEQ_BITS) & (MAX_DAYS - 1)


def record_shard(ids: np.ndarray) -> np.ndarray:
    """Shard field of record ids."""
    return np.asarray(ids, dtype=np.int64) >> (DAY_BITS + SEQ_BITS)


def record_seq(ids: np.ndarray) -> np.ndarray:
    """Sequence field of record ids (the record's position in its shard's day)."""
    return np.asarray(ids, dtype=np.int64) & (MAX_SEQ - 1)


def visit_ids(shard: int, day: int, card_id: np.ndarray, service: np.ndarray) -> np.ndarray:
    """Outlet visit ids: one per (shard, day, card, service); they key the service-time draws."""
    shard = _check("shard", shard, MAX_SHARDS)
    day = _check("day", day, 1 << _VISIT_DAY_BITS)
    card = np.asarray(card_id, dtype=np.int64)
    if len(card) and (card.min() < 0 or card.max() >= 1 << _VISIT_CARD_BITS):
        raise ValueError(f"card ids must be in [0, 2^{_VISIT_CARD_BITS}) for visit ids")
    return (
        (np.int64(shard) << np.int64(_VISIT_SHARD_SHIFT))
        + (np.int64(day) << np.int64(_VISIT_DAY_SHIFT))
        + card * (1 << _VISIT_SERVICE_BITS)
        + np.asarray(service, dtype=np.int64)
    )


def duplicate_tap_key(tap_key: np.ndarray) -> np.ndarray:
    """Key of the second charge of a double tap (the first charge keeps ``tap_key``)."""
    return np.asarray(tap_key, dtype=np.int64) | DUPLICATE_TAP_BIT


def upload_key(device: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """One int64 per (uploading device, upload batch), for set lookups of resent batches."""
    return np.asarray(device, dtype=np.int64) * (1 << UPLOAD_BATCH_BITS) + np.asarray(
        batch, dtype=np.int64
    )


def split_upload_key(key: int) -> tuple[int, int]:
    """(device, batch) of an upload key."""
    return int(key) >> UPLOAD_BATCH_BITS, int(key) & ((1 << UPLOAD_BATCH_BITS) - 1)


_BATCH_SEQ_BITS = 42
MAX_NODES = 1 << 10  # participant codes a clearing node may have


def batch_ids(node: int, first: int, count: int) -> np.ndarray:
    """Clearing batch ids of a node's log (``node`` is the node's participant code)."""
    node = _check("node", node, MAX_NODES)
    return (np.int64(node) << np.int64(_BATCH_SEQ_BITS)) + np.arange(
        first, first + count, dtype=np.int64
    )


_CARD_BITS = 40
_DEVICE_BITS = 21


def _global(shard: int, local: np.ndarray, bits: int, what: str) -> np.ndarray:
    shard = _check("shard", shard, MAX_SHARDS)
    local = np.asarray(local, dtype=np.int64)
    if len(local) and (local.min() < 0 or local.max() >= 1 << bits):
        raise ValueError(f"{what} ids must be in [0, 2^{bits}) to be made run-wide")
    return (np.int64(shard) << np.int64(bits)) + local


def global_card(shard: int, card_id: np.ndarray) -> np.ndarray:
    """Run-wide id of a shard's card: the clearing sees every shard's records together and must
    not confuse card 5 of one city with card 5 of another. Shard 0's ids are unchanged."""
    return _global(shard, card_id, _CARD_BITS, "card")


#: A shard's card ids are below this (``global_card`` refuses the others).
CARD_ID_LIMIT = 1 << _CARD_BITS


def card_base(shard: int) -> int:
    """What ``global_card`` adds to a shard's card ids (for a compiled pass doing it itself)."""
    return _check("shard", shard, MAX_SHARDS) << _CARD_BITS


def local_card(global_id: np.ndarray) -> np.ndarray:
    """The shard-local id of a run-wide card id."""
    return np.asarray(global_id, dtype=np.int64) & ((1 << _CARD_BITS) - 1)


def card_shard(global_id: np.ndarray) -> np.ndarray:
    """The shard of a run-wide card id."""
    return np.asarray(global_id, dtype=np.int64) >> _CARD_BITS


def global_device(shard: int, device: np.ndarray) -> np.ndarray:
    """Run-wide id of a shard's device (its upload serials are unique only per shard)."""
    return _global(shard, device, _DEVICE_BITS, "device")
