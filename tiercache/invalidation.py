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

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, cast

import msgpack

from .keys import KEY_BYTES
from .seqword import new_gate
from .tiers.lmdb import LmdbTier
from .tiers.memory import MemoryTier

log = logging.getLogger("tiercache")

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
    shared_pending: bool = False,
    records: Sequence[tuple[bytes, bytes, int | None]] = (),
) -> bytes:
    """One log entry (see the module docstring); ``shared_pending``: the publisher must
    delete the keys (or clear) in Redis before publishing it; ``records``: ``(key,
    record, ttl_ms)`` it must write to Redis first (an explicit write Redis missed)."""
    body: dict[str, Any] = {"o": origin, "k": b"".join(keys)}
    if shared_pending:
        body["s"] = True
    if records:
        body["r"] = [[k, rec, -1 if ttl is None else ttl] for k, rec, ttl in records]
    tag_list = list(tags) if tags else None
    if tag_list:
        body["t"] = tag_list
    if clear:
        body["c"] = True
    if event:
        body["e"] = event
    return cast(bytes, _packer().pack(body))


_PACKERS = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's msgpack packer (``packb`` builds one per call: ~0.5 us of a set)."""
    try:
        packer: msgpack.Packer = _PACKERS.p
    except AttributeError:
        packer = _PACKERS.p = msgpack.Packer(use_bin_type=True)
    return packer


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
        # the fleet channel is down past max_staleness (on_disconnect: miss): no local copy
        # is served (hot emptied, readers gated, warm skipped) until it caught up
        self.blocked = False
        self.fleet: Fleet | None = None

    # -- the read side ----------------------------------------------------------------
    def check(self) -> None:
        """Catch up if the sequence word moved (the Python read paths call this first)."""
        if self.gate.moved():
            self.sync()

    def block(self) -> None:
        """Serve no local copy from now on (see :attr:`blocked`)."""
        with self._lock:
            self.blocked = True
            self.gate.seen = FORCED
            self.removed += len(self._hot)
            self._clear_hot()

    def unblock(self) -> None:
        with self._lock:
            self.blocked = False
        self.sync()

    def apply_here(self, body: dict[str, Any]) -> None:
        """Apply an entry to this process alone (a cache without a warm store)."""
        with self._lock:
            self.applied += 1
            self._apply_locked(self.applied, body)

    def sync(self) -> None:
        """Apply every log entry since the last one applied (see the module docstring)."""
        warm = self._warm
        if warm is None:
            with self._lock:
                self.gate.seen = FORCED if self.blocked else self.gate.word
            return
        with self._sync_lock:
            word = self.gate.word
            if warm.poll_damage():  # set aside (damaged): no log to read, hot is safe
                self.gate.seen = FORCED if self.blocked else word
                return
            try:
                last, entries = warm.read_log(self.applied)
            except Exception:  # a damaged store (now set aside): serve on, without it
                if not warm.poll_damage():
                    raise
                self.gate.seen = FORCED if self.blocked else word
                return
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
                self.gate.seen = FORCED if self.blocked else (word if word <= last else last)

    def own(self, seq: int, entry: bytes, set_keys: list[bytes] | None = None) -> None:
        """This cache's own ``entry`` was committed as number ``seq``: apply it without
        reading the log back when nothing else was logged in between (else :meth:`sync`).
        ``set_keys``: the entry is ``entry(set_keys, event="set")`` (an explicit write,
        no tags): applied from them, without unpacking it."""
        with self._sync_lock:
            if seq == self.applied + 1:
                with self._lock:
                    if set_keys is None:
                        self._apply_locked(seq, unpack_entry(entry))
                    else:
                        self._apply_own_set_locked(seq, set_keys)
                    self.applied = seq
                    word = self.gate.word
                    self.gate.seen = FORCED if self.blocked else (word if word <= seq else seq)
                return
        self.sync()

    def _overflow_locked(self, last: int) -> None:
        self.overflows += 1
        self._clear_hot()
        self._cleared_at = last
        self._recent.clear()
        self._floor = last
        for rc in list(self._results):
            rc.clear()

    def _apply_own_set_locked(self, seq: int, keys: list[bytes]) -> None:
        """:meth:`_apply_locked` of this cache's own explicit write of ``keys`` (no tags,
        no clear): the keys are touched at ``seq``; hot keeps its copies (the write
        refreshes them in place right after)."""
        self.applied_entries += 1
        self._touch_locked(seq, keys)

    def _touch_locked(self, seq: int, keys: list[bytes]) -> None:
        """Remember ``keys`` as invalidated at ``seq`` (a full map is forgotten: every key
        then counts as touched since ``seq``)."""
        recent = self._recent
        if len(recent) + len(keys) > _RECENT_MAX:
            recent.clear()
            self._floor = seq
        for k in keys:
            recent[k] = seq

    def _apply_locked(self, seq: int, body: dict[str, Any]) -> None:
        # this process's own drops and clears too: a read in flight in another thread may
        # have put the old vector back in hot since the writer removed it
        self.applied_entries += 1
        keys = entry_keys(body)
        if body.get("c"):
            self._cleared_at = seq
            self.removed += len(self._hot)
            self._clear_hot()
        self._touch_locked(seq, keys)
        hot_slot = self._hot.slot_of_key
        # this cache's own explicit write refreshes its hot copy in place right after
        if not (body.get("e") == "set" and body.get("o") == self.origin):
            for k in keys:
                if hot_slot(k) is not None:
                    self._remove_hot(k, "invalidated")
                    self.removed += 1
        tags = body.get("t")
        if tags:
            self.results_here(tags)

    # -- in-flight reads ----------------------------------------------------------------
    def touched(self, key: bytes, epoch: int) -> bool:
        """With the lock held: whether ``key`` was invalidated after ``epoch`` (a read that
        began at ``epoch`` must not put its vector in hot); everything is while blocked."""
        if self.blocked:
            return True
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
        """A log entry of this cache; None when nobody would read it (no warm store and
        no fleet)."""
        if self._warm is None and self.fleet is None:
            return None
        return pack_entry(self.origin, keys, tags=tags, clear=clear, event=event)

    def results_here(self, tags: list[str]) -> None:
        """Apply ``tags`` to this process's attached result caches (a cache without a
        warm store, whose invalidations have no log to go through)."""
        for rc in list(self._results):
            rc.invalidate_tags(tags)

    def attach(self, results: _Results) -> None:
        """Apply every invalidation's tags and document ids (from any process) to
        ``results`` too (held weakly)."""
        self._results.add(results)

    def publish(
        self,
        keys: Iterable[bytes] = (),
        *,
        tags: Iterable[str] = (),
        clear: bool = False,
        event: str = "",
        shared_pending: bool = False,
        records: Sequence[tuple[bytes, bytes, int | None]] = (),
    ) -> None:
        """Hand one of this cache's invalidations to the fleet (if there is one), after
        the local and shared tiers were updated (``shared_pending``: Redis could not be
        told; the fleet's publisher deletes in Redis first)."""
        if self.fleet is not None:
            entry = pack_entry(
                self.origin,
                keys,
                tags=tags,
                clear=clear,
                event=event,
                shared_pending=shared_pending,
                records=records,
            )
            self.fleet.publish(entry, queue_only=shared_pending or bool(records))

    def event(
        self, keys: Iterable[bytes] = (), *, tags: Iterable[str] = (), event: str = ""
    ) -> tuple[dict[bytes, bytes], int] | None:
        """:meth:`Fleet.event` of one of this cache's invalidations (None without a fleet,
        or while earlier ones are queued)."""
        if self.fleet is None:
            return None
        return self.fleet.event(pack_entry(self.origin, keys, tags=tags, event=event))

    def sent(self) -> None:
        if self.fleet is not None:
            self.fleet.sent()

    def queued(self) -> bool:
        """Whether earlier invalidations of this cache wait for Redis (the fleet's queue):
        a write or a delete made now must go behind them, not to Redis directly, or the
        flush would put an older queued record over it."""
        return self.fleet is not None and self.fleet.has_pending()

    def queued_values(self, keys: list[bytes]) -> dict[bytes, bytes | None]:
        """:meth:`Fleet.queued_values` (empty without a fleet): what this host's queue
        will write (a record) or delete (None) in Redis, for the keys it names."""
        fleet = self.fleet
        return {} if fleet is None else fleet.queued_values(keys)

    def flush_queue(self) -> bool:
        """Send what the fleet's queue holds now, in order, from the caller's thread (a
        write queued behind earlier ones must reach Redis before it is acknowledged, or a
        read made right after it, with local copies blocked, finds it nowhere); False when
        Redis did not take all of it (the rest stays queued, in order)."""
        return self.fleet is not None and self.fleet.flush_now()

    def close(self) -> None:
        """Stop the fleet listener; let go of the memory-mapped word (the readers dropped
        the gate first)."""
        if self.fleet is not None:
            self.fleet.close()
        self.gate.release()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {
                "seq": self.applied,
                "syncs": self.syncs,
                "entries_applied": self.applied_entries,
                "hot_removed": self.removed,
                "overflows": self.overflows,
            }
        if self.fleet is not None:
            out["fleet"] = self.fleet.stats()
        return out


def _stream_id(sid: bytes | None) -> tuple[int, int]:
    """A stream id ``b"<ms>-<seq>"`` as a comparable pair (None and junk: (0, 0))."""
    if not sid:
        return (0, 0)
    ms, _, seq = sid.partition(b"-")
    try:
        return (int(ms), int(seq or 0))
    except ValueError:
        return (0, 0)


def _newer(value: bytes, stored: bytes | None) -> bool:
    return stored is None or _stream_id(value) > _stream_id(stored)


READ_PAUSE = 0.002  # seconds the listener waits after a read that returned entries
FORCED = 2**64 - 1  # a SeqGate.seen no word reaches: the readers serve nothing


class Fleet:
    """The invalidation stream of a fleet of hosts sharing one Redis (see
    docs/architecture.md "Invalidation").

    Publishing: every invalidation this cache performs is ``XADD``-ed (after the local
    tiers and the shared tier were updated), with this host's id (its warm store's
    identity: processes sharing a store are one host). A failed ``XADD`` is kept and
    retried by the listener, in order, before anything else.

    Listening: one thread per cache reads the stream (``XREAD BLOCK``) from the offset
    stored in the warm store and applies each other host's entry exactly once per host:
    ``LmdbTier.apply_remote`` deletes the keys (tags and ids resolved through this host's
    tag index), logs the entry for the other processes on the store and advances the
    offset in one write transaction. Without a warm store the entry is applied to this
    process's hot tier and the offset kept in memory.

    Disconnection: ``on_disconnect="miss"`` blocks every local copy (hot emptied,
    compiled readers gated, warm skipped) once ``max_staleness`` passed without a
    successful read, until the listener is connected and caught up. A stream whose
    history is gone (a Redis restarted without persistence: a new epoch; entries trimmed
    past this host's offset) is counted in ``history_lost``; with ``miss`` this host's
    local tiers are cleared, since anything may have been missed.
    """

    def __init__(
        self,
        inval: Invalidation,
        shared: Any,
        warm: LmdbTier | None,
        resolve_tags: Callable[[list[str]], list[bytes]],
        clear_local: Callable[[], None],
        redrop: Callable[[list[bytes]], None],
        *,
        on_disconnect: str = "serve",
        max_staleness: float = 1.0,
        maxlen: int = 100_000,
        block: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inval = inval
        self._shared = shared
        self._warm = warm
        self._resolve = resolve_tags
        self._clear_local = clear_local
        self._redrop = redrop
        self.miss_mode = on_disconnect == "miss"
        self.max_staleness = float(max_staleness)
        self.maxlen = int(maxlen)
        self.block = float(block)
        self._clock = clock
        self.host = warm.store_id() if warm is not None else inval.origin
        self._off_name = b"off:" + shared.stream_key
        self._ep_name = b"ep:" + shared.stream_key
        self._mem: dict[bytes, bytes] = {}  # offsets without a warm store
        self._pending: deque[dict[bytes, bytes]] = deque()
        self._plock = threading.Lock()
        # what the queue will make of each key it names (read-your-writes while Redis
        # lacks it): key -> (queue serial of the last entry naming it, the record an
        # explicit write queued, or None for a queued drop); a queued clear's serial
        self._own: dict[bytes, tuple[int, bytes | None]] = {}
        self._cleared = -1
        self._serial_in = 0  # serial of the next entry queued
        self._serial_out = 0  # serial of the next entry sent
        self._stop = threading.Event()
        self.last_contact = clock()
        self.connected = False
        self.caught_up = threading.Event()
        # counters
        self.published = 0
        self.queued = 0
        self.received = 0
        self.applied = 0
        self.history_lost = 0
        self.outages = 0
        self.blocked_s = 0.0
        self._blocked_at = 0.0
        self.last_error: str | None = None
        # a (re)starting host may hold copies invalidated while it was away: no local copy
        # is served until the listener caught up (or, with "serve", found Redis down)
        inval.block()
        self._blocked_at = clock()
        self._thread = threading.Thread(target=self._run, name="tiercache-inval", daemon=True)
        self._thread.start()
        self.caught_up.wait(shared.connect_timeout + shared.timeout + self.block + 0.5)

    # -- publishing ---------------------------------------------------------------------
    def event(self, entry: bytes) -> tuple[dict[bytes, bytes], int] | None:
        """The stream entry of ``entry`` for the caller's own Redis pipeline (one round
        trip with the records it writes or deletes), or None when earlier entries are
        still queued (order: the caller then calls :meth:`publish`). Count it with
        :meth:`sent` once the pipeline ran."""
        if self._pending:
            return None
        return {b"h": self.host, b"b": entry}, self.maxlen

    def sent(self) -> None:
        self.published += 1

    def has_pending(self) -> bool:
        return bool(self._pending)

    def queued_values(self, keys: list[bytes]) -> dict[bytes, bytes | None]:
        """For each of ``keys`` that this host's queue will write or delete in Redis:
        the record it will write (an explicit write Redis missed), or None (a queued
        drop or clear). Until the queue is flushed Redis holds an older value or none:
        a read of this host must see what the queue holds (its own acknowledged write;
        never a record it dropped). Keys the queue does not name are left out."""
        own = self._own
        cleared = self._cleared >= 0
        if not own and not cleared:
            return {}
        out: dict[bytes, bytes | None] = {}
        for k in keys:
            hit = own.get(k)
            if hit is not None:
                out[k] = hit[1]
            elif cleared:
                out[k] = None
        return out

    def _index_locked(self, body: dict[str, Any]) -> None:
        """Index a queued entry in :attr:`_own` (under ``_plock``)."""
        serial = self._serial_in
        self._serial_in += 1
        if body.get("s"):  # a delete Redis was not told of
            if body.get("c"):
                self._cleared = serial
                self._own.clear()
            else:
                for k in entry_keys(body):
                    self._own[k] = (serial, None)
        for k, rec, _ in body.get("r", ()):
            self._own[bytes(k)] = (serial, bytes(rec))

    def _sent_locked(self, body: dict[str, Any]) -> None:
        """The oldest queued entry (``body``) reached Redis: its keys are Redis's again."""
        serial = self._serial_out
        self._serial_out += 1
        own = self._own
        if own:
            names = entry_keys(body) + [bytes(r[0]) for r in body.get("r", ())]
            for k in names:
                hit = own.get(k)
                if hit is not None and hit[0] == serial:
                    del own[k]
        if self._cleared == serial:
            self._cleared = -1

    def flush_now(self) -> bool:
        """:meth:`_flush` through the cache's own Redis client (the listener's may be
        blocked in a read); False on a failure (what was not sent stays queued)."""
        try:
            self._flush(self._shared)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        return True

    def publish(self, entry: bytes, *, queue_only: bool = False) -> None:
        """Publish one of this cache's log entries (queued and retried on failure;
        ``queue_only``: left to the listener thread)."""
        fields = {b"h": self.host, b"b": entry}
        with self._plock:
            if not self._pending and not queue_only:
                try:
                    self._shared.stream_add(fields, self.maxlen)
                    self.published += 1
                    return
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
            self._pending.append(fields)
            self._index_locked(unpack_entry(entry))
            self.queued += 1

    def _flush(self, conn: Any) -> None:
        with self._plock:
            # the queue position of the last explicit write of each key: this host's
            # copy of such a key is that write's (committed after any queued drop of it)
            last_set: dict[bytes, int] = {}
            for i, queued in enumerate(self._pending):
                b = unpack_entry(queued[b"b"])
                if b.get("e") == "set":
                    last_set.update((k, i) for k in entry_keys(b))
            done = 0
            while self._pending:
                fields = self._pending[0]
                body = unpack_entry(fields[b"b"])
                if body.get("s"):  # the shared delete that could not be made at the time
                    if body.get("c"):
                        conn.clear()
                    else:
                        keys = entry_keys(body)
                        conn.delete_each(keys)
                        # a process of this host may have read the old record from Redis
                        # between its return and now: drop the keys here again, but not
                        # those written here since (queued behind): until this loop writes
                        # them to Redis, a read that missed locally would find an older
                        # record there and keep it, and this host never applies its own
                        # events from the stream
                        again = [k for k in keys if last_set.get(k, -1) < done]
                        if again:
                            self._redrop(again)
                if body.get("r"):  # an explicit write's records Redis did not take
                    conn.put_many([(k, r, None if t < 0 else t) for k, r, t in body["r"]])
                if body.get("s") or body.get("r"):  # the others need the event alone
                    out: bytes = msgpack.packb(
                        {f: v for f, v in body.items() if f not in ("s", "r")},
                        use_bin_type=True,
                    )
                    fields = {b"h": fields[b"h"], b"b": out}
                conn.stream_add(fields, self.maxlen)
                self._pending.popleft()
                self._sent_locked(body)
                self.published += 1
                done += 1

    # -- offsets ------------------------------------------------------------------------
    def _get(self, name: bytes) -> bytes | None:
        if self._warm is not None:
            return self._warm.get_meta(name)
        return self._mem.get(name)

    def _put(self, name: bytes, value: bytes) -> None:
        if self._warm is not None:
            self._warm.put_meta(name, value)
        else:
            self._mem[name] = value

    def _start(self, conn: Any) -> bytes:
        """Where to read from: the stored offset, after checking the stream's history."""
        epoch = conn.stream_epoch()
        stored_ep = self._get(self._ep_name)
        offset = self._get(self._off_name)
        last, gone = conn.stream_bounds()
        if stored_ep is None or offset is None:  # joining: from the stream's end
            offset = last or b"0-0"
        elif stored_ep != epoch:  # the stream was recreated: its history is gone
            self._lost("the invalidation stream was recreated (Redis lost its data)")
            offset = b"0-0"
        elif gone is not None and _stream_id(gone) > _stream_id(offset):
            self._lost("invalidations this host had not read were trimmed from the stream")
            offset = last or offset
        self._put(self._ep_name, epoch)
        self._put(self._off_name, offset)
        return offset

    def _lost(self, why: str) -> None:
        self.history_lost += 1
        self.last_error = why
        log.warning("tiercache: %s%s", why, "; clearing local tiers" if self.miss_mode else "")
        if self.miss_mode:
            try:
                self._clear_local()
            except Exception as exc:  # counted by the write path; the next start retries
                self.last_error = f"clearing after a lost history failed: {exc}"

    # -- listening ----------------------------------------------------------------------
    def _run(self) -> None:
        conn: Any = None
        offset: bytes | None = None
        pause = 0.05
        was_down = False
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self._shared.listener(self.block)
                if offset is None:
                    offset = self._start(conn)
                    if was_down:
                        # this host's writes queued during the outage go out first: until
                        # they are in Redis, a blocked read would find them nowhere (they
                        # are newer than anything this host missed)
                        self._flush(conn)
                    if was_down and not self._inval.blocked:
                        # back in contact: apply what was missed before any local hit
                        self._blocked_at = self._clock()
                        self._inval.block()
                    was_down = False
                self._flush(conn)
                entries = conn.stream_read(offset, 500, max(1, int(self.block * 1000)))
                for sid, fields in entries:
                    self._apply(sid, fields)
                    offset = sid
                if entries and self._warm is not None:
                    self._inval.sync()  # once per batch: this process's hot tier follows
                self._contact(len(entries) < 500)
                pause = 0.05
                if entries:  # read in batches: one wake-up per READ_PAUSE at most, not
                    self._stop.wait(READ_PAUSE)  # one per entry (the GIL is shared)
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.connected:
                    self.outages += 1
                self.connected = False
                self.caught_up.clear()
                was_down = True
                offset = None  # after a failure: check the history again
                self._check_staleness()
                self._stop.wait(pause)
                pause = min(pause * 2, 0.5)
        if conn is not None:
            conn.close()

    def _contact(self, at_end: bool) -> None:
        self.last_contact = self._clock()
        self.connected = True
        if at_end:
            self.caught_up.set()
            if self._inval.blocked:
                self.blocked_s += self._clock() - self._blocked_at
                self._inval.unblock()

    def _check_staleness(self) -> None:
        if not self.miss_mode and self._inval.blocked:  # availability: serve local copies
            self.blocked_s += self._clock() - self._blocked_at
            self._inval.unblock()
            self.caught_up.set()  # nothing to wait for
            return
        if (
            self.miss_mode
            and not self._inval.blocked
            and self._clock() - self.last_contact > self.max_staleness
        ):
            self._blocked_at = self._clock()
            self._inval.block()

    def _apply(self, sid: bytes, fields: dict[bytes, bytes]) -> None:
        self.received += 1
        if fields.get(b"h") == self.host:
            return  # this host's own entry: its processes applied it through the log
        raw = fields.get(b"b", b"")
        body = unpack_entry(raw)
        keys = entry_keys(body)
        tags = [t for t in body.get("t", []) if isinstance(t, str)]
        created = body.get("e") == "created"  # tags that drop search results only
        if tags and not created:
            keys += self._resolve(tags)
        clear = bool(body.get("c"))
        if self._warm is not None:
            event = "created" if created else "remote"
            entry = pack_entry(fields.get(b"h", b""), keys, tags=tags, clear=clear, event=event)
            if self._warm.apply_remote(keys, clear, entry, (self._off_name, sid), _newer):
                self.applied += 1
        else:
            self._inval.apply_here({"k": b"".join(keys), "t": tags, "c": clear})
            self._mem[self._off_name] = sid
            self.applied += 1

    def wait_caught_up(self, timeout: float) -> bool:
        """Block until the listener has read to the end of the stream (tests, CLI)."""
        return self.caught_up.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.block + 5.0)
        try:
            self._flush(self._shared)  # what is still queued, one last try
        except Exception:
            pass

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "published": self.published,
            "queued": len(self._pending),
            "received": self.received,
            "applied": self.applied,
            "history_lost": self.history_lost,
            "outages": self.outages,
            "blocked": self._inval.blocked,
            "blocked_seconds": round(self.blocked_s, 3),
            "last_error": self.last_error,
        }


__all__ = [
    "FORCED",
    "Fleet",
    "Invalidation",
    "entry_keys",
    "pack_entry",
    "stale_predicate",
    "unpack_entry",
]
