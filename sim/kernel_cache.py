"""The engine's numba kernels, cached on disk and refreshed when code they compile in changes.

numba caches a compiled function beside its module (``cache=True``) under a stamp of that
module's source file, and loads it again while the file is unchanged. A kernel that calls a
compiled function of another module has that function's code compiled into its own, and numba
does not look at the other file: agents/citizen_kernels.py's loops compile in sim/rng.py's hash,
sim/fares.py's pricing pass sim/fare_rules.py's ``bp_of``. After an edit there, a checkout that
had cached the kernels would go on running the old code (other random draws, other fares) until
someone deleted the cache files; a clean clone compiles afresh, so CI would never see it.

``njit(compiled_in)`` is the engine's ``numba.njit(cache=True, nogil=True)`` with that stamp
widened to the files the kernel compiles in: each kernel module declares them once, as
``COMPILED_IN`` (the modules or functions its kernels call from other modules), and makes every
kernel through ``njit(COMPILED_IN)``. The stamp becomes numba's own together with a hash of those
files (and of what their modules' own ``COMPILED_IN`` lists, which is compiled in too). When any
of them changes, numba finds its cached code stale and compiles anew, exactly as when the
kernel's own file changes, and replaces the cache. Whole files are hashed, not one function's
text: numba also freezes a function's module globals (``rng._C1``) into the code. An edit of
another function in such a file costs one recompilation, nothing else.

The cost is reading and hashing those few files once, when a module compiles its kernels (on
first use); nothing per call. tests/test_kernel_cache.py edits sim/rng.py in a copy of the
engine and shows a citizens' kernel recompiled with the new hash, and checks that every module's
``COMPILED_IN`` covers the compiled functions of other modules its kernels call.

numba has no public way to widen the stamp: this sets it on the dispatcher's cache index
(``_cache._cache_file._source_stamp``, numba 0.68.1, pinned in pyproject.toml). ``_widen`` says
so, naming this module, if a numba upgrade moves it, rather than let kernels go stale.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType


def njit(compiled_in: Iterable[object] = ()) -> Callable:
    """A decorator compiling a kernel as ``numba.njit(cache=True, nogil=True)``, its cached
    code dropped when a file of ``compiled_in`` (modules, functions or compiled functions it
    calls from other modules: its module's ``COMPILED_IN``) changes. Imports numba."""
    import numba

    stamp = fingerprint(compiled_in)

    def compile_kernel(func: Callable) -> Callable:
        kernel = numba.njit(cache=True, nogil=True)(func)
        if stamp:  # nothing compiled in from elsewhere: numba's own stamp is the whole story
            _widen(kernel, stamp)
        return kernel

    return compile_kernel


def source_files(compiled_in: Iterable[object]) -> list[Path]:
    """The source files of ``compiled_in`` and, through each one's module's ``COMPILED_IN``,
    of what those compile in themselves, sorted."""
    files: set[Path] = set()
    pending = list(compiled_in)
    seen: set[str] = set()
    while pending:
        module = _module_of(pending.pop())
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        files.add(Path(module.__file__).resolve())
        pending.extend(getattr(module, "COMPILED_IN", ()))
    return sorted(files)


def fingerprint(compiled_in: Iterable[object]) -> str:
    """A hash of the files of ``source_files(compiled_in)`` (their names and bytes); "" for
    none."""
    import hashlib  # (here: a module importing this one may never make a kernel)

    files = source_files(compiled_in)
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _module_of(entry: object) -> ModuleType:
    """The module an entry of ``COMPILED_IN`` is, or is defined in (a compiled function's is its
    Python function's)."""
    if isinstance(entry, ModuleType):
        return entry
    func = getattr(entry, "py_func", entry)  # a numba dispatcher holds its Python function
    return sys.modules[func.__module__]


def _widen(kernel, stamp: str) -> None:
    """Make ``kernel``'s on-disk cache fresh only for numba's stamp of its own file *and*
    ``stamp``: numba loads a cache index only when the stamp it holds equals this one, and
    writes this one with every entry it saves."""
    index = getattr(getattr(kernel, "_cache", None), "_cache_file", None)
    if not hasattr(index, "_source_stamp"):
        import numba

        raise RuntimeError(
            f"numba {numba.__version__} no longer keeps a cache's source stamp where 0.68.1 did"
            " (Dispatcher._cache._cache_file._source_stamp): sim/kernel_cache.py must follow it,"
            " or kernels would keep stale code of the modules they compile in"
        )
    index._source_stamp = (index._source_stamp, stamp)
