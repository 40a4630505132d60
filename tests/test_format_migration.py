"""Sessions written in earlier checkpoint formats (2, 3 and 4) keep loading and continuing.

``tests/fixtures/format2_session/``, ``format3_session/`` and ``format4_session/`` are real math-chat
sessions (each with a continuation and an intervention continuation inside it) written by this library:
format 2 before agent state moved into the log, format 3 before strings rode on the lines that use them
and counters were logged as changes (and with the ``committed.jsonl`` of its time), format 4 before a
message and its copies shared one step line. Every checkpoint must load, equal what the
session's own transcript says, and a continuation from it must finish the chat in the current format (in a
temporary copy: the fixtures are never written to).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import orjson
import pytest

from checkpoint_system import FORMAT_VERSION, CheckpointManager, read_checkpoint_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = {version: ROOT / "tests" / "fixtures" / f"format{version}_session" for version in (2, 3, 4, 5)}
sys.path.insert(0, str(ROOT / "examples"))

import continue_from_checkpoint  # noqa: E402

CHECKPOINTS = [
    (version, path)
    for version, fixture in FIXTURES.items()
    for path in sorted(fixture.rglob("checkpoints/checkpoint_*.json"))
]


@pytest.mark.parametrize("version", sorted(FIXTURES))
def test_the_fixtures_are_in_earlier_formats(version: int) -> None:
    assert FORMAT_VERSION == 6
    paths = [path for v, path in CHECKPOINTS if v == version]
    assert len(paths) >= 15
    assert {orjson.loads(path.read_bytes())["format_version"] for path in paths} == {version}


@pytest.mark.parametrize(
    ("version", "path"),
    CHECKPOINTS,
    ids=lambda p: f"{p.parent.parent.name}/{p.stem[:24]}" if isinstance(p, Path) else str(p),
)
def test_every_earlier_checkpoint_loads(version: int, path: Path) -> None:
    data = read_checkpoint_file(path)
    assert data.format_version == version
    assert data.checkpoint_id == path.stem
    assert set(data.agent_states) >= {"solver", "code_executor", "verifier"}
    assert data.manager_state is not None and data.groupchat_state is not None
    transcript = json.loads((path.parent.parent / "chat_history.json").read_text(encoding="utf-8"))
    assert data.messages == transcript[: len(data.messages)]
    if data.context != "message_appended":
        return
    for state in data.agent_states.values():  # every agent's history ends with the group chat's messages
        history = state.oai_messages.get(data.manager_state.name, [])
        assert [m.get("content") for m in history[-len(data.messages) :]] == [
            m.get("content") for m in data.messages[-len(history) :]
        ]


@pytest.mark.parametrize("version", sorted(FIXTURES))
def test_an_earlier_session_continues(
    version: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "session"
    shutil.copytree(FIXTURES[version], copy)
    start = sorted((copy / "checkpoints").glob("checkpoint_2_*.json"))[0]
    assert continue_from_checkpoint.main([str(start), "--rounds", "5"]) == 0
    out = capsys.readouterr().out
    assert "answer: 110" in out
    made = sorted(p for p in copy.iterdir() if p.name.startswith("continuation_"))[-1]
    written = sorted((made / "checkpoints").glob("checkpoint_*.json"))
    assert written and all(orjson.loads(p.read_bytes())["format_version"] == FORMAT_VERSION for p in written)
    original = json.loads((FIXTURES[version] / "chat_history.json").read_text(encoding="utf-8"))
    continued = json.loads((made / "chat_history.json").read_text(encoding="utf-8"))
    assert [m["content"] for m in continued] == [m["content"] for m in original]


@pytest.mark.parametrize("version", [3, 4, 5])
def test_an_earlier_log_grows_in_the_current_format(version: int, tmp_path: Path) -> None:
    """A writer reopening an earlier session appends current-format lines; old and new checkpoints load."""
    copy = tmp_path / "session"
    shutil.copytree(FIXTURES[version], copy)
    manager = CheckpointManager(copy)
    before = manager.list_checkpoints()
    newest = manager.load_checkpoint(before[-1])
    step = manager.next_step_number()
    assert newest.manager_state is not None
    grown = newest.model_copy(deep=True)
    message = {"content": "one more message, long enough to be a string of the table", "role": "user"}
    grown.messages.append({**message, "name": "verifier"})
    for name, state in grown.agent_states.items():  # every agent's copy, the speaker's as its own
        copy_of = {**message, "role": "assistant"} if name == "verifier" else {**message, "name": "verifier"}
        state.oai_messages.setdefault(grown.manager_state.name, []).append(copy_of)
    for saved in (
        newest.model_copy(update={"step_number": step, "context": "manual", "checkpoint_id": "again"}),
        grown.model_copy(update={"step_number": step + 1, "context": "manual", "checkpoint_id": "grown"}),
    ):
        assert manager.save_checkpoint(saved)
    manager.close()
    after = manager.list_checkpoints()
    assert after[: len(before)] == before and len(after) == len(before) + 2
    again, loaded = manager.load_checkpoint(after[-2]), manager.load_checkpoint(after[-1])
    assert again.format_version == loaded.format_version == FORMAT_VERSION
    assert again.messages == newest.messages and again.agent_states == newest.agent_states
    assert loaded.messages == grown.messages and loaded.agent_states == grown.agent_states
    last_line = orjson.loads((copy / "checkpoints" / "message_log.jsonl").read_bytes().splitlines()[-1])
    assert "M" in last_line  # the new message went on a step line after the old format's lines
    assert [manager.load_checkpoint(cid).format_version for cid in before] == [version] * len(before)
