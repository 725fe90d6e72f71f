"""Every public entry point of TierCache measured beside ``embed``, in one run (issue #16).

    python bench/entrypoints.py [--n 20000] [--rounds 5] [--smoke] [--redis-url URL]
                                [--json PATH] [--tmp DIR]

The machine's speed drifts by up to 2x over minutes, so only ratios measured in the same
run mean anything: every entry point is timed in alternating rounds (each round times a
slice of the same key picks on every entry point in turn, the order rotated per round) and
each ratio is the median over rounds of the entry point's per-round p50, divided by the
same for its reference (``embed``, ``embed_many``, a raw py-lmdb write transaction, one
thread, the policy with its reuse gate off). Caches are built through the public API
only. The markdown goes to stdout, progress to stderr; bench/run.py calls
:func:`entry_points` and :func:`render_entry_points` for its report.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import lmdb  # noqa: E402

from tiercache import TierCache, codec, parse_config  # noqa: E402
from tiercache.encoders import HashEncoder  # noqa: E402

DIM = 384
BATCH = 1000
SEED = 20240616
HOT_ENTRY = 4 * DIM + 256  # tiercache's hot budget per entry (row + bookkeeping)
WARM_MAX = 2**30  # warm.max_bytes of every cache here
RECORD = codec.record_size(DIM, "float32")  # bytes of one float32 record (header + row)
MSET_VECTORS = 10_000  # fresh vectors written by the timed msets, in blocks of BATCH
THREADS = 8
SECTION = "## Every entry point (one run, ratios against embed)"

# key -> (limit, unit, at least?): the issue's targets, each a ratio or a rate
EP_TARGETS: dict[str, tuple[float, str, bool]] = {
    "ep_get_hot": (2.0, "x embed", False),
    "ep_get_warm": (1.3, "x embed", False),
    "ep_exists": (1.2, "x embed", False),
    "ep_mexists": (1.2, "x embed_many", False),
    "ep_mget": (1.5, "x embed_many", False),
    "ep_lookup_many": (1.2, "x embed_many", False),
    "ep_get_by_key": (1.3, "x embed", False),
    "ep_set_fast": (3.0, "x raw py-lmdb txn", False),
    "ep_mset": (150_000, "vectors/s", True),
    "ep_durable_threads": (4.0, "x 1 thread", True),
    "ep_redisvl_set": (1.0, "x RedisVL set", False),
    "ep_shared_get": (1.2, "x redis-py GET", False),
    "ep_gate": (1.05, "x gate detached", False),
    "ep_reuse": (1.05, "x reuse gate off", False),
    "ep_sizing": (1.05, "x sizing: climb", False),
}


def lmdb_flags(durable: bool) -> dict[str, Any]:
    """The flags tiercache/tiers/lmdb.py (``_Env``) opens its environment with, minus the
    map size: ``durable`` fsyncs data and meta pages on every commit, ``fast`` neither."""
    return {
        "subdir": True,
        "max_dbs": 8,
        "max_readers": 126,
        "sync": durable,
        "metasync": durable,
        "readahead": False,
        "writemap": False,
        "lock": True,
        "mode": 0o600,
    }


def _log(msg: str) -> None:
    print(f"[entrypoints {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def text_of(i: int) -> str:
    return f"query number {i} about topic {i % 97}"


def fresh(texts: Sequence[str], idx: Sequence[int] | np.ndarray) -> list[str]:
    """New str objects equal to texts[i] (no cached str hash inside the timed calls)."""
    return [texts[i].encode().decode() for i in idx]


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def time_each(fn: Callable[[Any], Any], args: Sequence[Any]) -> np.ndarray:
    """Nanoseconds of each ``fn(arg)``; only the call sits between the two clock reads."""
    out = np.empty(len(args), dtype=np.int64)
    clock = time.perf_counter_ns
    for i, a in enumerate(args):
        t0 = clock()
        fn(a)
        out[i] = clock() - t0
    return out


def _config(
    tmp: Path,
    name: str,
    *,
    hot_entries: int = 0,
    durability: str = "fast",
    warm: bool = True,
    shared: str | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    cfg: dict[str, Any] = {
        "encoder": {"kind": "hash", "dim": DIM},
        "hot": (
            {"enabled": True, "max_bytes": int(hot_entries * HOT_ENTRY * 1.1)}
            if hot_entries
            else {"enabled": False}
        ),
        "warm": (
            {
                "enabled": True,
                "path": str(tmp / name),
                "codec": "float32",
                "max_bytes": WARM_MAX,
                "durability": durability,
            }
            if warm
            else {"enabled": False}
        ),
        "policy": {"seed": 1, **({"params": params} if params else {})},
    }
    if shared is not None:
        cfg["shared"] = {
            "url": shared,
            "ttl": None,
            "timeout": "2s",
            "key_prefix": "tiercache-bench-ep:",
        }
    return parse_config(cfg)


def _cache(cfg: Any) -> TierCache:
    return TierCache(cfg, encoder=HashEncoder(DIM))


def _digest(t: str) -> bytes:
    return hashlib.blake2b(t.encode(), digest_size=16).digest()


def _raw_put(env: lmdb.Environment) -> Callable[[tuple[str, np.ndarray]], None]:
    """A hand-rolled single write: digest the text, one write transaction, one put of a
    value as long as tiercache's record (zeroed header + the row's bytes), commit."""
    pad = bytes(RECORD - 4 * DIM)

    def put(tv: tuple[str, np.ndarray]) -> None:
        t, v = tv
        with env.begin(write=True) as txn:
            txn.put(hashlib.blake2b(t.encode(), digest_size=16).digest(), pad + v.tobytes())

    return put


def _raw_put_many(env: lmdb.Environment) -> Callable[[list[tuple[str, np.ndarray]]], None]:
    """A hand-rolled batch write: digest each text, one write transaction, one ``putmulti``
    of values as long as tiercache's records, commit (the floor under ``mset``'s warm
    write: LMDB's own cost of a block of random digests, nothing else)."""
    pad = bytes(RECORD - 4 * DIM)

    def put(items: list[tuple[str, np.ndarray]]) -> None:
        rows = [
            (hashlib.blake2b(t.encode(), digest_size=16).digest(), pad + v.tobytes())
            for t, v in items
        ]
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(rows)

    return put


def _layout_put(env: lmdb.Environment) -> Callable[[tuple[str, np.ndarray]], None]:
    """The py-lmdb calls tiercache's warm tier makes for one single ``set`` of a new key,
    written out by hand with no tiercache code (``LmdbTier.put_bounded``: the invalidation
    log's append, the two entry counts; ``stage_one``: the index probe, the plain record,
    the staging queue of single writes): the floor of the store's layout in Python, a
    lower bound (the packing that one set in K does is left out)."""
    pad = bytes(RECORD - 4 * DIM)
    records, index, meta = (env.open_db(name) for name in (b"records", b"index", b"meta"))
    entry = bytes(48)  # about the size of a one-key invalidation entry
    slots = 18 * 16  # a staging queue of 18 digests, then it is packed (and emptied here)

    def put(tv: tuple[str, np.ndarray]) -> None:
        t, v = tv
        key = hashlib.blake2b(t.encode(), digest_size=16).digest()
        txn = env.begin(write=True)
        raw = txn.get(b"iv#", None, meta)
        seq = (int.from_bytes(raw, "big") if raw else 0) + 1
        txn.put(b"iv#", seq.to_bytes(8, "big"), True, True, False, meta)
        txn.put(b"iv:" + seq.to_bytes(8, "big"), entry, True, True, False, meta)
        if seq > 4096:
            txn.delete(b"iv:" + (seq - 4096).to_bytes(8, "big"), db=meta)
        txn.stat(records)
        txn.stat(index)
        txn.get(key, None, index)
        txn.put(key, pad + v.tobytes(), True, True, False, records)
        queued = txn.get(b"pk:stage", None, meta)
        queued = key if queued is None else bytes(queued) + key
        if len(queued) < slots:
            txn.put(b"pk:stage", queued, True, True, False, meta)
        else:
            txn.delete(b"pk:stage", db=meta)
        txn.commit()

    return put


def _group_rate(
    cache: TierCache, threads: int, seconds: float, tag: str, vectors: np.ndarray
) -> float:
    """Single ``set`` calls of fresh keys per second, ``threads`` threads for ``seconds``."""
    barrier = threading.Barrier(threads + 1)
    counts = [0] * threads
    errors: list[BaseException] = []
    deadline = [0.0]

    def work(j: int) -> None:
        v = vectors[j % len(vectors)]
        clock = time.perf_counter
        i = 0
        barrier.wait()
        try:
            while clock() < deadline[0]:
                cache.set(f"group {tag} thread {j} set {i}", v)
                i += 1
        except BaseException as exc:  # reported after the join
            errors.append(exc)
        counts[j] = i

    pool = [threading.Thread(target=work, args=(j,), daemon=True) for j in range(threads)]
    for th in pool:
        th.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    barrier.wait()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def _pct(ns: np.ndarray) -> dict[str, float]:
    q = np.percentile(ns, [50, 90, 99]) / 1e3
    return {
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": float(ns.max() / 1e3),
    }


@dataclass
class Probe:
    """One measured entry point. ``run(r)`` times round r's slice: ns per call (latency
    probes) or a rate per second (``rate`` probes, one number per round)."""

    label: str  # unique: "<tier> <entry>"
    entry: str
    tier: str
    run: Callable[[int], Any]
    ref: str | None = None  # label of the probe it is divided by
    target: str | None = None  # key in EP_TARGETS
    rate: str | None = None  # unit of a rate probe ("sets/s"), None for a latency probe
    per: int = 0  # a latency probe whose calls each move ``per`` vectors: also a rate


# --------------------------------------------------------------------------- measure


def entry_points(  # noqa: C901
    n: int, tmp: Path, log: Callable[[str], None], *, rounds: int = 5, redis_url: str | None = None
) -> dict[str, Any]:
    """Load n keys into a "hot" cache (hot tier holding all of them, warm LMDB fast behind
    it), a "warm" cache (hot off, warm LMDB fast) and, when ``redis_url`` is given, a
    shared-only cache; then time every public entry point in ``rounds`` alternating
    rounds. Returns a JSON-ready dict (``rows``: one per entry point, see
    :func:`render_entry_points`)."""
    t_start = time.perf_counter()
    rounds = max(1, rounds)
    small = n <= 5000
    singles = max(200 * rounds, min(20_000, n))  # single calls per entry point, all rounds
    batches = max(2 * rounds, min(50, n // 400))  # calls of BATCH keys per batch probe
    sets = max(50 * rounds, min(2000, n // 10))  # fast single sets per set probe
    durable_sets = (25 if small else 100) * rounds
    mset_blocks = max(rounds, MSET_VECTORS // BATCH)
    group_s = 0.1 if small else 0.25  # seconds per thread-count per round
    rng = np.random.default_rng(SEED)
    texts = [text_of(i) for i in range(n)]
    vectors = unit_vectors(rng, n)
    pool = unit_vectors(rng, 256)  # vectors of the fresh keys written by the write probes
    single_idx = np.array_split(rng.integers(0, n, size=singles), rounds)
    batch_idx = [rng.integers(0, n, size=min(BATCH, n)) for _ in range(batches)]
    batch_rounds = np.array_split(np.arange(batches), rounds)
    block_rounds = np.array_split(np.arange(mset_blocks), rounds)
    items = list(zip(texts, vectors))
    hot_room = n + mset_blocks * BATCH + sets + 1000  # every key the hot cache will hold

    caches: list[TierCache] = []
    envs: list[lmdb.Environment] = []
    closers: list[Callable[[], None]] = []  # the shared probes' cleanup
    res: dict[str, Any] = {
        "n": n,
        "dim": DIM,
        "rounds": rounds,
        "singles": singles,
        "batches": batches,
        "batch": BATCH,
        "sets": sets,
        "durable_sets": durable_sets,
        "mset_vectors": mset_blocks * BATCH,
        "threads": THREADS,
        "group_seconds": group_s,
        "record_bytes": RECORD,
        "lmdb_flags": {
            k: {f: v for f, v in lmdb_flags(k == "durable").items() if f != "mode"}
            for k in ("fast", "durable")
        },
        "lmdb_map_size": 4 * WARM_MAX,
    }
    try:
        hot = _cache(_config(tmp, "ep-hot", hot_entries=hot_room))
        caches.append(hot)
        warm = _cache(_config(tmp, "ep-warm"))
        caches.append(warm)
        dur = _cache(_config(tmp, "ep-durable", durability="durable"))
        caches.append(dur)
        # a warm cache left empty but for the set probe's own writes, like the raw "fast"
        # environment it is divided by (the loaded caches' sets are divided by the raw
        # environment holding the same records: a write's page copies grow with the tree)
        empty = _cache(_config(tmp, "ep-empty"))
        caches.append(empty)
        t0 = time.perf_counter()
        for cache in (hot, warm):
            for i in range(0, n, 5000):
                cache.mset(items[i : i + 5000])
        log(
            f"  entry points: loaded {n} keys into the hot and warm caches in "
            f"{time.perf_counter() - t0:.1f}s"
        )
        # raw py-lmdb beside tiercache's own: the same flags and map size (tiercache's auto
        # map size is 4 * warm.max_bytes)
        raw_fast = lmdb.open(str(tmp / "ep-raw-fast"), map_size=4 * WARM_MAX, **lmdb_flags(False))
        envs.append(raw_fast)
        raw_dur = lmdb.open(str(tmp / "ep-raw-durable"), map_size=4 * WARM_MAX, **lmdb_flags(True))
        envs.append(raw_dur)
        # and one holding the same n records as the caches (a write's page copies grow with
        # the B-tree): the set target stays against the empty one, this row is beside it
        raw_full = lmdb.open(str(tmp / "ep-raw-full"), map_size=4 * WARM_MAX, **lmdb_flags(False))
        envs.append(raw_full)
        raw_layout = lmdb.open(
            str(tmp / "ep-raw-layout"), map_size=4 * WARM_MAX, **lmdb_flags(False)
        )
        envs.append(raw_layout)
        pad = bytes(RECORD - 4 * DIM)
        with raw_full.begin(write=True) as txn:
            for t, v in items:
                txn.put(_digest(t), pad + v.tobytes())

        # read everything through once, untimed (the hot cache's entries are offered to
        # hot by mset; a first embed promotes any that were not), then check the answers
        for cache in (hot, warm):
            for i in range(0, n, BATCH):
                cache.embed_many(texts[i : i + BATCH])
        probe = list(range(0, n, max(1, n // 200)))
        for cache, tier in ((hot, "hot"), (warm, "warm")):
            got = cache.mget([texts[i] for i in probe])
            bad = [
                i
                for i, e in zip(probe, got)
                if e is None or not np.allclose(e.vector, vectors[i], atol=1e-6)
            ]
            if bad:
                raise AssertionError(
                    f"{tier} cache: mget returned a wrong or no vector "
                    f"for {len(bad)} of {len(probe)} keys"
                )
            k = probe[len(probe) // 2]
            e = cache.get(texts[k])
            if (
                e is None
                or not np.allclose(e.vector, vectors[k], atol=1e-6)
                or not np.allclose(cache.embed(texts[k]), vectors[k], atol=1e-6)
                or not cache.exists(texts[k])
                or not all(cache.mexists([texts[k]]))
            ):
                raise AssertionError(f"{tier} cache: get/embed/exists disagree with mset")
            if tier == "hot":
                res["hot_share"] = sum(e is not None and e.tier == "hot" for e in got) / len(got)
        keyed = warm.get_by_key(warm.key(texts[probe[0]]))
        if keyed is None or not np.allclose(keyed.vector, vectors[probe[0]], atol=1e-6):
            raise AssertionError("warm cache: get_by_key returned a wrong or no vector")
        public = [warm.key(t) for t in texts]
        reuse_ab = _reuse_probes(
            n, tmp, hot_room, rounds, small, texts, items, batch_idx, batch_rounds, caches, log
        )
        counted = [hot, warm, *caches[-2:]]  # caches whose encoder calls are reported
        os.sync()  # no kernel writeback of the load's dirty pages inside the first round
        enc0 = {id(c): c.stats()["encoder"]["texts"] for c in counted}

        def singles_of(
            fn: Callable[[str], Any], keys: Sequence[str] = texts
        ) -> Callable[[int], np.ndarray]:
            return lambda r: time_each(fn, fresh(keys, single_idx[r]))

        def batches_of(fn: Callable[[list[str]], Any]) -> Callable[[int], np.ndarray]:
            return lambda r: time_each(fn, [fresh(texts, batch_idx[j]) for j in batch_rounds[r]])

        def fresh_pairs(tag: str, r: int, count: int) -> list[tuple[str, np.ndarray]]:
            lo = r * count
            return [
                (f"fresh {tag} {i} about topic {i % 89}", pool[i % len(pool)])
                for i in range(lo, lo + count)
            ]

        per_round_sets = max(1, sets // rounds)
        per_round_dur = max(1, durable_sets // rounds)

        def sets_of(
            fn: Callable[[tuple[str, np.ndarray]], Any], tag: str, count: int
        ) -> Callable[[int], np.ndarray]:
            return lambda r: time_each(fn, fresh_pairs(tag, r, count))

        def bulk_blocks(r: int, tag: str) -> list[list[tuple[str, np.ndarray]]]:
            blocks = []
            for b in block_rounds[r]:
                lo = int(b) * BATCH
                blocks.append(
                    [
                        (f"bulk {tag}text {i} about topic {i % 83}", pool[i % len(pool)])
                        for i in range(lo, lo + BATCH)
                    ]
                )
            return blocks

        def mset_blocks_of(r: int) -> np.ndarray:
            return time_each(hot.mset, bulk_blocks(r, ""))

        def raw_mset_blocks_of(r: int) -> np.ndarray:
            return time_each(_raw_put_many(raw_full), bulk_blocks(r, "raw "))

        inval_gate = hot._write.inval.gate

        def gate_ab(
            fn: Callable[[str], Any], parts: int = 8
        ) -> tuple[Callable[[int], np.ndarray], Callable[[int], np.ndarray]]:
            """The invalidation gate's A/B on ``fn``: (gate detached, gated) probe runs.

            Both sides run inside one probe slot, in ``parts`` alternating sub-blocks of
            the round's picks (the same keys on each side; which side goes first
            alternates), so the machine's drift and the probes' positions in the rotated
            round order fall on both alike. Two separate probes, each timed at its own
            place in the round, gave 0.67x to 1.28x between runs of the same code (an
            adjacent A/B of the same calls 0.99-1.02x). Detached, the compiled readers run
            as before the gate existed (its cost is one load of the sequence word)."""
            done: dict[int, tuple[np.ndarray, np.ndarray]] = {}

            def both(r: int) -> tuple[np.ndarray, np.ndarray]:
                if r not in done:
                    sides: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
                    for j, chunk in enumerate(np.array_split(single_idx[r], parts)):
                        for gated in (j % 2 == 0, j % 2 == 1):
                            hot._read.fast.set_gate(inval_gate if gated else None)
                            try:
                                sides[gated].append(time_each(fn, fresh(texts, chunk)))
                            finally:
                                hot._read.fast.set_gate(inval_gate)
                    done.clear()  # one round kept at a time
                    done[r] = (np.concatenate(sides[0]), np.concatenate(sides[1]))
                return done[r]

            return (lambda r: both(r)[0]), (lambda r: both(r)[1])

        embed_detached, embed_gated = gate_ab(hot.embed)
        get_detached, get_gated = gate_ab(hot.get)

        probes = [
            Probe("hot embed", "embed", "hot", singles_of(hot.embed)),
            Probe("hot embed ungated", "embed, gate detached (A/B)", "hot", embed_detached),
            Probe(
                "hot embed gated",
                "embed (invalidation gate, A/B)",
                "hot",
                embed_gated,
                "hot embed ungated",
                "ep_gate",
            ),
            Probe("hot get ungated", "get, gate detached (A/B)", "hot", get_detached),
            Probe(
                "hot get gated",
                "get (invalidation gate, A/B)",
                "hot",
                get_gated,
                "hot get ungated",
                "ep_gate",
            ),
            Probe("hot get", "get", "hot", singles_of(hot.get), "hot embed", "ep_get_hot"),
            Probe("hot exists", "exists", "hot", singles_of(hot.exists), "hot embed", "ep_exists"),
            Probe(
                "hot mexists1",
                "mexists([x])",
                "hot",
                singles_of(lambda t: hot.mexists([t])),
                "hot embed",
                "ep_exists",
            ),
            Probe("hot embed_many", f"embed_many({BATCH})", "hot", batches_of(hot.embed_many)),
            Probe(
                "hot mget",
                f"mget({BATCH})",
                "hot",
                batches_of(hot.mget),
                "hot embed_many",
                "ep_mget",
            ),
            Probe(
                "hot lookup_many",
                f"lookup_many({BATCH})",
                "hot",
                batches_of(hot.lookup_many),
                "hot embed_many",
                "ep_lookup_many",
            ),
            Probe("warm embed", "embed", "warm", singles_of(warm.embed)),
            Probe("warm get", "get", "warm", singles_of(warm.get), "warm embed", "ep_get_warm"),
            Probe(
                "warm exists", "exists", "warm", singles_of(warm.exists), "warm embed", "ep_exists"
            ),
            Probe(
                "warm get_by_key",
                "get_by_key(key)",
                "warm",
                singles_of(warm.get_by_key, public),
                "warm embed",
                "ep_get_by_key",
            ),
            Probe("warm embed_many", f"embed_many({BATCH})", "warm", batches_of(warm.embed_many)),
            Probe(
                "warm mget",
                f"mget({BATCH})",
                "warm",
                batches_of(warm.mget),
                "warm embed_many",
                "ep_mget",
            ),
            Probe(
                "warm lookup_many",
                f"lookup_many({BATCH})",
                "warm",
                batches_of(warm.lookup_many),
                "warm embed_many",
                "ep_lookup_many",
            ),
            Probe(
                "warm mexists",
                f"mexists({BATCH})",
                "warm",
                batches_of(warm.mexists),
                "warm embed_many",
                "ep_mexists",
            ),
            Probe(
                "raw fast",
                "py-lmdb write txn (raw)",
                "py-lmdb fast",
                sets_of(_raw_put(raw_fast), "raw", per_round_sets),
            ),
            Probe(
                "warm set empty",
                "set (store empty, as the raw one)",
                "warm fast",
                sets_of(lambda tv: empty.set(*tv), "empty", per_round_sets),
                "raw fast",
                "ep_set_fast",
            ),
            Probe(
                "raw fast layout",
                "py-lmdb calls of one set (raw, the layout's floor)",
                "py-lmdb fast",
                sets_of(_layout_put(raw_layout), "raw layout", per_round_sets),
                "raw fast",
            ),
            Probe(
                "raw fast full",
                f"py-lmdb write txn (raw, {n:,} stored)",
                "py-lmdb fast",
                sets_of(_raw_put(raw_full), "raw full", per_round_sets),
            ),
            Probe(
                "warm set",
                f"set ({n:,} stored, as the raw one)",
                "warm fast",
                sets_of(lambda tv: warm.set(*tv), "warm", per_round_sets),
                "raw fast full",
                "ep_set_fast",
            ),
            Probe(
                "hot set",
                f"set ({n:,} stored, as the raw one)",
                "hot + warm fast",
                sets_of(lambda tv: hot.set(*tv), "hot", per_round_sets),
                "raw fast full",
                "ep_set_fast",
            ),
            Probe(
                "raw durable",
                "py-lmdb write txn (raw)",
                "py-lmdb durable",
                sets_of(_raw_put(raw_dur), "raw", per_round_dur),
            ),
            Probe(
                "durable set",
                "set",
                "warm durable",
                sets_of(lambda tv: dur.set(*tv), "durable", per_round_dur),
                "raw durable",
            ),
            Probe(
                "raw mset",
                f"py-lmdb putmulti of {BATCH} (raw, {n:,} stored)",
                "py-lmdb fast",
                raw_mset_blocks_of,
                per=BATCH,
            ),
            Probe(
                "hot mset",
                f"mset({BATCH})",
                "hot + warm fast",
                mset_blocks_of,
                target="ep_mset",
                per=BATCH,
            ),
            Probe(
                "group 1",
                "set, 1 thread",
                "warm durable",
                lambda r: _group_rate(dur, 1, group_s, f"1-{r}", pool),
                rate="sets/s",
            ),
            Probe(
                f"group {THREADS}",
                f"set, {THREADS} threads",
                "warm durable",
                lambda r: _group_rate(dur, THREADS, group_s, f"{THREADS}-{r}", pool),
                ref="group 1",
                target="ep_durable_threads",
                rate="sets/s",
            ),
            *reuse_ab,
        ]
        res["redis"] = "skipped: no redis url"
        if redis_url is not None:
            probes += _shared_probes(n, tmp, redis_url, texts, items, single_idx, closers, res, log)

        got_lat: dict[str, list[np.ndarray]] = {p.label: [] for p in probes}
        got_rate: dict[str, list[float]] = {p.label: [] for p in probes}
        for r in range(rounds):
            t0 = time.perf_counter()
            k = r % len(probes)
            for p in probes[k:] + probes[:k]:
                gc.collect()
                out = p.run(r)
                if p.rate:
                    got_rate[p.label].append(float(out))
                else:
                    got_lat[p.label].append(out)
            log(f"  entry points: round {r + 1}/{rounds} in {time.perf_counter() - t0:.1f}s")
        res["encoded_texts"] = sum(c.stats()["encoder"]["texts"] - enc0[id(c)] for c in counted)
        res["rows"] = _rows(probes, got_lat, got_rate)
    finally:
        for close in closers:
            close()
        for c in caches:
            c.close()
        for env in envs:
            env.close()
    res["elapsed_s"] = time.perf_counter() - t_start
    log(f"  entry points: done in {res['elapsed_s']:.1f}s")
    return res


def _reuse_probes(
    n: int,
    tmp: Path,
    hot_room: int,
    rounds: int,
    small: bool,
    texts: list[str],
    items: list[tuple[str, np.ndarray]],
    batch_idx: list[np.ndarray],
    batch_rounds: list[np.ndarray],
    caches: list[TierCache],
    log: Callable[[str], None],
) -> list[Probe]:
    """Issue #17's A/B: the live default policy's hot-hit cost with its reuse gate
    (``policy.params.reuse``, default 4) against the same policy with ``reuse: 0``.

    Two caches built like the "hot" cache (hot tier sized for ``hot_room`` keys, warm LMDB
    fast behind it, ``policy.seed`` 1), one with the default policy and one with
    ``reuse: 0``, nothing else different, loaded with the same items by ``mset``, read
    through once, and then touched by these probes only (the "hot" cache also takes the
    write probes' fresh keys, which would make the two differ in more than the gate).

    What it covers: hot hits, all of them. A hot hit only appends its key to the policy's
    access buffer (the same C code either way); the gate's work on a hit (a clock tick and
    the node's last access, on top of the sketch increment and the segment move) happens
    when the buffer is drained, inside the call that fills it (``policy.access_buffer``,
    1,024 by default; ``HotReader`` calls the engine's drain, as in production). A per-call
    p50 never sees a drain, so each timed unit here is a block holding exactly one: the
    buffer is drained (untimed) before each round's run, then ``access_buffer`` single
    ``embed`` calls, or two ``embed_many(1000)`` calls (the second drains 2,000 accesses),
    are timed as one unit and reported per call. Not covered: misses and admissions (the
    gate's ghost lookups; every key here is resident, and the hot tier is never full, so
    the hill climber does not run on either side), which the simulator's replay speed
    measures (docs/simulator.md). The third cache, ``sizing: climb``, is the A/B of the
    default's window sizing: ``sizing: mini``'s shadows take their sampled accesses in the
    same drains, full or not, so the blocks hold their work.
    """
    on = _cache(_config(tmp, "ep-hot-reuse-on", hot_entries=hot_room))
    caches.append(on)
    off = _cache(_config(tmp, "ep-hot-reuse-off", hot_entries=hot_room, params={"reuse": 0}))
    caches.append(off)
    # the window sized by the hill climber (the default before issue #17 chose sizing: mini)
    climb = _cache(
        _config(tmp, "ep-hot-sizing-climb", hot_entries=hot_room, params={"sizing": "climb"})
    )
    caches.append(climb)
    t0 = time.perf_counter()
    for cache in (on, off, climb):
        for i in range(0, n, 5000):
            cache.mset(items[i : i + 5000])
        for i in range(0, n, BATCH):
            cache.embed_many(texts[i : i + BATCH])
    got = {
        name: getattr(c._engine.hot, "reuse_capacity", None)
        for name, c in (("on", on), ("off", off))
    }
    if not got["on"] or got["off"]:
        raise AssertionError(f"reuse A/B: ghost capacities {got}, want on > 0 and off 0")
    if climb._engine.hot.sizing != "climb" or on._engine.hot.sizing != "mini":
        raise AssertionError("sizing A/B: the caches do not differ in sizing as built")
    for cache in (on, off, climb):
        k = len(texts) // 2
        e = cache.get(texts[k])
        if e is None or e.tier != "hot" or not np.allclose(e.vector, items[k][1], atol=1e-6):
            raise AssertionError(f"reuse A/B: get returned {e!r}, not the hot row")
    log(
        f"  entry points: loaded {n} keys into the reuse A/B caches "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    drain = on.config.policy.access_buffer  # accesses per drain (the buffer's size)
    rng = np.random.default_rng(SEED + 17)  # its own picks: the other probes' are unchanged
    per_round = 8 if small else 16  # blocks per round
    idx = [rng.integers(0, n, size=(per_round, drain)) for _ in range(rounds)]

    def blocks(fn: Callable[[Any], Any], units: list[list[Any]]) -> np.ndarray:
        """ns per call of ``fn`` over each unit (a list of arguments), timed as one."""

        def unit(args: list[Any]) -> None:
            for a in args:
                fn(a)

        return time_each(unit, units) / len(units[0])

    def singles_of(cache: TierCache) -> Callable[[int], np.ndarray]:
        def run(r: int) -> np.ndarray:
            units = [fresh(texts, row) for row in idx[r]]
            cache._engine.drain()  # every unit then holds exactly one drain
            return blocks(cache.embed, units)

        return run

    def pairs_of(cache: TierCache) -> Callable[[int], np.ndarray]:
        def run(r: int) -> np.ndarray:
            j = [int(b) for b in batch_rounds[r]]
            units = [
                [fresh(texts, batch_idx[b]), fresh(texts, batch_idx[(b + 1) % len(batch_idx)])]
                for b in j
            ]
            cache._engine.drain()
            return blocks(cache.embed_many, units)

        return run

    return [
        Probe(
            "reuse off embed",
            f"embed, reuse gate off ({drain:,}-call blocks)",
            "hot",
            singles_of(off),
        ),
        Probe(
            "reuse on embed",
            f"embed, reuse gate on ({drain:,}-call blocks)",
            "hot",
            singles_of(on),
            "reuse off embed",
            "ep_reuse",
        ),
        Probe(
            "sizing climb embed",
            f"embed, sizing: climb ({drain:,}-call blocks)",
            "hot",
            singles_of(climb),
        ),
        Probe(
            "sizing mini embed",
            f"embed, sizing: mini, the default ({drain:,}-call blocks)",
            "hot",
            singles_of(on),
            "sizing climb embed",
            "ep_sizing",
        ),
        Probe(
            "reuse off embed_many",
            f"embed_many({BATCH}), reuse gate off (2-call blocks)",
            "hot",
            pairs_of(off),
        ),
        Probe(
            "reuse on embed_many",
            f"embed_many({BATCH}), reuse gate on (2-call blocks)",
            "hot",
            pairs_of(on),
            "reuse off embed_many",
            "ep_reuse",
        ),
    ]


def _shared_probes(
    n: int,
    tmp: Path,
    url: str,
    texts: list[str],
    items: list[tuple[str, np.ndarray]],
    single_idx: list[np.ndarray],
    closers: list[Callable[[], None]],
    res: dict[str, Any],
    log: Callable[[str], None],
) -> list[Probe]:
    """Shared tier (hot and warm off, so every get is a Redis hit) beside a hand-rolled
    redis-py GET + ``np.frombuffer``; keys under their own prefixes, removed at close."""
    try:
        import redis
    except ImportError:
        res["redis"] = "skipped: redis-py is not installed"
        return []
    r = redis.Redis.from_url(url)
    try:
        res["redis"] = f"redis-server {r.info('server')['redis_version']}"
    except redis.RedisError as exc:
        r.close()
        res["redis"] = f"skipped: {url} unreachable ({exc})"
        return []
    shared = _cache(_config(tmp, "ep-shared", warm=False, shared=url))
    prefix = b"tiercache-bench-ep-raw:"

    def key(t: str) -> bytes:
        return prefix + _digest(t)

    def close() -> None:
        try:
            shared.clear()  # every key under this cache's shared.key_prefix
            for i in range(0, n, 5000):
                r.delete(*[key(t) for t in texts[i : i + 5000]])
        finally:
            r.close()
            shared.close()

    closers.append(close)
    for i in range(0, n, 5000):
        part = items[i : i + 5000]
        shared.mset(part)
        r.mset({key(t): v.tobytes() for t, v in part})
    e = shared.get(texts[0])
    if e is None or e.tier != "shared":
        raise AssertionError(f"shared cache: get returned {e!r}, not a shared hit")
    log(f"  entry points: {res['redis']}: loaded {n} keys into the shared cache and raw")
    few = [a[: max(1, len(a) // 4)] for a in single_idx]  # a round trip costs ~50-100 µs

    def singles_of(fn: Callable[[str], Any]) -> Callable[[int], np.ndarray]:
        return lambda rr: time_each(fn, fresh(texts, few[rr]))

    def raw_get(t: str) -> np.ndarray:
        return np.frombuffer(cast(bytes, r.get(key(t))), dtype=np.float32).copy()

    probes = [
        Probe("raw redis", "redis-py GET + frombuffer (raw)", "redis-py", singles_of(raw_get)),
        Probe("shared get", "get", "shared", singles_of(shared.get), "raw redis", "ep_shared_get"),
        Probe("shared embed", "embed", "shared", singles_of(shared.embed), "raw redis"),
    ]
    return probes + _redisvl_set_probes(tmp, url, items, closers, log)


def _redisvl_set_probes(
    tmp: Path,
    url: str,
    items: list[tuple[str, np.ndarray]],
    closers: list[Callable[[], None]],
    log: Callable[[str], None],
) -> list[Probe]:
    """RedisVL 0.28's own ``EmbeddingsCache.set`` beside tiercache's drop-in
    (``tiercache.integrations.redisvl.EmbeddingsCache``, its local warm store under tmp) on
    the same server, fresh contents, the embedding as a list of floats (RedisVL's API)."""
    try:
        from redisvl.extensions.cache.embeddings import EmbeddingsCache as RedisVLCache

        from tiercache.integrations.redisvl import EmbeddingsCache as DropIn
    except ImportError:
        log("  entry points: redisvl is not installed: its set is skipped")
        return []
    theirs = RedisVLCache(name="tiercache-bench-ep-rv", redis_url=url)
    ours = DropIn(name="tiercache-bench-ep-dropin", redis_url=url, path=tmp / "ep-dropin")
    model = "all-MiniLM-L6-v2"
    vec = items[0][1].tolist()
    count = {"theirs": 0, "ours": 0}

    def close() -> None:
        theirs.clear()
        ours.clear()
        ours.close() if hasattr(ours, "close") else None

    closers.append(close)

    def sets_of(cache: Any, who: str) -> Callable[[int], np.ndarray]:
        def run(rr: int) -> np.ndarray:
            base = count[who]
            count[who] += 200
            names = [f"rv set {who} {rr} {base + i}" for i in range(200)]
            return time_each(lambda t: cache.set(t, model, vec), names)

        return run

    return [
        Probe("redisvl set", "RedisVL EmbeddingsCache.set", "RedisVL", sets_of(theirs, "theirs")),
        Probe(
            "drop-in set",
            "set (RedisVL drop-in)",
            "hot + warm fast + shared",
            sets_of(ours, "ours"),
            "redisvl set",
            "ep_redisvl_set",
        ),
    ]


def _rows(
    probes: list[Probe], lat: dict[str, list[np.ndarray]], rate: dict[str, list[float]]
) -> list[dict[str, Any]]:
    """One dict per probe: pooled quantiles (µs), the median of the rounds' p50s (µs) or
    of the rounds' rates, the ratio against the reference and the target's verdict."""
    by = {p.label: p for p in probes}
    mid: dict[str, float] = {}  # median over rounds of each round's p50 (µs), or rate
    rows = []
    for p in probes:
        row: dict[str, Any] = {
            "label": p.label,
            "entry": p.entry,
            "tier": p.tier,
            "ref": p.ref,
            "target": p.target,
        }
        if p.rate:
            mid[p.label] = float(np.median(rate[p.label]))
            row.update({"rounds": rate[p.label], "value": mid[p.label], "unit": p.rate})
        else:
            per_round = [float(np.median(a)) / 1e3 for a in lat[p.label]]
            mid[p.label] = float(np.median(per_round))
            row.update(_pct(np.concatenate(lat[p.label])))
            row.update(
                {
                    "calls": int(sum(len(a) for a in lat[p.label])),
                    "rounds_p50": per_round,
                    "p50": mid[p.label],
                }
            )
            if p.per:
                row.update({"value": p.per / (mid[p.label] / 1e6), "unit": "vectors/s"})
        rows.append(row)
    for row in rows:
        ref = row["ref"]
        if ref is not None:
            num, den = mid[row["label"]], mid[ref]
            row["ratio"] = num / den if den else None
            row["ref_entry"] = by[ref].entry
        t = row["target"]
        if t is not None:
            limit, _, at_least = EP_TARGETS[t]
            v = row["value"] if EP_TARGETS[t][1] == "vectors/s" else row.get("ratio")
            row["met"] = v is not None and (v >= limit if at_least else v <= limit)
    return rows


def targets_of(res: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    """(what, EP_TARGETS key, measured value) of every row with a target, for a Targets
    table (bench/run.py adds them to its own)."""
    out = []
    for row in res.get("rows", []):
        t = row.get("target")
        if t is None:
            continue
        unit = EP_TARGETS[t][1]
        value = row.get("value") if unit == "vectors/s" else row.get("ratio")
        ref = f" vs {row['ref_entry']}" if row.get("ref_entry") else ""
        out.append((f"{row['tier']} {row['entry']}{ref} (entry points, same rounds)", t, value))
    return out


# --------------------------------------------------------------------------- report


def _us(x: float | None) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}"


def _limit(key: str) -> str:
    limit, unit, at_least = EP_TARGETS[key]
    sep = "" if unit.startswith("x ") else " "
    return f"{'≥' if at_least else '≤'} {limit:,g}{sep}{unit}"


def render_entry_points(res: dict[str, Any]) -> list[str]:
    """Markdown lines: the section heading, a method paragraph and the table."""
    L = ["", SECTION, ""]
    if not res or "rows" not in res:
        return L + ["Not run."]
    fl = res["lmdb_flags"]["fast"]
    L += [
        f"N = {res['n']:,} keys of {res['dim']}-d float32, loaded with `mset` into a **hot** "
        "cache (hot tier sized for every key it will hold, warm LMDB `durability: fast` "
        "behind it; "
        f"{100 * res.get('hot_share', float('nan')):.0f}% of a sample of `get`s were "
        "served by hot) and a **warm** cache (hot off, warm LMDB fast); a third cache "
        "(hot off, warm `durable`) takes the durable writes. Public API only, "
        f"`HashEncoder({res['dim']})`; {res['encoded_texts']} texts were encoded during the "
        f"rounds (0: every read was a hit). {res['rounds']} alternating rounds: each "
        "round times a slice of the same uniform key picks on every entry point in turn "
        "(order rotated per round, `gc.collect()` before each), every call on newly built "
        "`str` keys, `time.perf_counter_ns()` around each call. Per entry point: "
        f"{res['singles']:,} single calls, {res['batches']} calls of {res['batch']:,} keys, "
        f"{res['sets']:,} fast and {res['durable_sets']:,} durable sets of fresh keys, "
        f"{res['mset_vectors']:,} fresh vectors by `mset` of {res['batch']:,}. "
        "**p50 is the median of the rounds' p50s** (p90/p99/max pool every call); a ratio "
        "divides two such medians of the same rounds, so the machine's drift cancels. "
        f"Raw py-lmdb: one write transaction putting a 16-byte blake2b key and a "
        f"{res['record_bytes']}-byte value (the size of tiercache's float32 record), "
        "digest included, on an environment opened with tiercache's own flags "
        f"(`sync={fl['sync']}, metasync={fl['metasync']}, readahead={fl['readahead']}, "
        f"writemap={fl['writemap']}, lock={fl['lock']}, max_dbs={fl['max_dbs']}`, map "
        f"{res['lmdb_map_size'] / 2**30:.0f} GiB; durable: `sync=True, metasync=True`), "
        "empty but for the probe's own writes; a second one holds the same "
        f"{res['n']:,} records as the caches (a write copies more B-tree pages in a larger "
        "store: 2x the empty one's time at 100,000). Each `set` row is divided by the raw "
        "write into a store of its own size: sets into a fourth cache (hot off, warm "
        "fast) left empty but for them, by the empty raw store; the loaded caches' sets "
        "by the loaded one. The layout's floor: the py-lmdb calls tiercache's warm tier "
        "makes for one set (invalidation log append, entry counts, index probe, plain "
        "record, staging queue), written out by hand, no tiercache code. "
        f"A raw `putmulti` of {res['batch']:,} records in one transaction into the loaded "
        "raw store is the floor beside `mset`. "
        f"mset: vectors/s = {res['batch']:,} / the block p50. Group: {res['threads']} "
        f"threads each doing single durable `set`s for {res['group_seconds']} s vs one "
        "thread, sets/s per round (median). Shared: "
        + (
            res["redis"]
            if res["redis"].startswith("skipped")
            else f"{res['redis']}, hot and warm off, beside redis-py `GET` + `np.frombuffer`"
        )
        + ". RedisVL drop-in: its defaults (hot, warm `durability: fast`, Redis), the "
        "embedding as a list of floats, beside RedisVL's own `EmbeddingsCache.set` on the "
        "same server. Reuse gate and window sizing (issue #17): three more caches built "
        "like the hot one and loaded alike, the default policy, `policy.params.reuse: 0` "
        "and `policy.params.sizing: climb` (the default's window sizing before issue #17), "
        "read only by their own rows; the gate's and the shadows' work on a hot hit is "
        "done when the policy's access "
        "buffer drains, inside the call that fills it, so each timed unit holds exactly "
        "one drain (the buffer emptied, untimed, before each round's run): a block of "
        "`access_buffer` (1,024) `embed`s or two `embed_many`s (the second drains 2,000 "
        "accesses), reported per call. Misses and admissions are not in it (every key is "
        "resident). Times in µs.",
        "",
        "| entry point | tier | p50 | p90 | p99 | max | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    refs = {r["ref"] for r in res["rows"] if r.get("ref")}
    for row in res["rows"]:
        if row.get("unit") == "sets/s":
            q = ["–"] * 4
        else:
            q = [_us(row[k]) for k in ("p50", "p90", "p99", "max")]
        ratio = "–"
        if row.get("ratio") is not None:
            ratio = f"{row['ratio']:.2f}x {row['ref_entry']}"
        elif row["label"] in refs:
            ratio = "ref."
        if row.get("unit") in ("vectors/s", "sets/s"):
            rate = f"{row['value']:,.0f} {row['unit']}"
            ratio = rate if ratio == "–" else f"{ratio} ({rate})"
            ratio = f"ref. ({rate})" if row["label"] in refs else ratio
        t = row.get("target")
        met = "–" if t is None else ("met" if row.get("met") else "**NOT met**")
        L.append(
            f"| {row['entry']} | {row['tier']} | "
            + " | ".join(q)
            + f" | {ratio} | {_limit(t) if t else '–'} | {met} |"
        )
    return L


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="keys (default 20000; smoke 2000)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5; smoke 2)")
    ap.add_argument("--smoke", action="store_true", help="tiny run: N=2000, 2 rounds")
    ap.add_argument(
        "--redis-url",
        default=None,
        help="measure the shared tier on this "
        "Redis (keys under tiercache-bench-ep prefixes, removed after)",
    )
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--tmp", default=None, help="directory for the LMDB stores")
    a = ap.parse_args(argv)
    n = a.n or (2000 if a.smoke else 20_000)
    rounds = a.rounds or (2 if a.smoke else 5)
    tmp = Path(tempfile.mkdtemp(prefix="tiercache-ep-", dir=a.tmp))
    try:
        res = entry_points(n, tmp, _log, rounds=rounds, redis_url=a.redis_url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2), encoding="utf-8")
    print("\n".join(render_entry_points(res)[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
