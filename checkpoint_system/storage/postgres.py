"""The PostgreSQL store (psycopg 3): sessions shared by several processes and machines.

``PostgresStore.from_url("postgresql://user@host:5432/db")`` (also ``postgres://``; a unix socket with
``?host=/path/to/socket/dir``). Install with ``pip install 'checkpoint-system[postgres]'``.

Tables: ``cs_sessions``, ``cs_log_chunks``, ``cs_checkpoints``, ``cs_documents`` and ``cs_schema_version``
(one schema, version 1; see ``SCHEMA``). A store opened with ``create=True`` (writers) creates the schema on
its first connection if the database has none, in one transaction under a transaction-level advisory lock so
that processes starting together do not race; ``create=False`` (readers) never creates it nor takes that
lock, and a database without the schema is ``CheckpointNotFoundError``. A database of another schema version
is refused (``UnsupportedFormatError``).

One writer per session: the first save takes a session-level advisory lock (``pg_try_advisory_lock`` on a
64-bit hash of the session id) on the session's own writer connection. The server releases it when that
connection ends, whether by ``close()`` or because the process died, so a crashed writer never leaves a
stale lock. A second writer gets ``SessionLockedError`` naming the holder's connection. The unique keys
``(session, seq)`` and ``(session, step_number)`` make an insert fail rather than interleave even if a
lock were lost, so two writers cannot corrupt a session. Readers take no lock and see committed checkpoints
of every session. A listing checks each row's record (integrity hash, id, log chunk, step number) and
leaves out, with a ``RuntimeWarning``, a row that does not verify; a load checks the record and the size
and sha256 of its log prefix.

Per checkpoint the writer sends one statement (log chunk and record inserted together by a data-modifying
CTE, in autocommit: one round trip, atomic), prepared once per writer connection and run through libpq
directly with binary parameters: psycopg's cursor layer would add about 50-80 µs of client time per
checkpoint, as much as the server spends on the insert. Loading a checkpoint is one query (the record and
its log chunks, one snapshot).

Durability: ``"crash"`` (default) writes with ``synchronous_commit = off``: a checkpoint survives the writer
process being killed (the server has it), a server crash may lose the last fraction of a second of
checkpoints (never a torn one). ``"fsync"`` waits for the server's WAL flush at every checkpoint.

The store's ``url`` never contains a password (it is put into references and metadata): give passwords
through ``PGPASSWORD`` or ``~/.pgpass``, or in the URL you open the store with.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from operator import itemgetter
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    SessionLockedError,
)
from ..model import CheckpointData
from .database import DatabaseSession, check_schema_version, delete_session_tree
from .protocol import Durability
from .records import (
    ChunkedLog,
    check_chunk_seqs,
    check_document_name,
    decode_document,
    decode_stored,
    encode_document,
    reference,
)

psycopg: Any
try:
    import psycopg
    import psycopg.errors
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None


class MissingDependencyError(CheckpointError, ImportError):
    """An optional dependency of a backend is not installed."""


SCHEMA_VERSION = 1
SCHEMA_DESCRIPTION = "sessions, log chunks, checkpoints, documents"
#: the statements that create the schema in a database without one (one transaction, with its version row)
SCHEMA: tuple[str, ...] = (
    """CREATE TABLE cs_schema_version (
        version integer PRIMARY KEY,
        description text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE cs_sessions (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE cs_log_chunks (
        session bigint NOT NULL,
        seq integer NOT NULL CHECK (seq >= 0),
        data bytea NOT NULL,
        PRIMARY KEY (session, seq)
    )""",
    """CREATE TABLE cs_checkpoints (
        session bigint NOT NULL,
        checkpoint_id text NOT NULL,
        step_number bigint NOT NULL CHECK (step_number >= 0),
        seq integer NOT NULL,
        context text NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (session, checkpoint_id),
        CONSTRAINT cs_checkpoints_step_unique UNIQUE (session, step_number)
    )""",
    "CREATE INDEX cs_checkpoints_by_id ON cs_checkpoints (checkpoint_id)",
    """CREATE TABLE cs_documents (
        session bigint NOT NULL,
        name text NOT NULL,
        value bytea NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (session, name)
    )""",
)
#: transaction-level advisory lock taken while creating the schema
_MIGRATION_LOCK = int.from_bytes(hashlib.sha256(b"checkpoint_system schema").digest()[:8], "big", signed=True)

#: the integer key of a session (``cs_sessions`` row created on first use); no row in a rare race with a
#: concurrent creator (the statement's snapshot predates its commit): the caller retries
_SESSION_KEY = """
WITH created AS (
    INSERT INTO cs_sessions (session_id) VALUES (%(session)s) ON CONFLICT (session_id) DO NOTHING RETURNING id
)
SELECT id FROM created UNION ALL SELECT id FROM cs_sessions WHERE session_id = %(session)s
"""
_KEY = "(SELECT id FROM cs_sessions WHERE session_id = %s)"
#: the per-checkpoint insert, prepared on each writer connection under ``_SAVE_NAME``; its parameters are
#: session key, seq, chunk, checkpoint id, step number, context, record (types ``_SAVE_TYPES``, binary)
_SAVE = b"""
WITH chunk AS (
    INSERT INTO cs_log_chunks (session, seq, data) VALUES ($1, $2, $3)
)
INSERT INTO cs_checkpoints (session, checkpoint_id, step_number, seq, context, record)
VALUES ($1, $4, $5, $2, $6, $7)
"""
_SAVE_NAME = b"cs_save_checkpoint"
_SAVE_TYPES = (20, 23, 17, 25, 20, 25, 17)  # bigint, integer, bytea, text, bigint, text, bytea (oids)
_SAVE_FORMATS = (1,) * len(_SAVE_TYPES)
#: SQLSTATE unique_violation
_UNIQUE_VIOLATION = b"23505"
_WRITE_DOCUMENT = """
WITH created AS (
    INSERT INTO cs_sessions (session_id) VALUES (%(session)s) ON CONFLICT (session_id) DO NOTHING RETURNING id
), session AS (
    SELECT id FROM created UNION ALL SELECT id FROM cs_sessions WHERE session_id = %(session)s LIMIT 1
)
INSERT INTO cs_documents (session, name, value) SELECT id, %(name)s, %(value)s FROM session
ON CONFLICT (session, name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
RETURNING 1
"""
#: a checkpoint's record (the row with seq -1) and its log chunks, in one statement (one snapshot); the
#: rows are sorted by the client (they arrive almost in order: cheaper than a server-side sort)
_LOAD = """
WITH c AS (
    SELECT session, seq, record FROM cs_checkpoints
    WHERE session = (SELECT id FROM cs_sessions WHERE session_id = %s) AND checkpoint_id = %s
)
SELECT -1, record, seq FROM c
UNION ALL
SELECT l.seq, l.data, NULL FROM cs_log_chunks l JOIN c ON l.session = c.session AND l.seq <= c.seq
"""
_LIST_SESSIONS = """
SELECT session_id FROM cs_sessions s
WHERE EXISTS (SELECT 1 FROM cs_checkpoints c WHERE c.session = s.id)
   OR EXISTS (SELECT 1 FROM cs_documents d WHERE d.session = s.id)
ORDER BY session_id
"""
_LOCK_HOLDER = """
SELECT a.pid, a.application_name, coalesce(a.client_hostname, host(a.client_addr), 'local socket'),
       a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = %s AND l.objid::bigint = %s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def _require_psycopg() -> Any:
    if psycopg is None:
        raise MissingDependencyError(
            "the PostgreSQL store needs psycopg 3: pip install 'checkpoint-system[postgres]' "
            "(or pip install 'psycopg[binary]>=3.1')"
        )
    return psycopg


def public_url(url: str) -> str:
    """``url`` without a password (in the user info or a ``password=`` query parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() == "password" for key, _ in pairs):
        query = urlencode([(k, v) for k, v in pairs if k.lower() != "password"], safe="/")
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def session_lock_key(session_id: str) -> int:
    """The 64-bit advisory lock key of a session."""
    digest = hashlib.sha256(b"checkpoint_system session\0" + session_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _application_name(role: str) -> str:
    return f"checkpoint_system {role} pid={os.getpid()} host={socket.gethostname()}"[:63]


class PostgresStore:
    """Sessions in a PostgreSQL database. One connection per store object (shared by its threads) for
    listing and reading; each session that writes has its own connection, which holds its writer lock."""

    def __init__(self, url: str, *, connect_timeout: int = 10, create: bool = True) -> None:
        _require_psycopg()
        if not url.startswith(("postgresql://", "postgres://")):
            raise CheckpointError(f"not a PostgreSQL store URL: {public_url(url)!r}")
        self._conninfo = url
        self._url = public_url(url)
        self.connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._schema_checked = False
        self.create = create

    @classmethod
    def from_url(cls, url: str, *, create: bool = True) -> PostgresStore:
        """``postgresql://[user[:password]@][host][:port]/database[?host=/socket/dir&...]``."""
        return cls(url, create=create)

    @property
    def url(self) -> str:
        """The store's URL without a password."""
        return self._url

    def __repr__(self) -> str:
        return f"PostgresStore({self._url!r})"

    # -- connections and schema -------------------------------------------------------------------------
    def connect(self, role: str = "reader") -> Any:
        """A new autocommit connection to the store's database (the schema checked on the first one)."""
        pg = _require_psycopg()
        try:
            conn = pg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name=_application_name(role),
            )
        except pg.Error as exc:
            raise CheckpointError(f"cannot connect to the PostgreSQL store: {exc}", path=self._url) from exc
        if not self._schema_checked:
            try:
                self._check_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._schema_checked = True
        return conn

    def connection(self) -> Any:
        """The store's shared connection (reconnects if it was closed or lost)."""
        with self._lock:
            if self._conn is not None and (self._conn.closed or self._pid != os.getpid()):
                self._conn = None
            if self._conn is None:
                self._conn = self.connect()
                self._pid = os.getpid()
            return self._conn

    def _check_schema(self, conn: Any) -> None:
        """Check the schema version; create the schema in a database without one (``create=True``).

        A store opened with ``create=False`` (a reader) never creates it nor takes the schema lock: a
        database without the schema is ``CheckpointNotFoundError``.
        """
        pg = _require_psycopg()
        try:
            try:  # one round trip for an up-to-date database (autocommit: a failure leaves no state)
                found, version = (
                    True,
                    conn.execute("SELECT max(version) FROM cs_schema_version").fetchone()[0],
                )
            except pg.errors.UndefinedTable:
                found, version = False, None
            if not found:
                if not self.create:
                    raise CheckpointNotFoundError(
                        "no checkpoint store here: the database has no checkpoint_system schema",
                        path=self._url,
                    )
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    exists = conn.execute("SELECT to_regclass('cs_schema_version') IS NOT NULL").fetchone()[0]
                    if not exists:  # (another process may have created it meanwhile)
                        for statement in SCHEMA:
                            conn.execute(statement)
                        conn.execute(
                            "INSERT INTO cs_schema_version (version, description) VALUES (%s, %s)",
                            (SCHEMA_VERSION, SCHEMA_DESCRIPTION),
                        )
                    version = conn.execute("SELECT max(version) FROM cs_schema_version").fetchone()[0]
        except pg.Error as exc:
            raise CheckpointError(
                f"cannot create or check the checkpoint schema: {exc}", path=self._url
            ) from exc
        check_schema_version(version, SCHEMA_VERSION, where=self._url)

    def schema_version(self) -> int:
        """The database's schema version."""
        return int(self._query("SELECT max(version) FROM cs_schema_version", (), self._url)[0][0])

    def _query(self, sql: str, params: Any, where: str) -> list[Any]:
        """Rows of one statement on the shared connection (a lost connection is reopened next time)."""
        pg = _require_psycopg()
        with self._lock:
            conn = self.connection()
            try:
                rows: list[Any] = conn.execute(sql, params, binary=True).fetchall()
                return rows
            except pg.OperationalError as exc:
                self._drop()
                raise CheckpointError(f"PostgreSQL store unavailable: {exc}", path=where) from exc
            except pg.Error as exc:
                raise CheckpointError(f"cannot read the PostgreSQL store: {exc}", path=where) from exc

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Close the shared connection (sessions that write keep their own until they are closed)."""
        with self._lock:
            if self._pid == os.getpid():
                self._drop()
            self._conn = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def lock_holder(self, conn: Any, session_id: str) -> str:
        """Who holds a session's writer lock (for error messages)."""
        key = session_lock_key(session_id) & 0xFFFFFFFFFFFFFFFF
        with contextlib.suppress(Exception):
            row = conn.execute(_LOCK_HOLDER, (key >> 32, key & 0xFFFFFFFF)).fetchone()
            if row is not None:
                pid, name, client, since = row
                return f"{name or 'a connection'} (server pid {pid}, from {client}, since {since})"
        return "another connection"

    # -- the CheckpointStore protocol -------------------------------------------------------------------
    def open_session(self, session_id: str, *, durability: Durability = "crash") -> PostgresSessionStore:
        return PostgresSessionStore(self, session_id, durability=durability)

    def list_sessions(self) -> list[str]:
        return [row[0] for row in self._query(_LIST_SESSIONS, (), self._url)]

    def delete_session(self, session_id: str, *, include_continuations: bool = False) -> None:
        """Remove a session's checkpoints, log and documents (``SessionLockedError`` if it has a writer).

        A session with continuations (``<id>/continuation_...``) is refused unless ``include_continuations``
        removes them too (deepest first).
        """
        delete_session_tree(
            self.list_sessions(), session_id, include_continuations, self._url, self._delete_one
        )

    def _delete_one(self, session_id: str) -> None:
        pg = _require_psycopg()
        where = reference(self._url, session_id)
        key = session_lock_key(session_id)
        with self._lock:
            conn = self.connection()
            try:
                if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                    raise SessionLockedError(
                        f"cannot delete a session that has a writer: {self.lock_holder(conn, session_id)}",
                        path=where,
                    )
                try:
                    with conn.transaction():
                        deleted = 0
                        for table in ("cs_checkpoints", "cs_documents", "cs_log_chunks"):
                            cursor = conn.execute(
                                f"DELETE FROM {table} WHERE session = {_KEY}", (session_id,)
                            )
                            if table != "cs_log_chunks":
                                deleted += cursor.rowcount
                        if not deleted:
                            raise CheckpointNotFoundError(f"no session {session_id!r}", path=where)
                        conn.execute("DELETE FROM cs_sessions WHERE session_id = %s", (session_id,))
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except pg.OperationalError as exc:
                self._drop()
                raise CheckpointError(f"PostgreSQL store unavailable: {exc}", path=where) from exc
            except pg.Error as exc:
                raise CheckpointError(f"could not delete the session: {exc}", path=where) from exc

    def find_checkpoint(self, checkpoint_id: str) -> str:
        rows = self._query(
            """SELECT s.session_id FROM cs_checkpoints c JOIN cs_sessions s ON s.id = c.session
               WHERE c.checkpoint_id = %s ORDER BY s.session_id""",
            (checkpoint_id,),
            self._url,
        )
        if len(rows) != 1:
            problem = "no session holds" if not rows else f"{len(rows)} sessions hold"
            raise CheckpointNotFoundError(f"{problem} checkpoint {checkpoint_id!r}", path=self._url)
        return str(rows[0][0])


class PostgresSessionStore(DatabaseSession):
    """One session of a ``PostgresStore``. The first save opens its writer connection and takes the lock."""

    def __init__(self, store: PostgresStore, session_id: str, *, durability: Durability = "crash") -> None:
        super().__init__(store.url, session_id, durability=durability)
        self.store = store
        self._mutex = threading.RLock()
        self._writer: Any = None  # the writer connection: it holds the session's advisory lock

    # -- writing ----------------------------------------------------------------------------------------
    def _open_writer(self) -> tuple[Any, ChunkedLog]:
        """The writer connection holding the session lock, and the log state (rebuilt from the chunks)."""
        pg = _require_psycopg()
        if self._writer is not None and self._writer.closed:
            self._drop_writer()
        if self._writer is None:
            conn = self.store.connect("writer")
            try:
                if not conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (session_lock_key(self._session_id),)
                ).fetchone()[0]:
                    raise self._held_by(self.store.lock_holder(conn, self._session_id))
                if self.durability == "crash":
                    conn.execute("SET synchronous_commit = off")
                prepared = conn.pgconn.prepare(_SAVE_NAME, _SAVE, _SAVE_TYPES)
                if prepared.status != pg.pq.ExecStatus.COMMAND_OK:
                    raise CheckpointSaveError(
                        f"cannot prepare the checkpoint insert: {_error_text(prepared)}", path=self._where
                    )
            except BaseException:
                conn.close()
                raise
            self._writer, self._log = conn, None
        if self._log is None:
            try:
                self._key = self._session_key(self._writer)
                rows = self._writer.execute(
                    "SELECT seq, data FROM cs_log_chunks WHERE session = %s ORDER BY seq",
                    (self._key,),
                    binary=True,
                ).fetchall()
                latest = self._writer.execute(
                    "SELECT record FROM cs_checkpoints WHERE session = %s ORDER BY seq DESC LIMIT 1",
                    (self._key,),
                    binary=True,
                ).fetchone()
            except pg.Error as exc:
                self._drop_writer()
                raise CheckpointSaveError(f"cannot read the session log: {exc}", path=self._where) from exc
            self._rebuild_log(rows, latest[0] if latest else None)
        assert self._log is not None
        return self._writer, self._log

    def _session_key(self, conn: Any) -> int:
        for _ in range(3):
            row = conn.execute(_SESSION_KEY, {"session": self._session_id}).fetchone()
            if row is not None:
                return int(row[0])
        raise CheckpointSaveError("could not create the session row", path=self._where)  # pragma: no cover

    def _drop_writer(self, *, unlock: bool = False) -> None:
        conn, self._writer = self._writer, None
        self._forget_writer()
        if conn is not None:
            with contextlib.suppress(Exception):
                if unlock and not conn.closed:  # at once, not when the server notices the closed socket
                    conn.execute("SELECT pg_advisory_unlock(%s)", (session_lock_key(self._session_id),))
            with contextlib.suppress(Exception):
                conn.close()  # ends the server session: the advisory lock is released

    def save(self, data: CheckpointData, *, trusted_prefix: bool = False) -> str:
        """Store one checkpoint (its log chunk and record in one statement); returns its id."""
        pg = _require_psycopg()
        where = reference(self.store.url, self._session_id, data.checkpoint_id)
        if data.step_number < 0:
            raise CheckpointSaveError(f"step_number must be >= 0, got {data.step_number}", path=where)
        with self._mutex:
            try:
                conn, log = self._open_writer()
            except CheckpointError as exc:  # e.g. the server cannot be reached, or the log is damaged
                raise self._save_error(exc, where)  # noqa: B904 (its cause is set)
            try:
                prepared = log.prepare(data, trusted_prefix=trusted_prefix)
            except (TypeError, ValueError, OverflowError) as exc:
                raise CheckpointSaveError(f"could not encode checkpoint: {exc}", path=where) from exc
            assert self._key is not None
            encoding = conn.info.encoding
            try:
                params = (
                    self._key.to_bytes(8, "big", signed=True),
                    prepared.seq.to_bytes(4, "big", signed=True),
                    prepared.chunk,
                    data.checkpoint_id.encode(encoding),
                    data.step_number.to_bytes(8, "big", signed=True),
                    data.context.encode(encoding),
                    prepared.record_bytes,
                )
            except (OverflowError, UnicodeError) as exc:
                raise CheckpointSaveError(f"could not write checkpoint: {exc}", path=where) from exc
            try:
                result = conn.pgconn.exec_prepared(_SAVE_NAME, params, _SAVE_FORMATS)
            except pg.OperationalError as exc:  # libpq could not even send the query
                self._drop_writer()
                raise CheckpointSaveError(f"PostgreSQL store unavailable: {exc}", path=where) from exc
            if result.status != pg.pq.ExecStatus.COMMAND_OK:
                raise self._save_failed(result, where)
            log.adopt(prepared)
        return data.checkpoint_id

    def _save_failed(self, result: Any, where: str) -> CheckpointSaveError:
        """The error for a failed insert; a lost connection is dropped, else the log is re-read next time."""
        text = _error_text(result)
        if self._writer is None or self._writer.closed:
            self._drop_writer()
            return CheckpointSaveError(f"PostgreSQL store unavailable: {text}", path=where)
        self._log = None  # re-read the log before the next save: another writer may have added to it
        if result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == _UNIQUE_VIOLATION:
            constraint = result.error_field(psycopg.pq.DiagnosticField.CONSTRAINT_NAME) or b""
            return CheckpointSaveError(_unique_problem(constraint.decode(errors="replace"), text), path=where)
        return CheckpointSaveError(f"could not write checkpoint: {text}", path=where)

    def write_document(self, name: str, value: Any) -> None:
        """(Re)write a session document (one statement; no writer lock needed)."""
        pg = _require_psycopg()
        where = reference(self.store.url, self._session_id, check_document_name(name, where=self._where))
        try:
            payload = encode_document(name, value)
        except (TypeError, ValueError) as exc:
            raise CheckpointSaveError(f"could not encode document: {exc}", path=where) from exc
        params = {"session": self._session_id, "name": name, "value": payload}
        for _ in range(3):  # no row written: lost a race creating the session row, try again
            with self._mutex:
                if self._writer is not None and not self._writer.closed:
                    try:
                        if self._writer.execute(_WRITE_DOCUMENT, params, prepare=True).fetchall():
                            return
                        continue
                    except pg.OperationalError as exc:
                        self._drop_writer()
                        raise CheckpointSaveError(f"PostgreSQL store unavailable: {exc}", path=where) from exc
                    except pg.Error as exc:
                        raise CheckpointSaveError(f"could not write document: {exc}", path=where) from exc
            try:
                if self.store._query(_WRITE_DOCUMENT, params, where):
                    return
            except CheckpointError as exc:
                raise CheckpointSaveError(exc.reason, path=where) from exc
        raise CheckpointSaveError("could not write document: the session row vanished", path=where)

    def close(self) -> None:
        """Close the writer connection, releasing the session lock (a later save takes it again)."""
        with self._mutex:
            self._drop_writer(unlock=True)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._drop_writer()

    # -- reading ----------------------------------------------------------------------------------------
    def _rows(self, newest: bool = False) -> list[tuple[Any, ...]]:
        """The session's rows in step order, as ``DatabaseSession._listed`` takes them (the newest only)."""
        rows = self.store._query(
            f"""SELECT checkpoint_id, seq, step_number, record FROM cs_checkpoints WHERE session = {_KEY}
            ORDER BY step_number{" DESC LIMIT 1" if newest else ""}""",
            (self._session_id,),
            self._where,
        )
        return [(*row, None) for row in rows]

    def list_checkpoints(self) -> list[str]:
        return self._listed(self._rows())

    def next_step_number(self) -> int:
        rows = self._rows(newest=True)
        return self._newest_step(rows[0] if rows else None)

    def load(self, checkpoint_id: str) -> CheckpointData:
        where = reference(self.store.url, self._session_id, str(checkpoint_id))
        rows = self.store._query(_LOAD, (self._session_id, str(checkpoint_id)), where)
        if not rows:
            raise CheckpointNotFoundError(
                f"no checkpoint {checkpoint_id!r} in session {self._session_id!r}", path=where
            )
        rows.sort(key=itemgetter(0))
        _, raw, seq = rows[0]
        return decode_stored(raw, seq, str(checkpoint_id), lambda: _log_prefix(rows, seq, where), where=where)

    def read_document(self, name: str) -> Any:
        rows = self.store._query(
            f"SELECT value FROM cs_documents WHERE session = {_KEY} AND name = %s",
            (self._session_id, name),
            self._where,
        )
        if not rows:
            return None
        return decode_document(name, rows[0][0], where=reference(self.store.url, self._session_id, name))

    def list_documents(self) -> list[str]:
        """Names of the session's documents, sorted."""
        rows = self.store._query(
            f"SELECT name FROM cs_documents WHERE session = {_KEY} ORDER BY name",
            (self._session_id,),
            self._where,
        )
        return [row[0] for row in rows]


def _log_prefix(rows: list[Any], last_seq: int, where: str) -> bytes:
    """The log prefix from the sorted load rows (the record row first, then chunks ``0..last_seq``).

    ``(session, seq)`` is unique and ``seq >= 0``, so ``last_seq + 1`` chunks with ``seq <= last_seq`` are
    exactly chunks ``0..last_seq``; otherwise ``check_chunk_seqs`` names the missing one.
    """
    if len(rows) != last_seq + 2:
        check_chunk_seqs((row[0] for row in rows[1:]), last_seq, where=where)
    return b"".join([row[1] for row in rows[1:]])


def _error_text(result: Any) -> str:
    """The server's message of a failed libpq result."""
    message = result.error_field(psycopg.pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
    return bytes(message or b"unknown error").decode(errors="replace").strip()


def _unique_problem(constraint: str, text: str) -> str:
    if "step" in constraint:
        return f"a checkpoint with this step number already exists in the session ({constraint})"
    if constraint.startswith("cs_checkpoints_pkey"):
        return "a checkpoint with this id already exists; refusing to overwrite"
    return f"another writer added to this session's log; nothing was written ({constraint or text})"
