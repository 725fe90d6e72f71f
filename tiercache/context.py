"""The wiring every I/O path shares: the tiers, the policy engine, the lock and the counters.

:class:`CacheContext` is built once by :class:`~tiercache.TierCache` from its config and
handed to the read path (:mod:`tiercache.readpath`), the write path
(:mod:`tiercache.writepath`), the single-flight table (:mod:`tiercache.singleflight`) and
the tag index (:mod:`tiercache.tags`). It holds no logic: it is the one place the objects
they all touch live, so that no path reaches into another's private fields.

Locking: ``lock`` (re-entrant, the hot tier's own) guards the hot tier, the engine, the
single-flight table and every counter here; LMDB, Redis and the encoder run outside it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .encoders import Encoder
from .keys import Fingerprint, KeyMaker
from .policy import PolicyEngine
from .stats import EncoderStats, TierStats
from .tiers.lmdb import LmdbTier, segment_cost, segment_slots
from .tiers.memory import MemoryTier
from .tiers.redis import RedisTier

MAX_TTL_SECONDS = 100 * 365 * 86400.0


def warm_capacity(max_bytes: int, record_len: int, page_size: int = 4096) -> int:
    """Entries that fit a warm byte budget, from LMDB's page geometry.

    Records of ``record_len`` bytes (vectors without metadata) are packed K to a segment
    (see ``tiers.lmdb.segment_slots``); a slot costs ``segment_cost(K, record_len)`` bytes
    when segments are full. Under steady eviction segments run ~69% full on average (they
    are compacted below half full), and the digest index adds ~60 bytes a key, so an entry
    is charged ``slot_cost / 0.69 + 60`` bytes: 384-d float32 ~2,370 B (measured ~2,310 B
    while evicting, ~1,660 B before any delete). Records carrying metadata are stored
    unpacked and cost more. See docs/record-format.md.
    """
    k = segment_slots(record_len, page_size)
    per_entry = math.ceil(segment_cost(k, record_len, page_size) / 0.69) + 60
    return max(1, max_bytes // per_entry)


@dataclass(eq=False)
class CacheContext:
    """What the paths share (see the module docstring). Counters change under ``lock``."""

    encoder: Encoder
    fingerprint: Fingerprint
    dim: int
    accepts: tuple[type, ...]
    keys: KeyMaker
    clock: Callable[[], float]
    codec: str
    store_text: bool
    default_ttl: float | None
    batch_size: int
    hot: MemoryTier
    warm: LmdbTier | None
    shared: RedisTier | None
    engine: PolicyEngine
    shared_ttl: float | None
    shared_min_frequency: int
    lock: threading.RLock = field(init=False)
    s_hot: TierStats = field(default_factory=TierStats)
    s_warm: TierStats = field(default_factory=TierStats)
    s_shared: TierStats = field(default_factory=TierStats)
    s_enc: EncoderStats = field(default_factory=EncoderStats)
    lookups: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.lock = self.hot.lock

    def record_hot_latency(self, seconds: float) -> None:
        self.s_hot.latency.add(seconds)

    def record_warm_latency(self, seconds: float) -> None:
        self.s_warm.latency.add(seconds)


__all__ = ["MAX_TTL_SECONDS", "CacheContext", "warm_capacity"]
