"""The tag index: ``tag -> key`` for :meth:`~tiercache.TierCache.invalidate_tags` and
:meth:`~tiercache.TierCache.drop_ids`.

With a warm tier the index is a companion LMDB database (``tags``) in the warm store, keyed
``tag UTF-8 + NUL + key digest`` with empty values, so every process sharing the directory
sees it and it survives restarts; without one it is a dict in this process. A document id
is the reserved tag ``id:s:<id>`` (str ids) or ``id:i:<id>`` (int ids).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import InvalidMetadataError

if TYPE_CHECKING:
    from .tiers.lmdb import LmdbTier

TAG_DB = b"tags"
MAX_TAG_BYTES = 200


def check_tags(tags: Iterable[str] | None, *, required: bool = False) -> list[str]:
    """Validated tags: non-empty str without NUL, at most ``MAX_TAG_BYTES`` UTF-8 bytes.
    None is no tags, unless ``required`` (an invalidation must name what it drops)."""
    if tags is None:
        if required:
            raise InvalidMetadataError("tags must be a list of strings, not None")
        return []
    if isinstance(tags, (str, bytes)):
        raise InvalidMetadataError("tags must be a list of strings, not one string")
    try:
        items = list(tags)
    except TypeError:
        raise InvalidMetadataError(
            f"tags must be a list of strings, not {type(tags).__name__}"
        ) from None
    out = []
    for t in items:
        if type(t) is not str or not t or "\0" in t:
            raise InvalidMetadataError(f"a tag must be a non-empty str without NUL: {t!r}")
        if len(t.encode("utf-8", "surrogatepass")) > MAX_TAG_BYTES:
            raise InvalidMetadataError(f"a tag is longer than {MAX_TAG_BYTES} bytes: {t[:40]!r}")
        out.append(t)
    return list(dict.fromkeys(out))


def id_tag(doc_id: Any) -> str:
    """The reserved tag of a document id (str or int ids; ``1`` and ``"1"`` differ)."""
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise InvalidMetadataError(f"a document id must be str or int, not {doc_id!r}")
    return f"id:{'s' if isinstance(doc_id, str) else 'i'}:{doc_id}"


class TagIndex:
    """``tag -> keys``, in the warm store when there is one, else in memory.

    ``fault(exc, message)`` raises a warm-store failure typed (the write path's
    ``raise_warm_fault``): the index's writes and removals are never silent.
    """

    def __init__(
        self,
        warm: LmdbTier | None,
        lock: threading.RLock,
        fault: Callable[[BaseException, str], NoReturn],
    ) -> None:
        self._warm = warm
        self._lock = lock
        self._fault = fault
        self._mem: dict[str, set[bytes]] = {}  # the index without a warm tier

    def add(self, pairs: list[tuple[bytes, list[str]]]) -> None:
        """Record ``tag -> key`` for each ``(key, tags)`` pair."""
        if self._warm is None:
            with self._lock:
                for k, tags in pairs:
                    for t in tags:
                        self._mem.setdefault(t, set()).add(k)
            return

        def run(txn: Any, db: Any) -> None:
            for k, tags in pairs:
                for t in tags:
                    txn.put(t.encode("utf-8") + b"\0" + k, b"", db=db)

        try:
            self._warm.in_named_db(TAG_DB, run, write=True)
        except Exception as exc:
            self._fault(exc, "the tag index could not be written, nothing stored")

    def keys(self, tags: list[str], *, remove: bool) -> set[bytes]:
        """Keys registered under any of ``tags`` (and, with ``remove``, forget them)."""
        found: set[bytes] = set()
        if self._warm is None:
            with self._lock:
                for t in tags:
                    keys = self._mem.pop(t, set()) if remove else self._mem.get(t, set())
                    found |= keys
            return found

        def run(txn: Any, db: Any) -> set[bytes]:
            out: set[bytes] = set()
            for t in tags:
                prefix = t.encode("utf-8") + b"\0"
                cur = txn.cursor(db=db)
                stale: list[bytes] = []
                if cur.set_range(prefix):
                    for key in cur.iternext(keys=True, values=False):
                        key = bytes(key)
                        if not key.startswith(prefix):
                            break
                        out.add(key[len(prefix) :])
                        stale.append(key)
                if remove:
                    for key in stale:
                        txn.delete(key, db=db)
            return out

        result: set[bytes] = self._warm.in_named_db(TAG_DB, run, write=remove)
        return result

    def clear(self) -> None:
        """Forget every tag (``TierCache.clear``)."""
        with self._lock:
            self._mem.clear()
        if self._warm is not None:
            try:
                self._warm.in_named_db(
                    TAG_DB, lambda txn, db: txn.drop(db, delete=False), write=True
                )
            except Exception as exc:
                self._fault(exc, "clear: the tag index could not be cleared")


__all__ = ["MAX_TAG_BYTES", "TAG_DB", "TagIndex", "check_tags", "id_tag"]
