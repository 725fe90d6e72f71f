"""asyncio twins of TierCache's methods (``aembed``, ``amget``, ...).

Blocking work (LMDB I/O, the encoder) runs in the cache's own thread pool, so the event
loop never waits on a disk or a model; the sync and async callers share one single-flight
table, so a text missing for both is encoded once. A hot hit is served on the event loop
itself when the cache's lock is free (a non-blocking try), which costs microseconds and
no thread hop.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .keys import Content

if TYPE_CHECKING:
    from .entry import Entry

T = TypeVar("T")


def _batch(items: Any) -> Any:
    """A batch argument made a list on the loop's thread (so an iterator tied to the loop
    is consumed here), except what the sync method must refuse as it is (None, one str or
    bytes, a non-iterable): handed over unchanged for its typed error."""
    if items is None or isinstance(items, (str, bytes)):
        return items
    try:
        return list(items)
    except TypeError:
        return items


class AsyncAPI:
    """Mixed into :class:`~tiercache.TierCache`; see the sync method of the same name
    (without the ``a``) for semantics. Every method must be awaited on a running loop."""

    _executor: ThreadPoolExecutor | None = None
    _executor_lock = threading.Lock()

    def _hot_get_nowait(self, content: Content) -> np.ndarray | None:
        raise NotImplementedError

    if TYPE_CHECKING:  # the sync methods these wrap, provided by TierCache

        def embed(self, content: Content) -> np.ndarray: ...
        def embed_many(self, contents: Sequence[Content]) -> np.ndarray: ...
        def get(self, content: Content, *, model: str | None = None) -> Entry | None: ...
        def mget(
            self, contents: Sequence[Content], *, model: str | None = None
        ) -> list[Entry | None]: ...
        def set(
            self,
            content: Content,
            vector: Any,
            *,
            metadata: Any = None,
            ttl: float | None = None,
            model: str | None = None,
        ) -> str: ...
        def mset(
            self, items: Iterable[Any], *, ttl: float | None = None, model: str | None = None
        ) -> list[str]: ...
        def lookup_many(
            self, contents: Sequence[Content], *, model: str | None = None
        ) -> tuple[np.ndarray, np.ndarray]: ...
        def exists(self, content: Content, *, model: str | None = None) -> bool: ...
        def mexists(
            self, contents: Sequence[Content], *, model: str | None = None
        ) -> list[bool]: ...
        def drop(self, content: Content, *, model: str | None = None) -> bool: ...
        def mdrop(self, contents: Sequence[Content], *, model: str | None = None) -> int: ...
        def clear(self) -> None: ...
        def close(self) -> None: ...

    def _pool(self) -> ThreadPoolExecutor:
        pool = self._executor
        if pool is None:
            with self._executor_lock:
                pool = self._executor
                if pool is None:
                    pool = ThreadPoolExecutor(
                        max_workers=min(32, (os.cpu_count() or 1) + 4),
                        thread_name_prefix="tiercache",
                    )
                    self._executor = pool
        return pool

    def _shutdown_pool(self) -> None:
        pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), functools.partial(fn, *args, **kwargs))

    async def aembed(self, content: Content) -> np.ndarray:
        vec = self._hot_get_nowait(content)
        if vec is not None:
            return vec
        return await self._run(self.embed, content)

    async def aembed_many(self, contents: Sequence[Content]) -> np.ndarray:
        return await self._run(self.embed_many, _batch(contents))

    async def aget(self, content: Content, *, model: str | None = None) -> Entry | None:
        return await self._run(self.get, content, model=model)

    async def amget(
        self, contents: Sequence[Content], *, model: str | None = None
    ) -> list[Entry | None]:
        return await self._run(self.mget, _batch(contents), model=model)

    async def alookup_many(
        self, contents: Sequence[Content], *, model: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return await self._run(self.lookup_many, _batch(contents), model=model)

    async def aset(
        self,
        content: Content,
        vector: Any,
        *,
        metadata: Any = None,
        ttl: float | None = None,
        model: str | None = None,
    ) -> str:
        return await self._run(
            self.set,
            content,
            vector,
            metadata=metadata,
            ttl=ttl,
            model=model,
        )

    async def amset(
        self, items: Iterable[Any], *, ttl: float | None = None, model: str | None = None
    ) -> list[str]:
        return await self._run(
            self.mset,
            _batch(items),
            ttl=ttl,
            model=model,
        )

    async def aexists(self, content: Content, *, model: str | None = None) -> bool:
        return await self._run(self.exists, content, model=model)

    async def amexists(
        self, contents: Sequence[Content], *, model: str | None = None
    ) -> list[bool]:
        return await self._run(
            self.mexists,
            _batch(contents),
            model=model,
        )

    async def adrop(self, content: Content, *, model: str | None = None) -> bool:
        return await self._run(self.drop, content, model=model)

    async def amdrop(self, contents: Sequence[Content], *, model: str | None = None) -> int:
        return await self._run(self.mdrop, _batch(contents), model=model)

    async def aclear(self) -> None:
        await self._run(self.clear)

    async def aclose(self) -> None:
        """Close from async code: waits for in-flight pool work, then closes the stores."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
