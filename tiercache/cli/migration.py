"""``tiercache migrate``: re-embed every stored text with another model or model version,
resumable, the old store serving meanwhile."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from ..config import TierCacheConfig, load_config
from ..errors import TierCacheError
from .common import _config, _handled, _minus_load, _model_bars, _show_progress
from .journals import _MigrateJournal
from .store import _open_store


@click.command()
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
    from ..cache import TierCache

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

    from ..encoders import encoder_from_config

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


def _text_and_meta(buf: Any, start: int, end: int, _: None, key: bytes) -> tuple[Any, Any]:
    """(text, metadata) of the verified record of ``key`` at ``buf[start:end]``; (None,
    None) when it keeps no text."""
    from .. import codec

    rec = memoryview(buf)[start:end]
    info = codec.describe_record(rec, key)
    if info is None or not info[3]:
        return None, None
    body = codec.unpack_blob(bytes(rec[len(rec) - info[3] :]))
    return body.get("t"), body.get("m")
