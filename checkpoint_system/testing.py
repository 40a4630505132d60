"""A deterministic model client for offline runs, tests and demos (no network, no API key).

Register it through AG2's own custom-client mechanism::

    agent = ConversableAgent("solver", llm_config=deterministic_llm_config())
    agent.register_model_client(DeterministicModelClient, policy=my_policy)

``policy(agent_name, messages)`` returns the reply (a string, or a dict with ``content`` and/or
``tool_calls``). The default policy's reply is a digest of every message the agent was sent, so a restored
agent whose history differs by one character answers differently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson

Policy = Callable[[str, list[dict[str, Any]]], "str | dict[str, Any]"]

CLIENT_CLASS_NAME = "DeterministicModelClient"


def deterministic_llm_config(agent_label: str = "deterministic", **extra: Any) -> dict[str, Any]:
    """An ``llm_config`` whose single entry routes to ``DeterministicModelClient`` (caching off)."""
    entry = {"model": agent_label, "model_client_cls": CLIENT_CLASS_NAME, **extra}
    return {"config_list": [entry], "cache_seed": None}


def history_digest(messages: list[dict[str, Any]]) -> str:
    """A short, stable digest of a message list (roles, names, contents, tool calls)."""
    canonical = [
        {
            k: m.get(k)
            for k in ("role", "name", "content", "tool_calls", "tool_call_id")
            if m.get(k) is not None
        }
        for m in messages
    ]
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:12]


def digest_policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
    """Default policy: reply with the agent's name, how many messages it saw, and their digest."""
    return f"{agent_name} saw {len(messages)} messages, digest {history_digest(messages)}"


class DeterministicModelClient:
    """An AG2 ``ModelClient`` whose answers are a pure function of the request."""

    def __init__(self, config: dict[str, Any], policy: Policy | None = None, **_: Any) -> None:
        self.model = str(config.get("model", "deterministic"))
        self.policy: Policy = policy or digest_policy
        self.calls = 0

    def create(self, params: dict[str, Any]) -> Any:
        messages = list(params.get("messages", []))
        agent_name = params.get("agent_name") or self.model
        reply = self.policy(str(agent_name), messages)
        self.calls += 1
        message = (
            {"content": reply, "role": "assistant"}
            if isinstance(reply, str)
            else {"role": "assistant", **reply}
        )
        choice = SimpleNamespace(message=SimpleNamespace(**{"content": None, "tool_calls": None, **message}))
        return SimpleNamespace(
            choices=[choice],
            model=self.model,
            cost=0.0,
            usage=None,
            id=f"det-{self.calls}",
            message_retrieval_function=None,
        )

    def message_retrieval(self, response: Any) -> list[Any]:
        retrieved = []
        for choice in response.choices:
            message = choice.message
            if message.tool_calls:
                retrieved.append(
                    {"content": message.content, "tool_calls": message.tool_calls, "role": "assistant"}
                )
            else:
                retrieved.append(message.content)
        return retrieved

    def cost(self, response: Any) -> float:
        return 0.0

    @staticmethod
    def get_usage(response: Any) -> dict[str, Any]:
        return {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            "cost": 0.0,
            "model": response.model,
        }
