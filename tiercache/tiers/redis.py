"""The shared tier: records in Redis (standalone or Redis Cluster), for fleets of hosts.

A dumb record store like the warm tier: the same keys (16-byte digests, written as
``<key_prefix><32 hex chars>``) and the same record bytes (``tiercache.codec``: a raw vector
behind a checksummed header, never JSON, never pickle). What to read, write and keep is
decided by ``TierCache``; this module only moves bytes, batch-first:

* reads: ``MGET`` (one round trip per 1,000 keys) on a standalone server; on a cluster
  redis-py's ``mget_nonatomic``, which groups keys by hash slot and pipelines per node;
* writes: one non-transactional pipeline of ``SET key value PX ttl`` (the TTL is set
  atomically with the value), grouped per node on a cluster;
* deletes: ``UNLINK`` (split across slots on a cluster); ``clear`` scans
  ``<escaped key_prefix>*`` on every primary and unlinks what it finds.

**Fail-open.** Redis being down, slow or refusing must never reach the caller. Every call
is bounded by ``timeout`` (socket read/write) and ``connect_timeout``, with redis-py's own
retries switched off so the bound holds. A connection-level failure opens a circuit
breaker: for ``backoff`` seconds (doubling per failed probe from ``backoff_initial`` up to
``backoff_max``) calls fail at once with :class:`SharedUnavailable` instead of waiting on a
dead server; then one call probes, and success closes the breaker. ``TierCache`` catches
every exception from this tier, counts it and carries on with the local tiers and the
encoder.

**Sealed records.** A value in Redis is ``record || tag``: the tag (16 bytes) covers the
Redis key (length-prefixed) and the record: a keyed BLAKE2b with the fleet secret
``shared.auth_key`` when one is configured, an XXH3-128 otherwise. :meth:`RedisTier.get` and
:meth:`RedisTier.get_many` return the bare record only when the tag verifies; otherwise
the value is absent to the caller (a miss) and counted in ``forged``. Without a secret
this binds a record to its key (a record copied under another key is refused); with one,
a client without the secret cannot plant a record either. See :class:`RecordSeal`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from xxhash import xxh3_128_digest

from ..errors import ConfigError, StoreError

try:  # the batch opener in C (tiercache/_core_src/hash.c); Python when it is not built
    from .._core import SealOpener as _SealOpener
except ImportError:  # pragma: no cover - the extension is optional for pip
    _SealOpener = None  # type: ignore[misc, assignment]

CLUSTER_MODES: tuple[str, ...] = ("auto", "standalone", "cluster")
"""``shared.cluster``: ``auto`` asks the server (``INFO cluster``) on first connection;
``standalone`` and ``cluster`` force the client kind. A ``redis+cluster://`` URL or a list
of ``nodes`` means ``cluster``."""

_CHUNK = 1000  # keys per MGET / UNLINK


TAG_BYTES = 16
"""Length of the tag behind every record stored in Redis."""
MIN_SECRET_BYTES = 16
"""Shortest fleet secret accepted (128 bits; ``openssl rand -hex 32`` gives 64 bytes)."""
_TAG_PERSON = b"tiercache.rec.1"  # BLAKE2b personalisation of the keyed record tag
_KDF_PERSON = b"tiercache.auth.1"  # ... of the MAC key derived from a fleet secret
_UNKEYED_SEED = int.from_bytes(b"tcrec.1\0", "little")  # XXH3 seed of the unkeyed tag


_OPENER: list[Any] = []  # the process's SealOpener (built on first use), or [None]


def _unkeyed_opener() -> Any:
    """The C batch opener of unkeyed seals, None when the extension is not built."""
    if not _OPENER:
        _OPENER.append(
            _SealOpener(xxh3_128_digest, _UNKEYED_SEED) if _SealOpener is not None else None
        )
    return _OPENER[0]


def _mac(secret: bytes) -> Any:
    """A primed keyed BLAKE2b-128 (its key: BLAKE2b-256 of ``secret``, personalised)."""
    mac_key = hashlib.blake2b(secret, digest_size=32, person=_KDF_PERSON).digest()
    return hashlib.blake2b(digest_size=TAG_BYTES, key=mac_key, person=_TAG_PERSON)


class RecordSeal:
    """Tags records for Redis and verifies them: ``value = record || tag`` (16 bytes).

    The tagged message is ``u32le(len(redis_key)) || redis_key || record``: the tag binds
    a record to its Redis key (prefix and digest), so a record copied under another key
    does not verify.

    * **keyed** (``secret`` given): ``tag = BLAKE2b-128`` keyed with a 32-byte key derived
      from the secret (BLAKE2b, personalised ``tiercache.auth.1``), personalised
      ``tiercache.rec.1``: a MAC; a client without the secret cannot make a record that
      verifies. Compared in constant time.
    * **unkeyed** (no secret): ``tag = XXH3-128`` (seeded). Without a secret anyone who
      can write to Redis can compute any tag, so a cryptographic hash would buy nothing
      there; the tag only has to bind the record to its key, and XXH3 does that for a
      fifth of BLAKE2b's cost (a 1.5 KB record read: 0.5 us vs 2.4 us, tag check and
      copy included; bench/shared_auth.py).

    The two kinds never verify each other's records. ``secret`` tags new writes and
    verifies; ``previous`` (key rotation) only verifies. Secrets are at least
    :data:`MIN_SECRET_BYTES`; they are not kept here, only the primed hashers.
    Thread-safe (the primed hashers are copied per call).
    """

    def __init__(self, secret: bytes | None = None, previous: bytes | None = None) -> None:
        for name, value in (("shared.auth_key", secret), ("shared.auth_key_previous", previous)):
            if value is not None and (
                not isinstance(value, bytes) or len(value) < MIN_SECRET_BYTES
            ):
                raise ConfigError(
                    name, "<secret>", f"expected at least {MIN_SECRET_BYTES} bytes of secret"
                )
        if previous is not None and secret is None:
            raise ConfigError(
                "shared.auth_key_previous", "<secret>", "a previous key needs a current one"
            )
        self.keyed = secret is not None
        self.rotating = previous is not None and previous != secret
        self._macs: tuple[Any, ...] = ()
        if secret is not None:
            macs = [_mac(secret)]
            if previous is not None and self.rotating:
                macs.append(_mac(previous))
            self._macs = tuple(macs)
            self.open = self._open_keyed  # type: ignore[method-assign]

    @staticmethod
    def _keyed_tag(mac: Any, rkey: bytes, record: Any) -> bytes:
        h = mac.copy()
        h.update(len(rkey).to_bytes(4, "little"))
        h.update(rkey)
        h.update(record)
        tag: bytes = h.digest()
        return tag

    @staticmethod
    def _unkeyed_tag(rkey: bytes, record: bytes) -> bytes:
        return xxh3_128_digest(len(rkey).to_bytes(4, "little") + rkey + record, _UNKEYED_SEED)

    def seal(self, rkey: bytes, record: bytes) -> bytes:
        """The value to store under ``rkey``: ``record`` and its tag (current key)."""
        if self._macs:
            return record + self._keyed_tag(self._macs[0], rkey, record)
        return record + self._unkeyed_tag(rkey, record)

    def open(self, rkey: bytes, value: bytes) -> bytes | None:
        """The record of a value read from ``rkey``, or None if its tag does not verify
        (under the current key or the previous one, when keyed)."""
        n = len(value) - TAG_BYTES
        record = value[:n]
        if n < 0 or self._unkeyed_tag(rkey, record) != value[n:]:
            return None
        return record

    def open_many(self, rkeys: list[bytes], values: list[bytes | None]) -> list[bytes | None]:
        """:meth:`open` of each value read from the same index of ``rkeys`` (None stays
        None). Unkeyed, in one C call (``_core.SealOpener``: xxhash's own XXH3-128) when
        it is built; the same answers either way."""
        if not self._macs:
            opener = _unkeyed_opener()
            if opener is not None:
                got: list[bytes | None] | None = opener.open_many(rkeys, values)
                if got is not None:
                    return got
        open_ = self.open
        return [None if v is None else open_(k, v) for k, v in zip(rkeys, values)]

    def _open_keyed(self, rkey: bytes, value: bytes) -> bytes | None:
        n = len(value) - TAG_BYTES
        if n < 0:
            return None
        body = memoryview(value)[:n]
        tag = value[n:]
        for mac in self._macs:
            if hmac.compare_digest(self._keyed_tag(mac, rkey, body), tag):
                return value[:n]
        return None

    @property
    def mode(self) -> str:
        """``keyed``, ``keyed+previous`` (rotating) or ``unkeyed`` (key binding only)."""
        if not self.keyed:
            return "unkeyed"
        return "keyed+previous" if self.rotating else "keyed"


class SharedUnavailable(StoreError):
    """The shared tier is in back-off after a failure (never raised to cache callers)."""


def glob_escape(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped, for ``SCAN MATCH``."""
    out = []
    for ch in text:
        if ch in "*?[]\\^-":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - redis is a core dependency
        raise StoreError("the shared tier needs redis-py: pip install redis") from exc
    return redis


def _connection_errors(redis: Any) -> tuple[type[BaseException], ...]:
    from redis.exceptions import ClusterDownError, ClusterError

    return (
        redis.ConnectionError,
        redis.TimeoutError,
        ClusterDownError,
        ClusterError,
        ConnectionError,
        TimeoutError,
        OSError,
    )


class RedisTier:
    """Records in Redis under ``key_prefix``; every call fail-fast behind a breaker.

    Give ``url`` (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``), or
    ``nodes`` (``["host:port", ...]``, Redis Cluster startup nodes), or ``client`` (an
    existing redis-py ``Redis``/``RedisCluster``; it is not closed by :meth:`close`).
    ``clock`` is a monotonic clock for the back-off (injectable in tests).
    ``auth_key`` / ``auth_key_previous``: the fleet secret that tags records and the one
    still accepted while it is rotated (:class:`RecordSeal`; without them records are
    still bound to their key, unkeyed). A value whose tag does not verify is returned as
    absent and counted in ``forged``.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        nodes: Sequence[str] = (),
        client: Any = None,
        cluster: str = "auto",
        key_prefix: str = "tiercache:",
        timeout: float = 0.1,
        connect_timeout: float = 0.25,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        password: str | None = None,
        auth_key: bytes | None = None,
        auth_key_previous: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client is None and not url and not nodes:
            raise ConfigError("shared.url", url, "give a Redis URL, cluster nodes or a client")
        if cluster not in CLUSTER_MODES:
            raise ConfigError("shared.cluster", cluster, f"one of {', '.join(CLUSTER_MODES)}")
        self._redis = _import_redis()
        self._url = url
        self._nodes = tuple(nodes)
        if url and urlsplit(url).scheme.endswith("+cluster"):
            cluster = "cluster"
            scheme, rest = url.split("://", 1)
            self._url = f"{scheme.removesuffix('+cluster')}://{rest}"
        if self._nodes:
            cluster = "cluster"
        self._mode = cluster
        self._owned = client is None
        self._client: Any = client
        self._is_cluster = client is not None and hasattr(client, "get_nodes")
        self.prefix = key_prefix
        self._bprefix = key_prefix.encode("utf-8")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self._backoff_initial = float(backoff_initial)
        self._backoff_max = float(backoff_max)
        self._backoff = self._backoff_initial
        self._password = password
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False
        self._probing = False
        self.outages = 0
        self.last_error: str | None = None
        self._conn_errors = _connection_errors(self._redis)
        self._seal = RecordSeal(auth_key, auth_key_previous)  # keeps no secret itself
        self.forged = 0

    # -- keys --------------------------------------------------------------------------
    def redis_key(self, key: bytes) -> bytes:
        """The Redis key of a 16-byte digest: ``<key_prefix><32 hex chars>``."""
        return self._bprefix + key.hex().encode("ascii")

    # -- client and breaker ------------------------------------------------------------
    def _client_kwargs(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kw: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if self._password is not None:
            kw["password"] = self._password
        return kw

    def _make_client(self) -> Any:
        redis = self._redis
        kw = self._client_kwargs()
        if self._mode == "cluster":
            from redis.cluster import ClusterNode, RedisCluster

            if self._nodes:
                startup = []
                for node in self._nodes:
                    host, _, port = node.rpartition(":")
                    startup.append(ClusterNode(host or "127.0.0.1", int(port)))  # type: ignore[no-untyped-call]
                client = RedisCluster(startup_nodes=startup, **kw)
            else:
                client = RedisCluster.from_url(str(self._url), **kw)
            self._is_cluster = True
            return client
        client = redis.Redis.from_url(self._url, **kw)
        if self._mode == "auto":
            try:
                info = client.info("cluster")
            except Exception:
                client.close()
                raise
            if info.get("cluster_enabled"):
                client.close()
                from redis.cluster import RedisCluster

                self._is_cluster = True
                return RedisCluster.from_url(str(self._url), **kw)
        self._is_cluster = False
        return client

    def _enter(self) -> Any:
        """The client, or SharedUnavailable while backing off (one caller probes)."""
        client = self._client
        if client is not None and not self._down:  # the common case, without the lock
            return client
        with self._lock:
            if self._down:
                now = self._clock()
                if now < self._down_until or self._probing:
                    raise SharedUnavailable(f"shared tier backing off: {self.last_error}")
                self._probing = True
            if self._client is None:
                try:
                    self._client = self._make_client()
                except Exception as exc:
                    self._fail_locked(exc)
                    raise
            return self._client

    def _fail_locked(self, exc: BaseException) -> None:
        if not self._down:
            self.outages += 1
            self._backoff = self._backoff_initial
        else:
            self._backoff = min(self._backoff * 2, self._backoff_max)
        self._down = True
        self._probing = False
        self._down_until = self._clock() + self._backoff
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._owned:
            # the old client may hold dead sockets or a stale slot map: the next probe
            # builds a new one (threads still using the old one fail and are counted)
            self._client = None

    def _ok(self) -> None:
        if self._down or self._probing:
            with self._lock:
                self._down = False
                self._probing = False
                self._backoff = self._backoff_initial

    def _call(self, fn: Callable[[Any], Any]) -> Any:
        client = self._enter()
        try:
            result = fn(client)
        except self._conn_errors as exc:
            with self._lock:
                self._fail_locked(exc)
            raise
        except BaseException:
            with self._lock:
                self._probing = False
            raise
        self._ok()
        return result

    @property
    def available(self) -> bool:
        """False while the breaker is open (calls would fail at once)."""
        with self._lock:
            return not self._down or self._clock() >= self._down_until

    @property
    def is_cluster(self) -> bool:
        return self._is_cluster

    # -- records -----------------------------------------------------------------------
    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Stored records of ``keys`` in input order (tags verified and removed), None
        where absent or refused (``forged``)."""
        if not keys:
            return []
        rkeys = [self.redis_key(k) for k in keys]

        def run(client: Any) -> list[bytes | None]:
            if self._is_cluster:
                return list(client.mget_nonatomic(rkeys))
            if len(rkeys) <= _CHUNK:
                return list(client.mget(rkeys))
            pipe = client.pipeline(transaction=False)
            for i in range(0, len(rkeys), _CHUNK):
                pipe.mget(rkeys[i : i + _CHUNK])
            out: list[bytes | None] = []
            for part in pipe.execute():
                out.extend(part)
            return out

        values: list[bytes | None] = self._call(run)
        result = self._seal.open_many(rkeys, values)
        forged = sum(1 for v, r in zip(values, result) if r is None and v is not None)
        if forged:
            self._count_forged(forged)
        return result

    def get(self, key: bytes) -> bytes | None:
        """The stored record of ``key`` (its tag verified and removed), or None."""
        rkey = self.redis_key(key)
        value: bytes | None = self._call(lambda c: c.get(rkey))
        if value is None:
            return None
        record = self._seal.open_many([rkey], [value])[0]  # in C when built
        if record is None:
            self._count_forged(1)
        return record

    def _count_forged(self, n: int) -> None:
        with self._lock:
            self.forged += n

    def put_many(
        self,
        items: Sequence[tuple[bytes, bytes] | tuple[bytes, bytes, int | None]],
        *,
        event: tuple[dict[bytes, bytes], int] | None = None,
    ) -> None:
        """Write ``(key, record)`` or ``(key, record, ttl_ms)`` items (the tier protocol's
        pairs, or with a TTL set atomically with the value; ``ttl_ms`` None = no expiry),
        each sealed with its tag (:class:`RecordSeal`). One pipeline; ``event``
        ``(fields, maxlen)``: an invalidation stream entry added at its end (one round
        trip for both)."""
        if not items:
            return

        seal = self._seal.seal

        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for item in items:
                rkey = self.redis_key(item[0])
                value = seal(rkey, item[1])
                ttl_ms = item[2] if len(item) > 2 else None
                if ttl_ms is None:
                    pipe.set(rkey, value)
                else:
                    pipe.set(rkey, value, px=max(1, int(ttl_ms)))
            if event is not None:
                self._xadd(pipe, *event)
            pipe.execute()

        self._call(run)

    def exists_many(self, keys: Sequence[bytes]) -> list[bool]:
        """Whether each key holds a record that verifies (read as :meth:`get_many`: a
        refused value does not exist)."""
        return [v is not None for v in self.get_many(keys)]

    def delete_many(self, keys: Sequence[bytes]) -> int:
        """Unlink ``keys``; returns how many existed."""
        if not keys:
            return 0
        rkeys = [self.redis_key(k) for k in keys]

        def run(client: Any) -> int:
            n = 0
            for i in range(0, len(rkeys), _CHUNK):
                n += int(client.unlink(*rkeys[i : i + _CHUNK]))
            return n

        deleted: int = self._call(run)
        return deleted

    def delete_each(
        self, keys: Sequence[bytes], *, event: tuple[dict[bytes, bytes], int] | None = None
    ) -> list[bool]:
        """Unlink ``keys`` in one pipeline; which of them existed, in input order.
        ``event``: as :meth:`put_many`'s."""
        if not keys:
            return []

        def run(client: Any) -> list[bool]:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.unlink(self.redis_key(k))
            if event is not None:
                self._xadd(pipe, *event)
            return [bool(n) for n in pipe.execute()[: len(keys)]]

        result: list[bool] = self._call(run)
        return result

    def keys(self) -> Iterator[bytes]:
        """Digests stored under this prefix (a SCAN; every primary of a cluster)."""
        pattern = glob_escape(self.prefix) + "*"
        skip = len(self._bprefix)
        found: list[bytes] = self._call(lambda c: list(c.scan_iter(match=pattern, count=1000)))
        for rkey in found:
            try:
                yield bytes.fromhex(rkey[skip:].decode("ascii"))
            except ValueError:
                continue  # a foreign key that happens to share the prefix

    def count(self) -> int:
        return sum(1 for _ in self.keys())

    def clear(self) -> int:
        """Unlink every key under this prefix (glob characters in it are escaped)."""
        pattern = glob_escape(self.prefix) + "*"

        def run(client: Any) -> int:
            n = 0
            batch: list[bytes] = []
            for rkey in client.scan_iter(match=pattern, count=1000):
                batch.append(rkey)
                if len(batch) >= _CHUNK:
                    n += int(client.unlink(*batch))
                    batch = []
            if batch:
                n += int(client.unlink(*batch))
            return n

        cleared: int = self._call(run)
        return cleared

    # -- the fleet's tag index ---------------------------------------------------------
    def _tag_key(self, tag: str) -> bytes:
        return b"tiercache-tag:" + self._bprefix + tag.encode("utf-8")

    def tag_add(self, pairs: Sequence[tuple[bytes, Sequence[str]]]) -> None:
        """Register ``(key, tags)`` in the fleet-wide tag index (one set per tag, outside
        ``<key_prefix>*``), so that any host's ``invalidate_tags`` finds every host's
        tagged entries."""
        if not pairs:
            return

        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for key, tags in pairs:
                for t in tags:
                    pipe.sadd(self._tag_key(t), key)
            pipe.execute()

        self._call(run)

    def tag_pop(self, tags: Sequence[str]) -> list[bytes]:
        """Every key registered under ``tags`` in the fleet-wide index, forgetting them."""
        if not tags:
            return []

        def run(client: Any) -> list[bytes]:
            pipe = client.pipeline(transaction=False)
            for t in tags:
                pipe.smembers(self._tag_key(t))
                pipe.unlink(self._tag_key(t))
            replies = pipe.execute()
            found: set[bytes] = set()
            for members in replies[0::2]:
                found.update(m for m in members if len(m) == 16)
            return sorted(found)

        keys: list[bytes] = self._call(run)
        return keys

    # -- the invalidation stream (tiercache/invalidation.py) --------------------------
    @property
    def stream_key(self) -> bytes:
        """The fleet's invalidation stream: outside ``<key_prefix>*`` (so ``clear``
        keeps it), one per prefix."""
        return b"tiercache-inv:" + self._bprefix

    @property
    def epoch_key(self) -> bytes:
        """A random token created with the stream: a new one means its history is gone."""
        return b"tiercache-inv-epoch:" + self._bprefix

    def _xadd(self, pipe: Any, fields: dict[bytes, bytes], maxlen: int) -> None:
        pipe.xadd(self.stream_key, fields, maxlen=maxlen, approximate=True)

    def stream_add(self, fields: dict[bytes, bytes], maxlen: int) -> bytes:
        """``XADD`` one entry (trimmed approximately to ``maxlen``); its id."""
        sid: bytes = self._call(
            lambda c: c.xadd(self.stream_key, fields, maxlen=maxlen, approximate=True)
        )
        return sid

    def listener(self, block: float) -> RedisTier:
        """A second connection for blocking stream reads (its timeout covers ``block``),
        with this tier's settings and record tags; the caller closes it."""
        tier = RedisTier(
            url=self._url if self._mode != "cluster" or not self._nodes else None,
            nodes=self._nodes,
            cluster="cluster" if self._is_cluster else self._mode,
            key_prefix=self.prefix,
            timeout=self.timeout + block,
            connect_timeout=self.connect_timeout,
            backoff_initial=self._backoff_initial,
            backoff_max=self._backoff_max,
            password=self._password,
        )
        tier._seal = self._seal  # the same keys (it is thread-safe)
        return tier

    def stream_epoch(self) -> bytes:
        """The stream's epoch token, created (``SET NX``) if there is none."""

        def run(client: Any) -> bytes:
            client.set(self.epoch_key, os.urandom(8).hex().encode(), nx=True)
            token: bytes = client.get(self.epoch_key)
            return token

        epoch: bytes = self._call(run)
        return epoch

    def stream_read(
        self, after: bytes, count: int, block_ms: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """``XREAD`` up to ``count`` entries after id ``after``, waiting ``block_ms``."""

        def run(client: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
            reply = client.xread({self.stream_key: after}, count=count, block=block_ms)
            if not reply:
                return []
            if isinstance(reply, dict):  # RESP3
                entries = next(iter(reply.values()))[0]
            else:
                entries = reply[0][1]
            return [(sid, dict(fields)) for sid, fields in entries]

        out: list[tuple[bytes, dict[bytes, bytes]]] = self._call(run)
        return out

    def stream_bounds(self) -> tuple[bytes | None, bytes | None]:
        """``(last id, highest id trimmed away)`` of the stream (None where there is
        none): a reader whose offset is below the second one missed entries."""

        def run(client: Any) -> tuple[bytes | None, bytes | None]:
            if not client.exists(self.stream_key):
                return None, None
            info = client.xinfo_stream(self.stream_key)
            last = info.get("last-generated-id") or info.get(b"last-generated-id")
            gone = info.get("max-deleted-entry-id") or info.get(b"max-deleted-entry-id")
            as_bytes = [v.encode() if isinstance(v, str) else v for v in (last, gone)]
            return as_bytes[0], as_bytes[1]

        bounds: tuple[bytes | None, bytes | None] = self._call(run)
        return bounds

    def ping(self) -> bool:
        """True if the server answers now (closes the breaker on success)."""
        try:
            return bool(self._call(lambda c: c.ping()))
        except Exception:
            return False

    def describe(self) -> dict[str, Any]:
        with self._lock:
            down = self._down
            until = self._down_until - self._clock() if down else 0.0
            forged = self.forged
        return {
            "state": "down" if down else "up",
            "retry_in_s": max(0.0, until),
            "outages": self.outages,
            "last_error": self.last_error,
            "cluster": self._is_cluster,
            "key_prefix": self.prefix,
            "auth": self._seal.mode,
            "forged": forged,
        }

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._owned:
            try:
                client.close()
            except Exception:  # pragma: no cover - best effort
                pass


__all__ = [
    "CLUSTER_MODES",
    "MIN_SECRET_BYTES",
    "TAG_BYTES",
    "RecordSeal",
    "RedisTier",
    "SharedUnavailable",
    "glob_escape",
]
