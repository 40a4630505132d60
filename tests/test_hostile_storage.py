"""Every failure of the storage layer is a ``CheckpointError``: hostile files and databases, a full disk, a
read-only file system, another user's directories, a second writer, a store URL of no known backend.

Faults come from the real operating system, never from patched code: a small tmpfs that is filled (ENOSPC)
or remounted read-only (EROFS), directories of another user (as root the case runs in a forked child that
has dropped to ``nobody``; as a normal user ``chmod`` is enough), files and SQLite databases edited the way
an attacker would (integrity hashes recomputed). Chats are real AG2 group chats with the deterministic model.
Each case checks the exact error class, that the message names the path and the problem, that input sessions
are left unchanged (``tree_digest``) and, through ``confined``, that nothing was written to the current
directory.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import io
import os
import pwd
import select
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import orjson
import pytest
from autogen import Agent, GroupChatManager
from conftest import Confined
from pg_fixture import postgres_server, postgres_url  # noqa: F401  (fixtures)
from pg_server import PostgresServer
from restore_support import run_original, tree_digest
from scenarios import Scenario, all_scenarios

import checkpoint_system.storage.migrations  # noqa: F401  (imported before a child drops its privileges)
from checkpoint_system import (
    CheckpointAccessError,
    CheckpointError,
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointNotFoundError,
    CheckpointRestorer,
    CheckpointSaveError,
    CorruptCheckpointError,
    FileStore,
    SessionLockedError,
    UnsupportedStoreError,
    load_reference,
    open_store,
    read_checkpoint_file,
)
from checkpoint_system.cli import main as cli_main
from checkpoint_system.storage import is_store_url
from checkpoint_system.storage.delta import dumps_sorted
from checkpoint_system.storage.files import COMMIT_FILE, LOG_FILE, MAX_FILE_BYTES

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NEEDS_ROOT = "mounting a tmpfs (a real full or read-only file system) needs root; CI runs the tests as root"


# -- fixtures and helpers -----------------------------------------------------------------------------------


def _removable(root: Path) -> None:
    """Give the owner back every permission under ``root`` (a non-root test chmod-ed parts of it away)."""
    for directory, subdirs, files in os.walk(root):
        for name in [*subdirs, *files]:
            with contextlib.suppress(OSError):
                os.chmod(Path(directory) / name, 0o700, follow_symlinks=False)
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)


@pytest.fixture
def public_dir(confined: Confined) -> Iterator[Path]:
    """A temporary directory of this test that other users can reach (pytest's own is private to its user):
    for cases run as ``nobody`` and for the PostgreSQL server's tablespace. Removed at teardown."""
    path = Path(tempfile.mkdtemp(prefix="checkpoint_system_hostile_"))
    path.chmod(0o755)
    yield path
    gc.collect()  # stores left open by a failing case close their descriptors
    if not IS_ROOT:
        _removable(path)
    shutil.rmtree(path, ignore_errors=True)


class Tmpfs:
    """A mounted tmpfs: ``fill()`` takes every free page (ENOSPC), ``free()`` gives them back, ``read_only()``
    remounts it read-only (EROFS)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / ".filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)  # whole pages: when this fails no page is left
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        with pytest.raises(OSError, match="No space left"):  # really full: not even one more file's page
            (self.path / ".probe").write_bytes(b"x")

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        (self.path / ".probe").unlink(missing_ok=True)

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True, capture_output=True)


@pytest.fixture
def tmpfs(confined: Confined) -> Iterator[Callable[..., Tmpfs]]:
    """Mount small tmpfs file systems for the test (under ``confined.root``, or under ``where``); every one is
    unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: str = "1m", where: Path | None = None) -> Tmpfs:
        if not IS_ROOT:
            pytest.skip(NEEDS_ROOT)
        path = (where or confined.root) / f"tmpfs{len(mounted)}"
        path.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(path)
        return Tmpfs(path)

    yield mount
    gc.collect()  # stores a failing case left open hold descriptors on the file system
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def as_other_user(check: Callable[[], None]) -> None:
    """Run ``check`` where file permissions apply to it: as root in a forked child that has dropped to
    ``nobody`` (the interpreter is already loaded: nothing is executed anew), otherwise right here."""
    if not IS_ROOT:
        check()
        return
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user to run the case as (as root, permissions apply to no one else)")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report "ok" or the traceback, never return into pytest
        status = 1
        report = b"the child did not finish"
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            check()
            report, status = b"ok", 0
        except BaseException:
            report = traceback.format_exc().encode()
        finally:
            with contextlib.suppress(BaseException):
                view = memoryview(report)
                while view:
                    view = view[os.write(write_end, view) :]
            os._exit(status)
    os.close(write_end)
    output = bytearray()
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], 300)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail("the case run as 'nobody' did not finish within 300 s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            output += chunk
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert output == b"ok", "as user 'nobody':\n" + output.decode(errors="replace")


def reseal(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit a checkpoint record the way an attacker would: change it, then make its integrity hash valid."""
    record = orjson.loads(path.read_bytes())
    record.pop("integrity")
    change(record)
    record["integrity"] = hashlib.sha256(dumps_sorted(record)).hexdigest()
    path.write_bytes(orjson.dumps(record))


def expect(kind: type[CheckpointError], call: Callable[[], object], *needles: str) -> CheckpointError:
    """``call`` raises exactly ``kind`` (no subclass, no bare OSError); its message names ``needles``."""
    with pytest.raises(CheckpointError) as info:
        call()
    error = info.value
    assert type(error) is kind, f"{type(error).__name__}: {error}"
    for needle in needles:
        assert needle in str(error), f"{needle!r} not in {error}"
    return error


@pytest.fixture(scope="module")
def chat_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished round-robin chat's session directory (copy it before changing anything)."""
    return run_original("round_robin", "sync", tmp_path_factory.mktemp("original") / "session").session_dir


def copy_session(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".writer.lock"))
    return target


def checkpoint_files(session: Path) -> list[Path]:
    return sorted(
        (session / "checkpoints").glob("checkpoint_*.json"), key=lambda p: int(p.name.split("_")[1])
    )


def metadata_of(target: str | Path, session_id: str | None = None) -> dict[str, Any]:
    reader = CheckpointManager(target, session_id=session_id) if session_id else CheckpointManager(target)
    try:
        document = reader.read_document("session_metadata.json")
    finally:
        reader.close()
    assert isinstance(document, dict)
    return document


def long_chat() -> Scenario:
    """The round-robin scenario with 24 messages: enough appends to need new pages of a full disk."""
    scenario = all_scenarios()["round_robin"]()
    scenario.groupchat.max_round = 24
    return scenario


def at_message(scenario: Scenario, actions: dict[int, Callable[[], None]]) -> None:
    """Run ``actions[n]`` once, when a speaker starts on message n + 1 (checkpoint n has been taken)."""
    pending = dict(actions)

    def hook(
        recipient: Any, messages: Any = None, sender: Any = None, config: Any = None
    ) -> tuple[bool, None]:
        action = pending.pop(len(scenario.groupchat.messages), None)
        if action is not None:
            action()
        return False, None

    for agent in scenario.agents:
        agent.register_reply([Agent, None], hook, position=0)


def plain_transcript(build: Callable[[], Scenario]) -> list[dict[str, Any]]:
    scenario = build()
    scenario.run(scenario.make_manager(GroupChatManager))
    return scenario.groupchat.messages


# -- hostile files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("claimed", [2**40, 2**62])
def test_a_record_claiming_a_huge_log_is_corrupt_not_a_memory_error(
    claimed: int, chat_session: Path, confined: Confined
) -> None:
    session = copy_session(chat_session, confined.root / "session")
    path = checkpoint_files(session)[3]
    reseal(path, lambda record: record["log"].update(size=claimed))
    before = tree_digest(session)
    needles = (str(path), f"the checkpoint needs {claimed}", "truncated")
    expect(CorruptCheckpointError, lambda: read_checkpoint_file(path), *needles)
    expect(CorruptCheckpointError, lambda: CheckpointManager.load_checkpoint_file(path), *needles)
    manager = CheckpointManager(session)
    expect(CorruptCheckpointError, lambda: manager.load_checkpoint(path.stem), *needles)
    manager.close()
    expect(CorruptCheckpointError, lambda: CheckpointRestorer().continue_from(path, max_rounds=1), *needles)
    assert tree_digest(session, skip_continuations=False) == before  # no continuation directory either


def test_huge_files_are_refused_before_they_are_read(chat_session: Path, confined: Confined) -> None:
    session = copy_session(chat_session, confined.root / "session")
    sparse = session / "checkpoints" / "checkpoint_99_message_appended_20260101_000000_000000.json"
    with sparse.open("wb") as handle:
        handle.truncate(1 << 34)  # 16 GiB that take no disk space
    expect(CorruptCheckpointError, lambda: read_checkpoint_file(sparse), str(sparse), "larger than any")
    manager = CheckpointManager(session)
    expect(CorruptCheckpointError, lambda: manager.load_checkpoint(sparse.stem), str(sparse))
    sparse.unlink()
    with (session / "session_metadata.json").open("r+b") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    expect(
        CorruptCheckpointError,
        lambda: manager.read_document("session_metadata.json"),
        str(session / "session_metadata.json"),
        "larger than any session document",
    )
    manager.close()


def test_a_copy_pattern_bomb_is_corrupt(chat_session: Path, confined: Confined) -> None:
    """A step line of a few bytes can reuse a copy pattern of any size: replaying must not obey it."""
    session = copy_session(chat_session, confined.root / "session")
    path = checkpoint_files(session)[3]
    message = b'{"content":"x","role":"user","name":"u"}'
    targets = b",".join(b"0" for _ in range(10_000))
    log = (
        b'{"history":0,"agent":"a:u","peer":"chat_manager"}\n'
        + b'{"message":' + message + b',"copies":[[[' + targets + b']]],"pattern":0}\n'
        + (b'{"message":' + message + b',"pattern":0}\n') * 2_000  # 20 million appends if obeyed
    )  # fmt: skip
    (session / "checkpoints" / LOG_FILE).write_bytes(log)
    reseal(path, lambda r: r["log"].update(size=len(log), sha256=hashlib.sha256(log).hexdigest()))
    expect(CorruptCheckpointError, lambda: read_checkpoint_file(path), str(path), "copy patterns expand")


def test_paths_that_are_not_checkpoint_files(chat_session: Path, confined: Confined) -> None:
    root = confined.root
    session = copy_session(chat_session, root / "session")
    expect(CheckpointNotFoundError, lambda: read_checkpoint_file(root / ("a" * 300 + ".json")), "too long")
    expect(CheckpointNotFoundError, lambda: read_checkpoint_file(str(root / "a\0b.json")), "NUL character")
    expect(CheckpointNotFoundError, lambda: CheckpointManager(str(root / "a\0b")), "NUL character")
    expect(CheckpointNotFoundError, lambda: open_store(f"sqlite:///{root}/a\0b.db"), "NUL character")
    expect(CheckpointNotFoundError, lambda: read_checkpoint_file(session), "is a directory", str(session))
    expect(
        CheckpointNotFoundError,
        lambda: read_checkpoint_file(session / "session_metadata.json" / "x.json"),
        "Not a directory",
    )
    expect(CheckpointNotFoundError, lambda: load_reference(root / ("b" * 300 + ".json")), "too long")
    expect(
        CheckpointNotFoundError, lambda: CheckpointManager(root / ("c" * 300)).list_checkpoints(), "too long"
    )
    not_utf8 = root / "latin1.json"
    not_utf8.write_bytes(b'{"checkpoint_id": "\xe9t\xe9"}')
    expect(CorruptCheckpointError, lambda: read_checkpoint_file(not_utf8), "UTF-8", str(not_utf8))
    deep = root / "deep.json"
    deep.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    expect(CorruptCheckpointError, lambda: read_checkpoint_file(deep), str(deep))


def test_directories_where_session_files_belong(chat_session: Path, confined: Confined) -> None:
    session = copy_session(chat_session, confined.root / "session")
    path = checkpoint_files(session)[3]
    log = session / "checkpoints" / LOG_FILE
    log.unlink()
    log.mkdir()
    expect(CorruptCheckpointError, lambda: read_checkpoint_file(path), str(path), "not a regular file")
    commits = session / "checkpoints" / COMMIT_FILE
    commits.unlink()
    commits.mkdir()
    manager = CheckpointManager(session)
    # The commit file is what lists a session: in its place a directory is damage, reported by name ...
    expect(CorruptCheckpointError, manager.list_checkpoints, str(commits), "not a regular file")
    manager.close()
    log.rmdir()
    log.write_bytes(b"")
    # ... while each record file is checked on its own (here against the emptied log).
    expect(CorruptCheckpointError, lambda: read_checkpoint_file(path), str(path), "truncated")

    odd = confined.root / "odd"
    odd.mkdir()
    (odd / "checkpoints").write_text("not a directory")
    manager = CheckpointManager(odd)
    expect(CorruptCheckpointError, manager.list_checkpoints, str(odd / "checkpoints"), "not a directory")
    expect(CorruptCheckpointError, manager.latest_checkpoint_id, str(odd / "checkpoints"))
    manager.close()
    a_file = confined.root / "a_file"
    a_file.write_text("x")
    expect(CheckpointNotFoundError, CheckpointManager(a_file).list_checkpoints, "not a session directory")
    assert FileStore(a_file).list_sessions() == []


# -- hostile SQLite files -----------------------------------------------------------------------------------


def _sqlite_session(path: Path) -> str:
    """A SQLite store at ``path`` holding the session "chat" of a real round-robin chat; returns its URL."""
    url = f"sqlite:///{path}"
    scenario = all_scenarios()["round_robin"]()
    cm = CheckpointManager(url, session_id="chat")
    scenario.run(scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=cm))
    cm.close()
    assert cm.backing_store is not None
    cm.backing_store.close()  # type: ignore[attr-defined]  (folds the WAL in: nothing left open)
    return url


def test_a_file_that_is_not_a_database(confined: Confined) -> None:
    path = confined.root / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = path.read_bytes()
    url = f"sqlite:///{path}"
    for call in (
        lambda: open_store(url).list_sessions(),
        lambda: CheckpointManager(url, session_id="s").list_checkpoints(),
        lambda: CheckpointManager(url, session_id="s").read_document("session_metadata.json"),
        lambda: load_reference(f"{url}#s/checkpoint_1").load(),
        lambda: CheckpointRestorer().continue_from(f"{url}#s/checkpoint_1", max_rounds=1),
    ):
        expect(CorruptCheckpointError, call, url, "not a database")
    assert path.read_bytes() == before
    expect(
        CheckpointNotFoundError, lambda: open_store(f"sqlite:///{confined.root}").list_sessions(), "directory"
    )


def test_hostile_rows_of_a_sqlite_store(confined: Confined) -> None:
    path = confined.root / "store.db"
    url = _sqlite_session(path)
    ids = CheckpointManager(url, session_id="chat").list_checkpoints()
    huge = 2**62  # row keys are session * 2**32 + seq: beyond SQLite's 64-bit integers
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints=ON")
        conn.execute("UPDATE cs_sessions SET id = ? WHERE session_id = 'chat'", (huge,))
        conn.execute("UPDATE cs_checkpoints SET session = ?", (huge,))
    finally:
        conn.close()
    reader = CheckpointManager(url, session_id="chat")
    expect(CorruptCheckpointError, lambda: reader.load_checkpoint(ids[2]), ids[2], "invalid session key")
    reader.close()

    path2 = confined.root / "store2.db"
    url2 = _sqlite_session(path2)
    reader = CheckpointManager(url2, session_id="chat")
    ids = reader.list_checkpoints()
    conn = sqlite3.connect(path2, isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints=ON")
        conn.execute("UPDATE cs_checkpoints SET seq = 4611686018427387904 WHERE checkpoint_id = ?", (ids[2],))
        conn.execute("UPDATE cs_checkpoints SET seq = 'x' WHERE checkpoint_id = ?", (ids[3],))
        conn.execute("UPDATE cs_documents SET value = 'not json' WHERE name = 'session_metadata.json'")
        record = orjson.loads(
            conn.execute("SELECT record FROM cs_checkpoints WHERE checkpoint_id = ?", (ids[4],)).fetchone()[0]
        )
        record.pop("integrity")
        record["log"]["size"] = 2**40
        record["integrity"] = hashlib.sha256(dumps_sorted(record)).hexdigest()
        conn.execute(
            "UPDATE cs_checkpoints SET record = ? WHERE checkpoint_id = ?", (orjson.dumps(record), ids[4])
        )
    finally:
        conn.close()
    expect(CorruptCheckpointError, lambda: reader.load_checkpoint(ids[2]), ids[2], "invalid log chunk number")
    expect(CorruptCheckpointError, lambda: reader.load_checkpoint(ids[3]), ids[3], "invalid log chunk number")
    expect(CorruptCheckpointError, lambda: reader.load_checkpoint(ids[4]), ids[4], f"needs {2**40}")
    expect(CorruptCheckpointError, lambda: reader.read_document("session_metadata.json"), "not valid JSON")
    reader.close()


# -- store URLs of no known backend -------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "s3://bucket/checkpoints", "REDIS://:pw@h/0"])
def test_unknown_store_schemes_are_refused(url: str, confined: Confined) -> None:
    scheme = url.split("://")[0]
    needles = (f"unsupported store URL scheme {scheme!r}", "sqlite://", "postgresql://", "file://")
    expect(UnsupportedStoreError, lambda: open_store(url), *needles)
    expect(UnsupportedStoreError, lambda: CheckpointManager(url), *needles)
    expect(UnsupportedStoreError, lambda: CheckpointManager(store=url, session_id="s"), *needles)
    expect(UnsupportedStoreError, lambda: load_reference(f"{url}#s/checkpoint_1"), *needles)
    expect(UnsupportedStoreError, lambda: load_reference(url), *needles)
    expect(UnsupportedStoreError, lambda: load_reference("checkpoint_1", store=url), *needles)
    expect(UnsupportedStoreError, lambda: CheckpointManager.load_checkpoint_file(f"{url}#s/c"), *needles)
    expect(UnsupportedStoreError, lambda: CheckpointRestorer().continue_from(f"{url}#s/c"), *needles)
    scenario = all_scenarios()["round_robin"]()
    expect(
        UnsupportedStoreError,
        lambda: scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=url),
        *needles,
    )
    for argv in (["list", url], ["list", f"{url}#s"], ["show", f"{url}#s/c"], ["continue", f"{url}#s/c"]):
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            assert cli_main(argv) == 2
        assert "unsupported store URL scheme" in stderr.getvalue()
    with pytest.raises(UnsupportedStoreError) as info:
        open_store(url)
    assert ":pw@" not in str(info.value)  # no password in messages
    # plain paths stay paths (the case wrote nothing: ``confined`` checks the working directory)
    for path in ("logs/session_1", "C:\\logs\\session", "./redis:/localhost"):
        assert not is_store_url(path)
        assert isinstance(open_store(path), FileStore)


# -- a second writer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["files", "sqlite"])
def test_a_second_writer_gets_session_locked_error_itself(backend: str, confined: Confined) -> None:
    target = str(confined.root / "session") if backend == "files" else f"sqlite:///{confined.root}/c.db"
    extra = {} if backend == "files" else {"session_id": "chat"}
    first = CheckpointManager(target, **extra)
    holder = all_scenarios()["round_robin"]()
    holder.run(holder.make_manager(CheckpointingGroupChatManager, checkpoint_manager=first))  # holds it
    second = CheckpointManager(target, **extra)
    scenario = all_scenarios()["round_robin"]()
    manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=second)
    error = expect(SessionLockedError, lambda: scenario.run(manager), "writ")
    assert isinstance(error, CheckpointSaveError)  # caught by 'except CheckpointSaveError' too
    assert not isinstance(error.__cause__, CheckpointError)  # raised as itself, not wrapped
    warn = CheckpointManager(target, on_save_error="warn", **extra)
    scenario = all_scenarios()["round_robin"]()
    with pytest.warns(RuntimeWarning, match="checkpoint not saved"):
        scenario.run(scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=warn))
    assert len(warn.failed_saves) == len(scenario.groupchat.messages) + 2  # every save refused, none lost
    for manager_ in (warn, second, first):
        manager_.close()


def test_a_second_postgres_writer_gets_session_locked_error_itself(
    postgres_url: str,  # noqa: F811
    confined: Confined,
) -> None:
    first = CheckpointManager(postgres_url, session_id="chat")
    holder = all_scenarios()["round_robin"]()
    holder.run(holder.make_manager(CheckpointingGroupChatManager, checkpoint_manager=first))
    second = CheckpointManager(postgres_url, session_id="chat")
    scenario = all_scenarios()["round_robin"]()
    manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=second)
    expect(SessionLockedError, lambda: scenario.run(manager), "chat")
    second.close()
    first.close()


# -- another user's directories -----------------------------------------------------------------------------


def _read_only_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            os.chmod(Path(directory) / name, 0o444)
        os.chmod(directory, 0o555)


def test_a_session_another_user_keeps_private(
    chat_session: Path, public_dir: Path, confined: Confined
) -> None:
    session = copy_session(chat_session, public_dir / "private")
    store_root = public_dir / "closed_store"
    copy_session(chat_session, store_root / "session")
    first = checkpoint_files(session)[3]
    before = tree_digest(session)
    os.chmod(session, 0o000)  # nobody (and, without root, even its owner) may look inside
    os.chmod(store_root, 0o000)

    def check() -> None:
        denied = "Permission denied"
        expect(CheckpointAccessError, lambda: read_checkpoint_file(first), str(first), denied)
        expect(
            CheckpointAccessError, lambda: CheckpointManager.load_checkpoint_file(first), str(first), denied
        )
        expect(CheckpointAccessError, lambda: CheckpointRestorer().continue_from(first, max_rounds=1), denied)
        manager = CheckpointManager(session)
        checkpoints = str(session / "checkpoints")
        expect(CheckpointAccessError, manager.list_checkpoints, checkpoints, denied)
        expect(CheckpointAccessError, manager.latest_checkpoint_id, checkpoints, denied)
        expect(CheckpointAccessError, lambda: manager.load_checkpoint(first.stem), denied)
        expect(CheckpointAccessError, lambda: manager.read_document("session_metadata.json"), denied)
        manager.close()
        expect(CheckpointAccessError, lambda: FileStore(store_root).list_sessions(), str(store_root), denied)
        expect(CheckpointAccessError, lambda: open_store(f"file://{store_root}").list_sessions(), denied)
        error = expect(CheckpointAccessError, lambda: read_checkpoint_file(first))
        assert isinstance(error, PermissionError) and error.errno == errno.EACCES
        stderr = io.StringIO()
        with redirect_stderr(stderr):
            assert cli_main(["list", str(session)]) == 2
        assert denied in stderr.getvalue()

    as_other_user(check)
    os.chmod(session, 0o755)
    os.chmod(store_root, 0o755)
    assert tree_digest(session) == before


def test_a_session_another_user_shares_read_only(
    chat_session: Path, public_dir: Path, confined: Confined
) -> None:
    session = copy_session(chat_session, public_dir / "shared")
    url = _sqlite_session(public_dir / "databases" / "c.db")
    first = checkpoint_files(session)[3]
    transcript = plain_transcript(all_scenarios()["round_robin"])
    _read_only_tree(session)
    _read_only_tree(public_dir / "databases")
    before = tree_digest(session)

    def check() -> None:
        denied = "Permission denied"
        reader = CheckpointManager(session)  # reading is allowed
        assert reader.list_checkpoints() == [p.stem for p in checkpoint_files(session)]
        assert reader.load_checkpoint(first.stem).step_number == 3
        reader.close()
        expect(
            CheckpointAccessError,
            lambda: CheckpointRestorer().continue_from(first, max_rounds=1),
            "cannot create the continuation directory",
            str(session / "continuation_"),
            denied,
            "continuation_dir=",
        )
        scenario = all_scenarios()["round_robin"]()
        new = session / "new"
        expect(  # given a manager without a problem context, the constructor writes it into the metadata
            CheckpointSaveError,
            lambda: scenario.make_manager(
                CheckpointingGroupChatManager,
                checkpoint_manager=CheckpointManager(new),
                problem_context="daycare",
            ),
            str(new / "session_metadata.json"),
            denied,
        )
        manager = scenario.make_manager(
            CheckpointingGroupChatManager, checkpoint_manager=CheckpointManager(new)
        )
        expect(CheckpointSaveError, lambda: scenario.run(manager), denied)
        # "warn": the chat runs to its end, every save failed and recorded
        scenario = all_scenarios()["round_robin"]()
        cm = CheckpointManager(new, on_save_error="warn")
        with pytest.warns(RuntimeWarning, match="not saved"):
            scenario.run(scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=cm))
        assert scenario.groupchat.messages == transcript
        assert len(cm.failed_saves) == len(transcript) + 2
        assert all(denied in failure["error"] for failure in cm.failed_saves)
        with pytest.warns(RuntimeWarning, match="session documents not written"):
            cm.close()
        # a closed SQLite store is one plain file (no WAL): a user who may not write it, nor its directory,
        # reads it; writing is refused
        assert open_store(url, create=False).list_sessions() == ["chat"]
        assert len(CheckpointManager(url, session_id="chat").list_checkpoints()) == len(transcript) + 2
        scenario = all_scenarios()["round_robin"]()
        cm = CheckpointManager(url, session_id="other")
        manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=cm)
        expect(CheckpointSaveError, lambda: scenario.run(manager), url, "readonly")

    as_other_user(check)
    assert tree_digest(session) == before


# -- a read-only file system and a full disk (tmpfs) --------------------------------------------------------


def test_a_read_only_file_system(chat_session: Path, tmpfs: Callable[..., Tmpfs], confined: Confined) -> None:
    fs = tmpfs("8m")
    session = copy_session(chat_session, fs.path / "session")
    url = _sqlite_session(fs.path / "c.db")
    first = checkpoint_files(session)[3]
    fs.read_only()
    before = tree_digest(session)
    read_only = "Read-only file system"

    reader = CheckpointManager(session)
    assert reader.list_checkpoints() == [p.stem for p in checkpoint_files(session)]
    assert reader.load_checkpoint(first.stem).step_number == 3
    reader.close()
    error = expect(
        CheckpointAccessError,
        lambda: CheckpointRestorer().continue_from(first, max_rounds=1),
        str(session / "continuation_"),
        read_only,
    )
    assert error.errno == errno.EROFS
    scenario = all_scenarios()["round_robin"]()
    expect(
        CheckpointSaveError,
        lambda: scenario.make_manager(
            CheckpointingGroupChatManager,
            checkpoint_manager=CheckpointManager(fs.path / "new"),
            problem_context="daycare",
        ),
        str(fs.path / "new" / "session_metadata.json"),
        read_only,
    )
    manager = scenario.make_manager(
        CheckpointingGroupChatManager, checkpoint_manager=CheckpointManager(fs.path / "new")
    )
    expect(CheckpointSaveError, lambda: scenario.run(manager), read_only)
    expect(CheckpointAccessError, lambda: open_store(f"sqlite:///{fs.path}/new.db").list_sessions(), "new.db")
    with contextlib.suppress(CheckpointAccessError):  # SQLite may read a WAL file on a read-only mount
        assert open_store(url).list_sessions() == ["chat"]
    assert tree_digest(session) == before


def _saves_accounted_for(
    target: str, session_id: str | None, transcript: list[dict[str, Any]], *, ended: bool
) -> dict[str, Any]:
    """The session's metadata tells the truth: status, every save either listed or in failed_saves, the list,
    the transcript; every listed checkpoint loads."""
    metadata = metadata_of(target, session_id)
    reader = CheckpointManager(target, session_id=session_id) if session_id else CheckpointManager(target)
    try:
        listed = reader.list_checkpoints()
        failed = metadata["failed_saves"]
        assert metadata["status"] == "completed"
        assert failed, "the disk was full for many messages: some saves must have failed"
        assert all("No space left" in f["error"] or "disk is full" in f["error"] for f in failed), failed
        assert metadata["checkpoint_count"] == len(listed) == len(transcript) + 2 - len(failed)
        assert metadata["checkpoints"] == listed and metadata["latest_checkpoint"] == listed[-1]
        assert reader.read_document("chat_history.json") == orjson.loads(orjson.dumps(transcript))
        loaded = [reader.load_checkpoint(checkpoint_id) for checkpoint_id in listed]
    finally:
        reader.close()
    assert [c.step_number for c in loaded] == sorted(c.step_number for c in loaded)
    if ended:
        assert loaded[-1].context == "conversation_end"
        assert loaded[-1].messages == orjson.loads(orjson.dumps(transcript))
    return metadata


@pytest.mark.parametrize("room_again", ["mid-chat", "after the run"])
@pytest.mark.parametrize("backend", ["files", "sqlite"])
def test_warn_keeps_a_chat_running_through_a_full_disk(
    backend: str, room_again: str, tmpfs: Callable[..., Tmpfs], confined: Confined
) -> None:
    fs = tmpfs("1m")
    target = str(fs.path / "session") if backend == "files" else f"sqlite:///{fs.path}/c.db"
    session_id = None if backend == "files" else "chat"
    transcript = plain_transcript(long_chat)
    scenario = long_chat()
    at_message(scenario, {2: fs.fill, 16: fs.free} if room_again == "mid-chat" else {2: fs.fill})
    cm = CheckpointManager(target, on_save_error="warn", session_id=session_id)
    manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=cm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scenario.run(manager)
    told = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert sum("checkpoint not saved" in text for text in told) == len(cm.failed_saves)
    if room_again == "after the run":  # the run's end could not write its documents either, and said so
        assert any("session document chat_history.json not written" in text for text in told)
    assert scenario.groupchat.messages == transcript  # the chat itself never noticed
    assert manager.last_termination_reason == "Maximum rounds (24) reached"
    if room_again == "mid-chat":  # the end of the run wrote the truth
        metadata = _saves_accounted_for(target, session_id, transcript, ended=True)
        assert metadata["failed_saves"] == cm.failed_saves
    else:  # the end of the run could not write; close() does, once there is room
        fs.free()
    cm.close()
    metadata = _saves_accounted_for(target, session_id, transcript, ended=room_again == "mid-chat")
    assert metadata["failed_saves"] == cm.failed_saves


@pytest.mark.parametrize("backend", ["files", "sqlite"])
def test_raise_stops_a_chat_on_a_full_disk(
    backend: str, tmpfs: Callable[..., Tmpfs], confined: Confined
) -> None:
    fs = tmpfs("1m")
    target = str(fs.path / "session") if backend == "files" else f"sqlite:///{fs.path}/c.db"
    session_id = None if backend == "files" else "chat"
    scenario = long_chat()
    at_message(scenario, {2: fs.fill})
    cm = CheckpointManager(target, session_id=session_id)
    manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=cm)
    error = expect(CheckpointSaveError, lambda: scenario.run(manager))
    assert "No space left" in str(error) or "disk is full" in str(error)
    assert len(scenario.groupchat.messages) < 24
    fs.free()
    cm.close()
    metadata = metadata_of(target, session_id)
    assert metadata["status"] == "error" and metadata["failed_saves"] == cm.failed_saves
    assert metadata["error"]["type"] == "CheckpointSaveError"


def test_continue_from_on_a_full_disk(
    chat_session: Path, tmpfs: Callable[..., Tmpfs], confined: Confined
) -> None:
    fs = tmpfs("1m")
    session = copy_session(chat_session, fs.path / "session")
    first = checkpoint_files(session)[3]
    listed = [p.stem for p in checkpoint_files(session)]

    def read() -> None:
        reader = CheckpointManager(session)  # (a reader takes the session's lock file: made here, once)
        assert reader.list_checkpoints() == listed
        assert reader.load_checkpoint(first.stem).step_number == 3
        reader.close()

    read()
    before = tree_digest(session)
    fs.fill()
    expect(
        CheckpointSaveError,
        lambda: CheckpointRestorer().continue_from(first, max_rounds=2),
        "No space left",
        str(session / "continuation_"),
    )
    read()  # readers are not affected
    fs.free()
    assert tree_digest(session) == before


def test_warn_keeps_a_postgres_chat_running_through_a_full_disk(
    postgres_server: PostgresServer,  # noqa: F811
    public_dir: Path,
    tmpfs: Callable[..., Tmpfs],
    confined: Confined,
) -> None:
    """The server's disk fills: the database lives in a tablespace on a tmpfs the server can reach."""
    import psycopg

    fs = tmpfs("48m", where=public_dir)
    if postgres_server.as_postgres:
        shutil.chown(fs.path, "postgres", "postgres")
    suffix = os.urandom(4).hex()
    tablespace, database = f"full_{suffix}", f"full_disk_{suffix}"
    transcript = plain_transcript(long_chat)
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE TABLESPACE {tablespace} LOCATION '{fs.path}'")
        try:
            admin.execute(f'CREATE DATABASE "{database}" TEMPLATE template0 TABLESPACE {tablespace}')
            url = postgres_server.url(database)
            scenario = long_chat()
            at_message(scenario, {2: fs.fill, 16: fs.free})
            cm = CheckpointManager(url, session_id="chat", on_save_error="warn")
            manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=cm)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scenario.run(manager)
            told = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
            assert sum("checkpoint not saved" in text for text in told) == len(cm.failed_saves)
            assert scenario.groupchat.messages == transcript
            _saves_accounted_for(url, "chat", transcript, ended=True)
            cm.close()
            assert cm.backing_store is not None
            cm.backing_store.close()  # type: ignore[attr-defined]
        finally:
            fs.free()
            gc.collect()
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f"DROP TABLESPACE IF EXISTS {tablespace}")
