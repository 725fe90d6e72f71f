"""Fingerprints and keys: vectors of different spaces never share a key.

A key is a 128-bit blake2b digest of an unambiguous, length-prefixed encoding of

* the fingerprint (model, revision, dim, dtype, normalize, pooling, max sequence length,
  prompt, role), and
* the content, tagged with its type (``str`` is UTF-8 encoded and tagged ``s``, ``bytes``
  is tagged ``b``), so ``"abc"`` and ``b"abc"`` never share a key.

Every field is written as ``tag byte + 8-byte little-endian length + bytes``, so no two
distinct tuples encode to the same byte string (injective); blake2b makes a collision of
two digests computationally infeasible, so one user's content cannot poison another's vector.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .errors import InvalidContentError

try:  # the compiled digest (tiercache/_core_src/hash.c); hashlib when it is not built
    from ._core import Digester as _Digester
except ImportError:  # pragma: no cover - the extension is optional for pip
    _Digester = None  # type: ignore[misc, assignment]

KEY_BYTES = 16
"""Digest size in bytes (128 bits)."""

_PERSON = b"tiercache.key.1"  # blake2b personalisation: domain separation from other uses
_LEN = struct.Struct("<Q")

Content = str | bytes


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + _LEN.pack(len(data)) + data


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Everything that decides which vector space a vector lives in.

    Changing any field moves vectors to a new key space (nothing old is ever returned).
    ``dtype`` is the encoder's output precision, not the storage codec: records carry
    their codec in their own header, so switching codec does not orphan stored vectors.
    """

    model: str
    dim: int
    revision: str = ""
    dtype: str = "float32"
    normalize: bool = False
    pooling: str = "mean"
    max_seq_length: int = 0
    prompt: str = ""
    role: str = ""

    def encode(self) -> bytes:
        """Injective byte encoding (field names included, length-prefixed)."""
        out = [b"tiercache.fingerprint.1"]
        for f in fields(self):
            value = getattr(self, f.name)
            out.append(_field(b"n", f.name.encode()))
            out.append(_field(b"v", repr(value).encode("utf-8")))
        return b"".join(out)

    @property
    def id(self) -> str:
        """A short stable identifier (hex of a 64-bit digest) for logs and manifests."""
        return hashlib.blake2b(self.encode(), digest_size=8).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def diff(self, other: Fingerprint) -> dict[str, tuple[Any, Any]]:
        """Fields that differ: ``{name: (self_value, other_value)}``."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }


class KeyMaker:
    """Derives keys for one fingerprint. Thread-safe (each call copies a primed hasher)."""

    __slots__ = ("fingerprint", "prefix", "_base", "_c")

    person = _PERSON
    """The blake2b personalisation of every key."""

    def __init__(self, fingerprint: Fingerprint) -> None:
        self.fingerprint = fingerprint
        self.prefix = _field(b"F", fingerprint.encode())
        """The bytes hashed before every content (the compiled warm reader primes its own
        hasher with them)."""
        self._base = hashlib.blake2b(digest_size=KEY_BYTES, person=_PERSON)
        self._base.update(self.prefix)
        # the same digest in C (~0.3 us instead of ~1.5): str and bytes contents; it
        # answers None for the rest (other types, lone surrogates), which hashlib takes
        self._c = _Digester(_PERSON, self.prefix) if _Digester is not None else None

    def digest(self, content: Content) -> bytes:
        """The 16-byte key of ``content``. Raises InvalidContentError for other types."""
        c = self._c
        if c is not None:
            key: bytes | None = c.digest(content)
            if key is not None:
                return key
        return self._digest_py(content)

    def _digest_py(self, content: Content) -> bytes:
        """:meth:`digest` by hashlib (what the compiled digest must equal)."""
        h = self._base.copy()
        if type(content) is str:
            data = content.encode("utf-8", "surrogatepass")
            h.update(b"s" + _LEN.pack(len(data)))
        elif type(content) is bytes:
            data = content
            h.update(b"b" + _LEN.pack(len(data)))
        elif isinstance(content, (bytearray, memoryview)):
            data = bytes(content)
            h.update(b"b" + _LEN.pack(len(data)))
        else:
            raise InvalidContentError(f"content must be str or bytes, not {type(content).__name__}")
        h.update(data)
        return h.digest()

    def digests(self, contents: Sequence[Content]) -> list[bytes]:
        """:meth:`digest` of each content, in order (one C call when it is built)."""
        c = self._c
        if c is None:
            return [self._digest_py(x) for x in contents]
        out: list[bytes | None] = c.digests(contents)
        if None in out:
            return [self._digest_py(x) if k is None else k for x, k in zip(contents, out)]
        return out  # type: ignore[return-value]


def key_to_str(key: bytes) -> str:
    """Public (hex) form of a key, as returned by ``TierCache.set``."""
    return key.hex()


def key_from_str(key: str) -> bytes:
    """Inverse of :func:`key_to_str`; raises InvalidContentError on a malformed key."""
    try:
        raw = bytes.fromhex(key)
    except (ValueError, TypeError) as exc:
        raise InvalidContentError(f"not a tiercache key: {key!r}") from exc
    if len(raw) != KEY_BYTES:
        raise InvalidContentError(f"not a tiercache key (expected {KEY_BYTES * 2} hex chars)")
    return raw


def key_hash64(key: bytes) -> int:
    """The 64-bit integer the frequency sketch sees for a key (its first 8 bytes)."""
    return int.from_bytes(key[:8], "little")


def key_hash64_many(keys: Sequence[bytes]) -> np.ndarray:
    """:func:`key_hash64` of many 16-byte keys at once, as a uint64 array."""
    joined = b"".join(keys)
    if len(joined) != KEY_BYTES * len(keys) or (keys and set(map(len, keys)) != {KEY_BYTES}):
        return np.fromiter((key_hash64(k) for k in keys), dtype=np.uint64, count=len(keys))
    return np.frombuffer(joined, dtype="<u8")[::2].astype(np.uint64)
