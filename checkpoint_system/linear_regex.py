r"""Python ``re`` patterns run on RE2, a regex engine whose matching time is linear in the text.

Python's ``re`` backtracks, so a pattern such as ``(a+)+$`` takes time exponential in the length of the text
it is searched in. A termination pattern read from somebody else's checkpoint could therefore keep a restored
chat busy for hours on one crafted message. RE2 never backtracks. Its syntax and some of its meanings differ
from Python's, so a pattern is not handed to it as written: Python's own parser reads the pattern (escapes,
``(?x)``, inline flags and character classes mean exactly what they mean to ``re``) and the parsed pattern is
written out again in RE2 syntax, spelling out Python's meaning wherever RE2 would read the text differently.

Only *whether* the pattern matches somewhere in the text (``re.search(...) is not None``) is kept: that is all
a termination check asks. Match spans and groups may differ (greediness does not change whether a match
exists). Where the translation cannot give Python's answer for every text, the pattern is refused with
:class:`UnsupportedPattern` rather than run with a different meaning:

* ``\d \w \s`` (and ``\D \W \S``) are Unicode in Python and ASCII in RE2. They become explicit classes of the
  running Python's own sets (computed once from ``re`` itself), so new Unicode versions cannot split them.
* ``$`` without MULTILINE also matches before a final newline in Python, only at the very end in RE2: at the
  end of the pattern it becomes "an optional newline, then the end"; followed by more pattern it is refused.
  ``\Z`` is RE2's ``\z``. ``^``, ``\A`` and MULTILINE ``^``/``$`` mean the same in both.
* ``\b``/``\B`` are ASCII-only in RE2 (``\bgrün\b`` would not find "grün."). The test is made from the pattern
  instead: when the characters on both sides come from the pattern and are known to be word or non-word
  characters (``\bdone\b`` inside ``x \bdone\b y``), it is decided while translating; at the start or end of
  the pattern it becomes a test of the character just outside the match (or the start/end of the text).
  Anywhere else (next to ``.``, ``[^x]``, an optional part, ...) the pattern is refused. ``\B`` is accepted
  only next to a word character of the pattern (Python versions disagree about ``\B`` on empty text).
* IGNORECASE: RE2's case folding agrees with Python's except for the Turkish dotted and dotless i (Python
  matches i, I, U+0130 and U+0131 with one another), which are spelled out. Python does not case-fold
  ``\w``/``\d``/``\s`` inside a class, so they are kept out of RE2's folding. A negated class mixing them with
  letters (``(?i)[^\wé]``) is refused.
* Lookahead, lookbehind, backreferences, conditional groups, possessive quantifiers and atomic groups have no
  linear-time equivalent and are refused; so are the ASCII flag ``(?a)`` and repeat counts above 1000 (RE2's
  limit), and patterns too large for RE2's memory budget.

A text with lone surrogates (which UTF-8 cannot encode, nor a checkpoint store) is searched with each of them
replaced by U+FFFD.
"""

from __future__ import annotations

import array
import bisect
import functools
import importlib
import re
import sys
from typing import Any, Final

import re2

__all__ = ["LinearPattern", "UnsupportedPattern", "translate"]

#: Python's regex parser (``re._parser`` since 3.11, ``sre_parse`` before): the tree it builds *is* Python's
#: reading of a pattern. Anything in it that this module does not know is refused, never guessed.
_parser: Any = importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")

_MAXREPEAT: Final[int] = int(_parser.MAXREPEAT)
_RE2_MAX_REPEAT: Final = 1000
#: RE2 refuses programs beyond its memory budget anyway; stop writing long before that.
_MAX_TRANSLATED_CHARS: Final = 1 << 20
_I: Final = int(re.IGNORECASE)
_M: Final = int(re.MULTILINE)
_S: Final = int(re.DOTALL)
_REFUSED_FLAGS: Final = int(re.ASCII) | int(re.LOCALE)
_LAST_CHAR: Final = 0x10FFFF
_NEVER: Final = r"[^\x{0}-\x{10ffff}]"  # an empty class: matches nothing
#: I, i, U+0130 (I with dot above), U+0131 (dotless i): one case class for Python (the simple lowercase of
#: U+0130 is i; i and U+0131 are listed as equivalents), but RE2 folds only I with i (the others fold
#: together only under Turkic rules, which RE2 does not apply).
_TURKISH_I: Final = (0x49, 0x69, 0x130, 0x131)

# The character on one side of a position, as far as \b is concerned.
_WORD: Final = "word"  # a word character
_NONWORD: Final = "nonword"  # a non-word character, or the start/end of the text
_EDGE: Final = "edge"  # the pattern's own start/end: a character outside the match
_UNKNOWN: Final = "unknown"

_REFUSED_OPS: Final[dict[str, str]] = {
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group (?(...)...)",
    "POSSESSIVE_REPEAT": "a possessive quantifier",
    "ATOMIC_GROUP": "an atomic group (?>...)",
}
_CATEGORY_NAMES: Final[dict[str, tuple[str, bool]]] = {
    "CATEGORY_DIGIT": ("digit", False),
    "CATEGORY_NOT_DIGIT": ("digit", True),
    "CATEGORY_SPACE": ("space", False),
    "CATEGORY_NOT_SPACE": ("space", True),
    "CATEGORY_WORD": ("word", False),
    "CATEGORY_NOT_WORD": ("word", True),
}
_CATEGORY_KINDS: Final[dict[str, str]] = {
    "CATEGORY_WORD": _WORD,
    "CATEGORY_DIGIT": _WORD,
    "CATEGORY_NOT_WORD": _NONWORD,
    "CATEGORY_SPACE": _NONWORD,
}
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


class UnsupportedPattern(ValueError):
    """The pattern cannot run on RE2 with the meaning it has for Python's ``re``; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not supported on the linear-time engine: {reason}")
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Python's character sets, from the running Python itself
# --------------------------------------------------------------------------------------------------

_Ranges = tuple[tuple[int, int], ...]


def _complement(ranges: _Ranges) -> _Ranges:
    out: list[tuple[int, int]] = []
    start = 0
    for low, high in ranges:
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= _LAST_CHAR:
        out.append((start, _LAST_CHAR))
    return tuple(out)


@functools.cache
def _category_ranges() -> dict[str, _Ranges]:
    """``\\d``, ``\\s``, ``\\w`` of this Python (str patterns) and their complements, as code point ranges."""
    every = array.array("I", range(_LAST_CHAR + 1)).tobytes().decode("utf-32-le", "surrogatepass")
    tables: dict[str, _Ranges] = {}
    for name, pattern in (("digit", r"\d+"), ("space", r"\s+"), ("word", r"\w+")):
        positive = tuple((m.start(), m.end() - 1) for m in re.finditer(pattern, every))
        tables[name] = positive
        tables["not_" + name] = _complement(positive)
    return tables


@functools.cache
def _word_starts() -> list[int]:
    return [low for low, _ in _category_ranges()["word"]]


def _range_word_kind(low: int, high: int) -> str:
    """_WORD / _NONWORD when every character of ``low..high`` is one, else _UNKNOWN."""
    words, starts = _category_ranges()["word"], _word_starts()
    last = bisect.bisect_right(starts, high) - 1  # the last word range starting at or before ``high``
    if last < 0 or words[last][1] < low:
        return _NONWORD
    if words[last][0] <= low and words[last][1] >= high:
        return _WORD
    return _UNKNOWN


def _case_fixes() -> dict[int, tuple[int, ...]] | None:
    """Python's extra IGNORECASE equivalences (beyond equal simple lowercase), or None if not found."""
    if sys.version_info >= (3, 11):
        name, attr = "re._casefix", "_EXTRA_CASES"
    else:
        name, attr = "sre_compile", "_ignorecase_fixes"
    try:
        fixes = getattr(importlib.import_module(name), attr)
    except (ImportError, AttributeError):
        return None
    return fixes if isinstance(fixes, dict) else None


@functools.cache
def _fold_mixed_chars() -> tuple[int, ...] | None:
    """Characters that IGNORECASE makes match both word and non-word characters, sorted (None: unknown).

    Equal simple lowercase never mixes the two, only Python's extra equivalences can (U+0345, a combining
    mark, is equivalent to the Greek iota). The scan runs once, and only for ``\\b`` beside a cased part.
    """
    fixes = _case_fixes()
    tolower = getattr(importlib.import_module("_sre"), "unicode_tolower", None)
    if fixes is None or tolower is None:
        return None

    def is_word(char: int) -> bool:
        return _range_word_kind(char, char) == _WORD

    mixed = {low for low, extra in fixes.items() if any(is_word(other) != is_word(low) for other in extra)}
    if not mixed:
        return ()
    return tuple(char for char in range(_LAST_CHAR + 1) if tolower(char) in mixed)


def _folds_mixed(low: int, high: int) -> bool:
    """Whether some character of ``low..high`` matches, ignoring case, both word and non-word characters."""
    if high <= 0x7F:  # ASCII letters fold only with letters (K with the Kelvin sign, s with the long s, ...)
        return False
    mixed = _fold_mixed_chars()
    if mixed is None:
        return True  # fail closed: without Python's tables nothing beyond ASCII is known to be safe
    index = bisect.bisect_left(mixed, low)
    return index < len(mixed) and mixed[index] <= high


@functools.cache
def _category_text(name: str) -> str:
    table, negated = _CATEGORY_NAMES[name]
    return _ranges_text(_category_ranges()[("not_" if negated else "") + table])


def _char_text(char: int) -> str:
    """One character in RE2 syntax: ASCII letters and digits as they are, anything else as ``\\x{hex}``."""
    return chr(char) if char < 0x80 and chr(char).isalnum() else rf"\x{{{char:x}}}"


def _ranges_text(ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> str:
    return "".join(
        _char_text(low) if low == high else f"{_char_text(low)}-{_char_text(high)}" for low, high in ranges
    )


def _is_cased(char: int) -> bool:
    text = chr(char)
    return text.lower() != text or text.upper() != text or text.casefold() != text


# --------------------------------------------------------------------------------------------------
# Translation
# --------------------------------------------------------------------------------------------------


def _op(node: Any) -> str:
    return str(getattr(node, "name", node))


def _combine(first: str, second: str) -> str:
    return first if first == second else _UNKNOWN


def _blocked(kind: str) -> str:
    """The kind seen through a zero-width item: it keeps word/non-word, but no longer stands at the edge."""
    return _UNKNOWN if kind == _EDGE else kind


def _optional_repeat(item: tuple[Any, Any]) -> bool:
    return _op(item[0]) in ("MAX_REPEAT", "MIN_REPEAT") and item[1][0] == 0


def _subpattern_flags(av: Any, flags: int) -> int:
    _group, add, remove, _body = av
    new = (flags | int(add)) & ~int(remove)
    if new & _REFUSED_FLAGS:
        raise UnsupportedPattern("the ASCII flag (?a)")
    return new


def _quantifier(low: int, high: int) -> str:
    if high == _MAXREPEAT:
        return {0: "*", 1: "+"}.get(low, f"{{{low},}}")
    if (low, high) == (0, 1):
        return "?"
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


class _Translator:
    """One translation: memoized side analysis (linear in the pattern) and the size of what was written."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, str, int], str] = {}
        self._first: dict[tuple[int, str, int], str] = {}
        self._size = 0

    def _grow(self, text: str) -> str:
        self._size += len(text)
        if self._size > _MAX_TRANSLATED_CHARS:
            raise UnsupportedPattern("too large for RE2 once its character classes are spelled out")
        return text

    # -- what is on each side of a position (for \b) ---------------------------------------------

    def _char_kind(self, op: str, av: Any, flags: int) -> str:
        icase = bool(flags & _I)
        if op == "LITERAL":
            return _UNKNOWN if icase and _folds_mixed(av, av) else _range_word_kind(av, av)
        if op != "IN":
            return _UNKNOWN  # ANY, NOT_LITERAL: either kind
        negated = bool(av) and _op(av[0][0]) == "NEGATE"
        members = av[1:] if negated else av
        if negated:  # the complement of a set holding every (non-)word character has only the other kind
            names = {_op(value) for op_, value in members if _op(op_) == "CATEGORY"}
            if "CATEGORY_WORD" in names and "CATEGORY_NOT_WORD" not in names:
                return _NONWORD
            if "CATEGORY_NOT_WORD" in names and "CATEGORY_WORD" not in names:
                return _WORD
            return _UNKNOWN
        kind: str | None = None
        for member_op, value in members:
            name = _op(member_op)
            if name in ("LITERAL", "RANGE"):
                low, high = (value, value) if name == "LITERAL" else value
                part = _UNKNOWN if icase and _folds_mixed(low, high) else _range_word_kind(low, high)
            elif name == "CATEGORY":
                part = _CATEGORY_KINDS.get(_op(value), _UNKNOWN)
            else:
                part = _UNKNOWN
            kind = part if kind is None else _combine(kind, part)
        return kind or _UNKNOWN

    def _seq_last(self, sub: Any, before: str, flags: int) -> str:
        key = (id(sub), before, flags)
        if key not in self._last:
            kind = before
            for item in sub.data:
                kind = self._item_last(item, kind, flags)
            self._last[key] = kind
        return self._last[key]

    def _seq_first(self, sub: Any, after: str, flags: int) -> str:
        key = (id(sub), after, flags)
        if key not in self._first:
            kind = after
            for item in reversed(sub.data):
                kind = self._item_first(item, kind, flags)
            self._first[key] = kind
        return self._first[key]

    def _item_last(self, item: tuple[Any, Any], before: str, flags: int) -> str:
        """The kind of the character just before the position after ``item``, given the one before it."""
        op, av = _op(item[0]), item[1]
        if op in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):
            return self._char_kind(op, av, flags)
        if op == "AT":
            return _NONWORD if _op(av) in ("AT_BEGINNING", "AT_BEGINNING_STRING") else _blocked(before)
        if op == "SUBPATTERN":
            return self._seq_last(av[3], before, _subpattern_flags(av, flags))
        if op == "BRANCH":
            kinds = [self._seq_last(alt, before, flags) for alt in av[1]]
            return functools.reduce(_combine, kinds)
        if op in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, body = av
            if high == 0:
                return before
            once = self._seq_last(body, before, flags)
            kind = once if high == 1 or self._seq_last(body, once, flags) == once else _UNKNOWN
            return kind if low > 0 else _combine(kind, before)
        return _UNKNOWN

    def _item_first(self, item: tuple[Any, Any], after: str, flags: int) -> str:
        """The kind of the character just after the position before ``item``, given the one after it."""
        op, av = _op(item[0]), item[1]
        if op in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):
            return self._char_kind(op, av, flags)
        if op == "AT":
            return _NONWORD if _op(av) in ("AT_END", "AT_END_STRING") else _blocked(after)
        if op == "SUBPATTERN":
            return self._seq_first(av[3], after, _subpattern_flags(av, flags))
        if op == "BRANCH":
            kinds = [self._seq_first(alt, after, flags) for alt in av[1]]
            return functools.reduce(_combine, kinds)
        if op in ("MAX_REPEAT", "MIN_REPEAT"):
            low, high, body = av
            if high == 0:
                return after
            once = self._seq_first(body, after, flags)
            kind = once if high == 1 or self._seq_first(body, once, flags) == once else _UNKNOWN
            return kind if low > 0 else _combine(kind, after)
        return _UNKNOWN

    # -- writing RE2 syntax -------------------------------------------------------------------------

    def sequence(self, sub: Any, before: str, after: str, flags: int) -> str:
        items = list(sub.data)
        # For a search, an optional repeat at the very start or end of the pattern changes nothing: drop it,
        # so that what it surrounded (a \b, a $) stands at the edge.
        if before == _EDGE:
            while items and _optional_repeat(items[0]):
                items.pop(0)
        if after == _EDGE:
            while items and _optional_repeat(items[-1]):
                items.pop()
        kinds_before = [before]
        for item in items:
            kinds_before.append(self._item_last(item, kinds_before[-1], flags))
        kinds_after = [after] * (len(items) + 1)
        for index in range(len(items) - 1, -1, -1):
            kinds_after[index] = self._item_first(items[index], kinds_after[index + 1], flags)
        return "".join(
            self._item(item, kinds_before[index], kinds_after[index + 1], flags)
            for index, item in enumerate(items)
        )

    def _item(self, item: tuple[Any, Any], before: str, after: str, flags: int) -> str:
        op, av = _op(item[0]), item[1]
        if op == "LITERAL":
            if flags & _I and av in _TURKISH_I:
                return self._grow(f"[{_ranges_text([(c, c) for c in _TURKISH_I])}]")
            return self._grow(_ranges_text([(av, av)]))
        if op == "NOT_LITERAL":
            chars = _TURKISH_I if flags & _I and av in _TURKISH_I else (av,)
            return self._grow(f"[^{_ranges_text([(c, c) for c in chars])}]")
        if op == "ANY":
            return "(?s:.)" if flags & _S else r"[^\n]"
        if op == "IN":
            return self._grow(self._class(av, flags))
        if op == "BRANCH":
            return "(?:" + "|".join(self.sequence(alt, before, after, flags) for alt in av[1]) + ")"
        if op == "SUBPATTERN":
            inner_flags = _subpattern_flags(av, flags)
            inner = self.sequence(av[3], before, after, inner_flags)
            if (inner_flags ^ flags) & _I:
                return ("(?i:" if inner_flags & _I else "(?-i:") + inner + ")"
            return "(?:" + inner + ")"
        if op in ("MAX_REPEAT", "MIN_REPEAT"):  # lazy or greedy: the same texts match somewhere
            return self._repeat(av, before, after, flags)
        if op == "AT":
            return self._at(_op(av), before, after, flags)
        if op in ("ASSERT", "ASSERT_NOT"):
            direction = "lookbehind" if av[0] < 0 else "lookahead"
            raise UnsupportedPattern(f"a {'negative ' if op == 'ASSERT_NOT' else ''}{direction} assertion")
        raise UnsupportedPattern(_REFUSED_OPS.get(op, f"the construct {op}"))

    def _repeat(self, av: Any, before: str, after: str, flags: int) -> str:
        low, high, body = av
        if high == 0:
            return ""
        if low > _RE2_MAX_REPEAT or (high != _MAXREPEAT and high > _RE2_MAX_REPEAT):
            raise UnsupportedPattern(f"a repeat count above {_RE2_MAX_REPEAT}")
        body_before, body_after = before, after
        if high > 1:  # a later round follows an earlier one: both must leave the same kind of character
            if self._seq_last(body, before, flags) != before:
                body_before = _UNKNOWN
            if self._seq_first(body, after, flags) != after:
                body_after = _UNKNOWN
        inner = self.sequence(body, body_before, body_after, flags)
        return f"(?:{inner}){_quantifier(low, high)}" if inner else ""

    def _class(self, items: Any, flags: int) -> str:
        negated = bool(items) and _op(items[0][0]) == "NEGATE"
        members = items[1:] if negated else items
        ranges: list[tuple[int, int]] = []
        categories: list[str] = []
        for member_op, value in members:
            name = _op(member_op)
            if name == "LITERAL":
                ranges.append((value, value))
            elif name == "RANGE":
                ranges.append((value[0], value[1]))
            elif name == "CATEGORY" and _op(value) in _CATEGORY_NAMES:
                categories.append(_op(value))
            else:
                raise UnsupportedPattern(f"the class member {name}")
        icase = bool(flags & _I)
        if icase and any(low <= c <= high for c in _TURKISH_I for low, high in ranges):
            ranges.extend((c, c) for c in _TURKISH_I)
        negate = "^" if negated else ""
        letters = _ranges_text(ranges)
        spelled = "".join(_category_text(name) for name in categories)
        if not icase or not categories:
            return f"[{negate}{letters}{spelled}]"
        # Python tests \d \s \w on the character itself, and case-folds only the literal members.
        if not ranges:
            return f"(?-i:[{negate}{spelled}])"
        if not negated:
            return f"(?:(?-i:[{spelled}])|[{letters}])"
        if all(high - low < 256 and not any(map(_is_cased, range(low, high + 1))) for low, high in ranges):
            return f"(?-i:[^{letters}{spelled}])"
        raise UnsupportedPattern(r"a negated class mixing \d, \s or \w with letters under IGNORECASE")

    def _at(self, at: str, before: str, after: str, flags: int) -> str:
        if at == "AT_BEGINNING":
            return "(?m:^)" if flags & _M else r"\A"
        if at == "AT_BEGINNING_STRING":
            return r"\A"
        if at == "AT_END_STRING":
            return r"\z"
        if at == "AT_END":
            if flags & _M:
                return "(?m:$)"
            if after != _EDGE:
                raise UnsupportedPattern(
                    "$ followed by more of the pattern (it matches before a final newline)"
                )
            return r"(?:\n?\z)"
        if at in ("AT_BOUNDARY", "AT_NON_BOUNDARY"):
            return self._boundary(at == "AT_BOUNDARY", before, after)
        raise UnsupportedPattern(f"the assertion {at}")

    def _boundary(self, boundary: bool, before: str, after: str) -> str:
        name = r"\b" if boundary else r"\B"
        known = (_WORD, _NONWORD)
        if before not in known and after not in known:
            raise UnsupportedPattern(f"{name} without a known word or non-word character beside it")
        if _UNKNOWN in (before, after):
            raise UnsupportedPattern(f"{name} next to a part that can be a word or a non-word character")
        if not boundary and _WORD not in (before, after):
            raise UnsupportedPattern(r"\B without a word character of the pattern beside it")
        word = _category_text("CATEGORY_WORD")
        nonword = _category_text("CATEGORY_NOT_WORD")
        if before in known and after in known:
            return "" if (before != after) == boundary else _NEVER
        inside = after if before == _EDGE else before
        outside_word = (inside == _NONWORD) == boundary  # the character outside the match must be a word one
        if outside_word:
            return self._grow(f"(?-i:[{word}])")
        if before == _EDGE:
            return self._grow(rf"(?:\A|(?-i:[{nonword}]))")
        return self._grow(rf"(?:(?-i:[{nonword}])|\z)")


def translate(pattern: str, flags: int = 0) -> str:
    """RE2 syntax that matches somewhere in a text exactly when ``re.search(pattern, text, flags)`` does.

    Raises ``re.error`` for a pattern Python rejects and :class:`UnsupportedPattern` for one that cannot run
    on RE2 with Python's meaning.
    """
    parsed = _parser.parse(pattern, flags)  # re.error for invalid patterns, as re.compile
    top = int(parsed.state.flags)
    if top & _REFUSED_FLAGS:
        raise UnsupportedPattern("the ASCII flag (?a)")
    try:
        body = _Translator().sequence(parsed, _EDGE, _EDGE, top)
    except RecursionError:
        raise UnsupportedPattern("nested too deeply") from None
    return ("(?i)" if top & _I else "") + body


class LinearPattern:
    """A Python regex compiled for RE2: ``search(text)`` is ``re.search(pattern, text, flags) is not None``,
    in time linear in the text."""

    __slots__ = ("_regexp", "flags", "pattern", "translated")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern = pattern
        self.flags = flags
        self.translated = translate(pattern, flags)
        options = re2.Options()
        options.log_errors = False  # a refused pattern is reported by the exception, not on stderr
        options.never_capture = True
        try:
            self._regexp = re2.compile(self.translated, options)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else exc
            text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
            raise UnsupportedPattern(f"RE2 cannot compile it ({text})") from None

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text``."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            data = _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")
        return self._regexp.search(data) is not None

    def __reduce__(self) -> tuple[type[LinearPattern], tuple[str, int]]:
        return (LinearPattern, (self.pattern, self.flags))

    def __repr__(self) -> str:
        return f"LinearPattern({self.pattern!r}, {self.flags})"
