"""The stream tests' own servers (tests/stream_helpers.py) end when closed: the port refuses
connections, ``handle`` is not called again, and a proxy leaves no connection to the real server
behind it. (Closing the listener alone used to leave its thread in ``accept``: the next
connection was still accepted and handed on, through a proxy to the real Redis or PostgreSQL.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlsplit

import redis
from stream_helpers import DroppingProxy, LoopbackServer

from traffic.servers import redis_server


class _Counting(LoopbackServer):
    """A loopback server that counts the connections handed to it and closes them."""

    def __init__(self) -> None:
        self.handled = 0
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        self.handled += 1
        conn.close()


class _PassThrough(DroppingProxy):
    """A proxy that drops nothing: bytes both ways, until either side or ``close`` ends it."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port, refuse=0)

    def _serve(self, client: socket.socket) -> None:
        upstream = self._upstream_connection()

        def answers() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    client.sendall(data)

        self._thread(answers)
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                upstream.sendall(data)
        self.hang_up(upstream)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


def test_a_closed_loopback_server_refuses_connections_and_handles_none():
    server = _Counting()
    assert _connects(server.port)
    deadline = time.monotonic() + 5
    while server.handled < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.handled == 1  # it was serving
    server.close()
    assert not _connects(server.port)
    time.sleep(0.1)  # room for a handle() that should not happen
    assert server.handled == 1


def test_a_closed_proxy_closes_both_ends_and_refuses_connections():
    """Through the proxy to a real Redis: once closed, the sender's connection is at its end,
    Redis no longer has the proxy's connection, and the port refuses new ones."""
    with redis_server() as url:
        direct = redis.Redis.from_url(url)
        proxy = _PassThrough(int(urlsplit(url).port))
        try:
            sender = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            sender.sendall(b"PING\r\n")
            assert sender.recv(64) == b"+PONG\r\n"
            assert len(direct.client_list()) == 2  # ours, and the proxy's for the sender
        finally:
            proxy.close()
        assert sender.recv(64) == b""  # closed by the proxy, not left hanging
        sender.close()
        deadline = time.monotonic() + 5
        while len(direct.client_list()) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(direct.client_list()) == 1  # only ours
        assert not _connects(proxy.port)
        assert not [t for t in proxy._serving if t.is_alive()]


def test_a_proxy_closed_while_a_sender_waits_does_not_raise_in_its_threads():
    """Closing under a live connection is the usual end of a test, not an error of the proxy:
    no thread of it fails (pytest would report the exception as a warning, easy to miss)."""
    failures: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)
    try:
        with redis_server() as url:
            proxy = _PassThrough(int(urlsplit(url).port))
            sender = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            sender.sendall(b"PING\r\n")
            assert sender.recv(64) == b"+PONG\r\n"
            proxy.close()
            sender.close()
    finally:
        threading.excepthook = previous
    assert failures == []


def test_close_may_be_called_twice():
    """A test's ``finally`` may close what the test closed already."""
    server = _Counting()
    server.close()
    server.close()
    assert not _connects(server.port)
