"""A small cache of search results (top-k lists) beside the embedding cache.

Search services re-run the same query with the same filters all day. ``ResultCache`` keeps
each result under a key derived from *(query, filters, k, index version)*, for a short TTL,
bounded by entry count (least recently used goes first), and invalidated by tag: tag a
result with the documents or collections it came from, and ``invalidate_tags`` drops every
result that mentions a changed document.

Values are stored msgpack-packed (so only plain data is accepted: lists, dicts, str, bytes,
numbers, bools, None; never pickle) and every ``get`` returns a fresh copy, so callers can
never mutate a cached result. Keys are 128-bit blake2b digests of a canonical msgpack
encoding (filter dicts are sorted), so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` are
the same filter, and ``1`` and ``"1"`` are not. Thread-safe. Each process holds its own
(results are cheap to recompute and short-lived by design); ``TierCache.attach(results)``
makes every invalidation of the embedding cache, from any process on its warm store or
any host of its fleet, reach it too (by tag and document id).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import msgpack

from .errors import InvalidInputError, InvalidMetadataError, InvalidTTLError
from .tags import check_tags, id_tag

MAX_RESULT_BYTES = 16 * 2**20


def _check_query(query: Any) -> Any:
    """A query as keyed: str/bytes as they are, a vector of numbers as a list of floats."""
    if isinstance(query, (str, bytes)):
        return query
    if isinstance(query, (list, tuple)) or getattr(query, "ndim", None) == 1:
        items = list(query)
        if items and all(isinstance(x, Real) and not isinstance(x, bool) for x in items):
            return [float(x) for x in items]
    raise InvalidInputError(
        f"query must be str, bytes or a non-empty vector of numbers, not {type(query).__name__}"
    )


def _canonical(value: Any) -> Any:
    """Filters in a canonical, type-preserving form (dict keys sorted, tuples as lists)."""
    if isinstance(value, Mapping):
        items = [(_canonical(k), _canonical(v)) for k, v in value.items()]
        try:
            items.sort(key=lambda kv: msgpack.packb(kv[0], use_bin_type=True))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"filters hold an unsupported key: {exc}") from exc
        return {"__map__": items}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        members = [_canonical(v) for v in value]
        members.sort(key=lambda v: msgpack.packb(v, use_bin_type=True))
        return {"__set__": members}
    return value


@dataclass
class _Entry:
    packed: bytes
    expires_at: float
    tags: frozenset[str]


class ResultCache:
    """Bounded, TTL'd, tag-invalidated cache of query results.

    ``max_entries`` bounds memory (LRU eviction); ``ttl`` (seconds, > 0) is the default
    lifetime; ``version`` is mixed into every key (bump it when the index is rebuilt and
    every old result becomes invalid at once). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl: float = 60.0,
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise InvalidInputError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self._ttl = self._check_ttl(ttl)
        self.max_entries = max_entries
        self.version = version
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[bytes, _Entry] = OrderedDict()
        self._by_tag: dict[str, set[bytes]] = {}
        self.hits = self.misses = self.evictions = self.expirations = self.invalidations = 0

    @staticmethod
    def _check_ttl(ttl: Any) -> float:
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not math.isfinite(ttl)
            or ttl <= 0
        ):
            raise InvalidTTLError(f"ttl must be a number of seconds > 0, got {ttl!r}")
        return float(ttl)

    def key(self, query: Any, filters: Any = None, k: int | None = None) -> bytes:
        """The 16-byte key of a (query, filters, k) under this cache's version.

        ``query`` is a search query: ``str`` or ``bytes``, or a query vector (a list,
        tuple or 1-d array of numbers); ``k`` is None or an int >= 1. Anything else (None,
        a number, ``k="10"``) is :class:`InvalidInputError`: it cannot be a query, and a
        string ``k`` would silently miss every result stored with the int."""
        query = _check_query(query)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InvalidInputError(f"k must be None or an int >= 1, not {k!r}")
        try:
            body = msgpack.packb(
                [self.version, _canonical(query), _canonical(filters), k],
                use_bin_type=True,
                strict_types=False,
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(f"query/filters must be plain data: {exc}") from exc
        return hashlib.blake2b(body, digest_size=16, person=b"tiercache-res").digest()

    def set(
        self,
        query: Any,
        result: Any,
        *,
        filters: Any = None,
        k: int | None = None,
        tags: Iterable[str] = (),
        doc_ids: Iterable[Any] = (),
        ttl: float | None = None,
    ) -> bytes:
        """Store ``result`` (plain data) for (query, filters, k); returns its key.

        ``tags`` and ``doc_ids`` (the documents the result lists): ``invalidate_tags``
        of a tag, ``drop_ids`` of an id, or a ``TierCache.document_event`` for it from
        any process or host (once attached: ``TierCache.attach``) drops the result."""
        life = self._ttl if ttl is None else self._check_ttl(ttl)
        if isinstance(doc_ids, (str, bytes)) or not isinstance(doc_ids, Iterable):
            raise InvalidMetadataError(f"doc_ids must be a list of document ids, not {doc_ids!r}")
        # a list of tags, never one str split up; document ids as their reserved tags
        tagset = frozenset(check_tags(tags) + [id_tag(d) for d in doc_ids])
        try:
            packed = msgpack.packb(result, use_bin_type=True, strict_types=False)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidMetadataError(f"result cannot be stored (plain data only): {exc}") from exc
        if len(packed) > MAX_RESULT_BYTES:
            raise InvalidMetadataError(
                f"result is {len(packed)} bytes packed; the limit is {MAX_RESULT_BYTES}"
            )
        key = self.key(query, filters, k)
        with self._lock:
            self._remove_locked(key)
            self._data[key] = _Entry(packed, self._clock() + life, tagset)
            for t in tagset:
                self._by_tag.setdefault(t, set()).add(key)
            while len(self._data) > self.max_entries:
                old, _ = next(iter(self._data.items()))
                self._remove_locked(old)
                self.evictions += 1
        return key

    def get(
        self, query: Any, *, filters: Any = None, k: int | None = None, default: Any = None
    ) -> Any:
        """A fresh copy of the stored result, or ``default``."""
        key = self.key(query, filters, k)
        with self._lock:
            e = self._data.get(key)
            if e is None:
                self.misses += 1
                return default
            if e.expires_at <= self._clock():
                self._remove_locked(key)
                self.expirations += 1
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            packed = e.packed
        return msgpack.unpackb(packed, raw=False, strict_map_key=False)

    def get_or_compute(
        self,
        query: Any,
        compute: Callable[[], Any],
        *,
        filters: Any = None,
        k: int | None = None,
        tags: Iterable[str] = (),
        ttl: float | None = None,
    ) -> Any:
        """The cached result, or ``compute()`` stored and returned (as a copy)."""
        check_tags(tags)  # before compute(): bad input changes nothing and computes nothing
        if ttl is not None:
            self._check_ttl(ttl)
        missing = object()
        hit = self.get(query, filters=filters, k=k, default=missing)
        if hit is not missing:
            return hit
        result = compute()
        self.set(query, result, filters=filters, k=k, tags=tags, ttl=ttl)
        return self.get(query, filters=filters, k=k, default=result)

    def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Drop every result carrying any of ``tags``; returns how many were dropped."""
        n = 0
        wanted = check_tags(tags, required=True)
        with self._lock:
            for t in wanted:
                for key in list(self._by_tag.get(t, ())):
                    if self._remove_locked(key):
                        n += 1
            self.invalidations += n
        return n

    def drop_ids(self, ids: Iterable[Any]) -> int:
        """Drop every result listing one of these document ids (``set(doc_ids=...)``)."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise InvalidMetadataError(f"ids must be a list of document ids, not {ids!r}")
        return self.invalidate_tags([id_tag(i) for i in ids])

    def drop(self, query: Any, *, filters: Any = None, k: int | None = None) -> bool:
        key = self.key(query, filters, k)
        with self._lock:
            return self._remove_locked(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._by_tag.clear()

    def _remove_locked(self, key: bytes) -> bool:
        e = self._data.pop(key, None)
        if e is None:
            return False
        for t in e.tags:
            keys = self._by_tag.get(t)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[t]
        return True

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "entries": len(self._data),
                "max_entries": self.max_entries,
                "hits": self.hits,
                "misses": self.misses,
                "hit_ratio": self.hits / lookups if lookups else 0.0,
                "evictions": self.evictions,
                "expirations": self.expirations,
                "invalidations": self.invalidations,
                "tags": len(self._by_tag),
                "bytes": sum(len(e.packed) for e in self._data.values()),
            }


__all__ = ["ResultCache"]
