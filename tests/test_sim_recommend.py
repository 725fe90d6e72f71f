"""``tiercache sim --recommend`` (tiercache.sim.recommend): the winner, its YAML, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from tiercache.cli import main as cli
from tiercache.config import parse_config
from tiercache.sim import loop_trace, simulate, zipf_trace
from tiercache.sim.recommend import CANDIDATES, Candidate, recommend


def test_the_recommendation_is_the_best_mean_and_its_yaml_parses(tmp_path: Path) -> None:
    trace = zipf_trace(0.9, 3000, 30_000, seed=3)
    rec = recommend(trace, [30, 300], out_dir=tmp_path)
    means = {c.label: float(np.mean(rec.hit_ratios[c.label])) for c in CANDIDATES}
    assert means[rec.best.label] == max(means.values())
    for c in CANDIDATES:  # the table is the live engine's numbers
        assert (
            rec.hit_ratios[c.label][0]
            == simulate(trace, capacity=30, policy=c.policy, params=c.params).hit_ratio
        )
    assert all(
        b >= max(rec.hit_ratios[c.label][i] for c in CANDIDATES) for i, b in enumerate(rec.belady)
    )
    text = rec.render()
    assert text.endswith(rec.best.yaml()) and "belady (bound)" in text
    cfg = parse_config(_yaml_dict(rec.best.yaml()))
    assert cfg.policy.name == rec.best.policy
    data = json.loads((tmp_path / "recommend.json").read_text())
    assert data["recommended"]["label"] == rec.best.label
    assert (tmp_path / "recommend.png").read_bytes()[:4] == b"\x89PNG"


def _yaml_dict(text: str) -> dict[str, object]:
    import yaml

    out: dict[str, object] = yaml.safe_load(text)
    return out


def test_ties_keep_the_earlier_candidate_and_loops_do_not_get_lru() -> None:
    twins = (Candidate("first", "lru"), Candidate("second", "lru"))
    trace = loop_trace(500, 20_000)
    assert recommend(trace, [100], candidates=twins).best.label == "first"
    rec = recommend(trace, [100, 300])
    assert rec.best.policy != "lru" and max(rec.hit_ratios["lru"]) == 0.0


def test_the_cli_prints_the_table_and_the_snippet(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "sim",
            "--synthetic",
            "zipf:alpha=1.0,keys=2000,requests=20000",
            "--hot-entries",
            "1%,10%",
            "--recommend",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "recommended: " in res.output and "\npolicy:\n  name: " in res.output
    assert (tmp_path / "recommend.json").exists()
