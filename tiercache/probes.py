"""The reads that look and move nothing: ``exists``, ``mexists``, ``get_by_key``.

A part of :class:`tiercache.readpath.ReadPath` (a mixin: the same object, state and
rules), kept in its own module so that each reads in one sitting. They check the tiers
the way a read would (a corrupt or expired record does not exist; a process that another
one invalidated catches up first) but record no access and place nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from . import codec
from .entry import Entry, new_entry
from .invalidation import Invalidation
from .keys import Content, KeyMaker, key_from_str
from .sharedreads import shared_get, shared_get_many
from .stats import TierStats
from .tiers.lmdb import LmdbTier
from .tiers.memory import NEVER, MemoryTier
from .tiers.redis import RedisTier

ABSENT = object()  # LmdbTier.get_at's value for a key not stored (readpath's too)
_decode_at = codec.decode_at


class Probes:
    """``exists``, ``mexists`` and ``get_by_key`` of :class:`~tiercache.readpath.ReadPath`."""

    dim: int
    warm_reader: Any
    _hot: MemoryTier
    _warm: LmdbTier | None
    _shared: RedisTier | None
    _lock: threading.RLock
    _clock: Callable[[], float]
    _keys: KeyMaker
    _inval: Invalidation
    _moved: Callable[[], bool]
    _s_warm: TierStats
    _s_shared: TierStats

    if TYPE_CHECKING:

        def warm_record(self, key: bytes) -> Any: ...

    def exists(self, content: Content) -> bool:
        """Whether one checked content has an unexpired entry; nothing is recorded."""
        if self._moved():  # another process invalidated: catch up first
            self._inval.sync()
        hot = self._hot
        if hot.capacity:
            with self._lock:
                slot = hot._by_content.get(content)
                if slot is not None:
                    exp = hot.expires[slot]
                    if exp == NEVER or exp > self._clock():
                        return True
        if self._warm is None and self._shared is None:
            return False
        now = self._clock()
        if self._inval.blocked:  # no local copy counts
            return self._exists_below(self._keys.digest(content), now, warm=False)
        reader = self.warm_reader
        if reader is not None:  # the digest and the warm record in C
            live = reader.live(content, now)
            if live is not None:
                if live or self._shared is None:
                    return bool(live)
                return self._exists_below(self._keys.digest(content), now, warm=False)
        return self._exists_below(self._keys.digest(content), now)

    def _exists_below(self, key: bytes, now: float, *, warm: bool = True) -> bool:
        """:meth:`exists` past hot: the warm record's expiry (``warm``), then the shared
        one's."""
        if warm and self._warm is not None:
            try:  # verified as a read verifies it: a corrupt record does not exist
                rec = self.warm_record(key)
            except Exception:  # an unreadable store holds nothing (counted), as in lookups
                with self._lock:
                    self._s_warm.errors += 1
                rec = None
            if rec is not None and rec is not ABSENT and (not rec[1] or rec[1] > now):
                return True
        if self._shared is not None:
            try:
                buf = shared_get(self._shared, self._inval, key)
            except Exception:  # fail-open: an unreachable Redis holds nothing
                with self._lock:
                    self._s_shared.errors += 1
                return False
            return self._live_shared(buf, key, now)
        return False

    def _live_shared(self, buf: bytes | None, key: bytes, now: float) -> bool:
        """Whether a shared-tier value is a valid, unexpired record of ``key`` and this
        cache's dim."""
        rec = _decode_at(buf, 0, len(buf), self.dim, key) if buf is not None else None
        return rec is not None and (not rec[1] or rec[1] > now)

    def mexists(self, contents: list[Content]) -> list[bool]:
        """Whether an unexpired entry is stored, per content (no access is recorded,
        nothing moves). ``contents``: a list of checked contents."""
        if len(contents) == 1:
            return [self.exists(contents[0])]
        if self._moved():  # another process invalidated: catch up first
            self._inval.sync()
        now = self._clock()
        hot = self._hot
        with self._lock:
            slots = list(map(hot._by_content.get, contents))  # C speed
            expires = hot.expires
            result = [s is not None and expires[s] > now for s in slots]
        rest = [i for i, r in enumerate(result) if not r]
        if rest and self._warm is not None and not self._inval.blocked:
            live = self._warm_live([contents[i] for i in rest], now)
            for i, ok in zip(rest, live):
                result[i] = ok
            rest = [i for i in rest if not result[i]]
        if rest and self._shared is not None:
            keys = self._keys.digests([contents[i] for i in rest])
            try:
                bufs = shared_get_many(self._shared, self._inval, keys)
            except Exception:  # fail-open: an unreachable Redis holds nothing
                with self._lock:
                    self._s_shared.errors += 1
                return result
            for i, key, buf in zip(rest, keys, bufs):
                result[i] = self._live_shared(buf, key, now)
        return result

    def _warm_live(self, wanted: list[Content], now: float) -> list[bool]:
        """For each content, whether warm holds a readable, unexpired record of it: the
        compiled batch reader (``WarmReader.rows``, into a scratch matrix: records are
        verified as a read would verify them), records with a blob by their expiry."""
        distinct = list(dict.fromkeys(wanted))
        read = None
        if self.warm_reader is not None:
            scratch = np.empty((len(distinct), self.dim), dtype=np.float32)
            read = self.warm_reader.rows(distinct, scratch, None, now, self._keys.digest)
        warm = self._warm
        assert warm is not None
        try:
            if read is not None:
                keys, status = read[0], read[1]
                live = [st == 1 for st in status]
                blob_j = [j for j, st in enumerate(status) if st == 2]
                if blob_j:
                    blob_exps = warm.get_many_with([keys[j] for j in blob_j], codec.peek_expiry)
                    for j, exp in zip(blob_j, blob_exps):
                        live[j] = exp is not None and (exp == 0.0 or exp > now)
            else:  # verified as a read verifies it: a corrupt record does not exist
                recs = warm.get_many_at(self._keys.digests(distinct), _decode_at, self.dim, None)
                live = [r is not None and (not r[1] or r[1] > now) for r in recs]
        except Exception:  # an unreadable store holds nothing (counted), as in lookups
            with self._lock:
                self._s_warm.errors += 1
            return [False] * len(wanted)
        if len(distinct) == len(wanted):
            return live
        by_content = dict(zip(distinct, live))
        return [by_content[c] for c in wanted]

    def get_by_key(self, key: str) -> Entry | None:
        """The entry stored under a public key: warm, then shared (hot is indexed by
        content and consulted only when there is no warm tier). Nothing moves."""
        raw = key_from_str(key)
        if self._moved():  # another process invalidated: catch up first
            self._inval.sync()
        now = self._clock()
        if self._inval.blocked:  # no local copy is served
            pass
        elif self._warm is None:
            with self._lock:
                slot = self._hot.slot_of_key(raw)
                if slot is not None and self._hot.expires[slot] > now:
                    meta = self._hot.meta_at(slot)
                    return Entry(
                        key,
                        self._hot.slab[slot].copy(),
                        codec.unpack_blob(meta).get("m") if meta else None,
                        "hot",
                    )
        else:
            try:
                rec = self.warm_record(raw)
            except Exception:  # an unreadable store holds nothing (counted)
                with self._lock:
                    self._s_warm.errors += 1
                rec = None
            if rec is not None and rec is not ABSENT and not (rec[1] and rec[1] <= now):
                blob = rec[2]
                return new_entry(
                    key, rec[0], codec.unpack_blob(blob).get("m") if blob else None, "warm"
                )
        if self._shared is not None:
            try:
                buf = shared_get(self._shared, self._inval, raw)
            except Exception:
                with self._lock:
                    self._s_shared.errors += 1
                return None
            srec = codec.decode_record(buf, self.dim, raw) if buf is not None else None
            if srec is not None and not (srec.expires_at and srec.expires_at <= now):
                return Entry(key, srec.vector, srec.metadata(), "shared")
        return None
