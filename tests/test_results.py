"""ResultCache: top-k results keyed by query + filters + k, TTL, LRU bound, tags."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import FakeClock
from tiercache.errors import InvalidInputError, InvalidMetadataError, InvalidTTLError
from tiercache.results import ResultCache


def make(**kw: Any) -> tuple[ResultCache, FakeClock]:
    clock = FakeClock(0.0)
    return ResultCache(clock=clock, **kw), clock


def test_key_is_query_filters_k_and_version() -> None:
    rc, _ = make()
    hits = [{"id": "d1", "score": 0.9}, {"id": "d2", "score": 0.8}]
    rc.set("laptops", hits, filters={"brand": "x", "price": [0, 500]}, k=2)
    assert rc.get("laptops", filters={"price": [0, 500], "brand": "x"}, k=2) == hits
    assert rc.get("laptops", filters={"price": [0, 500], "brand": "x"}, k=3) is None
    assert rc.get("laptops", filters={"brand": "y", "price": [0, 500]}, k=2) is None
    assert rc.get("laptops", k=2) is None
    assert rc.key("q", {"n": 1}) != rc.key("q", {"n": "1"})  # types are kept apart
    assert rc.key("q", {"s": {1, 2}}) == rc.key("q", {"s": {2, 1}})
    assert ResultCache(version="v2").key("q") != ResultCache(version="v1").key("q")


def test_get_returns_a_copy() -> None:
    rc, _ = make()
    rc.set("q", [{"id": 1}])
    got = rc.get("q")
    got[0]["id"] = 99
    assert rc.get("q") == [{"id": 1}]


def test_ttl_lru_and_tags() -> None:
    rc, clock = make(max_entries=3, ttl=10)
    rc.set("a", 1, tags=["doc:1", "col:x"])
    rc.set("b", 2, tags=["doc:2"], ttl=100)
    rc.set("c", 3, tags=["doc:1"])
    assert rc.get("a") == 1  # a is now most recent
    rc.set("d", 4)  # evicts b (least recently used)
    assert rc.get("b") is None and len(rc) == 3
    assert rc.invalidate_tags(["doc:1"]) == 2
    assert rc.get("a") is None and rc.get("c") is None and rc.get("d") == 4
    clock.advance(11)
    assert rc.get("d") is None
    s = rc.stats()
    assert s["evictions"] == 1 and s["invalidations"] == 2 and s["expirations"] == 1
    assert s["entries"] == 0 and s["tags"] == 0


def test_get_or_compute_calls_once() -> None:
    rc, _ = make()
    calls = []

    def compute() -> list[int]:
        calls.append(1)
        return [1, 2, 3]

    assert rc.get_or_compute("q", compute, k=3) == [1, 2, 3]
    assert rc.get_or_compute("q", compute, k=3) == [1, 2, 3]
    assert len(calls) == 1


@pytest.mark.parametrize("bad", [{1, 2}, object(), lambda: 1])
def test_non_plain_results_are_refused(bad: Any) -> None:
    rc, _ = make()
    with pytest.raises(InvalidMetadataError):
        rc.set("q", bad)
    assert len(rc) == 0


def test_bad_arguments_are_typed() -> None:
    for ttl in (0, -1, float("nan"), "10", True):
        with pytest.raises(InvalidTTLError):
            ResultCache(ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        ResultCache(max_entries=0)
    rc, _ = make()
    with pytest.raises(InvalidInputError):
        rc.set("q", 1, tags=[1])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        rc.get(object())


def test_threads() -> None:
    rc = ResultCache(max_entries=50)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(2000):
                rc.set(f"q{i % 80}", [t, i], tags=[f"t{i % 5}"])
                got = rc.get(f"q{(i * 7) % 80}")
                assert got is None or (isinstance(got, list) and len(got) == 2)
                if i % 100 == 0:
                    rc.invalidate_tags([f"t{i % 5}"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and len(rc) <= 50
