"""``latentloop serve``: the daemon's lifecycle (startup -> main loop -> shutdown), uvicorn's shape.

Threads: main (signals, lifecycle), the bridge's OSC receive and dispatch threads (call
``RequestHandlers``: validate, enqueue, reply, return), and the render worker (model owner;
reports through ``JobReplies``), and with playback on the player's control thread and
PortAudio's callback (``service.playback``, ``playback.player``).
Start-up binds the OSC port first, so nothing sent while the model loads is lost: pings are
answered, renders get ``/fail ... loading`` or wait in the queue (``render.while_loading``).
SIGINT/SIGTERM stop cleanly (exit 0); a second SIGINT forces exit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from latentloop_bridge.errors import FailCode
from latentloop_bridge.server import OscServer
from latentloop_daemon.config import DaemonConfig, parse_target
from latentloop_daemon.engine import Capabilities, Engine
from latentloop_daemon.errors import LatentloopError
from latentloop_daemon.exit_codes import ExitCode
from latentloop_daemon.files.lock import FolderLock
from latentloop_daemon.service.handlers import RequestHandlers
from latentloop_daemon.service.jobs import JobQueue
from latentloop_daemon.service.journal import Journal
from latentloop_daemon.service.playback import Playback
from latentloop_daemon.service.recovery import clean_output_folder, recover_jobs
from latentloop_daemon.service.replies import JobReplies, Replies
from latentloop_daemon.service.worker import RenderWorker

logger = logging.getLogger(__name__)


class Service:
    """One daemon: an OSC server, its request handlers, a job queue and one render worker.

    ``state`` goes starting -> loading -> ready -> stopping (read by the handlers).
    """

    def __init__(self, config: DaemonConfig, loader: Callable[[], Engine] | None = None) -> None:
        self.config = config
        self.loader = loader or self._load_engine
        self.state = "starting"
        self.queue = JobQueue(config.render.queue_size, config.render.history_size)
        out_dir = Path(config.render.out_dir).expanduser()
        self.folder_lock = FolderLock(out_dir)
        self.journal = Journal(out_dir, keep_finished=config.render.history_size)
        self.replies = Replies()
        self.job_replies = JobReplies(self.replies)
        self.playback = Playback(config, self.replies)
        self.handlers = RequestHandlers(self, self.replies)
        self.server: OscServer | None = None
        self.worker: RenderWorker | None = None
        self.should_exit = threading.Event()
        self._captured: list[int] = []

    @property
    def capabilities(self) -> Capabilities | None:
        """The loaded model's capabilities; None until it has loaded."""
        engine = self.worker.engine if self.worker is not None else None
        return engine.capabilities if engine is not None else None

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until a signal; return the process exit code."""
        with self._capture_signals():
            code = self.startup()
            if code == ExitCode.OK:
                code = self.main_loop()
            self.shutdown()
        return code

    def startup(self) -> int:
        """Bind the OSC port, then start loading the model on the worker thread."""
        cfg = self.config
        out_dir = Path(cfg.render.out_dir).expanduser()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            logger.error("cannot create the output folder %s: %s", out_dir, e)
            return ExitCode.STARTUP
        try:  # one daemon per folder; then clean it and read the journal
            self.folder_lock.acquire()
            clean_output_folder(out_dir)
            entries = self.journal.load()
        except LatentloopError as e:
            logger.error("%s", e)
            return ExitCode.STARTUP
        self.queue.journal = self.journal
        targets = [parse_target("osc.reply_targets", t) for t in cfg.osc.reply_targets]
        self.server = OscServer(
            cfg.osc.host,
            cfg.osc.port,
            self.handlers,
            fixed_targets=targets,
            max_datagram=cfg.limits.max_datagram,
            max_subscribers=cfg.osc.max_subscribers,
            allow=cfg.osc.allow,
        )
        try:
            self.server.start()
        except OSError as e:
            logger.error("%s", e)
            self.server = None
            return ExitCode.STARTUP
        self.replies.server = self.server
        recover_jobs(
            self.journal, entries, self.queue, self.replies, out_dir, cfg.render.on_restart
        )
        host, port = self.server.bound_address
        if cfg.osc.host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning(
                "listening on %s: sources in osc.allow (%s) can queue renders%s",
                host,
                ", ".join(cfg.osc.allow),
                "" if cfg.osc.token else "; no osc.token is set",
            )
        self.state = "loading"
        logger.info("listening on %s:%d (udp); loading model %r", host, port, cfg.engine.model)
        code = self.playback.start()  # after the port is bound; an unknown device: exit 2
        if code != ExitCode.OK:
            return code
        self.worker = RenderWorker(
            self.loader,
            self.queue,
            self.job_replies,
            cfg.render,
            warmup=cfg.engine.warmup,
            on_made=self.playback.job_done,
            after_load=self.playback.after_load,
        )
        self.worker.start()
        return ExitCode.OK

    def main_loop(self) -> int:
        """Wait for the model, announce readiness, then wait for a stop signal."""
        assert self.worker is not None and self.server is not None
        while not self.worker.ready.wait(0.1):
            if self.should_exit.is_set():
                return ExitCode.OK
        if self.worker.load_error is not None:
            e = self.worker.load_error
            message = str(e) if isinstance(e, LatentloopError) else f"{type(e).__name__}: {e}"
            logger.error("cannot load model %r: %s", self.config.engine.model, message)
            return ExitCode.STARTUP
        caps = self.capabilities
        assert caps is not None
        if caps.builtin_noise_model:
            logger.warning("model %r has random weights: it makes NOISE, not music", caps.model_id)
        self.state = "ready"
        host, port = self.server.bound_address
        logger.info(
            "ready on %s:%d: model %s, device %s, precision %s",
            host,
            port,
            caps.model_id,
            caps.device,
            caps.precision,
        )
        while not self.should_exit.wait(0.5):
            if not self.worker.is_alive():
                logger.error("the render worker stopped unexpectedly; exiting")
                return ExitCode.UNEXPECTED
        return ExitCode.OK

    def shutdown(self) -> None:
        """Stop taking renders, cancel queued and running jobs (bounded wait), close the port."""
        self.state = "stopping"
        dropped, running = self.queue.close()
        for job in dropped:
            self.job_replies.failed(job, FailCode.CANCELLED, "the daemon is shutting down")
        if self.worker is not None:
            if running is not None:
                logger.info("cancelling job %d", running.job_id)
            self.worker.stop()
            self.worker.join(self.config.render.cancel_timeout_s)
            if self.worker.is_alive():
                logger.error(
                    "render did not stop within %.0fs; exiting anyway",
                    self.config.render.cancel_timeout_s,
                )
        self.playback.close()  # before the port closes, and before any audio server goes
        if self.server is not None:
            self.server.close()
        self.folder_lock.release()
        logger.info("stopped")

    def _capture_signals(self) -> _CapturedSignals:
        return _CapturedSignals(self)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First SIGINT/SIGTERM: stop cleanly. Second SIGINT: exit now."""
        # Count before anything else: a second signal's handler can run inside this one (at any
        # bytecode boundary, e.g. while the log line below is written), and must see the first.
        self._captured.append(sig)
        if len(self._captured) > 1 and sig == signal.SIGINT:
            logger.error("second interrupt: forcing exit")
            logging.shutdown()
            os._exit(ExitCode.INTERRUPTED)
        logger.info("received %s, stopping", signal.Signals(sig).name)
        self.should_exit.set()

    def _load_engine(self) -> Engine:
        """The configured engine: in a child process (``[engine] process``, the default)."""
        from latentloop_daemon.backends import load_configured

        if not self.config.engine.process:
            return load_configured(self.config)
        from latentloop_daemon.backends.process import load_in_process, spec_of

        cores = os.cpu_count() or 1
        leave_one = self.playback.wanted and cores > 1  # a core for the audio callback
        return load_in_process(spec_of(self.config, max_threads=cores - 1 if leave_one else 0))


class _CapturedSignals:
    """Install SIGINT/SIGTERM handlers for the service; restore the previous ones on exit."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled on the main thread (tests run services in threads)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self.service.handle_exit)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
