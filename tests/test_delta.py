"""DeltaEncoder / LogReplay round trips on sequences of CheckpointData (no files, no AG2 agents)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import orjson
import pytest

from checkpoint_system.jsonable import UNSERIALIZABLE_KEY
from checkpoint_system.model import CheckpointData
from checkpoint_system.storage.delta import (
    INTERN_MIN_LENGTH,
    DeltaEncoder,
    EncodedCheckpoint,
    LogReplay,
    checkpoint_from_record,
    dumps,
)

AGENTS = ("planner", "coder", "critic")
MANAGER = "chat_manager"


def long_text(tag: Any, size: int = 200) -> str:
    base = f"message {tag}: "
    return (base + "lorem ipsum dolor sit amet " * (size // 20 + 1))[:size]


def checkpoint(
    step: int,
    messages: list[dict[str, Any]],
    histories: dict[str, dict[str, list[dict[str, Any]]]],
    *,
    system_messages: dict[str, str] | None = None,
    manager_name: str = MANAGER,
    **extra: Any,
) -> CheckpointData:
    """A CheckpointData with the given group messages and per-agent histories (manager under its name)."""
    system_messages = system_messages or {}
    states = {
        name: {
            "name": name,
            "agent_class": "autogen.agentchat.conversable_agent.ConversableAgent",
            "system_message": system_messages.get(name, f"You are {name}. " + long_text(name, 120)),
            "llm_config": {"config_list": [{"model": "gpt-4o", "api_key": {"$redacted": "api_key"}}]},
            "_oai_messages": histories.get(name, {}),
            "consecutive_auto_reply_counter": {manager_name: step},
            "reply_at_receive": {manager_name: True},
        }
        for name in AGENTS
    }
    return CheckpointData.model_validate(
        {
            "checkpoint_id": f"checkpoint_{step}_test_20240101_000000_000000",
            "timestamp": "2024-01-01T00:00:00.000000+00:00",
            "step_number": step,
            "context": "message_appended",
            "messages": messages,
            "agent_states": states,
            "manager_state": {
                "name": manager_name,
                "agent_class": "autogen.agentchat.groupchat.GroupChatManager",
                "_oai_messages": histories.get(manager_name, {}),
                "step_counter": step,
                "current_speaker": AGENTS[step % len(AGENTS)],
            },
            "groupchat_state": {"agent_names": list(AGENTS), "max_round": 10_000, "round_index": step},
            "metadata": {"step": step},
            **extra,
        }
    )


class LiveChat:
    """A group chat that grows like AG2's: message dicts are shared between the lists, lists grow in place."""

    def __init__(self, manager_name: str = MANAGER) -> None:
        self.manager_name = manager_name
        self.messages: list[dict[str, Any]] = []
        self.histories: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {manager_name: []} for name in AGENTS
        }
        self.histories[manager_name] = {name: [] for name in AGENTS}

    def say(self, index: int, content: Any = None) -> dict[str, Any]:
        speaker = AGENTS[index % len(AGENTS)]
        message = {
            "role": "user",
            "name": speaker,
            "content": long_text(index) if content is None else content,
        }
        self.messages.append(message)
        self.histories[self.manager_name][speaker].append(message)
        for name in AGENTS:
            self.histories[name][self.manager_name].append(message)
        return message

    def snapshot(self, step: int, **kwargs: Any) -> CheckpointData:
        """Shallow copies of the lists, the message objects shared (as ``snapshot.py`` does)."""
        histories = {
            agent: {peer: list(h) for peer, h in peers.items()} for agent, peers in self.histories.items()
        }
        data = checkpoint(step, list(self.messages), {}, manager_name=self.manager_name, **kwargs)
        for agent, peers in histories.items():
            state = data.manager_state if agent == self.manager_name else data.agent_states[agent]
            assert state is not None
            state.oai_messages = peers
        data.messages = list(self.messages)
        return data


class Session:
    """An encoder plus the log it produced, with every checkpoint's record and log prefix size."""

    def __init__(self) -> None:
        self.encoder = DeltaEncoder()
        self.log = b""
        self.saved: list[tuple[dict[str, Any], int]] = []
        self.written: list[int] = []

    def save(self, data: CheckpointData, *, trusted: bool = False) -> EncodedCheckpoint:
        encoded = self.encoder.encode(data, trusted_prefix=trusted)
        self.log += encoded.log_bytes
        self.encoder.commit(encoded)
        record = orjson.loads(dumps(encoded.record))  # as stored: through JSON
        self.saved.append((record, len(self.log)))
        self.written.append(len(encoded.log_bytes))
        return encoded

    def load(self, index: int) -> CheckpointData:
        record, size = self.saved[index]
        replay = LogReplay()
        replay.apply_bytes(self.log[:size])
        return checkpoint_from_record(record, replay)

    def log_records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.log.splitlines()]


def logged_strings(records: list[dict[str, Any]]) -> list[str]:
    """The long strings a log defines, in table order (its ``"strings"`` lists)."""
    strings: list[str] = []
    for record in records:
        strings.extend(record.get("strings", ()))
    return strings


def assert_same(loaded: CheckpointData, expected: CheckpointData) -> None:
    assert loaded.model_dump() == expected.model_dump()
    assert loaded == expected


def frozen(data: CheckpointData) -> CheckpointData:
    """An independent deep copy (what the checkpoint held when it was taken)."""
    return data.model_copy(deep=True)


# -- round trips ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [False, True])
def test_growth_round_trip_every_checkpoint(trusted: bool) -> None:
    chat, session, expected = LiveChat(), Session(), []
    for step in range(30):
        chat.say(step)
        data = chat.snapshot(step)
        expected.append(frozen(data))
        session.save(data, trusted=trusted)
    for index, data in enumerate(expected):
        assert_same(session.load(index), data)
    kinds = [next(iter(r)) for r in session.log_records()]
    assert "truncate_messages" not in kinds and "truncate_history" not in kinds  # pure growth: appends only


def test_empty_checkpoint_and_no_change_writes_nothing() -> None:
    session = Session()
    empty = checkpoint(0, [], {})
    session.save(empty)
    assert_same(session.load(0), empty)
    first = session.written[0]
    assert first > 0  # the configurations
    session.save(checkpoint(0, [], {}))
    assert session.written[1] == 0
    assert_same(session.load(1), empty)


@pytest.mark.parametrize("trusted", [False, True])
def test_truncation_clear_history_then_growth(trusted: bool) -> None:
    chat, session, expected = LiveChat(), Session(), []
    for step in range(12):
        chat.say(step)
        if step == 6:  # AG2 clear_history: the list is emptied in place
            chat.histories["coder"][MANAGER].clear()
            chat.messages.clear()
        if step == 9:  # shortened without clearing
            del chat.histories["critic"][MANAGER][2:]
        data = chat.snapshot(step)
        expected.append(frozen(data))
        session.save(data, trusted=trusted)
    for index, data in enumerate(expected):
        assert_same(session.load(index), data)
    records = session.log_records()
    assert {"truncate_messages": 0} in records
    assert any("truncate_history" in r and r["to"] == 0 for r in records)
    assert any("truncate_history" in r and r["to"] == 2 for r in records)


def test_edit_in_middle_of_history_detected_by_full_compare() -> None:
    chat, session = LiveChat(), Session()
    for step in range(8):
        chat.say(step)
        session.save(chat.snapshot(step))
    before = frozen(chat.snapshot(7))

    # 1. an edit that replaces the message object
    history = chat.histories["planner"][MANAGER]
    history[3] = {**history[3], "content": "edited: " + long_text("edit")}
    edited = chat.snapshot(8)
    session.save(edited)
    assert_same(session.load(7), before)
    assert_same(session.load(8), frozen(edited))
    planner = next(r["history"] for r in session.log_records() if r.get("agent") == "a:planner")
    assert {"truncate_history": planner, "to": 3} in session.log_records()

    # 2. an in-place edit of an already logged dict (same object, same length)
    chat.messages[2]["content"] = "mutated in place"
    mutated = chat.snapshot(9)
    size_before = len(session.log)
    session.save(mutated)
    assert len(session.log) > size_before
    assert session.load(9).messages[2]["content"] == "mutated in place"
    assert_same(session.load(9), frozen(mutated))
    assert_same(session.load(7), before)  # earlier checkpoints still read what they held


def test_untrusted_detects_changes_equality_would_hide() -> None:
    session = Session()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "x", "n": 1}]
    session.save(checkpoint(0, messages, {}))
    messages[0]["n"] = 1.0  # == 1, but a different JSON value
    session.save(checkpoint(1, messages, {}))
    messages[0]["n"] = True  # == 1 as well
    session.save(checkpoint(2, messages, {}))
    assert [type(session.load(i).messages[0]["n"]) for i in range(3)] == [int, float, bool]


def test_trusted_fast_path_equals_untrusted_result() -> None:
    trusted_chat, untrusted_chat = LiveChat(), LiveChat()
    trusted, untrusted = Session(), Session()
    for step in range(60):
        for chat in (trusted_chat, untrusted_chat):
            chat.say(step)
            if step == 25:
                chat.histories["coder"][MANAGER].clear()
            if step == 40:
                del chat.messages[10:]
        trusted.save(trusted_chat.snapshot(step), trusted=True)
        untrusted.save(untrusted_chat.snapshot(step), trusted=False)
    assert trusted.log == untrusted.log
    assert [r for r, _ in trusted.saved] == [r for r, _ in untrusted.saved]
    for index in range(0, 60, 7):
        assert_same(trusted.load(index), untrusted.load(index))


# -- values ---------------------------------------------------------------------------------------------


def test_dicts_with_reference_keys_are_escaped() -> None:
    tricky: list[dict[str, Any]] = [
        {"role": "user", "content": {"$s": 0}},
        {"role": "user", "content": {"$lit": "x"}},
        {"$s": 1},
        {"$lit": {"$s": 3}},
        {"$s": 1, "other": 2},
        {"content": [{"$s": 0}, {"$lit": {"$lit": {}}}, {"$s": "not an index"}]},
        {"nested": {"deeper": {"$s": long_text("ref")}}},
        {"content": long_text(0)},  # string 0 really exists, so a mistaken reference would decode to it
    ]
    session = Session()
    data = checkpoint(0, copy.deepcopy(tricky), {"coder": {MANAGER: copy.deepcopy(tricky)}})
    session.save(data)
    loaded = session.load(0)
    assert loaded.messages == tricky
    assert loaded.agent_states["coder"].oai_messages[MANAGER] == tricky


def test_long_short_and_unicode_strings() -> None:
    boundary = "b" * (INTERN_MIN_LENGTH - 1)
    interned = "i" * INTERN_MIN_LENGTH
    texts = [
        "",
        "ok",
        boundary,
        interned,
        "x" * 100_000,
        "héllo wörld — ünïcödé " * 5,
        "日本語のテキスト、中文文本 한국어 텍스트 " * 4,
        "emoji 😀🎉👩‍👩‍👧 " * 10,
        "line\nbreaks\r\nand\ttabs\u2028\u2029 and a NUL \x00 char" * 3,
        'quotes " and backslashes \\ and {"json": "inside"}' * 2,
    ]
    messages = [{"role": "user", "content": text} for text in texts]
    repeated = [{"role": "assistant", "content": "x" * 100_000}]  # same long text again: referenced
    session = Session()
    data = checkpoint(0, messages + repeated, {"planner": {MANAGER: messages}})
    session.save(data)
    assert_same(session.load(0), data)
    strings = logged_strings(session.log_records())
    assert boundary not in strings and interned in strings
    assert strings.count("x" * 100_000) == 1
    assert len(session.log) < 100_000 + 10_000  # the 100 kB text is written once, not three times


def test_nested_tool_calls_round_trip() -> None:
    arguments = orjson.dumps(
        {"code": "print('hi')\n" * 10, "timeout": 30, "flags": [1, 2.5, None, True]}
    ).decode()
    messages: list[dict[str, Any]] = [
        {"role": "user", "name": "planner", "content": "run it"},
        {
            "role": "assistant",
            "name": "coder",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "run_python", "arguments": arguments},
                },
                {"id": "call_2", "type": "function", "function": {"name": "noop", "arguments": "{}"}},
            ],
        },
        {
            "role": "tool",
            "tool_responses": [
                {"tool_call_id": "call_1", "role": "tool", "content": "hi\n" * 40},
                {"tool_call_id": "call_2", "role": "tool", "content": ""},
            ],
            "content": "hi\n" * 40,
        },
    ]
    session = Session()
    data = checkpoint(0, copy.deepcopy(messages), {"coder": {MANAGER: copy.deepcopy(messages)}})
    session.save(data)
    assert_same(session.load(0), data)


def test_non_json_values_become_markers() -> None:
    class Client:
        pass

    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": "x",
            "client": Client(),
            "callback": len,
            "tags": {"b", "a"},
            "pair": (1, 2),
        },
        {"role": "user", "content": "big", "n": 2**70, "neg": -(2**70)},
        {"role": "user", "content": "lone surrogate \ud800 here"},
    ]
    session = Session()
    session.save(checkpoint(0, messages, {}))
    loaded = session.load(0).messages
    assert loaded[0]["client"][UNSERIALIZABLE_KEY].endswith("Client")
    assert loaded[0]["client"]["restore_from"] == "user"
    assert UNSERIALIZABLE_KEY in loaded[0]["callback"]
    assert loaded[0]["tags"] == ["a", "b"]
    assert loaded[0]["pair"] == [1, 2]
    assert loaded[1]["n"] == str(2**70) and loaded[1]["neg"] == str(-(2**70))
    assert loaded[2]["content"] == "lone surrogate \ufffd here"
    # Saving the same data again is recognised as unchanged (the conversion is deterministic).
    session.save(checkpoint(1, messages, {}))
    changed = [orjson.loads(line) for line in session.log[-session.written[1] :].splitlines()]
    # only the per-step counters and metadata changed: no message, string or history is written again
    kinds = ("message", "strings", "copy", "append", "truncate_messages", "truncate_history", "history")
    assert not any(key in r for r in changed for key in kinds)


def test_checkpoint_extra_fields_survive() -> None:
    session = Session()
    data = checkpoint(0, [], {}, custom_field={"nested": [1, 2]})
    session.save(data)
    loaded = session.load(0)
    assert loaded.model_extra == {"custom_field": {"nested": [1, 2]}}
    assert_same(loaded, data)


def test_manager_named_like_an_agent_keeps_separate_histories() -> None:
    session = Session()
    for step in range(4):
        agent_history = [{"role": "user", "content": f"to agent {i}"} for i in range(step + 2)]
        manager_history = [{"role": "user", "content": f"to manager {i}"} for i in range(step + 1)]
        data = checkpoint(step, [], {"coder": {"planner": agent_history}}, manager_name="coder")
        assert data.manager_state is not None
        data.manager_state.oai_messages = {"planner": manager_history}  # same (name, peer) as agent coder's
        session.save(data, trusted=step % 2 == 0)
        loaded = session.load(step)
        assert loaded.agent_states["coder"].oai_messages["planner"] == agent_history
        assert loaded.manager_state is not None
        assert loaded.manager_state.oai_messages["planner"] == manager_history


# -- configurations ----------------------------------------------------------------------------------------


def _agent_configs(session: Session) -> list[dict[str, Any]]:
    return [r for r in session.log_records() if "config" in r and "system_message" in r.get("value", {})]


def test_configs_deduplicated_and_new_config_on_change() -> None:
    chat, session = LiveChat(), Session()
    for step in range(10):
        chat.say(step)
        session.save(chat.snapshot(step), trusted=True)
    assert (
        len(_agent_configs(session)) == len(AGENTS) + 1
    )  # one per agent and the manager, not per checkpoint

    chat.say(10)
    changed = chat.snapshot(10, system_messages={"coder": "You now review code only."})
    session.save(changed, trusted=True)
    configs = _agent_configs(session)
    assert len(configs) == len(AGENTS) + 2
    assert configs[-1]["value"]["system_message"] == "You now review code only."
    assert session.load(10).agent_states["coder"].system_message == "You now review code only."
    assert str(session.load(9).agent_states["coder"].system_message).startswith("You are coder.")

    chat.say(11)
    session.save(chat.snapshot(11), trusted=True)  # back to the first configuration: referenced again
    assert len(_agent_configs(session)) == len(AGENTS) + 2
    uses = [r["config"] for r in session.log_records() if r.get("agent_config") == "a:coder"]
    assert len(uses) == 3 and uses[0] == uses[2] != uses[1]


# -- failures, continuation, cost ------------------------------------------------------------------------


def test_encode_without_commit_does_not_change_state() -> None:
    chat, session = LiveChat(), Session()
    for step in range(3):
        chat.say(step)
        session.save(chat.snapshot(step))
    chat.say(3)
    data = chat.snapshot(3)
    failed = session.encoder.encode(data)  # its write "failed": never committed
    again = session.encoder.encode(data)
    assert failed.log_bytes == again.log_bytes and failed.record == again.record
    assert failed.log_bytes  # it had something to write
    session.save(data)  # the retry
    assert_same(session.load(3), frozen(data))
    with pytest.raises(ValueError, match="stale"):
        session.encoder.commit(failed)
    strings = logged_strings(session.log_records())
    assert strings and len(strings) == len(set(strings))  # no string written twice


def test_continue_from_replayed_log() -> None:
    chat, session, expected = LiveChat(), Session(), []
    for step in range(10):
        chat.say(step)
        expected.append(frozen(chat.snapshot(step)))
        session.save(chat.snapshot(step), trusted=True)
    replay = LogReplay()
    replay.apply_bytes(session.log)
    session.encoder = DeltaEncoder()
    session.encoder.load_state(replay)
    chat.say(10)
    encoded = session.save(chat.snapshot(10), trusted=True)  # objects differ: full compare, then appends
    new_lines = [orjson.loads(line) for line in encoded.log_bytes.splitlines()]
    kinds = ("truncate_messages", "truncate_history", "agent_config", "history", "agents", "copy", "append")
    assert not any(kind in r for r in new_lines for kind in kinds)
    # one step line: the group message, then each agent's and the manager's copy of it
    (step,) = [r for r in new_lines if "message" in r]
    assert "copies" not in step  # the copies follow a pattern the replayed log defined
    assert sum(len(entry[0]) for entry in replay.patterns[step["pattern"]]) == len(AGENTS) + 1
    assert_same(session.load(10), frozen(chat.snapshot(10)))
    assert_same(session.load(4), expected[4])


def test_replay_rejects_malformed_logs() -> None:
    from checkpoint_system.errors import CorruptCheckpointError

    for bad in (
        b'{"s":0,"v":"a string on a line of its own (a draft format)"}\n',
        b'{"M":{"content":"short keys (a draft format)","role":"user","name":"x"}}\n',
        b'{"append":7,"item":{}}\n',
        b'{"message":{"$s":5}}\n',
        b'{"message":{"$s":-1}}\n',
        b'{"history":0,"agent":"x","peer":"y"}\n{"history":0,"agent":"x","peer":"z"}\n',
        b'{"what":1}\n',
        b"[1]\n",
        b"not json\n",
        b'{"message":{}}',
        b'{"message":{"content":{"$s":0}},"strings":"not a list"}\n',
        b'{"message":{"content":{"$s":0}},"strings":[7]}\n',
        b'{"changed":"a:x","value":{"reply_at_receive":{}}}\n',  # a change before the full counters
        b'{"counters":"a:x","value":{}}\n{"changed":"a:x","value":[]}\n',
        b'{"message":{"role":"user"}}\n{"copy":[0],"of":-1}\n',
        b'{"history":0,"agent":"x","peer":"y"}\n{"message":{"role":"user"}}\n{"copy":0,"of":0}\n',
    ):
        with pytest.raises(CorruptCheckpointError):
            LogReplay().apply_bytes(bad, path="log.jsonl")


def test_strings_are_defined_by_the_line_that_carries_them() -> None:
    text, other = "t" * INTERN_MIN_LENGTH, "o" * INTERN_MIN_LENGTH
    replay = LogReplay()
    replay.apply_bytes(
        b'{"history":0,"agent":"a:x","peer":"m"}\n'
        b'{"message":{"content":{"$s":0},"role":"user"},"strings":["' + text.encode() + b'"]}\n'
        b'{"strings":["' + other.encode() + b'"]}\n'  # a definition on its own line
        b'{"copy":[0],"of":0,"replace":{"name":{"$s":1}}}\n'
        b'{"counters":"a:x","value":{"reply_at_receive":{"m":true},"consecutive_auto_reply_counter":{"m":0}}}\n'
        b'{"changed":"a:x","value":{"consecutive_auto_reply_counter":{"m":1}}}\n'
    )
    assert replay.strings == [text, other]
    assert replay.messages == [{"content": text, "role": "user"}]
    assert replay.histories[0] == [{"content": text, "role": "user", "name": other}]
    assert replay.dynamic["a:x"] == {
        "reply_at_receive": {"m": True},
        "consecutive_auto_reply_counter": {"m": 1},
    }


def test_a_message_is_one_step_line() -> None:
    """After the first checkpoint, a message, its counter change and every history's copy share one line."""
    chat, session = LiveChat(), Session()
    for step in range(6):
        chat.say(step)
        session.save(chat.snapshot(step), trusted=True)
    records = session.log_records()
    steps = [record for record in records if "pattern" in record]
    assert len(steps) == 5  # every checkpoint but the first, which defines the histories
    assert all("message" in record for record in steps)
    assert not any(  # after the first step line, no message, counter change or copy on a line of its own
        next(iter(record)) in ("copy", "changed") or ("message" in record and "pattern" not in record)
        for record in records[records.index(steps[0]) :]
    )
    patterns: list[Any] = []  # a step's "copies", defined once per speaker and then referred to
    for record in steps:
        if "copies" in record:
            assert record["pattern"] == len(patterns)
            patterns.append(record["copies"])
        expected = ["changed", "message", "pattern", "strings", *(["copies"] if "copies" in record else [])]
        assert sorted(record) == sorted(expected), record
        defined_before = logged_strings(records[: records.index(record)])
        assert len(record["strings"]) == 1 and record["message"]["content"] == {"$s": len(defined_before)}
        copies = patterns[record["pattern"]]
        assert sum(len(entry[0]) for entry in copies) == len(AGENTS) + 1  # every agent, the manager
    assert len(patterns) == len(AGENTS) < len(steps)  # one per speaker
    loaded = session.load(5)
    item = loaded.messages[-1]  # one object: the group chat's message, shared by the unchanged copies
    histories = [state.oai_messages[MANAGER] for state in loaded.agent_states.values()]
    assert all(history[-1] is item for history in histories)


def test_a_step_whose_message_is_referred_to_by_other_lines_keeps_separate_lines() -> None:
    """A line written after the message (a new history, a second copy) forces separate lines."""
    chat, session, expected = LiveChat(), Session(), []
    for step in range(4):
        chat.say(step)
        if step == 2:  # the critic gets the previous message again, then the new one: two history lines
            chat.histories["critic"][MANAGER].insert(-1, dict(chat.messages[-2]))
        if step == 3:  # a history with a new peer appears along with the message
            chat.histories["planner"]["critic"] = [dict(chat.messages[-1], role="assistant")]
        data = chat.snapshot(step)
        expected.append(frozen(data))
        session.save(data)
    for index, data in enumerate(expected):
        assert_same(session.load(index), data)
    kinds = [sorted(orjson.loads(line)) for line in session.log.splitlines()]
    assert ["message", "strings"] in kinds
    assert ["changed", "copies", "message", "pattern", "strings"] in kinds


def test_step_lines_decode_overrides_removed_keys_and_counters() -> None:
    text = "t" * INTERN_MIN_LENGTH
    replay = LogReplay()
    replay.apply_bytes(
        b'{"history":0,"agent":"a:x","peer":"m"}\n{"history":1,"agent":"a:y","peer":"m"}\n{"history":2,"agent":"m:m","peer":"x"}\n'
        b'{"counters":"a:x","value":{"reply_at_receive":{"m":true},"consecutive_auto_reply_counter":{"m":0}}}\n'
        b'{"message":{"content":{"$s":0},"role":"user","name":"x","tool_calls":[{"id":"1"}]},'
        b'"changed":{"a:x":{"consecutive_auto_reply_counter":{"m":1}}},'
        b'"copies":[[[0]],[[1],{"role":"assistant"}],[[2],null,["name","tool_calls"]]],"pattern":0,'
        b'"strings":["' + text.encode() + b'"]}\n'
    )
    message = {"content": text, "role": "user", "name": "x", "tool_calls": [{"id": "1"}]}
    assert replay.messages == [message]
    assert replay.histories == {
        0: [message],
        1: [{**message, "role": "assistant"}],
        2: [{"content": text, "role": "user"}],
    }
    assert replay.histories[0][0] is replay.messages[0]
    assert replay.dynamic["a:x"]["consecutive_auto_reply_counter"] == {"m": 1}


def test_step_lines_next_to_the_usual_shape_are_decoded_in_full() -> None:
    """The replay reads the usual step line (3-key message, role-only copy) without a call; lines that only
    look like it must still have every reference decoded."""
    text, other = "t" * INTERN_MIN_LENGTH, "r" * INTERN_MIN_LENGTH
    replay = LogReplay()
    replay.apply_bytes(
        b'{"history":0,"agent":"a:x","peer":"m"}\n{"history":1,"agent":"a:y","peer":"m"}\n{"history":2,"agent":"m:m","peer":"x"}\n'
        b'{"message":{"content":{"$s":0},"role":{"$s":1},"name":"x"},'
        b'"copies":[[[0],{"name":"n"}],[[1],{"role":{"$s":0}}],[[2],{"role":"assistant"}]],"pattern":0,'
        b'"strings":["' + text.encode() + b'","' + other.encode() + b'"]}\n'
        b'{"message":{"content":{"$s":0},"role":"user","name":"x","context":{"note":{"$s":1}}}}\n'
    )
    first = {"content": text, "role": other, "name": "x"}
    assert replay.messages == [
        first,
        {"content": text, "role": "user", "name": "x", "context": {"note": other}},
    ]
    assert replay.histories == {
        0: [{**first, "name": "n"}],
        1: [{**first, "role": text}],
        2: [{**first, "role": "assistant"}],
    }


def test_step_lines_refer_to_copy_patterns_defined_before() -> None:
    replay = LogReplay()
    replay.apply_bytes(
        b'{"history":0,"agent":"a:x","peer":"m"}\n{"history":1,"agent":"a:y","peer":"m"}\n'
        b'{"message":{"content":"a","role":"user","name":"x"},"copies":[[[0],{"role":"assistant"}],[[1]]],"pattern":0}\n'
        b'{"message":{"content":"b","role":"user","name":"y"},"copies":[[[1],{"role":"assistant"}],[[0]]],"pattern":1}\n'
        b'{"message":{"content":"c","role":"user","name":"x"},"pattern":0}\n'
    )
    a, b, c = (
        {"content": text, "role": "user", "name": name} for text, name in (("a", "x"), ("b", "y"), ("c", "x"))
    )
    assert replay.messages == [a, b, c]
    assert replay.histories == {
        0: [{**a, "role": "assistant"}, b, {**c, "role": "assistant"}],
        1: [a, {**b, "role": "assistant"}, c],
    }


def test_replay_rejects_malformed_step_lines() -> None:
    from checkpoint_system.errors import CorruptCheckpointError

    history = b'{"history":0,"agent":"a:x","peer":"m"}\n'
    defined = history + b'{"message":{},"copies":[[[0]]],"pattern":0}\n'  # pattern 0
    two_strings = b'"strings":["' + b"s" * INTERN_MIN_LENGTH + b'","' + b"z" * INTERN_MIN_LENGTH + b'"]'
    for bad in (
        b'{"message":[1]}\n',
        b'{"message":{"content":{"$s":3}}}\n',
        b'{"message":{"content":{"$s":-1},"role":"u","name":"x"},' + two_strings + b"}\n",
        b'{"message":{"content":{"$s":true},"role":"u","name":"x"},' + two_strings + b"}\n",
        b'{"message":{},"changed":{"a:x":{}}}\n',  # a change before the full counters
        b'{"message":{},"changed":[1]}\n',
        history + b'{"message":{},"copies":[[[5]]],"pattern":0}\n',
        history + b'{"message":{},"copies":7,"pattern":0}\n',
        history + b'{"message":{},"copies":[{"0":1}],"pattern":0}\n',
        history + b'{"message":{},"copies":[[[0],"role"]],"pattern":0}\n',
        history + b'{"message":{"role":"u"},"copies":[[[0],null,["name"]]],"pattern":0}\n',
        history + b'{"message":{},"copies":[[[0],null,"name"]],"pattern":0}\n',
        history + b'{"message":{},"copies":[[[0],null,[],1]],"pattern":0}\n',
        history + b'{"message":{},"pattern":0}\n',  # a copy pattern never defined
        history + b'{"message":{},"copies":[[[0]]],"pattern":1}\n',  # defined out of sequence
        defined + b'{"message":{},"copies":[[[0]]],"pattern":0}\n',  # defined twice
        defined + b'{"message":{},"pattern":-1}\n',
        defined + b'{"message":{},"pattern":true}\n',
        history + b'{"message":{},"copies":[[[0]]],"pattern":"0"}\n',
        history + b'{"message":{},"copies":[[[0]]]}\n',  # copies without a pattern number (a draft format)
        b'{"message":null}\n',
    ):
        with pytest.raises(CorruptCheckpointError):
            LogReplay().apply_bytes(bad, path="log.jsonl")
    LogReplay().apply_bytes(defined)  # the well-formed prefix of the lines above


def _mutations(value: Any, rng: random.Random) -> Any:
    """``value`` with one nested value replaced by something of another shape (a hostile edit)."""
    hostile = [None, -1, 2**70, 1.5, True, "x", "", [], [[]], {}, {"$s": 10**6}, {"$lit": 7}, [None, [1]]]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        return {**value, key: _mutations(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = rng.randrange(len(value))
        return [*value[:index], _mutations(value[index], rng), *value[index + 1 :]]
    return rng.choice(hostile)


def test_hostile_edits_of_a_log_are_corruption_errors() -> None:
    """Any line of a real log changed to another shape either still replays or raises
    ``CorruptCheckpointError``, never another exception (the replay validates what it reads)."""
    from checkpoint_system.errors import CorruptCheckpointError

    chat, session = LiveChat(), Session()
    for step in range(6):
        chat.say(step)
        if step == 4:  # a copy without its name: a step line entry with removed keys
            chat.histories["coder"][MANAGER][-1] = {k: v for k, v in chat.messages[-1].items() if k != "name"}
        session.save(chat.snapshot(step), trusted=True)
    records = session.log_records()
    assert any("pattern" in r for r in records)
    rng = random.Random(20261121)
    outcomes = {"replayed": 0, "rejected": 0}
    for _ in range(600):
        index = rng.randrange(len(records))
        changed = [*records[:index], _mutations(records[index], rng), *records[index + 1 :]]
        data = "".join(json.dumps(r) + "\n" for r in changed).encode()
        try:
            LogReplay().apply_bytes(data, path="log.jsonl")
            outcomes["replayed"] += 1
        except CorruptCheckpointError:
            outcomes["rejected"] += 1
    assert outcomes["replayed"] and outcomes["rejected"] > 100, outcomes


def test_bytes_per_checkpoint_stay_flat() -> None:
    chat, session = LiveChat(), Session()
    record_sizes = []
    for step in range(1000):
        chat.say(step)
        encoded = session.save(chat.snapshot(step), trusted=True)
        record_sizes.append(len(dumps(encoded.record)))
    at_100 = sum(session.written[95:105]) / 10
    at_1000 = sum(session.written[990:1000]) / 10
    assert at_1000 <= at_100 * 1.05, (at_100, at_1000)
    assert record_sizes[999] <= record_sizes[99] * 1.05, (record_sizes[99], record_sizes[999])
    # One message costs its text once plus a few short references, not the whole conversation.
    assert at_1000 < 200 + 400 + 4 * 120, at_1000
    assert_same(session.load(999), frozen(chat.snapshot(999)))
