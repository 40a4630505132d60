"""Creates committed record files in a helper process, off the chat's critical path.

Creating a file is by far the costliest step of a checkpoint on some file systems: on the ext4 VMs this
project runs on, ``open(O_CREAT)`` takes 0.1-1 ms of kernel time (inode allocation), while appending to an
open file takes microseconds. The file store therefore commits a checkpoint with two appends (the session
log and ``committed.jsonl``) and hands the record file to a ``FilePublisher``. Publishers pass their files to
one writer process per chat process (``record_file_writer``, started at the first file): the chat's process
writes one frame into a pipe, and the kernel's work runs in the other process, on another core when there is
one, without the GIL. (A thread did this before; at every system call of the chat's main thread it took the
GIL and made the chat wait to get it back.)

Nothing depends on the writer for safety: a record is committed before it is handed over, and a record file
that is missing after a crash is rewritten from ``committed.jsonl`` when the session is next opened. Files
the writer could not create, and every file not yet acknowledged when the writer is gone, are handed back by
``failures`` (the store creates them itself). Where no writer process can be started (no ``sys.executable``,
no ``fork``/``exec``, Windows) and after a writer died, files are created in the calling thread. ``wait``
returns once every handed-over file was attempted; the store waits before it lists or reads checkpoints, at
the end of every run and when it closes, and the writer is waited for when the process exits normally. A
forked child does not use its parent's writer: it starts its own for publishers it creates, and creates the
files of publishers it inherited itself.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import select
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

from . import record_file_writer as protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no writer process
    fcntl = None  # type: ignore[assignment]

#: Replies are read (without blocking) once this many files await their acknowledgement: bounds memory.
DRAIN_AT = 256
#: Bytes the pipe to the writer holds (Linux): about 1,000 record files while the writer sleeps.
PIPE_SIZE = 1 << 20

_publishers: weakref.WeakSet[FilePublisher] = weakref.WeakSet()


class FilePublisher:
    """Creates submitted files of one directory soon, in submission order, through the writer process.

    ``directory`` (absolute) is also the publisher's ``key``: the publishers of one directory find each other.
    """

    def __init__(self, create: Callable[[Path, bytes], None], *, directory: str) -> None:
        self._create = create
        self.key = directory
        self._directory = Path(directory)
        self._prefix = os.fsencode(os.path.join(directory, ""))
        self._failed: list[tuple[str, bytes]] = []
        self._pid = os.getpid()
        #: names handed over and not acknowledged yet (so a second save under the same name is refused)
        self.pending: set[str] = set()
        _publishers.add(self)

    def submit(self, name: str, data: bytes) -> None:
        """Create the file ``name`` holding ``data`` soon, or now when no writer process takes it."""
        writer = _writer() if self._pid == os.getpid() else None
        if writer is None or not writer.create(self, name, data):
            self._create(self._directory / name, data)

    def wait(self) -> None:
        """Wait until every file submitted so far was created (or failed)."""
        if self._pid == os.getpid() and self.pending and (writer := _running_writer()) is not None:
            writer.sync()

    @property
    def has_failures(self) -> bool:
        """True when ``failures`` has something to hand back (cheap: checked at every save)."""
        return bool(self._failed)

    def failures(self) -> list[tuple[Path, bytes]]:
        """The files that could not be created so far, with their data (handed back once); no waiting."""
        failed, self._failed = self._failed, []
        return [(self._directory / name, data) for name, data in failed]

    def close(self) -> None:
        """Wait for this publisher's files (``failures`` still hands back what failed)."""
        self.wait()
        _publishers.discard(self)


class _WriterProcess:
    """This process's ``record_file_writer`` process, and the files it has not acknowledged yet."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        bell_out, self._doorbell = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", protocol.__file__, str(bell_out)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=(bell_out,),
                start_new_session=True,  # a Ctrl-C in the terminal goes to the chat, not to its writer
            )
        except BaseException:
            os.close(self._doorbell)
            raise
        finally:
            os.close(bell_out)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._requests = self._process.stdin.fileno()
        self._replies = self._process.stdout.fileno()
        os.set_blocking(self._replies, False)
        set_pipe_size = getattr(fcntl, "F_SETPIPE_SZ", None)
        if set_pipe_size is not None:  # Linux: room for a long burst while the writer sleeps
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._requests, set_pipe_size, PIPE_SIZE)
        self._lock = threading.Lock()
        self._sent = 0
        self._unread = bytearray()
        #: (frame number, publisher, file name, data) of every file sent and not acknowledged yet
        self._in_flight: collections.deque[tuple[int, FilePublisher, str, bytes]] = collections.deque()
        self.alive = True

    def create(self, publisher: FilePublisher, name: str, data: bytes) -> bool:
        """Hand one file over; False when the writer is gone (the caller creates the file itself)."""
        path = publisher._prefix + os.fsencode(name)  # absolute: the writer's working directory is its own
        with self._lock:
            if not self.alive:
                return False
            number = self._sent + 1
            header = protocol.FRAME.pack(protocol.CREATE, number, len(path), len(data))
            if not self._send(header + path + data):
                return False
            publisher.pending.add(name)
            self._in_flight.append((number, publisher, name, data))
            if len(self._in_flight) >= DRAIN_AT:
                self._read_replies(until=0)
            return True

    def sync(self) -> None:
        """Wait until the writer has carried out every frame sent so far."""
        with self._lock:
            if not (self.alive and self._in_flight):
                return
            if self._send(protocol.FRAME.pack(protocol.SYNC, self._sent + 1, 0, 0)):
                self._ring()
                self._read_replies(until=self._sent)

    def close(self) -> None:
        """Wait for every file, then end the writer (it stops at the end of its input)."""
        self.sync()
        with self._lock:
            self._gone()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=5)
        with contextlib.suppress(OSError):
            self._process.stdout.close()  # type: ignore[union-attr]

    def abandon(self) -> None:
        """In a forked child: close the inherited pipe ends (the parent's writer must see its input end)."""
        self.alive = False
        for stream in (self._process.stdin, self._process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            os.close(self._doorbell)
        self._process.returncode = 0  # not this process's child: never waited for here

    def _ring(self) -> None:
        """Wake the writer now (it may be sleeping between two looks at its pipe)."""
        try:
            os.write(self._doorbell, b"!")
        except BlockingIOError:  # rung often enough already
            pass
        except OSError:
            self._gone()

    def _send(self, frame: bytes) -> bool:
        try:
            protocol.write_all(self._requests, frame)
        except OSError:  # the writer died (EPIPE)
            self._gone()
            return False
        self._sent += 1
        return True

    def _read_replies(self, *, until: int) -> None:
        """Take in the writer's replies; with ``until`` > 0, block until that frame is acknowledged."""
        acknowledged = 0
        while self.alive:
            try:
                chunk = os.read(self._replies, 65536)
            except BlockingIOError:
                if acknowledged >= until:
                    return
                select.select([self._replies], [], [])
                continue
            except OSError:
                chunk = b""
            if not chunk:  # the writer died
                self._gone()
                return
            self._unread += chunk
            complete = len(self._unread) - len(self._unread) % protocol.REPLY.size
            for offset in range(0, complete, protocol.REPLY.size):
                kind, number = protocol.REPLY.unpack_from(self._unread, offset)
                if kind == protocol.FAILED:
                    self._settle(number - 1)
                    if self._in_flight and self._in_flight[0][0] == number:
                        self._hand_back_first()
                elif kind == protocol.DONE:
                    self._settle(number)
                    acknowledged = max(acknowledged, number)
                else:  # not our writer program
                    self._gone()
                    return
            del self._unread[:complete]

    def _settle(self, number: int) -> None:
        """Files up to frame ``number`` were created."""
        in_flight = self._in_flight
        while in_flight and in_flight[0][0] <= number:
            _, publisher, name, _ = in_flight.popleft()
            publisher.pending.discard(name)

    def _hand_back_first(self) -> None:
        """The oldest file in flight was not created: its publisher gets it back (``failures``)."""
        _, publisher, name, data = self._in_flight.popleft()
        publisher.pending.discard(name)
        publisher._failed.append((name, data))

    def _gone(self) -> None:
        """No more files go to this writer; the ones it has not acknowledged go back to their publishers."""
        if self.alive:
            self.alive = False
            with contextlib.suppress(OSError):
                self._process.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(OSError):
                os.close(self._doorbell)
        while self._in_flight:
            self._hand_back_first()


_writer_process: _WriterProcess | None = None
_cannot_start = False
_start_lock = threading.Lock()


def _writer() -> _WriterProcess | None:
    """This process's writer, started at first use; None where none can run or after it died."""
    global _writer_process, _cannot_start
    writer = _writer_process
    if writer is not None:
        return writer if writer.alive else None
    with _start_lock:
        if _writer_process is not None:
            return _writer_process if _writer_process.alive else None
        if _cannot_start or not sys.executable or sys.platform == "win32":
            return None
        try:
            _writer_process = _WriterProcess()
        except (OSError, subprocess.SubprocessError):
            _cannot_start = True
            return None
        return _writer_process


def _running_writer() -> _WriterProcess | None:
    writer = _writer_process
    return writer if writer is not None and writer.pid == os.getpid() else None


def _forget_writer_in_child() -> None:
    global _writer_process
    if _writer_process is not None:
        _writer_process.abandon()
        _writer_process = None


def publishers_of(key: str) -> list[FilePublisher]:
    """The live publishers of this process with this key (usually none or one)."""
    return [publisher for publisher in list(_publishers) if publisher.key == key]


@atexit.register
def _close_writer() -> None:
    """A process that never closed its store still leaves every committed record file behind."""
    writer = _running_writer()
    if writer is not None:
        writer.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writer_in_child)
