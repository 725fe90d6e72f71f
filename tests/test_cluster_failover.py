"""Redis Cluster failover under load: 3 masters + 3 replicas on loopback, a master killed
while 4 threads read and write through the shared tier; its replica is promoted. Zero
caller-visible errors, no wrong vector, shared hits resume; the time to resume is
measured and recorded (make soak writes it to out/soak.json)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import soak
from tests.conftest import DIM, make_config
from tests.redis_server import RedisCluster3
from tiercache import TierCache
from tiercache.encoders import HashEncoder

REF = HashEncoder(DIM)


@pytest.fixture
def cluster6(tmp_path: Path) -> Iterator[RedisCluster3]:
    cluster = RedisCluster3(tmp_path / "rc", replicas=1).start()
    yield cluster
    cluster.stop()


def shared_only(root: Path, nodes: list[str]) -> Any:
    """A cache whose every lookup goes to Redis (no hot, no warm): the failover is seen."""
    return make_config(
        root,
        hot={"enabled": False},
        warm={"enabled": False},
        shared={
            "nodes": nodes,
            "timeout": 0.25,
            "backoff_initial": 0.05,
            "backoff_max": 0.5,
            "invalidation": "off",
        },
    )


def test_a_master_killed_under_load_fails_over_without_errors_or_wrong_vectors(
    tmp_path: Path, cluster6: RedisCluster3
) -> None:
    texts = [f"failover text {i}" for i in range(300)]
    want = {t: v for t, v in zip(texts, REF.encode(texts))}
    with TierCache(shared_only(tmp_path / "a", cluster6.addrs), encoder=HashEncoder(DIM)) as a:
        a.embed_many(texts)  # computed once, written to Redis (spread over the 3 masters)
    time.sleep(0.5)  # let the replicas catch up (replication is asynchronous)
    errors: list[str] = []
    wrong: list[str] = []
    hits: list[tuple[float, bool]] = []  # (time, shared hit) of every get
    stop = threading.Event()
    b = TierCache(shared_only(tmp_path / "b", cluster6.addrs), encoder=HashEncoder(DIM))

    def load(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            t = texts[int(rng.integers(len(texts)))]
            try:
                op = rng.random()
                if op < 0.5:
                    e = b.get(t)
                    hits.append((time.monotonic(), e is not None))
                    if e is not None and not np.array_equal(e.vector, want[t]):
                        wrong.append(t)
                elif op < 0.9:
                    if not np.array_equal(b.embed(t), want[t]):
                        wrong.append(t)
                else:
                    b.set(t, want[t])  # the same vector: a write during the failover
            except Exception as exc:  # any exception reaching a caller is a failure
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    try:
        time.sleep(soak.scale(1.0, 5.0))
        victim = cluster6.masters()[0]
        t_kill = time.monotonic()
        victim.stop()  # SIGKILL
        deadline = t_kill + 30
        while len(cluster6.masters()) < 3:  # its replica is promoted
            assert time.monotonic() < deadline, "no replica was promoted"
            time.sleep(0.05)
        t_promoted = time.monotonic()
        # shared hits resume: a window of gets after the promotion that all hit
        resumed = None
        while resumed is None:
            assert time.monotonic() < deadline, "shared hits did not resume"
            time.sleep(0.1)
            recent = [(t, h) for t, h in hits[-200:] if t > t_promoted]
            if len(recent) >= 50 and all(h for _, h in recent[-50:]):
                resumed = next(t for t, h in recent[-50:] if h)
        time.sleep(soak.scale(0.5, 5.0))
    finally:
        stop.set()
        for th in threads:
            th.join()
        b.close()
    outage = [h for t, h in hits if t_kill <= t <= resumed]
    soak.record(
        "redis_cluster_failover",
        ops=len(hits),
        caller_errors=len(errors),
        wrong_vectors=len(wrong),
        promoted_after_s=round(t_promoted - t_kill, 2),
        shared_hits_resumed_after_s=round(resumed - t_kill, 2),
        gets_during_failover=len(outage),
        misses_during_failover=outage.count(False),
    )
    assert not errors, errors[:5]
    assert not wrong, wrong[:5]
    assert sum(h for t, h in hits if t > resumed) > 0  # hits after the failover
    print(
        f"failover: replica promoted {t_promoted - t_kill:.2f} s after the kill, shared hits "
        f"resumed after {resumed - t_kill:.2f} s; {outage.count(False)} of {len(outage)} gets "
        "missed meanwhile (recomputed by embed), 0 errors, 0 wrong vectors"
    )
