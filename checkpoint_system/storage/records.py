"""Checkpoint records, independent of where they are stored.

Every backend stores a checkpoint the same way: a small JSON *record* (ids, counters, settings, produced by
``DeltaEncoder``) that references a byte prefix of the session's log (``{"size", "sha256"}`` plus where the
log lives: a file name for the file store, a chunk sequence number for the databases), sealed by a sha256
``integrity`` hash over its canonical (sorted-keys) JSON. This module seals records, opens and validates
them from bytes, and assembles ``CheckpointData`` from a record and its log prefix. Every error is a
``CheckpointError`` naming ``where`` the record came from: a file path or ``<store url>#<session>/<id>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from ..errors import (
    CheckpointError,
    CheckpointSaveError,
    CorruptCheckpointError,
    InvalidCheckpointError,
    UnsupportedFormatError,
)
from ..model import FORMAT_NAME, FORMAT_VERSION, CheckpointData
from .delta import DeltaEncoder, EncodedCheckpoint, LogReplay, checkpoint_from_record, dumps, dumps_sorted

LAYOUTS = ("log", "inline")


def integrity_of(record: dict[str, Any]) -> str:
    """The sha256 of a record's canonical JSON (the record without its ``integrity`` key)."""
    return hashlib.sha256(dumps_sorted(record)).hexdigest()


def seal_record(
    record: dict[str, Any], *, size: int, sha256: str, location: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Turn a ``DeltaEncoder`` record into a stored record (in place; also returned).

    Adds the format marker and version, ``layout: "log"``, the log reference
    ``{**location, "size": size, "sha256": sha256}`` (``location``: where the backend keeps the log, e.g.
    ``{"file": "message_log.jsonl"}`` or ``{"seq": 7}``) and the ``integrity`` hash, in that key order.
    """
    record.pop("integrity", None)
    record.update(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        layout="log",
        log={**(location or {}), "size": size, "sha256": sha256},
    )
    record["integrity"] = integrity_of(record)
    return record


def record_bytes(record: dict[str, Any]) -> bytes:
    """The stored bytes of a sealed record (compact JSON, the file store's on-disk form)."""
    return dumps(record)


def open_record(raw: bytes, *, where: str) -> dict[str, Any]:
    """Parse and integrity-check a checkpoint document; raises a ``CheckpointError`` naming ``where``.

    Returns the record of a current document, or the raw document of a seed-era one (no format marker).
    """
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = "empty file" if not raw.strip() else "truncated or corrupt JSON"
        raise CorruptCheckpointError(f"not a readable checkpoint ({hint}: {exc})", path=where) from exc
    if not isinstance(record, dict):
        raise InvalidCheckpointError("not a checkpoint file (the JSON document is not an object)", path=where)
    if "format" not in record:
        if "checkpoint_id" in record and "messages" in record:
            return record  # a seed-era checkpoint without format marker: migrated by the caller
        raise InvalidCheckpointError("not a checkpoint file (no checkpoint_system format marker)", path=where)
    if record["format"] != FORMAT_NAME:
        raise InvalidCheckpointError(
            f"not a checkpoint file (format {str(record['format'])[:80]!r}, expected {FORMAT_NAME!r})",
            path=where,
        )
    version = record.get("format_version")
    if type(version) is not int or version < 1:
        raise InvalidCheckpointError(f"invalid format_version {version!r}", path=where)
    check_format_version(version, record.get("layout", "inline"), where=where)
    expected = record.pop("integrity", None)
    if not isinstance(expected, str):
        raise CorruptCheckpointError("integrity hash missing", path=where)
    if integrity_of(record) != expected:
        raise CorruptCheckpointError(
            "integrity hash mismatch: the record was modified or damaged", path=where
        )
    record["integrity"] = expected
    layout = record.get("layout", "inline")
    if layout not in LAYOUTS:
        raise InvalidCheckpointError(f"unknown checkpoint layout {str(layout)[:80]!r}", path=where)
    return record


def check_format_version(version: int, layout: Any, *, where: str) -> None:
    """Refuse a record this library does not read: a newer format, or an older log-layout one.

    The library reads exactly one log format, ``FORMAT_VERSION``. Standalone exports (``"inline"`` layout:
    the logical checkpoint, everything inline) of any version up to it are read; seed-era documents have no
    format marker and never get here. Every earlier log-layout version was an unreleased draft.
    """
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"format version {version} is newer than this library supports ({FORMAT_VERSION}); upgrade "
            "checkpoint_system to read it",
            path=where,
        )
    if version < FORMAT_VERSION and layout != "inline":
        raise UnsupportedFormatError(
            f"format version {version} was an unreleased draft format that is no longer read (this "
            f"library reads format {FORMAT_VERSION} and standalone exports); re-run the chat, or export "
            "the checkpoint with export_checkpoint() of the library version that wrote it",
            path=where,
        )


def log_reference(record: dict[str, Any], *, where: str) -> tuple[int, str]:
    """``(size, sha256)`` of a log-layout record's log prefix (``InvalidCheckpointError`` if malformed)."""
    log = record.get("log")
    if not isinstance(log, dict) or type(log.get("size")) is not int or log["size"] < 0:
        raise InvalidCheckpointError("checkpoint record has no valid 'log' reference", path=where)
    expected = log.get("sha256")
    if not isinstance(expected, str):
        raise InvalidCheckpointError("checkpoint record has no log hash", path=where)
    return log["size"], expected


def checkpoint_from_log(
    record: dict[str, Any], prefix: bytes, *, where: str, log_name: str = "the session log"
) -> CheckpointData:
    """Assemble a log-layout checkpoint from its record and the bytes of its log prefix.

    Checks the prefix's size and sha256 against the record, replays it and builds the checkpoint.
    ``log_name`` names the log in messages (a file path, or e.g. ``log chunks 0..7``).
    """
    replay = replay_log_prefix(record, prefix, where=where, log_name=log_name)
    return checkpoint_from_record(record, replay, path=where)


def replay_log_prefix(
    record: dict[str, Any],
    prefix: bytes,
    *,
    where: str,
    log_name: str = "the session log",
    base: LogReplay | None = None,
) -> LogReplay:
    """The state a record's log prefix leaves, replayed on top of ``base`` (a fork's parent state).

    The prefix's size and sha256 are checked against the record first.
    """
    size, expected = log_reference(record, where=where)
    if len(prefix) != size:
        raise CorruptCheckpointError(
            f"{log_name} holds {len(prefix)} bytes, the checkpoint needs {size} (truncated)", path=where
        )
    if hashlib.sha256(prefix).hexdigest() != expected:
        raise CorruptCheckpointError(f"{log_name} does not match the checkpoint's hash", path=where)
    replay = base if base is not None else LogReplay()
    try:
        replay.apply_bytes(prefix)
    except CorruptCheckpointError as exc:
        raise CorruptCheckpointError(f"{exc.reason} (in {log_name})", path=where) from exc
    return replay


#: what Python raises on a record of the wrong shape (a missing key, a string where a number belongs, ...)
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError, OverflowError)


@contextmanager
def reading(where: str) -> Iterator[None]:
    """Turn any failure while building a checkpoint into a ``CheckpointError`` that names ``where``.

    The one boundary of checkpoint decoding: whatever a hostile or damaged record makes Python raise
    (including ``MemoryError`` and ``RecursionError``) leaves as a ``CheckpointError``.
    """
    try:
        yield
    except ValidationError as exc:
        raise InvalidCheckpointError(summarize_validation(exc), path=where) from exc
    except CheckpointError as exc:
        if exc.path is None:  # name the checkpoint in every message
            raise type(exc)(exc.reason, path=where) from exc
        raise
    except MemoryError as exc:
        raise CorruptCheckpointError(
            "the checkpoint does not fit in memory (a record or log that expands without bound: damaged or "
            "hostile)",
            path=where,
        ) from exc
    except _MALFORMED as exc:
        raise InvalidCheckpointError(f"malformed checkpoint record: {exc!r}", path=where) from exc


def decode_checkpoint(
    record: dict[str, Any],
    *,
    where: str,
    log_prefix: Callable[[int], bytes],
    log_name: str = "the session log",
) -> CheckpointData:
    """A checkpoint from an opened record of any layout; ``log_prefix(size)`` reads a log-layout prefix.

    Inline and seed-era documents are migrated; every failure is a ``CheckpointError`` naming ``where``.
    """
    with reading(where):
        if record.get("layout") == "log":
            size, _ = log_reference(record, where=where)
            return checkpoint_from_log(record, log_prefix(size), where=where, log_name=log_name)
        from .migrations import migrate_inline

        return CheckpointData.model_validate(migrate_inline(record))


def summarize_validation(exc: ValidationError) -> str:
    """A short message listing the first schema violations."""
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
    ]
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "checkpoint does not match the schema: " + "; ".join(problems) + more


def inline_document(data: CheckpointData) -> dict[str, Any]:
    """The standalone ("inline" layout) document of a checkpoint, with its integrity hash."""
    from ..jsonable import to_jsonable

    payload = to_jsonable(data.model_dump(by_alias=True))
    payload.pop("integrity", None)
    document: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "layout": "inline"}
    document.update((key, value) for key, value in payload.items() if key not in document)
    document["integrity"] = integrity_of(document)
    return document


# -- chunked logs (the database backends) -------------------------------------------------------------------


def reference(url: str, session_id: str, checkpoint_id: str | None = None) -> str:
    """``<url>#<session>`` or ``<url>#<session>/<checkpoint id>``: how messages and ``locate`` name things."""
    return f"{url}#{session_id}" if checkpoint_id is None else f"{url}#{session_id}/{checkpoint_id}"


def check_chunk_seqs(seqs: Iterable[int], last_seq: int, *, where: str) -> None:
    """Chunks ``0..last_seq`` must all be present (``seqs`` in order); a gap is corruption."""
    count = 0
    for expected, seq in enumerate(seqs):
        if seq != expected:
            count = expected
            break
        count = expected + 1
    if count != last_seq + 1:
        raise CorruptCheckpointError(
            f"log chunk {count} of the session is missing (the checkpoint needs chunks 0..{last_seq})",
            path=where,
        )


def join_chunks(rows: Iterable[tuple[int, bytes]], last_seq: int, *, where: str) -> bytes:
    """The log prefix made of chunks ``0..last_seq`` (rows in ``seq`` order); a gap is corruption."""
    rows = list(rows)
    check_chunk_seqs((seq for seq, _ in rows), last_seq, where=where)
    return b"".join(bytes(data) for _, data in rows)


def decode_stored(
    raw: Any, seq: Any, checkpoint_id: str, log_prefix: Callable[[], bytes], *, where: str
) -> CheckpointData:
    """A checkpoint from a database row (record bytes, chunk number) and a reader of its log prefix."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise CorruptCheckpointError(f"the record is not bytes but {type(raw).__name__}", path=where)
    with reading(where):
        record = open_record(bytes(raw), where=where)
        if type(seq) is not int or seq < 0:
            raise CorruptCheckpointError(f"invalid log chunk number {seq!r}", path=where)
        chunk_seq(record, seq, checkpoint_id, where=where)
        return decode_checkpoint(
            record,
            where=where,
            log_prefix=lambda size: log_prefix(),
            log_name=f"the session log (chunks 0..{seq})",
        )


def chunk_seq(record: dict[str, Any], row_seq: int, row_id: str, *, where: str) -> int:
    """Check that a database row and its record agree on the checkpoint id and log chunk."""
    log = record.get("log")
    if record.get("layout") != "log" or not isinstance(log, dict):
        raise InvalidCheckpointError("a database checkpoint must reference the session log", path=where)
    if log.get("seq") != row_seq or record.get("checkpoint_id") != row_id:
        raise CorruptCheckpointError(
            f"the record (checkpoint {str(record.get('checkpoint_id'))[:200]!r}, log chunk "
            f"{str(log.get('seq'))[:20]}) does not belong to its row "
            f"(checkpoint {row_id!r}, chunk {row_seq})",
            path=where,
        )
    return row_seq


@dataclass
class PreparedSave:
    """A checkpoint ready to be written as one log chunk plus one record row."""

    seq: int
    chunk: bytes
    record: dict[str, Any]
    record_bytes: bytes
    encoded: EncodedCheckpoint
    size: int
    hash: Any


class ChunkedLog:
    """A writer's view of a session log kept as chunks: one chunk per checkpoint, numbered from 0.

    The chunk of checkpoint ``seq`` holds exactly the log bytes ``DeltaEncoder`` produced for it, so the log
    prefix of that checkpoint is the concatenation of chunks ``0..seq``. ``prepare`` encodes a checkpoint
    without changing any state; ``adopt`` takes it over once the backend has stored it.
    """

    def __init__(self) -> None:
        self.encoder = DeltaEncoder()
        self.next_seq = 0
        self.size = 0
        self.hash = hashlib.sha256()

    @classmethod
    def rebuild(cls, rows: Iterable[tuple[int, bytes]], latest: bytes | None, *, where: str) -> ChunkedLog:
        """The state after the stored chunks; ``latest``: the record of the newest chunk, to check them."""
        log = cls()
        rows = list(rows)
        data = join_chunks(rows, len(rows) - 1, where=where)
        if rows:
            if latest is None:
                raise CorruptCheckpointError(
                    f"log chunk {len(rows) - 1} belongs to no checkpoint", path=where
                )
            record = open_record(latest, where=where)
            size, expected_hash = log_reference(record, where=where)
            if size != len(data) or hashlib.sha256(data).hexdigest() != expected_hash:
                raise CorruptCheckpointError(
                    "the session log chunks do not match the newest checkpoint's hash; refusing to extend a "
                    "damaged log",
                    path=where,
                )
        replay = LogReplay()
        replay.apply_bytes(data, path=where)
        log.encoder.load_state(replay)
        log.next_seq = len(rows)
        log.size = len(data)
        log.hash = hashlib.sha256(data)
        return log

    def prepare(self, data: CheckpointData, *, trusted_prefix: bool) -> PreparedSave:
        encoded = self.encoder.encode(data, trusted_prefix=trusted_prefix)
        new_hash = self.hash.copy()
        new_hash.update(encoded.log_bytes)
        size = self.size + len(encoded.log_bytes)
        record = seal_record(
            encoded.record, size=size, sha256=new_hash.hexdigest(), location={"seq": self.next_seq}
        )
        return PreparedSave(
            self.next_seq, encoded.log_bytes, record, record_bytes(record), encoded, size, new_hash
        )

    def adopt(self, prepared: PreparedSave) -> None:
        self.encoder.commit(prepared.encoded)
        self.next_seq = prepared.seq + 1
        self.size = prepared.size
        self.hash = prepared.hash


# -- session ids and documents ------------------------------------------------------------------------------

SAFE_DOCUMENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def check_session_id(session_id: str, *, where: str) -> str:
    """A session id usable in every backend: relative path segments, no ``#``, ``..`` or control chars."""
    parts = session_id.split("/") if isinstance(session_id, str) else []
    if (
        not parts
        or len(session_id) > 1000
        or any(p in ("", ".", "..") for p in parts)
        or "#" in session_id
        or any(ord(c) < 32 for c in session_id)
    ):
        raise CheckpointSaveError(f"invalid session id {str(session_id)[:200]!r}", path=where)
    return session_id


def check_document_name(name: str, *, where: str) -> str:
    """Document names are plain file names (``session_metadata.json``), the same rule in every backend."""
    if not isinstance(name, str) or not SAFE_DOCUMENT_NAME.match(name) or name.startswith("."):
        raise CheckpointSaveError(f"unsafe document name {str(name)[:200]!r}", path=where)
    return name


def encode_document(name: str, value: Any) -> bytes:
    """A document's stored bytes: UTF-8 text for ``.txt`` names, JSON otherwise."""
    if name.endswith(".txt"):
        return str(value).encode("utf-8")
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str)


def decode_document(name: str, raw: bytes, *, where: str) -> Any:
    """A document from its stored bytes (``CorruptCheckpointError`` naming ``where`` if not JSON)."""
    if isinstance(raw, str):  # a database row holding text where the library writes bytes
        raw = raw.encode("utf-8", errors="surrogatepass")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise CorruptCheckpointError(f"the document is not bytes but {type(raw).__name__}", path=where)
    if name.endswith(".txt"):
        return bytes(raw).decode("utf-8", errors="replace")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptCheckpointError(f"not valid JSON: {exc}", path=where) from exc
