"""Invalidation across real worker processes sharing one warm store (issue: invalidation
reaches every process). Each worker is a separate Python process with its own hot tier
(tests/inval_worker.py); the guarantee: once an invalidating call returned in one process,
no read that starts afterwards in any process serves the old vector."""

from __future__ import annotations

import bisect
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import soak
from tests.conftest import DIM
from tiercache.encoders import HashEncoder

ROOT = Path(__file__).resolve().parent.parent


class Worker:
    """One worker process (see tests/inval_worker.py)."""

    def __init__(self, root: Path, **sections: Any) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.inval_worker", str(root), json.dumps(sections)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin, self.proc.stdout

    def ready(self) -> Worker:
        line = self._out.readline()
        assert json.loads(line) == {"ready": True}, line
        return self

    def send(self, op: str, **args: Any) -> None:
        self._in.write(json.dumps({"op": op, **args}) + "\n")
        self._in.flush()

    def result(self) -> Any:
        line = self._out.readline()
        assert line, f"worker exited with {self.proc.wait()}"
        reply = json.loads(line)
        assert "error" not in reply, reply["error"]
        return reply["ok"]

    def __call__(self, op: str, **args: Any) -> Any:
        self.send(op, **args)
        return self.result()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Any:
    started: list[Worker] = []

    def start(n: int, root: Path = tmp_path, **sections: Any) -> list[Worker]:
        ws = [Worker(root, **sections) for _ in range(n)]
        started.extend(ws)
        return [w.ready() for w in ws]

    yield start
    for w in started:
        w.close()


def vec(x: float) -> list[float]:
    return [x] * DIM


COMPUTED = {t: HashEncoder(DIM).encode([t])[0] for t in [f"t{i}" for i in range(10)]}


def check(ws: list[Worker], text: str, want: float | None) -> None:
    """Every worker, every read method: ``text`` holds vec(want), or nothing (None: get
    and exists say absent, embed recomputes the encoder's vector)."""
    for w in ws:
        got = {m: w(m, texts=[text])[0] for m in ("get", "mget", "exists", "mexists")}
        emb = w("embed", texts=[text])[0]
        many = w("embed_many", texts=[text, text])[0]
        if want is None:
            assert got == {"get": None, "mget": None, "exists": False, "mexists": False}
            assert np.allclose(emb, COMPUTED[text]) and np.allclose(many, COMPUTED[text])
            w("drop", texts=[text])  # recomputing stored it again: forget it for the next
        else:
            assert got["exists"] and got["mexists"]
            for v in (got["get"], got["mget"], emb, many):
                assert v == vec(want), (text, v)


def test_every_invalidation_reaches_every_process_before_its_next_read(workers: Any) -> None:
    ws = workers(4)
    texts = [f"t{i}" for i in range(10)]
    for i, t in enumerate(texts):
        tags = ["col:a"] if i < 5 else None
        ws[0]("set", text=t, vec=vec(1.0), tags=tags, doc_id=7 if 5 <= i < 8 else None)
    for w in ws:  # every process holds every vector in its own hot tier
        assert w("embed", texts=texts) == [vec(1.0)] * len(texts)
        assert w("hot_has", texts=texts) == [True] * len(texts)
    ws[1]("set", text="t0", vec=vec(2.0))  # an overwrite invalidates the old vector
    check(ws, "t0", 2.0)
    assert ws[2]("drop", texts=["t1"]) == 1
    check(ws, "t1", None)
    # t0 (still registered under its first tag: tags are added, never replaced), t2-t4
    assert ws[3]("invalidate_tags", tags=["col:a"]) == 4
    for t in ("t0", "t2", "t3", "t4"):
        check(ws, t, None)
    for w in ws:  # a search result listing document 7, in each process's ResultCache
        w("rc_set", query="q", result=[7, 1], doc_ids=[7])
    assert ws[0]("drop_ids", ids=[7]) == 3
    for t in ("t5", "t6", "t7"):
        check(ws, t, None)
    assert [w("rc_get", query="q") for w in ws] == [None] * 4
    ws[1]("clear")
    for t in ("t8", "t9"):
        check(ws, t, None)
    stats = ws[0]("stats")["invalidation"]
    assert stats["entries_applied"] >= 6 and stats["overflows"] == 0


def test_reads_after_an_overwrite_returned_never_see_the_old_vector(workers: Any) -> None:
    """Three processes read in a loop (embed: the compiled hot path) while a fourth
    overwrites the vector 150 times; every read that began after version n's ``set``
    returned must return version n or later."""
    ws = workers(4)
    ws[0]("set", text="t0", vec=vec(0.5))
    for w in ws:
        assert w("embed", texts=["t0"]) == [vec(0.5)]
    for w in ws[1:]:
        w.send("loop", texts=["t0"], seconds=soak.scale(1.5, 12.0), method="embed")
    done = ws[0]("writes", texts=["t0"], n=soak.scale(150, 1500), pause=0.005)
    reads = [r for w in ws[1:] for r in w.result()]
    returned = [t for _, t in done]  # increasing
    assert len(reads) > 1000
    for t0, _, version in reads:
        assert not math.isnan(version)
        n = bisect.bisect_left(returned, t0)  # writes 1..n had returned when the read began
        assert version >= n, (t0, version, n)
    # and the final state everywhere
    check(ws, "t0", float(len(done)))
