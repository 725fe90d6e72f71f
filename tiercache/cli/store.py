"""The warm store's tools: ``tiercache stats``, ``inspect`` (every record verified, the
page walk) and ``compact``; opening a store for inspection and describing the shared tier."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..config import TierCacheConfig
from ..errors import TierCacheError
from .common import _config, _fail, _handled


@click.command()
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


def _check_pages(path: Path, as_json: bool) -> None:
    """``inspect --pages``: the page walk in a child; exit 1 when the store is damaged."""
    from ..tiers import guard

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


@click.command()
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


def _described(buf: Any, start: int, end: int, _: None, key: bytes) -> Any:
    """``(codec.describe_record(record), len(record))`` of the record of ``key`` at
    ``buf[start:end]`` (``LmdbTier.get_many_at``'s decoder form)."""
    from .. import codec

    return codec.describe_record(memoryview(buf)[start:end], key), end - start


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


@click.command()
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
    from ..keys import Fingerprint
    from ..tiers.lmdb import LmdbTier

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

    from ..tiers.redis import RedisTier

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
