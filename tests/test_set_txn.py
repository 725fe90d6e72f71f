"""The compiled common case of a single set's warm write transaction (_core.set_one_txn,
tiercache/_core_src/wtxn.c) against the Python path of ``LmdbTier.put_bounded``.

The C function writes only when, inside the transaction, the key is not packed, no victim
is needed and the staging queue does not fill up; otherwise it writes nothing and the
Python ``run`` carries on. These tests drive two stores through the same writes, one with
it and one without (``lmdb.C_SET``), and require the same bytes in every sub-database.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest

from tiercache import TierCache
from tiercache.keys import Fingerprint
from tiercache.tiers import lmdb as lmdb_tier
from tiercache.tiers.lmdb import LOG_ENTRIES, LmdbTier

from .conftest import DIM, CountingEncoder, make_config

pytestmark = pytest.mark.skipif(
    lmdb_tier._set_one_txn is None, reason="tiercache._core is not built"
)

FP = Fingerprint(model="m", dim=8, revision="1")
REC = 792  # K = 5 slots a segment on 4 KiB pages: a packing every 5 single sets


class Counting:
    """Wraps set_one_txn: calls handled (a sequence number) and not (0), errors raised."""

    def __init__(self) -> None:
        self.real = lmdb_tier._set_one_txn
        self.handled = 0
        self.passed = 0
        self.errors: list[BaseException] = []

    def __call__(self, *args: Any) -> int:
        assert self.real is not None
        try:
            seq = self.real(*args)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        if seq:
            self.handled += 1
        else:
            self.passed += 1
        return seq


def _chooser(i: int) -> Callable[[int, Callable[[Sequence[bytes]], list[bytes]]], list[bytes]]:
    """Victims picked the same way in both stores (probes seeded by the op's number)."""

    def choose(excess: int, sample: Callable[[Sequence[bytes]], list[bytes]]) -> list[bytes]:
        r = random.Random(i)
        probes = [r.randbytes(16) for _ in range(excess + 3)]
        return list(dict.fromkeys(sample(probes)))[:excess]

    return choose


def _ops(n: int, pool: int, seed: int = 7) -> list[tuple[Any, ...]]:
    r = random.Random(seed)
    keys = [r.randbytes(16) for _ in range(pool)]
    out: list[tuple[Any, ...]] = []
    for i in range(n):
        x = r.random()
        k = r.choice(keys)
        rec = r.randbytes(REC)
        log = b"entry %d" % i
        if x < 0.70:
            out.append(("set", k, rec, log))
        elif x < 0.76:
            out.append(("set", k, r.randbytes(r.choice([100, REC + 8])), log))  # plain
        elif x < 0.83:
            out.append(("delete", [k, r.choice(keys)], log))
        elif x < 0.89:
            batch = [(r.choice(keys), r.randbytes(REC)) for _ in range(3)]
            out.append(("batch", batch, log))
        elif x < 0.94:
            out.append(("set", k, rec, None))  # a write that logs nothing
        else:
            out.append(("storeback", k, rec))
    return out


def _drive(t: LmdbTier, ops: list[tuple[Any, ...]], capacity: int) -> list[Any]:
    results: list[Any] = []
    for i, op in enumerate(ops):
        logged: list[int] = []
        if op[0] == "set":
            n = t.put_bounded([(op[1], op[2])], capacity, _chooser(i), log=op[3], logged=logged)
            results.append((n, logged))
        elif op[0] == "batch":
            n = t.put_bounded(op[1], capacity, _chooser(i), log=op[2], logged=logged)
            results.append((n, logged))
        elif op[0] == "delete":
            results.append((t.delete_each(op[1], log=op[2], logged=logged), logged))
        else:
            since = t.log_seq()  # a store-back: the Python path
            keep = lambda entries: lambda k: False  # noqa: E731
            n = t.put_bounded([(op[1], op[2])], capacity, _chooser(i), since=since, stale=keep)
            results.append(n)
    return results


def _dump(t: LmdbTier) -> dict[str, list[tuple[bytes, bytes]]]:
    h = t._h
    dbs = {"records": h.records, "index": h.index, "segs": h.segs, "segmeta": h.segmeta}
    dbs["meta"] = h.meta
    with h.env.begin() as txn:
        return {n: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)] for n, db in dbs.items()}


def test_parity_with_the_python_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ops = _ops(LOG_ENTRIES + 900, pool=400)
    capacity = 300
    counting = Counting()
    monkeypatch.setattr(lmdb_tier, "_set_one_txn", counting)
    runs = []
    for c_set in (True, False):
        monkeypatch.setattr(lmdb_tier, "C_SET", c_set)
        t = LmdbTier(tmp_path / f"c{int(c_set)}", fingerprint=FP, durability="fast",
                     packed_record_len=REC)  # fmt: skip
        try:
            results = _drive(t, ops, capacity)
            dump = _dump(t)
            keys = sorted({op[1] for op in ops if op[0] in ("set", "storeback")})
            got = [t.get_with(k, bytes) for k in keys]
            runs.append((results, dump, got, t.log_seq(), t.stat()))
        finally:
            t.close()
        if c_set:
            seen = (counting.handled, counting.passed)
    assert seen[0] > 300 and seen[1] > 300  # both outcomes were exercised
    assert (counting.handled, counting.passed) == seen  # none with C_SET off
    (r1, d1, g1, s1, st1), (r2, d2, g2, s2, st2) = runs
    assert s1 == s2 > LOG_ENTRIES
    assert r1 == r2
    assert st1["entries"] == st2["entries"] <= capacity
    assert sum(1 for _ in g1 if _ is not None) == st1["entries"]
    assert d1["index"] and d1["segs"] and d1["records"]  # packed and plain records both
    assert len([k for k, _ in d1["meta"] if k.startswith(b"iv:")]) == LOG_ENTRIES
    for name in d1:
        assert d1[name] == d2[name], name
    assert g1 == g2


def test_map_full_inside_the_c_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = Counting()
    monkeypatch.setattr(lmdb_tier, "_set_one_txn", counting)
    t = LmdbTier(tmp_path / "tiny", fingerprint=FP, durability="fast", map_size=1 << 20,
                 packed_record_len=REC)  # fmt: skip
    try:
        r = random.Random(3)
        written: dict[bytes, bytes] = {}
        i = 0
        # log entries of 6,000 bytes: overflow pages never freed (fewer than LOG_ENTRIES),
        # so the single sets' transactions are the ones that meet the end of the map (with
        # small entries, pages freed by earlier transactions serve them and the packing
        # transactions, which write whole segments, always met it first)
        while not any(isinstance(e, lmdb.MapFullError) for e in counting.errors) or i % 5:
            k, v = r.randbytes(16), r.randbytes(REC)
            logged: list[int] = []
            entry = b"e%d" % i + bytes(6000)
            t.put_bounded([(k, v)], 10**6, _chooser(i), log=entry, logged=logged)
            i += 1
            written[k] = v
            assert logged == [i]
            assert i < 2000, "the map never filled inside the C path"
        assert t.stat()["map_size"] > 1 << 20
        assert t.log_seq() == i
        assert t.stat()["entries"] == len(written)
        assert all(t.get_with(k, bytes) == v for k, v in written.items())
        assert t.read_log(0)[1] == [(n + 1, b"e%d" % n + bytes(6000)) for n in range(i)]
        assert counting.handled > i / 2
    finally:
        t.close()


def test_a_set_takes_the_c_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = Counting()
    monkeypatch.setattr(lmdb_tier, "_set_one_txn", counting)
    cache = TierCache(make_config(tmp_path, hot={"enabled": False}), encoder=CountingEncoder())
    try:
        vecs = np.random.default_rng(1).standard_normal((40, DIM)).astype(np.float32)
        for i, v in enumerate(vecs):
            cache.set(f"text {i}", v)
        # one set in K packs the staging queue: left to the Python path
        assert counting.handled >= 30 and counting.handled + counting.passed == 40
        assert not counting.errors
        for i, v in enumerate(vecs):
            got = cache.get(f"text {i}")
            assert got is not None and got.tier == "warm"
            assert np.array_equal(got.vector, v)
        monkeypatch.setattr(lmdb_tier, "C_SET", False)
        cache.set("text off", vecs[0])
        assert counting.handled + counting.passed == 40
    finally:
        cache.close()
