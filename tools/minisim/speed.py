import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import mini
import numpy as np

from tiercache import _core
from tiercache.sim.traces import zipf_trace

tr = np.asarray(zipf_trace(alpha=0.9, keys=100_000, requests=1_000_000, seed=0), dtype=np.int64)
for C in (1000, 10000):
    t0 = time.perf_counter()
    main = mini.engine(C, {}, 0).hot
    _core.replay(main, tr, None)
    tb = time.perf_counter() - t0
    R = max(1.0, C / mini.CFG["M"])
    thr = int((1 << 24) / R)
    mask = (mini.mix(tr) >> np.uint64(40)) < np.uint64(thr) if R > 1 else np.ones(len(tr), bool)
    sub = tr[mask]
    mc = max(3, round(C / R))
    t0 = time.perf_counter()
    for f in mini.CFG["fracs"]:
        s = mini.engine(mc, {"window": f, "adaptive": False}, 0).hot
        _core.replay(s, sub, None)
    ts = time.perf_counter() - t0
    print(
        f"C={C} main {1 / tb:.2f} M/s; shadows ({len(sub)} sampled, mini {mc}) {ts:.3f}s; combined {1 / (tb + ts):.2f} M/s"
    )
