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
from typing import Any

import numpy as np
import pytest

from tiercache import TierCache, codec, load_config
from tiercache.encoders import HashEncoder

from . import soak

CYCLES = soak.scale(4, 50)
DIM = 32


def _verifies(buf: object, start: int, end: int, _: None, key: bytes) -> bool:
    """Whether the stored record of ``key`` verifies (``LmdbTier.get_many_at``'s form)."""
    return codec.decode_raw(memoryview(buf)[start:end], DIM, key) is not None  # type: ignore[arg-type]


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
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cfg_path), str(cycle)], stdout=subprocess.PIPE, text=True
    )
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
    cfg_path.write_text(
        textwrap.dedent(f"""
        encoder: {{kind: hash, dim: {DIM}}}
        hot: {{max_bytes: 16KiB}}
        warm: {{path: {tmp_path / "warm"}, durability: durable, max_bytes: 256MiB}}
    """)
    )
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

            with TierCache(load_config(cfg_path), encoder=HashEncoder(DIM, role="document")) as c:
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
                ok = warm.get_many_at(keys, _verifies, None, None)
                scanned += len(keys)
                bad_checksum += sum(1 for good in ok if not good)
            assert lost == 0, f"{lost} acknowledged writes lost after cycle {cycle}"
            assert wrong == 0, f"{wrong} acknowledged writes read back different"
            assert bad_checksum == 0, f"{bad_checksum} records fail their checksum after a kill"
            assert len(keys) >= 2 * sum(top + 1 for top in acked.values())
    finally:
        soak.record(
            "crash",
            cycles=len(acked),
            faults_injected=len(acked),
            acked_batches=sum(t + 1 for t in acked.values()),
            records_checked=checked + scanned,
            acked_records_checked=checked,
            records_checksum_scanned=scanned,
            acked_lost=lost,
            wrong_vectors=wrong,
            bad_checksums=bad_checksum,
            seconds=round(time.monotonic() - t_start, 1),
            durability="durable",
            kill="SIGKILL at a uniform 1.5-3.0 s after start",
        )


THREADED_CHILD = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from tiercache import TierCache
    cycle = int(sys.argv[2])
    out = threading.Lock()

    def writer(c, t):
        i = 0
        while True:
            v = np.random.default_rng([cycle, t, i]).standard_normal({dim}).astype(np.float32)
            c.set(f"g{{cycle}}-{{t}}-{{i}}", v)  # acknowledged when set returns
            with out:
                print(t, i, flush=True)
            i += 1

    with TierCache.from_yaml(sys.argv[1]) as c:
        threads = [threading.Thread(target=writer, args=(c, t), daemon=True)
                   for t in range({threads})]
        for th in threads:
            th.start()
        threads[0].join()
""")

THREADS = 8


def test_sigkill_never_loses_a_write_acknowledged_to_concurrent_threads(tmp_path: Path) -> None:
    """8 threads doing single durable ``set``s (their commits grouped, one fsync for many:
    ``writepath.GroupCommit``), SIGKILLed at random moments: every ``set`` that returned is
    there and bit-exact, and the commits were in fact shared."""
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        textwrap.dedent(f"""
        encoder: {{kind: hash, dim: {DIM}}}
        hot: {{enabled: false}}
        warm: {{path: {tmp_path / "warm"}, durability: durable, max_bytes: 256MiB}}
    """)
    )
    child_src = THREADED_CHILD.format(dim=DIM, threads=THREADS)
    rng = random.Random(99)
    acked: list[tuple[int, int, int]] = []
    for cycle in range(soak.scale(2, 10)):
        child = subprocess.Popen(
            [sys.executable, "-c", child_src, str(cfg_path), str(cycle)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        time.sleep(rng.uniform(1.5, 2.5))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        lines = (child.stdout.read() or "").splitlines()
        got = [tuple(map(int, ln.split())) for ln in lines if len(ln.split()) == 2]
        assert got, "the child acknowledged nothing; the test proves nothing"
        acked += [(cycle, t, i) for t, i in got]
        assert len({t for t, _ in got}) == THREADS  # every thread got writes through
        with TierCache(load_config(cfg_path), encoder=HashEncoder(DIM, role="document")) as c:
            entries = c.mget([f"g{cy}-{t}-{i}" for cy, t, i in acked])
            lost = [a for a, e in zip(acked, entries) if e is None]
            assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
            for (cy, t, i), e in zip(acked, entries):
                want = np.random.default_rng([cy, t, i]).standard_normal(DIM)
                assert e is not None and np.array_equal(e.vector, want.astype(np.float32))


def test_group_commit_shares_commits_between_threads(tmp_path: Path) -> None:
    """The in-process view of the same: 8 threads of durable sets need fewer commits than
    sets, and every set is readable afterwards."""
    import threading

    cfg = load_config_text(tmp_path, "durable")
    with TierCache(cfg, encoder=HashEncoder(DIM)) as c:
        group = c._write.group
        assert group is not None

        def writer(t: int) -> None:
            for i in range(60):
                c.set(f"s{t}-{i}", np.full(DIM, t * 1000 + i + 1, np.float32))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert group.commits < THREADS * 60
        for t in range(THREADS):
            for i in range(60):
                e = c.get(f"s{t}-{i}")
                assert e is not None and e.vector[0] == t * 1000 + i + 1
    with TierCache(load_config_text(tmp_path / "f", "fast"), encoder=HashEncoder(DIM)) as c:
        assert c._write.group is None  # fast writes are not grouped


def test_a_group_commit_leader_waits_for_the_writers_of_recent_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A leader alone in the queue, after rounds of three, waits (bounded) for the two
    others: the three writes share one commit, not one of their own and one of the
    others'. A lone writer (the peak decayed to one) commits at once."""
    import threading
    import time

    from tiercache.writepath import GroupCommit

    monkeypatch.setattr(GroupCommit, "MAX_WAIT", 5.0)  # the test's bound, not the clock's
    g = GroupCommit()
    rounds: list[list[tuple[bytes, bytes]]] = []

    def commit(items: list[tuple[bytes, bytes]]) -> bool:
        rounds.append(items)
        return True

    g._peak, g._last = 3, 20.0  # as after rounds of three, each commit slow
    t0 = time.monotonic()
    leader = threading.Thread(target=g.run, args=([(b"a", b"1")], commit))
    leader.start()
    time.sleep(0.05)  # the leader is waiting: nothing committed yet
    assert rounds == [] and leader.is_alive()
    others = [threading.Thread(target=g.run, args=([(k, b"2")], commit)) for k in (b"b", b"c")]
    for th in others:
        th.start()
    for th in [leader, *others]:
        th.join(10)
    assert time.monotonic() - t0 < 4.0  # it stopped waiting when the third write came
    assert rounds == [[(b"a", b"1"), (b"b", b"2"), (b"c", b"2")]] and g.commits == 1
    assert g._peak == 3
    for n in range(3):  # the writer is alone now: the peak decays by one per round
        g._last = 0.05
        t1 = time.monotonic()
        assert g.run([(b"d%d" % n, b"3")], commit)
        waited = time.monotonic() - t1
        assert (waited >= 0.02) if n < 2 else (waited < 0.02), (n, waited)
    assert g._peak == 1 and len(rounds) == 4


def load_config_text(tmp: Path, durability: str) -> Any:
    tmp.mkdir(parents=True, exist_ok=True)
    p = tmp / "g.yaml"
    p.write_text(
        textwrap.dedent(f"""
        encoder: {{kind: hash, dim: {DIM}}}
        hot: {{enabled: false}}
        warm: {{path: {tmp / "gwarm"}, durability: {durability}, max_bytes: 64MiB}}
    """)
    )
    return load_config(p)
