"""Turning arbitrary Python values into JSON-safe data, marking (never pickling) what cannot be kept."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

#: Key of the marker that stands in for a value that has no JSON form (a client, a callable, ...).
UNSERIALIZABLE_KEY = "$unserializable"


def qualified_name(obj: Any) -> str:
    """``module.QualName`` of a class, function or (for other objects) of the object's type."""
    target = obj if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")) else type(obj)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', repr(target))}"


def unserializable_marker(value: Any) -> dict[str, Any]:
    """The marker saved in place of ``value``: names its type, says the user must supply it again."""
    return {UNSERIALIZABLE_KEY: qualified_name(value), "restore_from": "user"}


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-safe copy of ``value``: containers are copied, unknown objects become markers.

    Pydantic models are dumped, paths and enums become strings, and non-finite floats become strings so
    the result is valid strict JSON.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if _depth > 64:
        return unserializable_marker(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, _depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v, _depth + 1) for v in value), key=repr)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _depth + 1)
    if isinstance(value, PurePath):
        return str(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return to_jsonable(dump(), _depth + 1)
        except Exception:
            return unserializable_marker(value)
    return unserializable_marker(value)
