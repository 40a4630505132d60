"""Upgrades of older checkpoint documents to the current logical model.

Version 1 is the seed implementation's format: no format marker, every message and every agent's full
history inline (``_oai_messages`` or ``oai_messages``), agent states without a class name, termination
patterns as bare strings, and LLM configs as they were given (possibly with API keys, which are redacted
on the way in so that re-saving a migrated checkpoint never writes a secret). A standalone export
(``"inline"`` layout) of any version is the logical checkpoint as it is and needs no upgrade. Log-layout
checkpoints are not migrated: the library reads one log format, and the earlier ones, unreleased drafts,
are refused (``records.check_format_version``).

The database backends version their schema the same way: ``SchemaMigration`` steps, numbered from 1, each
applied once in a transaction and recorded in the database's ``cs_schema_version`` table
(``pending_migrations`` says which are due, and refuses a database made by a newer library).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedFormatError
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


# -- database schemas -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaMigration:
    """One step of a database schema: the statements that bring version ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


def pending_migrations(
    current: int, migrations: Sequence[SchemaMigration], *, where: str
) -> list[SchemaMigration]:
    """The migrations to apply to a database at schema version ``current`` (0: no schema yet), in order.

    Raises ``UnsupportedFormatError`` for a database created by a newer library (a schema version this one
    does not know), so an old library never writes into a schema it does not understand.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):  # pragma: no cover - a programming error
        raise ValueError(f"schema migrations must be numbered 1..n, got {versions}")
    latest = versions[-1] if versions else 0
    if current > latest:
        raise UnsupportedFormatError(
            f"database schema version {current} is newer than this library supports ({latest}); upgrade "
            "checkpoint_system to use this store",
            path=where,
        )
    return [m for m in migrations if m.version > current]
