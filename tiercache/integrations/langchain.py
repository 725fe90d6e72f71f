"""LangChain adapters: a ``ByteStore`` in tiercache's warm store, and cached ``Embeddings``.

Needs ``langchain-core`` (``pip install 'tiercache[langchain]'``).

* :class:`TierCacheEmbeddings` is an ``Embeddings`` served from the tiers (hot, warm,
  recompute): ``embed_documents`` through one :class:`~tiercache.TierCache`,
  ``embed_query`` through another whose fingerprint differs in ``role``, so a query
  vector and a document vector of the same text never share a key.
  :meth:`TierCacheEmbeddings.from_embeddings` puts the tiers in front of any LangChain
  ``Embeddings`` (the replacement of ``CacheBackedEmbeddings``).
* :class:`TierCacheByteStore` is a LangChain ``ByteStore`` (``str`` keys, ``bytes``
  values) kept in a named LMDB database inside a warm store directory, beside the vectors
  and in the same process-wide ``lmdb.Environment``. It passes langchain-tests'
  ``BaseStoreSyncTests`` and ``BaseStoreAsyncTests``.

See docs/migrate-from-langchain.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

import lmdb
import numpy as np

try:
    from langchain_core.embeddings import Embeddings
    from langchain_core.stores import BaseStore
except ImportError as exc:  # pragma: no cover - exercised by a test with the import blocked
    raise ImportError(
        "tiercache.integrations.langchain needs langchain-core; "
        "install it with: pip install 'tiercache[langchain]'"
    ) from exc

from ..cache import TierCache
from ..config import MAX_BATCH_SIZE, TierCacheConfig, default_config, load_config
from ..encoders import CallableEncoder, Encoder
from ..errors import InvalidContentError, InvalidInputError, StoreError
from ..keys import Content, Fingerprint
from ..tiers.lmdb import LmdbTier

__all__ = ["TierCacheByteStore", "TierCacheEmbeddings"]

# --------------------------------------------------------------------------- ByteStore

BYTESTORE_DB = b"langchain.bytestore"
"""Name of the LMDB database holding every ByteStore namespace of a warm store."""

MAX_KEY_BYTES = 511
"""LMDB's key size limit (its default ``MDB_MAXKEYSIZE``, which py-lmdb's bundled LMDB
keeps). A stored key is ``namespace + NUL + key`` in UTF-8, so a key may use
``511 - 1 - len(namespace in UTF-8)`` bytes: 501 for the default namespace."""

_KEYS_PER_READ = 1000  # yield_keys: keys fetched per short read transaction
_COMPANION_FINGERPRINT = Fingerprint(model="tiercache/langchain-bytestore", dim=1)


class TierCacheByteStore(BaseStore[str, bytes]):
    """A LangChain ``ByteStore`` (``BaseStore[str, bytes]``) in a tiercache warm store.

    Pairs live in the LMDB database ``langchain.bytestore`` of the warm store directory,
    under ``namespace`` (stores with different namespaces never see each other's keys).
    Where the directory comes from:

    * ``cache``: that cache's ``warm.path`` (and its durability, map and reader settings);
      the store shares the process's one ``lmdb.Environment`` of that path with the cache.
    * ``path``: that directory (created ``0700``, files ``0600``), with ``durability``.
    * neither: the default config's ``warm.path`` (``./.tiercache/warm``).

    Semantics: ``mset`` writes every pair in one transaction, all or nothing (fsynced with
    durability ``durable``), a key given twice keeps its last value; ``mget`` reads in one
    transaction and returns ``bytes`` copies in input order, ``None`` for a missing key;
    ``mdelete`` ignores missing keys; ``yield_keys(prefix=...)`` yields keys starting with
    ``prefix`` (a plain string prefix) in UTF-8 byte order, reading 1,000 keys per short
    transaction, so it is not a snapshot: pairs written while it runs may or may not show.

    The pairs are not vectors: no TTL, no eviction, not counted in the cache's
    ``warm.max_bytes`` or ``stats()``, untouched by ``TierCache.clear()``; the LMDB map
    grows when they fill it. Keys are ``str`` (any text, at most ``MAX_KEY_BYTES`` bytes
    with the namespace), values ``bytes``; anything else raises a
    :class:`~tiercache.errors.InvalidInputError` subclass and writes nothing.

    Thread-safe; several processes may share the directory. The ``a``-methods run the
    same work in a thread (``asyncio.to_thread``). Call :meth:`close` (or use ``with``)
    to release the environment; closing the cache does not close this store.
    """

    def __init__(
        self,
        cache: TierCache | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        namespace: str = "langchain",
        durability: str = "durable",
    ) -> None:
        if cache is not None and path is not None:
            raise TypeError("give a cache or a path, not both")
        if not isinstance(namespace, str) or not namespace or "\x00" in namespace:
            raise InvalidInputError(
                f"namespace must be a non-empty str without NUL, got {namespace!r}"
            )
        ns = namespace.encode("utf-8", "surrogatepass")
        if len(ns) > 255:
            raise InvalidInputError("namespace is longer than 255 bytes in UTF-8")
        if durability not in ("durable", "fast"):
            raise InvalidInputError(f"durability must be 'durable' or 'fast', not {durability!r}")
        self.namespace = namespace
        self._prefix = ns + b"\x00"
        self._max_key = MAX_KEY_BYTES - len(self._prefix)
        if cache is not None:
            warm = cache.config.warm
            if not warm.enabled:
                raise StoreError(
                    "the cache has no warm store (warm.enabled: false); "
                    "give TierCacheByteStore a path instead"
                )
            self._tier = LmdbTier(
                warm.path,
                fingerprint=_COMPANION_FINGERPRINT,
                durability=warm.durability,
                map_size=warm.map_size,
                max_bytes=warm.max_bytes,
                max_readers=warm.max_readers,
                on_fingerprint_mismatch="inspect",
            )
        else:
            where = path if path is not None else default_config().warm.path
            self._tier = LmdbTier(
                where,
                fingerprint=_COMPANION_FINGERPRINT,
                durability=durability,
                on_fingerprint_mismatch="inspect",
            )
        self.path = self._tier.path

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Release the LMDB environment (closed when its last user releases it). Idempotent."""
        self._tier.close()

    def __enter__(self) -> TierCacheByteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TierCacheByteStore(path={self.path!r}, namespace={self.namespace!r})"

    # -- keys and values -------------------------------------------------------------------
    def _key(self, key: object) -> bytes:
        if not isinstance(key, str):
            raise InvalidContentError(f"keys must be str, not {type(key).__name__}")
        raw = key.encode("utf-8", "surrogatepass")
        if not raw or len(raw) > self._max_key:
            raise InvalidInputError(
                f"keys must be 1 to {self._max_key} bytes in UTF-8 (LMDB's key limit less "
                f"the namespace), got {len(raw)}"
            )
        return self._prefix + raw

    @staticmethod
    def _value(value: object) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise InvalidContentError(f"values must be bytes, not {type(value).__name__}")

    def _run(self, fn: Callable[[lmdb.Transaction, Any], Any], *, write: bool = False) -> Any:
        try:
            return self._tier.in_named_db(BYTESTORE_DB, fn, write=write)
        except lmdb.Error as exc:
            raise StoreError(f"ByteStore in {self.path}: {exc}") from exc

    # -- BaseStore -----------------------------------------------------------------------
    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of ``keys`` in input order (``None`` where missing), one transaction."""
        raw = [self._key(k) for k in keys]
        if not raw:
            return []

        def run(txn: lmdb.Transaction, db: Any) -> list[bytes | None]:
            get = txn.get
            out: list[bytes | None] = []
            for k in raw:
                buf = get(k, db=db)
                out.append(None if buf is None else bytes(buf))
            return out

        return cast(list[bytes | None], self._run(run))

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        """Write every pair in one transaction (all or nothing); the last of a key wins."""
        items = [(self._key(k), self._value(v)) for k, v in key_value_pairs]
        if not items:
            return

        def run(txn: lmdb.Transaction, db: Any) -> None:
            put = txn.put
            for k, v in items:
                put(k, v, db=db)

        self._run(run, write=True)

    def mdelete(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` in one transaction; missing keys are ignored."""
        raw = [self._key(k) for k in keys]
        if not raw:
            return

        def run(txn: lmdb.Transaction, db: Any) -> None:
            delete = txn.delete
            for k in raw:
                delete(k, db=db)

        self._run(run, write=True)

    def _key_chunk(self, low: bytes, after: bytes | None) -> list[bytes]:
        """Up to ``_KEYS_PER_READ`` stored keys starting with ``low`` and above ``after``."""

        def run(txn: lmdb.Transaction, db: Any) -> list[bytes]:
            cur = txn.cursor(db=db)
            if not cur.set_range(low if after is None else after + b"\x00"):
                return []
            out: list[bytes] = []
            for k in cur.iternext(keys=True, values=False):
                k = bytes(k)
                if not k.startswith(low):
                    break
                out.append(k)
                if len(out) >= _KEYS_PER_READ:
                    break
            return out

        return cast(list[bytes], self._run(run))

    def _low(self, prefix: str | None) -> bytes:
        if prefix is None:
            return self._prefix
        if not isinstance(prefix, str):
            raise InvalidContentError(f"prefix must be str, not {type(prefix).__name__}")
        return self._prefix + prefix.encode("utf-8", "surrogatepass")

    def _decode(self, raw: bytes) -> str:
        return raw[len(self._prefix) :].decode("utf-8", "surrogatepass")

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        """Keys starting with ``prefix`` (all keys when ``None``), in UTF-8 byte order."""
        low = self._low(prefix)
        after: bytes | None = None
        while True:
            chunk = self._key_chunk(low, after)
            for k in chunk:
                yield self._decode(k)
            if len(chunk) < _KEYS_PER_READ:
                return
            after = chunk[-1]

    # -- asyncio twins -------------------------------------------------------------------
    async def amget(self, keys: Sequence[str]) -> list[bytes | None]:
        return await asyncio.to_thread(self.mget, list(keys))

    async def amset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        await asyncio.to_thread(self.mset, list(key_value_pairs))

    async def amdelete(self, keys: Sequence[str]) -> None:
        await asyncio.to_thread(self.mdelete, list(keys))

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        low = self._low(prefix)
        after: bytes | None = None
        while True:
            chunk = await asyncio.to_thread(self._key_chunk, low, after)
            for k in chunk:
                yield self._decode(k)
            if len(chunk) < _KEYS_PER_READ:
                return
            after = chunk[-1]


# --------------------------------------------------------------------------- Embeddings


class _RoleEncoder:
    """Another encoder under a fingerprint that differs only in ``role``.

    The vectors are the inner encoder's (one model in memory, its own locking); the keys
    are not, so two caches built on the inner encoder and on this one never share keys.
    """

    def __init__(self, inner: Encoder, role: str) -> None:
        self.inner = inner
        self._fingerprint = dataclasses.replace(inner.fingerprint, role=role)

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def accepts(self) -> tuple[type, ...]:
        return self.inner.accepts

    def encode(self, contents: Sequence[Content]) -> np.ndarray:
        return self.inner.encode(contents)


def _resolve_config(config: TierCacheConfig | str | os.PathLike[str] | None) -> TierCacheConfig:
    if config is None:
        return default_config()
    if isinstance(config, TierCacheConfig):
        return config
    return load_config(config)


def _with_namespace(config: TierCacheConfig, namespace: str) -> TierCacheConfig:
    return dataclasses.replace(config, warm=dataclasses.replace(config.warm, namespace=namespace))


def _langchain_model_name(embeddings: Embeddings) -> str:
    """``langchain/<module>.<class>``, plus ``:<model>`` when the object names its model."""
    cls = type(embeddings)
    name = f"langchain/{cls.__module__}.{cls.__qualname__}"
    for attr in ("model", "model_name", "model_id", "deployment"):
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return f"{name}:{value}"
    return name


class TierCacheEmbeddings(Embeddings):
    """LangChain ``Embeddings`` served from tiercache's tiers, queries and documents apart.

    ``embed_documents``/``aembed_documents`` go through ``documents`` (a
    :class:`~tiercache.TierCache`: ``embed_many``/``aembed_many``: duplicates encoded
    once, misses batched, single flight); ``embed_query``/``aembed_query`` through
    ``queries`` (``embed``/``aembed``). The two caches' fingerprints differ (by ``role``
    unless you pass both), so a query vector and a document vector of the same text never
    share a key, even in one warm store.

    Build it from

    * ``cache`` (and optionally ``query_cache``): caches you made. Without ``query_cache``
      one is derived from ``cache``: the same config and encoder object (one model in
      memory), the fingerprint's ``role`` set to ``query_role``, and the warm namespace
      ``<namespace>.<query_role>`` in the same warm store (one map, one budget).
    * ``config`` (a ``TierCacheConfig``, a YAML path, or ``None`` for the default config)
      and optionally ``encoder``: the documents cache is ``TierCache(config,
      encoder=encoder, clock=clock)``, the queries cache derived as above.
    * :meth:`from_embeddings`: any LangChain ``Embeddings`` as the encoder.

    ``clock`` (seconds since the epoch, for TTLs) is given to the caches this object builds.
    A derived query cache has the documents cache's hot budget of its own. Vectors come
    back as ``list[float]`` of float32 values. Caches this object built are closed by
    :meth:`close` (or ``with``); caches you passed in are left open.
    """

    def __init__(
        self,
        cache: TierCache | None = None,
        *,
        query_cache: TierCache | None = None,
        config: TierCacheConfig | str | os.PathLike[str] | None = None,
        encoder: Encoder | None = None,
        query_role: str = "query",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if cache is not None and (config is not None or encoder is not None):
            raise TypeError("give a cache, or a config and/or encoder, not both")
        if cache is None and query_cache is not None:
            raise TypeError("query_cache needs cache (the documents cache) as well")
        if not isinstance(query_role, str) or not query_role:
            raise InvalidInputError("query_role must be a non-empty str")
        self._owned: list[TierCache] = []
        if cache is None:
            cache = TierCache(_resolve_config(config), encoder=encoder, clock=clock)
            self._owned.append(cache)
        try:
            if query_cache is None:
                query_cache = self._derive_query_cache(cache, query_role, clock)
                self._owned.append(query_cache)
            self._check_pair(cache, query_cache)
        except BaseException:
            self.close()
            raise
        self.documents: TierCache = cache
        self.queries: TierCache = query_cache

    @staticmethod
    def _derive_query_cache(cache: TierCache, role: str, clock: Callable[[], float]) -> TierCache:
        if cache.fingerprint.role == role:
            raise InvalidInputError(
                f"the documents cache's fingerprint role is already {role!r}: pass a "
                f"query_cache, or give the documents cache another encoder.role"
            )
        config = _with_namespace(cache.config, f"{cache.config.warm.namespace}.{role}")
        return TierCache(config, encoder=_RoleEncoder(cache.encoder, role), clock=clock)

    @staticmethod
    def _check_pair(documents: TierCache, queries: TierCache) -> None:
        if queries is documents or queries.fingerprint == documents.fingerprint:
            raise InvalidInputError(
                "the query and document caches have the same fingerprint: their vectors "
                "would share keys; give them different encoder roles"
            )
        if queries.dim != documents.dim:
            raise InvalidInputError(
                f"query vectors have dim {queries.dim}, document vectors {documents.dim}"
            )

    @classmethod
    def from_embeddings(
        cls,
        embeddings: Embeddings,
        *,
        config: TierCacheConfig | str | os.PathLike[str] | None = None,
        dim: int | None = None,
        name: str | None = None,
        revision: str = "",
        namespace: str | None = None,
        clock: Callable[[], float] = time.time,
        batch_size: int | None = None,
    ) -> TierCacheEmbeddings:
        """Put tiercache in front of any LangChain ``Embeddings`` (the cold tier).

        Document misses are computed with ``embeddings.embed_documents``: all the misses
        of one call at once by default (as ``CacheBackedEmbeddings`` does: the wrapped
        object batches for itself, and a remote embedder pays per request), or in chunks
        of ``batch_size`` texts; query misses with ``embeddings.embed_query`` (one call
        per missing text), each under its own fingerprint role (``document``, ``query``).
        The fingerprint's model is ``name``, by default ``langchain/<module>.<class>``
        plus ``:<model>`` when the object has a ``model``/``model_name``/``model_id``/
        ``deployment`` string. Bump ``revision`` whenever the embedder's settings change
        in a way the name does not show, or old vectors will be served.

        ``config``: the tiers (``None``: the default config; its encoder section is not
        used). ``namespace`` overrides ``warm.namespace`` (queries use
        ``<namespace>.query``). ``dim``: the vector size; when ``None`` one
        ``embed_query`` call at construction measures it.
        """
        if not (
            callable(getattr(embeddings, "embed_documents", None))
            and callable(getattr(embeddings, "embed_query", None))
        ):
            raise InvalidInputError(
                f"expected a LangChain Embeddings, got {type(embeddings).__name__}"
            )
        cfg = _resolve_config(config)
        if namespace is not None:
            cfg = _with_namespace(cfg, namespace)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise InvalidInputError(f"batch_size must be an int >= 1 or None, not {batch_size!r}")
        chunk = min(batch_size or MAX_BATCH_SIZE, MAX_BATCH_SIZE)  # None: every miss at once
        cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, batch_size=chunk))
        if dim is None:
            dim = len(embeddings.embed_query("tiercache: dimension probe"))
        model = name or _langchain_model_name(embeddings)

        def embed_documents(texts: list[Content]) -> Any:
            return embeddings.embed_documents([cast(str, t) for t in texts])

        def embed_queries(texts: list[Content]) -> Any:
            return [embeddings.embed_query(cast(str, t)) for t in texts]

        doc_encoder = CallableEncoder(
            embed_documents, dim=dim, name=model, revision=revision, role="document"
        )
        query_encoder = CallableEncoder(
            embed_queries, dim=dim, name=model, revision=revision, role="query"
        )
        owned = [TierCache(cfg, encoder=doc_encoder, clock=clock)]
        try:
            owned.append(
                TierCache(
                    _with_namespace(cfg, f"{cfg.warm.namespace}.query"),
                    encoder=query_encoder,
                    clock=clock,
                )
            )
            out = cls(owned[0], query_cache=owned[1])
        except BaseException:
            for cache in reversed(owned):
                cache.close()
            raise
        out._owned = owned
        return out

    # -- Embeddings ------------------------------------------------------------------------
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of ``texts`` (document role), in input order."""
        return cast(list[list[float]], self.documents.embed_many(texts).tolist())

    def embed_query(self, text: str) -> list[float]:
        """The vector of ``text`` in the query role."""
        return cast(list[float], self.queries.embed(text).tolist())

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return cast(list[list[float]], (await self.documents.aembed_many(texts)).tolist())

    async def aembed_query(self, text: str) -> list[float]:
        return cast(list[float], (await self.queries.aembed(text)).tolist())

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the caches this object built (not the ones passed in). Idempotent."""
        owned, self._owned = self._owned, []
        for cache in reversed(owned):
            cache.close()

    def __enter__(self) -> TierCacheEmbeddings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TierCacheEmbeddings(documents={self.documents!r}, queries={self.queries!r})"
