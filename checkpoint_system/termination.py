"""Termination conditions for AG2's ``is_termination_msg`` that serialize exactly to JSON.

A checkpoint has to record *when an agent stops*, but ``is_termination_msg`` is an arbitrary
callable. This module offers two things:

* Declarative conditions (:class:`ContainsText`, :class:`EqualsText`, ...) that are plain callables,
  so AG2 accepts them as ``is_termination_msg``, and that round-trip exactly through
  :meth:`TerminationCondition.to_spec` / :func:`condition_from_spec`.
* :func:`describe_termination`, which recognizes the common shapes of hand-written lambdas
  (``"X" in msg["content"]``, ``.endswith``, ``==``, ``re.search``, ``and``/``or``) from their source
  or, when no source exists, from their bytecode -- **without ever calling them**, because calling
  user code can have side effects. What it cannot recognize with certainty is recorded as
  ``"custom"`` (a wrong detection is worse than an honest "custom").

A checkpoint file may come from anyone, so a ``"regex"`` condition rebuilt from one
(:func:`condition_from_spec`, :func:`termination_from_record`) runs on RE2, whose matching time is linear in
the message, instead of Python's backtracking ``re`` (where ``(a+)+$`` takes hours on a few dozen characters).
It still means what it meant to ``re``: see :class:`MatchesRegex` and :mod:`checkpoint_system.linear_regex`.
A pattern that RE2 cannot run with that meaning is refused with :class:`UnsafePatternError`, unless the
caller trusts the file (``trust_patterns=True``). Conditions built in the user's own code keep using ``re``.
"""

from __future__ import annotations

import ast
import builtins
import dis
import functools
import inspect
import linecache
import re
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, TypeAlias

from autogen.code_utils import content_str

from checkpoint_system.errors import InvalidCheckpointError, TerminationCaptureWarning, UnsafePatternError
from checkpoint_system.linear_regex import LinearPattern, UnsupportedPattern

__all__ = [
    "AllOf",
    "AnyOf",
    "ContainsText",
    "EndsWithText",
    "EqualsText",
    "MatchesRegex",
    "RegexEngine",
    "TerminationCondition",
    "all_of",
    "any_of",
    "condition_from_spec",
    "describe_termination",
    "terminate_endswith",
    "terminate_exact",
    "terminate_on",
    "terminate_regex",
    "termination_from_record",
]

#: Regex flags a spec may carry; anything else (VERBOSE, ASCII, LOCALE, DEBUG, ...) is rejected.
ALLOWED_REGEX_FLAGS: Final[int] = int(re.IGNORECASE | re.MULTILINE | re.DOTALL)
#: Longest source text kept in a record.
MAX_SOURCE_CHARS: Final[int] = 2000
#: Which engine runs a MatchesRegex: Python's ``re`` (the user's own conditions, trusted checkpoints) or RE2
#: (linear time, for patterns read from a checkpoint).
RegexEngine: TypeAlias = Literal["re", "re2"]
_PATTERN_PREVIEW_CHARS: Final = 60

_MAX_SPEC_DEPTH: Final = 32
_MAX_SPEC_CHILDREN: Final = 256
_CONTENT_TEXT_ERRORS: Final = (TypeError, ValueError, AssertionError, KeyError, AttributeError)


# --------------------------------------------------------------------------------------------------
# Message content
# --------------------------------------------------------------------------------------------------


def _fallback_text(content: object) -> str:
    """Text of content that ``content_str`` rejects: the text parts of a list, else nothing."""
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _message_text(message: object, raw_content: bool) -> str | None:
    """The text a condition matches against, or None when it cannot match at all.

    Normal mode uses AG2's ``content_str`` (None -> "", multimodal lists -> their text parts).
    ``raw_content`` mode mirrors lambdas that read ``msg["content"]`` directly: only a plain
    string (or None/missing, read as "") can match; lists and other values never do.
    """
    if isinstance(message, Mapping):
        content = message.get("content")
    elif isinstance(message, str):
        content = message
    else:
        content = None
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if raw_content:
        return None
    try:
        return content_str(content)  # type: ignore[arg-type, unused-ignore]
    except _CONTENT_TEXT_ERRORS:
        return _fallback_text(content)


# --------------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------------


def _require_str(value: object, what: str, *, allow_empty: bool) -> None:
    if type(value) is not str:
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{what} must not be empty (an empty text would match every message)")


def _require_bool(value: object, what: str) -> None:
    if type(value) is not bool:
        raise TypeError(f"{what} must be a bool, got {type(value).__name__}")


@dataclass(frozen=True)
class TerminationCondition:
    """Base of the declarative, hashable, JSON-serializable ``is_termination_msg`` conditions."""

    kind: ClassVar[str] = ""

    def __call__(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` ends the conversation."""
        raise NotImplementedError

    def to_spec(self) -> dict[str, Any]:
        """A JSON-able dict (with a ``"kind"`` key) that :func:`condition_from_spec` inverts exactly."""
        raise NotImplementedError


@dataclass(frozen=True)
class ContainsText(TerminationCondition):
    """True when the message content contains ``text``."""

    text: str
    case_sensitive: bool = True
    raw_content: bool = False
    kind: ClassVar[str] = "contains"

    def __post_init__(self) -> None:
        _require_str(self.text, "ContainsText.text", allow_empty=False)
        _require_bool(self.case_sensitive, "ContainsText.case_sensitive")
        _require_bool(self.raw_content, "ContainsText.raw_content")

    def __call__(self, message: dict[str, Any]) -> bool:
        content = _message_text(message, self.raw_content)
        if content is None:
            return False
        if self.case_sensitive:
            return self.text in content
        return self.text.lower() in content.lower()

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "case_sensitive": self.case_sensitive,
            "raw_content": self.raw_content,
        }


@dataclass(frozen=True)
class EndsWithText(TerminationCondition):
    """True when the content ends with ``text`` (after ``rstrip()`` unless ``rstrip=False``)."""

    text: str
    case_sensitive: bool = True
    rstrip: bool = True
    raw_content: bool = False
    kind: ClassVar[str] = "endswith"

    def __post_init__(self) -> None:
        _require_str(self.text, "EndsWithText.text", allow_empty=False)
        _require_bool(self.case_sensitive, "EndsWithText.case_sensitive")
        _require_bool(self.rstrip, "EndsWithText.rstrip")
        _require_bool(self.raw_content, "EndsWithText.raw_content")

    def __call__(self, message: dict[str, Any]) -> bool:
        content = _message_text(message, self.raw_content)
        if content is None:
            return False
        if self.rstrip:
            content = content.rstrip()
        if self.case_sensitive:
            return content.endswith(self.text)
        return content.lower().endswith(self.text.lower())

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "case_sensitive": self.case_sensitive,
            "rstrip": self.rstrip,
            "raw_content": self.raw_content,
        }


@dataclass(frozen=True)
class EqualsText(TerminationCondition):
    """True when the whole content equals ``text`` (AG2's default is ``EqualsText("TERMINATE")``)."""

    text: str
    case_sensitive: bool = True
    strip: bool = False
    raw_content: bool = False
    kind: ClassVar[str] = "equals"

    def __post_init__(self) -> None:
        _require_str(self.text, "EqualsText.text", allow_empty=True)
        _require_bool(self.case_sensitive, "EqualsText.case_sensitive")
        _require_bool(self.strip, "EqualsText.strip")
        _require_bool(self.raw_content, "EqualsText.raw_content")

    def __call__(self, message: dict[str, Any]) -> bool:
        content = _message_text(message, self.raw_content)
        if content is None:
            return False
        if self.strip:
            content = content.strip()
        if self.case_sensitive:
            return content == self.text
        return content.lower() == self.text.lower()

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "case_sensitive": self.case_sensitive,
            "strip": self.strip,
            "raw_content": self.raw_content,
        }


@dataclass(frozen=True)
class MatchesRegex(TerminationCondition):
    """True when ``re.search(pattern, content, flags)`` finds a match.

    Only ``re.IGNORECASE``, ``re.MULTILINE`` and ``re.DOTALL`` are accepted, so a spec stays a
    plain int that means the same thing everywhere.

    ``engine`` says what runs the search. ``"re"`` (the default, for conditions written in the user's
    own code) is Python's ``re``. ``"re2"`` is what a condition read from a checkpoint gets: the same
    pattern, read by Python's parser and run on RE2 in time linear in the message. It answers as ``re``
    would for every message (``\\w``, ``\\d``, ``\\s`` and ``\\b`` stay Unicode, ``$`` still matches
    before a final newline, IGNORECASE folds case as ``re`` does). A pattern for which that cannot be
    guaranteed (lookaround, backreferences, ``\\b`` beside something that may or may not be a word
    character, ``$`` followed by more pattern, ...) raises
    :class:`~checkpoint_system.linear_regex.UnsupportedPattern`, a ``ValueError``. The rules are in
    :mod:`checkpoint_system.linear_regex`.

    The engine is not part of the condition's identity: ``to_spec()``, equality and hashing ignore it, so a
    condition restored from a checkpoint saves the very spec it was read from and equals the user's original.
    """

    pattern: str
    flags: int = 0
    raw_content: bool = False
    engine: RegexEngine = field(default="re", compare=False, kw_only=True)
    kind: ClassVar[str] = "regex"
    _compiled: re.Pattern[str] | LinearPattern = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        _require_str(self.pattern, "MatchesRegex.pattern", allow_empty=True)
        if not isinstance(self.flags, int) or isinstance(self.flags, bool):
            raise TypeError(f"MatchesRegex.flags must be an int, got {type(self.flags).__name__}")
        flags = int(self.flags)
        if flags < 0 or flags & ~ALLOWED_REGEX_FLAGS:
            raise ValueError(
                f"MatchesRegex.flags {flags} has bits outside IGNORECASE|MULTILINE|DOTALL "
                f"({ALLOWED_REGEX_FLAGS})"
            )
        _require_bool(self.raw_content, "MatchesRegex.raw_content")
        if self.engine not in ("re", "re2"):
            raise ValueError(f"MatchesRegex.engine must be 're' or 're2', got {self.engine!r}")
        object.__setattr__(self, "flags", flags)
        # re.error if invalid; on RE2 also UnsupportedPattern when it cannot run the pattern with re's meaning
        compiled: re.Pattern[str] | LinearPattern
        if self.engine == "re":
            compiled = re.compile(self.pattern, flags)
        else:
            compiled = LinearPattern(self.pattern, flags)
        object.__setattr__(self, "_compiled", compiled)

    def __call__(self, message: dict[str, Any]) -> bool:
        content = _message_text(message, self.raw_content)
        if content is None:
            return False
        if isinstance(self._compiled, LinearPattern):
            return self._compiled.search(content)
        return self._compiled.search(content) is not None

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "pattern": self.pattern,
            "flags": self.flags,
            "raw_content": self.raw_content,
        }


def _check_children(conditions: tuple[object, ...], owner: str) -> None:
    if not conditions:
        raise ValueError(f"{owner} needs at least one condition")
    for cond in conditions:
        if type(cond) not in _KIND_BY_TYPE:
            raise TypeError(f"{owner} accepts only built-in TerminationConditions, got {type(cond).__name__}")


@dataclass(frozen=True, init=False)
class AnyOf(TerminationCondition):
    """True when at least one of ``conditions`` is true: ``AnyOf(a, b)``."""

    conditions: tuple[TerminationCondition, ...]
    kind: ClassVar[str] = "any_of"

    def __init__(self, *conditions: TerminationCondition) -> None:
        _check_children(conditions, "AnyOf")
        object.__setattr__(self, "conditions", tuple(conditions))

    def __call__(self, message: dict[str, Any]) -> bool:
        return any(cond(message) for cond in self.conditions)

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "conditions": [cond.to_spec() for cond in self.conditions]}


@dataclass(frozen=True, init=False)
class AllOf(TerminationCondition):
    """True when every one of ``conditions`` is true: ``AllOf(a, b)``."""

    conditions: tuple[TerminationCondition, ...]
    kind: ClassVar[str] = "all_of"

    def __init__(self, *conditions: TerminationCondition) -> None:
        _check_children(conditions, "AllOf")
        object.__setattr__(self, "conditions", tuple(conditions))

    def __call__(self, message: dict[str, Any]) -> bool:
        return all(cond(message) for cond in self.conditions)

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "conditions": [cond.to_spec() for cond in self.conditions]}


_KIND_BY_TYPE: Final[dict[type, str]] = {
    cls: cls.kind for cls in (ContainsText, EndsWithText, EqualsText, MatchesRegex, AnyOf, AllOf)
}


# --------------------------------------------------------------------------------------------------
# Factories
# --------------------------------------------------------------------------------------------------


def terminate_on(*texts: str, case_sensitive: bool = True) -> TerminationCondition:
    """Stop when the content contains any of ``texts`` (one text -> ContainsText, several -> AnyOf)."""
    if not texts:
        raise ValueError("terminate_on needs at least one text")
    conds = [ContainsText(text, case_sensitive=case_sensitive) for text in texts]
    return conds[0] if len(conds) == 1 else AnyOf(*conds)


def terminate_regex(pattern: str, flags: int = 0) -> TerminationCondition:
    """Stop when ``re.search(pattern, content, flags)`` matches."""
    return MatchesRegex(pattern, flags)


def terminate_endswith(text: str, *, case_sensitive: bool = True) -> TerminationCondition:
    """Stop when the content, ignoring trailing whitespace, ends with ``text``."""
    return EndsWithText(text, case_sensitive=case_sensitive)


def terminate_exact(text: str, *, case_sensitive: bool = True) -> TerminationCondition:
    """Stop when the content is exactly ``text``."""
    return EqualsText(text, case_sensitive=case_sensitive)


def any_of(*conds: TerminationCondition) -> TerminationCondition:
    """Stop when any condition holds (a single condition is returned unchanged)."""
    return conds[0] if len(conds) == 1 else AnyOf(*conds)


def all_of(*conds: TerminationCondition) -> TerminationCondition:
    """Stop when all conditions hold (a single condition is returned unchanged)."""
    return conds[0] if len(conds) == 1 else AllOf(*conds)


# --------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------

_REQUIRED: Final = object()
_FieldTable: TypeAlias = dict[str, tuple[type, object]]


def _spec_error(where: str, problem: str) -> InvalidCheckpointError:
    return InvalidCheckpointError(f"invalid termination spec at {where}: {problem}")


def _unsafe_pattern(where: str, pattern: str, exc: UnsupportedPattern) -> UnsafePatternError:
    return UnsafePatternError(
        f"termination pattern {_preview(pattern)} at {where} is not run from a checkpoint: {exc.reason} "
        "cannot be matched in linear time (RE2) with the meaning it has for Python's re, and re can take "
        "hours on a crafted message. If you trust this checkpoint, pass trust_patterns=True "
        "(CLI: --trust-patterns) to run it with Python's re."
    )


def _read_fields(spec: dict[str, Any], where: str, table: _FieldTable) -> dict[str, Any]:
    extra = sorted(str(key) for key in spec if key != "kind" and key not in table)
    if extra:
        raise _spec_error(where, f"unexpected field(s) {extra}")
    values: dict[str, Any] = {}
    for name, (expected, default) in table.items():
        if name not in spec:
            if default is _REQUIRED:
                raise _spec_error(where, f"missing field {name!r}")
            values[name] = default
            continue
        value = spec[name]
        if type(value) is not expected:  # exact: a bool is not an int, a str subclass is not a str
            raise _spec_error(
                where, f"field {name!r} must be {expected.__name__}, got {type(value).__name__}"
            )
        values[name] = value
    return values


def _build(
    where: str, factory: Callable[..., TerminationCondition], values: dict[str, Any]
) -> TerminationCondition:
    try:
        return factory(**values)
    except UnsupportedPattern:
        raise  # not invalid, only unsafe to run: the regex reader explains
    except (TypeError, ValueError, re.error, RecursionError) as exc:
        raise _spec_error(where, str(exc)) from None


def _read_contains(spec: dict[str, Any], where: str, depth: int, trusted: bool) -> TerminationCondition:
    table: _FieldTable = {
        "text": (str, _REQUIRED),
        "case_sensitive": (bool, True),
        "raw_content": (bool, False),
    }
    return _build(where, ContainsText, _read_fields(spec, where, table))


def _read_endswith(spec: dict[str, Any], where: str, depth: int, trusted: bool) -> TerminationCondition:
    table: _FieldTable = {
        "text": (str, _REQUIRED),
        "case_sensitive": (bool, True),
        "rstrip": (bool, True),
        "raw_content": (bool, False),
    }
    return _build(where, EndsWithText, _read_fields(spec, where, table))


def _read_equals(spec: dict[str, Any], where: str, depth: int, trusted: bool) -> TerminationCondition:
    table: _FieldTable = {
        "text": (str, _REQUIRED),
        "case_sensitive": (bool, True),
        "strip": (bool, False),
        "raw_content": (bool, False),
    }
    return _build(where, EqualsText, _read_fields(spec, where, table))


def _preview(pattern: str) -> str:
    if len(pattern) <= _PATTERN_PREVIEW_CHARS:
        return repr(pattern)
    return f"{pattern[:_PATTERN_PREVIEW_CHARS]!r}... ({len(pattern)} characters)"


def _read_regex(spec: dict[str, Any], where: str, depth: int, trusted: bool) -> TerminationCondition:
    table: _FieldTable = {"pattern": (str, _REQUIRED), "flags": (int, 0), "raw_content": (bool, False)}
    values = _read_fields(spec, where, table)
    flags = values["flags"]
    if flags < 0 or flags & ~ALLOWED_REGEX_FLAGS:
        raise _spec_error(where, f"regex flags {flags} outside IGNORECASE|MULTILINE|DOTALL")
    engine: RegexEngine = "re" if trusted else "re2"
    try:
        return _build(where, MatchesRegex, {**values, "engine": engine})
    except UnsupportedPattern as exc:  # _build lets it through
        raise _unsafe_pattern(where, values["pattern"], exc) from None


def _read_children(spec: dict[str, Any], where: str, depth: int, trusted: bool) -> list[TerminationCondition]:
    values = _read_fields(spec, where, {"conditions": (list, _REQUIRED)})
    children = values["conditions"]
    if not children:
        raise _spec_error(where, "'conditions' must not be empty")
    if len(children) > _MAX_SPEC_CHILDREN:
        raise _spec_error(where, f"more than {_MAX_SPEC_CHILDREN} conditions")
    return [
        _read_spec(child, f"{where}.conditions[{i}]", depth + 1, trusted) for i, child in enumerate(children)
    ]


def _read_any_of(spec: dict[str, Any], where: str, depth: int, trusted: bool) -> TerminationCondition:
    return AnyOf(*_read_children(spec, where, depth, trusted))


def _read_all_of(spec: dict[str, Any], where: str, depth: int, trusted: bool) -> TerminationCondition:
    return AllOf(*_read_children(spec, where, depth, trusted))


_READERS: Final[dict[str, Callable[[dict[str, Any], str, int, bool], TerminationCondition]]] = {
    ContainsText.kind: _read_contains,
    EndsWithText.kind: _read_endswith,
    EqualsText.kind: _read_equals,
    MatchesRegex.kind: _read_regex,
    AnyOf.kind: _read_any_of,
    AllOf.kind: _read_all_of,
}


def _read_spec(spec: object, where: str, depth: int, trusted: bool) -> TerminationCondition:
    if depth > _MAX_SPEC_DEPTH:
        raise _spec_error(where, f"nested deeper than {_MAX_SPEC_DEPTH} levels")
    if not isinstance(spec, dict):
        raise _spec_error(where, f"expected an object, got {type(spec).__name__}")
    kind = spec.get("kind")
    if type(kind) is not str:
        raise _spec_error(where, "missing or non-string 'kind'")
    reader = _READERS.get(kind)
    if reader is None:
        raise _spec_error(where, f"unknown kind {kind[:80]!r}")
    return reader(spec, where, depth, trusted)


def condition_from_spec(spec: dict[str, Any], *, trust_patterns: bool = False) -> TerminationCondition:
    """Rebuild a condition from :meth:`TerminationCondition.to_spec` output (nothing is evaluated).

    Regex conditions run on RE2 (linear time, ``engine="re2"``) unless ``trust_patterns`` is true, when they
    run on Python's ``re`` like the user's own conditions. Raises :class:`InvalidCheckpointError` for unknown
    kinds, unexpected or mistyped fields, invalid regexes and disallowed regex flags, and its subclass
    :class:`UnsafePatternError` for a valid regex that RE2 cannot run with Python's meaning (untrusted only).
    """
    return _read_spec(spec, "termination", 0, trust_patterns)


_RECORD_META_KEYS: Final = frozenset({"detected_from", "source"})
_DETECTED_FROM: Final = frozenset({"ag2_default", "source", "bytecode"})


def termination_from_record(
    record: dict[str, Any], *, trust_patterns: bool = False
) -> TerminationCondition | None:
    """Rebuild the condition of a :func:`describe_termination` record.

    Returns None for ``"none"`` and for ``"custom"``: the caller decides how to report a callable
    that has to be supplied again. ``trust_patterns`` as for :func:`condition_from_spec`.
    """
    if not isinstance(record, dict):
        raise _spec_error("termination", f"expected an object, got {type(record).__name__}")
    kind = record.get("kind")
    if kind in ("none", "custom"):
        return None
    detected = record.get("detected_from")
    if detected is not None and detected not in _DETECTED_FROM:
        raise _spec_error("termination", f"unknown detected_from {str(detected)[:80]!r}")
    if "source" in record and type(record["source"]) is not str:
        raise _spec_error("termination", "'source' must be a string")
    spec = {key: value for key, value in record.items() if key not in _RECORD_META_KEYS}
    return condition_from_spec(spec, trust_patterns=trust_patterns)


# --------------------------------------------------------------------------------------------------
# Recognizing lambdas (pure inspection: nothing of the user's is ever called)
# --------------------------------------------------------------------------------------------------


class _GuardType:
    """A content-presence test (``msg.get("content")``, ``is not None``, ``isinstance(.., str)``, ...)."""

    def __repr__(self) -> str:
        return "<guard>"


_GUARD: Final = _GuardType()
_Part: TypeAlias = TerminationCondition | _GuardType
_UNRESOLVED: Final = object()
_CASE_OPS: Final = frozenset({"lower", "upper"})
_STRIP_OPS: Final = frozenset({"strip", "rstrip", "lstrip"})
_FLAG_NAMES: Final[dict[str, int]] = {
    "I": int(re.IGNORECASE),
    "IGNORECASE": int(re.IGNORECASE),
    "M": int(re.MULTILINE),
    "MULTILINE": int(re.MULTILINE),
    "S": int(re.DOTALL),
    "DOTALL": int(re.DOTALL),
}
_UNICODE_FLAG: Final[int] = int(re.UNICODE)  # implied for str patterns, so harmless to drop


@dataclass(frozen=True)
class _Content:
    """How a lambda reads the content: text (``content_str``) or raw, plus str transforms."""

    raw: bool
    case: str | None
    strip: str | None


def _const_is(node: ast.AST, value: object) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value


def _int_value(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_value(node.operand)
        return None if inner is None else -inner
    return None


def _false_without_content(cond: TerminationCondition) -> bool:
    """Whether ``cond`` is false whenever the content is missing, None, empty or not a str."""
    if isinstance(cond, AllOf):
        return any(_false_without_content(child) for child in cond.conditions)
    if isinstance(cond, AnyOf):
        return all(_false_without_content(child) for child in cond.conditions)
    raw = getattr(cond, "raw_content", False)
    return raw is True and not cond({"content": ""})


def _flatten(cls: type[AnyOf] | type[AllOf], conds: list[TerminationCondition]) -> TerminationCondition:
    flat: list[TerminationCondition] = []
    for cond in conds:
        flat.extend(cond.conditions if type(cond) is cls else (cond,))
    return flat[0] if len(flat) == 1 else cls(*flat)


class _Recognizer:
    """Maps expression trees of a one-argument function to conditions, resolving names read-only."""

    def __init__(self, fn: types.FunctionType) -> None:
        code = fn.__code__
        self.param = code.co_varnames[0]
        self.freevars = code.co_freevars
        self.closure = fn.__closure__ or ()
        self.globals = fn.__globals__
        fn_builtins = getattr(fn, "__builtins__", None)
        self.builtins = fn_builtins if isinstance(fn_builtins, dict) else builtins.__dict__

    # -- names ---------------------------------------------------------------------------------

    def resolve(self, name: str) -> object:
        """Current value of a free/global/builtin name, read from cells and dicts (no user code runs)."""
        if name == self.param:
            return _UNRESOLVED
        if name in self.freevars:
            index = self.freevars.index(name)
            if index >= len(self.closure):
                return _UNRESOLVED
            try:
                return self.closure[index].cell_contents
            except ValueError:  # empty cell
                return _UNRESOLVED
        for namespace in (self.globals, self.builtins):
            if dict.__contains__(namespace, name):
                return dict.__getitem__(namespace, name)
        return _UNRESOLVED

    def _name_is(self, node: ast.AST, obj: object) -> bool:
        return isinstance(node, ast.Name) and self.resolve(node.id) is obj

    def _is_param(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id == self.param

    def _str_value(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant):
            value: object = node.value
        elif isinstance(node, ast.Name):
            value = self.resolve(node.id)
        else:
            return None
        return value if type(value) is str else None

    def _str_tuple(self, node: ast.AST) -> tuple[str, ...] | None:
        """A str, or a tuple of str (``endswith`` accepts both)."""
        if isinstance(node, ast.Tuple):
            items = [self._str_value(elt) for elt in node.elts]
            texts = [item for item in items if item is not None]
            return tuple(texts) if len(texts) == len(items) else None
        value: object = None
        if isinstance(node, ast.Constant):
            value = node.value
        elif isinstance(node, ast.Name):
            value = self.resolve(node.id)
        if type(value) is str:
            return (value,)
        if isinstance(value, tuple) and type(value) is tuple and all(type(v) is str for v in value):
            return tuple(str(v) for v in value)
        return None

    # -- content access -------------------------------------------------------------------------

    def _is_plain_access(self, node: ast.AST) -> bool:
        """``m["content"]``, ``m.get("content")``, ``m.get("content", "")`` or ``m.get("content", None)``."""
        if isinstance(node, ast.Subscript):
            return self._is_param(node.value) and _const_is(node.slice, "content")
        if (
            isinstance(node, ast.Call)
            and not node.keywords
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and self._is_param(node.func.value)
            and len(node.args) in (1, 2)
            and _const_is(node.args[0], "content")
        ):
            return len(node.args) == 1 or _const_is(node.args[1], "") or _const_is(node.args[1], None)
        return False

    def _is_raw_base(self, node: ast.AST) -> bool:
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) == 2:
            return self._is_plain_access(node.values[0]) and _const_is(node.values[1], "")
        return self._is_plain_access(node)

    def _content(self, node: ast.AST) -> _Content | None:
        case: str | None = None
        strip: str | None = None
        while (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and not node.args
            and not node.keywords
            and node.func.attr in _CASE_OPS | _STRIP_OPS
        ):
            op = node.func.attr
            if op in _CASE_OPS:
                if case is not None:
                    return None
                case = op
            else:
                if strip is not None:
                    return None
                strip = op
            node = node.func.value
        if self._is_raw_base(node):
            return _Content(True, case, strip)
        if (
            isinstance(node, ast.Call)
            and not node.keywords
            and len(node.args) == 1
            and self._name_is(node.func, content_str)
            and self._is_raw_base(node.args[0])
        ):
            return _Content(False, case, strip)
        return None

    # -- leaves ---------------------------------------------------------------------------------

    @staticmethod
    def _text_leaf(op: str, text: str, content: _Content) -> TerminationCondition | None:
        if not text:
            return None
        case_sensitive = True
        if content.case == "lower":
            if text != text.lower():
                return None  # e.g. "Done" in c.lower(): never true, not a real condition
            case_sensitive = False
        elif content.case == "upper":
            if text != text.upper() or text.lower().upper() != text:
                return None
            case_sensitive = False
        raw = content.raw
        if op == "contains":
            if content.strip is not None and text != text.strip():
                return None
            return ContainsText(text, case_sensitive=case_sensitive, raw_content=raw)
        if op == "endswith":
            if content.strip in ("strip", "lstrip") and text[0].isspace():
                return None
            rstrip = content.strip in ("strip", "rstrip")
            return EndsWithText(text, case_sensitive=case_sensitive, rstrip=rstrip, raw_content=raw)
        if content.strip not in (None, "strip"):
            return None
        return EqualsText(
            text, case_sensitive=case_sensitive, strip=content.strip == "strip", raw_content=raw
        )

    def _flags(self, node: ast.AST) -> int | None:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Attribute) and self._name_is(node.value, re):
            return _FLAG_NAMES.get(node.attr)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            left, right = self._flags(node.left), self._flags(node.right)
            return None if left is None or right is None else left | right
        return None

    def _regex_leaf(self, node: ast.Call) -> TerminationCondition | None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "search" and isinstance(func.value, ast.Name):
            target = self.resolve(func.value.id)
            if type(target) is re.Pattern:  # PATTERN.search(content)
                if node.keywords or len(node.args) != 1 or type(target.pattern) is not str:
                    return None
                return self._regex(target.pattern, target.flags & ~_UNICODE_FLAG, node.args[0])
            is_search = target is re
        else:
            is_search = self._name_is(func, re.search)
        if not is_search or not 2 <= len(node.args) <= 3:
            return None
        flag_nodes = list(node.args[2:])
        for keyword in node.keywords:
            if keyword.arg != "flags" or flag_nodes:
                return None
            flag_nodes.append(keyword.value)
        pattern = self._str_value(node.args[0])
        flags = self._flags(flag_nodes[0]) if flag_nodes else 0
        if pattern is None or flags is None:
            return None
        return self._regex(pattern, flags & ~_UNICODE_FLAG, node.args[1])

    def _regex(self, pattern: str, flags: int, target: ast.AST) -> TerminationCondition | None:
        content = self._content(target)
        if content is None or content.case or content.strip or flags < 0 or flags & ~ALLOWED_REGEX_FLAGS:
            return None
        try:
            return MatchesRegex(pattern, flags, raw_content=content.raw)
        except (re.error, ValueError, TypeError):
            return None

    def _compare_leaf(self, node: ast.Compare) -> _Part | None:
        if len(node.ops) != 1:
            return None
        left, op, right = node.left, node.ops[0], node.comparators[0]
        if isinstance(op, ast.In):
            if _const_is(left, "content") and self._is_param(right):
                return _GUARD  # "content" in msg
            text, content = self._str_value(left), self._content(right)
            return None if text is None or content is None else self._text_leaf("contains", text, content)
        if isinstance(op, ast.Eq):
            for side, other in ((left, right), (right, left)):
                text, content = self._str_value(other), self._content(side)
                if text is not None and content is not None:
                    return self._text_leaf("equals", text, content)
            return None
        if isinstance(op, ast.IsNot) and _const_is(right, None):
            if self._is_plain_access(left):
                return _GUARD
            return self._regex_leaf(left) if isinstance(left, ast.Call) else None
        bound = _int_value(right)
        if (
            isinstance(left, ast.Call)
            and isinstance(left.func, ast.Attribute)
            and left.func.attr == "find"
            and len(left.args) == 1
            and not left.keywords
            and (
                (isinstance(op, ast.GtE) and bound == 0)
                or (isinstance(op, (ast.Gt, ast.NotEq)) and bound == -1)
            )
        ):
            text, content = self._str_value(left.args[0]), self._content(left.func.value)
            return None if text is None or content is None else self._text_leaf("contains", text, content)
        return None

    def _call_leaf(self, node: ast.Call) -> _Part | None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "endswith":
            content = self._content(func.value)
            texts = self._str_tuple(node.args[0]) if len(node.args) == 1 and not node.keywords else None
            if content is None or not texts:
                return None
            leaves = [self._text_leaf("endswith", text, content) for text in texts]
            conds = [leaf for leaf in leaves if leaf is not None]
            return _flatten(AnyOf, conds) if len(conds) == len(leaves) else None
        if (
            self._name_is(func, isinstance)
            and len(node.args) == 2
            and not node.keywords
            and self._is_plain_access(node.args[0])
            and self._name_is(node.args[1], str)
        ):
            return _GUARD
        return self._regex_leaf(node)

    # -- expressions ----------------------------------------------------------------------------

    def combine_and(self, parts: list[_Part]) -> TerminationCondition | None:
        """``and`` of parts; guards are dropped only when the rest is false without content anyway."""
        conds = [part for part in parts if isinstance(part, TerminationCondition)]
        if not conds:
            return None
        if len(conds) != len(parts) and not any(_false_without_content(cond) for cond in conds):
            return None
        return _flatten(AllOf, conds)

    def expr(self, node: ast.AST) -> _Part | None:
        """Condition (or guard) equivalent in truthiness to ``node``, or None when unsure."""
        if isinstance(node, ast.BoolOp):
            parts = [self.expr(value) for value in node.values]
            if any(part is None for part in parts):
                return None
            known = [part for part in parts if part is not None]
            if isinstance(node.op, ast.And):
                return self.combine_and(known)
            conds = [part for part in known if isinstance(part, TerminationCondition)]
            return _flatten(AnyOf, conds) if len(conds) == len(known) else None
        if isinstance(node, ast.Call) and self._name_is(node.func, bool):
            return self.expr(node.args[0]) if len(node.args) == 1 and not node.keywords else None
        if self._is_plain_access(node):
            return _GUARD  # truthiness of the content
        if isinstance(node, ast.Compare):
            return self._compare_leaf(node)
        if isinstance(node, ast.Call):
            return self._call_leaf(node)
        return None

    def condition(self, node: ast.AST) -> TerminationCondition | None:
        part = self.expr(node)
        return part if isinstance(part, TerminationCondition) else None


# --------------------------------------------------------------------------------------------------
# Source location
# --------------------------------------------------------------------------------------------------

_FuncNode: TypeAlias = ast.Lambda | ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class _Located:
    """The AST of a function found in its source file; ``body`` is None if not a single expression."""

    body: ast.expr | None
    source: str


@functools.lru_cache(maxsize=32)
def _function_nodes_by_line(filename: str, text: str) -> dict[int, tuple[_FuncNode, ...]]:
    """Lambda/def nodes of a source text, indexed by every line a code object may start on."""
    try:
        tree = ast.parse(text, filename=filename)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}
    index: dict[int, list[_FuncNode]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = {node.lineno}
            if not isinstance(node, ast.Lambda) and node.decorator_list:
                lines.add(node.decorator_list[0].lineno)
            for line in lines:
                index.setdefault(line, []).append(node)
    return {line: tuple(nodes) for line, nodes in index.items()}


def _code_strings(consts: tuple[object, ...]) -> list[str]:
    found: list[str] = []
    for const in consts:
        if type(const) is str:
            found.append(const)
        elif isinstance(const, (tuple, frozenset)):
            found.extend(_code_strings(tuple(const)))
    return found


def _node_args(node: _FuncNode) -> set[str]:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return set(names)


def _code_args(code: types.CodeType) -> set[str]:
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    return set(code.co_varnames[:count])


def _docstring(node: _FuncNode) -> str | None:
    if isinstance(node, ast.Lambda) or not node.body:
        return None
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and type(first.value.value) is str
    ):
        return first.value.value
    return None


def _matches_code(node: _FuncNode, code: types.CodeType) -> bool:
    """Cross-check a candidate node against the code object, so stale or wrong source is never trusted."""
    expected_name = "<lambda>" if isinstance(node, ast.Lambda) else node.name
    if code.co_name != expected_name or _node_args(node) != _code_args(code):
        return False
    body: list[ast.AST] = [node.body] if isinstance(node, ast.Lambda) else list(node.body)
    params = _node_args(node)
    strings: set[str] = set()
    names: set[str] = set()
    for stmt in body:
        for sub in ast.walk(stmt):
            if isinstance(sub, ast.Constant):
                strings.update(_code_strings((sub.value,)))
            elif isinstance(sub, ast.Name) and sub.id not in params:
                names.add(sub.id)
            elif isinstance(sub, ast.Attribute):
                names.add(sub.attr)
            elif isinstance(sub, ast.keyword) and sub.arg is not None:
                strings.add(sub.arg)  # keyword names are stored as constant tuples
    docstring = _docstring(node)
    code_strings = set(_code_strings(code.co_consts))
    if docstring is not None:
        strings.discard(docstring)
        code_strings.discard(docstring)
    return strings == code_strings and names == set(code.co_names) | set(code.co_freevars)


def _within(code: types.CodeType, node: _FuncNode) -> bool:
    """Whether every located instruction of ``code`` lies inside ``node`` (Python 3.11+ positions)."""
    start = (node.lineno, node.col_offset)
    end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
    positions: Callable[[], Any] = getattr(code, "co_positions")  # noqa: B009 (absent before 3.11)
    for line, end_line, col, end_col in positions():
        if (
            line is None
            or end_line is None
            or col is None
            or end_col is None
            or (line, col) == (end_line, end_col)
        ):
            continue
        if not (start <= (line, col) and (end_line, end_col) <= end):
            return False
    return True


def _source_text(fn: types.FunctionType) -> str | None:
    """The whole source file of ``fn`` (also notebook cells, via linecache), or None."""
    code = fn.__code__
    try:
        linecache.checkcache(code.co_filename)
        lines = linecache.getlines(code.co_filename, fn.__globals__)
    except Exception:  # a broken loader or file must not break a checkpoint
        return None
    return "".join(lines) if lines else None


def _locate(fn: types.FunctionType) -> _Located | None:
    """Find the lambda/def of ``fn`` in its source, or None when absent or not certain."""
    code = fn.__code__
    text = _source_text(fn)
    if text is None:
        return None
    nodes = _function_nodes_by_line(code.co_filename, text).get(code.co_firstlineno, ())
    candidates = [node for node in nodes if _matches_code(node, code)]
    if len({ast.dump(node) for node in candidates}) > 1 and hasattr(code, "co_positions"):
        candidates = [node for node in candidates if _within(code, node)]
    if not candidates or len({ast.dump(node) for node in candidates}) > 1:
        return None
    node = candidates[0]
    source = (ast.get_source_segment(text, node) or "")[:MAX_SOURCE_CHARS]
    if isinstance(node, ast.Lambda):
        return _Located(node.body, source)
    statements = node.body[1:] if _docstring(node) is not None else node.body
    if len(statements) == 1 and isinstance(statements[0], ast.Return) and statements[0].value is not None:
        return _Located(statements[0].value, source)
    return _Located(None, source)


# --------------------------------------------------------------------------------------------------
# Bytecode: symbolic execution of straight-line expression code with short-circuit jumps
# --------------------------------------------------------------------------------------------------

_MAX_ATOMS: Final = 8
_MAX_STEPS: Final = 4000
_PY311: Final = sys.version_info >= (3, 11)
_PY312: Final = sys.version_info >= (3, 12)
_NOOPS: Final = frozenset(
    {"RESUME", "NOP", "CACHE", "EXTENDED_ARG", "PRECALL", "COPY_FREE_VARS", "TO_BOOL", "NOT_TAKEN"}
)
_COMPARE_OPS: Final[dict[str, type[ast.cmpop]]] = {
    "==": ast.Eq,
    "!=": ast.NotEq,
    "<": ast.Lt,
    "<=": ast.LtE,
    ">": ast.Gt,
    ">=": ast.GtE,
}
_JUMP_IF_TRUE: Final = frozenset({"POP_JUMP_IF_TRUE", "POP_JUMP_FORWARD_IF_TRUE"})
_JUMP_IF_FALSE: Final = frozenset({"POP_JUMP_IF_FALSE", "POP_JUMP_FORWARD_IF_FALSE"})
_JUMP_IF_NONE: Final = frozenset({"POP_JUMP_IF_NONE", "POP_JUMP_FORWARD_IF_NONE"})
_JUMP_IF_NOT_NONE: Final = frozenset({"POP_JUMP_IF_NOT_NONE", "POP_JUMP_FORWARD_IF_NOT_NONE"})
_JUMPS: Final = frozenset({"JUMP_FORWARD", "JUMP_ABSOLUTE", "JUMP", "JUMP_NO_INTERRUPT"})


class _Reject(Exception):
    """The bytecode leaves the small expression language we can follow."""


class _Null:
    """The NULL the interpreter pushes for method/global calls."""


_NULL: Final = _Null()
_Value: TypeAlias = ast.expr | _Null
_State: TypeAlias = tuple[int, tuple[_Value, ...], dict[int, bool], tuple[str, ...]]


def _name(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


class _Decompiler:
    """Turns bytecode into atoms (expressions) and a decision tree over their truth values.

    Each conditional jump branches on the truthiness of an expression (an atom); exploring both
    outcomes yields leaves ``(atoms that must be true, atoms that must be false, result)``.
    """

    def __init__(self, code: types.CodeType) -> None:
        self.code = code
        self.param = code.co_varnames[0]
        self.instrs = list(dis.get_instructions(code))
        self.index = {ins.offset: i for i, ins in enumerate(self.instrs)}
        self.atoms: list[ast.expr] = []
        self.atom_keys: dict[str, int] = {}
        self.leaves: list[tuple[int, int, bool]] = []
        self.steps = 0

    def _atom(self, expr: ast.expr) -> int:
        key = ast.dump(expr)
        if key not in self.atom_keys:
            if len(self.atoms) >= _MAX_ATOMS:
                raise _Reject("too many atoms")
            self.atom_keys[key] = len(self.atoms)
            self.atoms.append(expr)
        return self.atom_keys[key]

    def _truth(self, value: _Value, assign: dict[int, bool]) -> list[tuple[bool, dict[int, bool]]]:
        if not isinstance(value, ast.expr):
            raise _Reject("branch on NULL")
        if isinstance(value, ast.Constant):
            if type(value.value) not in (bool, int, str, type(None), tuple, float, bytes):
                raise _Reject("odd constant")
            return [(bool(value.value), assign)]
        atom = self._atom(value)
        if atom in assign:
            return [(assign[atom], assign)]
        return [(True, {**assign, atom: True}), (False, {**assign, atom: False})]

    def _target(self, ins: dis.Instruction) -> int:
        target = ins.argval
        if type(target) is not int or target <= ins.offset or target not in self.index:
            raise _Reject("backward or unknown jump")
        return self.index[target]

    def _after_noops(self, idx: int) -> int:
        while idx < len(self.instrs) and self.instrs[idx].opname in _NOOPS:
            idx += 1
        return idx

    def _or_default(self, idx: int, target: int, pop_first: bool) -> ast.expr | None:
        """Recognize the fall-through of ``value or CONST``: ``[POP_TOP] LOAD_CONST`` then the join."""
        idx = self._after_noops(idx)
        if pop_first:
            if idx >= len(self.instrs) or self.instrs[idx].opname != "POP_TOP":
                return None
            idx = self._after_noops(idx + 1)
        if idx >= len(self.instrs) or self.instrs[idx].opname != "LOAD_CONST":
            return None
        const = self.instrs[idx].argval
        return ast.Constant(value=const) if self._after_noops(idx + 1) == target else None

    def run(self) -> None:
        work: list[_State] = [(0, (), {}, ())]
        while work:
            self._run_path(*work.pop(), work)

    def _run_path(
        self,
        idx: int,
        frozen: tuple[_Value, ...],
        assign: dict[int, bool],
        kwnames: tuple[str, ...],
        work: list[_State],
    ) -> None:
        stack = list(frozen)

        def pop() -> _Value:
            if not stack:
                raise _Reject("stack underflow")
            return stack.pop()

        def pop_expr() -> ast.expr:
            value = pop()
            if not isinstance(value, ast.expr):
                raise _Reject("NULL used as a value")
            return value

        def pop_call(argc: int, names: tuple[str, ...], null_pair: bool) -> None:
            args = [pop_expr() for _ in range(argc)][::-1]
            if null_pair:
                first, second = pop(), pop()
                callables = [v for v in (first, second) if isinstance(v, ast.expr)]
                if len(callables) != 1:
                    raise _Reject("call without exactly one NULL")
                func = callables[0]
            else:
                func = pop_expr()
            if len(names) > len(args):
                raise _Reject("bad keyword names")
            split = len(args) - len(names)
            keywords = [ast.keyword(arg=n, value=v) for n, v in zip(names, args[split:], strict=True)]
            stack.append(ast.Call(func=func, args=args[:split], keywords=keywords))

        while True:
            self.steps += 1
            if self.steps > _MAX_STEPS or idx >= len(self.instrs):
                raise _Reject("runaway code")
            ins = self.instrs[idx]
            op = ins.opname
            nxt = idx + 1
            if op in _NOOPS:
                pass
            elif op == "KW_NAMES":  # 3.11/3.12; dis does not always resolve the tuple
                names = self.code.co_consts[ins.arg or 0]
                if not isinstance(names, tuple):
                    raise _Reject("keyword names")
                kwnames = tuple(map(str, names))
            elif op in ("LOAD_CONST", "LOAD_SMALL_INT"):
                stack.append(ast.Constant(value=ins.argval))
            elif op in ("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW", "LOAD_FAST_LOAD_FAST"):
                names = ins.argval if isinstance(ins.argval, tuple) else (ins.argval,)
                if any(name != self.param for name in names):
                    raise _Reject("local variable")
                stack.extend(_name(self.param) for _ in names)
            elif op == "LOAD_GLOBAL":
                if _PY311 and ins.arg is not None and ins.arg & 1:
                    stack.append(_NULL)
                stack.append(_name(ins.argval))
            elif op == "LOAD_DEREF":
                if ins.argval not in self.code.co_freevars:
                    raise _Reject("cell variable")
                stack.append(_name(ins.argval))
            elif op in ("LOAD_ATTR", "LOAD_METHOD"):
                obj = pop_expr()
                if op == "LOAD_METHOD" or (_PY312 and ins.arg is not None and ins.arg & 1):
                    stack.append(_NULL)
                stack.append(ast.Attribute(value=obj, attr=ins.argval, ctx=ast.Load()))
            elif op == "PUSH_NULL":
                stack.append(_NULL)
            elif op in ("CALL", "CALL_METHOD"):
                pop_call(ins.arg or 0, kwnames, null_pair=True)
                kwnames = ()
            elif op in ("CALL_KW", "CALL_FUNCTION_KW"):
                kw_const = pop_expr()
                if not (isinstance(kw_const, ast.Constant) and isinstance(kw_const.value, tuple)):
                    raise _Reject("keyword names")
                pop_call(ins.arg or 0, tuple(map(str, kw_const.value)), null_pair=op == "CALL_KW")
            elif op == "CALL_FUNCTION":
                pop_call(ins.arg or 0, (), null_pair=False)
            elif op == "BINARY_SUBSCR" or (op == "BINARY_OP" and ins.argrepr == "[]"):
                key = pop_expr()
                stack.append(ast.Subscript(value=pop_expr(), slice=key, ctx=ast.Load()))
            elif op == "BINARY_OR" or (op == "BINARY_OP" and ins.argrepr == "|"):
                right = pop_expr()
                stack.append(ast.BinOp(left=pop_expr(), op=ast.BitOr(), right=right))
            elif op == "COMPARE_OP":
                symbol = str(ins.argval if isinstance(ins.argval, str) else ins.argrepr)
                symbol = symbol.removeprefix("bool(").removesuffix(")")
                if symbol not in _COMPARE_OPS:
                    raise _Reject("comparison")
                right = pop_expr()
                stack.append(ast.Compare(left=pop_expr(), ops=[_COMPARE_OPS[symbol]()], comparators=[right]))
            elif op in ("CONTAINS_OP", "IS_OP"):
                right = pop_expr()
                cmp: ast.cmpop
                if op == "CONTAINS_OP":
                    cmp = ast.NotIn() if ins.arg else ast.In()
                else:
                    cmp = ast.IsNot() if ins.arg else ast.Is()
                stack.append(ast.Compare(left=pop_expr(), ops=[cmp], comparators=[right]))
            elif op in ("COPY", "DUP_TOP"):
                depth = ins.arg if op == "COPY" and ins.arg else 1
                if depth > len(stack):
                    raise _Reject("stack underflow")
                stack.append(stack[-depth])
            elif op == "POP_TOP":
                pop()
            elif op in ("RETURN_VALUE", "RETURN_CONST"):
                value = ast.Constant(value=ins.argval) if op == "RETURN_CONST" else pop_expr()
                for result, branch in self._truth(value, assign):
                    self._leaf(branch, result)
                return
            elif op in _JUMPS:
                nxt = self._target(ins)
            elif op in ("JUMP_IF_TRUE_OR_POP", "JUMP_IF_FALSE_OR_POP"):
                target = self._target(ins)
                value = pop_expr()
                if op == "JUMP_IF_TRUE_OR_POP":
                    default = self._or_default(nxt, target, pop_first=False)
                    if default is not None:
                        stack.append(ast.BoolOp(op=ast.Or(), values=[value, default]))
                        idx = target
                        continue
                jump_when = op == "JUMP_IF_TRUE_OR_POP"
                for truth, branch in self._truth(value, assign):
                    if truth == jump_when:
                        work.append((target, (*stack, value), branch, kwnames))
                    else:
                        work.append((nxt, tuple(stack), branch, kwnames))
                return
            elif op in _JUMP_IF_TRUE | _JUMP_IF_FALSE | _JUMP_IF_NONE | _JUMP_IF_NOT_NONE:
                target = self._target(ins)
                value = pop_expr()
                if op in _JUMP_IF_TRUE and stack and stack[-1] is value:
                    default = self._or_default(nxt, target, pop_first=True)
                    if default is not None:
                        stack[-1] = ast.BoolOp(op=ast.Or(), values=[value, default])
                        idx = target
                        continue
                if op in _JUMP_IF_NONE | _JUMP_IF_NOT_NONE:
                    value = ast.Compare(left=value, ops=[ast.IsNot()], comparators=[ast.Constant(value=None)])
                jump_when = op in _JUMP_IF_TRUE | _JUMP_IF_NOT_NONE
                for truth, branch in self._truth(value, assign):
                    work.append((target if truth == jump_when else nxt, tuple(stack), branch, kwnames))
                return
            else:
                raise _Reject(f"opcode {op}")
            idx = nxt

    def _leaf(self, assign: dict[int, bool], result: bool) -> None:
        must_true = sum(1 << atom for atom, value in assign.items() if value)
        must_false = sum(1 << atom for atom, value in assign.items() if not value)
        self.leaves.append((must_true, must_false, result))

    def evaluate(self, mask: int) -> bool:
        for must_true, must_false, result in self.leaves:
            if mask & must_true == must_true and not mask & must_false:
                return result
        raise _Reject("incomplete decision tree")


def _minimal_true_sets(dec: _Decompiler) -> list[list[int]] | None:
    """Prime implicants of a monotone function (its unique minimal DNF); None if not monotone."""
    n = len(dec.atoms)
    table = [dec.evaluate(mask) for mask in range(1 << n)]
    bits = [1 << i for i in range(n)]
    for mask, value in enumerate(table):
        if value and any(not table[mask | bit] for bit in bits):
            return None  # some atom is used negated: not expressible with AnyOf/AllOf
    minimal = [
        mask
        for mask, value in enumerate(table)
        if value and not any(mask & bit and table[mask & ~bit] for bit in bits)
    ]
    terms = [[i for i in range(n) if mask & bits[i]] for mask in minimal]
    return sorted(terms)


def _from_terms(terms: list[list[int]], parts: list[_Part], rec: _Recognizer) -> TerminationCondition | None:
    if len(terms) == 1:
        return rec.combine_and([parts[i] for i in terms[0]])
    common = [i for i in terms[0] if all(i in term for term in terms[1:])]
    if common:  # factor out: (a and b) or (a and c) -> a and (b or c), keeping first-seen order
        rest_terms = [[i for i in term if i not in common] for term in terms]
        rest = _from_terms(rest_terms, parts, rec)
        if rest is None:
            return None
        first_rest = min(i for term in rest_terms for i in term)
        ordered = sorted([(i, parts[i]) for i in common] + [(first_rest, rest)], key=lambda item: item[0])
        return rec.combine_and([part for _, part in ordered])
    conds = [_from_terms([term], parts, rec) for term in terms]
    known = [cond for cond in conds if cond is not None]
    return _flatten(AnyOf, known) if len(known) == len(conds) else None


def _detect_from_bytecode(fn: types.FunctionType) -> TerminationCondition | None:
    try:
        dec = _Decompiler(fn.__code__)
        dec.run()
        if not dec.atoms:
            return None
        terms = _minimal_true_sets(dec)
    except (_Reject, LookupError, TypeError, ValueError, RecursionError):
        return None  # anything unexpected in the bytecode means "not recognized"
    if not terms or terms == [[]]:
        return None  # constant function
    rec = _Recognizer(fn)
    parts = [rec.expr(atom) for atom in dec.atoms]
    known = [part for part in parts if part is not None]
    return _from_terms(terms, known, rec) if len(known) == len(parts) else None


# --------------------------------------------------------------------------------------------------
# describe_termination
# --------------------------------------------------------------------------------------------------

_UNSUPPORTED_FLAGS: Final = (
    inspect.CO_VARARGS
    | inspect.CO_VARKEYWORDS
    | inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ITERABLE_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
)
_AG2_DEFAULT: Final = EqualsText("TERMINATE")


def _simple_signature(code: types.CodeType) -> bool:
    return (
        code.co_argcount == 1
        and code.co_kwonlyargcount == 0
        and not code.co_flags & _UNSUPPORTED_FLAGS
        and not code.co_cellvars
    )


def _is_ag2_module(module: object) -> bool:
    return isinstance(module, str) and (module == "autogen" or module.startswith("autogen."))


def _detect(fn: types.FunctionType) -> tuple[TerminationCondition | None, str, str | None]:
    """(condition or None, how it was found, source text if any) -- without calling ``fn``."""
    code = fn.__code__
    simple = _simple_signature(code)
    if (
        simple
        and code.co_name == "<lambda>"
        and _is_ag2_module(fn.__module__)
        and _detect_from_bytecode(fn) == _AG2_DEFAULT
    ):
        return _AG2_DEFAULT, "ag2_default", None
    located = _locate(fn)
    if located is not None:
        if not simple or located.body is None:
            return None, "source", located.source
        return _Recognizer(fn).condition(located.body), "source", located.source
    if not simple:
        return None, "bytecode", None
    return _detect_from_bytecode(fn), "bytecode", None


def _fallback_source(code: types.CodeType) -> str | None:
    try:
        return inspect.getsource(code)[:MAX_SOURCE_CHARS]
    except Exception:  # OSError/TypeError without source; anything odd from linecache
        return None


def _module_name(module: object) -> str | None:
    return module if isinstance(module, str) else None


def _identity(fn: object) -> tuple[str, str | None, types.CodeType | None]:
    """(qualname, module, code) read from C-level attributes only (no user __getattr__ runs)."""
    func: object = fn
    prefix = ""
    if type(fn) is functools.partial:
        func, prefix = fn.func, "functools.partial:"
    elif type(fn) is types.MethodType:
        func = fn.__func__
    if type(func) is types.FunctionType:
        return prefix + func.__qualname__, _module_name(func.__module__), func.__code__
    if type(func) is types.BuiltinFunctionType:
        return prefix + func.__qualname__, _module_name(func.__module__), None
    cls = type(func)
    return prefix + str(getattr(cls, "__qualname__", cls.__name__)), _module_name(cls.__module__), None


_warned: dict[int, weakref.ref[Any]] = {}
_warned_lock = threading.Lock()


def _first_warning(key: object) -> bool:
    """True the first time ``key`` (a code object or a type) is seen; compared by identity."""
    with _warned_lock:
        ref = _warned.get(id(key))
        if ref is not None and ref() is key:
            return False
        ident = id(key)

        def forget(dead: weakref.ref[Any]) -> None:
            if _warned.get(ident) is dead:
                del _warned[ident]

        try:
            _warned[ident] = weakref.ref(key, forget)
        except TypeError:  # not weak-referenceable (never for code objects and types): warn every time
            return True
        return True


def describe_termination(fn: Callable[[dict[str, Any]], bool] | None) -> dict[str, Any]:
    """A JSON-able record of an agent's ``is_termination_msg``, found without calling it.

    ``None`` -> ``{"kind": "none"}``; a condition -> its spec; a recognized function -> the equivalent
    condition's spec plus ``"detected_from"`` (``"ag2_default"``, ``"source"`` or ``"bytecode"``) and
    ``"source"`` when known; anything else -> a ``"custom"`` record and a one-time
    :class:`TerminationCaptureWarning`, because it must be supplied again on restore.
    """
    if fn is None:
        return {"kind": "none"}
    if type(fn) in _KIND_BY_TYPE:
        return fn.to_spec()  # type: ignore[attr-defined, no-any-return]
    if not callable(fn):
        raise TypeError(f"is_termination_msg must be callable or None, got {type(fn).__name__}")
    source: str | None = None
    if type(fn) is types.FunctionType:
        cond, detected_from, source = _detect(fn)
        if cond is not None:
            detected: dict[str, Any] = {**cond.to_spec(), "detected_from": detected_from}
            if source is not None:
                detected["source"] = source
            return detected
    qualname, module, code = _identity(fn)
    if source is None and code is not None:
        source = _fallback_source(code)
    record: dict[str, Any] = {"kind": "custom", "qualname": qualname, "module": module}
    if source is not None:
        record["source"] = source
    strings = list(dict.fromkeys(_code_strings(code.co_consts))) if code is not None else []
    record["string_constants"] = [s[:200] for s in strings[:50]]
    if _first_warning(code if code is not None else type(fn)):
        warnings.warn(
            f"is_termination_msg {qualname!r}{f' from {module}' if module else ''} is not a recognized "
            "pattern: it is saved as "
            "'custom' and must be supplied again on restore (e.g. by an agent factory). Use "
            "checkpoint_system.termination conditions (terminate_on, ...) to capture it exactly.",
            TerminationCaptureWarning,
            stacklevel=2,
        )
    return record
