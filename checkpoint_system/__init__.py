"""checkpoint_system: checkpoint, restore, fork and intervene in AG2 Classic group chats."""

from .checkpoint_manager import CheckpointManager, default_session_dir
from .endpoints import UntrustedEndpointError
from .errors import (
    CheckpointAccessError,
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CheckpointWarning,
    CorruptCheckpointError,
    InvalidCheckpointError,
    SessionLockedError,
    TerminationCaptureWarning,
    UnsafePatternError,
    UnsupportedFormatError,
    UnsupportedStoreError,
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
from .rebuild import RestoreReport, RestoreWarning, RosterMismatchError, UnknownModelClientError
from .recording import (
    RecordingDivergedError,
    RecordingModelClient,
    live_client,
    recording_llm_config,
    use_recording,
)
from .restorer import CheckpointRestorer, ContinuationResult, RestoredChat
from .storage import (
    CheckpointStore,
    FileStore,
    SessionStore,
    export_checkpoint,
    load_reference,
    open_store,
)
from .storage.files import FileSessionStore, read_checkpoint_file
from .storage.transfer import copy_session, export_session, import_session
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
    "CheckpointAccessError",
    "CheckpointData",
    "CheckpointError",
    "CheckpointManager",
    "CheckpointNotFoundError",
    "CheckpointRestorer",
    "CheckpointSaveError",
    "CheckpointStore",
    "CheckpointWarning",
    "CheckpointingGroupChatManager",
    "ContinuationResult",
    "CorruptCheckpointError",
    "FileSessionStore",
    "FileStore",
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
    "SessionStore",
    "TerminationCaptureWarning",
    "TerminationCondition",
    "UnknownModelClientError",
    "UnsafePatternError",
    "UnsupportedFormatError",
    "UnsupportedStoreError",
    "UntrustedEndpointError",
    "all_of",
    "any_of",
    "checkpoint_json_schema",
    "copy_session",
    "default_session_dir",
    "export_checkpoint",
    "export_session",
    "import_session",
    "live_client",
    "load_reference",
    "open_store",
    "read_checkpoint_file",
    "recording_llm_config",
    "terminate_endswith",
    "terminate_exact",
    "terminate_on",
    "terminate_regex",
    "use_recording",
]
