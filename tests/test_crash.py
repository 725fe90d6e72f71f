"""Crash safety: a writer SIGKILLed at random moments never loses an acknowledged write.

A child process stores vectors with ``warm.durability: durable`` and prints each batch
number after ``mset`` returns (its acknowledgement). The parent kills it at a random
moment, reopens the store, and checks that every acknowledged vector of every cycle so far
is there and bit-exact and that no record fails its checksum. ``make test``: 4 cycles;
``make soak`` (``TIERCACHE_SOAK=1``): 50 cycles, figures in the soak summary.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from tiercache import TierCache, codec, load_config
from tiercache.encoders import HashEncoder

from . import soak

CYCLES = soak.scale(4, 50)
DIM = 32

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from tiercache import TierCache
    cycle = int(sys.argv[2])
    with TierCache.from_yaml(sys.argv[1]) as c:
        i = 0
        while True:
            v = np.random.default_rng([cycle, i]).standard_normal({dim}).astype(np.float32)
            c.mset([(f"c{{cycle}}-{{i}}", v), (f"c{{cycle}}-{{i}}b", v[::-1].copy())])
            print(i, flush=True)
            i += 1
""").format(dim=DIM)


def expected(cycle: int, i: int) -> np.ndarray:
    return np.random.default_rng([cycle, i]).standard_normal(DIM).astype(np.float32)


def run_child(cfg_path: Path, cycle: int, seconds: float) -> int:
    """Start a writer, SIGKILL it after ``seconds``; the last acknowledged batch (-1: none)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg_path), str(cycle)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    deadline = time.monotonic() + seconds
    last = -1
    os.set_blocking(child.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.strip():
            last = int(line)
        else:
            time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    rest = child.stdout.read() or ""
    for line in rest.splitlines():  # acknowledgements already in the pipe
        if line.strip():
            last = int(line)
    return last


def test_sigkill_never_loses_an_acknowledged_write(tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(textwrap.dedent(f"""
        encoder: {{kind: hash, dim: {DIM}}}
        hot: {{max_bytes: 16KiB}}
        warm: {{path: {tmp_path / "warm"}, durability: durable, max_bytes: 256MiB}}
    """))
    rng = random.Random(1234)
    acked: dict[int, int] = {}
    lost = wrong = checked = scanned = bad_checksum = 0
    t_start = time.monotonic()
    try:
        for cycle in range(CYCLES):
            last = run_child(cfg_path, cycle, rng.uniform(1.5, 3.0))
            acked[cycle] = last
            print(f"cycle {cycle}: {last + 1} acknowledged batches")
            assert last >= 0, "the child acknowledged nothing; the test proves nothing"

            with TierCache(load_config(cfg_path),
                           encoder=HashEncoder(DIM, role="document")) as c:
                for cyc, top in acked.items():
                    texts = [f"c{cyc}-{i}" for i in range(top + 1)]
                    texts += [t + "b" for t in texts]
                    entries = c.mget(texts)
                    n = top + 1
                    for i, e in enumerate(entries):
                        checked += 1
                        if e is None:
                            lost += 1
                            continue
                        want = expected(cyc, i % n)
                        if i >= n:
                            want = want[::-1]
                        wrong += not np.array_equal(e.vector, want)
                warm = c._warm
                assert warm is not None
                keys = list(warm.keys())
                ok = warm.get_many_with(keys, lambda b: codec.decode_raw(b, DIM) is not None)
                scanned += len(keys)
                bad_checksum += sum(1 for good in ok if not good)
            assert lost == 0, f"{lost} acknowledged writes lost after cycle {cycle}"
            assert wrong == 0, f"{wrong} acknowledged writes read back different"
            assert bad_checksum == 0, f"{bad_checksum} records fail their checksum after a kill"
            assert len(keys) >= 2 * sum(top + 1 for top in acked.values())
    finally:
        soak.record(
            "crash", cycles=len(acked), faults_injected=len(acked),
            acked_batches=sum(t + 1 for t in acked.values()),
            records_checked=checked + scanned, acked_records_checked=checked,
            records_checksum_scanned=scanned, acked_lost=lost, wrong_vectors=wrong,
            bad_checksums=bad_checksum, seconds=round(time.monotonic() - t_start, 1),
            durability="durable", kill="SIGKILL at a uniform 1.5-3.0 s after start",
        )
