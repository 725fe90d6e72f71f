from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from click.testing import CliRunner

from tiercache.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def write_config(tmp_path: Path) -> Path:
    cfg = {
        "encoder": {"kind": "hash", "dim": 8},
        "warm": {"path": str(tmp_path / "w")},
        "hot": {"max_bytes": "16KiB"},
    }
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_embed_writes_npy_and_prints_table(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    inp = tmp_path / "q.txt"
    inp.write_text("a\nb\na\n\nc\n")
    out = tmp_path / "o.npy"
    r = CliRunner().invoke(
        main, ["embed", "-c", str(cfg), "-i", str(inp), "-o", str(out), "--passes", "2"]
    )
    assert r.exit_code == 0, r.output
    arr = np.load(out)
    assert arr.shape == (4, 8) and np.array_equal(arr[0], arr[2])
    assert re.search(r"^hot\s+\d+", r.output, re.M) and "warm" in r.output
    assert "pass 2" in r.output

    r = CliRunner().invoke(main, ["stats", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "entries      3" in r.output


def test_config_check_ok_and_bad(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = CliRunner().invoke(main, ["config", "check", str(cfg)])
    assert r.exit_code == 0 and "OK" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("warm:\n  max_bytes: -5\n")
    r = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert r.exit_code == 2 and "warm.max_bytes" in r.output


def test_config_show_round_trips(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["config", "show", str(write_config(tmp_path))])
    assert r.exit_code == 0
    assert yaml.safe_load(r.output)["encoder"]["kind"] == "hash"


def _commands(group: object, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in getattr(group, "commands", {}).items():
        full = f"{prefix}{name}"
        if hasattr(cmd, "commands"):
            out += _commands(cmd, full + " ")
        else:
            out.append(full)
    return out


def test_every_command_has_help_and_is_documented() -> None:
    doc = DOCS.read_text()
    for command in _commands(main):
        r = CliRunner().invoke(main, command.split() + ["--help"])
        assert r.exit_code == 0 and "Usage" in r.output
        assert f"tiercache {command}" in doc, f"docs/cli.md lacks 'tiercache {command}'"


def test_stats_does_not_register_a_fingerprint(tmp_path: Path) -> None:
    from tiercache.keys import Fingerprint
    from tiercache.tiers.lmdb import LmdbTier

    cfg = write_config(tmp_path)
    inp = tmp_path / "q.txt"
    inp.write_text("a\n")
    assert CliRunner().invoke(main, ["embed", "-c", str(cfg), "-i", str(inp)]).exit_code == 0
    assert CliRunner().invoke(main, ["stats", "-c", str(cfg)]).exit_code == 0
    t = LmdbTier(
        tmp_path / "w", fingerprint=Fingerprint(model="", dim=0), on_fingerprint_mismatch="inspect"
    )
    fps = t.manifest()["namespaces"]["default"]
    t.close()
    assert [fp["model"] for fp in fps] == ["tiercache/hash"]


def _warm_summary(output: str) -> dict[str, int]:
    m = re.search(
        r"(\d+) lines in .*: (\d+) encoded .*, (\d+) already stored, (\d+) copied "
        r"from the shared tier, (\d+) skipped",
        output,
    )
    assert m, output
    keys = ("lines", "encoded", "present", "shared", "skipped")
    return dict(zip(keys, map(int, m.groups())))


def test_warm_precomputes_a_catalog_and_resumes_after_an_interruption(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from tiercache import TierCache, load_config

    cfg = write_config(tmp_path)
    texts = [f"catalog line {i}" for i in range(95)] + ["catalog line 3"]  # one duplicate
    catalog = tmp_path / "catalog.txt"
    catalog.write_text("\n".join(texts) + "\n")
    real = TierCache.precompute
    calls = {"n": 0}

    def interrupted(self: TierCache, *a: Any, **kw: Any) -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third batch
        return real(self, *a, **kw)

    monkeypatch.setattr(TierCache, "precompute", interrupted)
    r = CliRunner().invoke(main, ["warm", str(catalog), "-c", str(cfg), "--batch", "20"])
    assert r.exit_code == 130, r.output  # Ctrl-C: 128 + SIGINT, not 2 (bad input)
    assert "committed through line 40 (40 lines committed by this run)" in r.stderr
    monkeypatch.setattr(TierCache, "precompute", real)
    r = CliRunner().invoke(main, ["warm", str(catalog), "-c", str(cfg), "--batch", "20"])
    assert r.exit_code == 0, r.output
    s = _warm_summary(r.output)
    # the two committed batches are skipped; every other distinct line is encoded once
    assert s == {"lines": 96, "encoded": 55, "present": 1, "shared": 0, "skipped": 40}
    with TierCache(load_config(cfg)) as cache:
        assert all(cache.mexists(texts))
        assert cache.stats()["tiers"]["warm"]["entries"] == 95
    # a finished file leaves no progress behind: a rerun finds everything stored
    r = CliRunner().invoke(main, ["warm", str(catalog), "-c", str(cfg)])
    assert _warm_summary(r.output) == {
        "lines": 96,
        "encoded": 0,
        "present": 96,
        "shared": 0,
        "skipped": 0,
    }


def test_warm_jsonl_keeps_id_and_metadata_and_reports_bad_lines(tmp_path: Path) -> None:
    import json

    from tiercache import TierCache, load_config

    cfg = write_config(tmp_path)
    cat = tmp_path / "docs.jsonl"
    cat.write_text(
        "\n".join(
            json.dumps(o)
            for o in [
                {"id": "d1", "text": "first doc", "metadata": {"lang": "en"}},
                {"id": 2, "text": "second doc"},
                {"text": "third doc"},
            ]
        )
        + "\n"
    )
    r = CliRunner().invoke(main, ["warm", str(cat), "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    with TierCache(load_config(cfg)) as cache:
        e1, e2, e3 = cache.mget(["first doc", "second doc", "third doc"])
        assert e1 is not None and e1.metadata == {"lang": "en", "id": "d1"}
        assert e2 is not None and e2.metadata == {"id": 2}
        assert e3 is not None and e3.metadata is None
        assert cache.drop_ids([2]) == 1 and cache.drop_ids(["2"]) == 0
        assert not cache.exists("second doc")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"id": 1}\n')
    r = CliRunner().invoke(main, ["warm", str(bad), "-c", str(cfg)])
    assert r.exit_code == 2 and "bad.jsonl:2" in r.output


def test_inspect_verifies_every_record(tmp_path: Path) -> None:
    import json

    from tiercache import TierCache, load_config

    cfg = write_config(tmp_path)
    with TierCache(load_config(cfg), clock=lambda: 1_000_000.0) as cache:
        cache.embed_many([f"plain {i}" for i in range(40)])
        cache.set("with meta", np.ones(8, np.float32), metadata={"a": 1})
        cache.set("expired long ago", np.ones(8, np.float32), ttl=60)
        warm = cache._warm
        assert warm is not None
        raw = cache._keys.digest("plain 7")
        rec = bytearray(warm.get_many([raw])[0] or b"")
        rec[30] ^= 0x04
        warm.put_many([(raw, bytes(rec))])
    r = CliRunner().invoke(main, ["inspect", "-c", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["entries"] == 42 and info["corrupt"] == 1
    assert info["records"] == {"float32 dim 8": 41}
    assert info["with_metadata_or_text"] == 1 and info["expired"] == 1
    assert info["expires_first"] == info["expires_last"] == 1_000_060.0
    r = CliRunner().invoke(main, ["inspect", "-c", str(cfg)])
    assert r.exit_code == 0 and "corrupt      1" in r.output and "float32 dim 8" in r.output
    empty = tmp_path / "none.yaml"
    empty.write_text(yaml.safe_dump({"warm": {"path": str(tmp_path / "nothing")}}))
    r = CliRunner().invoke(main, ["inspect", "-c", str(empty)])
    assert r.exit_code == 2 and "no warm store" in r.output


def test_compact_to_a_directory_and_in_place(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    from tiercache import TierCache, load_config

    cfg = write_config(tmp_path)
    texts = [f"doc {i} " + "x" * 300 for i in range(3000)]
    with TierCache(load_config(cfg)) as cache:
        cache.mset(
            [(t, np.full(8, i + 1, np.float32), {"pad": "y" * 500}) for i, t in enumerate(texts)]
        )
        cache.mdrop(texts[::2])
        kept = {t: cache.get(t) for t in texts[1::2]}
    out = tmp_path / "copy"
    r = CliRunner().invoke(main, ["compact", "-c", str(cfg), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "data.mdb").stat().st_size < (tmp_path / "w" / "data.mdb").stat().st_size
    # a process serving from the store blocks an in-place swap
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        from tiercache import TierCache, load_config
        with TierCache(load_config({str(cfg)!r})) as c:
            c.exists("doc 1")
            print("ready", flush=True)
            sys.stdin.readline()
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        r = CliRunner().invoke(main, ["compact", "-c", str(cfg), "--replace"])
        assert r.exit_code == 2 and f"processes [{child.pid}]" in r.output
    finally:
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(30)
    before = (tmp_path / "w" / "data.mdb").stat().st_size
    r = CliRunner().invoke(main, ["compact", "-c", str(cfg), "--replace"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "w" / "data.mdb").stat().st_size < before
    assert not list(tmp_path.glob("w.old-*")) and not list(tmp_path.glob("w.compact-*"))
    with TierCache(load_config(cfg)) as cache:
        assert cache.stats()["tiers"]["warm"]["entries"] == 1500
        for t, e in kept.items():
            got = cache.get(t)
            assert got is not None and e is not None
            assert np.array_equal(got.vector, e.vector) and got.metadata == e.metadata
    r = CliRunner().invoke(main, ["compact", "-c", str(cfg)])
    assert r.exit_code == 2 and "exactly one" in r.output


def test_migrate_reembeds_stored_texts_into_a_new_key_space(tmp_path: Path) -> None:
    import dataclasses

    from tiercache import TierCache, load_config

    old_data = {
        "encoder": {"kind": "hash", "dim": 8},
        "warm": {"path": str(tmp_path / "w"), "store_text": True},
    }
    old_path = tmp_path / "old.yaml"
    old_path.write_text(yaml.safe_dump(old_data))
    new_path = tmp_path / "new.yaml"  # another role (a fingerprint field), own namespace
    new_path.write_text(
        yaml.safe_dump(
            {
                "encoder": {"kind": "hash", "dim": 8, "role": "query"},
                "warm": {"path": str(tmp_path / "w"), "namespace": "v2"},
            }
        )
    )
    texts = [f"stored text {i}" for i in range(70)]
    with TierCache(load_config(old_path)) as old:
        old.mset([(t, np.full(8, i + 1, np.float32), {"i": i}) for i, t in enumerate(texts)])
        plain = dataclasses.replace(
            old.config, warm=dataclasses.replace(old.config.warm, store_text=False)
        )
    with TierCache(plain) as old:  # a record without its text cannot be migrated
        old.set("no text kept", np.ones(8, np.float32))
    r = CliRunner().invoke(
        main, ["migrate", "-c", str(old_path), "--to", str(new_path), "--batch", "16"]
    )
    assert r.exit_code == 0, r.output
    assert "71 records" in r.output and "70 texts encoded" in r.output
    assert "1 without a stored text" in r.output
    with TierCache(load_config(new_path)) as new:
        entries = new.mget(texts)
        assert all(e is not None for e in entries)
        assert [e.metadata for e in entries if e] == [{"i": i} for i in range(70)]
        first = entries[5]
        assert first is not None and not np.array_equal(first.vector, np.full(8, 6, np.float32))
    with TierCache(load_config(old_path)) as old:  # the old entries are untouched
        e = old.get(texts[5])
        assert e is not None and np.array_equal(e.vector, np.full(8, 6, np.float32))
    r = CliRunner().invoke(main, ["migrate", "-c", str(old_path), "--to", str(new_path)])
    assert r.exit_code == 0 and "0 texts encoded" in r.output and "70 already there" in r.output
    # the hash encoder has no versions: --to-version changes no fingerprint field
    r = CliRunner().invoke(main, ["migrate", "-c", str(old_path), "--to-version", "2"])
    assert r.exit_code == 2 and "nothing would change" in r.output
    r = CliRunner().invoke(main, ["migrate", "-c", str(old_path)])
    assert r.exit_code == 2 and "exactly one" in r.output
