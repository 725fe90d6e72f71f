"""A damaged warm store never crashes the process: detect, check in a child, quarantine.

LMDB checksums nothing in its own pages and trusts every page pointer, so a torn or
bit-flipped page can crash the process that touches it (SIGSEGV or SIGABRT, usually on the
first write after reads succeeded), and a restarted service that opens the same store
crashes again: a crash loop. Every vector in a cache can be recomputed, so tiercache checks
a store that may be damaged before it uses it, and moves a damaged one aside.

**When a store is checked.** Each process that opens a store leaves a marker
(``<store>/.tc-open/<pid>``) and removes it on a clean close; the last process to close
cleanly writes a stamp (``<store>/tiercache.clean``: size, mtime and inode of ``data.mdb``).
A store is checked on open when no live process has it open and either a marker of a dead
process is left (a crash or a kill) or the stamp is missing or does not match the file (it
was written while no tiercache process had it open: copied, restored, damaged on disk).
The check is also run by ``tiercache inspect --pages``.

**The check** (:func:`check_in_child`) runs :func:`walk` in a child process, so a crash
costs the child only: every entry of every database is read through cursors (every
branch, leaf and overflow page), then a write transaction allocates pages (so LMDB reads
its free list) and is aborted (nothing is written). A child that dies or reports an LMDB
error means the store is damaged.

**Quarantine** (:func:`quarantine`): the store's files move to
``<store>/quarantine/<UTC timestamp>/`` (kept for inspection; only the newest
:data:`KEEP_QUARANTINED` are kept), and the caller opens an empty store in their place
(the same manifest: it registers its fingerprint again). Logged once, counted
(``stats()["tiers"]["warm"]["quarantined"]``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("tiercache")

MARKERS = ".tc-open"
STAMP = "tiercache.clean"
SUSPECT = "tiercache.suspect"  # damage met at run time: check on the next open
QUARANTINE = "quarantine"
KEEP_QUARANTINED = 3
STORE_FILES = ("data.mdb", "lock.mdb", "inval.seq")
CHECK_TIMEOUT = 600.0  # seconds a page walk may take (a store of many GB, cold)


@contextlib.contextmanager
def open_lock(path: str) -> Iterator[None]:
    """Serialise the open-time check, quarantine and marker of concurrent openers."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(path, MARKERS + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _markers(path: str) -> tuple[list[int], list[int]]:
    """(live, dead) pids with a marker in ``path``."""
    live: list[int] = []
    dead: list[int] = []
    try:
        names = os.listdir(os.path.join(path, MARKERS))
    except FileNotFoundError:
        return live, dead
    for name in names:
        if name.isdigit():
            pid = int(name)
            (live if pid == os.getpid() or _alive(pid) else dead).append(pid)
    return live, dead


def _file_stamp(path: str) -> dict[str, int] | None:
    try:
        st = os.stat(os.path.join(path, "data.mdb"))
    except FileNotFoundError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def needs_check(path: str) -> str | None:
    """Why the store at ``path`` must be checked before use, or None (see the module
    docstring). A store no file of which exists yet needs nothing."""
    stamp = _file_stamp(path)
    if stamp is None:
        return None
    live, dead = _markers(path)
    if any(pid != os.getpid() for pid in live):
        return None  # in use by a running process, which checked it when it opened it
    try:
        with open(os.path.join(path, SUSPECT)) as f:
            return f"damaged pages were met while it was in use ({f.read().strip()})"
    except OSError:
        pass
    if dead:
        return f"a process using it ended without closing it (pid {dead[0]})"
    try:
        with open(os.path.join(path, STAMP)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return "it was not closed cleanly (no clean-close stamp)"
    if saved != stamp:
        return "data.mdb changed while no tiercache process had it open"
    return None


def opened(path: str) -> None:
    """Leave this process's marker; forget the markers of dead processes and the stamp
    (the store is in use from now on)."""
    d = os.path.join(path, MARKERS)
    os.makedirs(d, mode=0o700, exist_ok=True)
    _, dead = _markers(path)
    for pid in dead:
        with _quiet():
            os.unlink(os.path.join(d, str(pid)))
    os.close(os.open(os.path.join(d, str(os.getpid())), os.O_WRONLY | os.O_CREAT, 0o600))
    with _quiet():
        os.unlink(os.path.join(path, STAMP))


def suspect(path: str, why: str) -> None:
    """Damage was met at run time: the next open checks the store (and, until then, no
    clean-close stamp is written)."""
    with _quiet():
        fd = os.open(os.path.join(path, SUSPECT), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(why[:500] + "\n")


def cleared(path: str) -> None:
    """The check found the store intact: forget the suspicion."""
    with _quiet():
        os.unlink(os.path.join(path, SUSPECT))


def closed(path: str) -> None:
    """This process closed the store cleanly: remove its marker; the last one out writes
    the stamp."""
    with _quiet():
        os.unlink(os.path.join(path, MARKERS, str(os.getpid())))
    live, dead = _markers(path)
    if live or dead or os.path.exists(os.path.join(path, SUSPECT)):
        return
    stamp = _file_stamp(path)
    if stamp is None:
        return
    tmp = os.path.join(path, STAMP + ".tmp")
    with _quiet():
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stamp, f)
        os.replace(tmp, os.path.join(path, STAMP))


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, OSError)


# --------------------------------------------------------------------------- the walk


KEPT_META = ((b"format", b"iv#host"), (b"ns:", b"iv@"))
"""(Keys, prefixes) of the ``meta`` entries a fresh store inherits from the one it replaces at run
time (the format, the manifest's fingerprints, the store's fleet identity and the fleet
channel's offsets; not the packing state nor the invalidation log): the walk reports them."""
_KEPT_BYTES = 1 << 20  # at most this much of them (a damaged meta database may be anything)


def _kept(key: bytes) -> bool:
    return key in KEPT_META[0] or key.startswith(KEPT_META[1])


def walk(path: str, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read every entry of every database of the store at ``path`` and allocate pages in
    an aborted write transaction. Run it in a child (:func:`check_in_child`): on a
    damaged store LMDB may crash the process that does this.

    ``out`` (filled as the walk goes, so a caller sees what was read before an error):
    ``databases``, ``entries``, ``bytes``, ``ok``; ``meta``: the ``meta`` entries of
    :data:`KEPT_META` (hex), read first; ``log_seq``: the invalidation log's counter."""
    import lmdb

    if out is None:
        out = {}
    out.update(ok=False, databases=0, entries=0, bytes=0, meta={}, log_seq=0)
    size = os.stat(os.path.join(path, "data.mdb")).st_size
    env = lmdb.open(
        path,
        subdir=True,
        max_dbs=64,
        readonly=False,
        lock=True,
        readahead=False,
        map_size=max(size + 2**26, 2**30),  # room for the probe's pages, whatever its size
    )
    try:
        out["last_pgno"] = int(env.info()["last_pgno"])
        out["psize"] = int(env.stat()["psize"])
        if size < (out["last_pgno"] + 1) * out["psize"]:
            raise lmdb.CorruptedError(f"data.mdb is {size} bytes: truncated")
        names: list[bytes] = []
        with env.begin(buffers=True) as txn:
            for key, _ in txn.cursor():
                names.append(bytes(key))
        names.sort(key=lambda n: n != b"meta")  # the manifest first: kept if the rest fails
        kept = 0
        for name in [None, *names]:
            try:
                db = env.open_db(name, create=False) if name is not None else None
            except lmdb.Error as exc:
                raise lmdb.CorruptedError(f"database {name!r}: {exc}") from exc
            out["databases"] += 1
            with env.begin(db=db, buffers=True) as txn:
                for key, value in txn.cursor():
                    out["entries"] += 1
                    out["bytes"] += len(key) + len(value)
                    if name != b"meta":
                        continue
                    k = bytes(key)
                    if k == b"iv#" and len(value) <= 8:
                        out["log_seq"] = int.from_bytes(bytes(value), "big")
                    elif _kept(k) and kept + len(k) + len(value) <= _KEPT_BYTES:
                        kept += len(k) + len(value)
                        out["meta"][k.hex()] = bytes(value).hex()
        # a write transaction: allocate pages (LMDB reads its free list), then abort
        wtxn = env.begin(write=True)
        try:
            wtxn.put(b"tiercache-pagewalk", os.urandom(64 * 1024))
            wtxn.delete(b"tiercache-pagewalk")
        finally:
            wtxn.abort()
        out["ok"] = True
    finally:
        env.close()
    return out


def check_in_child(path: str, timeout: float = CHECK_TIMEOUT) -> tuple[bool, str]:
    """(intact?, what was found): :func:`walk` in a child process."""
    intact, found, _ = check_in_child_full(path, timeout)
    return intact, found


def _no_report() -> dict[str, Any]:
    return {"log_seq": 0, "meta": {}}


def check_in_child_full(
    path: str, timeout: float = CHECK_TIMEOUT
) -> tuple[bool, str, dict[str, Any]]:
    """:func:`check_in_child`, and the walk's report (``meta``: the entries a fresh store
    inherits, as bytes; ``log_seq``), as far as the walk got (empty if it crashed)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tiercache.tiers.guard", path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return False, f"the page walk did not finish in {timeout:.0f} s", _no_report()
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return False, f"the page walk crashed ({sig})", _no_report()
    try:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        failed = f"the page walk failed (exit {proc.returncode}): {proc.stderr[-300:]}"
        return False, failed, _no_report()
    report = _no_report()
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        report["log_seq"] = int(res.get("log_seq") or 0)
        report["meta"] = {bytes.fromhex(k): bytes.fromhex(v) for k, v in res["meta"].items()}
    if not res.get("ok") and res.get("damage"):
        return False, f"the page walk found damage: {res.get('error')}", report
    if not res.get("ok"):  # the walk could not finish for another reason: keep the store
        log.warning("tiercache: the page walk of %s did not finish: %s", path, res.get("error"))
        return True, f"not checked to the end: {res.get('error')}", report
    return True, f"{res['databases']} databases, {res['entries']:,} entries read", report


def quarantine(
    path: str, why: str, keep: int = KEEP_QUARANTINED, files: tuple[str, ...] = STORE_FILES
) -> str:
    """Move the store's ``files`` to ``<path>/quarantine/<UTC timestamp>/`` (keeping the
    newest ``keep``); returns that folder. The caller opens an empty store. (A switch at
    run time keeps ``inval.seq`` in place: every process maps it.)"""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    base = os.path.join(path, QUARANTINE)
    dest = os.path.join(base, stamp)
    os.makedirs(dest, mode=0o700, exist_ok=True)
    for name in files:
        src = os.path.join(path, name)
        if os.path.exists(src):
            os.replace(src, os.path.join(dest, name))
    fd = os.open(os.path.join(dest, "why.txt"), os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(why + "\n")
    for name in (STAMP, SUSPECT):
        with _quiet():
            os.unlink(os.path.join(path, name))
    old = sorted(os.listdir(base))
    for name in old[: max(0, len(old) - keep)]:
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    log.warning(
        "tiercache: warm store %s is damaged (%s); moved aside to %s and replaced by an "
        "empty store (its vectors are recomputed)",
        path,
        why,
        dest,
    )
    return dest


def _is_damage(exc: BaseException) -> bool:
    """Whether an error of the walk means damaged pages (not a full map, a permission, a
    busy lock table: those say nothing about the pages, and must not cost the store)."""
    from .lmdb_env import WALK_DAMAGE  # imported here: lmdb_env.py imports this module

    return isinstance(exc, WALK_DAMAGE)


def main() -> None:
    """``python -m tiercache.tiers.guard PATH``: the page walk, one JSON line."""
    res: dict[str, Any] = {}
    try:
        walk(sys.argv[1], res)
    except Exception as exc:  # an LMDB error (a crash is seen by the parent)
        res.update(ok=False, damage=_is_damage(exc), error=f"{type(exc).__name__}: {exc}")
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()


__all__ = [
    "KEEP_QUARANTINED",
    "KEPT_META",
    "check_in_child",
    "check_in_child_full",
    "cleared",
    "open_lock",
    "suspect",
    "closed",
    "needs_check",
    "opened",
    "quarantine",
    "walk",
]
