"""Security properties that are cheap to check on every run."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tiercache"
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal"}


def test_no_pickle_anywhere_in_the_package() -> None:
    """Records are raw numbers + msgpack; a cache directory is untrusted input."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
                names = [getattr(a, "value", "") for a in node.args[:1]]
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n in FORBIDDEN_MODULES]
    assert not offenders, offenders
    assert any(PACKAGE.rglob("*.py"))


def test_msgpack_blobs_never_run_code() -> None:
    """Metadata decoding uses msgpack without ext hooks: bytes in, plain data out."""
    import msgpack

    from tiercache.codec import unpack_blob

    evil = msgpack.packb({"m": msgpack.ExtType(42, b"payload")}, use_bin_type=True)
    out = unpack_blob(evil)
    assert isinstance(out["m"], msgpack.ExtType)  # inert data, never a constructed object
