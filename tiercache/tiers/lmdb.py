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

Packed records (``packed_record_len``; docs/record-format.md, "LMDB page geometry"): records
of exactly that length are stored as slots (16-byte digest + record) of multi-record
*segments* (sub-database ``segs``, 8-byte big-endian ids, appended in id order) reached
through ``index`` (digest -> segment id, slot offset, record length). Other records stay
one per key in ``records``. A key lives in exactly one of the two places. Segment live
counts are in ``segmeta``; the open (partly filled) segment per record length and the
segments waiting for relocation are in ``meta`` under ``pk:`` keys.

The tier stores bytes. Which records to evict is decided by the policy engine; the tier
only offers ``sample(probes)`` so the engine can look at random resident keys.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import lmdb
import msgpack
import numpy as np

from ..errors import FingerprintMismatchError, StoreError
from ..geometry import MAX_SEGMENT_SLOTS, segment_slots
from ..keys import KEY_BYTES, Fingerprint
from ..seqword import map_word, new_gate
from . import guard

T = TypeVar("T")
A = TypeVar("A")

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

_IDX = struct.Struct("<II")  # after the 8-byte segment id: slot byte offset, record length
_IDX_FULL = struct.Struct("<8sII")  # the whole 16-byte index value
_SEGMETA_V = struct.Struct("<III")  # live slots, record length, slots per segment (K)
_SEG_ID = struct.Struct(">Q")
_PK_OPEN = b"pk:open:"  # + u32 BE record length -> open segment id
_PK_SPARSE = b"pk:sparse"  # concatenated 8-byte ids of segments waiting for relocation
# The invalidation log (tiercache/invalidation.py writes and reads its entries; the tier
# keeps them opaque): the last sequence number, and entry n under _IV_LOG + n (u64 BE).
_IV_SEQ = b"iv#"
_IV_LOG = b"iv:"
_IV_HOST = b"iv#host"  # this store's identity in a fleet
_IV_META = b"iv@"  # + name: the fleet channel's offsets and epoch
LOG_ENTRIES = 4096
"""Invalidation log entries a warm store keeps (the oldest is dropped by the next)."""

SPARSE_FRACTION = 0.5
"""A closed segment with fewer live slots than this fraction of K is relocated. Under
uniform random deletes a segment spends time ~1/live at each live count, so the average
fill of closed segments is (1 - f) / ln(1 / f): 54% for f = 1/4 (worse than plain records
for 384-d float32), 72% for f = 1/2, at the cost of f / (1 - f) moved records per freed
slot (1/3 and 1). See docs/record-format.md."""
MAX_RELOCATIONS_PER_WRITE = 2
"""Segments relocated per write transaction at least, when some are waiting; a transaction
that frees n packed slots may relocate ``2 * n / K`` more (see relocation_budget)."""
_MAX_PENDING = 4096

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

_fork_generation = 0


def _after_fork() -> None:
    global _fork_generation
    _fork_generation += 1
    _ENVS.clear()  # inherited handles must never be used (nor closed) in the child


def relocation_budget(freed: int, page_size: int = 4096, record_len: int | None = None) -> int:
    """Segments one write transaction may relocate: a constant plus twice the segments'
    worth of slots it freed, so relocation keeps pace with deletes (a relocation reclaims
    at least (1 - SPARSE_FRACTION) * K slots) while the work stays proportional to the
    batch: at most ``2 + 2 * freed / K`` segments, each moving under SPARSE_FRACTION * K
    records."""
    k = segment_slots(record_len, page_size) if record_len else MAX_SEGMENT_SLOTS
    return MAX_RELOCATIONS_PER_WRITE + math.ceil(2 * freed / k)


class _Env:
    """A process-wide handle on one LMDB environment, reference counted."""

    def __init__(self, path: str, map_size: int, max_readers: int, durable: bool) -> None:
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
        self.write_lock = threading.Lock()
        self.mu = threading.Lock()
        self.idle = threading.Condition(self.mu)
        # Read transactions of this process that are open: one list item each. list.append
        # and list.pop are atomic under the GIL, so the hot path takes no lock.
        self.active: list[None] = []
        self.resizing = False
        self.generation = _fork_generation
        self.named: dict[bytes, Any] = {}  # LmdbTier.in_named_db's handles, by name
        # the invalidation sequence word (seqword.py), raised to the log's own counter
        self.seqmap = map_word(path)
        self.publisher = new_gate(self.seqmap)
        with self.env.begin(db=self.meta) as txn:
            raw = txn.get(_IV_SEQ)
        self.publisher.publish(int.from_bytes(raw, "big") if raw else 0)

    def close(self) -> None:
        self.env.close()
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
    def enter_read(self) -> None:
        active = self.active
        while True:
            active.append(None)
            if not self.resizing:
                return
            active.pop()
            with self.mu:
                self.idle.notify_all()
                while self.resizing:
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

    def resize(self, new_size: int) -> None:
        """Set the map size (0 = adopt the size another process set). Caller holds write_lock."""
        with self.exclusive():
            self.env.set_mapsize(new_size)


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
                handle.close()


def _lookup(
    txn: lmdb.Transaction, h: _Env, key: bytes, decode: Callable[[Any], T], packed_first: bool
) -> T | None:
    """One key inside a read transaction opened with ``buffers=True`` and no default db."""
    if packed_first:
        iv = txn.get(key, db=h.index)
        if iv is None:
            buf = txn.get(key, db=h.records)
            return None if buf is None else decode(buf)
    else:
        buf = txn.get(key, db=h.records)
        if buf is not None:
            return decode(buf)
        iv = txn.get(key, db=h.index)
        if iv is None:
            return None
    return decode(_slot(txn, h, key, iv))


def _slot(txn: lmdb.Transaction, h: _Env, key: bytes, iv: Any) -> Any:
    """The record an index value points to, or ``b""`` (decodes as corrupt) if it is not
    there or its slot holds another digest: never another key's record."""
    if len(iv) != 16:
        return b""
    sid, off, ln = _IDX_FULL.unpack(iv)
    seg = txn.get(sid, db=h.segs)
    if seg is None:
        return b""
    end = off + KEY_BYTES + ln
    if end > len(seg) or seg[off : off + KEY_BYTES] != key:
        return b""
    return seg[off + KEY_BYTES : end]


_IDX_UNPACK = _IDX_FULL.unpack
_DIGEST_AT = struct.Struct(f"{KEY_BYTES}s").unpack_from
_NO_RECORD = b""


def _lookup_at(
    txn: lmdb.Transaction,
    h: _Env,
    key: bytes,
    decode: Callable[[Any, int, int, A, bytes], T],
    arg: A,
    absent: T,
    packed_first: bool,
) -> T:
    """:meth:`LmdbTier.get_at` inside a read transaction (buffers=True)."""
    get = txn.get
    if packed_first:
        iv = get(key, None, h.index)
        if iv is None:
            buf = get(key, None, h.records)
            return absent if buf is None else decode(buf, 0, len(buf), arg, key)
    else:
        buf = get(key, None, h.records)
        if buf is not None:
            return decode(buf, 0, len(buf), arg, key)
        iv = get(key, None, h.index)
        if iv is None:
            return absent
    if len(iv) == 16:
        sid, off, ln = _IDX_UNPACK(iv)
        seg = get(sid, None, h.segs)
        if seg is not None:
            end = off + KEY_BYTES + ln
            if end <= len(seg) and _DIGEST_AT(seg, off)[0] == key:
                return decode(seg, off + KEY_BYTES, end, arg, key)
    return decode(_NO_RECORD, 0, 0, arg, key)  # not there, or another digest: corrupt


def _rows_txn(
    txn: lmdb.Transaction, h: _Env, keys: Sequence[bytes], record_len: int, packed_first: bool
) -> tuple[list[int], bytes, list[tuple[int, bytes]]]:
    """:meth:`LmdbTier.get_rows` inside a read transaction (buffers=True); the rows'
    digests are not compared yet."""
    get = txn.get
    index, records, segs = h.index, h.records, h.segs
    unpack = _IDX_UNPACK
    pos: list[int] = []
    parts: list[Any] = []
    others: list[tuple[int, bytes]] = []
    add_pos, add_part, add_other = pos.append, parts.append, others.append
    for i, k in enumerate(keys):
        if packed_first:
            iv = get(k, None, index)
            buf = get(k, None, records) if iv is None else None
        else:
            buf = get(k, None, records)
            iv = get(k, None, index) if buf is None else None
        if buf is not None:  # a plain record
            if len(buf) == record_len:
                add_pos(i)
                add_part(k)
                add_part(buf)
            else:
                add_other((i, bytes(buf)))
            continue
        if iv is None:
            continue
        if len(iv) != 16:
            add_other((i, _NO_RECORD))
            continue
        sid, off, ln = unpack(iv)
        seg = get(sid, None, segs)
        end = off + KEY_BYTES + ln
        if seg is None or end > len(seg):
            add_other((i, _NO_RECORD))
        elif ln == record_len:
            add_pos(i)
            add_part(seg[off:end])  # digest + record: the digest is compared in one go
        elif _DIGEST_AT(seg, off)[0] == k:
            add_other((i, bytes(seg[off + KEY_BYTES : end])))
        else:
            add_other((i, _NO_RECORD))
    return pos, b"".join(parts), others


class _Packer:
    """The packed-record bookkeeping of one write transaction.

    Index entries and plain records are written to the transaction as they change; segment
    contents and live counts are kept here and written once per segment in ``finish``, so
    a batch rewrites each touched segment once.
    """

    def __init__(self, txn: lmdb.Transaction, h: _Env, packed_len: int | None) -> None:
        self.txn = txn
        self.h = h
        self.packed_len = packed_len
        self.bufs: dict[bytes, bytearray] = {}
        self.metas: dict[bytes, list[int]] = {}  # sid -> [live, record_len, K]
        self.new: set[bytes] = set()
        self.dirty: set[bytes] = set()
        self.dropped: set[bytes] = set()
        self.open: dict[int, bytes | None] = {}
        self.open_dirty: set[int] = set()
        self.sparse: list[bytes] = []
        self.removed = 0  # packed slots freed in this transaction
        self.next_id: int | None = None
        self.has_plain = txn.stat(h.records)["entries"] > 0
        self.has_index = txn.stat(h.index)["entries"] > 0

    # -- segment access --------------------------------------------------------------
    def _meta(self, sid: bytes) -> list[int] | None:
        m = self.metas.get(sid)
        if m is None and sid not in self.dropped:
            raw = self.txn.get(sid, db=self.h.segmeta)
            if raw is None or len(raw) != _SEGMETA_V.size:
                return None
            m = list(_SEGMETA_V.unpack(raw))
            self.metas[sid] = m
        return m

    def _buf(self, sid: bytes) -> bytearray | None:
        b = self.bufs.get(sid)
        if b is None and sid not in self.dropped:
            raw = self.txn.get(sid, db=self.h.segs)
            if raw is None:
                return None
            b = bytearray(raw)
            self.bufs[sid] = b
        return b

    def _open_sid(self, length: int) -> bytes | None:
        if length not in self.open:
            raw = self.txn.get(_PK_OPEN + length.to_bytes(4, "big"), db=self.h.meta)
            self.open[length] = bytes(raw) if raw is not None and len(raw) == 8 else None
        return self.open[length]

    def _set_open(self, length: int, sid: bytes | None) -> None:
        self.open[length] = sid
        self.open_dirty.add(length)

    def _new_segment(self, length: int) -> bytes:
        if self.next_id is None:
            cur = self.txn.cursor(db=self.h.segs)
            self.next_id = _SEG_ID.unpack(cur.key())[0] + 1 if cur.last() else 1
        sid = _SEG_ID.pack(self.next_id)
        self.next_id += 1
        self.bufs[sid] = bytearray()
        self.metas[sid] = [0, length, segment_slots(length, self.h.psize)]
        self.new.add(sid)
        self._set_open(length, sid)
        return sid

    def _drop_segment(self, sid: bytes) -> None:
        m = self.metas.pop(sid, None)
        self.bufs.pop(sid, None)
        self.dirty.discard(sid)
        if sid in self.new:
            self.new.discard(sid)  # never written
        self.dropped.add(sid)
        if m is not None and self._open_sid(m[1]) == sid:
            self._set_open(m[1], None)

    # -- record operations -------------------------------------------------------------
    def add(self, key: bytes, rec: bytes) -> None:
        """Append a packed record to the open segment (a new one when it is full)."""
        length = len(rec)
        sid = self._open_sid(length)
        buf = meta = None
        if sid is not None:
            buf, meta = self._buf(sid), self._meta(sid)
            if (
                buf is None
                or meta is None
                or meta[1] != length
                or len(buf) >= meta[2] * (KEY_BYTES + length)
            ):
                buf = None
        if sid is None or buf is None or meta is None:
            sid = self._new_segment(length)
            buf, meta = self.bufs[sid], self.metas[sid]
        off = len(buf)
        self.dirty.add(sid)
        buf += key
        buf += rec
        meta[0] += 1
        self.txn.put(key, sid + _IDX.pack(off, length), db=self.h.index)
        self.has_index = True

    def unpack(self, key: bytes) -> bool:
        """Remove ``key`` from the packed side; True if it was there."""
        if not self.has_index:
            return False
        iv = self.txn.get(key, db=self.h.index)
        if iv is None:
            return False
        sid = bytes(iv[:8])
        self.txn.delete(key, db=self.h.index)
        meta = self._meta(sid)
        if meta is None:
            return True
        meta[0] -= 1
        self.removed += 1
        if meta[0] <= 0:
            self._drop_segment(sid)
        elif meta[0] < meta[2] * SPARSE_FRACTION and self._open_sid(meta[1]) != sid:
            self.sparse.append(sid)
        return True

    def put(self, key: bytes, rec: bytes) -> None:
        if len(rec) == self.packed_len:
            if self.has_index:
                iv = self.txn.get(key, db=self.h.index)
                if iv is not None and self._overwrite(key, bytes(iv), rec):
                    return
                if iv is not None:
                    self.unpack(key)
            if self.has_plain:
                self.txn.delete(key, db=self.h.records)
            self.add(key, rec)
        else:
            self.unpack(key)
            self.txn.put(key, rec, db=self.h.records)
            self.has_plain = True

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:  # noqa: C901
        """``put`` of every item, in order (a key given twice keeps its last record).

        The bulk path: records of the packed length are appended slot by slot to the open
        segment and then to new segments built with one join each, and their index
        entries are written with one ``putmulti`` in key order that never overwrites. A
        key that was stored already is found by that (it is the rare case: no lookup per
        key beforehand); its new slot is freed again and the record goes through
        :meth:`put`, which overwrites it where it is. Other lengths go through :meth:`put`.
        """
        length = self.packed_len
        if length is None or len(items) < 2:
            for k, v in items:
                self.put(k, v)
            return
        if len(set(k for k, _ in items)) != len(items):
            items = list(dict(items).items())  # the last record per key, as put would
        txn, h = self.txn, self.h
        fresh: list[tuple[bytes, bytes]] = []
        if self.has_plain:  # a plain record of one of these keys must go: put handles it
            get, records = txn.get, h.records
            for item in items:
                if len(item[1]) != length or get(item[0], None, records) is not None:
                    self.put(*item)
                else:
                    fresh.append(item)
        else:
            for item in items:
                if len(item[1]) != length:
                    self.put(*item)
                else:
                    fresh.append(item)
        if not fresh:
            return
        slot = KEY_BYTES + length
        pack = _IDX.pack
        entries: list[tuple[bytes, bytes]] = []
        done = 0
        while done < len(fresh):
            sid = self._open_sid(length)
            buf = meta = None
            if sid is not None:
                buf, meta = self._buf(sid), self._meta(sid)
                if buf is None or meta is None or meta[1] != length or len(buf) >= meta[2] * slot:
                    buf = None
            if sid is None or buf is None or meta is None:
                sid = self._new_segment(length)
                buf, meta = self.bufs[sid], self.metas[sid]
            part = fresh[done : done + meta[2] - len(buf) // slot]
            off = len(buf)
            buf += b"".join(itertools.chain.from_iterable(part))
            entries += [(k, sid + pack(off + i * slot, length)) for i, (k, _) in enumerate(part)]
            meta[0] += len(part)
            self.dirty.add(sid)
            done += len(part)
        entries.sort()  # in key order: each index page is touched once, left to right
        _, added = txn.cursor(db=h.index).putmulti(entries, overwrite=False)
        self.has_index = True
        if added != len(entries):  # some keys were stored already (packed): overwrite them
            get, index = txn.get, h.index
            recs = dict(fresh)
            for k, iv in entries:
                if get(k, None, index) != iv:
                    self._free_slot(iv[:8])  # the new slot stays unreferenced, as a delete's
                    self.put(k, recs[k])

    def _free_slot(self, sid: bytes) -> None:
        """One slot of segment ``sid`` no longer live (its index entry points elsewhere)."""
        meta = self._meta(sid)
        if meta is None:
            return
        meta[0] -= 1
        self.removed += 1
        if meta[0] <= 0:
            self._drop_segment(sid)
        elif meta[0] < meta[2] * SPARSE_FRACTION and self._open_sid(meta[1]) != sid:
            self.sparse.append(sid)

    def _overwrite(self, key: bytes, iv: bytes, rec: bytes) -> bool:
        sid = iv[:8]
        off, length = _IDX.unpack_from(iv, 8)
        if length != len(rec):
            return False
        buf = self._buf(sid)
        end = off + KEY_BYTES + length
        if buf is None or end > len(buf) or buf[off : off + KEY_BYTES] != key:
            return False
        buf[off + KEY_BYTES : end] = rec
        self.dirty.add(sid)
        return True

    def delete(self, key: bytes) -> bool:
        gone = bool(self.has_plain and self.txn.delete(key, db=self.h.records))
        return self.unpack(key) or gone

    def relocate(self, sid: bytes) -> bool:
        """Move the live slots of a sparse closed segment to the open one; drop it."""
        meta = self._meta(sid)
        if meta is None or meta[0] >= meta[2] * SPARSE_FRACTION or self._open_sid(meta[1]) == sid:
            return False
        buf = self._buf(sid)
        if buf is None:
            return False
        length = meta[1]
        size = KEY_BYTES + length
        get = self.txn.get
        live: list[tuple[bytes, bytes]] = []
        for off in range(0, len(buf) - size + 1, size):
            key = bytes(buf[off : off + KEY_BYTES])
            iv = get(key, db=self.h.index)
            if iv is not None and iv[:8] == sid and _IDX.unpack_from(iv, 8) == (off, length):
                live.append((key, bytes(buf[off + KEY_BYTES : off + size])))
        self._drop_segment(sid)
        for key, rec in live:
            self.add(key, rec)
        return True

    # -- commit ------------------------------------------------------------------------
    def finish(self) -> None:  # noqa: C901
        txn, h = self.txn, self.h
        raw = txn.get(_PK_SPARSE, db=h.meta)
        if raw is not None or self.sparse:
            pending = [bytes(raw[i : i + 8]) for i in range(0, len(raw), 8)] if raw else []
            todo = list(dict.fromkeys(pending + self.sparse))
            done = 0
            budget = relocation_budget(self.removed, self.h.psize, self.packed_len)
            rest: list[bytes] = []
            for sid in todo:
                if sid in self.dropped:
                    continue
                if done < budget:
                    done += self.relocate(sid)
                else:
                    rest.append(sid)
            rest = [s for s in rest if s not in self.dropped][:_MAX_PENDING]
            if rest:
                txn.put(_PK_SPARSE, b"".join(rest), db=h.meta)
            elif raw is not None:
                txn.delete(_PK_SPARSE, db=h.meta)
        for sid in self.dropped:
            if sid not in self.new:
                txn.delete(sid, db=h.segs)
                txn.delete(sid, db=h.segmeta)
        for sid, m in self.metas.items():
            if sid in self.new:
                continue
            txn.put(sid, _SEGMETA_V.pack(*m), db=h.segmeta)
        for sid in self.dirty:
            if sid not in self.new:
                txn.put(sid, self.bufs[sid], db=h.segs)
        for sid in sorted(self.new):  # ids above every stored one: append, dense pages
            if not (
                txn.put(sid, self.bufs[sid], append=True, db=h.segs)
                and txn.put(sid, _SEGMETA_V.pack(*self.metas[sid]), append=True, db=h.segmeta)
            ):
                raise StoreError("warm store: segment ids out of order")
        for length in self.open_dirty:
            pk = _PK_OPEN + length.to_bytes(4, "big")
            open_sid = self.open[length]
            if open_sid is None or open_sid in self.dropped:
                txn.delete(pk, db=h.meta)
            else:
                txn.put(pk, open_sid, db=h.meta)
        if self.new and txn.get(b"format", db=h.meta) != _READABLE_FORMATS[1]:
            txn.put(b"format", str(PACKED_FORMAT).encode(), db=h.meta)


def _clear_txn(txn: lmdb.Transaction, h: _Env) -> None:
    for db in (h.records, h.index, h.segs, h.segmeta):
        txn.drop(db, delete=False)
    cur = txn.cursor(db=h.meta)
    if cur.set_range(b"pk:"):
        while cur.key()[:3] == b"pk:":
            if not cur.delete():
                break


def _log_last(txn: lmdb.Transaction, h: _Env) -> int:
    raw = txn.get(_IV_SEQ, db=h.meta)
    return int.from_bytes(raw, "big") if raw else 0


def _log_append(txn: lmdb.Transaction, h: _Env, entry: bytes) -> int:
    """Append ``entry`` to the invalidation log (dropping the oldest beyond LOG_ENTRIES);
    its sequence number. Published by the caller after the commit."""
    seq = _log_last(txn, h) + 1
    txn.put(_IV_SEQ, seq.to_bytes(8, "big"), db=h.meta)
    txn.put(_IV_LOG + seq.to_bytes(8, "big"), entry, db=h.meta)
    if seq > LOG_ENTRIES:
        txn.delete(_IV_LOG + (seq - LOG_ENTRIES).to_bytes(8, "big"), db=h.meta)
    return seq


def _log_since(
    txn: lmdb.Transaction, h: _Env, after: int
) -> tuple[int, list[tuple[int, bytes]] | None]:
    last = _log_last(txn, h)
    if last <= after:
        return last, []
    if last - after > LOG_ENTRIES - 1 or after < 0:
        return last, None
    out: list[tuple[int, bytes]] = []
    cur = txn.cursor(db=h.meta)
    if cur.set_key(_IV_LOG + (after + 1).to_bytes(8, "big")):
        for k, v in cur:
            if k[:3] != _IV_LOG:
                break
            out.append((int.from_bytes(k[3:], "big"), bytes(v)))
    if len(out) != last - after:  # a gap: an entry is no longer kept
        return last, None
    return last, out


def _sample_txn(txn: lmdb.Transaction, h: _Env, probes: Sequence[bytes]) -> list[bytes]:
    """:meth:`LmdbTier.sample` inside an open transaction (read or write)."""
    n_plain = txn.stat(h.records)["entries"]
    n_packed = txn.stat(h.index)["entries"]
    total = n_plain + n_packed
    if not total:
        return []
    plain = txn.cursor(db=h.records)
    packed = txn.cursor(db=h.index)
    out: list[bytes] = []
    for p in probes:
        if not n_packed:
            cur = plain
        elif not n_plain:
            cur = packed
        else:
            frac = int.from_bytes(bytes(p[-8:]).rjust(8, b"\0"), "big")
            cur = plain if frac * total < n_plain << 64 else packed
        if cur.set_range(p) or cur.first():
            out.append(bytes(cur.key()))
    return out


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
        self._open()
        try:
            self._check_manifest()
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
            handle = _acquire_env(self.path, self._map_size, self._max_readers, self.durable)
        except _DAMAGE_ERRORS as exc:
            raise self._damaged(exc) from exc
        except lmdb.Error as exc:
            raise StoreError(f"cannot open warm store {self.path}: {exc}") from exc
        self._handle = handle
        return handle

    def _quarantine(self, why: str) -> None:
        self.quarantined.append(guard.quarantine(self.path, why))

    @property
    def _h(self) -> _Env:
        handle = self._handle
        if handle is None:
            if self.sealed is not None:
                raise StoreError(
                    f"warm store {self.path} is damaged ({self.sealed}); this process no "
                    "longer uses it, and the next open checks it and moves it aside"
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
        handle, self._handle = self._handle, None
        sealed, self._sealed_handle = self._sealed_handle, None
        for h in (handle, sealed):
            if h is not None:
                _release_env(h)

    # -- damage met at run time ----------------------------------------------------------
    def _seal(self, why: str, *, broadcast: bool = True) -> None:
        """Stop using the store in this process: every later call raises ``StoreError``
        (the cache counts a miss or refuses the write), the compiled reader falls back;
        ``broadcast``: tell the other processes on the store (the flag beside the
        invalidation word), and leave the mark that makes the next open check it."""
        handle = self._handle
        if handle is None or self.sealed is not None:
            return
        self.sealed = why
        self._sealed_handle, self._handle = handle, None
        guard.suspect(self.path, why)
        if broadcast:
            struct.pack_into("=Q", handle.seqmap, 8, 1)
            handle.publisher.publish(handle.publisher.word + 1)  # wakes every reader
        guard.log.error(
            "tiercache: warm store %s is damaged (%s); this process stops using it (misses "
            "are recomputed) and the next open checks it and moves it aside",
            self.path,
            why,
        )

    def poll_damage(self) -> bool:
        """Whether the store is set aside; follows another process that found it damaged."""
        if self.sealed is not None:
            return True
        handle = self._handle
        if handle is not None and struct.unpack_from("=Q", handle.seqmap, 8)[0]:
            self._seal("another process met damaged pages", broadcast=False)
            return True
        return False

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
        except _DAMAGE_ERRORS as exc:  # e.g. MDB_CORRUPTED on the way to the manifest
            raise self._damaged(exc) from exc
        except lmdb.Error as exc:
            raise StoreError(f"cannot open warm store {self.path}: {exc}") from exc

    def _check_manifest_txn(self, txn: lmdb.Transaction, h: _Env) -> None:
        ns_key = b"ns:" + self.namespace.encode()
        mine = self.fingerprint.to_dict()
        meta = h.meta
        fmt = txn.get(b"format", db=meta)
        if fmt is None:
            txn.put(b"format", str(STORE_FORMAT).encode(), db=meta)
        elif fmt not in _READABLE_FORMATS:
            raise StoreError(
                f"warm store {self.path} has format {bytes(fmt).decode(errors='replace')!r}; "
                f"this tiercache reads formats {STORE_FORMAT} and {PACKED_FORMAT}"
            )
        if self._on_mismatch == "inspect":  # read-only look: register nothing
            return
        raw = txn.get(ns_key, db=meta)
        known: list[dict[str, Any]] = []
        if raw is not None:
            try:
                known = list(msgpack.unpackb(raw, raw=False))
            except Exception as exc:  # a corrupt manifest must never be guessed around
                raise StoreError(f"warm store manifest for {self.namespace!r} is corrupt") from exc
        if mine in known:
            return
        if known and self._on_mismatch != "coexist":
            other = Fingerprint.from_dict(known[-1])
            diff = ", ".join(
                f"{k}: stored {b!r} vs configured {a!r}"
                for k, (a, b) in self.fingerprint.diff(other).items()
            )
            raise FingerprintMismatchError(
                f"warm store {self.path} namespace {self.namespace!r} holds vectors of "
                f"another fingerprint ({diff}); use another warm.namespace or set "
                f"warm.on_fingerprint_mismatch: coexist"
            )
        known.append(mine)
        txn.put(ns_key, msgpack.packb(known, use_bin_type=True), db=meta)

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
    def _read(self, fn: Callable[[lmdb.Transaction, _Env], T]) -> T:
        """``fn(txn, handle)`` in a read transaction (buffers=True, no default db)."""
        h = self._h
        while True:
            h.enter_read()
            try:
                with h.env.begin(buffers=True) as txn:
                    return fn(txn, h)
            except lmdb.MapResizedError:
                pass
            except _RUNTIME_DAMAGE as exc:
                self._seal(f"{type(exc).__name__}: {exc}")
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
            self._seal(f"{type(exc).__name__}: {exc}")
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
            self._seal(f"{type(exc).__name__}: {exc}")
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
        two sorted sets: each probe picks one in proportion to their sizes (its last 8 bytes
        read as a fraction in [0, 1) against the plain share), then probes it. Empty store:
        empty list.
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
        return self._h.seqmap

    def log_seq(self) -> int:
        """The sequence number of the last invalidation logged (0: none yet)."""
        return self._read(lambda txn, h: _log_last(txn, h))

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
        h = self._h
        with h.write_lock:
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
                    self._seal(f"{type(exc).__name__}: {exc}")
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
    ) -> int:
        packed_len = self.packed_record_len
        p = _Packer(txn, h, packed_len)
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

        def run(txn: lmdb.Transaction, h: _Env) -> int:
            nonlocal seq, puts
            if since is not None and stale is not None and _log_last(txn, h) > since:
                _, entries = _log_since(txn, h, since)
                drop = stale([e for _, e in entries] if entries is not None else [])
                puts = [kv for kv in puts if not drop(kv[0])]
            if log is not None:
                seq = _log_append(txn, h, log)
            count = txn.stat(h.records)["entries"] + txn.stat(h.index)["entries"]
            excess = count + len(puts) - capacity
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
            return self._apply_txn(txn, h, puts, victims)

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
