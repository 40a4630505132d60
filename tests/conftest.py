"""Shared fixtures. Scenario builders and run observers live in ``scenarios.py`` (also used by benchmarks)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import scenarios` from any test file or rootdir

from scenarios import RUN_MODES, SCENARIO_NAMES, EventRecorder, Scenario, all_scenarios

from checkpoint_system import CheckpointData, CheckpointingGroupChatManager, CheckpointManager


@pytest.fixture(params=SCENARIO_NAMES)
def scenario_name(request: pytest.FixtureRequest) -> str:
    """Every scenario name, one test per scenario."""
    return str(request.param)


@pytest.fixture(params=RUN_MODES)
def run_mode(request: pytest.FixtureRequest) -> str:
    """'sync' (``initiate_chat``) and 'async' (``a_initiate_chat``)."""
    return str(request.param)


@pytest.fixture
def build(scenario_name: str) -> Callable[[], Scenario]:
    """The builder of the current scenario: each call returns fresh agents and a fresh group chat."""
    return all_scenarios()[scenario_name]


@pytest.fixture
def events() -> Iterator[EventRecorder]:
    """AG2's events of the test, recorded instead of printed (install with ``events.installed()``)."""
    yield EventRecorder()


class Confined:
    """A test's confinement: ``root`` is its temporary directory, ``cwd`` an empty working directory in it."""

    def __init__(self, root: Path, cwd: Path) -> None:
        self.root = root
        self.cwd = cwd

    def outside_entries(self) -> list[str]:
        """What appeared in the working directory (relative paths); must stay empty."""
        return sorted(str(p.relative_to(self.cwd)) for p in self.cwd.rglob("*"))


@pytest.fixture
def confined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Confined]:
    """Run a hostile-input case from an empty working directory and check that it wrote nothing there.

    Hostile cases build their inputs under ``confined.root`` (the test's ``tmp_path``) and use relative paths
    nowhere; a library that writes into the current directory (a relative path taken from a file, a default
    ``logs/``) fails the test at teardown.
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    box = Confined(tmp_path, cwd)
    yield box
    assert box.outside_entries() == [], "the case wrote into the current directory"


# -- recorded sessions and file-tree snapshots (storage tests of issue 18) -----------------------------------


def comparable(data: CheckpointData) -> dict[str, Any]:
    """A loaded ``CheckpointData`` as plain JSON data without its ``integrity`` hash.

    The hash describes how a record was stored, not what the checkpoint holds: two loads of the same
    checkpoint are equal when these dicts are.
    """
    return dict(data.model_dump(mode="json", exclude={"integrity"}))


@dataclass
class RecordedSession:
    """A real checkpointed group chat, closed (every record file exists), and what each checkpoint held."""

    path: Path
    ids: list[str]
    checkpoints: dict[str, CheckpointData]

    def expected(self, checkpoint_id: str) -> dict[str, Any]:
        """``comparable`` of the checkpoint as it was loaded right after the run."""
        return comparable(self.checkpoints[checkpoint_id])

    def record_path(self, checkpoint_id: str, root: Path | None = None) -> Path:
        """The record file of a checkpoint in this session, or in a copy of it at ``root``."""
        return (root or self.path) / "checkpoints" / f"{checkpoint_id}.json"


def record_session(path: Path, max_round: int, scenario: str = "round_robin") -> RecordedSession:
    """Run ``scenario`` with ``max_round`` under ``CheckpointingGroupChatManager`` into ``path``, close the
    session, and load every checkpoint through the public API (max_round + 2 checkpoints for round robin)."""
    built = all_scenarios()[scenario]()
    built.groupchat.max_round = max_round
    manager = built.make_manager(
        CheckpointingGroupChatManager, checkpoint_manager=CheckpointManager(path), silent=True
    )
    built.initiator.initiate_chat(manager, message=built.first_message, silent=True)
    cm = manager.checkpoint_manager
    try:
        ids = cm.list_checkpoints()
        loaded = {cid: cm.load_checkpoint(cid) for cid in ids}
    finally:
        cm.close()
    return RecordedSession(path, ids, loaded)


def copy_tree(source: Path, target: Path) -> Path:
    """A byte-for-byte copy of a session tree (symlinks copied as links)."""
    shutil.copytree(source, target, symlinks=True)
    return target


def file_states(root: Path) -> dict[str, tuple[str, int] | str]:
    """Every path under ``root`` (hidden ones too, links not followed): a file as (sha256, st_mtime_ns), a
    directory as "dir", anything else by its kind. Two equal results: nothing was created, removed,
    rewritten or touched."""
    states: dict[str, tuple[str, int] | str] = {}
    for directory, subdirs, files in os.walk(root):
        for name in [*subdirs, *files]:
            path = Path(directory) / name
            info = path.lstat()
            relative = str(path.relative_to(root))
            if stat.S_ISREG(info.st_mode):
                states[relative] = (hashlib.sha256(path.read_bytes()).hexdigest(), info.st_mtime_ns)
            elif stat.S_ISDIR(info.st_mode):
                states[relative] = "dir"
            elif stat.S_ISLNK(info.st_mode):
                states[relative] = f"link -> {os.readlink(path)}"
            else:
                states[relative] = f"mode {stat.S_IFMT(info.st_mode):o}"
    return states
