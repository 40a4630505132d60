"""The SQLite store: many sessions in one database file (standard library ``sqlite3``, WAL mode).

Tables (schema version 3, created and migrated by the library; see ``SCHEMA``)::

    cs_schema_version(version, description, applied_at)       one row per applied migration
    cs_sessions(id, session_id, created_at)                   session ids and their integer keys
    cs_checkpoints(key, session, seq, step_number, checkpoint_id, context, record, chunk)
    cs_documents(session, name, value, updated_at)            session_metadata.json, chat_history.json, ...
    cs_writers(session_id, token, host, pid, process_start, acquired_at)   the writer lease of a session

(``session`` is the integer key of ``cs_sessions``: rows and indexes do not repeat long session ids.) A
checkpoint is one row: its record and its *log chunk*, exactly the bytes ``DeltaEncoder`` produced for it.
Its log prefix is the concatenation of the chunks of rows ``0..seq``. The row's ``key`` is
``session * 2**32 + seq`` (checked by the table), so the rowid itself orders a session's log and finds its
rows. A commit writes two B-trees: the table, and the unique ``(checkpoint_id, session)`` index.

Step numbers increase with ``seq`` within a session, so a save checks only the row before it to refuse a
step number that is taken (or earlier); the newest row holds the session's highest step.

Schema history: schema 1 gave chunks and checkpoints separate keys (six B-trees per commit); schema 2 keyed
them by one integer each (three B-trees: about 50 us less per checkpoint); schema 3 made them one row (two
B-trees: 12-19 us less per checkpoint inside a chat, and about 0.02 ms less added time per message).
Older files are rebuilt when they are opened (``tests/fixtures/sqlite_schema1``,
``tests/fixtures/sqlite_schema2``); a file whose chunks and checkpoints do not pair up (damaged) is refused
and left unchanged.

One writer per session: the first save takes the session's *lease* (a ``cs_writers`` row naming the
process). Another writer gets ``SessionLockedError`` while the holder lives; a lease left by a process that
died on this host is taken over; ``close()`` releases it. Every save checks, in its own write transaction,
that it still holds the lease (the lease row names this writer's token), and the unique row key
(``(session, seq)`` in one integer) makes a second writer's insert fail rather than interleave, so two
writers can never corrupt a session's log.

A checkpoint is one write transaction of plain statements: ``BEGIN IMMEDIATE``, check the lease, check
that the step number is above the previous row's, insert the row, ``COMMIT``. The checkpoint is encoded
before the transaction begins (the first save of a writer, which takes the lease and reads the log, encodes
it inside). Loading a checkpoint reads its record and then the chunks of rows ``0..seq`` in order (a range
of the table's own key: no sort), in one read transaction.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import (
    CheckpointAccessError,
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CorruptCheckpointError,
    SessionLockedError,
    UnsupportedStoreError,
    from_os_error,
)
from ..model import CheckpointData
from .migrations import SchemaMigration, pending_migrations
from .protocol import Durability
from .records import (
    ChunkedLog,
    PreparedSave,
    check_chunk_seqs,
    check_document_name,
    check_session_id,
    decode_document,
    decode_stored,
    encode_document,
    reference,
)

#: the error of a migration to schema 3 refused because the file's chunks and checkpoints do not pair up
_UNPAIRED = (
    "schema 3 needs one log chunk per checkpoint and step numbers that increase with the log; this file "
    "has not (damaged or edited by hand) and was left unchanged"
)

SCHEMA: tuple[SchemaMigration, ...] = (
    SchemaMigration(
        1,
        "sessions, log chunks, checkpoints, documents, writer leases",
        (
            """CREATE TABLE cs_sessions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL
            )""",
            # a rowid table: its leaves hold rows up to a page inline (a WITHOUT ROWID table spills
            # anything over ~1 KB into overflow pages, doubling the file for 1 KiB messages)
            """CREATE TABLE cs_log_chunks (
                session INTEGER NOT NULL,
                seq INTEGER NOT NULL CHECK (seq >= 0),
                data BLOB NOT NULL,
                PRIMARY KEY (session, seq)
            )""",
            """CREATE TABLE cs_checkpoints (
                session INTEGER NOT NULL,
                checkpoint_id TEXT NOT NULL,
                step_number INTEGER NOT NULL CHECK (step_number >= 0),
                seq INTEGER NOT NULL,
                context TEXT NOT NULL,
                record BLOB NOT NULL,
                PRIMARY KEY (session, checkpoint_id),
                UNIQUE (session, step_number)
            )""",
            "CREATE INDEX cs_checkpoints_by_id ON cs_checkpoints (checkpoint_id)",
            """CREATE TABLE cs_documents (
                session INTEGER NOT NULL,
                name TEXT NOT NULL,
                value BLOB NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (session, name)
            )""",
            """CREATE TABLE cs_writers (
                session_id TEXT PRIMARY KEY,
                token TEXT NOT NULL,
                host TEXT NOT NULL,
                pid INTEGER NOT NULL,
                process_start TEXT,
                acquired_at TEXT NOT NULL
            )""",
        ),
    ),
    SchemaMigration(
        2,
        "log chunks and checkpoints keyed by one integer each: three B-trees written per checkpoint, not six",
        (
            # key = session * 2**32 + seq: the rowid itself orders a session's chunks (no second index)
            """CREATE TABLE cs_log_chunks_2 (
                key INTEGER PRIMARY KEY,
                session INTEGER NOT NULL,
                seq INTEGER NOT NULL CHECK (seq >= 0 AND seq < 4294967296),
                data BLOB NOT NULL,
                CHECK (key = session * 4294967296 + seq)
            )""",
            """INSERT INTO cs_log_chunks_2 (key, session, seq, data)
               SELECT session * 4294967296 + seq, session, seq, data FROM cs_log_chunks""",
            "DROP TABLE cs_log_chunks",
            "ALTER TABLE cs_log_chunks_2 RENAME TO cs_log_chunks",
            # key = session * 2**32 + step_number: unique steps, in order; ids unique per session by index
            """CREATE TABLE cs_checkpoints_2 (
                key INTEGER PRIMARY KEY,
                session INTEGER NOT NULL,
                checkpoint_id TEXT NOT NULL,
                step_number INTEGER NOT NULL CHECK (step_number >= 0 AND step_number < 4294967296),
                seq INTEGER NOT NULL,
                context TEXT NOT NULL,
                record BLOB NOT NULL,
                CHECK (key = session * 4294967296 + step_number)
            )""",
            """INSERT INTO cs_checkpoints_2 (key, session, checkpoint_id, step_number, seq, context, record)
               SELECT session * 4294967296 + step_number, session, checkpoint_id, step_number, seq, context,
                      record
               FROM cs_checkpoints""",
            "DROP TABLE cs_checkpoints",
            "ALTER TABLE cs_checkpoints_2 RENAME TO cs_checkpoints",
            "CREATE UNIQUE INDEX cs_checkpoints_by_id ON cs_checkpoints (checkpoint_id, session)",
        ),
    ),
    SchemaMigration(
        3,
        "a checkpoint's record and log chunk in one row: two B-trees written per checkpoint, not three",
        (
            # key = session * 2**32 + seq: the rowid orders a session's log, as the chunk table's did
            """CREATE TABLE cs_checkpoints_3 (
                key INTEGER PRIMARY KEY,
                session INTEGER NOT NULL,
                seq INTEGER NOT NULL CHECK (seq >= 0 AND seq < 4294967296),
                step_number INTEGER NOT NULL CHECK (step_number >= 0 AND step_number < 4294967296),
                checkpoint_id TEXT NOT NULL,
                context TEXT NOT NULL,
                record BLOB NOT NULL,
                chunk BLOB NOT NULL,
                CHECK (key = session * 4294967296 + seq)
            )""",
            """INSERT INTO cs_checkpoints_3
                   (key, session, seq, step_number, checkpoint_id, context, record, chunk)
               SELECT l.key, c.session, c.seq, c.step_number, c.checkpoint_id, c.context, c.record, l.data
               FROM cs_checkpoints c JOIN cs_log_chunks l ON l.key = c.session * 4294967296 + c.seq""",
            # refuse (roll back, change nothing) a file whose chunks and checkpoints do not pair up one to
            # one, or whose step numbers do not increase with the log: only damage or hand edits do that
            f"""CREATE TEMP TABLE cs_migration_3 (ok INTEGER CONSTRAINT "{_UNPAIRED}" CHECK (ok))""",
            """INSERT INTO cs_migration_3 SELECT
                   (SELECT count(*) FROM cs_log_chunks) = (SELECT count(*) FROM cs_checkpoints_3)
                   AND (SELECT count(*) FROM cs_checkpoints) = (SELECT count(*) FROM cs_checkpoints_3)
                   AND NOT EXISTS (SELECT 1 FROM cs_checkpoints_3 a JOIN cs_checkpoints_3 b
                                   ON b.key = a.key + 1 WHERE b.step_number <= a.step_number)""",
            "DROP TABLE temp.cs_migration_3",
            "DROP TABLE cs_log_chunks",
            "DROP TABLE cs_checkpoints",
            "ALTER TABLE cs_checkpoints_3 RENAME TO cs_checkpoints",
            "CREATE UNIQUE INDEX cs_checkpoints_by_id ON cs_checkpoints (checkpoint_id, session)",
        ),
    ),
)
SCHEMA_VERSION = SCHEMA[-1].version
#: a session's rows in cs_checkpoints have keys session * KEY_SPAN + seq
KEY_SPAN = 1 << 32
#: session keys above this would make row keys beyond SQLite's 64-bit integers (only a hostile file has one)
_MAX_SESSION_KEY = 1 << 31

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS cs_schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""
_BUSY_TIMEOUT_S = 30.0
#: new database files: 4 KiB pages (SQLite's default). Every commit writes each page it touched to the WAL,
#: so smaller pages cost less per checkpoint; measured against 8 KiB: 0.50-0.60 vs 0.60-0.66 ms added per
#: message, 3.46x vs 3.54x the raw text on disk
_PAGE_SIZE = 4096
#: the integer key of a session id, inside a statement
_KEY = "(SELECT id FROM cs_sessions WHERE session_id = ?)"
#: whether a writer's token still holds the session's lease (checked inside every save's transaction)
_LEASE_HELD = "SELECT 1 FROM cs_writers WHERE session_id = ? AND token = ?"
#: the step number of the row before a new one (the session's latest: steps increase with the log)
_PREVIOUS_STEP = "SELECT step_number FROM cs_checkpoints WHERE key = ?"
_INSERT = """INSERT INTO cs_checkpoints
    (key, session, seq, step_number, checkpoint_id, context, record, chunk) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
_LOAD_RECORD = f"SELECT seq, record, session FROM cs_checkpoints WHERE checkpoint_id = ? AND session = {_KEY}"
#: the bytes of chunks 0..seq in order (a range of the table's own key: no sort, no second index)
_LOAD_CHUNKS = "SELECT chunk FROM cs_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key"
_CHUNK_SEQS = "SELECT seq FROM cs_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key"
#: the rows of one session (its id as the parameter, twice) in cs_checkpoints
_SESSION_ROWS = f"key BETWEEN {_KEY} * {KEY_SPAN} AND {_KEY} * {KEY_SPAN} + {KEY_SPAN - 1}"


def _session_keys(session: int) -> tuple[int, int]:
    """The first and last ``key`` a session's rows can have in cs_checkpoints."""
    return session * KEY_SPAN, session * KEY_SPAN + KEY_SPAN - 1


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (a no-op once it is), waiting up to the busy timeout for other connections.

    Connections that switch a new file at the same moment can deadlock on its lock, and SQLite then refuses
    one at once ("database is locked") instead of calling its busy handler: that one tries again.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _process_start(pid: int) -> str | None:
    """The start time of a process (Linux ``/proc``), to tell a live holder from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2 :].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:  # pragma: no cover - e.g. pid out of range
        return False
    current = _process_start(pid)
    return started is None or current is None or current == started


_HOST = socket.gethostname()

#: SQLite's primary result codes that say what went wrong with the file (``sqlite3`` exceptions carry them)
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_CANTOPEN, _SQLITE_AUTH, _SQLITE_NOTADB = (
    3,
    8,
    11,
    14,
    23,
    26,
)


def _database_error(exc: Exception, problem: str, where: str, path: Path) -> CheckpointError:
    """The ``CheckpointError`` for a ``sqlite3`` error (or an ``OverflowError`` from a hostile row's key) met
    while reading or opening the database file ``path``; the message names ``where`` and SQLite's reason.

    A file that is not a database, or a damaged one, is a ``CorruptCheckpointError``; refused access (a
    read-only or foreign file or directory) a ``CheckpointAccessError``; a directory where the file should
    be a ``CheckpointNotFoundError``.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = f"{problem}: {exc}"
    if primary in (_SQLITE_NOTADB, _SQLITE_CORRUPT) or isinstance(exc, OverflowError):
        return CorruptCheckpointError(message, path=where)
    if primary == _SQLITE_CANTOPEN and os.path.isdir(path):
        return CheckpointNotFoundError(f"{problem}: {path} is a directory, not a database file", path=where)
    if primary in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_AUTH, _SQLITE_CANTOPEN):
        return CheckpointAccessError(message, path=where)
    return CheckpointError(message, path=where)


class SqliteStore:
    """Many sessions in one SQLite file. Safe to share between threads; several processes may use the file.

    ``SqliteStore("checkpoints.db")`` or ``SqliteStore.from_url("sqlite:///checkpoints.db")`` (relative) /
    ``"sqlite:////abs/path/checkpoints.db"``. The file and its schema are created on first use.
    """

    def __init__(self, path: str | Path) -> None:
        if "\0" in os.fspath(path):
            raise CheckpointNotFoundError(
                "not a usable database path (it holds a NUL character)", path=repr(os.fspath(path))
            )
        self.path = Path(path).expanduser().absolute()
        self._url = f"sqlite:///{self.path.as_posix()}"
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._synchronous: Durability = "crash"

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise UnsupportedStoreError(
                f"not a SQLite store URL: {url!r} (expected sqlite:///relative.db or sqlite:////abs/path.db)"
            )
        path = url[len(prefix) :]
        if path == ":memory:" or path.startswith("file:"):
            raise UnsupportedStoreError(f"unsupported SQLite store URL {url!r}: give a database file path")
        return cls(path)

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"SqliteStore({self._url!r})"

    # -- connection and schema --------------------------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        """The store's connection (opened, and the schema created or migrated, on first use)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        with self._lock:
            if self._conn is not None and self._pid != os.getpid():
                self._conn = None  # a forked child must not use its parent's connection
            if self._conn is None:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise from_os_error(
                        exc, "cannot create the SQLite store's directory", self._url, writing=True
                    ) from exc
                try:
                    conn = sqlite3.connect(
                        self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
                    )
                except sqlite3.Error as exc:
                    raise _database_error(exc, "cannot open the SQLite store", self._url, self.path) from exc
                try:
                    conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # only takes effect in a new file
                    _enable_wal(conn)
                    conn.execute("PRAGMA synchronous=NORMAL")
                    self._migrate(conn)
                except sqlite3.Error as exc:
                    conn.close()
                    raise _database_error(exc, "cannot open the SQLite store", self._url, self.path) from exc
                except BaseException:
                    conn.close()
                    raise
                self._conn, self._pid, self._synchronous = conn, os.getpid(), "crash"
            return self._conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Create or migrate the schema; an up-to-date file is only read (no write lock taken)."""
        try:
            (current,) = conn.execute("SELECT max(version) FROM cs_schema_version").fetchone()
        except sqlite3.DatabaseError:  # no version table yet (other errors recur below, reported there)
            current = None
        if current is not None and not pending_migrations(current, SCHEMA, where=self._url):
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_VERSION_TABLE)
                (current,) = conn.execute(
                    "SELECT coalesce(max(version), 0) FROM cs_schema_version"
                ).fetchone()
                for migration in pending_migrations(current, SCHEMA, where=self._url):
                    for statement in migration.statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO cs_schema_version VALUES (?, ?, ?)",
                        (migration.version, migration.description, _now()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise _database_error(
                exc, "cannot create or migrate the SQLite schema", self._url, self.path
            ) from exc

    def schema_version(self) -> int:
        """The schema version of the database file."""
        with self._lock, self._reading(self._url):
            (version,) = self.connection().execute("SELECT max(version) FROM cs_schema_version").fetchone()
        return int(version)

    @contextlib.contextmanager
    def _reading(self, where: str) -> Iterator[None]:
        """A ``sqlite3`` error (or an ``OverflowError`` from a hostile row) becomes a ``CheckpointError``."""
        try:
            yield
        except (sqlite3.Error, OverflowError) as exc:
            raise _database_error(exc, "cannot read the SQLite store", where, self.path) from exc

    @contextlib.contextmanager
    def _writing(self, where: str) -> Iterator[None]:
        """Turn a ``sqlite3`` error met while changing the file into a ``CheckpointSaveError``."""
        try:
            yield
        except (sqlite3.Error, OverflowError) as exc:
            raise CheckpointSaveError(f"cannot write to the SQLite store: {exc}", path=where) from exc

    def close(self) -> None:
        """Close the connection (sessions opened from this store reconnect on their next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- the CheckpointStore protocol -------------------------------------------------------------------
    def open_session(self, session_id: str, *, durability: Durability = "crash") -> SqliteSessionStore:
        return SqliteSessionStore(self, session_id, durability=durability)

    def list_sessions(self) -> list[str]:
        with self._lock, self._reading(self._url):
            rows = (
                self.connection()
                .execute(
                    f"""SELECT session_id FROM cs_sessions s
                   WHERE EXISTS (SELECT 1 FROM cs_checkpoints c
                                 WHERE c.key BETWEEN s.id * {KEY_SPAN} AND s.id * {KEY_SPAN} + {KEY_SPAN - 1})
                      OR EXISTS (SELECT 1 FROM cs_documents d WHERE d.session = s.id)
                   ORDER BY session_id"""
                )
                .fetchall()
            )
        return [row[0] for row in rows]

    def delete_session(self, session_id: str) -> None:
        """Remove a session's checkpoints, log and documents (``SessionLockedError`` if it has a writer)."""
        where = reference(self._url, session_id)
        with self._lock, self._writing(where), self._transaction(where) as conn:
            holder = self._live_holder(conn, session_id, token=None)
            if holder is not None:
                raise SessionLockedError(f"cannot delete a session that has a writer ({holder})", path=where)
            row = conn.execute("SELECT id FROM cs_sessions WHERE session_id = ?", (session_id,)).fetchone()
            found = (
                row
                and conn.execute(
                    """SELECT 1 FROM cs_checkpoints WHERE key BETWEEN ? AND ?
                   UNION ALL SELECT 1 FROM cs_documents WHERE session = ? LIMIT 1""",
                    (*_session_keys(row[0]), row[0]),
                ).fetchone()
            )
            if not found:
                raise CheckpointNotFoundError(f"no session {session_id!r}", path=where)
            conn.execute("DELETE FROM cs_checkpoints WHERE key BETWEEN ? AND ?", _session_keys(row[0]))
            conn.execute("DELETE FROM cs_documents WHERE session = ?", (row[0],))
            conn.execute("DELETE FROM cs_sessions WHERE id = ?", (row[0],))
            conn.execute("DELETE FROM cs_writers WHERE session_id = ?", (session_id,))

    def find_checkpoint(self, checkpoint_id: str) -> str:
        with self._lock, self._reading(self._url):
            rows = (
                self.connection()
                .execute(
                    """SELECT s.session_id FROM cs_checkpoints c JOIN cs_sessions s ON s.id = c.session
                   WHERE c.checkpoint_id = ? ORDER BY s.session_id""",
                    (checkpoint_id,),
                )
                .fetchall()
            )
        if len(rows) != 1:
            problem = "no session holds" if not rows else f"{len(rows)} sessions hold"
            raise CheckpointNotFoundError(f"{problem} checkpoint {checkpoint_id!r}", path=self._url)
        return str(rows[0][0])

    def release_session_lock(self, session_id: str) -> bool:
        """Remove a session's writer lease whoever holds it (for a writer that died on another host).

        Returns whether there was one. The holder's next save then fails with ``SessionLockedError``.
        """
        where = reference(self._url, session_id)
        with self._lock, self._writing(where), self._transaction(where) as conn:
            deleted: int = conn.execute("DELETE FROM cs_writers WHERE session_id = ?", (session_id,)).rowcount
            return deleted > 0

    # -- helpers for sessions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, where: str, durability: Durability = "crash") -> Any:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error).

        ``durability="fsync"`` commits with ``synchronous=FULL`` (the WAL is flushed to the device at every
        commit: survives power loss); ``"crash"`` with ``NORMAL`` (survives a killed process).
        """
        conn = self.connection()
        try:
            self._set_durability(conn, durability)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CheckpointSaveError(f"cannot write to the SQLite store: {exc}", path=where) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _set_durability(self, conn: sqlite3.Connection, durability: Durability) -> None:
        """``synchronous=FULL`` for ``"fsync"``, ``NORMAL`` for ``"crash"`` (outside a transaction)."""
        if durability != self._synchronous:
            conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'NORMAL'}")
            self._synchronous = durability

    def _live_holder(self, conn: sqlite3.Connection, session_id: str, token: str | None) -> str | None:
        """A description of the session's writer unless it is ``token``, absent, or a dead local process."""
        row = conn.execute(
            "SELECT token, host, pid, process_start, acquired_at FROM cs_writers WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        if row is None or row[0] == token:
            return None
        _, host, pid, started, since = row
        if host == _HOST and not _alive(int(pid), started):
            conn.execute("DELETE FROM cs_writers WHERE session_id = ?", (session_id,))
            return None
        return f"process {pid} on host {host!r}, since {since}"


class SqliteSessionStore:
    """One session of a ``SqliteStore``. The first save takes the session's writer lease."""

    def __init__(self, store: SqliteStore, session_id: str, *, durability: Durability = "crash") -> None:
        if durability not in ("crash", "fsync"):
            raise ValueError(f"durability must be 'crash' or 'fsync', not {durability!r}")
        self.store = store
        self._session_id = check_session_id(session_id, where=reference(store.url, str(session_id)))
        self.durability = durability
        self._where = reference(store.url, session_id)
        self._token: str | None = None
        self._log: ChunkedLog | None = None
        self._key: int | None = None  # cs_sessions.id, cached while this writer holds the lease

    @property
    def session_id(self) -> str:
        return self._session_id

    def __repr__(self) -> str:
        return f"SqliteSessionStore({self._where!r})"

    # -- writing ----------------------------------------------------------------------------------------
    def _acquire(self, conn: sqlite3.Connection) -> None:
        """Take the writer lease (inside the caller's transaction)."""
        holder = self.store._live_holder(conn, self._session_id, self._token)
        if holder is not None:
            self._token = None
            self._log = None
            raise SessionLockedError(
                f"session {self._session_id!r} is being written by {holder}; one writer per session "
                "(use another session id, or SqliteStore.release_session_lock if that writer is gone)",
                path=self._where,
            )
        if self._token is None:
            token = secrets.token_hex(16)
            pid = os.getpid()
            conn.execute(
                "INSERT OR REPLACE INTO cs_writers VALUES (?, ?, ?, ?, ?, ?)",
                (self._session_id, token, _HOST, pid, _process_start(pid), _now()),
            )
            self._token = token

    def _lost_lease(self) -> SessionLockedError:
        """Forget the lease and the log state; the error to raise (the transaction is rolled back)."""
        self._token = None
        self._log = None
        return SessionLockedError(
            "this writer lost the session's lease (released or taken over); nothing was written",
            path=self._where,
        )

    def _session_key(self, conn: sqlite3.Connection) -> int:
        """The session's integer key (its ``cs_sessions`` row is created on the first write)."""
        conn.execute(
            "INSERT OR IGNORE INTO cs_sessions (session_id, created_at) VALUES (?, ?)",
            (self._session_id, _now()),
        )
        key: int = conn.execute(
            "SELECT id FROM cs_sessions WHERE session_id = ?", (self._session_id,)
        ).fetchone()[0]
        return key

    def _open_log(self, conn: sqlite3.Connection) -> ChunkedLog:
        if self._log is None:
            self._key = self._session_key(conn)
            rows_of_session = _session_keys(self._key)
            rows = conn.execute(
                "SELECT seq, chunk FROM cs_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key",
                rows_of_session,
            ).fetchall()
            latest = conn.execute(
                "SELECT record FROM cs_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key DESC LIMIT 1",
                rows_of_session,
            ).fetchone()
            self._log = ChunkedLog.rebuild(rows, latest[0] if latest else None, where=self._where)
        return self._log

    def save(self, data: CheckpointData, *, trusted_prefix: bool = False) -> str:
        """Store one checkpoint (its log chunk and record, one row); returns its id.

        Its step number must be above the session's latest (every ``CheckpointManager`` counts up).
        """
        where = reference(self.store.url, self._session_id, data.checkpoint_id)
        if not 0 <= data.step_number < KEY_SPAN:
            raise CheckpointSaveError(
                f"step_number must be >= 0 and < 2**32, got {data.step_number}", path=where
            )
        with self.store._lock:
            fresh = self._token is None
            try:
                log, prepared = self._write(data, where, trusted_prefix)
            except BaseException:
                if fresh:  # the rolled-back transaction took the lease: it is not held
                    self._token = None
                raise
            log.adopt(prepared)
        return data.checkpoint_id

    def _write(self, data: CheckpointData, where: str, trusted: bool) -> tuple[ChunkedLog, PreparedSave]:
        """One save: in one write transaction, check the lease and the step number, then insert the row.

        While this writer holds the lease and knows the log, the checkpoint is encoded before the
        transaction begins; the first save takes the lease and reads the log inside it.
        """
        log = self._log if self._token is not None else None
        try:
            prepared = log.prepare(data, trusted_prefix=trusted) if log is not None else None
            with self.store._transaction(where, self.durability) as conn:
                if self._token is None:
                    self._acquire(conn)
                elif conn.execute(_LEASE_HELD, (self._session_id, self._token)).fetchone() is None:
                    raise self._lost_lease()
                if log is None or prepared is None:
                    log = self._open_log(conn)
                    prepared = log.prepare(data, trusted_prefix=trusted)
                assert self._key is not None
                key = self._key * KEY_SPAN + prepared.seq
                previous = conn.execute(_PREVIOUS_STEP, (key - 1,)).fetchone()
                if previous is not None and not data.step_number > previous[0]:
                    raise CheckpointSaveError(
                        "a checkpoint with this step number already exists in the session, or a later one "
                        f"does (step {previous[0]}): step numbers increase within a session",
                        path=where,
                    )
                conn.execute(
                    _INSERT,
                    (
                        key,
                        self._key,
                        prepared.seq,
                        data.step_number,
                        data.checkpoint_id,
                        data.context,
                        prepared.record_bytes,
                        prepared.chunk,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            self._log = None  # re-read the log before the next save: another writer may have added to it
            raise CheckpointSaveError(_integrity_problem(exc), path=where) from exc
        except sqlite3.Error as exc:
            self._log = None
            raise CheckpointSaveError(f"could not write checkpoint: {exc}", path=where) from exc
        except CheckpointError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise CheckpointSaveError(f"could not write checkpoint: {exc}", path=where) from exc
        return log, prepared

    def write_document(self, name: str, value: Any) -> None:
        """(Re)write a session document in one transaction."""
        where = reference(self.store.url, self._session_id, check_document_name(name, where=self._where))
        try:
            payload = encode_document(name, value)
        except (TypeError, ValueError) as exc:
            raise CheckpointSaveError(f"could not encode document: {exc}", path=where) from exc
        with self.store._lock:
            try:
                with self.store._transaction(where, self.durability) as conn:
                    conn.execute(
                        "INSERT OR REPLACE INTO cs_documents VALUES (?, ?, ?, ?)",
                        (self._session_key(conn), name, payload, _now()),
                    )
            except sqlite3.Error as exc:
                raise CheckpointSaveError(f"could not write document: {exc}", path=where) from exc

    def flush(self) -> None:
        """Nothing to wait for: a save returns once its transaction committed."""

    def close(self) -> None:
        """Release the writer lease (a later save takes it again)."""
        token, self._token, self._log, self._key = self._token, None, None, None
        if token is None:
            return
        with contextlib.suppress(sqlite3.Error, CheckpointError), self.store._lock:
            self.store.connection().execute(
                "DELETE FROM cs_writers WHERE session_id = ? AND token = ?", (self._session_id, token)
            )

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- reading ----------------------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self.store._lock, self.store._reading(self._where):
            return self.store.connection().execute(sql, params).fetchall()

    def list_checkpoints(self) -> list[str]:
        rows = self._query(
            f"SELECT checkpoint_id FROM cs_checkpoints WHERE {_SESSION_ROWS} ORDER BY key",
            (self._session_id, self._session_id),
        )
        return [row[0] for row in rows]

    def next_step_number(self) -> int:
        rows = self._query(
            f"SELECT step_number FROM cs_checkpoints WHERE {_SESSION_ROWS} ORDER BY key DESC LIMIT 1",
            (self._session_id, self._session_id),
        )
        if not rows:
            return 0
        if type(rows[0][0]) is not int:
            raise CorruptCheckpointError(f"invalid step number {rows[0][0]!r}", path=self._where)
        return rows[0][0] + 1

    def load(self, checkpoint_id: str) -> CheckpointData:
        where = reference(self.store.url, self._session_id, str(checkpoint_id))
        with self.store._lock:
            conn = self.store.connection()
            with self.store._reading(where):
                conn.execute("BEGIN")  # one snapshot for the record and its chunks
                try:
                    row = conn.execute(_LOAD_RECORD, (str(checkpoint_id), self._session_id)).fetchone()
                    if row is None:
                        raise CheckpointNotFoundError(
                            f"no checkpoint {checkpoint_id!r} in session {self._session_id!r}", path=where
                        )
                    seq, raw, key = row
                    if type(seq) is not int or not 0 <= seq < KEY_SPAN:
                        raise CorruptCheckpointError(f"invalid log chunk number {seq!r}", path=where)
                    if type(key) is not int or not 0 <= key < _MAX_SESSION_KEY:
                        raise CorruptCheckpointError(f"invalid session key {key!r}", path=where)
                    chunk_keys = (key * KEY_SPAN, key * KEY_SPAN + seq)
                    chunks = [chunk for (chunk,) in conn.execute(_LOAD_CHUNKS, chunk_keys)]
                    seqs = None
                    if len(chunks) != seq + 1:  # a gap: name the missing chunk
                        seqs = [number for (number,) in conn.execute(_CHUNK_SEQS, chunk_keys)]
                finally:
                    conn.execute("COMMIT")
        return decode_stored(
            raw, seq, str(checkpoint_id), lambda: _log_prefix(chunks, seqs, seq, where=where), where=where
        )

    def locate(self, checkpoint_id: str) -> str:
        return reference(self.store.url, self._session_id, checkpoint_id)

    def read_document(self, name: str) -> Any:
        rows = self._query(
            f"SELECT value FROM cs_documents WHERE session = {_KEY} AND name = ?", (self._session_id, name)
        )
        if not rows:
            return None
        return decode_document(name, rows[0][0], where=reference(self.store.url, self._session_id, name))

    def list_documents(self) -> list[str]:
        """Names of the session's documents, sorted."""
        rows = self._query(
            f"SELECT name FROM cs_documents WHERE session = {_KEY} ORDER BY name", (self._session_id,)
        )
        return [row[0] for row in rows]


def _log_prefix(chunks: list[bytes], seqs: list[int] | None, last_seq: int, *, where: str) -> bytes:
    """The log prefix from the bytes of chunks ``0..last_seq`` read in ``seq`` order.

    ``(session, seq)`` is unique and ``seq >= 0``, so ``last_seq + 1`` chunks with ``seq <= last_seq`` are
    exactly chunks ``0..last_seq``; otherwise ``seqs`` (the numbers read) name the missing one.
    """
    if len(chunks) != last_seq + 1:
        check_chunk_seqs(seqs or [], last_seq, where=where)  # raises: names the missing chunk
    return b"".join(chunks)


def _integrity_problem(exc: Exception) -> str:
    text = str(exc)
    if "checkpoint_id" in text:
        return f"a checkpoint with this id already exists; refusing to overwrite ({text})"
    return f"another writer added to this session's log; nothing was written ({text})"
