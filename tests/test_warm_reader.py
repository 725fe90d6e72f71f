"""The compiled warm read path (tiercache/_core_src/warm.c WarmReader) against the Python one.

A cache whose hot tier is off answers ``embed`` with ``_core.WarmReader``: the key's
BLAKE2b digest in C, one read transaction through the tier's own py-lmdb environment, the
record verified and decoded in C. These tests require it to agree with the Python path
(``TierCache.embed`` called as a plain method) on keys, vectors, counters and policy state,
and to hand every case it does not serve (misses, corrupt and expired records, closed
caches, forked children, other content types) to the Python path before counting anything.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiercache import ClosedError, InvalidContentError, TierCache
from tiercache.encoders import HashEncoder
from tiercache.keys import Fingerprint, KeyMaker

from .conftest import DIM, CountingEncoder, FakeClock, make_config
from .test_faults import corrupt_records

core: Any
try:
    from tiercache import _core as core
except ImportError:  # pragma: no cover - the CI build always has it (test_core.py)
    core = None

pytestmark = pytest.mark.skipif(core is None, reason="tiercache._core is not built")
REF = HashEncoder(DIM)


def warm_only(tmp: Path, clock: Any = None, encoder: Any = None, **warm: Any) -> TierCache:
    cfg = make_config(tmp, hot={"enabled": False}, warm=warm)
    kw: dict[str, Any] = {"encoder": encoder or CountingEncoder()}
    if clock is not None:
        kw["clock"] = clock
    return TierCache(cfg, **kw)


def python_embed(cache: TierCache) -> Any:
    """The Python implementation of ``embed`` on this cache (the C reader's fallback)."""
    return TierCache.embed.__get__(cache, TierCache)


def reader_for(fp: Fingerprint) -> Any:
    """A WarmReader used only for its digest (no tier behind it)."""
    km = KeyMaker(fp)
    return core.WarmReader(
        lambda c: None,
        __import__("threading").RLock(),
        None,
        {},
        km.prefix,
        KeyMaker.person,
        fp.dim,
        [],
        1,
        lambda: None,
        lambda: 0.0,
        lambda s: None,
        lambda b: 0,
    ), km


# --------------------------------------------------------------------------- digest


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_c_digest_equals_keymaker(content: str | bytes) -> None:
    reader, km = reader_for(Fingerprint(model="m", dim=8))
    got = reader.digest(content)
    try:
        want = km.digest(content)
    except InvalidContentError:  # pragma: no cover - str and bytes are always valid
        raise
    if got is None:  # left to KeyMaker: only a str that is not valid UTF-8 (lone surrogates)
        assert isinstance(content, str)
        with pytest.raises(UnicodeEncodeError):
            content.encode("utf-8")
    else:
        assert got == want


def test_c_digest_across_block_boundaries_and_fingerprints() -> None:
    """Every content length around BLAKE2b's 128-byte blocks, for prefixes of several
    lengths (the fingerprint's encoding decides where the content starts in a block)."""
    for model in ("m", "x" * 57, "y" * 128, "long-model-name/" * 20):
        reader, km = reader_for(Fingerprint(model=model, dim=384, prompt="query: "))
        for n in range(0, 400):
            for content in ("a" * n, "é" * (n // 2), b"\x00\xff" * (n // 2)):
                assert reader.digest(content) == km.digest(content), (model, n)
    reader, km = reader_for(Fingerprint(model="m", dim=8))
    assert reader.digest("\ud800") is None  # lone surrogate: KeyMaker's surrogatepass
    assert reader.digest(bytearray(b"x")) is None and reader.digest(3) is None
    # and it is what hashlib gives for KeyMaker's documented construction
    h = hashlib.blake2b(digest_size=16, person=KeyMaker.person)
    h.update(km.prefix + b"s" + (3).to_bytes(8, "little") + b"abc")
    assert reader.digest("abc") == h.digest()


# --------------------------------------------------------------------------- served hits


def test_warm_only_cache_uses_the_compiled_reader(tmp_path: Path) -> None:
    c = warm_only(tmp_path / "a")
    assert type(c.embed) is core.WarmReader and c._fast is None
    c.close()
    with_hot = TierCache(make_config(tmp_path / "b"), encoder=CountingEncoder())
    assert with_hot._fast_warm is None and type(with_hot.embed) is core.HotReader
    with_hot.close()


@pytest.mark.parametrize("codec", ["float32", "float16", "int8"])
@pytest.mark.parametrize("packed", [True, False])
def test_vectors_equal_the_python_path(tmp_path: Path, codec: str, packed: bool) -> None:
    rng = np.random.default_rng(3)
    texts = [f"t{i}" if i % 3 else f"é{i} ünï" for i in range(300)] + [b"raw\x00bytes", ""]
    vecs = rng.standard_normal((len(texts), DIM)).astype(np.float32)
    c = warm_only(tmp_path, codec=codec)
    if packed:
        c.mset(list(zip(texts, vecs)))
    else:  # metadata makes a record with a blob: a plain record, not a packed slot
        for t, v in zip(texts, vecs):
            c.set(t, v, metadata={"t": str(t)})
    py = python_embed(c)
    enc = c.encoder
    assert isinstance(enc, CountingEncoder)
    for t in texts:
        got, want = c.embed(t), py(t)
        assert got.dtype == np.float32 and got.shape == (DIM,)
        assert np.array_equal(got, want)
        assert got.flags.writeable and got.flags.owndata
    assert enc.calls == 0
    tol = {"float32": 0, "float16": 2e-3, "int8": 3e-2}[codec]
    assert np.abs(np.stack([c.embed(t) for t in texts]) - vecs).max() <= tol * 4
    c.close()


def _workload(cache: TierCache, embed: Any, texts: list[str], rng: random.Random) -> None:
    for _ in range(3000):
        t = rng.choice(texts)
        v = embed(t)
        assert np.array_equal(v, REF.encode([t])[0])


def test_counters_and_policy_state_equal_the_python_path(tmp_path: Path) -> None:
    """The same requests through C and through Python leave the same stats and the same
    policy state (the access buffer and the sketch's counters)."""
    texts = [f"k{i}" for i in range(400)]
    caches = []
    for name in ("c", "py"):
        c = warm_only(tmp_path / name, encoder=HashEncoder(DIM))
        c.embed_many(texts[:300])  # stored; the other 100 are misses
        caches.append(c)
    c_cache, py_cache = caches
    _workload(c_cache, c_cache.embed, texts, random.Random(5))
    _workload(py_cache, python_embed(py_cache), texts, random.Random(5))
    assert c_cache._fast_warm.hits > 0
    s_c, s_py = c_cache.stats(), py_cache.stats()
    for tier in ("hot", "warm"):
        for field in ("hits", "misses", "corrupt", "expired", "errors"):
            assert s_c["tiers"][tier].get(field) == s_py["tiers"][tier].get(field), (tier, field)
    assert s_c["lookups"] == s_py["lookups"]
    assert s_c["tiers"]["warm"]["latency_us"]["count"] > 0
    e_c, e_py = c_cache._engine, py_cache._engine
    assert e_c._buffer == e_py._buffer
    assert e_c.sketch._counts == e_py.sketch._counts
    assert e_c.sketch.additions == e_py.sketch.additions > 0
    for c in caches:
        c.close()


# --------------------------------------------------------------------------- fallbacks


def test_misses_go_to_the_encoder_and_are_stored(tmp_path: Path) -> None:
    c = warm_only(tmp_path)
    enc = c.encoder
    assert isinstance(enc, CountingEncoder)
    v = c.embed("new")
    assert enc.calls == 1 and np.array_equal(v, REF.encode(["new"])[0])
    assert np.array_equal(c.embed("new"), v) and enc.calls == 1
    assert c._fast_warm.hits == 1
    s = c.stats()["tiers"]
    assert s["warm"]["hits"] == 1 and s["warm"]["misses"] == 1 and s["hot"]["misses"] == 2
    c.close()


def test_a_native_checksum_that_disagrees_is_not_used(tmp_path: Path) -> None:
    """The C function is used only when it agrees with the callable: xxh64 lives in the
    same extension module as xxh3 (which exports XXH3_64bits) but hashes differently."""
    from xxhash import xxh3_64_intdigest, xxh64_intdigest

    import tiercache.tiers.lmdb as lmdb_tier

    c = warm_only(tmp_path)

    def reader(fn: Any) -> Any:
        return core.WarmReader(
            TierCache.embed.__get__(c, type(c)),
            c._lock,
            c._warm,
            lmdb_tier.__dict__,
            c._keys.prefix,
            KeyMaker.person,
            c.dim,
            c._engine._buffer,
            c._engine.access_buffer,
            c._engine.drain,
            c._clock,
            c._record_warm_latency,
            fn,
        )

    assert reader(xxh3_64_intdigest).native_xxh3
    assert not reader(xxh64_intdigest).native_xxh3
    c.close()


@pytest.mark.parametrize("native", [True, False], ids=["native-xxh3", "python-xxh3"])
def test_corrupt_records_are_never_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """Damaged records are caught with the checksum computed by xxhash's C function (looked
    up at construction) and with the Python callable (a wrapper it cannot look through)."""
    from xxhash import xxh3_64_intdigest

    import tiercache.readpath as cache_mod

    if not native:
        monkeypatch.setattr(
            cache_mod, "xxh3_64_intdigest", lambda b: xxh3_64_intdigest(b)
        )  # a Python function
    rng = random.Random(11)
    texts = [f"r{i}" for i in range(400)]
    c = warm_only(tmp_path, encoder=HashEncoder(DIM))
    assert c._warm_reader.native_xxh3 is native
    c.embed_many(texts)
    victims = rng.sample(texts, 40)
    corrupt_records(c, [c._keys.digest(t) for t in victims], rng)
    for t in texts:  # one by one: every get goes through the C reader first
        assert np.array_equal(c.embed(t), REF.encode([t])[0]), t
    s = c.stats()["tiers"]["warm"]
    assert s["corrupt"] == len(victims) and s["hits"] == len(texts) - len(victims)
    for t in victims:  # rewritten: now served by C
        assert np.array_equal(c.embed(t), REF.encode([t])[0])
    assert c.stats()["tiers"]["warm"]["hits"] == len(texts)
    c.close()


def test_expiry_uses_the_callers_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    c = warm_only(tmp_path, clock=clock)
    c.set("a", np.ones(DIM, np.float32), ttl=10)
    c.set("b", np.ones(DIM, np.float32) * 2)
    assert c.embed("a")[0] == 1 and c._fast_warm.hits == 1
    clock.advance(11)
    enc = c.encoder
    assert isinstance(enc, CountingEncoder)
    assert np.array_equal(c.embed("a"), REF.encode(["a"])[0]) and enc.calls == 1
    s = c.stats()["tiers"]["warm"]
    assert s["expired"] == 1 and s["hits"] == 1
    assert c.embed("b")[0] == 2
    c.close()


def test_a_clock_that_raises_or_closes_the_cache(tmp_path: Path) -> None:
    clock = FakeClock()
    with warm_only(tmp_path, clock=clock) as c:
        c.set("a", np.ones(DIM, np.float32), ttl=10)

    def bad() -> float:
        raise RuntimeError("clock failed")

    c2 = warm_only(tmp_path, clock=bad)
    with pytest.raises(RuntimeError, match="clock failed"):
        c2.embed("a")  # as the Python path: the caller's clock error reaches the caller
    c2.close()
    holder: list[TierCache] = []

    def closing() -> float:
        holder[0].close()
        return clock()

    c3 = warm_only(tmp_path, clock=closing)
    holder.append(c3)
    with pytest.raises(ClosedError):
        c3.embed("a")


def test_closed_cache_and_bad_content(tmp_path: Path) -> None:
    c = warm_only(tmp_path)
    reader = c.embed
    c.embed("x")
    with pytest.raises(InvalidContentError):
        c.embed(3)  # type: ignore[arg-type]
    assert np.array_equal(c.embed("\ud800x"), c.embed("\ud800x"))  # KeyMaker's surrogatepass
    c.close()
    with pytest.raises(ClosedError):
        c.embed("x")
    with pytest.raises(ClosedError):
        reader("x")  # a reference taken before close falls back too


def test_reads_after_the_map_grows_and_in_a_forked_child(tmp_path: Path) -> None:
    c = warm_only(tmp_path, encoder=HashEncoder(DIM), map_size="1MiB")
    first = [f"a{i}" for i in range(50)]
    c.embed_many(first)
    assert all(np.array_equal(c.embed(t), REF.encode([t])[0]) for t in first)
    more = [f"b{i}" for i in range(15000)]  # grows the map (the reader rebinds)
    c.embed_many(more)
    assert c._warm is not None and c._warm.stat()["map_size"] > 1 << 20
    hits = c._fast_warm.hits
    assert all(np.array_equal(c.embed(t), REF.encode([t])[0]) for t in first + more[::500])
    assert c._fast_warm.hits == hits + len(first) + len(more[::500])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the inherited handle is reopened by the Python path first
        try:
            ok = all(np.array_equal(c.embed(t), REF.encode([t])[0]) for t in first * 2)
            served = c._fast_warm.hits
            os.write(w, b"1" if ok and served > 0 else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert np.array_equal(c.embed(first[0]), REF.encode([first[0]])[0])
    c.close()


def test_threads_read_while_a_writer_grows_the_map(tmp_path: Path) -> None:
    import threading

    c = warm_only(tmp_path, encoder=HashEncoder(DIM), map_size="1MiB")
    base = [f"s{i}" for i in range(200)]
    c.embed_many(base)
    want = {t: REF.encode([t])[0] for t in base}
    stop = threading.Event()
    seen: list[tuple[str, np.ndarray]] = []

    def read() -> None:  # light (checked afterwards): the writer needs the GIL too
        rng = random.Random(threading.get_ident())
        while not stop.is_set():
            t = rng.choice(base)
            seen.append((t, c.embed(t)))

    threads = [threading.Thread(target=read) for _ in range(2)]
    for th in threads:
        th.start()
    try:
        for i in range(3):
            c.embed_many([f"w{i}-{j}" for j in range(2500)])
    finally:
        stop.set()
        for th in threads:
            th.join()
    wrong = [t for t, v in seen if not np.array_equal(v, want[t])]
    assert len(seen) > 100 and c._fast_warm.hits > 0
    assert not wrong
    assert c._warm is not None and c._warm.stat()["map_size"] > 1 << 20
    c.close()


# --------------------------------------------------------------------------- batches


def _batch_case(tmp: Path, use_c: bool, hot: bool) -> tuple[list[np.ndarray], dict[str, Any]]:
    """One scripted run of embed_many / get_many over hits, misses, repeats, blobs,
    expired and corrupt records; the C rows reader on or off."""
    clock = FakeClock()
    cfg = make_config(tmp, hot={"enabled": hot, "max_bytes": 32 * (4 * DIM + 256)})
    c = TierCache(cfg, encoder=HashEncoder(DIM), clock=clock)
    if not use_c:
        c._warm_reader = None
    rng = random.Random(2)
    texts = [f"b{i}" for i in range(300)]
    c.embed_many(texts[:200] + texts[240:])
    for t in texts[200:220]:  # records with a blob
        c.set(t, np.full(DIM, 3, np.float32), metadata={"t": t})
    for t in texts[220:240]:
        c.set(t, np.full(DIM, 4, np.float32), ttl=5)
    corrupt_records(c, [c._keys.digest(t) for t in texts[240:250]], random.Random(4))
    clock.advance(10)  # 220..239 expire
    outs = []
    for _ in range(6):
        batch = [rng.choice(texts) for _ in range(150)] + ["\ud800lone", b"bytes"]
        outs.append(c.embed_many(batch))
    entries = c.mget(texts[195:225])
    outs.append(
        np.stack([e.vector if e is not None else np.zeros(DIM, np.float32) for e in entries])
    )
    metas = [e.metadata if e is not None else None for e in entries]
    s = c.stats()
    c.close()
    return outs, {
        "tiers": {
            t: {
                k: v
                for k, v in s["tiers"][t].items()
                if k
                in (
                    "hits",
                    "misses",
                    "corrupt",
                    "expired",
                    "errors",
                    "promotions",
                    "demotions",
                    "writes",
                )
            }
            for t in ("hot", "warm")
        },
        "lookups": s["lookups"],
        "metas": metas,
        "encoder": {k: s["encoder"][k] for k in ("calls", "texts")},
    }


@pytest.mark.parametrize("hot", [False, True])
def test_embed_many_and_get_many_equal_the_python_rows(tmp_path: Path, hot: bool) -> None:
    got_c, stats_c = _batch_case(tmp_path / "c", True, hot)
    got_py, stats_py = _batch_case(tmp_path / "py", False, hot)
    assert len(got_c) == len(got_py)
    for a, b in zip(got_c, got_py):
        assert np.array_equal(a, b)
    assert stats_c == stats_py
    assert stats_c["tiers"]["warm"]["corrupt"] >= 1 and stats_c["tiers"]["warm"]["expired"] >= 1
    assert any(m is not None for m in stats_c["metas"])


def test_rows_in_segment_order_equal_the_python_rows(tmp_path: Path) -> None:
    """rows() locates every packed slot first and reads the segments in id order: slots of
    one segment, segments that are gone, slots past their segment's end and plain records
    all come out as the Python path reads them, with identity rows (None) and with lists."""
    from tiercache.tiers import lmdb as lmdb_tier

    c = warm_only(tmp_path)
    texts = [f"s{i}" for i in range(600)]
    c.embed_many(texts)
    for t in texts[590:]:  # plain records (with a blob) beside the packed ones
        c.set(t, np.full(DIM, 5, np.float32), metadata={"t": t})
    keys = [c._keys.digest(t) for t in texts]
    warm = c._warm
    assert warm is not None
    gone: list[bytes] = []

    def damage(txn: Any, h: Any) -> None:
        sids = sorted({bytes(txn.get(k, db=h.index))[:8] for k in keys[:590]})
        assert len(sids) > 4  # several segments, several slots each
        txn.delete(sids[1], db=h.segs)  # an index entry without its segment
        gone.append(sids[1])
        k = keys[7]  # a slot past the end of its segment
        sid, off, ln = lmdb_tier._IDX_FULL.unpack(bytes(txn.get(k, db=h.index)))
        txn.put(k, lmdb_tier._IDX_FULL.pack(sid, off + 10**6, ln), db=h.index)

    warm._write(damage)
    r = c._warm_reader
    order = random.Random(3).sample(texts, len(texts))  # not in segment order
    n = len(order)
    segof = warm._read(lambda txn, h: {k: bytes(txn.get(k, db=h.index) or b"")[:8] for k in keys})
    want_status = []
    for t in order:
        k = c._keys.digest(t)
        if t in texts[590:]:
            want_status.append(2)  # a blob: the Python path reads it
        elif k == keys[7] or segof[k] in gone:
            want_status.append(3)
        else:
            want_status.append(1)
    out_id = np.zeros((n, DIM), np.float32)
    got = r.rows(order, out_id, None, 0.0, c._keys.digest)
    out_lists = np.zeros((n + 1, DIM), np.float32)
    rows = [[j] for j in range(n)]
    rep = want_status.index(1)
    rows[rep] = [rep, n]  # a repeat row, copied from the first
    assert got == r.rows(order, out_lists, rows, 0.0, c._keys.digest)
    okeys, status, _ = got
    assert okeys == [c._keys.digest(t) for t in order]
    assert list(status) == want_status
    served = [j for j, s in enumerate(status) if s == 1]
    assert len(served) > 500
    expected = HashEncoder(DIM).encode(order)  # what embed_many stored
    assert np.array_equal(out_id[served], expected[served])
    assert np.array_equal(out_lists[:n][served], expected[served])
    assert np.array_equal(out_lists[n], out_lists[rep])
    c.close()


def test_rows_validates_its_arguments(tmp_path: Path) -> None:
    c = warm_only(tmp_path)
    r = c._warm_reader
    out = np.empty((2, DIM), np.float32)
    with pytest.raises(TypeError):
        r.rows(["a"], np.empty((2, DIM), np.float64), [[0]], 0.0, c._keys.digest)
    with pytest.raises(TypeError):
        r.rows(["a"], out[:, :4], [[0]], 0.0, c._keys.digest)
    with pytest.raises(ValueError):
        r.rows(["a", "b"], out, [[0]], 0.0, c._keys.digest)
    with pytest.raises(IndexError):
        r.rows(["a"], out, [[2]], 0.0, c._keys.digest)
    with pytest.raises(TypeError):
        r.rows(["a"], out, [[]], 0.0, c._keys.digest)
    with pytest.raises(ValueError):
        r.rows(["a"], out, ([0],), 0.0, c._keys.digest)  # neither None nor a list
    with pytest.raises(IndexError):
        r.rows(["a", "b", "c"], out, None, 0.0, c._keys.digest)  # identity rows past out
    with pytest.raises(TypeError):
        r.rows([3], out, [[0]], 0.0, lambda x: b"short")
    keys, status, _ = r.rows(["a", "\ud800"], out, [[0], [1]], 0.0, c._keys.digest)
    assert keys == [c._keys.digest("a"), c._keys.digest("\ud800")] and status == b"\0\0"
    c.close()
    assert r.rows(["a"], out, [[0]], 0.0, c._keys.digest) is None  # closed tier: Python


@pytest.mark.parametrize("portable", [False, True], ids=["chosen", "portable"])
def test_float16_conversion_is_exact_for_every_half(portable: bool) -> None:
    """All 65,536 float16 bit patterns convert as numpy converts them, with the conversion
    the reader uses on this CPU (F16C where it has it) and with the portable loop: zeros of
    both signs, subnormals, normals, infinities bit for bit; NaNs stay NaN with their sign."""
    h = np.arange(65536, dtype=np.uint16)
    got = core.f16_to_f32(h.tobytes(), portable)
    want = h.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert got.dtype == np.float32 and got.shape == (65536,)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    assert np.isnan(got[nan]).all()
    assert np.array_equal(np.signbit(got[nan]), np.signbit(want[nan]))


@pytest.mark.parametrize("portable", [False, True], ids=["chosen", "portable"])
def test_float16_conversion_of_any_length_and_offset(portable: bool) -> None:
    """Lengths that are not a multiple of the vector width (the F16C loop's scalar tail) and
    buffers that start at an odd byte convert exactly."""
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 2**16, 70, dtype=np.uint16).tobytes()
    for start in (0, 1, 3):
        for n in range(0, 34):
            buf = raw[start : start + 2 * n]
            want = np.frombuffer(buf, dtype="<f2").astype(np.float32)
            got = core.f16_to_f32(buf, portable)
            nan = np.isnan(want)
            assert got.shape == (n,)
            assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
            assert np.isnan(got[nan]).all()


def test_row_check_agrees_with_numpy_on_every_kind_of_row() -> None:
    """``_core.row_check`` (an explicit write's check, rows.c) against numpy's
    ``isfinite().all()`` and ``any()``: special values anywhere, signed zeros, subnormals,
    huge values, strided views; other arrays are refused, typed."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal(DIM).astype(np.float32)
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3.4e38, -3.4e38]
    rows = [base, np.zeros(DIM, np.float32), -np.zeros(DIM, np.float32)]
    for value in specials:
        for where in (0, DIM // 2, DIM - 1):
            for fill in (base, np.zeros(DIM, np.float32)):
                row = fill.copy()
                row[where] = value
                rows.append(row)
    matrix = rng.standard_normal((DIM, 8)).astype(np.float32)
    matrix[7, 2] = np.nan
    rows += [matrix[:, 1], matrix[:, 2], base[::-1], base[::3], np.zeros(0, np.float32)]
    for row in rows:
        want = 1 if not np.isfinite(row).all() else (0 if row.any() else 2)
        assert core.row_check(row) == want, row
    for bad in (base.astype(np.float64), base.reshape(2, -1), base.astype(">f4"), [1.0]):
        with pytest.raises(TypeError):
            core.row_check(bad)
