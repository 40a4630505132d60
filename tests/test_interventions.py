"""Interventions: edit, replace, remove or append a message of a checkpoint, then continue from it.

The round-robin chat's agents answer with a digest of everything they were sent, so a changed message must
change every later reply, and each reply must be exactly the digest of what the replying agent's own
history says it had seen (which catches a history copy that was not changed). Interventions are applied
through the API and through the CLI (a real ``python -m checkpoint_system`` process, and ``cli.main``
in-process); both must give the same continuation. Interventions that would break a tool call / tool result
pair, and indexes out of range, are refused before anything is written.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from restore_support import (
    MANAGER_NAME,
    REPO_ROOT,
    Original,
    assert_histories_match_groupchat,
    assert_replies_follow_histories,
    live_state,
    run_original,
    session_checkpoints,
    subprocess_env,
    tree_digest,
)

from checkpoint_system import (
    CheckpointData,
    CheckpointRestorer,
    ContinuationResult,
    Intervention,
    InterventionError,
    read_checkpoint_file,
)
from checkpoint_system import cli as checkpoint_cli

EDITED = "EDITED: let us recompute 11 * 10 from scratch."


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Original]:
    cache: dict[tuple[str, str], Original] = {}

    def get(name: str, mode: str = "sync") -> Original:
        if (name, mode) not in cache:
            cache[name, mode] = run_original(
                name, mode, tmp_path_factory.mktemp(f"{name}_{mode}") / "session"
            )
        return cache[name, mode]

    return get


def _new_dirs(session: Path, before: set[str]) -> list[Path]:
    return sorted(p for p in session.iterdir() if p.is_dir() and p.name not in before)


def _check_recorded(result_dir: Path, records: list[dict[str, Any]]) -> None:
    """The interventions are in continuation_metadata.json and in every checkpoint of the continuation."""
    meta = json.loads((result_dir / "continuation_metadata.json").read_text())
    assert meta["interventions"] == records
    chain = session_checkpoints(result_dir)
    assert chain
    for data in chain:
        assert data.metadata["interventions"] == records, data.checkpoint_id


def _check_copies_before_running(
    original: CheckpointData, restored: Any, index: int, expect: dict[str, Any] | None
) -> None:
    """Right after restore: each copy of message ``index`` changed (or is gone), every other entry kept."""
    manager = restored.manager
    count = len(original.messages)
    new_count = count - 1 if expect is None else count
    assert len(restored.groupchat.messages) == new_count
    for agent in restored.groupchat.agents:
        state = original.agent_states[agent.name]
        assert original.manager_state is not None
        copies = (
            (f"{agent.name}", state.oai_messages[MANAGER_NAME], agent._oai_messages[manager]),
            (
                f"{MANAGER_NAME}->{agent.name}",
                original.manager_state.oai_messages[agent.name],
                manager._oai_messages[agent],
            ),
        )
        for where, before, after in copies:
            position = len(before) - count + index
            if expect is None:
                assert after == before[:position] + before[position + 1 :], where
                continue
            assert len(after) == len(before), where
            for i, (old, new) in enumerate(zip(before, after, strict=True)):
                if i != position:
                    assert new == old, f"{where}: entry {i} changed"
            for key, value in expect.items():
                assert after[position].get(key) == value, f"{where}: {key}"


def _check_continuation(result: ContinuationResult, original: Original, changed_at: int) -> None:
    """Histories consistent, new replies follow them, and LLM replies after the change differ from the
    original ones (``changed_at``: the position of the last message the continuation did not generate)."""
    messages = result.restored.groupchat.messages
    members = list(result.restored.groupchat.agents)
    assert_histories_match_groupchat(messages, members, result.manager)
    assert_replies_follow_histories(messages, members, result.manager, start=changed_at + 1)
    llm_speakers = {a.name for a in members if a.llm_config}
    changed = 0
    for position in range(changed_at + 1, min(len(messages), len(original.messages))):
        if messages[position]["name"] in llm_speakers:
            assert messages[position]["content"] != original.messages[position]["content"], position
            changed += 1
    assert changed >= 1


# -- API -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "index"), [(1, 0), (3, 0), (5, 2), (5, 4), (7, 6)])
def test_edit(count: int, index: int, originals: Callable[..., Original]) -> None:
    original = originals("round_robin")
    path = original.path_with(count)
    data = read_checkpoint_file(path)
    before = tree_digest(original.session_dir)
    change = Intervention.edit(index, EDITED)

    restored = CheckpointRestorer().restore(path, interventions=[change])
    _check_copies_before_running(data, restored, index, {"content": EDITED})
    assert restored.groupchat.messages[index] == {**original.messages[index], "content": EDITED}

    result = CheckpointRestorer().continue_from(path, interventions=[change])
    assert result.ok
    messages = result.restored.groupchat.messages
    assert len(messages) == len(original.messages)  # the same budget
    assert messages[:index] == original.messages[:index]
    assert messages[index] == {**original.messages[index], "content": EDITED}
    assert messages[index + 1 : count] == original.messages[index + 1 : count]  # already said: kept
    assert [m["name"] for m in messages] == [m["name"] for m in original.messages]
    _check_continuation(result, original, max(index, count - 1))
    _check_recorded(result.directory, [{"action": "edit", "index": index, "content": EDITED}])
    assert tree_digest(original.session_dir) == before


@pytest.mark.parametrize(("count", "index"), [(4, 1), (6, 5), (6, 0)])
def test_replace(count: int, index: int, originals: Callable[..., Original]) -> None:
    original = originals("round_robin")
    path = original.path_with(count)
    data = read_checkpoint_file(path)
    speaker = original.messages[index]["name"]
    change = Intervention.replace(index, {"content": "REPLACED by the operator"})

    restored = CheckpointRestorer().restore(path, interventions=[change])
    _check_copies_before_running(data, restored, index, {"content": "REPLACED by the operator"})
    assert restored.groupchat.messages[index]["name"] == speaker

    result = CheckpointRestorer().continue_from(path, interventions=[change])
    messages = result.restored.groupchat.messages
    assert messages[:index] == original.messages[:index]
    assert messages[index]["content"] == "REPLACED by the operator"
    assert messages[index]["name"] == speaker
    assert messages[index]["role"] == original.messages[index]["role"]
    assert len(messages) == len(original.messages)
    _check_continuation(result, original, max(index, count - 1))
    _check_recorded(result.directory, [change.to_record()])


@pytest.mark.parametrize(("count", "index"), [(5, 1), (6, 2), (3, 0)])
def test_remove(count: int, index: int, originals: Callable[..., Original]) -> None:
    original = originals("round_robin")
    path = original.path_with(count)
    data = read_checkpoint_file(path)

    restored = CheckpointRestorer().restore(path, interventions=[Intervention.remove(index)])
    _check_copies_before_running(data, restored, index, None)

    result = CheckpointRestorer().continue_from(path, interventions=[Intervention.remove(index)])
    assert result.ok
    messages = result.restored.groupchat.messages
    assert messages[:index] == original.messages[:index]
    assert messages[index : count - 1] == original.messages[index + 1 : count]
    assert len(messages) == len(original.messages)  # the removed message's round is given back
    members = list(result.restored.groupchat.agents)
    assert_histories_match_groupchat(messages, members, result.manager)
    assert_replies_follow_histories(messages, members, result.manager, start=count - 1)
    # Every reply after the removal saw a history the original run never produced.
    for position in range(count - 1, len(messages)):
        if messages[position]["name"] != "user":
            assert messages[position]["content"] not in [m["content"] for m in original.messages]
    _check_recorded(result.directory, [{"action": "remove", "index": index}])


@pytest.mark.parametrize("count", [3, 5, 8])
def test_remove_the_last_message_regenerates_it(count: int, originals: Callable[..., Original]) -> None:
    original = originals("round_robin")
    result = CheckpointRestorer().continue_from(
        original.path_with(count), interventions=[Intervention.remove(count - 1)]
    )
    # The message before it is back in flight and the same speaker answers the same history: same chat.
    assert result.restored.groupchat.messages == original.messages
    histories = {
        name: state["oai_messages"] for name, state in live_state(result.agents, result.manager).items()
    }
    assert histories == {name: state["oai_messages"] for name, state in original.final_state.items()}


def test_remove_rolls_back_the_auto_reply_counter(originals: Callable[..., Original]) -> None:
    original = originals("round_robin")
    result = CheckpointRestorer().continue_from(original.path_with(5), interventions=[Intervention.remove(4)])
    assert result.restored.groupchat.messages == original.messages
    assert live_state(result.agents, result.manager) == original.final_state


@pytest.mark.parametrize(("count", "speaker"), [(4, "solver"), (5, "critic"), (2, "user")])
def test_append(count: int, speaker: str, originals: Callable[..., Original]) -> None:
    original = originals("round_robin")
    path = original.path_with(count)
    change = Intervention.append("APPENDED: a hint from the operator", speaker)
    result = CheckpointRestorer().continue_from(path, interventions=[change], max_rounds=3)
    messages = result.restored.groupchat.messages
    assert messages[:count] == original.messages[:count]
    assert messages[count] == {
        "content": "APPENDED: a hint from the operator",
        "role": "user",
        "name": speaker,
    }
    order = ["user", "planner", "solver", "critic"]
    assert messages[count + 1]["name"] == order[(order.index(speaker) + 1) % 4]  # round robin goes on from it
    assert len(messages) == count + 1 + 3  # the appended message, then at most 3 new ones
    members = list(result.restored.groupchat.agents)
    assert_histories_match_groupchat(messages, members, result.manager)
    assert_replies_follow_histories(messages, members, result.manager, start=count + 1)
    _check_recorded(result.directory, [change.to_record()])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_several_interventions_in_one_continuation(mode: str, originals: Callable[..., Original]) -> None:
    original = originals("round_robin", mode)
    path = original.path_with(6)
    changes = [
        Intervention.edit(0, "Compute 12 * 10 instead."),
        Intervention.remove(3),
        Intervention.append("Double-check the units.", "user"),
    ]
    restorer = CheckpointRestorer()
    if mode == "sync":
        result = restorer.continue_from(path, interventions=changes)
    else:
        result = asyncio.run(restorer.a_continue_from(path, interventions=changes))
    messages = result.restored.groupchat.messages
    assert messages[0]["content"] == "Compute 12 * 10 instead."
    assert messages[1:3] == original.messages[1:3]
    assert messages[3:5] == original.messages[4:6]
    assert messages[5] == {"content": "Double-check the units.", "role": "user", "name": "user"}
    assert len(messages) == len(original.messages)
    members = list(result.restored.groupchat.agents)
    assert_histories_match_groupchat(messages, members, result.manager)
    assert_replies_follow_histories(messages, members, result.manager, start=6)
    _check_recorded(result.directory, [c.to_record() for c in changes])


def test_out_of_range_and_unknown_speaker_are_refused(originals: Callable[..., Original]) -> None:
    original = originals("round_robin")
    path = original.path_with(5)
    entries = {p.name for p in original.session_dir.iterdir()}
    before = tree_digest(original.session_dir)
    for change in (
        Intervention.edit(5, "x"),
        Intervention.edit(-1, "x"),
        Intervention.remove(99),
        Intervention.replace(7, {"content": "x"}),
    ):
        with pytest.raises(InterventionError, match="out of range"):
            CheckpointRestorer().continue_from(path, interventions=[change])
    with pytest.raises(InterventionError, match="nobody"):
        CheckpointRestorer().continue_from(path, interventions=[Intervention.append("hi", "nobody")])
    assert {p.name for p in original.session_dir.iterdir()} == entries  # refused before anything is written
    assert tree_digest(original.session_dir) == before


# -- tool calls ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        Intervention.remove(2),
        Intervention.remove(6),
        Intervention.replace(2, {"content": "no result"}),
        Intervention.replace(6, {"content": "no result"}),
    ],
    ids=["remove-result-2", "remove-result-6", "replace-result-2", "replace-result-6"],
)
def test_breaking_a_tool_call_pair_is_refused(
    change: Intervention, originals: Callable[..., Original]
) -> None:
    original = originals("tool_calls")
    path = original.path_with(8)
    entries = {p.name for p in original.session_dir.iterdir()}
    before = tree_digest(original.session_dir)
    with pytest.raises(InterventionError, match="tool"):
        CheckpointRestorer(agent_factory=original.factory()).continue_from(path, interventions=[change])
    assert {p.name for p in original.session_dir.iterdir()} == entries
    assert tree_digest(original.session_dir) == before


def test_removing_a_tool_call_with_its_result_following_is_refused(
    originals: Callable[..., Original],
) -> None:
    original = originals("tool_calls")
    with pytest.raises(InterventionError):
        CheckpointRestorer(agent_factory=original.factory()).continue_from(
            original.path_with(8), interventions=[Intervention.remove(1)]
        )


def test_remove_last_reply_after_tool_result_regenerates_it(originals: Callable[..., Original]) -> None:
    original = originals("tool_calls")
    result = CheckpointRestorer(agent_factory=original.factory()).continue_from(
        original.path_with(8), interventions=[Intervention.remove(7)]
    )
    assert result.ok
    # The tool result is back in flight; the assistant answers it again, from the same history: same reply.
    assert result.restored.groupchat.messages == original.messages
    assert_histories_match_groupchat(
        original.messages, list(result.restored.groupchat.agents), result.manager
    )


@pytest.mark.parametrize(
    "changes",
    [
        [Intervention.edit(5, "Let me call the tool.")],
        [Intervention.remove(7), Intervention.remove(6), Intervention.remove(5)],
    ],
    ids=["edit-content-of-tool-call", "remove-whole-call-result-pair"],
)
def test_interventions_on_tool_call_messages(
    changes: list[Intervention], originals: Callable[..., Original]
) -> None:
    original = originals("tool_calls")
    result = CheckpointRestorer(agent_factory=original.factory()).continue_from(
        original.path_with(8), interventions=changes, max_rounds=2
    )
    assert result.ok


def test_edited_tool_result_is_what_the_assistant_sees(originals: Callable[..., Original]) -> None:
    original = originals("tool_calls")
    result = CheckpointRestorer(agent_factory=original.factory()).continue_from(
        original.path_with(7), interventions=[Intervention.edit(6, "999")], max_rounds=1
    )
    reply = result.new_messages[-1]
    assert reply["name"] == "assistant"
    assert "'999'" in reply["content"], reply["content"]


def test_replacing_the_last_tool_result_by_text_is_refused(originals: Callable[..., Original]) -> None:
    original = originals("tool_calls")
    with pytest.raises(InterventionError):
        CheckpointRestorer(agent_factory=original.factory()).restore(
            original.path_with(3), interventions=[Intervention.replace(2, {"content": "no result"})]
        )


# -- CLI -----------------------------------------------------------------------------------------------------


def test_cli_edit_in_a_subprocess_matches_the_api(originals: Callable[..., Original]) -> None:
    original = originals("round_robin")
    path = original.path_with(5)
    before = tree_digest(original.session_dir)
    entries = {p.name for p in original.session_dir.iterdir()}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkpoint_system",
            "continue",
            str(path),
            "--edit",
            "2",
            "--content",
            EDITED,
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (directory,) = _new_dirs(original.session_dir, entries)
    assert directory.name in completed.stdout
    _check_recorded(directory, [{"action": "edit", "index": 2, "content": EDITED}])
    transcript = json.loads((directory / "chat_history.json").read_text())
    api = CheckpointRestorer().continue_from(path, interventions=[Intervention.edit(2, EDITED)])
    assert transcript == api.restored.groupchat.messages
    assert transcript[2]["content"] == EDITED
    assert tree_digest(original.session_dir) == before


@pytest.mark.parametrize(
    ("arguments", "change"),
    [
        (
            ["--replace", "1", "--message", json.dumps({"content": "REPLACED"})],
            Intervention.replace(1, {"content": "REPLACED"}),
        ),
        (["--remove", "3"], Intervention.remove(3)),
        (["--append", "A hint.", "--as", "critic"], Intervention.append("A hint.", "critic")),
    ],
    ids=["replace", "remove", "append"],
)
def test_cli_in_process_matches_the_api(
    arguments: list[str],
    change: Intervention,
    originals: Callable[..., Original],
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = originals("round_robin")
    capsys.readouterr()  # drop what running the original chat printed
    path = original.path_with(4)
    entries = {p.name for p in original.session_dir.iterdir()}
    assert checkpoint_cli.main(["continue", str(path), "--rounds", "3", *arguments]) == 0
    out = capsys.readouterr().out
    (directory,) = _new_dirs(original.session_dir, entries)
    assert directory.name in out
    assert "3 new messages" in out
    _check_recorded(directory, [change.to_record()])
    api = CheckpointRestorer().continue_from(path, 3, interventions=[change])
    assert json.loads((directory / "chat_history.json").read_text()) == api.restored.groupchat.messages


def test_cli_refusals_exit_with_2(
    originals: Callable[..., Original], capsys: pytest.CaptureFixture[str]
) -> None:
    tools = originals("tool_calls")
    capsys.readouterr()  # drop what running the original chat printed
    path = tools.path_with(8)
    entries = {p.name for p in tools.session_dir.iterdir()}
    factory = "restore_support:tool_calls_factory"
    assert checkpoint_cli.main(["continue", str(path), "--factory", factory, "--remove", "2"]) == 2
    assert "tool" in capsys.readouterr().err
    assert (
        checkpoint_cli.main(["continue", str(path), "--factory", factory, "--edit", "8", "--content", "x"])
        == 2
    )
    assert "out of range" in capsys.readouterr().err
    assert {p.name for p in tools.session_dir.iterdir()} == entries
    # The same factory with an allowed intervention works from the command line.
    assert checkpoint_cli.main(["continue", str(path), "--factory", factory, "--remove", "7"]) == 0
    (directory,) = _new_dirs(tools.session_dir, entries)
    assert json.loads((directory / "chat_history.json").read_text()) == tools.messages
