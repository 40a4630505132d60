"""Exception hierarchy: every failure the library reports is a ``CheckpointError``.

Each error that concerns a file or record carries ``path`` so the message can name it.
"""

from __future__ import annotations

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
    """Writing a checkpoint failed (disk full, permissions, ...)."""


class SessionLockedError(CheckpointError):
    """Another writer holds the session: one writer per session at a time."""


class TerminationCaptureWarning(UserWarning):
    """A custom termination callable could not be captured declaratively."""


def add_note(error: BaseException, note: str) -> None:
    """Attach a note to an exception being propagated (PEP 678; appended to args before Python 3.11)."""
    if hasattr(error, "add_note"):
        error.add_note(note)
