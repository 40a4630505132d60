"""Behaviour of the database stores' fast paths that the shared conformance suite does not reach.

SQLite: a save is one transaction that checks the writer lease (a lost lease writes nothing and raises
``SessionLockedError``) and the step number (above the session's latest), then inserts one row holding the
record and the log chunk (a refused save leaves nothing behind), a failed first save does not leave the
writer believing it holds the lease that was rolled back with it, opening an up-to-date file takes no write
lock, several stores opening a new file at once all get it in WAL mode, SQLite's own checkpoint keeps the
WAL bounded, and a file of a draft schema (1 or 2) is refused and left as it was.
PostgreSQL: the checkpoint insert runs through libpq directly, so its failures (a lost connection, a value
the server rejects) must still come back as ``CheckpointSaveError`` and leave the session usable.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import postgres_server, postgres_url  # noqa: F401  (fixtures)
from test_conformance import SyntheticChat, fill, same

from checkpoint_system.errors import (
    CheckpointSaveError,
    CorruptCheckpointError,
    SessionLockedError,
    UnsupportedFormatError,
)
from checkpoint_system.storage import SqliteStore, load_reference, open_store
from checkpoint_system.storage.sqlite import SqliteSessionStore

# -- SQLite -------------------------------------------------------------------------------------------------


def _rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _saved_session(
    path: Path, session_id: str, count: int
) -> tuple[SqliteStore, SqliteSessionStore, SyntheticChat, dict[str, Any]]:
    """A store at ``path`` whose session ``session_id`` holds ``count`` checkpoints of a synthetic chat."""
    store = SqliteStore(path)
    chat = SyntheticChat(session_id)
    session = store.open_session(session_id)
    return store, session, chat, fill(session, count, chat=chat)


def _stored_rows(path: Path) -> object:
    """Checkpoint rows in the database file (each holds its record and its log chunk)."""
    return _rows(path, "SELECT count(*) FROM cs_checkpoints")[0][0]


def test_sqlite_writer_that_lost_its_lease_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lease.db"
    store, session, chat, saved = _saved_session(path, "lease", 3)
    assert SqliteStore(path).release_session_lock("lease")  # e.g. an operator freeing a "dead" writer
    chat.say(3)
    with pytest.raises(SessionLockedError, match="lost the session's lease"):
        session.save(chat.checkpoint(3), trusted_prefix=True)
    assert _stored_rows(path) == 3  # nothing was written
    # the lease is free again: the next save takes it, rebuilds the log state and continues
    saved[session.save(chat.checkpoint(3), trusted_prefix=True)] = chat.checkpoint(3)
    saved |= fill(session, 2, start=4, chat=chat)
    reader = SqliteStore(path).open_session("lease")
    assert reader.list_checkpoints() == list(saved)
    for checkpoint_id, data in saved.items():
        same(reader.load(checkpoint_id), data)
    session.close()
    store.close()


def test_sqlite_refused_save_writes_nothing(tmp_path: Path) -> None:
    """A save refused by the id index (after the lease and step checks passed) leaves no row behind."""
    path = tmp_path / "atomic.db"
    store, session, chat, saved = _saved_session(path, "atomic", 3)
    chat.say(3)
    clash = chat.checkpoint(3).model_copy(update={"checkpoint_id": list(saved)[1]})  # a new step, a used id
    with pytest.raises(CheckpointSaveError, match="already exists"):
        session.save(clash, trusted_prefix=True)
    assert _stored_rows(path) == 3
    saved[session.save(chat.checkpoint(3), trusted_prefix=True)] = chat.checkpoint(3)
    for checkpoint_id, data in saved.items():
        same(SqliteStore(path).open_session("atomic").load(checkpoint_id), data)
    store.close()


def test_sqlite_step_numbers_increase_within_a_session(tmp_path: Path) -> None:
    """A step number at or below the session's latest is refused (the newest row holds the highest step)."""
    path = tmp_path / "steps.db"
    store, session, chat, saved = _saved_session(path, "steps", 2)  # steps 0 and 1
    chat.say(2)
    saved[session.save(chat.checkpoint(5), trusted_prefix=True)] = chat.checkpoint(5)  # a gap is fine
    chat.say(3)
    for step in (3, 5):  # free but below the latest, and taken
        with pytest.raises(CheckpointSaveError, match="step numbers increase within a session"):
            session.save(chat.checkpoint(step), trusted_prefix=True)
    assert _stored_rows(path) == 3
    saved[session.save(chat.checkpoint(6), trusted_prefix=True)] = chat.checkpoint(6)  # still usable
    reader = SqliteStore(path).open_session("steps")
    assert reader.list_checkpoints() == list(saved) and reader.next_step_number() == 7
    for checkpoint_id, data in saved.items():
        same(reader.load(checkpoint_id), data)
    session.close()
    store.close()


def test_sqlite_writer_whose_lease_was_taken_over_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "taken.db"
    store, session, chat, _ = _saved_session(path, "taken", 2)
    _rows(  # another live writer (this very process, so it counts as alive) now holds the lease
        path,
        "UPDATE cs_writers SET token = 'someone else', pid = ? WHERE session_id = 'taken'",
        (os.getpid(),),
    )
    chat.say(2)
    for _ in range(2):
        with pytest.raises(SessionLockedError):
            session.save(chat.checkpoint(2), trusted_prefix=True)
    assert _stored_rows(path) == 2
    store.close()


def test_sqlite_failed_first_save_does_not_keep_a_phantom_lease(tmp_path: Path) -> None:
    """The first save takes the lease in its own transaction; if that save fails, the lease went with it."""
    path = tmp_path / "phantom.db"
    chat = SyntheticChat("phantom")
    first = SqliteStore(path).open_session("phantom")
    saved = fill(first, 2, chat=chat)
    first.close()
    second = SqliteStore(path).open_session("phantom")
    with pytest.raises(CheckpointSaveError, match="already exists"):
        second.save(saved[list(saved)[-1]], trusted_prefix=True)  # a duplicate: rolled back, lease too
    assert _rows(path, "SELECT count(*) FROM cs_writers")[0][0] == 0
    saved |= fill(second, 2, start=2, chat=chat)  # takes the lease afresh instead of "losing" it
    reader = SqliteStore(path).open_session("phantom")
    for checkpoint_id, data in saved.items():
        same(reader.load(checkpoint_id), data)
    second.close()


def test_sqlite_opening_an_up_to_date_file_takes_no_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    writer = SqliteStore(path)
    saved = fill(writer.open_session("busy"), 3)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write transaction
    loaded: list[object] = []

    def read() -> None:
        reader = SqliteStore(path)
        loaded.append(reader.open_session("busy").load(list(saved)[-1]))
        reader.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(10)
    holder.execute("ROLLBACK")
    holder.close()
    assert not thread.is_alive(), "opening the store waited for the write lock"
    assert len(loaded) == 1
    writer.close()


def test_sqlite_new_file_opened_by_several_stores_at_once(tmp_path: Path) -> None:
    """Connections switching a new file to WAL at once can deadlock; SQLite refuses one, which retries."""
    for attempt in range(60):  # the race is narrow: before the fix about 1 round in 50 failed
        path = tmp_path / f"new_{attempt}.db"
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def open_it(
            path: Path = path, start: threading.Barrier = start, errors: list[BaseException] = errors
        ) -> None:
            store = SqliteStore(path)
            start.wait()
            try:
                assert store.list_sessions() == []
                assert store.writer().execute("PRAGMA journal_mode").fetchone() == ("wal",)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                store.close()

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == [], f"round {attempt}: {errors[0]!r}"


def test_sqlite_wal_is_bounded_by_sqlites_own_checkpoint(tmp_path: Path) -> None:
    """No thread of ours: SQLite's automatic checkpoint (1,000 pages) folds the WAL into the database file
    and the writer restarts it, so the WAL never grows with the session; closing the store removes it."""
    path = tmp_path / "wal.db"
    store = SqliteStore(path)
    session = store.open_session("wal")
    chat = SyntheticChat("wal")
    wal = Path(f"{path}-wal")
    largest = 0
    for step in range(500):  # about 4.4 pages per commit: 2,200 pages without a checkpoint
        chat.say(step)
        chat.messages[-1]["content"] += "x" * 4000  # (the histories hold the same message)
        session.save(chat.checkpoint(step), trusted_prefix=True)
        largest = max(largest, wal.stat().st_size)
    assert threading.active_count() == 1  # only the test's own thread
    assert largest < 1100 * 4096  # one autocheckpoint's worth of 4 KiB pages (plus a commit), not 500 saves
    assert path.stat().st_size > 1500 * 1024  # the checkpoints reached the database file
    reader = SqliteStore(path).open_session("wal")
    same(reader.load(session.list_checkpoints()[-1]), chat.checkpoint(499))
    reader.store.close()
    session.close()
    store.close()
    assert not wal.exists()


# -- both databases -----------------------------------------------------------------------------------------


def _database(url: str, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Rows of one statement run on the database behind a SQLite or PostgreSQL store URL."""
    if url.startswith("sqlite:///"):
        return _rows(Path(url[len("sqlite:///") :]), sql, params)
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_row_whose_record_does_not_verify_is_not_listed(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A listing checks every row's record: a changed one, or one that belongs to another row, is left out
    with a warning naming the checkpoint, and loading it is a ``CorruptCheckpointError``."""
    url = (
        f"sqlite:///{tmp_path / 'rows.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    store = open_store(url)
    session = store.open_session("rows")
    saved = fill(session, 4)
    session.close()
    ids = list(saved)
    row = "WHERE checkpoint_id = ? AND session = (SELECT id FROM cs_sessions LIMIT 1)"
    changed = bytearray(_database(url, f"SELECT record FROM cs_checkpoints {row}", (ids[1],))[0][0])
    changed[changed.index(b"2024-06-01") + 3] = ord("5")  # a byte of the record (its timestamp) changed
    _database(url, f"UPDATE cs_checkpoints SET record = ? {row}", (bytes(changed), ids[1]))
    (other,) = _database(url, f"SELECT record FROM cs_checkpoints {row}", (ids[3],))[0]  # another row's
    _database(url, f"UPDATE cs_checkpoints SET record = ? {row}", (other, ids[2]))
    reader = open_store(url, create=False).open_session("rows")
    with pytest.warns(RuntimeWarning) as caught:
        assert reader.list_checkpoints() == [ids[0], ids[3]]
    messages = sorted(str(warning.message) for warning in caught)
    assert len(messages) == 2
    assert messages[0].startswith(f"{store.url}#rows/{ids[1]}: not listed") and "integrity" in messages[0]
    assert (
        messages[1].startswith(f"{store.url}#rows/{ids[2]}: not listed") and "does not belong" in messages[1]
    )
    for damaged in ids[1:3]:
        with pytest.raises(CorruptCheckpointError, match=re.escape(f"{store.url}#rows/{damaged}")):
            reader.load(damaged)
    for intact in (ids[0], ids[3]):
        same(reader.load(intact), saved[intact])
    reader.store.close()  # type: ignore[attr-defined]
    store.close()  # type: ignore[attr-defined]


# -- PostgreSQL ---------------------------------------------------------------------------------------------


def test_postgres_writer_survives_a_lost_connection(postgres_url: str) -> None:  # noqa: F811
    import psycopg

    from checkpoint_system.storage.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    chat = SyntheticChat("dropped")
    session = store.open_session("dropped")
    saved = fill(session, 3, chat=chat)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'checkpoint_system writer%%' AND datname = current_database()"
        )
    chat.say(3)
    with pytest.raises(CheckpointSaveError, match="unavailable"):
        session.save(chat.checkpoint(3), trusted_prefix=True)
    # the next save reconnects, takes the session lock again and continues the same log
    saved[session.save(chat.checkpoint(3), trusted_prefix=True)] = chat.checkpoint(3)
    saved |= fill(session, 2, start=4, chat=chat)
    reader = PostgresStore(postgres_url).open_session("dropped")
    assert reader.list_checkpoints() == list(saved)
    for checkpoint_id, data in saved.items():
        same(reader.load(checkpoint_id), data)
    session.close()
    store.close()


def test_postgres_rejected_value_is_a_save_error_and_the_session_stays_usable(
    postgres_url: str,  # noqa: F811
) -> None:
    from checkpoint_system.storage.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    chat = SyntheticChat("rejected")
    session = store.open_session("rejected")
    saved = fill(session, 2, chat=chat)
    chat.say(2)
    bad = chat.checkpoint(2).model_copy(update={"context": "nul \x00 byte"})  # text cannot hold NUL
    with pytest.raises(CheckpointSaveError, match="could not write checkpoint"):
        session.save(bad, trusted_prefix=True)
    saved[session.save(chat.checkpoint(2), trusted_prefix=True)] = chat.checkpoint(2)
    saved |= fill(session, 1, start=3, chat=chat)
    reader = PostgresStore(postgres_url).open_session("rejected")
    assert reader.list_checkpoints() == list(saved)
    for checkpoint_id, data in saved.items():
        same(reader.load(checkpoint_id), data)
    session.close()
    store.close()


# -- one schema ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("draft", [1, 2])
def test_a_database_of_a_draft_schema_is_refused_and_left_unchanged(tmp_path: Path, draft: int) -> None:
    """Schemas 1 and 2 were drafts of the unreleased library: a file recording one is neither read nor
    rebuilt, by readers or writers, and stays as it was."""
    path = tmp_path / "draft.db"
    store, session, _, saved = _saved_session(path, "old", 2)
    session.close()
    store.close()
    _rows(path, "UPDATE cs_schema_version SET version = ?", (draft,))  # as such a file recorded it
    before = path.read_bytes()
    url = f"sqlite:///{path}"
    refused = f"schema version {draft} is an unreleased draft"
    for call in (
        lambda: open_store(url, create=False).list_sessions(),
        lambda: open_store(url).list_sessions(),
        lambda: load_reference(f"{url}#old/{next(iter(saved))}").load(),
    ):
        with pytest.raises(UnsupportedFormatError, match=refused) as info:
            call()
        assert str(path) in str(info.value)
    with pytest.raises(CheckpointSaveError, match=refused) as failed:  # a save fails as a save does
        SqliteStore(path).open_session("new").save(SyntheticChat("new").checkpoint(0))
    assert str(path) in str(failed.value) and isinstance(failed.value.__cause__, UnsupportedFormatError)
    assert path.read_bytes() == before
