"""The hot tier: an in-process slab of float32 rows, indexed by exact content.

A preallocated numpy slab (``capacity x dim``; untouched pages cost nothing until used)
plus two maps: content -> slot (so a hot hit needs no digest: Python's ``str``/``bytes``
hash is randomised per process and equality-checked, hence exact and flood-resistant) and
digest -> slot (so the policy engine, which speaks in digests, can name victims).

It is the :class:`~tiercache.tiers.VectorStore` protocol's tier (hence a
:class:`~tiercache.tiers.KeyedTier`; checked by mypy, contract tests in
tests/test_tiers.py): batch reads in two steps (``get_many``: slots, ``gather``: copies of
their rows), ``put_many``, ``delete_many``, ``keys``. The write path admits and removes
one entry at a time (``put``, ``delete_key``, with the engine's bookkeeping between), and
the read path reads the slab and the maps directly (the compiled ``HotReader`` and its
Python twin): this layout (``slab``, ``expires``, the maps) is theirs to read, under
``self.lock``.

The tier stores; it never evicts on its own. ``put``/``put_many`` require free slots,
which the engine guarantees by evicting first (else ``RuntimeError``). Thread-safe: every
method that writes or gathers takes ``self.lock`` (a re-entrant lock that ``TierCache``
also holds around its policy bookkeeping); single map reads are atomic.

No aliasing: every vector handed out is a copy; slab rows are never exposed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np

from ..keys import Content

ENTRY_OVERHEAD_BYTES = 256
"""Bookkeeping bytes charged per hot entry on top of its row (dict slots, key, expiry)."""

NEVER = float("inf")


def hot_capacity(max_bytes: int, dim: int) -> int:
    """Entries that fit in a byte budget: ``max_bytes // (4 * dim + ENTRY_OVERHEAD_BYTES)``."""
    return max(0, max_bytes // (4 * dim + ENTRY_OVERHEAD_BYTES))


class MemoryTier:
    """Byte-budgeted in-process vector store. Capacity is fixed at construction (entries)."""

    def __init__(self, dim: int, capacity: int) -> None:
        self.dim = dim
        self.capacity = capacity
        self.lock = threading.RLock()
        self.slab = np.empty((capacity, dim), dtype=np.float32)
        self.expires: list[float] = [NEVER] * capacity  # a list: scalar reads are fastest
        self._by_content: dict[Content, int] = {}
        self._by_key: dict[bytes, int] = {}
        self._content: list[Content | None] = [None] * capacity
        self._key: list[bytes] = [b""] * capacity
        self._meta: list[bytes | None] = [None] * capacity
        self._in_warm = np.zeros(capacity, dtype=bool)
        self._free = list(range(capacity - 1, -1, -1))
        self.n_expiring = 0
        """Live entries with a finite expiry; 0 lets readers skip expiry checks."""

    # -- reads -------------------------------------------------------------------------
    def slot(self, content: Content) -> int | None:
        return self._by_content.get(content)

    def slot_of_key(self, key: bytes) -> int | None:
        return self._by_key.get(key)

    def meta_at(self, slot: int) -> bytes | None:
        return self._meta[slot]

    def in_warm(self, slot: int) -> bool:
        return bool(self._in_warm[slot])

    def mark_in_warm(self, slot: int, value: bool = True) -> None:
        self._in_warm[slot] = value

    def get_many(self, contents: Sequence[Content]) -> list[int | None]:
        """Slots of ``contents`` (None where absent). Gather rows with :meth:`gather`."""
        with self.lock:
            get = self._by_content.get
            return [get(c) for c in contents]

    def gather(self, slots: Sequence[int]) -> np.ndarray:
        """A new ``(len(slots), dim)`` array holding copies of those rows (one gather)."""
        with self.lock:
            return self.slab[np.asarray(slots, dtype=np.intp)]

    # -- writes ------------------------------------------------------------------------
    def put(
        self,
        content: Content,
        key: bytes,
        vector: np.ndarray | None,
        expires_at: float = NEVER,
        meta: bytes | None = None,
        in_warm: bool = False,
    ) -> int:
        """Store or overwrite one entry; returns its slot. Raises if no slot is free.
        ``vector`` None: the caller copies the row into ``slab[slot]`` itself (a batch
        does it in one scatter), before the lock it holds is released."""
        with self.lock:
            slot = self._by_key.get(key)
            if slot is None:
                if not self._free:
                    raise RuntimeError("hot tier full: the engine must evict first")
                slot = self._free.pop()
                self._by_key[key] = slot
                self._by_content[content] = slot
                self._content[slot] = content
                self._key[slot] = key
            if vector is not None:
                self.slab[slot] = vector
            self.n_expiring += (expires_at != NEVER) - (self.expires[slot] != NEVER)
            self.expires[slot] = expires_at
            self._meta[slot] = meta
            self._in_warm[slot] = in_warm
            return slot

    def put_new_many(
        self,
        contents: Sequence[Content],
        keys: Sequence[bytes],
        expires_at: Sequence[float],
        metas: Sequence[bytes | None],
        in_warm: bool,
    ) -> list[int]:
        """:meth:`put` of entries none of which is stored (distinct keys), with their
        rows left to the caller (``vector`` None): the same slots as one ``put`` after
        another, the maps updated at C speed. Returns the slots in input order."""
        n = len(keys)
        with self.lock:
            free = self._free
            if len(free) < n:
                raise RuntimeError("hot tier full: the engine must evict first")
            if not n:
                return []
            cut = len(free) - n
            slots = free[cut:][::-1]  # what n pops take, in their order
            del free[cut:]
            self._by_key.update(zip(keys, slots))
            self._by_content.update(zip(contents, slots))
            content, key, meta, expires = self._content, self._key, self._meta, self.expires
            expiring = 0
            for slot, c, k, m, e in zip(slots, contents, keys, metas, expires_at):
                content[slot] = c
                key[slot] = k
                meta[slot] = m
                expiring += (e != NEVER) - (expires[slot] != NEVER)
                expires[slot] = e
            self.n_expiring += expiring
            self._in_warm[slots] = in_warm
            return slots

    def put_many(
        self,
        contents: Sequence[Content],
        keys: Sequence[bytes],
        matrix: np.ndarray,
        expires_at: Sequence[float],
        metas: Sequence[bytes | None],
        in_warm: Sequence[bool],
    ) -> list[int]:
        """:meth:`put` of each row of ``matrix`` (copied in); the slots in input order."""
        with self.lock:
            return [
                self.put(contents[i], keys[i], matrix[i], expires_at[i], metas[i], in_warm[i])
                for i in range(len(keys))
            ]

    def delete_key(self, key: bytes) -> bool:
        with self.lock:
            slot = self._by_key.pop(key, None)
            if slot is None:
                return False
            content = self._content[slot]
            if content is not None:
                self._by_content.pop(content, None)
            self._content[slot] = None
            self._key[slot] = b""
            self._meta[slot] = None
            self.n_expiring -= self.expires[slot] != NEVER
            self.expires[slot] = NEVER
            self._in_warm[slot] = False
            self._free.append(slot)
            return True

    def delete_many(self, keys: Sequence[bytes]) -> int:
        """Delete ``keys``; how many were stored (a key given twice counts once)."""
        with self.lock:
            return sum(self.delete_key(k) for k in keys)

    def clear(self) -> None:
        """Delete every entry (every slot is free again)."""
        with self.lock:
            for key in list(self._by_key):
                self.delete_key(key)

    # -- introspection -----------------------------------------------------------------
    def keys(self) -> Iterator[bytes]:
        """The digests stored now (a snapshot: later writes do not change it)."""
        with self.lock:
            return iter(list(self._by_key))

    def count(self) -> int:
        return len(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def bytes_used(self) -> int:
        """Charged bytes of the live entries (rows + per-entry overhead)."""
        return len(self._by_key) * (4 * self.dim + ENTRY_OVERHEAD_BYTES)

    def close(self) -> None:
        """Drop every entry (the slab stays allocated until the tier is freed)."""
        self.clear()
