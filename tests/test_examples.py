"""The math-chat examples: README commands as offline subprocesses in a tmp directory, the rest in-process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from checkpoint_system import read_checkpoint_file
from checkpoint_system.recording import RECORDING_FILE, iter_records

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mathchat_with_checkpoints.py"
CONTINUE = ROOT / "examples" / "continue_from_checkpoint.py"
PROBLEMS = ROOT / "examples" / "problems_sample.jsonl"
LIVE_VARIABLES = (
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT",
)
CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)_([a-z_]+)_(\d{8}_\d{6}_\d{6})\.json$")


def offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LIVE_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def start(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=offline_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def offline_example(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example module, imported in-process, with no live credentials in the environment."""
    for name in LIVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import mathchat_with_checkpoints

    return mathchat_with_checkpoints


@dataclass
class Ran:
    returncode: int
    out: str
    err: str


def finish(process: subprocess.Popen[str]) -> Ran:
    out, err = process.communicate(timeout=120)
    return Ran(process.returncode, out, err)


@dataclass
class Runs:
    cwd: Path
    single: Ran

    @property
    def session(self) -> Path:
        found = sorted((self.cwd / "logs").glob("session_*"))
        assert len(found) == 1, found
        return found[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The README command, with no arguments, in a fresh directory."""
    cwd = tmp_path_factory.mktemp("example")
    return Runs(cwd, finish(start(EXAMPLE, cwd=cwd)))


def test_offline_run_finds_110_on_the_demo_model(runs: Runs) -> None:
    assert runs.single.returncode == 0, runs.single.err
    out = runs.single.out
    assert "deterministic demo model" in out
    assert "answer: 110" in out and "(solved)" in out
    rounds = [line for line in out.splitlines() if "[round" in line]
    assert [line.split("->")[0].split()[-1] for line in rounds] == [
        "verifier",
        "solver",
        "code_executor",
        "verifier",
    ]
    assert "summary" in out and "continue with: python examples/continue_from_checkpoint.py" in out


def test_offline_run_writes_the_session_layout(runs: Runs) -> None:
    session = runs.session
    assert re.fullmatch(r"session_\d{8}_\d{6}(_\d{6})?", session.name)
    for name in ("chat_history.json", "problem_statement.txt", "session_metadata.json", RECORDING_FILE):
        assert (session / name).is_file(), name
    files = sorted(
        (session / "checkpoints").glob("checkpoint_*.json"), key=lambda p: int(p.name.split("_")[1])
    )
    assert files and all(CHECKPOINT_NAME.match(p.name) for p in files)
    contexts = [CHECKPOINT_NAME.match(p.name).group(2) for p in files]  # type: ignore[union-attr]
    assert contexts[0] == "conversation_start" and contexts[-1] == "conversation_end"
    assert set(contexts[1:-1]) == {"message_appended"}
    last = read_checkpoint_file(files[-1])
    assert "SOLUTION_FOUND \\boxed{110}" in str(last.messages[-1]["content"])
    assert last.metadata["model"] == "demo"
    assert "Gerald" in (session / "problem_statement.txt").read_text(encoding="utf-8")
    metadata = json.loads((session / "session_metadata.json").read_text(encoding="utf-8"))
    assert metadata["model"] == "demo" and "demo model" in metadata["model_label"]
    assert metadata["outcome"]["answer"] == "110" and metadata["outcome"]["solved"] is True
    history = json.loads((session / "chat_history.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in history] == ["verifier", "solver", "code_executor", "verifier"]
    assert re.search(r"Code output:\s*110\b", history[2]["content"])  # the executor really ran the code
    records = list(iter_records(session))
    assert [r["agent"] for r in records] == ["solver", "verifier"]
    assert [r["response"]["choices"][0]["message"]["content"] for r in records] == [
        history[1]["content"],
        history[3]["content"],
    ]
    assert (session / "work").is_dir()


def test_batch_runs_each_problem_into_its_own_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--problem-file examples/problems_sample.jsonl``, in-process (the subprocesses cover start-up)."""
    mathchat = offline_example(monkeypatch)
    batch_dir = tmp_path / "batch"
    code = mathchat.main(["--problem-file", str(PROBLEMS), "--session-dir", str(batch_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [json.loads(line) for line in PROBLEMS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert f"solved {len(rows)}/{len(rows)}" in out
    assert "problems [" in out  # the progress bar (tqdm on a terminal, a plain bar in a pipe)
    summary = json.loads((batch_dir / "batch_summary.json").read_text(encoding="utf-8"))
    assert summary["solved"] == summary["total"] == len(rows)
    for number, (row, problem) in enumerate(zip(rows, summary["problems"], strict=True), start=1):
        session = batch_dir / f"session_{number:03d}"
        assert problem["session_dir"] == session.name and problem["solved"]
        assert row["answer"].split("####")[-1].strip() == problem["answer"]
        assert (session / "chat_history.json").is_file() and (session / RECORDING_FILE).is_file()
        assert row["question"] == (session / "problem_statement.txt").read_text(encoding="utf-8")
        assert (session / "checkpoints").is_dir() and (session / "session_metadata.json").is_file()


def test_batch_reports_unsolved_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong answer and a problem the demo model does not know are reported as unsolved."""
    mathchat = offline_example(monkeypatch)

    problems = tmp_path / "problems.jsonl"
    known = PROBLEMS.read_text(encoding="utf-8").splitlines()[0]
    wrong = json.loads(known) | {"answer": "#### 111"}
    unknown = {"question": "How many moons does a shoe have?", "answer": "0"}
    problems.write_text("\n".join([known, json.dumps(wrong), json.dumps(unknown)]) + "\n", encoding="utf-8")
    code = mathchat.main(
        ["--problem-file", str(problems), "--session-dir", str(tmp_path / "b"), "--max-round", "6"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "solved 1/3" in out and out.count("UNSOLVED") >= 2
    summary = json.loads((tmp_path / "b" / "batch_summary.json").read_text(encoding="utf-8"))
    assert [p["solved"] for p in summary["problems"]] == [True, False, False]
    assert [p["answer"] for p in summary["problems"]] == ["110", "110", None]


def test_continue_from_checkpoint_replays_offline(runs: Runs) -> None:
    session = runs.session
    original = json.loads((session / "chat_history.json").read_text(encoding="utf-8"))
    recording = (session / RECORDING_FILE).read_bytes()
    checkpoint = sorted((session / "checkpoints").glob("checkpoint_2_message_appended_*.json"))[0]
    ran = finish(start(CONTINUE, checkpoint.relative_to(runs.cwd), "--rounds", "5", cwd=runs.cwd))
    assert ran.returncode == 0, ran.err + ran.out
    assert "1 replayed from the recording, 0 new" in ran.out and "answer: 110" in ran.out
    continuation = next(p for p in session.glob("continuation_*") if p.is_dir())
    history = json.loads((continuation / "chat_history.json").read_text(encoding="utf-8"))
    assert [(m["name"], m["content"]) for m in history] == [(m["name"], m["content"]) for m in original]
    assert not (continuation / RECORDING_FILE).exists()  # nothing new was asked of a model
    assert (session / RECORDING_FILE).read_bytes() == recording
    metadata = json.loads((continuation / "continuation_metadata.json").read_text(encoding="utf-8"))
    assert metadata["outcome"] == "continued" and metadata["parent_checkpoint_step"] == 2
    assert (continuation / "work").is_dir()


def test_a_live_session_replays_without_a_key_and_stops_clearly_after_an_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 'live' session (the demo policy stands in for the live model, offline) continued with no key set."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import continue_from_checkpoint
    import mathchat_with_checkpoints as mathchat

    from checkpoint_system.testing import DeterministicModelClient

    key = "sk-test-LIVE-KEY-0123456789"

    class StandIn(mathchat.ModelSetup):
        def inner(self, agent_name: str) -> DeterministicModelClient:
            return DeterministicModelClient({"model": agent_name}, policy=mathchat.demo_policy)

    for name in LIVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    setup = mathchat.model_setup()
    assert setup.kind == "live" and setup.live_entry == {"model": "gpt-4o-mini", "api_key": key}
    session = tmp_path / "session_live"
    stand_in = StandIn("live", setup.model, "live (offline stand-in)", setup.live_entry)
    outcome = mathchat.run(mathchat.DEFAULT_PROBLEM, session, setup=stand_in, expected="110")
    assert outcome.solved and outcome.calls == {"replayed": 0, "recorded": 2}
    for path in session.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path

    monkeypatch.delenv("OPENAI_API_KEY")
    checkpoint = sorted((session / "checkpoints").glob("checkpoint_2_message_appended_*.json"))[0]
    assert continue_from_checkpoint.main([str(checkpoint), "--rounds", "5"]) == 0
    out = capsys.readouterr().out
    assert "replay only: no API key set" in out and "1 replayed from the recording, 0 new" in out
    assert "answer: 110" in out

    edited = "Plan: multiply.\n```python\nprint(30 * 7 - 10)\n```"
    code = continue_from_checkpoint.main(
        [str(checkpoint), "--rounds", "5", "--edit", "1", "--content", edited]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "diverged from the recording" in captured.err
    assert "agent 'verifier' at step 3" in captured.err and "message 1" in captured.err


def test_model_setup_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import mathchat_with_checkpoints as mathchat

    from checkpoint_system.recording import live_client

    assert mathchat.model_setup({}).kind == "demo"
    assert mathchat.model_setup({"OPENAI_API_KEY": "sk-x"}, demo=True).kind == "demo"
    openai = mathchat.model_setup({"OPENAI_API_KEY": "sk-x", "OPENAI_MODEL": "gpt-4.1-mini"})
    assert (openai.kind, openai.model) == ("live", "gpt-4.1-mini")
    azure = mathchat.model_setup(
        {
            "AZURE_OPENAI_API_KEY": "az-key",
            "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com/",
            "AZURE_OPENAI_DEPLOYMENT": "my-gpt4o",
            "AZURE_OPENAI_API_VERSION": "2024-06-01",
        }
    )
    assert azure.kind == "live" and azure.model == "my-gpt4o"
    assert azure.live_entry == {
        "model": "my-gpt4o",
        "api_type": "azure",
        "base_url": "https://example.openai.azure.com/",
        "api_version": "2024-06-01",
        "api_key": "az-key",
    }
    assert live_client(azure.live_entry) is not None  # builds the AzureOpenAI client, no network
    built = mathchat.build_agents(None, azure)
    for agent in built.agents:
        config = agent.llm_config
        dumped = config.model_dump() if hasattr(config, "model_dump") else config
        assert "az-key" not in json.dumps(dumped, default=str)  # the key stays with the inner client
