"""Placement: what an access means for the tiers, as data. Pure (no I/O, no clock).

The policy engine (:mod:`tiercache.policy`) answers one question at a time (is this key
admitted to hot? which keys does it evict? does a key pass the warm gate?). Placement
combines those answers into the decisions a lookup or a write needs, in a fixed order:

* :func:`victim_fates`: an entry offered to the hot tier (after a warm or shared hit, a
  recompute, an explicit write) is admitted or rejected by ``engine.offer_hot``, which
  names the keys it evicts; each evicted key that warm does not already hold passes the
  warm gate again and is *demoted* (written to warm) or *rejected* (``min_frequency``); a
  key warm holds is simply dropped (inclusive hierarchy: demoting a clean key is free).
* :func:`warm_admits`: which new entries (recomputed, or found in the shared tier) the
  warm gate lets into warm.

The live cache's write path (:mod:`tiercache.writepath`) executes these decisions against
real tiers and counts each by reason; the simulator (:mod:`tiercache.sim.tiers`) counts
the same decisions against a model of the warm store. Both call these functions, so the
simulator's per-tier counts equal the live store's on the same trace (a differential test:
tests/test_sim_tiers.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from .policy import PolicyEngine

BACKED = "backed"
"""An evicted key warm already holds: dropped from hot, nothing written."""
DEMOTE = "demote"
"""An evicted key warm does not hold and whose frequency passes the warm gate: write it."""
REJECT = "rejected"
"""An evicted key warm does not hold and the gate refuses (``min_frequency``): lost."""


def victim_fates(
    engine: PolicyEngine,
    evicted: Sequence[Hashable],
    has_warm: bool,
    backed: Callable[[Hashable], bool],
) -> list[tuple[Hashable, str]]:
    """``(key, fate)`` for each key an admission to hot evicted (``Admission.evicted`` of
    ``engine.offer_hot``), in order: :data:`BACKED`, :data:`DEMOTE` or :data:`REJECT`.

    ``backed(victim)``: whether warm holds the victim already (the caller's view of its
    tiers). Without a warm tier every victim is :data:`BACKED` (nowhere to demote to) and
    no gate is consulted; with one, the gate is consulted once per unbacked victim, in
    order. Callers call this only when there are victims (the common admission evicts
    nothing and costs no call here).
    """
    if not has_warm:
        return [(v, BACKED) for v in evicted]
    gate = engine.warm_gate
    return [(v, BACKED if backed(v) else DEMOTE if gate(v) else REJECT) for v in evicted]


def warm_admits(engine: PolicyEngine, keys: Sequence[Hashable], *, has_warm: bool) -> list[bool]:
    """For each new entry, whether the warm gate lets it into warm (all False without a
    warm tier; no gate is consulted then)."""
    if not has_warm:
        return [False] * len(keys)
    gate = engine.warm_gate
    return [gate(k) for k in keys]


__all__ = ["BACKED", "DEMOTE", "REJECT", "victim_fates", "warm_admits"]
