"""Export/import between backends: a PostgreSQL session (with a continuation) to a session directory, the
directory into SQLite, and back into PostgreSQL. Ids, order, lineage, documents and contents survive every
hop, and the exported files continue like the original."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pg_fixture import postgres_server, postgres_url  # noqa: F401  (fixtures)
from scenarios import all_scenarios

from checkpoint_system import (
    CheckpointData,
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    read_checkpoint_file,
)
from checkpoint_system.errors import CheckpointNotFoundError, CheckpointSaveError
from checkpoint_system.storage import (
    CheckpointStore,
    FileStore,
    copy_session,
    export_session,
    import_session,
    open_store,
)
from checkpoint_system.storage.files import LOG_FILE


def _run(store: CheckpointStore, session_id: str) -> list[dict[str, Any]]:
    built = all_scenarios()["round_robin"]()
    checkpoints = CheckpointManager(store=store, session_id=session_id, problem_context="transfer")
    manager = built.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoints)
    built.run(manager)
    checkpoints.close()
    return [dict(m) for m in built.groupchat.messages]


def _contents(
    store: CheckpointStore, session_id: str
) -> tuple[list[str], list[CheckpointData], dict[str, Any]]:
    session = store.open_session(session_id)
    ids = session.list_checkpoints()
    data = [session.load(c).model_copy(update={"integrity": None}) for c in ids]
    documents = {name: session.read_document(name) for name in session.list_documents()}  # type: ignore[attr-defined]
    return ids, data, documents


def _tree(store: CheckpointStore, root: str) -> dict[str, Any]:
    """Every session under ``root`` (relative ids) with its checkpoints and documents."""
    return {
        s[len(root) :]: _contents(store, s)
        for s in store.list_sessions()
        if s == root or s.startswith(root + "/")
    }


def test_postgres_to_files_to_sqlite_and_back(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    postgres = open_store(postgres_url)
    messages = _run(postgres, "shared")
    ids = postgres.open_session("shared").list_checkpoints()
    continued = CheckpointRestorer().continue_from(ids[4], store=postgres, max_rounds=2)
    assert continued.ok
    original = _tree(postgres, "shared")
    assert len(original) == 2 and original[""][0] == ids

    # PostgreSQL -> a session directory
    directory = tmp_path / "export" / "shared"
    report = export_session(postgres, "shared", directory, include_continuations=True)
    assert len(report.sessions) == 2 and report.renamed == {}
    assert report.checkpoints == sum(len(t[0]) for t in original.values())
    assert sorted(p.stem for p in (directory / "checkpoints").glob("checkpoint_*.json")) == sorted(ids)
    assert (directory / "checkpoints" / LOG_FILE).is_file()
    for name in ("session_metadata.json", "chat_history.json", "problem_statement.txt"):
        assert (directory / name).is_file(), name
    (continuation,) = [p for p in directory.iterdir() if p.name.startswith("continuation_")]
    assert (continuation / "continuation_metadata.json").is_file()
    files = FileStore(tmp_path / "export")
    assert _tree(files, "shared") == original
    # each exported file loads on its own, like any checkpoint file
    assert read_checkpoint_file(directory / "checkpoints" / f"{ids[-1]}.json").messages == messages

    # the directory -> SQLite -> PostgreSQL under another id
    sqlite_url = f"sqlite:///{tmp_path / 'imported.db'}"
    import_session(directory, sqlite_url, include_continuations=True)
    assert _tree(open_store(sqlite_url), "shared") == original
    copy_session(sqlite_url, "shared", postgres, target_session_id="shared_copy", include_continuations=True)
    assert _tree(postgres, "shared_copy") == original

    # an exported checkpoint file continues exactly like the original
    result = CheckpointRestorer().continue_from(directory / "checkpoints" / f"{ids[3]}.json")
    assert result.ok and result.chat_result is not None
    assert result.chat_result.chat_history == messages


def test_copies_never_merge_and_need_a_source(tmp_path: Path) -> None:
    source = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    _run(source, "s")
    target = FileStore(tmp_path / "files")
    copy_session(source, "s", target)
    before = _contents(target, "s")
    with pytest.raises(CheckpointSaveError, match="never merges"):
        copy_session(source, "s", target)
    assert _contents(target, "s") == before
    with pytest.raises(CheckpointNotFoundError):
        copy_session(source, "missing", target)
    with pytest.raises(CheckpointNotFoundError):
        import_session(tmp_path / "nothing_here", source)
