"""The service's side of playback: owns the ``Player``, finds what to play, reports its events.

- ``start``/``close``: the player starts after the OSC port is bound and stops before the
  daemon exits; ``--no-audio`` or no output device is file-only mode (one log line); an
  ``[audio] device`` that does not exist stops start-up (exit 2, with the device list);
- ``loop_for_job``/``loop_for_path``: what ``/latentloop/play`` names, as a ``Loop`` (finished
  clips are kept in memory, so the player never re-reads a file the daemon just wrote);
- ``job_done`` (render worker thread): caches the job's clips; the render option ``play <slot>``
  queues the first into that slot;
- ``PlayerEvents``: ``/latentloop/playing``, ``/latentloop/bar`` (timetagged bundles) and
  ``/latentloop/audio.reply -1 off`` to subscribers and fixed targets.

Threads: handlers (OSC dispatch), the render worker (``job_done``), the player's control
thread (events). The cache has its own lock.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from latentloop_bridge import protocol as p
from latentloop_bridge.errors import FailCode
from latentloop_daemon.errors import AudioDeviceError, PathRefused, PlaybackError
from latentloop_daemon.exit_codes import ExitCode
from latentloop_daemon.files.paths import resolve_client_path
from latentloop_daemon.playback.source import Loop, LoopReadError, read_loop

if TYPE_CHECKING:
    from latentloop_daemon.config import DaemonConfig
    from latentloop_daemon.loops.pipeline import LoopsMade
    from latentloop_daemon.playback.player import Player
    from latentloop_daemon.service.jobs import RenderJob
    from latentloop_daemon.service.replies import Replies

logger = logging.getLogger(__name__)
_CACHE_LOOPS = 32


class PlayFailure(Exception):
    """A play request that gets ``/fail <id> play <code> <message>``."""

    def __init__(self, code: FailCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fail_code(error: BaseException) -> FailCode:
    """The protocol's code for an exception out of a player request."""
    from latentloop_daemon.playback.conform import TempoMismatch

    if isinstance(error, PlayFailure):
        return error.code
    if isinstance(error, TempoMismatch):
        return FailCode.TEMPO
    if isinstance(error, LoopReadError):
        return FailCode.NOT_FOUND
    if isinstance(error, AudioDeviceError):
        return FailCode.NO_AUDIO
    if isinstance(error, PlaybackError):
        return FailCode(error.code)
    return FailCode.INTERNAL


class Playback:
    """The player (None in file-only mode) and what the daemon knows about playable loops."""

    def __init__(self, config: DaemonConfig, replies: Replies) -> None:
        self.config = config
        self.replies = replies
        self.player: Player | None = None
        self.out_dir = Path(config.render.out_dir).expanduser()
        self.input_roots = [Path(r).expanduser() for r in config.audio.input_roots]
        self._loops: OrderedDict[str, Loop] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: Player | None = None  # found at start-up, opened once the model loaded
        self._model_loaded = False

    def start(self) -> int:
        """Open the output (or go file-only); ExitCode.USAGE when the named device is unknown.

        Before the model has loaded (daemon start-up) only the device is looked up: the
        stream opens in ``after_load``. Importing and building the model holds the interpreter
        lock for long stretches (module imports, weight set-up), which starved the callback:
        7-9 underruns during every start-up, none once loaded (docs/perf.md).
        """
        from latentloop_daemon.playback.devices import NoOutputDevice, UnknownDevice
        from latentloop_daemon.playback.player import Player

        if not self.config.audio.enabled:
            logger.info("playback off (--no-audio / audio.enabled = false): file-only mode")
            return ExitCode.OK
        player = Player(self.config.audio, self)
        try:
            if self._model_loaded:
                player.start()
            else:
                player.find_device()
        except UnknownDevice as e:
            logger.error("%s", e)
            return ExitCode.USAGE
        except (NoOutputDevice, AudioDeviceError, PlaybackError) as e:
            logger.warning("playback off: %s; file-only mode (renders are not affected)", e)
            player.close()
            return ExitCode.OK
        if self._model_loaded:
            self.player = player
        else:
            self._pending = player
        return ExitCode.OK

    @property
    def wanted(self) -> bool:
        """Playback is on or opens once the model is loaded."""
        return self.player is not None or self._pending is not None

    def after_load(self) -> None:
        """(Render worker, once the model is loaded) open the stream found by ``start``, and
        leave one core to the audio thread."""
        self._model_loaded = True
        player, self._pending = self._pending, None
        if player is None:
            return
        limit_torch_threads()
        try:
            player.start()
        except (AudioDeviceError, PlaybackError, OSError) as e:
            logger.warning("playback off: %s; file-only mode (renders are not affected)", e)
            player.close()
            return
        self.player = player

    def close(self) -> None:
        if self.player is not None:
            self.player.close()
        self._pending = None

    def require_player(self) -> Player:
        player = self.player
        if player is None or not player.active:
            why = player.error if player is not None and player.error else "playback is off"
            if player is None and self._pending is not None:
                why = "playback starts once the model is loaded"
            raise PlayFailure(FailCode.NO_AUDIO, why)
        return player

    # --- what to play -------------------------------------------------------------------------

    def loop_for_job(self, job: RenderJob | None, job_id: int, variation: int) -> Loop:
        if job is None:
            raise PlayFailure(FailCode.NOT_FOUND, f"no job with id {job_id} from this sender")
        if job.state != "done":
            raise PlayFailure(FailCode.NOT_FOUND, f"job {job_id} is {job.state}, not done")
        if not 0 <= variation < len(job.paths):
            raise PlayFailure(
                FailCode.NOT_FOUND, f"job {job_id} has {len(job.paths)} file(s), no {variation}"
            )
        return self._cached(job.paths[variation], job.request_id)

    def loop_for_path(self, text: str) -> Loop:
        """The loop at a client-named path: inside the output folder or ``[audio]
        input_roots`` once symlinks are resolved (``files.paths``), else ``invalid``."""
        roots = [self.out_dir, *self.input_roots]
        try:
            path = resolve_client_path(text, roots)
        except PathRefused as e:
            missing = str(e).startswith("no such file")
            raise PlayFailure(FailCode.NOT_FOUND if missing else FailCode.INVALID, str(e)) from e
        return self._cached(str(path), -1)

    def _cached(self, path: str, job_id: int) -> Loop:
        with self._lock:
            loop = self._loops.get(path)
            if loop is not None:
                self._loops.move_to_end(path)
                return loop
        loop = read_loop(Path(path))
        loop = Loop(loop.audio, loop.sample_rate, loop.beats, loop.beats_per_bar, path, job_id)
        self._remember(loop)
        return loop

    def _remember(self, loop: Loop) -> None:
        with self._lock:
            self._loops[loop.path] = loop
            self._loops.move_to_end(loop.path)
            while len(self._loops) > _CACHE_LOOPS:
                self._loops.popitem(last=False)

    # --- the render worker's hook -------------------------------------------------------------

    def job_done(self, job: RenderJob, made: LoopsMade) -> None:
        """(Render worker) keep the clips; with the render option ``play``, queue the first."""
        loops = [
            Loop.from_clip(clip, str(wav.resolve()), job.request_id)
            for clip, wav in zip(made.clips, made.wavs, strict=True)
        ]
        for loop in loops:
            self._remember(loop)
        if job.play_slot is None:
            return
        try:
            player = self.require_player()
        except PlayFailure as e:
            logger.warning("job %d: not played: %s", job.job_id, e.message)
            return
        future = player.submit(
            lambda: player.play(job.play_slot or 0, loops[0], self.config.audio.quantize)
        )
        future.add_done_callback(lambda f: _log_play(job, f.exception()))

    # --- PlayerEvents (the player's control thread) --------------------------------------------

    def playing(self, slot: int, job_id: int, path: str) -> None:
        self.replies.notify(*p.playing_notice(slot, job_id, path))

    def bar(self, bar: int, bpm: float, beats_per_bar: int, audible_unix_s: float) -> None:
        self.replies.notify(*p.bar_notice(bar, bpm, beats_per_bar), at_unix_s=audible_unix_s)

    def audio_off(self, message: str) -> None:
        self.replies.notify(*p.audio_reply(p.NO_ID, "off", message))

    # --- status -------------------------------------------------------------------------------

    def status_strings(self) -> list[str]:
        """The transport and the playing slots, appended to ``status.reply``."""
        if self.player is None:
            return ["audio=off", ""]
        return [self.player.transport_text(), self.player.slots_text()]


def _log_play(job: RenderJob, error: BaseException | None) -> None:
    if error is not None:
        logger.warning("job %d: not played: %s", job.job_id, error)


def limit_torch_threads() -> None:
    """While playback is on, leave one core to the audio thread: torch threads <= cores - 1
    (a model in this process; one in its own process is capped there, ``EngineSpec``)."""
    from latentloop_daemon.backends.process import cap_torch_threads

    cores = os.cpu_count() or 1
    if cores > 1:
        cap_torch_threads(cores - 1)
