"""Render faults in a running service (in-process, real UDP, a stand-in engine): NaN output and
out-of-memory get their documented codes, nothing is written, the worker survives; and the
writer publishes each sidecar before its WAV."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fake_engines import ClickEngine

from latentloop_bridge.client import Client, RenderFailed
from latentloop_daemon.config import load_config
from latentloop_daemon.files import writer
from latentloop_daemon.service.lifecycle import Service


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
    overrides = {"osc.port": 0, "render.out_dir": str(tmp_path), "engine.warmup": False}
    svc = Service(load_config(overrides=overrides, environ={}), loader=FaultyEngine)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while svc.state != "ready":
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.01)
    yield svc
    svc.should_exit.set()
    thread.join(10)


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
