"""Which earlier checkpoints still load: one log format, plus seed-era documents and standalone exports.

The library reads exactly one log format, ``FORMAT_VERSION``. The log-layout formats before it were
unreleased drafts: a record of one is refused with ``UnsupportedFormatError`` naming it, by every backend,
when loading and when a writer reopens its session. Seed-era documents (no format marker, everything inline;
``tests/test_file_store.py`` holds those tests) and standalone exports (``export_checkpoint``, "inline"
layout) of any version up to the current one keep loading.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_file_store import Chat, fill, rewrite, same

from checkpoint_system import CheckpointManager, read_checkpoint_file
from checkpoint_system.errors import CheckpointError, CheckpointSaveError, UnsupportedFormatError
from checkpoint_system.model import FORMAT_VERSION
from checkpoint_system.storage import SqliteStore
from checkpoint_system.storage.delta import dumps_sorted
from checkpoint_system.storage.files import FileSessionStore, export_checkpoint

EARLIER = list(range(2, FORMAT_VERSION))


def _as_version(version: int) -> Any:
    return lambda record: record.update(format_version=version)


def _refused(error: CheckpointError, version: int, where: str) -> None:
    message = str(error)
    assert isinstance(error, UnsupportedFormatError) and error.path == where, message
    assert f"format version {version} was an unreleased draft format" in message, message
    assert "re-run the chat" in message and "export_checkpoint()" in message, message


@pytest.mark.parametrize("version", EARLIER)
def test_an_earlier_log_format_is_refused_as_a_draft(version: int, tmp_path: Path) -> None:
    store = FileSessionStore(tmp_path / "session")
    saved = fill(store, Chat(), range(4))
    store.close()
    path = store.path_of(saved[2][0])
    rewrite(path, _as_version(version))  # a validly sealed record of that version
    with pytest.raises(UnsupportedFormatError) as info:
        read_checkpoint_file(path)
    _refused(info.value, version, str(path))
    with pytest.raises(UnsupportedFormatError):
        CheckpointManager(tmp_path / "session").load_checkpoint(saved[2][0])
    same(read_checkpoint_file(store.path_of(saved[3][0])), saved[3][1])  # its neighbours still load


@pytest.mark.parametrize("version", [*EARLIER, FORMAT_VERSION])
def test_a_standalone_export_of_any_version_loads(version: int, tmp_path: Path) -> None:
    """An export is the logical checkpoint, everything inline: nothing in it depends on the log format."""
    chat = Chat()
    for step in range(5):
        chat.say(step)
    data = chat.checkpoint(4)
    path = export_checkpoint(data, tmp_path / "export.json")
    rewrite(path, _as_version(version))
    loaded = read_checkpoint_file(path)
    assert loaded.format_version == version
    same(loaded, data.model_copy(update={"format_version": version}))


def _reseal_row(path: Path, checkpoint_id: str, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        (raw,) = conn.execute("SELECT record FROM cs_checkpoints WHERE checkpoint_id = ?", (checkpoint_id,))
        record = orjson.loads(raw[0])
        record.pop("integrity")
        record["format_version"] = version
        record["integrity"] = hashlib.sha256(dumps_sorted(record)).hexdigest()
        conn.execute(
            "UPDATE cs_checkpoints SET record = ? WHERE checkpoint_id = ?",
            (orjson.dumps(record), checkpoint_id),
        )
    finally:
        conn.close()


def test_a_database_holding_an_earlier_log_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.db"
    store = SqliteStore(path)
    session = store.open_session("s")
    chat = Chat()
    saved = {}
    for step in range(3):
        chat.say(step)
        data = chat.checkpoint(step)
        saved[session.save(data, trusted_prefix=True)] = data
    session.close()
    store.close()
    first, *_, newest = saved
    version = FORMAT_VERSION - 1
    _reseal_row(path, newest, version)

    reopened = SqliteStore(path)
    reader = reopened.open_session("s")
    where = f"{reopened.url}#s/{newest}"
    with pytest.raises(UnsupportedFormatError) as info:
        reader.load(newest)
    _refused(info.value, version, where)
    same(reader.load(first), saved[first])
    chat.say(3)
    # A writer does not extend it: a save error (what on_save_error governs) caused by the draft format.
    with pytest.raises(CheckpointSaveError, match="unreleased draft") as refused:
        reader.save(chat.checkpoint(3), trusted_prefix=True)
    assert isinstance(refused.value.__cause__, UnsupportedFormatError)
    reader.close()
    reopened.close()
