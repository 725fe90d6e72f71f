"""Invalidation by tag and by document id, across hot, warm (and reopen)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import DIM, CountingEncoder, make_config
from tiercache import TierCache
from tiercache.errors import InvalidMetadataError


def vec(i: float) -> np.ndarray:
    return np.full(DIM, i, dtype=np.float32)


def test_invalidate_tags_drops_every_tagged_entry_from_every_tier(tmp_path: Path) -> None:
    with TierCache(make_config(tmp_path), encoder=CountingEncoder()) as c:
        c.set("a", vec(1), tags=["col:x", "lang:en"])
        c.set("b", vec(2), tags=["col:x"])
        c.set("c", vec(3), tags=["col:y"])
        c.mset([("d", vec(4)), ("e", vec(5))], tags=["batch:1"])
        c.embed("untagged")
        assert c.tagged("col:x") == sorted([c.key("a"), c.key("b")])
        assert c.invalidate_tags(["col:x"]) == 2
        assert c.mexists(["a", "b", "c", "d", "e", "untagged"]) == [
            False,
            False,
            True,
            True,
            True,
            True,
        ]
        assert c.invalidate_tags(["lang:en", "nothing"]) == 0  # a is gone already
        assert c.invalidate_tags(["batch:1"]) == 2
        s = c.stats()["tiers"]
        assert s["warm"]["evictions"]["invalidated"] == 4
        assert s["hot"]["evictions"]["invalidated"] >= 1
        assert c.tagged("col:x") == []


def test_doc_ids_survive_reopen_and_str_int_ids_differ(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    with TierCache(cfg, encoder=CountingEncoder()) as c:
        c.set("chunk 1 of doc 7", vec(1), doc_id=7)
        c.set("chunk 2 of doc 7", vec(2), doc_id=7)
        c.set("chunk of doc '7'", vec(3), doc_id="7")
        c.mset([{"content": "other", "vector": vec(4), "doc_id": "8"}])
    enc = CountingEncoder()
    with TierCache(cfg, encoder=enc) as c:
        assert c.drop_ids([7]) == 2
        assert c.mexists(["chunk 1 of doc 7", "chunk 2 of doc 7", "chunk of doc '7'", "other"]) == [
            False,
            False,
            True,
            True,
        ]
        c.embed("chunk 1 of doc 7")  # recomputed: the stale vector is gone
        assert enc.texts == 1
        assert c.drop_ids(["7", "8"]) == 2


def test_tags_without_a_warm_tier(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, warm={"enabled": False})
    with TierCache(cfg, encoder=CountingEncoder()) as c:
        c.set("a", vec(1), tags=["t"])
        c.set("b", vec(2), tags=["t"])
        assert c.invalidate_tags(["t"]) == 2 and c.mexists(["a", "b"]) == [False, False]


def test_clear_forgets_tags(tmp_path: Path) -> None:
    with TierCache(make_config(tmp_path), encoder=CountingEncoder()) as c:
        c.set("a", vec(1), tags=["t"])
        c.clear()
        assert c.tagged("t") == []
        c.set("a", vec(1))
        assert c.invalidate_tags(["t"]) == 0 and c.exists("a")


@pytest.mark.parametrize("tags", ["one string", [""], ["nul\0"], [1], ["x" * 201]])
def test_bad_tags_are_typed_and_store_nothing(tmp_path: Path, tags: Any) -> None:
    with TierCache(make_config(tmp_path), encoder=CountingEncoder()) as c:
        with pytest.raises(InvalidMetadataError):
            c.set("a", vec(1), tags=tags)
        with pytest.raises(InvalidMetadataError):
            c.set("a", vec(1), doc_id=1.5)
        assert not c.exists("a")


def test_precompute_registers_ids_even_for_stored_texts(tmp_path: Path) -> None:
    with TierCache(make_config(tmp_path), encoder=CountingEncoder()) as c:
        c.embed("shared sentence")
        counts = c.precompute(["shared sentence", "new sentence"], doc_ids=["d1", "d1"])
        assert counts == {"present": 1, "shared": 0, "encoded": 1}
        assert c.drop_ids(["d1"]) == 2


def test_document_events_and_attached_result_caches(tmp_path: Path) -> None:
    from tiercache.results import ResultCache

    with TierCache(make_config(tmp_path), encoder=CountingEncoder()) as c:
        rc = ResultCache()
        c.attach(rc)
        c.set("chunk of 7", vec(1), doc_id=7, tags=["col:news"])
        c.set("chunk of 8", vec(2), doc_id=8)
        rc.set("q1", [7, 8], doc_ids=[7, 8])
        rc.set("q2", [8], doc_ids=[8])
        rc.set("q3", ["x"], tags=["col:news"])
        assert c.document_event("updated", 7) == 1
        assert c.mexists(["chunk of 7", "chunk of 8"]) == [False, True]
        assert rc.get("q1") is None and rc.get("q2") == [8] and rc.get("q3") == ["x"]
        # a new document in a collection: no vector yet, results of the collection go,
        # and the collection's vectors stay
        c.set("another chunk of the news", vec(3), tags=["col:news"])
        assert c.document_event("created", 9, tags=["col:news"]) == 0
        assert rc.get("q3") is None and rc.get("q2") == [8]
        assert c.exists("another chunk of the news")
        assert c.document_event("deleted", 8) == 1
        assert rc.get("q2") is None and len(rc) == 0
        with pytest.raises(InvalidMetadataError):
            c.document_event("renamed", 1)
        assert rc.drop_ids([1]) == 0


def test_cli_invalidate(tmp_path: Path) -> None:
    import json as _json

    from click.testing import CliRunner

    from tiercache.cli import main

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(
        f"encoder: {{kind: hash, dim: 16}}\nwarm: {{path: '{tmp_path / 'w'}', durability: fast}}\n"
    )
    from tiercache.config import load_config

    with TierCache(load_config(cfg_path)) as c:
        c.set("a", vec(1), doc_id=1)
        c.set("b", vec(2), tags=["t"])
        c.set("c", vec(3))
    r = CliRunner().invoke(
        main, ["invalidate", "-c", str(cfg_path), "--event", "deleted", "--id", "1", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert _json.loads(r.output)["removed"] == 1
    r = CliRunner().invoke(main, ["invalidate", "-c", str(cfg_path), "--tag", "t", "--text", "c"])
    assert r.exit_code == 0 and "invalidated 2 vector(s) in this host" in r.output, r.output
    with TierCache(load_config(cfg_path)) as c:
        assert c.mexists(["a", "b", "c"]) == [False, False, False]
    r = CliRunner().invoke(main, ["invalidate", "-c", str(cfg_path)])
    assert r.exit_code == 2 and "say what to invalidate" in r.output


def test_log_entries_are_the_bytes_msgpack_writes() -> None:
    """``pack_entry`` (a per-thread packer, and a short path for a set's or a drop's
    entry) writes what ``msgpack.packb`` writes for the same body, for every key count
    (bin8, bin16 and bin32 lengths) and field mix."""
    import msgpack

    from tiercache.invalidation import pack_entry, unpack_entry

    origin = os.urandom(8)
    for n in (0, 1, 15, 16, 4095, 4097):
        keys = [os.urandom(16) for _ in range(n)]
        for kw in (
            {},
            {"event": "set"},
            {"event": "drop", "tags": ["a", "b"]},
            {"clear": True, "event": "clear"},
            {"shared_pending": True},
            {"records": [(os.urandom(16), b"rec", None), (os.urandom(16), b"r2", 5)]},
        ):
            body: dict[str, object] = {"o": origin, "k": b"".join(keys)}
            if kw.get("shared_pending"):
                body["s"] = True
            if kw.get("records"):
                body["r"] = [[k, r, -1 if t is None else t] for k, r, t in kw["records"]]
            if kw.get("tags"):
                body["t"] = kw["tags"]
            if kw.get("clear"):
                body["c"] = True
            if kw.get("event"):
                body["e"] = kw["event"]
            raw = pack_entry(origin, keys, **kw)  # type: ignore[arg-type]
            assert raw == msgpack.packb(body, use_bin_type=True)
            assert unpack_entry(raw)["k"] == b"".join(keys)


def test_an_own_set_applied_from_its_keys_is_the_entry_applied(tmp_path: Path) -> None:
    """``Invalidation.own(seq, entry, set_keys)`` (a set's own entry, not unpacked) leaves
    the state applying the packed entry leaves: the same keys touched at the same number,
    the same counters, hot copies kept."""
    states = []
    for fast in (False, True):
        with TierCache(make_config(tmp_path / str(fast)), encoder=CountingEncoder()) as c:
            inval = c._write.inval
            c.set("a", vec(1))  # in hot: an own set keeps it there
            keys = [c._ctx.keys.digest(t) for t in ("a", "b")]
            entry = inval.entry(keys, event="set")
            assert entry is not None
            seq = inval.applied + 1  # as if committed next
            inval.own(seq, entry, keys if fast else None)
            states.append(
                (
                    inval.applied,
                    inval.applied_entries,
                    inval.removed,
                    dict(inval._recent),
                    inval._floor,
                    c._hot.slot("a") is not None,
                    inval.touched(keys[0], seq - 1),
                    inval.touched(keys[0], seq),
                )
            )
    assert states[0] == states[1]
    assert states[1][5] and states[1][6] and not states[1][7]
