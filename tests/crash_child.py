"""Child process of test_crash_recovery.py: long deterministic group chats that the test kills with SIGKILL.

    python tests/crash_child.py serve

Importing AG2 takes seconds, so this script imports it once and forks one worker per trial. Commands on
stdin, one per line; answers on stdout, one per line (the first line, "ready", once AG2 is imported):

    run <session_dir> <progress_file>   fork a worker running the chat into session_dir -> "pid <pid>"
    reap <pid>                          wait for that worker (the test killed it)       -> "exit <pid> <code>"
    quit

``<code>`` is the worker's exit code, or minus the signal that killed it (-9 for SIGKILL). The worker
appends one line "<checkpoint_id> <message count>" to progress_file after each checkpoint is saved.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autogen import ConversableAgent, GroupChat
from scenarios import llm_agent, plain_agent

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager
from checkpoint_system.testing import digest_policy

MAX_ROUND = 64
FIRST_MESSAGE = "Count the primes below 1000, one step per message."


def sleepy_digest_policy(delay: float) -> Any:
    """The default digest policy (same replies), after ``delay`` seconds: kills land mid-run."""

    def policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
        if delay:
            time.sleep(delay)
        return digest_policy(agent_name, messages)

    return policy


def build_long_chat(delay: float = 0.0) -> tuple[list[ConversableAgent], GroupChat]:
    """A 64-message round robin of a user without LLM and three digest-policy agents."""
    policy = sleepy_digest_policy(delay)
    agents = [plain_agent("user", "user: next"), *(llm_agent(name, policy) for name in ("ada", "bob", "cy"))]
    groupchat = GroupChat(
        agents=agents, messages=[], max_round=MAX_ROUND, speaker_selection_method="round_robin"
    )
    return agents, groupchat


def long_chat_factory() -> GroupChat:
    """Agent factory for continuations (no delay)."""
    return build_long_chat()[1]


class ReportingCheckpointManager(CheckpointManager):
    """A ``CheckpointManager`` that reports each saved checkpoint to a progress file."""

    def __init__(self, session_dir: str, progress_fd: int) -> None:
        super().__init__(session_dir)
        self.progress_fd = progress_fd

    def take_checkpoint(self, **kwargs: Any) -> str | None:
        checkpoint_id = super().take_checkpoint(**kwargs)
        os.write(self.progress_fd, f"{checkpoint_id} {len(kwargs['messages'])}\n".encode())
        return checkpoint_id


def run_chat(session_dir: str, progress_file: str, delay: float = 0.0) -> list[dict[str, Any]]:
    """Run the long chat into ``session_dir``; returns the transcript."""
    fd = os.open(progress_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        agents, groupchat = build_long_chat(delay)
        manager = CheckpointingGroupChatManager(
            checkpoint_manager=ReportingCheckpointManager(session_dir, fd),
            groupchat=groupchat,
            name="chat_manager",
            llm_config=False,
            silent=True,
        )
        agents[0].initiate_chat(manager, message=FIRST_MESSAGE, silent=True)
        return list(groupchat.messages)
    finally:
        os.close(fd)


def _worker(session_dir: str, progress_file: str) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    code = 0
    try:
        run_chat(session_dir, progress_file, delay=0.001)
    except BaseException:
        code = 1
        Path(progress_file + ".error").write_text(traceback.format_exc())
    os._exit(code)


def serve() -> None:
    print("ready", flush=True)  # AG2 is imported: from here on each trial starts in milliseconds
    for line in sys.stdin:
        command, *args = line.split()
        if command == "run":
            pid = os.fork()
            if pid == 0:
                _worker(*args)
            print(f"pid {pid}", flush=True)
        elif command == "reap":
            pid = int(args[0])
            _, status = os.waitpid(pid, 0)
            print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
        elif command == "quit":
            return
        else:
            print(f"error unknown command {command!r}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        raise SystemExit(__doc__)
    serve()
