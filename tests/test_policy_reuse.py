"""The reuse gate of ``wtinylfu`` (issue #17): LIRS-like gaps with a ghost history.

The pure-Python ``WTinyLFUPolicy`` is the specification; the compiled core must make the
same decisions (replays and random operation sequences through both).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from tiercache import policy as policy_mod
from tiercache.errors import ConfigError
from tiercache.policy import POLICIES, Admission, PolicyEngine, WTinyLFUPolicy, default_hasher
from tiercache.sim import shifting_trace, simulate
from tiercache.sim.suite import family_trace
from tiercache.sketch import FrequencySketch

Compiled: Any = getattr(policy_mod, "CompiledWTinyLFUPolicy", None)
needs_core = pytest.mark.skipif(Compiled is None, reason="compiled core not built")


def test_reuse_is_on_by_default_and_validated() -> None:
    eng = PolicyEngine(hot_capacity=100, warm_capacity=0, seed=1)
    hot = eng.hot
    assert isinstance(hot, WTinyLFUPolicy)
    assert hot.reuse == 4.0 and hot.reuse_capacity == 400
    off = PolicyEngine(hot_capacity=100, warm_capacity=0, seed=1, params={"reuse": 0})
    assert off.hot.reuse_capacity == 0  # type: ignore[attr-defined]
    tiny = PolicyEngine(hot_capacity=1, warm_capacity=0, seed=1, params={"reuse": 0.1})
    assert tiny.hot.reuse_capacity == 1  # type: ignore[attr-defined]
    for bad in (-0.5, 64.5, "4", True, float("nan")):
        with pytest.raises(ConfigError, match="policy.params.reuse"):
            PolicyEngine(hot_capacity=10, warm_capacity=0, params={"reuse": bad})


def test_the_gate_keeps_a_loop_resident() -> None:
    """A loop longer than the cache, interleaved with Zipf: with the gate the resident
    part of the loop stays (every candidate's gap is the period, every victim has been
    idle less), so more of it hits than with TinyLFU's counts alone."""
    trace = family_trace("loop", 1036, 30_000, 300_000)  # a training trace
    on = simulate(trace, capacity=204, seed=1)
    off = simulate(trace, capacity=204, seed=1, params={"reuse": 0})
    assert on.hit_ratio > off.hit_ratio + 0.01


TRACES = {
    "loop": family_trace("loop", 7, 3000, 40_000),
    "scan": family_trace("scan", 7, 3000, 40_000),
    "mix": family_trace("mix", 8, 3000, 40_000),
    "shift": shifting_trace(0.9, 3000, 60_000, phases=5, seed=2),
}


@needs_core
@pytest.mark.parametrize("name", sorted(TRACES))
@pytest.mark.parametrize("capacity", [1, 2, 3, 30, 200])
def test_compiled_and_python_gates_decide_alike(
    name: str, capacity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = TRACES[name]
    for params in ({}, {"reuse": 0.5, "adaptive": False}, {"reuse": 1.0, "window": 0.2}):
        fast = simulate(trace, capacity=capacity, params=params, seed=3)
        with monkeypatch.context() as m:
            m.setitem(POLICIES, "wtinylfu", WTinyLFUPolicy)
            slow = simulate(trace, capacity=capacity, params=params, seed=3)
        assert fast == slow, (name, capacity, params)


@needs_core
@pytest.mark.parametrize("spec", [False, True])
def test_a_shift_opens_the_gate_for_five_capacities(
    spec: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = shifting_trace(0.9, 5000, 100_000, phases=5, seed=2)
    cls = WTinyLFUPolicy if spec else Compiled
    monkeypatch.setitem(POLICIES, "wtinylfu", cls)
    seen: list[int] = []
    original = cls._react_to_shift

    def react(self: Any) -> None:
        original(self)
        seen.append(self._reuse_pause)

    monkeypatch.setattr(cls, "_react_to_shift", react)
    eng = PolicyEngine(hot_capacity=100, warm_capacity=0, seed=3)
    hot = eng.hot
    assert type(hot) is cls
    for k in trace.tolist():
        eng.record_access(k)
        if k not in hot:
            eng.offer_hot(k)
    assert hot.shifts and seen == [500] * len(hot.shifts)  # type: ignore[attr-defined]


def _ops(seed: int, n: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    keys = rng.zipf(1.2, size=n) % 60
    kinds = rng.choice(
        ["hit", "admit", "admit", "remove", "resize"], size=n, p=[0.5, 0.2, 0.2, 0.05, 0.05]
    )
    return [(str(k), int(v)) for k, v in zip(kinds, keys)]


@needs_core
@pytest.mark.parametrize("capacity", [1, 2, 5, 17])
def test_random_operations_decide_alike(capacity: int) -> None:
    """admit / on_hit / remove / resize_window sequences, policies built directly (no
    engine): every admission, every key list and the clock agree."""
    for seed in range(3):
        made = []
        for cls in (WTinyLFUPolicy, Compiled):
            sketch = FrequencySketch(512, seed=seed)
            made.append(
                (
                    cls(
                        capacity,
                        sketch=sketch,
                        hasher=default_hasher,
                        rng=random.Random(seed),
                        reuse=1.5,
                        adaptive=False,
                    ),
                    sketch,
                )
            )
        for op, k in _ops(seed, 3000):
            out = []
            for p, sketch in made:
                if op == "hit":
                    sketch.increment(default_hasher(k))
                    p.on_hit(k)
                    out.append(None)
                elif op == "admit":
                    sketch.increment(default_hasher(k))
                    p.on_hit(k)
                    out.append(p.admit(k) if k not in p else Admission(True))
                elif op == "remove":
                    out.append(p.remove(k))
                elif capacity >= 3:
                    p.resize_window(1 + k % (capacity - 1))
                    out.append(p.window_capacity)
                else:
                    out.append(None)
            assert out[0] == out[1], (op, k)
            assert list(made[0][0].keys()) == list(made[1][0].keys())
        assert made[0][0]._clock == made[1][0]._clock


@needs_core
def test_reuse_setup_is_checked() -> None:
    p = Compiled(
        10, sketch=FrequencySketch(64, seed=1), hasher=default_hasher, rng=random.Random(1)
    )
    with pytest.raises(ValueError, match="ghost capacity"):
        p._reuse_setup(0)
    p.on_hit(1)
    p.admit(1)
    with pytest.raises(ValueError, match="empty mode-0"):
        p._reuse_setup(5)
