"""The error a user's input causes, kept apart from sim.api (which re-exports it) so that the
modules sim.api itself imports (a shard actor on a Dask worker, say) can raise it too."""

from __future__ import annotations


class BadInput(Exception):
    """Something the user supplied (scenario, flag, data file, output dir) is wrong."""


__all__ = ["BadInput"]
