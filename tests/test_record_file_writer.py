"""The record-file writer process: files it creates, and what happens when it is gone, forked or torn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_file_store import Chat, fill, same

from checkpoint_system.model import CheckpointData
from checkpoint_system.storage import file_publisher, record_file_writer
from checkpoint_system.storage.files import FileSessionStore, read_checkpoint_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def own_writer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This test starts (and may break) a writer of its own; the process's shared writer is put back after."""
    monkeypatch.setattr(file_publisher, "_writer_process", None)
    monkeypatch.setattr(file_publisher, "_cannot_start", False)
    yield
    writer = file_publisher._writer_process
    if writer is not None:
        writer.close()


def count_inline_creates(store: FileSessionStore) -> list[Path]:
    """The files the store's publisher creates in this process (its fallback when no writer takes them)."""
    created: list[Path] = []
    create = store._publisher._create

    def counting(path: Path, data: bytes) -> None:
        created.append(path)
        create(path, data)

    store._publisher._create = counting  # type: ignore[method-assign]
    return created


def assert_all_loadable(store: FileSessionStore, saved: list[tuple[str, CheckpointData]]) -> None:
    for checkpoint_id, expected in saved:
        same(read_checkpoint_file(store.checkpoint_dir / f"{checkpoint_id}.json"), expected)


def test_record_files_are_created_by_the_writer_process(tmp_path: Path, own_writer: None) -> None:
    store = FileSessionStore(tmp_path / "s")
    inline = count_inline_creates(store)
    # past DRAIN_AT: acknowledgements are read on the way
    saved = fill(store, Chat(), range(300), wait_for_files=False)
    writer = file_publisher._running_writer()
    assert writer is not None and writer.alive
    assert writer._process.pid != os.getpid() and writer._process.poll() is None
    store.flush()
    assert not store._publisher.pending
    assert_all_loadable(store, saved)
    assert inline == []
    store.close()


def test_a_killed_writer_loses_no_record_file(tmp_path: Path, own_writer: None) -> None:
    store = FileSessionStore(tmp_path / "s")
    inline = count_inline_creates(store)
    chat = Chat()
    saved = fill(store, chat, range(5), wait_for_files=False)
    writer = file_publisher._running_writer()
    assert writer is not None
    writer._process.kill()
    writer._process.wait()
    saved += fill(store, chat, range(5, 40), wait_for_files=False)  # the writer's death is noticed on the way
    store.flush()
    assert not writer.alive
    assert_all_loadable(store, saved)
    assert inline  # the store created the rest itself
    assert file_publisher._writer() is None  # and goes on doing so
    store.close()


def test_without_a_writer_process_files_are_created_at_once(
    tmp_path: Path, own_writer: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "")
    store = FileSessionStore(tmp_path / "s")
    saved = fill(store, Chat(), range(3), wait_for_files=False)
    assert file_publisher._writer_process is None
    assert all((store.checkpoint_dir / f"{checkpoint_id}.json").is_file() for checkpoint_id, _ in saved)
    assert_all_loadable(store, saved)
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_uses_a_writer_of_its_own(tmp_path: Path, own_writer: None) -> None:
    parent_store = FileSessionStore(tmp_path / "parent")
    chat = Chat()
    saved = fill(parent_store, chat, range(5), wait_for_files=False)
    parent_writer = file_publisher._running_writer()
    assert parent_writer is not None
    pid = os.fork()
    if pid == 0:  # the child: its own session, its own writer; never back into pytest
        status = 1
        try:
            child_store = FileSessionStore(tmp_path / "child")
            child_saved = fill(child_store, Chat(), range(5), wait_for_files=False)
            child_writer = file_publisher._running_writer()
            child_store.flush()
            assert child_writer is not None and child_writer is not parent_writer
            assert_all_loadable(child_store, child_saved)
            child_store.close()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    saved += fill(parent_store, chat, range(5, 10), wait_for_files=False)  # the parent's writer still works
    parent_store.flush()
    assert parent_writer.alive
    assert_all_loadable(parent_store, saved)
    parent_store.close()


def _frame(kind: bytes, number: int, path: bytes = b"", data: bytes = b"") -> bytes:
    return record_file_writer.FRAME.pack(kind, number, len(path), len(data)) + path + data


def _replies(raw: bytes) -> list[tuple[bytes, int]]:
    size = record_file_writer.REPLY.size
    return [record_file_writer.REPLY.unpack_from(raw, offset) for offset in range(0, len(raw), size)]


def test_the_writer_program_never_replaces_a_file_nor_creates_a_torn_one(tmp_path: Path) -> None:
    bell_out, bell_in = os.pipe()
    existing = tmp_path / "existing.json"
    existing.write_bytes(b"someone else's")
    writer = subprocess.Popen(
        [sys.executable, "-I", "-S", record_file_writer.__file__, str(bell_out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=(bell_out,),
    )
    os.close(bell_out)
    requests = (
        _frame(b"C", 1, os.fsencode(tmp_path / "new.json"), b"x" * 5000)
        + _frame(b"C", 2, os.fsencode(existing), b"ours")
        + _frame(b"S", 3)
        + _frame(b"C", 4, os.fsencode(tmp_path / "torn.json"), b"y" * 100)[:-10]  # the chat died here
    )
    out, _ = writer.communicate(requests, timeout=30)
    os.close(bell_in)
    assert writer.returncode == 0
    assert (tmp_path / "new.json").read_bytes() == b"x" * 5000
    assert existing.read_bytes() == b"someone else's"
    assert not (tmp_path / "torn.json").exists()
    assert _replies(out) == [(b"D", 0), (b"F", 2), (b"D", 3)]


def _process_is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie nobody reaps has still exited


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_writer_ends_when_its_chat_process_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
        from test_file_store import Chat
        from checkpoint_system.storage import file_publisher
        from checkpoint_system.storage.files import FileSessionStore
        store = FileSessionStore({str(tmp_path / "s")!r})
        chat = Chat()
        for step in range(3):
            chat.say(step)
            store.save(chat.checkpoint(step))
        print(file_publisher._running_writer()._process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    chat_process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert chat_process.returncode == -signal.SIGKILL, chat_process.stderr
    writer_pid = int(chat_process.stdout.split()[0])
    deadline = time.monotonic() + 10
    while not _process_is_gone(writer_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_is_gone(writer_pid)
    reopened: Any = FileSessionStore(tmp_path / "s")
    assert len(reopened.list_checkpoints()) == 3  # what the writer had not created is repaired
    reopened.close()
