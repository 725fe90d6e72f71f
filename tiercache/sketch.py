"""A seeded count-min sketch of access frequencies, with aging (Caffeine's ``FrequencySketch``).

Pure: no I/O, no clock, no threads. Not thread-safe; the owner (``PolicyEngine``) serialises
calls.

Layout: ``depth = 4`` rows of ``width`` saturating 4-bit counters (values ``0..15``) held
one per byte in a ``(4, width)`` ``uint8`` numpy array, so ``4 * width`` bytes in all.
``width`` is the smallest power of two ``>= capacity`` (at least 16).

Indexing: a key's 64-bit hash ``h`` is first mixed with a per-instance secret
(``splitmix64(h ^ k0)``, ``k0`` derived from the seed), then row ``r`` uses a
multiply-shift hash with its own odd multiplier ``A_r`` (also derived from the seed):
``index_r = ((z * A_r) mod 2**64) >> (64 - log2(width))``. An attacker who does not know
the seed cannot aim keys at the same counters. The scalar path (Python ints, masked to 64
bits) and the numpy path (wrapping ``uint64`` arithmetic) compute the same indices.

Aging: every call to :meth:`FrequencySketch.increment` (and every element of
:meth:`FrequencySketch.increment_many`) counts one *addition*, saturated counters included.
When ``additions`` reaches ``sample_size`` (by default ``sample_factor * max(capacity, 1)``;
the owner may pass its own, e.g. tied to the cache size rather than the sketch width), every
counter is halved (``c >> 1``) and ``additions`` is halved too; ``resets`` counts these events.
(Caffeine counts only additions that changed a counter and corrects the halved count for
truncation; counting every addition keeps the batch path exactly equal to the scalar path
and ages slightly sooner under saturation.)
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ConfigError

__all__ = ["FrequencySketch", "DEPTH", "MAX_COUNT"]

DEPTH = 4
"""Rows of counters (independent hash functions)."""

MAX_COUNT = 15
"""Counters saturate here (4-bit counters, as in Caffeine)."""

_SCALAR_BATCH = 16
"""Batches up to this size are applied one by one (same result, less fixed cost)."""

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def _splitmix64(x: int) -> int:
    """The splitmix64 output function (a bijection on 64-bit ints), on Python ints."""
    z = x & _M64
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


_U30 = np.uint64(30)
_U27 = np.uint64(27)
_U31 = np.uint64(31)
_UC1 = np.uint64(_C1)
_UC2 = np.uint64(_C2)

UInt64Array = npt.NDArray[np.uint64]
Hashes = npt.NDArray[Any] | Iterable[int]
"""Hashes accepted by the batch methods: an integer numpy array or an iterable of ints."""


def _splitmix64_np(x: UInt64Array) -> UInt64Array:
    """:func:`_splitmix64` on a ``uint64`` array (numpy arrays wrap silently on overflow)."""
    z = (x ^ (x >> _U30)) * _UC1
    z = (z ^ (z >> _U27)) * _UC2
    out: UInt64Array = z ^ (z >> _U31)
    return out


class FrequencySketch:
    """Count-min sketch: depth 4, saturating 4-bit counters, periodic halving, seeded index.

    ``capacity`` is the number of distinct keys whose frequencies should be told apart
    (usually the number of entries the caches it serves can hold); ``width`` is the smallest
    power of two ``>= capacity`` (minimum 16). ``frequency(h)`` is the minimum of the key's
    4 counters: never below ``min(true count, 15)`` until the first halving, possibly above
    it when keys collide.

    Attributes:
        width: counters per row (power of two).
        sample_size: additions between two halvings (the ``sample_size`` argument, else
            ``sample_factor * max(capacity, 1)``).
        additions: additions since the last halving (halved at each halving).
        resets: number of halvings so far.
        table: the ``(4, width)`` ``uint8`` counter array (read-only use, please).
    """

    __slots__ = (
        "capacity",
        "width",
        "sample_size",
        "additions",
        "resets",
        "table",
        "_counts",
        "_flat",
        "_shift",
        "_k0",
        "_mults",
        "_k0_np",
        "_mults_np",
        "_shift_np",
        "_row_offsets",
    )

    def __init__(
        self,
        capacity: int,
        *,
        seed: int,
        sample_factor: int = 10,
        sample_size: int | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigError("sketch.capacity", capacity, "must be an integer >= 0")
        if (
            isinstance(sample_factor, bool)
            or not isinstance(sample_factor, int)
            or sample_factor < 1
        ):
            raise ConfigError("sketch.sample_factor", sample_factor, "must be an integer >= 1")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError("sketch.seed", seed, "must be an integer")
        if sample_size is not None and (
            isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1
        ):
            raise ConfigError("sketch.sample_size", sample_size, "must be an integer >= 1")
        self.capacity = capacity
        width = 16
        while width < capacity:
            width <<= 1
        self.width = width
        self.sample_size = sample_factor * max(capacity, 1) if sample_size is None else sample_size
        self.additions = 0
        self.resets = 0
        # One buffer, two views: a bytearray for fast scalar access from Python and a numpy
        # array over the same memory for vectorised work.
        self._counts = bytearray(DEPTH * width)
        self._flat: npt.NDArray[np.uint8] = np.frombuffer(self._counts, dtype=np.uint8)
        self.table: npt.NDArray[np.uint8] = self._flat.reshape(DEPTH, width)
        self._shift = 64 - (width.bit_length() - 1)
        s = seed & _M64
        self._k0 = _splitmix64(s + _GOLDEN)
        self._mults = tuple(_splitmix64(s + (r + 2) * _GOLDEN) | 1 for r in range(DEPTH))
        self._k0_np = np.uint64(self._k0)
        self._mults_np = tuple(np.uint64(m) for m in self._mults)
        self._shift_np = np.uint64(self._shift)
        self._row_offsets = (np.arange(DEPTH, dtype=np.intp) * width)[:, None]

    # -- indexing -------------------------------------------------------------------------

    def indices(self, h: int) -> tuple[int, int, int, int]:
        """The counter index in each row for hash ``h`` (taken modulo 2**64)."""
        z = _splitmix64((h & _M64) ^ self._k0)
        shift = self._shift
        m = self._mults
        return (
            ((z * m[0]) & _M64) >> shift,
            ((z * m[1]) & _M64) >> shift,
            ((z * m[2]) & _M64) >> shift,
            ((z * m[3]) & _M64) >> shift,
        )

    def indices_many(self, hashes: Hashes) -> npt.NDArray[np.intp]:
        """Row indices for many hashes: an ``(4, n)`` array, column ``i`` = ``indices(h_i)``."""
        h = _as_u64(hashes)
        z = _splitmix64_np(h ^ self._k0_np)
        out = np.empty((DEPTH, h.shape[0]), dtype=np.intp)
        for r in range(DEPTH):
            out[r] = (z * self._mults_np[r]) >> self._shift_np
        return out

    # -- updates --------------------------------------------------------------------------

    def increment(self, h: int) -> None:
        """Count one access of the key hashing to ``h``; may trigger a halving."""
        c = self._counts
        w = self.width
        i0, i1, i2, i3 = self.indices(h)
        for i in (i0, w + i1, 2 * w + i2, 3 * w + i3):
            if c[i] < MAX_COUNT:
                c[i] += 1
        self.additions += 1
        if self.additions >= self.sample_size:
            self._reset()

    def increment_many(self, hashes: Hashes) -> None:
        """Count one access per element, in order; identical to ``increment`` per element.

        The batch is split at halving boundaries; within a segment, a counter hit ``k``
        times goes to ``min(c + k, 15)``, which is exactly what ``k`` sequential saturating
        increments give.
        """
        h = _as_u64(hashes)
        n = h.shape[0]
        if n <= _SCALAR_BATCH:
            # numpy's fixed cost dominates tiny batches; the scalar path is identical.
            for x in h.tolist():
                self.increment(x)
            return
        pos = 0
        while pos < n:
            room = self.sample_size - self.additions
            seg = h[pos : pos + room]
            self._add_segment(seg)
            pos += seg.shape[0]
            self.additions += seg.shape[0]
            if self.additions >= self.sample_size:
                self._reset()

    def _add_segment(self, h: UInt64Array) -> None:
        if h.shape[0] == 0:
            return
        idx = self.indices_many(h)
        idx += self._row_offsets
        uniq, counts = np.unique(idx, return_counts=True)
        flat = self._flat
        flat[uniq] = np.minimum(flat[uniq] + counts, MAX_COUNT)

    def _reset(self) -> None:
        """Halve every counter and the addition count (aging)."""
        self.table >>= 1
        self.additions >>= 1
        self.resets += 1

    # -- queries --------------------------------------------------------------------------

    def frequency(self, h: int) -> int:
        """Estimated access count (0..15) of the key hashing to ``h``: min over the rows."""
        c = self._counts
        w = self.width
        i0, i1, i2, i3 = self.indices(h)
        return min(c[i0], c[w + i1], c[2 * w + i2], c[3 * w + i3])

    def frequency_many(self, hashes: Hashes) -> npt.NDArray[np.uint8]:
        """``frequency`` of each hash, as a ``uint8`` array of the same length."""
        idx = self.indices_many(hashes)
        t = self.table
        est: npt.NDArray[np.uint8] = np.minimum(
            np.minimum(t[0, idx[0]], t[1, idx[1]]), np.minimum(t[2, idx[2]], t[3, idx[3]])
        )
        return est


def _as_u64(hashes: Hashes) -> UInt64Array:
    """A 1-D ``uint64`` array of ``hashes``, each taken modulo 2**64.

    Accepts an integer numpy array (signed values wrap, as ``h & (2**64 - 1)`` does) or any
    iterable of Python ints.
    """
    if isinstance(hashes, np.ndarray):
        if hashes.dtype == np.uint64:
            return hashes.reshape(-1)
        if hashes.dtype.kind not in "iu" and hashes.size:
            raise TypeError(f"hashes must be integers, not {hashes.dtype}")
        out: UInt64Array = hashes.astype(np.uint64).reshape(-1)
        return out
    if not isinstance(hashes, Iterable):
        raise TypeError(f"hashes must be an array or an iterable of ints, not {type(hashes)}")
    return np.fromiter((operator.index(h) & _M64 for h in hashes), dtype=np.uint64)
