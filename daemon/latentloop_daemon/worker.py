"""The render worker: the only thread that touches the model and the GPU.

It loads (and warms) the engine, then takes jobs from the queue one at a time: resolves the
length, renders, cuts and writes the files, and reports through a ``JobEvents`` object. A job's
failure never stops the worker: it is reported (``invalid``, ``cancelled`` or ``internal``) and
the next job runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .engine import Engine, RenderRequest, RenderResult
from .errors import LatentloopError, OutputError, RenderCancelled, RenderError
from .jobs import CANCELLED, DONE, FAILED, JobQueue, RenderJob
from .loopjob import (
    FinishedLoop,
    LoopPlan,
    LoopSettings,
    plan_loop,
    render_loops,
    write_loops,
)
from .loops import loop_length
from .outputs import render_meta

logger = logging.getLogger(__name__)


class JobEvents(Protocol):
    """What the worker reports; called on the worker thread, must not block for long."""

    def progress(self, job: RenderJob, step: int, total: int) -> None: ...

    def done(self, job: RenderJob, done: LoopDone) -> None: ...

    def retry(self, job: RenderJob, attempt: int, measured_bpm: float) -> None: ...

    def failed(self, job: RenderJob, code: str, message: str) -> None: ...


class RenderWorker(threading.Thread):
    """Loads the engine with ``loader`` then serves ``queue`` until ``stop()``."""

    def __init__(
        self,
        loader: Callable[[], Engine],
        queue: JobQueue,
        events: JobEvents,
        out_dir: Path,
        fmt: str = "pcm24",
        progress_interval_s: float = 0.25,
        warmup: bool = True,
        loop_settings: LoopSettings | None = None,
    ) -> None:
        super().__init__(name="render-worker", daemon=True)
        self.loop_settings = loop_settings or LoopSettings()
        self.loader, self.queue, self.events = loader, queue, events
        self.out_dir, self.fmt = Path(out_dir), fmt
        self.progress_interval_s = progress_interval_s
        self.warmup = warmup
        self.engine: Engine | None = None
        self.ready = threading.Event()
        self.load_error: BaseException | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            self.engine = self.loader()
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
        spec, caps = job.spec, engine.capabilities
        logger.info(
            "job %d (id %d from %s:%d) started: %r",
            job.job_id,
            job.request_id,
            *job.sender,
            spec.prompt,
        )
        t0 = time.perf_counter()
        try:
            length = loop_length(
                caps.sample_rate,
                bpm=spec.bpm,
                bars=spec.bars,
                beats_per_bar=spec.beats_per_bar,
                seconds=spec.seconds,
            )
            plan = plan_loop(spec.prompt, length, spec.key, caps, self.loop_settings)
            base = RenderRequest(
                prompt=spec.prompt,
                seconds_total=plan.seconds_total,
                negative_prompt=spec.negative,
                seed=spec.seed,
                steps=spec.steps,
                cfg_scale=spec.cfg,
                batch_size=spec.variations,
            )
            result, loops = render_loops(
                engine,
                plan,
                base,
                self.loop_settings,
                self._progress(job),
                job.cancel_event.is_set,
                lambda n, bpm: self.events.retry(job, n, bpm),
            )
            if job.cancel_event.is_set():  # cancelled after the last sampler step
                raise RenderCancelled("cancelled before the files were written")
            wavs = write_loops(
                loops,
                plan,
                result,
                self.out_dir,
                spec.prompt,
                fmt=self.fmt,
                model=caps.model_id,
                meta_for=lambda index: _meta(job, result, index),
            )
            written = [
                LoopDone.of(wav, plan, result.seed, index, loop)
                for index, (wav, loop) in enumerate(zip(wavs, loops, strict=True))
            ]
        except RenderCancelled as e:
            self._fail(job, CANCELLED, "cancelled", str(e))
        except OutputError as e:
            self._fail(job, FAILED, "internal", str(e))
        except (RenderError, ValueError) as e:
            self._fail(job, FAILED, "invalid", str(e))
        except LatentloopError as e:
            self._fail(job, FAILED, "internal", str(e))
        except Exception as e:
            logger.exception("job %d failed", job.job_id)
            self._fail(job, FAILED, "internal", f"{type(e).__name__}: {e}")
        else:
            job.paths = [str(d.path) for d in written]
            self.queue.finish(job, DONE)
            for done in written:
                self.events.done(job, done)
            logger.info(
                "job %d done in %.1fs: %s",
                job.job_id,
                time.perf_counter() - t0,
                ", ".join(job.paths),
            )

    def _fail(self, job: RenderJob, state: str, code: str, message: str) -> None:
        logger.warning("job %d %s: %s", job.job_id, code, message)
        self.queue.finish(job, state, message)
        self.events.failed(job, code, message)

    def _progress(self, job: RenderJob) -> Callable[[int, int, float], None]:
        last = [0.0]

        def on_step(step: int, total: int, sigma: float) -> None:
            now = time.monotonic()
            if step == total or now - last[0] >= self.progress_interval_s:
                last[0] = now
                self.events.progress(job, step, total)

        return on_step


@dataclass(frozen=True, slots=True)
class LoopDone:
    """One written variation, as announced in ``/done``."""

    path: Path
    seconds: float
    bpm: float | None
    bars: float | None
    seed: int
    variation: int
    measured_bpm: float | None
    deviation_pct: float | None

    @classmethod
    def of(cls, path: Path, plan: LoopPlan, seed: int, index: int, loop: FinishedLoop) -> LoopDone:
        length = plan.length
        return cls(
            path,
            length.seconds,
            length.bpm,  # as requested; files carry the exact tempo of the frame count
            length.bars,
            seed,
            index,
            None if loop.tempo is None else loop.tempo.bpm,
            loop.tempo_deviation_pct,
        )


def _meta(job: RenderJob, result: RenderResult, index: int) -> dict[str, object]:
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
    return {
        **render_meta(result, index, spec.prompt, spec.negative),
        "request": request,
        "job": job.job_id,
    }
