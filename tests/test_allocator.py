"""The allocator settings a shard actor puts back on a Dask worker (sim/allocator.py)."""

import os
import subprocess
import sys

# Holds one 4 MiB column and prints how many bytes of it glibc's malloc gave as its own mmap
# (mallinfo2's hblkhd, before and while the column lives).
CHILD = """
import ctypes, ctypes.util, sys
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    from sim.allocator import tune_for_columns
    assert tune_for_columns()
before = mallinfo2().hblkhd
column = np.ones(1 << 19)  # 4 MiB
print(mallinfo2().hblkhd - before)
"""


def _mmapped_bytes(mode: str) -> int:
    # The environment Dask's nanny gives its workers (distributed.nanny.pre-spawn-environ).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_TRIM_THRESHOLD_"] = "65536"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_a_tuned_worker_keeps_a_days_columns_on_the_heap():
    if not sys.platform.startswith("linux"):  # no glibc: nothing to tune, and nothing changed
        from sim.allocator import tune_for_columns

        assert tune_for_columns() is False
        return
    # Untuned, every column over 128 KiB is a fresh mmap (faulted in page by page, unmapped
    # when freed); tuned, it comes from the heap, where freed columns are reused.
    assert _mmapped_bytes("untuned") >= 4 << 20
    assert _mmapped_bytes("tuned") == 0
