"""TierCache: the one module that combines I/O and policy decisions.

Lookup order: hot (in-process, by exact content) -> warm (LMDB, by digest) -> shared
(Redis, optional, by digest) -> cold (the encoder). The policy engine
(``tiercache.policy``) decides what is admitted to hot, what hot evicts (demotion:
inclusive, so a clean key is simply dropped; a key that never reached warm is written
there), whether a recomputed vector is written to warm (minimum frequency gate), and which
warm records are evicted when the warm budget is exceeded. ``TierCache`` executes those
decisions and counts every one of them by reason. A shared hit fills warm (per the warm
gate) and is offered to hot; a recomputed vector is written to shared (per
``shared.min_frequency``) so that other hosts find it. The shared tier is fail-open: its
errors and outages are counted, never raised from a lookup or a write.

Thread-safe: one re-entrant lock guards the hot tier, the engine, single-flight state and
counters; LMDB reads and writes and the encoder run outside it.
"""

from __future__ import annotations

import builtins
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import numpy as np
from xxhash import xxh3_64_intdigest

from . import codec
from .aio import AsyncAPI
from .config import TierCacheConfig, default_config, load_config
from .encoders import Encoder, check_output, encoder_from_config
from .errors import (
    ClosedError,
    EncoderError,
    InvalidContentError,
    InvalidMetadataError,
    InvalidTTLError,
    InvalidVectorError,
    StoreError,
    TierCacheError,
    UnknownModelError,
)
from .keys import (
    KEY_BYTES,
    Content,
    KeyMaker,
    key_from_str,
    key_hash64,
    key_hash64_many,
    key_to_str,
)
from .policy import PolicyEngine
from .stats import EncoderStats, TierStats, format_stats
from .tiers import lmdb as _lmdb_tier
from .tiers.lmdb import LmdbTier, segment_cost, segment_slots
from .tiers.memory import NEVER, MemoryTier, hot_capacity
from .tiers.redis import RedisTier, SharedUnavailable

try:
    from . import _core
except ImportError:  # built without a C compiler: embed stays pure Python
    _core = None  # type: ignore[assignment]

MAX_TTL_SECONDS = 100 * 365 * 86400.0
_CORRUPT = object()
_ABSENT = object()  # LmdbTier.get_at's value for a key not stored
_BLOCK = 1024  # rows validated and encoded at a time by mset
_decode_at = codec.decode_at
_perf = time.perf_counter


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored vector. ``vector`` is the caller's own copy; ``tier`` is where it was found."""

    key: str
    vector: np.ndarray
    metadata: Any
    tier: str


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


_TEXT_TYPES = frozenset((str, bytes))


def _check_content(content: object, accepts: tuple[type, ...] | None = None) -> None:
    t = type(content)
    if t is not str and t is not bytes:
        raise InvalidContentError(
            f"content must be str or bytes, not {t.__name__}"
        )
    if accepts is not None and t not in accepts:
        raise InvalidContentError(
            f"the encoder takes {', '.join(a.__name__ for a in accepts)}, not {t.__name__}"
        )


_TAG_DB = b"tags"
MAX_TAG_BYTES = 200


def _check_tags(tags: Iterable[str] | None) -> list[str]:
    """Validated tags: non-empty str without NUL, at most ``MAX_TAG_BYTES`` UTF-8 bytes."""
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)):
        raise InvalidMetadataError("tags must be a list of strings, not one string")
    out = []
    for t in tags:
        if type(t) is not str or not t or "\0" in t:
            raise InvalidMetadataError(f"a tag must be a non-empty str without NUL: {t!r}")
        if len(t.encode("utf-8", "surrogatepass")) > MAX_TAG_BYTES:
            raise InvalidMetadataError(f"a tag is longer than {MAX_TAG_BYTES} bytes: "
                                       f"{t[:40]!r}")
        out.append(t)
    return list(dict.fromkeys(out))


def _id_tag(doc_id: Any) -> str:
    """The reserved tag of a document id (str or int ids; ``1`` and ``"1"`` differ)."""
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise InvalidMetadataError(f"a document id must be str or int, not {doc_id!r}")
    return f"id:{'s' if isinstance(doc_id, str) else 'i'}:{doc_id}"


def _check_ttl(ttl: float | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidTTLError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0 or ttl > MAX_TTL_SECONDS:
        raise InvalidTTLError(f"ttl must be > 0 and <= {MAX_TTL_SECONDS:.0f} seconds, got {ttl}")
    return float(ttl)


# _lookup_lower's warm read: (fast_j, fast_exp, todo, corrupt, expired, drop)
_WarmRows = tuple[list[int], list[float], list[tuple[int, Any]], int, int, list[bytes]]


class _OwnRow:
    """``rows_of`` of a batch without repeats: the j-th wanted content fills row j only.
    Stands in for a list of one-row lists, so a hit-only batch allocates none of them."""

    __slots__ = ()

    def __getitem__(self, j: int) -> list[int]:
        return [j]


_OWN_ROW = _OwnRow()


class TierCache(AsyncAPI):
    """A tiered embedding cache: hot RAM, warm LMDB, cold recompute.

    Build with ``TierCache.from_yaml(path)``, ``TierCache(load_config(path))`` or
    ``TierCache.default()``. ``encoder=`` overrides the configured encoder (any object
    with the :class:`~tiercache.encoders.Encoder` protocol), ``clock=`` the wall clock used
    for TTLs (seconds since the epoch), ``shared=`` the shared tier built from the
    ``shared`` section (a :class:`~tiercache.tiers.redis.RedisTier`, e.g. over an existing
    redis-py client). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        config: TierCacheConfig | None = None,
        *,
        encoder: Encoder | None = None,
        clock: Callable[[], float] = time.time,
        shared: RedisTier | None = None,
    ) -> None:
        self.config = cfg = config or default_config()
        self.encoder: Encoder = encoder or encoder_from_config(cfg.encoder)
        self.fingerprint = self.encoder.fingerprint
        self.dim = int(self.encoder.dim)
        self._accepts = tuple(self.encoder.accepts)
        self._clock = clock
        self._keys = KeyMaker(self.fingerprint)
        self._codec = cfg.warm.codec
        self._store_text = cfg.warm.store_text
        self._default_ttl = cfg.ttl
        self._batch = cfg.encoder.batch_size
        hot_cap = hot_capacity(cfg.hot.max_bytes, self.dim) if cfg.hot.enabled else 0
        self._hot = MemoryTier(self.dim, hot_cap)
        self._lock = self._hot.lock
        self._warm: LmdbTier | None = None
        warm_cap = 0
        if cfg.warm.enabled:
            self._warm = LmdbTier(
                cfg.warm.path,
                fingerprint=self.fingerprint,
                namespace=cfg.warm.namespace,
                durability=cfg.warm.durability,
                map_size=cfg.warm.map_size,
                max_bytes=cfg.warm.max_bytes,
                max_readers=cfg.warm.max_readers,
                on_fingerprint_mismatch=cfg.warm.on_fingerprint_mismatch,
                packed_record_len=codec.record_size(self.dim, self._codec),
            )
            warm_cap = warm_capacity(cfg.warm.max_bytes, codec.record_size(self.dim, self._codec))
        self._engine = PolicyEngine(
            hot_capacity=hot_cap,
            warm_capacity=warm_cap,
            policy=cfg.policy.name,
            params=dict(cfg.policy.params),
            warm_min_frequency=cfg.policy.warm_min_frequency,
            eviction_samples=cfg.policy.eviction_samples,
            max_evictions_per_write=cfg.policy.max_evictions_per_write,
            seed=cfg.policy.seed,
            hasher=key_hash64,
            hasher_many=key_hash64_many,
            access_buffer=cfg.policy.access_buffer,
        )
        self._shared = shared
        sc = cfg.shared
        if shared is None and sc.active:
            self._shared = RedisTier(
                url=sc.url, nodes=sc.nodes, cluster=sc.cluster, key_prefix=sc.key_prefix,
                timeout=sc.timeout, connect_timeout=sc.connect_timeout,
                backoff_initial=sc.backoff_initial, backoff_max=sc.backoff_max,
                password=os.environ.get(sc.password_env) if sc.password_env else None,
            )
        self._shared_ttl = sc.ttl
        self._shared_min_frequency = sc.min_frequency
        self._record_hit = self._engine.record_hot_hit  # bound once: the hot path
        self._mem_tags: dict[str, set[bytes]] = {}  # tag index without a warm tier
        self._inflight: dict[bytes, Future[np.ndarray]] = {}
        self._s_hot = TierStats()
        self._s_warm = TierStats()
        self._s_shared = TierStats()
        self._s_enc = EncoderStats()
        self._lookups = 0
        self._closed = False
        self._tick = 0
        self._storer: ThreadPoolExecutor | None = None
        self._fast: Any = None
        if _core is not None and hot_cap > 0 and type(self).embed is TierCache.embed:
            # embed's hot hit in one C call (tiercache/_core.c HotReader): the same lookup,
            # copy, access record and counters as the Python embed below, under the same
            # lock; anything else (a miss, an expired entry, the lock busy, another content
            # type) calls the Python embed unchanged. An instance attribute, so it shadows
            # the method; close() removes it.
            hot = self._hot
            self._fast = _core.HotReader(
                TierCache.embed.__get__(self, type(self)), self._lock, hot._by_content,
                hot.slab, hot.expires, hot._key, self._engine._buffer,
                self._engine.access_buffer, self._engine.drain, self._clock,
                self._record_hot_latency,
            )
            self.__dict__["embed"] = self._fast
        self._warm_reader: Any = None  # the warm tier's reads in C (embed_many's rows)
        self._fast_warm: Any = None  # the same object, when it also serves embed
        if _core is not None and self._warm is not None:
            # tiercache/_core.c WarmReader: digests, one read transaction through the
            # tier's own py-lmdb environment, records verified and decoded as
            # codec.decode_at does. ``rows`` serves embed_many's warm part; with the hot
            # tier off it also serves embed (below): a warm hit's access is recorded under
            # the lock as _warm_get_one records it; anything else (a miss, a corrupt or
            # expired record, an LMDB error, a resize, a fork) calls the Python embed
            # unchanged, before anything is counted
            self._warm_reader = _core.WarmReader(
                TierCache.embed.__get__(self, type(self)), self._lock, self._warm,
                _lmdb_tier.__dict__, self._keys.prefix, KeyMaker.person, self.dim,
                self._engine._buffer, self._engine.access_buffer, self._engine.drain,
                self._clock, self._record_warm_latency, xxh3_64_intdigest,
            )
            if hot_cap == 0 and type(self).embed is TierCache.embed:
                self._fast_warm = self._warm_reader
                self.__dict__["embed"] = self._fast_warm

    # -- construction helpers ----------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **kwargs: Any) -> TierCache:
        """Build from a YAML config file (see docs/configuration.md)."""
        return cls(load_config(path), **kwargs)

    @classmethod
    def default(cls, **kwargs: Any) -> TierCache:
        """Build from the packaged default config (warm store under ./.tiercache/warm)."""
        return cls(default_config(), **kwargs)

    def __enter__(self) -> TierCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush policy buffers and close the warm store. Idempotent.

        Work already handed to the async thread pool finishes first.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.__dict__.pop("embed", None)  # the C hot path; the method raises from now on
            for fast in (self._fast, self._fast_warm):
                if fast is not None:
                    fast.close()  # references taken earlier fall back to the method too
            self._fold_fast_hits()
            self._engine.drain()
        self._shutdown_pool()
        if self._storer is not None:
            self._storer.shutdown(wait=True)
        if self._warm is not None:
            self._warm.close()
        if self._shared is not None:
            self._shared.close()

    def _record_hot_latency(self, seconds: float) -> None:
        self._s_hot.latency.add(seconds)

    def _record_warm_latency(self, seconds: float) -> None:
        self._s_warm.latency.add(seconds)

    def _fold_fast_hits(self) -> None:
        """Add the C read paths' hits to the counters (call with the lock held)."""
        if self._fast is not None:
            n = self._fast.take_hits()
            self._s_hot.hits += n
            self._lookups += n
        if self._fast_warm is not None:  # a warm hit is a hot miss first, as in Python
            n = self._fast_warm.take_hits()
            self._s_warm.hits += n
            self._s_hot.misses += n
            self._lookups += n

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this TierCache is closed")

    # -- keys ----------------------------------------------------------------------------
    def key(self, content: Content) -> str:
        """The public key (32 hex chars) of ``content`` in this cache's namespace."""
        _check_content(content)
        return key_to_str(self._keys.digest(content))

    # -- embedding -------------------------------------------------------------------------
    def embed(self, content: Content) -> np.ndarray:
        """The vector of ``content`` (shape ``(dim,)``, float32, the caller's own copy).

        Served from hot, else warm, else computed by the encoder (and cached per policy).
        """
        if self._closed:
            raise ClosedError("this TierCache is closed")
        t = type(content)
        if t is not str and t is not bytes:
            _check_content(content)
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
                if exp == NEVER or (exp > self._clock()
                                    and hot._by_content.get(content) == slot):
                    vec: np.ndarray = hot.slab[slot].copy()
                    self._record_hit(hot._key[slot])
                    self._s_hot.hits += 1
                    self._lookups += 1
                    if timed:
                        self._s_hot.latency.add(_perf() - t0)
                    return vec
        return self._embed_one(content, slot is not None, timed)

    def _hot_hit_locked(self, content: Content) -> np.ndarray | None:
        """With the lock held: a fresh hot entry's vector (a copy), its hit recorded and
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
                return self._hot_hit_locked(content)
        vec: np.ndarray = hot.slab[slot].copy()
        self._engine.record_hot_hit(hot._key[slot])
        self._s_hot.hits += 1
        self._lookups += 1
        return vec

    def _hot_get_nowait(self, content: Content) -> np.ndarray | None:
        """A hot hit without waiting for the lock (for the event loop); None otherwise."""
        if self._closed or (type(content) is not str and type(content) is not bytes):
            return None
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._hot_hit_locked(content)
        finally:
            self._lock.release()

    def _embed_one(self, content: Content, expired_entry: bool, timed: bool) -> np.ndarray:
        """``embed`` past a hot miss: one digest, one warm read, else the encoder.

        The hot miss is recorded in the same locked section as the warm outcome (one lock
        round trip), unless hot held an expired entry, which is removed first.
        """
        key = self._keys.digest(content)
        recorded = False
        if expired_entry:
            with self._lock:
                fresh = self._hot_hit_locked(content)  # another thread may have refreshed it
                if fresh is not None:
                    return fresh
                self._remove_hot_locked(key, "expired")
                self._record_hot_miss_locked(key)
            recorded = True
        if self._warm is not None:
            vec = self._warm_get_one(content, key, record_miss=not recorded, timed=timed)
            if vec is not None:
                return vec
        elif not recorded:
            with self._lock:
                self._record_hot_miss_locked(key)
        if self._shared is not None:
            out = np.empty((1, self.dim), dtype=np.float32)
            if not self._shared_lookup({content: (key, [0])}, out, None, self._clock()):
                hit: np.ndarray = out[0]
                return hit
        _check_content(content, self._accepts)
        return self._compute([key], [content])[key].copy()

    def _record_hot_miss_locked(self, key: bytes) -> None:
        self._lookups += 1
        self._s_hot.misses += 1
        self._engine.record_miss(key)

    def _warm_get_one(self, content: Content, key: bytes, *, record_miss: bool = False,
                      timed: bool = True) -> np.ndarray | None:
        """One warm lookup (counted, promoted per policy); None on a miss of any kind.

        ``record_miss``: also record the hot miss that led here, in the same locked section.
        The record is verified and decoded in place in the map (``LmdbTier.get_at`` +
        ``codec.decode_at``): one header unpack, one checksum, one copy of the vector.
        """
        warm = self._warm
        assert warm is not None
        t0 = _perf() if timed else 0.0
        try:
            rec = warm.get_at(key, _decode_at, self.dim, _ABSENT)
        except Exception:
            with self._lock:
                if record_miss:
                    self._record_hot_miss_locked(key)
                self._s_warm.errors += 1
                self._s_warm.misses += 1
            return None
        sw = self._s_warm
        with self._lock:
            if record_miss:  # _record_hot_miss_locked, inlined
                self._lookups += 1
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
                demote = self._promote_locked(
                    [(content, key, vector, expires_at, blob)]
                ) if self._hot.capacity else None
        if expired:
            self._warm_delete([key])
            return None
        if demote:
            self._warm_write(demote, forced=False)
        return vector

    def embed_many(self, contents: Sequence[Content]) -> np.ndarray:
        """Vectors of ``contents`` as one ``(n, dim)`` float32 array, in input order.

        Duplicates are looked up and encoded once; misses are encoded in batches of
        ``encoder.batch_size``; concurrent misses of one key are computed once. An encoder
        failure raises :class:`EncoderError` to every waiting caller and caches nothing.
        """
        self._check_open()
        contents = list(contents)
        if set(map(type, contents)) - _TEXT_TYPES:  # one C-level pass when all are text
            for c in contents:
                _check_content(c)
        out = np.empty((len(contents), self.dim), dtype=np.float32)
        if not contents:
            return out
        missing = self._lookup_into(contents, out, None)
        if not missing:
            return out
        for c in missing:
            _check_content(c, self._accepts)
        keys = [k for k, _ in missing.values()]
        vectors = self._compute(keys, list(missing))
        for k, rows in missing.values():
            out[rows] = vectors[k]
        return out

    # -- lookups ---------------------------------------------------------------------------
    def _lookup_into(
        self,
        contents: list[Content],
        out: np.ndarray,
        found: list[Entry | None] | None,
    ) -> dict[Content, tuple[bytes, list[int]]]:
        """Fill ``out`` rows from hot and warm; return {missing content: (key, rows)}.

        With ``found`` (a list of None of the same length), hits also produce Entries.
        """
        now = self._clock()
        t0 = _perf()
        hot = self._hot
        warm_wanted: dict[Content, list[int]] = {}
        if not hot.capacity:  # no hot tier: every distinct content goes to warm
            if len(dict.fromkeys(contents)) == len(contents):  # no repeats (C speed)
                with self._lock:
                    self._lookups += len(contents)
                    self._s_hot.misses += len(contents)
                return self._lookup_lower(out, found, now, contents, _OWN_ROW)
            for i, c in enumerate(contents):
                if c in warm_wanted:
                    warm_wanted[c].append(i)
                else:
                    warm_wanted[c] = [i]
            with self._lock:
                self._lookups += len(contents)
                self._s_hot.misses += len(warm_wanted)
                self._s_enc.deduplicated += len(contents) - len(warm_wanted)
            return self._lookup_lower(out, found, now, list(warm_wanted),
                                      list(warm_wanted.values()))
        with self._lock:
            self._lookups += len(contents)
            if self._fast is not None and found is None and not hot.n_expiring:
                # the C gather: rows copied into out, accesses recorded, misses returned
                unserved = self._fast.gather(contents, out)
                for i in unserved:
                    c = contents[i]
                    if c in warm_wanted:
                        warm_wanted[c].append(i)
                    else:
                        warm_wanted[c] = [i]
                n_hits = len(contents) - len(unserved)
                self._s_hot.hits += n_hits
                self._s_hot.misses += len(warm_wanted)
                self._s_enc.deduplicated += len(unserved) - len(warm_wanted)
                if n_hits:
                    self._s_hot.latency.add((_perf() - t0) / len(contents))
            else:
                slots: list[int | None] = list(map(hot._by_content.get, contents))  # C speed
                hit_slots: list[int]
                if hot.n_expiring:  # only entries with a TTL need a clock comparison
                    expires = hot.expires
                    expired: set[int] = set()  # a repeat of an expired content is a miss too
                    for i, s in enumerate(slots):
                        if s is not None and (s in expired or expires[s] <= now):
                            if s not in expired:
                                expired.add(s)
                                self._remove_hot_locked(hot._key[s], "expired")
                            slots[i] = None
                if None in slots:
                    hit_pos = [i for i, s in enumerate(slots) if s is not None]
                    hit_slots = cast(list[int], [slots[i] for i in hit_pos])
                    for i, c in enumerate(contents):
                        if slots[i] is None:
                            if c in warm_wanted:
                                warm_wanted[c].append(i)
                            else:
                                warm_wanted[c] = [i]
                    if hit_slots:
                        out[hit_pos] = hot.slab[hit_slots]
                else:  # every lookup hit hot: one gather
                    hit_pos = list(range(len(contents)))
                    hit_slots = cast(list[int], slots)
                    out[:] = hot.slab[hit_slots]
                if hit_slots:
                    self._engine.record_hot_hits(list(map(hot._key.__getitem__, hit_slots)))
                    if found is not None:
                        for i, s in zip(hit_pos, hit_slots):
                            meta = hot._meta[s]
                            found[i] = Entry(
                                key_to_str(hot._key[s]), out[i].copy(),
                                codec.unpack_blob(meta).get("m") if meta else None, "hot",
                            )
                self._s_hot.hits += len(hit_slots)
                self._s_hot.misses += len(warm_wanted)
                # repeats of a missing content in this batch ride on its single lookup/encode
                self._s_enc.deduplicated += len(contents) - len(hit_slots) - len(warm_wanted)
                if hit_slots:
                    self._s_hot.latency.add((_perf() - t0) / len(contents))
        return self._lookup_lower(out, found, now, list(warm_wanted), list(warm_wanted.values()))

    def _lookup_lower(
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
        read = None
        t1 = _perf()
        if self._warm_reader is not None:  # keys and records in C, one transaction
            read = self._warm_reader.rows(wanted, out, None if rows_of is _OWN_ROW else rows_of,
                                          now, self._keys.digest)
        keys: list[bytes] = read[0] if read is not None else list(map(self._keys.digest,
                                                                      wanted))
        with self._lock:
            self._engine.record_misses(keys)
        if self._warm is None:
            missing = {c: (k, rows_of[j]) for j, (c, k) in enumerate(zip(wanted, keys))}
            if self._shared is not None:
                return self._shared_lookup(missing, out, found, now)
            return missing
        n_keys = len(keys)
        hit = np.zeros(n_keys, dtype=bool)
        if read is not None:
            fast_j, fast_exp, todo, corrupt, expired, drop = self._rows_from_c(
                keys, read[1], read[2])
        else:
            t1 = _perf()
            fast_j, fast_exp, todo, corrupt, expired, drop = self._rows_from_python(
                keys, rows_of, out, now)
        hit[fast_j] = True
        # the rest one by one: records of another codec or with metadata, other lengths
        slow_j: list[int] = []
        raws: list[codec.RawRecord] = []
        dim = self.dim
        for j, buf in todo:
            raw = codec.decode_raw(buf, dim) if buf is not None else None
            if raw is None:
                if buf is not None:
                    corrupt += 1
            elif raw[2] and raw[2] <= now:
                expired += 1
                drop.append(keys[j])
            else:
                slow_j.append(j)
                raws.append(raw)
        hit[slow_j] = True
        if slow_j:
            smatrix = codec.raw_to_matrix(raws, dim)
            for m, j in enumerate(slow_j):
                out[rows_of[j]] = smatrix[m]
        for j in np.flatnonzero(~hit).tolist():
            missing[wanted[j]] = (keys[j], rows_of[j])
        elapsed = _perf() - t1
        hits = fast_j + slow_j  # indexes into wanted/keys; a hit's vector is out[rows[0]]
        hit_exp: list[float] = fast_exp + [r[2] for r in raws]
        hit_blob: list[bytes | None] = [None] * len(fast_j)
        hit_blob += [r[3] for r in raws]
        if found is not None:
            for j, blob in zip(hits, hit_blob):
                meta = codec.unpack_blob(blob).get("m") if blob else None
                vec = out[rows_of[j][0]]
                for i in rows_of[j]:
                    found[i] = Entry(key_to_str(keys[j]), vec.copy(), meta, "warm")
        with self._lock:
            sw = self._s_warm
            sw.corrupt += corrupt
            sw.expired += expired
            if expired:
                sw.evictions["expired"] += expired
            sw.hits += len(hits)
            sw.misses += len(missing)
            sw.latency.add(elapsed / max(1, n_keys))
            demote = self._promote_locked(
                [(wanted[j], keys[j], out[rows_of[j][0]], e, b)
                 for j, e, b in zip(hits, hit_exp, hit_blob)]
            ) if hits and self._hot.capacity else []
        if drop:
            self._warm_delete(drop)
        if demote:
            self._warm_write(demote, forced=False)
        if missing and self._shared is not None:
            return self._shared_lookup(missing, out, found, now)
        return missing

    def _rows_from_c(
        self, keys: list[bytes], status: bytes, expiries: bytes,
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
        return (fast_j, fast_exp, todo, int(np.count_nonzero(st == 3)), len(dead),
                [keys[j] for j in dead])

    def _rows_from_python(
        self, keys: list[bytes], rows_of: list[list[int]] | _OwnRow, out: np.ndarray,
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
        fast, bad, expiry, fmatrix = codec.decode_rows(rows, len(pos), stride, KEY_BYTES,
                                                       dim, self._codec)
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
            todo = [(pos[r], mv[r * stride + KEY_BYTES:(r + 1) * stride])
                    for r in np.flatnonzero(~(fast | bad)).tolist()] + todo
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

    # -- shared tier ------------------------------------------------------------------------
    def _shared_lookup(
        self,
        missing: dict[Content, tuple[bytes, list[int]]],
        out: np.ndarray,
        found: list[Entry | None] | None,
        now: float,
    ) -> dict[Content, tuple[bytes, list[int]]]:
        """Look ``missing`` up in Redis: fill ``out`` rows (and ``found``) for hits, place
        them locally (warm per gate, hot per admission) and return what is still missing.
        Any failure is counted and treated as a miss of every key."""
        shared = self._shared
        assert shared is not None
        items = list(missing.items())
        keys = [k for _, (k, _) in items]
        t0 = _perf()
        try:
            bufs = shared.get_many(keys)
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
        dim = self.dim
        still: dict[Content, tuple[bytes, list[int]]] = {}
        placed: list[tuple[Content, bytes, np.ndarray, float, bytes | None]] = []
        corrupt = expired = 0
        for (c, (k, rows)), buf in zip(items, bufs):
            rec = codec.decode_record(buf, dim) if buf is not None else None
            if rec is None:
                corrupt += buf is not None
                still[c] = (k, rows)
                continue
            if rec.expires_at and rec.expires_at <= now:
                expired += 1
                still[c] = (k, rows)
                continue
            if len(rows) == 1:
                out[rows[0]] = rec.vector  # a plain row store: 5x cheaper than fancy indexing
            else:
                out[rows] = rec.vector
            if found is not None:
                meta = rec.metadata()
                for i in rows:
                    found[i] = Entry(key_to_str(k), rec.vector.copy(), meta, "shared")
            placed.append((c, k, rec.vector, rec.expires_at, rec.blob))
        with self._lock:
            sm = self._s_shared
            sm.hits += len(placed)
            sm.misses += len(still)
            sm.corrupt += corrupt
            sm.expired += expired
            sm.latency.add(elapsed)
        if placed:
            self._place_local(placed, promoted=True)
        return still

    def _shared_write(self, entries: list[tuple[bytes, bytes, float]]) -> None:
        """Write ``(key, record, expires_at)`` to Redis with their TTL; fail-open."""
        shared = self._shared
        if shared is None or not entries:
            return
        now = self._clock()
        limit = self._shared_ttl
        items: list[tuple[bytes, bytes, int | None]] = []
        for k, record, expires_at in entries:
            ttl = limit
            if expires_at:
                left = expires_at - now
                if left <= 0:
                    continue
                ttl = left if ttl is None else min(ttl, left)
            items.append((k, record, None if ttl is None else max(1, int(ttl * 1000))))
        if not items:
            return
        t0 = _perf()
        try:
            shared.put_many(items)
        except Exception as exc:
            with self._lock:
                if isinstance(exc, SharedUnavailable):
                    self._s_shared.skipped += len(items)
                else:
                    self._s_shared.errors += 1
            return
        with self._lock:
            self._s_shared.writes += len(items)
            self._s_shared.latency.add(_perf() - t0)

    def _shared_call(self, what: str, fn: Callable[[RedisTier], Any]) -> Any:
        """An invalidating call on Redis (drop, clear): failures raise StoreError, since a
        delete that did not happen would let other hosts serve the entry again."""
        assert self._shared is not None
        try:
            return fn(self._shared)
        except Exception as exc:
            with self._lock:
                self._s_shared.errors += 1
            raise StoreError(
                f"{what}: the local tiers are done, but the shared tier (Redis) could not be "
                f"reached, so other hosts may still serve these entries: {exc}"
            ) from exc

    def _place_local(
        self, entries: list[tuple[Content, bytes, np.ndarray, float, bytes | None]],
        *, promoted: bool, records: list[bytes] | None = None,
    ) -> None:
        """Write ``(content, key, vector, expires_at, blob)`` to warm (per the warm gate)
        and offer them to hot. ``promoted``: they came from the shared tier (counted as
        warm promotions). ``records``: the entries already encoded with this cache's
        codec, one per entry (else they are encoded here, for the gated ones)."""
        warm = self._warm
        with self._lock:
            gate = [warm is not None and self._engine.warm_gate(k) for _, k, _, _, _ in entries]
            if warm is not None:
                self._s_warm.rejections["min_frequency"] += gate.count(False)
        if records is None:
            warm_items = [(k, codec.encode_record(v, self._codec, exp, blob))
                          for (_, k, v, exp, blob), g in zip(entries, gate) if g]
        else:
            warm_items = [(e[1], rec) for e, rec, g in zip(entries, records, gate) if g]
        written = self._warm_write(warm_items, forced=False) if warm_items else False
        in_warm = [g and written for g in gate]
        if promoted and written:
            with self._lock:
                self._s_warm.promotions += len(warm_items)
        if self._hot.capacity == 0:
            return
        demote: list[tuple[bytes, bytes]] = []
        with self._lock:
            for (c, k, v, exp, blob), w in zip(entries, in_warm):
                demote += self._admit_hot_locked(c, k, v, exp or NEVER, blob, in_warm=w)
        if demote:
            self._warm_write(demote, forced=False)

    def _remove_hot_locked(self, key: bytes, reason: str) -> None:
        if self._hot.delete_key(key):
            self._engine.remove_hot(key)
            self._s_hot.evictions[reason] += 1
            if reason == "expired":
                self._s_hot.expired += 1

    def _admit_hot_locked(
        self, content: Content, key: bytes, vector: np.ndarray, expires_at: float,
        meta: bytes | None, in_warm: bool,
    ) -> list[tuple[bytes, bytes]]:
        """Offer one entry to hot; returns demotion writes (key, record) for warm."""
        hot = self._hot
        slot = hot.slot_of_key(key)
        if slot is not None:  # already resident: refresh in place
            hot.put(content, key, vector, expires_at, meta, in_warm or hot.in_warm(slot))
            return []
        adm = self._engine.offer_hot(key)
        demote: list[tuple[bytes, bytes]] = []
        for evicted in adm.evicted:
            victim = cast(bytes, evicted)
            vslot = hot.slot_of_key(victim)
            if vslot is None:
                continue
            self._s_hot.evictions["capacity"] += 1
            self._s_hot.demotions += 1
            if not hot.in_warm(vslot) and self._warm is not None:
                if self._engine.warm_gate(victim):
                    exp = float(hot.expires[vslot])
                    demote.append((victim, codec.encode_record(
                        hot.slab[vslot], self._codec, 0.0 if exp == NEVER else exp,
                        hot.meta_at(vslot))))
                else:
                    self._s_warm.rejections["min_frequency"] += 1
            hot.delete_key(victim)
        if adm.admitted:
            hot.put(content, key, vector, expires_at, meta, in_warm)
            self._s_hot.promotions += 1
        else:
            self._s_hot.rejections[adm.reason or "rejected"] += 1
        return demote

    def _promote_locked(
        self, items: list[tuple[Content, bytes, np.ndarray, float, bytes | None]]
    ) -> list[tuple[bytes, bytes]]:
        """Offer warm hits ``(content, key, vector, expires_at, blob)`` to hot."""
        demote: list[tuple[bytes, bytes]] = []
        if self._hot.capacity == 0:
            return demote
        for c, k, vector, expires_at, blob in items:
            demote += self._admit_hot_locked(
                c, k, vector, expires_at or NEVER, blob, in_warm=True
            )
        return demote

    # -- warm writes ----------------------------------------------------------------------
    def _raise_warm_fault(self, exc: BaseException, message: str) -> NoReturn:
        """Count a warm-store failure and raise it typed: a ``TierCacheError`` as it is,
        anything else (an LMDB error, an OSError) as ``StoreError("<message>: <exc>")``.
        For the operations whose failure must never be silent (explicit writes, drops,
        clears, the tag index)."""
        with self._lock:
            self._s_warm.errors += 1
        if isinstance(exc, TierCacheError):
            raise exc
        raise StoreError(f"{message}: {exc!r}") from exc

    def _warm_write(self, items: list[tuple[bytes, bytes]], *, forced: bool) -> bool:
        """Write records to warm, evicting per policy to respect the budget.

        Returns False if the write failed (counted; the caller still gets its vectors).
        ``forced`` writes (explicit ``set``) raise instead, so an acknowledged write is
        never silently dropped.
        """
        warm = self._warm
        if warm is None or not items:
            return False
        engine = self._engine
        new_keys = {k for k, _ in items}
        victims: list[bytes] = []

        def choose(excess: int, sample: Callable[[Sequence[bytes]], list[bytes]]) -> list[bytes]:
            # runs inside the warm write transaction (serialised across processes)
            nonlocal victims
            limit = min(excess, len(new_keys) + engine.max_evictions_per_write)
            with self._lock:
                probes = engine.warm_probes(limit * engine.eviction_samples)
            sampled = sample(probes)
            with self._lock:
                victims = engine.warm_victims(sampled, excess, protect=new_keys,
                                              batch=len(new_keys))
            return victims

        try:
            deleted = warm.put_bounded(items, engine.warm_capacity, choose)
            with self._lock:
                self._s_warm.writes += len(items)
                self._s_warm.evictions["capacity"] += deleted
                for v in victims:  # the hot copy of a warm victim is no longer backed
                    slot = self._hot.slot_of_key(v)
                    if slot is not None:
                        self._hot.mark_in_warm(slot, False)
            return True
        except Exception as exc:
            if forced:
                self._raise_warm_fault(exc, "warm write failed, nothing was stored")
            with self._lock:
                self._s_warm.errors += 1
            return False

    def _warm_delete(self, keys: list[bytes]) -> int:
        if self._warm is None or not keys:
            return 0
        try:
            return self._warm.delete_many(keys)
        except Exception:
            with self._lock:
                self._s_warm.errors += 1
            return 0

    # -- recompute (cold) --------------------------------------------------------------
    def _compute(self, keys: list[bytes], contents: list[Content], *,
                 store: bool = True) -> dict[bytes, np.ndarray]:
        """Encode the distinct missing keys once, with single-flight across threads.

        ``store=False``: the caller stores the results itself (``precompute``)."""
        owned: list[tuple[bytes, Content, Future[np.ndarray]]] = []
        waits: list[tuple[bytes, Future[np.ndarray]]] = []
        with self._lock:
            for k, c in zip(keys, contents):
                fut = self._inflight.get(k)
                if fut is None:
                    fut = Future()
                    self._inflight[k] = fut
                    owned.append((k, c, fut))
                else:
                    waits.append((k, fut))
            self._s_enc.waited += len(waits)
        results: dict[bytes, np.ndarray] = {}
        if owned:
            batch_size = self._batch
            if len(owned) > batch_size and all(type(c) is str for _, c, _ in owned):
                # longest first, as SentenceTransformer.encode orders its own batches: texts
                # of similar length share a batch, so less padding is encoded
                owned.sort(key=lambda t: -len(cast(str, t[1])))
            storing: Future[None] | None = None  # the previous chunk's store, in flight
            try:
                for start in range(0, len(owned), batch_size):
                    chunk = owned[start:start + batch_size]
                    batch = [c for _, c, _ in chunk]
                    t0 = _perf()
                    try:
                        matrix = self.encoder.encode(batch)
                    except TierCacheError:
                        raise
                    except Exception as exc:
                        raise EncoderError(f"encoder failed: {exc!r}") from exc
                    matrix = check_output(matrix, len(batch), self.dim)
                    dt = _perf() - t0
                    with self._lock:
                        s = self._s_enc
                        s.calls += 1
                        s.texts += len(batch)
                        s.seconds += dt
                        s.max_batch = max(s.max_batch, len(batch))
                        s.latency.add(dt)
                    if store:
                        # one store at a time, in order; while a chunk is written (LMDB
                        # commits and fsyncs release the GIL) the next one is encoded
                        if storing is not None:
                            done, storing = storing, None
                            done.result()
                        if start + batch_size < len(owned):
                            storing = self._store_pool().submit(
                                self._store_computed, chunk, matrix)
                        else:
                            self._store_computed(chunk, matrix)
                    for i, (k, _, _) in enumerate(chunk):
                        results[k] = matrix[i]
            except BaseException as exc:
                if storing is not None:  # never leave a write running behind an error
                    storing.exception()
                err = exc if isinstance(exc, TierCacheError) else EncoderError(repr(exc))
                with self._lock:
                    self._s_enc.errors += 1
                    for k, _, fut in owned:
                        if k not in results:
                            self._inflight.pop(k, None)
                            fut.set_exception(err)
                    for k, _, fut in owned:
                        if k in results:
                            self._inflight.pop(k, None)
                            fut.set_result(results[k])
                if err is exc:
                    raise  # keeps the encoder's own cause (e.g. CallableEncoder's)
                raise err from exc
            with self._lock:
                for k, _, fut in owned:
                    self._inflight.pop(k, None)
                    fut.set_result(results[k])
        for k, fut in waits:
            results[k] = fut.result()
        return results

    def _store_pool(self) -> ThreadPoolExecutor:
        """The single thread that stores computed chunks while the next one is encoded."""
        with self._lock:
            if self._storer is None:
                self._storer = ThreadPoolExecutor(1, thread_name_prefix="tiercache-store")
            return self._storer

    def _store_computed(
        self, chunk: list[tuple[bytes, Content, Future[np.ndarray]]], matrix: np.ndarray
    ) -> None:
        now = self._clock()
        ttl = self._default_ttl
        expires = now + ttl if ttl else 0.0
        store_text = self._store_text
        blobs = [codec.pack_blob(None, c) if store_text else None for _, c, _ in chunk]
        entries = [(c, k, matrix[i], expires, blobs[i]) for i, (k, c, _) in enumerate(chunk)]
        # encoded once, for warm and shared alike
        records = codec.encode_records(matrix, self._codec, expires, blobs)
        self._place_local(entries, promoted=False, records=records)
        if self._shared is not None:
            min_f = self._shared_min_frequency
            if min_f:
                with self._lock:
                    share = [self._engine.frequency(k) >= min_f for _, k, _, _, _ in entries]
                    self._s_shared.rejections["min_frequency"] += share.count(False)
            else:
                share = [True] * len(entries)
            self._shared_write([(e[1], rec, expires)
                                for e, rec, ok in zip(entries, records, share) if ok])

    # -- explicit writes ------------------------------------------------------------------
    def _validate_vector(self, vector: Any) -> np.ndarray:
        try:
            arr = np.asarray(vector)
        except Exception as exc:
            raise InvalidVectorError(f"not an array: {exc}") from exc
        if arr.dtype.kind != "f":
            raise InvalidVectorError(f"vector dtype must be floating point, not {arr.dtype}")
        if arr.shape != (self.dim,):
            raise InvalidVectorError(f"vector shape must be ({self.dim},), not {arr.shape}")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise InvalidVectorError("vector holds NaN or infinite values")
        return arr

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.fingerprint.model:
            raise UnknownModelError(
                f"this cache holds vectors of {self.fingerprint.model!r}, not {model!r}"
            )

    def set(
        self,
        content: Content,
        vector: Any,
        *,
        metadata: Any = None,
        ttl: float | None = None,
        model: str | None = None,
        tags: Iterable[str] | None = None,
        doc_id: Any = None,
    ) -> str:
        """Store ``vector`` for ``content``; returns its key.

        The record is committed to warm before this returns (fsynced with durability
        ``durable``), then hot is refreshed or offered the entry. ``ttl`` (seconds)
        overrides the configured default. ``tags`` and ``doc_id`` register the entry for
        :meth:`invalidate_tags` and :meth:`drop_ids`. Bad input raises and changes nothing.
        """
        item: dict[str, Any] = {"content": content, "vector": vector, "metadata": metadata,
                                "ttl": ttl, "tags": tags, "doc_id": doc_id}
        return self.mset([item], model=model)[0]

    def mset(self, items: Iterable[Any], *, ttl: float | None = None,
             model: str | None = None, tags: Iterable[str] | None = None) -> list[str]:
        """Store many entries in one warm transaction; returns their keys in order.

        Items are mappings with ``content`` (or ``text``), ``vector`` (or ``embedding``)
        and optional ``metadata``/``ttl``/``tags``/``doc_id``, or tuples ``(content,
        vector[, metadata[, ttl]])``. ``tags`` here apply to every item. Every item is
        validated before anything is written.
        """
        self._check_open()
        self._check_model(model)
        default_ttl = _check_ttl(ttl) if ttl is not None else self._default_ttl
        now = self._clock()
        dim = self.dim
        contents: list[Content] = []
        rows: list[np.ndarray] = []
        expiries: list[float] = []
        blobs: list[bytes | None] = []
        item_tags: list[list[str]] = []
        common = _check_tags(tags)
        store_text = self._store_text
        no_tags: list[str] = []
        for item in items:
            extra = no_tags
            if type(item) is tuple and len(item) == 2:  # (content, vector): the bulk shape
                content, vector = item
                metadata = item_ttl = None
            elif isinstance(item, Mapping):
                content = item.get("content", item.get("text"))
                vector = item.get("vector", item.get("embedding"))
                metadata = item.get("metadata")
                item_ttl = item.get("ttl")
                extra = _check_tags(item.get("tags"))
                if item.get("doc_id") is not None:
                    extra.append(_id_tag(item["doc_id"]))
            else:
                parts = tuple(item)
                if not 2 <= len(parts) <= 4:
                    raise InvalidVectorError("items are (content, vector[, metadata[, ttl]])")
                content, vector = parts[0], parts[1]
                metadata = parts[2] if len(parts) > 2 else None
                item_ttl = parts[3] if len(parts) > 3 else None
            if type(content) is not str and type(content) is not bytes:
                _check_content(content)
            if not (type(vector) is np.ndarray and vector.dtype == np.float32
                    and vector.shape == (dim,)):
                vector = self._validate_vector(vector)  # converts, or raises
            life = default_ttl if item_ttl is None else _check_ttl(item_ttl)
            contents.append(content)
            rows.append(vector)
            expiries.append(now + life if life else 0.0)
            blobs.append(codec.pack_blob(metadata, content if store_text else None)
                         if metadata is not None or store_text else None)
            item_tags.append(common + extra if extra or common else no_tags)
        if not contents:
            return []
        hot = self._hot
        keep = bool(hot.capacity or len(hot))  # hot off and empty (a bulk load): no refresh
        # validated and encoded in blocks: a new 15 MB matrix costs ~13 ms of page faults on
        # the reference VM (a few us per 4 KiB page); a 1.5 MB block freed before the next
        # is recycled by malloc. Nothing is written before every block has validated.
        blocks: list[np.ndarray] = []  # the cache's own copy of every vector, if hot needs it
        encoded: list[bytes] = []
        for a in range(0, len(rows), _BLOCK):
            block = np.stack(rows[a:a + _BLOCK])
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                bad = a + int(np.flatnonzero(~finite)[0])
                raise InvalidVectorError(f"item {bad}: vector holds NaN or infinite values")
            encoded += codec.encode_records(block, self._codec, expiries[a:a + _BLOCK],
                                            blobs[a:a + _BLOCK])
            if keep:
                blocks.append(block)
        digest = self._keys.digest
        keys = [digest(c) for c in contents]
        records = list(zip(keys, encoded))
        if any(item_tags):  # the index first: a crash leaves a stale tag, never an untagged
            self._index_tags([(k, t) for k, t in zip(keys, item_tags) if t])  # entry
        if self._warm is not None:
            self._warm_write(records, forced=True)
        if self._shared is not None:
            self._shared_write([(k, rec, exp) for (k, rec), exp in zip(records, expiries)])
        demote: list[tuple[bytes, bytes]] = []
        if keep:
            vectors = itertools.chain.from_iterable(blocks)
            with self._lock:
                for content, k, v, exp, blob in zip(contents, keys, vectors, expiries, blobs):
                    if hot.capacity or hot.slot_of_key(k) is not None:
                        demote += self._admit_hot_locked(content, k, v, exp or NEVER, blob,
                                                         in_warm=self._warm is not None)
        if demote:
            self._warm_write(demote, forced=False)
        return [k.hex() for k in keys]  # key_to_str

    # -- invalidation by tag / document id ------------------------------------------------
    def _index_tags(self, pairs: list[tuple[bytes, list[str]]]) -> None:
        """Record ``tag -> key`` for each pair (warm: a companion LMDB database; without a
        warm tier: in memory)."""
        if self._warm is None:
            with self._lock:
                for k, tags in pairs:
                    for t in tags:
                        self._mem_tags.setdefault(t, set()).add(k)
            return

        def run(txn: Any, db: Any) -> None:
            for k, tags in pairs:
                for t in tags:
                    txn.put(t.encode("utf-8") + b"\0" + k, b"", db=db)

        try:
            self._warm.in_named_db(_TAG_DB, run, write=True)
        except Exception as exc:
            self._raise_warm_fault(exc, "the tag index could not be written, nothing stored")

    def _tagged(self, tags: list[str], *, remove: bool) -> builtins.set[bytes]:
        """Keys registered under any of ``tags`` (and, with ``remove``, forget them)."""
        found: set[bytes] = set()
        if self._warm is None:
            with self._lock:
                for t in tags:
                    keys = self._mem_tags.pop(t, set()) if remove else \
                        self._mem_tags.get(t, set())
                    found |= keys
            return found

        def run(txn: Any, db: Any) -> set[bytes]:
            out: set[bytes] = set()
            for t in tags:
                prefix = t.encode("utf-8") + b"\0"
                cur = txn.cursor(db=db)
                stale: list[bytes] = []
                if cur.set_range(prefix):
                    for key in cur.iternext(keys=True, values=False):
                        key = bytes(key)
                        if not key.startswith(prefix):
                            break
                        out.add(key[len(prefix):])
                        stale.append(key)
                if remove:
                    for key in stale:
                        txn.delete(key, db=db)
            return out

        result: set[bytes] = self._warm.in_named_db(_TAG_DB, run, write=remove)
        return result

    def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Drop every entry stored with any of ``tags`` (``set(..., tags=[...])``) from every
        tier; returns how many keys were removed from at least one tier. Counted as
        ``evictions["invalidated"]`` per tier.

        Local tiers of *this* process/host and the shared tier are cleared; other hosts'
        hot and warm copies are not (run it on every host, or combine with a TTL). Raises
        :class:`StoreError` when the shared tier cannot be told (after the local tiers).
        """
        self._check_open()
        wanted = _check_tags(tags)
        if not wanted:
            return 0
        keys = sorted(self._tagged(wanted, remove=True))
        return self._drop_keys(keys, "invalidated", "invalidate_tags") if keys else 0

    def drop_ids(self, ids: Iterable[Any]) -> int:
        """Drop every entry stored with one of these document ids (``set(..., doc_id=...)``,
        ``tiercache warm`` JSONL ``id``); same rules as :meth:`invalidate_tags`."""
        return self.invalidate_tags([_id_tag(i) for i in ids])

    def tagged(self, tag: str) -> list[str]:
        """Public keys registered under ``tag`` (entries since evicted included)."""
        self._check_open()
        return sorted(key_to_str(k) for k in self._tagged(_check_tags([tag]), remove=False))

    def _drop_keys(self, keys: list[bytes], reason: str, what: str) -> int:
        """Remove ``keys`` from every tier, counting ``evictions[reason]`` per tier; returns
        how many were removed from at least one. A delete that did not happen is never
        silent: warm or shared failures raise :class:`StoreError` (after the hot tier)."""
        removed: set[bytes] = set()
        with self._lock:
            for k in keys:
                if self._hot.delete_key(k):
                    self._engine.remove_hot(k)
                    self._s_hot.evictions[reason] += 1
                    removed.add(k)
        if self._warm is not None:
            try:
                flags = self._warm.delete_each(keys)
            except Exception as exc:
                self._raise_warm_fault(exc, f"{what}: the warm store could not be updated")
            gone = [k for k, g in zip(keys, flags) if g]
            with self._lock:
                self._s_warm.evictions[reason] += len(gone)
            removed.update(gone)
        if self._shared is not None:
            flags = self._shared_call(what, lambda r: r.delete_each(keys))
            gone = [k for k, g in zip(keys, flags) if g]
            with self._lock:
                self._s_shared.evictions[reason] += len(gone)
            removed.update(gone)
        return len(removed)

    def precompute(self, contents: Sequence[Content], metadata: Sequence[Any] | None = None,
                   *, ttl: float | None = None,
                   doc_ids: Sequence[Any] | None = None) -> dict[str, int]:
        """Make sure every content is stored: encode what no tier holds and write it with an
        explicit write (like ``mset``: committed to warm, durable with ``durability:
        durable``, bypassing the warm frequency gate). A shared-tier hit is copied to warm
        instead of being encoded. ``metadata`` (one per content, or None) is stored with
        the entries written here; ``doc_ids`` (one per content, None for none) register
        every content, stored before or not, for :meth:`drop_ids`. Returns counts:
        ``{"present", "shared", "encoded"}``.
        The building block of ``tiercache warm`` (bulk catalog precompute)."""
        self._check_open()
        contents = list(contents)
        if metadata is not None and len(metadata) != len(contents):
            raise InvalidContentError("metadata must have one entry per content")
        if doc_ids is not None and len(doc_ids) != len(contents):
            raise InvalidContentError("doc_ids must have one entry per content")
        id_tags = [None if d is None else _id_tag(d) for d in doc_ids] if doc_ids else None
        for c in contents:
            _check_content(c)
        found = self.mget(contents)
        todo: dict[Content, int] = {}
        for i, (c, e) in enumerate(zip(contents, found)):
            if e is None and c not in todo:
                todo[c] = i
        shared = sum(1 for e in found if e is not None and e.tier == "shared")
        if todo:
            for c in todo:
                _check_content(c, self._accepts)
            keys = [self._keys.digest(c) for c in todo]
            vectors = self._compute(keys, list(todo), store=False)
            self.mset([{"content": c, "vector": vectors[k],
                        "metadata": metadata[i] if metadata is not None else None,
                        "tags": [id_tags[i]] if id_tags and id_tags[i] else None}
                       for (c, i), k in zip(todo.items(), keys)], ttl=ttl)
        if id_tags:  # contents stored before (or twice in this batch) join their ids too
            pairs = [(self._keys.digest(c), [t]) for j, (c, t) in enumerate(zip(contents, id_tags))
                     if t and todo.get(c) != j]
            if pairs:
                self._index_tags(pairs)
        present = sum(1 for e in found if e is not None and e.tier != "shared")
        return {"present": present, "shared": shared, "encoded": len(todo)}

    # -- explicit reads ------------------------------------------------------------------
    def get(self, content: Content, *, model: str | None = None) -> Entry | None:
        """The stored entry of ``content`` (hot, then warm), or None. Never encodes."""
        return self.mget([content], model=model)[0]

    def mget(self, contents: Sequence[Content], *, model: str | None = None
             ) -> list[Entry | None]:
        """Entries in input order, None where nothing is stored. Never encodes."""
        self._check_open()
        self._check_model(model)
        contents = list(contents)
        for c in contents:
            _check_content(c)
        found: list[Entry | None] = [None] * len(contents)
        out = np.empty((len(contents), self.dim), dtype=np.float32)
        if contents:
            self._lookup_into(contents, out, found)
        return found

    def exists(self, content: Content, *, model: str | None = None) -> bool:
        """Whether an unexpired entry is stored (no access is recorded, nothing moves)."""
        return self.mexists([content], model=model)[0]

    def mexists(self, contents: Sequence[Content], *, model: str | None = None) -> list[bool]:
        self._check_open()
        self._check_model(model)
        contents = list(contents)
        for c in contents:
            _check_content(c)
        now = self._clock()
        result = [False] * len(contents)
        rest: list[int] = []
        with self._lock:
            for i, c in enumerate(contents):
                slot = self._hot.slot(c)
                if slot is not None and self._hot.expires[slot] > now:
                    result[i] = True
                else:
                    rest.append(i)
        if rest and self._warm is not None:
            keys = [self._keys.digest(contents[i]) for i in rest]
            try:
                expiries = self._warm.get_many_with(keys, codec.peek_expiry)
            except Exception:  # an unreadable store holds nothing (counted), as in lookups
                with self._lock:
                    self._s_warm.errors += 1
                expiries = [None] * len(keys)
            for i, exp in zip(rest, expiries):
                result[i] = exp is not None and (exp == 0.0 or exp > now)
            rest = [i for i in rest if not result[i]]
        if rest and self._shared is not None:
            keys = [self._keys.digest(contents[i]) for i in rest]
            try:
                bufs = self._shared.get_many(keys)
            except Exception:  # fail-open: an unreachable Redis holds nothing
                with self._lock:
                    self._s_shared.errors += 1
                return result
            for i, buf in zip(rest, bufs):
                exp = codec.peek_expiry(buf) if buf is not None else None
                result[i] = exp is not None and (exp == 0.0 or exp > now)
        return result

    def drop(self, content: Content, *, model: str | None = None) -> bool:
        """Remove ``content`` from every tier; True if anything was removed.

        Raises :class:`StoreError` if the shared tier cannot be reached (after removing the
        local copies): other hosts could otherwise serve the dropped entry again."""
        return self.mdrop([content], model=model) > 0

    def mdrop(self, contents: Sequence[Content], *, model: str | None = None) -> int:
        """Remove many; returns how many keys were removed from at least one tier."""
        self._check_open()
        self._check_model(model)
        contents = list(contents)
        for c in contents:
            _check_content(c)
        keys = list(dict.fromkeys(self._keys.digest(c) for c in contents))
        return self._drop_keys(keys, "dropped", "drop")

    def get_by_key(self, key: str) -> Entry | None:
        """The entry stored under a public key: warm, then shared (hot is indexed by
        content and consulted only when there is no warm tier). Nothing moves."""
        self._check_open()
        raw = key_from_str(key)
        now = self._clock()
        if self._warm is None:
            with self._lock:
                slot = self._hot.slot_of_key(raw)
                if slot is not None and self._hot.expires[slot] > now:
                    meta = self._hot.meta_at(slot)
                    return Entry(key, self._hot.slab[slot].copy(),
                                 codec.unpack_blob(meta).get("m") if meta else None, "hot")
        else:
            try:
                rec = self._warm.get_with(raw, lambda b: codec.decode_record(b, self.dim))
            except Exception:  # an unreadable store holds nothing (counted)
                with self._lock:
                    self._s_warm.errors += 1
                rec = None
            if rec is not None and not (rec.expires_at and rec.expires_at <= now):
                return Entry(key, rec.vector, rec.metadata(), "warm")
        if self._shared is not None:
            try:
                buf = self._shared.get(raw)
            except Exception:
                with self._lock:
                    self._s_shared.errors += 1
                return None
            srec = codec.decode_record(buf, self.dim) if buf is not None else None
            if srec is not None and not (srec.expires_at and srec.expires_at <= now):
                return Entry(key, srec.vector, srec.metadata(), "shared")
        return None

    def clear(self) -> None:
        """Remove every entry from hot, every record of the warm store directory and
        every shared key under ``shared.key_prefix``.

        The warm store is cleared whole, every namespace in it included (records are
        keyed by digest alone); give caches that must be cleared apart their own
        ``warm.path`` and ``shared.key_prefix``. Raises :class:`StoreError` if the shared
        tier cannot be reached (after clearing the local tiers).
        """
        self._check_open()
        with self._lock:
            for k in list(self._hot.keys()):
                self._remove_hot_locked(k, "dropped")
        with self._lock:
            self._mem_tags.clear()
        if self._warm is not None:
            try:
                self._warm.clear()
            except Exception as exc:
                self._raise_warm_fault(exc, "clear: the warm store could not be cleared")
            try:
                self._warm.in_named_db(_TAG_DB, lambda txn, db: txn.drop(db, delete=False),
                                       write=True)
            except Exception as exc:
                self._raise_warm_fault(exc, "clear: the tag index could not be cleared")
        if self._shared is not None:
            n = self._shared_call("clear", lambda r: r.clear())
            with self._lock:
                self._s_shared.evictions["dropped"] += n

    # -- observability --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters per tier (hits, misses, promotions, demotions, evictions and rejections
        by reason, corrupt records), entries and bytes per tier, encoder calls and batch
        sizes, and latency percentiles (microseconds) per tier."""
        with self._lock:
            self._fold_fast_hits()
            hot = self._s_hot.to_dict()
            hot.update(entries=len(self._hot), bytes=self._hot.bytes_used(),
                       capacity=self._hot.capacity)
            warm = self._s_warm.to_dict()
            shared = self._s_shared.to_dict()
            enc = self._s_enc.to_dict()
            lookups = self._lookups
        tiers: dict[str, Any] = {"hot": hot}
        if self._warm is not None and not self._closed:
            try:
                st = self._warm.stat()
            except Exception as exc:  # a damaged store: reported here, never raised
                with self._lock:
                    self._s_warm.errors += 1
                warm.update(errors=warm["errors"] + 1, last_error=repr(exc),
                            capacity=self._engine.warm_capacity, path=self._warm.path)
            else:
                warm.update(entries=st["entries"], bytes=st["bytes_used"],
                            file_bytes=st["file_bytes"], capacity=self._engine.warm_capacity,
                            path=self._warm.path)
            tiers["warm"] = warm
        if self._shared is not None:
            shared.update(self._shared.describe())
            tiers["shared"] = shared
        return {
            "lookups": lookups,
            "tiers": tiers,
            "encoder": enc,
            "policy": self.config.policy.name,
            "fingerprint": self.fingerprint.to_dict(),
        }

    def format_stats(self) -> str:
        """``stats()`` as the fixed-width table the CLI prints."""
        return format_stats(self.stats())

    def __repr__(self) -> str:
        return (f"TierCache(model={self.fingerprint.model!r}, dim={self.dim}, "
                f"hot={len(self._hot)}/{self._hot.capacity}, "
                f"warm={'off' if self._warm is None else self._warm.path}, "
                f"shared={'off' if self._shared is None else self._shared.prefix + '*'})")


__all__ = ["Entry", "TierCache", "warm_capacity"]
