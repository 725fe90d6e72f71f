from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiercache import CallableEncoder, TierCache
from tiercache.encoders import HashEncoder

from .conftest import DIM, CountingEncoder, make_config


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_async_api_mirrors_sync(tmp_path: Path) -> None:
    async def main() -> None:
        async with TierCache(make_config(tmp_path), encoder=CountingEncoder()) as c:
            v = await c.aembed("a")
            m = await c.aembed_many(["a", "b", "a"])
            assert np.array_equal(v, m[0]) and np.array_equal(m[0], m[2])
            ref = HashEncoder(DIM).encode(["a", "b"])
            assert np.array_equal(m[:2], ref)
            vec = np.ones(DIM, np.float32)
            key = await c.aset("s", vec, metadata={"k": 1}, ttl=60)
            e = await c.aget("s")
            assert e is not None and e.key == key and e.metadata == {"k": 1}
            assert [x is not None for x in await c.amget(["s", "zz"])] == [True, False]
            assert await c.aexists("s") and await c.amexists(["s", "zz"]) == [True, False]
            matrix, found = await c.alookup_many(["s", "zz"])
            assert found.tolist() == [True, False] and np.array_equal(matrix[0], vec)
            assert await c.amset([("t", vec), ("u", vec)]) == [c.key("t"), c.key("u")]
            assert await c.adrop("s") and not await c.aexists("s")
            assert await c.amdrop(["t", "u", "zz"]) == 2
            await c.aclear()
            assert not await c.aexists("a")
        assert c._closed

    run(main())


def test_hot_hit_is_served_on_the_loop_without_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = TierCache(make_config(tmp_path), encoder=CountingEncoder())
    c.embed("hot one")

    def no_threads(*a: Any, **k: Any) -> Any:
        raise AssertionError("a hot hit must not need the thread pool")

    monkeypatch.setattr(c, "_run", no_threads)
    v = run(c.aembed("hot one"))
    assert np.array_equal(v, HashEncoder(DIM).encode(["hot one"])[0])
    c.close()


def test_slow_encoder_never_blocks_the_loop_and_single_flight_spans_sync_and_async(
    tmp_path: Path,
) -> None:
    calls: list[list[Any]] = []
    gate = threading.Event()

    def slow(xs: list[Any]) -> np.ndarray:
        calls.append(list(xs))
        gate.wait(5)
        return np.ones((len(xs), DIM), dtype=np.float32)

    c = TierCache(make_config(tmp_path), encoder=CallableEncoder(slow, dim=DIM, name="slow"))
    sync_result: list[np.ndarray] = []
    t = threading.Thread(target=lambda: sync_result.append(c.embed("shared")))
    t.start()
    time.sleep(0.2)  # the sync caller owns the in-flight encode

    async def main() -> tuple[np.ndarray, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        waiter = asyncio.create_task(c.aembed("shared"))
        await asyncio.sleep(0.3)
        gate.set()
        vec = await waiter
        tick_task.cancel()
        return vec, ticks

    vec, ticks = run(main())
    t.join()
    assert ticks >= 10  # the loop kept running while the encoder was busy
    assert calls == [["shared"]]  # one encode for the sync and the async caller
    assert np.array_equal(vec, sync_result[0])
    c.close()
