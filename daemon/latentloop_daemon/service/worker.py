"""The render worker: the only thread that touches the model and the GPU.

It loads (and warms) the engine, then takes jobs from the queue one at a time and runs the loop
pipeline (``loops.pipeline.make_loops``) on each. Its only other job is mapping the pipeline's
outcome to the protocol: files -> ``done``, exceptions -> a ``FailCode``. A job's failure never
stops the worker: it is reported and the next job runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from latentloop_bridge.errors import FailCode
from latentloop_daemon.engine import (
    CancelFn,
    Capabilities,
    Engine,
    RenderRequest,
    RenderResult,
    StepFn,
)
from latentloop_daemon.errors import (
    BadOutputError,
    EngineError,
    LatentloopError,
    OutputError,
    RenderCancelled,
    RenderError,
    is_out_of_memory,
)
from latentloop_daemon.service.jobs import CANCELLED, DONE, FAILED, JobQueue, RenderJob

if TYPE_CHECKING:
    from latentloop_daemon.config import RenderConfig
    from latentloop_daemon.loops.clip import Clip
    from latentloop_daemon.loops.pipeline import LoopsMade

logger = logging.getLogger(__name__)


class JobEvents(Protocol):
    """What the worker reports; called on the worker thread, must not block for long."""

    def progress(self, job: RenderJob, step: int, total: int) -> None: ...

    def done(self, job: RenderJob, clip: Clip, path: Path) -> None: ...

    def retry(self, job: RenderJob, attempt: int, measured_bpm: float) -> None: ...

    def failed(self, job: RenderJob, code: FailCode, message: str) -> None: ...


def fail_code(error: BaseException) -> FailCode:
    """The protocol's code for an exception out of the loop pipeline."""
    if isinstance(error, RenderCancelled):
        return FailCode.CANCELLED
    if isinstance(error, OutputError):  # the daemon could not write: not the client's fault
        return FailCode.IO
    if isinstance(error, BadOutputError):
        return FailCode.BAD_OUTPUT
    if is_out_of_memory(error):
        return FailCode.OUT_OF_MEMORY
    if isinstance(error, EngineError):
        return FailCode.ENGINE
    if isinstance(error, RenderError | ValueError):
        return FailCode.INVALID
    return FailCode.INTERNAL


OOM_SPLIT = "split_after_out_of_memory"
"""``RenderResult.settings`` key (and sidecar field) of a batch rendered one variation at a time."""


class SplitOnOutOfMemory:
    """The engine, except that a batch of several variations that runs out of memory is rendered
    once more one variation at a time; a single variation that runs out fails as before.

    Reproducible: variation ``i`` of the split batch is rendered alone (batch 1) with seed
    ``S + i`` (``S``: the request's seed, or the one drawn for it here), and its sidecar says so
    (``seed``, ``batch_size`` 1, ``split_after_out_of_memory``): ``seed S+i variations 1``
    renders it again. The job's seed in ``/done`` and the file names stays ``S``.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.split = False

    @property
    def capabilities(self) -> Capabilities:
        return self.engine.capabilities

    def render(
        self,
        request: RenderRequest,
        on_step: StepFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> RenderResult:
        try:
            return _engine_call(self.engine, request, on_step, should_cancel)
        except Exception as e:
            if request.batch_size < 2 or fail_code(e) is not FailCode.OUT_OF_MEMORY:
                raise
            logger.warning(
                "out of memory rendering %d variations; once more, one at a time: %s",
                request.batch_size,
                e,
            )
        _free_device_memory()
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        parts = [
            _engine_call(
                self.engine,
                dataclasses.replace(request, batch_size=1, seed=(seed + i) % 2**32),
                on_step,
                should_cancel,
            )
            for i in range(request.batch_size)
        ]
        self.split = True
        settings = {
            **parts[0].settings,
            OOM_SPLIT: True,
            "variation_seeds": [p.seed for p in parts],
        }
        timings = {k: sum(p.timings_s.get(k, 0.0) for p in parts) for k in parts[0].timings_s}
        audio = np.concatenate([p.audio for p in parts])
        return RenderResult(audio, parts[0].sample_rate, seed, settings, timings)

    def close(self) -> None:
        self.engine.close()


def _engine_call(
    engine: Engine, request: RenderRequest, on_step: StepFn | None, should_cancel: CancelFn | None
) -> RenderResult:
    """``engine.render``; an exception that is not ours (nor running out of memory) becomes
    ``EngineError``: the model failed, not the request and not the daemon's code."""
    try:
        return engine.render(request, on_step, should_cancel)
    except LatentloopError:
        raise
    except Exception as e:
        if is_out_of_memory(e):
            raise
        logger.error("the engine failed: %s", e, exc_info=not isinstance(e, EngineError))
        raise EngineError(f"the model failed: {type(e).__name__}: {e}") from e


def _free_device_memory() -> None:
    """Return the failed batch's cached blocks to the device before the retry (CUDA only)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class RenderWorker(threading.Thread):
    """Loads the engine with ``loader`` then serves ``queue`` until ``stop()``."""

    def __init__(
        self,
        loader: Callable[[], Engine],
        queue: JobQueue,
        events: JobEvents,
        settings: RenderConfig,
        warmup: bool = True,
        on_made: Callable[[RenderJob, LoopsMade], None] | None = None,
        after_load: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="render-worker", daemon=True)
        self.loader, self.queue, self.events = loader, queue, events
        self.settings = settings
        self.out_dir = Path(settings.out_dir).expanduser()
        self.warmup = warmup
        self.on_made = on_made  # after /done: the service hands the clips to playback
        self.after_load = after_load  # on this thread, after the model loaded (thread limits)
        self.engine: Engine | None = None
        self.ready = threading.Event()
        self.load_error: BaseException | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            # the loop pipeline (scipy) is imported here, after the port is bound, not at start
            import latentloop_daemon.loops.pipeline  # noqa: F401

            self.engine = self.loader()
            if self.after_load is not None:
                self.after_load()
            if self.warmup and not self._stopping.is_set():  # no warm-up once a stop was asked
                self._warm_up(self.engine)
        except BaseException as e:  # reported by the service, which exits with code 3
            self.load_error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            while not self._stopping.is_set():
                job = self.queue.next(timeout=0.2)
                if job is None:
                    continue
                try:
                    self._run_job(self.engine, job)
                except Exception:  # a reporting failure must not end the worker
                    logger.exception("job %d: reporting its outcome failed", job.job_id)
        finally:
            self.engine.close()

    def _warm_up(self, engine: Engine) -> None:
        t0 = time.perf_counter()
        caps = engine.capabilities
        engine.render(RenderRequest(prompt="warm-up", seconds_total=1.0, seed=0, steps=1))
        logger.info("warmed up %s in %.1fs", caps.model_id, time.perf_counter() - t0)

    def _run_job(self, engine: Engine, job: RenderJob) -> None:
        logger.info(
            "job %d (id %d from %s:%d) started: %r",
            job.job_id,
            job.request_id,
            *job.sender,
            job.spec.prompt,
        )
        from latentloop_daemon.loops.pipeline import LoopCallbacks, make_loops  # see run()

        t0 = time.perf_counter()
        hooks = LoopCallbacks(
            on_step=self._progress(job),
            should_cancel=job.cancel_event.is_set,
            on_retry=lambda attempt, bpm: self.events.retry(job, attempt, bpm),
        )
        try:
            made = make_loops(
                SplitOnOutOfMemory(engine),
                job.spec,
                self.settings,
                self.out_dir,
                lambda _: _job_meta(job),
                hooks,
            )
        except Exception as e:
            code = fail_code(e)
            if code is FailCode.INTERNAL and not isinstance(e, LatentloopError):
                logger.exception("job %d failed", job.job_id)
            message = str(e) if isinstance(e, LatentloopError) else f"{type(e).__name__}: {e}"
            self._fail(job, CANCELLED if code is FailCode.CANCELLED else FAILED, code, message)
            return
        self._done(job, made, time.perf_counter() - t0)

    def _done(self, job: RenderJob, made: LoopsMade, elapsed_s: float) -> None:
        job.paths = [str(w) for w in made.wavs]
        self.queue.finish(job, DONE)
        for clip, wav in zip(made.clips, made.wavs, strict=True):
            self.events.done(job, clip, wav)
        if self.on_made is not None:
            self.on_made(job, made)
        logger.info("job %d done in %.1fs: %s", job.job_id, elapsed_s, ", ".join(job.paths))

    def _fail(self, job: RenderJob, state: str, code: FailCode, message: str) -> None:
        logger.warning("job %d %s: %s", job.job_id, code, message)
        self.queue.finish(job, state, f"{code}: {message}")  # status <id> shows the code
        self.events.failed(job, code, message)

    def _progress(self, job: RenderJob) -> Callable[[int, int, float], None]:
        """The first and last steps always; between them at most one per ``progress_interval_s``."""
        last = [-math.inf]
        interval = self.settings.progress_interval_s

        def on_step(step: int, total: int, sigma: float) -> None:
            now = time.monotonic()
            if step == total or now - last[0] >= interval:
                last[0] = now
                self.events.progress(job, step, total)

        return on_step


def _job_meta(job: RenderJob) -> dict[str, object]:
    """Sidecar fields the daemon adds: the request as the client sent it, and the job."""
    spec = job.spec
    request = {
        "id": job.request_id,
        "sender": f"{job.sender[0]}:{job.sender[1]}",
        "prompt": spec.prompt,
        "negative": spec.negative,
        "bpm": spec.bpm,
        "bars": spec.bars,
        "beats_per_bar": spec.beats_per_bar,
        "seconds": spec.seconds,
        "key": spec.key,
        "seed": spec.seed,
        "steps": spec.steps,
        "cfg": spec.cfg,
        "variations": spec.variations,
    }
    return {"request": request, "job": job.job_id, "job_key": job.key}
