"""What a simulation means for a service: latency model, encoder cost, JSON and PNG reports.

The simulator counts hot hits and misses per policy and size (see ``simulate``). A
:class:`LatencyModel` turns those counts into what an operator sizes for: the expected
mean lookup latency, its p50/p90/p99 (a lookup costs the hot latency on a hit and the
miss latency otherwise, so the q-quantile is the hot latency while the hit ratio is at
least q), encoder calls and encoder seconds. Defaults come from the reference machine's
``make bench`` (docs/benchmarks.md): a hot hit ~4 us; a miss is one encoder call of
all-MiniLM-L6-v2 on CPU, ~15 ms alone (batched, ~4.3 ms a text). Override both with the
numbers of your own machine and model (``tiercache sim --hot-latency 3us
--miss-latency 25ms``).

This models the hot tier alone: every hot miss is priced as a miss (a warm or shared hit
would be cheaper; see docs/simulator.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .simulate import SimResult

_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


@dataclass(frozen=True)
class LatencyModel:
    """Seconds per lookup: ``hot_s`` on a hot hit, ``miss_s`` on a miss (the encoder)."""

    hot_s: float = 4e-6
    miss_s: float = 15e-3

    def __post_init__(self) -> None:
        for name in ("hot_s", "miss_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {v!r}")

    def summarise(self, r: SimResult) -> dict[str, Any]:
        """The result with expected latency (seconds) and encoder cost added."""
        hit = r.hit_ratio
        out = r.to_dict()
        out["mean_latency_s"] = hit * self.hot_s + (1.0 - hit) * self.miss_s
        for name, q in _QUANTILES:
            out[f"{name}_latency_s"] = self.hot_s if hit >= q else self.miss_s
        out["encoder_calls"] = r.misses
        out["encoder_seconds"] = r.misses * self.miss_s
        out["encoder_calls_saved"] = r.hits
        return out


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def write_report(results: Sequence[SimResult], out_dir: str | os.PathLike[str], *,
                 model: LatencyModel, trace_info: dict[str, Any],
                 hot_bytes: dict[int, int] | None = None) -> dict[str, str]:
    """Write ``sim.json``, ``hit_ratio.png`` and ``latency.png`` into ``out_dir``.

    ``hot_bytes`` maps an entry capacity to the byte budget it came from (``--hot
    64MiB``), used to label the x axis. Returns ``{"json", "hit_ratio", "latency"}`` paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [model.summarise(r) for r in results]
    doc = {"trace": trace_info, "latency_model": asdict(model),
           "hot_bytes": {str(k): v for k, v in (hot_bytes or {}).items()}, "results": rows}
    paths = {"json": str(out / "sim.json"), "hit_ratio": str(out / "hit_ratio.png"),
             "latency": str(out / "latency.png")}
    Path(paths["json"]).write_text(json.dumps(doc, indent=2), encoding="utf-8")

    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for key, ylabel, fname, log in (
        ("hit_ratio", "hot hit ratio", "hit_ratio", False),
        ("mean_latency_s", "expected mean latency per lookup (s, log)", "latency", True),
    ):
        fig, ax = plt.subplots(figsize=(8, 4.8))
        for p in policies:
            pts = sorted((r["capacity"], r[key]) for r in rows if r["policy"] == p)
            style: dict[str, Any] = ({"ls": "--", "color": "k"} if p == "belady"
                                     else {"marker": "o"})
            ax.plot([c for c, _ in pts], [v for _, v in pts],
                    label="Belady (offline bound)" if p == "belady" else p, **style)
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("hot tier capacity (entries)" + (", from byte budgets" if hot_bytes
                                                       else ""))
        ax.set_ylabel(ylabel)
        ax.set_title(f"{trace_info.get('name', 'trace')}\n{trace_info.get('requests', 0):,} "
                     f"requests, {trace_info.get('distinct', 0):,} distinct keys"
                     + (f"; hit {_fmt_s(model.hot_s)}, miss {_fmt_s(model.miss_s)}"
                        if log else ""), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(paths[fname], dpi=110)
        plt.close(fig)
    return paths


__all__ = ["LatencyModel", "write_report"]
