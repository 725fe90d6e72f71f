"""Tests of tiercache.config: parsing, validation, defaults, reference files, round trip."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from tiercache.config import (
    CODECS,
    DURABILITY,
    KNOWN_POLICIES,
    EncoderConfig,
    HotConfig,
    PolicyConfig,
    SharedConfig,
    TierCacheConfig,
    WarmConfig,
    config_to_dict,
    default_config,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from tiercache.errors import ConfigError, TierCacheError

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "tiercache.reference.yaml"
DEFAULT_YAML = REPO / "tiercache" / "default.yaml"

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40


def write(tmp_path: Path, text: str, name: str = "tiercache.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


SECTIONS: dict[str, type] = {
    "encoder": EncoderConfig,
    "hot": HotConfig,
    "warm": WarmConfig,
    "policy": PolicyConfig,
    "shared": SharedConfig,
}


def all_dotted_keys() -> set[str]:
    """Every key of the configuration, dotted: ``{"encoder.kind", ..., "ttl"}``."""
    keys = {f.name for f in dataclasses.fields(TierCacheConfig) if f.name not in SECTIONS}
    for name, cls in SECTIONS.items():
        keys |= {f"{name}.{f.name}" for f in dataclasses.fields(cls)}
    return keys


def yaml_dotted_keys(data: dict[str, Any]) -> set[str]:
    keys: set[str] = set()
    for k, v in data.items():
        if isinstance(v, dict) and k != "params":
            keys |= {f"{k}.{sub}" for sub in yaml_dotted_keys(v)}
        else:
            keys.add(k)
    return keys


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (1234, 1234),
        ("0", 0),
        ("1024", 1024),
        ("100B", 100),
        ("100 b", 100),
        ("512KiB", 512 * KiB),
        ("256MiB", 256 * MiB),
        ("256mib", 256 * MiB),
        ("256 MIB", 256 * MiB),
        ("1GiB", GiB),
        ("1.5GiB", 3 * GiB // 2),
        ("2TiB", 2 * TiB),
        ("1PiB", 2**50),
        ("10MB", 10_000_000),
        ("1KB", 1000),
        ("1kb", 1000),
        ("3GB", 3 * 10**9),
        ("1TB", 10**12),
        ("  64 MiB  ", 64 * MiB),
        (".5KiB", 512),
        ("0.3KiB", 307),  # truncated to whole bytes
        ("1.KiB", 1024),
    ],
)
def test_parse_size_accepts(text: object, expected: int) -> None:
    result = parse_size(text, "hot.max_bytes")
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "bad",
    [
        -1,
        "-1",
        "-1MiB",
        True,
        False,
        None,
        1.5,
        1.0,
        math.nan,
        "nan",
        "inf",
        "",
        "   ",
        "MiB",
        "abc",
        "12 parsecs",
        "1K",  # ambiguous single letter: not accepted
        "1.5",  # fractional bytes
        "1.5B",
        "1e9",
        "1,000",
        "1 000",
        "1MiB2",
        [1],
        {"a": 1},
        str(2**63),
        2**63,
    ],
)
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(bad, "warm.max_bytes")
    assert info.value.key == "warm.max_bytes"
    assert info.value.value is bad


def test_parse_size_max() -> None:
    assert parse_size(2**63 - 1, "k") == 2**63 - 1


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, None),
        ("none", None),
        ("never", None),
        ("Never", None),
        ("NONE", None),
        (1, 1.0),
        (0.5, 0.5),
        (3600, 3600.0),
        ("3600", 3600.0),
        ("1.5", 1.5),
        ("10s", 10.0),
        ("30m", 1800.0),
        ("72h", 72 * 3600.0),
        ("1d", 86400.0),
        ("1w", 7 * 86400.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1d2h3m4s", 86400 + 2 * 3600 + 3 * 60 + 4.0),
        ("1m500ms", 60.5),
        ("1.5h", 5400.0),
        ("10 S", 10.0),
        (" 2H ", 7200.0),
    ],
)
def test_parse_duration_accepts(text: object, expected: float | None) -> None:
    result = parse_duration(text, "ttl")
    assert result == expected
    if expected is not None:
        assert type(result) is float


@pytest.mark.parametrize(
    "bad",
    [
        0,
        0.0,
        -1,
        -0.5,
        "0",
        "0s",
        "0h0m",
        "-1h",
        "-5",
        True,
        False,
        math.nan,
        math.inf,
        "nan",
        "inf",
        "",
        "h",
        "10x",
        "10min",
        "1h30",
        "1 hour",
        "forever",
        "1e3",
        [1],
        {"h": 1},
        "1000000w",  # beyond 100 years
    ],
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(bad, "ttl")
    assert info.value.key == "ttl"


# --------------------------------------------------------------------------- defaults, files


def test_defaults_match_dataclass_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = default_config()
    assert cfg == TierCacheConfig()
    assert cfg == parse_config(None) == parse_config({})
    assert cfg.warm.path == str(tmp_path / ".tiercache" / "warm")
    assert cfg.hot.max_bytes == 64 * MiB
    assert cfg.warm.max_bytes == GiB
    assert cfg.ttl is None
    assert cfg.policy.name == "wtinylfu"
    assert cfg.encoder.kind == "sentence-transformers"


def test_default_config_base_dir(tmp_path: Path) -> None:
    cfg = default_config(base_dir=tmp_path)
    assert cfg.warm.path == str(tmp_path / ".tiercache" / "warm")


def test_default_yaml_loads_and_lists_every_key(tmp_path: Path) -> None:
    data = yaml.safe_load(DEFAULT_YAML.read_text(encoding="utf-8"))
    assert yaml_dotted_keys(data) == all_dotted_keys()
    assert data["warm"]["path"] == "./.tiercache/warm"
    # load_config resolves relative paths against the file's own directory (a copy here: the
    # package directory need not be writable, and warm.path must be creatable)
    copy = write(tmp_path, DEFAULT_YAML.read_text(encoding="utf-8"), "default.yaml")
    assert load_config(copy) == default_config(base_dir=tmp_path)


def test_reference_yaml_loads_and_equals_defaults(tmp_path: Path) -> None:
    # The only documented difference: warm.path resolves against the file's directory.
    if os.access(REFERENCE.parent, os.W_OK):  # warm.path (docs/.tiercache/warm) is checked
        cfg = load_config(REFERENCE)
        assert cfg == default_config(base_dir=REFERENCE.parent)
        assert cfg.warm.path == str(REFERENCE.parent / ".tiercache" / "warm")
    copy = write(tmp_path, REFERENCE.read_text(encoding="utf-8"), REFERENCE.name)
    assert load_config(copy) == default_config(base_dir=tmp_path)


def test_reference_yaml_lists_every_key_with_a_comment() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert yaml_dotted_keys(data) == all_dotted_keys()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue
        # every key: value line is preceded by a comment line
        assert lines[i - 1].strip().startswith("#"), f"no comment above {stripped!r}"


def test_all_keys_documented_in_configuration_md() -> None:
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for key in sorted(all_dotted_keys()):
        assert f"`{key}`" in text, key


def test_constants() -> None:
    assert KNOWN_POLICIES == ("lru", "lfu", "tinylfu", "wtinylfu", "s3fifo", "arc")
    assert CODECS == ("float32", "float16", "int8")
    assert DURABILITY == ("durable", "fast")


# --------------------------------------------------------------------------- valid files


FULL = """
encoder:
  kind: hash
  package: null
  dim: 32
  device: cuda:1
  batch_size: 128
  normalize: false
  max_seq_length: 512
  pooling: cls
  prompt: "query: "
  role: query
  threads: 4
hot:
  enabled: false
  max_bytes: 0
warm:
  path: store/warm
  max_bytes: 10MB
  codec: int8
  durability: fast
  namespace: tenant-a
  store_text: true
  on_fingerprint_mismatch: coexist
  map_size: 256MiB
  max_readers: 8
policy:
  name: lru
  params: {window: 0.01, nested: {a: [1, 2]}}
  warm_min_frequency: 2
  eviction_samples: 16
  max_evictions_per_write: 4
  seed: 7
  access_buffer: 1
ttl: 1h30m
"""


def test_full_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.encoder == EncoderConfig(
        kind="hash",
        package=None,
        dim=32,
        device="cuda:1",
        batch_size=128,
        normalize=False,
        max_seq_length=512,
        pooling="cls",
        prompt="query: ",
        role="query",
        threads=4,
    )
    assert cfg.hot == HotConfig(enabled=False, max_bytes=0)
    assert cfg.warm.path == str(tmp_path / "store" / "warm")
    assert cfg.warm.max_bytes == 10_000_000
    assert cfg.warm.map_size == 256 * MiB
    assert (cfg.warm.codec, cfg.warm.durability) == ("int8", "fast")
    assert cfg.warm.on_fingerprint_mismatch == "coexist"
    assert cfg.policy.params == {"window": 0.01, "nested": {"a": (1, 2)}}
    assert cfg.policy.seed == 7
    assert cfg.ttl == 5400.0


def test_partial_sections_and_empty_section(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "hot:\n  max_bytes: 1KiB\nwarm:\npolicy: {}\n"))
    assert cfg.hot.max_bytes == 1024
    assert cfg.warm == default_config(base_dir=tmp_path).warm
    assert cfg.policy == PolicyConfig()


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing\n")) == default_config(base_dir=tmp_path)


def test_paths_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    model = sub / "model"
    model.mkdir()
    cfg = load_config(write(sub, "encoder:\n  path: model\nwarm:\n  path: ../w\n"))
    assert cfg.encoder.path == str(model)
    assert cfg.warm.path == str(tmp_path / "w")
    # parse_config: against base_dir, else against the cwd
    data = {"warm": {"path": "x"}}
    assert parse_config(data, base_dir=sub).warm.path == str(sub / "x")
    monkeypatch.chdir(tmp_path)
    assert parse_config(data).warm.path == str(tmp_path / "x")
    # absolute paths stay as they are; ~ is expanded
    assert parse_config({"warm": {"path": str(sub / "abs")}}).warm.path == str(sub / "abs")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_config({"warm": {"path": "~/h"}}).warm.path == str(tmp_path / "h")


def test_warm_path_may_exist_as_directory(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    assert parse_config({"warm": {"path": "w"}}, base_dir=tmp_path).warm.path == str(tmp_path / "w")


def test_config_does_not_create_directories(tmp_path: Path) -> None:
    parse_config({"warm": {"path": "a/b/c"}}, base_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_disabled_warm_skips_path_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = parse_config({"warm": {"enabled": False, "path": "file"}}, base_dir=tmp_path)
    assert cfg.warm.enabled is False


# --------------------------------------------------------------------------- invalid files

INVALID: list[tuple[str, str]] = [
    # unknown keys at every level
    ("bogus: 1", "bogus"),
    ("encoders: {}", "encoders"),
    ("hot:\n  max_byte: 1", "hot.max_byte"),
    ("warm:\n  colour: blue", "warm.colour"),
    ("encoder:\n  modle: x", "encoder.modle"),
    ("policy:\n  nmae: lru", "policy.nmae"),
    ("max_bytes: 1MiB", "max_bytes"),
    ("1: x", "1"),
    ("hot:\n  1: x", "hot.1"),
    # sections of the wrong type
    ("hot: 5", "hot"),
    ("hot: [1, 2]", "hot"),
    ("warm: yes", "warm"),
    ("encoder: text", "encoder"),
    ("policy: [lru]", "policy"),
    # booleans
    ("hot:\n  enabled: 'yes'", "hot.enabled"),
    ("hot:\n  enabled: 1", "hot.enabled"),
    ("warm:\n  enabled: null", "warm.enabled"),
    ("warm:\n  store_text: 'false'", "warm.store_text"),
    ("encoder:\n  normalize: 0", "encoder.normalize"),
    # sizes
    ("hot:\n  max_bytes: -1", "hot.max_bytes"),
    ("hot:\n  max_bytes: -1MiB", "hot.max_bytes"),
    ("hot:\n  max_bytes: true", "hot.max_bytes"),
    ("hot:\n  max_bytes: null", "hot.max_bytes"),
    ("hot:\n  max_bytes: .nan", "hot.max_bytes"),
    ("hot:\n  max_bytes: 12 parsecs", "hot.max_bytes"),
    ("hot:\n  max_bytes: [1]", "hot.max_bytes"),
    ("warm:\n  max_bytes: 0", "warm.max_bytes"),
    ("warm:\n  max_bytes: 0MiB", "warm.max_bytes"),
    ("warm:\n  max_bytes: lots", "warm.max_bytes"),
    ("warm:\n  max_bytes: 1.5", "warm.max_bytes"),
    ("warm:\n  map_size: 0", "warm.map_size"),
    ("warm:\n  map_size: -4KiB", "warm.map_size"),
    ("warm:\n  map_size: false", "warm.map_size"),
    # enumerations
    ("warm:\n  codec: float64", "warm.codec"),
    ("warm:\n  codec: FLOAT32", "warm.codec"),
    ("warm:\n  codec: 8", "warm.codec"),
    ("warm:\n  durability: safe", "warm.durability"),
    ("warm:\n  durability: null", "warm.durability"),
    ("warm:\n  on_fingerprint_mismatch: ignore", "warm.on_fingerprint_mismatch"),
    ("encoder:\n  kind: openai", "encoder.kind"),
    ("policy:\n  name: clock", "policy.name"),
    ("policy:\n  name: null", "policy.name"),
    ("policy:\n  name: LRU", "policy.name"),
    # strings
    ("warm:\n  namespace: ''", "warm.namespace"),
    ("warm:\n  namespace: 5", "warm.namespace"),
    ("warm:\n  namespace: " + "n" * 256, "warm.namespace"),
    ("warm:\n  path: ''", "warm.path"),
    ("warm:\n  path: 5", "warm.path"),
    ("warm:\n  path: null", "warm.path"),
    ("encoder:\n  name: ''", "encoder.name"),
    ("encoder:\n  name: null", "encoder.name"),
    ("encoder:\n  revision: 1", "encoder.revision"),
    ("encoder:\n  device: ''", "encoder.device"),
    ("encoder:\n  pooling: 3", "encoder.pooling"),
    ("encoder:\n  prompt: null", "encoder.prompt"),
    ("encoder:\n  role: [q]", "encoder.role"),
    ("encoder:\n  package: 'not a package'", "encoder.package"),
    ("encoder:\n  package: ''", "encoder.package"),
    ("encoder:\n  package: 7", "encoder.package"),
    ("encoder:\n  path: ''", "encoder.path"),
    # integers
    ("encoder:\n  batch_size: 0", "encoder.batch_size"),
    ("encoder:\n  batch_size: -8", "encoder.batch_size"),
    ("encoder:\n  batch_size: 65537", "encoder.batch_size"),
    ("encoder:\n  batch_size: '64'", "encoder.batch_size"),
    ("encoder:\n  batch_size: 64.0", "encoder.batch_size"),
    ("encoder:\n  batch_size: true", "encoder.batch_size"),
    ("encoder:\n  max_seq_length: 0", "encoder.max_seq_length"),
    ("encoder:\n  threads: -1", "encoder.threads"),
    ("encoder:\n  threads: false", "encoder.threads"),
    ("encoder:\n  dim: 0", "encoder.dim"),
    ("encoder:\n  dim: -3", "encoder.dim"),
    ("encoder:\n  dim: '384'", "encoder.dim"),
    ("warm:\n  max_readers: 0", "warm.max_readers"),
    ("policy:\n  warm_min_frequency: -1", "policy.warm_min_frequency"),
    ("policy:\n  eviction_samples: 0", "policy.eviction_samples"),
    ("policy:\n  max_evictions_per_write: 0", "policy.max_evictions_per_write"),
    ("policy:\n  access_buffer: 0", "policy.access_buffer"),
    ("policy:\n  seed: -1", "policy.seed"),
    ("policy:\n  seed: 1.5", "policy.seed"),
    ("policy:\n  seed: true", "policy.seed"),
    # policy.params
    ("policy:\n  params: [1, 2]", "policy.params"),
    ("policy:\n  params: 3", "policy.params"),
    ("policy:\n  params: null", "policy.params"),
    ("policy:\n  params: {1: a}", "policy.params.1"),
    # cross-field rules
    ("encoder:\n  kind: hash", "encoder.dim"),
    ("encoder:\n  kind: hash\n  dim: null", "encoder.dim"),
    ("encoder:\n  package: null", "encoder.package"),
    # ttl
    ("ttl: 0", "ttl"),
    ("ttl: -5", "ttl"),
    ("ttl: -1h", "ttl"),
    ("ttl: 0s", "ttl"),
    ("ttl: soon", "ttl"),
    ("ttl: true", "ttl"),
    ("ttl: [1h]", "ttl"),
    ("ttl: .inf", "ttl"),
    ("ttl: .nan", "ttl"),
    ("ttl: {h: 1}", "ttl"),
]


@pytest.mark.parametrize(("text", "key"), INVALID, ids=[k for _, k in INVALID])
def test_invalid_yaml_names_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.key == key
    assert err.reason
    assert str(err).startswith(f"{key}: ")
    assert isinstance(err, TierCacheError)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("encoders: {}", "encoders", "'encoder'"),
        ("hot:\n  max_byte: 1", "hot.max_byte", "'max_bytes'"),
        ("warm:\n  codek: int8", "warm.codek", "'codec'"),
        ("policy:\n  seeds: 1", "policy.seeds", "'seed'"),
        ("max_bytes: 1", "max_bytes", "'hot.max_bytes' or 'warm.max_bytes'"),
    ],
)
def test_unknown_key_suggests(tmp_path: Path, text: str, key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key
    assert info.value.reason.startswith("unknown key")
    assert f"did you mean {suggestion}?" in info.value.reason


def test_unknown_key_without_close_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "warm:\n  zzzzzz: 1\n"))
    assert info.value.reason == "unknown key"


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("warm:\n  codec: float64", "warm.codec", CODECS),
        ("warm:\n  durability: safe", "warm.durability", DURABILITY),
        ("warm:\n  on_fingerprint_mismatch: x", "warm.on_fingerprint_mismatch", ("error",)),
        ("encoder:\n  kind: x", "encoder.kind", ("sentence-transformers", "hash")),
        ("policy:\n  name: clock", "policy.name", KNOWN_POLICIES),
    ],
)
def test_enum_reason_lists_allowed_values(
    tmp_path: Path, text: str, key: str, allowed: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key
    for value in allowed:
        assert repr(value) in info.value.reason


def test_error_carries_the_bad_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "warm:\n  max_bytes: -3MiB\n"))
    assert info.value.value == "-3MiB"
    assert "-3MiB" in str(info.value)


# --------------------------------------------------------------------------- paths


def test_warm_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "warm:\n  path: blocker\n"))
    assert info.value.key == "warm.path"
    assert "not a directory" in info.value.reason


def test_warm_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(ConfigError) as info:
        parse_config({"warm": {"path": "blocker/sub/warm"}}, base_dir=tmp_path)
    assert info.value.key == "warm.path"


def test_warm_path_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    with pytest.raises(ConfigError) as info:
        parse_config({"warm": {"path": "link"}}, base_dir=tmp_path)
    assert info.value.key == "warm.path"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere"
)
def test_warm_path_not_writable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "existing").mkdir()
    locked.chmod(0o500)
    (locked / "existing").chmod(0o500)
    try:
        for rel in ("locked/new/warm", "locked/existing"):
            with pytest.raises(ConfigError) as info:
                parse_config({"warm": {"path": rel}}, base_dir=tmp_path)
            assert info.value.key == "warm.path"
    finally:
        (locked / "existing").chmod(0o700)
        locked.chmod(0o700)


def test_encoder_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "encoder:\n  path: no/such/model\n"))
    assert info.value.key == "encoder.path"
    assert "does not exist" in info.value.reason


def test_encoder_path_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "encoder:\n  path: model.bin\n"))
    assert info.value.key == "encoder.path"


def test_encoder_path_without_package(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    cfg = load_config(write(tmp_path, "encoder:\n  package: null\n  path: m\n"))
    assert cfg.encoder.package is None
    assert cfg.encoder.path == str(tmp_path / "m")


# --------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.key == "<file>"
    assert info.value.value == str(missing)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.key == "<file>"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"hot:\n  max_bytes: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "<file>"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("hot:\n  max_bytes: [1\n", None),
        ("hot:\n  enabled: true\n   max_bytes: 1\n", 3),
        ("hot: {a: 1\n", None),
        ("warm:\n  path: 'unterminated\n", None),
    ],
)
def test_yaml_syntax_error(tmp_path: Path, text: str, line: int | None) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "<file>"
    assert info.value.value == str(path)
    assert info.value.reason.startswith("invalid YAML: line ")
    if line is not None:
        assert info.value.reason.startswith(f"invalid YAML: line {line},")


def test_duplicate_keys_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "hot:\n  max_bytes: 1\n  max_bytes: 2\n"))
    assert info.value.key == "<file>"
    assert "duplicate key 'max_bytes'" in info.value.reason
    assert "line 3" in info.value.reason


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = "x: &h {max_bytes: 1KiB}\n"
    with pytest.raises(ConfigError):  # x is unknown, but the file itself parses
        load_config(write(tmp_path, text))
    ok = "hot: &h\n  max_bytes: 1KiB\n"
    assert load_config(write(tmp_path, ok)).hot.max_bytes == 1024
    # a merge key's values may be overridden: not a duplicate
    merged = (
        "policy:\n  params:\n    base: &b {a: 1, b: 2}\n    derived:\n      <<: *b\n      b: 3\n"
    )
    params = load_config(write(tmp_path, merged)).policy.params
    assert params["derived"] == {"a": 1, "b": 3}


def test_unsafe_yaml_tags_rejected(tmp_path: Path) -> None:
    text = "ttl: !!python/object/apply:os.system ['true']\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == "<file>"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_root_not_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == "<root>"


@pytest.mark.parametrize("data", [[1, 2], "hot", 3])
def test_parse_config_root_not_a_mapping(data: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == "<root>"


# --------------------------------------------------------------------------- frozen, typed


def test_frozen_and_slotted() -> None:
    cfg = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ttl = 5.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.warm.max_bytes = 1  # type: ignore[misc]
    sections: tuple[object, ...] = (cfg, cfg.encoder, cfg.hot, cfg.warm, cfg.policy)
    for obj in sections:
        assert not hasattr(obj, "__dict__")
        with pytest.raises((AttributeError, TypeError)):
            obj.extra = 1  # type: ignore[attr-defined]


def test_params_read_only() -> None:
    cfg = parse_config({"policy": {"params": {"a": {"b": [1, 2]}}}})
    params = cfg.policy.params
    assert isinstance(params, MappingProxyType)
    assert isinstance(params["a"], MappingProxyType)
    assert params["a"]["b"] == (1, 2)
    with pytest.raises(TypeError):
        params["x"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        params["a"]["c"] = 1  # type: ignore[index]


def test_params_copied_from_input() -> None:
    raw: dict[str, Any] = {"window": 0.01}
    cfg = PolicyConfig(params=raw)
    raw["window"] = 0.5
    assert cfg.params["window"] == 0.01


def test_configs_are_hashable() -> None:
    a = parse_config({"policy": {"params": {"w": 1}}})
    b = parse_config({"policy": {"params": {"w": 1}}})
    assert a == b
    assert hash(a) == hash(b)


def test_types_of_values() -> None:
    cfg = parse_config({"ttl": 60, "hot": {"max_bytes": "1KiB"}})
    assert type(cfg.ttl) is float
    assert type(cfg.hot.max_bytes) is int
    assert os.path.isabs(cfg.warm.path)


def test_direct_construction_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        WarmConfig(max_bytes=-1)
    assert info.value.key == "warm.max_bytes"
    with pytest.raises(ConfigError) as info:
        EncoderConfig(batch_size=0)
    assert info.value.key == "encoder.batch_size"
    with pytest.raises(ConfigError) as info:
        PolicyConfig(name="fifo")
    assert info.value.key == "policy.name"
    with pytest.raises(ConfigError) as info:
        HotConfig(enabled="yes")  # type: ignore[arg-type]
    assert info.value.key == "hot.enabled"
    with pytest.raises(ConfigError) as info:
        TierCacheConfig(ttl=-1.0)
    assert info.value.key == "ttl"
    with pytest.raises(ConfigError) as info:
        TierCacheConfig(hot={"max_bytes": 1})  # type: ignore[arg-type]
    assert info.value.key == "hot"
    assert TierCacheConfig(ttl=5).ttl == 5.0


def test_replace_revalidates() -> None:
    cfg = default_config()
    assert dataclasses.replace(cfg.warm, codec="int8").codec == "int8"
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg.warm, codec="zstd")


# --------------------------------------------------------------------------- round trip


def test_round_trip_defaults() -> None:
    cfg = default_config()
    data = config_to_dict(cfg)
    assert parse_config(data) == cfg
    assert data["hot"]["max_bytes"] == 64 * MiB
    assert data["ttl"] is None


def test_round_trip_full_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    data = config_to_dict(cfg)
    assert data["ttl"] == 5400.0
    assert data["warm"]["map_size"] == 256 * MiB
    assert data["policy"]["params"] == {"window": 0.01, "nested": {"a": [1, 2]}}
    assert type(data["policy"]["params"]) is dict
    assert parse_config(data) == cfg
    dumped = yaml.safe_dump(data, sort_keys=False)  # plain types only
    other = tmp_path / "elsewhere"
    other.mkdir()
    again = write(other, dumped, "dumped.yaml")
    assert load_config(again) == cfg  # absolute paths survive a move


def test_to_dict_is_a_copy() -> None:
    cfg = parse_config({"policy": {"params": {"a": [1]}}})
    data = config_to_dict(cfg)
    data["policy"]["params"]["a"].append(2)
    data["hot"]["max_bytes"] = 5
    assert cfg.policy.params["a"] == (1,)
    assert cfg.hot.max_bytes == 64 * MiB
