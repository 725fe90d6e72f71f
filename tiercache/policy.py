"""The pure policy engine: residency policies for the hot tier and the warm-tier decisions.

Pure: no I/O, no wall clock, no threads, no logging. All randomness comes from
``random.Random`` instances derived from one seed, so a run is reproducible from
``(seed, trace)``. Nothing here is thread-safe: the owner (``TierCache`` or the simulator)
serialises calls to a :class:`PolicyEngine`.

Pieces:

* :class:`Policy` and its registered implementations (``lru``, ``lfu``, ``tinylfu``,
  ``wtinylfu``): which keys are resident in one tier, capacity counted in entries. Each
  documents its tie-break (``tie_break``) and what happens to a key's history on eviction
  (``history``).
* :class:`PolicyEngine`: the only object the cache talks to. Owns the
  :class:`~tiercache.sketch.FrequencySketch`, records accesses (hot hits through a small
  buffer applied in vectorised batches), and answers every decision with a value
  (:class:`Admission`, a bool, a list of victims).

See docs/policies.md for the full description.
"""

from __future__ import annotations

import hashlib
import math
import random
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from .errors import ConfigError
from .keys import key_hash64
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
    "WTinyLFUPolicy",
    "S3FIFOPolicy",
    "ARCPolicy",
    "PolicyEngine",
    "default_hasher",
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
_K = TypeVar("_K", bound=Hashable)


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
    cand = sketch.frequency(hasher(candidate))
    vict = sketch.frequency(hasher(victim))
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


_CLIMB_RESTART = 0.05
"""A sampled hit-rate change at least this large restarts the climber's step at full size."""

_CLIMB_MIN_CAPACITY = 50
"""Smallest capacity whose window the climber moves (the shift detector runs from 3
entries). Below it a window
step is a whole entry or more of a tiny cache and the samples are noise: on the training
traces of issue #17 (0.1% cells of 11-80 entries) a fixed window was ahead by up to 1 pp
(chosen there: 50 and 100 scored alike; the test set was not consulted)."""

_CLIMB_MIN_PERIOD = 1000
"""Smallest automatic sample period (requests), so tiny caches do not climb on noise."""

_SHIFT_PERIOD = 1000
"""Automatic sample of the popularity-shift detector (requests)."""

_SHIFT_SIGMAS = 4.0
"""A shift's drop must also exceed this many standard deviations of a sample's hit rate."""

_SHIFT_MAD = math.sqrt(math.pi) / 2
"""Standard deviation per unit of mean absolute difference of two independent normal
samples: the detector's noise is the larger of a sample's binomial standard deviation and
this times the observed mean absolute difference of successive samples."""

_SHIFT_WARMUP = 8
"""The detector's running hit rate is the mean of its first this-many samples (it is not
armed before), then an EWMA giving the newest sample a weight of 1/this."""


_RECURRING = 2

_SHIFT_PATIENCE = 6
"""Unconfirmed drops in a row judged against the pre-drop rates before those rates
follow the samples again (a long scan becomes the new normal)."""
"""A missed key whose sketch frequency (its own access included) is at least this recurs:
the shift detector counts such misses (``shift_confirm``)."""


def _flag(pname: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"policy.params.{pname}", value, "must be true or false")
    return value


@register("wtinylfu")
class WTinyLFUPolicy(Policy):
    """Caffeine-style W-TinyLFU: window LRU + TinyLFU + segmented LRU main, with the
    window/main split adapted by a hill climber.

    Sizing (capacity ``C``): the window starts at ``W = min(C - 1, max(1, round(C *
    window)))`` entries when ``C >= 2`` and none when ``C <= 1``; the main region holds
    ``M = C - W``, split into *protected* (at most ``floor(M * protected)``) and
    *probation* (the rest).

    * A new key enters the window (most recent end) and is always admitted, unless ``W == 0``
      (capacity 1): then it competes directly as the candidate below and may be rejected.
    * When the window overflows, its LRU entry (the *candidate*) leaves the window. If the
      main region has room it enters probation (MRU end). Otherwise it competes with the
      main *victim* (probation's LRU entry, or protected's if probation is empty) under
      TinyLFU: the candidate wins iff its sketch frequency is strictly higher (jitter as in
      ``tinylfu``). The loser is evicted; the winner sits in probation's MRU end.
    * A hit in the window refreshes its recency there; a hit in probation promotes the key
      to protected's MRU end; when protected then exceeds its share, its LRU entry is
      demoted to probation's MRU end (it stays resident). A hit in protected refreshes it.

    Adaptation (``adaptive``, default on, for ``C >= 3``): once the cache has filled, every
    access the engine applies (``on_hit``: a resident key is a hit, any other a miss) is
    counted; every ``sample_period`` accesses (0: ``max(1000, 10 * C)``) the climber
    compares the sample's hit rate with the previous sample's. If it did not drop, the
    window moves again in the same direction, else it reverses. The step starts at
    ``step * C`` entries (first move: grow the window), shrinks by ``step_decay`` every
    sample, and restarts at full size when the hit rate changes by 5 points or more (the
    workload changed). The window stays within ``[1, C - 1]``. Resizing moves entries
    between regions and never evicts: growing the window moves main's LRU entries
    (probation first) to the window's LRU end, shrinking it moves the window's LRU
    entries to probation's MRU end; protected's overflow is demoted to probation.
    Everything is counted in accesses, so the climber is deterministic.

    Popularity shifts (``shift`` > 0, with the climber): the climber's sample is split into
    detector samples of about ``shift_period`` requests (0: 1,000). A detector sample
    whose hit rate falls below the running rate (mean of the last samples, an EWMA of
    weight 1/8 once 8 samples are in) by more than ``shift`` of it *and* by more than 4
    standard deviations (the larger of the binomial one and the one implied by the mean
    absolute difference of successive samples, so a workload with bursty scans learns
    its own noise) is a drop; it is a shift only when the sample's rate of misses of
    recurring keys (sketch frequency >= 2, counted in ``admit``) rose above its running
    rate by ``shift_confirm`` times the drop (a scan's misses are of keys seen once); an
    unconfirmed drop leaves the running rates as they were for up to 6 samples. The
    reaction to a shift: the sketch is halved ``shift_aging`` times
    (the old workload's counts fade; 4 or more clears it), every main entry cycles through
    the window so main becomes one probation segment in recency order (nothing is
    evicted), and the detector and the climber start over (the climber with a full step
    toward a smaller window). ``shifts`` lists the detector sample number of each shift.

    Params: ``window`` (initial fraction of capacity, in (0, 1), default 0.01),
    ``protected`` (fraction of the main region, in [0, 1], default 0.8),
    ``jitter_threshold`` (default 6), ``adaptive`` (bool, default true),
    ``sample_period`` (int >= 0, default 0 = automatic), ``step`` (fraction of capacity
    in (0, 1], default 0.03), ``step_decay`` (in [0, 1], default 0.9), ``boost``
    (fraction of capacity in [0, 1), default 0 = off), ``shift`` (relative drop in
    [0, 1), default 0.05; 0 = off), ``shift_period`` (int >= 0, default 0 = automatic),
    ``shift_aging`` (int >= 0, default 3), ``shift_confirm`` (share of a drop that must
    come back as misses of recurring keys, in [0, 1], default 0.2; 0 = no confirmation).
    """

    tie_break = (
        "equal frequencies keep the main victim (the window's candidate needs a strictly "
        "higher estimate); the candidate is the window's LRU entry, the victim probation's "
        "LRU entry (protected's LRU when probation is empty); the climber keeps its "
        "direction when the hit rate is unchanged"
    )
    history = (
        "survives eviction in the frequency sketch (aged by halving), not in the policy: "
        "a returning key re-enters the window and then competes with its accumulated frequency"
    )
    params: ClassVar[Mapping[str, Any]] = {
        "window": 0.01,
        "protected": 0.8,
        "jitter_threshold": 6,
        "adaptive": True,
        "sample_period": 0,
        "step": 0.03,
        "step_decay": 0.9,
        "boost": 0.0,
        "shift": 0.05,
        "shift_period": 0,
        "shift_aging": 3,
        "shift_confirm": 0.2,
    }

    def _configure(self, params: Mapping[str, Any]) -> None:
        self.window_fraction = _fraction("window", params["window"], low_open=True, high_open=True)
        self.protected_fraction = _fraction(
            "protected", params["protected"], low_open=False, high_open=False
        )
        self.jitter_threshold = _jitter_threshold(params["jitter_threshold"])
        self.adaptive = _flag("adaptive", params["adaptive"])
        self.sample_period = _nonneg_int("policy.params.sample_period", params["sample_period"])
        self.step_fraction = _fraction("step", params["step"], low_open=True, high_open=False)
        self.step_decay = _fraction(
            "step_decay", params["step_decay"], low_open=False, high_open=False
        )
        self.boost = _fraction("boost", params["boost"], low_open=False, high_open=True)
        self.shift = _fraction("shift", params["shift"], low_open=False, high_open=True)
        self.shift_period = _nonneg_int("policy.params.shift_period", params["shift_period"])
        self.shift_aging = _nonneg_int("policy.params.shift_aging", params["shift_aging"])
        self.shift_confirm = _fraction(
            "shift_confirm", params["shift_confirm"], low_open=False, high_open=False
        )
        c = self.capacity
        if c >= 2:
            window = min(c - 1, max(1, round(c * self.window_fraction)))
        else:
            window = 0
        # hill climber state (all counted in accesses: deterministic)
        self._climbing = self.adaptive and c >= 3
        # climber sample (requests): the hill-climbing step's period
        self._climb_period = self.sample_period or max(_CLIMB_MIN_PERIOD, 10 * c)
        # _climb runs every _period requests: the shift detector's (shorter) sample when it
        # is on, and the climber's step waits until _climb_period requests have accumulated
        self._period = self._climb_period
        if self.shift > 0:
            # climber sample = a whole number of detector samples, about shift_period each
            k = max(1, self._climb_period // (self.shift_period or _SHIFT_PERIOD))
            self._period = -(-self._climb_period // k)
        self._init_segments(window)
        self._full = False
        self._sample_hits = 0
        self._sample_requests = 0
        self._sample_recurring = 0  # offered misses of keys seen before (see admit)
        self._recurring_reference = 0.0  # the detector's running rate of those
        self._suspect = 0  # successive unconfirmed drops (the detector's hysteresis)
        self._climb_hits = 0
        self._climb_requests = 0
        self._previous_rate = -1.0  # no sample yet
        self._step = self.step_fraction * c  # signed: > 0 grows the window
        self._reference = 0.0  # the detector's running hit rate
        self._reference_samples = 0  # samples in it (the detector arms after a few)
        self._jitter = 0.0  # running mean absolute difference of successive samples
        self._last_rate = 0.0  # the previous sample's rate
        self.adjustments: list[int] = []
        """Window capacity after each climb (for tests and reports)."""
        self.shifts: list[int] = []
        """Detector sample number (1-based) of each popularity shift detected."""
        self._samples = 0

    def _init_segments(self, window: int) -> None:
        """Empty segments and the initial split (the compiled subclass overrides this)."""
        self._window: OrderedDict[Key, None] = OrderedDict()
        self._probation: OrderedDict[Key, None] = OrderedDict()
        self._protected: OrderedDict[Key, None] = OrderedDict()
        self._set_window(window)

    def _set_window(self, window: int) -> None:
        self.window_capacity = window
        self.main_capacity = self.capacity - window
        self.protected_capacity = int(self.main_capacity * self.protected_fraction)

    def __len__(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    def __contains__(self, key: object) -> bool:
        return key in self._window or key in self._probation or key in self._protected

    def segment(self, key: Key) -> str | None:
        """``"window"``, ``"probation"``, ``"protected"`` or None (not resident)."""
        if key in self._window:
            return "window"
        if key in self._probation:
            return "probation"
        if key in self._protected:
            return "protected"
        return None

    def on_hit(self, key: Key) -> None:
        # a key lives in one segment at most, so the order of the tests is free: protected
        # first, where most hits land (this runs for every buffered access)
        protected = self._protected
        if key in protected:
            protected.move_to_end(key)
            hit = 1
        elif key in self._probation:
            del self._probation[key]
            protected[key] = None
            if len(protected) > self.protected_capacity:
                demoted, _ = protected.popitem(last=False)
                self._probation[demoted] = None
            hit = 1
        elif key in self._window:
            self._window.move_to_end(key)
            hit = 1
        else:
            hit = 0  # a miss the engine recorded before offering the key
        if self._climbing:
            if not self._full:
                return  # sampling starts once the cache has filled (set by admit)
            self._sample_hits += hit
            self._sample_requests += 1
            if self._sample_requests >= self._period:
                self._climb()

    def on_hits(self, keys: Sequence[Key]) -> None:
        """The loop of :meth:`on_hit` with its lookups hoisted (same effect, in order)."""
        protected, probation, window = self._protected, self._probation, self._window
        move_prot, move_win = protected.move_to_end, window.move_to_end
        climbing = self._climbing
        for key in keys:
            if key in protected:
                move_prot(key)
                hit = 1
            elif key in probation:
                del probation[key]
                protected[key] = None
                if len(protected) > self.protected_capacity:  # re-read: a climb resizes
                    demoted, _ = protected.popitem(last=False)
                    probation[demoted] = None
                hit = 1
            elif key in window:
                move_win(key)
                hit = 1
            else:
                hit = 0
            if climbing and self._full:
                self._sample_hits += hit
                self._sample_requests += 1
                if self._sample_requests >= self._period:
                    self._climb()  # resizes the segments in place

    def _climb(self) -> None:
        """One detector sample (every ``_period`` requests): a popularity shift restarts
        the policy's memory; otherwise the sample counts toward the climber's, and a
        hill-climbing step follows once that is complete (see the class doc)."""
        hits, n = self._sample_hits, self._sample_requests
        recurring = self._sample_recurring
        self._sample_hits = self._sample_requests = self._sample_recurring = 0
        if n <= 0:
            return
        self._samples += 1
        c = self.capacity
        if self.shift > 0 and self._detect_shift(hits, recurring, n):
            return
        # the climber's sample: a whole number of detector samples
        self._climb_hits += hits
        self._climb_requests += n
        if self._climb_requests < self._climb_period:
            return
        n = self._climb_requests
        rate = self._climb_hits / n
        self._climb_hits = self._climb_requests = 0
        previous, self._previous_rate = self._previous_rate, rate
        if previous < 0 or c < _CLIMB_MIN_CAPACITY:
            return  # the first full sample only sets the reference; tiny caches keep theirs
        change = rate - previous
        # a change smaller than ~4 standard deviations of the difference of two samples
        # may be noise; the restart threshold is at least _CLIMB_RESTART (5 points)
        threshold = max(_CLIMB_RESTART, 4.0 * math.sqrt(2.0 * rate * (1.0 - rate) / n))
        if change <= -threshold and self.boost > 0:
            # the workload shifted: recency pays until frequencies catch up; then shrink
            target = max(self.window_capacity, round(self.boost * c))
            self._step = -self.step_fraction * c
            self.resize_window(target)
        else:
            amount = self._step if change >= 0 else -self._step
            if change >= threshold:
                self._step = math.copysign(self.step_fraction * c, amount)
            else:
                self._step = self.step_decay * amount
            self.resize_window(self.window_capacity + round(amount))
        self.adjustments.append(self.window_capacity)

    def _detect_shift(self, hits: int, recurring: int, n: int) -> bool:
        """The popularity-shift detector, once per detector sample; True when it reacted
        (the climber's sample then starts over)."""
        # Running hit rate and running mean absolute difference of successive samples
        # (insensitive to a trend such as a recovery): means of the first _SHIFT_WARMUP
        # samples, then EWMAs of weight 1 / _SHIFT_WARMUP. Armed once the running rate
        # averages _SHIFT_WARMUP samples.
        rate = hits / n
        k = self._reference_samples
        reference, jitter = self._reference, self._jitter
        drop = reference - rate
        noise = _SHIFT_SIGMAS * max(
            math.sqrt(reference * (1.0 - reference) / n), _SHIFT_MAD * jitter
        )
        recurring_rate = recurring / n
        if k >= _SHIFT_WARMUP and drop > self.shift * reference and drop > noise:
            # A drop. A shift only if the requests the hit rate lost come back as misses
            # of recurring keys (the new head's); a scan's misses are of keys seen once.
            # Unconfirmed, the sample is suspect: the running rates stay as they were
            # for up to _SHIFT_PATIENCE samples, so a shift's next samples are judged
            # against the old rate (its new head recurs more as it goes on).
            rise = recurring_rate - self._recurring_reference
            if self.shift_confirm == 0 or rise >= self.shift_confirm * drop:
                self._react_to_shift()
                return True
            self._suspect += 1
            if self._suspect <= _SHIFT_PATIENCE:
                return False
        else:
            self._suspect = 0
        k += 1
        self._reference_samples = k
        self._reference = reference + (rate - reference) / min(k, _SHIFT_WARMUP)
        self._recurring_reference += (recurring_rate - self._recurring_reference) / min(
            k, _SHIFT_WARMUP
        )
        if k > 1:
            deviation = abs(rate - self._last_rate)
            self._jitter = jitter + (deviation - jitter) / min(k - 1, _SHIFT_WARMUP)
        self._last_rate = rate
        return False

    def _react_to_shift(self) -> None:
        """Forget the old workload's frequencies (each halving divides every counter by
        two) and its residency ranks: cycling main through the window leaves it one
        probation segment in recency order, so the old protected keys compete again. The
        detector and the climber start over, the climber with a full step toward a
        smaller window."""
        c = self.capacity
        self.shifts.append(self._samples)
        for _ in range(self.shift_aging):
            self.sketch._reset()
        window = self.window_capacity
        self.resize_window(c - 1)
        self.resize_window(window)
        self._reference = self._jitter = self._recurring_reference = 0.0
        self._reference_samples = self._suspect = 0
        self._previous_rate = -1.0
        self._climb_hits = self._climb_requests = 0
        self._step = -self.step_fraction * c

    def resize_window(self, window: int) -> None:
        """Move the window/main split to ``window`` entries (clamped to ``[1, C - 1]``).

        Never evicts: growing moves main's LRU entries (probation's first, then
        protected's) to the window's LRU end, oldest first; shrinking moves the window's
        LRU entries to probation's MRU end. Protected's overflow is demoted to probation.
        """
        c = self.capacity
        if c < 3:
            return
        window = min(c - 1, max(1, window))
        if window == self.window_capacity:
            return
        self._set_window(window)
        win, prob, prot = self._window, self._probation, self._protected
        while len(win) > window:
            k, _ = win.popitem(last=False)
            prob[k] = None
        moved: list[Key] = []
        while len(prob) + len(prot) > self.main_capacity:
            k, _ = (prob if prob else prot).popitem(last=False)
            moved.append(k)
        for k in reversed(moved):
            win[k] = None
            win.move_to_end(k, last=False)
        while len(prot) > self.protected_capacity:
            k, _ = prot.popitem(last=False)
            prob[k] = None

    def admit(self, key: Key) -> Admission:
        if self._climbing and self._full and key not in self:
            # the shift detector's second signal: a missed key that recurs (sketch
            # frequency >= _RECURRING, this access included); a scan's keys do not
            if self.sketch.frequency(self.hasher(key)) >= _RECURRING:
                self._sample_recurring += 1
        adm = self._place(key)
        if not self._full and len(self) >= self.capacity:
            self._full = True  # the hill climber samples from now on
        return adm

    def _place(self, key: Key) -> Admission:
        if key in self:
            return _ADMITTED
        if self.capacity == 0:
            return _REJECTED
        if self.window_capacity == 0:
            # Capacity 1: no window; the offered key is itself the candidate.
            placed, victim = self._compete_for_main(key)
            if not placed:
                return _REJECTED
            return _ADMITTED if victim is None else Admission(True, (victim,))
        self._window[key] = None
        if len(self._window) <= self.window_capacity:
            return _ADMITTED
        candidate, _ = self._window.popitem(last=False)
        try:
            placed, victim = self._compete_for_main(candidate)
        except BaseException:
            # the competition failed (the hasher or the rng raised) before changing main:
            # undo, so the policy is exactly as before the call
            self._window[candidate] = None
            self._window.move_to_end(candidate, last=False)
            del self._window[key]
            raise
        if not placed:
            return Admission(True, (candidate,))  # the window's loser leaves the cache
        return _ADMITTED if victim is None else Admission(True, (victim,))

    def _compete_for_main(self, candidate: Key) -> tuple[bool, Key | None]:
        """Put ``candidate`` in probation if main has room or it beats main's victim
        (TinyLFU); returns (placed, the evicted victim or None)."""
        if self._main_has_room():
            self._probation[candidate] = None
            return True, None
        victim = self._main_victim()
        if not self._admit(candidate, victim):
            return False, None
        self._evict_main(victim)
        self._probation[candidate] = None
        return True, victim

    def _admit(self, candidate: Key, victim: Key) -> bool:
        return _tinylfu_admit(
            self.sketch, self.hasher, self.rng, self.jitter_threshold, candidate, victim
        )

    def _main_has_room(self) -> bool:
        return len(self._probation) + len(self._protected) < self.main_capacity

    def _main_victim(self) -> Key:
        if self._probation:
            return next(iter(self._probation))
        return next(iter(self._protected))

    def _evict_main(self, victim: Key) -> None:
        if self._probation.pop(victim, _MISSING) is _MISSING:
            del self._protected[victim]

    def remove(self, key: Key) -> bool:
        for seg in (self._window, self._probation, self._protected):
            if seg.pop(key, _MISSING) is not _MISSING:
                return True
        return False

    def keys(self) -> Iterator[Key]:
        """Window, then probation, then protected; least recently used first in each."""
        return iter([*self._window, *self._probation, *self._protected])


# ---------------------------------------------------------------------------------------
# Engine


def default_hasher(key: Key) -> int:
    """The 64-bit integer the sketch sees for a key.

    * ``bytes`` of 8 or more bytes (tiercache's 16-byte digests): the first 8 bytes, little
      endian (:func:`tiercache.keys.key_hash64`); digests are uniform, so this is uniform.
    * shorter ``bytes`` and ``str`` (UTF-8): an 8-byte blake2b digest (deterministic across
      processes, unlike ``hash()``).
    * ``int`` (simulator keys): the value modulo 2**64; the sketch mixes it before indexing.

    Any other type raises TypeError: pass ``hasher=`` to :class:`PolicyEngine`.
    """
    if isinstance(key, bytes):
        if len(key) >= 8:
            return key_hash64(key)
        return int.from_bytes(hashlib.blake2b(b"b" + key, digest_size=8).digest(), "little")
    if isinstance(key, int):
        return key & _M64
    if isinstance(key, str):
        data = b"s" + key.encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    raise TypeError(f"no default 64-bit hash for {type(key).__name__} keys; pass hasher=")


# ---------------------------------------------------------------------------------------
# Compiled core

try:
    from . import _core
except ImportError:  # built without a C compiler: the pure-Python policy, same decisions
    _core = None  # type: ignore[assignment]

COMPILED: bool = _core is not None
"""True when the default policy runs on the compiled core (``tiercache._core``)."""

if _core is not None:
    _core.bind(Admission, _ADMITTED, _REJECTED)

    class CompiledWTinyLFUPolicy(_core.WTinyLFUCore, WTinyLFUPolicy):
        """:class:`WTinyLFUPolicy` with its segments and per-access operations in C.

        Same decisions as the pure-Python class (its specification; tests replay random
        traces through both); configuration and the hill climber's step (``_climb``,
        once per sample period) stay in Python. Registered as ``"wtinylfu"`` when the
        extension is built.
        """

        def _init_segments(self, window: int) -> None:
            self._core_setup(
                self.capacity,
                window,
                self.protected_fraction,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                self.jitter_threshold,
                self._climbing,
                self._period,
            )

    # hashers whose common cases the core computes inline (bytes of 8+ bytes: the first 8,
    # little endian; ints, default_hasher only: the value mod 2**64); others are called
    _FAST_HASH: dict[Callable[[Any], int], int] = {default_hasher: 1, key_hash64: 2}

    CompiledWTinyLFUPolicy.name = "wtinylfu"
    POLICIES["wtinylfu"] = CompiledWTinyLFUPolicy

    class CompiledTinyLFUPolicy(_core.WTinyLFUCore, TinyLFUPolicy):
        """:class:`TinyLFUPolicy` on the compiled core (its mode 1: no window, no
        protected segment, TinyLFU admission against the LRU entry): same decisions as
        the Python class, its specification. Registered as ``"tinylfu"``."""

        def _configure(self, params: Mapping[str, Any]) -> None:
            self.jitter_threshold = _jitter_threshold(params["jitter_threshold"])
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                self.jitter_threshold,
                False,
                1,
                1,
            )

    class CompiledLRUPolicy(_core.WTinyLFUCore, LRUPolicy):
        """:class:`LRUPolicy` on the compiled core (its mode 2: one LRU list, every key
        admitted): same decisions as the Python class, its specification. Registered
        as ``"lru"``."""

        def _configure(self, params: Mapping[str, Any]) -> None:
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                16,
                False,
                1,
                2,
            )

    class CompiledLFUPolicy(_core.WTinyLFUCore, LFUPolicy):
        """:class:`LFUPolicy` on the compiled core (its mode 3: one key list sorted by
        count, then by when the key reached it; count buckets that know their last key):
        same decisions as the Python class, its specification. Registered as ``"lfu"``."""

        def _configure(self, params: Mapping[str, Any]) -> None:
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                16,
                False,
                1,
                3,
            )

        def count(self, key: Key) -> int:
            """The resident key's hit count (0 if not resident)."""
            return int(self._lfu_count(key))

    class CompiledS3FIFOPolicy(_core.WTinyLFUCore, S3FIFOPolicy):
        """:class:`S3FIFOPolicy` on the compiled core (its mode 4: the small and main
        queues as node lists, each node's counter in the node, the ghost FIFO as a node
        pool with a dict): same decisions as the Python class, its specification.
        Registered as ``"s3fifo"``."""

        def _init_queues(self) -> None:
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                16,
                False,
                1,
                4,
            )
            self._s3fifo_setup(self.small_capacity, self.ghost_capacity, self.move_threshold)

    class CompiledARCPolicy(_core.WTinyLFUCore, ARCPolicy):
        """:class:`ARCPolicy` on the compiled core (its mode 5: T1 and T2 as node lists,
        B1 and B2 as two lists of a ghost node pool with a dict, ``p`` in the core):
        same decisions as the Python class, its specification. Registered as ``"arc"``."""

        def _init_lists(self) -> None:
            self._core_setup(
                self.capacity,
                0,
                0.0,
                self.sketch,
                self.hasher,
                _FAST_HASH.get(self.hasher, 0),
                self.rng,
                16,
                False,
                1,
                5,
            )
            self._arc_setup()

    CompiledARCPolicy.name = "arc"
    POLICIES["arc"] = CompiledARCPolicy
    CompiledS3FIFOPolicy.name = "s3fifo"
    POLICIES["s3fifo"] = CompiledS3FIFOPolicy
    CompiledLFUPolicy.name = "lfu"
    POLICIES["lfu"] = CompiledLFUPolicy
    CompiledTinyLFUPolicy.name = "tinylfu"
    POLICIES["tinylfu"] = CompiledTinyLFUPolicy
    CompiledLRUPolicy.name = "lru"
    POLICIES["lru"] = CompiledLRUPolicy


_SKETCH_WIDTH = 4
_SKETCH_SAMPLE = 10


def _derive_seed(seed: int, stream: int) -> int:
    """An independent 64-bit seed for sub-stream ``stream`` (blake2b of both)."""
    data = (seed & _M64).to_bytes(8, "little") + stream.to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _nonneg_int(key: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"must be an integer >= {minimum}")
    return value


class PolicyEngine:
    """Every residency decision of one cache, from one seed and one frequency sketch.

    The cache (or the simulator) reports accesses and asks for decisions:

    * :meth:`record_hot_hit` for a lookup served by the hot tier (buffered, see below);
    * :meth:`record_miss` / :meth:`record_misses` for lookups that missed the hot tier;
    * :meth:`offer_hot` to place a key in the hot tier (returns an :class:`Admission`
      whose ``evicted`` keys the cache removes from hot, reason ``"capacity"``);
    * :meth:`remove_hot` when a hot entry is dropped, expired or found corrupt;
    * :meth:`warm_gate` before writing a recomputed vector to the warm tier;
    * :meth:`warm_probes` / :meth:`warm_victims` for sampled, frequency-aware warm eviction.

    Access buffer: hot hits are appended to a list and applied (``sketch.increment_many``
    then ``hot.on_hit`` for each key still resident, in order) when the list reaches
    ``access_buffer`` entries or before any decision or sketch read. Since no decision
    happens between a hit and its application, the outcome is identical to unbuffered
    processing (``access_buffer=1``).

    Randomness: three independent streams derived from ``seed`` (blake2b): the sketch's
    index seed, the hot policy's rng (TinyLFU jitter) and the warm probe rng. Calling
    :meth:`warm_probes` therefore never changes hot decisions.

    Sketch size: ``sketch_capacity`` defaults to
    ``max(hot_capacity + min(warm_capacity, 10 * hot_capacity), 1024)``: enough counters to
    tell apart the hot set and the warm keys most likely to compete for it, with bounded
    memory (4 bytes per counter column) when the warm tier is huge.

    Not thread-safe: the caller serialises all calls (including :meth:`record_hot_hit`).
    """

    def __init__(
        self,
        *,
        hot_capacity: int,
        warm_capacity: int,
        policy: str = DEFAULT_POLICY,
        params: Mapping[str, Any] | None = None,
        warm_min_frequency: int = 0,
        eviction_samples: int = 8,
        max_evictions_per_write: int = 64,
        seed: int | None = None,
        hasher: Callable[[Any], int] = default_hasher,
        sketch_capacity: int | None = None,
        access_buffer: int = 1024,
        hasher_many: Callable[[Sequence[Any]], np.ndarray] | None = None,
    ) -> None:
        self.hot_capacity = _nonneg_int("hot_capacity", hot_capacity)
        self.warm_capacity = _nonneg_int("warm_capacity", warm_capacity)
        self.warm_min_frequency = _nonneg_int("policy.warm_min_frequency", warm_min_frequency)
        self.eviction_samples = _nonneg_int("policy.eviction_samples", eviction_samples, 1)
        self.max_evictions_per_write = _nonneg_int(
            "policy.max_evictions_per_write", max_evictions_per_write, 1
        )
        self.access_buffer = _nonneg_int("policy.access_buffer", access_buffer, 1)
        base = max(self.hot_capacity, 1024)
        sample_size: int | None = None
        if sketch_capacity is None:
            sketch_capacity = _SKETCH_WIDTH * base + min(self.warm_capacity, 10 * self.hot_capacity)
            sample_size = _SKETCH_SAMPLE * base
        sketch_capacity = _nonneg_int("policy.sketch_capacity", sketch_capacity)
        if seed is None:
            seed = random.SystemRandom().getrandbits(64)
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError("policy.seed", seed, "must be an integer or None")
        self.seed: int = seed
        self.hasher = hasher
        # optional vectorised twin of ``hasher`` (must agree with it element-wise)
        self.hasher_many = hasher_many
        self.sketch = FrequencySketch(
            sketch_capacity, seed=_derive_seed(seed, 1), sample_size=sample_size
        )
        self._policy_rng = random.Random(_derive_seed(seed, 2))
        self._probe_rng = random.Random(_derive_seed(seed, 3))
        cls = get_policy(policy)
        self.policy_name = cls.name
        self.hot: Policy = cls(
            self.hot_capacity,
            sketch=self.sketch,
            hasher=hasher,
            rng=self._policy_rng,
            **dict(params or {}),
        )
        self._buffer: list[Key] = []
        # the compiled policy drains in C (sketch increments and on_hit, key by key; the
        # same counts as increment_many then on_hits, since on_hit never reads the sketch)
        self._compiled = _core is not None and isinstance(self.hot, _core.WTinyLFUCore)

    # -- accesses -------------------------------------------------------------------------

    def record_access(self, key: Key) -> None:
        """Record a lookup of ``key``, hit or miss. O(1); drains when the buffer is full.

        Hits and misses share the buffer: a missed key cannot become resident before the
        next decision, and every decision drains first, so the outcome equals an immediate
        update (``drain`` calls ``on_hit``, a no-op for keys that are not resident).
        """
        buf = self._buffer
        buf.append(key)
        if len(buf) >= self.access_buffer:
            self.drain()

    def record_accesses(self, keys: Sequence[Key]) -> None:
        """``record_access`` for each key, in order (one list extend)."""
        buf = self._buffer
        buf.extend(keys)
        if len(buf) >= self.access_buffer:
            self.drain()

    # the cache names what happened; the engine treats both alike
    record_hot_hit = record_access
    record_hot_hits = record_accesses
    record_miss = record_access
    record_misses = record_accesses

    def drain(self) -> None:
        """Apply buffered accesses in order: sketch counts, then ``hot.on_hit``.

        ``on_hit`` is a no-op for keys that are not resident (buffered misses).
        """
        if not self._buffer:
            return
        # the list object stays the engine's (the cache's C hot reader appends to it)
        buf = self._buffer.copy()
        self._buffer.clear()
        if self._compiled:
            _core.drain(self.hot, buf)  # type: ignore[arg-type]  # same effect, one C loop
            return
        hot = self.hot
        # A climbing policy's sample step (_climb) may age the sketch, so it must see
        # exactly the increments before its access: split the batch at sample boundaries
        # (as the sketch splits at halvings), never inside one.
        climbing = getattr(hot, "_climbing", False) and getattr(hot, "_full", False)
        pos, n = 0, len(buf)
        while pos < n:
            end = n
            if climbing:
                end = min(n, pos + max(1, hot._period - hot._sample_requests))  # type: ignore[attr-defined]
            part = buf if (pos, end) == (0, n) else buf[pos:end]
            if self.hasher_many is not None:
                hashes = self.hasher_many(part)
            else:
                hasher = self.hasher
                hashes = np.fromiter((hasher(k) for k in part), dtype=np.uint64, count=len(part))
            self.sketch.increment_many(hashes)
            hot.on_hits(part)
            pos = end

    @property
    def pending(self) -> int:
        """Hot hits recorded but not yet applied."""
        return len(self._buffer)

    # -- hot decisions --------------------------------------------------------------------

    def offer_hot(self, key: Key) -> Admission:
        """Offer ``key`` to the hot tier. A resident key gives ``Admission(True)``.

        Does not count an access: record the lookup with :meth:`record_miss` first.
        """
        self.drain()
        if key in self.hot:
            return _ADMITTED
        return self.hot.admit(key)

    def remove_hot(self, key: Key) -> bool:
        """Forget a hot entry (dropped, expired, corrupt). True if it was resident."""
        self.drain()
        return self.hot.remove(key)

    def hot_keys(self) -> list[Key]:
        """Keys resident in the hot tier (after applying buffered hits)."""
        self.drain()
        return list(self.hot.keys())

    def frequency(self, key: Key) -> int:
        """The sketch's estimate (0..15) for ``key``, after applying buffered hits."""
        self.drain()
        return self.sketch.frequency(self.hasher(key))

    # -- warm decisions -------------------------------------------------------------------

    def warm_gate(self, key: Key, *, forced: bool = False) -> bool:
        """May a recomputed vector for ``key`` be written to warm?

        True if ``forced`` (an explicit ``set``) or the key's estimated frequency is
        ``>= warm_min_frequency`` (inclusive; 0 admits everything). Record the lookup
        (:meth:`record_miss`) before asking, so the current access counts.
        """
        if forced or self.warm_min_frequency == 0:
            return True
        return self.frequency(key) >= self.warm_min_frequency

    def warm_probes(self, n: int) -> list[bytes]:
        """``n`` uniformly random 16-byte probe keys (the engine's probe rng).

        The cache maps each probe to the first stored key ``>=`` it (wrapping to the first
        key), a near-uniform sample of stored keys since keys are uniform digests.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = self._probe_rng
        return [rng.getrandbits(128).to_bytes(16, "little") for _ in range(n)]

    def warm_victims(
        self,
        sampled: Sequence[_K],
        excess: int,
        *,
        protect: Iterable[_K] = (),
        batch: int = 0,
    ) -> list[_K]:
        """Choose warm keys to evict from a sample.

        ``batch`` is the number of keys the write adds. Returns up to
        ``min(excess, batch + max_evictions_per_write)`` distinct keys of ``sampled``
        (a write evicts at most what it adds plus ``max_evictions_per_write`` keys of
        earlier overshoot: work proportional to the write, and the budget converges)
        (duplicates count once) with the lowest sketch frequency, lowest first; ties keep
        the order of first appearance in ``sampled``. Keys in ``protect`` are never chosen.
        ``excess <= 0`` returns ``[]``.
        """
        self.drain()
        k = min(excess, max(0, batch) + self.max_evictions_per_write)
        if k <= 0 or not sampled:
            return []
        protected = set(protect)
        seen: set[_K] = set()
        cands: list[_K] = []
        for key in sampled:
            if key in seen or key in protected:
                continue
            seen.add(key)
            cands.append(key)
        if not cands:
            return []
        hasher = self.hasher
        hashes = np.fromiter((hasher(c) for c in cands), dtype=np.uint64, count=len(cands))
        freqs = self.sketch.frequency_many(hashes)
        order = np.argsort(freqs, kind="stable")[:k]
        return [cands[int(i)] for i in order]
