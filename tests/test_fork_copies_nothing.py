"""Forks copy nothing (file store): a continuation stores what is new and refers to its parent for the past.

Two deterministic round robins of four agents with ~1 KiB messages, of 60 and of 240 messages, are
recorded once per module; each is continued from its middle checkpoint for 5 rounds with
``CheckpointRestorer(agent_factory=...)``. The continuation directory's own bytes (its files, not those of
continuations nested in it) must not grow with the parent's length: 120 more messages of history in the
parent may not cost the continuation 50% more. Every checkpoint of a continuation must load as the
uninterrupted run held it (the chat is deterministic, so a continuation of the middle replays the original's
next messages), and a parent that continuations depend on cannot be deleted from under them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from autogen import GroupChat
from conftest import comparable, copy_tree, file_states
from scenarios import llm_agent

from checkpoint_system import (
    CheckpointData,
    CheckpointError,
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    ContinuationResult,
    open_store,
    read_checkpoint_file,
)
from checkpoint_system.testing import history_digest

LENGTHS = (60, 240)
MESSAGE_BYTES = 1024
ROUNDS = 5
#: the continuation of the 240-message chat may cost at most this much more than that of the 60-message one
GROWTH_LIMIT = 1.5
UNLIMITED = 1_000_000
#: the transcript a run's end writes: the branch's whole conversation, for people to read (by design the
#: one file of a continuation that grows with its parent; what is stored for loading does not)
TRANSCRIPT = "chat_history.json"


def kib_policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
    """A reply of exactly ``MESSAGE_BYTES`` ASCII bytes that depends on everything the agent was sent."""
    head = f"{agent_name} answers message {len(messages)} (history {history_digest(messages)}): "
    filler = ""
    seed = head.encode()
    while len(head) + len(filler) < MESSAGE_BYTES:
        seed = hashlib.sha256(seed).digest()
        filler += " ".join(f"w{b:02x}" for b in seed[:16]) + ". "
    return (head + filler)[:MESSAGE_BYTES]


def build_groupchat(length: int) -> GroupChat:
    agents = [llm_agent(f"agent_{i}", kib_policy, max_consecutive_auto_reply=UNLIMITED) for i in range(4)]
    return GroupChat(agents=agents, messages=[], max_round=length, speaker_selection_method="round_robin")


@dataclass
class Fork:
    """A recorded chat of ``length`` messages and its continuation from the middle."""

    length: int
    session: Path
    messages: list[dict[str, Any]]
    by_count: dict[int, CheckpointData]  # the parent's message_appended checkpoint holding n messages
    middle: str
    continuation: ContinuationResult
    parent_untouched: bool

    @property
    def directory(self) -> Path:
        assert self.continuation.directory is not None
        return self.continuation.directory


def _record_and_fork(root: Path, length: int) -> Fork:
    groupchat = build_groupchat(length)
    manager = CheckpointingGroupChatManager(
        checkpoint_manager=CheckpointManager(root / "session"),
        groupchat=groupchat,
        name="chat_manager",
        llm_config=False,
        silent=True,
        max_consecutive_auto_reply=UNLIMITED,
    )
    opening = kib_policy("opening", [])
    groupchat.agents[0].initiate_chat(manager, message=opening, silent=True)
    cm = manager.checkpoint_manager
    try:
        loaded = [cm.load_checkpoint(cid) for cid in cm.list_checkpoints()]
        by_count = {len(d.messages): d for d in loaded if d.context == "message_appended"}
        middle = by_count[length // 2].checkpoint_id
        middle_path = cm.checkpoint_path(middle)
    finally:
        cm.close()
    assert len(groupchat.messages) == length
    before = file_states(root / "session")
    factory: Callable[[], GroupChat] = lambda: build_groupchat(length)  # noqa: E731
    with contextlib.redirect_stdout(io.StringIO()):
        result = CheckpointRestorer(agent_factory=factory).continue_from(middle_path, max_rounds=ROUNDS)
    assert result.ok, result.reason
    assert len(result.new_messages) == ROUNDS
    after = file_states(root / "session")
    untouched = all(after.get(path) == state for path, state in before.items())
    return Fork(length, root / "session", list(groupchat.messages), by_count, middle, result, untouched)


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Fork]:
    return {n: _record_and_fork(tmp_path_factory.mktemp(f"fork_{n}"), n) for n in LENGTHS}


def own_files(directory: Path) -> dict[str, int]:
    """Size of every file of a session directory that belongs to it (nested continuations excluded)."""
    sizes: dict[str, int] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith("continuation_") for part in relative.parts):
            continue
        if path.is_file() and not path.is_symlink():
            sizes[str(relative)] = path.stat().st_size
    return sizes


def _report(forks: dict[int, Fork]) -> str:
    lines = []
    for n, fork in forks.items():
        files = own_files(fork.directory)
        listing = ", ".join(f"{name} {size:,}" for name, size in files.items())
        lines.append(f"parent of {n} messages: {sum(files.values()):,} bytes: {listing}")
    return "\n".join(lines)


def test_a_continuations_stored_bytes_do_not_grow_with_its_parent(forks: dict[int, Fork]) -> None:
    """Everything a continuation stores besides its transcript: checkpoints, log, commit file, documents."""
    for fork in forks.values():
        assert fork.parent_untouched, f"the parent of {fork.length} messages was written to"
    stored = {
        n: sum(size for name, size in own_files(fork.directory).items() if name != TRANSCRIPT)
        for n, fork in forks.items()
    }
    short, long = stored[LENGTHS[0]], stored[LENGTHS[1]]
    assert long < GROWTH_LIMIT * short, f"{long:,} vs {short:,} bytes\n{_report(forks)}"
    # Five new messages of ~1 KiB and their copies: far below the parent's 30 KiB of past at 60 messages.
    assert short < 30 * MESSAGE_BYTES, _report(forks)


@pytest.mark.parametrize("length", LENGTHS)
def test_every_checkpoint_of_a_fork_is_what_the_uninterrupted_run_held(
    length: int, forks: dict[int, Fork]
) -> None:
    fork = forks[length]
    manager = CheckpointManager(fork.directory)
    try:
        ids = manager.list_checkpoints()
        loaded = [manager.load_checkpoint(cid) for cid in ids]
        paths = [manager.checkpoint_path(cid) for cid in ids]
    finally:
        manager.close()
    # a record file loads on its own too, from anywhere: it finds the parent's part of the past itself
    assert [comparable(read_checkpoint_file(path)) for path in paths] == [comparable(d) for d in loaded]
    assert len(loaded) == ROUNDS + 3  # conversation_start, the message in flight again, 5 new, the end
    assert loaded[0].parent_checkpoint_id == fork.middle
    assert [d.step_number for d in loaded] == sorted(d.step_number for d in loaded)
    for data in loaded:
        count = len(data.messages)
        where = f"{data.checkpoint_id} ({count} messages)"
        assert length // 2 - 1 <= count <= length // 2 + ROUNDS, where
        assert data.messages == fork.messages[:count], where
        if data.context != "message_appended":
            continue
        original = fork.by_count[count]
        for name, state in data.agent_states.items():
            assert state.oai_messages == original.agent_states[name].oai_messages, f"{where}: {name}"
        assert data.manager_state is not None and original.manager_state is not None
        assert data.manager_state.oai_messages == original.manager_state.oai_messages, where
        # The same group chat settings; the budget and the run's position are the continuation's own.
        own = ("max_round", "round_index", "run_start_index")
        settings = {k: v for k, v in comparable(data)["groupchat_state"].items() if k not in own}
        assert settings == {k: v for k, v in comparable(original)["groupchat_state"].items() if k not in own}
    assert loaded[-1].messages == fork.messages[: length // 2 + ROUNDS]


def _loads(session: Path) -> list[dict[str, Any]]:
    manager = CheckpointManager(session)
    try:
        return [comparable(manager.load_checkpoint(cid)) for cid in manager.list_checkpoints()]
    finally:
        manager.close()


def test_deleting_a_parent_that_a_continuation_depends_on_is_refused(
    forks: dict[int, Fork], tmp_path: Path
) -> None:
    fork = forks[LENGTHS[0]]
    root = tmp_path / "store"
    root.mkdir()
    copy_tree(fork.session, root / "session")
    store = open_store(str(root))
    continuation = f"session/{fork.directory.name}"
    assert store.list_sessions() == ["session", continuation]
    before = file_states(root)

    with pytest.raises(CheckpointError) as refused:
        store.delete_session("session")
    assert "continuation" in str(refused.value).lower(), str(refused.value)
    assert file_states(root) == before, "a refused delete removed something"
    for session_id, source in (("session", fork.session), (continuation, fork.directory)):
        assert _loads(root / session_id) == _loads(source), f"{session_id} loads otherwise in the copy"

    # Without dependents, deleting works: first the continuation, then its parent.
    store.delete_session(continuation)
    assert store.list_sessions() == ["session"]
    store.delete_session("session")
    assert store.list_sessions() == []
