"""Prometheus exporter: stats() as metric families, served over HTTP on loopback."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.conftest import CountingEncoder, make_config  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402
from tiercache import TierCache  # noqa: E402
from tiercache.errors import ConfigError  # noqa: E402
from tiercache.metrics import TierCacheCollector, register, serve_metrics  # noqa: E402


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_mirror_stats(tmp_path: Path) -> None:
    with TierCache(make_config(tmp_path), encoder=CountingEncoder()) as cache:
        cache.embed_many(["a", "b", "a"])
        cache.embed("a")
        reg = CollectorRegistry()
        register(cache, reg, labels={"service": "search"})
        got = samples(generate_latest(reg).decode())
        st = cache.stats()
    svc = (("service", "search"),)
    assert got[("tiercache_lookups_total", svc)] == st["lookups"]
    assert (
        got[("tiercache_hits_total", (("service", "search"), ("tier", "hot")))]
        == st["tiers"]["hot"]["hits"]
    )
    assert (
        got[("tiercache_misses_total", (("service", "search"), ("tier", "warm")))]
        == st["tiers"]["warm"]["misses"]
    )
    assert got[("tiercache_encoder_texts_total", svc)] == 2
    assert got[("tiercache_entries", (("service", "search"), ("tier", "warm")))] == 2
    assert (
        "tiercache_latency_seconds",
        (("quantile", "0.99"), ("service", "search"), ("tier", "hot")),
    ) in got
    assert not any(name.startswith("tiercache_shared") for name, _ in got)


def test_metrics_over_http_with_the_shared_tier(tmp_path: Path, redis_server: RedisServer) -> None:
    cfg = make_config(tmp_path, shared={"url": redis_server.url})
    with TierCache(cfg, encoder=CountingEncoder()) as cache:
        cache.embed_many(["x", "y"])
        cache.drop("x")  # one invalidation: logged, applied, published on the stream
        port = free_port()
        server, thread = serve_metrics(cache, port)
        try:
            body = (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
                .read()
                .decode()
            )
        finally:
            server.shutdown()
    got = samples(body)
    assert got[("tiercache_shared_up", ())] == 1.0
    assert got[("tiercache_writes_total", (("tier", "shared"),))] == 2
    assert got[("tiercache_shared_outages_total", ())] == 0
    assert got[("tiercache_shared_forged_total", ())] == 0
    assert got[("tiercache_invalidation_published_total", ())] == 1
    assert got[("tiercache_invalidation_entries_applied_total", ())] == 1
    assert got[("tiercache_invalidation_connected", ())] == 1.0
    assert got[("tiercache_invalidation_blocked", ())] == 0.0


def test_bad_prefix_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        TierCacheCollector(object(), prefix="bad-prefix!")
