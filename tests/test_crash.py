"""Crash safety: a writer SIGKILLed at random moments never loses an acknowledged write.

A child process stores vectors with ``warm.durability: durable`` and prints each key after
``set`` returns (its acknowledgement). The parent kills it at a random moment, reopens the
store, and checks that every acknowledged vector is there and bit-exact and that no
record fails its checksum. (The long version of this test is issue #5's soak.)
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

CYCLES = 4
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


def test_sigkill_never_loses_an_acknowledged_write(tmp_path: Path) -> None:
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(textwrap.dedent(f"""
        encoder: {{kind: hash, dim: {DIM}}}
        hot: {{max_bytes: 16KiB}}
        warm: {{path: {tmp_path / "warm"}, durability: durable, max_bytes: 64MiB}}
    """))
    rng = random.Random(1234)
    acked: dict[int, int] = {}
    for cycle in range(CYCLES):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg_path), str(cycle)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        deadline = time.monotonic() + rng.uniform(1.5, 3.0)
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
        acked[cycle] = last
        print(f"cycle {cycle}: {last + 1} acknowledged batches")
        assert last >= 0, "the child acknowledged nothing; the test proves nothing"

        with TierCache(load_config(cfg_path), encoder=HashEncoder(DIM, role="document")) as c:
            for cyc, top in acked.items():
                texts = [f"c{cyc}-{i}" for i in range(top + 1)]
                entries = c.mget(texts)
                for i, e in enumerate(entries):
                    assert e is not None, f"acknowledged write c{cyc}-{i} lost"
                    assert np.array_equal(e.vector, expected(cyc, i))
            warm = c._warm
            assert warm is not None
            keys = list(warm.keys())
            ok = warm.get_many_with(keys, lambda b: codec.decode_raw(b, DIM) is not None)
            bad = [k for k, good in zip(keys, ok) if not good]
            assert len(keys) >= 2 * sum(top + 1 for top in acked.values())
            assert not bad, f"{len(bad)} records fail their checksum after a kill"
