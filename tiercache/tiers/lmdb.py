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

Packed records (``packed_record_len``): see :mod:`tiercache.tiers.lmdb_packed`. Damage met
at run time sets the store aside, then switches every process to a fresh store (or back
to the same one after a false alarm): see :mod:`tiercache.tiers.lmdb_switch`. The
environment handle is in :mod:`tiercache.tiers.lmdb_env`, the invalidation log's helpers
in :mod:`tiercache.tiers.lmdb_log`.

The tier stores bytes. Which records to evict is decided by the policy engine; the tier
only offers ``sample(probes)`` so the engine can look at random resident keys.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import lmdb
import msgpack
import numpy as np

from ..errors import StoreError, TierCacheError
from ..geometry import segment_slots
from ..keys import KEY_BYTES, Fingerprint
from . import guard, lmdb_log, lmdb_switch

# Also re-exported (``X as X``): names other modules and the tests reach through this
# module, defined in lmdb_env, lmdb_log and lmdb_packed.
from .lmdb_env import (
    _DAMAGE_ERRORS,
    _ENVS,
    _ENVS_LOCK,
    _INDEX,
    _META,
    _MIN_MAP,
    _RECORDS,
    _RUNTIME_DAMAGE,
    _SEGMETA,
    _SEGS,
    _acquire_env,
    _Env,
    _manifest_txn,
    _release_env,
    _unregister_env,
)
from .lmdb_env import PACKED_FORMAT as PACKED_FORMAT
from .lmdb_env import STORE_FORMAT as STORE_FORMAT
from .lmdb_env import WALK_DAMAGE as WALK_DAMAGE
from .lmdb_log import (
    _IV_HOST,
    _IV_META,
    _log_append,
    _log_last,
    _log_since,
)
from .lmdb_log import LOG_ENTRIES as LOG_ENTRIES
from .lmdb_packed import _IDX_FULL as _IDX_FULL
from .lmdb_packed import (
    _NO_RECORD,
    _clear_txn,
    _lookup,
    _lookup_at,
    _Packer,
    _rows_txn,
    _sample_txn,
    stage_key,
    stage_one,
)
from .lmdb_packed import MAX_RELOCATIONS_PER_WRITE as MAX_RELOCATIONS_PER_WRITE
from .lmdb_packed import SPARSE_FRACTION as SPARSE_FRACTION
from .lmdb_packed import relocation_budget as relocation_budget

T = TypeVar("T")
A = TypeVar("A")

try:  # the common case of a single set's write transaction in C (_core_src/wtxn.c)
    from .._core import set_one_txn as _set_one_txn
except ImportError:  # pragma: no cover - the extension is optional for pip
    _set_one_txn = None  # type: ignore[assignment]

C_SET = True
"""Whether :meth:`LmdbTier.put_bounded` hands a single set's common case to the compiled
``set_one_txn`` (when it is built); False: the Python path for every write (the tests
compare the two)."""

_fork_generation = 0
RESOLVE_WAIT = 60.0
"""Seconds ``close()`` waits for a check of the store under way (so that a process that
ends does not leave the others set aside)."""


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1
    _ENVS.clear()  # inherited handles must never be used (nor closed) in the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class LmdbTier:
    """Byte records keyed by 16-byte digests in an LMDB environment.

    Thread-safe. Several processes may open the same path (LMDB's own locking); each
    process opens its own environment, and a forked child reopens on first use.

    ``on_fingerprint_mismatch``: ``"error"`` (default) refuses a namespace holding another
    fingerprint, ``"coexist"`` registers this one beside it (keys never collide), and
    ``"inspect"`` checks only the format and registers nothing (``tiercache stats``).

    ``on_damage``: a store that may be damaged (``tiers/guard.py``) is checked by a page
    walk in a child process on open: ``"quarantine"`` (default) moves a damaged one aside
    and opens an empty one, ``"report"`` raises ``StoreError`` (tools that change nothing),
    ``"refuse"`` skips the check and raises only if LMDB itself refuses the files.

    ``packed_record_len``: records of exactly this many bytes are packed into multi-record
    segments (see the module docstring); ``None`` packs nothing. Reads find packed and plain
    records whatever this is set to.
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
        packed_record_len: int | None = None,
        on_damage: str = "quarantine",
    ) -> None:
        self.path = os.path.realpath(os.fspath(path))
        self.fingerprint = fingerprint
        self.namespace = namespace
        self.durable = durability == "durable"
        self._map_size = map_size or max(_MIN_MAP, min(4 * max_bytes, 2**40))
        self._max_readers = max_readers
        self._on_mismatch = on_fingerprint_mismatch
        if packed_record_len is not None and packed_record_len <= 0:
            raise ValueError("packed_record_len must be a positive number of bytes")
        self.packed_record_len = packed_record_len
        self._packed_first = packed_record_len is not None
        # the staging queue of single writes of packed-length records (lmdb_packed.stage_one)
        self._stage_key = stage_key(packed_record_len) if packed_record_len else b""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create warm store directory {self.path}: {exc}") from exc
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise StoreError(f"warm store directory {self.path} is not writable")
        self._on_damage = on_damage
        self.quarantined: list[str] = []  # folders this tier moved a damaged store to
        self.sealed: str | None = None  # damage met at run time: the store is not used
        self._sealed_handle: _Env | None = None
        self._handle: _Env | None = None
        self.switches = 0  # fresh stores this tier moved to after damage met at run time
        self._gen = 0  # the store generation its handle belongs to (lmdb_switch.py)
        self._switch_lock = threading.RLock()
        self._resolver: threading.Thread | None = None
        self._retry_at = 0.0  # when to check again after a failed check (lmdb_switch)
        self._registered = False  # this tier's fingerprint is in the store's manifest
        self._open()
        try:
            self._check_manifest()
        except StoreError:
            if self.sealed is None:  # (damage being settled: registered when it resumes)
                self.close()
                raise
        except BaseException:
            self.close()
            raise

    # -- environment lifecycle ---------------------------------------------------------
    def _open(self) -> _Env:
        with _ENVS_LOCK:
            first = _ENVS.get(self.path) is None  # this process's first open of the store
        if not first:
            return self._acquire()
        with guard.open_lock(self.path):
            if self._on_damage in ("quarantine", "report"):
                why = guard.needs_check(self.path)
                if why is not None:
                    intact, found = guard.check_in_child(self.path)
                    if intact:
                        guard.cleared(self.path)
                    elif self._on_damage == "report":  # a tool that changes nothing
                        raise self._damaged(f"{why}; {found}")
                    else:
                        self._quarantine(f"{why}; {found}")
            try:
                handle = self._acquire()
            except StoreError as exc:
                if self._on_damage != "quarantine" or not isinstance(exc.__cause__, _DAMAGE_ERRORS):
                    raise
                live, _ = guard._markers(self.path)
                if any(pid != os.getpid() for pid in live):
                    raise  # other processes use it: theirs to find out
                self._quarantine(f"it cannot be opened: {exc.__cause__}")
                handle = self._acquire()
            guard.opened(self.path)
        return handle

    def _acquire(self) -> _Env:
        try:
            handle = _acquire_env(
                self.path, self._map_size, self._max_readers, self.durable, _fork_generation
            )
        except _DAMAGE_ERRORS as exc:
            raise self._damaged(exc) from exc
        except lmdb.Error as exc:
            raise StoreError(f"cannot open warm store {self.path}: {exc}") from exc
        gen = lmdb_switch.generation(handle.seqmap)
        # a handle on files a switch replaced already (opened before it, by another tier of
        # this process): follow at the next poll
        self._gen = gen if handle.ino == lmdb_switch.data_ino(self.path) else -1
        self._handle = handle
        return handle

    def _quarantine(self, why: str) -> None:
        self.quarantined.append(guard.quarantine(self.path, why))

    @property
    def _h(self) -> _Env:
        handle = self._handle
        if handle is None and self.sealed is not None:
            self.poll_damage()  # settled meanwhile (resumed, or a fresh store)?
            handle = self._handle
        if handle is None:
            if self.sealed is not None:
                raise StoreError(
                    f"warm store {self.path} is damaged ({self.sealed}); this process "
                    "does not use it until it is checked (and replaced if damaged)"
                )
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

    def _fast_bind(self) -> tuple[Any, ...] | None:
        """What the compiled warm reader (``tiercache._core.WarmReader``) reads through, for
        the current environment handle: ``(handle, begin, index, records, segs, active,
        wake, packed_first, generation)``; None when closed. The reader calls it again
        whenever ``_handle`` changes, and reads only while ``generation`` is the process's
        fork generation (a forked child reopens through the Python path first)."""
        h = self._handle
        if h is None:
            return None
        return (
            h,
            functools.partial(h.env.begin, buffers=True),
            h.index,
            h.records,
            h.segs,
            h.active,
            h.wake,
            self._packed_first,
            h.generation,
        )

    def close(self) -> None:
        resolver = self._resolver
        if resolver is not None and resolver is not threading.current_thread():
            resolver.join(RESOLVE_WAIT)  # a check under way: let it settle for the others
        with self._switch_lock:
            handle, self._handle = self._handle, None
            sealed, self._sealed_handle = self._sealed_handle, None
        for h in (handle, sealed):
            if h is not None:
                _release_env(h, _fork_generation)

    # -- damage met at run time ----------------------------------------------------------
    def _seal(self, why: str, *, broadcast: bool = True, handle: _Env | None = None) -> None:
        """Stop using the store in this process: every later call raises ``StoreError``
        (the cache counts a miss or refuses the write), the compiled reader falls back.
        ``broadcast``: tell the other processes on the store (the flag beside the
        invalidation word) and leave the mark that makes the next open check it.
        ``handle``: the handle the error was met on (ignored if the tier moved on since).
        With ``on_damage: quarantine`` the store is then checked off the caller's thread
        and settled (:mod:`tiercache.tiers.lmdb_switch`): resumed, or replaced."""
        with self._switch_lock:
            h = self._handle
            if h is None or self.sealed is not None or (handle is not None and handle is not h):
                return
            if lmdb_switch.generation(h.seqmap) != self._gen:
                return  # settled meanwhile: the next poll follows
            self.sealed = why
            self._sealed_handle, self._handle = h, None
            guard.suspect(self.path, why)
            if broadcast:
                lmdb_switch.raise_flag(h.seqmap)
                h.publisher.publish(h.publisher.word + 1)  # wakes every reader
                guard.log.error(
                    "tiercache: warm store %s is damaged (%s); this process stops using it "
                    "(misses are recomputed) until it is checked and, if damaged, replaced",
                    self.path,
                    why,
                )
            if self._on_damage == "quarantine":
                lmdb_switch.start_check(self, self._gen, why)

    def poll_damage(self) -> bool:
        """Whether the store is set aside; follows another process that found it damaged,
        and a settled report (a false alarm: resume; a fresh store: switch to it)."""
        h = self._handle or self._sealed_handle
        if self.sealed is not None or (
            h is not None and lmdb_switch.generation(h.seqmap) != self._gen
        ):
            self._follow()  # under the switch lock: never a state half switched
        if self.sealed is not None:
            lmdb_switch.retry_check(self)
            return True
        h = self._handle
        if h is not None and lmdb_switch.flag(h.seqmap):
            self._seal("another process met damaged pages", broadcast=False)
            return self.sealed is not None
        return False

    def _follow(self) -> None:  # noqa: C901
        """The store generation moved: resume on the same files, or let go of the old
        handle (closed once no thread of this process uses it) and open the fresh store."""
        with self._switch_lock:
            h = self._handle or self._sealed_handle
            if h is None:
                return
            gen = lmdb_switch.generation(h.seqmap)
            if gen == self._gen:
                return
            if not h.replaced and h.ino == lmdb_switch.data_ino(self.path):
                self._gen = gen  # the same files: a false alarm, settled
                if self.sealed is not None:
                    self._handle, self._sealed_handle, self.sealed = h, None, None
                if not self._registered:  # opened while the report was being settled
                    self._check_manifest()
                return
            self._handle = self._sealed_handle = None
            _unregister_env(h)
            old = h
            try:
                self._acquire()
                self._check_manifest()
                self._log_above_word()
            except (TierCacheError, lmdb.Error) as exc:
                self.sealed = f"the fresh store could not be used: {exc}"
                self._sealed_handle, self._handle = self._handle, None
                self._gen = gen
                guard.log.error("tiercache: warm store %s: %s", self.path, self.sealed)
            else:
                self.sealed = None
                self.switches += 1
        # outside the lock: closing waits for this process's readers and writer of it
        _release_env(old, _fork_generation)

    def _log_above_word(self) -> None:
        """A fresh store's log must start above the invalidation word (the resolver seeds
        it so), or it would publish nothing the others see: raised here if it does not
        (files replaced by hand)."""
        h = self._h
        word: int = h.publisher.word
        if lmdb_switch.raise_log(h, word + lmdb_switch.SEQ_GAP, word):
            h.publisher.publish(word + lmdb_switch.SEQ_GAP)

    # -- manifest ----------------------------------------------------------------------
    def _damaged(self, what: object) -> StoreError:
        return StoreError(
            f"warm store {self.path} is damaged ({what}); it cannot be used safely. Its "
            f"vectors can be recomputed: move the directory aside (to inspect it) or "
            f"delete it, then open the cache again"
        )

    def _check_manifest(self) -> None:
        try:
            self._write(self._check_manifest_txn)
            self._registered = True
        except _DAMAGE_ERRORS as exc:  # e.g. MDB_CORRUPTED on the way to the manifest
            raise self._damaged(exc) from exc
        except lmdb.Error as exc:
            raise StoreError(f"cannot open warm store {self.path}: {exc}") from exc

    def _check_manifest_txn(self, txn: lmdb.Transaction, h: _Env) -> None:
        _manifest_txn(txn, h, self.path, self.namespace, self.fingerprint, self._on_mismatch)

    def manifest(self) -> dict[str, Any]:
        """The whole manifest: format version and fingerprints per namespace."""
        h = self._h
        out: dict[str, Any] = {"namespaces": {}}
        while not h.enter_read():
            h = self._h
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
    def _read(self, fn: Callable[[lmdb.Transaction, _Env], T]) -> T:
        """``fn(txn, handle)`` in a read transaction (buffers=True, no default db)."""
        h = self._h
        while True:
            if not h.enter_read():  # the store was replaced: read the current one
                h = self._h
                continue
            try:
                with h.env.begin(buffers=True) as txn:
                    return fn(txn, h)
            except lmdb.MapResizedError:
                pass
            except _RUNTIME_DAMAGE as exc:
                self._seal(f"{type(exc).__name__}: {exc}", handle=h)
                raise
            finally:
                h.exit_read()
            with h.write_lock:
                h.resize(0)

    def get_with(self, key: bytes, decode: Callable[[Any], T]) -> T | None:
        """``decode(buffer)`` of one record inside the read transaction, or None if absent.

        ``decode`` must copy what it keeps: the buffer dies with the transaction. A packed
        slot that does not hold ``key`` is passed as ``b""`` (a corrupt record, not a miss).
        """
        # The fast path of _read, inlined: no closure, no lock (see _Env.enter_read).
        h = self._handle
        if h is None or h.generation != _fork_generation:
            h = self._h
        active = h.active
        active.append(None)
        try:
            if not h.resizing:
                with h.env.begin(buffers=True) as txn:
                    return _lookup(txn, h, key, decode, self._packed_first)
        except lmdb.MapResizedError:
            pass
        except _RUNTIME_DAMAGE as exc:
            self._seal(f"{type(exc).__name__}: {exc}", handle=h)
            raise
        finally:
            active.pop()
            if h.resizing:
                h.wake()
        packed_first = self._packed_first
        return self._read(lambda txn, h: _lookup(txn, h, key, decode, packed_first))

    def get_at(
        self, key: bytes, decode: Callable[[Any, int, int, A, bytes], T], arg: A, absent: T
    ) -> T:
        """``decode(buffer, start, end, arg, key)`` of the record of ``key`` (it is
        ``buffer[start:end]``: a slot inside its packed segment, or a whole plain record),
        inside the read transaction; ``absent`` if the key is not stored. The single-get
        path: no slice, no closure, no lock.

        ``decode`` must copy what it keeps: the buffer dies with the transaction. A packed
        slot that is missing or holds another digest is passed as an empty record
        (``start == end``), to decode as corrupt: never another key's record.
        """
        # _read's fast path inlined, as in get_with (a helper call costs the hot path)
        h = self._handle
        if h is None or h.generation != _fork_generation:
            h = self._h
        active = h.active
        active.append(None)
        try:
            if not h.resizing:
                txn = h.env.begin(buffers=True)
                try:
                    return _lookup_at(txn, h, key, decode, arg, absent, self._packed_first)
                finally:
                    txn.abort()  # a read transaction: abort == commit, and no __exit__
        except lmdb.MapResizedError:
            pass
        except _RUNTIME_DAMAGE as exc:
            self._seal(f"{type(exc).__name__}: {exc}", handle=h)
            raise
        finally:
            active.pop()
            if h.resizing:
                h.wake()
        packed_first = self._packed_first
        return self._read(lambda txn, h: _lookup_at(txn, h, key, decode, arg, absent, packed_first))

    def get_rows(
        self, keys: Sequence[bytes], record_len: int
    ) -> tuple[list[int], bytes, list[tuple[int, bytes]]]:
        """Many keys in one read transaction, records of ``record_len`` bytes laid out as
        fixed rows (the batch path: its callers decode them in one vectorised step).

        Returns ``(positions, rows, others)``: ``positions`` are the indexes (ascending)
        into ``keys`` of the keys whose record is ``record_len`` bytes long; ``rows`` holds
        one row of ``KEY_BYTES + record_len`` bytes per position, the key then its record,
        copied out of the map. ``others``: ``(index, record)`` for keys whose record has
        another length, or ``b""`` where a packed slot is missing or holds another digest
        (decodes as corrupt: never another key's record). Keys in neither are absent.
        """
        if keys and set(map(len, keys)) != {KEY_BYTES}:
            raise ValueError("warm keys are 16-byte digests")
        packed_first = self._packed_first
        pos, rows, others = self._read(
            lambda txn, h: _rows_txn(txn, h, keys, record_len, packed_first)
        )
        n = len(pos)
        if n:
            width = KEY_BYTES + record_len
            got = np.ndarray((n, 2), dtype="<u8", buffer=rows, strides=(width, 8))
            want = np.frombuffer(b"".join([keys[i] for i in pos]), dtype="<u8").reshape(n, 2)
            wrong = (got != want).any(axis=1)
            if wrong.any():  # a slot holding another digest: corrupt, never served
                others += [(pos[r], _NO_RECORD) for r in np.flatnonzero(wrong).tolist()]
                others.sort()
                keep = ~wrong
                pos = [p for p, ok in zip(pos, keep.tolist()) if ok]
                rows = np.frombuffer(rows, dtype=np.uint8).reshape(n, width)[keep].tobytes()
        return pos, rows, others

    def get_many_with(self, keys: Sequence[bytes], decode: Callable[[Any], T]) -> list[T | None]:
        """Batch of :meth:`get_with` in one read transaction, results in input order."""
        packed_first = self._packed_first

        def run(txn: lmdb.Transaction, h: _Env) -> list[T | None]:
            return [_lookup(txn, h, k, decode, packed_first) for k in keys]

        return self._read(run)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return self.get_many_with(keys, bytes)

    def get_many_at(
        self,
        keys: Sequence[bytes],
        decode: Callable[[Any, int, int, A, bytes], T],
        arg: A,
        absent: T,
    ) -> list[T]:
        """Batch of :meth:`get_at` in one read transaction, results in input order: what
        a decoder that needs the key (a record's checksum is bound to it) reads through."""
        packed_first = self._packed_first

        def run(txn: lmdb.Transaction, h: _Env) -> list[T]:
            return [_lookup_at(txn, h, k, decode, arg, absent, packed_first) for k in keys]

        return self._read(run)

    def exists_many(self, keys: Sequence[bytes]) -> list[bool]:
        def run(txn: lmdb.Transaction, h: _Env) -> list[bool]:
            plain = txn.cursor(db=h.records)
            packed = txn.cursor(db=h.index)
            return [plain.set_key(k) or packed.set_key(k) for k in keys]

        return self._read(run)

    def sample(self, probes: Sequence[bytes]) -> list[bytes]:
        """For each probe, the first stored key >= probe (wrapping to the first key).

        With uniformly distributed keys (digests) and random probes this is a uniform
        sample of resident keys. Packed keys (``index``) and plain ones (``records``) are
        two sorted sets searched as one (the smaller of the two ceilings), so the answer
        does not depend on where a key lives (single writes wait plain before they are
        packed: ``_Packer.stage``). Empty store: empty list.
        """

        return self._read(lambda txn, h: _sample_txn(txn, h, probes))

    def keys(self, chunk: int = 10_000) -> Iterator[bytes]:
        """Every stored key in order, read in short transactions of ``chunk`` keys."""
        start = b""
        while True:

            def run(txn: lmdb.Transaction, h: _Env, start: bytes = start) -> list[bytes]:
                out: list[bytes] = []
                for db in (h.records, h.index):
                    cur = txn.cursor(db=db)
                    if not cur.set_range(start):
                        continue
                    n = 0
                    for k in cur.iternext(keys=True, values=False):
                        out.append(bytes(k))
                        n += 1
                        if n >= chunk:
                            break
                out.sort()
                return out[:chunk]

            batch = self._read(run)
            if not batch:
                return
            yield from batch
            start = batch[-1] + b"\x00"

    def count(self) -> int:
        return self._read(
            lambda txn, h: int(txn.stat(h.records)["entries"] + txn.stat(h.index)["entries"])
        )

    def stat(self) -> dict[str, int]:
        """Entries and bytes: ``bytes_used`` counts the pages of the record sub-databases
        (plain records, packed index, segments and their live counts)."""

        def run(txn: lmdb.Transaction, h: _Env) -> dict[str, int]:
            pages = 0
            stats = {}
            for name, db in (
                ("records", h.records),
                ("index", h.index),
                ("segs", h.segs),
                ("segmeta", h.segmeta),
            ):
                s = stats[name] = txn.stat(db)
                pages += s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
            return {
                "entries": stats["records"]["entries"] + stats["index"]["entries"],
                "bytes_used": pages * stats["records"]["psize"],
                "page_size": stats["records"]["psize"],
                "depth": max(stats["records"]["depth"], stats["index"]["depth"]),
                "packed_entries": stats["index"]["entries"],
                "segments": stats["segs"]["entries"],
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

    # -- the invalidation log ----------------------------------------------------------
    def seq_buffer(self) -> Any:
        """The memory-mapped sequence word of this store (for a ``SeqGate``)."""
        h = self._handle or self._sealed_handle  # set aside: the same page
        return h.seqmap if h is not None else self._h.seqmap

    def log_seq(self) -> int:
        """The sequence number of the last invalidation logged (0: none yet, or the store
        is set aside: a catch-up from 0 then finds a gap and starts over)."""
        try:
            return self._read(lambda txn, h: _log_last(txn, h))
        except StoreError:
            if self.sealed is None:
                raise
            return 0

    def read_log(self, after: int) -> tuple[int, list[tuple[int, bytes]] | None]:
        """``(last, entries)``: the entries logged after sequence number ``after``, in
        order, and the last number; ``entries`` is None when some of them are no longer
        kept (more than :data:`LOG_ENTRIES` behind): the caller must assume anything
        changed. One read transaction."""
        return self._read(lambda txn, h: _log_since(txn, h, after))

    def store_id(self) -> bytes:
        """This store's random 8-byte identity (created on first use): the processes
        sharing it are one host of a fleet."""

        def run(txn: lmdb.Transaction, h: _Env) -> bytes:
            sid = txn.get(_IV_HOST, db=h.meta)
            if sid is None:
                sid = os.urandom(8)
                txn.put(_IV_HOST, sid, db=h.meta)
            return bytes(sid)

        with self._h.env.begin(db=self._h.meta) as txn:
            found = txn.get(_IV_HOST)
        return bytes(found) if found is not None else self._write(run)

    def get_meta(self, name: bytes) -> bytes | None:
        """A value the invalidation machinery keeps in this store (``iv@`` + name)."""
        got = self._read(lambda txn, h: txn.get(_IV_META + name, db=h.meta))
        return bytes(got) if got is not None else None

    def apply_remote(
        self,
        keys: Sequence[bytes],
        clear: bool,
        entry: bytes,
        offset: tuple[bytes, bytes],
        newer: Callable[[bytes, bytes | None], bool],
    ) -> bool:
        """Apply another host's invalidation exactly once: in one write transaction, if
        ``newer(offset value, stored value)`` (the entry was not applied before, by this
        or another process on the store), delete ``keys`` (or every record: ``clear``),
        log ``entry`` and store ``offset`` (``iv@`` + name -> value). False if it had
        been applied already."""
        seq = 0

        def run(txn: lmdb.Transaction, h: _Env) -> bool:
            nonlocal seq
            name, value = offset
            stored = txn.get(_IV_META + name, db=h.meta)
            if not newer(value, bytes(stored) if stored is not None else None):
                return False
            if clear:
                _clear_txn(txn, h)
            elif keys:
                p = _Packer(txn, h, self.packed_record_len)
                for k in keys:
                    p.delete(k)
                p.finish()
            seq = _log_append(txn, h, entry)
            txn.put(_IV_META + name, value, db=h.meta)
            return True

        applied: bool = self._write(run)
        if seq:
            self._h.publisher.publish(seq)
        return applied

    def put_meta(self, name: bytes, value: bytes) -> None:
        self._write(lambda txn, h: txn.put(_IV_META + name, value, db=h.meta))

    def append_log(self, entry: bytes) -> int:
        """Log one invalidation entry on its own; returns its sequence number."""
        seq: int = self._write(lambda txn, h: _log_append(txn, h, entry))
        self._h.publisher.publish(seq)
        return seq

    # -- writes ------------------------------------------------------------------------
    def _write(self, fn: Callable[[lmdb.Transaction, _Env], T]) -> T:
        while True:
            h = self._h
            seq = h.seqmap
            if lmdb_switch.flag(seq) or lmdb_switch.generation(seq) != self._gen:
                self.poll_damage()  # set aside, or settled: never write to replaced files
                h = self._h
            with h.write_lock:
                if h is self._handle and not h.retired:
                    return self._write_locked(h, fn)
            # the store was set aside or replaced while this waited for the lock: again

    def _write_locked(self, h: _Env, fn: Callable[[lmdb.Transaction, _Env], T]) -> T:
        for _ in range(32):
            try:
                txn = h.env.begin(write=True)
            except lmdb.MapResizedError:
                h.resize(0)
                continue
            try:
                result = fn(txn, h)
                txn.commit()
                return result
            except lmdb.MapFullError:
                # roll the whole batch back, grow, replay it; readers wait (see exclusive)
                with h.exclusive():
                    txn.abort()
                    h.env.set_mapsize(int(h.env.info()["map_size"]) * 2)
            except lmdb.MapResizedError:
                with h.exclusive():
                    txn.abort()
                    h.env.set_mapsize(0)
            except _RUNTIME_DAMAGE as exc:
                with h.exclusive():
                    txn.abort()
                self._seal(f"{type(exc).__name__}: {exc}", handle=h)
                raise
            except BaseException:
                with h.exclusive():
                    txn.abort()
                raise
        raise StoreError(f"warm store {self.path}: map could not be grown")

    def _apply_txn(
        self,
        txn: lmdb.Transaction,
        h: _Env,
        puts: Sequence[tuple[bytes, bytes]],
        deletes: Sequence[bytes],
        counts: tuple[int, int] | None = None,
    ) -> int:
        packed_len = self.packed_record_len
        if (
            counts is not None and not deletes and len(puts) == 1 and packed_len == len(puts[0][1])
        ):  # a single set: staged without a packer (one in K packs the queue)
            full = stage_one(txn, h, puts[0][0], puts[0][1], counts[1] > 0)
            if full == b"":
                return 0  # no segment touched: queued relocations wait for the next write
            if full:
                p = _Packer(txn, h, packed_len, (1, counts[1]))
                p.pack_staged(full, packed_len)
                p.finish()
                return 0
        p = _Packer(txn, h, packed_len, counts)
        n = sum(1 for k in deletes if p.delete(k))
        if packed_len is None and not p.has_index:  # plain store, plain tier
            put = txn.put
            records = h.records
            for k, v in puts:
                put(k, v, db=records)
        else:
            p.put_many(puts)
        p.finish()
        return n

    def _apply(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes]) -> int:
        """Delete ``deletes`` then write ``puts`` in one transaction; returns keys deleted."""
        return self._write(lambda txn, h: self._apply_txn(txn, h, puts, deletes))

    def put_bounded(
        self,
        puts: Sequence[tuple[bytes, bytes]],
        capacity: int,
        choose: Callable[[int, Callable[[Sequence[bytes]], list[bytes]]], Sequence[bytes]],
        *,
        log: bytes | None = None,
        since: int | None = None,
        stale: Callable[[list[bytes]], Callable[[bytes], bool]] | None = None,
        logged: list[int] | None = None,
    ) -> int:
        """Write ``puts`` keeping at most ``capacity`` entries; returns keys evicted.

        Counting, choosing victims and writing happen in one write transaction, which
        LMDB serialises across threads *and processes*, so concurrent writers can never
        push the store past ``capacity`` between a count and a write. When the batch's new
        keys would exceed it, ``choose(excess, sample)`` names the victims; ``sample(probes)``
        samples resident keys inside the same transaction (see :meth:`sample`). The tier
        does not decide which keys go: the caller's policy does.

        ``log``: an invalidation entry logged in the same transaction (an explicit write
        overwrites what other processes may hold). ``since`` and ``stale``: a store-back
        of what was read when the log stood at ``since``: if entries were logged since,
        ``stale(entries)`` returns a predicate, and the puts it holds true for are
        skipped (their vector was invalidated while it was being read). ``logged``: a
        list the sequence number of ``log`` is appended to, once committed.
        """
        for k, _ in puts:
            if len(k) != KEY_BYTES:
                raise ValueError("warm keys are 16-byte digests")
        seq = 0
        plen = self.packed_record_len
        # a single set of a packed-length record: its common case (a key not packed, no
        # eviction, no packing of the staging queue) is written in C, byte for byte as
        # below; anything else, or 0 from it ("not handled": nothing written), runs here
        one = None
        if C_SET and log is not None and since is None and len(puts) == 1 and plen:
            key, rec = puts[0]
            entry: bytes = log  # narrowed for the closure (mypy)
            if len(rec) == plen:
                one = _set_one_txn

        def run(txn: lmdb.Transaction, h: _Env) -> int:
            nonlocal seq, puts
            if one is not None:
                s = one(
                    txn, h.records, h.index, h.meta, key, rec, entry, capacity,
                    self._stage_key, segment_slots(plen, h.psize) * KEY_BYTES,
                    lmdb_log.LOG_ENTRIES,
                )  # fmt: skip
                if s:
                    seq = s
                    return 0
            if since is not None and stale is not None and _log_last(txn, h) > since:
                _, entries = _log_since(txn, h, since)
                drop = stale([e for _, e in entries] if entries is not None else [])
                puts = [kv for kv in puts if not drop(kv[0])]
            if log is not None:
                seq = _log_append(txn, h, log)
            counts = (txn.stat(h.records)["entries"], txn.stat(h.index)["entries"])
            excess = counts[0] + counts[1] + len(puts) - capacity
            if excess > 0:
                get = txn.get
                excess -= sum(
                    1
                    for k in dict(puts)
                    if get(k, db=h.index) is not None or get(k, db=h.records) is not None
                )
            victims: Sequence[bytes] = ()
            if excess > 0:
                victims = choose(excess, lambda probes: _sample_txn(txn, h, probes))
            return self._apply_txn(txn, h, puts, victims, counts)

        evicted: int = self._write(run)
        if seq:
            self._h.publisher.publish(seq)
            if logged is not None:
                logged.append(seq)
        return evicted

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Write every (key, record) pair in one transaction (all or nothing)."""
        if not items:
            return
        for k, _ in items:
            if len(k) != KEY_BYTES:
                raise ValueError("warm keys are 16-byte digests")
        self._apply(items, ())

    def delete_many(self, keys: Sequence[bytes]) -> int:
        return sum(self.delete_each(keys))

    def delete_each(
        self, keys: Sequence[bytes], *, log: bytes | None = None, logged: list[int] | None = None
    ) -> list[bool]:
        """Delete ``keys`` in one transaction; for each, whether it was stored. ``log``:
        an invalidation entry logged in the same transaction (its number appended to
        ``logged`` once committed, as :meth:`put_bounded` does)."""
        if not keys and log is None:
            return []
        seq = 0

        def run(txn: lmdb.Transaction, h: _Env) -> list[bool]:
            nonlocal seq
            p = _Packer(txn, h, self.packed_record_len)
            gone = [p.delete(k) for k in keys]
            p.finish()
            if log is not None:
                seq = _log_append(txn, h, log)
            return gone

        flags: list[bool] = self._write(run)
        if seq:
            self._h.publisher.publish(seq)
            if logged is not None:
                logged.append(seq)
        return flags

    def replace_many(self, puts: Sequence[tuple[bytes, bytes]], deletes: Sequence[bytes]) -> int:
        """Delete ``deletes`` and write ``puts`` in one transaction; returns keys deleted."""
        for k, _ in puts:
            if len(k) != KEY_BYTES:
                raise ValueError("warm keys are 16-byte digests")
        if not puts and not deletes:
            return 0
        return self._apply(puts, deletes)

    def in_named_db(
        self, name: bytes, fn: Callable[[lmdb.Transaction, Any], T], *, write: bool = False
    ) -> T:
        """``fn(txn, db)`` on the companion sub-database ``name`` of this environment.

        For stores that live beside the vectors without a second ``lmdb.Environment`` on
        the path (the LangChain ByteStore). ``db`` is created on first use (in a committed
        write transaction) and its handle kept per environment (a forked child reopens).
        The tier never reads, counts, evicts or clears it: it is outside ``max_bytes``,
        ``stat()``, ``keys()`` and ``clear()``. The names the tier uses are refused, and
        at most 3 companion names fit (``max_dbs``).

        ``write=False``: one read transaction (``buffers=True``: ``fn`` copies what it
        keeps). ``write=True``: one write transaction on the tier's writer path (serialised
        with the tier's writes; committed when ``fn`` returns; on ``MapFullError`` the map
        grows and ``fn`` is replayed from the start, so it must not have other side effects;
        any exception aborts the whole transaction). LMDB errors propagate as ``lmdb.Error``.
        """
        if not name or name in (_RECORDS, _META, _INDEX, _SEGS, _SEGMETA):
            raise ValueError(f"{name!r} is not a companion database name")
        h = self._h
        db = h.named.get(name)
        if db is None:
            db = self._write(lambda txn, h: h.env.open_db(name, txn=txn))
            h.named[name] = db  # valid once the creating transaction committed
        if write:
            return self._write(lambda txn, h: fn(txn, db))
        return self._read(lambda txn, h: fn(txn, db))

    def copy_to(self, dest: str | os.PathLike[str], *, compact: bool = True) -> dict[str, int]:
        """A consistent copy of the store in ``dest`` (an empty or new directory), taken in
        one read transaction while other processes keep reading and writing. ``compact``
        omits free pages and renumbers the rest (LMDB's compacting copy): the copy's
        ``data.mdb`` holds only live data. Owner-only permissions. Returns the file sizes
        ``{"before", "after"}`` in bytes."""
        target = os.fspath(dest)
        os.makedirs(target, mode=0o700, exist_ok=True)
        if os.listdir(target):
            raise StoreError(f"{target} is not empty: copy_to needs an empty directory")
        h = self._h
        h.env.copy(target, compact=compact)
        out = os.path.join(target, "data.mdb")
        os.chmod(out, 0o600)
        return {
            "before": os.path.getsize(os.path.join(self.path, "data.mdb")),
            "after": os.path.getsize(out),
        }

    def clear(self, *, log: bytes | None = None) -> None:
        """Remove every record (the manifest and the invalidation log stay). ``log``: an
        invalidation entry logged in the same transaction."""
        seq = 0

        def run(txn: lmdb.Transaction, h: _Env) -> None:
            nonlocal seq
            _clear_txn(txn, h)
            if log is not None:
                seq = _log_append(txn, h, log)

        self._write(run)
        if seq:
            self._h.publisher.publish(seq)
