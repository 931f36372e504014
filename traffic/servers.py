"""Throwaway servers on loopback for the stream sinks' tests and benchmarks: Redis, PostgreSQL
and Mosquitto (MQTT), each started in a temporary folder on a free port and stopped (folder
removed) when the ``with`` block ends. The Debian packages come from scripts/setup_system.sh;
their own system services are never used.

    with redis_server() as url: ...        # redis://127.0.0.1:PORT/0
    with postgres_server() as url: ...     # postgresql://cardtwin@127.0.0.1:PORT/postgres
    with mosquitto_server() as url: ...    # mqtt://127.0.0.1:PORT

PostgreSQL refuses to run as root: as root, ``initdb`` and ``pg_ctl`` run as the package's
``postgres`` user (``runuser``), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


class ServerError(RuntimeError):
    """A server would not start (its log's end is in the message)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen | None, log: Path, timeout_s=20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"exited with {proc.returncode}: {_tail(log)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServerError(f"no answer on port {port} after {timeout_s:.0f} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-800:]
    except OSError:
        return "(no log)"


def _binary(name: str, *extra: str) -> str:
    found = shutil.which(name) or next((p for p in extra if os.access(p, os.X_OK)), None)
    if found is None:
        raise ServerError(f"{name} is not installed (make install runs scripts/setup_system.sh)")
    return found


@contextlib.contextmanager
def _process(cmd: list[str], port: int, folder: Path, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    try:
        _wait_for_port(port, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[tuple[Path, int]]:
    """A temporary folder and a free port for one server; the folder goes afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder, free_port()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server without persistence; yields its URL."""
    with _scratch("cardtwin-redis-") as (folder, port):
        cmd = [
            _binary("redis-server"),
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes",
        ]  # fmt: skip
        with _process(cmd, port, folder, folder / "redis.log"):
            yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def mosquitto_server(users: dict[str, str] | None = None) -> Iterator[str]:
    """A Mosquitto broker on loopback; yields its URL. It takes anonymous clients, or with
    ``users`` (name -> password) only those users."""
    with _scratch("cardtwin-mqtt-") as (folder, port):
        conf = folder / "mosquitto.conf"
        access = "allow_anonymous true\n"
        if users:
            passwords = folder / "passwords"
            passwords.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(
                    [_binary("mosquitto_passwd"), "-b", str(passwords), name, password],
                    check=True, capture_output=True,
                )  # fmt: skip
            if os.geteuid() == 0:
                # Started as root, mosquitto reads the file as its own user, once it has
                # dropped root: that user must own the file and be able to reach it.
                import pwd

                entry = pwd.getpwnam("mosquitto")
                os.chown(passwords, entry.pw_uid, entry.pw_gid)
                os.chmod(folder, 0o711)
            access = f"allow_anonymous false\npassword_file {passwords}\n"
        conf.write_text(
            f"listener {port} 127.0.0.1\n{access}persistence false\nmax_queued_messages 100000\n"
        )
        cmd = [_binary("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)]
        with _process(cmd, port, folder, folder / "mosquitto.log"):
            yield f"mqtt://127.0.0.1:{port}"


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster with trust authentication on loopback (user ``cardtwin``, no
    fsync: a throwaway); yields its URL."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not candidates:
        raise ServerError("postgresql is not installed (make install)")
    bin_dir = Path(candidates[-1])
    # The folder must be reachable by the postgres user: not under a private tmp folder.
    folder = Path(tempfile.mkdtemp(prefix="cardtwin-pg-", dir="/tmp"))
    os.chmod(folder, 0o755)
    data, log = folder / "data", folder / "postgres.log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    try:
        subprocess.run(
            [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U",
             "cardtwin", "--no-sync", "-E", "UTF8", "--locale", "C"],
            check=True, capture_output=True,
        )  # fmt: skip
        options = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        started = subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o",
             options, "-w", "-t", "30", "start"],
            capture_output=True, text=True,
        )  # fmt: skip
        if started.returncode != 0:
            raise ServerError(f"pg_ctl start failed: {started.stderr} {_tail(log)}")
        try:
            yield f"postgresql://cardtwin@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
            )
    except subprocess.CalledProcessError as exc:
        raise ServerError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["ServerError", "free_port", "mosquitto_server", "postgres_server", "redis_server"]
