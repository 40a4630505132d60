"""Upgrades of older checkpoint documents to the current logical model.

Version 1 is the seed implementation's format: no format marker, every message and every agent's full
history inline (``_oai_messages`` or ``oai_messages``), agent states without a class name, termination
patterns as bare strings, and LLM configs as they were given (possibly with API keys, which are redacted
on the way in so that re-saving a migrated checkpoint never writes a secret). A standalone export
(``"inline"`` layout) of any version is the logical checkpoint as it is and needs no upgrade. Log-layout
checkpoints are not migrated: the library reads one log format, and the earlier ones, unreleased drafts,
are refused (``records.check_format_version``).

The database backends each have one schema (``database.check_schema_version`` refuses any other).
"""

from __future__ import annotations

from typing import Any

from ..model import FORMAT_NAME

_LAYOUT_KEYS = ("format", "layout", "log")
_SEED_AGENT_CLASS = "autogen.agentchat.conversable_agent.ConversableAgent"


def _seed_termination(value: Any) -> dict[str, Any]:
    """A ``describe_termination``-style record for a seed termination pattern."""
    if isinstance(value, dict) and "kind" in value:
        return value
    if value is None or value == "":
        return {"kind": "none"}
    if isinstance(value, str):
        # The seed checked ``pattern in content``; a plain "contains" spec rebuilds exactly that.
        return {"kind": "contains", "text": value, "case_sensitive": True}
    return {"kind": "custom", "qualname": "<seed termination pattern>", "legacy": value}


def _seed_llm_config(value: Any) -> Any:
    if not isinstance(value, (dict, list)):
        return value
    from ..redaction import redact_llm_config

    try:
        return redact_llm_config(value)
    except (TypeError, ValueError):
        return value  # left for schema validation to report


def _seed_agent(state: Any, name: Any = None) -> Any:
    if not isinstance(state, dict):
        return state  # left for schema validation to report
    state = dict(state)
    if name is not None:
        state.setdefault("name", name)
    state.setdefault("agent_class", _SEED_AGENT_CLASS)
    if "termination_pattern" in state:
        state["termination_pattern"] = _seed_termination(state["termination_pattern"])
    if "llm_config" in state:
        state["llm_config"] = _seed_llm_config(state["llm_config"])
    return state


def migrate_inline(record: dict[str, Any]) -> dict[str, Any]:
    """A dict that validates as ``CheckpointData``, from a seed-era document or a standalone export."""
    data = {key: value for key, value in record.items() if key not in _LAYOUT_KEYS}
    if record.get("format") == FORMAT_NAME:
        return data
    data["format_version"] = 1
    states = data.get("agent_states") or {}
    if isinstance(states, list):
        states = {state["name"]: state for state in states}
    data["agent_states"] = {name: _seed_agent(state, name) for name, state in states.items()}
    if isinstance(data.get("manager_state"), dict):
        data["manager_state"] = _seed_agent(data["manager_state"])
    data.setdefault("timestamp", "")
    data.setdefault("step_number", 0)
    data.setdefault("context", "unknown")
    return data
