"""Render faults in a running service (in-process, real UDP, a stand-in engine): NaN output and
out-of-memory get their documented codes, nothing is written, the worker survives; and the
writer publishes each sidecar before its WAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fake_engines import ClickEngine
from inprocess import running_service, start_service, stop_service

from latentloop_bridge.client import Client, RenderFailed
from latentloop_daemon.files import writer


class FaultyEngine(ClickEngine):
    """Click tracks, except: "nan" in the prompt -> NaN samples, "oom" -> out of memory."""

    def __init__(self) -> None:
        super().__init__([120.0] * 100)

    def render(self, request, on_step=None, should_cancel=None):
        if "oom" in request.prompt:
            raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        result = super().render(request, on_step, should_cancel)
        if "nan" in request.prompt:
            result.audio[0, 0, 100] = np.nan
            result.audio[-1, 1, 200] = np.inf
        return result


@pytest.fixture
def service(tmp_path):
    with running_service(tmp_path, FaultyEngine) as svc:
        yield svc


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize(
    ("prompt", "code", "words"),
    [("nan drums", "bad_output", "NaN"), ("oom drums", "out_of_memory", "out of memory")],
)
def test_a_fault_gets_its_code_writes_nothing_and_the_next_render_works(
    service, tmp_path, prompt, code, words
) -> None:
    port = service.server.bound_address[1]
    with Client("127.0.0.1", port, timeout=5) as c:
        with pytest.raises(RenderFailed) as e:
            c.render_and_wait(prompt, seconds=1, variations=2, timeout=10)
        assert (e.value.command, e.value.code) == ("render", code)
        assert words in e.value.message
        assert files(tmp_path) == []
        (done,) = c.render_and_wait("fine drums", seconds=1, timeout=10)
    assert files(tmp_path) == sorted(
        [done.path.rsplit("/", 1)[1], done.path.rsplit("/", 1)[1][:-4] + ".json"]
    )
    print(f"{prompt!r}: {code}; next render done")


def test_the_sidecar_is_published_before_the_wav_and_removed_if_the_wav_fails(
    service, tmp_path, monkeypatch
) -> None:
    seen = []
    real = writer.write_wav_atomic

    def spy(path, *args, **kwargs):
        seen.append(path.with_suffix(".json").is_file())
        if len(seen) == 2:
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(writer, "write_wav_atomic", spy)
    port = service.server.bound_address[1]
    with Client("127.0.0.1", port, timeout=5) as c:
        c.render_and_wait("first", seconds=1, timeout=10)
        with pytest.raises(RenderFailed):
            c.render_and_wait("second", seconds=1, timeout=10)
    assert seen == [True, True]  # the sidecar existed when each WAV was written
    assert len(files(tmp_path)) == 2  # the failed one's sidecar is gone too


class BatchOomEngine(ClickEngine):
    """Click tracks; a batch of more than one variation raises torch's out-of-memory error."""

    def __init__(self) -> None:
        super().__init__([120.0] * 100)
        self.batches: list[tuple[int, int | None]] = []

    def render(self, request, on_step=None, should_cancel=None):
        import torch

        self.batches.append((request.batch_size, request.seed))
        if request.batch_size > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return super().render(request, on_step, should_cancel)


def test_out_of_memory_with_several_variations_is_retried_one_at_a_time(tmp_path) -> None:
    import json

    engine = BatchOomEngine()
    svc, thread = start_service(tmp_path, lambda: engine)
    try:
        with Client("127.0.0.1", svc.server.bound_address[1], timeout=5) as c:
            done = c.render_and_wait("split drums", seconds=1, variations=3, seed=40, timeout=10)
            assert [d.variation for d in done] == [0, 1, 2]
            assert engine.batches == [(3, 40), (1, 40), (1, 41), (1, 42)]  # retried once, split
            sidecars = [json.loads(Path(d.path).with_suffix(".json").read_text()) for d in done]
            assert [(s["seed"], s["batch_size"]) for s in sidecars] == [(40, 1), (41, 1), (42, 1)]
            assert all(s["settings"]["split_after_out_of_memory"] for s in sidecars)
            # the sidecar's seed, batch 1, renders the same variation again
            engine.batches.clear()
            (again,) = c.render_and_wait("split drums", seconds=1, seed=41, timeout=10)
            assert engine.batches == [(1, 41)]
            assert np.array_equal(sf.read(again.path)[0], sf.read(done[1].path)[0])
            # a single variation that runs out of memory is not retried
            engine.batches.clear()
            (one,) = c.render_and_wait("fine", seconds=1, timeout=10)
            assert engine.batches == [(1, None)]
        print("3 variations: out of memory at batch 3, then 3 x batch 1 (seeds 40-42); done")
    finally:
        stop_service(svc, thread)
