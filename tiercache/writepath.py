"""The one write path: every store, placement, demotion, eviction and removal.

Explicit writes (``set``, ``mset``, ``precompute``), stores after a recompute, placements of
shared-tier hits, promotions to hot and their demotions, the warm budget, shared writes,
drops and ``clear`` all go through :class:`WritePath`. It executes the policy engine's
decisions (``PolicyEngine.offer_hot``, ``warm_gate``, ``warm_victims``) and counts each
one by reason in the tiers' :class:`~tiercache.stats.TierStats`.

Failure rules: an explicit write (``forced``) or an invalidation that did not happen raises
:class:`~tiercache.errors.StoreError`; anything the cache does on its own behalf (a store
after a recompute, a demotion) is counted and never raised. The shared tier is fail-open
for writes and fail-loud for invalidations.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from time import perf_counter as _perf
from typing import Any, NoReturn, cast

import numpy as np

from . import codec, placement
from .context import MAX_TTL_SECONDS, CacheContext
from .errors import (
    InvalidContentError,
    InvalidTTLError,
    InvalidVectorError,
    StoreError,
    TierCacheError,
)
from .hotplace import HotPlacement
from .invalidation import Invalidation, stale_predicate
from .keys import Content
from .tags import TagIndex, check_tags, id_tag
from .tiers.memory import NEVER
from .tiers.redis import RedisTier, SharedUnavailable

try:  # the compiled row check (tiercache/_core_src/rows.c); numpy when it is not built
    from ._core import row_check as _row_check
except ImportError:  # pragma: no cover - the extension is optional for pip

    def _row_check(row: Any, /) -> int:
        return 1 if not np.isfinite(row).all() else (0 if row.any() else 2)


_BLOCK = 1024  # rows validated and encoded at a time by mset
_F32 = np.dtype(np.float32)
_ZERO = (
    "item {}: an all-zero vector has no direction, so it cannot be an embedding of this "
    "cache's normalized model (encoder.normalize: true)"
)

# (content, key, vector, expires_at or 0.0, blob): an entry on its way to the local tiers
Placed = tuple[Content, bytes, np.ndarray, float, bytes | None]


def check_encodable(
    content: Content, accepts: tuple[type, ...], index: int | None = None, utf8: bool = True
) -> None:
    """Refuse, before any encoding, what the encoder cannot take: another type than it
    accepts, or (``utf8``: the encoder's ``text_must_be_utf8``) text holding a lone
    surrogate (no UTF-8 form: tokenizers fail on it). Empty and whitespace-only text are
    encoded like any other (docs/architecture.md)."""
    where = f"item {index}: " if index is not None else ""
    if type(content) not in accepts:
        raise InvalidContentError(
            f"{where}the encoder takes "
            f"{', '.join(a.__name__ for a in accepts)}, not {type(content).__name__}"
        )
    if utf8 and type(content) is str and not content.isascii():
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidContentError(
                f"{where}text holds a lone surrogate ({content[exc.start]!r} at position "
                f"{exc.start}), which has no UTF-8 form and cannot be encoded"
            ) from None


def as_content(content: object, index: int | None = None) -> Content:
    """``content`` as exact ``str``/``bytes``: subclasses (numpy's ``str_``/``bytes_``
    included) are converted, anything else is :class:`InvalidContentError` (naming the
    item's ``index`` in a batch)."""
    t = type(content)
    if t is str or t is bytes:
        return content  # type: ignore[return-value]
    if isinstance(content, str):
        return str.__str__(content)
    if isinstance(content, bytes):
        return bytes(content)
    where = f"item {index}: " if index is not None else ""
    raise InvalidContentError(f"{where}content must be str or bytes, not {t.__name__}")


def as_contents(contents: object, what: str = "contents") -> list[Content]:
    """A batch argument as a list of exact ``str``/``bytes``: one str or bytes, None or a
    non-iterable is :class:`InvalidContentError` (a str would otherwise be read as a
    sequence of one-character contents)."""
    if contents is None or isinstance(contents, (str, bytes, bytearray, memoryview)):
        raise InvalidContentError(
            f"{what} must be a sequence of str or bytes, not "
            f"{'None' if contents is None else 'one ' + type(contents).__name__}"
            + ("" if contents is None else f" (wrap it in a list: [{what[:-1]}])")
        )
    try:
        items: list[Any] = list(cast(Iterable[Any], contents))
    except TypeError:
        raise InvalidContentError(
            f"{what} must be a sequence of str or bytes, not {type(contents).__name__}"
        ) from None
    if not _TEXT_TYPES.issuperset(map(type, items)):  # one C-level pass when all are text
        items = [as_content(c, i) for i, c in enumerate(items)]
    return items


_TEXT_TYPES = frozenset((str, bytes))


def check_ttl(ttl: float | None) -> float | None:
    """A validated TTL in seconds (None: no TTL)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidTTLError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0 or ttl > MAX_TTL_SECONDS:
        raise InvalidTTLError(f"ttl must be > 0 and <= {MAX_TTL_SECONDS:.0f} seconds, got {ttl}")
    return float(ttl)


def _item_tags(tags: Iterable[str] | None, doc_id: Any) -> list[str]:
    """An item's checked tags, its document id's reserved tag last."""
    out = check_tags(tags)
    if doc_id is not None:
        out.append(id_tag(doc_id))
    return out


class GroupCommit:
    """Durable writes from concurrent threads share one commit (and its fsync).

    A thread that finds no commit running leads: it takes every write queued so far (its
    own included), runs them as one ``commit(items)`` and hands each its outcome. Threads
    that arrive meanwhile queue and wait; when the commit ends, one of them leads the next
    round with all of theirs. A write is acknowledged only when the commit that holds it
    has returned (with ``durability: durable``, after LMDB's fsync), and a failed commit
    fails every write in it: nothing is acknowledged that was not committed.

    A leader that finds fewer writes queued than the recent rounds held (``peak``: the
    largest round, less one per round since) waits for the others, at most half the last
    commit's time (and 1 ms): the writers a commit released are still on their way back
    (returning, preparing the next write, one at a time under the GIL), and a round
    taken without them leaves them the next fsync of their own. Measured on the reference
    VM, 8 threads of single durable ``set``s: 4.5 writes per commit without the wait, 7.8
    with it. A lone writer (``peak`` 1) never waits.
    """

    MAX_WAIT = 0.001  # seconds a leader waits for the others, at most

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[list[Any]] = []  # [items, outcome, error, done]
        self._busy = False
        self._peak = 1  # writes in the largest recent round (decays by one per round)
        self._last = 0.0  # seconds the last commit took
        self.commits = 0  # rounds run (for tests and stats)

    def run(
        self, items: list[tuple[bytes, bytes]], commit: Callable[[list[tuple[bytes, bytes]]], bool]
    ) -> bool:
        me: list[Any] = [items, False, None, False]
        with self._cond:
            self._queue.append(me)
            if self._busy:
                self._cond.notify_all()  # a leader may be waiting for this write
            while self._busy and not me[3]:
                self._cond.wait()
            if not me[3]:  # lead this round: everything queued, in arrival order
                self._busy = True
                if len(self._queue) < self._peak:
                    self._gather_locked()
                batch, self._queue = self._queue, []
                self._peak = max(len(batch), self._peak - 1)
        if not me[3]:
            outcome, error = False, None
            t0 = _perf()
            try:
                merged = (
                    batch[0][0] if len(batch) == 1 else [it for entry in batch for it in entry[0]]
                )
                outcome = commit(merged)
            except BaseException as exc:  # every write of the round fails with it
                error = exc
            with self._cond:
                self._last = _perf() - t0
                for entry in batch:
                    entry[1], entry[2], entry[3] = outcome, error, True
                self._busy = False
                self.commits += 1
                self._cond.notify_all()
        if me[2] is not None:
            raise me[2]
        return bool(me[1])

    def _gather_locked(self) -> None:
        """Wait (the condition held, so writers can queue) until ``peak`` writes are
        queued, at most half the last commit's time."""
        end = _perf() + min(self._last * 0.5, self.MAX_WAIT)
        while len(self._queue) < self._peak:
            left = end - _perf()
            if left <= 0:
                return
            self._cond.wait(left)


class WritePath(HotPlacement):
    """Executes writes and the engine's placement decisions over the context's tiers
    (hot admissions, victims and removals: :mod:`tiercache.hotplace`)."""

    def __init__(self, ctx: CacheContext) -> None:
        self._ctx = ctx
        self._hot = ctx.hot
        self._warm = ctx.warm
        self._shared = ctx.shared
        self._engine = ctx.engine
        self._lock = ctx.lock
        self._codec = ctx.codec
        self.tags = TagIndex(ctx.warm, ctx.lock, self.raise_warm_fault)
        # what other processes on the warm store invalidated reaches this one's hot tier
        self.inval = Invalidation(
            ctx.warm, ctx.hot, ctx.lock, self.remove_hot_locked, self._clear_hot_locked
        )
        self._storer: ThreadPoolExecutor | None = None
        # explicit writes with durability durable share fsyncs across threads
        self.group = GroupCommit() if ctx.warm is not None and ctx.warm.durable else None

    def close(self) -> None:
        """Wait for the store of a computed chunk still running."""
        if self._storer is not None:
            self._storer.shutdown(wait=True)

    # -- faults ---------------------------------------------------------------------------
    def raise_warm_fault(self, exc: BaseException, message: str) -> NoReturn:
        """Count a warm-store failure and raise it typed: a ``TierCacheError`` as it is,
        anything else (an LMDB error, an OSError) as ``StoreError("<message>: <exc>")``.
        For the operations whose failure must never be silent (explicit writes, drops,
        clears, the tag index)."""
        with self._lock:
            self._ctx.s_warm.errors += 1
        if isinstance(exc, TierCacheError):
            raise exc
        raise StoreError(f"{message}: {exc!r}{self._full_disk_hint()}") from exc

    def _full_disk_hint(self) -> str:
        """LMDB reports a short write to a full disk as EIO: name the real cause."""
        warm = self._warm
        try:
            st = os.statvfs(warm.path) if warm is not None else None
        except OSError:
            return ""
        if st is not None and st.f_bavail * st.f_frsize < 64 * 1024:
            return " (No space left on device: the filesystem holding the warm store is full)"
        return ""

    def promote_locked(self, items: list[Placed], epoch: int) -> list[tuple[bytes, bytes]]:
        """Offer warm hits ``(content, key, vector, expires_at, blob)``, read when the
        invalidation log stood at ``epoch``, to hot (those invalidated since are not)."""
        demote: list[tuple[bytes, bytes]] = []
        if self._hot.capacity == 0:
            return demote
        touched = self.inval.touched
        for c, k, vector, expires_at, blob in items:
            if not touched(k, epoch):
                demote += self.admit_hot_locked(
                    c, k, vector, expires_at or NEVER, blob, in_warm=True
                )
        return demote

    def place_local(
        self,
        entries: list[Placed],
        *,
        promoted: bool,
        epoch: int,
        records: list[bytes] | None = None,
    ) -> None:
        """Write ``(content, key, vector, expires_at, blob)`` to warm (per the warm gate)
        and offer them to hot. ``promoted``: they came from the shared tier (counted as
        warm promotions). ``epoch``: the invalidation log's number when they were read or
        encoded (what was invalidated since is put nowhere). ``records``: the entries
        already encoded with this cache's codec, one per entry (else they are encoded
        here, for the gated ones)."""
        warm = self._warm
        if self.inval.blocked:  # warm was not read: a store-back could hide a newer record
            warm = None
        with self._lock:
            gate = placement.warm_admits(
                self._engine, [e[1] for e in entries], has_warm=warm is not None
            )
            if warm is not None:
                self._ctx.s_warm.rejections["min_frequency"] += gate.count(False)
        if records is None:
            warm_items = [
                (k, codec.encode_record(v, self._codec, exp, blob, key=k))
                for (_, k, v, exp, blob), g in zip(entries, gate)
                if g
            ]
        else:
            warm_items = [(e[1], rec) for e, rec, g in zip(entries, records, gate) if g]
        written = (
            self.warm_write(warm_items, forced=False, epoch=epoch)
            if warm_items and warm is not None
            else False
        )
        in_warm = [g and written for g in gate]
        if promoted and written:
            with self._lock:
                self._ctx.s_warm.promotions += len(warm_items)
        if self._hot.capacity == 0:
            return
        demote: list[tuple[bytes, bytes]] = []
        touched = self.inval.touched
        with self._lock:
            for (c, k, v, exp, blob), w in zip(entries, in_warm):
                if not touched(k, epoch):
                    demote += self.admit_hot_locked(c, k, v, exp or NEVER, blob, in_warm=w)
            now = self.inval.applied
        if demote:
            self.warm_write(demote, forced=False, epoch=now)

    # -- warm -----------------------------------------------------------------------------
    def warm_write(
        self, items: list[tuple[bytes, bytes]], *, forced: bool, epoch: int | None = None
    ) -> bool:
        """Write records to warm, evicting per policy to respect the budget.

        Returns False if the write failed (counted; the caller still gets its vectors).
        ``forced`` writes (explicit ``set``) raise instead, so an acknowledged write is
        never silently dropped; with ``durability: durable`` concurrent forced writes
        share one commit and fsync (:class:`GroupCommit`). A forced write is logged as an
        invalidation of the keys (other processes drop their hot copies). ``epoch``
        (writes on the cache's own behalf: store-backs, demotions): the invalidation
        log's number when the records were read or taken from hot under the lock; keys
        logged since are skipped inside the write transaction.
        """
        if forced and self.group is not None and items:
            return self.group.run(items, self._warm_write_forced)
        return self._warm_write(items, forced=forced, epoch=epoch)

    def _warm_write_forced(self, items: list[tuple[bytes, bytes]]) -> bool:
        return self._warm_write(items, forced=True)

    def _warm_write(
        self, items: list[tuple[bytes, bytes]], *, forced: bool, epoch: int | None = None
    ) -> bool:
        warm = self._warm
        if warm is None or not items:
            return False
        inval = self.inval
        keys = [k for k, _ in items] if forced else []
        log = inval.entry(keys, event="set") if forced else None
        engine = self._engine
        lock = self._lock
        victims: list[bytes] = []

        def choose(excess: int, sample: Callable[[Sequence[bytes]], list[bytes]]) -> list[bytes]:
            # runs inside the warm write transaction (serialised across processes)
            nonlocal victims
            new_keys = {k for k, _ in items}
            limit = min(excess, len(new_keys) + engine.max_evictions_per_write)
            with lock:
                probes = engine.warm_probes(limit * engine.eviction_samples)
            sampled = sample(probes)
            with lock:
                victims = engine.warm_victims(
                    sampled, excess, protect=new_keys, batch=len(new_keys)
                )
            return victims

        try:
            logged: list[int] = []
            deleted = warm.put_bounded(
                items,
                engine.warm_capacity,
                choose,
                log=log,
                since=epoch,
                stale=stale_predicate if epoch is not None else None,
                logged=logged,
            )
            if log is not None and logged:
                inval.own(logged[0], log, keys)  # this process's own entry: its keys "touched"
            with lock:
                s_warm = self._ctx.s_warm
                s_warm.writes += len(items)
                s_warm.evictions["capacity"] += deleted
                for v in victims:  # the hot copy of a warm victim is no longer backed
                    slot = self._hot.slot_of_key(v)
                    if slot is not None:
                        self._hot.mark_in_warm(slot, False)
            return True
        except Exception as exc:
            if forced:
                self.raise_warm_fault(exc, "warm write failed, nothing was stored")
            with lock:
                self._ctx.s_warm.errors += 1
            return False

    def warm_delete(self, keys: list[bytes]) -> int:
        """Delete records the cache found dead (expired); failures are counted."""
        if self._warm is None or not keys:
            return 0
        try:
            return self._warm.delete_many(keys)
        except Exception:
            with self._lock:
                self._ctx.s_warm.errors += 1
            return 0

    # -- shared ---------------------------------------------------------------------------
    def shared_items(
        self, entries: list[tuple[bytes, bytes, float]]
    ) -> list[tuple[bytes, bytes, int | None]]:
        """``(key, record, expires_at)`` as Redis writes them: ``(key, record, ttl_ms)``
        with the shared tier's TTL limit, entries already expired left out."""
        now = self._ctx.clock()
        limit = self._ctx.shared_ttl
        items: list[tuple[bytes, bytes, int | None]] = []
        for k, record, expires_at in entries:
            ttl = limit
            if expires_at:
                left = expires_at - now
                if left <= 0:
                    continue
                ttl = left if ttl is None else min(ttl, left)
            items.append((k, record, None if ttl is None else max(1, int(ttl * 1000))))
        return items

    def shared_write(
        self,
        entries: list[tuple[bytes, bytes, float]],
        event: tuple[dict[bytes, bytes], int] | None = None,
    ) -> list[tuple[bytes, bytes, int | None]] | None:
        """Write ``(key, record, expires_at)`` to Redis with their TTL; fail-open: returns
        what could not be written, as ``(key, record, ttl_ms)`` (an explicit write queues
        it with its fleet event); None when there was nothing to write (no pipeline ran,
        so no ``event`` went). ``event``: a fleet stream entry sent in the same pipeline
        (:meth:`Invalidation.event`)."""
        shared = self._shared
        if shared is None or not entries:
            return None
        items = self.shared_items(entries)
        if not items:
            return None
        t0 = _perf()
        try:
            shared.put_many(items, event=event)
        except Exception as exc:
            with self._lock:
                if isinstance(exc, SharedUnavailable):
                    self._ctx.s_shared.skipped += len(items)
                else:
                    self._ctx.s_shared.errors += 1
            return items
        with self._lock:
            self._ctx.s_shared.writes += len(items)
            self._ctx.s_shared.latency.add(_perf() - t0)
        return []

    def shared_call(self, what: str, fn: Callable[[RedisTier], Any]) -> Any:
        """An invalidating call on Redis (drop, clear): failures raise StoreError, since a
        delete that did not happen would let other hosts serve the entry again."""
        assert self._shared is not None
        try:
            return fn(self._shared)
        except Exception as exc:
            with self._lock:
                self._ctx.s_shared.errors += 1
            raise StoreError(
                f"{what}: the local tiers are done, but the shared tier (Redis) could not be "
                f"reached, so other hosts may still serve these entries: {exc}"
            ) from exc

    # -- stores after a recompute -----------------------------------------------------------
    def store_pool(self) -> ThreadPoolExecutor:
        """The single thread that stores computed chunks while the next one is encoded."""
        with self._lock:
            if self._storer is None:
                self._storer = ThreadPoolExecutor(1, thread_name_prefix="tiercache-store")
            return self._storer

    def store_computed(
        self,
        chunk: list[tuple[bytes, Content, Future[np.ndarray]]],
        matrix: np.ndarray,
        epoch: int,
    ) -> None:
        """Place a chunk of freshly encoded vectors (warm per gate, hot per admission,
        shared per ``shared.min_frequency``); ``epoch``: the invalidation log's number
        when the encoding began (an explicit write logged since wins)."""
        ctx = self._ctx
        now = ctx.clock()
        ttl = ctx.default_ttl
        expires = now + ttl if ttl else 0.0
        store_text = ctx.store_text
        blobs = [codec.pack_blob(None, c) if store_text else None for _, c, _ in chunk]
        entries = [(c, k, matrix[i], expires, blobs[i]) for i, (k, c, _) in enumerate(chunk)]
        # encoded once, for warm and shared alike
        records = codec.encode_records(
            matrix, self._codec, expires, blobs, keys=[k for k, _, _ in chunk]
        )
        self.place_local(entries, promoted=False, epoch=epoch, records=records)
        if self._shared is not None:
            min_f = ctx.shared_min_frequency
            if min_f:
                with self._lock:
                    share = [self._engine.frequency(k) >= min_f for _, k, _, _, _ in entries]
                    ctx.s_shared.rejections["min_frequency"] += share.count(False)
            else:
                share = [True] * len(entries)
            self.shared_write(
                [(e[1], rec, expires) for e, rec, ok in zip(entries, records, share) if ok]
            )

    # -- explicit writes ------------------------------------------------------------------
    def validate_vector(self, vector: Any) -> np.ndarray:
        """``vector`` as a finite float32 array of shape ``(dim,)``, or InvalidVectorError."""
        dim = self._ctx.dim
        try:
            arr = np.asarray(vector)
        except Exception as exc:
            raise InvalidVectorError(f"not an array: {exc}") from exc
        if arr.dtype.kind != "f":
            raise InvalidVectorError(f"vector dtype must be floating point, not {arr.dtype}")
        if arr.shape != (dim,):
            raise InvalidVectorError(f"vector shape must be ({dim},), not {arr.shape}")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise InvalidVectorError("vector holds NaN or infinite values")
        return arr

    def mset(
        self, items: Iterable[Any], *, ttl: float | None = None, tags: Iterable[str] | None = None
    ) -> list[str]:
        """``TierCache.mset`` (see there): validate every item, then write them all."""
        ctx = self._ctx
        default_ttl = check_ttl(ttl) if ttl is not None else ctx.default_ttl
        now = ctx.clock()
        common = check_tags(tags)
        if not isinstance(items, list):
            items = list(items)
        bulk = self._bulk(items, now + default_ttl if default_ttl else 0.0, common)
        if bulk is not None:
            return self.write_entries(*bulk)
        contents: list[Content] = []
        rows: list[np.ndarray] = []
        expiries: list[float] = []
        blobs: list[bytes | None] = []
        item_tags: list[list[str]] = []
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
                extra = _item_tags(item.get("tags"), item.get("doc_id"))
            else:
                parts = tuple(item)
                if not 2 <= len(parts) <= 4:
                    raise InvalidVectorError("items are (content, vector[, metadata[, ttl]])")
                content, vector = parts[0], parts[1]
                metadata = parts[2] if len(parts) > 2 else None
                item_ttl = parts[3] if len(parts) > 3 else None
            life = default_ttl if item_ttl is None else check_ttl(item_ttl)
            entry = self._entry(content, vector, metadata, life, now, len(contents))
            contents.append(entry[0])
            rows.append(entry[1])
            expiries.append(entry[2])
            blobs.append(entry[3])
            item_tags.append(common + extra if extra or common else no_tags)
        if not contents:
            return []
        if len(contents) == 1:
            return [self.write_one(contents[0], rows[0], expiries[0], blobs[0], item_tags[0])]
        return self.write_entries(contents, rows, expiries, blobs, item_tags)

    def _bulk(
        self, items: list[Any], expires: float, tags: list[str]
    ) -> (
        tuple[list[Content], list[np.ndarray], list[float], list[bytes | None], list[list[str]]]
        | None
    ):
        """``mset``'s checked entries of a batch in the bulk shape, without the general
        loop: at least two ``(str or bytes, float32 array of this dim)`` pairs, no text
        stored; ``write_entries`` checks finiteness and zero vectors for the whole batch.
        ``None`` for anything else (the general loop checks it item by item and names the
        item at fault)."""
        if len(items) < 2 or self._ctx.store_text:
            return None
        dim = (self._ctx.dim,)
        f32 = _F32
        contents: list[Content] = []
        rows: list[np.ndarray] = []
        for item in items:
            if type(item) is not tuple or len(item) != 2:
                return None
            content, vector = item
            if (type(content) is not str and type(content) is not bytes) or not (
                type(vector) is np.ndarray and vector.dtype == f32 and vector.shape == dim
            ):
                return None
            contents.append(content)
            rows.append(vector)
        n = len(contents)
        return contents, rows, [expires] * n, [None] * n, [tags] * n

    def set_one(
        self,
        content: Content,
        vector: Any,
        metadata: Any,
        ttl: float | None,
        tags: Iterable[str] | None,
        doc_id: Any,
    ) -> str:
        """``TierCache.set``: :meth:`mset` of one item without the batch machinery (one
        record encoded, no stacking); the same checks, order of writes and failures."""
        ctx = self._ctx
        life = ctx.default_ttl if ttl is None else check_ttl(ttl)
        content, vector, expires, blob = self._entry(content, vector, metadata, life, ctx.clock())
        return self.write_one(content, vector, expires, blob, _item_tags(tags, doc_id))

    def _entry(
        self,
        content: Any,
        vector: Any,
        metadata: Any,
        life: float | None,
        now: float,
        index: int | None = None,
    ) -> tuple[Content, np.ndarray, float, bytes | None]:
        """One item of an explicit write, checked: ``(content, float32 vector, expires_at,
        blob)``. ``index``: the item's position, named in a batch's errors."""
        if type(content) is not str and type(content) is not bytes:
            content = as_content(content, index)
        if not (
            type(vector) is np.ndarray
            and vector.dtype == np.float32
            and vector.shape == (self._ctx.dim,)
        ):
            vector = self.validate_vector(vector)  # converts, or raises
        store_text = self._ctx.store_text
        blob = (
            codec.pack_blob(metadata, content if store_text else None)
            if metadata is not None or store_text
            else None
        )
        return content, vector, now + life if life else 0.0, blob

    def write_one(
        self,
        content: Content,
        vector: np.ndarray,
        expires: float,
        blob: bytes | None,
        item_tags: list[str],
    ) -> str:
        """:meth:`write_entries` of one validated entry (a float32 vector of this dim):
        one record encoded, nothing stacked. Returns the public key."""
        ctx = self._ctx
        bad = _row_check(vector)  # 1 NaN or infinite, 2 all zero
        if bad == 1:
            raise InvalidVectorError("item 0: vector holds NaN or infinite values")
        if bad == 2 and ctx.fingerprint.normalize:
            raise InvalidVectorError(_ZERO.format(0))
        key = ctx.keys.digest(content)
        record = codec.encode_record(vector, self._codec, expires, blob, key=key)
        self._persist([(key, record)], [expires], [item_tags])
        hot = self._hot
        if hot.capacity or (len(hot) and hot.slot_of_key(key) is not None):
            with self._lock:  # the slab takes its own copy of the vector
                demote = self.admit_hot_locked(
                    content, key, vector, expires or NEVER, blob, in_warm=self._warm is not None
                )
                now = self.inval.applied
            if demote:
                self.warm_write(demote, forced=False, epoch=now)
        return key.hex()  # key_to_str

    def add_tags(self, pairs: list[tuple[bytes, list[str]]]) -> None:
        """Register ``(key, tags)`` in this host's tag index and in the fleet-wide one in
        Redis (fail-open, counted: an outage leaves the tags to this host's index)."""
        self.tags.add(pairs)
        if self._shared is not None:
            try:
                self._shared.tag_add(pairs)
            except Exception:
                with self._lock:
                    self._ctx.s_shared.errors += 1

    def _persist(
        self,
        records: list[tuple[bytes, bytes]],
        expiries: list[float],
        item_tags: list[list[str]],
    ) -> None:
        """An explicit write's records, in order: the tag index first (a crash leaves a
        stale tag, never an untagged entry), warm (committed; raises on failure), shared
        (fail-open)."""
        if any(item_tags):
            self.add_tags([(k, t) for (k, _), t in zip(records, item_tags) if t])
        if self._warm is not None:
            self.warm_write(records, forced=True)
        if self._shared is not None:
            keys = [k for k, _ in records]
            entries = [(k, rec, exp) for (k, rec), exp in zip(records, expiries)]
            # the fleet's event rides in the records' pipeline; other hosts drop their
            # copies and read Redis: what Redis did not take is queued with the event
            # and written first when it answers again
            event = self.inval.event(keys, event="set")
            if event is None and self.inval.queued():
                # earlier invalidations still wait for Redis: this write goes behind them
                # (written now, the flush would put an older queued record over it)
                items = self.shared_items(entries)
                self.inval.publish(keys, event="set", records=items)
                if not self.inval.flush_queue():  # sent now, in order, or left queued
                    with self._lock:
                        self._ctx.s_shared.skipped += len(items)
                return
            failed = self.shared_write(entries, event)
            if event is not None and failed == []:
                self.inval.sent()
            else:
                self.inval.publish(keys, event="set", records=failed or ())

    def write_entries(
        self,
        contents: list[Content],
        rows: list[np.ndarray],
        expiries: list[float],
        blobs: list[bytes | None],
        item_tags: list[list[str]],
    ) -> list[str]:
        """Write validated entries: tag index, warm (committed, raising on failure),
        shared (fail-open), then hot (refreshed or offered). Returns the public keys."""
        hot = self._hot
        keep = bool(hot.capacity or len(hot))  # hot off and empty (a bulk load): no refresh
        # validated and encoded in blocks: a new 15 MB matrix costs ~13 ms of page faults on
        # the reference VM (a few us per 4 KiB page); a 1.5 MB block freed before the next
        # is recycled by malloc. Nothing is written before every block has validated.
        blocks: list[np.ndarray] = []  # the cache's own copy of every vector, if hot needs it
        encoded: list[bytes] = []
        keys = self._ctx.keys.digests(contents)
        for a in range(0, len(rows), _BLOCK):
            block = np.stack(rows[a : a + _BLOCK])
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                bad = a + int(np.flatnonzero(~finite)[0])
                raise InvalidVectorError(f"item {bad}: vector holds NaN or infinite values")
            if self._ctx.fingerprint.normalize:
                nonzero = block.any(axis=1)
                if not nonzero.all():
                    raise InvalidVectorError(_ZERO.format(a + int(np.flatnonzero(~nonzero)[0])))
            encoded += codec.encode_records(
                block,
                self._codec,
                expiries[a : a + _BLOCK],
                blobs[a : a + _BLOCK],
                keys=keys[a : a + _BLOCK],
            )
            if keep:
                blocks.append(block)
        self._persist(list(zip(keys, encoded)), expiries, item_tags)
        demote: list[tuple[bytes, bytes]] = []
        if keep:
            in_warm = self._warm is not None
            with self._lock:
                for b, block in enumerate(blocks):  # no whole-batch matrix (see above)
                    a = b * _BLOCK
                    part = slice(a, a + len(block))
                    if hot.capacity:
                        demote += self.admit_hot_many_locked(
                            contents[part], keys[part], block, expiries[part], blobs[part], in_warm
                        )
                        continue
                    for i, k in enumerate(keys[part]):  # hot off but not empty: refresh
                        if hot.slot_of_key(k) is not None:
                            demote += self.admit_hot_locked(
                                contents[a + i],
                                k,
                                block[i],
                                expiries[a + i] or NEVER,
                                blobs[a + i],
                                in_warm,
                            )
                now = self.inval.applied
        if demote:
            self.warm_write(demote, forced=False, epoch=now)
        return [k.hex() for k in keys]  # key_to_str

    # -- removals -------------------------------------------------------------------------
    def drop_keys(self, keys: list[bytes], reason: str, what: str, tags: Sequence[str] = ()) -> int:
        """Remove ``keys`` from every tier, counting ``evictions[reason]`` per tier; returns
        how many were removed from at least one. A delete that did not happen is never
        silent: warm or shared failures raise :class:`StoreError` (after the local tiers).
        The removal is logged (with ``tags``, for result caches) in the warm store's
        invalidation log, so other processes on the store drop their hot copies, and then
        published to the fleet.

        Order: hot, then Redis, then warm with its log entry. A process of this host that
        catches up on the entry and looks further must not find the old record in Redis
        (it would put it back); until the entry is logged, the old vector is what a
        concurrent read may return anyway."""
        ctx = self._ctx
        removed: set[bytes] = set()
        with self._lock:
            for k in keys:
                if self._hot.delete_key(k):
                    self._engine.remove_hot(k)
                    ctx.s_hot.evictions[reason] += 1
                    removed.add(k)
        shared_exc: StoreError | None = None
        event = None
        behind = False  # the shared delete goes behind invalidations still queued
        if self._shared is not None:
            # the fleet's event rides in the delete's pipeline (one round trip); the
            # processes of this host learn of it from the warm log below
            event = self.inval.event(keys, tags=tags, event=what) if keys else None
            behind = event is None and bool(keys) and self.inval.queued()
        if self._shared is not None and not behind:
            try:
                flags = self.shared_call(what, lambda r: r.delete_each(keys, event=event))
            except StoreError as exc:
                shared_exc = exc
            else:
                gone = [k for k, g in zip(keys, flags) if g]
                with self._lock:
                    ctx.s_shared.evictions[reason] += len(gone)
                removed.update(gone)
        if self._warm is not None:
            log = self.inval.entry(keys, tags=tags, event=what)
            try:
                logged: list[int] = []
                flags = self._warm.delete_each(keys, log=log, logged=logged)
            except Exception as exc:
                self.raise_warm_fault(exc, f"{what}: the warm store could not be updated")
            if log is not None and logged:  # this process's own entry, as a set's
                self.inval.own(logged[0], log)
            else:
                self.inval.sync()
            gone = [k for k, g in zip(keys, flags) if g]
            with self._lock:
                ctx.s_warm.evictions[reason] += len(gone)
            removed.update(gone)
        if shared_exc is not None:
            self._queue_shared(shared_exc, keys, tags=tags, event=what)
        if event is not None:
            self.inval.sent()
        elif behind:
            self._delete_behind(keys, tags, what)
        elif self._shared is not None:
            self.inval.publish(keys, tags=tags, event=what)
        if self._warm is None and tags:  # no log to carry them to this process's results
            self.inval.results_here(list(tags))
        return len(removed)

    def _delete_behind(self, keys: list[bytes], tags: Sequence[str], what: str) -> None:
        """A drop made while earlier invalidations wait for Redis: its Redis delete goes
        behind them (made at once, a queued record of these keys written after it would
        bring them back), and the queue is sent now; raises, as a failed delete does, when
        Redis did not take it (it stays queued)."""
        self.inval.publish(keys, tags=tags, event=what, shared_pending=True)
        if not self.inval.flush_queue():  # deleted in Redis now, in order, or left queued
            with self._lock:
                self._ctx.s_shared.errors += 1
            raise StoreError(
                f"{what}: the local tiers are done, but the shared tier (Redis) could not be "
                "reached, so other hosts may still serve these entries (queued: this process "
                "deletes them from Redis and tells every host as soon as Redis answers)"
            )

    def redrop(self, keys: list[bytes]) -> None:
        """Drop ``keys`` from this host again (hot, and warm with a log entry): a queued
        invalidation just reached Redis, and a process of this host may have read the
        old record from Redis before it did."""
        with self._lock:
            for k in keys:
                self.remove_hot_locked(k, "invalidated")
        if self._warm is not None:
            self._warm.delete_each(keys, log=self.inval.entry(keys, event="redrop"))
            self.inval.sync()

    def _queue_shared(
        self,
        exc: StoreError,
        keys: list[bytes],
        *,
        tags: Sequence[str] = (),
        clear: bool = False,
        event: str,
    ) -> NoReturn:
        """Redis was unreachable for an invalidation: with a fleet channel, queue it (the
        shared delete first, then the event, once Redis answers) and say so; raise."""
        if self.inval.fleet is None:
            raise exc
        self.inval.publish(keys, tags=tags, clear=clear, event=event, shared_pending=True)
        raise StoreError(
            f"{exc} (queued: this process deletes them from Redis and tells every host as "
            "soon as Redis answers)"
        ) from exc

    def invalidate_tags(self, tags: list[str]) -> int:
        """Drop every key registered under ``tags`` (forgetting the registrations)."""
        found = self.tags.keys(tags, remove=True)
        if self._shared is not None:  # what other hosts tagged too
            try:
                found.update(self._shared.tag_pop(tags))
            except Exception:  # the shared delete below raises, after the local tiers
                with self._lock:
                    self._ctx.s_shared.errors += 1
        keys = sorted(found)
        # logged even when no vector carries them: result caches of other processes may
        return self.drop_keys(keys, "invalidated", "invalidate_tags", tags)

    def results_event(self, tags: list[str]) -> None:
        """Tags that invalidate search results only (a document created: no vector of it
        exists, and the vectors its tags name stay): logged for this store's processes
        and published to the fleet as such."""
        if self._warm is not None:
            try:
                self._warm.append_log(self.inval.entry(tags=tags, event="created") or b"")
            except Exception as exc:
                self.raise_warm_fault(exc, "document_event: the warm store could not be told")
            self.inval.sync()
        else:
            self.inval.results_here(tags)
        if self._shared is not None:
            self.inval.publish(tags=tags, event="created")

    def clear(self) -> None:
        """Empty hot, the shared prefix, then the warm store directory (and its tag
        index): Redis before the logged warm clear, as in :meth:`drop_keys`."""
        shared_exc: StoreError | None = None
        if self._shared is not None:
            try:
                n = self.shared_call("clear", lambda r: r.clear())
            except StoreError as exc:
                shared_exc = exc
            else:
                with self._lock:
                    self._ctx.s_shared.evictions["dropped"] += n
        self.clear_local("dropped", "clear")
        self.tags.clear()
        if shared_exc is not None:
            self._queue_shared(shared_exc, [], clear=True, event="clear")
        if self._shared is not None:
            self.inval.publish(clear=True, event="clear")

    def clear_local(self, reason: str = "invalidated", event: str = "resync") -> None:
        """Empty hot and the warm store (a logged clear), keeping the shared tier and the
        tag index: :meth:`clear`'s first half, and what a host does when it may have
        missed invalidations (``Fleet``). A warm failure raises :class:`StoreError`."""
        with self._lock:
            self._clear_hot_locked(reason)
        if self._warm is not None:
            try:
                self._warm.clear(log=self.inval.entry(clear=True, event=event))
                self.inval.sync()
            except Exception as exc:
                self.raise_warm_fault(exc, f"{event}: the warm store could not be cleared")


__all__ = [
    "Placed",
    "WritePath",
    "as_content",
    "as_contents",
    "check_encodable",
    "check_ttl",
]
