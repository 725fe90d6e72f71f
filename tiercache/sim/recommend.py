"""``tiercache sim --recommend``: which policy and setting suits *this* trace.

Replays the user's trace through every registered policy and a few settings of the
default (:data:`CANDIDATES`) at the given hot-tier sizes, with the offline optimum
(Belady) as the bound, and recommends the candidate with the highest hit ratio averaged
over the sizes. Ties go to the earlier candidate; the default policy is listed first, so a
tie keeps it. The result renders as a table (hit ratio per size, gap closed to Belady)
followed by the ``policy:`` YAML snippet that wins; with ``out_dir`` it also writes
``recommend.json`` and ``recommend.png`` (hit ratio against size, one line per candidate).

Every candidate runs the live policy code (:func:`tiercache.sim.simulate`), so the
recommended snippet reproduces the simulated decisions in a live cache with the same seed.
A recommendation is only as good as the trace: it should be long enough to cover the
workload's cycles (a day of traffic rather than an hour).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..policy import DEFAULT_POLICY
from .simulate import belady, simulate

__all__ = ["CANDIDATES", "Candidate", "Recommendation", "recommend"]


@dataclass(frozen=True)
class Candidate:
    """A policy name and its params, as they would appear under ``policy:`` in YAML."""

    label: str
    policy: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def yaml(self) -> str:
        lines = ["policy:", f"  name: {self.policy}"]
        if self.params:
            lines.append("  params:")
            for k, v in self.params.items():
                value = str(v).lower() if isinstance(v, bool) else str(v)
                lines.append(f"    {k}: {value}")
        return "\n".join(lines)


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("wtinylfu (default)", DEFAULT_POLICY),
    Candidate("wtinylfu fixed 1%", "wtinylfu", {"adaptive": False}),
    Candidate("wtinylfu fixed 20%", "wtinylfu", {"window": 0.2, "adaptive": False}),
    Candidate("wtinylfu no shift", "wtinylfu", {"shift": 0.0}),
    Candidate("tinylfu", "tinylfu"),
    Candidate("s3fifo", "s3fifo"),
    Candidate("arc", "arc"),
    Candidate("lru", "lru"),
    Candidate("lfu", "lfu"),
)
"""What ``--recommend`` compares, the default first (it wins ties)."""


@dataclass
class Recommendation:
    """Hit ratios of every candidate at every size, the bound, and the winner."""

    sizes: list[int]
    candidates: list[Candidate]
    hit_ratios: dict[str, list[float]]
    belady: list[float]
    requests: int
    distinct: int

    @property
    def best(self) -> Candidate:
        means = [float(np.mean(self.hit_ratios[c.label])) for c in self.candidates]
        return self.candidates[int(np.argmax(means))]  # first maximum: earlier wins ties

    def render(self) -> str:
        """The table, then the winning YAML snippet."""
        head = f"{'candidate':<22}" + "".join(f"{s:>14}" for s in self.sizes) + f"{'mean':>9}"
        lines = [
            f"{self.requests} requests, {self.distinct} distinct keys; hit ratio % per hot "
            "size (entries), gap closed to Belady in parentheses",
            head,
        ]
        for c in self.candidates:
            hr = self.hit_ratios[c.label]
            cells = ""
            for h, b, lru in zip(hr, self.belady, self.hit_ratios.get("lru", hr)):
                gap = (h - lru) / (b - lru) if b > lru else 0.0
                cells += f"{100 * h:>7.2f} ({100 * gap:>3.0f}%)"
            lines.append(f"{c.label:<22}{cells}{100 * float(np.mean(hr)):>8.2f}%")
        bound = "".join(f"{100 * b:>7.2f}       " for b in self.belady)
        lines.append(f"{'belady (bound)':<22}{bound}{100 * float(np.mean(self.belady)):>8.2f}%")
        best = self.best
        lines += ["", f"recommended: {best.label}", best.yaml()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "distinct": self.distinct,
            "sizes": self.sizes,
            "belady": self.belady,
            "candidates": [
                {"label": c.label, "policy": c.policy, "params": dict(c.params)}
                for c in self.candidates
            ],
            "hit_ratios": self.hit_ratios,
            "recommended": {"label": self.best.label, "yaml": self.best.yaml()},
        }

    def plot(self, path: str | Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for c in self.candidates:
            ax.plot(
                self.sizes, [100 * h for h in self.hit_ratios[c.label]], marker="o", label=c.label
            )
        ax.plot(self.sizes, [100 * b for b in self.belady], "k--", label="belady (bound)")
        ax.set_xscale("log")
        ax.set_xlabel("hot entries")
        ax.set_ylabel("hit ratio %")
        ax.set_title(f"recommended: {self.best.label}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def recommend(
    trace: Sequence[Any] | np.ndarray,
    sizes: Sequence[int],
    *,
    seed: int = 0,
    candidates: Sequence[Candidate] = CANDIDATES,
    out_dir: str | Path | None = None,
) -> Recommendation:
    """Replay ``trace`` through every candidate at every size; see the module doc."""
    if not sizes:
        raise ValueError("give at least one hot size")
    keys = trace if isinstance(trace, np.ndarray) else list(trace)
    distinct = len(np.unique(keys)) if isinstance(keys, np.ndarray) else len(set(keys))
    hit_ratios = {
        c.label: [
            simulate(keys, capacity=s, policy=c.policy, params=c.params, seed=seed).hit_ratio
            for s in sizes
        ]
        for c in candidates
    }
    if "lru" not in hit_ratios:  # the gap-closed baseline
        hit_ratios["lru"] = [simulate(keys, capacity=s, policy="lru").hit_ratio for s in sizes]
    bound = [belady(keys, capacity=s).hit_ratio for s in sizes]
    rec = Recommendation(list(sizes), list(candidates), hit_ratios, bound, len(keys), distinct)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "recommend.json").write_text(json.dumps(rec.to_json(), indent=1) + "\n")
        rec.plot(out / "recommend.png")
    return rec
