"""Every exception tiercache raises on purpose, in one place.

Caller mistakes raise a subclass of :class:`TierCacheError`. Infrastructure faults (a
corrupt record, a full map, a dead Redis) are *not* raised to callers: they are counted in
``stats()`` and served around. The exceptions here that describe infrastructure
(:class:`StoreError`, :class:`FingerprintMismatchError`) are raised only when opening a
store cannot proceed safely.
"""

from __future__ import annotations

from typing import Any


class TierCacheError(Exception):
    """Base class of every error tiercache raises on purpose."""


class ConfigError(TierCacheError, ValueError):
    """A configuration value is missing, of the wrong type or out of range.

    ``key`` is the dotted path of the offending entry (``"warm.max_bytes"``) and ``value``
    the value found there.
    """

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{key}: {reason} (got {value!r})")


class InvalidInputError(TierCacheError, ValueError):
    """Base class of bad arguments handed to the cache. The store is left unchanged."""


class InvalidContentError(InvalidInputError, TypeError):
    """Content is not ``str``/``bytes``, or is of a type the encoder does not accept."""


class InvalidVectorError(InvalidInputError):
    """A vector has the wrong dimension, dtype or shape, or holds NaN/inf."""


class InvalidMetadataError(InvalidInputError):
    """Metadata cannot be serialised with msgpack (or is too large)."""


class InvalidTTLError(InvalidInputError):
    """A TTL is negative, zero, non-finite or absurdly large."""


class UnknownModelError(InvalidInputError):
    """A call named a model that this cache's namespace does not hold."""


class EncoderError(TierCacheError):
    """The encoder raised, or returned an array of the wrong shape, dtype or with NaN/inf.

    Raised to every caller waiting on the failed batch; nothing from it is cached.
    """


class StoreError(TierCacheError):
    """A store cannot be opened or used safely (unwritable path, foreign format version)."""


class FingerprintMismatchError(StoreError):
    """The warm store's manifest records another fingerprint for this namespace.

    Vectors of different models or settings must never mix; open the store with another
    namespace, or set ``warm.on_fingerprint_mismatch: coexist`` to keep both side by side.
    """


class ClosedError(TierCacheError):
    """The cache was used after :meth:`TierCache.close`."""
