"""Hostile checkpoints on restore: keys bound to trusted endpoints, unknown clients, deep nesting, code dirs.

Part of the hostile-input suite (``test_hostile_*.py``). A checkpoint may come from anyone; each case
asserts the error (or the safe outcome) and, through the ``confined`` fixture, that nothing was written
into the working directory. The endpoint cases run against a real local HTTP server that records every
request it receives, so "no key was sent" is observed, not assumed.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from autogen import ConversableAgent, GroupChat
from conftest import Confined
from restore_support import tree_digest
from scenarios import plain_agent

import checkpoint_system.cli as checkpoint_cli
from checkpoint_system import (
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    RestoreWarning,
    UnknownModelClientError,
    UntrustedEndpointError,
)
from checkpoint_system.testing import deterministic_llm_config

COLLEAGUE_KEY = "sk-colleague-0123456789abcdef"
USER_KEY = "sk-user-REAL-fedcba9876543210"


class RecordingServer:
    """A local OpenAI-compatible endpoint that answers every chat completion and records the request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(
                    {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
                )
                reply = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "gpt-4o-mini"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"reply {len(server.requests)}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as running:
        yield running


def _proxy_chat(session: Path, url: str, *, with_key: bool = True) -> CheckpointManager:
    """A colleague's chat whose 'writer' and manager talk to the endpoint at ``url`` (round robin)."""
    entry: dict[str, Any] = {"model": "gpt-4o-mini", "base_url": url}
    if with_key:
        entry["api_key"] = COLLEAGUE_KEY
    config = {"config_list": [entry], "cache_seed": None}
    user = plain_agent("user", "user: go on")
    writer = ConversableAgent("writer", llm_config=dict(config), human_input_mode="NEVER")
    groupchat = GroupChat(
        agents=[user, writer], messages=[], max_round=4, speaker_selection_method="round_robin"
    )
    manager = CheckpointingGroupChatManager(
        checkpoint_manager=CheckpointManager(session),
        groupchat=groupchat,
        name="chat_manager",
        llm_config=dict(config),
    )
    user.initiate_chat(manager, message="Write something.")
    return manager.checkpoint_manager


def _checkpoint_before_writer(cm: CheckpointManager) -> Path:
    """The checkpoint after the user's first message: continuing from it makes the writer call its LLM."""
    return cm.checkpoint_path(cm.list_checkpoints()[1])


def _run_chat(
    confined: Confined, agents: list[ConversableAgent], message: str, max_round: int, **manager: Any
) -> CheckpointManager:
    """A round-robin chat of ``agents`` (the first one starts it) checkpointed into ``<root>/session``."""
    groupchat = GroupChat(
        agents=agents, messages=[], max_round=max_round, speaker_selection_method="round_robin"
    )
    chat_manager = CheckpointingGroupChatManager(
        checkpoint_manager=CheckpointManager(confined.root / "session"),
        groupchat=groupchat,
        name="chat_manager",
        **{"llm_config": False, **manager},
    )
    agents[0].initiate_chat(chat_manager, message=message)
    return chat_manager.checkpoint_manager


def test_untrusted_endpoint_never_gets_the_users_key(
    confined: Confined, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = confined.root / "session"
    cm = _proxy_chat(session, server.url)
    path = _checkpoint_before_writer(cm)
    sent_by_colleague = len(server.requests)
    assert sent_by_colleague > 0
    before = tree_digest(session, skip_continuations=False)
    monkeypatch.setenv("OPENAI_API_KEY", USER_KEY)

    with pytest.raises(UntrustedEndpointError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore", RestoreWarning)
        CheckpointRestorer().continue_from(path, max_rounds=2)
    message = str(caught.value)
    assert "agent 'writer'" in message and "base_url" in message and server.url in message
    assert "$OPENAI_API_KEY" not in message and "'api_key'" in message  # the marker filled from the env
    assert "trusted_endpoints" in message and "--trust-endpoint" in message
    # Nothing reached the server, and the refused restore left no continuation behind.
    assert len(server.requests) == sent_by_colleague
    assert tree_digest(session, skip_continuations=False) == before
    assert not list(session.glob("continuation_*"))

    # The CLI refuses the same way (exit 2, the flag named).
    assert checkpoint_cli.main(["continue", str(path), "--rounds", "2"]) == 2
    assert len(server.requests) == sent_by_colleague


def test_sdk_environment_key_is_not_sent_to_an_untrusted_endpoint(
    confined: Confined, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file's config has no api_key at all: the OpenAI SDK would read OPENAI_API_KEY by itself.
    monkeypatch.setenv("OPENAI_API_KEY", COLLEAGUE_KEY)
    cm = _proxy_chat(confined.root / "session", server.url, with_key=False)
    path = _checkpoint_before_writer(cm)
    sent = len(server.requests)
    monkeypatch.setenv("OPENAI_API_KEY", USER_KEY)
    with pytest.raises(UntrustedEndpointError, match=r"\$OPENAI_API_KEY"):
        CheckpointRestorer().restore(path)
    # With an agent factory the agents are the user's, but the manager's config still comes from the file.
    factory_agents = [
        plain_agent("user", "user: go on"),
        ConversableAgent("writer", llm_config=False, human_input_mode="NEVER"),
    ]
    with pytest.raises(UntrustedEndpointError, match="manager 'chat_manager'"):
        CheckpointRestorer(agent_factory=lambda: factory_agents, on_mismatch="proceed").restore(path)
    assert len(server.requests) == sent


def test_trusted_endpoint_gets_the_key_and_is_reported(
    confined: Confined, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cm = _proxy_chat(confined.root / "session", server.url)
    path = _checkpoint_before_writer(cm)
    sent = len(server.requests)
    monkeypatch.setenv("OPENAI_API_KEY", USER_KEY)
    result = CheckpointRestorer(trusted_endpoints=[server.url]).continue_from(path, max_rounds=2)
    assert result.ok
    new_requests = server.requests[sent:]
    assert new_requests and all(r["authorization"] == f"Bearer {USER_KEY}" for r in new_requests)
    endpoints = result.restored.report.endpoints
    assert (
        f"agent 'writer': config_list[0] (model 'gpt-4o-mini').base_url -> {server.url} (trusted by you)"
        in (endpoints)
    )
    assert any(line.startswith("manager 'chat_manager'") for line in endpoints)
    assert result.directory is not None
    meta = json.loads((result.directory / "continuation_metadata.json").read_text())
    assert meta["restore_report"]["endpoints"] == endpoints
    # The user's key reached the server it was meant for, and no file.
    assert not [p for p in confined.root.rglob("*") if p.is_file() and USER_KEY.encode() in p.read_bytes()]


def test_endpoint_configured_in_the_environment_is_trusted(
    confined: Confined, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cm = _proxy_chat(confined.root / "session", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", USER_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    restored = CheckpointRestorer().restore(_checkpoint_before_writer(cm))
    assert any("(set by $OPENAI_BASE_URL)" in line for line in restored.report.endpoints)
    # Another port on the same host is another endpoint: not covered.
    other = server.url.replace(server.url.split(":")[2].split("/")[0], "1")
    with pytest.raises(UntrustedEndpointError):
        CheckpointRestorer(environ={"OPENAI_BASE_URL": other, "OPENAI_API_KEY": USER_KEY}).restore(
            _checkpoint_before_writer(cm)
        )


def test_unknown_model_client_is_refused_by_name(confined: Confined) -> None:
    class HomeMadeClient:
        def __init__(self, config: dict[str, Any], **_: Any) -> None:
            pass

        def create(self, params: dict[str, Any]) -> Any:  # pragma: no cover - never asked
            raise AssertionError

    config = deterministic_llm_config("writer", model_client_cls="HomeMadeClient")
    writer = ConversableAgent("writer", llm_config=config, human_input_mode="NEVER")
    writer.register_model_client(HomeMadeClient)
    cm = _run_chat(confined, [plain_agent("user", "user: go on"), writer], "hello", max_round=1)
    path = cm.checkpoint_path(cm.list_checkpoints()[-1])
    with pytest.raises(UnknownModelClientError, match=r"'writer'.*'HomeMadeClient'.*model_clients"):
        CheckpointRestorer().restore(path)
    restored = CheckpointRestorer(model_clients={"HomeMadeClient": HomeMadeClient}).restore(path)
    assert {agent.name for agent in restored.agents} == {"user", "writer"}


def test_deeply_nested_message_is_saved_and_restored_without_recursion(confined: Confined) -> None:
    deep: Any = "bottom"
    for _ in range(1000):
        deep = {"c": deep}
    talker = plain_agent("talker", {"content": [{"type": "text", "text": "nested", "extra": deep}]})
    cm = _run_chat(confined, [plain_agent("user", "user: ok"), talker], "start", max_round=4)
    ids = cm.list_checkpoints()
    assert len(ids) == 4 + 2  # start, one per message, end: no save failed
    for checkpoint_id in ids:
        cm.load_checkpoint(checkpoint_id)
    result = CheckpointRestorer().continue_from(cm.checkpoint_path(ids[2]), max_rounds=1)
    assert result.ok


CODE = "```python\nopen('ran.txt', 'w').write('here')\nprint('wrote ran.txt')\n```"


def _code_chat(confined: Confined, work_dir: str, max_round: int) -> CheckpointManager:
    """A user sends ``CODE`` to an executor working in ``work_dir`` (round robin); returns the session."""
    executor = ConversableAgent(
        "executor",
        llm_config=False,
        human_input_mode="NEVER",
        code_execution_config={"work_dir": work_dir, "use_docker": False},
        default_auto_reply="executor: no code",
    )
    return _run_chat(confined, [plain_agent("user", "user: thanks"), executor], CODE, max_round)


def test_continuation_runs_code_in_its_own_work_directory(confined: Confined) -> None:
    parent_work = confined.root / "parent_work"
    cm = _code_chat(confined, str(parent_work), max_round=3)
    assert (parent_work / "ran.txt").exists()  # the original ran in its directory
    (parent_work / "ran.txt").unlink()
    path = cm.checkpoint_path(cm.list_checkpoints()[1])

    # From the API: the continuation's own work/, an absolute path, whatever the file says.
    result = CheckpointRestorer(allow_code_execution=True).continue_from(path, max_rounds=1)
    assert result.ok and result.directory is not None
    assert (result.directory / "work" / "ran.txt").read_text() == "here"
    assert not (parent_work / "ran.txt").exists()

    # From the CLI, run from another directory: the same.
    before = {p.name for p in (confined.root / "session").iterdir()}
    assert checkpoint_cli.main(["continue", str(path), "--rounds", "1", "--allow-code-execution"]) == 0
    after = {p.name for p in (confined.root / "session").iterdir()}
    (directory,) = [confined.root / "session" / name for name in after - before]
    assert (directory / "work" / "ran.txt").read_text() == "here"
    assert not (parent_work / "ran.txt").exists()


def test_a_relative_session_path_never_redirects_code_into_the_cwd(confined: Confined) -> None:
    """A work_dir saved as a relative path (as older sessions did) is not resolved against the cwd."""
    cm = _code_chat(confined, "logs/session_x/work", max_round=1)  # the executor never runs here
    result = CheckpointRestorer(allow_code_execution=True).continue_from(
        cm.checkpoint_path(cm.list_checkpoints()[1]), max_rounds=1
    )
    assert result.ok and result.directory is not None
    assert (result.directory / "work" / "ran.txt").exists()


def test_endpoints_of_factory_agents_are_listed_never_refused(confined: Confined) -> None:
    agents = [plain_agent("user", "user: go on"), plain_agent("writer", "writer: done")]
    cm = _run_chat(confined, agents, "hello", max_round=2)
    own = {
        "config_list": [{"model": "gpt-4o-mini", "api_key": USER_KEY, "base_url": "http://127.0.0.1:9/v1"}]
    }

    def factory() -> list[ConversableAgent]:
        return [plain_agent("user", "user: go on"), ConversableAgent("writer", llm_config=own)]

    restored = CheckpointRestorer(agent_factory=factory, on_mismatch="proceed").restore(
        cm.checkpoint_path(cm.list_checkpoints()[1])
    )
    line = "agent 'writer': config_list[0] (model 'gpt-4o-mini').base_url -> http://127.0.0.1:9/v1"
    assert restored.report.endpoints == [f"{line} (from your agent_factory)"]
