"""numba's on-disk cache of the engine's kernels follows what they compile in (sim/kernel_cache.py).

numba checks only a kernel's own file: a citizens' kernel compiled with sim/rng.py's hash would
keep the old hash after an edit of rng.py. In a copy of the engine, with a cache directory of
its own: a citizens' kernel is loaded from the cache while nothing changed, compiled again with
the new hash once rng.py changed; without its ``COMPILED_IN`` (the control: numba alone) it keeps
the old numbers. And every kernel module lists in ``COMPILED_IN`` the files of what its kernels
really call from other modules, and makes its kernels through ``kernel_cache.njit``."""

from __future__ import annotations

import ast
import dis
import importlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sim import kernel_cache

ROOT = Path(__file__).resolve().parent.parent
#: The engine's packages: a module there that imports numba makes its kernels through
#: kernel_cache.njit (no other module of theirs imports numba).
ENGINE = ("sim", "agents", "traffic")

#: Draws through a citizens' kernel (``riders``, which calls ``rng.uniform_of``) and through
#: NumPy's form of the hash (fewer ids than ``rng.COMPILED_FROM``: never compiled, never cached),
#: and says whether they agree and whether the kernel came from the cache.
PROBE = """
import numpy as np

from agents import citizen_kernels
from sim import rng

ids = np.arange(200, dtype=np.int64)
card = ids * 7 + 3
base = 0x1234_5678_9ABC
want = ids[rng._per_id("uniform", card, base) < 0.5]
got = citizen_kernels.riders(
    ids, card, base, np.zeros(200, np.int64), np.full(200, 0.5), np.ones((2, 1))
)
hits = sum(citizen_kernels._kernels().riders.stats.cache_hits.values())
print("fresh" if np.array_equal(got, want) else "stale", "loaded" if hits else "compiled")
"""

_C1 = "_C1 = 0xBF58476D1CE4E5B9\n"  # sim/rng.py's first multiplier, changed below
_DECLARED = "COMPILED_IN = (rng,)\n"  # agents/citizen_kernels.py's, dropped in the control


def _engine_copy(tmp_path: Path) -> Path:
    root = tmp_path / "engine"
    skip = shutil.ignore_patterns("__pycache__")
    for package in ("sim", "agents"):
        shutil.copytree(ROOT / package, root / package, ignore=skip)
    (root / "probe.py").write_text(PROBE)
    return root


def _probe(root: Path) -> str:
    env = os.environ | {"PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(root / "numba_cache")}
    done = subprocess.run(
        [sys.executable, "probe.py"], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} no longer has {old!r}: update this test"
    path.write_text(text.replace(old, new))


def test_a_kernel_is_compiled_again_when_a_module_it_compiles_in_changes(tmp_path):
    root = _engine_copy(tmp_path)
    assert _probe(root) == "fresh compiled"
    assert _probe(root) == "fresh loaded"  # nothing changed: the cache serves
    _edit(root / "sim" / "rng.py", _C1, _C1.replace("B9\n", "BB\n"))
    assert _probe(root) == "fresh compiled"  # the new hash, not the cached old one
    assert _probe(root) == "fresh loaded"


def test_without_compiled_in_numba_keeps_the_old_code(tmp_path):
    # The control: numba alone (the kernel module declaring nothing) serves the stale kernel, so
    # the test above would fail without kernel_cache.
    root = _engine_copy(tmp_path)
    _edit(root / "agents" / "citizen_kernels.py", _DECLARED, "COMPILED_IN = ()\n")
    assert _probe(root) == "fresh compiled"
    _edit(root / "sim" / "rng.py", _C1, _C1.replace("B9\n", "BB\n"))
    assert _probe(root) == "stale loaded"


def test_the_fingerprint_covers_what_the_listed_modules_compile_in(tmp_path, monkeypatch):
    for name, text in {
        "kc_leaf": "def f(x):\n    return x + 1\n",
        "kc_mid": "import kc_leaf\n\nCOMPILED_IN = (kc_leaf,)\n\ndef g(x):\n    return x\n",
    }.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    mid = importlib.import_module("kc_mid")
    assert [p.name for p in kernel_cache.source_files((mid.g,))] == ["kc_leaf.py", "kc_mid.py"]
    before = kernel_cache.fingerprint((mid,))
    assert before == kernel_cache.fingerprint((mid.g,))  # a function stands for its file
    (tmp_path / "kc_leaf.py").write_text("def f(x):\n    return x + 2\n")
    assert kernel_cache.fingerprint((mid,)) != before  # what mid's module compiles in changed
    assert kernel_cache.fingerprint(()) == ""


#: numba's decorators that make a compiled function (only kernel_cache.njit calls one).
_DECORATORS = {"njit", "jit", "generated_jit", "vectorize", "guvectorize", "cfunc", "jitclass"}


def _kernel_makers(path: Path) -> tuple[bool, bool]:
    """Whether the module at ``path`` uses kernel_cache, and whether it takes one of numba's
    decorators itself (``numba.njit``, ``from numba import njit``...)."""
    uses, direct = False, False
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "sim":
            uses |= any(alias.name == "kernel_cache" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "sim.kernel_cache":
            uses = True
        elif isinstance(node, ast.Import):
            uses |= any(alias.name == "sim.kernel_cache" for alias in node.names)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("numba"):
            direct |= any(alias.name in _DECORATORS for alias in node.names)
        elif isinstance(node, ast.Attribute) and node.attr in _DECORATORS:
            direct |= isinstance(node.value, ast.Name) and node.value.id == "numba"
    return uses, direct


def _engine_modules(*, direct: bool = False) -> list[str]:
    """The engine's modules that make kernels (through kernel_cache, or, ``direct``, through
    numba's own decorators), by their source."""
    found = []
    for package in ENGINE:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            uses, itself = _kernel_makers(path)
            if module != "sim.kernel_cache" and (itself or (uses and not direct)):
                found.append(module)
    return found


def test_the_engine_makes_kernels_through_kernel_cache_only():
    # numba.njit(cache=True) alone would not see the code a kernel compiles in change.
    assert _engine_modules(direct=True) == [], "make kernels with kernel_cache.njit(COMPILED_IN)"


_ATTR = ("LOAD_ATTR", "LOAD_METHOD")


def _calls(func) -> list[object]:
    """What ``func``'s code loads as globals, closure cells or attributes of modules so loaded
    (numba compiles in the compiled functions among them)."""
    cells = dict(zip(func.__code__.co_freevars, func.__closure__ or (), strict=True))
    codes, found = [func.__code__], []
    while codes:
        code = codes.pop()
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        ops = list(dis.get_instructions(code))
        for op, after in zip(ops, ops[1:] + [None], strict=True):
            if op.opname == "LOAD_GLOBAL":
                value = func.__globals__.get(op.argval)
            elif op.opname == "LOAD_DEREF" and op.argval in cells:
                value = cells[op.argval].cell_contents
            else:
                continue
            if isinstance(value, types.ModuleType) and after and after.opname in _ATTR:
                value = getattr(value, after.argval, None)
            found.append(value)
    return found


def _compiled_in_files(kernel, dispatcher_type) -> set[Path]:
    """The files of every compiled function (or function of the project) ``kernel`` calls,
    and those call in turn."""
    files, pending, seen = set(), [kernel], set()
    while pending:
        func = pending.pop()
        func = getattr(func, "py_func", func)
        if func in seen:
            continue
        seen.add(func)
        for value in _calls(func):
            if isinstance(value, dispatcher_type):
                value = value.py_func
            elif not isinstance(value, types.FunctionType):
                continue
            path = Path(value.__code__.co_filename).resolve()
            if path.is_relative_to(ROOT):
                files.add(path)
                pending.append(value)
    return files


@pytest.mark.parametrize("name", _engine_modules())
def test_compiled_in_lists_what_the_kernels_call(name):
    import numba

    dispatcher_type = numba.core.dispatcher.Dispatcher
    module = importlib.import_module(name)
    assert hasattr(module, "COMPILED_IN"), f"{name}: declare COMPILED_IN beside the kernels"
    assert hasattr(module, "_kernels"), f"{name}: make the kernels in _kernels(), on first use"
    made = vars(module._kernels()).values()  # the dispatchers, not compiled yet
    kernels = [k for k in [*made, *vars(module).values()] if isinstance(k, dispatcher_type)]
    assert kernels
    own = Path(module.__file__).resolve()
    declared = set(kernel_cache.source_files(module.COMPILED_IN))
    stamp = kernel_cache.fingerprint(module.COMPILED_IN)
    for kernel in kernels:
        missing = _compiled_in_files(kernel, dispatcher_type) - {own} - declared
        assert not missing, f"{name}.COMPILED_IN misses what {kernel.__name__} calls: {missing}"
        if stamp:  # made through kernel_cache.njit(COMPILED_IN): its cache follows those files
            assert kernel._cache._cache_file._source_stamp[1] == stamp, kernel.__name__
