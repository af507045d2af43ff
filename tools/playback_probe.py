"""Why does the audio callback start late while the model renders? A diagnostic, not a test.

Runs what ``latentloop serve`` runs, in one process: a JACK dummy server (started here), the
player on it playing a loop, and a render thread making loops with the built-in ``tiny`` model
(``make_loops``, as the render worker does). Meanwhile it records:

- every callback: when it started (``perf_counter``), the JACK cycle it belongs to
  (``currentTime``), whether PortAudio flagged an underflow, and the callback thread's wait on
  the run queue (``/proc/.../schedstat``: time runnable but not running = CPU starvation);
- a probe thread that sleeps 1 ms in a loop: how late it wakes (= the GIL held by another
  thread, plus CPU starvation, which its own schedstat separates);
- the render stage at each moment (T5, sampling, VAE decode from the backend's stage clock;
  seam, loudness, tempo, file writing from the pipeline).

It prints, per stage, the probe's late wakes split into run-queue wait and the rest (GIL), and
the callbacks' lateness and underruns. ``--nice N`` lowers the render thread's priority;
``--realtime`` runs jackd (and so the callback thread) with real-time scheduling::

    .venv/bin/python tools/playback_probe.py --seconds 20 --block 1024 [--realtime] [--nice 10]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

_stage = ["idle"]  # the render thread's current stage (written there, read by the probe)


def schedstat_ns(tid: int) -> tuple[int, int]:
    """(on-CPU ns, run-queue wait ns) of thread ``tid``."""
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        run, wait, _ = f.read().split()
    return int(run), int(wait)


def instrument() -> None:
    """Record the render stage: the backend's stage clock and the pipeline's post-processing."""
    from latentloop_daemon.backends.sat import backend
    from latentloop_daemon.files import writer
    from latentloop_daemon.loops import pipeline

    original_stage = backend._StageClock.stage

    def stage(self: object, name: str) -> None:
        _stage[0] = f"model:{name}"
        original_stage(self, name)  # type: ignore[arg-type]

    backend._StageClock.stage = stage  # type: ignore[method-assign]

    def wrap(module: object, name: str, label: str) -> None:
        fn = getattr(module, name)

        def wrapped(*args: object, **kwargs: object) -> object:
            before, _stage[0] = _stage[0], label
            try:
                return fn(*args, **kwargs)
            finally:
                _stage[0] = before

        setattr(module, name, wrapped)

    wrap(pipeline, "make_seamless", "post:seam")
    wrap(pipeline, "normalize", "post:loudness")
    wrap(pipeline, "estimate_tempo", "post:tempo")
    wrap(writer, "write_clips", "write")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--realtime", action="store_true", help="jackd with -R")
    parser.add_argument("--nice", type=int, default=0, help="the render thread's nice value")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: the daemon's rule")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after loading")
    parser.add_argument("--render-seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()

    from jackd import JackServer

    tmp = Path(tempfile.mkdtemp(prefix="llprobe"))
    server = JackServer(tmp, rate=44100, period=args.block, realtime=args.realtime)
    os.environ.update(server.env)
    try:
        report = run(args, tmp)
    finally:
        import sounddevice as sd

        sd._terminate()  # PortAudio's JACK client goes before the server
        server.stop()
    xruns = server.log_path.read_text().count("was not finished")
    report["jackd_not_finished"] = xruns
    print(json.dumps(report))


def run(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    import gc

    import torch

    from latentloop_daemon.backends import load_engine
    from latentloop_daemon.config import AudioConfig, RenderConfig
    from latentloop_daemon.loops.pipeline import LoopRequest, make_loops
    from latentloop_daemon.playback.player import Player
    from latentloop_daemon.playback.source import Loop
    from latentloop_daemon.service.playback import limit_torch_threads

    gc_log: list[tuple[int, float, str]] = []  # (generation, seconds, thread) per collection
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_log.append((info["generation"], time.perf_counter() - gc_start[0],
                           threading.current_thread().name))  # fmt: skip

    gc.callbacks.append(on_gc)
    instrument()
    engine = load_engine("tiny")
    if args.gc_freeze:
        gc.freeze()
    limit_torch_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    settings = RenderConfig(out_dir=str(tmp / "out"), format="float")
    first = make_loops(engine, LoopRequest("loop", bpm=120, bars=1, seed=1, steps=2), settings,
                       tmp / "out", lambda _: {})  # fmt: skip

    class Quiet:
        def playing(self, *a: object) -> None: ...
        def bar(self, *a: object) -> None: ...
        def audio_off(self, *a: object) -> None: ...

    player = Player(AudioConfig(block_size=args.block), Quiet())
    player.start()
    n = int(args.seconds * 44100 / args.block) + 200
    entry = np.zeros(n)
    jack_t = np.zeros(n)
    flag = np.zeros(n, np.int8)
    stage_at = [""] * n
    count = [0]
    cb_tid = [0]
    original = player._callback

    def callback(outdata, frames, time_info, status):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        i = count[0]
        if i < n:
            entry[i], jack_t[i] = t, time_info.currentTime
            flag[i] = bool(status.output_underflow)
            stage_at[i] = _stage[0]
            count[0] = i + 1
            if not cb_tid[0]:
                cb_tid[0] = threading.get_native_id()
        original(outdata, frames, time_info, status)

    player._callback = callback  # type: ignore[method-assign]
    player.close()  # reopen with the wrapper as the callback
    player.start()
    clip, wav = first.clips[0], first.wavs[0]
    player.submit(lambda: player.play(0, Loop.from_clip(clip, str(wav), 1), "bar")).result(30)

    stop = threading.Event()
    renders = [0]

    def render_loop() -> None:
        if args.nice:  # Linux: this thread only (threads are scheduled one by one)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), args.nice)
        seed = 10
        while not stop.is_set():
            request = LoopRequest("more", seconds=args.render_seconds, seed=seed, steps=args.steps)
            make_loops(engine, request, settings, tmp / "out", lambda _: {})
            _stage[0] = "idle"
            renders[0] += 1
            seed += 1

    # the probe: sleep 1 ms, record how late it wakes and its run-queue wait meanwhile
    late_by_stage: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    cb_wait_by_stage: dict[str, int] = collections.defaultdict(int)

    def probe() -> None:
        tid = threading.get_native_id()
        last_cb = 0
        while not stop.is_set():
            _, w0 = schedstat_ns(tid)
            t0 = time.perf_counter()
            time.sleep(0.001)
            late = time.perf_counter() - t0 - 0.001
            _, w1 = schedstat_ns(tid)
            late_by_stage[_stage[0]].append((late, (w1 - w0) / 1e9))
            if cb_tid[0]:
                _, cw = schedstat_ns(cb_tid[0])
                if last_cb:
                    cb_wait_by_stage[_stage[0]] += cw - last_cb
                last_cb = cw

    worker = threading.Thread(target=render_loop, name="render-worker", daemon=True)
    prober = threading.Thread(target=probe, name="probe", daemon=True)
    time.sleep(1.0)
    start_count = count[0]
    gc_mark = len(gc_log)
    worker.start()
    prober.start()
    time.sleep(args.seconds)
    stop.set()
    worker.join(60)
    prober.join(5)
    end = count[0]
    player.close()

    gc.callbacks.remove(on_gc)
    gcs: dict[str, list[float]] = collections.defaultdict(list)
    for gen, seconds, thread in gc_log[gc_mark:]:
        gcs[f"gen{gen}@{'callback' if thread.startswith('Dummy') else thread}"].append(seconds)
    gc_summary = {k: {"n": len(v), "max_ms": round(1000 * max(v), 2)} for k, v in gcs.items()}
    sl = slice(start_count, end)
    lateness = entry[sl] - jack_t[sl]
    lateness -= lateness.min()
    by_stage: dict[str, dict[str, object]] = {}
    stages = sorted(set(late_by_stage) | set(stage_at[sl]))
    for st in stages:
        pr = np.array(late_by_stage.get(st, [(0.0, 0.0)]))
        idx = [i for i in range(start_count, end) if stage_at[i] == st]
        lat = lateness[[i - start_count for i in idx]] if idx else np.zeros(1)
        by_stage[st] = {
            "probe_n": len(late_by_stage.get(st, [])),
            "probe_late_p99_ms": round(1000 * float(np.percentile(pr[:, 0], 99)), 2),
            "probe_late_max_ms": round(1000 * float(pr[:, 0].max()), 2),
            "probe_runq_share_of_late": round(float(pr[:, 1].sum() / max(pr[:, 0].sum(), 1e-9)), 2),
            "callbacks": len(idx),
            "cb_late_p99_ms": round(1000 * float(np.percentile(lat, 99)), 2),
            "cb_late_max_ms": round(1000 * float(lat.max()), 2),
            "cb_runq_wait_ms": round(cb_wait_by_stage.get(st, 0) / 1e6, 1),
            "underflows": int(flag[idx].sum()) if idx else 0,
        }
    return {
        "block": args.block,
        "realtime": args.realtime,
        "nice": args.nice,
        "torch_threads": torch.get_num_threads(),
        "seconds": args.seconds,
        "renders": renders[0],
        "callbacks": end - start_count,
        "underflows": int(flag[sl].sum()),
        "cb_late_p99_ms": round(1000 * float(np.percentile(lateness, 99)), 2),
        "cb_late_max_ms": round(1000 * float(lateness.max()), 2),
        "load": os.getloadavg()[0],
        "gc": gc_summary,
        "stages": by_stage,
    }


if __name__ == "__main__":
    main()
