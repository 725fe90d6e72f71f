"""A running service switches to a fresh warm store after damage met at run time.

Real worker processes (tests/inval_worker.py: each its own hot tier and compiled readers)
share one warm store and serve ``embed`` and ``get`` with the hash encoder while the
store's pages are damaged under them: none crashes, every answer is the encoder's vector
(or a miss, for ``get``), the damaged files move to the quarantine folder, every process
ends up on one fresh store with the same manifest, and writes after the switch are seen by
the other processes (their invalidation logs did not wedge). A false alarm (damage
reported, none found) resumes every process on the same store with its data.

Also in one process: two tiers sharing a handle through a switch, a process starting
while damage is reported, a failed check tried again.

``make test``: one switch, one false alarm, one round of each. ``make soak``
(``TIERCACHE_SOAK=1``): 3 workers through 120 rounds of damage and false alarms in turn,
figures in out/soak.json.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.test_invalidation_procs import Worker
from tiercache.encoders import HashEncoder

from . import soak
from .conftest import DIM

REF = HashEncoder(DIM)
PAGE = 4096
TEXTS = [f"t{i}" for i in range(300)]
SWITCH_WAIT = 90.0  # seconds a switch may take on a loaded 2-core machine (one page walk)


class Tally:
    def __init__(self) -> None:
        self.checked = 0
        self.wrong = 0
        self.misses = 0

    def embed(self, w: Worker, texts: list[str]) -> None:
        got = w("embed", texts=texts)
        for t, v in zip(texts, got):
            self.checked += 1
            self.wrong += not np.array_equal(np.asarray(v, dtype=np.float32), REF.encode([t])[0])

    def loop(self, per_thread: list[list[list[float]]]) -> None:
        """The reads of a ``loop`` op, ``[t0, text index, first component]`` each (embed:
        never a miss)."""
        for reads in per_thread:
            assert reads, "a serving thread raised"
            for _, j, first in reads:
                self.checked += 1
                self.wrong += first != float(FIRST[int(j)])

    def get(self, w: Worker, texts: list[str]) -> None:
        for t, v in zip(texts, w("get", texts=texts)):
            self.checked += 1
            if v is None:
                self.misses += 1
            else:
                want = REF.encode([t])[0]
                self.wrong += not np.array_equal(np.asarray(v, dtype=np.float32), want)


LOOP_SECONDS = 1.2
FIRST = REF.encode(TEXTS)[:, 0]  # the loop op reports the first component of each vector


def damage(data: Path, kind: str) -> None:
    """Zero pages of ``data.mdb`` under the running workers (never the two meta pages)."""
    size = data.stat().st_size
    with data.open("r+b") as f:
        if kind == "zero_all":
            f.seek(2 * PAGE)
            f.write(bytes(size - 2 * PAGE))
        else:
            assert kind == "zero_odd"
            for pg in range(3, size // PAGE, 2):
                f.seek(pg * PAGE)
                f.write(bytes(PAGE))


def serve_until(
    workers: list[Worker], tally: Tally, rng: random.Random, done: Any, what: str
) -> float:
    """Every worker serves embed and get until ``done(states)``; the seconds it took."""
    t0 = time.monotonic()
    while True:
        states = [w("warm_state") for w in workers]
        if done(states):
            return time.monotonic() - t0
        assert time.monotonic() - t0 < SWITCH_WAIT, (what, states)
        for w in workers:
            tally.embed(w, rng.sample(TEXTS, 4))
            tally.get(w, rng.sample(TEXTS, 4))
        time.sleep(0.02)


def hot_emptied(
    workers: list[Worker], emptied: list[int], tally: Tally, rng: random.Random, what: str
) -> None:
    """Every worker empties its hot tier after a switch (an ``overflows`` count above
    ``emptied``), and serves no hot copy before it has.

    The catch-up is lazy: a process catches up at its next read (``check``: the word
    moved), not when it follows the switch. Each process usually follows from its own
    checking thread (``resolve`` returns "followed", then ``poll_damage``), so the switch
    can complete after :func:`serve_until`'s last reads, and the counts read at once then
    show no overflow. That was a flaky failure under load, ``([2, 2, 2], [2, 2, 2])``,
    with every process on the fresh store and its catch-up still to come (``applied``
    4105, gate ``seen`` 4107, word 8203; one ``get`` each, and the counts were 3). So:
    a process that has not counted it yet must still have its gate closed (``seen`` !=
    word: the compiled readers serve no hot hit, every Python read catches up first);
    then the workers serve reads until each counted it, within the deadline."""
    t0 = time.monotonic()
    for w, y in zip(workers, emptied):
        gate = w("debug_warm")  # before the count: a catch-up counts, then opens the gate
        if w("stats")["invalidation"]["overflows"] <= y:
            assert gate["seen"] != gate["word"], (what, "hot served before emptied", gate)
    while True:
        after = [w("stats")["invalidation"]["overflows"] for w in workers]
        if all(x > y for x, y in zip(after, emptied)):
            return
        assert time.monotonic() - t0 < SWITCH_WAIT, (what, after, emptied)
        for w in workers:
            tally.embed(w, rng.sample(TEXTS, 4))
            tally.get(w, rng.sample(TEXTS, 4))
        time.sleep(0.02)


def check_writes_are_shared(workers: list[Worker], round_: int) -> None:
    """A write by one process is served by the others (hot copies of an overwritten text
    dropped everywhere: the log of the store they are on moves, and they follow it)."""
    a, *others = workers
    text = TEXTS[round_ % len(TEXTS)]
    for w in others:  # a copy in every process (hot) before the overwrite
        assert np.array_equal(np.asarray(w("embed", texts=[text])[0]), REF.encode([text])[0])
    v = np.full(DIM, float(round_ + 2), dtype=np.float32)
    a("set", text=text, vec=v.tolist())
    a("set", text=f"new-{round_}", vec=v.tolist())
    for w in others:
        assert np.array_equal(np.asarray(w("get", texts=[text])[0]), v)
        assert np.array_equal(np.asarray(w("get", texts=[f"new-{round_}"])[0]), v)
    a("drop", texts=[text])
    for w in others:
        assert w("get", texts=[text]) == [None]
    for w in others:
        assert np.array_equal(np.asarray(w("embed", texts=[text])[0]), REF.encode([text])[0])


def run_rounds(root: Path, kinds: list[str], n_workers: int = 3) -> dict[str, Any]:
    rng = random.Random(20)
    # the last worker without a hot tier: it serves through the compiled warm reader
    workers = [Worker(root).ready() for _ in range(n_workers - 1)]
    workers.append(Worker(root, hot={"enabled": False}).ready())
    tally = Tally()
    figures: dict[str, Any] = {"switches": 0, "false_alarms": 0, "quarantine_s": [], "resume_s": []}
    warm = root / "warm"
    try:
        a = workers[0]
        assert len(a("embed_many", texts=TEXTS)) == len(TEXTS)
        for w in workers[1:]:
            tally.get(w, TEXTS[:40])  # hot copies in every process
        manifest = a("manifest")
        assert manifest["namespaces"], manifest
        for round_, kind in enumerate(kinds):
            before = [w("warm_state") for w in workers]
            want = sum(s["switches"] for s in before) + len(workers)
            if kind == "false_alarm":
                a("embed_many", texts=TEXTS)  # every text stored: kept through the check
                ino = (warm / "data.mdb").stat().st_ino
                emptied = [w("stats")["invalidation"]["overflows"] for w in workers]
                a("seal", why=f"round {round_}: a false alarm")
                figures["resume_s"].append(
                    serve_until(
                        workers,
                        tally,
                        rng,
                        lambda states: all(s["sealed"] is None for s in states),
                        f"round {round_}: resume",
                    )
                )
                assert (warm / "data.mdb").stat().st_ino == ino  # the same files
                assert [s["switches"] for s in (w("warm_state") for w in workers)] == [
                    s["switches"] for s in before
                ]
                for w in workers:  # the data is kept: served from warm
                    tally.get(w, TEXTS)
                    assert all(v is not None for v in w("get", texts=TEXTS[-5:]))
                # and every process emptied its hot tier once (the gap in the log)
                after = [w("stats")["invalidation"]["overflows"] for w in workers]
                assert [x - y for x, y in zip(after, emptied)] == [1] * len(workers)
                figures["false_alarms"] += 1
            else:
                folders = len(list((warm / "quarantine").iterdir())) if round_ else 0
                # between requests (pages changing under a read in flight can crash LMDB:
                # see docs/reliability.md), then 3 threads per process meet the damage
                emptied = [w("stats")["invalidation"]["overflows"] for w in workers]
                damaged_at = time.time()
                damage(warm / "data.mdb", kind)
                for w in workers:
                    w.send("loop", texts=TEXTS, seconds=LOOP_SECONDS, method="embed", threads=3)
                for w in workers:
                    tally.loop(w.result())
                serve_until(
                    workers,
                    tally,
                    rng,
                    lambda states: (
                        all(s["sealed"] is None for s in states)
                        and sum(s["switches"] for s in states) == want  # noqa: B023
                    ),
                    f"round {round_}: switch after {kind}",
                )
                kept = sorted((warm / "quarantine").iterdir())
                moved_at = dt.datetime.strptime(kept[-1].name, "%Y%m%dT%H%M%S.%fZ")
                figures["quarantine_s"].append(
                    moved_at.replace(tzinfo=dt.UTC).timestamp() - damaged_at
                )
                assert len(kept) == min(folders + 1, 3), kept  # the newest 3 are kept
                assert {p.name for p in kept[-1].iterdir()} == {"data.mdb", "lock.mdb", "why.txt"}
                assert (warm / "inval.seq").exists()  # the channel stayed in place
                for w in workers:  # the same fingerprints (the format is 1 until a
                    # packed record is stored, if the walk could not read the old one)
                    assert w("manifest")["namespaces"] == manifest["namespaces"]
                hot_emptied(workers, emptied, tally, rng, f"round {round_}: {kind}")
                figures["switches"] += 1
                # the fresh store serves: written once, read by every process
                a("embed_many", texts=TEXTS[:100])
                for w in workers[1:]:
                    tally.get(w, TEXTS[:100])
                    got = w("get", texts=TEXTS[:10])
                    assert all(v is not None for v in got), (
                        [v is None for v in got],
                        [x("warm_state") for x in workers],
                        [x("stats")["tiers"]["warm"] for x in workers],
                        [x("stats")["invalidation"] for x in workers],
                    )
            check_writes_are_shared(workers, round_)
        for w in workers:  # no crash: each answers and exits cleanly
            assert w("warm_state")["sealed"] is None
    finally:
        for w in workers:
            w.close()
    codes = [w.proc.returncode for w in workers]
    assert codes == [0] * len(workers), codes
    assert tally.wrong == 0
    figures.update(checked=tally.checked, wrong=tally.wrong, misses=tally.misses)
    return figures


def test_damage_met_while_serving_switches_every_process_to_a_fresh_store(tmp_path: Path) -> None:
    figures = run_rounds(tmp_path, ["zero_all"])
    assert figures["switches"] == 1 and figures["checked"] > 0


def test_a_false_alarm_resumes_on_the_same_store_with_its_data(tmp_path: Path) -> None:
    figures = run_rounds(tmp_path, ["false_alarm"], n_workers=2)
    assert figures["false_alarms"] == 1
    assert not (tmp_path / "warm" / "quarantine").exists()


def test_switch_soak(tmp_path: Path) -> None:
    """Rounds of damage (every page zeroed, every other page zeroed) and false alarms,
    three workers serving throughout (a few rounds in ``make test``)."""
    kinds = ["zero_odd", "false_alarm", "zero_all"] * soak.scale(1, 40)
    t0 = time.monotonic()
    figures = run_rounds(tmp_path, kinds)
    moved = sorted(figures.pop("quarantine_s"))
    resumed = sorted(figures.pop("resume_s"))
    soak.record(
        "store_switch",
        cycles=len(kinds),
        faults_injected=len(kinds),
        records_checked=figures["checked"],
        wrong_vectors=figures["wrong"],
        acked_lost=0,
        switches=figures["switches"],
        false_alarms=figures["false_alarms"],
        misses=figures["misses"],
        # damage written -> files moved aside (the first read that met it, the page walk)
        quarantine_seconds_p50=round(moved[len(moved) // 2], 3),
        quarantine_seconds_max=round(moved[-1], 3),
        # a false alarm raised -> every process resumed (the walk, the test's polling)
        resume_seconds_p50=round(resumed[len(resumed) // 2], 3),
        resume_seconds_max=round(resumed[-1], 3),
        seconds=round(time.monotonic() - t0, 1),
    )


def test_tiers_sharing_a_handle_follow_and_the_old_one_closes_after_its_readers(
    tmp_path: Path,
) -> None:
    """In one process: two tiers on one path share an environment handle; reader threads
    run through the switch; each tier moves to the fresh store, the old handle is closed
    once both let go of it, and no thread sees an error other than ``StoreError``."""
    import os
    import threading

    from tiercache.errors import StoreError
    from tiercache.keys import Fingerprint
    from tiercache.tiers.lmdb import LmdbTier

    fp = Fingerprint(model="m", dim=4, revision="1")
    path = tmp_path / "w"
    t1 = LmdbTier(path, fingerprint=fp, durability="fast")
    t2 = LmdbTier(path, fingerprint=fp, durability="fast", namespace="other")
    keys = [os.urandom(16) for _ in range(200)]
    t1.put_many([(k, b"r" * 40) for k in keys])
    old = t1._handle
    assert old is not None and old is t2._handle and old.refs == 2
    stop = threading.Event()
    errors: list[str] = []

    def read(t: LmdbTier) -> None:
        while not stop.is_set():
            try:
                for got in t.get_many(keys[:20]):
                    assert got in (None, b"r" * 40)
            except StoreError:
                pass
            except Exception as exc:  # noqa: BLE001 - the test reports it
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=read, args=(t,)) for t in (t1, t2, t1, t2)]
    for th in threads:
        th.start()
    try:
        t1._seal("reported by the test")  # no damage: the walk finds the store intact
        deadline = time.monotonic() + 30
        while t1.switches + t2.switches < 2:  # until the resolver resumed (or switched)
            assert time.monotonic() < deadline, (t1.sealed, t2.sealed)
            if t1.sealed is None and t2.sealed is None and not t1.switches:
                break
            time.sleep(0.01)
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert not errors, errors[:3]
    # a false alarm (the walk finds the store intact): both resume on the same files
    assert t1.sealed is None and t2.sealed is None and t1._handle is old is t2._handle
    assert t1.get_many(keys[:3]) == [b"r" * 40] * 3
    # now a real switch: the files replaced, as the resolver does after finding damage
    from tiercache.tiers import guard, lmdb_switch

    with guard.open_lock(str(path)):
        guard.quarantine(str(path), "test", files=lmdb_switch.QUARANTINED_FILES)
        word = lmdb_switch.map_word(str(path))
        gate = lmdb_switch.new_gate(word)
        lmdb_switch._seed(str(path), 2**26, {}, gate.word + lmdb_switch.SEQ_GAP)
        lmdb_switch._settle(word, gate, gate.word + lmdb_switch.SEQ_GAP)
        gate.release()
    assert t1.poll_damage() is False and t1.switches == 1 and t1._handle is not old
    assert not old.retired  # t2 still holds it
    # t2 follows when it polls (the cache polls when the invalidation word moved, which
    # the switch raised; a write polls too)
    t2.put_many([(keys[1], b"m" * 40)])
    assert t2.switches == 1 and t2._handle is t1._handle
    assert t2.get_many(keys[:3]) == [None, b"m" * 40, None]  # the fresh store
    assert old.retired and old.refs == 0  # closed once both let go
    assert t1.manifest()["namespaces"].keys() == {"default", "other"}
    t1.put_many([(keys[0], b"n" * 40)])
    assert t2.get_many(keys[:1]) == [b"n" * 40]
    t1.close()
    t2.close()


def test_a_process_opening_while_damage_is_reported_starts_and_settles_it(
    tmp_path: Path,
) -> None:
    """A worker that starts while the damage flag is up (reported, not settled: here no
    process is left to settle it) opens without the warm tier, checks the store itself,
    finds it intact and resumes on it, its fingerprint registered."""
    import mmap
    import struct

    from tiercache.tiers import lmdb_switch

    a = Worker(tmp_path).ready()
    try:
        a("embed_many", texts=TEXTS[:50])
    finally:
        a.close()
    with (tmp_path / "warm" / "inval.seq").open("r+b") as f:
        word = mmap.mmap(f.fileno(), 4096)
        struct.pack_into("=Q", word, lmdb_switch.FLAG_AT, 1)
        word.close()
    b = Worker(tmp_path).ready()
    try:
        tally = Tally()
        deadline = time.monotonic() + SWITCH_WAIT
        while b("warm_state")["sealed"] is not None:
            assert time.monotonic() < deadline
            tally.embed(b, TEXTS[:3])
            time.sleep(0.02)
        assert b("warm_state") == {"sealed": None, "quarantined": 0, "switches": 0}
        assert all(v is not None for v in b("get", texts=TEXTS[:50]))  # the data kept
        assert b("manifest")["namespaces"]
        assert tally.wrong == 0
    finally:
        b.close()


def test_a_failed_check_is_tried_again(tmp_path: Path, monkeypatch: Any) -> None:
    """Creating the fresh store fails once (after the damaged files moved): the tier stays
    set aside (misses), then a later poll checks again and switches."""
    import os

    from tiercache.errors import StoreError
    from tiercache.keys import Fingerprint
    from tiercache.tiers import lmdb_switch
    from tiercache.tiers.lmdb import LmdbTier

    real_seed = lmdb_switch._seed
    calls: list[int] = []

    def failing_once(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("no space left (injected)")
        real_seed(*args)

    monkeypatch.setattr(lmdb_switch, "_seed", failing_once)
    monkeypatch.setattr(lmdb_switch, "RETRY_AFTER", 0.05)
    t = LmdbTier(tmp_path / "w", fingerprint=Fingerprint(model="m", dim=4), durability="fast")
    keys = [os.urandom(16) for _ in range(300)]
    t.put_many([(k, b"r" * 100) for k in keys])
    t._seal("reported by the test")  # (nothing of the store is read from here on)
    damage(tmp_path / "w" / "data.mdb", "zero_all")
    deadline = time.monotonic() + SWITCH_WAIT
    while t.switches == 0:
        assert time.monotonic() < deadline, t.sealed
        try:
            t.get_many(keys[:2])  # a poll: StoreError while set aside
        except StoreError:
            pass
        time.sleep(0.02)
    assert len(calls) == 2 and t.sealed is None and len(t.quarantined) == 1
    assert len(list((tmp_path / "w" / "quarantine").iterdir())) == 1
    assert t.get_many(keys[:2]) == [None, None]  # the fresh store
    t.put_many([(keys[0], b"n" * 100)])
    assert t.get_many(keys[:1]) == [b"n" * 100]
    t.close()
