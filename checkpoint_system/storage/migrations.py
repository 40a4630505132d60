"""Upgrades of older checkpoint documents to the current logical model.

Version 1 is the seed implementation's format: no format marker, every message and every agent's full
history inline, agent states without a class name, termination patterns as bare strings.
"""

from __future__ import annotations

from typing import Any

_LAYOUT_KEYS = ("format", "layout", "log")


def _seed_termination(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and "kind" in value:
        return value
    if isinstance(value, str) and value:
        return {"kind": "contains", "text": value, "case_sensitive": True, "detected_from": "seed_format"}
    return {"kind": "custom", "legacy": value}


def _seed_agent(state: dict[str, Any]) -> dict[str, Any]:
    state = dict(state)
    state.setdefault("agent_class", "autogen.agentchat.conversable_agent.ConversableAgent")
    if "termination_pattern" in state:
        state["termination_pattern"] = _seed_termination(state["termination_pattern"])
    return state


def migrate_inline(record: dict[str, Any]) -> dict[str, Any]:
    """A dict that validates as ``CheckpointData``, from an inline document of any supported version."""
    data = {key: value for key, value in record.items() if key not in _LAYOUT_KEYS}
    if "format" in record:
        return data
    data["format_version"] = 1
    states = data.get("agent_states") or {}
    if isinstance(states, list):
        states = {state["name"]: state for state in states}
    data["agent_states"] = {name: _seed_agent(state) for name, state in states.items()}
    if isinstance(data.get("manager_state"), dict):
        data["manager_state"] = _seed_agent(data["manager_state"])
    data.setdefault("timestamp", "")
    data.setdefault("step_number", 0)
    data.setdefault("context", "unknown")
    return data
