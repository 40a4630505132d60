"""The live checkpoint path (``take_checkpoint(live=True)``): its shortcuts must not change what is stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from scenarios import EventRecorder, Scenario, build_round_robin
from test_delta import MANAGER, Session, assert_same, checkpoint, frozen, long_text

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager
from checkpoint_system import snapshot as snapshot_module
from checkpoint_system.model import STATIC_FIELDS_KEY, CheckpointData, GroupChatState
from checkpoint_system.snapshot import _by_name, _checkpoint_data, conversation_snapshot, utc_timestamp
from checkpoint_system.storage.delta import (
    INTERN_MIN_LENGTH,
    DeltaEncoder,
    LogReplay,
    _EncodeJob,
    checkpoint_from_record,
)


def test_live_checkpoints_encode_like_kept_snapshots(
    build: Callable[[], Scenario], events: EventRecorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every live checkpoint of a real chat logs the same bytes and record as a full, kept snapshot of the
    same moment encoded without trusting anything (models instead of field dicts, lists compared in full)."""
    live: list[tuple[bytes, Any]] = []  # log bytes and record (a copy: the store completes the record)
    kept: list[tuple[bytes, Any]] = []
    shadow = DeltaEncoder()
    encode = DeltaEncoder.encode

    def recording_encode(self: DeltaEncoder, data: CheckpointData, *, trusted_prefix: bool = False) -> Any:
        encoded = encode(self, data, trusted_prefix=trusted_prefix)
        if self is not shadow:
            live.append((encoded.log_bytes, orjson.loads(orjson.dumps(encoded.record))))
        return encoded

    monkeypatch.setattr(DeltaEncoder, "encode", recording_encode)
    checkpoint_manager = CheckpointManager(tmp_path / "session")
    create = checkpoint_manager.create_conversation_checkpoint

    def create_both(*args: Any, **kwargs: Any) -> CheckpointData:
        data = create(*args, **kwargs)
        assert kwargs["copy_histories"] is False  # every checkpoint of a run is a live one
        full = create(*args, **{**kwargs, "copy_histories": True})
        full = full.model_copy(update={"checkpoint_id": data.checkpoint_id, "timestamp": data.timestamp})
        encoded = encode(shadow, full, trusted_prefix=False)
        shadow.commit(encoded)
        kept.append((encoded.log_bytes, orjson.loads(orjson.dumps(encoded.record))))
        return data

    monkeypatch.setattr(checkpoint_manager, "create_conversation_checkpoint", create_both)
    scenario = build()
    manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoint_manager)
    with events.installed():
        scenario.run(manager)
    checkpoint_manager.close()

    assert len(live) == len(kept) >= 2
    assert live == kept
    replay = LogReplay()
    replay.apply_bytes(b"".join(log_bytes for log_bytes, _ in live))
    last = checkpoint_from_record(live[-1][1], replay)
    assert last.messages == scenario.groupchat.messages


def test_live_snapshot_hands_over_the_settings_dicts_models_do_not_hold_them() -> None:
    scenario = build_round_robin()
    manager = scenario.make_manager()
    kwargs: dict[str, Any] = {
        "agents": scenario.agents,
        "manager": manager,
        "messages": scenario.groupchat.messages,
        "checkpoint_id": "checkpoint_0_test",
        "step_number": 0,
        "context": "test",
    }
    live = conversation_snapshot(**kwargs, copy_histories=False)
    again = conversation_snapshot(**kwargs, copy_histories=False)
    for name, fields in live.agent_states.items():
        static = fields[STATIC_FIELDS_KEY]
        assert static is again.agent_states[name][STATIC_FIELDS_KEY]  # unchanged: the same dict
        assert all(fields[key] is value for key, value in static.items())
    live_groupchat: Any = live.groupchat_state  # plain dicts in a live snapshot
    again_groupchat: Any = again.groupchat_state
    assert live_groupchat[STATIC_FIELDS_KEY] is again_groupchat[STATIC_FIELDS_KEY]

    kept = conversation_snapshot(**kwargs, copy_histories=True)
    assert isinstance(kept.groupchat_state, GroupChatState)
    assert not kept.groupchat_state.model_extra
    assert all(
        not state.model_extra or STATIC_FIELDS_KEY not in state.model_extra
        for state in kept.agent_states.values()
    )
    assert kept.model_dump()["groupchat_state"] == {
        k: v for k, v in live_groupchat.items() if k != STATIC_FIELDS_KEY
    }


def test_checkpoint_data_built_directly_equals_model_construct() -> None:
    fields: dict[str, Any] = {
        "format_version": 3,
        "checkpoint_id": "checkpoint_1_test",
        "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "step_number": 1,
        "context": "test",
        "messages": [{"role": "user", "content": "hi"}],
        "agent_states": {},
        "manager_state": None,
        "groupchat_state": None,
        "parent_checkpoint_id": None,
        "session_id": "s",
        "ag2_version": "0.14.0",
        "library_version": "0.1.0",
        "metadata": {"delivered": True},
        "integrity": None,
    }
    assert set(fields) == set(CheckpointData.model_fields)  # a new model field: add it here
    direct, constructed = _checkpoint_data(dict(fields)), CheckpointData.model_construct(**fields)
    assert direct.__dict__ == constructed.__dict__
    assert direct.model_fields_set == constructed.model_fields_set
    assert direct.__pydantic_extra__ == constructed.__pydantic_extra__
    assert direct.__pydantic_private__ == constructed.__pydantic_private__
    assert direct == constructed
    assert direct.model_dump() == constructed.model_dump()
    direct.context = "changed"  # assignment works as on any model
    assert direct.context == "changed"

    partial = {k: v for k, v in fields.items() if k != "metadata"}  # (a field the snapshot does not set)
    assert _checkpoint_data(partial) == CheckpointData.model_construct(**partial)  # model_construct's default


def test_by_name_uses_names_and_str_for_keys_without_one() -> None:
    class Named:
        name = "alice"

    class Broken:
        @property
        def name(self) -> str:
            raise AttributeError("no name yet")

        def __str__(self) -> str:
            return "broken"

    assert _by_name({Named(): 1, "bob": 2, Broken(): 3}) == {"alice": 1, "bob": 2, "broken": 3}


def test_utc_timestamp_format_and_second_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(timezone.utc)
    stamp = utc_timestamp()
    assert abs((datetime.fromisoformat(stamp) - now).total_seconds()) < 5
    assert stamp == datetime.fromisoformat(stamp).isoformat(timespec="microseconds")

    class Clock:
        ns = 1_700_000_000_999_999_999

        def time_ns(self) -> int:
            return self.ns

    clock = Clock()
    monkeypatch.setattr(snapshot_module, "time", clock)
    assert utc_timestamp() == "2023-11-14T22:13:20.999999+00:00"
    clock.ns += 1  # the next second: formatted again, and no microseconds dropped
    assert utc_timestamp() == "2023-11-14T22:13:21.000000+00:00"
    clock.ns = 0
    assert utc_timestamp() == "1970-01-01T00:00:00.000000+00:00"


@pytest.mark.parametrize("trusted", [False, True])
def test_group_message_copies_round_trip(trusted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies of the newest group chat message that differ in role/name only (replaced, missing, added, a long
    name) are logged as references, others in full; trusted, nothing already logged is compared again."""
    compared: list[Any] = []
    peek = _EncodeJob.peek
    monkeypatch.setattr(_EncodeJob, "peek", lambda job, item: compared.append(item) or peek(job, item))
    session, expected = Session(), []
    messages: list[dict[str, Any]] = []
    histories: dict[str, dict[str, list[dict[str, Any]]]] = {
        "planner": {MANAGER: []},  # history 0
        "coder": {MANAGER: []},  # 1
        "critic": {MANAGER: []},  # 2
        MANAGER: {"planner": [], "coder": [], "critic": []},  # 3, 4, 5
    }
    long_name = "n" * (INTERN_MIN_LENGTH + 5)
    for step in range(3):
        base = {"role": "user", "name": "planner", "content": long_text(step)}
        if step == 2:
            del base["name"]
        messages.append(base)
        histories["planner"][MANAGER].append(dict(base))
        histories["coder"][MANAGER].append({**base, "role": "assistant"})
        histories["critic"][MANAGER].append({"role": "user", "content": base["content"]})
        histories[MANAGER]["planner"].append({**base, "name": long_name})
        histories[MANAGER]["coder"].append({**base, "tool_calls": []})
        histories[MANAGER]["critic"].append({"content": base["content"], "role": "user"})
        data = checkpoint(step, [], {})
        data.messages = list(messages)  # assigned, not validated: the message objects stay shared
        for name, state in [*data.agent_states.items(), (MANAGER, data.manager_state)]:
            assert state is not None
            state.oai_messages = {peer: list(items) for peer, items in histories[name].items()}
        expected.append(frozen(data))
        session.save(data, trusted=trusted)
    assert bool(compared) is not trusted
    for index, data in enumerate(expected):
        assert_same(session.load(index), data)
    long_ref = {"$s": 1}  # strings 0, 2 and 3 are the contents
    assert [r for r in session.log_records() if "copy" in r or "append" in r] == [
        *(
            record
            for j, content in ((0, 0), (1, 2))
            for record in (
                {
                    "append": 4,
                    "item": {"role": "user", "name": "planner", "content": {"$s": content}, "tool_calls": []},
                },
                {"copy": [0], "of": j},
                {"copy": [1], "of": j, "replace": {"role": "assistant"}},
                {"copy": [2, 5], "of": j, "remove": ["name"]},
                {"copy": [3], "of": j, "replace": {"name": long_ref}},
            )
        ),
        {"append": 4, "item": {"role": "user", "content": {"$s": 3}, "tool_calls": []}},
        {"copy": [0, 2, 5], "of": 2},
        {"copy": [1], "of": 2, "replace": {"role": "assistant"}},
        {"copy": [3], "of": 2, "replace": {"name": long_ref}},
    ]


@pytest.mark.parametrize("silent", [True, False])
def test_a_live_checkpoint_keeps_the_managers_silent_flag(silent: bool, tmp_path: Path) -> None:
    scenario = build_round_robin()
    scenario.manager_kwargs = {**scenario.manager_kwargs, "silent": silent}
    checkpoint_manager = CheckpointManager(tmp_path / "session")
    manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoint_manager)
    scenario.run(manager)
    checkpoint_manager.close()
    for checkpoint_id in checkpoint_manager.list_checkpoints():
        state = checkpoint_manager.load_checkpoint(checkpoint_id).manager_state
        assert state is not None and state.silent is silent


def test_live_checkpoints_follow_configuration_changes_during_a_run(tmp_path: Path) -> None:
    """The store skips unchanged settings by identity; a setting changed mid-run must still be logged."""
    scenario = build_round_robin()
    planner = scenario.agent("planner")
    checkpoint_manager = CheckpointManager(tmp_path / "session")
    manager = scenario.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoint_manager)
    replies = 0

    def change_settings(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal replies
        replies += 1
        planner.update_system_message(f"planner, version {replies}")
        manager._silent = replies % 2 == 0  # the manager's flag is logged with its settings
        return messages

    planner.register_hook("process_all_messages_before_reply", change_settings)
    seen: dict[str, tuple[str, bool]] = {}  # checkpoint id: the settings when it was taken
    take = checkpoint_manager.take_checkpoint

    def recording_take(**kwargs: Any) -> str | None:
        checkpoint_id = take(**kwargs)
        assert checkpoint_id is not None
        seen[checkpoint_id] = (planner.system_message, manager._silent)
        return checkpoint_id

    checkpoint_manager.take_checkpoint = recording_take  # type: ignore[method-assign]
    scenario.run(manager)
    checkpoint_manager.close()
    assert replies >= 2 and len({settings for settings in seen.values()}) >= 3
    for checkpoint_id, (system_message, silent) in seen.items():
        loaded = checkpoint_manager.load_checkpoint(checkpoint_id)
        assert loaded.agent_states["planner"].system_message == system_message
        assert loaded.manager_state is not None and loaded.manager_state.silent is silent
