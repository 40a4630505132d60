"""The command line: ``python -m checkpoint_system list|show|continue|schema`` and the two example scripts.

Most cases call ``checkpoint_system.cli.main`` in-process (importing AG2 takes seconds per process); a few
run the real command in a subprocess from the repository root to check exit codes and output end to end.
Bad input (a truncated file, a directory, a missing path, ...) must give exit code 2 and a message naming
the file, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from restore_support import (
    EXAMPLES_DIR,
    REPO_ROOT,
    Original,
    run_original,
    session_checkpoints,
    subprocess_env,
)

from checkpoint_system import checkpoint_json_schema
from checkpoint_system import cli as checkpoint_cli


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Original]:
    cache: dict[tuple[str, str], Original] = {}

    def get(name: str, mode: str = "sync") -> Original:
        if (name, mode) not in cache:
            cache[name, mode] = run_original(
                name, mode, tmp_path_factory.mktemp(f"{name}_{mode}") / "session"
            )
        return cache[name, mode]

    return get


def _run(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _new_dirs(session: Path, before: set[str]) -> list[Path]:
    return sorted(p for p in session.iterdir() if p.is_dir() and p.name not in before)


# -- basics --------------------------------------------------------------------------------------------------


def test_list_and_show(originals: Callable[..., Original], capsys: pytest.CaptureFixture[str]) -> None:
    original = originals("tool_calls")
    capsys.readouterr()  # drop what running the original chat printed
    assert checkpoint_cli.main(["list", str(original.session_dir)]) == 0
    assert capsys.readouterr().out.split() == [str(p) for p in original.checkpoint_paths]

    path, data = original.checkpoint_paths[5], original.checkpoints[5]
    assert checkpoint_cli.main(["show", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert data.checkpoint_id in out[0] and f"step {data.step_number}" in out[0] and data.context in out[0]
    assert data.parent_checkpoint_id is not None and data.parent_checkpoint_id in out[1]
    listed = [line for line in out if line.lstrip().startswith("[")]
    assert len(listed) == len(data.messages) == 5
    for index, (line, message) in enumerate(zip(listed, data.messages, strict=True)):
        assert line.lstrip().startswith(f"[{index}] {message['name']}:")
    assert "10" in listed[2]  # the tool result


def test_show_prints_tool_calls(
    originals: Callable[..., Original], capsys: pytest.CaptureFixture[str]
) -> None:
    original = originals("tool_calls")
    capsys.readouterr()  # drop what running the original chat printed
    assert checkpoint_cli.main(["show", str(original.path_with(3))]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.lstrip().startswith("[1]"))
    assert "multiply" in line


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert checkpoint_cli.main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == checkpoint_json_schema()
    assert {"messages", "agent_states", "manager_state", "groupchat_state"} <= set(printed["properties"])


def test_documented_schema_is_current() -> None:
    """The README points to docs/checkpoint.schema.json, made with ``python -m checkpoint_system schema``."""
    documented = json.loads((REPO_ROOT / "docs" / "checkpoint.schema.json").read_text())
    assert documented == checkpoint_json_schema(), "docs/checkpoint.schema.json is stale: regenerate it"


def test_continue(originals: Callable[..., Original], capsys: pytest.CaptureFixture[str]) -> None:
    original = originals("round_robin")
    capsys.readouterr()  # drop what running the original chat printed
    session = original.session_dir
    before = {p.name for p in session.iterdir()}
    assert checkpoint_cli.main(["continue", str(original.path_with(3)), "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    (directory,) = _new_dirs(session, before)
    assert directory.name in out
    assert "2 new messages" in out
    transcript = json.loads((directory / "chat_history.json").read_text())
    assert transcript == original.messages[:5]
    chain = session_checkpoints(directory)
    assert chain[0].parent_checkpoint_id == original.path_with(3).stem

    # No --rounds: the remaining budget, to the original end.
    before = {p.name for p in session.iterdir()}
    assert checkpoint_cli.main(["continue", str(original.path_with(3))]) == 0
    (directory,) = _new_dirs(session, before)
    assert json.loads((directory / "chat_history.json").read_text()) == original.messages
    assert f"{len(original.messages) - 3} new messages" in capsys.readouterr().out

    # --async drives AG2's a_run_chat and gives the same chat.
    before = {p.name for p in session.iterdir()}
    assert checkpoint_cli.main(["continue", str(original.path_with(3)), "--async"]) == 0
    (directory,) = _new_dirs(session, before)
    assert json.loads((directory / "chat_history.json").read_text()) == original.messages
    capsys.readouterr()

    # The end of a chat whose budget is used up: nothing to do (exit 3), and the reason is printed.
    assert checkpoint_cli.main(["continue", str(original.checkpoint_paths[-1])]) == 3
    assert "budget" in capsys.readouterr().out


def test_continue_a_terminated_chat_needs_force(
    originals: Callable[..., Original], capsys: pytest.CaptureFixture[str]
) -> None:
    original = originals("termination_message")
    capsys.readouterr()  # drop what running the original chat printed
    path = original.path_with(len(original.messages))
    factory = "restore_support:termination_factory"
    assert checkpoint_cli.main(["continue", str(path), "--factory", factory]) == 3
    out = capsys.readouterr().out
    assert "termination" in out and "--force" in out
    assert checkpoint_cli.main(["continue", str(path), "--factory", factory, "--force", "--rounds", "3"]) == 0
    capsys.readouterr()


def test_continue_with_a_factory_and_on_mismatch(
    originals: Callable[..., Original], capsys: pytest.CaptureFixture[str]
) -> None:
    original = originals("tool_calls")
    capsys.readouterr()  # drop what running the original chat printed
    session = original.session_dir
    before = {p.name for p in session.iterdir()}
    arguments = ["continue", str(original.path_with(2)), "--factory", "restore_support:tool_calls_factory"]
    assert checkpoint_cli.main(arguments) == 0
    (directory,) = _new_dirs(session, before)
    assert json.loads((directory / "chat_history.json").read_text()) == original.messages
    meta = json.loads((directory / "continuation_metadata.json").read_text())
    assert meta["agent_source"] == "factory"
    capsys.readouterr()
    # A factory whose agents differ from the checkpoint's is refused (exit 2, the agent named) ...
    other = ["continue", str(original.path_with(2)), "--factory", "restore_support:round_robin_factory"]
    assert checkpoint_cli.main(other) == 2
    assert "planner" in capsys.readouterr().err
    # ... and without a factory its custom model client cannot come from the file: refused, with a hint.
    with pytest.warns(UserWarning):  # the tools are reported too
        assert checkpoint_cli.main(["continue", str(original.path_with(2)), "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert "ToolCallingModelClient" in err and "agent_factory" in err


# -- bad input -----------------------------------------------------------------------------------------------


def _bad_inputs(original: Original, tmp_path: Path) -> dict[str, Path]:
    source = original.checkpoint_paths[3].read_bytes()
    truncated = tmp_path / "truncated" / "checkpoints" / original.checkpoint_paths[3].name
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(source[: len(source) // 2])
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    foreign = tmp_path / "package.json"
    foreign.write_text(json.dumps({"name": "not-a-checkpoint", "version": "1.0.0"}))
    return {
        "truncated": truncated,
        "empty": empty,
        "foreign": foreign,
        "directory": original.session_dir,
        "missing": tmp_path / "no_such_checkpoint.json",
    }


@pytest.mark.parametrize("command", ["show", "continue"])
def test_bad_input_exits_with_2_naming_the_file(
    command: str, originals: Callable[..., Original], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = originals("round_robin")
    capsys.readouterr()  # drop what running the original chat printed
    before = {p.name for p in original.session_dir.iterdir()}
    for kind, path in _bad_inputs(original, tmp_path).items():
        assert checkpoint_cli.main([command, str(path)]) == 2, kind
        captured = capsys.readouterr()
        assert str(path) in captured.err, (kind, captured.err)
        assert "Traceback" not in captured.err + captured.out
    assert {p.name for p in original.session_dir.iterdir()} == before  # no continuation was started


def test_bad_input_in_a_subprocess(originals: Callable[..., Original], tmp_path: Path) -> None:
    bad = _bad_inputs(originals("round_robin"), tmp_path)
    completed = _run("-m", "checkpoint_system", "continue", str(bad["truncated"]), "--rounds", "3")
    assert completed.returncode == 2
    assert str(bad["truncated"]) in completed.stderr
    assert "Traceback" not in completed.stderr


def test_list_of_a_missing_directory_exits_with_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no_such_session"
    assert checkpoint_cli.main(["list", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_list_of_an_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert checkpoint_cli.main(["list", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().out


def test_bad_arguments(originals: Callable[..., Original], capsys: pytest.CaptureFixture[str]) -> None:
    path = str(originals("round_robin").path_with(3))
    for arguments in (["continue", path, "--edit", "1"], ["continue", path, "--append", "x"]):
        with pytest.raises(SystemExit) as exited:
            checkpoint_cli.main(arguments)
        assert exited.value.code not in (0, None)
    with pytest.raises(SystemExit) as exited:
        checkpoint_cli.main(["continue", path, "--replace", "1", "--message", "{not json"])
    assert "JSON" in str(exited.value.code)
    with pytest.raises(SystemExit):
        checkpoint_cli.main(["frobnicate"])
    capsys.readouterr()


# -- the examples --------------------------------------------------------------------------------------------


def test_examples_mathchat_then_continue(tmp_path: Path) -> None:
    session = tmp_path / "mathchat"
    made = _run(str(EXAMPLES_DIR / "mathchat_with_checkpoints.py"), "--session-dir", str(session))
    assert made.returncode == 0, made.stdout + made.stderr
    transcript = json.loads((session / "chat_history.json").read_text())
    assert "110" in transcript[-1]["content"]
    executed = [m for m in transcript if m.get("name") == "code_executor"]
    assert executed and "110" in executed[0]["content"]  # real local Python execution
    paths = sorted(
        (session / "checkpoints").glob("checkpoint_*.json"), key=lambda p: int(p.name.split("_")[1])
    )
    assert len(paths) == len(transcript) + 2
    before = {p.name for p in session.iterdir()}

    # From the solver's code message: the executor runs it again and the verifier confirms.
    start = paths[2]
    continued = _run(str(EXAMPLES_DIR / "continue_from_checkpoint.py"), str(start), "--rounds", "5")
    assert continued.returncode == 0, continued.stdout + continued.stderr
    (directory,) = _new_dirs(session, before)
    assert directory.name in continued.stdout
    assert json.loads((directory / "chat_history.json").read_text()) == transcript
    meta = json.loads((directory / "continuation_metadata.json").read_text())
    assert Path(meta["parent_checkpoint_file"]).resolve() == start.resolve()
    assert meta["outcome"] == "continued"
