"""Math chat with checkpoints: a solver, a code executor and a verifier solve a word problem.

    python examples/mathchat_with_checkpoints.py                  # offline, deterministic demo model
    OPENAI_API_KEY=... python examples/mathchat_with_checkpoints.py   # live (OPENAI_MODEL, default gpt-4o-mini)
    python examples/mathchat_with_checkpoints.py --problem "..."

Every message is checkpointed into ``logs/session_<timestamp>/``; continue any checkpoint with
``python examples/continue_from_checkpoint.py <checkpoint.json> --rounds 5``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from autogen import ConversableAgent, GroupChat

from checkpoint_system import (
    CheckpointData,
    CheckpointingGroupChatManager,
    CheckpointManager,
    default_session_dir,
    terminate_on,
)
from checkpoint_system.testing import DeterministicModelClient, deterministic_llm_config

DEFAULT_PROBLEM = (
    "Gerald is paid $30 for every day he works at a daycare. He worked all 7 days of last week and then "
    "spent $100 of what he earned. How many dollars does Gerald have left?"
)

#: Problems the offline demo model knows how to solve: a keyword, the Python it writes, the answer.
DEMO_SOLUTIONS: dict[str, tuple[str, str]] = {
    "gerald": ("daily_pay = 30\ndays = 7\nspent = 100\nprint(daily_pay * days - spent)", "110"),
}

SOLVER_PROMPT = (
    "You solve math word problems. Explain a short plan, then write one ```python``` block that prints the "
    "final answer. Wait for the executor's output before concluding."
)
VERIFIER_PROMPT = (
    "You check the solver's reasoning and the executor's output. When the answer is verified, reply with "
    "'SOLUTION_FOUND \\boxed{<answer>}' and nothing after it."
)


def _last_output(messages: list[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        found = re.search(r"Code output:\s*(.+)", str(message.get("content") or ""))
        if found:
            return found.group(1).strip().splitlines()[0]
    return None


def demo_policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
    """The offline demo model: a plausible plan -> code -> verification for the built-in problems."""
    problem = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
    solution = next((s for key, s in DEMO_SOLUTIONS.items() if key in problem.lower()), None)
    if agent_name == "solver":
        if solution is None:
            return "[demo model] I only know the built-in problems offline. Set OPENAI_API_KEY to run live."
        code, _ = solution
        output = _last_output(messages)
        if output is None:
            return f"Plan: compute total earnings, subtract spending.\n```python\n{code}\n```"
        return f"The code printed {output}, so Gerald has ${output} left."
    output = _last_output(messages)
    if output is None:
        return "Waiting for the executor's output before verifying."
    return f"Earnings 30*7=210, minus 100 gives {output}. SOLUTION_FOUND \\boxed{{{output}}}"


def live_llm_config() -> dict[str, Any] | None:
    """An OpenAI config from the environment, or None when no key is set."""
    if not os.environ.get("OPENAI_API_KEY"):
        return None
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    return {"config_list": [{"model": model, "api_key": os.environ["OPENAI_API_KEY"]}], "cache_seed": None}


def build_agents(work_dir: Path, live: dict[str, Any] | None = None) -> list[ConversableAgent]:
    """Solver, executor (runs Python locally in ``work_dir``) and verifier."""
    agents = []
    for name, prompt in (("solver", SOLVER_PROMPT), ("verifier", VERIFIER_PROMPT)):
        config = live if live else deterministic_llm_config(name, tags=["demo-model"])
        agent = ConversableAgent(name, system_message=prompt, llm_config=config, human_input_mode="NEVER")
        if not live:
            agent.register_model_client(DeterministicModelClient, policy=demo_policy)
        agents.append(agent)
    work_dir.mkdir(parents=True, exist_ok=True)
    executor = ConversableAgent(
        "code_executor",
        system_message="You run the Python code you are given and report its output.",
        llm_config=False,
        human_input_mode="NEVER",
        code_execution_config={"work_dir": str(work_dir), "use_docker": False, "last_n_messages": 2},
        default_auto_reply="No code to run.",
    )
    solver, verifier = agents
    return [solver, executor, verifier]


def agent_factory(checkpoint: CheckpointData) -> list[ConversableAgent]:
    """Rebuild the example's agents (with their demo model and executor) for a continuation."""
    session = Path(str(checkpoint.metadata.get("session_dir") or "."))
    live = None if checkpoint.metadata.get("model") == "demo" else live_llm_config()
    return build_agents(session / "work", live)


def run(problem: str, session_dir: Path, max_round: int = 12) -> CheckpointingGroupChatManager:
    """Run one problem into ``session_dir`` and return the manager (its group chat holds the transcript)."""
    live = live_llm_config()
    agents = build_agents(session_dir / "work", live)
    groupchat = GroupChat(agents=agents, messages=[], max_round=max_round, speaker_selection_method="round_robin")
    checkpoints = CheckpointManager(
        session_dir,
        problem_context=problem,
        metadata={"example": "mathchat", "model": "live" if live else "demo"},
        checkpoint_metadata={"example": "mathchat", "model": "live" if live else "demo"},
    )
    manager = CheckpointingGroupChatManager(
        checkpoint_manager=checkpoints,
        groupchat=groupchat,
        problem_context=problem,
        is_termination_msg=terminate_on("SOLUTION_FOUND"),
        silent=True,
    )
    print(f"model: {'live ' + str(live['config_list'][0]['model']) if live else 'deterministic demo model'}")
    print(f"session: {session_dir}")
    verifier = agents[2]
    verifier.register_hook("process_message_before_send", _progress)
    for agent in agents[:2]:
        agent.register_hook("process_message_before_send", _progress)
    verifier.initiate_chat(manager, message=problem, silent=True)
    return manager


def _progress(sender: Any, message: Any, recipient: Any, silent: bool) -> Any:
    text = message.get("content") if isinstance(message, dict) else message
    first_line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    print(f"  round: {sender.name:>13} -> {first_line[:90]}")
    return message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", default=DEFAULT_PROBLEM, help="the word problem to solve")
    parser.add_argument("--session-dir", type=Path, default=None, help="default: logs/session_<timestamp>")
    parser.add_argument("--max-round", type=int, default=12)
    args = parser.parse_args(argv)
    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)
    session_dir = args.session_dir or default_session_dir("logs")
    manager = run(args.problem, session_dir, args.max_round)
    messages = manager.groupchat.messages
    answer = re.search(r"\\boxed\{([^}]*)\}", str(messages[-1].get("content") or "")) if messages else None
    checkpoints = manager.checkpoint_manager.list_checkpoints()
    print("\nsummary")
    print(f"  messages: {len(messages)}   checkpoints: {len(checkpoints)}")
    print(f"  ended: {manager.last_termination_reason}")
    print(f"  answer: {answer.group(1) if answer else 'none'}")
    print(f"  session directory: {session_dir}")
    if checkpoints:
        print(f"  continue with: python examples/continue_from_checkpoint.py "
              f"{manager.checkpoint_manager.checkpoint_path(checkpoints[min(3, len(checkpoints) - 1)])} --rounds 5")
    return 0 if answer else 1


if __name__ == "__main__":
    sys.exit(main())
