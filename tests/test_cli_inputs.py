"""The command line with the inputs a new user gives it (issue #19, CLI items): ``--json``
output that parses, files that are not UTF-8, Ctrl-C, ``--ttl`` durations, ``sim``
parameters, ``migrate --to-version`` in the same store, the model loader's bars."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from tiercache import TierCache, load_config
from tiercache.cli import main

REPO = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, **warm: Any) -> Path:
    cfg = {
        "encoder": {"kind": "hash", "dim": 8},
        "warm": {"path": str(tmp_path / "w"), "durability": "fast", **warm},
        "hot": {"max_bytes": "16KiB"},
    }
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def run(*args: str, input: bytes | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input)


# -- 6. --json: stdout holds the JSON alone -----------------------------------------------


def test_json_output_is_json_alone_and_notes_go_to_stderr(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    inp = tmp_path / "q.txt"
    inp.write_text("a\nb\na\n")
    out = tmp_path / "o.npy"
    r = run("embed", "-c", str(cfg), "-i", str(inp), "-o", str(out), "--passes", "2", "--json")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)
    assert stats["tiers"]["warm"]["entries"] == 2
    assert "pass 1: 3 texts" in r.stderr and "pass 2: 3 texts" in r.stderr
    assert f"wrote (3, 8) float32 to {out}" in r.stderr
    # without --json, the pass lines are the report: stdout
    r = run("embed", "-c", str(cfg), "-i", str(inp))
    assert r.exit_code == 0 and "pass 1: 3 texts" in r.stdout and not r.stderr
    for args in (
        ["stats", "-c", str(cfg), "--json"],
        ["inspect", "-c", str(cfg), "--json"],
        ["sim", "--synthetic", "zipf:keys=50,requests=500", "--policy", "lru", "--json"],
        ["sim", "--synthetic", "zipf:keys=50,requests=500", "--policy", "lru", "--warm", "10"]
        + ["--json", "--out", str(tmp_path / "rep")],
    ):
        r = run(*args)
        assert r.exit_code == 0, (args, r.output)
        json.loads(r.stdout)  # nothing else on stdout


# -- 7. input files that are not UTF-8 ----------------------------------------------------

BAD = b"good one\ncaf\xe9 latin\nthird\n"  # line 2 is Latin-1; its 0xe9 is byte 12


def test_warm_names_file_line_and_byte_offset_of_undecodable_input(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(BAD)
    r = run("warm", str(bad), "-c", str(cfg))
    assert r.exit_code == 2, r.output
    assert f"error: {bad}:2: byte offset 12: not valid utf-8" in r.stderr
    assert "--encoding" in r.stderr and "--errors skip" in r.stderr
    assert "Traceback" not in r.output and "UnicodeDecodeError" not in r.output
    with TierCache(load_config(cfg)) as cache:  # found before anything was written
        assert not any(cache.mexists(["good one", "third"]))

    r = run("warm", str(bad), "-c", str(cfg), "--errors", "skip")
    assert r.exit_code == 0, r.output
    assert "2 lines in" in r.stdout and "2 encoded" in r.stdout
    assert "1 line not valid utf-8, skipped (first: line 2)" in r.stderr
    r = run("warm", str(bad), "-c", str(cfg), "--errors", "replace")
    assert r.exit_code == 0 and "1 encoded" in r.stdout and "U+FFFD" in r.stderr
    r = run("warm", str(bad), "-c", str(cfg), "--encoding", "latin-1")
    assert r.exit_code == 0 and "1 encoded" in r.stdout and not r.stderr
    with TierCache(load_config(cfg)) as cache:
        assert all(cache.mexists(["good one", "caf\ufffd latin", "café latin", "third"]))

    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    r = run("warm", str(jsonl), "-c", str(cfg))
    assert r.exit_code == 2 and f"{jsonl}:2: byte offset 25: not valid utf-8" in r.stderr
    r = run("warm", str(bad), "-c", str(cfg), "--encoding", "klingon")
    assert r.exit_code == 2 and "unknown encoding 'klingon'" in r.output


def test_embed_decodes_files_and_stdin_with_encoding_and_errors(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(BAD)
    out = tmp_path / "o.npy"
    r = run("embed", "-c", str(cfg), "-i", str(bad))
    assert r.exit_code == 2 and f"{bad}:2: byte offset 12" in r.stderr, r.output
    r = run("embed", "-c", str(cfg), "-i", "-", input=BAD)
    assert r.exit_code == 2 and "<stdin>:2: byte offset 12" in r.stderr, r.output
    r = run("embed", "-c", str(cfg), "-i", "-", "-o", str(out), "--errors", "skip", input=BAD)
    assert r.exit_code == 0 and np.load(out).shape == (2, 8), r.output
    r = run("embed", "-c", str(cfg), "-i", str(bad), "-o", str(out), "--encoding", "cp1252")
    assert r.exit_code == 0 and np.load(out).shape == (3, 8), r.output
    with TierCache(load_config(cfg)) as cache:
        assert np.array_equal(np.load(out)[1], cache.embed("café latin"))

    # UTF-16: a newline byte can be half of another character; read whole, same messages
    u16 = tmp_path / "u16.txt"
    u16.write_bytes("ab\n".encode("utf-16-le") + b"\x00\xd8" + "x\nlast\n".encode("utf-16-le"))
    r = run("embed", "-c", str(cfg), "-i", str(u16), "--encoding", "utf-16-le")
    assert r.exit_code == 2 and f"{u16}:2: byte offset 6: not valid utf-16-le" in r.stderr
    r = run(
        "embed", "-c", str(cfg), "-i", str(u16), "-o", str(out), "--encoding", "utf-16-le",
        "--errors", "skip",
    )  # fmt: skip
    assert r.exit_code == 0 and np.load(out).shape == (2, 8), r.output
    (tmp_path / "bom.txt").write_text("héllo\nwörld\n", encoding="utf-16")
    r = run("embed", "-c", str(cfg), "-i", str(tmp_path / "bom.txt"), "-o", str(out))
    assert r.exit_code == 2 and "byte offset 0" in r.stderr  # the BOM is not UTF-8
    r = run(
        "embed", "-c", str(cfg), "-i", str(tmp_path / "bom.txt"), "-o", str(out),
        "--encoding", "utf-16",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    with TierCache(load_config(cfg)) as cache:
        assert np.array_equal(np.load(out), cache.embed_many(["héllo", "wörld"]))


# -- 8. Ctrl-C ----------------------------------------------------------------------------


def test_sigint_during_warm_says_what_was_committed_and_exits_130(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    catalog = tmp_path / "big.txt"
    catalog.write_text("".join(f"catalog line {i}\n" for i in range(100_000)))
    child = subprocess.Popen(
        [sys.executable, "-m", "tiercache.cli", "warm", str(catalog), "-c", str(cfg)]
        + ["--batch", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    # the interrupt comes from a watcher process of its own, as soon as a batch is
    # committed: this process's GIL may be held by threads other tests left, and a child
    # that finished all 100,000 lines before the signal came (the full suite on a loaded
    # machine, once) would test nothing
    watcher = subprocess.Popen(
        [
            "sh",
            "-c",
            'for i in $(seq 6000); do ls "$1"/*.json >/dev/null 2>&1 && exec kill -INT "$2"; '
            "sleep 0.01; done; exit 1",
            "watch",
            str(tmp_path / "w" / "precompute"),
            str(child.pid),
        ]
    )
    try:
        out, err = child.communicate(timeout=120)
        assert watcher.wait(timeout=10) == 0, "no batch committed in 60 s"
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    m = re.search(r"interrupted \(Ctrl-C\): \S*big.txt committed through line (\d+) \((\d+)", err)
    assert m, err
    line = int(m.group(1))
    assert 0 < line < 100_000 and line % 1000 == 0 and int(m.group(2)) == line
    assert "Run the same command again to resume" in err and "--restart" in err
    r = run("warm", str(catalog), "-c", str(cfg), "--batch", "1000")
    assert r.exit_code == 0, r.output
    assert f"{100_000 - line} encoded" in r.stdout and f"{line} skipped" in r.stdout


def test_ctrl_c_in_embed_and_inside_the_encoder_exits_130(tmp_path: Path, monkeypatch: Any) -> None:
    from tiercache.encoders import HashEncoder

    cfg = write_config(tmp_path, store_text=True)
    inp = tmp_path / "q.txt"
    inp.write_text("".join(f"text {i}\n" for i in range(10)))
    real = TierCache.embed_many
    calls = {"n": 0}

    def interrupted(self: TierCache, *a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(TierCache, "embed_many", interrupted)
    out = tmp_path / "o.npy"
    r = run("embed", "-c", str(cfg), "-i", str(inp), "-o", str(out), "--batch", "4")
    assert r.exit_code == 130, r.output
    assert "interrupted (Ctrl-C): in pass 1/1, 8 of 10 texts embedded" in r.stderr
    assert f"{out} was not written" in r.stderr and "tiercache warm" in r.stderr
    assert not out.exists()
    monkeypatch.setattr(TierCache, "embed_many", real)
    r = run("embed", "-c", str(cfg), "-i", str(inp))
    assert r.exit_code == 0 and "10 texts" in r.stdout, r.output

    # Ctrl-C inside the encoder: the library reports it as an EncoderError it caused
    real_vectors = HashEncoder._vectors
    seen = {"n": 0}

    def vectors(self: HashEncoder, contents: Any) -> Any:
        seen["n"] += 1
        if seen["n"] == 2:
            raise KeyboardInterrupt
        return real_vectors(self, contents)

    monkeypatch.setattr(HashEncoder, "_vectors", vectors)
    new = tmp_path / "new.yaml"
    new.write_text(
        yaml.safe_dump(
            {
                "encoder": {"kind": "hash", "dim": 8, "role": "query"},
                "warm": {"path": str(tmp_path / "w2")},
            }
        )
    )
    r = run("migrate", "-c", str(cfg), "--to", str(new), "--batch", "4")
    assert r.exit_code == 130, r.output
    assert "interrupted (Ctrl-C): 4 records committed in this run" in r.stderr, r.output
    assert "Run the same command again to resume" in r.stderr
    assert "EncoderError" not in r.output and "error:" not in r.output
    monkeypatch.setattr(HashEncoder, "_vectors", real_vectors)
    r = run("migrate", "-c", str(cfg), "--to", str(new), "--batch", "4")
    assert r.exit_code == 0 and "6 records" in r.stdout and "6 texts encoded" in r.stdout


# -- 9. --ttl takes the config's durations, checked before anything loads -----------------


def test_warm_ttl_takes_durations_and_refuses_bad_ones_before_loading(
    tmp_path: Path, monkeypatch: Any
) -> None:
    cfg = write_config(tmp_path)
    cat = tmp_path / "cat.txt"
    cat.write_text("one\ntwo\n")
    before = time.time()
    r = run("warm", str(cat), "-c", str(cfg), "--ttl", "1h30m")
    assert r.exit_code == 0, r.output
    info = json.loads(run("inspect", "-c", str(cfg), "--json").stdout)
    assert before + 5400 <= info["expires_first"] <= info["expires_last"] <= time.time() + 5400

    def no_cache(*a: Any, **kw: Any) -> None:
        raise AssertionError("the cache (and its model) must not be built")

    monkeypatch.setattr(TierCache, "__init__", no_cache)
    for bad, why in (
        ("-5", "durations must be > 0"),
        ("0", "durations must be > 0"),
        ("abc", "not a duration"),
        ("1x", "not a duration"),
        ("never", "leave --ttl out"),
    ):
        r = run("warm", str(cat), "--ttl", bad)  # the default config: the real model
        assert r.exit_code == 2, (bad, r.output)
        assert "Invalid value for '--ttl'" in r.output and why in r.output, r.output


# -- 10. sim parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--synthetic", "zipf:keyz=1000"], "unknown parameter 'keyz' for zipf (valid: alpha, "),
        (["--synthetic", "zipf:alpha=abc"], "alpha: not a number (got 'abc')"),
        (["--synthetic", "zipf:keys=1.5"], "keys: not an integer (got '1.5')"),
        (["--synthetic", "zipf:keys=0"], "keys: must be >= 1"),
        (["--synthetic", "zipf:alpha=-1"], "alpha: must be >= 0"),
        (["--synthetic", "zipf:keys"], "keys: no value"),
        (["--synthetic", "zipf:keys=5,keys=6"], "keys given twice"),
        (["--synthetic", "loop:keys=50,alpha=1"], "unknown parameter 'alpha' for loop"),
        (["--synthetic", "nope:keys=3"], "unknown synthetic trace 'nope'"),
        (["--hot-entries", "0"], "'0': a hot tier holds at least 1 entry"),
        (["--hot-entries", "-5"], "'-5': a hot tier holds at least 1 entry"),
        (["--hot-entries", "10,0%"], "'0%': a percentage must be > 0"),
        (["--hot-entries", "ten"], "'ten': not an entry count or a percentage"),
        (["--hot", "0B"], "--hot: a byte budget must be >= 1 byte"),
    ],
)
def test_sim_refuses_unknown_and_bad_parameters(args: list[str], message: str) -> None:
    if "--synthetic" not in args:
        args = ["--synthetic", "zipf:keys=50,requests=100", *args]
    r = run("sim", *args, "--policy", "lru")
    assert r.exit_code == 2, r.output
    assert message in r.output, r.output


def test_sim_progress_bar_counts_requests() -> None:
    from tiercache import sim as simlib
    from tiercache.cli import _sim_hot

    class Bar:
        made: list[Bar] = []

        def __init__(self, **kw: Any) -> None:
            self.kw, self.n = kw, 0
            Bar.made.append(self)

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *a: Any) -> None:
            pass

        def update(self, n: int) -> None:
            self.n += n

        def set_description(self, _: str) -> None:
            pass

    trace = simlib.zipf_trace(0.9, 200, 3000, seed=1)
    names, sizes = ["lru", "wtinylfu", "belady"], [5, 50]
    got = _sim_hot(simlib, trace, names, sizes, 3, Bar)
    (bar,) = Bar.made
    assert bar.kw["unit"] == "req" and bar.kw["total"] == bar.n == 6 * 3000
    want = simlib.simulate_grid(trace, capacities=sizes, policies=names, seed=3)
    assert [r.to_dict() for r in got] == [r.to_dict() for r in want]


# -- 11. migrate --to-version in the config's own store ------------------------------------


def test_migrate_to_version_registers_both_fingerprints_in_the_namespace(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import dataclasses

    import tiercache.cache
    import tiercache.encoders
    from tiercache.encoders import HashEncoder
    from tiercache.keys import Fingerprint
    from tiercache.tiers.lmdb import LmdbTier

    def versioned(c: Any) -> HashEncoder:  # a hash encoder whose revision is the config's
        return HashEncoder(c.dim, revision=c.revision, role=c.role)

    monkeypatch.setattr(tiercache.encoders, "encoder_from_config", versioned)
    monkeypatch.setattr(tiercache.cache, "encoder_from_config", versioned)
    cfg = write_config(tmp_path, store_text=True)
    texts = [f"stored text {i}" for i in range(30)]
    with TierCache(load_config(cfg)) as old:
        old_rev = old.config.encoder.revision
        old.mset([(t, np.full(8, i + 1, np.float32), {"i": i}) for i, t in enumerate(texts)])

    r = run("migrate", "-c", str(cfg), "--to-version", "v2", "--batch", "8")
    assert r.exit_code == 0, r.output
    assert "30 records" in r.stdout and "30 texts encoded" in r.stdout
    assert f"namespace 'default' of {load_config(cfg).warm.path} now holds rev " in r.stdout
    assert f"rev {old_rev!r} and rev 'v2' of " in r.stdout and "side by side" in r.stdout
    assert "set encoder.revision: v2 in its config" in r.stdout
    t = LmdbTier(
        tmp_path / "w", fingerprint=Fingerprint(model="", dim=0), on_fingerprint_mismatch="inspect"
    )
    revs = [fp["revision"] for fp in t.manifest()["namespaces"]["default"]]
    t.close()
    assert revs == [old_rev, "v2"]
    # the service switches by its revision alone, with on_fingerprint_mismatch: error
    v1 = load_config(cfg)
    assert v1.warm.on_fingerprint_mismatch == "error"
    v2 = dataclasses.replace(v1, encoder=dataclasses.replace(v1.encoder, revision="v2"))
    with TierCache(v2) as new:
        got = new.mget(texts)
        assert all(e is not None and e.tier == "warm" for e in got)
        assert [e.metadata for e in got if e] == [{"i": i} for i in range(30)]
        e3 = got[3]
        assert e3 is not None and not np.array_equal(e3.vector, np.full(8, 4, np.float32))
    with TierCache(v1) as old:  # the old vectors still serve the old revision
        e = old.get(texts[3])
        assert e is not None and np.array_equal(e.vector, np.full(8, 4, np.float32))
    r = run("migrate", "-c", str(cfg), "--to-version", "v2")
    assert r.exit_code == 0 and "0 texts encoded" in r.stdout, r.output
    r = run("migrate", "-c", str(cfg), "--to-version", old_rev)
    assert r.exit_code == 2 and "nothing would change" in r.output


# -- 13. the model loader's bars (the real model) -----------------------------------------


def test_model_bars_switched_off_and_restored_in_process(monkeypatch: Any) -> None:
    pytest.importorskip("transformers")
    import huggingface_hub.utils as hub
    import transformers.utils.logging as tf

    from tiercache.cli import _model_bars

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    was = tf.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    tf.enable_progress_bar()
    hub.enable_progress_bars()
    if hub.are_progress_bars_disabled():
        pytest.skip("HF_HUB_DISABLE_PROGRESS_BARS was set when huggingface_hub was imported")
    monkeypatch.setattr(tf, "_tqdm_active", was[0])  # restored after the test
    with _model_bars(False):
        assert not tf.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert tf.is_progress_bar_enabled() and not hub.are_progress_bars_disabled()
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    with _model_bars(True):
        assert tf.is_progress_bar_enabled()
    if was[1]:
        hub.disable_progress_bars()


def _model_config(tmp_path: Path) -> Path:
    p = tmp_path / "model.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "encoder": {"threads": 1},
                "warm": {"path": str(tmp_path / "w"), "store_text": True},
            }
        )
    )
    return p


@pytest.mark.model
def test_no_loading_weights_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    """Also: ``migrate --to-version`` with the packaged config's model in its own store."""
    pytest.importorskip("sentence_transformers")
    cfg = _model_config(tmp_path)
    texts = ["What is machine learning?", "How do vector databases work?"]
    with TierCache(load_config(cfg)) as cache:  # explicit vectors: no model load
        cache.mset([(t, np.eye(cache.dim, dtype=np.float32)[i]) for i, t in enumerate(texts)])
    p = subprocess.run(
        [sys.executable, "-m", "tiercache.cli", "migrate", "-c", str(cfg), "--to-version", "v2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "2 texts encoded" in p.stdout and "now holds rev" in p.stdout
    assert "Loading weights" not in p.stderr and "%|" not in p.stderr, p.stderr


@pytest.mark.model
def test_no_loading_weights_bar_with_no_progress_on_a_terminal(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    cfg = _model_config(tmp_path)
    inp = tmp_path / "q.txt"
    inp.write_text("hello\nworld\n")

    def stderr_on_a_tty(*extra: str) -> bytes:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        child = subprocess.Popen(
            [sys.executable, "-m", "tiercache.cli", "embed", "-c", str(cfg), "-i", str(inp)]
            + list(extra),
            stdout=subprocess.DEVNULL,
            stderr=slave,
            cwd=tmp_path,
        )
        os.close(slave)
        err = b""
        try:
            while chunk := os.read(master, 4096):
                err += chunk
        except OSError:  # EIO: the child closed the terminal
            pass
        finally:
            os.close(master)
        assert child.wait(300) == 0, err
        return err

    err = stderr_on_a_tty("--no-progress")
    assert b"model loaded in" in err and b"Loading weights" not in err, err
    assert b"%|" not in err, err


def test_embed_never_loads_the_model_when_every_text_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #19 item 12: with the default (torch) encoder, a run whose texts are all
    stored does not load the model (it loads on the first miss, timed apart)."""
    from tiercache.encoders import SentenceTransformerEncoder

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"warm: {{path: {tmp_path / 'warm'}}}\n")
    texts = [f"stored {i}" for i in range(20)]
    rng = np.random.default_rng(0)
    with TierCache(load_config(cfg_path)) as c:  # building the cache loads nothing
        assert c.encoder._model is None  # type: ignore[attr-defined]
        c.mset([(t, rng.standard_normal(c.dim).astype(np.float32)) for t in texts])
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")

    def refuse(self: Any) -> Any:
        raise AssertionError("the model was loaded although every text is stored")

    monkeypatch.setattr(SentenceTransformerEncoder, "_load", refuse)
    r = CliRunner().invoke(
        main, ["embed", "-c", str(cfg_path), "--input", str(tmp_path / "in.txt"), "--json"]
    )
    assert r.exit_code == 0, r.output + (r.stderr or "")
    assert json.loads(r.stdout)["encoder"]["texts"] == 0
    assert "model loaded" not in r.stderr
