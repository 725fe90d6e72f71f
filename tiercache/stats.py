"""Counters and latency percentiles, and their printed form.

``TierStats`` counts one tier's hits, misses, promotions (into this tier), demotions (out
of it), writes, evictions/rejections by reason, errors, and (shared tier) calls skipped
while Redis is in back-off after a failure. ``LatencyRecorder`` keeps the last
``size`` samples of a tier's lookup latency (a ring buffer, so memory is bounded) and
reports p50/p90/p99/max over them. Updates are made by ``TierCache`` under its lock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TIERS = ("hot", "warm", "shared", "cold")


class LatencyRecorder:
    """Ring buffer of the most recent latencies, in seconds."""

    __slots__ = ("_buf", "_n", "_size")

    def __init__(self, size: int = 8192) -> None:
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0
        self._size = size

    def add(self, seconds: float) -> None:
        self._buf[self._n % self._size] = seconds
        self._n += 1

    def percentiles(self) -> dict[str, float]:
        """``{"count", "p50", "p90", "p99", "max"}`` in microseconds (count: samples seen)."""
        k = min(self._n, self._size)
        if k == 0:
            return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
        data = self._buf[:k] * 1e6
        p50, p90, p99 = np.percentile(data, [50, 90, 99])
        return {
            "count": self._n,
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "max": float(data.max()),
        }


@dataclass
class TierStats:
    hits: int = 0
    misses: int = 0
    promotions: int = 0
    demotions: int = 0
    writes: int = 0
    evictions: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    corrupt: int = 0
    expired: int = 0
    errors: int = 0
    skipped: int = 0
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)

    def to_dict(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hits / lookups if lookups else 0.0,
            "promotions": self.promotions,
            "demotions": self.demotions,
            "writes": self.writes,
            "evictions": dict(self.evictions),
            "rejections": dict(self.rejections),
            "corrupt": self.corrupt,
            "expired": self.expired,
            "errors": self.errors,
            "skipped": self.skipped,
            "latency_us": self.latency.percentiles(),
        }


@dataclass
class EncoderStats:
    calls: int = 0
    texts: int = 0
    errors: int = 0
    seconds: float = 0.0
    max_batch: int = 0
    deduplicated: int = 0
    waited: int = 0
    load_seconds: float = 0.0  # model loads inside encode calls, kept out of the latency
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "texts": self.texts,
            "errors": self.errors,
            "seconds": self.seconds,
            "mean_batch": self.texts / self.calls if self.calls else 0.0,
            "max_batch": self.max_batch,
            "deduplicated": self.deduplicated,
            "single_flight_waits": self.waited,
            "load_seconds": self.load_seconds,
            "latency_us": self.latency.percentiles(),
        }


def format_stats(stats: dict[str, Any]) -> str:
    """A fixed-width table of a ``TierCache.stats()`` dict, as the CLI prints it."""
    tiers = stats["tiers"]
    lines = [
        f"{'tier':<6} {'hits':>9} {'misses':>9} {'hit%':>6} {'promo':>7} {'demo':>7} "
        f"{'evict':>7} {'reject':>7} {'corrupt':>7} {'entries':>9} {'bytes':>11} "
        f"{'p50 us':>8} {'p99 us':>8}",
    ]
    for name in ("hot", "warm", "shared"):
        t = tiers.get(name)
        if t is None:
            continue
        lat = t["latency_us"]
        lines.append(
            f"{name:<6} {t['hits']:>9} {t['misses']:>9} {100 * t['hit_ratio']:>6.1f} "
            f"{t['promotions']:>7} {t['demotions']:>7} {sum(t['evictions'].values()):>7} "
            f"{sum(t['rejections'].values()):>7} {t['corrupt']:>7} {t.get('entries', 0):>9} "
            f"{t.get('bytes', 0):>11} {lat['p50']:>8.1f} {lat['p99']:>8.1f}"
        )
    sh = tiers.get("shared")
    if sh is not None:
        lines.append(
            f"shared {sh.get('state', '?')}: {sh['errors']} errors, {sh['skipped']} lookups "
            f"skipped in back-off, {sh.get('outages', 0)} outages, {sh['writes']} writes, "
            f"{sh.get('forged', 0)} forged refused"
            + (f"; last error: {sh['last_error']}" if sh.get("last_error") else "")
        )
    enc = stats["encoder"]
    lat = enc["latency_us"]
    lines.append(
        f"{'cold':<6} {enc['texts']:>9} {'-':>9} {'-':>6} {'-':>7} {'-':>7} {'-':>7} {'-':>7} "
        f"{enc['errors']:>7} {'-':>9} {'-':>11} {lat['p50']:>8.1f} {lat['p99']:>8.1f}"
    )
    lines.append(
        f"lookups {stats['lookups']}  encoder calls {enc['calls']} "
        f"(mean batch {enc['mean_batch']:.1f}, {enc['seconds']:.2f} s)  "
        f"single-flight waits {enc['single_flight_waits']}  "
        f"deduplicated {enc['deduplicated']}"
        + (
            f"  model load {enc['load_seconds']:.2f} s (not in the cold latency)"
            if enc.get("load_seconds")
            else ""
        )
    )
    return "\n".join(lines)
