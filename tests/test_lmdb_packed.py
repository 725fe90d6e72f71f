"""The warm tier's packed segments (LmdbTier(packed_record_len=...)) on a real LMDB store."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import lmdb
import numpy as np
import pytest

from tiercache import codec
from tiercache.geometry import segment_cost, segment_slots
from tiercache.keys import Fingerprint
from tiercache.tiers import lmdb as lmdb_tier
from tiercache.tiers import lmdb_packed
from tiercache.tiers.lmdb import LmdbTier

from .test_tiers import FP, RecordStoreContract, k

DIM = 384
FP384 = Fingerprint(model="m", dim=DIM, revision="1")
F32 = codec.record_size(DIM, "float32")  # 1560
F16 = codec.record_size(DIM, "float16")  # 792


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def tier(path: Path, record_len: int | None, fp: Fingerprint = FP384) -> LmdbTier:
    return LmdbTier(path, fingerprint=fp, durability="fast", packed_record_len=record_len)


def decode(buf: object, start: int, end: int, _: object, key: bytes) -> codec.Record | None:
    """``LmdbTier.get_at``'s decoder form: the record of ``key`` at ``buf[start:end]``."""
    return codec.decode_record(memoryview(buf)[start:end], DIM, key)  # type: ignore[arg-type]


def records(vecs: np.ndarray, keys: list[bytes], codec_name: str = "float32") -> list[bytes]:
    return codec.encode_records(vecs, codec_name, keys=keys)


class TestPackedContract(RecordStoreContract):
    """The shared contract against a tier packing 3-byte values: b"v10".."v99" are packed,
    b"v0".."v9" and longer ones stay plain, so every test mixes both."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[LmdbTier]:
        t = LmdbTier(tmp_path / "w", fingerprint=FP, durability="fast", packed_record_len=3)
        yield t
        t.close()

    def test_values_really_are_mixed(self, store: LmdbTier) -> None:
        store.put_many([(k(i), b"v%d" % i) for i in range(150)])
        st = store.stat()
        assert st["entries"] == 150 and st["packed_entries"] == 90 and st["segments"] >= 2


def test_geometry_choices() -> None:
    assert segment_slots(F32) == 18 and segment_cost(18, F32) < 1.02 * (16 + F32)
    assert segment_slots(F16) == 5 and segment_cost(5, F16) < 1.03 * (16 + F16)


@pytest.mark.parametrize("codec_name", ["float32", "float16"])
def test_round_trip(tmp_path: Path, codec_name: str) -> None:
    vecs = unit_vectors(100)
    keys = [os.urandom(16) for _ in vecs]
    recs = records(vecs, keys, codec_name)
    t = tier(tmp_path / "w", len(recs[0]))
    t.put_many(list(zip(keys, recs)))
    assert t.stat()["packed_entries"] == 100
    tol = 0 if codec_name == "float32" else 1e-3
    for key, v in zip(keys, vecs):
        rec = t.get_at(key, decode, None, None)
        assert rec is not None and np.allclose(rec.vector, v, atol=tol)
    got = t.get_many_at(keys + [os.urandom(16)], decode, None, None)
    assert got[-1] is None
    assert all(r is not None and np.allclose(r.vector, v, atol=tol) for r, v in zip(got, vecs))
    assert t.get_many(keys[:3]) == recs[:3]
    t.close()


def test_mixed_packed_and_plain_in_one_batch(tmp_path: Path) -> None:
    vecs = unit_vectors(20)
    blob = codec.pack_blob({"src": "doc"}, "hello")
    recs = [
        codec.encode_record(v, "float32", blob=blob if i % 3 == 0 else None, key=k(i))
        for i, v in enumerate(vecs)
    ]
    t = tier(tmp_path / "w", F32)
    keys = [k(i) for i in range(20)]
    t.put_many(list(zip(keys, recs)))
    st = t.stat()
    assert st["entries"] == 20 and st["packed_entries"] == 13
    assert t.count() == 20 and sorted(t.keys()) == keys
    assert t.exists_many([k(0), k(1), k(99)]) == [True, True, False]
    got = t.get_many_at(keys, decode, None, None)
    for i, r in enumerate(got):
        assert r is not None and np.array_equal(r.vector, vecs[i])
        assert (r.metadata() == {"src": "doc"}) == (i % 3 == 0)
    # a key moves between plain and packed: it is removed from the other place
    t.put_many(
        [
            (k(0), codec.encode_record(vecs[5], key=k(0))),
            (k(1), codec.encode_record(vecs[0], blob=blob, key=k(1))),
        ]
    )
    assert t.count() == 20 and t.stat()["packed_entries"] == 13
    assert np.array_equal(t.get_at(k(0), decode, None, None).vector, vecs[5])  # type: ignore[union-attr]
    assert t.get_at(k(1), decode, None, None).metadata() == {"src": "doc"}  # type: ignore[union-attr]
    t.close()


def test_overwrite_in_place(tmp_path: Path) -> None:
    vecs = unit_vectors(30)
    recs = records(vecs, [k(i) for i in range(30)])
    t = tier(tmp_path / "w", F32)
    t.put_many([(k(i), recs[i]) for i in range(10)])
    segs = t.stat()["segments"]
    t.put_many([(k(3), records(vecs[20:21], [k(3)])[0]), (k(7), records(vecs[21:22], [k(7)])[0])])
    assert t.stat()["segments"] == segs and t.count() == 10
    got = t.get_many_at([k(i) for i in range(10)], decode, None, None)
    want = [vecs[20] if i == 3 else vecs[21] if i == 7 else vecs[i] for i in range(10)]
    assert all(np.array_equal(r.vector, w) for r, w in zip(got, want))  # type: ignore[union-attr]
    t.close()


def test_random_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random puts, overwrites and deletes (packed, plain and moving keys) against a dict;
    small records so segments fill, empty and get relocated quickly."""
    rng = random.Random(7)
    L = 40
    t = LmdbTier(tmp_path / "m", fingerprint=FP, durability="fast", packed_record_len=L)
    relocations = []
    real = lmdb_tier._Packer.relocate

    def counting(self: lmdb_tier._Packer, sid: bytes) -> bool:
        done = real(self, sid)
        relocations.append(done)
        return done

    monkeypatch.setattr(lmdb_tier._Packer, "relocate", counting)
    model: dict[bytes, bytes] = {}
    universe = [os.urandom(16) for _ in range(400)]
    for step in range(150):
        puts = []
        for _ in range(rng.randrange(0, 40)):
            key = rng.choice(universe)
            n = L if rng.random() < 0.85 else rng.choice([5, L + 1, 300])
            puts.append((key, rng.randbytes(n)))
        deletes = rng.sample(universe, rng.randrange(0, 40))
        op = rng.random()
        if op < 0.4:
            t.put_many(puts)
            for key, v in puts:
                model[key] = v
        elif op < 0.6:
            n = t.delete_many(deletes)
            assert n == sum(1 for d in set(deletes) if d in model)
            for d in deletes:
                model.pop(d, None)
        else:
            n = t.replace_many(puts, deletes)
            assert n == sum(1 for d in set(deletes) if d in model)
            for d in deletes:
                model.pop(d, None)
            for key, v in puts:
                model[key] = v
        assert t.get_many(universe) == [model.get(u) for u in universe], step
        assert t.count() == len(model)
    assert sum(relocations) >= 5
    assert sorted(t.keys(chunk=17)) == sorted(model)
    assert set(t.sample([os.urandom(16) for _ in range(50)])) <= set(model)
    t.clear()
    assert t.count() == 0 and t.stat()["bytes_used"] == 0 and t.get_many(universe[:5]) == [None] * 5
    t.close()


def test_relocation_of_sparse_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lmdb_tier.relocation_budget(80, 4096, F32) == lmdb_tier.MAX_RELOCATIONS_PER_WRITE + 9
    # the packer's own module (lmdb_packed) calls it: see the queue work
    monkeypatch.setattr(lmdb_packed, "relocation_budget", lambda *a: 1)
    keys = [os.urandom(16) for _ in range(18 * 6)]
    recs = records(unit_vectors(18 * 6, seed=3), keys)
    t = tier(tmp_path / "w", F32)
    t.put_many(list(zip(keys, recs)))
    assert t.stat()["segments"] == 6
    # empty the first five segments down to two live slots each (below K * SPARSE_FRACTION)
    doomed = {keys[s * 18 + i] for s in range(5) for i in range(16)}
    t.delete_many(list(doomed))
    assert t.stat()["segments"] == 6  # one relocated into the open segment, four queued
    for _ in range(4):
        t.delete_many([os.urandom(16)])  # any write relocates queued segments
    st = t.stat()
    assert st["entries"] == len(keys) - len(doomed) and st["segments"] == 2
    live = [i for i, key in enumerate(keys) if key not in doomed]
    assert t.get_many([keys[i] for i in live]) == [recs[i] for i in live]
    t.close()


def _footprint(tmp_path: Path, codec_name: str, n: int) -> float:
    # opaque bytes here (never decoded): the footprint of records of this length
    recs = records(unit_vectors(1000, seed=1), [bytes(16)] * 1000, codec_name)
    t = tier(tmp_path / codec_name, len(recs[0]))
    for start in range(0, n, 500):
        t.put_many([(os.urandom(16), recs[(start + i) % 1000]) for i in range(500)])
    st = t.stat()
    t.close()
    assert st["entries"] == n
    return float(st["bytes_used"]) / n


def test_footprint_float32(tmp_path: Path) -> None:
    assert _footprint(tmp_path, "float32", 20_000) <= 1.3 * 1536


def test_footprint_float16(tmp_path: Path) -> None:
    assert _footprint(tmp_path, "float16", 20_000) <= 0.7 * 1536


def _flip_stored_digest(t: LmdbTier, key: bytes) -> bytes:
    """Flip a byte of ``key``'s digest inside its packed segment; returns its index entry."""
    h = t._h
    with h.env.begin(write=True) as txn:
        iv = txn.get(key, db=h.index)
        sid, off = iv[:8], int.from_bytes(iv[8:12], "little")
        seg = bytearray(txn.get(sid, db=h.segs))
        seg[off + 5] ^= 0x40
        txn.put(sid, bytes(seg), db=h.segs)
    return bytes(iv)


def test_digest_mismatch_is_corrupt_not_wrong_record(tmp_path: Path) -> None:
    recs = records(unit_vectors(3), [k(i) for i in range(3)])
    t = tier(tmp_path / "w", F32)
    t.put_many([(k(i), recs[i]) for i in range(3)])
    h = t._h
    iv = _flip_stored_digest(t, k(1))
    assert t.get_at(k(1), decode, None, None) is None
    assert t.get_with(k(1), lambda b: b"corrupt" if len(b) == 0 else b"data") == b"corrupt"
    assert t.get_many([k(0), k(1), k(2)]) == [recs[0], b"", recs[2]]
    # an index entry pointing past its segment is also a corrupt miss, never an error
    with h.env.begin(write=True) as txn:
        txn.put(k(2), iv[:8] + (10**6).to_bytes(4, "little") + iv[12:], db=h.index)
    assert t.get_many([k(2)]) == [b""]
    t.put_many([(k(1), recs[1])])  # a rewrite repairs it
    assert t.get_many([k(1)]) == [recs[1]]
    t.close()


def test_reopen_keeps_packed_data_and_marks_format(tmp_path: Path) -> None:
    recs = records(unit_vectors(40), [k(i) for i in range(40)], "float16")
    t = tier(tmp_path / "w", F16)
    t.put_many([(k(i), recs[i]) for i in range(40)])
    t.close()
    t = tier(tmp_path / "w", F16)
    assert t.get_many([k(i) for i in range(40)]) == recs
    assert t.manifest()["format"] == lmdb_tier.PACKED_FORMAT
    t.put_many([(k(99), recs[0])])  # a single write waits plain (staged)
    assert t.count() == 41 and t.stat()["segments"] == 8 and t.stat()["packed_entries"] == 40
    t.put_many([(k(98), recs[1]), (k(97), recs[2])])  # appends to the reopened open segment
    assert t.count() == 43 and t.stat()["segments"] == 9 and t.stat()["packed_entries"] == 42
    assert t.get_many([k(99), k(98), k(97)]) == [recs[0], recs[1], recs[2]]
    t.close()
    plain = tier(tmp_path / "w", None)  # a tier that packs nothing still reads everything
    assert plain.get_many([k(i) for i in range(40)]) == recs and plain.count() == 43
    plain.put_many([(k(0), b"plain now")])
    assert plain.count() == 43 and plain.stat()["packed_entries"] == 41
    plain.close()


def test_old_plain_store_opens_and_stays_format_1(tmp_path: Path) -> None:
    path = tmp_path / "old"
    env = lmdb.open(str(path), max_dbs=4, subdir=True)  # what the previous tiercache wrote
    records, meta = env.open_db(b"records"), env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"format", b"1", db=meta)
        txn.put(k(1), b"old record", db=records)
    env.close()
    t = LmdbTier(path, fingerprint=FP, packed_record_len=3)
    assert t.get_many([k(1)]) == [b"old record"] and t.manifest()["format"] == 1
    t.put_many([(k(2), b"abc")])  # a single write waits plain: still a plain store
    assert t.manifest()["format"] == 1 and t.count() == 2
    t.put_many([(k(3), b"abd"), (k(4), b"abe")])  # the first segment marks the format
    assert t.manifest()["format"] == 2 and t.count() == 4
    t.close()


def _slice(buf: object, start: int, end: int, arg: object, key: bytes) -> bytes:
    return bytes(buf[start:end])  # type: ignore[index]


def test_get_at_and_get_rows_agree_with_get_with(tmp_path: Path) -> None:
    """The single-get (get_at) and batch (get_rows) read paths return exactly the stored
    records, packed and plain alike; a packed slot holding another digest is an empty
    (corrupt) record in both, never another key's record."""
    vecs = unit_vectors(60)
    blob = codec.pack_blob({"src": "doc"}, "hello")
    recs = [
        codec.encode_record(
            v,
            "float16" if i % 7 == 0 else "float32",
            blob=blob if i % 5 == 0 else None,
            key=k(i),
        )
        for i, v in enumerate(vecs)
    ]
    keys = [k(i) for i in range(60)]
    for first in (F32, None):  # packed-first and plain-first tiers read the same store
        path = tmp_path / f"w{first}"
        t = tier(path, F32)
        t.put_many(list(zip(keys, recs)))
        t.close()
        t = tier(path, first)
        absent = object()
        for key, rec in zip(keys, recs):
            assert t.get_at(key, _slice, None, absent) == rec
        assert t.get_at(os.urandom(16), _slice, None, absent) is absent
        probe = keys[::-1] + [os.urandom(16)]
        pos, rows, others = t.get_rows(probe, F32)
        width = 16 + F32
        stored = dict(zip(keys, recs))
        assert pos == [p for p, q in enumerate(probe[:-1]) if len(stored[q]) == F32]
        for r, p in enumerate(pos):
            assert rows[r * width : (r + 1) * width] == probe[p] + stored[probe[p]]
        assert others == [(p, stored[q]) for p, q in enumerate(probe[:-1]) if len(stored[q]) != F32]
        with pytest.raises(ValueError):
            t.get_rows([b"short"], F32)
        assert t.get_rows([], F32) == ([], b"", [])
        t.close()
    t = tier(tmp_path / f"w{F32}", F32)
    _flip_stored_digest(t, k(1))
    assert t.get_at(k(1), _slice, None, None) == b""
    pos, rows, others = t.get_rows([k(0), k(1), k(2)], F32)
    assert pos == [2] and others == [(0, recs[0]), (1, b"")]
    assert rows == k(2) + recs[2]
    t.close()


def test_bulk_put_over_stored_keys_keeps_live_counts(tmp_path: Path) -> None:
    """put_many over a mix of stored and new keys (the putmulti-without-overwrite path):
    every key reads back its last record and the segments' live counts add up to the
    index entries (freed slots are not counted live)."""
    vecs = unit_vectors(400, seed=5)
    # opaque bytes (compared, never decoded): records move between keys freely here
    recs = records(vecs, [bytes(16)] * len(vecs))
    t = tier(tmp_path / "w", F32)
    t.put_many([(k(i), recs[i]) for i in range(100)])
    t.put_many([(k(i), recs[i + 100]) for i in range(50, 250)] + [(k(7), recs[299])])
    want = {i: recs[i] for i in range(50)}
    want.update({i: recs[i + 100] for i in range(50, 250)})
    want[7] = recs[299]
    assert t.get_many([k(i) for i in range(250)]) == [want[i] for i in range(250)]
    assert t.count() == 250
    h = t._h
    with h.env.begin() as txn:
        live = sum(int.from_bytes(v[:4], "little") for _, v in txn.cursor(db=h.segmeta))
        assert live == txn.stat(h.index)["entries"] == 250
    t.close()


def _waiting_plain(t: LmdbTier, length: int) -> int:
    """Plain records of ``length`` bytes in the store (``records``, read raw)."""
    h = t._h
    with h.env.begin(db=h.records) as txn:
        return sum(1 for _, v in txn.cursor() if len(v) == length)


@pytest.mark.parametrize("via", ["put_many", "put_bounded"])
def test_single_writes_wait_plain_and_the_kth_packs_them(tmp_path: Path, via: str) -> None:
    """``_Packer.stage`` (``put_many``) and ``stage_one`` (``put_bounded``, a ``set``): a
    single write of a new packed-length record is stored plain and queued; the write that
    queues the K-th moves the queue into segments. Keys deleted, rewritten with another
    length or written again while queued are handled, and every read path returns exactly
    the last record written for each key throughout."""
    K = segment_slots(F32)
    n = 3 * K + 5
    keys = [os.urandom(16) for _ in range(n)]
    recs = records(unit_vectors(n, seed=7), keys)
    t = tier(tmp_path / "w", F32)
    if via == "put_bounded":
        t.put_many = lambda items: t.put_bounded(items, 10**9, lambda e, s: ())  # type: ignore[method-assign, assignment, return-value]
    t.put_many(list(zip(keys[:K], recs[:K])))  # a batch packs at once
    assert t.stat()["packed_entries"] == K
    want = dict(zip(keys[:K], recs[:K]))
    for i in range(K, n):
        t.put_many([(keys[i], recs[i])])
        want[keys[i]] = recs[i]
        waiting = (i - K + 1) % K
        st = t.stat()
        assert st["entries"] == len(want) and st["entries"] - st["packed_entries"] == waiting
        assert _waiting_plain(t, F32) == waiting
        assert t.get_many(list(want)) == list(want.values())
    # queued keys deleted, rewritten with another length, or written twice: the pack
    # moves what is still a plain record of the packed length, nothing else
    base = t.stat()["packed_entries"]
    extra = [os.urandom(16) for _ in range(K)]
    extra_recs = records(unit_vectors(K, seed=8), extra)
    t.put_many([(extra[0], extra_recs[0])])
    t.put_many([(extra[1], extra_recs[1])])
    t.put_many([(extra[1], extra_recs[2])])  # the same key again: queued twice
    t.delete_many([extra[0]])
    t.put_many([(extra[2], b"a longer, unpackable record")])
    for j in range(3, K):
        t.put_many([(extra[j], extra_recs[j])])
    want.update({extra[1]: extra_recs[2], extra[2]: b"a longer, unpackable record"})
    want.update({extra[j]: extra_recs[j] for j in range(3, K)})
    st = t.stat()
    assert st["entries"] == len(want) and st["packed_entries"] > base
    assert 1 <= _waiting_plain(t, F32) < K  # the queue is bounded
    assert _waiting_plain(t, len(b"a longer, unpackable record")) == 1  # never packed
    assert t.get_many(list(want)) == list(want.values())
    assert t.get_many([extra[0]]) == [None]
    t.close()
    reopened = tier(tmp_path / "w", F32)
    assert reopened.get_many(list(want)) == list(want.values())
    reopened.close()
