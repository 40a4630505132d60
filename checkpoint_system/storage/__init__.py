"""Storage backends. They store ``CheckpointData`` and know nothing of AG2."""

from .files import FileSessionStore, read_checkpoint_file

__all__ = ["FileSessionStore", "read_checkpoint_file"]
