"""``--sink -``: records on standard output (JSON lines, or CSV with ``--encoding csv``)."""

from __future__ import annotations

import sys

from traffic.encoding import Encoder
from traffic.sinks import Batch, Outcome, Sink, SinkSetupError


class StdoutSink(Sink):
    """Writes each batch to stdout and flushes; a closed pipe (``| head``) is permanent."""

    def __init__(self, url, options) -> None:
        super().__init__(url, options)
        self.encoding = options.encoding or "json"
        if self.encoding not in ("json", "csv"):
            raise SinkSetupError(f"--encoding {self.encoding}: stdout takes json or csv")
        self._header = True

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        data = encoder.encode(batch.table, self.encoding, header=self._header)
        self._header = False
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
        return Outcome()

    def describe(self) -> str:
        return f"stdout ({self.encoding})"
