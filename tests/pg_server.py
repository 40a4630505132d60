"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temporary directory.

The server listens only on a unix socket in its own directory (``listen_addresses=''``, a free port number
names the socket), trusts local connections, and is removed again by ``stop()``. As root (``initdb``
refuses root) the directory belongs to the ``postgres`` user and the binaries run through
``runuser -u postgres --``; as a normal user they run directly.

Binaries: ``$CHECKPOINT_SYSTEM_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin`` (15 on the
machine image), else ``pg_config --bindir``, else ``initdb`` on the PATH. Missing binaries raise
``PostgresUnavailable`` with what to install (``apt-get install -y postgresql``); the test fixture turns
that into a failure, not a skip, unless ``CHECKPOINT_SYSTEM_SKIP_POSTGRES=1`` is set.

    python tests/pg_server.py      # start one, print its URL, stop it on Enter
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

PREFERRED_VERSION = "15"
SKIP_ENV = "CHECKPOINT_SYSTEM_SKIP_POSTGRES"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (or the server would not start)."""


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    configured = os.environ.get("CHECKPOINT_SYSTEM_PG_BIN")
    if configured:  # authoritative when set
        path = Path(configured)
        return path if (path / "initdb").is_file() and (path / "pg_ctl").is_file() else None
    candidates: list[Path] = []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if (p / "bin" / "initdb").is_file()),
            key=lambda p: (p.name != PREFERRED_VERSION, -_version(p.name)),
        )
        candidates += [p / "bin" for p in versions]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _version(name: str) -> float:
    try:
        return float(name)
    except ValueError:
        return 0.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One temporary server. ``start()`` returns the admin URL; ``create_database()`` a fresh database."""

    def __init__(self, *, fast: bool = True, bin_dir: Path | None = None) -> None:
        self.fast = fast
        self.bin_dir = bin_dir or find_bin_dir()
        self.base: Path | None = None
        self.port = 0
        self.as_postgres = os.geteuid() == 0 if hasattr(os, "geteuid") else False
        self._databases = 0
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.bin_dir is not None
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd="/")
        if result.returncode != 0:
            log = ""
            if self.base is not None and (self.base / "server.log").is_file():
                log = (self.base / "server.log").read_text(errors="replace")[-3000:]
            raise PostgresUnavailable(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}"
            )
        return result

    def start(self) -> str:
        if self.bin_dir is None:
            raise PostgresUnavailable(
                "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin, "
                "pg_config --bindir or the PATH. Install them (Debian/Ubuntu: apt-get install -y "
                "postgresql; .ci/run does this), point CHECKPOINT_SYSTEM_PG_BIN at them, or set "
                f"{SKIP_ENV}=1 to skip the PostgreSQL tests explicitly."
            )
        self.base = Path(tempfile.mkdtemp(prefix="checkpoint_system_pg_"))
        data, sockets = self.base / "data", self.base / "socket"
        sockets.mkdir()
        if self.as_postgres:
            for path in (self.base, sockets):
                shutil.chown(path, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            *(["--no-sync"] if self.fast else []),
        )
        self.port = free_port()
        options = [f"-p {self.port}", f"-k {sockets}", "-c listen_addresses=''", "-c max_connections=200"]
        if self.fast:  # a throwaway server: never wait for the disk
            options += ["-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off"]
        self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-o",
            " ".join(options),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        atexit.register(self.stop)
        return self.url()

    def stop(self) -> None:
        base, self.base = self.base, None
        if base is None:
            return
        with contextlib.suppress(Exception):
            command = [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(base / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ]
            if self.as_postgres:
                command = ["runuser", "-u", "postgres", "--", *command]
            subprocess.run(command, capture_output=True, timeout=60, cwd="/")
        shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- URLs and databases -------------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        assert self.base is not None, "server not started"
        return f"postgresql://postgres@/{database}?host={self.base / 'socket'}&port={self.port}"

    def create_database(self, prefix: str = "test") -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        with self._lock:
            self._databases += 1
            name = f"{prefix}_{self._databases}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


_shared: PostgresServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> PostgresServer:
    """The process's one test server (started on first use, stopped by ``stop_shared_server``/at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.base is None:
            server = PostgresServer(fast=True)
            started = time.perf_counter()
            server.start()
            server.startup_seconds = time.perf_counter() - started  # type: ignore[attr-defined]
            _shared = server
        return _shared


def stop_shared_server() -> None:
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


if __name__ == "__main__":
    with PostgresServer(fast=False) as server:
        print(server.url())
        input("server running; press Enter to stop ")
