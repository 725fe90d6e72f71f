"""LMDB page geometry of the warm store: how records pack into segments and how many
entries a byte budget holds. Pure arithmetic (no LMDB import), shared by the warm tier
(:mod:`tiercache.tiers.lmdb`), the cache's wiring and the simulator (:mod:`tiercache.sim`).
"""

from __future__ import annotations

import functools
import math

from .keys import KEY_BYTES

MAX_SEGMENT_SLOTS = 64
_K_TOLERANCE = 0.01


def segment_cost(slots: int, record_len: int, page_size: int = 4096) -> float:
    """Bytes of B-tree and overflow pages one segment of ``slots`` slots costs, per slot.

    A value of V bytes over the leaf limit takes ``ceil((V + 16) / page_size)`` overflow
    pages plus a 26-byte leaf node (8 header + 8 key + 8 page number + 2 pointer); a smaller
    value stays in leaf pages filled densely by appends (8 + 8 + V + 2 bytes a node).
    """
    value = slots * (KEY_BYTES + record_len)
    node_max = ((page_size - 16) // 2 & -2) - 2
    if 8 + 8 + value <= node_max:
        per_page = (page_size - 16) // (8 + 8 + value + 2)
        return page_size / per_page / slots
    return (math.ceil((value + 16) / page_size) * page_size + 26) / slots


@functools.lru_cache(maxsize=64)
def segment_slots(record_len: int, page_size: int = 4096) -> int:
    """K, the slots per segment for records of ``record_len`` bytes.

    The K in 2..64 with the fewest bytes per slot; among those within 1% of that minimum,
    the smallest (a rewrite of a segment rewrites all its pages). 384-d float32 (1,560 B):
    K = 18 (7 pages, 1,594 B a slot); float16 (792 B): K = 5 (1 page, 824 B a slot).
    """
    costs = {k: segment_cost(k, record_len, page_size) for k in range(2, MAX_SEGMENT_SLOTS + 1)}
    best = min(costs.values())
    return min(k for k, c in costs.items() if c <= best * (1 + _K_TOLERANCE))


def warm_capacity(max_bytes: int, record_len: int, page_size: int = 4096) -> int:
    """Entries that fit a warm byte budget, from LMDB's page geometry.

    Records of ``record_len`` bytes (vectors without metadata) are packed K to a segment
    (see :func:`segment_slots`); a slot costs ``segment_cost(K, record_len)`` bytes when
    segments are full. Under steady eviction segments run ~69% full on average (they are
    compacted below half full), and the digest index adds ~60 bytes a key, so an entry is
    charged ``slot_cost / 0.69 + 60`` bytes: 384-d float32 ~2,370 B (measured ~2,310 B
    while evicting, ~1,660 B before any delete). Records carrying metadata are stored
    unpacked and cost more. See docs/record-format.md.
    """
    k = segment_slots(record_len, page_size)
    per_entry = math.ceil(segment_cost(k, record_len, page_size) / 0.69) + 60
    return max(1, max_bytes // per_entry)


__all__ = ["MAX_SEGMENT_SLOTS", "segment_cost", "segment_slots", "warm_capacity"]
