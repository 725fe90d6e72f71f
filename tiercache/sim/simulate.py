"""Replay a trace through the live policy engine's hot tier and count the outcomes.

For every key the simulator makes exactly the calls ``TierCache.embed`` makes on the
engine: a resident key is a hit (``record_hot_hit``); any other key is a miss
(``record_miss``) followed by ``offer_hot`` once the vector is known. No vectors, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..keys import key_hash64_many
from ..policy import PolicyEngine, default_hasher

try:
    from .. import _core
except ImportError:  # built without a C compiler: the Python loop below
    _core = None  # type: ignore[assignment]


@dataclass
class SimResult:
    """Outcome of one simulated run (counts are requests, not bytes)."""

    policy: str
    capacity: int
    requests: int
    hits: int
    misses: int
    admitted: int
    rejected: int
    evicted: int

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_ratio": self.hit_ratio}


def _hash_many(keys: Sequence[Any]) -> np.ndarray:
    """``default_hasher`` of many keys; vectorised for the cache's 16-byte digests."""
    if keys and all(type(k) is bytes and len(k) == 16 for k in keys):
        return key_hash64_many(keys)
    return np.fromiter((default_hasher(k) for k in keys), dtype=np.uint64, count=len(keys))


def simulate(
    trace: Iterable[Hashable],
    *,
    capacity: int,
    policy: str = "wtinylfu",
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    warm_capacity: int = 0,
    access_buffer: int = 1024,
    hasher: Callable[[Any], int] = default_hasher,
    misses_out: np.ndarray | None = None,
) -> SimResult:
    """Hot-tier hits of ``trace`` under ``policy`` with ``capacity`` entries.

    ``seed``, ``warm_capacity`` (it sizes the frequency sketch) and ``access_buffer``
    must match the live cache's for identical decisions; ``hasher`` must match the keys
    (the default handles ints and 16-byte digests the way the cache does).

    ``misses_out``: an optional ``bool`` array of ``len(trace)`` elements; element ``i``
    is set to True when request ``i`` misses the hot tier (False on a hit). The requests
    a lower tier (warm, shared) would see are ``trace[misses_out]``.
    """
    engine = PolicyEngine(
        hot_capacity=capacity,
        warm_capacity=warm_capacity,
        policy=policy,
        params=params,
        seed=seed,
        hasher=hasher,
        hasher_many=_hash_many,
        access_buffer=access_buffer,
    )
    hot = engine.hot
    if isinstance(trace, np.ndarray) and trace.dtype.kind in "iu" and trace.ndim == 1:
        arr: np.ndarray | None = np.ascontiguousarray(
            trace, dtype=np.uint64 if trace.dtype.kind == "u" else np.int64
        )
        n = trace.shape[0]
    else:
        arr = None
        if not isinstance(trace, (list, tuple)):
            trace = trace.tolist() if isinstance(trace, np.ndarray) else list(trace)
        n = len(trace)
    if misses_out is not None:
        if misses_out.dtype != np.bool_ or misses_out.shape != (n,):
            raise ValueError(f"misses_out must be a bool array of shape ({n},)")
        misses_out[:] = False
    if _core is not None and isinstance(hot, _core.WTinyLFUCore):
        # the compiled policy's own loop: the same calls, in the same order, in C
        requests, hits, admitted, rejected, evicted = _core.replay(
            hot,
            arr if arr is not None else trace,
            None if misses_out is None else misses_out.view(np.uint8),
        )
        return SimResult(
            engine.policy_name,
            capacity,
            requests,
            hits,
            requests - hits,
            admitted,
            rejected,
            evicted,
        )
    record_hit, record_miss, offer = engine.record_hot_hit, engine.record_miss, engine.offer_hot
    keys = arr.tolist() if arr is not None else trace
    requests = hits = admitted = rejected = evicted = 0
    for key in keys:
        requests += 1
        if key in hot:  # membership needs no drain: hits never change it
            record_hit(key)
            hits += 1
            continue
        if misses_out is not None:
            misses_out[requests - 1] = True
        record_miss(key)
        adm = offer(key)
        evicted += len(adm.evicted)
        if adm.admitted:
            admitted += 1
        else:
            rejected += 1
    engine.drain()
    return SimResult(
        engine.policy_name, capacity, requests, hits, requests - hits, admitted, rejected, evicted
    )


NEVER_AGAIN = 2**63 - 1
"""Next-use position of a key that is not requested again (libCacheSim's INT64_MAX)."""


def next_uses(keys: Sequence[Hashable]) -> list[int]:
    """For each position, the position of the same key's next request (or NEVER_AGAIN)."""
    out = [NEVER_AGAIN] * len(keys)
    last: dict[Hashable, int] = {}
    for i in range(len(keys) - 1, -1, -1):
        k = keys[i]
        out[i] = last.get(k, NEVER_AGAIN)
        last[k] = i
    return out


def belady(trace: Iterable[Hashable], *, capacity: int) -> SimResult:
    """Offline optimal (Belady's MIN) hits: the bound no online policy can beat.

    Every requested key is cached (as libCacheSim's ``Belady`` does); when full, the
    resident key whose next request is furthest away is evicted first. Ties (keys never
    requested again) do not change the hit count. Equal to libCacheSim's Belady on the
    same trace (tested).
    """
    import heapq

    keys = trace.tolist() if isinstance(trace, np.ndarray) else list(trace)
    nxt = next_uses(keys)
    resident: dict[Hashable, int] = {}  # key -> position of its next request
    heap: list[tuple[int, int, Hashable]] = []  # (-next use, tiebreak, key), lazily pruned
    hits = evicted = 0
    for i, key in enumerate(keys):
        if key in resident:
            hits += 1
        elif capacity <= 0:
            continue
        elif len(resident) >= capacity:
            while True:
                neg, _, victim = heapq.heappop(heap)
                if resident.get(victim) == -neg:
                    del resident[victim]
                    evicted += 1
                    break
        resident[key] = nxt[i]
        heapq.heappush(heap, (-nxt[i], i, key))
    n = len(keys)
    return SimResult(
        "belady", capacity, n, hits, n - hits, n - hits if capacity > 0 else 0, 0, evicted
    )


def simulate_grid(
    trace: Sequence[Hashable] | np.ndarray,
    *,
    capacities: Sequence[int],
    policies: Sequence[str],
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[SimResult]:
    """:func:`simulate` for every (policy, capacity) pair, in that order."""
    out = []
    for name in policies:
        for cap in capacities:
            if progress:
                progress(f"{name} @ {cap}")
            if name == "belady":
                out.append(belady(trace, capacity=cap))
            else:
                out.append(simulate(trace, capacity=cap, policy=name, seed=seed))
    return out
