"""Trace simulation: replay key traces through the live policy engine, without I/O.

The simulator imports :class:`tiercache.policy.PolicyEngine` and drives it with the same
calls, in the same order, as :class:`tiercache.TierCache` does for its hot tier, so its
hit counts equal the live cache's on the same trace (a differential test checks this).
"""

from __future__ import annotations

from .simulate import SimResult, belady, simulate, simulate_grid
from .traces import load_npy, load_text, zipf_trace

__all__ = [
    "SimResult", "belady", "load_npy", "load_text", "simulate", "simulate_grid", "zipf_trace",
]
