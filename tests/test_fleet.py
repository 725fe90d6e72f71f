"""Invalidation across hosts: separate warm directories (one per host, two worker
processes on one of them) sharing one real redis-server, and a 3-node Redis Cluster.

After an invalidating call returns on one host, every process of every host stops
serving the old vector within a bounded delay (measured by polling; the figures that go
in the docs come from ``bench/staleness.py``), including across a Redis restart and a
host restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_invalidation_procs import COMPUTED, Worker, vec

DEADLINE = 5.0  # generous: loopback delivery takes milliseconds


def shared_sections(url: str | None, **extra: Any) -> dict[str, Any]:
    where = {"url": url} if url else {}
    return {"shared": {**where, "key_prefix": "fleet:", "timeout": 0.5, **extra}}


@pytest.fixture
def hosts(tmp_path: Path) -> Any:
    started: list[Worker] = []

    def start(names: list[str], **sections: Any) -> list[Worker]:
        ws = [Worker(tmp_path / name, **sections) for name in names]
        started.extend(ws)
        return [w.ready() for w in ws]

    yield start
    for w in started:
        w.close()


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Any:
    """A redis-server of its own that keeps its data across a restart (appendonly, fsync
    always): the tests kill and restart it, and the invalidation stream must survive."""
    from tests.redis_server import RedisServer

    server = RedisServer(
        tmp_path / "persistent", extra=("--appendonly", "yes", "--appendfsync", "always")
    ).start()
    yield server
    server.stop()


def eventually(ws: list[Worker], text: str, want: float | None) -> float:
    """Poll every worker until each serves vec(want) for ``text`` (None: nothing stored,
    so ``get`` is None and ``embed`` recomputes); the seconds it took."""
    t0 = time.monotonic()
    pending = list(ws)
    while pending:
        w = pending[0]
        got = w("get", texts=[text])[0]
        ok = got is None if want is None else got == vec(want)
        if ok:
            emb = w("embed", texts=[text])[0]
            ok = np.allclose(emb, COMPUTED[text]) if want is None else emb == vec(want)
            if want is None:  # forget the recomputed vector again (Redis may be backing off)
                w.send("drop", texts=[text])
                w._out.readline()
        if ok:
            pending.pop(0)
            continue
        assert time.monotonic() - t0 < DEADLINE, (text, want, got, ws.index(w))
        time.sleep(0.005)
    return time.monotonic() - t0


def load(ws: list[Worker], texts: list[str]) -> None:
    for i, t in enumerate(texts):
        ws[0](
            "set",
            text=t,
            vec=vec(1.0),
            tags=["col:a"] if i < 5 else None,
            doc_id=7 if 5 <= i < 8 else None,
        )
    for w in ws:  # every host copies every vector into its own hot and warm tiers
        assert w("embed", texts=texts) == [vec(1.0)] * len(texts)


def scenario(ws: list[Worker]) -> None:
    """Overwrite, drop, tags, ids and clear, each from another host."""
    texts = [f"t{i}" for i in range(10)]
    load(ws, texts)
    ws[1]("set", text="t0", vec=vec(2.0))
    eventually(ws, "t0", 2.0)
    ws[2]("drop", texts=["t1"])
    eventually(ws, "t1", None)
    ws[-1]("invalidate_tags", tags=["col:a"])
    for t in ("t0", "t2", "t3", "t4"):
        eventually(ws, t, None)
    for w in ws:  # a search result listing document 7, in each process's ResultCache
        w("rc_set", query="q", result=[7, 1], doc_ids=[7])
    ws[0]("drop_ids", ids=[7])
    for t in ("t5", "t6", "t7"):
        eventually(ws, t, None)
    deadline = time.monotonic() + DEADLINE
    for w in ws:
        while w("rc_get", query="q") is not None:
            assert time.monotonic() < deadline, "a result listing document 7 survived"
            time.sleep(0.005)
    ws[1]("clear")
    for t in ("t8", "t9"):
        eventually(ws, t, None)


def test_invalidations_reach_every_host_and_every_process(hosts: Any, redis_server: Any) -> None:
    # host a runs two worker processes on one warm store; hosts b and c one each
    ws = hosts(["a", "b", "c", "a"], **shared_sections(redis_server.url))
    scenario(ws)
    fleet = ws[1]("stats")["invalidation"]["fleet"]
    assert fleet["connected"] and fleet["applied"] >= 5 and fleet["history_lost"] == 0


def test_invalidations_reach_every_host_on_a_cluster(hosts: Any, redis_cluster: Any) -> None:
    ws = hosts(["a", "b", "c"], **shared_sections(None, nodes=redis_cluster.addrs))
    scenario(ws)


def test_redis_restart_and_host_restart_lose_no_invalidation(
    hosts: Any, tmp_path: Path, redis_server: Any, persistent_redis: Any
) -> None:
    """Invalidations made while Redis is down are queued and delivered after it returns
    (the stream persists: appendonly); a host that was stopped while others invalidated
    catches up before it serves anything from its warm store."""
    server = persistent_redis
    try:
        sections = shared_sections(server.url, backoff_initial=0.05, backoff_max=0.2)
        a, b, c = hosts(["a", "b", "c"], **sections)
        texts = [f"t{i}" for i in range(10)]
        load([a, b, c], texts)
        server.stop()
        a.send("drop", texts=["t1"])  # Redis is down: the drop is local, the rest queued
        reply = a._out.readline()
        assert "StoreError" in reply and "queued" in reply, reply
        assert a("stats")["invalidation"]["fleet"]["queued"] >= 1
        server.start()
        eventually([a, b, c], "t1", None)
        c.close()  # host c stops; its warm store keeps t2..t9
        b("drop", texts=["t2", "t3"])
        b("set", text="t4", vec=vec(3.0))
        (c,) = hosts(["c"], **sections)  # restarted on the same warm directory
        assert c("get", texts=["t2", "t3"]) == [None, None]
        assert c("get", texts=["t4"]) == [vec(3.0)]
        assert c("get", texts=["t5"]) == [vec(1.0)]  # and nothing else was lost
    finally:
        server.stop()


def test_on_disconnect_miss_stops_serving_local_copies(
    hosts: Any, tmp_path: Path, persistent_redis: Any
) -> None:
    """``on_disconnect: miss``: once max_staleness passed without the stream, local
    copies are misses (recomputed); after Redis returns, local hits resume."""
    server = persistent_redis
    try:
        sections = shared_sections(
            server.url,
            on_disconnect="miss",
            max_staleness=0.2,
            backoff_initial=0.05,
            backoff_max=0.2,
        )
        (a,) = hosts(["a"], **sections)
        a("set", text="t5", vec=vec(1.0))
        assert a("get", texts=["t5"]) == [vec(1.0)]
        server.stop()
        deadline = time.monotonic() + DEADLINE
        while a("get", texts=["t5"]) != [None]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert np.allclose(a("embed", texts=["t5"])[0], COMPUTED["t5"])
        assert a("stats")["invalidation"]["fleet"]["blocked"]
        server.start()
        deadline = time.monotonic() + DEADLINE
        while a("stats")["invalidation"]["fleet"]["blocked"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert a("get", texts=["t5"]) == [vec(1.0)]  # the acknowledged write is still there
    finally:
        server.stop()


def test_a_drop_is_never_undone_by_a_reader_of_the_shared_tier(
    hosts: Any, redis_server: Any
) -> None:
    """Readers polling while the drop runs (one on the dropping host's store, one on
    another host) must see the drop and never fetch the old record back from Redis: the
    drop removes it from Redis before it is logged (found by bench/staleness.py)."""
    a, a2, b = hosts(["a", "a", "b"], **shared_sections(redis_server.url))
    for i in range(25):
        text = f"t{i % 10}"
        a("set", text=text, vec=vec(float(i + 1)))
        for w in (a2, b):
            assert w("embed", texts=[text]) == [vec(float(i + 1))]
            w.send("wait_gone", texts=[text], seconds=5.0)
        a("drop", texts=[text])
        seen = [a2.result(), b.result()]
        assert None not in seen, f"round {i}: a reader kept serving the dropped vector"
        for w in (a2, b):
            assert w("get", texts=[text]) == [None]


def test_churn_through_a_redis_restart_and_a_host_restart(
    hosts: Any, tmp_path: Path, persistent_redis: Any
) -> None:
    """Host a overwrites and drops texts at random while Redis is killed and restarted
    (the stream persists) and host c is stopped and restarted; afterwards every process
    of every host serves exactly a's final state (the checker reads every text from every
    process), and texts nobody touched are still there."""
    import threading

    server = persistent_redis
    try:
        sections = shared_sections(server.url, backoff_initial=0.05, backoff_max=0.2)
        a, b, c = hosts(["a", "b", "c"], **sections)
        churned = [f"t{i}" for i in range(6)]
        kept = [f"t{i}" for i in range(6, 10)]
        load([a, b, c], churned + kept)
        a.send("churn", texts=churned, n=scale_steps(), seed=11, pause=0.01)

        # Redis dies mid-churn and returns only after it: the last writes and drops of
        # some texts happen while it is away (queued, with the records Redis missed)
        chaos = threading.Timer(0.6, server.stop)
        chaos.start()
        c.close()
        time.sleep(0.3)
        (c,) = hosts(["c"], **sections)
        want = a.result()
        chaos.join()
        server.start()
        for text in churned:
            eventually([a, b, c], text, want.get(text, 1.0))
        for text in kept:
            eventually([a, b, c], text, 1.0)
        assert a("stats")["invalidation"]["fleet"]["queued"] == 0
        # a may have passed the checks above while it was still catching up (local copies
        # blocked, reads from Redis): once it serves them again, they are its final state
        deadline = time.monotonic() + DEADLINE
        while a("stats")["invalidation"]["fleet"]["blocked"]:
            assert time.monotonic() < deadline, "host a never caught up"
            time.sleep(0.02)
        for text in churned:
            eventually([a], text, want.get(text, 1.0))
    finally:
        server.stop()


def scale_steps() -> int:
    from tests import soak

    return soak.scale(120, 1200)


def test_a_created_document_drops_results_everywhere_and_no_vector(
    hosts: Any, redis_server: Any
) -> None:
    """``document_event("created", id, tags)`` on one host: every process's results that
    carry the tags go, on every host; the vectors carrying the tags stay."""
    ws = hosts(["a", "b", "a"], **shared_sections(redis_server.url))
    ws[0]("set", text="t1", vec=vec(1.0), tags=["col:z"])
    for w in ws:
        assert w("embed", texts=["t1"]) == [vec(1.0)]
        w("rc_set", query="q", result=["t1"], tags=["col:z"])
        w("rc_set", query="other", result=["t2"], tags=["col:y"])
    assert ws[1]("event", event="created", id=99, tags=["col:z"]) == 0
    deadline = time.monotonic() + DEADLINE
    for w in ws:
        while w("rc_get", query="q") is not None:
            assert time.monotonic() < deadline, "a result of the collection survived"
            time.sleep(0.005)
        assert w("rc_get", query="other") == ["t2"]
    time.sleep(0.1)  # and no vector of the collection went anywhere
    for w in ws:
        assert w("get", texts=["t1"]) == [vec(1.0)]
        inv = w("stats")["invalidation"]
        assert inv["hot_removed"] == 0, inv  # nothing was dropped from any hot tier


def _one_host(tmp_path: Path) -> tuple[Any, Any, Any]:
    """A redis-server the test owns and one host on it with a fleet channel and a fast
    backoff, in contact: ``(server, cache, fleet)``."""
    from tests.conftest import DIM, make_config
    from tests.redis_server import RedisServer
    from tiercache import TierCache
    from tiercache.encoders import HashEncoder

    server = RedisServer(tmp_path / "redis").start()
    shared = {"url": server.url, "timeout": "200ms", "backoff_initial": 0.05, "backoff_max": 0.2}
    c = TierCache(make_config(tmp_path / "a", shared=shared), encoder=HashEncoder(DIM))
    fleet = c._write.inval.fleet
    assert fleet is not None
    end = time.monotonic() + 10
    while not fleet.connected and time.monotonic() < end:
        time.sleep(0.02)
    return server, c, fleet


def test_a_write_made_during_an_outage_is_read_back_while_the_host_catches_up(
    tmp_path: Path,
) -> None:
    """A ``set`` made while Redis is down is committed locally and its Redis write queued.
    Back in contact, the host serves no local copy until it has caught up; its own queued
    writes go out before that, so a read of the key never finds it nowhere (the soak of
    2026-12-07 19:22 counted one such ``None``). The queued flush is slowed here to widen
    the window: before the fix 193 of 1,133 reads in it returned None."""
    from tests.conftest import DIM

    server, c, fleet = _one_host(tmp_path)
    try:
        deadline = time.monotonic() + 10
        server.stop()
        while fleet.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not fleet.connected
        v = np.linspace(-1, 1, DIM, dtype=np.float32)
        c.set("mine", v)  # committed locally; the Redis write is queued
        flush = fleet._flush

        def slow_flush(conn: Any) -> None:
            time.sleep(0.5)
            flush(conn)

        fleet._flush = slow_flush  # type: ignore[method-assign]
        server.start()  # empty: nothing of "mine" in Redis until the queue goes out
        reads = misses = 0
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            e = c.get("mine")
            reads += 1
            misses += e is None or not np.array_equal(e.vector, v)
            time.sleep(0.002)
        assert c.stats()["invalidation"]["fleet"]["blocked_seconds"] > 0  # it did catch up
        assert reads > 100 and misses == 0
    finally:
        c.close()
        server.stop()


def test_a_host_reads_its_own_queued_writes_while_it_catches_up(tmp_path: Path) -> None:
    """A host that is catching up (local copies blocked: every read goes to Redis) made a
    write its own Redis client could not send (backing off after the outage, while the
    listener's client is back): the record waits in the fleet queue. A read of the key
    used to ask Redis alone, and found nothing (the outage soak's rare 'get after set:
    None, blocked') or, as here, where Redis kept its data, the older vector. Reads now see
    what the queue will write, and a queued drop as a miss, never Redis's older record;
    once the queue is sent, Redis and the host agree."""
    from tests.conftest import DIM
    from tiercache.errors import StoreError
    from tiercache.tiers.redis import SharedUnavailable

    server, c, fleet = _one_host(tmp_path)
    try:
        redis = c._write._shared
        assert redis is not None
        old, new = (np.full(DIM, x, dtype=np.float32) for x in (1.0, 2.0))
        c.set("k", old)  # in Redis too
        c.set("gone", old)
        c.set("other", old)
        contact, flush = fleet._contact, fleet._flush
        fleet._contact = lambda at_end: None  # type: ignore[method-assign]
        fleet._flush = lambda conn: None  # type: ignore[method-assign]

        def unavailable(*a: Any, **kw: Any) -> Any:
            raise SharedUnavailable("shared tier backing off (test)")

        redis.put_many = unavailable  # type: ignore[method-assign]
        redis.delete_each = unavailable  # type: ignore[method-assign]
        with pytest.raises(StoreError):
            c.drop("gone")  # done here, the Redis delete queued
        c.set("k", new)  # acknowledged: committed here, its Redis write queued
        del redis.put_many, redis.delete_each
        c._read._inval.block()  # as after a reconnection: catching up, nothing local
        assert fleet.has_pending() and c._read._inval.blocked
        e = c.get("k")
        assert e is not None and np.array_equal(e.vector, new), e and e.vector[0]
        assert c.get("gone") is None and not c.exists("gone")
        by_key = c.get_by_key(c._ctx.keys.digest("k").hex())
        assert by_key is not None and np.array_equal(by_key.vector, new)
        got = c.mget(["k", "gone", "other"])
        assert got[0] is not None and np.array_equal(got[0].vector, new)
        assert got[1] is None
        assert got[2] is not None and np.array_equal(got[2].vector, old)  # Redis's
        assert c.mexists(["k", "gone", "other"]) == [True, False, True]
        rows = c.embed_many(["k", "other"])  # the queued record, not a recompute
        assert np.array_equal(rows[0], new)
        fleet._flush = flush  # type: ignore[method-assign]
        assert fleet.flush_now() and not fleet.has_pending()
        assert fleet.queued_values([c._ctx.keys.digest("k")]) == {}
        fleet._contact = contact  # type: ignore[method-assign]
        deadline = time.monotonic() + 10
        while c._read._inval.blocked and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not c._read._inval.blocked
        e = c.get("k")
        assert e is not None and np.array_equal(e.vector, new)
        assert c.get("gone") is None
        raw = redis.get(c._ctx.keys.digest("k"))
        assert raw is not None and redis.get(c._ctx.keys.digest("gone")) is None
    finally:
        c.close()
        server.stop()


def test_a_read_during_the_outage_flush_keeps_no_older_queued_record(tmp_path: Path) -> None:
    """While Redis was down a host dropped a key, then set it twice (all queued). The
    flush after Redis returns deletes the key in Redis, then writes the two records in
    order, so Redis holds the first one for a moment. It used to drop the key on this
    host again after the delete, so a read of the key here in that moment missed locally,
    found the first record in Redis and kept it; this host never applies its own events
    from the stream, so it served that older vector for good (the churn test above, under
    load: host a kept 107.0 after setting 114.0). The read is made exactly there by the
    test: it now finds this host's own last write, and so does every read after."""
    import threading

    from tests.conftest import DIM
    from tiercache.errors import StoreError

    server, c, fleet = _one_host(tmp_path)
    try:
        deadline = time.monotonic() + 10
        old, first, last = (np.full(DIM, x, dtype=np.float32) for x in (1.0, 2.0, 3.0))
        c.set("k", old)  # in Redis too
        server.stop()
        while fleet.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not fleet.connected
        with pytest.raises(StoreError, match="queued"):
            c.drop("k")
        c.set("k", first)  # committed locally, the records queued
        c.set("k", last)
        seen: list[Any] = []
        flush = fleet._flush

        def read() -> None:  # until the cache's own client is past its backoff
            end = time.monotonic() + 2.0
            while (e := c.get("k")) is None and time.monotonic() < end:
                time.sleep(0.02)
            seen.append(e)

        def read_between_the_records(conn: Any) -> None:
            put_many = conn.put_many

            def put_then_read(items: Any, **kw: Any) -> None:
                put_many(items, **kw)
                if not seen:  # Redis holds `first` now: another thread reads "k"
                    reader = threading.Thread(target=read)
                    reader.start()
                    reader.join()

            conn.put_many = put_then_read
            try:
                flush(conn)
            finally:
                del conn.put_many

        fleet._flush = read_between_the_records  # type: ignore[method-assign]
        server.start()  # empty: the flush writes what this host queued
        while (fleet._pending or fleet._inval.blocked) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not fleet._pending and not fleet._inval.blocked
        assert seen  # the read was made
        end = time.monotonic() + 1.0  # well past catch-up: the host serves `last`
        while time.monotonic() < end:
            e = c.get("k")
            assert e is not None and np.array_equal(e.vector, last), e and e.vector[0]
            time.sleep(0.01)
        assert seen[0] is not None and np.array_equal(seen[0].vector, last), seen[0]
    finally:
        c.close()
        server.stop()


def _first(v: np.ndarray | None) -> float | None:
    return None if v is None else float(v[0])


@pytest.mark.parametrize("op", ["set", "drop"])
def test_a_write_made_while_the_queue_flushes_goes_behind_it(tmp_path: Path, op: str) -> None:
    """Redis is back and this host's queue (two writes of "k" made during the outage) is
    being flushed when a thread sets or drops "k" again. That write used to go to Redis
    at once (the fleet event alone was queued), and the flush then wrote the older queued
    record over it: Redis, and every other host reading it, held "second" for good (or the
    dropped key came back). It now goes behind the queue: Redis ends with the newest vector
    (or without the key), whichever moment the thread chose, and the write is in Redis
    when the call returns (the queue is sent from the caller's thread): a read made right
    after it, with local copies blocked, must find it."""
    import threading

    from tests.conftest import DIM
    from tiercache import codec

    server, c, fleet = _one_host(tmp_path)
    try:
        assert c._write._shared is not None
        redis = c._write._shared
        key = c._ctx.keys.digest("k")

        def in_redis() -> np.ndarray | None:
            raw = redis.get(key)
            rec = codec.decode_record(raw, DIM, key) if raw is not None else None
            return None if rec is None else rec.vector

        deadline = time.monotonic() + 10
        old, first, second, newest = (
            np.full(DIM, x, dtype=np.float32) for x in (1.0, 2.0, 3.0, 4.0)
        )
        c.set("k", old)
        server.stop()
        while fleet.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not fleet.connected
        c.set("k", first)  # committed here, its record queued
        c.set("k", second)
        writer: list[threading.Thread] = []
        after: list[np.ndarray | None] = []
        flush = fleet._flush

        def write_between_the_records(conn: Any) -> None:
            put_many = conn.put_many

            def put_then_write(items: Any, **kw: Any) -> None:
                put_many(items, **kw)
                if writer:
                    return
                end = time.monotonic() + 2.0  # the cache's own client past its backoff
                while time.monotonic() < end:
                    try:
                        got = in_redis() if redis.available else None
                    except Exception:
                        got = None
                    if got is not None:
                        break
                    time.sleep(0.02)
                assert got is not None and got[0] == 2.0, got

                # Redis holds `first`; another thread writes "k" (it waits for the
                # queue's lock only to queue its event, or, now, its whole write)
                def write() -> None:
                    c.set("k", newest) if op == "set" else c.drop("k")
                    after.append(in_redis())  # in Redis once the call returned

                t = threading.Thread(target=write)
                writer.append(t)
                t.start()
                want = newest if op == "set" else None
                end = time.monotonic() + 0.5  # the old code wrote Redis at once
                while time.monotonic() < end:
                    got = in_redis()
                    if _first(got) == (None if want is None else 4.0):
                        break
                    time.sleep(0.01)

            conn.put_many = put_then_write
            try:
                flush(conn)
            finally:
                del conn.put_many

        fleet._flush = write_between_the_records  # type: ignore[method-assign]
        server.start()  # empty: the flush writes what this host queued
        while not writer and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer
        writer[0].join(10)
        while (fleet._pending or fleet._inval.blocked) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not fleet._pending
        # a read right after the call (local copies may be blocked while the host catches
        # up) finds the write in Redis: it was not left in the queue
        assert len(after) == 1
        want = 4.0 if op == "set" else None  # the newest vector's value, or no key
        assert _first(after[0]) == want, after
        assert _first(in_redis()) == want  # and so it stays
        e = c.get("k")
        assert _first(e.vector if e is not None else None) == want
    finally:
        c.close()
        server.stop()
