"""Replay a trace through the hot *and* warm tiers: hot hits, warm hits, encoder calls.

:func:`simulate_tiers` drives the live :class:`~tiercache.policy.PolicyEngine` with the
calls :meth:`tiercache.TierCache.embed` makes for one lookup, in the same order, through
the same placement functions (:mod:`tiercache.placement` decides each hot
victim's fate: ``victim_fates``), so no copy of the cache's placement logic lives here:

1. a key resident in hot: ``record_hot_hit`` (a hot hit);
2. any other key: ``record_miss``, then a lookup in a model of the warm store:

   * **warm hit**: ``offer_hot`` (the entry is backed by warm);
   * **warm miss** (an encoder call): ``warm_gate``; if it passes, the key is written to
     warm, evicting per ``warm_probes`` / ``warm_victims`` when the store would exceed its
     capacity (:meth:`WarmStoreModel.put_bounded`, the twin of
     ``tiers.lmdb.LmdbTier.put_bounded``); then ``offer_hot``;

3. every key ``offer_hot`` evicts from hot that warm does not hold (its warm copy was
   evicted, or the gate rejected it) passes ``warm_gate`` again and is written to warm
   (a demotion), with the same bounded write.

With no hot tier (``hot_capacity=0``) nothing is offered to hot, as in the cache.

The warm store model holds keys, never vectors. LMDB keeps keys in byte order and the
cache samples eviction candidates by mapping each random 16-byte probe to the first stored
key at or after it (wrapping to the first key); the model keeps every resident key's
16-byte digest in a sorted structure and answers probes the same way. 16-byte ``bytes``
keys (the cache's own digests, e.g. a text trace hashed by ``load_text``) are their own
digest, so such a trace samples exactly the keys the live store samples; any other key
(``int`` ids of synthetic traces) is given a uniform digest by :func:`sim_key_digest`.

Exact (a differential test replays one trace through a real ``TierCache`` and checks
every counter): hot hits, warm hits, encoder calls, warm writes and evictions, gate
rejections, hot admissions, rejections and evictions, for the same ``seed``,
capacities, ``warm_min_frequency``, ``eviction_samples``, ``max_evictions_per_write`` and
``access_buffer``. Not modelled: TTLs and expiry, explicit ``set``/``drop``, corrupt
records, failed writes, the shared (Redis) tier, and concurrent callers (batches of
``embed_many`` change when keys are recorded). Capacities are in entries; see
:func:`warm_entries` for byte budgets.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import codec, placement
from ..errors import ConfigError
from ..geometry import warm_capacity as _warm_capacity
from ..keys import KEY_BYTES, key_hash64_many
from ..policy import PolicyEngine, default_hasher
from .simulate import SimResult

__all__ = [
    "HOT",
    "WARM",
    "ENCODER",
    "TieredSimResult",
    "WarmStoreModel",
    "sim_key_digest",
    "simulate_tiers",
    "warm_entries",
]

HOT, WARM, ENCODER = 0, 1, 2
"""Values written to ``tiers_out``: where each request was served."""

_PERSON = b"tiercache.sim.1"
_M128 = (1 << 128) - 1
_CHUNK = 512  # digests per sorted chunk of the warm store model


def sim_key_digest(key: Hashable) -> bytes:
    """The 16-byte digest that orders ``key`` in the warm store model.

    A 16-byte ``bytes`` key is a cache digest already and is returned as it is (the live
    store orders it the same way). ``int`` keys (modulo 2**128), other ``bytes`` and
    ``str`` get a blake2b digest (uniform, like the cache's keys, deterministic across
    processes). Other types raise ``TypeError``.
    """
    if type(key) is bytes:
        if len(key) == KEY_BYTES:
            return key
        data = b"b" + key
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        data = b"i" + (int(key) & _M128).to_bytes(16, "little")
    elif isinstance(key, str):
        data = b"s" + key.encode("utf-8", "surrogatepass")
    else:
        raise TypeError(
            f"no warm-store digest for {type(key).__name__} keys (use int ids, str or bytes)"
        )
    return hashlib.blake2b(data, digest_size=KEY_BYTES, person=_PERSON).digest()


def warm_entries(max_bytes: int, dim: int, codec_name: str = "float32") -> int:
    """Entries the live cache allows a warm byte budget, for ``dim``-d vectors.

    The same conversion as the cache's (``tiercache.geometry.warm_capacity`` of the codec's
    record size): each entry is charged its packed-segment slot at the ~69% fill steady
    eviction leaves plus ~60 bytes of index, about 2,370 B for 384-d float32 (1.52x the
    1,560-byte record). A freshly filled store with no evictions uses only ~1.08x the
    payload per entry (``make bench``, docs/benchmarks.md), so the budget is a ceiling the
    store reaches only under steady eviction. Raises ConfigError for a budget < 1 byte,
    ``dim`` < 1 or an unknown codec.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ConfigError("warm.max_bytes", max_bytes, "must be an integer >= 1 byte")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError("encoder.dim", dim, "must be an integer >= 1")
    if codec_name not in codec.CODEC_IDS:
        raise ConfigError(
            "warm.codec", codec_name, f"unknown codec (one of {', '.join(sorted(codec.CODEC_IDS))})"
        )
    return _warm_capacity(max_bytes, codec.record_size(dim, codec_name))


class _SortedDigests:
    """A sorted multiset-free set of equal-length byte strings, in chunks of ~``_CHUNK``.

    ``add``/``discard`` are O(log n + chunk); ``ceiling`` is the first element ``>=`` a
    probe, wrapping to the smallest (LMDB's ``set_range`` or ``first``).
    """

    __slots__ = ("_chunks", "_maxes", "_len")

    def __init__(self) -> None:
        self._chunks: list[list[bytes]] = []
        self._maxes: list[bytes] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, d: bytes) -> None:
        """Insert ``d`` (the caller guarantees it is not present)."""
        maxes = self._maxes
        if not maxes:
            self._chunks.append([d])
            maxes.append(d)
            self._len = 1
            return
        i = bisect_left(maxes, d)
        if i == len(maxes):  # beyond every element: append to the last chunk
            i -= 1
            self._chunks[i].append(d)
            maxes[i] = d
        else:
            insort(self._chunks[i], d)
        self._len += 1
        chunk = self._chunks[i]
        if len(chunk) > 2 * _CHUNK:
            self._chunks[i : i + 1] = [chunk[:_CHUNK], chunk[_CHUNK:]]
            maxes[i : i + 1] = [chunk[_CHUNK - 1], chunk[-1]]

    def discard(self, d: bytes) -> bool:
        """Remove ``d``; False if it was not present."""
        maxes = self._maxes
        i = bisect_left(maxes, d)
        if i == len(maxes):
            return False
        chunk = self._chunks[i]
        j = bisect_left(chunk, d)
        if j == len(chunk) or chunk[j] != d:
            return False
        del chunk[j]
        self._len -= 1
        if not chunk:
            del self._chunks[i]
            del maxes[i]
        elif j == len(chunk):
            maxes[i] = chunk[-1]
        return True

    def ceiling(self, probe: bytes) -> bytes | None:
        """The first element ``>= probe``, else the smallest; None when empty."""
        maxes = self._maxes
        if not maxes:
            return None
        i = bisect_left(maxes, probe)
        if i == len(maxes):
            return self._chunks[0][0]
        chunk = self._chunks[i]
        return chunk[bisect_left(chunk, probe)]


class WarmStoreModel:
    """The warm store's key set, as the eviction sampler of the live store sees it.

    Keys are kept by their :func:`sim_key_digest` in byte order; :meth:`sample` maps
    each probe to the first resident digest at or after it (wrapping to the first), like
    ``tiers.lmdb.LmdbTier.sample`` on a store whose records are all packed (or all plain,
    as they are for vectors of one size without metadata).
    """

    __slots__ = ("_digest", "_owner", "_order")

    def __init__(self) -> None:
        self._digest: dict[Hashable, bytes] = {}
        self._owner: dict[bytes, Hashable] = {}
        self._order = _SortedDigests()

    def __len__(self) -> int:
        return len(self._digest)

    def __contains__(self, key: object) -> bool:
        return key in self._digest

    def sample(self, probes: Sequence[bytes]) -> list[Hashable]:
        """For each probe, the resident key whose digest is the first ``>=`` the probe."""
        if not self._digest:
            return []
        ceiling, owner = self._order.ceiling, self._owner
        return [owner[ceiling(p)] for p in probes]  # type: ignore[index]

    def put_bounded(
        self, keys: Sequence[Hashable], capacity: int, engine: PolicyEngine
    ) -> list[Hashable]:
        """Write ``keys`` keeping at most ``capacity`` entries; returns the evicted keys.

        Mirrors ``TierCache._warm_write`` over ``LmdbTier.put_bounded``: ``excess`` is the
        count after the write minus the capacity (keys already stored do not count); when
        positive, ``min(excess, len(keys) + max_evictions_per_write) * eviction_samples``
        probes are drawn from the engine, sampled from the store *before* the write, and
        ``warm_victims`` names the victims (never the keys being written), which are
        deleted before the keys are written.
        """
        new_keys = dict.fromkeys(keys)
        excess = len(self._digest) + len(keys) - capacity
        if excess > 0:
            excess -= sum(1 for k in new_keys if k in self._digest)
        victims: list[Hashable] = []
        if excess > 0:
            limit = min(excess, len(new_keys) + engine.max_evictions_per_write)
            probes = engine.warm_probes(limit * engine.eviction_samples)
            victims = engine.warm_victims(
                self.sample(probes), excess, protect=new_keys, batch=len(new_keys)
            )
            for v in victims:
                d = self._digest.pop(v)
                del self._owner[d]
                self._order.discard(d)
        for k in keys:
            if k not in self._digest:
                d = sim_key_digest(k)
                self._digest[k] = d
                self._owner[d] = k
                self._order.add(d)
        return victims


@dataclass
class TieredSimResult:
    """Outcome of one hot + warm run (counts are requests or entries, not bytes).

    Every request is exactly one of ``hot_hits``, ``warm_hits`` or ``encoder_calls``.
    ``warm_writes`` counts records written to warm (recomputed vectors that passed the
    gate plus hot demotions): the SSD writes. ``warm_gate_rejects`` counts vectors the
    ``warm_min_frequency`` gate kept out of warm (recomputed or demoted), as the cache's
    ``warm.rejections["min_frequency"]``.
    """

    policy: str
    hot_capacity: int
    warm_capacity: int
    requests: int
    hot_hits: int
    warm_hits: int
    encoder_calls: int
    warm_writes: int
    warm_evictions: int
    warm_gate_rejects: int
    hot_admitted: int
    hot_rejected: int
    hot_evicted: int
    demotions: int
    warm_entries: int

    @property
    def capacity(self) -> int:
        """The hot capacity (the name :class:`SimResult` uses)."""
        return self.hot_capacity

    @property
    def hot_misses(self) -> int:
        return self.requests - self.hot_hits

    @property
    def hit_ratio(self) -> float:
        """Hot hits per request."""
        return self.hot_hits / self.requests if self.requests else 0.0

    @property
    def warm_hit_ratio(self) -> float:
        """Warm hits per request (not per hot miss; see ``warm_local_hit_ratio``)."""
        return self.warm_hits / self.requests if self.requests else 0.0

    @property
    def warm_local_hit_ratio(self) -> float:
        """Warm hits per lookup that reached warm (per hot miss)."""
        return self.warm_hits / self.hot_misses if self.hot_misses else 0.0

    @property
    def local_hit_ratio(self) -> float:
        """Requests served without the encoder (hot or warm) per request."""
        return 1.0 - self.encoder_ratio if self.requests else 0.0

    @property
    def encoder_ratio(self) -> float:
        """Encoder calls per request."""
        return self.encoder_calls / self.requests if self.requests else 0.0

    def hot_view(self) -> SimResult:
        """The hot tier's counts as a :class:`SimResult` (what :func:`simulate` returns)."""
        return SimResult(
            self.policy,
            self.hot_capacity,
            self.requests,
            self.hot_hits,
            self.hot_misses,
            self.hot_admitted,
            self.hot_rejected,
            self.hot_evicted,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "capacity": self.hot_capacity,
            "hot_misses": self.hot_misses,
            "hit_ratio": self.hit_ratio,
            "warm_hit_ratio": self.warm_hit_ratio,
            "warm_local_hit_ratio": self.warm_local_hit_ratio,
            "local_hit_ratio": self.local_hit_ratio,
        }


def _hash_many(keys: Sequence[Any]) -> np.ndarray:
    """``default_hasher`` of many keys; vectorised for 16-byte digests."""
    if keys and all(type(k) is bytes and len(k) == KEY_BYTES for k in keys):
        return key_hash64_many(keys)
    return np.fromiter((default_hasher(k) for k in keys), dtype=np.uint64, count=len(keys))


def _capacity(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(name, value, "must be an integer number of entries >= 0")
    return int(value)


PROGRESS_EVERY = 1 << 16
"""Requests between two ``progress`` calls."""


def simulate_tiers(  # noqa: C901
    trace: Iterable[Hashable],
    *,
    hot_capacity: int,
    warm_capacity: int,
    policy: str = "wtinylfu",
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    warm_min_frequency: int = 0,
    eviction_samples: int = 8,
    max_evictions_per_write: int = 64,
    access_buffer: int = 1024,
    hasher: Callable[[Any], int] = default_hasher,
    tiers_out: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> TieredSimResult:
    """Hot hits, warm hits and encoder calls of ``trace`` with a hot and a warm tier.

    ``hot_capacity`` and ``warm_capacity`` are entries (:func:`warm_entries` converts a
    warm byte budget exactly as the cache does). ``warm_capacity=0`` means no warm tier:
    every hot miss is an encoder call, and the hot tier's counts equal
    :func:`~tiercache.sim.simulate`'s. ``seed``, ``warm_min_frequency``,
    ``eviction_samples``, ``max_evictions_per_write`` and ``access_buffer`` are the
    cache's ``policy.*`` settings; with the same values (and the cache's capacities) the
    counts equal a live ``TierCache`` fed the same keys one ``embed`` at a time. Hot
    decisions equal :func:`~tiercache.sim.simulate`'s with the same ``warm_capacity``
    (which sizes the frequency sketch): warm probes use their own random stream.

    ``tiers_out``: an optional ``uint8`` array of ``len(trace)`` elements, set to
    :data:`HOT`, :data:`WARM` or :data:`ENCODER` per request. ``progress`` is called with
    the number of requests done every :data:`PROGRESS_EVERY` requests and at the end.

    Raises ConfigError for a negative or non-integer capacity, an unknown policy (the
    offline ``belady`` has no warm model: use :func:`~tiercache.sim.belady`) or a bad
    ``policy.*`` value; ValueError for a ``tiers_out`` of the wrong dtype or shape.
    """
    hot_capacity = _capacity("hot_capacity", hot_capacity)
    warm_capacity = _capacity("warm_capacity", warm_capacity)
    if policy == "belady":
        raise ConfigError(
            "policy",
            policy,
            "the offline bound has no warm-tier model; "
            "use tiercache.sim.belady for the hot-tier bound",
        )
    engine = PolicyEngine(
        hot_capacity=hot_capacity,
        warm_capacity=warm_capacity,
        policy=policy,
        params=params,
        warm_min_frequency=warm_min_frequency,
        eviction_samples=eviction_samples,
        max_evictions_per_write=max_evictions_per_write,
        seed=seed,
        hasher=hasher,
        hasher_many=_hash_many if hasher is default_hasher else None,
        access_buffer=access_buffer,
    )
    keys = trace.tolist() if isinstance(trace, np.ndarray) else list(trace)
    if tiers_out is not None:
        if tiers_out.dtype != np.uint8 or tiers_out.shape != (len(keys),):
            raise ValueError(f"tiers_out must be a uint8 array of shape ({len(keys)},)")
    hot = engine.hot
    record_hit, record_miss = engine.record_hot_hit, engine.record_miss
    offer, gate, fates = engine.offer_hot, engine.warm_gate, placement.victim_fates
    has_warm = warm_capacity > 0
    warm = WarmStoreModel()
    # hot-resident keys that warm does not hold (the cache's ``in_warm`` flag cleared)
    unbacked: set[Hashable] = set()

    def is_backed(k: Hashable) -> bool:
        return k not in unbacked

    hot_hits = warm_hits = encoder_calls = 0
    admitted = rejected = evicted = 0
    writes = warm_evicted = gate_rejects = demotions = 0

    def write(batch: list[Hashable]) -> None:
        nonlocal writes, warm_evicted
        victims = warm.put_bounded(batch, warm_capacity, engine)
        writes += len(batch)
        warm_evicted += len(victims)
        for v in victims:  # a hot copy of a warm victim is no longer backed
            if v in hot:
                unbacked.add(v)

    for i, key in enumerate(keys):
        if progress is not None and i and not i % PROGRESS_EVERY:
            progress(i)
        if key in hot:  # membership needs no drain: hits never change it
            record_hit(key)
            hot_hits += 1
            if tiers_out is not None:
                tiers_out[i] = HOT
            continue
        record_miss(key)
        if has_warm and key in warm:
            warm_hits += 1
            in_warm = True
            if tiers_out is not None:
                tiers_out[i] = WARM
        else:
            encoder_calls += 1
            if tiers_out is not None:
                tiers_out[i] = ENCODER
            in_warm = False
            if has_warm:
                if gate(key):
                    write([key])
                    in_warm = True
                else:
                    gate_rejects += 1
        if not hot_capacity:
            continue
        adm = offer(key)
        demote: list[Hashable] = []
        if adm.evicted:  # each victim's fate, as the cache's write path decides it
            for victim, fate in fates(engine, adm.evicted, has_warm, is_backed):
                evicted += 1
                unbacked.discard(victim)
                if fate == placement.DEMOTE:
                    demote.append(victim)
                elif fate == placement.REJECT:
                    gate_rejects += 1
        if adm.admitted:
            admitted += 1
            if has_warm and not in_warm:
                unbacked.add(key)
        else:
            rejected += 1
        if demote:
            demotions += len(demote)
            write(demote)
    engine.drain()
    if progress is not None:
        progress(len(keys))
    return TieredSimResult(
        engine.policy_name,
        hot_capacity,
        warm_capacity,
        len(keys),
        hot_hits,
        warm_hits,
        encoder_calls,
        writes,
        warm_evicted,
        gate_rejects,
        admitted,
        rejected,
        evicted,
        demotions,
        len(warm),
    )
