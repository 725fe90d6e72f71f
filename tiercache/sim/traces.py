"""Traces: sequences of keys. Synthetic generators are seeded; loaders read files.

Keys are ``int`` (synthetic and ``.npy`` traces) or 16-byte digests (text query logs,
hashed exactly as the live cache hashes them, so a simulated text trace and a live run
see the same keys).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..keys import Fingerprint, KeyMaker


def zipf_trace(alpha: float, keys: int, requests: int, seed: int = 0) -> np.ndarray:
    """``requests`` key ids in ``[0, keys)`` drawn with P(rank r) proportional to
    ``1 / r**alpha``; ranks are mapped to ids by a seeded permutation (so popularity is
    not correlated with the id). Returns an int64 array."""
    if keys <= 0 or requests < 0:
        raise ValueError("keys must be > 0 and requests >= 0")
    if alpha < 0:
        raise ValueError("alpha must be >= 0")
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, keys + 1, dtype=np.float64) ** alpha
    ranks = rng.choice(keys, size=requests, p=weights / weights.sum())
    ids: np.ndarray = rng.permutation(keys)[ranks].astype(np.int64)
    return ids


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """A 1-D integer array saved with ``numpy.save`` (never pickled objects)."""
    arr: np.ndarray = np.load(path, allow_pickle=False)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected a 1-D integer array, got {arr.dtype} {arr.shape}")
    out: np.ndarray = arr.astype(np.int64, copy=False)
    return out


def load_text(path: str | os.PathLike[str], fingerprint: Fingerprint) -> list[bytes]:
    """One query per non-empty line, hashed to the live cache's 16-byte keys."""
    maker = KeyMaker(fingerprint)
    with Path(path).open(encoding="utf-8") as fh:
        return [maker.digest(line.rstrip("\n")) for line in fh if line.strip()]
