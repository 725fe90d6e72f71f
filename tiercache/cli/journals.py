"""Resume state of ``warm`` and ``migrate``: one small JSON file per input under the
store's ``precompute/`` folder, replaced atomically after each committed batch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
