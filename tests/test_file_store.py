"""FileSessionStore, export_checkpoint and read_checkpoint_file on real files (no AG2 agents needed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_delta import logged_strings

from checkpoint_system.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CorruptCheckpointError,
    InvalidCheckpointError,
    SessionLockedError,
    UnsupportedFormatError,
)
from checkpoint_system.model import FORMAT_NAME, FORMAT_VERSION, CheckpointData
from checkpoint_system.storage import files
from checkpoint_system.storage.delta import dumps_sorted
from checkpoint_system.storage.files import (
    COMMIT_FILE,
    LOG_FILE,
    FileSessionStore,
    checkpoint_file_name,
    export_checkpoint,
    read_checkpoint_file,
    write_file_atomic,
)

REPO = Path(__file__).resolve().parents[1]
TIMESTAMP = "2024-06-01T12:00:00.123456+00:00"  # every checkpoint in the same microsecond, on purpose
AGENTS = ("planner", "coder")
MANAGER = "chat_manager"


class Chat:
    """A growing group chat; ``checkpoint(step)`` snapshots it like ``snapshot.py`` (shared message dicts)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.histories: dict[str, dict[str, list[dict[str, Any]]]] = {a: {MANAGER: []} for a in AGENTS}
        self.histories[MANAGER] = {a: [] for a in AGENTS}

    def say(self, index: int) -> None:
        speaker = AGENTS[index % len(AGENTS)]
        message = {"role": "user", "name": speaker, "content": f"turn {index}: " + "some reasoning text " * 8}
        self.messages.append(message)
        self.histories[MANAGER][speaker].append(message)
        for agent in AGENTS:
            self.histories[agent][MANAGER].append(message)

    def checkpoint(
        self, step: int, *, context: str = "message_appended", timestamp: str = TIMESTAMP
    ) -> CheckpointData:
        def state(name: str, **extra: Any) -> dict[str, Any]:
            return {
                "name": name,
                "agent_class": "autogen.agentchat.conversable_agent.ConversableAgent",
                "system_message": f"You are the {name}.",
                "termination_pattern": {"kind": "contains", "text": "TERMINATE", "case_sensitive": True},
                "_oai_messages": {peer: list(h) for peer, h in self.histories[name].items()},
                **extra,
            }

        return CheckpointData.model_validate(
            {
                "checkpoint_id": checkpoint_file_name(step, context, timestamp)[: -len(".json")],
                "timestamp": timestamp,
                "step_number": step,
                "context": context,
                "messages": list(self.messages),
                "agent_states": {a: state(a) for a in AGENTS},
                "manager_state": state(MANAGER, agent_class="autogen.GroupChatManager", step_counter=step),
                "groupchat_state": {
                    "agent_names": list(AGENTS),
                    "max_round": 50,
                    "round_index": len(self.messages),
                },
                "session_id": "session_test",
                "metadata": {"problem_context": "testing"},
            }
        )


def fill(
    store: FileSessionStore, chat: Chat, steps: range, *, wait_for_files: bool = True
) -> list[tuple[str, CheckpointData]]:
    """Save one checkpoint per step; by default each record file is created at once (``path_of`` creates
    the writer's pending files), otherwise they wait for the next flush or close."""
    saved = []
    for step in steps:
        chat.say(step)
        data = chat.checkpoint(step)
        checkpoint_id = store.save(data, trusted_prefix=True)
        if wait_for_files:
            store.path_of(checkpoint_id)
        saved.append((checkpoint_id, data.model_copy(deep=True)))
    return saved


def same(loaded: CheckpointData, expected: CheckpointData) -> None:
    assert loaded.integrity is not None and len(loaded.integrity) == 64
    assert loaded.model_copy(update={"integrity": None}) == expected.model_copy(update={"integrity": None})


@pytest.fixture
def session(tmp_path: Path) -> Path:
    return tmp_path / "session_1"


@pytest.fixture
def store(session: Path) -> Any:
    store = FileSessionStore(session)
    yield store
    store.close()


@pytest.fixture
def saved(store: FileSessionStore) -> list[tuple[str, CheckpointData]]:
    return fill(store, Chat(), range(12))


def rewrite(path: Path, change: Callable[[dict[str, Any]], None], *, rehash: bool = True) -> None:
    """Edit a checkpoint document; with ``rehash`` its integrity hash is made valid again."""
    record = orjson.loads(path.read_bytes())
    old = record.pop("integrity", None)
    change(record)
    record["integrity"] = hashlib.sha256(dumps_sorted(record)).hexdigest() if rehash else old
    path.write_bytes(orjson.dumps(record))


def expect_error(kind: type[CheckpointError], path: Path, match: str | None = None) -> CheckpointError:
    with pytest.raises(kind, match=match) as info:
        read_checkpoint_file(path)
    assert str(path) in str(info.value), str(info.value)
    assert info.value.path == str(path)
    return info.value


# -- round trips and addressing -----------------------------------------------------------------------------


def test_round_trip_of_several_checkpoints(
    store: FileSessionStore, saved: list[tuple[str, CheckpointData]]
) -> None:
    for checkpoint_id, data in saved:
        loaded = store.load(checkpoint_id)
        same(loaded, data)
        record = orjson.loads(store.path_of(checkpoint_id).read_bytes())
        assert loaded.integrity == record["integrity"]
        assert record["format"] == FORMAT_NAME and record["layout"] == "log"
    # Each record stays small: the messages are in the shared log, referenced by a byte prefix.
    sizes = [store.path_of(i).stat().st_size for i, _ in saved]
    assert max(sizes) - min(sizes) < 64


def test_load_by_id_file_name_and_path(
    store: FileSessionStore,
    saved: list[tuple[str, CheckpointData]],
    session: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint_id, data = saved[5]
    path = session / "checkpoints" / f"{checkpoint_id}.json"
    for ref in (checkpoint_id, f"{checkpoint_id}.json", str(path), path):
        same(store.load(ref), data)
    same(read_checkpoint_file(path), data)
    same(read_checkpoint_file(str(path)), data)
    monkeypatch.chdir(session.parent)
    same(store.load(f"{session.name}/checkpoints/{checkpoint_id}.json"), data)
    # A reader needs no lock: another store object reads while the writer holds the session.
    same(FileSessionStore(session).load(checkpoint_id), data)
    with pytest.raises(CheckpointNotFoundError) as info:
        store.load("checkpoint_99_nothing_20240101_000000_000000")
    assert "checkpoint_99_nothing" in str(info.value)


def test_list_checkpoints_sorts_steps_numerically(store: FileSessionStore) -> None:
    chat = Chat()
    chat.say(0)
    ids = {}
    for step in (10, 2, 11, 1, 0, 9, 100, 20):
        ids[step] = store.save(chat.checkpoint(step))
    assert store.list_checkpoints() == [ids[s] for s in sorted(ids)]
    assert store.next_step_number() == 101
    (store.checkpoint_dir / "notes.json").write_text("{}")  # not a checkpoint name: not listed
    (store.checkpoint_dir / ".checkpoint_5_x.json.1.tmp").write_text("{}")
    assert store.list_checkpoints() == [ids[s] for s in sorted(ids)]


def test_same_microsecond_checkpoints_never_collide(store: FileSessionStore) -> None:
    chat = Chat()
    paths = []
    for step in range(6):
        chat.say(step)
        data = chat.checkpoint(step, timestamp=TIMESTAMP)
        paths.append(store.path_of(store.save(data)))
    assert len({p.name for p in paths}) == 6
    assert len({store.load(p.stem).checkpoint_id for p in paths}) == 6
    assert [len(store.load(p.stem).messages) for p in paths] == [1, 2, 3, 4, 5, 6]


def test_existing_file_is_never_overwritten(
    store: FileSessionStore, saved: list[tuple[str, CheckpointData]]
) -> None:
    checkpoint_id, data = saved[3]
    path = store.path_of(checkpoint_id)
    before = path.read_bytes()
    log = store.checkpoint_dir / LOG_FILE
    log_before = log.read_bytes()
    with pytest.raises(CheckpointSaveError, match="refusing to overwrite") as info:
        store.save(data)  # same step, same timestamp: same name
    assert str(path) in str(info.value)
    assert path.read_bytes() == before and log.read_bytes() == log_before
    same(store.load(checkpoint_id), data)

    store.close()  # a file that is there when the writer opens the session is refused at once
    foreign = store.checkpoint_dir / checkpoint_file_name(50, "message_appended", TIMESTAMP)
    foreign.write_text("precious")
    chat = Chat()
    chat.say(0)
    with pytest.raises(CheckpointSaveError, match="refusing to overwrite"):
        FileSessionStore(store.root).save(chat.checkpoint(50))
    assert foreign.read_text() == "precious"

    with pytest.raises(CheckpointSaveError):
        write_file_atomic(foreign, b"new", overwrite=False)
    assert foreign.read_text() == "precious"
    assert not [p for p in store.checkpoint_dir.iterdir() if p.name.endswith(".tmp")]


def test_failed_commit_rolls_back_the_log(
    store: FileSessionStore, saved: list[tuple[str, CheckpointData]], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = store.checkpoint_dir / LOG_FILE
    commit = store.checkpoint_dir / COMMIT_FILE
    size, commit_size = log.stat().st_size, commit.stat().st_size
    chat = Chat()
    for step in range(13):
        chat.say(step)
    data = chat.checkpoint(12)

    real_write_all = files._write_all

    def disk_full_on_commit(fd: int, payload: bytes) -> None:
        if fd == store._commit_fd:
            real_write_all(fd, payload[:10])  # a partial line, then the disk is full
            raise OSError(28, "No space left on device")
        real_write_all(fd, payload)

    monkeypatch.setattr(files, "_write_all", disk_full_on_commit)
    with pytest.raises(CheckpointSaveError, match="No space left"):
        store.save(data)
    assert log.stat().st_size == size  # the appended bytes were taken back
    assert commit.stat().st_size == commit_size  # and so was the partial commit line
    assert not store.path_of(files._file_name_for(data)).exists()
    monkeypatch.undo()

    path = store.path_of(store.save(data))  # the retry writes exactly what is needed, once
    same(store.load(path.stem), data)
    strings = logged_strings([orjson.loads(line) for line in log.read_bytes().splitlines()])
    assert strings and len(strings) == len(set(strings))  # no string written twice
    store.close()
    reopened = FileSessionStore(store.root)
    for checkpoint_id, expected in saved:
        same(reopened.load(checkpoint_id), expected)
    same(reopened.load(path.stem), data)


def test_a_file_that_appears_under_a_pending_name_is_never_overwritten(
    store: FileSessionStore, saved: list[tuple[str, CheckpointData]]
) -> None:
    chat = Chat()
    for step in range(13):
        chat.say(step)
    data = chat.checkpoint(12)
    checkpoint_id = store.save(data)  # committed; its record file is created at the next flush
    path = store.checkpoint_dir / f"{checkpoint_id}.json"
    path.write_text("racer")  # someone else's file takes the name first
    with pytest.raises(CheckpointSaveError, match="appeared before the checkpoint") as info:
        store.flush()
    assert checkpoint_id in str(info.value)
    assert path.read_text() == "racer"
    store.flush()  # reported once
    store.close()
    FileSessionStore(store.root).save(chat.checkpoint(13))  # reopening repairs only missing files
    assert path.read_text() == "racer"
    for earlier_id, expected in saved:
        same(FileSessionStore(store.root).load(earlier_id), expected)


def test_a_second_save_under_a_pending_name_is_refused(store: FileSessionStore) -> None:
    chat = Chat()
    chat.say(0)
    data = chat.checkpoint(0)
    store.save(data)
    with pytest.raises(CheckpointSaveError, match="refusing to overwrite"):
        store.save(data)  # whether or not the thread created the first one yet


def test_negative_step_is_refused(store: FileSessionStore) -> None:
    data = Chat().checkpoint(0).model_copy(update={"step_number": -1})
    with pytest.raises(CheckpointSaveError, match="step_number"):
        store.save(data)


# -- one writer per session -----------------------------------------------------------------------------


def test_second_store_on_same_session_is_locked(
    store: FileSessionStore, saved: list[Any], session: Path
) -> None:
    other = FileSessionStore(session)
    chat = Chat()
    chat.say(0)
    with pytest.raises(SessionLockedError) as info:
        other.save(chat.checkpoint(40))
    assert str(session) in str(info.value)
    store.close()
    path = other.path_of(other.save(chat.checkpoint(40)))  # the lock is free again
    assert other.load(path.stem).step_number == 40
    other.close()


def test_second_process_is_locked(store: FileSessionStore, saved: list[Any], session: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from checkpoint_system.errors import SessionLockedError
        from checkpoint_system.model import CheckpointData
        from checkpoint_system.storage.files import FileSessionStore
        store = FileSessionStore({str(session)!r})
        print(len(store.list_checkpoints()), store.load(store.list_checkpoints()[-1]).step_number)
        data = CheckpointData(checkpoint_id="x", timestamp="t", step_number=99, context="c")
        try:
            store.save(data)
        except SessionLockedError as exc:
            print("locked", exc)
        else:
            print("not locked")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "12 11"  # reading is allowed
    assert lines[1].startswith("locked") and str(session) in lines[1]


# -- reopening, crashes ---------------------------------------------------------------------------------


def test_reopen_continues_log_and_steps(session: Path) -> None:
    chat = Chat()
    first = FileSessionStore(session)
    early = fill(first, chat, range(5))
    first.close()
    log = session / "checkpoints" / LOG_FILE
    size = log.stat().st_size

    second = FileSessionStore(session)
    assert second.next_step_number() == 5
    late = fill(second, chat, range(second.next_step_number(), 10))
    for checkpoint_id, data in early + late:
        same(second.load(checkpoint_id), data)
    appended = [orjson.loads(line) for line in log.read_bytes()[size:].splitlines()]
    kinds = ("config", "history", "truncate_messages", "truncate_history")
    assert appended and not any(kind in r for r in appended for kind in kinds)
    # Continuing wrote only the new messages: 5 steps cost about what the first 5 did (configs aside).
    assert log.stat().st_size - size < size
    strings = logged_strings([orjson.loads(line) for line in log.read_bytes().splitlines()])
    assert len(strings) == len(set(strings)) == 10  # each message text once, across both writers
    second.close()


def test_writer_killed_then_reopened(session: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_file_store import Chat, fill
        from checkpoint_system.storage.files import FileSessionStore
        store = FileSessionStore({str(session)!r})
        fill(store, Chat(), range(4))
        os._exit(0)  # no close, no cleanup
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    chat = Chat()
    for step in range(4):
        chat.say(step)
    store = FileSessionStore(session)
    assert store.next_step_number() == 4
    late = fill(store, chat, range(4, 6))
    for checkpoint_id, data in late:
        same(store.load(checkpoint_id), data)
    assert len(store.list_checkpoints()) == 6
    store.close()


def test_torn_log_tail_is_cut_on_reopen(session: Path) -> None:
    chat = Chat()
    first = FileSessionStore(session)
    early = fill(first, chat, range(4))
    first.close()
    log = session / "checkpoints" / LOG_FILE
    clean = log.read_bytes()
    with log.open("ab") as handle:  # a crashed writer's partial append
        handle.write(b'{"s":999,"v":"a half written str')
    stale = session / "checkpoints" / ".checkpoint_4_x.json.123.abcd.tmp"
    stale.write_bytes(b'{"half":')
    for checkpoint_id, data in early:  # readers only read their prefix
        same(read_checkpoint_file(session / "checkpoints" / f"{checkpoint_id}.json"), data)

    second = FileSessionStore(session)
    late = fill(second, chat, range(4, 7))
    content = log.read_bytes()
    assert content.startswith(clean) and b"half written" not in content and content.endswith(b"\n")
    assert not stale.exists()
    for checkpoint_id, expected in early + late:
        same(second.load(checkpoint_id), expected)
    second.close()


def test_durability_fsync(session: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    store = FileSessionStore(session, durability="fsync")
    saved = fill(store, Chat(), range(3))
    assert len(calls) >= 3 * 3  # log, record, directory per checkpoint
    for checkpoint_id, data in saved:
        same(store.load(checkpoint_id), data)
    store.write_document("session_metadata.json", {"ok": True})
    assert store.read_document("session_metadata.json") == {"ok": True}
    store.close()
    with pytest.raises(ValueError):
        FileSessionStore(session, durability="sometimes")  # type: ignore[arg-type]


# -- bad input: every failure is the right CheckpointError and names the file -----------------------------


def first_checkpoint(store: FileSessionStore, saved: list[tuple[str, CheckpointData]]) -> Path:
    return store.path_of(saved[-1][0])


def test_truncated_empty_and_garbage_files(
    store: FileSessionStore, saved: list[tuple[str, CheckpointData]], tmp_path: Path
) -> None:
    path = first_checkpoint(store, saved)
    raw = path.read_bytes()
    cases = {
        "half.json": raw[: len(raw) // 2],
        "empty.json": b"",
        "blank.json": b"  \n",
        "garbage.json": bytes(range(256)) * 4,
        "utf16.json": '{"a": 1}'.encode("utf-16"),
    }
    for name, content in cases.items():
        target = tmp_path / name
        target.write_bytes(content)
        error = expect_error(CorruptCheckpointError, target)
        if name == "empty.json":
            assert "empty file" in str(error)


def test_json_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    for name, document in {
        "array.json": [1, 2, 3],
        "string.json": "checkpoint",
        "null.json": None,
        "foreign.json": {"name": "package.json", "version": "1.0.0"},
        "other_format.json": {"format": "someone.else", "checkpoint_id": "x", "messages": []},
    }.items():
        target = tmp_path / name
        target.write_bytes(orjson.dumps(document))
        expect_error(InvalidCheckpointError, target, match="not a checkpoint file")


def test_newer_format_version(store: FileSessionStore, saved: list[tuple[str, CheckpointData]]) -> None:
    path = first_checkpoint(store, saved)
    rewrite(path, lambda r: r.update(format_version=FORMAT_VERSION + 1))
    error = expect_error(UnsupportedFormatError, path)
    assert "upgrade" in str(error)
    rewrite(path, lambda r: r.update(format_version="2"))
    expect_error(InvalidCheckpointError, path, match="format_version")


def test_integrity_mismatch(store: FileSessionStore, saved: list[tuple[str, CheckpointData]]) -> None:
    path = first_checkpoint(store, saved)
    rewrite(path, lambda r: r.update(step_number=3), rehash=False)
    expect_error(CorruptCheckpointError, path, match="integrity hash mismatch")
    record = orjson.loads(path.read_bytes())  # and without any hash
    del record["integrity"]
    path.write_bytes(orjson.dumps(record))
    expect_error(CorruptCheckpointError, path, match="integrity hash missing")


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.pop("checkpoint_id"),
        lambda r: r.pop("step_number"),
        lambda r: r.update(step_number="seven"),
        lambda r: r.update(timestamp=["not", "a", "string"]),
        lambda r: r.update(metadata="0"),
        lambda r: r.update(groupchat={"config": "0"}),
        lambda r: r.update(speaker=["not", "a", "name"]),
        lambda r: r.update(step_counter="seven"),
        lambda r: r.update(messages={}),
        lambda r: r.update(messages={"count": -1}),
        lambda r: r.update(groupchat={"max_round": "many"}),
        lambda r: r.update(metadata=[1]),
        lambda r: r.update(log="message_log.jsonl"),
        lambda r: r["log"].update(size="12"),
        lambda r: r["log"].pop("sha256"),
        lambda r: r.update(layout="spiral"),
        lambda r: r.update(groupchat=7),
    ],
)
def test_missing_fields_and_wrong_types(
    store: FileSessionStore, saved: list[tuple[str, CheckpointData]], change: Callable[[dict[str, Any]], None]
) -> None:
    path = first_checkpoint(store, saved)
    rewrite(path, change)
    expect_error(InvalidCheckpointError, path)


def test_inline_document_with_missing_or_wrong_fields(tmp_path: Path) -> None:
    chat = Chat()
    chat.say(0)
    for index, change in enumerate(
        [
            lambda r: r.pop("checkpoint_id"),
            lambda r: r.update(messages="hello"),
            lambda r: r["agent_states"]["planner"].pop("name"),
            lambda r: r["agent_states"]["planner"].update(_oai_messages=[1]),
        ]
    ):
        path = export_checkpoint(chat.checkpoint(0), tmp_path / f"inline_{index}.json")
        rewrite(path, change)
        expect_error(InvalidCheckpointError, path)


def test_log_missing_truncated_or_modified(
    store: FileSessionStore, saved: list[tuple[str, CheckpointData]]
) -> None:
    path = first_checkpoint(store, saved)
    early = store.path_of(saved[0][0])
    log = store.checkpoint_dir / LOG_FILE
    original = log.read_bytes()
    store.close()

    log.write_bytes(original[: len(original) // 2])
    expect_error(CorruptCheckpointError, path, match="truncated")
    same(read_checkpoint_file(early), saved[0][1])  # an earlier checkpoint's prefix is still complete

    modified = bytearray(original)
    offset = original.index(b"reasoning")
    modified[offset : offset + 9] = b"REASONING"
    log.write_bytes(bytes(modified))
    expect_error(CorruptCheckpointError, path, match="does not match")

    log.unlink()
    expect_error(CorruptCheckpointError, path, match="missing")
    log.mkdir()
    expect_error(CorruptCheckpointError, path, match="missing")
    log.rmdir()

    # A record rehashed to reference a malformed log (same hash as the bytes, but not a valid log).
    log.write_bytes(b'{"m": "not an object"}\n')
    rewrite(
        path,
        lambda r: r["log"].update(
            size=log.stat().st_size, sha256=hashlib.sha256(log.read_bytes()).hexdigest()
        ),
    )
    error = expect_error(CorruptCheckpointError, path)
    assert str(log) in str(error)


def test_a_log_damaged_into_invalid_json_is_reported_as_damaged(
    store: FileSessionStore, saved: list[tuple[str, CheckpointData]]
) -> None:
    """Damaged bytes are reported as not matching the checkpoint's hash, not as whatever their replay
    would run into."""
    path = first_checkpoint(store, saved)
    same(read_checkpoint_file(path), saved[-1][1])
    store.close()
    log = store.checkpoint_dir / LOG_FILE
    original = log.read_bytes()
    log.write_bytes(b"x" + original[1:])  # the first line is no longer JSON; the size is unchanged
    expect_error(CorruptCheckpointError, path, match="does not match the checkpoint's hash")
    log.write_bytes(original)
    same(read_checkpoint_file(path), saved[-1][1])


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "..", ".writer.lock", "sub/log.jsonl", "a\x00b"]
)
def test_log_reference_outside_the_directory_is_never_opened(
    store: FileSessionStore,
    saved: list[tuple[str, CheckpointData]],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = first_checkpoint(store, saved)
    rewrite(path, lambda r: r["log"].update(file=name))
    opened: list[Path] = []

    def spy(log: Path, size: int, checkpoint: Path) -> bytes:
        opened.append(log)
        return b""

    monkeypatch.setattr(files, "_read_prefix", spy)
    expect_error(InvalidCheckpointError, path, match="unsafe log file name")
    assert opened == []


def test_directory_and_missing_paths(store: FileSessionStore, saved: list[Any], tmp_path: Path) -> None:
    expect_error(CheckpointNotFoundError, tmp_path, match="directory")
    (tmp_path / "dir.json").mkdir()
    expect_error(CheckpointNotFoundError, tmp_path / "dir.json", match="directory")
    expect_error(CheckpointNotFoundError, tmp_path / "nope.json", match="does not exist")
    with pytest.raises(CheckpointNotFoundError) as info:
        store.load(str(tmp_path / "nope.json"))
    assert str(tmp_path / "nope.json") in str(info.value)
    assert isinstance(info.value, FileNotFoundError)  # also catchable as the builtin
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.json")
        expect_error(CheckpointNotFoundError, tmp_path / "fifo.json", match="regular file")


def test_loading_never_executes_code(
    store: FileSessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "PWNED"
    payload = f"__import__('os').system('touch {marker}')"
    monkeypatch.chdir(tmp_path)
    data = CheckpointData.model_validate(
        {
            "checkpoint_id": "checkpoint_0_evil_20240101_000000_000000",
            "timestamp": TIMESTAMP,
            "step_number": 0,
            "context": payload,
            "messages": [
                {"role": "user", "content": payload, payload: payload, "tool_calls": [{"eval": payload}]}
            ],
            "agent_states": {
                "evil": {
                    "name": "evil",
                    "agent_class": "builtins.eval",
                    "system_message": payload,
                    "termination_pattern": {"kind": "custom", "source": f"lambda m: {payload}"},
                    "llm_config": {"config_list": [{"model": payload, "model_client_cls": "os.system"}]},
                    "function_map": [payload],
                    "_oai_messages": {payload: [{"content": payload}]},
                }
            },
            "metadata": {"__reduce__": payload, "$s": payload},
        }
    )
    path = store.path_of(store.save(data))
    inline = export_checkpoint(data, tmp_path / "evil_inline.json")
    for loaded in (store.load(path.stem), read_checkpoint_file(inline)):
        same(loaded, data)
        assert loaded.messages[0][payload] == payload
        assert loaded.agent_states["evil"].agent_class == "builtins.eval"
    assert not marker.exists()


# -- seed-era documents, export ----------------------------------------------------------------------------


def seed_document() -> dict[str, Any]:
    """A checkpoint as the seed implementation wrote it: no format marker, everything inline."""
    task = {"content": "Write a function that reverses a string.", "role": "user", "name": "user_proxy"}
    plan = {"content": "Plan: use slicing s[::-1].", "role": "user", "name": "planner"}
    code = {
        "content": "```python\ndef rev(s):\n    return s[::-1]\n```\nTERMINATE",
        "role": "user",
        "name": "coder",
    }
    return {
        "checkpoint_id": "checkpoint_3",
        "timestamp": "2024-05-01T10:00:00.000000",
        "step_number": 3,
        "context": "message_appended",
        "messages": [task, plan, code],
        "agent_states": {
            "planner": {
                "name": "planner",
                "system_message": "You plan.",
                "description": "Plans the work",
                "human_input_mode": "NEVER",
                "llm_config": {
                    "config_list": [{"model": "gpt-4", "api_key": "sk-live-123456"}],
                    "temperature": 0,
                },
                "termination_pattern": "TERMINATE",
                "_oai_messages": {"chat_manager": [task, {**plan, "role": "assistant"}, code]},
                "consecutive_auto_reply_counter": {"chat_manager": 1},
            },
            "coder": {
                "name": "coder",
                "system_message": "You write code.",
                "human_input_mode": "NEVER",
                "llm_config": False,
                "termination_pattern": None,
                "oai_messages": {"chat_manager": [task, plan, {**code, "role": "assistant"}]},
            },
        },
        "manager_state": {
            "name": "chat_manager",
            "system_message": "Group chat manager.",
            "termination_pattern": "TERMINATE",
            "_oai_messages": {"planner": [plan], "coder": [code]},
        },
    }


def test_seed_era_document_loads_via_migration(tmp_path: Path, session: Path) -> None:
    from checkpoint_system.termination import termination_from_record

    path = tmp_path / "checkpoint_3.json"
    path.write_text(orjson.dumps(seed_document(), option=orjson.OPT_INDENT_2).decode())
    data = read_checkpoint_file(path)
    assert data.format_version == 1 and data.step_number == 3 and len(data.messages) == 3
    planner, coder = data.agent_states["planner"], data.agent_states["coder"]
    assert planner.agent_class.endswith("ConversableAgent")
    assert planner.oai_messages["chat_manager"][1]["role"] == "assistant"
    assert coder.oai_messages["chat_manager"][2]["role"] == "assistant"
    assert planner.consecutive_auto_reply_counter == {"chat_manager": 1}
    assert planner.termination_pattern["kind"] == "contains"
    condition = termination_from_record(planner.termination_pattern)
    assert condition is not None and condition({"content": "done. TERMINATE"})
    assert coder.termination_pattern == {"kind": "none"}
    assert data.manager_state is not None and data.manager_state.oai_messages["coder"][0]["name"] == "coder"
    assert "sk-live-123456" not in orjson.dumps(data.model_dump()).decode()  # secrets are not carried on
    assert planner.llm_config and planner.llm_config["temperature"] == 0

    # A migrated checkpoint can be stored and exported in the current format.
    store = FileSessionStore(session)
    saved = store.path_of(store.save(data))
    upgraded = data.model_copy(update={"format_version": FORMAT_VERSION})
    same(store.load(saved.stem), upgraded)
    same(read_checkpoint_file(export_checkpoint(data, tmp_path / "upgraded.json")), upgraded)
    store.close()


def test_seed_era_document_with_list_of_agents(tmp_path: Path) -> None:
    document = seed_document()
    document["agent_states"] = list(document["agent_states"].values())
    path = tmp_path / "seed_list.json"
    path.write_bytes(orjson.dumps(document))
    assert set(read_checkpoint_file(path).agent_states) == {"planner", "coder"}
    document["agent_states"] = [{"system_message": "nameless"}]
    path.write_bytes(orjson.dumps(document))
    expect_error(InvalidCheckpointError, path)


def test_export_checkpoint_round_trip(store: FileSessionStore, saved: list[Any], tmp_path: Path) -> None:
    checkpoint_id, data = saved[-1]
    from_log = store.load(checkpoint_id)
    target = tmp_path / "exports" / "standalone.json"
    assert export_checkpoint(from_log, target) == target
    document = orjson.loads(target.read_bytes())
    assert document["format"] == FORMAT_NAME and document["format_version"] == FORMAT_VERSION
    assert document["layout"] == "inline" and "log" not in document
    assert "_oai_messages" in document["agent_states"]["planner"]  # dumped by alias
    body = {k: v for k, v in document.items() if k != "integrity"}
    assert document["integrity"] == hashlib.sha256(dumps_sorted(body)).hexdigest()
    loaded = read_checkpoint_file(target)
    same(loaded, data)
    assert loaded.integrity == document["integrity"]
    # Standalone: still loads with the session gone.
    (store.checkpoint_dir / LOG_FILE).unlink()
    same(read_checkpoint_file(target), data)

    before = target.read_bytes()
    with pytest.raises(CheckpointSaveError, match="refusing to overwrite") as info:
        export_checkpoint(data, target)
    assert str(target) in str(info.value) and target.read_bytes() == before
    with pytest.raises(CheckpointSaveError):
        export_checkpoint(data, tmp_path)  # a directory
    export_checkpoint(data, tmp_path / "durable.json", fsync=True)

    rewrite(target, lambda r: r["messages"][0].update(content="forged"), rehash=False)
    expect_error(CorruptCheckpointError, target, match="integrity")


def test_export_of_unusual_values(tmp_path: Path) -> None:
    data = CheckpointData.model_validate(
        {
            "checkpoint_id": "any id",
            "timestamp": TIMESTAMP,
            "step_number": 1,
            "context": "manual",
            "messages": [{"content": "日本語 😀", "n": 2**70, "obj": object(), "nan": float("nan")}],
            "extra_top_level": {"kept": True},
        }
    )
    loaded = read_checkpoint_file(export_checkpoint(data, tmp_path / "odd.json"))
    message = loaded.messages[0]
    assert message["content"] == "日本語 😀"
    assert message["n"] == str(2**70)  # beyond 64 bits: kept as its decimal string
    assert "$unserializable" in message["obj"] and message["nan"] == "nan"
    assert loaded.model_extra == {"extra_top_level": {"kept": True}}


# -- CheckpointManager save-error policy ------------------------------------------------------------------


def test_manager_warn_policy_keeps_going(session: Path) -> None:
    from checkpoint_system.checkpoint_manager import CheckpointManager

    manager = CheckpointManager(session, on_save_error="warn")
    chat = Chat()
    chat.say(0)
    first = chat.checkpoint(0)
    assert manager.save_checkpoint(first) is True
    with pytest.warns(RuntimeWarning, match="not saved"):
        assert manager.save_checkpoint(first) is False  # same file name: refused, not overwritten
    assert manager.failed_saves and manager.failed_saves[0]["step_number"] == 0
    chat.say(1)
    assert manager.save_checkpoint(chat.checkpoint(1)) is True
    assert [manager.load_checkpoint(i).step_number for i in manager.list_checkpoints()] == [0, 1]
    manager.close()  # session metadata is current to within a second while running, exact after close
    metadata = orjson.loads((session / "session_metadata.json").read_bytes())
    assert metadata["failed_saves"] and metadata["checkpoint_count"] == 2

    strict = CheckpointManager(session, on_save_error="raise")
    with pytest.raises(CheckpointSaveError):
        strict.save_checkpoint(first)
    strict.close()


@pytest.mark.parametrize(
    ("timestamp", "stamp"),
    [
        ("2024-06-01T12:00:00.123456+00:00", "20240601_120000_123456"),  # utc_timestamp()'s own form
        ("2024-06-01T12:00:00+00:00", "20240601_120000_0000"),  # no fraction: the digits as they come
        ("2024-06-01T12:00:00.12+00:00", "20240601_120000_120000"),
        ("2024-06-01T12:00:00.123456789Z", "20240601_120000_123456"),
        ("2024-06-01T1a:00:00.123456+00:00", "20240601_100001_234560"),
    ],
)
def test_file_names_take_the_timestamps_digits(timestamp: str, stamp: str) -> None:
    assert (
        checkpoint_file_name(3, "message appended!", timestamp)
        == f"checkpoint_3_message-appended_{stamp}.json"
    )


def test_fsync_durability_reports_a_file_that_took_the_name_and_keeps_going(session: Path) -> None:
    store = FileSessionStore(session, durability="fsync")
    chat = Chat()
    chat.say(0)
    zero = chat.checkpoint(0).model_copy(deep=True)
    first = store.save(zero)  # the writer is open: later files are not in its listing
    chat.say(1)
    data = chat.checkpoint(1)
    foreign = store.checkpoint_dir / files._file_name_for(data)
    foreign.write_text("precious")
    with pytest.raises(CheckpointSaveError, match="appeared before") as info:
        store.save(data)  # committed, but its file's name is taken: reported, never overwritten
    assert str(foreign) in str(info.value)
    assert foreign.read_text() == "precious"
    chat.say(2)
    two = chat.checkpoint(2).model_copy(deep=True)
    third = store.save(two)  # the writer goes on
    same(store.load(third), two)
    same(store.load(first), zero)
    store.close()
    assert foreign.read_text() == "precious"  # reopening repairs only missing files and our own torn ones
    assert len(FileSessionStore(session).list_checkpoints()) == 3
