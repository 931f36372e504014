"""Helpers of the stream tests: reading a JSON-lines sink's file, killing a stream midway, an
HTTP receiver answering set statuses, a Redis connection that loses a transaction's answer, a
port that takes no connection, a table's Arrow IPC stream as Arrow's own writer makes it."""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "scenarios" / "small_ci.yaml"
#: The stream command, before what it streams.
STREAM_COMMAND = [sys.executable, str(ROOT / "run_scenario.py"), "stream"]
#: The stream command on the small scenario's first day.
STREAM_CLI = [*STREAM_COMMAND, str(SMALL), "--days", "1"]


def most_batches_sent_before_giving_up(give_up_after: int) -> int:
    """The most batches a stream with one sink worker (``--concurrency 1``) can hand to a sink
    that takes nothing before it gives up: the ``give_up_after`` that set the flag
    (traffic/delivery.py ``took_nothing``), then, until the pacer sees the flag and the
    queue is dropped, whatever the worker takes meanwhile — the batches queued then (at most
    ``QUEUE_BATCHES``) and the one the pacer may submit after its last look at the flag (it
    looks before each batch). How many of those go out depends on the threads' turns (a busy
    machine: more), so a test can count on this bound, not on a number."""
    from traffic.stream import QUEUE_BATCHES

    return give_up_after + QUEUE_BATCHES + 1


def arrow_stream_bytes(table) -> bytes:
    """``table`` as Arrow's own IPC stream writer makes it (the reference for the encoder)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def json_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines file."""
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def stream_cli(
    state: Path, sink: str, *flags: str, quiet: bool = True, recording: Path | None = None
) -> subprocess.CompletedProcess:
    """The stream command on a day of the small scenario into ``sink`` (state in ``state``;
    a line each second only if not ``quiet``), or, given ``recording``, that recorded stream
    sent again (without ``--days``, which a replay refuses); whatever it exits with, it never
    prints a traceback."""
    source = STREAM_CLI if recording is None else [*STREAM_COMMAND, str(recording)]
    quieted = ["--quiet"] if quiet else []
    done = subprocess.run(
        [*source, "--sink", sink, "--state", str(state), *quieted, *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def kill_when_some_are_done(cmd, state: Path, env=None) -> None:
    """Start the stream command, SIGKILL it once its checkpoint shows records done."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    checkpoint = state / "checkpoint.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if checkpoint.exists():
            try:
                if json.loads(checkpoint.read_text())["done_through"] > 300:
                    break
            except (json.JSONDecodeError, KeyError):
                pass  # caught mid-write: look again on the next turn
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def small_stream(
    tmp_path,
    sink,
    record_format="taps",
    *,
    seed=None,
    resume=False,
    stop=None,
    max_attempts=8,
    **options,
):
    """Two days of the small scenario streamed to ``sink`` (batches of 200, quick retries, at
    most ``max_attempts`` a batch), its state in ``tmp_path / "state"``; ``options`` go to the
    sink (SinkOptions)."""
    from sim.api import load_scenario, privacy_key
    from traffic.delivery import RetryPolicy
    from traffic.sinks import SinkOptions
    from traffic.stream import StreamSettings, stream

    return stream(
        load_scenario(SMALL, days=2),
        StreamSettings(
            sink=sink,
            state_dir=tmp_path / "state",
            record_format=record_format,
            batch_size=200,
            sink_options=SinkOptions(record_format=record_format, **options),
            retry=RetryPolicy(max_attempts=max_attempts, base_s=0.01),
            resume=resume,
        ),
        privacy_key=privacy_key(None),
        seed=seed,
        stop=stop,
    )


def answer(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str | None = None,
) -> None:
    """Send ``handler``'s answer: ``status``, ``body`` with its length (the sink reads the
    body, keep-alive), and ``content_type`` when given."""
    handler.send_response(status)
    if content_type is not None:
        handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Answers(http.server.ThreadingHTTPServer):
    """An HTTP server on a free loopback port answering each POST with the next status of
    ``statuses`` (the last one repeated), a few bytes of body."""

    daemon_threads = True

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.posts = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    status = outer.statuses[min(outer.posts, len(outer.statuses) - 1)]
                    outer.posts += 1
                answer(self, status, b"no such route" if status == 404 else b"{}")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/taps"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@contextlib.contextmanager
def port_taking_no_connection() -> Iterator[int]:
    """A loopback port where a connection is neither made nor refused: its listener never
    accepts, and its queue is full, so Linux drops a new client's SYN and the client waits
    until its own connect timeout, as for a host that drops the packets."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    try:
        # Backlog 0 holds one connection on Linux; fill the queue until one waits.
        for _ in range(8):
            client = socket.socket()
            client.settimeout(0.5)
            try:
                client.connect(("127.0.0.1", port))
            except TimeoutError:
                client.close()
                break
            held.append(client)
        else:
            raise AssertionError(f"port {port} still takes connections: its queue never filled")
        yield port
    finally:
        for client in held:
            client.close()
        listener.close()


class LoopbackServer:
    """A TCP server on a free loopback port: each connection accepted goes to ``handle`` (a
    subclass's), one after the other, until ``close``, after which the port refuses
    connections and ``handle`` is never called again."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # shut down by close: the test is over
            if self.closed.is_set():
                # Accepted as close ran (before the shutdown): not a connection of the test.
                conn.close()
                return
            try:
                self.handle(conn)
            except OSError:
                if not self.closed.is_set():
                    raise
                return  # closed while handing it on (a proxy closes its sockets)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop listening and wait for the accepting thread to end. Closing the listener alone
        does not wake a thread blocked in ``accept``: the port kept listening, and the next
        connection was still accepted and handed to ``handle`` (a proxy would pass it on to
        the real server). ``shutdown`` wakes it (Linux: ``accept`` fails with EINVAL)."""
        self.closed.set()
        with contextlib.suppress(OSError):  # not connected: some systems refuse, Linux not
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._acceptor.join(10)
        assert not self._acceptor.is_alive(), "the accepting thread did not end"


class DroppingProxy(LoopbackServer):
    """A TCP proxy in front of a real server on ``upstream_port`` that, once it has dropped a
    sender's connection (``dropped``, set by the subclass's ``_serve``), turns away the next
    ``refuse`` connections (accepted and closed at once, as by a server restarting); ``hold``:
    the subclass holds the dropped request back instead of passing it up.

    Every socket it holds (the senders' and its own to the server, ``_upstream_connection``)
    is closed by ``close``, so nothing the test started is left talking to the server."""

    def __init__(self, upstream_port: int, refuse: int, *, hold: bool = False) -> None:
        self.upstream_port = upstream_port
        self.hold = hold
        self.dropped = 0
        self.refuse, self.refused = refuse, 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._serving: list[threading.Thread] = []
        super().__init__()

    def _track(self, sock: socket.socket) -> socket.socket:
        """``sock``, to be closed by ``close``; closed at once (OSError) if that has run."""
        with self._lock:
            if not self.closed.is_set():
                self._sockets.add(sock)
                return sock
        sock.close()
        raise OSError("the proxy is closed")

    def _upstream_connection(self) -> socket.socket:
        """A new connection to the server behind the proxy (closed by ``close``)."""
        return self._track(socket.create_connection(("127.0.0.1", self.upstream_port)))

    def handle(self, conn: socket.socket) -> None:
        with self._lock:
            refuse = self.dropped == 1 and self.refused < self.refuse
            self.refused += refuse
        if refuse:
            conn.close()
            return
        self._track(conn)
        self._thread(self._run, conn)

    def _thread(self, target, *args) -> None:
        """Run ``target`` on a thread of its own, which ``close`` waits for (OSError once
        ``close`` has run: nothing new starts)."""
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            if self.closed.is_set():
                raise OSError("the proxy is closed")
            self._serving.append(thread)
        thread.start()

    def _run(self, client: socket.socket) -> None:
        try:
            self._serve(client)
        except OSError:
            if not self.closed.is_set():
                raise  # a failure of the test's own setup, not the proxy closing under it

    def _serve(self, client: socket.socket) -> None:
        """Pass ``client``'s connection on to the server, dropping it where the test wants."""
        raise NotImplementedError

    @staticmethod
    def hang_up(sock: socket.socket) -> None:
        """Close ``sock`` so that a thread blocked in ``recv`` on it returns: ``shutdown``
        first (a bare ``close`` leaves that thread blocked and the connection open)."""
        with contextlib.suppress(OSError):  # already shut down or closed
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        """Stop accepting, close every socket (``shutdown`` first: it wakes a thread blocked
        in ``recv`` on it, which a bare ``close`` does not), and wait for the threads serving
        them."""
        super().close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            self.hang_up(sock)
        with self._lock:
            threads = list(self._serving)
        for thread in threads:
            thread.join(10)
        assert not any(t.is_alive() for t in threads), "a proxy thread did not end"


def stream_keys(tmp: Path) -> list[str]:
    """The small scenario's stream of idempotency keys in order, from a file sink in ``tmp``."""
    path = tmp / "taps.jsonl"
    assert small_stream(tmp, f"file://{path}").reconciled
    return [r["idempotency_key"] for r in json_lines(path)]


def check_first_batch_unknown(state: Path, expected: list[str], stderr: str, n: int = 200) -> list:
    """A stream that gave up on its first batch of ``n`` with its delivery unknown: those
    records in the dead-letter file (returned), counted apart, the rest acknowledged, the
    stream reconciled and saying so."""
    dead = json_lines(state / "dead_letters.jsonl")
    assert [d["idempotency_key"] for d in dead] == expected[:n]
    assert all(d["reason"].startswith("delivery unknown: gave up after") for d in dead)
    report = json.loads((state / "report.json").read_text())
    t = report["totals"]
    assert report["reconciled"]
    assert (t["dead_lettered"], t["delivery_unknown"]) == (0, n)
    assert t["acknowledged"] == len(expected) - n
    assert f"0 dead-lettered, {n} of unknown delivery" in stderr
    return dead


class FlakyRedisProxy(DroppingProxy):
    """A TCP proxy in front of a real Redis that, once, loses a transaction's answer, then turns
    away the next ``refuse`` connections (accepted and closed at once, as by a server
    restarting).

    The first EXEC it sees goes up to Redis and the proxy waits until Redis answers it
    (``executed``: the batch is in Redis but the sender cannot know), or with ``hold`` is held
    back until ``release()`` (a transaction still on its way); either way the sender's
    connection is then dropped without the answer."""

    def __init__(self, upstream_port: int, refuse: int, *, hold: bool = False) -> None:
        self._held: tuple[socket.socket, bytes] | None = None
        self.executed = False  # Redis answered the EXEC whose answer was lost (not ``hold``)
        self.late_answer: bytes = b""  # Redis's answer to the held EXEC, once released
        self._answered = threading.Event()
        super().__init__(upstream_port, refuse, hold=hold)

    def _serve(self, client: socket.socket) -> None:
        upstream = self._upstream_connection()
        muted = threading.Event()
        ran = threading.Event()  # Redis answered the EXEC whose answer is muted

        def answers() -> None:
            lost = b"\r\n"  # what was muted, after a line end (a reply starts a line)
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    if not muted.is_set():
                        client.sendall(data)
                    elif self._held is None and self.hold and self.dropped:
                        self.late_answer += data  # the released EXEC's answer
                        self._answered.set()
                    else:
                        # MULTI's +OK and the commands' +QUEUED may still come, then EXEC's
                        # array of results: the only reply of the transaction starting with *.
                        lost += data
                        if b"\r\n*" in lost:
                            ran.set()

        self._thread(answers)
        tail, keep_upstream = b"", False
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                window, tail = tail + data, (tail + data)[-16:]
                with self._lock:
                    drop = self.dropped == 0 and b"$4\r\nEXEC\r\n" in window
                if drop:
                    muted.set()  # before the EXEC goes up: its answer is never forwarded
                if drop and self.hold:
                    self._held, keep_upstream = (upstream, data), True
                else:
                    upstream.sendall(data)
                if drop:
                    if not self.hold:
                        # The EXEC ran (its answer came) before the sender is dropped: what the
                        # test means by "the batch arrived, its answer was lost".
                        self.executed = ran.wait(10)
                    with self._lock:
                        self.dropped = 1
                    break
        self.hang_up(client)
        if not keep_upstream:
            self.hang_up(upstream)

    def release(self) -> bytes:
        """Send the held EXEC up to Redis at last; Redis's answer to it (``*-1``: aborted)."""
        upstream, data = self._held
        self._held = None
        upstream.sendall(data)
        assert self._answered.wait(10), "Redis did not answer the released EXEC"
        self.hang_up(upstream)
        return self.late_answer
