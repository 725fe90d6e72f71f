"""The compiled ``lru``, ``tinylfu`` and ``lfu`` match their Python specifications.

Random operation sequences (sketch-counted accesses, hits, offers, removals, the engine's
drain and the simulator's replay) go through the compiled policy and the pure-Python
class with the same seed; every result, the resident keys in eviction order and the
sketch must agree at every step.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from tiercache import policy as policy_mod
from tiercache.policy import (
    POLICIES,
    ARCPolicy,
    LFUPolicy,
    LRUPolicy,
    Policy,
    PolicyEngine,
    S3FIFOPolicy,
    TinyLFUPolicy,
    default_hasher,
)
from tiercache.sim import simulate, zipf_trace

core = pytest.importorskip("tiercache._core")

SPECS: dict[str, type[Policy]] = {
    "lru": LRUPolicy,
    "tinylfu": TinyLFUPolicy,
    "lfu": LFUPolicy,
    "s3fifo": S3FIFOPolicy,
    "arc": ARCPolicy,
}
COMPILED = [
    name for name in SPECS if isinstance(POLICIES[name], type) and POLICIES[name] is not SPECS[name]
]


def test_lru_lfu_and_tinylfu_run_compiled() -> None:
    assert POLICIES["lru"] is policy_mod.CompiledLRUPolicy  # type: ignore[attr-defined]
    assert POLICIES["lfu"] is policy_mod.CompiledLFUPolicy  # type: ignore[attr-defined]
    assert POLICIES["s3fifo"] is policy_mod.CompiledS3FIFOPolicy  # type: ignore[attr-defined]
    assert POLICIES["arc"] is policy_mod.CompiledARCPolicy  # type: ignore[attr-defined]
    assert POLICIES["tinylfu"] is policy_mod.CompiledTinyLFUPolicy  # type: ignore[attr-defined]


def _engine(name: str, capacity: int, compiled: bool, **kw: Any) -> PolicyEngine:
    saved = POLICIES[name]
    if not compiled:
        POLICIES[name] = SPECS[name]
    try:
        return PolicyEngine(hot_capacity=capacity, warm_capacity=0, policy=name, seed=5, **kw)
    finally:
        POLICIES[name] = saved


def _step(e: PolicyEngine, op: str, k: Any, batch: list[Any]) -> Any:
    if op == "access":
        if k in e.hot:
            e.record_hot_hit(k)
            return "hit"
        e.record_miss(k)
        return e.offer_hot(k)
    if op == "remove":
        return e.remove_hot(k)
    if op == "offer":
        return e.offer_hot(k)
    if op == "hits":
        e.record_hot_hits(batch)
        return None
    raise AssertionError(op)


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("capacity", [0, 1, 2, 3, 17])
@pytest.mark.parametrize("keys", ["int", "bytes", "str"])
def test_random_operations_match_the_python_specification(
    name: str, capacity: int, keys: str
) -> None:
    rnd = random.Random(f"{name}-{capacity}-{keys}")
    n = 3 * capacity + 5
    if keys == "int":
        pool: list[Any] = [i * 7919 - 300 for i in range(n)]
    elif keys == "bytes":
        pool = [random.Random(i).randbytes(16) for i in range(n)]
    else:
        pool = [f"q{i}" for i in range(n)]
    fast = _engine(name, capacity, True, access_buffer=rnd.choice([1, 8]))
    slow = _engine(name, capacity, False, access_buffer=fast.access_buffer)
    assert type(fast.hot) is not type(slow.hot)
    for step in range(1500):
        op = rnd.choices(["access", "remove", "offer", "hits"], [20, 2, 2, 1])[0]
        k = pool[min(int(rnd.paretovariate(1.0)) - 1, n - 1)]
        batch = [rnd.choice(pool) for _ in range(rnd.randrange(6))]
        assert _step(fast, op, k, batch) == _step(slow, op, k, batch), (step, op)
        if step % 50 == 0:
            assert fast.hot_keys() == slow.hot_keys(), step
            assert len(fast.hot) == len(slow.hot) <= capacity
    assert fast.hot_keys() == slow.hot_keys()
    assert fast.sketch.table.tobytes() == slow.sketch.table.tobytes()
    assert all((k in fast.hot) == (k in slow.hot) for k in pool)
    if name == "lfu":
        assert [fast.hot.count(k) for k in pool] == [slow.hot.count(k) for k in pool]  # type: ignore[attr-defined]
    if name == "arc":
        assert fast.hot.p == slow.hot.p  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("capacity", [1, 20, 300])
def test_the_simulators_compiled_loop_matches_the_python_loop(
    name: str, capacity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = zipf_trace(0.9, 3000, 30_000, seed=capacity)
    masks = [np.zeros(len(trace), dtype=bool) for _ in range(2)]
    fast = simulate(trace, capacity=capacity, policy=name, seed=3, misses_out=masks[0])
    monkeypatch.setitem(POLICIES, name, SPECS[name])
    slow = simulate(trace, capacity=capacity, policy=name, seed=3, misses_out=masks[1])
    assert fast == slow and fast.hits > 0
    assert (masks[0] == masks[1]).all()


def test_tinylfu_jitter_and_custom_hashers_match() -> None:
    # a custom hasher (called from C) and a low jitter threshold (the rng is drawn)
    def hasher(k: Any) -> int:
        return default_hasher(k) * 3 & (2**64 - 1)

    trace = zipf_trace(1.1, 500, 20_000, seed=9).tolist()
    res = []
    for compiled in (True, False):
        e = _engine("tinylfu", 25, compiled, hasher=hasher, params={"jitter_threshold": 1})
        for k in trace:
            _step(e, "access", k, [])
        res.append((e.hot_keys(), e._policy_rng.getstate()))
    assert res[0] == res[1]


def test_lru_has_no_window_to_resize() -> None:
    e = _engine("lru", 10, True)
    e.hot.resize_window(5)  # type: ignore[attr-defined]  # a no-op: there is no window
    with pytest.raises(ValueError, match="no window"):
        e.hot._set_window(1)  # type: ignore[attr-defined]


class _Key:
    """A key object whose lifetime the test can watch (weak references)."""

    def __init__(self, i: int) -> None:
        self.i = i

    def __hash__(self) -> int:
        return self.i

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and other.i == self.i


@pytest.mark.parametrize("name", COMPILED)
def test_no_reference_leaks(name: str) -> None:
    import gc
    import weakref

    pool = [_Key(i) for i in range(300)]
    refs = [weakref.ref(k) for k in pool]
    e = _engine(name, 40, True, hasher=lambda k: k.i * 0x9E3779B97F4A7C15 & (2**64 - 1))
    rnd = random.Random(name)
    for step in range(3000):
        k = pool[min(int(rnd.paretovariate(0.7)), 300) - 1]
        _step(e, "remove" if step % 97 == 0 else "access", k, [])
    e.drain()
    del e, k, pool
    gc.collect()
    assert all(r() is None for r in refs)
