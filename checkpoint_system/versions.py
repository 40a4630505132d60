"""Versions of AG2 and of this library, recorded in every checkpoint."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def ag2_version() -> str:
    """The installed AG2 Classic version (``ag2`` distribution, or autogen's own ``__version__``)."""
    for dist in ("ag2", "autogen", "pyautogen"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    import autogen

    return str(getattr(autogen, "__version__", "unknown"))


@cache
def library_version() -> str:
    """This library's version."""
    try:
        return metadata.version("checkpoint-system")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"
