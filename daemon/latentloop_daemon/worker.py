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
from pathlib import Path
from typing import Protocol

from .engine import Engine, RenderRequest
from .errors import LatentloopError, RenderCancelled, RenderError
from .jobs import CANCELLED, DONE, FAILED, JobQueue, RenderJob
from .loops import LoopLength, loop_length
from .outputs import SavedClip, save_result
from .wavfile import slugify

logger = logging.getLogger(__name__)


class JobEvents(Protocol):
    """What the worker reports; called on the worker thread, must not block for long."""

    def progress(self, job: RenderJob, step: int, total: int) -> None: ...

    def done(self, job: RenderJob, clip: SavedClip, length: LoopLength) -> None: ...

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
    ) -> None:
        super().__init__(name="render-worker", daemon=True)
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
            if self.warmup:
                self._warm_up(self.engine)
        except BaseException as e:  # reported by the service, which exits with code 3
            self.load_error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            while not self._stopping.is_set():
                job = self.queue.next(timeout=0.2)
                if job is not None:
                    self._run_job(self.engine, job)
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
            if length.frames > caps.window_samples or length.seconds > caps.max_seconds_total:
                raise RenderError(
                    f"{length.seconds:.2f} s is longer than {caps.model_id} can render "
                    f"(max {min(caps.max_seconds_total, caps.window_seconds):.2f} s)"
                )
            request = RenderRequest(
                prompt=spec.prompt,
                seconds_total=length.seconds,
                negative_prompt=spec.negative,
                seed=spec.seed,
                steps=spec.steps,
                cfg_scale=spec.cfg,
                batch_size=spec.variations,
            )
            result = engine.render(request, self._progress(job), job.cancel_event.is_set)
            saved = save_result(
                result,
                request,
                self.out_dir,
                fmt=self.fmt,
                frames=length.frames,
                stem=_stem(spec, length, result.seed),
                extra=_extra(job, length),
            )
        except RenderCancelled as e:
            self._fail(job, CANCELLED, "cancelled", str(e))
        except (RenderError, ValueError) as e:
            self._fail(job, FAILED, "invalid", str(e))
        except LatentloopError as e:
            self._fail(job, FAILED, "internal", str(e))
        except Exception as e:
            logger.exception("job %d failed", job.job_id)
            self._fail(job, FAILED, "internal", f"{type(e).__name__}: {e}")
        else:
            job.paths = [str(c.wav_path) for c in saved]
            self.queue.finish(job, DONE)
            for clip in saved:
                self.events.done(job, clip, length)
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


def _stem(spec: object, length: LoopLength, seed: int) -> str:
    prompt = getattr(spec, "prompt", "")
    if length.bpm is not None and length.bars is not None:
        return f"{slugify(prompt)}_{length.bpm:g}bpm_{length.bars:g}bars_seed{seed}"
    return f"{slugify(prompt)}_{length.seconds:g}s_seed{seed}"


def _extra(job: RenderJob, length: LoopLength) -> dict[str, object]:
    spec = job.spec
    return {
        "request": {
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
        },
        "job": job.job_id,
        "bpm": length.bpm,
        "bars": length.bars,
        "beats_per_bar": length.beats_per_bar,
        "actual_bpm": length.actual_bpm,
    }
