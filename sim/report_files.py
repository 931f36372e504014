"""A report's files written as one set: all of them replaced, or none.

A report of several files (a sweep's table, summary and page; a comparison's JSON, Markdown and
HTML) is read as one: a page beside a table from another run is worse than no page. So each file
is first written beside its target under a temporary name of its own, and only once every one of
them is complete are they renamed over the targets (a rename within a folder is atomic). Any
failure before that (a renderer's error, a full disk, a target that is a folder) leaves the
earlier files as they were and no temporary file behind; only a failure of the renames
themselves, one after the other in the same folder, could split the set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path


def write_together(writers: Mapping[Path, Callable[[Path], None]]) -> list[Path]:
    """Write every target of ``writers`` (target path -> a function that writes the file's
    content to the path it is given) as one set; the targets' folders must exist. Returns the
    targets. Raises what a writer raises, or IsADirectoryError for a target that is a folder,
    with no target replaced."""
    for path in writers:  # a rename onto a folder fails: found before anything is replaced
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder; expected a report file there", str(path))
    mine: list[Path] = []  # the temporary files this call created, to remove on any failure
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"  # two writers of one folder never share one
    try:
        for path, write_to in writers.items():
            tmp = path.with_name(f".{path.name}.{tag}.tmp")
            mine.append(tmp)
            write_to(tmp)
        for tmp, path in zip(mine, writers, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in mine:
            tmp.unlink(missing_ok=True)
    return list(writers)
