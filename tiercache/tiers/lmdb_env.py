"""The warm tier's LMDB environment handle: one per store path per process.

The store's layout names (sub-databases, format versions), the LMDB errors that mean
damaged files, :class:`_Env` (the reference-counted handle every
:class:`~tiercache.tiers.lmdb.LmdbTier` on a path shares) and this process's registry of
handles (``_acquire_env`` / ``_release_env``; the fork rule, which empties it in a child,
is in :mod:`tiercache.tiers.lmdb`), and the manifest check run when a tier opens a store.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import lmdb
import msgpack

from ..errors import FingerprintMismatchError, StoreError
from ..keys import Fingerprint
from ..seqword import map_word, new_gate
from . import guard
from .lmdb_log import _IV_SEQ

STORE_FORMAT = 1
"""Format of a store holding plain records only (what every earlier tiercache wrote)."""
PACKED_FORMAT = 2
"""Format of a store that may hold packed segments. Written in the transaction that creates
the first segment, so an older tiercache (which reads only ``records``) refuses the store
instead of silently missing, miscounting or failing to delete packed records. A format-1
store opens and reads unchanged; packing is additive."""
_READABLE_FORMATS = (str(STORE_FORMAT).encode(), str(PACKED_FORMAT).encode())

_RECORDS = b"records"
_META = b"meta"
_INDEX = b"index"
_SEGS = b"segs"
_SEGMETA = b"segmeta"
_MIN_MAP = 64 * 2**20


_DAMAGE_ERRORS = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.IncompatibleError,
    lmdb.BadValsizeError,
    lmdb.PanicError,
)
"""LMDB errors that mean the files themselves are damaged (not a busy or full store)."""

_RUNTIME_DAMAGE = (*_DAMAGE_ERRORS, lmdb.BadTxnError)
"""Errors met while serving that set the store aside: the damage errors, and
``MDB_BAD_TXN``, which is what a read transaction that met a damaged page reports."""

WALK_DAMAGE = (*_RUNTIME_DAMAGE, lmdb.VersionMismatchError, lmdb.BadRslotError, lmdb.BadDbiError)
"""Errors of the page walk (``guard.walk``) that mean damaged pages; any other failure of
the walk (a full map, a permission, a busy lock table) says nothing about the pages."""


class _Env:
    """A process-wide handle on one LMDB environment, reference counted."""

    def __init__(
        self, path: str, map_size: int, max_readers: int, durable: bool, generation: int
    ) -> None:
        self.path = path
        self.env = lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            max_dbs=8,
            max_readers=max_readers,
            sync=durable,
            metasync=durable,
            readahead=False,
            writemap=False,
            lock=True,
            mode=0o600,
        )
        try:
            _check_file(path, self.env)
            self.env.reader_check()
            self.records = self.env.open_db(_RECORDS)
            self.meta = self.env.open_db(_META)
            self.index = self.env.open_db(_INDEX)
            self.segs = self.env.open_db(_SEGS)
            self.segmeta = self.env.open_db(_SEGMETA)
            self.psize = int(self.env.stat()["psize"])
        except BaseException:  # a damaged store: never leave the files open in this process
            self.env.close()
            raise
        self.refs = 0
        # which files it has open (a run-time switch replaces data.mdb: lmdb_switch.py)
        self.ino = _ino(path)
        self.replaced = False  # a run-time switch replaced its files (lmdb_switch.py)
        self.retired = False  # and it is closed: no new transaction (retire_close)
        self.write_lock = threading.Lock()
        self.mu = threading.Lock()
        self.idle = threading.Condition(self.mu)
        # Read transactions of this process that are open: one list item each. list.append
        # and list.pop are atomic under the GIL, so the hot path takes no lock.
        self.active: list[None] = []
        self.resizing = False
        self.generation = generation  # the fork generation it was opened in
        self.named: dict[bytes, Any] = {}  # LmdbTier.in_named_db's handles, by name
        # the invalidation sequence word (seqword.py), raised to the log's own counter
        self.seqmap = map_word(path)
        self.publisher = new_gate(self.seqmap)
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(_IV_SEQ)
        self.publisher.publish(int.from_bytes(raw, "big") if raw else 0)

    def close(self) -> None:
        self.env.close()
        if not self.retired:  # a replaced store's files are not the path's any more
            guard.closed(self.path)  # a clean close: the last one out stamps the store
        self.publisher.release()
        with contextlib.suppress(BufferError):  # a SeqGate still holds it: unmapped with it
            self.seqmap.close()

    # ``set_mapsize`` may run only when no transaction is open in this process (py-lmdb's
    # requirement); readers of other processes are unaffected. A reader announces itself
    # (append) and *then* looks at ``resizing``; the resizer sets ``resizing`` and *then*
    # looks at the count. Under the GIL these steps are sequentially consistent, so either
    # the reader sees the flag (and backs off) or the resizer sees the reader (and waits).
    # The lock is taken only while a resize is pending.
    def enter_read(self) -> bool:
        """Announce a read transaction; False (nothing announced) once the handle is
        retired: the caller reads through the tier's current handle instead."""
        active = self.active
        while True:
            active.append(None)
            if not self.resizing:
                return True
            active.pop()
            with self.mu:
                self.idle.notify_all()
                while self.resizing:
                    if self.retired:
                        return False
                    self.idle.wait()

    def exit_read(self) -> None:
        self.active.pop()
        if self.resizing:
            self.wake()

    def wake(self) -> None:
        with self.mu:
            self.idle.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold off this process's readers until the block ends (caller holds write_lock).

        Needed for ``set_mapsize`` (no transaction may be open in this process), and for
        aborting a write transaction: py-lmdb 3.0's abort waits until no other thread is
        inside an LMDB call, which threads reading in a loop can postpone forever
        (measured: a writer hung in ``trans_abort`` beside three reading threads).
        """
        with self.mu:
            self.resizing = True
            try:
                while self.active:
                    self.idle.wait(0.05)
                yield
            finally:
                self.resizing = False
                self.idle.notify_all()

    def retire_close(self) -> None:
        """Close a handle on files a run-time switch replaced (its last user let go of it):
        no writer of this process in it (``write_lock``), readers that announced
        themselves finish first, and ``resizing`` stays set for good, so a reader that
        bound it late (the compiled reader included) backs off to the tier's current
        handle instead of opening a transaction on a closed environment."""
        with self.write_lock:
            with self.mu:
                self.retired = True
                self.resizing = True
                self.idle.notify_all()
                while self.active:
                    self.idle.wait(0.05)
            self.close()

    def resize(self, new_size: int) -> None:
        """Set the map size (0 = adopt the size another process set). Caller holds write_lock."""
        with self.exclusive():
            self.env.set_mapsize(new_size)


def _ino(path: str) -> int | None:
    try:
        return os.stat(os.path.join(path, "data.mdb")).st_ino
    except OSError:
        return None


def _check_file(path: str, env: lmdb.Environment) -> None:
    """Refuse a ``data.mdb`` shorter than the pages its meta page says are in use, before
    any page is read: LMDB would map the missing pages, and the first touch of one kills
    the process (SIGBUS)."""
    need = (int(env.info()["last_pgno"]) + 1) * int(env.stat()["psize"])
    try:
        size = os.stat(os.path.join(path, "data.mdb")).st_size
    except OSError:
        return
    if size < need:
        raise lmdb.CorruptedError(f"data.mdb is {size} bytes, its pages need {need}: truncated")


def _manifest_txn(
    txn: lmdb.Transaction,
    h: _Env,
    path: str,
    namespace: str,
    fingerprint: Fingerprint,
    on_mismatch: str,
) -> None:
    """Check the store's format and register ``fingerprint`` for ``namespace`` in the
    manifest (``meta``), inside a write transaction (``LmdbTier``'s ``on_fingerprint_
    mismatch`` rules)."""
    ns_key = b"ns:" + namespace.encode()
    mine = fingerprint.to_dict()
    meta = h.meta
    fmt = txn.get(b"format", db=meta)
    if fmt is None:
        txn.put(b"format", str(STORE_FORMAT).encode(), db=meta)
    elif fmt not in _READABLE_FORMATS:
        raise StoreError(
            f"warm store {path} has format {bytes(fmt).decode(errors='replace')!r}; "
            f"this tiercache reads formats {STORE_FORMAT} and {PACKED_FORMAT}"
        )
    if on_mismatch == "inspect":  # read-only look: register nothing
        return
    raw = txn.get(ns_key, db=meta)
    known: list[dict[str, Any]] = []
    if raw is not None:
        try:
            known = list(msgpack.unpackb(raw, raw=False))
        except Exception as exc:  # a corrupt manifest must never be guessed around
            raise StoreError(f"warm store manifest for {namespace!r} is corrupt") from exc
    if mine in known:
        return
    if known and on_mismatch != "coexist":
        other = Fingerprint.from_dict(known[-1])
        diff = ", ".join(
            f"{k}: stored {b!r} vs configured {a!r}"
            for k, (a, b) in fingerprint.diff(other).items()
        )
        raise FingerprintMismatchError(
            f"warm store {path} namespace {namespace!r} holds vectors of "
            f"another fingerprint ({diff}); use another warm.namespace or set "
            f"warm.on_fingerprint_mismatch: coexist"
        )
    known.append(mine)
    txn.put(ns_key, msgpack.packb(known, use_bin_type=True), db=meta)


_ENVS: dict[str, _Env] = {}
"""This process's environment handles by path (lmdb.py clears it in a forked child)."""
_ENVS_LOCK = threading.Lock()


def _acquire_env(
    path: str, map_size: int, max_readers: int, durable: bool, generation: int
) -> _Env:
    with _ENVS_LOCK:
        handle = _ENVS.get(path)
        if handle is None:
            handle = _Env(path, map_size, max_readers, durable, generation)
            _ENVS[path] = handle
        handle.refs += 1
        return handle


def _release_env(handle: _Env, generation: int) -> None:
    """Drop one reference; the last closes it (not a handle inherited across a fork:
    ``generation`` is the process's fork generation)."""
    with _ENVS_LOCK:
        handle.refs -= 1
        if handle.refs > 0:
            return
        if _ENVS.get(handle.path) is handle:
            del _ENVS[handle.path]
            if handle.generation == generation:
                handle.close()
            return
        replaced = handle.replaced and handle.generation == generation
    if replaced:  # outside the registry's lock: it waits for this process's readers
        handle.retire_close()


def _unregister_env(handle: _Env) -> None:
    """The files of ``handle`` were replaced (a run-time switch): the next acquire of its
    path opens the new ones; it is closed when its last user releases it."""
    with _ENVS_LOCK:
        handle.replaced = True
        if _ENVS.get(handle.path) is handle:
            del _ENVS[handle.path]


__all__ = ["PACKED_FORMAT", "STORE_FORMAT", "WALK_DAMAGE"]
