"""W-TinyLFU, the default residency policy, in pure Python (the specification).

:class:`WTinyLFUPolicy`: a window LRU, TinyLFU admission and a segmented LRU main region,
the window's share adapted by a hill climber, with a popularity-shift detector. The
compiled core (``tiercache._core.WTinyLFUCore``) runs the same decisions;
:mod:`tiercache.policy` registers the compiled class as ``"wtinylfu"`` when the extension
is built and re-exports this one. Pure: no I/O, no wall clock, no threads.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from .errors import ConfigError
from .policies import (
    _ADMITTED,
    _MISSING,
    _REJECTED,
    Admission,
    Key,
    Policy,
    _flag,
    _fraction,
    _jitter_threshold,
    _nonneg_int,
    _tinylfu_admit,
    _tinylfu_admit_hashed,
    register,
)
from .sketch import FrequencySketch, _splitmix64

__all__ = ["WTinyLFUPolicy"]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MINI_SALT = 0x5DEECE66D
"""sizing: mini samples a key when the top 24 bits of splitmix64(hash ^ this) fall below
``2**24 / R``, ``R = max(1, C / mini_entries, min(1 / mini_share, C / mini_min_entries))``
(docs/policies.md)."""

_MINI_PERIOD = 1000
"""sizing: mini scores the shadows every this many sampled accesses."""

_MINI_MAX_SHADOWS = 8


def _identity(h: int) -> int:
    return h


class _MiniRng:
    """The shadows' jitter stream (as shadow.c): ``getrandbits(k)`` is the top ``k`` bits of
    splitmix64 of a state stepped by the golden ratio."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _M64

    def getrandbits(self, k: int) -> int:
        self.state = (self.state + _GOLDEN) & _M64
        return _splitmix64(self.state) >> (64 - k)


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

_U32 = 0xFFFFFFFF
"""The reuse gate's clock and gaps are 32-bit unsigned, wrapping (as in the compiled core)."""

_NO_GAP = _U32
"""The gap of a key the reuse ghost did not remember: longer than any victim's idle time."""

_REUSE_MAX = 64.0
"""Largest ``reuse`` (ghost entries per cache entry)."""

_REUSE_PAUSE = 5
"""After a detected popularity shift the reuse gate stays open for this many times the
capacity in accesses: the new workload's keys have no gap yet (chosen on the training set
of issue #17 among 0, 2, 5, 10, 20: 0 left the shift family 1.3 pp below LRU)."""

_SHIFT_PATIENCE = 6
"""Unconfirmed drops in a row judged against the pre-drop rates before those rates
follow the samples again (a long scan becomes the new normal)."""
"""A missed key whose sketch frequency (its own access included) is at least this recurs:
the shift detector counts such misses (``shift_confirm``)."""


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
    If the reuse gate is on, it stays open for the next ``5 * C`` accesses.

    The reuse gate (``reuse`` > 0; LIRS's inter-reference recency, with a ghost history):
    a clock counts every access ``on_hit`` sees (hit or miss); each resident key keeps the
    clock of its last access and its last *gap* (accesses between two of its accesses): an
    offered key's gap is the time since the access the ghost remembers for it (none: no
    gap, longer than any), and a hit in the window renews it. Every key that leaves the
    cache (the evicted victim, the window's loser, an offered key rejected) joins the
    ghost, by its 64-bit hash (the sketch's ``hasher``) with its last access; the ghost
    remembers the last ``max(1, floor(reuse * C))`` departures, less those that came back
    since (an offered key leaves it). A candidate that TinyLFU admits replaces the
    victim only if its gap is shorter than the victim's idle time (clock minus its last
    access): a key reused sooner than the victim has been waiting. On a loop longer than
    the cache, every candidate's gap is the loop's period and every victim has been idle
    less, so the resident part of the loop stays (frequency estimates alone churn it).
    Clock and gaps are 32-bit unsigned, wrapping.

    Params: ``window`` (initial fraction of capacity, in (0, 1), default 0.01),
    ``protected`` (fraction of the main region, in [0, 1], default 0.7),
    ``jitter_threshold`` (default 6), ``adaptive`` (bool, default true),
    ``sample_period`` (int >= 0, default 0 = automatic), ``step`` (fraction of capacity
    in (0, 1], default 0.01), ``step_decay`` (in [0, 1], default 0.9), ``boost``
    (fraction of capacity in [0, 1), default 0 = off), ``shift`` (relative drop in
    [0, 1), default 0.05; 0 = off), ``shift_period`` (int >= 0, default 0 = automatic),
    ``shift_aging`` (int >= 0, default 3), ``shift_confirm`` (share of a drop that must
    come back as misses of recurring keys, in [0, 1], default 0.2; 0 = no confirmation),
    ``reuse`` (ghost entries per cache entry, in [0, 64], default 4; 0 = gate off; chosen
    on issue #17's training set: 3 to 8 scored alike, 1.5 and below fell 6 pp behind on
    scans).
    """

    tie_break = (
        "equal frequencies keep the main victim (the window's candidate needs a strictly "
        "higher estimate); the candidate is the window's LRU entry, the victim probation's "
        "LRU entry (protected's LRU when probation is empty); the climber keeps its "
        "direction when the hit rate is unchanged; the reuse gate rejects a candidate "
        "whose gap equals the victim's idle time"
    )
    history = (
        "survives eviction in the frequency sketch (aged by halving), not in the policy: "
        "a returning key re-enters the window and then competes with its accumulated "
        "frequency; with the reuse gate, the last access of the last floor(reuse * C) keys "
        "to leave survives in its ghost"
    )
    _mini_shadows: list[WTinyLFUPolicy]
    _mini_hits: list[int]
    _mini_count: int

    params: ClassVar[Mapping[str, Any]] = {
        "window": 0.01,
        "protected": 0.7,
        "jitter_threshold": 6,
        "adaptive": True,
        "sample_period": 0,
        "step": 0.01,
        "step_decay": 0.9,
        "boost": 0.0,
        "shift": 0.05,
        "shift_period": 0,
        "shift_aging": 3,
        "shift_confirm": 0.2,
        "reuse": 4.0,
        "sizing": "mini",
        "mini_entries": 1024,
        "mini_decay": 0.95,
        "mini_margin": 0.03,
        "mini_windows": (0.01, 0.1, 0.4),
        "mini_gate": True,
        "mini_share": 0.25,
        "mini_min_entries": 256,
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
        reuse = params["reuse"]
        if (
            isinstance(reuse, bool)
            or not isinstance(reuse, (int, float))
            or not 0 <= reuse <= _REUSE_MAX
        ):
            raise ConfigError(
                "policy.params.reuse", reuse, f"must be a number in [0, {_REUSE_MAX:g}]"
            )
        self.reuse = float(reuse)
        c = self.capacity
        self._configure_mini(params)
        self.reuse_capacity = max(1, int(self.reuse * c)) if self.reuse > 0 and c > 0 else 0
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

    def _configure_mini(self, params: Mapping[str, Any]) -> None:
        """``sizing: mini`` (issue #17): validate its parameters and size its shadows."""
        sizing = params["sizing"]
        if sizing not in ("climb", "mini"):
            raise ConfigError("policy.params.sizing", sizing, 'must be "climb" or "mini"')
        self.sizing = sizing
        entries = _nonneg_int("policy.params.mini_entries", params["mini_entries"])
        if entries < 3:
            raise ConfigError("policy.params.mini_entries", entries, "must be an integer >= 3")
        self.mini_entries = entries
        self.mini_decay = _fraction(
            "mini_decay", params["mini_decay"], low_open=False, high_open=False
        )
        self.mini_margin = _fraction(
            "mini_margin", params["mini_margin"], low_open=False, high_open=False
        )
        windows = params["mini_windows"]
        if (
            isinstance(windows, (str, bytes))
            or not isinstance(windows, Sequence)
            or not 1 <= len(windows) <= _MINI_MAX_SHADOWS
        ):
            raise ConfigError(
                "policy.params.mini_windows",
                windows,
                f"must be a list of 1 to {_MINI_MAX_SHADOWS} window fractions",
            )
        self.mini_windows = tuple(
            _fraction("mini_windows", f, low_open=True, high_open=True) for f in windows
        )
        self.mini_gate = _flag("mini_gate", params["mini_gate"])
        self.mini_share = _fraction(
            "mini_share", params["mini_share"], low_open=True, high_open=False
        )
        smin = _nonneg_int("policy.params.mini_min_entries", params["mini_min_entries"])
        if smin < 3:
            raise ConfigError("policy.params.mini_min_entries", smin, "must be an integer >= 3")
        self.mini_min_entries = smin
        c = self.capacity
        self._mini = sizing == "mini" and self.adaptive and c >= 3  # adaptive false: fixed
        self.mini_moves: list[int] = []
        """Window capacity after each move that sizing: mini made (for tests and reports)."""
        if not self._mini:
            return
        k = len(self.mini_windows)
        # shadows of min(C, mini_entries, max(mini_min_entries, mini_share * C)) entries:
        # R = C / that, a share 1 / R of the keys sampled
        ratio = max(1.0, c / entries, min(1.0 / self.mini_share, c / smin))
        # a key is sampled when the top 24 bits of a splitmix64 of its hash fall below this
        self._mini_threshold = 1 << 24 if ratio <= 1 else int((1 << 24) / ratio)
        self._mini_salt = _MINI_SALT
        self._mini_capacity = max(3, round(c / ratio))
        self._mini_targets = [round(f * c) for f in self.mini_windows]
        self._mini_scores = [0.0] * k
        wf = self.window_fraction
        self._mini_current = min(range(k), key=lambda i: abs(self.mini_windows[i] - wf))

    def _mini_policies(self) -> list[WTinyLFUPolicy]:
        """The shadows' specification: W-TinyLFU caches of the sampled key hashes (identity
        hasher), fixed windows, one shared sketch, each its jitter stream (compiled: shadow.c)."""
        mc = self._mini_capacity
        # each shadow's sketch is sized as PolicyEngine sizes a cache's of mc entries (4 x
        # max(mc, 1,024) counters a row, halved every 10 x max(mc, 1,024) additions): a
        # sketch sized to mc alone ages ~10x sooner below 1,024 entries and cost the shift
        # family ~1 pp on the training set. They index their counters as the real cache's
        # sketch does (its seed's hash functions), as the prototype's shadows did: with
        # other seeds the training set's real family moved by up to 0.5 pp (a cell's
        # window decision flips; docs/simulator.md)
        # One sketch serves every shadow: they count the same sampled accesses with the
        # same hash functions, so their sketches would be equal (_mini_access counts once).
        base = max(mc, 1024)
        sketch = self._mini_sketch(4 * base, 10 * base)
        return [
            WTinyLFUPolicy(
                mc,
                sketch=sketch,
                hasher=_identity,
                rng=_MiniRng(i + 1),  # type: ignore[arg-type]
                window=f,
                protected=self.protected_fraction,
                jitter_threshold=self.jitter_threshold,
                adaptive=False,
                reuse=self.reuse if self.mini_gate else 0.0,
            )
            for i, f in enumerate(self.mini_windows)
        ]

    def _mini_sketch(self, capacity: int, sample_size: int) -> FrequencySketch:
        """The shadows' sketch: the real sketch's hash functions when it is a
        FrequencySketch, else those of seed 1."""
        sk = FrequencySketch(capacity, seed=1, sample_size=sample_size)
        main = self.sketch
        if isinstance(main, FrequencySketch):
            sk._k0, sk._mults = main._k0, main._mults
            sk._k0_np, sk._mults_np = main._k0_np, main._mults_np
        return sk

    def _mini_specs(self) -> list[tuple[Any, ...]]:
        """The shadows' sizes for the compiled core's ``_mini_setup``."""
        out = []
        for i, p in enumerate(self._mini_policies()):
            sk = p.sketch
            out.append(
                (
                    p.capacity,
                    p.window_capacity,
                    p.protected_capacity,
                    p.jitter_threshold,
                    p.reuse_capacity,
                    sk.width,
                    sk._shift,
                    sk._k0,
                    sk._mults,
                    sk.sample_size,
                    i + 1,
                )
            )
        return out

    def _mini_access(self, h: int) -> None:
        """A recorded access (key hash ``h``): a sampled key runs through every shadow;
        every ``_MINI_PERIOD`` sampled accesses the window may move (``_mini_decide``)."""
        if _splitmix64(h ^ self._mini_salt) >> 40 >= self._mini_threshold:
            return
        hits = self._mini_hits
        self._mini_shadows[0].sketch.increment(h)  # the shadows' one sketch
        for i, p in enumerate(self._mini_shadows):
            resident = h in p
            p.on_hit(h)
            if resident:
                hits[i] += 1
            else:
                p.admit(h)
        self._mini_count += 1
        if self._mini_count >= _MINI_PERIOD:
            self._mini_count = 0
            self._mini_hits = [0] * len(hits)
            self._mini_decide(tuple(hits))

    def _mini_decide(self, hits: Sequence[int]) -> None:
        """Each shadow's score becomes ``decay * score + hits``; the window jumps to the best
        shadow's fraction when its score beats the current one's by more than the margin."""
        scores, d = self._mini_scores, self.mini_decay
        for i, x in enumerate(hits):
            scores[i] = d * scores[i] + x
        best = max(range(len(scores)), key=scores.__getitem__)
        cur = self._mini_current
        if best != cur and scores[best] > scores[cur] * (1.0 + self.mini_margin):
            self._mini_current = best
            self.resize_window(self._mini_targets[best])
            self.mini_moves.append(self.window_capacity)

    def _init_segments(self, window: int) -> None:
        """Empty segments and the initial split (the compiled subclass overrides this)."""
        self._mini_shadows = self._mini_policies() if self._mini else []
        self._mini_hits = [0] * len(self._mini_shadows)
        self._mini_count = 0
        self._window: OrderedDict[Key, None] = OrderedDict()
        self._probation: OrderedDict[Key, None] = OrderedDict()
        self._protected: OrderedDict[Key, None] = OrderedDict()
        # the reuse gate (``reuse`` > 0): a clock of accesses, each resident key's last
        # access and last gap; the ghost: a ring of the hashes of the last departures and,
        # for those not back since, hash -> (last access, ring slot)
        self._clock = 0
        self._reuse_pause = 0
        self._last: dict[Key, int] = {}
        self._gap: dict[Key, int] = {}
        self._ghost: dict[int, tuple[int, int]] = {}
        self._ring = [0] * self.reuse_capacity
        self._ring_head = 0
        self._ring_count = 0
        self._departed: int | None = None  # the hash of the key a competition sent away
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

    def _tick(self, key: Key) -> None:
        """The reuse gate's clock: one tick per access; a resident key's last access (and,
        in the window, the gap since its previous one)."""
        self._clock = t = (self._clock + 1) & _U32
        if self._reuse_pause:
            self._reuse_pause -= 1
        last = self._last.get(key)
        if last is not None:
            if key in self._window:
                self._gap[key] = (t - last) & _U32
            self._last[key] = t

    def on_hit(self, key: Key) -> None:
        if self.reuse_capacity:
            self._tick(key)
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
        if self._mini:
            self._mini_access(self.hasher(key) & _M64)
        if self._climbing:
            if not self._full:
                return  # sampling starts once the cache has filled (set by admit)
            self._sample_hits += hit
            self._sample_requests += 1
            if self._sample_requests >= self._period:
                self._climb()

    def on_hits(self, keys: Sequence[Key]) -> None:
        """The loop of :meth:`on_hit` with its lookups hoisted (same effect, in order)."""
        if self.reuse_capacity or self._mini:
            on_hit = self.on_hit
            for key in keys:
                on_hit(key)
            return
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
        if self._mini:
            return  # sizing: mini moves the window (the detector above still runs)
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
        if self.reuse_capacity:
            self._reuse_pause = _REUSE_PAUSE * c  # the old workload's gaps are stale

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
        if not self.reuse_capacity:
            return self._place_new(key)
        # the reuse gate: the offered key's gap since the access the ghost remembers for it,
        # its last access now; once placed, the ghost forgets it. A hasher error here
        # leaves the key without a gap (only a competition needs its hash, and raises
        # it), except a RuntimeError (the policy refusing a re-entry from the hasher)
        try:
            h: int | None = self.hasher(key)
        except RuntimeError:
            raise
        except Exception:
            h = None
        seen = None if h is None else self._ghost.get(h)
        self._gap[key] = _NO_GAP if seen is None else (self._clock - seen[0]) & _U32
        self._last[key] = self._clock
        self._departed = None
        try:
            adm = self._place_new(key)
        except BaseException:
            del self._gap[key], self._last[key]
            raise
        if seen is not None:
            del self._ghost[h]  # type: ignore[arg-type]
        # what left the cache joins the ghost, by the hash its competition computed
        gone = adm.evicted if adm.admitted else (key,)
        for k in gone:
            del self._gap[k]
            last = self._last.pop(k)
            if self._departed is not None:  # always, as main's capacity is >= 1
                self._ghost_add(self._departed, last)
        return adm

    def _ghost_add(self, h: int, last: int) -> None:
        """Remember a departure (key hash ``h``, last access ``last``) in the ghost ring; the
        oldest of the last ``reuse_capacity`` departures is forgotten (unless it has left
        again since, which is then a newer slot's)."""
        ring, cap = self._ring, self.reuse_capacity
        if self._ring_count == cap:
            old = self._ring_head
            entry = self._ghost.get(ring[old])
            if entry is not None and entry[1] == old:
                del self._ghost[ring[old]]
            self._ring_head = (old + 1) % cap
            self._ring_count -= 1
        slot = (self._ring_head + self._ring_count) % cap
        ring[slot] = h
        self._ring_count += 1
        self._ghost[h] = (last, slot)

    def _place_new(self, key: Key) -> Admission:
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
        if not self.reuse_capacity:
            return _tinylfu_admit(
                self.sketch, self.hasher, self.rng, self.jitter_threshold, candidate, victim
            )
        hc, hv = self.hasher(candidate), self.hasher(victim)
        ok = _tinylfu_admit_hashed(self.sketch, self.rng, self.jitter_threshold, hc, hv)
        if ok and not self._reuse_pause:
            # the reuse gate: the candidate's last gap must be shorter than the time the
            # victim has been idle (a key reused sooner than the victim is expected back)
            ok = self._gap[candidate] < (self._clock - self._last[victim]) & _U32
        self._departed = hv if ok else hc  # the hash of the key that leaves
        return ok

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
                if self.reuse_capacity:
                    del self._last[key], self._gap[key]
                return True
        return False

    def keys(self) -> Iterator[Key]:
        """Window, then probation, then protected; least recently used first in each."""
        return iter([*self._window, *self._probation, *self._protected])
