"""The compiled policy core (tiercache/_core_src/policy.c) against its specification, the
pure-Python ``WTinyLFUPolicy``: random operation sequences, the engine's drain and the
simulator's loop must give identical decisions, segments, climber steps and sketch
counters."""

from __future__ import annotations

import gc
import os
import random
import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tiercache import policy as policy_mod
from tiercache.policy import POLICIES, PolicyEngine, WTinyLFUPolicy, default_hasher
from tiercache.sim import scan_trace, shifting_trace, simulate, zipf_trace
from tiercache.sketch import FrequencySketch

core = policy_mod._core
needs_core = pytest.mark.skipif(core is None, reason="tiercache._core is not built")


def test_the_compiled_core_is_built_under_ci() -> None:
    """``make test`` builds the extension; CI must not silently run the Python fallback."""
    if os.environ.get("CI") and core is None:
        pytest.fail("tiercache._core is missing: the C extension did not build")
    if core is None:
        pytest.skip("tiercache._core is not built (no C compiler?)")
    assert policy_mod.COMPILED
    assert POLICIES["wtinylfu"] is policy_mod.CompiledWTinyLFUPolicy  # type: ignore[attr-defined]


def _pair(capacity: int, hasher: Callable[[Any], int], **params: Any) -> tuple[Any, Any]:
    """(python spec, compiled) policies with identical, separate sketches and rngs."""
    made = []
    for cls in (WTinyLFUPolicy, policy_mod.CompiledWTinyLFUPolicy):  # type: ignore[attr-defined]
        sketch = FrequencySketch(max(64, 4 * capacity), seed=3, sample_size=max(64, 5 * capacity))
        made.append(cls(capacity, sketch=sketch, hasher=hasher, rng=random.Random(9), **params))
    return made[0], made[1]


def _same(a: Any, b: Any, where: object) -> None:
    assert list(a.keys()) == list(b.keys()), where
    assert len(a) == len(b), where
    assert (a.window_capacity, a.main_capacity, a.protected_capacity) == (
        b.window_capacity,
        b.main_capacity,
        b.protected_capacity,
    ), where
    assert a.adjustments == b.adjustments, where
    assert (a._sample_hits, a._sample_requests, a._full) == (
        b._sample_hits,
        b._sample_requests,
        b._full,
    ), where
    assert a.sketch.table.tobytes() == b.sketch.table.tobytes(), where
    assert (a.sketch.additions, a.sketch.resets) == (b.sketch.additions, b.sketch.resets), where


def _request(a: Any, b: Any, k: Any, i: int) -> bool:
    """Count ``k`` in both policies' sketches; whether it is resident (in both alike)."""
    h = default_hasher(k)
    a.sketch.increment(h)
    b.sketch.increment(h)
    resident = k in a
    assert (k in b) is resident, i
    return resident


def _keyspace(kind: str, n: int) -> list[Any]:
    if kind == "int":
        return [i * 7919 - 500 for i in range(n)]  # negative ints too
    if kind == "bytes":
        return [random.Random(i).randbytes(16) for i in range(n)]
    if kind == "str":
        return [f"query {i}" for i in range(n)]
    return [(i, "t") for i in range(n)]  # tuples: only a custom hasher knows them


PARAMS: list[dict[str, Any]] = [
    {},
    {"adaptive": False},
    {"sample_period": 50, "step": 0.2, "step_decay": 0.9},
    {"window": 0.5, "sample_period": 40, "boost": 0.9},
    {"jitter_threshold": 0, "sample_period": 60},  # every losing candidate draws jitter
    {"protected": 0.0, "sample_period": 30},
    {"protected": 1.0, "window": 0.2},
]


@needs_core
@pytest.mark.parametrize("capacity", [0, 1, 2, 3, 7, 40, 150])
@pytest.mark.parametrize("params", PARAMS)
def test_random_operations_match_the_python_specification(
    capacity: int, params: dict[str, Any]
) -> None:
    rnd = random.Random(capacity * 1000 + len(str(params)))
    kind = rnd.choice(["int", "bytes", "str"])
    keys = _keyspace(kind, max(8, 4 * capacity))
    a, b = _pair(capacity, default_hasher, **params)
    zipf = zipf_trace(0.8, len(keys), 6000, seed=capacity + 1)
    pending: list[Any] = []
    for i, idx in enumerate(zipf.tolist()):
        k = keys[idx]
        if _request(a, b, k, i):
            pending.append(k)
            continue
        a.on_hits(pending + [k])
        if rnd.random() < 0.5:
            b.on_hits(pending + [k])
        else:
            for k2 in pending + [k]:
                b.on_hit(k2)
        pending = []
        ra, rb = a.admit(k), b.admit(k)
        assert ra == rb, (i, ra, rb)
        op = rnd.random()
        if op < 0.03 and len(a):
            victim = rnd.choice(list(a.keys()))
            assert a.remove(victim) is b.remove(victim) is True
            assert a.remove(victim) is b.remove(victim) is False
        elif op < 0.05:
            w = rnd.randint(-2, capacity + 2)
            a.resize_window(w)
            b.resize_window(w)
        elif op < 0.06:
            probe = keys[rnd.randrange(len(keys))]
            assert a.segment(probe) == b.segment(probe)
        if i % 97 == 0:
            _same(a, b, i)
    _same(a, b, "end")
    for k in keys:
        assert a.segment(k) == b.segment(k)


@needs_core
def test_lookups_by_copies_and_remade_keys_match_the_python_specification() -> None:
    """The compiled core finds a key's node through a cache indexed by the key object's
    address and checked by identity, falling back to its dict. Lookups by the admitted
    object, by equal copies, and by keys whose objects are dropped and re-made (new objects
    at freed addresses) all decide as the Python policy does."""
    a, b = _pair(64, default_hasher, sample_period=50)
    rnd = random.Random(5)
    canon = [f"key {i}".encode() for i in range(400)]
    zipf = zipf_trace(0.9, len(canon), 30_000, seed=7).tolist()
    for i, idx in enumerate(zipf):
        r = rnd.random()
        if r < 0.1:  # a new object for this key: the old one may be freed, its address reused
            canon[idx] = bytes(bytearray(canon[idx]))
        k = canon[idx] if r < 0.7 else bytes(bytearray(canon[idx]))
        if _request(a, b, k, i):
            a.on_hit(k)
            b.on_hit(k)
        else:
            assert a.admit(k) == b.admit(k), i
        if rnd.random() < 0.02 and len(a):
            victim = rnd.choice(list(a.keys()))
            assert a.remove(victim) is b.remove(bytes(bytearray(victim))) is True
        if i % 1000 == 0:
            _same(a, b, i)
            gc.collect()
    _same(a, b, "end")


@needs_core
@pytest.mark.parametrize("kind", ["tuple", "int"])
def test_a_custom_hasher_is_called_like_the_python_policy_calls_it(kind: str) -> None:
    calls: dict[str, list[Any]] = {"py": [], "c": []}

    def hasher_for(tag: str) -> Callable[[Any], int]:
        def h(k: Any) -> int:
            calls[tag].append(k)
            return hash(k) * 31

        return h

    keys = _keyspace(kind, 60)
    made = []
    for cls, tag in ((WTinyLFUPolicy, "py"), (policy_mod.CompiledWTinyLFUPolicy, "c")):  # type: ignore[attr-defined]
        sketch = FrequencySketch(256, seed=1)
        made.append(cls(12, sketch=sketch, hasher=hasher_for(tag), rng=random.Random(1)))
    a, b = made
    for idx in zipf_trace(0.9, 60, 3000, seed=5).tolist():
        k = keys[idx]
        for p in (a, b):
            p.sketch.increment(hash(k) * 31)
            p.on_hit(k)
            if k not in p:
                p.admit(k)
    assert list(a.keys()) == list(b.keys())
    assert calls["py"] == calls["c"] and calls["c"]


@needs_core
def test_errors_from_the_hasher_and_bad_arguments_are_raised_typed() -> None:
    def boom(k: Any) -> int:
        raise KeyError("no hash")

    _, b = _pair(2, boom)
    b.admit((1,))
    b.admit((2,))
    with pytest.raises(KeyError, match="no hash"):
        b.admit((3,))  # competition needs the hashes

    def not_int(k: Any) -> Any:
        return "x"

    _, c = _pair(1, not_int)
    c.admit((1,))
    with pytest.raises(TypeError, match="hasher must return an int"):
        c.admit((2,))
    _, d = _pair(10, default_hasher)
    with pytest.raises(TypeError, match="int64 or uint64"):
        core.replay(d, np.zeros(4, dtype=np.float64), None)
    with pytest.raises(ValueError, match="one byte per request"):
        core.replay(d, np.zeros(4, dtype=np.int64), np.zeros(3, dtype=np.uint8))
    with pytest.raises(TypeError, match="WTinyLFUCore"):
        core.drain(object(), [])
    bare = core.WTinyLFUCore()
    with pytest.raises(RuntimeError, match="_core_setup"):
        bare.admit(1)
    assert len(bare) == 0 and 1 not in bare


def _engine(policy_name: str, cap: int, **kw: Any) -> PolicyEngine:
    return PolicyEngine(
        hot_capacity=cap,
        warm_capacity=10 * cap,
        policy=policy_name,
        seed=7,
        access_buffer=kw.pop("access_buffer", 64),
        **kw,
    )


@needs_core
def test_the_engines_compiled_drain_matches_the_python_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trace = [
        random.Random(i % 300).randbytes(16) for i in zipf_trace(1.0, 300, 20_000, seed=2).tolist()
    ]
    fast = _engine("wtinylfu", 40)
    monkeypatch.setitem(POLICIES, "wtinylfu", WTinyLFUPolicy)
    slow = _engine("wtinylfu", 40)
    assert fast._compiled and not slow._compiled
    for e in (fast, slow):
        for k in trace:
            if k in e.hot:
                e.record_hot_hit(k)
            else:
                e.record_miss(k)
                e.offer_hot(k)
        e.drain()
    assert fast.hot_keys() == slow.hot_keys()
    assert fast.sketch.table.tobytes() == slow.sketch.table.tobytes()
    assert fast.sketch.resets == slow.sketch.resets > 0
    assert fast.hot.adjustments == slow.hot.adjustments  # type: ignore[attr-defined]


@needs_core
@pytest.mark.parametrize(
    "name,trace",
    [
        ("zipf", zipf_trace(0.9, 2000, 40_000, seed=1)),
        ("shifting", shifting_trace(0.9, 2000, 40_000, phases=4, seed=2)),
        ("scan", scan_trace(0.9, 2000, 40_000, scan_every=500, scan_length=200, seed=3)),
    ],
)
@pytest.mark.parametrize("capacity", [1, 20, 200])
def test_the_simulators_compiled_loop_matches_the_python_loop(
    name: str,
    trace: np.ndarray,
    capacity: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    masks = [np.zeros(len(trace), dtype=bool) for _ in range(2)]
    fast = simulate(trace, capacity=capacity, seed=4, misses_out=masks[0])
    monkeypatch.setitem(POLICIES, "wtinylfu", WTinyLFUPolicy)
    slow = simulate(trace, capacity=capacity, seed=4, misses_out=masks[1])
    unbuffered = simulate(trace, capacity=capacity, seed=4, access_buffer=1)
    assert fast == slow == unbuffered
    assert (masks[0] == masks[1]).all()
    assert fast.hits > 0


@needs_core
def test_the_compiled_loop_takes_lists_of_any_key_and_unsigned_arrays() -> None:
    ints = zipf_trace(0.9, 500, 8000, seed=8)
    as_u64 = simulate(ints.astype(np.uint64), capacity=30, seed=1)
    as_i64 = simulate(ints, capacity=30, seed=1)
    as_list = simulate(ints.tolist(), capacity=30, seed=1)
    as_gen = simulate(iter(ints.tolist()), capacity=30, seed=1)
    assert as_u64 == as_i64 == as_list == as_gen
    digests = [random.Random(k).randbytes(16) for k in ints.tolist()]
    r = simulate(digests, capacity=30, seed=1)
    assert r.requests == 8000 and r.hits > 1000


@needs_core
def test_no_reference_leaks_and_the_policy_is_collected() -> None:
    keys = [random.Random(i).randbytes(16) for i in range(200)]
    before = [sys.getrefcount(k) for k in keys]
    _, b = _pair(25, default_hasher, sample_period=30)
    for idx in zipf_trace(0.9, 200, 5000, seed=1).tolist():
        k = keys[idx]
        b.sketch.increment(default_hasher(k))
        b.on_hit(k)
        if k not in b:
            b.admit(k)
        if idx % 17 == 0:
            b.remove(k)
    del k
    core.replay(b, keys * 3, None)
    core.drain(b, keys)
    ref = weakref.ref(b)
    b.self_cycle = b  # a cycle only the garbage collector can break
    del b
    gc.collect()
    assert ref() is None
    assert [sys.getrefcount(k) for k in keys] == before


# -- the hot read path (HotReader) ---------------------------------------------------------


def _pair_of_caches(tmp_path: Any, clock: Any, **sections: Any) -> tuple[Any, Any]:
    """(C hot path, Python hot path) caches over separate stores, same config."""
    from tiercache import TierCache

    from .conftest import CountingEncoder, make_config

    made = []
    for name in ("c", "py"):
        cfg = make_config(tmp_path / name, **sections)
        made.append(TierCache(cfg, encoder=CountingEncoder(), clock=clock))
    fast, slow = made
    slow.__dict__.pop("embed")  # the class's Python embed
    return fast, slow


@needs_core
def test_the_c_hot_path_serves_exactly_what_the_python_path_serves(tmp_path: Any) -> None:
    from .conftest import FakeClock

    clock = FakeClock()
    fast, slow = _pair_of_caches(tmp_path, clock, policy={"seed": 3, "access_buffer": 7})
    assert type(fast.embed).__name__ == "HotReader"
    assert type(slow.embed).__name__ == "method"
    reader, gathers = fast._fast, []

    class Counting:  # counts the C gathers (the batch path without TTL entries)
        def gather(self, contents: list[Any], out: np.ndarray, *served: list[int]) -> list[int]:
            gathers.append(len(contents))
            return reader.gather(contents, out, *served)

        def take_hits(self) -> int:
            return reader.take_hits()

    fast._fast = Counting()
    texts = [f"t{i}" for i in range(120)] + [b"raw bytes", "\u00e9t\u00e9"]
    rnd = random.Random(5)
    for step in range(3000):
        t = texts[min(int(rnd.paretovariate(1.0)) - 1, len(texts) - 1)]
        if step == 1500:
            for cache in (fast, slow):  # no TTL entry left: batches take the C gather
                cache.mdrop([f"ttl{i}" for i in range(0, 1500, 500)])
        if step % 500 == 0 and step < 1500:
            for cache in (fast, slow):  # entries with and without a TTL
                cache.set(f"ttl{step}", np.full(16, step + 1, np.float32), ttl=5)
            t = f"ttl{step}"
        if step % 7 == 0:
            clock.advance(1)
        a, b = fast.embed(t), slow.embed(t)
        assert a.dtype == np.float32 and a.shape == (16,)
        np.testing.assert_array_equal(a, b)
        a[:] = -1  # the caller's own copy: the cache is untouched
        np.testing.assert_array_equal(fast.embed(t), slow.embed(t))
        if step % 50 == 0:  # batches: the C gather (no TTL entry left) or the Python one
            batch = [texts[rnd.randrange(len(texts))] for _ in range(25)] + [t, t]
            np.testing.assert_array_equal(fast.embed_many(batch), slow.embed_many(batch))
            for x, y in zip(fast.mget(batch), slow.mget(batch)):  # Entries: hot, then warm
                assert (x is None) == (y is None)
                if x is not None and y is not None:
                    assert (x.key, x.tier, x.metadata) == (y.key, y.tier, y.metadata)
                    np.testing.assert_array_equal(x.vector, y.vector)
    sf, ss = fast.stats(), slow.stats()
    for tier in ("hot", "warm"):
        for field in ("hits", "misses", "promotions", "expired", "evictions", "rejections"):
            assert sf["tiers"][tier][field] == ss["tiers"][tier][field], (tier, field)
    assert sf["lookups"] == ss["lookups"] == 6000 + 60 * 27 * 2
    assert fast._engine.hot_keys() == slow._engine.hot_keys()
    assert sf["tiers"]["hot"]["latency_us"]["count"] > 0
    assert 60 <= len(gathers) < 120  # all batches from step 1500 on, some before
    assert fast.encoder.calls == slow.encoder.calls  # type: ignore[attr-defined]


@needs_core
def test_the_c_hot_path_falls_back_for_everything_it_does_not_serve(tmp_path: Any) -> None:
    import threading

    from tiercache.errors import ClosedError, InvalidContentError

    from .conftest import FakeClock

    clock = FakeClock()
    fast, _ = _pair_of_caches(tmp_path, clock)
    v = fast.embed("hello")  # a miss: the Python path computes it
    assert fast.embed("hello") is not v
    with pytest.raises(InvalidContentError):
        fast.embed(42)  # not str/bytes: the Python path's typed error
    with pytest.raises(TypeError):
        fast.embed("a", "b")
    # the lock held by another thread: served by the Python path, which waits
    fast._lock.acquire()
    out: list[Any] = []
    th = threading.Thread(target=lambda: out.append(fast.embed("hello")))
    th.start()
    th.join(0.2)
    assert th.is_alive() and not out
    fast._lock.release()
    th.join(5)
    np.testing.assert_array_equal(out[0], v)
    fast.close()
    with pytest.raises(ClosedError):
        fast.embed("hello")


@needs_core
def test_the_c_gather_checks_its_output_array(tmp_path: Any) -> None:
    from .conftest import FakeClock

    fast, _ = _pair_of_caches(tmp_path, FakeClock())
    for bad in (
        np.empty((2, 16), np.float64),
        np.empty((3, 16), np.float32),
        np.empty((16, 2), np.float32).T,
        np.empty((2, 15), np.float32),
    ):
        with pytest.raises(TypeError, match="out must be"):
            fast._fast.gather(["a", "b"], bad)
    out = np.zeros((2, 16), np.float32)
    assert fast._fast.gather(["a", "b"], out) == [0, 1]  # both missing
    fast.set("a", np.full(16, 2.0, np.float32))
    slot = fast._hot._by_content["a"]
    out, served = np.zeros((3, 16), np.float32), [7]
    assert fast._fast.gather(["a", "b", "a"], out, served) == [1]
    assert served == [7, slot, slot]  # appended: the slot of each served row, in order
    assert out[0].tolist() == out[2].tolist() == [2.0] * 16
    with pytest.raises(TypeError):
        fast._fast.gather(["a"], out[:1], (1,))  # a list only


@needs_core
def test_a_subclass_that_overrides_embed_keeps_its_override(tmp_path: Any) -> None:
    from tiercache import TierCache

    from .conftest import CountingEncoder, make_config

    class Mine(TierCache):
        def embed(self, content: Any) -> np.ndarray:
            return np.zeros(16, np.float32)

    c = Mine(make_config(tmp_path), encoder=CountingEncoder())
    assert not c.embed("x").any() and c._fast is None
    warm_only = Mine(make_config(tmp_path / "w", hot={"enabled": False}), encoder=CountingEncoder())
    assert not warm_only.embed("x").any() and warm_only._fast_warm is None
    no_hot = TierCache(
        make_config(tmp_path / "b", hot={"enabled": False}, warm={"enabled": False}),
        encoder=CountingEncoder(),
    )
    assert "embed" not in no_hot.__dict__
