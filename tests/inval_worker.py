"""A cache in a separate worker process, driven by JSON lines (the invalidation tests).

``python -m tests.inval_worker ROOT SECTIONS_JSON`` opens ``TierCache(make_config(ROOT,
**sections), encoder=HashEncoder(DIM))`` and answers one JSON command per stdin line with
one JSON line on stdout (no pickle: vectors travel as lists of floats). Each worker is a
real process with its own hot tier, as a service's worker processes are; ROOT decides
whether two workers share a warm store (one host) or not (two hosts).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import DIM, make_config
from tiercache import TierCache
from tiercache.encoders import HashEncoder
from tiercache.errors import StoreError
from tiercache.results import ResultCache


def _vec(v: Any) -> list[float] | None:
    return None if v is None else [float(x) for x in np.asarray(v).ravel()]


def _loop(c: TierCache, texts: list[str], seconds: float, method: str) -> list[list[float]]:
    """Read ``texts`` round robin for ``seconds``: ``[t_start, text index, first
    component]`` per read (``time.monotonic`` is one clock for every process)."""
    out: list[list[float]] = []
    end = time.monotonic() + seconds
    read = getattr(c, method)
    i = 0
    while True:
        t0 = time.monotonic()
        if t0 >= end:
            return out
        j = i % len(texts)
        v = read(texts[j])
        if method == "get":
            v = None if v is None else v.vector
        out.append([t0, j, float(v[0]) if v is not None else float("nan")])
        i += 1


RESULTS = ResultCache()


def handle(c: TierCache, cmd: dict[str, Any]) -> Any:  # noqa: C901 - a command table
    op = cmd["op"]
    texts = cmd.get("texts", [])
    if op == "embed":
        return [_vec(c.embed(t)) for t in texts]
    if op == "embed_many":
        return [_vec(v) for v in c.embed_many(texts)]
    if op == "get":
        return [_vec(e.vector) if e is not None else None for e in (c.get(t) for t in texts)]
    if op == "mget":
        return [_vec(e.vector) if e is not None else None for e in c.mget(texts)]
    if op == "exists":
        return [c.exists(t) for t in texts]
    if op == "mexists":
        return c.mexists(texts)
    if op == "set":
        v = np.asarray(cmd["vec"], dtype=np.float32)
        meta = cmd.get("metadata")
        return c.set(cmd["text"], v, metadata=meta, tags=cmd.get("tags"), doc_id=cmd.get("doc_id"))
    if op == "mset":
        return c.mset([(t, np.asarray(v, dtype=np.float32)) for t, v in cmd["items"]])
    if op == "drop":
        return c.mdrop(texts)
    if op == "invalidate_tags":
        return c.invalidate_tags(cmd["tags"])
    if op == "event":
        return c.document_event(cmd["event"], cmd["id"], tags=cmd.get("tags"))
    if op == "drop_ids":
        return c.drop_ids(cmd["ids"])
    if op == "clear":
        c.clear()
        return None
    if op == "rc_set":  # a search result listing documents, in the attached ResultCache
        RESULTS.set(
            cmd["query"], cmd["result"], doc_ids=cmd.get("doc_ids", ()), tags=cmd.get("tags", ())
        )
        return None
    if op == "rc_get":
        return RESULTS.get(cmd["query"])
    if op == "wait_gone":  # poll get until None: the monotonic time it was seen, or None
        deadline = time.monotonic() + float(cmd.get("seconds", 5.0))
        while c.get(texts[0]) is not None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0001)
        return time.monotonic()
    if op == "hot_has":
        return [c._hot.slot(t) is not None for t in texts]
    if op == "loop":
        n = int(cmd.get("threads", 1))
        if n == 1:
            return _loop(c, texts, float(cmd["seconds"]), cmd.get("method", "embed"))
        outs: list[Any] = [None] * n  # a thread that raised leaves None: the test fails

        def run(i: int) -> None:
            outs[i] = _loop(c, texts, float(cmd["seconds"]), cmd.get("method", "embed"))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return outs
    if op == "writes":  # overwrite texts[0] with versions 1..n: [(version, t_returned)]
        done = []
        for n in range(1, int(cmd["n"]) + 1):
            c.set(texts[0], np.full(DIM, float(n), dtype=np.float32))
            done.append([n, time.monotonic()])
            time.sleep(float(cmd.get("pause", 0.001)))
        return done
    if op == "churn":  # random overwrites and drops of texts; the state they leave
        rng = np.random.default_rng(int(cmd["seed"]))
        want: dict[str, float | None] = {}
        for step in range(int(cmd["n"])):
            t = texts[int(rng.integers(len(texts)))]
            try:
                if rng.random() < 0.6:
                    c.set(t, np.full(DIM, float(step + 2), dtype=np.float32))
                    want[t] = float(step + 2)
                else:
                    want[t] = None
                    c.drop(t)
            except StoreError as exc:  # Redis down: local done, the rest queued
                assert "queued" in str(exc), exc
            time.sleep(float(cmd.get("pause", 0.005)))
        return want
    if op == "warm_state":  # the damaged-store machinery's view
        warm = c._warm
        assert warm is not None
        return {
            "sealed": warm.sealed,
            "quarantined": len(warm.quarantined),
            "switches": warm.switches,
        }
    if op == "manifest":  # the warm store's manifest (None while it is set aside)
        try:
            return c._warm.manifest() if c._warm is not None else None
        except StoreError:
            return None
    if op == "debug_warm":
        w = c._warm
        inval = c._write.inval
        return {
            "log_seq": w.log_seq(),
            "count": w.count(),
            "applied": inval.applied,
            "word": inval.gate.word,
            "seen": inval.gate.seen,
            "gen": w._gen,
            "ino": w._handle.ino if w._handle else None,
        }
    if op == "seal":  # report damage without any (a false alarm: the check finds none)
        assert c._warm is not None
        c._warm._seal(cmd.get("why", "a false alarm raised by the test"))
        return None
    if op == "stats":
        return c.stats()
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    root = Path(sys.argv[1])
    sections = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    c = TierCache(make_config(root, **sections), encoder=HashEncoder(DIM))
    c.attach(RESULTS)
    lock = threading.Lock()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            with lock:
                result = {"ok": handle(c, cmd)}
        except Exception as exc:  # reported to the test, which fails on it
            result = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result, default=str), flush=True)
    c.close()


if __name__ == "__main__":
    main()
