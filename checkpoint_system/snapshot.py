"""Pure functions that read AG2 objects and return the checkpoint model. Nothing here writes anything.

Histories and message lists are copied shallowly: the message dicts are shared with the live chat, which
lets a storage backend recognise what it already stored in O(1). The snapshot never mutates AG2 objects.

Redacting an LLM config (~0.1 ms) and describing a termination callable (~0.2 ms) are memoised per object,
so a checkpoint per message stays cheap: an agent's ``llm_config`` and ``is_termination_msg`` are treated as
fixed once the agent exists (AG2 itself copies dict configs when the agent is created).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .jsonable import qualified_name, to_jsonable
from .model import FORMAT_VERSION, AgentState, CheckpointData, GroupChatState, ManagerState
from .redaction import redact_llm_config
from .termination import describe_termination
from .versions import ag2_version, library_version

if TYPE_CHECKING:
    from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager


class _IdentityMemo:
    """Results of a pure function of an object, keyed by the object's identity (held, so ids stay unique).

    Results are shared between snapshots: treat them as read-only.
    """

    def __init__(self, function: Callable[[Any], Any], limit: int = 1024) -> None:
        self._function = function
        self._limit = limit
        self._results: dict[int, tuple[Any, Any]] = {}

    def __call__(self, obj: Any) -> Any:
        hit = self._results.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        result = self._function(obj)
        if len(self._results) >= self._limit:
            self._results.clear()
        self._results[id(obj)] = (obj, result)
        return result


_redacted_llm_config = _IdentityMemo(redact_llm_config)
_termination_record = _IdentityMemo(describe_termination)


def _by_name(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """Re-key a dict keyed by agent objects with the agents' names."""
    return {getattr(peer, "name", str(peer)): value for peer, value in mapping.items()}


def _tool_names(agent: ConversableAgent) -> list[str]:
    names = [str(getattr(tool, "name", tool)) for tool in getattr(agent, "tools", []) or []]
    llm_config = agent.llm_config
    if llm_config:
        entries = llm_config.get("tools", None) if hasattr(llm_config, "get") else None
        for entry in entries or []:
            name = (entry.get("function") or {}).get("name") if isinstance(entry, dict) else None
            if name and name not in names:
                names.append(name)
    return names


def _code_execution_record(agent: ConversableAgent) -> dict[str, Any] | bool:
    config = getattr(agent, "_code_execution_config", False)
    if config is False or config is None:
        return False
    jsonable = to_jsonable(config)
    return jsonable if isinstance(jsonable, dict) else False


def _context_variables(agent: ConversableAgent) -> dict[str, Any] | None:
    variables = getattr(agent, "context_variables", None)
    data = getattr(variables, "data", None)
    if not isinstance(data, dict) or not data:
        return None
    jsonable = to_jsonable(data)
    return jsonable if isinstance(jsonable, dict) else None


def _agent_fields(agent: ConversableAgent) -> dict[str, Any]:
    max_auto = getattr(agent, "_max_consecutive_auto_reply", None)
    return {
        "name": agent.name,
        "agent_class": qualified_name(type(agent)),
        "system_message": to_jsonable(agent.system_message),
        "description": agent.description,
        "llm_config": _redacted_llm_config(agent.llm_config),
        "termination_pattern": _termination_record(getattr(agent, "_is_termination_msg", None)),
        "code_execution_config": _code_execution_record(agent),
        "human_input_mode": str(agent.human_input_mode),
        "max_consecutive_auto_reply": max_auto if isinstance(max_auto, int) else None,
        "default_auto_reply": to_jsonable(getattr(agent, "_default_auto_reply", "")),
        "tools": _tool_names(agent),
        "function_map": sorted(getattr(agent, "function_map", {}) or {}),
        "context_variables": _context_variables(agent),
        "oai_messages": {name: list(history) for name, history in _by_name(agent._oai_messages).items()},
        "consecutive_auto_reply_counter": _by_name(agent._consecutive_auto_reply_counter),
        "max_consecutive_auto_reply_dict": _by_name(agent._max_consecutive_auto_reply_dict),
        "reply_at_receive": _by_name(agent.reply_at_receive),
    }


def agent_state(agent: ConversableAgent) -> AgentState:
    """The full state of one agent (configuration, per-peer histories, counters)."""
    return AgentState.model_construct(**_agent_fields(agent))


def manager_state(manager: GroupChatManager, *, step_counter: int) -> ManagerState:
    """The manager's own agent state plus its place in the loop (last speaker, step counter)."""
    last = getattr(manager, "_last_speaker", None)
    return ManagerState.model_construct(
        **_agent_fields(manager),
        step_counter=step_counter,
        current_speaker=getattr(last, "name", None),
        silent=bool(getattr(manager, "_silent", False)),
    )


def _speaker_selection_record(method: Any) -> str | dict[str, Any]:
    if isinstance(method, str):
        return method
    return {"kind": "callable", "qualname": qualified_name(method)}


def _agent_list_names(agents: Iterable[Agent]) -> list[str]:
    return [agent.name for agent in agents]


def groupchat_state(
    groupchat: GroupChat, *, round_index: int = 0, run_start_index: int = 0
) -> GroupChatState:
    """The group chat's settings, with agent references replaced by names."""
    repeat = groupchat.allow_repeat_speaker
    transitions = groupchat.allowed_or_disallowed_speaker_transitions
    return GroupChatState.model_construct(
        agent_names=_agent_list_names(groupchat.agents),
        max_round=groupchat.max_round,
        speaker_selection_method=_speaker_selection_record(groupchat.speaker_selection_method),
        allow_repeat_speaker=_agent_list_names(repeat) if isinstance(repeat, list) else repeat,
        allowed_or_disallowed_speaker_transitions=(
            {getattr(src, "name", str(src)): _agent_list_names(dst) for src, dst in transitions.items()}
            if transitions
            else None
        ),
        speaker_transitions_type=groupchat.speaker_transitions_type,
        send_introductions=groupchat.send_introductions,
        admin_name=groupchat.admin_name,
        func_call_filter=groupchat.func_call_filter,
        enable_clear_history=groupchat.enable_clear_history,
        max_retries_for_selecting_speaker=groupchat.max_retries_for_selecting_speaker,
        role_for_select_speaker_messages=groupchat.role_for_select_speaker_messages or "system",
        round_index=round_index,
        run_start_index=run_start_index,
    )


def utc_timestamp() -> str:
    """The current time as an ISO-8601 UTC string with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def conversation_snapshot(
    *,
    agents: Sequence[ConversableAgent],
    manager: GroupChatManager | None,
    messages: Sequence[dict[str, Any]],
    checkpoint_id: str,
    step_number: int,
    context: str,
    timestamp: str | None = None,
    groupchat: GroupChat | None = None,
    round_index: int | None = None,
    run_start_index: int = 0,
    parent_checkpoint_id: str | None = None,
    session_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> CheckpointData:
    """Build a ``CheckpointData`` from live AG2 objects."""
    gc = groupchat if groupchat is not None else getattr(manager, "groupchat", None)
    rounds = len(messages) - run_start_index if round_index is None else round_index
    return CheckpointData.model_construct(
        format_version=FORMAT_VERSION,
        checkpoint_id=checkpoint_id,
        timestamp=timestamp or utc_timestamp(),
        step_number=step_number,
        context=context,
        messages=list(messages),
        agent_states={agent.name: agent_state(agent) for agent in agents},
        manager_state=manager_state(manager, step_counter=step_number) if manager is not None else None,
        groupchat_state=(
            groupchat_state(gc, round_index=rounds, run_start_index=run_start_index)
            if gc is not None
            else None
        ),
        parent_checkpoint_id=parent_checkpoint_id,
        session_id=session_id,
        ag2_version=ag2_version(),
        library_version=library_version(),
        metadata=dict(metadata or {}),
        integrity=None,
    )
