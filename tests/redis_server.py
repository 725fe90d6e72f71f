"""Real redis-server processes on loopback for the tests (standalone and a 3-node cluster).

Nothing is mocked: each server is the Debian ``redis-server`` binary, started on a free
port of 127.0.0.1 with persistence off, in a temporary directory. When the binary is
missing, tests that need it skip locally with the install command, and FAIL under CI
(``CI=true``): `make test` installs it with apt-get, so a missing server there is a bug.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

INSTALL_HINT = (
    "redis-server is not installed: run `make test` (it installs it as root with "
    "`apt-get install -y redis-server`), or install it yourself"
)


def redis_binaries() -> tuple[str, str]:
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if server is None or cli is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(INSTALL_HINT + " (CI=true: not skipping)")
        pytest.skip(INSTALL_HINT)
    return server, cli


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port P below 55536 whose cluster bus port P + 10000 is free too."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 55000)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _ping(port: int, timeout: float = 0.2, tls_ca: Path | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            s = raw
            if tls_ca is not None:
                import ssl

                ctx = ssl.create_default_context(cafile=str(tls_ca))
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def make_tls_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI): (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return cert, key


class RedisServer:
    """One redis-server on 127.0.0.1:<port>; ``stop``/``start`` keep the port."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        cluster: bool = False,
        extra: tuple[str, ...] = (),
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.server, self.cli = redis_binaries()
        self.port = port or (free_cluster_port() if cluster else free_port())
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.extra = extra
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, wait: float = 10.0) -> RedisServer:
        args = [
            self.server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        if self.tls is not None:
            cert, key = self.tls
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(cert),
                "--tls-auth-clients",
                "no",
            ]
        args += list(self.extra)
        self.log = self.dir / "redis.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _ping(self.port, tls_ca=self.tls[0] if self.tls else None):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """SIGKILL: the server dies like a crashed host."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def cli_run(self, *args: str) -> str:
        out = subprocess.run(
            [self.cli, "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout


class RedisCluster3:
    """Cluster-mode redis-servers joined with ``redis-cli --cluster create``: three
    masters, each with ``replicas`` replicas (0: three nodes)."""

    def __init__(self, workdir: Path, replicas: int = 0) -> None:
        self.replicas = replicas
        self.nodes = [RedisServer(workdir, cluster=True) for _ in range(3 * (1 + replicas))]

    def _replicas_synced(self) -> bool:
        """Every replica has completed its first sync (a replica that never synced may
        not take over: ``cluster-replica-validity-factor``)."""
        for n in self.nodes:
            info = n.cli_run("info", "replication")
            if "role:slave" in info and "master_link_status:up" not in info:
                return False
        return True

    def masters(self) -> list[RedisServer]:
        """The nodes that are masters now (a failover changes them)."""
        out = []
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                if "role:master" in n.cli_run("info", "replication"):
                    out.append(n)
            except subprocess.SubprocessError:
                continue
        return out

    def start(self) -> RedisCluster3:
        for n in self.nodes:
            n.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                self.nodes[0].cli,
                "--cluster",
                "create",
                *addrs,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        deadline = time.monotonic() + 60  # replicas' first sync, on a loaded 2-core CI VM
        while time.monotonic() < deadline:
            if (
                all("cluster_state:ok" in n.cli_run("cluster", "info") for n in self.nodes)
                and len(self.masters()) == 3
                and self._replicas_synced()
            ):
                return self
            time.sleep(0.1)
        raise RuntimeError("the redis cluster did not reach cluster_state:ok")

    @property
    def addrs(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
