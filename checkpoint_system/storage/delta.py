"""Delta encoding of a session's successive checkpoints into one append-only record log.

A checkpoint is stored as a small *record* (ids, counters, settings) plus a prefix of the session's *log*.
Replaying the log prefix rebuilds the group chat messages and every per-peer history at that checkpoint, so
each checkpoint stays individually loadable while the bytes written per message stay flat:

* long strings (message contents) are written once and referenced by number (``{"$s": n}``);
* agent configurations are written once per distinct value and referenced by number;
* histories and the message list are written as appends; an edit or a clear is a truncation followed by
  appends, so any change (not only growth) is representable.

Log record kinds, one JSON object per line::

    {"s": n, "v": "text"}          string n
    {"c": n, "v": {...}}           agent configuration n
    {"m": msg}                     group chat message appended
    {"mt": k}                      group chat messages truncated to k
    {"hd": h, "a": agent, "p": peer}   history h is agent's history with peer
    {"h": h, "m": msg}             message appended to history h
    {"ht": h, "n": k}              history h truncated to k

This module knows nothing of AG2 and nothing of files: it turns models into bytes and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import CorruptCheckpointError, InvalidCheckpointError
from ..jsonable import to_jsonable
from ..model import AgentState, CheckpointData, GroupChatState, ManagerState

#: Strings at least this long are stored once and referenced; shorter ones are cheaper inline.
INTERN_MIN_LENGTH = 48

#: Fields of an agent state that change as the chat runs; the rest is the (deduplicated) configuration.
DYNAMIC_AGENT_FIELDS = frozenset(
    {
        "oai_messages",
        "consecutive_auto_reply_counter",
        "max_consecutive_auto_reply_dict",
        "reply_at_receive",
        "step_counter",
        "current_speaker",
        "silent",
    }
)

_STRING_REF = "$s"
_LITERAL = "$lit"
_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; values orjson cannot serialise natively are converted by ``to_jsonable``."""
    return orjson.dumps(value, default=_fallback, option=_DUMPS_OPTIONS)


def _fallback(value: Any) -> Any:
    converted = to_jsonable(value)
    if converted is value:  # pragma: no cover - to_jsonable always returns JSON-native values
        raise TypeError(type(value).__name__)
    return converted


@dataclass
class _Track:
    """What the log holds for one list (the message list or one history): references to its items."""

    refs: list[Any] = field(default_factory=list)


@dataclass
class EncodedCheckpoint:
    """The output of ``DeltaEncoder.encode``: log bytes to append, and the checkpoint record."""

    log_bytes: bytes
    record: dict[str, Any]
    _strings: dict[str, int]
    _configs: dict[bytes, int]
    _tracks: list[tuple[_Track, int, list[Any]]]
    _new_histories: dict[tuple[str, str], tuple[int, _Track]]


class DeltaEncoder:
    """Turns successive ``CheckpointData`` of one session into log appends and small records.

    ``encode`` is side-effect free; ``commit`` adopts its result once the bytes are safely written, so a
    failed write leaves the encoder consistent with what is on storage.
    """

    def __init__(self) -> None:
        self._strings: dict[str, int] = {}
        self._configs: dict[bytes, int] = {}
        self._messages = _Track()
        self._histories: dict[tuple[str, str], tuple[int, _Track]] = {}

    # -- public API ---------------------------------------------------------------------------------
    def encode(self, data: CheckpointData, *, trusted_prefix: bool = False) -> EncodedCheckpoint:
        """Log lines and record for ``data``.

        With ``trusted_prefix`` the caller promises that lists only grew since the last checkpoint unless
        their length or last item changed (true for a live AG2 chat); the check is then O(1) per list.
        Otherwise already-logged items are compared in full.
        """
        job = _EncodeJob(self, trusted_prefix)
        messages_count = job.sync_list(self._messages, data.messages, None)
        record: dict[str, Any] = {
            "checkpoint_id": data.checkpoint_id,
            "timestamp": data.timestamp,
            "step_number": data.step_number,
            "context": data.context,
            "parent_checkpoint_id": data.parent_checkpoint_id,
            "session_id": data.session_id,
            "ag2_version": data.ag2_version,
            "library_version": data.library_version,
            "messages": {"count": messages_count},
            "agents": {name: job.agent_entry(state) for name, state in data.agent_states.items()},
            "manager": job.agent_entry(data.manager_state) if data.manager_state is not None else None,
            "groupchat": to_jsonable(_fields(data.groupchat_state)) if data.groupchat_state else None,
            "metadata": to_jsonable(data.metadata),
        }
        return EncodedCheckpoint(
            log_bytes=b"".join(job.lines),
            record=record,
            _strings=job.new_strings,
            _configs=job.new_configs,
            _tracks=job.track_updates,
            _new_histories=job.new_histories,
        )

    def commit(self, encoded: EncodedCheckpoint) -> None:
        """Adopt an encoding whose log bytes were written."""
        self._strings.update(encoded._strings)
        self._configs.update(encoded._configs)
        self._histories.update(encoded._new_histories)
        for track, keep, tail in encoded._tracks:
            del track.refs[keep:]
            track.refs.extend(tail)

    def load_state(self, replay: LogReplay) -> None:
        """Continue an existing log: adopt everything it holds (items are compared in full next time)."""
        self._strings = {text: index for index, text in enumerate(replay.strings)}
        self._configs = {dumps_sorted(value): index for index, value in replay.configs.items()}
        self._messages = _Track(list(replay.messages))
        self._histories = {
            replay.history_keys[hid]: (hid, _Track(list(items))) for hid, items in replay.histories.items()
        }

    # -- helpers used by _EncodeJob ----------------------------------------------------------------------
    @property
    def string_count(self) -> int:
        return len(self._strings)


def dumps_sorted(value: Any) -> bytes:
    """Canonical JSON (sorted keys), used for content addressing and integrity hashes."""
    return orjson.dumps(value, default=_fallback, option=_DUMPS_OPTIONS | orjson.OPT_SORT_KEYS)


def _fields(model: Any) -> dict[str, Any]:
    """A model's field values (declared and extra) without re-validating or deep-copying them."""
    values = dict(vars(model))
    extra = getattr(model, "__pydantic_extra__", None)
    if extra:
        values.update(extra)
    return values


class _EncodeJob:
    """One ``encode`` call: collects new log lines and pending state changes."""

    def __init__(self, encoder: DeltaEncoder, trusted_prefix: bool) -> None:
        self.encoder = encoder
        self.trusted = trusted_prefix
        self.lines: list[bytes] = []
        self.new_strings: dict[str, int] = {}
        self.new_configs: dict[bytes, int] = {}
        self.track_updates: list[tuple[_Track, int, list[Any]]] = []
        self.new_histories: dict[tuple[str, str], tuple[int, _Track]] = {}

    def _emit(self, record: dict[str, Any]) -> None:
        self.lines.append(dumps(record) + b"\n")

    def value(self, value: Any) -> Any:
        """Encode one JSON value, interning long strings."""
        kind = type(value)
        if kind is str:
            if len(value) < INTERN_MIN_LENGTH:
                return value
            index = self.encoder._strings.get(value)
            if index is None:
                index = self.new_strings.get(value)
                if index is None:
                    index = len(self.encoder._strings) + len(self.new_strings)
                    self.new_strings[value] = index
                    self._emit({"s": index, "v": value})
            return {_STRING_REF: index}
        if kind is dict:
            encoded = {str(k): self.value(v) for k, v in value.items()}
            return {_LITERAL: encoded} if (_STRING_REF in value or _LITERAL in value) else encoded
        if kind is list or kind is tuple:
            return [self.value(v) for v in value]
        if value is None or kind is int or kind is float or kind is bool:
            return value
        converted = to_jsonable(value)
        return self.value(converted) if type(converted) is not type(value) else converted

    def sync_list(self, track: _Track, items: list[Any], history: int | None) -> int:
        """Emit what makes the logged list equal to ``items``; returns ``len(items)``."""
        logged = track.refs
        n_logged, n_new = len(logged), len(items)
        if n_new >= n_logged and (
            n_logged == 0
            or (self.trusted and items[n_logged - 1] is logged[-1])
            or (items[n_logged - 1] == logged[-1] and items[:n_logged] == logged)
        ):
            keep = n_logged
        else:
            keep = 0
            limit = min(n_logged, n_new)
            while keep < limit and items[keep] == logged[keep]:
                keep += 1
            if history is None:
                self._emit({"mt": keep})
            else:
                self._emit({"ht": history, "n": keep})
        for item in items[keep:]:
            if not isinstance(item, dict):
                raise InvalidCheckpointError(f"a message must be a JSON object, got {type(item).__name__}")
            if history is None:
                self._emit({"m": self.value(item)})
            else:
                self._emit({"h": history, "m": self.value(item)})
        if keep != n_logged or n_new != n_logged:
            self.track_updates.append((track, keep, items[keep:]))
        elif not self.trusted:
            self.track_updates.append((track, 0, list(items)))  # adopt the caller's objects for O(1) checks
        return n_new

    def config_id(self, static: dict[str, Any]) -> int:
        key = dumps_sorted(static)
        index = self.encoder._configs.get(key)
        if index is None:
            index = self.new_configs.get(key)
            if index is None:
                index = len(self.encoder._configs) + len(self.new_configs)
                self.new_configs[key] = index
                self.lines.append(b'{"c":' + str(index).encode() + b',"v":' + key + b"}\n")
        return index

    def history(self, agent: str, peer: str) -> tuple[int, _Track]:
        key = (agent, peer)
        known = self.encoder._histories.get(key) or self.new_histories.get(key)
        if known is None:
            hid = len(self.encoder._histories) + len(self.new_histories)
            known = (hid, _Track())
            self.new_histories[key] = known
            self._emit({"hd": hid, "a": agent, "p": peer})
        return known

    def agent_entry(self, state: AgentState) -> dict[str, Any]:
        values = _fields(state)
        static = {k: v for k, v in values.items() if k not in DYNAMIC_AGENT_FIELDS}
        entry: dict[str, Any] = {"config": self.config_id(to_jsonable(static))}
        histories: dict[str, list[int]] = {}
        for peer, items in (values.get("oai_messages") or {}).items():
            hid, track = self.history(state.name, peer)
            histories[peer] = [hid, self.sync_list(track, items, hid)]
        entry["histories"] = histories
        for name in DYNAMIC_AGENT_FIELDS - {"oai_messages"}:
            if name in values:
                entry[name] = to_jsonable(values[name])
        return entry


# -- decoding -------------------------------------------------------------------------------------------


class LogReplay:
    """State rebuilt from a log prefix: strings, configurations, messages and histories."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.configs: dict[int, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.histories: dict[int, list[dict[str, Any]]] = {}
        self.history_keys: dict[int, tuple[str, str]] = {}

    def apply_bytes(self, data: bytes, *, path: str | None = None) -> None:
        """Replay complete log lines (``data`` must end with a newline or be empty)."""
        if not data:
            return
        if not data.endswith(b"\n"):
            raise CorruptCheckpointError("session log ends inside a record (truncated write)", path=path)
        try:
            records = orjson.loads(b"[" + data[:-1].replace(b"\n", b",") + b"]")
        except orjson.JSONDecodeError as exc:
            raise CorruptCheckpointError(f"session log is not valid JSON: {exc}", path=path) from exc
        try:
            for record in records:
                self._apply(record)
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
            raise CorruptCheckpointError(f"session log has a malformed record: {exc!r}", path=path) from exc

    def _apply(self, record: dict[str, Any]) -> None:
        if "h" in record:
            self.histories[record["h"]].append(self._message(record["m"]))
        elif "m" in record:
            self.messages.append(self._message(record["m"]))
        elif "s" in record:
            if record["s"] != len(self.strings) or type(record["v"]) is not str:
                raise ValueError(f"string record {record['s']} out of sequence")
            self.strings.append(record["v"])
        elif "c" in record:
            self.configs[int(record["c"])] = record["v"]
        elif "hd" in record:
            hid = int(record["hd"])
            self.histories[hid] = []
            self.history_keys[hid] = (str(record["a"]), str(record["p"]))
        elif "ht" in record:
            del self.histories[record["ht"]][int(record["n"]) :]
        elif "mt" in record:
            del self.messages[int(record["mt"]) :]
        else:
            raise ValueError(f"unknown record {sorted(record)}")

    def _message(self, encoded: Any) -> dict[str, Any]:
        message = self.decode(encoded)
        if type(message) is not dict:
            raise TypeError("message record is not an object")
        return message

    def decode(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            if len(value) == 1:
                if _STRING_REF in value:
                    return self.strings[value[_STRING_REF]]
                if _LITERAL in value:
                    return {k: self.decode(v) for k, v in value[_LITERAL].items()}
            return {k: self.decode(v) for k, v in value.items()}
        if kind is list:
            return [self.decode(v) for v in value]
        return value

    def history(self, hid: int, length: int, *, path: str | None) -> list[dict[str, Any]]:
        items = self.histories.get(hid)
        if items is None or len(items) != length:
            raise CorruptCheckpointError(
                f"history {hid} has {None if items is None else len(items)} messages in the log, "
                f"the checkpoint expects {length}",
                path=path,
            )
        return list(items)


def _agent_from_entry(
    entry: dict[str, Any], replay: LogReplay, model: type[AgentState], path: str | None
) -> AgentState:
    config = replay.configs.get(entry["config"])
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f"agent configuration {entry['config']} missing from the log", path=path)
    dynamic = {k: v for k, v in entry.items() if k in DYNAMIC_AGENT_FIELDS}
    state = model.model_validate({**config, **dynamic})
    state.oai_messages = {
        peer: replay.history(int(ref[0]), int(ref[1]), path=path) for peer, ref in entry["histories"].items()
    }
    return state


def checkpoint_from_record(
    record: dict[str, Any], replay: LogReplay, *, path: str | None = None
) -> CheckpointData:
    """Assemble the logical checkpoint from its record and the replayed log prefix."""
    count = int(record["messages"]["count"])
    if len(replay.messages) != count:
        raise CorruptCheckpointError(
            f"the log holds {len(replay.messages)} group chat messages, the checkpoint expects {count}",
            path=path,
        )
    manager = record.get("manager")
    data = CheckpointData.model_validate(
        {
            key: record.get(key)
            for key in (
                "format_version",
                "checkpoint_id",
                "timestamp",
                "step_number",
                "context",
                "parent_checkpoint_id",
                "session_id",
                "ag2_version",
                "library_version",
                "integrity",
            )
        }
        | {
            "metadata": record.get("metadata") or {},
            "groupchat_state": record.get("groupchat"),
        }
    )
    data.messages = list(replay.messages)
    data.agent_states = {
        name: _agent_from_entry(entry, replay, AgentState, path) for name, entry in record["agents"].items()
    }
    data.manager_state = (
        _agent_from_entry(manager, replay, ManagerState, path) if manager is not None else None  # type: ignore[assignment]
    )
    if data.groupchat_state is not None and not isinstance(data.groupchat_state, GroupChatState):
        raise InvalidCheckpointError("groupchat state is malformed", path=path)
    return data
