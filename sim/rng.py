"""Counter-based random streams: numbers are a pure function of (seed, stream, day, entity, draw).

Why: a citizen's day must be the same whether the run holds 1 or 1.7 M citizens, one worker or
twenty (DESIGN.md, "Randomness is a pure function"). A sequential generator cannot give that, so
every number here is a hash of its coordinates (SplitMix64's finaliser, which passes BigCrush when
fed a Weyl sequence; different streams, days and draws get independent, well-mixed bases).

Nothing here keeps state between calls: calling ``uniform`` twice with the same arguments gives the
same numbers. Use a different ``draw`` index for each independent number a rule needs.

``bits`` and ``uniform`` hash each id in one compiled pass (numba, compiled on first use and cached
on disk): a day draws some 8 million numbers, and NumPy's version of the same arithmetic takes a
dozen passes over each array. The integer arithmetic is the same, so the numbers are the same bits
(``tests/test_rng.py`` checks them against the NumPy form, ``_mix_array``, kept for the callers that
mix their own keys). A draw for a few ids (fewer than ``COMPILED_FROM``) is hashed in NumPy: a
process that only ever draws a few numbers (a world built without its people, as a distributed
run's driver builds its cities') then never loads numba, which takes ~0.6 s.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from sim import kernel_cache

#: What the compiled hashes compile in from other modules: nothing (``bits_of`` and
#: ``uniform_of`` are this module's, and numba recompiles on a change of this file). A kernel
#: calling a compiled function of another module lists it here, so that ``kernel_cache.njit``
#: compiles it again when that changes (tests/test_kernel_cache.py checks). Kernels elsewhere
#: that call ``uniform_of`` list this module in their own ``COMPILED_IN``.
COMPILED_IN = ()

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
#: The largest seed: the streams mix 64 bits, so 2**64 + 5 would give seed 5's numbers.
MAX_SEED = 2**64 - 1
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_TWO_PI = 2.0 * np.pi


def _mix_scalar(z: int) -> int:
    """SplitMix64 finaliser on a Python int (used to derive per-call bases)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _C1) & _MASK64
    z = ((z ^ (z >> 27)) * _C2) & _MASK64
    return z ^ (z >> 31)


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(_C1), np.uint64(_C2)


def _mix_array(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array, in place (numpy wraps uint64 arithmetic).

    One scratch array serves every shift, so the hot path allocates once per call.
    """
    tmp = np.right_shift(z, _S30)
    z ^= tmp
    z *= _M1
    np.right_shift(z, _S27, out=tmp)
    z ^= tmp
    z *= _M2
    np.right_shift(z, _S31, out=tmp)
    z ^= tmp
    return z


class _Kernels:
    """The compiled per-id hashes (``_kernels``)."""

    def __init__(self, bits, uniform) -> None:
        self.bits, self.uniform = bits, uniform


def _bits_of(i, base):
    """SplitMix64 of one id over the Weyl sequence, as ``_mix_array`` (compiled as ``bits_of``)."""
    z = np.uint64(i) * np.uint64(_GOLDEN) + base
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def _uniform_of(i, base):
    """The top 53 bits of an id's hash as a float in [0, 1) (compiled as ``uniform_of``)."""
    return np.float64(bits_of(i, base) >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # 2**-53


#: One id's ``bits`` and ``uniform`` for ``base`` (``Streams.base``), compiled, for compiled
#: passes elsewhere that draw inside their own loop (they call ``rng.uniform_of``, a global,
#: which numba compiles into them). Bound by ``compiled()``; None before.
bits_of = uniform_of = None


def compiled() -> _Kernels:
    """The compiled per-id hashes over arrays (``bits``, ``uniform``), with ``bits_of`` and
    ``uniform_of`` bound."""
    return _kernels()


@functools.cache
def _kernels() -> _Kernels:
    """Compile (or load from numba's on-disk cache) the per-id hashes, on first use: a process
    that draws nothing (the dashboard, a report) does not import numba.

    The one-id hashes are module globals, not closure cells: numba keys its cache on the
    pickled closure of a kernel, and a compiled function there pickles differently in every
    process (every process compiled the kernels anew, ~1.5 s). A kernel of another module
    that calls them is cached with their code, and numba itself checks only that kernel's
    file for changes: such a module lists this one in its ``COMPILED_IN``, and
    ``kernel_cache.njit`` compiles its kernels again when this file changes."""
    jit = kernel_cache.njit(COMPILED_IN)  # numba.njit(cache=True, nogil=True), cache refreshed

    global bits_of, uniform_of
    bits_of = jit(_bits_of)
    uniform_of = jit(_uniform_of)

    @jit
    def hash_ids(ids, base):
        out = np.empty(ids.shape[0], np.uint64)
        for i in range(ids.shape[0]):
            out[i] = bits_of(ids[i], base)
        return out

    @jit
    def uniform_ids(ids, base):
        out = np.empty(ids.shape[0], np.float64)
        for i in range(ids.shape[0]):
            out[i] = uniform_of(ids[i], base)
        return out

    return _Kernels(hash_ids, uniform_ids)


#: Draws for this many ids or more go through the compiled pass (``_kernels``); smaller ones
#: through NumPy, the same bits (module docstring).
COMPILED_FROM = 256
_TWO_TO_MINUS_53 = 1.0 / 9007199254740992.0  # as the compiled ``uniform_ids``


def _per_id(kind: str, ids, base: int) -> np.ndarray:
    """The ``kind`` ("bits" or "uniform") hash over ``ids`` of any shape; integer ids as they
    are (a negative one wraps to uint64, as ``astype`` does), anything else through uint64
    first."""
    a = np.asarray(ids)
    if a.dtype.kind not in "iu":
        a = a.astype(np.uint64)
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.size >= COMPILED_FROM:
        kernel = _kernels().bits if kind == "bits" else _kernels().uniform
        return kernel(flat, np.uint64(base)).reshape(a.shape)
    z = flat.astype(np.uint64) * np.uint64(_GOLDEN) + np.uint64(base)
    z = _mix_array(z)
    if kind == "uniform":  # the top 53 bits over 2**53, as the compiled pass
        return ((z >> np.uint64(11)).astype(np.float64) * _TWO_TO_MINUS_53).reshape(a.shape)
    return z.reshape(a.shape)


def stream_key(name: str) -> int:
    """A stable 64-bit key for a stream name (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


class Streams:
    """Named random streams derived from one scenario seed.

    Every method takes ``stream`` (a name such as ``"trip_times"``), ``day`` (simulation day index,
    0 for things fixed over the run), ``ids`` (entity ids, any integer array) and ``draw`` (which of
    several independent numbers for the same entity and day).
    """

    def __init__(self, seed: int) -> None:
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}")
        self.seed = int(seed)
        self._keys: dict[str, int] = {}

    def base(self, stream: str, day: int, draw: int = 0) -> int:
        """The base of ``stream``'s numbers on ``day`` for ``draw``: an id's number is its
        ``uniform_of(id, base)`` (or ``bits_of``), for compiled passes that draw themselves."""
        return self._base(stream, day, draw)

    def _base(self, stream: str, day: int, draw: int) -> int:
        key = self._keys.get(stream)
        if key is None:
            key = _mix_scalar(self.seed * _GOLDEN ^ stream_key(stream))
            self._keys[stream] = key
        return _mix_scalar(key ^ _mix_scalar((int(day) << 20) + int(draw) + 1))

    def bits(self, stream: str, day: int, ids: np.ndarray, draw: int = 0) -> np.ndarray:
        """64 random bits per id, as uint64."""
        return _per_id("bits", ids, self._base(stream, day, draw))

    def uniform(self, stream: str, day: int, ids: np.ndarray, draw: int = 0) -> np.ndarray:
        """Uniform floats in [0, 1), one per id: the top 53 of its ``bits`` over 2**53."""
        return _per_id("uniform", ids, self._base(stream, day, draw))

    def normal(self, stream: str, day: int, ids: np.ndarray, draw: int = 0) -> np.ndarray:
        """Standard normal floats (Box–Muller over draws 2*draw and 2*draw+1)."""
        u1 = self.uniform(stream, day, ids, 2 * draw)
        u2 = self.uniform(stream, day, ids, 2 * draw + 1)
        np.negative(u1, out=u1)
        np.log1p(u1, out=u1)
        u1 *= -2.0
        np.sqrt(u1, out=u1)
        u2 *= _TWO_PI
        np.cos(u2, out=u2)
        u1 *= u2
        return u1

    def integers(
        self, stream: str, day: int, ids: np.ndarray, high: np.ndarray | int, draw: int = 0
    ) -> np.ndarray:
        """Integers in [0, high) per id (``high`` may be an array, each element >= 1)."""
        u = self.uniform(stream, day, ids, draw)
        return np.minimum((u * high).astype(np.int64), np.asarray(high, dtype=np.int64) - 1)

    def categorical(
        self, stream: str, day: int, ids: np.ndarray, probs: np.ndarray, draw: int = 0
    ) -> np.ndarray:
        """Index drawn from one probability vector ``probs`` (shared by all ids)."""
        cdf = np.cumsum(np.asarray(probs, dtype=np.float64))
        cdf /= cdf[-1]
        u = self.uniform(stream, day, ids, draw)
        return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)

    def categorical_rows(
        self, stream: str, day: int, ids: np.ndarray, cdf_rows: np.ndarray, draw: int = 0
    ) -> np.ndarray:
        """Index drawn per id from its own row of a cumulative-probability matrix (ends in 1)."""
        u = self.uniform(stream, day, ids, draw)
        return np.minimum((cdf_rows <= u[:, None]).sum(axis=1), cdf_rows.shape[1] - 1)

    def poisson(
        self, stream: str, day: int, ids: np.ndarray, lam: np.ndarray | float, draw: int = 0
    ) -> np.ndarray:
        """Poisson counts per id by inversion (fine for the small means used in behaviour)."""
        u = self.uniform(stream, day, ids, draw)
        lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), u.shape)
        k = np.zeros(u.shape, dtype=np.int64)
        p = np.exp(-lam)
        cdf = p.copy()
        for i in range(1, 64):
            below = u >= cdf
            if not below.any():
                break
            p = p * lam / i
            k += below
            cdf += p
        return k

    def scalar_seed(self, stream: str, day: int = 0, entity: int = 0) -> int:
        """A 64-bit integer seed for libraries that take one (Faker, a per-agent Generator)."""
        return int(self.bits(stream, day, np.array([entity]), 0)[0])

    def generator(self, stream: str, day: int = 0, entity: int = 0) -> np.random.Generator:
        """A numpy Generator keyed by (seed, stream, day, entity), for sequential draws."""
        key = [self.scalar_seed(stream, day, entity), self._base(stream, day, 0)]
        return np.random.Generator(np.random.Philox(key=np.array(key, dtype=np.uint64)))
