"""The file store: one session directory, one hash-chained commit file, one shared append-only log.

Layout::

    <session>/checkpoints/message_log.jsonl                              strings, configs, messages
    <session>/checkpoints/committed.jsonl                                one chained line per checkpoint
    <session>/checkpoints/checkpoint_<step>_<context>_<timestamp>.json   one record file per checkpoint
    <session>/session_metadata.json, chat_history.json, ...             written by CheckpointManager

A checkpoint is committed by two appends: its log bytes, then its line in ``committed.jsonl``. Each line
carries the record, the size and sha256 of the log prefix the checkpoint needs, and a chain hash over the
previous line's, so any edited, missing, duplicated or reordered line is detected (see ``read_commits``).
The writer creates the record files in one batch at ``flush()``/``close()`` and when it reopens a session a
killed writer left (byte for byte from verified lines); readers load a checkpoint whose file does not exist
yet from its commit line. Readers never write: no lock, no repair. Session files are opened without
following symbolic links, and reads are bounded by the sizes the records state.

``export_checkpoint`` writes a standalone "inline" document (the whole ``CheckpointData``, no log), and
``read_checkpoint_file`` reads record files, inline documents and seed-era files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..checkpoint_ids import new_checkpoint_id
from ..errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointSaveError,
    CheckpointWarning,
    CorruptCheckpointError,
    InvalidCheckpointError,
    SessionLockedError,
    from_os_error,
)
from ..model import CheckpointData
from .delta import DeltaEncoder, LogReplay, checkpoint_from_record, dumps
from .protocol import Durability
from .records import (
    decode_checkpoint,
    inline_document,
    log_reference,
    open_record,
    reading,
    record_bytes,
    replay_log_prefix,
    seal_record,
)

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
#: Session files are never opened through a symbolic link.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
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


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _link_error(path: Path, what: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"the session's {what} is a symbolic link; session files are never followed out of the session",
        path=path,
    )


def _refuse_link(path: Path) -> None:
    """A session directory must not be a symbolic link (it could lead anywhere)."""
    if os.path.islink(path):
        raise _link_error(path, "directory")


def _open_session_file(path: Path, *, write: bool) -> int:
    """Open a session file of the writer (created if missing) without following a link; must be regular."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags if write else _READ_FLAGS, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path, path.name) from exc
        raise from_os_error(exc, f"cannot open {path.name}", path, writing=write) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CorruptCheckpointError(f"{path.name} is not a regular file", path=path)
    return fd


def checkpoint_file_name(step_number: int, context: str, timestamp: str) -> str:
    """``checkpoint_<step>_<context>_<YYYYMMDD_HHMMSS_ffffff>.json`` from an ISO timestamp.

    The step number is unique within a session (one writer per session), so names never collide.
    """
    return f"{new_checkpoint_id(step_number, context, timestamp)}.json"


def _file_name_for(data: CheckpointData) -> str:
    """The data's own id when it is a well-formed id for its step, else a fresh name."""
    return record_file_name(data.checkpoint_id, data.step_number, data.context, data.timestamp)


def record_file_name(checkpoint_id: Any, step_number: Any, context: Any, timestamp: Any) -> str:
    """The name of a checkpoint's record file: ``<id>.json`` when the id is a well-formed id for its step,
    else one built from the step, context and timestamp. A record file under any other name is not its own."""
    own = f"{checkpoint_id}.json"
    match = _CHECKPOINT_NAME.match(own)
    if match and _SAFE_FILE_NAME.match(own) and int(match.group(1)) == step_number:
        return own
    if not (type(step_number) is int and isinstance(context, str) and isinstance(timestamp, str)):
        return ""  # a malformed record: it names no file
    return checkpoint_file_name(step_number, context, timestamp)


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


# -- the commit file: one hash-chained line per committed checkpoint --------------------------------------

#: Seed of the chain: the hash the first line continues.
_CHAIN_SEED = hashlib.sha256(b"checkpoint_system committed.jsonl").hexdigest().encode()
_CHAIN_KEY = b',"c":"'
#: ``,"c":"<64 hex digits>"}``: how every complete commit line ends.
_CHAIN_TAIL = len(_CHAIN_KEY) + 64 + 2
_HEX = frozenset(b"0123456789abcdef")


@dataclass(frozen=True)
class Commit:
    """One verified line of ``committed.jsonl``: enough to rebuild the checkpoint's record file exactly."""

    line: int  # 1-based, for messages
    name: str  # the record file's name, ``<checkpoint id>.json``
    step: int
    record: dict[str, Any]  # the record as the encoder made it (before sealing)
    size: int  # the log prefix the checkpoint needs
    log_sha256: str

    def sealed(self) -> bytes:
        """The record file's bytes, as the writer created (or will create) them."""
        record = seal_record(
            dict(self.record), size=self.size, sha256=self.log_sha256, location={"file": LOG_FILE}
        )
        return record_bytes(record)


def commit_line(
    previous: bytes, bare_record: bytes, size: int, log_sha256: str, name: str
) -> tuple[bytes, bytes]:
    """The line that commits a checkpoint, and its chain hash (what the next line continues).

    The chain hash is the sha256 of the previous line's chain hash followed by this line's body, so an
    edited, deleted, duplicated or reordered line breaks the chain at that line.
    """
    body = (
        b'{"k":'
        + bare_record
        + b',"n":'
        + str(size).encode()
        + b',"h":"'
        + log_sha256.encode()
        + b'","f":'
        + orjson.dumps(name)
    )
    chain = hashlib.sha256(previous + body).hexdigest().encode()
    return body + _CHAIN_KEY + chain + b'"}\n', chain


@dataclass
class CommitLog:
    """What ``committed.jsonl`` commits, as far as its chain verifies.

    ``damage`` describes the first line that does not verify (nothing from there on is trusted);
    ``torn`` is the byte length of an incomplete last line (a writer killed while appending it: that
    checkpoint was never committed); ``verified_size`` is where the verified lines end.
    """

    commits: list[Commit]
    chain: bytes
    verified_size: int
    damage: str | None = None
    torn: int = 0


def _parse_commit(body: bytes, line: int) -> Commit | str:
    try:
        entry = orjson.loads(body + b"}")
        record, size, log_sha, name = entry["k"], entry["n"], entry["h"], entry["f"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "not a commit record"
    match = _CHECKPOINT_NAME.match(name) if isinstance(name, str) else None
    if (
        match is None
        or not _SAFE_FILE_NAME.match(name)
        or not isinstance(record, dict)
        or name
        != record_file_name(
            record.get("checkpoint_id"),
            record.get("step_number"),
            record.get("context"),
            record.get("timestamp"),
        )
        or type(size) is not int
        or size < 0
        or not isinstance(log_sha, str)
        or len(log_sha) != 64
    ):
        return "a malformed commit record"
    return Commit(line, name, int(match.group(1)), record, size, log_sha)


def read_commits(raw: bytes) -> CommitLog:
    """Verify the chain of a commit file's bytes; see ``CommitLog``."""
    commits: list[Commit] = []
    chain = _CHAIN_SEED
    offset = 0
    number = 0
    while offset < len(raw):
        end = raw.find(b"\n", offset)
        if end < 0:
            return CommitLog(commits, chain, offset, torn=len(raw) - offset)
        number += 1
        line = raw[offset:end]
        tail = line[-_CHAIN_TAIL:]
        problem: str | None = None
        if len(line) <= _CHAIN_TAIL or not tail.startswith(_CHAIN_KEY) or not tail.endswith(b'"}'):
            problem = "not a commit line"
        else:
            body, claimed = line[:-_CHAIN_TAIL], tail[len(_CHAIN_KEY) : -2]
            expected = hashlib.sha256(chain + body).hexdigest().encode()
            if claimed != expected:
                problem = "does not match its hash (edited, damaged, or out of place)"
            else:
                parsed = _parse_commit(body, number)
                if isinstance(parsed, str):
                    problem = parsed
                else:
                    commits.append(parsed)
                    chain = expected
        if problem is not None:
            return CommitLog(commits, chain, offset, damage=f"line {number} of {COMMIT_FILE} {problem}")
        offset = end + 1
    return CommitLog(commits, chain, offset)


class FileSessionStore:
    """Stores the checkpoints of one session directory. One writer per session (enforced by a lock).

    Reading (listing, loading) never writes: no lock is taken, nothing is created or repaired. The writer
    appends each checkpoint's log bytes and one hash-chained commit line (the commit point); it creates the
    record files in one batch at ``flush()``/``close()`` (a run's end flushes), at once with
    ``durability="fsync"``, and when it reopens a session a killed writer left. Until then a checkpoint is
    loaded from its commit line, so every reader sees it as soon as it is committed.
    """

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
        self._chain = _CHAIN_SEED
        #: committed checkpoints whose record file is still to be created: (file name, bytes)
        self._pending: dict[str, bytes] = {}
        #: file names committed in this session (the writer's), so a name is never committed twice
        self._names: set[str] = set()
        #: the parent checkpoint a continuation's log continues (``base`` of every record), if any
        self._base: dict[str, str] | None = None

    # -- writing ------------------------------------------------------------------------------------------
    def _open_for_writing(self) -> DeltaEncoder:
        if self._encoder is not None:
            return self._encoder
        if self.root.exists() and not self.root.is_dir():
            raise CheckpointSaveError("session path exists and is not a directory", path=self.root)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        _refuse_link(self.checkpoint_dir)
        self._acquire_lock()
        self._remove_stale_temporaries()
        commit_fd = _open_session_file(self.checkpoint_dir / COMMIT_FILE, write=True)
        log_fd: int | None = None
        try:
            commits = read_commits(_read_all(commit_fd))
            if commits.damage is not None:
                raise CorruptCheckpointError(
                    f"{commits.damage}; refusing to extend a damaged session (its checkpoints up to line "
                    f"{len(commits.commits)} still load)",
                    path=self.checkpoint_dir / COMMIT_FILE,
                )
            if commits.torn:  # a killed writer's last line: never committed
                os.ftruncate(commit_fd, commits.verified_size)
            log_fd = _open_session_file(self.checkpoint_dir / LOG_FILE, write=True)
            log = _read_all(log_fd)
            size = commits.commits[-1].size if commits.commits else 0
            log_sha = hashlib.sha256(log[:size])
            if len(log) < size or (commits.commits and log_sha.hexdigest() != commits.commits[-1].log_sha256):
                raise CorruptCheckpointError(
                    f"the session log does not hold what the last committed checkpoint needs ({size} bytes "
                    "with its hash); refusing to extend a damaged session",
                    path=self.checkpoint_dir / LOG_FILE,
                )
            if len(log) > size:  # a killed writer's log bytes that no commit refers to ...
                self._refuse_lost_commits(commits, size)  # ... unless a record file needs them
                os.ftruncate(log_fd, size)
            if commits.commits:  # a continuation's log goes on from its parent's state
                self._base = commits.commits[0].record.get("base")
            # the parent's state this session's log goes on from (only ``base`` of a record is read)
            replay = _base_replay({"base": self._base}, self.checkpoint_dir / COMMIT_FILE, 0) or LogReplay()
            replay.apply_bytes(log[:size], path=str(self.checkpoint_dir / LOG_FILE))
            encoder = DeltaEncoder()
            encoder.load_state(replay)
            existing = set(os.listdir(self.checkpoint_dir))
            # A name is committed once, and never over a file someone else put there.
            self._names = {commit.name for commit in commits.commits} | existing
            # Record files a killed writer did not create: rebuilt byte for byte from verified lines.
            self._pending = {c.name: c.sealed() for c in commits.commits if c.name not in existing}
            self._create_pending()
            if self.durability == "fsync":
                os.fsync(log_fd)
                os.fsync(commit_fd)
                _fsync_dir(self.checkpoint_dir)
                _fsync_dir(self.root)
        except BaseException:
            for fd in (commit_fd, log_fd):
                if fd is not None:
                    os.close(fd)
            raise
        self._commit_fd, self._commit_size, self._chain = commit_fd, commits.verified_size, commits.chain
        self._log_fd, self._log_size, self._log_hash = log_fd, size, log_sha
        self._encoder = encoder
        return encoder

    def _refuse_lost_commits(self, commits: CommitLog, size: int) -> None:
        """Before cutting the log at ``size``: a record file that no commit line names but that needs log
        bytes beyond ``size`` means commit lines were lost (a damaged or replaced ``committed.jsonl``).
        Cutting would destroy what it loads from, so the session is refused for writing instead."""
        committed = {commit.name for commit in commits.commits}
        for name in sorted(os.listdir(self.checkpoint_dir)):
            if name in committed or not _CHECKPOINT_NAME.match(name):
                continue
            path = self.checkpoint_dir / name
            try:
                raw = read_regular_file(path, follow=False)
                needed, _ = log_reference(open_record(raw or b"", where=str(path)), where=str(path))
            except CheckpointError:
                continue  # not one of ours: it only reserves its name
            if needed > size:
                raise CorruptCheckpointError(
                    f"the record file {name} is not committed in {COMMIT_FILE} but needs the session log "
                    f"beyond its last committed checkpoint (commit lines were lost); refusing to write over "
                    "what it loads from",
                    path=path,
                )

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a writer that was killed (only the lock holder writes in the session)."""
        try:
            for entry in os.scandir(self.checkpoint_dir):
                if _STALE_TEMP.match(entry.name):
                    _unlink_quietly(Path(entry.path))
        except OSError:
            pass

    def _acquire_lock(self) -> None:
        if fcntl is None or self._lock_fd is not None:
            return
        fd = _open_session_file(self.root / LOCK_FILE, write=True)
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
        """Drop the in-memory log state; the next save re-reads the files from disk (keeps the lock)."""
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
        """Write one checkpoint; returns its id (the record file's stem, see ``path_of``).

        Two appends: the checkpoint's log bytes to ``message_log.jsonl``, then its line to
        ``committed.jsonl`` (the commit point). The record file follows at ``flush()``/``close()`` (at once
        with ``durability="fsync"``, which also flushes every write to the device). A writer killed in
        between leaves at worst bytes no commit refers to, cut when the session is next opened for writing.

        Raises ``CheckpointSaveError`` on any I/O failure, if the checkpoint's id is already committed in
        this session, or if the step number is negative; ``SessionLockedError`` if another writer holds
        the session. After a failure the session on disk is unchanged and the store can save again.
        """
        if data.step_number < 0:
            raise CheckpointSaveError(
                f"step_number must be >= 0, got {data.step_number}", path=self.checkpoint_dir
            )
        name = _file_name_for(data)  # a plain string on this path: pathlib costs ~10 us per checkpoint
        committed = log_written = commit_written = False
        old_size, old_commit_size = self._log_size, self._commit_size
        try:
            encoder = self._open_for_writing()
            old_size, old_commit_size = self._log_size, self._commit_size
            if name in self._names:
                raise CheckpointSaveError(
                    "a checkpoint with this id already exists in the session; refusing to overwrite",
                    path=self.checkpoint_dir / name,
                )
            encoded = encoder.encode(data, trusted_prefix=trusted_prefix)
            if self._base is not None:
                encoded.record["base"] = self._base
            assert self._log_fd is not None and self._commit_fd is not None
            new_hash = self._log_hash.copy()
            new_hash.update(encoded.log_bytes)
            prefix_size = old_size + len(encoded.log_bytes)
            log_sha = new_hash.hexdigest()
            line, chain = commit_line(self._chain, dumps(encoded.record), prefix_size, log_sha, name)
            fsync = self.durability == "fsync"
            log_written = True
            _write_all(self._log_fd, encoded.log_bytes)
            if fsync:
                os.fsync(self._log_fd)
            commit_written = True
            _write_all(self._commit_fd, line)  # the commit point
            committed = True
            self._names.add(name)
            self._log_size, self._log_hash, self._chain = prefix_size, new_hash, chain
            self._commit_size = old_commit_size + len(line)
            encoder.commit(encoded)
            sealed = seal_record(
                encoded.record, size=prefix_size, sha256=log_sha, location={"file": LOG_FILE}
            )
            self._pending[name] = record_bytes(sealed)
        except BaseException as exc:
            self._undo_uncommitted(committed, commit_written, log_written, old_size, old_commit_size)
            if isinstance(exc, CheckpointError):
                raise
            if isinstance(exc, OSError):
                raise from_os_error(
                    exc, "could not write checkpoint", self.checkpoint_dir / name, writing=True
                ) from exc
            if isinstance(exc, (TypeError, ValueError)):
                raise CheckpointSaveError(
                    f"could not write checkpoint: {exc}", path=self.checkpoint_dir / name
                ) from exc
            raise
        if fsync:  # committed: flush the commit to the device, then create the file now
            try:
                os.fsync(self._commit_fd)
            except OSError as exc:
                raise CheckpointSaveError(
                    f"could not flush the commit to the device: {exc}", path=self.checkpoint_dir / name
                ) from exc
            self._create_pending()
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
        if committed:  # interrupted after the commit point: re-read the files next time
            self._forget_log()
        else:  # it belongs to no checkpoint
            if commit_written:
                self._truncate(self._commit_fd, old_commit_size)
            if log_written:
                self._truncate(self._log_fd, old_size)

    def flush(self) -> None:
        """Create the record files of every checkpoint this writer committed (a reader has none).

        Raises ``CheckpointSaveError`` if a file cannot be created: it is tried again at the next flush and
        close, and rebuilt from ``committed.jsonl`` when the session is next opened for writing; the
        checkpoint itself is committed and loads meanwhile.
        """
        self._create_pending()

    def _create_pending(self) -> None:
        fsync = self.durability == "fsync"
        failed: OSError | None = None
        foreign: list[str] = []
        for name, data in list(self._pending.items()):
            path = self.checkpoint_dir / name
            try:  # complete or absent, never torn: written aside, then linked under its name
                write_file_atomic(path, data, overwrite=False, fsync=fsync)
            except CheckpointSaveError:  # the name is taken
                with contextlib.suppress(CheckpointError):
                    if read_regular_file(path, follow=False) != data:
                        foreign.append(name)  # someone else's file took the name: left alone, reported
            except OSError as exc:
                failed = failed or exc
                continue
            del self._pending[name]
        if fsync and failed is None:
            with contextlib.suppress(OSError):
                _fsync_dir(self.checkpoint_dir)
        if foreign:
            raise CheckpointSaveError(
                "a file with this name appeared before the checkpoint's file was created; it is left alone "
                f"(the checkpoint is committed in {COMMIT_FILE})",
                path=self.checkpoint_dir / foreign[0],
            )
        if failed is not None:
            more = f" (and {len(self._pending) - 1} more)" if len(self._pending) > 1 else ""
            raise CheckpointSaveError(
                f"could not create the checkpoint file{more}: {failed}; the checkpoint is committed in "
                f"{COMMIT_FILE} and loads; the file is tried again at the next flush",
                path=self.checkpoint_dir / next(iter(self._pending)),
            )

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
        raw = read_regular_file(path, what="session document", follow=False, missing_ok=True)
        if raw is None:
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
        """The checkpoint's record file path (loadable from anywhere with ``read_checkpoint_file``)."""
        self.flush()
        return str(self.path_of(checkpoint_id))

    def close(self) -> None:
        """Create the pending record files, then release the log and the writer lock (a later save reopens
        them). A record file that cannot be created is reported with a ``RuntimeWarning``: its checkpoint
        is committed and the file is rebuilt when the session is next opened for writing."""
        try:
            self._create_pending()
        except CheckpointSaveError as exc:
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
        self._pending = {}
        for attr in ("_log_fd", "_commit_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        self._encoder = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- reading (never writes) ---------------------------------------------------------------------------
    def _commits(self) -> CommitLog:
        """The verified commits of the session (empty for a session nothing was committed in yet)."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise CheckpointNotFoundError("not a session directory", path=self.root)
        if os.path.lexists(self.checkpoint_dir) and not os.path.isdir(self.checkpoint_dir):
            raise CorruptCheckpointError(
                f"{CHECKPOINT_DIR} is not a directory; a session keeps its checkpoints in one",
                path=self.checkpoint_dir,
            )
        _refuse_link(self.checkpoint_dir)
        path = self.checkpoint_dir / COMMIT_FILE
        try:
            raw = read_regular_file(path, what="commit file", follow=False, missing_ok=True)
        except CheckpointNotFoundError as exc:
            if os.path.lexists(path):  # a directory, FIFO or device in its place
                raise CorruptCheckpointError(f"{COMMIT_FILE} is not a regular file", path=path) from exc
            raise
        return read_commits(raw or b"")

    def list_checkpoints(self) -> list[str]:
        """Checkpoint ids of this session in step order, as ``committed.jsonl`` commits them.

        A damaged commit line is reported with a ``CheckpointWarning`` naming the file and line, and the
        checkpoints from it on are left out (each may still load from its own record file).
        """
        commits = self._commits()
        if commits.damage is not None:
            warnings.warn(
                f"{commits.damage} [{self.checkpoint_dir / COMMIT_FILE}]: the checkpoints committed from "
                "there on are not listed",
                CheckpointWarning,
                stacklevel=2,
            )
        ordered = sorted(commits.commits, key=lambda commit: commit.step)
        return [commit.name[: -len(".json")] for commit in ordered]

    def path_of(self, checkpoint_id: str | Path) -> Path:
        """The record file of a checkpoint id (a bare id, a file name in this session, or a path).

        For the writer's own checkpoints the file is created first. A reader's path may not exist yet while
        another process writes the session (its files come at its flush); ``load`` reads such a checkpoint
        from its commit line.
        """
        candidate = Path(checkpoint_id)
        if candidate.suffix == ".json" and (candidate.is_absolute() or len(candidate.parts) > 1):
            return candidate
        name = candidate.name if candidate.suffix == ".json" else f"{candidate.name}.json"
        if name in self._pending:  # the writer's own checkpoint: its file is created now
            self._create_pending()
        return self.checkpoint_dir / name

    def load(self, checkpoint_id: str | Path) -> CheckpointData:
        """Load a checkpoint of this session by id, file name or path (never writes anything)."""
        path = self.path_of(checkpoint_id)
        if path.parent != self.checkpoint_dir:
            return read_checkpoint_file(path)
        record, path = self.record_of(path.stem)
        with reading(str(path)):
            return checkpoint_from_record(record, replay_record(record, path), path=str(path))

    def record_of(self, checkpoint_id: str) -> tuple[dict[str, Any], Path]:
        """The verified record of a checkpoint of this session and its file's path: from its record file,
        or from its commit line while the file does not exist yet (nothing is written)."""
        path = self.checkpoint_dir / f"{checkpoint_id}.json"
        _refuse_link(self.checkpoint_dir)
        raw = self._pending.get(path.name)
        if raw is None:
            raw = read_regular_file(path, what="checkpoint .json file", follow=False, missing_ok=True)
        if raw is None:
            commit = next((c for c in self._commits().commits if c.name == path.name), None)
            if commit is None:
                raise CheckpointNotFoundError(
                    f"no checkpoint {checkpoint_id!r} in session {self.root}", path=path
                )
            raw = commit.sealed()
        with reading(str(path)):
            return open_record_file(raw, path), path

    def start_from(self, checkpoint_id: str) -> bool:
        """Make this new session a continuation of the checkpoint ``checkpoint_id`` of the session that
        holds it (its parent directory): its log then holds only what is new, and every checkpoint refers
        to the parent's by id and hash. Call before the first save; returns True (the parent is referred
        to, not copied)."""
        if self._encoder is not None or self._commits().commits:
            raise CheckpointSaveError(
                "a session can only start from a parent before its first save", path=self.root
            )
        parent = FileSessionStore(self.root.parent)
        record, _ = parent.record_of(checkpoint_id)
        self._base = {"session": _BASE_SESSION, "checkpoint": checkpoint_id, "integrity": record["integrity"]}
        return True

    def next_step_number(self) -> int:
        """One past the highest committed step (0 for a new session)."""
        steps = [commit.step for commit in self._commits().commits]
        return max(steps) + 1 if steps else 0


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
        fd = os.open(path, _READ_FLAGS | _NOFOLLOW)
    except FileNotFoundError as exc:
        raise CorruptCheckpointError(f"the session log {path.name} is missing", path=checkpoint) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_error(path, "log") from exc
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


def read_regular_file(
    path: Path,
    *,
    what: str = "checkpoint file",
    limit: int = MAX_FILE_BYTES,
    follow: bool = True,
    missing_ok: bool = False,
) -> bytes | None:
    """The bytes of the regular file ``path``; every failure is a ``CheckpointError`` naming it.

    A missing path, a directory, a FIFO or a device is a ``CheckpointNotFoundError`` (nothing is opened in a
    way that could block); refused access a ``CheckpointAccessError``; a file larger than ``limit`` a
    ``CorruptCheckpointError`` (refused before it is read).
    """
    try:
        fd = os.open(usable_path(path), _READ_FLAGS if follow else _READ_FLAGS | _NOFOLLOW)
    except CheckpointError:  # a NUL character (CheckpointNotFoundError is a FileNotFoundError too)
        raise
    except FileNotFoundError as exc:
        if missing_ok:
            return None
        raise CheckpointNotFoundError(f"{what} does not exist", path=path) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise _link_error(path, what) from exc
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
    """Load any checkpoint file (a session's record file, a standalone export, or a seed-era file).

    Loading only parses JSON and validates it; nothing in a file is ever executed, and a record file is
    never read through a symbolic link. Every failure is a ``CheckpointError`` whose message names the file.
    """
    path = Path(path)
    if path.parent.name == CHECKPOINT_DIR:  # a session's record file: its directory must be the session's
        _refuse_link(path.parent)
    raw = read_regular_file(path, what="checkpoint .json file", follow=False)
    assert raw is not None
    return decode_record_file(raw, path)


def decode_record_file(raw: bytes, path: Path) -> CheckpointData:
    """A checkpoint from the bytes of its file ``path``: integrity, id and log prefix all checked (and, for
    a continuation, its parent's checkpoint, which its log continues)."""
    with reading(str(path)):  # MemoryError, RecursionError, ...: a CheckpointError naming the file
        record = open_record_file(raw, path)
        if record.get("layout") != "log":  # a standalone export or a seed-era file
            return decode_checkpoint(record, where=str(path), log_prefix=lambda size: b"")
        return checkpoint_from_record(record, replay_record(record, path), path=str(path))


def open_record_file(raw: bytes, path: Path) -> dict[str, Any]:
    """The verified record in a record file's bytes; a record under another checkpoint's name is refused."""
    record = open_record(raw, where=str(path))
    own_name = record_file_name(
        record.get("checkpoint_id"), record.get("step_number"), record.get("context"), record.get("timestamp")
    )
    if record.get("layout") == "log" and own_name and own_name != path.name:
        raise CorruptCheckpointError(
            f"the file holds checkpoint {str(record.get('checkpoint_id'))[:200]!r}, whose file is "
            f"{own_name!r} (a record file is named after its checkpoint)",
            path=path,
        )
    return record


def replay_record(record: dict[str, Any], path: Path, depth: int = 0) -> LogReplay:
    """The log state a record of the session file ``path`` stands for: its parent checkpoint's state first
    (a continuation's log only holds what is new), then its own verified log prefix."""
    log = record.get("log")
    name = log.get("file") if isinstance(log, dict) else None
    if not isinstance(name, str) or not _SAFE_FILE_NAME.match(name) or name.startswith("."):
        raise InvalidCheckpointError(f"unsafe log file name {str(name)[:200]!r}", path=path)
    base = _base_replay(record, path, depth)
    size, _ = log_reference(record, where=str(path))
    prefix = _read_prefix(path.parent / name, size, path)
    return replay_log_prefix(
        record, prefix, where=str(path), log_name=f"the session log {path.parent / name}", base=base
    )


#: How many continuations deep a checkpoint's lineage may go (a bound for a hostile chain).
MAX_FORK_DEPTH = 256
_BASE_SESSION = ".."


def _base_replay(record: dict[str, Any], path: Path, depth: int) -> LogReplay | None:
    """The parent checkpoint's log state for a continuation's record (None for a session of its own).

    ``base`` is ``{"session": "..", "checkpoint": <id>, "integrity": <the parent record's hash>}``: the
    parent is the session directory holding the continuation, never anywhere else.
    """
    base = record.get("base")
    if base is None:
        return None
    if (
        not isinstance(base, dict)
        or set(base) != {"session", "checkpoint", "integrity"}
        or base["session"] != _BASE_SESSION
        or not isinstance(base["checkpoint"], str)
        or not _SAFE_FILE_NAME.match(f"{base['checkpoint']}.json")
        or not isinstance(base["integrity"], str)
    ):
        raise InvalidCheckpointError("malformed parent reference ('base') in the record", path=path)
    if depth >= MAX_FORK_DEPTH:
        raise CorruptCheckpointError(f"continuations nested deeper than {MAX_FORK_DEPTH}", path=path)
    parent = FileSessionStore(path.parent.parent.parent)
    parent_record, parent_path = parent.record_of(base["checkpoint"])
    if parent_record.get("integrity") != base["integrity"]:
        raise CorruptCheckpointError(
            f"the parent checkpoint {base['checkpoint']!r} this continuation starts from has changed "
            "(its hash differs from the one recorded)",
            path=path,
        )
    return replay_record(parent_record, parent_path, depth + 1)


def session_dir_of(checkpoint_file: str | Path) -> Path:
    """The session directory a checkpoint file belongs to (``<session>/checkpoints/<file>``; a file
    elsewhere, such as a standalone export, counts its own directory as its session)."""
    parent = Path(os.path.normpath(checkpoint_file)).parent  # relative stays relative: no machine paths
    return parent.parent if parent.name == CHECKPOINT_DIR else parent


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

    def delete_session(self, session_id: str, *, include_continuations: bool = False) -> None:
        """Remove a session directory.

        Its continuations (nested in it) read their parent's checkpoints: deleting a session that has any is
        refused (``CheckpointError`` naming them) unless ``include_continuations`` deletes them too.
        ``SessionLockedError`` if a writer holds the session or one of its continuations.
        """
        path = self._session_path(session_id)
        if not _looks_like_session(path):
            raise CheckpointNotFoundError(f"no session {session_id!r}", path=path)
        dependents = FileStore(path).list_sessions()
        if dependents and not include_continuations:
            raise CheckpointError(
                f"session {session_id!r} has {len(dependents)} continuation(s) that depend on it "
                f"({', '.join(dependents[:3])}{', ...' if len(dependents) > 3 else ''}); pass "
                "include_continuations=True to delete them too",
                path=path,
            )
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
        matches = [s for s in self.list_sessions() if self._commits_name(s, name)]
        if len(matches) != 1:
            problem = "no session holds" if not matches else f"{len(matches)} sessions hold"
            raise CheckpointNotFoundError(f"{problem} checkpoint {checkpoint_id!r}", path=self.root)
        return matches[0]

    def _commits_name(self, session_id: str, name: str) -> bool:
        """Whether the session commits the checkpoint file ``name`` (False where it cannot be read)."""
        try:
            commits = FileSessionStore(self._session_path(session_id))._commits().commits
        except CheckpointError:
            return False
        return any(commit.name == name for commit in commits)
