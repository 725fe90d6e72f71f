"""A running service switches to a fresh warm store after damage met at run time.

The processes sharing a warm store share one page, ``<store>/inval.seq``
(:mod:`tiercache.seqword`), and this module gives it two more words:

* offset 8, the **damage flag**: a process whose read or write met a damaged page sets it
  (and bumps the invalidation word at offset 0 to wake the others); every process that sees
  it stops using the store (``LmdbTier._seal``);
* offset 16, the **store generation**: raised once a report of damage is settled. A
  process that sees it move follows: if ``data.mdb`` is still the file it has open (a false
  alarm), it resumes on it; else it lets go of its handle on the old files and opens the
  new store (``LmdbTier._follow``).

Settling a report (:func:`resolve`, on a thread of its own in every process that set the
store aside, :func:`start_check`; the first to take :func:`guard.open_lock` does the work,
the others find the generation moved and do nothing; a failed one is tried again,
:func:`retry_check`): the page walk runs in a child process
(:func:`guard.check_in_child_full`). If it finds the store **intact**, the suspicion is
forgotten, the invalidation log's counter is raised by one without an entry (so every
process, finding a gap in the log, empties its hot tier: the safe reading of whatever was
refused while the store was set aside) and the generation moves. If it finds **damage**,
``data.mdb`` and ``lock.mdb`` move to ``<store>/quarantine/<UTC time>/`` (``inval.seq``
stays: it is the channel every process maps), an empty store is created with the entries
of ``meta`` the walk could read (the format, the manifest's fingerprints, the fleet
identity and offsets, :data:`guard.KEPT_META`) and an invalidation log whose counter starts
:data:`SEQ_GAP` above the invalidation word (every process's next catch-up finds a gap and
empties its hot tier, as after a log overflow, and a late commit into the old files cannot
raise the word past the new log); then the flag is cleared, the generation moves and the
word is raised to the new counter, which wakes every process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lmdb
import msgpack

from ..seqword import map_word, new_gate
from . import guard
from .lmdb_env import _META, _READABLE_FORMATS, _Env
from .lmdb_log import _IV_SEQ, LOG_ENTRIES, _log_last

if TYPE_CHECKING:
    from .lmdb import LmdbTier

log = logging.getLogger("tiercache")

FLAG_AT = 8
"""Offset in ``inval.seq`` of the damage flag (native u64; non-zero: set aside)."""
GEN_AT = 16
"""Offset in ``inval.seq`` of the store generation (native u64)."""
SEQ_GAP = LOG_ENTRIES
"""A fresh store's invalidation log starts this far above the invalidation word."""
QUARANTINED_FILES = ("data.mdb", "lock.mdb")
RETRY_AFTER = 10.0
"""Seconds after a failed check (an error moving or creating the files, logged) before a
process that set the store aside tries again."""


def flag(buf: Any) -> int:
    value: int = struct.unpack_from("=Q", buf, FLAG_AT)[0]
    return value


def generation(buf: Any) -> int:
    value: int = struct.unpack_from("=Q", buf, GEN_AT)[0]
    return value


def raise_flag(buf: Any) -> None:
    struct.pack_into("=Q", buf, FLAG_AT, 1)


def data_ino(path: str) -> int | None:
    """The inode of ``<path>/data.mdb`` (None if there is none): which files are current."""
    try:
        return os.stat(os.path.join(path, "data.mdb")).st_ino
    except OSError:
        return None


def resolve(
    path: str,
    gen: int,
    why: str,
    *,
    map_size: int,
    resume_log: Callable[[int], bool],
    switched: Callable[[str], None],
) -> str:
    """Settle a report of damage made at generation ``gen`` (see the module docstring).

    ``resume_log(n)``: raise the log counter of the (intact) store to ``n`` through the
    caller's own handle; False when it has none (the store then resumes without the hot
    tiers being emptied). ``switched(folder)``: told where the damaged files went.
    Returns what happened: ``"resumed"``, ``"switched"``, ``"followed"`` (settled by
    another process) or ``"failed"`` (logged; the store stays set aside)."""
    word = map_word(path)
    gate = new_gate(word)
    try:
        with guard.open_lock(path):
            if generation(word) != gen or not flag(word):
                return "followed"
            report: dict[str, Any] = {"log_seq": 0, "meta": {}}
            if data_ino(path) is None:  # nothing to check: a fresh store is needed
                intact, found = False, "data.mdb is gone"
            else:
                intact, found, report = guard.check_in_child_full(path)
            resumed = False
            if intact:
                seq = max(gate.word, report["log_seq"]) + 1
                try:
                    resumed = resume_log(seq)
                except lmdb.Error as exc:  # damage the walk did not see, met by the write
                    intact, found = False, f"{found}; raising its log counter failed: {exc}"
            if intact:
                guard.cleared(path)
                _settle(word, gate, seq if resumed else 0)
                log.warning(
                    "tiercache: warm store %s was reported damaged (%s) but the page walk "
                    "found it intact (%s); every process resumes on it",
                    path,
                    why,
                    found,
                )
                return "resumed"
            if data_ino(path) is not None:  # (gone: moved by an earlier, failed try)
                switched(guard.quarantine(path, f"{why}; {found}", files=QUARANTINED_FILES))
            base = max(gate.word, report["log_seq"]) + SEQ_GAP
            _seed(path, map_size, report["meta"], base)
            _settle(word, gate, base)
            return "switched"
    except Exception:
        log.exception("tiercache: settling the damage of warm store %s failed", path)
        return "failed"
    finally:
        gate.release()
        with contextlib.suppress(BufferError):
            word.close()


# -- the tier's side: run on a thread of its own by each process that set a store aside


def start_check(tier: LmdbTier, gen: int, why: str) -> None:
    """Settle a report of damage made at generation ``gen`` off the caller's thread
    (one check at a time per tier)."""
    if tier._resolver is not None and tier._resolver.is_alive():
        return
    tier._resolver = threading.Thread(
        target=_check, args=(tier, gen, why), name="tiercache-warm-check", daemon=True
    )
    tier._resolver.start()


def _check(tier: LmdbTier, gen: int, why: str) -> None:
    outcome = resolve(
        tier.path,
        gen,
        why,
        map_size=tier._map_size,
        resume_log=lambda seq: _resume_log(tier, seq),
        switched=tier.quarantined.append,
    )
    if outcome == "failed":  # logged; tried again by a later poll (retry_check)
        tier._retry_at = time.monotonic() + RETRY_AFTER
    tier.poll_damage()  # follow at once


def retry_check(tier: LmdbTier) -> None:
    """The tier is set aside and its last check failed (an error moving or creating
    files): check again once :data:`RETRY_AFTER` seconds passed, if still reported."""
    h = tier._sealed_handle
    if (
        tier._retry_at
        and time.monotonic() >= tier._retry_at
        and tier.sealed is not None
        and h is not None
        and flag(h.seqmap)
        and not (tier._resolver is not None and tier._resolver.is_alive())
    ):
        tier._retry_at = 0.0
        start_check(tier, tier._gen, tier.sealed)


def _resume_log(tier: LmdbTier, seq: int) -> bool:
    """Raise the log's counter to ``seq`` in the store found intact, through the tier's
    handle; False when it has none on those files."""
    h = tier._sealed_handle or tier._handle
    if h is None or h.replaced or h.ino != data_ino(tier.path):
        return False
    raise_log(h, seq, seq)
    return True


def raise_log(h: _Env, seq: int, floor: int) -> bool:
    """Set the invalidation log's counter of ``h``'s store to ``seq`` (no entry) if it is
    below ``floor``, in one write transaction; whether it was. Not published: the caller
    publishes when the others may see it (after the generation moved, in :func:`resolve`).
    LMDB errors propagate (the transaction is aborted)."""
    with h.write_lock, h.env.begin(write=True) as txn:
        if _log_last(txn, h) >= floor:
            return False
        txn.put(_IV_SEQ, seq.to_bytes(8, "big"), db=h.meta)
        return True


def _settle(word: Any, gate: Any, seq: int) -> None:
    """Clear the flag, move the generation, then raise the invalidation word to ``seq``
    (0: leave it): a process woken by the word finds the generation moved."""
    struct.pack_into("=Q", word, FLAG_AT, 0)
    struct.pack_into("=Q", word, GEN_AT, generation(word) + 1)
    if seq:
        gate.publish(seq)


def _seed(path: str, map_size: int, meta: dict[bytes, bytes], log_seq: int) -> None:
    """Create the fresh store at ``path``: the kept ``meta`` entries that still make sense
    (a readable format, fingerprint lists), and the log counter ``log_seq``."""
    env = lmdb.open(path, map_size=map_size, subdir=True, max_dbs=8, mode=0o600, lock=True)
    try:
        with env.begin(write=True) as txn:
            db = env.open_db(_META, txn=txn)
            for key, value in meta.items():
                if key == b"format" and value not in _READABLE_FORMATS:
                    continue
                if key.startswith(b"ns:") and not _fingerprints(value):
                    continue
                txn.put(key, value, db=db)
            txn.put(_IV_SEQ, log_seq.to_bytes(8, "big"), db=db)
    finally:
        env.close()


def _fingerprints(raw: bytes) -> bool:
    try:
        known = msgpack.unpackb(raw, raw=False)
    except Exception:
        return False
    return isinstance(known, list) and all(isinstance(f, dict) for f in known)


__all__ = [
    "FLAG_AT",
    "GEN_AT",
    "SEQ_GAP",
    "data_ino",
    "flag",
    "generation",
    "resolve",
    "retry_check",
    "start_check",
]
