"""Type stubs for the compiled policy core (built from tiercache/_core_src/)."""

from collections.abc import Hashable, Iterator, Sequence
from typing import Any

class WTinyLFUCore:
    window_capacity: int
    main_capacity: int
    protected_capacity: int
    _sample_hits: int
    _sample_requests: int
    _sample_recurring: int
    _period: int
    _climbing: bool
    _full: bool
    def _core_setup(
        self,
        capacity: int,
        window: int,
        protected_fraction: float,
        sketch: Any,
        hasher: Any,
        fast_hash: int,
        rng: Any,
        jitter_threshold: int,
        climbing: bool,
        period: int,
        mode: int = 0,
        /,
    ) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object) -> bool: ...
    def segment(self, key: Hashable, /) -> str | None: ...
    def _lfu_count(self, key: Hashable, /) -> int: ...
    def _s3fifo_setup(self, small: int, ghost: int, move_threshold: int, /) -> None: ...
    def _arc_setup(self) -> None: ...
    def _reuse_setup(self, ghost: int, /) -> None: ...
    def _mini_setup(
        self, threshold: int, period: int, shadows: list[tuple[Any, ...]], salt: int = ..., /
    ) -> None: ...
    def _mini_state(self) -> tuple[int, tuple[int, ...], tuple[int, ...], int] | None: ...
    _reuse_pause: int
    p: float
    def on_hit(self, key: Hashable, /) -> None: ...
    def on_hits(self, keys: Sequence[Hashable], /) -> None: ...
    def admit(self, key: Hashable, /) -> Any: ...
    def remove(self, key: Hashable, /) -> bool: ...
    def keys(self) -> Iterator[Hashable]: ...
    def _segment_keys(self, segment: int, /) -> list[Hashable]: ...
    def resize_window(self, window: int, /) -> None: ...
    def _set_window(self, window: int, /) -> None: ...

def drain(policy: WTinyLFUCore, keys: Sequence[Hashable], /) -> None: ...
def replay(
    policy: WTinyLFUCore,
    trace: Any,
    misses_out: Any,
    /,
) -> tuple[int, int, int, int, int]: ...
def bind(admission: type, admitted: Any, rejected: Any, /) -> None: ...

class HotReader:
    hits: int
    def __init__(
        self,
        fallback: Any,
        lock: Any,
        by_content: dict[Any, int],
        slab: Any,
        expires: list[float],
        keys: list[bytes],
        buffer: list[Any],
        access_buffer: int,
        drain: Any,
        clock: Any,
        record_latency: Any,
        /,
    ) -> None: ...
    def __call__(self, content: Any, /) -> Any: ...
    def gather(self, contents: list[Any], out: Any, served: list[int] = ..., /) -> list[int]: ...
    def take_hits(self) -> int: ...
    def set_gate(self, gate: SeqGate | None) -> None: ...

class EntryGetter:
    def __init__(
        self,
        reader: HotReader | WarmReader,
        fallback: Any,
        metas: list[bytes | None] | None,
        entry_type: type,
        tier: str,
        /,
    ) -> None: ...
    def fill(
        self,
        found: list[Any],
        out: Any,
        positions: Any,
        keys: list[bytes],
        blobs: list[bytes | None],
        tier: str,
        /,
    ) -> list[int]: ...
    def __call__(self, content: Any, /, *, model: str | None = None) -> Any: ...

class WarmReader:
    hits: int
    native_xxh3: bool
    def __init__(
        self,
        fallback: Any,
        lock: Any,
        tier: Any,
        generations: dict[str, Any],
        prefix: bytes,
        person: bytes,
        dim: int,
        buffer: list[Any],
        access_buffer: int,
        drain: Any,
        clock: Any,
        record_latency: Any,
        xxh3: Any,
        /,
    ) -> None: ...
    def __call__(self, content: Any, /) -> Any: ...
    def digest(self, content: Any, /) -> bytes | None: ...
    def record(self, key: bytes, absent: Any, unserved: Any, /) -> Any: ...
    def live(self, content: Any, now: float, /) -> bool | None: ...
    def rows(
        self,
        contents: list[Any],
        out: Any,
        rows_of: list[list[int]] | None,
        now: float,
        digest: Any,
        /,
    ) -> tuple[list[bytes], bytes, bytes] | None: ...
    def close(self) -> None: ...
    def take_hits(self) -> int: ...
    def set_gate(self, gate: SeqGate | None) -> None: ...

F16C: int

def f16_to_f32(buffer: Any, portable: bool = False, /) -> Any: ...
def row_check(row: Any, /) -> int: ...
def set_one_txn(
    txn: Any,
    records: Any,
    index: Any,
    meta: Any,
    key: bytes,
    rec: bytes,
    log_entry: bytes,
    capacity: int,
    stage_key: bytes,
    stage_limit: int,
    log_entries: int,
    /,
) -> int: ...

class SeqGate:
    """The invalidation sequence word of a warm store (gate.c)."""

    seen: int
    def __init__(self, buffer: Any) -> None: ...
    @property
    def word(self) -> int: ...
    def moved(self) -> bool: ...
    def publish(self, n: int) -> None: ...
    def release(self) -> None: ...

class Digester:
    """KeyMaker.digest in C (hash.c): blake2b-128 with ``person``, primed with ``prefix``."""

    def __init__(self, person: bytes, prefix: bytes) -> None: ...
    def digest(self, content: object) -> bytes | None: ...
    def digests(self, contents: Sequence[object]) -> list[bytes | None]: ...

class SealOpener:
    """RecordSeal.open (unkeyed) of a batch in C (hash.c)."""

    native: bool
    def __init__(self, xxh3_128: Any, seed: int) -> None: ...
    def open_many(
        self, rkeys: list[bytes], values: list[bytes | None]
    ) -> list[bytes | None] | None: ...
