"""Pure functions that read AG2 objects and return the checkpoint model. Nothing here writes anything.

Histories and message lists are copied shallowly: the message dicts are shared with the live chat, which
lets a storage backend recognise what it already stored in O(1). The snapshot never mutates AG2 objects.

Redacting an LLM config (~0.1 ms) and describing a termination callable (~0.2 ms) are memoised per object,
so a checkpoint per message stays cheap: an agent's ``llm_config`` and ``is_termination_msg`` are treated as
fixed once the agent exists (AG2 itself copies dict configs when the agent is created).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from .jsonable import qualified_name, to_jsonable
from .model import FORMAT_VERSION, STATIC_FIELDS_KEY, AgentState, CheckpointData, GroupChatState, ManagerState
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


class _StableValues:
    """Hands back the previously returned object for a value whose JSON is unchanged.

    Derived values (a tool-name list, a converted code-execution config) are rebuilt on every snapshot;
    returning the same object while they are unchanged lets the store recognise an unchanged configuration
    by identity instead of serialising it again. Keys are (owner id, field): if an id is reused by a new
    object, the value handed back is still JSON-equal to the new one, so the result stays correct.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._last: dict[tuple[int, str], tuple[bytes, Any]] = {}

    def __call__(self, owner: object, name: str, value: Any) -> Any:
        if value is None or type(value) is bool:
            return value
        key = (id(owner), name)
        if type(value) is str:
            known_text = self._last.get(key)
            if known_text is not None and known_text[1] == value:
                return known_text[1]
            self._last[key] = (b"", value)
            return value
        encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
        known = self._last.get(key)
        if known is not None and known[0] == encoded:
            return known[1]
        if len(self._last) >= self._limit:
            self._last.clear()
        self._last[key] = (encoded, value)
        return value


_stable = _StableValues()


def _by_name(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """Re-key a dict keyed by agent objects with the agents' names (``str(key)`` for a key without one)."""
    named: dict[str, Any] = {}
    for peer, value in mapping.items():  # a plain loop: ~20 calls per checkpoint, a comprehension costs more
        try:
            named[peer.name] = value
        except AttributeError:
            named[str(peer)] = value
    return named


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


def _termination_callable(agent: ConversableAgent) -> Any:
    """The agent's termination condition, seen through the manager's temporary ``force`` wrapper."""
    condition = getattr(agent, "_is_termination_msg", None)
    return getattr(condition, "__checkpoint_original__", condition)


def _static_sources(agent: ConversableAgent) -> tuple[Any, ...]:
    """Everything an agent's configuration is derived from, compared cheaply (mostly by identity)."""
    code = getattr(agent, "_code_execution_config", False)
    variables = getattr(getattr(agent, "context_variables", None), "data", None)
    return (
        agent.name,
        type(agent),
        agent.system_message,
        agent.description,
        agent.llm_config,
        _termination_callable(agent),
        dict(code) if isinstance(code, dict) else code,
        agent.human_input_mode,
        getattr(agent, "_max_consecutive_auto_reply", None),
        getattr(agent, "_default_auto_reply", ""),
        tuple(getattr(agent, "_tools", ()) or ()),
        tuple(getattr(agent, "_function_map", {}) or ()),
        dict(variables) if isinstance(variables, dict) and variables else None,
    )


#: configuration fields by ``id(agent)``, with the sources they were made from. The fields are a function
#: of the sources, so an id reused by another agent is harmless: its sources decide (as for group chats).
#: Keyed by id rather than weakly by the agent: a weak lookup costs a new weakref per agent per checkpoint.
_static_cache: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
_STATIC_CACHE_LIMIT = 4096


def _static_fields(agent: ConversableAgent) -> dict[str, Any]:
    """An agent's configuration fields; the same dict (same value objects) while nothing changed."""
    sources = _static_sources(agent)
    cached = _static_cache.get(id(agent))
    if cached is not None and cached[0] == sources:
        return cached[1]
    max_auto = getattr(agent, "_max_consecutive_auto_reply", None)
    fields = {
        "name": agent.name,
        "agent_class": _stable(agent, "class", qualified_name(type(agent))),
        "system_message": _stable(agent, "system", to_jsonable(agent.system_message)),
        "description": agent.description,
        "llm_config": _redacted_llm_config(agent.llm_config),
        "termination_pattern": _termination_record(_termination_callable(agent)),
        "code_execution_config": _stable(agent, "code", _code_execution_record(agent)),
        "human_input_mode": str(agent.human_input_mode),
        "max_consecutive_auto_reply": max_auto if isinstance(max_auto, int) else None,
        "default_auto_reply": _stable(
            agent, "default", to_jsonable(getattr(agent, "_default_auto_reply", ""))
        ),
        "tools": _stable(agent, "tools", _tool_names(agent)),
        "function_map": _stable(agent, "functions", sorted(getattr(agent, "function_map", {}) or {})),
        "context_variables": _stable(agent, "context", _context_variables(agent)),
    }
    if len(_static_cache) >= _STATIC_CACHE_LIMIT:
        _static_cache.clear()
    _static_cache[id(agent)] = (sources, fields)
    return fields


def _agent_fields(agent: ConversableAgent, copy_histories: bool = True) -> dict[str, Any]:
    """An agent's field values.

    A live snapshot (``copy_histories=False``) shares the live histories, and also holds the configuration
    dict itself under ``STATIC_FIELDS_KEY``: the same dict while nothing changed, which the store
    recognises by identity.
    """
    static = _static_fields(agent)
    histories = _by_name(agent._oai_messages)
    fields = {
        **static,
        "oai_messages": {name: list(h) for name, h in histories.items()} if copy_histories else histories,
        "consecutive_auto_reply_counter": _by_name(agent._consecutive_auto_reply_counter),
        "max_consecutive_auto_reply_dict": _by_name(agent._max_consecutive_auto_reply_dict),
        "reply_at_receive": _by_name(agent.reply_at_receive),
    }
    if not copy_histories:
        fields[STATIC_FIELDS_KEY] = static
    return fields


def agent_state(agent: ConversableAgent, *, copy_histories: bool = True) -> AgentState:
    """The full state of one agent (configuration, per-peer histories, counters).

    ``copy_histories=False`` shares the agent's live history lists (for a snapshot that is stored at once
    and dropped, as the checkpointing manager does): no per-checkpoint copy that grows with the chat.
    """
    return AgentState.model_construct(**_agent_fields(agent, copy_histories))


def manager_state(
    manager: GroupChatManager, *, step_counter: int, copy_histories: bool = True
) -> ManagerState:
    """The manager's own agent state plus its place in the loop (last speaker, step counter)."""
    return ManagerState.model_construct(**_manager_fields(manager, step_counter, copy_histories))


def _manager_fields(manager: GroupChatManager, step_counter: int, copy_histories: bool) -> dict[str, Any]:
    fields = _agent_fields(manager, copy_histories)  # a dict of its own: completed in place
    fields["step_counter"] = step_counter
    fields["current_speaker"] = getattr(getattr(manager, "_last_speaker", None), "name", None)
    fields["silent"] = bool(getattr(manager, "_silent", False))
    return fields


def _speaker_selection_record(method: Any) -> str | dict[str, Any]:
    if isinstance(method, str):
        return method
    return {"kind": "callable", "qualname": qualified_name(method)}


def _agent_list_names(agents: Iterable[Agent]) -> list[str]:
    return [agent.name for agent in agents]


def _groupchat_sources(groupchat: GroupChat) -> tuple[Any, ...]:
    transitions = groupchat.allowed_or_disallowed_speaker_transitions
    repeat = groupchat.allow_repeat_speaker
    return (
        tuple(groupchat.agents),
        groupchat.max_round,
        groupchat.speaker_selection_method,
        tuple(repeat) if isinstance(repeat, list) else repeat,
        {src: tuple(dst) for src, dst in transitions.items()} if transitions else None,
        groupchat.speaker_transitions_type,
        groupchat.send_introductions,
        groupchat.admin_name,
        groupchat.func_call_filter,
        groupchat.enable_clear_history,
        groupchat.max_retries_for_selecting_speaker,
        groupchat.role_for_select_speaker_messages,
    )


_groupchat_cache: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}


def _groupchat_fields(groupchat: GroupChat) -> dict[str, Any]:
    """The group chat's settings; the same dict while they are unchanged (see ``_static_fields``)."""
    sources = _groupchat_sources(groupchat)
    cached = _groupchat_cache.get(id(groupchat))
    if cached is not None and cached[0] == sources:
        return cached[1]
    repeat = groupchat.allow_repeat_speaker
    transitions = groupchat.allowed_or_disallowed_speaker_transitions
    fields = {
        "agent_names": _agent_list_names(groupchat.agents),
        "max_round": groupchat.max_round,
        "speaker_selection_method": _speaker_selection_record(groupchat.speaker_selection_method),
        "allow_repeat_speaker": _agent_list_names(repeat) if isinstance(repeat, list) else repeat,
        "allowed_or_disallowed_speaker_transitions": (
            {getattr(src, "name", str(src)): _agent_list_names(dst) for src, dst in transitions.items()}
            if transitions
            else None
        ),
        "speaker_transitions_type": groupchat.speaker_transitions_type,
        "send_introductions": groupchat.send_introductions,
        "admin_name": groupchat.admin_name,
        "func_call_filter": groupchat.func_call_filter,
        "enable_clear_history": groupchat.enable_clear_history,
        "max_retries_for_selecting_speaker": groupchat.max_retries_for_selecting_speaker,
        "role_for_select_speaker_messages": groupchat.role_for_select_speaker_messages or "system",
    }
    if len(_groupchat_cache) > 256:
        _groupchat_cache.clear()
    _groupchat_cache[id(groupchat)] = (sources, fields)  # an id reused by another chat fails ``sources``
    return fields


def groupchat_state(
    groupchat: GroupChat, *, round_index: int = 0, run_start_index: int = 0
) -> GroupChatState:
    """The group chat's settings, with agent references replaced by names."""
    return GroupChatState.model_construct(
        **_groupchat_fields(groupchat), round_index=round_index, run_start_index=run_start_index
    )


_iso_second: tuple[int, str] = (-1, "")


def utc_timestamp() -> str:
    """The current time as an ISO-8601 UTC string with microseconds (``2026-11-21T16:34:36.164733+00:00``).

    The date and time of day are formatted once per second: ``datetime.now().isoformat()`` costs ~10 µs
    with cold caches, and a live chat takes a checkpoint per message.
    """
    global _iso_second
    second, fraction = divmod(time.time_ns() // 1000, 1_000_000)  # floored, as datetime.now() does
    known = _iso_second
    if second != known[0]:
        known = _iso_second = (second, datetime.fromtimestamp(second, timezone.utc).isoformat()[:19])
    return f"{known[1]}.{fraction:06d}+00:00"


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
    copy_histories: bool = True,
) -> CheckpointData:
    """Build a ``CheckpointData`` from live AG2 objects.

    ``copy_histories=False`` is the checkpointing manager's hot path: the result shares the live message
    and history lists and holds plain field dicts instead of nested models, so it must be stored at once
    and dropped (``CheckpointManager.take_checkpoint`` does exactly that).
    """
    gc = groupchat if groupchat is not None else getattr(manager, "groupchat", None)
    rounds = len(messages) - run_start_index if round_index is None else round_index
    agent_fields = {agent.name: _agent_fields(agent, copy_histories) for agent in agents}
    manager_fields = _manager_fields(manager, step_number, copy_histories) if manager is not None else None
    groupchat_fields = None
    if gc is not None:
        static = _groupchat_fields(gc)
        groupchat_fields = {**static, "round_index": rounds, "run_start_index": run_start_index}
        if not copy_histories:  # as for agents: the settings dict itself, recognised by identity
            groupchat_fields[STATIC_FIELDS_KEY] = static
    if copy_histories:  # a snapshot to keep: models, and lists of its own
        states: dict[str, Any] = {n: AgentState.model_construct(**f) for n, f in agent_fields.items()}
        manager_value: Any = ManagerState.model_construct(**manager_fields) if manager_fields else None
        groupchat_value: Any = (
            GroupChatState.model_construct(**groupchat_fields) if groupchat_fields else None
        )
        messages = list(messages)
    else:  # a live snapshot, stored at once: plain field dicts, no model per agent
        states, manager_value, groupchat_value = agent_fields, manager_fields, groupchat_fields
    return _checkpoint_data(
        {
            "format_version": FORMAT_VERSION,
            "checkpoint_id": checkpoint_id,
            "timestamp": timestamp or utc_timestamp(),
            "step_number": step_number,
            "context": context,
            "messages": messages,
            "agent_states": states,
            "manager_state": manager_value,
            "groupchat_state": groupchat_value,
            "parent_checkpoint_id": parent_checkpoint_id,
            "session_id": session_id,
            "ag2_version": ag2_version(),
            "library_version": library_version(),
            "metadata": dict(metadata or {}),
            "integrity": None,
        }
    )


_CHECKPOINT_FIELDS = frozenset(CheckpointData.model_fields)


def _checkpoint_data(fields: dict[str, Any]) -> CheckpointData:
    """``CheckpointData.model_construct(**fields)``, made directly when ``fields`` holds every field.

    ``model_construct`` resolves aliases and defaults field by field: ~10 µs, and more with cold caches,
    on a path that runs after every message. With every field given (and no extra), the instance is just
    its field dict; ``tests/test_live_snapshot.py`` checks that both ways build the same model.
    """
    if fields.keys() != _CHECKPOINT_FIELDS:
        return CheckpointData.model_construct(**fields)
    data = CheckpointData.__new__(CheckpointData)
    object.__setattr__(data, "__dict__", fields)
    object.__setattr__(data, "__pydantic_fields_set__", set(_CHECKPOINT_FIELDS))
    object.__setattr__(data, "__pydantic_extra__", {})
    object.__setattr__(data, "__pydantic_private__", None)
    return data
