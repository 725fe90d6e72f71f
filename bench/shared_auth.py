"""The cost of sealed shared records (docs/reliability.md "Forged records").

    python bench/shared_auth.py [--redis-url redis://127.0.0.1:6379] [--n 2000]
        [--rounds 20] [--json PATH]

Shared-only caches (hot and warm off: every read is a Redis hit) on one redis-server,
dim 384 float32 (a 1,560-byte record), ``n`` entries each, one key prefix per mode:

* ``no tag`` — the record stored bare, as before the tags (the tier's seal swapped for a
  pass-through: the code path of the previous release);
* ``unkeyed`` — the default: an unkeyed BLAKE2b-128 tag binds the record to its key;
* ``keyed`` — ``shared.auth_key_file`` set: a keyed BLAKE2b-128 tag;
* ``keyed, previous`` — rotating, the records written under the previous key (every
  read verifies twice: the current key fails, the previous one passes: the worst case);

and the floor, hand-rolled redis-py ``GET`` + ``np.frombuffer`` (``MGET`` + one
``frombuffer`` of the joined values). Rounds alternate the modes; each round times every
mode's ``get`` over the same texts (one call each) and ``mget`` of 100. Reported: p50,
p90, p99 per mode in microseconds, and the tag alone (``RecordSeal.open`` of one record).
Without ``--redis-url`` a redis-server is started on a free loopback port.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tiercache import TierCache, parse_config  # noqa: E402
from tiercache.encoders import HashEncoder  # noqa: E402
from tiercache.tiers.redis import RecordSeal  # noqa: E402

DIM = 384
BATCH = 100
K_OLD = b"bench-previous-secret-0123456789abcdef"
K_NEW = b"bench-current-secret-fedcba9876543210"


class _NoSeal:
    """The pre-tag tier: values are bare records."""

    mode = "none"

    def seal(self, rkey: bytes, record: bytes) -> bytes:
        return record

    def open(self, rkey: bytes, value: bytes) -> bytes | None:
        return value

    def open_many(self, rkeys: list[bytes], values: list[bytes | None]) -> list[bytes | None]:
        return list(values)


def _cache(tmp: Path, url: str, mode: str) -> tuple[TierCache, Any]:
    """A shared-only cache for ``mode``; and the seal to put back after the load (None:
    keep the one it has)."""
    shared: dict[str, Any] = {"url": url, "key_prefix": f"bench-auth-{mode}:", "ttl": None}
    shared["timeout"] = "2s"
    if mode.startswith("keyed"):
        key = tmp / "current.key"
        key.write_bytes(K_NEW)
        shared["auth_key_file"] = str(key)
        if mode == "keyed, previous":
            prev = tmp / "previous.key"
            prev.write_bytes(K_OLD)
            shared["auth_key_previous_file"] = str(prev)
    cfg = parse_config(
        {
            "encoder": {"kind": "hash", "dim": DIM},
            "hot": {"enabled": False},
            "warm": {"enabled": False},
            "shared": shared,
        }
    )
    cache = TierCache(cfg, encoder=HashEncoder(DIM))
    tier: Any = cache._shared
    if mode == "no tag":
        tier._seal = _NoSeal()
    elif mode == "keyed, previous":  # load with the old key, read with new + old
        tier._seal, current = RecordSeal(K_OLD), tier._seal
        return cache, current
    return cache, None


def _pcts(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e6
    return {f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99)}


def run(url: str, n: int, rounds: int, open_n: int = 20000) -> dict[str, Any]:
    """Measure (see the module docstring); ``open_n``: calls per timing of the tag check."""
    import redis

    modes = ["no tag", "unkeyed", "keyed", "keyed, previous"]
    texts = [f"bench auth text {i}" for i in range(n)]
    rng = random.Random(1)
    vecs = np.random.default_rng(1).standard_normal((n, DIM)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        caches: dict[str, TierCache] = {}
        for m in modes:
            c, after_load = _cache(tmp, url, m)
            caches[m] = c
            c.clear()
            for i in range(0, n, 500):
                c.mset(list(zip(texts[i : i + 500], vecs[i : i + 500])))
            if after_load is not None:
                tier: Any = c._shared
                tier._seal = after_load
            e = c.get(texts[0])
            assert e is not None and e.tier == "shared", (m, e)
        r = redis.Redis.from_url(url)
        digest = caches["no tag"]._keys.digest
        rkeys = [b"bench-auth-raw:" + digest(t) for t in texts]
        r.mset(dict(zip(rkeys, (v.tobytes() for v in vecs))))

        def raw_get(i: int) -> Any:
            return np.frombuffer(r.get(rkeys[i]), dtype=np.float32)  # type: ignore[arg-type]

        def raw_mget(idx: list[int]) -> Any:
            vals = r.mget([rkeys[i] for i in idx])
            return np.frombuffer(b"".join(vals), dtype=np.float32).reshape(len(idx), DIM)

        gets: dict[str, Callable[[int], Any]] = {"redis-py": raw_get}
        mgets: dict[str, Callable[[list[int]], Any]] = {"redis-py": raw_mget}
        for m, c in caches.items():
            gets[m] = lambda i, c=c: c.get(texts[i])
            mgets[m] = lambda idx, c=c: c.mget([texts[i] for i in idx])
        lat_get: dict[str, list[float]] = {k: [] for k in gets}
        lat_mget: dict[str, list[float]] = {k: [] for k in gets}
        per_round = min(n, 500)
        for _ in range(rounds):
            order = list(gets)
            rng.shuffle(order)
            sample = rng.sample(range(n), per_round)
            batches = [rng.sample(range(n), min(BATCH, n)) for _ in range(20)]
            for name in order:
                fn = gets[name]
                out = lat_get[name]
                for i in sample:
                    t0 = time.perf_counter()
                    fn(i)
                    out.append(time.perf_counter() - t0)
                fb = mgets[name]
                outb = lat_mget[name]
                for b in batches:
                    t0 = time.perf_counter()
                    fb(b)
                    outb.append(time.perf_counter() - t0)
        for m, c in caches.items():
            sh = c.stats()["tiers"]["shared"]
            assert sh["forged"] == 0 and sh["misses"] == 0, (m, sh)
            c.clear()
            c.close()
        r.delete(*rkeys)
        r.close()
    rec = vecs[0].tobytes() + bytes(24)
    rkey = b"bench-auth-keyed:" + b"0" * 32
    seal_cost = {}
    for name, seal in (
        ("unkeyed", RecordSeal()),
        ("keyed", RecordSeal(K_NEW)),
        ("keyed, previous", RecordSeal(K_NEW, K_OLD)),
    ):
        value = (RecordSeal(K_OLD) if name == "keyed, previous" else seal).seal(rkey, rec)
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(open_n):
                seal.open(rkey, value)
            best.append((time.perf_counter() - t0) / open_n)
        seal_cost[name] = min(best) * 1e6
    return {
        "n": n,
        "rounds": rounds,
        "dim": DIM,
        "record_bytes": len(rec),
        "get_us": {k: _pcts(v) for k, v in lat_get.items()},
        "mget100_us": {k: _pcts(v) for k, v in lat_mget.items()},
        "open_one_record_us": seal_cost,
    }


def _table(res: dict[str, Any]) -> str:
    lines = [
        f"dim {res['dim']} float32 ({res['record_bytes']}-byte record), {res['n']} keys, "
        f"{res['rounds']} alternating rounds; microseconds",
        "",
        "| mode | get p50 | get p90 | get p99 | get p50 / redis-py | mget 100 p50 | mget p99 "
        "| mget p50 / redis-py |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    g0 = res["get_us"]["redis-py"]["p50"]
    m0 = res["mget100_us"]["redis-py"]["p50"]
    for name in res["get_us"]:
        g, m = res["get_us"][name], res["mget100_us"][name]
        lines.append(
            f"| {name} | {g['p50']:.1f} | {g['p90']:.1f} | {g['p99']:.1f} | "
            f"{g['p50'] / g0:.2f}x | {m['p50']:.0f} | {m['p99']:.0f} | {m['p50'] / m0:.2f}x |"
        )
    lines.append("")
    lines.append(
        "tag check of one record (RecordSeal.open, best of 5): "
        + ", ".join(f"{k} {v:.2f} us" for k, v in res["open_one_record_us"].items())
    )
    return "\n".join(lines)


def _start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed; give --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    proc = subprocess.Popen(
        [*args, "no", "--dir", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.redis_url
        if url is None:
            proc, url = _start_redis(tmp)
        try:
            res = run(url, args.n, args.rounds)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    res["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(_table(res))
    print(f"load average at the end: {res['loadavg']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
