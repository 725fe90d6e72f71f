"""Trace simulation: replay key traces through the live policy engine, without I/O.

The simulator imports :class:`tiercache.policy.PolicyEngine` and drives it with the same
calls, in the same order, as :class:`tiercache.TierCache` does for its hot tier, so its
hit counts equal the live cache's on the same trace (a differential test checks this).
:func:`simulate_tiers` adds a model of the warm tier (warm hits, SSD writes, warm
evictions, encoder calls), also checked against a live cache.
"""

from __future__ import annotations

from .simulate import SimResult, belady, simulate, simulate_grid
from .tiers import TieredSimResult, sim_key_digest, simulate_tiers, warm_entries
from .traces import (
    load_csv,
    load_npy,
    load_oracle_general,
    load_text,
    loop_trace,
    scan_trace,
    shifting_trace,
    zipf_trace,
)

__all__ = [
    "SimResult",
    "TieredSimResult",
    "belady",
    "load_csv",
    "load_npy",
    "load_oracle_general",
    "load_text",
    "loop_trace",
    "scan_trace",
    "shifting_trace",
    "sim_key_digest",
    "simulate",
    "simulate_grid",
    "simulate_tiers",
    "warm_entries",
    "zipf_trace",
]
