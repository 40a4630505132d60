"""Links and special files inside a file session: never followed out of the session, never a hang, never an
unbounded read, never a write elsewhere.

A real 10-checkpoint group chat is recorded once per module; each case works on a copy under the test's own
directory and replaces one part of it: ``message_log.jsonl`` or ``committed.jsonl`` by a symlink to a file
outside the session (a valid copy of the real file with an unterminated last line, so that a truncation or an
append would show), a FIFO, ``/dev/zero``, a record file linked to another session's record, the whole
``checkpoints/`` directory linked elsewhere. Readers go through ``CheckpointManager(path)``,
``read_checkpoint_file`` and ``CheckpointRestorer.continue_from``; writers reopen the session and save one
more checkpoint. Operations that could hang or read without bound run in a thread with a timeout or in a
child process (``tests/storage_probe.py``) under an address-space limit. Every case checks that the outside
target is byte-for-byte unchanged and, through ``confined``, that nothing was written into the working
directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from autogen import GroupChat
from conftest import Confined, RecordedSession, comparable, copy_tree, file_states, record_session
from restore_support import TESTS_DIR, subprocess_env
from scenarios import all_scenarios

from checkpoint_system import (
    CheckpointData,
    CheckpointError,
    CheckpointManager,
    CheckpointRestorer,
    export_checkpoint,
    read_checkpoint_file,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX links, FIFOs and /dev/zero")

LOG = "message_log.jsonl"
COMMIT = "committed.jsonl"
MAX_ROUND = 8
PROBE = TESTS_DIR / "storage_probe.py"
#: a child that takes longer than this hangs (a real run takes about 3 s, most of it importing AG2)
PROBE_TIMEOUT = 30.0
#: the most a child may grow while reading a hostile session
RSS_LIMIT_KIB = 200 * 1024
HANG_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> RecordedSession:
    session = record_session(tmp_path_factory.mktemp("links") / "session", max_round=MAX_ROUND)
    assert len(session.ids) == MAX_ROUND + 2
    return session


def _copy(recorded: RecordedSession, confined: Confined, name: str = "session") -> Path:
    return copy_tree(recorded.path, confined.root / name)


def _outside(confined: Confined) -> Path:
    directory = confined.root / "outside"
    directory.mkdir(exist_ok=True)
    return directory


def _fingerprint(data: CheckpointData) -> str:
    """As ``storage_probe.fingerprint``: sha256 of ``comparable(data)``."""
    return hashlib.sha256(orjson.dumps(comparable(data), option=orjson.OPT_SORT_KEYS)).hexdigest()


def _reader_problems(
    root: Path, recorded: RecordedSession, *, must_refuse: bool, also_saved: str | None = None
) -> list[str]:
    """List and load every original checkpoint as a reader. Any exception other than ``CheckpointError``
    propagates. A load must equal what was saved or raise ``CheckpointError`` (with ``must_refuse``: raise);
    the list holds only saved ids (the recorded ones and ``also_saved``)."""
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manager = CheckpointManager(root)
        try:
            try:
                listed = manager.list_checkpoints()
            except CheckpointError:
                listed = []
            phantoms = [cid for cid in listed if cid not in recorded.ids and cid != also_saved]
            if phantoms:
                problems.append(f"phantom checkpoints listed: {phantoms}")
            for checkpoint_id in recorded.ids:
                try:
                    data = manager.load_checkpoint(checkpoint_id)
                except CheckpointError:
                    continue
                if must_refuse:
                    problems.append(f"{checkpoint_id} loaded (read through the link) instead of an error")
                elif comparable(data) != recorded.expected(checkpoint_id):
                    problems.append(f"{checkpoint_id} loaded other data than was saved")
        finally:
            manager.close()
    return problems


def _reopen_and_save(root: Path, recorded: RecordedSession) -> str | None:
    """Reopen the session as a writer and save one more checkpoint: its id, or None after a
    ``CheckpointError`` (anything else propagates)."""
    newest = recorded.checkpoints[recorded.ids[-1]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            manager = CheckpointManager(root)
            try:
                step = manager.next_step_number()
                update = {
                    "step_number": step,
                    "context": "manual",
                    "checkpoint_id": "again",
                    "integrity": None,
                }
                manager.save_checkpoint(newest.model_copy(update=update))
            finally:
                manager.close()
        except CheckpointError:
            return None
    return "saved"


def _probe(confined: Confined, operation: str, *paths: Path) -> dict[str, Any]:
    """Run ``storage_probe.py`` in a child from the empty working directory; a timeout is a hang."""
    try:
        done = subprocess.run(
            [sys.executable, str(PROBE), operation, *map(str, paths)],
            cwd=confined.cwd,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{operation} {paths}: no answer within {PROBE_TIMEOUT} s (a hang or an unbounded read)")
    lines = done.stdout.strip().splitlines()
    assert lines, f"{operation}: the probe printed nothing (exit {done.returncode}): {done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _standalone(recorded: RecordedSession, confined: Confined) -> Path:
    """The newest checkpoint as a standalone export (what a probe's writer saves again)."""
    return export_checkpoint(recorded.checkpoints[recorded.ids[-1]], confined.root / "newest_export.json")


def _factory() -> GroupChat:
    groupchat = all_scenarios()["round_robin"]().groupchat
    groupchat.max_round = MAX_ROUND
    return groupchat


def _run_with_timeout(call: Callable[[], Any], timeout: float, unblock: Callable[[], None]) -> dict[str, Any]:
    """``call()`` in a daemon thread: {"value"} / {"error"}, or {"hung": True} after ``timeout`` seconds (then
    ``unblock()`` is called so that the thread can end)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        result["hung"] = True
        unblock()
        thread.join(5)
    return result


# -- links to files outside the session ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [LOG, COMMIT])
def test_a_session_file_linked_outside_is_neither_followed_nor_written(
    name: str, recorded: RecordedSession, confined: Confined
) -> None:
    root = _copy(recorded, confined)
    inside = root / "checkpoints" / name
    target = _outside(confined) / f"someone_elses_{name}"
    target.write_bytes(inside.read_bytes() + b'{"unterminated": "last line')
    inside.unlink()
    inside.symlink_to(target)
    before = file_states(target.parent)

    # The log is what every load replays: read through the link it would be read outside the session.
    problems = _reader_problems(root, recorded, must_refuse=name == LOG)
    saved = _reopen_and_save(root, recorded)
    if saved is not None:
        problems.append(f"a writer reopening the session with {name} linked outside saved {saved}")
    problems += _reader_problems(root, recorded, must_refuse=name == LOG, also_saved=saved)
    if file_states(target.parent) != before:
        problems.append(f"the link's target was written: {target.read_bytes()[-120:]!r}")
    assert inside.is_symlink(), "the link was replaced"
    assert not problems, "\n".join(problems)


def test_a_record_linked_to_another_sessions_record(recorded: RecordedSession, confined: Confined) -> None:
    """The record of checkpoint 5 is a link to another session's record of checkpoint 3 (a copy of this
    session, so that record is valid against this session's log). Following it would load checkpoint 3 under
    checkpoint 5's name, and a continuation from it would be created in the other session's directory."""
    root = _copy(recorded, confined)
    other = copy_tree(recorded.path, _outside(confined) / "other_session")
    linked, donor = recorded.ids[5], recorded.ids[3]
    record = recorded.record_path(linked, root)
    record.unlink()
    record.symlink_to(recorded.record_path(donor, other))
    before = file_states(other)

    problems = _reader_problems(root, recorded, must_refuse=False)
    try:
        data = read_checkpoint_file(record)
        if comparable(data) != recorded.expected(linked):
            problems.append(
                f"read_checkpoint_file({record.name}) returned another checkpoint ({data.checkpoint_id})"
            )
    except CheckpointError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = CheckpointRestorer(agent_factory=_factory).continue_from(record, max_rounds=1)
        if result.directory is None or result.directory.resolve().parent != root.resolve():
            problems.append(f"the continuation was created in {result.directory}, not in the session")
        start = len(recorded.checkpoints[linked].messages)
        if result.restored.groupchat.messages[:start] != recorded.checkpoints[linked].messages:
            problems.append("the continuation started from another checkpoint's messages")
    except CheckpointError:
        pass
    if file_states(other) != before:
        added = sorted(set(file_states(other)) - set(before))
        problems.append(f"the other session was written: new {added[:5]}")
    assert not problems, "\n".join(problems)


def test_the_checkpoints_directory_linked_outside(recorded: RecordedSession, confined: Confined) -> None:
    root = _copy(recorded, confined)
    elsewhere = _outside(confined) / "elsewhere"
    elsewhere.mkdir()
    shutil.move(root / "checkpoints", elsewhere / "checkpoints")
    (root / "checkpoints").symlink_to(elsewhere / "checkpoints", target_is_directory=True)
    before = file_states(elsewhere)

    problems = _reader_problems(root, recorded, must_refuse=True)
    saved = _reopen_and_save(root, recorded)
    if saved is not None:
        problems.append(f"a writer reopening the session with checkpoints/ linked outside saved {saved}")
    middle = root / "checkpoints" / f"{recorded.ids[4]}.json"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = CheckpointRestorer(agent_factory=_factory).continue_from(middle, max_rounds=1)
        if result.directory is None or result.directory.resolve().parent != root.resolve():
            problems.append(f"the continuation was created in {result.directory}, not in the session")
    except CheckpointError:
        pass
    if file_states(elsewhere) != before:
        added = sorted(set(file_states(elsewhere)) - set(before))
        problems.append(f"the directory the link points to was written: new {added[:5]}")
    assert not problems, "\n".join(problems)


# -- special files: FIFOs and devices -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [COMMIT, LOG])
def test_a_fifo_in_place_of_a_session_file_never_hangs(
    name: str, recorded: RecordedSession, confined: Confined
) -> None:
    root = _copy(recorded, confined)
    fifo = root / "checkpoints" / name
    fifo.unlink()
    os.mkfifo(fifo)

    def unblock() -> None:  # give a blocked reader its end of file
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return
        os.close(fd)

    def read_all() -> list[str]:
        return _reader_problems(root, recorded, must_refuse=name == LOG)

    result = _run_with_timeout(read_all, HANG_TIMEOUT, unblock)
    assert not result.get("hung"), f"listing or loading with {name} a FIFO hung for {HANG_TIMEOUT} s"
    assert "error" not in result, f"not a CheckpointError: {result.get('error')!r}"
    assert result["value"] == []

    report = _probe(confined, "write", root, _standalone(recorded, confined))
    assert report["outcome"] == "CheckpointError", report
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced"


@pytest.mark.parametrize("what", ["log", "record"])
def test_dev_zero_in_place_of_a_session_file_is_refused_with_bounded_reads(
    what: str, recorded: RecordedSession, confined: Confined
) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    root = _copy(recorded, confined)
    linked = recorded.ids[6]
    path = root / "checkpoints" / LOG if what == "log" else recorded.record_path(linked, root)
    path.unlink()
    path.symlink_to("/dev/zero")
    expected = {cid: _fingerprint(data) for cid, data in recorded.checkpoints.items()}

    reports = {"read": _probe(confined, "read", root)}
    if what == "record":
        reports["read-file"] = _probe(confined, "read-file", path)
    reports["write"] = _probe(confined, "write", root, _standalone(recorded, confined))
    for operation, report in reports.items():
        assert report["outcome"] in ("ok", "CheckpointError"), (operation, report)
        assert report["rss_growth_kib"] < RSS_LIMIT_KIB, (operation, report)
    read = reports["read"]
    for checkpoint_id, fingerprint in (read.get("loads") or {}).items():
        assert checkpoint_id in expected, f"phantom {checkpoint_id}"
        if what == "log":
            assert fingerprint == "refused", f"{checkpoint_id} loaded with /dev/zero as its log"
        else:
            assert fingerprint in ("refused", expected[checkpoint_id]), f"{checkpoint_id} loaded other data"
    if what == "log":
        assert reports["write"]["outcome"] == "CheckpointError", reports["write"]
    else:
        assert reports["read-file"]["outcome"] == "CheckpointError", reports["read-file"]
    assert path.is_symlink() and os.readlink(path) == "/dev/zero", "the link was replaced"
