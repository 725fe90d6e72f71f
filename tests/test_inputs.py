"""Bad batch arguments get a typed error and change nothing; numpy strings and str
subclasses are content (issue #19, items 1, 2, 3 and 5)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiercache import ResultCache, TierCache
from tiercache.errors import InvalidContentError, InvalidMetadataError, TierCacheError

from .conftest import DIM, CountingEncoder, make_config


@pytest.fixture
def cache(tmp_path: Path) -> Any:
    c = TierCache(make_config(tmp_path), encoder=CountingEncoder())
    yield c
    c.close()


def _state(c: TierCache) -> Any:
    st = c.stats()
    return st["tiers"]["hot"]["entries"], st["tiers"]["warm"]["entries"], st["encoder"]["texts"]


@pytest.mark.parametrize("bad", ["abc", b"abc", None, 42, 3.5])
@pytest.mark.parametrize(
    "method", ["embed_many", "mget", "lookup_many", "mexists", "mdrop", "precompute", "mset"]
)
def test_a_batch_method_refuses_one_str_none_and_non_sequences(
    cache: TierCache, method: str, bad: Any
) -> None:
    cache.embed("kept")
    before = _state(cache)
    with pytest.raises(TierCacheError) as info:
        getattr(cache, method)(bad)
    assert "sequence" in str(info.value)
    assert _state(cache) == before
    assert cache.exists("kept") and not cache.exists("a")


def test_a_bad_item_is_named_by_its_index(cache: TierCache) -> None:
    with pytest.raises(InvalidContentError, match="item 2"):
        cache.embed_many(["a", "b", 7, "d"])
    with pytest.raises(InvalidContentError, match="item 1"):
        cache.mset([("a", np.ones(DIM, np.float32)), (None, np.ones(DIM, np.float32))])
    assert not cache.exists("a")


def test_numpy_strings_and_str_subclasses_are_content(cache: TierCache) -> None:
    class Text(str):
        pass

    plain = cache.embed_many(["a", "b"])
    np.testing.assert_array_equal(cache.embed_many(np.array(["a", "b"])), plain)
    np.testing.assert_array_equal(cache.embed(np.str_("a")), plain[0])
    np.testing.assert_array_equal(cache.embed(Text("b")), plain[1])
    assert cache.key(Text("a")) == cache.key("a") == cache.key(np.str_("a"))
    assert cache.key(np.bytes_(b"a")) == cache.key(b"a") != cache.key("a")
    cache.set(Text("s"), np.ones(DIM, np.float32), metadata={"m": 1})
    e = cache.get("s")
    assert e is not None and e.metadata == {"m": 1}
    assert cache.get(Text("s")) is not None and cache.exists(np.str_("s"))
    assert cache.mexists(np.array(["s", "nope"])) == [True, False]
    assert cache.mget([Text("s")])[0] is not None
    assert cache.drop(Text("s")) and not cache.exists("s")
    with pytest.raises(InvalidContentError):
        cache.embed(np.int64(3))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 42, "doc-1", b"x"])
def test_drop_ids_refuses_what_is_not_a_list_of_ids(cache: TierCache, bad: Any) -> None:
    cache.set("t", np.ones(DIM, np.float32), doc_id="doc-1")
    with pytest.raises(InvalidMetadataError):
        cache.drop_ids(bad)
    assert cache.exists("t")
    assert cache.drop_ids(["doc-1"]) == 1 and not cache.exists("t")


@pytest.mark.parametrize("bad", [None, 42, "col:a"])
def test_invalidate_tags_refuses_what_is_not_a_list_of_tags(cache: TierCache, bad: Any) -> None:
    cache.set("t", np.ones(DIM, np.float32), tags=["col:a"])
    with pytest.raises(InvalidMetadataError):
        cache.invalidate_tags(bad)
    assert cache.exists("t")


def test_async_batches_refuse_one_str_too(cache: TierCache) -> None:
    async def run() -> None:
        with pytest.raises(InvalidContentError):
            await cache.aembed_many("abc")
        with pytest.raises(InvalidContentError):
            await cache.amget(None)  # type: ignore[arg-type]
        assert (await cache.aembed_many(iter(["x", "y"]))).shape == (2, DIM)

    asyncio.run(run())


def test_result_cache_takes_a_list_of_tags_never_one_string() -> None:
    rc = ResultCache()
    calls = []

    def compute() -> list[int]:
        calls.append(1)
        return [1, 2]

    with pytest.raises(InvalidMetadataError):
        rc.get_or_compute("q", compute, tags="col:a")  # type: ignore[arg-type]
    assert calls == [] and rc.get("q") is None  # nothing computed, nothing stored
    with pytest.raises(InvalidMetadataError):
        rc.set("q", [1], tags="col:a")  # type: ignore[arg-type]
    assert rc.get_or_compute("q", compute, tags=["col:a"]) == [1, 2]
    with pytest.raises(InvalidMetadataError):
        rc.invalidate_tags("col:a")  # type: ignore[arg-type]
    with pytest.raises(InvalidMetadataError):
        rc.invalidate_tags(None)  # type: ignore[arg-type]
    assert rc.invalidate_tags(["c"]) == 0 and rc.invalidate_tags(["col:a"]) == 1


def _picky(tmp_path: Path) -> tuple[TierCache, list[list[Any]]]:
    """A cache whose encoder refuses any batch holding a text with "bad" in it."""
    from tiercache import CallableEncoder

    calls: list[list[Any]] = []

    def encode(texts: list[Any]) -> np.ndarray:
        calls.append(list(texts))
        if any("bad" in t for t in texts):
            raise ValueError("cannot encode this text")
        return np.stack([np.full(DIM, len(t), np.float32) for t in texts])

    enc = CallableEncoder(encode, dim=DIM, name="picky")
    return TierCache(make_config(tmp_path), encoder=enc), calls


def test_one_bad_text_does_not_cost_the_others(tmp_path: Path) -> None:
    """Issue #19 item 4: the encoder fails on one text of a batch: the others are encoded
    and stored, and the error names the failing item and says so."""
    from tiercache.errors import EncoderError

    c, calls = _picky(tmp_path)
    with pytest.raises(EncoderError, match=r"1 of 3 texts \(item 1: .*cannot encode.*the other 2"):
        c.embed_many(["good", "bad one", "good 2", "good"])
    assert c.exists("good") and c.exists("good 2") and not c.exists("bad one")
    n = len(calls)
    np.testing.assert_array_equal(c.embed_many(["good", "good 2"])[0], np.full(DIM, 4))
    assert len(calls) == n  # served from the cache, not encoded again
    with pytest.raises(EncoderError, match="cannot encode"):  # alone: the encoder's error
        c.embed("bad again")
    c.close()


def test_precompute_stores_what_encoded_and_names_what_did_not(tmp_path: Path) -> None:
    from tiercache.errors import EncoderError

    c, _ = _picky(tmp_path)
    with pytest.raises(EncoderError, match="item 2"):
        c.precompute(["p1", "p2", "bad p3"], doc_ids=[1, 2, 3])
    assert c.exists("p1") and c.exists("p2") and not c.exists("bad p3")
    assert c.drop_ids([2]) == 1  # the stored ones carry their ids
    c.close()


def test_text_that_cannot_be_encoded_is_refused_before_encoding(tmp_path: Path) -> None:
    """A lone surrogate has no UTF-8 form: with an encoder that needs UTF-8 (the default
    for any encoder; the hash encoder hashes anything), a typed error naming the item and
    the position, before the encoder runs; nothing of the batch is stored. Empty and
    whitespace-only text are encoded like any other."""
    cache, _ = _picky(tmp_path)
    before = cache.stats()["encoder"]["texts"]
    with pytest.raises(InvalidContentError, match=r"item 1: text holds a lone surrogate"):
        cache.embed_many(["good", "bad \ud800 text", "good 2"])
    with pytest.raises(InvalidContentError, match="position 3"):
        cache.embed("bad\udfff")
    assert cache.stats()["encoder"]["texts"] == before and not cache.exists("good")
    assert cache.embed_many(["", "   "]).shape == (2, DIM)
    cache.close()


@pytest.mark.parametrize(
    "query, k",
    [
        (None, None),
        (123, None),
        ({"q": 1}, None),
        ([], None),
        (["a"], None),
        ("q", "10"),
        ("q", 0),
        ("q", True),
        ("q", 2.0),
    ],
)
def test_result_cache_refuses_what_cannot_be_a_query_or_a_k(query: Any, k: Any) -> None:
    """Issue #19 item 14 (ResultCache): a query is str, bytes or a vector of numbers; k is
    None or an int >= 1. Nothing is stored on refusal."""
    from tiercache.errors import InvalidInputError

    rc = ResultCache()
    with pytest.raises(InvalidInputError):
        rc.set(query, [1], k=k)
    assert len(rc) == 0
    rc.set([0.5, 1], [2], k=3)  # a query vector: a list or an array, the same key
    assert rc.get(np.array([0.5, 1.0]), k=3) == [2] and rc.get(b"q") is None


def test_an_all_zero_vector_is_refused_under_a_normalized_model(tmp_path: Path) -> None:
    """Issue #19 item 14: with ``encoder.normalize: true`` an all-zero vector cannot be an
    embedding (no direction): refused by set and mset, naming the item, nothing stored.
    Other norms are stored as given (tiercache never rescales a caller's vector), and
    metadata may be any msgpack plain data, a list included (docs/reliability.md)."""
    from tiercache import HashEncoder, InvalidVectorError

    c = TierCache(make_config(tmp_path), encoder=HashEncoder(DIM))  # normalize: True
    assert c.fingerprint.normalize
    with pytest.raises(InvalidVectorError, match="item 0: an all-zero vector"):
        c.set("z", np.zeros(DIM, np.float32))
    with pytest.raises(InvalidVectorError, match="item 1: an all-zero vector"):
        c.mset([("a", np.ones(DIM, np.float32)), ("z", np.zeros(DIM)), ("b", np.ones(DIM))])
    assert not c.exists("a") and not c.exists("z")
    c.set("big", np.full(DIM, 100.0, np.float32), metadata=[1])
    e = c.get("big")
    assert e is not None and e.vector[0] == 100.0 and e.metadata == [1]
    c.close()
    from tiercache import CallableEncoder

    raw = CallableEncoder(lambda xs: np.ones((len(xs), DIM)), dim=DIM, name="raw")
    assert not raw.fingerprint.normalize  # a model that does not normalize: zeros are fine
    with TierCache(make_config(tmp_path / "raw"), encoder=raw) as c2:
        c2.set("z", np.zeros(DIM, np.float32))
        assert c2.exists("z")


def test_mset_bulk_shape_checks_like_the_general_loop(tmp_path: Path) -> None:
    """``mset`` of plain (str, float32 array) pairs takes a shorter path than the general
    loop; it refuses the same bad items with the same messages (the item named, nothing
    stored), and anything else in the batch sends it through the general loop."""
    from tiercache import HashEncoder, InvalidVectorError

    ok = np.ones(DIM, np.float32)
    nan = ok.copy()
    nan[3] = np.nan
    with TierCache(make_config(tmp_path), encoder=HashEncoder(DIM)) as c:
        for bad, msg in (
            (nan, "item 2: vector holds NaN"),
            (np.zeros(DIM, np.float32), "item 2: an all-zero"),
        ):
            for shape in ("bulk", "general"):
                items: list[Any] = [("a", ok), ("b", ok), ("c", bad)]
                if shape == "general":
                    items.append({"content": "d", "vector": ok})
                with pytest.raises(InvalidVectorError, match=msg):
                    c.mset(items)
                assert not c.mexists(["a", "b", "c", "d"]).count(True)
        keys = c.mset(iter([("a", ok), (b"b", ok * 2)]))  # an iterator, bytes content
        assert keys == [c.key("a"), c.key(b"b")]
        e = c.get(b"b")
        assert e is not None and np.array_equal(e.vector, ok * 2)
        with pytest.raises(InvalidVectorError, match="shape"):
            c.mset([("a", ok), ("b", np.ones(DIM + 1, np.float32))])
