"""The privacy key: what makes a masked export impossible to link back without it.

Everything a masked export could be re-identified by is keyed with a secret that never reaches the
outputs (DOMAIN.md §5, docs/privacy.md):

- ``token_id`` is a pseudonym of (card, day) under a key derived for that day: it changes every
  day, and without the key it cannot be recomputed from card ids, the seed or anything written;
- synthetic identities (names, ID numbers, phones) and printed card numbers are drawn from streams
  seeded by the key, so knowing the scenario's seed does not regenerate them;
- TAC check values are keyed, as a real SAM's are.

The key is 32 random bytes kept in a file (``--key-file``; by default
``$CARDTWIN_PRIVACY_KEY_FILE`` or ``~/.config/cardtwin/privacy.key``, created on first use with
owner-only permissions). The same seed and key give the same files; ``run_meta.json`` records only
the key's fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.rng import _mix_array

KEY_BYTES = 32
ENV_KEY_FILE = "CARDTWIN_PRIVACY_KEY_FILE"
_MASK63 = (1 << 63) - 1


class PrivacyKeyError(ValueError):
    """The key file cannot be read or is not a key."""


@dataclass(frozen=True)
class PrivacyKey:
    """A secret of 32 bytes and the keyed functions the writer uses."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise PrivacyKeyError(f"a privacy key has {KEY_BYTES} bytes, got {len(self.secret)}")

    def __repr__(self) -> str:  # never print the secret
        return f"PrivacyKey({self.fingerprint})"

    @property
    def fingerprint(self) -> str:
        """A public name of the key (12 hex digits of its SHA-256): which key, not the key."""
        return hashlib.sha256(b"cardtwin-key-id\n" + self.secret).hexdigest()[:12]

    def derive(self, label: str) -> int:
        """A 64-bit number derived from the key for ``label`` (HMAC-SHA256)."""
        digest = hmac.new(self.secret, label.encode("utf-8"), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "little")

    def seed(self, label: str) -> int:
        """A non-negative 63-bit seed for random streams (identities, card numbers)."""
        return self.derive(label) & _MASK63

    def day_tokens(self, ids: np.ndarray, day: int) -> np.ndarray:
        """Pseudonyms of entity ``ids`` on ``day``: two keyed SplitMix64 rounds under keys derived
        for that day, so tokens of different days share nothing without the key."""
        k1, k2 = (np.uint64(k) for k in self.day_token_keys(day))
        z = np.asarray(ids, dtype=np.int64).astype(np.uint64) ^ k1
        z = _mix_array(z)
        z ^= k2
        z = _mix_array(z)
        return (z >> np.uint64(1)).astype(np.int64)

    def day_token_keys(self, day: int) -> tuple[int, int]:
        """The keys of ``day_tokens``'s two rounds on ``day`` (for a compiled pass making the
        tokens in its own loop: sim/record_kernels.py)."""
        return self.derive(f"token:{int(day)}:1"), self.derive(f"token:{int(day)}:2")

    def keyed_words(self, label: str, n: int) -> np.ndarray:
        """``n`` 64-bit words derived from the key (e.g. to key a check value)."""
        return np.array([self.derive(f"{label}:{i}") for i in range(n)], dtype=np.uint64)


def load_key(path: str | os.PathLike[str]) -> PrivacyKey:
    """Read a key file (64 hex digits, or 32 raw bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PrivacyKeyError(f"{path}: cannot read the privacy key: {exc.strerror}") from None
    text = raw.strip()
    try:
        secret = bytes.fromhex(text.decode("ascii")) if len(text) == 2 * KEY_BYTES else raw
    except (UnicodeDecodeError, ValueError):
        secret = raw
    if len(secret) != KEY_BYTES:
        raise PrivacyKeyError(
            f"{path}: not a privacy key; expected {2 * KEY_BYTES} hex digits (or {KEY_BYTES} "
            "random bytes)"
        )
    if secret is raw and all(32 <= b < 127 for b in raw):
        # 32 random bytes are all printable once in ~10^17 files: this is a typed password,
        # whose few bits of entropy would make the pseudonyms guessable.
        raise PrivacyKeyError(
            f"{path}: holds {KEY_BYTES} characters of text, not a key; expected "
            f"{2 * KEY_BYTES} hex digits of random bytes (e.g. the output of "
            "python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    return PrivacyKey(secret)


def default_key_file() -> Path:
    """``$CARDTWIN_PRIVACY_KEY_FILE``, else ``~/.config/cardtwin/privacy.key``."""
    env = os.environ.get(ENV_KEY_FILE)
    if env:
        return Path(env)
    return Path.home() / ".config" / "cardtwin" / "privacy.key"


def default_key() -> PrivacyKey:
    """The machine's key, created (random, owner-only) the first time it is needed."""
    path = default_key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(os.urandom(KEY_BYTES).hex() + "\n")
        try:
            os.link(tmp, path)  # never replaces a key another process created meanwhile
        except FileExistsError:
            pass  # another process created the key first: everyone uses that one
        finally:
            tmp.unlink(missing_ok=True)
    return load_key(path)
