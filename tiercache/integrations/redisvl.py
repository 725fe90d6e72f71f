"""A drop-in for RedisVL's ``EmbeddingsCache``, served from tiercache's tiers.

A RedisVL user changes one import::

    from redisvl.extensions.cache.embeddings import EmbeddingsCache   # before
    from tiercache.integrations.redisvl import EmbeddingsCache         # after

and keeps every call: ``set``/``get``/``exists``/``drop``, their ``*_by_key`` and ``m*``
batch forms, ``clear``, and the ``a*`` awaitable twins. Entries live in a hot RAM tier and
a warm LMDB directory on this host, and, when ``redis_url`` or ``redis_client`` is given,
in Redis for the other hosts (tiercache's shared tier, fail-open). Nothing here computes
a vector: the cache stores what the caller hands it.

How RedisVL's model is mapped onto tiercache (see docs/migrate-from-redisvl.md):

* **Name.** Each cache name owns a warm directory, ``<root>/<safe name>`` (``root``:
  ``path=``, else the config's ``warm.path``, else ``$XDG_CACHE_HOME/tiercache/redisvl``),
  and a Redis key prefix, ``<name>:`` (``%`` and ``:`` inside the name are written
  ``%25`` and ``%3A``, so no cache's prefix is a prefix of another's). ``clear()`` empties
  that directory and unlinks that prefix (glob characters escaped), nothing else.
* **Models.** RedisVL keys entries by ``(content, model_name)``; a tiercache key space
  has one fingerprint (model and dim). Each model name gets its own
  :class:`~tiercache.TierCache`, created on first use, all sharing the name's warm
  directory (one LMDB environment; manifest namespace ``redisvl/<model>``) and its Redis
  prefix. Keys are tiercache's 128-bit digests of (model, dim, typed content), so models
  never share a key.
* **Dims.** The dim of a model is learnt at its first ``set`` and recorded in a small
  *model registry*: a companion LMDB database in the warm directory (``redisvl.models``)
  and a registry record in Redis under the cache's prefix. A ``get`` of a model this
  process has not used yet reads the registry (local, then Redis), so vectors written by
  another process or host are found; a model nobody registered is a miss with no write.
  One model name holds one dim per cache: a vector of another dim raises
  :class:`~tiercache.errors.InvalidVectorError` (``clear()`` resets the registry).
* **Records.** A record's msgpack blob carries the content, model name, metadata and
  ``inserted_at``, so ``get_by_key`` answers without knowing the model: it reads the
  record by digest (warm, then Redis) and decodes it with the dim in its own header.
* **TTL.** ``ttl`` (constructor) is the default, a per-call ``ttl`` overrides it, ``0``
  or ``None`` in both places mean "no expiry" as in RedisVL. Expiry is fixed when an entry
  is written; reads do not extend it (RedisVL's ``get`` re-arms the default TTL).

Thread-safe. The ``a*`` methods run the same work in a worker thread
(``asyncio.to_thread``), so the event loop never waits on LMDB or Redis.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lmdb
import msgpack
import numpy as np

from .. import codec
from ..cache import Entry, TierCache
from ..config import TierCacheConfig, default_config, load_config
from ..errors import (
    ClosedError,
    ConfigError,
    InvalidContentError,
    InvalidInputError,
    InvalidVectorError,
    StoreError,
)
from ..keys import KEY_BYTES, Content, Fingerprint
from ..tiers.lmdb import LmdbTier
from ..tiers.redis import RedisTier
from .redisvl_args import (
    _MISSING,
    StoreOnlyEncoder,
    _content,
    _contents,
    _decode_any,
    _metadata,
    _model,
    _model_id,
    _namespace,
    _ttl,
    _vector,
    default_root,
    redis_prefix,
    warm_directory,
)

__all__ = ["EmbeddingsCache", "default_root", "redis_prefix", "warm_directory"]

REGISTRY_DB = b"redisvl.models"
"""Companion LMDB database (in each cache's warm directory) mapping model -> dim."""

_COMPANION_FINGERPRINT = Fingerprint(model="tiercache/redisvl-registry", dim=1)
_HEX_KEY = re.compile(f"[0-9a-f]{{{2 * KEY_BYTES}}}")
_ITEM_KEYS = frozenset({"content", "text", "model_name", "embedding", "metadata"})


# --------------------------------------------------------------------------- the cache


class EmbeddingsCache:
    """RedisVL 0.28's ``EmbeddingsCache`` surface over tiercache's tiers.

    ``name``: the cache name (warm directory and Redis prefix, see the module docstring).
    ``ttl``: default time to live of new entries in seconds (``None``/``0``: never).
    ``redis_client`` / ``redis_url`` (+ ``connection_kwargs``): the shared Redis tier;
    without them (and without ``shared.url`` in ``config``) the cache is local only.
    ``config``: a :class:`~tiercache.config.TierCacheConfig` or a YAML path for the hot and
    warm tiers (encoder settings are ignored: this cache never computes); default: the
    packaged defaults with ``shared.ttl: null`` and ``warm.durability: fast``. ``path``:
    root of the warm directories (overrides ``warm.path``). ``durability`` (overrides the
    config's): ``"fast"`` keeps every write acknowledged to a process that is then killed
    (as RedisVL's Redis, whose default persistence fsyncs no write, does not promise more
    across a power cut); ``"durable"`` fsyncs each write before ``set`` returns.
    ``async_redis_client`` is not supported (the ``a*`` methods run the sync client in a
    thread) and raises :class:`~tiercache.errors.ConfigError`.

    Results are dicts ``{"entry_id", "content", "model_name", "embedding" (list of
    floats), "inserted_at", "metadata"}``; ``metadata`` is always present (``None`` when
    absent; RedisVL leaves the key out). Keys are ``"<prefix><entry_id>"``.
    """

    def __init__(
        self,
        name: str = "embedcache",
        ttl: int | float | None = None,
        redis_client: Any = None,
        async_redis_client: Any = None,
        redis_url: str | None = None,
        connection_kwargs: dict[str, Any] | None = None,
        *,
        config: TierCacheConfig | str | os.PathLike[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        durability: str | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise InvalidInputError(f"name must be a str, not {type(name).__name__}")
        if async_redis_client is not None:
            raise ConfigError(
                "async_redis_client",
                type(async_redis_client).__name__,
                "not supported: the a* methods run the sync client in a worker thread; "
                "give redis_client or redis_url",
            )
        if redis_client is not None and redis_url is not None:
            raise ConfigError("redis_url", redis_url, "give redis_url or redis_client, not both")
        self.name = name
        self._ttl: float | None = None
        self.set_ttl(ttl)
        if isinstance(config, TierCacheConfig):
            base = config
        elif config is not None:
            base = load_config(config)
        else:
            root_default = os.fspath(path) if path is not None else default_root()
            base = default_config(base_dir=root_default)
            # RedisVL's own durability is Redis's (no fsync per write by default): the
            # drop-in's warm store keeps every write a killed process acknowledged, and
            # fsyncs each one only when asked (durability="durable")
            base = dataclasses.replace(
                base,
                shared=dataclasses.replace(base.shared, ttl=None),
                warm=dataclasses.replace(base.warm, durability="fast"),
            )
        if durability is not None:
            if durability not in ("fast", "durable"):
                raise ConfigError("durability", durability, "expected 'fast' or 'durable'")
            base = dataclasses.replace(
                base, warm=dataclasses.replace(base.warm, durability=durability)
            )
        root = (
            os.fspath(path)
            if path is not None
            else (base.warm.path if config is not None else default_root())
        )
        self.prefix = redis_prefix(name)
        self.path = warm_directory(root, name)
        self._base = base
        self._warm_cfg = dataclasses.replace(
            base.warm, path=self.path, store_text=False, on_fingerprint_mismatch="coexist"
        )
        self._shared_cfg = dataclasses.replace(base.shared, enabled=False)
        self._redis_client = redis_client
        self._redis_url = redis_url
        self._own_client: Any = None
        if redis_url is not None and connection_kwargs:
            self._own_client = self._client_from_url(redis_url, connection_kwargs)
        self._lock = threading.RLock()
        self._caches: dict[str, TierCache] = {}
        self._retired: list[TierCache] = []
        self._closed = False
        self._root_redis = self._new_redis_tier()
        self._store: LmdbTier | None = None
        self._local_dims: dict[str, int] = {}  # the registry when there is no warm tier
        if self._warm_cfg.enabled:
            w = self._warm_cfg
            self._store = LmdbTier(
                w.path,
                fingerprint=_COMPANION_FINGERPRINT,
                durability=w.durability,
                map_size=w.map_size,
                max_bytes=w.max_bytes,
                max_readers=w.max_readers,
                on_fingerprint_mismatch="inspect",
            )

    # -- construction helpers ------------------------------------------------------------
    def _client_from_url(self, url: str, kwargs: dict[str, Any]) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        sc = self._base.shared
        opts: dict[str, Any] = {
            "socket_timeout": sc.timeout,
            "socket_connect_timeout": sc.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        opts.update(kwargs)
        return redis.Redis.from_url(url, **opts)

    def _new_redis_tier(self) -> RedisTier | None:
        """A fresh RedisTier on this cache's prefix (one per TierCache: closing a TierCache
        closes its tier), or None when no Redis is configured."""
        sc = self._base.shared
        auth_key, auth_key_previous = sc.auth_keys()
        common: dict[str, Any] = {
            "key_prefix": self.prefix,
            "auth_key": auth_key,
            "auth_key_previous": auth_key_previous,
            "timeout": sc.timeout,
            "connect_timeout": sc.connect_timeout,
            "backoff_initial": sc.backoff_initial,
            "backoff_max": sc.backoff_max,
        }
        client = self._redis_client if self._redis_client is not None else self._own_client
        if client is not None:
            return RedisTier(client=client, **common)
        if self._redis_url is not None:
            return RedisTier(url=self._redis_url, **common)
        if sc.active:
            return RedisTier(
                url=sc.url,
                nodes=sc.nodes,
                cluster=sc.cluster,
                password=os.environ.get(sc.password_env) if sc.password_env else None,
                **common,
            )
        return None

    def _open_cache(self, model_name: str, dim: int) -> TierCache:
        cfg = dataclasses.replace(
            self._base,
            ttl=None,
            warm=dataclasses.replace(self._warm_cfg, namespace=_namespace(model_name)),
            shared=self._shared_cfg,
        )
        return TierCache(
            cfg, encoder=StoreOnlyEncoder(model_name, dim), shared=self._new_redis_tier()
        )

    # -- RedisVL's small API ---------------------------------------------------------------
    @property
    def ttl(self) -> int | float | None:
        """The default TTL in seconds (``None``: entries never expire)."""
        ttl = self._ttl
        if ttl is not None and ttl.is_integer():
            return int(ttl)
        return ttl

    def set_ttl(self, ttl: int | float | None = None) -> None:
        """Set the default TTL in seconds for entries written from now on (None/0: never)."""
        self._ttl = _ttl(ttl, "ttl")

    def _resolve_ttl(self, ttl: Any) -> float | None:
        return self._ttl if ttl is None else _ttl(ttl)

    def __enter__(self) -> EmbeddingsCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> EmbeddingsCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close every tier (a client handed in as ``redis_client`` stays open). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            caches = list(self._caches.values()) + self._retired
            self._caches.clear()
            self._retired.clear()
        for tc in caches:
            tc.close()
        if self._store is not None:
            self._store.close()
        if self._root_redis is not None:
            self._root_redis.close()
        if self._own_client is not None:
            self._own_client.close()

    disconnect = close

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    adisconnect = aclose

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this EmbeddingsCache is closed")

    def __repr__(self) -> str:
        return (
            f"EmbeddingsCache(name={self.name!r}, path={self.path!r}, "
            f"redis={'off' if self._root_redis is None else self.prefix + '*'}, "
            f"models={sorted(self._caches)})"
        )

    # -- model registry ------------------------------------------------------------------
    def _registry_get(self, model_name: str) -> int | None:
        """The registered dim of ``model_name``: local registry, then Redis (copied into
        the local registry when found there). None if nobody registered it."""
        mid = _model_id(model_name)
        if self._store is None:
            dim = self._local_dims.get(model_name)
        else:

            def read(txn: lmdb.Transaction, db: Any) -> bytes | None:
                v = txn.get(mid, db=db)
                return None if v is None else bytes(v)

            dim = self._parse_registry(self._registry_run(read), model_name)
        if dim is not None or self._root_redis is None:
            return dim
        try:
            raw = self._root_redis.get(mid)
        except Exception:  # fail-open: an unreachable Redis registers nothing
            return None
        dim = self._parse_registry(raw, model_name)
        if dim is not None:
            self._registry_put_local(model_name, dim)
        return dim

    @staticmethod
    def _parse_registry(raw: bytes | None, model_name: str) -> int | None:
        if raw is None:
            return None
        try:
            rec = msgpack.unpackb(raw, raw=False)
            dim = rec["dim"]
            if rec["model_name"] != model_name or not isinstance(dim, int) or dim <= 0:
                return None
            return dim
        except Exception:
            return None

    def _registry_run(self, fn: Any, write: bool = False) -> Any:
        assert self._store is not None
        try:
            return self._store.in_named_db(REGISTRY_DB, fn, write=write)
        except lmdb.Error as exc:
            raise StoreError(f"model registry in {self.path}: {exc}") from exc

    def _registry_put_local(self, model_name: str, dim: int) -> None:
        value = msgpack.packb({"model_name": model_name, "dim": dim}, use_bin_type=True)
        if self._store is None:
            self._local_dims[model_name] = dim
            return
        mid = _model_id(model_name)

        def write(txn: lmdb.Transaction, db: Any) -> None:
            txn.put(mid, value, db=db)

        self._registry_run(write, write=True)

    def _register(self, model_name: str, dim: int) -> None:
        self._registry_put_local(model_name, dim)
        if self._root_redis is not None:
            value = msgpack.packb({"model_name": model_name, "dim": dim}, use_bin_type=True)
            try:
                self._root_redis.put_many([(_model_id(model_name), value, None)])
            except Exception:  # fail-open; other hosts learn the dim when Redis is back
                pass

    def _cache_for(self, model_name: str, dim: int | None = None) -> TierCache | None:
        """The TierCache of ``model_name``. With ``dim`` (a write): created and registered
        if new, InvalidVectorError if the model holds another dim. Without (a read): None
        when no process has registered the model."""
        with self._lock:
            self._check_open()
            tc = self._caches.get(model_name)
            if tc is None:
                known = self._registry_get(model_name)
                if known is None:
                    if dim is None:
                        return None
                    self._register(model_name, dim)
                    known = dim
                tc = self._open_cache(model_name, known)
                self._caches[model_name] = tc
            if dim is not None and dim != tc.dim:
                raise InvalidVectorError(
                    f"cache {self.name!r} holds vectors of dim {tc.dim} for model "
                    f"{model_name!r}, got dim {dim}; clear() the cache or use another name"
                )
            return tc

    # -- results ---------------------------------------------------------------------------
    def _key(self, hex_key: str) -> str:
        return self.prefix + hex_key

    def _digest(self, key: Any) -> bytes | None:
        """The digest of a key of this cache; None for a key of another shape or cache."""
        if not isinstance(key, str):
            raise InvalidContentError(f"keys must be str, not {type(key).__name__}")
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :]
        return bytes.fromhex(rest) if _HEX_KEY.fullmatch(rest) else None

    @staticmethod
    def _result(
        entry_id: str,
        vector: np.ndarray,
        envelope: Any,
        content: Content | None = None,
        model_name: str | None = None,
    ) -> dict[str, Any]:
        env = envelope if isinstance(envelope, dict) and "inserted_at" in envelope else None
        if env is None:  # a record tiercache wrote without the adapter: no envelope
            env = {
                "content": content,
                "model_name": model_name,
                "metadata": envelope,
                "inserted_at": None,
            }
        return {
            "entry_id": entry_id,
            "content": env.get("content", content),
            "model_name": env.get("model_name", model_name),
            "embedding": vector.tolist(),
            "inserted_at": env.get("inserted_at"),
            "metadata": env.get("metadata"),
        }

    def _from_entry(
        self, entry: Entry | None, content: Content, model_name: str
    ) -> dict[str, Any] | None:
        if entry is None:
            return None
        return self._result(entry.key, entry.vector, entry.metadata, content, model_name)

    # -- writes ----------------------------------------------------------------------------
    def set(
        self,
        content: Content | None = None,
        model_name: str | None = None,
        embedding: Any = None,
        metadata: dict[str, Any] | None = None,
        ttl: int | float | None = None,
        *,
        text: Content | None = None,
    ) -> str:
        """Store ``embedding`` for ``(content, model_name)``; returns its key.

        Committed to the warm tier before returning (fsynced with ``warm.durability:
        durable``), then written to Redis (fail-open). ``ttl`` overrides the default TTL
        (``0``: no expiry). ``text=`` is accepted for ``content=`` (RedisVL's older name).
        Bad input raises a :class:`~tiercache.errors.InvalidInputError` subclass and
        writes nothing.
        """
        item = {
            "content": _content(content if content is not None else _MISSING, text),
            "model_name": model_name,
            "embedding": embedding,
            "metadata": metadata,
        }
        return self.mset([item], ttl=ttl)[0]

    def mset(self, items: Iterable[Mapping[str, Any]], ttl: int | float | None = None) -> list[str]:
        """Store many entries; returns their keys in input order.

        Items are dicts with ``content`` (or ``text``), ``model_name``, ``embedding`` and
        optional ``metadata``. Every item is validated before anything is written; the
        entries of one model are written in one warm transaction.
        """
        self._check_open()
        life = self._resolve_ttl(ttl)
        now = time.time()
        prepared: list[tuple[str, dict[str, Any]]] = []
        dims: dict[str, int] = {}
        for item in items:
            if not isinstance(item, Mapping):
                raise InvalidInputError(f"mset items are dicts, not {type(item).__name__}")
            unknown = set(item) - _ITEM_KEYS
            if unknown:
                raise InvalidInputError(f"unknown item keys: {sorted(map(str, unknown))}")
            c = _content(item.get("content", _MISSING), item.get("text", _MISSING))
            m = _model(item.get("model_name"))
            vec = _vector(item.get("embedding"))
            meta = _metadata(item.get("metadata"))
            if dims.setdefault(m, vec.shape[0]) != vec.shape[0]:
                raise InvalidVectorError(
                    f"model {m!r} has embeddings of dims {dims[m]} and {vec.shape[0]} in one batch"
                )
            envelope = {"content": c, "model_name": m, "metadata": meta, "inserted_at": now}
            prepared.append((m, {"content": c, "vector": vec, "metadata": envelope, "ttl": life}))
        if not prepared:
            return []
        # every model's dim is checked (and new models registered) before any write
        caches = {m: self._cache_for(m, d) for m, d in dims.items()}
        keys: list[str] = [""] * len(prepared)
        for m, tc in caches.items():
            rows = [i for i, (im, _) in enumerate(prepared) if im == m]
            assert tc is not None
            for i, k in zip(rows, tc.mset([prepared[i][1] for i in rows])):
                keys[i] = self._key(k)
        return keys

    # -- reads by content --------------------------------------------------------------------
    def get(
        self,
        content: Content | None = None,
        model_name: str | None = None,
        *,
        text: Content | None = None,
    ) -> dict[str, Any] | None:
        """The entry of ``(content, model_name)``, or None. Reads hot, warm, then Redis."""
        c = _content(content if content is not None else _MISSING, text)
        return self.mget([c], model_name)[0]

    def mget(
        self,
        contents: Iterable[Content] | None = None,
        model_name: str | None = None,
        *,
        texts: Iterable[Content] | None = None,
    ) -> list[dict[str, Any] | None]:
        """Entries in input order, None for a miss; ``[]`` for no contents."""
        self._check_open()
        cs = _contents(contents, texts)
        m = _model(model_name)
        if not cs:
            return []
        tc = self._cache_for(m)
        if tc is None:
            return [None] * len(cs)
        return [self._from_entry(e, c, m) for e, c in zip(tc.mget(cs), cs)]

    def exists(
        self,
        content: Content | None = None,
        model_name: str | None = None,
        *,
        text: Content | None = None,
    ) -> bool:
        """Whether an unexpired entry of ``(content, model_name)`` is stored."""
        c = _content(content if content is not None else _MISSING, text)
        return self.mexists([c], model_name)[0]

    def mexists(
        self,
        contents: Iterable[Content] | None = None,
        model_name: str | None = None,
        *,
        texts: Iterable[Content] | None = None,
    ) -> list[bool]:
        self._check_open()
        cs = _contents(contents, texts)
        m = _model(model_name)
        if not cs:
            return []
        tc = self._cache_for(m)
        return [False] * len(cs) if tc is None else tc.mexists(cs)

    def drop(
        self,
        content: Content | None = None,
        model_name: str | None = None,
        *,
        text: Content | None = None,
    ) -> None:
        """Remove the entry of ``(content, model_name)`` from every tier.

        Raises :class:`~tiercache.errors.StoreError` if Redis cannot be reached (after
        removing the local copies): other hosts could otherwise still serve the entry."""
        c = _content(content if content is not None else _MISSING, text)
        self.mdrop([c], model_name)

    def mdrop(
        self,
        contents: Iterable[Content] | None = None,
        model_name: str | None = None,
        *,
        texts: Iterable[Content] | None = None,
    ) -> None:
        self._check_open()
        cs = _contents(contents, texts)
        m = _model(model_name)
        if not cs:
            return
        tc = self._cache_for(m)
        if tc is not None:
            tc.mdrop(cs)

    # -- reads by key ------------------------------------------------------------------------
    def _read_digests(self, digests: list[bytes]) -> list[codec.Record | None]:
        """Fresh records of ``digests`` (warm, then Redis), decoded with their own dim.

        Nothing moves (as ``TierCache.get_by_key``). Redis failures are misses."""
        now = time.time()
        out: list[codec.Record | None] = [None] * len(digests)

        def fresh(rec: codec.Record | None) -> codec.Record | None:
            if rec is None or (rec.expires_at and rec.expires_at <= now):
                return None
            return rec

        if self._store is not None:
            try:
                found = self._store.get_many_at(digests, _decode_any, None, None)
            except Exception:
                found = [None] * len(digests)
            out = [fresh(r) for r in found]
        else:  # no warm tier: the entries may live in a hot tier only
            with self._lock:
                caches = list(self._caches.values())
            for i, d in enumerate(digests):
                for tc in caches:
                    e = tc.get_by_key(d.hex())
                    if e is not None:
                        out[i] = codec.Record(e.vector, 0.0, codec.pack_blob(e.metadata))
                        break
        rest = [i for i, r in enumerate(out) if r is None]
        if rest and self._root_redis is not None:
            try:
                bufs = self._root_redis.get_many([digests[i] for i in rest])
            except Exception:  # fail-open: an unreachable Redis holds nothing
                bufs = [None] * len(rest)
            for i, buf in zip(rest, bufs):
                rec = _decode_any(buf, 0, len(buf), None, digests[i]) if buf is not None else None
                out[i] = fresh(rec)
        return out

    def mget_by_keys(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """Entries of ``keys`` in input order (None for a miss or a key of another cache)."""
        self._check_open()
        digests = [self._digest(k) for k in keys]
        valid = [d for d in digests if d is not None]
        records = iter(self._read_digests(valid) if valid else [])
        out: list[dict[str, Any] | None] = []
        for d in digests:
            rec = next(records) if d is not None else None
            if d is None or rec is None:
                out.append(None)
                continue
            env = rec.metadata()
            if not (isinstance(env, dict) and "model_name" in env and "inserted_at" in env):
                out.append(None)  # not an entry of this adapter (e.g. a registry record)
                continue
            out.append(self._result(d.hex(), rec.vector, env))
        return out

    def get_by_key(self, key: str) -> dict[str, Any] | None:
        """The entry stored under ``key`` (as returned by :meth:`set`), or None."""
        return self.mget_by_keys([key])[0]

    def mexists_by_keys(self, keys: Sequence[str]) -> list[bool]:
        return [r is not None for r in self.mget_by_keys(keys)]

    def exists_by_key(self, key: str) -> bool:
        return self.mexists_by_keys([key])[0]

    def mdrop_by_keys(self, keys: Sequence[str]) -> None:
        """Remove the entries of ``keys`` from every tier (keys of other caches are
        ignored). Raises StoreError if Redis cannot be reached, like :meth:`drop`."""
        self._check_open()
        digests = [d for d in (self._digest(k) for k in keys) if d is not None]
        if not digests:
            return
        found = self.mget_by_keys([self._key(d.hex()) for d in digests])
        by_model: dict[str, list[Content]] = {}
        unresolved: list[bytes] = []
        for d, res in zip(digests, found):
            if res is None:
                unresolved.append(d)
            else:
                by_model.setdefault(res["model_name"], []).append(res["content"])
        for m, cs in by_model.items():
            tc = self._cache_for(m)
            if tc is not None:
                tc.mdrop(cs)
        if unresolved:  # expired or unreadable: remove whatever copy may linger
            if self._store is not None:
                self._store.delete_many(unresolved)
            if self._root_redis is not None:
                try:
                    self._root_redis.delete_many(unresolved)
                except Exception as exc:
                    raise StoreError(
                        f"drop: the shared tier (Redis) could not be reached, so other "
                        f"hosts may still serve these entries: {exc}"
                    ) from exc

    def drop_by_key(self, key: str) -> None:
        self.mdrop_by_keys([key])

    def expire(self, key: str, ttl: int | float | None = None) -> None:
        """Give the entry under ``key`` a new TTL (default: the cache's; none set: no-op),
        counted from now, as RedisVL's ``expire``. The entry is rewritten (same
        ``inserted_at``); a missing key is a no-op."""
        life = self._resolve_ttl(ttl)
        if life is None:
            return
        res = self.get_by_key(key)
        if res is None:
            return
        tc = self._cache_for(res["model_name"], len(res["embedding"]))
        assert tc is not None
        envelope = {
            "content": res["content"],
            "model_name": res["model_name"],
            "metadata": res["metadata"],
            "inserted_at": res["inserted_at"],
        }
        tc.mset(
            [
                {
                    "content": res["content"],
                    "vector": np.asarray(res["embedding"], dtype=np.float32),
                    "metadata": envelope,
                    "ttl": life,
                }
            ]
        )

    # -- clear -----------------------------------------------------------------------------
    def clear(self) -> None:
        """Remove every entry of this cache: its hot tiers, its warm directory's records
        and model registry, and every Redis key under its prefix (glob characters
        escaped; other caches' keys are never matched). Raises StoreError if Redis cannot
        be reached (after clearing the local tiers)."""
        with self._lock:
            self._check_open()
            caches = list(self._caches.values())
            # The models' TierCaches leave the table (their dims are forgotten with the
            # registry) but stay open until close(): calls already holding one finish.
            self._retired.extend(caches)
            self._caches.clear()
            self._local_dims.clear()
            failure: StoreError | None = None
            for tc in caches:  # hot of each model, the whole warm directory, the prefix
                try:
                    tc.clear()
                except StoreError as exc:  # raised after the local tiers were cleared
                    failure = failure or exc
            if self._store is not None:
                self._store.clear()

                def drop(txn: lmdb.Transaction, db: Any) -> None:
                    txn.drop(db, delete=False)

                self._registry_run(drop, write=True)
            if self._root_redis is not None and not caches:
                try:
                    self._root_redis.clear()
                except Exception as exc:
                    failure = StoreError(
                        f"clear: the local tiers are done, but the shared tier (Redis) "
                        f"could not be reached, so other hosts may still serve these "
                        f"entries: {exc}"
                    )
            if failure is not None:
                raise failure

    # -- observability ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """``TierCache.stats()`` of each model used in this process, by model name."""
        with self._lock:
            caches = dict(self._caches)
        return {m: tc.stats() for m, tc in caches.items()}

    # -- asyncio ---------------------------------------------------------------------------
    async def aset(
        self,
        content: Content | None = None,
        model_name: str | None = None,
        embedding: Any = None,
        metadata: dict[str, Any] | None = None,
        ttl: int | float | None = None,
        *,
        text: Content | None = None,
    ) -> str:
        return await asyncio.to_thread(
            self.set, content, model_name, embedding, metadata, ttl, text=text
        )

    async def amset(
        self, items: Iterable[Mapping[str, Any]], ttl: int | float | None = None
    ) -> list[str]:
        return await asyncio.to_thread(self.mset, list(items), ttl)

    async def aget(
        self,
        content: Content | None = None,
        model_name: str | None = None,
        *,
        text: Content | None = None,
    ) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.get, content, model_name, text=text)

    async def amget(
        self,
        contents: Iterable[Content] | None = None,
        model_name: str | None = None,
        *,
        texts: Iterable[Content] | None = None,
    ) -> list[dict[str, Any] | None]:
        cs = None if contents is None else list(contents)
        ts = None if texts is None else list(texts)
        return await asyncio.to_thread(self.mget, cs, model_name, texts=ts)

    async def aexists(
        self,
        content: Content | None = None,
        model_name: str | None = None,
        *,
        text: Content | None = None,
    ) -> bool:
        return await asyncio.to_thread(self.exists, content, model_name, text=text)

    async def amexists(
        self,
        contents: Iterable[Content] | None = None,
        model_name: str | None = None,
        *,
        texts: Iterable[Content] | None = None,
    ) -> list[bool]:
        cs = None if contents is None else list(contents)
        ts = None if texts is None else list(texts)
        return await asyncio.to_thread(self.mexists, cs, model_name, texts=ts)

    async def adrop(
        self,
        content: Content | None = None,
        model_name: str | None = None,
        *,
        text: Content | None = None,
    ) -> None:
        await asyncio.to_thread(self.drop, content, model_name, text=text)

    async def amdrop(
        self,
        contents: Iterable[Content] | None = None,
        model_name: str | None = None,
        *,
        texts: Iterable[Content] | None = None,
    ) -> None:
        cs = None if contents is None else list(contents)
        ts = None if texts is None else list(texts)
        await asyncio.to_thread(self.mdrop, cs, model_name, texts=ts)

    async def aget_by_key(self, key: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.get_by_key, key)

    async def amget_by_keys(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        return await asyncio.to_thread(self.mget_by_keys, list(keys))

    async def aexists_by_key(self, key: str) -> bool:
        return await asyncio.to_thread(self.exists_by_key, key)

    async def amexists_by_keys(self, keys: Sequence[str]) -> list[bool]:
        return await asyncio.to_thread(self.mexists_by_keys, list(keys))

    async def adrop_by_key(self, key: str) -> None:
        await asyncio.to_thread(self.drop_by_key, key)

    async def amdrop_by_keys(self, keys: Sequence[str]) -> None:
        await asyncio.to_thread(self.mdrop_by_keys, list(keys))

    async def aexpire(self, key: str, ttl: int | float | None = None) -> None:
        await asyncio.to_thread(self.expire, key, ttl)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)
