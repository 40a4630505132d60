"""Cross-machine continuation through PostgreSQL.

Process A runs a group chat into a PostgreSQL database and dies (SIGKILL, no cleanup). Process B, started
elsewhere (its own working directory) with nothing but the database URL and one checkpoint id,
continues the chat from that checkpoint. The test then reads the database: the continuation is a session of
its own under A's session, chained to A's checkpoint, and it reproduces A's transcript.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pg_fixture import postgres_server, postgres_url  # noqa: F401  (fixtures)
from restore_support import REPO_ROOT, subprocess_env

from checkpoint_system.errors import SessionLockedError
from checkpoint_system.storage import load_reference, open_store

MACHINE_A = """
import json, os, signal, sys
from scenarios import all_scenarios
from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager
url = sys.argv[1]
built = all_scenarios()["round_robin"]()
checkpoints = CheckpointManager(url, session_id="machine_a", problem_context="cross-machine")
manager = built.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoints)
built.run(manager)
print(json.dumps({"ids": checkpoints.list_checkpoints(), "messages": built.groupchat.messages}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # die without closing anything
"""

MACHINE_B = """
import json, os, sys
from checkpoint_system import CheckpointRestorer
url, checkpoint_id = sys.argv[1], sys.argv[2]
result = CheckpointRestorer().continue_from(checkpoint_id, store=url)
print(json.dumps({
    "ok": result.ok,
    "reason": result.reason,
    "location": result.location,
    "history": result.chat_result.chat_history if result.chat_result else None,
    "new": len(result.new_messages),
}), flush=True)
"""


def _machine(
    code: str, args: list[str], workdir: Path, *, python_path: list[Path]
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter in its own empty working directory."""
    workdir.mkdir(parents=True)
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in python_path)
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )


def _last_json(output: str) -> dict[str, Any]:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def test_chat_started_on_one_machine_continues_on_another(postgres_url: str, tmp_path: Path) -> None:  # noqa: F811
    a = _machine(MACHINE_A, [postgres_url], tmp_path / "a", python_path=[REPO_ROOT, REPO_ROOT / "tests"])
    assert a.returncode == -9, a.stderr[-3000:]  # killed, as planned, after printing its result
    machine_a = _last_json(a.stdout)
    ids, messages = machine_a["ids"], machine_a["messages"]
    assert len(ids) == len(messages) + 2
    parent_id = ids[len(ids) // 2]

    b = _machine(MACHINE_B, [postgres_url, parent_id], tmp_path / "b", python_path=[REPO_ROOT])
    assert b.returncode == 0, b.stderr[-3000:]
    machine_b = _last_json(b.stdout)
    assert machine_b["ok"], machine_b["reason"]
    assert machine_b["history"] == messages  # the continuation reproduces A's chat
    assert list((tmp_path / "b").iterdir()) == [], "B keeps nothing locally: everything is in the database"

    store = open_store(postgres_url)
    sessions = store.list_sessions()
    assert len(sessions) == 2 and sessions[0] == "machine_a"
    continuation_id = sessions[1]
    assert continuation_id.startswith("machine_a/continuation_")
    assert machine_b["location"] == f"{store.url}#{continuation_id}"

    parent = store.open_session("machine_a")
    assert parent.list_checkpoints() == ids  # A's checkpoints all committed before it was killed
    assert parent.read_document("session_metadata.json")["problem_context"] == "cross-machine"
    child = store.open_session(continuation_id)
    chain = [child.load(c) for c in child.list_checkpoints()]
    assert chain[0].parent_checkpoint_id == parent_id
    assert chain[-1].context == "conversation_end"
    assert chain[-1].messages == messages
    assert (
        len(chain) == machine_b["new"] + 3
    )  # start, one per new message, the message put back in flight, end
    meta = child.read_document("continuation_metadata.json")
    assert meta["parent_checkpoint_file"] == f"{store.url}#machine_a/{parent_id}"
    assert meta["outcome"] == "continued"
    assert load_reference(meta["parent_checkpoint_file"]).load().checkpoint_id == parent_id

    # A died holding the session's writer lock: the server released it with A's connection
    deadline = time.monotonic() + 15
    while True:
        try:
            session = store.open_session("machine_a")
            data = parent.load(ids[-1])
            data.checkpoint_id, data.step_number = "checkpoint_99_manual_20990101_000000_000000", 99
            session.save(data)
            session.close()
            break
        except SessionLockedError:
            assert time.monotonic() < deadline, "the dead writer's lock was never released"
            time.sleep(0.1)
