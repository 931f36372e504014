"""The masked export resists the three re-identification attacks of the hardening review
(docs/privacy.md): recomputing tokens from the published seed, regenerating identities from the
seed, and linking a card's days by its counter and balance. With the key, linkage is reproducible.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from output_frames import parquet_hashes, read_frame

from sim.api import load_scenario, run
from sim.identity import identities, mask_id_number, mask_name, mask_phone
from sim.privacy import PrivacyKey, PrivacyKeyError, load_key
from sim.rng import Streams, _mix_array, stream_key

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
KEY = load_key(ROOT / "tests" / "data" / "test_privacy.key")
DAYS = 3


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    scenario = load_scenario(SMALL, days=DAYS)
    masked = run(scenario, root / "masked", privacy_key=KEY)
    run(scenario, root / "unmasked", privacy_key=KEY, unmasked=True)
    meta = json.loads((root / "masked" / "run_meta.json").read_text(encoding="utf-8"))
    return root, masked.world, meta


def _keyless_tokens(seed: int, card_id: np.ndarray, day: int) -> np.ndarray:
    """The pseudonym an attacker computes from the seed in run_meta.json (the old scheme)."""
    z = card_id.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z += np.uint64(stream_key(f"token:{seed}")) ^ np.uint64(day * 0xD1B54A32D192ED03 % (1 << 64))
    return (_mix_array(z) >> np.uint64(1)).astype(np.int64)


def test_attack_1_tokens_cannot_be_recomputed_from_the_seed(export):
    root, world, meta = export
    assert "privacy_key" not in json.dumps(meta) or "privacy_key_id" in meta
    assert KEY.secret.hex() not in (root / "masked" / "run_meta.json").read_text()
    tx = read_frame(root / "masked", "transactions")
    seed = meta["seed"]
    cards = world.population.card_id
    guesses = [PrivacyKey(hashlib.sha256(str(seed).encode()).digest())]  # a key from the seed
    hits = 0
    for day, date in enumerate(sorted(set(tx["service_date"]))):
        tokens = set(tx.loc[tx["service_date"] == date, "token_id"].tolist())
        hits += len(tokens & set(_keyless_tokens(seed, cards, day).tolist()))
        for key in guesses:
            hits += len(tokens & set(key.day_tokens(cards, day).tolist()))
    assert hits == 0
    # The key holder links them: the keyed token of every unmasked card id is in the export.
    unmasked = read_frame(root / "unmasked", "transactions")
    first = unmasked["service_date"] == unmasked["service_date"].min()
    recomputed = KEY.day_tokens(unmasked.loc[first, "token_id"].to_numpy(), 0)
    assert np.array_equal(recomputed, tx.loc[first, "token_id"].to_numpy())


def test_attack_2_identities_cannot_be_regenerated_from_the_seed(export):
    root, world, meta = export
    sales = read_frame(root / "masked", "card_sales")
    assert len(sales) > 5
    pop = world.population.subset(np.flatnonzero(world.population.home_city == 0))
    # The attacker regenerates everyone's identity with the published seed and matches the
    # masked phone and ID number of each sale.
    birth = pop.birth_ord.astype(np.int64) - 719_163  # days since 1970-01-01
    admin = np.array([int(r.admin_code) for r in world.scenario.regions.values()])[pop.region]

    def masked_people(streams: Streams) -> set[tuple[str, str, str]]:
        people = identities(streams, pop.card_id, birth.astype("datetime64[D]"), pop.sex, admin)
        return set(
            zip(
                mask_phone(np.array(people["phone"])).tolist(),
                mask_id_number(np.array(people["id_number"])).tolist(),
                mask_name(np.array(people["name"])).tolist(),
                strict=True,
            )
        )

    sold = set(zip(sales["phone"], sales["id_number"], sales["holder_name"], strict=True))
    # With the seed alone: no sale's person is found.
    assert not sold & masked_people(Streams(meta["seed"]))
    # With the key (the same draws the writer made), every one is: the attack had the power.
    world_seed = meta["world_seed"]
    assert sold <= masked_people(Streams(KEY.seed(f"identity:{world_seed}")))


def test_attack_3_days_cannot_be_linked_by_counters_or_balances(export):
    root, _, _ = export
    for table in ("transactions", "topups"):
        frame = read_frame(root / "masked", table)
        for col in ("card_counter", "balance_before_fen", "balance_after_fen"):
            assert frame[col].isna().all(), (table, col)
    # The same join on the unmasked export links nearly every card's days: the fields mattered.
    tx = read_frame(root / "unmasked", "transactions").dropna(subset=["card_counter"])
    day = tx["service_date"].astype(str)
    first = tx[day == "2024-01-02"].sort_values("event_timestamp").groupby("token_id").first()
    last = tx[day == "2024-01-01"].sort_values("event_timestamp").groupby("token_id").last()
    starts = zip(first["card_counter"], first["balance_before_fen"], strict=True)
    link = {(int(c) - 1) % 65536: b for c, b in starts}
    linked = sum(
        link.get(int(c)) == b
        for c, b in zip(last["card_counter"], last["balance_after_fen"], strict=True)
    )
    assert linked > 0.5 * len(set(first.index) & set(last.index))


def test_the_same_key_gives_the_same_files_and_another_key_other_tokens(export, tmp_path):
    root, _, _ = export
    scenario = load_scenario(SMALL, days=DAYS)
    run(scenario, tmp_path / "again", privacy_key=KEY)
    run(scenario, tmp_path / "other", privacy_key=PrivacyKey(bytes(range(32))))

    assert parquet_hashes(tmp_path / "again") == parquet_hashes(root / "masked")
    a = set(read_frame(root / "masked", "transactions")["token_id"])
    b = set(read_frame(tmp_path / "other", "transactions")["token_id"])
    assert not a & b


def test_a_key_file_must_hold_a_key_not_a_password(tmp_path):
    hex_key, raw_key, password, short = (tmp_path / n for n in ("hex", "raw", "password", "short"))
    hex_key.write_text(bytes(range(32)).hex() + "\n", encoding="ascii")
    raw_key.write_bytes(bytes(range(200, 232)))  # 32 random-looking bytes
    password.write_bytes(b"correct horse battery staple 123")  # 32 typed characters
    short.write_text("0123abcd\n", encoding="ascii")
    assert load_key(hex_key) == PrivacyKey(bytes(range(32)))
    assert load_key(raw_key) == PrivacyKey(bytes(range(200, 232)))
    with pytest.raises(PrivacyKeyError, match=r"password: holds 32 characters of text, not a key"):
        load_key(password)
    with pytest.raises(PrivacyKeyError, match=r"short: not a privacy key; expected 64 hex digits"):
        load_key(short)
