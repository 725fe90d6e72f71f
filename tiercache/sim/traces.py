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


def shifting_trace(
    alpha: float, keys: int, requests: int, phases: int = 4, seed: int = 0
) -> np.ndarray:
    """Zipf popularity that moves: ``phases`` equal stretches, each mapping ranks to ids
    through its own seeded permutation (yesterday's head is today's tail)."""
    if phases <= 0:
        raise ValueError("phases must be > 0")
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, requests, phases + 1).astype(int)
    parts = [
        zipf_trace(alpha, keys, int(b - a), seed=int(rng.integers(2**31)))
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def scan_trace(
    alpha: float,
    keys: int,
    requests: int,
    scan_every: int = 1000,
    scan_length: int = 500,
    seed: int = 0,
) -> np.ndarray:
    """A Zipf stream polluted by scans: after every ``scan_every`` requests, a run of
    ``scan_length`` never-seen ids (>= ``keys``) is read once each."""
    if scan_every <= 0 or scan_length < 0:
        raise ValueError("scan_every must be > 0 and scan_length >= 0")
    base = zipf_trace(alpha, keys, requests, seed)
    out: list[np.ndarray] = []
    fresh = keys
    for start in range(0, requests, scan_every):
        out.append(base[start : start + scan_every])
        if start + scan_every < requests:
            out.append(np.arange(fresh, fresh + scan_length, dtype=np.int64))
            fresh += scan_length
    trace = np.concatenate(out) if out else np.empty(0, dtype=np.int64)
    return trace[:requests]


def loop_trace(keys: int, requests: int) -> np.ndarray:
    """``0, 1, ..., keys-1, 0, 1, ...``: LRU's worst case when ``keys`` exceeds the cache."""
    if keys <= 0:
        raise ValueError("keys must be > 0")
    return np.arange(requests, dtype=np.int64) % keys


def load_csv(path: str | os.PathLike[str]) -> np.ndarray:
    """CSV of ``id[,size][,timestamp]`` rows (a header row is skipped); returns the ids."""
    ids: list[int] = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            field = line.split(",", 1)[0].strip()
            if not field:
                continue
            try:
                ids.append(int(field))
            except ValueError:
                if n == 0:
                    continue  # header
                raise ValueError(f"{path}:{n + 1}: not an integer id: {field!r}") from None
    return np.asarray(ids, dtype=np.int64)


ORACLE_GENERAL = np.dtype(
    [("clock_time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access_vtime", "<i8")]
)
"""libCacheSim's oracleGeneral record: 24 bytes, little-endian, no padding."""


def load_oracle_general(path: str | os.PathLike[str]) -> np.ndarray:
    """The object ids of a libCacheSim oracleGeneral binary trace (24-byte records)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % ORACLE_GENERAL.itemsize:
        raise ValueError(f"{path}: size {raw.size} is not a multiple of 24-byte records")
    out: np.ndarray = raw.view(ORACLE_GENERAL)["obj_id"].astype(np.int64)
    return out
