"""What a simulation means for a service: latency model, encoder cost, JSON and PNG reports.

The simulator counts hot hits and misses per policy and size (see ``simulate``), or hot
hits, warm hits and encoder calls (see ``simulate_tiers``). A :class:`LatencyModel` turns
those counts into what an operator sizes for: the expected mean lookup latency, its
p50/p90/p99, encoder calls and encoder seconds, and, with a warm tier, the warm hit ratio
and SSD writes. Every lookup costs one of three latencies: ``hot_s`` on a hot hit,
``warm_s`` on a warm hit, ``miss_s`` when the encoder computes it; so the latency
distribution is a step function and its q-quantile is the cheapest latency whose outcomes
(with the cheaper ones) cover at least a fraction q of the requests.

Defaults come from the reference machine's ``make bench`` (docs/benchmarks.md): a hot hit
~4 us; a warm float32 single get ~12 us (11.6 us p50, pages in the OS page cache, not
SSD reads); a miss is one encoder call of all-MiniLM-L6-v2 on CPU, ~15 ms alone (batched,
~4.3 ms a text). Override them with the numbers of your own machine and model
(``tiercache sim --hot-latency 3us --warm-latency 80us --miss-latency 25ms``).

A hot-only result (:class:`SimResult`) prices every hot miss as an encoder call (an upper
bound when a warm tier would catch some of them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .simulate import SimResult
from .tiers import TieredSimResult

_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def step_quantile(q: float, levels: Sequence[tuple[float, int]]) -> float:
    """The q-quantile of lookups that take latency ``s`` for ``n`` requests, for each
    ``(s, n)`` of ``levels``: the smallest latency whose requests, with those of every
    cheaper latency, are at least a fraction ``q`` of all. With no requests at all, the
    most expensive latency."""
    ordered = sorted(levels)
    total = sum(n for _, n in ordered)
    done = 0
    for seconds, n in ordered:
        done += n
        if n and done >= q * total:
            return seconds
    return ordered[-1][0]


@dataclass(frozen=True)
class LatencyModel:
    """Seconds per lookup: ``hot_s`` on a hot hit, ``warm_s`` on a warm hit, ``miss_s`` on
    a lookup the encoder computes (a miss of every tier)."""

    hot_s: float = 4e-6
    miss_s: float = 15e-3
    warm_s: float = 12e-6

    def __post_init__(self) -> None:
        for name in ("hot_s", "miss_s", "warm_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {v!r}")

    def to_dict(self, *, warm: bool = True) -> dict[str, float]:
        """The model's latencies; ``warm=False`` leaves out ``warm_s`` (hot-only reports)."""
        out = {"hot_s": self.hot_s, "miss_s": self.miss_s}
        if warm:
            out["warm_s"] = self.warm_s
        return out

    def summarise(self, r: SimResult | TieredSimResult) -> dict[str, Any]:
        """The result as a dict with expected latency (seconds) and encoder cost added.

        A :class:`SimResult` (hot tier only) prices each hot miss as an encoder call. A
        :class:`TieredSimResult` prices hot hits, warm hits and encoder calls apart and
        adds ``warm_hit_ratio``, ``ssd_writes`` (warm writes) and ``local_hit_ratio``.
        """
        out = r.to_dict()
        n = r.requests
        if isinstance(r, TieredSimResult):
            hot, warm, enc = r.hot_hits, r.warm_hits, r.encoder_calls
            out["ssd_writes"] = r.warm_writes
        else:
            hot, warm, enc = r.hits, 0, r.misses
        levels = [(self.hot_s, hot), (self.warm_s, warm), (self.miss_s, enc)]
        # an empty trace prices like a miss, as it always has
        out["mean_latency_s"] = (sum(s * k for s, k in levels) / n) if n else self.miss_s
        for name, q in _QUANTILES:
            out[f"{name}_latency_s"] = step_quantile(q, levels)
        out["encoder_calls"] = enc
        out["encoder_seconds"] = enc * self.miss_s
        out["encoder_calls_saved"] = n - enc
        return out


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def _fmt_bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:g}{unit}"
    return f"{n}B"


def _series(row: dict[str, Any], warm_bytes: dict[int, int]) -> str:
    """A plot label: the policy, and for tiered rows the warm size."""
    if row["policy"] == "belady":
        return "Belady (offline bound" + (", hot only)" if "warm_capacity" in row else ")")
    if "warm_capacity" not in row:
        return str(row["policy"])
    cap = row["warm_capacity"]
    if not cap:
        return f"{row['policy']}, no warm"
    size = _fmt_bytes(warm_bytes[cap]) if cap in warm_bytes else f"{cap:,} entries"
    return f"{row['policy']}, warm {size}"


def write_report(
    results: Sequence[SimResult | TieredSimResult],
    out_dir: str | os.PathLike[str],
    *,
    model: LatencyModel,
    trace_info: dict[str, Any],
    hot_bytes: dict[int, int] | None = None,
    warm_bytes: dict[int, int] | None = None,
) -> dict[str, str]:
    """Write ``sim.json``, ``hit_ratio.png`` and ``latency.png`` into ``out_dir``.

    ``hot_bytes`` (``warm_bytes``) maps an entry capacity to the byte budget it came from
    (``--hot 64MiB``, ``--warm 8GiB``), used to label the axes and series. With tiered
    results (:class:`TieredSimResult`), ``sim.json`` carries the per-tier counts and
    ``warm_s``; ``hit_ratio.png`` has a second panel, the share of lookups served without
    the encoder (hot + warm); ``latency.png`` has one line per policy and warm size (a
    Belady row, hot only, is left out of it). Returns ``{"json", "hit_ratio",
    "latency"}`` paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiered = any(isinstance(r, TieredSimResult) for r in results)
    wb = dict(warm_bytes or {})
    rows = [model.summarise(r) for r in results]
    if tiered:  # a hot-only bound beside tiered rows is marked as such
        for row in rows:
            row.setdefault("warm_capacity", None)
    doc: dict[str, Any] = {
        "trace": trace_info,
        "latency_model": model.to_dict(warm=tiered),
        "hot_bytes": {str(k): v for k, v in (hot_bytes or {}).items()},
    }
    if tiered:
        doc["warm_bytes"] = {str(k): v for k, v in wb.items()}
    doc["results"] = rows
    paths = {
        "json": str(out / "sim.json"),
        "hit_ratio": str(out / "hit_ratio.png"),
        "latency": str(out / "latency.png"),
    }
    Path(paths["json"]).write_text(json.dumps(doc, indent=2), encoding="utf-8")

    series = list(dict.fromkeys(_series(r, wb) for r in rows))
    # colour by policy; marker, size and line style by warm capacity (larger hollow
    # markers), so that curves equal for two warm sizes stay visible
    colours = {
        p: f"C{i}"
        for i, p in enumerate(
            dict.fromkeys(str(r["policy"]) for r in rows if r["policy"] != "belady")
        )
    }
    warms = sorted({r["warm_capacity"] for r in rows if r.get("warm_capacity") is not None})
    markers = "osD^vP*X"
    title = (
        f"{trace_info.get('name', 'trace')}\n{trace_info.get('requests', 0):,} "
        f"requests, {trace_info.get('distinct', 0):,} distinct keys"
    )
    xlabel = "hot tier capacity (entries)" + (", from byte budgets" if hot_bytes else "")
    panels: list[tuple[str, str, str, bool]] = [("hit_ratio", "hot hit ratio", "hit_ratio", False)]
    if tiered:
        panels.append(
            ("local_hit_ratio", "served without the encoder (hot + warm)", "hit_ratio", False)
        )
    panels.append(("mean_latency_s", "expected mean latency per lookup (s, log)", "latency", True))
    for fname in ("hit_ratio", "latency"):
        mine = [p for p in panels if p[2] == fname]
        fig, axes = plt.subplots(1, len(mine), figsize=(8 * len(mine), 4.8), squeeze=False)
        for ax, (key, ylabel, _, log) in zip(axes[0], mine):
            for label in series:
                mine_rows = [r for r in rows if _series(r, wb) == label and key in r]
                pts = sorted((r["capacity"], r[key]) for r in mine_rows)
                if not pts or (tiered and log and label.startswith("Belady")):
                    continue
                style: dict[str, Any] = {"ls": "--", "color": "k"}
                if not label.startswith("Belady"):
                    w = mine_rows[0].get("warm_capacity")
                    m = warms.index(w) if w in warms else 0
                    style = {
                        "marker": markers[m % len(markers)],
                        "markersize": 6 + 4 * m,
                        "ls": ("-", "--", ":", "-.")[m % 4],
                        "mfc": "none" if m else None,
                        "color": colours[str(mine_rows[0]["policy"])],
                    }
                ax.plot([c for c, _ in pts], [v for _, v in pts], label=label, **style)
            ax.set_xscale("log")
            if log:
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            lat = (
                f"; hit {_fmt_s(model.hot_s)}"
                + (f", warm {_fmt_s(model.warm_s)}" if tiered else "")
                + f", miss {_fmt_s(model.miss_s)}"
            )
            ax.set_title(title + (lat if log else ""), fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(paths[fname], dpi=110)
        plt.close(fig)
    return paths


__all__ = ["LatencyModel", "step_quantile", "write_report"]
