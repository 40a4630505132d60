"""Helpers shared by the restore, intervention, crash-recovery and CLI tests (no test functions here).

Everything runs real AG2 agents with the deterministic model of ``checkpoint_system.testing``; nothing of
checkpoint_system is mocked. The helpers observe runs from the outside: transcripts, the agents' own
``_oai_messages``, the files a session leaves on disk.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogen import ConversableAgent, GroupChat

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import Scenario, all_scenarios, chat_state, participant_state

from checkpoint_system import (
    CheckpointData,
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    ContinuationResult,
    read_checkpoint_file,
)
from checkpoint_system.testing import digest_policy

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
EXAMPLES_DIR = REPO_ROOT / "examples"
MANAGER_NAME = "chat_manager"


def subprocess_env() -> dict[str, str]:
    """The environment for ``python -m checkpoint_system`` / example scripts run from the repository root."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), str(TESTS_DIR), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN"):
        env.pop(name, None)  # the examples must run offline with the deterministic demo model
    return env


# -- original (uninterrupted) runs --------------------------------------------------------------------------


@dataclass
class Original:
    """An uninterrupted checkpointed run and everything a continuation is compared with."""

    name: str
    mode: str
    build: Callable[[], Scenario]
    session_dir: Path
    messages: list[dict[str, Any]]
    final_state: dict[str, dict[str, Any]]
    termination_reason: str
    checkpoint_paths: list[Path]
    checkpoints: list[CheckpointData] = field(default_factory=list)

    def path_with(self, count: int, context: str = "message_appended") -> Path:
        """The checkpoint file holding ``count`` group chat messages (of the given context)."""
        for path, data in zip(self.checkpoint_paths, self.checkpoints, strict=True):
            if data.context == context and len(data.messages) == count:
                return path
        raise LookupError(f"no {context} checkpoint with {count} messages in {self.session_dir}")

    def by_count(self) -> dict[int, CheckpointData]:
        """The ``message_appended`` checkpoint for each message count."""
        return {len(d.messages): d for d in self.checkpoints if d.context == "message_appended"}

    def factory(self) -> Callable[[], GroupChat]:
        """An agent factory returning a fresh ``GroupChat`` (keeps custom speaker selection and tools)."""
        build = self.build
        return lambda: build().groupchat


def run_original(name: str, mode: str, session_dir: Path) -> Original:
    """Run scenario ``name`` to the end under ``CheckpointingGroupChatManager`` into ``session_dir``."""
    build = all_scenarios()[name]
    scenario = build()
    manager = scenario.make_manager(
        CheckpointingGroupChatManager, checkpoint_manager=CheckpointManager(session_dir)
    )
    scenario.run_with(manager, mode)
    cm = manager.checkpoint_manager
    paths = [cm.checkpoint_path(cid) for cid in cm.list_checkpoints()]
    cm.close()  # release the writer lock, as the end of a process would
    return Original(
        name=name,
        mode=mode,
        build=build,
        session_dir=session_dir,
        messages=copy.deepcopy(scenario.groupchat.messages),
        final_state=chat_state(scenario, manager),
        termination_reason=str(manager.last_termination_reason),
        checkpoint_paths=paths,
        checkpoints=[read_checkpoint_file(p) for p in paths],
    )


def continue_in_mode(
    restorer: CheckpointRestorer, path: Path | str, mode: str, **kwargs: Any
) -> ContinuationResult:
    """``continue_from`` (mode "sync") or ``a_continue_from`` in a fresh event loop (mode "async")."""
    if mode == "sync":
        return restorer.continue_from(path, **kwargs)
    return asyncio.run(restorer.a_continue_from(path, **kwargs))


def live_state(agents: Iterable[ConversableAgent], manager: ConversableAgent) -> dict[str, dict[str, Any]]:
    """``participant_state`` of restored agents and manager by name (comparable with ``chat_state``)."""
    return {agent.name: participant_state(agent) for agent in [*agents, manager]}


def essentials(message: dict[str, Any]) -> dict[str, Any]:
    """The fields a transcript comparison is about."""
    return {key: message.get(key) for key in ("content", "name", "role", "tool_calls")}


# -- files --------------------------------------------------------------------------------------------------


def tree_digest(root: Path, *, skip_continuations: bool = True) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (``continuation_*`` directories skipped)."""
    digests: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if skip_continuations and any(part.startswith("continuation_") for part in relative.parts):
            continue
        if path.is_file() and not path.is_symlink():
            digests[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


def session_checkpoints(directory: Path) -> list[CheckpointData]:
    """Every checkpoint of a session directory, in step order."""
    cm = CheckpointManager(directory)
    try:
        return [cm.load_checkpoint(cid) for cid in cm.list_checkpoints()]
    finally:
        cm.close()


# -- consistency of live histories ---------------------------------------------------------------------------


def _text(content: Any) -> str:
    return "" if content is None else str(content)


def assert_histories_match_groupchat(
    messages: Sequence[dict[str, Any]], agents: Sequence[ConversableAgent], manager: ConversableAgent
) -> None:
    """Every agent's history with the manager, and the manager's history with every agent, ends with one
    entry per group chat message: same content, the speaker's own copy as "assistant", the others' as "user".
    """
    count = len(messages)
    for agent in agents:
        for owner, history, own_role in (
            (agent.name, agent._oai_messages[manager], "assistant"),
            (f"{MANAGER_NAME}->{agent.name}", manager._oai_messages[agent], "user"),
        ):
            assert len(history) >= count, f"{owner}: {len(history)} entries for {count} messages"
            tail = history[len(history) - count :]
            for index, (entry, message) in enumerate(zip(tail, messages, strict=True)):
                where = f"{owner}, message {index}"
                if message.get("tool_calls"):
                    # AG2 keeps the speaker's own copy with content None, the others with the text "None".
                    assert entry.get("tool_calls") == message.get("tool_calls"), where
                    continue
                assert _text(entry.get("content")) == _text(message.get("content")), where
                if message.get("role") in ("tool", "function"):
                    continue
                spoke = message.get("name") == agent.name
                other = "user" if own_role == "assistant" else "assistant"
                assert entry.get("role") == (own_role if spoke else other), where


def assert_replies_follow_histories(
    messages: Sequence[dict[str, Any]],
    agents: Sequence[ConversableAgent],
    manager: ConversableAgent,
    start: int = 0,
) -> None:
    """Each reply of a digest-policy agent from ``start`` on is the digest of what its own history says it
    had seen then (replies before an intervention were generated from the unchanged history)."""
    by_name = {agent.name: agent for agent in agents}
    for index, message in enumerate(messages):
        agent = by_name.get(str(message.get("name")))
        if index < start:
            continue
        if agent is None or not agent.llm_config:
            continue
        history = agent._oai_messages[manager]
        preamble = len(history) - len(messages)
        seen = agent._oai_system_message + history[: preamble + index]
        assert message.get("content") == digest_policy(agent.name, seen), f"message {index} ({agent.name})"


def digest_agents(agents: Iterable[ConversableAgent]) -> list[ConversableAgent]:
    """The agents among ``agents`` that answer with the default digest policy (any with an LLM config)."""
    return [agent for agent in agents if agent.llm_config]


# -- CLI factories (``--factory restore_support:<name>``) --------------------------------------------------


def tool_calls_factory() -> GroupChat:
    """The tool-calling scenario's agents with their tool and speaker selection, for the CLI."""
    return all_scenarios()["tool_calls"]().groupchat


def round_robin_factory() -> GroupChat:
    """The round-robin scenario's agents, for the CLI."""
    return all_scenarios()["round_robin"]().groupchat


def termination_factory() -> GroupChat:
    """The SOLUTION_FOUND scenario's agents (its verifier has a custom policy), for the CLI."""
    return all_scenarios()["termination_message"]().groupchat
