"""Sealed shared records: a record in Redis is served only when its tag over its Redis key
and bytes verifies (a keyed BLAKE2b with the fleet secret ``shared.auth_key*``, an XXH3-128
without one). Against real redis-server processes on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.conftest import DIM, CountingEncoder, make_config
from tests.redis_server import RedisServer
from tiercache import TierCache, codec, load_config
from tiercache.config import config_to_dict, parse_config
from tiercache.errors import ConfigError
from tiercache.tiers.redis import TAG_BYTES, RecordSeal, RedisTier

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

K1 = b"k1-0123456789abcdef0123456789abcdef"
K2 = b"k2-fedcba9876543210fedcba9876543210"
K3 = b"k3-this-is-the-wrong-fleet-secret!!"
EVIL = np.full(DIM, 666.0, dtype=np.float32)


def secret_file(tmp: Path, name: str, secret: bytes) -> str:
    path = tmp / name
    path.write_bytes(secret + b"\n")  # as `openssl rand -hex 32 > file` leaves it
    path.chmod(0o600)
    return str(path)


def host(tmp: Path, name: str, url: str, **shared: Any) -> tuple[TierCache, CountingEncoder]:
    """One host of the fleet: its own warm directory, hot off (every read past warm)."""
    enc = CountingEncoder()
    sec: dict[str, Any] = {"url": url, "backoff_initial": 0.05, "backoff_max": 0.2}
    sec.update(shared)
    cfg = make_config(tmp / name, shared=sec, hot={"enabled": False})
    return TierCache(cfg, encoder=enc), enc


def keyed(tmp: Path, current: bytes | None, previous: bytes | None = None) -> dict[str, Any]:
    """``shared`` settings for secrets in files (``current`` None: no secret)."""
    out: dict[str, Any] = {}
    if current is not None:
        out["auth_key_file"] = secret_file(tmp, f"key-{current[:2].decode()}", current)
    if previous is not None:
        out["auth_key_previous_file"] = secret_file(tmp, f"prev-{previous[:2].decode()}", previous)
    return out


def rkey_of(cache: TierCache, text: str, prefix: bytes = b"tiercache:") -> bytes:
    return prefix + cache.key(text).encode()


def assert_not_served(cache: TierCache, enc: CountingEncoder, text: str) -> None:
    """Every read of ``text`` misses the planted record: gets are None, embeds recompute."""
    assert cache.get(text) is None
    assert cache.mget([text, "absent"]) == [None, None]
    assert cache.exists(text) is False and cache.mexists([text, "absent"]) == [False, False]
    assert cache.get_by_key(cache.key(text)) is None
    before = enc.texts
    v = cache.embed(text)
    assert enc.texts == before + 1
    np.testing.assert_array_equal(v, CountingEncoder().encode([text])[0])
    assert not np.array_equal(v, EVIL)


# ------------------------------------------------------------------------- forged records


@pytest.mark.parametrize("secret", [K1, None], ids=["keyed", "unkeyed"])
def test_a_record_with_a_valid_checksum_but_no_valid_tag_is_never_served(
    tmp_path: Path, redis_server: RedisServer, secret: bytes | None
) -> None:
    shared = keyed(tmp_path, secret)
    a, _ = host(tmp_path, "a", redis_server.url, **shared)
    a.set("victim", np.ones(DIM, dtype=np.float32))
    r = redis.Redis.from_url(redis_server.url)
    rkey = rkey_of(a, "victim")
    key = bytes.fromhex(a.key("victim"))
    planted = codec.encode_record(EVIL, "float32", 0.0, None, key=key)  # its checksum is valid
    assert codec.decode_record(planted, DIM, key) is not None
    forgeries = [planted, planted + bytes(TAG_BYTES), b""]
    if secret is not None:  # tagged as a host without the secret, or with another one
        forgeries += [RecordSeal().seal(rkey, planted), RecordSeal(K3).seal(rkey, planted)]
    for i, value in enumerate(forgeries):
        r.set(rkey, value)
        b, enc_b = host(tmp_path, f"b{i}", redis_server.url, **shared)
        assert_not_served(b, enc_b, "victim")
        sh = b.stats()["tiers"]["shared"]
        # get, mget, exists, mexists, get_by_key, embed: each read the value once
        assert sh["forged"] == 6 and sh["hits"] == 0, (i, sh)
        assert sh["auth"] == ("keyed" if secret else "unkeyed")
        b.close()
    a.close()


@pytest.mark.parametrize("secret", [K1, None], ids=["keyed", "unkeyed"])
def test_a_record_copied_from_alpha_to_beta_is_refused(
    tmp_path: Path, redis_server: RedisServer, secret: bytes | None
) -> None:
    """A valid record of "alpha" copied under the key of "beta" (COPY in Redis) is not
    served as beta's vector, by a single read nor by a batch; nor is it under the same
    digest with another key prefix (the tag covers the whole Redis key)."""
    shared = keyed(tmp_path, secret)
    a, _ = host(tmp_path, "a", redis_server.url, **shared)
    alpha = np.full(DIM, 7.0, dtype=np.float32)
    a.set("alpha", alpha)
    r = redis.Redis.from_url(redis_server.url)
    assert r.copy(rkey_of(a, "alpha"), rkey_of(a, "beta"))
    assert r.copy(rkey_of(a, "alpha"), rkey_of(a, "alpha", b"other:"))
    b, enc_b = host(tmp_path, "b", redis_server.url, **shared)
    np.testing.assert_array_equal(b.get("alpha").vector, alpha)  # type: ignore[union-attr]
    assert_not_served(b, enc_b, "beta")
    assert b.stats()["tiers"]["shared"]["forged"] == 6
    c, enc_c = host(tmp_path, "c", redis_server.url, key_prefix="other:", **shared)
    assert c.embed_many(["alpha"])[0] is not None and enc_c.texts == 1  # recomputed
    assert not np.array_equal(c.get("alpha").vector, alpha)  # type: ignore[union-attr]
    assert c.stats()["tiers"]["shared"]["forged"] == 1
    for x in (a, b, c):
        x.close()


def test_a_host_with_the_wrong_key_misses_and_never_serves_a_wrong_vector(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a, _ = host(tmp_path, "a", redis_server.url, **keyed(tmp_path, K1))
    texts = [f"t{i}" for i in range(20)]
    a.mset([(t, np.full(DIM, i + 1, dtype=np.float32)) for i, t in enumerate(texts)])
    wrong, enc_w = host(tmp_path, "wrong", redis_server.url, **keyed(tmp_path, K3))
    none, enc_n = host(tmp_path, "none", redis_server.url)  # no key at all
    for cache, enc in ((wrong, enc_w), (none, enc_n)):
        assert cache.mget(texts) == [None] * len(texts)
        got = cache.embed_many(texts)
        assert enc.texts == len(texts)  # every one recomputed
        np.testing.assert_array_equal(got, CountingEncoder().encode(texts))
        assert cache.stats()["tiers"]["shared"]["forged"] == 2 * len(texts)  # mget, embed
        assert cache.stats()["tiers"]["shared"]["errors"] == 0
    # their recomputes overwrote the fleet's records with their own tags: a misconfigured
    # host costs the others misses (counted), never a vector they did not write
    right, enc_r = host(tmp_path, "right", redis_server.url, **keyed(tmp_path, K1))
    assert right.mget(texts) == [None] * len(texts)
    assert right.stats()["tiers"]["shared"]["forged"] == len(texts)
    np.testing.assert_array_equal(right.embed_many(texts), CountingEncoder().encode(texts))
    for x in (a, wrong, none, right):
        x.close()


def test_rotation_accepts_the_previous_key_writes_with_the_new_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    old, _ = host(tmp_path, "old", redis_server.url, **keyed(tmp_path, K1))
    old.set("before", np.full(DIM, 1.0, dtype=np.float32))
    # step 2 of a rotation: the new key current, the old one still accepted
    mid, enc_m = host(tmp_path, "mid", redis_server.url, **keyed(tmp_path, K2, K1))
    assert mid.stats()["tiers"]["shared"]["auth"] == "keyed+previous"
    np.testing.assert_array_equal(mid.get("before").vector, np.full(DIM, 1.0))  # type: ignore[union-attr]
    mid.set("after", np.full(DIM, 2.0, dtype=np.float32))  # explicit set: put_many + event
    mid.embed("computed")  # a recompute written back
    assert enc_m.texts == 1
    for text in ("after", "computed"):
        rkey = rkey_of(mid, text)
        value = r.get(rkey)
        assert value is not None
        assert RecordSeal(K2).open(rkey, value) is not None  # written with the new key
        assert RecordSeal(K1).open(rkey, value) is None
    assert mid.stats()["tiers"]["shared"]["forged"] == 0
    # the old key alone cannot read the new records: misses, not errors
    old2, _ = host(tmp_path, "old2", redis_server.url, **keyed(tmp_path, K1))
    assert old2.get("after") is None and old2.get("before") is not None
    # step 3: the previous key dropped: records still under the old key are refused
    new, enc_n = host(tmp_path, "new", redis_server.url, **keyed(tmp_path, K2))
    assert new.get("before") is None
    np.testing.assert_array_equal(new.get("after").vector, np.full(DIM, 2.0))  # type: ignore[union-attr]
    assert new.stats()["tiers"]["shared"]["forged"] == 1
    for x in (old, mid, old2, new):
        x.close()


# --------------------------------------------------------------------------- the tier alone


def test_tier_strips_verified_tags_and_counts_refused_values(redis_server: RedisServer) -> None:
    tier = RedisTier(url=redis_server.url, key_prefix="s:", auth_key=K1)
    keys = [bytes([i]) * 16 for i in range(4)]
    # opaque bytes to the tier (it never decodes them): one record under every key
    rec = codec.encode_record(np.ones(DIM, dtype=np.float32), "float32", 0.0, None, key=keys[0])
    tier.put_many([(keys[0], rec), (keys[1], rec, 60_000)])
    r = redis.Redis.from_url(redis_server.url)
    stored = r.get(tier.redis_key(keys[0]))
    assert stored is not None and stored[:-TAG_BYTES] == rec and len(stored) == len(rec) + 16
    r.set(tier.redis_key(keys[2]), rec)  # untagged
    assert tier.get_many(keys) == [rec, rec, None, None]
    assert tier.get(keys[0]) == rec and tier.get(keys[2]) is None and tier.get(keys[3]) is None
    assert tier.exists_many(keys) == [True, True, False, False]
    assert tier.describe()["forged"] == 3 and tier.describe()["auth"] == "keyed"
    # the listener's second connection seals and verifies with the same keys
    rot = RedisTier(url=redis_server.url, key_prefix="s:", auth_key=K2, auth_key_previous=K1)
    listener = rot.listener(0.1)
    assert listener.describe()["auth"] == "keyed+previous"
    assert listener.get(keys[0]) == rec
    listener.put_many([(keys[3], rec)])
    assert rot.get(keys[3]) == rec and tier.get(keys[3]) is None
    for t in (tier, rot, listener):
        t.close()


def test_tier_on_a_cluster_refuses_planted_records(redis_cluster: Any) -> None:
    tier = RedisTier(nodes=redis_cluster.addrs, key_prefix="auth:", auth_key=K1)
    keys = [i.to_bytes(16, "big") for i in range(50)]  # spread over the three masters
    rec = codec.encode_record(
        np.ones(DIM, dtype=np.float32), "float32", 0.0, None, key=keys[0]
    )  # spread over the three masters
    tier.put_many([(k, rec) for k in keys])
    assert tier.get_many(keys) == [rec] * 50
    from redis.cluster import ClusterNode, RedisCluster

    host_, port = redis_cluster.addrs[0].rsplit(":", 1)
    rc = RedisCluster(startup_nodes=[ClusterNode(host_, int(port))])  # type: ignore[no-untyped-call]
    for k in keys[::5]:
        rc.set(tier.redis_key(k), RecordSeal().seal(tier.redis_key(k), rec))
    got = tier.get_many(keys)
    assert [g is None for g in got] == [i % 5 == 0 for i in range(50)]
    assert tier.describe()["forged"] == 10
    tier.clear()
    tier.close()
    rc.close()


def test_seal_rejects_short_secrets_and_a_previous_key_alone() -> None:
    with pytest.raises(ConfigError) as info:
        RecordSeal(b"short")
    assert info.value.key == "shared.auth_key" and b"short".decode() not in str(info.value)
    with pytest.raises(ConfigError) as info:
        RecordSeal(None, K1)
    assert info.value.key == "shared.auth_key_previous"
    rkey, rec = b"p:00", b"record bytes"
    for a, b in ((K1, K2), (None, K1), (K1, None)):
        assert RecordSeal(a).open(rkey, RecordSeal(b).seal(rkey, rec)) is None
    assert RecordSeal(K1).open(rkey, RecordSeal(K1).seal(rkey, rec)) == rec
    assert RecordSeal(K1).open(b"p:01", RecordSeal(K1).seal(rkey, rec)) is None
    assert RecordSeal(K1).open(rkey, b"x" * (TAG_BYTES - 1)) is None


# ------------------------------------------------------------------------------- config


def test_config_reads_secrets_from_files_and_variables_never_from_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "fleet.key").write_bytes(b"  " + K1 + b"\n")
    yml = tmp_path / "tc.yaml"
    yml.write_text(
        "shared:\n  url: redis://127.0.0.1:1\n  auth_key_file: keys/fleet.key\n"
        "  auth_key_previous_env: TC_TEST_PREV\n"
    )
    monkeypatch.setenv("TC_TEST_PREV", K2.decode())
    cfg = load_config(yml)
    assert cfg.shared.auth_key_file == str(tmp_path / "keys" / "fleet.key")  # YAML-relative
    assert cfg.shared.auth_keys() == (K1, K2)
    dumped = repr(config_to_dict(cfg)) + repr(cfg)
    assert K1.decode() not in dumped and K2.decode() not in dumped
    with pytest.raises(ConfigError) as info:  # the secret itself is not a config key
        parse_config({"shared": {"auth_key": K1.decode()}})
    assert info.value.key == "shared.auth_key"


@pytest.mark.parametrize(
    ("shared", "key"),
    [
        ({"auth_key_file": "missing.key"}, "shared.auth_key_file"),
        ({"auth_key_env": "TC_TEST_UNSET"}, "shared.auth_key_env"),
        ({"auth_key_env": "TC_TEST_SHORT"}, "shared.auth_key_env"),
        ({"auth_key_file": "short.key"}, "shared.auth_key_file"),
        ({"auth_key_file": "big.key"}, "shared.auth_key_file"),
        ({"auth_key_file": "."}, "shared.auth_key_file"),
        (
            {"auth_key_env": "TC_TEST_KEY", "auth_key_previous_env": "TC_TEST_UNSET"},
            "shared.auth_key_previous_env",
        ),
        ({"auth_key_env": "TC_TEST_KEY", "auth_key_file": "short.key"}, "shared.auth_key_env"),
        ({"auth_key_previous_env": "TC_TEST_KEY"}, "shared.auth_key_previous_env"),
        ({"auth_key_file": ""}, "shared.auth_key_file"),
        ({"auth_key_env": 3}, "shared.auth_key_env"),
    ],
)
def test_config_errors_name_the_key_and_never_show_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared: dict[str, Any], key: str
) -> None:
    monkeypatch.delenv("TC_TEST_UNSET", raising=False)
    monkeypatch.setenv("TC_TEST_SHORT", "tiny-secret")
    monkeypatch.setenv("TC_TEST_KEY", K1.decode())
    (tmp_path / "short.key").write_bytes(b"tiny-secret\n")
    (tmp_path / "big.key").write_bytes(b"x" * 5000)
    with pytest.raises(ConfigError) as info:
        parse_config({"shared": {"url": "redis://127.0.0.1:1", **shared}}, base_dir=tmp_path)
    assert info.value.key == key
    assert "tiny-secret" not in str(info.value) and K1.decode() not in str(info.value)


def test_a_secret_gone_after_the_config_was_read_is_a_config_error_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    monkeypatch.setenv("TC_TEST_KEY", K1.decode())
    cfg = make_config(tmp_path, shared={"url": redis_server.url, "auth_key_env": "TC_TEST_KEY"})
    monkeypatch.delenv("TC_TEST_KEY")
    with pytest.raises(ConfigError) as info:
        TierCache(cfg, encoder=CountingEncoder())
    assert info.value.key == "shared.auth_key_env"


def test_cli_stats_shows_how_records_are_tagged_never_the_secret(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import json

    import yaml
    from click.testing import CliRunner

    from tiercache.cli import main

    data: dict[str, Any] = {
        "encoder": {"kind": "hash", "dim": DIM},
        "warm": {"path": str(tmp_path / "warm")},
        "shared": {"url": redis_server.url, **keyed(tmp_path, K2, K1)},
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    r = CliRunner().invoke(main, ["stats", "-c", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["shared"]["auth"] == "keyed+previous"
    r = CliRunner().invoke(main, ["stats", "-c", str(cfg)])
    assert r.exit_code == 0 and "record tags keyed+previous" in r.output
    for args in (["stats", "-c", str(cfg)], ["config", "show", str(cfg)]):
        out = CliRunner().invoke(main, args).output
        assert K1.decode() not in out and K2.decode() not in out
    data["shared"]["auth_key_file"] = str(tmp_path / "gone.key")
    cfg.write_text(yaml.safe_dump(data))
    r = CliRunner().invoke(main, ["stats", "-c", str(cfg)])
    assert r.exit_code == 2 and "shared.auth_key_file" in r.output


def test_batch_opener_in_c_answers_as_python() -> None:
    """``RecordSeal.open_many`` (unkeyed: one C call, ``_core.SealOpener``) gives exactly
    what ``open`` gives value by value: the record for a verifying tag; None for a value
    absent, too short for a tag, with a flipped tag or record bit, or read from another
    key; keyed seals take the Python path with the same answers."""
    import os

    rng = np.random.default_rng(3)
    for seal in (RecordSeal(), RecordSeal(K1)):
        rkeys = [b"p:" + os.urandom(16).hex().encode() for _ in range(60)]
        records = [os.urandom(int(n)) for n in rng.integers(0, 3200, 60)]
        values: list[bytes | None] = [seal.seal(k, r) for k, r in zip(rkeys, records)]
        values[1] = None
        values[2] = b"short"
        v3 = values[3]
        assert v3 is not None
        values[3] = v3[:-1] + bytes([v3[-1] ^ 1])  # the tag
        v4 = values[4]
        assert v4 is not None and len(v4) > 16
        values[4] = bytes([v4[0] ^ 0x80]) + v4[1:]  # the record
        values[5] = values[6]  # read from another key
        want = [None if v is None else seal.open(k, v) for k, v in zip(rkeys, values)]
        assert seal.open_many(rkeys, values) == want
        assert [w is None for w in want[:7]] == [False, True, True, True, True, True, False]
        assert want[7:] == records[7:]
