"""The invalidation log inside a warm store (``meta`` sub-database).

tiercache/invalidation.py writes and reads its entries; the tier keeps them opaque. These
helpers run inside a transaction the tier opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lmdb

if TYPE_CHECKING:
    from .lmdb_env import _Env

# The invalidation log (tiercache/invalidation.py writes and reads its entries; the tier
# keeps them opaque): the last sequence number, and entry n under _IV_LOG + n (u64 BE).
_IV_SEQ = b"iv#"
_IV_LOG = b"iv:"
_IV_HOST = b"iv#host"  # this store's identity in a fleet
_IV_META = b"iv@"  # + name: the fleet channel's offsets and epoch
LOG_ENTRIES = 4096
"""Invalidation log entries a warm store keeps (the oldest is dropped by the next)."""


# py-lmdb parses keyword arguments slowly (a get with ``db=`` costs 0.55 us, positional
# 0.18): the calls every write makes pass them by position.


def _log_last(txn: lmdb.Transaction, h: _Env) -> int:
    raw = txn.get(_IV_SEQ, None, h.meta)
    return int.from_bytes(raw, "big") if raw else 0


def _log_append(txn: lmdb.Transaction, h: _Env, entry: bytes) -> int:
    """Append ``entry`` to the invalidation log (dropping the oldest beyond LOG_ENTRIES);
    its sequence number. Published by the caller after the commit."""
    seq = _log_last(txn, h) + 1
    put, meta = txn.put, h.meta
    put(_IV_SEQ, seq.to_bytes(8, "big"), True, True, False, meta)
    put(_IV_LOG + seq.to_bytes(8, "big"), entry, True, True, False, meta)
    if seq > LOG_ENTRIES:
        txn.delete(_IV_LOG + (seq - LOG_ENTRIES).to_bytes(8, "big"), db=h.meta)
    return seq


def _log_since(
    txn: lmdb.Transaction, h: _Env, after: int
) -> tuple[int, list[tuple[int, bytes]] | None]:
    last = _log_last(txn, h)
    if last <= after:
        return last, []
    if last - after > LOG_ENTRIES - 1 or after < 0:
        return last, None
    out: list[tuple[int, bytes]] = []
    cur = txn.cursor(db=h.meta)
    if cur.set_key(_IV_LOG + (after + 1).to_bytes(8, "big")):
        for k, v in cur:
            if k[:3] != _IV_LOG:
                break
            out.append((int.from_bytes(k[3:], "big"), bytes(v)))
    if len(out) != last - after:  # a gap: an entry is no longer kept
        return last, None
    return last, out


__all__ = ["LOG_ENTRIES"]
