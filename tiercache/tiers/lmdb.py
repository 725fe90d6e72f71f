"""The warm tier: records in a memory-mapped LMDB environment on local disk.

Rules this module keeps (see docs/architecture.md):

* one ``lmdb.Environment`` per path per process, shared by every tier object on that path
  and never carried across ``fork``: a child process reopens it on first use;
* short transactions, one per batch, always in ``with`` blocks; buffers are decoded or
  copied before the transaction ends, so nothing handed out points into the map;
* ``reader_check()`` on open clears reader slots of dead processes;
* ``MapFullError`` grows the map (doubling) and retries the whole batch, which LMDB had
  rolled back; ``MapResizedError`` (another process grew it) adopts the new size;
* durability ``durable`` fsyncs every commit (one commit per batch); ``fast`` does not
  fsync: a killed process loses nothing it committed, an OS crash or power cut may lose the
  last commits.
* the manifest (``meta`` sub-database) records the format version and, per namespace, the
  fingerprint(s) of the vectors stored, so a store is never read with another model.

The tier stores bytes. Which records to evict is decided by the policy engine; the tier
only offers ``sample(probes)`` so the engine can look at random resident keys.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import lmdb
import msgpack

from ..errors import FingerprintMismatchError, StoreError
from ..keys import KEY_BYTES, Fingerprint

T = TypeVar("T")

STORE_FORMAT = 1
_RECORDS = b"records"
_META = b"meta"
_MIN_MAP = 64 * 2**20

_fork_generation = 0


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1
    _ENVS.clear()  # inherited handles must never be used (nor closed) in the child


class _Env:
    """A process-wide handle on one LMDB environment, reference counted."""

    def __init__(self, path: str, map_size: int, max_readers: int, durable: bool) -> None:
        self.path = path
        self.env = lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            max_dbs=4,
            max_readers=max_readers,
            sync=durable,
            metasync=durable,
            readahead=False,
            writemap=False,
            lock=True,
            mode=0o600,
        )
        self.env.reader_check()
        self.records = self.env.open_db(_RECORDS)
        self.meta = self.env.open_db(_META)
        self.refs = 0
        self.write_lock = threading.Lock()
        self.mu = threading.Lock()
        self.idle = threading.Condition(self.mu)
        self.readers = 0
        self.resizing = False
        self.generation = _fork_generation

    # A reader count that lets ``set_mapsize`` run only when no transaction is open in this
    # process (py-lmdb's requirement); readers of other processes are unaffected.
    def enter_read(self) -> None:
        with self.mu:
            while self.resizing:
                self.idle.wait()
            self.readers += 1

    def exit_read(self) -> None:
        with self.mu:
            self.readers -= 1
            if self.readers == 0 and self.resizing:
                self.idle.notify_all()

    def resize(self, new_size: int) -> None:
        """Set the map size (0 = adopt the size another process set). Caller holds write_lock."""
        with self.mu:
            self.resizing = True
            while self.readers:
                self.idle.wait()
            try:
                self.env.set_mapsize(new_size)
            finally:
                self.resizing = False
                self.idle.notify_all()


_ENVS: dict[str, _Env] = {}
_ENVS_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _acquire_env(path: str, map_size: int, max_readers: int, durable: bool) -> _Env:
    with _ENVS_LOCK:
        handle = _ENVS.get(path)
        if handle is None:
            handle = _Env(path, map_size, max_readers, durable)
            _ENVS[path] = handle
        handle.refs += 1
        return handle


def _release_env(handle: _Env) -> None:
    with _ENVS_LOCK:
        handle.refs -= 1
        if handle.refs <= 0 and _ENVS.get(handle.path) is handle:
            del _ENVS[handle.path]
            if handle.generation == _fork_generation:
                handle.env.close()


class LmdbTier:
    """Byte records keyed by 16-byte digests in an LMDB environment.

    Thread-safe. Several processes may open the same path (LMDB's own locking); each
    process opens its own environment, and a forked child reopens on first use.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fingerprint: Fingerprint,
        namespace: str = "default",
        durability: str = "durable",
        map_size: int | None = None,
        max_bytes: int = 2**30,
        max_readers: int = 126,
        on_fingerprint_mismatch: str = "error",
    ) -> None:
        self.path = os.path.realpath(os.fspath(path))
        self.fingerprint = fingerprint
        self.namespace = namespace
        self.durable = durability == "durable"
        self._map_size = map_size or max(_MIN_MAP, min(4 * max_bytes, 2**40))
        self._max_readers = max_readers
        self._on_mismatch = on_fingerprint_mismatch
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create warm store directory {self.path}: {exc}") from exc
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise StoreError(f"warm store directory {self.path} is not writable")
        self._handle: _Env | None = None
        self._open()
        self._check_manifest()

    # -- environment lifecycle ---------------------------------------------------------
    def _open(self) -> _Env:
        try:
            handle = _acquire_env(self.path, self._map_size, self._max_readers, self.durable)
        except lmdb.Error as exc:
            raise StoreError(f"cannot open warm store {self.path}: {exc}") from exc
        self._handle = handle
        return handle

    @property
    def _h(self) -> _Env:
        handle = self._handle
        if handle is None:
            raise StoreError("warm tier is closed")
        if handle.generation != _fork_generation:  # we are a forked child: reopen
            # The inherited handle is closed without ever being used (no transaction is
            # open in the child); LMDB clears only reader slots of *this* pid on close, so
            # the parent's readers and locks are untouched. py-lmdb refuses a second open
            # of the same files while the inherited one is open.
            self._handle = None
            with _ENVS_LOCK:
                try:
                    handle.env.close()
                except lmdb.Error:
                    pass
            handle = self._open()
        return handle

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            _release_env(handle)

    # -- manifest ----------------------------------------------------------------------
    def _check_manifest(self) -> None:
        h = self._h
        ns_key = b"ns:" + self.namespace.encode()
        mine = self.fingerprint.to_dict()
        with h.write_lock, h.env.begin(write=True, db=h.meta) as txn:
            fmt = txn.get(b"format")
            if fmt is None:
                txn.put(b"format", str(STORE_FORMAT).encode())
            elif fmt != str(STORE_FORMAT).encode():
                raise StoreError(
                    f"warm store {self.path} has format {fmt.decode(errors='replace')!r}; "
                    f"this tiercache reads format {STORE_FORMAT}"
                )
            raw = txn.get(ns_key)
            known: list[dict[str, Any]] = []
            if raw is not None:
                try:
                    known = list(msgpack.unpackb(raw, raw=False))
                except Exception as exc:  # a corrupt manifest must never be guessed around
                    raise StoreError(
                        f"warm store manifest for {self.namespace!r} is corrupt"
                    ) from exc
            if mine in known:
                return
            if known and self._on_mismatch != "coexist":
                other = Fingerprint.from_dict(known[-1])
                diff = ", ".join(f"{k}: stored {b!r} vs configured {a!r}"
                                 for k, (a, b) in self.fingerprint.diff(other).items())
                raise FingerprintMismatchError(
                    f"warm store {self.path} namespace {self.namespace!r} holds vectors of "
                    f"another fingerprint ({diff}); use another warm.namespace or set "
                    f"warm.on_fingerprint_mismatch: coexist"
                )
            known.append(mine)
            txn.put(ns_key, msgpack.packb(known, use_bin_type=True))

    def manifest(self) -> dict[str, Any]:
        """The whole manifest: format version and fingerprints per namespace."""
        h = self._h
        out: dict[str, Any] = {"namespaces": {}}
        h.enter_read()
        try:
            with h.env.begin(db=h.meta) as txn:
                for k, v in txn.cursor():
                    if k == b"format":
                        out["format"] = int(v)
                    elif k.startswith(b"ns:"):
                        out["namespaces"][k[3:].decode()] = msgpack.unpackb(v, raw=False)
        finally:
            h.exit_read()
        return out

    # -- reads -------------------------------------------------------------------------
    def _read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        h = self._h
        while True:
            h.enter_read()
            try:
                with h.env.begin(db=h.records, buffers=True) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                pass
            finally:
                h.exit_read()
            with h.write_lock:
                h.resize(0)

    def get_with(self, key: bytes, decode: Callable[[Any], T]) -> T | None:
        """``decode(buffer)`` of one record inside the read transaction, or None if absent.

        ``decode`` must copy what it keeps: the buffer dies with the transaction.
        """

        def run(txn: lmdb.Transaction) -> T | None:
            buf = txn.get(key)
            return None if buf is None else decode(buf)

        return self._read(run)

    def get_many_with(
        self, keys: Sequence[bytes], decode: Callable[[Any], T]
    ) -> list[T | None]:
        """Batch of :meth:`get_with` in one read transaction, results in input order."""

        def run(txn: lmdb.Transaction) -> list[T | None]:
            get = txn.get
            out: list[T | None] = []
            for k in keys:
                buf = get(k)
                out.append(None if buf is None else decode(buf))
            return out

        return self._read(run)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.get_many_with(keys, bytes)

    def exists_many(self, keys: Sequence[bytes]) -> list[bool]:
        def run(txn: lmdb.Transaction) -> list[bool]:
            cur = txn.cursor()
            return [cur.set_key(k) for k in keys]

        return self._read(run)

    def sample(self, probes: Sequence[bytes]) -> list[bytes]:
        """For each probe, the first stored key >= probe (wrapping to the first key).

        With uniformly distributed keys (digests) and random probes this is a uniform
        sample of resident keys. Empty store: empty list.
        """

        def run(txn: lmdb.Transaction) -> list[bytes]:
            cur = txn.cursor()
            out: list[bytes] = []
            for p in probes:
                if cur.set_range(p) or cur.first():
                    out.append(bytes(cur.key()))
            return out

        return self._read(run)

    def keys(self, chunk: int = 10_000) -> Iterator[bytes]:
        """Every stored key in order, read in short transactions of ``chunk`` keys."""
        start = b""
        while True:

            def run(txn: lmdb.Transaction, start: bytes = start) -> list[bytes]:
                cur = txn.cursor()
                out: list[bytes] = []
                if not cur.set_range(start):
                    return out
                for k in cur.iternext(keys=True, values=False):
                    out.append(bytes(k))
                    if len(out) >= chunk:
                        break
                return out

            batch = self._read(run)
            if not batch:
                return
            yield from batch
            start = batch[-1] + b"\x00"

    def count(self) -> int:
        return int(self._read(lambda txn: txn.stat(self._h.records)["entries"]))

    def stat(self) -> dict[str, int]:
        """Entries and bytes: ``bytes_used`` counts the records' B-tree pages."""

        def run(txn: lmdb.Transaction) -> dict[str, int]:
            s = txn.stat(self._h.records)
            pages = s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
            return {
                "entries": s["entries"],
                "bytes_used": pages * s["psize"],
                "page_size": s["psize"],
                "depth": s["depth"],
            }

        out = self._read(run)
        info = self._h.env.info()
        out["map_size"] = int(info["map_size"])
        out["file_bytes"] = self.file_bytes()
        return out

    def file_bytes(self) -> int:
        try:
            return os.stat(os.path.join(self.path, "data.mdb")).st_blocks * 512
        except OSError:
            return 0

    # -- writes ------------------------------------------------------------------------
    def _write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        h = self._h
        with h.write_lock:
            for _ in range(32):
                try:
                    with h.env.begin(write=True, db=h.records) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    # the transaction was aborted as a whole; grow and replay the batch
                    h.resize(int(h.env.info()["map_size"]) * 2)
                except lmdb.MapResizedError:
                    h.resize(0)
            raise StoreError(f"warm store {self.path}: map could not be grown")

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Write every (key, record) pair in one transaction (all or nothing)."""
        if not items:
            return
        for k, _ in items:
            if len(k) != KEY_BYTES:
                raise ValueError("warm keys are 16-byte digests")

        def run(txn: lmdb.Transaction) -> None:
            put = txn.put
            for k, v in items:
                put(k, v)

        self._write(run)

    def delete_many(self, keys: Sequence[bytes]) -> int:
        if not keys:
            return 0

        def run(txn: lmdb.Transaction) -> int:
            delete = txn.delete
            return sum(1 for k in keys if delete(k))

        return self._write(run)

    def replace_many(
        self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes]
    ) -> int:
        """Delete ``deletes`` and write ``puts`` in one transaction; returns keys deleted."""

        def run(txn: lmdb.Transaction) -> int:
            n = sum(1 for k in deletes if txn.delete(k))
            for k, v in puts:
                txn.put(k, v)
            return n

        return self._write(run)

    def clear(self) -> None:
        self._write(lambda txn: txn.drop(self._h.records, delete=False))

    def sync(self) -> None:
        self._h.env.sync(True)

    def compact_to(self, dest: str | os.PathLike[str]) -> None:
        """Write a compacted copy of the environment to directory ``dest``."""
        os.makedirs(dest, mode=0o700, exist_ok=True)
        self._h.env.copy(os.fspath(dest), compact=True)
