from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiercache import TierCache, parse_config  # noqa: E402
from tiercache.encoders import CallableEncoder, HashEncoder  # noqa: E402

DIM = 16


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingEncoder(HashEncoder):
    """HashEncoder that records every batch it is asked to encode."""

    def __init__(self, dim: int = DIM, **kw: Any) -> None:
        super().__init__(dim, **kw)
        self.batches: list[list[Any]] = []

    def encode(self, contents: Any) -> np.ndarray:
        self.batches.append(list(contents))
        return super().encode(contents)

    @property
    def calls(self) -> int:
        return len(self.batches)

    @property
    def texts(self) -> int:
        return sum(len(b) for b in self.batches)


def make_config(tmp: Path, **sections: Any) -> Any:
    data: dict[str, Any] = {
        "encoder": {"kind": "hash", "dim": DIM, "batch_size": 8},
        "hot": {"max_bytes": 64 * (4 * DIM + 256)},
        "warm": {"path": str(tmp / "warm"), "max_bytes": "64MiB", "durability": "fast"},
        "policy": {"seed": 1},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    return parse_config(data)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def encoder() -> CountingEncoder:
    return CountingEncoder()


@pytest.fixture
def cache(tmp_path: Path, encoder: CountingEncoder, clock: FakeClock) -> Iterator[TierCache]:
    c = TierCache(make_config(tmp_path), encoder=encoder, clock=clock)
    yield c
    c.close()


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real redis-server for the session (see tests/redis_server.py)."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_session: Any) -> Any:
    """The session's redis-server, emptied (FLUSHALL) for this test."""
    redis_session.cli_run("flushall")
    return redis_session


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real 3-node Redis Cluster on loopback (started on first use)."""
    from tests.redis_server import RedisCluster3

    cluster = RedisCluster3(tmp_path_factory.mktemp("rcluster")).start()
    yield cluster
    cluster.stop()


__all__ = ["CallableEncoder", "CountingEncoder", "DIM", "FakeClock", "make_config"]
