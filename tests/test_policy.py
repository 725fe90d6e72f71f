"""Policies and the policy engine: eviction order, admission, invariants, buffering."""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiercache.errors import ConfigError
from tiercache.keys import key_hash64
from tiercache.policy import (
    POLICIES,
    REASONS,
    Admission,
    LFUPolicy,
    Policy,
    PolicyEngine,
    TinyLFUPolicy,
    WTinyLFUPolicy,
    default_hasher,
    get_policy,
    register,
)
from tiercache.sketch import FrequencySketch

ALL_POLICIES = sorted(POLICIES)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "policies.md"


def make(name: str, capacity: int, *, seed: int = 0, **params: Any) -> Policy:
    """A bare policy with its own sketch (tests drive the sketch by hand)."""
    sketch = FrequencySketch(4096, seed=seed)
    return get_policy(name)(
        capacity, sketch=sketch, hasher=default_hasher, rng=random.Random(seed), **params
    )


def engine(name: str, capacity: int, *, seed: int = 1, **kw: Any) -> PolicyEngine:
    kw.setdefault("warm_capacity", 10 * capacity)
    return PolicyEngine(hot_capacity=capacity, policy=name, seed=seed, **kw)


def replay(eng: PolicyEngine, trace: Iterable[Hashable]) -> int:
    """Drive the engine as the cache does; returns the number of hot hits."""
    hits = 0
    hot = eng.hot
    for k in trace:
        if k in hot:
            hits += 1
            eng.record_hot_hit(k)
        else:
            eng.record_miss(k)
            eng.offer_hot(k)
    eng.drain()
    return hits


def zipf_trace(n_keys: int, n_requests: int, alpha: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_keys + 1, dtype=np.float64) ** alpha
    p /= p.sum()
    ranks = rng.choice(n_keys, size=n_requests, p=p)
    ids = rng.permutation(n_keys)  # popularity unrelated to key value
    return [int(x) for x in ids[ranks]]


# --------------------------------------------------------------------------------------
# Registry and configuration


def test_registry_holds_the_documented_policies() -> None:
    assert {"lru", "lfu", "tinylfu", "wtinylfu"} <= set(POLICIES)
    for name, cls in POLICIES.items():
        assert cls.name == name
        assert cls.tie_break and cls.history, name


def test_every_policy_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name, cls in POLICIES.items():
        assert f"`{name}`" in text, name
        for pname in cls.params:
            assert f"`{pname}`" in text, (name, pname)
    for reason in REASONS:
        assert f"`{reason}`" in text, reason


def test_config_known_policies_match_registry() -> None:
    config = pytest.importorskip("tiercache.config")
    assert set(config.KNOWN_POLICIES) == set(POLICIES)


def test_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        get_policy("clock")
    assert exc.value.key == "policy.name"
    assert exc.value.value == "clock"
    assert "wtinylfu" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        PolicyEngine(hot_capacity=10, warm_capacity=10, policy="nope", seed=1)
    assert exc.value.key == "policy.name"


@pytest.mark.parametrize(
    ("name", "params", "key"),
    [
        ("wtinylfu", {"window": 0}, "policy.params.window"),
        ("wtinylfu", {"window": 1.0}, "policy.params.window"),
        ("wtinylfu", {"window": -0.5}, "policy.params.window"),
        ("wtinylfu", {"window": "1%"}, "policy.params.window"),
        ("wtinylfu", {"window": float("nan")}, "policy.params.window"),
        ("wtinylfu", {"window": True}, "policy.params.window"),
        ("wtinylfu", {"protected": 1.5}, "policy.params.protected"),
        ("wtinylfu", {"jitter_threshold": -1}, "policy.params.jitter_threshold"),
        ("tinylfu", {"jitter_threshold": 2.5}, "policy.params.jitter_threshold"),
        ("tinylfu", {"window": 0.1}, "policy.params.window"),  # not a tinylfu param
        ("lru", {"window": 0.1}, "policy.params.window"),
        ("lfu", {"foo": 1}, "policy.params.foo"),
    ],
)
def test_bad_params_are_config_errors(name: str, params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        PolicyEngine(hot_capacity=100, warm_capacity=0, policy=name, params=params, seed=1)
    assert exc.value.key == key


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"hot_capacity": -1}, "hot_capacity"),
        ({"warm_capacity": -5}, "warm_capacity"),
        ({"access_buffer": 0}, "policy.access_buffer"),
        ({"eviction_samples": 0}, "policy.eviction_samples"),
        ({"max_evictions_per_write": 0}, "policy.max_evictions_per_write"),
        ({"warm_min_frequency": -1}, "policy.warm_min_frequency"),
        ({"seed": "abc"}, "policy.seed"),
        ({"sketch_capacity": -1}, "policy.sketch_capacity"),
    ],
)
def test_bad_engine_arguments_are_config_errors(kwargs: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {"hot_capacity": 10, "warm_capacity": 10, "seed": 1, **kwargs}
    with pytest.raises(ConfigError) as exc:
        PolicyEngine(**args)
    assert exc.value.key == key


def test_register_refuses_a_second_class_under_a_taken_name() -> None:
    with pytest.raises(ValueError):

        @register("lru")
        class Other(LFUPolicy):
            pass


def test_wtinylfu_params_are_applied() -> None:
    p = make("wtinylfu", 1000, window=0.2, protected=0.5)
    assert isinstance(p, WTinyLFUPolicy)
    assert (p.window_capacity, p.main_capacity, p.protected_capacity) == (200, 800, 400)
    d = make("wtinylfu", 1000)
    assert isinstance(d, WTinyLFUPolicy)
    assert (d.window_capacity, d.main_capacity, d.protected_capacity) == (10, 990, 693)
    assert [make("wtinylfu", c).window_capacity for c in (0, 1, 2, 3, 150)] == [0, 0, 1, 1, 2]  # type: ignore[attr-defined]


def test_default_hasher() -> None:
    digest = bytes(range(16))
    assert default_hasher(digest) == key_hash64(digest)
    assert default_hasher(7) == 7
    assert default_hasher(-1) == (1 << 64) - 1
    assert default_hasher("abc") == default_hasher("abc")
    assert default_hasher("abc") != default_hasher(b"abc")
    assert 0 <= default_hasher(b"ab") < 1 << 64
    with pytest.raises(TypeError):
        default_hasher((1, 2))


# --------------------------------------------------------------------------------------
# LRU and LFU on hand-written traces, and against reference implementations


def test_lru_evicts_least_recently_used() -> None:
    p = make("lru", 3)
    assert p.admit("a") == Admission(True)
    p.admit("b")
    p.admit("c")
    p.on_hit("a")  # recency: b, c, a
    assert p.admit("d") == Admission(True, ("b",))
    p.on_hit("c")  # a, d, c
    assert p.admit("e") == Admission(True, ("a",))
    assert list(p.keys()) == ["d", "c", "e"]
    p.on_hit("zz")  # not resident: no-op
    assert list(p.keys()) == ["d", "c", "e"]


def test_lfu_evicts_lowest_count_then_least_recent() -> None:
    p = make("lfu", 3)
    assert isinstance(p, LFUPolicy)
    for k in "abc":
        p.admit(k)
    p.on_hit("a")
    p.on_hit("a")  # a:3
    p.on_hit("b")  # b:2, c:1
    assert p.admit("d") == Admission(True, ("c",))  # lowest count
    # b:2 and a:3; d:1 -> d goes next
    assert p.admit("e") == Admission(True, ("d",))
    p.on_hit("e")  # e:2, entered bucket 2 after b
    # tie between b (2) and e (2): b was accessed longer ago
    assert p.admit("f") == Admission(True, ("b",))
    p.on_hit("f")  # f:2 (after e)
    assert p.admit("g") == Admission(True, ("e",))
    assert list(p.keys()) == ["g", "f", "a"]
    assert p.count("a") == 3


def test_lfu_tie_break_is_least_recently_accessed_not_inserted() -> None:
    p = make("lfu", 2)
    p.admit("x")
    p.admit("y")  # inserted after x
    p.on_hit("y")
    p.on_hit("x")  # both count 2; x accessed last
    assert p.remove("nothing") is False
    # a new key must evict one of them: y, the least recently accessed (not x, the oldest
    # insert)
    assert p.admit("z") == Admission(True, ("y",))


def test_lfu_history_is_dropped_on_eviction() -> None:
    p = make("lfu", 1)
    p.admit("a")
    for _ in range(10):
        p.on_hit("a")
    assert p.admit("b") == Admission(True, ("a",))  # LFU always admits
    assert p.admit("a") == Admission(True, ("b",))
    assert isinstance(p, LFUPolicy)
    assert p.count("a") == 1


class RefLRU:
    def __init__(self, cap: int) -> None:
        self.cap, self.items = cap, []  # type: ignore[var-annotated]

    def hit(self, k: int) -> None:
        self.items.remove(k)
        self.items.append(k)

    def admit(self, k: int) -> tuple[int, ...]:
        ev: tuple[int, ...] = ()
        if len(self.items) >= self.cap:
            ev = (self.items.pop(0),)
        self.items.append(k)
        return ev


class RefLFU:
    """Evict min (count, last access time); counts reset on eviction."""

    def __init__(self, cap: int) -> None:
        self.cap, self.t = cap, 0
        self.meta: dict[int, list[int]] = {}

    def hit(self, k: int) -> None:
        self.t += 1
        self.meta[k][0] += 1
        self.meta[k][1] = self.t

    def admit(self, k: int) -> tuple[int, ...]:
        self.t += 1
        ev: tuple[int, ...] = ()
        if len(self.meta) >= self.cap:
            victim = min(self.meta, key=lambda x: tuple(self.meta[x]))
            del self.meta[victim]
            ev = (victim,)
        self.meta[k] = [1, self.t]
        return ev

    def remove(self, k: int) -> None:
        self.meta.pop(k, None)


@given(
    cap=st.integers(1, 6),
    trace=st.lists(st.tuples(st.sampled_from(["get", "get", "get", "rm"]), st.integers(0, 12))),
)
@settings(max_examples=150, deadline=None)
def test_lru_and_lfu_match_reference_implementations(
    cap: int, trace: list[tuple[str, int]]
) -> None:
    lru, lfu = make("lru", cap), make("lfu", cap)
    rlru, rlfu = RefLRU(cap), RefLFU(cap)
    for op, k in trace:
        if op == "rm":
            assert lru.remove(k) == (k in rlru.items)
            if k in rlru.items:
                rlru.items.remove(k)
            assert lfu.remove(k) == (k in rlfu.meta)
            rlfu.remove(k)
            continue
        if k in lru:
            lru.on_hit(k)
            rlru.hit(k)
        else:
            assert lru.admit(k).evicted == rlru.admit(k)
        if k in lfu:
            lfu.on_hit(k)
            rlfu.hit(k)
        else:
            assert lfu.admit(k).evicted == rlfu.admit(k)
    assert list(lru.keys()) == rlru.items
    assert set(lfu.keys()) == set(rlfu.meta)


# --------------------------------------------------------------------------------------
# Invariants for every registered policy


OPS = st.lists(
    st.tuples(
        st.sampled_from(["access", "access", "access", "remove", "offer"]), st.integers(0, 15)
    ),
    max_size=150,
)


@pytest.mark.parametrize("name", ALL_POLICIES)
@given(cap=st.integers(0, 6), ops=OPS, seed=st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_admissions_describe_residency_and_capacity_holds(
    name: str, cap: int, ops: list[tuple[str, int]], seed: int
) -> None:
    """Model check: applying each Admission to a set reproduces the policy's residency."""
    eng = engine(name, cap, seed=seed, access_buffer=4)
    model: set[int] = set()
    for op, k in ops:
        if op == "remove":
            assert eng.remove_hot(k) == (k in model)
            model.discard(k)
        elif op == "access" and k in eng.hot:
            assert k in model
            eng.record_hot_hit(k)
        else:
            eng.record_miss(k)
            resident = k in model
            a = eng.offer_hot(k)
            assert isinstance(a, Admission)
            if resident:
                assert a == Admission(True)
                continue
            if a.admitted:
                assert a.reason is None
                assert k not in a.evicted
                assert set(a.evicted) <= model
                assert len(set(a.evicted)) == len(a.evicted)
                model -= set(a.evicted)
                model.add(k)
            else:
                assert a == Admission(False, (), "rejected")
        assert len(eng.hot) <= cap
    assert set(eng.hot_keys()) == model
    assert len(eng.hot_keys()) == len(model) == len(eng.hot)
    assert all(k in eng.hot for k in model)


@pytest.mark.parametrize("name", ALL_POLICIES)
def test_capacity_zero_rejects_everything(name: str) -> None:
    eng = engine(name, 0)
    for k in range(5):
        eng.record_miss(k)
        assert eng.offer_hot(k) == Admission(False, (), "rejected")
    assert len(eng.hot) == 0


@pytest.mark.parametrize("name", ALL_POLICIES)
def test_capacity_one_works(name: str) -> None:
    eng = engine(name, 1)
    eng.record_miss("a")
    assert eng.offer_hot("a") == Admission(True)
    hits = replay(eng, ["a", "a", "b", "a", "c", "a"] * 20)
    assert len(eng.hot) == 1
    assert hits > 0


@pytest.mark.parametrize("name", ALL_POLICIES)
def test_remove(name: str) -> None:
    eng = engine(name, 10)
    replay(eng, range(10))
    before = set(eng.hot_keys())
    victim = next(iter(before))
    assert eng.remove_hot(victim) is True
    assert victim not in eng.hot
    assert eng.remove_hot(victim) is False
    assert eng.remove_hot("never-seen") is False
    assert set(eng.hot_keys()) == before - {victim}
    # the freed slot is reused without evicting anyone
    eng.record_miss(999)
    assert eng.offer_hot(999).evicted == ()


@pytest.mark.parametrize("name", ALL_POLICIES)
def test_same_seed_same_decisions(name: str) -> None:
    trace = zipf_trace(500, 5000, 0.9, seed=4)
    a, b = engine(name, 50, seed=77), engine(name, 50, seed=77)
    assert replay(a, trace) == replay(b, trace)
    assert a.hot_keys() == b.hot_keys()
    assert a.sketch.table.tobytes() == b.sketch.table.tobytes()


def test_seed_none_draws_a_random_seed() -> None:
    a = PolicyEngine(hot_capacity=1, warm_capacity=1)
    b = PolicyEngine(hot_capacity=1, warm_capacity=1)
    assert isinstance(a.seed, int) and a.seed != b.seed


# --------------------------------------------------------------------------------------
# TinyLFU admission


def test_tinylfu_rejects_a_one_hit_wonder_against_a_hot_victim() -> None:
    p = make("tinylfu", 2)
    h = p.sketch
    for _ in range(5):
        h.increment(default_hasher("hot1"))
        h.increment(default_hasher("hot2"))
    p.admit("hot1")
    p.admit("hot2")
    h.increment(default_hasher("once"))
    assert p.admit("once") == Admission(False, (), "rejected")
    assert set(p.keys()) == {"hot1", "hot2"}
    # a candidate more frequent than the LRU victim (hot1) replaces it
    for _ in range(6):
        h.increment(default_hasher("rising"))
    assert p.admit("rising") == Admission(True, ("hot1",))


def test_tinylfu_ties_keep_the_victim() -> None:
    p = make("tinylfu", 1)
    p.sketch.increment(default_hasher("a"))
    p.sketch.increment(default_hasher("b"))
    p.admit("a")
    assert p.admit("b").admitted is False


def _jitter_tries(threshold: int | None, cand_freq: int, tries: int = 3000) -> int | None:
    params = {} if threshold is None else {"jitter_threshold": threshold}
    p = make("tinylfu", 1, seed=5, **params)
    assert isinstance(p, TinyLFUPolicy)
    for _ in range(15):
        p.sketch.increment(default_hasher("victim"))
    for _ in range(cand_freq):
        p.sketch.increment(default_hasher("cand"))
    p.admit("victim")
    for i in range(tries):
        if p.admit("cand").admitted:
            return i + 1
    return None


def test_tinylfu_jitter_lets_a_warm_candidate_past_a_flooded_victim() -> None:
    n = _jitter_tries(None, 8)
    assert n is not None  # P(no admission in 3000 tries at 1/128) ~ 6e-11
    assert _jitter_tries(None, 5) is None  # below the threshold: never
    assert _jitter_tries(16, 15) is None  # jitter disabled


def test_tinylfu_jitter_rate_is_about_one_in_128() -> None:
    p = make("tinylfu", 1, seed=9)
    s = p.sketch
    for _ in range(15):
        s.increment(default_hasher("v"))
    for _ in range(7):
        s.increment(default_hasher("c"))
    p.admit("v")
    wins = 0
    for _ in range(12800):
        a = p.admit("c")
        if a.admitted:
            wins += 1
            p.remove("c")
            p.admit("v")
    assert 60 <= wins <= 150


# --------------------------------------------------------------------------------------
# W-TinyLFU structure


def test_wtinylfu_segments() -> None:
    p = make("wtinylfu", 10, window=0.1, protected=0.5)  # window 1, main 9, protected 4
    assert isinstance(p, WTinyLFUPolicy)
    assert (p.window_capacity, p.main_capacity, p.protected_capacity) == (1, 9, 4)
    p.admit(0)
    assert p.segment(0) == "window"
    p.admit(1)  # window overflow: 0 moves to probation (main has room)
    assert (p.segment(0), p.segment(1)) == ("probation", "window")
    p.on_hit(1)
    assert p.segment(1) == "window"
    for k in range(2, 7):
        p.admit(k)
    # probation: 0..5 ; window: 6
    for k in range(5):
        p.on_hit(k)  # probation -> protected; the 5th overflows protected (cap 4)
    assert [p.segment(k) for k in range(6)] == [
        "probation",  # 0: demoted (protected's LRU) back to probation's MRU end
        "protected",
        "protected",
        "protected",
        "protected",
        "probation",
    ]
    assert list(p.keys()) == [6, 5, 0, 1, 2, 3, 4]
    assert p.segment(99) is None
    assert len(p) == 7


def test_wtinylfu_window_loser_is_evicted_not_the_offered_key() -> None:
    # TinyLFU alone (reuse=0): this test calls admit without on_hit, so the reuse gate
    # (tests/test_policy_reuse.py) would see no gaps
    p = make("wtinylfu", 3, window=0.34, reuse=0.0)  # window 1, main 2
    assert isinstance(p, WTinyLFUPolicy) and p.window_capacity == 1
    s = p.sketch
    for k, f in (("a", 5), ("b", 5), ("c", 1), ("d", 1)):
        for _ in range(f):
            s.increment(default_hasher(k))
    for k in "abc":
        assert p.admit(k) == Admission(True)
    # d enters the window; c (window LRU, freq 1) loses to probation's LRU a (freq 5)
    assert p.admit("d") == Admission(True, ("c",))
    for _ in range(9):
        s.increment(default_hasher("d"))
    # e pushes d out of the window; d (freq 10) beats a (freq 5)
    assert p.admit("e") == Admission(True, ("a",))
    assert set(p.keys()) == {"b", "d", "e"}


def test_wtinylfu_capacity_one_uses_tinylfu_directly() -> None:
    p = make("wtinylfu", 1, reuse=0.0)  # TinyLFU alone (the reuse gate: test_policy_reuse.py)
    assert isinstance(p, WTinyLFUPolicy) and p.window_capacity == 0
    s = p.sketch
    s.increment(default_hasher("a"))
    s.increment(default_hasher("a"))
    assert p.admit("a") == Admission(True)
    s.increment(default_hasher("b"))
    assert p.admit("b") == Admission(False, (), "rejected")
    for _ in range(3):
        s.increment(default_hasher("b"))
    assert p.admit("b") == Admission(True, ("a",))
    p.on_hit("b")  # probation -> protected -> demoted (protected capacity 0)
    assert p.segment("b") == "probation"


# --------------------------------------------------------------------------------------
# Behaviour on workloads


def test_wtinylfu_beats_lru_on_zipf() -> None:
    trace = zipf_trace(10_000, 100_000, 1.0, seed=12)
    ratios = {}
    for name in ("lru", "wtinylfu"):
        eng = engine(name, 100, seed=3, warm_capacity=10_000)
        ratios[name] = replay(eng, trace) / len(trace)
    assert ratios["wtinylfu"] > ratios["lru"] + 0.05, ratios


@pytest.mark.parametrize("name", ["wtinylfu", "tinylfu"])
def test_scan_does_not_flush_the_hot_set(name: str) -> None:
    hot_set = list(range(50))
    rng = random.Random(1)
    warmup = [rng.choice(hot_set) for _ in range(2000)]
    eng = engine(name, 100)
    replay(eng, warmup)
    assert set(hot_set) <= set(eng.hot_keys())
    replay(eng, range(10_000, 15_000))  # one-pass scan of 5000 unseen keys
    assert set(hot_set) <= set(eng.hot_keys())
    lru = engine("lru", 100)
    replay(lru, warmup + list(range(10_000, 15_000)))
    assert not set(hot_set) & set(lru.hot_keys())  # the contrast LRU cannot avoid


@pytest.mark.parametrize("name", ["wtinylfu", "tinylfu"])
def test_unique_key_flood_cannot_evict_the_frequent_set(name: str) -> None:
    frequent = [f"f{i}" for i in range(50)]
    eng = engine(name, 100, seed=8)
    attacker = iter(range(10**9))
    late_hits = late_total = 0
    for rnd in range(100):
        trace = frequent + [next(attacker) for _ in range(200)]
        for k in trace:
            if k in eng.hot:
                eng.record_hot_hit(k)
                if rnd >= 10 and isinstance(k, str):
                    late_hits += 1
            else:
                eng.record_miss(k)
                eng.offer_hot(k)
            if rnd >= 10 and isinstance(k, str):
                late_total += 1
    assert eng.sketch.resets >= 1  # aging happened during the attack
    assert set(frequent) <= set(eng.hot_keys())
    assert late_hits == late_total


# --------------------------------------------------------------------------------------
# Engine: buffering, misses, warm decisions


def _drive(eng: PolicyEngine, ops: list[tuple[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for op, arg in ops:
        if op == "get":
            if arg in eng.hot:
                eng.record_hot_hit(arg)
                out.append("hit")
            else:
                eng.record_miss(arg)
                out.append(eng.offer_hot(arg))
        elif op == "offer":  # a write (``set``) offers a key without a lookup
            out.append(eng.offer_hot(arg))
        elif op == "batch":
            eng.record_misses(arg)
            out.append(None)
        elif op == "remove":
            out.append(eng.remove_hot(arg))
        elif op == "gate":
            out.append(eng.warm_gate(arg))
        elif op == "victims":
            out.append(eng.warm_victims(arg, 3))
    eng.drain()
    out.append(list(eng.hot.keys()))
    out.append(eng.sketch.table.tobytes())
    return out


def _random_ops(rng: random.Random, n: int, n_keys: int) -> list[tuple[str, Any]]:
    ops: list[tuple[str, Any]] = []
    for _ in range(n):
        r = rng.random()
        k = min(int(rng.paretovariate(1.0)) - 1, n_keys - 1)
        if r < 0.82:
            ops.append(("get", k))
        elif r < 0.85:
            ops.append(("offer", k))
        elif r < 0.9:
            ops.append(("batch", [rng.randrange(n_keys) for _ in range(rng.randrange(5))]))
        elif r < 0.95:
            ops.append(("remove", k))
        elif r < 0.98:
            ops.append(("gate", k))
        else:
            ops.append(("victims", [rng.randrange(n_keys) for _ in range(8)]))
    return ops


@pytest.mark.parametrize("name", ALL_POLICIES)
def test_buffered_hits_equal_unbuffered_processing(name: str) -> None:
    ops = _random_ops(random.Random(2024), 20_000, 2000)
    kw = {"sketch_capacity": 64, "warm_min_frequency": 2}  # small sketch: many resets
    a = _drive(engine(name, 40, seed=5, access_buffer=1, **kw), ops)
    b = _drive(engine(name, 40, seed=5, access_buffer=64, **kw), ops)
    assert a == b
    assert sum(x == "hit" for x in a) > 1000  # the buffer was actually exercised


@pytest.mark.parametrize("name", ["wtinylfu", "lfu"])
@given(seed=st.integers(0, 1000), buf=st.integers(2, 50))
@settings(max_examples=25, deadline=None)
def test_buffer_equivalence_property(name: str, seed: int, buf: int) -> None:
    ops = _random_ops(random.Random(seed), 400, 60)
    kw = {"sketch_capacity": 16, "warm_min_frequency": 1}
    a = _drive(engine(name, 8, seed=seed, access_buffer=1, **kw), ops)
    b = _drive(engine(name, 8, seed=seed, access_buffer=buf, **kw), ops)
    assert a == b


@pytest.mark.parametrize("name", ALL_POLICIES)
def test_buffer_equivalence_with_long_hit_runs(name: str) -> None:
    """Full 64-hit drains (the vectorised sketch path) with halvings inside them."""
    rng = random.Random(11)
    ops: list[tuple[str, Any]] = [("get", k) for k in range(30)]
    for _ in range(40):
        ops += [("get", rng.randrange(30)) for _ in range(rng.randrange(50, 300))]
        ops += [("get", rng.randrange(30, 60)) for _ in range(3)]
        ops.append(("remove", rng.randrange(60)))
    kw = {"sketch_capacity": 20}  # sample_size 200: halvings fall inside drains
    a = _drive(engine(name, 40, seed=9, access_buffer=1, **kw), ops)
    b = _drive(engine(name, 40, seed=9, access_buffer=64, **kw), ops)
    assert a == b
    assert sum(x == "hit" for x in a) > 5000


def test_record_hot_hit_buffers_until_full() -> None:
    eng = engine("lru", 10, access_buffer=4)
    replay(eng, [1, 2])
    eng.record_hot_hit(1)
    eng.record_hot_hit(1)
    assert eng.pending == 2
    assert eng.sketch.additions == 2  # only the two misses so far
    eng.record_hot_hit(2)
    eng.record_hot_hit(1)
    assert eng.pending == 0  # the 4th hit drained the buffer
    assert eng.sketch.additions == 6
    assert list(eng.hot.keys()) == [2, 1]


def test_record_misses_equals_sequential_record_miss() -> None:
    keys = [random.Random(3).randrange(50) for _ in range(3000)]
    a, b = engine("wtinylfu", 10, sketch_capacity=16), engine("wtinylfu", 10, sketch_capacity=16)
    a.record_misses(keys)
    for k in keys:
        b.record_miss(k)
    a.drain()
    b.drain()
    assert a.sketch.resets > 0
    assert a.sketch.table.tobytes() == b.sketch.table.tobytes()
    assert a.sketch.additions == b.sketch.additions
    a.record_misses([])


def test_default_sketch_capacity() -> None:
    # width: 4 * max(hot, 1024) + min(warm, 10 * hot); aging: every 10 * max(hot, 1024)
    e = engine("lru", 10, warm_capacity=10).sketch
    assert (e.capacity, e.sample_size) == (4 * 1024 + 10, 10_240)
    e = engine("lru", 1000, warm_capacity=500).sketch
    assert (e.capacity, e.sample_size) == (4096 + 500, 10_240)
    e = engine("lru", 5000, warm_capacity=10**9).sketch
    assert (e.capacity, e.sample_size) == (20_000 + 50_000, 50_000)
    e = engine("lru", 10, sketch_capacity=50).sketch  # explicit: aging 10 * capacity
    assert (e.capacity, e.sample_size) == (50, 500)


def test_warm_gate() -> None:
    eng = engine("wtinylfu", 10, warm_min_frequency=2, sketch_capacity=1 << 16)
    assert eng.warm_gate("k") is False
    assert eng.warm_gate("k", forced=True) is True
    eng.record_miss("k")
    assert eng.warm_gate("k") is False
    eng.record_miss("k")
    assert eng.warm_gate("k") is True  # inclusive
    assert engine("lru", 10).warm_gate("never") is True  # minimum 0 admits everything


def _warm_engine(**kw: Any) -> PolicyEngine:
    eng = engine("wtinylfu", 10, sketch_capacity=1 << 16, **kw)
    for key, n in (("a", 5), ("b", 1), ("c", 3), ("d", 1)):
        eng.record_misses([key] * n)
    assert [eng.frequency(k) for k in "abcde"] == [5, 1, 3, 1, 0]
    return eng


def test_warm_victims_lowest_frequency_first_ties_by_appearance() -> None:
    eng = _warm_engine()
    sampled = ["a", "b", "c", "d", "e", "b"]
    assert eng.warm_victims(sampled, 3) == ["e", "b", "d"]
    assert eng.warm_victims(["d", "b"], 5) == ["d", "b"]
    assert eng.warm_victims(sampled, 10) == ["e", "b", "d", "c", "a"]  # distinct keys only
    assert eng.warm_victims(sampled, 0) == []
    assert eng.warm_victims(sampled, -3) == []
    assert eng.warm_victims([], 3) == []
    assert eng.warm_victims(sampled, 3, protect=["e", "d"]) == ["b", "c", "a"]


def test_warm_victims_bounded_per_write() -> None:
    eng = _warm_engine(max_evictions_per_write=2)
    assert eng.warm_victims(list("abcde"), 4) == ["e", "b"]
    big = engine("lru", 10, max_evictions_per_write=64)
    keys = [bytes([i]) * 16 for i in range(200)]
    assert len(big.warm_victims(keys, 1000)) == 64
    # a write of 100 new keys may evict what it adds plus the per-write allowance
    assert len(big.warm_victims(keys, 1000, batch=100)) == 164
    assert len(big.warm_victims(keys, 30, batch=100)) == 30


def test_warm_probes_are_random_16_byte_keys_and_do_not_perturb_decisions() -> None:
    a, b = engine("tinylfu", 20, seed=3), engine("tinylfu", 20, seed=3)
    pa = a.warm_probes(5)
    assert len(pa) == 5 and all(isinstance(p, bytes) and len(p) == 16 for p in pa)
    assert len(set(pa)) == 5
    assert pa == b.warm_probes(5)  # same seed, same probes
    assert engine("tinylfu", 20, seed=4).warm_probes(5) != pa
    assert a.warm_probes(0) == []
    with pytest.raises(ValueError):
        a.warm_probes(-1)
    # hot decisions do not depend on how often the cache sampled the warm tier
    trace = zipf_trace(300, 4000, 1.2, seed=6)
    ra = []
    for i, k in enumerate(trace):
        if i % 7 == 0:
            a.warm_probes(3)
        a.record_miss(k)
        ra.append(a.offer_hot(k))
    rb = []
    for k in trace:
        b.record_miss(k)
        rb.append(b.offer_hot(k))
    assert ra == rb


def test_offer_resident_key_is_admitted_without_change() -> None:
    eng = engine("lru", 2)
    replay(eng, ["a", "b"])
    assert eng.offer_hot("a") == Admission(True)
    assert eng.hot_keys() == ["a", "b"]
    assert eng.hot.admit("b") == Admission(True)
