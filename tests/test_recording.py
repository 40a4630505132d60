"""RecordingModelClient: record every LLM call of a session, replay it offline along the lineage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from autogen import ConversableAgent, GroupChat, OpenAIWrapper

from checkpoint_system import (
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    Intervention,
)
from checkpoint_system.errors import CheckpointError
from checkpoint_system.recording import (
    RECORDING_FILE,
    CorruptRecordingError,
    RecordingDivergedError,
    RecordingModelClient,
    RecordingStore,
    RecordingUnboundError,
    iter_records,
    lineage_directories,
    recording_llm_config,
    request_key,
    use_recording,
)
from checkpoint_system.testing import DeterministicModelClient, history_digest

LLM_AGENTS = ("alice", "bob")


class KeepingClient(DeterministicModelClient):
    """A custom client that keeps its config entry (with the key), as most custom clients do."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.config = config


def salted(salt: str) -> Any:
    """A deterministic 'model' whose answers show which model produced them."""

    def policy(agent_name: str, messages: list[dict[str, Any]]) -> str:
        return f"{agent_name} [{salt}] after {len(messages)} messages, digest {history_digest(messages)}"

    return policy


class Team:
    """Three agents in round robin (user has no LLM); alice and bob talk through the recording client."""

    def __init__(self, salt: str | None, directory: Path | None = None) -> None:
        self.inners: dict[str, DeterministicModelClient] = {}
        self.clients: dict[str, RecordingModelClient] = {}
        self.user = ConversableAgent(
            "user", llm_config=False, human_input_mode="NEVER", default_auto_reply="go on"
        )
        self.agents: list[ConversableAgent] = [self.user]
        for name in LLM_AGENTS:
            agent = ConversableAgent(
                name,
                system_message=f"You are {name}.",
                llm_config=recording_llm_config("test-model"),
                human_input_mode="NEVER",
            )
            inner = None
            if salt is not None:
                inner = self.inners[name] = DeterministicModelClient({"model": name}, policy=salted(salt))
            self.clients[name] = use_recording(agent, inner=inner, directory=directory)
            self.agents.append(agent)

    @property
    def inner_calls(self) -> int:
        return sum(inner.calls for inner in self.inners.values())

    @property
    def replayed(self) -> int:
        return sum(client.replayed for client in self.clients.values())

    @property
    def recorded(self) -> int:
        return sum(client.recorded for client in self.clients.values())


def run_session(
    session: Path, salt: str = "rec", max_round: int = 7
) -> tuple[Team, list[dict[str, Any]], CheckpointManager]:
    team = Team(salt)
    groupchat = GroupChat(
        agents=team.agents, messages=[], max_round=max_round, speaker_selection_method="round_robin"
    )
    checkpoints = CheckpointManager(session)
    manager = CheckpointingGroupChatManager(checkpoint_manager=checkpoints, groupchat=groupchat, silent=True)
    team.user.initiate_chat(manager, message="Let us count.", silent=True)
    return team, [dict(m) for m in groupchat.messages], checkpoints


def restorer_for(salt: str | None, built: list[Team]) -> CheckpointRestorer:
    def factory() -> list[ConversableAgent]:
        team = Team(salt)
        built.append(team)
        return team.agents

    return CheckpointRestorer(agent_factory=factory)


def checkpoint_files(session: Path) -> list[Path]:
    return sorted(
        (session / "checkpoints").glob("checkpoint_*.json"), key=lambda p: int(p.name.split("_")[1])
    )


def appended(session: Path) -> list[Path]:
    return [p for p in checkpoint_files(session) if "_message_appended_" in p.name]


def contents(messages: list[dict[str, Any]]) -> list[Any]:
    return [(m.get("name"), m.get("content"), m.get("tool_calls")) for m in messages]


@pytest.fixture(scope="module")
def recorded_session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], int]:
    session = tmp_path_factory.mktemp("rec") / "session_recorded"
    team, messages, checkpoints = run_session(session)
    checkpoints.close()
    return session, messages, team.inner_calls


# -- record, then replay --------------------------------------------------------------------------------
def test_every_call_is_recorded_as_json_lines(
    recorded_session: tuple[Path, list[dict[str, Any]], int],
) -> None:
    session, messages, inner_calls = recorded_session
    records = list(iter_records(session))
    llm_messages = [m for m in messages if m.get("name") in LLM_AGENTS]
    assert inner_calls == len(records) == len(llm_messages) > 0
    for record, message in zip(records, llm_messages, strict=True):
        assert record["agent"] == message["name"]
        assert record["response"]["choices"][0]["message"]["content"] == message["content"]
        assert record["request"]["model"] == "test-model"
        assert record["key"] == request_key(record["request"])
        assert isinstance(record["step"], int) and record["checkpoint"]
    # plain JSON, one object per line
    for line in (session / RECORDING_FILE).read_text(encoding="utf-8").splitlines():
        assert isinstance(json.loads(line), dict)


def test_replay_reproduces_the_rest_of_the_transcript_offline(
    recorded_session: tuple[Path, list[dict[str, Any]], int],
) -> None:
    session, original, _ = recorded_session
    before = (session / RECORDING_FILE).read_bytes()
    for path in appended(session)[:-1]:  # the last one has no round budget left
        built: list[Team] = []
        result = restorer_for(None, built).continue_from(path, max_rounds=None)  # no inner: replay only
        assert result.ok, result.reason
        assert contents(result.restored.groupchat.messages) == contents(original), path.name
        team = built[-1]
        llm_after = [
            m for m in original[len(result.restored.checkpoint.messages) :] if m.get("name") in LLM_AGENTS
        ]
        assert team.replayed == len(llm_after) and team.recorded == 0
        assert not (result.directory / RECORDING_FILE).exists()
    assert (session / RECORDING_FILE).read_bytes() == before  # the parent's recording is never written


def test_a_recorded_run_and_its_replay_return_identical_responses(tmp_path: Path) -> None:
    """Tool calls and text come back bit for bit, from record mode and from replay."""
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "add", "arguments": json.dumps({"a": 1, "b": 2.5, "note": "é ✓"})},
    }

    def policy(agent_name: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"content": None, "tool_calls": [tool_call]}

    params = {"messages": [{"role": "user", "content": "add 1 and 2.5"}], "model": "m", "temperature": 0.0}
    recorder = RecordingModelClient(
        {"model": "m"}, inner=DeterministicModelClient({"model": "x"}, policy=policy), directory=tmp_path
    )
    first = recorder.create(dict(params))
    replayer = RecordingModelClient({"model": "m"}, directory=tmp_path)
    second = replayer.create(dict(params))
    assert recorder.recorded == 1 and replayer.replayed == 1
    assert recorder.message_retrieval(first) == replayer.message_retrieval(second)
    assert replayer.message_retrieval(second)[0]["tool_calls"] == [tool_call]
    assert second.choices[0].message.tool_calls == [tool_call] and second.model and second.id
    assert second.message_retrieval_function is None and replayer.cost(second) == 0.0


def test_the_key_ignores_absent_versus_null_and_transport_fields() -> None:
    base = {"messages": [{"role": "user", "content": "hi"}], "model": "m"}
    same = {
        "messages": [{"role": "user", "content": "hi", "tool_calls": None, "name": None}],
        "model": "m",
        "model_client_cls": "RecordingModelClient",
        "api_key": "sk-whatever",
        "stream": False,
        "timeout": 30,
    }
    assert request_key(base) == request_key(same)
    assert request_key(base) != request_key({**base, "temperature": 0.2})
    assert request_key(base) != request_key({**base, "model": "other"})
    assert request_key(base) != request_key(
        {**base, "tools": [{"type": "function", "function": {"name": "f"}}]}
    )


# -- after an intervention ------------------------------------------------------------------------------
def test_diverged_request_without_live_model_names_agent_and_step(
    recorded_session: tuple[Path, list[dict[str, Any]], int],
) -> None:
    session, _, _ = recorded_session
    path = appended(session)[2]  # three messages: user, alice, bob
    built: list[Team] = []
    with pytest.raises(RecordingDivergedError) as caught:
        restorer_for(None, built).continue_from(
            path, max_rounds=None, interventions=[Intervention.edit(1, "X")]
        )
    error = caught.value
    assert isinstance(error, CheckpointError)
    # After bob's message (in flight) the user answers without a model; alice is the first to ask a model.
    assert error.agent == "alice" and error.step == 4
    assert error.first_difference == 1  # the edited message
    text = str(error)
    assert "'alice'" in text and "step 4" in text and "message 1" in text and "diverged" in text
    assert built[-1].recorded == 0


def test_diverged_request_uses_the_live_model_when_configured(
    recorded_session: tuple[Path, list[dict[str, Any]], int],
) -> None:
    session, _, _ = recorded_session
    before = (session / RECORDING_FILE).read_bytes()
    path = appended(session)[2]
    built: list[Team] = []
    result = restorer_for("live", built).continue_from(
        path, max_rounds=None, interventions=[Intervention.edit(1, "X")]
    )
    assert result.ok
    team = built[-1]
    new_llm = [m for m in result.new_messages if m.get("name") in LLM_AGENTS]
    assert new_llm and all("[live]" in str(m["content"]) for m in new_llm)
    assert team.recorded == team.inner_calls == len(new_llm) and team.replayed == 0
    records = list(iter_records(result.directory))
    assert [r["response"]["choices"][0]["message"]["content"] for r in records] == [
        m["content"] for m in new_llm
    ]
    assert (session / RECORDING_FILE).read_bytes() == before


def test_recordings_are_found_through_the_lineage(tmp_path: Path) -> None:
    """S ends early; C1 continues past S's end (new calls recorded in C1); C2 continues C1 offline."""
    session = tmp_path / "session_s"
    run_session(session, salt="s", max_round=4)[2].close()
    s_records = list(iter_records(session))

    built: list[Team] = []
    c1 = restorer_for("c1", built).continue_from(appended(session)[1], max_rounds=6)
    assert c1.ok
    assert built[-1].replayed >= 1 and built[-1].recorded >= 1  # from S, then new ones
    c1_records = list(iter_records(c1.directory))
    assert all("[c1]" in r["response"]["choices"][0]["message"]["content"] for r in c1_records)
    assert lineage_directories(c1.directory)[1].resolve() == session.resolve()

    first = appended(c1.directory)[0]  # C1's first message: the state S had at the fork
    c2 = restorer_for(None, built).continue_from(first, max_rounds=6)  # replay only
    assert c2.ok
    assert contents(c2.restored.groupchat.messages) == contents(c1.restored.groupchat.messages)
    team = built[-1]
    assert team.recorded == 0 and not (c2.directory / RECORDING_FILE).exists()
    used = {m["content"] for m in c2.new_messages if m.get("name") in LLM_AGENTS}
    assert used & {r["response"]["choices"][0]["message"]["content"] for r in s_records}
    assert used & {r["response"]["choices"][0]["message"]["content"] for r in c1_records}
    chain = [p.resolve() for p in lineage_directories(c2.directory)]
    assert chain == [c2.directory.resolve(), c1.directory.resolve(), session.resolve()]


def test_async_run_records_and_replays(tmp_path: Path) -> None:
    session = tmp_path / "session_async"
    team = Team("async")
    groupchat = GroupChat(
        agents=team.agents, messages=[], max_round=5, speaker_selection_method="round_robin"
    )
    checkpoints = CheckpointManager(session)
    manager = CheckpointingGroupChatManager(checkpoint_manager=checkpoints, groupchat=groupchat, silent=True)
    asyncio.run(team.user.a_initiate_chat(manager, message="Let us count.", silent=True))
    checkpoints.close()
    assert team.recorded >= 2
    built: list[Team] = []
    result = asyncio.run(restorer_for(None, built).a_continue_from(appended(session)[1], max_rounds=None))
    assert result.ok and built[-1].replayed >= 1 and built[-1].recorded == 0
    assert contents(result.restored.groupchat.messages)[: len(groupchat.messages)] == contents(
        groupchat.messages
    )


# -- secrets, files, errors -----------------------------------------------------------------------------
def test_no_secret_reaches_a_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_key = "sk-env-SECRET-0123456789abcdef"
    entry_key = "sk-entry-SECRET-abcdef012345"
    inner_key = "sk-inner-SECRET-fedcba987654"
    monkeypatch.setenv("OPENAI_API_KEY", env_key)

    def leaky(agent_name: str, messages: list[dict[str, Any]]) -> str:
        return f"my key is {env_key} and {inner_key}"

    inner = OpenAIWrapper(
        config_list=[{"model": "inner-model", "model_client_cls": "KeepingClient", "api_key": inner_key}],
        cache_seed=None,
    )
    inner.register_model_client(KeepingClient, policy=leaky)
    agent = ConversableAgent(
        "alice",
        llm_config=recording_llm_config("test-model", api_key=entry_key),
        human_input_mode="NEVER",
    )
    client = use_recording(agent, inner=inner, directory=tmp_path)
    reply = agent.generate_reply(messages=[{"role": "user", "content": "hello"}])
    assert client.recorded == 1
    text = (tmp_path / RECORDING_FILE).read_text(encoding="utf-8")
    for secret in (env_key, entry_key, inner_key):
        assert secret not in text
    assert "api_key" not in text and "[REDACTED]" in text
    assert reply == "my key is [REDACTED] and [REDACTED]"  # what a replay returns, too


def test_credentials_of_a_live_wrapper_are_known_to_the_scrubber() -> None:
    from checkpoint_system.recording import _inner_secrets

    wrapper = OpenAIWrapper(
        config_list=[{"model": "gpt-4o-mini", "api_key": "sk-live-SECRET-42"}], cache_seed=None
    )
    assert "sk-live-SECRET-42" in _inner_secrets(wrapper)


def test_unbound_client_fails_clearly() -> None:
    client = RecordingModelClient({"model": "m"}, agent_name="alice")
    with pytest.raises(RecordingUnboundError, match="alice"):
        client.create({"messages": [{"role": "user", "content": "hi"}], "model": "m"})


def test_torn_last_line_is_skipped_and_cut_corrupt_line_is_reported(tmp_path: Path) -> None:
    params = {"messages": [{"role": "user", "content": "hi"}], "model": "m"}
    inner = DeterministicModelClient({"model": "x"})
    RecordingModelClient({"model": "m"}, inner=inner, directory=tmp_path).create(dict(params))
    path = tmp_path / RECORDING_FILE
    good = path.read_bytes()
    path.write_bytes(good + b'{"key": "abc", "resp')  # a writer killed mid-line
    assert len(list(iter_records(tmp_path))) == 1
    replayer = RecordingModelClient({"model": "m"}, directory=tmp_path)
    assert replayer.create(dict(params)).choices[0].message.content
    RecordingStore(tmp_path).append({"key": "k2", "response": {}})  # a new writer cuts the torn tail first
    assert path.read_bytes().startswith(good) and len(list(iter_records(tmp_path))) == 2

    path.write_bytes(b"not json\n" + good)
    with pytest.raises(CorruptRecordingError, match="line 1"):
        list(iter_records(tmp_path))


def test_live_openai_path_with_the_http_call_stubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An OpenAIWrapper inner (the example's live runs): the ChatCompletion is recorded as JSON."""
    from openai.types.chat import ChatCompletion

    from checkpoint_system.recording import live_client

    sent: list[dict[str, Any]] = []
    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "add", "arguments": '{"a":1}'},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }
    )

    def fake_create(**kwargs: Any) -> ChatCompletion:
        sent.append(kwargs)
        return completion

    inner = live_client({"model": "gpt-4o-mini", "api_key": "sk-stub-SECRET-000000"})
    monkeypatch.setattr(inner._clients[0]._oai_client.chat.completions, "create", fake_create)
    params = {"messages": [{"role": "user", "content": "add"}], "model": "gpt-4o-mini", "temperature": 0}
    client = RecordingModelClient({"model": "gpt-4o-mini"}, inner=inner, directory=tmp_path, agent_name="a")
    live = client.create(dict(params))
    assert sent and sent[0]["model"] == "gpt-4o-mini" and sent[0]["messages"] == params["messages"]
    replay = RecordingModelClient({"model": "gpt-4o-mini"}, directory=tmp_path, agent_name="a").create(
        dict(params)
    )
    assert client.message_retrieval(live) == client.message_retrieval(replay)
    assert replay.choices[0].message.tool_calls[0]["function"] == {"name": "add", "arguments": '{"a":1}'}
    record = next(iter_records(tmp_path))
    assert record["response"]["usage"]["total_tokens"] == 15 and record["source"] == "OpenAIWrapper"
    assert "sk-stub-SECRET" not in (tmp_path / RECORDING_FILE).read_text(encoding="utf-8")
