"""Readers never write: listing, loading, showing, exporting and continuing leave a session tree untouched.

A real session tree is recorded once per module: a 10-checkpoint round robin with two continuations made
by ``CheckpointRestorer().continue_from`` (one with an intervention) and a continuation of the first one.
Each case copies it (``file_states`` compares sha256 and ``st_mtime_ns`` of every file and the set of
paths, hidden ones included) in one of three states: as the writers left it; copied without the
``.writer.lock`` files (a shared or checked-in copy, like ``logs_sample/``); and as a writer killed before it
created its last record files leaves it (their commit lines are there, the files are not). Then every
reader runs: ``list_checkpoints()`` of each session, ``open_store(root).list_sessions()``, the CLI's
``list`` and ``show``, every load, ``read_checkpoint_file``, ``export_checkpoint`` and ``export_session`` to
directories outside the tree, and a ``continue_from``, which may add its own new ``continuation_*``
directory and nothing else. Readers also see every committed checkpoint at once, with or without its record
file.

The last case runs a writer process (a 150-message chat, then 40 reopen-and-save cycles) while four reader
processes poll the session: the writer never fails (no ``SessionLockedError``), and no reader ever sees an
error.
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import comparable, copy_tree, file_states, record_session
from restore_support import REPO_ROOT, TESTS_DIR, subprocess_env

from checkpoint_system import (
    CheckpointManager,
    CheckpointRestorer,
    Intervention,
    export_checkpoint,
    export_session,
    open_store,
    read_checkpoint_file,
)
from checkpoint_system.cli import main as cli_main

LOCK = ".writer.lock"
#: record files a killed writer had not created yet: the parent's last 3, the first continuation's last 2
UNPUBLISHED = (3, 2)
POLLING_CHILD = TESTS_DIR / "polling_child.py"
READERS = 4
WRITER_MESSAGES = 150
WRITER_REOPENS = 40


class Tree:
    """The recorded session tree: session ids (relative to ``root``) and each one's checkpoints as saved."""

    def __init__(self, root: Path, first_continuation: str) -> None:
        self.root = root
        self.first_continuation = first_continuation
        self.expected: dict[str, dict[str, dict[str, Any]]] = {}
        for session_id in open_store(str(root)).list_sessions():
            manager = CheckpointManager(root / session_id)
            try:
                self.expected[session_id] = {
                    cid: comparable(manager.load_checkpoint(cid)) for cid in manager.list_checkpoints()
                }
            finally:
                manager.close()

    @property
    def sessions(self) -> list[str]:
        return list(self.expected)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    root = tmp_path_factory.mktemp("tree")
    recorded = record_session(root / "session", max_round=8)
    restorer = CheckpointRestorer()
    with contextlib.redirect_stdout(io.StringIO()):
        first = restorer.continue_from(recorded.record_path(recorded.ids[3]), max_rounds=3)
        edited = restorer.continue_from(
            recorded.record_path(recorded.ids[6]),
            max_rounds=2,
            interventions=[Intervention.edit(2, "Let us recompute 11 * 10 from scratch.")],
        )
        assert first.ok and edited.ok and first.directory is not None
        inner = CheckpointManager(first.directory)
        try:
            nested_from = inner.checkpoint_path(inner.list_checkpoints()[2])
        finally:
            inner.close()
        nested = restorer.continue_from(nested_from, max_rounds=2)
        assert nested.ok
    built = Tree(root, str(first.directory.relative_to(root)))
    assert len(built.sessions) == 4, built.sessions
    return built


def _prepared(tree: Tree, state: str, target: Path) -> Path:
    root = copy_tree(tree.root, target)
    if state == "copied without lock files":
        for lock in root.rglob(LOCK):
            lock.unlink()
    elif state == "writer killed before its record files":
        for session_id, count in zip(("session", tree.first_continuation), UNPUBLISHED, strict=True):
            for checkpoint_id in list(tree.expected[session_id])[-count:]:
                (root / session_id / "checkpoints" / f"{checkpoint_id}.json").unlink()
    return root


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield out


STATES = ["as the writers left it", "copied without lock files", "writer killed before its record files"]


@pytest.mark.parametrize("state", STATES)
def test_every_reader_leaves_the_session_tree_untouched(state: str, tree: Tree, tmp_path: Path) -> None:
    root = _prepared(tree, state, tmp_path / "tree")
    outside = tmp_path / "outside"
    outside.mkdir()
    before = file_states(root)

    # list, from every way in
    assert open_store(str(root)).list_sessions() == tree.sessions
    for session_id, expected in tree.expected.items():
        manager = CheckpointManager(root / session_id)
        try:
            assert manager.list_checkpoints() == list(expected), f"{session_id}: every committed checkpoint"
            assert manager.latest_checkpoint_id() == list(expected)[-1]
            for checkpoint_id, saved in expected.items():
                assert comparable(manager.load_checkpoint(checkpoint_id)) == saved, (
                    session_id,
                    checkpoint_id,
                )
        finally:
            manager.close()
        with _quiet() as out:
            assert cli_main(["list", str(root / session_id)]) == 0
        printed = out.getvalue()
        assert all(checkpoint_id in printed for checkpoint_id in expected), printed

    # every record file that exists, read directly and shown; exported outside
    records = sorted(root.rglob("checkpoints/checkpoint_*.json"))
    assert records
    for index, record in enumerate(records):
        data = read_checkpoint_file(record)
        session_id = str(record.parent.parent.relative_to(root))
        assert comparable(data) == tree.expected[session_id][record.stem]
        if index % 4 == 0:
            with _quiet() as out:
                assert cli_main(["show", str(record)]) == 0
            assert data.checkpoint_id in out.getvalue()
            export_checkpoint(data, outside / f"export_{index}.json")
    export_session(str(root), "session", outside / "exported", include_continuations=True)

    # a continuation writes only its own new directory
    middle = root / "session" / "checkpoints" / f"{list(tree.expected['session'])[4]}.json"
    with _quiet():
        result = CheckpointRestorer().continue_from(middle, max_rounds=2)
    assert result.ok and result.directory is not None
    new_directory = str(result.directory.relative_to(root))
    assert result.directory.parent == root / "session" and result.directory.name.startswith("continuation_")

    after = file_states(root)
    changed = sorted(p for p in before if after.get(p) != before[p])
    added = sorted(p for p in after if p not in before and not p.startswith(new_directory))
    assert changed == [], f"pre-existing paths changed or removed: {changed}"
    assert added == [], f"new paths outside the continuation's own directory: {added}"


def test_listing_a_copy_of_logs_sample_creates_no_lock(tmp_path: Path) -> None:
    root = copy_tree(REPO_ROOT / "logs_sample", tmp_path / "logs_sample")
    sessions = sorted(p.parent for p in root.rglob("checkpoints") if p.is_dir())
    assert len(sessions) >= 3
    before = file_states(root)
    for session in sessions:
        with _quiet() as out:
            assert cli_main(["list", str(session)]) == 0
        assert "checkpoint_" in out.getvalue()
    assert list(root.rglob(LOCK)) == []
    assert file_states(root) == before


# -- a writer and four polling readers, each in its own process ----------------------------------------------


def _start(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(POLLING_CHILD), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=subprocess_env(),
    )


def _wait_ready(process: subprocess.Popen[str], timeout: float = 120.0) -> None:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "a reader did not start"
    line = process.stdout.readline().strip()
    assert line == "ready", f"{line!r}: {process.stderr.read() if process.stderr else ''}"


def test_a_writer_is_unaffected_by_four_polling_readers(tmp_path: Path) -> None:
    session = tmp_path / "session"
    writer_report = tmp_path / "writer.json"
    reader_reports = [tmp_path / f"reader_{i}.json" for i in range(READERS)]
    processes: list[subprocess.Popen[str]] = []
    try:
        for report in reader_reports:
            processes.append(_start("reader", str(session), str(writer_report), str(report)))
        for process in processes:
            _wait_ready(process)
        writer = _start("writer", str(session), str(WRITER_MESSAGES), str(WRITER_REOPENS), str(writer_report))
        processes.append(writer)
        for process in processes:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    written = json.loads(writer_report.read_text())
    failed = written.get("failed_reopens", 0)
    first_errors = "\n".join(written["errors"][:2])
    assert written["errors"] == [], (
        f"writer errors ({failed} of {WRITER_REOPENS} reopens failed):\n{first_errors}"
    )
    assert written["messages"] == WRITER_MESSAGES and written["saved"] == WRITER_REOPENS, written
    total = WRITER_MESSAGES + 2 + WRITER_REOPENS
    readings = [json.loads(report.read_text()) for report in reader_reports]
    errors = [error for reading in readings for error in reading["errors"]]
    assert errors == [], f"{len(errors)} reader errors, the first:\n{errors[0]}"
    assert all(len(reading["final"]) == total for reading in readings), [len(r["final"]) for r in readings]
    assert sum(reading["polls_while_writing"] for reading in readings) >= 2 * READERS, readings
