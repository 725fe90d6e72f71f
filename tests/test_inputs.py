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
@pytest.mark.parametrize("method", ["embed_many", "mget", "mexists", "mdrop", "precompute", "mset"])
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
