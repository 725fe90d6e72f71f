"""Single-flight: concurrent misses of one key are computed once.

The first caller to miss a key *owns* it (a :class:`~concurrent.futures.Future` in the
table); later callers, sync or async, on any thread, *wait* on that future. The owner
resolves every future it claimed, with the vector or with the error, so that no waiter
hangs and nothing half-computed is cached.

Every method here runs with the cache lock held (the ``_locked`` suffix); the table is
touched by no one else.
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from .keys import Content

Owned = list[tuple[bytes, Content, "Future[np.ndarray]"]]
Waits = list[tuple[bytes, "Future[np.ndarray]"]]


class SingleFlight:
    """The table of keys being computed, ``key -> Future``."""

    __slots__ = ("_inflight",)

    def __init__(self) -> None:
        self._inflight: dict[bytes, Future[np.ndarray]] = {}

    def claim_locked(self, keys: list[bytes], contents: list[Content]) -> tuple[Owned, Waits]:
        """Split ``keys`` into those this caller now owns and those it waits for."""
        owned: Owned = []
        waits: Waits = []
        inflight = self._inflight
        for k, c in zip(keys, contents):
            fut = inflight.get(k)
            if fut is None:
                fut = Future()
                inflight[k] = fut
                owned.append((k, c, fut))
            else:
                waits.append((k, fut))
        return owned, waits

    def resolve_locked(
        self, owned: Owned, results: dict[bytes, np.ndarray], err: BaseException | None = None
    ) -> None:
        """Release every owned key: its vector from ``results``, else ``err``. Failures
        are set first, so that no waiter sees a success of a batch that then fails."""
        inflight = self._inflight
        if err is not None:
            for k, _, fut in owned:
                if k not in results:
                    inflight.pop(k, None)
                    fut.set_exception(err)
        for k, _, fut in owned:
            if k in results:
                inflight.pop(k, None)
                fut.set_result(results[k])

    def __len__(self) -> int:
        return len(self._inflight)


__all__ = ["Owned", "SingleFlight", "Waits"]
