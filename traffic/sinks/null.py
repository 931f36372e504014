"""``--sink null``: records encoded, then dropped — to measure generation and encoding."""

from __future__ import annotations

from traffic.encoding import Encoder
from traffic.sinks import Batch, Outcome, Sink


class NullSink(Sink):
    """Encodes every batch as a real sink would (``--encoding``, JSON by default), keeps only
    the byte count."""

    def __init__(self, url, options) -> None:
        super().__init__(url, options)
        self.encoding = options.encoding or "json"
        self.bytes = 0

    def send(self, batch: Batch, encoder: Encoder) -> Outcome:
        self.bytes += len(encoder.encode(batch.table, self.encoding))
        return Outcome()

    def describe(self) -> str:
        return f"null ({self.encoding}, {self.bytes:,} bytes encoded)"
