"""The RedisVL drop-in's naming, argument checks and store-only encoder
(:mod:`tiercache.integrations.redisvl` re-exports what is public). Each check raises the
typed error the drop-in documents, naming the argument at fault."""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import codec
from ..encoders import _FingerprintedEncoder
from ..errors import (
    EncoderError,
    InvalidContentError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidTTLError,
    InvalidVectorError,
)
from ..keys import KEY_BYTES, Content, Fingerprint

_MODEL_PERSON = b"tc.redisvl.model"  # blake2b personalisation of model registry ids
_MAX_TTL = 100 * 365 * 86400.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MISSING: Any = object()  # an argument not given (None is a value for some)

# --------------------------------------------------------------------------- naming


def default_root() -> str:
    """``$XDG_CACHE_HOME/tiercache/redisvl`` (``~/.cache/tiercache/redisvl`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "tiercache", "redisvl")


def warm_directory(root: str | os.PathLike[str], name: str) -> str:
    """The warm directory of cache ``name`` under ``root``: ``<root>/<safe name>``.

    The safe name is ``name`` with every run of characters outside ``[A-Za-z0-9._-]``
    replaced by ``_`` (leading dots removed, at most 64 characters), then ``-`` and 16 hex
    characters of a digest of the whole name: distinct names get distinct directories
    (``a[b]`` and ``a_b_`` included), and no name escapes ``root``.
    """
    raw = name.encode("utf-8", "surrogatepass")
    readable = _UNSAFE.sub("_", name).lstrip(".")[:64] or "cache"
    digest = hashlib.blake2b(raw, digest_size=8).hexdigest()
    return os.path.join(os.fspath(root), f"{readable}-{digest}")


def redis_prefix(name: str) -> str:
    """The Redis key prefix of cache ``name``: ``<name>:``, with ``%`` written ``%25`` and
    ``:`` written ``%3A`` inside the name, so that no cache's prefix is a prefix of another
    cache's keys (cache ``a`` never clears cache ``a:b``)."""
    return name.replace("%", "%25").replace(":", "%3A") + ":"


def _model_id(model_name: str) -> bytes:
    """16-byte id of a model name: its registry key (LMDB and Redis)."""
    raw = model_name.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=KEY_BYTES, person=_MODEL_PERSON).digest()


def _namespace(model_name: str) -> str:
    ns = "redisvl/" + model_name
    try:
        if len(ns.encode("utf-8")) <= 255:
            return ns
    except UnicodeEncodeError:  # lone surrogates: LMDB manifest keys are strict UTF-8
        pass
    return "redisvl/blake2b:" + _model_id(model_name).hex()


# --------------------------------------------------------------------------- validation


def _content(content: Any, text: Any, what: str = "content") -> Content:
    if text is not _MISSING and text is not None:
        if content is not _MISSING and content is not None:
            raise InvalidInputError(f"give {what} or text, not both")
        content = text
    if content is _MISSING or content is None:
        raise InvalidContentError(f"{what} is required (str or bytes)")
    if type(content) is not str and type(content) is not bytes:
        raise InvalidContentError(f"content must be str or bytes, not {type(content).__name__}")
    return content


def _contents(contents: Any, texts: Any) -> list[Content]:
    if texts is not None:
        if contents is not None:
            raise InvalidInputError("give contents or texts, not both")
        contents = texts
    if contents is None:
        raise InvalidContentError("contents is required (an iterable of str or bytes)")
    if isinstance(contents, (str, bytes)):
        raise InvalidContentError("contents must be an iterable of str or bytes, not one str")
    out = list(contents)
    for c in out:
        if type(c) is not str and type(c) is not bytes:
            raise InvalidContentError(f"content must be str or bytes, not {type(c).__name__}")
    return out


def _model(model_name: Any) -> str:
    if not isinstance(model_name, str):
        raise InvalidInputError(f"model_name must be a str, not {type(model_name).__name__}")
    return model_name


def _vector(embedding: Any) -> np.ndarray:
    """A 1-d float32 copy of ``embedding`` (a list of numbers or an array)."""
    if embedding is None or isinstance(embedding, (str, bytes, Mapping)):
        raise InvalidVectorError(
            f"embedding must be a list of floats, not {type(embedding).__name__}"
        )
    try:
        arr = np.asarray(embedding)
    except Exception as exc:
        raise InvalidVectorError(f"embedding is not a list of numbers: {exc}") from exc
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise InvalidVectorError(f"embedding must hold numbers, not {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidVectorError(f"embedding must be a non-empty flat list, got shape {arr.shape}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise InvalidVectorError("embedding holds NaN or infinite values (or beyond float32)")
    return out


def _metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidMetadataError(
            f"metadata must be a dict or None, not {type(metadata).__name__}"
        )
    out = dict(metadata)
    for k in out:
        if not isinstance(k, str):
            raise InvalidMetadataError(f"metadata keys must be str, not {type(k).__name__}")
    codec.pack_blob(out)  # raises InvalidMetadataError if msgpack cannot hold it
    return out


def _ttl(ttl: Any, what: str = "ttl") -> float | None:
    """Seconds, or None for no expiry (``None`` and ``0`` both mean none, as in RedisVL)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidTTLError(
            f"{what} must be a number of seconds or None, not {type(ttl).__name__}"
        )
    if ttl == 0:
        return None
    if not math.isfinite(ttl) or ttl < 0 or ttl > _MAX_TTL:
        raise InvalidTTLError(f"{what} must be >= 0 and <= {_MAX_TTL:.0f} seconds, got {ttl}")
    return float(ttl)


# --------------------------------------------------------------------------- store-only encoder


class StoreOnlyEncoder(_FingerprintedEncoder):
    """The encoder of a per-model TierCache: carries the fingerprint, never computes.

    The adapter only stores vectors computed elsewhere, and never calls ``embed``; a call
    that would reach the encoder raises :class:`~tiercache.errors.EncoderError`.
    """

    accepts: tuple[type, ...] = (str, bytes)

    def __init__(self, model_name: str, dim: int) -> None:
        self._dim = dim
        self._fingerprint = Fingerprint(
            model=model_name, dim=dim, revision="", pooling="", max_seq_length=0
        )

    def encode(self, contents: Sequence[Content]) -> np.ndarray:
        raise EncoderError(
            f"tiercache.integrations.redisvl.EmbeddingsCache stores vectors computed "
            f"elsewhere and never encodes ({self._fingerprint.model!r}); compute the "
            f"embedding yourself and set() it"
        )


def _decode_any(buf: Any, start: int, end: int, _: None, key: bytes) -> codec.Record | None:
    """Decode the record of ``key`` at ``buf[start:end]`` (``LmdbTier.get_at``'s form), of
    whatever dim its header states; None if not a valid record."""
    if end - start < codec.HEADER_SIZE:
        return None
    dim = int(codec.HEADER.unpack_from(buf, start)[5])
    return codec.decode_record(memoryview(buf)[start:end], dim, key) if dim > 0 else None
