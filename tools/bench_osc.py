"""Benchmark latentloop's OSC bridge against a real daemon: latency, throughput, parse speed.

Starts ``latentloop serve --model tiny --port 0 --no-audio`` as a subprocess, waits for it to be
ready, and measures over real UDP on loopback:

1. ping round-trip latency, idle (one socket, sequential pings with request ids);
2. the same while a long canonical render runs (sent from a second socket; the render's
   ``/progress`` replies show it ran during the whole ping series; it is cancelled afterwards);
3. pipelined throughput from one socket with a bounded in-flight window: pings -> ``/pong``,
   and invalid renders (bpm out of range) -> ``/fail ... invalid``, the parser + fail path;

and in-process, the speed of ``parse_packet`` + ``parse_message`` on typical datagrams.

It prints a table, then one JSON line with every number. This is a benchmark, not a test: it
asserts nothing about speed. Run it on an otherwise idle machine when comparing numbers::

    .venv/bin/python tools/bench_osc.py            # full: ~2000 pings per series
    .venv/bin/python tools/bench_osc.py --quick    # smoke run

The daemon is always stopped with SIGTERM at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentloop_bridge.packets import parse_packet
from latentloop_bridge.protocol import (
    CANCEL,
    DONE,
    FAIL,
    PING,
    PONG,
    PROGRESS,
    QUEUED,
    RENDER,
    ReplyArg,
    encode_message,
    parse_message,
)

LOOPBACK = "127.0.0.1"
Address = tuple[str, int]
_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
_READY = " ready on "


# --- the daemon ----------------------------------------------------------------------------------


class Daemon:
    """``latentloop serve`` as a subprocess; its log goes to a file (no pump thread here)."""

    def __init__(self, model: str, out_dir: Path, log_path: Path) -> None:
        cmd = [
            sys.executable, "-m", "latentloop_daemon", "serve", "--model", model,
            "--port", "0", "--out", str(out_dir), "--no-audio",
        ]  # fmt: skip
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        self.port: int | None = None
        self.exit_code: int | None = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_ready(self, timeout_s: float) -> int:
        """Wait for the "ready on" line (after model load and warm-up); return the port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_text()
            if self.port is None and (m := _LISTENING.search(text)):
                self.port = int(m.group(1))
            if self.port is not None and _READY in text:
                return self.port
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited with code {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            time.sleep(0.05)
        raise RuntimeError(f"the daemon was not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL only if it does not stop in time. Returns the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                print(f"daemon ignored SIGTERM for {timeout_s:.0f} s; killing it", file=sys.stderr)
                self.proc.kill()
                self.exit_code = self.proc.wait(10)
        finally:
            self._log.close()
        return self.exit_code


# --- replies -------------------------------------------------------------------------------------


def split_reply(data: bytes) -> tuple[bytes, int | None, bytes]:
    """A reply's address, first argument (when it is an int32) and the bytes after it.

    Cheap on purpose, so the client spends little CPU per reply on this small machine; the
    first reply of each series is also checked with the real parser (`check_first`), and the
    rest must carry the same type tags and trailing arguments (`tail`) as that one.
    """
    end = data.find(b"\x00")
    address = data[:end]
    tags_at = (end + 4) & ~3
    tags_end = data.find(b"\x00", tags_at)
    tags = data[tags_at:tags_end]
    args_at = (tags_end + 4) & ~3
    if tags[1:2] != b"i" or len(data) < args_at + 4:
        return address, None, tags + b"|" + data[args_at:]
    request_id = int.from_bytes(data[args_at : args_at + 4], "big", signed=True)
    return address, request_id, tags + b"|" + data[args_at + 4 :]


def check_first(data: bytes, address: str, request_id: int, expect: Sequence[ReplyArg]) -> None:
    """Parse one reply fully and check it is `address <request_id> *expect` (a prefix)."""
    messages = parse_packet(data)
    if len(messages) != 1:
        raise RuntimeError(f"expected one message, got {messages!r}")
    message = messages[0]
    got = [message.address, *message.args]
    want = [address, request_id, *expect]
    if got[: len(want)] != want:
        raise RuntimeError(f"unexpected reply {got!r}; expected {want!r}...")


def new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((LOOPBACK, 0))
    return sock


# --- statistics ----------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(p / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def summarize_ms(samples_ns: Sequence[int]) -> dict[str, float]:
    values = sorted(v / 1e6 for v in samples_ns)
    if not values:
        return {"median_ms": math.nan, "p90_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    return {
        "median_ms": statistics.median(values),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1],
        "mean_ms": statistics.fmean(values),
        "min_ms": values[0],
    }


# --- 1, 2: ping latency --------------------------------------------------------------------------


@dataclass
class PingSeries:
    rtts_ns: list[int] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)  # perf_counter of each timed ping
    lost: int = 0
    stale: int = 0  # late replies to earlier pings, skipped
    started: float = 0.0
    ended: float = 0.0


def ping_series(
    daemon: Address, count: int, warmup: int, first_id: int, timeout_s: float = 2.0
) -> PingSeries:
    """`warmup` + `count` sequential pings from one socket; RTT from sendto to the pong."""
    sock = new_socket()
    sock.settimeout(timeout_s)
    total = warmup + count
    datagrams = [encode_message(PING, [first_id + i]) for i in range(total)]
    series = PingSeries()
    expected_tail: bytes | None = None
    clock = time.perf_counter_ns
    try:
        for i, datagram in enumerate(datagrams):
            rid = first_id + i
            timed = i >= warmup
            if i == warmup:
                series.started = time.perf_counter()
            if timed:
                series.send_times.append(time.perf_counter())
            sent_ns = clock()
            sock.sendto(datagram, daemon)
            while True:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    if timed:
                        series.lost += 1
                    break
                got_ns = clock()
                address, reply_id, tail = split_reply(data)
                if address != PONG.encode() or reply_id != rid:
                    series.stale += 1
                    if clock() - sent_ns > timeout_s * 1e9:
                        if timed:
                            series.lost += 1
                        break
                    continue
                if expected_tail is None:
                    check_first(data, PONG, rid, [1])
                    expected_tail = tail
                elif tail != expected_tail:
                    raise RuntimeError(f"unexpected pong {parse_packet(data)!r}")
                if timed:
                    series.rtts_ns.append(got_ns - sent_ns)
                break
        series.ended = time.perf_counter()
    finally:
        sock.close()
    return series


class RenderWatcher:
    """One render from its own socket; a thread records its replies with timestamps."""

    def __init__(self, daemon: Address, request_id: int, steps: int) -> None:
        self.daemon = daemon
        self.request_id = request_id
        self.steps = steps
        self.sock = new_socket()
        self.sock.settimeout(0.2)
        self.progress: list[tuple[float, int, int, float]] = []  # (time, step, total, fraction)
        self.queued_at: float | None = None
        self.ended_at: float | None = None
        self.end_reply: list[Any] | None = None  # the /done or /fail that ended the job
        self.first_progress = threading.Event()
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="render-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()
        args: list[ReplyArg] = [
            self.request_id, "prompt", "benchmark drone", "steps", self.steps, "seed", "1",
        ]  # fmt: skip
        self.sock.sendto(encode_message(RENDER, args), self.daemon)

    def cancel(self) -> None:
        """Cancel from the render's own socket (ids are scoped by sender address)."""
        self.sock.sendto(encode_message(CANCEL, [self.request_id]), self.daemon)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.perf_counter()
            for message in parse_packet(data):
                args = message.args
                if not args or args[0] != self.request_id:
                    continue
                if message.address == PROGRESS:
                    self.progress.append((now, int(args[1]), int(args[2]), float(args[3])))
                    self.first_progress.set()
                elif message.address == QUEUED:
                    self.queued_at = now
                elif message.address in (DONE, FAIL):
                    self.ended_at = now
                    self.end_reply = [message.address, *args]
                    self.first_progress.set()
                    self.finished.set()


def pings_during_render(
    daemon: Address, count: int, warmup: int, steps: int, first_id: int
) -> tuple[PingSeries, dict[str, Any]]:
    """Ping while a long canonical render runs; cancel it afterwards; describe the overlap."""
    watcher = RenderWatcher(daemon, request_id=first_id - 1, steps=steps)
    try:
        watcher.start()
        if not watcher.first_progress.wait(300):
            raise RuntimeError("the render sent no /progress within 300 s")
        if watcher.end_reply is not None:
            raise RuntimeError(f"the render ended before the pings started: {watcher.end_reply}")
        series = ping_series(daemon, count, warmup, first_id)
        still_running = not watcher.finished.is_set()
        cancel_sent = time.perf_counter()
        watcher.cancel()
        if not watcher.finished.wait(120):
            raise RuntimeError("the render neither finished nor acknowledged the cancel in 120 s")
    finally:
        watcher.close()
    end = watcher.ended_at if watcher.ended_at is not None else cancel_sent
    in_render = sum(1 for t in series.send_times if t < end)
    window = [p for p in watcher.progress if series.started <= p[0] <= series.ended]
    before = [p for p in watcher.progress if p[0] < series.started]
    times = [series.started] + [p[0] for p in window] + [min(series.ended, end)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    info = {
        "render_steps": steps,
        "render_total_steps_reported": watcher.progress[0][2] if watcher.progress else None,
        "render_still_running_after_pings": still_running,
        "render_end_reply": [str(a) for a in (watcher.end_reply or [])],
        "pings_during_render": in_render,
        "step_at_ping_start": before[-1][1] if before else 0,
        "step_at_ping_end": window[-1][1] if window else (before[-1][1] if before else 0),
        "progress_replies_during_pings": len(window),
        "max_progress_gap_s": max(gaps) if gaps else math.nan,
        "ping_window_s": series.ended - series.started,
    }
    return series, info


# --- 3: pipelined throughput ---------------------------------------------------------------------


def pipelined(
    daemon: Address,
    datagrams: Sequence[bytes],
    first_id: int,
    window: int,
    expect_address: str,
    expect_args: Sequence[ReplyArg],
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    """Send `datagrams` (ids first_id, first_id+1, ...) keeping at most `window` unanswered.

    A reply not seen within `timeout_s` of the last reply counts its request as lost.
    """
    sock = new_socket()
    sock.settimeout(timeout_s)
    total = len(datagrams)
    expected_address = expect_address.encode()
    outstanding: set[int] = set()
    answered = lost = unexpected = late = 0
    expected_tail: bytes | None = None
    next_index = 0
    started = time.perf_counter()
    last_reply = started
    try:
        while next_index < total or outstanding:
            while next_index < total and len(outstanding) < window:
                sock.sendto(datagrams[next_index], daemon)
                outstanding.add(first_id + next_index)
                next_index += 1
            try:
                data = sock.recv(65536)
            except TimeoutError:
                lost += len(outstanding)
                outstanding.clear()
                continue
            address, reply_id, tail = split_reply(data)
            if reply_id not in outstanding:
                late += 1
                continue
            outstanding.discard(reply_id)
            if address != expected_address:
                unexpected += 1
                continue
            if expected_tail is None:
                check_first(data, expect_address, reply_id, expect_args)
                expected_tail = tail
            elif tail != expected_tail:
                unexpected += 1
                continue
            answered += 1
            last_reply = time.perf_counter()
    finally:
        sock.close()
    elapsed = last_reply - started
    return {
        "sent": total,
        "answered": answered,
        "lost": lost,
        "unexpected": unexpected,
        "late": late,
        "window": window,
        "elapsed_s": elapsed,
        "answered_per_s": answered / elapsed if elapsed > 0 else math.nan,
    }


def throughput_pings(daemon: Address, count: int, window: int, first_id: int) -> dict[str, Any]:
    datagrams = [encode_message(PING, [first_id + i]) for i in range(count)]
    return pipelined(daemon, datagrams, first_id, window, PONG, [1])


def throughput_invalid(daemon: Address, count: int, window: int, first_id: int) -> dict[str, Any]:
    datagrams = [
        encode_message(RENDER, [first_id + i, "prompt", "dusty boom bap", "bpm", 5000, "bars", 4])
        for i in range(count)
    ]
    expect = ["render", "invalid", "bpm must be 20..999, got 5000"]
    return pipelined(daemon, datagrams, first_id, window, FAIL, expect)


# --- in-process parse microbenchmark -------------------------------------------------------------

MICRO_DATAGRAMS: dict[str, bytes] = {
    "canonical render": encode_message(
        RENDER,
        [7, "prompt", "dusty boom bap drums", "bpm", 92, "bars", 4, "seed", "1234", "steps", 8],
    ),
    "positional render": encode_message(
        RENDER, [92.0, 4.0, "dusty", "boom", "bap", "drums"]
    ),  # as Pd sends it: floats
    "ping": encode_message(PING, [5]),
}


def parse_once(data: bytes) -> list[Any]:
    return [parse_message(m.address, m.args) for m in parse_packet(data)]


def micro_parse(iterations: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Messages/s of parse_packet + parse_message, median and best of `rounds` timed loops."""
    results: dict[str, dict[str, Any]] = {}
    for name, data in MICRO_DATAGRAMS.items():
        command = parse_once(data)[0]  # also a correctness check: these must parse
        if name == "canonical render":
            assert (command.prompt, command.bpm, command.seed) == ("dusty boom bap drums", 92, 1234)
        elif name == "positional render":
            assert (command.prompt, command.bpm, command.bars) == ("dusty boom bap drums", 92, 4)
        rates = []
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(iterations):
                parse_once(data)
            rates.append(iterations / (time.perf_counter() - started))
        results[name] = {
            "bytes": len(data),
            "msgs_per_s_median": statistics.median(rates),
            "msgs_per_s_best": max(rates),
            "us_per_msg_median": 1e6 / statistics.median(rates),
            "iterations": iterations,
            "rounds": rounds,
        }
    return results


# --- environment ---------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --- report --------------------------------------------------------------------------------------


def latency_row(name: str, series: PingSeries, count: int) -> tuple[str, dict[str, Any]]:
    stats = summarize_ms(series.rtts_ns)
    row = (
        f"  {name:<22} {len(series.rtts_ns):>6} {stats['median_ms']:>9.3f} {stats['p90_ms']:>9.3f}"
        f" {stats['p99_ms']:>9.3f} {stats['max_ms']:>9.3f} {series.lost:>6}"
    )
    return row, {"count": count, "answered": len(series.rtts_ns), "lost": series.lost,
                 "stale": series.stale, **stats}  # fmt: skip


def throughput_row(name: str, result: dict[str, Any]) -> str:
    return (
        f"  {name:<28} {result['sent']:>6} {result['answered']:>8} {result['lost']:>5}"
        f" {result['unexpected']:>5} {result['elapsed_s']:>9.3f} {result['answered_per_s']:>11.0f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--pings", type=int, help="timed pings per latency series (2000)")
    parser.add_argument("--warmup", type=int, help="untimed pings before each series (100)")
    parser.add_argument("--count", type=int, help="requests per throughput run (5000)")
    parser.add_argument("--window", type=int, default=64, help="in-flight bound (64)")
    parser.add_argument("--render-steps", type=int, help="steps of the background render (400)")
    parser.add_argument("--micro-iterations", type=int, help="parses per timed round (20000)")
    parser.add_argument("--model", default="tiny", help="daemon model (tiny)")
    parser.add_argument("--ready-timeout", type=float, default=600.0, help="seconds (600)")
    args = parser.parse_args(argv)
    quick = args.quick
    pings = args.pings or (200 if quick else 2000)
    warmup = args.warmup if args.warmup is not None else (20 if quick else 100)
    count = args.count or (500 if quick else 5000)
    steps = args.render_steps or (100 if quick else 400)
    micro_iterations = args.micro_iterations or (2000 if quick else 20000)

    # SIGTERM to this script: unwind through the finally blocks, which stop the daemon.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    env = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "latentloop": package_version("latentloop"),
        "python_osc": package_version("python-osc"),
        "platform": platform.platform(),
        "load_before": load_average(),
    }
    params = {"quick": quick, "pings": pings, "warmup": warmup, "throughput_count": count,
              "window": args.window, "render_steps": steps, "model": args.model,
              "micro_iterations": micro_iterations}  # fmt: skip
    print(f"latentloop OSC benchmark: {env['date']}, {env['cpu_model']}, {env['cores']} cores,")
    print(f"  python {env['python']}, torch {env['torch']}, load {env['load_before']}")

    # In-process first, while no daemon competes for the CPU.
    print("parsing in-process...", flush=True)
    micro = micro_parse(micro_iterations, rounds=5)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="latentloop-bench-") as tmp:
        daemon = Daemon(args.model, Path(tmp) / "out", Path(tmp) / "daemon.log")
        try:
            started = time.perf_counter()
            port = daemon.wait_ready(args.ready_timeout)
            ready_s = time.perf_counter() - started
            address = (LOOPBACK, port)
            print(f"daemon ready on {LOOPBACK}:{port} after {ready_s:.1f} s", flush=True)

            print(f"1/4 ping latency, idle ({pings} pings)...", flush=True)
            idle = ping_series(address, pings, warmup, first_id=1_000_000)
            print(f"2/4 pipelined throughput ({count} pings, {count} invalid renders)...",
                  flush=True)  # fmt: skip
            tp_ping = throughput_pings(address, count, args.window, first_id=2_000_000)
            tp_fail = throughput_invalid(address, count, args.window, first_id=3_000_000)
            print(f"3/4 ping latency during a {steps}-step render...", flush=True)
            busy, render_info = pings_during_render(address, pings, warmup, steps, 4_000_001)
            results = {"ready_s": ready_s, "idle": idle, "busy": busy, "render": render_info,
                       "tp_ping": tp_ping, "tp_fail": tp_fail}  # fmt: skip
        except BaseException:
            print("daemon log (tail):\n" + daemon.log_tail(), file=sys.stderr)
            raise
        finally:
            print("4/4 stopping the daemon (SIGTERM)...", flush=True)
            exit_code = daemon.stop()
            log_text = daemon.log_text()
    env["load_after"] = load_average()
    env["daemon_exit_code"] = exit_code
    env["daemon_warning_lines"] = sum(1 for line in log_text.splitlines() if "WARNING" in line)

    idle_row, idle_json = latency_row("idle", results["idle"], pings)
    busy_row, busy_json = latency_row("during render", results["busy"], pings)
    info = results["render"]
    print()
    print(f"ping round-trip, ms (one socket, sequential, {warmup} warm-up pings first)")
    print(f"  {'':<22} {'n':>6} {'median':>9} {'p90':>9} {'p99':>9} {'max':>9} {'lost':>6}")
    print(idle_row)
    print(busy_row)
    ran = "still running" if info["render_still_running_after_pings"] else "FINISHED EARLY"
    if info["pings_during_render"] < pings:
        print(f"    WARNING: the render ended early; raise --render-steps above {steps}")
    print(
        f"    render: {info['render_steps']} steps, {info['pings_during_render']}/{pings} pings "
        f"while it ran, steps {info['step_at_ping_start']}->{info['step_at_ping_end']} during "
        f"the {info['ping_window_s']:.1f} s of pings, {info['progress_replies_during_pings']} "
        f"/progress, max gap {info['max_progress_gap_s']:.2f} s; {ran} after the pings, "
        f"ended by: {' '.join(info['render_end_reply'][:1] + info['render_end_reply'][2:])}"
    )
    print()
    print(f"pipelined throughput (one socket, at most {args.window} in flight)")
    print(
        f"  {'':<28} {'sent':>6} {'answered':>8} {'lost':>5} {'unexp':>5} {'elapsed_s':>9}"
        f" {'answered/s':>11}"
    )
    print(throughput_row("ping -> /pong", results["tp_ping"]))
    print(throughput_row("bpm 5000 render -> /fail", results["tp_fail"]))
    print()
    print("in-process parse_packet + parse_message (median of 5 rounds)")
    print(f"  {'':<22} {'bytes':>6} {'msgs/s':>10} {'best/s':>10} {'us/msg':>8}")
    for name, micro_result in micro.items():
        print(
            f"  {name:<22} {micro_result['bytes']:>6} {micro_result['msgs_per_s_median']:>10.0f}"
            f" {micro_result['msgs_per_s_best']:>10.0f} {micro_result['us_per_msg_median']:>8.2f}"
        )
    print()
    print(
        f"load average before {env['load_before']}, after {env['load_after']}; daemon ready "
        f"after {results['ready_s']:.1f} s, exit code {exit_code}, "
        f"{env['daemon_warning_lines']} WARNING log lines"
    )
    report = {
        "benchmark": "latentloop-osc",
        **env,
        "params": params,
        "ping_idle": idle_json,
        "ping_during_render": {**busy_json, **info},
        "throughput_ping": results["tp_ping"],
        "throughput_invalid_render": results["tp_fail"],
        "parse": micro,
        "daemon_ready_s": results["ready_s"],
    }
    print(json.dumps(_rounded(report), sort_keys=False))
    return 0


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
