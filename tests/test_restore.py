"""Restoring and continuing: from every checkpoint of every scenario, the continuation is the original chat.

Each scenario of ``scenarios.py`` runs once to the end under ``CheckpointingGroupChatManager`` (sync and
async). Then every checkpoint it wrote (``conversation_start``, each ``message_appended``,
``conversation_end``) is continued with ``CheckpointRestorer.continue_from(path, max_rounds=None)`` (async:
``a_continue_from``), with agents from the scenario builder (``agent_factory``) and, where the scenario's
agents are plain enough, from the checkpoint file alone. The continuation must reproduce the uninterrupted
run: transcript, speakers, termination, every agent's final histories and auto-reply counters, and its own
checkpoints must match the original's and chain back to the checkpoint it came from.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from autogen import ConversableAgent, GroupChat, UserProxyAgent
from restore_support import (
    Original,
    continue_in_mode,
    essentials,
    files_containing,
    live_state,
    run_original,
    session_checkpoints,
    tree_digest,
)
from scenarios import (
    RUN_MODES,
    SCENARIO_NAMES,
    ToolCallingModelClient,
    all_scenarios,
    llm_agent,
    plain_agent,
)

from checkpoint_system import (
    CheckpointData,
    CheckpointError,
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    ContinuationResult,
    RestoreWarning,
    RosterMismatchError,
    UnknownModelClientError,
    UntrustedEndpointError,
    read_checkpoint_file,
)

#: Scenarios whose agents use only the default digest policy and built-in settings: a file is enough.
FROM_FILE = (
    "round_robin",
    "allowed_transitions",
    "max_round",
    "single_round",
    "send_introductions",
    "no_llm_agent",
    "external_initiator",
)
CASES = [
    pytest.param(name, source, id=f"{name}-{source}")
    for name in SCENARIO_NAMES
    for source in ("factory", "checkpoint")
    if source == "factory" or name in FROM_FILE
]

#: Checkpoints the main test leaves to the dedicated (xfail) tests below: (scenario, context, messages).
KNOWN_BAD: set[tuple[str, str, int]] = set()

_MAX_ROUNDS = re.compile(r"Maximum rounds \(\d+\) reached")


def _kind(reason: str) -> str:
    """The termination reason without the round count (see test_continuation_keeps_termination_reason)."""
    return _MAX_ROUNDS.sub("Maximum rounds (N) reached", reason)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Original]:
    """Uninterrupted checkpointed runs, one per (scenario, mode), shared by the tests of this module."""
    cache: dict[tuple[str, str], Original] = {}

    def get(name: str, mode: str) -> Original:
        if (name, mode) not in cache:
            cache[name, mode] = run_original(
                name, mode, tmp_path_factory.mktemp(f"{name}_{mode}") / "session"
            )
        return cache[name, mode]

    return get


def _restorer(original: Original, source: str, **kwargs: Any) -> CheckpointRestorer:
    factory = original.factory() if source == "factory" else None
    return CheckpointRestorer(agent_factory=factory, **kwargs)


def _quiet_continue(restorer: CheckpointRestorer, path: Path, mode: str, **kwargs: Any) -> ContinuationResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RestoreWarning)  # these restores must be exact: no approximations
        return continue_in_mode(restorer, path, mode, **kwargs)


def _expected(original: Original, data: CheckpointData) -> str:
    """'continue', or why nothing may run: 'termination' (last message terminates) or 'budget'."""
    if len(data.messages) < len(original.messages):
        return "continue"
    if original.termination_reason.startswith("Termination message condition on the GroupChatManager"):
        return "termination"
    if original.termination_reason.startswith("Maximum rounds"):
        return "budget"
    return "continue"  # e.g. "No next speaker selected": the loop runs again and ends the same way


def _check_lineage(
    result: ContinuationResult, parent: CheckpointData, parent_path: Path, original: Original
) -> None:
    """The continuation's directory, metadata and checkpoints, against the parent and the original run."""
    directory = result.directory
    assert directory.parent == parent_path.parent.parent  # <session>/continuation_...
    assert directory.name.startswith("continuation_")
    meta = json.loads((directory / "continuation_metadata.json").read_text())
    assert Path(meta["parent_checkpoint_file"]).resolve() == parent_path.resolve()
    assert meta["parent_checkpoint_step"] == parent.step_number
    assert meta["parent_context"] == parent.context
    assert meta["interventions"] == []
    assert meta["rounds_requested"] is None
    assert meta["started_at"] <= meta["ended_at"]
    assert set(meta["restore_report"]) == {"notes", "mismatches", "endpoints"}
    chain = session_checkpoints(directory)
    if not result.ok:
        assert chain == [], "nothing ran, so nothing is checkpointed"
        assert meta["outcome"] == "not_continued"
        assert meta["reason"] == result.reason
        return
    assert chain[0].context == "conversation_start"
    assert chain[0].parent_checkpoint_id == parent.checkpoint_id
    for previous, current in itertools.pairwise(chain):
        assert current.parent_checkpoint_id == previous.checkpoint_id
    for data in chain:
        assert data.session_id == directory.name
        assert data.metadata["continuation_of"]["parent_checkpoint_id"] == parent.checkpoint_id
        assert "interventions" not in data.metadata
    assert meta["outcome"] == "continued"
    assert meta["status"] == "completed"
    assert meta["termination_reason"] == result.reason
    assert meta["new_messages"] == len(result.new_messages)
    assert chain[-1].context == "conversation_end"
    assert json.loads((directory / "chat_history.json").read_text()) == original.messages
    if parent.context == "conversation_end":
        return  # its state is past the last message (e.g. counters reset by a refusal to reply)
    # Every message checkpoint of the continuation is the original's checkpoint with that many messages.
    by_count = original.by_count()
    for data in chain:
        if data.context != "message_appended":
            continue
        same = by_count[len(data.messages)]
        assert data.messages == same.messages
        assert data.metadata.get("delivered", True) == same.metadata.get("delivered", True)
        assert data.manager_state is not None and same.manager_state is not None
        assert data.manager_state.oai_messages == same.manager_state.oai_messages
        assert data.manager_state.current_speaker == same.manager_state.current_speaker
        for name, state in data.agent_states.items():
            expected = same.agent_states[name]
            assert state.oai_messages == expected.oai_messages, name
            assert state.consecutive_auto_reply_counter == expected.consecutive_auto_reply_counter, name
            assert state.reply_at_receive == expected.reply_at_receive, name


def _from_factory(result: ContinuationResult) -> bool:
    meta = json.loads((result.directory / "continuation_metadata.json").read_text())
    return bool(meta["agent_source"] == "factory")


# -- the key test -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", RUN_MODES)
@pytest.mark.parametrize(("name", "source"), CASES)
def test_continue_from_every_checkpoint(
    name: str, source: str, mode: str, originals: Callable[[str, str], Original]
) -> None:
    original = originals(name, mode)
    assert len(original.checkpoints) == len(original.messages) + 2
    assert original.termination_reason.startswith(all_scenarios()[name]().expected_termination)
    before = tree_digest(original.session_dir)
    continued = 0
    for path, data in zip(original.checkpoint_paths, original.checkpoints, strict=True):
        if (name, data.context, len(data.messages)) in KNOWN_BAD:
            continue
        result = _quiet_continue(_restorer(original, source), path, mode, max_rounds=None)
        expected = _expected(original, data)
        where = f"{path.name} ({expected})"
        assert _from_factory(result) == (source == "factory")
        if expected == "continue":
            assert result.ok and bool(result), f"{where}: {result.reason}"
            continued += 1
            assert result.chat_result is not None
            history = result.chat_result.chat_history
            assert [essentials(m) for m in history] == [essentials(m) for m in original.messages], where
            assert history == original.messages, where
            assert [m.get("name") for m in history] == [m.get("name") for m in original.messages]
            assert result.new_messages == original.messages[len(data.messages) :], where
            assert _kind(result.reason) == _kind(original.termination_reason), where
            assert live_state(result.agents, result.manager) == original.final_state, where
            assert result.restored.report.notes == [] and result.restored.report.mismatches == []
        else:
            assert not result.ok and not bool(result), where
            keyword = "termination" if expected == "termination" else "budget"
            assert keyword in result.reason, f"{where}: {result.reason}"
            assert result.new_messages == [] and result.chat_result is None
            assert result.restored.groupchat.messages == original.messages
        _check_lineage(result, data, path, original)
    assert continued >= 1 or name == "single_round"  # its only continuable checkpoint is in KNOWN_BAD
    assert tree_digest(original.session_dir) == before, "the parent session must never be written to"


# -- rounds --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", RUN_MODES)
def test_max_rounds_gives_at_most_n_new_messages(
    mode: str, originals: Callable[[str, str], Original]
) -> None:
    original = originals("round_robin", mode)
    total = len(original.messages)
    for count in (1, 4, 7):
        path = original.path_with(count)
        for rounds in (1, 2, total - count, total - count + 3):
            result = continue_in_mode(CheckpointRestorer(), path, mode, max_rounds=rounds)
            assert result.ok
            assert len(result.new_messages) == rounds, (count, rounds)
            known = original.messages[count : count + rounds]
            assert result.new_messages[: len(known)] == known, (count, rounds)
            messages = result.restored.groupchat.messages
            assert messages[:count] == original.messages[:count]
            assert len(messages) == count + rounds
            meta = json.loads((result.directory / "continuation_metadata.json").read_text())
            assert meta["rounds_requested"] == rounds
            assert meta["new_messages"] == rounds
    # None: the original chat's remaining budget.
    for count in range(1, total):
        result = continue_in_mode(CheckpointRestorer(), original.path_with(count), mode, max_rounds=None)
        assert len(result.new_messages) == total - count


def test_max_rounds_from_conversation_start(originals: Callable[[str, str], Original]) -> None:
    original = originals("round_robin", "sync")
    result = CheckpointRestorer().continue_from(original.path_with(0, "conversation_start"), max_rounds=2)
    assert result.ok
    assert result.new_messages == original.messages[:2]


@pytest.mark.parametrize("mode", RUN_MODES)
def test_single_round_from_conversation_start(mode: str, originals: Callable[[str, str], Original]) -> None:
    original = originals("single_round", mode)
    result = continue_in_mode(
        CheckpointRestorer(), original.path_with(0, "conversation_start"), mode, max_rounds=None
    )
    assert result.ok, result.reason
    assert result.restored.groupchat.messages == original.messages


def test_continuation_keeps_termination_reason(originals: Callable[[str, str], Original]) -> None:
    original = originals("round_robin", "sync")
    result = CheckpointRestorer().continue_from(original.path_with(5), max_rounds=None)
    assert result.restored.groupchat.messages == original.messages
    assert result.reason == original.termination_reason


# -- termination ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", RUN_MODES)
def test_checkpoint_meeting_termination_is_reported(
    mode: str, originals: Callable[[str, str], Original]
) -> None:
    original = originals("termination_message", mode)
    for path in (original.path_with(len(original.messages)), original.checkpoint_paths[-1]):
        result = continue_in_mode(CheckpointRestorer(agent_factory=original.factory()), path, mode)
        assert not result.ok
        assert "termination" in result.reason
        assert "force" in result.reason
        session = json.loads((result.directory / "session_metadata.json").read_text())
        assert session["status"] == "not_continued"
        # force=True runs AG2's loop anyway.
        forced = continue_in_mode(
            CheckpointRestorer(agent_factory=original.factory()), path, mode, force=True
        )
        assert forced.ok
        assert forced.restored.groupchat.messages[: len(original.messages)] == original.messages


@pytest.mark.parametrize("mode", RUN_MODES)
def test_force_continues_past_termination(mode: str, originals: Callable[[str, str], Original]) -> None:
    original = originals("termination_message", mode)
    path = original.path_with(len(original.messages))
    result = continue_in_mode(CheckpointRestorer(agent_factory=original.factory()), path, mode, force=True)
    assert result.ok
    assert result.new_messages, "force=True must let the chat go on"
    assert result.new_messages[0]["name"] == "user"  # round robin after the verifier


# -- lineage, parent untouched, directories ------------------------------------------------------------------


@pytest.mark.parametrize("mode", RUN_MODES)
def test_continue_from_a_continuation(mode: str, originals: Callable[[str, str], Original]) -> None:
    original = originals("round_robin", mode)
    before = tree_digest(original.session_dir)
    first = continue_in_mode(CheckpointRestorer(), original.path_with(3), mode, max_rounds=2)
    assert first.restored.groupchat.messages == original.messages[:5]
    first_files = tree_digest(first.directory)
    first_chain = session_checkpoints(first.directory)
    cm = CheckpointManager(first.directory)
    last = cm.checkpoint_path(
        next(c.checkpoint_id for c in reversed(first_chain) if c.context == "message_appended")
    )
    cm.close()
    second = continue_in_mode(CheckpointRestorer(), last, mode, max_rounds=2)
    assert second.ok
    assert second.restored.groupchat.messages == original.messages[:7]
    assert second.directory.parent == first.directory
    chain = session_checkpoints(second.directory)
    assert chain[0].parent_checkpoint_id == last.stem
    assert chain[0].metadata["continuation_of"]["parent_session_id"] == first.directory.name
    meta = json.loads((second.directory / "continuation_metadata.json").read_text())
    assert Path(meta["parent_checkpoint_file"]).resolve() == last.resolve()
    # Each level is unchanged by the next one.
    assert tree_digest(first.directory) == first_files
    assert tree_digest(original.session_dir) == before
    # A third level, with the remaining budget of the second continuation's chat.
    third_from = CheckpointManager(second.directory)
    mid = third_from.checkpoint_path(third_from.list_checkpoints()[2])
    third_from.close()
    third = continue_in_mode(CheckpointRestorer(), mid, mode, max_rounds=None)
    assert third.ok
    assert third.restored.groupchat.messages == original.messages[:7]
    assert third.directory.parent == second.directory


@pytest.mark.parametrize("mode", RUN_MODES)
def test_continue_from_a_continuations_start(mode: str, originals: Callable[[str, str], Original]) -> None:
    """A continuation's conversation_start is taken with its message in flight out of the group chat."""
    original = originals("round_robin", mode)
    first = continue_in_mode(CheckpointRestorer(), original.path_with(3), mode)
    cm = CheckpointManager(first.directory)
    start = cm.checkpoint_path(cm.list_checkpoints()[0])
    cm.close()
    second = continue_in_mode(CheckpointRestorer(), start, mode)
    assert second.restored.groupchat.messages == original.messages


def test_continue_from_a_continuation_with_external_initiator(
    originals: Callable[[str, str], Original],
) -> None:
    original = originals("external_initiator", "sync")
    first = CheckpointRestorer().continue_from(original.path_with(2))
    assert first.restored.groupchat.messages == original.messages
    cm = CheckpointManager(first.directory)
    mid = cm.checkpoint_path(cm.list_checkpoints()[2])
    cm.close()
    assert "outsider" in read_checkpoint_file(mid).agent_states
    second = CheckpointRestorer().continue_from(mid)
    assert second.restored.groupchat.messages == original.messages


def test_parent_session_is_byte_for_byte_unchanged(originals: Callable[[str, str], Original]) -> None:
    original = originals("tool_calls", "sync")
    session = original.session_dir
    before_files = tree_digest(session)
    before_entries = {p.name for p in session.iterdir()}
    factory = original.factory()
    results = [
        CheckpointRestorer(agent_factory=factory).continue_from(original.checkpoint_paths[0]),
        CheckpointRestorer(agent_factory=factory).continue_from(original.path_with(3), max_rounds=1),
        CheckpointRestorer(agent_factory=factory).continue_from(
            original.checkpoint_paths[-1]
        ),  # not continued
        continue_in_mode(CheckpointRestorer(agent_factory=factory), original.path_with(4), "async"),
    ]
    assert tree_digest(session) == before_files
    new_entries = {p.name for p in session.iterdir()} - before_entries
    assert new_entries == {r.directory.name for r in results}
    assert all(name.startswith("continuation_") for name in new_entries)


def test_continuations_in_the_same_second_get_their_own_directories(
    originals: Callable[[str, str], Original], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = originals("round_robin", "sync")
    path = original.path_with(6)
    back_to_back = [CheckpointRestorer().continue_from(path, max_rounds=1) for _ in range(2)]
    assert back_to_back[0].directory != back_to_back[1].directory

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> FrozenClock:
            return cls(2026, 11, 21, 10, 15, 0, 123456)

    import checkpoint_system.restorer as restorer_module

    monkeypatch.setattr(restorer_module, "datetime", FrozenClock)
    frozen = [CheckpointRestorer().continue_from(path, max_rounds=1) for _ in range(3)]
    names = [r.directory.name for r in frozen]
    assert len(set(names)) == 3
    assert all(name.startswith("continuation_20261121_101500_123456") for name in names)
    for result in frozen:  # each one is complete on its own
        assert result.restored.groupchat.messages == original.messages[:7]
        assert (result.directory / "continuation_metadata.json").is_file()
        assert session_checkpoints(result.directory)[0].parent_checkpoint_id == path.stem


def test_continue_conversation_from_checkpoint_is_truthy(originals: Callable[[str, str], Original]) -> None:
    original = originals("round_robin", "sync")
    result = CheckpointRestorer().continue_conversation_from_checkpoint(original.path_with(2), max_rounds=10)
    assert result
    assert 1 <= len(result.new_messages) <= 10
    assert result.new_messages[:7] == original.messages[2:]
    finished = CheckpointRestorer().continue_conversation_from_checkpoint(
        original.checkpoint_paths[-1], max_rounds=None
    )
    assert not finished
    assert "budget" in finished.reason


# -- send_introductions (known bugs) -------------------------------------------------------------------------


def test_send_introductions_from_conversation_start(originals: Callable[[str, str], Original]) -> None:
    original = originals("send_introductions", "sync")
    result = CheckpointRestorer().continue_from(original.path_with(0, "conversation_start"))
    assert result.restored.groupchat.messages == original.messages


def test_send_introductions_from_first_message(originals: Callable[[str, str], Original]) -> None:
    original = originals("send_introductions", "sync")
    result = CheckpointRestorer().continue_from(original.path_with(1))
    assert result.restored.groupchat.messages == original.messages


# -- where agents come from ----------------------------------------------------------------------------------


def test_recreate_agents_from_checkpoint_without_llm(originals: Callable[[str, str], Original]) -> None:
    original = originals("tool_calls", "sync")
    data = original.checkpoints[4]
    # The assistant's custom model client is code: without it the agent could not answer, so it is refused.
    with pytest.raises(UnknownModelClientError, match=r"'assistant'.*ToolCallingModelClient"):
        CheckpointRestorer().recreate_agents_from_checkpoint(data.agent_states)
    clients = {"ToolCallingModelClient": ToolCallingModelClient}
    with pytest.warns(RestoreWarning) as caught:
        agents = CheckpointRestorer(model_clients=clients).recreate_agents_from_checkpoint(data.agent_states)
    by_name = {agent.name: agent for agent in agents}
    assert set(by_name) == {"user", "assistant", "executor"}
    for name in ("user", "executor"):
        agent = by_name[name]
        assert type(agent) is ConversableAgent
        assert agent.llm_config is False
        assert agent.human_input_mode == "NEVER"
    assert by_name["executor"]._default_auto_reply == "executor: nothing to execute"
    assert by_name["user"]._default_auto_reply == "user: now multiply something else"
    assert by_name["assistant"].llm_config  # rebuilt, with the model client supplied above
    messages = " ".join(str(w.message) for w in caught)
    assert "multiply" in messages  # tools are code: reported, not rebuilt
    # Histories are not part of recreate_agents_from_checkpoint: fresh agents.
    assert all(not agent._oai_messages for agent in agents)


def _code_chat(work_dir: Path) -> tuple[list[ConversableAgent], GroupChat, UserProxyAgent, str]:
    human = UserProxyAgent(
        "human",
        human_input_mode="NEVER",
        code_execution_config=False,
        default_auto_reply="human: thanks",
        llm_config=False,
    )
    executor = ConversableAgent(
        "executor",
        llm_config=False,
        human_input_mode="NEVER",
        code_execution_config={"work_dir": str(work_dir), "use_docker": False},
        default_auto_reply="executor: no code found",
    )
    reviewer = llm_agent("reviewer")
    agents: list[ConversableAgent] = [human, executor, reviewer]
    groupchat = GroupChat(agents=agents, messages=[], max_round=4, speaker_selection_method="round_robin")
    return agents, groupchat, human, "Please run this:\n```python\nprint(6 * 7)\n```"


def test_code_execution_is_restored_off_unless_allowed(tmp_path: Path) -> None:
    _, groupchat, human, first = _code_chat(tmp_path / "work")
    manager = CheckpointingGroupChatManager(
        checkpoint_manager=CheckpointManager(tmp_path / "session"),
        groupchat=groupchat,
        name="chat_manager",
        llm_config=False,
    )
    human.initiate_chat(manager, message=first)
    messages = copy.deepcopy(groupchat.messages)
    assert "42" in str(messages[1]["content"])  # the original run executed the code
    cm = manager.checkpoint_manager
    start = cm.checkpoint_path(cm.list_checkpoints()[0])

    with pytest.warns(RestoreWarning, match="code execution"):
        off = CheckpointRestorer().continue_from(start)
    executor = next(a for a in off.agents if a.name == "executor")
    assert executor._code_execution_config is False
    assert "code execution" in " ".join(off.restored.report.notes)
    assert off.restored.groupchat.messages[1]["content"] == "executor: no code found"
    meta = json.loads((off.directory / "continuation_metadata.json").read_text())
    assert any("code execution" in note for note in meta["restore_report"]["notes"])

    original_work = sorted(p.name for p in (tmp_path / "work").iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RestoreWarning)
        on = CheckpointRestorer(allow_code_execution=True).continue_from(start)
    executor = next(a for a in on.agents if a.name == "executor")
    # The code runs in the continuation's own work/ (absolute), never in the directory the file names.
    assert on.directory is not None
    own_work = (on.directory / "work").resolve()
    assert executor._code_execution_config["work_dir"] == str(own_work)
    assert executor._code_execution_config["use_docker"] is False
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == original_work
    assert any("code runs in" in note for note in on.restored.report.notes)
    assert on.restored.groupchat.messages == messages
    human_again = next(a for a in on.agents if a.name == "human")
    assert type(human_again) is UserProxyAgent
    assert human_again.llm_config is False


# -- roster mismatches ---------------------------------------------------------------------------------------


def test_factory_missing_an_agent_is_refused(originals: Callable[[str, str], Original]) -> None:
    original = originals("round_robin", "sync")
    build = original.build

    def without_critic() -> list[ConversableAgent]:
        return [agent for agent in build().agents if agent.name != "critic"]

    entries = set(p.name for p in original.session_dir.iterdir())
    with pytest.raises(RosterMismatchError, match="critic"):
        CheckpointRestorer(agent_factory=without_critic).continue_from(original.path_with(4))
    assert {p.name for p in original.session_dir.iterdir()} == entries  # nothing created


def test_factory_with_other_system_message(originals: Callable[[str, str], Original]) -> None:
    original = originals("round_robin", "sync")
    build = original.build

    def changed() -> GroupChat:
        scenario = build()
        scenario.agent("planner").update_system_message("You are a different planner.")
        return scenario.groupchat

    path = original.path_with(4)
    with pytest.raises(RosterMismatchError) as refused:
        CheckpointRestorer(agent_factory=changed).continue_from(path)
    assert "planner" in str(refused.value) and "system_message" in str(refused.value)
    assert "solver" not in str(refused.value)

    result = CheckpointRestorer(agent_factory=changed, on_mismatch="proceed").continue_from(path)
    assert result.ok
    mismatches = result.restored.report.mismatches
    assert any("planner" in line and "system_message" in line for line in mismatches)
    meta = json.loads((result.directory / "continuation_metadata.json").read_text())
    assert meta["restore_report"]["mismatches"] == mismatches
    messages = result.restored.groupchat.messages
    assert messages[:5] == original.messages[:5]
    assert messages[5]["name"] == "planner"
    assert messages[5]["content"] != original.messages[5]["content"]  # its prompt is part of what it sees


# -- secrets -------------------------------------------------------------------------------------------------


def _token_provider() -> str:
    return "ad-token-from-provider"


def test_secrets_never_written_and_restored_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    openai_config = {
        "config_list": [{"model": "gpt-4o-mini", "api_key": "sk-test-SECRET"}],
        "cache_seed": None,
    }
    azure_entry = {
        "model": "gpt-4o",
        "api_type": "azure",
        "base_url": "https://example.openai.azure.com",
        "api_version": "2024-02-01",
        "azure_ad_token_provider": _token_provider,
    }
    user = plain_agent("user", "user: fine")
    solver = llm_agent("solver")
    # Members that never get a turn (max_round=2): their configs are saved, their clients never called.
    gpt = ConversableAgent("gpt", llm_config=copy.deepcopy(openai_config), human_input_mode="NEVER")
    azure = ConversableAgent(
        "azure", llm_config={"config_list": [azure_entry], "cache_seed": None}, human_input_mode="NEVER"
    )
    groupchat = GroupChat(
        agents=[user, solver, gpt, azure], messages=[], max_round=2, speaker_selection_method="round_robin"
    )
    session = tmp_path / "session"
    manager = CheckpointingGroupChatManager(
        checkpoint_manager=CheckpointManager(session),
        groupchat=groupchat,
        name="chat_manager",
        llm_config=copy.deepcopy(openai_config),
    )
    user.initiate_chat(manager, message="Is 110 = 11 * 10?")
    messages = copy.deepcopy(groupchat.messages)
    assert files_containing(session, b"sk-test-SECRET") == []
    cm = manager.checkpoint_manager
    path = cm.checkpoint_path(cm.list_checkpoints()[1])
    data = read_checkpoint_file(path)
    saved = data.agent_states["gpt"].llm_config["config_list"][0]["api_key"]
    assert saved == {"$redacted": "api_key", "restore_from": "env:OPENAI_API_KEY"}

    # Without the secret the restore fails, naming the agent.
    with pytest.raises(CheckpointError, match="gpt"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RestoreWarning)
        CheckpointRestorer(azure_ad_token_provider=_token_provider).restore(path)

    # The Azure endpoint is neither the provider's default nor set in the environment: the token provider
    # is not handed to it unless the user trusts it.
    untrusted = CheckpointRestorer(
        environ={"OPENAI_API_KEY": "sk-from-env"}, azure_ad_token_provider=_token_provider
    )
    with pytest.raises(UntrustedEndpointError, match=r"'azure'.*example\.openai\.azure\.com"):
        untrusted.restore(path)
    restorer = CheckpointRestorer(
        environ={"OPENAI_API_KEY": "sk-from-env"},
        azure_ad_token_provider=_token_provider,
        trusted_endpoints=["https://example.openai.azure.com"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RestoreWarning)
        result = restorer.continue_from(path)
    assert result.ok
    by_name = {agent.name: agent for agent in result.agents}
    assert _entry(by_name["gpt"])["api_key"] == "sk-from-env"
    assert _entry(result.manager)["api_key"] == "sk-from-env"
    azure_restored = _entry(by_name["azure"])
    assert azure_restored["azure_ad_token_provider"] is _token_provider
    assert azure_restored["base_url"].startswith("https://example.openai.azure.com")
    assert azure_restored["api_version"] == "2024-02-01"
    assert result.restored.groupchat.messages == messages
    # Neither the original key nor the one from the environment reached any file, continuation included.
    assert files_containing(session, b"sk-test-SECRET") == []
    assert files_containing(session, b"sk-from-env") == []
    assert files_containing(session, b"ad-token-from-provider") == []


def _entry(agent: ConversableAgent) -> dict[str, Any]:
    """The first config_list entry of an agent's llm_config, with secrets in clear (ag2 0.10 and 0.14)."""
    config = agent.llm_config
    dumped = config.model_dump() if hasattr(config, "model_dump") else dict(config)
    entry = dict(dumped["config_list"][0])
    for key, value in entry.items():
        if hasattr(value, "get_secret_value"):
            entry[key] = value.get_secret_value()
    provider = (
        getattr(config.config_list[0], "azure_ad_token_provider", None)
        if hasattr(config, "config_list")
        else None
    )
    if provider is not None:
        entry["azure_ad_token_provider"] = provider
    return entry


# -- a custom speaker selection needs code -------------------------------------------------------------------


def test_custom_speaker_selection_needs_factory_or_override(
    originals: Callable[[str, str], Original],
) -> None:
    original = originals("custom_speaker", "sync")
    path = original.path_with(3)
    with pytest.raises(CheckpointError, match="speaker selection"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RestoreWarning)
        CheckpointRestorer().continue_from(path)
    selector = original.build().groupchat.speaker_selection_method
    restorer = CheckpointRestorer(groupchat_overrides={"speaker_selection_method": selector})
    result = restorer.continue_from(path)
    assert result.restored.groupchat.messages == original.messages
    assert _kind(result.reason) == _kind(original.termination_reason)
    assert isinstance(result.restored.checkpoint, CheckpointData)
