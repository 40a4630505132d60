"""``CheckpointingGroupChatManager`` is a drop-in ``GroupChatManager``: swapping it in changes nothing.

Every scenario runs twice from fresh objects, once under AG2's ``GroupChatManager`` and once under the
checkpointing manager, with the sync and with the async API. Everything AG2 produces must be identical:
transcript, speaker order, ``ChatResult``, every agent's per-peer history and counters, the events AG2
emits (including the termination reason) and the way the chat ended.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from autogen import GroupChatManager
from scenarios import EventRecorder, Scenario, all_scenarios, chat_state

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager


@dataclass
class Outcome:
    result: Any
    messages: list[dict[str, Any]]
    state: dict[str, dict[str, Any]]
    events: list[tuple[str, Any]]
    termination_reasons: list[str]

    @property
    def speakers(self) -> list[str | None]:
        return [m.get("name") for m in self.messages]


def _run(scenario: Scenario, manager: GroupChatManager, mode: str) -> Outcome:
    recorder = EventRecorder()
    with recorder.installed():
        result = scenario.run_with(manager, mode)
    return Outcome(
        result=result,
        messages=copy.deepcopy(scenario.groupchat.messages),
        state=chat_state(scenario, manager),
        events=recorder.events,
        termination_reasons=recorder.termination_reasons,
    )


def _json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _run_pair(
    build: Callable[[], Scenario], mode: str, session_dir: Path
) -> tuple[Outcome, Outcome, Scenario, CheckpointingGroupChatManager]:
    plain = build()
    reference = _run(plain, plain.make_manager(), mode)
    scenario = build()
    assert not set(map(id, scenario.all_agents)) & set(map(id, plain.all_agents)), (
        "builders must not share agents"
    )
    manager = scenario.make_manager(
        CheckpointingGroupChatManager, checkpoint_manager=CheckpointManager(session_dir)
    )
    assert isinstance(manager, GroupChatManager)
    return reference, _run(scenario, manager, mode), scenario, manager


def test_dropin_identical_to_groupchatmanager(
    build: Callable[[], Scenario], run_mode: str, tmp_path: Path
) -> None:
    reference, checkpointed, scenario, _ = _run_pair(build, run_mode, tmp_path / "session")

    # the chat itself
    assert checkpointed.messages == reference.messages
    assert checkpointed.speakers == reference.speakers
    assert len(reference.messages) >= 1
    assert checkpointed.messages[-1] == reference.messages[-1]

    # what initiate_chat returned
    for field in ("chat_history", "summary", "cost", "human_input"):
        assert getattr(checkpointed.result, field) == getattr(reference.result, field), field

    # every agent's (and the manager's) per-peer histories and reply counters
    assert checkpointed.state.keys() == reference.state.keys()
    for name, expected in reference.state.items():
        assert checkpointed.state[name] == expected, f"state of {name} differs"

    # AG2's events (speaker announcements, messages, termination) and the way the chat ended
    assert checkpointed.events == reference.events
    assert reference.termination_reasons  # the group chat's own reason comes last (agents may add theirs)
    assert checkpointed.termination_reasons == reference.termination_reasons
    assert scenario.expected_termination in reference.termination_reasons[-1]


def test_dropin_session_directory(build: Callable[[], Scenario], run_mode: str, tmp_path: Path) -> None:
    session = tmp_path / "session"
    reference, _, scenario, manager = _run_pair(build, run_mode, session)

    assert (session / "checkpoints").is_dir()
    assert sorted(p.name for p in (session / "checkpoints").glob("checkpoint_*.json"))
    metadata = json.loads((session / "session_metadata.json").read_text())
    assert metadata["status"] == "completed"
    assert metadata["termination_reason"] == reference.termination_reasons[-1]
    assert manager.last_termination_reason == reference.termination_reasons[-1]
    assert metadata["checkpoint_count"] == len(manager.checkpoint_manager.list_checkpoints())
    assert metadata["latest_checkpoint"] == manager.checkpoint_manager.list_checkpoints()[-1]

    history = json.loads((session / "chat_history.json").read_text())
    assert history == _json_roundtrip(scenario.groupchat.messages)
    assert history == _json_roundtrip(reference.messages)
    assert manager.chat_history_path == session / "chat_history.json"


def test_dropin_accepts_positional_groupchat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``CheckpointingGroupChatManager(groupchat)`` works like ``GroupChatManager(groupchat)``."""
    monkeypatch.chdir(tmp_path)
    plain = all_scenarios()["round_robin"]()
    reference = _run(plain, plain.make_manager(), "sync")
    scenario = all_scenarios()["round_robin"]()
    manager = CheckpointingGroupChatManager(scenario.groupchat, **scenario.manager_kwargs)
    outcome = _run(scenario, manager, "sync")
    assert outcome.messages == reference.messages
    assert outcome.state == reference.state
    sessions = list((tmp_path / "logs").glob("session_*"))
    assert sessions == [manager.checkpoint_manager.session_dir.absolute()]
    assert json.loads((sessions[0] / "session_metadata.json").read_text())["status"] == "completed"


def test_dropin_accepts_session_path(tmp_path: Path) -> None:
    scenario = all_scenarios()["max_round"]()
    session = tmp_path / "by_path"
    manager = CheckpointingGroupChatManager(
        str(session), groupchat=scenario.groupchat, **scenario.manager_kwargs
    )
    scenario.run(manager)
    assert manager.checkpoint_manager.session_dir == session
    assert json.loads((session / "chat_history.json").read_text()) == _json_roundtrip(
        scenario.groupchat.messages
    )


def test_dropin_rejects_missing_groupchat() -> None:
    with pytest.raises(TypeError):
        CheckpointingGroupChatManager()
