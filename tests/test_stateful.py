"""Hypothesis state machine: TierCache against a plain dict model, reopen and TTL included."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tiercache import TierCache
from tiercache.encoders import HashEncoder

from .conftest import DIM, FakeClock, make_config

TEXTS = st.sampled_from(["a", "b", "c", "d", "e", "f", b"a", b"g", "", "\u00e9"])
REF = HashEncoder(DIM)


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.clock = FakeClock()
        # a hot tier of 3 entries forces evictions and demotions constantly
        self.cfg = make_config(self.dir, hot={"max_bytes": 3 * (4 * DIM + 256)})
        self.cache = TierCache(self.cfg, encoder=HashEncoder(DIM), clock=self.clock)
        self.model: dict[str | bytes, tuple[np.ndarray, float]] = {}

    def live(self, text: str | bytes) -> np.ndarray | None:
        item = self.model.get(text)
        if item is None or item[1] <= self.clock():
            return None
        return item[0]

    @rule(text=TEXTS, seed=st.integers(0, 1000), ttl=st.one_of(st.none(), st.integers(1, 50)))
    def set(self, text: str | bytes, seed: int, ttl: int | None) -> None:
        self.cache.set(text, vec(seed), ttl=ttl)
        self.model[text] = (vec(seed), self.clock() + ttl if ttl else float("inf"))

    @rule(items=st.lists(st.tuples(TEXTS, st.integers(0, 1000)), max_size=4))
    def mset(self, items: list[tuple[str | bytes, int]]) -> None:
        self.cache.mset([(t, vec(s)) for t, s in items])
        for t, s in items:
            self.model[t] = (vec(s), float("inf"))

    @rule(text=TEXTS)
    def get(self, text: str | bytes) -> None:
        e = self.cache.get(text)
        want = self.live(text)
        if want is None:
            assert e is None
        else:
            assert e is not None and np.array_equal(e.vector, want)

    @precondition(lambda self: True)
    @rule(texts=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "", "\u00e9"]),
                         max_size=5))
    def embed_many(self, texts: list[str]) -> None:
        out = self.cache.embed_many(texts)
        for i, t in enumerate(texts):
            want = self.live(t)
            expected = want if want is not None else REF.encode([t])[0]
            assert np.array_equal(out[i], expected)
            if want is None:
                self.model[t] = (expected, float("inf"))

    @rule(text=TEXTS)
    def drop(self, text: str | bytes) -> None:
        removed = self.cache.drop(text)
        assert removed == (self.live(text) is not None) or text in self.model
        self.model.pop(text, None)

    @rule(seconds=st.integers(1, 30))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def reopen(self) -> None:
        self.cache.close()
        self.cache = TierCache(self.cfg, encoder=HashEncoder(DIM), clock=self.clock)

    @invariant()
    def exists_agrees(self) -> None:
        for t in ["a", "b", b"a", ""]:
            assert self.cache.exists(t) == (self.live(t) is not None)

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
