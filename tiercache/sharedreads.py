"""Reads from the shared tier (Redis): one key (``get``, ``embed``) and a batch's misses
(``embed_many``, ``mget``, ``lookup_many``). A part of :class:`tiercache.readpath.ReadPath`
(a mixin: the same object, state and rules), in its own module so that each reads in one
sitting. A hit is verified (the tier opens the record's seal, the codec its checksum,
bound to its key), counted, and placed locally per policy through the write path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import perf_counter as _perf
from typing import cast

import numpy as np

from . import codec
from .entry import Entry, new_entry
from .invalidation import Invalidation
from .keys import Content, key_to_str
from .stats import TierStats
from .tiers.lmdb import LmdbTier
from .tiers.memory import MemoryTier
from .tiers.redis import RedisTier, SharedUnavailable
from .writepath import WritePath

_decode_at = codec.decode_at


def shared_get(shared: RedisTier, inval: Invalidation, key: bytes) -> bytes | None:
    """The shared tier's value of ``key`` as this host sees it: what its fleet queue will
    write there (its own write Redis missed) or None (a queued drop), else Redis's
    (``RedisTier.get``: raises when Redis is unreachable). Every shared read goes
    through this or :func:`shared_get_many`."""
    fleet = inval.fleet
    if fleet is not None and fleet.has_pending():
        queued = fleet.queued_values([key])
        if queued:
            return queued[key]
    return shared.get(key)


def shared_get_many(
    shared: RedisTier, inval: Invalidation, keys: list[bytes]
) -> list[bytes | None]:
    """:func:`shared_get` of many keys: one ``MGET`` for those the queue does not name
    (none when it names them all)."""
    fleet = inval.fleet
    if fleet is None or not fleet.has_pending():
        return shared.get_many(keys)
    queued = fleet.queued_values(keys)
    if not queued:
        return shared.get_many(keys)
    rest = [k for k in keys if k not in queued]
    got = iter(shared.get_many(rest) if rest else ())
    return [queued[k] if k in queued else next(got) for k in keys]


class SharedReads:
    """The shared-tier reads of :class:`~tiercache.readpath.ReadPath`."""

    dim: int
    _codec: str
    _hot: MemoryTier
    _warm: LmdbTier | None
    _shared: RedisTier | None
    _lock: threading.RLock
    _clock: Callable[[], float]
    _inval: Invalidation
    _w: WritePath
    _s_shared: TierStats

    def shared_one(
        self, content: Content, key: bytes, found: list[Entry | None] | None
    ) -> np.ndarray | None:
        """:meth:`shared_lookup` of one content: one ``GET`` (not a one-key ``MGET``), the
        record verified and decoded in place (``codec.decode_at``), the same counters and
        placement; the vector, or None on a miss of any kind."""
        shared = self._shared
        assert shared is not None
        epoch = self._inval.applied
        t0 = _perf()
        try:
            buf = shared_get(shared, self._inval, key)
        except Exception as exc:
            with self._lock:
                sm = self._s_shared
                sm.misses += 1
                if isinstance(exc, SharedUnavailable):
                    sm.skipped += 1
                else:
                    sm.errors += 1
            return None
        elapsed = _perf() - t0
        rec = _decode_at(buf, 0, len(buf), self.dim, key) if buf is not None else None
        expired = rec is not None and rec[1] and rec[1] <= self._clock()
        with self._lock:
            sm = self._s_shared
            if rec is None or expired:
                sm.misses += 1
                sm.corrupt += rec is None and buf is not None
                sm.expired += bool(expired)
            else:
                sm.hits += 1
            sm.latency.add(elapsed)
        if rec is None or expired:
            return None
        vector, expires_at, blob = rec
        if found is not None:
            meta = codec.unpack_blob(blob).get("m") if blob else None
            # the vector itself: placing it copies it (the slab) or encodes it (warm)
            found[0] = new_entry(key.hex(), vector, meta, "shared")
        if self._warm is not None or self._hot.capacity:  # somewhere local to keep it
            self._w.place_local(
                [(content, key, vector, expires_at, blob)], promoted=True, epoch=epoch
            )
        return vector

    # -- shared tier ------------------------------------------------------------------------
    def shared_lookup(
        self,
        missing: dict[Content, tuple[bytes, list[int]]],
        out: np.ndarray,
        found: list[Entry | None] | None,
        now: float,
        epoch: int,
    ) -> dict[Content, tuple[bytes, list[int]]]:
        """Look ``missing`` up in Redis: fill ``out`` rows (and ``found``) for hits, place
        them locally (warm per gate, hot per admission; ``epoch``: the invalidation log's
        number before the lookup began) and return what is still missing. Any failure is
        counted and treated as a miss of every key."""
        shared = self._shared
        assert shared is not None
        items = list(missing.items())
        keys = [k for _, (k, _) in items]
        t0 = _perf()
        try:
            bufs = shared_get_many(shared, self._inval, keys)
        except Exception as exc:
            with self._lock:
                sm = self._s_shared
                sm.misses += len(keys)
                if isinstance(exc, SharedUnavailable):
                    sm.skipped += len(keys)
                else:
                    sm.errors += 1
            return missing
        elapsed = _perf() - t0
        keep = self._warm is not None or self._hot.capacity > 0  # somewhere to place hits
        still: dict[Content, tuple[bytes, list[int]]] = {}
        placed: list[tuple[Content, bytes, np.ndarray, float, bytes | None]] = []
        fast_j, fexp = self._shared_rows(bufs, keys, items, out, now)
        hits = len(fast_j)
        expired = 0
        done = [False] * len(items)
        for j, exp in zip(fast_j, fexp):  # their rows are in out already
            done[j] = True
            c, (k, rows) = items[j]
            if exp < 0:  # expired (the sign marks it; see _shared_rows)
                expired += 1
                hits -= 1
                still[c] = (k, rows)
                continue
            if found is not None:
                hexkey = key_to_str(k)
                for i in rows:
                    found[i] = new_entry(hexkey, out[i].copy(), None, "shared")
            if keep:
                placed.append((c, k, out[rows[0]], exp, None))
        rest = [(items[j], bufs[j]) for j in range(len(items)) if not done[j]]
        more, corrupt, old = self._shared_one_by_one(rest, out, found, now, still, placed, keep)
        hits += more
        expired += old
        with self._lock:
            sm = self._s_shared
            sm.hits += hits
            sm.misses += len(still)
            sm.corrupt += corrupt
            sm.expired += expired
            sm.latency.add(elapsed)
        if placed:
            self._w.place_local(placed, promoted=True, epoch=epoch)
        return still

    def _shared_one_by_one(
        self,
        rest: list[tuple[tuple[Content, tuple[bytes, list[int]]], bytes | None]],
        out: np.ndarray,
        found: list[Entry | None] | None,
        now: float,
        still: dict[Content, tuple[bytes, list[int]]],
        placed: list[tuple[Content, bytes, np.ndarray, float, bytes | None]],
        keep: bool,
    ) -> tuple[int, int, int]:
        """:meth:`shared_lookup`'s values that :meth:`_shared_rows` left (another shape: a
        blob, another codec; a corrupt record; none), decoded one by one: rows and
        ``found`` filled, ``still`` and ``placed`` extended. Returns ``(hits, corrupt,
        expired)``."""
        hits = corrupt = expired = 0
        dim = self.dim
        for (c, (k, rows)), buf in rest:
            r = codec.decode_record(buf, dim, k) if buf is not None else None
            if r is None:
                corrupt += buf is not None
                still[c] = (k, rows)
                continue
            if r.expires_at and r.expires_at <= now:
                expired += 1
                still[c] = (k, rows)
                continue
            out[rows] = r.vector
            hits += 1
            if found is not None:
                meta = r.metadata()
                for i in rows:
                    found[i] = new_entry(key_to_str(k), r.vector.copy(), meta, "shared")
            if keep:
                placed.append((c, k, r.vector, r.expires_at, r.blob))
        return hits, corrupt, expired

    def _shared_rows(
        self,
        bufs: list[bytes | None],
        keys: list[bytes],
        items: list[tuple[Content, tuple[bytes, list[int]]]],
        out: np.ndarray,
        now: float,
    ) -> tuple[list[int], list[float]]:
        """Shared values that are records of this cache's codec without a blob, verified
        and decoded together (``codec.decode_rows`` over the joined values: one vectorised
        header check and conversion, a checksum each) and scattered into their rows of
        ``out`` (every row of a repeated content) when live. Returns ``(js, expiries)``:
        the indexes into ``items`` of those records and their expiry, negated when the
        record has expired (its rows are not written). The rest (absent, another shape,
        corrupt) is the caller's, one by one."""
        width = codec.record_size(self.dim, self._codec)
        fixed = [j for j, b in enumerate(bufs) if b is not None and len(b) == width]
        if not fixed:
            return [], []
        joined = b"".join([cast(bytes, bufs[j]) for j in fixed])
        masks = codec.key_masks([keys[j] for j in fixed])
        fast, _, expiry, matrix = codec.decode_rows(
            joined, len(fixed), width, 0, self.dim, self._codec, masks
        )
        dead = fast & (expiry != 0) & (expiry <= now)  # NaN never expires, as elsewhere
        live = fast & ~dead
        pos = np.flatnonzero(live)
        js = [fixed[p] for p in pos.tolist()]
        if js:
            firsts = [items[j][1][1][0] for j in js]
            out[firsts] = matrix[pos]  # one scatter
            for j in js:
                rows = items[j][1][1]
                if len(rows) > 1:  # a content asked for more than once: its other rows
                    out[rows[1:]] = out[rows[0]]
        exps = expiry[pos].tolist()
        gone = np.flatnonzero(dead).tolist()
        return js + [fixed[p] for p in gone], exps + [-1.0] * len(gone)
