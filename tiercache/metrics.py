"""Prometheus metrics for a TierCache (optional dependency ``prometheus-client``).

:class:`TierCacheCollector` turns ``TierCache.stats()`` into Prometheus metric families
on every scrape (nothing is counted twice: the cache's own counters are the source of
truth). ``serve_metrics`` starts prometheus-client's HTTP server, on loopback unless told
otherwise::

    from tiercache.metrics import serve_metrics
    serve_metrics(cache, port=9464)            # http://127.0.0.1:9464/metrics

Metric names (prefix ``tiercache_`` by default; ``tier`` is hot, warm or shared):

* ``lookups_total``; per tier ``hits_total``, ``misses_total``, ``promotions_total``,
  ``demotions_total``, ``writes_total``, ``errors_total``, ``corrupt_total``,
  ``expired_total``, ``skipped_total`` (shared calls skipped in back-off),
  ``evictions_total{reason}``, ``rejections_total{reason}``;
* per tier gauges ``entries``, ``bytes``, ``capacity_entries`` and
  ``latency_seconds{quantile}`` (0.5, 0.9, 0.99 and 1 = max over the recent window);
* ``encoder_calls_total``, ``encoder_texts_total``, ``encoder_errors_total``,
  ``encoder_seconds_total``, ``encoder_deduplicated_total``,
  ``encoder_single_flight_waits_total``, ``encoder_latency_seconds{quantile}``;
* ``shared_up`` (1 while the shared tier is not in back-off), ``shared_outages_total``,
  ``shared_forged_total`` (records refused by their tag, docs/reliability.md);
* ``invalidation_syncs_total``, ``invalidation_entries_applied_total``,
  ``invalidation_hot_removed_total``, ``invalidation_overflows_total`` and, with the fleet
  stream, ``invalidation_{published,received,applied,history_lost,outages}_total``,
  ``invalidation_blocked_seconds_total`` and gauges ``invalidation_connected``,
  ``invalidation_blocked``, ``invalidation_queued``.

Extra constant labels (``labels={"service": "search"}``) tell several caches apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .errors import ConfigError

try:
    from prometheus_client.core import (
        REGISTRY,
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "tiercache.metrics needs prometheus-client: pip install 'tiercache[metrics]'"
    ) from exc

_COUNTERS = (
    "hits",
    "misses",
    "promotions",
    "demotions",
    "writes",
    "errors",
    "corrupt",
    "expired",
    "skipped",
    "quarantined",
    "switches",
)
_QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"), ("1", "max"))


class TierCacheCollector(Collector):
    """A Prometheus collector reading ``cache.stats()`` at every scrape."""

    def __init__(
        self, cache: Any, *, prefix: str = "tiercache", labels: Mapping[str, str] | None = None
    ) -> None:
        if not prefix.replace("_", "").isalnum():
            raise ConfigError("metrics.prefix", prefix, "letters, digits and '_' only")
        self.cache = cache
        self.prefix = prefix
        self.labels = dict(labels or {})

    def _name(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def collect(self) -> Iterator[Metric]:  # noqa: C901
        st = self.cache.stats()
        base_keys = list(self.labels)
        base = list(self.labels.values())

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(self._name(name), doc, labels=base_keys + list(extra))

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(self._name(name), doc, labels=base_keys + list(extra))

        lookups = counter("lookups", "Lookups (embed, get) served by the cache.")
        lookups.add_metric(base, st["lookups"])
        yield lookups

        tiers: dict[str, Any] = st["tiers"]
        for field in _COUNTERS:
            fam = counter(field, f"Per-tier {field} (see TierCache.stats()).", ("tier",))
            for tier, t in tiers.items():
                fam.add_metric(base + [tier], t.get(field, 0))
            yield fam
        for field in ("evictions", "rejections"):
            fam = counter(field, f"Per-tier {field} by reason.", ("tier", "reason"))
            for tier, t in tiers.items():
                for reason, n in sorted(t.get(field, {}).items()):
                    fam.add_metric(base + [tier, reason], n)
            yield fam
        for field, name, doc in (
            ("entries", "entries", "Entries held per tier."),
            ("bytes", "bytes", "Bytes used per tier."),
            ("capacity", "capacity_entries", "Entry capacity per tier."),
        ):
            g = gauge(name, doc, ("tier",))
            for tier, t in tiers.items():
                if t.get(field) is not None:
                    g.add_metric(base + [tier], float(t[field]))
            yield g
        lat = gauge(
            "latency_seconds", "Recent per-tier lookup latency quantiles.", ("tier", "quantile")
        )
        for tier, t in tiers.items():
            for q, key in _QUANTILES:
                lat.add_metric(base + [tier, q], t["latency_us"][key] / 1e6)
        yield lat

        enc = st["encoder"]
        for field, name in (
            ("calls", "calls"),
            ("texts", "texts"),
            ("errors", "errors"),
            ("seconds", "seconds"),
            ("deduplicated", "deduplicated"),
            ("single_flight_waits", "single_flight_waits"),
        ):
            fam = counter(f"encoder_{name}", f"Encoder {field.replace('_', ' ')}.")
            fam.add_metric(base, enc[field])
            yield fam
        elat = gauge(
            "encoder_latency_seconds", "Recent encoder call latency quantiles.", ("quantile",)
        )
        for q, key in _QUANTILES:
            elat.add_metric(base + [q], enc["latency_us"][key] / 1e6)
        yield elat

        shared = tiers.get("shared")
        if shared is not None:
            up = gauge("shared_up", "1 while the shared tier (Redis) is not in back-off.")
            up.add_metric(base, 1.0 if shared.get("state") == "up" else 0.0)
            yield up
            out = counter("shared_outages", "Outages of the shared tier since start.")
            out.add_metric(base, shared.get("outages", 0))
            yield out
            forged = counter(
                "shared_forged", "Shared records refused: their tag did not verify (misses)."
            )
            forged.add_metric(base, shared.get("forged", 0))
            yield forged
        yield from _invalidation(st.get("invalidation") or {}, counter, gauge, base)


_INVAL = (
    ("syncs", "invalidation_syncs", "Catch-ups on the warm store's invalidation log."),
    ("entries_applied", "invalidation_entries_applied", "Invalidation log entries applied."),
    ("hot_removed", "invalidation_hot_removed", "Hot entries removed by invalidations."),
    ("overflows", "invalidation_overflows", "Catch-ups further behind than the log keeps."),
)
_FLEET = (
    ("published", "invalidation_published", "Invalidations published on the fleet stream."),
    ("received", "invalidation_received", "Fleet stream entries read."),
    ("applied", "invalidation_applied", "Other hosts' invalidations applied to this host."),
    ("history_lost", "invalidation_history_lost", "Fleet stream histories found lost."),
    ("outages", "invalidation_outages", "Losses of contact with the fleet stream."),
)


def _invalidation(inv: Mapping[str, Any], counter: Any, gauge: Any, base: list[str]) -> Any:
    """The invalidation counters (``stats()["invalidation"]``) as metric families."""
    for field, name, doc in _INVAL:
        fam = counter(name, doc)
        fam.add_metric(base, inv.get(field, 0))
        yield fam
    fleet = inv.get("fleet")
    if fleet is None:
        return
    for field, name, doc in _FLEET:
        fam = counter(name, doc)
        fam.add_metric(base, fleet.get(field, 0))
        yield fam
    for field, name, doc in (
        ("connected", "invalidation_connected", "1 while the fleet stream is being read."),
        ("blocked", "invalidation_blocked", "1 while local copies are not served (miss mode)."),
        ("queued", "invalidation_queued", "Invalidations waiting for Redis to be published."),
    ):
        g = gauge(name, doc)
        g.add_metric(base, float(fleet.get(field) or 0))
        yield g
    b = counter("invalidation_blocked_seconds", "Seconds local copies were not served.")
    b.add_metric(base, fleet.get("blocked_seconds", 0.0))
    yield b


def register(
    cache: Any,
    registry: CollectorRegistry = REGISTRY,
    *,
    prefix: str = "tiercache",
    labels: Mapping[str, str] | None = None,
) -> TierCacheCollector:
    """Register a collector for ``cache`` (default: prometheus-client's global registry)."""
    collector = TierCacheCollector(cache, prefix=prefix, labels=labels)
    registry.register(collector)
    return collector


def serve_metrics(
    cache: Any,
    port: int,
    addr: str = "127.0.0.1",
    *,
    registry: CollectorRegistry | None = None,
    prefix: str = "tiercache",
    labels: Mapping[str, str] | None = None,
) -> Any:
    """Register ``cache`` and serve ``/metrics`` on ``addr:port`` (loopback by default) in
    a daemon thread; returns prometheus-client's ``(server, thread)``."""
    from prometheus_client import start_http_server

    reg = registry if registry is not None else CollectorRegistry()
    register(cache, reg, prefix=prefix, labels=labels)
    return start_http_server(port, addr=addr, registry=reg)


__all__ = ["TierCacheCollector", "register", "serve_metrics"]
