"""LangChain adapters: langchain-tests' standard ByteStore suites, and the Embeddings wrapper."""

from __future__ import annotations

import asyncio
import importlib
import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.embeddings import (  # noqa: E402
    DeterministicFakeEmbedding,
    Embeddings,
    FakeEmbeddings,
)
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_tests.integration_tests import (  # noqa: E402
    BaseStoreAsyncTests,
    BaseStoreSyncTests,
)

from tiercache import (  # noqa: E402
    ClosedError,
    InvalidContentError,
    InvalidInputError,
    StoreError,
    TierCache,
)
from tiercache.integrations.langchain import (  # noqa: E402
    MAX_KEY_BYTES,
    TierCacheByteStore,
    TierCacheEmbeddings,
)
from tiercache.tiers.lmdb import LmdbTier  # noqa: E402

from .conftest import DIM, CountingEncoder, make_config  # noqa: E402

# --------------------------------------------------------------------------- standard suites


class TestByteStoreSync(BaseStoreSyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, tmp_path: Path) -> Iterator[TierCacheByteStore]:
        with TierCacheByteStore(path=tmp_path / "warm", durability="fast") as store:
            yield store

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


class TestByteStoreBesideVectorsSync(BaseStoreSyncTests[bytes]):
    """The same suite with the store inside a live cache's warm store (one environment)."""

    @pytest.fixture
    def kv_store(self, cache: TierCache) -> Iterator[TierCacheByteStore]:
        cache.embed_many(["vectors", "live", "here"])
        with TierCacheByteStore(cache) as store:
            yield store

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"\x00\xff", b"", b"x" * 5000


@pytest.mark.asyncio  # the suite's async tests carry no mark of their own (strict mode)
@pytest.mark.filterwarnings("ignore:The test <Function test_no_overrides_DO_NOT_OVERRIDE>")
class TestByteStoreAsync(BaseStoreAsyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, tmp_path: Path) -> Iterator[TierCacheByteStore]:
        with TierCacheByteStore(path=tmp_path / "warm", durability="fast") as store:
            yield store

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


# --------------------------------------------------------------------------- ByteStore


def test_bytestore_shares_the_cache_environment_and_survives_clear(cache: TierCache) -> None:
    cache.embed_many(["a", "b"])
    with TierCacheByteStore(cache, namespace="docs") as store:
        assert store.path == os.path.realpath(cache.config.warm.path)
        store.mset([("k1", b"v1"), ("k2", b"v2")])
        entries = cache.stats()["tiers"]["warm"]["entries"]
        assert entries == 2  # pairs are not vectors: not counted
        cache.clear()
        assert store.mget(["k1", "k2"]) == [b"v1", b"v2"]
        assert cache.get("a") is None
        cache.close()  # the store holds its own reference to the environment
        store.mset([("k3", b"v3")])
        assert store.mget(["k1", "k3"]) == [b"v1", b"v3"]


def test_bytestore_persists_and_namespaces_are_apart(tmp_path: Path) -> None:
    path = tmp_path / "warm"
    with TierCacheByteStore(path=path, namespace="one") as one:
        one.mset([("k", b"1"), ("shared/x", b"1x")])
    with (
        TierCacheByteStore(path=path, namespace="one") as one,
        TierCacheByteStore(path=path, namespace="onetwo") as other,
    ):
        assert one.mget(["k", "shared/x"]) == [b"1", b"1x"]
        assert other.mget(["k"]) == [None]
        other.mset([("k", b"2")])
        one.mdelete(["k"])
        assert (one.mget(["k"]), other.mget(["k"])) == ([None], [b"2"])
        assert list(one.yield_keys()) == ["shared/x"]
        assert list(other.yield_keys()) == ["k"]


def test_bytestore_prefix_is_a_string_prefix_in_byte_order(tmp_path: Path) -> None:
    with TierCacheByteStore(path=tmp_path / "w") as store:
        keys = ["é/1", "é/2", "é", "e/1", "ée", "z", "\x00nul", "a\x00b"]
        store.mset([(k, k.encode()) for k in keys])
        assert list(store.yield_keys(prefix="é")) == ["é", "é/1", "é/2", "ée"]
        assert list(store.yield_keys(prefix="é/")) == ["é/1", "é/2"]
        assert list(store.yield_keys(prefix="q")) == []
        assert list(store.yield_keys()) == sorted(keys, key=lambda k: k.encode())
        assert store.mget(keys) == [k.encode() for k in keys]


def test_bytestore_yield_keys_crosses_read_chunks(tmp_path: Path) -> None:
    keys = [f"doc:{i:05d}" for i in range(2500)]
    with TierCacheByteStore(path=tmp_path / "w", durability="fast") as store:
        store.mset([(k, b"v") for k in keys] + [("other", b"v")])
        assert list(store.yield_keys(prefix="doc:")) == keys

        async def collect() -> list[str]:
            return [k async for k in store.ayield_keys(prefix="doc:")]

        assert asyncio.run(collect()) == keys


def test_bytestore_bad_input_is_typed_and_writes_nothing(tmp_path: Path) -> None:
    with TierCacheByteStore(path=tmp_path / "w") as store:
        limit = MAX_KEY_BYTES - len("langchain") - 1
        store.mset([("k" * limit, b"ok")])
        with pytest.raises(InvalidInputError):
            store.mset([("a", b"1"), ("k" * (limit + 1), b"2")])
        with pytest.raises(InvalidContentError):
            store.mset([("a", b"1"), ("b", "not bytes")])  # type: ignore[list-item]
        with pytest.raises(InvalidContentError):
            store.mget([b"bytes key"])  # type: ignore[list-item]
        with pytest.raises(InvalidInputError):
            store.mget([""])
        assert store.mget(["a", "b"]) == [None, None]
        assert list(store.yield_keys()) == ["k" * limit]
        store.mset([("view", memoryview(b"mv")), ("ba", bytearray(b"ba"))])  # type: ignore[list-item]
        assert store.mget(["view", "ba"]) == [b"mv", b"ba"]
    with pytest.raises(InvalidInputError):
        TierCacheByteStore(path=tmp_path / "w", namespace="")
    with pytest.raises(InvalidInputError):
        TierCacheByteStore(path=tmp_path / "w", namespace="a\x00b")
    with pytest.raises(TypeError):
        TierCacheByteStore(object(), path=tmp_path / "w")  # type: ignore[arg-type]


def test_bytestore_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = TierCacheByteStore(path=tmp_path / "w")
    store.close()
    store.close()
    with pytest.raises(StoreError):
        store.mget(["a"])


def test_bytestore_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "warm"
    with TierCacheByteStore(path=path) as store:
        store.mset([("a", b"1")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for f in path.rglob("*"):  # files owner read/write, folders (the open markers) 0700
        assert stat.S_IMODE(f.stat().st_mode) == (0o700 if f.is_dir() else 0o600), f


def test_bytestore_grows_the_map(tmp_path: Path, encoder: CountingEncoder) -> None:
    cfg = make_config(tmp_path, warm={"map_size": "1MiB"})
    with TierCache(cfg, encoder=encoder) as c, TierCacheByteStore(c) as store:
        big = [(f"blob{i}", bytes([i]) * 600_000) for i in range(6)]  # 3.6 MB > 1 MiB map
        store.mset(big)
        assert store.mget([k for k, _ in big]) == [v for _, v in big]
        assert store._tier.stat()["map_size"] >= 4 * 2**20  # doubled until the batch fit
        c.embed_many(["still", "works"])
        assert c.get("still") is not None


def test_bytestore_needs_a_warm_store(tmp_path: Path, encoder: CountingEncoder) -> None:
    with TierCache(make_config(tmp_path, warm={"enabled": False}), encoder=encoder) as c:
        with pytest.raises(StoreError):
            TierCacheByteStore(c)


def test_bytestore_threads_beside_cache_writes(cache: TierCache) -> None:
    with TierCacheByteStore(cache) as store:

        def writer(t: int) -> None:
            for i in range(30):
                store.mset([(f"t{t}/{i}", f"{t}:{i}".encode())])
                cache.embed_many([f"text {t} {i}"])

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        keys = sorted(store.yield_keys())
        assert len(keys) == 120
        assert store.mget(["t3/29", "t0/0"]) == [b"3:29", b"0:0"]


def test_named_db_hook_refuses_the_tier_databases(cache: TierCache) -> None:
    tier = LmdbTier(
        cache.config.warm.path, fingerprint=cache.fingerprint, on_fingerprint_mismatch="inspect"
    )
    try:
        for name in (b"records", b"meta", b"index", b"segs", b"segmeta", b""):
            with pytest.raises(ValueError):
                tier.in_named_db(name, lambda txn, db: None)
        assert tier.in_named_db(b"other", lambda txn, db: txn.get(b"k", db=db)) is None
    finally:
        tier.close()


# --------------------------------------------------------------------------- Embeddings


@pytest.fixture
def embedder(tmp_path: Path, encoder: CountingEncoder) -> Iterator[TierCacheEmbeddings]:
    with TierCacheEmbeddings(config=make_config(tmp_path), encoder=encoder) as emb:
        yield emb


def test_embeddings_is_a_langchain_embeddings(embedder: TierCacheEmbeddings) -> None:
    assert isinstance(embedder, Embeddings)
    docs = embedder.embed_documents(["a", "b"])
    q = embedder.embed_query("a")
    assert isinstance(docs, list) and all(isinstance(v, list) for v in docs)
    assert len(docs) == 2 and len(docs[0]) == DIM and len(q) == DIM
    assert all(type(x) is float for x in docs[0] + q)
    assert embedder.embed_documents([]) == []


def test_query_and_document_roles_never_share_keys(
    embedder: TierCacheEmbeddings, encoder: CountingEncoder
) -> None:
    docs, queries = embedder.documents, embedder.queries
    assert docs.key("x") != queries.key("x")
    assert queries.fingerprint.role == "query" and docs.fingerprint.role != "query"
    embedder.embed_documents(["x"])
    assert encoder.texts == 1
    assert not queries.exists("x")  # the document vector is not a query vector
    embedder.embed_query("x")
    assert encoder.texts == 2  # computed again, in the query role
    assert docs.exists("x") and queries.exists("x")
    assert queries.config.warm.namespace == docs.config.warm.namespace + ".query"
    assert queries.config.warm.path == docs.config.warm.path  # one store, one budget


def test_second_calls_do_not_encode(
    embedder: TierCacheEmbeddings, encoder: CountingEncoder
) -> None:
    first = embedder.embed_documents(["a", "b", "a"])
    q = embedder.embed_query("what is a?")
    assert encoder.texts == 3  # "a" once (deduplicated), "b", the query
    assert embedder.embed_documents(["b", "a"]) == [first[1], first[0]]
    assert embedder.embed_query("what is a?") == q
    assert encoder.texts == 3
    assert first[0] == first[2]


def test_served_from_warm_after_reopen(tmp_path: Path) -> None:
    enc = CountingEncoder()
    with TierCacheEmbeddings(config=make_config(tmp_path), encoder=enc) as emb:
        docs = emb.embed_documents(["a", "b"])
        q = emb.embed_query("q")
    enc2 = CountingEncoder()
    with TierCacheEmbeddings(config=make_config(tmp_path), encoder=enc2) as emb:
        assert emb.embed_documents(["a", "b"]) == docs
        assert emb.embed_query("q") == q
        assert emb.documents.get("a") is not None
        assert emb.queries.stats()["tiers"]["warm"]["hits"] == 1
    assert enc2.calls == 0


def test_async_twins_match_and_share_the_tiers(
    embedder: TierCacheEmbeddings, encoder: CountingEncoder
) -> None:
    async def main() -> tuple[list[list[float]], list[float]]:
        docs = await embedder.aembed_documents(["a", "b", "a"])
        q = await embedder.aembed_query("a")
        return docs, q

    docs, q = asyncio.run(main())
    assert encoder.texts == 3  # a, b (documents), a (query)
    assert embedder.embed_documents(["a", "b", "a"]) == docs
    assert embedder.embed_query("a") == q
    assert encoder.texts == 3


def test_wraps_a_cache_you_made(tmp_path: Path, encoder: CountingEncoder) -> None:
    with TierCache(make_config(tmp_path), encoder=encoder) as cache:
        emb = TierCacheEmbeddings(cache)
        assert emb.documents is cache
        emb.embed_documents(["a"])
        assert cache.exists("a")
        emb.embed_query("a")
        emb.close()
        assert cache.embed("a") is not None  # the cache you passed in stays open
        with pytest.raises(ClosedError):
            emb.queries.embed("b")  # the derived one is closed


def test_explicit_query_cache_and_guards(tmp_path: Path, encoder: CountingEncoder) -> None:
    with TierCache(make_config(tmp_path / "d"), encoder=encoder) as docs:
        with pytest.raises(InvalidInputError, match="same fingerprint"):
            TierCacheEmbeddings(docs, query_cache=docs)
        with TierCache(make_config(tmp_path / "q"), encoder=CountingEncoder()) as twin:
            with pytest.raises(InvalidInputError, match="same fingerprint"):
                TierCacheEmbeddings(docs, query_cache=twin)
        with TierCache(
            make_config(tmp_path / "q2"), encoder=CountingEncoder(DIM + 1, role="query")
        ) as other_dim:
            with pytest.raises(InvalidInputError, match="dim"):
                TierCacheEmbeddings(docs, query_cache=other_dim)
        with TierCache(
            make_config(tmp_path / "q3"), encoder=CountingEncoder(role="query")
        ) as queries:
            emb = TierCacheEmbeddings(docs, query_cache=queries)
            assert emb.queries is queries
            emb.close()
            queries.embed("still open")
    with TierCache(make_config(tmp_path / "r"), encoder=CountingEncoder(role="query")) as c:
        with pytest.raises(InvalidInputError, match="already 'query'"):
            TierCacheEmbeddings(c)
        with pytest.raises(TypeError):
            TierCacheEmbeddings(c, config=make_config(tmp_path / "r"))


class CountingLangChainEmbeddings(Embeddings):
    """Asymmetric: a query vector differs from the document vector of the same text."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.model = "counting-v1"
        self.document_texts: list[str] = []
        self.query_texts: list[str] = []

    def _vec(self, text: str, sign: float) -> list[float]:
        rng = np.random.default_rng(abs(hash(text)) % 2**32)
        return [sign * float(x) for x in rng.standard_normal(self.dim)]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.document_texts += texts
        return [self._vec(t, 1.0) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.query_texts.append(text)
        return self._vec(text, -1.0)


def test_from_embeddings_puts_the_tiers_in_front(tmp_path: Path) -> None:
    lc = CountingLangChainEmbeddings()
    with TierCacheEmbeddings.from_embeddings(lc, config=make_config(tmp_path), dim=DIM) as emb:
        fp = emb.documents.fingerprint
        assert fp.model.endswith("CountingLangChainEmbeddings:counting-v1")
        assert (fp.role, emb.queries.fingerprint.role) == ("document", "query")
        docs = emb.embed_documents(["x", "y", "x"])
        q = emb.embed_query("x")
        assert lc.document_texts == ["x", "y"] and lc.query_texts == ["x"]
        np.testing.assert_allclose(docs[0], lc._vec("x", 1.0), rtol=1e-6)
        np.testing.assert_allclose(q, lc._vec("x", -1.0), rtol=1e-6)  # not the doc vector
        assert emb.embed_documents(["y", "x"]) == [docs[1], docs[0]]
        assert asyncio.run(emb.aembed_query("x")) == q
        assert lc.document_texts == ["x", "y"] and lc.query_texts == ["x"]


def test_from_embeddings_with_langchain_fakes(tmp_path: Path) -> None:
    det = DeterministicFakeEmbedding(size=DIM)
    with TierCacheEmbeddings.from_embeddings(
        det, config=make_config(tmp_path / "d"), name="det", revision="1"
    ) as emb:
        assert emb.documents.dim == DIM  # measured by one embed_query
        assert emb.documents.fingerprint.model == "det"
        got = emb.embed_documents(["hello", "world"])
        np.testing.assert_allclose(got, det.embed_documents(["hello", "world"]), rtol=1e-6)
        np.testing.assert_allclose(emb.embed_query("hello"), det.embed_query("hello"), rtol=1e-6)
    rnd = FakeEmbeddings(size=DIM)  # a new random vector on every call
    with TierCacheEmbeddings.from_embeddings(
        rnd, config=make_config(tmp_path / "f"), dim=DIM, namespace="fake"
    ) as emb:
        assert emb.queries.config.warm.namespace == "fake.query"
        first = emb.embed_documents(["a"])
        assert emb.embed_documents(["a"]) == first  # cached: the fake is not asked again
        assert asyncio.run(emb.aembed_documents(["a"])) == first


def test_from_embeddings_rejects_non_embeddings(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        TierCacheEmbeddings.from_embeddings(
            object(),
            config=make_config(tmp_path),  # type: ignore[arg-type]
            dim=DIM,
        )


def test_in_a_langchain_vector_store(
    embedder: TierCacheEmbeddings, encoder: CountingEncoder
) -> None:
    store = InMemoryVectorStore(embedding=embedder)
    store.add_texts(["apples", "pears", "cars"])
    hits = store.similarity_search("pears", k=1)
    assert encoder.texts == 4  # three documents, one query
    # hash vectors are not semantic; the query "pears" matches its own text exactly
    assert hits[0].page_content == "pears"


def test_missing_langchain_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("langchain_core", "langchain_core.embeddings", "langchain_core.stores"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "tiercache.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install 'tiercache\[langchain\]'"):
        importlib.import_module("tiercache.integrations.langchain")


def test_migration_page_covers_the_public_surface() -> None:
    page = Path(__file__).resolve().parent.parent / "docs" / "migrate-from-langchain.md"
    text = page.read_text(encoding="utf-8")
    for name in (
        "TierCacheEmbeddings",
        "from_embeddings",
        "TierCacheByteStore",
        "CacheBackedEmbeddings",
        "LocalFileStore",
        "InMemoryByteStore",
        "query_cache=",
        "tiercache[langchain]",
        "## Every difference",
    ):
        assert name in text, name


def test_from_embeddings_sends_every_miss_of_a_call_at_once(tmp_path: Path) -> None:
    """Issue #19 item 15: 2,000 document misses are one embed_documents call (a remote
    embedder pays per request), as with CacheBackedEmbeddings; ``batch_size`` chunks."""

    class Calls(CountingLangChainEmbeddings):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.batches.append(len(texts))
            return super().embed_documents(texts)

    lc = Calls()
    docs = [f"doc {i}" for i in range(2000)]
    with TierCacheEmbeddings.from_embeddings(lc, config=make_config(tmp_path), dim=DIM) as emb:
        emb.embed_documents(docs)
        assert lc.batches == [2000]
        emb.embed_documents(docs + ["new"])
        assert lc.batches == [2000, 1]
    lc2 = Calls()
    with TierCacheEmbeddings.from_embeddings(
        lc2, config=make_config(tmp_path / "b"), dim=DIM, batch_size=500
    ) as emb:
        emb.embed_documents(docs)
        assert lc2.batches == [500] * 4
    with pytest.raises(InvalidInputError):
        TierCacheEmbeddings.from_embeddings(
            lc2, config=make_config(tmp_path / "c"), dim=DIM, batch_size=0
        )
