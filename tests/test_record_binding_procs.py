"""Record binding across real processes (record format v2, docs/record-format.md): a valid
record copied under another key, in the warm store or in Redis, is never that key's
vector in any other process or on any other host; reads miss (``get``/``mget`` None,
``exists`` False) and ``embed`` recomputes.

tests/test_record_binding.py checks every read path inside one process; here the record
is written by ``set`` in one worker process (tests/inval_worker.py), copied by the test
process, and read by other worker processes that were already running: one with its hot
tier on, one with it off (the compiled ``WarmReader`` serves ``get`` and ``embed``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.conftest import DIM, make_config
from tests.test_invalidation_procs import Worker, vec
from tiercache import TierCache, codec
from tiercache.encoders import HashEncoder
from tiercache.tiers.redis import TAG_BYTES, RecordSeal

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HOT_OFF = {"hot": {"enabled": False}}
ALPHA = 7.0  # alpha's vector is vec(ALPHA): no encoder output looks like it
# the forged keys, one per kind of read: get/mget/exists/mexists do not write, while embed
# and embed_many recompute and store the key's own vector (repairing the forgery)
LOOKUPS, EMBED, EMBED_MANY = "beta", "gamma", "delta"
TARGETS = (LOOKUPS, EMBED, EMBED_MANY)
COMPUTED = {t: HashEncoder(DIM).encode([t])[0] for t in TARGETS}


@pytest.fixture
def workers() -> Any:
    started: list[Worker] = []

    def start(root: Path, **sections: Any) -> Worker:
        w = Worker(root, **sections)
        started.append(w)
        return w.ready()

    yield start
    for w in started:
        w.close()


def assert_never_served(w: Worker, forge: Any) -> None:
    """Every public read of the forged keys in worker ``w``: misses, and recomputes that
    equal the encoder's vector, never alpha's. ``forge()`` (re)plants the copies first:
    each embed repairs the key it reads."""
    forge()
    t = LOOKUPS
    assert w("get", texts=[t]) == [None]
    assert w("mget", texts=[t, "filler"])[0] is None
    assert w("exists", texts=[t]) == [False]
    assert w("mexists", texts=[t, "filler"])[0] is False
    for method, text in (("embed", EMBED), ("embed_many", EMBED_MANY)):
        got = w(method, texts=[text, "filler"] if method == "embed_many" else [text])[0]
        assert got != vec(ALPHA), (method, "served the copied record")
        np.testing.assert_allclose(got, COMPUTED[text], err_msg=method)  # recomputed
    assert w("get", texts=["alpha"]) == [vec(ALPHA)]  # alpha's own record is intact


@pytest.mark.parametrize("with_metadata", [False, True], ids=["packed", "plain"])
def test_a_record_copied_under_another_key_in_the_warm_store_is_never_served_by_another_process(
    tmp_path: Path, workers: Any, with_metadata: bool
) -> None:
    root = tmp_path / "host"
    writer = workers(root)
    meta = {"src": "doc"} if with_metadata else None  # a blob: the record is stored plain
    writer("set", text="alpha", vec=vec(ALPHA), metadata=meta)
    for t in TARGETS:
        writer("embed", texts=[t])  # the targets' own records, overwritten by the copies
    hot_on, hot_off = workers(root), workers(root, **HOT_OFF)  # running before the copy
    for w in (hot_on, hot_off):
        assert w("get", texts=["alpha"]) == [vec(ALPHA)]

    # the copy is made by the test process, raw, through its own handle on the store
    with TierCache(make_config(root, **HOT_OFF), encoder=HashEncoder(DIM)) as c:
        warm = c._warm
        assert warm is not None
        ka = bytes.fromhex(c.key("alpha"))
        rec = warm.get_many([ka])[0]
        assert rec is not None and rec[4] == codec.FORMAT_VERSION
        assert codec.decode_record(rec, DIM, ka) is not None
        forged = [bytes.fromhex(c.key(t)) for t in TARGETS]

        def forge() -> None:  # a valid record, misfiled: its checksum is bound to alpha
            warm.put_many([(k, rec) for k in forged])
            assert warm.get_many(forged) == [rec] * len(forged)

        for w in (hot_on, hot_off):
            before = w("stats")["tiers"]["warm"]["corrupt"]
            assert_never_served(w, forge)
            assert w("stats")["tiers"]["warm"]["corrupt"] > before  # counted
        forge()
    # a process started after the copy, with a fresh compiled reader, refuses it too
    late = workers(root, **HOT_OFF)
    assert late("get", texts=[LOOKUPS]) == [None]
    assert late("exists", texts=[LOOKUPS]) == [False]
    assert late("stats")["tiers"]["warm"]["corrupt"] >= 1


def shared(url: str) -> dict[str, Any]:
    return {"shared": {"url": url, "backoff_initial": 0.05, "backoff_max": 0.2}}


def test_a_record_copied_under_another_key_in_redis_is_never_served_by_another_host(
    tmp_path: Path, workers: Any, redis_server: Any
) -> None:
    """Hosts are separate warm directories on one redis-server. Two copies of alpha's
    shared value are planted under other keys: the value as it is (its tag is over
    alpha's Redis key: refused as forged), and the record re-sealed for the new key, as a
    host that misfiled it would write it (its tag verifies; only the binding refuses it)."""
    sections = shared(redis_server.url)
    a = workers(tmp_path / "a", **sections)
    a("set", text="alpha", vec=vec(ALPHA))
    b = workers(tmp_path / "b", **sections)  # hot on
    c = workers(tmp_path / "c", **sections, **HOT_OFF)
    r = redis.Redis.from_url(redis_server.url)
    keys = TierCache(make_config(tmp_path / "keys"), encoder=HashEncoder(DIM))
    try:
        rkey = {t: b"tiercache:" + keys.key(t).encode() for t in ("alpha", *TARGETS)}
        ka = bytes.fromhex(keys.key("alpha"))
    finally:
        keys.close()
    value = r.get(rkey["alpha"])
    assert value is not None
    rec = RecordSeal().open(rkey["alpha"], value)  # the unkeyed seal: an XXH3-128 tag
    assert rec is not None and codec.decode_record(rec, DIM, ka) is not None
    assert rec[4] == codec.FORMAT_VERSION and len(rec) + TAG_BYTES == len(value)

    def plant(how: str) -> Any:
        def forge() -> None:
            for t in TARGETS:
                if how == "copied":
                    assert r.copy(rkey["alpha"], rkey[t], replace=True)
                else:
                    r.set(rkey[t], RecordSeal().seal(rkey[t], rec))
            assert all(r.exists(rkey[t]) for t in TARGETS)

        return forge

    for how in ("copied", "resealed"):
        for w in (b, c):
            assert w("get", texts=["alpha"]) == [vec(ALPHA)]  # the shared tier works
            before = w("stats")["tiers"]["shared"]
            assert_never_served(w, plant(how))
            after = w("stats")["tiers"]["shared"]
            if how == "copied":  # refused by its tag
                assert after["forged"] > before["forged"], (before, after)
            else:  # its tag verifies: refused by the record's binding to its key
                assert after["forged"] == before["forged"], (before, after)
                assert after["corrupt"] > before["corrupt"], (before, after)
            w("drop", texts=list(TARGETS))  # forget the recomputed vectors for the next round
