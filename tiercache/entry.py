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


__all__ = ["Entry"]
