"""tiercache: a tiered storage engine for embedding vectors.

Hot vectors live in process memory, warm ones in a memory-mapped LMDB store, optionally
shared ones in Redis, and the rest are recomputed by an encoder; a pure policy engine
decides what moves where. ``ResultCache`` keeps search results (top-k lists) beside them.

>>> from tiercache import TierCache
>>> with TierCache.from_yaml("tiercache.yaml") as cache:   # doctest: +SKIP
...     v = cache.embed("What is machine learning?")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .entry import Entry
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

if TYPE_CHECKING:
    from .cache import TierCache
    from .config import TierCacheConfig, default_config, load_config, parse_config
    from .encoders import CallableEncoder, Encoder, HashEncoder, SentenceTransformerEncoder
    from .results import ResultCache

# Imported on first use (PEP 562), so that ``import tiercache.policy`` or ``tiercache.sim``
# loads neither LMDB nor Redis nor torch: name -> module.
_LAZY = {
    "TierCache": "cache",
    "TierCacheConfig": "config",
    "default_config": "config",
    "load_config": "config",
    "parse_config": "config",
    "CallableEncoder": "encoders",
    "Encoder": "encoders",
    "HashEncoder": "encoders",
    "SentenceTransformerEncoder": "encoders",
    "ResultCache": "results",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tiercache' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
