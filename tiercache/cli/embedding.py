"""``tiercache embed`` (a text file through the cache, a per-tier table) and ``tiercache
warm`` (a catalog precomputed into the warm and shared tiers, resumable)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..config import TierCacheConfig
from ..errors import ConfigError, TierCacheError
from .common import _config, _fail, _handled, _minus_load, _model_bars, _show_progress
from .inputs import _catalog_items, _input_options, _read_lines, _Reader
from .journals import _Journal


@click.command()
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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the stats dict as JSON instead of a table; stdout holds the JSON alone.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_input_options
def embed(
    config_path: str | None,
    input_path: str,
    output_path: str | None,
    batch: int,
    passes: int,
    as_json: bool,
    no_progress: bool,
    encoding: str,
    errors: str,
) -> None:
    """Embed every line of a text file through the cache; print a per-tier table."""
    where = {"pass": 0, "done": 0, "total": 0}

    def on_interrupt() -> str:
        done = (
            f"in pass {where['pass']}/{passes}, {where['done']} of {where['total']} texts "
            "embedded; "
            if where["pass"]
            else "before the first pass; "
        )
        return (
            done
            + (f"{output_path} was not written; " if output_path else "")
            + "embed does not resume: run it again (what the warm tier kept is not "
            "encoded again), or precompute with `tiercache warm`, which resumes"
        )

    with _handled(on_interrupt), _model_bars(_show_progress(no_progress)):
        cfg = _config(config_path)
        texts = _read_lines(input_path, _Reader(encoding, errors))
        _embed(cfg, texts, output_path, batch, passes, as_json, no_progress, where)


def _embed(
    cfg: TierCacheConfig,
    texts: list[str],
    output_path: str | None,
    batch: int,
    passes: int,
    as_json: bool,
    no_progress: bool,
    where: dict[str, int],
) -> None:
    """``tiercache embed`` once the input is read. With ``as_json`` everything but the
    stats JSON (pass lines, the ``wrote`` line) goes to stderr."""
    import numpy as np
    from tqdm import tqdm

    from ..cache import TierCache

    with TierCache(cfg) as cache:  # the model loads on the first miss, if any
        result = np.empty((len(texts), cache.dim), dtype=np.float32)
        where["total"] = len(texts)
        for p in range(1, passes + 1):
            where["pass"], where["done"] = p, 0
            before = cache.stats()
            t0 = time.perf_counter()
            with tqdm(
                total=len(texts),
                unit="text",
                desc=f"pass {p}/{passes}",
                disable=not _show_progress(no_progress),
                file=sys.stderr,
            ) as bar:
                for start in range(0, len(texts), batch):
                    chunk = texts[start : start + batch]
                    result[start : start + len(chunk)] = cache.embed_many(chunk)
                    bar.update(len(chunk))
                    where["done"] += len(chunk)
            dt = time.perf_counter() - t0
            after = cache.stats()
            enc = after["encoder"]["texts"] - before["encoder"]["texts"]
            # a model load on this pass's first miss is reported apart from its throughput
            loaded = after["encoder"]["load_seconds"] - before["encoder"]["load_seconds"]
            if loaded > 0:
                click.echo(f"model loaded in {loaded:.2f} s (on the first miss)", err=True)
                dt = max(dt - loaded, 1e-9)
            click.echo(
                f"\npass {p}: {len(texts)} texts in {dt:.2f} s "
                f"({len(texts) / dt if dt else 0:.0f} texts/s), "
                f"{enc} encoded",
                err=as_json,
            )
        stats = cache.stats()
        if output_path:
            np.save(output_path, result)
            click.echo(f"wrote {result.shape} float32 to {output_path}", err=as_json)
        click.echo(json.dumps(stats, indent=2, default=str) if as_json else cache.format_stats())


class _WarmProgress:
    """What ``tiercache warm`` has committed so far, for the Ctrl-C message."""

    def __init__(self) -> None:
        self.finished: list[str] = []
        self.file: str | None = None
        self.line = 0  # last committed line of ``file`` (its saved position)
        self.committed = 0  # lines committed by this run

    def describe(self) -> str:
        parts = [f"{name} finished" for name in self.finished]
        if self.file is not None:
            parts.append(
                f"{self.file} committed through line {self.line}"
                if self.line
                else f"{self.file}: no batch committed"
            )
        return (
            "; ".join(parts or ["no batch committed"])
            + f" ({self.committed} lines committed by this run). Run the same command "
            "again to resume after the last committed line (--restart starts over); "
            "texts already stored are not encoded again"
        )


def _warm_batch(
    cache: Any,
    pending: list[tuple[int, str, Any]],
    journal: _Journal,
    totals: dict[str, int],
    ttl: float | None,
    bar: Any,
    progress: _WarmProgress,
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
    progress.line = pending[-1][0]
    progress.committed += len(pending)
    bar.update(len(pending))
    bar.set_postfix(encoded=totals["encoded"])
    pending.clear()


def _check_ttl(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--ttl`` as ``tiercache.yaml`` takes durations (``3600``, ``1h``, ``1h30m``,
    ``500ms``: :func:`tiercache.config.parse_duration`), in seconds, > 0; checked when the
    command line is parsed, before any model loads."""
    if value is None:
        return None
    from ..config import parse_duration

    try:
        seconds = parse_duration(value, "--ttl")
    except ConfigError as exc:  # (the hint at 'never' is the YAML's, not --ttl's)
        reason = exc.reason.split(" (use null")[0]
        raise click.BadParameter(f"{reason} (got {value!r})") from None
    if seconds is None:
        raise click.BadParameter(
            f"not a TTL here: leave --ttl out, and the config's ttl (null: no expiry) applies "
            f"(got {value!r})"
        )
    return seconds


def _warm_file(
    cache: Any,
    path: Path,
    opts: dict[str, Any],
    totals: dict[str, int],
    progress: _WarmProgress,
) -> None:
    """Precompute one catalog file in batches, resuming after its saved position."""
    from tqdm import tqdm

    journal = _Journal(Path(opts["store"]), path)
    done = 0 if opts["restart"] else journal.load()
    progress.file, progress.line = str(path), done
    # the first pass counts the lines for the bar, and finds undecodable ones before
    # anything is written
    total = sum(1 for _ in _Reader(opts["encoding"], opts["errors"]).lines(path))
    reader = _Reader(opts["encoding"], opts["errors"])
    batch, ttl = opts["batch"], opts["ttl"]
    pending: list[tuple[int, str, Any]] = []
    with tqdm(
        total=total,
        unit="line",
        desc=path.name,
        file=sys.stderr,
        disable=not _show_progress(opts["no_progress"]),
    ) as bar:
        for n, text, meta in _catalog_items(path, opts["fmt"], reader):
            totals["lines"] += 1
            if n <= done:
                totals["skipped"] += 1
                bar.update(1)
                continue
            pending.append((n, text, meta))
            if len(pending) >= batch:
                _warm_batch(cache, pending, journal, totals, ttl, bar, progress)
        if pending:
            _warm_batch(cache, pending, journal, totals, ttl, bar, progress)
    journal.clear()  # the whole file is stored
    reader.note(path)
    progress.finished.append(str(path))
    progress.file = None


@click.command()
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
@click.option(
    "--ttl",
    metavar="DURATION",
    default=None,
    callback=_check_ttl,
    help="TTL of the entries written: seconds or a duration like the config's "
    "(1h, 30m, 1h30m, 500ms); default: the config's ttl.",
)
@click.option("--restart", is_flag=True, help="Ignore saved progress; start each file over.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@_input_options
def warm(
    files: tuple[Path, ...],
    config_path: str | None,
    fmt: str,
    batch: int,
    ttl: float | None,
    restart: bool,
    no_progress: bool,
    encoding: str,
    errors: str,
) -> None:
    """Precompute a catalog into the warm tier (and the shared tier, when configured).

    Reads FILES (one text per line, or JSONL with id/text/metadata), encodes what no tier
    holds, and commits each batch. Interrupted runs resume after the last committed batch
    (progress is kept under the warm directory); texts already stored are never encoded
    again. Prints a throughput summary.
    """
    from ..cache import TierCache

    progress = _WarmProgress()
    with _handled(progress.describe), _model_bars(_show_progress(no_progress)):
        cfg = _config(config_path)
        if not cfg.warm.enabled and not cfg.shared.active:
            _fail(TierCacheError("warm tier is disabled in this config: nowhere to store"))
        totals = {"lines": 0, "skipped": 0, "present": 0, "shared": 0, "encoded": 0}
        opts = {
            "store": cfg.warm.path,
            "restart": restart,
            "fmt": fmt,
            "batch": batch,
            "ttl": ttl,
            "no_progress": no_progress,
            "encoding": encoding,
            "errors": errors,
        }
        t0 = time.perf_counter()
        with TierCache(cfg) as cache:
            for path in files:
                _warm_file(cache, path, opts, totals, progress)
            loaded = cache.stats()["encoder"]["load_seconds"]
        dt = _minus_load(time.perf_counter() - t0, loaded)
        click.echo(
            f"{totals['lines']} lines in {dt:.2f} s: {totals['encoded']} encoded "
            f"({totals['encoded'] / dt if dt else 0:.0f} texts/s), {totals['present']} already "
            f"stored, {totals['shared']} copied from the shared tier, {totals['skipped']} "
            f"skipped (committed by an earlier run)"
        )
