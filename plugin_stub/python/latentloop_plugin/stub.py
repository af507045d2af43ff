"""The shape of a latentloop plugin (JUCE, CLAP, VST3), in Python.

A plugin holds the host's tempo and transport position, asks the daemon for a loop at that
tempo, and brings the loop in on the next bar of its own output. Three threads, as in a plugin:

- the **host/UI thread** calls `PluginStub.request(prompt, bars)`; it never waits on the network;
- the **message thread** (`latentloop-osc`) owns the OSC socket (`latentloop_bridge.client`):
  it sends the render with the host tempo, waits for `/done`, reads the WAV (soundfile) into
  memory, picks the next bar and publishes the loop to the audio thread with one reference
  assignment;
- the **audio thread** (PortAudio's callback, `PluginStub._callback`) counts samples (the
  transport position: the stub's own sample clock) and writes the loop from its start bar on.
  It never allocates audio memory, does no I/O and takes no locks.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import soundfile as sf

from latentloop_bridge.client import Client, Done

logger = logging.getLogger("latentloop_plugin")

CLICK = 0.5  # the metronome's one-sample click (count-in, until a loop plays)


@dataclass(frozen=True)
class Transport:
    """Host tempo and meter at the output rate. Bar ``k`` starts at sample ``round(k * bar)``,
    rounded from its exact position (never from the previous bar), so bars do not drift."""

    bpm: float
    beats_per_bar: int = 4
    rate: int = 44100
    _num: int = field(init=False, repr=False, compare=False, default=0)
    _den: int = field(init=False, repr=False, compare=False, default=1)

    @property
    def bar(self) -> Fraction:
        """One bar in samples, exactly."""
        return Fraction(self.beats_per_bar * 60 * self.rate) / Fraction(self.bpm)

    def bar_sample(self, k: int) -> int:
        """Bar ``k``'s first sample: ``k * bar`` rounded half up, in integers only (the audio
        thread calls it for the metronome)."""
        return (2 * k * self._num + self._den) // (2 * self._den)

    def __post_init__(self) -> None:  # the bar as integers, computed once
        object.__setattr__(self, "_num", self.bar.numerator)
        object.__setattr__(self, "_den", self.bar.denominator)

    def next_bar(self, position: int) -> tuple[int, int]:
        """The first bar starting at or after sample ``position``: (bar, its sample)."""
        k = -(-position * self.bar.denominator // self.bar.numerator)  # ceil(position / bar)
        while self.bar_sample(k) < position:
            k += 1
        return k, self.bar_sample(k)


@dataclass(eq=False)
class Launch:
    """A loop published to the audio thread: its samples (float32, [frames, channels]) and the
    transport sample where its first sample plays. ``previous`` keeps playing until then."""

    audio: np.ndarray
    start: int
    bar: int
    path: str
    previous: Launch | None = None
    frames: int = field(init=False)

    def __post_init__(self) -> None:
        self.frames = int(self.audio.shape[0])


class PluginStub:
    """A plugin-shaped latentloop client with its own audio output.

    Args:
        transport: the host's tempo, meter and the output rate (the daemon's files must have
            this rate: a real plugin would resample on the message thread).
        host, port: the daemon.
        device: the PortAudio output device (None: the default).
        block_size: frames per callback.
        metronome: click on every bar until a loop plays (the count-in).
        on_event: called on the message thread with ``(kind, value)``: ``("queued", id)``,
            ``("done", Done)``, ``("scheduled", Launch)``, ``("fail", message)``.
    """

    def __init__(
        self,
        transport: Transport,
        host: str = "127.0.0.1",
        port: int = 7878,
        *,
        device: int | str | None = None,
        block_size: int = 1024,
        channels: int = 2,
        metronome: bool = True,
        on_event: Callable[[str, object], None] | None = None,
    ) -> None:
        self.transport = transport
        self.daemon = (host, port)
        self.device = device
        self.block_size = block_size
        self.channels = channels
        self.metronome = metronome
        self.on_event = on_event or (lambda kind, value: None)
        # shared with the audio thread: plain references, each written by one thread only
        self.position = 0  # samples written (audio thread)
        self._launch: Launch | None = None  # message thread publishes, audio thread reads
        self._next_click = 0  # audio thread
        self._click_bar = 0  # audio thread
        # preallocated for the callback (never resized there)
        self._ramp = np.arange(8 * block_size, dtype=np.int64)
        self._index = np.zeros(8 * block_size, dtype=np.int64)
        self._scratch = np.zeros((8 * block_size, channels), dtype=np.float32)
        self._requests: queue.Queue[tuple[str, float, dict[str, object]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stream: object | None = None

    # --- host / UI thread ---------------------------------------------------------------

    def start(self) -> None:
        """Open the audio output and the message thread."""
        import sounddevice as sd

        stream = sd.OutputStream(
            samplerate=self.transport.rate, blocksize=self.block_size, channels=self.channels,
            dtype="float32", device=self.device, callback=self._callback,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._message_loop, name="latentloop-osc")
        self._thread.start()
        stream.start()
        self._stream = stream

    def request(self, prompt: str, bars: float, **options: object) -> None:
        """Ask for a loop at the host tempo; it comes in on the bar after its file is ready."""
        self._requests.put((prompt, bars, options))

    def close(self) -> None:
        """Stop the message thread and the stream."""
        self._requests.put(None)
        if self._thread is not None:
            self._thread.join()
        if self._stream is not None:
            self._stream.stop()  # type: ignore[attr-defined]
            self._stream.close()  # type: ignore[attr-defined]

    # --- message thread -----------------------------------------------------------------

    def _message_loop(self) -> None:
        with Client(*self.daemon, timeout=10.0) as client:
            while (item := self._requests.get()) is not None:
                prompt, bars, options = item
                try:
                    done = client.render_and_wait(
                        prompt, bpm=self.transport.bpm, bars=bars,
                        beats_per_bar=self.transport.beats_per_bar, **options,  # type: ignore[misc]
                    )  # fmt: skip
                except Exception as error:  # a plugin reports and keeps running
                    logger.warning("render failed: %s", error)
                    self.on_event("fail", str(error))
                    continue
                self.on_event("done", done[0])
                self.schedule(done[0])

    def schedule(self, done: Done) -> Launch:
        """Read the file and publish it for the next bar (message thread, never the audio
        thread: reading a file and allocating its samples are not real-time safe)."""
        audio, rate = sf.read(done.path, dtype="float32", always_2d=True)
        if rate != self.transport.rate:
            raise ValueError(f"{done.path} is at {rate} Hz, the output at {self.transport.rate}")
        if audio.shape[1] != self.channels:  # mono to every channel, or the first channels
            audio = np.ascontiguousarray(
                np.tile(audio[:, :1], (1, self.channels))
                if audio.shape[1] == 1
                else audio[:, : self.channels]
            )
        # the block being written may already be past `position`: aim two blocks later
        bar, start = self.transport.next_bar(self.position + 2 * self.block_size)
        current = self._launch
        if current is not None and self.position < current.start:
            current = current.previous  # replace a launch that has not started yet
        launch = Launch(audio, start, bar, done.path, previous=current)
        self._launch = launch  # one reference assignment: the audio thread sees all or nothing
        if current is not None:
            current.previous = None  # older loops are freed here, never on the audio thread
        self.on_event("scheduled", launch)
        return launch

    # --- audio thread -------------------------------------------------------------------

    def _callback(
        self, outdata: np.ndarray, frames: int, time_info: object, status: object
    ) -> None:
        """REAL-TIME (PortAudio's audio thread): no allocation of audio memory (every buffer
        is preallocated, numpy writes with ``out=``), no I/O, no logging, no locks, and it
        drops no reference (so nothing is freed here); it reads the published launch once per
        block and writes only its own fields. (CPython still makes small int objects here; a
        C++ plugin would not.)"""
        pos = self.position
        launch = self._launch
        if launch is None or pos + frames <= launch.start:
            source = None if launch is None else launch.previous
        else:
            source = launch
        if source is None:
            outdata.fill(0.0)
        else:
            self._write(source, pos, frames, outdata)
        if launch is not None and launch.start < pos + frames:
            if pos < launch.start:  # the new loop starts inside this block
                offset = launch.start - pos
                if launch.previous is not None:
                    self._write(launch.previous, pos, offset, outdata[:offset])
                else:
                    outdata[:offset].fill(0.0)
        playing = launch is not None and launch.start < pos + frames
        while self.metronome and self._next_click < pos + frames:
            if not playing or self._next_click < launch.start:  # type: ignore[union-attr]
                outdata[self._next_click - pos] = CLICK
            self._click_bar += 1
            self._next_click = self.transport.bar_sample(self._click_bar)
        self.position = pos + frames

    def _write(self, launch: Launch, pos: int, frames: int, out: np.ndarray) -> None:
        """``out[i] = loop[(pos + i - start) mod frames]``: the loop anchored at its start bar."""
        index = self._index[:frames]
        np.add(self._ramp[:frames], pos - launch.start, out=index)
        np.remainder(index, launch.frames, out=index)
        np.take(launch.audio, index, axis=0, out=self._scratch[:frames])
        out[:] = self._scratch[:frames]
