"""Cost growth with the store's size: a warm ``embed`` beside a raw py-lmdb get, at
100 k, 1 M and 3 M stored vectors (issue #16).

    python bench/scale.py [--sizes 100000,1000000,3000000] [--rounds 5] [--json PATH]

For each size: a tiercache warm store (hot tier off, ``durability: fast``, float32, the
packed layout) filled by ``mset``, and a raw py-lmdb environment holding the same records
(16-byte blake2b digest -> record bytes of the same length, one plain key per vector)
filled in large write transactions. Both are read through once (page cache warm), then
timed in alternating rounds on the same random keys: ``embed(text)`` (the compiled warm
reader: digest, LMDB lookup, checksum, copy) against ``txn.get(digest)`` +
``np.frombuffer(...).copy()`` in a fresh read transaction. The ratio of p50s at 3 M is the
issue's target (≤ 1.3x). bench/run.py calls :func:`scale` for make bench.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for where in (ROOT, ROOT / "bench"):  # this checkout's tiercache; the bench's helpers
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))

import lmdb  # noqa: E402
from entrypoints import time_each  # noqa: E402  (bench/entrypoints.py, beside this file)

from tiercache import TierCache, codec, parse_config  # noqa: E402
from tiercache.encoders import HashEncoder  # noqa: E402

DIM = 384
RECORD = codec.record_size(DIM, "float32")
SECTION = "## Cost growth with the store's size (warm embed vs raw py-lmdb get)"
BLOCK = 10_000


def _text(i: int) -> str:
    return f"scale text {i} about topic {i % 97}"


def _fill(n: int, tmp: Path, log: Any) -> tuple[TierCache, lmdb.Environment]:
    cache = TierCache(
        parse_config(
            {
                "encoder": {"kind": "hash", "dim": DIM},
                "hot": {"enabled": False},
                "warm": {
                    "path": str(tmp / "tc"),
                    "max_bytes": max(2**30, 2 * n * RECORD),
                    "durability": "fast",
                },
            }
        ),
        encoder=HashEncoder(DIM),
    )
    raw = lmdb.open(
        str(tmp / "raw"),
        map_size=max(2**30, 4 * n * RECORD),
        sync=False,
        metasync=False,
        readahead=False,
        subdir=True,
    )
    rng = np.random.default_rng(n)
    pad = bytes(RECORD - 4 * DIM)
    t0 = time.perf_counter()
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        vecs = rng.standard_normal((hi - lo, DIM), dtype=np.float32)
        texts = [_text(i) for i in range(lo, hi)]
        cache.mset(list(zip(texts, vecs)))
        with raw.begin(write=True) as txn:
            for t, v in zip(texts, vecs):
                txn.put(hashlib.blake2b(t.encode(), digest_size=16).digest(), pad + v.tobytes())
        if lo and lo % 500_000 == 0:
            log(f"  scale: {lo:,}/{n:,} stored ({time.perf_counter() - t0:.0f}s)")
    return cache, raw


def one_size(n: int, tmp: Path, rounds: int, log: Any) -> dict[str, Any]:
    d = tmp / f"n{n}"
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    cache, raw = _fill(n, d, log)
    built = time.perf_counter() - t0
    try:
        # read everything once: both stores in the page cache
        for lo in range(0, n, BLOCK):
            cache.embed_many([_text(i) for i in range(lo, min(n, lo + BLOCK))])
        with raw.begin(buffers=True) as txn:
            for _ in txn.cursor():
                pass
        rng = np.random.default_rng(7)
        per = 20_000
        tc_p50: list[float] = []
        raw_p50: list[float] = []

        def raw_get(key: bytes) -> np.ndarray:
            with raw.begin(buffers=True) as txn:
                buf = txn.get(key)
                return np.frombuffer(buf, dtype=np.float32, offset=RECORD - 4 * DIM).copy()

        for r in range(rounds):
            idx = rng.integers(0, n, size=per)
            texts = [_text(int(i)) for i in idx]
            keys = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
            gc.collect()
            pair: list[tuple[list[float], Any, list[Any]]] = [
                (tc_p50, cache.embed, texts),
                (raw_p50, raw_get, keys),
            ]
            for into, fn, args in pair if r % 2 == 0 else pair[::-1]:
                into.append(float(np.percentile(time_each(fn, args), 50)))
        enc = cache.stats()["encoder"]["texts"]
        if enc:
            raise AssertionError(f"{enc} texts were encoded: a warm lookup missed")
        file_bytes = cache.stats()["tiers"]["warm"]["file_bytes"]
    finally:
        cache.close()
        raw.close()
        shutil.rmtree(d, ignore_errors=True)
    tc = float(np.median(tc_p50)) / 1e3
    rw = float(np.median(raw_p50)) / 1e3
    log(f"  scale: {n:,} vectors: embed p50 {tc:.2f} us, raw get p50 {rw:.2f} us ({tc / rw:.2f}x)")
    return {
        "n": n,
        "build_s": round(built, 1),
        "embed_p50_us": tc,
        "raw_p50_us": rw,
        "ratio": tc / rw,
        "warm_file_bytes": file_bytes,
    }


def scale(sizes: list[int], tmp: Path, rounds: int = 5, log: Any = print) -> dict[str, Any]:
    return {"rounds": rounds, "rows": [one_size(n, tmp, rounds, log) for n in sizes]}


def render(res: dict[str, Any]) -> list[str]:
    L = ["", SECTION, ""]
    if not res or not res.get("rows"):
        return L + ["Not run."]
    L += [
        "A tiercache warm store (hot off, float32, packed) and a raw py-lmdb environment "
        "holding the same records, both filled to the size and read through once; then "
        f"{res['rounds']} alternating rounds of 20,000 random keys each: `embed(text)` "
        "(digest + LMDB lookup + checksum + copy, in C) against a raw `txn.get(digest)` + "
        "`np.frombuffer(...).copy()` in a fresh read transaction. Median of per-round p50s. "
        "Target: ≤ 1.3x at 3 M.",
        "",
        "| stored vectors | embed p50 µs | raw get p50 µs | ratio | warm data.mdb GiB "
        "| built in s |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        L.append(
            f"| {r['n']:,} | {r['embed_p50_us']:.2f} | {r['raw_p50_us']:.2f} | "
            f"{r['ratio']:.2f}x | {r['warm_file_bytes'] / 2**30:.2f} | {r['build_s']} |"
        )
    return L


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,3000000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tmp", type=Path)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        res = scale(sizes, Path(d), args.rounds, lambda m: print(m, file=sys.stderr))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    print("\n".join(render(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
