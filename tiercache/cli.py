"""The ``tiercache`` command line: thin wrappers that parse, call the library, print."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .config import TierCacheConfig, config_to_dict, default_config, load_config  # noqa: E402
from .errors import ConfigError, TierCacheError  # noqa: E402

_F = TypeVar("_F", bound=Callable[..., Any])


def _config(path: str | None) -> TierCacheConfig:
    return load_config(path) if path else default_config()


def _fail(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _interrupted(what: str) -> NoReturn:
    """Ctrl-C: say what was done and how to go on, exit 130 (128 + SIGINT, as shells do)."""
    click.echo(f"\ninterrupted (Ctrl-C): {what}", err=True)
    sys.exit(130)


def _by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a KeyboardInterrupt: the library reports one raised
    inside the encoder as an ``EncoderError`` caused by it."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _nothing_changed() -> str:
    return "nothing was changed"


@contextlib.contextmanager
def _handled(
    on_interrupt: Callable[[], str] = _nothing_changed,
    errors: tuple[type[Exception], ...] = (TierCacheError, OSError),
) -> Iterator[None]:
    """Run a command's body: ``errors`` exit 2 with ``error: ...``; Ctrl-C (also when the
    library reports it as an error it caused) exits 130 with ``on_interrupt()``: what was
    committed and how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        _interrupted(on_interrupt())
    except errors as exc:
        if _by_interrupt(exc):
            _interrupted(on_interrupt())
        _fail(exc)


def _show_progress(no_progress: bool) -> bool:
    """Progress bars are drawn on a terminal only, and never with --no-progress."""
    return not no_progress and sys.stderr.isatty()


@contextlib.contextmanager
def _model_bars(show: bool) -> Iterator[None]:
    """Keep the model loader's own progress bars (transformers' "Loading weights",
    huggingface_hub's) off stderr unless ``show``. The model loads lazily, wherever the
    first text is encoded, so this covers a whole command: ``HF_HUB_DISABLE_PROGRESS_BARS``
    for libraries imported meanwhile (they read it on import; they keep their bars off in
    this process), and the switches of those already imported (restored afterwards)."""
    if show:
        yield
        return
    env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    hub: Any = sys.modules.get("huggingface_hub.utils")
    tf: Any = sys.modules.get("transformers.utils.logging")
    hub_on = hub is not None and not hub.are_progress_bars_disabled()
    tf_on = tf is not None and bool(tf.is_progress_bar_enabled())
    if hub_on:
        hub.disable_progress_bars()
    if tf_on:
        tf.disable_progress_bar()
    try:
        yield
    finally:
        if env is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env
        if hub_on:
            hub.enable_progress_bars()
        if tf_on:
            tf.enable_progress_bar()


# -- input files -------------------------------------------------------------------------

ERRORS = ("strict", "skip", "replace")
"""``--errors``: what a line that is not valid in ``--encoding`` does."""

_MARK = "\udcff"  # stands for undecodable bytes; never produced by a successful decode


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return _MARK, exc.end


codecs.register_error("tiercache.mark", _mark_undecodable)


def _line_based(encoding: str) -> bool:
    """Whether ``encoding`` writes a newline as the byte 0x0A and never uses that byte
    inside another character (UTF-8, Latin-1, cp1252, ...; not UTF-16/32): such files are
    read and decoded line by line."""
    try:
        return b"\n".decode(encoding) == "\n" and "a\n".encode(encoding).endswith(b"a\n")
    except (UnicodeError, LookupError):
        return False


def _chomp(line: str) -> str:
    return line.removesuffix("\n").removesuffix("\r")


class _Reader:
    """The non-blank lines of an input file (``-``: stdin) decoded with ``--encoding``.

    A line that is not valid in the encoding raises ``TierCacheError`` naming the file,
    the line and the byte offset in the file (``errors="strict"``), is dropped
    (``"skip"``) or decoded with U+FFFD in place of the bad bytes (``"replace"``); the
    numbers of the lines dropped or repaired are kept in ``bad``."""

    def __init__(self, encoding: str = "utf-8", errors: str = "strict") -> None:
        self.encoding = encoding
        self.errors = errors
        self.bad: list[int] = []

    def lines(self, path: str | Path) -> Iterator[tuple[int, str]]:
        """``(line number, text)`` of every line that is not blank (the newline removed)."""
        self.bad = []
        name = "<stdin>" if str(path) == "-" else str(path)
        opened: Any = (
            contextlib.nullcontext(sys.stdin.buffer) if str(path) == "-" else open(path, "rb")
        )
        with opened as fh:
            split = self._by_line if _line_based(self.encoding) else self._whole
            for n, text in split(fh, name):
                if text.strip():
                    yield n, text

    def _by_line(self, fh: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
        offset = 0
        for n, raw in enumerate(fh, 1):
            try:
                text: str | None = raw.decode(self.encoding)
            except UnicodeDecodeError as exc:
                self._refuse(name, n, offset, exc)
                self.bad.append(n)
                text = None if self.errors == "skip" else raw.decode(self.encoding, "replace")
            offset += len(raw)
            if text is not None:
                yield n, _chomp(text)

    def _whole(self, fh: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
        data = fh.read()  # e.g. UTF-16: a newline byte may be half of another character
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError as exc:
            n = data[: exc.start].decode(self.encoding, "replace").count("\n") + 1
            self._refuse(name, n, 0, exc)
            text = data.decode(self.encoding, "tiercache.mark")
        for n, line in enumerate(text.split("\n"), 1):
            if _MARK in line:
                self.bad.append(n)
                if self.errors == "skip":
                    continue
                line = line.replace(_MARK, "\ufffd")
            yield n, line.removesuffix("\r")

    def _refuse(self, name: str, n: int, offset: int, exc: UnicodeDecodeError) -> None:
        """Raise for a bad line, unless --errors says what to do with it."""
        if self.errors != "strict":
            return
        bad = bytes(exc.object[exc.start : exc.end]).hex(" ")
        raise TierCacheError(
            f"{name}:{n}: byte offset {offset + exc.start}: not valid {self.encoding} "
            f"({exc.reason}: {bad}); give the file's encoding with --encoding, or "
            "--errors skip (drop such lines) or --errors replace (U+FFFD for the bad bytes)"
        )

    def note(self, name: str | Path) -> None:
        """Say on stderr how many lines were dropped or repaired (nothing when none)."""
        if self.bad:
            n = len(self.bad)
            done = "skipped" if self.errors == "skip" else "read with U+FFFD for the bad bytes"
            click.echo(
                f"note: {name}: {n} line{'s' if n != 1 else ''} not valid {self.encoding}, "
                f"{done} (first: line {self.bad[0]})",
                err=True,
            )


def _check_encoding(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise click.BadParameter(f"unknown encoding {value!r}") from None
    return value


def _input_options(f: _F) -> _F:
    """``--encoding`` and ``--errors`` of the commands that read text files."""
    f = click.option(
        "--errors",
        "errors",
        type=click.Choice(ERRORS),
        default="strict",
        show_default=True,
        help="A line not valid in --encoding: strict stops with file, line and byte "
        "offset (exit 2); skip drops the line; replace puts U+FFFD for the bad bytes.",
    )(f)
    return click.option(
        "--encoding",
        default="utf-8",
        show_default=True,
        callback=_check_encoding,
        help="Encoding of the input file(s) (any Python codec: utf-8, latin-1, utf-16...).",
    )(f)


def _read_lines(path: str, reader: _Reader) -> list[str]:
    texts = [text for _, text in reader.lines(path)]
    reader.note("<stdin>" if path == "-" else path)
    return texts


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


def _minus_load(seconds: float, loaded: float) -> float:
    """A command's elapsed time without the model's load (on the first miss), which is
    printed apart: throughput counts encoding, not start-up."""
    if loaded > 0:
        click.echo(f"model loaded in {loaded:.2f} s (on the first miss; not counted below)")
    return max(seconds - loaded, 1e-9)


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

    from .cache import TierCache

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


def _catalog_items(path: Path, fmt: str, reader: _Reader) -> Any:
    """Yield ``(line_number, text, metadata)`` for every non-empty line of a catalog.

    ``text``: one text per line. ``jsonl``: objects with ``text`` (required), and optional
    ``id`` and ``metadata`` (the id is stored in the metadata as ``"id"``). ``auto``: jsonl
    for ``.jsonl``/``.ndjson`` files, text otherwise. Lines are decoded by ``reader``."""
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "text"
    for n, line in reader.lines(path):
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
    from .config import parse_duration

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
    from .cache import TierCache

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


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (default: the packaged default config).",
)
@click.option(
    "--event",
    type=click.Choice(["updated", "deleted", "created"]),
    default=None,
    help="A document event for --id: updated/deleted drop its vectors and results, "
    "created drops only results tagged like it.",
)
@click.option("--id", "doc_ids", multiple=True, help="Document id (repeatable); digits = int id.")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable): drop what carries it.")
@click.option("--text", "texts", multiple=True, help="Content whose vector to drop (repeatable).")
@click.option("--clear", "clear_all", is_flag=True, help="Drop everything (every tier).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def invalidate(
    config_path: str | None,
    event: str | None,
    doc_ids: tuple[str, ...],
    tags: tuple[str, ...],
    texts: tuple[str, ...],
    clear_all: bool,
    as_json: bool,
) -> None:
    """Invalidate cached vectors (and attached search results) everywhere: in this
    host's tiers, every worker process on its warm store before their next read, the
    shared Redis tier and, with shared.invalidation: stream, every host of the fleet.

    \b
      tiercache invalidate -c prod.yaml --event updated --id 42 --tag col:news
      tiercache invalidate -c prod.yaml --tag col:news
      tiercache invalidate -c prod.yaml --text "some query" --text "another"
    """
    if not (doc_ids or tags or texts or clear_all):
        raise click.UsageError("say what to invalidate: --id, --tag, --text or --clear")
    if event and not doc_ids:
        raise click.UsageError("--event needs the document's --id")
    from .cache import TierCache

    with _handled():
        cfg = _config(config_path)
        ids: list[Any] = [int(d) if d.isdigit() else d for d in doc_ids]
        removed = 0
        with TierCache(cfg) as c:
            if clear_all:
                c.clear()
            if event:
                for doc in ids:
                    removed += c.document_event(event, doc, tags=list(tags))
            else:
                if ids:
                    removed += c.drop_ids(ids)
                if tags:
                    removed += c.invalidate_tags(list(tags))
            if texts:
                removed += c.mdrop(list(texts))
            fleet = c.stats()["invalidation"].get("fleet")
        info = {"removed": removed, "cleared": clear_all, "published": bool(fleet)}
        if as_json:
            click.echo(json.dumps(info))
        else:
            where = "this host and the fleet" if fleet else "this host (no fleet channel)"
            what = "everything" if clear_all else f"{removed} vector(s)"
            click.echo(f"invalidated {what} in {where}")


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

    with _handled():
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
            click.echo(
                f"shared       {sh['target']} prefix {sh['key_prefix']!r}, record tags {sh['auth']}"
            )
            if sh["reachable"]:
                click.echo(
                    f"             {sh['keys']} keys under the prefix"
                    f"{' (cluster)' if sh['cluster'] else ''}"
                )
            else:
                click.echo(f"             unreachable: {sh['error']}")


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

    from . import sim as simlib
    from .config import parse_duration
    from .sim.report import LatencyModel, write_report

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
            from .sim.recommend import recommend as pick

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
        from .encoders import encoder_from_config

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
    from .config import parse_size
    from .tiers.memory import hot_capacity

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


def _check_pages(path: Path, as_json: bool) -> None:
    """``inspect --pages``: the page walk in a child; exit 1 when the store is damaged."""
    from .tiers import guard

    intact, found = guard.check_in_child(str(path))
    if not intact:
        if as_json:
            click.echo(json.dumps({"pages": {"intact": False, "found": found}}))
        click.echo(
            f"damaged: {path}: {found}. A cache opening it moves it aside "
            "(warm.on_damage: quarantine) and starts empty.",
            err=True,
        )
        sys.exit(1)
    if not as_json:
        click.echo(f"pages: intact ({found})")


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
@click.option(
    "--pages",
    is_flag=True,
    help="First walk every LMDB page in a child process (a damaged store crashes the "
    "child, not this command); exit 1 if the store is damaged.",
)
def inspect(config_path: str | None, as_json: bool, no_progress: bool, pages: bool) -> None:
    """Read every record of the warm store and verify it: entries by codec and dim,
    records with metadata, expiry range, expired and corrupt records, bytes; the
    fingerprint manifest; the shared tier when configured. Changes nothing.

    --pages runs the check a cache runs on opening a store that may be damaged: every
    entry of every database read and pages allocated in an aborted write, in a child."""
    import datetime as dt

    from tqdm import tqdm

    with _handled():
        cfg = _config(config_path)
        path = Path(cfg.warm.path)
        if not cfg.warm.enabled or not (path / "data.mdb").exists():
            _fail(TierCacheError(f"no warm store at {path}"))
        if pages:
            _check_pages(path, as_json)
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
                    for d in tier.get_many_at(chunk, _described, None, None):
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
    fingerprint, new keys, metadata carried over. When the new vectors go to the same
    store and namespace (always with --to-version), both fingerprints are registered
    there side by side (warm.on_fingerprint_mismatch: coexist, for this run), so the
    service switches by changing its config alone. Interrupted runs resume after the last
    committed batch. Switch the service to the new config when it is done.
    """
    from .cache import TierCache

    totals = {"records": 0, "no_text": 0, "present": 0, "shared": 0, "encoded": 0}

    def on_interrupt() -> str:
        return (
            f"{totals['records']} records committed in this run ({totals['encoded']} texts "
            "encoded). Run the same command again to resume after the last committed "
            "batch (--restart starts over)"
        )

    with _handled(on_interrupt), _model_bars(_show_progress(no_progress)):
        old_cfg, new_cfg, shared_ns = _migrate_configs(config_path, to_path, to_version)
        path = Path(old_cfg.warm.path)
        old = _open_store(path, old_cfg)
        t0 = time.perf_counter()
        try:
            with TierCache(new_cfg) as new:
                _migrate_records(
                    old, new, Path(new_cfg.warm.path), path, batch, restart, no_progress, totals
                )
                loaded = new.stats()["encoder"]["load_seconds"]
        finally:
            old.close()
        dt = _minus_load(time.perf_counter() - t0, loaded)
        click.echo(
            f"{totals['records']} records in {dt:.2f} s: {totals['encoded']} texts encoded "
            f"with {new_cfg.encoder.name} rev {new_cfg.encoder.revision!r} "
            f"({totals['encoded'] / dt if dt else 0:.0f} texts/s), {totals['present']} "
            f"already there, {totals['shared']} from the shared tier, {totals['no_text']} "
            "without a stored text (skipped; store texts with warm.store_text: true)"
        )
        _echo_migrated(old_cfg, new_cfg, shared_ns, to_path)


def _migrate_configs(
    config_path: str | None, to_path: str | None, to_version: str | None
) -> tuple[TierCacheConfig, TierCacheConfig, bool]:
    """The old and new configs of ``migrate``, and whether the new vectors go to the old
    store's namespace. There the new config gets ``on_fingerprint_mismatch: coexist``: the
    namespace's manifest then lists both fingerprints, and a service opening it with
    either config (``error`` or not) finds its own. Refused when nothing would change."""
    import dataclasses

    from .encoders import encoder_from_config

    if (to_path is None) == (to_version is None):
        raise TierCacheError("give exactly one of --to NEW.yaml or --to-version REV")
    old_cfg = _config(config_path)
    if to_path is not None:
        new_cfg = load_config(to_path)
    else:
        new_cfg = dataclasses.replace(
            old_cfg, encoder=dataclasses.replace(old_cfg.encoder, revision=str(to_version))
        )
    path = Path(old_cfg.warm.path)
    if not old_cfg.warm.enabled or not (path / "data.mdb").exists():
        raise TierCacheError(f"no warm store at {path}")
    if not new_cfg.warm.enabled and not new_cfg.shared.active:
        raise TierCacheError("the new config stores nothing (warm and shared disabled)")
    same_ns = (
        new_cfg.warm.enabled
        and Path(new_cfg.warm.path) == path
        and new_cfg.warm.namespace == old_cfg.warm.namespace
    )
    if not same_ns:
        return old_cfg, new_cfg, False
    if (
        encoder_from_config(new_cfg.encoder).fingerprint
        == encoder_from_config(old_cfg.encoder).fingerprint
    ):
        raise TierCacheError(
            "the new config has the same fingerprint (model, revision, role, ...) and "
            "store: nothing would change"
        )
    warm = dataclasses.replace(new_cfg.warm, on_fingerprint_mismatch="coexist")
    return old_cfg, dataclasses.replace(new_cfg, warm=warm), True


def _migrate_records(
    old: Any,
    new: Any,
    new_store: Path,
    old_path: Path,
    batch: int,
    restart: bool,
    no_progress: bool,
    totals: dict[str, int],
) -> None:
    """Precompute the texts of every old record into ``new``, one committed batch at a
    time, saving the last old key done after each."""
    from tqdm import tqdm

    journal = _MigrateJournal(new_store, old_path)
    start = b"" if restart else journal.load()  # keys <= start are done
    # the key list is taken first: the new entries may land in the same store and must
    # not be read back as work (about 70 bytes of RAM per record)
    snapshot = [k for k in old.keys() if k > start]
    keys = iter(snapshot)
    with tqdm(
        total=len(snapshot),
        unit="rec",
        desc="migrate",
        file=sys.stderr,
        disable=not _show_progress(no_progress),
    ) as bar:
        while True:
            chunk = [k for _, k in zip(range(batch), keys)]
            if not chunk:
                break
            texts: list[Any] = []
            metas: list[Any] = []
            records = 0
            for rec in old.get_many_at(chunk, _text_and_meta, None, None):
                records += 1
                if rec is None or rec[0] is None:
                    totals["no_text"] += 1
                    continue
                texts.append(rec[0])
                metas.append(rec[1])
            if texts:
                for k, v in new.precompute(texts, metas).items():
                    totals[k] += v
            journal.save(chunk[-1])
            totals["records"] += records
            bar.update(len(chunk))
            bar.set_postfix(encoded=totals["encoded"])
    journal.clear()


def _echo_migrated(
    old_cfg: TierCacheConfig, new_cfg: TierCacheConfig, shared_ns: bool, to_path: str | None
) -> None:
    """Say where the new vectors are and how the service switches to them."""
    enc, warm = new_cfg.encoder, new_cfg.warm
    if shared_ns:
        click.echo(
            f"namespace {warm.namespace!r} of {warm.path} now holds rev "
            f"{old_cfg.encoder.revision!r} and rev {enc.revision!r} of {enc.name} side by "
            "side (warm.on_fingerprint_mismatch: coexist for this run; keys never collide)"
        )
    elif warm.enabled:
        click.echo(f"new vectors in namespace {warm.namespace!r} of {warm.path}")
    else:
        click.echo("new vectors in the shared tier")
    switch = (
        f"point it at {to_path}"
        if to_path
        else f"set encoder.revision: {enc.revision} in its config"
    )
    click.echo(
        f"to serve them, {switch}; the old vectors age out (ttl) or go with clear() "
        "or a new warm directory"
    )


def _described(buf: Any, start: int, end: int, _: None, key: bytes) -> Any:
    """``(codec.describe_record(record), len(record))`` of the record of ``key`` at
    ``buf[start:end]`` (``LmdbTier.get_many_at``'s decoder form)."""
    from . import codec

    return codec.describe_record(memoryview(buf)[start:end], key), end - start


def _text_and_meta(buf: Any, start: int, end: int, _: None, key: bytes) -> tuple[Any, Any]:
    """(text, metadata) of the verified record of ``key`` at ``buf[start:end]``; (None,
    None) when it keeps no text."""
    from . import codec

    rec = memoryview(buf)[start:end]
    info = codec.describe_record(rec, key)
    if info is None or not info[3]:
        return None, None
    body = codec.unpack_blob(bytes(rec[len(rec) - info[3] :]))
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

    note = {"msg": "nothing was changed"}
    with _handled(lambda: note["msg"]):
        if (output is None) == (not replace):
            _fail(TierCacheError("give exactly one of --output DIR or --replace"))
        cfg = _config(config_path)
        path = Path(cfg.warm.path)
        if not cfg.warm.enabled or not (path / "data.mdb").exists():
            _fail(TierCacheError(f"no warm store at {path}"))
        target = (
            output if output is not None else path.with_name(f"{path.name}.compact-{os.getpid()}")
        )
        note["msg"] = f"the store is unchanged; remove the partial copy {target}"
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
        note["msg"] = (
            f"stopped while swapping the copy in: the store is {path} or {old}, the copy "
            f"{target} or {path}; check them before serving (files other than data.mdb "
            f"and lock.mdb left in {old} belong in {path})"
        )
        os.rename(path, old)
        os.rename(target, path)
        for extra in old.iterdir():  # keep what is not LMDB's (e.g. precompute progress)
            if extra.name not in ("data.mdb", "lock.mdb") and not (path / extra.name).exists():
                os.rename(extra, path / extra.name)
        shutil.rmtree(old)
        click.echo(f"compacted {path} in place, {entries} entries: {saved}")


def _open_store(path: Path, cfg: TierCacheConfig) -> Any:
    """The warm store at ``path`` opened for inspection: any fingerprint, nothing
    registered in its manifest (``on_fingerprint_mismatch="inspect"``), a store that may
    be damaged checked in a child first and reported, not moved (``on_damage="report"``)."""
    from .keys import Fingerprint
    from .tiers.lmdb import LmdbTier

    return LmdbTier(
        path,
        fingerprint=Fingerprint(model="", dim=0),
        namespace=cfg.warm.namespace,
        durability=cfg.warm.durability,
        on_fingerprint_mismatch="inspect",
        on_damage="report",  # a damaged store is reported, never moved aside by a tool
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
    auth_key, auth_key_previous = sc.auth_keys()
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
        auth_key=auth_key,
        auth_key_previous=auth_key_previous,
    )
    out: dict[str, Any] = {
        "target": target,
        "key_prefix": sc.key_prefix,
        "auth": tier.describe()["auth"],
    }
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
