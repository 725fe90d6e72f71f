"""Run the training set with the mini prototype (MINI env) or the default (BASE=1);
print synthetic 160 / real 12 / all 172 stats, OLTP 5/10% vs LRU, and per-family."""

import json
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(__file__))
from pathlib import Path

import mini

from tiercache.sim import suite as S

fams = os.environ.get("FAMS")
if not os.environ.get("BASE"):
    S.simulate = mini.mini_sim
params = json.loads(os.environ.get("PARAMS", "{}"))
cells = S.run_suite(
    os.environ.get("SPLIT", "train"),
    params=params,
    cache_dir=Path("out"),
    families=fams.split(",") if fams else None,
)


def st(cs):
    if not cs:
        return "-"
    s = S._stats(cs)
    return f"{100 * s['gap']:.1f}% / {-s['worst_deficit_pp']:+.2f} / {s['worst_vs_lru_pp']:+.2f}"


syn = [c for c in cells if c.family != "real"]
real = [c for c in cells if c.family == "real"]
ol = [c for c in cells if c.trace == "arc-oltp" and c.fraction in (0.05, 0.1)]
print("label", os.environ.get("MINI", "BASE" if os.environ.get("BASE") else ""))
print(
    "all",
    st(cells),
    "| syn",
    st(syn),
    "| real",
    st(real),
    "| oltp5/10 vsLRU",
    " / ".join(f"{c.vs_lru_pp():+.2f}" for c in ol),
)
for fam in S.FAMILIES:
    print("  ", fam, st([c for c in cells if c.family == fam]))
out = os.environ.get("SAVE")
if out:
    pickle.dump(
        [(c.trace, c.fraction, c.capacity, c.ours, c.lru, c.belady, c.best()) for c in cells],
        open(out, "wb"),
    )
