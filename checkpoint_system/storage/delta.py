"""Delta encoding of a session's successive checkpoints into one append-only record log.

A checkpoint is stored as a small *record* (ids, counters, settings) plus a prefix of the session's *log*.
Replaying the log prefix rebuilds the group chat messages and every per-peer history at that checkpoint, so
each checkpoint stays individually loadable while the bytes written per message stay flat:

* long strings (message contents) are written once and referenced by number (``{"$s": n}``);
* agent configurations are written once per distinct value and referenced by number;
* histories and the message list are written as appends; an edit or a clear is a truncation followed by
  appends, so any change (not only growth) is representable.

The log is JSON Lines: one object per line, whose first key names its kind. Histories are numbered ``h`` in
the order they are defined, group chat messages ``j`` from 0, configuration blobs ``n`` and copy patterns
``p`` likewise; an agent is named by its label, ``a:<name>`` for agents and ``m:<name>`` for the manager.

Per message (a 1,000-message log is mostly these)::

    {"message": msg, "changed": {label: {...}}, "pattern": p}
        a step line, the usual checkpoint: the group chat message appended, the counter fields that
        changed per agent label, and the histories' copies of the message, which follow copy pattern p
        (``changed`` is left out when no counter changed, ``pattern`` when no history got a copy)
    {"message": msg, "changed": {...}, "copies": [entry, ...], "pattern": p}
        the same, with copies no earlier step line had: they are spelled out and become pattern p (the
        next number). Each entry is one copy appended to histories h, ...: ``[[h, ...]]`` shares the
        message itself, ``[[h, ...], {replaced keys}]`` replaces keys such as ``role``/``name``,
        ``[[h, ...], {replaced keys} | null, [removed keys]]`` also removes some. A chat repeats a few
        patterns, about one per speaker, so most step lines name their pattern and nothing more
    {"message": msg}
        a group chat message on a line of its own: written when a checkpoint appends several, or when
        a line other than a configuration blob has to follow the message in the same checkpoint (a new
        history, an agent's full counters, a history that got more than the message, ...); its counter
        changes and copies then follow on ``changed`` and ``copy`` lines
    {"copy": [h, ...], "of": j, "replace": {...}, "remove": [...]}
        appended to histories h, ...: group chat message j with the keys of ``replace`` replaced and
        the keys in ``remove`` removed (both optional; without them the histories share the message)
    {"append": h, "item": msg}
        a message appended to history h that is no copy of the newest group chat message
    {"changed": label, "value": {...}}
        the counter fields of ``label`` that changed (outside a step line)

When the chat's shape changes::

    {"strings": ["text", ...]}         long strings defined on a line of their own (rare: see below)
    {"config": n, "value": {...}}      configuration blob n (an agent's settings, group chat settings,
                                       checkpoint metadata): written once per distinct value
    {"agents": [label, ...], "manager": label | null}
                                       the agents and the manager from here on
    {"agent_config": label, "config": n}
                                       agent ``label`` uses configuration n from here on
    {"counters": label, "value": {...}}
                                       agent ``label``'s counters from here on (all of them)
    {"history": h, "agent": label, "peer": peer}
                                       history h is agent ``label``'s history with ``peer``
    {"truncate_messages": k}           group chat messages truncated to k (an edit, a cleared history)
    {"truncate_history": h, "to": k}   history h truncated to k
    {"drop_history": h}                history h dropped

Any line may also carry ``"strings": ["text", ...]`` (written last): the next long strings of the string
table (numbered from 0 in the order they are defined), defined before the line is applied; a message's
line carries the strings of its own content. A value refers to string s as ``{"$s": s}``. The replay reads
exactly what the encoder writes: the log formats before this one were unreleased drafts, and their records
are refused before their log is read (``records.check_format_version``).

A checkpoint record only holds the message count, the round position, the speaker, and references to its
metadata and group chat settings; everything else is the state the log prefix leaves.

Inside a message, a dict that has a ``"$s"`` or ``"$lit"`` key of its own is escaped as ``{"$lit": {...}}``
so it is never mistaken for a string reference.

What the encoder remembers of each logged list is, per item, the caller's object (for the O(1) identity
check of ``trusted_prefix``) and the exact encoded bytes that were logged (for the full comparison of the
untrusted path). Comparing bytes, not live objects, means an in-place edit of an already logged message is
detected, and so is a change that ``==`` would hide (``1`` -> ``1.0`` or ``True``).

This module knows nothing of AG2 and nothing of files: it turns models into bytes and back.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import CorruptCheckpointError, InvalidCheckpointError
from ..jsonable import to_jsonable, unserializable_marker
from ..model import STATIC_FIELDS_KEY, AgentState, CheckpointData, GroupChatState, ManagerState

#: Strings at least this long are stored once and referenced; shorter ones are cheaper inline.
INTERN_MIN_LENGTH = 48

_STRING_REF = "$s"
_LITERAL = "$lit"
_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can write
_SANITIZE_MAX_DEPTH = 200  # orjson refuses documents nested deeper than 254 levels


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; values orjson cannot serialise natively are converted by ``to_jsonable``.

    Values orjson refuses outright (integers beyond 64 bits, strings with lone surrogates, nesting deeper
    than orjson allows) are written in a sanitised form rather than failing the checkpoint: such an integer
    becomes its decimal string, a lone surrogate becomes U+FFFD, too deep a value becomes a marker.
    """
    try:
        return orjson.dumps(value, default=_fallback, option=_DUMPS_OPTIONS)
    except TypeError:
        return orjson.dumps(_sanitize(value), default=_fallback, option=_DUMPS_OPTIONS)


def dumps_sorted(value: Any) -> bytes:
    """Canonical JSON (sorted keys), used for content addressing and integrity hashes."""
    options = _DUMPS_OPTIONS | orjson.OPT_SORT_KEYS
    try:
        return orjson.dumps(value, default=_fallback, option=options)
    except TypeError:
        return orjson.dumps(_sanitize(value), default=_fallback, option=options)


def _fallback(value: Any) -> Any:
    converted = to_jsonable(value)
    if converted is value:  # pragma: no cover - to_jsonable always returns JSON-native values
        raise TypeError(type(value).__name__)
    return converted


def _clean_str(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: keep proper pairs, replace the rest
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return str(text)


def _sanitize(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` that orjson accepts (slow path, only used after orjson refused a value)."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, int):
        return int(value) if _INT_MIN <= value <= _INT_MAX else str(value)
    if depth > _SANITIZE_MAX_DEPTH:
        return unserializable_marker(value)
    if isinstance(value, dict):
        return {_clean_str(str(k)): _sanitize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitize(v, depth + 1) for v in value]
    return _sanitize(to_jsonable(value), depth + 1)


@dataclass
class _Track:
    """What the log holds for one list (the message list or one history).

    ``objs[i]`` is the object item i was taken from (identity check), ``encs[i]`` the bytes it is logged as
    (``None`` until needed: the trusted path never compares bytes, the untrusted path computes them).
    """

    objs: list[Any] = field(default_factory=list)
    encs: list[bytes | None] = field(default_factory=list)


#: (track, keep, objects to put after ``keep``, their encodings)
_TrackUpdate = tuple[_Track, int, list[Any], list[bytes | None]]
_MISSING = object()

#: Keys in which an agent's copy of a group chat message may differ and still be logged as a reference.
_REF_OVERRIDABLE = frozenset({"role", "name"})


@dataclass
class _AgentLog:
    """What the log says about one agent label: its configuration, counters and histories.

    ``static`` and ``silent``: the settings dict and flag a live snapshot handed over for ``config`` (the same
    objects next time mean the same configuration, with no lookup).
    """

    config: int | None = None
    counters: dict[str, Any] | None = None
    peers: dict[str, tuple[int, _Track]] = field(default_factory=dict)  # history id and track, by peer
    static: Any = None
    silent: Any = None


@dataclass
class EncodedCheckpoint:
    """The output of ``DeltaEncoder.encode``: log bytes to append, and the checkpoint record."""

    log_bytes: bytes
    record: dict[str, Any]
    _strings: dict[str, int]
    _configs: dict[bytes, int]
    _tracks: list[_TrackUpdate]
    _new_histories: dict[tuple[str, str], tuple[int, _Track]]
    _dropped_histories: list[tuple[str, str]] = field(default_factory=list)
    _agents: dict[str, _AgentLog] = field(default_factory=dict)
    _roster: tuple[tuple[str, ...], str | None] | None = None
    _identity_configs: dict[tuple[int, ...], tuple[list[Any], int]] = field(default_factory=dict)
    _patterns: dict[bytes, int] = field(default_factory=dict)
    _generation: int = 0


class DeltaEncoder:
    """Turns successive ``CheckpointData`` of one session into log appends and small records.

    ``encode`` is side-effect free; ``commit`` adopts its result once the bytes are safely written, so a
    failed write leaves the encoder consistent with what is on storage. Only the latest encoding can be
    committed (committing a stale one raises ``ValueError``).
    """

    def __init__(self) -> None:
        self._strings: dict[str, int] = {}
        self._configs: dict[bytes, int] = {}
        self._messages = _Track()
        self._histories: dict[tuple[str, str], tuple[int, _Track]] = {}
        self._agents: dict[str, _AgentLog] = {}
        self._roster: tuple[tuple[str, ...], str | None] = ((), None)
        # configuration ids by the identities of the values they were made from (the snapshot hands over
        # the same objects while nothing changed): skips re-serialising an unchanged configuration
        self._identity_configs: dict[tuple[int, ...], tuple[list[Any], int]] = {}
        self._string_count = 0
        self._config_count = 0
        self._patterns: dict[bytes, int] = {}  # step lines' "copies", by their bytes: the pattern number
        self._pattern_count = 0
        self._history_count = 0
        self._generation = 0

    # -- public API ---------------------------------------------------------------------------------
    def encode(self, data: CheckpointData, *, trusted_prefix: bool = False) -> EncodedCheckpoint:
        """Log lines and record for ``data``.

        With ``trusted_prefix`` the caller promises that lists only grew since the last checkpoint unless
        their length or last item changed, and that logged message objects are not mutated in place (true
        for a live AG2 chat); the check is then O(1) per list and the whole call O(new data).
        Otherwise every already-logged item is compared in full with what was logged.
        """
        job = _EncodeJob(self, trusted_prefix)
        messages_count = job.sync_list(self._messages, data.messages, None)
        job.use_group_messages(data.messages)
        labels = [f"a:{name}" for name in data.agent_states]
        manager_fields = _fields(data.manager_state) if data.manager_state is not None else None
        manager_label = f"m:{manager_fields['name']}" if manager_fields is not None else None
        roster = (tuple(labels), manager_label)
        if roster != self._roster:
            job.emit({"agents": labels, "manager": manager_label})
            job.roster = roster
        for label, state in zip(labels, data.agent_states.values(), strict=True):
            job.agent(label, state)
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
            "metadata": job.config_id(data.metadata) if data.metadata else None,
        }
        if manager_fields is not None:
            assert manager_label is not None
            job.agent(manager_label, manager_fields)
            record["speaker"] = manager_fields.get("current_speaker")
            if manager_fields.get("step_counter", data.step_number) != data.step_number:
                record["step_counter"] = manager_fields["step_counter"]
        job.finish_step()
        if data.groupchat_state is not None:
            values = _fields(data.groupchat_state)
            static = values.get(STATIC_FIELDS_KEY)  # a live snapshot's settings dict (as for agents)
            if static is None:
                static = {k: v for k, v in values.items() if k not in _GROUPCHAT_POSITION}
            position = {k: values[k] for k in _GROUPCHAT_POSITION if k in values}
            record["groupchat"] = {"config": job.config_from_fields(static), **position}
        extra = data.__pydantic_extra__
        if extra:
            record["extra"] = to_jsonable(extra)
        if job.pending_strings:  # interned for a reference no later line carried
            job.lines.append(b'{"strings":' + dumps(job.pending_strings) + b"}\n")
        return EncodedCheckpoint(
            log_bytes=b"".join(job.lines),
            record=record,
            _strings=job.new_strings,
            _configs=job.new_configs,
            _tracks=job.track_updates,
            _new_histories=job.new_histories,
            _dropped_histories=job.dropped,
            _agents=job.agents,
            _roster=job.roster,
            _identity_configs=job.identity_configs,
            _patterns=job.new_patterns,
            _generation=self._generation,
        )

    def commit(self, encoded: EncodedCheckpoint) -> None:
        """Adopt an encoding whose log bytes were written."""
        if encoded._generation != self._generation:
            raise ValueError("stale encoding: another encoding was committed after it was made")
        self._generation += 1
        self._strings.update(encoded._strings)
        self._string_count += len(encoded._strings)
        self._configs.update(encoded._configs)
        self._config_count += len(encoded._configs)
        self._identity_configs.update(encoded._identity_configs)
        self._patterns.update(encoded._patterns)
        self._pattern_count += len(encoded._patterns)
        for key in encoded._dropped_histories:
            self._histories.pop(key, None)
        self._histories.update(encoded._new_histories)
        self._history_count += len(encoded._new_histories)
        self._agents.update(encoded._agents)
        if encoded._roster is not None:
            self._roster = encoded._roster
        for track, keep, objs, encs in encoded._tracks:
            del track.objs[keep:]
            track.objs.extend(objs)
            del track.encs[keep:]
            track.encs.extend(encs)

    def load_state(self, replay: LogReplay) -> None:
        """Continue an existing log: adopt everything it holds (items are compared in full next time)."""
        self._generation += 1
        self._strings = {text: index for index, text in enumerate(replay.strings)}
        self._string_count = len(replay.strings)
        self._configs = {dumps_sorted(value): index for index, value in sorted(replay.configs.items())}
        self._config_count = max(replay.configs, default=-1) + 1
        self._identity_configs = {}
        self._patterns = {dumps(pattern): number for number, pattern in enumerate(replay.patterns)}
        self._pattern_count = len(replay.patterns)
        peek = _EncodeJob(self, False).peek
        self._messages = _Track(list(replay.messages), [peek(item) for item in replay.messages])
        self._histories = {
            replay.history_keys[hid]: (hid, _Track(list(items), [peek(item) for item in items]))
            for hid, items in sorted(replay.histories.items())
        }
        self._history_count = max([*replay.history_keys, -1]) + 1
        self._agents = {}
        for hid, (label, peer) in replay.history_keys.items():
            if hid in replay.histories:
                self._agents.setdefault(label, _AgentLog()).peers[peer] = self._histories[(label, peer)]
        for label, config in replay.agent_configs.items():
            self._agents.setdefault(label, _AgentLog()).config = config
        for label, counters in replay.dynamic.items():
            self._agents.setdefault(label, _AgentLog()).counters = counters
        self._roster = (tuple(replay.roster), replay.manager_label)

    @property
    def string_count(self) -> int:
        """Number of interned strings in the log."""
        return self._string_count


#: Group chat fields that change every message: kept in the record, the rest is a configuration blob.
_GROUPCHAT_POSITION = ("round_index", "run_start_index")
#: Agent fields logged as "counters" records when they change (histories are logged separately).
_COUNTER_FIELDS = ("consecutive_auto_reply_counter", "max_consecutive_auto_reply_dict", "reply_at_receive")
#: Fields kept in the record rather than in the log (they change at nearly every checkpoint).
_RECORD_FIELDS = frozenset({"oai_messages", "current_speaker", "step_counter"})


def _fields(model: Any) -> dict[str, Any]:
    """A model's field values (declared and extra) without re-validating or deep-copying them.

    A plain dict of field values (the checkpointing manager's live snapshots) is returned as it is: read it,
    don't change it.
    """
    if type(model) is dict:
        return model
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
        self.pending_strings: list[str] = []
        self.new_strings: dict[str, int] = {}
        self.new_configs: dict[bytes, int] = {}
        self.track_updates: list[_TrackUpdate] = []
        self.new_histories: dict[tuple[str, str], tuple[int, _Track]] = {}
        self.dropped: list[tuple[str, str]] = []
        self.agents: dict[str, _AgentLog] = {}
        self.roster: tuple[tuple[str, ...], str | None] | None = None
        self.identity_configs: dict[tuple[int, ...], tuple[list[Any], int]] = {}
        # the newest group chat message (a dict, else None) and ``"of":j`` referring to it
        self.group_base: dict[str, Any] | None = None
        self.group_index = b""
        # histories that each got exactly one copy of a group chat message, by the replaced keys
        # ("replace") and removed keys ("remove") of their copy
        self.grouped: dict[tuple[bytes | None, bytes | None], list[int]] = {}
        # the step line's parts: the one message appended (its encoding, its strings, where its line goes
        # if it cannot wait for the step line) and counter changes (label, changed fields)
        self.step_message: bytes | None = None
        self.step_strings: list[str] = []
        self.step_at = 0
        self.step_held = False  # True while the message can still wait for the step line
        self.step_counters: list[tuple[bytes, bytes]] = []
        self.new_patterns: dict[bytes, int] = {}

    def add(self, line: bytes, *, refers: bool = True) -> None:
        """Append one log line; strings interned since the previous line ride on it (``"strings"``).

        ``refers=False``: the line cannot refer to a message or a string (a configuration blob), so a held
        message may still move past it to the step line.
        """
        if refers:
            self.step_held = False
        if self.pending_strings:
            line = line[:-2] + b',"strings":' + dumps(self.pending_strings) + b"}\n"
            self.pending_strings = []
        self.lines.append(line)

    def emit(self, record: dict[str, Any]) -> None:
        self.add(dumps(record) + b"\n")

    def finish_step(self) -> None:
        """Write the usual changes of a checkpoint: its message, counter changes and history copies.

        One step line (``{"message": ..., "changed": ..., "pattern": ...}``) holds them when the message's
        line could wait until now (no line written after it can refer to it or its strings: only
        configuration blobs were). Otherwise they are written as separate lines: the message's where it was
        logged, then ``"changed"`` lines, then one ``"copy"`` line per distinct reference.
        """
        message, grouped, counters = self.step_message, self.grouped, self.step_counters
        if message is not None and self.step_held:
            parts = [b'{"message":', message]
            if counters:
                changes = b",".join(label + b":" + changed for label, changed in counters)
                parts.append(b',"changed":{' + changes + b"}")
            if grouped:
                entries = []
                for (overrides, removed), histories in grouped.items():
                    entry = b"[" + dumps(histories)
                    if overrides is not None or removed is not None:
                        entry += b"," + (overrides or b"null")
                    if removed is not None:
                        entry += b"," + removed
                    entries.append(entry + b"]")
                parts.append(self.copies(b"[" + b",".join(entries) + b"]"))
            strings = self.step_strings + self.pending_strings
            if strings:
                parts.append(b',"strings":' + dumps(strings))
            self.pending_strings = []
            self.lines.append(b"".join(parts) + b"}\n")
        else:
            if message is not None:
                defined = b',"strings":' + dumps(self.step_strings) if self.step_strings else b""
                self.lines.insert(self.step_at, b'{"message":' + message + defined + b"}\n")
            for label, changed in counters:
                self.add(b'{"changed":' + label + b',"value":' + changed + b"}\n")
            for key, histories in grouped.items():
                self.add(b'{"copy":' + dumps(histories) + b"," + self.group_fragment(key) + b"}\n")
        self.step_message, self.step_strings, self.step_counters = None, [], []
        grouped.clear()

    def copies(self, pattern: bytes) -> bytes:
        """``,"pattern":p`` for copies seen before, else ``,"copies":[...],"pattern":p`` defining p."""
        number = self.encoder._patterns.get(pattern)
        if number is None:
            number = self.new_patterns.get(pattern)
        if number is not None:
            return b',"pattern":' + str(number).encode()
        number = self.encoder._pattern_count + len(self.new_patterns)
        self.new_patterns[pattern] = number
        return b',"copies":' + pattern + b',"pattern":' + str(number).encode()

    def group_fragment(self, key: tuple[bytes | None, bytes | None]) -> bytes:
        """``"of":j,"replace":{...},"remove":[...]``: a copy line's reference to the newest message."""
        overrides, removed = key
        fragment = self.group_index
        if overrides is not None:
            fragment += b',"replace":' + overrides
        if removed is not None:
            fragment += b',"remove":' + removed
        return fragment

    def value(self, value: Any, intern: bool = True, depth: int = 0) -> Any:
        """Encode one JSON value, interning long strings (``intern=False``: look up only, log nothing).

        Containers nested deeper than ``_SANITIZE_MAX_DEPTH`` become a marker, as in ``dumps``: a live
        message may be nested arbitrarily deep, a checkpoint may not (orjson reads 254 levels at most).
        """
        kind = type(value)
        if kind is str:
            if len(value) < INTERN_MIN_LENGTH:
                return value
            index = self.encoder._strings.get(value)
            if index is None:
                index = self.new_strings.get(value)
                if index is None:
                    if not intern:
                        return value  # never equal to a logged encoding, which holds a reference
                    index = self.encoder._string_count + len(self.new_strings)
                    self.new_strings[value] = index
                    self.pending_strings.append(value)  # defined by the next line written
            return {_STRING_REF: index}
        if kind is dict or kind is list or kind is tuple:
            if depth > _SANITIZE_MAX_DEPTH:
                return unserializable_marker(value)
            depth += 1
            if kind is dict:
                encoded = {
                    (k if type(k) is str else str(k)): self.value(v, intern, depth) for k, v in value.items()
                }
                return {_LITERAL: encoded} if (_STRING_REF in encoded or _LITERAL in encoded) else encoded
            return [self.value(v, intern, depth) for v in value]
        if value is None or kind is int or kind is float or kind is bool:
            return value
        converted = to_jsonable(value)
        return self.value(converted, intern, depth) if type(converted) is not type(value) else converted

    def peek(self, item: Any) -> bytes:
        """The bytes ``item`` is logged as, if all its long strings are known (else bytes that differ)."""
        return dumps(self.value(item, False))

    def use_group_messages(self, messages: list[Any]) -> None:
        """Let history items be logged as references to the newest of ``messages`` (the group chat's)."""
        base = messages[-1] if messages else None
        self.group_base = base if type(base) is dict else None
        self.group_index = b'"of":' + str(len(messages) - 1).encode()

    def _group_reference(self, item: dict[str, Any]) -> tuple[bytes | None, bytes | None] | None:
        """(overrides, removed keys) when ``item`` is the newest group chat message up to its role/name."""
        base = self.group_base
        if base is None:
            return None
        overrides: dict[str, Any] = {}
        short = True  # every replaced value a short string (the usual role/name): no string to intern
        added = 0  # keys of ``item`` that ``base`` lacks
        for key, value in item.items():
            known = base.get(key, _MISSING)
            if known is value or (type(known) is type(value) and known == value):
                continue
            if key not in _REF_OVERRIDABLE:
                return None
            overrides[key] = value
            short = short and type(value) is str and len(value) < INTERN_MIN_LENGTH
            if known is _MISSING:
                added += 1
        removed = [key for key in base if key not in item] if len(item) - added != len(base) else []
        if removed and not _REF_OVERRIDABLE.issuperset(removed):
            return None
        return (
            dumps(overrides if short else self.value(overrides)) if overrides else None,
            dumps(removed) if removed else None,
        )

    def sync_list(self, track: _Track, items: list[Any], history: int | None) -> int:
        """Emit what makes the logged list equal to ``items``; returns ``len(items)``."""
        objs, encs = track.objs, track.encs
        n_logged, n_new = len(objs), len(items)
        if n_new >= n_logged and (n_logged == 0 or (self.trusted and items[n_logged - 1] is objs[-1])):
            if n_new == n_logged:
                return n_new
            keep, adopt_all = n_logged, False
        else:  # compare what was logged, item by item, as bytes
            keep, limit = 0, min(n_logged, n_new)
            peek = self.peek
            for index in range(n_logged):  # fill in encodings the trusted path skipped
                if encs[index] is None:
                    encs[index] = peek(objs[index])
            while keep < limit and peek(items[keep]) == encs[keep]:
                keep += 1
            if keep < n_logged:
                self.emit(
                    {"truncate_messages": keep}
                    if history is None
                    else {"truncate_history": history, "to": keep}
                )
            adopt_all = True  # identical items now refer to the caller's objects (O(1) checks later)
        tail: list[Any] = []
        tail_encs: list[bytes | None] = []
        if n_new - keep == 1 and type(items[keep]) is dict:  # the common case: one new item
            if history is None:  # a new group chat message, held back for the step line
                enc = dumps(self.value(items[keep]))
                self.step_message, self.step_strings = enc, self.pending_strings
                self.step_at, self.step_held, self.pending_strings = len(self.lines), True, []
                tail, tail_encs = [items[keep]], [enc]
            else:
                reference = self._group_reference(items[keep])
                if reference is not None:  # one copy of the newest group chat message
                    self.grouped.setdefault(reference, []).append(history)
                    tail, tail_encs = [items[keep]], [None]
        if not tail:
            tail = list(items[keep:])
            tail_encs = [self.list_item(item, history) for item in tail]
        if adopt_all:
            self.track_updates.append((track, 0, list(items), list(encs[:keep]) + tail_encs))
        else:
            self.track_updates.append((track, keep, tail, tail_encs))
        return n_new

    def list_item(self, item: Any, history: int | None) -> bytes | None:
        """Log one appended item; returns its encoding (None when logged as a group chat reference)."""
        if type(item) is not dict:
            raise InvalidCheckpointError(f"a message must be a JSON object, got {type(item).__name__}")
        if history is None:
            enc = dumps(self.value(item))
            self.add(b'{"message":' + enc + b"}\n")
            return enc
        reference = self._group_reference(item)
        if reference is not None:
            self.add(b'{"copy":[' + str(history).encode() + b"]," + self.group_fragment(reference) + b"}\n")
            return None
        enc = dumps(self.value(item))
        self.add(b'{"append":' + str(history).encode() + b',"item":' + enc + b"}\n")
        return enc

    def config_id(self, value: Any) -> int:
        """The id of a configuration blob equal to ``value``, logging it if it is new."""
        key = dumps_sorted(value)
        index = self.encoder._configs.get(key)
        if index is None:
            index = self.new_configs.get(key)
            if index is None:
                index = self.encoder._config_count + len(self.new_configs)
                self.new_configs[key] = index
                self.add(b'{"config":' + str(index).encode() + b',"value":' + key + b"}\n", refers=False)
        return index

    def config_from_fields(self, values: dict[str, Any]) -> int:
        """``config_id`` of a field dict, skipping serialisation when every value object is unchanged."""
        known_dict = self.encoder._identity_configs.get((id(values),))
        if known_dict is not None and known_dict[0][0] is values:
            return known_dict[1]
        identity = (len(values), *map(id, values.values()))
        known = self.encoder._identity_configs.get(identity) or self.identity_configs.get(identity)
        if known is not None and all(a is b for a, b in zip(known[0], values.values(), strict=True)):
            return known[1]
        index = self.config_id(to_jsonable(values))
        self.identity_configs[identity] = (list(values.values()), index)
        self.identity_configs[(id(values),)] = ([values], index)  # the same dict object next time
        return index

    def history(self, label: str, peer: str) -> tuple[int, _Track]:
        key = (label, peer)
        known = self.encoder._histories.get(key) or self.new_histories.get(key)
        if known is None:
            hid = self.encoder._history_count + len(self.new_histories)
            known = (hid, _Track())
            self.new_histories[key] = known
            self.emit({"history": hid, "agent": label, "peer": peer})
        return known

    def agent(self, label: str, state: AgentState | dict[str, Any]) -> None:
        """Log what changed for one agent (configuration, counters, histories)."""
        values = state if type(state) is dict else _fields(state)
        logged = self.encoder._agents.get(label) or _AgentLog()  # a new label: everything is logged
        static = values.get(STATIC_FIELDS_KEY)
        silent = values.get("silent")
        if static is not None and static is logged.static and silent is logged.silent:
            config = logged.config  # a live snapshot handed over the same settings: nothing changed
        else:
            if static is None:  # a kept snapshot: its settings are the fields not logged elsewhere
                fields = {
                    k: v for k, v in values.items() if k not in _RECORD_FIELDS and k not in _COUNTER_FIELDS
                }
            elif "silent" in values:  # a live manager: its flag belongs with its settings, as when kept
                fields = {**static, "silent": silent}
            else:
                fields = static
            config = self.config_from_fields(fields)
            if config != logged.config:
                self.emit({"agent_config": label, "config": config})
        frozen = logged.counters
        counters = {k: values[k] for k in _COUNTER_FIELDS if k in values}
        if counters != frozen:
            encoded = dumps_sorted(counters)
            if frozen is None or frozen.keys() != counters.keys():
                self.add(b'{"counters":' + dumps(label) + b',"value":' + encoded + b"}\n")
            else:  # the usual case: one counter moved; only the fields that changed
                changed = {k: v for k, v in counters.items() if v != frozen[k]}
                self.step_counters.append((dumps(label), dumps_sorted(changed)))
            frozen = orjson.loads(encoded)  # a copy of its own, compared with the next checkpoint's
        peers = logged.peers  # copied before the first change
        histories = values.get("oai_messages") or {}
        for peer, items in histories.items():
            peer_name = peer if type(peer) is str else str(peer)
            known = peers.get(peer_name)
            if known is None:
                known = self.history(label, peer_name)
                peers = dict(peers) if peers is logged.peers else peers
                peers[peer_name] = known
            self.sync_list(known[1], items, known[0])
        if len(peers) != len(histories):
            peers = dict(peers) if peers is logged.peers else peers
            for peer_name in [p for p in peers if p not in histories]:
                self.emit({"drop_history": peers.pop(peer_name)[0]})
                self.dropped.append((label, peer_name))
        if (
            config != logged.config
            or frozen is not logged.counters
            or peers is not logged.peers
            or static is not logged.static
            or silent is not logged.silent
        ):
            self.agents[label] = _AgentLog(config, frozen, peers, static, silent)


# -- decoding -------------------------------------------------------------------------------------------


class LogReplay:
    """State rebuilt from a log prefix: strings, configurations, messages, histories, agents."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.configs: dict[int, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.histories: dict[int, list[dict[str, Any]]] = {}
        self.history_keys: dict[int, tuple[str, str]] = {}
        self.roster: list[str] = []
        self.manager_label: str | None = None
        self.agent_configs: dict[str, int] = {}
        self.dynamic: dict[str, dict[str, Any]] = {}
        self.patterns: list[Any] = []  # step lines' copy patterns ("copies"), by number
        self.pattern_costs: list[int] = []  # what replaying each pattern once costs (see _pattern_cost)

    def apply_bytes(self, data: bytes, *, path: str | None = None) -> None:
        """Replay complete log lines (``data`` must end with a newline or be empty)."""
        if not data:
            return
        if not data.endswith(b"\n"):
            raise CorruptCheckpointError("session log ends inside a record (truncated write)", path=path)
        collecting = gc.isenabled()
        gc.disable()  # tens of thousands of small objects: full collections would dominate the replay
        try:
            try:
                document = bytearray(b"[")  # the lines as one JSON array: one parse, two copies
                document += data
                document = document.replace(b"\n", b",")
                document[-1] = 0x5D  # "]" in place of the last line's newline
                records = orjson.loads(document)
            except orjson.JSONDecodeError as exc:
                raise CorruptCheckpointError(f"session log is not valid JSON: {exc}", path=path) from exc
            try:
                self._apply_all(records, COPY_BUDGET_PER_BYTE * len(data))
            except (KeyError, TypeError, IndexError, ValueError, AttributeError, RecursionError) as exc:
                raise CorruptCheckpointError(
                    f"session log has a malformed record: {exc!r}", path=path
                ) from exc
        except MemoryError as exc:
            raise CorruptCheckpointError(
                "session log does not fit in memory (damaged, or expands without bound)", path=path
            ) from exc
        finally:
            if collecting:
                gc.enable()

    def _apply_all(self, records: list[Any], budget: int) -> None:
        """Apply parsed records in order.

        Message lines (one per message, most of them step lines) and copy lines are handled inline, their
        common shapes without a call: a 1,000-message log holds 1,000 to 4,000 of them and this loop is
        most of a load. The first key of any other line names its kind (``_HANDLERS``).

        ``budget`` bounds what step lines that reuse a copy pattern may append (``_pattern_cost``): a line of
        a few bytes can name a pattern of any size, so a hostile log could otherwise expand without bound.
        """
        messages, histories, dynamic, strings = self.messages, self.histories, self.dynamic, self.strings
        patterns, costs = self.patterns, self.pattern_costs
        copy_of, copy_with, plain_message = self._copy_of_group_message, self._copy_with, self._plain_message
        for record in records:
            if type(record) is not dict:
                raise TypeError("log record is not an object")
            defined = record.get("strings")  # strings first: the record may refer to them
            if defined is not None:
                if type(defined) is not list:
                    raise TypeError("string definitions are not a list of strings")
                for text in defined:
                    if type(text) is not str:
                        raise TypeError("string definitions are not a list of strings")
                strings += defined
            message = record.get("message")
            if message is not None:  # a group chat message; a step line adds counter changes and copies
                if (  # the usual message, {"content": {"$s": n}, "role": "...", "name": "..."}: no call
                    type(message) is dict
                    and len(message) == 3
                    and type(content := message.get("content")) is dict
                    and len(content) == 1
                    and type(ref := content.get(_STRING_REF)) is int
                    and ref >= 0
                    and type(message.get("role")) is str
                    and type(message.get("name")) is str
                ):
                    message["content"] = strings[ref]  # the parsed record is ours to reuse
                else:
                    message = plain_message(message)
                messages.append(message)
                counters = record.get("changed")
                if counters is not None:
                    for label, changed in counters.items():
                        if type(changed) is not dict:
                            raise TypeError("counters record is not an object")
                        dynamic[label].update(changed)  # KeyError (malformed) before a full record
                pattern = record.get("pattern")
                if pattern is None:
                    if "copies" in record:  # the encoder numbers every set of copies it writes
                        raise ValueError("a step line's copies have no pattern number")
                    continue
                if type(pattern) is not int or pattern < 0:
                    raise ValueError(f"invalid copy pattern {pattern!r}")
                copies = record.get("copies")
                if copies is None:  # the copies follow a pattern defined before
                    copies = patterns[pattern]  # IndexError: a pattern never defined
                    budget -= costs[pattern]
                    if budget < 0:
                        raise ValueError(
                            "copy patterns expand to more history entries than a log of this size holds"
                        )
                elif pattern == len(patterns):  # the copies define the next pattern
                    patterns.append(copies)
                    costs.append(_pattern_cost(copies))
                else:
                    raise ValueError(f"copy pattern {pattern} defined out of sequence")
                for entry in copies:
                    if len(entry) == 1:  # a bare entry is an unchanged copy: the histories share the message
                        item = message
                    elif (  # the usual copy, the speaker's own: the message under another role
                        len(entry) == 2
                        and type(overrides := entry[1]) is dict
                        and len(overrides) == 1
                        and type(role := overrides.get("role")) is str
                    ):
                        item = message.copy()
                        item["role"] = role
                    else:
                        item = copy_with(message, *entry[1:])
                    for hid in entry[0]:  # readers copy what they keep
                        histories[hid].append(item)
                continue
            targets = record.get("copy")
            if targets is not None:  # one copy of a group chat message, for one or more histories
                if type(targets) is not list:
                    raise TypeError("copy targets are not a list")
                if len(record) == 2 + (defined is not None):  # an unchanged copy: share the message
                    item = messages[_index(record["of"])]
                else:
                    item = copy_of(record)
                for hid in targets:
                    histories[hid].append(item)
                continue
            handler = _HANDLERS.get(next(iter(record), ""))
            if handler is None:
                raise ValueError(f"unknown record {sorted(record)}")
            handler(self, record)

    def _plain_message(self, encoded: Any) -> dict[str, Any]:
        """A logged message; the usual one (plain values around a content reference) without recursion."""
        if type(encoded) is not dict:
            raise TypeError("message record is not an object")
        content = encoded.get("content")
        if type(content) is not dict or len(content) != 1 or _STRING_REF not in content:
            return self._message(encoded)
        for value in encoded.values():
            if type(value) is list or (type(value) is dict and value is not content):
                return self._message(encoded)
        encoded["content"] = self.strings[_index(content[_STRING_REF])]  # the parsed record is ours to reuse
        return encoded

    def _copy_with(self, base: dict[str, Any], overrides: Any = None, removed: Any = None) -> dict[str, Any]:
        """A copy of ``base`` with the keys of ``overrides`` replaced and the keys in ``removed`` dropped."""
        item = dict(base)
        if overrides is not None:
            if type(overrides) is not dict:
                raise TypeError("overrides are not an object")
            for value in overrides.values():
                if type(value) is not str:  # a long or structured value: decode it
                    item.update(self._message(overrides))
                    break
            else:
                item.update(overrides)  # the usual role/name: nothing to decode
        if removed:
            if type(removed) is not list:
                raise TypeError("removed keys are not a list")
            for key in removed:
                del item[key]
        return item

    def _copy_of_group_message(self, record: dict[str, Any]) -> dict[str, Any]:
        return self._copy_with(
            self.messages[_index(record["of"])], record.get("replace"), record.get("remove")
        )

    def _append(self, record: dict[str, Any]) -> None:
        """``{"append": h, "item": msg}``: a message that is no copy of a group chat message."""
        self.histories[record["append"]].append(self._message(record["item"]))

    def _counters(self, record: dict[str, Any]) -> None:
        if type(record["value"]) is not dict:
            raise TypeError("counters record is not an object")
        self.dynamic[str(record["counters"])] = record["value"]

    def _changed(self, record: dict[str, Any]) -> None:
        changed = record["value"]
        if type(changed) is not dict:
            raise TypeError("counters record is not an object")
        self.dynamic[str(record["changed"])].update(changed)  # KeyError (malformed) before a full record

    def _strings_only(self, record: dict[str, Any]) -> None:
        """``{"strings": [...]}``: string definitions alone (``_apply_all`` has taken them)."""

    def _agent_config(self, record: dict[str, Any]) -> None:
        self.agent_configs[str(record["agent_config"])] = _index(record["config"])

    def _config(self, record: dict[str, Any]) -> None:
        self.configs[_index(record["config"])] = record["value"]

    def _history_defined(self, record: dict[str, Any]) -> None:
        hid = _index(record["history"])
        if hid in self.history_keys:
            raise ValueError(f"history {hid} defined twice")
        self.histories[hid] = []
        self.history_keys[hid] = (str(record["agent"]), str(record["peer"]))

    def _history_truncated(self, record: dict[str, Any]) -> None:
        del self.histories[record["truncate_history"]][_index(record["to"]) :]

    def _history_dropped(self, record: dict[str, Any]) -> None:
        del self.histories[_index(record["drop_history"])]

    def _messages_truncated(self, record: dict[str, Any]) -> None:
        del self.messages[_index(record["truncate_messages"]) :]

    def _roster(self, record: dict[str, Any]) -> None:
        if type(record["agents"]) is not list:
            raise TypeError("roster is not a list")
        self.roster = [str(label) for label in record["agents"]]
        self.manager_label = None if record.get("manager") is None else str(record["manager"])

    def _message(self, encoded: Any) -> dict[str, Any]:
        if type(encoded) is not dict:
            raise TypeError("message record is not an object")
        message = self._decode_dict(encoded)
        if type(message) is not dict:
            raise TypeError("message record is not an object")
        return message

    def decode(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            return self._decode_dict(value)
        if kind is list:
            return [self.decode(v) for v in value]
        return value

    def _decode_dict(self, value: dict[str, Any]) -> Any:
        if len(value) == 1:
            if _STRING_REF in value:
                return self.strings[_index(value[_STRING_REF])]
            if _LITERAL in value:
                return {k: self.decode(v) for k, v in value[_LITERAL].items()}
        decoded = value  # copied only once a nested value needs decoding: most values are plain
        for key, item in value.items():
            kind = type(item)
            if kind is dict:
                new: Any = self._decode_dict(item)
            elif kind is list:
                new = [self.decode(v) for v in item]
            else:
                continue
            if decoded is value:
                decoded = dict(value)
            decoded[key] = new
        return decoded

    def history(self, hid: int, length: int, *, path: str | None) -> list[dict[str, Any]]:
        items = self.histories.get(hid)
        if items is None or len(items) != length:
            raise CorruptCheckpointError(
                f"history {hid} has {None if items is None else len(items)} messages in the log, "
                f"the checkpoint expects {length}",
                path=path,
            )
        return list(items)

    def config(self, index: Any, what: str, path: str | None) -> dict[str, Any]:
        value = self.configs.get(_index(index))
        if not isinstance(value, dict):
            raise CorruptCheckpointError(f"{what} (configuration {index!r}) missing from the log", path=path)
        return value

    def histories_of(self, label: str) -> dict[str, list[dict[str, Any]]]:
        return {
            peer: list(self.histories[hid])
            for hid, (owner, peer) in self.history_keys.items()
            if owner == label and hid in self.histories
        }


#: Handlers of the rarer record kinds, by the line's first key ("message" and "copy" lines are handled
#: inline by ``_apply_all``).
_HANDLERS: dict[str, Callable[[LogReplay, dict[str, Any]], None]] = {
    "strings": LogReplay._strings_only,
    "config": LogReplay._config,
    "agents": LogReplay._roster,
    "agent_config": LogReplay._agent_config,
    "counters": LogReplay._counters,
    "changed": LogReplay._changed,
    "history": LogReplay._history_defined,
    "append": LogReplay._append,
    "truncate_messages": LogReplay._messages_truncated,
    "truncate_history": LogReplay._history_truncated,
    "drop_history": LogReplay._history_dropped,
}


#: Step lines that reuse a copy pattern may append at most this many history entries per byte of the log
#: replayed (an entry: one history append; a copy: 8). A real step line is 40 bytes or more and its
#: pattern appends about two entries per agent, so this leaves room for groups of well over 100 agents.
COPY_BUDGET_PER_BYTE = 8


def _pattern_cost(copies: Any) -> int:
    """What replaying a copy pattern costs against the budget: 8 per copy (a copy may be a new dict) plus
    one per history it is appended to."""
    if type(copies) is not list:
        raise TypeError("copy pattern is not a list")
    return sum(8 + (len(e[0]) if type(e) is list and e and type(e[0]) is list else 0) for e in copies)


def _index(value: Any) -> int:
    """A non-negative integer from a log record (a bool, a float or a negative number is malformed)."""
    if type(value) is not int or value < 0:
        raise ValueError(f"invalid index {value!r}")
    return value


def _agent_from_log(
    label: str, replay: LogReplay, model: type[AgentState], path: str | None, **fields: Any
) -> AgentState:
    """An agent as the log prefix leaves it; ``fields`` come from the record."""
    if label not in replay.agent_configs:
        raise CorruptCheckpointError(f"agent {label[2:]!r} has no configuration in the log", path=path)
    config = replay.config(replay.agent_configs[label], f"agent {label[2:]!r}", path)
    state = model.model_validate({**config, **replay.dynamic.get(label, {}), **fields})
    state.oai_messages = replay.histories_of(label)
    return state


_HEADER_FIELDS = (
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


def checkpoint_from_record(
    record: dict[str, Any], replay: LogReplay, *, path: str | None = None
) -> CheckpointData:
    """Assemble the logical checkpoint from its record and the replayed log prefix."""
    count = _index(record["messages"]["count"])
    if len(replay.messages) != count:
        raise CorruptCheckpointError(
            f"the log holds {len(replay.messages)} group chat messages, the checkpoint expects {count}",
            path=path,
        )
    extra = record.get("extra") or {}
    if not isinstance(extra, dict):
        raise InvalidCheckpointError("the record's 'extra' is not an object", path=path)
    metadata = (
        replay.config(record["metadata"], "metadata", path) if record.get("metadata") is not None else {}
    )
    groupchat = None
    if record.get("groupchat") is not None:
        position = record["groupchat"]
        groupchat = {
            **replay.config(position["config"], "group chat settings", path),
            **{k: position[k] for k in _GROUPCHAT_POSITION if k in position},
        }
    data = CheckpointData.model_validate(
        {key: value for key, value in extra.items() if key not in CheckpointData.model_fields}
        | {key: record[key] for key in _HEADER_FIELDS if key in record}
        | {"metadata": metadata, "groupchat_state": groupchat}
    )
    data.messages = list(replay.messages)
    data.agent_states = {
        label[2:]: _agent_from_log(label, replay, AgentState, path) for label in replay.roster
    }
    if replay.manager_label is not None:
        data.manager_state = _agent_from_log(  # type: ignore[assignment]
            replay.manager_label,
            replay,
            ManagerState,
            path,
            current_speaker=record.get("speaker"),
            step_counter=record.get("step_counter", data.step_number),
        )
    if data.groupchat_state is not None and not isinstance(data.groupchat_state, GroupChatState):
        raise InvalidCheckpointError("groupchat state is malformed", path=path)
    return data
