"""Fast and soak variants of the fault tests, and the soak's machine-readable summary.

``make test`` runs the fast variants. ``make soak`` sets ``TIERCACHE_SOAK=1`` (longer runs:
50 crash cycles, a longer 4-process x 8-thread run, more corruption seeds, more hypothesis
examples) and ``TIERCACHE_SOAK_OUT=<path>``: each fault test then merges its figures into
that JSON file (a section per test, plus ``totals``). Without ``TIERCACHE_SOAK_OUT``
nothing is written. The tests assert ``lost == 0`` and ``wrong == 0`` themselves; the file
records what was exercised.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SOAK = os.environ.get("TIERCACHE_SOAK", "").lower() in ("1", "true", "yes")
"""True under ``make soak``."""

_SUMMED = (
    "cycles",
    "records_checked",
    "faults_injected",
    "acked_lost",
    "wrong_vectors",
    "caller_errors",
    "ops",
)


def scale(fast: T, soak: T) -> T:
    """``soak`` under ``make soak``, else ``fast``."""
    return soak if SOAK else fast


def record(section: str, **figures: Any) -> None:
    """Merge ``figures`` (counters) into the soak summary under ``section``.

    Called once per test run; a section written twice (a parametrised test) has its
    numeric figures added up. ``totals`` sums the common counters over every section.
    """
    out = os.environ.get("TIERCACHE_SOAK_OUT")
    if not out:
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(
        "meta",
        {
            "first_figures_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "soak": SOAK,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        },
    )
    sections: dict[str, Any] = data.setdefault("sections", {})
    old = sections.get(section, {})
    merged = dict(old)
    for k, v in figures.items():
        if (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and isinstance(old.get(k), (int, float))
        ):
            merged[k] = old[k] + v
        else:
            merged[k] = v
    sections[section] = merged
    data["totals"] = {k: sum(s.get(k, 0) for s in sections.values()) for k in _SUMMED}
    data["meta"]["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
