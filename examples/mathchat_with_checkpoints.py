"""Math chat with checkpoints: a solver, a code executor and a verifier solve GSM-style word problems.

    python examples/mathchat_with_checkpoints.py                      # offline: deterministic demo model
    OPENAI_API_KEY=... python examples/mathchat_with_checkpoints.py   # live, and the LLM calls are recorded
    python examples/mathchat_with_checkpoints.py --problem "..."      # or --problem-file problems.jsonl

Live mode: ``OPENAI_API_KEY`` (model ``OPENAI_MODEL``, default gpt-4o-mini; ``OPENAI_BASE_URL`` optional), or
Azure with ``AZURE_OPENAI_API_KEY``, ``AZURE_OPENAI_ENDPOINT``, ``AZURE_OPENAI_DEPLOYMENT`` and optionally
``AZURE_OPENAI_API_VERSION``. Keys are never written to disk. ``--demo`` forces the offline demo model.

Every message is checkpointed into ``logs/session_<timestamp>/`` and every LLM call (demo or live) is recorded
in the session's ``llm_recording.jsonl``. Continue any checkpoint with
``python examples/continue_from_checkpoint.py <checkpoint.json> --rounds 5``: recorded answers are replayed
offline, and only requests an intervention changed go to a model.

``--problem-file`` takes JSON Lines of ``{"question": ..., "answer": ...}`` (GSM8K's ``"... #### 42"`` answers
work too) and runs each problem into its own session under ``logs/batch_<timestamp>/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat
from autogen.io.base import IOStream

from checkpoint_system import (
    CheckpointData,
    CheckpointingGroupChatManager,
    CheckpointManager,
    default_session_dir,
    terminate_on,
)
from checkpoint_system.recording import (
    RECORDING_FILE,
    RecordingModelClient,
    live_client,
    recording_llm_config,
    use_recording,
)
from checkpoint_system.testing import DeterministicModelClient

DEFAULT_PROBLEM = (
    "Gerald is paid $30 for every day he works at a daycare. He worked all 7 days of last week and then "
    "spent $100 of what he earned. How many dollars does Gerald have left?"
)

DEMO_MODEL_LABEL = "deterministic demo model (offline)"
#: Tag in the agents' llm_config: marks a checkpoint as this example's, even in continuations.
EXAMPLE_TAG = "mathchat-example"
AGENT_NAMES = ("solver", "code_executor", "verifier")

SOLVER_PROMPT = (
    "You solve math word problems. Explain a short plan, then write one ```python``` block that prints the "
    "final answer as a bare number. Wait for the executor's output before concluding. If the verifier "
    "disagrees, recompute."
)
EXECUTOR_PROMPT = "You run the Python code you are given and report its output."
VERIFIER_PROMPT = (
    "You check the solver's reasoning and the executor's output with your own independent calculation. When "
    "the answer is verified, reply with 'SOLUTION_FOUND \\boxed{<answer>}' and nothing after it. Otherwise "
    "explain what does not match and ask the solver to recompute."
)


# -- the offline demo model -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoSolution:
    """What the demo model knows of one built-in problem: the solver's plan and code, the verifier's check."""

    question: str
    plan: str
    code: str
    check: str
    answer: str


DEMO_SOLUTIONS: tuple[DemoSolution, ...] = (
    DemoSolution(
        DEFAULT_PROBLEM,
        "multiply the daily pay by the days worked, then subtract what he spent.",
        "daily_pay = 30\ndays_worked = 7\nspent = 100\n"
        "earned = daily_pay * days_worked\nprint(earned - spent)",
        "7 days x $30 = $210 earned, and $210 - $100 = $110",
        "110",
    ),
    DemoSolution(
        "A bakery sells muffins for $3 each. On Monday it sold 45 muffins and on Tuesday it sold twice as "
        "many as on Monday. How many dollars did the bakery make from muffins on those two days?",
        "find Tuesday's sales, add both days, multiply by the price.",
        "price = 3\nmonday = 45\ntuesday = 2 * monday\nprint(price * (monday + tuesday))",
        "45 + 90 = 135 muffins, and 135 x $3 = $405",
        "405",
    ),
    DemoSolution(
        "Maya reads 12 pages every weekday and 20 pages on each day of the weekend. How many pages does she "
        "read in 3 weeks?",
        "pages per week = 5 weekdays and 2 weekend days, then times 3 weeks.",
        "weekday_pages = 12\nweekend_pages = 20\nper_week = 5 * weekday_pages + 2 * weekend_pages\n"
        "print(3 * per_week)",
        "5 x 12 + 2 x 20 = 100 pages a week, and 3 x 100 = 300",
        "300",
    ),
    DemoSolution(
        "A tank holds 240 liters of water. A pump removes 15 liters per minute for 8 minutes, then a hose "
        "adds 35 liters. How many liters are in the tank now?",
        "subtract what the pump removed, then add what the hose added.",
        "tank = 240\npumped_out = 15 * 8\nadded = 35\nprint(tank - pumped_out + added)",
        "15 x 8 = 120 removed, 240 - 120 = 120, and 120 + 35 = 155",
        "155",
    ),
)


def question_key(question: str) -> str:
    """The demo model's key for a question: a hash of its words (case and spacing do not matter)."""
    return hashlib.sha256(" ".join(question.lower().split()).encode("utf-8")).hexdigest()[:16]


_DEMO_INDEX = {question_key(solution.question): solution for solution in DEMO_SOLUTIONS}


def demo_solution(question: str) -> DemoSolution | None:
    """The built-in solution of ``question``, if the demo model knows it."""
    return _DEMO_INDEX.get(question_key(question))


def _code_output(message: Mapping[str, Any]) -> str | None:
    found = re.search(r"Code output:\s*(.*)", str(message.get("content") or ""))
    if not found:
        return None
    lines = found.group(1).strip().splitlines()
    return lines[0].strip() if lines else ""


def _same_number(a: str | None, b: str | None) -> bool:
    def number(text: str | None) -> float | None:
        cleaned = re.sub(r"[,$\s]", "", str(text or ""))
        try:
            return float(cleaned)
        except ValueError:
            return None

    x, y = number(a), number(b)
    return x is not None and y is not None and abs(x - y) < 1e-9


def demo_policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
    """The offline demo model: plan -> code -> (execution) -> verification, for the built-in problems.

    The verifier checks the executed result against its own hand calculation; if they differ (say, after an
    intervention edited the solver's code) it asks for a recomputation and the solver answers with its code.
    """
    conversation = [m for m in messages if m.get("role") != "system"]
    problem = str(conversation[0].get("content") or "") if conversation else ""
    solution = demo_solution(problem)
    coded = [i for i, m in enumerate(conversation) if "```python" in str(m.get("content") or "")]
    last_code = coded[-1] if coded else -1
    outputs = [o for m in conversation[last_code + 1 :] if (o := _code_output(m)) is not None]
    output = outputs[-1] if outputs else None
    if agent_name == "solver":
        if solution is None:
            return (
                "[demo model] This is not one of the demo model's built-in problems, so it cannot be solved "
                "offline. Set OPENAI_API_KEY (or the Azure variables) to solve it with a live model."
            )
        if last_code >= 0 and "does not match" in str(conversation[-1].get("content") or ""):
            return f"The check disagrees, so let me recompute step by step.\n```python\n{solution.code}\n```"
        return f"Plan: {solution.plan}\n```python\n{solution.code}\n```"
    if solution is None:
        return "[demo model] There is no computed result to verify for this problem."
    if output is None:
        return "Waiting for the executor's output before verifying."
    if _same_number(output, solution.answer):
        return f"Check: {solution.check}, which matches the code output. SOLUTION_FOUND \\boxed{{{output}}}"
    return (
        f"The code printed {output}, but my own check gives {solution.answer} ({solution.check}). The result "
        "does not match; please recompute."
    )


# -- model configuration --------------------------------------------------------------------------------
@dataclass
class ModelSetup:
    """Which model the agents talk to. ``live_entry`` (with the key) only ever reaches the inner client."""

    kind: str  # "demo" or "live"
    model: str  # the model name in the agents' llm_config (part of every recording key)
    label: str
    live_entry: dict[str, Any] | None = None

    def inner(self, agent_name: str) -> Any:
        """The client that answers requests that are not recorded (None: replay only)."""
        if self.kind == "demo":
            return DeterministicModelClient({"model": agent_name}, policy=demo_policy)
        return live_client(self.live_entry) if self.live_entry else None


def live_entry_from_env(
    environ: Mapping[str, str], model: str | None = None
) -> tuple[dict[str, Any], str] | None:
    """A live config entry (with its key) and a label from the environment, or None without a key."""
    if environ.get("OPENAI_API_KEY"):
        name = model or environ.get("OPENAI_MODEL", "gpt-4o-mini")
        entry: dict[str, Any] = {"model": name, "api_key": environ["OPENAI_API_KEY"]}
        if environ.get("OPENAI_BASE_URL"):
            entry["base_url"] = environ["OPENAI_BASE_URL"]
        return entry, f"live OpenAI model {name}"
    if environ.get("AZURE_OPENAI_API_KEY") and environ.get("AZURE_OPENAI_ENDPOINT"):
        deployment = environ.get("AZURE_OPENAI_DEPLOYMENT") or model or "gpt-4o-mini"
        entry = {
            "model": deployment,
            "api_type": "azure",
            "base_url": environ["AZURE_OPENAI_ENDPOINT"],
            "api_version": environ.get("AZURE_OPENAI_API_VERSION", "2024-10-21"),
            "api_key": environ["AZURE_OPENAI_API_KEY"],
        }
        return entry, f"live Azure OpenAI deployment {deployment}"
    return None


def model_setup(environ: Mapping[str, str] | None = None, *, demo: bool = False) -> ModelSetup:
    """Live when a key is set (and ``demo`` is False), else the deterministic demo model."""
    live = None if demo else live_entry_from_env(os.environ if environ is None else environ)
    if live is None:
        return ModelSetup("demo", "demo-model", DEMO_MODEL_LABEL)
    entry, label = live
    return ModelSetup("live", str(entry["model"]), label, entry)


# -- agents ---------------------------------------------------------------------------------------------
@dataclass
class Built:
    """The agents of one build and their recording clients (for call statistics)."""

    agents: list[ConversableAgent]
    clients: list[RecordingModelClient] = field(default_factory=list)

    def calls(self) -> dict[str, int]:
        return {
            "replayed": sum(c.replayed for c in self.clients),
            "recorded": sum(c.recorded for c in self.clients),
        }


#: The most recent build (continue_from_checkpoint.py reads its call statistics).
LAST_BUILD: Built | None = None


def _work_in_session(
    recipient: ConversableAgent, messages: Any = None, sender: Any = None, config: Any = None
) -> tuple[bool, None]:
    """Reply hook: run code in ``<session>/work`` of the session the chat manager is writing."""
    session_dir = getattr(getattr(sender, "checkpoint_manager", None), "session_dir", None)
    execution = getattr(recipient, "_code_execution_config", None)
    if session_dir is not None and isinstance(execution, dict):
        work_dir = Path(session_dir) / "work"
        work_dir.mkdir(parents=True, exist_ok=True)
        execution["work_dir"] = str(work_dir)
    return False, None


def build_agents(session_dir: Path | None, setup: ModelSetup) -> Built:
    """Solver, code executor (runs Python locally in ``<session>/work``, no Docker) and verifier.

    The solver and verifier talk to the model through ``RecordingModelClient``: calls are recorded into the
    session directory of the chat manager they reply to, and replayed from there and its parent sessions.
    """
    global LAST_BUILD
    built = Built([])
    tags = [EXAMPLE_TAG, "demo-model" if setup.kind == "demo" else "live-model"]
    for name, prompt in (("solver", SOLVER_PROMPT), ("verifier", VERIFIER_PROMPT)):
        agent = ConversableAgent(
            name,
            system_message=prompt,
            llm_config=recording_llm_config(setup.model, tags=tags),
            human_input_mode="NEVER",
        )
        built.clients.append(use_recording(agent, inner=setup.inner(name), directory=session_dir))
        built.agents.append(agent)
    work_dir = (session_dir or Path(".")) / "work"
    executor = ConversableAgent(
        "code_executor",
        system_message=EXECUTOR_PROMPT,
        llm_config=False,
        human_input_mode="NEVER",
        code_execution_config={
            "work_dir": str(work_dir),
            "use_docker": False,
            "last_n_messages": 1,
            "timeout": 60,
        },
        default_auto_reply="No code to run.",
    )
    executor.register_reply([Agent, None], _work_in_session, position=0)
    solver, verifier = built.agents
    built.agents = [solver, executor, verifier]
    for agent in built.agents:
        agent.register_hook("process_message_before_send", progress_hook)
    LAST_BUILD = built
    return built


def _saved_entry(checkpoint: CheckpointData) -> dict[str, Any]:
    state = checkpoint.agent_states.get("solver")
    config = state.llm_config if state is not None else None
    entries = config.get("config_list") if isinstance(config, dict) else None
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        return entries[0]
    return {}


def is_example_checkpoint(checkpoint: CheckpointData) -> bool:
    """Whether ``checkpoint`` was written by this example (a session or any continuation of one)."""
    tags = _saved_entry(checkpoint).get("tags") or []
    return checkpoint.metadata.get("example") == "mathchat" or EXAMPLE_TAG in tags


def setup_for_checkpoint(checkpoint: CheckpointData, environ: Mapping[str, str] | None = None) -> ModelSetup:
    """The model setup a continuation of ``checkpoint`` needs: the same model names, so recordings match."""
    tags = _saved_entry(checkpoint).get("tags") or []
    if checkpoint.metadata.get("model") == "demo" or "demo-model" in tags:
        return ModelSetup("demo", _saved_model(checkpoint) or "demo-model", DEMO_MODEL_LABEL)
    saved = _saved_model(checkpoint) or "gpt-4o-mini"
    live = live_entry_from_env(os.environ if environ is None else environ, saved)
    if live is None:
        return ModelSetup("live", saved, f"recorded live model {saved} (replay only: no API key set)")
    entry, label = live
    return ModelSetup("live", saved, label, entry)


def _saved_model(checkpoint: CheckpointData) -> str | None:
    return str(_saved_entry(checkpoint).get("model") or "") or None


def agent_factory(checkpoint: CheckpointData, continuation_dir: Path | None = None) -> list[ConversableAgent]:
    """Rebuild the example's agents for a continuation of ``checkpoint``.

    ``continuation_dir``: where the continuation runs (new recordings and code go there). Without it, both
    follow the session of the chat manager the agents reply to.
    """
    return build_agents(continuation_dir, setup_for_checkpoint(checkpoint)).agents


# -- console --------------------------------------------------------------------------------------------
class Console:
    """Console output that keeps a progress bar (if any) intact."""

    bar: Any = None
    show_rounds = True

    @classmethod
    def say(cls, text: str = "") -> None:
        if cls.bar is not None:
            cls.bar.write(text)
        else:
            print(text, flush=True)


class _QuietStream:
    """An AG2 IOStream that drops AG2's own console output (our progress lines replace it)."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        return None

    def send(self, message: Any) -> None:
        return None

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


@contextmanager
def ag2_output(verbose: bool) -> Iterator[None]:
    """AG2's own console output on (``verbose``) or off."""
    if verbose:
        yield
        return
    with IOStream.set_default(_QuietStream()):  # type: ignore[arg-type]
        yield


def progress_hook(sender: Any, message: Any, recipient: Any, silent: bool) -> Any:
    """One progress line per round: ``[round k/max] speaker -> first line``."""
    if Console.show_rounds:
        groupchat = getattr(recipient, "groupchat", None)
        index = len(groupchat.messages) + 1 if groupchat is not None else 0
        limit = groupchat.max_round if groupchat is not None else "?"
        text = message.get("content") if isinstance(message, dict) else message
        lines = str(text or "").strip().splitlines()
        first = lines[0] if lines else ("(tool call)" if isinstance(message, dict) else "")
        first = first if len(first) <= 88 else first[:85] + "..."
        Console.say(f"  [round {index:>2}/{limit}] {sender.name:>13} -> {first}")
    return message


# -- running --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """The result of one problem."""

    question: str
    session_dir: Path
    answer: str | None
    expected: str | None
    messages: int
    checkpoints: list[str]
    ended: str | None
    calls: dict[str, int]
    continue_from: Path | None = None

    @property
    def solved(self) -> bool | None:
        return None if self.expected is None else _same_number(self.answer, self.expected)


def boxed_answer(messages: list[dict[str, Any]]) -> str | None:
    """The ``\\boxed{...}`` answer of the final SOLUTION_FOUND message, if any."""
    for message in reversed(messages):
        content = str(message.get("content") or "")
        if "SOLUTION_FOUND" in content:
            found = re.search(r"\\boxed\{([^}]*)\}", content)
            return found.group(1).strip() if found else None
    return None


def expected_answer(raw: Any) -> str | None:
    """The final number of a GSM-style answer (``"... #### 42"``), or the answer as given."""
    if raw is None:
        return None
    text = str(raw)
    return text.split("####")[-1].strip().replace(",", "") if "####" in text else text.strip()


def run(
    problem: str,
    session_dir: Path,
    max_round: int = 12,
    *,
    setup: ModelSetup | None = None,
    expected: str | None = None,
    verbose: bool = False,
) -> Outcome:
    """Run one problem into ``session_dir``."""
    setup = setup or model_setup()
    built = build_agents(session_dir, setup)
    agents = built.agents
    groupchat = GroupChat(
        agents=agents, messages=[], max_round=max_round, speaker_selection_method="round_robin"
    )
    labels = {"example": "mathchat", "model": setup.kind, "model_label": setup.label}
    checkpoints = CheckpointManager(
        session_dir,
        problem_context=problem,
        metadata={**labels, "llm_recording": RECORDING_FILE, "expected_answer": expected},
        checkpoint_metadata={"example": "mathchat", "model": setup.kind},
    )
    manager = CheckpointingGroupChatManager(
        checkpoint_manager=checkpoints,
        groupchat=groupchat,
        problem_context=problem,
        is_termination_msg=terminate_on("SOLUTION_FOUND"),
        silent=True,
    )
    verifier = agents[2]
    with ag2_output(verbose):
        verifier.initiate_chat(manager, message=problem, silent=not verbose)
    ids = checkpoints.list_checkpoints()
    answer = boxed_answer(groupchat.messages)
    outcome = Outcome(
        question=problem,
        session_dir=session_dir,
        answer=answer,
        expected=expected,
        messages=len(groupchat.messages),
        checkpoints=ids,
        ended=manager.last_termination_reason,
        calls=built.calls(),
        continue_from=checkpoints.checkpoint_path(ids[min(3, len(ids) - 1)]) if ids else None,
    )
    checkpoints.update_session_metadata(
        outcome={"answer": answer, "expected": expected, "solved": outcome.solved, "llm_calls": outcome.calls}
    )
    return outcome


def print_summary(outcome: Outcome, setup: ModelSetup) -> None:
    say = Console.say
    say("\nsummary")
    say(f"  model: {setup.label}")
    say(f"  messages: {outcome.messages}   checkpoints: {len(outcome.checkpoints)}")
    say(f"  ended: {outcome.ended}")
    verdict = ""
    if outcome.solved is not None:
        verdict = "  (solved)" if outcome.solved else f"  (UNSOLVED: expected {outcome.expected})"
    say(f"  answer: {outcome.answer or 'none'}{verdict}")
    say(
        f"  LLM calls: {outcome.calls['recorded']} new (recorded in {RECORDING_FILE}), "
        f"{outcome.calls['replayed']} replayed"
    )
    say(f"  session directory: {outcome.session_dir}")
    if outcome.continue_from is not None:
        say(
            f"  continue with: python examples/continue_from_checkpoint.py {outcome.continue_from} --rounds 5"
        )


def load_problems(path: Path) -> list[dict[str, Any]]:
    """GSM-style rows ``{"question": ..., "answer": ...}`` from a JSON Lines file."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number}: not valid JSON ({exc})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise SystemExit(f"{path}:{number}: expected an object with a 'question' string")
        rows.append(row)
    if not rows:
        raise SystemExit(f"{path}: no problems")
    return rows


class _SimpleBar:
    """A minimal progress bar for when tqdm is not installed."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done, self.postfix = total, desc, 0, ""

    def write(self, text: str) -> None:
        print(text, flush=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        filled = int(30 * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (30 - filled)
        print(f"{self.desc} [{bar}] {self.done}/{self.total} {self.postfix}", flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        return None


def _progress_bar(total: int, desc: str) -> Any:
    """tqdm on a terminal (it comes with ag2), a plain one-line-per-step bar otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _SimpleBar(total, desc)
    if not sys.stdout.isatty():
        return _SimpleBar(total, desc)
    return tqdm(total=total, desc=desc, unit="problem", file=sys.stdout, dynamic_ncols=True)


def run_batch(
    path: Path, batch_dir: Path, max_round: int, setup: ModelSetup, *, verbose: bool = False
) -> list[Outcome]:
    """Each problem of ``path`` into ``batch_dir/session_NNN``; prints solved/unsolved and a summary."""
    rows = load_problems(path)
    batch_dir.mkdir(parents=True, exist_ok=True)
    Console.say(f"model: {setup.label}")
    Console.say(f"batch: {len(rows)} problems from {path} into {batch_dir}")
    outcomes: list[Outcome] = []
    Console.show_rounds = verbose
    bar = Console.bar = _progress_bar(len(rows), "problems")
    try:
        for number, row in enumerate(rows, start=1):
            session_dir = batch_dir / f"session_{number:03d}"
            Console.say(f"problem {number}/{len(rows)}: {row['question'][:90]}")
            outcome = run(
                row["question"],
                session_dir,
                max_round,
                setup=setup,
                expected=expected_answer(row.get("answer")),
                verbose=verbose,
            )
            outcomes.append(outcome)
            mark = "solved" if outcome.solved else "UNSOLVED"
            Console.say(
                f"problem {number}/{len(rows)}: {mark}: answer {outcome.answer or 'none'}, expected "
                f"{outcome.expected}, {outcome.messages} messages ({session_dir})"
            )
            solved = sum(1 for o in outcomes if o.solved)
            bar.set_postfix_str(f"solved {solved}/{len(outcomes)}")
            bar.update(1)
    finally:
        bar.close()
        Console.bar = None
        Console.show_rounds = True
    solved = [o for o in outcomes if o.solved]
    summary = {
        "problem_file": str(path),
        "model": setup.kind,
        "model_label": setup.label,
        "solved": len(solved),
        "total": len(outcomes),
        "problems": [
            {
                "question": o.question,
                "expected": o.expected,
                "answer": o.answer,
                "solved": bool(o.solved),
                "session_dir": o.session_dir.name,
                "messages": o.messages,
                "llm_calls": o.calls,
            }
            for o in outcomes
        ],
    }
    (batch_dir / "batch_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    Console.say("\nsummary")
    Console.say(f"  model: {setup.label}")
    Console.say(f"  solved {len(solved)}/{len(outcomes)}")
    for number, o in enumerate(outcomes, start=1):
        Console.say(
            f"  {number:>3}. {'solved  ' if o.solved else 'UNSOLVED'} answer {o.answer or 'none':>8}  "
            f"expected {o.expected:>8}  {o.session_dir.name}"
        )
    Console.say(f"  batch directory: {batch_dir} (batch_summary.json)")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--problem", default=None, help="the word problem (default: Gerald's daycare)")
    source.add_argument("--problem-file", type=Path, help="JSON Lines of {question, answer} rows (batch)")
    parser.add_argument("--answer", help="the expected answer of --problem (reported as solved/unsolved)")
    parser.add_argument(
        "--session-dir", type=Path, default=None, help="default: <logs-dir>/session_<timestamp>"
    )
    parser.add_argument("--logs-dir", type=Path, default=Path("logs"), help="default: logs")
    parser.add_argument("--max-round", type=int, default=12)
    parser.add_argument("--demo", action="store_true", help="use the offline demo model even if a key is set")
    parser.add_argument(
        "--verbose", action="store_true", help="show AG2's own output (and, in batch mode, every round)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)
    setup = model_setup(demo=args.demo)

    if args.problem_file is not None:
        batch_dir = args.session_dir or args.logs_dir / datetime.now().strftime("batch_%Y%m%d_%H%M%S_%f")
        outcomes = run_batch(args.problem_file, batch_dir, args.max_round, setup, verbose=args.verbose)
        return 0 if all(o.solved for o in outcomes) else 1

    problem = args.problem or DEFAULT_PROBLEM
    expected = args.answer
    if expected is None and (known := demo_solution(problem)) is not None:
        expected = known.answer
    session_dir = args.session_dir or default_session_dir(args.logs_dir)
    Console.say(f"model: {setup.label}")
    Console.say(f"session: {session_dir}")
    Console.say(f"problem: {problem}")
    outcome = run(problem, session_dir, args.max_round, setup=setup, expected=expected, verbose=args.verbose)
    print_summary(outcome, setup)
    return 0 if outcome.answer and outcome.solved is not False else 1


if __name__ == "__main__":
    sys.exit(main())
