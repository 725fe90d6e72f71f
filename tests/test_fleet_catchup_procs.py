"""A host's own writes made during a Redis outage, read back while it catches up, with
real separate processes (the fix of cd049fb; tests/test_fleet.py has the one-process
test): two hosts (separate warm directories, one worker process each, see
tests/inval_worker.py) with a fleet channel on one real redis-server, which is killed
and restarted empty on the same port.

Back in contact, a host serves no local copy until it has caught up; the writes it
queued during the outage must reach Redis before it stops serving its local copies, or
its own ``set`` is readable from nowhere meanwhile. That window lasts as long as the
queued writes take to go out: a relay between the hosts and the server holds those
writes (and only those) for ``HOLD`` seconds, as a slow link would, so that the window
is wide enough to be met by every run rather than by chance."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.test_fleet import shared_sections
from tests.test_invalidation_procs import Worker, vec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HOLD = 0.4  # seconds a queued record's write is held on its way to Redis
TIMEOUT = 2.0  # the hosts' Redis timeout: the held write must not time out
DEADLINE = 10.0


class SlowRelay:
    """A TCP relay on loopback in front of a redis-server. Bytes pass through as they
    come, except a chunk a client sends that writes (``SET``) one of :attr:`keys`: it is
    held :data:`HOLD` seconds first (``held`` counts them). A client connecting while the
    server is down is disconnected at once, as the server's absence would."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.keys: list[bytes] = []
        self.held = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listen = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listen.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listen.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=1.0)
            except OSError:  # the server is down
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if from_client and b"\r\nSET\r\n" in data and any(k in data for k in self.keys):
                    with self._lock:
                        self.held += 1
                    time.sleep(HOLD)
                dst.sendall(data)
        except OSError:
            pass
        finally:  # one side gone: so is the other (a killed server drops its clients)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listen.close()
        with self._lock:
            for s in self._socks:
                s.close()


def fleet(w: Worker) -> dict[str, Any]:
    out: dict[str, Any] = w("stats")["invalidation"]["fleet"]
    return out


def wait_for(what: str, ok: Any) -> None:
    deadline = time.monotonic() + DEADLINE
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_hosts_outage_writes_are_read_back_by_it_while_it_catches_up_and_reach_the_other(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()  # no persistence: restarted empty
    relay = SlowRelay(server.port)
    sections = shared_sections(relay.url, timeout=TIMEOUT, backoff_initial=0.05, backoff_max=0.2)
    a = b = None
    try:
        a = Worker(tmp_path / "a", **sections)
        b = Worker(tmp_path / "b", **sections)
        a.ready()
        b.ready()
        wait_for("both hosts connected", lambda: fleet(a)["connected"] and fleet(b)["connected"])
        a("set", text="before", vec=vec(1.0))
        wait_for("b to read a's write", lambda: b("get", texts=["before"]) == [vec(1.0)])

        server.stop()
        wait_for("both hosts to see the outage", lambda: not fleet(a)["connected"])
        wait_for("both hosts to see the outage", lambda: not fleet(b)["connected"])
        texts = [f"m{i}" for i in range(4)]
        want = {t: vec(20.0 + i) for i, t in enumerate(texts)}
        for t in texts:  # committed locally, the Redis write queued
            relay.keys.append(b"fleet:" + a("set", text=t, vec=want[t]).encode())
        assert fleet(a)["queued"] >= 1
        assert a("get", texts=texts) == [want[t] for t in texts]  # read back in the outage

        server.start()  # on the same port, empty: a's records reach it only by its queue
        t0 = time.monotonic()
        reads = 0
        b_seen: set[str] = set()
        ops = ("get", "mget", "mexists")
        while True:
            op = ops[reads % len(ops)]
            got = a(op, texts=texts)
            if op == "mexists":
                assert got == [True] * len(texts), (
                    f"read {reads} (mexists) {time.monotonic() - t0:.3f} s after the restart: {got}"
                )
            else:
                assert got == [want[t] for t in texts], (
                    f"read {reads} ({op}) {time.monotonic() - t0:.3f} s after the restart: "
                    f"{got} (the held queue write went out: {relay.held})"
                )
            reads += 1
            for t, v in zip(texts, b("get", texts=texts)):
                assert v is None or v == want[t], ("b read a wrong vector", t, v)
                if v is not None:
                    b_seen.add(t)
            if reads % 20 == 0:
                st = fleet(a)
                if relay.held and st["connected"] and not st["blocked"] and not st["queued"]:
                    if len(b_seen) == len(texts):
                        break
            assert time.monotonic() - t0 < DEADLINE, (reads, relay.held, fleet(a), b_seen)
        assert relay.held >= 1  # the queued writes did go out through the slow link
        assert reads >= 50, reads  # reads ran all through the held write and the catch-up
        st = fleet(a)
        assert st["outages"] >= 1 and st["blocked_seconds"] > 0, st  # it did catch up
        # after catch-up: a's writes everywhere, by every read
        for w in (a, b):
            assert w("get", texts=texts) == [want[t] for t in texts]
            assert w("embed", texts=texts) == [want[t] for t in texts]
            assert w("embed_many", texts=texts) == [want[t] for t in texts]
    finally:
        for w in (a, b):
            if w is not None:
                w.close()
        relay.close()
        server.stop()
