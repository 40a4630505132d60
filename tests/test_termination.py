"""Tests for checkpoint_system.termination.

Conditions must round-trip exactly through JSON, and ``describe_termination`` must recognize common
lambda shapes (from source and from bytecode) without ever calling them. The tests themselves do call
the user lambdas, to prove each detection agrees with the lambda on a battery of messages.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import pickle
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import autogen
import orjson
import pytest
from autogen.code_utils import content_str

from checkpoint_system.errors import InvalidCheckpointError, TerminationCaptureWarning
from checkpoint_system.termination import (
    AllOf,
    AnyOf,
    ContainsText,
    EndsWithText,
    EqualsText,
    MatchesRegex,
    TerminationCondition,
    all_of,
    any_of,
    condition_from_spec,
    describe_termination,
    terminate_endswith,
    terminate_exact,
    terminate_on,
    terminate_regex,
    termination_from_record,
)

Message = dict[str, Any]

_TEXTS = [
    "",
    " ",
    "X",
    "x",
    "X ",
    "X\n",
    "  X",
    "\tX\t",
    "aXb",
    "Y",
    "y",
    "XY",
    "YX",
    "X\nY",
    "A",
    "B",
    "C",
    "AC",
    "BC",
    "ABC",
    "aab",
    "AAB",
    "line1\nab",
    "TERMINATE",
    "terminate",
    "Terminate",
    " TERMINATE ",
    "TERMINATE.",
    "done TERMINATE",
    "TERMINATE now",
    "SOLUTION_FOUND",
    "the SOLUTION_FOUND here",
    "ß",
]
MESSAGES: list[Message] = [{"content": text} for text in _TEXTS] + [
    {},
    {"content": None},
    {"content": []},
    {"content": [{"type": "text", "text": "X"}]},
    {"content": [{"type": "text", "text": "TERMINATE"}]},
    {"content": [{"type": "text", "text": "aXb"}, {"type": "image_url", "image_url": {"url": "http://x"}}]},
    {"role": "assistant", "name": "bob", "content": "X"},
    {"role": "tool", "content": "TERMINATE", "tool_call_id": "1"},
]


def agree(fn: Callable[[Message], Any], cond: TerminationCondition) -> None:
    """The detected condition gives the lambda's truth value wherever the lambda returns at all."""
    compared = 0
    for message in MESSAGES:
        try:
            expected = bool(fn(message))
        except Exception:  # the lambda itself crashes on this message: nothing to agree with
            continue
        assert cond(message) is expected, (message, cond)
        compared += 1
    assert compared >= 10


def fresh(src: str, **namespace: Any) -> Callable[[Message], Any]:
    """Build a function the way ``python -`` or ``exec`` would: no source is available for it."""
    ns: dict[str, Any] = {"re": re, "content_str": content_str, **namespace}
    exec(compile(f"fn = {src}", "<stdin>", "exec"), ns)
    fn = ns["fn"]
    assert callable(fn)
    return fn  # type: ignore[no-any-return]


def spec_of(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in ("detected_from", "source")}


@pytest.fixture
def quiet() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def capture_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, TerminationCaptureWarning)]


# --------------------------------------------------------------------------------------------------
# Conditions and specs
# --------------------------------------------------------------------------------------------------

ALL_CONDITIONS: list[TerminationCondition] = [
    ContainsText("TERMINATE"),
    ContainsText("done", case_sensitive=False),
    ContainsText("X", raw_content=True),
    EndsWithText("TERMINATE"),
    EndsWithText("end", case_sensitive=False, rstrip=False, raw_content=True),
    EqualsText("TERMINATE"),
    EqualsText("", strip=True),
    EqualsText("Bye", case_sensitive=False, strip=True, raw_content=True),
    MatchesRegex(r"\bDONE\b"),
    MatchesRegex(r"^final:.*$", re.IGNORECASE | re.MULTILINE | re.DOTALL, raw_content=True),
    AnyOf(ContainsText("A"), EqualsText("B")),
    AllOf(ContainsText("A"), AnyOf(EndsWithText("B"), MatchesRegex("c+"))),
]


@pytest.mark.parametrize("cond", ALL_CONDITIONS, ids=repr)
def test_spec_round_trip_is_exact(cond: TerminationCondition) -> None:
    spec = cond.to_spec()
    assert spec["kind"] == cond.kind
    assert condition_from_spec(spec) == cond
    assert condition_from_spec(json.loads(json.dumps(spec))) == cond
    assert condition_from_spec(orjson.loads(orjson.dumps(spec))) == cond
    assert condition_from_spec(spec).to_spec() == spec
    assert describe_termination(cond) == spec
    assert termination_from_record(describe_termination(cond)) == cond


@pytest.mark.parametrize("cond", ALL_CONDITIONS, ids=repr)
def test_conditions_are_hashable_frozen_and_copyable(cond: TerminationCondition) -> None:
    assert hash(cond) == hash(condition_from_spec(cond.to_spec()))
    assert len({cond, condition_from_spec(cond.to_spec())}) == 1
    assert pickle.loads(pickle.dumps(cond)) == cond
    assert copy.deepcopy(cond) == cond
    with pytest.raises(AttributeError):
        cond.text = "other"  # type: ignore[attr-defined]
    for message in MESSAGES:
        assert isinstance(cond(message), bool)
        assert pickle.loads(pickle.dumps(cond))(message) == cond(message)


def test_content_normalization() -> None:
    cond = ContainsText("X")
    assert cond({"content": "aXb"})
    assert not cond({"content": None})
    assert not cond({})
    assert cond(
        {"content": [{"type": "text", "text": "X"}, {"type": "image_url", "image_url": {"url": "u"}}]}
    )
    assert not cond({"content": [{"type": "image_url", "image_url": {"url": "X"}}]})
    assert cond({"content": [{"type": "mystery", "text": "X"}]})  # content_str rejects it: text parts used
    assert not cond({"content": 42})
    raw = ContainsText("X", raw_content=True)
    assert raw({"content": "aXb"})
    assert not raw({"content": [{"type": "text", "text": "X"}]})
    assert not raw({"content": None})
    assert EqualsText("")({"content": None})
    assert EqualsText("", raw_content=True)({})
    assert not EqualsText("", raw_content=True)({"content": []})


def test_condition_semantics() -> None:
    assert ContainsText("done", case_sensitive=False)({"content": "All DONE."})
    assert not ContainsText("done")({"content": "All DONE."})
    assert EndsWithText("TERMINATE")({"content": "ok TERMINATE \n"})
    assert not EndsWithText("TERMINATE", rstrip=False)({"content": "ok TERMINATE \n"})
    assert EndsWithText("terminate", case_sensitive=False)({"content": "ok TERMINATE"})
    assert EqualsText("TERMINATE")({"content": "TERMINATE"})
    assert not EqualsText("TERMINATE")({"content": " TERMINATE"})
    assert EqualsText("TERMINATE", strip=True)({"content": " TERMINATE\n"})
    assert EqualsText("terminate", case_sensitive=False)({"content": "TERMINATE"})
    assert MatchesRegex(r"^done$", re.MULTILINE | re.IGNORECASE)({"content": "x\nDone\ny"})
    assert not MatchesRegex(r"^done$")({"content": "x\nDone\ny"})
    either = AnyOf(ContainsText("A"), ContainsText("B"))
    both = AllOf(ContainsText("A"), ContainsText("B"))
    assert either({"content": "B"}) and not either({"content": "C"})
    assert both({"content": "AB"}) and not both({"content": "A"})


def test_factories() -> None:
    assert terminate_on("SOLUTION_FOUND") == ContainsText("SOLUTION_FOUND")
    assert terminate_on("A", "B", case_sensitive=False) == AnyOf(
        ContainsText("A", case_sensitive=False), ContainsText("B", case_sensitive=False)
    )
    assert terminate_regex("a+", re.IGNORECASE) == MatchesRegex("a+", re.IGNORECASE)
    assert terminate_regex("a+").to_spec()["flags"] == 0
    assert type(terminate_regex("a+", re.IGNORECASE).to_spec()["flags"]) is int
    assert terminate_endswith("END") == EndsWithText("END")
    assert terminate_exact("TERMINATE") == EqualsText("TERMINATE")
    a, b = ContainsText("a"), ContainsText("b")
    assert any_of(a, b) == AnyOf(a, b)
    assert all_of(a, b) == AllOf(a, b)
    assert any_of(a) == a and all_of(a) == a
    with pytest.raises(ValueError):
        terminate_on()


@pytest.mark.parametrize(
    ("factory", "error"),
    [
        (lambda: ContainsText(""), ValueError),
        (lambda: ContainsText(1), TypeError),  # type: ignore[arg-type]
        (lambda: ContainsText("x", case_sensitive=1), TypeError),  # type: ignore[arg-type]
        (lambda: EndsWithText(""), ValueError),
        (lambda: EqualsText(None), TypeError),  # type: ignore[arg-type]
        (lambda: MatchesRegex("("), re.error),
        (lambda: MatchesRegex("a", re.VERBOSE), ValueError),
        (lambda: MatchesRegex("a", True), TypeError),
        (lambda: AnyOf(), ValueError),
        (lambda: AllOf(lambda m: True), TypeError),  # type: ignore[arg-type]
    ],
)
def test_constructors_validate(factory: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        factory()


HOSTILE_SPECS: list[object] = [
    None,
    [],
    "contains",
    {},
    {"kind": None},
    {"kind": "custom"},
    {"kind": "none"},
    {"kind": "__import__('os').system('echo pwned')"},
    {"kind": "python", "code": "lambda m: True"},
    {"kind": "contains"},
    {"kind": "contains", "text": 5},
    {"kind": "contains", "text": ["X"]},
    {"kind": "contains", "text": ""},
    {"kind": "contains", "text": "X", "case_sensitive": "yes"},
    {"kind": "contains", "text": "X", "case_sensitive": 1},
    {"kind": "contains", "text": "X", "eval": "1+1"},
    {"kind": "endswith", "text": None},
    {"kind": "equals", "text": "X", "strip": None},
    {"kind": "regex", "pattern": "("},
    {"kind": "regex", "pattern": 1},
    {"kind": "regex", "pattern": "a", "flags": int(re.VERBOSE)},
    {"kind": "regex", "pattern": "a", "flags": int(re.ASCII)},
    {"kind": "regex", "pattern": "a", "flags": -1},
    {"kind": "regex", "pattern": "a", "flags": True},
    {"kind": "regex", "pattern": "a", "flags": 2.0},
    {"kind": "regex", "pattern": "a", "flags": "re.I"},
    {"kind": "any_of"},
    {"kind": "any_of", "conditions": []},
    {"kind": "any_of", "conditions": {"kind": "contains", "text": "X"}},
    {"kind": "all_of", "conditions": [{"kind": "contains", "text": "X"}, {"kind": "bogus"}]},
    {"kind": "all_of", "conditions": ["contains"]},
]


@pytest.mark.parametrize("spec", HOSTILE_SPECS, ids=repr)
def test_hostile_specs_are_rejected(spec: Any) -> None:
    with pytest.raises(InvalidCheckpointError):
        condition_from_spec(spec)


def test_deeply_nested_spec_is_rejected() -> None:
    spec: dict[str, Any] = {"kind": "contains", "text": "X"}
    for _ in range(100):
        spec = {"kind": "any_of", "conditions": [spec]}
    with pytest.raises(InvalidCheckpointError, match="nested deeper"):
        condition_from_spec(spec)


def test_error_names_the_bad_field() -> None:
    spec = {
        "kind": "all_of",
        "conditions": [{"kind": "contains", "text": "X"}, {"kind": "regex", "pattern": "("}],
    }
    with pytest.raises(InvalidCheckpointError, match=r"conditions\[1\]"):
        condition_from_spec(spec)


def test_optional_fields_default() -> None:
    assert condition_from_spec({"kind": "contains", "text": "X"}) == ContainsText("X")
    assert condition_from_spec({"kind": "regex", "pattern": "x"}) == MatchesRegex("x")


def test_termination_from_record() -> None:
    assert termination_from_record({"kind": "none"}) is None
    assert termination_from_record({"kind": "custom", "qualname": "f", "module": "m"}) is None
    record = {**EqualsText("TERMINATE").to_spec(), "detected_from": "ag2_default"}
    assert termination_from_record(record) == EqualsText("TERMINATE")
    record = {**ContainsText("X").to_spec(), "detected_from": "source", "source": 'lambda m: "X" in m'}
    assert termination_from_record(record) == ContainsText("X")
    with pytest.raises(InvalidCheckpointError):
        termination_from_record({**ContainsText("X").to_spec(), "detected_from": "magic"})
    with pytest.raises(InvalidCheckpointError):
        termination_from_record({**ContainsText("X").to_spec(), "source": 3})
    with pytest.raises(InvalidCheckpointError):
        termination_from_record({"kind": "lambda"})
    with pytest.raises(InvalidCheckpointError):
        termination_from_record("TERMINATE")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Detection of lambda shapes: from source (a real module file) and from bytecode (exec'd code)
# --------------------------------------------------------------------------------------------------

CI = {"case_sensitive": False}
RAW = {"raw_content": True}

SHAPES: list[tuple[str, TerminationCondition]] = [
    ('lambda x: "X" in x.get("content", "")', ContainsText("X", **RAW)),
    ('lambda x: "X" in x["content"]', ContainsText("X", **RAW)),
    ('lambda msg: "X" in (msg.get("content") or "")', ContainsText("X", **RAW)),
    ('lambda x: "X" in (x["content"] or "")', ContainsText("X", **RAW)),
    ('lambda x: "X" in content_str(x.get("content"))', ContainsText("X")),
    ('lambda x: "x" in x.get("content", "").lower()', ContainsText("x", **CI, **RAW)),
    ('lambda x: "TERMINATE" in x["content"].upper()', ContainsText("TERMINATE", **CI, **RAW)),
    ('lambda x: "terminate" in content_str(x.get("content")).lower()', ContainsText("terminate", **CI)),
    ('lambda x: "X" in x["content"].strip()', ContainsText("X", **RAW)),
    ('lambda x: x["content"].find("X") != -1', ContainsText("X", **RAW)),
    ('lambda x: x["content"].find("X") >= 0', ContainsText("X", **RAW)),
    ('lambda x: x.get("content", "").rstrip().endswith("X")', EndsWithText("X", **RAW)),
    ('lambda x: x.get("content", "").strip().endswith("X")', EndsWithText("X", **RAW)),
    ('lambda x: x.get("content", "").endswith("X")', EndsWithText("X", rstrip=False, **RAW)),
    (
        'lambda x: x["content"].rstrip().lower().endswith("terminate")',
        EndsWithText("terminate", **CI, **RAW),
    ),
    ('lambda x: x["content"].rstrip().endswith(" X")', EndsWithText(" X", **RAW)),
    (
        'lambda x: x.get("content", "").endswith(("X", "Y"))',
        AnyOf(EndsWithText("X", rstrip=False, **RAW), EndsWithText("Y", rstrip=False, **RAW)),
    ),
    (
        'lambda x: x.get("content", "") and x.get("content", "").rstrip().endswith("TERMINATE")',
        EndsWithText("TERMINATE", **RAW),
    ),
    ('lambda x: x.get("content") == "X"', EqualsText("X", **RAW)),
    ('lambda x: "X" == x["content"]', EqualsText("X", **RAW)),
    ('lambda x: x.get("content", "").strip() == "TERMINATE"', EqualsText("TERMINATE", strip=True, **RAW)),
    ('lambda x: x["content"].lower() == "terminate"', EqualsText("terminate", **CI, **RAW)),
    ('lambda x: content_str(x.get("content")) == "X"', EqualsText("X")),
    ('lambda x: content_str(x["content"]) == "TERMINATE"', EqualsText("TERMINATE")),
    ('lambda x: re.search("a+b", x["content"])', MatchesRegex("a+b", **RAW)),
    ('lambda x: re.search(r"^ab$", x.get("content", ""), re.I | re.M)', MatchesRegex("^ab$", 10, **RAW)),
    (
        'lambda x: re.search("x", content_str(x.get("content")), flags=re.IGNORECASE) is not None',
        MatchesRegex("x", re.IGNORECASE),
    ),
    ('lambda x: bool(re.search("TERMINATE", x["content"]))', MatchesRegex("TERMINATE", **RAW)),
    (
        'lambda x: "X" in x["content"] or "Y" in x["content"]',
        AnyOf(ContainsText("X", **RAW), ContainsText("Y", **RAW)),
    ),
    (
        'lambda x: "A" in x["content"] and "C" in x["content"]',
        AllOf(ContainsText("A", **RAW), ContainsText("C", **RAW)),
    ),
    (
        'lambda x: ("A" in x["content"] or "B" in x["content"]) and "C" in x["content"]',
        AllOf(AnyOf(ContainsText("A", **RAW), ContainsText("B", **RAW)), ContainsText("C", **RAW)),
    ),
    (
        'lambda x: "A" in x["content"] and "B" in x["content"] or x["content"].endswith("X")',
        AnyOf(
            AllOf(ContainsText("A", **RAW), ContainsText("B", **RAW)), EndsWithText("X", rstrip=False, **RAW)
        ),
    ),
    (
        'lambda x: x.get("content") is not None and "X" in x["content"]',
        ContainsText("X", **RAW),
    ),
    ('lambda x: "content" in x and "X" in x["content"]', ContainsText("X", **RAW)),
    (
        'lambda x: isinstance(x.get("content"), str) and x["content"].rstrip().endswith("TERMINATE")',
        EndsWithText("TERMINATE", **RAW),
    ),
]

NOT_RECOGNIZED: list[str] = [
    'lambda x: "X" not in x["content"]',
    'lambda x: not "X" in x["content"]',
    'lambda x: len(x["content"]) > 3',
    'lambda x: x["content"].startswith("X")',
    'lambda x: "X" in str(x.get("content"))',
    'lambda x: "Terminate" in x["content"].lower()',
    'lambda x: "X" in x.get("other", "")',
    'lambda x: "X" in x.get("content", "nothing")',
    'lambda x: "X" in x["content"] or True',
    'lambda x: x.get("content")',
    'lambda x: "" in x["content"]',
    'lambda x: x.get("content") == ""',
    'lambda x: "X" in x["content"] if x else False',
    'lambda x: (c := x["content"]) and "X" in c',
    'lambda x: print(x) or "X" in x["content"]',
    'lambda x, y=1: "X" in x["content"]',
    'lambda x: re.match("X", x["content"])',
    'lambda x: re.search("X", x["content"], re.VERBOSE)',
    'lambda x: re.search("X", x["content"].lower())',
    'lambda x: x["content"].strip().endswith(" X")',
    'lambda x: x["content"].rstrip() == "X"',
    'lambda x: " X " in x["content"].strip()',
    'lambda x: x["content"].lower().upper() == "X"',
    'lambda x: "X" in x["content"][:10]',
    'lambda x: x["content"] == "X" == x["content"]',
    'lambda x: isinstance(x.get("content"), str) and content_str(x["content"]) == "X"',
    'lambda x: any(w in x["content"] for w in ("A", "B"))',
    'lambda *a: "X" in a[0]["content"]',
]


def _write_module(directory: Path, name: str, body: str) -> types.ModuleType:
    path = directory / f"{name}.py"
    path.write_text(body, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shape_module(tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    lines = ",\n    ".join(src for src, _ in SHAPES)
    negatives = ",\n    ".join(NOT_RECOGNIZED)
    body = (
        "import re\nfrom autogen.code_utils import content_str\n\n"
        f"SHAPES = [\n    {lines},\n]\n\nNOT_RECOGNIZED = [\n    {negatives},\n]\n"
    )
    return _write_module(tmp_path_factory.mktemp("shapes"), "termination_shapes", body)


@pytest.mark.parametrize(("index", "expected"), [(i, cond) for i, (_, cond) in enumerate(SHAPES)])
def test_shape_detected_from_source(
    shape_module: types.ModuleType, index: int, expected: TerminationCondition, quiet: list[Any]
) -> None:
    fn = shape_module.SHAPES[index]
    record = describe_termination(fn)
    assert record["detected_from"] == "source", record
    assert record["source"] == SHAPES[index][0]
    assert termination_from_record(record) == expected
    assert spec_of(record) == expected.to_spec()
    json.dumps(record)
    agree(fn, expected)
    assert capture_warnings(quiet) == []


@pytest.mark.parametrize(("src", "expected"), SHAPES, ids=[src for src, _ in SHAPES])
def test_shape_detected_from_bytecode(src: str, expected: TerminationCondition, quiet: list[Any]) -> None:
    fn = fresh(src)
    record = describe_termination(fn)
    assert record["detected_from"] == "bytecode", record
    assert "source" not in record
    assert termination_from_record(record) == expected
    agree(fn, expected)
    assert capture_warnings(quiet) == []


@pytest.mark.parametrize("src", NOT_RECOGNIZED)
def test_unrecognized_shapes_are_custom_from_bytecode(src: str, quiet: list[Any]) -> None:
    fn = fresh(src)
    record = describe_termination(fn)
    assert record["kind"] == "custom", record
    assert record["qualname"] == "<lambda>"
    assert "source" not in record
    assert termination_from_record(record) is None
    assert len(capture_warnings(quiet)) == 1


@pytest.mark.parametrize("index", range(len(NOT_RECOGNIZED)))
def test_unrecognized_shapes_are_custom_from_source(
    shape_module: types.ModuleType, index: int, quiet: list[Any]
) -> None:
    record = describe_termination(shape_module.NOT_RECOGNIZED[index])
    assert record["kind"] == "custom", record
    assert record["module"] == "termination_shapes"
    assert "lambda" in record["source"]  # the lambda itself, or its line when not pinned down
    assert json.loads(json.dumps(record)) == record


def test_lambda_inside_a_call_with_trailing_comma(quiet: list[Any]) -> None:
    agent = autogen.ConversableAgent(
        "a",
        llm_config=False,
        is_termination_msg=lambda x: "DONE" in x.get("content", ""),
    )
    record = describe_termination(agent._is_termination_msg)
    assert record["detected_from"] == "source"
    assert record["source"] == 'lambda x: "DONE" in x.get("content", "")'
    assert termination_from_record(record) == ContainsText("DONE", raw_content=True)


PAIR = (lambda m: "A" in m["content"], lambda m: "B" in m["content"])
SAME_STRINGS = (lambda m: "A" in m["content"], lambda m: m["content"] == "A")


def test_several_lambdas_on_one_line() -> None:
    assert termination_from_record(describe_termination(PAIR[0])) == ContainsText("A", raw_content=True)
    assert termination_from_record(describe_termination(PAIR[1])) == ContainsText("B", raw_content=True)
    first, second = (describe_termination(fn) for fn in SAME_STRINGS)
    assert termination_from_record(first) == ContainsText("A", raw_content=True)
    assert termination_from_record(second) == EqualsText("A", raw_content=True)
    if sys.version_info >= (3, 11):  # column positions disambiguate the source
        assert first["source"] == 'lambda m: "A" in m["content"]'
        assert second["source"] == 'lambda m: m["content"] == "A"'


def stop_when_done(message: dict[str, Any]) -> bool:
    """Stop once the assistant says DONE."""
    return "DONE" in message.get("content", "")


def test_def_function_with_docstring() -> None:
    record = describe_termination(stop_when_done)
    assert record["detected_from"] == "source"
    assert record["source"].startswith("def stop_when_done")
    assert termination_from_record(record) == ContainsText("DONE", raw_content=True)


def test_ag2_default_is_recognized() -> None:
    agent = autogen.ConversableAgent("a", llm_config=False)
    default = agent._is_termination_msg
    record = describe_termination(default)
    assert record == {**EqualsText("TERMINATE").to_spec(), "detected_from": "ag2_default"}
    assert termination_from_record(record) == EqualsText("TERMINATE")
    agree(default, EqualsText("TERMINATE"))


def test_user_copy_of_the_default_is_not_called_ag2_default() -> None:
    mine = lambda x: content_str(x.get("content")) == "TERMINATE"  # noqa: E731
    record = describe_termination(mine)
    assert record["detected_from"] == "source"
    assert spec_of(record) == EqualsText("TERMINATE").to_spec()


def _make_closure(word: object) -> Callable[[Message], bool]:
    return lambda m: word in m["content"]


def test_closures_read_str_cells() -> None:
    fn = _make_closure("FINISHED")
    record = describe_termination(fn)
    assert termination_from_record(record) == ContainsText("FINISHED", raw_content=True)
    agree(fn, ContainsText("FINISHED", raw_content=True))
    make = fresh("lambda word: (lambda m: m['content'].rstrip().endswith(word))")
    inner = make("X")  # type: ignore[arg-type]
    record = describe_termination(inner)
    assert record["detected_from"] == "bytecode"
    assert termination_from_record(record) == EndsWithText("X", raw_content=True)
    agree(inner, EndsWithText("X", raw_content=True))


class Sneaky(str):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


@pytest.mark.parametrize("value", [42, Sneaky("X"), ("A", "B"), None])
def test_closures_over_non_str_are_custom(value: object, quiet: list[Any]) -> None:
    record = describe_termination(_make_closure(value))
    assert record["kind"] == "custom"


STOP_WORD = "ALL_DONE"
STOP_PATTERN = re.compile(r"\bend\b", re.IGNORECASE)
GLOBAL_WORD = lambda m: STOP_WORD in m["content"]  # noqa: E731
GLOBAL_PATTERN = lambda m: STOP_PATTERN.search(content_str(m.get("content")))  # noqa: E731


def test_module_globals_and_compiled_patterns() -> None:
    assert termination_from_record(describe_termination(GLOBAL_WORD)) == ContainsText(
        "ALL_DONE", raw_content=True
    )
    expected = MatchesRegex(r"\bend\b", re.IGNORECASE)
    assert termination_from_record(describe_termination(GLOBAL_PATTERN)) == expected  # type: ignore[arg-type]
    agree(GLOBAL_PATTERN, expected)
    verbose = fresh('lambda m: P.search(m["content"])', P=re.compile("x", re.VERBOSE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert describe_termination(verbose)["kind"] == "custom"


def test_shadowed_names_are_not_trusted(quiet: list[Any]) -> None:
    fake_re = types.SimpleNamespace(search=lambda p, s: True)
    assert (
        describe_termination(fresh('lambda x: re.search("a", x["content"])', re=fake_re))["kind"] == "custom"
    )
    spy = fresh('lambda x: content_str(x.get("content")) == "TERMINATE"', content_str=lambda c: "TERMINATE")
    assert describe_termination(spy)["kind"] == "custom"


def test_stale_source_is_not_trusted(tmp_path: Path) -> None:
    module = _write_module(tmp_path, "stale_shape", 'FN = lambda x: "OLD" in x["content"]\n')
    (tmp_path / "stale_shape.py").write_text(
        'FN = lambda x: "NEWER_TEXT" in x["content"]\n', encoding="utf-8"
    )
    record = describe_termination(module.FN)
    assert record["detected_from"] == "bytecode"
    assert termination_from_record(record) == ContainsText("OLD", raw_content=True)


# --------------------------------------------------------------------------------------------------
# Custom callables: warned once, never called
# --------------------------------------------------------------------------------------------------


def test_custom_warns_once_per_code_object() -> None:
    fn = fresh('lambda x: len(x["content"]) > 3')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = describe_termination(fn)
        describe_termination(fn)
        describe_termination(fn)
    assert len(capture_warnings(caught)) == 1
    assert first == {
        "kind": "custom",
        "qualname": "<lambda>",
        "module": None,
        "string_constants": ["content"],
    }
    with pytest.warns(TerminationCaptureWarning, match="saved as 'custom' and must be supplied again"):
        describe_termination(fresh('lambda x: len(x["content"]) > 4'))


def test_custom_record_for_functions_with_statements(quiet: list[Any]) -> None:
    def noisy(message: dict[str, Any]) -> bool:
        text = message.get("content") or ""
        return "X" in text

    record = describe_termination(noisy)
    assert record["kind"] == "custom"
    assert record["qualname"].endswith("noisy")
    assert record["module"] == __name__
    assert "def noisy" in record["source"]
    assert record["string_constants"] == ["content", "", "X"]
    assert len(capture_warnings(quiet)) == 1


class CallableStop:
    def __init__(self) -> None:
        self.calls = 0
        self.touched: list[str] = []

    def __call__(self, message: dict[str, Any]) -> bool:
        self.calls += 1
        raise AssertionError("called")

    def __getattr__(self, name: str) -> Any:
        self.touched.append(name)
        raise AttributeError(name)

    def method(self, message: dict[str, Any]) -> bool:
        self.calls += 1
        raise AssertionError("called")


class MyCondition(ContainsText):
    pass


def test_other_callables_are_custom(quiet: list[Any]) -> None:
    stop = CallableStop()
    record = describe_termination(stop)
    assert record == {
        "kind": "custom",
        "qualname": "CallableStop",
        "module": __name__,
        "string_constants": [],
    }
    assert stop.calls == 0 and stop.touched == []
    record = describe_termination(stop.method)
    assert record["kind"] == "custom" and record["qualname"] == "CallableStop.method"
    assert stop.calls == 0 and stop.touched == []
    partial = functools.partial(lambda msg, word: word in msg["content"], word="X")
    assert describe_termination(partial)["qualname"].startswith("functools.partial:")
    assert describe_termination(MyCondition("X"))["kind"] == "custom"
    assert describe_termination(bool)["kind"] == "custom"
    assert describe_termination(None) == {"kind": "none"}
    with pytest.raises(TypeError):
        describe_termination("TERMINATE")  # type: ignore[arg-type]


def test_describe_never_calls_the_function(quiet: list[Any]) -> None:
    calls: list[object] = []
    spies: list[Callable[[Message], Any]] = [
        fresh('lambda x: calls.append(x) or "X" in x["content"]', calls=calls),
        fresh('lambda x: (_ for _ in ()).throw(RuntimeError("called"))'),
        fresh('lambda x: "X" in x["content"]'),
        fresh('lambda x: re.search("a", x["content"]) or "B" in (x.get("content") or "")'),
        _make_closure("X"),
        stop_when_done,
        PAIR[0],
    ]

    def raising(message: dict[str, Any]) -> bool:
        calls.append(message)
        raise RuntimeError("called")

    spies.append(raising)
    codes = {fn.__code__ for fn in spies if isinstance(fn, types.FunctionType)}
    executed: list[types.CodeType] = []

    def profiler(frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code in codes:
            executed.append(frame.f_code)

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        for fn in spies:
            describe_termination(fn)
    finally:
        sys.setprofile(previous)
    assert calls == []
    assert executed == []


# --------------------------------------------------------------------------------------------------
# Real AG2 agents
# --------------------------------------------------------------------------------------------------


def test_condition_works_as_ag2_is_termination_msg() -> None:
    agent = autogen.ConversableAgent("a", llm_config=False, is_termination_msg=terminate_on("SOLUTION_FOUND"))
    assert agent._is_termination_msg({"content": "... SOLUTION_FOUND"}) is True
    assert agent._is_termination_msg({"content": "still working"}) is False
    assert agent._is_termination_msg({"content": None}) is False
    assert describe_termination(agent._is_termination_msg) == ContainsText("SOLUTION_FOUND").to_spec()


def test_condition_stops_a_real_chat() -> None:
    sender = autogen.ConversableAgent("sender", llm_config=False, human_input_mode="NEVER")
    receiver = autogen.ConversableAgent(
        "receiver",
        llm_config=False,
        human_input_mode="NEVER",
        is_termination_msg=terminate_on("SOLUTION_FOUND"),
        default_auto_reply="keep going",
    )
    result = sender.initiate_chat(receiver, message="here it is: SOLUTION_FOUND", max_turns=3, silent=True)
    assert [m["content"] for m in result.chat_history] == ["here it is: SOLUTION_FOUND"]
    result = sender.initiate_chat(receiver, message="not yet", max_turns=1, silent=True)
    assert [m["content"] for m in result.chat_history] == ["not yet", "keep going"]
