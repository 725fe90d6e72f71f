"""The pure policy engine: residency policies for the hot tier and the warm-tier decisions.

Pure: no I/O, no wall clock, no threads, no logging. All randomness comes from
``random.Random`` instances derived from one seed, so a run is reproducible from
``(seed, trace)``. Nothing here is thread-safe: the owner (``TierCache`` or the simulator)
serialises calls to a :class:`PolicyEngine`.

Pieces:

* :class:`Policy` and its registered implementations (``lru``, ``lfu``, ``tinylfu``,
  ``s3fifo``, ``arc``, ``wtinylfu``): which keys are resident in one tier, capacity
  counted in entries. Each documents its tie-break (``tie_break``) and what happens to a
  key's history on eviction (``history``). The interface, the registry and the Python
  policies live in :mod:`tiercache.policies`, W-TinyLFU in :mod:`tiercache.wtinylfu`;
  this module re-exports them and registers the compiled versions (``tiercache._core``)
  under the same names when the extension is built.
* :class:`PolicyEngine`: the only object the cache talks to. Owns the
  :class:`~tiercache.sketch.FrequencySketch`, records accesses (hot hits through a small
  buffer applied in vectorised batches), and answers every decision with a value
  (:class:`Admission`, a bool, a list of victims).

See docs/policies.md for the full description.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from .errors import ConfigError
from .keys import key_hash64
from .policies import (
    _ADMITTED,
    _REJECTED,
    DEFAULT_POLICY,
    POLICIES,
    REASONS,
    Admission,
    ARCPolicy,
    Key,
    LFUPolicy,
    LRUPolicy,
    Policy,
    S3FIFOPolicy,
    TinyLFUPolicy,
    _jitter_threshold,
    _nonneg_int,
    get_policy,
    register,
)
from .sketch import FrequencySketch
from .wtinylfu import _MINI_PERIOD, WTinyLFUPolicy

__all__ = [
    "Key",
    "REASONS",
    "Admission",
    "Policy",
    "POLICIES",
    "register",
    "get_policy",
    "LRUPolicy",
    "LFUPolicy",
    "TinyLFUPolicy",
    "WTinyLFUPolicy",
    "S3FIFOPolicy",
    "ARCPolicy",
    "PolicyEngine",
    "default_hasher",
    "DEFAULT_POLICY",
]

_M64 = (1 << 64) - 1
_K = TypeVar("_K", bound=Hashable)

# ---------------------------------------------------------------------------------------
# Engine


def default_hasher(key: Key) -> int:
    """The 64-bit integer the sketch sees for a key.

    * ``bytes`` of 8 or more bytes (tiercache's 16-byte digests): the first 8 bytes, little
      endian (:func:`tiercache.keys.key_hash64`); digests are uniform, so this is uniform.
    * shorter ``bytes`` and ``str`` (UTF-8): an 8-byte blake2b digest (deterministic across
      processes, unlike ``hash()``).
    * ``int`` (simulator keys): the value modulo 2**64; the sketch mixes it before indexing.

    Any other type raises TypeError: pass ``hasher=`` to :class:`PolicyEngine`.
    """
    if isinstance(key, bytes):
        if len(key) >= 8:
            return key_hash64(key)
        return int.from_bytes(hashlib.blake2b(b"b" + key, digest_size=8).digest(), "little")
    if isinstance(key, int):
        return key & _M64
    if isinstance(key, str):
        data = b"s" + key.encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    raise TypeError(f"no default 64-bit hash for {type(key).__name__} keys; pass hasher=")


# ---------------------------------------------------------------------------------------
# Compiled core

try:
    from . import _core
except ImportError:  # built without a C compiler: the pure-Python policy, same decisions
    _core = None  # type: ignore[assignment]

COMPILED: bool = _core is not None
"""True when the default policy runs on the compiled core (``tiercache._core``)."""

if _core is not None:
    _core.bind(Admission, _ADMITTED, _REJECTED)

    class CompiledWTinyLFUPolicy(_core.WTinyLFUCore, WTinyLFUPolicy):
        """:class:`WTinyLFUPolicy` with its segments and per-access operations in C.

        Same decisions as the pure-Python class (its specification; tests replay random
        traces through both); configuration and the hill climber's step (``_climb``,
        once per sample period) stay in Python. Registered as ``"wtinylfu"`` when the
        extension is built.
        """

        def _init_segments(self, window: int) -> None:
            self._core_setup(
                self.capacity,
                window,
                self.protected_fraction,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                self.jitter_threshold,
                self._climbing,
                self._period,
            )
            if self.reuse_capacity:
                self._reuse_setup(self.reuse_capacity)
            if self._mini:
                self._mini_setup(
                    self._mini_threshold, _MINI_PERIOD, self._mini_specs(), self._mini_salt
                )

    # hashers whose common cases the core computes inline (bytes of 8+ bytes: the first 8,
    # little endian; ints, default_hasher only: the value mod 2**64); others are called
    _FAST_HASH: dict[Callable[[Any], int], int] = {default_hasher: 1, key_hash64: 2}

    CompiledWTinyLFUPolicy.name = "wtinylfu"
    POLICIES["wtinylfu"] = CompiledWTinyLFUPolicy

    class CompiledTinyLFUPolicy(_core.WTinyLFUCore, TinyLFUPolicy):
        """:class:`TinyLFUPolicy` on the compiled core (its mode 1: no window, no
        protected segment, TinyLFU admission against the LRU entry): same decisions as
        the Python class, its specification. Registered as ``"tinylfu"``."""

        def _configure(self, params: Mapping[str, Any]) -> None:
            self.jitter_threshold = _jitter_threshold(params["jitter_threshold"])
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                self.jitter_threshold,
                False,
                1,
                1,
            )

    class CompiledLRUPolicy(_core.WTinyLFUCore, LRUPolicy):
        """:class:`LRUPolicy` on the compiled core (its mode 2: one LRU list, every key
        admitted): same decisions as the Python class, its specification. Registered
        as ``"lru"``."""

        def _configure(self, params: Mapping[str, Any]) -> None:
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                16,
                False,
                1,
                2,
            )

    class CompiledLFUPolicy(_core.WTinyLFUCore, LFUPolicy):
        """:class:`LFUPolicy` on the compiled core (its mode 3: one key list sorted by
        count, then by when the key reached it; count buckets that know their last key):
        same decisions as the Python class, its specification. Registered as ``"lfu"``."""

        def _configure(self, params: Mapping[str, Any]) -> None:
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                16,
                False,
                1,
                3,
            )

        def count(self, key: Key) -> int:
            """The resident key's hit count (0 if not resident)."""
            return int(self._lfu_count(key))

    class CompiledS3FIFOPolicy(_core.WTinyLFUCore, S3FIFOPolicy):
        """:class:`S3FIFOPolicy` on the compiled core (its mode 4: the small and main
        queues as node lists, each node's counter in the node, the ghost FIFO as a node
        pool with a dict): same decisions as the Python class, its specification.
        Registered as ``"s3fifo"``."""

        def _init_queues(self) -> None:
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                16,
                False,
                1,
                4,
            )
            self._s3fifo_setup(self.small_capacity, self.ghost_capacity, self.move_threshold)

    class CompiledARCPolicy(_core.WTinyLFUCore, ARCPolicy):
        """:class:`ARCPolicy` on the compiled core (its mode 5: T1 and T2 as node lists,
        B1 and B2 as two lists of a ghost node pool with a dict, ``p`` in the core):
        same decisions as the Python class, its specification. Registered as ``"arc"``."""

        def _init_lists(self) -> None:
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                16,
                False,
                1,
                5,
            )
            self._arc_setup()

    CompiledARCPolicy.name = "arc"
    POLICIES["arc"] = CompiledARCPolicy
    CompiledS3FIFOPolicy.name = "s3fifo"
    POLICIES["s3fifo"] = CompiledS3FIFOPolicy
    CompiledLFUPolicy.name = "lfu"
    POLICIES["lfu"] = CompiledLFUPolicy
    CompiledTinyLFUPolicy.name = "tinylfu"
    POLICIES["tinylfu"] = CompiledTinyLFUPolicy
    CompiledLRUPolicy.name = "lru"
    POLICIES["lru"] = CompiledLRUPolicy


_SKETCH_WIDTH = 4
_SKETCH_SAMPLE = 10


def _derive_seed(seed: int, stream: int) -> int:
    """An independent 64-bit seed for sub-stream ``stream`` (blake2b of both)."""
    data = (seed & _M64).to_bytes(8, "little") + stream.to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class PolicyEngine:
    """Every residency decision of one cache, from one seed and one frequency sketch.

    The cache (or the simulator) reports accesses and asks for decisions:

    * :meth:`record_hot_hit` for a lookup served by the hot tier (buffered, see below);
    * :meth:`record_miss` / :meth:`record_misses` for lookups that missed the hot tier;
    * :meth:`offer_hot` to place a key in the hot tier (returns an :class:`Admission`
      whose ``evicted`` keys the cache removes from hot, reason ``"capacity"``);
    * :meth:`remove_hot` when a hot entry is dropped, expired or found corrupt;
    * :meth:`warm_gate` before writing a recomputed vector to the warm tier;
    * :meth:`warm_probes` / :meth:`warm_victims` for sampled, frequency-aware warm eviction.

    Access buffer: hot hits are appended to a list and applied (``sketch.increment_many``
    then ``hot.on_hit`` for each key still resident, in order) when the list reaches
    ``access_buffer`` entries or before any decision or sketch read. Since no decision
    happens between a hit and its application, the outcome is identical to unbuffered
    processing (``access_buffer=1``).

    Randomness: three independent streams derived from ``seed`` (blake2b): the sketch's
    index seed, the hot policy's rng (TinyLFU jitter) and the warm probe rng. Calling
    :meth:`warm_probes` therefore never changes hot decisions.

    Sketch size: ``sketch_capacity`` defaults to
    ``max(hot_capacity + min(warm_capacity, 10 * hot_capacity), 1024)``: enough counters to
    tell apart the hot set and the warm keys most likely to compete for it, with bounded
    memory (4 bytes per counter column) when the warm tier is huge.

    Not thread-safe: the caller serialises all calls (including :meth:`record_hot_hit`).
    """

    def __init__(
        self,
        *,
        hot_capacity: int,
        warm_capacity: int,
        policy: str = DEFAULT_POLICY,
        params: Mapping[str, Any] | None = None,
        warm_min_frequency: int = 0,
        eviction_samples: int = 8,
        max_evictions_per_write: int = 64,
        seed: int | None = None,
        hasher: Callable[[Any], int] = default_hasher,
        sketch_capacity: int | None = None,
        access_buffer: int = 1024,
        hasher_many: Callable[[Sequence[Any]], np.ndarray] | None = None,
    ) -> None:
        self.hot_capacity = _nonneg_int("hot_capacity", hot_capacity)
        self.warm_capacity = _nonneg_int("warm_capacity", warm_capacity)
        self.warm_min_frequency = _nonneg_int("policy.warm_min_frequency", warm_min_frequency)
        self.eviction_samples = _nonneg_int("policy.eviction_samples", eviction_samples, 1)
        self.max_evictions_per_write = _nonneg_int(
            "policy.max_evictions_per_write", max_evictions_per_write, 1
        )
        self.access_buffer = _nonneg_int("policy.access_buffer", access_buffer, 1)
        base = max(self.hot_capacity, 1024)
        sample_size: int | None = None
        if sketch_capacity is None:
            sketch_capacity = _SKETCH_WIDTH * base + min(self.warm_capacity, 10 * self.hot_capacity)
            sample_size = _SKETCH_SAMPLE * base
        sketch_capacity = _nonneg_int("policy.sketch_capacity", sketch_capacity)
        if seed is None:
            seed = random.SystemRandom().getrandbits(64)
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError("policy.seed", seed, "must be an integer or None")
        self.seed: int = seed
        self.hasher = hasher
        # optional vectorised twin of ``hasher`` (must agree with it element-wise)
        self.hasher_many = hasher_many
        self.sketch = FrequencySketch(
            sketch_capacity, seed=_derive_seed(seed, 1), sample_size=sample_size
        )
        self._policy_rng = random.Random(_derive_seed(seed, 2))
        self._probe_rng = random.Random(_derive_seed(seed, 3))
        cls = get_policy(policy)
        self.policy_name = cls.name
        self.hot: Policy = cls(
            self.hot_capacity,
            sketch=self.sketch,
            hasher=hasher,
            rng=self._policy_rng,
            **dict(params or {}),
        )
        self._buffer: list[Key] = []
        # the compiled policy drains in C (sketch increments and on_hit, key by key; the
        # same counts as increment_many then on_hits, since on_hit never reads the sketch)
        self._compiled = _core is not None and isinstance(self.hot, _core.WTinyLFUCore)

    # -- accesses -------------------------------------------------------------------------

    def record_access(self, key: Key) -> None:
        """Record a lookup of ``key``, hit or miss. O(1); drains when the buffer is full.

        Hits and misses share the buffer: a missed key cannot become resident before the
        next decision, and every decision drains first, so the outcome equals an immediate
        update (``drain`` calls ``on_hit``, a no-op for keys that are not resident).
        """
        buf = self._buffer
        buf.append(key)
        if len(buf) >= self.access_buffer:
            self.drain()

    def record_accesses(self, keys: Sequence[Key]) -> None:
        """``record_access`` for each key, in order (one list extend)."""
        buf = self._buffer
        buf.extend(keys)
        if len(buf) >= self.access_buffer:
            self.drain()

    # the cache names what happened; the engine treats both alike
    record_hot_hit = record_access
    record_hot_hits = record_accesses
    record_miss = record_access
    record_misses = record_accesses

    def drain(self) -> None:
        """Apply buffered accesses in order: sketch counts, then ``hot.on_hit``.

        ``on_hit`` is a no-op for keys that are not resident (buffered misses).
        """
        if not self._buffer:
            return
        # the list object stays the engine's (the cache's C hot reader appends to it)
        buf = self._buffer.copy()
        self._buffer.clear()
        if self._compiled:
            _core.drain(self.hot, buf)  # type: ignore[arg-type]  # same effect, one C loop
            return
        hot = self.hot
        # A climbing policy's sample step (_climb) may age the sketch, so it must see
        # exactly the increments before its access: split the batch at sample boundaries
        # (as the sketch splits at halvings), never inside one.
        climbing = getattr(hot, "_climbing", False) and getattr(hot, "_full", False)
        pos, n = 0, len(buf)
        while pos < n:
            end = n
            if climbing:
                end = min(n, pos + max(1, hot._period - hot._sample_requests))  # type: ignore[attr-defined]
            part = buf if (pos, end) == (0, n) else buf[pos:end]
            if self.hasher_many is not None:
                hashes = self.hasher_many(part)
            else:
                hasher = self.hasher
                hashes = np.fromiter((hasher(k) for k in part), dtype=np.uint64, count=len(part))
            self.sketch.increment_many(hashes)
            hot.on_hits(part)
            pos = end

    @property
    def pending(self) -> int:
        """Hot hits recorded but not yet applied."""
        return len(self._buffer)

    # -- hot decisions --------------------------------------------------------------------

    def offer_hot(self, key: Key) -> Admission:
        """Offer ``key`` to the hot tier. A resident key gives ``Admission(True)``.

        Does not count an access: record the lookup with :meth:`record_miss` first.
        """
        self.drain()
        if key in self.hot:
            return _ADMITTED
        return self.hot.admit(key)

    def remove_hot(self, key: Key) -> bool:
        """Forget a hot entry (dropped, expired, corrupt). True if it was resident."""
        self.drain()
        return self.hot.remove(key)

    def hot_keys(self) -> list[Key]:
        """Keys resident in the hot tier (after applying buffered hits)."""
        self.drain()
        return list(self.hot.keys())

    def frequency(self, key: Key) -> int:
        """The sketch's estimate (0..15) for ``key``, after applying buffered hits."""
        self.drain()
        return self.sketch.frequency(self.hasher(key))

    # -- warm decisions -------------------------------------------------------------------

    def warm_gate(self, key: Key, *, forced: bool = False) -> bool:
        """May a recomputed vector for ``key`` be written to warm?

        True if ``forced`` (an explicit ``set``) or the key's estimated frequency is
        ``>= warm_min_frequency`` (inclusive; 0 admits everything). Record the lookup
        (:meth:`record_miss`) before asking, so the current access counts.
        """
        if forced or self.warm_min_frequency == 0:
            return True
        return self.frequency(key) >= self.warm_min_frequency

    def warm_probes(self, n: int) -> list[bytes]:
        """``n`` uniformly random 16-byte probe keys (the engine's probe rng).

        The cache maps each probe to the first stored key ``>=`` it (wrapping to the first
        key), a near-uniform sample of stored keys since keys are uniform digests.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = self._probe_rng
        return [rng.getrandbits(128).to_bytes(16, "little") for _ in range(n)]

    def warm_victims(
        self,
        sampled: Sequence[_K],
        excess: int,
        *,
        protect: Iterable[_K] = (),
        batch: int = 0,
    ) -> list[_K]:
        """Choose warm keys to evict from a sample.

        ``batch`` is the number of keys the write adds. Returns up to
        ``min(excess, batch + max_evictions_per_write)`` distinct keys of ``sampled``
        (a write evicts at most what it adds plus ``max_evictions_per_write`` keys of
        earlier overshoot: work proportional to the write, and the budget converges)
        (duplicates count once) with the lowest sketch frequency, lowest first; ties keep
        the order of first appearance in ``sampled``. Keys in ``protect`` are never chosen.
        ``excess <= 0`` returns ``[]``.
        """
        self.drain()
        k = min(excess, max(0, batch) + self.max_evictions_per_write)
        if k <= 0 or not sampled:
            return []
        protected = set(protect)
        seen: set[_K] = set()
        cands: list[_K] = []
        for key in sampled:
            if key in seen or key in protected:
                continue
            seen.add(key)
            cands.append(key)
        if not cands:
            return []
        hasher = self.hasher
        hashes = np.fromiter((hasher(c) for c in cands), dtype=np.uint64, count=len(cands))
        freqs = self.sketch.frequency_many(hashes)
        order = np.argsort(freqs, kind="stable")[:k]
        return [cands[int(i)] for i in order]
