"""The mirror of ``snapshot``: turn checkpoint state back into live AG2 objects.

Nothing here reads files. Agent classes are chosen from an allow-list (a checkpoint names a class, it never
makes us import one), secrets come from the environment or the caller, and code execution stays off unless
the caller allows it. Everything that could not be restored exactly is written to a ``RestoreReport``.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autogen import Agent, AssistantAgent, ConversableAgent, GroupChat, UserProxyAgent

from .endpoints import EndpointPolicy
from .errors import CheckpointError, UnsafePatternError
from .model import AgentState, CheckpointData, GroupChatState
from .recording import CLIENT_CLASS_NAME as RECORDING_CLIENT_NAME
from .recording import use_recording
from .redaction import describe_missing, restore_llm_config_report
from .termination import termination_from_record
from .testing import CLIENT_CLASS_NAME, DeterministicModelClient


class RestoreWarning(UserWarning):
    """Something was restored approximately (code execution off, custom termination, missing secret)."""


class RosterMismatchError(CheckpointError):
    """The agents supplied for a restore differ from the checkpoint's (names or configuration)."""


class UnknownModelClientError(CheckpointError):
    """A restored config names a custom model client class that was not supplied (the agent could not
    answer: AG2 would fail at its first reply)."""


#: Agent classes a checkpoint may name. Anything else is rebuilt as a ``ConversableAgent`` and reported.
SAFE_AGENT_CLASSES: dict[str, type[ConversableAgent]] = {
    "autogen.agentchat.conversable_agent.ConversableAgent": ConversableAgent,
    "autogen.agentchat.assistant_agent.AssistantAgent": AssistantAgent,
    "autogen.agentchat.user_proxy_agent.UserProxyAgent": UserProxyAgent,
}

#: Model clients that can be registered without the user's help.
BUILTIN_MODEL_CLIENTS: dict[str, type] = {CLIENT_CLASS_NAME: DeterministicModelClient}


@dataclass
class RestoreReport:
    """What a restore did approximately or could not do; empty when the restore is exact."""

    notes: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    #: Every endpoint the restored agents and manager will call, and why it is trusted.
    endpoints: list[str] = field(default_factory=list)

    def note(self, message: str, *, warn: bool = True) -> None:
        self.notes.append(message)
        if warn:
            warnings.warn(message, RestoreWarning, stacklevel=3)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "notes": list(self.notes),
            "mismatches": list(self.mismatches),
            "endpoints": list(self.endpoints),
        }


@dataclass
class Credentials:
    """Where restored LLM configs take their secrets from (see ``redaction.restore_llm_config_report``)
    and where they may send them (see ``endpoints``)."""

    environ: Mapping[str, str] | None = None
    secrets: Mapping[str, Any] | None = None
    azure_ad_token_provider: Callable[[], str] | None = None
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)


def restore_llm_config_for(
    owner: str, record: Any, credentials: Credentials, report: RestoreReport
) -> dict[str, Any] | bool | None:
    """A usable llm_config for ``owner`` (secrets filled in), noting what is missing.

    Raises ``UntrustedEndpointError`` before anything is built when the config would send a credential to
    an endpoint that is not trusted; every endpoint is listed in ``report.endpoints``.
    """
    config, missing = restore_llm_config_report(
        record,
        environ=credentials.environ,
        secrets=credentials.secrets,
        azure_ad_token_provider=credentials.azure_ad_token_provider,
    )
    report.endpoints += credentials.endpoints.check(owner, record, missing)
    if missing:
        report.note(f"{owner}: secrets not supplied:\n{describe_missing(missing)}")
    return config


def _model_client_names(llm_config: Any) -> list[str]:
    if not isinstance(llm_config, dict):
        return []
    entries = llm_config.get("config_list") or [llm_config]
    return [str(e["model_client_cls"]) for e in entries if isinstance(e, dict) and e.get("model_client_cls")]


def register_model_clients(
    agent: ConversableAgent, llm_config: Any, model_clients: Mapping[str, type], report: RestoreReport
) -> None:
    """Register the custom model clients an agent's config names, from ``model_clients`` or built-ins."""
    for name in dict.fromkeys(_model_client_names(llm_config)):
        if name == RECORDING_CLIENT_NAME and name not in model_clients:
            # recorded sessions replay offline; a diverged request stops with the agent and step named
            use_recording(agent)
            report.note(
                f"agent {agent.name!r}: replaying its recorded LLM calls (no live model for new requests)",
                warn=False,
            )
            continue
        cls = model_clients.get(name) or BUILTIN_MODEL_CLIENTS.get(name)
        if cls is None:
            raise UnknownModelClientError(
                f"agent {agent.name!r}: its llm_config uses the custom model client {name!r}, which is "
                f"code and cannot come from a file; pass CheckpointRestorer(model_clients={{{name!r}: "
                "YourClientClass}) or an agent_factory that registers it"
            )
        agent.register_model_client(cls)  # type: ignore[arg-type]


def termination_callable(
    owner: str, record: dict[str, Any], report: RestoreReport, *, trust_patterns: bool = False
) -> Any:
    """The termination condition of a record, or None (AG2's default) with a note if it was custom.

    Regex patterns run on RE2 (linear time); one that RE2 cannot run as Python's ``re`` would raises
    ``UnsafePatternError`` naming ``owner``, unless ``trust_patterns`` lets Python's ``re`` run it.
    """
    try:
        condition = termination_from_record(record, trust_patterns=trust_patterns)
    except UnsafePatternError as exc:
        raise UnsafePatternError(f"{owner}: {exc.reason}", path=exc.path) from None
    if condition is None and record.get("kind") == "custom":
        report.note(
            f"{owner}: its termination condition was a custom callable ({record.get('qualname', '?')}) that "
            "cannot be rebuilt from a file; AG2's default (content == 'TERMINATE') is used. Supply it via "
            "an agent_factory or manager_overrides={'is_termination_msg': ...}."
        )
    return condition


def build_agent(
    state: AgentState,
    *,
    credentials: Credentials,
    allow_code_execution: bool,
    model_clients: Mapping[str, type],
    report: RestoreReport,
    work_dir: Callable[[], Path],
    trust_patterns: bool = False,
) -> ConversableAgent:
    """A fresh agent with the saved configuration (histories are applied separately).

    Code execution, when allowed, runs in ``work_dir()`` (the continuation's own directory), never in a
    directory named by the file.
    """
    cls = SAFE_AGENT_CLASSES.get(state.agent_class)
    if cls is None:
        report.note(
            f"agent {state.name!r}: class {state.agent_class} is not rebuilt from files; using "
            "ConversableAgent (pass an agent_factory to restore it with its own class, tools and hooks)"
        )
        cls = ConversableAgent
    llm_config = restore_llm_config_for(f"agent {state.name!r}", state.llm_config, credentials, report)
    code_execution: dict[str, Any] | bool = False
    if state.code_execution_config:
        if allow_code_execution:
            code_execution = _code_execution(state, work_dir(), report)
        else:
            report.note(
                f"agent {state.name!r}: code execution was enabled and is restored OFF; pass "
                "allow_code_execution=True (CLI: --allow-code-execution) or an agent_factory to re-enable it"
            )
    if state.tools or state.function_map:
        report.note(
            f"agent {state.name!r}: tools/functions {sorted(set(state.tools) | set(state.function_map))} are "
            "code and cannot be rebuilt from a file; pass an agent_factory that registers them"
        )
    kwargs: dict[str, Any] = {
        "name": state.name,
        "system_message": state.system_message if state.system_message is not None else "",
        "description": state.description,
        "llm_config": llm_config if llm_config is not None else False,
        "is_termination_msg": termination_callable(
            f"agent {state.name!r}", state.termination_pattern, report, trust_patterns=trust_patterns
        ),
        "code_execution_config": code_execution,
        "human_input_mode": state.human_input_mode,
        "max_consecutive_auto_reply": state.max_consecutive_auto_reply,
        "default_auto_reply": state.default_auto_reply if state.default_auto_reply is not None else "",
    }
    try:
        agent = cls(**kwargs)
    except Exception as exc:  # e.g. AG2 builds OpenAI clients eagerly and needs the key now
        raise CheckpointError(
            f"agent {state.name!r} could not be rebuilt from the checkpoint: {type(exc).__name__}: {exc}. "
            "If a secret is missing, set it in the environment or pass secrets=... / an agent_factory."
        ) from exc
    register_model_clients(agent, llm_config, model_clients, report)
    return agent


def _code_execution(state: AgentState, work_dir: Path, report: RestoreReport) -> dict[str, Any]:
    """The saved code execution settings, running in ``work_dir`` (an absolute path of our choosing)."""
    saved = state.code_execution_config or {}
    where = str(work_dir.resolve())
    if "executor" in saved:  # an executor object or name: rebuilt as local execution in ``where``
        report.note(
            f"agent {state.name!r}: its code executor ({saved['executor']!r}) is replaced by local "
            f"execution in {where}",
            warn=False,
        )
        return {"executor": "commandline-local", "commandline-local": {"work_dir": where}}
    settings = {k: v for k, v in saved.items() if not isinstance(v, dict)}
    if settings.get("work_dir") not in (None, where):
        report.note(
            f"agent {state.name!r}: code runs in {where} "
            f"(the checkpoint said {str(settings['work_dir'])[:200]!r})",
            warn=False,
        )
    settings["work_dir"] = where
    return settings


def _peer_map(agents: Sequence[Agent]) -> dict[str, Agent]:
    return {agent.name: agent for agent in agents}


def apply_agent_state(agent: ConversableAgent, state: AgentState, peers: Mapping[str, Agent]) -> list[str]:
    """Load histories, counters and context into ``agent``; returns peer names not found in ``peers``."""
    missing: list[str] = []

    def rekey(values: Mapping[str, Any]) -> dict[Agent, Any]:
        out: dict[Agent, Any] = {}
        for name, value in values.items():
            peer = peers.get(name)
            if peer is None:
                missing.append(name)
            else:
                out[peer] = value
        return out

    agent._oai_messages = defaultdict(
        list, {p: [dict(m) for m in h] for p, h in rekey(state.oai_messages).items()}
    )
    agent._consecutive_auto_reply_counter = defaultdict(int, rekey(state.consecutive_auto_reply_counter))
    max_dict: defaultdict[Agent, int] = defaultdict(agent.max_consecutive_auto_reply)
    max_dict.update(rekey(state.max_consecutive_auto_reply_dict))
    agent._max_consecutive_auto_reply_dict = max_dict
    agent.reply_at_receive = defaultdict(bool, rekey(state.reply_at_receive))
    variables = getattr(agent, "context_variables", None)
    if state.context_variables and variables is not None and hasattr(variables, "data"):
        variables.data.clear()
        variables.data.update(state.context_variables)
    return sorted(set(missing))


def compare_roster(checkpoint: CheckpointData, agents: Sequence[ConversableAgent]) -> list[str]:
    """Differences between the checkpoint's agents and the supplied ones, one line per problem."""
    problems: list[str] = []
    saved, given = list(checkpoint.agent_states), [agent.name for agent in agents]
    for name in saved:
        if name not in given:
            problems.append(f"agent {name!r} is in the checkpoint but not among the supplied agents")
    for name in given:
        if name not in saved:
            problems.append(f"agent {name!r} was supplied but is not in the checkpoint")
    from .snapshot import agent_state  # local import: snapshot is the other direction

    for agent in agents:
        state = checkpoint.agent_states.get(agent.name)
        if state is None:
            continue
        current = agent_state(agent)
        for field_name in ("system_message", "llm_config", "termination_pattern", "human_input_mode"):
            before, now = getattr(state, field_name), getattr(current, field_name)
            if _comparable(before) != _comparable(now):
                problems.append(f"agent {agent.name!r}: {field_name} differs from the checkpoint")
    return problems


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in ("source", "detected_from")}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def build_groupchat(
    state: GroupChatState,
    agents: Sequence[ConversableAgent],
    messages: list[dict[str, Any]],
    *,
    overrides: Mapping[str, Any] | None = None,
) -> GroupChat:
    """A ``GroupChat`` with the saved settings over ``agents`` (in the saved order) and ``messages``."""
    by_name = _peer_map(agents)
    ordered = [by_name[name] for name in state.agent_names if name in by_name]
    ordered += [agent for agent in agents if agent.name not in state.agent_names]
    overrides = dict(overrides or {})
    method: Any = state.speaker_selection_method
    if not isinstance(method, str) and "speaker_selection_method" not in overrides:
        raise CheckpointError(
            "the group chat used a custom speaker selection function "
            f"({method.get('qualname', '?')}), which cannot be rebuilt from a file: pass it with "
            "groupchat_overrides={'speaker_selection_method': fn} or return the GroupChat from your "
            "agent_factory"
        )
    repeat: Any = state.allow_repeat_speaker
    if isinstance(repeat, list):
        repeat = [by_name[name] for name in repeat if name in by_name]
    transitions = None
    if state.allowed_or_disallowed_speaker_transitions:
        transitions = {
            by_name[src]: [by_name[dst] for dst in dsts if dst in by_name]
            for src, dsts in state.allowed_or_disallowed_speaker_transitions.items()
            if src in by_name
        }
    kwargs: dict[str, Any] = {
        "agents": ordered,
        "messages": messages,
        "max_round": state.max_round,
        "admin_name": state.admin_name,
        "func_call_filter": state.func_call_filter,
        "speaker_selection_method": method,
        "max_retries_for_selecting_speaker": state.max_retries_for_selecting_speaker,
        "allow_repeat_speaker": repeat,
        "allowed_or_disallowed_speaker_transitions": transitions,
        "speaker_transitions_type": state.speaker_transitions_type,
        "enable_clear_history": state.enable_clear_history,
        "send_introductions": state.send_introductions,
        "role_for_select_speaker_messages": state.role_for_select_speaker_messages,
    }
    kwargs.update(overrides)
    return GroupChat(**kwargs)
