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

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .encoders import Encoder
from .geometry import warm_capacity
from .keys import Fingerprint, KeyMaker
from .policy import PolicyEngine
from .stats import EncoderStats, TierStats
from .tiers.lmdb import LmdbTier
from .tiers.memory import MemoryTier
from .tiers.redis import RedisTier

MAX_TTL_SECONDS = 100 * 365 * 86400.0


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
    utf8_text: bool = field(init=False)
    s_hot: TierStats = field(default_factory=TierStats)
    s_warm: TierStats = field(default_factory=TierStats)
    s_shared: TierStats = field(default_factory=TierStats)
    s_enc: EncoderStats = field(default_factory=EncoderStats)
    lookups: int = 0
    closed: bool = False

    def __post_init__(self) -> None:
        self.lock = self.hot.lock
        # text with a lone surrogate is refused before encoding (Encoder's optional flag)
        self.utf8_text = bool(getattr(self.encoder, "text_must_be_utf8", True))

    def record_hot_latency(self, seconds: float) -> None:
        self.s_hot.latency.add(seconds)

    def record_warm_latency(self, seconds: float) -> None:
        self.s_warm.latency.add(seconds)


__all__ = ["MAX_TTL_SECONDS", "CacheContext", "warm_capacity"]
