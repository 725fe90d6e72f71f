"""The hot + warm simulator (``simulate_tiers``) against a live TierCache, ``simulate`` and
LMDB's own sampler; the three-level latency model; ``tiercache sim --warm``."""

from __future__ import annotations

import json
import random
from bisect import bisect_left
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tiercache import TierCache
from tiercache.cache import warm_capacity as cache_warm_capacity
from tiercache.codec import record_size
from tiercache.errors import ConfigError
from tiercache.keys import KeyMaker
from tiercache.policy import PolicyEngine
from tiercache.sim import (
    TieredSimResult,
    sim_key_digest,
    simulate,
    simulate_tiers,
    warm_entries,
    zipf_trace,
)
from tiercache.sim.report import LatencyModel, step_quantile
from tiercache.sim.tiers import ENCODER, HOT, WARM, WarmStoreModel, _SortedDigests

from .conftest import CountingEncoder, make_config

# ----------------------------------------------------------------------------------------
# differential: the live cache


def _replay_live(
    tmp_path: Path, texts: list[str], **policy: Any
) -> tuple[dict[str, Any], int, int, int, TierCache, list[bytes]]:
    """Embed ``texts`` one at a time into a real TierCache (hot 64 entries, LMDB warm
    bounded to ~150 entries); returns (stats, encoded texts, hot cap, warm cap, cache,
    keys). The cache is left open for the caller to inspect (and close)."""
    cfg = make_config(tmp_path, warm={"max_bytes": 150 * 214}, policy={"seed": 5, **policy})
    enc = CountingEncoder()
    cache = TierCache(cfg, encoder=enc)
    for t in texts:
        cache.embed(t)
    keys = [KeyMaker(cache.fingerprint).digest(t) for t in texts]
    return (cache.stats(), enc.texts, cache._hot.capacity, cache._engine.warm_capacity, cache, keys)


@pytest.mark.parametrize(
    ("policy", "warm_min_frequency"), [("wtinylfu", 0), ("lru", 0), ("wtinylfu", 2)]
)
def test_tiers_equal_live_cache_on_the_same_trace(
    tmp_path: Path, policy: str, warm_min_frequency: int
) -> None:
    texts = [f"query {i}" for i in zipf_trace(0.9, 600, 2500, seed=11)]
    st, encoded, hot_cap, warm_cap, cache, keys = _replay_live(
        tmp_path, texts, name=policy, warm_min_frequency=warm_min_frequency
    )
    try:
        live_keys = set(cache._warm.keys()) if cache._warm is not None else set()
    finally:
        cache.close()
    hot, warm = st["tiers"]["hot"], st["tiers"]["warm"]
    assert 100 < warm_cap < 200 and hot_cap == 64  # the warm tier is under pressure
    order: list[int] = []
    r = simulate_tiers(
        keys,
        hot_capacity=hot_cap,
        warm_capacity=warm_cap,
        policy=policy,
        seed=5,
        warm_min_frequency=warm_min_frequency,
        tiers_out=np.zeros(len(keys), dtype=np.uint8),
        progress=order.append,
    )
    # the three outcomes of a lookup: identical
    assert (r.hot_hits, r.warm_hits, r.encoder_calls) == (hot["hits"], warm["hits"], encoded)
    # and every decision behind them
    assert r.warm_writes == warm["writes"]
    assert r.warm_evictions == warm["evictions"].get("capacity", 0)
    assert r.warm_gate_rejects == warm["rejections"].get("min_frequency", 0)
    assert r.hot_evicted == hot["evictions"].get("capacity", 0) == hot["demotions"]
    assert r.hot_admitted == hot["promotions"]
    assert r.hot_rejected == sum(hot["rejections"].values())
    assert r.warm_entries == warm["entries"] == len(live_keys)
    # the test is not vacuous: every tier serves, warm evicts, the gate works when set
    assert r.hot_hits > 0 and r.warm_hits > 0 and r.warm_evictions > 0
    assert (r.warm_gate_rejects > 0) == (warm_min_frequency > 0)
    assert r.hot_hits + r.warm_hits + r.encoder_calls == len(texts)
    assert order[-1] == len(texts)


def test_warm_model_samples_what_lmdb_samples(tmp_path: Path) -> None:
    """The store model answers probes like ``LmdbTier.sample`` on the same keys."""
    texts = [f"doc {i}" for i in range(120)]
    cfg = make_config(tmp_path)
    with TierCache(cfg, encoder=CountingEncoder()) as cache:
        for t in texts:
            cache.embed(t)
        assert cache._warm is not None
        stored = list(cache._warm.keys())
        model = WarmStoreModel()
        engine = PolicyEngine(hot_capacity=1, warm_capacity=10**6, seed=0)
        model.put_bounded(stored, 10**6, engine)
        rng = random.Random(3)
        probes = [rng.getrandbits(128).to_bytes(16, "little") for _ in range(400)]
        probes += [b"\xff" * 16, b"\x00" * 16, stored[0], max(stored)]  # wrap and bounds
        assert model.sample(probes) == cache._warm.sample(probes)
    assert len(stored) == len(texts)


def test_sorted_digests_match_a_sorted_list() -> None:
    rng = random.Random(1)
    ref: list[bytes] = []
    sd = _SortedDigests()
    assert sd.ceiling(b"\0" * 16) is None
    pool = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(4000)]
    for i, d in enumerate(pool):  # enough to split chunks, with deletes interleaved
        sd.add(d)
        ref.insert(bisect_left(ref, d), d)
        if i % 3 == 2:
            victim = ref.pop(rng.randrange(len(ref)))
            assert sd.discard(victim) and not sd.discard(victim)
    assert len(sd) == len(ref)
    for _ in range(2000):
        p = rng.getrandbits(128).to_bytes(16, "big")
        j = bisect_left(ref, p)
        assert sd.ceiling(p) == (ref[j] if j < len(ref) else ref[0])
    for d in ref:
        assert sd.ceiling(d) == d


# ----------------------------------------------------------------------------------------
# against simulate(): the hot tier's decisions do not depend on the warm model


@pytest.mark.parametrize("policy", ["wtinylfu", "tinylfu"])  # both read the sketch
def test_hot_decisions_equal_simulate(policy: str) -> None:
    trace = zipf_trace(0.9, 2000, 4000, seed=4)
    for warm in (0, 150, 5000):
        r = simulate_tiers(trace, hot_capacity=80, warm_capacity=warm, policy=policy, seed=9)
        s = simulate(trace, capacity=80, policy=policy, seed=9, warm_capacity=warm)
        assert r.hot_hits == s.hits and r.hot_evicted == s.evicted
        assert (r.hot_admitted, r.hot_rejected) == (s.admitted, s.rejected)


def test_no_warm_tier_equals_simulate_and_prices_every_miss_as_the_encoder() -> None:
    trace = zipf_trace(1.0, 1500, 5000, seed=2)
    mask = np.zeros(len(trace), dtype=bool)
    s = simulate(trace, capacity=60, seed=1, misses_out=mask)
    where = np.full(len(trace), 9, dtype=np.uint8)
    r = simulate_tiers(trace, hot_capacity=60, warm_capacity=0, seed=1, tiers_out=where)
    assert r.hot_view() == s
    assert r.warm_hits == r.warm_writes == r.warm_entries == r.demotions == 0
    assert r.encoder_calls == s.misses
    assert np.array_equal(where == ENCODER, mask) and np.array_equal(where == HOT, ~mask)


def test_bigger_warm_never_adds_encoder_calls_without_capacity_pressure() -> None:
    trace = zipf_trace(0.8, 800, 6000, seed=6)
    distinct = len(np.unique(trace))
    where = np.zeros(len(trace), dtype=np.uint8)
    small = simulate_tiers(trace, hot_capacity=40, warm_capacity=100)
    calls = []
    for warm in (distinct, distinct + 1, 2 * distinct, 10**6):
        r = simulate_tiers(trace, hot_capacity=40, warm_capacity=warm, tiers_out=where)
        calls.append(r.encoder_calls)
        # no pressure: each key is computed once, written once, never evicted
        assert r.encoder_calls == r.warm_writes == r.warm_entries == distinct
        assert r.warm_evictions == r.demotions == 0
        assert int((where == WARM).sum()) == r.warm_hits == r.hot_misses - distinct
    assert calls == sorted(calls, reverse=True)
    assert small.encoder_calls > calls[0] and small.warm_evictions > 0


def test_no_hot_tier_serves_from_warm_and_offers_nothing() -> None:
    trace = zipf_trace(1.0, 300, 3000, seed=8)
    r = simulate_tiers(trace, hot_capacity=0, warm_capacity=10_000)
    assert r.hot_hits == r.hot_admitted == r.hot_rejected == 0  # as the cache: no offers
    assert r.encoder_calls == len(np.unique(trace)) and r.warm_hits == 3000 - r.encoder_calls


def test_digests_and_results() -> None:
    d = b"k" * 16
    assert sim_key_digest(d) is d  # the cache's digests order themselves
    assert sim_key_digest(7) == sim_key_digest(np.int64(7)) != sim_key_digest(8)
    assert len({sim_key_digest(x) for x in (7, "7", b"7", -1, 2**64 - 1)}) == 5
    with pytest.raises(TypeError):
        sim_key_digest(1.5)
    r = simulate_tiers([1, 2, 1, 3, 1, 2], hot_capacity=1, warm_capacity=10, policy="lru")
    assert (r.hot_hits, r.warm_hits, r.encoder_calls) == (0, 3, 3)
    assert r.to_dict()["warm_hit_ratio"] == pytest.approx(0.5)
    assert r.local_hit_ratio == pytest.approx(0.5) and r.warm_local_hit_ratio == 0.5


def test_input_validation() -> None:
    trace = [1, 2, 3]
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ConfigError, match="warm_capacity"):
            simulate_tiers(trace, hot_capacity=1, warm_capacity=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="hot_capacity"):
            simulate_tiers(trace, hot_capacity=bad, warm_capacity=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="belady"):
        simulate_tiers(trace, hot_capacity=1, warm_capacity=1, policy="belady")
    with pytest.raises(ConfigError, match="policy.name"):
        simulate_tiers(trace, hot_capacity=1, warm_capacity=1, policy="nope")
    with pytest.raises(ConfigError, match="eviction_samples"):
        simulate_tiers(trace, hot_capacity=1, warm_capacity=1, eviction_samples=0)
    with pytest.raises(ConfigError, match="warm_min_frequency"):
        simulate_tiers(trace, hot_capacity=1, warm_capacity=1, warm_min_frequency=-1)
    with pytest.raises(ValueError, match="tiers_out"):
        simulate_tiers(trace, hot_capacity=1, warm_capacity=1, tiers_out=np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="tiers_out"):
        simulate_tiers(
            trace, hot_capacity=1, warm_capacity=1, tiers_out=np.zeros(2, dtype=np.uint8)
        )
    with pytest.raises(TypeError):
        simulate_tiers([1.5, 2.5], hot_capacity=1, warm_capacity=1)
    with pytest.raises(ConfigError, match="warm.max_bytes"):
        warm_entries(0, 384)
    with pytest.raises(ConfigError, match="encoder.dim"):
        warm_entries(2**30, 0)
    with pytest.raises(ConfigError, match="warm.codec"):
        warm_entries(2**30, 384, "float64")


def test_warm_entries_is_the_live_conversion() -> None:
    assert warm_entries(8 * 2**30, 384) == cache_warm_capacity(
        8 * 2**30, record_size(384, "float32")
    )
    assert 3_000_000 < warm_entries(8 * 2**30, 384) < 4_000_000  # ~2,370 B an entry
    assert warm_entries(2**30, 384, "float16") > warm_entries(2**30, 384)


# ----------------------------------------------------------------------------------------
# the latency model


def _tiered(hot: int, warm: int, enc: int) -> TieredSimResult:
    n = hot + warm + enc
    return TieredSimResult("lru", 10, 100, n, hot, warm, enc, enc + 3, 2, 0, enc, 0, 1, 3, 50)


def test_latency_model_prices_three_levels() -> None:
    m = LatencyModel(hot_s=1e-6, miss_s=1e-2, warm_s=1e-4)
    row = m.summarise(_tiered(50, 45, 5))
    assert row["mean_latency_s"] == pytest.approx(0.5e-6 + 0.45e-4 + 0.05e-2)
    assert (row["p50_latency_s"], row["p90_latency_s"], row["p99_latency_s"]) == (1e-6, 1e-4, 1e-2)
    assert row["encoder_calls"] == 5 and row["encoder_calls_saved"] == 95
    assert row["ssd_writes"] == 8 and row["warm_hit_ratio"] == pytest.approx(0.45)
    assert row["encoder_seconds"] == pytest.approx(0.05)
    row = m.summarise(_tiered(10, 89, 1))  # exactly 99% served locally: p99 is warm
    assert row["p99_latency_s"] == 1e-4 and row["p50_latency_s"] == 1e-4
    # a hot-only result: unchanged two-level pricing, no warm fields
    hot_only = simulate([1, 1, 2, 2], capacity=1, policy="lru")
    row = m.summarise(hot_only)
    assert row["mean_latency_s"] == pytest.approx(0.5 * 1e-6 + 0.5 * 1e-2)
    assert row["p50_latency_s"] == 1e-6 and row["p90_latency_s"] == 1e-2
    assert "ssd_writes" not in row and row["encoder_calls"] == hot_only.misses
    assert m.to_dict(warm=False) == {"hot_s": 1e-6, "miss_s": 1e-2}
    assert LatencyModel().warm_s == pytest.approx(12e-6)
    with pytest.raises(ValueError, match="warm_s"):
        LatencyModel(warm_s=0)
    assert step_quantile(0.5, [(3.0, 0), (2.0, 0)]) == 3.0  # no requests: the worst


# ----------------------------------------------------------------------------------------
# the CLI


SYN = "zipf:alpha=0.9,keys=1500,requests=4000,seed=3"


def test_cli_sim_warm_json_equals_the_library() -> None:
    from tiercache.cli import main

    r = CliRunner().invoke(
        main,
        [
            "sim",
            "--synthetic",
            SYN,
            "--hot-entries",
            "2%",
            "--warm",
            "10%,300,1MiB",
            "--dim",
            "384",
            "--policy",
            "wtinylfu,belady",
            "--seed",
            "4",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    trace = zipf_trace(0.9, 1500, 4000, seed=3)
    distinct = len(np.unique(trace))
    hot = round(distinct * 0.02)
    want_warm = sorted({round(distinct * 0.1), 300, warm_entries(2**20, 384)})
    tiered = [row for row in rows if row["policy"] == "wtinylfu"]
    assert [row["warm_capacity"] for row in tiered] == want_warm
    for row in tiered:
        lib = simulate_tiers(trace, hot_capacity=hot, warm_capacity=row["warm_capacity"], seed=4)
        assert (row["hot_hits"], row["warm_hits"], row["encoder_calls"], row["ssd_writes"]) == (
            lib.hot_hits,
            lib.warm_hits,
            lib.encoder_calls,
            lib.warm_writes,
        )
        assert row["p50_latency_s"] > 0 and "warm_hit_ratio" in row
    bound = [row for row in rows if row["policy"] == "belady"]
    assert len(bound) == 1 and bound[0]["warm_capacity"] is None


def test_cli_sim_warm_table_report_and_config(tmp_path: Path) -> None:
    import yaml

    from tiercache.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "encoder": {"kind": "hash", "dim": 64},
                "warm": {"path": str(tmp_path / "w")},
                "policy": {"warm_min_frequency": 2},
            }
        )
    )
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        main,
        [
            "sim",
            "--synthetic",
            SYN,
            "--hot",
            "64KiB",
            "--warm",
            "256KiB,0",
            "-c",
            str(cfg),
            "--policy",
            "lru,belady",
            "--warm-latency",
            "50us",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "warm hit" in r.output and "encoder calls" in r.output and "warm 50 us" in r.output
    doc = json.loads((out / "sim.json").read_text())
    assert doc["latency_model"]["warm_s"] == pytest.approx(50e-6)
    entries = warm_entries(256 * 1024, 64)  # the config's dim
    assert doc["warm_bytes"] == {str(entries): 256 * 1024}
    assert "belady" in r.output and "offline bound" in r.output
    by_warm = {row["warm_capacity"]: row for row in doc["results"]}
    assert set(by_warm) == {0, entries, None}  # None: belady, the hot tier's bound alone
    assert "ssd_writes" in by_warm[entries] and "ssd_writes" not in by_warm[None]
    assert by_warm[0]["warm_hits"] == 0 and by_warm[entries]["warm_hits"] > 0
    assert by_warm[entries]["warm_gate_rejects"] > 0  # the config's policy gate applies
    for png in ("hit_ratio.png", "latency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5x", "unknown size unit"),
        ("abc%", "not a percentage"),
        ("0B", ">= 1 byte"),
        (",", "no size"),
        ("-3", "negative"),
    ],
)
def test_cli_sim_bad_warm_sizes(spec: str, message: str) -> None:
    from tiercache.cli import main

    r = CliRunner().invoke(
        main, ["sim", "--synthetic", "zipf:keys=50,requests=100", "--policy", "lru", "--warm", spec]
    )
    assert r.exit_code == 2 and "--warm" in r.output and message in r.output, r.output


def test_cli_sim_without_warm_is_unchanged() -> None:
    from tiercache.cli import main

    r = CliRunner().invoke(
        main,
        [
            "sim",
            "--synthetic",
            "zipf:keys=300,requests=2000",
            "--hot-entries",
            "30",
            "--policy",
            "lru",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert "warm_capacity" not in rows[0] and "ssd_writes" not in rows[0]
    assert rows[0]["hits"] == simulate(zipf_trace(1.0, 300, 2000), capacity=30, policy="lru").hits
