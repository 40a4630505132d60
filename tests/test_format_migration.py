"""Sessions written in the previous checkpoint format (2) keep loading and continuing.

``tests/fixtures/format2_session/`` is a real math-chat session (with a continuation and an intervention
continuation inside it) written by this library before format 3 moved agent state into the log. Every
checkpoint of it must load through the format-2 reader, equal what the session's own transcript says, and a
continuation from it must finish the chat (in a temporary copy: the fixture is never written to).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import orjson
import pytest

from checkpoint_system import FORMAT_VERSION, read_checkpoint_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "format2_session"
sys.path.insert(0, str(ROOT / "examples"))

import continue_from_checkpoint  # noqa: E402

CHECKPOINTS = sorted(FIXTURE.rglob("checkpoints/checkpoint_*.json"))


def test_the_fixture_is_in_the_previous_format() -> None:
    assert FORMAT_VERSION == 3
    assert len(CHECKPOINTS) >= 15
    versions = {orjson.loads(path.read_bytes())["format_version"] for path in CHECKPOINTS}
    assert versions == {2}


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: f"{p.parent.parent.name}/{p.stem[:24]}")
def test_every_format2_checkpoint_loads(path: Path) -> None:
    data = read_checkpoint_file(path)
    assert data.format_version == 2
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


def test_a_format2_session_continues(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "format2_session"
    shutil.copytree(FIXTURE, copy)
    start = sorted((copy / "checkpoints").glob("checkpoint_2_*.json"))[0]
    assert continue_from_checkpoint.main([str(start), "--rounds", "5"]) == 0
    out = capsys.readouterr().out
    assert "answer: 110" in out
    made = sorted(p for p in copy.iterdir() if p.name.startswith("continuation_"))[-1]
    written = sorted((made / "checkpoints").glob("checkpoint_*.json"))
    assert written and all(orjson.loads(p.read_bytes())["format_version"] == 3 for p in written)
    original = json.loads((FIXTURE / "chat_history.json").read_text(encoding="utf-8"))
    continued = json.loads((made / "chat_history.json").read_text(encoding="utf-8"))
    assert [m["content"] for m in continued] == [m["content"] for m in original]
