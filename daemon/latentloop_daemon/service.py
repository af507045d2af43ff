"""``latentloop serve``: the daemon's lifecycle (startup -> main loop -> shutdown) and handlers.

Threads: main (signals, lifecycle), the bridge's OSC receive and scheduler threads (call the
``_on_*`` handlers: validate, enqueue, reply, return), and the render worker (model owner).
Start-up binds the OSC port first, so nothing sent while the model loads is lost: pings are
answered, renders get ``/fail ... loading`` or wait in the queue (``render.while_loading``).
SIGINT/SIGTERM stop cleanly (exit 0); a second SIGINT forces exit.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from latentloop_bridge import protocol as p
from latentloop_bridge.server import OscServer

from . import __version__
from .config import DaemonConfig, parse_target
from .engine import Engine
from .errors import LatentloopError
from .jobs import JobQueue, QueueFull, RenderJob, RenderSpec
from .wavfile import remove_stale_temp_files
from .worker import LoopDone, RenderWorker

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_UNEXPECTED, EXIT_STARTUP, EXIT_FORCED = 0, 1, 3, 130
Address = tuple[str, int]


class Service:
    """One daemon: an OSC server, a job queue and one render worker."""

    def __init__(self, config: DaemonConfig, loader: Callable[[], Engine] | None = None) -> None:
        self.config = config
        self.loader = loader or self._load_engine
        self.state = "starting"
        self.queue = JobQueue(config.render.queue_size, config.render.history_size)
        self.server: OscServer | None = None
        self.worker: RenderWorker | None = None
        self.should_exit = threading.Event()
        # ids for positional renders: six digits, so Pd's number boxes and [print] show them
        # exactly; above what clients count up to; cycling, so the supply never runs out
        self._assigned_ids = itertools.cycle(range(100_000, 1_000_000))
        self._ids_lock = threading.Lock()
        self._captured: list[int] = []

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until a signal; return the process exit code."""
        with self._capture_signals():
            code = self.startup()
            if code == EXIT_OK:
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
            return EXIT_STARTUP
        remove_stale_temp_files(out_dir)
        targets = [parse_target("osc.reply_targets", t) for t in cfg.osc.reply_targets]
        self.server = OscServer(
            cfg.osc.host,
            cfg.osc.port,
            self,
            fixed_targets=targets,
            max_subscribers=cfg.osc.max_subscribers,
        )
        try:
            self.server.start()
        except OSError as e:
            logger.error("%s", e)
            self.server = None
            return EXIT_STARTUP
        host, port = self.server.bound_address
        if cfg.osc.host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("listening on %s: anyone on this network can queue renders", host)
        self.state = "loading"
        logger.info("listening on %s:%d (udp); loading model %r", host, port, cfg.engine.model)
        self.worker = RenderWorker(
            self.loader,
            self.queue,
            self,
            out_dir,
            fmt=cfg.render.format,
            progress_interval_s=cfg.render.progress_interval_s,
            warmup=cfg.engine.warmup,
            loop_settings=cfg.render.loop_settings(),
        )
        self.worker.start()
        return EXIT_OK

    def main_loop(self) -> int:
        """Wait for the model, announce readiness, then wait for a stop signal."""
        assert self.worker is not None and self.server is not None
        while not self.worker.ready.wait(0.1):
            if self.should_exit.is_set():
                return EXIT_OK
        if self.worker.load_error is not None:
            e = self.worker.load_error
            message = str(e) if isinstance(e, LatentloopError) else f"{type(e).__name__}: {e}"
            logger.error("cannot load model %r: %s", self.config.engine.model, message)
            return EXIT_STARTUP
        caps = self.worker.engine.capabilities if self.worker.engine else None
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
                return EXIT_UNEXPECTED
        return EXIT_OK

    def shutdown(self) -> None:
        """Stop taking renders, cancel queued and running jobs (bounded wait), close the port."""
        self.state = "stopping"
        dropped, running = self.queue.close()
        for job in dropped:
            self.failed(job, "cancelled", "the daemon is shutting down")
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
        if self.server is not None:
            self.server.close()
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
            os._exit(EXIT_FORCED)
        logger.info("received %s, stopping", signal.Signals(sig).name)
        self.should_exit.set()

    def _load_engine(self) -> Engine:
        from .backends import load_engine

        e = self.config.engine
        return load_engine(
            e.model,
            device=e.device,
            precision=e.precision,
            t5_dir=Path(e.t5).expanduser() if e.t5 else None,
            offline=e.offline or None,
            trust_checkpoint=e.trust_checkpoint,
        )

    # --- OSC handlers (receive / scheduler threads: validate, enqueue, reply, return) ----------

    def on_command(self, command: p.Command, sender: Address) -> None:
        if isinstance(command, p.RenderCommand):
            self._on_render(command, sender)
        elif isinstance(command, p.CancelCommand):
            self._on_cancel(command, sender)
        elif isinstance(command, p.StatusCommand):
            self._on_status(command, sender)
        elif isinstance(command, p.PingCommand):
            self._on_ping(command, sender)
        elif isinstance(command, p.NotifyCommand):
            self._on_notify(command, sender)
        else:  # a command the bridge knows but this daemon version does not serve
            self._reply_fail(sender, -1, type(command).__name__, "unsupported", "not supported")

    def on_protocol_error(self, error: p.ProtocolError, sender: Address) -> None:
        # the bridge already logged it at WARNING
        self._reply_fail(sender, error.request_id, error.command, error.code, error.message)

    def _on_render(self, cmd: p.RenderCommand, sender: Address) -> None:
        request_id = cmd.client_id if cmd.client_id is not None else self._assign_id()
        if self.state == "stopping":
            self._reply_fail(
                sender, request_id, "render", "stopping", "the daemon is shutting down"
            )
            return
        if self.state != "ready" and self.config.render.while_loading == "fail":
            self._reply_fail(
                sender,
                request_id,
                "render",
                "loading",
                "the model is still loading; retry when status says ready",
            )
            return
        spec = self._spec(cmd)
        job = RenderJob(self.queue.new_job_id(), request_id, sender, spec)
        try:
            position, dropped = self.queue.submit(job, replace=cmd.replace)
        except QueueFull as e:
            message = f"queue full ({e.size})" if e.size else "the daemon is shutting down"
            self._reply_fail(
                sender, request_id, "render", "busy" if e.size else "stopping", message
            )
            return
        for old in dropped:
            self.failed(old, "cancelled", "replaced by a newer request")
        logger.info(
            "job %d queued at %d (id %d from %s:%d)", job.job_id, position, request_id, *sender
        )
        self._publish(sender, *p.queued_reply(request_id, position))

    def _on_cancel(self, cmd: p.CancelCommand, sender: Address) -> None:
        hit = self.queue.cancel(sender, cmd.request_id)
        if not hit:
            self._reply_fail(
                sender,
                cmd.request_id,
                "cancel",
                "not_found",
                f"no queued or running job with id {cmd.request_id} from this sender",
            )
            return
        for job in hit:
            if job.state == "cancelled":  # was queued: finished now; running ones report later
                self.failed(job, "cancelled", "cancelled by the client")

    def _on_status(self, cmd: p.StatusCommand, sender: Address) -> None:
        caps = self.worker.engine.capabilities if self.worker and self.worker.engine else None
        model = caps.model_id if caps else self.config.engine.model
        device = caps.device if caps else self.config.engine.device
        address, args = p.status_reply(
            cmd.request_id, self.state, len(self.queue), model, device, __version__
        )
        # appended to the v1 shape: the state and first file of this sender's job with that id
        job = self.queue.find(sender, cmd.request_id) if cmd.request_id >= 0 else None
        args = [*args, job.state if job else "", job.paths[0] if job and job.paths else ""]
        self._reply(sender, address, args)

    def _on_ping(self, cmd: p.PingCommand, sender: Address) -> None:
        self._reply(sender, *p.pong_reply(cmd.request_id))

    def _on_notify(self, cmd: p.NotifyCommand, sender: Address) -> None:
        assert self.server is not None
        target = cmd.target(sender)
        try:
            if cmd.subscribe:
                self.server.subscribe(target)
            else:
                self.server.unsubscribe(target)
        except p.ProtocolError as e:
            self._reply_fail(sender, -1, "notify", e.code, e.message)
            return
        address, args = p.notify_reply(cmd.subscribe, target[1])
        self.server.send([sender, target, *self.server.fixed_targets], address, args)

    # --- job events (render worker thread) ------------------------------------------------------

    def progress(self, job: RenderJob, step: int, total: int) -> None:
        self._publish(job.sender, *p.progress_reply(job.request_id, step, total))

    def done(self, job: RenderJob, done: LoopDone) -> None:
        self._publish(
            job.sender,
            *p.done_reply(
                job.request_id, str(done.path.resolve()), done.seconds, done.bpm or 0.0,
                done.bars or 0.0, str(done.seed), done.variation, done.measured_bpm,
                done.deviation_pct,
            ),
        )  # fmt: skip

    def retry(self, job: RenderJob, attempt: int, measured_bpm: float) -> None:
        self._publish(job.sender, *p.retry_reply(job.request_id, attempt, measured_bpm))

    def failed(self, job: RenderJob, code: str, message: str) -> None:
        self._publish(job.sender, *p.fail_reply(job.request_id, "render", code, message))

    # --- helpers -----------------------------------------------------------------------------

    def _spec(self, cmd: p.RenderCommand) -> RenderSpec:
        r = self.config.render
        bpm, bars, seconds = cmd.bpm, cmd.bars, cmd.seconds
        if seconds is None and bpm is None and bars is None:
            seconds = r.seconds
        elif seconds is None and bpm is not None and bars is None:
            bars = r.bars
        return RenderSpec(
            prompt=cmd.prompt,
            negative=cmd.negative,
            bpm=bpm,
            bars=bars,
            beats_per_bar=cmd.beats_per_bar or r.beats_per_bar,
            seconds=seconds,
            key=cmd.key,
            seed=cmd.seed,
            steps=cmd.steps,
            cfg=cmd.cfg,
            variations=cmd.variations or 1,
        )

    def _assign_id(self) -> int:
        with self._ids_lock:
            return next(self._assigned_ids)

    def _reply(self, to: Address, address: str, args: list[Any]) -> None:
        """To the sender and the fixed targets (hosts that cannot receive on their own port)."""
        if self.server is not None:
            self.server.respond(to, address, args)

    def _publish(self, sender: Address, address: str, args: list[Any]) -> None:
        if self.server is not None:
            self.server.publish(sender, address, args)

    def _reply_fail(
        self, to: Address, request_id: int | None, command: str, code: str, message: str
    ) -> None:
        rid = -1 if request_id is None else request_id
        self._reply(to, *p.fail_reply(rid, command, code, message))


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
