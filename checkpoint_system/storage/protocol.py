"""The storage interface: what the AG2 hook and the restorer may ask of a backend.

A backend stores ``CheckpointData`` and a few JSON documents per session and knows nothing of AG2. The
file store, SQLite and PostgreSQL implement it, and one conformance suite (``tests/test_conformance.py``)
holds them to the same behaviour.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from ..model import CheckpointData

Durability = Literal["crash", "fsync"]


@runtime_checkable
class SessionStore(Protocol):
    """The checkpoints and documents of one session. One writer per session at a time."""

    @property
    def session_id(self) -> str:
        """The session's id, unique within its store (continuations: ``<parent>/continuation_...``)."""
        ...

    def save(self, data: CheckpointData, *, trusted_prefix: bool = False) -> str:
        """Store one checkpoint and return its id. Never overwrites; raises ``CheckpointSaveError``.

        ``trusted_prefix``: the caller promises histories only grew since its previous save unless their
        last item changed, which lets the backend find what is new in O(1).
        """
        ...

    def load(self, checkpoint_id: str) -> CheckpointData:
        """One checkpoint, validated; ``CheckpointNotFoundError`` or another ``CheckpointError`` if bad."""
        ...

    def list_checkpoints(self) -> list[str]:
        """Checkpoint ids in step order."""
        ...

    def next_step_number(self) -> int:
        """One past the highest stored step (0 for an empty session)."""
        ...

    def locate(self, checkpoint_id: str) -> str:
        """A reference that ``load_checkpoint`` resolves from anywhere: a file path or a store URL."""
        ...

    def write_document(self, name: str, value: Any) -> None:
        """(Re)write a session document atomically: a JSON value, or text for names ending in ``.txt``."""
        ...

    def read_document(self, name: str) -> Any:
        """A session document, or None if absent."""
        ...

    def list_documents(self) -> list[str]:
        """Names of the session's documents, sorted."""
        ...

    def start_from(self, checkpoint_id: str) -> bool:
        """Make this new session a continuation of ``checkpoint_id`` in its parent session (the directory
        holding it; the session id before the last ``/``). Before the first save. True when the backend
        refers to the parent's stored state (a fork copies nothing); False when the first save will store
        the whole state."""
        ...

    def flush(self) -> None:
        """Return once every saved checkpoint is visible to other processes (a backend may finish writes
        later: the file store creates record files in one batch); raises ``CheckpointSaveError`` if such a
        write failed."""
        ...

    def close(self) -> None:
        """Release the writer lease and any connection (a later save reacquires them)."""
        ...


@runtime_checkable
class CheckpointStore(Protocol):
    """Many sessions: a directory of session directories, a SQLite file or a PostgreSQL database."""

    @property
    def url(self) -> str:
        """How to open this store again (``file:``, ``sqlite:///``, ``postgresql://``)."""
        ...

    def open_session(self, session_id: str, *, durability: Durability = "crash") -> SessionStore:
        """The session with this id (created on its first save)."""
        ...

    def list_sessions(self) -> list[str]:
        """Ids of the sessions that hold at least one checkpoint or document, sorted."""
        ...

    def delete_session(self, session_id: str, *, include_continuations: bool = False) -> None:
        """Remove a session and everything in it. A session with continuations (``<id>/continuation_...``)
        is refused with a ``CheckpointError`` naming them unless ``include_continuations`` removes them too:
        a continuation may read its parent's checkpoints."""
        ...

    def find_checkpoint(self, checkpoint_id: str) -> str:
        """The id of the one session holding ``checkpoint_id``; ``CheckpointNotFoundError`` otherwise."""
        ...
