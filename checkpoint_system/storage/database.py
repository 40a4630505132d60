"""What the SQLite and PostgreSQL stores share, apart from SQL.

* ``check_schema_version``: one schema per backend; an unreleased draft schema or a newer one is refused.
* ``DatabaseSession``: the database-independent half of a session store: its id and references, the
  writer's log state and how it is forgotten, the error of a session held by another writer, and the rows
  it lists, each one's record checked first (a row whose record does not verify is left out, with a
  warning naming it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import (
    CheckpointError,
    CheckpointSaveError,
    CorruptCheckpointError,
    SessionLockedError,
    UnsupportedFormatError,
)
from .protocol import Durability
from .records import ChunkedLog, check_session_id, chunk_seq, open_record, reading, reference


def check_schema_version(found: Any, supported: int, *, where: str) -> None:
    """Refuse a database whose schema is not ``supported`` (``found``: the largest version it records).

    The project keeps one schema per backend: an older version is a draft of an unreleased library, a
    newer one was written by a newer library; neither is read nor written.
    """
    if type(found) is not int or found < 1:
        raise CorruptCheckpointError(f"invalid schema version {str(found)[:40]!r} in the store", path=where)
    if found > supported:
        raise UnsupportedFormatError(
            f"database schema version {found} is newer than this library supports ({supported}); upgrade "
            "checkpoint_system to use this store",
            path=where,
        )
    if found < supported:
        raise UnsupportedFormatError(
            f"database schema version {found} is an unreleased draft schema of checkpoint_system; this "
            f"library reads and writes only schema {supported} (the file was made by a development "
            "version: start a new store)",
            path=where,
        )


def row_problem(checkpoint_id: Any, seq: Any, step_number: Any, raw: Any, *, where: str) -> str | None:
    """Why a checkpoint row must not be listed, or None: its record must verify (integrity hash) and name
    the row's checkpoint id, log chunk and step number (a row moved, copied or edited does not)."""
    if not isinstance(checkpoint_id, str):
        return f"its checkpoint id is not text ({type(checkpoint_id).__name__})"
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        return f"its record is not bytes but {type(raw).__name__}"
    if type(seq) is not int or seq < 0:
        return f"invalid log chunk number {str(seq)[:40]!r}"
    try:
        with reading(where):  # whatever a hostile record makes Python raise: a CheckpointError
            record = open_record(bytes(raw), where=where)
            chunk_seq(record, seq, checkpoint_id, where=where)
    except CheckpointError as exc:
        return exc.reason
    if record.get("step_number") != step_number or type(step_number) is not int:
        return f"its step number {str(step_number)[:40]} is not the record's"
    return None


class DatabaseSession:
    """The half of a database session store that is the same in SQLite and PostgreSQL.

    A session writes through one writer (a lease or lock taken by its first save); ``_log`` is the writer's
    view of the session log (``None``: read it again before the next save) and ``_key`` the session's
    integer key while the writer holds its lease.
    """

    def __init__(self, url: str, session_id: str, *, durability: Durability = "crash") -> None:
        if durability not in ("crash", "fsync"):
            raise ValueError(f"durability must be 'crash' or 'fsync', not {durability!r}")
        self._url = url
        self._session_id = check_session_id(session_id, where=reference(url, str(session_id)))
        self.durability: Durability = durability
        self._where = reference(url, session_id)
        self._log: ChunkedLog | None = None
        self._key: int | None = None

    @property
    def session_id(self) -> str:
        return self._session_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r})"

    def locate(self, checkpoint_id: str) -> str:
        return reference(self._url, self._session_id, checkpoint_id)

    def start_from(self, checkpoint_id: str) -> bool:
        """Continuations in a database store copy their parent's state at their first save (False)."""
        return False

    def flush(self) -> None:
        """Nothing to wait for: a save returns once its transaction committed."""

    def _forget_writer(self) -> None:
        """Forget the writer's log state (the backend also lets go of its lease or lock)."""
        self._log = None
        self._key = None

    def _held_by(self, holder: str, *, hint: str = "") -> SessionLockedError:
        """The error of a save while ``holder`` writes the session (this writer's state forgotten)."""
        self._forget_writer()
        return SessionLockedError(
            f"session {self._session_id!r} is being written by {holder}; one writer per session{hint}",
            path=self._where,
        )

    @staticmethod
    def _save_error(exc: CheckpointError, where: str) -> CheckpointSaveError:
        """A failure of a save as the ``CheckpointSaveError`` the protocol promises (same message; a
        ``CheckpointSaveError`` itself, e.g. ``SessionLockedError``, stays as it is)."""
        if isinstance(exc, CheckpointSaveError):
            return exc
        error = CheckpointSaveError(exc.reason, path=exc.path or where)
        error.__cause__ = exc
        return error

    def _rebuild_log(self, rows: Iterable[tuple[int, bytes]], latest: bytes | None) -> ChunkedLog:
        """The writer's log state from the session's chunks (in order) and its newest record."""
        self._log = ChunkedLog.rebuild(rows, latest, where=self._where)
        return self._log

    def _listed(self, rows: Iterable[tuple[Any, Any, Any, Any, str | None]]) -> list[str]:
        """The ids of the rows whose records verify, in order.

        ``rows``: ``(checkpoint_id, seq, step_number, record, problem)``, ``problem`` being what the backend
        itself found wrong with the row (or None). A row that does not verify is left out with a
        ``RuntimeWarning`` naming ``<url>#<session>/<id>``: a listing never offers a checkpoint whose record
        a load would refuse.
        """
        ids = []
        for checkpoint_id, seq, step_number, raw, problem in rows:
            where = self.locate(str(checkpoint_id))
            problem = problem or row_problem(checkpoint_id, seq, step_number, raw, where=where)
            if problem is None:
                ids.append(checkpoint_id)
            else:
                warnings.warn(
                    f"{where}: not listed, its row is damaged ({problem})", RuntimeWarning, stacklevel=3
                )
        return ids

    def _newest_step(self, row: tuple[Any, Any, Any, Any, str | None] | None) -> int:
        """One past the step number of the newest row (``CorruptCheckpointError`` if it does not verify)."""
        if row is None:
            return 0
        checkpoint_id, seq, step_number, raw, problem = row
        where = self.locate(str(checkpoint_id))
        problem = problem or row_problem(checkpoint_id, seq, step_number, raw, where=where)
        if problem is not None:
            raise CorruptCheckpointError(
                f"the session's newest checkpoint does not verify: {problem}", path=where
            )
        return int(step_number) + 1


def _refuse_dependents(sessions: Iterable[str], session_id: str, include: bool, url: str) -> list[str]:
    """The continuations of ``session_id`` among ``sessions``; a ``CheckpointError`` naming them unless
    ``include`` (deleting a parent would leave them without the checkpoints they read)."""
    dependents = [s for s in sessions if s.startswith(f"{session_id}/")]
    if dependents and not include:
        raise CheckpointError(
            f"session {session_id!r} has {len(dependents)} continuation(s) that depend on it "
            f"({', '.join(dependents[:3])}{', ...' if len(dependents) > 3 else ''}); pass "
            "include_continuations=True to delete them too",
            path=reference(url, session_id),
        )
    return dependents


def delete_session_tree(
    sessions: Iterable[str],
    session_id: str,
    include_continuations: bool,
    url: str,
    delete_one: Callable[[str], None],
) -> None:
    """Delete ``session_id`` with ``delete_one``; its continuations (deepest first) only when
    ``include_continuations``, else a ``CheckpointError`` naming them."""
    dependents = _refuse_dependents(sessions, session_id, include_continuations, url)
    for dependent in sorted(dependents, key=lambda s: -s.count("/")):
        delete_one(dependent)
    delete_one(session_id)
