"""The comparison grid of issue #3: our policies against libCacheSim's, with the Belady bound.

Four synthetic traces x four cache sizes (0.1%, 1%, 5%, 10% of the trace's distinct keys),
single tier, unit sizes. Per cell:

* our policies, replayed through :func:`tiercache.sim.simulate` (the live engine), plus
  the offline bound :func:`tiercache.sim.belady`;
* libCacheSim's LRU, LFU, ARC, WTinyLFU, S3FIFO, Sieve, LIRS, TwoQ and SLRU on the *same*
  trace (written once as an oracleGeneral file and replayed by its C reader);
* ``gap closed = (ours - LRU) / (Belady - LRU)`` for every policy, the best libCacheSim
  policy and the default policy's deficit against it (percentage points).

Reports: a markdown table, JSON (``--json``) and a PNG of hit ratio against size per trace.
Run ``python -m tiercache.sim.grid --out docs/simulator-grid.md`` (``make sim-grid``).

The default traces (:data:`DEFAULT_TRACES`) have 30,000 keys and 300,000 requests each, so
the whole grid (7 of our policies, 9 of libCacheSim's, Belady, 16 cells) runs in about
ten seconds on one core; ``--keys`` and ``--requests`` scale them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..policy import DEFAULT_POLICY
from .simulate import NEVER_AGAIN, belady, next_uses, simulate
from .traces import ORACLE_GENERAL, scan_trace, shifting_trace, zipf_trace

__all__ = [
    "DEFAULT_FRACTIONS",
    "DEFAULT_TRACES",
    "LCS_MIN_CAPACITY",
    "LCS_POLICIES",
    "lcs_kwargs",
    "OUR_POLICIES",
    "Cell",
    "Grid",
    "PolicySpec",
    "TraceSpec",
    "main",
    "run_grid",
    "summary",
    "to_json",
    "to_markdown",
    "plot",
]

DEFAULT_FRACTIONS: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1)
"""Cache sizes as fractions of the trace's distinct keys (the issue's 0.1/1/5/10%)."""

LCS_POLICIES: tuple[str, ...] = (
    "LRU",
    "LFU",
    "ARC",
    "WTinyLFU",
    "S3FIFO",
    "Sieve",
    "LIRS",
    "TwoQ",
    "SLRU",
)
"""libCacheSim policies compared against (class names in the ``libcachesim`` package)."""


@dataclass(frozen=True)
class PolicySpec:
    """One of our policies as a grid row: a label, a registered name and its params."""

    label: str
    policy: str
    params: Mapping[str, Any] = field(default_factory=dict)


OUR_POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec("lru", "lru"),
    PolicySpec("lfu", "lfu"),
    PolicySpec("tinylfu", "tinylfu"),
    PolicySpec("wtinylfu-fixed", "wtinylfu", {"adaptive": False}),
    PolicySpec("s3fifo", "s3fifo"),
    PolicySpec("arc", "arc"),
    PolicySpec("wtinylfu", "wtinylfu"),
)
"""Our rows: ``wtinylfu`` is the (adaptive) default, ``wtinylfu-fixed`` the same policy with
``adaptive: false`` (the fixed 1% window it had before)."""


@dataclass(frozen=True)
class TraceSpec:
    """A seeded synthetic trace: ``kind`` is ``zipf``, ``shifting`` or ``scan``."""

    name: str
    kind: str
    alpha: float
    keys: int
    requests: int
    seed: int = 0
    extra: Mapping[str, int] = field(default_factory=dict)

    def build(self) -> np.ndarray:
        """The trace (an int64 array of key ids)."""
        if self.kind == "zipf":
            return zipf_trace(self.alpha, self.keys, self.requests, seed=self.seed)
        if self.kind == "shifting":
            return shifting_trace(
                self.alpha, self.keys, self.requests, seed=self.seed, **self.extra
            )
        if self.kind == "scan":
            return scan_trace(self.alpha, self.keys, self.requests, seed=self.seed, **self.extra)
        raise ValueError(f"unknown trace kind {self.kind!r}")

    def describe(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.extra.items())
        return (
            f"{self.kind}(alpha={self.alpha}, keys={self.keys}, "
            f"requests={self.requests}{extra}, seed={self.seed})"
        )


def default_traces(keys: int = 30_000, requests: int = 300_000) -> tuple[TraceSpec, ...]:
    """The issue's four traces: Zipf 0.9, Zipf 1.2, shifting popularity, scan-polluted.

    * ``shifting``: Zipf(0.9) whose rank->id permutation changes 8 times (phases of
      ``requests / 8``);
    * ``scan``: Zipf(0.9) where every 1,000 requests are followed by a one-pass scan of 500
      never-seen ids (a third of the requests are scans).
    """
    return (
        TraceSpec("zipf-0.9", "zipf", 0.9, keys, requests, seed=1),
        TraceSpec("zipf-1.2", "zipf", 1.2, keys, requests, seed=2),
        TraceSpec("shifting", "shifting", 0.9, keys, requests, seed=3, extra={"phases": 8}),
        TraceSpec(
            "scan",
            "scan",
            0.9,
            keys,
            requests,
            seed=4,
            extra={"scan_every": 1000, "scan_length": 500},
        ),
    )


DEFAULT_TRACES = default_traces()


@dataclass
class Cell:
    """One (trace, size) cell: hit ratios by policy label."""

    trace: str
    fraction: float
    capacity: int
    requests: int
    ours: dict[str, float] = field(default_factory=dict)
    lcs: dict[str, float] = field(default_factory=dict)
    belady: float = 0.0

    @property
    def lru(self) -> float:
        return self.ours.get("lru", self.lcs.get("LRU", 0.0))

    def gap_closed(self, hit_ratio: float) -> float:
        """``(hit_ratio - LRU) / (Belady - LRU)``; 0 when Belady equals LRU."""
        span = self.belady - self.lru
        return (hit_ratio - self.lru) / span if span > 0 else 0.0

    @property
    def best_lcs(self) -> tuple[str, float]:
        """The best libCacheSim policy of the cell (first listed wins ties)."""
        if not self.lcs:
            return ("", 0.0)
        name = max(self.lcs, key=lambda n: (self.lcs[n], -list(self.lcs).index(n)))
        return name, self.lcs[name]

    def deficit(self, label: str) -> float:
        """Percentage points by which ``label`` falls below the best libCacheSim policy
        (0 when libCacheSim did not run in this cell)."""
        if not self.lcs:
            return 0.0
        return 100.0 * (self.best_lcs[1] - self.ours[label])


@dataclass
class Grid:
    traces: list[TraceSpec]
    fractions: list[float]
    cells: list[Cell]
    seed: int
    seconds: float = 0.0
    distinct: dict[str, int] = field(default_factory=dict)


def _write_oracle_general(trace: np.ndarray, path: Path) -> None:
    """``trace`` as libCacheSim's oracleGeneral records (unit sizes, true next uses)."""
    recs = np.zeros(len(trace), dtype=ORACLE_GENERAL)
    recs["clock_time"] = np.arange(len(trace), dtype=np.uint32)
    recs["obj_id"] = trace.astype(np.uint64)
    recs["obj_size"] = 1
    nxt = np.asarray(next_uses(trace.tolist()), dtype=np.int64)
    nxt[nxt == NEVER_AGAIN] = -1
    recs["next_access_vtime"] = nxt
    recs.tofile(path)


LCS_MIN_CAPACITY = 10
"""libCacheSim 0.3.5 aborts the process for tiny caches (S3FIFO below ~6 entries, WTinyLFU
below 4); below this size its policies are not run and the cell shows n/a."""


def lcs_kwargs(name: str, capacity: int, distinct: int) -> dict[str, float]:
    """libCacheSim constructor arguments for policy ``name`` at ``capacity`` objects on a
    trace of ``distinct`` keys."""
    # a hash table sized for the trace (the default, 2**24 buckets, costs more to
    # allocate than a small trace takes to replay); results do not depend on it
    kw: dict[str, float] = {"hashpower": max(12, int(distinct).bit_length() + 1)}
    # libCacheSim rounds WTinyLFU's window (1%) and S3FIFO's small queue (10%) down to
    # zero objects at small sizes, and then the run fails (0 hits): keep >= 1 and >= 2
    # (half an object of slack: libCacheSim truncates capacity * ratio)
    if name == "WTinyLFU":
        kw["window_size"] = max(0.01, 1.5 / capacity)
    if name == "S3FIFO":
        kw["small_size_ratio"] = max(0.1, 2.5 / capacity)
    return kw


def _lcs_hit_ratios(
    path: Path,
    capacity: int,
    names: Sequence[str],
    tick: Callable[[], None],
    distinct: int = 1 << 20,
    lru: float | None = None,
) -> dict[str, float]:
    """libCacheSim's hit ratios; a policy with no hit where LRU (``lru``) has some failed
    and is left out (the cell shows n/a, never 0)."""
    import libcachesim as lcs

    reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE)
    out: dict[str, float] = {}
    for name in names:
        if capacity < LCS_MIN_CAPACITY:
            tick()
            continue
        cache = getattr(lcs, name)(cache_size=capacity, **lcs_kwargs(name, capacity, distinct))
        miss_ratio, _ = cache.process_trace(reader)
        hr = 1.0 - float(miss_ratio)
        if not (hr == 0.0 and lru):
            out[name] = hr
        tick()
    return out


def run_grid(
    traces: Sequence[TraceSpec] = DEFAULT_TRACES,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    ours: Sequence[PolicySpec] = OUR_POLICIES,
    lcs_policies: Sequence[str] = LCS_POLICIES,
    seed: int = 0,
    progress: bool = True,
) -> Grid:
    """Run every policy on every (trace, fraction) cell; see the module docstring.

    ``lcs_policies=()`` skips libCacheSim (then the best-of-libCacheSim columns are empty).
    """
    from tqdm import tqdm

    per_cell = len(ours) + len(lcs_policies) + 1
    bar = tqdm(
        total=len(traces) * len(fractions) * per_cell,
        unit="run",
        disable=not progress,
        file=sys.stderr,
    )
    start = time.perf_counter()
    cells: list[Cell] = []
    distinct: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tiercache-grid-") as tmp:
        for spec in traces:
            trace = spec.build()
            n_distinct = int(np.unique(trace).size)
            distinct[spec.name] = n_distinct
            path = Path(tmp) / f"{spec.name}.oracleGeneral.bin"
            if lcs_policies:
                _write_oracle_general(trace, path)
            for frac in fractions:
                cap = max(1, round(frac * n_distinct))
                cell = Cell(spec.name, frac, cap, len(trace))
                for ps in ours:
                    bar.set_description(f"{spec.name} {cap} {ps.label}")
                    r = simulate(trace, capacity=cap, policy=ps.policy, params=ps.params, seed=seed)
                    cell.ours[ps.label] = r.hit_ratio
                    bar.update()
                bar.set_description(f"{spec.name} {cap} belady")
                cell.belady = belady(trace, capacity=cap).hit_ratio
                bar.update()
                if lcs_policies:
                    bar.set_description(f"{spec.name} {cap} libcachesim")
                    cell.lcs = _lcs_hit_ratios(
                        path, cap, lcs_policies, bar.update, n_distinct, cell.ours.get("lru")
                    )
                cells.append(cell)
    bar.close()
    return Grid(list(traces), list(fractions), cells, seed, time.perf_counter() - start, distinct)


def summary(grid: Grid, label: str = DEFAULT_POLICY) -> dict[str, Any]:
    """Average gap closed and worst deficit of ``label`` (and of each libCacheSim policy)."""
    cells = grid.cells
    out: dict[str, Any] = {}
    labels = list(cells[0].ours) if cells else []
    for lab in labels:
        gaps = [c.gap_closed(c.ours[lab]) for c in cells]
        out[lab] = {"avg_gap_closed": float(np.mean(gaps)) if gaps else 0.0}
        if any(c.lcs for c in cells):
            defs = [c.deficit(lab) for c in cells]
            worst = int(np.argmax(defs))
            out[lab]["worst_deficit_pp"] = defs[worst]
            out[lab]["worst_cell"] = f"{cells[worst].trace} @ {cells[worst].capacity}"
            out[lab]["cells_within_1pp"] = sum(d <= 1.0 for d in defs)
    for name in _lcs_names(grid):
        gaps = [c.gap_closed(c.lcs[name]) for c in cells if name in c.lcs]
        out[f"libcachesim:{name}"] = {"avg_gap_closed": float(np.mean(gaps))}
    out["target"] = {"policy": label, "avg_gap_closed_min": 0.48, "max_deficit_pp": 1.0}
    if label in out and "worst_deficit_pp" in out[label]:
        s = out[label]
        s["meets_target"] = bool(s["avg_gap_closed"] >= 0.48 and s["worst_deficit_pp"] <= 1.0)
    return out


def to_json(grid: Grid, label: str = DEFAULT_POLICY) -> dict[str, Any]:
    """A JSON-ready dict: the traces, every cell, and :func:`summary`."""
    return {
        "seed": grid.seed,
        "seconds": round(grid.seconds, 1),
        "fractions": grid.fractions,
        "traces": [
            {"name": t.name, "spec": t.describe(), "distinct": grid.distinct.get(t.name)}
            for t in grid.traces
        ],
        "cells": [
            {
                "trace": c.trace,
                "fraction": c.fraction,
                "capacity": c.capacity,
                "requests": c.requests,
                "belady": c.belady,
                "ours": c.ours,
                "libcachesim": c.lcs,
                "gap_closed": {k: c.gap_closed(v) for k, v in {**c.ours, **c.lcs}.items()},
                "best_libcachesim": c.best_lcs[0] or None,
                "deficit_pp": ({k: c.deficit(k) for k in c.ours} if c.lcs else None),
            }
            for c in grid.cells
        ],
        "summary": summary(grid, label),
    }


def _lcs_names(grid: Grid) -> list[str]:
    names: list[str] = []
    for c in grid.cells:
        names += [n for n in c.lcs if n not in names]
    return names


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def to_markdown(grid: Grid, label: str = DEFAULT_POLICY) -> str:
    """The grid as markdown: one table of hit ratios (%) and a summary."""
    ours = list(grid.cells[0].ours) if grid.cells else []
    lcs_names = _lcs_names(grid)
    lines = [
        "# Policy comparison grid",
        "",
        "Generated by `python -m tiercache.sim.grid` (`make sim-grid`); hit ratios in %, "
        "single tier, unit sizes, cache = fraction of the trace's distinct keys. "
        f"Seed {grid.seed}; {grid.seconds:.0f} s.",
        "",
        "| trace | spec | distinct keys |",
        "|---|---|---|",
    ]
    for t in grid.traces:
        lines.append(f"| {t.name} | `{t.describe()}` | {grid.distinct.get(t.name, '')} |")
    lines += ["", "## Hit ratios", ""]
    head = ["trace", "size", "entries", *ours, "Belady", *(f"lcs {n}" for n in lcs_names)]
    if lcs_names:
        head += ["best lcs", f"{label} gap closed", f"{label} deficit (pp)"]
    else:
        head += [f"{label} gap closed"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for c in grid.cells:
        row = [
            c.trace,
            f"{100 * c.fraction:g}%",
            str(c.capacity),
            *(_pct(c.ours[k]) for k in ours),
            _pct(c.belady),
            *(_pct(c.lcs[n]) if n in c.lcs else "n/a" for n in lcs_names),
        ]
        if label in c.ours:
            if lcs_names:
                best, _ = c.best_lcs
                row += [
                    best or "n/a",
                    f"{100 * c.gap_closed(c.ours[label]):.1f}%",
                    f"{c.deficit(label):+.2f}" if c.lcs else "n/a",
                ]
            else:
                row += [f"{100 * c.gap_closed(c.ours[label]):.1f}%"]
        lines.append("| " + " | ".join(row) + " |")
    s = summary(grid, label)
    lines += [
        "",
        "## Summary",
        "",
        "Gap closed = (policy - LRU) / (Belady - LRU), averaged over the cells; "
        "deficit = best libCacheSim policy of the cell - policy, in percentage points "
        "(negative: ours is ahead).",
        "",
        "| policy | avg gap closed | worst deficit (pp) | worst cell | cells within 1 pp |",
        "|---|---|---|---|---|",
    ]
    for key, v in s.items():
        if key == "target":
            continue
        worst = v.get("worst_deficit_pp")
        worst_s = "" if worst is None else f"{worst:+.2f}"
        within = "" if worst is None else f"{v['cells_within_1pp']}/{len(grid.cells)}"
        lines.append(
            f"| {key} | {100 * v['avg_gap_closed']:.1f}% | {worst_s} | "
            f"{v.get('worst_cell', '')} | {within} |"
        )
    if label in s and "meets_target" in s[label]:
        lines += [
            "",
            f"Target for `{label}` (avg gap closed >= 48%, worst deficit <= 1 pp): "
            f"**{'met' if s[label]['meets_target'] else 'not met'}**.",
        ]
    return "\n".join(lines) + "\n"


def plot(grid: Grid, path: str | os.PathLike[str]) -> None:
    """Hit ratio against cache size, one panel per trace, every policy plus Belady."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(grid.traces)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax, spec in zip(axes.flat, grid.traces):
        cells = [c for c in grid.cells if c.trace == spec.name]
        x = [100 * c.fraction for c in cells]
        for lab in cells[0].ours:
            bold = lab == DEFAULT_POLICY
            ax.plot(
                x,
                [100 * c.ours[lab] for c in cells],
                marker="o",
                linewidth=2.5 if bold else 1.2,
                label=f"ours: {lab}",
            )
        for name in _lcs_names(grid):
            ax.plot(
                x,
                [100 * c.lcs.get(name, float("nan")) for c in cells],
                linestyle=":",
                marker=".",
                linewidth=1,
                label=f"lcs: {name}",
            )
        ax.plot(
            x,
            [100 * c.belady for c in cells],
            color="black",
            linestyle="--",
            linewidth=2,
            label="Belady (OPT)",
        )
        ax.set_xscale("log")
        ax.set_xlabel("cache size (% of distinct keys)")
        ax.set_ylabel("hit ratio (%)")
        ax.set_title(spec.name)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tiercache.sim.grid",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", default="docs/simulator-grid.md", help="markdown report path")
    ap.add_argument("--json", default="out/sim-grid.json", help="JSON report path")
    ap.add_argument("--png", default="docs/img/sim-grid.png", help="plot path ('' skips)")
    ap.add_argument("--keys", type=int, default=30_000, help="keys per trace")
    ap.add_argument("--requests", type=int, default=300_000, help="requests per trace")
    ap.add_argument(
        "--fractions",
        default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
        help="cache sizes as fractions of distinct keys, comma separated",
    )
    ap.add_argument("--traces", default="", help="only these trace names, comma separated")
    ap.add_argument("--seed", type=int, default=0, help="policy seed")
    ap.add_argument("--no-libcachesim", action="store_true", help="skip libCacheSim")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    traces = list(default_traces(args.keys, args.requests))
    if args.traces:
        wanted = set(args.traces.split(","))
        traces = [t for t in traces if t.name in wanted]
        if not traces:
            ap.error(f"no trace named in {args.traces!r}")
    fractions = [float(f) for f in args.fractions.split(",") if f]
    grid = run_grid(
        traces,
        fractions,
        seed=args.seed,
        progress=not args.quiet,
        lcs_policies=() if args.no_libcachesim else LCS_POLICIES,
    )
    md = to_markdown(grid)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = args.png
    if png:
        plot(grid, png)
        rel = os.path.relpath(png, out.parent)
        md += f"\n![hit ratio vs cache size]({rel})\n"
    out.write_text(md, encoding="utf-8")
    jpath = Path(args.json)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    jpath.write_text(json.dumps(to_json(grid), indent=1) + "\n", encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
