"""Packed records in the warm store: the lookups and the write-side bookkeeping.

Records of exactly ``packed_record_len`` bytes are stored as slots (16-byte digest + record)
of multi-record *segments* (sub-database ``segs``, 8-byte big-endian ids, appended in id
order) reached through ``index`` (digest -> segment id, slot offset, record length). Other
records stay one per key in ``records``. A key lives in exactly one of the two places.
Segment live counts are in ``segmeta``; the open (partly filled) segment per record length
and the segments waiting for relocation are in ``meta`` under ``pk:`` keys. See
docs/record-format.md, "LMDB page geometry".

Everything here runs inside a transaction :class:`~tiercache.tiers.lmdb.LmdbTier` opened.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import lmdb

from ..errors import StoreError
from ..geometry import MAX_SEGMENT_SLOTS, segment_slots
from ..keys import KEY_BYTES
from .lmdb_env import _READABLE_FORMATS, PACKED_FORMAT, _Env

T = TypeVar("T")
A = TypeVar("A")

_IDX = struct.Struct("<II")  # after the 8-byte segment id: slot byte offset, record length
_IDX_FULL = struct.Struct("<8sII")  # the whole 16-byte index value
_SEGMETA_V = struct.Struct("<III")  # live slots, record length, slots per segment (K)
_SEG_ID = struct.Struct(">Q")
_PK_OPEN = b"pk:open:"  # + u32 BE record length -> open segment id
_PK_SPARSE = b"pk:sparse"  # concatenated 8-byte ids of segments waiting for relocation
_PK_STAGE = b"pk:stage:"  # + u32 BE record length -> digests of single writes kept plain

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


def relocation_budget(freed: int, page_size: int = 4096, record_len: int | None = None) -> int:
    """Segments one write transaction may relocate: a constant plus twice the segments'
    worth of slots it freed, so relocation keeps pace with deletes (a relocation reclaims
    at least (1 - SPARSE_FRACTION) * K slots) while the work stays proportional to the
    batch: at most ``2 + 2 * freed / K`` segments, each moving under SPARSE_FRACTION * K
    records."""
    k = segment_slots(record_len, page_size) if record_len else MAX_SEGMENT_SLOTS
    return MAX_RELOCATIONS_PER_WRITE + math.ceil(2 * freed / k)


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


def stage_key(record_len: int) -> bytes:
    """The ``meta`` key of the staging queue of single writes of ``record_len`` bytes."""
    return _PK_STAGE + record_len.to_bytes(4, "big")


def stage_one(
    txn: lmdb.Transaction, h: _Env, key: bytes, rec: bytes, has_index: bool
) -> bytes | None:
    """:meth:`_Packer.stage` up to the packing, without a packer (the whole of a single
    ``set`` but one in K): None when ``key`` is packed already (nothing written: it is
    overwritten in its slot); ``b""`` when the record was written plain and queued; else
    the full queue (K digests, this key last), emptied, for the caller to pack."""
    if has_index and txn.get(key, None, h.index) is not None:
        return None
    put, meta = txn.put, h.meta  # positional: py-lmdb's keyword parsing costs ~0.3 us
    put(key, rec, True, True, False, h.records)
    qkey = stage_key(len(rec))
    raw = txn.get(qkey, None, meta)
    queued = key if raw is None else bytes(raw) + key
    if len(queued) < segment_slots(len(rec), h.psize) * KEY_BYTES:
        put(qkey, queued, True, True, False, meta)
        return b""
    if raw is not None:
        txn.delete(qkey, db=meta)
    return queued


class _Packer:
    """The packed-record bookkeeping of one write transaction.

    Index entries and plain records are written to the transaction as they change; segment
    contents and live counts are kept here and written once per segment in ``finish``, so
    a batch rewrites each touched segment once.
    """

    def __init__(
        self,
        txn: lmdb.Transaction,
        h: _Env,
        packed_len: int | None,
        counts: tuple[int, int] | None = None,
    ) -> None:
        """``counts``: the entries of ``records`` and ``index`` when the caller has just
        read them in this transaction (each ``stat`` costs ~1 us)."""
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
        if counts is None:
            counts = (txn.stat(h.records)["entries"], txn.stat(h.index)["entries"])
        self.has_plain = counts[0] > 0
        self.has_index = counts[1] > 0

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

    def stage(self, key: bytes, rec: bytes) -> None:
        """A single write of a new packed-length record: stored plain (one ``put``, as a
        hand-rolled store writes it) and its digest queued under ``pk:stage:``; the write
        that queues the K-th packs the queue into the open segment (:meth:`pack_staged`).

        Appending one record to the open segment rewrites the whole segment (up to 7
        pages for 384-d float32): a single ``set`` paid that on every call. Staged, it
        pays one leaf page, and the K writes share one segment write. At most K - 1
        records per length wait plain (docs/record-format.md, "Single writes"). A key
        packed already is overwritten where it is (:meth:`put`).
        """
        full = stage_one(self.txn, self.h, key, rec, self.has_index)
        if full is None:
            self.put(key, rec)
            return
        self.has_plain = True
        if full:
            self.pack_staged(full, len(rec))

    def pack_staged(self, queued: bytes, length: int) -> None:
        """Move the queued keys that are still plain records of ``length`` bytes into
        segments (a queued key since deleted, rewritten with another length or packed by a
        batch is skipped: the queue is a hint, ``records`` the truth)."""
        get, delete, records = self.txn.get, self.txn.delete, self.h.records
        items: list[tuple[bytes, bytes]] = []
        for i in range(0, len(queued) - KEY_BYTES + 1, KEY_BYTES):
            k = queued[i : i + KEY_BYTES]
            v = get(k, None, records)
            if v is not None and len(v) == length:
                items.append((k, bytes(v)))
                delete(k, db=records)
        if len(items) > 1:
            self.put_many(items)
        elif items:
            self.put(*items[0])

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
                if len(v) == length:
                    self.stage(k, v)
                else:
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
        raw = txn.get(_PK_SPARSE, None, h.meta)
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


def _sample_txn(txn: lmdb.Transaction, h: _Env, probes: Sequence[bytes]) -> list[bytes]:
    """:meth:`LmdbTier.sample` inside an open transaction (read or write): for each probe,
    the first stored digest at or after it (wrapping to the first), plain and packed keys
    alike, whatever mix of the two the store holds (``sim.tiers.WarmStoreModel.sample``)."""
    n_plain = txn.stat(h.records)["entries"]
    n_packed = txn.stat(h.index)["entries"]
    if not n_plain + n_packed:
        return []
    out: list[bytes] = []
    if not n_plain or not n_packed:  # one B-tree: one search a probe
        cur = txn.cursor(db=h.index if n_packed else h.records)
        for p in probes:
            if cur.set_range(p) or cur.first():
                out.append(bytes(cur.key()))
        return out
    plain = txn.cursor(db=h.records)
    packed = txn.cursor(db=h.index)
    first = min(
        bytes(plain.key()) if plain.first() else b"\xff" * 17,
        bytes(packed.key()) if packed.first() else b"\xff" * 17,
    )
    for p in probes:
        a = bytes(plain.key()) if plain.set_range(p) else None
        b = bytes(packed.key()) if packed.set_range(p) else None
        out.append(first if a is None and b is None else min(x for x in (a, b) if x is not None))
    return out


__all__ = ["MAX_RELOCATIONS_PER_WRITE", "SPARSE_FRACTION", "relocation_budget", "stage_one"]
