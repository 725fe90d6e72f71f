"""The simulator drives the live policy engine: it must agree with a live TierCache and,
for LRU, with libCacheSim (the reference simulator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiercache import TierCache
from tiercache.encoders import HashEncoder
from tiercache.keys import KeyMaker
from tiercache.sim import load_npy, load_text, simulate, zipf_trace

from .conftest import DIM, make_config


def test_zipf_trace_is_seeded_and_skewed() -> None:
    a = zipf_trace(1.0, 1000, 20_000, seed=3)
    assert np.array_equal(a, zipf_trace(1.0, 1000, 20_000, seed=3))
    assert not np.array_equal(a, zipf_trace(1.0, 1000, 20_000, seed=4))
    counts = np.bincount(a, minlength=1000)
    assert a.min() >= 0 and a.max() < 1000
    assert counts.max() > 20 * np.median(counts)  # a heavy head


@pytest.mark.parametrize("policy", ["lru", "lfu", "tinylfu", "wtinylfu"])
def test_simulator_equals_live_cache_on_the_same_trace(tmp_path: Path, policy: str) -> None:
    texts = [f"query {i}" for i in zipf_trace(0.9, 400, 3000, seed=11)]
    cfg = make_config(tmp_path, policy={"name": policy, "seed": 5})  # hot: 64 entries
    with TierCache(cfg, encoder=HashEncoder(DIM)) as cache:
        for t in texts:
            cache.embed(t)
        live = cache.stats()["tiers"]["hot"]
        capacity = cache._hot.capacity
        warm_capacity = cache._engine.warm_capacity
        keys = [KeyMaker(cache.fingerprint).digest(t) for t in texts]
    sim = simulate(keys, capacity=capacity, policy=policy, seed=5, warm_capacity=warm_capacity)
    assert (sim.hits, sim.misses) == (live["hits"], live["misses"])
    assert sim.evicted == live["evictions"].get("capacity", 0)
    assert sim.rejected == sum(live["rejections"].values())
    assert 0 < sim.hits < len(texts)


@pytest.mark.parametrize("capacity", [10, 50, 200, 800])
def test_lru_matches_libcachesim_exactly(capacity: int) -> None:
    lcs = pytest.importorskip("libcachesim")
    trace = zipf_trace(1.0, 2000, 20_000, seed=7)
    ours = simulate(trace, capacity=capacity, policy="lru")
    ref = lcs.LRU(cache_size=capacity)
    ref_hits = sum(bool(ref.get(lcs.Request(obj_size=1, obj_id=int(k)))) for k in trace)
    assert ours.hits == ref_hits


def test_wtinylfu_beats_lru_on_zipf() -> None:
    trace = zipf_trace(0.9, 5000, 50_000, seed=1)
    lru = simulate(trace, capacity=100, policy="lru")
    wt = simulate(trace, capacity=100, policy="wtinylfu")
    assert wt.hit_ratio > lru.hit_ratio


def test_loaders(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", np.array([1, 2, 3], dtype=np.int32))
    assert load_npy(tmp_path / "t.npy").tolist() == [1, 2, 3]
    np.save(tmp_path / "bad.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError):
        load_npy(tmp_path / "bad.npy")
    (tmp_path / "q.txt").write_text("a\n\nb\na\n")
    fp = HashEncoder(DIM).fingerprint
    keys = load_text(tmp_path / "q.txt", fp)
    assert len(keys) == 3 and keys[0] == keys[2] == KeyMaker(fp).digest("a")


def test_cli_sim_synthetic_and_trace(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from tiercache.cli import main

    r = CliRunner().invoke(
        main,
        [
            "sim",
            "--synthetic",
            "zipf:alpha=0.9,keys=500,requests=5000",
            "--hot-entries",
            "1%,10%",
            "--policy",
            "lru,wtinylfu",
        ],
    )
    assert r.exit_code == 0, r.output
    assert r.output.count("lru") == 2 and r.output.count("wtinylfu") == 2
    np.save(tmp_path / "t.npy", zipf_trace(1.0, 300, 3000, seed=2))
    r = CliRunner().invoke(
        main,
        [
            "sim",
            "--trace",
            str(tmp_path / "t.npy"),
            "--hot-entries",
            "30",
            "--policy",
            "lru",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    want = simulate(load_npy(tmp_path / "t.npy"), capacity=30, policy="lru")
    assert rows[0]["hits"] == want.hits
    r = CliRunner().invoke(main, ["sim", "--policy", "lru"])
    assert r.exit_code != 0


@pytest.mark.parametrize("capacity", [10, 50, 200])
def test_belady_matches_libcachesim_and_bounds_every_policy(capacity: int) -> None:
    lcs = pytest.importorskip("libcachesim")
    from tiercache.sim import belady
    from tiercache.sim.simulate import NEVER_AGAIN, next_uses

    trace = zipf_trace(1.0, 500, 5000, seed=3).tolist()
    nxt = next_uses(trace)
    ref = lcs.Belady(cache_size=capacity)
    ref_hits = sum(
        bool(ref.get(lcs.Request(obj_size=1, obj_id=k, next_access_vtime=n)))
        for k, n in zip(trace, nxt)
    )
    opt = belady(trace, capacity=capacity)
    assert opt.hits == ref_hits
    assert NEVER_AGAIN in nxt
    for policy in ("lru", "lfu", "tinylfu", "wtinylfu"):
        assert simulate(trace, capacity=capacity, policy=policy).hits <= opt.hits


def test_synthetic_generators() -> None:
    from tiercache.sim import loop_trace, scan_trace, shifting_trace

    s = shifting_trace(1.0, 1000, 8000, phases=4, seed=1)
    assert len(s) == 8000 and np.array_equal(s, shifting_trace(1.0, 1000, 8000, 4, seed=1))
    heads = [np.bincount(s[i * 2000 : (i + 1) * 2000], minlength=1000).argmax() for i in range(4)]
    assert len(set(heads)) > 1  # the most popular key moves between phases
    sc = scan_trace(1.0, 1000, 5000, scan_every=1000, scan_length=200, seed=1)
    assert len(sc) == 5000 and sc.max() >= 1000  # scans read ids outside the key space
    assert len(np.unique(sc[sc >= 1000])) == (sc >= 1000).sum()  # each scanned id once
    assert loop_trace(3, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    # a scan-resistant policy keeps more of the Zipf head than LRU under scans
    assert (
        simulate(sc, capacity=50, policy="wtinylfu").hits
        > simulate(sc, capacity=50, policy="lru").hits
    )


def test_csv_and_oracle_general_readers(tmp_path: Path) -> None:
    from tiercache.sim import load_csv, load_oracle_general
    from tiercache.sim.traces import ORACLE_GENERAL

    (tmp_path / "t.csv").write_text("id,size,timestamp\n5,100,1\n7,100,2\n5\n")
    assert load_csv(tmp_path / "t.csv").tolist() == [5, 7, 5]
    (tmp_path / "bad.csv").write_text("1\nx\n")
    with pytest.raises(ValueError):
        load_csv(tmp_path / "bad.csv")
    assert ORACLE_GENERAL.itemsize == 24
    recs = np.zeros(3, dtype=ORACLE_GENERAL)
    recs["obj_id"] = [42, 2**40, 42]
    recs["obj_size"] = 1
    recs["next_access_vtime"] = [2, -1, -1]
    recs.tofile(tmp_path / "t.bin")
    assert load_oracle_general(tmp_path / "t.bin").tolist() == [42, 2**40, 42]
    (tmp_path / "short.bin").write_bytes(b"\0" * 30)
    with pytest.raises(ValueError):
        load_oracle_general(tmp_path / "short.bin")


def test_cli_sim_every_synthetic_kind_and_csv(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tiercache.cli import main

    for spec in (
        "shifting:alpha=1,keys=300,requests=3000,phases=3",
        "scan:alpha=1,keys=300,requests=3000,scan_every=500,scan_length=100",
        "loop:keys=300,requests=3000",
    ):
        r = CliRunner().invoke(
            main, ["sim", "--synthetic", spec, "--hot-entries", "10%", "--policy", "lru,belady"]
        )
        assert r.exit_code == 0, (spec, r.output)
    (tmp_path / "t.csv").write_text("\n".join(str(i % 40) for i in range(400)))
    r = CliRunner().invoke(
        main, ["sim", "--trace", str(tmp_path / "t.csv"), "--hot-entries", "50", "--policy", "lru"]
    )
    assert r.exit_code == 0 and "400 requests, 40 distinct keys" in r.output
    r = CliRunner().invoke(main, ["sim", "--synthetic", "nope:keys=3"])
    assert r.exit_code != 0


def test_sim_cli_byte_sizes_latency_model_and_report(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from tiercache.cli import main
    from tiercache.tiers.memory import hot_capacity

    out = tmp_path / "report"
    r = CliRunner().invoke(
        main,
        [
            "sim",
            "--synthetic",
            "zipf:alpha=0.9,keys=3000,requests=20000,seed=1",
            "--hot",
            "256KiB,1MiB",
            "--dim",
            "384",
            "--policy",
            "lru,wtinylfu,belady",
            "--hot-latency",
            "5us",
            "--miss-latency",
            "20ms",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "sim.json").read_text())
    caps = sorted({row["capacity"] for row in doc["results"]})
    assert caps == sorted({hot_capacity(256 * 1024, 384), hot_capacity(2**20, 384)})
    assert doc["latency_model"] == pytest.approx({"hot_s": 5e-06, "miss_s": 0.02})
    for row in doc["results"]:
        hit = row["hit_ratio"]
        assert row["mean_latency_s"] == pytest.approx(hit * 5e-6 + (1 - hit) * 0.02)
        assert row["encoder_calls"] == row["misses"] and row["encoder_calls_saved"] == row["hits"]
        assert row["p50_latency_s"] == pytest.approx(5e-6 if hit >= 0.5 else 0.02)
    by = {(row["policy"], row["capacity"]): row["hit_ratio"] for row in doc["results"]}
    assert all(by[("belady", c)] >= by[(p, c)] for p in ("lru", "wtinylfu") for c in caps)
    for png in ("hit_ratio.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean" in r.output and "encoder s" in r.output


def test_misses_out_marks_exactly_the_hot_misses() -> None:
    trace = zipf_trace(alpha=0.9, keys=500, requests=5000, seed=11)
    mask = np.zeros(len(trace), dtype=bool)
    r = simulate(trace, capacity=40, policy="wtinylfu", seed=2, misses_out=mask)
    assert int(mask.sum()) == r.misses
    # the first request of every key is a miss
    _, first = np.unique(trace, return_index=True)
    assert mask[first].all()
    with pytest.raises(ValueError, match="misses_out"):
        simulate(trace, capacity=40, misses_out=np.zeros(3, dtype=bool))
