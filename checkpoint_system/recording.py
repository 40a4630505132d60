"""Record every LLM call of a session as JSON, and replay it along the checkpoint lineage.

``RecordingModelClient`` is an AG2 custom model client (``model_client_cls``). Register it on an agent::

    agent = ConversableAgent("solver", llm_config=recording_llm_config("gpt-4o-mini"), ...)
    use_recording(agent, inner=live_client(entry))   # registers RecordingModelClient on the agent

Each call is answered in this order:

1. **Replay.** If the same request was recorded in this session directory or in one of its ancestors (a
   continuation lives in ``<session>/continuation_.../`` and ``continuation_metadata.json`` names its parent
   checkpoint, so a continuation of a continuation sees its parent's and its grandparent's recordings), the
   recorded response is returned as recorded: offline, no cost, bit for bit.
2. **Live.** Otherwise the ``inner`` client answers (an ``autogen.OpenAIWrapper`` built from a live config,
   any AG2 ``ModelClient`` such as the deterministic demo model) and the call is appended to *this*
   directory's recording, never to an ancestor's.
3. **Stop.** Without an ``inner`` client a request that is not recorded raises ``RecordingDivergedError``,
   which names the agent, the group-chat step and the first message where the request differs from the
   closest recorded request of that agent (typically the message an intervention edited).

**Which session.** ``use_recording`` also registers a reply hook that, before each reply, notes the session
directory of the ``CheckpointingGroupChatManager`` the agent answers (unless a fixed ``directory`` was given),
the group-chat step and the latest checkpoint: the same agent-building code records into a new session and,
when a restorer rebuilds the agents for a continuation, into that continuation's directory.

**The recording.** ``<session>/llm_recording.jsonl``, one JSON object per line, appended with a single
``write`` per record (and ``fsync`` with ``durability="fsync"``): a killed process leaves at most a torn last
line, which readers skip and the next writer cuts. Each record holds ``key``, ``agent``, ``step``,
``checkpoint`` (the latest checkpoint when the call was made), ``source`` (which inner client answered),
``recorded_at``, the canonical ``request`` and the ``response`` (``id``, ``model``, ``choices`` with
``message.role/content/tool_calls/function_call`` and ``finish_reason``, ``usage``, ``cost``). No pickle, no
diskcache: a recording is data, and loading it never runs code.

Each record holds its whole request, so a recording grows with the square of a conversation's length (like
the requests themselves); for long live runs that is still small next to what the calls cost.

**The key** is the sha256 of the canonical JSON (sorted keys, ``None`` values dropped, since an absent field
and a ``null`` mean the same to the API) of these request fields, when present: ``messages`` (or
``prompt``), ``model``, ``tools``, ``functions``, ``tool_choice``, ``function_call``, ``response_format``
(a pydantic class by its JSON schema), and the sampling parameters ``temperature``, ``top_p``, ``max_tokens``,
``max_completion_tokens``, ``n``, ``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty``,
``logit_bias``, ``logprobs``, ``top_logprobs``, ``parallel_tool_calls``, ``reasoning_effort``. Everything
else (``api_key``, headers, ``base_url``, ``timeout``, ``model_client_cls``, ``stream``, tags, caching) is
neither part of the key nor stored: only these fields are written, so no secret reaches a recording (and any
value of a secret-looking environment variable or of the client's own credentials found in a record is
replaced by ``[REDACTED]`` before it is written). If the same request was recorded several times, the n-th
identical request of a run gets the n-th recorded answer (the nearest directory first), then the last one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .errors import CheckpointError, CorruptCheckpointError
from .storage.files import session_dir_of

if TYPE_CHECKING:
    from autogen import ConversableAgent

__all__ = [
    "CLIENT_CLASS_NAME",
    "KEY_FIELDS",
    "RECORDING_FILE",
    "CallSite",
    "CorruptRecordingError",
    "RecordingDivergedError",
    "RecordingError",
    "RecordingModelClient",
    "RecordingStore",
    "RecordingUnboundError",
    "lineage_directories",
    "live_client",
    "recording_llm_config",
    "request_key",
    "use_recording",
]

RECORDING_FILE = "llm_recording.jsonl"
CLIENT_CLASS_NAME = "RecordingModelClient"
RECORD_FORMAT = "checkpoint_system.llm_recording/1"

#: The request fields that identify a call (and the only request fields written to a recording).
KEY_FIELDS: tuple[str, ...] = (
    "messages",
    "prompt",
    "model",
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "response_format",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "parallel_tool_calls",
    "reasoning_effort",
)

_SECRET_ENV = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|CREDENTIALS?)(_|$)", re.IGNORECASE)
_SECRET_FIELDS = ("api_key", "azure_ad_token", "_azure_ad_token", "aws_secret_key", "aws_session_token")
_CONTINUATION_METADATA = "continuation_metadata.json"

Mode = Literal["replay", "record"]
Durability = Literal["flush", "fsync"]


# -- errors -----------------------------------------------------------------------------------------------
class RecordingError(CheckpointError):
    """Base class of recording and replay failures."""


class RecordingDivergedError(RecordingError):
    """A request is not in the recording and no live model is configured to answer it."""

    def __init__(
        self,
        message: str,
        *,
        agent: str,
        step: int | None,
        checkpoint_id: str | None = None,
        first_difference: int | None = None,
        path: str | Path | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.agent = agent
        self.step = step
        self.checkpoint_id = checkpoint_id
        self.first_difference = first_difference


class RecordingUnboundError(RecordingError):
    """The client does not know which session directory to record into."""


class CorruptRecordingError(RecordingError, CorruptCheckpointError):
    """A recording file holds a line that is not a valid record (other than a torn last line)."""


# -- canonical requests and responses -----------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (pydantic models dumped, namespaces expanded, ``None`` kept)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return {"$json_schema": _plain(value.model_json_schema())}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _plain(dump(mode="json"))
    if isinstance(value, SimpleNamespace):
        return _plain(vars(value))
    return str(value)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def canonical_request(params: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``params`` that identify a call (``KEY_FIELDS``), JSON-ready, ``None`` values dropped."""
    request = {name: _plain(params[name]) for name in KEY_FIELDS if params.get(name) is not None}
    result = _drop_none(request)
    assert isinstance(result, dict)
    return result


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_key(params: Mapping[str, Any]) -> str:
    """The sha256 of the canonical request: the key a recorded call is replayed by."""
    return hashlib.sha256(_canonical_json(canonical_request(params)).encode("utf-8")).hexdigest()


def _message_digest(message: Any) -> str:
    return hashlib.sha256(_canonical_json(message).encode("utf-8")).hexdigest()


def response_to_record(response: Any) -> dict[str, Any]:
    """A model response (OpenAI ``ChatCompletion``, namespace, ...) as a JSON object."""
    choices = []
    for index, choice in enumerate(getattr(response, "choices", None) or []):
        message = getattr(choice, "message", None)
        choices.append(
            {
                "index": index,
                "finish_reason": _plain(getattr(choice, "finish_reason", None)),
                "message": {
                    "role": str(getattr(message, "role", None) or "assistant"),
                    "content": _plain(getattr(message, "content", None)),
                    "tool_calls": _plain(getattr(message, "tool_calls", None)) or None,
                    "function_call": _plain(getattr(message, "function_call", None)),
                },
            }
        )
    cost = getattr(response, "cost", None)
    return {
        "id": str(getattr(response, "id", None) or ""),
        "model": str(getattr(response, "model", None) or ""),
        "choices": choices,
        "usage": _plain(getattr(response, "usage", None)),
        "cost": float(cost) if isinstance(cost, (int, float)) else 0.0,
    }


def response_from_record(record: Mapping[str, Any], *, replayed: bool) -> SimpleNamespace:
    """The response object AG2 gets: ``choices[i].message.content/tool_calls``, ``model``, ``id``."""
    choices = []
    for choice in record.get("choices") or []:
        message = copy.deepcopy(dict(choice.get("message") or {}))
        choices.append(
            SimpleNamespace(
                index=choice.get("index", 0),
                finish_reason=choice.get("finish_reason"),
                message=SimpleNamespace(
                    role=message.get("role", "assistant"),
                    content=message.get("content"),
                    tool_calls=message.get("tool_calls") or None,
                    function_call=message.get("function_call"),
                ),
            )
        )
    usage = record.get("usage")
    return SimpleNamespace(
        id=record.get("id", ""),
        model=record.get("model", ""),
        choices=choices,
        usage=SimpleNamespace(**usage) if isinstance(usage, dict) else None,
        cost=0.0 if replayed else float(record.get("cost") or 0.0),
        replayed=replayed,
        message_retrieval_function=None,
    )


# -- where recordings live ----------------------------------------------------------------------------------
def _parent_session(directory: Path) -> Path | None:
    """The session a continuation directory was continued from, or None for a root session."""
    metadata = directory / _CONTINUATION_METADATA
    if metadata.is_file():
        try:
            data = json.loads(metadata.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        relative = data.get("parent_checkpoint_path") if isinstance(data, dict) else None
        if isinstance(relative, str) and relative:
            return session_dir_of(os.path.normpath(directory / relative))
    if directory.name.startswith("continuation_"):
        return directory.parent
    return None


def lineage_directories(directory: str | Path) -> list[Path]:
    """``directory`` and the sessions it descends from, nearest first (at most 1000 levels)."""
    current = Path(directory)
    chain = [current]
    seen = {os.path.normcase(os.path.abspath(current))}
    for _ in range(1000):
        parent = _parent_session(current)
        if parent is None:
            break
        marker = os.path.normcase(os.path.abspath(parent))
        if marker in seen:
            break
        seen.add(marker)
        chain.append(parent)
        current = parent
    return chain


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of one recording file; a torn last line (a killed writer) is skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RecordingError(f"cannot read the recording: {exc}", path=path) from exc
    records: list[dict[str, Any]] = []
    lines = raw.split(b"\n")
    complete = raw.endswith(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines) and not complete
        try:
            record = json.loads(line)
        except ValueError as exc:
            if last:
                break
            raise CorruptRecordingError(f"line {number} is not valid JSON ({exc})", path=path) from exc
        if not isinstance(record, dict) or not isinstance(record.get("key"), str) or "response" not in record:
            if last:
                break
            raise CorruptRecordingError(f"line {number} is not a recorded LLM call", path=path)
        records.append(record)
    return records


class RecordingStore:
    """The recordings visible from one session directory: its own file (appended) and its ancestors'.

    Use ``RecordingStore.for_directory`` to share one store per directory within a process.
    """

    _stores: weakref.WeakValueDictionary[str, RecordingStore] = weakref.WeakValueDictionary()
    _stores_lock = threading.Lock()

    def __init__(self, directory: str | Path, *, durability: Durability = "flush") -> None:
        self.directory = Path(directory)
        self.path = self.directory / RECORDING_FILE
        self.durability: Durability = durability
        self._lock = threading.RLock()
        self._index: dict[str, list[dict[str, Any]]] | None = None
        self._by_agent: dict[str, list[dict[str, Any]]] = {}
        self._sources: dict[int, Path] = {}
        self._uses: dict[str, int] = {}
        self._repaired = False

    @classmethod
    def for_directory(cls, directory: str | Path, *, durability: Durability = "flush") -> RecordingStore:
        """The process-wide store of ``directory``."""
        marker = os.path.normcase(os.path.abspath(directory))
        with cls._stores_lock:
            store = cls._stores.get(marker)
            if store is None:
                store = cls._stores[marker] = cls(directory, durability=durability)
            return store

    # -- reading ------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, list[dict[str, Any]]]:
        if self._index is None:
            index: dict[str, list[dict[str, Any]]] = {}
            for directory in lineage_directories(self.directory):
                file = directory / RECORDING_FILE
                for record in _read_records(file):
                    self._add(index, record, file)
            self._index = index
        return self._index

    def _add(self, index: dict[str, list[dict[str, Any]]], record: dict[str, Any], source: Path) -> None:
        index.setdefault(record["key"], []).append(record)
        self._by_agent.setdefault(str(record.get("agent")), []).append(record)
        self._sources[id(record)] = source

    def records(self) -> list[dict[str, Any]]:
        """Every record visible from this directory (own first, then the nearest ancestor's, ...)."""
        with self._lock:
            index = self._load()
            seen: dict[int, dict[str, Any]] = {}
            for records in index.values():
                for record in records:
                    seen[id(record)] = record
            return list(seen.values())

    def lookup(self, key: str) -> tuple[dict[str, Any], Path] | None:
        """The recorded call for ``key`` (the n-th for the n-th use in this process), and its file."""
        with self._lock:
            candidates = self._load().get(key)
            if not candidates:
                return None
            use = self._uses.get(key, 0)
            self._uses[key] = use + 1
            record = candidates[min(use, len(candidates) - 1)]
            return record, self._sources[id(record)]

    def closest(self, agent: str, messages: list[Any]) -> tuple[int, dict[str, Any] | None]:
        """The longest prefix of ``messages`` shared with a recorded request of ``agent``, and that record."""
        digests = [_message_digest(m) for m in messages]
        best, best_record = 0, None
        with self._lock:
            self._load()
            for record in self._by_agent.get(agent, []):
                recorded = (record.get("request") or {}).get("messages") or []
                shared = 0
                for mine, theirs in zip(digests, recorded, strict=False):
                    if mine != _message_digest(theirs):
                        break
                    shared += 1
                if shared > best or best_record is None:
                    best, best_record = shared, record
        return best, best_record

    # -- writing ------------------------------------------------------------------------------------------
    def append(self, record: dict[str, Any], *, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
        """Append one record as one line (one ``write``), scrubbing any known secret value first.

        Returns the record as stored (what a later replay reads).
        """
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
            line = line.replace(json.dumps(secret)[1:-1], "[REDACTED]")
        stored: dict[str, Any] = json.loads(line)
        data = (line + "\n").encode("utf-8")
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not self._repaired:
                self._cut_torn_tail()
                self._repaired = True
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.durability == "fsync":
                    os.fsync(fd)
            finally:
                os.close(fd)
            if self._index is not None:
                self._add(self._index, stored, self.path)
        return stored

    def _cut_torn_tail(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with open(self.path, "rb+") as handle:
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            content = handle.read()
            handle.truncate(content.rfind(b"\n") + 1)


# -- the model client ---------------------------------------------------------------------------------------
@dataclass
class CallSite:
    """Who is calling and where: filled in by ``use_recording``'s reply hook before each reply."""

    agent_name: str | None = None
    directory: Path | None = None
    fixed_directory: bool = False
    step: int | None = None
    checkpoint_id: str | None = None
    clients: list[RecordingModelClient] = field(default_factory=list)


class _Inner(Protocol):
    def create(self, *args: Any, **kwargs: Any) -> Any: ...


def _secret_values(config: Any, *, environ: bool = True) -> tuple[str, ...]:
    """Secret-looking environment values (``environ``) and the credentials named in ``config``."""
    values: list[str] = []
    if environ:
        values += [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]
    for name in _SECRET_FIELDS:
        value = _config_get(config, name)
        reveal = getattr(value, "get_secret_value", None)
        value = reveal() if callable(reveal) else value
        if isinstance(value, str) and len(value) >= 4:
            values.append(value)
    return tuple(values)


def _inner_secrets(inner: Any) -> tuple[str, ...]:
    """Credentials held by an inner client: its config, or an ``OpenAIWrapper``'s clients and configs."""
    if inner is None:
        return ()
    sources: list[Any] = [getattr(inner, "config", None)]
    for entry in getattr(inner, "_config_list", None) or []:
        sources.append(entry)
    for client in getattr(inner, "_clients", None) or []:
        sources.append(getattr(client, "config", None))
        sources.append(getattr(client, "_oai_client", None))
    found: list[str] = []
    for source in sources:
        if source is not None:
            found.extend(_secret_values(source, environ=False))
    return tuple(found)


def _config_get(config: Any, name: str) -> Any:
    """A field of a config entry: a dict, or an object such as AG2 0.10's pydantic entry (never a call)."""
    if isinstance(config, Mapping):
        return config.get(name)
    try:
        return getattr(config, name, None)
    except Exception:  # a property that raises: treat as absent
        return None


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


class RecordingModelClient:
    """An AG2 ``ModelClient`` that replays recorded answers and records new ones (see the module docs).

    Args:
        config: the ``config_list`` entry (AG2 passes it).
        inner: the client that answers requests that are not recorded: an ``autogen.OpenAIWrapper``
            (called with ``create(**request)``), or any AG2 ``ModelClient`` (called with ``create(params)``).
            ``None``: replay only, and a request that is not recorded raises ``RecordingDivergedError``.
        directory: the session directory to record into. Without it the client records into the session of
            the ``CheckpointingGroupChatManager`` the agent is replying to (see ``use_recording``).
        mode: ``"replay"`` (default) replays what is recorded and calls ``inner`` for the rest; ``"record"``
            always calls ``inner`` and records.
        agent_name: the agent's name for records and messages (``use_recording`` sets it).
        call_site: shared with ``use_recording``'s reply hook.
        durability: ``"flush"`` (default: each record is written with one ``write``) or ``"fsync"``.
        secrets: more values to keep out of the recording (besides secret-looking environment variables,
            the entry's ``api_key`` and the credentials the inner client holds).
    """

    def __init__(
        self,
        config: Any,
        *,
        inner: _Inner | None = None,
        directory: str | Path | None = None,
        mode: Mode = "replay",
        agent_name: str | None = None,
        call_site: CallSite | None = None,
        durability: Durability = "flush",
        secrets: tuple[str, ...] = (),
        **_: Any,
    ) -> None:
        if mode not in ("replay", "record"):
            raise ValueError(f"mode must be 'replay' or 'record', not {mode!r}")
        self.config = config
        self.model = str(_config_get(config, "model") or "")
        self.inner = inner
        self.mode: Mode = mode
        self.durability: Durability = durability
        self.site = call_site if call_site is not None else CallSite()
        if agent_name:
            self.site.agent_name = agent_name
        if directory is not None:
            self.site.directory, self.site.fixed_directory = Path(directory), True
        self.site.clients.append(self)
        self._store: RecordingStore | None = None
        self.replayed = 0
        self.recorded = 0
        self._secrets = _secret_values(config) + _inner_secrets(inner) + tuple(secrets)

    # -- the ModelClient protocol -------------------------------------------------------------------------
    def create(self, params: dict[str, Any]) -> Any:
        store = self.store()
        key = request_key(params)
        if self.mode == "replay":
            hit = store.lookup(key)
            if hit is not None:
                self.replayed += 1
                return response_from_record(hit[0]["response"], replayed=True)
        if self.inner is None:
            raise self._diverged(store, params)
        response = self._call_inner(params)
        record: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "key": key,
            "agent": self.agent_name,
            "step": self.site.step,
            "checkpoint": self.site.checkpoint_id,
            "source": type(self.inner).__name__,
            "recorded_at": _utc_now(),
            "request": canonical_request(params),
            "response": response_to_record(response),
        }
        stored = store.append(record, secrets=self._secrets)
        self.recorded += 1
        # Return what a replay will return, so a recorded run and its replay are identical.
        return response_from_record(stored["response"], replayed=False)

    def message_retrieval(self, response: Any) -> list[Any]:
        retrieved: list[Any] = []
        for choice in response.choices:
            message = choice.message
            if message.tool_calls or message.function_call:
                item: dict[str, Any] = {"content": message.content, "role": "assistant"}
                if message.tool_calls:
                    item["tool_calls"] = copy.deepcopy(message.tool_calls)
                if message.function_call:
                    item["function_call"] = copy.deepcopy(message.function_call)
                retrieved.append(item)
            else:
                retrieved.append(message.content)
        return retrieved

    def cost(self, response: Any) -> float:
        return float(getattr(response, "cost", 0.0) or 0.0)

    @staticmethod
    def get_usage(response: Any) -> dict[str, Any]:
        usage = getattr(response, "usage", None)
        return {
            "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
            "total_tokens": getattr(usage, "total_tokens", 0) or 0,
            "cost": float(getattr(response, "cost", 0.0) or 0.0),
            "model": getattr(response, "model", ""),
        }

    # -- internals ----------------------------------------------------------------------------------------
    @property
    def agent_name(self) -> str:
        return self.site.agent_name or self.model or "?"

    def store(self) -> RecordingStore:
        """The recording store of the directory this call belongs to."""
        if self.site.directory is None:
            raise RecordingUnboundError(
                f"agent {self.agent_name!r}: RecordingModelClient does not know its session directory; pass "
                "directory=... or register it with use_recording() and run it under a "
                "CheckpointingGroupChatManager"
            )
        store = self._store
        if store is None or store.directory != self.site.directory:
            store = RecordingStore.for_directory(self.site.directory, durability=self.durability)
            self._store = store
        return store

    def _call_inner(self, params: dict[str, Any]) -> Any:
        assert self.inner is not None
        from autogen import OpenAIWrapper

        if isinstance(self.inner, OpenAIWrapper):
            # The request fields as the agent made them; the wrapper's own config names model/deployment.
            request = {k: params[k] for k in KEY_FIELDS if k != "model" and params.get(k) is not None}
            return self.inner.create(**request)
        forwarded = {k: v for k, v in params.items() if k != "model_client_cls"}
        forwarded.setdefault("agent_name", self.agent_name)
        return self.inner.create(forwarded)

    def _diverged(self, store: RecordingStore, params: dict[str, Any]) -> RecordingDivergedError:
        messages = list(canonical_request(params).get("messages") or [])
        shared, closest = store.closest(self.agent_name, messages)
        system = 0
        for message in messages:
            if not (isinstance(message, dict) and message.get("role") == "system"):
                break
            system += 1
        step = self.site.step
        where = f"agent {self.agent_name!r} at step {step if step is not None else '?'}"
        if self.site.checkpoint_id:
            where += f" (after checkpoint {self.site.checkpoint_id})"
        first_difference: int | None = None
        if closest is None:
            detail = f"nothing is recorded for this agent in {store.directory} or its parent sessions"
        else:
            recorded = list((closest.get("request") or {}).get("messages") or [])
            if shared < min(len(messages), len(recorded)) or len(messages) != len(recorded):
                first_difference = max(shared - system, 0)
                detail = (
                    f"conversation message {first_difference} of its request differs from the closest "
                    f"recorded request (recorded at step {closest.get('step')})"
                )
                if shared >= len(recorded):
                    detail = (
                        f"its request goes beyond the recording: conversation message {first_difference} "
                        f"was never sent to the model (the recording ends at step {closest.get('step')})"
                    )
            else:
                detail = "its messages match a recorded request but the model, tools or parameters differ"
        return RecordingDivergedError(
            f"the conversation diverged from the recording: {where}: {detail}. No live model is configured, "
            "so the run stops here; configure one (e.g. set OPENAI_API_KEY) to continue live after an "
            "intervention",
            agent=self.agent_name,
            step=step,
            checkpoint_id=self.site.checkpoint_id,
            first_difference=first_difference,
            path=store.directory,
        )


# -- wiring -------------------------------------------------------------------------------------------------
def recording_llm_config(model: str, **extra: Any) -> dict[str, Any]:
    """An ``llm_config`` whose single entry routes to ``RecordingModelClient`` (AG2 caching off).

    Keep secrets out of it: the live credentials belong to the ``inner`` client.
    """
    entry = {"model": model, "model_client_cls": CLIENT_CLASS_NAME, **extra}
    return {"config_list": [entry], "cache_seed": None}


def live_client(config_entry: Mapping[str, Any]) -> Any:
    """An ``autogen.OpenAIWrapper`` for one live config entry (OpenAI, Azure, ...), AG2 caching off."""
    from autogen import OpenAIWrapper

    return OpenAIWrapper(config_list=[dict(config_entry)], cache_seed=None)


def _note_call_site(site: CallSite, messages: Any, sender: Any) -> None:
    """Note the session directory, step and latest checkpoint of the chat ``sender`` manages."""
    checkpoints = getattr(sender, "checkpoint_manager", None)
    session_dir = getattr(checkpoints, "session_dir", None)
    if session_dir is not None and not site.fixed_directory:
        site.directory = Path(session_dir)
    site.checkpoint_id = getattr(checkpoints, "last_checkpoint_id", None)
    groupchat = getattr(sender, "groupchat", None)
    history = getattr(groupchat, "messages", None)
    site.step = len(history) if isinstance(history, list) else len(messages or [])


def use_recording(
    agent: ConversableAgent,
    *,
    inner: _Inner | None = None,
    directory: str | Path | None = None,
    mode: Mode = "replay",
    durability: Durability = "flush",
) -> RecordingModelClient:
    """Register ``RecordingModelClient`` on ``agent`` (its ``llm_config`` must name it) and return it.

    A reply hook notes, before each reply, the session directory of the ``CheckpointingGroupChatManager``
    the agent replies to (unless ``directory`` is given), the group-chat step and the latest checkpoint, so
    the same agents record into a session and, rebuilt for a continuation, into that continuation.
    """
    from autogen import Agent

    site = CallSite(agent_name=agent.name)
    agent.register_model_client(
        RecordingModelClient,  # type: ignore[arg-type]
        inner=inner,
        directory=directory,
        mode=mode,
        call_site=site,
        durability=durability,
    )

    def follow_session(
        recipient: Any, messages: Any = None, sender: Any = None, config: Any = None
    ) -> tuple[bool, None]:
        _note_call_site(site, messages, sender)
        return False, None

    agent.register_reply([Agent, None], follow_session, position=0)
    if not site.clients:
        raise RecordingError(
            f"agent {agent.name!r}: its llm_config has no entry with model_client_cls={CLIENT_CLASS_NAME!r}"
        )
    return site.clients[-1]


def iter_records(directory: str | Path) -> Iterator[dict[str, Any]]:
    """The records of one directory's own recording file (not its ancestors')."""
    yield from _read_records(Path(directory) / RECORDING_FILE)
