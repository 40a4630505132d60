"""One conformance suite for every storage backend: files, SQLite and PostgreSQL behave the same.

Each test takes the ``backend`` fixture, parametrized over ``file`` (a ``FileStore`` directory), ``sqlite``
(a ``sqlite:///`` database file) and ``postgres`` (a fresh database on the throwaway server of
``pg_server.py``), and talks to it only through the storage interface (``CheckpointStore`` /
``SessionStore``), ``CheckpointManager`` and ``CheckpointRestorer``. Only the corruption and secret tests
look at the stored bytes themselves, through a small per-backend adapter.

Real AG2 chats come from ``scenarios.py`` (deterministic model, no network).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from autogen import ConversableAgent, GroupChat
from pg_fixture import postgres_server, postgres_url  # noqa: F401  (fixtures)
from pg_server import SKIP_ENV
from restore_support import REPO_ROOT, subprocess_env
from scenarios import all_scenarios, plain_agent

from checkpoint_system import (
    CheckpointData,
    CheckpointingGroupChatManager,
    CheckpointManager,
    CheckpointRestorer,
    RestoreWarning,
)
from checkpoint_system.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CorruptCheckpointError,
    SessionLockedError,
    UnsupportedFormatError,
)
from checkpoint_system.storage import CheckpointStore, FileStore, SessionStore, load_reference, open_store
from checkpoint_system.storage.files import LOG_FILE, checkpoint_file_name
from checkpoint_system.storage.postgres import SCHEMA_VERSION as postgres_schema_version
from checkpoint_system.storage.sqlite import SCHEMA_VERSION as sqlite_schema_version
from checkpoint_system.testing import DeterministicModelClient, deterministic_llm_config

BACKENDS = ("file", "sqlite", "postgres")
SECRET = "sk-conformance-SECRET"
KEY = "(SELECT id FROM cs_sessions WHERE session_id = ?)"  # a session's integer key, in raw SQL
TIMESTAMP = "2024-06-01T12:00:00.123456+00:00"


# -- backends -----------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """A store under test plus raw access to what it stored (for the corruption and secret tests)."""

    name: str
    url: str
    tmp: Path
    store: CheckpointStore

    def reopen(self) -> CheckpointStore:
        """Another store object on the same storage (as another process would open it)."""
        return open_store(self.url)

    def ref(self, session: SessionStore, checkpoint_id: str) -> str:
        """How error messages name a checkpoint: its file, or ``<url>#<session>/<id>``."""
        return session.locate(checkpoint_id)

    # raw access ------------------------------------------------------------------------------------------
    def _sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        if self.name == "sqlite":
            conn = sqlite3.connect(self.url[len("sqlite:///") :], isolation_level=None)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def record(self, session: SessionStore, checkpoint_id: str) -> bytes:
        if self.name == "file":
            return Path(session.locate(checkpoint_id)).read_bytes()
        rows = self._sql(
            f"SELECT record FROM cs_checkpoints WHERE session = {KEY} AND checkpoint_id = ?",
            (session.session_id, checkpoint_id),
        )
        return bytes(rows[0][0])

    def set_record(self, session: SessionStore, checkpoint_id: str, raw: bytes) -> None:
        if self.name == "file":
            Path(session.locate(checkpoint_id)).write_bytes(raw)
            return
        self._sql(
            f"UPDATE cs_checkpoints SET record = ? WHERE session = {KEY} AND checkpoint_id = ?",
            (raw, session.session_id, checkpoint_id),
        )

    def _log_file(self, session: SessionStore, checkpoint_id: str) -> Path:
        return Path(session.locate(checkpoint_id)).parent / LOG_FILE

    def damage_log(self, session: SessionStore, checkpoint_id: str) -> None:
        """Change one byte of the log part every checkpoint of the session needs."""
        if self.name == "file":
            log = self._log_file(session, checkpoint_id)
            data = bytearray(log.read_bytes())
            data[5] ^= 0x01
            log.write_bytes(bytes(data))
            return
        table, column = self._chunks
        (chunk,) = self._sql(
            f"SELECT {column} FROM {table} WHERE session = {KEY} AND seq = 0",
            (session.session_id,),
        )[0]
        data = bytearray(bytes(chunk))
        data[5] ^= 0x01
        self._sql(
            f"UPDATE {table} SET {column} = ? WHERE session = {KEY} AND seq = 0",
            (bytes(data), session.session_id),
        )

    def drop_log_part(self, session: SessionStore, checkpoint_id: str) -> None:
        """Remove a part of the log the checkpoint needs (a chunk; for files, the log's tail)."""
        if self.name == "file":
            log = self._log_file(session, checkpoint_id)
            log.write_bytes(log.read_bytes()[:100])
            return
        self._sql(  # SQLite: the row of checkpoint 1 goes, with its chunk
            f"DELETE FROM {self._chunks[0]} WHERE session = {KEY} AND seq = 1",
            (session.session_id,),
        )

    @property
    def _chunks(self) -> tuple[str, str]:
        """(table, column) of the log chunks: SQLite keeps a chunk in its checkpoint's row."""
        return ("cs_checkpoints", "chunk") if self.name == "sqlite" else ("cs_log_chunks", "data")

    def stored_bytes(self) -> bytes:
        """Everything the backend stored: every file, the database file with its WAL, every table row."""
        if self.name == "file":
            return b"".join(p.read_bytes() for p in sorted(Path(self.url).rglob("*")) if p.is_file())
        if self.name == "sqlite":
            path = Path(self.url[len("sqlite:///") :])
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            return b"".join(p.read_bytes() for p in files if p.exists())
        chunks = []
        tables = self._sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        )
        assert {t for (t,) in tables} >= {"cs_checkpoints", "cs_log_chunks", "cs_documents"}
        for (table,) in tables:
            for row in self._sql(f'SELECT * FROM "{table}"'):
                for value in row:
                    chunks.append(
                        bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
                    )
        return b"\n".join(chunks)


def _make_backend(name: str, tmp: Path, request: pytest.FixtureRequest) -> Backend:
    if name == "file":
        url = str(tmp / "store")
    elif name == "sqlite":
        url = f"sqlite:///{tmp / 'checkpoints.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    return Backend(name, url, tmp, open_store(url))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = _make_backend(str(request.param), tmp_path, request)
    yield made
    close = getattr(made.store, "close", None)
    if close is not None:
        close()


# -- synthetic checkpoints ----------------------------------------------------------------------------------


class SyntheticChat:
    """A growing group chat turned into ``CheckpointData`` directly (no AG2), like ``snapshot.py`` does."""

    agents = ("planner", "coder")
    manager = "chat_manager"

    def __init__(self, label: str = "chat") -> None:
        self.label = label
        self.messages: list[dict[str, Any]] = []
        self.histories: dict[str, dict[str, list[dict[str, Any]]]] = {
            a: {self.manager: []} for a in self.agents
        }
        self.histories[self.manager] = {a: [] for a in self.agents}

    def say(self, index: int) -> None:
        speaker = self.agents[index % len(self.agents)]
        message = {"role": "user", "name": speaker, "content": f"{self.label} turn {index}: " + "text " * 20}
        self.messages.append(message)
        self.histories[self.manager][speaker].append(message)
        for agent in self.agents:
            self.histories[agent][self.manager].append(message)

    def checkpoint(self, step: int, context: str = "message_appended") -> CheckpointData:
        def state(name: str, **extra: Any) -> dict[str, Any]:
            return {
                "name": name,
                "agent_class": "autogen.agentchat.conversable_agent.ConversableAgent",
                "system_message": f"You are the {name}.",
                "llm_config": {
                    "config_list": [{"model": "gpt-4o-mini", "api_key": {"$redacted": "api_key"}}]
                },
                "_oai_messages": {peer: list(h) for peer, h in self.histories[name].items()},
                "consecutive_auto_reply_counter": {peer: step % 3 for peer in self.histories[name]},
                **extra,
            }

        return CheckpointData.model_validate(
            {
                "checkpoint_id": checkpoint_file_name(step, context, TIMESTAMP)[: -len(".json")],
                "timestamp": TIMESTAMP,
                "step_number": step,
                "context": context,
                "messages": list(self.messages),
                "agent_states": {a: state(a) for a in self.agents},
                "manager_state": state(self.manager, step_counter=step, current_speaker="planner"),
                "groupchat_state": {"agent_names": list(self.agents), "max_round": 50, "round_index": step},
                "session_id": self.label,
                "parent_checkpoint_id": None,
                "metadata": {"problem_context": "conformance", "unicode": "ünïcødé ✓", "nested": {"n": step}},
            }
        )


def fill(
    session: SessionStore, count: int, *, start: int = 0, chat: SyntheticChat | None = None
) -> dict[str, Any]:
    """Save ``count`` checkpoints; returns ``{id: CheckpointData}`` in save order."""
    chat = chat or SyntheticChat(session.session_id)
    saved = {}
    for step in range(start, start + count):
        chat.say(step)
        data = chat.checkpoint(step)
        checkpoint_id = session.save(data, trusted_prefix=True)
        assert checkpoint_id == data.checkpoint_id
        saved[checkpoint_id] = data.model_copy(deep=True)
    return saved


def same(loaded: CheckpointData, expected: CheckpointData) -> None:
    assert loaded.integrity is not None and len(loaded.integrity) == 64
    assert loaded.model_copy(update={"integrity": None}) == expected.model_copy(update={"integrity": None})


# -- real chats ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    messages: list[dict[str, Any]]
    termination_reason: str
    ids: list[str]


def run_chat(store: CheckpointStore, session_id: str, scenario: str = "round_robin") -> Run:
    """Run a scenario to its end under ``CheckpointingGroupChatManager`` into ``store``/``session_id``."""
    built = all_scenarios()[scenario]()
    checkpoints = CheckpointManager(store=store, session_id=session_id, problem_context=scenario)
    manager = built.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoints)
    built.run(manager)
    checkpoints.close()
    return Run(
        [dict(m) for m in built.groupchat.messages],
        str(manager.last_termination_reason),
        checkpoints.list_checkpoints(),
    )


# -- round trips, ordering, sessions, documents -------------------------------------------------------------


def test_save_load_round_trip(backend: Backend) -> None:
    session = backend.store.open_session("session_1")
    assert session.list_checkpoints() == [] and session.next_step_number() == 0
    saved = fill(session, 6)
    assert session.list_checkpoints() == list(saved)
    assert session.next_step_number() == 6
    for checkpoint_id, data in saved.items():
        same(session.load(checkpoint_id), data)
        # a reference resolves from anywhere: a file path, or <url>#<session>/<id>
        reference = session.locate(checkpoint_id)
        same(load_reference(reference).load(), data)
        same(load_reference(checkpoint_id, backend.reopen()).load(), data)
    # another store object sees the same checkpoints, byte for byte the same record
    other = backend.reopen().open_session("session_1")
    assert other.list_checkpoints() == list(saved)
    last = list(saved)[-1]
    assert backend.record(other, last) == backend.record(session, last)
    with pytest.raises(CheckpointNotFoundError) as missing:
        session.load("checkpoint_99_message_appended_20240601_120000_123456")
    assert "checkpoint_99" in str(missing.value)
    session.close()


def test_ordering_and_reopening_a_session(backend: Backend) -> None:
    chat = SyntheticChat("ordered")
    first = backend.store.open_session("ordered")
    saved = fill(first, 12, chat=chat)  # steps 0..11: "checkpoint_10_..." sorts after "checkpoint_9_..."
    first.close()
    second = backend.reopen().open_session("ordered")  # reopening rebuilds the writer state from the log
    assert second.next_step_number() == 12
    saved |= fill(second, 3, start=12, chat=chat)
    assert second.list_checkpoints() == list(saved)
    assert [int(c.split("_")[1]) for c in second.list_checkpoints()] == list(range(15))
    for checkpoint_id, data in saved.items():
        same(backend.store.open_session("ordered").load(checkpoint_id), data)
    second.close()


def test_duplicate_checkpoint_is_refused_and_session_stays_usable(backend: Backend) -> None:
    session = backend.store.open_session("dup")
    chat = SyntheticChat("dup")
    saved = fill(session, 3, chat=chat)
    again = next(iter(saved.values()))
    with pytest.raises(CheckpointSaveError, match="already exists"):
        session.save(again)
    saved |= fill(session, 2, start=3, chat=chat)
    for checkpoint_id, data in saved.items():
        same(session.load(checkpoint_id), data)
    with pytest.raises(CheckpointSaveError, match="step_number"):
        session.save(chat.checkpoint(-1))
    session.close()


def test_list_sessions_and_find_checkpoint(backend: Backend) -> None:
    assert backend.store.list_sessions() == []
    saved_a = fill(backend.store.open_session("session_a"), 2)
    fill(backend.store.open_session("session_b/continuation_1"), 1, start=5)
    backend.store.open_session("session_c").write_document("session_metadata.json", {"status": "created"})
    backend.store.open_session("never_written")  # opening alone creates nothing
    assert backend.store.list_sessions() == ["session_a", "session_b/continuation_1", "session_c"]
    assert backend.reopen().list_sessions() == backend.store.list_sessions()
    first = next(iter(saved_a))
    assert backend.store.find_checkpoint(first) == "session_a"
    with pytest.raises(CheckpointNotFoundError, match="no session holds"):
        backend.store.find_checkpoint("checkpoint_7_nowhere")
    fill(backend.store.open_session("session_d"), 1)  # the same synthetic ids in two sessions
    with pytest.raises(CheckpointNotFoundError, match="2 sessions hold"):
        backend.store.find_checkpoint(first)


def test_documents(backend: Backend) -> None:
    session = backend.store.open_session("docs")
    assert session.read_document("session_metadata.json") is None
    session.write_document("session_metadata.json", {"status": "running", "n": 1, "nested": {"ü": [1, 2.5]}})
    session.write_document("problem_statement.txt", "Compute 11 * 10.\nSecond line ✓")
    session.write_document("chat_history.json", [{"role": "user", "content": "hi"}])
    session.write_document("session_metadata.json", {"status": "completed"})  # rewrite
    other = backend.reopen().open_session("docs")
    assert other.read_document("session_metadata.json") == {"status": "completed"}
    assert other.read_document("problem_statement.txt") == "Compute 11 * 10.\nSecond line ✓"
    assert other.read_document("chat_history.json") == [{"role": "user", "content": "hi"}]
    assert other.list_documents() == [  # type: ignore[attr-defined]
        "chat_history.json",
        "problem_statement.txt",
        "session_metadata.json",
    ]
    for bad in ("../escape.json", ".hidden", "a/b.json", ""):
        with pytest.raises(CheckpointSaveError, match="unsafe document name"):
            session.write_document(bad, {})


def test_delete_session(backend: Backend) -> None:
    keep = fill(backend.store.open_session("keep"), 2)
    doomed_session = backend.store.open_session("doomed")
    doomed = fill(doomed_session, 3)
    doomed_session.write_document("session_metadata.json", {"x": 1})
    with pytest.raises(SessionLockedError):  # its writer is still open
        backend.reopen().delete_session("doomed")
    doomed_session.close()
    backend.store.delete_session("doomed")
    assert backend.store.list_sessions() == ["keep"]
    gone = backend.store.open_session("doomed")
    assert gone.list_checkpoints() == [] and gone.read_document("session_metadata.json") is None
    with pytest.raises(CheckpointNotFoundError):
        gone.load(next(iter(doomed)))
    with pytest.raises(CheckpointNotFoundError):
        backend.store.delete_session("doomed")
    for checkpoint_id, data in keep.items():
        same(backend.store.open_session("keep").load(checkpoint_id), data)
    fill(gone, 2)  # the id can be used again from scratch
    assert backend.store.open_session("doomed").next_step_number() == 2


# -- writers ------------------------------------------------------------------------------------------------


def test_second_writer_on_a_session_is_locked(backend: Backend) -> None:
    chat = SyntheticChat("locked")
    first = backend.store.open_session("locked")
    saved = fill(first, 2, chat=chat)
    for second in (backend.store.open_session("locked"), backend.reopen().open_session("locked")):
        chat.say(99)
        with pytest.raises(SessionLockedError) as info:
            second.save(chat.checkpoint(99))
        assert "locked" in str(info.value)
        second.close()
    other = backend.reopen().open_session("locked")
    assert other.list_checkpoints() == list(saved)  # readers are never locked out
    first.close()  # releases the session: the next writer continues the same log
    taker = backend.reopen().open_session("locked")
    saved |= fill(taker, 2, start=2, chat=SyntheticChat("locked"))
    with pytest.raises(SessionLockedError):
        fill(first, 1, start=10)  # the old writer cannot come back while the new one holds it
    taker.close()
    for checkpoint_id, data in saved.items():
        same(backend.store.open_session("locked").load(checkpoint_id), data)


def test_concurrent_sessions_from_threads(backend: Backend) -> None:
    """Several threads write different sessions at once (shared and separate store objects)."""
    errors: list[BaseException] = []
    results: dict[str, dict[str, Any]] = {}
    stores = [backend.store, backend.store, backend.reopen(), backend.reopen()]

    def work(index: int) -> None:
        try:
            session = stores[index].open_session(f"thread_{index}")
            results[session.session_id] = fill(session, 12)
            session.write_document("session_metadata.json", {"thread": index})
            session.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert backend.reopen().list_sessions() == sorted(results)
    reader = backend.reopen()
    for session_id, saved in results.items():
        session = reader.open_session(session_id)
        assert session.list_checkpoints() == list(saved)
        assert session.read_document("session_metadata.json") == {"thread": int(session_id[-1])}
        for checkpoint_id in list(saved)[::5]:
            same(session.load(checkpoint_id), saved[checkpoint_id])


# -- secrets and corruption ---------------------------------------------------------------------------------


def test_secrets_are_never_stored(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # even when the environment holds the key
    user = plain_agent("user", "user: go on")
    solver = ConversableAgent(
        "solver",
        llm_config=deterministic_llm_config("solver", api_key=SECRET),
        human_input_mode="NEVER",
    )
    solver.register_model_client(DeterministicModelClient)
    silent = ConversableAgent(  # saved, never called
        "gpt",
        llm_config={"config_list": [{"model": "gpt-4o-mini", "api_key": SECRET}], "cache_seed": None},
        human_input_mode="NEVER",
    )
    groupchat = GroupChat(
        agents=[user, solver, silent], messages=[], max_round=2, speaker_selection_method="round_robin"
    )
    checkpoints = CheckpointManager(store=backend.store, session_id="secret_session")
    manager = CheckpointingGroupChatManager(
        checkpoint_manager=checkpoints, groupchat=groupchat, name="chat_manager", llm_config=False
    )
    user.initiate_chat(manager, message="What is 11 * 10?")
    checkpoints.close()
    ids = checkpoints.list_checkpoints()
    assert len(ids) == 4  # start, two messages, end
    loaded = checkpoints.load_checkpoint(ids[-1])
    assert loaded.agent_states["solver"].llm_config["config_list"][0]["api_key"]["$redacted"] == "api_key"
    stored = backend.stored_bytes()
    assert b"gpt-4o-mini" in stored  # the grep sees the configs...
    assert SECRET.encode() not in stored, f"{backend.name}: the API key was stored"  # ...but no key


CORRUPTIONS: dict[str, Callable[[Backend, SessionStore, str], None]] = {
    "record not JSON": lambda b, s, c: b.set_record(s, c, b.record(s, c)[:40]),
    "record modified": lambda b, s, c: b.set_record(
        s, c, b.record(s, c).replace(b'"context":"message_appended"', b'"context":"message_Appended"')
    ),
    "log modified": lambda b, s, c: b.damage_log(s, c),
    "log part missing": lambda b, s, c: b.drop_log_part(s, c),
}
EXPECTED_MESSAGE = {
    "record not JSON": "corrupt JSON",
    "record modified": "integrity hash mismatch",
    "log modified": "does not match",
    "log part missing": "missing|truncated",
}


@pytest.mark.parametrize("damage", list(CORRUPTIONS))
def test_corrupt_rows_are_reported_clearly(backend: Backend, damage: str) -> None:
    session = backend.store.open_session("damaged")
    saved = fill(session, 4)
    session.close()
    target = list(saved)[2]
    before = backend.record(session, target)
    CORRUPTIONS[damage](backend, session, target)
    assert damage.startswith("log") or backend.record(session, target) != before
    reader = backend.reopen().open_session("damaged")
    with pytest.raises(CorruptCheckpointError, match=EXPECTED_MESSAGE[damage]) as info:
        reader.load(target)
    reference = backend.ref(reader, target)
    assert reference in str(info.value), str(info.value)
    assert info.value.path == reference
    with pytest.raises(CorruptCheckpointError):
        load_reference(reference).load()
    if backend.name != "file" and damage.startswith("log"):
        # a database writer refuses to extend a damaged log instead of building on it
        with pytest.raises(CheckpointError, match=r"missing|does not match|damaged"):
            fill(backend.reopen().open_session("damaged"), 1, start=4)


# -- schema versions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sqlite", "postgres"])
def test_database_schema_is_versioned(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    made = _make_backend(name, tmp_path, request)
    latest = {"sqlite": sqlite_schema_version, "postgres": postgres_schema_version}[name]
    assert made.store.schema_version() == latest  # type: ignore[attr-defined]
    fill(made.store.open_session("s"), 1)
    again = made.reopen()  # an up-to-date schema is left alone
    assert again.schema_version() == latest and again.list_sessions() == ["s"]  # type: ignore[attr-defined]
    made._sql(
        "INSERT INTO cs_schema_version (version, description) VALUES (?, ?)"
        if name == "postgres"
        else "INSERT INTO cs_schema_version VALUES (?, ?, 'now')",
        (99, "from the future"),
    )
    with pytest.raises(UnsupportedFormatError, match="schema version 99 is newer"):
        made.reopen().list_sessions()


# -- lineage and faithful restores with real chats ----------------------------------------------------------


def _new_session(store: CheckpointStore, before: list[str]) -> str:
    (created,) = sorted(set(store.list_sessions()) - set(before))
    return created


def test_lineage_across_continuations(backend: Backend) -> None:
    run = run_chat(backend.store, "chat")
    parent = backend.store.open_session("chat")
    assert parent.list_checkpoints() == run.ids and len(run.ids) == len(run.messages) + 2
    parent_records = {c: backend.record(parent, c) for c in run.ids}
    middle = run.ids[len(run.ids) // 2]

    before = backend.store.list_sessions()
    first = CheckpointRestorer().continue_from(parent.locate(middle))  # a file path or <url>#<session>/<id>
    assert first.ok, first.reason
    child_id = _new_session(backend.store, before)
    assert child_id.startswith("chat/continuation_")
    assert first.chat_result is not None and first.chat_result.chat_history == run.messages

    child = backend.store.open_session(child_id)
    chain = [child.load(c) for c in child.list_checkpoints()]
    assert chain[0].context == "conversation_start" and chain[-1].context == "conversation_end"
    assert chain[0].parent_checkpoint_id == middle
    for previous, current in itertools.pairwise(chain):
        assert current.parent_checkpoint_id == previous.checkpoint_id
    for data in chain:
        assert data.metadata["continuation_of"]["parent_checkpoint_id"] == middle
        assert data.metadata["continuation_of"]["parent_session_id"] == "chat"
    meta = child.read_document("continuation_metadata.json")
    assert meta["parent_checkpoint_step"] == parent.load(middle).step_number
    assert meta["outcome"] == "continued" and meta["new_messages"] == len(first.new_messages)
    assert child.read_document("session_metadata.json")["parent_checkpoint_id"] == middle

    # a continuation of the continuation, by id within the store: a tree of sessions
    grand_parent_id = [c.checkpoint_id for c in chain if c.context == "message_appended"][1]
    before = backend.store.list_sessions()
    second = CheckpointRestorer().continue_from(grand_parent_id, store=backend.reopen(), max_rounds=2)
    assert second.ok, second.reason
    grandchild_id = _new_session(backend.store, before)
    assert grandchild_id.startswith(child_id + "/continuation_")
    grandchild = backend.store.open_session(grandchild_id)
    grand_chain = [grandchild.load(c) for c in grandchild.list_checkpoints()]
    assert grand_chain[0].parent_checkpoint_id == grand_parent_id
    assert grand_chain[0].metadata["continuation_of"]["parent_session_id"] == child_id
    assert len(second.new_messages) == 2
    assert second.chat_result is not None
    assert second.chat_result.chat_history == run.messages[: len(second.chat_result.chat_history)]

    # the parents were never written to
    assert parent.list_checkpoints() == run.ids
    assert {c: backend.record(parent, c) for c in run.ids} == parent_records
    assert child.list_checkpoints() == [c.checkpoint_id for c in chain]


#: scenario -> whether agents come from the scenario builder (custom policies, tools) or the checkpoint
FAITHFUL = {"round_robin": False, "tool_calls": True, "termination_message": True}


def _expectation(data: CheckpointData, run: Run) -> str:
    if len(data.messages) < len(run.messages):
        return "continue"
    if run.termination_reason.startswith("Termination message condition on the GroupChatManager"):
        return "termination"
    if run.termination_reason.startswith("Maximum rounds"):
        return "budget"
    return "continue"


@pytest.mark.parametrize("scenario", list(FAITHFUL))
def test_faithful_restore_from_every_checkpoint(backend: Backend, scenario: str) -> None:
    run = run_chat(backend.store, "original", scenario)
    build = all_scenarios()[scenario]
    session = backend.store.open_session("original")
    continued = 0
    for checkpoint_id in run.ids:
        data = session.load(checkpoint_id)
        factory = (lambda: build().groupchat) if FAITHFUL[scenario] else None
        with warnings.catch_warnings():
            warnings.simplefilter("error", RestoreWarning)  # exact restores: no approximations
            result = CheckpointRestorer(agent_factory=factory).continue_from(
                checkpoint_id, store=backend.store
            )
        where = f"{scenario} from {checkpoint_id}"
        expected = _expectation(data, run)
        if expected == "continue":
            assert result.ok, f"{where}: {result.reason}"
            assert result.chat_result is not None
            assert result.chat_result.chat_history == run.messages, where
            assert result.new_messages == run.messages[len(data.messages) :], where
            continued += 1
        else:
            assert not result.ok and expected in result.reason, f"{where}: {result.reason}"
    assert continued >= len(run.messages) - 1
    assert len(backend.store.list_sessions()) == 1 + len(run.ids)  # one continuation session each


# -- processes ----------------------------------------------------------------------------------------------

_CHILD = """
import os, sys
sys.path.insert(0, {tests!r})
from test_conformance import SyntheticChat
from checkpoint_system.storage import open_store
urls, session_id, count = {urls!r}, {session!r}, {count!r}
sessions = [open_store(url).open_session(session_id) for url in urls]
chat = SyntheticChat(session_id)
for step in range(count):
    chat.say(step)
    for session in sessions:
        session.save(chat.checkpoint(step), trusted_prefix=True)
print("written", flush=True)
os._exit(0)  # no close(): the writer locks must be released by the process's death
"""


def test_concurrent_writer_processes(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Processes write different sessions of every backend at once, exit without closing, and each
    session is complete, readable by others and writable again (no stale lock)."""
    names = [n for n in BACKENDS if n != "postgres" or os.environ.get(SKIP_ENV) != "1"]
    backends = [_make_backend(name, tmp_path / name, request) for name in names]
    for made in backends:
        made.tmp.mkdir(exist_ok=True)
    urls = [made.url for made in backends]
    count = 8
    sessions = [f"process_{i}" for i in range(2)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CHILD.format(tests=str(REPO_ROOT / "tests"), urls=urls, session=s, count=count),
            ],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in sessions
    ]
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0 and "written" in out, err[-3000:]
    for made in backends:
        store = made.reopen()
        assert store.list_sessions() == sessions, made.name
        for session_id in sessions:
            expected = SyntheticChat(session_id)
            for step in range(count):
                expected.say(step)
            session = store.open_session(session_id)
            ids = session.list_checkpoints()
            assert len(ids) == count, made.name
            same(session.load(ids[-1]), expected.checkpoint(count - 1))
            deadline = time.monotonic() + 15  # the server may take a moment to notice a dead client
            while True:
                try:
                    fill(session, 1, start=count, chat=expected)
                    break
                except SessionLockedError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            session.close()


def test_postgres_missing_driver_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg the PostgreSQL store says what to install."""
    from checkpoint_system.storage import postgres

    monkeypatch.setattr(postgres, "psycopg", None)
    with pytest.raises(ImportError, match=r"checkpoint-system\[postgres\]") as info:
        open_store("postgresql://nobody@/db")
    assert isinstance(info.value, CheckpointError)


def test_store_urls_never_contain_a_password() -> None:
    from checkpoint_system.storage.postgres import public_url

    assert (
        public_url("postgresql://alice:s3cret@db.example:5432/cp") == "postgresql://alice@db.example:5432/cp"
    )
    assert public_url("postgresql:///cp?host=/run/pg&password=s3cret&port=5433") == (
        "postgresql:///cp?host=/run/pg&port=5433"
    )
    assert public_url("postgresql://bob@/cp?host=/tmp/sock") == "postgresql://bob@/cp?host=/tmp/sock"


def test_file_store_urls_and_json_documents_stay_files(tmp_path: Path) -> None:
    """The file backend is unchanged on disk: documents are indented JSON files next to checkpoints/."""
    store = FileStore(tmp_path)
    session = store.open_session("s")
    fill(session, 1)
    session.write_document("session_metadata.json", {"a": 1})
    session.close()
    assert json.loads((tmp_path / "s" / "session_metadata.json").read_text()) == {"a": 1}
    assert (tmp_path / "s" / "checkpoints" / LOG_FILE).is_file()
    assert os.path.basename(session.locate(session.list_checkpoints()[0])).startswith("checkpoint_0_")
