"""The HTTP sink where HTTP itself fails, against real servers on loopback: a request of a batch
that h11 refuses to make, a server whose answers are not HTTP, and the check at the start that
catches a request no batch could make."""

from __future__ import annotations

import contextlib
import json
import socket

import pyarrow as pa
import pytest
from stream_helpers import LoopbackServer, json_lines, small_stream

from traffic.accounting import Accounts, DeadLetters
from traffic.delivery import FIRST_BATCHES, Delivery, RetryPolicy
from traffic.receiver import serve
from traffic.sinks import Batch, SinkOptions, SinkSetupError, open_sink
from traffic.stream import SinkTookNothing


def _batch(first_seq: int, stream_id: str) -> Batch:
    seqs = [first_seq, first_seq + 1]
    keys = [f"{stream_id}:{k}" for k in seqs]
    return Batch(first_seq, pa.table({"amount_fen": [200, 150], "idempotency_key": keys}))


def test_a_batch_whose_request_cannot_be_made_is_dead_lettered_and_the_rest_go(tmp_path):
    """What every request shares is checked when the sink is made, so a request h11 refuses to
    make is the batch's own (here an Idempotency-Key with a newline): that batch goes to the
    dead-letter file with h11's reason, without retries, and the batches around it are
    delivered (the stream used to stop at it)."""
    server, store = serve()
    url = f"http://127.0.0.1:{server.server_address[1]}/taps"
    accounts = Accounts("s")
    dead = DeadLetters(tmp_path / "dead_letters.jsonl")
    try:
        sink = open_sink(url, SinkOptions(concurrency=1))
        delivery = Delivery(
            sink, accounts, dead, tmp_path / "checkpoint.json", RetryPolicy(base_s=0.001), seed=1
        )
        for batch in (_batch(0, "s"), _batch(2, "s\nX-Injected: 1"), _batch(4, "s")):
            accounts.generated_records(len(batch))
            delivery.submit(batch)
        delivery.close()
        sink.close()
    finally:
        server.shutdown()
        server.server_close()
    t = accounts.totals()
    assert (t["generated"], t["sent"], t["acknowledged"], t["dead_lettered"]) == (6, 6, 4, 2)
    assert t["retries"] == 0
    assert sorted(store.records) == ["s:0", "s:1", "s:4", "s:5"]
    letters = json_lines(tmp_path / "dead_letters.jsonl")
    assert [d["stream_seq"] for d in letters] == [2, 3]
    for letter in letters:
        assert letter["reason"].startswith("the request cannot be made: Illegal header value")


class _NotHttpServer(LoopbackServer):
    """A TCP server on loopback that answers whatever it is sent with lines that are not HTTP
    (as a server of another protocol would), then closes the connection once the client has
    read them."""

    ANSWER = b"-ERR unknown command 'POST'\r\n\r\n"

    def __init__(self) -> None:
        self.answered = 0
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(self.ANSWER)
            self.answered += 1
            # Closing with the request still unread would reset the connection and lose the
            # answer: say no more, and read until the client hangs up.
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass


def test_answers_that_are_not_http_are_retried_then_dead_lettered_with_the_reason(tmp_path):
    """A server answering garbage: each batch is tried again (it may be a proxy's hiccup), then
    dead-lettered with the parser's complaint; every record is accounted for. A sink that takes
    none of the first batches stops the stream (traffic/delivery.py FIRST_BATCHES)."""
    server = _NotHttpServer()
    try:
        with pytest.raises(SinkTookNothing, match="RemoteProtocolError: illegal status line"):
            small_stream(tmp_path, f"http://127.0.0.1:{server.port}/taps", max_attempts=2)
    finally:
        server.close()
    report = json.loads((tmp_path / "state" / "report.json").read_text())
    t = report["totals"]
    letters = json_lines(tmp_path / "state" / "dead_letters.jsonl")
    assert not report["finished"] and "took none" in report["stop_reason"]
    assert t["acknowledged"] == 0 and t["dead_lettered"] == len(letters) > 0
    assert len(letters) % 200 == 0 and len(letters) >= 200 * FIRST_BATCHES
    assert server.answered >= 2 * len(letters) // 200  # two attempts a batch of 200
    for letter in letters:
        assert letter["reason"].startswith("gave up after 2 attempts: RemoteProtocolError: ")
        assert "illegal status line" in letter["reason"]


def test_a_request_h11_refuses_is_bad_input_at_the_start_without_the_token(monkeypatch):
    """The sink's own header rules are at least as strict as h11's, so this check at the start
    is the backstop should they ever drift apart: the request as h11 would make it, refused
    as bad input (not as every batch's failure), the token never shown."""
    monkeypatch.setenv("CARDTWIN_TEST_TOKEN", "tok3n-secret")
    sink = open_sink("http://127.0.0.1:9/taps", SinkOptions(token_env="CARDTWIN_TEST_TOKEN"))
    sink.headers["Authorization"] = "Bearer tok3n-secret\x00"  # past the sink's own rules
    with pytest.raises(SinkSetupError) as refused:
        sink._check_request()
    message = str(refused.value)
    assert "the request cannot be made: Illegal header value" in message
    assert "tok3n-secret" not in message and "***" in message
