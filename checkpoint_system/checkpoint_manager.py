"""``CheckpointManager``: the session-level API (take, save, list, load checkpoints; session documents).

It turns AG2 objects into ``CheckpointData`` through ``snapshot`` and hands the data to a store; it never
touches AG2 internals itself and never writes a file itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .checkpoint_ids import new_checkpoint_id
from .errors import CheckpointError, CheckpointSaveError
from .model import FORMAT_VERSION, CheckpointData
from .snapshot import conversation_snapshot, utc_timestamp
from .storage import Durability, SessionStore, is_store_url, load_reference, open_store
from .storage.files import FileSessionStore
from .storage.protocol import CheckpointStore
from .versions import ag2_version, library_version

if TYPE_CHECKING:
    from autogen import ConversableAgent, GroupChat, GroupChatManager

logger = logging.getLogger(__name__)

SaveErrorPolicy = Literal["raise", "warn"]

SESSION_METADATA = "session_metadata.json"
#: While a chat runs, session_metadata.json is rewritten at most this often (and at start, end, errors).
METADATA_INTERVAL_S = 1.0
CHAT_HISTORY = "chat_history.json"
PROBLEM_STATEMENT = "problem_statement.txt"


def default_session_id() -> str:
    """``session_YYYYMMDD_HHMMSS_ffffff``: unique per microsecond, sortable by start time."""
    return datetime.now().strftime("session_%Y%m%d_%H%M%S_%f")


def default_session_dir(root: str | Path = "logs") -> Path:
    """``<root>/session_YYYYMMDD_HHMMSS_ffffff``."""
    return Path(root) / default_session_id()


class CheckpointManager:
    """Checkpoints of one session directory.

    Args:
        session_dir: the session directory (created on first write), or a store URL
            (``sqlite:///checkpoints.db``, ``postgresql://...``). Defaults to a new
            ``logs/session_<timestamp>`` directory.
        store: a ``CheckpointStore`` (or its URL) holding many sessions; with it, ``session_id`` names the
            session (default: a new ``session_<timestamp>``).
        durability: ``"crash"`` (default) survives a killed process; ``"fsync"`` also survives power loss,
            at the cost of a device flush per checkpoint.
        on_save_error: ``"raise"`` (default) stops the chat with ``CheckpointSaveError`` when a checkpoint
            or a session document cannot be written; ``"warn"`` emits a ``RuntimeWarning``, records a failed
            checkpoint under ``failed_saves`` in ``session_metadata.json`` and lets the chat go on (the next
            successful checkpoint is complete again). Either way a session document that could not be
            written (a full disk) is written again after the next successful save, by ``flush()`` and by
            ``close()``, so the metadata ends up telling the truth once there is room.
        parent_checkpoint_id: lineage of the first checkpoint (set for continuations).
        problem_context: a description of the task, saved in metadata and ``problem_statement.txt``.
        metadata: extra fields for ``session_metadata.json``.
        checkpoint_metadata: extra fields for every checkpoint's ``metadata`` (e.g. lineage of a
            continuation, interventions applied).
        start_from: for a continuation session nested in its parent's (a directory inside it, or the
            store session ``<parent>/continuation_...``): the parent checkpoint's id. The session then
            stores only what is new and refers to that checkpoint (where the backend can).
    """

    def __init__(
        self,
        session_dir: str | Path | None = None,
        *,
        durability: Durability = "crash",
        on_save_error: SaveErrorPolicy = "raise",
        parent_checkpoint_id: str | None = None,
        problem_context: str = "",
        metadata: dict[str, Any] | None = None,
        checkpoint_metadata: dict[str, Any] | None = None,
        store: CheckpointStore | str | None = None,
        session_id: str | None = None,
        start_from: str | None = None,
    ) -> None:
        if on_save_error not in ("raise", "warn"):
            raise ValueError(f"on_save_error must be 'raise' or 'warn', not {on_save_error!r}")
        if store is None and isinstance(session_dir, str) and is_store_url(session_dir):
            store, session_dir = session_dir, None
        self.session_dir: Path | None
        self.backing_store: CheckpointStore | None
        self.store: SessionStore
        if store is not None:
            self.backing_store = open_store(store) if isinstance(store, str) else store
            self.store = self.backing_store.open_session(
                session_id or default_session_id(), durability=durability
            )
            self.session_dir = None
        else:
            self.backing_store = None
            self.session_dir = Path(session_dir) if session_dir is not None else default_session_dir()
            self.store = FileSessionStore(self.session_dir, durability=durability)
        #: whether the session refers to its parent's checkpoint instead of copying its state
        self.forked = self.store.start_from(start_from) if start_from is not None else False
        self.on_save_error: SaveErrorPolicy = on_save_error
        self.problem_context = problem_context
        self.last_checkpoint_id: str | None = parent_checkpoint_id
        self.failed_saves: list[dict[str, Any]] = []
        #: session documents whose last write failed, by name (the metadata is written as it is by then):
        #: written again after the next successful save, by ``flush()`` and by ``close()``
        self._unwritten: dict[str, Any] = {}
        #: ``save_checkpoints_metadata`` could not list the checkpoints: ``close()`` tries again
        self._listing_due = False
        self.checkpoint_metadata = dict(checkpoint_metadata or {})
        self._next_step: int | None = None
        self._metadata_written_at = float("-inf")
        self._last_saved_at = float("-inf")
        self._checkpoint_count = 0
        self._session_metadata: dict[str, Any] = {
            "session_id": self.session_id,
            "format_version": FORMAT_VERSION,
            "library_version": library_version(),
            "ag2_version": ag2_version(),
            "created_at": utc_timestamp(),
            "status": "created",
            "durability": durability,
            "on_save_error": on_save_error,
            "problem_context": problem_context,
            "parent_checkpoint_id": parent_checkpoint_id,
            **(metadata or {}),
        }

    @property
    def session_id(self) -> str:
        """The session's id (for a directory: its name)."""
        return self.store.session_id

    @property
    def location(self) -> str:
        """Where the session lives: its directory, or ``<store url>#<session id>``."""
        if self.session_dir is not None:
            return str(self.session_dir)
        assert self.backing_store is not None
        return f"{self.backing_store.url}#{self.session_id}"

    # -- taking and saving ----------------------------------------------------------------------------
    def next_step_number(self) -> int:
        """The step number the next checkpoint will get (continues an existing session)."""
        if self._next_step is None:
            self._next_step = self.store.next_step_number()
        return self._next_step

    def create_conversation_checkpoint(
        self,
        agents: Sequence[ConversableAgent],
        manager: GroupChatManager | None,
        messages: Sequence[dict[str, Any]],
        step_number: int,
        context: str,
        *,
        groupchat: GroupChat | None = None,
        round_index: int | None = None,
        run_start_index: int = 0,
        metadata: dict[str, Any] | None = None,
        copy_histories: bool = True,
    ) -> CheckpointData:
        """Snapshot the given agents, manager and messages (nothing is written)."""
        timestamp = utc_timestamp()
        checkpoint_id = new_checkpoint_id(step_number, context, timestamp)
        return conversation_snapshot(
            agents=agents,
            manager=manager,
            messages=messages,
            checkpoint_id=checkpoint_id,
            step_number=step_number,
            context=context,
            timestamp=timestamp,
            groupchat=groupchat,
            round_index=round_index,
            run_start_index=run_start_index,
            parent_checkpoint_id=self.last_checkpoint_id,
            session_id=self.session_id,
            copy_histories=copy_histories,
            metadata={
                "session_dir": self.location,
                "problem_context": self.problem_context,
                **self.checkpoint_metadata,
                **(metadata or {}),
            },
        )

    def save_checkpoint(self, checkpoint_data: CheckpointData) -> bool:
        """Save a checkpoint. True on success; on failure raises or warns per ``on_save_error``."""
        return self._save(checkpoint_data, trusted_prefix=False) is not None

    def take_checkpoint(
        self,
        *,
        agents: Sequence[ConversableAgent],
        manager: GroupChatManager | None,
        messages: Sequence[dict[str, Any]],
        context: str,
        groupchat: GroupChat | None = None,
        round_index: int | None = None,
        run_start_index: int = 0,
        metadata: dict[str, Any] | None = None,
        live: bool = False,
    ) -> str | None:
        """Snapshot and save in one step; returns the checkpoint id (None if a save failed under "warn").

        ``live=True`` tells the store that histories only grew since the previous checkpoint of this
        manager (true while AG2 runs the chat), which keeps the cost per checkpoint flat.
        """
        try:
            step_number = self.next_step_number()
        except CheckpointError as exc:  # the session could not be read: a failed save like any other
            return self._save_failed(None, context, exc)
        data = self.create_conversation_checkpoint(
            agents,
            manager,
            messages,
            step_number,
            context,
            groupchat=groupchat,
            round_index=round_index,
            run_start_index=run_start_index,
            metadata=metadata,
            copy_histories=not live,
        )
        return self._save(data, trusted_prefix=live)

    def _save(self, data: CheckpointData, *, trusted_prefix: bool) -> str | None:
        try:
            checkpoint_id = self.store.save(data, trusted_prefix=trusted_prefix)
        except CheckpointError as exc:
            return self._save_failed(data.step_number, data.context, exc)
        self.last_checkpoint_id = checkpoint_id
        self._next_step = max(self.next_step_number(), data.step_number) + 1
        self._checkpoint_count += 1
        self._session_metadata.update(
            latest_checkpoint=checkpoint_id, checkpoint_count=self._checkpoint_count
        )
        self._last_saved_at = time.monotonic()
        if data.context == "conversation_start":
            self._session_metadata["status"] = "running"
        if self._unwritten:  # there is room again: what a full disk refused before is written first
            self._write_unwritten()
        # Rewriting the metadata file costs a file creation: while a chat runs keep it current to within a
        # second (the checkpoints themselves are the record; start, end and errors are written at once).
        if (
            data.context != "message_appended"
            or time.monotonic() - self._metadata_written_at >= METADATA_INTERVAL_S
        ):
            self.update_session_metadata()
        return checkpoint_id

    def _save_failed(self, step_number: int | None, context: str, exc: CheckpointError) -> str | None:
        failure = {"step_number": step_number, "context": context, "error": str(exc)}
        self.failed_saves.append(failure)
        if self.on_save_error == "raise":
            if isinstance(exc, CheckpointSaveError):  # SessionLockedError too: raised as itself
                raise exc
            raise CheckpointSaveError(exc.reason, path=exc.path) from exc
        warnings.warn(f"checkpoint not saved: {exc}", RuntimeWarning, stacklevel=3)
        logger.warning("checkpoint %s (%s) not saved: %s", step_number, context, exc)
        self._session_metadata.update(failed_saves=self.failed_saves, updated_at=utc_timestamp())
        self._write_document(SESSION_METADATA, self._session_metadata, quiet=True)
        return None

    # -- session documents ----------------------------------------------------------------------------
    def _write_document(self, name: str, value: Any, *, quiet: bool = False) -> None:
        """Write a session document; a failure is kept for a later try, then raised or warned about per
        ``on_save_error`` (``quiet``: neither, the caller reports the failure it is handling)."""
        try:
            self._store_document(name, value)
        except CheckpointError as exc:
            self._unwritten[name] = value
            if quiet:
                return
            if self.on_save_error == "raise":
                if isinstance(exc, CheckpointSaveError):
                    raise
                raise CheckpointSaveError(exc.reason, path=exc.path) from exc
            warnings.warn(
                f"session document {name} not written (tried again at the next save, flush or close): {exc}",
                RuntimeWarning,
                stacklevel=3,
            )
            logger.warning("session document %s not written: %s", name, exc)

    def _store_document(self, name: str, value: Any) -> None:
        """Write a session document to the store and note that it is written (``CheckpointError`` if not)."""
        self.store.write_document(name, value)
        self._unwritten.pop(name, None)
        if name == SESSION_METADATA:
            self._metadata_written_at = time.monotonic()

    def _write_unwritten(self) -> CheckpointError | None:
        """Write the documents whose last write failed again; returns the first failure that remains."""
        for name in list(self._unwritten):
            if name == SESSION_METADATA:  # as it is now, not as it was when its write failed
                self._session_metadata["updated_at"] = utc_timestamp()
                value = self._session_metadata
            else:
                value = self._unwritten[name]
            try:
                self._store_document(name, value)
            except CheckpointError as exc:
                return exc
        return None

    def update_session_metadata(self, **fields: Any) -> None:
        """Merge ``fields`` into ``session_metadata.json`` and rewrite it atomically.

        A failed write raises ``CheckpointSaveError`` or warns, per ``on_save_error``; either way the file is
        written again, as the metadata is by then, after the next successful save, by ``flush()`` and by
        ``close()``.
        """
        self._session_metadata.update(fields, updated_at=utc_timestamp())
        self._write_document(SESSION_METADATA, self._session_metadata)

    def save_checkpoints_metadata(self) -> Path | None:
        """Write ``session_metadata.json`` with the full, ordered list of this session's checkpoints.

        Returns the file's path for a session directory (None for a database store).
        """
        self._listing_due = True  # until the list is in the metadata (close() tries again)
        checkpoints = self.list_checkpoints()
        self._listing_due = False
        self.update_session_metadata(**_listing(checkpoints))
        return self.session_dir / SESSION_METADATA if self.session_dir is not None else None

    def save_chat_history(self, messages: Sequence[dict[str, Any]]) -> None:
        """Write the transcript to ``chat_history.json`` (failures as in ``update_session_metadata``)."""
        self._write_document(CHAT_HISTORY, list(messages))

    def save_problem_statement(self, text: str) -> None:
        """Write ``problem_statement.txt`` (failures as in ``update_session_metadata``)."""
        self._write_document(PROBLEM_STATEMENT, text)

    def write_document(self, name: str, value: Any) -> None:
        """Write another session document (e.g. ``continuation_metadata.json``; failures as in
        ``update_session_metadata``)."""
        self._write_document(name, value)

    def read_document(self, name: str) -> Any:
        """A session document, or None."""
        return self.store.read_document(name)

    @property
    def session_metadata(self) -> dict[str, Any]:
        """The session metadata as last written."""
        return dict(self._session_metadata)

    # -- reading --------------------------------------------------------------------------------------
    def list_checkpoints(self) -> list[str]:
        """Checkpoint ids of this session, in step order."""
        return self.store.list_checkpoints()

    def latest_checkpoint_id(self) -> str | None:
        """The id of the newest checkpoint on disk, or None."""
        ids = self.list_checkpoints()
        return ids[-1] if ids else None

    def load_checkpoint(self, checkpoint_id: str) -> CheckpointData:
        """Load a checkpoint of this session by id (or by path)."""
        return self.store.load(str(checkpoint_id))

    def checkpoint_path(self, checkpoint_id: str) -> Path:
        """The file that holds a checkpoint of this session (file sessions only; see ``locate``)."""
        if self.session_dir is None:
            raise TypeError("checkpoint_path is for file sessions; use locate() for a store reference")
        return Path(self.store.locate(checkpoint_id))

    def locate(self, checkpoint_id: str) -> str:
        """A reference to a checkpoint that ``load_checkpoint_file`` resolves from anywhere."""
        return self.store.locate(checkpoint_id)

    @staticmethod
    def load_checkpoint_file(path: str | Path) -> CheckpointData:
        """Load a checkpoint from its file path (or a store reference ``<url>#<session>/<id>``)."""
        return load_reference(path).load()

    def flush(self) -> None:
        """Return once every checkpoint saved so far can be read by other processes.

        The file store creates record files in one batch (the commit itself is synchronous, and readers
        load a committed checkpoint from its commit line meanwhile); this creates them.
        ``CheckpointSaveError`` if one could not be created (its checkpoint stays committed and the file
        is rebuilt when the session is next opened for writing). Session documents whose write failed are
        written again too.
        """
        try:
            self.store.flush()
        finally:
            if self._unwritten:
                self._write_unwritten()

    def close(self) -> None:
        """Write what is pending, then release the session's writer lock and files.

        Pending: the metadata of the last saves, the checkpoint list a run's end could not write, and every
        session document a failed write left behind (a full disk that has room again). What still cannot
        be written is reported with a ``RuntimeWarning``.
        """
        if self._listing_due:
            with contextlib.suppress(CheckpointError):  # waits for (and retries) the record files first
                self._session_metadata.update(_listing(self.list_checkpoints()))
                self._listing_due = False
                self._unwritten[SESSION_METADATA] = None
        if self._checkpoint_count and self._metadata_written_at < self._last_saved_at:
            self._unwritten[SESSION_METADATA] = None
        failure = self._write_unwritten() if self._unwritten else None
        if failure is not None:
            warnings.warn(
                f"session documents not written: {', '.join(sorted(self._unwritten))}: {failure}",
                RuntimeWarning,
                stacklevel=2,
            )
        self.store.close()


def _listing(checkpoints: list[str]) -> dict[str, Any]:
    """The metadata fields that describe a session's checkpoints."""
    return {
        "checkpoints": checkpoints,
        "checkpoint_count": len(checkpoints),
        "latest_checkpoint": checkpoints[-1] if checkpoints else None,
    }
