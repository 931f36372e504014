"""Memory figures the Linux kernel publishes in /proc, read in one place."""

from __future__ import annotations


def proc_kib_field(path: str, field: str) -> int | None:
    """Bytes of a ``field: N kB`` line of a /proc file (``/proc/meminfo``'s ``MemAvailable``,
    ``/proc/self/status``'s ``VmHWM``); None where the file or the field is not there."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


__all__ = ["proc_kib_field"]
