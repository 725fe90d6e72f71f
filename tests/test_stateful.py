"""Hypothesis state machine: TierCache against a plain dict model.

Steps: set/mset/get/embed_many/drop/clear, TTL expiry with an injected clock, close and
reopen, and **version changes**: the cache is reopened with another model revision (a new
fingerprint, whose encoder returns different vectors). The contract checked:

* vectors stored under one revision are never served under another (a get is a miss, an
  embed returns the new model's vector), whatever the mismatch mode;
* ``warm.on_fingerprint_mismatch: coexist`` registers the new revision beside the old
  ones; switching back finds the old entries (those alive, same TTLs);
* ``error`` mode refuses (``FingerprintMismatchError``) a revision the store's manifest
  does not list yet, and changes nothing: the previous revision reopens with its entries;
  a revision already registered (earlier, in coexist mode) opens in either mode.

``make test`` runs 40 examples of 30 steps; ``make soak`` 1,000 of 50 (figures in the soak
summary).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tiercache import FingerprintMismatchError, TierCache
from tiercache.encoders import CallableEncoder, HashEncoder
from tiercache.keys import Content

from . import soak
from .conftest import DIM, FakeClock, make_config

TEXTS = st.sampled_from(["a", "b", "c", "d", "e", "f", b"a", b"g", "", "\u00e9"])
REVISIONS = st.sampled_from(["1", "2", "3"])
REF = HashEncoder(DIM)


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def model_encoder(revision: str) -> CallableEncoder:
    """A deterministic "model" whose output depends on its revision, as a retrained
    model's does: revision r encodes ``content`` as the hash vector of ``r + NUL + content``."""

    def fn(contents: list[Content]) -> np.ndarray:
        tagged: list[Content] = [
            (revision.encode() + b"\0" + c) if isinstance(c, bytes) else f"{revision}\0{c}"
            for c in contents
        ]
        return REF.encode(tagged)

    return CallableEncoder(
        fn,
        dim=DIM,
        name="tests/versioned-hash",
        revision=revision,
        normalize=True,
        accepts=(str, bytes),
    )


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.clock = FakeClock()
        self.rev = "1"
        self.mode = "error"
        self.registered = {"1"}  # revisions the store's manifest lists
        self.cache = self.open(self.rev, self.mode)
        # (revision, content) -> (vector, expires_at)
        self.model: dict[tuple[str, Content], tuple[np.ndarray, float]] = {}
        self.steps = self.checked = self.switches = self.refusals = 0

    def open(self, rev: str, mode: str) -> TierCache:
        # a hot tier of 3 entries forces evictions and demotions constantly
        cfg = make_config(
            self.dir, hot={"max_bytes": 3 * (4 * DIM + 256)}, warm={"on_fingerprint_mismatch": mode}
        )
        return TierCache(cfg, encoder=model_encoder(rev), clock=self.clock)

    def live(self, text: Content, rev: str | None = None) -> np.ndarray | None:
        item = self.model.get((rev or self.rev, text))
        if item is None or item[1] <= self.clock():
            return None
        return item[0]

    @rule(text=TEXTS, seed=st.integers(0, 1000), ttl=st.one_of(st.none(), st.integers(1, 50)))
    def set(self, text: Content, seed: int, ttl: int | None) -> None:
        self.steps += 1
        self.cache.set(text, vec(seed), ttl=ttl)
        self.model[(self.rev, text)] = (vec(seed), self.clock() + ttl if ttl else float("inf"))

    @rule(items=st.lists(st.tuples(TEXTS, st.integers(0, 1000)), max_size=4))
    def mset(self, items: list[tuple[Content, int]]) -> None:
        self.steps += 1
        self.cache.mset([(t, vec(s)) for t, s in items])
        for t, s in items:
            self.model[(self.rev, t)] = (vec(s), float("inf"))

    @rule(text=TEXTS)
    def get(self, text: Content) -> None:
        self.steps += 1
        e = self.cache.get(text)
        want = self.live(text)
        self.checked += 1
        if want is None:
            assert e is None
        else:
            assert e is not None and np.array_equal(e.vector, want)

    @precondition(lambda self: True)
    @rule(texts=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "", "\u00e9"]), max_size=5))
    def embed_many(self, texts: list[str]) -> None:
        self.steps += 1
        out = self.cache.embed_many(texts)
        fresh = model_encoder(self.rev).encode(texts) if texts else None
        for i, t in enumerate(texts):
            want = self.live(t)
            assert fresh is not None
            expected = want if want is not None else fresh[i]
            assert np.array_equal(out[i], expected)
            self.checked += 1
            if want is None:
                self.model[(self.rev, t)] = (expected, float("inf"))

    @rule(text=TEXTS)
    def drop(self, text: Content) -> None:
        self.steps += 1
        removed = self.cache.drop(text)
        assert removed == (self.live(text) is not None) or (self.rev, text) in self.model
        self.model.pop((self.rev, text), None)

    @rule()
    def clear(self) -> None:
        """``clear`` empties the whole warm directory: every revision's entries."""
        self.steps += 1
        self.cache.clear()
        self.model.clear()

    @rule(seconds=st.integers(1, 30))
    def advance(self, seconds: int) -> None:
        self.steps += 1
        self.clock.advance(seconds)

    @rule()
    def reopen(self) -> None:
        self.steps += 1
        self.cache.close()
        self.cache = self.open(self.rev, self.mode)

    @rule(rev=REVISIONS, mode=st.sampled_from(["error", "coexist"]))
    def switch_version(self, rev: str, mode: str) -> None:
        """Reopen the store with model revision ``rev`` (a new fingerprint)."""
        self.steps += 1
        self.switches += 1
        self.cache.close()
        if rev not in self.registered and mode == "error":
            with pytest.raises(FingerprintMismatchError):
                self.open(rev, mode)
            self.refusals += 1
            self.cache = self.open(self.rev, self.mode)  # nothing changed: back to work
        else:
            self.cache = self.open(rev, mode)
            self.registered.add(rev)
            self.rev, self.mode = rev, mode
        # nothing stored under another revision is served under this one
        for r, text in list(self.model):
            if r != self.rev and self.live(text) is None:
                self.checked += 1
                assert self.cache.get(text) is None, f"revision {r}'s vector served"

    @invariant()
    def exists_agrees(self) -> None:
        for t in ["a", "b", b"a", ""]:
            assert self.cache.exists(t) == (self.live(t) is not None)

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        soak.record(
            "stateful",
            examples=1,
            ops=self.steps,
            records_checked=self.checked,
            version_switches=self.switches,
            version_refusals=self.refusals,
            wrong_vectors=0,
            acked_lost=0,
        )


TestCacheMachine: Any = CacheMachine.TestCase
TestCacheMachine.settings = settings(
    max_examples=soak.scale(40, 1000), stateful_step_count=soak.scale(30, 50), deadline=None
)
