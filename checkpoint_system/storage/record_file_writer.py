"""The record-file writer: a small process that creates the file store's checkpoint record files.

Creating a file costs the kernel 0.1-1 ms on the ext4 VMs this project runs on. Done by a thread of the
chat's process, that work still needed the GIL between its system calls, and every system call of the chat's
main thread then handed the GIL over and waited to get it back. This program runs as a process of its own
(``python -I -S <this file> <doorbell fd>``: standard library only, nothing of the package is imported),
started once per chat process by ``file_publisher``; the chat's process only writes each file's path and
bytes into a pipe.

The writer does not wait on that pipe while the chat is busy: a write that wakes a sleeping reader costs the
chat's thread 25-35 us on these VMs (the wake-up crosses to the other core), one that wakes nobody 3-4 us. So
while frames keep coming, the writer looks at the pipe every ``POLL_S`` seconds, and only after ``IDLE_S``
seconds without any does it wait on the pipe again (then the next frame wakes it, once). A second pipe, the
doorbell, wakes it at once: the chat's process rings it after a ``SYNC`` frame, when it waits for its files.

Protocol. On stdin, frames: ``FRAME`` (kind, sequence number, path length, data length), then the absolute
path and the data. ``CREATE`` creates the file with ``O_EXCL`` (an existing file is never replaced); ``SYNC``
asks for an acknowledgement. On stdout, ``REPLY`` frames (kind, sequence number): ``FAILED`` names a create
that failed; ``DONE`` acknowledges every frame up to its number (sent after every ``ACK_EVERY`` creates, after
every sync, and once with number 0 when the program starts). The program ends when its input or its doorbell
ends: its chat process closed the pipes, or died.
"""

from __future__ import annotations

import os
import select
import struct
import sys
import time
from typing import BinaryIO

FRAME = struct.Struct("<cQII")
REPLY = struct.Struct("<cQ")
CREATE, SYNC = b"C", b"S"
DONE, FAILED = b"D", b"F"
ACK_EVERY = 64
POLL_S = 0.005
IDLE_S = 1.0


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may take part of it). Also used by the package."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def create_file(path: bytes, data: bytes | bytearray) -> None:
    """Create ``path`` holding ``data`` (``FileExistsError`` if it exists); a failed write removes it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, data)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


class Writer:
    """Carries out complete frames in order; tells the chat's process about failures and progress."""

    def __init__(self, replies: BinaryIO) -> None:
        self._replies = replies
        self._unacknowledged = 0

    def carry_out(self, frames: bytearray) -> None:
        """Carry out the complete frames at the start of ``frames`` and remove them from it."""
        offset = 0
        while len(frames) - offset >= FRAME.size:
            kind, number, path_size, data_size = FRAME.unpack_from(frames, offset)
            end = offset + FRAME.size + path_size + data_size
            if len(frames) < end:
                break
            if kind == CREATE:
                path_end = offset + FRAME.size + path_size
                try:
                    create_file(bytes(frames[offset + FRAME.size : path_end]), frames[path_end:end])
                except OSError:  # the chat's process creates it itself, and reports what still fails then
                    self._replies.write(REPLY.pack(FAILED, number))
                self._unacknowledged += 1
            if kind != CREATE or self._unacknowledged >= ACK_EVERY:
                self._unacknowledged = 0
                self._replies.write(REPLY.pack(DONE, number))
                self._replies.flush()
            offset = end
        del frames[:offset]


def serve(requests: int, doorbell: int, replies: BinaryIO) -> None:
    """Carry out the frames arriving on ``requests`` until it or ``doorbell`` ends."""
    replies.write(REPLY.pack(DONE, 0))
    replies.flush()
    os.set_blocking(requests, False)
    writer = Writer(replies)
    frames = bytearray()
    last_frame = time.monotonic()
    while True:
        try:
            chunk = os.read(requests, 1 << 20)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            return  # the chat's process closed the pipe: a torn last frame is never carried out
        if chunk:
            frames += chunk
            writer.carry_out(frames)
            last_frame = time.monotonic()
            continue
        idle = time.monotonic() - last_frame > IDLE_S
        watched = [doorbell, requests] if idle else [doorbell]
        ready, _, _ = select.select(watched, [], [], None if idle else POLL_S)
        if doorbell in ready and not os.read(doorbell, 4096):
            return


if __name__ == "__main__":
    serve(sys.stdin.fileno(), int(sys.argv[1]), sys.stdout.buffer)
