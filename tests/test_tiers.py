"""Contract tests: one class per tier protocol, subclassed for each implementation."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiercache.errors import FingerprintMismatchError, StoreError
from tiercache.keys import Fingerprint
from tiercache.tiers.lmdb import LmdbTier
from tiercache.tiers.memory import MemoryTier, hot_capacity

FP = Fingerprint(model="m", dim=8, revision="1")


def k(i: int) -> bytes:
    return i.to_bytes(16, "big")


class RecordStoreContract:
    """Every byte-record tier passes these: the warm LMDB tier (plain and packed) and the
    shared Redis tier (on a real redis-server)."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Any]:
        raise NotImplementedError

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

    def test_keys_iterates_everything(self, store: Any) -> None:
        items = [(os.urandom(16), b"x") for _ in range(250)]
        store.put_many(items)
        assert sorted(store.keys()) == sorted(key for key, _ in items)

    def test_empty_batches(self, store: Any) -> None:
        store.put_many([])
        assert store.get_many([]) == []
        assert store.delete_many([]) == 0


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

    def test_buffers_are_copied(self, store: LmdbTier) -> None:
        store.put_many([(k(1), b"hello")])
        got = store.get_many([k(1)])[0]
        store.put_many([(k(1), b"world")])
        assert got == b"hello" and isinstance(got, bytes)

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


class TestMemoryTier:
    def test_capacity_from_budget(self) -> None:
        assert hot_capacity(0, 384) == 0
        assert hot_capacity(10 * (4 * 384 + 256), 384) == 10

    def test_put_gather_and_no_alias(self) -> None:
        t = MemoryTier(4, 2)
        t.put("a", k(1), np.arange(4, dtype=np.float32))
        slot = t.slot("a")
        assert slot is not None
        rows = t.gather([slot])
        t.delete_key(k(1))
        t.put("b", k(2), np.full(4, 9, dtype=np.float32))  # reuses the slot
        assert rows[0].tolist() == [0, 1, 2, 3]

    def test_full_tier_refuses_instead_of_evicting(self) -> None:
        t = MemoryTier(4, 1)
        t.put("a", k(1), np.zeros(4, dtype=np.float32))
        with pytest.raises(RuntimeError):
            t.put("b", k(2), np.zeros(4, dtype=np.float32))
        assert t.slot("a") is not None

    def test_content_types_are_distinct(self) -> None:
        t = MemoryTier(4, 2)
        t.put("abc", k(1), np.zeros(4, dtype=np.float32))
        assert t.slot(b"abc") is None


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


def test_memory_tier_batch_put_get_delete() -> None:
    t = MemoryTier(4, 3)
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    slots = t.put_many(
        ["a", "b", b"c"],
        [k(1), k(2), k(3)],
        vecs,
        [float("inf")] * 3,
        [None, b"m", None],
        [True, False, True],
    )
    assert t.get_many(["b", "zz", b"c", "a"]) == [slots[1], None, slots[2], slots[0]]
    assert t.gather(slots).tolist() == vecs.tolist()
    assert t.meta_at(slots[1]) == b"m" and not t.in_warm(slots[1]) and t.in_warm(slots[0])
    assert t.delete_many([k(1), k(9)]) == 1 and t.count() == 2
    assert sorted(t.keys()) == [k(2), k(3)]
