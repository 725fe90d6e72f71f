from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiercache import (
    CallableEncoder,
    ClosedError,
    EncoderError,
    FingerprintMismatchError,
    InvalidContentError,
    InvalidMetadataError,
    InvalidTTLError,
    InvalidVectorError,
    TierCache,
    UnknownModelError,
)
from tiercache.encoders import HashEncoder

from .conftest import DIM, CountingEncoder, FakeClock, make_config


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def test_embed_shapes_and_dedup(cache: TierCache, encoder: CountingEncoder) -> None:
    v = cache.embed("What is machine learning?")
    assert v.shape == (DIM,) and v.dtype == np.float32
    m = cache.embed_many(["a", "b", "a"])
    assert m.shape == (3, DIM)
    assert np.array_equal(m[0], m[2])
    assert encoder.batches[-1] == ["a", "b"]  # "a" encoded once
    assert cache.stats()["encoder"]["deduplicated"] == 1
    assert cache.embed_many([]).shape == (0, DIM)


def test_second_lookup_is_a_hit_and_encodes_nothing(
    cache: TierCache, encoder: CountingEncoder
) -> None:
    first = cache.embed_many([f"t{i}" for i in range(20)])
    calls = encoder.texts
    again = cache.embed_many([f"t{i}" for i in range(20)])
    assert encoder.texts == calls
    assert np.array_equal(first, again)
    s = cache.stats()["tiers"]
    assert s["hot"]["hits"] + s["warm"]["hits"] == 20


def test_misses_are_batched(tmp_path: Path, encoder: CountingEncoder) -> None:
    with TierCache(make_config(tmp_path), encoder=encoder) as c:  # batch_size 8
        c.embed_many([f"x{i}" for i in range(20)])
    assert [len(b) for b in encoder.batches] == [8, 8, 4]


def test_returned_vectors_never_alias_the_store(cache: TierCache) -> None:
    v = cache.embed("alias")
    v[:] = 0
    assert not np.all(cache.embed("alias") == 0)
    m = cache.embed_many(["alias", "alias"])
    m[:] = 0
    e = cache.get("alias")
    assert e is not None and not np.all(e.vector == 0)


def test_set_get_exists_drop(cache: TierCache) -> None:
    v = vec(1)
    key = cache.set("some text", v, metadata={"src": "faq"}, ttl=3600)
    assert isinstance(key, str) and len(key) == 32 and key == cache.key("some text")
    e = cache.get("some text")
    assert e is not None
    assert e.key == key and np.array_equal(e.vector, v) and e.metadata == {"src": "faq"}
    assert e.tier in ("hot", "warm")
    assert cache.exists("some text")
    assert cache.drop("some text")
    assert not cache.exists("some text")
    assert cache.get("some text") is None
    assert not cache.drop("some text")


def test_m_variants_keep_order(cache: TierCache) -> None:
    keys = cache.mset(
        [
            ("a", vec(1)),
            {"content": "b", "vector": vec(2), "metadata": [1]},
            ("c", vec(3), {"x": 1}, 100),
        ]
    )
    assert len(keys) == 3
    got = cache.mget(["c", "zz", "a", "b"])
    assert got[1] is None
    assert [e.key for e in got if e] == [keys[2], keys[0], keys[1]]
    assert got[3] is not None and got[3].metadata == [1]
    assert cache.mexists(["a", "zz", "c"]) == [True, False, True]
    assert cache.mdrop(["a", "zz", "c"]) == 2
    assert cache.mexists(["a", "b", "c"]) == [False, True, False]
    assert cache.mset([]) == [] and cache.mget([]) == []


def test_bytes_content_can_be_stored_but_not_encoded_by_text_encoder(tmp_path: Path) -> None:
    enc = CallableEncoder(lambda xs: np.ones((len(xs), DIM)), dim=DIM, name="text-only")
    with TierCache(make_config(tmp_path), encoder=enc) as c:
        c.set(b"\x89PNG", vec(1))
        e = c.get(b"\x89PNG")
        assert e is not None and np.array_equal(e.vector, vec(1))
        assert c.get("\x89PNG") is None  # str and bytes never share a key
        with pytest.raises(InvalidContentError):
            c.embed(b"not cached bytes")


def test_warm_entries_survive_reopen(tmp_path: Path) -> None:
    enc = CountingEncoder()
    with TierCache(make_config(tmp_path), encoder=enc) as c:
        c.set("kept", vec(7), metadata={"m": 1})
        c.embed("computed")
    enc2 = CountingEncoder()
    with TierCache(make_config(tmp_path), encoder=enc2) as c:
        e = c.get("kept")
        assert e is not None and e.tier == "warm" and np.array_equal(e.vector, vec(7))
        c.embed("computed")
        assert enc2.calls == 0


def test_different_model_version_never_sees_old_vectors(tmp_path: Path) -> None:
    with TierCache(make_config(tmp_path), encoder=HashEncoder(DIM, revision="1")) as c:
        c.set("shared text", vec(1))
    with pytest.raises(FingerprintMismatchError):
        TierCache(make_config(tmp_path), encoder=HashEncoder(DIM, revision="2"))
    cfg = make_config(tmp_path, warm={"on_fingerprint_mismatch": "coexist"})
    with TierCache(cfg, encoder=HashEncoder(DIM, revision="2")) as c:
        assert c.get("shared text") is None
        assert not c.exists("shared text")
    cfg = make_config(tmp_path, warm={"namespace": "v2"})
    with TierCache(cfg, encoder=HashEncoder(DIM, revision="2")) as c:
        assert c.get("shared text") is None


def test_single_flight_16_threads_one_encoder_call(tmp_path: Path) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def slow(xs: list[Any]) -> np.ndarray:
        calls.append(len(xs))
        gate.wait(5)
        return np.ones((len(xs), DIM), dtype=np.float32)

    enc = CallableEncoder(slow, dim=DIM, name="slow")
    results: list[np.ndarray] = []
    with TierCache(make_config(tmp_path), encoder=enc) as c:
        threads = [
            threading.Thread(target=lambda: results.append(c.embed("same"))) for _ in range(16)
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)
        gate.set()
        for t in threads:
            t.join()
        assert calls == [1]
        assert len(results) == 16 and all(np.array_equal(r, results[0]) for r in results)
        assert c.stats()["encoder"]["single_flight_waits"] >= 1


def test_encoder_error_reaches_every_waiter_and_caches_nothing(tmp_path: Path) -> None:
    gate = threading.Event()
    fail = [True]

    def flaky(xs: list[Any]) -> np.ndarray:
        gate.wait(5)
        if fail[0]:
            raise RuntimeError("GPU on fire")
        return np.ones((len(xs), DIM), dtype=np.float32)

    enc = CallableEncoder(flaky, dim=DIM, name="flaky")
    errors: list[BaseException] = []

    def worker(c: TierCache) -> None:
        try:
            c.embed("boom")
        except EncoderError as exc:
            errors.append(exc)

    with TierCache(make_config(tmp_path), encoder=enc) as c:
        threads = [threading.Thread(target=worker, args=(c,)) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        gate.set()
        for t in threads:
            t.join()
        assert len(errors) == 8
        assert not c.exists("boom")
        fail[0] = False
        assert np.array_equal(c.embed("boom"), np.ones(DIM, dtype=np.float32))  # retried


@pytest.mark.parametrize(
    "bad_output",
    [
        lambda n: np.ones((n, DIM + 1)),
        lambda n: np.full((n, DIM), np.nan),
        lambda n: np.array([["x"] * DIM] * n),
        lambda n: None,
    ],
)
def test_bad_encoder_output_is_encoder_error(tmp_path: Path, bad_output: Any) -> None:
    enc = CallableEncoder(lambda xs: bad_output(len(xs)), dim=DIM, name="bad")
    with TierCache(make_config(tmp_path), encoder=enc) as c:
        with pytest.raises(EncoderError):
            c.embed("x")
        assert not c.exists("x")


@pytest.mark.parametrize(
    "bad, exc",
    [
        (None, InvalidContentError),
        (3, InvalidContentError),
        (["a"], InvalidContentError),
    ],
)
def test_bad_content_is_typed_and_changes_nothing(cache: TierCache, bad: Any, exc: type) -> None:
    cache.set("keep", vec(1))
    before = cache.stats()["tiers"]["warm"]["entries"]
    with pytest.raises(exc):
        cache.embed(bad)
    with pytest.raises(exc):
        cache.embed_many(["fine", bad])
    with pytest.raises(exc):
        cache.set(bad, vec(1))
    with pytest.raises(exc):
        cache.mset([("ok", vec(2)), (bad, vec(1))])
    assert cache.stats()["tiers"]["warm"]["entries"] == before
    assert not cache.exists("ok") and not cache.exists("fine")


@pytest.mark.parametrize(
    "bad",
    [
        np.ones(DIM + 1, np.float32),
        np.ones((1, DIM), np.float32),
        np.ones(DIM, np.int64),
        np.full(DIM, np.nan, np.float32),
        np.full(DIM, np.inf, np.float32),
        "not a vector",
        np.ones(DIM, np.complex64),
    ],
)
def test_bad_vectors_are_typed_and_change_nothing(cache: TierCache, bad: Any) -> None:
    with pytest.raises(InvalidVectorError):
        cache.set("v", bad)
    with pytest.raises(InvalidVectorError):
        cache.mset([("w", vec(1)), ("v", bad)])
    assert cache.mexists(["v", "w"]) == [False, False]


def test_bad_metadata_ttl_model_are_typed(cache: TierCache) -> None:
    with pytest.raises(InvalidMetadataError):
        cache.set("m", vec(1), metadata={"s": {1, 2}})
    for ttl in (-1, 0, float("nan"), float("inf"), 1e12, "1h", True):
        with pytest.raises(InvalidTTLError):
            cache.set("m", vec(1), ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(UnknownModelError):
        cache.set("m", vec(1), model="some-other-model")
    assert not cache.exists("m")
    cache.set("m", vec(1), model=cache.fingerprint.model)
    assert cache.exists("m")


def test_ttl_expiry_with_injected_clock(
    cache: TierCache, clock: FakeClock, encoder: CountingEncoder
) -> None:
    cache.set("short", vec(1), ttl=10)
    cache.set("long", vec(2))
    clock.advance(9)
    assert cache.exists("short") and cache.get("short") is not None
    clock.advance(2)
    assert not cache.exists("short")
    assert cache.get("short") is None
    assert cache.get("long") is not None
    before = encoder.texts
    cache.embed("short")  # expired: recomputed
    assert encoder.texts == before + 1


def test_default_ttl_applies_to_computed_vectors(tmp_path: Path, clock: FakeClock) -> None:
    enc = CountingEncoder()
    with TierCache(make_config(tmp_path, ttl="1m"), encoder=enc, clock=clock) as c:
        c.embed("q")
        clock.advance(61)
        c.embed("q")
        assert enc.texts == 2


def test_hot_budget_is_held_and_demotes_to_warm(tmp_path: Path) -> None:
    enc = CountingEncoder()
    with TierCache(make_config(tmp_path), encoder=enc) as c:  # hot holds 64 entries
        for i in range(500):
            c.embed(f"k{i}")
        s = c.stats()["tiers"]
        assert s["hot"]["entries"] <= 64 == s["hot"]["capacity"]
        assert s["warm"]["entries"] == 500
        texts = enc.texts
        m = c.embed_many([f"k{i}" for i in range(500)])
        assert enc.texts == texts  # all served from hot or warm
        assert np.array_equal(m[3], HashEncoder(DIM).encode(["k3"])[0])


def test_warm_budget_is_enforced_by_eviction(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, warm={"max_bytes": "200KiB"}, hot={"enabled": False})
    enc = CountingEncoder()
    with TierCache(cfg, encoder=enc) as c:
        cap = c.stats()["tiers"]["warm"]["capacity"]
        for i in range(cap * 3):
            c.embed(f"w{i}")
            c.embed("popular")
        s = c.stats()["tiers"]["warm"]
        assert s["entries"] <= cap
        assert s["evictions"]["capacity"] >= cap
        assert c.exists("popular")  # frequency-aware: the popular key survives


def test_warm_min_frequency_gate(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, policy={"warm_min_frequency": 2}, hot={"enabled": False})
    with TierCache(cfg, encoder=CountingEncoder()) as c:
        c.embed("once")
        assert not c.exists("once")
        c.embed("twice")
        c.embed("twice")
        assert c.exists("twice")
        assert c.stats()["tiers"]["warm"]["rejections"]["min_frequency"] >= 1
        c.set("explicit", vec(1))  # explicit writes bypass the gate
        assert c.exists("explicit")


def test_corrupt_record_is_a_counted_miss_and_rewritten(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, hot={"enabled": False})
    enc = CountingEncoder()
    with TierCache(cfg, encoder=enc) as c:
        good = c.embed("victim")
        warm = c._warm
        assert warm is not None
        raw = c._keys.digest("victim")
        rec = bytearray(warm.get_many([raw])[0] or b"")
        rec[40] ^= 0x01
        warm.put_many([(raw, bytes(rec))])
        assert c.get("victim") is None
        again = c.embed("victim")
        assert np.array_equal(again, good)
        assert c.stats()["tiers"]["warm"]["corrupt"] >= 1
        assert warm.get_many([raw])[0] != bytes(rec)  # rewritten


def test_closed_cache_raises(tmp_path: Path) -> None:
    c = TierCache(make_config(tmp_path), encoder=CountingEncoder())
    c.close()
    c.close()
    with pytest.raises(ClosedError):
        c.embed("x")
    with pytest.raises(ClosedError):
        c.get("x")


def test_stats_shape(cache: TierCache) -> None:
    cache.embed_many(["a", "b"])
    cache.embed("a")
    s = cache.stats()
    for tier in ("hot", "warm"):
        t = s["tiers"][tier]
        for k in (
            "hits",
            "misses",
            "promotions",
            "demotions",
            "evictions",
            "rejections",
            "corrupt",
            "entries",
            "bytes",
            "latency_us",
        ):
            assert k in t
        assert set(t["latency_us"]) == {"count", "p50", "p90", "p99", "max"}
    assert s["encoder"]["calls"] == 1 and s["encoder"]["texts"] == 2
    assert "hot" in cache.format_stats()


def test_threads_mixed_workload_no_errors_no_wrong_vectors(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, hot={"max_bytes": 20 * (4 * DIM + 256)})
    ref = HashEncoder(DIM)
    errors: list[BaseException] = []
    with TierCache(cfg, encoder=HashEncoder(DIM)) as c:

        def work(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for _ in range(300):
                    t = f"t{int(rng.integers(0, 60))}"
                    op = rng.integers(0, 3)
                    if op == 0:
                        assert np.array_equal(c.embed(t), ref.encode([t])[0])
                    elif op == 1:
                        ts = [f"t{int(x)}" for x in rng.integers(0, 60, 5)]
                        assert np.array_equal(c.embed_many(ts), ref.encode(ts))
                    else:
                        e = c.get(t)
                        assert e is None or np.array_equal(e.vector, ref.encode([t])[0])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert c.stats()["tiers"]["hot"]["entries"] <= 20


def test_several_processes_share_one_warm_store(tmp_path: Path) -> None:
    """Two processes write overlapping keys concurrently; a third sees all, encodes none."""
    import subprocess
    import sys
    import textwrap

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        textwrap.dedent(f"""
        encoder: {{kind: hash, dim: {DIM}}}
        hot: {{max_bytes: 4KiB}}
        warm: {{path: {tmp_path / "warm"}, durability: durable}}
    """)
    )
    script = textwrap.dedent("""
        import sys
        from tiercache import TierCache
        start = int(sys.argv[2])
        with TierCache.from_yaml(sys.argv[1]) as c:
            for i in range(start, start + 300):
                c.embed(f"p{i}")
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(cfg_path), str(s)]) for s in (0, 150)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    enc = CountingEncoder(role="document")  # the fingerprint kind: hash builds from YAML
    from tiercache import load_config

    with TierCache(load_config(cfg_path), encoder=enc) as c:
        assert c.stats()["tiers"]["warm"]["entries"] == 450
        m = c.embed_many([f"p{i}" for i in range(450)])
        assert enc.calls == 0
        assert np.array_equal(m, HashEncoder(DIM).encode([f"p{i}" for i in range(450)]))


def test_warm_write_failure_set_raises_embed_degrades(
    cache: TierCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lmdb

    from tiercache import StoreError

    def broken(*a: Any, **k: Any) -> int:
        raise lmdb.DiskError("disk full")

    assert cache._warm is not None
    monkeypatch.setattr(cache._warm, "put_bounded", broken)
    with pytest.raises(StoreError):
        cache.set("acked?", vec(1))
    assert cache.get("acked?") is None  # not acknowledged, not half-stored
    v = cache.embed("computed anyway")  # a recompute still serves the caller
    assert np.array_equal(v, HashEncoder(DIM).encode(["computed anyway"])[0])
    assert cache.stats()["tiers"]["warm"]["errors"] >= 2


def test_mset_keeps_its_own_copy_of_the_vectors(cache: TierCache) -> None:
    arr = np.ones((3, DIM), dtype=np.float32)
    cache.mset([(f"c{i}", arr[i]) for i in range(3)])
    arr[:] = 7.0  # the caller reuses its buffer
    for i in range(3):
        e = cache.get(f"c{i}")
        assert e is not None and np.array_equal(e.vector, np.ones(DIM, np.float32))


@pytest.mark.parametrize("warm", [True, False])
def test_mset_into_a_small_hot_tier_admits_and_evicts_within_the_batch(
    tmp_path: Path, warm: bool
) -> None:
    """A batch much larger than hot: admissions of the batch evict entries the same batch
    put there (their rows are copied before they are demoted), a key given twice keeps
    its last vector, and every hot row and every warm record holds its own key's vector,
    with the same decisions and counters as one set at a time."""
    rng = np.random.default_rng(4)
    texts = [f"k{i}" for i in range(120)] + ["k3", "k50"]  # two repeats: the last wins
    vecs = rng.standard_normal((len(texts), DIM)).astype(np.float32)
    want = dict(zip(texts, vecs))
    got_stats = []
    for mode in ("batch", "one by one"):
        cfg = make_config(
            tmp_path / mode,
            hot={"max_bytes": 16 * (4 * DIM + 256)},
            warm={"enabled": warm},
        )
        with TierCache(cfg, encoder=CountingEncoder()) as c:
            c.mset([(f"warmup{i}", vecs[i]) for i in range(40)])  # hot full before the batch
            if mode == "batch":
                c.mset(list(zip(texts, vecs)))
            else:
                for t, v in zip(texts, vecs):
                    c.set(t, v)
            hot = c._hot
            assert len(hot) > 0
            for slot in hot._by_key.values():  # every resident row is its key's vector
                content = hot._content[slot]
                assert content is not None
                expect = want.get(
                    content,
                    vecs[int(str(content)[6:])] if str(content).startswith("warmup") else None,
                )
                assert expect is not None and np.array_equal(hot.slab[slot], expect), content
            for t in texts:
                e = c.get(t)
                if warm:
                    assert e is not None and np.array_equal(e.vector, want[t]), t
                elif e is not None:
                    assert np.array_equal(e.vector, want[t]), t
            st = c.stats()["tiers"]
            got_stats.append((st["hot"]["entries"], st["hot"]["evictions"], st["hot"]["demotions"]))
    assert got_stats[0] == got_stats[1]


def test_warm_batch_mixes_codecs_metadata_expiry_corruption_and_repeats(
    tmp_path: Path, clock: FakeClock
) -> None:
    """embed_many / mget over warm records of every shape the batch path sorts (this
    codec's packed slots, another codec's, records with metadata, expired, corrupt, absent,
    a content asked twice) give what single reads give, with the same counters."""
    texts = [f"t{i}" for i in range(40)]
    with TierCache(
        make_config(tmp_path, hot={"enabled": False}, warm={"codec": "float16"}),
        encoder=CountingEncoder(),
        clock=clock,
    ) as c16:
        c16.mset([(t, vec(i)) for i, t in enumerate(texts[:10])])
    cfg = make_config(tmp_path, hot={"enabled": False})
    enc = CountingEncoder()
    with TierCache(cfg, encoder=enc, clock=clock) as c:
        c.mset([(t, vec(i)) for i, t in enumerate(texts[10:30], 10)])
        c.mset(
            [
                {"content": t, "vector": vec(i), "metadata": {"i": i}}
                for i, t in enumerate(texts[30:35], 30)
            ]
        )
        c.mset([(t, vec(i), None, 5.0) for i, t in enumerate(texts[35:38], 35)])  # ttl 5 s
        warm = c._warm
        assert warm is not None
        victim = c._keys.digest(texts[12])
        rec = bytearray(warm.get_many([victim])[0] or b"")
        rec[40] ^= 0x01
        warm.put_many([(victim, bytes(rec))])
        clock.advance(10.0)  # texts 35..37 expire
        asked = texts + [texts[3], texts[20], texts[36]]
        before = c.stats()["tiers"]["warm"]
        found = c.mget(asked)
        after = c.stats()["tiers"]["warm"]
        assert after["corrupt"] - before["corrupt"] == 1
        assert after["expired"] - before["expired"] == 3
        assert after["hits"] - before["hits"] == 10 + 20 - 1 + 5
        for t, e in zip(asked, found):
            n = int(t[1:])
            if n == 12 or 35 <= n < 40:
                assert e is None, t
                continue
            assert e is not None and e.tier == "warm", t
            tol = 1e-3 if n < 10 else 0.0
            assert np.allclose(e.vector, vec(n), atol=tol), t
            assert e.metadata == ({"i": n} if 30 <= n < 35 else None), t
        out = c.embed_many(asked)
        for i, t in enumerate(asked):
            assert np.array_equal(out[i], c.embed(t)), t


def test_lookup_many_returns_a_matrix_and_a_found_mask_and_never_encodes(
    tmp_path: Path, redis_server: Any
) -> None:
    """``lookup_many``: the stored vectors (hot, warm and shared hits alike, repeats
    included) as one matrix, zeros and False where nothing is stored, in input order;
    nothing is encoded; the same vectors as ``mget`` and the same counters as a lookup."""
    cfg = make_config(
        tmp_path, shared={"url": redis_server.url, "key_prefix": f"lm-{tmp_path.name}:"}
    )
    enc = CountingEncoder()
    with TierCache(cfg, encoder=enc) as c:
        rng = np.random.default_rng(8)
        vecs = {f"t{i}": rng.standard_normal(DIM).astype(np.float32) for i in range(6)}
        c.mset(list(vecs.items()))
        c._write.remove_hot_locked(bytes.fromhex(c.key("t1")), "invalidated")  # warm only
        c._warm.delete_many([bytes.fromhex(c.key("t2"))])  # type: ignore[union-attr]
        c._write.remove_hot_locked(bytes.fromhex(c.key("t2")), "invalidated")  # shared only
        wanted = ["t0", "nope", "t1", "t2", "t0", "gone", "t5"]
        before = enc.texts
        matrix, found = c.lookup_many(wanted)
        assert enc.texts == before  # never encodes
        assert matrix.shape == (7, DIM) and matrix.dtype == np.float32
        assert found.tolist() == [True, False, True, True, True, False, True]
        for i, t in enumerate(wanted):
            want = vecs[t] if t in vecs else np.zeros(DIM, np.float32)
            np.testing.assert_array_equal(matrix[i], want)
        got = c.mget(wanted)
        assert [e is not None for e in got] == found.tolist()
        empty, none = c.lookup_many([])
        assert empty.shape == (0, DIM) and none.shape == (0,)
        with pytest.raises(UnknownModelError):
            c.lookup_many(["t0"], model="another-model")
