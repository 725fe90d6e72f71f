"""The residency policies' common ground and the Python policies other than W-TinyLFU.

* :class:`Admission` (a decision as a value), :data:`REASONS`, the :class:`Policy`
  interface and the registry (:func:`register`, :func:`get_policy`, :data:`POLICIES`);
* the parameter checks and TinyLFU's admission test that several policies share;
* ``lru``, ``lfu``, ``tinylfu``, ``s3fifo`` and ``arc`` in pure Python: the specification
  of their compiled versions (:mod:`tiercache.policy` registers those when the extension is
  built; tests replay random traces through both).

W-TinyLFU, the default, is in :mod:`tiercache.wtinylfu`; the engine that owns a policy and
the frequency sketch in :mod:`tiercache.policy`, which re-exports every public name here.
Pure: no I/O, no wall clock, no threads (see :mod:`tiercache.policy`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .errors import ConfigError
from .sketch import FrequencySketch

__all__ = [
    "Key",
    "REASONS",
    "Admission",
    "Policy",
    "POLICIES",
    "register",
    "get_policy",
    "LRUPolicy",
    "LFUPolicy",
    "TinyLFUPolicy",
    "S3FIFOPolicy",
    "ARCPolicy",
    "DEFAULT_POLICY",
]

Key = Hashable
"""A cache key: any hashable. The live cache uses 16-byte digests, the simulator ints."""

REASONS = ("capacity", "rejected", "demoted", "expired", "dropped", "corrupt")
"""Every reason a decision can carry; ``TierCache`` and the simulator count each."""

DEFAULT_POLICY = "wtinylfu"

_M64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of offering a non-resident key to a tier.

    Attributes:
        admitted: the offered key is now resident.
        evicted: keys removed from the tier to make room (reason ``"capacity"``), oldest
            decision first. Never contains the offered key.
        reason: ``"rejected"`` when not admitted, else ``None``.
    """

    admitted: bool
    evicted: tuple[Key, ...] = ()
    reason: str | None = None


_REJECTED = Admission(False, (), "rejected")
_ADMITTED = Admission(True)


# ---------------------------------------------------------------------------------------
# Registry


class Policy(ABC):
    """Residency of one tier; capacity counted in entries.

    A policy reads the shared frequency sketch to make admission decisions but never
    updates it: the engine records accesses. ``on_hit`` must not read the sketch either
    (the engine's access buffer relies on it).

    Subclasses declare ``params`` (name -> default); unknown or invalid parameters raise
    ``ConfigError("policy.params.<name>", value, reason)``.

    Contract:
        * ``len(policy) <= policy.capacity`` after every call.
        * ``admit`` on a non-resident key returns an :class:`Admission`; capacity 0 always
          rejects. ``admit`` on a resident key returns ``Admission(True)`` and changes
          nothing.
        * ``on_hit`` on a non-resident key is a no-op.
    """

    name: ClassVar[str] = ""
    tie_break: ClassVar[str] = ""
    history: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        capacity: int,
        *,
        sketch: FrequencySketch,
        hasher: Callable[[Any], int],
        rng: random.Random,
        **params: Any,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigError("policy.capacity", capacity, "must be an integer >= 0")
        for pname, value in params.items():
            if pname not in self.params:
                accepted = ", ".join(sorted(self.params)) or "none"
                raise ConfigError(
                    f"policy.params.{pname}",
                    value,
                    f"unknown parameter for policy {self.name!r}; accepted: {accepted}",
                )
        self.capacity = capacity
        self.sketch = sketch
        self.hasher = hasher
        self.rng = rng
        merged = {**self.params, **params}
        self._configure(merged)

    def _configure(self, params: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Validate and apply ``params`` (defaults merged in); override when there are any."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...

    @abstractmethod
    def on_hit(self, key: Key) -> None:
        """Record a hit on a resident key (no-op if the key is not resident)."""

    def on_hits(self, keys: Sequence[Key]) -> None:
        """``on_hit`` for each key in order (the engine's buffered drain). Policies may
        override it with a faster loop that has exactly the same effect."""
        on_hit = self.on_hit
        for k in keys:
            on_hit(k)

    @abstractmethod
    def admit(self, key: Key) -> Admission:
        """Offer a non-resident key; the tier may evict others or reject it."""

    @abstractmethod
    def remove(self, key: Key) -> bool:
        """Remove a key explicitly (dropped, expired, corrupt); True if it was resident."""

    @abstractmethod
    def keys(self) -> Iterator[Key]:
        """Resident keys (order documented per policy)."""


POLICIES: dict[str, type[Policy]] = {}
"""Registered policies by name."""

_P = TypeVar("_P", bound=type[Policy])


def register(name: str) -> Callable[[_P], _P]:
    """Class decorator: register a :class:`Policy` subclass under ``name``.

    Sets ``cls.name``. Registering a different class under a taken name raises ValueError.
    """

    def deco(cls: _P) -> _P:
        existing = POLICIES.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"policy name {name!r} is already registered to {existing!r}")
        cls.name = name
        POLICIES[name] = cls
        return cls

    return deco


def get_policy(name: str) -> type[Policy]:
    """The policy class registered under ``name``; ``ConfigError("policy.name")`` if none."""
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        available = ", ".join(sorted(POLICIES))
        raise ConfigError("policy.name", name, f"unknown policy; available: {available}") from None


def _fraction(pname: str, value: Any, *, low_open: bool, high_open: bool) -> float:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value  # not NaN
        and (value > 0 if low_open else value >= 0)
        and (value < 1 if high_open else value <= 1)
    )
    if not ok:
        lo = "(0" if low_open else "[0"
        hi = "1)" if high_open else "1]"
        raise ConfigError(f"policy.params.{pname}", value, f"must be a number in {lo}, {hi}")
    return float(value)


def _jitter_threshold(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            "policy.params.jitter_threshold",
            value,
            "must be an integer >= 0 (values above 15 disable jitter)",
        )
    return value


def _nonneg_int(key: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"must be an integer >= {minimum}")
    return value


def _flag(pname: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"policy.params.{pname}", value, "must be true or false")
    return value


def _tinylfu_admit(
    sketch: FrequencySketch,
    hasher: Callable[[Any], int],
    rng: random.Random,
    jitter_threshold: int,
    candidate: Key,
    victim: Key,
) -> bool:
    """TinyLFU admission (Caffeine's ``admit``): does ``candidate`` replace ``victim``?

    True iff the candidate's estimated frequency is strictly greater than the victim's
    (ties keep the victim). A losing candidate whose frequency is ``>= jitter_threshold``
    is admitted anyway with probability 1/128 (one ``rng.getrandbits(7)`` draw, made only
    in that case), so a flood of keys aimed at a hot victim's counters cannot pin the
    victim forever and lock out a warm candidate.
    """
    return _tinylfu_admit_hashed(sketch, rng, jitter_threshold, hasher(candidate), hasher(victim))


def _tinylfu_admit_hashed(
    sketch: FrequencySketch,
    rng: random.Random,
    jitter_threshold: int,
    candidate: int,
    victim: int,
) -> bool:
    """:func:`_tinylfu_admit` of the candidate's and the victim's 64-bit hashes."""
    cand = sketch.frequency(candidate)
    vict = sketch.frequency(victim)
    if cand > vict:
        return True
    if cand >= jitter_threshold:
        return rng.getrandbits(7) == 0
    return False


# ---------------------------------------------------------------------------------------
# Policies


@register("lru")
class LRUPolicy(Policy):
    """Least recently used. Always admits; evicts the entry whose last access is oldest."""

    tie_break = "none needed: recency is a total order (insert and hit both count as access)"
    history = "none kept: an evicted key returns as a fresh most-recent entry"

    def _configure(self, params: Mapping[str, Any]) -> None:
        self._data: OrderedDict[Key, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def on_hit(self, key: Key) -> None:
        if key in self._data:
            self._data.move_to_end(key)

    def on_hits(self, keys: Sequence[Key]) -> None:
        data = self._data
        move = data.move_to_end
        for k in keys:
            if k in data:
                move(k)

    def admit(self, key: Key) -> Admission:
        data = self._data
        if key in data:
            return _ADMITTED
        if self.capacity == 0:
            return _REJECTED
        evicted: tuple[Key, ...] = ()
        if len(data) >= self.capacity:
            victim, _ = data.popitem(last=False)
            evicted = (victim,)
        data[key] = None
        return Admission(True, evicted)

    def remove(self, key: Key) -> bool:
        return self._data.pop(key, _MISSING) is not _MISSING

    def keys(self) -> Iterator[Key]:
        """Least recently used first."""
        return iter(list(self._data))


_MISSING = object()


@register("lfu")
class LFUPolicy(Policy):
    """In-cache LFU in O(1): frequency buckets of insertion-ordered dicts.

    A resident key's count starts at 1 on insert and gains 1 per hit (the sketch is not
    used). Always admits; when full, evicts a key with the lowest count.
    """

    tie_break = (
        "among keys with the lowest count, the least recently used (the one that entered "
        "that count's bucket first, i.e. whose last access is oldest)"
    )
    history = "dropped on eviction: a re-inserted key starts again at count 1"

    def _configure(self, params: Mapping[str, Any]) -> None:
        self._freq: dict[Key, int] = {}
        self._buckets: dict[int, OrderedDict[Key, None]] = {}
        self._min = 0  # lowest non-empty bucket; may be stale (too low) after remove()

    def __len__(self) -> int:
        return len(self._freq)

    def __contains__(self, key: object) -> bool:
        return key in self._freq

    def count(self, key: Key) -> int:
        """The resident key's hit count (0 if not resident)."""
        return self._freq.get(key, 0)

    def _unlink(self, key: Key, f: int) -> None:
        bucket = self._buckets[f]
        del bucket[key]
        if not bucket:
            del self._buckets[f]

    def on_hit(self, key: Key) -> None:
        f = self._freq.get(key)
        if f is None:
            return
        self._unlink(key, f)
        if self._min == f and f not in self._buckets:
            self._min = f + 1
        self._freq[key] = f + 1
        self._buckets.setdefault(f + 1, OrderedDict())[key] = None

    def admit(self, key: Key) -> Admission:
        if key in self._freq:
            return _ADMITTED
        if self.capacity == 0:
            return _REJECTED
        evicted: tuple[Key, ...] = ()
        if len(self._freq) >= self.capacity:
            if self._min not in self._buckets:
                self._min = min(self._buckets)
            bucket = self._buckets[self._min]
            victim, _ = bucket.popitem(last=False)
            if not bucket:
                del self._buckets[self._min]
            del self._freq[victim]
            evicted = (victim,)
        self._freq[key] = 1
        self._buckets.setdefault(1, OrderedDict())[key] = None
        self._min = 1
        return Admission(True, evicted)

    def remove(self, key: Key) -> bool:
        f = self._freq.pop(key, None)
        if f is None:
            return False
        self._unlink(key, f)
        return True

    def keys(self) -> Iterator[Key]:
        """Eviction order: lowest count first, least recently used first within a count."""
        return iter([k for f in sorted(self._buckets) for k in self._buckets[f]])


@register("tinylfu")
class TinyLFUPolicy(LRUPolicy):
    """An LRU region guarded by TinyLFU admission.

    While there is room, every key is admitted. When full, the candidate competes with the
    LRU victim: it is admitted (and the victim evicted) iff ``sketch.frequency(candidate) >
    sketch.frequency(victim)``; otherwise it is rejected, except that a candidate with
    frequency ``>= jitter_threshold`` is admitted anyway with probability 1/128 (Caffeine's
    defence against hash flooding).

    Params: ``jitter_threshold`` (int, default 6; above 15 disables jitter).
    """

    tie_break = (
        "equal frequencies keep the victim (the candidate needs a strictly higher estimate); "
        "the victim is always the least recently used entry"
    )
    history = (
        "survives eviction in the frequency sketch (aged by halving), not in the policy: "
        "a re-offered key competes with the frequency it has accumulated"
    )
    params: ClassVar[Mapping[str, Any]] = {"jitter_threshold": 6}

    def _configure(self, params: Mapping[str, Any]) -> None:
        super()._configure(params)
        self.jitter_threshold = _jitter_threshold(params["jitter_threshold"])

    def admit(self, key: Key) -> Admission:
        data = self._data
        if key in data:
            return _ADMITTED
        if self.capacity == 0:
            return _REJECTED
        if len(data) < self.capacity:
            data[key] = None
            return _ADMITTED
        victim = next(iter(data))
        if not _tinylfu_admit(
            self.sketch, self.hasher, self.rng, self.jitter_threshold, key, victim
        ):
            return _REJECTED
        del data[victim]
        data[key] = None
        return Admission(True, (victim,))


@register("s3fifo")
class S3FIFOPolicy(Policy):
    """S3-FIFO (Yang et al., SOSP 2023), as libCacheSim's ``S3FIFO`` decides: a small FIFO
    ``S``, a main FIFO ``M`` and a ghost FIFO ``G`` of evicted keys (keys only).

    Sizes (capacity ``C``): ``S`` holds ``max(1, int(C * small))`` entries when ``C >= 2``
    (libCacheSim rounds to zero below 10 entries and then admits nothing), ``M`` the rest,
    ``G`` remembers ``int(C * ghost)`` keys. Each resident key has a counter, 0 on insert,
    +1 per hit (kept at 3 at most: only ``>= move_threshold`` and ``min(count, 3)`` are
    read).

    * A missed key that ``G`` remembers leaves ``G`` and enters ``M``; any other enters
      ``S``. Every key is admitted.
    * Room is made before the insert, one eviction at a time: from ``M`` when ``M`` holds
      more than its share or ``S`` is empty, else from ``S``.
    * From ``S``: its oldest key moves to ``M`` (counter 0) if its counter is at least
      ``move_threshold``, and the next oldest is examined; the first key below the
      threshold is evicted and remembered in ``G`` (``G`` drops its oldest when full).
    * From ``M``: its oldest key with a counter ``> 0`` is reinserted as ``M``'s newest
      with ``min(count, 3) - 1``; the first with 0 is evicted (not remembered).
    """

    tie_break = (
        "FIFO order decides: S's and M's oldest entry first; a key moved from S to M or "
        "reinserted in M becomes M's newest; eviction from M when M is over its share or S is "
        "empty, else from S"
    )
    history = (
        "a key evicted from the small queue is remembered in the ghost queue (keys only, "
        "FIFO, int(C * ghost) of them); one evicted from main is forgotten; counters are lost"
    )
    params: ClassVar[Mapping[str, Any]] = {"small": 0.1, "ghost": 0.9, "move_threshold": 2}

    def _configure(self, params: Mapping[str, Any]) -> None:
        small = _fraction("small", params["small"], low_open=True, high_open=True)
        ghost = _fraction("ghost", params["ghost"], low_open=False, high_open=False)
        self.move_threshold = _nonneg_int(
            "policy.params.move_threshold", params["move_threshold"], 1
        )
        c = self.capacity
        self.small_capacity = max(1, int(c * small)) if c >= 2 else c
        self.main_queue_capacity = c - self.small_capacity
        self.ghost_capacity = int(c * ghost)
        self._init_queues()

    def _init_queues(self) -> None:
        """Empty queues (the compiled subclass overrides this)."""
        self._small: OrderedDict[Key, int] = OrderedDict()
        self._main: OrderedDict[Key, int] = OrderedDict()
        self._ghost: OrderedDict[Key, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._small) + len(self._main)

    def __contains__(self, key: object) -> bool:
        return key in self._small or key in self._main

    def on_hit(self, key: Key) -> None:
        count = self._small.get(key)
        if count is not None:
            self._small[key] = min(count + 1, 3)
            return
        count = self._main.get(key)
        if count is not None:
            self._main[key] = min(count + 1, 3)

    def admit(self, key: Key) -> Admission:
        if key in self:
            return _ADMITTED
        if self.capacity == 0:
            return _REJECTED
        to_main = self._ghost.pop(key, _MISSING) is not _MISSING
        evicted: list[Key] = []
        while len(self._small) + len(self._main) >= self.capacity:
            if len(self._main) > self.main_queue_capacity or not self._small:
                self._evict_main(evicted)
            else:
                self._evict_small(evicted)
        (self._main if to_main else self._small)[key] = 0
        return Admission(True, tuple(evicted))

    def _evict_small(self, evicted: list[Key]) -> None:
        small, main = self._small, self._main
        while small:
            key, count = small.popitem(last=False)
            if count >= self.move_threshold:
                main[key] = 0
                continue
            if self.ghost_capacity > 0:
                self._ghost[key] = None
                if len(self._ghost) > self.ghost_capacity:
                    self._ghost.popitem(last=False)
            evicted.append(key)
            return

    def _evict_main(self, evicted: list[Key]) -> None:
        main = self._main
        while main:
            key, count = main.popitem(last=False)
            if count > 0:
                main[key] = min(count, 3) - 1
                continue
            evicted.append(key)
            return

    def remove(self, key: Key) -> bool:
        if self._small.pop(key, _MISSING) is not _MISSING:
            return True
        return self._main.pop(key, _MISSING) is not _MISSING

    def keys(self) -> Iterator[Key]:
        """The small queue, then main; oldest first in each."""
        return iter([*self._small, *self._main])


@register("arc")
class ARCPolicy(Policy):
    """ARC (Megiddo and Modha, FAST 2003), as libCacheSim's ``ARC`` decides: ``T1`` (keys
    seen once recently) and ``T2`` (seen at least twice), LRU lists, with ghost lists ``B1``
    and ``B2`` of keys evicted from each and a target ``p`` for ``T1``'s size.

    * A hit in ``T1`` moves the key to ``T2``'s most recent end; a hit in ``T2`` refreshes it.
    * A miss on a key in ``B1`` raises ``p`` by ``max(|B2| / |B1|, 1)`` (at most ``C``), one
      in ``B2`` lowers it by ``max(|B1| / |B2|, 1)`` (at least 0); the key leaves the ghost
      list and, after the eviction below, enters ``T2``. Any other miss enters ``T1``.
    * Eviction when full (*replace*): ``T1``'s least recent key goes to ``B1`` if ``T1`` is
      not empty and (``|T1| > p``, or ``|T1| == p`` and the miss was in ``B2``), or if
      ``T2`` is empty; otherwise ``T2``'s least recent key goes to ``B2``.
    * A miss in no list first trims the ghosts: if ``|T1| + |B1| >= C``, ``B1``'s oldest is
      dropped and replace runs, or, ``B1`` being empty, ``T1``'s least recent key is evicted
      without a ghost; otherwise, if all four lists hold ``2C`` keys or more, ``B2``'s
      oldest is dropped, and replace runs.
    """

    tie_break = (
        "recency order decides within each list; T1 is the victim when it is over the "
        "target p, or exactly at it when the miss was in B2, or when T2 is empty"
    )
    history = (
        "evicted keys are remembered in the ghost lists B1/B2 (keys only, at most 2C keys in "
        "all four lists), and a ghost hit adapts p and re-enters as frequent (T2)"
    )

    def _configure(self, params: Mapping[str, Any]) -> None:
        self.p = 0.0
        self._init_lists()

    def _init_lists(self) -> None:
        """Empty lists (the compiled subclass overrides this)."""
        self._t1: OrderedDict[Key, None] = OrderedDict()
        self._t2: OrderedDict[Key, None] = OrderedDict()
        self._b1: OrderedDict[Key, None] = OrderedDict()
        self._b2: OrderedDict[Key, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._t1) + len(self._t2)

    def __contains__(self, key: object) -> bool:
        return key in self._t1 or key in self._t2

    def on_hit(self, key: Key) -> None:
        if key in self._t2:
            self._t2.move_to_end(key)
        elif self._t1.pop(key, _MISSING) is not _MISSING:
            self._t2[key] = None

    def admit(self, key: Key) -> Admission:
        if key in self:
            return _ADMITTED
        c = self.capacity
        if c == 0:
            return _REJECTED
        t1, t2, b1, b2 = self._t1, self._t2, self._b1, self._b2
        ghost = 0  # 1: the key was in B1, 2: in B2
        if key in b1:
            self.p = min(self.p + max(len(b2) / len(b1), 1.0), float(c))
            del b1[key]
            ghost = 1
        elif key in b2:
            self.p = max(self.p - max(len(b1) / len(b2), 1.0), 0.0)
            del b2[key]
            ghost = 2
        evicted: list[Key] = []
        while len(t1) + len(t2) >= c:
            if ghost:
                evicted.append(self._replace(ghost))
            elif len(t1) + len(b1) + 1 > c:
                if b1:
                    b1.popitem(last=False)
                    evicted.append(self._replace(ghost))
                else:
                    evicted.append(t1.popitem(last=False)[0])
            else:
                if len(t1) + len(b1) + len(t2) + len(b2) >= 2 * c and b2:
                    b2.popitem(last=False)
                evicted.append(self._replace(ghost))
        (t2 if ghost else t1)[key] = None
        return Admission(True, tuple(evicted))

    def _replace(self, ghost: int) -> Key:
        t1, t2 = self._t1, self._t2
        n1 = len(t1)
        if (n1 > 0 and (n1 > self.p or (n1 == self.p and ghost == 2))) or not t2:
            key, _ = t1.popitem(last=False)
            self._b1[key] = None
        else:
            key, _ = t2.popitem(last=False)
            self._b2[key] = None
        return key

    def remove(self, key: Key) -> bool:
        if self._t1.pop(key, _MISSING) is not _MISSING:
            return True
        return self._t2.pop(key, _MISSING) is not _MISSING

    def keys(self) -> Iterator[Key]:
        """``T1`` then ``T2``, least recently used first in each."""
        return iter([*self._t1, *self._t2])
