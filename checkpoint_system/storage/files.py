"""The file store: one session directory, one JSON file per checkpoint, one shared append-only log.

Layout::

    <session>/checkpoints/checkpoint_<step>_<context>_<timestamp>.json   small checkpoint records
    <session>/checkpoints/message_log.jsonl                              strings, configs, messages
    <session>/session_metadata.json, chat_history.json, ...             written by CheckpointManager

Crash safety: a checkpoint's log bytes are appended before its record is published, and records are
published by an atomic, no-clobber link of a fully written temporary file. A killed process therefore
leaves only complete checkpoints; a torn log tail belongs to no checkpoint and is cut on the next open.
With ``durability="fsync"`` every write is also flushed to the device (survives power loss).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from ..errors import (
    CheckpointNotFoundError,
    CheckpointSaveError,
    CorruptCheckpointError,
    InvalidCheckpointError,
    SessionLockedError,
    UnsupportedFormatError,
)
from ..model import FORMAT_NAME, FORMAT_VERSION, CheckpointData
from .delta import DeltaEncoder, LogReplay, checkpoint_from_record, dumps, dumps_sorted

try:  # POSIX advisory locks; on other platforms a session is not locked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

Durability = Literal["crash", "fsync"]

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "message_log.jsonl"
LOCK_FILE = ".writer.lock"
_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)_.*\.json$")
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def checkpoint_file_name(step_number: int, context: str, timestamp: str) -> str:
    """``checkpoint_<step>_<context>_<YYYYMMDD_HHMMSS_ffffff>.json`` from an ISO timestamp.

    The step number is unique within a session (one writer per session), so names never collide.
    """
    safe_context = re.sub(r"[^A-Za-z0-9_-]+", "-", context).strip("-") or "checkpoint"
    return f"checkpoint_{step_number}_{safe_context}_{_file_timestamp(timestamp)}.json"


def _file_name_for(data: CheckpointData) -> str:
    """The data's own id when it is a well-formed id for its step, else a fresh name."""
    own = f"{data.checkpoint_id}.json"
    match = _CHECKPOINT_NAME.match(own)
    if match and _SAFE_FILE_NAME.match(own) and int(match.group(1)) == data.step_number:
        return own
    return checkpoint_file_name(data.step_number, data.context, data.timestamp)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes, *, overwrite: bool, fsync: bool = False) -> None:
    """Publish ``data`` at ``path`` all at once; with ``overwrite=False`` an existing file is never touched."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError as exc:
        raise CheckpointSaveError("a file with this name already exists; refusing to overwrite", path=path) from exc
    finally:
        if not overwrite or tmp.exists():
            tmp.unlink(missing_ok=True)
    if fsync:
        _fsync_dir(path.parent)


class FileSessionStore:
    """Stores the checkpoints of one session directory. One writer per session (enforced by a lock)."""

    def __init__(self, session_dir: str | Path, *, durability: Durability = "crash") -> None:
        if durability not in ("crash", "fsync"):
            raise ValueError(f"durability must be 'crash' or 'fsync', not {durability!r}")
        self.root = Path(session_dir)
        self.checkpoint_dir = self.root / CHECKPOINT_DIR
        self.durability = durability
        self._encoder: DeltaEncoder | None = None
        self._log_fd: int | None = None
        self._log_size = 0
        self._log_hash = hashlib.sha256()
        self._lock_fd: int | None = None

    # -- writing ------------------------------------------------------------------------------------------
    def _open_for_writing(self) -> DeltaEncoder:
        if self._encoder is not None:
            return self._encoder
        if self.root.exists() and not self.root.is_dir():
            raise CheckpointSaveError("session path exists and is not a directory", path=self.root)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        log_path = self.checkpoint_dir / LOG_FILE
        fd = os.open(log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        encoder = DeltaEncoder()
        try:
            existing = _read_all(fd)
            complete = existing[: existing.rfind(b"\n") + 1]
            if len(complete) != len(existing):  # a crashed writer's torn record, referenced by nothing
                os.ftruncate(fd, len(complete))
            replay = LogReplay()
            replay.apply_bytes(complete, path=str(log_path))
            encoder.load_state(replay)
        except BaseException:
            os.close(fd)
            raise
        self._log_fd, self._log_size = fd, len(complete)
        self._log_hash = hashlib.sha256(complete)
        self._encoder = encoder
        return encoder

    def _acquire_lock(self) -> None:
        if fcntl is None or self._lock_fd is not None:
            return
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SessionLockedError(
                "another process or CheckpointManager is writing this session; use a new session directory",
                path=self.root,
            ) from exc
        self._lock_fd = fd

    def save(self, data: CheckpointData, *, trusted_prefix: bool = False) -> Path:
        """Write one checkpoint; returns its path. Raises ``CheckpointSaveError`` on any I/O failure."""
        try:
            encoder = self._open_for_writing()
            encoded = encoder.encode(data, trusted_prefix=trusted_prefix)
            fsync = self.durability == "fsync"
            assert self._log_fd is not None
            if encoded.log_bytes:
                try:
                    _write_all(self._log_fd, encoded.log_bytes)
                    if fsync:
                        os.fsync(self._log_fd)
                except BaseException:
                    os.ftruncate(self._log_fd, self._log_size)
                    raise
                self._log_size += len(encoded.log_bytes)
                self._log_hash.update(encoded.log_bytes)
            record = encoded.record
            record.update(
                format=FORMAT_NAME,
                format_version=FORMAT_VERSION,
                layout="log",
                log={"file": LOG_FILE, "size": self._log_size, "sha256": self._log_hash.hexdigest()},
            )
            record["integrity"] = hashlib.sha256(dumps_sorted(record)).hexdigest()
            path = self.checkpoint_dir / _file_name_for(data)
            write_file_atomic(path, dumps(record), overwrite=False, fsync=fsync)
            encoder.commit(encoded)
            return path
        except CheckpointSaveError:
            raise
        except OSError as exc:
            raise CheckpointSaveError(f"could not write checkpoint: {exc}", path=self.checkpoint_dir) from exc

    def write_json(self, name: str, value: Any) -> Path:
        """Atomically (re)write a session-level JSON document such as ``session_metadata.json``."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / name
        data = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str)
        write_file_atomic(path, data, overwrite=True, fsync=self.durability == "fsync")
        return path

    def write_text(self, name: str, text: str) -> Path:
        """Atomically (re)write a session-level text document."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / name
        write_file_atomic(path, text.encode("utf-8"), overwrite=True, fsync=self.durability == "fsync")
        return path

    def read_json(self, name: str) -> Any:
        """A session-level JSON document, or None when absent."""
        path = self.root / name
        if not path.is_file():
            return None
        try:
            return orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise CorruptCheckpointError(f"not valid JSON: {exc}", path=path) from exc

    def close(self) -> None:
        """Release the log and the writer lock (a later save reopens them)."""
        for attr in ("_log_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        self._encoder = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- reading ------------------------------------------------------------------------------------------
    def list_checkpoints(self) -> list[str]:
        """Checkpoint ids of this session in step order."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = []
        for entry in os.scandir(self.checkpoint_dir):
            match = _CHECKPOINT_NAME.match(entry.name)
            if match and entry.is_file():
                found.append((int(match.group(1)), entry.name[:-5]))
        return [name for _, name in sorted(found)]

    def path_of(self, checkpoint_id: str) -> Path:
        """The file of a checkpoint id (a bare id, a file name, or a path)."""
        candidate = Path(checkpoint_id)
        if candidate.suffix == ".json" and (candidate.is_absolute() or len(candidate.parts) > 1):
            return candidate
        name = candidate.name if candidate.suffix == ".json" else f"{candidate.name}.json"
        return self.checkpoint_dir / name

    def load(self, checkpoint_id: str) -> CheckpointData:
        """Load a checkpoint of this session by id or path."""
        path = self.path_of(checkpoint_id)
        if not path.exists():
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r} in session {self.root}", path=path)
        return read_checkpoint_file(path)

    def next_step_number(self) -> int:
        """One past the highest step on disk (0 for a new session)."""
        ids = self.list_checkpoints()
        return int(_CHECKPOINT_NAME.match(ids[-1] + ".json").group(1)) + 1 if ids else 0  # type: ignore[union-attr]


def _file_timestamp(iso_timestamp: str) -> str:
    digits = re.sub(r"[^0-9]", "", iso_timestamp)[:20]
    return f"{digits[:8]}_{digits[8:14]}_{digits[14:20]}" if len(digits) >= 14 else digits or "0"


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_prefix(path: Path, size: int, checkpoint: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(size)
    except FileNotFoundError as exc:
        raise CorruptCheckpointError(f"the session log {path.name} is missing", path=checkpoint) from exc
    if len(data) != size:
        raise CorruptCheckpointError(
            f"the session log {path.name} holds {len(data)} bytes, the checkpoint needs {size} (truncated)",
            path=checkpoint,
        )
    return data


def parse_checkpoint_bytes(raw: bytes, *, path: Path) -> dict[str, Any]:
    """Parse and integrity-check a checkpoint document; raises a ``CheckpointError`` naming ``path``."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = "empty file" if not raw.strip() else "truncated or corrupt JSON"
        raise CorruptCheckpointError(f"not a readable checkpoint ({hint}: {exc})", path=path) from exc
    if not isinstance(record, dict):
        raise InvalidCheckpointError("not a checkpoint file (the JSON document is not an object)", path=path)
    if record.get("format") != FORMAT_NAME:
        if "checkpoint_id" in record and "messages" in record:
            return record  # a seed-era checkpoint without format marker: migrated by the caller
        raise InvalidCheckpointError("not a checkpoint file (no checkpoint_system format marker)", path=path)
    version = record.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise InvalidCheckpointError(f"invalid format_version {version!r}", path=path)
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"format version {version} is newer than this library supports ({FORMAT_VERSION}); upgrade "
            "checkpoint_system to read it",
            path=path,
        )
    expected = record.pop("integrity", None)
    if not isinstance(expected, str):
        raise CorruptCheckpointError("integrity hash missing", path=path)
    actual = hashlib.sha256(dumps_sorted(record)).hexdigest()
    if actual != expected:
        raise CorruptCheckpointError("integrity hash mismatch: the file was modified or damaged", path=path)
    record["integrity"] = expected
    return record


def read_checkpoint_file(path: str | Path) -> CheckpointData:
    """Load any checkpoint file (log layout, standalone inline layout, or seed-era format)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointNotFoundError("is a directory; expected a checkpoint .json file", path=path)
    if not path.is_file():
        raise CheckpointNotFoundError("checkpoint file does not exist", path=path)
    record = parse_checkpoint_bytes(path.read_bytes(), path=path)
    try:
        if record.get("layout") == "log":
            return _load_log_layout(record, path)
        from .migrations import migrate_inline

        return CheckpointData.model_validate(migrate_inline(record))
    except ValidationError as exc:
        raise InvalidCheckpointError(_summarize(exc), path=path) from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidCheckpointError(f"malformed checkpoint record: {exc!r}", path=path) from exc


def _load_log_layout(record: dict[str, Any], path: Path) -> CheckpointData:
    log = record.get("log")
    if not isinstance(log, dict) or not isinstance(log.get("size"), int) or log["size"] < 0:
        raise InvalidCheckpointError("checkpoint record has no valid 'log' reference", path=path)
    name = log.get("file")
    if not isinstance(name, str) or not _SAFE_FILE_NAME.match(name) or name.startswith("."):
        raise InvalidCheckpointError(f"unsafe log file name {name!r}", path=path)
    data = _read_prefix(path.parent / name, log["size"], path)
    if hashlib.sha256(data).hexdigest() != log.get("sha256"):
        raise CorruptCheckpointError(f"the session log {name} does not match the checkpoint's hash", path=path)
    replay = LogReplay()
    replay.apply_bytes(data, path=str(path.parent / name))
    return checkpoint_from_record(record, replay, path=str(path))


def _summarize(exc: ValidationError) -> str:
    problems = [f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]]
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "checkpoint does not match the schema: " + "; ".join(problems) + more
