"""Smoke test of the comparison grid (tiercache.sim.grid): well-formed output, not numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiercache.sim.grid import (
    LCS_MIN_CAPACITY,
    Grid,
    PolicySpec,
    default_traces,
    main,
    plot,
    run_grid,
    summary,
    to_json,
    to_markdown,
)

OURS = (PolicySpec("lru", "lru"), PolicySpec("wtinylfu", "wtinylfu"))


def tiny_grid(lcs: tuple[str, ...], keys: int = 300, requests: int = 3000) -> Grid:
    traces = default_traces(keys=keys, requests=requests)
    return run_grid(traces, (0.01, 0.1), ours=OURS, lcs_policies=lcs, progress=False)


def test_grid_without_libcachesim_is_well_formed(tmp_path: Path) -> None:
    grid = tiny_grid(())
    assert len(grid.cells) == 8
    for c in grid.cells:
        assert set(c.ours) == {"lru", "wtinylfu"} and c.lcs == {}
        assert 0.0 <= c.ours["lru"] <= c.belady <= 1.0
        assert c.capacity >= 1 and c.requests == 3000
        assert c.deficit("wtinylfu") == 0.0
    md = to_markdown(grid)
    assert md.count("\n| scan |") == 3 and "Belady" in md  # the spec row + 2 cells
    data = to_json(grid)
    assert json.loads(json.dumps(data)) == data
    assert data["summary"]["wtinylfu"]["avg_gap_closed"] <= 1.0
    plot(grid, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_grid_with_libcachesim_and_cli(tmp_path: Path) -> None:
    pytest.importorskip("libcachesim")
    grid = tiny_grid(("LRU", "S3FIFO"), keys=1000, requests=8000)
    assert min(c.capacity for c in grid.cells) < LCS_MIN_CAPACITY  # skipped there, no crash
    for c in (c for c in grid.cells if c.capacity >= LCS_MIN_CAPACITY):
        assert set(c.lcs) == {"LRU", "S3FIFO"}
        # same trace, same LRU: libCacheSim's LRU equals ours exactly
        assert abs(c.lcs["LRU"] - c.ours["lru"]) < 1e-9
        assert c.best_lcs[0] in c.lcs
    s = summary(grid)
    assert {"avg_gap_closed", "worst_deficit_pp", "worst_cell", "meets_target"} <= set(
        s["wtinylfu"]
    )
    out, js, png = tmp_path / "grid.md", tmp_path / "grid.json", tmp_path / "img" / "g.png"
    rc = main(
        [
            "--out",
            str(out),
            "--json",
            str(js),
            "--png",
            str(png),
            "--keys",
            "400",
            "--requests",
            "3000",
            "--fractions",
            "0.05",
            "--traces",
            "zipf-0.9,scan",
            "--quiet",
        ]
    )
    assert rc == 0
    text = out.read_text()
    assert "| zipf-0.9 |" in text and "| scan |" in text and "![" in text
    data = json.loads(js.read_text())
    assert len(data["cells"]) == 2 and data["cells"][0]["best_libcachesim"]
    assert png.read_bytes()[:4] == b"\x89PNG"
