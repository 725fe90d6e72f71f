"""The invalidation sequence word of a warm store: 8 bytes of a memory-mapped file.

Every process that opens a warm store maps ``<store>/inval.seq`` and reads its first 8
bytes as the store's invalidation sequence number (native byte order): the number of the
last entry appended to the store's invalidation log, raised after the entry's write
transaction committed. A reader compares it with the number it has applied (one load and
one compare, in C for the compiled readers) and catches up from the log only when it
moved. The word is a hint that something changed, never the truth: the truth is the log's
own counter inside LMDB, so a lost or reset file costs one catch-up, never an update.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

try:
    from . import _core
except ImportError:  # pragma: no cover - the compiled core failed to build
    _core = None  # type: ignore[assignment]

SEQ_FILE = "inval.seq"
_SIZE = 4096  # one page: the word and room for later fields


def map_word(directory: str) -> mmap.mmap:
    """``<directory>/inval.seq`` mapped shared (created, owner-only, one page, if absent)."""
    fd = os.open(os.path.join(directory, SEQ_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < _SIZE:
            os.ftruncate(fd, _SIZE)
        return mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


class PyGate:
    """The pure-Python SeqGate, for a build without the compiled core (not atomic across
    processes: a torn read only costs a catch-up, and publish may lose a race, which
    costs one until the next invalidation)."""

    def __init__(self, buf: Any) -> None:
        self._buf: Any = memoryview(buf)
        self.seen = self.word

    @property
    def word(self) -> int:
        value: int = struct.unpack_from("=Q", self._buf, 0)[0]
        return value

    def moved(self) -> bool:
        return self.word != self.seen

    def publish(self, n: int) -> None:
        if n > self.word:
            struct.pack_into("=Q", self._buf, 0, n)

    def release(self) -> None:
        self._buf.release()


def new_gate(buf: Any) -> Any:
    """A SeqGate over ``buf`` (the compiled one when the core is built)."""
    return _core.SeqGate(buf) if _core is not None else PyGate(buf)


__all__ = ["SEQ_FILE", "PyGate", "map_word", "new_gate"]
