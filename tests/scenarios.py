"""Deterministic, offline AG2 group chats used by the tests (and by restore tests and benchmarks).

Every ``build_<name>()`` returns a fresh ``Scenario``: new agents, a new ``GroupChat``, nothing shared with
an earlier build, so two runs of the same scenario are independent and must produce identical transcripts.

Agents with an LLM use ``DeterministicModelClient``: each reply is a pure function of the exact history the
agent is sent (the default digest policy), so any difference in what an agent saw shows up in the transcript.
Custom policies add structure on top (a verifier that declares the solution after a few turns, an assistant
that emits tool calls) and still include the history digest in their text.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager, register_function
from autogen.io.base import IOStream

from checkpoint_system.termination import terminate_on
from checkpoint_system.testing import (
    DeterministicModelClient,
    deterministic_llm_config,
    digest_policy,
    history_digest,
)

Policy = Callable[[str, list[dict[str, Any]]], "str | dict[str, Any]"]

RUN_MODES = ("sync", "async")
SOLUTION_MARKER = "SOLUTION_FOUND"
SOLUTION_TEXT = "SOLUTION_FOUND \\boxed{110}"


@dataclass
class Scenario:
    """One ready-to-run group chat. ``make_manager`` builds the manager; ``run``/``a_run`` start the chat."""

    name: str
    agents: list[ConversableAgent]
    groupchat: GroupChat
    initiator: ConversableAgent
    first_message: str | dict[str, Any]
    manager_kwargs: dict[str, Any] = field(default_factory=dict)
    initiate_kwargs: dict[str, Any] = field(default_factory=dict)
    #: a substring of AG2's termination reason for this chat (same in sync and async runs)
    expected_termination: str = ""

    @property
    def all_agents(self) -> list[ConversableAgent]:
        """The group's agents, plus the initiator when it is not a member of the group."""
        extra = [] if any(a is self.initiator for a in self.agents) else [self.initiator]
        return [*self.agents, *extra]

    def agent(self, name: str) -> ConversableAgent:
        for candidate in self.all_agents:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def make_manager(self, manager_cls: type[GroupChatManager] = GroupChatManager, **extra: Any) -> Any:
        """A ``manager_cls`` over this scenario's group chat; ``extra``: e.g. ``checkpoint_manager``."""
        return manager_cls(groupchat=self.groupchat, **self.manager_kwargs, **extra)

    def run(self, manager: GroupChatManager) -> Any:
        """Run the chat synchronously; returns AG2's ``ChatResult``."""
        return self.initiator.initiate_chat(manager, message=self.first_message, **self.initiate_kwargs)

    def a_run(self, manager: GroupChatManager) -> Any:
        """Run the chat with AG2's async API (in a fresh event loop); returns the ``ChatResult``."""
        return asyncio.run(
            self.initiator.a_initiate_chat(manager, message=self.first_message, **self.initiate_kwargs)
        )

    def run_with(self, manager: GroupChatManager, mode: str) -> Any:
        """``run`` for mode "sync", ``a_run`` for mode "async"."""
        if mode not in RUN_MODES:
            raise ValueError(f"mode must be one of {RUN_MODES}, not {mode!r}")
        return self.run(manager) if mode == "sync" else self.a_run(manager)


# -- agent factories -----------------------------------------------------------------------------------------


class ToolCallingModelClient(DeterministicModelClient):
    """``DeterministicModelClient`` whose responses also work for tool calls on recent AG2 (0.14).

    AG2 0.14 binds the client's ``message_retrieval`` to a response only when the response already has a
    ``message_retrieval_function`` attribute (or a known ``id``); otherwise it falls back to returning the raw
    ``choice.message`` object for tool calls, which AG2 then cannot turn into a message dict (0.10 binds it
    unconditionally). Plain text replies are unaffected, so only the tool-calling agent uses this subclass.
    Redundant once ``DeterministicModelClient`` sets the attribute itself.
    """

    def create(self, params: dict[str, Any]) -> Any:
        response = super().create(params)
        if not hasattr(response, "message_retrieval_function"):
            response.message_retrieval_function = None
        return response


def llm_agent(
    name: str,
    policy: Policy = digest_policy,
    client_cls: type[DeterministicModelClient] = DeterministicModelClient,
    **kwargs: Any,
) -> ConversableAgent:
    """An agent whose 'LLM' is ``DeterministicModelClient`` (or a subclass) with ``policy``."""
    kwargs.setdefault("system_message", f"You are {name}.")
    kwargs.setdefault("human_input_mode", "NEVER")
    llm_config = deterministic_llm_config(name, model_client_cls=client_cls.__name__)
    agent = ConversableAgent(name, llm_config=llm_config, **kwargs)
    agent.register_model_client(client_cls, policy=policy)
    return agent


def plain_agent(name: str, default_auto_reply: str | dict[str, Any] = "", **kwargs: Any) -> ConversableAgent:
    """An agent without LLM: it answers with ``default_auto_reply`` (or runs tools it can execute)."""
    kwargs.setdefault("human_input_mode", "NEVER")
    return ConversableAgent(name, llm_config=False, default_auto_reply=default_auto_reply, **kwargs)


def _manager_kwargs(**extra: Any) -> dict[str, Any]:
    return {"name": "chat_manager", "llm_config": False, **extra}


def _non_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("role") != "system"]


# -- scenarios ----------------------------------------------------------------------------------------------


def build_round_robin() -> Scenario:
    """Four agents in round-robin order; ends when max_round is reached."""
    user = plain_agent("user", "user: please continue")
    agents = [user, llm_agent("planner"), llm_agent("solver"), llm_agent("critic")]
    groupchat = GroupChat(agents=agents, messages=[], max_round=9, speaker_selection_method="round_robin")
    return Scenario(
        name="round_robin",
        agents=agents,
        groupchat=groupchat,
        initiator=user,
        first_message="Compute 11 * 10 step by step.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="Maximum rounds (9)",
    )


def _message_count_selector(last_speaker: Agent, groupchat: GroupChat) -> Agent | str | None:
    """Deterministic custom selection: a function of the message count and the last speaker.

    Returns an agent directly, or the method name "round_robin" every third message, and None (AG2 ends the
    chat with "No next speaker selected") once seven messages are in the chat.
    """
    n = len(groupchat.messages)
    if n >= 7:
        return None
    if n % 3 == 0:
        return "round_robin"
    candidates = [a for a in groupchat.agents if a is not last_speaker and a.name != "user"]
    return candidates[(n * 2) % len(candidates)]


def build_custom_speaker() -> Scenario:
    """A plain speaker-selection function (by message count); ends because it returns None."""
    user = plain_agent("user", "user: go on")
    agents = [user, llm_agent("analyst"), llm_agent("engineer"), llm_agent("reviewer")]
    groupchat = GroupChat(
        agents=agents, messages=[], max_round=12, speaker_selection_method=_message_count_selector
    )
    return Scenario(
        name="custom_speaker",
        agents=agents,
        groupchat=groupchat,
        initiator=user,
        first_message="Design a cache for a slow service.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="No next speaker selected",
    )


def build_allowed_transitions() -> Scenario:
    """An allowed-transitions graph with round-robin selection among the allowed next speakers.

    Order [user, coder, reviewer, tester]; graph user->coder, coder->{tester, user}, tester->reviewer,
    reviewer->{coder, user}. Round robin then picks the next allowed agent in list order, which gives the
    cycle user, coder, tester, reviewer, user, ... (plain round robin would go coder -> reviewer).
    """
    user = plain_agent("user", "user: next step please")
    coder, reviewer, tester = llm_agent("coder"), llm_agent("reviewer"), llm_agent("tester")
    agents = [user, coder, reviewer, tester]
    graph = {user: [coder], coder: [tester, user], tester: [reviewer], reviewer: [coder, user]}
    groupchat = GroupChat(
        agents=agents,
        messages=[],
        max_round=10,
        speaker_selection_method="round_robin",
        allowed_or_disallowed_speaker_transitions=graph,
        speaker_transitions_type="allowed",
    )
    return Scenario(
        name="allowed_transitions",
        agents=agents,
        groupchat=groupchat,
        initiator=user,
        first_message="Write and test a function that reverses a list.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="Maximum rounds (10)",
    )


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def _tool_assistant_policy(agent_name: str, messages: list[dict[str, Any]]) -> str | dict[str, Any]:
    """Emits tool calls when the last message is not a tool result; otherwise reports the results."""
    seen = _non_system(messages)
    digest = history_digest(messages)
    last = seen[-1] if seen else {}
    if last.get("role") == "tool" or last.get("tool_responses"):
        results = [m.get("content") for m in seen if m.get("role") == "tool"]
        return f"{agent_name}: tool results so far {results} (saw {len(seen)}, digest {digest})"
    calls = [
        {
            "id": f"call_{digest}_{index}",
            "type": "function",
            "function": {"name": "multiply", "arguments": json.dumps({"a": len(seen) + index, "b": 10})},
        }
        for index in range(1 + len(seen) % 2)  # one or two parallel calls
    ]
    return {"content": None, "tool_calls": calls}


def _tool_selector(last_speaker: Agent, groupchat: GroupChat) -> Agent | str:
    """Tool calls go through AG2's own routing ("round_robin" + func_call_filter picks the executor)."""
    last = groupchat.messages[-1] if groupchat.messages else {}
    if last.get("tool_calls"):
        return "round_robin"
    by_name = {a.name: a for a in groupchat.agents}
    return by_name["user"] if last_speaker.name == "assistant" else by_name["assistant"]


def build_tool_calls() -> Scenario:
    """An assistant emits tool calls, an executor without LLM runs them, the assistant reads the results."""
    user = plain_agent("user", "user: now multiply something else")
    assistant = llm_agent("assistant", _tool_assistant_policy, ToolCallingModelClient)
    executor = plain_agent("executor", "executor: nothing to execute")
    register_function(multiply, caller=assistant, executor=executor, description="Multiply two integers.")
    # Registering a tool rebuilds the assistant's LLM client: register the custom model client again.
    assistant.register_model_client(ToolCallingModelClient, policy=_tool_assistant_policy)
    agents = [user, assistant, executor]
    groupchat = GroupChat(agents=agents, messages=[], max_round=8, speaker_selection_method=_tool_selector)
    return Scenario(
        name="tool_calls",
        agents=agents,
        groupchat=groupchat,
        initiator=user,
        first_message="What is 11 times 10? Use the tool.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="Maximum rounds (8)",
    )


def _verifier_policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
    seen = _non_system(messages)
    if len(seen) >= 5:
        return f"{SOLUTION_TEXT} (checked {len(seen)} messages, digest {history_digest(messages)})"
    return digest_policy(agent_name, messages)


def build_termination_message() -> Scenario:
    """The verifier says SOLUTION_FOUND after a few rounds; the manager's termination condition ends it."""
    user = plain_agent("user", "user: keep checking")
    agents = [user, llm_agent("solver"), llm_agent("verifier", _verifier_policy)]
    groupchat = GroupChat(agents=agents, messages=[], max_round=30, speaker_selection_method="round_robin")
    return Scenario(
        name="termination_message",
        agents=agents,
        groupchat=groupchat,
        initiator=user,
        first_message="Find 11 * 10 and have it verified.",
        manager_kwargs=_manager_kwargs(is_termination_msg=terminate_on(SOLUTION_MARKER)),
        expected_termination="Termination message condition",
    )


def build_max_round() -> Scenario:
    """Two agents talking in turns until max_round (the initiator is one of them)."""
    alice, bob = llm_agent("alice"), llm_agent("bob")
    agents = [alice, bob]
    groupchat = GroupChat(agents=agents, messages=[], max_round=5, speaker_selection_method="round_robin")
    return Scenario(
        name="max_round",
        agents=agents,
        groupchat=groupchat,
        initiator=alice,
        first_message="Let us count the primes below 30.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="Maximum rounds (5)",
    )


def build_single_round() -> Scenario:
    """max_round=1: only the initiator's message is appended and broadcast."""
    alice, bob, carol = llm_agent("alice"), llm_agent("bob"), llm_agent("carol")
    agents = [alice, bob, carol]
    groupchat = GroupChat(agents=agents, messages=[], max_round=1, speaker_selection_method="round_robin")
    return Scenario(
        name="single_round",
        agents=agents,
        groupchat=groupchat,
        initiator=alice,
        first_message="Only this message.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="Maximum rounds (1)",
    )


def build_send_introductions() -> Scenario:
    """Round robin with ``send_introductions=True`` (the intro goes to every history, not to the chat)."""
    user = plain_agent("user", "user: thanks, continue", description="The human user.")
    agents = [
        user,
        llm_agent("historian", description="Knows dates."),
        llm_agent("geographer", description="Knows places."),
    ]
    groupchat = GroupChat(
        agents=agents,
        messages=[],
        max_round=7,
        speaker_selection_method="round_robin",
        send_introductions=True,
    )
    return Scenario(
        name="send_introductions",
        agents=agents,
        groupchat=groupchat,
        initiator=user,
        first_message="Where and when was the metre defined?",
        manager_kwargs=_manager_kwargs(),
        expected_termination="Maximum rounds (7)",
    )


def build_no_llm_agent() -> Scenario:
    """A member without LLM answering with its ``default_auto_reply``, between two LLM agents."""
    agents = [
        llm_agent("writer"),
        plain_agent("clerk", "clerk: noted, filed under #42"),
        llm_agent("editor"),
    ]
    groupchat = GroupChat(agents=agents, messages=[], max_round=8, speaker_selection_method="round_robin")
    return Scenario(
        name="no_llm_agent",
        agents=agents,
        groupchat=groupchat,
        initiator=agents[0],
        first_message="Draft a memo about the new filing rules.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="Maximum rounds (8)",
    )


def build_external_initiator() -> Scenario:
    """The initiator is not a member of the group: it only sends the first message."""
    outsider = plain_agent("outsider", "outsider: (never asked)")
    agents = [llm_agent("red"), llm_agent("green"), llm_agent("blue")]
    groupchat = GroupChat(agents=agents, messages=[], max_round=6, speaker_selection_method="round_robin")
    return Scenario(
        name="external_initiator",
        agents=agents,
        groupchat=groupchat,
        initiator=outsider,
        first_message="Name three colours of the rainbow.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="Maximum rounds (6)",
    )


def _final_writer_policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
    seen = _non_system(messages)
    prefix = "FINAL " if len(seen) >= 4 else ""
    return prefix + digest_policy(agent_name, messages)


def build_agent_terminates() -> Scenario:
    """An agent's own ``is_termination_msg`` makes it return no reply: AG2 ends with "No reply generated"."""
    user = plain_agent("user", "user: refine it")
    writer = llm_agent("writer", _final_writer_policy)
    editor = llm_agent("editor", is_termination_msg=terminate_on("FINAL"))
    agents = [user, writer, editor]
    groupchat = GroupChat(agents=agents, messages=[], max_round=20, speaker_selection_method="round_robin")
    return Scenario(
        name="agent_terminates",
        agents=agents,
        groupchat=groupchat,
        initiator=user,
        first_message="Write a haiku about checkpoints.",
        manager_kwargs=_manager_kwargs(),
        expected_termination="No reply generated",
    )


def all_scenarios() -> dict[str, Callable[[], Scenario]]:
    """Every scenario builder, keyed by scenario name."""
    return {
        "round_robin": build_round_robin,
        "custom_speaker": build_custom_speaker,
        "allowed_transitions": build_allowed_transitions,
        "tool_calls": build_tool_calls,
        "termination_message": build_termination_message,
        "max_round": build_max_round,
        "single_round": build_single_round,
        "send_introductions": build_send_introductions,
        "no_llm_agent": build_no_llm_agent,
        "external_initiator": build_external_initiator,
        "agent_terminates": build_agent_terminates,
    }


# -- observing a run (independently of checkpoint_system) ----------------------------------------------------


def _by_name(mapping: Any) -> dict[str, Any]:
    return {getattr(peer, "name", str(peer)): value for peer, value in mapping.items()}


def participant_state(agent: ConversableAgent) -> dict[str, Any]:
    """A deep copy of what an agent holds of the conversation: per-peer histories and reply counters."""
    return {
        "oai_messages": {
            name: copy.deepcopy(list(history)) for name, history in _by_name(agent._oai_messages).items()
        },
        "consecutive_auto_reply_counter": dict(_by_name(agent._consecutive_auto_reply_counter)),
        "max_consecutive_auto_reply_dict": dict(_by_name(agent._max_consecutive_auto_reply_dict)),
        "reply_at_receive": dict(_by_name(agent.reply_at_receive)),
    }


def chat_state(scenario: Scenario, manager: GroupChatManager) -> dict[str, dict[str, Any]]:
    """``participant_state`` of every agent of the scenario and of the manager, keyed by name."""
    return {agent.name: participant_state(agent) for agent in [*scenario.all_agents, manager]}


class StateRecorder:
    """Records the chat state at every consistent point of a run through AG2's own reply-function hooks.

    * ``at_start``: when the manager starts its reply (``run_chat``), before any group chat message exists;
    * ``at_messages[n]``: when the next speaker starts generating while the chat holds ``n`` messages, i.e.
      after message ``n`` was appended and broadcast (speaker selection in these scenarios changes no state);
    * after the run, ``finish()`` stores the final state, which is also the state of the last message
      (AG2's async loop does not broadcast a termination message, so that state differs from sync).
    """

    def __init__(self, scenario: Scenario, manager: GroupChatManager) -> None:
        self.scenario = scenario
        self.manager = manager
        self.at_start: dict[str, dict[str, Any]] | None = None
        self.at_messages: dict[int, dict[str, dict[str, Any]]] = {}
        self.final: dict[str, dict[str, Any]] | None = None
        for agent in scenario.agents:
            agent.register_reply([Agent, None], self._before_agent_reply, position=0)
        manager.register_reply([Agent, None], self._before_manager_reply, position=0)

    def _state(self) -> dict[str, dict[str, Any]]:
        return chat_state(self.scenario, self.manager)

    def _before_manager_reply(
        self, recipient: Any, messages: Any = None, sender: Any = None, config: Any = None
    ) -> tuple[bool, None]:
        if self.at_start is None:
            self.at_start = self._state()
        return False, None

    def _before_agent_reply(
        self, recipient: Any, messages: Any = None, sender: Any = None, config: Any = None
    ) -> tuple[bool, None]:
        if sender is self.manager:
            self.at_messages.setdefault(len(self.scenario.groupchat.messages), self._state())
        return False, None

    def finish(self) -> None:
        self.final = self._state()
        self.at_messages.setdefault(len(self.scenario.groupchat.messages), self.final)


class EventRecorder:
    """An AG2 IOStream that records the events AG2 emits (uuids dropped) instead of printing them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.printed: list[str] = []

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        self.printed.append(sep.join(str(o) for o in objects) + end)

    def send(self, message: Any) -> None:
        self.events.append((type(message).__name__, _without_uuids(message.model_dump(mode="json"))))

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        raise AssertionError(f"unexpected input request: {prompt}")

    @property
    def termination_reasons(self) -> list[str]:
        return [
            content["termination_reason"]
            for _, event in self.events
            if isinstance(content := event.get("content"), dict) and "termination_reason" in content
        ]

    @contextmanager
    def installed(self) -> Iterator[EventRecorder]:
        with IOStream.set_default(self):
            yield self


def _without_uuids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [_without_uuids(v) for v in value]
    return value


SCENARIO_NAMES = list(all_scenarios())
