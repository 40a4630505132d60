"""The checkpoint schema: one pydantic model per concept, validated when read from untrusted storage.

``CheckpointData`` is the *logical* content of a checkpoint: everything needed to rebuild a group chat at
one moment. How it is laid out on disk (compact, shared message log) is the storage backend's business.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Version of the on-disk checkpoint format written by this library. Readers accept every version up to it.
FORMAT_VERSION = 7

#: Marker of a checkpoint file, so a foreign JSON file is recognised as such.
FORMAT_NAME = "checkpoint_system.checkpoint"

LLMConfigRecord = dict[str, Any] | Literal[False] | None

#: In a live snapshot's plain field dict, the agent's (memoised, unchanged-while-equal) configuration
#: fields, so a store can recognise an unchanged configuration by identity.
STATIC_FIELDS_KEY = "__static_fields__"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow", ser_json_inf_nan="constants")


class AgentState(_Model):
    """Everything that defines one agent and its conversation state at a checkpoint."""

    name: str
    agent_class: str = Field(description="Import path of the agent's class, e.g. autogen.ConversableAgent")
    system_message: str | list[Any] | None = None
    description: str | None = None
    llm_config: LLMConfigRecord = Field(default=None, description="Redacted LLM config (no secrets)")
    termination_pattern: dict[str, Any] = Field(default_factory=lambda: {"kind": "none"})
    code_execution_config: dict[str, Any] | Literal[False] = False
    human_input_mode: str = "NEVER"
    max_consecutive_auto_reply: int | None = None
    default_auto_reply: str | dict[str, Any] | None = ""
    tools: list[str] = Field(default_factory=list, description="Names of tools/functions the LLM may call")
    function_map: list[str] = Field(default_factory=list, description="Names of functions the agent executes")
    context_variables: dict[str, Any] | None = None
    oai_messages: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        alias="_oai_messages",
        description="Per-peer message history, keyed by the peer agent's name",
    )
    consecutive_auto_reply_counter: dict[str, int] = Field(default_factory=dict)
    max_consecutive_auto_reply_dict: dict[str, int] = Field(default_factory=dict)
    reply_at_receive: dict[str, bool] = Field(default_factory=dict)


class ManagerState(AgentState):
    """The group chat manager: an agent plus the loop position it holds."""

    step_counter: int = 0
    current_speaker: str | None = Field(default=None, description="Name of the last agent that spoke")
    silent: bool = False


class GroupChatState(_Model):
    """The group chat's settings and its position in the round budget."""

    agent_names: list[str]
    max_round: int
    speaker_selection_method: str | dict[str, Any] = "auto"
    allow_repeat_speaker: bool | list[str] | None = True
    allowed_or_disallowed_speaker_transitions: dict[str, list[str]] | None = None
    speaker_transitions_type: str | None = None
    send_introductions: bool = False
    admin_name: str = "Admin"
    func_call_filter: bool = True
    enable_clear_history: bool = False
    max_retries_for_selecting_speaker: int = 2
    role_for_select_speaker_messages: str = "system"
    round_index: int = Field(
        default=0, description="Messages appended in the current run (AG2's max_round counts these)"
    )
    run_start_index: int = Field(default=0, description="len(messages) when the current run began")


class CheckpointData(_Model):
    """One checkpoint: the group chat's messages and the full state of every agent and the manager."""

    format_version: int = FORMAT_VERSION
    checkpoint_id: str
    timestamp: str
    step_number: int
    context: str
    messages: list[dict[str, Any]] = Field(default_factory=list)
    agent_states: dict[str, AgentState] = Field(default_factory=dict)
    manager_state: ManagerState | None = None
    groupchat_state: GroupChatState | None = None
    parent_checkpoint_id: str | None = None
    session_id: str | None = None
    ag2_version: str | None = None
    library_version: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    integrity: str | None = Field(default=None, description="sha256 of the stored record, checked on load")

    @property
    def round_index(self) -> int:
        """Messages appended in the current run when the checkpoint was taken."""
        return self.groupchat_state.round_index if self.groupchat_state else len(self.messages)


def checkpoint_json_schema() -> dict[str, Any]:
    """JSON Schema of ``CheckpointData`` (the logical checkpoint, as exported standalone)."""
    return CheckpointData.model_json_schema(by_alias=True)
