"""Readers never write: listing, loading, showing, exporting and continuing from a database session create,
repair and change nothing, and never take the session's writer lease or lock.

SQLite, three cases:

* a store closed cleanly (one plain file in rollback-journal mode): after every reader the file's bytes and
  mtime are unchanged and no ``-wal``, ``-shm`` or ``-journal`` file appeared;
* a writer live in another process (WAL mode): the database file and the ``-wal`` are unchanged (bytes and
  mtime); in the ``-shm`` (the WAL's index, memory shared by the connections) only the five read marks
  (bytes 100-119) may change: a reader records there which WAL frame its snapshot ends at, so that a writer
  does not overwrite pages the reader still needs; SQLite does that for every read of a WAL database, and the
  writer is not held up (it saves again afterwards);
* a continuation writes its own session into the same store (that is its writer's business): the parent
  session's rows, session row and documents are unchanged byte for byte, and no lease was taken for it.

The files are read with ``open()`` only while this process has no SQLite connection to them: closing any file
descriptor of a file drops every POSIX lock the process holds on it, SQLite's included.

A store that does not exist, opened for reading, is ``CheckpointNotFoundError`` and is not created. PostgreSQL
readers neither create the schema nor take advisory locks.
"""

from __future__ import annotations

import gc
import io
import os
import sqlite3
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from pg_fixture import postgres_server, postgres_url  # noqa: F401  (fixtures)
from restore_support import subprocess_env
from scenarios import all_scenarios

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager, CheckpointRestorer
from checkpoint_system.cli import main as cli_main
from checkpoint_system.errors import CheckpointNotFoundError
from checkpoint_system.storage import export_session, load_reference, open_store

SIDE_FILES = ("-wal", "-shm", "-journal")
#: the -shm bytes a reader may change: the WAL index's read marks (``aReadMark[0..4]``, after the two
#: 48-byte copies of the index header and the 4-byte ``nBackfill``)
READ_MARKS = range(100, 120)


def _files(path: Path) -> dict[str, tuple[bytes, int]]:
    """The database file and its side files that exist: bytes and mtime (ns)."""
    found = {}
    for suffix in ("", *SIDE_FILES):
        name = Path(f"{path}{suffix}")
        if name.exists():
            found[suffix] = (name.read_bytes(), name.stat().st_mtime_ns)
    return found


def _real_session(path: Path, session_id: str = "chat") -> list[str]:
    """A real round-robin AG2 chat saved into the SQLite store at ``path``, closed; its checkpoint ids."""
    url = f"sqlite:///{path}"
    built = all_scenarios()["round_robin"]()
    checkpoints = CheckpointManager(url, session_id=session_id, problem_context="readers")
    built.run(built.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoints))
    checkpoints.close()
    ids = checkpoints.list_checkpoints()
    assert checkpoints.backing_store is not None
    checkpoints.backing_store.close()  # type: ignore[attr-defined]
    return ids


def _read_everything(url: str, session_id: str, ids: list[str], export_to: Path) -> None:
    """What readers do: the CLI's list and show, references loaded, a session's documents, an export."""
    with redirect_stdout(io.StringIO()) as out:
        assert cli_main(["list", url]) == 0
        assert cli_main(["list", f"{url}#{session_id}"]) == 0
        assert cli_main(["show", f"{url}#{session_id}/{ids[-1]}"]) == 0
    assert f"{url}#{session_id}/{ids[-1]}" in out.getvalue()
    for checkpoint_id in ids:
        assert load_reference(f"{url}#{session_id}/{checkpoint_id}").load().checkpoint_id == checkpoint_id
    assert load_reference(ids[-1], store=url).load().checkpoint_id == ids[-1]
    store = open_store(url, create=False)
    session = store.open_session(session_id)
    assert session.list_checkpoints() == ids
    assert session.next_step_number() > 0
    for name in session.list_documents():  # type: ignore[attr-defined]
        assert session.read_document(name) is not None
    session.close()
    store.close()  # type: ignore[attr-defined]
    export_session(url, session_id, export_to)
    gc.collect()  # the stores the references opened: their connections closed


def test_readers_leave_a_closed_sqlite_store_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    ids = _real_session(path)
    before = _files(path)
    assert list(before) == [""]  # closed cleanly: one plain file, no WAL
    _read_everything(f"sqlite:///{path}", "chat", ids, tmp_path / "exported")
    assert _files(path) == before


WRITER = """
import sys
from test_conformance import SyntheticChat, fill
from checkpoint_system.storage import SqliteStore
session = SqliteStore(sys.argv[1]).open_session("live")
chat = SyntheticChat("live")
print(" ".join(fill(session, 6, chat=chat)), flush=True)
sys.stdin.readline()  # the readers run now; the writer keeps its connection and lease
print(" ".join(fill(session, 1, start=6, chat=chat)), flush=True)
"""


def test_readers_of_a_sqlite_store_with_a_live_writer_change_only_read_marks(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        ids = writer.stdout.readline().split()
        assert len(ids) == 6
        before = _files(path)
        assert set(before) == {"", "-wal", "-shm"}  # WAL mode while the writer lives
        _read_everything(f"sqlite:///{path}", "live", ids, tmp_path / "exported")
        after = _files(path)
        assert set(after) == set(before)
        assert after[""] == before[""] and after["-wal"] == before["-wal"]
        old, new = before["-shm"][0], after["-shm"][0]
        assert len(old) == len(new)
        assert [i for i in range(len(old)) if old[i] != new[i] and i not in READ_MARKS] == []
        writer.stdin.write("go on\n")  # no reader took the lease: the writer saves on
        writer.stdin.flush()
        assert len(writer.stdout.readline().split()) == 1
    finally:
        writer.kill()
        writer.wait()


def _parent_rows(path: Path, session_id: str) -> dict[str, object]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        (key,) = conn.execute("SELECT id FROM cs_sessions WHERE session_id = ?", (session_id,)).fetchone()
        return {
            "session": conn.execute("SELECT * FROM cs_sessions WHERE id = ?", (key,)).fetchall(),
            "checkpoints": conn.execute(
                "SELECT * FROM cs_checkpoints WHERE session = ? ORDER BY key", (key,)
            ).fetchall(),
            "documents": conn.execute(
                "SELECT * FROM cs_documents WHERE session = ? ORDER BY name", (key,)
            ).fetchall(),
            "lease": conn.execute("SELECT * FROM cs_writers WHERE session_id = ?", (session_id,)).fetchall(),
        }
    finally:
        conn.close()


def test_continuing_from_a_sqlite_session_leaves_the_parent_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    ids = _real_session(path)
    before = _parent_rows(path, "chat")
    assert before["lease"] == [] and len(before["checkpoints"]) == len(ids)  # type: ignore[arg-type]
    result = CheckpointRestorer().continue_from(f"sqlite:///{path}#chat/{ids[len(ids) // 2]}", max_rounds=2)
    assert result.ok, result.reason
    gc.collect()
    assert _parent_rows(path, "chat") == before
    assert len(open_store(f"sqlite:///{path}", create=False).list_sessions()) == 2


def test_a_missing_store_opened_for_reading_is_not_found_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "here.db"
    url = f"sqlite:///{path}"
    for call in (
        lambda: open_store(url, create=False).list_sessions(),
        lambda: open_store(url, create=False).open_session("s").list_checkpoints(),
        lambda: load_reference(f"{url}#s/checkpoint_1").load(),
        lambda: load_reference("checkpoint_1", store=url).load(),
        lambda: CheckpointRestorer().continue_from(f"{url}#s/checkpoint_1", max_rounds=1),
        lambda: open_store(str(tmp_path / "no_directory"), create=False),
    ):
        with pytest.raises(CheckpointNotFoundError, match=r"no (checkpoint )?store here"):
            call()
    assert os.listdir(tmp_path) == []
    for argv in (["list", url], ["list", f"{url}#s"], ["show", f"{url}#s/checkpoint_1"]):
        assert cli_main(argv) == 2
    assert os.listdir(tmp_path) == []
    # a database file without the schema (e.g. an empty file) is no store either, and stays as it is
    path.parent.mkdir()
    path.write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint_system schema"):
        open_store(url, create=False).list_sessions()
    assert path.read_bytes() == b"" and os.listdir(path.parent) == ["here.db"]


def test_postgres_readers_create_nothing_and_take_no_lock(postgres_url: str) -> None:  # noqa: F811
    import psycopg

    def tables() -> list[str]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            ).fetchall()
        return [name for (name,) in rows]

    for call in (
        lambda: open_store(postgres_url, create=False).list_sessions(),
        lambda: load_reference(f"{postgres_url}#s/checkpoint_1").load(),
    ):
        with pytest.raises(CheckpointNotFoundError, match="no checkpoint_system schema"):
            call()
    assert tables() == []

    from test_conformance import fill

    writer = open_store(postgres_url).open_session("chat")
    saved = fill(writer, 3)  # the writer holds the session's advisory lock from now on
    reader_store = open_store(postgres_url, create=False)
    reader = reader_store.open_session("chat")
    assert reader.list_checkpoints() == list(saved)
    for checkpoint_id in saved:
        reader.load(checkpoint_id)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        holders = conn.execute(
            """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.database =
                  (SELECT oid FROM pg_database WHERE datname = current_database())"""
        ).fetchall()
    assert len(holders) == 1 and holders[0][0].startswith("checkpoint_system writer")
    reader_store.close()  # type: ignore[attr-defined]
    writer.close()
