"""Soak a running daemon: >= 100,000 invalid and mixed datagrams, then SIGKILL cycles (issue #10).

    .venv/bin/python tools/soak.py                      # 100,000 fuzz + 50,000 load, 60 kills
    .venv/bin/python tools/soak.py --datagrams 300000 --kills 200 --model tiny

Phases, each printing its figures (they go in docs/perf.md):
1. fuzz: one client sends invalid datagrams (``tests/integration/daemon_fuzz.py``: random bytes,
   truncations and mutations of valid messages, malformed and deeply nested bundles, huge
   strings, NaN/inf, wrong type tags), a ping every 100; the daemon must answer every ping and
   write no file;
2. load: 4 concurrent clients send mixed datagrams (15 % renders, pings, status, invalid ones);
   every render must get exactly one outcome; RSS and ping latency are reported;
3. crash: ``--kills`` SIGKILLs of the stand-in daemon at random moments, one client socket
   across restarts; after each no WAV without its sidecar and no partial WAV, and at the end
   every accepted id is accounted for (the checks of ``test_hardening.py``).
Daemons run on loopback with ``tests/standin_daemon.py`` unless ``--model tiny`` (phases 1-2).
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests.conftest import DaemonProcess  # noqa: E402
from tests.integration.daemon_fuzz import Client, invalid_datagrams, rss_kib  # noqa: E402
from tests.integration.test_hardening import (  # noqa: E402
    Peer,
    assert_no_wav_without_sidecar_and_no_partial_wav,
    free_port,
    render_in_flight,
    settle,
)

from latentloop_bridge.protocol import encode_message  # noqa: E402


def percentiles(values: list[float]) -> str:
    v = sorted(values)
    return (f"median {statistics.median(v) * 1e3:.1f} ms, p99 {v[int(len(v) * 0.99)] * 1e3:.1f} "
            f"ms, max {v[-1] * 1e3:.1f} ms")  # fmt: skip


def fuzz(port: int, pid: int, out: Path, n: int) -> None:
    client, rng = Client(port), random.Random(1)
    pings, t0, rss0 = [], time.monotonic(), rss_kib(pid)
    for i, data in enumerate(invalid_datagrams(rng, n)):
        client.send(data)
        if i % 100 == 99:
            pings.append(client.ping(i))
            client.drain(0.0005)
    client.drain(1.0)
    files = [p for p in out.iterdir() if not p.name.startswith(".")]
    print(f"fuzz: {n} invalid datagrams in {time.monotonic() - t0:.0f} s; replies "
          f"{dict(client.replies)}; pings {len(pings)} answered, {percentiles(pings)}; files "
          f"written: {len(files)}; RSS {rss0 // 1024} -> {rss_kib(pid) // 1024} MiB")  # fmt: skip
    assert not files, files
    client.close()


def load(port: int, pid: int, n: int, clients: int = 4) -> None:
    peers = [Client(port) for _ in range(clients)]
    renders: list[set[int]] = [set() for _ in peers]
    latencies: list[float] = []
    per = n // clients
    rss0, peak = rss_kib(pid), rss_kib(pid)

    def run(k: int) -> None:
        rng, c = random.Random(100 + k), peers[k]
        junk = invalid_datagrams(rng, per)
        for i in range(per):
            rid, roll = k * 1_000_000 + i, rng.random()
            if roll < 0.15:
                c.send(encode_message("/latentloop/render", [rid, "prompt", f"soak {i}",
                       "seconds", 1, "steps", 1]))  # fmt: skip
                renders[k].add(rid)
            elif roll < 0.2:
                latencies.append(c.ping(rid, timeout=30))
            elif roll < 0.25:
                c.send(encode_message("/latentloop/status", [rid]))
            else:
                c.send(next(junk))
            if i % 50 == 0:
                c.drain(0.001)

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_kib(pid))
        time.sleep(0.5)
    sending_s = time.monotonic() - t0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for c in peers:
            c.drain(0.2)
        if all(set(c.finals) >= r for c, r in zip(peers, renders, strict=True)):
            break
    outcomes: Counter[str] = Counter()
    for c, r in zip(peers, renders, strict=True):
        for rid in r:
            finals = c.finals.get(rid, [])
            outcomes["one outcome" if len(finals) == 1 else f"{len(finals)} outcomes"] += 1
            if finals:
                outcomes[finals[0].rsplit("/", 1)[1]] += 1
    print(f"load: {clients} clients x {per} datagrams in {sending_s:.0f} s; renders "
          f"{sum(map(len, renders))}: {dict(outcomes)}; pings {len(latencies)}: "
          f"{percentiles(latencies)}; RSS {rss0 // 1024} -> peak {peak // 1024} MiB")  # fmt: skip
    assert set(outcomes) <= {"one outcome", "done", "fail"}, outcomes


def crash(kills: int, folder: Path) -> None:
    out, port, rng = folder / "crash", free_port(), random.Random(7)
    args = ("--port", str(port), "--no-warmup", "--queue-size", "64")
    env = {"LATENTLOOP_RENDER_WHILE_LOADING": "queue", "LATENTLOOP_RENDER_PADDING_S": "0.5",
           "LATENTLOOP_TEST_STEP_S": "0.04"}  # fmt: skip
    peer, queued, next_id, t0 = Peer(port), {}, iter(range(1, 10**6)), time.monotonic()
    in_render = 0  # kills that landed with a render in flight
    for cycle in range(kills):
        daemon = DaemonProcess(out, *args, env=env, standin=True)
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            daemon.wait_log("listening on", 60)
            for _ in range(rng.choice([1, 1, 2, 3])):
                rid, variations = next(next_id), rng.choice([1, 1, 2])
                peer.send("/latentloop/render", rid, "prompt", f"soak crash {rid}", "seconds", 1,
                          "steps", rng.choice([1, 2, 4, 8]), "variations", variations)  # fmt: skip
                got = peer.wait(lambda r, rid=rid: r[1][:1] == [rid] and r[0] in (
                    "/latentloop/queued", "/latentloop/fail"), 10)  # fmt: skip
                if got is not None and got[0] == "/latentloop/queued":
                    queued[rid] = variations
            if cycle % 5 == 4 and queued:
                peer.send("/latentloop/cancel", rng.choice(sorted(queued)))
            time.sleep(rng.uniform(0.0, 1.2))
        daemon.kill()  # then its log is complete
        in_render += render_in_flight(daemon.lines)
        while peer.pump(0.01):
            pass
        assert_no_wav_without_sidecar_and_no_partial_wav(out)
    daemon = DaemonProcess(out, *args, env=env, standin=True)
    daemon.wait_ready(60)
    outcomes = Counter(settle(peer, rid, v, out) for rid, v in queued.items())
    files = assert_no_wav_without_sidecar_and_no_partial_wav(out)
    daemon.stop()
    print(f"crash: {kills} SIGKILLs ({in_render} during a render) in "
          f"{time.monotonic() - t0:.0f} s; accepted {len(queued)}: "
          f"{dict(outcomes)}; files {files}; every accepted id accounted for: "
          f"{sum(outcomes.values()) == len(queued)}")  # fmt: skip
    assert sum(outcomes.values()) == len(queued)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datagrams", type=int, default=100_000, help="invalid datagrams (fuzz)")
    ap.add_argument("--load", type=int, default=50_000, help="mixed datagrams (load)")
    ap.add_argument("--kills", type=int, default=60)
    ap.add_argument("--model", default=None, help="tiny: fuzz/load the real tiny model")
    a = ap.parse_args()
    logging.disable(logging.WARNING)  # this process's own admission check logs every rejection
    with tempfile.TemporaryDirectory(prefix="latentloop-soak-") as tmp:
        folder = Path(tmp)
        extra = {"standin": a.model is None, "env": {"LATENTLOOP_TEST_STEP_S": "0.002"}}
        daemon = DaemonProcess(folder / "fuzz", "--no-warmup", "--queue-size", "4",
                               model=a.model or "tiny", **extra)  # fmt: skip
        try:
            port = daemon.wait_ready(300)
            fuzz(port, daemon.proc.pid, folder / "fuzz", a.datagrams)
            load(port, daemon.proc.pid, a.load)
            assert daemon.proc.poll() is None, "the daemon died"
        finally:
            daemon.stop()
        crash(a.kills, folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
