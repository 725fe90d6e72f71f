"""Prototype: window chosen by miniature simulation (not shipped). Monkeypatches the
suite's simulate with a chunked replay: the main cache (climber frozen) plus K shadow
W-TinyLFU caches with fixed windows on a hash-sampled sub-trace."""

import json
import os
import sys

import numpy as np

from tiercache import _core
from tiercache.policy import PolicyEngine, default_hasher
from tiercache.sim import suite as S
from tiercache.sim.simulate import SimResult, _hash_many

CFG = dict(
    fracs=[0.01, 0.05, 0.1, 0.2, 0.4],
    M=512,
    N=1000,
    decay=0.5,
    margin=0.0,
    freeze=True,
    smooth=1.0,
    start=None,
    minC=0,
    shiftreset=0,
)
CFG.update(json.loads(os.environ.get("MINI", "{}")))
STATS = []


def mix(a):
    z = a.astype(np.uint64) ^ np.uint64(0x5DEECE66D)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def engine(cap, params, seed):
    return PolicyEngine(
        hot_capacity=cap,
        warm_capacity=0,
        policy="wtinylfu",
        params=params,
        seed=seed,
        hasher=default_hasher,
        hasher_many=_hash_many,
        access_buffer=1024,
    )


def mini_sim(trace, *, capacity, policy="wtinylfu", params=None, seed=0):
    params = dict(params or {})
    C = capacity
    cfg = CFG
    arr = np.ascontiguousarray(trace, dtype=np.int64)
    if C < max(3, cfg["minC"]):
        r = engine(C, params, seed).hot
        req, hits, *_ = _core.replay(r, arr, None)
        return SimResult("w", C, req, hits, req - hits, 0, 0, 0)
    mp = dict(params)
    if cfg["freeze"]:
        mp["step"] = 1e-9
    if cfg["start"] is not None:
        mp["window"] = cfg["start"]
    main = engine(C, mp, seed).hot
    R = max(1.0, C / cfg["M"])
    thr = int((1 << 24) / R)
    mask = (mix(arr) >> np.uint64(40)) < np.uint64(thr) if R > 1 else np.ones(len(arr), bool)
    mc = max(3, round(C / R))
    fr = cfg["fracs"]
    sh = [engine(mc, {**params, "window": f, "adaptive": False}, seed).hot for f in fr]
    idx = np.flatnonzero(mask)
    N = cfg["N"]
    bounds = list(idx[N - 1 :: N] + 1) + [len(arr)]
    score = np.zeros(len(fr))
    cur_f = mp.get("window", 0.01)
    hits = 0
    a = 0
    moves = []
    nshift = 0
    for b in bounds:
        if b <= a:
            continue
        _, h, *_ = _core.replay(main, arr[a:b], None)
        hits += h
        if cfg["shiftreset"] and len(main.shifts) != nshift:
            nshift = len(main.shifts)
            score[:] = 0
            if cfg["shiftreset"] > 1:
                for s in sh:
                    for _ in range(3):
                        s.sketch._reset()
        sub = arr[a:b][mask[a:b]]
        for k, s in enumerate(sh):
            _, hk, *_ = _core.replay(s, sub, None)
            score[k] = cfg["decay"] * score[k] + hk
        a = b
        best = int(np.argmax(score))
        cur = min(range(len(fr)), key=lambda k: abs(fr[k] - cur_f))
        if score[best] > score[cur] * (1 + cfg["margin"]) and best != cur:
            tgt = fr[best]
            cur_f = cur_f + cfg["smooth"] * (tgt - cur_f)
            main.resize_window(round(cur_f * C))
            moves.append(round(cur_f, 3))
    STATS.append((C, mc, len(moves), moves[-5:]))
    return SimResult("mini", C, len(arr), hits, len(arr) - hits, 0, 0, 0)


if __name__ == "__main__":
    S.simulate = mini_sim
    if os.environ.get("VERBOSE"):
        orig = S.SuiteCell
    sys.exit(S.main(sys.argv[1:]))
