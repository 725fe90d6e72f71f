"""TierCache: the facade. Wiring from config, and the public methods.

Lookup order: hot (in-process, by exact content) -> warm (LMDB, by digest) -> shared
(Redis, optional, by digest) -> cold (the encoder). Every read goes through the one read
path (:mod:`tiercache.readpath`), every write, placement and removal through the one write
path (:mod:`tiercache.writepath`); the policy engine (:mod:`tiercache.policy`) decides what
is admitted, promoted, demoted and evicted, and the write path executes and counts those
decisions. The methods here check their arguments and call those paths; nothing else.
See docs/architecture.md.

Thread-safe: one re-entrant lock guards the hot tier, the engine, single-flight state and
counters; LMDB reads and writes and the encoder run outside it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import codec
from .aio import AsyncAPI
from .config import TierCacheConfig, default_config, load_config
from .context import CacheContext, warm_capacity
from .encoders import Encoder, encoder_from_config
from .entry import Entry
from .errors import (
    ClosedError,
    EncoderError,
    InvalidContentError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidVectorError,
    UnknownModelError,
)
from .invalidation import Fleet
from .keys import Content, KeyMaker, key_hash64, key_hash64_many, key_to_str
from .policy import PolicyEngine
from .readpath import ReadPath
from .stats import format_stats
from .tags import check_tags, id_tag
from .tiers.lmdb import LmdbTier
from .tiers.memory import MemoryTier, hot_capacity
from .tiers.redis import RedisTier
from .writepath import WritePath, as_content, as_contents, check_encodable


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
        self.dim = dim = int(self.encoder.dim)
        record_len = codec.record_size(dim, cfg.warm.codec)
        hot_cap = hot_capacity(cfg.hot.max_bytes, dim) if cfg.hot.enabled else 0
        warm: LmdbTier | None = None
        if cfg.warm.enabled:
            warm = LmdbTier(
                cfg.warm.path,
                fingerprint=self.fingerprint,
                namespace=cfg.warm.namespace,
                durability=cfg.warm.durability,
                map_size=cfg.warm.map_size,
                max_bytes=cfg.warm.max_bytes,
                max_readers=cfg.warm.max_readers,
                on_fingerprint_mismatch=cfg.warm.on_fingerprint_mismatch,
                packed_record_len=record_len,
                on_damage=cfg.warm.on_damage,
            )
        sc = cfg.shared
        if shared is None and sc.active:
            auth_key, auth_key_previous = sc.auth_keys()
            shared = RedisTier(
                url=sc.url,
                nodes=sc.nodes,
                cluster=sc.cluster,
                key_prefix=sc.key_prefix,
                timeout=sc.timeout,
                connect_timeout=sc.connect_timeout,
                backoff_initial=sc.backoff_initial,
                backoff_max=sc.backoff_max,
                password=os.environ.get(sc.password_env) if sc.password_env else None,
                auth_key=auth_key,
                auth_key_previous=auth_key_previous,
            )
        engine = PolicyEngine(
            hot_capacity=hot_cap,
            warm_capacity=warm_capacity(cfg.warm.max_bytes, record_len) if warm else 0,
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
        self._ctx = ctx = CacheContext(
            encoder=self.encoder,
            fingerprint=self.fingerprint,
            dim=dim,
            accepts=tuple(self.encoder.accepts),
            keys=KeyMaker(self.fingerprint),
            clock=clock,
            codec=cfg.warm.codec,
            store_text=cfg.warm.store_text,
            default_ttl=cfg.ttl,
            batch_size=cfg.encoder.batch_size,
            hot=MemoryTier(dim, hot_cap),
            warm=warm,
            shared=shared,
            engine=engine,
            shared_ttl=sc.ttl,
            shared_min_frequency=sc.min_frequency,
        )
        # the objects the paths share, named as tests and tools have always reached them
        self._hot, self._warm, self._shared = ctx.hot, warm, shared
        self._engine, self._lock, self._keys, self._clock = engine, ctx.lock, ctx.keys, clock
        self._write = write = WritePath(ctx)
        # a subclass that overrides embed keeps it: no compiled reader bypasses it
        self._read = read = ReadPath(ctx, self._write, compiled=type(self).embed is TierCache.embed)
        # embed's hot hit (or, with hot off, warm hit) in one C call: an instance
        # attribute shadowing the method; anything the C reader does not serve calls the
        # read path's embed. close() removes it.
        if shared is not None and sc.invalidation == "stream":
            write.inval.fleet = Fleet(
                write.inval,
                shared,
                warm,
                # registrations kept: every process of this host resolves the same keys,
                # and whichever applies the entry first deletes them
                lambda tags: sorted(write.tags.keys(tags, remove=False)),
                write.clear_local,
                write.redrop,
                on_disconnect=sc.on_disconnect,
                max_staleness=sc.max_staleness,
                maxlen=sc.stream_maxlen,
            )
        fast = read.fast if read.fast is not None else read.fast_warm
        if fast is not None:
            self.__dict__["embed"] = fast
        if fast is not None and type(self).get is TierCache.get:
            # get's hit likewise (an Entry built in C; anything else: the method)
            self.__dict__["get"] = read.fast_getter(TierCache.get.__get__(self, type(self)))

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
            if self._ctx.closed:
                return
            self._ctx.closed = True
            self.__dict__.pop("embed", None)  # the C hot path; the method raises from now on
            self.__dict__.pop("get", None)
            self._read.close()
            self._read.fold_fast_hits_locked()
            self._engine.drain()
        self._shutdown_pool()
        self._write.close()
        # the fleet listener stops (it may have been waiting for the lock held above),
        # then the invalidation word is let go, then the store
        self._write.inval.close()
        if self._warm is not None:
            self._warm.close()
        if self._shared is not None:
            self._shared.close()

    # internals that tests and benchmarks inspect (read-only views of the paths' state)
    @property
    def _closed(self) -> bool:
        return self._ctx.closed

    @property
    def _fast(self) -> Any:
        return self._read.fast

    @_fast.setter
    def _fast(self, reader: Any) -> None:  # tests: a wrapper around the C reader
        self._read.fast = reader

    @property
    def _fast_warm(self) -> Any:
        return self._read.fast_warm

    @property
    def _warm_reader(self) -> Any:
        return self._read.warm_reader

    @_warm_reader.setter
    def _warm_reader(self, reader: Any) -> None:  # tests: None runs the Python rows
        self._read.warm_reader = reader

    def _record_warm_latency(self, seconds: float) -> None:
        self._ctx.record_warm_latency(seconds)

    def _hot_get_nowait(self, content: Content) -> np.ndarray | None:
        return self._read.hot_get_nowait(content)

    def _check_open(self) -> None:
        if self._ctx.closed:
            raise ClosedError("this TierCache is closed")

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.fingerprint.model:
            raise UnknownModelError(
                f"this cache holds vectors of {self.fingerprint.model!r}, not {model!r}"
            )

    def _one(self, content: Content, model: str | None) -> Content:
        """A single-content argument checked: the cache open, the model, str/bytes
        (subclasses such as numpy's ``str_`` converted)."""
        if self._ctx.closed:
            raise ClosedError("this TierCache is closed")
        if model is not None:
            self._check_model(model)
        t = type(content)
        return content if t is str or t is bytes else as_content(content)

    def _checked(self, contents: Sequence[Content], model: str | None) -> list[Content]:
        """A batch argument checked: the cache open, the model, a sequence (never one str)
        of str/bytes (subclasses such as numpy's ``str_`` converted)."""
        self._check_open()
        self._check_model(model)
        return as_contents(contents)

    # -- keys ----------------------------------------------------------------------------
    def key(self, content: Content) -> str:
        """The public key (32 hex chars) of ``content`` in this cache's namespace."""
        return key_to_str(self._keys.digest(as_content(content)))

    # -- embedding -------------------------------------------------------------------------
    def embed(self, content: Content) -> np.ndarray:
        """The vector of ``content`` (shape ``(dim,)``, float32, the caller's own copy).

        Served from hot, else warm, else computed by the encoder (and cached per policy).
        """
        return self._read.embed(content)

    def embed_many(self, contents: Sequence[Content]) -> np.ndarray:
        """Vectors of ``contents`` as one ``(n, dim)`` float32 array, in input order.

        Duplicates are looked up and encoded once; misses are encoded in batches of
        ``encoder.batch_size``; concurrent misses of one key are computed once. An encoder
        failure raises :class:`EncoderError` to every waiting caller and caches nothing.
        """
        self._check_open()
        return self._read.embed_many(as_contents(contents))

    # -- explicit writes ------------------------------------------------------------------
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
        self._check_open()
        if model is not None:
            self._check_model(model)
        return self._write.set_one(content, vector, metadata, ttl, tags, doc_id)

    def mset(
        self,
        items: Iterable[Any],
        *,
        ttl: float | None = None,
        model: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> list[str]:
        """Store many entries in one warm transaction; returns their keys in order.

        Items are mappings with ``content`` (or ``text``), ``vector`` (or ``embedding``)
        and optional ``metadata``/``ttl``/``tags``/``doc_id``, or tuples ``(content,
        vector[, metadata[, ttl]])``. ``tags`` here apply to every item. Every item is
        validated before anything is written.
        """
        self._check_open()
        self._check_model(model)
        if items is None or isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise InvalidVectorError(
                "items must be a sequence of (content, vector) pairs or mappings, not "
                f"{'None' if items is None else type(items).__name__}"
            )
        return self._write.mset(items, ttl=ttl, tags=tags)

    # -- invalidation by tag / document id ------------------------------------------------
    def invalidate_tags(self, tags: Iterable[str]) -> int:
        """Drop every entry stored with any of ``tags`` (``set(..., tags=[...])``) from every
        tier; returns how many keys were removed from at least one tier. Counted as
        ``evictions["invalidated"]`` per tier.

        Local tiers of *this* process/host and the shared tier are cleared; other hosts'
        hot and warm copies are not (run it on every host, or combine with a TTL). Raises
        :class:`StoreError` when the shared tier cannot be told (after the local tiers).
        """
        self._check_open()
        wanted = check_tags(tags, required=True)
        return self._write.invalidate_tags(wanted) if wanted else 0

    def drop_ids(self, ids: Iterable[Any]) -> int:
        """Drop every entry stored with one of these document ids (``set(..., doc_id=...)``,
        ``tiercache warm`` JSONL ``id``); same rules as :meth:`invalidate_tags`."""
        if ids is None or isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise InvalidMetadataError(
                f"ids must be a list of document ids, not "
                f"{'None' if ids is None else type(ids).__name__}"
            )
        return self.invalidate_tags([id_tag(i) for i in ids])

    def document_event(self, event: str, doc_id: Any, *, tags: Iterable[str] | None = None) -> int:
        """Tell the cache a document changed: ``event`` is ``"created"``, ``"updated"`` or
        ``"deleted"``, ``doc_id`` its id (``set(..., doc_id=...)``), ``tags`` the
        collections or other tags its vectors and search results carry.

        ``updated``/``deleted``: every vector stored under the id or any of the tags is
        dropped from every tier; ``created``: no vector can exist yet, so only search
        results tagged with the id or tags are dropped. Either way the event reaches
        every process on this warm store before its next read and every host of the
        fleet (``shared.invalidation: stream``), and every attached
        :class:`~tiercache.results.ResultCache` there (:meth:`attach`). Returns the
        vectors removed here. ``tiercache invalidate`` is the same on the command line.
        """
        if event not in ("created", "updated", "deleted"):
            raise InvalidMetadataError(
                f"event must be 'created', 'updated' or 'deleted', not {event!r}"
            )
        wanted = [id_tag(doc_id)] + check_tags(tags if tags is not None else [])
        self._check_open()
        if event == "created":  # no vector of it yet: its tags drop search results only
            self._write.results_event(wanted)
            return 0
        return self._write.invalidate_tags(wanted)

    def attach(self, results: Any) -> None:
        """Invalidate ``results`` (a :class:`~tiercache.results.ResultCache`) by the tags
        and document ids of every invalidation, from any process on this warm store and
        any host of the fleet (held weakly: attach it for as long as it lives)."""
        if not callable(getattr(results, "invalidate_tags", None)):
            raise InvalidInputError("attach takes a ResultCache (or anything with invalidate_tags)")
        self._write.inval.attach(results)

    def tagged(self, tag: str) -> list[str]:
        """Public keys registered under ``tag`` (entries since evicted included)."""
        self._check_open()
        return sorted(key_to_str(k) for k in self._write.tags.keys(check_tags([tag]), remove=False))

    def precompute(
        self,
        contents: Sequence[Content],
        metadata: Sequence[Any] | None = None,
        *,
        ttl: float | None = None,
        doc_ids: Sequence[Any] | None = None,
    ) -> dict[str, int]:
        """Make sure every content is stored: encode what no tier holds and write it with an
        explicit write (like ``mset``: committed to warm, durable with ``durability:
        durable``, bypassing the warm frequency gate). A shared-tier hit is copied to warm
        instead of being encoded. ``metadata`` (one per content, or None) is stored with
        the entries written here; ``doc_ids`` (one per content, None for none) register
        every content, stored before or not, for :meth:`drop_ids`. Returns counts:
        ``{"present", "shared", "encoded"}``.
        The building block of ``tiercache warm`` (bulk catalog precompute)."""
        self._check_open()
        contents = as_contents(contents)
        if metadata is not None and len(metadata) != len(contents):
            raise InvalidContentError("metadata must have one entry per content")
        if doc_ids is not None and len(doc_ids) != len(contents):
            raise InvalidContentError("doc_ids must have one entry per content")
        id_tags = [None if d is None else id_tag(d) for d in doc_ids] if doc_ids else None
        found = self.mget(contents)
        todo: dict[Content, int] = {}
        for i, (c, e) in enumerate(zip(contents, found)):
            if e is None and c not in todo:
                todo[c] = i
        shared = sum(1 for e in found if e is not None and e.tier == "shared")
        if todo:
            for c, i in todo.items():
                check_encodable(c, self._ctx.accepts, i, self._ctx.utf8_text)
            keys = self._keys.digests(list(todo))
            failures: list[EncoderError] = []  # texts the encoder failed on, alone
            vectors = self._read.recompute.compute(
                keys,
                list(todo),
                store=False,
                where=dict(zip(keys, todo.values())),
                failures=failures,
            )
            self.mset(
                [
                    {
                        "content": c,
                        "vector": vectors[k],
                        "metadata": metadata[i] if metadata is not None else None,
                        "tags": [id_tags[i]] if id_tags and id_tags[i] else None,
                    }
                    for (c, i), k in zip(todo.items(), keys)
                    if k in vectors
                ],
                ttl=ttl,
            )
        if id_tags:  # contents stored before (or twice in this batch) join their ids too
            pairs = [
                (self._keys.digest(c), [t])
                for j, (c, t) in enumerate(zip(contents, id_tags))
                if t and todo.get(c) != j
            ]
            if pairs:
                self._write.add_tags(pairs)
        if todo and failures:  # the others are stored: say which failed
            raise failures[0]
        present = sum(1 for e in found if e is not None and e.tier != "shared")
        return {"present": present, "shared": shared, "encoded": len(todo)}

    # -- explicit reads ------------------------------------------------------------------
    def get(self, content: Content, *, model: str | None = None) -> Entry | None:
        """The stored entry of ``content`` (hot, then warm, then shared), or None. Never
        encodes."""
        return self._read.get(self._one(content, model))

    def mget(self, contents: Sequence[Content], *, model: str | None = None) -> list[Entry | None]:
        """Entries in input order, None where nothing is stored. Never encodes."""
        return self._read.mget(self._checked(contents, model))

    def lookup_many(
        self, contents: Sequence[Content], *, model: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(matrix, found)`` for vectors computed elsewhere: the stored vectors of
        ``contents`` as one ``(n, dim)`` float32 array (rows not found are zeros) and a
        bool array, True where the row was found. Never encodes; the speed of
        :meth:`embed_many` on hits (the same lookup), without building an Entry each."""
        return self._read.lookup_many(self._checked(contents, model))

    def exists(self, content: Content, *, model: str | None = None) -> bool:
        """Whether an unexpired entry is stored (no access is recorded, nothing moves)."""
        return self._read.exists(self._one(content, model))

    def mexists(self, contents: Sequence[Content], *, model: str | None = None) -> list[bool]:
        """:meth:`exists` of each content, in input order."""
        if type(contents) is list and len(contents) == 1 and model is None:
            c = contents[0]  # one plain content: exists' own path, no batch handling
            if (type(c) is str or type(c) is bytes) and not self._ctx.closed:
                return [self._read.exists(c)]
        return self._read.mexists(self._checked(contents, model))

    def get_by_key(self, key: str) -> Entry | None:
        """The entry stored under a public key: warm, then shared (hot is indexed by
        content and consulted only when there is no warm tier). Nothing moves."""
        self._check_open()
        return self._read.get_by_key(key)

    # -- removals -------------------------------------------------------------------------
    def drop(self, content: Content, *, model: str | None = None) -> bool:
        """Remove ``content`` from every tier; True if anything was removed.

        Raises :class:`StoreError` if the shared tier cannot be reached (after removing the
        local copies): other hosts could otherwise serve the dropped entry again."""
        return self.mdrop([content], model=model) > 0

    def mdrop(self, contents: Sequence[Content], *, model: str | None = None) -> int:
        """Remove many; returns how many keys were removed from at least one tier."""
        contents = self._checked(contents, model)
        keys = list(dict.fromkeys(self._keys.digests(contents)))
        return self._write.drop_keys(keys, "dropped", "drop")

    def clear(self) -> None:
        """Remove every entry from hot, every record of the warm store directory and
        every shared key under ``shared.key_prefix``.

        The warm store is cleared whole, every namespace in it included (records are
        keyed by digest alone); give caches that must be cleared apart their own
        ``warm.path`` and ``shared.key_prefix``. Raises :class:`StoreError` if the shared
        tier cannot be reached (after clearing the local tiers).
        """
        self._check_open()
        self._write.clear()

    # -- observability --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters per tier (hits, misses, promotions, demotions, evictions and rejections
        by reason, corrupt records), entries and bytes per tier, encoder calls and batch
        sizes, and latency percentiles (microseconds) per tier."""
        with self._lock:
            self._read.fold_fast_hits_locked()
            hot = self._ctx.s_hot.to_dict()
            hot.update(
                entries=len(self._hot), bytes=self._hot.bytes_used(), capacity=self._hot.capacity
            )
            warm = self._ctx.s_warm.to_dict()
            shared = self._ctx.s_shared.to_dict()
            enc = self._ctx.s_enc.to_dict()
            lookups = self._ctx.lookups
        tiers: dict[str, Any] = {"hot": hot}
        if self._warm is not None and not self._ctx.closed:
            try:
                st = self._warm.stat()
            except Exception as exc:  # a damaged store: reported here, never raised
                with self._lock:
                    self._ctx.s_warm.errors += 1
                warm.update(
                    errors=warm["errors"] + 1,
                    last_error=repr(exc),
                    capacity=self._engine.warm_capacity,
                    path=self._warm.path,
                )
            else:
                warm.update(
                    quarantined=len(self._warm.quarantined),
                    switches=self._warm.switches,
                    entries=st["entries"],
                    bytes=st["bytes_used"],
                    file_bytes=st["file_bytes"],
                    capacity=self._engine.warm_capacity,
                    path=self._warm.path,
                )
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
            "invalidation": self._write.inval.stats(),
        }

    def format_stats(self) -> str:
        """``stats()`` as the fixed-width table the CLI prints."""
        return format_stats(self.stats())

    def __repr__(self) -> str:
        return (
            f"TierCache(model={self.fingerprint.model!r}, dim={self.dim}, "
            f"hot={len(self._hot)}/{self._hot.capacity}, "
            f"warm={'off' if self._warm is None else self._warm.path}, "
            f"shared={'off' if self._shared is None else self._shared.prefix + '*'})"
        )


__all__ = ["Entry", "TierCache", "warm_capacity"]
