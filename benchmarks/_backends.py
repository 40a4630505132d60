"""Where the benchmark's ``CheckpointManager`` writes: a session directory, a SQLite file, PostgreSQL.

Each backend object lives for one run: it makes the ``CheckpointManager``, measures the bytes the session
takes (also mid-run, for the size curve), lists references to its checkpoints, loads them, and cleans up.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from checkpoint_system import CheckpointManager
from checkpoint_system.model import CheckpointData
from checkpoint_system.storage import CheckpointStore, Durability

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "CHECKPOINT_BENCH_POSTGRES_URL"


def dir_bytes(path: Path) -> tuple[int, int, dict[str, int]]:
    """(apparent size, allocated size, apparent size per kind of file) of every file under ``path``."""
    apparent = allocated = 0
    kinds: dict[str, int] = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:  # a temporary file renamed away while we walked
                continue
            apparent += st.st_size
            allocated += getattr(st, "st_blocks", 0) * 512
            kind = "checkpoint files" if name.startswith("checkpoint_") else name
            kinds[kind] = kinds.get(kind, 0) + st.st_size
    return apparent, allocated, kinds


def files_bytes(paths: list[Path]) -> tuple[int, int]:
    apparent = allocated = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            apparent += st.st_size
            allocated += getattr(st, "st_blocks", 0) * 512
    return apparent, allocated


def sqlite_logical_bytes(reader: Any) -> int:
    """``page_count * page_size`` as a reader connection sees the database (WAL content included).

    Mid-run the WAL file holds pages not yet copied into the database file and is never shrunk, so the
    files' sizes overstate the data; the logical size is what the files shrink to once the last
    connection closes (which is when the final size is taken).
    """
    (pages,) = reader.execute("PRAGMA page_count").fetchone()
    (page_size,) = reader.execute("PRAGMA page_size").fetchone()
    return int(pages) * int(page_size)


@runtime_checkable
class SupportsClose(Protocol):
    def close(self) -> None: ...


def close_store(store: CheckpointStore) -> None:
    """``store.close()``: the ``CheckpointStore`` protocol declares no ``close``, the SQLite and PostgreSQL
    stores (what a manager opens from a URL) have one."""
    assert isinstance(store, SupportsClose), store
    store.close()


def module_missing(name: str) -> str | None:
    """None if ``checkpoint_system.storage.<name>`` imports, else why not."""
    try:
        importlib.import_module(f"checkpoint_system.storage.{name}")
    except ImportError as exc:
        return f"checkpoint_system.storage.{name} does not import ({exc})"
    return None


class FileBackend:
    """The default store: ``<workdir>/session`` (checkpoint files + the shared message log)."""

    name = "file"
    allocated_meaningful = True

    def __init__(self, workdir: Path, durability: Durability) -> None:
        self.session = workdir / "session"
        self.durability = durability

    def manager(self) -> CheckpointManager:
        return CheckpointManager(self.session, durability=self.durability)

    def probe(self) -> int:
        return dir_bytes(self.session)[0]

    def close_writer(self, cm: CheckpointManager) -> None:
        cm.close()

    def size(self) -> tuple[int, int, dict[str, int]]:
        return dir_bytes(self.session)

    def references(self, cm: CheckpointManager) -> list[tuple[str, Any]]:
        """(checkpoint id, what ``restore``/``load_checkpoint_file`` takes) in step order."""
        return [(cid, cm.checkpoint_path(cid)) for cid in cm.list_checkpoints()]

    def loader(self) -> Callable[[str, Any], CheckpointData]:
        return lambda _cid, ref: CheckpointManager.load_checkpoint_file(ref)

    def cold_load(self, ref: Any) -> CheckpointData:
        return CheckpointManager.load_checkpoint_file(ref)

    def cleanup(self) -> None:
        pass


class SqliteBackend:
    """``CheckpointManager("sqlite:///<workdir>/x.db", session_id="s")``."""

    name = "sqlite"
    allocated_meaningful = True

    def __init__(self, workdir: Path, durability: Durability) -> None:
        self.db = workdir / "x.db"
        self.url = f"sqlite:///{self.db}"
        self.durability = durability
        self._reader: Any = None
        self._probe_conn: Any = None

    def _files(self) -> list[Path]:
        return [self.db, Path(f"{self.db}-wal"), Path(f"{self.db}-shm"), Path(f"{self.db}-journal")]

    def manager(self) -> CheckpointManager:
        return CheckpointManager(self.url, session_id="s", durability=self.durability)

    def probe(self) -> int:
        if self._probe_conn is None:
            import sqlite3

            self._probe_conn = sqlite3.connect(self.db)
        return sqlite_logical_bytes(self._probe_conn)

    def close_writer(self, cm: CheckpointManager) -> None:
        if self._probe_conn is not None:  # must not outlive the writer: the last close folds the WAL
            self._probe_conn.close()
            self._probe_conn = None
        cm.close()
        if cm.backing_store is not None:  # the last connection folds the WAL into the database file
            close_store(cm.backing_store)

    def size(self) -> tuple[int, int, dict[str, int]]:
        apparent, allocated = files_bytes(self._files())
        return apparent, allocated, {"x.db": apparent}

    def references(self, cm: CheckpointManager) -> list[tuple[str, Any]]:
        return [(cid, cm.locate(cid)) for cid in cm.list_checkpoints()]

    def loader(self) -> Callable[[str, Any], CheckpointData]:
        from checkpoint_system.storage.sqlite import SqliteStore

        self._reader = SqliteStore(self.db)
        session = self._reader.open_session("s")
        return lambda cid, _ref: session.load(cid)

    def cold_load(self, ref: Any) -> CheckpointData:
        return CheckpointManager.load_checkpoint_file(ref)

    def cleanup(self) -> None:
        if self._probe_conn is not None:
            self._probe_conn.close()
            self._probe_conn = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class PostgresServerHandle:
    """``--postgres-url auto``: a throwaway server (``tests/pg_server.py``), fsync on, stopped at exit."""

    def __init__(self) -> None:
        sys.path.insert(0, str(REPO_ROOT / "tests"))
        try:
            from pg_server import PostgresServer
        finally:
            sys.path.remove(str(REPO_ROOT / "tests"))
        self.server = PostgresServer(fast=False)
        self.url = self.server.start()

    def stop(self) -> None:
        self.server.stop()


class PostgresBackend:
    """``CheckpointManager(<postgresql url>, session_id=...)`` in a fresh database per run when allowed.

    Bytes on disk: ``pg_total_relation_size`` (heap + TOAST + indexes) of the ``cs_*`` tables of that fresh
    database. Without the right to create databases the run uses the given database with a unique session
    id and counts ``pg_column_size`` of the session's rows instead (no page or index overhead).
    """

    name = "postgres"
    allocated_meaningful = False

    def __init__(self, workdir: Path, durability: Durability, base_url: str) -> None:
        import psycopg

        self.psycopg = psycopg
        self.durability = durability
        self.base_url = base_url
        self.session_id = "s"
        self.database: str | None = None
        self.url = base_url
        self._reader: Any = None
        try:
            with psycopg.connect(base_url, autocommit=True) as conn:
                name = f"cs_bench_{uuid.uuid4().hex[:12]}"
                conn.execute(f'CREATE DATABASE "{name}"')
            self.database = name
            parts = urlsplit(base_url)
            self.url = urlunsplit(parts._replace(path=f"/{name}"))
        except psycopg.Error:
            self.session_id = f"bench_{uuid.uuid4().hex[:12]}"
        self.meter = psycopg.connect(self.url, autocommit=True)

    def manager(self) -> CheckpointManager:
        return CheckpointManager(
            self.url,
            session_id=self.session_id,
            durability=self.durability,
        )

    def probe(self) -> int:
        return self._bytes()

    def _bytes(self) -> int:
        if self.database is not None:
            row = self.meter.execute(
                """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind = 'r' AND c.relname LIKE 'cs\\_%%' AND n.nspname = current_schema()"""
            ).fetchone()
            assert row is not None  # an aggregate without GROUP BY returns one row
            return int(row[0])
        total = 0
        for table in ("cs_log_chunks", "cs_checkpoints", "cs_documents"):
            with contextlib.suppress(self.psycopg.Error):
                row = self.meter.execute(
                    f"SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {table} t WHERE session_id = %s",
                    (self.session_id,),
                ).fetchone()
                assert row is not None  # an aggregate without GROUP BY returns one row
                total += int(row[0])
        return total

    def close_writer(self, cm: CheckpointManager) -> None:
        cm.close()
        if cm.backing_store is not None:
            close_store(cm.backing_store)

    def size(self) -> tuple[int, int, dict[str, int]]:
        nbytes = self._bytes()
        return nbytes, nbytes, {"cs_* tables": nbytes}

    def references(self, cm: CheckpointManager) -> list[tuple[str, Any]]:
        return [(cid, cm.locate(cid)) for cid in cm.list_checkpoints()]

    def loader(self) -> Callable[[str, Any], CheckpointData]:
        from checkpoint_system.storage.postgres import PostgresStore

        self._reader = PostgresStore(self.url)
        session = self._reader.open_session(self.session_id)
        return lambda cid, _ref: session.load(cid)

    def cold_load(self, ref: Any) -> CheckpointData:
        return CheckpointManager.load_checkpoint_file(ref)

    def cleanup(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None
        with contextlib.suppress(Exception):
            self.meter.close()
        if self.database is not None:
            with contextlib.suppress(Exception), self.psycopg.connect(self.base_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        else:
            from checkpoint_system.storage.postgres import PostgresStore

            with contextlib.suppress(Exception), PostgresStore(self.base_url) as store:
                for session in store.list_sessions():
                    if session == self.session_id or session.startswith(f"{self.session_id}/"):
                        store.delete_session(session)
