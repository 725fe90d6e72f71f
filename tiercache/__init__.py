"""tiercache: a tiered storage engine for embedding vectors.

Hot vectors live in process memory, warm ones in a memory-mapped LMDB store, optionally
shared ones in Redis, and the rest are recomputed by an encoder; a pure policy engine
decides what moves where. ``ResultCache`` keeps search results (top-k lists) beside them.

>>> from tiercache import TierCache
>>> with TierCache.from_yaml("tiercache.yaml") as cache:   # doctest: +SKIP
...     v = cache.embed("What is machine learning?")
"""

from __future__ import annotations

from .cache import Entry, TierCache
from .config import TierCacheConfig, default_config, load_config, parse_config
from .encoders import CallableEncoder, Encoder, HashEncoder, SentenceTransformerEncoder
from .errors import (
    ClosedError,
    ConfigError,
    EncoderError,
    FingerprintMismatchError,
    InvalidContentError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidTTLError,
    InvalidVectorError,
    StoreError,
    TierCacheError,
    UnknownModelError,
)
from .keys import Fingerprint
from .results import ResultCache

__version__ = "0.1.0"

__all__ = [
    "CallableEncoder",
    "ClosedError",
    "ConfigError",
    "Encoder",
    "EncoderError",
    "Entry",
    "Fingerprint",
    "FingerprintMismatchError",
    "HashEncoder",
    "InvalidContentError",
    "InvalidInputError",
    "InvalidMetadataError",
    "InvalidTTLError",
    "InvalidVectorError",
    "ResultCache",
    "SentenceTransformerEncoder",
    "StoreError",
    "TierCache",
    "TierCacheConfig",
    "TierCacheError",
    "UnknownModelError",
    "default_config",
    "load_config",
    "parse_config",
]
