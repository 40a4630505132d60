"""Child processes of test_readers_never_write.py: one writer and several polling readers of one session.

    python tests/polling_child.py writer <session_dir> <messages> <reopens> <report.json>
    python tests/polling_child.py reader <session_dir> <writer report.json> <report.json>

The writer runs a deterministic round robin of ``<messages>`` messages under ``CheckpointingGroupChatManager``
(a few milliseconds per reply, so that readers poll while it runs), then reopens the session ``<reopens>``
times as a new ``CheckpointManager`` and saves one more checkpoint each time. Its report lists every error.

A reader prints "ready" once its imports are done, waits for the session's first checkpoint, then polls until
the writer's report exists: ``CheckpointManager(session).list_checkpoints()``, load the newest and one other
listed checkpoint, close. After the writer has finished it polls once more. Its report: polls (and how many
ran while the writer was running), the largest list it saw, the final list, and every error (of any kind).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from crash_child import build_long_chat

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager

REPLY_DELAY = 0.01


def _write_report(path: str, report: dict[str, Any]) -> None:
    temporary = f"{path}.tmp"
    Path(temporary).write_text(json.dumps(report))
    os.replace(temporary, path)  # readers wait for this file: it appears complete


def writer(session: str, messages: int, reopens: int, report_path: str) -> None:
    report: dict[str, Any] = {"errors": [], "saved": 0, "failed_reopens": 0}
    try:
        agents, groupchat = build_long_chat(REPLY_DELAY)
        groupchat.max_round = messages
        manager = CheckpointingGroupChatManager(
            checkpoint_manager=CheckpointManager(session),
            groupchat=groupchat,
            name="chat_manager",
            llm_config=False,
            silent=True,
        )
        agents[0].initiate_chat(manager, message="Count the primes below 1000, one per message.", silent=True)
        manager.checkpoint_manager.close()
        report["messages"] = len(groupchat.messages)
    except BaseException as exc:
        report["errors"].append(f"the chat: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        _write_report(report_path, report)
        return
    for cycle in range(reopens):
        try:
            _reopen_and_save(session)
            report["saved"] += 1
        except BaseException as exc:
            report["failed_reopens"] += 1
            if len(report["errors"]) < 5:
                report["errors"].append(
                    f"reopen {cycle}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                )
        time.sleep(REPLY_DELAY)
    _write_report(report_path, report)


def _reopen_and_save(session: str) -> None:
    """A new writer of the session saves one more checkpoint (the newest one's state, as a manual step)."""
    cm = CheckpointManager(session)
    try:
        latest = cm.latest_checkpoint_id()
        assert latest is not None, "the session lists no checkpoint"
        data = cm.load_checkpoint(latest)
        step = cm.next_step_number()
        update = {"step_number": step, "context": "manual", "checkpoint_id": "reopened"}
        cm.save_checkpoint(data.model_copy(update={**update, "integrity": None}))
    finally:
        cm.close()


def _poll(session: str, rng: random.Random) -> list[str]:
    cm = CheckpointManager(session)
    try:
        listed = cm.list_checkpoints()
        for checkpoint_id in {listed[-1], rng.choice(listed)} if listed else ():
            cm.load_checkpoint(checkpoint_id)
        return listed
    finally:
        cm.close()


def reader(session: str, writer_report: str, report_path: str) -> None:
    print("ready", flush=True)
    report: dict[str, Any] = {"errors": [], "polls": 0, "polls_while_writing": 0, "most_listed": 0}
    rng = random.Random(report_path)
    commit_file = Path(session) / "checkpoints" / "committed.jsonl"
    while not os.path.exists(writer_report) and not commit_file.exists():
        time.sleep(0.002)  # nothing to read yet
    finished = False
    while True:
        finished = os.path.exists(writer_report)
        try:
            listed = _poll(session, rng)
            report["most_listed"] = max(report["most_listed"], len(listed))
            report["final"] = listed
        except BaseException as exc:
            if len(report["errors"]) < 20:
                report["errors"].append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        report["polls"] += 1
        report["polls_while_writing"] += not finished
        if finished:
            break
        time.sleep(0.005)
    _write_report(report_path, report)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "writer":
        writer(args[0], int(args[1]), int(args[2]), args[3])
    elif role == "reader":
        reader(args[0], args[1], args[2])
    else:
        raise SystemExit(__doc__)
