"""The player: a sounddevice output stream (callback mode) and the control thread around it.

Threads:
- PortAudio's callback thread runs ``_callback`` -> ``Mixer.render`` (REAL-TIME: no
  allocation of audio memory, no I/O, no logging, no locks; see ``mixer``);
- the control thread ("player") runs every request (``play``, ``stop``, ``set_tempo``, ...) in
  order from a task queue, so clip preparation (resample, stretch) never blocks the OSC
  dispatch thread or the callback; between tasks it sends ``/playing`` when a clip becomes
  audible, ``/bar`` bundles ahead of each audible downbeat, reports underruns, follows Link
  and watches the stream (a device that stops calling back turns playback off);
- callers (OSC dispatch, render worker) get a ``Future`` per request.

The stream runs at the device's own rate (JACK accepts no other); clips are converted when
they are queued (``conform.prepare``).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from latentloop_daemon.errors import AudioDeviceError, PlaybackError
from latentloop_daemon.playback import devices
from latentloop_daemon.playback.clock import StreamClock, paired
from latentloop_daemon.playback.conform import prepare
from latentloop_daemon.playback.mixer import Launch, Mixer, Voice
from latentloop_daemon.playback.source import Loop
from latentloop_daemon.playback.transport import Grid, start_grid

if TYPE_CHECKING:
    from latentloop_daemon.config import AudioConfig
    from latentloop_daemon.playback.link import LinkSession

logger = logging.getLogger(__name__)
T = TypeVar("T")
_TICK_S = 0.005
_SWITCH_INTERVAL_S = 0.0005
_STALL_S = 2.0  # no callback for this long while the stream should run: the device is gone
_LINK_CONFIRM = 3  # consecutive phase checks (one a tick) that must agree before a nudge
_CLOSING_WAIT_S = 3.0  # how long a restart waits for a vanished device's stream to close


class PlayerEvents(Protocol):
    """What the player reports (called on the control thread)."""

    def playing(self, slot: int, job_id: int, path: str) -> None: ...

    def bar(self, bar: int, bpm: float, beats_per_bar: int, audible_unix_s: float) -> None: ...

    def audio_off(self, message: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Playing:
    """The control thread's view of a slot: the loop and the launch that started it."""

    loop: Loop
    launch: Launch


class Player:
    """Slots on one output stream, a transport, and a control thread; ``start`` then requests."""

    def __init__(self, config: AudioConfig, events: PlayerEvents) -> None:
        self.config = config
        self.events = events
        self.device: devices.Device | None = None
        self.mixer: Mixer | None = None
        self._clock: StreamClock | None = None
        self._link_misses = 0
        self.stream: Any = None
        self.sample_rate = 0
        self.channels = 0
        self.running = False  # the transport
        self.bpm: Fraction | None = Fraction(config.bpm) if config.bpm else None
        self.beats_per_bar = config.beats_per_bar
        self.user_tempo = config.bpm != 0
        self.playing: dict[int, Playing] = {}
        self.link: LinkSession | None = None
        self.error: str | None = None
        self.stretch_times_s: list[float] = []
        self.callback_s = np.zeros(4096, np.float64)  # ring of callback durations (benchmarks)
        self._tasks: queue.Queue[tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._notices: list[tuple[int, Launch, int, int, str]] = []  # (at, launch, slot, job, path)
        self._next_bar: int | None = None
        self._underruns_reported = 0
        self._last_blocks = (0, time.monotonic())
        self._closing: threading.Thread | None = None  # closes a vanished device's stream

    # --- lifecycle (the service's thread) -----------------------------------------------------

    def start(self) -> None:
        """Open the stream on the configured device and start the control thread.

        Raises:
            devices.NoOutputDevice: there is no output device (file-only mode).
            devices.UnknownDevice: ``[audio] device`` names none of them.
            AudioDeviceError: the device could not be opened.
        """
        self._open_stream()
        # A thread that wants the GIL waits up to the switch interval (5 ms by default) for
        # the holder to let go: the callback must not wait that long (docs/perf.md)
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._control_loop, name="player", daemon=True)
        self._thread.start()
        if self.config.link:
            self.submit(lambda: self._set_link(True)).result(10)

    def find_device(self) -> devices.Device:
        """Look up ``[audio] device`` without opening it (the same errors as ``start``)."""
        self.device = devices.choose(self.config.device)
        return self.device

    def close(self) -> None:
        """Stop the control thread, then the stream (before any JACK server goes away)."""
        if self._thread is not None:
            self._tasks.put(None)
            self._thread.join(5)
            self._thread = None
        self._close_stream()
        if self.link is not None:
            self.link.close()
            self.link = None

    @property
    def active(self) -> bool:
        return self.stream is not None

    @property
    def device_name(self) -> str:
        return self.device.name if self.device is not None else ""

    def submit(self, task: Callable[[], T]) -> Future[T]:
        """Run ``task`` on the control thread; its result or exception comes in the future."""
        future: Future[T] = Future()
        if self._thread is None:
            future.set_exception(PlaybackError("playback is off", code="no_audio"))
        else:
            self._tasks.put((task, future))
        return future

    # --- requests (run on the control thread through ``submit``) -------------------------------

    def play(self, slot: int, loop: Loop, quantize: str) -> tuple[int, int]:
        """Queue ``loop`` into ``slot`` at the next ``quantize`` boundary: (slot, bar)."""
        mixer = self._mixer()
        self._check_slot(slot)
        if not self.running:
            if self.bpm is None or not self.user_tempo:
                self.bpm = loop.bpm if loop.bpm is not None else self.bpm or Fraction(120)
            if loop.bpm is not None and not self.user_tempo:
                self.beats_per_bar = loop.beats_per_bar
        grid = mixer.grid if self.running else None
        fpb = (grid.frames_per_beat if grid else self._frames_per_beat()) if loop.beats else None
        prepared = prepare(
            loop, self.sample_rate, self.channels, fpb, self.config.conform,
            float(self.bpm) if self.bpm else None,
        )  # fmt: skip
        if prepared.stretched:
            self.stretch_times_s.append(prepared.stretch_s / (loop.frames / loop.sample_rate))
        if grid is None:  # from silence: bar 0 starts now, with this loop on it
            grid = self._start_transport()
            at, beat = grid.bar_frame(0), 0
        else:
            at, beat = grid.next_boundary(self._earliest(), quantize)
        anchored = prepared.beats is not None and quantize != "now"
        voice = Voice(prepared.audio, prepared.beats if anchored else None, beat, loop)
        launch = mixer.slots[slot].publish(Launch(voice, at, 0, at))
        self.playing[slot] = Playing(loop, launch)
        self._notices.append((at, launch, slot, loop.job_id, loop.path))
        return slot, grid.bar_of_beat(beat)

    def stop(self, slot: int | None, quantize: str) -> int:
        """Stop one slot (None: all) at the next boundary, fading out; the bar it stops on."""
        mixer = self._mixer()
        if slot is not None:
            self._check_slot(slot)
        if not self.running or mixer.grid is None:
            at, bar = self._earliest(), 0
        else:
            at, beat = mixer.grid.next_boundary(self._earliest(), quantize)
            bar = mixer.grid.bar_of_beat(beat)
        for index in [slot] if slot is not None else list(self.playing):
            if index in self.playing:
                mixer.slots[index].publish(Launch(None, at))
                del self.playing[index]
        return bar

    def set_gain(self, slot: int, db: float) -> float:
        """Set a slot's gain in dB (-inf or <= -120: silent); returns the linear gain."""
        self._check_slot(slot)
        linear = 0.0 if db <= -120 else 10 ** (db / 20)
        self._mixer().slots[slot].gain = linear
        return linear

    def set_tempo(self, bpm: float, beats_per_bar: int | None) -> int:
        """Change the tempo (and meter) from the next bar: the bar it takes effect on.

        Playing loops are re-conformed to the new tempo before the change is published, and
        swapped in at that bar, keeping their phase. With Link on, this sets the session tempo.
        """
        if self.link is not None:
            self.link.set_tempo(bpm)
        return self._change_tempo(Fraction(bpm), beats_per_bar or self.beats_per_bar, user=True)

    def set_transport(self, run: bool) -> int:
        """Start (bar 0 now) or stop (every slot fades out now) the transport; the bar."""
        mixer = self._mixer()
        if run and not self.running:
            self._start_transport()
            return 0
        if not run and self.running:
            self.stop(None, "now")
            self.running = False
            mixer.set_grid(None)
        return 0

    def set_link(self, enabled: bool) -> int:
        """Join or leave the Link session; returns the number of peers."""
        return self._set_link(enabled)

    def restart(self) -> str:
        """Close the stream, re-scan the devices and open it again: the device's name.

        Raises:
            AudioDeviceError: a vanished device's stream is still being closed (PortAudio
                cannot be re-initialised before), or the device cannot be opened.
        """
        closing = self._closing
        if closing is not None:
            closing.join(_CLOSING_WAIT_S)
            if closing.is_alive():
                raise AudioDeviceError(
                    "PortAudio is still closing the stream of the device that went away (its "
                    "JACK backend waits up to 10 minutes for a server that is gone); try again "
                    "later"
                )
            self._closing = None
            devices.terminate_at_exit(True)
        self._close_stream()
        devices.rescan()
        self._open_stream()
        self.error = None
        assert self.device is not None
        return self.device.name

    # --- status (any thread; reads only) ------------------------------------------------------

    def transport_text(self) -> str:
        """``running=1 bpm=120 beats_per_bar=4 bar=3 beat=1.50 underruns=0 link_peers=0 ...``"""
        mixer = self.mixer
        grid = mixer.grid if mixer is not None else None
        bar, beat = 0, 0.0
        if grid is not None and mixer is not None and self.running:
            heard = self._audible_frame()
            bar, beat = grid.bar_at(heard), grid.beat_in_bar(heard)
        peers = self.link.peers() if self.link is not None else -1
        return (
            f"running={int(self.running)} bpm={float(self.bpm or 0):.3f} "
            f"beats_per_bar={self.beats_per_bar} bar={bar} beat={beat:.2f} "
            f"underruns={mixer.underruns if mixer else 0} link_peers={peers} "
            f"audio={'on' if self.stream is not None else 'off'} rate={self.sample_rate} "
            f"callback_p50_ms={self._callback_ms(50):.3f} "
            f"callback_p99_ms={self._callback_ms(99):.3f} "
            f"callback_max_ms={self._callback_ms(100):.3f} "
            f"device={self.device.name if self.device else ''}"
        )

    def slots_text(self) -> str:
        """``<slot>:<job id>:<path>`` per playing slot, joined by ``;``."""
        return ";".join(
            f"{slot}:{p.loop.job_id}:{p.loop.path}" for slot, p in sorted(self.playing.items())
        )

    def _callback_ms(self, percentile: float) -> float:
        """A percentile of the last 4096 callbacks' CPU time, in ms (0 before any)."""
        mixer = self.mixer
        count = min(mixer.blocks, self.callback_s.shape[0]) if mixer is not None else 0
        if count == 0:
            return 0.0
        return 1000 * float(np.percentile(self.callback_s[:count], percentile))

    # --- internals --------------------------------------------------------------------------

    def _mixer(self) -> Mixer:
        if self.mixer is None or self.stream is None:
            why = f": {self.error}" if self.error else ""
            raise PlaybackError(f"playback is off{why}", code="no_audio")
        return self.mixer

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.config.slots:
            raise PlaybackError(f"slot must be 0..{self.config.slots - 1}, got {slot}")

    def _frames_per_beat(self) -> Fraction:
        return Fraction(60 * self.sample_rate) / (self.bpm or Fraction(120))

    def _earliest(self) -> int:
        """The first sample a launch can still reach: past the block being written now (the
        host may deliver blocks longer than asked for: the longest seen so far counts)."""
        mixer = self._mixer()
        return mixer.frame + max(mixer.max_frames, mixer.largest_block) + 64

    def _start_transport(self) -> Grid:
        mixer = self._mixer()
        bpm = self.bpm or Fraction(120)
        self.bpm = bpm
        grid = start_grid(bpm, self.beats_per_bar, self.sample_rate, self._earliest())
        mixer.set_grid(grid)
        self.running = True
        self._next_bar = 0
        return grid

    def _change_tempo(self, bpm: Fraction, beats_per_bar: int, user: bool) -> int:
        mixer = self._mixer()
        self.user_tempo = self.user_tempo or user
        if not self.running or mixer.grid is None:
            self.bpm, self.beats_per_bar = bpm, beats_per_bar
            return 0
        old = mixer.grid
        fpb = Fraction(60 * self.sample_rate) / bpm
        ready = {}
        for slot, p in self.playing.items():  # 1. re-conform (slow) before choosing the bar
            voice = p.launch.voice
            if voice is not None and voice.period_beats is not None:
                prepared = prepare(
                    p.loop, self.sample_rate, self.channels, fpb, self.config.conform, float(bpm)
                )
                ready[slot] = (voice, prepared.audio)
        bar = old.bar_at(self._earliest()) + 1  # 2. the next bar not yet written
        grid = old.with_tempo(bpm, beats_per_bar, bar)
        at = grid.bar_frame(bar)
        launches = {}
        for slot, (voice, audio) in ready.items():  # 3. keep each loop's phase
            period = voice.period_beats
            assert period is not None
            rep = (grid.first_beat(bar) - voice.anchor_beat) // period
            rep_start = grid.beat_frame_here(voice.anchor_beat + rep * period)
            new_voice = Voice(audio, period, voice.anchor_beat, voice.info)
            launches[slot] = Launch(new_voice, at, rep, rep_start)
        mixer.set_grid(grid)  # 4. publish: the grid first, then the swaps (all before ``at``)
        for slot, launch in launches.items():
            launch = mixer.slots[slot].publish(launch)
            self.playing[slot] = Playing(self.playing[slot].loop, launch)
        self.bpm, self.beats_per_bar = bpm, beats_per_bar
        return bar

    def _set_link(self, enabled: bool) -> int:
        from latentloop_daemon.playback.link import LinkSession

        if enabled and self.link is None:
            self.link = LinkSession(float(self.bpm or 120), self.beats_per_bar)
        elif not enabled and self.link is not None:
            self.link.close()
            self.link = None
        return self.link.peers() if self.link is not None else 0

    # --- the stream ---------------------------------------------------------------------------

    def _open_stream(self) -> None:
        sd = devices.sounddevice()
        device = devices.choose(self.config.device)
        rate = device.default_rate
        channels = min(self.config.channels, device.channels)
        block = self.config.block_size
        mixer = Mixer(
            self.config.slots, channels, rate, block or 4096,
            round(self.config.launch_fade_ms * rate / 1000),
            limiter_threshold=10 ** (self.config.limiter_db / 20),
        )  # fmt: skip
        mixer.master_gain = 10 ** (self.config.master_gain_db / 20)
        try:
            stream = sd.OutputStream(
                samplerate=rate, blocksize=block, device=device.index, channels=channels,
                dtype="float32", latency=self.config.latency_value, callback=self._callback,
            )  # fmt: skip
            stream.start()
        except sd.PortAudioError as e:
            raise AudioDeviceError(f"cannot open {device.name!r}: {e}") from e
        self.device, self.mixer, self.stream = device, mixer, stream
        self._clock = StreamClock(rate)
        self.sample_rate, self.channels = rate, channels
        self.running, self.playing = False, {}
        self._last_blocks = (0, time.monotonic())
        logger.info(
            "playback on %r (%s): %d Hz, %d channels, block %s, output latency %.1f ms",
            device.name, device.host_api, rate, channels, block or "auto",
            1000 * float(stream.latency),
        )  # fmt: skip

    def _close_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as e:  # noqa: BLE001 - the device may already be gone
                logger.debug("closing the stream: %s", e)

    def _abandon_stream(self) -> None:
        """Close a stream whose device is gone on a thread of its own.

        PortAudio 19.6's JACK backend (Debian 12's libportaudio2) waits for the JACK process
        callback to acknowledge an abort, for up to 10 minutes, and a server that is gone never
        runs it: ``abort``/``close`` (and ``Pa_Terminate``, which closes open streams) block
        that long. The control thread must report the loss and go on serving requests.
        """
        stream, self.stream = self.stream, None
        if stream is None:
            return
        devices.terminate_at_exit(False)  # until the close returns (``restart``)

        def close() -> None:
            try:
                stream.close(ignore_errors=True)  # aborts first, inside PortAudio
            except Exception as e:  # noqa: BLE001 - the device is gone
                logger.debug("closing the stream of a vanished device: %s", e)

        self._closing = threading.Thread(target=close, name="audio-close", daemon=True)
        self._closing.start()

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's callback. REAL-TIME: no allocation, I/O, logging or locks."""
        t0 = time.perf_counter()
        mixer = self.mixer
        if mixer is None:
            outdata.fill(0)
            return
        if status.output_underflow:
            mixer.underruns += 1
        mixer.render(outdata, time_info.outputBufferDacTime, time_info.currentTime)
        ring = self.callback_s
        ring[mixer.blocks % ring.shape[0]] = time.perf_counter() - t0

    # --- the control thread -------------------------------------------------------------------

    def _control_loop(self) -> None:
        while True:
            try:
                item = self._tasks.get(timeout=_TICK_S)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if item is None:
                return
            if item:
                task, future = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(task())
                    except BaseException as e:  # reported to the requester
                        future.set_exception(e)
            try:
                self._tick()
            except Exception:  # a bug here must not end playback
                logger.exception("player control tick failed")

    def _tick(self) -> None:
        mixer = self.mixer
        if mixer is None or self.stream is None:
            return
        self._watch_stream(mixer)
        if self.stream is None:
            return
        mixer.collect()  # what the callback retired is freed here, never on its thread
        self._observe_clock()
        now = time.time()
        audible = self._audible_frame()
        for notice in [n for n in self._notices if n[0] <= audible]:
            at, launch, slot, job_id, path = notice
            taken = mixer.slots[slot].taken
            if taken is None or taken.seq < launch.seq:
                continue  # the callback has not reached it yet: wait, never drop it
            self._notices.remove(notice)
            if taken is launch:  # not replaced before it was heard
                self.events.playing(slot, job_id, path)
        if self.config.bar_messages and self.running and mixer.grid is not None:
            self._announce_bars(mixer.grid, now)
        if mixer.underruns > self._underruns_reported:
            logger.warning("audio underruns: %d in all", mixer.underruns)
            self._underruns_reported = mixer.underruns
        if self.link is not None:
            self._follow_link(mixer)

    def _announce_bars(self, grid: Grid, now: float) -> None:
        lead = self.config.bar_lead_ms / 1000
        if self._next_bar is None:
            self._next_bar = grid.bar_at(self._audible_frame()) + 1
        while True:
            frame = grid.bar_frame(self._next_bar)
            when = self._unix_time_of(frame)
            if when - lead > now:
                return
            if when >= now - 0.05:  # not a stale one after a stall
                self.events.bar(self._next_bar, float(grid.bpm), grid.beats_per_bar, when)
            self._next_bar += 1

    def _watch_stream(self, mixer: Mixer) -> None:
        blocks, since = self._last_blocks
        now = time.monotonic()
        if mixer.blocks != blocks:
            self._last_blocks = (mixer.blocks, now)
            return
        if now - since > _STALL_S or not self.stream.active:
            message = "the audio device stopped (unplugged, or the audio server is gone)"
            logger.error("%s: playback off; renders continue (/latentloop/audio restart)", message)
            self.error = message
            self._abandon_stream()
            self.running, self.playing, self._notices = False, {}, []
            self.events.audio_off(message)

    # --- clocks -------------------------------------------------------------------------------

    def _observe_clock(self) -> StreamClock:
        """The stream clock, fed the last block's reading (control thread)."""
        mixer, clock = self.mixer, self._clock
        assert mixer is not None and clock is not None
        clock.observe(*mixer.read_clock(), self._latency_s())
        return clock

    def _ready_clock(self) -> StreamClock:
        """The stream clock, with at least one reading taken."""
        clock = self._clock
        assert clock is not None
        return clock if clock.offset is not None else self._observe_clock()

    def _audible_frame(self) -> int:
        """The sample the listener hears now (the stream's clock minus its output latency)."""
        return self._ready_clock().frame_heard_at(self._stream_time())

    def _unix_time_of(self, frame: int) -> float:
        """When sample ``frame`` is heard, on the wall clock (``time.time()``)."""
        clock = self._ready_clock()
        stream_now, wall_now = paired(self._stream_time, time.time)
        return wall_now + clock.heard_at(frame) - stream_now

    def _link_micros_of(self, frame: int) -> int:
        """When sample ``frame`` is heard, on Link's clock (microseconds)."""
        clock, link = self._ready_clock(), self.link
        assert link is not None
        stream_now, micros_now = paired(self._stream_time, link.now_micros)
        return round(micros_now + 1e6 * (clock.heard_at(frame) - stream_now))

    def _stream_time(self) -> float:
        try:
            return float(self.stream.time)
        except Exception:  # noqa: BLE001 - closed under us
            return 0.0

    def _latency_s(self) -> float:
        try:
            return float(self.stream.latency)
        except Exception:  # noqa: BLE001
            return 0.0

    def _follow_link(self, mixer: Mixer) -> None:
        """Follow the session's tempo (from the next bar) and its bar phase (a nudge)."""
        link = self.link
        assert link is not None
        tempo = Fraction(link.tempo()).limit_denominator(10**6)
        if self.bpm is None or abs(float(tempo - self.bpm)) > 1e-3:
            self._change_tempo(tempo, self.beats_per_bar, user=False)
            return
        grid = mixer.grid
        if not self.running or grid is None:
            return
        frame = self._earliest()
        phase = link.phase_at_micros(self._link_micros_of(frame), self.beats_per_bar)
        ours = float(
            (Fraction(frame) - grid.bar_position(grid.bar_at(frame))) / grid.frames_per_beat
        )
        error = (
            ours - phase + self.beats_per_bar / 2
        ) % self.beats_per_bar - self.beats_per_bar / 2
        error_frames = error * float(grid.frames_per_beat)
        # More than 2 ms off on _LINK_CONFIRM checks in a row: move the grid (a lone reading
        # off by a stalled thread never moves it)
        if abs(error_frames) <= 0.002 * self.sample_rate:
            self._link_misses = 0
            return
        self._link_misses += 1
        if self._link_misses >= _LINK_CONFIRM:
            mixer.set_grid(grid.shifted(Fraction(round(error_frames))))
            self._link_misses = 0
