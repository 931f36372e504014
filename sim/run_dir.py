"""The output folder of a run: what counts as an earlier run, and never losing a user's files.

A run writes into ``<out>.partial-<pid>`` beside ``<out>`` and swaps it in when complete
(sim/output.py). Before it starts, this module decides whether ``<out>`` may be replaced:

- ``<out>`` is an earlier CardTwin run only if it holds the marker ``.cardtwin-run.json`` that only
  CardTwin writes (its format, schema version, and the list of every file the run wrote). A
  ``run_meta.json`` alone proves nothing.
- A file in ``<out>`` that the marker does not list is the user's: the run is refused, naming them
  (a ``notes.txt`` or ``analysis/`` put inside a run folder is never deleted). The exception is
  what ``reconcile`` wrote into the run's ``reconciliation/`` folder (its own marker lists it):
  it describes the earlier run, and is replaced with it.
- The earlier run must be removable (every folder in it writable), checked before the run starts,
  so nothing is half-swapped at the end.
- Two runs writing the same ``<out>`` at once: the second is refused (an advisory lock on
  ``<out>.lock``, released by the kernel if the holder dies).
- ``<out>.partial-<pid>`` and ``<out>.old-<pid>`` folders left by killed runs (their process is
  gone) are removed and reported.
- Ctrl-C or SIGTERM while the folder is being opened waits (``StopSignalsHeld``) until the
  caller is inside the block that discards the output, so no ``.partial`` folder or lock is
  left behind by a stop that came at the wrong moment.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

MARKER_FILE = ".cardtwin-run.json"
MARKER_FORMAT = "cardtwin-run"
_LEFTOVER = re.compile(r"\.(partial|old)-(\d+)$")
_LISTED = 5  # foreign files named in a refusal


def listed(names: list[str]) -> str:
    """The first few of ``names`` for a message, and how many more there are."""
    more = len(names) - _LISTED
    return ", ".join(names[:_LISTED]) + (f" and {more} more" if more > 0 else "")


class RunDirError(RuntimeError):
    """``--out`` cannot be used; the message says why and what to do."""


def marker_of(path: Path) -> dict | None:
    """The marker of a CardTwin run folder (None if ``path`` is not one)."""
    try:
        marker = json.loads((path / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        return None
    if not isinstance(marker.get("files"), list):
        return None
    return marker


def write_marker(run_dir: Path, schema_version: int, extra_files: tuple[str, ...] = ()) -> None:
    """Mark ``run_dir`` as a CardTwin run listing every file in it (plus ``extra_files`` that
    will be added after the swap, such as the DuckDB catalogue)."""
    files = sorted({*_files_in(run_dir), *extra_files, MARKER_FILE})
    marker = {"format": MARKER_FORMAT, "schema_version": schema_version, "files": files}
    path = run_dir / MARKER_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _files_in(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def check_replaceable(out: Path) -> None:
    """Raise ``RunDirError`` unless ``out`` is absent, an empty folder, or an earlier CardTwin
    run holding only the files it wrote, all of them removable."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise RunDirError(f"{out} is a file, not a folder; choose another --out")
    present = _files_in(out)
    if not present and not any(out.iterdir()):
        return
    marker = marker_of(out)
    if marker is None:
        raise RunDirError(
            f"{out} is not empty and is not a CardTwin run (no {MARKER_FILE}); "
            "choose another --out, or empty it first"
        )
    foreign = sorted(set(present) - set(marker["files"]) - _reconcile_output(out, present))
    if foreign:
        raise RunDirError(
            f"{out} holds an earlier run and {len(foreign)} file(s) CardTwin did not write "
            f"({listed(foreign)}); move them out of it, or choose another --out"
        )
    locked = [d for d in [out, *(p for p in out.rglob("*") if p.is_dir())] if not _removable(d)]
    if locked or not os.access(out.parent, os.W_OK | os.X_OK):
        where = locked[0] if locked else out.parent
        raise RunDirError(
            f"{out} holds an earlier run that cannot be replaced: no write permission on "
            f"{where}; fix its permissions or choose another --out"
        )


def _reconcile_output(out: Path, present: list[str]) -> set[str]:
    """The files in ``out`` that ``reconcile`` wrote into its default folder inside the run,
    ``reconciliation/``, as its marker lists them (sim/reconciliation.py). They describe the
    earlier run, so they go with it; anything else in that folder is the user's."""
    # Imported here: sim.reconciliation imports this module (and DuckDB and pandas).
    from sim.reconciliation import DEFAULT_DIR, written_by_reconcile

    folder = out / DEFAULT_DIR
    if folder.is_symlink() or not folder.is_dir():
        return set()
    prefix = f"{DEFAULT_DIR}/"
    inside = [f.removeprefix(prefix) for f in present if f.startswith(prefix)]
    return {prefix + f for f in written_by_reconcile(folder, inside) or ()}


def _removable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def remove_leftovers(out: Path) -> list[Path]:
    """Remove ``<out>.partial-<pid>`` / ``<out>.old-<pid>`` folders whose process is gone;
    returns what was removed."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for path in sorted(out.parent.glob(f"{out.name}.*-*")):
        m = _LEFTOVER.search(path.name)
        if m is None or path.name != f"{out.name}.{m.group(1)}-{m.group(2)}":
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class RunLock:
    """An exclusive advisory lock on ``<out>.lock`` for the run's lifetime."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(out.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``RunDirError`` naming the run that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirError(
                f"another CardTwin run (pid {holder}) is writing {self.path.with_suffix('')}; "
                "wait for it or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock and its file."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None


class StopSignalsHeld:
    """Hold Ctrl-C and SIGTERM (when made in the main thread) from ``__init__`` until
    ``release()``: a stop sent meanwhile is only noted, and acted on at ``release()`` by the
    handler that was there before, so the caller calls it first thing inside the ``try``
    whose handler cleans up. (A handler, not the thread's signal mask: another thread of the
    process — a NumPy or Arrow pool — would take a masked signal for the whole process.)"""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in self._SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)

    def _note(self, signum, frame) -> None:
        self._pending.append(signum)

    def forget(self) -> None:
        """Put the handlers back and drop the stops that came meanwhile (for clean-up that
        runs because of a stop already: a second Ctrl-C must not cut it short)."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        self._pending = []

    def release(self) -> None:
        """Put the handlers back and act on a stop that came meanwhile; safe to call twice."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        pending, self._pending = self._pending, []
        if previous and pending:
            os.kill(os.getpid(), pending[0])  # as if it came now, to the handler it was for
