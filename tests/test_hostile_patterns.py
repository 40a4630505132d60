"""Termination patterns from a checkpoint file cannot hang a restore (issue 17, item 2).

A ``regex`` condition read from a checkpoint runs on RE2 (linear time) instead of Python's backtracking
``re``, and still answers as ``re`` would: the checks below compare it with ``re`` itself. A pattern RE2
cannot run with ``re``'s meaning is refused unless the caller trusts the file. Conditions from the user's
own code keep ``re``. Everything is real: real conditions, real group chats with the deterministic model,
real checkpoint files.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import re2
from autogen import GroupChat
from scenarios import Scenario, all_scenarios

import checkpoint_system.cli as checkpoint_cli
from checkpoint_system import (
    CheckpointData,
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    InvalidCheckpointError,
    UnsafePatternError,
    terminate_regex,
)
from checkpoint_system.linear_regex import LinearPattern, UnsupportedPattern, _fold_mixed_chars, translate
from checkpoint_system.rebuild import RestoreReport, termination_callable
from checkpoint_system.snapshot import agent_state
from checkpoint_system.termination import (
    AnyOf,
    ContainsText,
    MatchesRegex,
    condition_from_spec,
    describe_termination,
    termination_from_record,
)

if TYPE_CHECKING:
    from conftest import Confined

#: The issue's acceptance bound is "well under a second"; a hang would take minutes, so leave room for a
#: loaded machine (the first use also builds the Unicode tables once).
TIME_LIMIT_S = 2.0
TEN_KB = 10_000


def _regex_spec(pattern: str, flags: int = 0) -> dict[str, Any]:
    return {"kind": "regex", "pattern": pattern, "flags": int(flags), "raw_content": False}


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


# -- (a) catastrophic patterns from a spec or record run in linear time ------------------------------------

#: (pattern, message of about 10 KB, whether re.search finds a match in it). The answers are plain facts
#: about the texts (``$`` needs the last character to be an "a"; ``(.*a){20}`` needs 20 a's on a line; the
#: last one needs a "y"): Python's re would need hours to confirm the negative ones.
REDOS_CASES = [
    ("(a+)+$", "a" * TEN_KB + "b", False),
    ("(a+)+$", "a" * TEN_KB, True),
    ("(a|aa)+$", "a" * TEN_KB + "b", False),
    ("(a|aa)+$", "b" + "a" * TEN_KB + "\n", True),
    ("(.*a){20}", "a" * 19 + "b" * TEN_KB, False),
    ("(.*a){20}", "ab" * (TEN_KB // 2), True),
    ("(x+x+)+y", "x" * TEN_KB, False),
    ("(x+x+)+y", "x" * TEN_KB + "y", True),
]


@pytest.mark.parametrize(("pattern", "text", "expected"), REDOS_CASES)
@pytest.mark.parametrize("source", ["spec", "record"])
def test_redos_pattern_from_a_checkpoint_runs_in_linear_time(
    pattern: str, text: str, expected: bool, source: str
) -> None:
    def build_and_run() -> bool:
        if source == "spec":
            condition = condition_from_spec(_regex_spec(pattern))
        else:
            record = {
                **_regex_spec(pattern),
                "detected_from": "source",
                "source": f"re.search({pattern!r}, m)",
            }
            built = termination_from_record(record)
            assert built is not None
            condition = built
        assert isinstance(condition, MatchesRegex) and condition.engine == "re2"
        return condition({"content": text})

    answer, elapsed = _timed(build_and_run)
    print(f"{pattern!r} on {len(text)} characters from a {source}: {answer} in {elapsed * 1000:.1f} ms")
    assert answer is expected
    assert elapsed < TIME_LIMIT_S


def test_redos_pattern_nested_in_any_of_is_linear_too() -> None:
    spec = {"kind": "any_of", "conditions": [ContainsText("STOP").to_spec(), _regex_spec("(a+)+$")]}
    condition = condition_from_spec(spec)
    assert isinstance(condition, AnyOf)
    assert [getattr(c, "engine", None) for c in condition.conditions] == [None, "re2"]
    answer, elapsed = _timed(lambda: condition({"content": "a" * TEN_KB + "!"}))
    assert answer is False
    assert elapsed < TIME_LIMIT_S


# -- (b) what RE2 cannot run is refused, and accepted when the file is trusted ------------------------------

REFUSED = [
    (r"TERMINATE(?!\w)", "negative lookahead"),
    (r"(?<=final: )DONE", "lookbehind"),
    (r"(\w+) \1", "backreference"),
    (r"(a)?(?(1)b|c)", "conditional group"),
    (r"a++b", "possessive quantifier"),
    (r"(?>a+)b", "atomic group"),
    (r"(?a)\w+", "ASCII flag"),
    (r"done$\n", "$ followed by more"),
    (r".\bdone", r"\b next to a part"),
    (r"x{1001}", "repeat count above 1000"),
    # ignoring case, the iota also matches U+0345, a non-word character: \b beside it is not decided
    ("(?i)\\b\u03b9", r"\b without a known word or non-word character"),
]


@pytest.mark.parametrize(("pattern", "reason"), REFUSED)
def test_pattern_re2_cannot_run_is_refused_unless_trusted(pattern: str, reason: str) -> None:
    with pytest.raises(UnsafePatternError) as caught:
        condition_from_spec(_regex_spec(pattern))
    message = str(caught.value)
    assert isinstance(caught.value, InvalidCheckpointError)
    assert repr(pattern) in message
    assert reason in message
    assert "trust_patterns=True" in message and "--trust-patterns" in message

    trusted = condition_from_spec(_regex_spec(pattern), trust_patterns=True)
    assert isinstance(trusted, MatchesRegex) and trusted.engine == "re"
    assert trusted == MatchesRegex(pattern)
    assert trusted.to_spec() == _regex_spec(pattern)


def test_refused_pattern_is_named_truncated_and_by_its_place() -> None:
    pattern = "(?=x)" + "y" * 500
    spec = {"kind": "all_of", "conditions": [ContainsText("A").to_spec(), _regex_spec(pattern)]}
    with pytest.raises(UnsafePatternError) as caught:
        termination_from_record(spec)
    message = str(caught.value)
    assert pattern not in message  # truncated
    assert repr(pattern[:60]) in message and "(505 characters)" in message
    assert "termination.conditions[1]" in message
    trusted = termination_from_record(spec, trust_patterns=True)
    assert trusted is not None and trusted.to_spec() == spec
    regex = trusted.conditions[1]  # type: ignore[attr-defined]
    assert isinstance(regex, MatchesRegex) and regex.engine == "re"


def test_invalid_pattern_stays_an_invalid_spec_whatever_the_trust() -> None:
    for trust in (False, True):
        with pytest.raises(InvalidCheckpointError) as caught:
            condition_from_spec(_regex_spec("(unclosed"), trust_patterns=trust)
        assert not isinstance(caught.value, UnsafePatternError)
        assert "invalid termination spec" in str(caught.value)


def test_termination_callable_refuses_naming_the_owner_and_trusts_on_request() -> None:
    record = _regex_spec(r"(\w+) \1")
    with pytest.raises(UnsafePatternError) as caught:
        termination_callable("agent 'planner'", record, RestoreReport())
    assert str(caught.value).startswith("agent 'planner': termination pattern")
    assert "trust_patterns=True" in str(caught.value)

    report = RestoreReport()
    condition = termination_callable("agent 'planner'", record, report, trust_patterns=True)
    assert isinstance(condition, MatchesRegex) and condition.engine == "re"
    assert condition({"content": "done done"}) and not condition({"content": "done dusted"})
    assert report.notes == []

    linear = termination_callable("manager 'chat_manager'", _regex_spec("(a+)+$"), RestoreReport())
    assert isinstance(linear, MatchesRegex) and linear.engine == "re2"
    assert linear({"content": "a" * TEN_KB + "b"}) is False


# -- (c) end to end: a real chat, a hostile checkpoint, a restore with an agent factory --------------------

MANAGER_PATTERN = r"(?i)\bchat over\b"


def _round_robin_with_regex_manager() -> Scenario:
    scenario = all_scenarios()["round_robin"]()
    scenario.manager_kwargs["is_termination_msg"] = terminate_regex(MANAGER_PATTERN)
    return scenario


def _run_and_load_last(session: Path) -> CheckpointData:
    scenario = _round_robin_with_regex_manager()
    manager = scenario.make_manager(
        CheckpointingGroupChatManager, checkpoint_manager=CheckpointManager(session)
    )
    scenario.run(manager)
    checkpoints = manager.checkpoint_manager
    try:
        last = checkpoints.latest_checkpoint_id()
        assert last is not None
        return checkpoints.load_checkpoint(last)
    finally:
        checkpoints.close()


def _save_with_manager_pattern(data: CheckpointData, spec: dict[str, Any], session: Path) -> Path:
    """``data`` with the manager's termination replaced by ``spec``, saved into a fresh session."""
    assert data.manager_state is not None
    manager_state = data.manager_state.model_copy(update={"termination_pattern": spec})
    hostile = data.model_copy(update={"manager_state": manager_state, "integrity": None})
    checkpoints = CheckpointManager(session)
    try:
        assert checkpoints.save_checkpoint(hostile)
        saved = checkpoints.latest_checkpoint_id()
        assert saved is not None
        return checkpoints.checkpoint_path(saved)
    finally:
        checkpoints.close()


def _factory() -> GroupChat:
    return _round_robin_with_regex_manager().groupchat


def test_restored_manager_runs_a_redos_pattern_from_the_file_in_linear_time(confined: Confined) -> None:
    original = _run_and_load_last(confined.root / "original")
    assert original.manager_state is not None
    assert original.manager_state.termination_pattern == terminate_regex(MANAGER_PATTERN).to_spec()

    hostile_spec = _regex_spec("(a+)+$")
    path = _save_with_manager_pattern(original, hostile_spec, confined.root / "hostile")

    def restore_and_check() -> tuple[bool, bool]:
        restored = CheckpointRestorer(agent_factory=_factory).restore(path)
        condition = restored.manager._is_termination_msg
        assert isinstance(condition, MatchesRegex) and condition.engine == "re2"
        stops = condition({"content": "a" * TEN_KB + "b", "role": "user", "name": "planner"})
        # a re-snapshot of the restored manager records the very spec of the file
        assert agent_state(restored.manager).termination_pattern == hostile_spec
        assert describe_termination(condition) == hostile_spec
        restored.checkpoint_manager.close()
        return stops, condition({"content": "a" * TEN_KB})

    (crafted_stops, plain_stops), elapsed = _timed(restore_and_check)
    print(f"restore + check of a 10 KB message: {elapsed * 1000:.1f} ms")
    assert crafted_stops is False and plain_stops is True
    assert elapsed < TIME_LIMIT_S


def test_restored_user_pattern_decides_as_the_original(confined: Confined) -> None:
    original = _run_and_load_last(confined.root / "original")
    path = _save_with_manager_pattern(
        original, terminate_regex(MANAGER_PATTERN).to_spec(), confined.root / "copy"
    )
    restored = CheckpointRestorer(agent_factory=_factory).restore(path)
    restored.checkpoint_manager.close()
    condition = restored.manager._is_termination_msg
    user_condition = terminate_regex(MANAGER_PATTERN)
    assert isinstance(condition, MatchesRegex) and condition.engine == "re2"
    assert isinstance(user_condition, MatchesRegex) and user_condition.engine == "re"
    assert condition == user_condition
    for text in (
        "Chat over.",
        "CHAT OVER",
        "chat overtime",
        "the chat over-ran",
        "chat over\n",
        "«chat over»",
    ):
        assert condition({"content": text}) is user_condition({"content": text}), text


def test_restore_refuses_a_lookaround_manager_pattern(confined: Confined) -> None:
    original = _run_and_load_last(confined.root / "original")
    path = _save_with_manager_pattern(original, _regex_spec(r"DONE(?!\w)"), confined.root / "hostile")
    with pytest.raises(UnsafePatternError) as caught:
        CheckpointRestorer(agent_factory=_factory).restore(path)
    message = str(caught.value)
    assert message.startswith("manager 'chat_manager': termination pattern 'DONE(?!\\\\w)'")
    assert "trust_patterns=True" in message
    # The refused restore left no continuation behind; trusting the file runs the pattern with re.
    assert not list((confined.root / "hostile").glob("continuation_*"))
    trusted = CheckpointRestorer(agent_factory=_factory, trust_patterns=True).restore(path)
    trusted.checkpoint_manager.close()
    condition = trusted.manager._is_termination_msg
    assert isinstance(condition, MatchesRegex) and condition.engine == "re"
    assert condition({"content": "DONE."}) is True and condition({"content": "DONEX"}) is False
    # The CLI refuses the same (exit 2, the flag named) and takes --trust-patterns.
    factory = "test_hostile_patterns:_factory"
    assert checkpoint_cli.main(["continue", str(path), "--factory", factory, "--rounds", "1"]) == 2
    arguments = ["continue", str(path), "--factory", factory, "--rounds", "1", "--trust-patterns"]
    assert checkpoint_cli.main(arguments) == 0


def test_agent_patterns_rebuilt_from_a_file_run_on_re2(confined: Confined) -> None:
    original = _run_and_load_last(confined.root / "original")
    planner = original.agent_states["planner"].model_copy(
        update={"termination_pattern": _regex_spec("(a|aa)+$")}
    )
    hostile = original.model_copy(
        update={"agent_states": {**original.agent_states, "planner": planner}, "integrity": None}
    )
    checkpoints = CheckpointManager(confined.root / "hostile")
    assert checkpoints.save_checkpoint(hostile)
    latest = checkpoints.latest_checkpoint_id()
    assert latest is not None
    path = checkpoints.checkpoint_path(latest)
    checkpoints.close()

    restored = CheckpointRestorer().restore(path)  # no agent factory: every agent is rebuilt from the file
    restored.checkpoint_manager.close()
    agent = next(a for a in restored.agents if a.name == "planner")
    condition = agent._is_termination_msg
    assert isinstance(condition, MatchesRegex) and condition.engine == "re2"
    answer, elapsed = _timed(lambda: condition({"content": "a" * TEN_KB + "b"}))
    assert answer is False and elapsed < TIME_LIMIT_S


# -- (d) the user's own conditions keep Python's re; identity ignores the engine --------------------------


def test_user_conditions_keep_python_re() -> None:
    lookbehind = terminate_regex(r"(?<=final: )DONE")  # only re can run this: the user's code is trusted
    assert isinstance(lookbehind, MatchesRegex) and lookbehind.engine == "re"
    assert lookbehind({"content": "final: DONE"}) and not lookbehind({"content": "DONE"})
    assert MatchesRegex("x").engine == "re"
    assert "engine" not in MatchesRegex("x").to_spec()


def test_engine_is_not_part_of_identity() -> None:
    user = MatchesRegex(r"^final:.*$", re.IGNORECASE | re.MULTILINE, raw_content=True)
    restored = condition_from_spec(user.to_spec())
    assert isinstance(restored, MatchesRegex) and restored.engine == "re2"
    assert restored == user and hash(restored) == hash(user) and len({user, restored}) == 1
    assert restored.to_spec() == user.to_spec() == describe_termination(restored)
    again = condition_from_spec(restored.to_spec())
    assert isinstance(again, MatchesRegex) and again == restored and again.engine == "re2"


def test_re2_conditions_copy_pickle_and_replace() -> None:
    restored = condition_from_spec(_regex_spec(r"\bdone\b", re.IGNORECASE))
    assert isinstance(restored, MatchesRegex)
    for clone in (copy.deepcopy(restored), pickle.loads(pickle.dumps(restored))):
        assert isinstance(clone, MatchesRegex) and clone.engine == "re2" and clone == restored
        assert clone({"content": "All DONE."}) and not clone({"content": "undone"})
    widened = dataclasses.replace(restored, flags=0)
    assert widened.engine == "re2" and not widened({"content": "DONE"})


def test_engine_value_is_checked() -> None:
    with pytest.raises(ValueError, match="engine"):
        MatchesRegex("x", engine="pcre")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedPattern):
        MatchesRegex(r"(?=x)", engine="re2")


# -- RE2 answers as re: the differences that matter on ordinary content ------------------------------------

#: (pattern, flags, text): each one a place where RE2 given the pattern as written answers differently
#: from re (or rejects the syntax); the translation must answer as re.
RE2_VS_RE = [
    (r"done$", 0, "All done\n"),  # $ before a final newline
    (r"done$", 0, "done\n\n"),
    (r"\d", 0, "\u0663"),  # ARABIC-INDIC DIGIT THREE
    (r"^\d+$", 0, "\uff11\uff12"),  # fullwidth digits
    (r"\w", 0, "\u00e9"),
    (r"^\w+$", 0, "\u0433\u043e\u0442\u043e\u0432\u043e"),  # Cyrillic
    (r"\s", 0, "\x0b"),  # vertical tab: not in RE2's \s
    (r"\s", 0, "\u00a0"),
    (r"\S", 0, "\u3000"),
    (r"\bdone\b", 0, "done\u00e9"),  # Python: no boundary before a letter
    ("\\b\u00fcber\\b", 0, "\u00fcber."),  # RE2's \b sees no word character in the pattern
    (
        "\\b\u0433\u043e\u0442\u043e\u0432\u043e\\b",
        0,
        "\u0432\u0441\u0451 \u0433\u043e\u0442\u043e\u0432\u043e!",
    ),
    ("\\b\u0433\u043e\u0442\u043e\u0432\u043e\\b", 0, "\u043d\u0435\u0433\u043e\u0442\u043e\u0432\u043e"),
    (r"i", re.IGNORECASE, "F\u0130N\u0130SHED"),  # Turkish capital I with dot
    (r"FINISHED", re.IGNORECASE, "f\u0131n\u0131shed"),  # Turkish dotless i
    (r"[^i]", re.IGNORECASE, "\u0130"),
    (r"x\Z", 0, "x"),  # RE2 has no \Z
    (r"a{,3}b", 0, "ab"),  # RE2 reads {,3} as text
    (r"\u00e9", 0, "\u00e9"),  # RE2 has no \u
    (r"\N{EM DASH}", 0, "a\u2014b"),
    (r"(?x) d o n e  # spaced out", 0, "done"),
    (r"[\w\-]+@", 0, "\u00e9@"),
]


@pytest.mark.parametrize(("pattern", "flags", "text"), RE2_VS_RE)
def test_translation_answers_as_re_where_raw_re2_would_not(pattern: str, flags: int, text: str) -> None:
    expected = re.search(pattern, text, flags) is not None
    assert LinearPattern(pattern, flags).search(text) is expected
    condition = condition_from_spec(_regex_spec(pattern, flags))
    assert condition({"content": text}) is expected


def test_raw_re2_really_differs_on_these_cases() -> None:
    """Guards the table above: RE2 given the patterns as written is wrong (or fails) on most of them."""
    options = re2.Options()
    options.log_errors = False
    differ = 0
    for pattern, flags, text in RE2_VS_RE:
        inline = "".join(f for f, bit in (("i", re.I), ("m", re.M), ("s", re.S)) if flags & bit)
        try:
            raw = re2.compile((f"(?{inline})" if inline else "") + pattern, options).search(text) is not None
        except re2.error:
            differ += 1
            continue
        differ += raw is not (re.search(pattern, text, flags) is not None)
    assert differ >= len(RE2_VS_RE) - 2


def test_unicode_classes_are_this_pythons() -> None:
    """Over every character (surrogates aside), the translated classes match the same runs as re's."""
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    for pattern in (r"\w", r"\W", r"\d", r"\D", r"\s", r"\S", r"[\w\s]", r"[^\d\s]"):
        runs = f"(?:{pattern})+"
        ours = [m.span() for m in re2.compile(translate(runs)).finditer(every)]
        assert ours == [m.span() for m in re.finditer(runs, every)], pattern


def test_ignorecase_matches_like_re_for_every_cased_character() -> None:
    """For every character with a case mapping, ``(?i)c`` and ``(?i)[^c]`` decide like re on its relatives."""
    relatives: dict[str, set[str]] = {}
    for code in range(0x110000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        forms = {char.lower(), char.upper(), char.casefold(), char.title()}
        forms = {f for f in forms if len(f) == 1} - {char}
        if forms:
            group = {char} | forms
            for member in list(group):
                group |= relatives.get(member, set())
            for member in group:
                relatives[member] = group
    groups = {frozenset(g) for g in relatives.values()}
    wrong = []
    for group in groups:
        for char in group:
            for template in ("{}", "[^{}]"):
                pattern = template.format(re.escape(char))
                ours = LinearPattern(pattern, re.IGNORECASE)
                for other in group | {"\u0345", "a"}:
                    if ours.search(other) is not (re.search(pattern, other, re.IGNORECASE) is not None):
                        wrong.append((pattern, other))
    assert wrong == []


#: ASCII plus the characters where re and RE2 part ways: accented and Turkish letters, the Kelvin sign, the
#: long s, an Arabic-Indic digit, the iota forms (U+0345 is a non-word character that folds with a word one).
ALPHABET = [*"abAB_1 \n.-xyikKs", "\u00e9", "\u00c9", "\u0130", "\u0131", "\u212a", "\u017f", "\u0663"]
ALPHABET += ["\u0345", "\u03b9", "\u0399", "\u00a0", "\t", "\u00df"]


def _random_pattern(rng: random.Random, depth: int = 0) -> str:
    def atom() -> str:
        roll = rng.random()
        if depth > 2 or roll < 0.4:
            return re.escape(rng.choice(ALPHABET))
        if roll < 0.55:
            members = "".join(
                rng.choice(
                    [re.escape(rng.choice(ALPHABET)), "a-z", "\u00e0-\u00ff", r"\w", r"\W", r"\d", r"\s"]
                )
                for _ in range(rng.randint(1, 3))
            )
            return f"[{'^' if rng.random() < 0.3 else ''}{members}]"
        if roll < 0.65:
            return rng.choice([r"\w", r"\W", r"\d", r"\s", r"\S", "."])
        if roll < 0.77:
            return rng.choice(["^", "$", r"\A", r"\Z", r"\b", r"\B"])
        opener = rng.choice(["(", "(?:", "(?i:", "(?-i:", "(?s:", "(?m:"])
        return opener + _random_pattern(rng, depth + 1) + ")"

    def quantified() -> str:
        text = atom()
        if text in ("^", "$", r"\A", r"\Z", r"\b", r"\B") or rng.random() < 0.7:
            return text
        return text + rng.choice(["*", "+", "?", "*?", "{2}", "{1,3}", "{,2}"])

    branches = ["".join(quantified() for _ in range(rng.randint(0, 4))) for _ in range(rng.choice([1, 1, 2]))]
    return "|".join(branches)


def test_random_patterns_answer_as_re_or_are_refused() -> None:
    """A seeded differential check: every accepted pattern gives re's answer on every sample text."""
    rng = random.Random(17)
    texts = ["", "\n", "a\n", "\u0130"] + [
        "".join(rng.choices(ALPHABET, k=rng.randint(0, 7))) for _ in range(80)
    ]
    accepted = refused = 0
    disagreements = []
    while accepted < 400:
        flags = rng.choice([0, 0, re.IGNORECASE, re.MULTILINE, re.DOTALL, re.IGNORECASE | re.MULTILINE])
        pattern = _random_pattern(rng)
        try:
            python = re.compile(pattern, flags)
        except re.error:
            continue
        try:
            ours = LinearPattern(pattern, flags)
        except UnsupportedPattern:
            refused += 1
            continue
        accepted += 1
        for text in texts:
            if ours.search(text) is not (python.search(text) is not None):
                disagreements.append((pattern, flags, text))
    print(f"accepted {accepted}, refused {refused}")
    assert disagreements == []


def test_case_folding_mixes_word_kinds_only_beyond_ascii() -> None:
    """Under IGNORECASE, \\b beside an ASCII letter is decided without Python's case tables: the premise."""
    mixed = _fold_mixed_chars()
    assert mixed is not None and "\u0345" in map(chr, mixed) and "\u03b9" in map(chr, mixed)
    assert all(char > 0x7F for char in mixed)


def test_lone_surrogates_in_a_message_do_not_break_the_check() -> None:
    condition = condition_from_spec(_regex_spec(r"\bdone\b"))
    assert condition({"content": "done \ud800"}) is True
    assert condition({"content": "\udfff"}) is False


def test_translation_size_is_bounded() -> None:
    with pytest.raises(UnsafePatternError, match="too large"):
        condition_from_spec(_regex_spec(r"\w" * 200))
