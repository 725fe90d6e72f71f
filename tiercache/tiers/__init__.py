"""Storage tiers: dumb, batch-first record stores. Capacity and victims are the engine's job."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol


class RecordStore(Protocol):
    """What every byte-record tier offers (the warm LMDB tier, the shared Redis tier).

    Keys are 16-byte digests, values are encoded records (see ``tiercache.codec``).
    Every method is batch-first; results are in input order.
    """

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None: ...

    def delete_many(self, keys: Sequence[bytes]) -> int: ...

    def keys(self) -> Iterator[bytes]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...
