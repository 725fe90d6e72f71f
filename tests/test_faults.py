"""Infrastructure faults: damaged LMDB pages, damaged records, a full filesystem.

* **LMDB's own pages** (B-tree structure, meta pages, free pages), not only record bytes:
  a closed store's ``data.mdb`` gets bit flips, zeroed or garbage pages, or is truncated;
  a *subprocess* then opens it and reads every entry through every read API. Every read
  is the exact original vector or a miss (served by the encoder); no read API raises; a
  write may raise only the typed ``StoreError``; a store that cannot be used is refused on
  open with a ``StoreError`` (a truncated file is caught before LMDB maps the missing
  pages, which would be SIGBUS). LMDB has no page checksums: a damaged branch pointer can
  make its C code crash the reading process (SIGSEGV, ~2% of the soak's trials). The test
  survives that, counts it and reports where it happened; it fails if more than 10% of
  trials crash (see docs/reliability.md).
* **Records**: bit flips in headers and payloads, truncated records, damaged slot digests
  and index entries of packed segments: each a counted corrupt miss, recomputed and
  rewritten; never another key's vector.
* **Out of space**: a real 2 MiB tmpfs when we may mount one (root), and always a
  fault-injecting LMDB environment whose commits fail with ENOSPC: ``embed`` degrades
  (counted ``warm.errors``), ``set`` raises ``StoreError`` (not acknowledged), reads keep
  being served, every acknowledged write survives, and writes succeed once space returns.

``make soak`` (``TIERCACHE_SOAK=1``) runs more damage trials and seeds; figures go to the
soak summary (tests/soak.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pytest

from tiercache import StoreError, TierCache, codec
from tiercache.encoders import HashEncoder
from tiercache.tiers import lmdb as lmdb_tier

from . import soak
from .conftest import DIM, make_config

REF = HashEncoder(DIM)


def _verifies(buf: object, start: int, end: int, _: None, key: bytes) -> bool:
    """Whether the stored record of ``key`` verifies (``LmdbTier.get_many_at``'s form)."""
    return codec.decode_raw(memoryview(buf)[start:end], DIM, key) is not None  # type: ignore[arg-type]


def vec(i: int) -> np.ndarray:
    return np.random.default_rng([7, i]).standard_normal(DIM).astype(np.float32)


# --------------------------------------------------------------------------- LMDB pages

N_PACKED = 1500  # ~120 pages of 4 KiB: branch, leaf and overflow pages, a free list
N_PLAIN = 200
PAGE = 4096
DAMAGE_KINDS = (
    "flip8",
    "zero_page",
    "flip_meta",
    "flip64",
    "garbage_page",
    "truncate",
    "zero_meta",
)

VICTIM = textwrap.dedent("""
    import faulthandler, json, sys
    import numpy as np
    from tiercache import StoreError, TierCache, TierCacheError
    from tiercache.encoders import HashEncoder
    from tests.conftest import DIM, make_config
    from pathlib import Path

    def vec(i):
        return np.random.default_rng([7, i]).standard_normal(DIM).astype(np.float32)

    n_packed, n_plain = int(sys.argv[2]), int(sys.argv[3])
    faulthandler.enable()  # a crash in LMDB's C code still tells where it happened
    ref = HashEncoder(DIM)
    last = [None]

    def phase(name):
        if name != last[0]:
            last[0] = name
            print("phase", name, file=sys.stderr, flush=True)

    res = {"open": None, "open_typed": None, "exact": 0, "miss": 0, "wrong": 0, "read_errors": [],
           "write_errors": [], "acked_unreadable": 0, "checked": 0}
    cfg = make_config(Path(sys.argv[1]), hot={"enabled": False})
    phase("open")
    try:
        c = TierCache(cfg, encoder=HashEncoder(DIM))
    except Exception as exc:
        res["open"] = f"{type(exc).__name__}: {exc}"
        res["open_typed"] = isinstance(exc, StoreError)
        print(json.dumps(res))
        sys.exit(0)
    res["quarantined"] = c.stats()["tiers"]["warm"].get("quarantined", 0)
    want = {f"k{i}": vec(i) for i in range(n_packed) if i % 7}
    want |= {f"m{i}": vec(10**6 + i) for i in range(n_plain)}
    texts = list(want)

    def call(kind, name, fn):
        phase(name)
        try:
            return fn()
        except Exception as exc:
            res[kind].append(f"{name}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
            return None

    def judge(text, vector):
        res["checked"] += 1
        if vector is None:
            res["miss"] += 1
        elif np.array_equal(vector, want[text]):
            res["exact"] += 1
        else:
            res["wrong"] += 1

    for t in texts[::3]:
        e = call("read_errors", "get", lambda: c.get(t))
        judge(t, None if e is None else e.vector)
    found = call("read_errors", "mget", lambda: c.mget(texts)) or []
    for t, e in zip(texts, found):
        judge(t, None if e is None else e.vector)
    out = call("read_errors", "embed_many", lambda: c.embed_many(texts))
    if out is not None:
        fresh = ref.encode(texts)
        for i, t in enumerate(texts):  # stored vector or the encoder's, nothing else
            res["checked"] += 1
            if not (np.array_equal(out[i], want[t]) or np.array_equal(out[i], fresh[i])):
                res["wrong"] += 1
    for t in texts[1::50]:
        v = call("read_errors", "embed", lambda: c.embed(t))
        if v is not None:
            res["checked"] += 1
            ok = np.array_equal(v, want[t]) or np.array_equal(v, ref.encode([t])[0])
            res["wrong"] += not ok
        call("read_errors", "get_by_key", lambda: c.get_by_key(c.key(t)))
    call("read_errors", "mexists", lambda: c.mexists(texts))
    call("read_errors", "stats", lambda: c.stats())
    new = [(f"new{i}", vec(2 * 10**6 + i)) for i in range(20)]
    if call("write_errors", "mset", lambda: c.mset(new)) is not None:
        for (t, v), e in zip(new, c.mget([t for t, _ in new])):
            res["acked_unreadable"] += e is None or not np.array_equal(e.vector, v)
    call("write_errors", "mdrop", lambda: c.mdrop(texts[:40]))
    call("write_errors", "close", lambda: c.close())
    print(json.dumps(res))
""")


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed store: packed records, plain records (with metadata), a free list."""
    base = tmp_path_factory.mktemp("pristine")
    with TierCache(make_config(base, hot={"enabled": False}), encoder=HashEncoder(DIM)) as c:
        for start in range(0, N_PACKED, 100):
            c.mset([(f"k{i}", vec(i)) for i in range(start, min(N_PACKED, start + 100))])
        c.mset([(f"m{i}", vec(10**6 + i), {"i": i}) for i in range(N_PLAIN)])
        c.mdrop([f"k{i}" for i in range(0, N_PACKED, 7)])
    return base


def damage(data: bytearray, kind: str, rng: random.Random) -> str:
    """Damage a copy of data.mdb in place; returns what was done."""
    pages = len(data) // PAGE
    if kind == "flip8":  # 8 random bits outside the meta pages
        offs = [rng.randrange(2 * PAGE, len(data)) for _ in range(8)]
        for off in offs:
            data[off] ^= 1 << rng.randrange(8)
        return f"8 bit flips at {offs}"
    if kind == "flip64":  # 64 random bits anywhere
        for _ in range(64):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return "64 bit flips"
    if kind == "flip_meta":
        off = rng.randrange(2 * PAGE)
        data[off] ^= 1 << rng.randrange(8)
        return f"bit flip in a meta page at {off}"
    if kind == "zero_meta":
        pg = rng.randrange(2)
        data[pg * PAGE : (pg + 1) * PAGE] = bytes(PAGE)
        return f"meta page {pg} zeroed"
    pg = rng.randrange(2, pages)
    if kind == "zero_page":
        data[pg * PAGE : (pg + 1) * PAGE] = bytes(PAGE)
        return f"page {pg} zeroed"
    if kind == "garbage_page":
        data[pg * PAGE : (pg + 1) * PAGE] = rng.randbytes(PAGE)
        return f"page {pg} random bytes"
    assert kind == "truncate"
    cut = pg * PAGE - rng.choice([0, rng.randrange(1, PAGE)])
    del data[cut:]
    return f"truncated to {cut} bytes"


def run_victim(store: Path) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run(
        [sys.executable, "-c", VICTIM, str(store), str(N_PACKED), str(N_PLAIN)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    return proc.returncode, result, proc.stderr[-2000:]


def test_damaged_lmdb_pages_never_give_a_wrong_vector_or_an_untyped_error(
    pristine_store: Path, tmp_path: Path
) -> None:
    trials = soak.scale(len(DAMAGE_KINDS) * 2, len(DAMAGE_KINDS) * 72)  # soak: 504
    rng = random.Random(20240605)
    outcomes: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    problems: list[str] = []
    crashes: list[str] = []
    refusals: Counter[str] = Counter()
    t0 = time.monotonic()
    for trial in range(trials):
        kind = DAMAGE_KINDS[trial % len(DAMAGE_KINDS)]
        case = tmp_path / f"t{trial}"
        shutil.copytree(pristine_store, case)
        path = case / "warm" / "data.mdb"
        data = bytearray(path.read_bytes())
        what = damage(data, kind, rng)
        path.write_bytes(data)
        rc, res, err = run_victim(case)
        moved = list((case / "warm" / "quarantine").glob("*/data.mdb"))
        shutil.rmtree(case)
        where = f"trial {trial} ({what})"
        if res is None:  # LMDB has no page checksums: a bad page pointer can crash it
            outcomes["crashed"] += 1
            phases = [ln.split()[1] for ln in err.splitlines() if ln.startswith("phase ")]
            crashes.append(f"{where}: rc={rc} during {phases[-1] if phases else '?'}")
            continue
        if res["open"] is not None:
            outcomes["refused_on_open"] += 1
            refusals[res["open"].split(":")[0]] += 1
            if not res["open_typed"]:
                problems.append(f"{where}: open refused without a StoreError: {res['open']}")
            continue
        outcomes["opened"] += 1
        if res["quarantined"]:
            outcomes["quarantined"] += 1  # moved aside, an empty store opened: all misses
            if len(moved) != 1:
                problems.append(f"{where}: quarantined, but {len(moved)} stores were kept")
        else:
            outcomes["opened_with_misses" if res["miss"] else "opened_intact"] += 1
        for k in ("exact", "miss", "wrong", "checked", "acked_unreadable"):
            totals[k] += res[k]
        totals["typed_write_errors"] += len(res["write_errors"])
        if res["wrong"]:
            problems.append(f"{where}: {res['wrong']} wrong vectors")
        if res["read_errors"]:
            problems.append(f"{where}: a read raised: {res['read_errors'][:3]}")
        untyped = [e for e in res["write_errors"] if "tiercache.errors.StoreError" not in e]
        if untyped:
            problems.append(f"{where}: a write raised an untyped error: {untyped[:3]}")
    soak.record(
        "lmdb_page_damage",
        faults_injected=trials,
        trials=trials,
        kinds=list(DAMAGE_KINDS),
        outcomes=dict(outcomes),
        records_checked=totals["checked"],
        exact=totals["exact"],
        misses=totals["miss"],
        wrong_vectors=totals["wrong"],
        crashed=outcomes["crashed"],
        typed_write_errors=totals["typed_write_errors"],
        acked_after_damage_unreadable=totals["acked_unreadable"],
        caller_errors=sum(1 for p in problems if "raised" in p),
        refused_with=dict(refusals),
        crash_cases=crashes,
        seconds=round(time.monotonic() - t0, 1),
    )
    for line in crashes:
        print("crashed:", line)
    assert not problems, "\n".join(problems)
    # every damaged store is checked in a child process before use: the serving process
    # never crashes, and never refuses to start (a damaged store is moved aside)
    assert outcomes["crashed"] == 0, crashes
    assert outcomes["refused_on_open"] == 0
    assert outcomes["quarantined"] and outcomes["opened_intact"] + outcomes["opened_with_misses"]


def test_truncated_data_file_is_refused_on_open_not_a_crash(
    pristine_store: Path, tmp_path: Path
) -> None:
    """Without the size check LMDB maps the missing pages and the reader dies of SIGBUS.
    ``warm.on_damage: refuse`` raises; the default moves the store aside and goes on."""
    case = tmp_path / "cut"
    shutil.copytree(pristine_store, case)
    path = case / "warm" / "data.mdb"
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    refuse = make_config(case, hot={"enabled": False}, warm={"on_damage": "refuse"})
    with pytest.raises(StoreError, match="damaged.*truncated"):
        TierCache(refuse, encoder=HashEncoder(DIM))
    # refused cleanly: the files were released, so the same process can open it again,
    # and the default quarantines it: moved aside, an empty store in its place
    with TierCache(make_config(case, hot={"enabled": False}), encoder=HashEncoder(DIM)) as c:
        assert c.stats()["tiers"]["warm"]["quarantined"] == 1
        assert c.get("k1") is None
        assert np.array_equal(c.embed("k1"), REF.encode(["k1"])[0])
    (kept,) = (case / "warm" / "quarantine").iterdir()
    assert (kept / "data.mdb").stat().st_size == size // 2
    assert "truncated" in (kept / "why.txt").read_text()
    # closed cleanly: the next open trusts the stamp (no second quarantine)
    with TierCache(make_config(case, hot={"enabled": False}), encoder=HashEncoder(DIM)) as c:
        assert c.stats()["tiers"]["warm"]["quarantined"] == 0
        assert np.array_equal(c.get("k1").vector, REF.encode(["k1"])[0])  # type: ignore[union-attr]


def test_a_process_killed_with_the_store_open_gets_it_checked_next_time(tmp_path: Path) -> None:
    """The crash-loop case: a process dies with the store open (its marker stays); the next
    open walks the store in a child first. An intact store is kept, with its vectors."""
    from tiercache.tiers import guard

    cfg = make_config(tmp_path, hot={"enabled": False})
    code = (
        "import os, sys\n"
        "from tests.conftest import DIM, make_config\n"
        "from tiercache import TierCache\n"
        "from tiercache.encoders import HashEncoder\n"
        "from pathlib import Path\n"
        "c = TierCache(make_config(Path(sys.argv[1]), hot={'enabled': False}), "
        "encoder=HashEncoder(DIM))\n"
        "c.embed_many(['a', 'b', 'c'])\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=Path(__file__).parent.parent
    )
    assert proc.returncode == -9
    warm = str(tmp_path / "warm")
    assert guard.needs_check(warm) is not None and "without closing" in str(guard.needs_check(warm))
    assert guard.check_in_child(warm)[0]
    with TierCache(cfg, encoder=HashEncoder(DIM)) as c:
        assert c.stats()["tiers"]["warm"]["quarantined"] == 0
        assert [e is not None for e in c.mget(["a", "b", "c"])] == [True, True, True]
    assert guard.needs_check(warm) is None  # closed cleanly: stamped


# --------------------------------------------------------------------------- records


def corrupt_records(cache: TierCache, keys: list[bytes], rng: random.Random) -> Counter[str]:
    """Damage each key's stored record one way; returns how many of each."""
    warm = cache._warm
    assert warm is not None
    kinds: Counter[str] = Counter()
    half = len(keys) // 2
    # header / payload bit flips and truncation, through the tier (in place for packed)
    for k in keys[:half]:
        rec = bytearray(warm.get_many([k])[0] or b"")
        how = rng.choice(["header", "payload", "truncate"])
        if how == "header":
            rec[rng.randrange(codec.HEADER_SIZE)] ^= 1 << rng.randrange(8)
        elif how == "payload":
            rec[rng.randrange(codec.HEADER_SIZE, len(rec))] ^= 1 << rng.randrange(8)
        else:
            del rec[rng.randrange(len(rec)) :]
        warm.put_many([(k, bytes(rec))])
        kinds[how] += 1
    # packed-segment damage that never reaches a record's checksum: a flipped slot
    # digest, or an index entry pointing at another key's slot

    def seg_damage(txn: Any, h: Any) -> None:
        for k in keys[half:]:
            iv = bytes(txn.get(k, db=h.index))
            sid, off, ln = lmdb_tier._IDX_FULL.unpack(iv)
            seg = bytearray(txn.get(sid, db=h.segs))
            slot = 16 + ln
            if rng.random() < 0.5 or len(seg) // slot < 2:
                seg[off + rng.randrange(16)] ^= 1 << rng.randrange(8)
                txn.put(sid, bytes(seg), db=h.segs)
                kinds["slot_digest"] += 1
            else:
                other = (off + slot * rng.randrange(1, len(seg) // slot)) % len(seg)
                txn.put(k, lmdb_tier._IDX_FULL.pack(sid, other, ln), db=h.index)
                kinds["index_points_elsewhere"] += 1

    warm._write(seg_damage)
    return kinds


@pytest.mark.parametrize("seed", range(soak.scale(2, 30)))
def test_damaged_records_are_counted_misses_recomputed_and_rewritten(
    tmp_path: Path, seed: int
) -> None:
    n = soak.scale(400, 2000)
    rng = random.Random(seed)
    texts = [f"r{seed}-{i}" for i in range(n)]
    cfg = make_config(tmp_path, hot={"enabled": False})
    with TierCache(cfg, encoder=HashEncoder(DIM)) as c:
        c.embed_many(texts)
        victims = rng.sample(texts, n // 10)
        keys = [c._keys.digest(t) for t in victims]
        # a victim's slot may share a segment with another victim's index damage: keep the
        # index-entry victims apart from the slot-digest ones by damaging in one pass
        kinds = corrupt_records(c, keys, rng)
    enc = HashEncoder(DIM)
    calls: list[int] = []
    orig = enc.encode

    def counting(contents: Any) -> np.ndarray:
        calls.append(len(contents))
        return orig(contents)

    enc.encode = counting  # type: ignore[method-assign]
    want = REF.encode(texts)
    with TierCache(cfg, encoder=enc) as c:
        got = c.embed_many(texts)
        wrong = int((~(got == want).all(axis=1)).sum())
        s = c.stats()["tiers"]["warm"]
        assert wrong == 0
        assert s["corrupt"] == len(victims) and sum(calls) == len(victims)
        assert s["errors"] == 0
        again = c.embed_many(texts)  # rewritten: hits now, nothing recomputed
        assert np.array_equal(again, want) and sum(calls) == len(victims)
        assert c.stats()["tiers"]["warm"]["corrupt"] == len(victims)
        warm = c._warm
        assert warm is not None
        stored = list(warm.keys())
        ok = warm.get_many_at(stored, _verifies, None, None)
        assert all(ok) and len(stored) == n
    soak.record(
        "record_damage",
        faults_injected=len(victims),
        records_checked=2 * n,
        wrong_vectors=wrong,
        corrupt_counted=s["corrupt"],
        recomputed=sum(calls),
        seeds=1,
        **{f"kind_{k}": v for k, v in kinds.items()},
    )


# --------------------------------------------------------------------------- out of space


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``where`` (skips the test when we may not mount)."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the injected ENOSPC test still runs)")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill_until_full(
    cache: TierCache, acked: dict[str, np.ndarray], start: int, limit: int = 100_000
) -> tuple[int, list[BaseException]]:
    """``mset`` batches of 8 until 5 are refused; returns the next index and the errors."""
    errors: list[BaseException] = []
    i = start
    while len(errors) < 5 and i < limit:
        batch = [(f"s{i}-{j}", vec(i * 8 + j)) for j in range(8)]
        try:
            cache.mset(batch)
            acked.update(batch)
        except StoreError as exc:  # the only error a write may raise
            errors.append(exc)
        i += 1
    return i, errors


def check_out_of_space(
    cache: TierCache, acked: dict[str, np.ndarray], make_room: Any
) -> dict[str, int]:
    """The out-of-space contract, on a store that is already full."""
    i, errors = fill_until_full(cache, acked, 0)
    assert errors, "the store never filled up"
    # the cause is ENOSPC, or EIO where LMDB's write came up short on the full disk; the
    # error says which it was either way
    assert all("No space left on device" in str(e) for e in errors), errors
    before = cache.stats()["tiers"]["warm"]["errors"]
    assert before >= len(errors)
    # embed: served by the encoder, the failed warm write only counted
    texts = [f"e{j}" for j in range(300)]
    assert np.array_equal(cache.embed_many(texts), REF.encode(texts))
    assert cache.stats()["tiers"]["warm"]["errors"] > before
    # reads keep being served, nothing acknowledged is lost or changed
    names = list(acked)
    found = cache.mget(names)
    lost = sum(1 for e in found if e is None)
    wrong = sum(
        1 for n, e in zip(names, found) if e is not None and not np.array_equal(e.vector, acked[n])
    )
    assert lost == 0 and wrong == 0
    # space returns: writes succeed again
    make_room()
    after = [(f"after{j}", vec(10**7 + j)) for j in range(50)]
    cache.mset(after)
    acked.update(after)
    e = cache.get("after7")
    assert e is not None and np.array_equal(e.vector, vec(10**7 + 7))
    return {
        "acked_records": len(acked),
        "refused_writes": len(errors),
        "lost": lost,
        "wrong": wrong,
        "failed_commits": cache.stats()["tiers"]["warm"]["errors"],
    }


def verify_reopened(cfg: Any, acked: dict[str, np.ndarray]) -> None:
    with TierCache(cfg, encoder=HashEncoder(DIM)) as c:
        names = list(acked)
        for n, e in zip(names, c.mget(names)):
            assert e is not None and np.array_equal(e.vector, acked[n]), n
        warm = c._warm
        assert warm is not None
        keys = list(warm.keys())
        assert all(warm.get_many_at(keys, _verifies, None, None))


def test_real_full_filesystem_fails_writes_softly_and_recovers(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small") as fs:
        filler = fs / "filler"  # the space "returns" when it is deleted
        filler.write_bytes(bytes(512 * 1024))
        cfg = make_config(
            fs, hot={"enabled": False}, warm={"durability": "durable", "max_bytes": "64MiB"}
        )
        acked: dict[str, np.ndarray] = {}
        with TierCache(cfg, encoder=HashEncoder(DIM)) as c:
            figures = check_out_of_space(c, acked, filler.unlink)
        verify_reopened(cfg, acked)
    soak.record(
        "out_of_space_tmpfs",
        faults_injected=figures["failed_commits"],
        refused_sets=figures["refused_writes"],
        records_checked=2 * figures["acked_records"],
        acked_lost=figures["lost"],
        wrong_vectors=figures["wrong"],
        filesystem="tmpfs 2 MiB",
    )


class _FullDiskEnv:
    """An ``lmdb.Environment`` whose write transactions fail to commit with ENOSPC (as
    LMDB reports it: ``lmdb.DiskError``) while ``full`` is set; everything else passes
    through to the real environment."""

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self.full = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        txn = self._env.begin(*args, **kwargs)
        return _FullDiskTxn(txn, self) if kwargs.get("write") else txn


class _FullDiskTxn:
    def __init__(self, txn: lmdb.Transaction, env: _FullDiskEnv) -> None:
        self._txn = txn
        self._env = env

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)

    def commit(self) -> None:
        if self._env.full:
            self._env.refused += 1
            self._txn.abort()
            raise lmdb.DiskError("mdb_txn_commit: No space left on device")
        self._txn.commit()


def test_injected_enospc_fails_writes_softly_and_recovers(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, hot={"enabled": False}, warm={"durability": "durable"})
    acked: dict[str, np.ndarray] = {}
    with TierCache(cfg, encoder=HashEncoder(DIM)) as c:
        warm = c._warm
        assert warm is not None
        h = warm._h
        faulty = _FullDiskEnv(h.env)
        h.env = faulty  # type: ignore[assignment]
        try:
            c.mset([(f"pre{j}", vec(5 * 10**7 + j)) for j in range(100)])
            acked.update((f"pre{j}", vec(5 * 10**7 + j)) for j in range(100))
            faulty.full = True

            def room() -> None:
                faulty.full = False

            figures = check_out_of_space(c, acked, room)
        finally:
            h.env = faulty._env
    verify_reopened(cfg, acked)
    soak.record(
        "out_of_space_injected",
        faults_injected=faulty.refused,
        refused_sets=figures["refused_writes"],
        records_checked=2 * figures["acked_records"],
        acked_lost=figures["lost"],
        wrong_vectors=figures["wrong"],
    )


# --------------------------------------------------------------------------- Redis outages


def test_redis_outages_never_reach_the_caller_nor_give_a_wrong_vector(tmp_path: Path) -> None:
    """Two hosts x 2 threads embed/set/get through the shared tier while Redis is
    SIGKILLed and restarted (empty) or frozen (SIGSTOP) and thawed, cycle after cycle."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    assert server.proc is not None
    cycles = soak.scale(2, 20)
    hosts = []
    for name in ("a", "b"):
        cfg = make_config(
            tmp_path / name,
            shared={
                "url": server.url,
                "timeout": "100ms",
                "backoff_initial": 0.05,
                "backoff_max": 0.2,
            },
        )
        hosts.append(TierCache(cfg, encoder=HashEncoder(DIM)))
    errors: list[str] = []
    checked = [0]
    wrong = [0]
    what: list[str] = []  # each wrong answer, described (the soak found one: see the note)
    acked: dict[tuple[int, str], np.ndarray] = {}
    stop = threading.Event()

    def seen(bad: int, op: str, h: int, detail: str) -> None:
        if bad:
            wrong[0] += bad
            blocked = hosts[h]._read._inval.blocked
            what.append(f"{op} on host {h}: {detail} (local copies blocked: {blocked})")

    def work(h: int, tag: str) -> None:
        cache = hosts[h]
        rng = np.random.default_rng([h, ord(tag[-1])])
        i = 0
        try:
            while not stop.is_set():
                texts = [f"p{int(x)}" for x in rng.integers(0, 300, 4)]
                got = cache.embed_many(texts)
                bad = int((~(got == REF.encode(texts)).all(axis=1)).sum())
                seen(bad, "embed_many", h, f"{bad} wrong rows of {texts}")
                one = cache.embed(texts[0])
                seen(not np.array_equal(one, REF.encode(texts[:1])[0]), "embed", h, texts[0])
                name = f"set-{tag}-{i}"
                v = vec(10**8 + i) + np.float32(h)
                cache.set(name, v)
                acked[(h, name)] = v
                e = cache.get(name)
                state = "None" if e is None else f"a wrong vector from {e.tier}"
                seen(e is None or not np.array_equal(e.vector, v), "get after set", h, state)
                cache.mexists(texts)
                checked[0] += 7
                i += 1
        except BaseException as exc:  # noqa: BLE001 - any error reaching a caller fails
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(h, f"{h}{t}")) for h in (0, 1) for t in "pq"]
    for t in threads:
        t.start()
    rng = random.Random(5)
    faults = Counter[str]()
    try:
        for cycle in range(cycles):
            time.sleep(rng.uniform(0.2, 0.5))
            if cycle % 2 == 0:
                server.stop()  # SIGKILL: a crashed Redis host, restarted empty
                time.sleep(rng.uniform(0.1, 0.4))
                server.start()
                faults["killed"] += 1
            else:
                os.kill(server.proc.pid, signal.SIGSTOP)  # connections open, no replies
                time.sleep(rng.uniform(0.1, 0.4))
                os.kill(server.proc.pid, signal.SIGCONT)
                faults["frozen"] += 1
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        stats = [c.stats()["tiers"]["shared"] for c in hosts]
        for c in hosts:
            c.close()
        server.stop()
    # every acknowledged set is in its host's warm tier, bit-exact
    lost = 0
    for h in (0, 1):
        with TierCache(make_config(tmp_path / "ab"[h]), encoder=HashEncoder(DIM)) as c:
            names = [n for (hh, n) in acked if hh == h]
            for n, e in zip(names, c.mget(names)):
                lost += e is None
                wrong[0] += e is not None and not np.array_equal(e.vector, acked[(h, n)])
    soak.record(
        "redis_outages",
        cycles=cycles,
        faults_injected=cycles,
        killed=faults["killed"],
        frozen=faults["frozen"],
        records_checked=checked[0] + len(acked),
        acked_lost=lost,
        wrong_vectors=wrong[0],
        caller_errors=len(errors),
        outages=sum(s["outages"] for s in stats),
        shared_hits=sum(s["hits"] for s in stats),
        wrong_answers=what[:10],
    )
    assert errors == []
    assert wrong[0] == 0 and lost == 0, what[:10]
    assert sum(s["outages"] for s in stats) >= 1


def test_inspect_pages_walks_in_a_child_and_reports_damage(
    pristine_store: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from tiercache.cli import main

    case = tmp_path / "case"
    shutil.copytree(pristine_store, case)
    cfg = case / "c.yaml"
    cfg.write_text(
        f"encoder: {{kind: hash, dim: {DIM}}}\n"
        f"warm: {{path: '{case / 'warm'}'}}\nhot: {{enabled: false}}\n"
    )
    r = CliRunner().invoke(main, ["inspect", "-c", str(cfg), "--pages", "--no-progress"])
    assert r.exit_code == 0 and "pages: intact" in r.output, r.output
    path = case / "warm" / "data.mdb"
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    r = CliRunner().invoke(main, ["inspect", "-c", str(cfg), "--pages", "--no-progress"])
    assert r.exit_code == 1 and "damaged" in r.output and "truncated" in r.output, r.output
    assert path.exists()  # it changes nothing: the store is still where it was
    # the other tools check such a store too, and report it instead of moving it aside
    r = CliRunner().invoke(main, ["stats", "-c", str(cfg)])
    assert r.exit_code == 2 and "damaged" in r.output, r.output
    assert path.exists() and not (case / "warm" / "quarantine").exists()


def test_damage_met_while_serving_sets_the_store_aside_in_every_process(tmp_path: Path) -> None:
    """Pages damaged under two running worker processes: the first to meet the damage
    stops using the store and tells the other; both keep answering (misses, recomputed),
    neither crashes; the store is checked, moved aside and replaced while they run, and
    both move to the fresh store (tests/test_store_switch.py checks the switch itself)."""
    from tests.test_invalidation_procs import Worker

    hot_off = {"hot": {"enabled": False}}
    a, b = Worker(tmp_path, **hot_off).ready(), Worker(tmp_path, **hot_off).ready()
    try:
        texts = [f"t{i}" for i in range(400)]
        assert len(a("embed_many", texts=texts)) == 400
        assert b("get", texts=texts[:5])[0] is not None
        data = tmp_path / "warm" / "data.mdb"
        size = data.stat().st_size
        with data.open("r+b") as f:  # every page but the two meta pages: the root too
            f.seek(2 * PAGE)
            f.write(bytes(size - 2 * PAGE))
        assert a("get", texts=texts[:3]) == [None, None, None]  # misses, no crash
        computed = a("embed", texts=texts[:2])  # served by the encoder
        assert np.allclose(computed, REF.encode(texts[:2]))
        assert b("get", texts=texts[:3]) == [None, None, None]
        deadline = time.monotonic() + 60
        while not all(w("warm_state")["switches"] == 1 for w in (a, b)):
            assert time.monotonic() < deadline, (a("warm_state"), b("warm_state"))
            for w in (a, b):
                assert np.allclose(w("embed", texts=texts[5:7]), REF.encode(texts[5:7]))
            time.sleep(0.05)
        assert a("warm_state")["sealed"] is None and b("warm_state")["sealed"] is None
        assert a("warm_state")["quarantined"] + b("warm_state")["quarantined"] == 1
        assert np.allclose(a("embed", texts=["t5"]), REF.encode(["t5"]))  # stored anew
        assert np.allclose(b("get", texts=["t5"]), REF.encode(["t5"]))
    finally:
        a.close()
        b.close()
    c = Worker(tmp_path, **hot_off).ready()
    try:
        assert c("warm_state") == {"sealed": None, "quarantined": 0, "switches": 0}
        assert np.allclose(c("get", texts=["t5"]), REF.encode(["t5"]))  # in the fresh store
    finally:
        c.close()
    assert len(list((tmp_path / "warm" / "quarantine").iterdir())) == 1
