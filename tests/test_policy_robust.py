"""Issue #17: the shift detector tells scans from shifts; the evaluation suite is sound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiercache.errors import ConfigError
from tiercache.policy import POLICIES, PolicyEngine, WTinyLFUPolicy
from tiercache.sim import scan_trace, shifting_trace, simulate
from tiercache.sim.suite import (
    FAMILIES,
    family_trace,
    lcs_reference,
    report,
    run_suite,
    suite_traces,
    summarize,
)

# one-pass scans of 3,000 new keys every 10,000 Zipf requests: 10x the cache of 300
SCANS = scan_trace(0.9, 5000, 100_000, scan_every=10_000, scan_length=3000, seed=3)
SHIFTS = shifting_trace(0.9, 5000, 100_000, phases=5, seed=2)


def run(trace: np.ndarray, capacity: int, **params: Any) -> tuple[float, list[int]]:
    eng = PolicyEngine(hot_capacity=capacity, warm_capacity=0, params=params, seed=0)
    hits = 0
    for k in trace.tolist():
        if k in eng.hot:
            hits += 1
            eng.record_hot_hit(k)
        else:
            eng.record_miss(k)
            eng.offer_hot(k)
    eng.drain()
    assert isinstance(eng.hot, WTinyLFUPolicy)
    return hits / len(trace), list(eng.hot.shifts)


def test_scan_bursts_are_not_taken_for_popularity_shifts() -> None:
    old_hits, old_shifts = run(SCANS, 300, shift_confirm=0.0)
    hits, shifts = run(SCANS, 300)
    assert len(old_shifts) >= 5  # without the confirmation, every long scan misfires
    assert shifts == []
    assert hits > old_hits + 0.01


def test_popularity_shifts_are_still_detected() -> None:
    _, shifts = run(SHIFTS, 100)
    assert len(shifts) == 4  # one per phase boundary
    _, shifts = run(SHIFTS, 300)
    assert len(shifts) >= 3


def test_shift_confirm_is_validated() -> None:
    for bad in (-0.1, 1.5, "x", True):
        with pytest.raises(ConfigError, match="shift_confirm"):
            PolicyEngine(hot_capacity=10, warm_capacity=0, params={"shift_confirm": bad})


@pytest.mark.parametrize("capacity", [100, 300])
def test_compiled_and_python_detectors_decide_alike_on_scans(
    capacity: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = simulate(SCANS[:60_000], capacity=capacity, seed=1)
    fast_run = run(SCANS[:60_000], capacity)
    monkeypatch.setitem(POLICIES, "wtinylfu", WTinyLFUPolicy)
    slow = simulate(SCANS[:60_000], capacity=capacity, seed=1)
    assert fast == slow
    assert run(SCANS[:60_000], capacity) == fast_run


def test_suite_traces_are_seeded_and_the_splits_disjoint() -> None:
    train, test = suite_traces("train"), suite_traces("test")
    assert {t.seed for t in train}.isdisjoint({t.seed for t in test if t.family != "real"})
    assert {t.family for t in train} == {t.family for t in test} == {*FAMILIES, "real"}
    real_train = {t.name for t in train if t.family == "real"}
    real_test = {t.name for t in test if t.family == "real"}
    assert real_train and real_test and real_train.isdisjoint(real_test)
    for t in [*train, *test]:
        if t.family == "real":  # the files are in the repo; distinct traces, not copies
            assert t.build(0, 0).size > 100_000
    for fam in FAMILIES:
        a = family_trace(fam, 7, 2000, 20_000)
        assert a.dtype == np.int64 and a.shape == (20_000,)
        assert np.array_equal(a, family_trace(fam, 7, 2000, 20_000))
        assert not np.array_equal(a, family_trace(fam, 8, 2000, 20_000))
    with pytest.raises(ValueError):
        suite_traces("validation")


def test_libcachesim_reference_has_no_failed_cells_at_small_sizes() -> None:
    pytest.importorskip("libcachesim")
    trace = family_trace("zipf", 3, 3000, 30_000)
    rows = lcs_reference(trace, [10, 16, 28])
    for row in rows:
        # WTinyLFU's window and S3FIFO's small queue no longer round to zero objects
        assert row["WTinyLFU"] and row["S3FIFO"]
        assert 0 < row["LRU"] <= row["Belady"]  # type: ignore[operator]
        assert all(v is None or 0 <= v <= row["Belady"] for v in row.values())  # type: ignore[operator]


def test_suite_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("libcachesim")
    kw: dict[str, Any] = {"keys": 2000, "requests": 20_000, "families": ("zipf", "scan")}
    cells = run_suite("test", cache_dir=tmp_path, **kw)
    assert len(cells) == 2 * 3 * 4
    assert list(tmp_path.glob("suite-ref-test-*.json"))
    again = run_suite("test", cache_dir=tmp_path, **kw)  # references from the cache
    assert [c.ours for c in again] == [c.ours for c in cells]
    for c in cells:
        assert 0 <= c.lru <= c.belady <= 1 and 0 <= c.ours <= c.belady
    s = summarize(cells)
    assert set(s) == {"zipf", "scan", "all"} and s["all"]["cells"] == 24
    lru = run_suite("test", policy="lru", cache_dir=tmp_path, **kw)
    assert max(abs(c.vs_lru_pp()) for c in lru) < 1e-9  # our LRU equals libCacheSim's
    md = report(cells, "t")
    assert md.count("\n| zipf-") == 12 and "| all | 24 |" in md
