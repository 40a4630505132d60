"""Interventions: edit, replace, remove or append a group chat message in a checkpoint before continuing.

An intervention changes the group chat transcript *and* every copy of that message in the agents' and the
manager's histories, located by position (never by matching content), then checks that no history pairs a
tool result with a missing tool call, which LLM APIs reject. It works on ``CheckpointData`` only: pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import CheckpointError
from .model import CheckpointData

Action = Literal["edit", "replace", "remove", "append"]
_TOOL_ROLES = ("tool", "function")


class InterventionError(CheckpointError):
    """The intervention cannot be applied (bad index, misaligned history, broken tool-call pairs)."""


@dataclass(frozen=True)
class Intervention:
    """One change to the transcript. ``index`` is the 0-based position in the group chat messages."""

    action: Action
    index: int | None = None
    content: str | None = None
    message: dict[str, Any] | None = field(default=None, hash=False)
    speaker: str | None = None

    @classmethod
    def edit(cls, index: int, content: str) -> Intervention:
        """Replace the content of message ``index`` (its speaker, role and tool fields stay)."""
        return cls("edit", index=index, content=content)

    @classmethod
    def replace(cls, index: int, message: dict[str, Any]) -> Intervention:
        """Replace message ``index`` by ``message`` (spoken by the same agent unless it names another)."""
        return cls("replace", index=index, message=dict(message))

    @classmethod
    def remove(cls, index: int) -> Intervention:
        """Remove message ``index`` from the transcript and from every history."""
        return cls("remove", index=index)

    @classmethod
    def append(cls, content: str, speaker: str) -> Intervention:
        """Add a new last message spoken by ``speaker``; the continuation goes on from it."""
        return cls("append", content=content, speaker=speaker)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able description, stored in continuation metadata and checkpoints."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def _speaker_of(data: CheckpointData, index: int) -> str:
    message = data.messages[index]
    name = message.get("name")
    if isinstance(name, str) and name in data.agent_states:
        return name
    if index == len(data.messages) - 1 and data.manager_state and data.manager_state.current_speaker:
        return data.manager_state.current_speaker
    raise InterventionError(f"cannot tell which agent spoke message {index}")


def _delivered(data: CheckpointData) -> bool:
    return bool(data.metadata.get("delivered", True))


def _manager_name(data: CheckpointData) -> str:
    if data.manager_state is None:
        raise InterventionError("the checkpoint has no manager state")
    return data.manager_state.name


def _positions(data: CheckpointData, history: list[dict[str, Any]], receives_last: bool) -> dict[int, int]:
    """Map group chat message index -> index in a history that holds one entry per group chat message.

    Every agent's history with the manager, and the manager's history with every agent, hold each group
    chat message once, in order, after any preamble (introductions, earlier chats): align from the end.
    """
    count = len(data.messages)
    if count and not _delivered(data) and not receives_last:
        count -= 1  # the last message never reached this history
    offset = len(history) - count
    if offset < 0:
        raise InterventionError(
            f"a history holds {len(history)} messages, fewer than the group chat's {count}"
        )
    return {j: offset + j for j in range(count)}


def _check_aligned(where: str, entry: dict[str, Any], message: dict[str, Any], index: int) -> None:
    if message.get("tool_calls") or entry.get("tool_calls"):
        # AG2 keeps a tool call's content as None in the caller's history and as "None" in the group chat
        same = entry.get("tool_calls") == message.get("tool_calls")
    else:
        same = _text(entry.get("content")) == _text(message.get("content"))
    if not same:
        raise InterventionError(
            f"{where}: the entry at the position of message {index} does not hold that message; the "
            "history was changed outside the group chat (e.g. a guardrail or clear-history), so the edit "
            "would be unsafe"
        )


def _edited(entry: dict[str, Any], content: str) -> dict[str, Any]:
    """``entry`` with new content; a tool result's single response (what AG2 sends the model) too."""
    edited = {**entry, "content": content}
    responses = entry.get("tool_responses")
    if isinstance(responses, list) and responses:
        if len(responses) != 1:
            raise InterventionError(
                f"the message holds {len(responses)} tool results: replace it with the exact "
                "tool_responses you want instead of editing its content"
            )
        edited["tool_responses"] = [{**responses[0], "content": content}]
    return edited


def _as_entry(message: dict[str, Any], role: str) -> dict[str, Any]:
    entry = {k: v for k, v in message.items() if v is not None or k == "content"}
    if entry.get("role") not in _TOOL_ROLES:
        entry["role"] = "assistant" if entry.get("tool_calls") or entry.get("function_call") else role
    return entry


def _apply_one(data: CheckpointData, change: Intervention) -> None:
    manager = _manager_name(data)
    if change.action == "append":
        speaker = change.speaker
        if not speaker or speaker not in data.agent_states:
            raise InterventionError(
                f"append needs the name of a checkpointed agent as speaker, got {speaker!r}"
            )
        if not _delivered(data):
            raise InterventionError(
                "the last message was never delivered; continue from an earlier checkpoint"
            )
        message = {"content": change.content or "", "role": "user", "name": speaker}
        data.messages.append(message)
        assert data.manager_state is not None
        for agent in data.agent_states.values():
            if manager not in agent.oai_messages:
                continue
            is_speaker = agent.name == speaker
            agent.oai_messages[manager].append(_as_entry(message, "assistant" if is_speaker else "user"))
            sent = data.manager_state.oai_messages.setdefault(agent.name, [])
            sent.append(_as_entry(message, "user" if is_speaker else "assistant"))
        data.manager_state.current_speaker = speaker
        if data.groupchat_state is not None:
            data.groupchat_state.round_index += 1
        return
    index = change.index
    if index is None or not 0 <= index < len(data.messages):
        raise InterventionError(f"message index {index} is out of range (0..{len(data.messages) - 1})")
    original = data.messages[index]
    speaker = _speaker_of(data, index)
    if change.action == "edit":
        if change.content is None:
            raise InterventionError("edit needs content")
        updated: dict[str, Any] | None = _edited(original, change.content)
    elif change.action == "replace":
        if not change.message or not isinstance(change.message, dict):
            raise InterventionError("replace needs a message object")
        updated = {"role": original.get("role", "user"), **change.message, "name": speaker}
        if not isinstance(updated.get("content"), (str, list)) and not updated.get("tool_calls"):
            updated["content"] = _text(updated.get("content"))
    elif change.action == "remove":
        updated = None
    else:
        raise InterventionError(f"unknown intervention {change.action!r}")

    last_speaker = data.manager_state.current_speaker if data.manager_state else None
    targets: list[tuple[list[dict[str, Any]], int, str]] = []
    for agent in data.agent_states.values():
        history = agent.oai_messages.get(manager)
        if history is None:
            continue
        position = _positions(data, history, agent.name == last_speaker).get(index)
        if position is not None:
            _check_aligned(f"agent {agent.name!r}", history[position], original, index)
            targets.append((history, position, "assistant" if agent.name == speaker else "user"))
            # The manager's history with this agent: it received the agent's own messages, sent the rest.
            mirror: list[dict[str, Any]] = (
                data.manager_state.oai_messages.get(agent.name, []) if data.manager_state else []
            )
            if mirror:
                mirror_position = _positions(data, mirror, agent.name == last_speaker).get(index)
                if mirror_position is not None:
                    _check_aligned(
                        f"the manager (with {agent.name!r})", mirror[mirror_position], original, index
                    )
                    targets.append(
                        (mirror, mirror_position, "user" if agent.name == speaker else "assistant")
                    )

    for history, position, role in targets:  # one position per list: order does not matter
        if updated is None:
            del history[position]
        elif change.action == "edit":
            assert change.content is not None
            history[position] = _edited(history[position], change.content)
        else:
            history[position] = _as_entry(updated, role)
    if updated is None:
        # the removed reply no longer counts towards its speaker's consecutive auto-replies
        counters = (
            data.agent_states[speaker].consecutive_auto_reply_counter if speaker in data.agent_states else {}
        )
        if index > 0 and counters.get(manager, 0) > 0:
            counters[manager] -= 1
        del data.messages[index]
        if index == len(data.messages) and data.manager_state is not None:
            data.manager_state.current_speaker = (
                _speaker_of(data, index - 1) if data.messages else data.manager_state.current_speaker
            )
        if data.groupchat_state is not None:
            data.groupchat_state.round_index = max(0, data.groupchat_state.round_index - 1)
    else:
        data.messages[index] = updated


def tool_pair_problems(messages: Sequence[dict[str, Any]]) -> list[str]:
    """Problems an OpenAI-style API would reject: tool results without their call, calls without results."""
    problems: list[str] = []
    open_calls: set[str] = set()
    open_at: int | None = None
    for i, message in enumerate(messages):
        responses = message.get("tool_responses")
        ids: list[str] = []
        if isinstance(responses, list):
            ids = [str(r.get("tool_call_id")) for r in responses if isinstance(r, dict)]
        elif message.get("role") == "tool" and message.get("tool_call_id"):
            ids = [str(message["tool_call_id"])]
        if message.get("role") == "tool" and not ids:
            problems.append(f"message {i} is a tool result that names no tool call")
        if ids or message.get("role") == "tool":
            for call_id in ids:
                if call_id not in open_calls:
                    problems.append(
                        f"message {i} answers tool call {call_id!r}, which no earlier message made"
                    )
            open_calls -= set(ids)
            continue
        if open_calls and open_at is not None:
            problems.append(f"message {open_at} made tool calls {sorted(open_calls)} that are never answered")
        calls = message.get("tool_calls") or []
        open_calls = {str(c.get("id")) for c in calls if isinstance(c, dict) and c.get("id")}
        open_at = i if open_calls else None
    return problems


def _all_tool_pair_problems(data: CheckpointData) -> list[str]:
    histories = {"the group chat": data.messages}
    for agent in [*data.agent_states.values(), *([data.manager_state] if data.manager_state else [])]:
        for peer, history in agent.oai_messages.items():
            histories[f"{agent.name!r}'s history with {peer!r}"] = history
    return [
        f"{where}: {problem}"
        for where, history in histories.items()
        for problem in tool_pair_problems(history)
    ]


def apply_interventions(data: CheckpointData, interventions: Iterable[Intervention]) -> CheckpointData:
    """A copy of ``data`` with the interventions applied in order, checked for tool-call consistency."""
    changes = list(interventions)
    if not changes:
        return data
    result = data.model_copy(deep=True)
    for change in changes:
        _apply_one(result, change)
    before = _all_tool_pair_problems(data)
    problems = [problem for problem in _all_tool_pair_problems(result) if problem not in before]
    if problems:
        raise InterventionError(
            "the intervention would leave broken tool-call pairs: " + "; ".join(problems[:5])
        )
    records = [change.to_record() for change in changes]
    result.metadata = {
        **result.metadata,
        "interventions": [*result.metadata.get("interventions", []), *records],
    }
    return result
