"""The one read path: every single-key entry point answers as the batch path answers.

``get``, ``exists`` and ``get_by_key`` take their own short paths (a single locked hot
section, ``ReadPath.lower_one``, the compiled ``EntryGetter``); ``mget`` / ``mexists`` take
the batch path. Two caches over separate stores, same config, same clock, same operations:
one is read one key at a time, the other in one-item batches. Their answers and their
counters must agree at every step (so the single paths also make the same policy
decisions), for every tier layout, with the compiled getter and without it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiercache import TierCache
from tiercache.entry import Entry, new_entry

from .conftest import DIM, CountingEncoder, FakeClock, make_config
from .test_faults import corrupt_records

LAYOUTS = {
    "hot+warm": {},
    "hot only": {"warm": {"enabled": False}},
    "warm only": {"hot": {"enabled": False}},
}


def _same(a: Entry | None, b: Entry | None) -> None:
    if a is None or b is None:
        assert a is b
        return
    assert (a.key, a.metadata, a.tier) == (b.key, b.metadata, b.tier)
    assert a.vector.dtype == np.float32 and a.vector.shape == (DIM,)
    np.testing.assert_array_equal(a.vector, b.vector)


def _counters(c: TierCache) -> Any:
    st = c.stats()
    return st["lookups"], {
        t: {k: v for k, v in s.items() if k not in ("latency_us", "path", "bytes", "file_bytes")}
        for t, s in st["tiers"].items()
    }


@pytest.mark.parametrize("compiled", [True, False], ids=["c-getter", "python-get"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_single_reads_answer_and_decide_as_batch_reads(
    tmp_path: Path, layout: str, compiled: bool
) -> None:
    clock = FakeClock()
    sections = dict(LAYOUTS[layout])
    sections.setdefault("hot", {"max_bytes": 24 * (4 * DIM + 256)})  # small: evictions
    one, batch = (
        TierCache(make_config(tmp_path / n, **sections), encoder=CountingEncoder(), clock=clock)
        for n in ("one", "batch")
    )
    if not compiled:
        one.__dict__.pop("get", None)
    if compiled:
        assert type(one.get).__name__ == "EntryGetter"
    texts = [f"t{i}" for i in range(60)] + [b"raw", "\u00e9t\u00e9"]
    rng = random.Random(7)
    for step in range(1500):
        t = texts[min(int(rng.paretovariate(0.8)) - 1, len(texts) - 1)]
        op = rng.random()
        if op < 0.08:  # writes: with and without metadata and a TTL, on both
            meta = {"step": step} if rng.random() < 0.5 else None
            ttl = 3 if rng.random() < 0.3 else None
            v = np.full(DIM, step, np.float32)
            for c in (one, batch):
                c.set(t, v, metadata=meta, ttl=ttl)
        elif op < 0.12:
            for c in (one, batch):
                c.drop(t)
        elif op < 0.30:
            for c in (one, batch):
                c.embed(t)
        elif op < 0.45:
            assert one.exists(t) == batch.mexists([t])[0]
        else:
            _same(one.get(t), batch.mget([t])[0])
        if step % 11 == 0:
            clock.advance(1)
        if step % 100 == 0:
            assert _counters(one) == _counters(batch)
    assert _counters(one) == _counters(batch)
    for c in (one, batch):
        c.close()


@pytest.mark.parametrize("rows_in_c", [True, False], ids=["c-rows", "python-rows"])
def test_get_by_key_and_exists_agree_with_get_on_damaged_records(
    tmp_path: Path, rows_in_c: bool
) -> None:
    """A corrupt warm record: get misses it, and so do exists, mexists and get_by_key
    (before, exists read the expiry without the checksum and said True)."""
    c = TierCache(make_config(tmp_path, hot={"enabled": False}), encoder=CountingEncoder())
    if not rows_in_c:
        c._warm_reader = None
    texts = [f"d{i}" for i in range(80)]
    for i, t in enumerate(texts):
        c.set(t, np.full(DIM, i + 1, np.float32))
    rng = random.Random(3)
    victims = set(rng.sample(texts, 20))
    corrupt_records(c, [c._keys.digest(t) for t in victims], rng)
    many = c.mexists(texts)
    for t, m in zip(texts, many):
        e = c.get(t)
        assert (e is None) == (t in victims)
        assert c.exists(t) == m == (e is not None)
        _same(c.get_by_key(c.key(t)), e)
    c.close()


def test_batch_entries_own_their_vectors(tmp_path: Path) -> None:
    """mget's Entries are rows of the call's own matrix: writing one changes no other
    entry, no later read and no tier (the no-aliasing rule)."""
    c = TierCache(make_config(tmp_path), encoder=CountingEncoder())
    texts = [f"o{i}" for i in range(10)]
    c.embed_many(texts[:5])  # hot
    c.mset([(t, np.full(DIM, i + 1, np.float32)) for i, t in enumerate(texts[5:])])
    got = c.mget(texts + texts[:2])  # repeats too
    assert all(e is not None for e in got)
    before = [e.vector.copy() for e in got if e is not None]
    for e in got:
        assert e is not None
        e.vector[:] = -7
    again = c.mget(texts + texts[:2])
    for e, b in zip(again, before):
        assert e is not None
        np.testing.assert_array_equal(e.vector, b)
    c.close()


def test_compiled_get_falls_back_for_everything_it_does_not_serve(tmp_path: Path) -> None:
    clock = FakeClock()
    c = TierCache(make_config(tmp_path), encoder=CountingEncoder(), clock=clock)
    c.set("m", np.ones(DIM, np.float32), metadata={"a": [1, 2]})
    c.set("ttl", np.ones(DIM, np.float32), ttl=5)
    c.embed("plain")
    assert c.get("m").metadata == {"a": [1, 2]}  # type: ignore[union-attr]
    assert c.get("plain", model=c.fingerprint.model).tier == "hot"  # type: ignore[union-attr]
    assert c.get("ttl") is not None
    clock.advance(10)
    assert c.get("ttl") is None and c.get("never stored") is None
    from tiercache.errors import InvalidContentError, UnknownModelError

    with pytest.raises(InvalidContentError):
        c.get(42)  # type: ignore[arg-type]
    with pytest.raises(UnknownModelError):
        c.get("plain", model="another-model")
    c.close()
    from tiercache.errors import ClosedError

    with pytest.raises(ClosedError):
        c.get("plain")


def test_a_subclass_that_overrides_get_keeps_its_override(tmp_path: Path) -> None:
    class Mine(TierCache):
        def get(self, content: Any, *, model: str | None = None) -> Entry | None:
            return new_entry("mine", np.zeros(DIM, np.float32), None, "hot")

    c = Mine(make_config(tmp_path), encoder=CountingEncoder())
    c.embed("x")
    e = c.get("x")
    assert e is not None and e.key == "mine"
    c.close()


def test_new_entry_is_an_entry() -> None:
    v = np.arange(3, dtype=np.float32)
    a, b = new_entry("k", v, {"m": 1}, "warm"), Entry("k", v, {"m": 1}, "warm")
    assert type(a) is Entry and repr(a) == repr(b)
    with pytest.raises(AttributeError):
        a.key = "other"  # type: ignore[misc]


def test_single_writes_store_what_batch_writes_store(tmp_path: Path) -> None:
    """set (and mset of one item) take ``WritePath.write_one``; mset of many takes
    ``write_entries``: the same records, tags, hot entries and counters."""
    clock = FakeClock()
    one, batch = (
        TierCache(
            make_config(tmp_path / n, warm={"store_text": True}),
            encoder=CountingEncoder(),
            clock=clock,
        )
        for n in ("one", "batch")
    )
    rng = np.random.default_rng(5)
    items = [
        {
            "content": f"w{i}" if i % 3 else f"w{i}".encode(),
            "vector": rng.standard_normal(DIM).astype(np.float32 if i % 2 else np.float64),
            "metadata": {"i": i} if i % 4 else None,
            "ttl": 50.0 if i % 5 == 0 else None,
            "tags": ["even"] if i % 2 == 0 else None,
            "doc_id": i if i % 7 == 0 else None,
        }
        for i in range(40)
    ]
    for it in items:
        one.set(
            it["content"],
            it["vector"],
            metadata=it["metadata"],
            ttl=it["ttl"],
            tags=it["tags"],
            doc_id=it["doc_id"],
        )
    batch.mset(items)
    keys = [one._keys.digest(it["content"]) for it in items]
    assert one._warm.get_many(keys) == batch._warm.get_many(keys)  # type: ignore[union-attr]
    for it in items:
        _same(one.get(it["content"]), batch.get(it["content"]))
    assert one.tagged("even") == batch.tagged("even")
    assert _counters(one) == _counters(batch)
    with pytest.raises(Exception, match="NaN"):
        one.set("bad", np.full(DIM, np.nan, np.float32))
    with pytest.raises(Exception, match="NaN"):
        one.mset([("bad", np.full(DIM, np.inf, np.float32))])
    assert not one.exists("bad")
    for c in (one, batch):
        c.close()


def test_the_policy_and_the_simulator_import_without_storage_or_torch() -> None:
    """DESIGN.md "Layers": ``import tiercache.policy`` / ``tiercache.sim`` load neither LMDB
    nor Redis nor torch (the package's names are imported on first use)."""
    import subprocess
    import sys

    code = (
        "import sys, tiercache.policy, tiercache.sim, tiercache; "
        "print(sorted(m for m in ('lmdb', 'redis', 'torch', 'tiercache.cache') "
        "if m in sys.modules)); "
        "from tiercache import TierCache, ResultCache, parse_config; "
        "print('lmdb' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"


def test_placement_decides_victims_as_documented() -> None:
    """placement.victim_fates: backed victims are dropped without a gate call, unbacked
    ones pass the gate (demote) or not (rejected); without warm, nothing is gated."""
    from tiercache import placement

    class Engine:
        def __init__(self) -> None:
            self.gated: list[str] = []

        def warm_gate(self, k: str) -> bool:
            self.gated.append(k)
            return k.startswith("hot")

    e = Engine()
    fates = placement.victim_fates(e, ["a", "hot-b", "c"], True, lambda k: k == "a")  # type: ignore[arg-type]
    assert fates == [("a", placement.BACKED), ("hot-b", placement.DEMOTE), ("c", placement.REJECT)]
    assert e.gated == ["hot-b", "c"]
    e.gated.clear()
    assert placement.victim_fates(e, ["x"], False, lambda k: False) == [  # type: ignore[arg-type]
        ("x", placement.BACKED)
    ]
    assert placement.warm_admits(e, ["hot1", "z"], has_warm=False) == [False, False]  # type: ignore[arg-type]
    assert e.gated == []
    assert placement.warm_admits(e, ["hot1", "z"], has_warm=True) == [True, False]  # type: ignore[arg-type]


def _damage(url: str, cache: TierCache, text: str) -> None:
    """Flip the last bytes of ``text``'s record under both test prefixes in Redis, under
    a valid (unkeyed) tag: the record's own checksum has to refuse it."""
    import redis

    from tiercache.tiers.redis import TAG_BYTES, RecordSeal

    r = redis.Redis.from_url(url)
    for n in ("one", "batch"):
        k = f"p-{n}:".encode() + cache._keys.digest(text).hex().encode()
        record = r.get(k)[:-TAG_BYTES]  # type: ignore[index]
        r.set(k, RecordSeal().seal(k, record[:-3] + b"xyz"))
    r.close()


@pytest.mark.parametrize("layout", ["shared only", "warm+shared"])
def test_single_reads_through_the_shared_tier_answer_as_batch_reads(
    tmp_path: Path, redis_server: Any, layout: str
) -> None:
    """The same differential run with a real redis-server behind (one key prefix per
    cache): a single get/embed takes ``ReadPath.shared_one`` (one GET), a batch takes
    ``shared_lookup`` (MGET); answers and every counter agree, expired and corrupt shared
    records included."""
    clock = FakeClock()
    warm = {"enabled": layout == "warm+shared"}
    one, batch = (
        TierCache(
            make_config(
                tmp_path / n,
                hot={"enabled": False},
                warm=warm,
                shared={"url": redis_server.url, "key_prefix": f"p-{n}:"},
            ),
            encoder=CountingEncoder(),
            clock=clock,
        )
        for n in ("one", "batch")
    )
    texts = [f"s{i}" for i in range(40)]
    for c in (one, batch):
        c.mset([(t, np.full(DIM, i + 1, np.float32)) for i, t in enumerate(texts[:30])])
        c.set("meta", np.ones(DIM, np.float32), metadata={"m": 1})
        c.set("short", np.ones(DIM, np.float32), ttl=5)
        if c._warm is not None:
            c._warm.clear()  # every read below starts in Redis
    _damage(redis_server.url, one, "s3")  # a damaged record in Redis: a counted miss
    rng = random.Random(1)
    for step in range(300):
        t = rng.choice([*texts, "meta", "short"])
        if step == 150:
            clock.advance(10)  # "short" expires
        if rng.random() < 0.5:
            _same(one.get(t), batch.mget([t])[0])
        else:
            a, b = one.embed(t), batch.embed_many([t])[0]
            np.testing.assert_array_equal(a, b)
    a, b = _counters(one), _counters(batch)
    a[1]["shared"].pop("key_prefix"), b[1]["shared"].pop("key_prefix")
    assert a == b
    if layout == "shared only":  # a whole batch from Redis (decoded together) vs singles
        _damage(redis_server.url, one, "s5")
        everything = [*texts, "meta", "short", "s5"]
        for t, e in zip(everything, batch.mget(everything)):
            _same(e, one.get(t))
        assert batch.mget(["s5", "s6"])[0] is None
    shared = one.stats()["tiers"]["shared"]
    assert shared["corrupt"] > 0 and shared["expired"] > 0 and shared["hits"] > 0
    for c in (one, batch):
        c.close()
