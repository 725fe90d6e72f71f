"""The value a stored-vector read returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored vector. ``vector`` is the caller's own copy; ``tier`` is where it was found."""

    key: str
    vector: np.ndarray
    metadata: Any
    tier: str


_new = object.__new__
_fields: dict[str, Any] = dict(Entry.__dict__)  # the slots' member descriptors
_set_key = _fields["key"].__set__
_set_vector = _fields["vector"].__set__
_set_metadata = _fields["metadata"].__set__
_set_tier = _fields["tier"].__set__


def new_entry(key: str, vector: np.ndarray, metadata: Any, tier: str) -> Entry:
    """``Entry(key, vector, metadata, tier)`` at about half the cost: the frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``; this sets the
    slots directly. The read paths build one per hit."""
    e = _new(Entry)
    _set_key(e, key)
    _set_vector(e, vector)
    _set_metadata(e, metadata)
    _set_tier(e, tier)
    return e


__all__ = ["Entry", "new_entry"]
