"""Export and import: copy sessions between any two stores (files, SQLite, PostgreSQL).

``copy_session(source, "session_x", target)`` copies one session (and with ``include_continuations=True``
every ``session_x/continuation_...`` session under it) checkpoint by checkpoint, in step order, then its
documents. Every checkpoint is loaded and validated from the source and saved again in the target, which
re-encodes it into the target's own layout; checkpoint ids, step numbers, lineage (parent ids) and
contents are preserved, so a copied session loads and continues exactly like the original.

``export_session(source, session_id, directory)`` writes a session directory (shareable as files, e.g. a
tarball of it); ``import_session(directory, target)`` loads one into a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointNotFoundError, CheckpointSaveError
from .files import FileStore
from .protocol import CheckpointStore, SessionStore

#: Documents the library writes; read from stores that cannot list their documents.
KNOWN_DOCUMENTS = (
    "session_metadata.json",
    "continuation_metadata.json",
    "chat_history.json",
    "problem_statement.txt",
)


@dataclass
class TransferReport:
    """What a copy did: session ids (source -> target), counts, and ids the target had to change."""

    sessions: dict[str, str] = field(default_factory=dict)
    checkpoints: int = 0
    documents: int = 0
    renamed: dict[str, str] = field(default_factory=dict)


def _store(value: CheckpointStore | str | Path, *, create: bool) -> CheckpointStore:
    if isinstance(value, (str, Path)):
        from . import open_store

        return open_store(value, create=create)
    return value


def document_names(session: SessionStore) -> list[str]:
    """The session's document names (``list_documents`` if the backend has it, else the known names)."""
    lister = getattr(session, "list_documents", None)
    if callable(lister):
        return list(lister())
    return [name for name in KNOWN_DOCUMENTS if session.read_document(name) is not None]


def copy_session(
    source: CheckpointStore | str | Path,
    session_id: str,
    target: CheckpointStore | str | Path,
    *,
    target_session_id: str | None = None,
    include_continuations: bool = False,
) -> TransferReport:
    """Copy a session (and optionally its continuations) from ``source`` into ``target``.

    The target session(s) must not exist yet (``CheckpointSaveError``; a copy never merges into or
    overwrites a session). Continuations keep their place: ``<session>/continuation_...`` becomes
    ``<target session>/continuation_...``.
    """
    src, dst = _store(source, create=False), _store(target, create=True)  # the source is only read
    new_root = target_session_id or session_id
    available = src.list_sessions()
    if session_id not in available:
        raise CheckpointNotFoundError(f"no session {session_id!r}", path=src.url)
    sessions = [session_id]
    if include_continuations:
        sessions += [s for s in available if s.startswith(session_id + "/")]
    report = TransferReport()
    mapping = {sid: new_root + sid[len(session_id) :] for sid in sessions}
    existing = set(dst.list_sessions())
    taken = sorted(t for t in mapping.values() if t in existing)
    if taken:
        raise CheckpointSaveError(
            f"the target already holds session(s) {taken}; a copy never merges or overwrites", path=dst.url
        )
    for sid in sorted(sessions, key=lambda s: (s.count("/"), s)):  # parents before their continuations
        _copy_one(src.open_session(sid), dst.open_session(mapping[sid]), report)
        report.sessions[sid] = mapping[sid]
    return report


def _copy_one(source: SessionStore, target: SessionStore, report: TransferReport) -> None:
    try:
        for checkpoint_id in source.list_checkpoints():
            data = source.load(checkpoint_id)
            data.integrity = None  # the target seals its own record
            new_id = target.save(data, trusted_prefix=False)
            if new_id != checkpoint_id:
                report.renamed[f"{source.session_id}/{checkpoint_id}"] = f"{target.session_id}/{new_id}"
            report.checkpoints += 1
        for name in document_names(source):
            value = source.read_document(name)
            if value is not None:
                target.write_document(name, value)
                report.documents += 1
    finally:
        target.close()


def export_session(
    source: CheckpointStore | str | Path,
    session_id: str,
    directory: str | Path,
    *,
    include_continuations: bool = False,
) -> TransferReport:
    """Write a session of any store as a session directory (``directory`` must not hold a session yet)."""
    path = Path(directory)
    return copy_session(
        source,
        session_id,
        FileStore(path.parent),
        target_session_id=path.name,
        include_continuations=include_continuations,
    )


def import_session(
    directory: str | Path,
    target: CheckpointStore | str | Path,
    *,
    session_id: str | None = None,
    include_continuations: bool = False,
) -> TransferReport:
    """Load a session directory into a store (as ``session_id``, default the directory's name)."""
    path = Path(directory)
    if not (path / "checkpoints").is_dir():
        raise CheckpointNotFoundError("not a session directory (no checkpoints/)", path=path)
    return copy_session(
        FileStore(path.parent),
        path.name,
        target,
        target_session_id=session_id or path.name,
        include_continuations=include_continuations,
    )
