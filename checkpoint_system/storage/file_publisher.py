"""Creates committed record files in a background thread, off the chat's critical path.

Creating a file is by far the costliest step of a checkpoint on some file systems: on the ext4 VMs this
project runs on, ``open(O_CREAT)`` takes 0.3-1 ms of kernel time (inode allocation), while appending to an
open file takes microseconds. The file store therefore commits a checkpoint with two appends (the session
log and ``committed.jsonl``) and hands the record file to a ``FilePublisher``, whose daemon thread creates
it. The kernel work runs outside the GIL (on another core when there is one) and overlaps the next reply.

Nothing depends on the thread for safety: a record is committed before it is handed over, and a record
file that is missing after a crash is rewritten from ``committed.jsonl`` when the session is next opened.
Files the thread could not create are handed back by ``failures`` (the store retries them itself).
``wait`` returns once every handed-over file was attempted; the store waits before it lists or reads
checkpoints, at the end of every run and when it closes, and every publisher waits when the process exits
normally. Publishers are found by a ``key`` (the file store uses its checkpoint directory), so that a
second store object on the same directory in the same process waits for the writer's files too. After a
``fork`` the child creates its files itself (the thread belongs to the parent).
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

#: Beyond this many files waiting, ``submit`` creates the file itself (bounds memory in a long burst).
MAX_PENDING = 4096

_publishers: weakref.WeakSet[FilePublisher] = weakref.WeakSet()


class FilePublisher:
    """Runs ``create(path, data)`` for submitted files in one daemon thread, in submission order."""

    def __init__(self, create: Callable[[Path, bytes], None], *, key: str) -> None:
        self._create = create
        self.key = key
        self._queue: queue.SimpleQueue[tuple[Path, bytes] | None] = queue.SimpleQueue()
        self._done = threading.Condition()
        self._submitted = 0
        self._finished = 0
        self._failed: list[tuple[Path, bytes]] = []
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        #: names handed over and not created yet (so a second save under the same name is refused)
        self.pending: set[str] = set()

    def submit(self, path: Path, data: bytes) -> None:
        """Create ``path`` holding ``data`` soon (or now, when the thread cannot take it)."""
        if self._pid != os.getpid() or self._submitted - self._finished >= MAX_PENDING:
            self._create(path, data)
            return
        if self._thread is None:
            thread = threading.Thread(target=self._run, name=f"files of {self.key}", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: no new threads
                self._create(path, data)
                return
            self._thread = thread
            _publishers.add(self)
        self.pending.add(path.name)
        self._submitted += 1
        self._queue.put((path, data))

    def wait(self) -> None:
        """Wait until every file submitted so far was created (or failed)."""
        if self._thread is not None and self._pid == os.getpid():
            target = self._submitted
            with self._done:
                self._done.wait_for(lambda: self._finished >= target)

    @property
    def has_failures(self) -> bool:
        """True when ``failures`` has something to hand back (cheap: checked at every save)."""
        return bool(self._failed)

    def failures(self) -> list[tuple[Path, bytes]]:
        """The files that could not be created so far, with their data (handed back once); no waiting."""
        failed, self._failed = self._failed, []
        return failed

    def close(self) -> None:
        """Wait, then stop the thread (``failures`` still hands back what failed)."""
        self.wait()
        if self._thread is not None and self._pid == os.getpid():
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        _publishers.discard(self)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            path, data = item
            try:
                self._create(path, data)
            except OSError:  # the store creates it itself, and reports what still fails then
                self._failed.append((path, data))
            self.pending.discard(path.name)
            with self._done:
                self._finished += 1
                self._done.notify_all()


def publishers_of(key: str) -> list[FilePublisher]:
    """The live publishers of this process with this key (usually none or one)."""
    return [publisher for publisher in list(_publishers) if publisher.key == key]


@atexit.register
def _flush_publishers() -> None:
    """A process that never closed its store still leaves every committed record file behind."""
    for publisher in list(_publishers):
        publisher.wait()
