"""Folds a SQLite write-ahead log into its database in a background thread, off the chat's critical path.

In WAL mode every commit appends the pages it changed to the ``-wal`` file, and by default the connection
that commits past 1,000 WAL pages copies them all into the database file (and syncs it) inside that
commit: for a checkpoint store, a 5-20 ms stall every ~130 checkpoints. A ``WalCheckpointer`` runs
``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own in a daemon thread every ``every`` commits
instead. SQLite releases the GIL while it copies and a passive checkpoint never blocks the writer; the
thread repeats the pass until one finds no new commit, so that little is left behind.

The WAL file restarts from its beginning when a writer finds it completely copied. Between LLM calls that
is the next commit; in a burst of commits (a benchmark) the writer rarely finds it so, and its own
automatic checkpoint, kept at ``SAFETY_NET_PAGES``, restarts it (cheaply: the thread copied most pages).

Nothing depends on the thread for durability: a commit is durable once it is in the WAL (and SQLite
recovers a WAL left by a killed process when the file is next opened).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

#: commits between two background checkpoints (a checkpoint store writes ~8 pages of 4 KiB per commit)
CHECKPOINT_EVERY = 128
#: passes of one background checkpoint: commits landing while it copies leave frames behind, and the
#: writer restarts the WAL from its beginning only once every frame was copied
CATCH_UP_PASSES = 8
#: the writer's own automatic checkpoint threshold (pages) while a background checkpointer runs
SAFETY_NET_PAGES = 4000


class WalCheckpointer:
    """Runs passive WAL checkpoints of the database at ``path`` in a daemon thread, on request."""

    def __init__(self, path: Path, *, every: int = CHECKPOINT_EVERY) -> None:
        self.path = path
        self.every = every
        self.checkpoints = 0  # background checkpoints run so far (for tests and curiosity)
        self._commits = 0
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """Count one commit of the writer; every ``every`` commits, wake the thread (cheap: no I/O)."""
        self._commits += 1
        if self._commits < self.every or self._pid != os.getpid():
            return
        self._commits = 0
        if self._thread is None:  # the first request, or the first since ``close``
            self._stopping = False
            self._wake.clear()
            thread = threading.Thread(target=self._run, name=f"WAL of {self.path.name}", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: the writer's own checkpoint takes over
                return
            self._thread = thread
        self._idle.clear()
        self._wake.set()

    def wait(self) -> None:
        """Wait until a requested checkpoint has run (tests use it; the writer never needs to)."""
        self._idle.wait()

    def close(self) -> None:
        """Stop the thread and close its connection (so that the writer's close can remove the WAL)."""
        if self._thread is None or self._pid != os.getpid():
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._thread = None

    @staticmethod
    def _checkpoint(connection: sqlite3.Connection) -> None:
        """Copy the WAL into the database without blocking the writer, catching up with its commits."""
        seen = -1
        for _ in range(CATCH_UP_PASSES):  # until a pass finds no frame committed meanwhile
            _, logged, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if logged == copied == seen:
                return
            seen = logged

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    if connection is None:  # a busy database is left to the next request: never wait
                        connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
                    self._checkpoint(connection)
                    self.checkpoints += 1
                except sqlite3.Error:  # busy, or failing: the writer's own checkpoint still bounds the WAL
                    pass
                finally:
                    if not self._wake.is_set():  # no newer request waiting
                        self._idle.set()
        finally:
            self._idle.set()
            if connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()
