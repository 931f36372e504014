"""The C allocator's settings on a Dask worker, put back to what a plain Python process has.

Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its config key
``distributed.nanny.pre-spawn-environ``), so that workers hand freed memory back to the system.
Setting any of glibc's thresholds by hand also switches off its *dynamic* mmap threshold: every
allocation over 128 KiB — each of a day's NumPy columns — is then a fresh ``mmap`` whose pages
fault in one by one, and is unmapped again when freed. A shard's day did twice the work in the
kernel (measured: the YRD week in one process 12.2 s with glibc's defaults, 19.2 s with
Dask's setting; bench/README.md). ``tune_for_columns`` sets both thresholds to sizes that keep
a day's columns on the heap; a shard's memory is its state for the whole run, so keeping freed
pages costs little.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest dynamic mmap threshold on 64-bit
TRIM_THRESHOLD_BYTES = 256 << 20


def tune_for_columns() -> bool:
    """Set this process's malloc thresholds for large, short-lived NumPy columns (module
    docstring). Returns False, changing nothing, where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


__all__ = ["tune_for_columns"]
