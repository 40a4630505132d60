"""The file store: one session directory, one JSON file per checkpoint, one shared append-only log.

Layout::

    <session>/checkpoints/checkpoint_<step>_<context>_<timestamp>.json   small checkpoint records
    <session>/checkpoints/message_log.jsonl                              strings, configs, messages
    <session>/checkpoints/committed.jsonl                                one line per committed record
    <session>/session_metadata.json, chat_history.json, ...             written by CheckpointManager

Crash safety: a checkpoint's log bytes are appended first, then a line of ``committed.jsonl`` commits it,
then its record file is created under its final name with one write (no temporary and no rename: creating
files is the costliest step on a busy disk), by a writer process unless ``durability="fsync"``. A killed
writer leaves at worst a log tail no record refers to and a committed record whose file is missing or
short; the next open (for writing, or by a reader once no writer holds the session) rewrites such files
from ``committed.jsonl``, so every listed checkpoint is complete. If a save fails (the name exists, the disk
is full), what it appended is cut off again, so the log never holds records the writer's state does not
know of. With ``durability="fsync"`` every write is also flushed to the
device (survives power loss).

``export_checkpoint`` writes a standalone "inline" document (the whole ``CheckpointData``, no log), and
``read_checkpoint_file`` reads all three kinds: log-layout records, inline documents and seed-era files.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import stat
import warnings
from pathlib import Path
from typing import Any

import orjson

from ..errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CorruptCheckpointError,
    InvalidCheckpointError,
    SessionLockedError,
    from_os_error,
)
from ..model import CheckpointData
from .delta import DeltaEncoder, LogReplay, dumps
from .file_publisher import FilePublisher, publishers_of
from .protocol import Durability
from .record_file_writer import write_all as _write_all  # a module global: tests inject errors
from .records import decode_checkpoint, inline_document, open_record, reading, record_bytes, seal_record

try:  # POSIX advisory locks; on other platforms a session is not locked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "message_log.jsonl"
#: One line per committed checkpoint (its sealed record): the commit point, and what repairs files.
COMMIT_FILE = "committed.jsonl"
LOCK_FILE = ".writer.lock"
_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)_.*\.json$")
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_STALE_TEMP = re.compile(r"^\.checkpoint_.*\.tmp$")
#: A checkpoint file or session document larger than this is refused unread (a record is ~1 KB; a standalone
#: export holds a whole chat): a hostile or damaged file must not make a reader allocate what it claims.
MAX_FILE_BYTES = 1 << 30
#: Opening for reading never blocks (a FIFO) and never takes a terminal as controlling terminal.
_READ_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
)
#: errno values of a file system that cannot make hard links (the no-clobber publish falls back to rename).
_NO_LINK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EMLINK")
    if hasattr(errno, name)
)


def usable_path(path: str | Path) -> Path:
    """``path`` as a ``Path``; one holding a NUL character (which no OS call accepts) is a
    ``CheckpointNotFoundError`` here, not a ``ValueError`` from whichever call meets it first."""
    if "\0" in os.fspath(path):
        raise CheckpointNotFoundError(
            "not a usable path (it holds a NUL character)", path=repr(os.fspath(path))
        )
    return Path(path)


def checkpoint_file_name(step_number: int, context: str, timestamp: str) -> str:
    """``checkpoint_<step>_<context>_<YYYYMMDD_HHMMSS_ffffff>.json`` from an ISO timestamp.

    The step number is unique within a session (one writer per session), so names never collide.
    """
    return f"checkpoint_{step_number}_{_safe_context(context)}_{_file_timestamp(timestamp)}.json"


@functools.lru_cache(maxsize=256)
def _safe_context(context: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", context).strip("-") or "checkpoint"


def _file_name_for(data: CheckpointData) -> str:
    """The data's own id when it is a well-formed id for its step, else a fresh name."""
    own = f"{data.checkpoint_id}.json"
    match = _CHECKPOINT_NAME.match(own)
    if match and _SAFE_FILE_NAME.match(own) and int(match.group(1)) == data.step_number:
        return own
    return checkpoint_file_name(data.step_number, data.context, data.timestamp)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_file(path: Path, data: bytes, *, fsync: bool) -> None:
    """Create ``path`` (``FileExistsError`` if it exists) holding ``data``; a failed write removes it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)  # ours (O_EXCL): never leave a torn file behind
        raise
    os.close(fd)


def _write_temp(path: Path, data: bytes, *, fsync: bool) -> Path:
    """A fully written temporary file next to ``path`` (unique name, removed again if writing fails)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    _create_file(tmp, data, fsync=fsync)  # removes what it created if writing fails
    return tmp


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Give the complete file ``tmp`` the name ``path``, unless ``path`` exists (``CheckpointSaveError``)."""
    try:
        os.link(tmp, path)
    except FileExistsError as exc:
        raise CheckpointSaveError(
            "a file with this name already exists; refusing to overwrite", path=path
        ) from exc
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        # No hard links on this file system: check, then rename (atomic, but may race another writer).
        if os.path.lexists(path):
            raise CheckpointSaveError(
                "a file with this name already exists; refusing to overwrite", path=path
            ) from exc
        os.rename(tmp, path)


def write_file_atomic(path: Path, data: bytes, *, overwrite: bool, fsync: bool = False) -> None:
    """Publish ``data`` at ``path`` at once; with ``overwrite=False`` an existing file is never touched."""
    tmp = _write_temp(path, data, fsync=fsync)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    finally:
        _unlink_quietly(tmp)
    if fsync:
        _fsync_dir(path.parent)


def export_checkpoint(data: CheckpointData, path: str | Path, *, fsync: bool = False) -> Path:
    """Write ``data`` as one standalone checkpoint file (no session log needed to read it).

    The file is published atomically and never replaces an existing file (``CheckpointSaveError``).
    ``read_checkpoint_file`` loads it back equal to ``data`` (with ``integrity`` set to the file's hash).
    """
    path = Path(path)
    try:
        body = orjson.dumps(inline_document(data), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        body = dumps(inline_document(data))  # sanitising fallback (huge ints, lone surrogates)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, body, overwrite=False, fsync=fsync)
    except CheckpointSaveError:
        raise
    except OSError as exc:
        raise CheckpointSaveError(f"could not export checkpoint: {exc}", path=path) from exc
    return path


_RECORD_LINE = b'{"k":'


def _record_line(bare_record: bytes, size: int, name: str) -> bytes:
    """The line of ``committed.jsonl`` that commits a checkpoint.

    It holds the record as the encoder made it (before sealing), its log prefix size and its file name:
    enough to rebuild the sealed record exactly (the log hash and the integrity hash are recomputed), at
    about half the size of the sealed record.
    """
    return _RECORD_LINE + bare_record + b',"n":' + str(size).encode() + b',"f":' + orjson.dumps(name) + b"}\n"


def _committed_records(committed: bytes) -> dict[str, tuple[dict[str, Any], int]]:
    """File name -> (bare record, log prefix size) of every checkpoint ``committed.jsonl`` commits."""
    records: dict[str, tuple[dict[str, Any], int]] = {}
    for line in committed.split(b"\n"):
        if not line.startswith(_RECORD_LINE):
            continue
        try:
            entry = orjson.loads(line)
            name, record, size = entry["f"], entry["k"], entry["n"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # a torn last line: that checkpoint was never committed
        if (
            isinstance(name, str)
            and _CHECKPOINT_NAME.match(name)
            and _SAFE_FILE_NAME.match(name)
            and isinstance(record, dict)
            and type(size) is int
        ):
            records[name] = (record, size)
    return records


def _sealed(record: dict[str, Any], size: int, log: bytes) -> bytes:
    prefix = log[:size]
    return record_bytes(
        seal_record(record, size=size, sha256=hashlib.sha256(prefix).hexdigest(), location={"file": LOG_FILE})
    )


def _open_commit_file(checkpoint_dir: Path) -> int:
    """The commit file, opened for appending; a torn last line (a killed writer's) is cut."""
    fd = os.open(checkpoint_dir / COMMIT_FILE, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        existing = _read_all(fd)
        complete = existing.rfind(b"\n") + 1
        if complete != len(existing):
            os.ftruncate(fd, complete)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _repair_records(checkpoint_dir: Path, *, fsync: bool) -> None:
    """After a killed writer: write the files of committed records that are missing or torn.

    A torn file is a prefix of the record it should hold (the writer was killed while creating it); a file
    under a committed name that is neither the record nor a prefix of it is someone else's and is left
    alone, as is every file no commit line names.
    """
    try:
        committed = _committed_records((checkpoint_dir / COMMIT_FILE).read_bytes())
    except FileNotFoundError:
        return  # a session written before commit files existed: its records were published atomically
    log: bytes | None = None
    for name, (record, size) in committed.items():
        path = checkpoint_dir / name
        try:
            existing: bytes | None = path.read_bytes()
        except FileNotFoundError:
            existing = None
        except OSError:
            continue
        if existing:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                if orjson.loads(existing).get("checkpoint_id") == record.get("checkpoint_id"):
                    continue
        if log is None:
            log = (checkpoint_dir / LOG_FILE).read_bytes()
        if len(log) < size:
            continue
        sealed = _sealed(record, size, log)
        if existing is None or sealed.startswith(existing):
            write_file_atomic(path, sealed, overwrite=True, fsync=fsync)


class FileSessionStore:
    """Stores the checkpoints of one session directory. One writer per session (enforced by a lock)."""

    def __init__(
        self, session_dir: str | Path, *, durability: Durability = "crash", session_id: str | None = None
    ) -> None:
        if durability not in ("crash", "fsync"):
            raise ValueError(f"durability must be 'crash' or 'fsync', not {durability!r}")
        self.root = usable_path(session_dir)
        self._session_id = session_id or self.root.name
        self.checkpoint_dir = self.root / CHECKPOINT_DIR
        self.durability = durability
        self._encoder: DeltaEncoder | None = None
        self._log_fd: int | None = None
        self._log_size = 0
        self._log_hash = hashlib.sha256()
        self._lock_fd: int | None = None
        self._commit_fd: int | None = None
        self._commit_size = 0
        #: committed records whose file this store must create itself: with "fsync", or after the
        #: writer process failed (retried at every save and flush until they exist)
        self._unpublished: list[tuple[Path, bytes]] = []
        #: file names in the checkpoint directory when the writer opened it, plus those it saved since
        self._names: set[str] = set()
        self._publisher = FilePublisher(
            functools.partial(_create_file, fsync=False), directory=os.path.abspath(self.checkpoint_dir)
        )
        self._recovered_at: tuple[int, int] | None = None  # (log size, mtime) of the last recovery

    # -- writing ------------------------------------------------------------------------------------------
    def _open_for_writing(self) -> DeltaEncoder:
        if self._encoder is not None:
            return self._encoder
        if self.root.exists() and not self.root.is_dir():
            raise CheckpointSaveError("session path exists and is not a directory", path=self.root)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._remove_stale_temporaries()
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
            _repair_records(self.checkpoint_dir, fsync=self.durability == "fsync")
            self._commit_fd = _open_commit_file(self.checkpoint_dir)
            self._commit_size = os.fstat(self._commit_fd).st_size
            self._names = set(os.listdir(self.checkpoint_dir))
            if self.durability == "fsync":
                os.fsync(fd)
                _fsync_dir(self.checkpoint_dir)
                _fsync_dir(self.root)
        except BaseException:
            os.close(fd)
            raise
        self._log_fd, self._log_size = fd, len(complete)
        self._log_hash = hashlib.sha256(complete)
        self._encoder = encoder
        return encoder

    def _remove_stale_temporaries(self) -> None:
        """Temporary record files of a writer that was killed (only the lock holder writes records)."""
        try:
            for entry in os.scandir(self.checkpoint_dir):
                if _STALE_TEMP.match(entry.name):
                    _unlink_quietly(Path(entry.path))
        except OSError:
            pass

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

    def _forget_log(self) -> None:
        """Drop the in-memory log state; the next save re-reads the log from disk (keeps the lock)."""
        self._publisher.wait()  # the reopening repair must not race the writer's files
        for fd in (self._log_fd, self._commit_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._log_fd = self._commit_fd = None
        self._encoder = None

    @property
    def session_id(self) -> str:
        """The directory's name, or its path relative to the ``FileStore`` root that opened it."""
        return self._session_id

    def save(self, data: CheckpointData, *, trusted_prefix: bool = False) -> str:
        """Write one checkpoint; returns its id (the file's stem, see ``path_of``).

        Order: the checkpoint's log bytes are appended, then one line of ``committed.jsonl`` commits it
        (the record as the encoder made it: enough to rebuild the record file exactly), then its record file
        is created under its final name. With the default durability ("crash") the file is created by a
        writer process (``FilePublisher``; creating a file is the costliest step on a busy disk), with
        "fsync" at once and flushed to the device. A writer killed in between leaves at worst an unreferenced
        log tail, or a committed record whose file is missing or short: the next open (for writing, or by a
        reader once no writer holds the session) rewrites such files from ``committed.jsonl`` and cuts the
        rest, so every listed checkpoint is complete.

        Raises ``CheckpointSaveError`` on any I/O failure, if the checkpoint's file already exists (files are
        never overwritten) or if the step number is negative; ``SessionLockedError`` if another writer holds
        the session. After a failure the session on disk is unchanged and the store can save again. (A file
        that someone else creates under the name of a pending checkpoint while this writer runs is left
        alone too; ``flush`` reports it.)
        """
        if data.step_number < 0:
            raise CheckpointSaveError(
                f"step_number must be >= 0, got {data.step_number}", path=self.checkpoint_dir
            )
        name = _file_name_for(data)  # a plain string on this path: pathlib costs ~10 us per checkpoint
        committed = False
        log_written = commit_written = False
        old_size, old_commit_size = self._log_size, self._commit_size
        if self._unpublished or self._publisher.has_failures:
            self._publish_unpublished()  # files of earlier saves the writer could not create: retry, or raise
        try:
            encoder = self._open_for_writing()
            old_size, old_commit_size = self._log_size, self._commit_size
            if name in self._names:  # no lookup on disk: it would wait for the writer's creates
                raise CheckpointSaveError(
                    "a file with this name already exists; refusing to overwrite",
                    path=self.checkpoint_dir / name,
                )
            encoded = encoder.encode(data, trusted_prefix=trusted_prefix)
            fsync = self.durability == "fsync"
            assert self._log_fd is not None and self._commit_fd is not None
            new_hash = self._log_hash.copy()
            new_hash.update(encoded.log_bytes)
            prefix_size = old_size + len(encoded.log_bytes)
            line = _record_line(dumps(encoded.record), prefix_size, name)
            record = seal_record(
                encoded.record, size=prefix_size, sha256=new_hash.hexdigest(), location={"file": LOG_FILE}
            )
            sealed = record_bytes(record)
            log_written = True
            _write_all(self._log_fd, encoded.log_bytes)
            if fsync:
                os.fsync(self._log_fd)
            commit_written = True
            _write_all(self._commit_fd, line)  # the commit point
            committed = True
            self._names.add(name)
            self._log_size, self._log_hash = prefix_size, new_hash
            self._commit_size = old_commit_size + len(line)
            encoder.commit(encoded)
            if fsync:
                self._unpublished.append((self.checkpoint_dir / name, sealed))
            else:
                self._publisher.submit(name, sealed)
        except BaseException as exc:
            self._undo_uncommitted(committed, commit_written, log_written, old_size, old_commit_size)
            if isinstance(exc, CheckpointError):
                raise
            if isinstance(exc, (OSError, TypeError, ValueError)):
                raise CheckpointSaveError(
                    f"could not write checkpoint: {exc}", path=self.checkpoint_dir / name
                ) from exc
            raise
        if fsync:  # committed: flush the commit, then create the file now (retried later if it fails)
            try:
                os.fsync(self._commit_fd)
            except OSError as exc:
                raise CheckpointSaveError(
                    f"could not flush the commit to the device: {exc}", path=self.checkpoint_dir / name
                ) from exc
            self._publish_unpublished()
        return name[: -len(".json")]

    def _undo_uncommitted(
        self,
        committed: bool,
        commit_written: bool,
        log_written: bool,
        old_size: int,
        old_commit_size: int,
    ) -> None:
        """After a failed save: take back what it appended before its commit point."""
        if committed:  # interrupted after the commit point: re-read the log next time
            self._forget_log()
        else:  # it belongs to no checkpoint
            if commit_written:
                self._truncate(self._commit_fd, old_commit_size)
            if log_written:
                self._truncate(self._log_fd, old_size)

    def flush(self) -> None:
        """Wait until every saved checkpoint's file exists.

        Raises ``CheckpointSaveError`` if a file cannot be created (it is tried again at the next save and
        flush; its checkpoint stays committed, and the file is rewritten when the session is next opened).
        """
        self._publisher.wait()
        for other in publishers_of(self._publisher.key):  # another store object writing this session
            if other is not self._publisher:
                other.wait()
        self._publish_unpublished()

    def _publish_unpublished(self) -> None:
        """Create, in this thread, the committed record files still missing: with "fsync" the one just
        saved, and those the writer process could not create (a full disk may have room again).

        Raises ``CheckpointSaveError`` for files that still fail (kept for the next try) and, once, for a
        name someone else's file took meanwhile (that file is left alone).
        """
        self._unpublished.extend(self._publisher.failures())
        fsync = self.durability == "fsync"
        still: list[tuple[Path, bytes]] = []
        first_error: OSError | None = None
        foreign: list[Path] = []
        for path, data in self._unpublished:
            try:
                _create_file(path, data, fsync=fsync)
                if fsync:
                    _fsync_dir(path.parent)
            except FileExistsError:
                with contextlib.suppress(OSError):
                    if path.read_bytes() == data:
                        continue
                foreign.append(path)
            except OSError as exc:
                still.append((path, data))
                first_error = first_error or exc
        self._unpublished = still
        if foreign:
            raise CheckpointSaveError(
                "a file with this name appeared before the checkpoint's file was created; it is left alone "
                f"(the checkpoint is committed in {COMMIT_FILE})",
                path=foreign[0],
            )
        if still:
            path = still[0][0]
            more = f" (and {len(still) - 1} more)" if len(still) > 1 else ""
            raise CheckpointSaveError(
                f"could not create the checkpoint file{more}: {first_error}; it is tried again at the next "
                f"save, and rewritten from {COMMIT_FILE} when the session is next opened",
                path=path,
            )

    def _recover_unpublished(self) -> None:
        """A reader's repair after a killed writer: publish records the log committed but no file has.

        Only when no writer holds the session (a live writer publishes its own files).
        """
        commit_path = self.checkpoint_dir / COMMIT_FILE
        try:
            stat = commit_path.stat()
        except OSError:
            return
        if (
            self._recovered_at == (stat.st_size, stat.st_mtime_ns)
            or self._lock_fd is not None
            or fcntl is None
        ):
            return
        try:
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # a live writer: it publishes its own files
            with contextlib.suppress(CheckpointError, OSError):
                _repair_records(self.checkpoint_dir, fsync=self.durability == "fsync")
            self._recovered_at = (stat.st_size, stat.st_mtime_ns)
        finally:
            os.close(fd)  # releases the lock

    def _truncate(self, fd: int | None, size: int) -> None:
        try:
            if fd is None:
                raise OSError("not open")
            os.ftruncate(fd, size)
        except OSError:
            self._forget_log()  # stray bytes may remain: re-read (and re-cut) the files on the next save

    def write_document(self, name: str, value: Any) -> None:
        """Atomically (re)write ``<session>/<name>``: text for ``.txt`` names, indented JSON otherwise."""
        if not _SAFE_FILE_NAME.match(name) or name.startswith("."):
            raise CheckpointSaveError(f"unsafe document name {name!r}", path=self.root)
        path = self.root / name
        try:
            if name.endswith(".txt"):
                data = str(value).encode("utf-8")
            else:
                data = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str)
        except (TypeError, ValueError) as exc:
            raise CheckpointSaveError(f"could not encode document: {exc}", path=path) from exc
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_file_atomic(path, data, overwrite=True, fsync=self.durability == "fsync")
        except OSError as exc:
            raise CheckpointSaveError(f"could not write document: {exc}", path=path) from exc

    def read_document(self, name: str) -> Any:
        """A session document (text for ``.txt`` names, else parsed JSON), or None when absent."""
        path = self.root / name
        if not _SAFE_FILE_NAME.match(name):
            return None
        try:
            raw = read_regular_file(path, what="session document")
        except CheckpointNotFoundError:
            return None
        if name.endswith(".txt"):
            return raw.decode("utf-8", errors="replace")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CorruptCheckpointError(f"not valid JSON: {exc}", path=path) from exc

    def list_documents(self) -> list[str]:
        """Names of the session's documents (the regular files next to ``checkpoints/``), sorted."""
        try:
            with os.scandir(self.root) as entries:
                return sorted(
                    entry.name
                    for entry in entries
                    if _SAFE_FILE_NAME.match(entry.name)
                    and not entry.name.startswith(".")
                    and entry.is_file(follow_symlinks=False)
                )
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise from_os_error(exc, "cannot list the session's documents", self.root) from exc

    def locate(self, checkpoint_id: str) -> str:
        """The checkpoint's file path (loadable from anywhere with ``read_checkpoint_file``)."""
        self.flush()
        return str(self.path_of(checkpoint_id))

    def close(self) -> None:
        """Wait for pending record files, then release the log and the writer lock (a later save reopens
        them). A record file that cannot be created is reported with a ``RuntimeWarning``: its checkpoint
        is committed and the file is rewritten when the session is next opened."""
        self._publisher.close()
        try:
            self._publish_unpublished()
        except CheckpointSaveError as exc:
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
        self._unpublished = []
        for attr in ("_log_fd", "_commit_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        self._encoder = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- reading ------------------------------------------------------------------------------------------
    def list_checkpoints(self) -> list[str]:
        """Checkpoint ids of this session in step order."""
        self.flush()
        self._recover_unpublished()
        found = []
        try:
            with os.scandir(self.checkpoint_dir) as entries:
                for entry in entries:
                    match = _CHECKPOINT_NAME.match(entry.name)
                    if match and entry.is_file():
                        found.append((int(match.group(1)), entry.name[:-5]))
        except FileNotFoundError:
            return []  # a session nothing was saved in yet
        except NotADirectoryError as exc:
            if os.path.isdir(self.root):
                raise CorruptCheckpointError(
                    f"{CHECKPOINT_DIR} is not a directory; a session keeps its checkpoints in one",
                    path=self.checkpoint_dir,
                ) from exc
            raise CheckpointNotFoundError("not a session directory", path=self.root) from exc
        except OSError as exc:
            raise from_os_error(exc, "cannot list the session's checkpoints", self.checkpoint_dir) from exc
        return [name for _, name in sorted(found)]

    def path_of(self, checkpoint_id: str | Path) -> Path:
        """The file of a checkpoint id (a bare id, a file name in this session, or a path to a .json file).

        A checkpoint of this writer whose file the writer process has not created yet is waited for.
        """
        candidate = Path(checkpoint_id)
        if candidate.suffix == ".json" and (candidate.is_absolute() or len(candidate.parts) > 1):
            path = candidate
        else:
            path = self.checkpoint_dir / (
                candidate.name if candidate.suffix == ".json" else f"{candidate.name}.json"
            )
        if any(path.name in publisher.pending for publisher in publishers_of(self._publisher.key)):
            self.flush()
        return path

    def load(self, checkpoint_id: str | Path) -> CheckpointData:
        """Load a checkpoint of this session by id, file name or path."""
        path = self.path_of(checkpoint_id)
        if not os.path.lexists(path) and path.parent == self.checkpoint_dir:
            self.list_checkpoints()  # publishes what this writer, or a killed one, left unpublished
        if not os.path.lexists(path):
            raise CheckpointNotFoundError(
                f"no checkpoint {checkpoint_id!r} in session {self.root}", path=path
            )
        return read_checkpoint_file(path)

    def next_step_number(self) -> int:
        """One past the highest step on disk (0 for a new session)."""
        ids = self.list_checkpoints()
        return int(_CHECKPOINT_NAME.match(ids[-1] + ".json").group(1)) + 1 if ids else 0  # type: ignore[union-attr]


def _file_timestamp(iso_timestamp: str) -> str:
    """``YYYYMMDD_HHMMSS_ffffff`` from the digits of an ISO timestamp."""
    t = iso_timestamp
    if len(t) >= 26 and t[4] == t[7] == "-" and t[10] == "T" and t[19] == ".":  # utc_timestamp()'s form
        stamp = f"{t[0:4]}{t[5:7]}{t[8:10]}_{t[11:13]}{t[14:16]}{t[17:19]}_{t[20:26]}"
        if stamp[:8].isdigit() and stamp[9:15].isdigit() and stamp[16:].isdigit():
            return stamp
    digits = re.sub(r"[^0-9]", "", iso_timestamp)[:20]
    return f"{digits[:8]}_{digits[8:14]}_{digits[14:20]}" if len(digits) >= 14 else digits or "0"


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_prefix(path: Path, size: int, checkpoint: Path) -> bytes:
    """The first ``size`` bytes of the session log ``path``, for the checkpoint file ``checkpoint``.

    ``size`` comes from the checkpoint's record: it is checked against the log's actual size before anything
    is read or allocated, so a record that claims a huge log is refused, not obeyed.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError as exc:
        raise CorruptCheckpointError(f"the session log {path.name} is missing", path=checkpoint) from exc
    except OSError as exc:
        raise from_os_error(
            exc, f"the session log {path.name} cannot be read", checkpoint, otherwise=CorruptCheckpointError
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptCheckpointError(
                f"the session log {path.name} is missing (that name is not a regular file)", path=checkpoint
            )
        if size > info.st_size:
            raise CorruptCheckpointError(
                f"the session log {path.name} holds {info.st_size} bytes, the checkpoint needs {size} "
                "(truncated)",
                path=checkpoint,
            )
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read(size)
    except CheckpointError:
        raise
    except OSError as exc:
        raise from_os_error(
            exc, f"the session log {path.name} cannot be read", checkpoint, otherwise=CorruptCheckpointError
        ) from exc
    finally:
        os.close(fd)
    if len(data) != size:  # it shrank meanwhile
        raise CorruptCheckpointError(
            f"the session log {path.name} holds {len(data)} bytes, the checkpoint needs {size} (truncated)",
            path=checkpoint,
        )
    return data


def read_regular_file(path: Path, *, what: str = "checkpoint file", limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path``; every failure is a ``CheckpointError`` naming it.

    A missing path, a directory, a FIFO or a device is a ``CheckpointNotFoundError`` (nothing is opened in a
    way that could block); refused access a ``CheckpointAccessError``; a file larger than ``limit`` a
    ``CorruptCheckpointError`` (refused before it is read).
    """
    try:
        fd = os.open(usable_path(path), _READ_FLAGS)
    except CheckpointError:  # a NUL character (CheckpointNotFoundError is a FileNotFoundError too)
        raise
    except FileNotFoundError as exc:
        raise CheckpointNotFoundError(f"{what} does not exist", path=path) from exc
    except OSError as exc:
        raise from_os_error(exc, f"cannot open the {what}", path) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise CheckpointNotFoundError(f"is a directory; expected a {what}", path=path)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointNotFoundError(f"not a regular file; expected a {what}", path=path)
        too_big = CorruptCheckpointError(
            f"the file is larger than any {what} ({limit} bytes at most): damaged, or not a {what}", path=path
        )
        if info.st_size > limit:
            raise too_big
        chunks = []
        total = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):  # the size stat gave may be wrong
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise too_big
        return b"".join(chunks)
    except CheckpointError:  # CheckpointNotFoundError is an OSError too
        raise
    except OSError as exc:
        raise from_os_error(exc, f"cannot read the {what}", path) from exc
    finally:
        os.close(fd)


def parse_checkpoint_bytes(raw: bytes, *, path: Path) -> dict[str, Any]:
    """Parse and integrity-check a checkpoint document; raises a ``CheckpointError`` naming ``path``.

    Returns the record of a current document, or the raw document of a seed-era one (no format marker).
    """
    return open_record(raw, where=str(path))


def read_checkpoint_file(path: str | Path) -> CheckpointData:
    """Load any checkpoint file (log layout, standalone inline layout, or seed-era format).

    Loading only parses JSON and validates it; nothing in a file is ever executed. Every failure is a
    ``CheckpointError`` whose message names the file.
    """
    path = Path(path)
    raw = read_regular_file(path, what="checkpoint .json file")
    with reading(str(path)):  # MemoryError, RecursionError, ...: a CheckpointError naming the file
        record = open_record(raw, where=str(path))
        log = record.get("log")
        name = log.get("file") if isinstance(log, dict) else None

        def log_prefix(size: int) -> bytes:
            if not isinstance(name, str) or not _SAFE_FILE_NAME.match(name) or name.startswith("."):
                raise InvalidCheckpointError(f"unsafe log file name {str(name)[:200]!r}", path=path)
            return _read_prefix(path.parent / name, size, path)

        log_name = f"the session log {path.parent / str(name)}"
        return decode_checkpoint(record, where=str(path), log_prefix=log_prefix, log_name=log_name)


def _looks_like_session(path: Path) -> bool:
    """Whether ``path`` holds a session (False where it cannot be looked into)."""
    try:
        return (path / CHECKPOINT_DIR).is_dir() or (path / "session_metadata.json").is_file()
    except OSError:
        return False


class FileStore:
    """A directory of session directories (continuations are nested: ``<session>/continuation_...``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = usable_path(root)

    @property
    def url(self) -> str:
        return str(self.root)

    def _session_path(self, session_id: str) -> Path:
        parts = Path(session_id).parts
        if not parts or Path(session_id).is_absolute() or any(p in ("..", ".") for p in parts):
            raise CheckpointNotFoundError(f"invalid session id {session_id!r}", path=self.root)
        return self.root.joinpath(*parts)

    def open_session(self, session_id: str, *, durability: Durability = "crash") -> FileSessionStore:
        return FileSessionStore(self._session_path(session_id), durability=durability, session_id=session_id)

    def list_sessions(self) -> list[str]:
        """Session ids under the root, sorted. A directory below it that cannot be read is skipped; a root
        that cannot be read is a ``CheckpointAccessError``."""
        try:
            if not stat.S_ISDIR(os.stat(self.root).st_mode):
                return []
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return []
        except OSError as exc:
            raise from_os_error(exc, "cannot list the store's sessions", self.root) from exc

        def refused(exc: OSError) -> None:
            if exc.filename is not None and os.fspath(exc.filename) == os.fspath(self.root):
                raise from_os_error(exc, "cannot list the store's sessions", self.root) from exc

        found = []
        for directory, subdirs, _ in os.walk(self.root, onerror=refused):
            path = Path(directory)
            subdirs[:] = sorted(d for d in subdirs if d != CHECKPOINT_DIR and not d.startswith("."))
            if path != self.root and _looks_like_session(path):
                found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def delete_session(self, session_id: str) -> None:
        """Remove a session directory (with the continuations nested in it).

        ``SessionLockedError`` if a writer holds the session or one of its continuations.
        """
        path = self._session_path(session_id)
        if not _looks_like_session(path):
            raise CheckpointNotFoundError(f"no session {session_id!r}", path=path)
        held: list[int] = []
        try:
            if fcntl is not None:
                for directory, subdirs, names in os.walk(path):
                    subdirs[:] = [d for d in subdirs if d != CHECKPOINT_DIR]
                    if LOCK_FILE not in names:
                        continue
                    fd = os.open(Path(directory) / LOCK_FILE, os.O_RDWR)
                    held.append(fd)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError as exc:
                        raise SessionLockedError(
                            "cannot delete a session that has a writer", path=directory
                        ) from exc
            shutil.rmtree(path)
        except OSError as exc:
            raise from_os_error(exc, "could not delete the session", path, writing=True) from exc
        finally:
            for fd in held:
                os.close(fd)

    def find_checkpoint(self, checkpoint_id: str) -> str:
        name = f"{Path(checkpoint_id).stem}.json"
        matches = [
            s
            for s in self.list_sessions()
            if os.path.isfile(self._session_path(s) / CHECKPOINT_DIR / name)  # False where unreadable
        ]
        if len(matches) != 1:
            problem = "no session holds" if not matches else f"{len(matches)} sessions hold"
            raise CheckpointNotFoundError(f"{problem} checkpoint {checkpoint_id!r}", path=self.root)
        return matches[0]
