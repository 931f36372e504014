"""``--sink file:///PATH``: records into a file, by its extension — ``.jsonl``/``.json``
(JSON lines), ``.csv``, ``.parquet`` — or by ``--encoding``.

Batches are written in order (one at a time) and each is flushed to disk before it counts as
acknowledged. A resumed stream cuts the file back to its length at the checkpoint, so the file
ends up exactly as an uninterrupted stream writes it; before that, the file is checked to be the
stream's own (``check_resume``), and another file at the path is refused and left alone. A
Parquet file is written whole at the end (its footer) and cannot be resumed.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow.parquet as pq

from traffic.encoding import Encoder
from traffic.sinks import Batch, Outcome, Sink, SinkSetupError

EXTENSIONS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv"}
EXTENSIONS[".parquet"] = "parquet"


class FileSink(Sink):
    """A file of records (module docstring)."""

    concurrency = 1

    def __init__(self, url, options) -> None:
        super().__init__(url, options)
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise SinkSetupError(
                f"--sink {url!r}: expected file:///absolute/path.jsonl (three slashes)"
            )
        self.path = Path(unquote(parts.path))
        by_extension = EXTENSIONS.get(self.path.suffix.lower())
        self.encoding = options.encoding or by_extension
        if self.encoding not in ("json", "csv", "parquet"):
            raise SinkSetupError(
                f"--sink {url!r}: cannot tell the encoding from the extension "
                f"{self.path.suffix!r}; name the file .jsonl, .csv or .parquet, or give --encoding"
            )
        self.resumable = self.encoding != "parquet"
        if not self.path.parent.is_dir():
            raise SinkSetupError(f"--sink {url!r}: folder {self.path.parent} does not exist")
        self._file = None
        self._parquet = None
        self._bytes = 0

    def open(self, resume_state: dict | None) -> None:
        if self.encoding == "parquet":
            return  # the writer opens with the first batch's schema
        if resume_state is None:
            self._file = self.path.open("wb")
            self._bytes = 0
            return
        length = int(resume_state.get("bytes", 0))
        if not self.path.exists() or self.path.stat().st_size < length:
            raise SinkSetupError(
                f"--resume: {self.path} is shorter than the checkpoint says ({length} bytes): "
                "it was changed since; start the stream again without --resume"
            )
        self._file = self.path.open("r+b")
        self._file.truncate(length)
        self._file.seek(length)
        self._bytes = length

    def check_resume(self, state: dict, stream_id: str) -> None:
        """A resumed stream cuts the file back to the checkpoint's length: refuse when the file
        at the path is not the stream's own (replaced, or another stream's), before it is
        touched. The stream's file ends, at that length, with a whole record of the stream: its
        line ends with the record's idempotency key (the last column). A checkpoint of nothing
        written cuts the file to nothing: then the file must begin with the stream's records."""
        length = state.get("bytes")
        if length is None or not self.path.is_file():
            return  # nothing written, or a file ``open`` refuses (missing)
        length = int(length)
        key = re.escape(stream_id.encode()) + rb":\d+"
        with self.path.open("rb") as f:
            size = self.path.stat().st_size
            if length > size:
                return  # ``open`` refuses it: shorter than the checkpoint says
            if length > 0:
                f.seek(max(0, length - 256))
                ours = re.search(key + rb'"?\}?\r?\n\Z', f.read(length - f.tell())) is not None
            else:
                ours = size == 0 or _starts_with_stream(f, stream_id.encode())
        if not ours:
            raise SinkSetupError(
                f"--resume: {self.path} is not the file this stream wrote: at the {length:,} "
                f"bytes the checkpoint says were written, it does not end with a record of "
                f"stream {stream_id}; resuming would cut it back there. Nothing was changed: "
                "give the stream's own file, or start a new stream without --resume"
            )

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        if self.encoding == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, batch.table.schema)
            self._parquet.write_table(batch.table)
            return Outcome()
        data = encoder.encode(batch.table, self.encoding, header=self._bytes == 0)
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._bytes += len(data)
        return Outcome()

    def state(self) -> dict:
        return {"bytes": self._bytes}

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            # Every acknowledged batch was flushed and fsync'd in ``send``: what may still be
            # in the buffer is a batch whose write failed (a full disk), never acknowledged.
            # Flushing it again at close would fail again and hide the stream's own error.
            with contextlib.suppress(OSError):
                self._file.close()

    def describe(self) -> str:
        return f"{self.path} ({self.encoding})"


def _starts_with_stream(f, stream_id: bytes, limit: int = 64 << 20) -> bool:
    """Whether the file's first record (within ``limit`` bytes) carries the stream's key."""
    key = stream_id + b":"
    tail, read = b"", 0  # the last bytes of the previous block: a key across two blocks
    while read < limit:
        block = f.read(1 << 20)
        if not block:
            break
        read += len(block)
        if key in tail + block:
            return True
        tail = block[-(len(key) - 1) :]
    return False
