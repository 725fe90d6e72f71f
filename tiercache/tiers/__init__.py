"""Storage tiers: dumb, batch-first stores. Capacity and victims are the engine's job.

Three protocols say what the tiers have in common and where they differ; each tier is
checked against the ones it claims by mypy (``_claims`` below, never run) and runs the
matching contract tests (``tests/test_tiers.py``, one class per protocol):

- :class:`KeyedTier`, true of every tier: the hot :class:`~.memory.MemoryTier`, the warm
  :class:`~.lmdb.LmdbTier` and the shared :class:`~.redis.RedisTier`. Entries are named
  by 16-byte digests (:mod:`tiercache.keys`); ``delete_many``, ``keys``, ``count``,
  ``clear``, ``close``.
- :class:`RecordStore` (warm, shared): a :class:`KeyedTier` of encoded records
  (:mod:`tiercache.codec`) read and written by digest.
- :class:`VectorStore` (hot): a :class:`KeyedTier` of float32 rows, read by exact
  content (a hot hit computes no digest) into slots, gathered as copies.

What to store where is never a tier's decision: the write path tells each tier what to
put and what to delete; a tier never evicts on its own. For speed the read path also
reads below these protocols: its compiled readers (``tiercache._core``) read the hot
tier's slab and maps and the warm environment directly, and its Python fallback the hot
maps; the hot layout is :class:`~.memory.MemoryTier`'s, documented there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from ..keys import Content
    from .lmdb import LmdbTier
    from .memory import MemoryTier
    from .redis import RedisTier


class KeyedTier(Protocol):
    """What every tier offers: entries named by 16-byte digests, batch-first.

    - ``delete_many(keys)``: removes those stored; returns how many of ``keys`` were
      stored (a key given twice counts once; an absent key is ignored; ``[]`` -> 0).
    - ``keys()``: every stored key, in no promised order (LMDB: sorted, read in short
      transactions; Redis: a ``SCAN``, which may repeat a key while the server resizes
      its keyspace). A key written or deleted during the iteration may or may not appear.
    - ``count()``: the number of stored entries (Redis: a ``SCAN``, O(n)).
    - ``clear()``: removes every entry of this tier (of its namespace, its key prefix);
      what it returns is the tier's own (Redis: keys unlinked), not part of the protocol.
    - ``close()``: releases the tier's resources (the hot tier drops its entries).

    Thread-safety: the hot and warm tiers are thread-safe; the shared tier's client is.
    Faults: the warm tier raises :class:`~tiercache.errors.StoreError`, the shared tier
    ``SharedUnavailable`` when Redis is down; the write path counts them.
    """

    def delete_many(self, keys: Sequence[bytes]) -> int: ...

    def keys(self) -> Iterator[bytes]: ...

    def count(self) -> int: ...

    def clear(self) -> object: ...

    def close(self) -> None: ...


class RecordStore(KeyedTier, Protocol):
    """A tier of byte records (the warm LMDB tier, the shared Redis tier).

    Values are encoded records (:mod:`tiercache.codec`); the store does not look inside.

    - ``get_many(keys)``: the records of ``keys`` in input order, ``None`` where absent
      (or, in Redis, refused: a record whose tag does not verify). Each is a new
      ``bytes`` object: never a buffer into the store that a later write could change.
    - ``put_many(items)``: writes ``(key, record)`` pairs; a stored key is overwritten (a
      key given twice keeps its last record); ``[]`` writes nothing. LMDB writes a batch
      in one transaction (all or nothing); Redis in one pipeline.
    - ``delete_each(keys)``: ``delete_many`` that says, in input order, whether each key
      was stored (a key given twice: ``False`` the second time). Both tiers take an
      invalidation-log entry written with the deletes as a keyword of their own.
    """

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None: ...

    def delete_each(self, keys: Sequence[bytes]) -> list[bool]: ...


class VectorStore(KeyedTier, Protocol):
    """A tier of float32 vectors in a fixed number of slots (the hot tier).

    An entry is a row of a ``(capacity, dim)`` slab, found by its exact content (``str``
    or ``bytes``, never equal to each other: a hot hit computes no digest) and by its
    digest (how the engine names victims). Reads are two steps, as the read path's
    compiled gather does them: the slots of a batch, then one gather of their rows.

    - ``get_many(contents)``: the slots of ``contents`` in input order, ``None`` where
      absent. A slot names the entry until it is deleted; a caller that must not see
      the slot reused in between holds the tier's lock (``MemoryTier.lock``) across both
      steps.
    - ``gather(slots)``: a new ``(len(slots), dim)`` float32 array, rows in input order.
      No aliasing: it is a copy, never a view of the slab, so reusing a slot later
      never changes what a caller holds.
    - ``put_many(contents, keys, matrix, expires_at, metas, in_warm)``: stores or
      overwrites (by digest) one entry per row of ``matrix`` (copied in; the caller may
      reuse it); returns the slots in input order. Never evicts: with no free slot it
      raises ``RuntimeError`` (the engine evicts first). ``expires_at``: absolute
      seconds on the cache's clock (``inf``: never); ``metas``: encoded metadata or
      ``None``; ``in_warm``: whether the warm tier holds a copy (demoting it is free).
    - ``slot_of_key(key)``: the slot of a digest, ``None`` where absent.
    """

    @property
    def dim(self) -> int: ...

    @property
    def capacity(self) -> int: ...

    def get_many(self, contents: Sequence[Content]) -> list[int | None]: ...

    def gather(self, slots: Sequence[int]) -> np.ndarray: ...

    def put_many(
        self,
        contents: Sequence[Content],
        keys: Sequence[bytes],
        matrix: np.ndarray,
        expires_at: Sequence[float],
        metas: Sequence[bytes | None],
        in_warm: Sequence[bool],
    ) -> list[int]: ...

    def slot_of_key(self, key: bytes) -> int | None: ...


if TYPE_CHECKING:

    def _claims(
        hot: MemoryTier, warm: LmdbTier, shared: RedisTier
    ) -> tuple[VectorStore, RecordStore, RecordStore, list[KeyedTier]]:
        """Each tier satisfies the protocols it claims: checked by mypy, never run."""
        return hot, warm, shared, [hot, warm, shared]
