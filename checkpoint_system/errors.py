"""Exception hierarchy: every failure the library reports is a ``CheckpointError``.

Each error that concerns a file or record carries ``path`` so the message can name it.
"""

from __future__ import annotations

import errno
from pathlib import Path


class CheckpointError(Exception):
    """Base class of every error raised by checkpoint_system."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(f"{message} [{self.path}]" if self.path else message)
        self.reason = message


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint, session or file asked for does not exist (or is not a file)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint or session log is truncated, not valid JSON, or fails its integrity check."""


class InvalidCheckpointError(CheckpointError):
    """A checkpoint parses but does not match the schema (missing or mistyped fields, foreign file)."""


class UnsafePatternError(InvalidCheckpointError):
    """A checkpoint's regex termination pattern cannot run in linear time with Python's meaning.

    Patterns from a checkpoint run on RE2 because Python's backtracking ``re`` can take hours on a crafted
    message; a pattern RE2 cannot run as ``re`` would (lookaround, backreferences, ...) is refused unless the
    caller trusts the checkpoint (``trust_patterns=True``, CLI ``--trust-patterns``).
    """


class UnsupportedFormatError(CheckpointError):
    """The checkpoint was written by a newer, unknown format version."""


class CheckpointSaveError(CheckpointError):
    """Writing a checkpoint or a session document failed (disk full, permissions, read-only file system, ...).

    This is what ``CheckpointManager(on_save_error=...)`` governs: every failure of a save is one.
    """


class SessionLockedError(CheckpointSaveError):
    """Another writer holds the session: one writer per session at a time.

    A save error too, so ``except CheckpointSaveError`` (and ``on_save_error``) covers it.
    """


class CheckpointAccessError(CheckpointError, PermissionError):
    """The operating system refused access to a path the library had to read, list or create outside a save:
    permission denied, or a read-only file system (also catchable as the builtin ``PermissionError``)."""


class UnsupportedStoreError(CheckpointError):
    """A store URL names a backend this library does not have (``redis://...``, a misspelt scheme)."""


class CheckpointWarning(UserWarning):
    """Part of a session could not be used and was left out (a damaged commit line, ...); the message
    names the file and line."""


class TerminationCaptureWarning(UserWarning):
    """A custom termination callable could not be captured declaratively."""


#: errno values that mean the OS refused access to a path (rather than that it is missing or broken)
_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
#: errno values that mean there is no such file at that path
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP})


def from_os_error(
    exc: OSError,
    problem: str,
    path: str | Path,
    *,
    writing: bool = False,
    otherwise: type[CheckpointError] | None = None,
) -> CheckpointError:
    """The ``CheckpointError`` to raise (``from exc``) for an ``OSError`` met while ``problem``.

    Refused access (permission denied, read-only file system) is a ``CheckpointAccessError``; otherwise the
    class is ``otherwise`` when given, else a ``CheckpointSaveError`` for a failed write, a
    ``CheckpointNotFoundError`` for a path that is not there, and a plain ``CheckpointError`` for anything
    else (an I/O error). The message names ``path`` and the OS's reason.
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None and str(exc.filename) != str(path):
        reason += f" ({exc.filename})"
    message = f"{problem}: {reason}"
    error: CheckpointError
    if exc.errno in _ACCESS_ERRNOS:
        error = CheckpointAccessError(message, path=path)
        error.errno = exc.errno  # for callers that look at it; str() stays the message (no strerror set)
    elif otherwise is not None:
        error = otherwise(message, path=path)
    elif writing:
        error = CheckpointSaveError(message, path=path)
    elif exc.errno in _MISSING_ERRNOS:
        error = CheckpointNotFoundError(message, path=path)
    else:
        error = CheckpointError(message, path=path)
    return error


def add_note(error: BaseException, note: str) -> None:
    """Attach a note to an exception being propagated (PEP 678; appended to args before Python 3.11)."""
    if hasattr(error, "add_note"):
        error.add_note(note)
