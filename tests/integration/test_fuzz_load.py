"""Fuzz and load against a running daemon, over loopback UDP (issue #10's proof).

- fuzz: hypothesis-generated invalid datagrams (random bytes, truncated and mutated valid
  messages, nested and malformed bundles, huge strings, NaN/inf numbers, wrong type tags) in
  batches to `latentloop serve --model tiny`: it stays up, answers a ping after every batch, and
  writes no file (no generated datagram is admitted as a render: `daemon_fuzz.admits_a_render`);
- load: several concurrent clients send thousands of mixed datagrams (renders, invalid ones,
  pings, status) to the daemon around a stand-in engine: every render gets exactly one outcome,
  memory stays bounded; ping latency is printed (no timing asserts on a shared machine).

Each test prints its counts. `tools/soak.py` runs the same at >= 100,000 datagrams.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.integration.daemon_fuzz import (
    INVALID,
    Client,
    admits_a_render,
    invalid_datagrams,
    rss_kib,
)

from latentloop_bridge.protocol import encode_message

FUZZ_BATCHES = 250  # x 10-30 datagrams: a few thousand in CI
MIN_SENT = 2000  # a floor, so the fuzz cannot shrink unnoticed (hypothesis sizes lists itself)


def test_fuzzed_datagrams_never_stop_the_daemon_nor_write_a_file(module_daemon_factory) -> None:
    daemon = module_daemon_factory("--no-warmup")
    client = Client(daemon.wait_ready())
    out = daemon.out_dir
    sent = Counter()
    pings = []

    @settings(max_examples=FUZZ_BATCHES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.lists(INVALID, min_size=10, max_size=30))
    def batch(datagrams: list[bytes]) -> None:
        for data in datagrams:
            if admits_a_render(data) or len(data) > 65507:
                sent["skipped (a valid render, or over UDP's size)"] += 1
                continue
            client.send(data)
            sent["datagrams"] += 1
        pings.append(client.ping(sent["batches"]))
        sent["batches"] += 1
        assert daemon.proc.poll() is None, daemon.log[-3000:]

    batch()
    client.drain(0.5)
    assert daemon.proc.poll() is None
    written = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    assert written == [], written
    client.send(encode_message("/latentloop/status", [424242]))
    client.drain(1.0)
    print(f"fuzz: {dict(sent)}; replies: {dict(client.replies)}; files: 0; "
          f"ping after each batch: median {statistics.median(pings) * 1e3:.1f} ms, "
          f"max {max(pings) * 1e3:.1f} ms")  # fmt: skip
    assert sent["datagrams"] >= MIN_SENT, sent  # and the count is printed above
    assert client.replies["/latentloop/pong"] >= sent["batches"]  # fuzzed pings are answered too
    assert client.replies["/latentloop/fail"] > sent["datagrams"] // 4  # most get an answer
    client.close()


CLIENTS = 4
PER_CLIENT = 800


def test_concurrent_clients_get_one_outcome_per_render_and_memory_stays_bounded(
    daemon_factory,
) -> None:
    daemon = daemon_factory("--no-warmup", "--queue-size", "4", standin=True,
                            env={"LATENTLOOP_TEST_STEP_S": "0.002"})  # fmt: skip
    port = daemon.wait_ready()
    rss_start = rss_kib(daemon.proc.pid)
    clients = [Client(port) for _ in range(CLIENTS)]
    renders: list[set[int]] = [set() for _ in clients]
    latencies: list[list[float]] = [[] for _ in clients]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        rng = random.Random(k)
        client, junk = clients[k], invalid_datagrams(rng, PER_CLIENT)
        try:
            for i in range(PER_CLIENT):
                rid = k * 100_000 + i
                roll = rng.random()
                if roll < 0.15:
                    client.send(encode_message("/latentloop/render", [rid, "prompt", f"load {i}",
                                "seconds", 1, "steps", 1]))  # fmt: skip
                    renders[k].add(rid)
                elif roll < 0.25:
                    latencies[k].append(client.ping(rid))
                elif roll < 0.3:
                    client.send(encode_message("/latentloop/status", [rid]))
                else:
                    client.send(next(junk))
                if i % 50 == 0:
                    client.drain(0.001)
        except BaseException as e:
            errors.append(e)

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    peak = rss_start
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_kib(daemon.proc.pid))
        time.sleep(0.2)
    sending_s = time.monotonic() - t0
    assert not errors, errors
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the queue drains: every render settles
        for c in clients:
            c.drain(0.2)
        if all(set(c.finals) >= r for c, r in zip(clients, renders, strict=True)):
            break
    outcomes = Counter()
    for c, r in zip(clients, renders, strict=True):
        for rid in r:
            finals = c.finals.get(rid, [])
            assert len(finals) == 1, (rid, finals)  # exactly one: one /done (1 variation) or /fail
            outcomes[finals[0].rsplit("/", 1)[1]] += 1
    peak = max(peak, rss_kib(daemon.proc.pid))
    every = sorted(x for lat in latencies for x in lat)
    print(f"load: {CLIENTS} clients x {PER_CLIENT} datagrams in {sending_s:.1f} s; renders "
          f"{sum(map(len, renders))}: {dict(outcomes)}; pings {len(every)}: median "
          f"{statistics.median(every) * 1e3:.1f} ms, p99 {every[int(len(every) * 0.99)] * 1e3:.1f}"
          f" ms, max {every[-1] * 1e3:.1f} ms; RSS {rss_start // 1024} -> peak {peak // 1024} "
          f"MiB")  # fmt: skip
    assert daemon.proc.poll() is None
    assert peak - rss_start < 200 * 1024, (rss_start, peak)  # bounded: no per-datagram growth
    for c in clients:
        c.close()
