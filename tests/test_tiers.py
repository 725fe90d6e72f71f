"""Contract tests: one class per tier protocol, subclassed for each implementation."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiercache.errors import FingerprintMismatchError, StoreError
from tiercache.keys import Fingerprint
from tiercache.tiers.lmdb import LmdbTier
from tiercache.tiers.memory import MemoryTier, hot_capacity

FP = Fingerprint(model="m", dim=8, revision="1")
DIM = 4  # floats per row in the vector tier's contract


def k(i: int) -> bytes:
    return i.to_bytes(16, "big")


class KeyedTierContract:
    """Every tier passes these (``tiercache.tiers.KeyedTier``): the hot memory tier, the
    warm LMDB tier (plain and packed) and the shared Redis tier (on a real redis-server).
    Each subclass stores entries through its own protocol's ``put_many`` (``put_keys``)."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Any]:
        raise NotImplementedError

    def put_keys(self, store: Any, keys: Sequence[bytes], version: int = 0) -> None:
        """Store ``value(key, version)`` under each of ``keys`` (one batch)."""
        raise NotImplementedError

    def value(self, key: bytes, version: int) -> Any:
        """What ``put_keys`` stores under ``key``, as ``read`` gives it back."""
        raise NotImplementedError

    def read(self, store: Any, keys: Sequence[bytes]) -> list[Any]:
        """What each of ``keys`` holds (through the tier's own reads), None if absent."""
        raise NotImplementedError

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        # one store per example is reused (cleared first); each subclass runs it
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        ops=st.lists(
            st.tuples(
                st.sampled_from(["put", "delete", "clear"]),
                st.lists(st.integers(0, 11), max_size=8),
            ),
            max_size=12,
        )
    )
    def test_agrees_with_a_dict(self, store: Any, ops: list[tuple[str, list[int]]]) -> None:
        store.clear()  # one store for every example
        model: dict[bytes, int] = {}
        for version, (op, picked) in enumerate(ops):
            keys = [k(i) for i in picked]
            if op == "put":
                self.put_keys(store, keys, version)
                model.update(dict.fromkeys(keys, version))
            elif op == "delete":
                assert store.delete_many(keys) == len(set(keys) & model.keys())
                for key in keys:
                    model.pop(key, None)
            else:
                store.clear()
                model.clear()
            assert sorted(store.keys()) == sorted(model)
            assert store.count() == len(model)
        every = [k(i) for i in range(12)]
        want = [self.value(key, model[key]) if key in model else None for key in every]
        assert self.read(store, every) == want

    def test_empty_tier(self, store: Any) -> None:
        assert store.count() == 0
        assert list(store.keys()) == []
        assert store.delete_many([k(1)]) == 0

    def test_keys_iterates_everything(self, store: Any) -> None:
        keys = [os.urandom(16) for _ in range(250)]
        self.put_keys(store, keys)
        assert sorted(store.keys()) == sorted(keys)
        assert store.count() == 250

    def test_overwrite_counts_once(self, store: Any) -> None:
        self.put_keys(store, [k(1), k(2)])
        self.put_keys(store, [k(1)])
        assert store.count() == 2
        assert sorted(store.keys()) == [k(1), k(2)]

    def test_delete_counts_what_was_stored(self, store: Any) -> None:
        self.put_keys(store, [k(1), k(2), k(3)])
        assert store.delete_many([k(1), k(3), k(9), k(1)]) == 2  # absent: 0, twice: once
        assert list(store.keys()) == [k(2)]
        assert store.count() == 1
        assert store.delete_many([k(1)]) == 0

    def test_empty_batches(self, store: Any) -> None:
        self.put_keys(store, [])
        assert store.delete_many([]) == 0
        assert store.count() == 0

    def test_clear_removes_everything(self, store: Any) -> None:
        self.put_keys(store, [k(i) for i in range(20)])
        store.clear()
        assert store.count() == 0
        assert list(store.keys()) == []
        self.put_keys(store, [k(1)])  # still usable
        assert list(store.keys()) == [k(1)]


class RecordStoreContract(KeyedTierContract):
    """Every byte-record tier passes these (``tiercache.tiers.RecordStore``): the warm
    LMDB tier and the shared Redis tier."""

    def put_keys(self, store: Any, keys: Sequence[bytes], version: int = 0) -> None:
        store.put_many([(key, self.value(key, version)) for key in keys])

    def value(self, key: bytes, version: int) -> bytes:
        # 3 or 18 bytes by the key's last bit: a tier packing 3-byte records
        # (test_lmdb_packed.TestPackedContract) holds both packed and plain ones
        v = bytes([version % 256])
        return v + key[-2:] if key[-1] % 2 else b"r" + v + key

    def read(self, store: Any, keys: Sequence[bytes]) -> list[Any]:
        return list(store.get_many(keys))

    def test_missing_keys_are_none(self, store: Any) -> None:
        assert store.get_many([k(1), k(2)]) == [None, None]
        assert store.count() == 0

    def test_put_get_in_order(self, store: Any) -> None:
        store.put_many([(k(i), b"v%d" % i) for i in range(100)])
        keys = [k(i) for i in (5, 99, 100, 0)]
        assert store.get_many(keys) == [b"v5", b"v99", None, b"v0"]
        assert store.count() == 100

    def test_overwrite_and_delete(self, store: Any) -> None:
        store.put_many([(k(1), b"a"), (k(2), b"b")])
        store.put_many([(k(1), b"c")])
        assert store.get_many([k(1)]) == [b"c"]
        assert store.delete_many([k(1), k(3)]) == 1
        assert store.get_many([k(1), k(2)]) == [None, b"b"]

    def test_a_key_given_twice_keeps_its_last_record(self, store: Any) -> None:
        store.put_many([(k(1), b"first"), (k(2), b"b"), (k(1), b"last")])
        assert store.get_many([k(1), k(2)]) == [b"last", b"b"]
        assert store.count() == 2

    def test_delete_each_in_input_order(self, store: Any) -> None:
        store.put_many([(k(1), b"a"), (k(2), b"b")])
        assert store.delete_each([k(2), k(9), k(1), k(2)]) == [True, False, True, False]
        assert store.delete_each([]) == []
        assert store.count() == 0

    def test_records_are_new_bytes(self, store: Any) -> None:
        store.put_many([(k(1), b"hello")])
        got = store.get_many([k(1)])[0]
        store.put_many([(k(1), b"world")])
        assert got == b"hello" and type(got) is bytes

    def test_empty_batches(self, store: Any) -> None:
        super().test_empty_batches(store)
        store.put_many([])
        assert store.get_many([]) == []


class VectorStoreContract(KeyedTierContract):
    """Every vector tier passes these (``tiercache.tiers.VectorStore``): the hot memory
    tier. ``store`` holds at least 300 rows of ``DIM`` floats."""

    def put_many(
        self, store: Any, contents: Sequence[Any], keys: Sequence[bytes], matrix: Any
    ) -> list[int]:
        n = len(keys)
        slots: list[int] = store.put_many(
            contents, keys, matrix, [float("inf")] * n, [None] * n, [False] * n
        )
        return slots

    def put_keys(self, store: Any, keys: Sequence[bytes], version: int = 0) -> None:
        matrix = np.array([self.value(key, version) for key in keys], dtype=np.float32)
        self.put_many(store, [key.hex() for key in keys], keys, matrix.reshape(-1, DIM))

    def value(self, key: bytes, version: int) -> list[float]:
        return [float(version), float(key[-1]), float(key[0]), 0.5]

    def read(self, store: Any, keys: Sequence[bytes]) -> list[Any]:
        slots = store.get_many([key.hex() for key in keys])
        rows = iter(store.gather([s for s in slots if s is not None]).tolist())
        return [None if s is None else next(rows) for s in slots]

    def test_missing_contents_have_no_slot(self, store: Any) -> None:
        assert store.get_many(["a", b"b"]) == [None, None]
        assert store.slot_of_key(k(1)) is None

    def test_slots_and_rows_in_input_order(self, store: Any) -> None:
        vecs = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
        slots = self.put_many(store, ["a", "b", b"c"], [k(1), k(2), k(3)], vecs)
        assert store.get_many(["b", "zz", b"c", "a"]) == [slots[1], None, slots[2], slots[0]]
        assert [store.slot_of_key(k(i)) for i in (3, 1, 9)] == [slots[2], slots[0], None]
        rows = store.gather([slots[2], slots[0], slots[2]])
        assert rows.dtype == np.float32 and rows.shape == (3, DIM)
        assert rows.tolist() == [vecs[2].tolist(), vecs[0].tolist(), vecs[2].tolist()]

    def test_overwrite_by_key_keeps_the_slot(self, store: Any) -> None:
        (slot,) = self.put_many(store, ["a"], [k(1)], np.zeros((1, DIM), dtype=np.float32))
        assert self.put_many(store, ["a"], [k(1)], np.ones((1, DIM))) == [slot]
        assert store.gather([slot]).tolist() == [[1.0] * DIM]
        assert store.count() == 1

    def test_returned_rows_never_change(self, store: Any) -> None:
        (slot,) = self.put_many(store, ["a"], [k(1)], np.full((1, DIM), 7, dtype=np.float32))
        rows = store.gather([slot])
        rows[0, 0] = -1  # the caller's own copy
        assert store.gather([slot]).tolist() == [[7.0] * DIM]
        self.put_many(store, ["a"], [k(1)], np.full((1, DIM), 8, dtype=np.float32))
        store.delete_many([k(1)])
        self.put_many(store, ["b"], [k(2)], np.full((1, DIM), 9, dtype=np.float32))
        assert rows.tolist() == [[-1.0] + [7.0] * (DIM - 1)]

    def test_stored_rows_are_copied_in(self, store: Any) -> None:
        matrix = np.full((2, DIM), 3, dtype=np.float32)
        slots = self.put_many(store, ["a", "b"], [k(1), k(2)], matrix)
        matrix[:] = 0  # the caller reuses its buffer
        assert store.gather(slots).tolist() == [[3.0] * DIM] * 2

    def test_content_types_are_distinct(self, store: Any) -> None:
        self.put_many(store, ["abc"], [k(1)], np.zeros((1, DIM), dtype=np.float32))
        assert store.get_many([b"abc", "abc"])[0] is None

    def test_empty_batches(self, store: Any) -> None:
        super().test_empty_batches(store)
        assert store.get_many([]) == []
        assert store.gather([]).shape == (0, DIM)
        assert self.put_many(store, [], [], np.empty((0, DIM), dtype=np.float32)) == []


class TestRedisContract(RecordStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path, redis_server: Any) -> Iterator[Any]:
        from tiercache.tiers.redis import RedisTier

        t = RedisTier(url=redis_server.url, key_prefix=f"contract-{tmp_path.name}:")
        yield t
        t.clear()
        t.close()


class TestLmdbContract(RecordStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[LmdbTier]:
        t = LmdbTier(tmp_path / "w", fingerprint=FP, durability="fast")
        yield t
        t.close()

    def test_keys_chunked(self, store: LmdbTier) -> None:
        items = [(os.urandom(16), b"x") for _ in range(55)]
        store.put_many(items)
        assert sorted(store.keys(chunk=7)) == sorted(key for key, _ in items)

    def test_sample_returns_resident_keys(self, store: LmdbTier) -> None:
        items = [(os.urandom(16), b"x") for _ in range(50)]
        store.put_many(items)
        resident = {key for key, _ in items}
        got = store.sample([os.urandom(16) for _ in range(40)] + [b"\xff" * 16])
        assert len(got) == 41 and set(got) <= resident

    def test_reopen_keeps_data(self, tmp_path: Path) -> None:
        t = LmdbTier(tmp_path / "r", fingerprint=FP)
        t.put_many([(k(1), b"durable")])
        t.close()
        t2 = LmdbTier(tmp_path / "r", fingerprint=FP)
        assert t2.get_many([k(1)]) == [b"durable"]
        t2.close()

    def test_map_grows_when_full(self, tmp_path: Path) -> None:
        t = LmdbTier(tmp_path / "g", fingerprint=FP, durability="fast", map_size=1 << 20)
        value = os.urandom(1500)
        for _ in range(10):  # ~3.6 MB of records into a 1 MiB map
            t.put_many([(os.urandom(16), value) for _ in range(250)])
        assert t.count() == 2500
        assert t.stat()["map_size"] > 1 << 20
        t.close()

    def test_fingerprint_mismatch_is_reported(self, tmp_path: Path) -> None:
        LmdbTier(tmp_path / "f", fingerprint=FP).close()
        other = Fingerprint(model="m", dim=8, revision="2")
        with pytest.raises(FingerprintMismatchError, match="revision"):
            LmdbTier(tmp_path / "f", fingerprint=other)
        t = LmdbTier(tmp_path / "f", fingerprint=other, on_fingerprint_mismatch="coexist")
        assert len(t.manifest()["namespaces"]["default"]) == 2
        t.close()
        # another namespace is independent
        LmdbTier(tmp_path / "f", fingerprint=other, namespace="v2").close()

    def test_foreign_format_version_is_refused(self, tmp_path: Path) -> None:
        t = LmdbTier(tmp_path / "v", fingerprint=FP)
        h = t._h
        with h.env.begin(write=True, db=h.meta) as txn:
            txn.put(b"format", b"99")
        t.close()
        with pytest.raises(StoreError, match="format"):
            LmdbTier(tmp_path / "v", fingerprint=FP)

    def test_owner_only_permissions(self, tmp_path: Path) -> None:
        t = LmdbTier(tmp_path / "p", fingerprint=FP)
        t.close()
        assert stat.S_IMODE(os.stat(tmp_path / "p").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(tmp_path / "p" / "data.mdb").st_mode) & 0o077 == 0

    def test_unwritable_path_is_store_error(self, tmp_path: Path) -> None:
        f = tmp_path / "file"
        f.write_text("x")
        with pytest.raises(StoreError):
            LmdbTier(f / "sub", fingerprint=FP)

    def test_two_tier_objects_share_one_environment(self, tmp_path: Path) -> None:
        a = LmdbTier(tmp_path / "s", fingerprint=FP)
        b = LmdbTier(tmp_path / "s", fingerprint=FP)
        assert a._h is b._h
        a.put_many([(k(7), b"x")])
        a.close()
        assert b.get_many([k(7)]) == [b"x"]
        b.close()

    def test_forked_child_reopens(self, tmp_path: Path) -> None:
        t = LmdbTier(tmp_path / "fork", fingerprint=FP)
        t.put_many([(k(1), b"parent")])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: must reopen, read and write safely
            try:
                ok = t.get_many([k(1)]) == [b"parent"]
                t.put_many([(k(2), b"child")])
                os.write(w, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(r, 1) == b"1"
        assert t.get_many([k(2)]) == [b"child"]
        t.close()


class TestMemoryTier(VectorStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[MemoryTier]:
        t = MemoryTier(DIM, 300)
        yield t
        t.close()

    def test_capacity_from_budget(self) -> None:
        assert hot_capacity(0, 384) == 0
        assert hot_capacity(10 * (4 * 384 + 256), 384) == 10

    def test_full_tier_refuses_instead_of_evicting(self) -> None:
        t = MemoryTier(4, 1)
        t.put("a", k(1), np.zeros(4, dtype=np.float32))
        with pytest.raises(RuntimeError):
            t.put("b", k(2), np.zeros(4, dtype=np.float32))
        with pytest.raises(RuntimeError):
            t.put_many(["b"], [k(2)], np.zeros((1, 4)), [float("inf")], [None], [False])
        assert t.slot("a") is not None and t.count() == 1
        t.delete_many([k(1)])  # a freed slot is used again
        t.put("b", k(2), np.zeros(4, dtype=np.float32))
        assert t.slot("b") is not None

    def test_put_new_many_takes_the_slots_one_put_after_another_would(self) -> None:
        seq, batch = MemoryTier(4, 5), MemoryTier(4, 5)
        for t in (seq, batch):
            t.put("x", k(9), np.zeros(4, dtype=np.float32), 5.0)  # one slot used first
            t.delete_key(k(9))  # and freed: the free list is not in order any more
            t.put("y", k(8), np.zeros(4, dtype=np.float32))
        names, keys = ["a", "b", b"c"], [k(1), k(2), k(3)]
        exps, metas = [float("inf"), 7.0, 9.0], [None, b"m", None]
        want = [seq.put(c, key, None, e, m, True) for c, key, e, m in zip(names, keys, exps, metas)]
        assert batch.put_new_many(names, keys, exps, metas, True) == want
        for t in (seq, batch):
            assert t._free == seq._free and t.n_expiring == 2 and t.count() == 4
            assert [t.slot(c) for c in names] == want and [t.slot_of_key(x) for x in keys] == want
            assert [t.meta_at(s) for s in want] == metas and all(t.in_warm(s) for s in want)
            assert [t.expires[s] for s in want] == exps
        with pytest.raises(RuntimeError):  # two names, one free slot: nothing changes
            batch.put_new_many(["d", "e"], [k(4), k(5)], [float("inf")] * 2, [None] * 2, False)
        assert batch.count() == 4 and len(batch._free) == 1
        assert batch.put_new_many([], [], [], [], False) == []
        last = seq.put("d", k(4), None)  # the last free slot: n equal to what is free
        assert batch.put_new_many(["d"], [k(4)], [float("inf")], [None], False) == [last]
        assert batch._free == [] and batch.count() == 5

    def test_metadata_and_warm_flags(self) -> None:
        t = MemoryTier(4, 3)
        slots = t.put_many(
            ["a", "b", b"c"],
            [k(1), k(2), k(3)],
            np.zeros((3, 4), dtype=np.float32),
            [float("inf")] * 3,
            [None, b"m", None],
            [True, False, True],
        )
        assert t.meta_at(slots[1]) == b"m" and t.meta_at(slots[0]) is None
        assert not t.in_warm(slots[1]) and t.in_warm(slots[0])
        assert t.bytes_used() == 3 * (4 * 4 + 256)


def test_map_growth_and_aborts_beside_busy_reader_threads(tmp_path: Path) -> None:
    """A writer that must grow the map (abort, remap, replay) while three threads read in a
    tight loop finishes; py-lmdb's abort waits for other threads' LMDB calls, so readers
    must be held off during it. Run in a subprocess: a regression would hang, not fail."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, threading
        from tiercache.keys import Fingerprint
        from tiercache.tiers.lmdb import LmdbTier
        t = LmdbTier({str(tmp_path / "busy")!r}, fingerprint=Fingerprint(model="m", dim=8),
                     durability="fast", map_size=1 << 20, packed_record_len=1500)
        keys = [os.urandom(16) for _ in range(100)]
        t.put_many([(k, b"x" * 100) for k in keys])
        stop = False
        def reader():
            while not stop:
                assert t.get_many(keys[:10]) == [b"x" * 100] * 10
        threads = [threading.Thread(target=reader) for _ in range(3)]
        for th in threads:
            th.start()
        value = os.urandom(1500)
        for _ in range(12):
            t.put_many([(os.urandom(16), value) for _ in range(250)])
        try:
            t.put_many([(b"short", value)])  # refused before any transaction opens
        except ValueError:
            pass
        stop = True
        for th in threads:
            th.join()
        assert t.count() == 100 + 12 * 250
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
