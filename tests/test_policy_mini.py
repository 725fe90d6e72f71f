"""Window sizing by miniature simulation (``sizing: mini``, issue #17).

The pure-Python ``WTinyLFUPolicy`` (its shadows: ``WTinyLFUPolicy`` instances over the
sampled key hashes) is the specification; the compiled core's lean shadows (shadow.c)
must make the same decisions: replays through both, by the simulator's loop and by the
engine's access buffer.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from tiercache import policy as policy_mod
from tiercache.errors import ConfigError
from tiercache.policy import POLICIES, PolicyEngine, WTinyLFUPolicy, default_hasher
from tiercache.sim import shifting_trace, simulate
from tiercache.sim.suite import family_trace
from tiercache.sim.traces import zipf_trace
from tiercache.sketch import FrequencySketch

Compiled: Any = getattr(policy_mod, "CompiledWTinyLFUPolicy", None)
needs_core = pytest.mark.skipif(Compiled is None, reason="compiled core not built")

MINI = {"sizing": "mini"}


def recency_trace(warm: int, n: int, seed: int = 0) -> np.ndarray:
    """``warm`` requests of Zipf 0.9 over 6,000 keys (frequencies built, the cache full),
    then ``n`` requests of new keys each requested twice, 50 to 1,500 requests apart:
    only a large window keeps a key until its second request."""
    rng = np.random.default_rng(seed)
    a = np.asarray(zipf_trace(alpha=0.9, keys=6000, requests=warm, seed=seed), dtype=np.int64)
    out = np.full(n + 2000, -1, dtype=np.int64)
    nxt = 10**6
    for t in range(n):
        if out[t] < 0:
            out[t] = nxt
            d = t + int(rng.integers(50, 1500))
            while out[d] >= 0:
                d += 1
            out[d] = nxt
            nxt += 1
    return np.concatenate([a, out[:n]])


def _replay(eng: PolicyEngine, trace: np.ndarray) -> int:
    hits = 0
    for k in trace.tolist():
        hit = k in eng.hot
        eng.record_access(k)
        if not hit:
            eng.offer_hot(k)
        hits += hit
    eng.drain()
    return hits


def test_mini_is_the_default_and_validated() -> None:
    hot: Any = PolicyEngine(hot_capacity=100, warm_capacity=0, seed=1).hot
    assert hot.sizing == "mini" and hot._mini  # the default since issue #17's switch
    climb: Any = PolicyEngine(
        hot_capacity=100, warm_capacity=0, seed=1, params={"sizing": "climb"}
    ).hot
    assert climb.sizing == "climb" and not climb._mini
    fixed: Any = PolicyEngine(
        hot_capacity=100, warm_capacity=0, seed=1, params={"adaptive": False}
    ).hot
    assert not fixed._mini and not fixed._climbing  # adaptive false: a fixed window
    on: Any = PolicyEngine(hot_capacity=5000, warm_capacity=0, seed=1, params=MINI).hot
    assert on._mini and on._mini_capacity == 1024
    assert on._mini_targets == [50, 500, 2000] and on._mini_current == 0
    assert on._mini_threshold == int((1 << 24) / (5000 / 1024))
    # below mini_entries: shadows of max(mini_min_entries, mini_share * C) entries (a
    # quarter of the keys sampled from C = 1,024 up), every key at C <= 256
    small: Any = PolicyEngine(hot_capacity=500, warm_capacity=0, seed=1, params=MINI).hot
    assert small._mini_capacity == 256 and small._mini_threshold == int((1 << 24) / (500 / 256))
    quarter: Any = PolicyEngine(hot_capacity=2000, warm_capacity=0, seed=1, params=MINI).hot
    assert quarter._mini_capacity == 500 and quarter._mini_threshold == 1 << 22
    whole: Any = PolicyEngine(hot_capacity=200, warm_capacity=0, seed=1, params=MINI).hot
    assert whole._mini_capacity == 200 and whole._mini_threshold == 1 << 24
    old: Any = PolicyEngine(
        hot_capacity=500, warm_capacity=0, seed=1, params={**MINI, "mini_share": 1.0}
    ).hot
    assert old._mini_capacity == 500 and old._mini_threshold == 1 << 24
    tiny: Any = PolicyEngine(hot_capacity=2, warm_capacity=0, seed=1, params=MINI).hot
    assert not tiny._mini  # below 3 entries there is no window to size
    bad: list[tuple[str, Any]] = [
        ("sizing", "ghost"),
        ("sizing", None),
        ("mini_entries", 2),
        ("mini_entries", True),
        ("mini_entries", 10.5),
        ("mini_decay", 1.5),
        ("mini_decay", -0.1),
        ("mini_margin", float("nan")),
        ("mini_windows", []),
        ("mini_windows", [0.1] * 9),
        ("mini_windows", [0.0, 0.5]),
        ("mini_windows", [0.1, 1.0]),
        ("mini_windows", "0.1"),
        ("mini_windows", 0.1),
        ("mini_gate", 1),
        ("mini_share", 0.0),
        ("mini_share", 1.5),
        ("mini_share", "0.25"),
        ("mini_min_entries", 2),
        ("mini_min_entries", 3.5),
    ]
    for name, value in bad:
        with pytest.raises(ConfigError, match=f"policy.params.{name}"):
            PolicyEngine(hot_capacity=10, warm_capacity=0, params={**MINI, name: value})


TRACES = {
    "loop": family_trace("loop", 7, 3000, 15_000),
    "scan": family_trace("scan", 7, 3000, 15_000),
    "mix": family_trace("mix", 8, 3000, 15_000),
    "shift": shifting_trace(0.9, 3000, 20_000, phases=5, seed=2),
}
VARIANTS = [
    dict(MINI),
    {**MINI, "mini_entries": 64},  # sampled at C > 64
    {**MINI, "mini_entries": 100, "mini_decay": 0.5, "mini_margin": 0.0, "mini_gate": False},
    {**MINI, "mini_entries": 50, "mini_windows": [0.02, 0.3, 0.6, 0.9], "reuse": 1.0},
    {**MINI, "mini_min_entries": 10},  # a quarter of the keys sampled at C >= 40
    {**MINI, "mini_share": 0.5, "mini_min_entries": 20, "mini_gate": False},
]


@needs_core
@pytest.mark.parametrize("name", sorted(TRACES))
@pytest.mark.parametrize("capacity", [3, 30, 200])
def test_compiled_and_python_mini_decide_alike(
    name: str, capacity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = TRACES[name]
    for params in VARIANTS:
        fast = simulate(trace, capacity=capacity, params=params, seed=3)
        with monkeypatch.context() as m:
            m.setitem(POLICIES, "wtinylfu", WTinyLFUPolicy)
            slow = simulate(trace, capacity=capacity, params=params, seed=3)
        assert fast == slow, (name, capacity, params)


def _direct(cls: type, capacity: int, trace: list[int], params: dict[str, Any]) -> Any:
    """on_hit / admit called directly (the compiled on_hit hashes the key itself)."""
    sk = FrequencySketch(capacity, seed=0)
    p = cls(capacity, sketch=sk, hasher=default_hasher, rng=random.Random(1), **params)
    hits = 0
    for k in trace:
        sk.increment(default_hasher(k))
        resident = k in p
        p.on_hit(k)
        if resident:
            hits += 1
        else:
            p.admit(k)
    return hits, list(p.mini_moves), p.window_capacity, list(p.keys())


@needs_core
@pytest.mark.parametrize("capacity", [5, 50, 300, 2000])
def test_compiled_and_python_mini_move_the_window_alike(capacity: int) -> None:
    trace = [int(x) for x in zipf_trace(alpha=0.8, keys=capacity * 20, requests=30_000, seed=1)]
    moved = 0
    for params in VARIANTS:
        a = _direct(WTinyLFUPolicy, capacity, trace, params)
        b = _direct(Compiled, capacity, trace, params)
        assert a == b, (capacity, params)
        moved += len(a[1])
    assert moved > 0 or capacity == 2000  # the parity covers moves, not only no-ops


@needs_core
def test_the_sampling_salt_is_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another salt samples other keys; the compiled core takes it from the policy."""
    from tiercache import wtinylfu

    trace = [int(x) for x in recency_trace(3000, 9000, seed=4)]
    params = {**MINI, "mini_min_entries": 50}  # C = 400: a quarter of the keys sampled

    def state() -> Any:
        eng = PolicyEngine(hot_capacity=400, warm_capacity=0, seed=2, params=params)
        _replay(eng, np.asarray(trace))
        return eng.hot._mini_state()  # type: ignore[attr-defined]

    base = state()
    monkeypatch.setattr(wtinylfu, "_MINI_SALT", 0x1234567)
    assert state()[:2] != base[:2]  # other keys sampled: other shadow hits
    a = _direct(WTinyLFUPolicy, 400, trace, params)
    b = _direct(Compiled, 400, trace, params)
    assert a == b and a[1], "the window never moved"


@needs_core
def test_engine_buffer_path_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live engine's access buffer (compiled: one C drain) gives the same windows."""
    trace = recency_trace(3000, 9000, seed=4)
    out = []
    for cls in (Compiled, WTinyLFUPolicy):
        with monkeypatch.context() as m:
            m.setitem(POLICIES, "wtinylfu", cls)
            eng = PolicyEngine(
                hot_capacity=400, warm_capacity=0, seed=2, params={**MINI, "mini_entries": 100}
            )
            hits = _replay(eng, trace)
        hot: Any = eng.hot
        assert type(hot) is cls
        out.append((hits, tuple(hot.mini_moves), hot.window_capacity, tuple(hot.keys())))
    assert out[0][1], "the window never moved"
    assert out[0] == out[1]


@needs_core
def test_recency_moves_the_window_to_the_large_shadow() -> None:
    """C = 5,000: after 20,000 Zipf requests a recency-heavy phase starts; the shadows'
    40% window wins and the real window jumps there within 10,000 requests (two or three
    decisions). The hill climber (a sample of 10 * C requests) has not moved at all."""
    trace = recency_trace(20_000, 30_000)
    warm, phase = trace[:20_000], trace[20_000:]
    results = {}
    for params in (MINI, {"sizing": "climb"}):
        eng = PolicyEngine(hot_capacity=5000, warm_capacity=0, seed=1, params=params)
        _replay(eng, warm)
        hot: Any = eng.hot
        assert hot.window_capacity == 50
        _replay(eng, phase[:10_000])
        window = hot.window_capacity
        hits = _replay(eng, phase[10_000:])
        results[params is MINI] = (window, hits)
    assert results[True][0] == 2000, results
    assert results[False][0] < 2000, results  # the climber: still its 1% window
    assert results[True][1] > 10 * max(1, results[False][1]), results


@needs_core
def test_mini_setup_is_checked() -> None:
    p: Any = PolicyEngine(hot_capacity=100, warm_capacity=0, seed=1, params=MINI).hot
    spec = list(p._mini_specs()[0])
    for i, bad in ((0, 2), (1, 0), (1, 100), (5, 24)):
        s = list(spec)
        s[i] = bad
        with pytest.raises(ValueError, match="_mini_setup"):
            p._mini_setup(1 << 24, 1000, [tuple(s)])
    with pytest.raises(ValueError, match="_mini_setup"):
        p._mini_setup(1 << 24, 0, [tuple(spec)])
    with pytest.raises(ValueError, match="_mini_setup"):
        p._mini_setup(1 << 24, 1000, [tuple(spec)] * 9)
    other = list(spec)
    other[7] ^= 1  # another hash function: the shadows share one sketch
    with pytest.raises(ValueError, match="share one sketch"):
        p._mini_setup(1 << 24, 1000, [tuple(spec), tuple(other)])
    p._mini_setup(1 << 24, 1000, [])  # off
    assert p._mini_state() is None
    q: Any = PolicyEngine(hot_capacity=100, warm_capacity=0, seed=1, params=MINI).hot
    count, hits, sizes, nbytes = q._mini_state()
    assert count == 0 and hits == (0, 0, 0) and sizes == (0, 0, 0)
    # the shadows' one sketch (4 x 4,096); per shadow 101 nodes of 32 bytes, their table,
    # the ghost (400 x 12 bytes and its table)
    assert 16384 + 3 * 10_000 < nbytes < 16384 + 3 * 16384


@needs_core
def test_shadows_are_freed_with_the_policy() -> None:
    """The shadows' C memory (PyMem, so tracemalloc sees it) goes with the policy."""
    import gc
    import tracemalloc

    def build() -> None:
        PolicyEngine(hot_capacity=5000, warm_capacity=0, seed=1, params=MINI)

    build()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(20):  # ~0.41 MB of shadows each
            build()
            gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 2_000_000, grown
