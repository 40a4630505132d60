"""The SQLite store: many sessions in one database file (standard library ``sqlite3``, WAL mode).

Tables (schema version 3, the only one; see ``SCHEMA``)::

    cs_schema_version(version, description, applied_at)       the schema's version (3)
    cs_sessions(id, session_id, created_at)                   session ids and their integer keys
    cs_checkpoints(key, session, seq, step_number, checkpoint_id, context, record, chunk)
    cs_documents(session, name, value, updated_at)            session_metadata.json, chat_history.json, ...
    cs_writers(session_id, token, host, pid, process_start, acquired_at)   the writer lease of a session

(``session`` is the integer key of ``cs_sessions``: rows and indexes do not repeat long session ids.) A
checkpoint is one row: its record and its *log chunk*, exactly the bytes ``DeltaEncoder`` produced for it.
Its log prefix is the concatenation of the chunks of rows ``0..seq``. The row's ``key`` is
``session * 2**32 + seq``, so the rowid itself orders a session's log and finds its rows. A commit writes
two B-trees: the table, and the unique ``(checkpoint_id, session)`` index. Schemas 1 and 2 were drafts of
the unreleased library; a file of either is refused (``UnsupportedFormatError``).

Step numbers increase with ``seq`` within a session, so a save checks only the row before it to refuse a
step number that is taken (or earlier); the newest row holds the session's highest step.

**Readers never write.** A store reads through a read-only connection (``mode=ro``) and writes through a
second, read-write one opened by its first write. ``SqliteStore(path, create=False)`` (what
``open_store(url, create=False)`` and the read paths use) never creates the file or its schema: a missing
one is ``CheckpointNotFoundError``; with ``create=True`` (the default, for writers) the first use creates
both. A reader changes no byte of the database file or of its WAL. A WAL-mode database is read with the
help of its ``-shm`` file (the WAL's index, shared memory of the connections): while a writer is live the
reader records its snapshot in one of the index's read marks there (bytes 100-119), which is how SQLite
keeps a writer from overwriting pages a reader still needs; after a killed writer the reader may also
rebuild the index from the WAL. When its store closes, the last writer of a file switches it back to
rollback-journal mode (the WAL folded in and removed, no ``-shm``): a cleanly closed store is one plain
file that a reader opens without any side file, even in a read-only directory. (A WAL-mode file without
``-wal``, left by a writer that never closed its store, makes SQLite create an empty ``-wal`` and a
``-shm`` for the first reader: it needs them to read safely while a writer might start.)

**Every row is checked.** A load checks the row's key against its session and log chunk number, the
record's integrity hash, that the record names the row's checkpoint id and chunk, and the size and sha256
of the log prefix (the chunks of rows ``0..seq``, concatenated). A listing checks every row's record the
same way (and its step number) and leaves out, with a ``RuntimeWarning``, a row that does not verify.

One writer per session: the first save takes the session's *lease* (a ``cs_writers`` row naming the
process). Another writer gets ``SessionLockedError`` while the holder lives; a lease left by a process that
died on this host is taken over; ``close()`` releases it. Every save checks, in its own write transaction,
that it still holds the lease (the lease row names this writer's token), and the unique row key
(``(session, seq)`` in one integer) makes a second writer's insert fail rather than interleave, so two
writers can never corrupt a session's log.

A checkpoint is one write transaction of plain statements: ``BEGIN IMMEDIATE``, check the lease, check
that the step number is above the previous row's, insert the row, ``COMMIT``. The checkpoint is encoded
before the transaction begins (the first save of a writer, which takes the lease and reads the log, encodes
it inside). SQLite's own automatic checkpoint folds the WAL into the database file every 1,000 pages.
Loading a checkpoint reads its record and then the chunks of rows ``0..seq`` in order (a range of the
table's own key: no sort), in one read transaction.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
from .database import DatabaseSession, check_schema_version, delete_session_tree
from .protocol import Durability
from .records import (
    ChunkedLog,
    PreparedSave,
    check_chunk_seqs,
    check_document_name,
    decode_document,
    decode_stored,
    encode_document,
    reference,
)

SCHEMA_VERSION = 3
SCHEMA_DESCRIPTION = "sessions, one row per checkpoint (record and log chunk), documents, writer leases"
#: the statements that create the schema in an empty database (one transaction, with its version row)
SCHEMA: tuple[str, ...] = (
    """CREATE TABLE cs_schema_version (
        version INTEGER PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at TEXT NOT NULL
    )""",
    """CREATE TABLE cs_sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    )""",
    # a rowid table: its leaves hold rows up to a page inline (a WITHOUT ROWID table spills anything over
    # ~1 KB into overflow pages, doubling the file for 1 KiB messages); key = session * 2**32 + seq
    """CREATE TABLE cs_checkpoints (
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
    "CREATE UNIQUE INDEX cs_checkpoints_by_id ON cs_checkpoints (checkpoint_id, session)",
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
)
#: a session's rows in cs_checkpoints have keys session * KEY_SPAN + seq
KEY_SPAN = 1 << 32
#: session keys above this would make row keys beyond SQLite's 64-bit integers (only a hostile file has one)
_MAX_SESSION_KEY = 1 << 31

_BUSY_TIMEOUT_S = 30.0
#: new database files: 4 KiB pages (SQLite's default). Every commit writes each page it touched to the WAL,
#: so smaller pages cost less per checkpoint; measured against 8 KiB: 0.50-0.60 vs 0.60-0.66 ms added per
#: message, 3.46x vs 3.54x the raw text on disk
_PAGE_SIZE = 4096
#: whether a writer's token still holds the session's lease (checked inside every save's transaction)
_LEASE_HELD = "SELECT 1 FROM cs_writers WHERE session_id = ? AND token = ?"
#: the step number of the row before a new one (the session's latest: steps increase with the log)
_PREVIOUS_STEP = "SELECT step_number FROM cs_checkpoints WHERE key = ?"
_INSERT = """INSERT INTO cs_checkpoints
    (key, session, seq, step_number, checkpoint_id, context, record, chunk) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
_SESSION_KEY = "SELECT id FROM cs_sessions WHERE session_id = ?"
_LOAD_RECORD = "SELECT key, seq, record FROM cs_checkpoints WHERE checkpoint_id = ? AND session = ?"
#: the bytes of chunks 0..seq in order (a range of the table's own key: no sort, no second index)
_LOAD_CHUNKS = "SELECT chunk FROM cs_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key"
_CHUNK_SEQS = "SELECT key - ? FROM cs_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key"
#: a session's rows as listed (ids as bytes: a damaged one need not be UTF-8)
_LIST_ROWS = """SELECT key, CAST(checkpoint_id AS BLOB), seq, step_number, record FROM cs_checkpoints
WHERE key BETWEEN ? AND ? ORDER BY key"""


def _session_keys(session: int) -> tuple[int, int]:
    """The first and last ``key`` a session's rows can have in cs_checkpoints."""
    return session * KEY_SPAN, session * KEY_SPAN + KEY_SPAN - 1


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (a no-op once it is), waiting up to the busy timeout for other connections.

    Connections that switch a file at the same moment can deadlock on its lock, and SQLite then refuses one
    at once ("database is locked") instead of calling its busy handler: that one tries again.
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


def _schema_of(conn: sqlite3.Connection) -> tuple[bool, Any]:
    """Whether the database has the version table, and the largest version it records."""
    if (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cs_schema_version'"
        ).fetchone()
        is None
    ):
        return False, None
    return True, conn.execute("SELECT max(version) FROM cs_schema_version").fetchone()[0]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _process_start(pid: int) -> str | None:
    """The start time of a process (Linux ``/proc``), to tell a live holder from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
        return stat_line[stat_line.rindex(b")") + 2 :].split()[19].decode()
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
#: what reading or opening a damaged file can raise: ``sqlite3``'s errors, an ``OverflowError`` from a
#: hostile row's key, and a ``UnicodeDecodeError`` from an error message quoting damaged schema text
_SQLITE_FAILURES = (sqlite3.Error, OverflowError, UnicodeDecodeError)
#: the extended code of a read-only connection that finds a hot journal it may not roll back
_SQLITE_READONLY_ROLLBACK = 776


def _database_error(exc: Exception, problem: str, where: str, path: Path) -> CheckpointError:
    """The ``CheckpointError`` for one of ``_SQLITE_FAILURES`` met while reading or opening the database
    file ``path``; the message names ``where`` and SQLite's reason.

    A file that is not a database, or a damaged one, is a ``CorruptCheckpointError``; refused access (a
    read-only or foreign file or directory) a ``CheckpointAccessError``; a directory where the file should
    be a ``CheckpointNotFoundError``.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    message = f"{problem}: {exc}"
    if primary in (_SQLITE_NOTADB, _SQLITE_CORRUPT) or isinstance(exc, (OverflowError, UnicodeDecodeError)):
        return CorruptCheckpointError(message, path=where)
    if primary == _SQLITE_CANTOPEN and os.path.isdir(path):
        return CheckpointNotFoundError(f"{problem}: {path} is a directory, not a database file", path=where)
    if code == _SQLITE_READONLY_ROLLBACK:
        return CheckpointError(
            f"{problem}: a writer died in the middle of a transaction in rollback-journal mode; open the "
            "store once for writing to roll it back",
            path=where,
        )
    if primary in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_AUTH, _SQLITE_CANTOPEN):
        return CheckpointAccessError(message, path=where)
    return CheckpointError(message, path=where)


class SqliteStore:
    """Many sessions in one SQLite file. Safe to share between threads; several processes may use the file.

    ``SqliteStore("checkpoints.db")`` or ``SqliteStore.from_url("sqlite:///checkpoints.db")`` (relative) /
    ``"sqlite:////abs/path/checkpoints.db"``. ``create=True`` (writers): the file and its schema are created
    on first use; ``create=False`` (readers): a missing file, or one without the schema, is
    ``CheckpointNotFoundError``, and nothing is ever created. Either way reading never writes.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        if "\0" in os.fspath(path):
            raise CheckpointNotFoundError(
                "not a usable database path (it holds a NUL character)", path=repr(os.fspath(path))
            )
        self.path = Path(path).expanduser().absolute()
        self.create = create
        self._url = f"sqlite:///{self.path.as_posix()}"
        self._lock = threading.RLock()
        self._reader: sqlite3.Connection | None = None  # read-only (mode=ro)
        self._writer: sqlite3.Connection | None = None  # read-write, opened by the first write
        self._pid = os.getpid()
        self._synchronous: Durability = "crash"

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> SqliteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise UnsupportedStoreError(
                f"not a SQLite store URL: {url!r} (expected sqlite:///relative.db or sqlite:////abs/path.db)"
            )
        path = url[len(prefix) :]
        if path == ":memory:" or path.startswith("file:"):
            raise UnsupportedStoreError(f"unsupported SQLite store URL {url!r}: give a database file path")
        return cls(path, create=create)

    @property
    def url(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"SqliteStore({self._url!r})"

    # -- connections and schema -------------------------------------------------------------------------
    def _forked(self) -> None:
        """In a forked child, forget the parent's connections (they must not be used, nor closed, here)."""
        if self._pid != os.getpid():
            self._reader = self._writer = None
            self._pid, self._synchronous = os.getpid(), "crash"

    def reader(self) -> sqlite3.Connection:
        """The store's read-only connection (opened on first use; the schema version checked)."""
        return self._connection("_reader", self._open_reader)

    def writer(self) -> sqlite3.Connection:
        """The store's read-write connection (opened by the first write; creates the file and schema if
        the store was opened with ``create=True``)."""
        return self._connection("_writer", self._open_writer)

    def _connection(
        self, attribute: str, open_connection: Callable[[], sqlite3.Connection]
    ) -> sqlite3.Connection:
        """This process's connection held in ``attribute``, opened by ``open_connection`` on first use."""
        conn: sqlite3.Connection | None = getattr(self, attribute)
        if conn is not None and self._pid == os.getpid():
            return conn
        with self._lock:
            self._forked()
            conn = getattr(self, attribute)
            if conn is None:
                conn = open_connection()
                setattr(self, attribute, conn)
            return conn

    def _exists(self) -> bool:
        """Whether the database file exists (a directory there is ``CheckpointNotFoundError``)."""
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise from_os_error(exc, "cannot open the SQLite store", self._url) from exc
        if stat.S_ISDIR(mode):
            raise CheckpointNotFoundError(
                f"cannot open the SQLite store: {self.path} is a directory, not a database file",
                path=self._url,
            )
        return True

    def _missing(self, what: str) -> CheckpointNotFoundError:
        return CheckpointNotFoundError(f"no checkpoint store here: {what}", path=self._url)

    def _connect(self, mode: str) -> sqlite3.Connection:
        """A connection to the file in ``mode`` (``ro``, ``rw`` or ``rwc``: may create the file)."""
        uri = f"file:{quote(self.path.as_posix(), safe='/')}?mode={mode}"
        try:
            return sqlite3.connect(
                uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _database_error(exc, "cannot open the SQLite store", self._url, self.path) from exc

    @contextlib.contextmanager
    def _closed_on_failure(self, conn: sqlite3.Connection) -> Iterator[None]:
        """Close ``conn`` if setting it up fails; an SQLite failure becomes a ``CheckpointError``."""
        try:
            yield
        except _SQLITE_FAILURES as exc:
            conn.close()
            raise _database_error(exc, "cannot open the SQLite store", self._url, self.path) from exc
        except BaseException:
            conn.close()
            raise

    def _open_reader(self) -> sqlite3.Connection:
        if not self._exists():
            if not self.create:
                raise self._missing("the database file does not exist")
            self.writer()  # creates the file and its schema
        conn = self._connect("ro")
        with self._closed_on_failure(conn):
            found, version = _schema_of(conn)
            if not found:
                if not self.create:
                    raise self._missing("the database has no checkpoint_system schema")
                self.writer()  # creates the schema
                found, version = _schema_of(conn)
            check_schema_version(version, SCHEMA_VERSION, where=self._url)
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        if not self._exists() and not self.create:  # (a directory at the path: CheckpointNotFoundError)
            raise self._missing("the database file does not exist")
        if self.create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise from_os_error(
                    exc, "cannot create the SQLite store's directory", self._url, writing=True
                ) from exc
        conn = self._connect("rwc" if self.create else "rw")
        with self._closed_on_failure(conn):
            conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # only takes effect in a new file
            found, version = _schema_of(conn)  # before anything is written: a foreign file stays as it is
            if found:
                check_schema_version(version, SCHEMA_VERSION, where=self._url)
            elif not self.create:
                raise self._missing("the database has no checkpoint_system schema")
            _enable_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            if not found:
                self._create_schema(conn)
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the schema in a database without one (unless another process just did)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            found, version = _schema_of(conn)
            if not found:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO cs_schema_version VALUES (?, ?, ?)",
                    (SCHEMA_VERSION, SCHEMA_DESCRIPTION, _now()),
                )
                version = SCHEMA_VERSION
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        check_schema_version(version, SCHEMA_VERSION, where=self._url)

    def schema_version(self) -> int:
        """The schema version of the database file."""
        with self._read(self._url) as conn:
            (version,) = conn.execute("SELECT max(version) FROM cs_schema_version").fetchone()
        return int(version)

    @contextlib.contextmanager
    def _read(self, where: str) -> Iterator[sqlite3.Connection]:
        """The read-only connection, under the store's lock; a ``sqlite3`` error (or an ``OverflowError``
        from a hostile row) becomes a ``CheckpointError`` naming ``where``."""
        with self._lock:
            try:
                yield self.reader()
            except _SQLITE_FAILURES as exc:
                raise _database_error(exc, "cannot read the SQLite store", where, self.path) from exc

    @contextlib.contextmanager
    def _transaction(self, where: str, durability: Durability = "crash") -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the writer connection (rolled back on any error).

        ``durability="fsync"`` commits with ``synchronous=FULL`` (the WAL is flushed to the device at every
        commit: survives power loss); ``"crash"`` with ``NORMAL`` (survives a killed process).
        """
        conn = self.writer()
        try:
            if durability != self._synchronous:
                conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'NORMAL'}")
                self._synchronous = durability
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

    @contextlib.contextmanager
    def _writing(self, where: str) -> Iterator[sqlite3.Connection]:
        """A write transaction under the store's lock (a ``sqlite3`` error: ``CheckpointSaveError``)."""
        with self._lock:
            try:
                with self._transaction(where) as conn:
                    yield conn
            except _SQLITE_FAILURES as exc:
                raise CheckpointSaveError(f"cannot write to the SQLite store: {exc}", path=where) from exc

    def close(self) -> None:
        """Close the connections (sessions opened from this store reconnect on their next use).

        The last connection to the file leaves it in rollback-journal mode: one plain file, the WAL folded
        in, that readers open without creating a ``-wal`` or ``-shm`` (when other connections are still
        open the file stays in WAL mode, and the last of them folds the WAL in as SQLite always does).
        """
        with self._lock:
            if self._pid == os.getpid():
                reader, writer = self._reader, self._writer
                self._reader = self._writer = None
                if reader is not None:
                    reader.close()
                if writer is not None:
                    with contextlib.suppress(sqlite3.Error):
                        writer.execute("PRAGMA busy_timeout=0")  # another connection open: leave it in WAL
                        writer.execute("PRAGMA journal_mode=DELETE")
                    writer.close()
            self._reader = self._writer = None
            self._synchronous = "crash"

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
        with self._read(self._url) as conn:
            rows = conn.execute(
                f"""SELECT session_id FROM cs_sessions s
                WHERE EXISTS (SELECT 1 FROM cs_checkpoints c
                              WHERE c.key BETWEEN s.id * {KEY_SPAN} AND s.id * {KEY_SPAN} + {KEY_SPAN - 1})
                   OR EXISTS (SELECT 1 FROM cs_documents d WHERE d.session = s.id)
                ORDER BY session_id"""
            ).fetchall()
        return [row[0] for row in rows]

    def delete_session(self, session_id: str, *, include_continuations: bool = False) -> None:
        """Remove a session's checkpoints, log and documents (``SessionLockedError`` if it has a writer).

        A session with continuations (``<id>/continuation_...``) is refused unless ``include_continuations``
        removes them too (deepest first).
        """
        delete_session_tree(
            self.list_sessions(), session_id, include_continuations, self._url, self._delete_one
        )

    def _delete_one(self, session_id: str) -> None:
        where = reference(self._url, session_id)
        with self._writing(where) as conn:
            holder = self._live_holder(conn, session_id, token=None)
            if holder is not None:
                raise SessionLockedError(f"cannot delete a session that has a writer ({holder})", path=where)
            row = conn.execute(_SESSION_KEY, (session_id,)).fetchone()
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
        with self._read(self._url) as conn:
            rows = conn.execute(
                """SELECT s.session_id FROM cs_checkpoints c JOIN cs_sessions s ON s.id = c.session
                WHERE c.checkpoint_id = ? ORDER BY s.session_id""",
                (checkpoint_id,),
            ).fetchall()
        if len(rows) != 1:
            problem = "no session holds" if not rows else f"{len(rows)} sessions hold"
            raise CheckpointNotFoundError(f"{problem} checkpoint {checkpoint_id!r}", path=self._url)
        return str(rows[0][0])

    def release_session_lock(self, session_id: str) -> bool:
        """Remove a session's writer lease whoever holds it (for a writer that died on another host).

        Returns whether there was one. The holder's next save then fails with ``SessionLockedError``.
        """
        with self._writing(reference(self._url, session_id)) as conn:
            deleted: int = conn.execute("DELETE FROM cs_writers WHERE session_id = ?", (session_id,)).rowcount
            return deleted > 0

    # -- helpers for sessions ---------------------------------------------------------------------------
    def _live_holder(self, conn: sqlite3.Connection, session_id: str, token: str | None) -> str | None:
        """A description of the session's writer unless it is ``token``, absent, or a dead local process
        (whose lease is removed: inside the caller's write transaction)."""
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


class SqliteSessionStore(DatabaseSession):
    """One session of a ``SqliteStore``. The first save takes the session's writer lease."""

    def __init__(self, store: SqliteStore, session_id: str, *, durability: Durability = "crash") -> None:
        super().__init__(store.url, session_id, durability=durability)
        self.store = store
        self._token: str | None = None  # the lease this writer holds (cs_writers.token)

    # -- writing ----------------------------------------------------------------------------------------
    def _forget_writer(self) -> None:
        super()._forget_writer()
        self._token = None

    def _acquire(self, conn: sqlite3.Connection) -> None:
        """Take the writer lease (inside the caller's transaction)."""
        holder = self.store._live_holder(conn, self._session_id, self._token)
        if holder is not None:
            raise self._held_by(
                holder, hint=" (use another session id, or SqliteStore.release_session_lock if it is gone)"
            )
        if self._token is None:
            token = secrets.token_hex(16)
            pid = os.getpid()
            conn.execute(
                "INSERT OR REPLACE INTO cs_writers VALUES (?, ?, ?, ?, ?, ?)",
                (self._session_id, token, _HOST, pid, _process_start(pid), _now()),
            )
            self._token = token

    def _created_key(self, conn: sqlite3.Connection) -> int:
        """The session's integer key (its ``cs_sessions`` row is created on the first write)."""
        conn.execute(
            "INSERT OR IGNORE INTO cs_sessions (session_id, created_at) VALUES (?, ?)",
            (self._session_id, _now()),
        )
        key: int = conn.execute(_SESSION_KEY, (self._session_id,)).fetchone()[0]
        return key

    def _open_log(self, conn: sqlite3.Connection) -> ChunkedLog:
        """The log state from the session's rows (inside the writer's transaction)."""
        self._key = self._created_key(conn)
        rows_of_session = _session_keys(self._key)
        rows = conn.execute(
            "SELECT seq, chunk FROM cs_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key", rows_of_session
        ).fetchall()
        latest = conn.execute(
            "SELECT record FROM cs_checkpoints WHERE key BETWEEN ? AND ? ORDER BY key DESC LIMIT 1",
            rows_of_session,
        ).fetchone()
        return self._rebuild_log(rows, latest[0] if latest else None)

    def save(self, data: CheckpointData, *, trusted_prefix: bool = False) -> str:
        """Store one checkpoint (its log chunk and record, one row); returns its id.

        Its step number must be above the session's latest (every ``CheckpointManager`` counts up).
        """
        where = reference(self._url, self._session_id, data.checkpoint_id)
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
                    self._forget_writer()
                    raise SessionLockedError(
                        "this writer lost the session's lease (released or taken over); nothing was written",
                        path=self._where,
                    )
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
        except CheckpointError as exc:  # e.g. the store cannot be opened, or its log is damaged
            raise self._save_error(exc, where)  # noqa: B904 (its cause is set)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CheckpointSaveError(f"could not write checkpoint: {exc}", path=where) from exc
        return log, prepared

    def write_document(self, name: str, value: Any) -> None:
        """(Re)write a session document in one transaction."""
        where = reference(self._url, self._session_id, check_document_name(name, where=self._where))
        try:
            payload = encode_document(name, value)
        except (TypeError, ValueError) as exc:
            raise CheckpointSaveError(f"could not encode document: {exc}", path=where) from exc
        with self.store._lock:
            try:
                with self.store._transaction(where, self.durability) as conn:
                    conn.execute(
                        "INSERT OR REPLACE INTO cs_documents VALUES (?, ?, ?, ?)",
                        (self._created_key(conn), name, payload, _now()),
                    )
            except _SQLITE_FAILURES as exc:
                raise CheckpointSaveError(f"could not write document: {exc}", path=where) from exc
            except CheckpointError as exc:
                raise self._save_error(exc, where)  # noqa: B904 (its cause is set)

    def close(self) -> None:
        """Release the writer lease (a later save takes it again)."""
        token = self._token
        self._forget_writer()
        if token is None:
            return
        with contextlib.suppress(sqlite3.Error, CheckpointError), self.store._lock:
            self.store.writer().execute(
                "DELETE FROM cs_writers WHERE session_id = ? AND token = ?", (self._session_id, token)
            )

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- reading ----------------------------------------------------------------------------------------
    def _session(self, conn: sqlite3.Connection, where: str) -> int | None:
        """The session's integer key, or None if it has never been written."""
        row = conn.execute(_SESSION_KEY, (self._session_id,)).fetchone()
        if row is None:
            return None
        key = row[0]
        if type(key) is not int or not 0 <= key < _MAX_SESSION_KEY:
            raise CorruptCheckpointError(f"invalid session key {str(key)[:40]!r}", path=where)
        return key

    def _rows(self, conn: sqlite3.Connection, newest: bool = False) -> list[tuple[Any, ...]]:
        """The session's rows in log order, as ``DatabaseSession._listed`` takes them (the newest only)."""
        session = self._session(conn, self._where)
        if session is None:
            return []
        sql = _LIST_ROWS + (" DESC LIMIT 1" if newest else "")
        rows = []
        for key, raw_id, seq, step_number, record in conn.execute(sql, _session_keys(session)):
            problem = None
            try:
                checkpoint_id = raw_id.decode("utf-8") if isinstance(raw_id, bytes) else raw_id
            except UnicodeDecodeError:
                checkpoint_id, problem = raw_id.decode("utf-8", errors="replace"), "its id is not UTF-8"
            if type(seq) is int and key != session * KEY_SPAN + seq:
                problem = f"its key {key} is not the one of log chunk {seq} of its session"
            rows.append((checkpoint_id, seq, step_number, record, problem))
        return rows

    def list_checkpoints(self) -> list[str]:
        with self.store._read(self._where) as conn:
            rows = self._rows(conn)
        return self._listed(rows)

    def next_step_number(self) -> int:
        with self.store._read(self._where) as conn:
            rows = self._rows(conn, newest=True)
        return self._newest_step(rows[0] if rows else None)

    def load(self, checkpoint_id: str) -> CheckpointData:
        checkpoint_id = str(checkpoint_id)
        where = reference(self._url, self._session_id, checkpoint_id)
        seqs = None
        with self.store._read(where) as conn:
            conn.execute("BEGIN")  # one snapshot for the record and its chunks
            try:
                session = self._session(conn, where)
                row = (
                    None
                    if session is None
                    else conn.execute(_LOAD_RECORD, (checkpoint_id, session)).fetchone()
                )
                if session is None or row is None:
                    raise CheckpointNotFoundError(
                        f"no checkpoint {checkpoint_id!r} in session {self._session_id!r}", path=where
                    )
                key, seq, raw = row
                if type(seq) is not int or not 0 <= seq < KEY_SPAN:
                    raise CorruptCheckpointError(f"invalid log chunk number {str(seq)[:40]!r}", path=where)
                first = session * KEY_SPAN
                if key != first + seq:
                    raise CorruptCheckpointError(
                        f"the row's key {key} is not the one of log chunk {seq} of its session", path=where
                    )
                chunks = [chunk for (chunk,) in conn.execute(_LOAD_CHUNKS, (first, key))]
                if len(chunks) != seq + 1:  # a gap: name the missing chunk
                    seqs = [number for (number,) in conn.execute(_CHUNK_SEQS, (first, first, key))]
            finally:
                conn.execute("COMMIT")

        def log_prefix() -> bytes:
            if seqs is not None:
                check_chunk_seqs(seqs, seq, where=where)  # raises: names the missing chunk
            return b"".join(chunks)

        return decode_stored(raw, seq, checkpoint_id, log_prefix, where=where)

    def read_document(self, name: str) -> Any:
        with self.store._read(self._where) as conn:
            session = self._session(conn, self._where)
            row = (
                None
                if session is None
                else conn.execute(
                    "SELECT value FROM cs_documents WHERE session = ? AND name = ?", (session, name)
                ).fetchone()
            )
        if row is None:
            return None
        return decode_document(name, row[0], where=reference(self._url, self._session_id, name))

    def list_documents(self) -> list[str]:
        """Names of the session's documents, sorted."""
        with self.store._read(self._where) as conn:
            session = self._session(conn, self._where)
            if session is None:
                return []
            rows = conn.execute(
                "SELECT name FROM cs_documents WHERE session = ? ORDER BY name", (session,)
            ).fetchall()
        return [row[0] for row in rows]


def _integrity_problem(exc: Exception) -> str:
    text = str(exc)
    if "checkpoint_id" in text:
        return f"a checkpoint with this id already exists; refusing to overwrite ({text})"
    return f"another writer added to this session's log; nothing was written ({text})"
