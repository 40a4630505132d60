"""checkpoint_system: checkpoint, restore, fork and intervene in AG2 Classic group chats."""

from .checkpoint_manager import CheckpointManager, default_session_dir
from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CorruptCheckpointError,
    InvalidCheckpointError,
    SessionLockedError,
    TerminationCaptureWarning,
    UnsupportedFormatError,
)
from .groupchat_manager import CheckpointingGroupChatManager
from .intervention import Intervention, InterventionError
from .model import (
    FORMAT_VERSION,
    AgentState,
    CheckpointData,
    GroupChatState,
    ManagerState,
    checkpoint_json_schema,
)
from .rebuild import RestoreReport, RestoreWarning, RosterMismatchError
from .recording import (
    RecordingDivergedError,
    RecordingModelClient,
    live_client,
    recording_llm_config,
    use_recording,
)
from .restorer import CheckpointRestorer, ContinuationResult, RestoredChat
from .storage.files import FileSessionStore, read_checkpoint_file
from .termination import (
    TerminationCondition,
    all_of,
    any_of,
    terminate_endswith,
    terminate_exact,
    terminate_on,
    terminate_regex,
)

__all__ = [
    "FORMAT_VERSION",
    "AgentState",
    "CheckpointData",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointNotFoundError",
    "CheckpointRestorer",
    "CheckpointSaveError",
    "CheckpointingGroupChatManager",
    "ContinuationResult",
    "CorruptCheckpointError",
    "FileSessionStore",
    "GroupChatState",
    "Intervention",
    "InterventionError",
    "InvalidCheckpointError",
    "ManagerState",
    "RecordingDivergedError",
    "RecordingModelClient",
    "RestoreReport",
    "RestoreWarning",
    "RestoredChat",
    "RosterMismatchError",
    "SessionLockedError",
    "TerminationCaptureWarning",
    "TerminationCondition",
    "UnsupportedFormatError",
    "all_of",
    "any_of",
    "checkpoint_json_schema",
    "default_session_dir",
    "live_client",
    "read_checkpoint_file",
    "recording_llm_config",
    "terminate_endswith",
    "terminate_exact",
    "terminate_on",
    "terminate_regex",
    "use_recording",
]
