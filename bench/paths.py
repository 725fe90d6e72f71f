"""Benchmarks of whole paths (called by bench/run.py): cold path against
sentence-transformers, bulk precompute into warm, several processes reading one warm
store, a 768-d warm store, and the accuracy of the lossy codecs.

Each function returns a plain dict (JSON-ready) and logs progress to stderr.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout's tiercache, also in a reader subprocess
    sys.path.insert(0, str(ROOT))

from tiercache import TierCache, codec, parse_config  # noqa: E402
from tiercache.encoders import HashEncoder  # noqa: E402

Log = Callable[[str], None]


# --------------------------------------------------------------------------- codecs


def codec_accuracy(n: int = 2000, dim: int = 384, seed: int = 7) -> dict[str, Any]:
    """Cosine between each stored-and-read vector and its original, per codec."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    out: dict[str, Any] = {}
    for name in ("float32", "float16", "int8"):
        cos = np.empty(n)
        for i in range(n):
            key = i.to_bytes(16, "little")
            rec = codec.decode_record(codec.encode_record(v[i], name, 0.0, None, key=key), dim, key)
            assert rec is not None
            r = rec.vector
            cos[i] = float(v[i] @ r / (np.linalg.norm(v[i]) * np.linalg.norm(r)))
        out[name] = {
            "min": float(cos.min()),
            "mean": float(cos.mean()),
            "record_bytes": codec.record_size(dim, name),
        }
    return out


# --------------------------------------------------------------------------- cold path


ROUNDS = 5
"""Cold-path rounds per path (this VM's run-to-run spread is +-10%)."""


def cold_path(
    texts: list[str], batch_size: int, log: Log, redis_url: str | None = None
) -> dict[str, Any]:
    """``embed_many`` of unique texts through a fresh TierCache vs the model's own
    ``SentenceTransformer.encode`` on the same texts, batch size and threads (and RedisVL's
    ``HFTextVectorizer`` with its ``EmbeddingsCache`` when a Redis URL is given); rounds
    alternate so that machine noise hits every path. A second ``embed_many`` of the same
    texts measures each cache's all-hit path."""
    import tempfile

    from tiercache import default_config
    from tiercache.encoders import SentenceTransformerEncoder, default_threads

    enc_cfg = dataclasses.replace(default_config().encoder, batch_size=batch_size)
    encoder = SentenceTransformerEncoder(enc_cfg)
    encoder.load()
    model = encoder._load()
    threads = enc_cfg.threads or default_threads()
    model.encode(texts[:batch_size], batch_size=batch_size)  # warm-up
    ST, TC, RV = (
        "sentence-transformers encode",
        "tiercache embed_many",
        "RedisVL HFTextVectorizer + EmbeddingsCache",
    )
    rounds: dict[str, list[float]] = {ST: [], TC: []}
    hits: dict[str, list[float]] = {TC: []}
    vectorizer = rv_cache = None
    if redis_url is not None:
        try:
            from redisvl.extensions.cache.embeddings import EmbeddingsCache
            from redisvl.utils.vectorize import HFTextVectorizer

            rv_cache = EmbeddingsCache(name="bench-cold", redis_url=redis_url)
            vectorizer = HFTextVectorizer(model=str(encoder.model_dir), cache=rv_cache)
            rounds[RV], hits[RV] = [], []
        except ImportError:
            log("redisvl is not installed: its cold path is skipped")
    vecs: dict[str, np.ndarray] = {}
    outside: list[float] = []  # tiercache's seconds outside encoder calls, per round
    ref = got = np.empty(0)

    def run_st() -> None:
        nonlocal ref
        t0 = time.perf_counter()
        ref = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        rounds[ST].append(time.perf_counter() - t0)

    def run_tc() -> None:
        nonlocal got
        with tempfile.TemporaryDirectory() as tmp:
            cfg = parse_config(
                {
                    "warm": {"path": tmp, "durability": "durable"},
                    "encoder": {"batch_size": batch_size},
                    "policy": {"seed": 1},
                }
            )
            with TierCache(cfg, encoder=encoder) as cache:
                t0 = time.perf_counter()
                got = cache.embed_many(texts)
                rounds[TC].append(time.perf_counter() - t0)
                outside.append(rounds[TC][-1] - cache.stats()["encoder"]["seconds"])
                t0 = time.perf_counter()
                cache.embed_many(texts)
                hits[TC].append(time.perf_counter() - t0)

    for r in range(ROUNDS):
        for fn in (run_st, run_tc) if r % 2 == 0 else (run_tc, run_st):
            fn()
        if vectorizer is not None and rv_cache is not None:
            rv_cache.clear()
            t0 = time.perf_counter()
            vectorizer.embed_many(texts, batch_size=batch_size)
            rounds[RV].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            vectorizer.embed_many(texts, batch_size=batch_size)
            hits[RV].append(time.perf_counter() - t0)
            rv_cache.clear()
        vecs = {"ref": ref, "got": got}
        log(
            f"  cold round {r + 1}: "
            + ", ".join(f"{k.split()[0]} {v[-1]:.2f}s" for k, v in rounds.items())
        )
    n = len(texts)
    best = {k: min(v) for k, v in rounds.items()}
    return {
        "texts": n,
        "batch_size": batch_size,
        "threads": threads,
        "seconds": rounds,
        "texts_per_s": {k: n / s for k, s in best.items()},
        "hits_per_s": {k: n / min(v) for k, v in hits.items()},
        "ratio": best[ST] / best[TC],
        "outside_encoder_s": outside,
        "outside_encoder_share": min(o / t for o, t in zip(outside, rounds[TC])),
        "ratio_vs_redisvl": best[RV] / best[TC] if RV in best else None,
        "max_abs_diff": float(np.abs(vecs["ref"] - vecs["got"]).max()),
        "note": f"best of {ROUNDS} rounds, the order alternating; tiercache includes keys, "
        "single-flight, durable warm writes (fsync per batch) and hot admission",
    }


# --------------------------------------------------------------------------- bulk warm


def bulk_warm(n: int, dim: int, tmp: Path, log: Log, chunk: int = 10_000) -> dict[str, Any]:
    """Precompute: ``mset`` of n vectors into a fresh warm tier (hot off), in chunks."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    texts = [f"catalog item {i}" for i in range(n)]
    out: dict[str, Any] = {"n": n, "dim": dim, "chunk": chunk}
    for durability in ("fast", "durable"):
        cfg = parse_config(
            {
                "encoder": {"kind": "hash", "dim": dim},
                "hot": {"enabled": False},
                "warm": {
                    "path": str(tmp / f"bulk-{durability}"),
                    "max_bytes": 8 * 2**30,
                    "durability": durability,
                },
                "policy": {"seed": 1},
            }
        )
        with TierCache(cfg, encoder=HashEncoder(dim)) as cache:
            t0 = time.perf_counter()
            for i in range(0, n, chunk):
                cache.mset(list(zip(texts[i : i + chunk], vectors[i : i + chunk])))
            dt = time.perf_counter() - t0
        out[durability] = {"seconds": dt, "vectors_per_s": n / dt}
        log(f"  bulk warm {durability}: {n / dt:,.0f} vectors/s")
    return out


# --------------------------------------------------------------------------- concurrency


def _reader_main(argv: list[str]) -> None:
    """``python bench/paths.py reader PATH DIM N SECONDS SEED``: open the warm store, print
    "ready", wait for a line on stdin, do single gets for SECONDS, print a JSON result.
    (A subprocess with text I/O: no multiprocessing, hence no pickle.)"""
    import json
    import sys

    path, dim, n, seconds, seed = argv[0], int(argv[1]), int(argv[2]), float(argv[3]), int(argv[4])
    cfg = parse_config(
        {
            "encoder": {"kind": "hash", "dim": dim},
            "hot": {"enabled": False},
            "warm": {"path": path, "max_bytes": 8 * 2**30, "durability": "fast"},
            "policy": {"seed": 1},
        }
    )
    rng = np.random.default_rng(seed)
    texts = [f"catalog item {i}" for i in rng.integers(0, n, size=100_000)]
    with TierCache(cfg, encoder=HashEncoder(dim)) as cache:
        cache.embed(texts[0])
        print("ready", flush=True)
        sys.stdin.readline()
        done = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for t in texts[done % 99_000 : done % 99_000 + 1000]:
                cache.embed(t)
            done += 1000
        print(
            json.dumps({"gets": done, "encoded": cache.stats()["encoder"]["texts"] - 0}), flush=True
        )


def concurrent_readers(
    n: int, dim: int, tmp: Path, log: Log, procs: tuple[int, ...] = (1, 2, 4), seconds: float = 3.0
) -> dict[str, Any]:
    """Aggregate single-get throughput of 1, 2, 4 processes reading one warm store."""
    import json
    import subprocess
    import sys

    path = tmp / "shared-warm"
    rng = np.random.default_rng(4)
    cfg = parse_config(
        {
            "encoder": {"kind": "hash", "dim": dim},
            "hot": {"enabled": False},
            "warm": {"path": str(path), "max_bytes": 8 * 2**30, "durability": "fast"},
            "policy": {"seed": 1},
        }
    )
    with TierCache(cfg, encoder=HashEncoder(dim)) as cache:
        for i in range(0, n, 10_000):
            m = min(10_000, n - i)
            cache.mset(
                list(
                    zip(
                        [f"catalog item {j}" for j in range(i, i + m)],
                        rng.standard_normal((m, dim), dtype=np.float32),
                    )
                )
            )
    out: dict[str, Any] = {"n": n, "seconds": seconds, "cores": os.cpu_count(), "runs": {}}
    for k in procs:
        ps = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "reader",
                    str(path),
                    str(dim),
                    str(n),
                    str(seconds),
                    str(100 + j),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for j in range(k)
        ]
        for p in ps:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in ps:  # start them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in ps:
            assert p.stdout is not None
            results.append(json.loads(p.stdout.readline()))
            p.wait(60)
        ops = sum(r["gets"] for r in results)
        out["runs"][str(k)] = {
            "ops_per_s": ops / seconds,
            "encoder_texts": sum(r["encoded"] for r in results),
        }
        log(f"  {k} reader process(es): {ops / seconds:,.0f} gets/s in all")
    return out


# --------------------------------------------------------------------------- 768-d


def warm_768(n: int, tmp: Path, log: Log, gets: int = 20_000, batches: int = 50) -> dict[str, Any]:
    """A 768-d float32 warm store: single get, batch(1000) get, footprint."""
    dim = 768
    rng = np.random.default_rng(5)
    cfg = parse_config(
        {
            "encoder": {"kind": "hash", "dim": dim},
            "hot": {"enabled": False},
            "warm": {"path": str(tmp / "warm-768"), "max_bytes": 8 * 2**30, "durability": "fast"},
            "policy": {"seed": 1},
        }
    )
    texts = [f"long document {i}" for i in range(n)]
    with TierCache(cfg, encoder=HashEncoder(dim)) as cache:
        for i in range(0, n, 10_000):
            cache.mset(
                list(
                    zip(
                        texts[i : i + 10_000],
                        rng.standard_normal((min(10_000, n - i), dim), dtype=np.float32),
                    )
                )
            )
        idx = rng.integers(0, n, size=gets)
        probe = [texts[i].encode().decode() for i in idx]
        for t in probe[:2000]:
            cache.embed(t)
        ns = np.empty(gets, dtype=np.int64)
        clock = time.perf_counter_ns
        for j, t in enumerate(probe):
            t0 = clock()
            cache.embed(t)
            ns[j] = clock() - t0
        bns = np.empty(batches, dtype=np.int64)
        for j in range(batches):
            b = [texts[i].encode().decode() for i in rng.integers(0, n, size=1000)]
            t0 = clock()
            cache.embed_many(b)
            bns[j] = clock() - t0
        warm = cache.stats()["tiers"]["warm"]
    q = np.percentile(ns, [50, 90, 99]) / 1e3
    payload = 4 * dim
    res = {
        "n": n,
        "dim": dim,
        "get_us": {
            "p50": float(q[0]),
            "p90": float(q[1]),
            "p99": float(q[2]),
            "max": float(ns.max() / 1e3),
        },
        "batch_ms": {
            "p50": float(np.percentile(bns, 50) / 1e6),
            "p99": float(np.percentile(bns, 99) / 1e6),
        },
        "bytes_per_vector": warm["bytes"] / n,
        "file_bytes_per_vector": warm["file_bytes"] / n,
        "payload": payload,
    }
    log(
        f"  768-d warm: get p50 {res['get_us']['p50']:.2f} µs, batch p50 "
        f"{res['batch_ms']['p50']:.2f} ms, {res['bytes_per_vector'] / payload:.2f}x payload"
    )
    return res


if __name__ == "__main__":
    if sys.argv[1:2] == ["reader"]:
        _reader_main(sys.argv[2:])
