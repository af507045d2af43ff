"""``python -m latentloop_plugin``: run the plugin stub like a host would.

Opens the audio output at the host tempo, clicks a count-in, asks the daemon for a loop at that
tempo, plays it from the next bar for ``--loops`` repeats, then exits. Prints one line per event
(``scheduled <bar> <sample> <frames> <path>`` names the bar and the sample of the stub's own
clock where the loop's first sample plays).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from latentloop_plugin.stub import Launch, PluginStub, Transport


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m latentloop_plugin", description=__doc__)
    p.add_argument("prompt")
    p.add_argument("--bpm", type=float, default=120.0, help="the host tempo")
    p.add_argument("--bars", type=float, default=1.0, help="loop length in bars")
    p.add_argument("--beats-per-bar", type=int, default=4)
    p.add_argument("--rate", type=int, default=44100, help="output rate (= the daemon's files)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7878)
    p.add_argument("--device", default=None, help="PortAudio output device (index or name)")
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--count-in", type=int, default=2, help="metronome bars before the request")
    p.add_argument("--loops", type=int, default=2, help="repeats to play before exiting")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--token", default=None, help="the daemon's shared token, if it has one")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)

    transport = Transport(args.bpm, args.beats_per_bar, args.rate)
    scheduled: list[Launch] = []
    failed: list[str] = []
    event = threading.Event()

    def on_event(kind: str, value: object) -> None:
        if kind == "scheduled" and isinstance(value, Launch):
            print(f"scheduled {value.bar} {value.start} {value.frames} {value.path}", flush=True)
            scheduled.append(value)
            event.set()
        elif kind == "fail":
            print(f"fail {value}", flush=True)
            failed.append(str(value))
            event.set()
        elif kind == "done":
            print(f"done {getattr(value, 'path', value)}", flush=True)

    device = int(args.device) if args.device and args.device.isdigit() else args.device
    stub = PluginStub(transport, args.host, args.port, device=device,
                      block_size=args.block_size, on_event=on_event)  # fmt: skip
    options = {k: v for k, v in [("steps", args.steps), ("seed", args.seed),
                                 ("token", args.token)] if v is not None}  # fmt: skip
    stub.start()
    try:
        print(f"clock {transport.rate} {float(transport.bar):.6f}", flush=True)
        wait_until(lambda: stub.position >= transport.bar_sample(args.count_in), args.timeout)
        stub.request(args.prompt, args.bars, **options)
        if not event.wait(args.timeout) or failed:
            return 1
        launch = scheduled[0]
        wait_until(lambda: stub.position >= launch.start + args.loops * launch.frames, args.timeout)
        print(f"played {args.loops} loops; position {stub.position}", flush=True)
        return 0
    finally:
        stub.close()


def wait_until(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the audio clock did not advance (is the output device running?)")
        time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
