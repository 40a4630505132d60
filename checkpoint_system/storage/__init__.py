"""Storage backends behind one interface (``SessionStore`` / ``CheckpointStore``). They know nothing of AG2.

A store is named by a URL: a directory path (or ``file:///path``), ``sqlite:///relative.db`` /
``sqlite:////absolute.db``, or ``postgresql://user@host/db``. A checkpoint anywhere is named by a
*reference*: a checkpoint file path, or ``<store url>#<session id>/<checkpoint id>`` (or
``<store url>#<checkpoint id>`` when the id alone is unique in the store).

Backends: ``FileStore`` (``files.py``), ``SqliteStore`` (``sqlite.py``), ``PostgresStore`` (``postgres.py``,
needs the ``postgres`` extra; imported on first use). ``transfer.py`` copies sessions between any two.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointNotFoundError, UnsupportedStoreError, from_os_error
from ..model import CheckpointData
from .files import (
    FileSessionStore,
    FileStore,
    export_checkpoint,
    read_checkpoint_file,
    session_dir_of,
    usable_path,
)
from .protocol import CheckpointStore, Durability, SessionStore
from .sqlite import SqliteSessionStore, SqliteStore
from .transfer import TransferReport, copy_session, export_session, import_session

if TYPE_CHECKING:
    from .postgres import PostgresSessionStore, PostgresStore

#: the URL schemes of the backends (``file`` is a directory of sessions)
SUPPORTED_SCHEMES = ("file", "sqlite", "postgresql", "postgres")
#: ``scheme://`` at the start of a string (RFC 3986 scheme characters)
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: the password of ``scheme://user:password@host``, left out of error messages
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@#?]*?:)[^/@#?]*@")


def is_store_url(value: str | Path) -> bool:
    """Whether ``value`` is a URL (``scheme://...``) rather than a plain directory or file path.

    Any scheme counts, known or not: ``open_store`` refuses the unknown ones instead of taking
    ``redis://host/0`` for a relative directory.
    """
    return isinstance(value, str) and _URL_SCHEME.match(value) is not None


def check_store_url(url: str) -> str:
    """``url`` with its scheme in lower case; ``UnsupportedStoreError`` naming an unknown scheme.

    A plain path (no ``scheme://``) is returned unchanged.
    """
    match = _URL_SCHEME.match(url)
    if match is None:
        return url
    scheme = match.group(1).lower()
    if scheme not in SUPPORTED_SCHEMES:
        supported = ", ".join(f"{name}://" for name in SUPPORTED_SCHEMES)
        raise UnsupportedStoreError(
            f"unsupported store URL scheme {match.group(1)!r}; supported: {supported}, "
            "or a plain directory path",
            path=_URL_PASSWORD.sub(r"\1***@", url.partition("#")[0])[:200],
        )
    return scheme + url[match.end(1) :]


def open_store(url: str | Path, *, create: bool = True) -> CheckpointStore:
    """The store a URL (or a plain directory path) names; ``UnsupportedStoreError`` for an unknown scheme.

    ``create=True`` (writers): a database store creates its file or schema on first use. ``create=False``
    (readers: listing, loading, showing, exporting, continuing from a checkpoint): nothing is ever created,
    and a store that does not exist is ``CheckpointNotFoundError``. Reading never writes either way.
    """
    text = check_store_url(url) if isinstance(url, str) else str(url)
    if text.startswith("sqlite://"):
        from .sqlite import SqliteStore

        return SqliteStore.from_url(text, create=create)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore.from_url(text, create=create)
    if text.startswith("file://"):
        text = text[len("file://") :]
    store = FileStore(text)
    if not create and not os.path.exists(store.root):  # (a file: ``file:///path/to/checkpoint.json``)
        raise CheckpointNotFoundError("no store here: the directory does not exist", path=store.root)
    return store


@dataclass(frozen=True)
class CheckpointReference:
    """Where one checkpoint lives: its store, session and id (and its file, for file sessions)."""

    store: CheckpointStore
    session_id: str
    checkpoint_id: str
    path: Path | None = None

    def load(self) -> CheckpointData:
        if self.path is not None:
            return read_checkpoint_file(self.path)
        return self.store.open_session(self.session_id).load(self.checkpoint_id)

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{self.store.url}#{self.session_id}/{self.checkpoint_id}"


def load_reference(reference: str | Path, store: CheckpointStore | str | None = None) -> CheckpointReference:
    """Resolve a checkpoint file path, a ``<url>#<session>/<id>`` reference, or an id within ``store``."""
    text = str(reference)
    if store is None and is_store_url(reference):
        url, _, fragment = text.partition("#")
        opened_store = open_store(url, create=False)  # an unknown scheme: UnsupportedStoreError
        if not fragment:
            if isinstance(opened_store, FileStore):  # file:///path/to/checkpoint.json
                return load_reference(opened_store.root)
            raise CheckpointNotFoundError(
                "a store URL alone names no checkpoint: use <url>#<session>/<checkpoint id>",
                path=opened_store.url,  # without a password
            )
        store, text = opened_store, fragment
    if store is not None:
        opened = open_store(store, create=False) if isinstance(store, str) else store
        session_id, _, checkpoint_id = text.rpartition("/")
        if not session_id:
            session_id = opened.find_checkpoint(checkpoint_id)
        return CheckpointReference(opened, session_id, checkpoint_id)
    path = usable_path(reference)
    try:
        os.stat(path)
    except FileNotFoundError as exc:
        raise CheckpointNotFoundError("checkpoint file does not exist", path=path) from exc
    except OSError as exc:
        raise from_os_error(exc, "cannot look up the checkpoint file", path) from exc
    session_dir = session_dir_of(path.resolve())
    return CheckpointReference(FileStore(session_dir.parent), session_dir.name, path.stem, path)


def __getattr__(name: str) -> Any:
    if name in ("PostgresStore", "PostgresSessionStore"):  # psycopg is optional: import on first use
        from . import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointReference",
    "CheckpointStore",
    "Durability",
    "FileSessionStore",
    "FileStore",
    "PostgresSessionStore",
    "PostgresStore",
    "SessionStore",
    "SqliteSessionStore",
    "SqliteStore",
    "TransferReport",
    "copy_session",
    "export_checkpoint",
    "export_session",
    "import_session",
    "is_store_url",
    "load_reference",
    "open_store",
    "read_checkpoint_file",
]
