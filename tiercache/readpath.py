"""The one read path: every public read goes through :class:`ReadPath`.

``embed``, ``embed_many``, ``get``, ``mget``, ``exists``, ``mexists``, ``get_by_key`` and
the adapters built on them (RedisVL, LangChain) look up hot (in-process, by exact content),
then warm (LMDB, by digest; the compiled :class:`tiercache._core.WarmReader` when built),
then shared (Redis), then recompute the rest with the encoder (``embed`` and
``embed_many`` only) under single-flight. What a read decides to move (a promotion, a
demotion, an expired record to delete, a shared hit to place locally, a computed vector to
store) is handed to the write path (:mod:`tiercache.writepath`).

The hot hit of ``embed`` (and, with the hot tier off, its warm hit) runs in C
(:class:`tiercache._core.HotReader` / ``WarmReader``) when the extension is built: the same
lookup, copy, access record and counters as :meth:`ReadPath.embed`, which it calls for
anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from time import perf_counter as _perf
from typing import Any, cast

import numpy as np
from xxhash import xxh3_64_intdigest

from . import codec
from .context import CacheContext
from .entry import Entry, new_entry
from .errors import ClosedError
from .keys import KEY_BYTES, Content, KeyMaker
from .probes import ABSENT as _ABSENT
from .probes import Probes
from .recompute import Recompute
from .sharedreads import SharedReads
from .tiers import lmdb as _lmdb_tier
from .tiers.memory import NEVER
from .writepath import WritePath, as_content, check_encodable

try:
    from . import _core
except ImportError:  # built without a C compiler: reads stay pure Python
    _core = None  # type: ignore[assignment]

_UNSERVED = object()  # WarmReader.record's value when the store cannot be read in C now
_NO_MASKS = np.zeros(0, dtype="<u4")  # codec.decode_rows' key masks of no rows
_decode_at = codec.decode_at

# lookup_lower's warm read: (fast_j, fast_exp, todo, corrupt, expired, drop)
_WarmRows = tuple[list[int], list[float], list[tuple[int, Any]], int, int, list[bytes]]


class _OwnRow:
    """``rows_of`` of a batch without repeats: the j-th wanted content fills row j only.
    Stands in for a list of one-row lists, so a hit-only batch allocates none of them."""

    __slots__ = ()

    def __getitem__(self, j: int) -> list[int]:
        return [j]


_OWN_ROW = _OwnRow()


_HotEntries = tuple[Sequence[int], list[bytes], list[bytes | None]]  # positions, keys, blobs


def _group_rows(
    contents: list[Content], positions: Iterable[int], rows: dict[Content, list[int]]
) -> None:
    """Append each position to its content's list of rows (first sight: a new list)."""
    for i in positions:
        c = contents[i]
        if c in rows:
            rows[c].append(i)
        else:
            rows[c] = [i]


def _fill_entries(
    found: list[Entry | None],
    out: np.ndarray,
    positions: Sequence[int],
    keys: list[bytes],
    blobs: list[bytes | None],
    tier: str,
    filler: Any = None,
) -> None:
    """``found[i]`` = the Entry of row ``i`` of ``out``, for each position. An Entry's
    vector is that row: ``out`` is this call's own array, never a tier's memory, so each
    caller owns its rows (no aliasing), and a batch costs no copy per entry. ``filler``
    (an ``EntryGetter``) builds the entries without metadata in C."""
    unpack = codec.unpack_blob
    if filler is not None:
        left = filler.fill(found, out, positions, keys, blobs, tier)
        if not left:
            return
        at = {i: j for j, i in enumerate(positions)}
        for i in left:
            blob = blobs[at[i]]
            found[i] = new_entry(
                keys[at[i]].hex(), out[i], unpack(blob).get("m") if blob else None, tier
            )
        return
    for i, k, blob in zip(positions, keys, blobs):
        found[i] = new_entry(k.hex(), out[i], unpack(blob).get("m") if blob else None, tier)


class ReadPath(Probes, SharedReads):
    """Lookups over the context's tiers, recompute on a miss (see the module docstring).
    ``exists``, ``mexists`` and ``get_by_key`` (they look and move nothing) are in
    :mod:`tiercache.probes`.

    ``compiled``: build the C readers (a subclass of TierCache that overrides ``embed``
    passes False, so that its override is never bypassed).
    """

    def __init__(self, ctx: CacheContext, write: WritePath, *, compiled: bool = True) -> None:
        self._ctx = ctx
        self._w = write
        self._hot = ctx.hot
        self._warm = ctx.warm
        self._shared = ctx.shared
        self._engine = ctx.engine
        self._lock = ctx.lock
        self._clock = ctx.clock
        self._keys = ctx.keys
        self._codec = ctx.codec
        self.dim = ctx.dim
        self._s_hot = ctx.s_hot
        self._s_warm = ctx.s_warm
        self._s_shared = ctx.s_shared
        self._s_enc = ctx.s_enc
        self._record_hit = ctx.engine.record_hot_hit  # bound once: the hot path
        self.recompute = Recompute(ctx, write)  # the cold tier: the encoder, single-flight
        self._inval = write.inval  # other processes' invalidations, applied before a read
        self._moved = write.inval.gate.moved  # C: one load and compare
        self._tick = 0
        self.fast: Any = None  # HotReader: embed's hot hit in C
        self.warm_reader: Any = None  # WarmReader: embed_many's warm rows in C
        self.fast_warm: Any = None  # the same WarmReader, when it also serves embed
        self._filler: Any = None  # an EntryGetter: fill() builds batch Entries in C
        if _core is None:
            return
        engine = ctx.engine
        if compiled and self._hot.capacity > 0:
            hot = self._hot
            self.fast = _core.HotReader(
                self.embed,
                self._lock,
                hot._by_content,
                hot.slab,
                hot.expires,
                hot._key,
                engine._buffer,
                engine.access_buffer,
                engine.drain,
                self._clock,
                ctx.record_hot_latency,
            )
        if self._warm is not None:
            # digests, one read transaction through the tier's own py-lmdb environment,
            # records verified and decoded as codec.decode_at does; anything else (a miss,
            # a corrupt or expired record, an LMDB error, a resize, a fork) calls embed
            # unchanged, before anything is counted
            self.warm_reader = _core.WarmReader(
                self.embed,
                self._lock,
                self._warm,
                _lmdb_tier.__dict__,
                self._keys.prefix,
                KeyMaker.person,
                self.dim,
                engine._buffer,
                engine.access_buffer,
                engine.drain,
                self._clock,
                ctx.record_warm_latency,
                xxh3_64_intdigest,
            )
            if compiled and self._hot.capacity == 0:
                self.fast_warm = self.warm_reader
        for r in (self.fast, self.warm_reader):  # they serve nothing while the log moved
            if r is not None:
                r.set_gate(write.inval.gate)
        reader = self.fast or self.warm_reader
        if reader is not None:  # its fill() builds batch Entries in C
            self._filler = _core.EntryGetter(reader, self.get, self._hot._meta, Entry, "hot")

    def fast_getter(self, fallback: Any) -> Any:
        """An ``EntryGetter``: ``get``'s hit in C, returning an :class:`Entry`, through
        :attr:`fast` (hot tier on) or :attr:`fast_warm` (hot tier off); anything it does
        not serve calls ``fallback`` (the facade's get). None without a compiled reader."""
        if _core is None:
            return None
        if self.fast is not None:
            return _core.EntryGetter(self.fast, fallback, self._hot._meta, Entry, "hot")
        if self.fast_warm is not None:
            return _core.EntryGetter(self.fast_warm, fallback, None, Entry, "warm")
        return None

    def close(self) -> None:
        """Stop the C readers (references taken earlier fall back to :meth:`embed`) and
        detach them from the invalidation word (the facade closes the word itself, once
        no lock is held: the fleet listener may be waiting for it)."""
        for fast in (self.fast, self.fast_warm, self.warm_reader):
            if fast is not None:
                fast.close()
                fast.set_gate(None)

    def fold_fast_hits_locked(self) -> None:
        """Add the C read paths' hits to the counters (call with the lock held)."""
        ctx = self._ctx
        if self.fast is not None:
            n = self.fast.take_hits()
            ctx.s_hot.hits += n
            ctx.lookups += n
        if self.fast_warm is not None:  # a warm hit is a hot miss first, as in Python
            n = self.fast_warm.take_hits()
            ctx.s_warm.hits += n
            ctx.s_hot.misses += n
            ctx.lookups += n

    def embed(self, content: Content) -> np.ndarray:
        """The vector of ``content`` (shape ``(dim,)``, float32, the caller's own copy).

        Served from hot, else warm, else computed by the encoder (and cached per policy).
        """
        if self._ctx.closed:
            raise ClosedError("this TierCache is closed")
        t = type(content)
        if t is not str and t is not bytes:
            content = as_content(content)
        if self._moved():  # another process invalidated: catch up first
            self._inval.sync()
        self._tick += 1
        timed = not self._tick & 15  # time one lookup in 16: percentiles, not overhead
        t0 = _perf() if timed else 0.0
        hot = self._hot
        with self._lock:  # the hot hit, inlined (_hot_hit_locked): the hottest path
            slot = hot._by_content.get(content)
            if slot is not None:
                exp = hot.expires[slot]
                # the clock is the caller's code and the lock re-entrant: after calling
                # it, serve only if content still maps to the same slot
                if exp == NEVER or (exp > self._clock() and hot._by_content.get(content) == slot):
                    vec: np.ndarray = hot.slab[slot].copy()
                    self._record_hit(hot._key[slot])
                    self._s_hot.hits += 1
                    self._ctx.lookups += 1
                    if timed:
                        self._s_hot.latency.add(_perf() - t0)
                    return vec
        return self.embed_one(content, slot is not None, timed)

    def hot_slot_locked(self, content: Content) -> int | None:
        """With the lock held: the slot of content's fresh hot entry, its hit recorded and
        counted; None if absent or expired (an expired entry is left for the caller)."""
        hot = self._hot
        slot = hot._by_content.get(content)
        if slot is None:
            return None
        exp = hot.expires[slot]
        if exp != NEVER:
            if exp <= self._clock():
                return None
            if hot._by_content.get(content) != slot:  # the clock (caller's code) changed it
                return self.hot_slot_locked(content)
        self._record_hit(hot._key[slot])
        self._s_hot.hits += 1
        self._ctx.lookups += 1
        return slot

    def hot_hit_locked(self, content: Content) -> np.ndarray | None:
        """:meth:`hot_slot_locked`'s entry's vector (a copy), or None."""
        slot = self.hot_slot_locked(content)
        return None if slot is None else self._hot.slab[slot].copy()

    def hot_get_nowait(self, content: Content) -> np.ndarray | None:
        """A hot hit without waiting for the lock (for the event loop); None otherwise."""
        if self._ctx.closed or (type(content) is not str and type(content) is not bytes):
            return None
        if self._inval.gate.moved():  # the log moved: the executor path catches up first
            return None
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self.hot_hit_locked(content)
        finally:
            self._lock.release()

    def embed_one(self, content: Content, expired_entry: bool, timed: bool) -> np.ndarray:
        """``embed`` past a hot miss: one digest, one warm read, else the encoder.

        The hot miss is recorded in the same locked section as the warm outcome (one lock
        round trip), unless hot held an expired entry, which is removed first.
        """
        key = self._keys.digest(content)
        recorded = False
        if expired_entry:
            with self._lock:
                fresh = self.hot_hit_locked(content)  # another thread may have refreshed it
                if fresh is not None:
                    return fresh
                self._w.remove_hot_locked(key, "expired")
                self.record_hot_miss_locked(key)
            recorded = True
        vec = self.lower_one(content, key, recorded=recorded, timed=timed, found=None)
        if vec is not None:
            return vec
        check_encodable(content, self._ctx.accepts, None, self._ctx.utf8_text)
        return self.recompute.compute([key], [content])[key].copy()

    def lower_one(
        self,
        content: Content,
        key: bytes,
        *,
        recorded: bool,
        timed: bool,
        found: list[Entry | None] | None,
    ) -> np.ndarray | None:
        """One content past its hot miss: warm, then shared; the vector, or None on a miss.
        ``recorded``: the hot miss is already counted. With ``found`` (``[None]``), a hit
        also sets ``found[0]`` to its :class:`Entry`. The single-key form of
        :meth:`lookup_lower`, for ``embed`` and ``get``."""
        if self._warm is not None and not self._inval.blocked:
            rec = self.warm_get_one(content, key, record_miss=not recorded, timed=timed)
            if rec is not None:
                if found is not None:
                    blob = rec[2]
                    found[0] = new_entry(
                        key.hex(),
                        rec[0],
                        codec.unpack_blob(blob).get("m") if blob else None,
                        "warm",
                    )
                return rec[0]
        elif not recorded:
            with self._lock:
                self.record_hot_miss_locked(key)
        if self._shared is not None:
            return self.shared_one(content, key, found)
        return None

    def record_hot_miss_locked(self, key: bytes) -> None:
        self._ctx.lookups += 1
        self._s_hot.misses += 1
        self._engine.record_miss(key)

    def warm_record(self, key: bytes) -> Any:
        """The warm record of ``key``: ``(vector, expires_at, blob)``, None if stored but
        corrupt, ``_ABSENT`` if not stored. Read and verified in C
        (``WarmReader.record``) when it can read the store now, else by
        ``LmdbTier.get_at`` + ``codec.decode_at`` (same rules); nothing is counted."""
        reader = self.warm_reader
        if reader is not None:
            rec = reader.record(key, _ABSENT, _UNSERVED)
            if rec is not _UNSERVED:
                return rec
        assert self._warm is not None
        return self._warm.get_at(key, _decode_at, self.dim, _ABSENT)

    def warm_get_one(
        self, content: Content, key: bytes, *, record_miss: bool = False, timed: bool = True
    ) -> codec.VectorRecord | None:
        """One warm lookup (counted, promoted per policy): ``(vector, expires_at, blob)``,
        None on a miss of any kind.

        ``record_miss``: also record the hot miss that led here, in the same locked section.
        The record is verified and decoded in place in the map (``LmdbTier.get_at`` +
        ``codec.decode_at``): one header unpack, one checksum, one copy of the vector.
        """
        warm = self._warm
        assert warm is not None
        t0 = _perf() if timed else 0.0
        epoch = self._inval.applied
        try:
            rec = self.warm_record(key)
        except Exception:
            with self._lock:
                if record_miss:
                    self.record_hot_miss_locked(key)
                self._s_warm.errors += 1
                self._s_warm.misses += 1
            return None
        sw = self._s_warm
        with self._lock:
            if record_miss:  # _record_hot_miss_locked, inlined
                self._ctx.lookups += 1
                self._s_hot.misses += 1
                self._engine.record_miss(key)
            if timed:
                sw.latency.add(_perf() - t0)
            if rec is _ABSENT or rec is None:
                sw.misses += 1
                if rec is None:  # stored but unreadable: corrupt (recomputed by the caller)
                    sw.corrupt += 1
                return None
            vector, expires_at, blob = cast(codec.VectorRecord, rec)
            if expires_at and expires_at <= self._clock():
                sw.misses += 1
                sw.expired += 1
                sw.evictions["expired"] += 1
                expired = True
            else:
                expired = False
                sw.hits += 1
                demote = (
                    self._w.promote_locked([(content, key, vector, expires_at, blob)], epoch)
                    if self._hot.capacity
                    else None
                )
            now = self._inval.applied
        if expired:
            self._w.warm_delete([key])
            return None
        if demote:
            self._w.warm_write(demote, forced=False, epoch=now)
        return vector, expires_at, blob

    def embed_many(self, contents: list[Content]) -> np.ndarray:
        """Vectors of ``contents`` (a checked list: ``writepath.as_contents``) as one
        ``(n, dim)`` float32 array, in input order.

        Duplicates are looked up and encoded once; misses are encoded in batches of
        ``encoder.batch_size``; concurrent misses of one key are computed once. An encoder
        failure raises :class:`EncoderError` to every waiting caller and caches nothing.
        """
        out = np.empty((len(contents), self.dim), dtype=np.float32)
        if not contents:
            return out
        missing = self.lookup_into(contents, out, None)
        if not missing:
            return out
        for c, (_, rows) in missing.items():
            check_encodable(c, self._ctx.accepts, rows[0], self._ctx.utf8_text)
        keys = [k for k, _ in missing.values()]
        where = {k: rows[0] for k, rows in missing.values()}
        vectors = self.recompute.compute(keys, list(missing), where=where)
        for k, rows in missing.values():
            out[rows] = vectors[k]
        return out

    def lookup_into(
        self,
        contents: list[Content],
        out: np.ndarray,
        found: list[Entry | None] | None,
    ) -> dict[Content, tuple[bytes, list[int]]]:
        """Fill ``out`` rows from hot and warm; return {missing content: (key, rows)}.

        With ``found`` (a list of None of the same length), hits also produce Entries.
        """
        if self._moved():  # another process invalidated: catch up first
            self._inval.sync()
        now = self._clock()
        t0 = _perf()
        if not self._hot.capacity:  # no hot tier: every distinct content goes to warm
            return self._lookup_without_hot(contents, out, found, now)
        warm_wanted: dict[Content, list[int]] = {}  # missing content -> its rows
        s_hot = self._s_hot
        with self._lock:
            self._ctx.lookups += len(contents)
            hits = s_hot.hits
            if self.fast is not None and not self._hot.n_expiring:
                entries = self._hot_gather_c_locked(contents, out, found, warm_wanted)
            else:
                entries = self._hot_gather_py_locked(contents, out, found, warm_wanted, now)
            if s_hot.hits > hits:
                s_hot.latency.add((_perf() - t0) / len(contents))
        if entries is not None and found is not None:  # keys and blobs read under the lock
            _fill_entries(found, out, *entries, "hot", self._filler)
        return self.lookup_lower(out, found, now, list(warm_wanted), list(warm_wanted.values()))

    def _lookup_without_hot(
        self,
        contents: list[Content],
        out: np.ndarray,
        found: list[Entry | None] | None,
        now: float,
    ) -> dict[Content, tuple[bytes, list[int]]]:
        """:meth:`lookup_into` of a cache without a hot tier: each distinct content once."""
        if len(dict.fromkeys(contents)) == len(contents):  # no repeats (C speed)
            with self._lock:
                self._ctx.lookups += len(contents)
                self._s_hot.misses += len(contents)
            return self.lookup_lower(out, found, now, contents, _OWN_ROW)
        warm_wanted: dict[Content, list[int]] = {}
        _group_rows(contents, range(len(contents)), warm_wanted)
        with self._lock:
            self._ctx.lookups += len(contents)
            self._s_hot.misses += len(warm_wanted)
            self._s_enc.deduplicated += len(contents) - len(warm_wanted)
        return self.lookup_lower(out, found, now, list(warm_wanted), list(warm_wanted.values()))

    def _hot_gather_c_locked(
        self,
        contents: list[Content],
        out: np.ndarray,
        found: list[Entry | None] | None,
        warm_wanted: dict[Content, list[int]],
    ) -> _HotEntries | None:
        """The hot part of a batch in C (no entry with a TTL): rows copied into ``out``,
        accesses recorded, hits counted, misses grouped into ``warm_wanted``; with
        ``found``, the hits' (positions, keys, blobs) for their Entries."""
        hot = self._hot
        assert self.fast is not None
        entries = None
        if found is None:
            unserved = self.fast.gather(contents, out)
        else:
            served: list[int] = []  # the slot of each hit, in order (no second lookup)
            unserved = self.fast.gather(contents, out, served)
        if found is not None and served:
            if unserved:
                skip = set(unserved)
                hit_pos: Sequence[int] = [i for i in range(len(contents)) if i not in skip]
            else:  # every content a hit
                hit_pos = range(len(contents))
            entries = (
                hit_pos,
                list(map(hot._key.__getitem__, served)),
                list(map(hot._meta.__getitem__, served)),
            )
        _group_rows(contents, unserved, warm_wanted)
        self._s_hot.hits += len(contents) - len(unserved)
        self._s_hot.misses += len(warm_wanted)
        self._s_enc.deduplicated += len(unserved) - len(warm_wanted)
        return entries

    def _hot_gather_py_locked(
        self,
        contents: list[Content],
        out: np.ndarray,
        found: list[Entry | None] | None,
        warm_wanted: dict[Content, list[int]],
        now: float,
    ) -> _HotEntries | None:
        """:meth:`_hot_gather_c_locked` in Python, expired entries removed (an expired
        content repeated in the batch is a miss at every position)."""
        hot = self._hot
        slots: list[int | None] = list(map(hot._by_content.get, contents))  # C speed
        if hot.n_expiring:  # only entries with a TTL need a clock comparison
            expires = hot.expires
            expired: set[int] = set()
            for i, s in enumerate(slots):
                if s is not None and (s in expired or expires[s] <= now):
                    if s not in expired:
                        expired.add(s)
                        self._w.remove_hot_locked(hot._key[s], "expired")
                    slots[i] = None
        hit_slots: list[int]
        if None in slots:
            hit_pos = [i for i, s in enumerate(slots) if s is not None]
            hit_slots = cast(list[int], [slots[i] for i in hit_pos])
            _group_rows(contents, [i for i, s in enumerate(slots) if s is None], warm_wanted)
            if hit_slots:
                out[hit_pos] = hot.slab[hit_slots]
        else:  # every lookup hit hot: one gather
            hit_pos = list(range(len(contents)))
            hit_slots = cast(list[int], slots)
            out[:] = hot.slab[hit_slots]
        entries = None
        if hit_slots:
            hit_keys = list(map(hot._key.__getitem__, hit_slots))
            self._engine.record_hot_hits(hit_keys)
            if found is not None:
                entries = (hit_pos, hit_keys, [hot._meta[s] for s in hit_slots])
        self._s_hot.hits += len(hit_slots)
        self._s_hot.misses += len(warm_wanted)
        # repeats of a missing content in this batch ride on its single lookup/encode
        self._s_enc.deduplicated += len(contents) - len(hit_slots) - len(warm_wanted)
        return entries

    def lookup_lower(
        self,
        out: np.ndarray,
        found: list[Entry | None] | None,
        now: float,
        wanted: list[Content],
        rows_of: list[list[int]] | _OwnRow,
    ) -> dict[Content, tuple[bytes, list[int]]]:
        """``_lookup_into`` past the hot tier: warm, then shared, for the distinct contents
        ``wanted``; ``rows_of[j]`` lists the rows of ``out`` that ``wanted[j]`` fills."""
        missing: dict[Content, tuple[bytes, list[int]]] = {}
        if not wanted:
            return missing
        epoch = self._inval.applied
        read = None
        t1 = _perf()
        blocked = self._inval.blocked  # no local copy is served: warm is skipped
        if self.warm_reader is not None and not blocked:  # keys and records in C
            read = self.warm_reader.rows(
                wanted, out, None if rows_of is _OWN_ROW else rows_of, now, self._keys.digest
            )
        keys: list[bytes] = read[0] if read is not None else self._keys.digests(wanted)
        with self._lock:
            self._engine.record_misses(keys)
        if self._warm is None or blocked:
            missing = {c: (k, rows_of[j]) for j, (c, k) in enumerate(zip(wanted, keys))}
            if self._shared is not None:
                return self.shared_lookup(missing, out, found, now, epoch)
            return missing
        n_keys = len(keys)
        hit = np.zeros(n_keys, dtype=bool)
        if read is not None:
            fast_j, fast_exp, todo, corrupt, expired, drop = self._rows_from_c(
                keys, read[1], read[2]
            )
        else:
            t1 = _perf()
            fast_j, fast_exp, todo, corrupt, expired, drop = self._rows_from_python(
                keys, rows_of, out, now
            )
        hit[fast_j] = True
        # the rest one by one: records of another codec or with metadata, other lengths
        slow_j, raws, bad, dead = self._decode_slow(todo, keys, rows_of, out, now, drop)
        corrupt += bad
        expired += dead
        hit[slow_j] = True
        for j in np.flatnonzero(~hit).tolist():
            missing[wanted[j]] = (keys[j], rows_of[j])
        elapsed = _perf() - t1
        hits = fast_j + slow_j  # indexes into wanted/keys; a hit's vector is out[rows[0]]
        hit_exp: list[float] = fast_exp + [r[2] for r in raws]
        hit_blob: list[bytes | None] = [None] * len(fast_j)
        hit_blob += [r[3] for r in raws]
        if found is not None:
            self._warm_entries(found, out, hits, keys, hit_blob, rows_of)
        with self._lock:
            sw = self._s_warm
            sw.corrupt += corrupt
            sw.expired += expired
            if expired:
                sw.evictions["expired"] += expired
            sw.hits += len(hits)
            sw.misses += len(missing)
            sw.latency.add(elapsed / max(1, n_keys))
            demote = (
                self._w.promote_locked(
                    [
                        (wanted[j], keys[j], out[rows_of[j][0]], e, b)
                        for j, e, b in zip(hits, hit_exp, hit_blob)
                    ],
                    epoch,
                )
                if hits and self._hot.capacity
                else []
            )
            applied = self._inval.applied
        if drop:
            self._w.warm_delete(drop)
        if demote:
            self._w.warm_write(demote, forced=False, epoch=applied)
        if missing and self._shared is not None:
            return self.shared_lookup(missing, out, found, now, epoch)
        return missing

    def _decode_slow(
        self,
        todo: list[tuple[int, Any]],
        keys: list[bytes],
        rows_of: list[list[int]] | _OwnRow,
        out: np.ndarray,
        now: float,
        drop: list[bytes],
    ) -> tuple[list[int], list[codec.RawRecord], int, int]:
        """Warm records the batch decode left (another codec or length, a blob), one by
        one: their rows filled, expired keys appended to ``drop``. Returns ``(slow_j, raws,
        corrupt, expired)``."""
        slow_j: list[int] = []
        raws: list[codec.RawRecord] = []
        corrupt = expired = 0
        dim = self.dim
        for j, buf in todo:
            raw = codec.decode_raw(buf, dim, keys[j]) if buf is not None else None
            if raw is None:
                corrupt += buf is not None
            elif raw[2] and raw[2] <= now:
                expired += 1
                drop.append(keys[j])
            else:
                slow_j.append(j)
                raws.append(raw)
        if slow_j:
            smatrix = codec.raw_to_matrix(raws, dim)
            for m, j in enumerate(slow_j):
                out[rows_of[j]] = smatrix[m]
        return slow_j, raws, corrupt, expired

    def _warm_entries(
        self,
        found: list[Entry | None],
        out: np.ndarray,
        hits: list[int],
        keys: list[bytes],
        blobs: list[bytes | None],
        rows_of: list[list[int]] | _OwnRow,
    ) -> None:
        """The Entries of a batch's warm hits (every row of a repeated content)."""
        if rows_of is _OWN_ROW:
            _fill_entries(found, out, hits, [keys[j] for j in hits], blobs, "warm", self._filler)
            return
        for j, blob in zip(hits, blobs):
            meta = codec.unpack_blob(blob).get("m") if blob else None
            hexkey = keys[j].hex()
            for i in rows_of[j]:
                found[i] = new_entry(hexkey, out[i], meta, "warm")

    def _rows_from_c(
        self,
        keys: list[bytes],
        status: bytes,
        expiries: bytes,
    ) -> _WarmRows:
        """``_lookup_lower``'s warm read, from ``WarmReader.rows``' result (every row of a
        hit already in ``out``): ``(fast_j, fast_exp, todo, corrupt, expired, drop)``, as
        :meth:`_rows_from_python` returns them. Records with a blob are read again here
        (``todo``), for the blob."""
        st = np.frombuffer(status, dtype=np.uint8)
        fast = np.flatnonzero(st == 1)
        fast_j: list[int] = fast.tolist()
        fast_exp: list[float] = np.frombuffer(expiries, dtype=np.float64)[fast].tolist()
        dead: list[int] = np.flatnonzero(st == 4).tolist()
        todo: list[tuple[int, Any]] = []
        blob_j: list[int] = np.flatnonzero(st == 2).tolist()
        if blob_j:
            warm = self._warm
            assert warm is not None
            try:
                todo = list(zip(blob_j, warm.get_many_with([keys[j] for j in blob_j], bytes)))
            except Exception:  # an unreadable store degrades to a miss, never an error
                with self._lock:
                    self._s_warm.errors += 1
        return (
            fast_j,
            fast_exp,
            todo,
            int(np.count_nonzero(st == 3)),
            len(dead),
            [keys[j] for j in dead],
        )

    def _rows_from_python(
        self,
        keys: list[bytes],
        rows_of: list[list[int]] | _OwnRow,
        out: np.ndarray,
        now: float,
    ) -> _WarmRows:
        """``_lookup_lower``'s warm read in Python: fixed rows (key + record) of this codec's
        record length in one transaction, every header and expiry checked at once, vectors
        converted as one strided view (only the checksums are per record). Fills the rows
        of ``fast_j`` (hits of this codec without a blob) and returns ``(fast_j, fast_exp,
        todo, corrupt, expired, drop)``: ``todo`` lists ``(j, record)`` to decode one by
        one (another codec or length, a blob; ``b""`` for a missing slot: corrupt)."""
        warm = self._warm
        assert warm is not None
        dim = self.dim
        width = codec.record_size(dim, self._codec)
        stride = KEY_BYTES + width
        try:
            pos, rows, others = warm.get_rows(keys, width)
        except Exception:  # an unreadable store degrades to a miss, never an error
            with self._lock:
                self._s_warm.errors += 1
            pos, rows, others = [], b"", []
        n = len(pos)  # each row is the key, then its record: the masks are read in place
        masks = np.ndarray((n,), dtype="<u4", buffer=rows, strides=(stride,)) if n else _NO_MASKS
        fast, bad, expiry, fmatrix = codec.decode_rows(
            rows, n, stride, KEY_BYTES, dim, self._codec, masks
        )
        corrupt = int(np.count_nonzero(bad))
        posa = np.array(pos, dtype=np.intp)
        dead = fast & (expiry != 0) & (expiry <= now)  # NaN never expires, as before
        live = fast & ~dead
        expired = int(np.count_nonzero(dead))
        drop = [keys[j] for j in posa[dead].tolist()] if expired else []
        fast_j: list[int] = posa[live].tolist()
        todo: list[tuple[int, Any]] = list(others)
        if len(fast_j) + corrupt + expired != len(pos):
            mv = memoryview(rows)
            todo = [
                (pos[r], mv[r * stride + KEY_BYTES : (r + 1) * stride])
                for r in np.flatnonzero(~(fast | bad)).tolist()
            ] + todo
        if fast_j:
            fm = fmatrix if len(fast_j) == len(pos) else fmatrix[live]
            if rows_of is _OWN_ROW:
                out[fast_j] = fm
                return fast_j, expiry[live].tolist(), todo, corrupt, expired, drop
            targets = [rows_of[j] for j in fast_j]
            out[[r[0] for r in targets]] = fm  # one scatter; repeats copy their first row
            for r in targets:
                if len(r) > 1:
                    out[r[1:]] = out[r[0]]
        return fast_j, expiry[live].tolist(), todo, corrupt, expired, drop

    def get(self, content: Content) -> Entry | None:
        """The stored entry of one checked content, or None; never encodes. The hot hit
        in one locked section (as ``embed``'s), the rest through :meth:`lower_one`."""
        if self._moved():  # another process invalidated: catch up first
            self._inval.sync()
        hot = self._hot
        if hot.capacity:
            with self._lock:
                slot = self.hot_slot_locked(content)
                if slot is not None:
                    vec: np.ndarray = hot.slab[slot].copy()
                    key, meta = hot._key[slot], hot._meta[slot]
                expired = slot is None and content in hot._by_content
            if slot is not None:
                return new_entry(
                    key.hex(), vec, codec.unpack_blob(meta).get("m") if meta else None, "hot"
                )
            if expired:  # the batch path removes the expired entry and looks further
                return self.mget([content])[0]
        found: list[Entry | None] = [None]
        self.lower_one(
            content, self._keys.digest(content), recorded=False, timed=False, found=found
        )
        return found[0]

    def lookup_many(self, contents: list[Content]) -> tuple[np.ndarray, np.ndarray]:
        """``(matrix, found)``: the stored vectors of ``contents`` (checked) as one ``(n,
        dim)`` float32 array and a bool array, True where a row was found; rows not found
        are zeros. Never encodes: :meth:`embed_many`'s lookup (the same tiers, counters,
        promotions and shared placement) without the recompute."""
        n = len(contents)
        out = np.empty((n, self.dim), dtype=np.float32)
        found = np.ones(n, dtype=bool)
        if not n:
            return out, found
        missing = self.lookup_into(contents, out, None)
        if missing:
            rows = [r for _, rs in missing.values() for r in rs]
            found[rows] = False
            out[rows] = 0.0
        return out, found

    def mget(self, contents: list[Content]) -> list[Entry | None]:
        """Entries in input order, None where nothing is stored. Never encodes.
        ``contents``: a list of checked contents."""
        found: list[Entry | None] = [None] * len(contents)
        out = np.empty((len(contents), self.dim), dtype=np.float32)
        if contents:
            self.lookup_into(contents, out, found)
        return found


__all__ = ["ReadPath"]
