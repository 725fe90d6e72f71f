"""The shared Redis tier, against real redis-server processes on loopback."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.conftest import DIM, CountingEncoder, FakeClock, make_config
from tests.redis_server import RedisServer
from tiercache import TierCache, codec
from tiercache.errors import ConfigError, StoreError
from tiercache.tiers.redis import RecordSeal, RedisTier, SharedUnavailable, glob_escape

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def host(
    tmp: Path,
    name: str,
    url: str | None = None,
    clock: Any = None,
    encoder: CountingEncoder | None = None,
    **shared: Any,
) -> tuple[TierCache, Any]:
    """A TierCache standing for one host: its own warm directory, the shared Redis."""
    enc = encoder or CountingEncoder()
    sec: dict[str, Any] = {"backoff_initial": 0.05, "backoff_max": 0.2}
    if url is not None:
        sec["url"] = url
    sec.update(shared)
    cfg = make_config(tmp / name, shared=sec)
    kw: dict[str, Any] = {"encoder": enc}
    if clock is not None:
        kw["clock"] = clock
    return TierCache(cfg, **kw), enc


K0 = bytes(16)  # the key of rec()'s records


def rec(i: int) -> bytes:
    """Opaque record bytes for the tier alone (it never decodes what it stores)."""
    return codec.encode_record(np.full(DIM, i, dtype=np.float32), "float32", 0.0, None, key=K0)


# --------------------------------------------------------------------------- the tier alone


def test_tier_contract_round_trip_order_misses_and_deletes(redis_server: RedisServer) -> None:
    tier = RedisTier(url=redis_server.url, key_prefix="t:")
    keys = [bytes([i]) * 16 for i in range(10)]
    tier.put_many([(k, rec(i), None) for i, k in enumerate(keys[:6])])
    got = tier.get_many(keys[::-1])
    assert got == [None] * 4 + [rec(i) for i in range(5, -1, -1)]
    assert tier.exists_many(keys[4:8]) == [True, True, False, False]
    assert sorted(tier.keys()) == sorted(keys[:6])
    assert tier.count() == 6
    assert tier.delete_each([keys[0], keys[9], keys[1]]) == [True, False, True]
    assert tier.delete_many(keys) == 4
    assert tier.get_many(keys) == [None] * 10
    assert tier.get_many([]) == [] and tier.delete_many([]) == 0
    # the key layout operators see in Redis
    tier.put_many([(keys[2], rec(2), None)])
    assert redis.Redis.from_url(redis_server.url).exists(b"t:" + keys[2].hex().encode()) == 1
    tier.close()


def test_tier_large_batches_cross_the_mget_chunk(redis_server: RedisServer) -> None:
    tier = RedisTier(url=redis_server.url)
    keys = [i.to_bytes(16, "big") for i in range(2500)]
    tier.put_many([(k, rec(i % 7), None) for i, k in enumerate(keys) if i % 3])
    got = tier.get_many(keys)
    assert len(got) == 2500
    for i, value in enumerate(got):
        assert value == (rec(i % 7) if i % 3 else None)
    tier.close()


def test_tier_ttl_is_set_with_the_value(redis_server: RedisServer) -> None:
    tier = RedisTier(url=redis_server.url)
    k = b"k" * 16
    tier.put_many([(k, rec(1), 100)])
    r = redis.Redis.from_url(redis_server.url)
    assert 0 < r.pttl(tier.redis_key(k)) <= 100
    time.sleep(0.25)
    assert tier.get_many([k]) == [None]
    tier.close()


def test_clear_only_touches_its_prefix_even_with_glob_characters(
    redis_server: RedisServer,
) -> None:
    prefixes = ["emb[ab]:", "emba:", "emb*:", "emb?:", "emb\\:", "emb:"]
    tiers = [RedisTier(url=redis_server.url, key_prefix=p) for p in prefixes]
    k = b"x" * 16
    for i, t in enumerate(tiers):
        t.put_many([(k, rec(i), None)])
    assert tiers[0].clear() == 1
    assert tiers[0].get_many([k]) == [None]
    for i, t in enumerate(tiers[1:], start=1):
        assert t.get_many([k]) == [rec(i)], prefixes[i]
    assert tiers[2].clear() == 1  # "emb*:" must not match "emba:" or "emb:"
    assert [t.get_many([k])[0] is not None for t in tiers] == [False, True, False, True, True, True]
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"


def test_tier_down_fails_fast_and_backs_off(tmp_path: Path) -> None:
    now = [0.0]
    port = RedisServer(tmp_path).port  # free, nothing listening
    tier = RedisTier(
        url=f"redis://127.0.0.1:{port}", backoff_initial=1.0, backoff_max=4.0, clock=lambda: now[0]
    )
    with pytest.raises(redis.ConnectionError):
        tier.get_many([b"a" * 16])
    assert tier.outages == 1 and not tier.available
    with pytest.raises(SharedUnavailable):
        tier.get_many([b"a" * 16])  # in back-off: no connection attempt at all
    now[0] = 1.5  # the probe fails again: the back-off doubles
    with pytest.raises(redis.ConnectionError):
        tier.get_many([b"a" * 16])
    assert tier.describe()["retry_in_s"] == pytest.approx(2.0)
    assert tier.outages == 1  # one outage, several failed probes
    server = RedisServer(tmp_path, port).start()
    try:
        now[0] = 10.0
        assert tier.get_many([b"a" * 16]) == [None]
        assert tier.available and tier.describe()["state"] == "up"
    finally:
        server.stop()
        tier.close()


# --------------------------------------------------------------------------- two hosts


def test_host_b_finds_what_host_a_computed_without_an_encoder_call(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, enc_a = host(tmp_path, "a", redis_server.url)
    b, enc_b = host(tmp_path, "b", redis_server.url)
    va = a.embed("the quick brown fox")
    assert enc_a.texts == 1
    vb = b.embed("the quick brown fox")
    assert enc_b.calls == 0
    np.testing.assert_array_equal(va, vb)
    sb = b.stats()["tiers"]
    assert sb["shared"]["hits"] == 1 and sb["warm"]["misses"] == 1
    assert sb["warm"]["promotions"] == 1  # the shared hit filled B's warm tier
    b.embed("the quick brown fox")
    assert b.stats()["tiers"]["hot"]["hits"] == 1 and b.stats()["tiers"]["shared"]["hits"] == 1
    assert a.stats()["tiers"]["shared"]["writes"] == 1
    a.close()
    b.close()


def test_batches_between_hosts_keep_order_and_duplicates(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, enc_a = host(tmp_path, "a", redis_server.url)
    b, enc_b = host(tmp_path, "b", redis_server.url)
    texts = [f"doc {i}" for i in range(120)]
    ref = a.embed_many(texts)
    mixed = texts[::-1] + ["only on b", texts[3], "only on b"]
    got = b.embed_many(mixed)
    np.testing.assert_array_equal(got[:120], ref[::-1])
    np.testing.assert_array_equal(got[121], ref[3])
    np.testing.assert_array_equal(got[120], got[122])
    assert enc_b.texts == 1  # only the one text no host had
    assert b.stats()["tiers"]["shared"]["hits"] == 120
    # B computed "only on b": A now finds it in Redis
    np.testing.assert_array_equal(a.embed("only on b"), got[120])
    assert enc_a.texts == 120
    a.close()
    b.close()


def test_set_get_exists_by_key_and_async_across_hosts(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import asyncio

    a, _ = host(tmp_path, "a", redis_server.url)
    b, enc_b = host(tmp_path, "b", redis_server.url)
    vec = np.linspace(-1, 1, DIM, dtype=np.float32)
    key = a.set("stored", vec, metadata={"doc": 7})
    entry = b.get("stored")
    assert entry is not None and entry.tier == "shared" and entry.metadata == {"doc": 7}
    np.testing.assert_array_equal(entry.vector, vec)
    c, _ = host(tmp_path, "c", redis_server.url)
    assert c.exists("stored") and not c.exists("never stored")
    by_key = c.get_by_key(key)
    assert by_key is not None and by_key.tier == "shared"
    np.testing.assert_array_equal(by_key.vector, vec)
    a.set("for async", vec * 2)
    d, enc_d = host(tmp_path, "d", redis_server.url)
    np.testing.assert_array_equal(asyncio.run(d.aembed("for async")), vec * 2)
    assert enc_b.calls == 0 and enc_d.calls == 0
    for x in (a, b, c, d):
        x.close()


def test_shared_ttl_and_entry_expiry(tmp_path: Path, redis_server: RedisServer) -> None:
    clock = FakeClock()
    a, _ = host(tmp_path, "a", redis_server.url, clock=clock, ttl=3600)
    r = redis.Redis.from_url(redis_server.url)
    a.embed("one")
    rkey = b"tiercache:" + a.key("one").encode()
    assert 3_590_000 < r.pttl(rkey) <= 3_600_000  # shared.ttl
    a.set("short", np.ones(DIM, dtype=np.float32), ttl=60)
    assert 0 < r.pttl(b"tiercache:" + a.key("short").encode()) <= 60_000  # the entry's own
    # a host whose clock is past the entry's expiry treats the record as expired
    late = FakeClock(clock.now + 120)
    b, enc_b = host(tmp_path, "b", redis_server.url, clock=late)
    b.embed("short")
    assert enc_b.texts == 1 and b.stats()["tiers"]["shared"]["expired"] == 1
    a.close()
    b.close()


def test_corrupt_shared_record_is_a_miss_and_is_rewritten(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, _ = host(tmp_path, "a", redis_server.url)
    va = a.embed("victim")
    r = redis.Redis.from_url(redis_server.url)
    rkey = b"tiercache:" + a.key("victim").encode()
    raw = bytearray(r.get(rkey))
    raw[30] ^= 0x10  # a payload bit: the record's tag covers it
    r.set(rkey, bytes(raw))
    b, enc_b = host(tmp_path, "b", redis_server.url)
    np.testing.assert_array_equal(b.embed("victim"), va)  # recomputed, never the bad one
    shared = b.stats()["tiers"]["shared"]
    assert enc_b.texts == 1 and shared["forged"] == 1 and shared["corrupt"] == 0
    good = codec.encode_record(va, "float32", 0.0, None, key=bytes.fromhex(a.key("victim")))
    assert r.get(rkey) == RecordSeal().seal(rkey, good)  # rewritten, tagged
    # damaged under a valid tag (a writer that holds the key): the checksum refuses it
    bad = bytearray(good)
    bad[30] ^= 0x10
    r.set(rkey, RecordSeal().seal(rkey, bytes(bad)))
    c, enc_c = host(tmp_path, "c", redis_server.url)
    np.testing.assert_array_equal(c.embed("victim"), va)
    shared = c.stats()["tiers"]["shared"]
    assert enc_c.texts == 1 and shared["corrupt"] == 1 and shared["forged"] == 0
    r.set(rkey, b"short")  # truncated
    d, enc_d = host(tmp_path, "d", redis_server.url)
    np.testing.assert_array_equal(d.embed("victim"), va)
    assert enc_d.texts == 1 and d.stats()["tiers"]["shared"]["forged"] == 1
    for x in (a, b, c, d):
        x.close()


def test_drop_and_clear_reach_the_shared_tier(tmp_path: Path, redis_server: RedisServer) -> None:
    a, _ = host(tmp_path, "a", redis_server.url)
    other, _ = host(tmp_path, "other", redis_server.url, key_prefix="other[1]*:")
    a.embed_many(["x", "y", "z"])
    other.embed("x")
    assert a.drop("x")
    b, enc_b = host(tmp_path, "b", redis_server.url)
    b.embed("x")
    assert enc_b.texts == 1  # dropped everywhere, so recomputed
    a.clear()
    c, enc_c = host(tmp_path, "c", redis_server.url)
    c.embed_many(["y", "z"])
    assert enc_c.texts == 2
    assert RedisTier(url=redis_server.url, key_prefix="other[1]*:").count() == 1
    for x in (a, b, c, other):
        x.close()


def test_min_frequency_gates_shared_writes(tmp_path: Path, redis_server: RedisServer) -> None:
    a, _ = host(tmp_path, "a", redis_server.url, min_frequency=2)
    a.embed("once")
    s = a.stats()["tiers"]["shared"]
    assert s["writes"] == 0 and s["rejections"] == {"min_frequency": 1}
    a.close()


def test_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = RedisServer(tmp_path, extra=("--requirepass", "s3cret")).start()
    try:
        monkeypatch.setenv("TC_REDIS_PW", "s3cret")
        a, _ = host(tmp_path, "a", server.url, password_env="TC_REDIS_PW")
        a.embed("secret text")
        assert a.stats()["tiers"]["shared"]["writes"] == 1
        monkeypatch.setenv("TC_REDIS_PW", "wrong")
        b, enc_b = host(tmp_path, "b", server.url, password_env="TC_REDIS_PW")
        b.embed("secret text")  # refused by Redis: served by the encoder, no error
        assert enc_b.texts == 1 and b.stats()["tiers"]["shared"]["errors"] >= 1
        a.close()
        b.close()
    finally:
        server.stop()


def test_tls_rediss_url(tmp_path: Path) -> None:
    from tests.redis_server import make_tls_cert

    server = RedisServer(tmp_path, tls=make_tls_cert(tmp_path)).start()
    try:
        assert server.url.startswith("rediss://")
        a, _ = host(tmp_path, "a", server.url)
        b, enc_b = host(tmp_path, "b", server.url)
        np.testing.assert_array_equal(a.embed("over tls"), b.embed("over tls"))
        assert enc_b.calls == 0 and b.stats()["tiers"]["shared"]["hits"] == 1
        # a client that does not trust the certificate is refused: fail-open
        c, enc_c = host(tmp_path, "c", server.url.split("?")[0])
        c.embed("over tls")
        assert enc_c.texts == 1 and c.stats()["tiers"]["shared"]["errors"] >= 1
        for x in (a, b, c):
            x.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------- fail-open


def test_unreachable_redis_never_reaches_the_caller(tmp_path: Path) -> None:
    port = RedisServer(tmp_path).port
    a, enc = host(tmp_path, "a", f"redis://127.0.0.1:{port}", backoff_initial=60, backoff_max=60)
    t0 = time.perf_counter()
    vecs = a.embed_many([f"t{i}" for i in range(20)])
    a.embed("single")
    a.set("explicit", np.ones(DIM, dtype=np.float32))
    assert a.get("explicit") is not None and a.exists("explicit")
    assert time.perf_counter() - t0 < 2.0
    assert vecs.shape == (20, DIM) and enc.texts == 21
    s = a.stats()["tiers"]["shared"]
    assert s["state"] == "down" and s["outages"] == 1
    assert s["errors"] >= 1 and s["skipped"] >= 1  # later calls did not wait on Redis
    assert "shared down" in a.format_stats()
    with pytest.raises(StoreError, match="other hosts may still serve"):
        a.drop("explicit")  # the local copies are gone, but Redis could not be told
    assert a.get("explicit") is None
    a.close()


def test_frozen_redis_is_bounded_by_the_timeout(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    assert server.proc is not None
    a, enc = host(tmp_path, "a", server.url, timeout=0.1, backoff_initial=60, backoff_max=60)
    a.embed("warm-up")  # connected
    os.kill(server.proc.pid, signal.SIGSTOP)  # a hung host: connections stay open, no reply
    try:
        t0 = time.perf_counter()
        a.embed("while frozen")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        a.embed_many(["more", "frozen", "texts"])
        later = time.perf_counter() - t0
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
    assert first < 1.0  # one lookup waited at most ~timeout (+ the write's timeout)
    assert later < 0.5  # in back-off: Redis is not consulted at all
    assert enc.texts == 5
    s = a.stats()["tiers"]["shared"]
    assert s["errors"] >= 1 and s["state"] == "down"
    a.close()


def test_redis_killed_mid_workload_then_restarted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    a, _ = host(tmp_path, "a", server.url, backoff_initial=0.05, backoff_max=0.1)
    b, enc_b = host(tmp_path, "b", server.url, backoff_initial=0.05, backoff_max=0.1)
    errors: list[BaseException] = []
    stop = threading.Event()
    killed = threading.Event()

    def work(cache: TierCache, tag: str) -> None:
        i = 0
        try:
            while not stop.is_set():
                texts = [f"{tag}{i}", f"common{i % 50}", f"{tag}{i + 1}"]
                v = cache.embed_many(texts)
                assert v.shape == (3, DIM)
                cache.embed(f"common{(i * 7) % 50}")
                cache.set(f"set{tag}{i}", v[0])
                cache.get(f"set{tag}{i}")
                cache.mexists(texts)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - any error fails the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, t)) for c in (a, b) for t in "pq"]
    for t in threads:
        t.start()
    time.sleep(0.3)
    server.stop()  # SIGKILL mid-workload
    killed.set()
    time.sleep(0.4)
    server.start()
    time.sleep(0.4)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    sa = a.stats()["tiers"]["shared"]
    assert sa["outages"] >= 1 and (sa["errors"] + sa["skipped"]) >= 1
    # after the restart shared hits resume: A computes, B finds it in Redis
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not a._shared.ping():  # type: ignore[union-attr]
        time.sleep(0.05)
    a.embed("after the restart")
    before = enc_b.texts
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not b._shared.ping():  # type: ignore[union-attr]
        time.sleep(0.05)
    b.embed("after the restart")
    assert enc_b.texts == before
    assert b.stats()["tiers"]["shared"]["state"] == "up"
    a.close()
    b.close()
    server.stop()


# --------------------------------------------------------------------------- cluster


def test_cluster_tier_batches_across_slots_keep_order(redis_cluster: Any) -> None:
    tier = RedisTier(nodes=redis_cluster.addrs, key_prefix="c:")
    assert tier.get_many([b"z" * 16]) == [None] and tier.is_cluster
    keys = [i.to_bytes(16, "big") for i in range(1500)]
    tier.put_many([(k, rec(i % 11), 60_000) for i, k in enumerate(keys) if i % 4])
    order = list(range(1500))[::-1]
    got = tier.get_many([keys[i] for i in order])
    assert got == [rec(i % 11) if i % 4 else None for i in order]
    assert tier.exists_many(keys[:4]) == [False, True, True, True]
    assert tier.count() == 1125
    assert tier.delete_many(keys[:100]) == 75
    assert tier.clear() == 1050 and tier.count() == 0
    tier.close()


@pytest.mark.parametrize("how", ["nodes", "url", "auto"])
def test_two_hosts_share_through_a_cluster(tmp_path: Path, redis_cluster: Any, how: str) -> None:
    first = redis_cluster.addrs[0]
    spec: dict[str, Any] = {
        "nodes": {"nodes": redis_cluster.addrs},
        "url": {"url": f"redis+cluster://{first}"},
        "auto": {"url": f"redis://{first}"},
    }[how]
    a, enc_a = host(tmp_path, "a", key_prefix=f"{how}:", **spec)
    b, enc_b = host(tmp_path, "b", key_prefix=f"{how}:", **spec)
    texts = [f"cluster text {i}" for i in range(300)]
    ref = a.embed_many(texts)
    got = b.embed_many(texts[::-1])
    np.testing.assert_array_equal(got, ref[::-1])
    assert enc_a.texts == 300 and enc_b.calls == 0
    assert b.stats()["tiers"]["shared"]["cluster"] is True
    a.clear()
    a.close()
    b.close()


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "section,key",
    [
        ({"url": "http://x"}, "shared.url"),
        ({"url": ""}, "shared.url"),
        ({"nodes": "127.0.0.1:7000"}, "shared.nodes"),
        ({"nodes": ["nohost"]}, "shared.nodes[0]"),
        ({"nodes": ["h:99999"]}, "shared.nodes[0]"),
        ({"url": "redis://h", "nodes": ["h:1"]}, "shared.nodes"),
        ({"cluster": "maybe"}, "shared.cluster"),
        ({"timeout": 0}, "shared.timeout"),
        ({"timeout": None}, "shared.timeout"),
        ({"backoff_initial": 5, "backoff_max": 1}, "shared.backoff_max"),
        ({"min_frequency": -1}, "shared.min_frequency"),
        ({"ttl": "soon"}, "shared.ttl"),
        ({"urll": "redis://h"}, "shared.urll"),
    ],
)
def test_bad_shared_config_names_the_key(tmp_path: Path, section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, shared=section)
    assert err.value.key == key


def test_shared_config_parses_durations_and_is_off_without_a_url(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        shared={"url": "rediss://:pw@h:6380/2", "timeout": "50ms", "ttl": "2h", "nodes": []},
    )
    assert cfg.shared.active and cfg.shared.timeout == 0.05 and cfg.shared.ttl == 7200.0
    assert not make_config(tmp_path).shared.active
    assert not make_config(tmp_path, shared={"url": "redis://h", "enabled": False}).shared.active
    c = TierCache(make_config(tmp_path), encoder=CountingEncoder())
    assert "shared" not in c.stats()["tiers"]
    c.close()


# --------------------------------------------------------------------------- CLI


def test_cli_stats_reports_the_shared_tier(tmp_path: Path, redis_server: RedisServer) -> None:
    import json

    import yaml
    from click.testing import CliRunner

    from tiercache.cli import main

    a, _ = host(tmp_path, "a", redis_server.url, key_prefix="cli:")
    a.embed_many(["one", "two", "three"])
    a.close()
    data = {
        "encoder": {"kind": "hash", "dim": DIM},
        "warm": {"path": str(tmp_path / "a" / "warm")},
        "shared": {"url": redis_server.url, "key_prefix": "cli:"},
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    r = CliRunner().invoke(main, ["stats", "-c", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["entries"] == 3 and info["shared"]["keys"] == 3
    assert info["shared"]["reachable"] and info["shared"]["target"].startswith("redis://127.0.0.1")
    r = CliRunner().invoke(main, ["stats", "-c", str(cfg)])
    assert "3 keys under the prefix" in r.output
    dead = RedisServer(tmp_path).port
    data["shared"]["url"] = f"redis://:secret@127.0.0.1:{dead}/0"
    cfg.write_text(yaml.safe_dump(data))
    r = CliRunner().invoke(main, ["stats", "-c", str(cfg)])  # a password is never printed
    assert r.exit_code == 0 and "unreachable" in r.output and "secret" not in r.output


def test_invalidate_tags_reaches_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    a, _ = host(tmp_path, "a", redis_server.url)
    a.set("tagged", np.ones(DIM, np.float32), tags=["doc:9"])
    a.set("kept", np.ones(DIM, np.float32))
    assert a.invalidate_tags(["doc:9"]) == 1
    c, _ = host(tmp_path, "c", redis_server.url)
    assert c.get("tagged") is None and c.get("kept") is not None
    assert a.stats()["tiers"]["shared"]["evictions"]["invalidated"] == 1
    a.close()
    c.close()


@pytest.mark.parametrize("hot_off", [False, True])
def test_shared_batch_of_every_shape_answers_as_single_gets(
    tmp_path: Path, redis_server: RedisServer, hot_off: bool
) -> None:
    """A batch read of shared values of every shape (this codec's plain records, decoded
    together; records with metadata, another codec, expired, damaged under a valid tag,
    absent; a content asked twice) gives, per content, what a single ``get`` gives on
    another host, and the same shared counters."""
    clock = FakeClock()
    a, _ = host(tmp_path, "a", redis_server.url, clock=clock)
    rng = np.random.default_rng(12)
    vecs = {f"p{i}": rng.standard_normal(DIM).astype(np.float32) for i in range(40)}
    a.mset(list(vecs.items()))
    a.set("with meta", vecs["p1"], metadata={"src": "faq"})
    a.set("short lived", vecs["p2"], ttl=5)
    a.set("damaged", vecs["p3"])
    r = redis.Redis.from_url(redis_server.url)
    rkey = b"tiercache:" + a.key("damaged").encode()
    bad = bytearray(
        codec.encode_record(vecs["p3"], "float32", 0.0, None, key=bytes.fromhex(a.key("damaged")))
    )
    bad[40] ^= 0x01
    r.set(rkey, RecordSeal().seal(rkey, bytes(bad)))
    f16 = codec.encode_record(vecs["p4"], "float16", 0.0, None, key=bytes.fromhex(a.key("half")))
    hkey = b"tiercache:" + a.key("half").encode()
    r.set(hkey, RecordSeal().seal(hkey, f16))
    clock.advance(10)  # "short lived" has expired
    wanted = ["p0", "with meta", "p5", "absent", "short lived", "damaged", "half", "p5", "p39"]
    if hot_off:  # the batch path without a hot tier (warm only, then shared)
        cfg = make_config(tmp_path / "b", shared={"url": redis_server.url}, hot={"enabled": False})
        b = TierCache(cfg, encoder=CountingEncoder(), clock=clock)
    else:
        b, _ = host(tmp_path, "b", redis_server.url, clock=clock)
    c, _ = host(tmp_path, "c", redis_server.url, clock=clock)
    batch = b.mget(wanted)
    singles = [c.get(t) for t in wanted[:7]] + [c.get("p5"), c.get("p39")]
    for t, e, s in zip(wanted, batch, singles):
        assert (e is None) == (s is None), t
        if e is not None and s is not None:
            np.testing.assert_array_equal(e.vector, s.vector)
            assert e.metadata == s.metadata and e.tier == "shared", t
    assert [e is not None for e in batch] == [
        True,
        True,
        True,
        False,
        False,
        False,
        True,
        True,
        True,
    ]
    sb, sc = b.stats()["tiers"]["shared"], c.stats()["tiers"]["shared"]
    assert (sb["hits"], sb["corrupt"], sb["expired"]) == (5, 1, 1)
    # the same on c, whose second "p5" is served locally (the first was placed there)
    assert (sc["hits"], sc["corrupt"], sc["expired"]) == (5, 1, 1)
    for x in (a, b, c):
        x.close()
