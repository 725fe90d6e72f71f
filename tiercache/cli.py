"""The ``tiercache`` command line: thin wrappers that parse, call the library, print."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .config import TierCacheConfig, config_to_dict, default_config, load_config  # noqa: E402
from .errors import TierCacheError  # noqa: E402


def _config(path: str | None) -> TierCacheConfig:
    return load_config(path) if path else default_config()


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _read_lines(path: str) -> list[str]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    with stream:
        return [line.rstrip("\n") for line in stream if line.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tiercache")
def main() -> None:
    """tiercache: tiered embedding cache (hot RAM, warm LMDB, cold encoder).

    Every command takes --config FILE (YAML, see docs/configuration.md); without it the
    packaged default config is used (warm store under ./.tiercache/warm).
    """


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (default: the packaged default config).",
)
@click.option(
    "--input",
    "-i",
    "input_path",
    required=True,
    help="Text file, one query per line ('-' for stdin).",
)
@click.option(
    "--output",
    "-o",
    "output_path",
    type=click.Path(dir_okay=False),
    help="Write the (n, dim) float32 matrix here as .npy.",
)
@click.option(
    "--batch",
    "-b",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Texts handed to the cache per embed_many call.",
)
@click.option(
    "--passes",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Embed the whole file this many times (pass 2+ shows the tiers at work).",
)
@click.option("--json", "as_json", is_flag=True, help="Print stats as JSON instead of a table.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def embed(
    config_path: str | None,
    input_path: str,
    output_path: str | None,
    batch: int,
    passes: int,
    as_json: bool,
    no_progress: bool,
) -> None:
    """Embed every line of a text file through the cache; print a per-tier table."""
    import numpy as np
    from tqdm import tqdm

    from .cache import TierCache

    try:
        cfg = _config(config_path)
        texts = _read_lines(input_path)
        with TierCache(cfg) as cache:
            load = getattr(cache.encoder, "load", None)
            if callable(load):  # the model's import and load are not encoding time
                t0 = time.perf_counter()
                load()
                click.echo(f"model loaded in {time.perf_counter() - t0:.2f} s", err=True)
            result = np.empty((len(texts), cache.dim), dtype=np.float32)
            for p in range(1, passes + 1):
                before = cache.stats()
                t0 = time.perf_counter()
                with tqdm(
                    total=len(texts),
                    unit="text",
                    desc=f"pass {p}/{passes}",
                    disable=no_progress or not sys.stderr.isatty(),
                    file=sys.stderr,
                ) as bar:
                    for start in range(0, len(texts), batch):
                        chunk = texts[start : start + batch]
                        result[start : start + len(chunk)] = cache.embed_many(chunk)
                        bar.update(len(chunk))
                dt = time.perf_counter() - t0
                after = cache.stats()
                enc = after["encoder"]["texts"] - before["encoder"]["texts"]
                click.echo(
                    f"\npass {p}: {len(texts)} texts in {dt:.2f} s "
                    f"({len(texts) / dt if dt else 0:.0f} texts/s), "
                    f"{enc} encoded"
                )
            stats = cache.stats()
            if output_path:
                np.save(output_path, result)
                click.echo(f"wrote {result.shape} float32 to {output_path}")
            click.echo(
                json.dumps(stats, indent=2, default=str) if as_json else cache.format_stats()
            )
    except (TierCacheError, OSError) as exc:
        _fail(exc)


def _catalog_items(path: Path, fmt: str) -> Any:
    """Yield ``(line_number, text, metadata)`` for every non-empty line of a catalog.

    ``text``: one text per line. ``jsonl``: objects with ``text`` (required), and optional
    ``id`` and ``metadata`` (the id is stored in the metadata as ``"id"``). ``auto``: jsonl
    for ``.jsonl``/``.ndjson`` files, text otherwise."""
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "text"
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if fmt == "text":
                yield n, line, None
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TierCacheError(f"{path}:{n}: not JSON: {exc.msg}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise TierCacheError(f"{path}:{n}: expected an object with a string 'text'")
            meta = obj.get("metadata")
            if meta is not None and not isinstance(meta, dict):
                raise TierCacheError(f"{path}:{n}: 'metadata' must be an object")
            if "id" in obj:
                if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)):
                    raise TierCacheError(f"{path}:{n}: 'id' must be a string or an integer")
                meta = {**(meta or {}), "id": obj["id"]}
            yield n, obj["text"], meta


class _Journal:
    """Resume state of ``tiercache warm``: the last line committed per input file, kept in
    ``<warm.path>/precompute/`` (one small JSON per input, replaced atomically). It is
    valid while the file's size and mtime are unchanged."""

    def __init__(self, store: Path, source: Path) -> None:
        import hashlib

        st = source.stat()
        resolved = str(source.resolve())
        self.ident: dict[str, Any] = {
            "path": resolved,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
        name = hashlib.blake2b(resolved.encode(), digest_size=8).hexdigest()
        self.dir = store / "precompute"
        self.path = self.dir / f"{name}.json"

    def load(self) -> int:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0
        if {k: data.get(k) for k in self.ident} != self.ident:
            return 0  # another file, or the file changed: start over
        return int(data.get("line", 0))

    def save(self, line: int) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.ident, "line": line}), encoding="utf-8")
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _warm_batch(
    cache: Any,
    pending: list[tuple[int, str, Any]],
    journal: _Journal,
    totals: dict[str, int],
    ttl: float | None,
    bar: Any,
) -> None:
    """Store one batch (one committed write), then record its last line as done."""
    counts = cache.precompute(
        [t for _, t, _ in pending],
        [m for _, _, m in pending],
        ttl=ttl,
        doc_ids=[m.get("id") if m else None for _, _, m in pending],
    )
    for k, v in counts.items():
        totals[k] += v
    journal.save(pending[-1][0])
    bar.update(len(pending))
    bar.set_postfix(encoded=totals["encoded"])
    pending.clear()


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (default: the packaged default config).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "text", "jsonl"]),
    default="auto",
    show_default=True,
    help="text: one text per line; jsonl: {id, text, metadata}.",
)
@click.option(
    "--batch",
    "-b",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Lines per batch; each batch is one committed write.",
)
@click.option("--ttl", type=float, default=None, help="TTL in seconds of the entries written.")
@click.option("--restart", is_flag=True, help="Ignore saved progress; start each file over.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def warm(
    files: tuple[Path, ...],
    config_path: str | None,
    fmt: str,
    batch: int,
    ttl: float | None,
    restart: bool,
    no_progress: bool,
) -> None:
    """Precompute a catalog into the warm tier (and the shared tier, when configured).

    Reads FILES (one text per line, or JSONL with id/text/metadata), encodes what no tier
    holds, and commits each batch. Interrupted runs resume after the last committed batch
    (progress is kept under the warm directory); texts already stored are never encoded
    again. Prints a throughput summary.
    """
    from tqdm import tqdm

    from .cache import TierCache

    try:
        cfg = _config(config_path)
        if not cfg.warm.enabled and not cfg.shared.active:
            _fail(TierCacheError("warm tier is disabled in this config: nowhere to store"))
        totals = {"lines": 0, "skipped": 0, "present": 0, "shared": 0, "encoded": 0}
        t0 = time.perf_counter()
        with TierCache(cfg) as cache:
            for path in files:
                journal = _Journal(Path(cfg.warm.path), path)
                done = 0 if restart else journal.load()
                with open(path, encoding="utf-8") as fh:
                    total = sum(1 for line in fh if line.strip())
                pending: list[tuple[int, str, Any]] = []
                with tqdm(
                    total=total,
                    unit="line",
                    desc=path.name,
                    file=sys.stderr,
                    disable=no_progress or not sys.stderr.isatty(),
                ) as bar:
                    for n, text, meta in _catalog_items(path, fmt):
                        totals["lines"] += 1
                        if n <= done:
                            totals["skipped"] += 1
                            bar.update(1)
                            continue
                        pending.append((n, text, meta))
                        if len(pending) >= batch:
                            _warm_batch(cache, pending, journal, totals, ttl, bar)
                    if pending:
                        _warm_batch(cache, pending, journal, totals, ttl, bar)
                journal.clear()  # the whole file is stored
        dt = time.perf_counter() - t0
        click.echo(
            f"{totals['lines']} lines in {dt:.2f} s: {totals['encoded']} encoded "
            f"({totals['encoded'] / dt if dt else 0:.0f} texts/s), {totals['present']} already "
            f"stored, {totals['shared']} copied from the shared tier, {totals['skipped']} "
            f"skipped (committed by an earlier run)"
        )
    except (TierCacheError, OSError) as exc:
        _fail(exc)


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (default: the packaged default config).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(config_path: str | None, as_json: bool) -> None:
    """Show the warm store (entries, bytes on disk, capacity, fingerprint manifest) and,
    when configured, the shared Redis tier (reachable?, keys under the prefix)."""

    try:
        cfg = _config(config_path)
        if not cfg.warm.enabled and not cfg.shared.active:
            _fail(TierCacheError("warm tier is disabled in this config: nothing is stored"))
        info: dict[str, Any] = {}
        path = Path(cfg.warm.path)
        if cfg.warm.enabled:
            if not (path / "data.mdb").exists() and not cfg.shared.active:
                _fail(TierCacheError(f"no warm store at {path}"))
            if (path / "data.mdb").exists():
                tier = _open_store(path, cfg)
                try:
                    info = {"path": str(path), **tier.stat(), "manifest": tier.manifest()}
                finally:
                    tier.close()
        if cfg.shared.active:
            info["shared"] = _shared_info(cfg)
        if as_json:
            click.echo(json.dumps(info, indent=2, default=str))
            return
        if "path" in info:
            click.echo(f"warm store   {info['path']}")
            click.echo(f"entries      {info['entries']}")
            click.echo(f"bytes used   {info['bytes_used']} (B-tree pages)")
            click.echo(f"file bytes   {info['file_bytes']} (allocated on disk)")
            if info["entries"]:
                click.echo(f"bytes/entry  {info['bytes_used'] / info['entries']:.0f}")
            click.echo(f"map size     {info['map_size']}")
            _echo_manifest(info["manifest"])
        sh = info.get("shared")
        if sh is not None:
            click.echo(f"shared       {sh['target']} prefix {sh['key_prefix']!r}")
            if sh["reachable"]:
                click.echo(
                    f"             {sh['keys']} keys under the prefix"
                    f"{' (cluster)' if sh['cluster'] else ''}"
                )
            else:
                click.echo(f"             unreachable: {sh['error']}")
    except (TierCacheError, OSError) as exc:
        _fail(exc)


def _parse_synthetic(spec: str) -> tuple[str, dict[str, float]]:
    kind, _, rest = spec.partition(":")
    params: dict[str, float] = {}
    for part in filter(None, rest.split(",")):
        name, _, value = part.partition("=")
        params[name.strip()] = float(value)
    return kind.strip(), params


def _parse_sizes(spec: str, distinct: int) -> list[int]:
    out = []
    for part in filter(None, spec.split(",")):
        part = part.strip()
        n = round(distinct * float(part[:-1]) / 100) if part.endswith("%") else int(part)
        out.append(max(1, n))
    return out


def _parse_warm(
    spec: str, distinct: int, dim: Callable[[], int], codec_name: str
) -> tuple[list[int], dict[int, int]]:
    """``--warm`` sizes as warm entry capacities (sorted, distinct) and, for those given
    as byte budgets, ``{entries: bytes}``.

    Each comma-separated part is a byte budget (a size with a unit: ``8GiB``, ``500MB``,
    ``1024B``; turned into entries as the live cache does, :func:`sim.warm_entries`),
    an entry count (a bare integer; ``0`` = no warm tier) or a percentage of the trace's
    distinct keys (``5%``, at least one entry when above 0). Raises ConfigError("--warm").
    """
    from .config import parse_size
    from .errors import ConfigError
    from .sim import warm_entries

    entries: set[int] = set()
    budgets: dict[int, int] = {}
    for part in (x.strip() for x in spec.split(",")):
        if not part:
            continue
        if part.endswith("%"):
            try:
                pct = float(part[:-1])
            except ValueError:
                raise ConfigError("--warm", part, "not a percentage (e.g. 5%)") from None
            if not 0 <= pct < float("inf"):
                raise ConfigError("--warm", part, "a percentage must be >= 0")
            n = round(distinct * pct / 100)
            entries.add(max(1, n) if pct > 0 else 0)
        elif part.isdigit():
            entries.add(int(part))
        else:
            nbytes = parse_size(part, "--warm")
            if nbytes < 1:
                raise ConfigError("--warm", part, "a byte budget must be >= 1 byte")
            n = warm_entries(nbytes, dim(), codec_name)
            budgets[n] = nbytes
            entries.add(n)
    if not entries:
        raise ConfigError("--warm", spec, "no size given (e.g. 8GiB, 100000 or 5%)")
    return sorted(entries), budgets


@main.command()
@click.option(
    "--synthetic",
    metavar="KIND:alpha=A,keys=N,requests=R[,seed=S,...]",
    help="Generate a trace: zipf, shifting (phases=P), scan (scan_every=E, scan_length=L) or loop.",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Trace file: .npy ids, CSV (id[,size][,timestamp]), libCacheSim "
    "oracleGeneral binary, or a text query log (one query per line).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["npy", "csv", "oracle", "text"]),
    help="Trace format (default: from the extension: .npy, .csv, .bin, else text).",
)
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config whose encoder fingerprint hashes a text trace like the live cache.",
)
@click.option(
    "--hot-entries",
    default="1%,5%,10%",
    show_default=True,
    help="Hot capacities: entries, or percentages of the trace's distinct keys.",
)
@click.option(
    "--policy",
    "policies",
    default="lru,lfu,tinylfu,wtinylfu,belady",
    show_default=True,
    help="Comma-separated policy names; 'belady' is the offline optimum (bound).",
)
@click.option(
    "--hot",
    "hot_sizes",
    metavar="SIZES",
    help="Hot capacities as byte budgets ('64MiB,256MiB,1GiB'), turned into entries "
    "like the live cache does for --dim; replaces --hot-entries.",
)
@click.option(
    "--dim",
    type=click.IntRange(1),
    default=None,
    help="Vector dimension for --hot (default: the config's encoder, else 384).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Policy seed.")
@click.option(
    "--hot-latency",
    default="4us",
    show_default=True,
    help="Latency of a hot hit in the latency model (e.g. 3us, 0.000004).",
)
@click.option(
    "--miss-latency",
    default="15ms",
    show_default=True,
    help="Latency of a miss (one encoder call) in the latency model.",
)
@click.option(
    "--warm",
    "warm_sizes",
    metavar="SIZES",
    help="Also model a warm tier: byte budgets ('8GiB', entries as the live cache "
    "computes them for --dim), entries ('100000', 0 = none) or percentages of "
    "the distinct keys ('5%'); one run per hot size and warm size.",
)
@click.option(
    "--warm-latency",
    default="12us",
    show_default=True,
    help="Latency of a warm hit in the latency model (with --warm).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Write sim.json, hit_ratio.png and latency.png into this directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def sim(  # noqa: C901
    synthetic: str | None,
    trace_path: str | None,
    fmt: str | None,
    config_path: str | None,
    hot_entries: str,
    policies: str,
    hot_sizes: str | None,
    dim: int | None,
    seed: int,
    hot_latency: str,
    miss_latency: str,
    warm_sizes: str | None,
    warm_latency: str,
    out_dir: str | None,
    as_json: bool,
) -> None:
    """Replay a trace through the live policy engine: hot hit ratio per policy and size,
    with expected latency and encoder calls from a latency model. With --warm, a warm tier
    too: warm hits, SSD writes and encoder calls per hot size and warm size."""
    import numpy as np
    from tqdm import tqdm

    from . import sim as simlib
    from .config import parse_duration, parse_size
    from .sim.report import LatencyModel, write_report
    from .tiers.memory import hot_capacity

    try:
        hot_s = parse_duration(hot_latency, "--hot-latency")
        miss_s = parse_duration(miss_latency, "--miss-latency")
        warm_s = parse_duration(warm_latency, "--warm-latency")
        assert hot_s is not None and miss_s is not None and warm_s is not None
        model = LatencyModel(hot_s=hot_s, miss_s=miss_s, warm_s=warm_s)
        if bool(synthetic) == bool(trace_path):
            raise click.UsageError("give exactly one of --synthetic and --trace")
        trace: Any
        if synthetic:
            kind, p = _parse_synthetic(synthetic)
            alpha, keys = p.get("alpha", 1.0), int(p.get("keys", 100_000))
            requests, tseed = int(p.get("requests", 1_000_000)), int(p.get("seed", 0))
            if kind == "zipf":
                trace = simlib.zipf_trace(alpha, keys, requests, tseed)
            elif kind == "shifting":
                trace = simlib.shifting_trace(alpha, keys, requests, int(p.get("phases", 4)), tseed)
            elif kind == "scan":
                trace = simlib.scan_trace(
                    alpha,
                    keys,
                    requests,
                    int(p.get("scan_every", 1000)),
                    int(p.get("scan_length", 500)),
                    tseed,
                )
            elif kind == "loop":
                trace = simlib.loop_trace(keys, requests)
            else:
                raise click.UsageError(
                    f"unknown synthetic trace {kind!r} (available: zipf, shifting, scan, loop)"
                )
            distinct = len(np.unique(trace))
        else:
            assert trace_path is not None
            ext = os.path.splitext(trace_path)[1].lower()
            fmt = fmt or {".npy": "npy", ".csv": "csv", ".bin": "oracle"}.get(ext, "text")
            if fmt == "text":
                from .encoders import encoder_from_config

                fp = encoder_from_config(_config(config_path).encoder).fingerprint
                trace = simlib.load_text(trace_path, fp)
                distinct = len(set(trace))
            else:
                loader = {
                    "npy": simlib.load_npy,
                    "csv": simlib.load_csv,
                    "oracle": simlib.load_oracle_general,
                }[fmt]
                trace = loader(trace_path)
                distinct = len(np.unique(trace))
        cfg = _config(config_path) if config_path else None

        def vector_dim() -> int:
            return dim or (cfg.encoder.dim if cfg is not None else None) or 384

        hot_bytes: dict[int, int] = {}
        if hot_sizes:
            for part in filter(None, (x.strip() for x in hot_sizes.split(","))):
                nbytes = parse_size(part, "--hot")
                hot_bytes[max(1, hot_capacity(nbytes, vector_dim()))] = nbytes
            sizes = sorted(hot_bytes)
        else:
            sizes = _parse_sizes(hot_entries, distinct)
        names = [n.strip() for n in policies.split(",") if n.strip()]
        results: list[Any]
        warm_bytes: dict[int, int] = {}
        if warm_sizes is None:
            with tqdm(
                total=len(names) * len(sizes),
                unit="run",
                file=sys.stderr,
                disable=not sys.stderr.isatty(),
            ) as bar:
                results = simlib.simulate_grid(
                    trace,
                    capacities=sizes,
                    policies=names,
                    seed=seed,
                    progress=lambda _: bar.update(1),
                )
        else:
            warm_caps, warm_bytes = _parse_warm(
                warm_sizes, distinct, vector_dim, cfg.warm.codec if cfg is not None else "float32"
            )
            results = _sim_tiers(simlib, trace, names, sizes, warm_caps, seed, cfg, tqdm)
    except (TierCacheError, OSError, ValueError) as exc:
        _fail(exc)
    rows = [model.summarise(r) for r in results]
    if out_dir:
        info = {
            "name": synthetic or os.path.basename(str(trace_path)),
            "requests": len(trace),
            "distinct": distinct,
        }
        written = write_report(
            results,
            out_dir,
            model=model,
            trace_info=info,
            hot_bytes=hot_bytes or None,
            warm_bytes=warm_bytes or None,
        )
        click.echo("wrote " + ", ".join(written.values()), err=True)
    if warm_sizes is not None:
        for row in rows:
            row.setdefault("warm_capacity", None)  # belady: the hot tier's bound alone
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if warm_sizes is not None:
        _print_tiers_table(results, rows, model, len(trace), distinct)
        return
    click.echo(
        f"{len(trace)} requests, {distinct} distinct keys; latency model: hit "
        f"{model.hot_s * 1e6:g} us, miss {model.miss_s * 1e3:g} ms"
    )
    click.echo(
        f"{'policy':<10} {'hot entries':>12} {'hit ratio':>10} {'hits':>10} "
        f"{'evicted':>9} {'rejected':>9} {'mean':>10} {'p99':>10} {'encoder s':>10}"
    )
    for r, row in zip(results, rows):
        click.echo(
            f"{r.policy:<10} {r.capacity:>12} {r.hit_ratio:>10.4f} {r.hits:>10} "
            f"{r.evicted:>9} {r.rejected:>9} {row['mean_latency_s'] * 1e3:>8.3f}ms "
            f"{row['p99_latency_s'] * 1e3:>8.3f}ms {row['encoder_seconds']:>10.1f}"
        )


def _sim_tiers(
    simlib: Any,
    trace: Any,
    names: list[str],
    sizes: list[int],
    warm_caps: list[int],
    seed: int,
    cfg: TierCacheConfig | None,
    tqdm: Any,
) -> list[Any]:
    """``simulate_tiers`` for every (policy, hot size, warm size), in that order, with a
    progress bar in requests; ``belady`` gives the hot tier's bound once per hot size.
    The ``policy.*`` settings of ``cfg`` (when given) apply, as in the live cache."""
    pc = cfg.policy if cfg is not None else None
    knobs: dict[str, Any] = (
        {}
        if pc is None
        else {
            "warm_min_frequency": pc.warm_min_frequency,
            "eviction_samples": pc.eviction_samples,
            "max_evictions_per_write": pc.max_evictions_per_write,
            "access_buffer": pc.access_buffer,
            "params": dict(pc.params),
        }
    )
    n = len(trace)
    runs = sum(1 if name == "belady" else len(warm_caps) for name in names) * len(sizes)
    out: list[Any] = []
    with tqdm(
        total=runs * n,
        unit="req",
        unit_scale=True,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    ) as bar:
        for name in names:
            for cap in sizes:
                if name == "belady":
                    out.append(simlib.belady(trace, capacity=cap))
                    bar.update(n)
                    continue
                for warm in warm_caps:
                    bar.set_description(f"{name} hot {cap} warm {warm}")
                    done = [0]

                    def step(k: int, done: list[int] = done) -> None:
                        bar.update(k - done[0])
                        done[0] = k

                    out.append(
                        simlib.simulate_tiers(
                            trace,
                            hot_capacity=cap,
                            warm_capacity=warm,
                            policy=name,
                            seed=seed,
                            progress=step,
                            **knobs,
                        )
                    )
    return out


def _print_tiers_table(
    results: list[Any], rows: list[dict[str, Any]], model: Any, requests: int, distinct: int
) -> None:
    """The ``sim --warm`` table: one line per (policy, hot size, warm size)."""
    click.echo(
        f"{requests} requests, {distinct} distinct keys; latency model: hot "
        f"{model.hot_s * 1e6:g} us, warm {model.warm_s * 1e6:g} us, miss "
        f"{model.miss_s * 1e3:g} ms"
    )
    click.echo(
        f"{'policy':<10} {'hot entries':>11} {'warm entries':>12} {'hot hit':>8} "
        f"{'warm hit':>8} {'encoder calls':>13} {'SSD writes':>10} {'mean':>10} "
        f"{'p99':>10} {'encoder s':>10}"
    )
    bound = False
    for r, row in zip(results, rows):
        if row.get("warm_capacity") is None:  # belady: hot tier alone
            bound = True
            click.echo(
                f"{r.policy:<10} {r.capacity:>11} {'-':>12} {r.hit_ratio:>8.4f} "
                f"{'-':>8} {'-':>13} {'-':>10} {'-':>10} {'-':>10} {'-':>10}"
            )
            continue
        click.echo(
            f"{r.policy:<10} {r.hot_capacity:>11} {r.warm_capacity:>12} "
            f"{r.hit_ratio:>8.4f} {r.warm_hit_ratio:>8.4f} {r.encoder_calls:>13} "
            f"{r.warm_writes:>10} {row['mean_latency_s'] * 1e3:>8.3f}ms "
            f"{row['p99_latency_s'] * 1e3:>8.3f}ms {row['encoder_seconds']:>10.1f}"
        )
    click.echo(
        "hot hit, warm hit: shares of all requests; SSD writes: records written to "
        "warm (recomputed + demoted)"
        + ("; belady: the hot tier's offline bound alone (no warm model)" if bound else "")
    )


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (default: the packaged default config).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def inspect(config_path: str | None, as_json: bool, no_progress: bool) -> None:
    """Read every record of the warm store and verify it: entries by codec and dim,
    records with metadata, expiry range, expired and corrupt records, bytes; the
    fingerprint manifest; the shared tier when configured. Changes nothing."""
    import datetime as dt

    from tqdm import tqdm

    from . import codec

    try:
        cfg = _config(config_path)
        path = Path(cfg.warm.path)
        if not cfg.warm.enabled or not (path / "data.mdb").exists():
            _fail(TierCacheError(f"no warm store at {path}"))
        tier = _open_store(path, cfg)
        now = time.time()
        by_kind: dict[str, int] = {}
        corrupt = expired = with_blob = payload = 0
        first = last = None
        try:
            total = tier.count()
            chunk: list[bytes] = []
            with tqdm(
                total=total,
                unit="rec",
                desc="inspect",
                file=sys.stderr,
                disable=no_progress or not sys.stderr.isatty(),
            ) as bar:
                keys = tier.keys()
                while True:
                    chunk = [k for _, k in zip(range(5000), keys)]
                    if not chunk:
                        break
                    for d in tier.get_many_with(
                        chunk, lambda b: (codec.describe_record(b), len(b))
                    ):
                        if d is None:
                            continue
                        info, n = d
                        payload += n
                        if info is None:
                            corrupt += 1
                            continue
                        kind = f"{info[0]} dim {info[1]}"
                        by_kind[kind] = by_kind.get(kind, 0) + 1
                        with_blob += info[3] > 0
                        if info[2]:
                            expired += info[2] <= now
                            first = info[2] if first is None else min(first, info[2])
                            last = info[2] if last is None else max(last, info[2])
                    bar.update(len(chunk))
            report: dict[str, Any] = {
                "path": str(path),
                **tier.stat(),
                "records": by_kind,
                "corrupt": corrupt,
                "with_metadata_or_text": with_blob,
                "record_bytes": payload,
                "expired": expired,
                "expires_first": first,
                "expires_last": last,
                "manifest": tier.manifest(),
            }
        finally:
            tier.close()
        if cfg.shared.active:
            report["shared"] = _shared_info(cfg)
        if as_json:
            click.echo(json.dumps(report, indent=2, default=str))
            return

        def when(t: float | None) -> str:
            return (
                "-"
                if t is None
                else dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")
            )

        click.echo(f"warm store   {report['path']}")
        click.echo(
            f"entries      {report['entries']} ({report['packed_entries']} packed in "
            f"{report['segments']} segments)"
        )
        for kind, n in sorted(by_kind.items()):
            click.echo(f"  {kind:<22} {n}")
        click.echo(f"corrupt      {corrupt}")
        click.echo(f"metadata     {with_blob} records carry metadata or text")
        click.echo(
            f"bytes        {report['bytes_used']} in B-tree pages, {payload} in records"
            + (
                f" ({report['bytes_used'] / report['entries']:.0f} per entry)"
                if report["entries"]
                else ""
            )
        )
        click.echo(
            f"expiry       {expired} expired; first {when(first)}, last {when(last)} "
            "(records carry no insertion time)"
        )
        _echo_manifest(report["manifest"])
        sh = report.get("shared")
        if sh is not None:
            state = f"{sh['keys']} keys" if sh["reachable"] else f"unreachable: {sh['error']}"
            click.echo(f"shared       {sh['target']} prefix {sh['key_prefix']!r}: {state}")
    except (TierCacheError, OSError) as exc:
        _fail(exc)


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config of the store to migrate FROM (default: the packaged one).",
)
@click.option(
    "--to",
    "to_path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML config to migrate TO (its model, namespace, warm path...).",
)
@click.option(
    "--to-version",
    "to_version",
    help="Shorthand: the same config with encoder.revision set to this value.",
)
@click.option(
    "--batch",
    "-b",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Texts per batch; each batch is one committed write.",
)
@click.option("--restart", is_flag=True, help="Ignore saved progress; start over.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def migrate(
    config_path: str | None,
    to_path: str | None,
    to_version: str | None,
    batch: int,
    restart: bool,
    no_progress: bool,
) -> None:
    """Re-embed every stored text with another model (or model version).

    Reads the texts kept in the old warm store (records written with warm.store_text:
    true; others are counted and skipped) in short read transactions, so the old store
    keeps serving, and precomputes them through a cache built from the new config: new
    fingerprint, new keys, metadata carried over. Interrupted runs resume after the last
    committed batch. Switch the service to the new config when it is done.
    """
    import dataclasses

    from tqdm import tqdm

    from .cache import TierCache
    from .encoders import encoder_from_config

    try:
        if (to_path is None) == (to_version is None):
            _fail(TierCacheError("give exactly one of --to NEW.yaml or --to-version REV"))
        old_cfg = _config(config_path)
        if to_path is not None:
            new_cfg = load_config(to_path)
        else:
            new_cfg = dataclasses.replace(
                old_cfg, encoder=dataclasses.replace(old_cfg.encoder, revision=str(to_version))
            )
        path = Path(old_cfg.warm.path)
        if not old_cfg.warm.enabled or not (path / "data.mdb").exists():
            _fail(TierCacheError(f"no warm store at {path}"))
        if not new_cfg.warm.enabled and not new_cfg.shared.active:
            _fail(TierCacheError("the new config stores nothing (warm and shared disabled)"))
        old = _open_store(path, old_cfg)
        totals = {"records": 0, "no_text": 0, "present": 0, "shared": 0, "encoded": 0}
        t0 = time.perf_counter()
        try:
            with TierCache(new_cfg) as new:
                same_place = (
                    Path(new_cfg.warm.path) == path
                    and new_cfg.warm.namespace == old_cfg.warm.namespace
                )
                if (
                    same_place
                    and new.fingerprint == encoder_from_config(old_cfg.encoder).fingerprint
                ):
                    _fail(
                        TierCacheError(
                            "the new config has the same fingerprint (model, "
                            "revision, role, ...) and store: nothing would "
                            "change"
                        )
                    )
                journal = _MigrateJournal(Path(new_cfg.warm.path), path)
                start = b"" if restart else journal.load()  # keys <= start are done
                # the key list is taken first: the new entries may land in the same store
                # and must not be read back as work (about 70 bytes of RAM per record)
                snapshot = [k for k in old.keys() if k > start]
                total = len(snapshot)
                keys = iter(snapshot)
                with tqdm(
                    total=total,
                    unit="rec",
                    desc="migrate",
                    file=sys.stderr,
                    disable=no_progress or not sys.stderr.isatty(),
                ) as bar:
                    while True:
                        chunk = [k for _, k in zip(range(batch), keys)]
                        if not chunk:
                            break
                        bar.update(len(chunk))
                        texts: list[Any] = []
                        metas: list[Any] = []
                        for rec in old.get_many_with(chunk, _text_and_meta):
                            totals["records"] += 1
                            if rec is None or rec[0] is None:
                                totals["no_text"] += 1
                                continue
                            texts.append(rec[0])
                            metas.append(rec[1])
                        if texts:
                            for k, v in new.precompute(texts, metas).items():
                                totals[k] += v
                        journal.save(chunk[-1])
                        bar.set_postfix(encoded=totals["encoded"])
                journal.clear()
        finally:
            old.close()
        dt = time.perf_counter() - t0
        click.echo(
            f"{totals['records']} records in {dt:.2f} s: {totals['encoded']} texts encoded "
            f"with {new_cfg.encoder.name} rev {new_cfg.encoder.revision!r} "
            f"({totals['encoded'] / dt if dt else 0:.0f} texts/s), {totals['present']} "
            f"already there, {totals['shared']} from the shared tier, {totals['no_text']} "
            "without a stored text (skipped; store texts with warm.store_text: true)"
        )
    except (TierCacheError, OSError) as exc:
        _fail(exc)


def _text_and_meta(buf: Any) -> tuple[Any, Any]:
    """(text, metadata) of a verified record; (None, None) when it keeps no text."""
    from . import codec

    info = codec.describe_record(buf)
    if info is None or not info[3]:
        return None, None
    body = codec.unpack_blob(bytes(buf[len(buf) - info[3] :]))
    return body.get("t"), body.get("m")


class _MigrateJournal(_Journal):
    """Resume state of ``tiercache migrate``: the last old-store key committed."""

    def __init__(self, store: Path, source: Path) -> None:
        import hashlib

        self.ident = {"migrate_from": str(source.resolve())}
        name = hashlib.blake2b(str(source.resolve()).encode(), digest_size=8).hexdigest()
        self.dir = store / "precompute"
        self.path = self.dir / f"migrate-{name}.json"

    def load(self) -> bytes:  # type: ignore[override]
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return b""
        if data.get("migrate_from") != self.ident["migrate_from"]:
            return b""
        return bytes.fromhex(str(data.get("last_key", "")))

    def save(self, last: bytes) -> None:  # type: ignore[override]
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.ident, "last_key": last.hex()}), encoding="utf-8")
        os.replace(tmp, self.path)


def _processes_using(path: Path) -> list[int]:
    """PIDs of other processes with ``path`` open or mapped (Linux ``/proc``); raises
    OSError where /proc is not available."""
    target = str(path.resolve())
    me = os.getpid()
    users: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") == target for fd in fds):
                users.append(int(entry))
                continue
            with open(f"/proc/{entry}/maps", encoding="utf-8", errors="replace") as fh:
                if any(line.rstrip().endswith(target) for line in fh):
                    users.append(int(entry))
        except OSError:
            continue  # the process exited, or is not ours to read
    return users


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (default: the packaged default config).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the compacted copy to this (new or empty) directory.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Swap the compacted copy in place of the store (refused while another "
    "process has the store open).",
)
def compact(config_path: str | None, output: Path | None, replace: bool) -> None:
    """Compacting copy of the warm store (LMDB copy without free pages).

    With --output, writes the copy there and leaves the store alone (safe while serving).
    With --replace, copies beside the store, checks the copy, and swaps it in; this needs
    every other process using the store stopped (checked through /proc)."""
    import shutil

    try:
        if (output is None) == (not replace):
            _fail(TierCacheError("give exactly one of --output DIR or --replace"))
        cfg = _config(config_path)
        path = Path(cfg.warm.path)
        if not cfg.warm.enabled or not (path / "data.mdb").exists():
            _fail(TierCacheError(f"no warm store at {path}"))
        target = (
            output if output is not None else path.with_name(f"{path.name}.compact-{os.getpid()}")
        )
        tier = _open_store(path, cfg)
        try:
            entries = tier.count()
            sizes = tier.copy_to(target)
        finally:
            tier.close()
        check = _open_store(target, cfg)
        try:
            copied = check.count()
        finally:
            check.close()
        if copied != entries:  # pragma: no cover - LMDB's copy is transactional
            shutil.rmtree(target, ignore_errors=True)
            _fail(TierCacheError(f"the copy holds {copied} entries, the store {entries}"))
        before, after = sizes["before"], sizes["after"]
        saved = (
            f"{before} -> {after} bytes ({100 * (1 - after / before):.0f}% smaller)"
            if before
            else f"{after} bytes"
        )
        if output is not None:
            click.echo(f"compacted copy of {entries} entries in {target}: {saved}")
            return
        try:
            users = _processes_using(path / "data.mdb")
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
            _fail(
                TierCacheError(
                    "cannot tell whether other processes use the store (no "
                    "/proc); stop them and use --output, then swap by hand"
                )
            )
        if users:
            shutil.rmtree(target, ignore_errors=True)
            _fail(
                TierCacheError(
                    f"processes {users} have the store open; stop them, or "
                    "use --output DIR and swap while they are stopped"
                )
            )
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        os.rename(path, old)
        os.rename(target, path)
        for extra in old.iterdir():  # keep what is not LMDB's (e.g. precompute progress)
            if extra.name not in ("data.mdb", "lock.mdb") and not (path / extra.name).exists():
                os.rename(extra, path / extra.name)
        shutil.rmtree(old)
        click.echo(f"compacted {path} in place, {entries} entries: {saved}")
    except (TierCacheError, OSError) as exc:
        _fail(exc)


def _open_store(path: Path, cfg: TierCacheConfig) -> Any:
    """The warm store at ``path`` opened for inspection: any fingerprint, nothing
    registered in its manifest (``on_fingerprint_mismatch="inspect"``)."""
    from .keys import Fingerprint
    from .tiers.lmdb import LmdbTier

    return LmdbTier(
        path,
        fingerprint=Fingerprint(model="", dim=0),
        namespace=cfg.warm.namespace,
        durability=cfg.warm.durability,
        on_fingerprint_mismatch="inspect",
    )


def _echo_manifest(manifest: dict[str, Any]) -> None:
    for ns, fps in manifest["namespaces"].items():
        for fp in fps:
            click.echo(
                f"namespace {ns!r}: {fp['model']} rev {fp['revision']!r} "
                f"dim {fp['dim']} role {fp['role']!r}"
            )


def _shared_info(cfg: TierCacheConfig) -> dict[str, Any]:
    """Reachability and key count of the shared tier (the URL shown without a password)."""
    import os
    from urllib.parse import urlsplit

    from .tiers.redis import RedisTier

    sc = cfg.shared
    target = ", ".join(sc.nodes)
    if sc.url:
        parts = urlsplit(sc.url)
        host = parts.hostname or ""
        target = f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}"
        target += parts.path if parts.scheme == "unix" else ""
    tier = RedisTier(
        url=sc.url,
        nodes=sc.nodes,
        cluster=sc.cluster,
        key_prefix=sc.key_prefix,
        timeout=max(sc.timeout, 1.0),
        connect_timeout=max(sc.connect_timeout, 1.0),
        password=os.environ.get(sc.password_env) if sc.password_env else None,
    )
    out: dict[str, Any] = {"target": target, "key_prefix": sc.key_prefix}
    try:
        out.update(reachable=True, keys=tier.count(), cluster=tier.is_cluster, error=None)
    except Exception as exc:  # report, do not fail: the local tiers still work
        out.update(reachable=False, keys=None, cluster=None, error=f"{type(exc).__name__}: {exc}")
    finally:
        tier.close()
    return out


@main.group()
def config() -> None:
    """Check or print configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate FILE; exit 2 naming the dotted key of the first problem."""
    from .policy import get_policy

    try:
        cfg = load_config(file)
        get_policy(cfg.policy.name)
    except TierCacheError as exc:
        _fail(exc)
    click.echo(
        f"{file}: OK (policy {cfg.policy.name}, hot {cfg.hot.max_bytes} B, "
        f"warm {'off' if not cfg.warm.enabled else cfg.warm.path})"
    )


@config.command("show")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
def config_show(file: str | None) -> None:
    """Print the effective config (FILE, or the packaged default) with defaults filled in."""
    import yaml

    try:
        cfg = _config(file)
    except TierCacheError as exc:
        _fail(exc)
    click.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


if __name__ == "__main__":
    main()
