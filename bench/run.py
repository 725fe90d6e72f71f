"""tiercache benchmark: per-tier latency and footprint beside dict, cachetools, LMDB, diskcache.

    python bench/run.py --out docs/benchmarks.md [--n 100000] [--m 20000] [--smoke]
                        [--json PATH] [--plots DIR]

Every store is wrapped in a :class:`Store` adapter with the same five operations
(``load``, ``get``, ``get_batch``, ``set``, ``footprint``) and measured by the same code.
Progress goes to stderr; the report is a markdown file, a JSON file and (optionally) PNG
charts. See the "Method" section of the generated markdown for what is timed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import cachetools  # noqa: E402
import diskcache  # noqa: E402
import entrypoints  # noqa: E402  (bench/entrypoints.py, beside this file)
import lmdb  # noqa: E402
import paths  # noqa: E402  (bench/paths.py, beside this file)
import scale  # noqa: E402  (bench/scale.py, beside this file)
import staleness  # noqa: E402  (bench/staleness.py, beside this file)

import tiercache  # noqa: E402
from tiercache import TierCache, parse_config  # noqa: E402
from tiercache.encoders import HashEncoder  # noqa: E402

DIM = 384
PAYLOAD = 4 * DIM  # bytes of one float32 vector
SEED = 20240601
BATCH = 1000
LMDB_MAP = 4 * 2**30
HOT_ENTRY = 4 * DIM + 256  # tiercache's hot budget per entry (row + bookkeeping)

TARGETS = {  # name -> (limit, unit)
    "hot_get_p50_us": (1.5, "µs"),
    "warm_get_p50_us": (4.0, "µs"),
    "hot_batch_p50_ms": (0.4, "ms"),
    "warm_batch_p50_ms": (2.5, "ms"),
    "warm_bytes_ratio": (1.3, "x payload"),
    "warm16_bytes_ratio": (0.7, "x payload"),
    # at least:
    "cos_float16": (0.9999, "cosine"),
    "cos_int8": (0.999, "cosine"),
    "cold_ratio": (1.0, "x ST encode"),
    "bulk_per_s": (100_000, "vectors/s"),
    "x_diskcache": (4.0, "x faster"),
    "x_redisvl_get": (90.0, "x faster"),
    "x_redisvl_mget": (100.0, "x faster"),
}
AT_LEAST = {
    "cos_float16",
    "cos_int8",
    "cold_ratio",
    "bulk_per_s",
    "x_diskcache",
    "x_redisvl_get",
    "x_redisvl_mget",
}
# every public entry point against embed (issue #16): ratios within one run, a rate or two
TARGETS.update({k: (lim, unit) for k, (lim, unit, _) in entrypoints.EP_TARGETS.items()})
TARGETS["staleness_p99"] = (100.0, "ms")
TARGETS["scale_ratio_3m"] = (1.3, "x raw py-lmdb get")
AT_LEAST |= {k for k, (_, _, at_least) in entrypoints.EP_TARGETS.items() if at_least}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- workload


@dataclass
class Params:
    n: int
    m: int  # single gets per distribution
    batches: int  # timed batch gets
    sets: int  # timed single sets (fresh keys)
    warmup: int  # untimed single gets before timing
    stream_batches: int
    stream_size: int


@dataclass
class Workload:
    texts: list[str]
    vectors: np.ndarray  # (n, DIM) float32, unit rows
    single: dict[str, np.ndarray]  # dist -> indices into texts
    batches: list[np.ndarray]
    warmup: np.ndarray
    set_texts: list[str]
    set_vectors: np.ndarray


def text_of(i: int) -> str:
    return f"query number {i} about topic {i % 97}"


def zipf_indices(rng: np.random.Generator, n: int, size: int, s: float = 1.0) -> np.ndarray:
    """Zipf(s) over n keys (rank k drawn with probability ~ 1/k**s); ranks map to a random
    permutation of the keys so that popular keys are spread over the key space."""
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    ranks = rng.choice(n, size=size, p=p / p.sum())
    return rng.permutation(n)[ranks]


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def make_workload(p: Params) -> Workload:
    rng = np.random.default_rng(SEED)
    return Workload(
        texts=[text_of(i) for i in range(p.n)],
        vectors=unit_vectors(rng, p.n),
        single={
            "uniform": rng.integers(0, p.n, size=p.m),
            "zipf1.0": zipf_indices(rng, p.n, p.m),
        },
        batches=[rng.integers(0, p.n, size=BATCH) for _ in range(p.batches)],
        warmup=rng.integers(0, p.n, size=p.warmup),
        set_texts=[f"fresh text {i} about topic {i % 89}" for i in range(p.sets)],
        set_vectors=unit_vectors(rng, p.sets),
    )


def fresh(texts: Sequence[str], idx: Sequence[int]) -> list[str]:
    """New str objects equal to texts[i]: a request's text arrives as a new string whose
    hash is not cached yet, so hashing stays inside every timed call."""
    return [texts[i].encode().decode() for i in idx]


# --------------------------------------------------------------------------- adapters


Vec = np.ndarray


@dataclass
class Store:
    """The common interface every store is measured through."""

    name: str
    medium: str  # "RAM" or "disk"
    load: Callable[[Sequence[tuple[str, Vec]]], None]
    get: Callable[[str], Vec]
    get_batch: Callable[[list[str]], np.ndarray]
    set: Callable[[str, Vec], None]
    footprint: Callable[[], dict[str, int]]  # bytes in use (+ file bytes for disk stores)
    close: Callable[[], None] = lambda: None
    extra: dict[str, Any] = field(default_factory=dict)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _tiercache(name: str, n: int, cfg: dict[str, Any], medium: str) -> Store:
    cache = TierCache(parse_config(cfg), encoder=HashEncoder(DIM))

    def load(items: Sequence[tuple[str, Vec]]) -> None:
        for part in chunks(items, 5000):
            cache.mset(part)

    def footprint() -> dict[str, int]:
        tiers = cache.stats()["tiers"]
        if medium == "RAM":
            return {}
        warm = tiers["warm"]
        return {"bytes": int(warm["bytes"]), "file_bytes": int(warm["file_bytes"])}

    return Store(
        name,
        medium,
        load,
        cache.embed,
        cache.embed_many,
        lambda t, v: cache.set(t, v),
        footprint,
        cache.close,
        extra={"cache": cache},
    )


def tiercache_hot(n: int, tmp: Path) -> Store:
    return _tiercache(
        "tiercache hot",
        n,
        {
            "encoder": {"kind": "hash", "dim": DIM},
            "hot": {"enabled": True, "max_bytes": int(n * HOT_ENTRY * 1.1)},
            "warm": {"enabled": False},
            "policy": {"seed": 1},
        },
        "RAM",
    )


def _tiercache_warm(codec: str) -> Callable[[int, Path], Store]:
    def make(n: int, tmp: Path) -> Store:
        return _tiercache(
            f"tiercache warm {codec}",
            n,
            {
                "encoder": {"kind": "hash", "dim": DIM},
                "hot": {"enabled": False},
                "warm": {
                    "enabled": True,
                    "path": str(tmp / f"warm-{codec}"),
                    "codec": codec,
                    "max_bytes": 4 * 2**30,
                    "durability": "fast",
                },
                "policy": {"seed": 1},
            },
            "disk",
        )

    return make


def _mapping_store(name: str, m: MutableMapping[str, Vec]) -> Store:
    """A RAM store over any str -> vector mapping (dict, cachetools caches)."""

    def load(items: Sequence[tuple[str, Vec]]) -> None:
        for t, v in items:
            m[t] = v.copy()

    return Store(
        name,
        "RAM",
        load,
        m.__getitem__,
        lambda ts: np.stack([m[t] for t in ts]),
        lambda t, v: m.__setitem__(t, v.copy()),
        dict,
    )


def plain_dict(n: int, tmp: Path) -> Store:
    return _mapping_store("dict", {})


def lfu_cache(n: int, tmp: Path) -> Store:
    return _mapping_store("cachetools LFUCache", cachetools.LFUCache(maxsize=n))


def raw_lmdb(n: int, tmp: Path) -> Store:
    path = tmp / "raw-lmdb"
    env = lmdb.open(
        str(path), map_size=LMDB_MAP, sync=False, metasync=False, readahead=False, lock=True
    )

    def key(t: str) -> bytes:
        return hashlib.blake2b(t.encode(), digest_size=16).digest()

    def load(items: Sequence[tuple[str, Vec]]) -> None:
        for part in chunks(items, 5000):
            with env.begin(write=True) as txn:
                for t, v in part:
                    txn.put(key(t), v.tobytes())

    def get(t: str) -> Vec:
        with env.begin(buffers=True) as txn:
            return np.frombuffer(txn.get(key(t)), dtype=np.float32).copy()

    def get_batch(ts: list[str]) -> np.ndarray:
        out = np.empty((len(ts), DIM), dtype=np.float32)
        with env.begin(buffers=True) as txn:
            for i, t in enumerate(ts):
                out[i] = np.frombuffer(txn.get(key(t)), dtype=np.float32)
        return out

    def set_(t: str, v: Vec) -> None:
        with env.begin(write=True) as txn:
            txn.put(key(t), v.tobytes())

    def footprint() -> dict[str, int]:
        s = env.stat()
        pages = s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"]
        blocks = os.stat(path / "data.mdb").st_blocks * 512
        return {"bytes": pages * s["psize"], "file_bytes": blocks}

    return Store("raw lmdb", "disk", load, get, get_batch, set_, footprint, env.close)


def disk_cache(n: int, tmp: Path) -> Store:
    c = diskcache.Cache(str(tmp / "diskcache"))

    def load(items: Sequence[tuple[str, Vec]]) -> None:
        for part in chunks(items, 5000):
            with c.transact():
                for t, v in part:
                    c.set(t, v.tobytes())

    def get(t: str) -> Vec:
        return np.frombuffer(c.get(t), dtype=np.float32)

    def footprint() -> dict[str, int]:
        return {"bytes": int(c.volume()), "file_bytes": _du(tmp / "diskcache")}

    return Store(
        "diskcache",
        "disk",
        load,
        get,
        lambda ts: np.stack([get(t) for t in ts]),
        lambda t, v: c.set(t, v.tobytes()),
        footprint,
        c.close,
    )


REDIS_URL: str | None = None  # set by main() when it could start a redis-server


def _redis_used(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def redis_py(n: int, tmp: Path) -> Store | None:
    """Hand-rolled Redis: 16-byte blake2b key -> raw float32 bytes; GET / MGET / SET."""
    if REDIS_URL is None:
        return None
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    r.flushall()
    base = _redis_used(r)

    def key(t: str) -> bytes:
        return b"hr:" + hashlib.blake2b(t.encode(), digest_size=16).digest()

    def load(items: Sequence[tuple[str, Vec]]) -> None:
        for part in chunks(items, 5000):
            r.mset({key(t): v.tobytes() for t, v in part})

    def get(t: str) -> Vec:
        return np.frombuffer(r.get(key(t)), dtype=np.float32).copy()

    def get_batch(ts: list[str]) -> np.ndarray:
        vals = r.mget([key(t) for t in ts])
        return np.frombuffer(b"".join(vals), dtype=np.float32).reshape(len(ts), DIM).copy()

    def close() -> None:
        r.flushall()
        r.close()

    return Store(
        "redis-py GET/MGET",
        "Redis",
        load,
        get,
        get_batch,
        lambda t, v: r.set(key(t), v.tobytes()),
        lambda: {"bytes": _redis_used(r) - base},
        close,
    )


def redisvl_cache(n: int, tmp: Path) -> Store | None:
    """RedisVL's EmbeddingsCache (redisvl 0.28) on the same redis-server."""
    if REDIS_URL is None:
        return None
    try:
        from redisvl.extensions.cache.embeddings import EmbeddingsCache
    except ImportError:
        log("redisvl is not installed: its store is skipped")
        return None
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    r.flushall()
    base = _redis_used(r)
    cache = EmbeddingsCache(name="bench", redis_url=REDIS_URL)
    model = "all-MiniLM-L6-v2"

    def load(items: Sequence[tuple[str, Vec]]) -> None:
        for part in chunks(items, 1000):
            cache.mset(
                [{"content": t, "model_name": model, "embedding": v.tolist()} for t, v in part]
            )

    def get(t: str) -> Vec:
        hit = cache.get(content=t, model_name=model)
        return np.asarray(hit["embedding"], dtype=np.float32)

    def get_batch(ts: list[str]) -> np.ndarray:
        hits = cache.mget(ts, model_name=model)
        return np.asarray([h["embedding"] for h in hits], dtype=np.float32)

    def close() -> None:
        r.flushall()
        r.close()

    return Store(
        "RedisVL EmbeddingsCache",
        "Redis",
        load,
        get,
        get_batch,
        lambda t, v: cache.set(content=t, model_name=model, embedding=v.tolist()),
        lambda: {"bytes": _redis_used(r) - base},
        close,
    )


def tiercache_shared(n: int, tmp: Path) -> Store | None:
    """tiercache with only the shared tier (hot and warm off): every get is a Redis hit."""
    if REDIS_URL is None:
        return None
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    r.flushall()
    base = _redis_used(r)
    store = _tiercache(
        "tiercache shared (Redis)",
        n,
        {
            "encoder": {"kind": "hash", "dim": DIM},
            "hot": {"enabled": False},
            "warm": {"enabled": False},
            "shared": {"url": REDIS_URL, "ttl": None, "timeout": "2s"},
            "policy": {"seed": 1},
        },
        "Redis",
    )
    closer = store.close

    def close() -> None:
        closer()
        r.flushall()
        r.close()

    store.footprint = lambda: {"bytes": _redis_used(r) - base}
    store.close = close
    return store


def _du(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


STORES: list[Callable[[int, Path], Store | None]] = [
    tiercache_hot,
    _tiercache_warm("float32"),
    _tiercache_warm("float16"),
    tiercache_shared,
    plain_dict,
    lfu_cache,
    raw_lmdb,
    disk_cache,
    redis_py,
    redisvl_cache,
]
REF_HOT = "tiercache hot"
REF_WARM = "tiercache warm float32"
REDISVL = "RedisVL EmbeddingsCache"
# the targets' stores and their floors' stores, measured again side by side in
# alternating rounds (the targets use these numbers)
PAIRED = (REF_HOT, "dict", REF_WARM, "tiercache warm float16", "raw lmdb", "diskcache", REDISVL)
PAIRED_ROUNDS = 5


# --------------------------------------------------------------------------- timing


time_each = entrypoints.time_each  # one timing loop for every table


def pct(ns: np.ndarray, unit: float) -> dict[str, float]:
    q = np.percentile(ns, [50, 90, 99]) / unit
    return {
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": float(ns.max() / unit),
        "mean": float(ns.mean() / unit),
        "n": int(len(ns)),
    }


def timer_floor_ns() -> float:
    return float(np.median(time_each(lambda a: None, range(100_000))))


def bench_store(
    make: Callable[[int, Path], Store | None],
    w: Workload,
    p: Params,
    tmp: Path,
    kept: dict[str, Store] | None = None,
) -> dict[str, Any] | None:
    """Load and measure one store, then close it, unless its name is in PAIRED and ``kept``
    is given: then it stays open in ``kept`` for the side-by-side rounds."""
    items = list(zip(w.texts, w.vectors))
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    maybe = make(p.n, tmp)
    if maybe is None:
        tracemalloc.stop()
        return None
    store = maybe
    store.load(items)
    load_s = time.perf_counter() - t0
    gc.collect()
    ram = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    if store.medium == "disk":
        # dirty pages of a store loaded without fsync are written back by the kernel a few
        # seconds later, on one of the two cores, in the middle of the timed gets: flush
        # them first, for every disk store alike
        os.sync()
        time.sleep(1.0)
    log(f"  {store.name}: loaded {p.n} in {load_s:.1f}s (load traced with tracemalloc)")
    res: dict[str, Any] = {"name": store.name, "medium": store.medium, "load_s": load_s}
    try:
        fp = store.footprint()
        fp = {"bytes": ram} if store.medium == "RAM" else fp
        res["footprint"] = {k: v / p.n for k, v in fp.items()}

        # correctness spot check (untimed): the stored vector comes back
        probe = int(w.warmup[0]) if len(w.warmup) else 0
        got = store.get(w.texts[probe])
        if not np.allclose(got, w.vectors[probe], atol=1e-3):
            raise AssertionError(f"{store.name} returned a wrong vector")

        time_each(store.get, fresh(w.texts, w.warmup))  # warm-up
        for b in w.batches[:3]:
            store.get_batch(fresh(w.texts, b))
        res["get_us"] = {}
        for dist, idx in w.single.items():
            gc.collect()
            res["get_us"][dist] = pct(time_each(store.get, fresh(w.texts, idx)), 1e3)
        log(
            f"  {store.name}: single get p50 "
            + ", ".join(f"{d} {v['p50']:.2f} µs" for d, v in res["get_us"].items())
        )
        gc.collect()
        res["batch_ms"] = pct(
            time_each(store.get_batch, [fresh(w.texts, b) for b in w.batches]), 1e6
        )
        log(f"  {store.name}: batch({BATCH}) p50 {res['batch_ms']['p50']:.3f} ms")
        gc.collect()
        pairs = [(t.encode().decode(), v) for t, v in zip(w.set_texts, w.set_vectors)]
        res["set_us"] = pct(time_each(lambda tv: store.set(*tv), pairs), 1e3)
        log(f"  {store.name}: set p50 {res['set_us']['p50']:.2f} µs")
        cache = store.extra.get("cache")
        if cache is not None:
            res["stats"] = _tier_counts(cache.stats())
            res["profile"] = {
                "single": profile_calls(store.get, fresh(w.texts, w.single["uniform"][:5000])),
                "batch": profile_calls(
                    store.get_batch, [fresh(w.texts, b) for b in w.batches[:10]]
                ),
            }
    finally:
        if kept is not None and store.name in PAIRED:
            kept[store.name] = store
        else:
            store.close()
    return res


def paired_rounds(kept: dict[str, Store], w: Workload, rounds: int) -> dict[str, Any]:
    """The target stores and their floors measured side by side: ``rounds`` rounds, each
    timing a slice of every key distribution's single gets and of the batches on every
    store in turn (the order rotated per round), so that a slow phase of the machine falls
    on all of them alike. Disk stores are read through once first, untimed: pages idle
    since their load may have been reclaimed. Returns {store: {"get_us": {dist: pct},
    "batch_ms": pct, "rounds_get_p50_us": [...], "rounds_batch_p50_ms": [...]}}."""
    names = [n for n in PAIRED if n in kept]
    for n in names:
        st = kept[n]
        if st.medium == "disk":
            for i in range(0, len(w.texts), BATCH):
                st.get_batch(w.texts[i : i + BATCH])
        time_each(st.get, fresh(w.texts, w.warmup))
    rounds = max(1, min([rounds, len(w.batches)] + [len(v) for v in w.single.values()]))
    single = {d: np.array_split(idx, rounds) for d, idx in w.single.items()}
    batches = np.array_split(np.arange(len(w.batches)), rounds)
    got: dict[str, dict[str, list[np.ndarray]]] = {
        n: {k: [] for k in [*w.single, "batch"]} for n in names
    }
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            st = kept[n]
            for d in w.single:
                gc.collect()
                got[n][d].append(time_each(st.get, fresh(w.texts, single[d][r])))
            gc.collect()
            got[n]["batch"].append(
                time_each(st.get_batch, [fresh(w.texts, w.batches[j]) for j in batches[r]])
            )
    out: dict[str, Any] = {}
    first = next(iter(w.single))
    for n in names:
        g = got[n]
        out[n] = {
            "get_us": {d: pct(np.concatenate(g[d]), 1e3) for d in w.single},
            "batch_ms": pct(np.concatenate(g["batch"]), 1e6),
            "rounds_get_p50_us": [float(np.median(a)) / 1e3 for a in g[first]],
            "rounds_batch_p50_ms": [float(np.median(a)) / 1e6 for a in g["batch"]],
        }
        log(
            f"  side by side: {n}: get p50 "
            + ", ".join(f"{d} {out[n]['get_us'][d]['p50']:.2f} µs" for d in w.single)
            + f", batch p50 {out[n]['batch_ms']['p50']:.3f} ms"
        )
    return out


def profile_calls(
    fn: Callable[[Any], Any], args: Sequence[Any], top: int = 8
) -> list[dict[str, Any]]:
    """cProfile of ``fn(a)`` for each arg: the ``top`` functions by own time, per call of
    ``fn`` (cProfile's own overhead inflates Python-level functions; C functions called
    from C, such as the hot reader's work, are inside their caller's line)."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for a in args:
        fn(a)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_, ncalls, tottime, cumtime, _) in stats.items():
        where = f"{Path(file).name}:{line}({name})" if line else name
        rows.append(
            {
                "function": where,
                "calls_per_op": ncalls / len(args),
                "own_us_per_op": tottime / len(args) * 1e6,
                "cum_us_per_op": cumtime / len(args) * 1e6,
            }
        )
    rows.sort(key=lambda r: -r["own_us_per_op"])
    return rows[:top]


def memory_floors(w: Workload) -> dict[str, Any]:
    """What any exact in-RAM store that hands the caller its own copy must pay here, in C
    (no per-call interpreter cost): a dict probe of a fresh string (hash included) and a
    copy of the matching row out of an N-row slab, per key, over the bench's own batches."""
    d = {t: i for i, t in enumerate(w.texts)}
    slab = np.ascontiguousarray(w.vectors)
    out = np.empty((BATCH, DIM), dtype=np.float32)
    probe, copy, both = [], [], []
    clock = time.perf_counter_ns
    for b in w.batches:
        texts = fresh(w.texts, b)
        idx = np.asarray(b, dtype=np.intp)
        t0 = clock()
        slots = list(map(d.get, texts))
        t1 = clock()
        np.take(slab, idx, axis=0, out=out)
        t2 = clock()
        probe.append(t1 - t0)
        copy.append(t2 - t1)
        texts = fresh(w.texts, b)
        t0 = clock()
        np.take(slab, np.fromiter(map(d.__getitem__, texts), np.intp, len(texts)), axis=0, out=out)
        both.append(clock() - t0)
        del slots
    # the default policy's per-access update (sketch + segment move), as the cache's drain
    # applies it: N resident 16-byte digests, accesses in the bench's batch order
    from tiercache.keys import key_hash64, key_hash64_many
    from tiercache.policy import PolicyEngine

    digests = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in w.texts]
    engine = PolicyEngine(
        hot_capacity=len(digests),
        warm_capacity=0,
        seed=1,
        hasher=key_hash64,
        hasher_many=key_hash64_many,
        access_buffer=10**9,
    )
    for k in digests:
        engine.offer_hot(k)
    update = []
    for b in w.batches:
        engine.record_hot_hits([digests[i] for i in b])
        t0 = clock()
        engine.drain()
        update.append(clock() - t0)
    return {
        "dict_probe_us": float(np.median(probe)) / BATCH / 1e3,
        "row_copy_us": float(np.median(copy)) / BATCH / 1e3,
        "batch_ms": pct(np.asarray(both, dtype=np.int64), 1e6),
        "policy_update_us": float(np.median(update)) / BATCH / 1e3,
    }


def _tier_counts(st: dict[str, Any]) -> dict[str, Any]:
    tiers = st["tiers"]
    out = {
        t: {k: tiers[t].get(k) for k in ("hits", "misses", "entries")}
        for t in tiers
        if t in ("hot", "warm")
    }
    enc = st.get("encoder") or tiers.get("encoder") or {}
    out["encoder"] = {k: enc.get(k) for k in ("calls", "texts")}
    return out


def bench_stream(p: Params, tmp: Path) -> dict[str, Any]:
    """End to end: embed_many on a stream mixing repeats and new texts."""
    rng = np.random.default_rng(SEED + 1)
    cfg = parse_config(
        {
            "encoder": {"kind": "hash", "dim": DIM},
            "hot": {"max_bytes": 256 * HOT_ENTRY},  # tiny: 256 entries
            "warm": {"path": str(tmp / "stream-warm")},  # defaults: float32, durable
            "policy": {"seed": 1},
        }
    )
    seen: list[str] = []
    next_id = 0
    lat = []
    repeats = 0
    with TierCache(cfg, encoder=HashEncoder(DIM)) as cache:
        for _ in range(p.stream_batches):
            batch, new = [], []
            for _ in range(p.stream_size):
                if seen and rng.random() < 0.7:
                    batch.append(seen[int(rng.integers(0, len(seen)))].encode().decode())
                    repeats += 1
                else:
                    t = f"stream text {next_id} about topic {next_id % 97}"
                    next_id += 1
                    batch.append(t)
                    new.append(t)
            seen.extend(new)  # repeats are drawn from earlier batches only
            t0 = time.perf_counter_ns()
            cache.embed_many(batch)
            lat.append(time.perf_counter_ns() - t0)
        counts = _tier_counts(cache.stats())
    ns = np.array(lat, dtype=np.int64)
    return {
        "batches": p.stream_batches,
        "batch_size": p.stream_size,
        "repeat_fraction": repeats / (p.stream_batches * p.stream_size),
        "distinct_texts": next_id,
        "latency_ms": pct(ns, 1e6),
        "tiers": counts,
        "config": "hot 256 entries; warm float32 durable (fsync per commit); wtinylfu",
    }


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        commit += " (+ uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "uncommitted"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "lmdb": lmdb.__version__,
        "diskcache": diskcache.__version__,
        "cachetools": cachetools.__version__,
        "tiercache": getattr(tiercache, "__version__", "?"),
        "commit": commit,
        "source_sha256": _source_digest(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _source_digest() -> str:
    """Digest of the tiercache sources measured (the tree may hold uncommitted edits)."""
    h = hashlib.sha256()
    for f in sorted(Path(tiercache.__file__).parent.rglob("*.py")):
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def _f(x: float | None, nd: int = 2) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _num(v: float) -> str:
    """A measured value for the Targets table: thousands grouped, else 3 significant."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _ratio(v: float, ref: float | None) -> str:
    return f"{v / ref:.2f}x" if ref else "–"


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    by = {r["name"]: r for r in res["stores"]}
    rows = []
    # latencies from the side-by-side rounds where the run has them (every target store
    # and its floor measured in the same machine phases), else each store's own
    pr = res.get("paired") or {}
    lat: dict[str, Any] = {n: pr.get(n, r) for n, r in by.items()}

    fl = res.get("floors")
    raw = lat.get("raw lmdb")
    dict_ = lat.get("dict")
    floor_of: dict[str, float | None] = {
        "hot_batch_p50_ms": fl["batch_ms"]["p50"] if fl else None,
        # py-lmdb itself: digest + one get + frombuffer, no verification
        "warm_batch_p50_ms": raw["batch_ms"]["p50"] if raw else None,
    }

    def add(what: str, key: str, value: float | None, floor: float | None = None) -> None:
        limit, unit = TARGETS[key]
        ok = value is not None and (value >= limit if key in AT_LEAST else value <= limit)
        rows.append(
            {
                "target": what,
                "limit": limit,
                "unit": unit,
                "value": value,
                "at_least": key in AT_LEAST,
                "met": ok,
                "floor": floor if floor is not None else floor_of.get(key),
            }
        )

    for dist in lat[REF_HOT]["get_us"]:
        hot_floor = None
        if fl and dict_ and dist in dict_["get_us"]:  # the same key distribution's dict
            # an exact str-keyed in-RAM map timed like the stores, plus a row copy (in C)
            # and the policy's per-access update
            hot_floor = (
                dict_["get_us"][dist]["p50"] + fl["row_copy_us"] + fl.get("policy_update_us", 0.0)
            )
        add(
            f"hot single get p50 ({dist})",
            "hot_get_p50_us",
            lat[REF_HOT]["get_us"][dist]["p50"],
            hot_floor,
        )
    for name in (REF_WARM, "tiercache warm float16"):
        for dist in lat[name]["get_us"]:
            add(
                f"{name.replace('tiercache ', '')} single get p50 ({dist})",
                "warm_get_p50_us",
                lat[name]["get_us"][dist]["p50"],
                raw["get_us"][dist]["p50"] if raw and dist in raw["get_us"] else None,
            )
    warm_u = lat[REF_WARM]["get_us"]["uniform"]["p50"]
    warm_b = lat[REF_WARM]["batch_ms"]["p50"]
    # a ratio's floor: the ratio raw py-lmdb itself reaches against the same peer
    raw_u = raw["get_us"]["uniform"]["p50"] if raw else None
    raw_b = raw["batch_ms"]["p50"] if raw else None
    if "diskcache" in lat:
        dc = lat["diskcache"]["get_us"]["uniform"]["p50"]
        add(
            "warm f32 single get vs diskcache (uniform p50)",
            "x_diskcache",
            dc / warm_u,
            dc / raw_u if raw_u else None,
        )
    rv = lat.get(REDISVL)
    if rv is not None:
        rv_u, rv_b = rv["get_us"]["uniform"]["p50"], rv["batch_ms"]["p50"]
        add(
            "warm f32 single get vs RedisVL get (uniform p50)",
            "x_redisvl_get",
            rv_u / warm_u,
            rv_u / raw_u if raw_u else None,
        )
        add(
            f"warm f32 batch({BATCH}) vs RedisVL mget (p50)",
            "x_redisvl_mget",
            rv_b / warm_b,
            rv_b / raw_b if raw_b else None,
        )
    add(f"hot batch({BATCH}) p50", "hot_batch_p50_ms", lat[REF_HOT]["batch_ms"]["p50"])
    for name in (REF_WARM, "tiercache warm float16"):
        add(
            f"{name.replace('tiercache ', '')} batch({BATCH}) p50",
            "warm_batch_p50_ms",
            lat[name]["batch_ms"]["p50"],
        )
    fp = by[REF_WARM]["footprint"]
    add("warm float32 bytes/vector (B-tree pages)", "warm_bytes_ratio", fp["bytes"] / PAYLOAD)
    add(
        "warm float32 bytes/vector (data.mdb on disk)",
        "warm_bytes_ratio",
        fp["file_bytes"] / PAYLOAD,
    )
    add(
        "warm float16 bytes/vector (B-tree pages)",
        "warm16_bytes_ratio",
        by["tiercache warm float16"]["footprint"]["bytes"] / PAYLOAD,
    )
    if "codecs" in res:
        add("float16 round trip, min cosine", "cos_float16", res["codecs"]["float16"]["min"])
        add("int8 round trip, min cosine", "cos_int8", res["codecs"]["int8"]["min"])
    if "bulk" in res:
        add("bulk precompute into warm (fast)", "bulk_per_s", res["bulk"]["fast"]["vectors_per_s"])
    if res.get("cold"):
        add("cold path throughput vs sentence-transformers", "cold_ratio", res["cold"]["ratio"])
    for what, key, value in entrypoints.targets_of(res.get("entry_points") or {}):
        add(what, key, value)
    big = [r for r in (res.get("scale") or {}).get("rows", []) if r["n"] >= 3_000_000]
    if big:
        add(
            "warm embed at 3 M stored vectors vs raw py-lmdb get", "scale_ratio_3m", big[0]["ratio"]
        )
    fleet = (res.get("staleness") or {}).get("rows", {}).get("fleet")
    if fleet:
        add(
            "fleet invalidation staleness p99 (drop -> another host stops serving)",
            "staleness_p99",
            fleet["p99_ms"],
        )
    return rows


def render(res: dict[str, Any], plots: dict[str, str], out: Path) -> str:  # noqa: C901
    m, p = res["machine"], res["params"]
    stores = res["stores"]
    by = {r["name"]: r for r in stores}
    L = [
        "# Benchmarks",
        "",
        "Generated by `python bench/run.py --out docs/benchmarks.md` (`make bench`); "
        "do not edit by hand."
        + (" **Smoke run: tiny sizes, numbers are not meaningful.**" if res["smoke"] else ""),
        "",
        "## Machine",
        "",
        f"* {m['platform']}; CPU {m['cpu']}, {m['cores']} cores",
        f"* Python {m['python']}, numpy {m['numpy']}, lmdb {m['lmdb']}, "
        f"diskcache {m['diskcache']}, cachetools {m['cachetools']}",
        f"* git commit: {m['commit']}; tiercache sources sha256 {m['source_sha256']}; "
        f"date: {m['date']}",
        f"* load average when the run started: {m['loadavg']} (a shared machine: other "
        "processes may run beside the benchmark)",
        f"* N = {p['n']:,} vectors of {DIM}-d float32 (payload {PAYLOAD} B); "
        f"M = {p['m']:,} single gets per distribution; {p['batches']} batches of {BATCH}; "
        f"{p['sets']:,} single sets",
        "",
        "## Method",
        "",
        f"* Workload: N unit-norm random vectors (numpy `default_rng({SEED})`), keys "
        '`f"query number {i} about topic {i%97}"`. Lookup keys are drawn uniform and '
        "Zipf(1.0) (rank k with probability ∝ 1/k over all N keys, ranks mapped to a random "
        "permutation), fixed seed; the same draws for every store.",
        "* Every lookup uses a newly built `str` equal to the stored key (as if decoded from "
        "a request), so the string hash (and the blake2b digest, where a store uses one) is "
        "inside the timed region.",
        "* Each store is loaded (untimed), checked to return the right vector, then warmed up "
        f"with {p['warmup']:,} untimed single gets and 3 untimed batches. Disk stores live in "
        "a temporary directory on local disk and were just written (then `os.sync()` and 1 s "
        "of rest, so that no kernel writeback overlaps the timed gets), so their pages are "
        "in the OS page cache: warm numbers are page-cache hits, not SSD reads.",
        "* Single get / set: `time.perf_counter_ns()` immediately before and after one call "
        "of the adapter (`cache.embed(text)` for tiercache, `d[text]` for dict/LFUCache, "
        "read txn + get + `np.frombuffer(...).copy()` for raw LMDB, `cache.get(text)` + "
        "`np.frombuffer` for diskcache). Nothing else is inside the timed region. "
        f"Timer floor (empty call, median): {res['timer_floor_ns']:.0f} ns, not subtracted.",
        f"* Batch: {p['batches']} calls each returning a ({BATCH}, {DIM}) float32 matrix of "
        f"uniform random keys (`cache.embed_many(texts)`; `np.stack` of single gets for "
        "dict/LFUCache/diskcache; one read txn filling a preallocated matrix for raw LMDB).",
        f"* Set: {p['sets']:,} single sets of fresh keys (`cache.set(text, vec)`; the dict "
        "stores copy the vector; raw LMDB one write txn per set). tiercache warm and raw LMDB "
        "use no fsync (`durability: fast`, `sync=False`); diskcache runs with its defaults "
        "(SQLite WAL, synchronous=NORMAL).",
        "* Percentiles: `numpy.percentile` (linear interpolation) over all timed calls; "
        "`gc` stays enabled (a full `gc.collect()` runs before each timed loop).",
        "* Footprint: RAM stores: `tracemalloc` bytes still allocated after construction + "
        "load (key strings excluded: they are shared with the workload); tiercache hot "
        "includes its whole preallocated slab (1.1 N rows). Disk stores: B-tree/volume "
        "bytes (tiercache `stats()['tiers']['warm']['bytes']`, LMDB `env.stat()` pages, "
        "diskcache `volume()`) and allocated file blocks, each divided by N.",
        "* Stores: tiercache hot = hot tier holding all N, warm disabled, `HashEncoder(384)`; "
        "tiercache warm float32/float16 = hot disabled, LMDB warm tier, max_bytes 4 GiB; "
        "raw LMDB = 16-byte blake2b key → raw vector bytes, map 4 GiB, same flags as "
        "tiercache `fast`; diskcache stores raw bytes (no pickle).",
        "* Redis stores ("
        + (
            f"redis-server {res['redis']['server']}, started by the bench on "
            "a free loopback port, persistence off; flushed before each store"
            if res.get("redis", {}).get("server")
            else "skipped: " + str(res.get("redis", {}).get("skipped"))
        )
        + "): "
        "redis-py GET/MGET = hand-rolled code (16-byte blake2b key → raw vector bytes; "
        "`GET` + `np.frombuffer`, `MGET` + one `frombuffer` of the joined values, `SET`); "
        "tiercache shared = hot and warm disabled, so every get is a shared-tier hit "
        "(`cache.embed` → digest → `GET` → checksum + decode). Footprint: Redis "
        "`used_memory` after the load minus before, per vector. RedisVL EmbeddingsCache "
        "(redisvl 0.28, `get`/`mget`/`set` with the embedding as a list of floats, as its "
        "API takes and returns them) on the same server.",
        f"* Side by side: the targets' stores and their floors ({', '.join(PAIRED)}) stay "
        f"open after their own measurement and are measured again in {PAIRED_ROUNDS} "
        "alternating rounds (each round: a fifth of each distribution's single gets and of "
        "the batches on every store, the order rotated per round; disk stores read through "
        "once first, untimed). This VM's speed drifts by up to 2x over minutes and each "
        "store's own measurement runs minutes apart from the others', so the Targets table "
        "uses the side-by-side numbers (the per-store tables above keep their own).",
        "",
    ]
    ref = {d: by[REF_HOT]["get_us"][d]["p50"] for d in by[REF_HOT]["get_us"]}
    refw = {d: by[REF_WARM]["get_us"][d]["p50"] for d in by[REF_WARM]["get_us"]}
    rows = []
    for dist in ref:
        for r in stores:
            g = r["get_us"][dist]
            rows.append(
                [r["name"], dist]
                + [_f(g[k]) for k in ("p50", "p90", "p99", "max")]
                + [_ratio(g["p50"], ref[dist]), _ratio(g["p50"], refw[dist])]
            )
    L += ["## Single get (µs)", ""]
    L += _table(
        [
            "store",
            "dist",
            "p50",
            "p90",
            "p99",
            "max",
            "p50 vs tiercache hot",
            "p50 vs tiercache warm f32",
        ],
        rows,
    )
    if "single_get" in plots:
        L += ["", f"![single get p50/p99]({plots['single_get']})"]
    rows = []
    bh, bw = by[REF_HOT]["batch_ms"]["p50"], by[REF_WARM]["batch_ms"]["p50"]
    for r in stores:
        b = r["batch_ms"]
        rows.append(
            [r["name"]]
            + [_f(b[k], 3) for k in ("p50", "p90", "p99", "max")]
            + [_ratio(b["p50"], bh), _ratio(b["p50"], bw)]
        )
    L += ["", f"## Batch get of {BATCH} keys → ({BATCH}, {DIM}) matrix (ms)", ""]
    L += _table(
        ["store", "p50", "p90", "p99", "max", "p50 vs tiercache hot", "p50 vs tiercache warm f32"],
        rows,
    )
    pr = res.get("paired") or {}
    if REF_WARM in pr:
        w0 = pr[REF_WARM]
        rows = []
        for name, v in pr.items():
            g, g0 = v["get_us"]["uniform"], w0["get_us"]["uniform"]
            rows.append(
                [
                    name,
                    _f(g["p50"]),
                    _f(g["p99"]),
                    _ratio(g["p50"], g0["p50"]),
                    _f(v["get_us"].get("zipf1.0", {}).get("p50")),
                    _f(v["batch_ms"]["p50"], 3),
                    _f(v["batch_ms"]["p99"], 3),
                    _ratio(v["batch_ms"]["p50"], w0["batch_ms"]["p50"]),
                    " / ".join(f"{x:.3g}" for x in v["rounds_get_p50_us"]),
                ]
            )
        L += [
            "",
            f"## Side by side: {len(pr)} stores in {PAIRED_ROUNDS} alternating rounds",
            "",
            "Single gets (µs) and batches of 1000 (ms) of the targets' stores and "
            "their floors, measured again in turn (see Method); the Targets table uses "
            "these. The last column is each round's uniform single-get p50: the "
            "machine's drift during the rounds.",
            "",
        ]
        L += _table(
            [
                "store",
                "uniform p50",
                "uniform p99",
                "uniform p50 vs warm f32",
                "zipf p50",
                "batch p50",
                "batch p99",
                "batch p50 vs warm f32",
                "uniform p50 per round",
            ],
            rows,
        )
    rows = [
        [r["name"]] + [_f(r["set_us"][k]) for k in ("p50", "p90", "p99", "max")] for r in stores
    ]
    L += ["", "## Single set of a fresh key (µs)", ""]
    L += _table(["store", "p50", "p90", "p99", "max"], rows)
    if "entry_points" in res:
        L += entrypoints.render_entry_points(res["entry_points"])
    if "staleness" in res:
        L += staleness.render(res["staleness"])
    if "scale" in res:
        L += scale.render(res["scale"])
    rows = []
    for r in stores:
        fp = r["footprint"]
        fb = fp.get("file_bytes")
        rows.append(
            [
                r["name"],
                r["medium"],
                _f(fp["bytes"], 0),
                f"{fp['bytes'] / PAYLOAD:.2f}x",
                _f(fb, 0) if fb is not None else "–",
                f"{fb / PAYLOAD:.2f}x" if fb is not None else "–",
            ]
        )
    L += ["", f"## Footprint per vector (payload {PAYLOAD} B)", ""]
    L += _table(
        ["store", "medium", "bytes/vector", "ratio to payload", "file bytes/vector", "file ratio"],
        rows,
    )
    if "footprint" in plots:
        L += ["", f"![footprint]({plots['footprint']})"]
    s = res["stream"]
    t = s["tiers"]
    L += [
        "",
        "## End to end: embed_many on a mixed stream",
        "",
        f"{s['batches']} batches of {s['batch_size']} texts, "
        f"{s['repeat_fraction']:.0%} of them repeats of earlier texts (uniform over those "
        f"seen), {s['distinct_texts']:,} distinct texts; fresh TierCache, {s['config']}, "
        "HashEncoder (about 10 µs a text, far cheaper than a real model).",
        "",
    ]
    L += _table(
        [
            "p50 ms",
            "p99 ms",
            "max ms",
            "hot hits",
            "warm hits",
            "warm misses",
            "encoder calls",
            "encoded texts",
        ],
        [
            [
                _f(s["latency_ms"]["p50"], 3),
                _f(s["latency_ms"]["p99"], 3),
                _f(s["latency_ms"]["max"], 3),
                str(t["hot"]["hits"]),
                str(t.get("warm", {}).get("hits")),
                str(t.get("warm", {}).get("misses")),
                str(t["encoder"]["calls"]),
                str(t["encoder"]["texts"]),
            ]
        ],
    )
    L += render_paths(res)

    def floor_cell(x: dict[str, Any]) -> str:
        f = x.get("floor")
        if f is None:
            return "–"
        if x.get("at_least"):  # a ratio: what raw py-lmdb reaches against the same peer
            reach = "reachable" if f >= x["limit"] else "**beyond the floor**"
        else:
            reach = "reachable" if f <= x["limit"] else "**below the floor**"
        return f"{f:,.3g} {x['unit']} ({reach})"

    rows = [
        [
            x["target"],
            f"{'≥' if x.get('at_least') else '≤'} {x['limit']:,} {x['unit']}",
            (f"{_num(x['value'])} {x['unit']}") if x["value"] is not None else "–",
            "met" if x["met"] else "**NOT met**",
            floor_cell(x),
        ]
        for x in res["targets"]
    ]
    L += [
        "",
        "## Profiles (cProfile, same run)",
        "",
        "The top functions by own time for 5,000 uniform single gets and 10 batches of "
        f"{BATCH} through each tiercache store, per get (or per batch). cProfile adds "
        "~0.5-1 µs to every Python-level call it sees, so read shares, not absolute "
        "values; the compiled hot path (`HotReader`) and the policy core appear as single "
        "lines.",
    ]
    for r in res["stores"]:
        prof = r.get("profile")
        if not prof:
            continue
        for kind, unit in (("single", "get"), ("batch", "batch")):
            L += ["", f"**{r['name']}, {kind}** (µs per {unit})", ""]
            if (
                sum(x["own_us_per_op"] for x in prof[kind]) < 0.25 * r["get_us"]["uniform"]["p50"]
                and kind == "single"
            ):
                if "warm" in r["name"]:
                    L += [
                        "One compiled call (`WarmReader`, hot tier off): cProfile sees only "
                        "what it calls back into Python (the 1-in-16 latency sample, the "
                        "drain of a full access buffer). Inside it: the key's BLAKE2b "
                        "digest, one py-lmdb read transaction with two gets (index entry, "
                        "then the packed segment), the XXH3 checksum over the record, the "
                        "copy (or float16/int8 conversion) into a new array, the lock and "
                        "the access record. Measured with `perf` on this VM, the LMDB "
                        "B-tree searches (`mdb_page_get`, `mdb_node_search`, key compares) "
                        "are the largest part."
                    ]
                else:
                    L += [
                        "One compiled call (`HotReader`): cProfile sees only what it calls "
                        "back into Python (the 1-in-16 latency sample, the drain of a full "
                        "access buffer). Its parts are in the floors below: dict probe, row "
                        "copy, and the policy's per-access update (`_core.drain`, ~0.6 µs "
                        "a key)."
                    ]
                continue
            L += _table(
                ["function", f"calls per {unit}", "own µs", "cumulative µs"],
                [
                    [
                        f"`{x['function']}`",
                        f"{x['calls_per_op']:.2f}",
                        f"{x['own_us_per_op']:.2f}",
                        f"{x['cum_us_per_op']:.2f}",
                    ]
                    for x in prof[kind]
                ],
            )
    L += ["", "## Targets", ""]
    if res.get("paired"):
        L += [
            "Latencies, ratios and the `dict`/`raw lmdb` floors below come from the "
            "side-by-side rounds (every side measured in the same machine phases).",
            "",
        ]
    L += _table(["target", "limit", "measured", "status", "floor, same run"], rows)
    fl = res.get("floors")
    if fl:
        L += [
            "",
            "Floors: what this machine allows any store with the same contract, "
            "measured in this run. Hot single: an exact `str`-keyed map timed like the "
            "stores (the `dict` row) plus copying the caller's row out of an N-row slab in "
            f"C ({fl['row_copy_us']:.3f} µs a row; a dict probe of a fresh string costs "
            f"{fl['dict_probe_us']:.3f} µs inside C) plus the admission policy's "
            "per-access update that a W-TinyLFU cache must make (the compiled drain: "
            f"{fl.get('policy_update_us', float('nan')):.3f} µs an access over N resident "
            "keys); hot batch: `map(dict.get)` + "
            f"`np.take` of {BATCH} rows, nothing else (p50 {fl['batch_ms']['p50']:.3f} ms). "
            "Warm: py-lmdb driven from Python (`raw lmdb` row: digest, one read "
            "transaction, one get, no verification), what a hand-rolled LMDB cache costs. "
            "tiercache's warm reads are compiled (`WarmReader`: the same py-lmdb calls "
            "made from C), so they can come in under this floor even with two gets, a "
            "checksum and the policy update per read; what remains is LMDB's own B-tree "
            "search. Ratios against a peer: the ratio raw py-lmdb itself reaches against "
            "that peer in the same measurements (beyond it, a target asks more than a "
            "hand-rolled py-lmdb cache gets). A limit below its floor (or a ratio beyond "
            "it) cannot be met on this machine by a Python implementation with that "
            "contract; a tiercache value above the floor is the price of the policy "
            "(sketch and segment updates per access), the TTL check, the lock and "
            "verification.",
        ]
    L += [
        "",
        "Where the time goes, why a target is not met and what would close the gap: "
        "[performance.md](performance.md).",
    ]
    return "\n".join(L) + "\n"


def render_paths(res: dict[str, Any]) -> list[str]:
    """The whole-path sections: codecs, bulk precompute, processes, 768-d, cold path."""
    L: list[str] = []
    if "codecs" in res:
        L += ["", "## Codec accuracy (stored and read back, unit vectors)", ""]
        L += _table(
            ["codec", "record bytes", "min cosine", "mean cosine"],
            [
                [k, str(v["record_bytes"]), f"{v['min']:.6f}", f"{v['mean']:.6f}"]
                for k, v in res["codecs"].items()
            ],
        )
    if "bulk" in res:
        b = res["bulk"]
        L += [
            "",
            f"## Bulk precompute into warm ({b['n']:,} vectors, `mset` of "
            f"{b['chunk']:,} per call, hot off)",
            "",
        ]
        L += _table(
            ["durability", "seconds", "vectors/s"],
            [
                [d, f"{b[d]['seconds']:.2f}", f"{b[d]['vectors_per_s']:,.0f}"]
                for d in ("fast", "durable")
            ],
        )
    if "concurrency" in res:
        c = res["concurrency"]
        base = c["runs"].get("1", {}).get("ops_per_s")
        L += [
            "",
            f"## Several processes reading one warm store ({c['n']:,} vectors, "
            f"single `embed` gets, hot off, {c['seconds']:.1f} s each, "
            f"{c['cores']} cores)",
            "",
        ]
        L += _table(
            ["processes", "gets/s in all", "vs 1 process", "encoder texts"],
            [
                [k, f"{v['ops_per_s']:,.0f}", _ratio(v["ops_per_s"], base), str(v["encoder_texts"])]
                for k, v in c["runs"].items()
            ],
        )
    if "warm768" in res:
        w = res["warm768"]
        L += [
            "",
            f"## 768-d float32 warm store ({w['n']:,} vectors, payload {w['payload']:,} B)",
            "",
        ]
        L += _table(
            [
                "single get p50 µs",
                "p90",
                "p99",
                "batch(1000) p50 ms",
                "bytes/vector",
                "ratio to payload",
            ],
            [
                [
                    _f(w["get_us"]["p50"]),
                    _f(w["get_us"]["p90"]),
                    _f(w["get_us"]["p99"]),
                    _f(w["batch_ms"]["p50"], 3),
                    _f(w["bytes_per_vector"], 0),
                    f"{w['bytes_per_vector'] / w['payload']:.2f}x",
                ]
            ],
        )
    cold = res.get("cold")
    if cold:
        L += [
            "",
            f"## Cold path: {cold['texts']:,} unique texts, batch size "
            f"{cold['batch_size']}, {cold['threads']} torch threads",
            "",
            f"all-MiniLM-L6-v2 on CPU; {cold['note']}. tiercache / sentence-transformers "
            f"throughput ratio: **{cold['ratio']:.2f}x**; largest difference between "
            f"their vectors: {cold['max_abs_diff']:.2e}. tiercache's own time outside "
            "its encoder calls (keys, lookups, stores not hidden behind the next batch): "
            f"{100 * cold.get('outside_encoder_share', float('nan')):.1f}% of its path "
            "(best round); the rest is the same `SentenceTransformer.encode` call on the "
            "same batches, so the ratio's spread is the machine's.",
            "",
        ]
        hits = cold.get("hits_per_s", {})
        L += _table(
            [
                "path",
                "texts/s, all misses (best round)",
                "rounds (s)",
                "texts/s, same texts again (all hits)",
            ],
            [
                [
                    k,
                    f"{v:,.0f}",
                    ", ".join(f"{x:.2f}" for x in cold["seconds"][k]),
                    f"{hits[k]:,.0f}" if k in hits else "–",
                ]
                for k, v in cold["texts_per_s"].items()
            ],
        )
    elif "cold" in res:
        L += ["", "## Cold path", "", "Not run (`--no-cold` or a smoke run)."]
    return L


def make_plots(res: dict[str, Any], plot_dir: Path, md_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    stores = res["stores"]
    names = [r["name"] for r in stores]
    out: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(10, 4.8))
    dists = list(stores[0]["get_us"])
    width = 0.8 / (2 * len(dists))
    x = np.arange(len(names))
    for j, dist in enumerate(dists):
        for k, q in enumerate(("p50", "p99")):
            off = (2 * j + k - (2 * len(dists) - 1) / 2) * width
            ax.bar(x + off, [r["get_us"][dist][q] for r in stores], width, label=f"{q} {dist}")
    ax.set_yscale("log")
    ax.set_ylabel("µs per get (log)")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_title(f"Single get latency, N={res['params']['n']:,}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path = plot_dir / "bench_single_get.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out["single_get"] = os.path.relpath(path, md_dir)

    fig, ax = plt.subplots(figsize=(10, 4.8))
    used = [r["footprint"]["bytes"] for r in stores]
    files = [r["footprint"].get("file_bytes", 0) or 0 for r in stores]
    ax.bar(x - 0.2, used, 0.4, label="bytes/vector (in use)")
    ax.bar(x + 0.2, files, 0.4, label="file bytes/vector (disk stores)")
    ax.axhline(PAYLOAD, color="k", ls="--", lw=1, label=f"payload {PAYLOAD} B")
    ax.axhline(1.3 * PAYLOAD, color="r", ls=":", lw=1, label="target 1.3x payload")
    ax.set_ylabel("bytes per vector")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_title("Footprint per 384-d float32 vector")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = plot_dir / "bench_footprint.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out["footprint"] = os.path.relpath(path, md_dir)
    return out


# --------------------------------------------------------------------------- main


class _Server:
    def __init__(self, proc: subprocess.Popen[bytes], version: str) -> None:
        self.proc, self.version = proc, version

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _start_redis(tmp: Path) -> _Server | None:
    """A redis-server on a free loopback port (persistence off), or None if not installed."""
    global REDIS_URL
    exe = shutil.which("redis-server")
    if exe is None:
        log("redis-server not installed: the Redis stores are skipped")
        return None
    import socket

    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            version = str(client.info("server")["redis_version"])
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    client.close()
    REDIS_URL = url
    log(f"redis-server {version} on {url}")
    return _Server(proc, version)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/benchmarks.md", help="markdown report")
    ap.add_argument("--n", type=int, default=None, help="vectors (default 100000)")
    ap.add_argument("--m", type=int, default=None, help="single gets per distribution")
    ap.add_argument("--smoke", action="store_true", help="tiny run: N=2000, M=500, 10 batches")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "latest.json"))
    ap.add_argument(
        "--plots",
        default=None,
        help="PNG directory (default: img/ beside --out; none with --smoke)",
    )
    ap.add_argument("--tmp", default=None, help="directory for the disk stores")
    ap.add_argument(
        "--render",
        metavar="JSON",
        default=None,
        help="measure nothing: rebuild the report (targets, tables, plots) from "
        "the JSON of an earlier run",
    )
    ap.add_argument(
        "--no-cold", action="store_true", help="skip the cold path (it loads the real model)"
    )
    a = ap.parse_args(argv)
    if a.render:
        res = json.loads(Path(a.render).read_text(encoding="utf-8"))
        res["targets"] = targets(res)
        out = Path(a.out).resolve()
        plot_dir = Path(a.plots) if a.plots else (None if res["smoke"] else out.parent / "img")
        plots = make_plots(res, plot_dir, out.parent) if plot_dir else {}
        out.write_text(render(res, plots, out), encoding="utf-8")
        log(f"rendered {out} from {a.render} (run of {res['machine']['date']})")
        return 0

    n = a.n or (2000 if a.smoke else 100_000)
    m = a.m or (500 if a.smoke else 20_000)
    p = Params(
        n=n,
        m=m,
        batches=10 if a.smoke else 200,
        sets=min(m, max(1, n // 10)),
        warmup=min(m, 2000),
        stream_batches=10 if a.smoke else 50,
        stream_size=100,
    )
    out = Path(a.out).resolve()
    plot_dir = Path(a.plots) if a.plots else (None if a.smoke else out.parent / "img")

    log(f"workload: N={p.n} M={p.m} batches={p.batches} sets={p.sets}")
    info = machine()  # before anything runs: load average, digest of the sources imported
    w = make_workload(p)
    tmp = Path(tempfile.mkdtemp(prefix="tiercache-bench-", dir=a.tmp))
    server: _Server | None = None
    t_start = time.perf_counter()
    try:
        res: dict[str, Any] = {
            "smoke": a.smoke,
            "params": p.__dict__,
            "machine": info,
            "timer_floor_ns": timer_floor_ns(),
            "stores": [],
        }
        server = _start_redis(tmp)  # stopped in the outer finally, after the cold path
        res["redis"] = {
            "server": server.version if server else None,
            "skipped": None if server else "redis-server is not installed",
        }
        kept: dict[str, Store] = {}
        try:
            for i, make in enumerate(STORES, 1):
                log(f"store {i}/{len(STORES)}")
                r = bench_store(make, w, p, tmp, kept)
                if r is not None:
                    res["stores"].append(r)
                gc.collect()
            res["paired"] = None
            if REF_WARM in kept and len(kept) > 1:
                log(f"side by side: {', '.join(kept)} in {PAIRED_ROUNDS} alternating rounds")
                res["paired"] = paired_rounds(kept, w, PAIRED_ROUNDS)
        finally:
            for st in kept.values():
                st.close()
        log("every entry point beside embed, in alternating rounds")
        res["entry_points"] = entrypoints.entry_points(
            p.n, tmp, log, rounds=2 if a.smoke else 5, redis_url=REDIS_URL
        )
        if REDIS_URL is not None:
            log("invalidation staleness: same host and fleet, real processes")
            res["staleness"] = staleness.staleness(
                40 if a.smoke else 200, tmp / "staleness", REDIS_URL, log
            )
        else:
            res["staleness"] = {"skipped": "no redis-server"}
        log("cost growth: warm embed vs raw py-lmdb get at growing store sizes")
        res["scale"] = scale.scale(
            [20_000] if a.smoke else [100_000, 1_000_000, 3_000_000],
            tmp / "scale",
            2 if a.smoke else 5,
            log,
        )
        log("memory floors (dict probe + row copy, in C)")
        res["floors"] = memory_floors(w)
        log("end-to-end stream")
        res["stream"] = bench_stream(p, tmp)
        log("codec accuracy")
        res["codecs"] = paths.codec_accuracy(n=200 if a.smoke else 5000)
        log("bulk precompute")
        res["bulk"] = paths.bulk_warm(2000 if a.smoke else 100_000, DIM, tmp, log)
        log("processes reading one warm store")
        res["concurrency"] = paths.concurrent_readers(
            p.n,
            DIM,
            tmp,
            log,
            procs=(1, 2) if a.smoke else (1, 2, 4),
            seconds=0.3 if a.smoke else 3.0,
        )
        log("768-d warm store")
        res["warm768"] = paths.warm_768(
            p.n // 2 if not a.smoke else 1000,
            tmp,
            log,
            gets=500 if a.smoke else 20_000,
            batches=3 if a.smoke else 50,
        )
        res["cold"] = None
        if not (a.smoke or a.no_cold):
            log("cold path (real model)")
            texts = list(
                dict.fromkeys(
                    (ROOT / "data" / "queries.txt").read_text(encoding="utf-8").splitlines()
                )
            )
            res["cold"] = paths.cold_path(
                [t for t in texts if t.strip()], 64, log, redis_url=REDIS_URL
            )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    res["elapsed_s"] = time.perf_counter() - t_start
    res["targets"] = targets(res)

    plots = make_plots(res, plot_dir, out.parent) if plot_dir else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(res, plots, out), encoding="utf-8")
    jpath = Path(a.json)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    jpath.write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    log(f"done in {res['elapsed_s']:.0f}s: {out} {jpath}" + (f" {plot_dir}" if plot_dir else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
