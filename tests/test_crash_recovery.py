"""Crash recovery: a chat process killed with SIGKILL at random moments leaves only loadable checkpoints.

A child process (``tests/crash_child.py serve``, run with this interpreter) forks one worker per trial; each
worker runs a 64-message deterministic round robin into its own session directory and reports every
checkpoint it saved. The test kills the worker with SIGKILL after a seeded random delay, then checks the
session on disk: every checkpoint file loads (no partial files; stray temporaries are not listed), the
newest holds every message the worker reported as checkpointed and nothing but a prefix of the reference
transcript, the session can be reopened for writing (a torn log tail is cut), and continuing from the newest
checkpoint finishes the chat exactly like an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from crash_child import MAX_ROUND, run_chat
from restore_support import REPO_ROOT, TESTS_DIR, run_original, subprocess_env

from checkpoint_system import CheckpointData, CheckpointManager, CheckpointRestorer, read_checkpoint_file
from checkpoint_system.storage.files import FileSessionStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and SIGKILL (POSIX)")

TRIALS = 20
SEED = 20261121
CHILD = TESTS_DIR / "crash_child.py"
#: Stray files a killed writer may leave next to the checkpoints (never listed as checkpoints).
STRAY = re.compile(r"^\.checkpoint_.*\.tmp$")
LOG = "message_log.jsonl"
COMMIT = "committed.jsonl"


class Child:
    """The forking child process and its line protocol."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=subprocess_env(),
        )
        self.read("ready", "start")

    def read(self, expect: str, command: str, timeout: float = 60.0) -> list[str]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, f"the child did not answer {command!r} within {timeout} s"
        answer = self.process.stdout.readline().split()
        assert answer and answer[0] == expect, f"{command!r} -> {answer!r}"
        return answer[1:]

    def ask(self, command: str, expect: str) -> list[str]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read(expect, command)

    def close(self) -> None:
        try:
            if self.process.poll() is None and self.process.stdin is not None:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def _reported(progress: Path) -> list[tuple[str, int]]:
    """(checkpoint id, message count) lines the worker wrote after each saved checkpoint."""
    if not progress.exists():
        return []
    lines = progress.read_bytes().split(b"\n")[:-1]  # only complete lines
    return [(cid, int(count)) for cid, count in (line.decode().split() for line in lines)]


def _check_files(session: Path) -> list[str]:
    """Every file next to the checkpoints is a checkpoint, the log, the commit file or a stray temporary;
    returns the ids."""
    directory = session / "checkpoints"
    ids = FileSessionStore(session).list_checkpoints()
    listed = {f"{cid}.json" for cid in ids}
    for name in os.listdir(directory):
        assert name in listed or name in (LOG, COMMIT) or STRAY.match(name), f"unexpected file {name}"
    for cid in ids:
        assert re.fullmatch(r"checkpoint_\d+_[A-Za-z0-9_-]+", cid), cid
    return ids


def _reopen_and_write(session: Path, newest: CheckpointData, count: int) -> None:
    """A new CheckpointManager on the killed session: cuts a torn log tail, removes temporaries, writes."""
    log = session / "checkpoints" / LOG
    raw = log.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    cm = CheckpointManager(session)
    try:
        step = cm.next_step_number()
        assert step == count
        copy = newest.model_copy(
            update={"step_number": step, "context": "manual", "checkpoint_id": "reopened"}
        )
        assert cm.save_checkpoint(copy)
        new_id = cm.latest_checkpoint_id()
        assert new_id is not None and new_id.startswith(f"checkpoint_{step}_manual_")
        again = cm.load_checkpoint(new_id)
        assert again.messages == newest.messages
        assert again.agent_states == newest.agent_states
        assert again.manager_state == newest.manager_state
    finally:
        cm.close()
    after = log.read_bytes()
    assert after.startswith(complete) and after.endswith(b"\n")
    assert not [n for n in os.listdir(session / "checkpoints") if STRAY.match(n)], "temporaries left behind"


def _check_killed_session(session: Path, progress: Path, reference: list[dict[str, Any]]) -> str:
    """All checks of one killed session; returns how far the worker got."""
    error = Path(f"{progress}.error")
    assert not error.exists(), error.read_text()
    reported = _reported(progress)
    if not (session / "checkpoints").is_dir():
        assert reported == []
        return "before the first checkpoint"
    ids = _check_files(session)
    store = FileSessionStore(session)
    # Every committed checkpoint loads, as a reader sees it: from its commit line where the killed writer
    # left no record file (a reader never creates one).
    checkpoints = [store.load(cid) for cid in ids]
    assert [c.step_number for c in checkpoints] == list(range(len(ids))), "a checkpoint was lost or torn"
    for data in checkpoints:
        assert data.messages == reference[: len(data.messages)], data.checkpoint_id
    # Everything the worker reported is on disk; at most the checkpoint it was reporting is not reported.
    assert [cid for cid, _ in reported] == ids[: len(reported)]
    assert len(ids) - len(reported) in (0, 1)
    if not ids:
        assert reported == []
        return "before the first checkpoint"
    newest, newest_path = checkpoints[-1], store.path_of(ids[-1])
    if reported:
        assert len(newest.messages) >= reported[-1][1]
    metadata = session / "session_metadata.json"
    if metadata.exists():
        json.loads(metadata.read_text())  # published atomically: never half written

    _reopen_and_write(session, newest, len(ids))
    # The writer's reopen created the missing record files byte for byte: they load the same.
    assert read_checkpoint_file(newest_path) == newest

    result = CheckpointRestorer().continue_from(newest_path, max_rounds=None)
    if result.ok:
        assert result.restored.groupchat.messages == reference
        assert result.new_messages == reference[len(newest.messages) :]
    else:
        assert newest.messages == reference and "budget" in result.reason
    if newest.context == "conversation_end":
        return "finished"
    return "mid-run"


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    reference = run_chat(str(tmp_path / "reference"), str(tmp_path / "reference.progress"))
    assert len(reference) == MAX_ROUND
    assert len(_reported(tmp_path / "reference.progress")) == MAX_ROUND + 2
    child = Child()
    try:
        # Uninterrupted runs in the child: their duration scales the kill delays, their transcript must match.
        durations = []
        for run in range(2):
            full = tmp_path / f"uninterrupted_{run}"
            started = time.monotonic()
            (pid,) = child.ask(f"run {full} {full}.progress", "pid")
            assert child.ask(f"reap {pid}", "exit") == [pid, "0"]
            durations.append(time.monotonic() - started)
            assert _check_killed_session(full, Path(f"{full}.progress"), reference) == "finished"
        duration = min(durations)

        rng = random.Random(SEED)
        outcomes: list[str] = []
        for trial in range(TRIALS):
            session, progress = tmp_path / f"trial_{trial:02d}", tmp_path / f"trial_{trial:02d}.progress"
            delay = rng.uniform(0.0, 1.1 * duration)
            (pid,) = child.ask(f"run {session} {progress}", "pid")
            time.sleep(delay)
            # The worker is our child's child, reaped only on "reap": alive or a zombie, its pid never reused.
            os.kill(int(pid), signal.SIGKILL)
            (_, code) = child.ask(f"reap {pid}", "exit")
            assert code in ("0", f"-{signal.SIGKILL.value}"), f"trial {trial}: exit {code}"
            outcome = _check_killed_session(session, progress, reference)
            outcomes.append(outcome)
            if code == "0":
                assert outcome == "finished"
    finally:
        child.close()
    assert outcomes.count("mid-run") >= TRIALS // 2, outcomes


def test_reopen_cuts_torn_log_tail_and_ignores_stray_temporaries(tmp_path: Path) -> None:
    original = run_original("round_robin", "sync", tmp_path / "session")
    session = original.session_dir
    directory = session / "checkpoints"
    log = directory / LOG
    good = log.read_bytes()
    assert good.endswith(b"\n")
    with log.open("ab") as handle:
        handle.write(b'{"op": "torn-by-the-test", "value": "no newl')
    stray = directory / ".checkpoint_99_message_appended_20261121_000000_000000.json.4242.deadbeef.tmp"
    stray.write_bytes(b'{"format": "checkpoint_sys')

    ids = _check_files(session)
    assert ids == [p.stem for p in original.checkpoint_paths]
    for path, data in zip(original.checkpoint_paths, original.checkpoints, strict=True):
        assert read_checkpoint_file(path) == data  # a torn tail is referenced by no checkpoint

    newest = original.checkpoints[-1]
    _reopen_and_write(session, newest, len(ids))
    after = log.read_bytes()
    assert after.startswith(good)
    assert b"torn-by-the-test" not in after
    assert not stray.exists()
    for path, data in zip(original.checkpoint_paths, original.checkpoints, strict=True):
        assert read_checkpoint_file(path) == data
    # And the reopened session can still be continued from.
    result = CheckpointRestorer().continue_from(original.path_with(5))
    assert result.restored.groupchat.messages == original.messages
