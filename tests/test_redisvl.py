"""RedisVL parity: the same scenarios against RedisVL 0.28's real ``EmbeddingsCache`` (the
oracle) and ``tiercache.integrations.redisvl.EmbeddingsCache``, on a real redis-server.

Every ``impl``-parametrized test runs once per implementation with the same expectations;
the ``test_parity_*`` tests run both side by side and compare the result dicts field by
field. Deliberate differences (docs/migrate-from-redisvl.md) are tested on our side only.
Without redisvl installed the oracle side skips with the reason; ours always runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tiercache.errors import (
    ClosedError,
    ConfigError,
    EncoderError,
    InvalidContentError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidTTLError,
    InvalidVectorError,
    StoreError,
)
from tiercache.integrations.redisvl import (
    EmbeddingsCache,
    StoreOnlyEncoder,
    default_root,
    redis_prefix,
    warm_directory,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

try:
    from redisvl.extensions.cache.embeddings import EmbeddingsCache as RedisVLCache

    ORACLE_SKIP = ""
except Exception as exc:  # pragma: no cover - depends on the environment
    RedisVLCache = None
    ORACLE_SKIP = f"redisvl is not importable ({exc!r}): pip install redisvl==0.28.0"

MODEL = "test/model-a"
RVL_KEYS = {"entry_id", "content", "model_name", "embedding", "inserted_at"}


def vec(i: int, dim: int = 8) -> list[float]:
    return [float(i) + j / 10 for j in range(dim)]


Factory = Callable[..., Any]


@pytest.fixture(params=["redisvl", "tiercache"])
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "redisvl" and RedisVLCache is None:
        pytest.skip(ORACLE_SKIP)
    return str(request.param)


@pytest.fixture
def factory(redis_server: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``factory(impl, name="embedcache", ttl=None)``: a cache on the test's redis-server
    (ours with its warm directories under tmp_path); closed at the end of the test."""
    made: list[Any] = []

    def make(kind: str, name: str = "embedcache", ttl: int | None = None, **kw: Any) -> Any:
        if kind == "redisvl":
            if RedisVLCache is None:
                pytest.skip(ORACLE_SKIP)
            c = RedisVLCache(name=name, ttl=ttl, redis_url=redis_server.url)
        else:
            kw.setdefault("path", tmp_path / "warm")
            c = EmbeddingsCache(name=name, ttl=ttl, redis_url=redis_server.url, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.disconnect()


def check_result(
    res: dict[str, Any] | None,
    kind: str,
    content: Any,
    model: str,
    embedding: list[float],
    metadata: Any = None,
) -> None:
    """One cache hit as RedisVL 0.28 returns it (ours: ``metadata`` always present)."""
    assert res is not None
    expected_keys = RVL_KEYS | (
        {"metadata"} if metadata is not None or kind != "redisvl" else set()
    )
    assert set(res) == expected_keys
    assert res["content"] == content
    assert res["model_name"] == model
    assert res.get("metadata") == metadata
    assert isinstance(res["embedding"], list)
    assert all(type(x) is float for x in res["embedding"])
    np.testing.assert_allclose(res["embedding"], embedding, rtol=1e-6)
    assert isinstance(res["entry_id"], str) and res["entry_id"]
    assert abs(res["inserted_at"] - time.time()) < 60


# --------------------------------------------------------------------------- round trips


def test_set_get_round_trip_with_metadata(impl: str, factory: Factory) -> None:
    c = factory(impl)
    key = c.set(
        content="What is ML?",
        model_name=MODEL,
        embedding=vec(1),
        metadata={"category": "ai", "n": 3, "tags": ["x", "y"]},
    )
    assert isinstance(key, str) and key.startswith("embedcache:")
    res = c.get(content="What is ML?", model_name=MODEL)
    check_result(
        res, impl, "What is ML?", MODEL, vec(1), {"category": "ai", "n": 3, "tags": ["x", "y"]}
    )
    assert key == f"embedcache:{res['entry_id']}"
    # without metadata; positional arguments as in RedisVL's signature
    c.set("plain", MODEL, vec(2))
    check_result(c.get("plain", MODEL), impl, "plain", MODEL, vec(2))
    # a miss, another model, exists, drop
    assert c.get("absent", MODEL) is None
    assert c.get("plain", "other-model") is None
    assert c.exists("plain", MODEL) and not c.exists("absent", MODEL)
    assert c.drop("plain", MODEL) is None
    assert not c.exists("plain", MODEL) and c.get("plain", MODEL) is None
    # overwrite: the last set wins
    c.set("What is ML?", MODEL, vec(5), {"v": 2})
    check_result(c.get("What is ML?", MODEL), impl, "What is ML?", MODEL, vec(5), {"v": 2})


def test_same_content_two_models_are_two_entries(impl: str, factory: Factory) -> None:
    c = factory(impl)
    k1 = c.set("text", "model-1", vec(1, 4))
    k2 = c.set("text", "model-2", vec(2, 6))
    assert k1 != k2
    check_result(c.get("text", "model-1"), impl, "text", "model-1", vec(1, 4))
    check_result(c.get("text", "model-2"), impl, "text", "model-2", vec(2, 6))
    c.drop("text", "model-1")
    assert c.get("text", "model-1") is None and c.exists("text", "model-2")


def test_by_key_variants(impl: str, factory: Factory) -> None:
    c = factory(impl)
    k1 = c.set("alpha", MODEL, vec(1), {"i": 1})
    k2 = c.set("beta", MODEL, vec(2))
    assert c.exists_by_key(k1)
    check_result(c.get_by_key(k1), impl, "alpha", MODEL, vec(1), {"i": 1})
    missing = "embedcache:" + "0" * 32
    got = c.mget_by_keys([k2, missing, k1])
    assert got[1] is None
    check_result(got[0], impl, "beta", MODEL, vec(2))
    check_result(got[2], impl, "alpha", MODEL, vec(1), {"i": 1})
    assert c.mexists_by_keys([k1, missing, k2]) == [True, False, True]
    assert c.drop_by_key(k1) is None
    assert not c.exists_by_key(k1) and c.get("alpha", MODEL) is None
    c.mdrop_by_keys([k2, missing])
    assert c.mexists_by_keys([k1, k2]) == [False, False]
    assert c.get_by_key(missing) is None


def test_batches_keep_order_and_report_misses(impl: str, factory: Factory) -> None:
    c = factory(impl)
    items = [
        {"content": f"doc {i}", "model_name": MODEL, "embedding": vec(i), "metadata": {"i": i}}
        for i in range(100)
    ]
    keys = c.mset(items)
    assert len(keys) == 100 and len(set(keys)) == 100
    assert keys[7] == c.set("doc 7", MODEL, vec(7), {"i": 7})  # same entry, same key
    asked = [f"doc {i}" if i % 3 else f"missing {i}" for i in range(100)][::-1]
    got = c.mget(asked, MODEL)
    assert len(got) == 100
    for text, res in zip(asked, got):
        if text.startswith("missing"):
            assert res is None
        else:
            i = int(text.split()[1])
            check_result(res, impl, text, MODEL, vec(i), {"i": i})
    assert c.mexists(asked, MODEL) == [not t.startswith("missing") for t in asked]
    by_key = c.mget_by_keys(keys[::-1])
    assert [r["content"] for r in by_key] == [f"doc {i}" for i in range(99, -1, -1)]
    c.mdrop([f"doc {i}" for i in range(0, 100, 2)], MODEL)
    assert c.mexists([f"doc {i}" for i in range(4)], MODEL) == [False, True, False, True]
    assert c.mexists_by_keys(keys[:4]) == [False, True, False, True]
    c.mdrop_by_keys(keys)
    assert not any(c.mexists([f"doc {i}" for i in range(100)], MODEL))


def test_empty_batches(impl: str, factory: Factory) -> None:
    c = factory(impl)
    assert c.mset([]) == []
    assert c.mget([], MODEL) == []
    assert c.mexists([], MODEL) == []
    assert c.mget_by_keys([]) == []
    assert c.mexists_by_keys([]) == []
    assert c.mdrop([], MODEL) is None
    assert c.mdrop_by_keys([]) is None


def test_bytes_content(impl: str, factory: Factory) -> None:
    c = factory(impl)
    k_bytes = c.set(b"\x89PNG raw", MODEL, vec(1))
    res = c.get(b"\x89PNG raw", MODEL)
    assert res is not None and c.exists(b"\x89PNG raw", MODEL)
    np.testing.assert_allclose(res["embedding"], vec(1), rtol=1e-6)
    assert c.get_by_key(k_bytes) is not None
    if impl == "tiercache":
        # ours keeps the type; RedisVL decodes bytes that happen to be UTF-8 into str, and
        # b"ab" and "61 62"-style hex text can share a RedisVL key: ours never
        assert res["content"] == b"\x89PNG raw"
        k_str = c.set("abc", MODEL, vec(2))
        assert c.set(b"abc", MODEL, vec(3)) != k_str
        assert c.get("abc", MODEL)["content"] == "abc"  # type: ignore[index]
        assert c.get(b"abc", MODEL)["content"] == b"abc"  # type: ignore[index]
        # RedisVL hashes f"{content}:{model}" with bytes as hex: "616263" and b"abc", or
        # ("a:b", "c") and ("a", "b:c"), share a key there; tiercache's encoding is injective
        assert c.set("616263", MODEL, vec(4)) != c.set(b"abc", MODEL, vec(3))
        assert c.set("a:b", "c", vec(5)) != c.set("a", "b:c", vec(6))
        assert c.get("a:b", "c")["embedding"] != c.get("a", "b:c")["embedding"]  # type: ignore[index]


def test_many_clear_isolation_with_glob_names(impl: str, factory: Factory) -> None:
    names = ["emb[ab]", "emba", "embb", "emb*", "embXYZ", "emb?", "embQ", "e\\mb"]
    caches = {n: factory(impl, name=n) for n in names}
    for n, c in caches.items():
        c.mset(
            [{"content": f"{n} {i}", "model_name": MODEL, "embedding": vec(i)} for i in range(3)]
        )

    def alive() -> dict[str, int]:
        return {n: sum(c.mexists([f"{n} {i}" for i in range(3)], MODEL)) for n, c in caches.items()}

    assert set(alive().values()) == {3}
    caches["emb[ab]"].clear()  # as a pattern, emb[ab]:* would match emba: and embb:
    assert alive() == {n: 0 if n == "emb[ab]" else 3 for n in names}
    caches["emb*"].clear()
    caches["emb?"].clear()
    caches["e\\mb"].clear()
    assert alive() == {n: 0 if n in ("emb[ab]", "emb*", "emb?", "e\\mb") else 3 for n in names}
    # a cleared cache is usable again
    caches["emb*"].set("again", MODEL, vec(9))
    assert caches["emb*"].exists("again", MODEL)


# --------------------------------------------------------------------------- TTL (one sleep)


def test_ttl_default_override_and_batches(factory: Factory) -> None:
    """Both implementations in one test so the whole file sleeps once (2 s)."""
    kinds = ["tiercache"] + ([] if RedisVLCache is None else ["redisvl"])
    checks: list[Callable[[], None]] = []
    for kind in kinds:
        short = factory(kind, name=f"ttl-short-{kind}", ttl=1)  # default TTL 1 s
        plain = factory(kind, name=f"ttl-plain-{kind}")  # no default TTL
        k_default = short.set("default", MODEL, vec(1))
        k_long = short.set("override", MODEL, vec(2), ttl=30)
        short_batch = short.mset(
            [{"content": f"b{i}", "model_name": MODEL, "embedding": vec(i)} for i in range(3)]
        )
        long_batch = short.mset(
            [{"content": f"l{i}", "model_name": MODEL, "embedding": vec(i)} for i in range(3)],
            ttl=30,
        )
        k_one = plain.set("one second", MODEL, vec(3), ttl=1)
        k_forever = plain.set("forever", MODEL, vec(4))
        async_key = asyncio.run(plain.aset("async short", MODEL, vec(5), ttl=1))
        assert short.exists_by_key(k_default) and plain.exists_by_key(k_one)
        assert short.ttl == 1 and plain.ttl is None

        def check(
            short: Any = short,
            plain: Any = plain,
            k_default: str = k_default,
            k_long: str = k_long,
            short_batch: list[str] = short_batch,
            long_batch: list[str] = long_batch,
            k_one: str = k_one,
            k_forever: str = k_forever,
            async_key: str = async_key,
        ) -> None:
            assert not short.exists_by_key(k_default)
            assert short.get("default", MODEL) is None
            assert short.exists_by_key(k_long) and short.get("override", MODEL) is not None
            assert short.mexists_by_keys(short_batch) == [False] * 3
            assert short.mget([f"b{i}" for i in range(3)], MODEL) == [None] * 3
            assert short.mexists_by_keys(long_batch) == [True] * 3
            assert not plain.exists("one second", MODEL)
            assert plain.get_by_key(k_one) is None and plain.exists_by_key(k_forever)
            assert not plain.exists_by_key(async_key)

        checks.append(check)
    time.sleep(2.0)
    for check in checks:
        check()


def test_ours_ttl_zero_means_no_expiry_and_bad_ttls_raise(tmp_path: Path) -> None:
    c = EmbeddingsCache("t", ttl=0, path=tmp_path)
    assert c.ttl is None
    c.set_ttl(5)
    assert c.ttl == 5
    c.set("x", MODEL, vec(1), ttl=0)  # RedisVL: a falsy TTL sets no expiry
    assert c.exists("x", MODEL)
    for bad in (-1, float("nan"), float("inf"), "10", True):
        with pytest.raises(InvalidTTLError):
            c.set("y", MODEL, vec(1), ttl=bad)
    with pytest.raises(InvalidTTLError):
        c.set_ttl(-3)
    with pytest.raises(ValueError):  # RedisVL raises ValueError: ours is one too
        EmbeddingsCache("t2", ttl="1h", path=tmp_path)  # type: ignore[arg-type]
    assert not c.exists("y", MODEL)
    c.close()


# --------------------------------------------------------------------------- async


def test_async_twins(impl: str, factory: Factory) -> None:
    c = factory(impl)

    async def main() -> None:
        key = await c.aset(
            content="async text", model_name=MODEL, embedding=vec(1), metadata={"async": True}
        )
        assert await c.aexists("async text", MODEL)
        assert await c.aexists_by_key(key)
        check_result(
            await c.aget("async text", MODEL), impl, "async text", MODEL, vec(1), {"async": True}
        )
        check_result(await c.aget_by_key(key), impl, "async text", MODEL, vec(1), {"async": True})
        keys = await c.amset(
            [{"content": f"a{i}", "model_name": MODEL, "embedding": vec(i)} for i in range(5)]
        )
        got = await c.amget(["a4", "nope", "a0"], MODEL)
        assert got[1] is None and got[0]["content"] == "a4" and got[2]["content"] == "a0"
        assert await c.amexists(["a1", "nope"], MODEL) == [True, False]
        assert [r["content"] for r in await c.amget_by_keys(keys)] == [f"a{i}" for i in range(5)]
        assert await c.amexists_by_keys(keys[:2]) == [True, True]
        await c.amdrop(["a0", "a1"], MODEL)
        await c.amdrop_by_keys(keys[2:3])
        await c.adrop_by_key(key)
        await c.adrop("a3", MODEL)
        assert await c.amexists_by_keys(keys) == [False, False, False, False, True]
        assert await c.amget([], MODEL) == [] and await c.amset([]) == []
        await c.aclear()
        assert not await c.aexists("a4", MODEL)
        if impl == "redisvl":
            await c.adisconnect()

    asyncio.run(main())


def test_ours_async_runs_off_the_event_loop(tmp_path: Path) -> None:
    c = EmbeddingsCache("loop", path=tmp_path)
    seen: list[int] = []
    original = c.mget

    def spy(*args: Any, **kw: Any) -> Any:
        seen.append(threading.get_ident())
        time.sleep(0.05)  # a slow disk: the loop must keep ticking meanwhile
        return original(*args, **kw)

    c.mget = spy  # type: ignore[method-assign]

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        t = asyncio.create_task(ticker())
        await c.aset("x", MODEL, vec(1))
        assert (await c.aget("x", MODEL)) is not None
        t.cancel()
        assert threading.get_ident() not in seen
        return ticks

    assert asyncio.run(main()) >= 3
    c.close()


# --------------------------------------------------------------------------- side by side


@pytest.mark.skipif(RedisVLCache is None, reason=ORACLE_SKIP or "oracle available")
def test_parity_results_field_by_field(factory: Factory) -> None:
    ours, theirs = factory("tiercache", name="ours"), factory("redisvl", name="theirs")
    ops: list[Callable[[Any], Any]] = [
        lambda c: c.set("q1", MODEL, vec(1), {"a": 1, "b": [1, 2], "c": {"d": None}}),
        lambda c: c.set("q2", "m4", [0.5, -1.25, 3, 1e-3]),  # ints are numbers too
        lambda c: c.mset(
            [
                {
                    "content": "q3",
                    "model_name": "m2",
                    "embedding": vec(3, 3),
                    "metadata": {"k": "v"},
                },
                {"content": "q4", "model_name": MODEL, "embedding": vec(4)},
            ]
        ),
        lambda c: c.get("q1", MODEL),
        lambda c: c.get("q2", "m4"),
        lambda c: c.mget(["q3", "q4", "zz"], "m2"),
        lambda c: c.mget(["q4", "zz", "q1"], MODEL),
        lambda c: c.mexists(["q1", "zz", "q3"], MODEL),
        lambda c: c.exists("q3", "m2"),
    ]
    for op in ops:
        a, b = op(ours), op(theirs)
        compare(a, b)
    # by key: each with its own keys, the same answers
    ka = ours.mset([{"content": "k1", "model_name": MODEL, "embedding": vec(1)}])
    kb = theirs.mset([{"content": "k1", "model_name": MODEL, "embedding": vec(1)}])
    compare(
        ours.mget_by_keys(ka + ["ours:" + "f" * 32]),
        theirs.mget_by_keys(kb + ["theirs:" + "f" * 64]),
    )


def compare(a: Any, b: Any) -> None:
    """Ours (a) against RedisVL (b): same shape; dicts have RedisVL's keys (plus
    ``metadata: None`` where RedisVL leaves it out), equal values, float32 embeddings."""
    if isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b)
        for x, y in zip(a, b):
            compare(x, y)
    elif isinstance(b, dict):
        assert isinstance(a, dict)
        assert set(a) == set(b) | {"metadata"}
        for k in ("content", "model_name"):
            assert a[k] == b[k]
        assert a["metadata"] == b.get("metadata")
        np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=1e-6, atol=1e-7)
        assert abs(a["inserted_at"] - b["inserted_at"]) < 5
    elif isinstance(b, str):  # a key
        assert isinstance(a, str) and a.startswith("ours:") and b.startswith("theirs:")
    else:
        assert a == b


# --------------------------------------------------------------------------- ours only


def test_ours_text_alias_as_in_the_older_guide(tmp_path: Path) -> None:
    c = EmbeddingsCache("guide", path=tmp_path)
    key = c.set(text="What is ML?", model_name=MODEL, embedding=vec(1), metadata={"x": 1})
    assert c.get(text="What is ML?", model_name=MODEL)["content"] == "What is ML?"  # type: ignore[index]
    assert c.exists(text="What is ML?", model_name=MODEL)
    c.mset([{"text": "t2", "model_name": MODEL, "embedding": vec(2)}])
    assert c.mexists(texts=["t2", "What is ML?"], model_name=MODEL) == [True, True]
    assert c.mget(texts=["t2"], model_name=MODEL)[0]["content"] == "t2"  # type: ignore[index]
    c.drop(text="t2", model_name=MODEL)
    assert c.get_by_key(key) is not None and not c.exists("t2", MODEL)
    with pytest.raises(InvalidInputError):
        c.set(content="a", text="b", model_name=MODEL, embedding=vec(1))
    with pytest.raises(InvalidContentError):
        c.get(model_name=MODEL)
    c.close()


def test_ours_bad_input_raises_typed_errors_and_writes_nothing(tmp_path: Path) -> None:
    c = EmbeddingsCache("bad", path=tmp_path)
    c.set("ok", MODEL, vec(0))
    good = {"content": "new", "model_name": MODEL, "embedding": vec(1)}
    bad_items: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"content": 3, "model_name": MODEL, "embedding": vec(1)}, InvalidContentError),
        ({"content": "x", "model_name": None, "embedding": vec(1)}, InvalidInputError),
        ({"content": "x", "model_name": MODEL, "embedding": vec(1, 3)}, InvalidVectorError),
        (
            {"content": "x", "model_name": MODEL, "embedding": [1.0, float("nan")] * 4},
            InvalidVectorError,
        ),
        ({"content": "x", "model_name": MODEL, "embedding": [1e300] * 8}, InvalidVectorError),
        ({"content": "x", "model_name": MODEL, "embedding": "0.1,0.2"}, InvalidVectorError),
        ({"content": "x", "model_name": MODEL, "embedding": []}, InvalidVectorError),
        ({"content": "x", "model_name": MODEL, "embedding": [[1.0]] * 8}, InvalidVectorError),
        (
            {"content": "x", "model_name": MODEL, "embedding": vec(1), "metadata": [1]},
            InvalidMetadataError,
        ),
        (
            {"content": "x", "model_name": MODEL, "embedding": vec(1), "metadata": {1: "a"}},
            InvalidMetadataError,
        ),
        (
            {"content": "x", "model_name": MODEL, "embedding": vec(1), "metadata": {"s": {1, 2}}},
            InvalidMetadataError,
        ),
        ({"content": "x", "model_name": MODEL, "embedding": vec(1), "ttl": 3}, InvalidInputError),
        (
            {"content": "x", "model_name": "new-model", "embedding": vec(1), "metadata": object()},
            InvalidMetadataError,
        ),
    ]
    for bad, err in bad_items:
        with pytest.raises(err):
            c.mset([good, bad, {**good, "model_name": "other"}])
    with pytest.raises(InvalidInputError):
        c.mset([good, "not a dict"])  # type: ignore[list-item]
    with pytest.raises(InvalidVectorError):  # one model, two dims in one batch
        c.mset([{**good, "model_name": "m9"}, {**good, "model_name": "m9", "embedding": vec(1, 4)}])
    assert c.get("new", MODEL) is None and c.get("new", "other") is None
    assert c.get("x", MODEL) is None and c.get("new", "m9") is None
    assert c.get("ok", MODEL) is not None
    with pytest.raises(InvalidContentError):
        c.get(["a"], MODEL)  # type: ignore[arg-type]
    with pytest.raises(InvalidContentError):
        c.mget("abc", MODEL)
    with pytest.raises(InvalidContentError):
        c.get_by_key(b"bad:key")  # type: ignore[arg-type]
    # keys of another shape or cache: a miss, as a key nobody wrote is in RedisVL
    assert c.get_by_key("bad:0123") is None and c.get_by_key("other:" + "a" * 32) is None
    assert c.get_by_key("bad:" + "G" * 32) is None and not c.exists_by_key("nope")
    c.drop_by_key("nope")
    # a vector computed elsewhere is the only source: the encoder never runs
    with pytest.raises(EncoderError):
        StoreOnlyEncoder(MODEL, 8).encode(["x"])
    c.close()
    with pytest.raises(ClosedError):
        c.get("ok", MODEL)
    with pytest.raises(ConfigError):
        EmbeddingsCache("x", path=tmp_path, async_redis_client=object())


def test_ours_one_dim_per_model_until_clear(tmp_path: Path) -> None:
    c = EmbeddingsCache("dims", path=tmp_path)
    c.set("a", MODEL, vec(1, 4))
    with pytest.raises(InvalidVectorError, match="dim 4"):
        c.set("b", MODEL, vec(1, 5))
    c.set("b", "other-model", vec(1, 5))  # another model, another dim: fine
    c.close()
    c = EmbeddingsCache("dims", path=tmp_path)  # the registry survives a restart
    with pytest.raises(InvalidVectorError):
        c.set("b", MODEL, vec(1, 5))
    c.clear()
    c.set("b", MODEL, vec(1, 5))
    assert c.get("b", MODEL) is not None and c.get("a", MODEL) is None
    c.close()


def test_ours_names_never_mix_locally_or_in_redis(tmp_path: Path, redis_server: Any) -> None:
    """Warm directories per name (TierCache.clear wipes a whole directory) and prefixes
    that are never a prefix of another cache's keys: RedisVL's ``a`` clears ``a:b``."""
    names = ["a", "a:b", "a%3Ab", "x/../../y", "..", "emb[ab]", "emba"]
    caches = {n: EmbeddingsCache(n, redis_url=redis_server.url, path=tmp_path) for n in names}
    dirs = {c.path for c in caches.values()}
    assert len(dirs) == len(names)
    assert all(Path(d).parent == tmp_path for d in dirs)
    assert len({c.prefix for c in caches.values()}) == len(names)
    for n, c in caches.items():
        c.set("same text", MODEL, vec(len(n)))
    for n, c in caches.items():
        res = c.get("same text", MODEL)
        assert res is not None
        np.testing.assert_allclose(res["embedding"], vec(len(n)))
    caches["a"].clear()
    caches[".."].clear()
    for n, c in caches.items():
        assert c.exists("same text", MODEL) == (n not in ("a", ".."))
    # the Redis keys: <encoded name>:<32 hex>, plus one model registry record per name
    r = redis.Redis.from_url(redis_server.url)
    keys = sorted(k.decode() for k in r.scan_iter(match="a%3A*"))
    assert [k.split(":")[0] for k in keys] == ["a%3Ab"] * 2
    assert {len(k.split(":")[1]) for k in keys} == {32}
    for c in caches.values():
        c.close()
    assert redis_prefix("a:b") == "a%3Ab:" and redis_prefix("100%") == "100%25:"


def test_ours_other_process_finds_vectors_on_disk_and_in_redis(
    tmp_path: Path, redis_server: Any
) -> None:
    """A model this process has not used: its dim comes from the model registry, in the
    warm directory (a restart) or in Redis (another host, its own warm directory)."""
    host1 = EmbeddingsCache("fleet", redis_url=redis_server.url, path=tmp_path / "h1")
    keys = host1.mset(
        [
            {
                "content": f"t{i}",
                "model_name": "m-768",
                "embedding": vec(i, 12),
                "metadata": {"i": i},
            }
            for i in range(5)
        ]
    )
    host1.close()
    restarted = EmbeddingsCache("fleet", path=tmp_path / "h1")  # no Redis: disk only
    assert restarted.get("t3", "m-768")["metadata"] == {"i": 3}  # type: ignore[index]
    restarted.close()
    host2 = EmbeddingsCache("fleet", redis_url=redis_server.url, path=tmp_path / "h2")
    assert host2.mexists(["t0", "t9"], "m-768") == [True, False]
    got = host2.mget_by_keys(keys)
    assert [r["metadata"]["i"] for r in got] == list(range(5))  # type: ignore[index]
    assert host2.get("t1", "never-registered") is None
    # once read through host2's tiers, the vector is in host2's warm directory too
    host2.get("t2", "m-768")
    host2.close()
    local = EmbeddingsCache("fleet", path=tmp_path / "h2")
    assert local.exists("t2", "m-768")
    local.close()


def test_ours_fail_open_when_redis_is_down(tmp_path: Path) -> None:
    from tests.redis_server import free_port

    c = EmbeddingsCache("down", redis_url=f"redis://127.0.0.1:{free_port()}/0", path=tmp_path)
    key = c.set("x", MODEL, vec(1))  # committed locally; the Redis write is skipped
    assert c.get("x", MODEL) is not None and c.get_by_key(key) is not None
    assert c.mexists(["x", "y"], MODEL) == [True, False]
    with pytest.raises(StoreError):  # an invalidation that could not reach Redis raises
        c.drop("x", MODEL)
    assert not c.exists("x", MODEL)  # ... after removing the local copy
    shared = c.stats()[MODEL]["tiers"]["shared"]
    assert shared["errors"] + shared["skipped"] >= 1
    c.close()


def test_ours_default_directory_config_and_expire(
    tmp_path: Path, monkeypatch: Any, redis_server: Any
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == str(tmp_path / "xdg" / "tiercache" / "redisvl")
    c = EmbeddingsCache()
    assert c.path == warm_directory(default_root(), "embedcache")
    c.set("x", MODEL, vec(1))
    c.close()
    cfg = tmp_path / "tc.yaml"
    cfg.write_text(
        f"warm:\n  path: {tmp_path / 'from-yaml'}\n  durability: fast\nhot:\n  max_bytes: 1MiB\n"
    )
    c = EmbeddingsCache(
        "named", config=str(cfg), redis_client=redis.Redis.from_url(redis_server.url)
    )
    assert Path(c.path).parent == tmp_path / "from-yaml"
    key = c.set("y", MODEL, vec(2))
    c.expire(key, 100)
    ttl_ms = redis.Redis.from_url(redis_server.url).pttl(key)
    assert 90_000 < ttl_ms <= 100_000
    assert c.get_by_key(key)["content"] == "y"  # type: ignore[index]
    c.close()
    c = EmbeddingsCache(
        "kw", redis_url=redis_server.url, path=tmp_path, connection_kwargs={"socket_timeout": 1.0}
    )
    k = c.set("z", MODEL, vec(3))
    assert redis.Redis.from_url(redis_server.url).exists(k) == 1
    c.close()


def test_ours_durability_default_fast_and_choosable(tmp_path: Path) -> None:
    """Without a config the drop-in's warm store does not fsync each write (RedisVL's
    Redis does not either); ``durability="durable"`` fsyncs every write (and groups the
    commits of concurrent threads); a config's setting is kept unless overridden; any
    other value is a ConfigError. A write acknowledged in fast mode survives the process
    being killed: see tests/test_crash.py."""
    fast = EmbeddingsCache("f", path=tmp_path)
    durable = EmbeddingsCache("d", path=tmp_path, durability="durable")
    try:
        fast.set("x", MODEL, vec(1))
        durable.set("x", MODEL, vec(1))
        assert fast._store is not None and not fast._store.durable
        assert durable._store is not None and durable._store.durable
        assert durable.get("x", MODEL)["embedding"] == fast.get("x", MODEL)["embedding"]  # type: ignore[index]
    finally:
        fast.close()
        durable.close()
    cfg = tmp_path / "tc.yaml"
    cfg.write_text(f"warm:\n  path: {tmp_path / 'y'}\n  durability: durable\n")
    c = EmbeddingsCache("c", config=str(cfg))
    assert c._store is not None and c._store.durable
    c.close()
    c = EmbeddingsCache("c2", config=str(cfg), durability="fast")
    assert c._store is not None and not c._store.durable
    c.close()
    with pytest.raises(ConfigError, match="durability"):
        EmbeddingsCache("bad", path=tmp_path, durability="sometimes")
