"""A real JACK server (dummy backend, no sound card) and a capture client, for playback tests.

Pitfalls (../shared/reference/test-infra.md): PortAudio lists JACK only if the server runs when
it initialises, so an in-process user re-scans (``sd._terminate(); sd._initialize()``) after
start; PortAudio's JACK client must be closed before the server stops (else an abort at exit),
so the in-process teardown terminates PortAudio first, and a daemon under test is stopped
before the server.

``realtime=True`` runs the server (and its clients' process threads, PortAudio's callback
among them) with real-time scheduling, as a music machine does; root in CI may do that.
JACK2's dummy driver paces itself in real time (a shorter ``--wait`` only causes xruns), so a
test lasts as long as the audio it captures.
"""

import os
import subprocess
import threading
import time
from contextlib import contextmanager

import numpy as np
from tests.conftest import require_tool


class JackServer:
    """``jackd -d dummy`` on its own server name, so parallel runs never share one."""

    def __init__(self, tmp_path, rate=44100, period=1024, name=None, realtime=False):
        self.rate, self.period = rate, period
        self.name = name or f"lltest{os.getpid()}_{time.monotonic_ns() % 10**6}"
        self.env = {"JACK_DEFAULT_SERVER": self.name, "JACK_NO_AUDIO_RESERVATION": "1"}
        jackd = require_tool("jackd")
        self.log_path = tmp_path / "jackd.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [jackd, "-n", self.name, "--realtime" if realtime else "--no-realtime", "-d", "dummy",
             "-r", str(rate), "-p", str(period)],
            env={**os.environ, **self.env}, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self, timeout=15.0):
        import jack

        deadline = time.monotonic() + timeout
        while True:
            try:
                client = jack.Client("probe", no_start_server=True, servername=self.name)
                client.close()
                return
            except jack.JackError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "jackd did not start:\n" + self.log_path.read_text()
                    ) from None
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class XrunDuringCapture(AssertionError):
    """A capture did not match while the JACK graph reported an xrun (a missed period).

    On a loaded shared machine a period can be missed by any client (the capture, PortAudio's
    callback, jackd): the captured stream then has a gap that says nothing about the player.
    Tests that compare captures rerun on this error only (``pytest.mark.flaky(only_rerun=...)``);
    a mismatch without an xrun fails at once.
    """


class Capture:
    """A JACK client recording ``channels`` inputs into a preallocated buffer.

    ``connect(pattern)`` wires the newest output ports matching ``pattern`` to it. Each
    period's first frame (JACK's frame clock) is kept too, so captures can be aligned.
    """

    def __init__(self, server, seconds, channels=2, name="capture"):
        import jack

        self.client = jack.Client(name, no_start_server=True, servername=server.name)
        self.ports = [self.client.inports.register(f"in_{i}") for i in range(channels)]
        self.buffer = np.zeros((round(seconds * server.rate), channels), np.float32)
        self.frames = 0
        self.xruns = 0
        self.full = threading.Event()
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _process(self, n):
        start = self.frames
        stop = min(start + n, self.buffer.shape[0])
        for channel, port in enumerate(self.ports):
            self.buffer[start:stop, channel] = port.get_array()[: stop - start]
        self.frames = stop
        if stop >= self.buffer.shape[0]:
            self.full.set()

    def _xrun(self, delayed_usecs):
        self.xruns += 1

    @contextmanager
    def explains_mismatch(self):
        """Re-raise a failed comparison as ``XrunDuringCapture`` when the graph had an xrun."""
        try:
            yield
        except AssertionError as e:
            if self.xruns:
                raise XrunDuringCapture(f"{self.xruns} xrun(s) during the capture: {e}") from e
            raise

    def connect(self, pattern, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            outs = self.client.get_ports(pattern, is_audio=True, is_output=True)
            if len(outs) >= len(self.ports) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        every = [p.name for p in self.client.get_ports(is_output=True)]
        assert len(outs) >= len(self.ports), f"no output ports match {pattern!r}: {every}"
        for src, dst in zip(outs[-len(self.ports) :], self.ports, strict=True):
            self.client.connect(src, dst)

    def wait(self, timeout):
        assert self.full.wait(timeout), f"captured {self.frames} of {self.buffer.shape[0]} frames"
        return self.buffer

    @property
    def audio(self):
        return self.buffer[: self.frames]

    def close(self):
        self.client.deactivate()
        self.client.close()


def first_sound(audio, threshold=0.0):
    """Index of the first sample whose magnitude exceeds ``threshold``."""
    hits = np.flatnonzero(np.abs(audio).max(axis=1) > threshold)
    assert hits.size, "nothing was captured but silence"
    return int(hits[0])
