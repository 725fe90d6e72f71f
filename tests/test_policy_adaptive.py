"""W-TinyLFU's hill-climbed window: direction, determinism, parameters, invariants."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tiercache.errors import ConfigError
from tiercache.policy import PolicyEngine, WTinyLFUPolicy
from tiercache.sim import simulate, zipf_trace


def drive(trace: list[int], capacity: int, *, seed: int = 3, access_buffer: int = 1024,
          **params: Any) -> tuple[WTinyLFUPolicy, int]:
    eng = PolicyEngine(hot_capacity=capacity, warm_capacity=0, policy="wtinylfu",
                       params=params, seed=seed, access_buffer=access_buffer)
    hot = eng.hot
    assert isinstance(hot, WTinyLFUPolicy)
    hits = 0
    for k in trace:
        if k in hot:
            hits += 1
            eng.record_hot_hit(k)
        else:
            eng.record_miss(k)
            eng.offer_hot(k)
        assert len(hot) <= capacity
    eng.drain()
    return hot, hits


def recency_trace(requests: int, span: int = 150, speed: int = 3, seed: int = 0) -> list[int]:
    """A working set of ``span`` keys that slides forward one key every ``speed`` requests:
    what matters is recency, frequencies are always stale (LRU's best case)."""
    rng = np.random.default_rng(seed)
    base = np.arange(requests) // speed
    return [int(x) for x in base + rng.integers(0, span, size=requests)]


def test_climber_grows_the_window_on_a_recency_trace() -> None:
    trace = recency_trace(40_000)
    hot, hits = drive(trace, 200, sample_period=1000, step=0.0625, step_decay=0.98)
    assert hot.adjustments, "the climber never ran"
    assert hot.window_capacity >= 40  # started at 2 (1%)
    fixed, fixed_hits = drive(trace, 200, adaptive=False)
    assert fixed.window_capacity == 2 and not fixed.adjustments
    assert hits > fixed_hits


def test_climber_shrinks_the_window_on_a_zipf_trace() -> None:
    trace = zipf_trace(1.0, 5000, 120_000, seed=5).tolist()
    hot, _ = drive(trace, 200, window=0.5, sample_period=4000, step=0.0625, step_decay=0.98)
    assert len(hot.adjustments) >= 20
    assert hot.window_capacity < 50 and min(hot.adjustments) < 20  # started at 100 (50%)


def test_climber_is_deterministic_and_buffering_does_not_change_it() -> None:
    trace = zipf_trace(0.8, 3000, 30_000, seed=9).tolist()
    a, ha = drive(trace, 100, sample_period=500)
    b, hb = drive(trace, 100, sample_period=500)
    c, hc = drive(trace, 100, sample_period=500, access_buffer=1)
    assert len(a.adjustments) >= 20
    assert a.adjustments == b.adjustments == c.adjustments
    assert ha == hb == hc
    assert list(a.keys()) == list(c.keys())


def test_simulator_default_is_adaptive_and_seeded() -> None:
    trace = zipf_trace(0.9, 2000, 20_000, seed=2)
    r1 = simulate(trace, capacity=50, policy="wtinylfu", seed=4)
    r2 = simulate(trace, capacity=50, policy="wtinylfu", seed=4)
    assert r1 == r2
    assert WTinyLFUPolicy.params["adaptive"] is True


def test_resize_window_moves_entries_without_evicting() -> None:
    trace = zipf_trace(1.0, 500, 5000, seed=1).tolist()
    hot, _ = drive(trace, 50, adaptive=False)
    before = set(hot.keys())
    assert len(before) == 50
    hot.resize_window(30)
    assert (hot.window_capacity, hot.main_capacity) == (30, 20)
    assert hot.protected_capacity == 16
    assert set(hot.keys()) == before
    assert sum(hot.segment(k) == "window" for k in before) == 30
    assert sum(hot.segment(k) == "protected" for k in before) <= 16
    hot.resize_window(0)  # clamped to 1
    assert hot.window_capacity == 1 and set(hot.keys()) == before
    assert sum(hot.segment(k) == "window" for k in before) == 1
    hot.resize_window(10**6)  # clamped to C - 1
    assert hot.window_capacity == 49 and set(hot.keys()) == before


def test_small_capacities_do_not_climb() -> None:
    for cap in (0, 1, 2):
        hot, _ = drive(list(range(50)) * 40, cap, sample_period=10)
        assert hot.adjustments == []


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"adaptive": 1}, "policy.params.adaptive"),
        ({"adaptive": "yes"}, "policy.params.adaptive"),
        ({"sample_period": -1}, "policy.params.sample_period"),
        ({"sample_period": 1.5}, "policy.params.sample_period"),
        ({"step": 0}, "policy.params.step"),
        ({"step": 1.5}, "policy.params.step"),
        ({"step_decay": -0.1}, "policy.params.step_decay"),
        ({"step_decay": 2}, "policy.params.step_decay"),
        ({"boost": 1.0}, "policy.params.boost"),
        ({"boost": -0.2}, "policy.params.boost"),
    ],
)
def test_bad_climber_params_are_config_errors(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        PolicyEngine(hot_capacity=100, warm_capacity=0, policy="wtinylfu", params=params,
                     seed=1)
    assert exc.value.key == key


@pytest.mark.parametrize("name,params", [
    ("lru", {}), ("lfu", {}), ("tinylfu", {}), ("wtinylfu", {"adaptive": False}),
    ("wtinylfu", {"sample_period": 200, "step": 0.0625, "step_decay": 0.98}),
    ("wtinylfu", {"window": 0.5, "sample_period": 150, "boost": 0.9}),
])
def test_batched_on_hits_equals_the_on_hit_loop(name: str, params: dict[str, Any]) -> None:
    """The engine's drain calls ``on_hits``; it must be exactly a loop of ``on_hit``
    (order of segments, climber samples and adjustments included)."""
    import random

    from tiercache.policy import get_policy
    from tiercache.sketch import FrequencySketch

    def make() -> Any:
        sketch = FrequencySketch(4096, seed=1)
        return get_policy(name)(60, sketch=sketch, hasher=hash, rng=random.Random(2), **params)

    a, b = make(), make()
    rng = np.random.default_rng(4)
    trace = zipf_trace(0.9, 400, 20_000, seed=11).tolist()
    pending: list[int] = []
    for i, k in enumerate(trace):
        for p in (a, b):
            p.sketch.increment(hash(k))
        if k in a:
            pending.append(k)
        else:
            for k2 in pending:
                a.on_hit(k2)
            b.on_hits(pending)
            pending = []
            assert a.admit(k) == b.admit(k)
        if rng.random() < 0.01:
            for k2 in pending:
                a.on_hit(k2)
            b.on_hits(pending)
            pending = []
            assert list(a.keys()) == list(b.keys()), i
    assert list(a.keys()) == list(b.keys())
    if isinstance(a, WTinyLFUPolicy):
        assert a.adjustments == b.adjustments and a.window_capacity == b.window_capacity
        if params.get("adaptive", True):
            assert a.adjustments, "the climber never ran"
