"""logs_sample/ (a real math-chat session with two continuations) keeps loading and continuing.

Every checkpoint in it is loaded; continuations run in a temporary copy, so logs_sample/ is never written to.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from checkpoint_system import read_checkpoint_file
from checkpoint_system.recording import RECORDING_FILE, iter_records, lineage_directories

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "logs_sample"
sys.path.insert(0, str(ROOT / "examples"))

import continue_from_checkpoint  # noqa: E402
import mathchat_with_checkpoints as mathchat  # noqa: E402


def sessions() -> list[Path]:
    return sorted(p for p in SAMPLE.iterdir() if p.is_dir() and p.name.startswith("session_"))


def session_dirs() -> list[Path]:
    """The session and every continuation under it."""
    found = []
    for session in sessions():
        found += [session, *sorted(p for p in session.rglob("continuation_*") if p.is_dir())]
    return found


def continuations(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("continuation_*") if p.is_dir())


def all_checkpoints() -> list[Path]:
    return sorted(SAMPLE.rglob("checkpoints/checkpoint_*.json"))


def step_of(path: Path) -> int:
    return int(path.name.split("_")[1])


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def contents(messages: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(m.get("name"), m.get("content")) for m in messages]


def test_the_sample_has_a_session_a_continuation_and_an_intervention() -> None:
    assert (SAMPLE / "README.md").is_file()
    assert len(sessions()) == 1
    session = sessions()[0]
    for name in ("chat_history.json", "problem_statement.txt", "session_metadata.json", RECORDING_FILE):
        assert (session / name).is_file(), name
    branches = continuations(session)
    assert len(branches) == 2
    records = [json.loads((c / "continuation_metadata.json").read_text(encoding="utf-8")) for c in branches]
    assert [bool(r["interventions"]) for r in records] == [False, True]
    assert all(r["outcome"] == "continued" for r in records)
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 400_000, total


@pytest.mark.parametrize("path", all_checkpoints(), ids=lambda p: str(p.relative_to(SAMPLE)))
def test_every_checkpoint_loads(path: Path) -> None:
    data = read_checkpoint_file(path)
    assert data.checkpoint_id == path.stem
    assert data.step_number == step_of(path)
    assert set(data.agent_states) >= {"solver", "code_executor", "verifier"}
    assert data.manager_state is not None and data.groupchat_state is not None
    assert mathchat.is_example_checkpoint(data)
    if "continuation_" in str(path.relative_to(SAMPLE)):
        assert data.metadata.get("continuation_of"), "a continuation's checkpoints name their parent"
    # no absolute path of the machine that wrote it
    assert "/tmp/" not in str(data.metadata.get("session_dir")) and "/work/" not in str(data.metadata)


def test_every_directory_of_the_sample_is_loadable_as_a_session() -> None:
    for directory in session_dirs():
        files = sorted((directory / "checkpoints").glob("checkpoint_*.json"), key=step_of)
        assert files, directory
        contexts = [read_checkpoint_file(f).context for f in files]
        assert contexts[0] == "conversation_start" and contexts[-1] == "conversation_end"
        for record in iter_records(directory):
            assert record["agent"] in ("solver", "verifier") and record["response"]["choices"]


def test_continuing_from_the_sample_replays_the_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(SAMPLE)
    copy = tmp_path / "logs_sample"
    shutil.copytree(SAMPLE, copy)
    session = sessions()[0]
    copied_session = copy / session.name
    original = json.loads((session / "chat_history.json").read_text(encoding="utf-8"))

    # The session from checkpoint 2: the verifier's answer comes from the recording, bit for bit.
    start = sorted((copied_session / "checkpoints").glob("checkpoint_2_*.json"))[0]
    assert continue_from_checkpoint.main([str(start), "--rounds", "5"]) == 0
    out = capsys.readouterr().out
    assert "1 replayed from the recording, 0 new" in out and "answer: 110" in out
    made = continuations(copied_session)[-1]
    assert contents(json.loads((made / "chat_history.json").read_text(encoding="utf-8"))) == contents(
        original
    )
    assert not (made / RECORDING_FILE).exists()

    # The intervention continuation, continued again: its own recording is found through the lineage.
    intervened = continuations(session)[1]
    branch = json.loads((intervened / "chat_history.json").read_text(encoding="utf-8"))
    copied_branch = copy / intervened.relative_to(SAMPLE)
    start = sorted((copied_branch / "checkpoints").glob("checkpoint_2_*.json"))[0]
    assert continue_from_checkpoint.main([str(start), "--rounds", "8"]) == 0
    out = capsys.readouterr().out
    assert "3 replayed from the recording, 0 new" in out and "answer: 110" in out
    made = continuations(copied_branch)[-1]
    assert contents(json.loads((made / "chat_history.json").read_text(encoding="utf-8"))) == contents(branch)
    assert [p.resolve() for p in lineage_directories(made)] == [
        made.resolve(),
        copied_branch.resolve(),
        copied_session.resolve(),
    ]

    assert snapshot(SAMPLE) == before  # the sample itself was never written to
