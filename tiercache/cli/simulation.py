"""``tiercache sim``: a trace (synthetic or from a file) replayed through the live policy
engine (``tiercache.sim``), hot tier alone or with a warm tier, as a table, JSON or a
report with plots."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from ..config import TierCacheConfig
from ..errors import ConfigError, TierCacheError
from .common import _config, _handled

_TRACE_PARAMS: dict[str, tuple[type, float]] = {
    "alpha": (float, 0.0),
    "keys": (int, 1),
    "requests": (int, 1),
    "seed": (int, 0),
    "phases": (int, 1),
    "scan_every": (int, 1),
    "scan_length": (int, 0),
}
"""Every ``--synthetic`` parameter: its type and smallest value."""


SYNTHETIC_KINDS: dict[str, tuple[str, ...]] = {
    "zipf": ("alpha", "keys", "requests", "seed"),
    "shifting": ("alpha", "keys", "requests", "seed", "phases"),
    "scan": ("alpha", "keys", "requests", "seed", "scan_every", "scan_length"),
    "loop": ("keys", "requests"),
}
"""``--synthetic`` trace kinds and the parameters each takes."""


def _trace_param(name: str, value: str) -> float:
    kind, minimum = _TRACE_PARAMS[name]
    want = "a number" if kind is float else "an integer"
    try:
        x = float(value)
    except ValueError:
        raise click.BadParameter(f"{name}: not {want} (got {value!r})") from None
    if x != x or x in (float("inf"), float("-inf")) or (kind is int and not x.is_integer()):
        raise click.BadParameter(f"{name}: not {want} (got {value!r})")
    if x < minimum:
        raise click.BadParameter(f"{name}: must be >= {minimum:g} (got {value!r})")
    return x


def _parse_synthetic(spec: str) -> tuple[str, dict[str, float]]:
    """``KIND:name=value,...`` checked: a known kind, its own parameters only (each once),
    numbers in range. Raises ``click.BadParameter`` naming the parameter."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    valid = SYNTHETIC_KINDS.get(kind)
    if valid is None:
        raise click.BadParameter(
            f"unknown synthetic trace {kind!r} (available: {', '.join(SYNTHETIC_KINDS)})"
        )
    params: dict[str, float] = {}
    for part in filter(None, (x.strip() for x in rest.split(","))):
        name, eq, value = (x.strip() for x in part.partition("="))
        if name not in valid:
            raise click.BadParameter(
                f"unknown parameter {name!r} for {kind} (valid: {', '.join(valid)})"
            )
        if not eq or not value:
            raise click.BadParameter(f"{name}: no value (write {name}=VALUE)")
        if name in params:
            raise click.BadParameter(f"{name} given twice")
        params[name] = _trace_param(name, value)
    return kind, params


def _check_synthetic(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is not None:
        _parse_synthetic(value)
    return value


def _hot_entry_specs(spec: str) -> list[tuple[bool, float]]:
    """``--hot-entries`` parts as ``(is_percentage, number)``: counts >= 1, percentages
    > 0. Raises ``click.BadParameter``."""
    out: list[tuple[bool, float]] = []
    for part in filter(None, (x.strip() for x in spec.split(","))):
        if part.endswith("%"):
            try:
                pct = float(part[:-1])
            except ValueError:
                raise click.BadParameter(f"{part!r}: not a percentage (e.g. 5%)") from None
            if not 0 < pct < float("inf"):
                raise click.BadParameter(f"{part!r}: a percentage must be > 0")
            out.append((True, pct))
            continue
        try:
            n = int(part)
        except ValueError:
            raise click.BadParameter(
                f"{part!r}: not an entry count or a percentage (e.g. 500 or 5%)"
            ) from None
        if n < 1:
            raise click.BadParameter(f"{part!r}: a hot tier holds at least 1 entry")
        out.append((False, n))
    if not out:
        raise click.BadParameter("no size given (e.g. 500 or 1%,5%)")
    return out


def _check_hot_entries(ctx: click.Context, param: click.Parameter, value: str) -> str:
    _hot_entry_specs(value)
    return value


def _parse_sizes(spec: str, distinct: int) -> list[int]:
    """Hot capacities in entries; a percentage of the distinct keys is at least 1."""
    return [
        max(1, round(distinct * x / 100)) if pct else int(x) for pct, x in _hot_entry_specs(spec)
    ]


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
    from ..config import parse_size
    from ..errors import ConfigError
    from ..sim import warm_entries

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


@click.command()
@click.option(
    "--synthetic",
    metavar="KIND:alpha=A,keys=N,requests=R[,seed=S,...]",
    callback=_check_synthetic,
    help="Generate a trace: zipf (alpha, keys, requests, seed), shifting (+ phases), "
    "scan (+ scan_every, scan_length) or loop (keys, requests).",
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
    callback=_check_hot_entries,
    help="Hot capacities: entries (>= 1), or percentages (> 0) of the trace's distinct keys.",
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
@click.option(
    "--recommend",
    is_flag=True,
    help="Compare every policy and setting at the hot sizes and print the winning "
    "policy YAML (with --out: recommend.json and recommend.png).",
)
def sim(
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
    recommend: bool,
) -> None:
    """Replay a trace through the live policy engine: hot hit ratio per policy and size,
    with expected latency and encoder calls from a latency model. With --warm, a warm tier
    too: warm hits, SSD writes and encoder calls per hot size and warm size."""
    from tqdm import tqdm

    from .. import sim as simlib
    from ..config import parse_duration
    from ..sim.report import LatencyModel, write_report

    with _handled(errors=(TierCacheError, OSError, ValueError)):
        hot_s = parse_duration(hot_latency, "--hot-latency")
        miss_s = parse_duration(miss_latency, "--miss-latency")
        warm_s = parse_duration(warm_latency, "--warm-latency")
        assert hot_s is not None and miss_s is not None and warm_s is not None
        model = LatencyModel(hot_s=hot_s, miss_s=miss_s, warm_s=warm_s)
        if bool(synthetic) == bool(trace_path):
            raise click.UsageError("give exactly one of --synthetic and --trace")
        trace, distinct = _sim_trace(simlib, synthetic, trace_path, fmt, config_path)
        cfg = _config(config_path) if config_path else None

        def vector_dim() -> int:
            return dim or (cfg.encoder.dim if cfg is not None else None) or 384

        hot_bytes: dict[int, int] = {}
        if hot_sizes:
            sizes, hot_bytes = _hot_budgets(hot_sizes, vector_dim())
        else:
            sizes = _parse_sizes(hot_entries, distinct)
        if recommend:  # tiercache.sim.recommend: every candidate, the winning YAML
            from ..sim.recommend import recommend as pick

            click.echo(pick(trace, sizes, seed=seed, out_dir=out_dir).render())
            return
        names = [n.strip() for n in policies.split(",") if n.strip()]
        results: list[Any]
        warm_bytes: dict[int, int] = {}
        if warm_sizes is None:
            results = _sim_hot(simlib, trace, names, sizes, seed, tqdm)
        else:
            warm_caps, warm_bytes = _parse_warm(
                warm_sizes, distinct, vector_dim, cfg.warm.codec if cfg is not None else "float32"
            )
            results = _sim_tiers(simlib, trace, names, sizes, warm_caps, seed, cfg, tqdm)
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


def _sim_trace(
    simlib: Any,
    synthetic: str | None,
    trace_path: str | None,
    fmt: str | None,
    config_path: str | None,
) -> tuple[Any, int]:
    """The trace ``sim`` replays and its number of distinct keys."""
    import numpy as np

    if synthetic:
        kind, p = _parse_synthetic(synthetic)
        alpha, keys = p.get("alpha", 1.0), int(p.get("keys", 100_000))
        requests, tseed = int(p.get("requests", 1_000_000)), int(p.get("seed", 0))
        if kind == "zipf":
            trace = simlib.zipf_trace(alpha, keys, requests, tseed)
        elif kind == "shifting":
            trace = simlib.shifting_trace(alpha, keys, requests, int(p.get("phases", 4)), tseed)
        elif kind == "scan":
            every, length = int(p.get("scan_every", 1000)), int(p.get("scan_length", 500))
            trace = simlib.scan_trace(alpha, keys, requests, every, length, tseed)
        else:
            trace = simlib.loop_trace(keys, requests)
        return trace, len(np.unique(trace))
    assert trace_path is not None
    ext = os.path.splitext(trace_path)[1].lower()
    fmt = fmt or {".npy": "npy", ".csv": "csv", ".bin": "oracle"}.get(ext, "text")
    if fmt == "text":
        from ..encoders import encoder_from_config

        fp = encoder_from_config(_config(config_path).encoder).fingerprint
        trace = simlib.load_text(trace_path, fp)
        return trace, len(set(trace))
    loader = {
        "npy": simlib.load_npy,
        "csv": simlib.load_csv,
        "oracle": simlib.load_oracle_general,
    }[fmt]
    trace = loader(trace_path)
    return trace, len(np.unique(trace))


def _hot_budgets(spec: str, dim: int) -> tuple[list[int], dict[int, int]]:
    """``--hot`` byte budgets as hot capacities (entries, as the live cache computes them
    for ``dim``) and ``{entries: bytes}``. Raises ConfigError("--hot")."""
    from ..config import parse_size
    from ..tiers.memory import hot_capacity

    hot_bytes: dict[int, int] = {}
    for part in filter(None, (x.strip() for x in spec.split(","))):
        nbytes = parse_size(part, "--hot")
        if nbytes < 1:
            raise ConfigError("--hot", part, "a byte budget must be >= 1 byte")
        hot_bytes[max(1, hot_capacity(nbytes, dim))] = nbytes
    if not hot_bytes:
        raise ConfigError("--hot", spec, "no size given (e.g. 64MiB,1GiB)")
    return sorted(hot_bytes), hot_bytes


def _sim_hot(
    simlib: Any, trace: Any, names: list[str], sizes: list[int], seed: int, tqdm: Any
) -> list[Any]:
    """``simulate`` (``belady`` for "belady") for every (policy, hot size), in that order,
    as ``simulate_grid`` runs them, with a progress bar in requests (it moves a run's
    requests at a time: the compiled replay reports no progress of its own)."""
    n = len(trace)
    out: list[Any] = []
    with tqdm(
        total=len(names) * len(sizes) * n,
        unit="req",
        unit_scale=True,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    ) as bar:
        for name in names:
            for cap in sizes:
                bar.set_description(f"{name} hot {cap}")
                if name == "belady":
                    out.append(simlib.belady(trace, capacity=cap))
                else:
                    out.append(simlib.simulate(trace, capacity=cap, policy=name, seed=seed))
                bar.update(n)
    return out


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
