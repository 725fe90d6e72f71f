"""Power loss in durable mode, simulated: every acknowledged write survives, nothing wrong
is served.

A writer process stores vectors with ``warm.durability: durable`` under an interposed file
layer (tests/powerloss_shim.c, LD_PRELOAD) that journals every write and fsync of
``data.mdb``, and every acknowledgement (a line written to ``ack.marker`` after ``set`` or
``mset`` returned), in one order. A power cut at journal position k leaves: every write
made durable by a sync before k, and each later write before k kept, dropped or torn (a
random prefix of its 512-byte sectors), in order. For many random k, ``data.mdb`` is
rebuilt that way and opened by a separate process (a crash there would be caught): every
write acknowledged before k must read back exactly, and every other key is absent or
exact. The figures go to the soak summary under ``make soak``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests import soak

ROOT = Path(__file__).resolve().parent.parent
SECTOR = 512

WRITER = textwrap.dedent("""
    import os, sys
    import numpy as np
    from pathlib import Path
    from tests.conftest import DIM, make_config
    from tiercache import TierCache
    from tiercache.encoders import HashEncoder

    def vec(i):
        return np.random.default_rng([11, i]).standard_normal(DIM).astype(np.float32)

    root, n = Path(sys.argv[1]), int(sys.argv[2])
    cfg = make_config(root, hot={"enabled": False}, warm={"durability": "durable"})
    ack = os.open(str(root / "ack.marker"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with TierCache(cfg, encoder=HashEncoder(DIM)) as c:
        i = 0
        while i < n:
            if i % 5 == 4:  # a batch of 8
                c.mset([(f"k{j}", vec(j)) for j in range(i, i + 8)])
                os.write(ack, f"{i} {i + 8}\\n".encode())
                i += 8
            else:
                c.set(f"k{i}", vec(i))
                os.write(ack, f"{i} {i + 1}\\n".encode())
                i += 1
""")

READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from pathlib import Path
    from tests.conftest import DIM, make_config
    from tiercache import TierCache
    from tiercache.encoders import HashEncoder

    def vec(i):
        return np.random.default_rng([11, i]).standard_normal(DIM).astype(np.float32)

    root, n = Path(sys.argv[1]), int(sys.argv[2])
    acked = set(json.loads(sys.argv[3]))
    cfg = make_config(root, hot={"enabled": False}, warm={"durability": "durable"})
    res = {"lost": 0, "wrong": 0, "present": 0, "quarantined": 0}
    with TierCache(cfg, encoder=HashEncoder(DIM)) as c:
        res["quarantined"] = c.stats()["tiers"]["warm"]["quarantined"]
        for i, e in enumerate(c.mget([f"k{i}" for i in range(n)])):
            if e is None:
                res["lost"] += i in acked
            elif np.array_equal(e.vector, vec(i)):
                res["present"] += 1
            else:
                res["wrong"] += 1
    print(json.dumps(res))
""")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:  # the C extension needs one too: CI has it
        pytest.skip("no C compiler for the interposed file layer")
    out = tmp_path_factory.mktemp("shim") / "powerloss_shim.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(ROOT / "tests" / "powerloss_shim.c")]
        + ["-ldl", "-lpthread"],
        check=True,
        capture_output=True,
    )
    return out


def read_journal(path: Path) -> list[tuple[str, int, bytes]]:
    data = path.read_bytes()
    out = []
    at = 0
    while at < len(data):
        kind = chr(data[at])
        off, n = struct.unpack_from("<QI", data, at + 1)
        at += 13
        out.append((kind, off, data[at : at + n]))
        at += n
    return out


def rebuild(
    events: list[tuple[str, int, bytes]], cut: int, rng: random.Random
) -> tuple[bytearray, set[int]]:
    """data.mdb as a power cut at event ``cut`` leaves it, and the keys acknowledged."""
    last_sync = max((i for i in range(cut) if events[i][0] == "S"), default=-1)
    image = bytearray()
    acked: set[int] = set()
    for i in range(cut):
        kind, off, data = events[i]
        if kind == "A":
            lo, hi = map(int, data.split())
            acked.update(range(lo, hi))
            continue
        if kind not in ("W", "D"):
            continue
        if kind == "W" and i > last_sync:  # not synced yet: kept, dropped or torn
            fate = rng.randrange(3)
            if fate == 1:
                continue
            if fate == 2:
                data = data[: SECTOR * rng.randrange(len(data) // SECTOR + 1)]
        end = off + len(data)
        if len(image) < end:
            image.extend(bytes(end - len(image)))
        image[off:end] = data
    return image, acked


def test_power_loss_in_durable_mode_loses_no_acknowledged_write(shim: Path, tmp_path: Path) -> None:
    n = soak.scale(60, 400)
    work = tmp_path / "work"
    work.mkdir()
    journal = tmp_path / "journal"
    env = _env() | {"LD_PRELOAD": str(shim), "TC_JOURNAL": str(journal)}
    subprocess.run([sys.executable, "-c", WRITER, str(work), str(n)], env=env, cwd=ROOT, check=True)
    events = read_journal(journal)
    kinds = [k for k, _, _ in events]
    assert kinds.count("S") > 10 and kinds.count("A") > 10 and kinds.count("W") > 10, set(kinds)
    rng = random.Random(20261207)
    trials = soak.scale(12, 120)
    totals = {"lost": 0, "wrong": 0, "present": 0, "acked": 0, "quarantined": 0}
    for trial in range(trials):
        cut = rng.randrange(1, len(events) + 1)
        image, acked = rebuild(events, cut, rng)
        case = tmp_path / f"cut{trial}"
        (case / "warm").mkdir(parents=True)
        (case / "warm" / "data.mdb").write_bytes(bytes(image))
        proc = subprocess.run(
            [sys.executable, "-c", READER, str(case), str(n), json.dumps(sorted(acked))],
            env=_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"cut {cut}: the reader died: {proc.stderr[-1500:]}"
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        for k in ("lost", "wrong", "present", "quarantined"):
            totals[k] += res[k]
        totals["acked"] += len(acked)
        assert res["wrong"] == 0, f"cut {cut}: {res}"
        assert res["lost"] == 0, f"cut {cut}: {res['lost']} acknowledged writes lost ({res})"
        shutil.rmtree(case)
    soak.record(
        "power_loss_durable",
        faults_injected=trials,
        cycles=trials,
        journal_events=len(events),
        syncs=kinds.count("S"),
        records_checked=trials * n,
        acked_checked=totals["acked"],
        acked_lost=totals["lost"],
        wrong_vectors=totals["wrong"],
        quarantined=totals["quarantined"],
    )
    assert totals["acked"] > 0
    np.testing.assert_equal(totals["wrong"], 0)
