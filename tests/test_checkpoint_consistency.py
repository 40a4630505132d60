"""Every checkpoint of a run holds exactly the chat as it was at that moment.

The expected state at each moment is observed independently of checkpoint_system, through AG2's own
reply-function hooks (``scenarios.StateRecorder``): when the manager starts its reply, and whenever the next
speaker starts generating (the chat then holds n messages, all delivered). The checkpoints are then read back
from disk two ways (by id, and by file path) and compared with those observations.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from autogen import Agent, ConversableAgent, GroupChat
from scenarios import EventRecorder, Scenario, StateRecorder, all_scenarios, llm_agent

from checkpoint_system import (
    CheckpointData,
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointSaveError,
)
from checkpoint_system.storage import files
from checkpoint_system.testing import digest_policy

AGENT_FIELDS = (
    "oai_messages",
    "consecutive_auto_reply_counter",
    "max_consecutive_auto_reply_dict",
    "reply_at_receive",
)


@dataclass
class Run:
    scenario: Scenario
    manager: CheckpointingGroupChatManager
    checkpoint_manager: CheckpointManager
    recorder: StateRecorder
    events: EventRecorder
    result: Any = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.scenario.groupchat.messages

    def checkpoints(self) -> list[CheckpointData]:
        """Every checkpoint of the session, loaded by id and (checked equal) by file path."""
        loaded = []
        for checkpoint_id in self.checkpoint_manager.list_checkpoints():
            by_id = self.checkpoint_manager.load_checkpoint(checkpoint_id)
            path = self.checkpoint_manager.checkpoint_path(checkpoint_id)
            by_path = CheckpointManager.load_checkpoint_file(path)
            assert by_id.model_dump() == by_path.model_dump(), checkpoint_id
            assert by_id.checkpoint_id == checkpoint_id
            loaded.append(by_id)
        return loaded

    def session_metadata(self) -> dict[str, Any]:
        return json.loads((self.checkpoint_manager.session_dir / "session_metadata.json").read_text())


def start_run(scenario: Scenario, session_dir: Path, **checkpoint_manager_kwargs: Any) -> Run:
    checkpoint_manager = CheckpointManager(session_dir, **checkpoint_manager_kwargs)
    manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoint_manager)
    return Run(scenario, manager, checkpoint_manager, StateRecorder(scenario, manager), EventRecorder())


def execute(run: Run, mode: str) -> Run:
    try:
        with run.events.installed():
            run.result = run.scenario.run_with(run.manager, mode)
    finally:
        run.recorder.finish()
    return run


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def assert_state_matches(checkpoint: CheckpointData, expected: dict[str, dict[str, Any]], where: str) -> None:
    """Every agent's and the manager's histories and counters in ``checkpoint`` equal ``expected``."""
    manager_name = checkpoint.manager_state.name if checkpoint.manager_state else None
    agent_names = set(expected) - {manager_name}
    assert set(checkpoint.agent_states) == agent_names, where
    states = {**checkpoint.agent_states, manager_name: checkpoint.manager_state}
    for name, expected_state in expected.items():
        state = states[name]
        for field in AGENT_FIELDS:
            assert _json(getattr(state, field)) == _json(expected_state[field]), f"{where}: {name}.{field}"


# -- the full consistency check, every scenario, sync and async ---------------------------------------------


def test_every_checkpoint_matches_the_chat_at_that_moment(
    build: Callable[[], Scenario], run_mode: str, tmp_path: Path
) -> None:
    run = execute(start_run(build(), tmp_path / "session"), run_mode)
    transcript = _json(run.messages)
    n_messages = len(transcript)
    recorder = run.recorder
    assert recorder.at_start is not None and recorder.final is not None
    assert sorted(recorder.at_messages) == list(range(1, n_messages + 1)), "observer missed a moment"

    checkpoints = run.checkpoints()
    contexts = [c.context for c in checkpoints]
    assert contexts == ["conversation_start", *["message_appended"] * n_messages, "conversation_end"]

    # lineage and numbering
    assert checkpoints[0].parent_checkpoint_id is None
    for previous, current in itertools.pairwise(checkpoints):
        assert current.parent_checkpoint_id == previous.checkpoint_id
        assert current.step_number > previous.step_number
    assert [c.step_number for c in checkpoints] == list(range(len(checkpoints)))
    session_id = run.checkpoint_manager.session_id
    assert {c.session_id for c in checkpoints} == {session_id}

    # conversation_start: no group chat message yet, state as the manager began its reply
    start = checkpoints[0]
    assert start.messages == []
    assert start.round_index == 0
    assert start.manager_state is not None and start.manager_state.current_speaker is None
    assert_state_matches(start, recorder.at_start, "conversation_start")
    initiator_history = start.agent_states[run.scenario.initiator.name].oai_messages[run.manager.name]
    assert [m["content"] for m in initiator_history] == [run.scenario.first_message]

    # message_appended k: the first k messages, every agent's state as observed at that moment
    for k, checkpoint in enumerate(checkpoints[1:-1], start=1):
        where = f"message checkpoint {k}"
        assert checkpoint.messages == transcript[:k], where
        assert checkpoint.round_index == k, where
        assert checkpoint.groupchat_state is not None and checkpoint.groupchat_state.run_start_index == 0
        assert checkpoint.manager_state is not None
        assert checkpoint.manager_state.current_speaker == transcript[k - 1]["name"], where
        assert_state_matches(checkpoint, recorder.at_messages[k], where)
        assert checkpoint.metadata.get("session_dir") == str(run.checkpoint_manager.session_dir)

    # conversation_end: the whole transcript, the final state, AG2's own termination reason
    end = checkpoints[-1]
    assert end.messages == transcript
    assert end.round_index == n_messages
    assert end.manager_state is not None and end.manager_state.current_speaker == transcript[-1]["name"]
    assert_state_matches(end, recorder.final, "conversation_end")
    ag2_reason = run.events.termination_reasons[-1]
    assert run.scenario.expected_termination in ag2_reason
    assert end.metadata["termination_reason"] == ag2_reason

    # the session documents agree
    metadata = run.session_metadata()
    assert metadata["status"] == "completed"
    assert metadata["termination_reason"] == ag2_reason
    assert metadata["checkpoints"] == [c.checkpoint_id for c in checkpoints]
    assert metadata["latest_checkpoint"] == end.checkpoint_id
    assert json.loads((run.checkpoint_manager.session_dir / "chat_history.json").read_text()) == transcript


@pytest.mark.parametrize("run_mode", ["sync", "async"])
def test_second_run_continues_the_session(run_mode: str, tmp_path: Path) -> None:
    """A second ``initiate_chat(clear_history=False)`` on the same manager: steps, lineage and round_index
    continue, and round_index counts from the second run's start as AG2's max_round does."""
    scenario = all_scenarios()["round_robin"]()
    run = execute(start_run(scenario, tmp_path / "s"), run_mode)
    n_first = len(run.messages)
    first_ids = run.checkpoint_manager.list_checkpoints()
    scenario.first_message = "And now compute 12 * 10."
    scenario.initiate_kwargs = {"clear_history": False}
    run.recorder = StateRecorder(scenario, run.manager)
    execute(run, run_mode)
    transcript = _json(run.messages)
    assert len(transcript) == 2 * n_first  # max_round counts per run

    checkpoints = run.checkpoints()
    assert [c.checkpoint_id for c in checkpoints[: len(first_ids)]] == first_ids
    second = checkpoints[len(first_ids) :]
    assert [c.context for c in second] == [
        "conversation_start",
        *["message_appended"] * n_first,
        "conversation_end",
    ]
    assert [c.step_number for c in checkpoints] == list(range(len(checkpoints)))
    for previous, current in itertools.pairwise(checkpoints):
        assert current.parent_checkpoint_id == previous.checkpoint_id
    assert second[0].messages == transcript[:n_first] and second[0].round_index == 0
    assert_state_matches(second[0], run.recorder.at_start, "second conversation_start")
    for k, checkpoint in enumerate(second[1:-1], start=1):
        assert checkpoint.messages == transcript[: n_first + k]
        assert checkpoint.round_index == k
        assert (
            checkpoint.groupchat_state is not None and checkpoint.groupchat_state.run_start_index == n_first
        )
        assert_state_matches(checkpoint, run.recorder.at_messages[n_first + k], f"second run message {k}")
    assert second[-1].messages == transcript
    assert run.session_metadata()["status"] == "completed"
    assert json.loads((run.checkpoint_manager.session_dir / "chat_history.json").read_text()) == transcript


def test_groupchat_state_is_recorded(tmp_path: Path) -> None:
    scenario = all_scenarios()["allowed_transitions"]()
    run = execute(start_run(scenario, tmp_path / "s"), "sync")
    state = run.checkpoints()[-1].groupchat_state
    assert state is not None
    assert state.agent_names == ["user", "coder", "reviewer", "tester"]
    assert state.max_round == 10
    assert state.speaker_selection_method == "round_robin"
    assert state.speaker_transitions_type == "allowed"
    assert state.allowed_or_disallowed_speaker_transitions == {
        "user": ["coder"],
        "coder": ["tester", "user"],
        "tester": ["reviewer"],
        "reviewer": ["coder", "user"],
    }


def test_termination_message_reaches_agents_only_in_sync(tmp_path: Path) -> None:
    """AG2's sync loop broadcasts the termination message, the async loop does not; checkpoints follow AG2."""
    finals = {}
    for mode in ("sync", "async"):
        run = execute(start_run(all_scenarios()["termination_message"](), tmp_path / mode), mode)
        end = run.checkpoints()[-1]
        last = run.messages[-1]
        assert "SOLUTION_FOUND" in last["content"]
        finals[mode] = [h[-1]["content"] for h in end.agent_states["solver"].oai_messages.values()]
        assert_state_matches(end, run.recorder.final, mode)
    assert "SOLUTION_FOUND" in finals["sync"][0]
    assert "SOLUTION_FOUND" not in finals["async"][0]


# -- errors and interruptions --------------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def _raise_on_nth_reply(agent: ConversableAgent, n: int, error: BaseException) -> None:
    """Make ``agent``'s n-th reply raise ``error`` (through an AG2 reply function, as a failing LLM would)."""
    calls = {"count": 0}

    def failing_reply(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None):
        calls["count"] += 1
        if calls["count"] == n:
            raise error
        return False, None

    agent.register_reply([Agent, None], failing_reply, position=0)


@pytest.mark.parametrize("run_mode", ["sync", "async"])
def test_exception_in_agent_reply_writes_error_checkpoint(run_mode: str, tmp_path: Path) -> None:
    scenario = all_scenarios()["round_robin"]()
    error = Boom("the model exploded")
    _raise_on_nth_reply(scenario.agent("solver"), 2, error)
    run = start_run(scenario, tmp_path / "s")
    with pytest.raises(Boom) as caught:
        execute(run, run_mode)
    assert caught.value is error  # propagated unchanged
    assert not getattr(caught.value, "__notes__", None)

    checkpoints = run.checkpoints()
    n_messages = len(run.messages)
    assert n_messages == 6  # user, planner, solver, critic, user, planner; then solver raised
    assert [c.context for c in checkpoints] == [
        "conversation_start",
        *["message_appended"] * n_messages,
        "error",
    ]
    failure = checkpoints[-1]
    assert failure.parent_checkpoint_id == checkpoints[-2].checkpoint_id
    assert failure.metadata["error"]["type"] == "Boom"
    assert "the model exploded" in failure.metadata["error"]["message"]
    assert failure.messages == _json(run.messages)
    assert_state_matches(failure, run.recorder.final, "error checkpoint")

    metadata = run.session_metadata()
    assert metadata["status"] == "error"
    assert metadata["error"]["type"] == "Boom"
    assert json.loads((run.checkpoint_manager.session_dir / "chat_history.json").read_text()) == _json(
        run.messages
    )


def test_exception_in_model_client_propagates(tmp_path: Path) -> None:
    """An exception raised by the model client (inside AG2's OpenAIWrapper) ends in an error checkpoint."""

    def flaky_policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
        if len(messages) > 3:
            raise ConnectionError(f"{agent_name}: service unavailable")
        return digest_policy(agent_name, messages)

    alice, bob = llm_agent("alice"), llm_agent("bob", flaky_policy)
    groupchat = GroupChat(
        agents=[alice, bob], messages=[], max_round=9, speaker_selection_method="round_robin"
    )
    scenario = Scenario("flaky", [alice, bob], groupchat, alice, "hello", {"llm_config": False})
    run = start_run(scenario, tmp_path / "s")
    with pytest.raises(ConnectionError, match="bob: service unavailable"):
        execute(run, "sync")
    assert len(run.messages) == 3
    last = run.checkpoints()[-1]
    assert last.context == "error" and last.metadata["error"]["type"] == "ConnectionError"
    assert run.session_metadata()["status"] == "error"


@pytest.mark.parametrize("run_mode", ["sync", "async"])
def test_keyboard_interrupt_marks_session_interrupted(run_mode: str, tmp_path: Path) -> None:
    scenario = all_scenarios()["custom_speaker"]()
    interrupt = KeyboardInterrupt()
    _raise_on_nth_reply(scenario.agent("engineer"), 1, interrupt)
    run = start_run(scenario, tmp_path / "s")
    with pytest.raises(KeyboardInterrupt) as caught:
        execute(run, run_mode)
    assert caught.value is interrupt
    checkpoints = run.checkpoints()
    assert checkpoints[-1].context == "error"
    assert checkpoints[-1].metadata["error"]["type"] == "KeyboardInterrupt"
    assert checkpoints[-1].messages == _json(run.messages)
    assert [c.context for c in checkpoints[1:-1]] == ["message_appended"] * len(run.messages)
    metadata = run.session_metadata()
    assert metadata["status"] == "interrupted"


# -- failing saves: the `on_save_error` policy ---------------------------------------------------------------


@contextmanager
def _disk_full(session_dir: Path) -> Iterator[None]:
    """Every write into ``<session>/checkpoints`` fails with ENOSPC, as when that volume is full.

    The failure injection: the store's appends (session log, commit file) and record files all go through
    ``files._write_all``; here it raises the OS error a full disk gives for any file under the checkpoint
    directory (found from the descriptor, as Linux shows it in /proc), while the session's documents
    outside it can still be written. Restored on exit.
    """
    real = files._write_all
    checkpoints = str((session_dir / "checkpoints").resolve()) + os.sep

    def full(fd: int, data: bytes) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(checkpoints):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    files._write_all = full
    try:
        yield
    finally:
        files._write_all = real


def _break_saves_between(scenario: Scenario, session_dir: Path, first: int, last: int) -> dict[str, Any]:
    """From message ``first`` to message ``last`` (1-based, inclusive) checkpoint saves fail.

    Driven by an AG2 reply hook: when a speaker starts generating message n+1, checkpoint n has been taken.
    """
    state: dict[str, Any] = {"cm": None}

    def hook(recipient: Any, messages: Any = None, sender: Any = None, config: Any = None):
        n = len(scenario.groupchat.messages)
        if n == first - 1 and state["cm"] is None:
            state["cm"] = _disk_full(session_dir)
            state["cm"].__enter__()
        elif n == last and state["cm"] is not None:
            state["cm"].__exit__(None, None, None)
            state["cm"] = False
        return False, None

    for agent in scenario.agents:
        agent.register_reply([Agent, None], hook, position=0)
    return state


@pytest.mark.parametrize("run_mode", ["sync", "async"])
def test_save_error_raise_stops_the_chat(run_mode: str, tmp_path: Path) -> None:
    scenario = all_scenarios()["round_robin"]()
    session = tmp_path / "s"
    control = _break_saves_between(scenario, session, first=3, last=99)
    run = start_run(scenario, session, on_save_error="raise")
    try:
        with pytest.raises(CheckpointSaveError):
            execute(run, run_mode)
    finally:
        if control["cm"]:
            control["cm"].__exit__(None, None, None)
    # the chat stopped at the first failed checkpoint (message 3), not at max_round
    assert len(run.messages) == 3
    checkpoints = run.checkpoints()
    assert [c.context for c in checkpoints] == ["conversation_start", "message_appended", "message_appended"]
    assert [len(c.messages) for c in checkpoints] == [0, 1, 2]
    failed = run.checkpoint_manager.failed_saves
    assert failed and failed[0]["context"] == "message_appended"
    assert run.session_metadata()["status"] != "completed"


@pytest.mark.parametrize("failing_from", [3, 6])
def test_save_error_raise_marks_session_as_error(failing_from: int, tmp_path: Path) -> None:
    """A chat stopped by ``CheckpointSaveError`` must not be left looking like a running session.

    failing_from=3: a message checkpoint fails mid-chat; 6: only the conversation_end checkpoint fails.
    """
    scenario = all_scenarios()["agent_terminates"]()  # 5 messages, the 5th speaker's successor says nothing
    session = tmp_path / "s"
    control = _break_saves_between(scenario, session, first=failing_from, last=99)
    run = start_run(scenario, session, on_save_error="raise")
    try:
        with pytest.raises(CheckpointSaveError):
            execute(run, "sync")
    finally:
        if control["cm"]:
            control["cm"].__exit__(None, None, None)
    metadata = run.session_metadata()
    assert metadata["status"] == "error"
    assert metadata["failed_saves"] and metadata["failed_saves"][0]["context"] in (
        "message_appended",
        "conversation_end",
    )


@pytest.mark.parametrize("run_mode", ["sync", "async"])
def test_save_error_warn_continues_and_records_failures(run_mode: str, tmp_path: Path) -> None:
    scenario = all_scenarios()["round_robin"]()
    session = tmp_path / "s"
    _break_saves_between(scenario, session, first=3, last=4)
    run = start_run(scenario, session, on_save_error="warn")
    with pytest.warns(RuntimeWarning, match="checkpoint not saved"):
        execute(run, run_mode)

    # the chat was not affected
    plain = all_scenarios()["round_robin"]()
    plain.run_with(plain.make_manager(), run_mode)
    assert run.messages == plain.groupchat.messages

    metadata = run.session_metadata()
    assert metadata["status"] == "completed"
    # two failed saves (messages 3 and 4); a failed save does not use up its step number
    assert [f["context"] for f in metadata["failed_saves"]] == ["message_appended"] * 2
    assert all("No space left on device" in f["error"] for f in metadata["failed_saves"])

    # checkpoints 3 and 4 are missing; every checkpoint that exists is complete and correct
    checkpoints = run.checkpoints()
    transcript = _json(run.messages)
    n_messages = len(transcript)
    by_count = {len(c.messages): c for c in checkpoints if c.context == "message_appended"}
    assert sorted(by_count) == [k for k in range(1, n_messages + 1) if k not in (3, 4)]
    for k, checkpoint in by_count.items():
        assert checkpoint.messages == transcript[:k]
        assert_state_matches(checkpoint, run.recorder.at_messages[k], f"message checkpoint {k}")
    end = checkpoints[-1]
    assert end.context == "conversation_end"
    assert end.messages == transcript
    assert_state_matches(end, run.recorder.final, "conversation_end")
    # lineage skips the failed saves: each saved checkpoint points to the previous saved one
    for previous, current in itertools.pairwise(checkpoints):
        assert current.parent_checkpoint_id == previous.checkpoint_id


def test_disk_full_injection_really_fails_a_save(tmp_path: Path) -> None:
    """Guard for the failure injection itself: a save while the disk is "full" raises and writes nothing."""
    store = files.FileSessionStore(tmp_path / "s")
    data = CheckpointData(
        checkpoint_id="c", timestamp="2024-06-01T12:00:00+00:00", step_number=0, context="manual"
    )
    store.save(data.model_copy(update={"step_number": 0}))
    log = tmp_path / "s" / "checkpoints" / files.LOG_FILE
    before = log.read_bytes()
    with _disk_full(tmp_path / "s"), pytest.raises(CheckpointSaveError, match="No space left"):
        store.save(data.model_copy(update={"step_number": 1, "messages": [{"content": "x", "role": "user"}]}))
    assert log.read_bytes() == before
    store.close()
