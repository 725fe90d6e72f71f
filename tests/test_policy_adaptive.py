"""W-TinyLFU's hill-climbed window: direction, determinism, parameters, invariants."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tiercache.errors import ConfigError
from tiercache.policy import PolicyEngine, WTinyLFUPolicy
from tiercache.sim import scan_trace, shifting_trace, simulate, zipf_trace


def drive(
    trace: list[int], capacity: int, *, seed: int = 3, access_buffer: int = 1024, **params: Any
) -> tuple[WTinyLFUPolicy, int]:
    eng = PolicyEngine(
        hot_capacity=capacity,
        warm_capacity=0,
        policy="wtinylfu",
        params={"sizing": "climb", **params},  # the climber's tests (the default: mini)
        seed=seed,
        access_buffer=access_buffer,
    )
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
    # the climber alone, with the defaults of before the reuse gate (with the gate and
    # protected 0.7 it settles at ~60 entries from 100)
    hot, _ = drive(
        trace,
        200,
        window=0.5,
        sample_period=4000,
        step=0.0625,
        step_decay=0.98,
        reuse=0.0,
        protected=0.8,
    )
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


def test_a_popularity_shift_resets_the_sketch_and_main_region() -> None:
    """Each phase boundary of a shifting trace is detected within two detector samples
    (1,000 requests each) and the reset pays; stationary and scan-polluted traces of the
    same size never trigger it."""
    phase, phases = 10_000, 4
    trace = shifting_trace(0.9, 2000, phase * phases, phases=phases, seed=2).tolist()
    on, hits_on = drive(trace, 200, seed=4)
    off, hits_off = drive(trace, 200, seed=4, shift=0)
    assert on._period == 1000 and not off.shifts
    # sample n covers requests [fill + 1000 (n - 1), fill + 1000 n): boundaries at 10, 20, 30
    assert len(on.shifts) == phases - 1
    for boundary, sample in zip(range(1, phases), on.shifts):
        assert 10 * boundary <= sample <= 10 * boundary + 2
    assert on.sketch.resets > off.sketch.resets  # the reset aged the sketch
    assert hits_on > 1.02 * hits_off
    # deterministic; the detector's samples do not depend on the access buffer
    again, hits_again = drive(trace, 200, seed=4)
    assert (again.shifts, hits_again) == (on.shifts, hits_on)
    unbuffered, hits_unbuffered = drive(trace, 200, seed=4, access_buffer=1)
    assert unbuffered.shifts == on.shifts
    # the compiled core ages the sketch right after the sample's last access; the pure
    # Python drain counts the rest of the buffer first (docs/policies.md)
    assert abs(hits_unbuffered - hits_on) <= len(trace) // 1000
    for quiet in (
        zipf_trace(0.9, 2000, 40_000, seed=1).tolist(),
        scan_trace(0.9, 2000, 40_000, scan_every=500, scan_length=200, seed=3).tolist(),
    ):
        for capacity in (20, 200):
            hot, _ = drive(quiet, capacity, seed=4)
            # below 50 entries the climber keeps the window (it still samples)
            assert hot.shifts == [] and bool(hot.adjustments) == (capacity >= 50)


def test_simulator_default_is_adaptive_and_seeded() -> None:
    trace = zipf_trace(0.9, 2000, 20_000, seed=2)
    r1 = simulate(trace, capacity=50, policy="wtinylfu", seed=4)
    r2 = simulate(trace, capacity=50, policy="wtinylfu", seed=4)
    assert r1 == r2
    assert WTinyLFUPolicy.params["adaptive"] is True


def test_resize_window_moves_entries_without_evicting() -> None:
    trace = zipf_trace(1.0, 500, 5000, seed=1).tolist()
    hot, _ = drive(trace, 50, adaptive=False, protected=0.8)
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
        ({"shift": 1.0}, "policy.params.shift"),
        ({"shift": -0.1}, "policy.params.shift"),
        ({"shift_period": -1}, "policy.params.shift_period"),
        ({"shift_period": 2.5}, "policy.params.shift_period"),
        ({"shift_aging": -1}, "policy.params.shift_aging"),
        ({"shift_aging": True}, "policy.params.shift_aging"),
    ],
)
def test_bad_climber_params_are_config_errors(params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        PolicyEngine(hot_capacity=100, warm_capacity=0, policy="wtinylfu", params=params, seed=1)
    assert exc.value.key == key


@pytest.mark.parametrize(
    "name,params",
    [
        ("lru", {}),
        ("lfu", {}),
        ("tinylfu", {}),
        ("wtinylfu", {"adaptive": False}),
        ("wtinylfu", {"sample_period": 200, "step": 0.0625, "step_decay": 0.98, "sizing": "climb"}),
        ("wtinylfu", {"window": 0.5, "sample_period": 150, "boost": 0.9, "sizing": "climb"}),
        ("wtinylfu", {"mini_entries": 20, "mini_min_entries": 3}),  # the default sizing
    ],
)
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
        if params.get("sizing") == "climb":
            assert a.adjustments, "the climber never ran"
        elif params.get("adaptive", True):
            assert a.mini_moves == b.mini_moves
