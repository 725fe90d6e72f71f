"""Placement in the hot tier: admissions offered to the policy, their victims taken out
(counted, demoted to warm or not per their fate), entries removed. A part of
:class:`tiercache.writepath.WritePath` (a mixin: the same object, state and lock rules),
in its own module so that each reads in one sitting. Every ``*_locked`` method runs with
the cache lock held.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import cast

import numpy as np

from . import codec, placement
from .context import CacheContext
from .keys import Content
from .policies import _ADMITTED  # engine.offer_hot's answer for a key the policy holds
from .policy import PolicyEngine
from .tiers.lmdb import LmdbTier
from .tiers.memory import NEVER, MemoryTier


class HotPlacement:
    """The hot-tier placement of :class:`~tiercache.writepath.WritePath`."""

    _ctx: CacheContext
    _hot: MemoryTier
    _warm: LmdbTier | None
    _engine: PolicyEngine
    _codec: str

    # -- placement (hot) --------------------------------------------------------------------
    def remove_hot_locked(self, key: bytes, reason: str) -> None:
        if self._hot.delete_key(key):
            self._engine.remove_hot(key)
            s_hot = self._ctx.s_hot
            s_hot.evictions[reason] += 1
            if reason == "expired":
                s_hot.expired += 1

    def _clear_hot_locked(self, reason: str = "invalidated") -> None:
        for k in list(self._hot.keys()):
            self.remove_hot_locked(k, reason)

    def admit_hot_locked(
        self,
        content: Content,
        key: bytes,
        vector: np.ndarray,
        expires_at: float,
        meta: bytes | None,
        in_warm: bool,
    ) -> list[tuple[bytes, bytes]]:
        """Offer one entry to hot; returns demotion writes (key, record) for warm."""
        hot = self._hot
        slot = hot.slot_of_key(key)
        if slot is not None:  # already resident: refresh in place
            hot.put(content, key, vector, expires_at, meta, in_warm or hot.in_warm(slot))
            return []
        adm = self._engine.offer_hot(key)
        s_hot = self._ctx.s_hot
        demote = self._evict_locked(adm.evicted) if adm.evicted else []
        if adm.admitted:
            hot.put(content, key, vector, expires_at, meta, in_warm)
            s_hot.promotions += 1
        else:
            s_hot.rejections[adm.reason or "rejected"] += 1
        return demote

    def _evict_locked(
        self,
        evicted: Sequence[Hashable],
        pending: dict[int, int] | None = None,
        rows: np.ndarray | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Take the victims of an admission out of hot, counted, per their fate
        (``placement.victim_fates``); returns the demotion writes (key, record) for warm.
        ``pending`` and ``rows``: a batch's slots whose row is not copied yet (slot ->
        index into ``rows``): a victim among them gets its row first."""
        hot = self._hot
        s_hot = self._ctx.s_hot
        demote: list[tuple[bytes, bytes]] = []
        fates = placement.victim_fates(self._engine, evicted, self._warm is not None, self._backed)
        for item, fate in fates:
            victim = cast(bytes, item)
            vslot = hot.slot_of_key(victim)
            if vslot is None:
                continue
            if pending and vslot in pending and rows is not None:
                hot.slab[vslot] = rows[pending.pop(vslot)]
            s_hot.evictions["capacity"] += 1
            s_hot.demotions += 1
            if fate == placement.DEMOTE:
                exp = float(hot.expires[vslot])
                demote.append(
                    (
                        victim,
                        codec.encode_record(
                            hot.slab[vslot],
                            self._codec,
                            0.0 if exp == NEVER else exp,
                            hot.meta_at(vslot),
                            key=victim,
                        ),
                    )
                )
            elif fate == placement.REJECT:
                self._ctx.s_warm.rejections["min_frequency"] += 1
            hot.delete_key(victim)
        return demote

    def admit_hot_many_locked(
        self,
        contents: Sequence[Content],
        keys: Sequence[bytes],
        rows: np.ndarray,
        expiries: Sequence[float],
        blobs: Sequence[bytes | None],
        in_warm: bool,
    ) -> list[tuple[bytes, bytes]]:
        """:meth:`admit_hot_locked` of each entry in order (``rows[i]`` the vector of
        ``keys[i]``); the same decisions, counters and demotions, with the rows copied
        into the slab by one scatter at the end instead of one by one. A slot the batch
        filled that an admission of the same batch evicts is copied first (its demotion
        encodes the row), and a slot filled twice keeps its last row. Returns demotion
        writes (key, record) for warm."""
        hot = self._hot
        engine = self._engine
        slot_of_key = hot.slot_of_key
        pending: dict[int, int] = {}  # slot -> row index, still to copy into the slab
        demote: list[tuple[bytes, bytes]] = []
        s_hot = self._ctx.s_hot
        # admitted entries wait here and go into the maps together (MemoryTier
        # .put_new_many: the slots one put after another would take), before anything
        # that reads the maps: an eviction, or the same key again in this batch
        waiting: dict[bytes, int] = {}  # key -> index into the batch

        def place_waiting() -> None:
            idx = list(waiting.values())
            slots = hot.put_new_many(
                [contents[i] for i in idx],
                list(waiting),
                [expiries[i] or NEVER for i in idx],
                [blobs[i] for i in idx],
                in_warm,
            )
            pending.update(zip(slots, idx))
            waiting.clear()

        engine.drain()  # offer_hot's own, once: nothing is buffered under this lock
        policy = engine.hot
        admit = policy.admit
        promoted = 0
        for i, key in enumerate(keys):
            if key in waiting:
                place_waiting()
            slot = slot_of_key(key)
            if slot is not None:  # already resident: refresh in place
                exp = expiries[i] or NEVER
                hot.put(contents[i], key, None, exp, blobs[i], in_warm or hot.in_warm(slot))
                pending[slot] = i
                continue
            adm = _ADMITTED if key in policy else admit(key)  # engine.offer_hot's rule
            if adm.evicted:
                if waiting:
                    place_waiting()
                demote += self._evict_locked(adm.evicted, pending, rows)
            if adm.admitted:
                waiting[key] = i
                promoted += 1
            else:
                s_hot.rejections[adm.reason or "rejected"] += 1
        if waiting:
            place_waiting()
        s_hot.promotions += promoted
        if pending:
            slots = list(pending)
            hot.slab[slots] = rows[list(pending.values())]  # one scatter, distinct slots
        return demote

    def _backed(self, key: Hashable) -> bool:
        """Whether warm holds the hot entry ``key`` (an absent one needs nothing)."""
        slot = self._hot.slot_of_key(cast(bytes, key))
        return slot is None or self._hot.in_warm(slot)
