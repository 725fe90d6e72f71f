"""4 processes x 8 threads of mixed get/mget/exists/set/mset/embed/drop on one warm
store: no errors, no wrong vectors (every vector checked against its source), budgets
held. ``make test`` runs 3 seconds; ``make soak`` (``TIERCACHE_SOAK=1``) 90 seconds,
figures in the soak summary."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tiercache import TierCache, load_config
from tiercache.encoders import HashEncoder

from . import soak

DIM = 16
SECONDS = soak.scale(3, 90)
WORKER = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    from tiercache import TierCache
    from tiercache.encoders import HashEncoder
    ref = HashEncoder({dim}, role="document")
    errors, ops, checked = [], [0] * 8, [0] * 8
    cache = TierCache.from_yaml(sys.argv[1])
    seed = int(sys.argv[2])
    stop = time.monotonic() + float(sys.argv[3])

    def work(t):
        rng = np.random.default_rng([seed, t])
        try:
            while time.monotonic() < stop:
                texts = [f"t{{int(x)}}" for x in rng.integers(0, 400, 4)]
                want = ref.encode(texts)
                op = int(rng.integers(0, 8))
                if op == 0:
                    got = cache.embed_many(texts)
                    assert np.array_equal(got, want), "embed_many returned a wrong vector"
                    checked[t] += 4
                elif op == 1:
                    assert np.array_equal(cache.embed(texts[0]), want[0]), "embed wrong"
                    checked[t] += 1
                elif op == 2:
                    cache.mset(list(zip(texts, want)))
                elif op == 3:
                    for e, w in zip(cache.mget(texts), want):
                        assert e is None or np.array_equal(e.vector, w), "mget wrong"
                        checked[t] += e is not None
                elif op == 4:
                    cache.drop(texts[0])
                elif op == 5:  # the single-key read path (C EntryGetter / ReadPath.get)
                    e = cache.get(texts[0])
                    assert e is None or np.array_equal(e.vector, want[0]), "get wrong"
                    checked[t] += e is not None
                elif op == 6:
                    assert cache.exists(texts[1]) in (True, False)
                else:  # the single-key write path (WritePath.write_one)
                    cache.set(texts[0], want[0])
                ops[t] += 1
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    s = cache.stats()["tiers"]
    cache.close()
    assert s["hot"]["entries"] <= s["hot"]["capacity"]
    evicted = s["warm"]["evictions"].get("capacity", 0)
    print("errors", len(errors), "ops", sum(ops), "evicted", evicted, "checked", sum(checked),
          *errors[:3], flush=True)
""").format(dim=DIM)


def test_four_processes_eight_threads_one_store(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        textwrap.dedent(f"""
        encoder: {{kind: hash, dim: {DIM}, batch_size: 4}}
        hot: {{max_bytes: 8KiB}}
        warm: {{path: {tmp_path / "warm"}, durability: fast, max_bytes: 48KiB}}
    """)
    )
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(cfg), str(p), str(SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(4)
    ]
    outs = [p.communicate(timeout=SECONDS + 120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        words = out.split()
        assert words[:2] == ["errors", "0"], out
        assert int(words[3]) > 50, out  # the workers really ran
    assert sum(int(out.split()[5]) for out, _ in outs) > 0  # the warm budget was enforced
    wrong = 0
    with TierCache(load_config(cfg), encoder=HashEncoder(DIM, role="document")) as c:
        s = c.stats()["tiers"]["warm"]
        assert s["entries"] <= s["capacity"]
        keys = list(c._warm.keys()) if c._warm else []
        assert len(keys) == s["entries"]
        texts = [f"t{i}" for i in range(400)]
        ref = HashEncoder(DIM, role="document").encode(texts)
        final = c.mget(texts)
        wrong = sum(
            1 for i, e in enumerate(final) if e is not None and not (e.vector == ref[i]).all()
        )
        assert wrong == 0
    soak.record(
        "concurrency",
        processes=4,
        threads_per_process=8,
        seconds=SECONDS,
        ops=sum(int(out.split()[3]) for out, _ in outs),
        records_checked=sum(int(out.split()[7]) for out, _ in outs)
        + sum(e is not None for e in final),
        warm_evictions=sum(int(out.split()[5]) for out, _ in outs),
        warm_entries=s["entries"],
        warm_capacity=s["capacity"],
        caller_errors=0,
        wrong_vectors=wrong,
        acked_lost=0,
        wall_seconds=round(time.monotonic() - t0, 1),
    )
