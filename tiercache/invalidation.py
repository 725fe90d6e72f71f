"""Invalidation that reaches every process sharing a warm store (DESIGN.md "Invalidation
reaches every copy").

Every invalidation a cache performs (``drop``/``mdrop``, ``invalidate_tags``, ``drop_ids``,
``clear``, and an explicit ``set``/``mset``, which overwrites what other processes may hold)
appends one **entry** to the warm store's invalidation log in the same LMDB write
transaction that removes or overwrites the records, then raises the store's memory-mapped
sequence word (:mod:`tiercache.seqword`). Each process holds a :class:`SeqGate` over that
word and the sequence number it has applied: the compiled readers serve a hot hit only
while the two are equal (one load and one compare), and every Python read path calls
:meth:`Invalidation.check` first. When the word moved, :meth:`Invalidation.sync` reads the
log entries since the last one applied (one read transaction) and removes what they name
from this process's hot tier (and from attached :class:`~tiercache.results.ResultCache`
instances), before the read goes on. So a process learns of an invalidation made by any
other process on the same store before its next read returns.

Races with a read in flight: a vector read from a lower tier (or encoded) while the log
moved may be the old one. Such reads carry the sequence number applied when they began
(their *epoch*): a hot insertion skips keys logged since (:meth:`Invalidation.touched`),
and a store-back into warm checks the log inside its own write transaction
(``LmdbTier.put_bounded(since=..., stale=...)``), so an invalidated vector is never put
back.

The log keeps :data:`~tiercache.tiers.lmdb.LOG_ENTRIES` entries; a process further behind
than that empties its hot tier (counted as ``overflows``). Entries are msgpack maps (never
pickle): ``o`` the writing cache's origin id, ``k`` concatenated 16-byte keys, ``c`` a
clear, ``t`` tags (document ids as their ``id:`` tags), ``e`` the event kind.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgpack

from .keys import KEY_BYTES
from .seqword import new_gate
from .tiers.lmdb import LmdbTier
from .tiers.memory import MemoryTier

_RECENT_MAX = 1 << 17  # keys remembered for the in-flight check before it turns conservative


class _Results(Protocol):
    def invalidate_tags(self, tags: Iterable[str]) -> int: ...


def pack_entry(
    origin: bytes,
    keys: Iterable[bytes] = (),
    *,
    tags: Iterable[str] = (),
    clear: bool = False,
    event: str = "",
) -> bytes:
    """One log entry (see the module docstring)."""
    body: dict[str, Any] = {"o": origin, "k": b"".join(keys)}
    tag_list = list(tags)
    if tag_list:
        body["t"] = tag_list
    if clear:
        body["c"] = True
    if event:
        body["e"] = event
    out: bytes = msgpack.packb(body, use_bin_type=True)
    return out


def unpack_entry(raw: bytes) -> dict[str, Any]:
    """A log entry as a dict; a damaged one reads as a clear (the safe reading)."""
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        if not isinstance(body, dict) or not isinstance(body.get("k", b""), bytes):
            raise ValueError("not an entry")
        if len(body.get("k", b"")) % KEY_BYTES:
            raise ValueError("keys are not whole digests")
        return body
    except Exception:
        return {"o": b"", "k": b"", "c": True}


def entry_keys(body: dict[str, Any]) -> list[bytes]:
    blob: bytes = body.get("k", b"")
    return [blob[i : i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)]


def stale_predicate(entries: list[bytes]) -> Callable[[bytes], bool]:
    """For ``LmdbTier.put_bounded(stale=...)``: true for a key the entries invalidated
    (every key, if one of them is a clear or cannot be read, or they are not all kept)."""
    if not entries:  # the log moved past what is kept: assume everything changed
        return lambda key: True
    keys: set[bytes] = set()
    for raw in entries:
        body = unpack_entry(raw)
        if body.get("c"):
            return lambda key: True
        keys.update(entry_keys(body))
    return keys.__contains__


class Invalidation:
    """One cache's view of its warm store's invalidation log (see the module docstring).

    ``warm`` None (no warm store): nothing is shared with other processes; the gate is a
    private word that only :meth:`force` moves. ``remove_hot_locked(key, reason)`` and
    ``clear_hot_locked()`` are the write path's, called with ``lock`` held.
    """

    def __init__(
        self,
        warm: LmdbTier | None,
        hot: MemoryTier,
        lock: threading.RLock,
        remove_hot_locked: Callable[[bytes, str], None],
        clear_hot_locked: Callable[[], None],
    ) -> None:
        self._warm = warm
        self._hot = hot
        self._lock = lock
        self._remove_hot = remove_hot_locked
        self._clear_hot = clear_hot_locked
        self.origin = os.urandom(8)
        self._sync_lock = threading.Lock()  # one catch-up at a time: applied only grows
        self._buf: Any = warm.seq_buffer() if warm is not None else bytearray(8)
        self.gate: Any = new_gate(self._buf)
        self.applied = warm.log_seq() if warm is not None else 0
        self.gate.seen = self.gate.word if warm is not None else 0
        # key -> sequence number of the last entry naming it; an epoch below _floor is
        # older than what this map remembers (every key counts as touched)
        self._recent: dict[bytes, int] = {}
        self._floor = self.applied
        self._cleared_at = 0
        self._results: weakref.WeakSet[Any] = weakref.WeakSet()
        # counters (under lock): entries applied, hot entries removed, log overflows
        self.applied_entries = 0
        self.removed = 0
        self.overflows = 0
        self.syncs = 0

    # -- the read side ----------------------------------------------------------------
    def check(self) -> None:
        """Catch up if the sequence word moved (the Python read paths call this first)."""
        if self.gate.moved():
            self.sync()

    def sync(self) -> None:
        """Apply every log entry since the last one applied (see the module docstring)."""
        warm = self._warm
        if warm is None:
            self.gate.seen = self.gate.word
            return
        with self._sync_lock:
            word = self.gate.word
            last, entries = warm.read_log(self.applied)
            with self._lock:
                self.syncs += 1
                if last < self.applied:  # a store replaced under us (cleared files): restart
                    self._overflow_locked(last)
                elif entries is None:
                    self._overflow_locked(last)
                else:
                    for seq, raw in entries:
                        self._apply_locked(seq, unpack_entry(raw))
                self.applied = last
                self.gate.seen = word if word <= last else last

    def _overflow_locked(self, last: int) -> None:
        self.overflows += 1
        self._clear_hot()
        self._cleared_at = last
        self._recent.clear()
        self._floor = last
        for rc in list(self._results):
            rc.clear()

    def _apply_locked(self, seq: int, body: dict[str, Any]) -> None:
        # this process's own drops and clears too: a read in flight in another thread may
        # have put the old vector back in hot since the writer removed it
        self.applied_entries += 1
        keys = entry_keys(body)
        if body.get("c"):
            self._cleared_at = seq
            self.removed += len(self._hot)
            self._clear_hot()
        recent = self._recent
        if len(recent) + len(keys) > _RECENT_MAX:
            recent.clear()
            self._floor = seq
        hot_slot = self._hot.slot_of_key
        # this cache's own explicit write refreshes its hot copy in place right after
        keep = body.get("e") == "set" and body.get("o") == self.origin
        for k in keys:
            recent[k] = seq
            if not keep and hot_slot(k) is not None:
                self._remove_hot(k, "invalidated")
                self.removed += 1
        tags = body.get("t")
        if tags:
            for rc in list(self._results):
                rc.invalidate_tags(tags)

    # -- in-flight reads ----------------------------------------------------------------
    def touched(self, key: bytes, epoch: int) -> bool:
        """With the lock held: whether ``key`` was invalidated after ``epoch`` (a read that
        began at ``epoch`` must not put its vector in hot)."""
        if epoch >= self.applied:
            return False
        return epoch < self._floor or self._cleared_at > epoch or self._recent.get(key, 0) > epoch

    # -- the write side -----------------------------------------------------------------
    def entry(
        self,
        keys: Iterable[bytes] = (),
        *,
        tags: Iterable[str] = (),
        clear: bool = False,
        event: str = "",
    ) -> bytes | None:
        """A log entry of this cache, or None without a warm store (nothing to log)."""
        if self._warm is None:
            return None
        return pack_entry(self.origin, keys, tags=tags, clear=clear, event=event)

    def attach(self, results: _Results) -> None:
        """Apply every invalidation's tags and document ids (from any process) to
        ``results`` too (held weakly)."""
        self._results.add(results)

    def close(self) -> None:
        """Let go of the memory-mapped word (the readers dropped the gate first)."""
        self.gate.release()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "seq": self.applied,
                "syncs": self.syncs,
                "entries_applied": self.applied_entries,
                "hot_removed": self.removed,
                "overflows": self.overflows,
            }


__all__ = [
    "Invalidation",
    "entry_keys",
    "pack_entry",
    "stale_predicate",
    "unpack_entry",
]
