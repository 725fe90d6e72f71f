"""A stored record is bound to its key: a valid record copied or misfiled under another
key is a counted corrupt miss on every read path, never that key's vector (issue #20).

Records written before the binding (format version 1) are still served, so that an
upgrade loses no vector given to ``set`` (it cannot be recomputed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiercache import TierCache, codec

from .conftest import DIM, CountingEncoder, make_config
from .test_codec import _legacy

ALPHA = np.linspace(-1.0, 1.0, DIM, dtype=np.float32)


def _reads(c: TierCache, text: str) -> dict[str, Any]:
    """What every public read returns for ``text`` (vectors as arrays, entries' vectors)."""
    got: dict[str, Any] = {}
    e = c.get(text)
    got["get"] = None if e is None else e.vector
    m = c.mget([text, "filler"])[0]
    got["mget"] = None if m is None else m.vector
    got["exists"] = c.exists(text)
    got["mexists"] = c.mexists([text, "filler"])[0]
    k = c.get_by_key(c.key(text))
    got["get_by_key"] = None if k is None else k.vector
    got["embed"] = c.embed(text)
    got["embed_many"] = c.embed_many([text, "filler"])[0]
    return got


@pytest.mark.parametrize("with_metadata", [False, True], ids=["packed", "plain"])
@pytest.mark.parametrize("compiled", [True, False], ids=["c-reader", "python"])
def test_a_record_copied_under_another_key_is_never_served(
    tmp_path: Path, with_metadata: bool, compiled: bool
) -> None:
    cfg = make_config(tmp_path)
    meta = {"src": "doc"} if with_metadata else None  # a blob: the record is stored plain
    with TierCache(cfg, encoder=CountingEncoder()) as c:
        c.set("alpha", ALPHA, metadata=meta)
        c.embed("beta")  # beta's own record, then overwritten below by alpha's bytes
        warm = c._warm
        assert warm is not None
        ka, kb = bytes.fromhex(c.key("alpha")), bytes.fromhex(c.key("beta"))
        rec_a = warm.get_many([ka])[0]
        assert rec_a is not None and codec.decode_record(rec_a, DIM, ka) is not None
        warm.put_many([(kb, rec_a)])  # a valid record, misfiled: its checksum is alpha's
        assert warm.get_many([kb]) == [rec_a]
    enc = CountingEncoder()
    with TierCache(cfg, encoder=enc) as c:  # an empty hot tier: every read goes to warm
        if not compiled:
            c._warm_reader = None
        beta = enc.encode(["beta"])[0]
        got = _reads(c, "beta")
        for name in ("get", "mget", "get_by_key"):
            assert got[name] is None, name  # never alpha's vector
        assert not got["exists"] and not got["mexists"]
        np.testing.assert_array_equal(got["embed"], beta)  # recomputed, never alpha's
        np.testing.assert_array_equal(got["embed_many"], beta)
        assert c.stats()["tiers"]["warm"]["corrupt"] >= 1
        e = c.get("alpha")  # alpha's own record is intact
        assert e is not None and np.array_equal(e.vector, ALPHA)


@pytest.mark.parametrize("with_metadata", [False, True], ids=["packed", "plain"])
@pytest.mark.parametrize("compiled", [True, False], ids=["c-reader", "python"])
def test_records_written_before_the_binding_are_still_served(
    tmp_path: Path, with_metadata: bool, compiled: bool
) -> None:
    """An upgrade keeps the vectors that callers set (they cannot be recomputed)."""
    cfg = make_config(tmp_path)
    meta = {"src": "doc"} if with_metadata else None
    with TierCache(cfg, encoder=CountingEncoder()) as c:
        c.set("alpha", ALPHA, metadata=meta)
        warm = c._warm
        assert warm is not None
        ka = bytes.fromhex(c.key("alpha"))
        rec = warm.get_many([ka])[0]
        assert rec is not None and rec[4] == codec.FORMAT_VERSION
        warm.put_many([(ka, _legacy(rec))])
    enc = CountingEncoder()
    with TierCache(cfg, encoder=enc) as c:
        if not compiled:
            c._warm_reader = None
        got = _reads(c, "alpha")
        for name in ("get", "mget", "get_by_key", "embed", "embed_many"):
            np.testing.assert_array_equal(got[name], ALPHA, err_msg=name)
        assert got["exists"] and got["mexists"] and enc.texts == 1  # only "filler" encoded
        e = c.get("alpha")
        assert e is not None and e.metadata == meta
        assert c.stats()["tiers"]["warm"]["corrupt"] == 0
