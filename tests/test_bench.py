"""Smoke test of bench/run.py: it runs end to end and reports every store. No timing checks."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
STORES = [
    "tiercache hot",
    "tiercache warm float32",
    "tiercache warm float16",
    "tiercache shared (Redis)",
    "dict",
    "cachetools LFUCache",
    "raw lmdb",
    "redis-py GET/MGET",
    "RedisVL EmbeddingsCache",
    "diskcache",
]
SECTIONS = [
    "## Machine",
    "## Method",
    "## Single get (µs)",
    "## Batch get of 1000 keys",
    "## Single set of a fresh key (µs)",
    "## Every entry point (one run, ratios against embed)",
    "## Footprint per vector",
    "## End to end: embed_many on a mixed stream",
    "## Codec accuracy",
    "## Bulk precompute into warm",
    "## Several processes reading one warm store",
    "## 768-d float32 warm store",
    "## Cold path",
    "## Targets",
]
QUANTILES = ("p50", "p90", "p99", "max")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    for mod in ("diskcache", "cachetools", "lmdb"):
        pytest.importorskip(mod)
    tmp = tmp_path_factory.mktemp("bench")
    md, js = tmp / "b.md", tmp / "b.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--smoke",
            "--out",
            str(md),
            "--json",
            str(js),
            "--tmp",
            str(tmp),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[bench" in proc.stderr  # progress on stderr
    assert not (tmp / "img").exists()  # --smoke draws no plots unless --plots is given
    return md.read_text(encoding="utf-8"), json.loads(js.read_text(encoding="utf-8"))


def test_markdown_has_every_table_and_store(smoke: tuple[str, dict]) -> None:
    md, _ = smoke
    for section in SECTIONS:
        assert section in md, section
    for name in STORES:
        assert f"| {name} |" in md, name
    assert md.count("| store | dist | p50 | p90 | p99 | max |") == 1
    assert "met" in md.split("## Targets", 1)[1]
    for row in (
        "| get | hot |",
        "| get_by_key(key) | warm |",
        "| mget(1000) | warm |",
        "| set (store empty, as the raw one) | warm fast |",
        "| set, 8 threads | warm durable |",
        "| embed, reuse gate on (1,024-call blocks) | hot |",  # issue #17's A/B
        "| embed_many(1000), reuse gate off (2-call blocks) | hot |",
    ):
        assert row in md, row  # the entry-point table (bench/entrypoints.py)
    targets = md.split("## Targets", 1)[1]
    for what in ("embed, reuse gate on (1,024-call blocks)", "embed_many(1000), reuse gate on"):
        assert f"| hot {what}" in targets, what  # ep_reuse, both A/B rows


def test_json_has_quantiles_for_every_store(smoke: tuple[str, dict]) -> None:
    _, res = smoke
    by = {r["name"]: r for r in res["stores"]}
    # the Redis stores run when redis-server is installed (`make test` installs it)
    expected = (
        STORES
        if shutil.which("redis-server")
        else [s for s in STORES if "Redis" not in s and "redis" not in s]
    )
    if importlib.util.find_spec("redisvl") is None:
        expected = [s for s in expected if not s.startswith("RedisVL")]
    assert sorted(by) == sorted(expected)
    for name, r in by.items():
        for dist in ("uniform", "zipf1.0"):
            assert all(isinstance(r["get_us"][dist][q], float) for q in QUANTILES), name
        for part in ("batch_ms", "set_us"):
            assert all(isinstance(r[part][q], float) for q in QUANTILES), (name, part)
        assert r["footprint"]["bytes"] > 0, name
    stream = res["stream"]
    assert all(q in stream["latency_ms"] for q in QUANTILES)
    assert stream["tiers"]["hot"]["hits"] + stream["tiers"]["warm"]["hits"] > 0
    assert {t["met"] for t in res["targets"]} <= {True, False}
    assert set(res["codecs"]) == {"float32", "float16", "int8"}
    assert res["codecs"]["float32"]["min"] > 0.99999  # float32 is exact
    assert res["bulk"]["fast"]["vectors_per_s"] > 0 and res["bulk"]["durable"]["seconds"] > 0
    runs = res["concurrency"]["runs"]
    assert set(runs) == {"1", "2"} and all(r["ops_per_s"] > 0 for r in runs.values())
    assert all(r["encoder_texts"] == 0 for r in runs.values())  # every get was a warm hit
    assert res["warm768"]["dim"] == 768 and res["warm768"]["get_us"]["p50"] > 0
    assert res["cold"] is None  # the smoke run never loads the model


def test_ratio_stores_are_measured_side_by_side(smoke: tuple[str, dict]) -> None:
    """The targets' stores and their floors are measured again in alternating rounds, and
    the targets are those rounds' p50s (the same machine phases for every side)."""
    md, res = smoke
    pr = res["paired"]
    by = {r["name"]: r for r in res["stores"]}
    paired = [
        n
        for n in (
            "tiercache hot",
            "dict",
            "tiercache warm float32",
            "tiercache warm float16",
            "raw lmdb",
            "diskcache",
            "RedisVL EmbeddingsCache",
        )
        if n in by
    ]
    assert sorted(pr) == sorted(paired)
    for v in pr.values():
        for dist in ("uniform", "zipf1.0"):
            assert all(isinstance(v["get_us"][dist][q], float) for q in QUANTILES)
        assert all(isinstance(v["batch_ms"][q], float) for q in QUANTILES)
        assert len(v["rounds_get_p50_us"]) == len(v["rounds_batch_p50_ms"]) >= 1
    value = {t["target"]: t for t in res["targets"]}
    warm = pr["tiercache warm float32"]["get_us"]["uniform"]["p50"]
    assert value["warm f32 single get vs diskcache (uniform p50)"]["value"] == pytest.approx(
        pr["diskcache"]["get_us"]["uniform"]["p50"] / warm
    )
    w16 = value["warm float16 single get p50 (zipf1.0)"]
    assert w16["value"] == pr["tiercache warm float16"]["get_us"]["zipf1.0"]["p50"]
    assert w16["floor"] == pr["raw lmdb"]["get_us"]["zipf1.0"]["p50"]
    assert "## Side by side:" in md


def test_a_saved_run_renders_again_without_measuring(
    smoke: tuple[str, dict], tmp_path: Path
) -> None:
    md, res = smoke
    js = tmp_path / "run.json"
    js.write_text(json.dumps(res), encoding="utf-8")
    out = tmp_path / "again.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--render", str(js), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = out.read_text(encoding="utf-8")
    assert again == md  # same run, same report
    assert "floor, same run" in again and "## Profiles (cProfile, same run)" in again


def test_staleness_bench_runs(tmp_path: Path, redis_server: Any) -> None:
    """bench/staleness.py with real reader processes: it runs and reports both readers."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import staleness

    res = staleness.staleness(5, tmp_path, redis_server.url, lambda m: None)
    assert set(res["rows"]) == {"same host", "fleet"}
    text = "\n".join(staleness.render(res))
    assert "| fleet |" in text and "p99 ms" in text


def test_shared_auth_bench_runs(redis_server: Any) -> None:
    """bench/shared_auth.py, tiny: every mode reads its records back as shared hits (the
    bench asserts it) and the table has a row per mode."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import shared_auth

    res = shared_auth.run(redis_server.url, 50, 1, open_n=100)
    modes = {"redis-py", "no tag", "unkeyed", "keyed", "keyed, previous"}
    assert set(res["get_us"]) == modes and set(res["mget100_us"]) == modes
    table = shared_auth._table(res)
    assert "| keyed, previous |" in table and "tag check of one record" in table


def test_scale_bench_runs(tmp_path: Path) -> None:
    """bench/scale.py at a small size: both stores built, timed, rendered."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import scale

    res = scale.scale([3000], tmp_path, rounds=2, log=lambda m: None)
    (row,) = res["rows"]
    assert row["n"] == 3000 and row["ratio"] > 0 and row["embed_p50_us"] > 0
    assert "| 3,000 |" in "\n".join(scale.render(res))
