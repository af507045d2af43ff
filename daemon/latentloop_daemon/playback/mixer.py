"""The audio callback's work: mix the slots' loops into the output block. REAL-TIME CODE.

Everything in ``Mixer.render`` runs on PortAudio's callback thread and must keep the real-time
rules (docs/playback.md, "Real-time rules"):

- no allocation of audio memory: every buffer is allocated in ``Mixer.__init__``; arithmetic
  goes into them with ``out=`` (CPython still creates small objects per block: ints, floats,
  array views; those come from its small-object allocator and never touch the audio data);
- no I/O, no logging, no locks: the control thread publishes a new clip by assigning one
  reference (``Slot.publish(Launch(...))``), a new tempo by assigning ``Mixer.grid``
  (``Mixer.set_grid``), a gain by assigning a float; the callback only reads those and writes
  its own fields;
- no freeing: the callback never drops the last reference to a ``Launch``, ``Voice`` or
  ``Grid`` (freeing a clip's audio, hundreds of KB, may munmap), see "Lifetimes" below;
- underruns and the stream clock are recorded into preallocated fields, reported by the
  control thread.

Lifetimes: the control thread owns a reference to everything it publishes and releases it in
``Mixer.collect`` (``Player._tick``, every 5 ms) once the callback can no longer reach it, so
whatever the callback drops (``slot.taken = launch``, ``slot.fade_voice = None``, a local that
outlived a ``mailbox`` or ``grid`` replaced under it) is still referenced and never freed there.

- Launches: ``Slot.publish`` numbers them (``Launch.seq``, increasing per slot) and keeps each
  in ``Slot._owned``. The callback takes a slot's launches in increasing ``seq`` (oldest first
  along a chain; the walk stops at ``taken``, and everything older than ``taken`` that a
  mailbox chain still holds lies behind it), and holds at most two: ``taken`` (whose voice
  plays) and the one whose voice fades. At the end of each ``render``, after every slot's
  mixing has returned (no local left), it stores ``slot.held_from``: the ``seq`` of the older
  of those two. No launch below it is referenced by the callback or can be reached by it
  again, so ``collect`` drops the owned launches below it (a replaced launch that was never
  taken goes with them). ``held_from`` only grows. One int store a slot per block: no ring to
  fill, no case where the callback must drop a reference because the hand-back is full.
  A launch's ``prev`` is the one published just before it (seq - 1), so the callback only
  reads ``prev`` of launches newer than ``taken``, never one pointing below ``held_from``:
  ``collect`` cuts those links (they would keep a released launch's audio alive).
- Grids: ``set_grid`` keeps the replaced grid with the block count read before the swap;
  ``collect`` drops it once two more blocks have completed (the render that may have read it
  ended before the second began).

A ``Launch`` assigned to ``mailbox`` directly (the tests) is owned by no one: the daemon only
publishes through ``Slot.publish``.

Timing model: ``frame`` counts the samples written since the stream started (the stream's own
clock). A ``Launch`` names the sample where its clip's sample 0 (or its phase, on a
re-conform) lands; the callback switches exactly there, at full gain, and fades the old clip
out after it over ``fade_frames``. Each repeat of a bar-anchored clip starts on the grid's
exact beat position (``Grid.beat_frame``), so rounding never accumulates: a repeat one sample
longer than the clip repeats its first sample, a shorter one drops its last.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from latentloop_daemon.playback.transport import Grid


@dataclass(frozen=True, slots=True, eq=False)
class Voice:
    """A clip ready for the callback: (frames, channels) float32 ``audio`` at the stream rate,
    C-contiguous, with the stream's channel count.

    ``period_beats`` None: the clip loops on its own length (seconds clips, ``conform =
    as_is``); otherwise repeat ``r`` starts on global beat ``anchor_beat + r x period_beats``.
    ``info`` is the control side's description (job, path) for status and notifications.
    """

    audio: npt.NDArray[np.float32]
    period_beats: int | None
    anchor_beat: int
    info: Any = None


@dataclass(frozen=True, slots=True, eq=False)
class Launch:
    """Start ``voice`` (None: stop) at sample ``at``, inside its repeat ``rep`` that began at
    sample ``rep_start`` (``rep`` 0 and ``rep_start == at`` for a fresh start).

    ``prev`` chains launches still waiting when this one was published (earlier ``at``), so a
    stop queued behind a pending swap does not erase it; the callback takes them oldest first.
    ``seq`` numbers the slot's launches in publishing order (``Slot.publish``; module doc).
    """

    voice: Voice | None
    at: int
    rep: int = 0
    rep_start: int = 0
    prev: Launch | None = None
    seq: int = 0


class Slot:
    """One track. The control thread writes ``mailbox``, ``gain`` and the ``_owned`` launches;
    the callback the rest."""

    def __init__(self) -> None:
        self.mailbox: Launch | None = None
        self.gain = 1.0  # linear; the callback ramps from the last value over one block
        self._next_seq = 1
        self._owned: deque[Launch] = deque()  # published, not yet released (``collect``)
        # callback-owned state
        self.taken: Launch | None = None
        self.voice: Voice | None = None
        self.voice_seq = 0  # seq of the launch whose voice is ``voice`` (``taken``)
        self.rep = 0
        self.rep_start = 0
        self.rep_end = 0
        self.fade_voice: Voice | None = None
        self.fade_index = 0  # next sample of fade_voice to play
        self.fade_done = 0  # fade frames already played
        self.fade_seq = 0  # seq of the launch whose voice is ``fade_voice``
        self.gain_now = 1.0
        self.started_at = -1  # sample where ``voice`` started (read by the control thread)
        self.held_from = 0  # launches below this seq are out of the callback's reach

    def publish(self, launch: Launch) -> Launch:
        """(Control thread) queue ``launch``: after a pending earlier one, else replacing it.

        Returns the launch as published (numbered, chained); the slot keeps it until the
        callback is done with it (``Mixer.collect``).
        """
        pending = self.mailbox
        prev = None
        if pending is not None and pending is not self.taken and pending.at <= launch.at:
            prev = pending  # the launch published just before: seq - 1
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        launch = Launch(launch.voice, launch.at, launch.rep, launch.rep_start, prev, seq)
        self._owned.append(launch)
        self.mailbox = launch
        return launch

    def collect(self) -> int:
        """(Control thread) release the launches the callback can no longer reach."""
        held_from, owned, released = self.held_from, self._owned, 0
        while owned and owned[0].seq < held_from:
            owned.popleft()
            released += 1
        for launch in owned:  # a chain link to a released launch would keep its audio alive
            prev = launch.prev
            if prev is not None and prev.seq < held_from:
                object.__setattr__(launch, "prev", None)  # the callback never reads this link
        return released


class Mixer:
    """Mixes ``slots`` into blocks of ``channels`` float32, in pieces of at most ``max_frames``
    (the size of its buffers; a longer block is rendered as consecutive pieces)."""

    def __init__(
        self,
        slots: int,
        channels: int,
        sample_rate: int,
        max_frames: int,
        fade_frames: int,
        limiter_threshold: float = 10 ** (-0.3 / 20),
        release_per_block: float = 0.05,
    ) -> None:
        self.slots = [Slot() for _ in range(slots)]
        self.channels = channels
        self.sample_rate = sample_rate
        self.max_frames = max_frames
        self.fade_frames = max(1, fade_frames)
        self.grid: Grid | None = None
        self.master_gain = 1.0
        self.limiter_threshold = limiter_threshold
        self.release_per_block = release_per_block
        self.frame = 0  # samples written since the stream started
        self.largest_block = 0  # the most frames one callback was asked for
        self.underruns = 0
        self.blocks = 0
        self.limited_blocks = 0
        # (frame at block start, its DAC time, the callback's current time), seqlock-guarded
        self.clock = np.zeros(3, np.float64)
        self.clock_seq = 0
        self._scratch = np.zeros((max_frames, channels), np.float32)
        self._peak = np.zeros((max_frames, channels), np.float32)
        self._ramp = np.zeros(max_frames, np.float32)
        self._steps = np.arange(1, max_frames + 1, dtype=np.float32)  # 1 .. max_frames
        self._fade = (
            1.0 - np.arange(self.fade_frames, dtype=np.float64) / self.fade_frames
        ).astype(np.float32)
        self._master_now = 1.0
        self._limit_gain = 1.0
        self._old_grids: deque[tuple[int, Grid]] = deque()  # (blocks before the swap, grid)

    # --- the callback ------------------------------------------------------------------------

    def render(self, out: npt.NDArray[np.float32], dac_time: float, now_time: float) -> None:
        """Fill ``out`` (frames, channels) with the next block. REAL-TIME: see the module doc."""
        n = out.shape[0]
        start = self.frame
        self.clock_seq += 1
        self.clock[0] = start
        self.clock[1] = dac_time
        self.clock[2] = now_time
        self.clock_seq += 1
        if n > self.largest_block:
            self.largest_block = n
        # A host may deliver more than max_frames (block_size 0): render it in pieces of at
        # most max_frames, each exactly as a block of its own would be
        done = 0
        while done < n:
            count = n - done if n - done < self.max_frames else self.max_frames
            self._render_piece(out[done : done + count], start + done, count)
            done += count
        for slot in self.slots:  # every slot's mixing has returned: no local holds a launch
            slot.held_from = slot.fade_seq if slot.fade_voice is not None else slot.voice_seq
        self.frame = start + n
        self.blocks += 1

    def _render_piece(self, out: npt.NDArray[np.float32], start: int, n: int) -> None:
        """Samples [start, start + n) into ``out``; n <= max_frames."""
        out.fill(0.0)
        for slot in self.slots:
            self._render_slot(slot, out, start, n)
        self._apply_master(out, n)
        self._limit(out, n)

    def _render_slot(self, slot: Slot, out: npt.NDArray[np.float32], start: int, n: int) -> None:
        end = start + n
        pos = start
        launch = self._due(slot, end)
        while launch is not None:
            at = launch.at if launch.at > pos else pos
            slot.taken = launch
            self._fade_out(slot, out, pos, at, start)
            self._mix_voice(slot, out, pos, at, start, slot.gain_now, slot.gain_now)
            self._start_fade(slot, at)  # an older fade still running is cut here
            slot.voice = launch.voice
            slot.voice_seq = launch.seq
            slot.rep, slot.rep_start = launch.rep, launch.rep_start
            slot.rep_end = self._rep_end(slot)
            slot.started_at = at
            pos = at
            launch = self._due(slot, end)
        self._fade_out(slot, out, pos, end, start)
        self._mix_voice(slot, out, pos, end, start, slot.gain_now, slot.gain)
        slot.gain_now = slot.gain

    @staticmethod
    def _due(slot: Slot, end: int) -> Launch | None:
        """The oldest launch not yet taken, if it starts before sample ``end``."""
        launch = slot.mailbox
        if launch is None or launch is slot.taken:
            return None
        while launch.prev is not None and launch.prev is not slot.taken:
            launch = launch.prev
        return launch if launch.at < end else None

    def _rep_end(self, slot: Slot) -> int:
        voice, grid = slot.voice, self.grid
        if voice is None:
            return 0
        if voice.period_beats is None or grid is None:
            return slot.rep_start + voice.audio.shape[0]
        return grid.beat_frame(voice.anchor_beat + (slot.rep + 1) * voice.period_beats)

    def _mix_voice(
        self,
        slot: Slot,
        out: npt.NDArray[np.float32],
        a: int,
        b: int,
        block_start: int,
        g0: float,
        g1: float,
    ) -> None:
        """Add ``slot.voice`` over samples [a, b) into ``out`` (whose sample 0 is block_start)."""
        voice = slot.voice
        if voice is None or a >= b:
            return
        audio = voice.audio
        length = audio.shape[0]
        scratch = self._scratch
        f = a
        while f < b:
            while f >= slot.rep_end:
                slot.rep += 1
                slot.rep_start = slot.rep_end
                slot.rep_end = self._rep_end(slot)
            stop = b if b < slot.rep_end else slot.rep_end
            o = f - a
            index = f - slot.rep_start
            count = stop - f
            while count > 0:  # a repeat longer than the clip wraps (by a sample, normally)
                index %= length
                take = length - index if length - index < count else count
                scratch[o : o + take] = audio[index : index + take]
                o += take
                index += take
                count -= take
            f = stop
        self._add_scaled(out, a - block_start, b - a, g0, g1)

    def _start_fade(self, slot: Slot, at: int) -> None:
        """The playing voice (if any) becomes the fading one from sample ``at``."""
        if slot.voice is None:
            return
        slot.fade_voice = slot.voice
        slot.fade_seq = slot.voice_seq
        length = slot.voice.audio.shape[0]
        slot.fade_index = (at - slot.rep_start) % length
        slot.fade_done = 0

    def _fade_out(
        self, slot: Slot, out: npt.NDArray[np.float32], a: int, b: int, block_start: int
    ) -> None:
        """Add the fading voice, ramped down, over samples [a, b) until its fade ends."""
        voice = slot.fade_voice
        if voice is None or a >= b:
            return
        remaining = self.fade_frames - slot.fade_done
        count = b - a if b - a < remaining else remaining
        audio = voice.audio
        length = audio.shape[0]
        scratch = self._scratch
        o, index, left = 0, slot.fade_index, count
        while left > 0:
            index %= length
            take = length - index if length - index < left else left
            scratch[o : o + take] = audio[index : index + take]
            o += take
            index += take
            left -= take
        ramp = self._fade[slot.fade_done : slot.fade_done + count]
        np.multiply(scratch[:count], ramp[:, None], out=scratch[:count])
        if slot.gain_now != 1.0:
            np.multiply(scratch[:count], slot.gain_now, out=scratch[:count])
        o = a - block_start
        np.add(out[o : o + count], scratch[:count], out=out[o : o + count])
        slot.fade_index = index
        slot.fade_done += count
        if slot.fade_done >= self.fade_frames:
            slot.fade_voice = None

    def _add_scaled(
        self, out: npt.NDArray[np.float32], o: int, count: int, g0: float, g1: float
    ) -> None:
        """out[o:o+count] += scratch[:count] x gain (ramped g0 -> g1 when it changed)."""
        part = self._scratch[:count]
        if g0 != g1:
            np.multiply(part, self._ramp_to(count, g0, g1)[:, None], out=part)
        elif g1 != 1.0:
            np.multiply(part, g1, out=part)
        np.add(out[o : o + count], part, out=out[o : o + count])

    def _apply_master(self, out: npt.NDArray[np.float32], n: int) -> None:
        g0, g1 = self._master_now, self.master_gain
        if g0 != g1 and n > 0:
            np.multiply(out, self._ramp_to(n, g0, g1)[:, None], out=out)
        elif g1 != 1.0:
            np.multiply(out, g1, out=out)
        self._master_now = g1

    def _limit(self, out: npt.NDArray[np.float32], n: int) -> None:
        """Safety limiter: untouched (bit-transparent) while the peak stays <= threshold."""
        peak_buf = self._peak[:n]
        np.abs(out, out=peak_buf)
        peak = float(peak_buf.max()) if n else 0.0
        g0 = self._limit_gain
        if peak <= self.limiter_threshold and g0 == 1.0:
            return
        target = self.limiter_threshold / peak if peak > self.limiter_threshold else 1.0
        g1 = min(target, g0 + self.release_per_block)
        if g1 < g0:  # attack: the whole block at the new gain (keeps every peak <= threshold)
            np.multiply(out, g1, out=out)
        else:  # release: ramp up, never above what this block allows
            np.multiply(out, self._ramp_to(n, g0, g1)[:, None], out=out)
        self._limit_gain = g1
        self.limited_blocks += 1

    def _ramp_to(self, count: int, g0: float, g1: float) -> npt.NDArray[np.float32]:
        """Gains from ``g0`` to ``g1`` over ``count`` (>= 1) samples, whatever the block size:
        sample i gets g0 + (g1 - g0) x (i + 1) / count, so the last one is exactly ``g1`` (the
        gain the next block starts from) and every step is the same."""
        ramp = self._ramp[:count]
        np.multiply(self._steps[:count], (g1 - g0) / count, out=ramp)
        np.add(ramp, g0, out=ramp)
        ramp[count - 1] = g1
        return ramp

    # --- the control thread --------------------------------------------------------------

    def set_grid(self, grid: Grid | None) -> None:
        """Publish a new grid (None: no transport); the old one is kept until ``collect`` finds
        that no render can still be reading it."""
        old = self.grid
        if old is not None:
            self._old_grids.append((self.blocks, old))  # the count read before the swap
        self.grid = grid

    def collect(self) -> int:
        """Release what the callback can no longer reach (module doc, "Lifetimes"): on the
        control thread, so the memory is never freed on the audio thread. The count released.
        """
        released = sum(slot.collect() for slot in self.slots)
        blocks, old = self.blocks, self._old_grids
        while old and blocks >= old[0][0] + 2:
            old.popleft()
            released += 1
        return released

    # --- control-thread reads ----------------------------------------------------------------

    def read_clock(self) -> tuple[int, float, float]:
        """(frame at the last block's start, its DAC time, the callback's time): consistent."""
        while True:
            seq = self.clock_seq
            frame, dac, now = float(self.clock[0]), float(self.clock[1]), float(self.clock[2])
            if seq % 2 == 0 and seq == self.clock_seq:
                return int(frame), dac, now
